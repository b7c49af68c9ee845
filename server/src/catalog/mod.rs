//! The persistent catalog: every table and view, its schema history, every
//! run (statement) with its lineage.
//!
//! The engine talks to the [`CatalogStore`] trait; [`SqliteCatalog`] stores
//! it in SQLite (WAL mode) under the state folder, on a thread of its own.
//!
//! Invariants:
//! - One server owns a state folder at a time (an OS file lock on `LOCK`).
//! - Each change is one SQLite transaction: a crash leaves the catalog as it
//!   was before or after, never half-written.
//! - The SQL is plain (TEXT, INTEGER, no SQLite-only types), so the schema
//!   ports to Postgres; its versions are migrations (`open.rs`).
//! - A catalog written by a newer Tarn is refused at start, never rewritten.

mod audit;
mod delivery;
mod grants;
mod identities;
mod open;
pub mod openlineage;
mod policies;
mod runs;
mod sqlite;
mod statistics;
pub mod system;
mod system_tables;
mod tables;

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use arrow::datatypes::SchemaRef;

use crate::lineage::Lineage;

pub use audit::{AuditLog, AuditRecord};
pub use delivery::spawn_delivery;
pub use grants::{GrantChange, GrantObject, GrantRecord, GrantStore};
pub use identities::{IdentityChange, IdentityStore, NewToken, TokenRecord, UserRecord};
pub use policies::{MaskRecord, PolicyChange, RowFilterRecord};
pub use sqlite::{CatalogOptions, SqliteCatalog};
pub use tables::schema_json;

/// The result of a catalog call.
pub type CatalogResult<T> = Result<T, CatalogError>;

/// What the engine records about statements and tables, and reads back at
/// start. Calls that end in `_soon` queue the change and return at once;
/// the others return once it is stored.
#[async_trait::async_trait]
pub trait CatalogStore: Send + Sync + std::fmt::Debug {
    /// Records that a run started, with the tables it reads and, for a
    /// write, its lineage (and START event).
    async fn start_run(
        &self,
        run: RunStart,
        inputs: Vec<String>,
        write: Option<WriteLineage>,
    ) -> CatalogResult<()>;

    /// Queues the start of a query's run.
    fn start_run_soon(&self, run: RunStart, inputs: Vec<String>);

    /// Records how a run ended, and for a write its lineage (and event).
    async fn end_run(
        &self,
        id: String,
        end: RunEnd,
        write: Option<WriteLineage>,
    ) -> CatalogResult<()>;

    /// Queues the end of a query's run. A run is ended once: a later end of
    /// the same run changes nothing.
    fn end_run_soon(&self, id: String, end: RunEnd);

    /// The runs still RUNNING (at start: those an earlier process left).
    async fn interrupted_runs(&self) -> CatalogResult<Vec<InterruptedRun>>;

    /// Ends `ids` as ABORT with `reason`.
    async fn abort_runs(&self, ids: Vec<String>, reason: String) -> CatalogResult<()>;

    /// Records a table with its schema (a new schema version when it
    /// changed); returns the schema version.
    async fn record_table(
        &self,
        table: TableRecord,
        schema: SchemaRef,
        run_id: Option<String>,
    ) -> CatalogResult<i64>;

    /// Records the size of a version of the table `name` (idempotent).
    async fn record_table_version(
        &self,
        name: String,
        version: TableVersionRecord,
        run_id: Option<String>,
    ) -> CatalogResult<()>;

    /// Marks `name` dropped; its history stays.
    async fn drop_table(&self, name: String) -> CatalogResult<()>;

    /// Statements that recreate the views and external tables, oldest first.
    async fn definitions(&self) -> CatalogResult<Vec<(String, String)>>;

    /// Tables Tarn created, with their locations, oldest first.
    async fn created_tables(&self) -> CatalogResult<Vec<(String, String)>>;

    /// Locations of dropped tables that no live table has.
    async fn dropped_locations(&self) -> CatalogResult<HashSet<String>>;

    /// Remembers a `SET` statement for `key`.
    async fn record_setting(&self, key: String, statement: String) -> CatalogResult<()>;

    /// Forgets the `SET` of `key`.
    async fn forget_setting(&self, key: String) -> CatalogResult<()>;

    /// The remembered `SET` statements.
    async fn settings(&self) -> CatalogResult<Vec<String>>;

    /// Records the column statistics of a version of a table (replacing
    /// earlier ones of that version).
    async fn record_statistics(&self, stats: TableStatisticsRecord) -> CatalogResult<()>;

    /// The newest statistics of every table that has any.
    async fn latest_statistics(&self) -> CatalogResult<Vec<TableStatisticsRecord>>;
}

/// Why the catalog cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// The state folder cannot be created or read.
    #[error("cannot use the state folder {path}: {source}; pick another with --state-dir")]
    Folder {
        /// The folder.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Another server holds the catalog.
    #[error(
        "the catalog in {path} is in use by another Tarn server; stop that server, or give this one its own --state-dir"
    )]
    Locked {
        /// The state folder.
        path: PathBuf,
    },
    /// The catalog was written by a newer Tarn.
    #[error(
        "the catalog {path} has schema version {found}, newer than this Tarn understands ({supported}); run a newer Tarn, or another --state-dir"
    )]
    TooNew {
        /// The database file.
        path: PathBuf,
        /// Its version.
        found: i64,
        /// Ours.
        supported: i64,
    },
    /// SQLite failed (corrupt file, full disk, ...).
    #[error("catalog {path}: {message}")]
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// The cause.
        message: String,
    },
    /// The catalog was closed (the server is stopping).
    #[error("the catalog is closed: the server is stopping")]
    Closed,
}

impl CatalogError {
    fn sqlite(path: &Path, err: rusqlite::Error) -> Self {
        Self::Sqlite {
            path: path.to_path_buf(),
            message: err.to_string(),
        }
    }
}

/// How a table came to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableOrigin {
    /// Found in the lake.
    Discovered,
    /// Registered with `CREATE EXTERNAL TABLE`.
    External,
    /// Written by Tarn (`CREATE TABLE`).
    Created,
    /// A view (its SQL is the definition).
    View,
}

impl TableOrigin {
    fn as_str(self) -> &'static str {
        match self {
            Self::Discovered => "discovered",
            Self::External => "external",
            Self::Created => "created",
            Self::View => "view",
        }
    }
}

/// A table as the catalog records it.
#[derive(Debug, Clone)]
pub struct TableRecord {
    /// Its name.
    pub name: String,
    /// How it came to be.
    pub origin: TableOrigin,
    /// Where its files are.
    pub location: Option<String>,
    /// Its format (`parquet`, `delta`, ...).
    pub format: Option<String>,
    /// For views and external tables: the statement that recreates it.
    pub definition: Option<String>,
}

/// The size of one version of a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableVersionRecord {
    /// The version (a Delta commit number).
    pub version: u64,
    /// Rows in the table at this version, when every file says.
    pub rows: Option<u64>,
    /// Data files.
    pub files: u64,
    /// Bytes of data files.
    pub bytes: u64,
}

/// The statistics of one version of a table (`ANALYZE`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableStatisticsRecord {
    /// The table.
    pub table: String,
    /// Its version: a Delta version, or the digest of its files.
    pub version: String,
    /// The digest of the files this version is made of, which scans of it
    /// are recognised by.
    pub files_digest: String,
    /// The prefix every file of the table starts with (store URL and
    /// path), which scans of any version of it are recognised by.
    pub location: String,
    /// Its rows.
    pub rows: u64,
    /// Each column's statistics, in the table's order.
    pub columns: Vec<ColumnStatisticsRecord>,
}

/// The statistics of one column of a table version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnStatisticsRecord {
    /// The column.
    pub name: String,
    /// Its Arrow type, as displayed.
    pub data_type: String,
    /// Nulls in it.
    pub null_count: Option<u64>,
    /// An estimate of its distinct values (HyperLogLog, about 1% off).
    pub distinct_count: Option<u64>,
    /// Its smallest value, as text.
    pub min: Option<String>,
    /// Its largest value, as text.
    pub max: Option<String>,
}

/// What kind of statement a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunKind {
    /// It returns rows.
    Query,
    /// It writes rows (CREATE TABLE AS, INSERT, COPY).
    Write,
    /// It changes definitions or settings.
    Ddl,
}

impl RunKind {
    /// As stored and shown in `system.runs`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Query => "query",
            Self::Write => "write",
            Self::Ddl => "ddl",
        }
    }
}

/// Where a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunState {
    /// Started, not ended.
    Running,
    /// Ended well.
    Complete,
    /// Ended with an error.
    Fail,
    /// Ended without finishing: its result was never fetched, its client
    /// went away, or its server stopped.
    Abort,
}

impl RunState {
    /// As stored and shown in `system.runs` (OpenLineage's event types).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "RUNNING",
            Self::Complete => "COMPLETE",
            Self::Fail => "FAIL",
            Self::Abort => "ABORT",
        }
    }
}

/// A statement being run.
#[derive(Debug, Clone)]
pub struct RunStart {
    /// Unique id (UUID v7: sortable by time).
    pub id: String,
    /// The SQL text.
    pub sql: String,
    /// Who ran it.
    pub principal: String,
    /// What kind of statement it is.
    pub kind: RunKind,
    /// For a write, the folder of the table it writes.
    pub target_location: Option<String>,
}

/// A run an earlier process started and never ended (it was killed, or it
/// stopped before a result was fetched).
#[derive(Debug, Clone)]
pub struct InterruptedRun {
    /// Its id.
    pub id: String,
    /// `query`, `write`, `ddl`.
    pub kind: String,
    /// For a write, the folder of the table it was writing.
    pub target_location: Option<String>,
    /// When it started.
    pub started_at: chrono::DateTime<chrono::Utc>,
}

/// How a run ended.
#[derive(Debug, Clone)]
pub struct RunEnd {
    /// COMPLETE, FAIL or ABORT.
    pub state: RunState,
    /// Rows written (for writes) or streamed (for queries).
    pub rows_out: Option<u64>,
    /// Bytes of data files written, when known.
    pub bytes_out: Option<u64>,
    /// Data files written, when known.
    pub files_out: Option<u64>,
    /// Rows the statement read from its sources, when known.
    pub rows_in: Option<u64>,
    /// Bytes it read from files, when known.
    pub bytes_in: Option<u64>,
    /// The failure, or why it was aborted.
    pub error: Option<String>,
    /// What a query's execution used, when it executed.
    pub usage: Option<RunUsage>,
}

/// What a query's execution used.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunUsage {
    /// The most bytes of the memory pool it held at once.
    pub peak_memory: u64,
    /// Bytes its operators spilled to disk.
    pub spilled_bytes: u64,
    /// How long it waited for a slot to run in.
    pub queued: std::time::Duration,
    /// What the server did beyond the plan (planned again with sort-merge joins).
    pub note: Option<String>,
}

/// The lineage of a write: its target and the traced plan.
#[derive(Debug, Clone)]
pub struct WriteLineage {
    /// The table written.
    pub target: String,
    /// Its columns, by position of the plan's output.
    pub target_columns: Vec<String>,
    /// Their types.
    pub target_types: Vec<String>,
    /// Where the target's files are, when known before it is written.
    pub target_location: Option<String>,
    /// The traced plan.
    pub lineage: Lineage,
}

/// Now, as the catalog stores times (RFC 3339, UTC, milliseconds).
fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The tests every [`CatalogStore`] must pass.
#[cfg(test)]
pub(crate) mod suite;
