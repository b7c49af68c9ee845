//! The CPU runtimes: where statements are planned and executed, apart from
//! tonic's I/O.
//!
//! Decoding Parquet, hashing and sorting can occupy a worker thread for many
//! milliseconds. On the runtime that serves gRPC that would stall every other
//! connection, so planning and execution are spawned here instead.
//!
//! There are two: one plans statements and answers those that read no files,
//! the other executes scans, at a lower OS priority
//! ([`Priority::Background`]). Tokio cannot preempt a task, and a scan polls
//! for tens of milliseconds between yields; on threads of their own, a
//! `SELECT 1` or a metadata call gets a core from the kernel's scheduler
//! while every scan thread is busy, instead of waiting behind them.
//!
//! Its threads have large stacks: DataFusion's planner, optimizer and
//! expression evaluation recurse once per level of nesting of a statement
//! (bounded by `StatementLimits`), and a panic or overflow there must never
//! happen on a thread that serves the network.

use std::future::Future;

use tokio::runtime::{Builder, Handle, Runtime};

/// Stack of each CPU thread. Only the pages a deep plan touches are ever
/// committed, so this costs address space, not memory.
const CPU_THREAD_STACK: usize = 32 * 1024 * 1024;

/// The nice value of [`Priority::Background`] threads: the kernel gives a
/// normal thread about nine times their share of a core they contend for.
const BACKGROUND_NICE: i32 = 10;

/// How a runtime's threads are scheduled against the process's others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    /// Like every other thread of the process.
    Normal,
    /// Yields the cores to normal threads that want them (Linux only;
    /// elsewhere the same as `Normal`).
    Background,
}

/// A dedicated multi-threaded Tokio runtime for planning or execution.
#[derive(Debug)]
pub struct CpuRuntime {
    // `Option` so that `Drop` can shut it down without blocking an async caller.
    runtime: Option<Runtime>,
    handle: Handle,
}

impl CpuRuntime {
    /// Starts a runtime named `name` with `threads` worker threads (at least
    /// one) scheduled at `priority`.
    pub fn new(name: &str, threads: usize, priority: Priority) -> std::io::Result<Self> {
        let mut builder = Builder::new_multi_thread();
        builder
            .worker_threads(threads.max(1))
            .thread_name(name)
            .thread_stack_size(CPU_THREAD_STACK)
            .enable_all();
        if priority == Priority::Background {
            // Also the blocking pool's threads, where local files are read.
            builder.on_thread_start(lower_this_threads_priority);
        }
        let runtime = builder.build()?;
        let handle = runtime.handle().clone();
        Ok(Self {
            runtime: Some(runtime),
            handle,
        })
    }

    /// The runtime's handle, for work spawned from elsewhere.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Runs `future` on the CPU runtime.
    pub fn spawn<F>(&self, future: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.handle.spawn(future)
    }

    /// Runs `future` on the CPU runtime as work its caller owns: dropping the
    /// handle (a cancelled or timed-out statement) stops it.
    pub fn spawn_owned<F>(&self, future: F) -> tokio_util::task::AbortOnDropHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        tokio_util::task::AbortOnDropHandle::new(self.handle.spawn(future))
    }

    /// Runs `future` on the CPU runtime and waits for its output; a panic
    /// inside becomes an error of this call, never of the caller's thread.
    pub async fn run<F>(&self, future: F) -> Result<F::Output, TaskFailure>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.handle.spawn(future).await.map_err(TaskFailure::from)
    }
}

/// Lowers the calling thread's priority to [`BACKGROUND_NICE`]. On Linux a
/// nice value belongs to a thread, not to the whole process. Best effort: a
/// thread left at normal priority only schedules as before.
fn lower_this_threads_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: gettid and setpriority take no pointers and change only the
    // calling thread's scheduling.
    unsafe {
        let thread = libc::gettid() as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, thread, BACKGROUND_NICE);
    }
}

/// Why a task spawned on a runtime did not finish.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TaskFailure {
    /// It was cancelled (its runtime shut down, or it was aborted).
    #[error("the task was cancelled")]
    Cancelled,
    /// It panicked; the panic was caught and reported, not propagated.
    #[error("the task failed ({0})")]
    Panicked(String),
}

impl From<tokio::task::JoinError> for TaskFailure {
    fn from(err: tokio::task::JoinError) -> Self {
        if !err.is_panic() {
            return Self::Cancelled;
        }
        let payload = err.into_panic();
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown cause".into());
        Self::Panicked(message)
    }
}

impl Drop for CpuRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            // Dropping a runtime from inside another runtime panics; this does not.
            runtime.shutdown_background();
        }
    }
}
