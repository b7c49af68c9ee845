//! Slowing down failed logins: each failure for a user name, and each
//! failure from a peer address, makes the next password check for that
//! name or from that address wait longer (linear growth up to a cap).
//! The wait is an async sleep in the caller's task: other users and
//! peers are served meanwhile. Failures are forgotten after a quiet
//! period, and a user's after its next successful login.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How failed logins are slowed down.
#[derive(Debug, Clone, Copy)]
pub struct ThrottleOptions {
    /// The wait added per recent failure.
    pub step: Duration,
    /// The longest wait.
    pub max: Duration,
    /// How long after its last failure a name or address is forgiven.
    pub forget_after: Duration,
}

impl Default for ThrottleOptions {
    fn default() -> Self {
        Self {
            step: Duration::from_millis(200),
            max: Duration::from_secs(5),
            forget_after: Duration::from_secs(15 * 60),
        }
    }
}

#[derive(Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
}

#[derive(Hash, PartialEq, Eq, Clone)]
enum Key {
    User(String),
    Peer(IpAddr),
}

pub(crate) struct Throttle {
    failures: Mutex<HashMap<Key, Failures>>,
    options: ThrottleOptions,
}

impl Throttle {
    pub(crate) fn new(options: ThrottleOptions) -> Self {
        Self {
            failures: Mutex::new(HashMap::new()),
            options,
        }
    }

    fn keys(user: &str, peer: Option<IpAddr>) -> Vec<Key> {
        let mut keys = vec![Key::User(user.to_string())];
        keys.extend(peer.map(Key::Peer));
        keys
    }

    /// How long a password check for `user` from `peer` must wait.
    pub(crate) fn delay(&self, user: &str, peer: Option<IpAddr>) -> Duration {
        let now = Instant::now();
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        failures.retain(|_, f| now.duration_since(f.last) < self.options.forget_after);
        Self::keys(user, peer)
            .iter()
            .filter_map(|key| failures.get(key))
            .map(|f| {
                self.options
                    .step
                    .saturating_mul(f.count)
                    .min(self.options.max)
            })
            .max()
            .unwrap_or_default()
    }

    pub(crate) fn failed(&self, user: &str, peer: Option<IpAddr>) {
        let now = Instant::now();
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        for key in Self::keys(user, peer) {
            let entry = failures.entry(key).or_insert(Failures {
                count: 0,
                last: now,
            });
            entry.count = entry.count.saturating_add(1);
            entry.last = now;
        }
    }

    /// A successful login forgives the user name (not the address: one
    /// known account must not reset an address's guessing of others).
    pub(crate) fn succeeded(&self, user: &str) {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        failures.remove(&Key::User(user.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_grow_the_wait_per_name_and_address_up_to_a_cap() {
        let throttle = Throttle::new(ThrottleOptions {
            step: Duration::from_millis(10),
            max: Duration::from_millis(35),
            forget_after: Duration::from_secs(60),
        });
        let here: IpAddr = "10.0.0.1".parse().unwrap();
        let there: IpAddr = "10.0.0.2".parse().unwrap();
        assert_eq!(throttle.delay("alice", Some(here)), Duration::ZERO);
        throttle.failed("alice", Some(here));
        throttle.failed("alice", Some(here));
        assert_eq!(
            throttle.delay("alice", Some(there)),
            Duration::from_millis(20)
        );
        assert_eq!(throttle.delay("bob", Some(here)), Duration::from_millis(20));
        assert_eq!(throttle.delay("bob", Some(there)), Duration::ZERO);
        for _ in 0..10 {
            throttle.failed("alice", Some(here));
        }
        assert_eq!(throttle.delay("alice", None), Duration::from_millis(35));
        throttle.succeeded("alice");
        assert_eq!(throttle.delay("alice", Some(there)), Duration::ZERO);
        assert_eq!(
            throttle.delay("alice", Some(here)),
            Duration::from_millis(35)
        );
    }
}
