//! The files a physical plan reads: what the result cache keys answers by
//! and what table statistics are matched by.

use std::sync::Arc;

use datafusion::datasource::physical_plan::FileScanConfig;
use datafusion::datasource::source::DataSourceExec;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::placeholder_row::PlaceholderRowExec;
use sha2::{Digest, Sha256};

/// Calls `visit` with each file scan of `plan`; `false` when a leaf reads
/// something other than files (a table in memory, a system table), whose
/// versions are unknown. Leaves that read nothing at all are skipped.
pub(crate) fn visit_file_scans(
    plan: &Arc<dyn ExecutionPlan>,
    visit: &mut impl FnMut(&FileScanConfig),
) -> bool {
    let children = plan.children();
    if !children.is_empty() {
        return children
            .into_iter()
            .all(|child| visit_file_scans(child, visit));
    }
    if plan.is::<EmptyExec>() || plan.is::<PlaceholderRowExec>() {
        return true;
    }
    match file_scan(plan.as_ref()) {
        Some(config) => {
            visit(config);
            true
        }
        None => false,
    }
}

/// The file scan `plan` is, if it is one.
pub(crate) fn file_scan(plan: &dyn ExecutionPlan) -> Option<&FileScanConfig> {
    plan.downcast_ref::<DataSourceExec>()
        .and_then(|source| source.data_source().downcast_ref::<FileScanConfig>())
}

/// One file of a scan, named in full (store URL and path).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct FileVersion {
    pub(crate) url: String,
    pub(crate) size: u64,
    pub(crate) modified_nanos: i64,
    pub(crate) e_tag: String,
    pub(crate) version: String,
}

/// The files `config` reads, each once (a file split into byte ranges
/// appears in several groups).
pub(crate) fn files_of(config: &FileScanConfig) -> Vec<FileVersion> {
    let store = config.object_store_url.as_str().trim_end_matches('/');
    let mut files: Vec<FileVersion> = config
        .file_groups
        .iter()
        .flat_map(|group| group.files())
        .map(|file| {
            let meta = &file.object_meta;
            FileVersion {
                url: format!("{store}/{}", meta.location),
                size: meta.size,
                modified_nanos: meta.last_modified.timestamp_nanos_opt().unwrap_or(0),
                e_tag: meta.e_tag.clone().unwrap_or_default(),
                version: meta.version.clone().unwrap_or_default(),
            }
        })
        .collect();
    files.sort();
    files.dedup();
    files
}

/// A digest of a set of file versions: equal for the same files, changed
/// by any file added, removed or rewritten.
pub(crate) fn digest(files: &[FileVersion]) -> String {
    let mut sorted: Vec<&FileVersion> = files.iter().collect();
    sorted.sort();
    sorted.dedup();
    let mut hasher = Sha256::new();
    for file in sorted {
        for part in [
            file.url.as_bytes(),
            &file.size.to_le_bytes(),
            &file.modified_nanos.to_le_bytes(),
            file.e_tag.as_bytes(),
            file.version.as_bytes(),
        ] {
            hasher.update((part.len() as u64).to_le_bytes());
            hasher.update(part);
        }
    }
    hasher
        .finalize()
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect()
}
