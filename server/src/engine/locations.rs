//! Which storage locations statements may read or write.
//!
//! `CREATE EXTERNAL TABLE ... LOCATION` and `COPY ... TO` name locations in
//! SQL. Unchecked, any client could read `/etc/passwd` or write anywhere the
//! server process can. Only locations inside a declared root are allowed;
//! `..` and symbolic links are resolved before the check, so neither can
//! escape a root.

use std::path::{Component, Path, PathBuf};

use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::logical_expr::{DdlStatement, LogicalPlan};

use super::error::{EngineError, EngineResult};

/// The roots statements may name locations under.
#[derive(Debug, Clone, Default)]
pub struct LocationPolicy {
    local_roots: Vec<PathBuf>,
    /// Object-store roots such as `s3://bucket/prefix`, without a trailing `/`.
    url_roots: Vec<String>,
}

impl LocationPolicy {
    /// Allows local paths under each of `roots`.
    pub fn local(roots: impl IntoIterator<Item = PathBuf>) -> Self {
        let local_roots = roots
            .into_iter()
            .map(|root| resolve(&absolute(&root)))
            .collect();
        Self {
            local_roots,
            url_roots: Vec::new(),
        }
    }

    /// Allows locations inside each of `stores`.
    pub fn for_stores(stores: &[crate::storage::Store]) -> Self {
        let mut policy = Self::local(stores.iter().filter_map(|s| s.local_path.clone()));
        policy.url_roots = stores
            .iter()
            .filter(|s| s.local_path.is_none())
            .map(|s| s.display_url().trim_end_matches('/').to_string())
            .collect();
        policy
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
        locations.iter().try_for_each(|l| self.check(l))
    }

    /// Checks one location.
    pub fn check(&self, location: &str) -> EngineResult<()> {
        let denied = |why: String| {
            EngineError::PermissionDenied(format!(
                "location '{location}' is not allowed: {why}; locations must lie inside {}",
                self.describe_roots()
            ))
        };
        let path = match location.split_once("://") {
            Some(("file", rest)) => PathBuf::from(rest),
            Some((scheme, rest)) => {
                let inside = |root: &String| {
                    location == root.as_str()
                        || location
                            .strip_prefix(root.as_str())
                            .is_some_and(|r| r.starts_with('/'))
                };
                let escapes = rest.split('/').any(|part| part == ".." || part == ".");
                return if !escapes && self.url_roots.iter().any(inside) {
                    Ok(())
                } else {
                    Err(denied(format!(
                        "no declared store contains this {scheme}:// location"
                    )))
                };
            }
            None => PathBuf::from(location),
        };
        let resolved = resolve(&absolute(&path));
        if self
            .local_roots
            .iter()
            .any(|root| resolved.starts_with(root))
        {
            Ok(())
        } else {
            Err(denied(format!("it resolves to {}", resolved.display())))
        }
    }

    fn describe_roots(&self) -> String {
        let roots: Vec<String> = self
            .local_roots
            .iter()
            .map(|r| r.display().to_string())
            .chain(self.url_roots.iter().cloned())
            .collect();
        if roots.is_empty() {
            return "a declared store (none is declared)".into();
        }
        roots.join(" or ")
    }
}

fn absolute(path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().unwrap_or_default().join(path)
    }
}

/// Removes `.` and `..` lexically, then resolves symbolic links in the
/// longest prefix that exists (the rest, like a COPY target, may not exist yet).
fn resolve(path: &Path) -> PathBuf {
    let mut lexical = PathBuf::new();
    for component in path.components() {
        match component {
            Component::ParentDir => {
                lexical.pop();
            }
            Component::CurDir => {}
            other => lexical.push(other),
        }
    }
    let mut existing = lexical.clone();
    let mut rest = Vec::new();
    loop {
        if let Ok(canonical) = existing.canonicalize() {
            return rest
                .iter()
                .rev()
                .fold(canonical, |acc, part: &std::ffi::OsString| acc.join(part));
        }
        match (
            existing.file_name().map(|n| n.to_os_string()),
            existing.parent(),
        ) {
            (Some(name), Some(parent)) => {
                rest.push(name);
                existing = parent.to_path_buf();
            }
            _ => return lexical,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_paths_inside_a_root_pass() {
        let dir = tempfile::tempdir().unwrap();
        let lake = dir.path().join("lake");
        std::fs::create_dir_all(lake.join("sub")).unwrap();
        let policy = LocationPolicy::local([lake.clone()]);
        let inside = lake.join("sub/new.csv");
        assert!(policy.check(inside.to_str().unwrap()).is_ok());
        assert!(
            policy
                .check(&format!("file://{}", lake.join("x").display()))
                .is_ok()
        );
        for outside in [
            "/etc/".to_string(),
            "file:///etc/passwd".to_string(),
            format!("{}/../escape", lake.display()),
            format!("{}/sub/../../escape", lake.display()),
            "s3://undeclared/prefix".to_string(),
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
    fn symbolic_links_cannot_escape() {
        let dir = tempfile::tempdir().unwrap();
        let lake = dir.path().join("lake");
        std::fs::create_dir_all(&lake).unwrap();
        std::os::unix::fs::symlink("/etc", lake.join("etc")).unwrap();
        let policy = LocationPolicy::local([lake.clone()]);
        let err = policy
            .check(lake.join("etc/passwd").to_str().unwrap())
            .unwrap_err();
        assert!(err.to_string().contains("/etc/passwd"), "{err}");
    }
}
