//! Stopping the engine: statements that are live when the server starts to
//! stop may finish within a deadline; the rest are stopped.

use std::time::Duration;

use super::Engine;
use super::live::Interruption;

/// How long a planned result may wait for its fetch while the server
/// stops: clients fetch right after planning, so one that waited longer
/// has most likely gone.
const FETCH_GRACE: Duration = Duration::from_secs(1);

/// How long stopped statements get to end their streams and record their
/// runs once interrupted.
const WIND_DOWN: Duration = Duration::from_secs(5);

/// What [`Engine::drain`] had to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Drained {
    /// Statements still running at the deadline, and stopped.
    pub stopped: usize,
    /// Statements that had not ended even after they were stopped.
    pub left: usize,
}

impl Engine {
    /// Waits up to `deadline` for every live statement (planning,
    /// executing, streaming, or a result fetched soon after it was
    /// planned) to end; ends the runs of results nobody fetched (ABORT);
    /// then stops the rest with `UNAVAILABLE` (their runs end ABORT too).
    /// The transport refuses new work before it calls this.
    pub async fn drain(&self, deadline: Duration) -> Drained {
        let settled = tokio::time::timeout(deadline, self.live.until_settled(FETCH_GRACE))
            .await
            .is_ok();
        self.abandon_pending_results("the server stopped before the result was fetched");
        if settled {
            let _ = tokio::time::timeout(WIND_DOWN, self.live.until_empty()).await;
            return Drained {
                stopped: 0,
                left: self.live.len(),
            };
        }
        let stopped = self
            .live
            .interrupt_all(&Interruption::ShuttingDown(deadline));
        let _ = tokio::time::timeout(WIND_DOWN, self.live.until_empty()).await;
        Drained {
            stopped,
            left: self.live.len(),
        }
    }
}
