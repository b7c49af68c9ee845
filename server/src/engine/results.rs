//! Planned results parked between `GetFlightInfo` and `DoGet`.
//!
//! A result is taken once. One that is never fetched is removed by its own
//! expiry timer after the store's TTL, and its run is ended then (ABORT),
//! so abandoned queries neither pin plans (and the memory they hold) nor
//! stay RUNNING in the catalog.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arrow::datatypes::SchemaRef;
use datafusion::physical_plan::SendableRecordBatchStream;

use super::error::{EngineError, EngineResult};
use super::live;
use super::{Engine, PlannedQuery};
use crate::identity::Principal;
use crate::runtime::CpuRuntime;

super::ids::random_id!(
    /// An unguessable name for a parked result.
    ResultId
);

/// A result waiting for its fetch.
pub enum ParkedResult {
    /// Planned; it executes when it is fetched.
    Planned(Box<PlannedQuery>),
    /// Already executing (a polled query): its first batches wait in the
    /// stream, and the rest are computed as the client reads them.
    Started(StartedQuery),
}

/// A query that executes while its result waits for the fetch.
pub struct StartedQuery {
    schema: SchemaRef,
    sql: String,
    owner: String,
    session: String,
    stream: SendableRecordBatchStream,
}

impl std::fmt::Debug for ParkedResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Planned(query) => f.debug_tuple("Planned").field(query).finish(),
            Self::Started(query) => f.debug_tuple("Started").field(&query.sql).finish(),
        }
    }
}

impl ParkedResult {
    /// The schema every batch of the result has.
    pub fn schema(&self) -> SchemaRef {
        match self {
            Self::Planned(query) => query.schema(),
            Self::Started(query) => Arc::clone(&query.schema),
        }
    }

    /// The statement it answers (passwords left out).
    pub fn sql(&self) -> Option<&str> {
        match self {
            Self::Planned(query) => query.sql(),
            Self::Started(query) => Some(query.sql.as_str()).filter(|s| !s.is_empty()),
        }
    }

    fn owner(&self) -> &str {
        match self {
            Self::Planned(query) => &query.owner,
            Self::Started(query) => &query.owner,
        }
    }

    fn session(&self) -> &str {
        match self {
            Self::Planned(query) => &query.session,
            Self::Started(query) => &query.session,
        }
    }

    /// Gives the result up: a planned one's runs end ABORT with `reason`;
    /// a started one stops (its run ends ABORT as abandoned).
    fn abandon(self, reason: &str) {
        match self {
            Self::Planned(query) => query.abort_runs(reason),
            Self::Started(query) => drop(query.stream),
        }
    }
}

pub(super) struct ResultStore {
    ttl: Duration,
    parked: Arc<Mutex<HashMap<ResultId, ParkedResult>>>,
}

impl std::fmt::Debug for ResultStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResultStore")
            .field("ttl", &self.ttl)
            .finish()
    }
}

impl ResultStore {
    pub(super) fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            parked: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Parks `query` until it is taken, or until its timer (on `runtime`)
    /// ends it.
    pub(super) fn park(&self, query: PlannedQuery, runtime: &CpuRuntime) -> ResultId {
        let id = ResultId::random();
        lock(&self.parked).insert(id, ParkedResult::Planned(Box::new(query)));
        let (parked, ttl) = (Arc::clone(&self.parked), self.ttl);
        runtime.spawn(async move {
            tokio::time::sleep(ttl).await;
            // Out of the map first: the run is ended outside the lock.
            let expired = lock(&parked).remove(&id);
            if let Some(result) = expired {
                let reason = format!(
                    "the result was not fetched within {} s (result_ttl)",
                    ttl.as_secs()
                );
                result.abandon(&reason);
            }
        });
        id
    }

    /// Takes a parked result of `owner`: each can be taken once, by the
    /// user who planned it (to anyone else it does not exist).
    pub(super) fn take(&self, id: &ResultId, owner: &str) -> Option<ParkedResult> {
        let mut parked = lock(&self.parked);
        match parked.get(id) {
            Some(result) if result.owner() == owner => parked.remove(id),
            _ => None,
        }
    }

    /// Puts a result taken out back under its id (its timer still runs).
    fn put_back(&self, id: ResultId, result: ParkedResult) {
        lock(&self.parked).insert(id, result);
    }

    /// The schema of a parked result of `owner`.
    fn schema(&self, id: &ResultId, owner: &str) -> Option<SchemaRef> {
        lock(&self.parked)
            .get(id)
            .filter(|result| result.owner() == owner)
            .map(ParkedResult::schema)
    }

    /// How many results `session` has parked.
    pub(super) fn parked_by(&self, session: &str) -> usize {
        lock(&self.parked)
            .values()
            .filter(|result| result.session() == session)
            .count()
    }

    /// Takes every parked result out.
    pub(super) fn drain(&self) -> Vec<ParkedResult> {
        lock(&self.parked)
            .drain()
            .map(|(_, result)| result)
            .collect()
    }

    /// When a result parked now stops being fetchable, in wall-clock time.
    pub(super) fn expiry_from_now(&self) -> SystemTime {
        SystemTime::now() + self.ttl
    }
}

fn lock(
    parked: &Mutex<HashMap<ResultId, ParkedResult>>,
) -> std::sync::MutexGuard<'_, HashMap<ResultId, ParkedResult>> {
    // A panic while holding the lock cannot leave the map inconsistent
    // (every operation is a single insert/remove), so poisoning is ignored.
    parked.lock().unwrap_or_else(|p| p.into_inner())
}

/// How far a polled query has come.
#[derive(Debug, Clone)]
pub struct Progress {
    /// The share of its input it has read, from 0 to 1.
    pub fraction: f64,
    /// Whether its result is ready to fetch: its first batches are there,
    /// or it has ended.
    pub ready: bool,
    /// The schema of its result.
    pub schema: SchemaRef,
    /// The query's id, while it is live.
    pub query_id: Option<String>,
    /// Rows its scans have read so far.
    pub rows_scanned: u64,
    /// Bytes it has read from files so far.
    pub bytes_scanned: u64,
    /// How long since it was submitted.
    pub elapsed: Duration,
}

impl Engine {
    /// Parks a planned query until a `DoGet` takes it (or it expires);
    /// refused (and its run ended) when its session already leaves as many
    /// results unfetched as it may.
    pub fn park(&self, query: PlannedQuery) -> EngineResult<ResultId> {
        let cap = self.options.sessions.max_unfetched_results;
        let unfetched = self.results.parked_by(&query.session);
        if unfetched >= cap {
            let refusal = format!(
                "this session already has {unfetched} planned results that it has not fetched, the most [engine] max_unfetched_results allows; fetch (DoGet) or cancel (CancelFlightInfo) them, or raise the setting"
            );
            query.abort_runs(&refusal);
            return Err(EngineError::ResourcesExhausted(refusal));
        }
        let live = query.live.as_ref().map(|q| Arc::clone(q.query()));
        let id = self.results.park(query, &self.cpu);
        if let Some(live) = live {
            live.set_result(&result_key(&id));
        }
        Ok(id)
    }

    /// Takes a parked result of `principal`; each can be taken once.
    pub fn take(&self, id: &ResultId, principal: &Principal) -> EngineResult<ParkedResult> {
        self.results
            .take(id, principal.name())
            .ok_or_else(|| self.result_not_found())
    }

    fn result_not_found(&self) -> EngineError {
        EngineError::ResultNotFound {
            ttl_secs: self.options.result_ttl.as_secs(),
        }
    }

    /// The stream of a result taken out: a planned one starts executing
    /// now; a started one goes on.
    pub fn stream(&self, result: ParkedResult) -> SendableRecordBatchStream {
        match result {
            ParkedResult::Planned(query) => self.execute(*query),
            ParkedResult::Started(query) => query.stream,
        }
    }

    /// Starts executing a parked result of `principal` before it is
    /// fetched (a polled query), so that its progress can be reported.
    pub fn start(&self, id: &ResultId, principal: &Principal) -> EngineResult<()> {
        let result = self.take(id, principal)?;
        let started = match result {
            ParkedResult::Planned(query) => {
                let (schema, sql) = (query.schema(), query.sql.clone());
                let (owner, session) = (query.owner.clone(), query.session.clone());
                ParkedResult::Started(StartedQuery {
                    schema,
                    sql,
                    owner,
                    session,
                    stream: self.execute(*query),
                })
            }
            started @ ParkedResult::Started(_) => started,
        };
        self.results.put_back(*id, started);
        Ok(())
    }

    /// How far the result `id` of `principal` has come: the share of its
    /// input read, and whether it is ready to fetch.
    pub fn progress(&self, id: &ResultId, principal: &Principal) -> EngineResult<Progress> {
        let live = self
            .live
            .answered_by(&result_key(id))
            .filter(|query| query.user() == principal.name());
        let parked = self.results.schema(id, principal.name());
        match (live, parked) {
            (Some(query), parked) => {
                let scanned = query.progress();
                let schema = parked
                    .or_else(|| query.schema())
                    .ok_or_else(|| self.result_not_found())?;
                Ok(Progress {
                    fraction: scanned.fraction,
                    ready: scanned.ready,
                    schema,
                    query_id: Some(query.id().to_string()),
                    rows_scanned: scanned.rows,
                    bytes_scanned: scanned.bytes,
                    elapsed: query.elapsed(),
                })
            }
            // Parked, and its execution has ended.
            (None, Some(schema)) => Ok(Progress {
                fraction: 1.0,
                ready: true,
                schema,
                query_id: None,
                rows_scanned: 0,
                bytes_scanned: 0,
                elapsed: Duration::ZERO,
            }),
            (None, None) => Err(self.result_not_found()),
        }
    }

    /// Ends every parked result's run as ABORT with `reason` (the server is
    /// stopping; no client will fetch them).
    pub fn abandon_pending_results(&self, reason: &str) {
        for result in self.results.drain() {
            result.abandon(reason);
        }
    }

    /// Drops a parked query, ending its run (ABORT). Returns whether it was
    /// still pending.
    pub fn cancel(&self, id: &ResultId, principal: &Principal) -> bool {
        // Executing (streamed, or started by a poll): stop it, with the reason.
        let live = self
            .live
            .answered_by(&result_key(id))
            .filter(|query| query.user() == principal.name());
        if let Some(query) = &live {
            query.interrupt(live::Interruption::Cancelled(
                "the query was cancelled by its client (CancelFlightInfo)".into(),
            ));
        }
        if let Some(result) = self.results.take(id, principal.name()) {
            result.abandon("the client cancelled the result before fetching it");
            return true;
        }
        live.is_some()
    }
}

/// How the live queries name a parked result.
fn result_key(id: &ResultId) -> String {
    uuid::Uuid::from_slice(id.as_bytes()).map_or_else(|_| String::new(), |u| u.to_string())
}
