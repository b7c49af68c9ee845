//! The lake: finding tables in a folder and registering them with the engine.
//!
//! Every Parquet, CSV or JSON file directly under the root is a table named
//! after the file (without extension); every folder that holds such files is a
//! table named after the folder. Inside a folder, `key=value/` directories
//! are Hive partitions: each key becomes a typed column (integer, date or
//! string, inferred from the values), and filters on it prune whole folders.
//! A folder with a `_delta_log/` is a Delta Lake table: only the files its
//! newest commit lists are read (see [`crate::delta`]).

use std::fmt;
use std::path::Path;

use arrow::datatypes::DataType;

mod discover;
mod register;

pub use discover::discover;
pub use register::{load, register};

/// The file formats Tarn reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum FileFormat {
    /// Apache Parquet (`.parquet`).
    Parquet,
    /// Comma-separated values with a header row (`.csv`).
    Csv,
    /// Newline-delimited JSON (`.json`, `.jsonl`, `.ndjson`).
    Json,
    /// A Delta Lake table (a folder with a `_delta_log/`).
    Delta,
}

impl FileFormat {
    /// The format a file name's extension says, if any.
    pub fn of(path: &Path) -> Option<(FileFormat, &'static str)> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "parquet" => Some((FileFormat::Parquet, ".parquet")),
            "csv" => Some((FileFormat::Csv, ".csv")),
            "json" => Some((FileFormat::Json, ".json")),
            "jsonl" => Some((FileFormat::Json, ".jsonl")),
            "ndjson" => Some((FileFormat::Json, ".ndjson")),
            _ => None,
        }
    }
}

impl fmt::Display for FileFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FileFormat::Parquet => "parquet",
            FileFormat::Csv => "csv",
            FileFormat::Json => "json",
            FileFormat::Delta => "delta",
        })
    }
}

/// A table found in the lake.
#[derive(Debug, Clone, PartialEq)]
pub struct LakeTable {
    /// The table name (the file stem or folder name).
    pub name: String,
    /// The store it was found in.
    pub store: String,
    /// The URL of the file or folder (folders end in `/`).
    pub location: String,
    /// The format of its files.
    pub format: FileFormat,
    /// The extension its files end with (".parquet", ".jsonl", ...).
    pub extension: &'static str,
    /// Hive partition columns, outermost first, with their inferred types.
    pub partitions: Vec<(String, DataType)>,
}

/// Why a part of the lake could not become a table. Discovery reports these
/// and goes on: one bad folder never hides the rest of the lake.
#[derive(Debug, thiserror::Error)]
pub enum LakeError {
    /// The store cannot be listed (missing folder or bucket, no access, unreachable).
    #[error("cannot list store '{store}' at {url}: {message}")]
    Store {
        /// Store name.
        store: String,
        /// Its URL.
        url: String,
        /// The cause.
        message: String,
    },
    /// A folder mixes formats, or partition keys differ between folders.
    #[error("skipping {location}: {reason}")]
    Inconsistent {
        /// The folder.
        location: String,
        /// What is wrong, and how to fix it.
        reason: String,
    },
    /// A folder holds Delta tables deeper down, not at its top.
    #[error(
        "skipping {location}: it holds Delta tables below the top of the store ({}); serve each with CREATE EXTERNAL TABLE name STORED AS DELTA LOCATION '...'",
        tables.join(", ")
    )]
    NestedDelta {
        /// The folder.
        location: String,
        /// The folders of the Delta tables inside it.
        tables: Vec<String>,
    },
    /// Two entries would get the same table name.
    #[error(
        "skipping {location}: a table named '{name}' already exists (from {existing}); rename one of them"
    )]
    DuplicateName {
        /// The table name.
        name: String,
        /// The entry that was skipped.
        location: String,
        /// The entry that was kept.
        existing: String,
    },
    /// DataFusion could not read the table (unreadable or corrupt file).
    #[error("skipping table '{name}' at {location}: {message}")]
    Register {
        /// The table name.
        name: String,
        /// The file or folder.
        location: String,
        /// The cause.
        message: String,
    },
}
