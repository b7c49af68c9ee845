//! Admission: how many queries execute at once, and a fair queue for the
//! rest.
//!
//! A query that reads tables takes a slot before it executes; when all
//! slots are taken it waits in a queue of bounded length, for at most the
//! queue timeout, and is told RESOURCE_EXHAUSTED when the queue is full or
//! the wait too long. Waiters are served round robin by user, so one user's
//! fifty queued queries do not starve another user's one. Work that reads
//! no table (`SELECT 1`, `SHOW`, catalog listings) never waits for a slot.
//! A user limited by `ALTER USER|ROLE ... SET max_running_queries` waits
//! once that many of its queries execute, even with slots free; while it
//! waits, the others' turns pass it by. A slot is given back when the
//! query's stream ends, however it ends.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;

use super::error::EngineError;
use super::live::{LiveQuery, QueryState};

/// A query the server is too busy to run now.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Refusal(String);

/// How many queries run at once and how many may wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdmissionOptions {
    /// Queries that execute at once; 0 means twice the number of cores.
    pub max_running: usize,
    /// Queries that may wait for a slot.
    pub max_queued: usize,
    /// The longest a query waits for a slot.
    pub queue_timeout: Duration,
}

impl Default for AdmissionOptions {
    fn default() -> Self {
        Self {
            max_running: 0,
            max_queued: 1000,
            queue_timeout: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, Default)]
struct State {
    running: usize,
    queued: usize,
    /// Queries executing now, by user.
    running_by_user: HashMap<String, usize>,
    /// Waiters by user, each in arrival order.
    waiting: HashMap<String, VecDeque<(u64, oneshot::Sender<Slot>)>>,
    /// The running-query cap of each user with waiters, if it has one.
    caps: HashMap<String, usize>,
    /// Users with waiters, in the order they are served next.
    turns: VecDeque<String>,
    next_ticket: u64,
}

impl State {
    /// Whether `user` may start one more query under `cap`.
    fn under_cap(&self, user: &str, cap: Option<usize>) -> bool {
        cap.is_none_or(|cap| self.running_by_user.get(user).copied().unwrap_or(0) < cap)
    }

    /// The first user in turn whose next waiter may start now.
    fn next_eligible(&self) -> Option<usize> {
        self.turns
            .iter()
            .position(|user| self.under_cap(user, self.caps.get(user).copied()))
    }

    fn started(&mut self, user: &str) {
        *self.running_by_user.entry(user.to_string()).or_default() += 1;
    }

    fn stopped(&mut self, user: &str) {
        if let Some(count) = self.running_by_user.get_mut(user) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.running_by_user.remove(user);
            }
        }
    }
}

/// The slots and the queue of one server.
#[derive(Debug)]
pub struct Admission {
    max_running: usize,
    max_queued: usize,
    queue_timeout: Duration,
    state: Mutex<State>,
}

/// A query's right to execute; dropping it gives the slot to the next waiter.
#[derive(Debug)]
pub struct Slot {
    admission: Option<Arc<Admission>>,
    user: String,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(admission) = self.admission.take() {
            admission.release(&self.user);
        }
    }
}

impl Admission {
    /// The admission of a server with `cores` cores.
    pub fn new(options: AdmissionOptions, cores: usize) -> Arc<Self> {
        let max_running = match options.max_running {
            0 => (cores * 2).max(1),
            n => n,
        };
        Arc::new(Self {
            max_running,
            max_queued: options.max_queued,
            queue_timeout: options.queue_timeout,
            state: Mutex::new(State::default()),
        })
    }

    /// Queries executing now and queries waiting.
    pub(crate) fn load(&self) -> (usize, usize) {
        let state = self.lock();
        (state.running, state.queued)
    }

    /// [`Admission::admit`] as the error a stream ends with.
    pub(crate) async fn admit_stream(
        self: &Arc<Self>,
        query: &LiveQuery,
    ) -> Result<Slot, datafusion::error::DataFusionError> {
        let asked = std::time::Instant::now();
        let admitted = self.admit(query).await;
        if admitted.is_ok() {
            let waited = asked.elapsed();
            crate::telemetry::query_admitted(waited);
            query.set_queued(waited);
        }
        // Stopped while it waited (its timeout, a cancel, the shutdown):
        // the stream ends as the interruption, not as a refusal.
        if let (Err(_), Some(why)) = (&admitted, query.interruption()) {
            return Err(datafusion::error::DataFusionError::External(Box::new(why)));
        }
        admitted.map_err(|err| match err {
            EngineError::ResourcesExhausted(why) => {
                datafusion::error::DataFusionError::External(Box::new(Refusal(why)))
            }
            EngineError::Cancelled(why) => datafusion::error::DataFusionError::External(Box::new(
                super::live::Interruption::Cancelled(why),
            )),
            other => {
                datafusion::error::DataFusionError::External(Box::new(Refusal(other.to_string())))
            }
        })
    }

    /// Waits for a slot for `query` (queued meanwhile), unless the queue is
    /// full, the wait passes the queue timeout, or the query is interrupted.
    async fn admit(self: &Arc<Self>, query: &LiveQuery) -> Result<Slot, EngineError> {
        let user = query.user().to_string();
        let cap = query.running_cap();
        let (ticket, waiting) = {
            let mut state = self.lock();
            if state.running < self.max_running
                && state.under_cap(&user, cap)
                && state.next_eligible().is_none()
            {
                state.running += 1;
                state.started(&user);
                return Ok(self.slot(user));
            }
            if state.queued >= self.max_queued {
                return Err(EngineError::ResourcesExhausted(format!(
                    "the server is busy: {} queries are running and {} are waiting, the most it queues (engine.max_queued_queries); try again shortly",
                    state.running, state.queued
                )));
            }
            let (tx, rx) = oneshot::channel();
            state.next_ticket += 1;
            let ticket = state.next_ticket;
            let queue = state.waiting.entry(user.clone()).or_default();
            if queue.is_empty() {
                state.turns.push_back(user.clone());
            }
            if let Some(queue) = state.waiting.get_mut(&user) {
                queue.push_back((ticket, tx));
            }
            match cap {
                Some(cap) => state.caps.insert(user.clone(), cap),
                None => state.caps.remove(&user),
            };
            state.queued += 1;
            (ticket, rx)
        };
        query.set_state(QueryState::Queued);
        let timeout = self.queue_timeout;
        let outcome = tokio::select! {
            slot = waiting => slot.map_err(|_| EngineError::Internal("the admission queue was dropped".into())),
            () = tokio::time::sleep(timeout) => Err(EngineError::ResourcesExhausted(format!(
                "the query waited {} for one of the server's {} query slots (engine.max_running_queries){} and gave up (engine.queue_timeout); try again when the server is less busy",
                humantime::format_duration(timeout),
                self.max_running,
                cap.map(|cap| format!(" or for one of the {cap} its user may run at once (ALTER USER|ROLE ... SET max_running_queries)")).unwrap_or_default(),
            ))),
            why = query.interrupted() => Err(why.error()),
        };
        if outcome.is_err() {
            // Out of the queue; a slot handed over meanwhile goes to the next.
            self.forget(query.user(), ticket);
        }
        query.set_state(QueryState::Running);
        outcome
    }

    fn slot(self: &Arc<Self>, user: String) -> Slot {
        Slot {
            admission: Some(Arc::clone(self)),
            user,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Takes the waiter `ticket` of `user` out of the queue, if it is there.
    fn forget(&self, user: &str, ticket: u64) {
        let mut state = self.lock();
        let Some(queue) = state.waiting.get_mut(user) else {
            return;
        };
        let before = queue.len();
        queue.retain(|(t, _)| *t != ticket);
        let removed = before - queue.len();
        let empty = queue.is_empty();
        state.queued -= removed;
        if empty {
            state.waiting.remove(user);
            state.caps.remove(user);
            state.turns.retain(|u| u != user);
        }
    }

    /// `user`'s slot is free: hand it to the next waiter that may start,
    /// users taking turns.
    fn release(self: &Arc<Self>, user: &str) {
        let mut state = self.lock();
        state.stopped(user);
        while let Some(at) = state.next_eligible() {
            let Some(next_user) = state.turns.remove(at) else {
                break;
            };
            let Some(queue) = state.waiting.get_mut(&next_user) else {
                continue;
            };
            let next = queue.pop_front();
            if queue.is_empty() {
                state.waiting.remove(&next_user);
                state.caps.remove(&next_user);
            } else {
                state.turns.push_back(next_user.clone());
            }
            let Some((_, waiter)) = next else { continue };
            state.queued -= 1;
            // The slot passes to the waiter; `running` stays as it is.
            state.started(&next_user);
            match waiter.send(self.slot(next_user.clone())) {
                Ok(()) => return,
                Err(mut unclaimed) => {
                    // It gave up just now: its slot must not release again.
                    unclaimed.admission = None;
                    state.stopped(&next_user);
                }
            }
        }
        state.running = state.running.saturating_sub(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::live::LiveQueries;

    fn admission(running: usize, queued: usize, wait: Duration) -> Arc<Admission> {
        Admission::new(
            AdmissionOptions {
                max_running: running,
                max_queued: queued,
                queue_timeout: wait,
            },
            2,
        )
    }

    #[tokio::test]
    async fn queries_beyond_the_slots_wait_and_a_full_queue_refuses() {
        let admission = admission(1, 1, Duration::from_secs(10));
        let live = LiveQueries::default();
        let (a, b, c) = (
            live.register("ann", "a", None),
            live.register("ann", "b", None),
            live.register("ann", "c", None),
        );
        let first = admission.admit(&a).await.unwrap();
        let waiting = {
            let admission = Arc::clone(&admission);
            let b = Arc::clone(&b);
            tokio::spawn(async move { admission.admit(&b).await.map(|_slot| ()) })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(admission.load(), (1, 1));
        assert_eq!(b.state(), QueryState::Queued);
        let refused = admission.admit(&c).await.unwrap_err();
        assert!(
            refused.to_string().contains("max_queued_queries"),
            "{refused}"
        );
        drop(first);
        waiting.await.unwrap().unwrap();
        assert_eq!(admission.load(), (0, 0));
    }

    #[tokio::test]
    async fn users_take_turns() {
        let admission = admission(1, 100, Duration::from_secs(10));
        let live = LiveQueries::default();
        let running = live.register("busy", "first", None);
        let slot = admission.admit(&running).await.unwrap();
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        let mut queue = |user: &str, name: &str| {
            let (admission, order) = (Arc::clone(&admission), Arc::clone(&order));
            let query = live.register(user, name, None);
            let name = name.to_string();
            tasks.push(tokio::spawn(async move {
                let slot = admission.admit(&query).await.unwrap();
                order.lock().unwrap().push(name);
                tokio::time::sleep(Duration::from_millis(5)).await;
                drop(slot);
            }));
        };
        for i in 0..5 {
            queue("busy", &format!("busy{i}"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        queue("quiet", "quiet");
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(slot);
        for task in tasks {
            task.await.unwrap();
        }
        let order = order.lock().unwrap().clone();
        let quiet = order.iter().position(|n| n == "quiet").unwrap();
        assert!(
            quiet <= 1,
            "the quiet user's one query went before most of the busy one's: {order:?}"
        );
        assert_eq!(admission.load(), (0, 0));
    }

    #[tokio::test]
    async fn a_wait_past_the_queue_timeout_gives_up_and_leaves_the_queue() {
        let admission = admission(1, 10, Duration::from_millis(50));
        let live = LiveQueries::default();
        let (a, b) = (
            live.register("ann", "a", None),
            live.register("bob", "b", None),
        );
        let _held = admission.admit(&a).await.unwrap();
        let err = admission.admit(&b).await.unwrap_err();
        assert!(err.to_string().contains("queue_timeout"), "{err}");
        assert_eq!(admission.load(), (1, 0));
    }

    #[tokio::test]
    async fn a_user_at_its_cap_waits_while_others_run() {
        let admission = admission(4, 10, Duration::from_secs(10));
        let live = LiveQueries::default();
        let capped = |name: &str| {
            let query = live.register("ann", name, None);
            query.set_running_cap(Some(1));
            query
        };
        let (first, second) = (capped("a1"), capped("a2"));
        let held = admission.admit(&first).await.unwrap();
        let waiting = {
            let admission = Arc::clone(&admission);
            let second = Arc::clone(&second);
            tokio::spawn(async move { admission.admit(&second).await.map(|_slot| ()) })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(second.state(), QueryState::Queued);
        // Slots are free: another user's query passes the capped one by.
        let other = live.register("bob", "b", None);
        let bobs = tokio::time::timeout(Duration::from_secs(1), admission.admit(&other))
            .await
            .expect("bob is not held up by ann's cap")
            .unwrap();
        assert_eq!(admission.load(), (2, 1));
        drop(held);
        waiting.await.unwrap().unwrap();
        drop(bobs);
        assert_eq!(admission.load(), (0, 0));
    }
}
