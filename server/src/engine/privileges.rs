//! Privileges: what each user may do to each table, as the engine checks it.
//!
//! The catalog stores grants, role memberships and owners ([`GrantStore`]);
//! the engine keeps a copy here, reloaded after every change this server
//! makes (it is the catalog's only writer while it runs), so a check never
//! waits on the catalog and a `GRANT` or `REVOKE` reaches every session's
//! next statement.
//!
//! Who may do what:
//! - admins (members of `admin`), and everyone when authentication is off:
//!   everything;
//! - the owner of a table (the user who created it): everything on it;
//! - anyone else: what was granted to them or to one of their roles, on the
//!   table or on every table of its schema.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, RwLock};

use super::policies::Policy;
use crate::catalog::{
    CatalogResult, GrantObject, GrantRecord, GrantStore, MaskRecord, RowFilterRecord,
};
use crate::identity::Principal;
use crate::names::DEFAULT_SCHEMA;

/// One privilege.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Privilege {
    Select,
    Insert,
    Create,
    Drop,
    Delete,
    Update,
}

impl Privilege {
    /// Every privilege, for `ALL [PRIVILEGES]`.
    pub(crate) const ALL: [Self; 6] = [
        Self::Select,
        Self::Insert,
        Self::Create,
        Self::Drop,
        Self::Delete,
        Self::Update,
    ];

    /// The privilege's SQL keyword.
    pub(crate) fn keyword(self) -> &'static str {
        match self {
            Self::Select => "SELECT",
            Self::Insert => "INSERT",
            Self::Create => "CREATE",
            Self::Drop => "DROP",
            Self::Delete => "DELETE",
            Self::Update => "UPDATE",
        }
    }

    /// The privilege a keyword names.
    pub(crate) fn from_keyword(word: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|p| p.keyword().eq_ignore_ascii_case(word))
    }
}

/// What a principal may do with one privilege on one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Access {
    /// Nothing.
    Denied,
    /// Only these columns (a column-level `SELECT`).
    Columns(BTreeSet<String>),
    /// The whole table.
    Whole,
}

/// The grants, memberships and owners a server checks against.
#[derive(Debug, Default)]
struct Book {
    grants: Vec<GrantRecord>,
    /// Table name to its owner.
    owners: HashMap<String, String>,
    /// User name to their roles, sorted.
    roles: HashMap<String, Vec<String>>,
    masks: Vec<MaskRecord>,
    filters: Vec<RowFilterRecord>,
}

/// The engine's copy of the catalog's privileges.
#[derive(Debug, Default)]
pub(crate) struct Privileges {
    book: RwLock<Book>,
    store: RwLock<Option<Arc<dyn GrantStore>>>,
    /// The salt of `mask_hash()`, shared with the function.
    salt: Arc<RwLock<String>>,
}

impl Privileges {
    /// Reads and remembers privileges from `store`.
    pub(crate) fn attach(&self, store: Arc<dyn GrantStore>) {
        *self.store.write().unwrap_or_else(|p| p.into_inner()) = Some(store);
    }

    /// Reads everything again from the catalog (after a change).
    pub(crate) async fn reload(&self) -> CatalogResult<()> {
        let store = self.store.read().unwrap_or_else(|p| p.into_inner()).clone();
        let Some(store) = store else {
            return Ok(());
        };
        let grants = store.grants().await?;
        let owners = store.owners().await?.into_iter().collect();
        let mut roles: HashMap<String, Vec<String>> = HashMap::new();
        for (user, role) in store.memberships().await? {
            roles.entry(user).or_default().push(role);
        }
        let masks = store.masks().await?;
        let filters = store.row_filters().await?;
        *self.salt.write().unwrap_or_else(|p| p.into_inner()) = store.mask_salt().await?;
        *self.book.write().unwrap_or_else(|p| p.into_inner()) = Book {
            grants,
            owners,
            roles,
            masks,
            filters,
        };
        Ok(())
    }

    /// The salt `mask_hash()` uses.
    pub(crate) fn salt(&self) -> Arc<RwLock<String>> {
        Arc::clone(&self.salt)
    }

    /// The masks and row filters that apply to `principal` on `table`:
    /// none for admins; masks unless one of the exempt roles is theirs;
    /// row filters of their roles.
    pub(crate) fn policy(&self, principal: &Principal, table: &str) -> Policy {
        if principal.is_admin() {
            return Policy::default();
        }
        let book = self.book();
        let member = |role: &String| principal.roles().contains(role);
        Policy {
            masks: book
                .masks
                .iter()
                .filter(|m| m.table == table && !m.exempt.iter().any(member))
                .map(|m| (m.column.clone(), m.expression.clone()))
                .collect(),
            filters: book
                .filters
                .iter()
                .filter(|f| f.table == table && member(&f.role))
                .map(|f| f.predicate.clone())
                .collect(),
        }
    }

    fn book(&self) -> std::sync::RwLockReadGuard<'_, Book> {
        self.book.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The owner of `table`, if it has one.
    pub(crate) fn owner(&self, table: &str) -> Option<String> {
        self.book().owners.get(table).cloned()
    }

    /// The principal the owner of `table` acts as (views run with their
    /// owner's rights), if the table has an owner.
    pub(crate) fn owner_principal(&self, table: &str) -> Option<Principal> {
        let book = self.book();
        let owner = book.owners.get(table)?;
        let roles = book.roles.get(owner).cloned().unwrap_or_default();
        Some(Principal::user(owner.clone(), roles))
    }

    /// What `principal` may do with `privilege` on `table` (a name as
    /// [`crate::names::table_name`] gives it).
    pub(crate) fn access(
        &self,
        principal: &Principal,
        privilege: Privilege,
        table: &str,
    ) -> Access {
        if principal.is_admin() {
            return Access::Whole;
        }
        let book = self.book();
        if book
            .owners
            .get(table)
            .is_some_and(|o| o == principal.name())
        {
            return Access::Whole;
        }
        let schema = schema_of(table);
        let mut columns = BTreeSet::new();
        for grant in &book.grants {
            let grantee =
                grant.grantee == principal.name() || principal.roles().contains(&grant.grantee);
            let on = match &grant.object {
                GrantObject::Table(name) => name == table,
                GrantObject::Schema(name) => name == schema,
            };
            if !grantee || !on || grant.privilege != privilege.keyword() {
                continue;
            }
            match &grant.columns {
                None => return Access::Whole,
                Some(granted) => columns.extend(granted.iter().cloned()),
            }
        }
        match columns.is_empty() {
            true => Access::Denied,
            false => Access::Columns(columns),
        }
    }

    /// Whether `principal` may create tables in `schema`.
    pub(crate) fn may_create_in(&self, principal: &Principal, schema: &str) -> bool {
        if principal.is_admin() {
            return true;
        }
        self.book().grants.iter().any(|grant| {
            (grant.grantee == principal.name() || principal.roles().contains(&grant.grantee))
                && grant.object == GrantObject::Schema(schema.to_string())
                && grant.privilege == Privilege::Create.keyword()
        })
    }

    /// Whether `principal` may read anything of `table`.
    pub(crate) fn may_read(&self, principal: &Principal, table: &str) -> bool {
        self.access(principal, Privilege::Select, table) != Access::Denied
    }
}

/// The schema a table name (as Tarn records it) is in.
pub(crate) fn schema_of(table: &str) -> &str {
    let parts: Vec<&str> = table.split('.').collect();
    match parts.len() {
        0 | 1 => DEFAULT_SCHEMA,
        n => parts[n - 2],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn book(grants: Vec<GrantRecord>, owners: &[(&str, &str)]) -> Privileges {
        let privileges = Privileges::default();
        *privileges.book.write().unwrap() = Book {
            grants,
            owners: owners
                .iter()
                .map(|(t, o)| (t.to_string(), o.to_string()))
                .collect(),
            roles: HashMap::new(),
            masks: Vec::new(),
            filters: Vec::new(),
        };
        privileges
    }

    fn grant(
        grantee: &str,
        privilege: Privilege,
        object: GrantObject,
        columns: Option<&[&str]>,
    ) -> GrantRecord {
        GrantRecord {
            grantee: grantee.into(),
            privilege: privilege.keyword().into(),
            object,
            columns: columns.map(|c| c.iter().map(|s| s.to_string()).collect()),
            granted_by: "admin".into(),
        }
    }

    #[test]
    fn grants_to_users_roles_tables_and_schemas_add_up() {
        let privileges = book(
            vec![
                grant(
                    "alice",
                    Privilege::Select,
                    GrantObject::Table("nation".into()),
                    None,
                ),
                grant(
                    "analysts",
                    Privilege::Select,
                    GrantObject::Table("customer".into()),
                    Some(&["c_name"]),
                ),
                grant(
                    "analysts",
                    Privilege::Select,
                    GrantObject::Schema("public".into()),
                    None,
                ),
                grant(
                    "bob",
                    Privilege::Select,
                    GrantObject::Table("customer".into()),
                    Some(&["c_phone"]),
                ),
            ],
            &[("mine", "alice")],
        );
        let alice = Principal::user("alice", vec![]);
        let analyst = Principal::user("carol", vec!["analysts".into()]);
        let bob = Principal::user("bob", vec![]);
        assert_eq!(
            privileges.access(&alice, Privilege::Select, "nation"),
            Access::Whole
        );
        assert_eq!(
            privileges.access(&alice, Privilege::Insert, "nation"),
            Access::Denied
        );
        assert_eq!(
            privileges.access(&alice, Privilege::Select, "orders"),
            Access::Denied
        );
        assert_eq!(
            privileges.access(&alice, Privilege::Drop, "mine"),
            Access::Whole,
            "owner"
        );
        assert_eq!(
            privileges.access(&analyst, Privilege::Select, "orders"),
            Access::Whole,
            "schema"
        );
        assert_eq!(
            privileges.access(&bob, Privilege::Select, "customer"),
            Access::Columns(["c_phone".to_string()].into())
        );
        assert_eq!(
            privileges.access(&bob, Privilege::Select, "other.customer"),
            Access::Denied
        );
        let admin = Principal::user("root", vec!["admin".into()]);
        assert_eq!(
            privileges.access(&admin, Privilege::Drop, "orders"),
            Access::Whole
        );
        assert_eq!(
            privileges.access(&Principal::anonymous(), Privilege::Drop, "x"),
            Access::Whole
        );
        assert_eq!(schema_of("a"), "public");
        assert_eq!(schema_of("s.a"), "s");
        assert_eq!(schema_of("c.s.a"), "s");
    }
}
