//! `tarn-bench`: measures Tarn against in-process DataFusion with the same
//! session configuration. Run it through `benches/run`, which builds in
//! release mode, generates the data, starts the server and adds the Python
//! runners (ADBC, DuckDB) and the report.

mod answers;
mod baseline;
mod probes;
mod secure;
mod stats;
mod tpch;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use serde_json::json;
use tarn::engine::{Engine, EngineOptions};
use tarn_client::Client;

/// The allocator the `tarn` binary uses.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Benchmarks a running `tarn serve` against in-process DataFusion.
#[derive(Debug, Parser)]
struct Args {
    /// The lake the server serves (TPC-H Parquet files)
    #[arg(long)]
    lake: PathBuf,
    /// The server's address
    #[arg(long)]
    uri: String,
    /// The server's process id, to sample its memory
    #[arg(long)]
    server_pid: Option<u32>,
    /// Folder with q1.sql ... q22.sql
    #[arg(long, default_value = "benches/queries")]
    queries: PathBuf,
    /// Warm-up runs per query
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// Measured runs per query (the median is reported)
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Calls per latency measurement
    #[arg(long, default_value_t = 500)]
    latency_calls: usize,
    /// Client counts for the concurrency test
    #[arg(long, default_value = "1,4,16,64", value_delimiter = ',')]
    clients: Vec<usize>,
    /// Queries each concurrent client runs (alternating Q1 and Q6)
    #[arg(long, default_value_t = 2)]
    queries_per_client: usize,
    /// Where to write the JSON results
    #[arg(long)]
    out: PathBuf,
    /// The server's configuration file, so that (a) runs with exactly its engine settings
    #[arg(long)]
    config: Option<PathBuf>,
    /// An earlier build of Tarn serving the same lake: adds a before/after
    /// comparison (TPC-H and SELECT 1, side by side)
    #[arg(long)]
    baseline_uri: Option<String>,
    /// What the baseline is (a git revision), for the report
    #[arg(long, default_value = "baseline")]
    baseline_name: String,
    /// The same build served with --auth: adds an authenticated run (bearer
    /// token on every call) beside the plain one
    #[arg(long)]
    auth_uri: Option<String>,
    /// The user to log in as on --auth-uri
    #[arg(long, default_value = "admin")]
    auth_user: String,
    /// Its password
    #[arg(
        long,
        env = "TARN_BENCH_PASSWORD",
        hide_env_values = true,
        default_value = ""
    )]
    auth_password: String,
    /// The same build served with TLS (grpc+tls://): adds TLS streaming
    #[arg(long)]
    tls_uri: Option<String>,
    /// The CA certificate (PEM) of --tls-uri's certificate
    #[arg(long)]
    tls_ca: Option<PathBuf>,
    /// The same build with only the decoded-data cache on: adds `SELECT *`
    /// streaming from lineitem's held columns
    #[arg(long)]
    held_uri: Option<String>,
    /// Run only these parts (for investigating one of them)
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "tpch,stream,latency,metadata,concurrency"
    )]
    only: Vec<String>,
}

fn main() -> ExitCode {
    tarn::allocator::purge_lazily();
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start a runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), String> {
    // (a) uses the very session configuration the server uses.
    let file = match &args.config {
        Some(path) => tarn::config::ConfigFile::load(path).map_err(|e| e.to_string())?,
        None => tarn::config::ConfigFile::default(),
    };
    let mut options: EngineOptions = tarn::config::resolve(file, Default::default()).engine;
    // (a) is cold, as the servers it is compared with: held columns would
    // answer its repeated runs without decoding.
    options.data_cache.enabled = false;
    let engine = Engine::new(options.clone()).map_err(|e| e.to_string())?;
    let lake = tarn::storage::StoreConfig {
        url: args.lake.display().to_string(),
        ..Default::default()
    };
    let store = tarn::storage::Store::open_alone("lake", &lake).map_err(|e| e.to_string())?;
    let (loaded, problems) =
        tarn::lake::load(engine.shared_context(), &[store], engine.freshness()).await;
    let tables: Vec<String> = loaded.into_iter().map(|t| t.name).collect();
    if !problems.is_empty() {
        return Err(format!("lake problems: {problems:?}"));
    }
    let mut client = Client::connect(&args.uri)
        .await
        .map_err(|e| e.to_string())?;

    let wanted = |part: &str| args.only.iter().any(|p| p == part);
    let tpch_options = tpch::Options {
        warmup: args.warmup,
        runs: args.runs,
    };
    let tpch = match wanted("tpch") {
        true => {
            tpch::run(
                engine.shared_context(),
                &mut client,
                &args.queries,
                &tpch_options,
            )
            .await?
        }
        false => serde_json::Value::Null,
    };
    let streaming = match wanted("stream") {
        true => probes::streaming(engine.shared_context(), &mut client, args.runs.max(3)).await?,
        false => serde_json::Value::Null,
    };
    // The same stream to a client that reads view types, as in-process gets it.
    let streaming_view_types = match wanted("stream") {
        true => {
            let options = tarn_client::ConnectOptions {
                view_types: true,
                ..Default::default()
            };
            let mut viewer = Client::connect_with_options(&args.uri, options)
                .await
                .map_err(|e| e.to_string())?;
            eprintln!("==> streaming to a client that reads view types");
            probes::streaming(engine.shared_context(), &mut viewer, args.runs.max(3)).await?
        }
        false => serde_json::Value::Null,
    };
    let streaming_held = match (&args.held_uri, wanted("stream")) {
        (Some(uri), true) => {
            let mut held = Client::connect(uri).await.map_err(|e| e.to_string())?;
            probes::streaming_held(engine.shared_context(), &mut held, args.runs.max(3)).await?
        }
        _ => serde_json::Value::Null,
    };
    let latency = match wanted("latency") {
        true => probes::latency(&mut client, args.latency_calls).await?,
        false => serde_json::Value::Null,
    };
    let metadata = match wanted("metadata") {
        true => probes::metadata(&mut client, args.latency_calls.min(200)).await?,
        false => serde_json::Value::Null,
    };
    let concurrency = match wanted("concurrency") {
        true => {
            let (uri, queries) = (&args.uri, &args.queries);
            probes::concurrency(
                uri,
                queries,
                &args.clients,
                args.queries_per_client,
                args.server_pid,
            )
            .await?
        }
        false => serde_json::Value::Null,
    };

    let before_after = match &args.baseline_uri {
        Some(uri) => {
            let mut earlier = Client::connect(uri).await.map_err(|e| e.to_string())?;
            let mut compared = baseline::compare(
                &mut client,
                &mut earlier,
                &args.queries,
                args.warmup,
                args.runs,
                args.latency_calls,
            )
            .await?;
            compared["name"] = json!(args.baseline_name);
            compared
        }
        None => serde_json::Value::Null,
    };

    let authenticated = args.auth_uri.clone().map(|uri| secure::Authenticated {
        uri,
        user: args.auth_user.clone(),
        password: args.auth_password.clone(),
    });
    let tls = match (&args.tls_uri, &args.tls_ca) {
        (Some(uri), Some(ca)) => Some(secure::Tls {
            uri: uri.clone(),
            ca_pem: std::fs::read(ca).map_err(|e| format!("{}: {e}", ca.display()))?,
        }),
        (Some(_), None) => return Err("--tls-uri needs --tls-ca".into()),
        _ => None,
    };
    let security = secure::measure(
        engine.shared_context(),
        &mut client,
        authenticated,
        tls,
        &args.queries,
        args.warmup,
        args.runs,
        args.latency_calls,
    )
    .await?;

    let config = engine.shared_context().state().config().options().clone();
    let results = json!({
        "runner": "tarn-bench",
        "config": {
            "lake": args.lake,
            "tables": tables,
            "warmup": args.warmup,
            "runs": args.runs,
            "target_partitions": config.execution.target_partitions,
            "batch_size": config.execution.batch_size.to_string(),
            "engine_options": format!("{options:?}"),
        },
        "versions": { "tarn": env!("CARGO_PKG_VERSION"), "datafusion": datafusion::DATAFUSION_VERSION },
        "tpch": tpch,
        "streaming": streaming,
        "streaming_view_types": streaming_view_types,
        "streaming_held": streaming_held,
        "latency": latency,
        "metadata": metadata,
        "concurrency": concurrency,
        "before_after": before_after,
        "security": security,
    });
    let text = serde_json::to_string_pretty(&results).map_err(|e| e.to_string())?;
    std::fs::write(&args.out, text).map_err(|e| format!("{}: {e}", args.out.display()))?;
    eprintln!("wrote {}", args.out.display());
    Ok(())
}
