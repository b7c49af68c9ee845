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

use chrono::{DateTime, Utc};
use url::Url;

mod commit;
mod create;
mod erase;
mod log;
mod provider;

pub use commit::BUSY_DEADLINE;
pub use create::{NewTable, create, purge, remove_orphans};
pub use erase::{VacuumRequest, Vacuumed};
pub use log::{load, register_s3_commits, root_store};
pub use provider::DeltaLakeTable;

/// The folder of a Delta table that holds its commits.
pub const LOG_FOLDER: &str = "_delta_log";

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
    /// `VACUUM` with a retention below the table's minimum, while the check is on.
    #[error(
        "VACUUM of {location} with a retention of {asked_hours} hours would delete files removed less than the table's minimum of {minimum_hours} hours ago (delta.deletedFileRetentionDuration), which running readers and time travel may still need; to erase them anyway run SET tarn.vacuum_retention_check = false in this session first"
    )]
    RetentionTooShort {
        /// The table folder.
        location: String,
        /// The retention asked for.
        asked_hours: f64,
        /// The table's minimum.
        minimum_hours: f64,
    },
    /// Time travel to a version whose data files were deleted (by `VACUUM`).
    #[error(
        "version {version} of {location} can no longer be read: its data file {file} is gone (VACUUM deletes the files of old versions); time travel to a version committed since the last VACUUM's retention window"
    )]
    FilesGone {
        /// The table folder.
        location: String,
        /// The version asked for.
        version: u64,
        /// The first missing file, relative to the store.
        file: String,
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
