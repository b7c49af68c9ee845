//! Operational metrics: their names, what they mean, and the calls the
//! layers record them through (the `metrics` facade), rendered in the
//! Prometheus text format by `metrics-exporter-prometheus`.
//!
//! Counters and histograms are recorded where the work happens (the
//! transport for calls, the engine for queries, the stores for requests).
//! Gauges of current state (running and queued queries, the memory pool,
//! the spill folder, the OpenLineage outbox) are read when scraped, by
//! [`set_gauges`]: a value read then is never stale.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// Calls served, by method, command and gRPC code.
pub const REQUESTS: &str = "tarn_requests_total";
/// How long calls took (a DoGet until its stream ended), by method.
pub const REQUEST_SECONDS: &str = "tarn_request_duration_seconds";
/// Result rows sent to clients.
pub const ROWS_STREAMED: &str = "tarn_rows_streamed_total";
/// Result bytes (Arrow IPC) sent to clients.
pub const BYTES_STREAMED: &str = "tarn_bytes_streamed_total";
/// Queries whose result stream ended, by outcome.
pub const QUERIES: &str = "tarn_queries_total";
/// How long a query ran, from submission to the end of its stream.
pub const QUERY_SECONDS: &str = "tarn_query_duration_seconds";
/// How long a query waited for a slot to execute in.
pub const QUEUE_SECONDS: &str = "tarn_query_queue_seconds";
/// Queries executing now.
pub const QUERIES_RUNNING: &str = "tarn_queries_running";
/// Queries waiting for a slot now.
pub const QUERIES_QUEUED: &str = "tarn_queries_queued";
/// Statements being planned, waiting to be fetched, or streamed now.
pub const QUERIES_LIVE: &str = "tarn_queries_live";
/// Bytes the memory pool has handed to queries now.
pub const MEMORY_RESERVED: &str = "tarn_memory_pool_reserved_bytes";
/// The memory pool's limit.
pub const MEMORY_LIMIT: &str = "tarn_memory_pool_limit_bytes";
/// Bytes of spill files on disk now.
pub const SPILL_BYTES: &str = "tarn_spill_disk_bytes";
/// OpenLineage events waiting in the outbox for their sink.
pub const OUTBOX_DEPTH: &str = "tarn_openlineage_outbox_depth";
/// Object store requests, by store and operation.
pub const STORE_REQUESTS: &str = "tarn_store_requests_total";
/// Object store requests that failed, by store and operation.
pub const STORE_ERRORS: &str = "tarn_store_errors_total";
/// Always 1, labelled with the version.
pub const BUILD_INFO: &str = "tarn_build_info";

/// Bucket bounds of the duration histograms, in seconds.
const SECONDS_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// The process's exporter, installed once (every server of the process
/// shares the facade's one recorder).
pub fn exporter() -> Result<&'static PrometheusHandle, String> {
    static HANDLE: OnceLock<Result<PrometheusHandle, String>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .set_buckets(SECONDS_BUCKETS)
                .and_then(|builder| builder.install_recorder())
                .map_err(|e| format!("cannot install the metrics recorder: {e}"))?;
            describe();
            gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
            Ok(handle)
        })
        .as_ref()
        .map_err(Clone::clone)
}

fn describe() {
    describe_counter!(REQUESTS, "Calls served, by method, command and gRPC code.");
    describe_histogram!(
        REQUEST_SECONDS,
        metrics::Unit::Seconds,
        "How long calls took (a DoGet until its stream ended)."
    );
    describe_counter!(ROWS_STREAMED, "Result rows sent to clients.");
    describe_counter!(
        BYTES_STREAMED,
        metrics::Unit::Bytes,
        "Result bytes (Arrow IPC) sent to clients."
    );
    describe_counter!(
        QUERIES,
        "Queries whose result stream ended, by outcome (ok, error, cancelled, abandoned)."
    );
    describe_histogram!(
        QUERY_SECONDS,
        metrics::Unit::Seconds,
        "Query time from submission to the end of its stream."
    );
    describe_histogram!(
        QUEUE_SECONDS,
        metrics::Unit::Seconds,
        "Time a query waited for a slot to execute in."
    );
    describe_gauge!(QUERIES_RUNNING, "Queries executing now.");
    describe_gauge!(QUERIES_QUEUED, "Queries waiting for a slot now.");
    describe_gauge!(
        QUERIES_LIVE,
        "Statements being planned, waiting to be fetched, or streamed now."
    );
    describe_gauge!(
        MEMORY_RESERVED,
        metrics::Unit::Bytes,
        "Bytes the memory pool has handed to queries now."
    );
    describe_gauge!(
        MEMORY_LIMIT,
        metrics::Unit::Bytes,
        "The memory pool's limit (--memory-limit)."
    );
    describe_gauge!(
        SPILL_BYTES,
        metrics::Unit::Bytes,
        "Bytes of spill files on disk now."
    );
    describe_gauge!(
        OUTBOX_DEPTH,
        "OpenLineage events waiting in the outbox for their sink."
    );
    describe_counter!(
        STORE_REQUESTS,
        "Object store requests, by store and operation."
    );
    describe_counter!(
        STORE_ERRORS,
        "Object store requests that failed, by store and operation."
    );
    describe_gauge!(BUILD_INFO, "Always 1, labelled with the version.");
}

/// A call ended.
pub fn request_ended(
    method: &str,
    command: Option<&str>,
    code: &str,
    took: Duration,
    rows: Option<u64>,
    bytes: Option<u64>,
) {
    let command = command.unwrap_or("").to_string();
    counter!(REQUESTS, "method" => method.to_string(), "command" => command, "code" => code.to_string()).increment(1);
    histogram!(REQUEST_SECONDS, "method" => method.to_string()).record(took.as_secs_f64());
    if let Some(rows) = rows {
        counter!(ROWS_STREAMED).increment(rows);
    }
    if let Some(bytes) = bytes {
        counter!(BYTES_STREAMED).increment(bytes);
    }
}

/// How a query's stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryOutcome {
    /// Every row was sent.
    Ok,
    /// It failed.
    Error,
    /// It was cancelled or timed out.
    Cancelled,
    /// Its client went away.
    Abandoned,
}

impl QueryOutcome {
    fn label(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Error => "error",
            Self::Cancelled => "cancelled",
            Self::Abandoned => "abandoned",
        }
    }
}

/// A query's stream ended after `took` (since submission).
pub fn query_ended(outcome: QueryOutcome, took: Duration) {
    counter!(QUERIES, "outcome" => outcome.label()).increment(1);
    histogram!(QUERY_SECONDS).record(took.as_secs_f64());
}

/// A query waited `waited` for its slot.
pub fn query_admitted(waited: Duration) {
    histogram!(QUEUE_SECONDS).record(waited.as_secs_f64());
}

/// An object store request to `store` is made.
pub fn store_request(store: &str, operation: &'static str) {
    counter!(STORE_REQUESTS, "store" => store.to_string(), "operation" => operation).increment(1);
}

/// An object store request to `store` failed.
pub fn store_failed(store: &str, operation: &'static str) {
    counter!(STORE_ERRORS, "store" => store.to_string(), "operation" => operation).increment(1);
}

/// The state read at a scrape.
#[derive(Debug, Clone, Copy, Default)]
pub struct Gauges {
    pub running: usize,
    pub queued: usize,
    pub live: usize,
    pub memory_reserved: usize,
    pub memory_limit: Option<usize>,
    pub spill_bytes: u64,
    pub outbox_depth: Option<u64>,
}

/// Sets the gauges of current state, just before rendering.
pub fn set_gauges(now: &Gauges) {
    gauge!(QUERIES_RUNNING).set(now.running as f64);
    gauge!(QUERIES_QUEUED).set(now.queued as f64);
    gauge!(QUERIES_LIVE).set(now.live as f64);
    gauge!(MEMORY_RESERVED).set(now.memory_reserved as f64);
    if let Some(limit) = now.memory_limit {
        gauge!(MEMORY_LIMIT).set(limit as f64);
    }
    gauge!(SPILL_BYTES).set(now.spill_bytes as f64);
    if let Some(depth) = now.outbox_depth {
        gauge!(OUTBOX_DEPTH).set(depth as f64);
    }
}
