//! TPC-H: in-process DataFusion (a) against Tarn over Flight SQL (b),
//! interleaved query by query so both see the same machine state.

use std::path::Path;
use std::time::Instant;

use arrow::array::RecordBatch;
use datafusion::prelude::SessionContext;
use serde_json::{Value, json};
use tarn_client::Client;

use crate::answers;
use crate::stats::Samples;

pub struct Options {
    pub warmup: usize,
    pub runs: usize,
}

/// Runs every query of `queries` both ways; returns per-query results.
pub async fn run(
    ctx: &SessionContext,
    client: &mut Client,
    queries: &Path,
    options: &Options,
) -> Result<Value, String> {
    let mut out = serde_json::Map::new();
    for number in 1..=22 {
        let path = queries.join(format!("q{number}.sql"));
        let sql = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let (mut inprocess, mut flight) = (Samples::default(), Samples::default());
        let (mut answer_a, mut answer_b) = (Vec::new(), Vec::new());
        for _ in 0..options.warmup {
            in_process(ctx, &sql).await?;
            over_flight(client, &sql).await?;
        }
        for run in 0..options.runs {
            // Alternate which goes first, so neither always gets the warmer cache.
            if run % 2 == 0 {
                let (t, a) = timed_in_process(ctx, &sql).await?;
                inprocess.push(t);
                let (t, b) = timed_over_flight(client, &sql).await?;
                flight.push(t);
                (answer_a, answer_b) = (a, b);
            } else {
                let (t, b) = timed_over_flight(client, &sql).await?;
                flight.push(t);
                let (t, a) = timed_in_process(ctx, &sql).await?;
                inprocess.push(t);
                (answer_a, answer_b) = (a, b);
            }
        }
        let ratio = flight.median() / inprocess.median();
        eprintln!(
            "q{number:<2}  in-process {:>9.1} ms   tarn/flight {:>9.1} ms   ratio {ratio:.3}",
            inprocess.median(),
            flight.median()
        );
        out.insert(
            format!("q{number}"),
            json!({
                "inprocess": inprocess.to_json(),
                "flight_rust": flight.to_json(),
                "ratio_flight_to_inprocess": ratio,
                "rows": answer_a.iter().map(RecordBatch::num_rows).sum::<usize>(),
                "answers": { "inprocess": answers::rows(&answer_a), "flight_rust": answers::rows(&answer_b) },
            }),
        );
    }
    Ok(Value::Object(out))
}

async fn in_process(ctx: &SessionContext, sql: &str) -> Result<Vec<RecordBatch>, String> {
    let frame = ctx.sql(sql).await.map_err(|e| e.to_string())?;
    frame.collect().await.map_err(|e| e.to_string())
}

async fn over_flight(client: &mut Client, sql: &str) -> Result<Vec<RecordBatch>, String> {
    let result = client.query(sql).await.map_err(|e| e.to_string())?;
    result.collect().await.map_err(|e| e.to_string())
}

async fn timed_in_process(
    ctx: &SessionContext,
    sql: &str,
) -> Result<(std::time::Duration, Vec<RecordBatch>), String> {
    let started = Instant::now();
    let batches = in_process(ctx, sql).await?;
    Ok((started.elapsed(), batches))
}

async fn timed_over_flight(
    client: &mut Client,
    sql: &str,
) -> Result<(std::time::Duration, Vec<RecordBatch>), String> {
    let started = Instant::now();
    let batches = over_flight(client, sql).await?;
    Ok((started.elapsed(), batches))
}
