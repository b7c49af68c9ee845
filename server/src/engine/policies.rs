//! Column masks and row filters:
//!
//! ```sql
//! CREATE MASK phone ON customer (c_phone) USING (mask_partial(c_phone, 4)) [EXEMPT hr, support];
//! DROP MASK [IF EXISTS] phone;
//! CREATE ROW FILTER building ON customer FOR analysts USING (c_mktsegment = 'BUILDING');
//! DROP ROW FILTER [IF EXISTS] building;
//! ```
//!
//! A mask shows a column as its expression to everyone but admins and the
//! exempt roles; a row filter shows the members of its role only the rows
//! where its predicate holds (OR across their roles). Both are applied in
//! the plan directly above the table's scan: a user's session looks the
//! table up as a view of `Projection(masks)` over `Filter(predicates)` over
//! the scan (`visible.rs`), so joins, aggregates, window functions,
//! subqueries and CTAS all see masked, filtered rows, and lineage records a
//! mask as a transformation. The helpers a mask uses are in `masks.rs`.
//!
//! Admins and a table's owner create and drop its policies.

use std::sync::Arc;

use datafusion::catalog::TableProvider;
use datafusion::catalog::view::ViewTable;
use datafusion::common::{DFSchema, DFSchemaRef, TableReference};
use datafusion::datasource::provider_as_source;
use datafusion::error::Result as DataFusionResult;
use datafusion::execution::SessionState;
use datafusion::logical_expr::ExprSchemable;
use datafusion::logical_expr::{Expr, Extension, LogicalPlan, LogicalPlanBuilder};
use datafusion::sql::sqlparser::tokenizer::Token;

use super::Engine;
use super::admin::{Cursor, syntax};
use super::error::{EngineError, EngineResult};
use super::statement_node::{leaf_statement_node, node_of};
use crate::catalog::{MaskRecord, PolicyChange, RowFilterRecord};
use crate::identity::Principal;
use crate::sql_text::tokens;

const CREATE_MASK: &str =
    "CREATE MASK name ON table (column) USING (expression) [EXEMPT role, ...]";
const CREATE_FILTER: &str = "CREATE ROW FILTER name ON table FOR role USING (predicate)";
const DROP_MASK: &str = "DROP MASK [IF EXISTS] name";
const DROP_FILTER: &str = "DROP ROW FILTER [IF EXISTS] name";

/// One policy statement.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd)]
pub(crate) enum PolicyStatement {
    CreateMask {
        name: String,
        table: String,
        column: String,
        expression: String,
        exempt: Vec<String>,
    },
    CreateRowFilter {
        name: String,
        table: String,
        role: String,
        predicate: String,
    },
    DropMask {
        name: String,
        if_exists: bool,
    },
    DropRowFilter {
        name: String,
        if_exists: bool,
    },
}

impl PolicyStatement {
    /// `sql` as a policy statement: `None` if it is not one, an error if it
    /// starts like one but does not follow its form.
    pub(crate) fn parse(sql: &str) -> Option<EngineResult<Self>> {
        let mut c = Cursor::new(tokens(sql)?);
        let (form, words) = if c.is(0, "CREATE") && c.is(1, "MASK") {
            (CREATE_MASK, 2)
        } else if c.is(0, "CREATE") && c.is(1, "ROW") && c.is(2, "FILTER") {
            (CREATE_FILTER, 3)
        } else if c.is(0, "DROP") && c.is(1, "MASK") {
            (DROP_MASK, 2)
        } else if c.is(0, "DROP") && c.is(1, "ROW") && c.is(2, "FILTER") {
            (DROP_FILTER, 3)
        } else {
            return None;
        };
        c.skip(words);
        Some(Self::parse_form(&mut c, sql, form))
    }

    fn parse_form(r: &mut Cursor, sql: &str, form: &str) -> EngineResult<Self> {
        let statement = match form {
            CREATE_MASK => {
                let name = r.name(form)?;
                r.expect("ON", form)?;
                let table = r.table(form)?;
                r.eat_token(&Token::LParen)
                    .then_some(())
                    .ok_or_else(|| syntax(form))?;
                let column = r.name(form)?;
                r.eat_token(&Token::RParen)
                    .then_some(())
                    .ok_or_else(|| syntax(form))?;
                r.expect("USING", form)?;
                let expression = r.parenthesized(sql, form)?;
                let mut exempt = Vec::new();
                if r.eat("EXEMPT") {
                    exempt.push(r.name(form)?);
                    while r.eat_token(&Token::Comma) {
                        exempt.push(r.name(form)?);
                    }
                }
                Self::CreateMask {
                    name,
                    table,
                    column,
                    expression,
                    exempt,
                }
            }
            CREATE_FILTER => {
                let name = r.name(form)?;
                r.expect("ON", form)?;
                let table = r.table(form)?;
                r.expect("FOR", form)?;
                let role = r.name(form)?;
                r.expect("USING", form)?;
                let predicate = r.parenthesized(sql, form)?;
                Self::CreateRowFilter {
                    name,
                    table,
                    role,
                    predicate,
                }
            }
            _ => {
                let if_exists = r.is(0, "IF") && r.is(1, "EXISTS");
                r.skip(if if_exists { 2 } else { 0 });
                let name = r.name(form)?;
                match form {
                    DROP_MASK => Self::DropMask { name, if_exists },
                    _ => Self::DropRowFilter { name, if_exists },
                }
            }
        };
        r.end(form)?;
        Ok(statement)
    }
}

/// A policy statement as a plan node.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct PolicyNode {
    statement: PolicyStatement,
    schema: DFSchemaRef,
}

impl PolicyNode {
    pub(crate) fn plan(statement: PolicyStatement) -> LogicalPlan {
        LogicalPlan::Extension(Extension {
            node: Arc::new(Self {
                statement,
                schema: Arc::new(DFSchema::empty()),
            }),
        })
    }

    pub(crate) fn of(plan: &LogicalPlan) -> Option<&PolicyStatement> {
        node_of::<Self>(plan).map(|node| &node.statement)
    }
}

leaf_statement_node!(PolicyNode, "Policy", statement, |node| format!(
    "{:?}",
    node.statement
));

/// What one user sees of one table through its policies.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Policy {
    /// (column, SQL expression) of every mask that applies.
    pub(crate) masks: Vec<(String, String)>,
    /// The SQL predicates of every row filter that applies (ORed).
    pub(crate) filters: Vec<String>,
}

impl Policy {
    pub(crate) fn is_empty(&self) -> bool {
        self.masks.is_empty() && self.filters.is_empty()
    }
}

/// `provider` (the table `reference`) as the view its policy makes of it,
/// with only the columns `keep` (all if `None`).
pub(crate) fn policy_view(
    state: &SessionState,
    reference: TableReference,
    provider: Arc<dyn TableProvider>,
    policy: &Policy,
    keep: Option<&std::collections::BTreeSet<String>>,
) -> DataFusionResult<Arc<dyn TableProvider>> {
    let mut builder = LogicalPlanBuilder::scan(reference, provider_as_source(provider), None)?;
    let schema = Arc::clone(builder.schema());
    let parse = |sql: &str| state.create_logical_expr(sql, &schema);
    if let Some(first) = policy.filters.first() {
        let mut predicate = parse(first)?;
        for more in &policy.filters[1..] {
            predicate = predicate.or(parse(more)?);
        }
        builder = builder.filter(predicate)?;
    }
    let mut columns: Vec<Expr> = Vec::new();
    for (qualifier, field) in schema.iter() {
        if keep.is_some_and(|keep| !keep.contains(field.name())) {
            continue;
        }
        let column = Expr::Column(datafusion::common::Column::new(
            qualifier.cloned(),
            field.name(),
        ));
        let masked = policy.masks.iter().find(|(c, _)| c == field.name());
        columns.push(match masked {
            Some((_, sql)) => parse(sql)?
                .cast_to(field.data_type(), schema.as_ref())?
                .alias(field.name()),
            None => column,
        });
    }
    let plan = builder.project(columns)?.build()?;
    Ok(Arc::new(ViewTable::new(plan, None)))
}

impl Engine {
    /// Runs a policy statement for `principal`.
    pub(super) async fn run_policy(
        &self,
        statement: &PolicyStatement,
        principal: &Principal,
    ) -> EngineResult<()> {
        let Some(store) = self.grant_store.clone() else {
            return Err(EngineError::Plan(
                "masks and row filters need the catalog".into(),
            ));
        };
        let failed =
            |e| EngineError::Internal(format!("the catalog could not store the change: {e}"));
        let change = match statement {
            PolicyStatement::CreateMask {
                name,
                table,
                column,
                expression,
                exempt,
            } => {
                self.may_manage_policies_on(table, principal)?;
                let policy = Policy {
                    masks: vec![(column.clone(), expression.clone())],
                    filters: vec![],
                };
                self.try_policy(table, &policy, Some(column)).await?;
                store
                    .create_mask(MaskRecord {
                        name: name.clone(),
                        table: table.clone(),
                        column: column.clone(),
                        expression: expression.clone(),
                        exempt: exempt.clone(),
                        created_by: principal.name().to_string(),
                    })
                    .await
                    .map_err(failed)?
            }
            PolicyStatement::CreateRowFilter {
                name,
                table,
                role,
                predicate,
            } => {
                self.may_manage_policies_on(table, principal)?;
                let policy = Policy {
                    masks: vec![],
                    filters: vec![predicate.clone()],
                };
                self.try_policy(table, &policy, None).await?;
                store
                    .create_row_filter(RowFilterRecord {
                        name: name.clone(),
                        table: table.clone(),
                        role: role.clone(),
                        predicate: predicate.clone(),
                        created_by: principal.name().to_string(),
                    })
                    .await
                    .map_err(failed)?
            }
            PolicyStatement::DropMask { name, if_exists } => {
                self.may_drop_policy(principal)?;
                match store.drop_mask(name.clone()).await.map_err(failed)? {
                    PolicyChange::NoSuchPolicy if *if_exists => PolicyChange::Done,
                    change => change,
                }
            }
            PolicyStatement::DropRowFilter { name, if_exists } => {
                self.may_drop_policy(principal)?;
                match store.drop_row_filter(name.clone()).await.map_err(failed)? {
                    PolicyChange::NoSuchPolicy if *if_exists => PolicyChange::Done,
                    change => change,
                }
            }
        };
        match change {
            PolicyChange::Done => self.reload_privileges().await,
            PolicyChange::Exists => Err(EngineError::AlreadyExists(
                "a policy of that name (or a mask on that column) exists; DROP it first".into(),
            )),
            PolicyChange::NoSuchPolicy => Err(EngineError::NoSuchObject(
                "there is no policy of that name; system.masks and system.row_filters list them"
                    .into(),
            )),
            PolicyChange::NoSuchRole => Err(EngineError::NoSuchObject(
                "there is no role of that name; CREATE ROLE first".into(),
            )),
        }
    }

    fn may_manage_policies_on(&self, table: &str, principal: &Principal) -> EngineResult<()> {
        if !matches!(self.ctx.table_exist(table), Ok(true)) {
            return Err(EngineError::TableNotFound {
                name: table.to_string(),
            });
        }
        let owner = self.privileges.owner(table);
        if principal.is_admin() || owner.as_deref() == Some(principal.name()) {
            return Ok(());
        }
        Err(EngineError::PermissionDenied(format!(
            "only an admin or the owner of table {table} may change its masks and row filters"
        )))
    }

    fn may_drop_policy(&self, principal: &Principal) -> EngineResult<()> {
        match principal.is_admin() {
            true => Ok(()),
            false => Err(EngineError::PermissionDenied(
                "only an admin may drop masks and row filters".into(),
            )),
        }
    }

    /// Plans `policy` on `table` once, so that a bad expression or a
    /// column that does not exist is refused when the policy is created.
    async fn try_policy(
        &self,
        table: &str,
        policy: &Policy,
        column: Option<&String>,
    ) -> EngineResult<()> {
        let reference = TableReference::parse_str(table);
        let provider = self
            .ctx
            .table_provider(reference.clone())
            .await
            .map_err(EngineError::from_planning)?;
        if let Some(column) = column
            && provider.schema().field_with_name(column).is_err()
        {
            return Err(EngineError::Plan(format!(
                "table {table} has no column {column}"
            )));
        }
        policy_view(&self.ctx.state(), reference, provider, policy, None)
            .map(|_| ())
            .map_err(EngineError::from_planning)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_statements_are_read_by_their_tokens() {
        let ok = |sql: &str| PolicyStatement::parse(sql).unwrap().unwrap();
        assert_eq!(
            ok(
                "CREATE MASK phone ON customer (c_phone) USING (mask_partial(c_phone, 4)) EXEMPT hr, Support"
            ),
            PolicyStatement::CreateMask {
                name: "phone".into(),
                table: "customer".into(),
                column: "c_phone".into(),
                expression: "mask_partial(c_phone, 4)".into(),
                exempt: vec!["hr".into(), "support".into()],
            }
        );
        assert_eq!(
            ok(
                "create row filter b on public.customer for analysts using (c_mktsegment = 'BUILDING');"
            ),
            PolicyStatement::CreateRowFilter {
                name: "b".into(),
                table: "customer".into(),
                role: "analysts".into(),
                predicate: "c_mktsegment = 'BUILDING'".into(),
            }
        );
        assert_eq!(
            ok("DROP MASK IF EXISTS phone"),
            PolicyStatement::DropMask {
                name: "phone".into(),
                if_exists: true
            }
        );
        assert!(PolicyStatement::parse("CREATE TABLE t (a INT)").is_none());
        for bad in [
            "CREATE MASK m ON t USING (x)",
            "CREATE MASK m ON t (c) USING ()",
            "CREATE ROW FILTER f ON t USING (a = 1)",
            "DROP MASK a b",
        ] {
            assert!(PolicyStatement::parse(bad).unwrap().is_err(), "{bad}");
        }
    }
}
