//! How the engine plans and executes: the options a server starts it with.

use std::time::Duration;

use super::admission::AdmissionOptions;
use super::locations::LocationPolicy;
use super::memory::MemoryOptions;
use super::session::SessionLimits;
use super::statement::StatementLimits;
use super::wire::WireTypes;

/// How the engine plans and executes.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Parallelism of one query (DataFusion `target_partitions`); 0 means one per core.
    pub target_partitions: usize,
    /// Rows per record batch.
    pub batch_size: usize,
    /// Worker threads of the CPU runtime; 0 means one per core.
    pub cpu_threads: usize,
    /// How long a planned result waits for its `DoGet` before it is dropped.
    pub result_ttl: Duration,
    /// How long an unused prepared statement is kept.
    pub prepared_statement_ttl: Duration,
    /// Which Arrow types results are sent as.
    pub wire_types: WireTypes,
    /// The answers kept for identical queries on unchanged files.
    pub result_cache: super::ResultCacheOptions,
    /// Columns of files kept decoded in memory.
    pub data_cache: super::DataCacheOptions,
    /// DataFusion settings (`datafusion.*` keys) applied on top of Tarn's.
    pub datafusion_settings: Vec<(String, String)>,
    /// Where statements may read and write (`CREATE EXTERNAL TABLE`, `COPY`).
    pub locations: LocationPolicy,
    /// How long a table's file listing (or Delta snapshot) is reused: files
    /// another writer adds or removes become visible within this time.
    pub listing_cache_ttl: Duration,
    /// The folder URL (ending in `/`) where `CREATE TABLE` without a
    /// `LOCATION` puts a table; `None` requires a `LOCATION`.
    pub tables_location: Option<String>,
    /// How long and how deeply nested a statement may be.
    pub limits: StatementLimits,
    /// The memory queries may use, and where and how much they spill.
    pub memory: MemoryOptions,
    /// How many queries execute at once, and how many may wait.
    pub admission: AdmissionOptions,
    /// The longest a statement may run unless its session sets
    /// `tarn.statement_timeout` (`None`: no limit).
    pub statement_timeout: Option<Duration>,
    /// How long idle sessions (and their settings) are kept, and how many.
    pub sessions: SessionLimits,
    /// Queries that take this long or longer are logged with their plan
    /// and its metrics (`None`: none are).
    pub slow_query_threshold: Option<Duration>,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            target_partitions: 0,
            batch_size: 8192,
            cpu_threads: 0,
            result_ttl: Duration::from_secs(300),
            prepared_statement_ttl: Duration::from_secs(3600),
            wire_types: WireTypes::Plain,
            result_cache: Default::default(),
            data_cache: Default::default(),
            datafusion_settings: Vec::new(),
            locations: LocationPolicy::default(),
            listing_cache_ttl: Duration::from_secs(10),
            tables_location: None,
            limits: StatementLimits::default(),
            sessions: SessionLimits::default(),
            statement_timeout: None,
            memory: MemoryOptions::default(),
            admission: AdmissionOptions::default(),
            slow_query_threshold: None,
        }
    }
}
