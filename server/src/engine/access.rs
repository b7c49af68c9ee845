//! Checking a statement against its principal's privileges, before it is
//! planned: nothing of a refused statement runs, and the refusal names the
//! object and the privilege that is missing.
//!
//! What each statement needs:
//! - every table it reads (in joins, subqueries, CTEs, views, `EXPLAIN`,
//!   `COPY` sources, `time_travel(...)`, `lineage_*(...)`): `SELECT`;
//! - `INSERT INTO t`: `INSERT` on `t`; `DROP t`: `DROP` on `t`; `DELETE` and
//!   `UPDATE`: those privileges on their table;
//! - `CREATE TABLE`, `CREATE VIEW`, `CREATE EXTERNAL TABLE`, `COPY ... TO`:
//!   `CREATE` on the schema (`GRANT CREATE ON SCHEMA public TO ...`).
//!
//! Views run with their owner's rights (the definer model): reading a view
//! needs `SELECT` on the view, and its owner must still be allowed to read
//! what the view reads.

use std::ops::ControlFlow;

use datafusion::catalog::view::ViewTable;
use datafusion::common::TableReference;
use datafusion::execution::SessionState;
use datafusion::prelude::SessionContext;
use datafusion::sql::parser::Statement as DFStatement;
use datafusion::sql::planner::object_name_to_table_reference;
use datafusion::sql::sqlparser::ast::{
    Expr, FromTable, FunctionArg, FunctionArgExpr, ObjectName, Statement, TableFactor, TableObject,
    Value, Visit, Visitor,
};

use super::error::{EngineError, EngineResult};
use super::privileges::{Access, Privilege, Privileges, schema_of};
use crate::catalog::system::SYSTEM_SCHEMA;
use crate::identity::Principal;
use crate::names::{DEFAULT_SCHEMA, table_name};

/// Table functions whose first argument names a table they read.
const TABLE_READING_FUNCTIONS: &[&str] = &["time_travel", "lineage_upstream", "lineage_downstream"];

/// How deep views over views are followed for their owners' rights.
const MAX_VIEW_DEPTH: usize = 16;

/// What a statement does to a table besides reading it.
enum Target {
    /// Writes to (or drops) a table.
    Change(TableReference, Privilege),
    /// Creates an object in a schema (the new name, if it has one).
    Create(String, Option<TableReference>),
}

/// Refuses `statement` (whose table references are `references`) unless
/// `principal` may run it.
pub(crate) async fn check(
    privileges: &Privileges,
    context: &SessionContext,
    state: &SessionState,
    statement: &DFStatement,
    references: &[TableReference],
    principal: &Principal,
) -> EngineResult<()> {
    if principal.is_admin() {
        return Ok(());
    }
    let targets = targets(statement);
    for target in &targets {
        match target {
            Target::Change(reference, privilege) => {
                let name = table_name(reference);
                if privileges.access(principal, *privilege, &name) != Access::Whole {
                    return Err(denied(principal, *privilege, &name));
                }
                if matches!(privilege, Privilege::Delete | Privilege::Update) {
                    check_rewrite(privileges, principal, *privilege, &name)?;
                }
            }
            Target::Create(schema, _) => {
                if !privileges.may_create_in(principal, schema) {
                    return Err(EngineError::PermissionDenied(format!(
                        "{} has no CREATE privilege on schema {schema}; an admin can GRANT CREATE ON SCHEMA {schema} TO {}",
                        principal.name(),
                        principal.name()
                    )));
                }
            }
        }
    }
    let written = |reference: &TableReference| {
        targets.iter().any(|target| match target {
            Target::Change(changed, _) => changed == reference,
            Target::Create(_, Some(created)) => created == reference,
            Target::Create(_, None) => false,
        })
    };
    let functions = state.table_functions();
    for reference in references {
        let function = reference.schema().is_none() && functions.contains_key(reference.table());
        if function || written(reference) || is_system(reference) {
            continue;
        }
        check_read(privileges, context, principal, reference, 0).await?;
    }
    for (function, table) in table_function_arguments(statement) {
        let readable = |name: &str| privileges.access(principal, Privilege::Select, name);
        let named = candidates(&table)
            .into_iter()
            .find(|name| context.table_exist(name.as_str()).unwrap_or(false));
        let Some(name) = named else { continue };
        if function == "time_travel" && !privileges.policy(principal, &name).is_empty() {
            return Err(EngineError::PermissionDenied(format!(
                "{} reads table {name} through masks or row filters, which time travel cannot apply; query the table itself",
                principal.name()
            )));
        }
        match readable(&name) {
            Access::Whole => {}
            Access::Columns(_) if function != "time_travel" => {}
            _ => return Err(denied(principal, Privilege::Select, &name)),
        }
    }
    Ok(())
}

/// `DELETE` and `UPDATE` read the rows they change: they need `SELECT`
/// too, and are refused where masks or row filters shape what the user
/// sees, since the rows they would change are the raw ones.
fn check_rewrite(
    privileges: &Privileges,
    principal: &Principal,
    privilege: Privilege,
    name: &str,
) -> EngineResult<()> {
    if privileges.access(principal, Privilege::Select, name) == Access::Denied {
        return Err(denied(principal, Privilege::Select, name));
    }
    if !privileges.policy(principal, name).is_empty() {
        return Err(EngineError::PermissionDenied(format!(
            "{user} sees table {name} through masks or row filters, which {what} cannot apply to the rows it changes; the table's owner or an admin can run it",
            user = principal.name(),
            what = privilege.keyword(),
        )));
    }
    Ok(())
}

/// Refuses a read of `reference` that `principal` may not make, following
/// views to their owner's rights.
async fn check_read(
    privileges: &Privileges,
    context: &SessionContext,
    principal: &Principal,
    reference: &TableReference,
    depth: usize,
) -> EngineResult<()> {
    let name = table_name(reference);
    if privileges.access(principal, Privilege::Select, &name) == Access::Denied {
        return Err(denied(principal, Privilege::Select, &name));
    }
    let Some(owner) = privileges.owner_principal(&name) else {
        return Ok(());
    };
    let Some(definition) = view_definition(context, reference).await else {
        return Ok(());
    };
    if depth >= MAX_VIEW_DEPTH || owner.is_admin() {
        return Ok(());
    }
    let state = context.state();
    let dialect = state.config().options().sql_parser.dialect;
    let Ok(statement) = state.sql_to_statement(&definition, &dialect) else {
        return Ok(());
    };
    let references = state
        .resolve_table_references(&statement)
        .unwrap_or_default();
    for inner in references
        .iter()
        .filter(|r| *r != reference && !is_system(r))
    {
        Box::pin(check_read(privileges, context, &owner, inner, depth + 1))
            .await
            .map_err(|_| {
                EngineError::PermissionDenied(format!(
                    "view {name} reads {}, which its owner {} may no longer read (views run with their owner's rights)",
                    table_name(inner),
                    owner.name()
                ))
            })?;
    }
    Ok(())
}

/// The `CREATE VIEW` text of `reference`, if it is a view.
async fn view_definition(context: &SessionContext, reference: &TableReference) -> Option<String> {
    let provider = context.table_provider(reference.clone()).await.ok()?;
    let view = provider.downcast_ref::<ViewTable>()?;
    view.definition().cloned()
}

fn is_system(reference: &TableReference) -> bool {
    matches!(
        reference.schema(),
        Some(SYSTEM_SCHEMA) | Some("information_schema")
    )
}

/// The refusal of `privilege` on `table`.
pub(crate) fn denied(principal: &Principal, privilege: Privilege, table: &str) -> EngineError {
    let (user, what) = (principal.name(), privilege.keyword());
    EngineError::PermissionDenied(format!(
        "{user} has no {what} privilege on table {table}; an admin or the table's owner can GRANT {what} ON {table} TO {user}"
    ))
}

/// The tables a name in a lineage function may mean: `t` or `t.column`.
fn candidates(text: &str) -> Vec<String> {
    let reference = |s: &str| table_name(&TableReference::parse_str(s));
    let mut names = vec![reference(text)];
    if let Some((table, _column)) = text.rsplit_once('.') {
        names.push(reference(table));
    }
    names
}

fn reference_of(name: &ObjectName) -> Option<TableReference> {
    object_name_to_table_reference(name.clone(), true).ok()
}

/// What `statement` changes or creates.
fn targets(statement: &DFStatement) -> Vec<Target> {
    let create = |name: Option<TableReference>| {
        let schema = name.as_ref().map_or(DEFAULT_SCHEMA.to_string(), |n| {
            schema_of(&table_name(n)).to_string()
        });
        vec![Target::Create(schema, name)]
    };
    let inner = match statement {
        DFStatement::Statement(inner) => inner.as_ref(),
        DFStatement::CreateExternalTable(external) => return create(reference_of(&external.name)),
        DFStatement::CopyTo(_) => return create(None),
        DFStatement::Explain(explain) => return targets(&explain.statement),
        _ => return Vec::new(),
    };
    let change =
        |name: &ObjectName, privilege| reference_of(name).map(|r| Target::Change(r, privilege));
    match inner {
        Statement::Insert(insert) => match &insert.table {
            TableObject::TableName(name) => change(name, Privilege::Insert).into_iter().collect(),
            _ => Vec::new(),
        },
        Statement::CreateTable(table) => create(reference_of(&table.name)),
        Statement::CreateView(view) => create(reference_of(&view.name)),
        Statement::Drop { names, .. } => names
            .iter()
            .filter_map(|name| change(name, Privilege::Drop))
            .collect(),
        Statement::Delete(delete) => {
            let from = match &delete.from {
                FromTable::WithFromKeyword(tables) | FromTable::WithoutKeyword(tables) => tables,
            };
            from.iter()
                .filter_map(|t| match &t.relation {
                    TableFactor::Table { name, .. } => change(name, Privilege::Delete),
                    _ => None,
                })
                .collect()
        }
        Statement::Update(update) => match &update.table.relation {
            TableFactor::Table { name, .. } => {
                change(name, Privilege::Update).into_iter().collect()
            }
            _ => Vec::new(),
        },
        _ => Vec::new(),
    }
}

/// Every call of a table-reading function in `statement`: (function, the
/// table text of its first argument).
fn table_function_arguments(statement: &DFStatement) -> Vec<(String, String)> {
    struct Calls(Vec<(String, String)>);
    impl Visitor for Calls {
        type Break = ();
        fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<()> {
            if let TableFactor::Table {
                name,
                args: Some(args),
                ..
            } = factor
            {
                let function = name.to_string().to_lowercase();
                let first = args.args.first().and_then(|arg| match arg {
                    FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::Value(value))) => {
                        match &value.value {
                            Value::SingleQuotedString(text) => Some(text.clone()),
                            _ => None,
                        }
                    }
                    _ => None,
                });
                if let Some(first) =
                    first.filter(|_| TABLE_READING_FUNCTIONS.contains(&function.as_str()))
                {
                    self.0.push((function, first));
                }
            }
            ControlFlow::Continue(())
        }
    }
    let mut calls = Calls(Vec::new());
    let _ = match statement {
        DFStatement::Statement(inner) => inner.visit(&mut calls),
        DFStatement::Explain(explain) => {
            calls.0 = table_function_arguments(&explain.statement);
            ControlFlow::Continue(())
        }
        DFStatement::CopyTo(copy) => match &copy.source {
            datafusion::sql::parser::CopyToSource::Query(query) => query.visit(&mut calls),
            datafusion::sql::parser::CopyToSource::Relation(_) => ControlFlow::Continue(()),
        },
        _ => ControlFlow::Continue(()),
    };
    calls.0
}
