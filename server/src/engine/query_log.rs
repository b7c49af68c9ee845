//! The log line of each finished query, and the plan of a slow one.
//!
//! Both go through `tracing` under the target `tarn::query`, so that
//! `--log-format json` makes them one JSON object per line and `--log`
//! filters can keep or drop them (`tarn::query=warn` keeps only slow ones).

use std::sync::Arc;
use std::time::Duration;

use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::display::DisplayableExecutionPlan;

use super::live::LiveQuery;
use crate::telemetry::QueryOutcome;

/// What the line of one finished query says.
pub(super) struct FinishedQuery<'a> {
    pub(super) query: Option<&'a LiveQuery>,
    pub(super) outcome: QueryOutcome,
    pub(super) took: Duration,
    pub(super) rows_sent: u64,
    pub(super) rows_scanned: Option<u64>,
    pub(super) bytes_scanned: Option<u64>,
    pub(super) error: Option<&'a str>,
}

/// Logs `finished` at INFO; at WARN with its plan and the plan's metrics
/// when it took `slow` or longer.
pub(super) fn log(
    finished: &FinishedQuery<'_>,
    plans: &[Arc<dyn ExecutionPlan>],
    slow: Option<Duration>,
) {
    let (id, user) = finished
        .query
        .map_or(("", ""), |query| (query.id(), query.user()));
    let outcome = finished.outcome.label();
    let duration_ms = finished.took.as_secs_f64() * 1000.0;
    let (rows, rows_scanned, bytes_scanned) = (
        finished.rows_sent,
        finished.rows_scanned.unwrap_or(0),
        finished.bytes_scanned.unwrap_or(0),
    );
    let error = finished.error.unwrap_or("");
    if slow.is_some_and(|threshold| finished.took >= threshold) {
        let plan = plans
            .iter()
            .map(|plan| {
                DisplayableExecutionPlan::with_metrics(plan.as_ref())
                    .indent(true)
                    .to_string()
            })
            .collect::<Vec<_>>()
            .join("\n");
        tracing::warn!(
            target: "tarn::query",
            query_id = id, user, outcome, duration_ms, rows, rows_scanned, bytes_scanned, error, plan,
            "slow query"
        );
    } else {
        tracing::info!(
            target: "tarn::query",
            query_id = id, user, outcome, duration_ms, rows, rows_scanned, bytes_scanned, error,
            "query finished"
        );
    }
}
