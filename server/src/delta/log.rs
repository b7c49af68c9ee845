//! Reaching a Delta table's log: the log store over Tarn's own object
//! stores (commits to S3 by put-if-absent), loading a version, and reading
//! a commit's actions.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use datafusion::error::Result as DataFusionResult;
use deltalake::logstore::{LogStore, LogStoreFactory, LogStoreRef, ObjectStoreRef, StorageConfig};
use deltalake::{DeltaTable, DeltaTableBuilder, DeltaTableError};
use object_store::ObjectStore;
use url::Url;

use super::{DeltaError, TableVersion, WriteStats};

/// Lets `deltalake` commit to S3 buckets through Tarn's own `object_store`
/// clients. Its default log store commits with put-if-absent, which S3 (and
/// MinIO, R2, recent Ceph, moto) honour with `If-None-Match: *`; no lock
/// table is needed. Registered once per process.
pub fn register_s3_commits() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        for scheme in ["s3://", "s3a://"] {
            if let Ok(url) = Url::parse(scheme) {
                deltalake::logstore::logstore_factories()
                    .insert(url, Arc::new(PutIfAbsentLogStores));
            }
        }
    });
}

struct PutIfAbsentLogStores;

impl LogStoreFactory for PutIfAbsentLogStores {
    fn with_options(
        &self,
        prefixed_store: ObjectStoreRef,
        root_store: ObjectStoreRef,
        location: &Url,
        options: &StorageConfig,
    ) -> deltalake::DeltaResult<Arc<dyn LogStore>> {
        Ok(deltalake::logstore::default_logstore(
            prefixed_store,
            root_store,
            location,
            options,
        ))
    }
}

/// The log store of the table at `location`, reached through `root` (the
/// store of the location's bucket or file system).
pub(super) fn log_store(
    root: Arc<dyn ObjectStore>,
    location: &Url,
) -> Result<LogStoreRef, DeltaError> {
    register_s3_commits();
    DeltaTableBuilder::from_url(location.clone())
        .and_then(|builder| {
            builder
                .with_storage_backend(root, location.clone())
                .build_storage()
        })
        .map_err(|e| DeltaError::table(location, e))
}

/// The object store that serves `location`, from the session's registry
/// (local files, and every bucket of a declared store).
pub fn root_store(
    runtime: &datafusion::execution::runtime_env::RuntimeEnv,
    location: &Url,
) -> DataFusionResult<Arc<dyn ObjectStore>> {
    let root = datafusion::execution::object_store::ObjectStoreUrl::parse(
        &location[..url::Position::BeforePath],
    )?;
    runtime.object_store(root)
}

/// Loads the table at `location` (the newest version, or `version`).
pub async fn load(
    root: Arc<dyn ObjectStore>,
    location: &Url,
    version: Option<TableVersion>,
) -> Result<DeltaTable, DeltaError> {
    let mut table = DeltaTable::new(log_store(root, location)?);
    let loaded = match version {
        None => table.load().await,
        Some(TableVersion::Number(v)) => table.load_version(v).await,
        Some(TableVersion::AsOf(time)) => table.load_with_datetime(time).await,
    };
    let no_such_version = |message: String| DeltaError::NoSuchVersion {
        location: location.to_string(),
        message,
    };
    match loaded {
        Ok(()) => {}
        Err(DeltaTableError::NotATable(_)) => {
            return Err(DeltaError::NoCommit {
                location: location.to_string(),
            });
        }
        Err(err) => {
            return Err(match (version, table.get_latest_version().await) {
                (Some(TableVersion::Number(v)), Ok(latest)) if v > latest => no_such_version(
                    format!("there is no version {v}; versions run from 0 to {latest}"),
                ),
                _ => DeltaError::table(location, err),
            });
        }
    }
    if let Some(TableVersion::AsOf(time)) = version {
        // deltalake falls back to the first version for times before it;
        // that version did not exist yet at `time`.
        let created = commit_time(&table).await;
        if table.version() == Some(0) && created.is_some_and(|created| created > time) {
            return Err(no_such_version(format!(
                "the table did not exist yet at {}; its first version was committed at {}",
                time.to_rfc3339(),
                created.map(|c| c.to_rfc3339()).unwrap_or_default()
            )));
        }
    }
    Ok(table)
}

/// When the loaded version of `table` was committed.
pub(super) async fn commit_time(table: &DeltaTable) -> Option<DateTime<Utc>> {
    let millis = commit_info(table).await?.get("timestamp")?.as_i64()?;
    DateTime::from_timestamp_millis(millis)
}

/// The `commitInfo` action of the loaded version of `table`.
async fn commit_info(table: &DeltaTable) -> Option<serde_json::Value> {
    commit_actions(table)
        .await?
        .into_iter()
        .find_map(|mut action| action.get_mut("commitInfo").map(serde_json::Value::take))
}

/// The actions of the loaded version's commit file. (`history()` starts at
/// the newest commit in the store, which may be another writer's.)
pub(super) async fn commit_actions(table: &DeltaTable) -> Option<Vec<serde_json::Value>> {
    let version = table.version()?;
    let bytes = table.log_store().read_commit_entry(version).await.ok()??;
    Some(
        bytes
            .split(|b| *b == b'\n')
            .filter_map(|line| serde_json::from_slice::<serde_json::Value>(line).ok())
            .collect(),
    )
}

/// What the commit `table` was just loaded at (a write's own) added.
pub(super) async fn write_stats(table: &DeltaTable) -> WriteStats {
    let Some(actions) = commit_actions(table).await else {
        return WriteStats::default();
    };
    let mut stats = WriteStats {
        bytes: Some(0),
        ..Default::default()
    };
    for action in &actions {
        if let Some(add) = action.get("add") {
            stats.files += 1;
            stats.bytes = stats
                .bytes
                .zip(add.get("size").and_then(|s| s.as_u64()))
                .map(|(a, b)| a + b);
        }
        if let Some(rows) = action.get("commitInfo").and_then(|info| {
            info.get("operationMetrics")?
                .get("num_added_rows")?
                .as_u64()
        }) {
            stats.rows = rows;
        }
    }
    stats
}
