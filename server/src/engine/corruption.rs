//! After a statement fails in a way that suggests a corrupt file, name the
//! file: check the Parquet footers of the tables the statement reads (see
//! [`crate::footers`]). Costs nothing unless something already failed.

use std::sync::Arc;

use datafusion::catalog::TableProvider;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::datasource::listing::ListingTable;
use datafusion::datasource::physical_plan::FileScanConfig;
use datafusion::datasource::source::DataSourceExec;
use datafusion::datasource::source_as_provider;
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::ExecutionPlan;
use futures::TryStreamExt;
use object_store::{ObjectMeta, ObjectStore};

use crate::footers;

/// Corrupt files named after a failure, as the failure of a stream.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct CorruptFiles(pub(crate) String);

/// The error a stream ends with once the corrupt files are named.
pub(crate) fn named(description: String) -> datafusion::error::DataFusionError {
    datafusion::error::DataFusionError::External(Box::new(CorruptFiles(description)))
}

/// Names corrupt Parquet files among those `plans` read.
pub(crate) async fn in_physical_plans(
    runtime: &RuntimeEnv,
    plans: &[Arc<dyn ExecutionPlan>],
) -> Option<String> {
    let mut groups: Vec<(String, Arc<dyn ObjectStore>, Vec<ObjectMeta>)> = Vec::new();
    for plan in plans {
        collect_scans(plan, runtime, &mut groups);
    }
    check(groups).await
}

fn collect_scans(
    plan: &Arc<dyn ExecutionPlan>,
    runtime: &RuntimeEnv,
    groups: &mut Vec<(String, Arc<dyn ObjectStore>, Vec<ObjectMeta>)>,
) {
    if let Some(source) = plan.downcast_ref::<DataSourceExec>()
        && let Some(scan) = source.data_source().downcast_ref::<FileScanConfig>()
        && scan.file_source().file_type() == "parquet"
        && let Ok(store) = runtime.object_store(&scan.object_store_url)
    {
        let files = scan
            .file_groups
            .iter()
            .flat_map(|group| group.iter().map(|f| f.object_meta.clone()))
            .collect();
        groups.push((scan.object_store_url.as_str().to_string(), store, files));
    }
    for child in plan.children() {
        collect_scans(child, runtime, groups);
    }
}

/// What is wrong with the files of a table of Parquet files, if anything
/// the footers show.
pub(crate) enum ListingProblem {
    /// Files whose footers do not decode, named.
    Corrupt(String),
    /// Files that disagree on a column's type, named.
    Conflict(String),
}

/// Names the corrupt files of a table of Parquet files, or else the files
/// that disagree on a column's type.
pub(crate) async fn problems_in_listing(
    runtime: &RuntimeEnv,
    listing: &ListingTable,
) -> Option<ListingProblem> {
    let groups = listing_files(runtime, listing).await;
    if let Some(corrupt) = check(groups.clone()).await {
        return Some(ListingProblem::Corrupt(corrupt));
    }
    let mut named = Vec::new();
    for (root, store, files) in groups {
        let files = files.into_iter().map(|f| (Arc::clone(&store), f));
        named.extend(footers::schema_conflicts(&root, files).await);
    }
    (!named.is_empty()).then(|| ListingProblem::Conflict(named.join("; ")))
}

/// The Parquet files of a listing table, grouped by store.
async fn listing_files(
    runtime: &RuntimeEnv,
    listing: &ListingTable,
) -> Vec<(String, Arc<dyn ObjectStore>, Vec<ObjectMeta>)> {
    let mut groups = Vec::new();
    if listing.options().format.get_ext() != "parquet" {
        return groups;
    }
    let extension = &listing.options().file_extension;
    for path in listing.table_paths() {
        let root = path.object_store();
        let Ok(store) = runtime.object_store(&root) else {
            continue;
        };
        let Ok(objects) = store
            .list(Some(path.prefix()))
            .try_collect::<Vec<ObjectMeta>>()
            .await
        else {
            continue;
        };
        let files = objects
            .into_iter()
            .filter(|o| o.location.as_ref().ends_with(extension.as_str()))
            .collect();
        groups.push((root.as_str().to_string(), Arc::clone(&store), files));
    }
    groups
}

/// Names corrupt Parquet files of the tables `plan` reads (for failures
/// while planning, before there is a physical plan).
pub(crate) async fn in_logical_plan(runtime: &RuntimeEnv, plan: &LogicalPlan) -> Option<String> {
    let mut tables: Vec<Arc<dyn TableProvider>> = Vec::new();
    let _ = plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node
            && let Ok(provider) = source_as_provider(&scan.source)
        {
            tables.push(provider);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    let mut groups = Vec::new();
    for table in &tables {
        if let Some(listing) = table.downcast_ref::<ListingTable>() {
            groups.extend(listing_files(runtime, listing).await);
        }
    }
    check(groups).await
}

async fn check(groups: Vec<(String, Arc<dyn ObjectStore>, Vec<ObjectMeta>)>) -> Option<String> {
    let mut corrupt = Vec::new();
    for (root, store, files) in groups {
        let files = files.into_iter().map(|f| (Arc::clone(&store), f));
        corrupt.extend(footers::corrupt_files(&root, files).await);
    }
    corrupt.sort();
    corrupt.dedup();
    footers::describe_corrupt(corrupt)
}
