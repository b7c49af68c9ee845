//! Which storage locations statements may read or write.
//!
//! `CREATE EXTERNAL TABLE ... LOCATION`, `COPY ... TO` and `CREATE TABLE ...
//! LOCATION` name locations in SQL. Unchecked, any client could read
//! `/etc/passwd`, write anywhere the server process can, or overwrite the
//! catalog. A location is checked as the library will open it, not as it is
//! typed: it is parsed the way DataFusion parses it (`ListingTableUrl`: URL
//! parsing turns `%2e%2e` and `\` into `..` and `/`), turned into a file
//! path the way `object_store` does (percent-decoding), and its symbolic
//! links are resolved; then it must lie inside a declared store and outside
//! Tarn's state folder ([`Fence`]). Text that means `..` at any level of
//! percent-decoding, backslashes and control characters are refused
//! outright. The same fence guards every file `object_store` opens, so this
//! check is the first of two.

use std::sync::Arc;

use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::datasource::listing::ListingTableUrl;
use datafusion::logical_expr::{DdlStatement, LogicalPlan};
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use url::Url;

use super::error::{EngineError, EngineResult};
use crate::storage::fence::Fence;
use crate::storage::{Store, Stores};

/// How many times a location is percent-decoded when looking for `..`:
/// more than any layer of Tarn or its libraries decodes.
const DECODING_LEVELS: usize = 4;

/// The stores statements may name locations in.
#[derive(Debug, Clone, Default)]
pub struct LocationPolicy {
    /// Local paths: inside a local store, outside the state folder.
    fence: Arc<Fence>,
    /// Buckets: `s3://bucket` roots with the prefix inside them.
    url_roots: Vec<UrlRoot>,
}

#[derive(Debug, Clone)]
struct UrlRoot {
    /// `s3://bucket`
    root: String,
    prefix: ObjectPath,
    display: String,
}

impl LocationPolicy {
    /// Allows locations inside each of `stores` (local paths as their fence admits them).
    pub fn for_stores(stores: &Stores) -> Self {
        Self {
            fence: Arc::clone(stores.local_files.gate().fence()),
            url_roots: stores
                .stores
                .iter()
                .filter(|store| store.local_path.is_none())
                .map(UrlRoot::of)
                .collect(),
        }
    }

    /// Checks every location `plan` would read or write.
    pub fn check_plan(&self, plan: &LogicalPlan) -> EngineResult<()> {
        let mut locations = Vec::new();
        // `apply` also visits plans nested in EXPLAIN (ANALYZE runs them).
        let _ = plan.apply(|node| {
            match node {
                LogicalPlan::Ddl(DdlStatement::CreateExternalTable(create)) => {
                    locations.extend(create.locations.iter().cloned());
                }
                LogicalPlan::Copy(copy) => locations.push(copy.output_url.clone()),
                LogicalPlan::Extension(_) => {
                    if let Some(super::writes::TableStatement::Create {
                        location: Some(location),
                        ..
                    }) = super::writes::TableStatementNode::of(node)
                    {
                        locations.push(location.clone());
                    }
                }
                _ => {}
            }
            Ok(TreeNodeRecursion::Continue)
        });
        locations.iter().try_for_each(|l| self.check(l).map(|_| ()))
    }

    /// Checks one location; returns the URL it will be opened as.
    pub fn check(&self, location: &str) -> EngineResult<Url> {
        let denied = |why: String| {
            EngineError::PermissionDenied(format!(
                "location '{location}' is not allowed: {why}; locations must lie inside {}",
                self.describe_roots()
            ))
        };
        if let Some(what) = hostile_text(location) {
            return Err(denied(format!("it contains {what}")));
        }
        // Exactly how DataFusion reads a location of CREATE EXTERNAL TABLE and COPY.
        let parsed = ListingTableUrl::parse(location)
            .map_err(|e| denied(format!("it is not a path or URL ({})", e.strip_backtrace())))?;
        let url: &Url = parsed.as_ref();
        if url.scheme() == "file" {
            if url.host_str().is_some_and(|host| !host.is_empty()) {
                return Err(denied("a file:// URL may not name a host".into()));
            }
            // Exactly how the local store turns it into the path it opens.
            let path = LocalFileSystem::new()
                .path_to_filesystem(parsed.prefix())
                .map_err(|e| denied(e.to_string()))?;
            self.fence.admit(&path).map_err(|e| denied(e.to_string()))?;
            return Ok(url.clone());
        }
        let root = &url[..url::Position::BeforePath];
        let inside = |r: &&UrlRoot| r.root == root && parsed.prefix().prefix_matches(&r.prefix);
        match self.url_roots.iter().find(inside) {
            Some(_) => Ok(url.clone()),
            None => Err(denied(format!(
                "no declared store contains this {}:// location",
                url.scheme()
            ))),
        }
    }

    fn describe_roots(&self) -> String {
        let roots: Vec<String> = self
            .fence
            .roots()
            .iter()
            .map(|r| r.display().to_string())
            .chain(self.url_roots.iter().map(|r| r.display.clone()))
            .collect();
        if roots.is_empty() {
            return "a declared store (none is declared)".into();
        }
        roots.join(" or ")
    }
}

impl UrlRoot {
    fn of(store: &Store) -> Self {
        Self {
            root: store.root_url.as_str().trim_end_matches('/').to_string(),
            prefix: store.prefix.clone(),
            display: store.display_url(),
        }
    }
}

/// What makes a location's text hostile whatever a library does with it:
/// a `..` segment at any level of percent-decoding (`%2e%2e`, `%252e%252e`,
/// `..%2f`), a backslash (URL parsing reads it as `/`), a control character.
fn hostile_text(location: &str) -> Option<&'static str> {
    let mut text = location.to_string();
    for _ in 0..DECODING_LEVELS {
        if text.contains('\\') {
            return Some("a backslash (write paths with /)");
        }
        if text.chars().any(char::is_control) {
            return Some("a control character");
        }
        if text.split('/').any(|segment| segment == "..") {
            return Some("a '..' segment (after percent-decoding)");
        }
        let decoded = percent_encoding::percent_decode_str(&text)
            .decode_utf8_lossy()
            .into_owned();
        if decoded == text {
            return None;
        }
        text = decoded;
    }
    Some("too many levels of percent-encoding")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{StoreConfig, open_all};

    struct Lake {
        _dir: tempfile::TempDir,
        lake: std::path::PathBuf,
        policy: LocationPolicy,
    }

    fn lake() -> Lake {
        let dir = tempfile::tempdir().unwrap();
        let lake = dir.path().join("lake");
        let state = lake.join(".tarn");
        std::fs::create_dir_all(lake.join("sub")).unwrap();
        std::fs::create_dir_all(&state).unwrap();
        std::os::unix::fs::symlink("/etc", lake.join("etc")).unwrap();
        let stores = open_all(
            &[
                (
                    "lake".into(),
                    StoreConfig {
                        url: lake.display().to_string(),
                        ..Default::default()
                    },
                ),
                (
                    "bucket".into(),
                    StoreConfig {
                        url: "s3://bucket/prefix".into(),
                        region: Some("us-east-1".into()),
                        ..Default::default()
                    },
                ),
            ],
            &[state],
        )
        .unwrap();
        Lake {
            lake: lake.canonicalize().unwrap(),
            policy: LocationPolicy::for_stores(&stores),
            _dir: dir,
        }
    }

    #[test]
    fn only_locations_inside_a_store_pass() {
        let Lake { lake, policy, _dir } = lake();
        let l = lake.display();
        for inside in [
            format!("{l}/sub/new.csv"),
            format!("file://{l}/x"),
            format!("{l}/sub/*.csv"),
            "s3://bucket/prefix/table/".to_string(),
        ] {
            assert!(policy.check(&inside).is_ok(), "{inside}");
        }
        for outside in [
            "/etc/".to_string(),
            "file:///etc/passwd".to_string(),
            format!("{l}/../escape"),
            format!("{l}/sub/../../escape"),
            format!("file://{l}/%2e%2e/%2E%2E/etc/passwd"),
            format!("{l}/%252e%252e/escape"),
            format!("file://{l}/..%2f..%2fetc"),
            format!("{l}\\..\\escape"),
            "file://localhost/etc/passwd".to_string(),
            "file:/etc/passwd".to_string(),
            "file:etc/passwd".to_string(),
            format!("{l}/etc/passwd"),
            format!("{l}/.tarn/catalog.sqlite-wal"),
            format!("file://{l}/%2etarn/catalog.sqlite"),
            "s3://undeclared/prefix".to_string(),
            "s3://bucket/other".to_string(),
            "relative/path".to_string(),
        ] {
            let err = policy.check(&outside).unwrap_err();
            assert!(
                matches!(err, EngineError::PermissionDenied(_)),
                "{outside}: {err}"
            );
        }
    }

    #[test]
    fn the_refusal_names_where_a_link_leads() {
        let Lake { lake, policy, _dir } = lake();
        let err = policy
            .check(lake.join("etc/passwd").to_str().unwrap())
            .unwrap_err();
        assert!(err.to_string().contains("/etc/passwd"), "{err}");
        let err = policy
            .check(&format!("{}/.tarn/catalog.sqlite", lake.display()))
            .unwrap_err();
        assert!(err.to_string().contains("state folder"), "{err}");
    }
}
