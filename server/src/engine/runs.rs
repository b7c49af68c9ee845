//! What the catalog records about a statement: the run, the tables it read,
//! a write's lineage, and what it changed.

use datafusion::logical_expr::{DdlStatement, LogicalPlan, Statement, WriteOp};

use super::writes::{TableStatement, TableStatementNode};
use super::{EngineError, EngineResult};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use datafusion::common::TableReference;

use super::Engine;
use crate::catalog::{
    CatalogStore, RunEnd, RunKind, RunStart, RunState, TableOrigin, TableRecord,
    TableVersionRecord, WriteLineage,
};
use crate::delta::DeltaLakeTable;
use crate::lineage;
use crate::names::table_name;

/// What a successful statement changes in the catalog.
#[derive(Debug, Clone)]
pub(crate) enum Effect {
    None,
    /// A table or view was created or written: record it and its schema.
    Table {
        name: String,
        origin: TableOrigin,
        definition: Option<String>,
    },
    Drop(String),
    /// `SET key = ...`: remembered across restarts.
    Setting(String),
    /// `RESET key`: no longer remembered.
    Reset(String),
}

/// One statement as the catalog sees it.
#[derive(Debug, Clone)]
pub(crate) struct Run {
    pub(crate) id: String,
    pub(crate) sql: String,
    principal: String,
    kind: RunKind,
    inputs: Vec<String>,
    write: Option<WriteLineage>,
    pub(crate) effect: Effect,
    /// Whether it makes a new table or view (whose owner its user becomes).
    creates: bool,
}

impl Run {
    /// Describes `plan` (planned, not yet run) of the statement `sql`.
    pub(crate) fn describe(
        sql: &str,
        plan: &LogicalPlan,
        views: &std::collections::HashMap<String, LogicalPlan>,
        tables_location: Option<&str>,
        principal: &str,
    ) -> Self {
        let mut run = Run {
            id: uuid::Uuid::now_v7().to_string(),
            sql: sql.to_string(),
            principal: principal.to_string(),
            kind: RunKind::Query,
            inputs: Vec::new(),
            write: None,
            effect: Effect::None,
            creates: false,
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
        if super::admin::AdminNode::of(plan).is_some()
            || super::grants::GrantNode::of(plan).is_some()
            || super::policies::PolicyNode::of(plan).is_some()
        {
            run.kind = RunKind::Ddl;
        } else if let Some(system) = super::settings::SystemSettingNode::of(plan) {
            // Only the server's defaults are remembered; a session's SET
            // ends with the session.
            run.kind = RunKind::Ddl;
            run.effect = match system.statement() {
                LogicalPlan::Statement(Statement::SetVariable(set)) => {
                    Effect::Setting(set.variable.clone())
                }
                LogicalPlan::Statement(Statement::ResetVariable(reset)) => {
                    Effect::Reset(reset.variable.clone())
                }
                _ => Effect::None,
            };
        } else if let Some(limit) = super::user_limits::LimitNode::of(plan) {
            run.kind = RunKind::Ddl;
            run.effect = match limit.is_reset() {
                true => Effect::Reset(limit.key()),
                false => Effect::Setting(limit.key()),
            };
        } else if let Some(vacuum) = super::erasure::VacuumNode::of(plan) {
            run.kind = RunKind::Write;
            run.inputs = vec![vacuum.table.clone()];
        } else if let Some(name) = super::analyze::AnalyzeTableNode::of(plan) {
            run.kind = RunKind::Ddl;
            run.inputs = vec![table_name(&datafusion::common::TableReference::parse_str(
                name,
            ))];
        } else if let Some(node) = super::table_cache::TableCacheNode::of(plan) {
            run.kind = RunKind::Ddl;
            run.inputs = vec![table_name(&datafusion::common::TableReference::parse_str(
                &node.name,
            ))];
            // Remembered, so the policy holds after a restart; `auto` is the default.
            run.effect = match node.policy() {
                Ok(super::data_cache::CachePolicy::Auto) => Effect::Reset(node.setting_key()),
                _ => Effect::Setting(node.setting_key()),
            };
        } else if let Some(name) = super::refresh::RefreshTableNode::of(plan) {
            run.kind = RunKind::Ddl;
            run.inputs = vec![table_name(&datafusion::common::TableReference::parse_str(
                name,
            ))];
        } else if let Some(statement) = TableStatementNode::of(plan) {
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
                    run.kind = RunKind::Write;
                    let mut lineage = write(target.clone(), field_names(input), input);
                    lineage.target_location = folder.map(|url| url.to_string());
                    run.write = Some(lineage);
                    run.effect = Effect::Table {
                        name: target,
                        origin: TableOrigin::Created,
                        definition: None,
                    };
                }
                TableStatement::DropPurge { name, .. } => {
                    run.kind = RunKind::Ddl;
                    run.effect = Effect::Drop(table_name(name));
                }
            }
        } else {
            match plan {
                LogicalPlan::Dml(dml) if changes_rows(&dml.op) => {
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
                    run.kind = RunKind::Write;
                    let mut lineage = write(target.clone(), columns, &dml.input);
                    lineage.target_location =
                        datafusion::datasource::source_as_provider(&dml.target)
                            .ok()
                            .and_then(|provider| {
                                let table =
                                    provider.downcast_ref::<crate::delta::DeltaLakeTable>()?;
                                Some(table.location().to_string())
                            });
                    run.write = Some(lineage);
                    run.effect = Effect::Table {
                        name: target,
                        origin: TableOrigin::Created,
                        definition: None,
                    };
                }
                LogicalPlan::Dml(_) => run.kind = RunKind::Write,
                LogicalPlan::Ddl(DdlStatement::CreateView(view)) => {
                    let target = table_name(&view.name);
                    run.kind = RunKind::Ddl;
                    run.write = Some(write(target.clone(), field_names(&view.input), &view.input));
                    run.effect = Effect::Table {
                        name: target,
                        origin: TableOrigin::View,
                        definition: Some(sql.to_string()),
                    };
                }
                LogicalPlan::Ddl(DdlStatement::CreateExternalTable(external)) => {
                    run.kind = RunKind::Ddl;
                    run.effect = Effect::Table {
                        name: table_name(&external.name),
                        origin: TableOrigin::External,
                        definition: Some(sql.to_string()),
                    };
                }
                LogicalPlan::Ddl(DdlStatement::DropTable(drop)) => {
                    run.kind = RunKind::Ddl;
                    run.effect = Effect::Drop(table_name(&drop.name));
                }
                LogicalPlan::Ddl(DdlStatement::DropView(drop)) => {
                    run.kind = RunKind::Ddl;
                    run.effect = Effect::Drop(table_name(&drop.name));
                }
                LogicalPlan::Ddl(_) => run.kind = RunKind::Ddl,
                LogicalPlan::Copy(copy) => {
                    run.kind = RunKind::Write;
                    run.write = Some(write(
                        copy.output_url.clone(),
                        field_names(&copy.input),
                        &copy.input,
                    ));
                }
                LogicalPlan::Statement(_) => run.kind = RunKind::Ddl,
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
        let changes_rows = matches!(plan, LogicalPlan::Dml(dml) if changes_rows(&dml.op));
        run.creates = matches!(run.effect, Effect::Table { .. }) && !changes_rows;
        run
    }

    /// Records the start. A statement that changes something and cannot be
    /// recorded does not run, so its start is awaited; a query's is queued
    /// (no query waits on the catalog's disk).
    pub(crate) async fn start(&self, catalog: &dyn CatalogStore) -> EngineResult<()> {
        let start = RunStart {
            id: self.id.clone(),
            sql: self.sql.clone(),
            principal: self.principal.clone(),
            kind: self.kind,
            target_location: self.write.as_ref().and_then(|w| w.target_location.clone()),
        };
        if self.is_query() {
            catalog.start_run_soon(start, self.inputs.clone());
            return Ok(());
        }
        catalog
            .start_run(start, self.inputs.clone(), self.write.clone())
            .await
            .map_err(|e| {
                EngineError::Internal(format!(
                    "the catalog cannot record the statement, so it did not run: {e}"
                ))
            })
    }

    /// Records the end and a write's lineage.
    pub(crate) async fn end(
        &self,
        catalog: &dyn CatalogStore,
        written: Option<crate::delta::WriteStats>,
        error: Option<String>,
    ) -> EngineResult<()> {
        let end = RunEnd {
            state: if error.is_none() {
                RunState::Complete
            } else {
                RunState::Fail
            },
            rows_out: written.map(|w| w.rows),
            bytes_out: written.and_then(|w| w.bytes),
            files_out: written.map(|w| w.files).filter(|files| *files > 0),
            rows_in: written.and_then(|w| w.rows_in),
            bytes_in: written.and_then(|w| w.bytes_in),
            error,
            usage: None,
        };
        catalog
            .end_run(self.id.clone(), end, self.write.clone())
            .await
            .map_err(|e| {
                EngineError::Internal(format!(
                    "the statement ran, but the catalog could not record its end: {e}"
                ))
            })
    }

    /// Whether this run only reads (its end is known when its result has
    /// been streamed, not when it is planned).
    pub(crate) fn is_query(&self) -> bool {
        self.kind == RunKind::Query
    }
}

/// A query's run between planning and the end of its result stream. It is
/// ended exactly once: by [`StreamingRun::finish`] when the stream ends, by
/// [`StreamingRun::abort`] when the result expires, is cancelled or the
/// server stops. Ends are queued to the catalog, never awaited.
#[derive(Debug)]
pub(crate) struct StreamingRun {
    id: String,
    catalog: Arc<dyn CatalogStore>,
    ended: AtomicBool,
}

/// How a streamed result ended.
#[derive(Debug, Clone, Default)]
pub(crate) struct StreamEnd {
    pub(crate) rows_out: u64,
    pub(crate) rows_in: Option<u64>,
    pub(crate) bytes_in: Option<u64>,
    pub(crate) error: Option<String>,
    pub(crate) abandoned: bool,
    pub(crate) usage: Option<crate::catalog::RunUsage>,
}

impl StreamingRun {
    pub(crate) fn new(id: String, catalog: Arc<dyn CatalogStore>) -> Self {
        Self {
            id,
            catalog,
            ended: AtomicBool::new(false),
        }
    }

    /// Records how the stream ended (the first end recorded wins).
    pub(crate) fn finish(&self, end: &StreamEnd) {
        let state = match (&end.error, end.abandoned) {
            (_, true) => RunState::Abort,
            (Some(_), false) => RunState::Fail,
            (None, false) => RunState::Complete,
        };
        self.record(RunEnd {
            state,
            rows_out: Some(end.rows_out),
            bytes_out: None,
            files_out: None,
            rows_in: end.rows_in,
            bytes_in: end.bytes_in,
            error: end.error.clone(),
            usage: end.usage.clone(),
        });
    }

    /// Records that the result will never be streamed, and why (the first
    /// end recorded wins).
    pub(crate) fn abort(&self, reason: &str) {
        self.record(RunEnd {
            state: RunState::Abort,
            rows_out: Some(0),
            bytes_out: None,
            files_out: None,
            rows_in: None,
            bytes_in: None,
            error: Some(reason.to_string()),
            usage: None,
        });
    }

    fn record(&self, end: RunEnd) {
        if !self.ended.swap(true, Ordering::SeqCst) {
            self.catalog.end_run_soon(self.id.clone(), end);
        }
    }
}

/// Each node of `plans` once: a subplan that several places read
/// (`SharedSubplanExec`) is reached from each of them but runs once.
fn distinct_nodes(
    plans: &[Arc<dyn datafusion::physical_plan::ExecutionPlan>],
) -> Vec<Arc<dyn datafusion::physical_plan::ExecutionPlan>> {
    let mut seen = std::collections::HashSet::new();
    let mut nodes = Vec::new();
    let mut pending: Vec<_> = plans.iter().rev().cloned().collect();
    while let Some(node) = pending.pop() {
        if !seen.insert(Arc::as_ptr(&node).cast::<()>() as usize) {
            continue;
        }
        pending.extend(node.children().into_iter().rev().cloned());
        nodes.push(node);
    }
    nodes
}

/// Rows read by the leaves of `plans` and bytes scanned from files, from
/// the plans' metrics after they ran.
pub(crate) fn input_metrics(
    plans: &[Arc<dyn datafusion::physical_plan::ExecutionPlan>],
) -> (Option<u64>, Option<u64>) {
    let (mut rows, mut bytes) = (None, None);
    for node in distinct_nodes(plans) {
        let Some(metrics) = node.metrics() else {
            continue;
        };
        if node.children().is_empty()
            && let Some(out) = metrics.output_rows()
        {
            rows = Some(rows.unwrap_or(0) + out as u64);
        }
        if let Some(scanned) = metrics.sum_by_name("bytes_scanned") {
            bytes = Some(bytes.unwrap_or(0) + scanned.as_usize() as u64);
        }
    }
    (rows, bytes)
}

/// Bytes the operators of `plans` spilled to disk (`None` when none can).
pub(crate) fn spilled_bytes(
    plans: &[Arc<dyn datafusion::physical_plan::ExecutionPlan>],
) -> Option<u64> {
    distinct_nodes(plans)
        .iter()
        .filter_map(|node| node.metrics()?.spilled_bytes())
        .map(|spilled| spilled as u64)
        .reduce(|a, b| a + b)
}

/// The rows the scans of `plans` will read, as their statistics promise
/// (`None` when no scan knows).
pub(crate) fn expected_input_rows(
    plans: &[Arc<dyn datafusion::physical_plan::ExecutionPlan>],
) -> Option<u64> {
    distinct_nodes(plans)
        .iter()
        .filter(|node| node.children().is_empty())
        .filter_map(|leaf| {
            let statistics = datafusion::physical_plan::StatisticsContext::new()
                .compute(
                    leaf.as_ref(),
                    &datafusion::physical_plan::StatisticsArgs::new(),
                )
                .ok()?;
            statistics.num_rows.get_value().map(|&known| known as u64)
        })
        .reduce(|a, b| a + b)
}

/// Whether a DML statement changes the rows of an existing table (`INSERT`,
/// `DELETE`, `UPDATE`): a write with lineage from its input to the table.
fn changes_rows(op: &WriteOp) -> bool {
    matches!(op, WriteOp::Insert(_) | WriteOp::Delete | WriteOp::Update)
}

fn field_names(plan: &LogicalPlan) -> Vec<String> {
    plan.schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect()
}

impl Engine {
    /// Records what a successful statement changed: a table and its schema,
    /// a dropped table, a setting.
    pub(super) async fn record_effect(
        &self,
        catalog: &dyn CatalogStore,
        run: &Run,
    ) -> EngineResult<()> {
        let recorded = match &run.effect {
            Effect::None => return Ok(()),
            Effect::Drop(name) => match catalog.drop_table(name.clone()).await {
                Ok(()) => {
                    let key = super::table_cache::setting_key_of(name);
                    catalog.forget_setting(key).await
                }
                failed => failed,
            },
            Effect::Setting(key) => catalog.record_setting(key.clone(), run.sql.clone()).await,
            Effect::Reset(key) => catalog.forget_setting(key.clone()).await,
            Effect::Table {
                name,
                origin,
                definition,
            } => {
                let reference = TableReference::parse_str(name);
                let Ok(provider) = self.ctx.table_provider(reference).await else {
                    return Ok(());
                };
                let delta = provider.downcast_ref::<DeltaLakeTable>();
                let record = TableRecord {
                    name: name.clone(),
                    origin: *origin,
                    location: delta.map(|d| d.location().to_string()),
                    format: delta.map(|_| "delta".to_string()),
                    definition: definition.clone(),
                };
                let run_id = Some(run.id.clone());
                let recorded = catalog
                    .record_table(record, provider.schema(), run_id.clone())
                    .await;
                let recorded = match (recorded, delta.and_then(DeltaLakeTable::version_stats)) {
                    (Ok(_), Some(stats)) => {
                        // A new version of a table Tarn writes: its statistics follow.
                        self.analyzer.analyze_soon(&self.scans, name.clone());
                        catalog
                            .record_table_version(name.clone(), version_record(stats), run_id)
                            .await
                    }
                    (recorded, _) => recorded.map(|_| ()),
                };
                match recorded {
                    Ok(()) if run.creates => self.record_owner(name, &run.principal).await,
                    recorded => recorded,
                }
            }
        };
        if let Effect::Drop(name) = &run.effect {
            self.analyzer.known.forget(name);
            self.reload_privileges().await?;
        }
        recorded.map_err(|e| {
            EngineError::Internal(format!(
                "the statement ran, but the catalog could not record it: {e}"
            ))
        })
    }
}

impl Engine {
    /// Makes `user` the owner of the table it created (a user of its own:
    /// not `anonymous`, when authentication is off).
    async fn record_owner(&self, table: &str, user: &str) -> crate::catalog::CatalogResult<()> {
        let Some(store) = &self.grant_store else {
            return Ok(());
        };
        if user == crate::identity::ANONYMOUS {
            return Ok(());
        }
        store.set_owner(table.to_string(), user.to_string()).await?;
        self.privileges.reload().await
    }
}

/// The catalog's record of the size of a Delta table's version.
pub fn version_record(stats: crate::delta::VersionStats) -> TableVersionRecord {
    TableVersionRecord {
        version: stats.version,
        rows: stats.rows,
        files: stats.files,
        bytes: stats.bytes,
    }
}
