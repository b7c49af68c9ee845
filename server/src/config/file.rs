//! The configuration file as written: `ConfigFile` and its sections (every
//! key optional, unknown keys refused), read by [`ConfigFile::load`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::storage::StoreConfig;

/// The configuration file, as written.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConfigFile {
    /// `[server]`
    pub server: ServerSection,
    /// `[lake]`
    pub lake: LakeSection,
    /// `[catalog]`
    pub catalog: CatalogSection,
    /// `[openlineage]`
    pub openlineage: crate::catalog::openlineage::OpenLineageConfig,
    /// `[engine]`
    pub engine: EngineSection,
    /// `[cache]`
    pub cache: CacheSection,
    /// `[stores.NAME]`: more stores whose tables are served beside the lake's.
    pub stores: std::collections::BTreeMap<String, StoreConfig>,
    /// `[auth]`
    pub auth: AuthSection,
}

/// `[auth]`
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSection {
    /// Require credentials.
    pub enabled: Option<bool>,
    /// A file holding the first admin's password.
    pub admin_password_file: Option<PathBuf>,
    /// A session ends after this long unused.
    #[serde(with = "humantime_serde")]
    pub session_idle_timeout: Option<Duration>,
    /// A session ends this long after its login.
    #[serde(with = "humantime_serde")]
    pub session_max_age: Option<Duration>,
    /// The wait added per recent failed login.
    #[serde(with = "humantime_serde")]
    pub failed_login_delay: Option<Duration>,
    /// The longest wait before a password check.
    #[serde(with = "humantime_serde")]
    pub max_failed_login_delay: Option<Duration>,
    /// Audit records are appended to this file too.
    pub audit_file: Option<PathBuf>,
    /// How long audit rows are kept.
    #[serde(with = "humantime_serde")]
    pub audit_retention: Option<Duration>,
}

/// The first admin's password: never printed.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct AdminPassword(pub Option<String>);

impl std::fmt::Debug for AdminPassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(_) => f.write_str("Some(***)"),
            None => f.write_str("None"),
        }
    }
}

/// `[server]`
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSection {
    /// Address to listen on.
    pub bind: Option<SocketAddr>,
    /// How long a planned result waits for its DoGet.
    #[serde(with = "humantime_serde")]
    pub result_ttl: Option<Duration>,
    /// Largest gRPC message, bytes.
    pub max_message_size: Option<usize>,
    /// Target size of one result message, bytes.
    pub max_flight_data_size: Option<usize>,
    /// The server's TLS certificate chain (PEM).
    pub tls_cert: Option<PathBuf>,
    /// Its private key (PEM).
    pub tls_key: Option<PathBuf>,
    /// The CA client certificates must be signed by (mTLS).
    pub tls_client_ca: Option<PathBuf>,
    /// The operators' HTTP listener (metrics and health).
    pub http_bind: Option<SocketAddr>,
    /// How long running queries may finish after a stop signal.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Option<Duration>,
    /// The OTLP/gRPC collector traces go to.
    pub otlp_endpoint: Option<String>,
}

/// `[lake]`
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LakeSection {
    /// The lake: a folder or an `s3://bucket/prefix` URL.
    pub root: Option<String>,
    /// TPC-H scale of a generated demo lake.
    pub demo_scale: Option<f64>,
    /// Files added or removed under a table become visible within this time.
    #[serde(with = "humantime_serde")]
    pub listing_cache_ttl: Option<Duration>,
    /// The store where `CREATE TABLE` without `LOCATION` writes (default: "lake").
    pub tables_store: Option<String>,
}

/// `[catalog]`
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CatalogSection {
    /// The folder of the catalog database.
    pub state_dir: Option<PathBuf>,
}

/// `[cache]`
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheSection {
    /// Whether identical queries on unchanged files are answered from memory.
    pub result: Option<bool>,
    /// The memory all cached answers may take ("256MiB" or bytes).
    pub result_size: Option<bytesize::ByteSize>,
    /// The largest answer kept ("16MiB" or bytes).
    pub result_max_entry: Option<bytesize::ByteSize>,
    /// Whether columns of files are kept decoded in memory.
    pub data: Option<bool>,
    /// The memory held columns may take ("1GiB" or bytes).
    pub data_size: Option<bytesize::ByteSize>,
}

/// `[engine]`
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineSection {
    /// Parallelism of one query.
    pub target_partitions: Option<usize>,
    /// Threads that execute queries.
    pub cpu_threads: Option<usize>,
    /// Rows per batch.
    pub batch_size: Option<usize>,
    /// Idle prepared statements are dropped after this.
    #[serde(with = "humantime_serde")]
    pub prepared_statement_ttl: Option<Duration>,
    /// Send view types unchanged.
    pub view_types: Option<bool>,
    /// Longest SQL text accepted, bytes.
    pub max_sql_length: Option<usize>,
    /// Deepest nesting of a statement accepted.
    pub max_expression_depth: Option<usize>,
    /// The longest a statement may run ("0": no limit).
    #[serde(with = "humantime_serde")]
    pub statement_timeout: Option<Duration>,
    /// Queries this slow are logged with their plan ("0": none).
    #[serde(with = "humantime_serde")]
    pub slow_query_threshold: Option<Duration>,
    /// Queries that execute at once (0: twice the cores).
    pub max_running_queries: Option<usize>,
    /// Queries that may wait for a slot.
    pub max_queued_queries: Option<usize>,
    /// The longest a query waits for a slot.
    #[serde(with = "humantime_serde")]
    pub queue_timeout: Option<Duration>,
    /// Memory all running queries may use together ("4GiB" or bytes).
    pub memory_limit: Option<bytesize::ByteSize>,
    /// Disk the spill folder may use ("100GiB" or bytes).
    pub spill_limit: Option<bytesize::ByteSize>,
    /// A session unused this long is forgotten.
    #[serde(with = "humantime_serde")]
    pub session_idle_timeout: Option<Duration>,
    /// The most sessions kept at once.
    pub max_sessions: Option<usize>,
    /// Prepared statements one session may hold open.
    pub max_prepared_statements: Option<usize>,
    /// Planned results one session may leave unfetched.
    pub max_unfetched_results: Option<usize>,
    /// Any DataFusion setting, e.g. `"execution.parquet.pushdown_filters" = "false"`
    /// (the `datafusion.` prefix is optional).
    pub datafusion: std::collections::BTreeMap<String, toml::Value>,
}

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read the config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has unknown keys.
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong, with line and column.
        message: String,
    },
}

impl ConfigFile {
    /// Reads and parses a configuration file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }
}
