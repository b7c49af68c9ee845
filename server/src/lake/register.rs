//! Registering discovered tables with the engine's session: each as its
//! own task, so a reader that panics on a corrupt file skips that table
//! (named) instead of taking the server down.

use std::sync::Arc;
use std::time::Duration;

use datafusion::datasource::file_format::options::JsonReadOptions;
use datafusion::prelude::{CsvReadOptions, ParquetReadOptions, SessionContext};
use futures::TryStreamExt;
use object_store::ObjectMeta;
use object_store::path::Path as ObjectPath;

use super::{FileFormat, LakeError, LakeTable, discover};
use crate::storage::Store;

/// Discovers every table of every store and registers it with `ctx`.
/// Returns the tables registered and the problems met (each skipped, none
/// fatal: an unreachable store leaves the others served).
///
/// Delta tables serve a snapshot that is renewed at most `freshness` after
/// another writer commits.
pub async fn load(
    ctx: &SessionContext,
    stores: &[Store],
    freshness: Duration,
) -> (Vec<LakeTable>, Vec<LakeError>) {
    let mut loaded = Vec::new();
    let mut problems = Vec::new();
    for store in stores {
        let tables = match discover(store).await {
            Ok((tables, mut found)) => {
                problems.append(&mut found);
                tables
            }
            Err(problem) => {
                problems.push(problem);
                continue;
            }
        };
        for table in &tables {
            if loaded.iter().any(|t: &LakeTable| t.name == table.name) {
                problems.push(LakeError::DuplicateName {
                    name: table.name.clone(),
                    location: table.location.clone(),
                    existing: "another store".into(),
                });
                continue;
            }
            match register(ctx, table, freshness).await {
                Ok(()) => loaded.push(table.clone()),
                Err(problem) => problems.push(problem),
            }
        }
    }
    (loaded, problems)
}

/// Registers `table` with the session, reading its schema from its files.
///
/// Runs as its own task: a Parquet reader that panics on a corrupt file
/// skips this table instead of taking the server down.
pub async fn register(
    ctx: &SessionContext,
    table: &LakeTable,
    freshness: Duration,
) -> Result<(), LakeError> {
    let (task_ctx, owned) = (ctx.clone(), table.clone());
    let result =
        match tokio::spawn(async move { register_now(&task_ctx, &owned, freshness).await }).await {
            Ok(result) => result,
            Err(e) => Err(LakeError::Register {
                name: table.name.clone(),
                location: table.location.clone(),
                message: format!(
                    "reading its files failed: {}; one of them is probably corrupt",
                    crate::runtime::TaskFailure::from(e)
                ),
            }),
        };
    match result {
        Err(LakeError::Register { message, .. }) if table.format == FileFormat::Parquet => {
            Err(LakeError::Register {
                name: table.name.clone(),
                location: table.location.clone(),
                message: name_corrupt_files(ctx, table).await.unwrap_or(message),
            })
        }
        other => other,
    }
}

/// Why the Parquet files of `table` cannot be one table, naming the files:
/// unreadable footers, or columns whose type differs between files. `None`
/// when neither explains the failure.
async fn name_corrupt_files(ctx: &SessionContext, table: &LakeTable) -> Option<String> {
    let url = url::Url::parse(&table.location).ok()?;
    let store = crate::delta::root_store(&ctx.runtime_env(), &url).ok()?;
    let prefix = match url.to_file_path() {
        Ok(path) => ObjectPath::from_filesystem_path(path).ok()?,
        Err(()) => ObjectPath::parse(url.path().trim_matches('/')).ok()?,
    };
    let objects: Vec<ObjectMeta> = store.list(Some(&prefix)).try_collect().await.ok()?;
    let files: Vec<(Arc<dyn object_store::ObjectStore>, ObjectMeta)> = objects
        .into_iter()
        .filter(|o| o.location.as_ref().ends_with(table.extension))
        .map(|o| (Arc::clone(&store), o))
        .collect();
    let root = &url[..url::Position::BeforePath];
    match crate::footers::describe_corrupt(crate::footers::corrupt_files(root, files.clone()).await)
    {
        Some(corrupt) => Some(corrupt),
        None => crate::footers::schema_conflicts(root, files).await,
    }
}

async fn register_now(
    ctx: &SessionContext,
    table: &LakeTable,
    freshness: Duration,
) -> Result<(), LakeError> {
    let location = table.location.as_str();
    let partitions = table.partitions.clone();
    let result = match table.format {
        FileFormat::Delta => register_delta(ctx, table, freshness).await,
        FileFormat::Parquet => {
            let options = ParquetReadOptions::default()
                .file_extension(table.extension)
                .table_partition_cols(partitions);
            ctx.register_parquet(&table.name, location, options).await
        }
        FileFormat::Csv => {
            let options = CsvReadOptions::new()
                .has_header(true)
                .file_extension(table.extension)
                .table_partition_cols(partitions);
            ctx.register_csv(&table.name, location, options).await
        }
        FileFormat::Json => {
            let options = JsonReadOptions {
                file_extension: table.extension,
                table_partition_cols: partitions,
                ..Default::default()
            };
            ctx.register_json(&table.name, location, options).await
        }
    };
    result.map_err(|e| LakeError::Register {
        name: table.name.clone(),
        location: table.location.clone(),
        message: e.strip_backtrace(),
    })
}

async fn register_delta(
    ctx: &SessionContext,
    table: &LakeTable,
    freshness: Duration,
) -> datafusion::error::Result<()> {
    let url = url::Url::parse(&table.location)
        .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?;
    let root = crate::delta::root_store(&ctx.runtime_env(), &url)?;
    let delta = crate::delta::DeltaLakeTable::open(root, url, freshness)
        .await
        .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?;
    ctx.register_table(table.name.as_str(), Arc::new(delta))
        .map(|_| ())
}
