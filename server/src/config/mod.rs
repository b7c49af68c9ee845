//! Configuration: defaults, then the TOML file (`--config`), then
//! environment variables and flags (see `tarn serve --help`).
//!
//! Every key of the file is optional:
//!
//! ```toml
//! [server]
//! bind = "127.0.0.1:50051"      # address:port to listen on
//! result_ttl = "5m"             # how long a planned result waits for its DoGet
//! max_message_size = 67108864   # largest gRPC message, bytes
//! max_flight_data_size = 2097152  # target size of one result message, bytes
//! tls_cert = "server.pem"       # TLS: the certificate chain (PEM); with tls_key the port speaks only TLS
//! tls_key = "server.key"        # ... and its private key (PEM)
//! tls_client_ca = "clients.pem" # mTLS: clients must present a certificate signed by this CA
//! http_bind = "127.0.0.1:9090"  # operators' HTTP listener: /metrics (Prometheus), /healthz, /readyz; off unless set
//! shutdown_timeout = "30s"     # on SIGTERM/SIGINT, how long running queries may finish before they are cancelled
//! otlp_endpoint = "http://127.0.0.1:4317"  # OpenTelemetry traces (OTLP/gRPC): a span per RPC and per query phase; off unless set
//!
//! [lake]
//! root = "data"                 # folder whose files and folders become tables
//! demo_scale = 0.1              # TPC-H scale of a generated demo lake
//! listing_cache_ttl = "10s"     # files (and Delta commits) of other writers appear within this time
//! tables_store = "lake"         # the store where CREATE TABLE without LOCATION writes its Delta table
//!
//! [catalog]
//! state_dir = "data/.tarn"      # tables, schema history, runs, lineage (default: LAKE/.tarn, or ./.tarn-state for a bucket)
//!
//! [openlineage]               # events for every write (START, then COMPLETE or FAIL)
//! file = "lineage.jsonl"        # one JSON event per line
//! endpoint = "http://127.0.0.1:5000"  # POST {endpoint}/api/v1/lineage (Marquez)
//! namespace = "tarn"            # the job namespace
//!
//! [engine]
//! target_partitions = 0         # parallelism of one query; 0 = one per core
//! cpu_threads = 0               # threads that execute queries; 0 = one per core
//! batch_size = 8192             # rows per record batch
//! prepared_statement_ttl = "1h" # idle prepared statements are dropped after this
//! view_types = false            # send Utf8View/BinaryView as they are (most clients cannot read them)
//! max_sql_length = 1048576      # longest SQL text accepted, bytes
//! max_expression_depth = 1000   # deepest nesting accepted (operators chained in one expression, UNIONs, joins)
//! max_running_queries = 0       # queries that read tables and execute at once; 0 = twice the cores (the rest wait in a fair queue)
//! max_queued_queries = 1000     # queries that may wait for a slot; beyond it RESOURCE_EXHAUSTED
//! queue_timeout = "60s"         # the longest a query waits for a slot
//! memory_limit = "4GiB"        # memory all running queries share (spilling beyond it); default 75% of the machine's
//! spill_limit = "100GiB"        # disk the spill folder (STATE_DIR/spill, emptied at start) may use
//! statement_timeout = "0"       # the longest a statement may run, e.g. "5m"; "0" = no limit (a session may SET tarn.statement_timeout)
//! session_idle_timeout = "1h"   # a client's session (its SET values) is forgotten after this long unused
//! max_sessions = 10000          # beyond this many sessions the least recently used is forgotten
//! max_prepared_statements = 128 # prepared statements one session may hold open; beyond it RESOURCE_EXHAUSTED
//! max_unfetched_results = 128   # planned results one session may leave unfetched; beyond it RESOURCE_EXHAUSTED
//! slow_query_threshold = "10s"  # queries this slow or slower are logged (WARN, target tarn::query) with their plan and its metrics; off unless set
//!
//! [cache]
//! result = true                 # answer identical queries on unchanged files from memory (TARN_RESULT_CACHE=off turns it off)
//! result_size = "256MiB"        # memory all cached answers may take together (least recently used leave first)
//! result_max_entry = "16MiB"    # larger answers are streamed, never kept
//!
//! [engine.datafusion]           # any DataFusion setting, applied last; "tarn.*" keys set Tarn's session settings' defaults
//! "execution.parquet.pushdown_filters" = true
//! "tarn.shared_subplans" = true
//!
//! [auth]
//! enabled = false               # require a user and password or a token (tarn serve --auth)
//! admin_password_file = "admin.pw"  # creates the user 'admin' at a start with no users (or TARN_ADMIN_PASSWORD)
//! session_idle_timeout = "1h"   # a session token ends after this long unused
//! session_max_age = "12h"       # ... and this long after its login
//! failed_login_delay = "200ms"  # added per recent failed login, per user name and per peer address
//! max_failed_login_delay = "5s" # the longest such wait
//! audit_file = "audit.jsonl"    # also append every audit record here, as a JSON line
//! audit_retention = "90d"       # audit rows older than this are deleted (daily)
//! ```
//!
//! Without authentication the server listens only on loopback addresses;
//! another address needs `--auth` (or the loud `--insecure-no-auth`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

mod file;

use crate::auth::{AuthOptions, ThrottleOptions};
use crate::engine::{EngineOptions, LocationPolicy, WireTypes};
use crate::flight::FlightOptions;
use crate::storage::StoreConfig;

/// The default address: loopback only, so a fresh install exposes nothing.
pub const DEFAULT_BIND: &str = "127.0.0.1:50051";
/// The default lake, relative to the working directory.
pub const DEFAULT_LAKE: &str = "data";
/// The TPC-H scale factor of a generated demo lake.
pub const DEFAULT_DEMO_SCALE: f64 = 0.1;
/// How long running queries may finish after a stop signal.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);
/// How long audit rows are kept unless `[auth] audit_retention` says otherwise.
pub const DEFAULT_AUDIT_RETENTION: Duration = Duration::from_secs(90 * 24 * 60 * 60);
/// The store `CREATE TABLE` writes to unless `[lake] tables_store` names another.
pub const DEFAULT_TABLES_STORE: &str = "lake";

pub use file::{
    AdminPassword, AuthSection, CatalogSection, ConfigError, ConfigFile, EngineSection,
    LakeSection, ServerSection,
};

/// Everything `tarn serve` needs, resolved from all sources.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Address to listen on (port 0 picks a free port).
    pub bind: SocketAddr,
    /// The lake: a folder or an `s3://bucket/prefix` URL (the store named "lake").
    pub lake: String,
    /// Further stores, by name (`[stores.NAME]`).
    pub stores: Vec<(String, StoreConfig)>,
    /// Generate the demo lake there when it holds none (only for the default
    /// lake `./data`: Tarn never writes into a lake it was pointed at).
    pub generate_demo: bool,
    /// TPC-H scale of a generated demo lake.
    pub demo_scale: f64,
    /// The store new tables go to (`[lake] tables_store`).
    pub tables_store: String,
    /// Where the catalog lives.
    pub state_dir: PathBuf,
    /// Where OpenLineage events go.
    pub openlineage: crate::catalog::openlineage::OpenLineageConfig,
    /// Engine settings. The server adds the lake to `engine.locations`.
    pub engine: EngineOptions,
    /// Transport settings.
    pub flight: FlightOptions,
    /// A pause before every catalog job, simulating a slow disk (tests only;
    /// not a setting of the config file).
    pub catalog_job_delay: Duration,
    /// Authentication.
    pub auth: AuthOptions,
    /// The first admin's password (`TARN_ADMIN_PASSWORD`).
    pub admin_password: AdminPassword,
    /// A file holding the first admin's password (read at start).
    pub admin_password_file: Option<PathBuf>,
    /// Serve without authentication on a non-loopback address.
    pub insecure_no_auth: bool,
    /// Audit records are appended to this file too (JSON lines).
    pub audit_file: Option<PathBuf>,
    /// How long audit rows are kept in the catalog.
    pub audit_retention: Duration,
    /// The TLS certificate chain (PEM); with `tls_key`, the port speaks TLS.
    pub tls_cert: Option<PathBuf>,
    /// The TLS private key (PEM).
    pub tls_key: Option<PathBuf>,
    /// Clients must present a certificate signed by this CA (PEM).
    pub tls_client_ca: Option<PathBuf>,
    /// Where `/metrics`, `/healthz` and `/readyz` are served (`None`: nowhere).
    pub http_bind: Option<SocketAddr>,
    /// On a stop signal, how long running queries may finish before the
    /// rest are cancelled.
    pub shutdown_timeout: Duration,
    /// The OTLP/gRPC collector spans are exported to (`None`: no traces).
    pub otlp_endpoint: Option<String>,
}

impl ServeConfig {
    /// A configuration serving `lake` on a free loopback port: what tests and
    /// embedders want.
    pub fn for_lake(lake: impl AsRef<Path>) -> Self {
        let lake = lake.as_ref().display().to_string();
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            generate_demo: false,
            demo_scale: DEFAULT_DEMO_SCALE,
            tables_store: DEFAULT_TABLES_STORE.to_string(),
            state_dir: default_state_dir(&lake),
            openlineage: Default::default(),
            lake,
            stores: Vec::new(),
            engine: EngineOptions::default(),
            flight: FlightOptions::default(),
            catalog_job_delay: Duration::ZERO,
            auth: AuthOptions::default(),
            admin_password: AdminPassword::default(),
            admin_password_file: None,
            insecure_no_auth: false,
            audit_file: None,
            audit_retention: DEFAULT_AUDIT_RETENTION,
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
            http_bind: None,
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
            otlp_endpoint: None,
        }
    }
}

/// Values given on the command line or in the environment; `None` means
/// "not given".
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    /// `--bind`
    pub bind: Option<SocketAddr>,
    /// `--lake`
    pub lake: Option<String>,
    /// `--state-dir`
    pub state_dir: Option<PathBuf>,
    /// `--openlineage-file`
    pub openlineage_file: Option<PathBuf>,
    /// `--openlineage-url`
    pub openlineage_url: Option<String>,
    /// `--demo-scale`
    pub demo_scale: Option<f64>,
    /// `--target-partitions`
    pub target_partitions: Option<usize>,
    /// `--cpu-threads`
    pub cpu_threads: Option<usize>,
    /// `--batch-size`
    pub batch_size: Option<usize>,
    /// `--result-ttl`
    pub result_ttl: Option<Duration>,
    /// `--statement-timeout`
    pub statement_timeout: Option<Duration>,
    /// `--slow-query-threshold`
    pub slow_query_threshold: Option<Duration>,
    /// `--memory-limit`
    pub memory_limit: Option<u64>,
    /// `--max-running-queries`
    pub max_running_queries: Option<usize>,
    /// `--spill-limit`
    pub spill_limit: Option<u64>,
    /// `--view-types`
    pub view_types: Option<bool>,
    /// `--result-cache`
    pub result_cache: Option<bool>,
    /// `--result-cache-size`
    pub result_cache_size: Option<u64>,
    /// `--data-cache`
    pub data_cache: Option<bool>,
    /// `--data-cache-size`
    pub data_cache_size: Option<u64>,
    /// `--auth`
    pub auth: Option<bool>,
    /// `--admin-password-file`
    pub admin_password_file: Option<PathBuf>,
    /// `TARN_ADMIN_PASSWORD`
    pub admin_password: AdminPassword,
    /// `--insecure-no-auth`
    pub insecure_no_auth: bool,
    /// `--audit-file`
    pub audit_file: Option<PathBuf>,
    /// `--tls-cert`
    pub tls_cert: Option<PathBuf>,
    /// `--tls-key`
    pub tls_key: Option<PathBuf>,
    /// `--tls-client-ca`
    pub tls_client_ca: Option<PathBuf>,
    /// `--http-bind`
    pub http_bind: Option<SocketAddr>,
    /// `--shutdown-timeout`
    pub shutdown_timeout: Option<Duration>,
    /// `--otlp-endpoint`
    pub otlp_endpoint: Option<String>,
}

/// Merges defaults, the file and the overrides (which win).
/// The catalog's default folder: inside a local lake (hidden, so never a
/// table), or `./.tarn-state` for a lake in a bucket.
pub fn default_state_dir(lake: &str) -> PathBuf {
    if lake.contains("://") && !lake.starts_with("file://") {
        PathBuf::from(".tarn-state")
    } else {
        PathBuf::from(lake.trim_start_matches("file://")).join(".tarn")
    }
}

/// The result cache as the file and the flags (which win) set it.
fn result_cache_options(
    file: &file::CacheSection,
    enabled: Option<bool>,
    budget: Option<u64>,
) -> crate::engine::ResultCacheOptions {
    let defaults = crate::engine::ResultCacheOptions::default();
    crate::engine::ResultCacheOptions {
        enabled: enabled.or(file.result).unwrap_or(defaults.enabled),
        budget: budget
            .or(file.result_size.map(|size| size.as_u64()))
            .unwrap_or(defaults.budget),
        max_entry: file
            .result_max_entry
            .map_or(defaults.max_entry, |size| size.as_u64()),
    }
}

/// The decoded-data cache as the file and the flags (which win) set it.
fn data_cache_options(
    file: &file::CacheSection,
    enabled: Option<bool>,
    budget: Option<u64>,
) -> crate::engine::DataCacheOptions {
    let defaults = crate::engine::DataCacheOptions::default();
    crate::engine::DataCacheOptions {
        enabled: enabled.or(file.data).unwrap_or(defaults.enabled),
        budget: budget
            .or(file.data_size.map(|size| size.as_u64()))
            .unwrap_or(defaults.budget),
    }
}

pub fn resolve(file: ConfigFile, overrides: Overrides) -> ServeConfig {
    let engine_defaults = EngineOptions::default();
    let flight_defaults = FlightOptions::default();
    let lake = overrides
        .lake
        .or(file.lake.root)
        .unwrap_or_else(|| DEFAULT_LAKE.to_string());
    let view_types = overrides
        .view_types
        .or(file.engine.view_types)
        .unwrap_or(false);
    // A configured `[stores.lake]` is the lake the catalog belongs to.
    let state_lake = file
        .stores
        .get("lake")
        .map_or_else(|| lake.clone(), |store| store.url.clone());
    ServeConfig {
        bind: overrides
            .bind
            .or(file.server.bind)
            .unwrap_or_else(|| DEFAULT_BIND.parse().expect("the default address parses")),
        // A configured `[stores.lake]` replaces the default folder.
        generate_demo: lake == DEFAULT_LAKE && !file.stores.contains_key("lake"),
        lake,
        state_dir: overrides
            .state_dir
            .or(file.catalog.state_dir)
            .unwrap_or_else(|| default_state_dir(&state_lake)),
        openlineage: crate::catalog::openlineage::OpenLineageConfig {
            file: overrides.openlineage_file.or(file.openlineage.file),
            endpoint: overrides.openlineage_url.or(file.openlineage.endpoint),
            namespace: file.openlineage.namespace,
        },
        stores: file.stores.into_iter().collect(),
        tables_store: file
            .lake
            .tables_store
            .unwrap_or_else(|| DEFAULT_TABLES_STORE.to_string()),
        demo_scale: overrides
            .demo_scale
            .or(file.lake.demo_scale)
            .unwrap_or(DEFAULT_DEMO_SCALE),
        engine: EngineOptions {
            target_partitions: overrides
                .target_partitions
                .or(file.engine.target_partitions)
                .unwrap_or(engine_defaults.target_partitions),
            batch_size: overrides
                .batch_size
                .or(file.engine.batch_size)
                .unwrap_or(engine_defaults.batch_size),
            cpu_threads: overrides
                .cpu_threads
                .or(file.engine.cpu_threads)
                .unwrap_or(engine_defaults.cpu_threads),
            result_ttl: overrides
                .result_ttl
                .or(file.server.result_ttl)
                .unwrap_or(engine_defaults.result_ttl),
            prepared_statement_ttl: file
                .engine
                .prepared_statement_ttl
                .unwrap_or(engine_defaults.prepared_statement_ttl),
            admission: crate::engine::AdmissionOptions {
                max_running: overrides
                    .max_running_queries
                    .or(file.engine.max_running_queries)
                    .unwrap_or(engine_defaults.admission.max_running),
                max_queued: file
                    .engine
                    .max_queued_queries
                    .unwrap_or(engine_defaults.admission.max_queued),
                queue_timeout: file
                    .engine
                    .queue_timeout
                    .unwrap_or(engine_defaults.admission.queue_timeout),
            },
            memory: crate::engine::MemoryOptions {
                limit: overrides
                    .memory_limit
                    .or(file.engine.memory_limit.map(|size| size.as_u64()))
                    .map_or(engine_defaults.memory.limit, |bytes| bytes as usize),
                spill_dir: None,
                spill_limit: overrides
                    .spill_limit
                    .or(file.engine.spill_limit.map(|size| size.as_u64()))
                    .unwrap_or(engine_defaults.memory.spill_limit),
            },
            statement_timeout: zero_is_off(
                overrides
                    .statement_timeout
                    .or(file.engine.statement_timeout),
                engine_defaults.statement_timeout,
            ),
            slow_query_threshold: zero_is_off(
                overrides
                    .slow_query_threshold
                    .or(file.engine.slow_query_threshold),
                engine_defaults.slow_query_threshold,
            ),
            sessions: crate::engine::SessionLimits {
                idle_timeout: file
                    .engine
                    .session_idle_timeout
                    .unwrap_or(engine_defaults.sessions.idle_timeout),
                max_sessions: file
                    .engine
                    .max_sessions
                    .unwrap_or(engine_defaults.sessions.max_sessions),
                max_prepared_statements: file
                    .engine
                    .max_prepared_statements
                    .unwrap_or(engine_defaults.sessions.max_prepared_statements),
                max_unfetched_results: file
                    .engine
                    .max_unfetched_results
                    .unwrap_or(engine_defaults.sessions.max_unfetched_results),
            },
            result_cache: result_cache_options(
                &file.cache,
                overrides.result_cache,
                overrides.result_cache_size,
            ),
            data_cache: data_cache_options(
                &file.cache,
                overrides.data_cache,
                overrides.data_cache_size,
            ),
            wire_types: if view_types {
                WireTypes::Native
            } else {
                WireTypes::Plain
            },
            datafusion_settings: file
                .engine
                .datafusion
                .into_iter()
                .map(|(key, value)| {
                    let key = if key.starts_with("datafusion.") || key.starts_with("tarn.") {
                        key
                    } else {
                        format!("datafusion.{key}")
                    };
                    let value = match value {
                        toml::Value::String(s) => s,
                        other => other.to_string(),
                    };
                    (key, value)
                })
                .collect(),
            locations: LocationPolicy::default(),
            listing_cache_ttl: file
                .lake
                .listing_cache_ttl
                .unwrap_or(engine_defaults.listing_cache_ttl),
            tables_location: None,
            limits: crate::engine::StatementLimits {
                max_sql_length: file
                    .engine
                    .max_sql_length
                    .unwrap_or(engine_defaults.limits.max_sql_length),
                max_expression_depth: file
                    .engine
                    .max_expression_depth
                    .unwrap_or(engine_defaults.limits.max_expression_depth),
            },
        },
        catalog_job_delay: Duration::ZERO,
        auth: resolve_auth(&file.auth, overrides.auth),
        admin_password: overrides.admin_password,
        admin_password_file: overrides
            .admin_password_file
            .or(file.auth.admin_password_file),
        insecure_no_auth: overrides.insecure_no_auth,
        audit_file: overrides.audit_file.or(file.auth.audit_file),
        tls_cert: overrides.tls_cert.or(file.server.tls_cert),
        tls_key: overrides.tls_key.or(file.server.tls_key),
        tls_client_ca: overrides.tls_client_ca.or(file.server.tls_client_ca),
        http_bind: overrides.http_bind.or(file.server.http_bind),
        shutdown_timeout: overrides
            .shutdown_timeout
            .or(file.server.shutdown_timeout)
            .unwrap_or(DEFAULT_SHUTDOWN_TIMEOUT),
        otlp_endpoint: overrides
            .otlp_endpoint
            .or(file.server.otlp_endpoint)
            .filter(|endpoint| !endpoint.is_empty()),
        audit_retention: file.auth.audit_retention.unwrap_or(DEFAULT_AUDIT_RETENTION),
        flight: FlightOptions {
            max_message_size: file
                .server
                .max_message_size
                .unwrap_or(flight_defaults.max_message_size),
            max_flight_data_size: file
                .server
                .max_flight_data_size
                .unwrap_or(flight_defaults.max_flight_data_size),
        },
    }
}

/// A duration that was given (where "0" turns the limit off), else `default`.
fn zero_is_off(given: Option<Duration>, default: Option<Duration>) -> Option<Duration> {
    given.map_or(default, |limit| (!limit.is_zero()).then_some(limit))
}

fn resolve_auth(file: &AuthSection, enabled: Option<bool>) -> AuthOptions {
    let defaults = AuthOptions::default();
    let throttle = ThrottleOptions::default();
    AuthOptions {
        enabled: enabled.or(file.enabled).unwrap_or(defaults.enabled),
        session_idle_timeout: file
            .session_idle_timeout
            .unwrap_or(defaults.session_idle_timeout),
        session_max_age: file.session_max_age.unwrap_or(defaults.session_max_age),
        throttle: ThrottleOptions {
            step: file.failed_login_delay.unwrap_or(throttle.step),
            max: file.max_failed_login_delay.unwrap_or(throttle.max),
            forget_after: throttle.forget_after,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_the_file_which_overrides_defaults() {
        let file: ConfigFile = toml::from_str(
            "[server]\nbind = \"0.0.0.0:1\"\nresult_ttl = \"30s\"\n[lake]\nroot = \"/lake\"\n[engine]\nbatch_size = 10\n",
        )
        .unwrap();
        let overrides = Overrides {
            bind: Some("127.0.0.1:2".parse().unwrap()),
            ..Default::default()
        };
        let config = resolve(file, overrides);
        assert_eq!(config.bind.port(), 2);
        assert_eq!(config.lake, "/lake");
        assert!(!config.generate_demo);
        assert_eq!(config.engine.batch_size, 10);
        assert_eq!(config.engine.result_ttl, Duration::from_secs(30));
    }

    #[test]
    fn auth_comes_from_the_file_and_the_flag_wins() {
        let file: ConfigFile = toml::from_str(
            "[auth]\nenabled = true\nsession_idle_timeout = \"5m\"\nfailed_login_delay = \"10ms\"\nadmin_password_file = \"pw\"\n",
        )
        .unwrap();
        let config = resolve(file, Overrides::default());
        assert!(config.auth.enabled);
        assert_eq!(config.auth.session_idle_timeout, Duration::from_secs(300));
        assert_eq!(config.auth.throttle.step, Duration::from_millis(10));
        assert_eq!(config.admin_password_file, Some(PathBuf::from("pw")));
        let file: ConfigFile = toml::from_str("[auth]\nenabled = true\n").unwrap();
        let overrides = Overrides {
            auth: Some(false),
            ..Default::default()
        };
        assert!(!resolve(file, overrides).auth.enabled);
        assert!(
            !resolve(ConfigFile::default(), Overrides::default())
                .auth
                .enabled
        );
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let err = toml::from_str::<ConfigFile>("[server]\nbnd = 1\n").unwrap_err();
        assert!(err.to_string().contains("bnd"), "{err}");
    }

    #[test]
    fn the_example_configs_parse() {
        let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/examples");
        for name in ["tarn.toml", "s3.toml"] {
            let file = ConfigFile::load(&examples.join(name)).unwrap();
            let config = resolve(file, Overrides::default());
            assert_eq!(config.tables_store, "lake", "{name}");
        }
    }

    #[test]
    fn statement_limits_come_from_the_file() {
        let file: ConfigFile =
            toml::from_str("[engine]\nmax_sql_length = 4096\nmax_expression_depth = 64\n").unwrap();
        let config = resolve(file, Overrides::default());
        assert_eq!(config.engine.limits.max_sql_length, 4096);
        assert_eq!(config.engine.limits.max_expression_depth, 64);
        let defaults = resolve(ConfigFile::default(), Overrides::default());
        assert_eq!(
            defaults.engine.limits,
            crate::engine::StatementLimits::default()
        );
    }
}
