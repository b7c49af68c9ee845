//! The `tarn` command line: `serve`, `sql`, `lineage`, `demo`, `user` and `token`.

mod identities;
mod lineage;
mod output;
mod progress;
mod split;
mod sql;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::config::{self, ConfigFile, Overrides};
use crate::{Server, demo};

pub use output::OutputFormat;

/// Tarn: SQL over a Parquet/CSV/JSON lake, served over Arrow Flight SQL.
#[derive(Debug, Parser)]
#[command(name = "tarn", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve a lake over Flight SQL (with no arguments: the demo lake in ./data on 127.0.0.1:50051).
    Serve(Box<ServeArgs>),
    /// Run SQL against a Tarn server: one-shot (-c, a file, stdin) or an interactive shell.
    Sql(sql::SqlArgs),
    /// Write the demo lake (TPC-H, a partitioned `sales` table, `awkward_types`) into a folder.
    Demo(DemoArgs),
    /// Show where a table or column comes from (--upstream) or what it feeds (--downstream), as a tree.
    Lineage(lineage::LineageArgs),
    /// Manage users in a state folder (create, password, drop, list); while a server runs, use SQL (CREATE USER, ...).
    User(identities::UserArgs),
    /// Manage API tokens in a state folder (create, revoke, list); while a server runs, use SQL (CREATE TOKEN, ...).
    Token(identities::TokenArgs),
}

/// `tarn serve`
#[derive(Debug, Args)]
#[command(
    after_help = "Precedence: flags and TARN_* environment variables, then the --config file, then defaults.\n\
Config file keys: see ARCHITECTURE.md or the README (sections [server], [lake], [engine]).\n\
Every file or folder of Parquet, CSV or JSON under the lake becomes a table named after it;\n\
key=value/ folders become typed partition columns."
)]
pub struct ServeArgs {
    /// Folder or s3://bucket/prefix whose files and folders become tables [default: ./data, generating the demo lake there on first start]
    #[arg(long, env = "TARN_LAKE", value_name = "DIR|URL")]
    pub lake: Option<String>,
    /// Address and port to listen on [default: 127.0.0.1:50051]
    #[arg(long, env = "TARN_BIND", value_name = "ADDR:PORT")]
    pub bind: Option<SocketAddr>,
    /// TOML configuration file
    #[arg(long, env = "TARN_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Folder for the catalog (tables, schema history, runs, lineage) [default: LAKE/.tarn for a local lake, ./.tarn-state for a bucket]
    #[arg(long, env = "TARN_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Append an OpenLineage event (JSON line) for every write to this file
    #[arg(long, env = "TARN_OPENLINEAGE_FILE", value_name = "FILE")]
    pub openlineage_file: Option<PathBuf>,
    /// Send OpenLineage events to this server (POST URL/api/v1/lineage, e.g. Marquez); retried until it accepts them
    #[arg(long, env = "TARN_OPENLINEAGE_URL", value_name = "URL")]
    pub openlineage_url: Option<String>,
    /// TPC-H scale factor of the demo lake generated on first start [default: 0.1]
    #[arg(long, env = "TARN_DEMO_SCALE", value_name = "SF")]
    pub demo_scale: Option<f64>,
    /// Parallelism of one query; 0 = one per core [default: 0]
    #[arg(long, env = "TARN_TARGET_PARTITIONS", value_name = "N")]
    pub target_partitions: Option<usize>,
    /// Threads that execute queries; 0 = one per core [default: 0]
    #[arg(long, env = "TARN_CPU_THREADS", value_name = "N")]
    pub cpu_threads: Option<usize>,
    /// Rows per record batch [default: 8192]
    #[arg(long, env = "TARN_BATCH_SIZE", value_name = "ROWS")]
    pub batch_size: Option<usize>,
    /// How long a planned result waits for the client to fetch it, e.g. 30s, 5m [default: 5m]
    #[arg(long, env = "TARN_RESULT_TTL", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub result_ttl: Option<Duration>,
    /// Queries that read tables and execute at once; the rest wait in a queue where users take turns (engine.max_queued_queries long, engine.queue_timeout at most); 0 = twice the cores [default: 0]
    #[arg(long, env = "TARN_MAX_RUNNING_QUERIES", value_name = "N")]
    pub max_running_queries: Option<usize>,
    /// Memory all running queries may use together, e.g. 4GiB, 512MiB; beyond it sorts, aggregations and sort-merge joins spill to STATE_DIR/spill, and a query that still cannot fit fails alone with RESOURCE_EXHAUSTED [default: 75% of the machine's memory]
    #[arg(long, env = "TARN_MEMORY_LIMIT", value_name = "SIZE", value_parser = parse_size)]
    pub memory_limit: Option<u64>,
    /// Disk the spill folder may use, e.g. 100GiB [default: 100GiB]
    #[arg(long, env = "TARN_SPILL_LIMIT", value_name = "SIZE", value_parser = parse_size)]
    pub spill_limit: Option<u64>,
    /// The longest a statement may run before it is stopped with DEADLINE_EXCEEDED, e.g. 30s, 5m; 0 = no limit. A session may change its own with SET tarn.statement_timeout = '1m' [default: 0]
    #[arg(long, env = "TARN_STATEMENT_TIMEOUT", value_name = "DURATION", value_parser = parse_timeout)]
    pub statement_timeout: Option<Duration>,
    /// Log every query that takes this long or longer at WARN with its plan and the plan's metrics (rows, time and memory per operator), e.g. 10s; 0 = off. Every finished query is logged at INFO under the target tarn::query [default: off]
    #[arg(long, env = "TARN_SLOW_QUERY_THRESHOLD", value_name = "DURATION", value_parser = parse_timeout)]
    pub slow_query_threshold: Option<Duration>,
    /// Send Utf8View/BinaryView columns as they are instead of as Utf8/Binary (most clients cannot read them)
    #[arg(long, env = "TARN_VIEW_TYPES", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub view_types: Option<bool>,
    /// Answer an identical query (same user, settings and plan) on unchanged files from memory instead of running it again; a new Delta commit, REFRESH TABLE or a changed file makes the next one run. on/off; a session may SET tarn.result_cache = false [default: on]
    #[arg(long, env = "TARN_RESULT_CACHE", value_name = "on|off", value_parser = clap::builder::BoolishValueParser::new())]
    pub result_cache: Option<bool>,
    /// Memory all cached answers may take together, e.g. 256MiB; the least recently used leave first. Answers over [cache] result_max_entry (16MiB) are never kept [default: 256MiB]
    #[arg(long, env = "TARN_RESULT_CACHE_SIZE", value_name = "SIZE", value_parser = parse_size)]
    pub result_cache_size: Option<u64>,
    /// Keep the columns of Parquet files that queries scan again (and every column of a table set with ALTER TABLE t SET (cache = 'memory')) decoded in memory, so such scans decode nothing; a changed file, a new Delta commit or REFRESH TABLE makes scans read the new files. on/off [default: on]
    #[arg(long, env = "TARN_DATA_CACHE", value_name = "on|off", value_parser = clap::builder::BoolishValueParser::new())]
    pub data_cache: Option<bool>,
    /// Memory the held columns may take together, beyond --memory-limit, e.g. 4GiB; the least recently used unpinned columns leave first [default: 1GiB]
    #[arg(long, env = "TARN_DATA_CACHE_SIZE", value_name = "SIZE", value_parser = parse_size)]
    pub data_cache_size: Option<u64>,
    /// Require a user name and password or a token from every client (users, roles and tokens are made with CREATE USER / CREATE TOKEN, or `tarn user`). The first start with no users creates the user 'admin' with the password in TARN_ADMIN_PASSWORD or --admin-password-file
    #[arg(long, env = "TARN_AUTH", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub auth: Option<bool>,
    /// File holding the password of the first admin (user 'admin'), used when authentication is on and no user exists yet; TARN_ADMIN_PASSWORD may hold it instead
    #[arg(long, env = "TARN_ADMIN_PASSWORD_FILE", value_name = "FILE")]
    pub admin_password_file: Option<PathBuf>,
    /// Serve WITHOUT authentication on a non-loopback address: anyone who reaches the port may read, change and drop every table. Without this, such a --bind needs --auth
    #[arg(long)]
    pub insecure_no_auth: bool,
    /// Also append every audit record (each call, login and refusal) to this file as a JSON line; the catalog's system.audit has them all the same
    #[arg(long, env = "TARN_AUDIT_FILE", value_name = "FILE")]
    pub audit_file: Option<PathBuf>,
    /// Serve TLS only (grpc+tls://), with this certificate chain (PEM); needs --tls-key
    #[arg(long, env = "TARN_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert
    #[arg(long, env = "TARN_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// Require every client to present a certificate signed by this CA (PEM) (mutual TLS); clients still log in as users when --auth is on
    #[arg(long, env = "TARN_TLS_CLIENT_CA", value_name = "FILE")]
    pub tls_client_ca: Option<PathBuf>,
    /// Serve Prometheus metrics (/metrics) and health checks (/healthz: alive; /readyz: catalog open and every store reachable) over HTTP on this address, e.g. 127.0.0.1:9090 [default: off]. The Flight port always answers grpc.health.v1
    #[arg(long, env = "TARN_HTTP_BIND", value_name = "ADDR:PORT")]
    pub http_bind: Option<SocketAddr>,
    /// On SIGTERM or SIGINT, how long running queries may finish, e.g. 30s, 2m: new calls get UNAVAILABLE at once, queries still running at the end are cancelled (UNAVAILABLE), then the catalog is flushed and the server exits 0; a second signal stops at once [default: 30s]
    #[arg(long, env = "TARN_SHUTDOWN_TIMEOUT", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub shutdown_timeout: Option<Duration>,
    /// Export OpenTelemetry traces over OTLP/gRPC to this collector, e.g. http://127.0.0.1:4317: a span per Flight RPC and per query phase (plan, admit, execute), service name tarn [default: off]
    #[arg(long, env = "TARN_OTLP_ENDPOINT", value_name = "URL")]
    pub otlp_endpoint: Option<String>,
    /// Log filter, e.g. info, debug, tarn=debug, warn,tarn::server=debug [default: warn,tarn=info: Tarn at INFO, its libraries at WARN]
    #[arg(long, env = "TARN_LOG", value_name = "FILTER", default_value = DEFAULT_LOG)]
    pub log: String,
    /// How log lines are written to stderr: text for people, json for log collectors (one JSON object per line, each field of an event a key; the greeting with the addresses is then left out, the INFO lines carry them)
    #[arg(long, env = "TARN_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Tarn's own events at INFO; its libraries (deltalake, object_store, ...)
/// only when something is wrong.
const DEFAULT_LOG: &str = "warn,tarn=info";

/// `tarn demo`
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Folder to write the demo lake into (created if missing)
    #[arg(long, default_value = config::DEFAULT_LAKE, value_name = "DIR")]
    pub lake: PathBuf,
    /// TPC-H scale factor (1 = 1 GB of raw data)
    #[arg(long, default_value_t = config::DEFAULT_DEMO_SCALE, value_name = "SF")]
    pub scale: f64,
}

/// Runs the command line; returns the process exit code.
pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Serve(args) => serve(*args),
        Command::Sql(args) => sql::run(args),
        Command::Lineage(args) => lineage::run(args),
        Command::User(args) => identities::run_user(args),
        Command::Token(args) => identities::run_token(args),
        Command::Demo(args) => match demo::generate(&args.lake, args.scale) {
            Ok(()) => {
                println!(
                    "demo lake written to {} (TPC-H scale factor {})",
                    args.lake.display(),
                    args.scale
                );
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e.to_string()),
        },
    }
}

fn serve(args: ServeArgs) -> ExitCode {
    let file = match &args.config {
        Some(path) => match ConfigFile::load(path) {
            Ok(file) => file,
            Err(e) => return fail(&e.to_string()),
        },
        None => ConfigFile::default(),
    };
    let overrides = Overrides {
        bind: args.bind,
        lake: args.lake,
        state_dir: args.state_dir,
        openlineage_file: args.openlineage_file,
        openlineage_url: args.openlineage_url,
        demo_scale: args.demo_scale,
        target_partitions: args.target_partitions,
        cpu_threads: args.cpu_threads,
        batch_size: args.batch_size,
        result_ttl: args.result_ttl,
        statement_timeout: args.statement_timeout,
        slow_query_threshold: args.slow_query_threshold,
        memory_limit: args.memory_limit,
        max_running_queries: args.max_running_queries,
        spill_limit: args.spill_limit,
        view_types: args.view_types,
        result_cache: args.result_cache,
        result_cache_size: args.result_cache_size,
        data_cache: args.data_cache,
        data_cache_size: args.data_cache_size,
        auth: args.auth,
        admin_password_file: args.admin_password_file,
        admin_password: config::AdminPassword(
            std::env::var("TARN_ADMIN_PASSWORD")
                .ok()
                .filter(|p| !p.is_empty()),
        ),
        insecure_no_auth: args.insecure_no_auth,
        audit_file: args.audit_file,
        tls_cert: args.tls_cert,
        tls_key: args.tls_key,
        tls_client_ca: args.tls_client_ca,
        http_bind: args.http_bind,
        shutdown_timeout: args.shutdown_timeout,
        otlp_endpoint: args.otlp_endpoint,
    };
    let config = config::resolve(file, overrides);
    // Flushed when it is dropped, after the server has stopped.
    let _traces = match init_logging(&args.log, args.log_format, config.otlp_endpoint.as_deref()) {
        Ok(traces) => traces,
        Err(e) => return fail(&e),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .thread_name("tarn-io")
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(&format!("cannot start the I/O runtime: {e}")),
    };
    let login = if config.auth.enabled {
        " --user admin"
    } else {
        ""
    };
    let (scheme, tls_hint) = match config.tls_cert {
        Some(_) => ("grpc+tls", " --tls-ca CA.pem"),
        None => ("grpc", ""),
    };
    // Log collectors read every line of a JSON log as JSON: the greeting
    // for people is left out (the log's own lines carry the addresses).
    let greet = args.log_format == LogFormat::Text;
    runtime.block_on(async move {
        let shutdown_timeout = config.shutdown_timeout;
        let mut server = match Server::start(config).await {
            Ok(server) => server,
            Err(e) => return fail(&e.to_string()),
        };
        if greet {
            if let Some(http) = server.http_addr() {
                eprintln!("tarn is serving metrics and health checks on http://{http} (/metrics, /healthz, /readyz)");
            }
            eprintln!(
                "tarn is serving Flight SQL on {scheme}://{addr}\n  try: tarn sql --host {scheme}://{addr}{login}{tls_hint} -c \"SHOW TABLES\"",
                addr = server.local_addr()
            );
        }
        tokio::select! {
            result = server.wait() => match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(&format!("server stopped: {e}")),
            },
            signal = stop_signal() => {
                tracing::info!(
                    "{signal}: shutting down (new calls get UNAVAILABLE, running queries have {} to finish; a second signal stops at once)",
                    humantime::format_duration(shutdown_timeout)
                );
                tokio::select! {
                    () = server.shutdown() => ExitCode::SUCCESS,
                    signal = stop_signal() => {
                        tracing::warn!("{signal} again: stopping now; unfinished runs are closed at the next start");
                        ExitCode::FAILURE
                    }
                }
            }
        }
    })
}

/// Waits for SIGINT (Ctrl-C) or SIGTERM (what service managers send), and
/// names the one that came.
async fn stop_signal() -> &'static str {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            // Without a SIGTERM handler, Ctrl-C still stops the server.
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "interrupted",
        () = terminate => "terminated",
    }
}

/// Logs to stderr, filtered by `filter`; with `otlp`, also exports every
/// `tarn` span there, whatever the log filter.
fn init_logging(
    filter: &str,
    format: LogFormat,
    otlp: Option<&str>,
) -> Result<Option<crate::traces::Traces>, String> {
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let parsed = tracing_subscriber::EnvFilter::builder()
        .with_regex(false)
        .parse(filter)
        .map_err(|e| {
            format!(
                "invalid --log filter '{filter}' ({e}); write levels (error, warn, info, debug, trace) for all or per module, e.g. info, tarn=debug, {DEFAULT_LOG}"
            )
        })?;
    let lines = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let lines = match format {
        LogFormat::Text => lines.boxed(),
        LogFormat::Json => lines.json().flatten_event(true).boxed(),
    };
    let (traces, spans) = match otlp {
        Some(endpoint) => {
            let (traces, layer) =
                crate::traces::Traces::start(endpoint).map_err(|e| e.to_string())?;
            (Some(traces), Some(layer))
        }
        None => (None, None),
    };
    let _ = tracing_subscriber::registry()
        .with(lines.with_filter(parsed))
        .with(spans)
        .try_init();
    Ok(traces)
}

/// The server a client command talks to, and who the client is.
#[derive(Debug, Clone, Args)]
pub struct HostArg {
    /// Server address
    #[arg(
        long,
        short = 'H',
        env = "TARN_HOST",
        default_value = "grpc://127.0.0.1:50051"
    )]
    pub host: String,
    /// Log in as this user; the password comes from TARN_PASSWORD, or is asked for (without echo)
    #[arg(long, short = 'U', env = "TARN_USER", value_name = "NAME")]
    pub user: Option<String>,
    /// Authenticate with this API token (made by CREATE TOKEN) instead of a user and password
    #[arg(long, env = "TARN_TOKEN", value_name = "TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// For grpc+tls:// servers: a CA certificate (PEM) to trust besides the system's
    #[arg(long, env = "TARN_TLS_CA", value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// For servers that require client certificates (mutual TLS): this certificate (PEM)
    #[arg(
        long,
        env = "TARN_TLS_CLIENT_CERT",
        value_name = "FILE",
        requires = "tls_client_key"
    )]
    pub tls_client_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-client-cert
    #[arg(
        long,
        env = "TARN_TLS_CLIENT_KEY",
        value_name = "FILE",
        requires = "tls_client_cert"
    )]
    pub tls_client_key: Option<PathBuf>,
}

impl HostArg {
    /// Everything to connect with: TLS files read, the password asked for
    /// when needed.
    fn options(&self) -> Result<tarn_client::ConnectOptions, String> {
        let read = |path: &PathBuf| {
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
        };
        let identity = match (&self.tls_client_cert, &self.tls_client_key) {
            (Some(cert), Some(key)) => Some((read(cert)?, read(key)?)),
            _ => None,
        };
        Ok(tarn_client::ConnectOptions {
            credentials: self.credentials()?,
            tls_ca_pem: self.tls_ca.as_ref().map(read).transpose()?,
            tls_identity_pem: identity,
            view_types: false,
        })
    }

    /// The credentials to connect with; asks for the password when needed.
    fn credentials(&self) -> Result<tarn_client::Credentials, String> {
        use tarn_client::Credentials;
        match (&self.user, &self.token) {
            (Some(_), Some(_)) => {
                Err("give either --user (with a password) or --token, not both".to_string())
            }
            (Some(user), None) => {
                let password = match std::env::var("TARN_PASSWORD") {
                    Ok(password) if !password.is_empty() => password,
                    _ => rpassword::prompt_password(format!("Password for {user}: ")).map_err(
                        |e| format!("cannot read the password ({e}); set TARN_PASSWORD instead"),
                    )?,
                };
                Ok(Credentials::Password {
                    user: user.clone(),
                    password,
                })
            }
            (None, Some(token)) => Ok(Credentials::Token(token.clone())),
            (None, None) => Ok(Credentials::None),
        }
    }
}

/// Runs `work` with a client connected to `server`, on a runtime of its
/// own; a failure to start, to connect or to log in is reported and ends
/// the command.
pub(crate) fn with_client<F, Fut>(server: &HostArg, work: F) -> ExitCode
where
    F: FnOnce(tarn_client::Client) -> Fut,
    Fut: std::future::Future<Output = ExitCode>,
{
    let options = match server.options() {
        Ok(options) => options,
        Err(e) => return fail(&e),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(&format!("cannot start the runtime: {e}")),
    };
    runtime.block_on(async move {
        match tarn_client::Client::connect_with_options(&server.host, options).await {
            Ok(client) => work(client).await,
            Err(e) => fail(&e.to_string()),
        }
    })
}

pub(crate) fn fail(message: &str) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::FAILURE
}

/// A timeout flag: a duration, or `0` for none.
fn parse_timeout(text: &str) -> Result<Duration, String> {
    match text.trim() {
        "0" => Ok(Duration::ZERO),
        text => humantime::parse_duration(text)
            .map_err(|e| format!("{e}; write e.g. 30s, 5m, or 0 for no limit")),
    }
}

/// A size flag: bytes, or a number with a unit (4GiB, 512MB).
fn parse_size(text: &str) -> Result<u64, String> {
    text.trim()
        .parse::<bytesize::ByteSize>()
        .map(|size| size.as_u64())
        .map_err(|e| format!("{e}; write e.g. 4GiB, 512MiB or a number of bytes"))
}
