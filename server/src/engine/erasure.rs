//! Erasure: `DELETE`, `UPDATE` and `VACUUM` on Tarn's Delta tables.
//!
//! ```sql
//! DELETE FROM customer WHERE c_custkey = 42;                -- a new version without the rows
//! UPDATE customer SET c_phone = NULL WHERE c_custkey = 42;  -- a new version with new values
//! SET tarn.vacuum_retention_check = false;                  -- only to go below the minimum
//! VACUUM customer RETAIN 0 HOURS;                           -- delete the files of old versions
//! VACUUM customer DRY RUN;                                  -- list them only
//! ```
//!
//! DataFusion plans `DELETE` and `UPDATE` (a filter over the table's scan,
//! and for `UPDATE` a projection of the new values); the predicate and the
//! assignments are taken from that plan and handed to `deltalake`, which
//! rewrites the files holding matching rows. Like `INSERT`, each is a run
//! with column lineage (the table from itself, through the filter).
//! `VACUUM` is Tarn's own statement: it needs the `DELETE` privilege and
//! returns the paths of the files it deleted; `tarn.vacuum_retention_check`
//! (`tarn_settings.rs`) guards its retention.

use std::sync::Arc;
use std::time::Duration;

use arrow::array::StringArray;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::tree_node::TreeNode;
use datafusion::common::{DFSchema, DFSchemaRef, TableReference};
use datafusion::logical_expr::dml::DmlStatement;
use datafusion::logical_expr::expr_rewriter::unnormalize_col;
use datafusion::logical_expr::{Expr, Extension, LogicalPlan, WriteOp};
use datafusion::physical_plan::ExecutionPlan;

use super::Engine;
use super::admin::{Cursor, syntax};
use super::error::{EngineError, EngineResult};
use super::session::Session;
use super::statement_node::{leaf_statement_node, node_of};
use super::tarn_settings::TarnSettings;
use crate::delta::{DeltaLakeTable, VacuumRequest, WriteStats};
use crate::runtime::TaskFailure;

const VACUUM: &str = "VACUUM [TABLE] name [RETAIN n HOURS] [DRY RUN]";

/// `VACUUM name [RETAIN n HOURS] [DRY RUN]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct VacuumStatement {
    /// The table, as Tarn records its name.
    pub(crate) table: String,
    /// `RETAIN n HOURS`, in seconds.
    retain_secs: Option<u64>,
    dry_run: bool,
}

impl VacuumStatement {
    /// The statement `sql` is, if it starts with `VACUUM`.
    pub(crate) fn parse(sql: &str) -> Option<EngineResult<Self>> {
        let mut c = Cursor::new(crate::sql_text::tokens(sql)?);
        if !c.eat("VACUUM") {
            return None;
        }
        Some(Self::parse_rest(&mut c))
    }

    fn parse_rest(c: &mut Cursor) -> EngineResult<Self> {
        c.eat("TABLE");
        let table = c.table(VACUUM)?;
        let mut retain_secs = None;
        if c.eat("RETAIN") {
            let hours = c.number(VACUUM)?;
            if !(hours >= 0.0 && hours.is_finite()) {
                return Err(syntax(VACUUM));
            }
            if !(c.eat("HOURS") || c.eat("HOUR")) {
                return Err(syntax(VACUUM));
            }
            retain_secs = Some((hours * 3600.0).round() as u64);
        }
        let dry_run = c.eat("DRY");
        if dry_run {
            c.expect("RUN", VACUUM)?;
        }
        c.end(VACUUM)?;
        Ok(Self {
            table,
            retain_secs,
            dry_run,
        })
    }
}

/// A `VACUUM` as a plan node.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct VacuumNode {
    statement: VacuumStatement,
    schema: DFSchemaRef,
}

impl VacuumNode {
    pub(crate) fn plan(statement: VacuumStatement) -> EngineResult<LogicalPlan> {
        let schema = DFSchema::try_from(vacuum_schema().as_ref().clone())
            .map_err(|e| EngineError::Internal(e.to_string()))?;
        Ok(LogicalPlan::Extension(Extension {
            node: Arc::new(Self {
                statement,
                schema: Arc::new(schema),
            }),
        }))
    }

    pub(crate) fn of(plan: &LogicalPlan) -> Option<&VacuumStatement> {
        node_of::<Self>(plan).map(|node| &node.statement)
    }
}

leaf_statement_node!(VacuumNode, "Vacuum", statement, |node| node.statement.table);

impl PartialOrd for VacuumStatement {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.table.cmp(&other.table))
    }
}

/// One row per file `VACUUM` deleted (or would delete, in a dry run).
fn vacuum_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new("path", DataType::Utf8, false)]))
}

impl Engine {
    /// Runs `VACUUM`; returns the deleted files' paths.
    pub(super) async fn run_vacuum(
        &self,
        statement: &VacuumStatement,
        session: &Session,
    ) -> EngineResult<Arc<dyn ExecutionPlan>> {
        let reference = TableReference::parse_str(&statement.table);
        let table = self.delta_table(&reference, "VACUUM").await?;
        let check_retention = TarnSettings::of_session(session.context()).vacuum_retention_check;
        let request = VacuumRequest {
            retain: statement.retain_secs.map(Duration::from_secs),
            check_retention,
            dry_run: statement.dry_run,
        };
        let vacuumed = self
            .cpu
            .spawn_owned(async move {
                match table.downcast_ref::<DeltaLakeTable>() {
                    Some(table) => table.vacuum(request).await,
                    None => Ok(crate::delta::Vacuumed {
                        files: vec![],
                        dry_run: true,
                    }),
                }
            })
            .await
            .map_err(|e| EngineError::from(TaskFailure::from(e)))??;
        let paths = StringArray::from(vacuumed.files);
        super::execution::batch_result(vacuum_schema(), vec![Arc::new(paths)])
    }

    /// Runs a `DELETE` or `UPDATE`; `None` for other plans.
    pub(super) async fn run_erasure(&self, dml: &DmlStatement) -> EngineResult<Option<WriteStats>> {
        let change = match dml.op {
            WriteOp::Delete => Change::of_delete(&dml.input)?,
            WriteOp::Update => Change::of_update(&dml.input)?,
            _ => return Ok(None),
        };
        let verb = change.verb();
        let table = self.delta_table(&dml.table_name, verb).await?;
        let state = Arc::new(self.ctx.state());
        let stats = self
            .cpu
            .spawn_owned(async move {
                let Some(table) = table.downcast_ref::<DeltaLakeTable>() else {
                    return Ok(WriteStats::default());
                };
                match change {
                    Change::Delete { predicate } => table.delete(state, predicate).await,
                    Change::Update {
                        predicate,
                        assignments,
                    } => table.update(state, predicate, assignments).await,
                }
            })
            .await
            .map_err(|e| EngineError::from(TaskFailure::from(e)))??;
        Ok(Some(stats))
    }

    /// The Delta table `reference` names, for `verb` (which names the
    /// statement in the error when it is not one).
    async fn delta_table(
        &self,
        reference: &TableReference,
        verb: &str,
    ) -> EngineResult<Arc<dyn datafusion::catalog::TableProvider>> {
        let name = crate::names::table_name(reference);
        let provider = self
            .ctx
            .table_provider(reference.clone())
            .await
            .map_err(|_| EngineError::TableNotFound { name: name.clone() })?;
        if provider.downcast_ref::<DeltaLakeTable>().is_none() {
            return Err(EngineError::NotSupported(format!(
                "{verb} changes Tarn's Delta tables only, and '{name}' is a table of plain files or a view; copy it into a Delta table first (CREATE TABLE {name}_delta AS SELECT * FROM {name})"
            )));
        }
        Ok(provider)
    }
}

/// What a `DELETE` or `UPDATE` asks of its table, in the table's own
/// (unqualified) column names.
enum Change {
    Delete {
        predicate: Option<Expr>,
    },
    Update {
        predicate: Option<Expr>,
        assignments: Vec<(String, Expr)>,
    },
}

impl Change {
    fn verb(&self) -> &'static str {
        match self {
            Change::Delete { .. } => "DELETE",
            Change::Update { .. } => "UPDATE",
        }
    }

    /// From DataFusion's plan of `DELETE`: `[Filter] TableScan`.
    fn of_delete(input: &LogicalPlan) -> EngineResult<Self> {
        Ok(Self::Delete {
            predicate: predicate_over_scan(input, "DELETE")?,
        })
    }

    /// From DataFusion's plan of `UPDATE`: `Projection [Filter] TableScan`,
    /// one expression per column, the column itself where it is not set.
    fn of_update(input: &LogicalPlan) -> EngineResult<Self> {
        let LogicalPlan::Projection(projection) = input else {
            return Err(unsupported_shape("UPDATE"));
        };
        let predicate = predicate_over_scan(&projection.input, "UPDATE")?;
        let mut assignments = Vec::new();
        for (expr, field) in projection.expr.iter().zip(projection.schema.fields()) {
            let value = expr.clone().unalias();
            let unchanged = matches!(&value, Expr::Column(column) if column.name == *field.name());
            if !unchanged {
                assignments.push((field.name().clone(), plain(value, "UPDATE")?));
            }
        }
        Ok(Self::Update {
            predicate,
            assignments,
        })
    }
}

/// The predicate of `[Filter] TableScan`, in unqualified column names.
fn predicate_over_scan(plan: &LogicalPlan, verb: &str) -> EngineResult<Option<Expr>> {
    match plan {
        LogicalPlan::TableScan(_) => Ok(None),
        LogicalPlan::Filter(filter)
            if matches!(filter.input.as_ref(), LogicalPlan::TableScan(_)) =>
        {
            plain(filter.predicate.clone(), verb).map(Some)
        }
        _ => Err(unsupported_shape(verb)),
    }
}

/// `expr` with its columns unqualified; refused when it has a subquery,
/// which deltalake cannot run inside its scan of the table.
fn plain(expr: Expr, verb: &str) -> EngineResult<Expr> {
    let subquery = expr
        .exists(|e| {
            Ok(matches!(
                e,
                Expr::ScalarSubquery(_) | Expr::InSubquery(_) | Expr::Exists(_)
            ))
        })
        .unwrap_or(true);
    if subquery {
        return Err(EngineError::NotSupported(format!(
            "{verb} with a subquery; list the values instead (WHERE id IN (1, 2, 3)), or run the subquery first and use its answer"
        )));
    }
    Ok(unnormalize_col(expr))
}

fn unsupported_shape(verb: &str) -> EngineError {
    EngineError::NotSupported(format!(
        "this form of {verb}: Tarn runs {verb} on one table with an optional WHERE (no FROM, joins or LIMIT)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vacuum_statements_are_read_with_their_options() {
        let parse = |sql: &str| VacuumStatement::parse(sql).map(|r| r.map_err(|e| e.to_string()));
        let statement = parse("VACUUM customer").unwrap().unwrap();
        assert_eq!(statement.table, "customer");
        assert_eq!(statement.retain_secs, None);
        assert!(!statement.dry_run);
        let statement = parse("vacuum table tpch.lineitem retain 0 hours dry run;")
            .unwrap()
            .unwrap();
        assert_eq!(statement.table, "tpch.lineitem");
        assert_eq!(statement.retain_secs, Some(0));
        assert!(statement.dry_run);
        let statement = parse("VACUUM t RETAIN 1.5 HOURS").unwrap().unwrap();
        assert_eq!(statement.retain_secs, Some(5400));
        for wrong in [
            "VACUUM",
            "VACUUM t RETAIN",
            "VACUUM t RETAIN 2 DAYS",
            "VACUUM t RETAIN -1 HOURS",
            "VACUUM t DRY",
            "VACUUM t extra",
        ] {
            let err = parse(wrong).unwrap().unwrap_err();
            assert!(err.contains(VACUUM), "{wrong}: {err}");
        }
        assert!(parse("SELECT 'VACUUM t'").is_none());
    }
}
