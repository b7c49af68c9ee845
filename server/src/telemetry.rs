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

use metrics::{
    Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram,
};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

// The metrics' names; what each means is in `METRICS`.
const REQUESTS: &str = "tarn_requests_total";
const REQUEST_SECONDS: &str = "tarn_request_duration_seconds";
const ROWS_STREAMED: &str = "tarn_rows_streamed_total";
const BYTES_STREAMED: &str = "tarn_bytes_streamed_total";
const QUERIES: &str = "tarn_queries_total";
const QUERY_SECONDS: &str = "tarn_query_duration_seconds";
const QUEUE_SECONDS: &str = "tarn_query_queue_seconds";
const QUERIES_RUNNING: &str = "tarn_queries_running";
const QUERIES_QUEUED: &str = "tarn_queries_queued";
const QUERIES_LIVE: &str = "tarn_queries_live";
const MEMORY_RESERVED: &str = "tarn_memory_pool_reserved_bytes";
const MEMORY_LIMIT: &str = "tarn_memory_pool_limit_bytes";
const SPILL_BYTES: &str = "tarn_spill_disk_bytes";
const OUTBOX_DEPTH: &str = "tarn_openlineage_outbox_depth";
const STORE_REQUESTS: &str = "tarn_store_requests_total";
const STORE_ERRORS: &str = "tarn_store_errors_total";
const CACHE_BYTES: &str = "tarn_cache_bytes";
const CACHE_BUDGET: &str = "tarn_cache_budget_bytes";
const CACHE_ENTRIES: &str = "tarn_cache_entries";
const CACHE_HITS: &str = "tarn_cache_hits_total";
const CACHE_MISSES: &str = "tarn_cache_misses_total";
const CACHE_EVICTIONS: &str = "tarn_cache_evictions_total";
const BUILD_INFO: &str = "tarn_build_info";

/// What a metric is.
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// Every metric: name, kind, unit, and the help text a scrape shows.
const METRICS: &[(&str, Kind, Option<Unit>, &str)] = &[
    (
        REQUESTS,
        Kind::Counter,
        None,
        "Calls served, by method, command and gRPC code.",
    ),
    (
        REQUEST_SECONDS,
        Kind::Histogram,
        Some(Unit::Seconds),
        "How long calls took (a DoGet until its stream ended), by method.",
    ),
    (
        ROWS_STREAMED,
        Kind::Counter,
        None,
        "Result rows sent to clients.",
    ),
    (
        BYTES_STREAMED,
        Kind::Counter,
        Some(Unit::Bytes),
        "Result bytes (Arrow IPC) sent to clients.",
    ),
    (
        QUERIES,
        Kind::Counter,
        None,
        "Queries whose result stream ended, by outcome (ok, error, cancelled, abandoned).",
    ),
    (
        QUERY_SECONDS,
        Kind::Histogram,
        Some(Unit::Seconds),
        "Query time from submission to the end of its stream.",
    ),
    (
        QUEUE_SECONDS,
        Kind::Histogram,
        Some(Unit::Seconds),
        "Time a query waited for a slot to execute in.",
    ),
    (QUERIES_RUNNING, Kind::Gauge, None, "Queries executing now."),
    (
        QUERIES_QUEUED,
        Kind::Gauge,
        None,
        "Queries waiting for a slot now.",
    ),
    (
        QUERIES_LIVE,
        Kind::Gauge,
        None,
        "Statements being planned, waiting to be fetched, or streamed now.",
    ),
    (
        MEMORY_RESERVED,
        Kind::Gauge,
        Some(Unit::Bytes),
        "Bytes the memory pool has handed to queries now.",
    ),
    (
        MEMORY_LIMIT,
        Kind::Gauge,
        Some(Unit::Bytes),
        "The memory pool's limit (--memory-limit).",
    ),
    (
        SPILL_BYTES,
        Kind::Gauge,
        Some(Unit::Bytes),
        "Bytes of spill files on disk now.",
    ),
    (
        OUTBOX_DEPTH,
        Kind::Gauge,
        None,
        "OpenLineage events waiting in the outbox for their sink.",
    ),
    (
        STORE_REQUESTS,
        Kind::Counter,
        None,
        "Object store requests, by store and operation.",
    ),
    (
        STORE_ERRORS,
        Kind::Counter,
        None,
        "Object store requests that failed, by store and operation.",
    ),
    (
        CACHE_BYTES,
        Kind::Gauge,
        Some(Unit::Bytes),
        "Bytes a cache holds, by cache (result, parquet_metadata).",
    ),
    (
        CACHE_BUDGET,
        Kind::Gauge,
        Some(Unit::Bytes),
        "Bytes a cache may hold, by cache.",
    ),
    (
        CACHE_ENTRIES,
        Kind::Gauge,
        None,
        "Entries a cache holds, by cache.",
    ),
    (
        CACHE_HITS,
        Kind::Counter,
        None,
        "Lookups a cache answered, by cache (parquet_metadata: hits of the entries it holds).",
    ),
    (
        CACHE_MISSES,
        Kind::Counter,
        None,
        "Lookups a cache could not answer, by cache (the result and data caches count them).",
    ),
    (
        CACHE_EVICTIONS,
        Kind::Counter,
        None,
        "Entries a cache dropped to stay within its budget, by cache (the result and data caches count them).",
    ),
    (
        BUILD_INFO,
        Kind::Gauge,
        None,
        "Always 1, labelled with the version.",
    ),
];

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
    for (name, kind, unit, help) in METRICS {
        let (name, help) = (*name, *help);
        match (kind, *unit) {
            (Kind::Counter, Some(unit)) => describe_counter!(name, unit, help),
            (Kind::Counter, None) => describe_counter!(name, help),
            (Kind::Gauge, Some(unit)) => describe_gauge!(name, unit, help),
            (Kind::Gauge, None) => describe_gauge!(name, help),
            (Kind::Histogram, Some(unit)) => describe_histogram!(name, unit, help),
            (Kind::Histogram, None) => describe_histogram!(name, help),
        }
    }
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
    /// As metrics and logs name it.
    pub fn label(self) -> &'static str {
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
#[derive(Debug, Clone, Default)]
pub struct Gauges {
    pub running: usize,
    pub queued: usize,
    pub live: usize,
    pub memory_reserved: usize,
    pub memory_limit: Option<usize>,
    pub spill_bytes: u64,
    pub outbox_depth: Option<u64>,
    pub caches: Vec<CacheStats>,
}

/// What one cache holds and has done, for `system.caches` and `/metrics`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheStats {
    /// The cache's name (`result`, `parquet_metadata`).
    pub name: &'static str,
    /// Whether it caches anything.
    pub enabled: bool,
    /// Entries held now.
    pub entries: u64,
    /// Bytes held now.
    pub bytes: u64,
    /// The bytes it may hold.
    pub budget: u64,
    /// Lookups answered from it.
    pub hits: u64,
    /// Lookups it could not answer (when it counts them).
    pub misses: Option<u64>,
    /// Entries dropped to stay within the budget (when it counts them).
    pub evictions: Option<u64>,
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
    for cache in &now.caches {
        gauge!(CACHE_BYTES, "cache" => cache.name).set(cache.bytes as f64);
        gauge!(CACHE_BUDGET, "cache" => cache.name).set(cache.budget as f64);
        gauge!(CACHE_ENTRIES, "cache" => cache.name).set(cache.entries as f64);
        counter!(CACHE_HITS, "cache" => cache.name).absolute(cache.hits);
        if let Some(misses) = cache.misses {
            counter!(CACHE_MISSES, "cache" => cache.name).absolute(misses);
        }
        if let Some(evictions) = cache.evictions {
            counter!(CACHE_EVICTIONS, "cache" => cache.name).absolute(evictions);
        }
    }
}
