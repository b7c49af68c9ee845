//! Changing identities: users, roles and tokens, through the catalog,
//! keeping live sessions and cached tokens in step with every change.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::secrets::{API_TOKEN_PREFIX, hash_password, new_token, token_hash};
use super::{AuthError, Authenticator};
use crate::catalog::{IdentityChange, NewToken};
use crate::identity::ADMIN_ROLE;

/// A token just made: its secret is shown once, then only its hash exists.
#[derive(Clone)]
pub struct NewTokenSecret {
    /// The token's name.
    pub name: String,
    /// The user it acts as.
    pub user: String,
    /// The secret to send as `authorization: Bearer <secret>`.
    pub secret: String,
    /// When it stops working, if ever.
    pub expires_at: Option<DateTime<Utc>>,
}

impl std::fmt::Debug for NewTokenSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NewTokenSecret({}, {}, ***)", self.name, self.user)
    }
}

impl Authenticator {
    async fn hashed(password: &str) -> Result<String, AuthError> {
        let password = password.to_string();
        tokio::task::spawn_blocking(move || hash_password(&password))
            .await
            .map_err(|e| AuthError::Internal(format!("hashing a password failed: {e}")))?
            .map_err(AuthError::Internal)
    }

    /// Forgets cached tokens (their users or roles may have changed).
    fn identities_changed(&self) {
        self.cached_tokens().clear();
    }

    async fn refresh_roles(&self, user: &str) -> Result<(), AuthError> {
        self.identities_changed();
        match self.identities.user(user.to_string()).await? {
            Some(record) => self.sessions.set_roles(user, &record.roles),
            None => self.sessions.end_user(user),
        }
        Ok(())
    }

    /// Whether a user (`role` false) or a role of that name exists.
    pub async fn exists(&self, name: &str, role: bool) -> Result<bool, AuthError> {
        let name = name.to_string();
        Ok(match role {
            true => self.identities.role_exists(name).await?,
            false => self.identities.user(name).await?.is_some(),
        })
    }

    /// Creates a user with a password.
    pub async fn create_user(
        &self,
        name: &str,
        password: &str,
    ) -> Result<IdentityChange, AuthError> {
        let hash = Self::hashed(password).await?;
        Ok(self.identities.create_user(name.to_string(), hash).await?)
    }

    /// Sets a user's password. The old password stops working at once (also
    /// for clients that send Basic on every call); sessions already logged
    /// in go on until they end (idle or maximum age) — the session that
    /// changes its own password keeps working. `DROP USER` ends them all.
    pub async fn set_password(
        &self,
        name: &str,
        password: &str,
    ) -> Result<IdentityChange, AuthError> {
        let hash = Self::hashed(password).await?;
        let change = self.identities.set_password(name.to_string(), hash).await?;
        if change == IdentityChange::Done {
            self.basic_sessions().clear();
        }
        Ok(change)
    }

    /// Drops a user: its sessions end and its tokens stop working at once.
    pub async fn drop_user(&self, name: &str) -> Result<IdentityChange, AuthError> {
        let change = self.identities.drop_user(name.to_string()).await?;
        if change == IdentityChange::Done {
            self.identities_changed();
            self.sessions.end_user(name);
        }
        Ok(change)
    }

    /// Creates a role.
    pub async fn create_role(&self, name: &str) -> Result<IdentityChange, AuthError> {
        Ok(self.identities.create_role(name.to_string()).await?)
    }

    /// Drops a role; its members' sessions lose it at once.
    pub async fn drop_role(&self, name: &str) -> Result<IdentityChange, AuthError> {
        let change = self.identities.drop_role(name.to_string()).await?;
        if change == IdentityChange::Done {
            for user in self.sessions.users() {
                self.refresh_roles(&user).await?;
            }
        }
        Ok(change)
    }

    /// Makes `user` a member of `role`.
    pub async fn grant_role(&self, role: &str, user: &str) -> Result<IdentityChange, AuthError> {
        let change = self
            .identities
            .grant_role(role.to_string(), user.to_string())
            .await?;
        if change == IdentityChange::Done {
            self.refresh_roles(user).await?;
        }
        Ok(change)
    }

    /// Ends `user`'s membership of `role`.
    pub async fn revoke_role(&self, role: &str, user: &str) -> Result<IdentityChange, AuthError> {
        let change = self
            .identities
            .revoke_role(role.to_string(), user.to_string())
            .await?;
        if change == IdentityChange::Done {
            self.refresh_roles(user).await?;
        }
        Ok(change)
    }

    /// Makes an API token for `user`, valid for `lifetime` (or until
    /// revoked). The secret is in the answer and nowhere else.
    pub async fn create_token(
        &self,
        name: &str,
        user: &str,
        lifetime: Option<Duration>,
    ) -> Result<Result<NewTokenSecret, IdentityChange>, AuthError> {
        let secret = new_token(API_TOKEN_PREFIX);
        let expires_at = match lifetime {
            Some(lifetime) => Some(
                chrono::Duration::from_std(lifetime)
                    .ok()
                    .and_then(|d| Utc::now().checked_add_signed(d))
                    .ok_or_else(|| {
                        AuthError::Internal("the token's lifetime is too long".into())
                    })?,
            ),
            None => None,
        };
        let change = self
            .identities
            .create_token(NewToken {
                name: name.to_string(),
                user: user.to_string(),
                hash: token_hash(&secret),
                expires_at,
            })
            .await?;
        Ok(match change {
            IdentityChange::Done => Ok(NewTokenSecret {
                name: name.to_string(),
                user: user.to_string(),
                secret,
                expires_at,
            }),
            other => Err(other),
        })
    }

    /// Revokes a token: it stops working at once.
    pub async fn revoke_token(&self, name: &str) -> Result<IdentityChange, AuthError> {
        let change = self.identities.revoke_token(name.to_string()).await?;
        self.identities_changed();
        Ok(change)
    }

    /// At a start with authentication on: when no user exists, creates
    /// `admin` (in the `admin` role) with `password`. Returns whether it
    /// did; fails when there are no users and no password.
    pub async fn ensure_first_admin(&self, password: Option<&str>) -> Result<bool, FirstAdmin> {
        if self
            .identities
            .user_count()
            .await
            .map_err(AuthError::from)?
            > 0
        {
            return Ok(false);
        }
        let password = password.ok_or(FirstAdmin::NoPassword)?;
        if password.is_empty() {
            return Err(FirstAdmin::NoPassword);
        }
        self.create_user(ADMIN_ROLE, password).await?;
        self.grant_role(ADMIN_ROLE, ADMIN_ROLE).await?;
        Ok(true)
    }
}

/// Why the first admin could not be created.
#[derive(Debug, thiserror::Error)]
pub enum FirstAdmin {
    /// Authentication is on, no user exists, and no password was given.
    #[error(
        "authentication is on and no user exists yet: set TARN_ADMIN_PASSWORD, or pass --admin-password-file FILE, to create the user 'admin'; or create one first with 'tarn user create NAME --admin --state-dir DIR'"
    )]
    NoPassword,
    /// The catalog failed.
    #[error(transparent)]
    Auth(#[from] AuthError),
}
