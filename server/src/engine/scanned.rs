//! The file scans of a physical plan (Parquet, CSV, JSON scans, also those
//! answered from the decoded-data cache): what the result cache keys answers
//! by and what table statistics are matched by.

use std::sync::Arc;

use datafusion::datasource::physical_plan::FileScanConfig;
use datafusion::datasource::source::DataSourceExec;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::placeholder_row::PlaceholderRowExec;

use super::cached_scan::CachedScanExec;

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

/// The file scan `plan` is, if it is one (or a scan of held columns of
/// the files it would read).
pub(crate) fn file_scan(plan: &dyn ExecutionPlan) -> Option<&FileScanConfig> {
    if let Some(cached) = plan.downcast_ref::<CachedScanExec>() {
        return Some(cached.scan());
    }
    plan.downcast_ref::<DataSourceExec>()
        .and_then(|source| source.data_source().downcast_ref::<FileScanConfig>())
}
