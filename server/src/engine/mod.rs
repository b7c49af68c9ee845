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

mod access;
mod accounts;
mod adaptive_filter;
mod admin;
mod admission;
mod analyze;
mod as_of;
mod cache_table;
mod cached_scan;
mod cancel;
mod column_chunks;
mod cooperation;
mod corruption;
mod data_cache;
mod drain;
mod erasure;
pub mod error;
mod exact_decimals;
mod execution;
mod file_versions;
mod gauges;
mod grants;
mod identity_calls;
mod ids;
mod join_filters;
mod known_statistics;
mod live;
mod live_table;
mod locations;
mod masks;
mod memory;
mod metadata;
mod options;
mod placeholders;
mod planning;
mod policies;
mod prepared;
mod privileges;
mod proven;
mod query_log;
mod refresh;
mod result_cache;
mod results;
mod rules;
mod runs;
mod scanned;
mod session;
mod session_options;
mod settings;
mod shared_subplans;
mod statement;
mod statement_node;
mod table_cache;
mod tarn_settings;
mod time_travel;
mod user_limits;
mod visible;
pub mod wire;
mod writes;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::TaskContext;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::{SessionConfig, SessionContext};

pub use crate::telemetry::CacheStats;
pub use admin::recorded_sql;
pub use admission::AdmissionOptions;
pub use data_cache::DataCacheOptions;
pub use drain::Drained;
pub use error::{EngineError, EngineResult};
pub use locations::LocationPolicy;
pub use memory::{DEFAULT_MEMORY_SHARE, DEFAULT_SPILL_LIMIT, MemoryOptions, prepare_spill_dir};
pub use metadata::{TableInfo, TableKind};
pub use prepared::{PreparedStatementId, PreparedStatementInfo};
pub use result_cache::ResultCacheOptions;
pub use results::{ParkedResult, Progress, ResultId};
pub use runs::version_record;
pub use session::{Session, SessionLimits};
pub use session_options::{OptionValue, SessionOptionError};
pub use statement::StatementLimits;
pub use wire::WireTypes;

use crate::auth::Authenticator;
use crate::catalog::{CatalogStore, GrantStore};
use crate::identity::Principal;
use crate::runtime::{CpuRuntime, Priority};
use prepared::PreparedStatements;
use results::ResultStore;
use session::Sessions;

pub use crate::names::{DEFAULT_CATALOG, DEFAULT_SCHEMA};
pub use options::EngineOptions;

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
    /// The statement, as it may be recorded.
    sql: String,
    /// The user who planned it: nobody else may fetch it.
    owner: String,
    /// The session it was planned in (what its unfetched-results cap counts).
    session: String,
    /// Its place among the live queries, until it has been streamed.
    live: Option<Arc<live::Registration>>,
    /// How to plan it again with sort-merge joins when its hash joins do not
    /// fit in memory.
    replan: Option<execution::Replan>,
    /// Where its answer is (or will be) in the result cache, if it may be.
    cached: Option<result_cache::ResultKey>,
}

impl PlannedQuery {
    /// The schema every batch of the result has.
    pub fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    /// The statement it answers (passwords left out).
    pub fn sql(&self) -> Option<&str> {
        Some(self.sql.as_str()).filter(|s| !s.is_empty())
    }

    /// Keeps the query's place among the live queries until it has been streamed.
    fn listed(&mut self, registration: live::Registration) {
        registration.set_plans(&self.plans);
        registration.set_state(live::QueryState::Waiting);
        self.live = Some(Arc::new(registration));
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
    /// Plans statements, runs side effects and answers what reads no files.
    cpu: CpuRuntime,
    /// Executes what reads files, at background priority so that `cpu`'s
    /// small work is never stuck behind it.
    scans: CpuRuntime,
    results: ResultStore,
    /// Answers kept for identical queries on unchanged files.
    result_cache: Arc<result_cache::ResultCache>,
    /// Columns of files held decoded, for scans that need decode nothing.
    data_cache: Arc<data_cache::DataCache>,
    /// Column statistics: computed (`ANALYZE`, after writes), stored and
    /// given to the planner.
    analyzer: analyze::Analyzer,
    prepared: PreparedStatements,
    sessions: Sessions,
    /// Every statement being planned, waiting to be fetched, or streamed.
    live: live::LiveQueries,
    /// The slots queries execute in, and their queue.
    admission: Arc<admission::Admission>,
    /// Who may do what; checked before every statement is planned.
    privileges: Arc<privileges::Privileges>,
    /// Statement timeouts and running-query caps per user and role.
    user_limits: user_limits::UserLimits,
    /// Where privileges are stored.
    grant_store: Option<Arc<dyn GrantStore>>,
    options: EngineOptions,
    catalog: Option<Arc<dyn CatalogStore>>,
    /// Users, roles and tokens, for identity statements.
    auth: Option<Arc<Authenticator>>,
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
            .with_option_extension(tarn_settings::TarnSettings::default())
            // Filter pushdown stays DataFusion's default (off) but for the
            // scans a join's dynamic filter reaches (`join_filters.rs`);
            // those order their filters by cost.
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
        let runtime =
            RuntimeEnvBuilder::new().with_object_list_cache_ttl(Some(options.listing_cache_ttl));
        let runtime = memory::configure(runtime, &options.memory)
            .build_arc()
            .map_err(|e| {
                EngineError::Internal(format!("cannot build the runtime environment: {e}"))
            })?;
        let known_statistics = Arc::new(known_statistics::KnownStatistics::default());
        let data_cache = Arc::new(data_cache::DataCache::new(options.data_cache));
        // Delta writes plan nodes of their own; this planner knows them and
        // otherwise plans as DataFusion's default planner does.
        let state = SessionStateBuilder::new()
            .with_config(config)
            .with_runtime_env(runtime)
            .with_default_features()
            .with_query_planner(deltalake::delta_datafusion::planner::DeltaPlanner::new())
            .with_optimizer_rule(Arc::new(exact_decimals::ExactDecimals))
            .with_physical_optimizer_rules(rules::physical_rules(&known_statistics, &data_cache))
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
        let privileges = Arc::new(privileges::Privileges::default());
        for mask in masks::mask_functions(privileges.salt()) {
            ctx.register_udf(mask);
        }
        let start = |name, priority| {
            CpuRuntime::new(name, cpu_threads, priority)
                .map_err(|e| EngineError::Internal(format!("cannot start the query runtime: {e}")))
        };
        let cpu = start("tarn-cpu", Priority::Normal)?;
        let scans = start("tarn-scan", Priority::Background)?;
        // Columns load on the scan runtime, as the scans they replace would run.
        data_cache.start_loading(scans.handle().clone(), ctx.task_ctx());
        Ok(Self {
            cpu,
            scans,
            results: ResultStore::new(options.result_ttl),
            result_cache: Arc::new(result_cache::ResultCache::new(options.result_cache)),
            data_cache,
            analyzer: analyze::Analyzer {
                ctx: ctx.clone(),
                catalog: None,
                known: known_statistics,
                pending: Arc::default(),
            },
            live: live::LiveQueries::default(),
            admission: admission::Admission::new(options.admission, cores),
            prepared: PreparedStatements::new(options.prepared_statement_ttl),
            sessions: Sessions::new(ctx.clone(), Arc::clone(&privileges), options.sessions),
            privileges,
            user_limits: Default::default(),
            grant_store: None,
            ctx,
            options,
            catalog: None,
            auth: None,
            empty_stores: Default::default(),
        })
    }

    /// Records every run, its lineage and the tables it creates in `catalog`.
    pub fn with_catalog(mut self, catalog: Arc<dyn CatalogStore>) -> Self {
        self.analyzer.catalog = Some(Arc::clone(&catalog));
        self.catalog = Some(catalog);
        self
    }

    /// Keeps privileges (`GRANT SELECT ON ...`) and table owners in `store`.
    pub fn with_grants(mut self, store: Arc<dyn GrantStore>) -> Self {
        self.privileges.attach(Arc::clone(&store));
        self.grant_store = Some(store);
        self
    }

    /// Reads the stored privileges (at start, before serving).
    pub async fn load_privileges(&self) -> EngineResult<()> {
        self.reload_privileges().await
    }

    /// Lets identity statements (`CREATE USER`, ...) change `auth`'s users,
    /// roles and tokens.
    pub fn with_authenticator(mut self, auth: Arc<Authenticator>) -> Self {
        self.auth = Some(auth);
        self
    }

    /// Remembers why stores serve no tables (found at start), so that `SHOW
    /// TABLES` on a lake without tables can say why.
    pub fn explain_an_empty_lake(&self, empty_stores: Vec<String>) {
        if let Ok(mut notes) = self.empty_stores.write() {
            *notes = empty_stores;
        }
    }

    /// The catalog runs are recorded in, if any.
    pub fn catalog_store(&self) -> Option<&Arc<dyn CatalogStore>> {
        self.catalog.as_ref()
    }

    /// The DataFusion context every session is made from and shares its
    /// catalog with, for registering tables.
    pub fn shared_context(&self) -> &SessionContext {
        &self.ctx
    }

    /// The types `session`'s request gets its results in: native when its
    /// client said it reads view types, else the server's setting.
    fn wire_types(&self, session: &Session) -> WireTypes {
        match session.reads_view_types() {
            true => WireTypes::Native,
            false => self.options.wire_types,
        }
    }

    /// The session statements restored at start run in: the shared context.
    fn system_session(&self) -> Session {
        Session::system(self.ctx.clone())
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
    ///
    /// `phase` names its span (`plan`, `run`, `prepare`) in traces.
    async fn on_cpu<T, F, Fut>(self: &Arc<Self>, phase: &'static str, work: F) -> EngineResult<T>
    where
        F: FnOnce(Arc<Self>) -> Fut,
        Fut: Future<Output = EngineResult<T>> + Send + 'static,
        T: Send + 'static,
    {
        use tracing::Instrument;
        let span = tracing::info_span!(target: "tarn::query", "statement", otel.name = phase);
        let future = work(Arc::clone(self)).instrument(span);
        self.cpu.run(future).await.map_err(EngineError::from)?
    }

    /// The schema `sql` would return, without running it.
    pub async fn schema_of(
        self: &Arc<Self>,
        sql: &str,
        session: &Session,
    ) -> EngineResult<SchemaRef> {
        let (sql, session) = (sql.to_string(), session.clone());
        self.on_cpu("plan", |engine| async move {
            engine.schema_of_on_cpu(&sql, &session).await
        })
        .await
    }

    /// Plans a statement for streaming. Statements with side effects run now;
    /// their (small) outcome is what the result streams.
    pub async fn plan_query(
        self: &Arc<Self>,
        sql: &str,
        session: &Session,
    ) -> EngineResult<PlannedQuery> {
        let registration = self.register(&recorded_sql(sql), session);
        let query = Arc::clone(&registration);
        let (sql, session) = (sql.to_string(), session.clone());
        let mut planned = self
            .on_cpu("plan", |engine| {
                live::scope(query, async move {
                    engine.plan_query_on_cpu(&sql, &session).await
                })
            })
            .await?;
        planned.listed(registration);
        Ok(planned)
    }

    /// Lists a statement of `session` among the live queries, with its
    /// timeout and its user's limits.
    fn register(&self, sql: &str, session: &Session) -> live::Registration {
        let principal = session.principal();
        let settings = tarn_settings::TarnSettings::of_session(session.context());
        let limits = self.user_limits.of(principal);
        let timeout = limits.statement_timeout_for(&settings, self.options.statement_timeout);
        let registration = self.live.register(principal.name(), sql, timeout);
        registration.set_running_cap(limits.max_running());
        registration
    }

    /// Every live query: being planned, waiting to be fetched, or streamed.
    pub fn live_queries(&self) -> &live::LiveQueries {
        &self.live
    }

    /// Runs a statement that changes something and returns the number of rows
    /// it affected (0 for DDL).
    pub async fn execute_update(
        self: &Arc<Self>,
        sql: &str,
        session: &Session,
    ) -> EngineResult<u64> {
        let registration = self.register(&recorded_sql(sql), session);
        let query = Arc::clone(&registration);
        let (sql, session) = (sql.to_string(), session.clone());
        self.on_cpu("run", |engine| {
            live::scope(query, async move {
                engine.execute_update_on_cpu(&sql, &session).await
            })
        })
        .await
    }

    /// Runs `sql` as it was recorded earlier (views, settings restored at
    /// start), without recording it again.
    pub async fn replay(self: &Arc<Self>, sql: &str) -> EngineResult<()> {
        let sql = sql.to_string();
        self.on_cpu(
            "run",
            |engine| async move { engine.replay_on_cpu(&sql).await },
        )
        .await
    }

    /// Prepares `sql`: plans it with its placeholders, runs nothing.
    pub async fn prepare(
        self: &Arc<Self>,
        sql: &str,
        session: &Session,
    ) -> EngineResult<PreparedStatementInfo> {
        let (sql, session) = (sql.to_string(), session.clone());
        self.on_cpu("prepare", |engine| async move {
            engine.prepare_on_cpu(&sql, &session).await
        })
        .await
    }

    /// Plans a prepared query with its bound parameters.
    pub async fn plan_prepared_query(
        self: &Arc<Self>,
        id: &PreparedStatementId,
        session: &Session,
    ) -> EngineResult<PlannedQuery> {
        let sql = self.prepared_sql(id).unwrap_or_default();
        let registration = self.register(&sql, session);
        let query = Arc::clone(&registration);
        let id = *id;
        let session = session.clone();
        let mut planned = self
            .on_cpu("plan", |engine| {
                live::scope(query, async move {
                    engine.plan_prepared_query_on_cpu(&id, &session).await
                })
            })
            .await?;
        planned.listed(registration);
        Ok(planned)
    }

    /// Runs a prepared update once per bound parameter row; returns the total
    /// number of affected rows.
    pub async fn execute_prepared_update(
        self: &Arc<Self>,
        id: &PreparedStatementId,
        session: &Session,
    ) -> EngineResult<u64> {
        let sql = self.prepared_sql(id).unwrap_or_default();
        let registration = self.register(&sql, session);
        let query = Arc::clone(&registration);
        let id = *id;
        let session = session.clone();
        self.on_cpu("run", |engine| {
            live::scope(query, async move {
                engine.execute_prepared_update_on_cpu(&id, &session).await
            })
        })
        .await
    }

    /// The SQL text of a prepared statement (passwords left out), if it is open.
    pub fn prepared_sql(&self, id: &PreparedStatementId) -> Option<String> {
        self.prepared.sql(id).ok().map(|sql| recorded_sql(&sql))
    }

    /// The result schema a prepared statement promises.
    pub fn prepared_dataset_schema(
        &self,
        id: &PreparedStatementId,
        principal: &Principal,
    ) -> EngineResult<SchemaRef> {
        self.prepared.dataset_schema(id, principal.name())
    }

    /// Binds parameter rows to a prepared statement, replacing earlier ones.
    pub fn bind(
        &self,
        id: &PreparedStatementId,
        batches: &[RecordBatch],
        principal: &Principal,
    ) -> EngineResult<()> {
        self.prepared.bind(id, batches, principal.name())
    }

    /// Closes a prepared statement.
    pub fn close_prepared(
        &self,
        id: &PreparedStatementId,
        principal: &Principal,
    ) -> EngineResult<()> {
        self.prepared.remove(id, principal.name())
    }

    /// Every table and view of every catalog that `session`'s user may
    /// see, with its wire schema (only the columns granted).
    pub async fn tables(&self, session: &Session) -> Vec<TableInfo> {
        metadata::list_tables(session.context(), self.wire_types(session)).await
    }

    /// Every catalog name.
    pub fn catalog_names(&self, session: &Session) -> Vec<String> {
        let mut names = session.context().catalog_names();
        names.sort();
        names
    }

    /// Every (catalog, schema) pair.
    pub fn schemas(&self, session: &Session) -> Vec<(String, String)> {
        metadata::list_schemas(session.context())
    }
}
