//! Live queries: every statement from the moment it is submitted until its
//! result has been streamed (or it failed, was cancelled, timed out or lost
//! its client), listed in `system.queries` and cancellable.
//!
//! A [`LiveQuery`] is registered by [`LiveQueries::register`]; the returned
//! [`Registration`] travels with the statement (planning, the parked
//! result, the stream's driver) and takes it off the list when dropped, so
//! no path can leave a finished query listed. Cancellation is a token each
//! stage of the statement selects on, beside its work: cancelling drops the
//! work, which stops DataFusion's tasks and frees their memory at once, even
//! before the first batch.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use datafusion::physical_plan::ExecutionPlan;
use tokio_util::sync::CancellationToken;

use super::error::EngineError;
use super::memory::QueryMemory;

/// Where a statement is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum QueryState {
    /// Waiting for a slot to run in.
    Queued = 0,
    /// Being parsed and planned (a write runs here).
    Planning = 1,
    /// Planned; its result waits for the client to fetch it.
    Waiting = 2,
    /// Executing, nothing sent yet.
    Running = 3,
    /// Sending its result.
    Streaming = 4,
}

impl QueryState {
    /// As `system.queries` shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Planning => "planning",
            Self::Waiting => "waiting",
            Self::Running => "running",
            Self::Streaming => "streaming",
        }
    }

    fn from_u8(value: u8) -> Self {
        match value {
            0 => Self::Queued,
            1 => Self::Planning,
            2 => Self::Waiting,
            3 => Self::Running,
            _ => Self::Streaming,
        }
    }
}

/// Why a statement stopped before its end. Also the error a stopped
/// stream ends with, so that the transport can tell it from a failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Interruption {
    /// Cancelled, by whom and how.
    #[error("{0}")]
    Cancelled(String),
    /// It ran longer than its statement timeout.
    #[error("the statement ran longer than its statement timeout")]
    TimedOut(Duration),
    /// The server is stopping and its shutdown timeout has passed.
    #[error(
        "the server stopped the statement: it was still running at the end of the shutdown timeout"
    )]
    ShuttingDown(Duration),
}

impl Interruption {
    /// The error the client gets.
    pub(crate) fn error(&self) -> EngineError {
        match self {
            Self::Cancelled(why) => EngineError::Cancelled(why.clone()),
            Self::TimedOut(limit) => EngineError::TimedOut(format!(
                "the statement ran longer than its statement timeout of {}; raise it for this session with SET tarn.statement_timeout = '{}' (0 turns it off; a limit an admin set for your user or role with ALTER USER|ROLE ... SET statement_timeout stays the ceiling), or make the query cheaper",
                humantime::format_duration(*limit),
                humantime::format_duration(*limit * 2)
            )),
            Self::ShuttingDown(limit) => EngineError::ShuttingDown(format!(
                "the server is shutting down and the statement was still running after its shutdown timeout of {}; run it again once the server is back, or against another server",
                humantime::format_duration(*limit)
            )),
        }
    }
}

/// One statement being planned, waiting to be fetched, or streamed.
#[derive(Debug)]
pub struct LiveQuery {
    id: String,
    user: String,
    sql: String,
    started_at: DateTime<Utc>,
    started: Instant,
    deadline: Option<(Instant, Duration)>,
    state: AtomicU8,
    rows_sent: AtomicU64,
    cancel: CancellationToken,
    interruption: Mutex<Option<Interruption>>,
    /// The physical plans, once planned: their metrics say what was scanned.
    plans: Mutex<Vec<Arc<dyn ExecutionPlan>>>,
    /// The rows their scans' statistics promise (what progress is of).
    expected_rows: Mutex<Option<u64>>,
    /// The parked result that answers it (what `CancelFlightInfo` names).
    result: Mutex<Option<String>>,
    /// When it last started to wait for its client to fetch it.
    waiting_since: Mutex<Option<Instant>>,
    /// What it holds of the memory pool.
    memory: Arc<QueryMemory>,
    /// How long it waited for a slot, in microseconds.
    queued_us: AtomicU64,
    /// What the server did beyond its plan.
    note: Mutex<Option<String>>,
    /// How many of its user's queries may execute at once (0: no limit of
    /// the user's own; the server's slots still apply).
    running_cap: AtomicUsize,
}

/// What a query has read so far, as a poll reports it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Scanned {
    pub(crate) rows: u64,
    pub(crate) bytes: u64,
    pub(crate) fraction: f64,
    pub(crate) ready: bool,
}

/// What `system.queries` shows of one query.
#[derive(Debug, Clone)]
pub struct QuerySnapshot {
    /// The query's id (`CANCEL QUERY 'id'`).
    pub id: String,
    /// Who runs it.
    pub user: String,
    /// Its text.
    pub sql: String,
    /// Where it is.
    pub state: QueryState,
    /// When it was submitted.
    pub started_at: DateTime<Utc>,
    /// How long ago.
    pub elapsed: Duration,
    /// Rows read from tables so far.
    pub rows_scanned: Option<u64>,
    /// Bytes read from files so far.
    pub bytes_scanned: Option<u64>,
    /// Rows sent to the client so far.
    pub rows_sent: u64,
    /// Bytes of the memory pool it holds now.
    pub memory_reserved: u64,
    /// The most it has held at once.
    pub peak_memory: u64,
    /// Bytes its operators spilled so far.
    pub spilled_bytes: Option<u64>,
    /// The share of its input read (see [`LiveQuery::progress`]).
    pub progress: f64,
}

impl LiveQuery {
    /// The query's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Who runs it.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// How many of its user's queries may execute at once, if its user
    /// (or a role of it) is limited.
    pub(crate) fn running_cap(&self) -> Option<usize> {
        match self.running_cap.load(Ordering::Relaxed) {
            0 => None,
            n => Some(n),
        }
    }

    pub(crate) fn set_running_cap(&self, cap: Option<usize>) {
        self.running_cap.store(cap.unwrap_or(0), Ordering::Relaxed);
    }

    /// Moves it to `state`.
    pub(crate) fn set_state(&self, state: QueryState) {
        if state == QueryState::Waiting {
            *lock(&self.waiting_since) = Some(Instant::now());
        }
        self.state.store(state as u8, Ordering::Relaxed);
    }

    /// Whether it is a result that has waited for its fetch for longer
    /// than `grace` (its client has most likely gone).
    fn waited_longer_than(&self, grace: Duration) -> bool {
        self.state() == QueryState::Waiting
            && lock(&self.waiting_since).is_some_and(|since| since.elapsed() > grace)
    }

    /// How long since it was submitted.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Where it is.
    pub fn state(&self) -> QueryState {
        QueryState::from_u8(self.state.load(Ordering::Relaxed))
    }

    /// Counts rows sent to the client.
    pub(crate) fn sent(&self, rows: u64) {
        self.rows_sent.fetch_add(rows, Ordering::Relaxed);
        self.set_state(QueryState::Streaming);
    }

    /// Names the parked result that answers the query.
    pub(crate) fn set_result(&self, result: &str) {
        *lock(&self.result) = Some(result.to_string());
    }

    /// Keeps the plans whose metrics say what the query scanned.
    pub(crate) fn set_plans(&self, plans: &[Arc<dyn ExecutionPlan>]) {
        *lock(&self.expected_rows) = super::runs::expected_input_rows(plans);
        *lock(&self.plans) = plans.to_vec();
    }

    /// Stops the query (if it has not stopped already) because of `why`.
    pub(crate) fn interrupt(&self, why: Interruption) {
        let mut interruption = lock(&self.interruption);
        if interruption.is_none() {
            *interruption = Some(why);
        }
        drop(interruption);
        self.cancel.cancel();
    }

    /// Why it was stopped, if it was.
    pub(crate) fn interruption(&self) -> Option<Interruption> {
        lock(&self.interruption).clone()
    }

    /// Waits until the query is cancelled or passes its deadline; returns why.
    pub(crate) async fn interrupted(&self) -> Interruption {
        match self.deadline {
            Some((deadline, limit)) => {
                tokio::select! {
                    () = self.cancel.cancelled() => {}
                    () = tokio::time::sleep_until(deadline.into()) => {
                        self.interrupt(Interruption::TimedOut(limit));
                    }
                }
            }
            None => self.cancel.cancelled().await,
        }
        self.interruption()
            .unwrap_or_else(|| Interruption::Cancelled("the query was cancelled".into()))
    }

    /// Runs `work` unless the query is interrupted first (the work is then
    /// dropped, which stops it).
    pub(crate) async fn guard<T>(
        &self,
        work: impl Future<Output = Result<T, EngineError>>,
    ) -> Result<T, EngineError> {
        tokio::select! {
            biased;
            why = self.interrupted() => Err(why.error()),
            outcome = work => outcome,
        }
    }

    /// What it has read so far, the share of its input that is (0 to 1,
    /// of the rows its scans' statistics promise), and whether its first
    /// batches are ready.
    pub(crate) fn progress(&self) -> Scanned {
        let plans = lock(&self.plans).clone();
        let (rows, bytes) = super::runs::input_metrics(&plans);
        Scanned {
            rows: rows.unwrap_or(0),
            bytes: bytes.unwrap_or(0),
            fraction: self.fraction(rows),
            ready: self.state() == QueryState::Streaming,
        }
    }

    fn fraction(&self, scanned: Option<u64>) -> f64 {
        match (scanned, *lock(&self.expected_rows)) {
            (Some(scanned), Some(expected)) if expected > 0 => {
                (scanned as f64 / expected as f64).min(1.0)
            }
            _ => 0.0,
        }
    }

    /// What it holds of the memory pool.
    pub(crate) fn memory(&self) -> &Arc<QueryMemory> {
        &self.memory
    }

    /// Records how long it waited for its slot.
    pub(crate) fn set_queued(&self, waited: Duration) {
        self.queued_us
            .store(waited.as_micros() as u64, Ordering::Relaxed);
    }

    /// Notes what the server did beyond its plan (kept in its run).
    pub(crate) fn set_note(&self, note: &str) {
        *lock(&self.note) = Some(note.to_string());
    }

    /// What its execution used, as its run records it.
    pub(crate) fn usage(&self, spilled_bytes: Option<u64>) -> crate::catalog::RunUsage {
        crate::catalog::RunUsage {
            peak_memory: self.memory.peak() as u64,
            spilled_bytes: spilled_bytes.unwrap_or(0),
            queued: Duration::from_micros(self.queued_us.load(Ordering::Relaxed)),
            note: lock(&self.note).clone(),
        }
    }

    /// The schema of its result, once planned.
    pub(crate) fn schema(&self) -> Option<arrow::datatypes::SchemaRef> {
        lock(&self.plans).first().map(|plan| plan.schema())
    }

    fn snapshot(&self) -> QuerySnapshot {
        let plans = lock(&self.plans).clone();
        let (rows_scanned, bytes_scanned) = super::runs::input_metrics(&plans);
        QuerySnapshot {
            id: self.id.clone(),
            user: self.user.clone(),
            sql: self.sql.clone(),
            state: self.state(),
            started_at: self.started_at,
            elapsed: self.started.elapsed(),
            rows_scanned,
            bytes_scanned,
            rows_sent: self.rows_sent.load(Ordering::Relaxed),
            memory_reserved: self.memory.reserved() as u64,
            peak_memory: self.memory.peak() as u64,
            spilled_bytes: super::runs::spilled_bytes(&plans),
            progress: self.fraction(rows_scanned),
        }
    }
}

tokio::task_local! {
    /// The statement the current task plans or runs.
    static CURRENT: Arc<LiveQuery>;
}

/// Runs `work` as the work of `query`: [`guarded`] inside it stops with
/// the query.
pub(crate) async fn scope<T>(query: Arc<LiveQuery>, work: impl Future<Output = T>) -> T {
    CURRENT.scope(query, work).await
}

/// Runs `work` unless the current task's statement is interrupted first.
pub(crate) async fn guarded<T>(
    work: impl Future<Output = Result<T, EngineError>>,
) -> Result<T, EngineError> {
    match CURRENT.try_with(Arc::clone) {
        Ok(query) => query.guard(work).await,
        Err(_) => work.await,
    }
}

/// The list, and a signal each time a query leaves it.
#[derive(Debug, Default)]
struct Listed {
    queries: Mutex<HashMap<String, Arc<LiveQuery>>>,
    left: tokio::sync::Notify,
}

/// Every live query of the server.
#[derive(Debug, Default, Clone)]
pub struct LiveQueries {
    listed: Arc<Listed>,
}

/// A query's place on the list: dropping it takes the query off.
#[derive(Debug)]
pub struct Registration {
    query: Arc<LiveQuery>,
    listed: Weak<Listed>,
}

impl Registration {
    /// The query listed.
    pub fn query(&self) -> &Arc<LiveQuery> {
        &self.query
    }
}

impl std::ops::Deref for Registration {
    type Target = Arc<LiveQuery>;

    fn deref(&self) -> &Self::Target {
        &self.query
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Some(listed) = self.listed.upgrade() {
            lock(&listed.queries).remove(&self.query.id);
            listed.left.notify_waiters();
        }
    }
}

impl LiveQueries {
    /// Lists a new query of `user`, planning, that must end within
    /// `timeout` (`None`: no limit).
    pub fn register(&self, user: &str, sql: &str, timeout: Option<Duration>) -> Registration {
        let started = Instant::now();
        let query = Arc::new(LiveQuery {
            id: uuid::Uuid::now_v7().to_string(),
            user: user.to_string(),
            sql: sql.to_string(),
            started_at: Utc::now(),
            started,
            deadline: timeout.map(|limit| (started + limit, limit)),
            state: AtomicU8::new(QueryState::Planning as u8),
            rows_sent: AtomicU64::new(0),
            cancel: CancellationToken::new(),
            interruption: Mutex::new(None),
            plans: Mutex::new(Vec::new()),
            expected_rows: Mutex::new(None),
            result: Mutex::new(None),
            waiting_since: Mutex::new(None),
            memory: Arc::default(),
            queued_us: AtomicU64::new(0),
            note: Mutex::new(None),
            running_cap: AtomicUsize::new(0),
        });
        lock(&self.listed.queries).insert(query.id.clone(), Arc::clone(&query));
        Registration {
            query,
            listed: Arc::downgrade(&self.listed),
        }
    }

    /// The live query answered by the parked result `result`.
    pub fn answered_by(&self, result: &str) -> Option<Arc<LiveQuery>> {
        lock(&self.listed.queries)
            .values()
            .find(|q| lock(&q.result).as_deref() == Some(result))
            .cloned()
    }

    /// The query with `id`, if it is live.
    pub fn find(&self, id: &str) -> Option<Arc<LiveQuery>> {
        lock(&self.listed.queries).get(id).cloned()
    }

    /// What every live query is doing, oldest first.
    pub fn snapshot(&self) -> Vec<QuerySnapshot> {
        let queries: Vec<Arc<LiveQuery>> = lock(&self.listed.queries).values().cloned().collect();
        let mut snapshots: Vec<QuerySnapshot> = queries.iter().map(|q| q.snapshot()).collect();
        snapshots.sort_by(|a, b| (a.started_at, &a.id).cmp(&(b.started_at, &b.id)));
        snapshots
    }

    /// How many queries are live.
    pub fn len(&self) -> usize {
        lock(&self.listed.queries).len()
    }

    /// Whether no query is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Waits until no query is live.
    pub async fn until_empty(&self) {
        loop {
            // Armed before the check, so that a query leaving in between
            // is not missed.
            let left = self.listed.left.notified();
            tokio::pin!(left);
            left.as_mut().enable();
            if self.is_empty() {
                return;
            }
            left.await;
        }
    }

    /// Waits until every live query has ended, except results that have
    /// waited for their fetch for longer than `grace`.
    pub async fn until_settled(&self, grace: Duration) {
        loop {
            let left = self.listed.left.notified();
            tokio::pin!(left);
            left.as_mut().enable();
            let settled = lock(&self.listed.queries)
                .values()
                .all(|q| q.waited_longer_than(grace));
            if settled {
                return;
            }
            // A result passes its grace without anything leaving the list.
            let _ = tokio::time::timeout(grace / 4, left).await;
        }
    }

    /// Interrupts every live query with `why`; returns how many there were.
    pub fn interrupt_all(&self, why: &Interruption) -> usize {
        let queries: Vec<Arc<LiveQuery>> = lock(&self.listed.queries).values().cloned().collect();
        for query in &queries {
            query.interrupt(why.clone());
        }
        queries.len()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_query_is_listed_until_its_registration_is_dropped() {
        let live = LiveQueries::default();
        let registration = live.register("ann", "SELECT 1", None);
        let listed = live.snapshot();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].user, "ann");
        assert_eq!(listed[0].state, QueryState::Planning);
        assert!(live.find(registration.id()).is_some());
        drop(registration);
        assert!(live.is_empty());
    }

    #[tokio::test]
    async fn cancelling_stops_the_guarded_work_with_the_reason() {
        let live = LiveQueries::default();
        let query = live.register("ann", "SELECT forever", None);
        let forever = std::future::pending::<Result<(), EngineError>>();
        let (outcome, ()) = tokio::join!(query.guard(forever), async {
            query.interrupt(Interruption::Cancelled("cancelled by admin".into()));
        });
        let err = outcome.unwrap_err();
        assert!(matches!(err, EngineError::Cancelled(ref why) if why == "cancelled by admin"));
    }

    #[tokio::test]
    async fn waiting_for_an_empty_list_ends_when_the_last_query_leaves() {
        let live = LiveQueries::default();
        live.until_empty().await;
        let (first, second) = (
            live.register("ann", "a", None),
            live.register("bo", "b", None),
        );
        let waiter = tokio::spawn({
            let live = live.clone();
            async move { live.until_empty().await }
        });
        drop(first);
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "one query is still live");
        drop(second);
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("the waiter sees the list empty")
            .unwrap();
    }

    #[tokio::test]
    async fn a_deadline_times_the_work_out() {
        let live = LiveQueries::default();
        let query = live.register("ann", "SELECT slow", Some(Duration::from_millis(50)));
        let slow = async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok(())
        };
        let err = query.guard(slow).await.unwrap_err();
        assert!(matches!(err, EngineError::TimedOut(_)), "{err}");
        assert!(err.to_string().contains("tarn.statement_timeout"), "{err}");
        assert_eq!(
            query.interruption(),
            Some(Interruption::TimedOut(Duration::from_millis(50)))
        );
    }
}
