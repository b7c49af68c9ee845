//! Authentication: who a request comes from. The transport hands it the
//! `authorization` header and the peer address; it answers with a
//! [`Principal`] or refuses. It knows nothing of gRPC.
//!
//! Invariants:
//! - Only hashes are stored: passwords as argon2id, tokens as SHA-256.
//!   Session tokens live in memory only (a restart logs everyone out).
//! - A refusal never says which part of a credential was wrong.
//! - Failed password checks slow down later ones for that user name and
//!   that peer address, without blocking anyone else.
//! - A dropped user's sessions end at once; changed roles apply to its
//!   live sessions at once.

mod manage;
mod secrets;
mod sessions;
mod throttle;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use manage::{FirstAdmin, NewTokenSecret};
pub use secrets::Credential;
pub use throttle::ThrottleOptions;

use crate::catalog::{CatalogError, IdentityStore, TokenRecord};
use crate::identity::Principal;
use secrets::{API_TOKEN_PREFIX, password_matches, token_hash};
use sessions::Sessions;
use throttle::Throttle;

/// How authentication works on a server.
#[derive(Debug, Clone)]
pub struct AuthOptions {
    /// Whether credentials are required. Off, everyone is `anonymous` (and
    /// the server only listens on loopback unless told otherwise).
    pub enabled: bool,
    /// A session ends after this long without a call.
    pub session_idle_timeout: Duration,
    /// A session ends this long after its login, used or not.
    pub session_max_age: Duration,
    /// How failed logins are slowed down.
    pub throttle: ThrottleOptions,
}

impl Default for AuthOptions {
    fn default() -> Self {
        Self {
            enabled: false,
            session_idle_timeout: Duration::from_secs(60 * 60),
            session_max_age: Duration::from_secs(12 * 60 * 60),
            throttle: ThrottleOptions::default(),
        }
    }
}

/// Why a request is not let in, or an identity not changed.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No credential came with a request to a server that requires one.
    #[error(
        "this server requires authentication: log in with a user name and password (Handshake or an 'authorization: Basic' header), or send 'authorization: Bearer <token>'"
    )]
    Missing,
    /// The credential was not accepted (which part is not said).
    #[error(
        "authentication failed: the credentials were not accepted; log in again with a user name and password (sessions end after {idle} idle or {max} in all), or ask an admin for a new token"
    )]
    Rejected {
        /// The idle timeout, for the message.
        idle: String,
        /// The maximum session age, for the message.
        max: String,
    },
    /// The catalog could not be read or written.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// Hashing failed (an internal error).
    #[error("{0}")]
    Internal(String),
}

/// A request's principal, and the session token to send back when this
/// request logged in (a Basic credential).
#[derive(Debug, Clone)]
pub struct Authenticated {
    /// Who it is.
    pub principal: Principal,
    /// A session token to return as `authorization: Bearer ...`.
    pub session_token: Option<String>,
    /// A name for the login session the request belongs to (a hash of its
    /// token), so that its settings follow it; `None` for API tokens and
    /// without authentication.
    pub login: Option<String>,
}

/// Checks credentials against the catalog's users and tokens, and keeps
/// the sessions logins start.
pub struct Authenticator {
    identities: Arc<dyn IdentityStore>,
    options: AuthOptions,
    sessions: Sessions,
    throttle: Throttle,
    /// API tokens by hash, as last read from the catalog. Identity changes
    /// clear it (this server is the catalog's only writer while it runs).
    tokens: Mutex<HashMap<String, TokenRecord>>,
    /// Sessions of Basic credentials sent on ordinary calls, keyed by a
    /// salted hash of the credential, so that a client sending Basic on
    /// every call is checked with argon2 once, not on every call.
    basic_sessions: Mutex<HashMap<String, String>>,
    basic_salt: String,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    /// An authenticator over the users and tokens of `identities`.
    pub fn new(identities: Arc<dyn IdentityStore>, options: AuthOptions) -> Self {
        Self {
            identities,
            sessions: Sessions::new(options.session_idle_timeout, options.session_max_age),
            throttle: Throttle::new(options.throttle),
            options,
            tokens: Mutex::new(HashMap::new()),
            basic_sessions: Mutex::new(HashMap::new()),
            basic_salt: secrets::new_token(""),
        }
    }

    /// Whether credentials are required.
    pub fn is_enabled(&self) -> bool {
        self.options.enabled
    }

    fn rejected(&self) -> AuthError {
        AuthError::Rejected {
            idle: humantime::format_duration(self.options.session_idle_timeout).to_string(),
            max: humantime::format_duration(self.options.session_max_age).to_string(),
        }
    }

    /// Who sends `credential` from `peer`. Without authentication, always
    /// `anonymous`. A Basic credential starts (or reuses) a session.
    pub async fn authenticate(
        &self,
        credential: Option<Credential>,
        peer: Option<IpAddr>,
    ) -> Result<Authenticated, AuthError> {
        if !self.options.enabled {
            return Ok(Authenticated {
                principal: Principal::anonymous(),
                session_token: None,
                login: None,
            });
        }
        match credential {
            None => Err(AuthError::Missing),
            Some(Credential::Bearer(token)) => Ok(Authenticated {
                principal: self.bearer(&token).await?,
                session_token: None,
                login: (!token.starts_with(API_TOKEN_PREFIX)).then(|| token_hash(&token)),
            }),
            Some(Credential::Basic { user, password }) => {
                let key = token_hash(&format!("{}\0{user}\0{password}", self.basic_salt));
                let cached = self.basic_sessions().get(&key).cloned();
                if let Some(token) = cached
                    && let Some(principal) = self.sessions.resume(&token)
                {
                    return Ok(Authenticated {
                        principal,
                        session_token: None,
                        login: Some(token_hash(&token)),
                    });
                }
                let login = self.login(&user, &password, peer).await?;
                if let Some(token) = &login.session_token {
                    self.basic_sessions().insert(key, token.clone());
                }
                Ok(login)
            }
        }
    }

    fn basic_sessions(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.basic_sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Checks a user name and password (slowed down after failures) and
    /// starts a session.
    pub async fn login(
        &self,
        user: &str,
        password: &str,
        peer: Option<IpAddr>,
    ) -> Result<Authenticated, AuthError> {
        let delay = self.throttle.delay(user, peer);
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let record = self.identities.user(user.to_string()).await?;
        // An unknown user costs a hash check too, so timing does not tell
        // which names exist.
        let hash = record
            .as_ref()
            .map(|r| r.password_hash.clone())
            .unwrap_or_else(|| UNKNOWN_USER_HASH.clone());
        let password = password.to_string();
        let matches = tokio::task::spawn_blocking(move || password_matches(&password, &hash))
            .await
            .unwrap_or(false);
        match record {
            Some(record) if matches => {
                self.throttle.succeeded(user);
                let principal = Principal::user(record.name, record.roles);
                let token = self.sessions.start(principal.clone());
                Ok(Authenticated {
                    principal,
                    login: Some(token_hash(&token)),
                    session_token: Some(token),
                })
            }
            _ => {
                self.throttle.failed(user, peer);
                Err(self.rejected())
            }
        }
    }

    /// Who a bearer token (a session or an API token) stands for.
    async fn bearer(&self, token: &str) -> Result<Principal, AuthError> {
        if !token.starts_with(API_TOKEN_PREFIX) {
            return self.sessions.resume(token).ok_or_else(|| self.rejected());
        }
        let hash = token_hash(token);
        let cached = self.cached_tokens().get(&hash).cloned();
        let record = match cached {
            Some(record) => record,
            None => {
                let record = self
                    .identities
                    .token(hash.clone())
                    .await?
                    .ok_or_else(|| self.rejected())?;
                self.cached_tokens().insert(hash, record.clone());
                record
            }
        };
        if record.expires_at.is_some_and(|at| at <= chrono::Utc::now()) {
            return Err(self.rejected());
        }
        Ok(Principal::user(record.user, record.roles))
    }

    fn cached_tokens(&self) -> std::sync::MutexGuard<'_, HashMap<String, TokenRecord>> {
        self.tokens.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The hash of a random password nobody knows, checked against when the
/// user does not exist.
static UNKNOWN_USER_HASH: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    secrets::hash_password(&secrets::new_token("")).unwrap_or_default()
});
