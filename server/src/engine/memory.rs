//! The memory queries may use, and the disk they spill to.
//!
//! One `FairSpillPool` for the whole server (DataFusion's `with_memory_limit`
//! shortcut builds a greedy pool, where the first big query takes it all):
//! operators that can spill (sorts, aggregations, sort-merge joins,
//! repartitions) share it fairly and spill to the state folder's `spill/`,
//! which is size-capped and emptied at start. A query that cannot fit fails
//! alone with RESOURCE_EXHAUSTED naming the limit and how to raise it; the
//! others go on. The build side of a hash join cannot spill in DataFusion 55
//! (apache/datafusion#24768): such a query is planned once more with
//! sort-merge joins before it fails (see `execution.rs`).

use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use datafusion::error::DataFusionError;
use datafusion::execution::TaskContext;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::memory_pool::{
    FairSpillPool, MemoryConsumer, MemoryLimit, MemoryPool, MemoryReservation, TrackConsumersPool,
};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;

/// The share of the machine's memory queries may use by default.
pub const DEFAULT_MEMORY_SHARE: f64 = 0.75;

/// The spill folder's default cap.
pub const DEFAULT_SPILL_LIMIT: u64 = 100 * 1024 * 1024 * 1024;

/// The consumers an out-of-memory error names.
const NAMED_CONSUMERS: usize = 3;

/// How much memory and disk queries may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryOptions {
    /// Bytes all running queries may reserve together.
    pub limit: usize,
    /// Where operators spill (`None`: the system's temporary folder).
    pub spill_dir: Option<PathBuf>,
    /// Bytes the spill folder may hold.
    pub spill_limit: u64,
}

impl Default for MemoryOptions {
    fn default() -> Self {
        Self {
            limit: default_limit(),
            spill_dir: None,
            spill_limit: DEFAULT_SPILL_LIMIT,
        }
    }
}

/// The memory of this machine (or of its container, when that is smaller).
pub fn machine_memory() -> Option<u64> {
    let mut system = sysinfo::System::new();
    system.refresh_memory();
    let total = system.total_memory();
    let container = system.cgroup_limits().map(|limits| limits.total_memory);
    match (total, container) {
        (0, None) => None,
        (0, Some(limit)) => Some(limit),
        (total, Some(limit)) if limit > 0 => Some(total.min(limit)),
        (total, _) => Some(total),
    }
}

/// [`DEFAULT_MEMORY_SHARE`] of the machine's memory (4 GiB when unknown).
pub fn default_limit() -> usize {
    let memory = machine_memory().unwrap_or(16 * 1024 * 1024 * 1024);
    (memory as f64 * DEFAULT_MEMORY_SHARE) as usize
}

/// `builder` with the pool and the spill folder of `options`.
pub(crate) fn configure(builder: RuntimeEnvBuilder, options: &MemoryOptions) -> RuntimeEnvBuilder {
    let top = NonZeroUsize::new(NAMED_CONSUMERS).unwrap_or(NonZeroUsize::MIN);
    let pool: Arc<dyn MemoryPool> = Arc::new(TrackConsumersPool::new(
        FairSpillPool::new(options.limit),
        top,
    ));
    let mut disk = DiskManagerBuilder::default().with_max_temp_directory_size(options.spill_limit);
    if let Some(dir) = &options.spill_dir {
        disk = disk.with_mode(DiskManagerMode::Directories(vec![dir.clone()]));
    }
    builder
        .with_memory_pool(pool)
        .with_disk_manager_builder(disk)
}

/// What one query holds of the pool now, and the most it has held.
#[derive(Debug, Default)]
pub(crate) struct QueryMemory {
    reserved: AtomicUsize,
    peak: AtomicUsize,
}

impl QueryMemory {
    /// Bytes reserved now.
    pub(crate) fn reserved(&self) -> usize {
        self.reserved.load(Ordering::Relaxed)
    }

    /// The most bytes reserved at once.
    pub(crate) fn peak(&self) -> usize {
        self.peak.load(Ordering::Relaxed)
    }

    fn grew(&self, bytes: usize) {
        let now = self.reserved.fetch_add(bytes, Ordering::Relaxed) + bytes;
        self.peak.fetch_max(now, Ordering::Relaxed);
    }

    fn shrank(&self, bytes: usize) {
        // Saturating: a reservation made before the query's pool was in
        // place may be given back through it.
        let _ = self
            .reserved
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |now| {
                Some(now.saturating_sub(bytes))
            });
    }
}

/// The server's pool as one query sees it: every reservation goes to the
/// shared pool (its limit and fairness hold), and is counted for the query.
#[derive(Debug)]
struct QueryPool {
    shared: Arc<dyn MemoryPool>,
    usage: Arc<QueryMemory>,
}

impl std::fmt::Display for QueryPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The shared pool's own account (its limit, its top consumers).
        self.shared.fmt(f)
    }
}

impl MemoryPool for QueryPool {
    fn name(&self) -> &str {
        self.shared.name()
    }

    fn register(&self, consumer: &MemoryConsumer) {
        self.shared.register(consumer);
    }

    fn unregister(&self, consumer: &MemoryConsumer) {
        self.shared.unregister(consumer);
    }

    fn grow(&self, reservation: &MemoryReservation, additional: usize) {
        self.shared.grow(reservation, additional);
        self.usage.grew(additional);
    }

    fn shrink(&self, reservation: &MemoryReservation, shrink: usize) {
        self.shared.shrink(reservation, shrink);
        self.usage.shrank(shrink);
    }

    fn try_grow(
        &self,
        reservation: &MemoryReservation,
        additional: usize,
    ) -> datafusion::error::Result<()> {
        self.shared.try_grow(reservation, additional)?;
        self.usage.grew(additional);
        Ok(())
    }

    fn reserved(&self) -> usize {
        self.shared.reserved()
    }

    fn memory_limit(&self) -> MemoryLimit {
        self.shared.memory_limit()
    }
}

/// `task_ctx` with its reservations counted in `usage` (the same pool, the
/// same caches, the same spill folder).
pub(crate) fn counted(
    task_ctx: &TaskContext,
    usage: Arc<QueryMemory>,
) -> datafusion::error::Result<Arc<TaskContext>> {
    let runtime = task_ctx.runtime_env();
    let pool: Arc<dyn MemoryPool> = Arc::new(QueryPool {
        shared: Arc::clone(&runtime.memory_pool),
        usage,
    });
    let runtime = RuntimeEnvBuilder::from_runtime_env(&runtime)
        .with_memory_pool(pool)
        .build_arc()?;
    Ok(Arc::new(TaskContext::new(
        task_ctx.task_id(),
        task_ctx.session_id(),
        task_ctx.session_config().clone(),
        task_ctx.scalar_functions().clone(),
        task_ctx.higher_order_functions().clone(),
        task_ctx.aggregate_functions().clone(),
        task_ctx.window_functions().clone(),
        runtime,
    )))
}

/// A query that needed more memory than the pool has.
#[derive(Debug, thiserror::Error)]
#[error(
    "the query needs more memory than the server's limit of {limit} allows ({detail}); raise the limit with --memory-limit (or [engine] memory_limit, TARN_MEMORY_LIMIT), or let it read less: filter earlier, select fewer columns, aggregate before joining"
)]
pub struct MemoryExhausted {
    limit: String,
    detail: String,
}

/// `err` with the pool's limit named, if it is a failure to reserve memory.
pub(crate) fn explain(err: DataFusionError, pool: &dyn MemoryPool) -> DataFusionError {
    let DataFusionError::ResourcesExhausted(detail) = err.find_root() else {
        return err;
    };
    let limit = match pool.memory_limit() {
        MemoryLimit::Finite(bytes) => bytesize::ByteSize::b(bytes as u64)
            .display()
            .iec()
            .to_string(),
        _ => "this server".to_string(),
    };
    DataFusionError::External(Box::new(MemoryExhausted {
        limit,
        detail: detail.trim().to_string(),
    }))
}

/// Whether `err` is a failure to reserve memory.
pub(crate) fn is_exhausted(err: &DataFusionError) -> bool {
    matches!(err.find_root(), DataFusionError::ResourcesExhausted(_))
        || super::error::find::<MemoryExhausted>(err).is_some()
}

/// Empties the spill folder (files of an earlier process) and makes it.
pub fn prepare_spill_dir(dir: &std::path::Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => {}
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(err),
    }
    std::fs::create_dir_all(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_limit_is_a_share_of_the_machine() {
        let memory = machine_memory().expect("the machine's memory is known");
        let limit = default_limit() as u64;
        assert!(limit > 0 && limit < memory, "{limit} of {memory}");
    }

    #[test]
    fn an_exhausted_pool_is_named_with_its_limit() {
        let pool = FairSpillPool::new(1024 * 1024 * 1024);
        let err = explain(
            DataFusionError::ResourcesExhausted("Failed to allocate 10 bytes".into()),
            &pool,
        );
        let text = err.to_string();
        assert!(text.contains("limit of 1.0 GiB"), "{text}");
        assert!(
            text.contains("--memory-limit") && text.contains("Failed to allocate"),
            "{text}"
        );
        assert!(is_exhausted(&err));
        let other = explain(DataFusionError::Execution("x".into()), &pool);
        assert!(!is_exhausted(&other));
    }

    #[test]
    fn the_spill_folder_starts_empty() {
        let dir = tempfile::tempdir().unwrap();
        let spill = dir.path().join("spill");
        std::fs::create_dir_all(spill.join("old")).unwrap();
        std::fs::write(spill.join("old/x.arrow"), b"x").unwrap();
        prepare_spill_dir(&spill).unwrap();
        assert!(spill.is_dir());
        assert_eq!(std::fs::read_dir(&spill).unwrap().count(), 0);
    }
}
