//! Planned results parked between `GetFlightInfo` and `DoGet`.
//!
//! A result is taken once. One that is never fetched is removed by its own
//! expiry timer after the store's TTL, and its run is ended then (ABORT),
//! so abandoned queries neither pin plans (and the memory they hold) nor
//! stay RUNNING in the catalog.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use super::error::{EngineError, EngineResult};
use super::live;
use super::{Engine, PlannedQuery};
use crate::identity::Principal;
use crate::runtime::CpuRuntime;

super::ids::random_id!(
    /// An unguessable name for a parked result.
    ResultId
);

pub(super) struct ResultStore {
    ttl: Duration,
    parked: Arc<Mutex<HashMap<ResultId, PlannedQuery>>>,
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
        lock(&self.parked).insert(id, query);
        let (parked, ttl) = (Arc::clone(&self.parked), self.ttl);
        runtime.spawn(async move {
            tokio::time::sleep(ttl).await;
            // Out of the map first: the run is ended outside the lock.
            let expired = lock(&parked).remove(&id);
            if let Some(query) = expired {
                let reason = format!(
                    "the result was not fetched within {} s (result_ttl)",
                    ttl.as_secs()
                );
                query.abort_runs(&reason);
            }
        });
        id
    }

    /// Takes a parked result of `owner`: each can be taken once, by the
    /// user who planned it (to anyone else it does not exist).
    pub(super) fn take(&self, id: &ResultId, owner: &str) -> Option<PlannedQuery> {
        let mut parked = lock(&self.parked);
        match parked.get(id) {
            Some(query) if query.owner == owner => parked.remove(id),
            _ => None,
        }
    }

    /// Takes every parked result out.
    pub(super) fn drain(&self) -> Vec<PlannedQuery> {
        lock(&self.parked).drain().map(|(_, query)| query).collect()
    }

    /// When a result parked now stops being fetchable, in wall-clock time.
    pub(super) fn expiry_from_now(&self) -> SystemTime {
        SystemTime::now() + self.ttl
    }
}

fn lock(
    parked: &Mutex<HashMap<ResultId, PlannedQuery>>,
) -> std::sync::MutexGuard<'_, HashMap<ResultId, PlannedQuery>> {
    // A panic while holding the lock cannot leave the map inconsistent
    // (every operation is a single insert/remove), so poisoning is ignored.
    parked.lock().unwrap_or_else(|p| p.into_inner())
}

impl Engine {
    /// Parks a planned query until a `DoGet` takes it (or it expires).
    pub fn park(&self, query: PlannedQuery) -> ResultId {
        let live = query.live.as_ref().map(|q| Arc::clone(q.query()));
        let id = self.results.park(query, &self.cpu);
        if let Some(live) = live {
            live.set_result(&result_key(&id));
        }
        id
    }

    /// Takes a parked query of `principal`; each result can be taken once.
    pub fn take(&self, id: &ResultId, principal: &Principal) -> EngineResult<PlannedQuery> {
        self.results
            .take(id, principal.name())
            .ok_or(EngineError::ResultNotFound {
                ttl_secs: self.options.result_ttl.as_secs(),
            })
    }

    /// Ends every parked result's run as ABORT with `reason` (the server is
    /// stopping; no client will fetch them).
    pub fn abandon_pending_results(&self, reason: &str) {
        for query in self.results.drain() {
            query.abort_runs(reason);
        }
    }

    /// Drops a parked query, ending its run (ABORT). Returns whether it was
    /// still pending.
    pub fn cancel(&self, id: &ResultId, principal: &Principal) -> bool {
        if let Some(query) = self.results.take(id, principal.name()) {
            query.abort_runs("the client cancelled the result before fetching it");
            return true;
        }
        // Being streamed: stop it.
        match self.live.answered_by(&result_key(id)) {
            Some(query) if query.user() == principal.name() => {
                query.interrupt(live::Interruption::Cancelled(
                    "the query was cancelled by its client (CancelFlightInfo)".into(),
                ));
                true
            }
            _ => false,
        }
    }
}

/// How the live queries name a parked result.
fn result_key(id: &ResultId) -> String {
    uuid::Uuid::from_slice(id.as_bytes()).map_or_else(|_| String::new(), |u| u.to_string())
}
