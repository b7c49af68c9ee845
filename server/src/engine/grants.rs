//! Privilege statements, Postgres-style:
//!
//! ```sql
//! GRANT SELECT ON nation TO alice;                  -- a table (or view)
//! GRANT SELECT (c_name, c_phone) ON customer TO analysts;   -- some columns
//! GRANT SELECT, INSERT ON TABLE a, b TO alice, bob;
//! GRANT ALL [PRIVILEGES] ON t TO alice;             -- SELECT INSERT CREATE DROP DELETE UPDATE
//! GRANT SELECT ON ALL TABLES IN SCHEMA public TO analysts;  -- every table, now and later
//! GRANT CREATE ON SCHEMA public TO alice;           -- CREATE TABLE / VIEW, COPY
//! REVOKE SELECT ON nation FROM alice;               -- the same forms, FROM
//! ```
//!
//! Admins may grant anything; the owner of a table (its creator) may grant
//! privileges on it. DataFusion parses none of these: they are read with the
//! SQL tokenizer into a [`GrantNode`] and run like any statement.

use std::sync::Arc;

use arrow::datatypes::Schema;
use datafusion::common::{DFSchema, DFSchemaRef};
use datafusion::logical_expr::{Extension, LogicalPlan};
use datafusion::sql::sqlparser::tokenizer::Token;

use super::Engine;
use super::admin::{Cursor, is_privilege, syntax};
use super::error::{EngineError, EngineResult};
use super::privileges::Privilege;
use super::statement_node::{leaf_statement_node, node_of};
use crate::catalog::{GrantChange, GrantObject, GrantRecord};
use crate::identity::Principal;

const GRANT: &str = "GRANT privilege [(column, ...)] [, ...] ON [TABLE] name [, ...] | ALL TABLES IN SCHEMA s | SCHEMA s TO user_or_role [, ...]";
const REVOKE: &str = "REVOKE privilege [(column, ...)] [, ...] ON [TABLE] name [, ...] | ALL TABLES IN SCHEMA s | SCHEMA s FROM user_or_role [, ...]";

/// One `GRANT` or `REVOKE` of privileges.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd)]
pub(crate) struct PrivilegeStatement {
    /// `GRANT` (or `REVOKE`).
    grant: bool,
    /// Each privilege, with its columns for a column-level one.
    privileges: Vec<(Privilege, Option<Vec<String>>)>,
    objects: Vec<GrantObject>,
    grantees: Vec<String>,
}

impl PrivilegeStatement {
    /// `sql` as a privilege statement: `None` if it is not one (a role
    /// grant, or anything else), an error if it does not follow its form.
    pub(crate) fn parse(sql: &str) -> Option<EngineResult<Self>> {
        let mut c = Cursor::new(crate::sql_text::tokens(sql)?);
        let grant = c.is(0, "GRANT");
        if !(grant || c.is(0, "REVOKE")) || !is_privilege(c.peek_word(1)) {
            return None;
        }
        let form = if grant { GRANT } else { REVOKE };
        c.eat(if grant { "GRANT" } else { "REVOKE" });
        Some(Self::parse_rest(&mut c, grant, form))
    }

    fn parse_rest(c: &mut Cursor, grant: bool, form: &str) -> EngineResult<Self> {
        let privileges = privileges(c, form)?;
        c.expect("ON", form)?;
        let objects = objects(c, form)?;
        c.expect(if grant { "TO" } else { "FROM" }, form)?;
        let mut grantees = vec![c.name(form)?];
        while c.eat_token(&Token::Comma) {
            grantees.push(c.name(form)?);
        }
        c.end(form)?;
        Ok(Self {
            grant,
            privileges,
            objects,
            grantees,
        })
    }
}

fn privileges(c: &mut Cursor, form: &str) -> EngineResult<Vec<(Privilege, Option<Vec<String>>)>> {
    if c.eat("ALL") {
        c.eat("PRIVILEGES");
        return Ok(Privilege::ALL.into_iter().map(|p| (p, None)).collect());
    }
    let mut privileges = Vec::new();
    loop {
        let word = c.peek_word(0).ok_or_else(|| syntax(form))?;
        let privilege = Privilege::from_keyword(word).ok_or_else(|| {
            EngineError::Syntax(format!(
                "'{word}' is not a privilege; use SELECT, INSERT, CREATE, DROP, DELETE, UPDATE or ALL"
            ))
        })?;
        c.eat(word.to_string().as_str());
        let columns = match c.eat_token(&Token::LParen) {
            true => {
                let mut columns = vec![c.name(form)?];
                while c.eat_token(&Token::Comma) {
                    columns.push(c.name(form)?);
                }
                if !c.eat_token(&Token::RParen) {
                    return Err(syntax(form));
                }
                if privilege != Privilege::Select {
                    return Err(EngineError::Syntax(
                        "only SELECT can be granted on some columns: GRANT SELECT (a, b) ON t TO ..."
                            .into(),
                    ));
                }
                Some(columns)
            }
            false => None,
        };
        privileges.push((privilege, columns));
        if !c.eat_token(&Token::Comma) {
            return Ok(privileges);
        }
    }
}

fn objects(c: &mut Cursor, form: &str) -> EngineResult<Vec<GrantObject>> {
    if c.is(0, "ALL") && c.is(1, "TABLES") {
        c.eat("ALL");
        c.eat("TABLES");
        c.expect("IN", form)?;
        c.expect("SCHEMA", form)?;
        return Ok(vec![GrantObject::Schema(c.name(form)?)]);
    }
    if c.eat("SCHEMA") {
        return Ok(vec![GrantObject::Schema(c.name(form)?)]);
    }
    c.eat("TABLE");
    let mut objects = vec![GrantObject::Table(c.table(form)?)];
    while c.eat_token(&Token::Comma) {
        objects.push(GrantObject::Table(c.table(form)?));
    }
    Ok(objects)
}

/// A privilege statement as a plan node.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct GrantNode {
    statement: PrivilegeStatement,
    schema: DFSchemaRef,
}

impl GrantNode {
    pub(crate) fn plan(statement: PrivilegeStatement) -> LogicalPlan {
        LogicalPlan::Extension(Extension {
            node: Arc::new(Self {
                statement,
                schema: Arc::new(DFSchema::empty()),
            }),
        })
    }

    /// The statement of `plan`, if it is a privilege statement.
    pub(crate) fn of(plan: &LogicalPlan) -> Option<&PrivilegeStatement> {
        node_of::<Self>(plan).map(|node| &node.statement)
    }
}

leaf_statement_node!(GrantNode, "Grant", statement, |node| format!(
    "{} {:?} ON {:?} {} {}",
    if node.statement.grant {
        "GRANT"
    } else {
        "REVOKE"
    },
    node.statement.privileges,
    node.statement.objects,
    if node.statement.grant { "TO" } else { "FROM" },
    node.statement.grantees.join(", ")
));

impl Engine {
    /// Runs a privilege statement for `principal`.
    pub(super) async fn run_grant(
        &self,
        statement: &PrivilegeStatement,
        principal: &Principal,
    ) -> EngineResult<Arc<Schema>> {
        let Some(store) = self.grant_store.clone() else {
            return Err(EngineError::Plan(
                "privileges need the catalog; this engine has none".into(),
            ));
        };
        for object in &statement.objects {
            self.may_grant_on(object, principal)?;
        }
        for grantee in &statement.grantees {
            for object in &statement.objects {
                for (privilege, columns) in &statement.privileges {
                    let change = match statement.grant {
                        true => {
                            store
                                .grant(GrantRecord {
                                    grantee: grantee.clone(),
                                    privilege: privilege.keyword().to_string(),
                                    object: object.clone(),
                                    columns: columns.clone(),
                                    granted_by: principal.name().to_string(),
                                })
                                .await
                        }
                        false => {
                            store
                                .revoke(
                                    grantee.clone(),
                                    privilege.keyword().to_string(),
                                    object.clone(),
                                    columns.clone(),
                                )
                                .await
                        }
                    }
                    .map_err(|e| {
                        EngineError::Internal(format!(
                            "the catalog could not store the change: {e}"
                        ))
                    })?;
                    if change == GrantChange::NoSuchGrantee {
                        return Err(EngineError::NoSuchObject(format!(
                            "there is no user or role named '{grantee}'; CREATE USER or CREATE ROLE first"
                        )));
                    }
                }
            }
        }
        self.reload_privileges().await?;
        Ok(Arc::new(Schema::empty()))
    }

    /// Refuses a grant on `object` that `principal` may not give: admins
    /// may give any, a table's owner those on it.
    fn may_grant_on(&self, object: &GrantObject, principal: &Principal) -> EngineResult<()> {
        if let GrantObject::Table(name) = object
            && !matches!(self.ctx.table_exist(name.as_str()), Ok(true))
        {
            return Err(EngineError::TableNotFound { name: name.clone() });
        }
        let owner = match object {
            GrantObject::Table(name) => self.privileges.owner(name),
            GrantObject::Schema(_) => None,
        };
        if principal.is_admin() || owner.as_deref() == Some(principal.name()) {
            return Ok(());
        }
        Err(EngineError::PermissionDenied(format!(
            "only an admin{} may grant privileges on {}",
            match object {
                GrantObject::Table(_) => " or the table's owner",
                GrantObject::Schema(_) => "",
            },
            match object {
                GrantObject::Table(name) => format!("table {name}"),
                GrantObject::Schema(name) => format!("schema {name}"),
            }
        )))
    }

    /// Reads the privileges again after a change.
    pub(super) async fn reload_privileges(&self) -> EngineResult<()> {
        self.privileges.reload().await.map_err(|e| {
            EngineError::Internal(format!("cannot read the privileges from the catalog: {e}"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn privilege_statements_are_read_by_their_tokens() {
        let ok = |sql: &str| PrivilegeStatement::parse(sql).unwrap().unwrap();
        let grant = ok(
            "GRANT SELECT (c_name, C_Phone), INSERT ON TABLE public.customer, nation TO analysts, bob;",
        );
        assert!(grant.grant);
        assert_eq!(
            grant.privileges,
            vec![
                (
                    Privilege::Select,
                    Some(vec!["c_name".into(), "c_phone".into()])
                ),
                (Privilege::Insert, None)
            ]
        );
        assert_eq!(
            grant.objects,
            vec![
                GrantObject::Table("customer".into()),
                GrantObject::Table("nation".into())
            ]
        );
        assert_eq!(
            grant.grantees,
            vec!["analysts".to_string(), "bob".to_string()]
        );
        let all = ok("grant all privileges on all tables in schema public to alice");
        assert_eq!(all.privileges.len(), 6);
        assert_eq!(all.objects, vec![GrantObject::Schema("public".into())]);
        let revoke = ok("REVOKE CREATE ON SCHEMA public FROM alice");
        assert!(!revoke.grant);
        assert!(PrivilegeStatement::parse("GRANT analysts TO alice").is_none());
        assert!(PrivilegeStatement::parse("SELECT 1").is_none());
        for bad in [
            "GRANT SELECT ON t",
            "GRANT SELECT ON t TO",
            "GRANT INSERT (a) ON t TO x",
            "GRANT SELECT, FLY ON t TO x",
            "REVOKE SELECT ON t TO x",
        ] {
            assert!(PrivilegeStatement::parse(bad).unwrap().is_err(), "{bad}");
        }
    }
}
