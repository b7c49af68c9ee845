//! Privileges in the catalog: who may do what on which table (or on every
//! table of a schema), column lists of column-level grants, and the owner of
//! each table Tarn created. The engine keeps a copy in memory and checks
//! statements against it; these calls only store and read.

use rusqlite::{Connection, OptionalExtension, Transaction, params};

use super::policies::{self, MaskRecord, PolicyChange, RowFilterRecord};
use super::{CatalogResult, SqliteCatalog, now};

/// What a grant is on.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GrantObject {
    /// One table or view, by name.
    Table(String),
    /// Every table of a schema, now and later.
    Schema(String),
}

impl GrantObject {
    fn kind(&self) -> &'static str {
        match self {
            Self::Table(_) => "table",
            Self::Schema(_) => "schema",
        }
    }

    fn name(&self) -> &str {
        match self {
            Self::Table(name) | Self::Schema(name) => name,
        }
    }

    fn from_row(kind: &str, name: String) -> Self {
        match kind {
            "schema" => Self::Schema(name),
            _ => Self::Table(name),
        }
    }
}

/// One privilege of one grantee on one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantRecord {
    /// A user or a role.
    pub grantee: String,
    /// `SELECT`, `INSERT`, `CREATE`, `DROP`, `DELETE` or `UPDATE`.
    pub privilege: String,
    /// What it is on.
    pub object: GrantObject,
    /// For a column-level `SELECT`, the columns; `None` for all of them.
    pub columns: Option<Vec<String>>,
    /// Who granted it.
    pub granted_by: String,
}

/// How a change of privileges went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantChange {
    /// Stored.
    Done,
    /// No user or role of that name.
    NoSuchGrantee,
    /// There was no such grant to revoke.
    NothingToRevoke,
}

/// Privileges and table owners, as the engine stores and reloads them.
/// Every call returns once stored.
#[async_trait::async_trait]
pub trait GrantStore: Send + Sync + std::fmt::Debug {
    /// Stores a grant; a column-level `SELECT` adds its columns to those
    /// granted before, a whole-table one replaces them.
    async fn grant(&self, grant: GrantRecord) -> CatalogResult<GrantChange>;
    /// Takes a grant back; with `columns`, only those columns of a
    /// column-level `SELECT`.
    async fn revoke(
        &self,
        grantee: String,
        privilege: String,
        object: GrantObject,
        columns: Option<Vec<String>>,
    ) -> CatalogResult<GrantChange>;
    /// Every grant.
    async fn grants(&self) -> CatalogResult<Vec<GrantRecord>>;
    /// Records who owns `table` (its creator).
    async fn set_owner(&self, table: String, owner: String) -> CatalogResult<()>;
    /// The owner of every live table that has one: (table, owner).
    async fn owners(&self) -> CatalogResult<Vec<(String, String)>>;
    /// Every role membership: (user, role).
    async fn memberships(&self) -> CatalogResult<Vec<(String, String)>>;
    /// Stores a column mask (one per column).
    async fn create_mask(&self, mask: MaskRecord) -> CatalogResult<PolicyChange>;
    /// Stores a row filter.
    async fn create_row_filter(&self, filter: RowFilterRecord) -> CatalogResult<PolicyChange>;
    /// Drops the mask `name`.
    async fn drop_mask(&self, name: String) -> CatalogResult<PolicyChange>;
    /// Drops the row filter `name`.
    async fn drop_row_filter(&self, name: String) -> CatalogResult<PolicyChange>;
    /// Every mask.
    async fn masks(&self) -> CatalogResult<Vec<MaskRecord>>;
    /// Every row filter.
    async fn row_filters(&self) -> CatalogResult<Vec<RowFilterRecord>>;
    /// The salt of `mask_hash()`.
    async fn mask_salt(&self) -> CatalogResult<String>;
}

#[async_trait::async_trait]
impl GrantStore for SqliteCatalog {
    async fn grant(&self, grant: GrantRecord) -> CatalogResult<GrantChange> {
        self.call(move |c| store_grant(c, &grant)).await
    }

    async fn revoke(
        &self,
        grantee: String,
        privilege: String,
        object: GrantObject,
        columns: Option<Vec<String>>,
    ) -> CatalogResult<GrantChange> {
        self.call(move |c| revoke(c, &grantee, &privilege, &object, columns.as_deref()))
            .await
    }

    async fn grants(&self) -> CatalogResult<Vec<GrantRecord>> {
        self.call(grants).await
    }

    async fn set_owner(&self, table: String, owner: String) -> CatalogResult<()> {
        self.call(move |c| {
            c.execute(
                "UPDATE tables SET owner = ?2 WHERE name = ?1 AND dropped_at IS NULL",
                params![table, owner],
            )
            .map(|_| ())
        })
        .await
    }

    async fn owners(&self) -> CatalogResult<Vec<(String, String)>> {
        self.call(|c| {
            pairs(
                c,
                "SELECT name, owner FROM tables WHERE dropped_at IS NULL AND owner IS NOT NULL ORDER BY name",
            )
        })
        .await
    }

    async fn create_mask(&self, mask: MaskRecord) -> CatalogResult<PolicyChange> {
        self.call(move |c| policies::create_mask(c, &mask)).await
    }

    async fn create_row_filter(&self, filter: RowFilterRecord) -> CatalogResult<PolicyChange> {
        self.call(move |c| policies::create_row_filter(c, &filter))
            .await
    }

    async fn drop_mask(&self, name: String) -> CatalogResult<PolicyChange> {
        self.call(move |c| policies::drop_policy(c, "masks", &name))
            .await
    }

    async fn drop_row_filter(&self, name: String) -> CatalogResult<PolicyChange> {
        self.call(move |c| policies::drop_policy(c, "row_filters", &name))
            .await
    }

    async fn masks(&self) -> CatalogResult<Vec<MaskRecord>> {
        self.call(policies::masks).await
    }

    async fn row_filters(&self) -> CatalogResult<Vec<RowFilterRecord>> {
        self.call(policies::row_filters).await
    }

    async fn mask_salt(&self) -> CatalogResult<String> {
        self.call(policies::mask_salt).await
    }

    async fn memberships(&self) -> CatalogResult<Vec<(String, String)>> {
        self.call(|c| {
            pairs(
                c,
                "SELECT member, role FROM role_members ORDER BY member, role",
            )
        })
        .await
    }
}

fn pairs(c: &Connection, sql: &str) -> rusqlite::Result<Vec<(String, String)>> {
    let mut statement = c.prepare(sql)?;
    let rows = statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
    rows.collect()
}

fn grantee_exists(c: &Connection, name: &str) -> rusqlite::Result<bool> {
    c.query_row(
        "SELECT EXISTS (SELECT 1 FROM users WHERE name = ?1) OR EXISTS (SELECT 1 FROM roles WHERE name = ?1)",
        params![name],
        |row| row.get(0),
    )
}

fn columns_text(columns: &[String]) -> String {
    columns.join(",")
}

fn columns_of(text: &str) -> Option<Vec<String>> {
    (!text.is_empty()).then(|| text.split(',').map(str::to_string).collect())
}

/// The column list of the grant `key` names, if there is one ("" for a
/// whole-table grant).
fn granted_columns(
    tx: &Transaction,
    key: impl rusqlite::Params,
) -> rusqlite::Result<Option<String>> {
    tx.query_row(
        "SELECT columns FROM grants WHERE grantee = ?1 AND privilege = ?2 AND object_kind = ?3 AND object_name = ?4",
        key,
        |row| row.get(0),
    )
    .optional()
}

fn store_grant(c: &mut Connection, grant: &GrantRecord) -> rusqlite::Result<GrantChange> {
    if !grantee_exists(c, &grant.grantee)? {
        return Ok(GrantChange::NoSuchGrantee);
    }
    let tx = c.transaction()?;
    let key = params![
        grant.grantee,
        grant.privilege,
        grant.object.kind(),
        grant.object.name()
    ];
    let earlier = granted_columns(&tx, key)?;
    let columns = match (&grant.columns, earlier.as_deref()) {
        (None, _) | (_, Some("")) => String::new(),
        (Some(new), Some(old)) => {
            let mut all: Vec<String> = columns_of(old).unwrap_or_default();
            all.extend(new.iter().cloned());
            all.sort();
            all.dedup();
            columns_text(&all)
        }
        (Some(new), None) => columns_text(new),
    };
    tx.execute(
        "INSERT INTO grants (grantee, privilege, object_kind, object_name, columns, granted_by, granted_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
         ON CONFLICT (grantee, privilege, object_kind, object_name) DO UPDATE SET columns = ?5, granted_by = ?6, granted_at = ?7",
        params![
            grant.grantee,
            grant.privilege,
            grant.object.kind(),
            grant.object.name(),
            columns,
            grant.granted_by,
            now()
        ],
    )?;
    tx.commit()?;
    Ok(GrantChange::Done)
}

fn revoke(
    c: &mut Connection,
    grantee: &str,
    privilege: &str,
    object: &GrantObject,
    columns: Option<&[String]>,
) -> rusqlite::Result<GrantChange> {
    let tx = c.transaction()?;
    let key = params![grantee, privilege, object.kind(), object.name()];
    let earlier = granted_columns(&tx, key)?;
    let Some(earlier) = earlier else {
        return Ok(GrantChange::NothingToRevoke);
    };
    let remaining = match (columns, columns_of(&earlier)) {
        (Some(revoked), Some(granted)) => {
            let left: Vec<String> = granted
                .into_iter()
                .filter(|c| !revoked.contains(c))
                .collect();
            (!left.is_empty()).then_some(left)
        }
        // Revoking some columns of a whole-table grant leaves it whole, as
        // in Postgres; revoking the table takes everything.
        (Some(_), None) => return Ok(GrantChange::NothingToRevoke),
        (None, _) => None,
    };
    match remaining {
        Some(left) => tx.execute(
            "UPDATE grants SET columns = ?5 WHERE grantee = ?1 AND privilege = ?2 AND object_kind = ?3 AND object_name = ?4",
            params![grantee, privilege, object.kind(), object.name(), columns_text(&left)],
        )?,
        None => tx.execute(
            "DELETE FROM grants WHERE grantee = ?1 AND privilege = ?2 AND object_kind = ?3 AND object_name = ?4",
            key,
        )?,
    };
    tx.commit()?;
    Ok(GrantChange::Done)
}

fn grants(c: &mut Connection) -> rusqlite::Result<Vec<GrantRecord>> {
    let mut statement = c.prepare(
        "SELECT grantee, privilege, object_kind, object_name, columns, granted_by FROM grants \
         ORDER BY object_name, grantee, privilege",
    )?;
    let rows = statement.query_map([], |row| {
        let kind: String = row.get(2)?;
        let columns: String = row.get(4)?;
        Ok(GrantRecord {
            grantee: row.get(0)?,
            privilege: row.get(1)?,
            object: GrantObject::from_row(&kind, row.get(3)?),
            columns: columns_of(&columns),
            granted_by: row.get(5)?,
        })
    })?;
    rows.collect()
}

/// The shared test suite of a [`GrantStore`].
#[cfg(test)]
pub(crate) mod suite {
    use super::*;
    use crate::catalog::IdentityStore;

    pub(crate) async fn exercise<S: GrantStore + IdentityStore>(store: &S) {
        store
            .create_user("alice".into(), "hash".into())
            .await
            .unwrap();
        let select = |columns: Option<Vec<&str>>| GrantRecord {
            grantee: "alice".into(),
            privilege: "SELECT".into(),
            object: GrantObject::Table("nation".into()),
            columns: columns.map(|c| c.into_iter().map(String::from).collect()),
            granted_by: "admin".into(),
        };
        let mut nobody = select(None);
        nobody.grantee = "nobody".into();
        assert_eq!(
            store.grant(nobody).await.unwrap(),
            GrantChange::NoSuchGrantee
        );
        assert_eq!(
            store.grant(select(Some(vec!["b"]))).await.unwrap(),
            GrantChange::Done
        );
        store.grant(select(Some(vec!["a"]))).await.unwrap();
        assert_eq!(
            store.grants().await.unwrap(),
            vec![select(Some(vec!["a", "b"]))],
            "column grants add up"
        );
        let revoke = |columns: Option<Vec<&str>>| {
            store.revoke(
                "alice".into(),
                "SELECT".into(),
                GrantObject::Table("nation".into()),
                columns.map(|c| c.into_iter().map(String::from).collect()),
            )
        };
        assert_eq!(revoke(Some(vec!["a"])).await.unwrap(), GrantChange::Done);
        assert_eq!(store.grants().await.unwrap(), vec![select(Some(vec!["b"]))]);
        store.grant(select(None)).await.unwrap();
        assert_eq!(store.grants().await.unwrap(), vec![select(None)]);
        assert_eq!(revoke(None).await.unwrap(), GrantChange::Done);
        assert_eq!(revoke(None).await.unwrap(), GrantChange::NothingToRevoke);
        assert!(store.grants().await.unwrap().is_empty());
        let schema = GrantRecord {
            object: GrantObject::Schema("public".into()),
            ..select(None)
        };
        store.grant(schema.clone()).await.unwrap();
        assert_eq!(store.grants().await.unwrap(), vec![schema]);
    }
}
