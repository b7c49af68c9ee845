//! Beyond TPC-H: streaming throughput, round-trip latency, metadata latency
//! and concurrency.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use datafusion::physical_plan::execute_stream;
use datafusion::prelude::SessionContext;
use futures::StreamExt;
use serde_json::{Value, json};
use tarn_client::{Client, TableFilter};

use crate::answers::arrow_bytes;
use crate::stats::Samples;

/// `SELECT * FROM lineitem`, end to end: GB/s of Arrow and time to first batch,
/// through Tarn and in-process for reference.
pub async fn streaming(
    ctx: &SessionContext,
    client: &mut Client,
    runs: usize,
) -> Result<Value, String> {
    let sql = "SELECT * FROM lineitem";
    let mut flight = Vec::new();
    let mut local = Vec::new();
    for _ in 0..runs {
        let started = Instant::now();
        let result = client.query(sql).await.map_err(|e| e.to_string())?;
        flight.push(drain(started, result.into_stream()).await?);

        let started = Instant::now();
        let plan = ctx
            .sql(sql)
            .await
            .map_err(|e| e.to_string())?
            .create_physical_plan()
            .await
            .map_err(|e| e.to_string())?;
        let stream = execute_stream(plan, ctx.task_ctx()).map_err(|e| e.to_string())?;
        local.push(drain(started, stream).await?);
    }
    let best = |v: &[Value]| {
        v.iter()
            .filter_map(|r| r["gb_per_s"].as_f64())
            .fold(f64::NAN, f64::max)
    };
    let median_gbps =
        |v: &[Value]| Samples(v.iter().filter_map(|r| r["gb_per_s"].as_f64()).collect()).median();
    eprintln!(
        "stream lineitem: tarn/flight {:.2} GB/s (median), in-process {:.2} GB/s",
        median_gbps(&flight),
        median_gbps(&local)
    );
    Ok(json!({
        "query": sql,
        "flight_rust": { "runs": flight, "median_gb_per_s": median_gbps(&flight), "best_gb_per_s": best(&flight) },
        "inprocess": { "runs": local, "median_gb_per_s": median_gbps(&local), "best_gb_per_s": best(&local) },
    }))
}

/// `SELECT * FROM lineitem` from a server with the decoded-data cache on,
/// once lineitem's columns are held: the stream twice (its columns become
/// hot and load in the background), the loads awaited, then the streaming
/// probe, with the data cache's hits and misses over the measured runs.
pub async fn streaming_held(
    ctx: &SessionContext,
    client: &mut Client,
    runs: usize,
) -> Result<Value, String> {
    for _ in 0..2 {
        let started = Instant::now();
        let result = client
            .query("SELECT * FROM lineitem")
            .await
            .map_err(|e| e.to_string())?;
        drain(started, result.into_stream()).await?;
    }
    // Loaded when the plan reads held columns; a cache too small for the
    // table never gets there, so waiting also ends once nothing has changed
    // for ten seconds.
    let (mut last, mut stable) = (None, 0);
    while stable < 10 && !held_scan(client).await? {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = data_cache_counts(client).await?;
        stable = if last
            .is_some_and(|l: DataCacheCounts| (l.entries, l.bytes) == (now.entries, now.bytes))
        {
            stable + 1
        } else {
            0
        };
        last = Some(now);
    }
    let before = data_cache_counts(client).await?;
    eprintln!(
        "==> streaming from held columns ({} columns, {:.2} GB held)",
        before.entries,
        before.bytes as f64 / 1e9
    );
    let mut measured = streaming(ctx, client, runs).await?;
    let after = data_cache_counts(client).await?;
    measured["held"] = json!({
        "entries": after.entries,
        "bytes": after.bytes,
        "hits": after.hits - before.hits,
        "misses": after.misses - before.misses,
    });
    Ok(measured)
}

/// Whether `SELECT * FROM lineitem` is planned as a scan of held columns.
async fn held_scan(client: &mut Client) -> Result<bool, String> {
    let batches = client
        .query("EXPLAIN SELECT * FROM lineitem")
        .await
        .map_err(|e| e.to_string())?
        .collect()
        .await
        .map_err(|e| e.to_string())?;
    let plan = arrow::util::pretty::pretty_format_batches(&batches)
        .map_err(|e| e.to_string())?
        .to_string();
    Ok(plan.contains("CachedScanExec") && !plan.contains("DataSourceExec"))
}

/// The data cache's row of `system.caches`.
#[derive(Debug, Clone, Copy)]
struct DataCacheCounts {
    entries: i64,
    bytes: i64,
    hits: i64,
    misses: i64,
}

async fn data_cache_counts(client: &mut Client) -> Result<DataCacheCounts, String> {
    let sql = "SELECT CAST(entries AS BIGINT), CAST(bytes AS BIGINT), CAST(hits AS BIGINT), \
               CAST(misses AS BIGINT) FROM system.caches WHERE cache = 'data'";
    let batches = client
        .query(sql)
        .await
        .map_err(|e| e.to_string())?
        .collect()
        .await
        .map_err(|e| e.to_string())?;
    let value = |column: usize| -> Result<i64, String> {
        batches
            .iter()
            .find(|b| b.num_rows() > 0)
            .and_then(|b| {
                b.column(column)
                    .as_any()
                    .downcast_ref::<arrow::array::Int64Array>()
                    .map(|a| a.value(0))
            })
            .ok_or_else(|| {
                "system.caches has no data cache row (is TARN_DATA_CACHE on?)".to_string()
            })
    };
    Ok(DataCacheCounts {
        entries: value(0)?,
        bytes: value(1)?,
        hits: value(2)?,
        misses: value(3)?,
    })
}

/// Reads `stream` to the end; reports its throughput since `started`.
async fn drain<S, E>(started: Instant, mut stream: S) -> Result<Value, String>
where
    S: futures::Stream<Item = Result<RecordBatch, E>> + Unpin,
    E: std::fmt::Display,
{
    let (mut first, mut bytes, mut rows) = (None, 0usize, 0usize);
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(|e| e.to_string())?;
        first.get_or_insert_with(|| started.elapsed());
        bytes += arrow_bytes(&batch);
        rows += batch.num_rows();
    }
    Ok(throughput(started.elapsed(), first, bytes, rows))
}

fn throughput(total: Duration, first: Option<Duration>, bytes: usize, rows: usize) -> Value {
    json!({
        "seconds": total.as_secs_f64(),
        "first_batch_ms": first.map(|d| d.as_secs_f64() * 1000.0),
        "arrow_bytes": bytes,
        "rows": rows,
        "gb_per_s": bytes as f64 / 1e9 / total.as_secs_f64(),
    })
}

/// Round trips on one connection: `SELECT 1` and a point query.
pub async fn latency(client: &mut Client, calls: usize) -> Result<Value, String> {
    let mut out = serde_json::Map::new();
    for (name, sql) in [
        ("select_1", "SELECT 1"),
        (
            "point_query",
            "SELECT * FROM orders WHERE o_orderkey = 4242",
        ),
    ] {
        for _ in 0..calls.min(20) {
            run(client, sql).await?;
        }
        let mut samples = Samples::default();
        for _ in 0..calls {
            let started = Instant::now();
            run(client, sql).await?;
            samples.push(started.elapsed());
        }
        eprintln!(
            "latency {name}: p50 {:.3} ms, p99 {:.3} ms",
            samples.percentile(50.0),
            samples.percentile(99.0)
        );
        let mut summary = samples.to_json();
        summary["sql"] = json!(sql);
        summary["calls"] = json!(calls);
        out.insert(name.to_string(), summary);
    }
    Ok(Value::Object(out))
}

/// GetTables with every table's schema.
pub async fn metadata(client: &mut Client, calls: usize) -> Result<Value, String> {
    let mut samples = Samples::default();
    for i in 0..calls + 5 {
        let filter = TableFilter {
            include_schema: true,
            ..Default::default()
        };
        let started = Instant::now();
        let result = client.tables(filter).await.map_err(|e| e.to_string())?;
        result.collect().await.map_err(|e| e.to_string())?;
        if i >= 5 {
            samples.push(started.elapsed());
        }
    }
    eprintln!(
        "metadata GetTables(include_schema): p50 {:.3} ms, p99 {:.3} ms",
        samples.percentile(50.0),
        samples.percentile(99.0)
    );
    Ok(samples.to_json())
}

/// Q1 and Q6 from many clients at once, each on its own connection.
pub async fn concurrency(
    uri: &str,
    queries: &Path,
    levels: &[usize],
    queries_per_client: usize,
    server_pid: Option<u32>,
) -> Result<Value, String> {
    let q1 = Arc::new(std::fs::read_to_string(queries.join("q1.sql")).map_err(|e| e.to_string())?);
    let q6 = Arc::new(std::fs::read_to_string(queries.join("q6.sql")).map_err(|e| e.to_string())?);
    let mut out = Vec::new();
    for &clients in levels {
        let peak = Arc::new(AtomicU64::new(0));
        let done = Arc::new(AtomicBool::new(false));
        let sampler = server_pid.map(|pid| {
            let (peak, done) = (Arc::clone(&peak), Arc::clone(&done));
            tokio::spawn(async move {
                while !done.load(Ordering::Relaxed) {
                    if let Some(rss) = rss_kib(pid) {
                        peak.fetch_max(rss, Ordering::Relaxed);
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            })
        });
        let started = Instant::now();
        let mut tasks = Vec::new();
        for c in 0..clients {
            let (uri, q1, q6) = (uri.to_string(), Arc::clone(&q1), Arc::clone(&q6));
            tasks.push(tokio::spawn(async move {
                let mut latencies = Samples::default();
                let mut errors = Vec::new();
                let mut client = match Client::connect(&uri).await {
                    Ok(c) => c,
                    Err(e) => return (latencies, vec![e.to_string()]),
                };
                for i in 0..queries_per_client {
                    let sql = if (c + i) % 2 == 0 { &q1 } else { &q6 };
                    let t = Instant::now();
                    match run(&mut client, sql).await {
                        Ok(()) => latencies.push(t.elapsed()),
                        Err(e) => errors.push(e),
                    }
                }
                (latencies, errors)
            }));
        }
        let mut all = Samples::default();
        let mut errors = Vec::new();
        for task in tasks {
            match task.await {
                Ok((latencies, errs)) => {
                    all.0.extend(latencies.0);
                    errors.extend(errs);
                }
                Err(e) => errors.push(format!("client task failed: {e}")),
            }
        }
        let elapsed = started.elapsed().as_secs_f64();
        done.store(true, Ordering::Relaxed);
        if let Some(s) = sampler {
            let _ = s.await;
        }
        let qps = all.0.len() as f64 / elapsed;
        eprintln!(
            "concurrency {clients:>3} clients: {qps:.2} q/s, p99 {:.0} ms, {} errors, server peak RSS {} MiB",
            all.percentile(99.0),
            errors.len(),
            peak.load(Ordering::Relaxed) / 1024
        );
        out.push(json!({
            "clients": clients,
            "queries": all.0.len(),
            "seconds": elapsed,
            "queries_per_second": qps,
            "p50_ms": all.percentile(50.0),
            "p99_ms": all.percentile(99.0),
            "errors": errors.len(),
            "first_errors": errors.iter().take(3).collect::<Vec<_>>(),
            "server_peak_rss_mib": peak.load(Ordering::Relaxed) as f64 / 1024.0,
        }));
    }
    Ok(Value::Array(out))
}

async fn run(client: &mut Client, sql: &str) -> Result<(), String> {
    let result = client.query(sql).await.map_err(|e| e.to_string())?;
    let mut stream = result.into_stream();
    while let Some(batch) = stream.next().await {
        batch.map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Resident set size of `pid`, in KiB (Linux).
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}
