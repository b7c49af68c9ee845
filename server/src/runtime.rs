//! The CPU runtime: where DataFusion plans execute, apart from tonic's I/O.
//!
//! Decoding Parquet, hashing and sorting can occupy a worker thread for many
//! milliseconds. On the runtime that serves gRPC that would stall every other
//! connection, so query execution is spawned here instead.

use std::future::Future;

use tokio::runtime::{Builder, Handle, Runtime};

/// A dedicated multi-threaded Tokio runtime for query execution.
#[derive(Debug)]
pub struct CpuRuntime {
    // `Option` so that `Drop` can shut it down without blocking an async caller.
    runtime: Option<Runtime>,
    handle: Handle,
}

impl CpuRuntime {
    /// Starts a runtime with `threads` worker threads (at least one).
    pub fn new(threads: usize) -> std::io::Result<Self> {
        let runtime = Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .thread_name("tarn-cpu")
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        Ok(Self {
            runtime: Some(runtime),
            handle,
        })
    }

    /// Runs `future` on the CPU runtime.
    pub fn spawn<F>(&self, future: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.handle.spawn(future)
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
