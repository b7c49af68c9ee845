//! Delta Lake tables: the format Tarn writes, read with snapshots and time
//! travel (the `deltalake` crate, on the same DataFusion line).
//!
//! Invariants:
//! - A write puts its data files first and makes them part of the table with
//!   one commit file, `_delta_log/<version>.json`, created only if absent
//!   (`If-None-Match: *` on S3, a no-clobber link on local disk). A write
//!   that fails or is killed leaves unreferenced files and no visible change;
//!   two writers racing for a version both land, one after the other.
//! - Before the first data file of a new table, a marker is put under
//!   `_delta_log/`, so lake discovery never mistakes the files of an
//!   unfinished table for a plain Parquet table.
//! - Writers to one table inside this process take turns (one lock per
//!   table folder), so they never race each other for a version; a race
//!   with another process is retried with backoff until [`BUSY_DEADLINE`],
//!   then reported as [`DeltaError::Busy`].
//! - A registered table serves one snapshot at a time; the snapshot is
//!   renewed after Tarn's own writes, after `REFRESH TABLE`, and on the first
//!   scan after the listing TTL, so other writers' commits become visible.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use arrow::datatypes::SchemaRef;
use chrono::{DateTime, Utc};
use datafusion::catalog::{Session, TableProvider};
use datafusion::datasource::TableType;
use datafusion::error::{DataFusionError, Result as DataFusionResult};
use datafusion::execution::SessionState;
use datafusion::logical_expr::{Expr, LogicalPlan, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use deltalake::kernel::transaction::{CommitProperties, TransactionError};
use deltalake::logstore::{LogStore, LogStoreFactory, LogStoreRef, ObjectStoreRef, StorageConfig};
use deltalake::operations::write::{SchemaMode, WriteBuilder};
use deltalake::protocol::SaveMode;
use deltalake::{DeltaTable, DeltaTableBuilder, DeltaTableError};
use futures::TryStreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use url::Url;

/// The folder of a Delta table that holds its commits.
pub const LOG_FOLDER: &str = "_delta_log";

/// Put under `_delta_log/` before a new table's first data file.
const CREATE_MARKER: &str = "_tarn_create_started";

/// Rows per Parquet row group: large enough for good compression and
/// statistics, small enough that a filtered scan skips most of a file.
const ROW_GROUP_ROWS: usize = 1024 * 1024;

/// How long a write keeps retrying while other processes win every commit.
pub const BUSY_DEADLINE: Duration = Duration::from_secs(30);

/// Commit attempts deltalake makes for one write before it gives up (each
/// attempt after a lost race reads the newer commits and takes the next
/// version; appends never conflict with each other).
const COMMIT_ATTEMPTS: usize = 50;

/// First and longest pause between whole attempts of a write that lost
/// every commit race.
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const LONGEST_BACKOFF: Duration = Duration::from_secs(2);

/// Why a Delta table operation failed.
#[derive(Debug, thiserror::Error)]
pub enum DeltaError {
    /// A table exists where a new one was to be created.
    #[error(
        "a Delta table already exists at {location}; pick another name or LOCATION, serve it with CREATE EXTERNAL TABLE ... STORED AS DELTA, or remove it with DROP TABLE ... PURGE"
    )]
    AlreadyExists {
        /// The table folder.
        location: String,
    },
    /// A new table would be written over files that are not a Delta table.
    #[error(
        "{location} already holds files that are not a Delta table; write new tables to an empty location"
    )]
    NotEmpty {
        /// The folder.
        location: String,
    },
    /// The folder has a `_delta_log` without any commit.
    #[error(
        "{location} has no committed Delta version (an interrupted CREATE TABLE leaves this); create the table again or delete the folder"
    )]
    NoCommit {
        /// The folder.
        location: String,
    },
    /// Time travel to a version or time the table does not have.
    #[error("{location}: {message}")]
    NoSuchVersion {
        /// The table folder.
        location: String,
        /// What was asked and what exists.
        message: String,
    },
    /// Other writers kept committing to the table until the deadline passed.
    #[error(
        "the Delta table at {location} is busy: other writers committed to it for {waited_secs} s while this write tried to; nothing was committed, try again"
    )]
    Busy {
        /// The table folder.
        location: String,
        /// How long the write tried.
        waited_secs: u64,
    },
    /// Reading or writing the table failed.
    #[error("Delta table at {location}: {source}")]
    Table {
        /// The table folder.
        location: String,
        /// The cause, kept whole so that callers can tell a store that is
        /// down from a bad cast in the written rows.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl DeltaError {
    fn table(location: &Url, err: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self::Table {
            location: location.to_string(),
            source: err.into(),
        }
    }
}

/// A version of a table to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableVersion {
    /// A commit number (0 is the table's creation).
    Number(u64),
    /// The newest version committed at or before this time.
    AsOf(DateTime<Utc>),
}

impl std::fmt::Display for TableVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TableVersion::Number(v) => write!(f, "version {v}"),
            TableVersion::AsOf(time) => write!(f, "the version as of {}", time.to_rfc3339()),
        }
    }
}

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
fn log_store(root: Arc<dyn ObjectStore>, location: &Url) -> Result<LogStoreRef, DeltaError> {
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
async fn commit_time(table: &DeltaTable) -> Option<DateTime<Utc>> {
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
async fn commit_actions(table: &DeltaTable) -> Option<Vec<serde_json::Value>> {
    let version = table.version()?;
    let bytes = table.log_store().read_commit_entry(version).await.ok()??;
    Some(
        bytes
            .split(|b| *b == b'\n')
            .filter_map(|line| serde_json::from_slice::<serde_json::Value>(line).ok())
            .collect(),
    )
}

/// Parquet settings for every file Tarn writes.
fn writer_properties() -> WriterProperties {
    let zstd = ZstdLevel::try_new(3).map_or(Compression::SNAPPY, Compression::ZSTD);
    WriterProperties::builder()
        .set_compression(zstd)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_statistics_enabled(EnabledStatistics::Page)
        .build()
}

/// What `CREATE TABLE` asks for.
#[derive(Debug, Clone)]
pub struct NewTable {
    /// The table folder.
    pub location: Url,
    /// Partition columns, outermost first.
    pub partition_by: Vec<String>,
    /// `OR REPLACE`: overwrite an existing table (a new version; older
    /// versions stay readable by time travel).
    pub replace: bool,
}

/// Creates the Delta table `new` from the rows of `input`; returns it with
/// the number of rows written.
pub async fn create(
    root: Arc<dyn ObjectStore>,
    new: &NewTable,
    session: Arc<SessionState>,
    input: LogicalPlan,
) -> Result<(DeltaTable, WriteStats), DeltaError> {
    let location = &new.location;
    let turn = write_turn(location);
    let _turn = turn.lock().await;
    if let Ok(folder) = location.to_file_path() {
        // deltalake resolves local table folders, so they must exist first.
        tokio::fs::create_dir_all(&folder)
            .await
            .map_err(|e| DeltaError::table(location, e))?;
    }
    let existing = existing_table(Arc::clone(&root), location).await?;
    match existing {
        Some(_) if !new.replace => {
            return Err(DeltaError::AlreadyExists {
                location: location.to_string(),
            });
        }
        None => mark_create_started(root.as_ref(), location).await?,
        Some(_) => {}
    }
    let log_store = log_store(Arc::clone(&root), location)?;
    let replace = existing.is_some();
    let table = retry_while_busy(location, BUSY_DEADLINE, || {
        let (log_store, session, input) =
            (Arc::clone(&log_store), Arc::clone(&session), input.clone());
        let partition_by = new.partition_by.clone();
        async move {
            let builder = if replace {
                // Over the newest version: a retry sees what others committed.
                let mut current = DeltaTable::new(Arc::clone(&log_store));
                current.load().await?;
                let snapshot = current.snapshot()?.snapshot().clone();
                WriteBuilder::new(log_store, Some(snapshot))
                    .with_save_mode(SaveMode::Overwrite)
                    .with_schema_mode(SchemaMode::Overwrite)
            } else {
                WriteBuilder::new(log_store, None).with_save_mode(SaveMode::ErrorIfExists)
            };
            let builder = if partition_by.is_empty() {
                builder
            } else {
                builder.with_partition_columns(partition_by)
            };
            with_tarn_settings(builder, input, session).await
        }
    })
    .await?;
    // The commit is what counts; a leftover marker is harmless.
    let _ = root.delete(&marker_path(location)).await;
    let stats = write_stats(&table).await;
    Ok((table, stats))
}

/// A write of the rows of `input`, with the file settings and commit
/// attempts of every write Tarn makes.
fn with_tarn_settings(
    builder: WriteBuilder,
    input: LogicalPlan,
    session: Arc<SessionState>,
) -> WriteBuilder {
    builder
        .with_input_plan(input)
        .with_session_state(session)
        .with_writer_properties(writer_properties())
        .with_commit_properties(CommitProperties::default().with_max_retries(COMMIT_ATTEMPTS))
}

/// The table at `location`, if there is one; an error if the folder holds
/// other files.
async fn existing_table(
    root: Arc<dyn ObjectStore>,
    location: &Url,
) -> Result<Option<DeltaTable>, DeltaError> {
    let (log, data) = list_folder(root.as_ref(), location).await?;
    if log.is_empty() {
        return match data.is_empty() {
            true => Ok(None),
            false => Err(DeltaError::NotEmpty {
                location: location.to_string(),
            }),
        };
    }
    match load(root, location, None).await {
        Ok(table) => Ok(Some(table)),
        // An interrupted create: its files are unreferenced, start afresh.
        Err(DeltaError::NoCommit { .. }) => Ok(None),
        Err(err) => Err(err),
    }
}

async fn mark_create_started(root: &dyn ObjectStore, location: &Url) -> Result<(), DeltaError> {
    let note = format!("CREATE TABLE started at {}\n", Utc::now().to_rfc3339());
    root.put(&marker_path(location), PutPayload::from(note.into_bytes()))
        .await
        .map(|_| ())
        .map_err(|e| DeltaError::table(location, e))
}

fn marker_path(location: &Url) -> ObjectPath {
    let folder = object_path(location).unwrap_or_default();
    folder.join(LOG_FOLDER).join(CREATE_MARKER)
}

/// The path of `location` inside its bucket or file system.
fn object_path(location: &Url) -> Result<ObjectPath, DeltaError> {
    if location.scheme() == "file" {
        let path = location
            .to_file_path()
            .map_err(|()| DeltaError::table(location, "not a local path"))?;
        return ObjectPath::from_filesystem_path(path).map_err(|e| DeltaError::table(location, e));
    }
    ObjectPath::parse(location.path().trim_matches('/')).map_err(|e| DeltaError::table(location, e))
}

fn write_error(location: &Url, err: DeltaTableError) -> DeltaError {
    match err {
        DeltaTableError::Transaction {
            source: TransactionError::VersionAlreadyExists(0),
        } => DeltaError::AlreadyExists {
            location: location.to_string(),
        },
        other => DeltaError::table(location, other),
    }
}

/// Whether `err` is a lost race with another writer (worth another try).
fn lost_commit_race(err: &DeltaTableError) -> bool {
    matches!(
        err,
        DeltaTableError::Transaction {
            source: TransactionError::MaxCommitAttempts(_)
                | TransactionError::CommitConflict(_)
                | TransactionError::VersionAlreadyExists(1..),
        }
    )
}

/// The lock writers to the table at `location` take turns on, in this process.
fn write_turn(location: &Url) -> Arc<tokio::sync::Mutex<()>> {
    static TURNS: std::sync::LazyLock<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>> =
        std::sync::LazyLock::new(Default::default);
    let mut turns = TURNS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    Arc::clone(turns.entry(location.to_string()).or_default())
}

/// Runs `write` (one whole write: data files, then a commit) until it
/// commits, retrying with growing pauses while it loses commit races to
/// other processes, for up to `deadline` ([`BUSY_DEADLINE`]).
async fn retry_while_busy<F, Fut>(
    location: &Url,
    deadline: Duration,
    mut write: F,
) -> Result<DeltaTable, DeltaError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<DeltaTable, DeltaTableError>>,
{
    let started = Instant::now();
    let mut pause = FIRST_BACKOFF;
    loop {
        match write().await {
            Ok(table) => return Ok(table),
            Err(err) if lost_commit_race(&err) => {
                if started.elapsed() + pause > deadline {
                    return Err(DeltaError::Busy {
                        location: location.to_string(),
                        waited_secs: started.elapsed().as_secs(),
                    });
                }
                tracing::debug!(%location, "a commit lost to other writers; trying again: {err}");
                // Jitter keeps writers that lost together from retrying together.
                let jitter = (uuid::Uuid::new_v4().as_u128() % pause.as_millis().max(1)) as u64;
                tokio::time::sleep(pause + Duration::from_millis(jitter)).await;
                pause = (pause * 2).min(LONGEST_BACKOFF);
            }
            Err(err) => return Err(write_error(location, err)),
        }
    }
}

/// What a write added: rows, bytes and files.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteStats {
    /// Rows written.
    pub rows: u64,
    /// Bytes of the data files written (`None` when unknown).
    pub bytes: Option<u64>,
    /// Data files written.
    pub files: u64,
    /// Rows read from the sources, when known.
    pub rows_in: Option<u64>,
    /// Bytes read from files, when known.
    pub bytes_in: Option<u64>,
}

/// What the commit `table` was just loaded at (a write's own) added.
async fn write_stats(table: &DeltaTable) -> WriteStats {
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

/// The objects under the table folder `location`: those of its
/// `_delta_log/`, and the others.
async fn list_folder(
    root: &dyn ObjectStore,
    location: &Url,
) -> Result<(Vec<object_store::ObjectMeta>, Vec<object_store::ObjectMeta>), DeltaError> {
    let folder = object_path(location)?;
    let objects: Vec<object_store::ObjectMeta> = root
        .list(Some(&folder))
        .try_collect()
        .await
        .map_err(|e| DeltaError::table(location, e))?;
    Ok(objects.into_iter().partition(|o| {
        o.location
            .prefix_match(&folder)
            .is_some_and(|mut p| p.next().is_some_and(|p| p.as_ref() == LOG_FOLDER))
    }))
}

/// Deletes every file of the table at `location`: data files first, the log
/// last, so an interrupted purge leaves a table that errors on the missing
/// files (and can be purged again), never a folder of stale plain files.
pub async fn purge(root: Arc<dyn ObjectStore>, location: &Url) -> Result<(), DeltaError> {
    let turn = write_turn(location);
    let _turn = turn.lock().await;
    let (log, data) = list_folder(root.as_ref(), location).await?;
    for object in data.iter().chain(log.iter()) {
        match root.delete(&object.location).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(DeltaError::table(location, e)),
        }
    }
    if let Ok(folder) = location.to_file_path() {
        // Local stores keep empty folders, which would still look like a table.
        match tokio::fs::remove_dir_all(&folder).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(DeltaError::table(location, e)),
        }
    }
    Ok(())
}

/// Removes what a write that began at `since` and never finished (its
/// process was killed) left in the table folder at `location`: data files
/// no commit references (complete ones, and the `name#n` staging files of
/// local writes), deltalake's temporary commit files, and Tarn's create
/// marker when no version was ever committed. Only files written at or
/// after `since` are candidates: everything older either is referenced or
/// was there before that write. Returns how many files were removed.
pub async fn remove_orphans(
    root: Arc<dyn ObjectStore>,
    location: &Url,
    since: DateTime<Utc>,
) -> Result<usize, DeltaError> {
    let turn = write_turn(location);
    let _turn = turn.lock().await;
    let folder = object_path(location)?;
    let (log, data) = list_folder(root.as_ref(), location).await?;
    let relative = |object: &object_store::ObjectMeta| -> String {
        object
            .location
            .prefix_match(&folder)
            .map(|parts| {
                parts
                    .map(|p| p.as_ref().to_string())
                    .collect::<Vec<_>>()
                    .join("/")
            })
            .unwrap_or_default()
    };
    let is_commit = |object: &object_store::ObjectMeta| {
        object.location.filename().is_some_and(|name| {
            name.strip_suffix(".json")
                .is_some_and(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
        })
    };
    // A file a write adds appears in a commit written after the file.
    let mut referenced = std::collections::HashSet::new();
    for commit in log
        .iter()
        .filter(|o| is_commit(o) && o.last_modified >= since)
    {
        let bytes = root
            .get(&commit.location)
            .await
            .map_err(|e| DeltaError::table(location, e))?
            .bytes()
            .await
            .map_err(|e| DeltaError::table(location, e))?;
        for line in bytes.split(|b| *b == b'\n') {
            let Ok(action) = serde_json::from_slice::<serde_json::Value>(line) else {
                continue;
            };
            for kind in ["add", "remove"] {
                if let Some(path) = action.get(kind).and_then(|a| a.get("path")?.as_str()) {
                    let decoded = percent_encoding::percent_decode_str(path).decode_utf8_lossy();
                    referenced.insert(decoded.into_owned());
                }
            }
        }
    }
    let committed = log.iter().any(is_commit);
    let mut orphans: Vec<&object_store::ObjectMeta> = data
        .iter()
        .filter(|o| o.last_modified >= since && !referenced.contains(&relative(o)))
        .collect();
    orphans.extend(log.iter().filter(|o| {
        let name = o.location.filename().unwrap_or_default();
        let temporary_commit = name.starts_with("_commit_") && name.ends_with(".tmp");
        let lone_marker = name == CREATE_MARKER && !committed;
        (temporary_commit && o.last_modified >= since) || lone_marker
    }));
    for orphan in &orphans {
        match root.delete(&orphan.location).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(DeltaError::table(location, e)),
        }
    }
    if let Ok(path) = location.to_file_path() {
        // Local stores keep the folders of removed files (partition folders;
        // all of an unfinished create, whose name is then free again).
        remove_empty_folders(&path);
    }
    Ok(orphans.len())
}

/// Removes `folder` and its subfolders if no file is left in any of them.
fn remove_empty_folders(folder: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(folder) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            remove_empty_folders(&entry.path());
        }
    }
    // Fails, harmlessly, while anything is left inside.
    let _ = std::fs::remove_dir(folder);
}

/// The size of one table version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VersionStats {
    /// The Delta version.
    pub version: u64,
    /// Rows in the table at this version.
    pub rows: Option<u64>,
    /// Data files.
    pub files: u64,
    /// Bytes of data files.
    pub bytes: u64,
}

/// A Delta table registered with the engine.
pub struct DeltaLakeTable {
    location: Url,
    root: Arc<dyn ObjectStore>,
    ttl: Duration,
    current: RwLock<Snapshot>,
    // One reload at a time; concurrent scans wait for it instead of piling up.
    reloading: tokio::sync::Mutex<()>,
}

#[derive(Clone)]
struct Snapshot {
    table: DeltaTable,
    provider: Arc<dyn TableProvider>,
    loaded: Instant,
}

impl std::fmt::Debug for DeltaLakeTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeltaLakeTable")
            .field("location", &self.location.as_str())
            .field("version", &self.version())
            .finish()
    }
}

impl DeltaLakeTable {
    /// Opens the newest version of the table at `location`.
    pub async fn open(
        root: Arc<dyn ObjectStore>,
        location: Url,
        ttl: Duration,
    ) -> Result<Self, DeltaError> {
        let table = load(Arc::clone(&root), &location, None).await?;
        Self::with_table(root, location, table, ttl).await
    }

    /// Serves `table` (just written or loaded).
    pub async fn with_table(
        root: Arc<dyn ObjectStore>,
        location: Url,
        table: DeltaTable,
        ttl: Duration,
    ) -> Result<Self, DeltaError> {
        let snapshot = Snapshot::of(table, &location).await?;
        Ok(Self {
            location,
            root,
            ttl,
            current: RwLock::new(snapshot),
            reloading: tokio::sync::Mutex::new(()),
        })
    }

    /// The table folder.
    pub fn location(&self) -> &Url {
        &self.location
    }

    /// The store the table lives in.
    pub fn root(&self) -> Arc<dyn ObjectStore> {
        Arc::clone(&self.root)
    }

    /// The version being served.
    pub fn version(&self) -> Option<u64> {
        self.snapshot().table.version()
    }

    fn snapshot(&self) -> Snapshot {
        match self.current.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn install(&self, snapshot: Snapshot) {
        match self.current.write() {
            Ok(mut guard) => *guard = snapshot,
            Err(poisoned) => *poisoned.into_inner() = snapshot,
        }
    }

    /// Loads the newest version now (`REFRESH TABLE`).
    pub async fn refresh(&self) -> Result<(), DeltaError> {
        let _one = self.reloading.lock().await;
        let mut table = self.snapshot().table;
        table
            .update_incremental(None)
            .await
            .map_err(|e| DeltaError::table(&self.location, e))?;
        self.install(Snapshot::of(table, &self.location).await?);
        Ok(())
    }

    /// The provider of a snapshot no older than the TTL.
    async fn fresh_provider(&self) -> Result<Arc<dyn TableProvider>, DeltaError> {
        let snapshot = self.snapshot();
        if snapshot.loaded.elapsed() < self.ttl {
            return Ok(snapshot.provider);
        }
        let _one = self.reloading.lock().await;
        let again = self.snapshot();
        if again.loaded.elapsed() < self.ttl {
            return Ok(again.provider);
        }
        drop(_one);
        self.refresh().await?;
        Ok(self.snapshot().provider)
    }

    /// Appends (or, with `overwrite`, replaces) the rows of `input`; returns
    /// the number of rows written. Concurrent appends all land: a commit
    /// that loses the race for a version retries at the next one.
    pub async fn append(
        &self,
        session: Arc<SessionState>,
        input: LogicalPlan,
        overwrite: bool,
    ) -> Result<WriteStats, DeltaError> {
        let turn = write_turn(&self.location);
        let _turn = turn.lock().await;
        let mode = if overwrite {
            SaveMode::Overwrite
        } else {
            SaveMode::Append
        };
        let served = self.snapshot().table;
        let table = retry_while_busy(&self.location, BUSY_DEADLINE, || {
            let (mut base, session, input) = (served.clone(), Arc::clone(&session), input.clone());
            async move {
                // Over the newest version: a retry sees what others committed.
                base.update_incremental(None).await?;
                let snapshot = base.snapshot()?.snapshot().clone();
                let builder =
                    WriteBuilder::new(base.log_store(), Some(snapshot)).with_save_mode(mode);
                with_tarn_settings(builder, input, session).await
            }
        })
        .await?;
        let stats = write_stats(&table).await;
        self.install(Snapshot::of(table, &self.location).await?);
        Ok(stats)
    }

    /// The served version with its row, file and byte counts (rows are
    /// `None` when a file lacks statistics).
    pub fn version_stats(&self) -> Option<VersionStats> {
        let snapshot = self.snapshot();
        let version = snapshot.table.version()?;
        let state = snapshot.table.snapshot().ok()?;
        let mut stats = VersionStats {
            version,
            rows: Some(0),
            files: 0,
            bytes: 0,
        };
        for file in state.log_data().iter() {
            stats.files += 1;
            stats.bytes += u64::try_from(file.size()).unwrap_or(0);
            stats.rows = stats
                .rows
                .zip(file.num_records())
                .map(|(total, rows)| total + rows as u64);
        }
        Some(stats)
    }

    /// An earlier version of this table, for time travel.
    pub async fn at(&self, version: TableVersion) -> Result<Arc<dyn TableProvider>, DeltaError> {
        let table = load(self.root(), &self.location, Some(version)).await?;
        Ok(Snapshot::of(table, &self.location).await?.provider)
    }
}

impl Snapshot {
    async fn of(table: DeltaTable, location: &Url) -> Result<Self, DeltaError> {
        let provider = table
            .table_provider()
            .await
            .map_err(|e| DeltaError::table(location, e))?;
        Ok(Self {
            table,
            provider,
            loaded: Instant::now(),
        })
    }
}

fn to_datafusion(err: DeltaError) -> DataFusionError {
    DataFusionError::External(Box::new(err))
}

#[async_trait::async_trait]
impl TableProvider for DeltaLakeTable {
    fn schema(&self) -> SchemaRef {
        self.snapshot().provider.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn get_logical_plan(&self) -> Option<Cow<'_, LogicalPlan>> {
        None
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DataFusionResult<Arc<dyn ExecutionPlan>> {
        let provider = self.fresh_provider().await.map_err(to_datafusion)?;
        provider.scan(state, projection, filters, limit).await
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DataFusionResult<Vec<TableProviderFilterPushDown>> {
        self.snapshot().provider.supports_filters_pushdown(filters)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// How a write that always fails with `err` ends, and after how many attempts.
    async fn keep_failing(deadline: Duration, err: fn() -> TransactionError) -> (DeltaError, u32) {
        let location = Url::parse("file:///lake/t/").unwrap();
        let mut attempts = 0;
        let outcome = retry_while_busy(&location, deadline, || {
            attempts += 1;
            async move { Err(DeltaTableError::Transaction { source: err() }) }
        })
        .await;
        (outcome.err().unwrap(), attempts)
    }

    #[tokio::test]
    async fn a_write_that_keeps_losing_commit_races_is_busy_after_the_deadline() {
        let (err, attempts) = keep_failing(Duration::from_millis(300), || {
            TransactionError::MaxCommitAttempts(50)
        })
        .await;
        assert!(matches!(err, DeltaError::Busy { .. }), "{err}");
        assert!(err.to_string().contains("busy"), "{err}");
        assert!(attempts > 1, "it retried ({attempts} attempts)");
    }

    #[tokio::test]
    async fn other_failures_are_not_retried() {
        let (err, attempts) = keep_failing(Duration::from_secs(5), || {
            TransactionError::VersionAlreadyExists(0)
        })
        .await;
        assert!(matches!(err, DeltaError::AlreadyExists { .. }), "{err}");
        assert_eq!(attempts, 1);
    }
}
