//! Before/after: this build of Tarn against an earlier one (`--baseline-uri`),
//! both serving the same lake, measured side by side in one run: the 22
//! TPC-H queries interleaved query by query and run by run, and `SELECT 1`
//! round trips interleaved in rounds.

use std::path::Path;
use std::time::Instant;

use serde_json::{Value, json};
use tarn_client::Client;

use crate::stats::Samples;

/// Round trips per round of the `SELECT 1` comparison.
const ROUND: usize = 50;

/// Measures `current` and `baseline` side by side.
pub async fn compare(
    current: &mut Client,
    baseline: &mut Client,
    queries: &Path,
    warmup: usize,
    runs: usize,
    latency_calls: usize,
) -> Result<Value, String> {
    let mut per_query = serde_json::Map::new();
    let (mut total_now, mut total_before) = (0.0, 0.0);
    for number in 1..=22 {
        let path = queries.join(format!("q{number}.sql"));
        let sql = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let (mut now, mut before) = (Samples::default(), Samples::default());
        for _ in 0..warmup {
            timed(current, &sql).await?;
            timed(baseline, &sql).await?;
        }
        for run in 0..runs {
            // Alternate which goes first, so neither always gets the warmer cache.
            let (first, second) = if run % 2 == 0 {
                (&mut *current, &mut *baseline)
            } else {
                (&mut *baseline, &mut *current)
            };
            let a = timed(first, &sql).await?;
            let b = timed(second, &sql).await?;
            let (t_now, t_before) = if run % 2 == 0 { (a, b) } else { (b, a) };
            now.0.push(t_now);
            before.0.push(t_before);
        }
        total_now += now.median();
        total_before += before.median();
        eprintln!(
            "q{number:<2}  this build {:>9.1} ms   baseline {:>9.1} ms   ratio {:.3}",
            now.median(),
            before.median(),
            now.median() / before.median()
        );
        per_query.insert(
            format!("q{number}"),
            json!({ "current": now.to_json(), "baseline": before.to_json() }),
        );
    }
    let (mut select_now, mut select_before) = (Samples::default(), Samples::default());
    for _ in 0..latency_calls.div_ceil(ROUND) {
        for _ in 0..ROUND {
            select_now.0.push(timed(current, "SELECT 1").await?);
        }
        for _ in 0..ROUND {
            select_before.0.push(timed(baseline, "SELECT 1").await?);
        }
    }
    eprintln!(
        "TPC-H total: this build {total_now:.1} ms, baseline {total_before:.1} ms (ratio {:.3}); SELECT 1 p50 {:.3} ms vs {:.3} ms",
        total_now / total_before,
        select_now.percentile(50.0),
        select_before.percentile(50.0)
    );
    Ok(json!({
        "tpch": per_query,
        "tpch_total_ms": { "current": total_now, "baseline": total_before, "ratio": total_now / total_before },
        "select_1": { "current": select_now.to_json(), "baseline": select_before.to_json() },
    }))
}

/// One query, fetched to the end; milliseconds.
async fn timed(client: &mut Client, sql: &str) -> Result<f64, String> {
    let started = Instant::now();
    let result = client.query(sql).await.map_err(|e| e.to_string())?;
    result.collect().await.map_err(|e| e.to_string())?;
    Ok(started.elapsed().as_secs_f64() * 1000.0)
}
