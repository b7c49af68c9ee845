//! What the catalog records about a statement: the run, the tables it read,
//! a write's lineage, and what it changed.

use datafusion::logical_expr::{DdlStatement, LogicalPlan, Statement, WriteOp};

use super::writes::{TableStatement, TableStatementNode};
use super::{EngineError, EngineResult};
use crate::catalog::{Catalog, RunEnd, RunStart, TableKind, WriteLineage};
use crate::lineage::{self, table_name};

/// Who runs statements until authentication exists.
const ANONYMOUS: &str = "anonymous";

/// What a successful statement changes in the catalog.
#[derive(Debug, Clone)]
pub(crate) enum Effect {
    None,
    /// A table or view was created or written: record it and its schema.
    Table {
        name: String,
        kind: TableKind,
        definition: Option<String>,
    },
    Drop(String),
    Setting(String),
}

/// One statement as the catalog sees it.
#[derive(Debug, Clone)]
pub(crate) struct Run {
    pub(crate) id: String,
    pub(crate) sql: String,
    kind: &'static str,
    inputs: Vec<String>,
    write: Option<WriteLineage>,
    pub(crate) effect: Effect,
}

impl Run {
    /// Describes `plan` (planned, not yet run) of the statement `sql`.
    pub(crate) fn describe(
        sql: &str,
        plan: &LogicalPlan,
        views: &std::collections::HashMap<String, LogicalPlan>,
        tables_location: Option<&str>,
    ) -> Self {
        let mut run = Run {
            id: uuid::Uuid::now_v7().to_string(),
            sql: sql.to_string(),
            kind: "query",
            inputs: Vec::new(),
            write: None,
            effect: Effect::None,
        };
        let write = |target: String, columns: Vec<String>, input: &LogicalPlan| WriteLineage {
            target,
            target_types: input
                .schema()
                .fields()
                .iter()
                .map(|f| f.data_type().to_string())
                .collect(),
            target_columns: columns,
            target_location: None,
            lineage: lineage::trace_with_views(input, views),
        };
        if let Some(statement) = TableStatementNode::of(plan) {
            match statement {
                TableStatement::Create {
                    name,
                    input,
                    location,
                    ..
                } => {
                    let target = table_name(name);
                    let folder = match (location, tables_location) {
                        (Some(location), _) => super::writes::location_url(location).ok(),
                        (None, Some(folder)) => super::writes::location_url(&format!(
                            "{}/{}",
                            folder.trim_end_matches('/'),
                            name.table()
                        ))
                        .ok(),
                        (None, None) => None,
                    };
                    run.kind = "write";
                    let mut lineage = write(target.clone(), field_names(input), input);
                    lineage.target_location = folder.map(|url| url.to_string());
                    run.write = Some(lineage);
                    run.effect = Effect::Table {
                        name: target,
                        kind: TableKind::Created,
                        definition: None,
                    };
                }
                TableStatement::DropPurge { name, .. } => {
                    run.kind = "ddl";
                    run.effect = Effect::Drop(table_name(name));
                }
            }
        } else {
            match plan {
                LogicalPlan::Dml(dml) if matches!(dml.op, WriteOp::Insert(_)) => {
                    let target = table_name(&dml.table_name);
                    let table_columns: Vec<String> = dml
                        .target
                        .schema()
                        .fields()
                        .iter()
                        .map(|f| f.name().clone())
                        .collect();
                    let columns = if table_columns.len() == dml.input.schema().fields().len() {
                        table_columns
                    } else {
                        field_names(&dml.input)
                    };
                    run.kind = "write";
                    run.write = Some(write(target.clone(), columns, &dml.input));
                    run.effect = Effect::Table {
                        name: target,
                        kind: TableKind::Created,
                        definition: None,
                    };
                }
                LogicalPlan::Dml(_) => run.kind = "write",
                LogicalPlan::Ddl(DdlStatement::CreateView(view)) => {
                    let target = table_name(&view.name);
                    run.kind = "ddl";
                    run.write = Some(write(target.clone(), field_names(&view.input), &view.input));
                    run.effect = Effect::Table {
                        name: target,
                        kind: TableKind::View,
                        definition: Some(sql.to_string()),
                    };
                }
                LogicalPlan::Ddl(DdlStatement::CreateExternalTable(external)) => {
                    run.kind = "ddl";
                    run.effect = Effect::Table {
                        name: table_name(&external.name),
                        kind: TableKind::External,
                        definition: Some(sql.to_string()),
                    };
                }
                LogicalPlan::Ddl(DdlStatement::DropTable(drop)) => {
                    run.kind = "ddl";
                    run.effect = Effect::Drop(table_name(&drop.name));
                }
                LogicalPlan::Ddl(DdlStatement::DropView(drop)) => {
                    run.kind = "ddl";
                    run.effect = Effect::Drop(table_name(&drop.name));
                }
                LogicalPlan::Ddl(_) => run.kind = "ddl",
                LogicalPlan::Copy(copy) => {
                    run.kind = "write";
                    run.write = Some(write(
                        copy.output_url.clone(),
                        field_names(&copy.input),
                        &copy.input,
                    ));
                }
                LogicalPlan::Statement(Statement::SetVariable(set)) => {
                    run.kind = "ddl";
                    run.effect = Effect::Setting(set.variable.clone());
                }
                LogicalPlan::Statement(_) => run.kind = "ddl",
                query => {
                    run.inputs = lineage::trace_with_views(query, views)
                        .tables
                        .into_iter()
                        .collect();
                }
            }
        }
        if let Some(write) = &run.write {
            run.inputs = write.lineage.tables.iter().cloned().collect();
        }
        run
    }

    /// Records the start. A write that cannot be recorded does not run.
    pub(crate) fn start(&self, catalog: &Catalog) -> EngineResult<()> {
        let start = RunStart {
            id: self.id.clone(),
            sql: self.sql.clone(),
            principal: ANONYMOUS.to_string(),
            kind: self.kind,
        };
        catalog.start_run(&start, self.write.as_ref()).map_err(|e| {
            EngineError::Internal(format!(
                "the catalog cannot record the statement, so it did not run: {e}"
            ))
        })
    }

    /// Records the end, the inputs and a write's lineage.
    pub(crate) fn end(
        &self,
        catalog: &Catalog,
        written: Option<crate::delta::WriteStats>,
        error: Option<String>,
    ) -> EngineResult<()> {
        let end = RunEnd {
            state: if error.is_none() { "COMPLETE" } else { "FAIL" },
            rows_out: written.map(|w| w.rows),
            bytes_out: written.and_then(|w| w.bytes),
            files_out: written.map(|w| w.files).filter(|files| *files > 0),
            error,
        };
        catalog
            .end_run(&self.id, &end, &self.inputs, self.write.as_ref())
            .map_err(|e| {
                EngineError::Internal(format!(
                    "the statement ran, but the catalog could not record its end: {e}"
                ))
            })
    }
}

fn field_names(plan: &LogicalPlan) -> Vec<String> {
    plan.schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect()
}
