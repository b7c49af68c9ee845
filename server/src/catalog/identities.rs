//! Identities in the catalog: users (with argon2id password hashes), roles,
//! role membership and API tokens (SHA-256 hashes). Secrets never enter
//! the catalog; hashing is the caller's (the `auth` layer's) job.

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};

use super::{CatalogResult, SqliteCatalog, now};
use crate::identity::ADMIN_ROLE;

/// A user as authentication needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    /// The name.
    pub name: String,
    /// The argon2id hash (a PHC string) of the password.
    pub password_hash: String,
    /// The roles the user is a member of, sorted.
    pub roles: Vec<String>,
}

/// A token being created.
#[derive(Debug, Clone)]
pub struct NewToken {
    /// Its name (unique among live tokens).
    pub name: String,
    /// The user it acts as.
    pub user: String,
    /// The SHA-256 hash of its secret, hex.
    pub hash: String,
    /// When it stops working, if ever.
    pub expires_at: Option<DateTime<Utc>>,
}

/// A live token (not revoked, its user exists), found by its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    /// Its name.
    pub name: String,
    /// The user it acts as.
    pub user: String,
    /// That user's roles, sorted.
    pub roles: Vec<String>,
    /// When it stops working, if ever.
    pub expires_at: Option<DateTime<Utc>>,
}

/// How a change of identities went: done, or why nothing changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentityChange {
    /// Stored.
    Done,
    /// A user of that name exists.
    UserExists,
    /// A role of that name exists.
    RoleExists,
    /// A live token of that name exists.
    TokenExists,
    /// No user of that name.
    NoSuchUser,
    /// No role of that name.
    NoSuchRole,
    /// No live token of that name.
    NoSuchToken,
    /// The built-in `admin` role cannot be dropped.
    BuiltInRole,
    /// The change would leave no user in the `admin` role.
    LastAdmin,
}

/// Users, roles and tokens, as the `auth` layer and admin statements read
/// and change them. Every call returns once stored.
#[async_trait::async_trait]
pub trait IdentityStore: Send + Sync + std::fmt::Debug {
    /// Creates a user with a password hash.
    async fn create_user(
        &self,
        name: String,
        password_hash: String,
    ) -> CatalogResult<IdentityChange>;
    /// Replaces a user's password hash.
    async fn set_password(
        &self,
        name: String,
        password_hash: String,
    ) -> CatalogResult<IdentityChange>;
    /// Drops a user, its role memberships, and revokes its tokens.
    async fn drop_user(&self, name: String) -> CatalogResult<IdentityChange>;
    /// A user with its roles.
    async fn user(&self, name: String) -> CatalogResult<Option<UserRecord>>;
    /// How many users exist.
    async fn user_count(&self) -> CatalogResult<u64>;
    /// Creates a role.
    async fn create_role(&self, name: String) -> CatalogResult<IdentityChange>;
    /// Drops a role (and its memberships).
    async fn drop_role(&self, name: String) -> CatalogResult<IdentityChange>;
    /// Makes `user` a member of `role` (idempotent).
    async fn grant_role(&self, role: String, user: String) -> CatalogResult<IdentityChange>;
    /// Ends `user`'s membership of `role` (idempotent).
    async fn revoke_role(&self, role: String, user: String) -> CatalogResult<IdentityChange>;
    /// Stores a new token's hash.
    async fn create_token(&self, token: NewToken) -> CatalogResult<IdentityChange>;
    /// Revokes the live token `name`.
    async fn revoke_token(&self, name: String) -> CatalogResult<IdentityChange>;
    /// The live token whose secret hashes to `hash`.
    async fn token(&self, hash: String) -> CatalogResult<Option<TokenRecord>>;
    /// Whether a role of that name exists.
    async fn role_exists(&self, name: String) -> CatalogResult<bool>;
}

#[async_trait::async_trait]
impl IdentityStore for SqliteCatalog {
    async fn create_user(
        &self,
        name: String,
        password_hash: String,
    ) -> CatalogResult<IdentityChange> {
        self.call(move |c| create_user(c, &name, &password_hash))
            .await
    }

    async fn set_password(
        &self,
        name: String,
        password_hash: String,
    ) -> CatalogResult<IdentityChange> {
        self.call(move |c| set_password(c, &name, &password_hash))
            .await
    }

    async fn drop_user(&self, name: String) -> CatalogResult<IdentityChange> {
        self.call(move |c| drop_user(c, &name)).await
    }

    async fn user(&self, name: String) -> CatalogResult<Option<UserRecord>> {
        self.call(move |c| user(c, &name)).await
    }

    async fn user_count(&self) -> CatalogResult<u64> {
        self.call(|c| c.query_row("SELECT count(*) FROM users", [], |row| row.get(0)))
            .await
    }

    async fn create_role(&self, name: String) -> CatalogResult<IdentityChange> {
        self.call(move |c| create_role(c, &name)).await
    }

    async fn drop_role(&self, name: String) -> CatalogResult<IdentityChange> {
        self.call(move |c| drop_role(c, &name)).await
    }

    async fn grant_role(&self, role: String, user: String) -> CatalogResult<IdentityChange> {
        self.call(move |c| grant_role(c, &role, &user)).await
    }

    async fn revoke_role(&self, role: String, user: String) -> CatalogResult<IdentityChange> {
        self.call(move |c| revoke_role(c, &role, &user)).await
    }

    async fn create_token(&self, token: NewToken) -> CatalogResult<IdentityChange> {
        self.call(move |c| create_token(c, &token)).await
    }

    async fn revoke_token(&self, name: String) -> CatalogResult<IdentityChange> {
        self.call(move |c| revoke_token(c, &name)).await
    }

    async fn token(&self, hash: String) -> CatalogResult<Option<TokenRecord>> {
        self.call(move |c| token(c, &hash)).await
    }

    async fn role_exists(&self, name: String) -> CatalogResult<bool> {
        self.call(move |c| role_exists(c, &name)).await
    }
}

fn exists(c: &Connection, sql: &str, name: &str) -> rusqlite::Result<bool> {
    c.query_row(sql, [name], |row| row.get(0))
}

fn user_exists(c: &Connection, name: &str) -> rusqlite::Result<bool> {
    exists(c, "SELECT count(*) > 0 FROM users WHERE name = ?1", name)
}

fn role_exists(c: &Connection, name: &str) -> rusqlite::Result<bool> {
    exists(c, "SELECT count(*) > 0 FROM roles WHERE name = ?1", name)
}

fn roles_of(c: &Connection, user: &str) -> rusqlite::Result<Vec<String>> {
    let mut statement =
        c.prepare_cached("SELECT role FROM role_members WHERE member = ?1 ORDER BY role")?;
    statement
        .query_map([user], |row| row.get(0))?
        .collect::<rusqlite::Result<Vec<String>>>()
}

fn admins(c: &Connection) -> rusqlite::Result<i64> {
    c.query_row(
        "SELECT count(*) FROM role_members WHERE role = ?1",
        [ADMIN_ROLE],
        |row| row.get(0),
    )
}

pub(crate) fn create_user(
    c: &mut Connection,
    name: &str,
    password_hash: &str,
) -> rusqlite::Result<IdentityChange> {
    let tx = c.transaction()?;
    if user_exists(&tx, name)? {
        return Ok(IdentityChange::UserExists);
    }
    let at = now();
    tx.execute(
        "INSERT INTO users (name, password_hash, created_at, password_changed_at) VALUES (?1, ?2, ?3, ?3)",
        params![name, password_hash, at],
    )?;
    tx.commit()?;
    Ok(IdentityChange::Done)
}

pub(crate) fn set_password(
    c: &mut Connection,
    name: &str,
    password_hash: &str,
) -> rusqlite::Result<IdentityChange> {
    let changed = c.execute(
        "UPDATE users SET password_hash = ?2, password_changed_at = ?3 WHERE name = ?1",
        params![name, password_hash, now()],
    )?;
    Ok(match changed {
        0 => IdentityChange::NoSuchUser,
        _ => IdentityChange::Done,
    })
}

pub(crate) fn drop_user(c: &mut Connection, name: &str) -> rusqlite::Result<IdentityChange> {
    let tx = c.transaction()?;
    if !user_exists(&tx, name)? {
        return Ok(IdentityChange::NoSuchUser);
    }
    if roles_of(&tx, name)?.iter().any(|r| r == ADMIN_ROLE) && admins(&tx)? <= 1 {
        return Ok(IdentityChange::LastAdmin);
    }
    tx.execute(
        "UPDATE tokens SET revoked_at = ?2 WHERE user_name = ?1 AND revoked_at IS NULL",
        params![name, now()],
    )?;
    tx.execute("DELETE FROM role_members WHERE member = ?1", [name])?;
    tx.execute("DELETE FROM users WHERE name = ?1", [name])?;
    tx.commit()?;
    Ok(IdentityChange::Done)
}

pub(crate) fn user(c: &mut Connection, name: &str) -> rusqlite::Result<Option<UserRecord>> {
    let hash: Option<String> = c
        .query_row(
            "SELECT password_hash FROM users WHERE name = ?1",
            [name],
            |row| row.get(0),
        )
        .optional()?;
    let Some(password_hash) = hash else {
        return Ok(None);
    };
    Ok(Some(UserRecord {
        name: name.to_string(),
        password_hash,
        roles: roles_of(c, name)?,
    }))
}

pub(crate) fn create_role(c: &mut Connection, name: &str) -> rusqlite::Result<IdentityChange> {
    let tx = c.transaction()?;
    if role_exists(&tx, name)? {
        return Ok(IdentityChange::RoleExists);
    }
    tx.execute(
        "INSERT INTO roles (name, created_at) VALUES (?1, ?2)",
        params![name, now()],
    )?;
    tx.commit()?;
    Ok(IdentityChange::Done)
}

pub(crate) fn drop_role(c: &mut Connection, name: &str) -> rusqlite::Result<IdentityChange> {
    if name == ADMIN_ROLE {
        return Ok(IdentityChange::BuiltInRole);
    }
    let tx = c.transaction()?;
    if !role_exists(&tx, name)? {
        return Ok(IdentityChange::NoSuchRole);
    }
    tx.execute("DELETE FROM role_members WHERE role = ?1", [name])?;
    tx.execute("DELETE FROM roles WHERE name = ?1", [name])?;
    tx.commit()?;
    Ok(IdentityChange::Done)
}

pub(crate) fn grant_role(
    c: &mut Connection,
    role: &str,
    user: &str,
) -> rusqlite::Result<IdentityChange> {
    let tx = c.transaction()?;
    if !role_exists(&tx, role)? {
        return Ok(IdentityChange::NoSuchRole);
    }
    if !user_exists(&tx, user)? {
        return Ok(IdentityChange::NoSuchUser);
    }
    tx.execute(
        "INSERT OR IGNORE INTO role_members (role, member, granted_at) VALUES (?1, ?2, ?3)",
        params![role, user, now()],
    )?;
    tx.commit()?;
    Ok(IdentityChange::Done)
}

pub(crate) fn revoke_role(
    c: &mut Connection,
    role: &str,
    user: &str,
) -> rusqlite::Result<IdentityChange> {
    let tx = c.transaction()?;
    if !role_exists(&tx, role)? {
        return Ok(IdentityChange::NoSuchRole);
    }
    if !user_exists(&tx, user)? {
        return Ok(IdentityChange::NoSuchUser);
    }
    let member = roles_of(&tx, user)?.iter().any(|r| r == role);
    if role == ADMIN_ROLE && member && admins(&tx)? <= 1 {
        return Ok(IdentityChange::LastAdmin);
    }
    tx.execute(
        "DELETE FROM role_members WHERE role = ?1 AND member = ?2",
        params![role, user],
    )?;
    tx.commit()?;
    Ok(IdentityChange::Done)
}

pub(crate) fn create_token(
    c: &mut Connection,
    token: &NewToken,
) -> rusqlite::Result<IdentityChange> {
    let tx = c.transaction()?;
    if !user_exists(&tx, &token.user)? {
        return Ok(IdentityChange::NoSuchUser);
    }
    let taken = exists(
        &tx,
        "SELECT count(*) > 0 FROM tokens WHERE name = ?1 AND revoked_at IS NULL",
        &token.name,
    )?;
    if taken {
        return Ok(IdentityChange::TokenExists);
    }
    tx.execute(
        "INSERT INTO tokens (name, user_name, hash, created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            token.name,
            token.user,
            token.hash,
            now(),
            token.expires_at.map(time_text)
        ],
    )?;
    tx.commit()?;
    Ok(IdentityChange::Done)
}

pub(crate) fn revoke_token(c: &mut Connection, name: &str) -> rusqlite::Result<IdentityChange> {
    let changed = c.execute(
        "UPDATE tokens SET revoked_at = ?2 WHERE name = ?1 AND revoked_at IS NULL",
        params![name, now()],
    )?;
    Ok(match changed {
        0 => IdentityChange::NoSuchToken,
        _ => IdentityChange::Done,
    })
}

pub(crate) fn token(c: &mut Connection, hash: &str) -> rusqlite::Result<Option<TokenRecord>> {
    let found: Option<(String, String, Option<String>)> = c
        .query_row(
            "SELECT t.name, t.user_name, t.expires_at FROM tokens t JOIN users u ON u.name = t.user_name \
             WHERE t.hash = ?1 AND t.revoked_at IS NULL",
            [hash],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
        )
        .optional()?;
    let Some((name, user, expires_at)) = found else {
        return Ok(None);
    };
    let expires_at = expires_at.and_then(|text| {
        DateTime::parse_from_rfc3339(&text)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    });
    Ok(Some(TokenRecord {
        roles: roles_of(c, &user)?,
        name,
        user,
        expires_at,
    }))
}

fn time_text(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The shared test suite every `IdentityStore` must pass.
#[cfg(test)]
pub(crate) mod suite {
    use super::*;

    pub(crate) async fn exercise(store: &dyn IdentityStore) {
        use IdentityChange::*;
        let s = |v: &str| v.to_string();
        assert_eq!(store.user_count().await.unwrap(), 0);
        assert_eq!(store.create_user(s("alice"), s("h1")).await.unwrap(), Done);
        assert_eq!(
            store.create_user(s("alice"), s("h2")).await.unwrap(),
            UserExists
        );
        assert_eq!(store.create_user(s("bob"), s("hb")).await.unwrap(), Done);
        assert_eq!(store.user_count().await.unwrap(), 2);
        assert_eq!(store.set_password(s("alice"), s("h3")).await.unwrap(), Done);
        assert_eq!(
            store.set_password(s("carol"), s("h")).await.unwrap(),
            NoSuchUser
        );
        assert_eq!(store.create_role(s("analysts")).await.unwrap(), Done);
        assert_eq!(store.create_role(s("analysts")).await.unwrap(), RoleExists);
        assert_eq!(
            store.grant_role(s("analysts"), s("alice")).await.unwrap(),
            Done
        );
        assert_eq!(
            store.grant_role(s("analysts"), s("alice")).await.unwrap(),
            Done
        );
        assert_eq!(
            store.grant_role(s("nope"), s("alice")).await.unwrap(),
            NoSuchRole
        );
        assert_eq!(
            store.grant_role(s("analysts"), s("carol")).await.unwrap(),
            NoSuchUser
        );
        assert_eq!(
            store.grant_role(s(ADMIN_ROLE), s("alice")).await.unwrap(),
            Done
        );
        let alice = store.user(s("alice")).await.unwrap().unwrap();
        assert_eq!(alice.password_hash, "h3");
        assert_eq!(alice.roles, vec![s(ADMIN_ROLE), s("analysts")]);
        assert_eq!(store.user(s("carol")).await.unwrap(), None);
        // The last admin stays.
        assert_eq!(store.drop_role(s(ADMIN_ROLE)).await.unwrap(), BuiltInRole);
        assert_eq!(store.drop_user(s("alice")).await.unwrap(), LastAdmin);
        assert_eq!(
            store.revoke_role(s(ADMIN_ROLE), s("alice")).await.unwrap(),
            LastAdmin
        );

        let token = |name: &str, hash: &str| NewToken {
            name: s(name),
            user: s("bob"),
            hash: s(hash),
            expires_at: None,
        };
        assert_eq!(store.create_token(token("etl", "x1")).await.unwrap(), Done);
        assert_eq!(
            store.create_token(token("etl", "x2")).await.unwrap(),
            TokenExists
        );
        let found = store.token(s("x1")).await.unwrap().unwrap();
        assert_eq!((found.name.as_str(), found.user.as_str()), ("etl", "bob"));
        assert_eq!(store.token(s("x9")).await.unwrap(), None);
        assert_eq!(store.revoke_token(s("etl")).await.unwrap(), Done);
        assert_eq!(store.revoke_token(s("etl")).await.unwrap(), NoSuchToken);
        assert_eq!(store.token(s("x1")).await.unwrap(), None);
        // The name is free again once revoked; dropping the user revokes it.
        assert_eq!(store.create_token(token("etl", "x3")).await.unwrap(), Done);
        assert_eq!(store.drop_user(s("bob")).await.unwrap(), Done);
        assert_eq!(store.token(s("x3")).await.unwrap(), None);
        assert_eq!(store.drop_role(s("analysts")).await.unwrap(), Done);
        assert_eq!(
            store.user(s("alice")).await.unwrap().unwrap().roles,
            vec![s(ADMIN_ROLE)]
        );
    }

    pub(crate) async fn after_reopening(store: &dyn IdentityStore) {
        let alice = store.user("alice".to_string()).await.unwrap().unwrap();
        assert_eq!(alice.roles, vec![ADMIN_ROLE.to_string()]);
        assert_eq!(store.user_count().await.unwrap(), 1);
    }
}
