//! What a metrics scrape reads of the engine: queries running and queued,
//! live statements, the memory pool and the spill folder, at that moment.

use super::Engine;
use datafusion::execution::memory_pool::MemoryLimit;

impl Engine {
    /// The engine's share of the gauges a metrics scrape shows.
    pub fn gauges(&self) -> crate::telemetry::Gauges {
        let (running, queued) = self.admission.load();
        let runtime = self.ctx.runtime_env();
        let pool = &runtime.memory_pool;
        let memory_limit = match pool.memory_limit() {
            MemoryLimit::Finite(limit) => Some(limit),
            _ => None,
        };
        crate::telemetry::Gauges {
            running,
            queued,
            live: self.live.len(),
            memory_reserved: pool.reserved(),
            memory_limit,
            spill_bytes: runtime.disk_manager.used_disk_space(),
            outbox_depth: None,
            caches: super::cache_table::all_caches(&self.result_cache, &self.data_cache, &runtime),
        }
    }
}
