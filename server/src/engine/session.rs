//! Sessions: each client's own settings over the one shared catalog.
//!
//! A session is a DataFusion `SessionContext` made from the engine's: it
//! shares the catalog (tables, views), the functions and the runtime, and
//! owns its configuration, so `SET` in one session is never seen by
//! another. The transport names the session of a request (a Flight
//! session cookie, a login's session token, or the connection); the
//! engine keeps the sessions, ends those left idle, and never lets one
//! user's request into another user's session.
//!
//! Invariants:
//! - A session belongs to the user who opened it: a key or cookie presented
//!   by anyone else opens a session of their own.
//! - `ALTER SYSTEM SET` changes the engine's context, which sessions are
//!   made from: it reaches sessions that start afterwards, never the
//!   settings a running session chose.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use arrow::datatypes::DataType;
use datafusion::common::ScalarValue;
use datafusion::execution::SessionStateBuilder;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::prelude::SessionContext;

use super::privileges::Privileges;
use super::visible::{Viewer, VisibleCatalogs, VisibleLineageWalk};
use crate::identity::Principal;

/// The name of the session every statement replayed at start (and every
/// `ALTER SYSTEM`) runs in: the engine's own context.
const SYSTEM_SESSION: &str = "system";

/// A request's session: who is asking now, and the settings they work with.
#[derive(Clone)]
pub struct Session {
    principal: Principal,
    entry: Arc<SessionEntry>,
    /// This request's client reads view types (it said so in the request).
    reads_view_types: bool,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("id", &self.entry.id)
            .field("principal", &self.principal)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// The engine's own session, for statements the server runs itself
    /// (settings and views restored at start); its settings are the
    /// defaults of every session made afterwards.
    pub(crate) fn system(context: SessionContext) -> Self {
        let principal = Principal::anonymous();
        let cell = Arc::new(RwLock::new(principal.clone()));
        let entry = SessionEntry::new(SYSTEM_SESSION.to_string(), String::new(), cell, context);
        Self {
            principal,
            entry: Arc::new(entry),
            reads_view_types: false,
        }
    }

    /// Who runs the statements of this request.
    pub fn principal(&self) -> &Principal {
        &self.principal
    }

    /// The session's id (what a Flight session cookie carries).
    pub fn id(&self) -> &str {
        &self.entry.id
    }

    /// The same session for a request whose client reads view types
    /// (`Utf8View`, `BinaryView`) and dictionaries: its results leave
    /// without the cast to plain types, whatever the server's default.
    pub fn reading_view_types(mut self, reads: bool) -> Self {
        self.reads_view_types = reads;
        self
    }

    /// Whether this request's client reads view types.
    pub(crate) fn reads_view_types(&self) -> bool {
        self.reads_view_types
    }

    /// The session's DataFusion context: its settings over the shared catalog.
    pub(crate) fn context(&self) -> &SessionContext {
        &self.entry.context
    }
}

/// A session as the registry keeps it.
struct SessionEntry {
    id: String,
    /// The user whose session it is.
    owner: String,
    context: SessionContext,
    /// What `current_user()` and `current_role()` answer: the principal of
    /// the latest request, so that granted or revoked roles show at once.
    principal: Arc<RwLock<Principal>>,
    last_used: Mutex<Instant>,
}

impl SessionEntry {
    fn new(
        id: String,
        owner: String,
        principal: Arc<RwLock<Principal>>,
        context: SessionContext,
    ) -> Self {
        for which in [Identity::User, Identity::Role] {
            context.register_udf(ScalarUDF::new_from_impl(IdentityFunction::new(
                which,
                Arc::clone(&principal),
            )));
        }
        Self {
            id,
            owner,
            context,
            principal,
            last_used: Mutex::new(Instant::now()),
        }
    }

    fn idle_for(&self, now: Instant) -> Duration {
        let last = *self.last_used.lock().unwrap_or_else(|p| p.into_inner());
        now.saturating_duration_since(last)
    }

    fn enter(&self, principal: &Principal, now: Instant) {
        *self.last_used.lock().unwrap_or_else(|p| p.into_inner()) = now;
        let mut current = self.principal.write().unwrap_or_else(|p| p.into_inner());
        if *current != *principal {
            *current = principal.clone();
        }
    }
}

/// How long sessions live and how many there may be.
#[derive(Debug, Clone, Copy)]
pub struct SessionLimits {
    /// A session unused this long is ended (its settings are forgotten).
    pub idle_timeout: Duration,
    /// At most this many sessions; beyond it the least recently used ends.
    pub max_sessions: usize,
    /// Prepared statements one session may hold open at once.
    pub max_prepared_statements: usize,
    /// Planned results one session may leave unfetched at once.
    pub max_unfetched_results: usize,
}

impl Default for SessionLimits {
    fn default() -> Self {
        Self {
            idle_timeout: Duration::from_secs(60 * 60),
            max_sessions: 10_000,
            max_prepared_statements: 128,
            max_unfetched_results: 128,
        }
    }
}

/// The live sessions of an engine.
pub(crate) struct Sessions {
    /// What new sessions are made from.
    base: SessionContext,
    /// What each session's user may see of the catalog.
    privileges: Arc<Privileges>,
    limits: SessionLimits,
    registry: Mutex<Registry>,
}

#[derive(Default)]
struct Registry {
    by_id: HashMap<String, Arc<SessionEntry>>,
    /// (user, transport key) to session id.
    by_key: HashMap<(String, String), String>,
}

impl Registry {
    fn live(
        &self,
        id: &str,
        owner: &str,
        now: Instant,
        idle: Duration,
    ) -> Option<Arc<SessionEntry>> {
        self.by_id
            .get(id)
            .filter(|entry| entry.owner == owner && entry.idle_for(now) < idle)
            .cloned()
    }

    fn remove(&mut self, id: &str) {
        self.by_id.remove(id);
        self.by_key.retain(|_, session| session != id);
    }
}

impl Sessions {
    pub(crate) fn new(
        base: SessionContext,
        privileges: Arc<Privileges>,
        limits: SessionLimits,
    ) -> Self {
        Self {
            base,
            privileges,
            limits,
            registry: Mutex::new(Registry::default()),
        }
    }

    fn registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The session of `principal` that `cookie` (a session id) or else
    /// `key` (the transport's name for the client) stands for, opened now
    /// if there is none.
    pub(crate) fn open(&self, principal: &Principal, cookie: Option<&str>, key: &str) -> Session {
        let now = Instant::now();
        let owner = principal.name().to_string();
        let idle = self.limits.idle_timeout;
        let mut registry = self.registry();
        let by_cookie = cookie.and_then(|id| registry.live(id, &owner, now, idle));
        let found = by_cookie.or_else(|| {
            let id = registry
                .by_key
                .get(&(owner.clone(), key.to_string()))?
                .clone();
            registry.live(&id, &owner, now, idle)
        });
        let entry = match found {
            Some(entry) => entry,
            None => {
                self.make_room(&mut registry, now);
                let id = uuid::Uuid::now_v7().to_string();
                let cell = Arc::new(RwLock::new(principal.clone()));
                let context = self.context_for(&cell);
                let entry = Arc::new(SessionEntry::new(id.clone(), owner.clone(), cell, context));
                registry.by_id.insert(id.clone(), Arc::clone(&entry));
                registry.by_key.insert((owner, key.to_string()), id);
                entry
            }
        };
        entry.enter(principal, now);
        Session {
            principal: principal.clone(),
            entry,
            reads_view_types: false,
        }
    }

    /// A context made from the engine's, whose catalog shows what the
    /// session's user (in `principal`) may see.
    fn context_for(&self, principal: &Arc<RwLock<Principal>>) -> SessionContext {
        let base = self.base.state();
        let viewer = Viewer::new(
            Arc::clone(principal),
            Arc::clone(&self.privileges),
            self.base.clone(),
        );
        let catalogs = VisibleCatalogs::new(Arc::clone(base.catalog_list()), viewer.clone());
        let state = SessionStateBuilder::new_from_existing(base.clone())
            .with_catalog_list(Arc::new(catalogs))
            .build();
        let context = SessionContext::new_with_state(state);
        VisibleLineageWalk::register_all(&context, &base, &viewer);
        context
    }

    /// The live session `id` of `principal`, if there is one.
    pub(crate) fn find(&self, principal: &Principal, id: &str) -> Option<Session> {
        let now = Instant::now();
        let entry = self
            .registry()
            .live(id, principal.name(), now, self.limits.idle_timeout)?;
        entry.enter(principal, now);
        Some(Session {
            principal: principal.clone(),
            entry,
            reads_view_types: false,
        })
    }

    /// Ends `session`: its settings are forgotten, and the next request of
    /// its client opens a new one.
    pub(crate) fn close(&self, session: &Session) {
        self.registry().remove(&session.entry.id);
    }

    /// The number of live sessions.
    #[cfg(test)]
    pub(crate) fn count(&self) -> usize {
        self.registry().by_id.len()
    }

    /// Ends idle sessions, and the least recently used one while there are
    /// as many as allowed.
    fn make_room(&self, registry: &mut Registry, now: Instant) {
        let idle = self.limits.idle_timeout;
        let ended: Vec<String> = registry
            .by_id
            .values()
            .filter(|entry| entry.idle_for(now) >= idle)
            .map(|entry| entry.id.clone())
            .collect();
        for id in ended {
            registry.remove(&id);
        }
        while registry.by_id.len() >= self.limits.max_sessions.max(1) {
            let oldest = registry
                .by_id
                .values()
                .max_by_key(|entry| entry.idle_for(now))
                .map(|entry| entry.id.clone());
            match oldest {
                Some(id) => registry.remove(&id),
                None => break,
            }
        }
    }
}

/// Which identity function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Identity {
    /// `current_user()` (also `current_user` and `session_user` without
    /// parentheses, as in Postgres).
    User,
    /// `current_role()`: the first of the user's roles, or NULL.
    Role,
}

/// `current_user()` / `current_role()` of one session.
#[derive(Debug)]
struct IdentityFunction {
    which: Identity,
    signature: Signature,
    principal: Arc<RwLock<Principal>>,
}

impl IdentityFunction {
    fn new(which: Identity, principal: Arc<RwLock<Principal>>) -> Self {
        Self {
            which,
            signature: Signature::nullary(Volatility::Stable),
            principal,
        }
    }
}

impl PartialEq for IdentityFunction {
    fn eq(&self, other: &Self) -> bool {
        self.which == other.which && Arc::ptr_eq(&self.principal, &other.principal)
    }
}

impl Eq for IdentityFunction {}

impl std::hash::Hash for IdentityFunction {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.which.hash(state);
    }
}

impl ScalarUDFImpl for IdentityFunction {
    fn name(&self) -> &str {
        match self.which {
            Identity::User => "current_user",
            Identity::Role => "current_role",
        }
    }

    fn aliases(&self) -> &[String] {
        static SESSION_USER: std::sync::LazyLock<Vec<String>> =
            std::sync::LazyLock::new(|| vec!["session_user".to_string()]);
        match self.which {
            Identity::User => SESSION_USER.as_slice(),
            Identity::Role => &[],
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> datafusion::error::Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(
        &self,
        _args: ScalarFunctionArgs,
    ) -> datafusion::error::Result<ColumnarValue> {
        let principal = self.principal.read().unwrap_or_else(|p| p.into_inner());
        let value = match self.which {
            Identity::User => Some(principal.name().to_string()),
            Identity::Role => principal.current_role().map(str::to_string),
        };
        Ok(ColumnarValue::Scalar(ScalarValue::Utf8(value)))
    }
}

/// The engine's calls on sessions, for the transport.
impl super::Engine {
    /// The session of `principal` that `cookie` (a Flight session id) or
    /// else `key` (the transport's name for the client: its login or its
    /// connection) stands for; a new one with the server's settings if
    /// there is none.
    pub fn open_session(&self, principal: &Principal, cookie: Option<&str>, key: &str) -> Session {
        self.sessions.open(principal, cookie, key)
    }

    /// The live session `id` of `principal`, if there is one.
    pub fn find_session(&self, principal: &Principal, id: &str) -> Option<Session> {
        self.sessions.find(principal, id)
    }

    /// Ends `session`: its settings are forgotten.
    pub fn close_session(&self, session: &Session) {
        self.sessions.close(session);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sessions(limits: SessionLimits) -> Sessions {
        Sessions::new(SessionContext::new(), Arc::default(), limits)
    }

    #[test]
    fn a_session_is_found_by_its_key_or_cookie_and_only_by_its_owner() {
        let sessions = sessions(SessionLimits::default());
        let alice = Principal::user("alice", vec![]);
        let bob = Principal::user("bob", vec![]);
        let first = sessions.open(&alice, None, "conn:1");
        assert_eq!(sessions.open(&alice, None, "conn:1").id(), first.id());
        assert_eq!(
            sessions.open(&alice, Some(first.id()), "conn:2").id(),
            first.id()
        );
        assert_ne!(sessions.open(&alice, None, "conn:3").id(), first.id());
        // Bob presenting Alice's key or cookie gets a session of his own.
        let his = sessions.open(&bob, Some(first.id()), "conn:1");
        assert_ne!(his.id(), first.id());
        assert!(sessions.find(&bob, first.id()).is_none());
        assert!(sessions.find(&alice, first.id()).is_some());
        sessions.close(&first);
        assert!(sessions.find(&alice, first.id()).is_none());
        assert_ne!(sessions.open(&alice, None, "conn:1").id(), first.id());
    }

    #[test]
    fn idle_sessions_end_and_the_number_is_capped() {
        let sessions = sessions(SessionLimits {
            idle_timeout: Duration::from_millis(100),
            max_sessions: 3,
            ..SessionLimits::default()
        });
        let alice = Principal::user("alice", vec![]);
        let first = sessions.open(&alice, None, "a");
        std::thread::sleep(Duration::from_millis(150));
        assert!(sessions.find(&alice, first.id()).is_none(), "idle too long");
        assert_ne!(sessions.open(&alice, None, "a").id(), first.id());
        for key in ["b", "c", "d", "e"] {
            sessions.open(&alice, None, key);
        }
        assert_eq!(sessions.count(), 3);
    }
}
