//! The engine: plans and executes SQL with DataFusion. It knows nothing of
//! gRPC or Flight; the transport hands it SQL text, handles and parameter
//! batches, and gets back schemas, record batch streams and typed errors.
//!
//! Invariants:
//! - A statement is planned once. The physical plan that a `FlightInfo`
//!   describes is the one a later `DoGet` executes.
//! - Statements with side effects (DDL, INSERT, COPY, SET) run when they are
//!   submitted, never lazily when (or if) their result is fetched.
//! - Results leave in wire types ([`WireTypes`]); the promised schema is the
//!   streamed schema.

mod as_of;
mod corruption;
pub mod error;
mod ids;
mod locations;
mod metadata;
mod placeholders;
mod prepared;
mod results;
mod runs;
mod settings;
mod statement;
mod time_travel;
pub mod wire;
mod writes;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, RecordBatch, UInt64Array};
use arrow::datatypes::{Schema, SchemaRef};
use datafusion::catalog::TableProvider;
use datafusion::catalog::memory::MemorySourceConfig;
use datafusion::common::{ParamValues, TableReference};
use datafusion::datasource::listing::{ListingTable, ListingTableConfig};
use datafusion::datasource::source_as_provider;
use datafusion::error::DataFusionError;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::TaskContext;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::logical_expr::LogicalPlan;
use datafusion::logical_expr::WriteOp;
use datafusion::logical_expr::dml::InsertOp;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{ExecutionPlan, SendableRecordBatchStream, execute_stream};
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::sql::parser::Statement as DFStatement;
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

pub use error::{EngineError, EngineResult};
pub use locations::LocationPolicy;
pub use metadata::{TableInfo, TableKind};
pub use prepared::{PreparedStatementId, PreparedStatementInfo};
pub use results::ResultId;
pub use statement::StatementLimits;
pub use wire::WireTypes;

use crate::catalog::{CatalogStore, TableOrigin, TableRecord, TableVersionRecord};
use crate::delta::{DeltaLakeTable, WriteStats};
use crate::runtime::{CpuRuntime, TaskFailure};
use prepared::PreparedStatements;
use results::ResultStore;

pub use crate::names::{DEFAULT_CATALOG, DEFAULT_SCHEMA};

/// How the engine plans and executes.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Parallelism of one query (DataFusion `target_partitions`); 0 means one per core.
    pub target_partitions: usize,
    /// Rows per record batch.
    pub batch_size: usize,
    /// Worker threads of the CPU runtime; 0 means one per core.
    pub cpu_threads: usize,
    /// How long a planned result waits for its `DoGet` before it is dropped.
    pub result_ttl: Duration,
    /// How long an unused prepared statement is kept.
    pub prepared_statement_ttl: Duration,
    /// Which Arrow types results are sent as.
    pub wire_types: WireTypes,
    /// DataFusion settings (`datafusion.*` keys) applied on top of Tarn's.
    pub datafusion_settings: Vec<(String, String)>,
    /// Where statements may read and write (`CREATE EXTERNAL TABLE`, `COPY`).
    pub locations: LocationPolicy,
    /// How long a table's file listing (or Delta snapshot) is reused: files
    /// another writer adds or removes become visible within this time.
    pub listing_cache_ttl: Duration,
    /// The folder URL (ending in `/`) where `CREATE TABLE` without a
    /// `LOCATION` puts a table; `None` requires a `LOCATION`.
    pub tables_location: Option<String>,
    /// How long and how deeply nested a statement may be.
    pub limits: StatementLimits,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            target_partitions: 0,
            batch_size: 8192,
            cpu_threads: 0,
            result_ttl: Duration::from_secs(300),
            prepared_statement_ttl: Duration::from_secs(3600),
            wire_types: WireTypes::Plain,
            datafusion_settings: Vec::new(),
            locations: LocationPolicy::default(),
            listing_cache_ttl: Duration::from_secs(10),
            tables_location: None,
            limits: StatementLimits::default(),
        }
    }
}

/// A planned query, ready to stream.
///
/// Usually one physical plan; a prepared statement bound to several
/// parameter rows runs one plan per row and streams them in order.
#[derive(Debug, Clone)]
pub struct PlannedQuery {
    schema: SchemaRef,
    plans: Vec<Arc<dyn ExecutionPlan>>,
    task_ctx: Arc<TaskContext>,
    /// The catalog runs that end when the result has been streamed.
    runs: Vec<Arc<runs::StreamingRun>>,
}

impl PlannedQuery {
    /// The schema every batch of the result has.
    pub fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    /// Ends the runs of a result that will never be streamed, with `reason`.
    fn abort_runs(&self, reason: &str) {
        for run in &self.runs {
            run.abort(reason);
        }
    }
}

/// The SQL engine shared by every connection.
pub struct Engine {
    ctx: SessionContext,
    cpu: CpuRuntime,
    results: ResultStore,
    prepared: PreparedStatements,
    options: EngineOptions,
    catalog: Option<Arc<dyn CatalogStore>>,
    /// Why stores serve no tables, for `SHOW TABLES` on an empty lake.
    empty_stores: std::sync::RwLock<Vec<String>>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// Creates an engine with an empty catalog.
    pub fn new(options: EngineOptions) -> EngineResult<Self> {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let target_partitions = match options.target_partitions {
            0 => cores,
            n => n,
        };
        let mut config = SessionConfig::new()
            .with_default_catalog_and_schema(DEFAULT_CATALOG, DEFAULT_SCHEMA)
            .with_create_default_catalog_and_schema(true)
            .with_information_schema(true)
            .with_target_partitions(target_partitions)
            .with_batch_size(options.batch_size.max(1))
            .set_bool("datafusion.execution.parquet.pushdown_filters", true)
            .set_bool("datafusion.execution.parquet.reorder_filters", true);
        for (key, value) in &options.datafusion_settings {
            config.options_mut().set(key, value).map_err(|e| {
                EngineError::Plan(format!(
                    "invalid DataFusion setting {key} = {value}: {}",
                    e.strip_backtrace()
                ))
            })?;
        }
        // Listings are cached (S3 LIST calls are slow and billed) but expire,
        // so files written by others show up; Parquet footers stay in
        // DataFusion's memory-bounded metadata cache, keyed by file version.
        let runtime = RuntimeEnvBuilder::new()
            .with_object_list_cache_ttl(Some(options.listing_cache_ttl))
            .build_arc()
            .map_err(|e| {
                EngineError::Internal(format!("cannot build the runtime environment: {e}"))
            })?;
        // Delta writes plan nodes of their own; this planner knows them and
        // otherwise plans as DataFusion's default planner does.
        let state = SessionStateBuilder::new()
            .with_config(config)
            .with_runtime_env(runtime)
            .with_default_features()
            .with_query_planner(deltalake::delta_datafusion::planner::DeltaPlanner::new())
            .build();
        let ctx = SessionContext::new_with_state(state);
        ctx.register_udtf(
            "time_travel",
            Arc::new(time_travel::TimeTravel::new(Arc::clone(
                ctx.state().catalog_list(),
            ))),
        );
        ctx.state_ref().write().table_factories_mut().insert(
            "DELTA".to_string(),
            Arc::new(writes::DeltaTableFactory {
                freshness: options.listing_cache_ttl,
            }),
        );
        let cpu_threads = match options.cpu_threads {
            0 => cores,
            n => n,
        };
        let cpu = CpuRuntime::new(cpu_threads)
            .map_err(|e| EngineError::Internal(format!("cannot start the query runtime: {e}")))?;
        Ok(Self {
            ctx,
            cpu,
            results: ResultStore::new(options.result_ttl),
            prepared: PreparedStatements::new(options.prepared_statement_ttl),
            options,
            catalog: None,
            empty_stores: Default::default(),
        })
    }

    /// Records every run, its lineage and the tables it creates in `catalog`.
    pub fn with_catalog(mut self, catalog: Arc<dyn CatalogStore>) -> Self {
        self.catalog = Some(catalog);
        self
    }

    /// Remembers why stores serve no tables (found at start), so that `SHOW
    /// TABLES` on a lake without tables can say why.
    pub fn explain_an_empty_lake(&self, empty_stores: Vec<String>) {
        if let Ok(mut notes) = self.empty_stores.write() {
            *notes = empty_stores;
        }
    }

    /// `SHOW TABLES` when the lake serves no table: the reason, instead of
    /// a list of system tables only.
    fn refuse_to_show_an_empty_lake(&self, statement: &DFStatement) -> EngineResult<()> {
        let show_tables = matches!(statement, DFStatement::Statement(inner)
            if matches!(inner.as_ref(), datafusion::sql::sqlparser::ast::Statement::ShowTables { .. }));
        if !show_tables {
            return Ok(());
        }
        let has_tables = self
            .ctx
            .catalog(DEFAULT_CATALOG)
            .and_then(|c| c.schema(DEFAULT_SCHEMA))
            .is_some_and(|schema| !schema.table_names().is_empty());
        let notes = self
            .empty_stores
            .read()
            .map(|notes| notes.clone())
            .unwrap_or_default();
        if has_tables || notes.is_empty() {
            return Ok(());
        }
        Err(EngineError::EmptyLake(notes.join("; ")))
    }

    /// The catalog runs are recorded in, if any.
    pub fn catalog_store(&self) -> Option<&Arc<dyn CatalogStore>> {
        self.catalog.as_ref()
    }

    /// The DataFusion session, for registering tables.
    pub fn session(&self) -> &SessionContext {
        &self.ctx
    }

    /// How soon files and commits of other writers become visible.
    pub fn freshness(&self) -> Duration {
        self.options.listing_cache_ttl
    }

    /// How long a planned result waits for its `DoGet`.
    pub fn result_ttl(&self) -> Duration {
        self.options.result_ttl
    }

    /// When a result parked now stops being fetchable.
    pub fn result_expiry(&self) -> std::time::SystemTime {
        self.results.expiry_from_now()
    }

    /// Runs `work` on the CPU runtime. Every statement is parsed, planned
    /// and (for side effects) run there: those steps recurse deeply and read
    /// file metadata, and a panic in them fails the statement, not a thread
    /// that serves the network.
    async fn on_cpu<T, F, Fut>(self: &Arc<Self>, work: F) -> EngineResult<T>
    where
        F: FnOnce(Arc<Self>) -> Fut,
        Fut: Future<Output = EngineResult<T>> + Send + 'static,
        T: Send + 'static,
    {
        let future = work(Arc::clone(self));
        self.cpu.run(future).await.map_err(EngineError::from)?
    }

    /// The schema `sql` would return, without running it.
    pub async fn schema_of(self: &Arc<Self>, sql: &str) -> EngineResult<SchemaRef> {
        let sql = sql.to_string();
        self.on_cpu(|engine| async move { engine.schema_of_on_cpu(&sql).await })
            .await
    }

    /// Plans a statement for streaming. Statements with side effects run now;
    /// their (small) outcome is what the result streams.
    pub async fn plan_query(self: &Arc<Self>, sql: &str) -> EngineResult<PlannedQuery> {
        let sql = sql.to_string();
        self.on_cpu(|engine| async move { engine.plan_query_on_cpu(&sql).await })
            .await
    }

    /// Runs a statement that changes something and returns the number of rows
    /// it affected (0 for DDL).
    pub async fn execute_update(self: &Arc<Self>, sql: &str) -> EngineResult<u64> {
        let sql = sql.to_string();
        self.on_cpu(|engine| async move { engine.execute_update_on_cpu(&sql).await })
            .await
    }

    /// Runs `sql` as it was recorded earlier (views, settings restored at
    /// start), without recording it again.
    pub async fn replay(self: &Arc<Self>, sql: &str) -> EngineResult<()> {
        let sql = sql.to_string();
        self.on_cpu(|engine| async move { engine.replay_on_cpu(&sql).await })
            .await
    }

    /// Prepares `sql`: plans it with its placeholders, runs nothing.
    pub async fn prepare(self: &Arc<Self>, sql: &str) -> EngineResult<PreparedStatementInfo> {
        let sql = sql.to_string();
        self.on_cpu(|engine| async move { engine.prepare_on_cpu(&sql).await })
            .await
    }

    /// Plans a prepared query with its bound parameters.
    pub async fn plan_prepared_query(
        self: &Arc<Self>,
        id: &PreparedStatementId,
    ) -> EngineResult<PlannedQuery> {
        let id = *id;
        self.on_cpu(|engine| async move { engine.plan_prepared_query_on_cpu(&id).await })
            .await
    }

    /// Runs a prepared update once per bound parameter row; returns the total
    /// number of affected rows.
    pub async fn execute_prepared_update(
        self: &Arc<Self>,
        id: &PreparedStatementId,
    ) -> EngineResult<u64> {
        let id = *id;
        self.on_cpu(|engine| async move { engine.execute_prepared_update_on_cpu(&id).await })
            .await
    }

    /// Plans `sql` into a logical plan, without executing anything.
    async fn logical_plan(&self, sql: &str) -> EngineResult<LogicalPlan> {
        let state = self.ctx.state();
        let mut statement = statement::parse(&state, sql, self.options.limits)?;
        self.refuse_to_show_an_empty_lake(&statement)?;
        placeholders::number_question_marks(&mut statement);
        let clauses = writes::take_clauses(&mut statement)?;
        // Known before planning consumes the statement, to name a missing table.
        let references = state
            .resolve_table_references(&statement)
            .unwrap_or_default();
        match state.statement_to_plan(statement).await {
            Ok(plan) => writes::rewrite_plan(plan, clauses),
            Err(err) => Err(self.explain_planning_error(references, err)),
        }
    }

    /// Plans a statement that is executed directly (not prepared): it must
    /// not have placeholders, since nothing can bind them.
    async fn direct_plan(&self, sql: &str) -> EngineResult<LogicalPlan> {
        let plan = self.logical_plan(sql).await?;
        let mut names: Vec<String> = plan
            .get_parameter_names()
            .map_err(EngineError::from_planning)?
            .into_iter()
            .collect();
        if !names.is_empty() {
            names.sort();
            return Err(EngineError::InvalidParameters(format!(
                "the statement has placeholders ({}); prepare it and bind values, or write the values inline",
                names.join(", ")
            )));
        }
        Ok(plan)
    }

    /// Turns a planning failure into the most useful error: a missing table
    /// is named as the statement wrote it.
    fn explain_planning_error(
        &self,
        references: Vec<TableReference>,
        err: datafusion::error::DataFusionError,
    ) -> EngineError {
        let missing_table = matches!(err.find_root(),
            datafusion::error::DataFusionError::Plan(msg) if msg.starts_with("table '") && msg.ends_with("not found"));
        if !missing_table {
            return EngineError::from_planning(err);
        }
        let state = self.ctx.state();
        for reference in references {
            // Table functions (`generate_series(...)`) are references too.
            let function = reference.schema().is_none()
                && state.table_functions().contains_key(reference.table());
            if !function && !matches!(self.ctx.table_exist(reference.clone()), Ok(true)) {
                return EngineError::TableNotFound {
                    name: reference.to_string(),
                };
            }
        }
        EngineError::from_planning(err)
    }

    /// The schema `sql` would return, without running it.
    async fn schema_of_on_cpu(&self, sql: &str) -> EngineResult<SchemaRef> {
        let plan = self.logical_plan(sql).await?;
        Ok(self
            .options
            .wire_types
            .wire_schema(plan.schema().as_arrow()))
    }

    /// Plans a statement for streaming. Statements with side effects run now;
    /// their (small) outcome is what the result streams.
    async fn plan_query_on_cpu(&self, sql: &str) -> EngineResult<PlannedQuery> {
        if let Some(table) = refresh_target(sql) {
            self.refresh_table(&table).await?;
            return Ok(self.no_rows());
        }
        let plan = self.direct_plan(sql).await?;
        let (physical, run) = self.to_physical(sql, plan).await?;
        Ok(PlannedQuery {
            schema: physical.schema(),
            plans: vec![physical],
            task_ctx: self.ctx.task_ctx(),
            runs: run.into_iter().collect(),
        })
    }

    /// Runs a statement that changes something and returns the number of rows
    /// it affected (0 for DDL).
    async fn execute_update_on_cpu(&self, sql: &str) -> EngineResult<u64> {
        if let Some(table) = refresh_target(sql) {
            self.refresh_table(&table).await?;
            return Ok(0);
        }
        let plan = self.direct_plan(sql).await?;
        self.run_update(sql, plan).await
    }

    /// Runs `sql` as it was recorded earlier (views, settings restored at
    /// start), without recording it again.
    async fn replay_on_cpu(&self, sql: &str) -> EngineResult<()> {
        let plan = self.direct_plan(sql).await?;
        self.execute_plan(plan).await.map(|_| ())
    }

    async fn run_update(&self, sql: &str, plan: LogicalPlan) -> EngineResult<u64> {
        if !has_side_effects(&plan) {
            return Err(EngineError::WrongStatementKind(
                "this statement returns rows: execute it as a query, not as an update".into(),
            ));
        }
        let (physical, _) = self.to_physical(sql, plan).await?;
        let batches = self.collect(physical).await?;
        Ok(affected_rows(&batches))
    }

    /// Logical plan to physical plan, running side effects on the way, and
    /// recording the run (and a write's lineage) in the catalog.
    async fn to_physical(
        &self,
        sql: &str,
        plan: LogicalPlan,
    ) -> EngineResult<(Arc<dyn ExecutionPlan>, Option<Arc<runs::StreamingRun>>)> {
        let Some(catalog) = self.catalog.clone() else {
            return self.execute_plan(plan).await.map(|(exec, _)| (exec, None));
        };
        let views = self.views_in(&plan).await;
        let run = runs::Run::describe(sql, &plan, &views, self.options.tables_location.as_deref());
        run.start(catalog.as_ref()).await?;
        let outcome = self.execute_plan(plan).await;
        if run.is_query()
            && let Ok((exec, _)) = outcome
        {
            // A query's run ends when its result has been streamed.
            let streaming = runs::StreamingRun::new(run.id.clone(), catalog);
            return Ok((exec, Some(Arc::new(streaming))));
        }
        let stats = outcome.as_ref().ok().and_then(|(_, stats)| *stats);
        let error = outcome.as_ref().err().map(|e| e.to_string());
        // The table first, so the run's COMPLETE event knows its location.
        if outcome.is_ok() {
            self.record_effect(catalog.as_ref(), &run).await?;
        }
        run.end(catalog.as_ref(), stats, error).await?;
        outcome.map(|(exec, _)| (exec, None))
    }

    /// The views `plan` reads (DataFusion expands them in place), by name.
    async fn views_in(&self, plan: &LogicalPlan) -> HashMap<String, LogicalPlan> {
        let mut aliases = Vec::new();
        let _ = plan.apply_with_subqueries(|node| {
            if let LogicalPlan::SubqueryAlias(alias) = node {
                aliases.push(alias.alias.clone());
            }
            Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
        });
        let mut views = HashMap::new();
        for alias in aliases {
            if let Ok(provider) = self.ctx.table_provider(alias.clone()).await
                && let Some(view) = provider.downcast_ref::<datafusion::catalog::view::ViewTable>()
            {
                views.insert(
                    crate::names::table_name(&alias),
                    view.logical_plan().clone(),
                );
            }
        }
        views
    }

    /// Records what a successful statement changed: a table and its schema,
    /// a dropped table, a setting.
    async fn record_effect(&self, catalog: &dyn CatalogStore, run: &runs::Run) -> EngineResult<()> {
        let recorded = match &run.effect {
            runs::Effect::None => return Ok(()),
            runs::Effect::Drop(name) => catalog.drop_table(name.clone()).await,
            runs::Effect::Setting(key) => {
                catalog.record_setting(key.clone(), run.sql.clone()).await
            }
            runs::Effect::Reset(key) => catalog.forget_setting(key.clone()).await,
            runs::Effect::Table {
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
                match (recorded, delta.and_then(DeltaLakeTable::version_stats)) {
                    (Ok(_), Some(stats)) => {
                        catalog
                            .record_table_version(name.clone(), version_record(stats), run_id)
                            .await
                    }
                    (recorded, _) => recorded.map(|_| ()),
                }
            }
        };
        recorded.map_err(|e| {
            EngineError::Internal(format!(
                "the statement ran, but the catalog could not record it: {e}"
            ))
        })
    }

    /// Logical plan to physical plan, running side effects on the way;
    /// returns the rows a write wrote.
    async fn execute_plan(
        &self,
        plan: LogicalPlan,
    ) -> EngineResult<(Arc<dyn ExecutionPlan>, Option<WriteStats>)> {
        self.options.locations.check_plan(&plan)?;
        settings::check_plan(&plan)?;
        if let Some(stats) = self.run_table_write(&plan).await? {
            return count_result(stats.rows).map(|exec| (exec, Some(stats)));
        }
        let side_effects = has_side_effects(&plan);
        let plan = if side_effects {
            plan
        } else {
            self.options.wire_types.cast_plan(plan)?
        };
        // For DDL this is what runs the statement. Planning reads file
        // metadata, so it runs on the CPU runtime, where a reader that
        // panics on a corrupt file fails this statement, not the server.
        let ctx = self.ctx.clone();
        let planned = plan.clone();
        let outcome = self
            .cpu
            .spawn(async move {
                let frame = ctx.execute_logical_plan(plan).await?;
                frame.create_physical_plan().await
            })
            .await;
        let failure = match outcome {
            Ok(Ok(physical)) => Ok(physical),
            Ok(Err(err)) => Err(EngineError::from_planning(err)),
            Err(join) => Err(TaskFailure::from(join).into()),
        };
        let physical = match failure {
            Ok(physical) => physical,
            Err(err) if err.may_be_a_corrupt_file() => {
                let runtime = self.ctx.runtime_env();
                return Err(
                    match corruption::in_logical_plan(&runtime, &planned).await {
                        Some(named) => EngineError::Corrupt(named),
                        None => err,
                    },
                );
            }
            Err(err) => return Err(err),
        };
        if !side_effects {
            return Ok((physical, None));
        }
        // DML/COPY run now, not when (or if) the client fetches the count.
        let schema = physical.schema();
        let ran = Arc::clone(&physical);
        let batches = self.collect(physical).await?;
        let rows = affected_rows(&batches);
        let (rows_in, bytes_in) = runs::input_metrics(&[ran]);
        let exec: Arc<dyn ExecutionPlan> = if batches.is_empty() {
            Arc::new(datafusion::physical_plan::empty::EmptyExec::new(schema))
        } else {
            MemorySourceConfig::try_new_from_batches(schema, batches)
                .map_err(|e| EngineError::Internal(e.to_string()))?
        };
        let stats = WriteStats {
            rows,
            bytes: None,
            files: 0,
            rows_in,
            bytes_in,
        };
        Ok((exec, Some(stats)))
    }

    /// Runs `plan` if it writes a Delta table; returns what it wrote.
    async fn run_table_write(&self, plan: &LogicalPlan) -> EngineResult<Option<WriteStats>> {
        if let Some(statement) = writes::TableStatementNode::of(plan) {
            return match statement.clone() {
                writes::TableStatement::Create {
                    name,
                    location,
                    partition_by,
                    if_not_exists,
                    or_replace,
                    input,
                } => {
                    let new = NewTableRequest {
                        name,
                        location,
                        partition_by,
                        if_not_exists,
                        or_replace,
                    };
                    self.create_table(new, input.as_ref().clone())
                        .await
                        .map(Some)
                }
                writes::TableStatement::DropPurge { name, if_exists } => self
                    .purge_table(name, if_exists)
                    .await
                    .map(|()| Some(WriteStats::default())),
            };
        }
        let LogicalPlan::Dml(dml) = plan else {
            return Ok(None);
        };
        let WriteOp::Insert(op) = dml.op else {
            return Ok(None);
        };
        let provider = source_as_provider(&dml.target).map_err(EngineError::from_planning)?;
        if provider.downcast_ref::<DeltaLakeTable>().is_none() {
            return Ok(None);
        }
        let overwrite = matches!(op, InsertOp::Overwrite);
        let (state, input) = (Arc::new(self.ctx.state()), dml.input.as_ref().clone());
        let rows = self
            .cpu
            .spawn(async move {
                match provider.downcast_ref::<DeltaLakeTable>() {
                    Some(table) => table.append(state, input, overwrite).await,
                    None => Ok(WriteStats::default()),
                }
            })
            .await
            .map_err(|e| EngineError::from(TaskFailure::from(e)))??;
        Ok(Some(rows))
    }

    /// `CREATE [OR REPLACE] TABLE [IF NOT EXISTS] ...`: a new Delta table.
    async fn create_table(
        &self,
        new: NewTableRequest,
        input: LogicalPlan,
    ) -> EngineResult<WriteStats> {
        let existing = self.ctx.table_provider(new.name.clone()).await.ok();
        match &existing {
            Some(_) if new.if_not_exists => return Ok(WriteStats::default()),
            Some(_) if !new.or_replace => {
                return Err(EngineError::AlreadyExists(format!(
                    "table '{}' already exists; use CREATE OR REPLACE TABLE, or DROP TABLE it first",
                    new.name
                )));
            }
            _ => {}
        }
        let existing_delta = existing
            .as_ref()
            .and_then(|p| p.downcast_ref::<DeltaLakeTable>())
            .map(|t| t.location().clone());
        if existing.is_some() && existing_delta.is_none() {
            return Err(EngineError::AlreadyExists(format!(
                "table '{}' is a table of plain files, which OR REPLACE cannot replace atomically; DROP TABLE it first",
                new.name
            )));
        }
        // The location that is checked is the one written.
        let location = match (&new.location, existing_delta) {
            (Some(location), _) => writes::as_folder(self.options.locations.check(location)?),
            (None, Some(current)) => current,
            (None, None) => {
                let default = self.default_location(new.name.table())?;
                writes::as_folder(self.options.locations.check(default.as_str())?)
            }
        };
        let root = crate::delta::root_store(&self.ctx.runtime_env(), &location)
            .map_err(EngineError::from_planning)?;
        let request = crate::delta::NewTable {
            location: location.clone(),
            partition_by: new.partition_by.clone(),
            replace: new.or_replace,
        };
        let (state, task_root) = (Arc::new(self.ctx.state()), Arc::clone(&root));
        let (table, stats) = self
            .cpu
            .spawn(async move { crate::delta::create(task_root, &request, state, input).await })
            .await
            .map_err(|e| EngineError::from(TaskFailure::from(e)))??;
        let provider =
            DeltaLakeTable::with_table(root, location, table, self.options.listing_cache_ttl)
                .await?;
        if existing.is_some() {
            let _ = self.ctx.deregister_table(new.name.clone());
        }
        self.ctx
            .register_table(new.name, Arc::new(provider))
            .map_err(EngineError::from_planning)?;
        Ok(stats)
    }

    /// Where a new table goes without a `LOCATION`: a folder named after it.
    fn default_location(&self, table: &str) -> EngineResult<url::Url> {
        let Some(folder) = &self.options.tables_location else {
            return Err(EngineError::Plan(
                "no store is set for new tables; add LOCATION '<folder or s3:// URL>'".into(),
            ));
        };
        let plain = !table.is_empty()
            && table
                .chars()
                .all(|c| c.is_alphanumeric() || c == '_' || c == '-')
            && !table.starts_with(['_', '.']);
        if !plain {
            return Err(EngineError::Plan(format!(
                "table name '{table}' cannot be a folder name; use letters, digits, '_' and '-' (not first), or add LOCATION"
            )));
        }
        let folder = folder.trim_end_matches('/');
        writes::location_url(&format!("{folder}/{table}"))
    }

    /// `DROP TABLE name PURGE`: forget the table and delete its files.
    async fn purge_table(&self, name: TableReference, if_exists: bool) -> EngineResult<()> {
        let provider = match self.ctx.table_provider(name.clone()).await {
            Ok(provider) => provider,
            Err(_) if if_exists => return Ok(()),
            Err(_) => {
                return Err(EngineError::TableNotFound {
                    name: name.to_string(),
                });
            }
        };
        let Some(table) = provider.downcast_ref::<DeltaLakeTable>() else {
            return Err(EngineError::NotSupported(format!(
                "PURGE deletes Delta tables only; '{name}' is a table of plain files: DROP TABLE it without PURGE and delete its files in the store"
            )));
        };
        let _ = self.ctx.deregister_table(name);
        crate::delta::purge(table.root(), table.location()).await?;
        Ok(())
    }

    /// Executes `plan` on the CPU runtime and gathers its batches.
    async fn collect(&self, plan: Arc<dyn ExecutionPlan>) -> EngineResult<Vec<RecordBatch>> {
        let task_ctx = self.ctx.task_ctx();
        let checked = Arc::clone(&plan);
        let outcome = self
            .cpu
            .spawn(async move { datafusion::physical_plan::collect(plan, task_ctx).await })
            .await;
        let err = match outcome {
            Ok(Ok(batches)) => return Ok(batches),
            Ok(Err(err)) => EngineError::from_execution(err),
            Err(join) => TaskFailure::from(join).into(),
        };
        if !err.may_be_a_corrupt_file() {
            return Err(err);
        }
        let runtime = self.ctx.runtime_env();
        Err(
            match corruption::in_physical_plans(&runtime, &[checked]).await {
                Some(named) => EngineError::Corrupt(named),
                None => err,
            },
        )
    }

    /// Streams the result of a planned query. The plan runs on the CPU
    /// runtime; dropping the stream cancels it.
    pub fn execute(&self, query: PlannedQuery) -> SendableRecordBatchStream {
        let PlannedQuery {
            schema,
            plans,
            task_ctx,
            runs,
        } = query;
        // Two batches in flight keep the network busy without buffering the result.
        let (tx, rx) = mpsc::channel(2);
        let failure_tx = tx.clone();
        let (checked, runtime) = (plans.clone(), task_ctx.runtime_env());
        let driver = self.cpu.spawn(async move {
            let mut sent = 0_u64;
            for plan in plans {
                let mut stream = match execute_stream(plan, Arc::clone(&task_ctx)) {
                    Ok(stream) => stream,
                    Err(err) => return (sent, Some(err), false),
                };
                while let Some(item) = stream.next().await {
                    let item = match item {
                        Ok(batch) if batch.num_rows() == 0 => continue,
                        Ok(batch) => batch,
                        // Reported by the task below, with the file named if it can be.
                        Err(err) => return (sent, Some(err), false),
                    };
                    let rows = item.num_rows() as u64;
                    if tx.send(Ok(item)).await.is_err() {
                        // The client went away: dropping `stream` stops the work.
                        return (sent, None, true);
                    }
                    sent += rows;
                }
            }
            (sent, None, false)
        });
        // A failure, even a panic in the driver (a reader crashing on a
        // corrupt file), must end the stream with an error, never look like a
        // complete result.
        self.cpu.spawn(async move {
            let (sent, failure, abandoned) = match driver.await {
                Ok(outcome) => outcome,
                Err(e) => (0, Some(DataFusionError::ExecutionJoin(Box::new(e))), false),
            };
            let (rows_in, bytes_in) = runs::input_metrics(&checked);
            let end = runs::StreamEnd {
                rows_out: sent,
                rows_in,
                bytes_in,
                error: failure.as_ref().map(|e| e.to_string()),
                abandoned,
            };
            for run in &runs {
                run.finish(&end);
            }
            let Some(err) = failure else {
                return;
            };
            let err = match error::may_be_a_corrupt_file(&err) {
                true => match corruption::in_physical_plans(&runtime, &checked).await {
                    Some(named) => corruption::named(named),
                    None => err,
                },
                false => err,
            };
            let _ = failure_tx.send(Err(err)).await;
        });
        Box::pin(RecordBatchStreamAdapter::new(
            schema,
            ReceiverStream::new(rx),
        ))
    }

    /// The result of a statement that returns nothing.
    fn no_rows(&self) -> PlannedQuery {
        let empty = Arc::new(datafusion::physical_plan::empty::EmptyExec::new(Arc::new(
            Schema::empty(),
        )));
        PlannedQuery {
            schema: empty.schema(),
            plans: vec![empty],
            task_ctx: self.ctx.task_ctx(),
            runs: Vec::new(),
        }
    }

    /// `REFRESH TABLE name`: forget cached file listings, so files others
    /// added or removed are seen by the next query.
    async fn refresh_table(&self, name: &str) -> EngineResult<()> {
        let reference = datafusion::common::TableReference::parse_str(name);
        if !matches!(self.ctx.table_exist(reference), Ok(true)) {
            return Err(EngineError::TableNotFound {
                name: name.to_string(),
            });
        }
        // Listings are keyed by path, not reliably by table name: drop them all
        // (the next query of each table lists once more, nothing else is lost).
        if let Some(cache) = self.ctx.runtime_env().cache_manager.get_list_files_cache() {
            cache.clear();
        }
        let provider = self
            .ctx
            .table_provider(datafusion::common::TableReference::parse_str(name))
            .await
            .map_err(EngineError::from_planning)?;
        if let Some(table) = provider.downcast_ref::<DeltaLakeTable>() {
            table.refresh().await?;
            return Ok(());
        }
        if let Some(listing) = provider.downcast_ref::<ListingTable>() {
            self.reinfer_schema(name, listing, provider.schema())
                .await?;
        }
        Ok(())
    }

    /// Re-reads the schema of a table of files: files with new columns
    /// widen it (a new schema version in the catalog); files that disagree
    /// on a column's type are named and the table keeps its old schema.
    async fn reinfer_schema(
        &self,
        name: &str,
        listing: &ListingTable,
        current: SchemaRef,
    ) -> EngineResult<()> {
        let state = self.ctx.state();
        let config = ListingTableConfig::new_with_multi_paths(listing.table_paths().clone())
            .with_listing_options(listing.options().clone());
        // Its own task: a footer decoder that panics on a corrupt file fails
        // this refresh, and the file can then be named.
        let inferred = tokio::spawn(async move {
            config
                .infer_schema(&state)
                .await
                .and_then(ListingTable::try_new)
        })
        .await;
        let refreshed = match inferred {
            Ok(Ok(table)) => table,
            Ok(Err(err)) => {
                let err = EngineError::from_planning(err);
                return Err(self.name_listing_problem(name, listing, err).await);
            }
            Err(join) => {
                let err = TaskFailure::from(join).into();
                return Err(self.name_listing_problem(name, listing, err).await);
            }
        };
        if refreshed.schema() == current {
            return Ok(());
        }
        let schema = refreshed.schema();
        self.ctx
            .deregister_table(name)
            .and_then(|_| self.ctx.register_table(name, Arc::new(refreshed)))
            .map_err(EngineError::from_planning)?;
        if let Some(catalog) = &self.catalog {
            let record = TableRecord {
                name: crate::names::table_name(&TableReference::parse_str(name)),
                origin: TableOrigin::Discovered,
                location: None,
                format: None,
                definition: None,
            };
            catalog
                .record_table(record, schema, None)
                .await
                .map_err(|e| {
                    EngineError::Internal(format!(
                        "the catalog could not record the new schema: {e}"
                    ))
                })?;
        }
        Ok(())
    }

    /// `err` (a failed refresh of the table of files `name`), or better:
    /// the corrupt files or the files that disagree on a column's type.
    async fn name_listing_problem(
        &self,
        name: &str,
        listing: &ListingTable,
        err: EngineError,
    ) -> EngineError {
        let runtime = self.ctx.runtime_env();
        match corruption::problems_in_listing(&runtime, listing).await {
            Some(corruption::ListingProblem::Corrupt(named)) => {
                EngineError::Corrupt(format!("cannot refresh '{name}': {named}"))
            }
            Some(corruption::ListingProblem::Conflict(named)) => {
                EngineError::Plan(format!("cannot refresh '{name}': {named}"))
            }
            None => err,
        }
    }

    /// Parks a planned query until a `DoGet` takes it (or it expires).
    pub fn park(&self, query: PlannedQuery) -> ResultId {
        self.results.park(query, &self.cpu)
    }

    /// Takes a parked query; each result can be taken once.
    pub fn take(&self, id: &ResultId) -> EngineResult<PlannedQuery> {
        self.results.take(id).ok_or(EngineError::ResultNotFound {
            ttl_secs: self.options.result_ttl.as_secs(),
        })
    }

    /// Ends every parked result's run as ABORT with `reason` (the server is
    /// stopping; no client will fetch them).
    pub fn abandon_pending_results(&self, reason: &str) {
        for query in self.results.drain() {
            query.abort_runs(reason);
        }
    }

    /// Drops a parked query, ending its run (ABORT). Returns whether it was
    /// still pending.
    pub fn cancel(&self, id: &ResultId) -> bool {
        match self.results.take(id) {
            Some(query) => {
                query.abort_runs("the client cancelled the result before fetching it");
                true
            }
            None => false,
        }
    }

    /// Prepares `sql`: plans it with its placeholders, runs nothing.
    async fn prepare_on_cpu(&self, sql: &str) -> EngineResult<PreparedStatementInfo> {
        if refresh_target(sql).is_some() {
            // Tarn's own statement: nothing to plan, it runs when executed.
            let nothing = LogicalPlan::EmptyRelation(datafusion::logical_expr::EmptyRelation {
                produce_one_row: false,
                schema: Arc::new(datafusion::common::DFSchema::empty()),
            });
            let empty = Arc::new(Schema::empty());
            return self
                .prepared
                .insert(sql, nothing, empty, self.options.wire_types);
        }
        let plan = self.logical_plan(sql).await?;
        let dataset_schema = if has_side_effects(&plan) {
            Arc::new(Schema::empty())
        } else {
            self.options
                .wire_types
                .wire_schema(plan.schema().as_arrow())
        };
        self.prepared
            .insert(sql, plan, dataset_schema, self.options.wire_types)
    }

    /// The result schema a prepared statement promises.
    pub fn prepared_dataset_schema(&self, id: &PreparedStatementId) -> EngineResult<SchemaRef> {
        self.prepared.dataset_schema(id)
    }

    /// Binds parameter rows to a prepared statement, replacing earlier ones.
    pub fn bind(&self, id: &PreparedStatementId, batches: &[RecordBatch]) -> EngineResult<()> {
        self.prepared.bind(id, batches)
    }

    /// Plans a prepared query with its bound parameters.
    async fn plan_prepared_query_on_cpu(
        &self,
        id: &PreparedStatementId,
    ) -> EngineResult<PlannedQuery> {
        let sql = self.prepared.sql(id)?;
        if let Some(table) = refresh_target(&sql) {
            self.refresh_table(&table).await?;
            return Ok(self.no_rows());
        }
        let (plan, rows, schema) = self.prepared.instantiate(id)?;
        let mut plans = Vec::with_capacity(rows.len().max(1));
        let mut runs: Vec<Arc<runs::StreamingRun>> = Vec::new();
        for plan in bind_rows(plan, rows)? {
            match self.to_physical(&sql, plan).await {
                Ok((physical, run)) => {
                    plans.push(physical);
                    runs.extend(run);
                }
                Err(err) => {
                    // The rows planned before will not be streamed either.
                    for run in &runs {
                        run.abort(&format!("another parameter row failed: {err}"));
                    }
                    return Err(err);
                }
            }
        }
        let schema = plans.first().map_or(schema, |p| p.schema());
        Ok(PlannedQuery {
            schema,
            plans,
            task_ctx: self.ctx.task_ctx(),
            runs,
        })
    }

    /// Runs a prepared update once per bound parameter row; returns the total
    /// number of affected rows.
    async fn execute_prepared_update_on_cpu(&self, id: &PreparedStatementId) -> EngineResult<u64> {
        let sql = self.prepared.sql(id)?;
        if let Some(table) = refresh_target(&sql) {
            self.refresh_table(&table).await?;
            return Ok(0);
        }
        let (plan, rows, _) = self.prepared.instantiate(id)?;
        let mut total = 0;
        for plan in bind_rows(plan, rows)? {
            total += self.run_update(&sql, plan).await?;
        }
        Ok(total)
    }

    /// Closes a prepared statement.
    pub fn close_prepared(&self, id: &PreparedStatementId) -> EngineResult<()> {
        self.prepared.remove(id)
    }

    /// Every table and view of every catalog, with its wire schema.
    pub async fn tables(&self) -> Vec<TableInfo> {
        metadata::list_tables(&self.ctx, self.options.wire_types).await
    }

    /// Every catalog name.
    pub fn catalogs(&self) -> Vec<String> {
        let mut names = self.ctx.catalog_names();
        names.sort();
        names
    }

    /// Every (catalog, schema) pair.
    pub fn schemas(&self) -> Vec<(String, String)> {
        metadata::list_schemas(&self.ctx)
    }
}

/// The table of a `REFRESH TABLE name` statement (Tarn's own; DataFusion
/// has no such statement).
fn refresh_target(sql: &str) -> Option<String> {
    let mut words = sql.trim().trim_end_matches(';').split_whitespace();
    let refresh = words.next()?.eq_ignore_ascii_case("refresh");
    let table = words.next()?.eq_ignore_ascii_case("table");
    let name = words.next()?;
    (refresh && table && words.next().is_none()).then(|| name.to_string())
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

/// Substitutes each bound parameter row into `plan`.
fn bind_rows(plan: LogicalPlan, rows: Vec<ParamValues>) -> EngineResult<Vec<LogicalPlan>> {
    if rows.is_empty() {
        return Ok(vec![plan]);
    }
    rows.into_iter()
        .map(|row| {
            plan.clone()
                .with_param_values(row)
                .map_err(|e| EngineError::InvalidParameters(e.strip_backtrace()))
        })
        .collect()
}

/// Whether running `plan` changes state (and so must run exactly once, now).
fn has_side_effects(plan: &LogicalPlan) -> bool {
    matches!(
        plan,
        LogicalPlan::Ddl(_)
            | LogicalPlan::Dml(_)
            | LogicalPlan::Copy(_)
            | LogicalPlan::Statement(_)
    ) || writes::TableStatementNode::of(plan).is_some()
}

/// What `CREATE TABLE` asked for, apart from its rows.
struct NewTableRequest {
    name: TableReference,
    location: Option<String>,
    partition_by: Vec<String>,
    if_not_exists: bool,
    or_replace: bool,
}

/// The one-row `count` result of a write, like DataFusion's DML results.
fn count_result(rows: u64) -> EngineResult<Arc<dyn ExecutionPlan>> {
    let schema = Arc::new(Schema::new(vec![arrow::datatypes::Field::new(
        "count",
        arrow::datatypes::DataType::UInt64,
        false,
    )]));
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![Arc::new(UInt64Array::from(vec![rows]))],
    )
    .map_err(|e| EngineError::Internal(e.to_string()))?;
    let exec: Arc<dyn ExecutionPlan> =
        MemorySourceConfig::try_new_from_batches(schema, vec![batch])
            .map_err(|e| EngineError::Internal(e.to_string()))?;
    Ok(exec)
}

/// The row count a DML/COPY result reports (a single `count` column), or 0.
fn affected_rows(batches: &[RecordBatch]) -> u64 {
    batches
        .iter()
        .filter(|b| b.num_columns() == 1)
        .filter_map(|b| b.column(0).as_any().downcast_ref::<UInt64Array>().cloned())
        .map(|counts| counts.iter().flatten().sum::<u64>())
        .sum()
}
