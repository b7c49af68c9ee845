//! `system.caches`: what each of the server's caches holds and has done,
//! read when it is scanned (the same figures `/metrics` shows).

use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::error::Result;
use datafusion::execution::runtime_env::RuntimeEnv;

use super::data_cache::DataCache;
use super::live_table::Snapshot;
use super::result_cache::ResultCache;
use crate::telemetry::CacheStats;

/// The table: one row per cache.
#[derive(Debug)]
pub(crate) struct CachesTable {
    results: Arc<ResultCache>,
    data: Arc<DataCache>,
    runtime: Arc<RuntimeEnv>,
    schema: SchemaRef,
}

impl CachesTable {
    pub(crate) fn new(
        results: Arc<ResultCache>,
        data: Arc<DataCache>,
        runtime: Arc<RuntimeEnv>,
    ) -> Self {
        let int = |name: &str| Field::new(name, DataType::Int64, true);
        let schema = Arc::new(Schema::new(vec![
            Field::new("cache", DataType::Utf8, false),
            Field::new("enabled", DataType::Boolean, false),
            int("entries"),
            int("bytes"),
            int("budget_bytes"),
            int("hits"),
            int("misses"),
            int("evictions"),
            Field::new("hit_rate", DataType::Float64, true),
        ]));
        Self {
            results,
            data,
            runtime,
            schema,
        }
    }

    fn batch(&self) -> Result<RecordBatch> {
        let caches = all_caches(&self.results, &self.data, &self.runtime);
        let int = |f: &dyn Fn(&CacheStats) -> Option<u64>| -> ArrayRef {
            Arc::new(Int64Array::from_iter(
                caches.iter().map(|c| f(c).map(|n| n as i64)),
            ))
        };
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(caches.iter().map(|c| c.name))),
            Arc::new(BooleanArray::from_iter(
                caches.iter().map(|c| Some(c.enabled)),
            )),
            int(&|c| Some(c.entries)),
            int(&|c| Some(c.bytes)),
            int(&|c| Some(c.budget)),
            int(&|c| Some(c.hits)),
            int(&|c| c.misses),
            int(&|c| c.evictions),
            Arc::new(Float64Array::from_iter(caches.iter().map(hit_rate))),
        ];
        Ok(RecordBatch::try_new(Arc::clone(&self.schema), columns)?)
    }
}

/// Hits per lookup, when the cache counts its misses and was looked in.
fn hit_rate(cache: &CacheStats) -> Option<f64> {
    let lookups = cache.hits + cache.misses?;
    (lookups > 0).then(|| cache.hits as f64 / lookups as f64)
}

/// The result cache, the decoded-data cache and DataFusion's Parquet
/// metadata cache (footers and page indexes, decoded once per file version;
/// its hits are those of the entries it holds, and it does not count
/// misses).
pub(crate) fn all_caches(
    results: &ResultCache,
    data: &DataCache,
    runtime: &RuntimeEnv,
) -> Vec<CacheStats> {
    let metadata = runtime.cache_manager.get_file_metadata_cache();
    let entries = metadata.list_entries();
    let footers = CacheStats {
        name: "parquet_metadata",
        enabled: metadata.cache_limit() > 0,
        entries: entries.len() as u64,
        bytes: entries.values().map(|e| e.size_bytes as u64).sum(),
        budget: metadata.cache_limit() as u64,
        hits: entries.values().map(|e| e.hits as u64).sum(),
        misses: None,
        evictions: None,
    };
    vec![results.stats(), data.stats(), footers]
}

impl Snapshot for CachesTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn batch(&self) -> Result<RecordBatch> {
        CachesTable::batch(self)
    }
}
