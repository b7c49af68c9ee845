//! Sessions: what a login hands out. A session token is a random secret
//! kept only in memory (as its hash), so a restart logs everyone out; it
//! ends after an idle time or a maximum age, or when its user changes.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::secrets::{SESSION_PREFIX, new_token, token_hash};
use crate::identity::Principal;

struct Session {
    principal: Principal,
    started: Instant,
    last_used: Instant,
}

/// The live sessions of a server.
pub(crate) struct Sessions {
    by_hash: Mutex<HashMap<String, Session>>,
    idle_timeout: Duration,
    max_age: Duration,
}

impl Sessions {
    pub(crate) fn new(idle_timeout: Duration, max_age: Duration) -> Self {
        Self {
            by_hash: Mutex::new(HashMap::new()),
            idle_timeout,
            max_age,
        }
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.by_hash.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts a session for `principal`; returns its token.
    pub(crate) fn start(&self, principal: Principal) -> String {
        let token = new_token(SESSION_PREFIX);
        let now = Instant::now();
        let mut sessions = self.sessions();
        // Ended sessions are swept at each login, so the map stays small.
        sessions.retain(|_, s| self.alive(s, now));
        sessions.insert(
            token_hash(&token),
            Session {
                principal,
                started: now,
                last_used: now,
            },
        );
        token
    }

    fn alive(&self, session: &Session, now: Instant) -> bool {
        now.duration_since(session.last_used) < self.idle_timeout
            && now.duration_since(session.started) < self.max_age
    }

    /// The principal of the live session `token`, marking it used.
    pub(crate) fn resume(&self, token: &str) -> Option<Principal> {
        let hash = token_hash(token);
        let now = Instant::now();
        let mut sessions = self.sessions();
        let session = sessions.get_mut(&hash)?;
        if !self.alive(session, now) {
            sessions.remove(&hash);
            return None;
        }
        session.last_used = now;
        Some(session.principal.clone())
    }

    /// Ends every session of `user`.
    pub(crate) fn end_user(&self, user: &str) {
        self.sessions().retain(|_, s| s.principal.name() != user);
    }

    /// Gives the sessions of `user` its new roles.
    pub(crate) fn set_roles(&self, user: &str, roles: &[String]) {
        for session in self.sessions().values_mut() {
            if session.principal.name() == user {
                session.principal = Principal::user(user, roles.to_vec());
            }
        }
    }

    /// The users with live sessions.
    pub(crate) fn users(&self) -> Vec<String> {
        let mut users: Vec<String> = self
            .sessions()
            .values()
            .map(|s| s.principal.name().to_string())
            .collect();
        users.sort();
        users.dedup();
        users
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_end_when_idle_too_long_or_too_old() {
        let sessions = Sessions::new(Duration::from_millis(200), Duration::from_millis(500));
        let alice = Principal::user("alice", vec![]);
        let token = sessions.start(alice.clone());
        assert_eq!(sessions.resume(&token), Some(alice.clone()));
        assert_eq!(sessions.resume("tarn_s_nope"), None);
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(sessions.resume(&token), None, "idle");

        let token = sessions.start(alice.clone());
        for _ in 0..6 {
            std::thread::sleep(Duration::from_millis(100));
            let _ = sessions.resume(&token);
        }
        assert_eq!(sessions.resume(&token), None, "too old though used");

        let token = sessions.start(alice);
        sessions.set_roles("alice", &["analysts".to_string()]);
        assert_eq!(
            sessions.resume(&token).unwrap().roles(),
            ["analysts".to_string()]
        );
        sessions.end_user("alice");
        assert_eq!(sessions.resume(&token), None);
    }
}
