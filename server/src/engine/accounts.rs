//! Running identity statements: the checks, then the change through the
//! [`Authenticator`](crate::auth::Authenticator), and a refusal that names
//! the object and what to do.

use std::sync::Arc;

use arrow::array::{RecordBatch, StringArray};
use datafusion::catalog::memory::MemorySourceConfig;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;

use super::Engine;
use super::admin::AdminStatement;
use super::error::{EngineError, EngineResult};
use crate::auth::AuthError;
use crate::catalog::IdentityChange;
use crate::identity::Principal;

impl Engine {
    /// Runs an identity statement for `principal`; returns its result.
    pub(super) async fn run_admin(
        &self,
        statement: &AdminStatement,
        principal: &Principal,
    ) -> EngineResult<Arc<dyn ExecutionPlan>> {
        if !statement.allowed(principal) {
            return Err(EngineError::PermissionDenied(format!(
                "only members of the role 'admin' may run {}; ask an admin",
                statement.recorded_text()
            )));
        }
        let auth = self.auth.as_ref().ok_or_else(|| {
            EngineError::NotSupported(
                "users, roles and tokens need the catalog of a state folder".into(),
            )
        })?;
        let nothing =
            || -> Arc<dyn ExecutionPlan> { Arc::new(EmptyExec::new(statement.result_schema())) };
        use AdminStatement as S;
        let change = match statement {
            S::CreateUser { name, password } => auth.create_user(name, &password.0).await,
            S::AlterUserPassword { name, password } => auth.set_password(name, &password.0).await,
            S::DropUser { name, if_exists } => {
                auth.drop_user(name).await.map(|c| forgive(c, *if_exists))
            }
            S::CreateRole { name } => auth.create_role(name).await,
            S::DropRole { name, if_exists } => {
                auth.drop_role(name).await.map(|c| forgive(c, *if_exists))
            }
            S::GrantRole { role, user } => auth.grant_role(role, user).await,
            S::RevokeRole { role, user } => auth.revoke_role(role, user).await,
            S::DropToken { name, if_exists } => auth
                .revoke_token(name)
                .await
                .map(|c| forgive(c, *if_exists)),
            S::CreateToken {
                name,
                user,
                lifetime,
            } => {
                let user = user.as_deref().unwrap_or(principal.name());
                let made = auth
                    .create_token(name, user, *lifetime)
                    .await
                    .map_err(from_auth)?;
                let secret = match made {
                    Ok(secret) => secret,
                    Err(change) => return Err(refused(statement, change)),
                };
                let expires_at = secret
                    .expires_at
                    .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
                let batch = RecordBatch::try_new(
                    statement.result_schema(),
                    vec![
                        Arc::new(StringArray::from(vec![secret.name])),
                        Arc::new(StringArray::from(vec![secret.user])),
                        Arc::new(StringArray::from(vec![secret.secret])),
                        Arc::new(StringArray::from(vec![expires_at])),
                    ],
                )
                .map_err(|e| EngineError::Internal(e.to_string()))?;
                let exec: Arc<dyn ExecutionPlan> =
                    MemorySourceConfig::try_new_from_batches(batch.schema(), vec![batch])
                        .map_err(|e| EngineError::Internal(e.to_string()))?;
                return Ok(exec);
            }
        };
        match change.map_err(from_auth)? {
            IdentityChange::Done => {
                // Memberships decide what a view's owner may read.
                self.reload_privileges().await?;
                match statement {
                    S::DropUser { name, .. } => self.forget_user_limits(name, false).await?,
                    S::DropRole { name, .. } => self.forget_user_limits(name, true).await?,
                    _ => {}
                }
                Ok(nothing())
            }
            change => Err(refused(statement, change)),
        }
    }
}

/// `IF EXISTS`: a missing object is not an error.
fn forgive(change: IdentityChange, if_exists: bool) -> IdentityChange {
    match change {
        IdentityChange::NoSuchUser | IdentityChange::NoSuchRole | IdentityChange::NoSuchToken
            if if_exists =>
        {
            IdentityChange::Done
        }
        other => other,
    }
}

fn from_auth(err: AuthError) -> EngineError {
    match err {
        AuthError::Catalog(e) => EngineError::Unavailable(format!("the catalog: {e}")),
        other => EngineError::Internal(other.to_string()),
    }
}

/// Why nothing changed, naming the object and what to do.
fn refused(statement: &AdminStatement, change: IdentityChange) -> EngineError {
    use AdminStatement as S;
    let (user, role, token) = match statement {
        S::CreateUser { name, .. }
        | S::AlterUserPassword { name, .. }
        | S::DropUser { name, .. } => (name.as_str(), "", ""),
        S::CreateRole { name } | S::DropRole { name, .. } => ("", name.as_str(), ""),
        S::GrantRole { role, user } | S::RevokeRole { role, user } => {
            (user.as_str(), role.as_str(), "")
        }
        S::CreateToken { name, user, .. } => (user.as_deref().unwrap_or(""), "", name.as_str()),
        S::DropToken { name, .. } => ("", "", name.as_str()),
    };
    match change {
        IdentityChange::Done => EngineError::Internal("a done change reported as refused".into()),
        IdentityChange::UserExists => EngineError::AlreadyExists(format!(
            "user '{user}' exists; change its password with ALTER USER {user} WITH PASSWORD '...'"
        )),
        IdentityChange::RoleExists => EngineError::AlreadyExists(format!("role '{role}' exists")),
        IdentityChange::TokenExists => EngineError::AlreadyExists(format!(
            "a live token named '{token}' exists; pick another name, or DROP TOKEN {token} first"
        )),
        IdentityChange::NoSuchUser => EngineError::NoSuchObject(format!(
            "user '{user}' does not exist; the users are listed in system.users"
        )),
        IdentityChange::NoSuchRole => EngineError::NoSuchObject(format!(
            "role '{role}' does not exist; the roles are listed in system.roles"
        )),
        IdentityChange::NoSuchToken => EngineError::NoSuchObject(format!(
            "no live token named '{token}'; the tokens are listed in system.tokens"
        )),
        IdentityChange::BuiltInRole => EngineError::PermissionDenied(
            "the role 'admin' is built in and cannot be dropped".into(),
        ),
        IdentityChange::LastAdmin => EngineError::Refused(format!(
            "'{user}' is the last member of the role 'admin'; make another user an admin first (GRANT admin TO name)"
        )),
    }
}
