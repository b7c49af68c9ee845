//! `tarn-bench`: measures Tarn against in-process DataFusion with the same
//! session configuration. Run it through `benches/run`, which builds in
//! release mode, generates the data, starts the server and adds the Python
//! runners (ADBC, DuckDB) and the report.

mod answers;
mod probes;
mod stats;
mod tpch;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use serde_json::json;
use tarn::engine::{Engine, EngineOptions};
use tarn_client::Client;

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
}

fn main() -> ExitCode {
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
    let options = EngineOptions::default();
    let engine = Engine::new(options.clone()).map_err(|e| e.to_string())?;
    let (tables, problems) = tarn::lake::load(engine.session(), &args.lake)
        .await
        .map_err(|e| e.to_string())?;
    if !problems.is_empty() {
        return Err(format!("lake problems: {problems:?}"));
    }
    let mut client = Client::connect(&args.uri)
        .await
        .map_err(|e| e.to_string())?;

    let tpch = tpch::run(
        engine.session(),
        &mut client,
        &args.queries,
        &tpch::Options {
            warmup: args.warmup,
            runs: args.runs,
        },
    )
    .await?;
    let streaming = probes::streaming(engine.session(), &mut client, args.runs.max(3)).await?;
    let latency = probes::latency(&mut client, args.latency_calls).await?;
    let metadata = probes::metadata(&mut client, args.latency_calls.min(200)).await?;
    let concurrency = probes::concurrency(
        &args.uri,
        &args.queries,
        &args.clients,
        args.queries_per_client,
        args.server_pid,
    )
    .await?;

    let config = engine.session().state().config().options().clone();
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
        "latency": latency,
        "metadata": metadata,
        "concurrency": concurrency,
    });
    let text = serde_json::to_string_pretty(&results).map_err(|e| e.to_string())?;
    std::fs::write(&args.out, text).map_err(|e| format!("{}: {e}", args.out.display()))?;
    eprintln!("wrote {}", args.out.display());
    Ok(())
}
