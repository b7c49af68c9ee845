//! Planned results parked between `GetFlightInfo` and `DoGet`.
//!
//! A result is taken once. One that is never fetched expires after the
//! store's TTL, so abandoned queries cannot pin plans (and the memory they
//! hold) forever.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use super::PlannedQuery;

super::ids::random_id!(
    /// An unguessable name for a parked result.
    ResultId
);

struct Parked {
    query: PlannedQuery,
    expires: Instant,
}

pub(super) struct ResultStore {
    ttl: Duration,
    parked: Mutex<HashMap<ResultId, Parked>>,
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
            parked: Mutex::new(HashMap::new()),
        }
    }

    pub(super) fn park(&self, query: PlannedQuery) -> ResultId {
        let now = Instant::now();
        let id = ResultId::random();
        let mut parked = self.lock();
        // Expiry is swept on every park: the map never outgrows the queries
        // planned within one TTL.
        parked.retain(|_, p| p.expires > now);
        parked.insert(
            id,
            Parked {
                query,
                expires: now + self.ttl,
            },
        );
        id
    }

    pub(super) fn take(&self, id: &ResultId) -> Option<PlannedQuery> {
        let parked = self.lock().remove(id)?;
        (parked.expires > Instant::now()).then_some(parked.query)
    }

    /// Takes every parked result out, fetchable or expired.
    pub(super) fn drain(&self) -> Vec<PlannedQuery> {
        self.lock()
            .drain()
            .map(|(_, parked)| parked.query)
            .collect()
    }

    /// When a result parked now stops being fetchable, in wall-clock time.
    pub(super) fn expiry_from_now(&self) -> SystemTime {
        SystemTime::now() + self.ttl
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ResultId, Parked>> {
        // A panic while holding the lock cannot leave the map inconsistent
        // (every operation is a single insert/remove), so poisoning is ignored.
        self.parked.lock().unwrap_or_else(|p| p.into_inner())
    }
}
