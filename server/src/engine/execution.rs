//! Running plans: logical to physical (running side effects), collecting
//! a statement's small outcome, and streaming a result from the CPU runtime.

use std::sync::Arc;

use arrow::array::{Array, RecordBatch, UInt64Array};
use arrow::datatypes::Schema;
use datafusion::catalog::memory::MemorySourceConfig;
use datafusion::error::DataFusionError;
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{ExecutionPlan, SendableRecordBatchStream, execute_stream};
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tracing::Instrument;

use super::admin::AdminNode;
use super::analyze::AnalyzeTableNode;
use super::cancel::CancelQueryNode;
use super::erasure::VacuumNode;
use super::error::{self, EngineError, EngineResult};
use super::grants::GrantNode;
use super::live::{Interruption, LiveQuery, QueryState};
use super::policies::PolicyNode;
use super::refresh::RefreshTableNode;
use super::session::Session;
use super::settings::SystemSettingNode;
use super::user_limits::LimitNode;
use super::writes;
use super::{Engine, PlannedQuery, corruption, memory, query_log, runs, settings};
use crate::delta::WriteStats;
use crate::runtime::TaskFailure;

impl Engine {
    /// Logical plan to physical plan, running side effects on the way;
    /// returns the rows a write wrote.
    pub(super) async fn plan_physical(
        &self,
        plan: LogicalPlan,
        session: &Session,
    ) -> EngineResult<(Arc<dyn ExecutionPlan>, Option<WriteStats>)> {
        self.options.locations.check_plan(&plan)?;
        settings::check_plan(&plan, session.principal())?;
        if let Some(statement) = AdminNode::of(&plan) {
            return Ok((self.run_admin(statement, session.principal()).await?, None));
        }
        if let Some(statement) = LimitNode::of(&plan) {
            return Ok((
                self.run_user_limit(statement, session.principal()).await?,
                None,
            ));
        }
        if let Some(id) = CancelQueryNode::of(&plan) {
            return Ok((self.run_cancel(id, session.principal())?, None));
        }
        if let Some(statement) = VacuumNode::of(&plan) {
            return Ok((self.run_vacuum(statement, session).await?, None));
        }
        if let Some(statement) = PolicyNode::of(&plan) {
            self.run_policy(statement, session.principal()).await?;
            let nothing = Arc::new(EmptyExec::new(Arc::new(Schema::empty())));
            return Ok((nothing, None));
        }
        if let Some(statement) = GrantNode::of(&plan) {
            let schema = self.run_grant(statement, session.principal()).await?;
            return Ok((Arc::new(EmptyExec::new(schema)), None));
        }
        if let Some(setting) = SystemSettingNode::of(&plan) {
            // The server's defaults: the context new sessions are made from.
            self.ctx
                .execute_logical_plan(setting.statement().clone())
                .await
                .map_err(EngineError::from_planning)?;
            let nothing = Arc::new(EmptyExec::new(Arc::new(Schema::empty())));
            return Ok((nothing, None));
        }
        if let Some(name) = RefreshTableNode::of(&plan) {
            self.refresh_table(name).await?;
            let nothing = Arc::new(EmptyExec::new(Arc::new(Schema::empty())));
            return Ok((nothing, None));
        }
        if let Some(node) = super::table_cache::TableCacheNode::of(&plan) {
            self.set_table_cache(node).await?;
            let nothing = Arc::new(EmptyExec::new(Arc::new(Schema::empty())));
            return Ok((nothing, None));
        }
        if let Some(name) = AnalyzeTableNode::of(&plan) {
            self.analyzer.analyze(name).await?;
            let nothing = Arc::new(EmptyExec::new(Arc::new(Schema::empty())));
            return Ok((nothing, None));
        }
        if let Some(stats) = self.run_table_write(&plan).await? {
            return count_result(stats.rows).map(|exec| (exec, Some(stats)));
        }
        let side_effects = has_side_effects(&plan);
        // For DDL this is what runs the statement. Planning reads file
        // metadata, so it runs on the CPU runtime, where a reader that
        // panics on a corrupt file fails this statement, not the server.
        let ctx = session.context().clone();
        let planned = plan.clone();
        let outcome = self
            .cpu
            .spawn_owned(async move {
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
            return Ok((self.wire_types(session).cast_physical(physical)?, None));
        }
        // DML/COPY run now, not when (or if) the client fetches the count.
        let schema = physical.schema();
        let ran = Arc::clone(&physical);
        let batches = self.collect(physical, session).await?;
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

    /// Executes `plan` on the CPU runtime and gathers its batches.
    pub(super) async fn collect(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        session: &Session,
    ) -> EngineResult<Vec<RecordBatch>> {
        let task_ctx = session.context().task_ctx();
        let checked = Arc::clone(&plan);
        let outcome = self
            .scans
            .spawn_owned(async move { datafusion::physical_plan::collect(plan, task_ctx).await })
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
            live,
            mut replan,
            cached,
            ..
        } = query;
        let (plans, mut capture) = self.answer_from_cache(&schema, plans, cached, live.as_deref());
        // Two batches in flight keep the network busy without buffering the result.
        let (tx, rx) = mpsc::channel(2);
        let failure_tx = tx.clone();
        let (checked, runtime) = (plans.clone(), task_ctx.runtime_env());
        let admission = Arc::clone(&self.admission);
        // The query's own clock (from submission), else the stream's.
        let clock = live.as_ref().map(|listed| Arc::clone(listed.query()));
        let query = clock.clone();
        // The query's reservations are counted for system.queries and its run.
        let task_ctx = match &query {
            Some(query) => {
                memory::counted(&task_ctx, Arc::clone(query.memory())).unwrap_or(task_ctx)
            }
            None => task_ctx,
        };
        let streaming = std::time::Instant::now();
        let slow = self.options.slow_query_threshold;
        // Work that reads files waits for a slot and runs on the scan
        // runtime; the rest never queues.
        let scans = plans.iter().any(reads_files);
        let executor = if scans { &self.scans } else { &self.cpu };
        let span = tracing::info_span!(
            target: "tarn::query",
            "execute",
            query.id = clock.as_ref().map(|query| query.id().to_string()),
        );
        let driver = executor.spawn(async move {
            let admitting = tracing::info_span!(target: "tarn::query", "admit");
            let _slot = match &query {
                Some(query) if scans => match admission.admit_stream(query).instrument(admitting).await {
                    Ok(slot) => Some(slot),
                    Err(err) => return (0, Some(err), false),
                },
                _ => None,
            };
            if let Some(query) = &query {
                query.set_state(QueryState::Running);
            }
            let mut sent = 0_u64;
            let single = plans.len() == 1;
            for plan in plans {
                let mut stream = match execute_stream(Arc::clone(&plan), Arc::clone(&task_ctx)) {
                    Ok(stream) => stream,
                    Err(err) => return (sent, Some(err), false),
                };
                loop {
                    // The work is watched, not only the sends: a query that
                    // has sent nothing yet (an aggregate) stops the moment
                    // its client goes away or it is interrupted.
                    let next = tokio::select! {
                        biased;
                        why = interrupted(query.as_deref()) => return (sent, Some(stopped(why)), false),
                        () = tx.closed() => return (sent, None, true),
                        next = stream.next() => next,
                    };
                    let Some(item) = next else { break };
                    let item = match item {
                        Ok(batch) if batch.num_rows() == 0 => continue,
                        Ok(batch) => batch,
                        Err(err) if sent == 0 && single && memory::is_exhausted(&err) && uses_hash_join(&plan) => {
                            // A hash join's build side cannot spill: once more with sort-merge joins, which can.
                            let Some(again) = replan.take() else {
                                return (sent, Some(memory::explain(err, task_ctx.memory_pool().as_ref())), false);
                            };
                            tracing::info!("a hash join did not fit in memory ({err}); planning the query again with sort-merge joins");
                            if let Some(query) = &query {
                                query.set_note("planned again with sort-merge joins: a hash join did not fit in memory");
                            }
                            match again.execute(Arc::clone(&task_ctx)).await {
                                Ok(retried) => {
                                    stream = retried;
                                    continue;
                                }
                                Err(err) => return (sent, Some(err), false),
                            }
                        }
                        // Reported by the task below, with the file named if it can be.
                        Err(err) => {
                            return (sent, Some(memory::explain(err, task_ctx.memory_pool().as_ref())), false);
                        }
                    };
                    let rows = item.num_rows() as u64;
                    if let Some(capture) = &mut capture {
                        capture.push(&item);
                    }
                    let delivered = tokio::select! {
                        biased;
                        why = interrupted(query.as_deref()) => return (sent, Some(stopped(why)), false),
                        delivered = tx.send(Ok(item)) => delivered,
                    };
                    if delivered.is_err() {
                        // The client went away: dropping `stream` stops the work.
                        return (sent, None, true);
                    }
                    sent += rows;
                    if let Some(query) = &query {
                        query.sent(rows);
                    }
                }
            }
            if let Some(capture) = capture {
                capture.keep();
            }
            (sent, None, false)
        }.instrument(span));
        // A failure, even a panic in the driver (a reader crashing on a
        // corrupt file), must end the stream with an error, never look like a
        // complete result.
        self.cpu.spawn(async move {
            // Listed until its run's end is queued, however it ends: a
            // server that waits for an empty list loses no run's end.
            let _live = live;
            let (sent, failure, abandoned) = match driver.await {
                Ok(outcome) => outcome,
                Err(e) => (0, Some(DataFusionError::ExecutionJoin(Box::new(e))), false),
            };
            let abandoned = abandoned || stopped_on_purpose(failure.as_ref());
            let outcome = outcome_of(failure.as_ref(), abandoned);
            let took = clock
                .as_ref()
                .map_or_else(|| streaming.elapsed(), |query| query.elapsed());
            crate::telemetry::query_ended(outcome, took);
            let (rows_in, bytes_in) = runs::input_metrics(&checked);
            let error = failure.as_ref().map(described);
            let finished = query_log::FinishedQuery {
                query: clock.as_deref(),
                outcome,
                took,
                rows_sent: sent,
                rows_scanned: rows_in,
                bytes_scanned: bytes_in,
                error: error.as_deref(),
            };
            query_log::log(&finished, &checked, slow);
            let end = runs::StreamEnd {
                rows_out: sent,
                rows_in,
                bytes_in,
                error,
                abandoned,
                usage: clock
                    .as_ref()
                    .map(|query| query.usage(runs::spilled_bytes(&checked))),
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
}

impl Engine {
    /// The plans to stream for a query whose answer may be cached under
    /// `key`: its kept answer when there is one, else its own plans with a
    /// capture of what they stream.
    fn answer_from_cache(
        &self,
        schema: &arrow::datatypes::SchemaRef,
        plans: Vec<Arc<dyn ExecutionPlan>>,
        key: Option<super::result_cache::ResultKey>,
        live: Option<&super::live::Registration>,
    ) -> (
        Vec<Arc<dyn ExecutionPlan>>,
        Option<super::result_cache::Capture>,
    ) {
        let Some(key) = key else {
            return (plans, None);
        };
        let Some(answer) = self.result_cache.get(&key) else {
            return (plans, Some(self.result_cache.capture(key)));
        };
        match MemorySourceConfig::try_new_exec(
            std::slice::from_ref(&answer.batches),
            Arc::clone(schema),
            None,
        ) {
            Ok(kept) => {
                if let Some(listed) = live {
                    listed.query().set_note("answered from the result cache");
                }
                (vec![kept], None)
            }
            Err(_) => (plans, None),
        }
    }
}

/// The one-row `count` result of a write, like DataFusion's DML results.
pub(super) fn count_result(rows: u64) -> EngineResult<Arc<dyn ExecutionPlan>> {
    let schema = Arc::new(Schema::new(vec![arrow::datatypes::Field::new(
        "count",
        arrow::datatypes::DataType::UInt64,
        false,
    )]));
    batch_result(schema, vec![Arc::new(UInt64Array::from(vec![rows]))])
}

/// A statement's small result: one batch of `columns`, as a plan.
pub(super) fn batch_result(
    schema: arrow::datatypes::SchemaRef,
    columns: Vec<arrow::array::ArrayRef>,
) -> EngineResult<Arc<dyn ExecutionPlan>> {
    let batch = RecordBatch::try_new(Arc::clone(&schema), columns)
        .map_err(|e| EngineError::Internal(e.to_string()))?;
    let exec: Arc<dyn ExecutionPlan> =
        MemorySourceConfig::try_new_from_batches(schema, vec![batch])
            .map_err(|e| EngineError::Internal(e.to_string()))?;
    Ok(exec)
}

/// The row count a DML/COPY result reports (a single `count` column), or 0.
pub(super) fn affected_rows(batches: &[RecordBatch]) -> u64 {
    batches
        .iter()
        .filter(|b| b.num_columns() == 1)
        .filter_map(|b| b.column(0).as_any().downcast_ref::<UInt64Array>().cloned())
        .map(|counts| counts.iter().flatten().sum::<u64>())
        .sum()
}

/// Whether running `plan` changes state (and so must run exactly once, now).
pub(super) fn has_side_effects(plan: &LogicalPlan) -> bool {
    matches!(
        plan,
        LogicalPlan::Ddl(_)
            | LogicalPlan::Dml(_)
            | LogicalPlan::Copy(_)
            | LogicalPlan::Statement(_)
    ) || writes::TableStatementNode::of(plan).is_some()
        || RefreshTableNode::of(plan).is_some()
        || AnalyzeTableNode::of(plan).is_some()
        || super::table_cache::TableCacheNode::of(plan).is_some()
        || AdminNode::of(plan).is_some()
        || SystemSettingNode::of(plan).is_some()
        || GrantNode::of(plan).is_some()
        || PolicyNode::of(plan).is_some()
}

/// How a stream that ended with `failure` (or whose client went away) counts.
fn outcome_of(
    failure: Option<&DataFusionError>,
    abandoned: bool,
) -> crate::telemetry::QueryOutcome {
    use crate::telemetry::QueryOutcome;
    match failure {
        Some(DataFusionError::External(why)) if why.downcast_ref::<Interruption>().is_some() => {
            QueryOutcome::Cancelled
        }
        Some(_) => QueryOutcome::Error,
        None if abandoned => QueryOutcome::Abandoned,
        None => QueryOutcome::Ok,
    }
}

/// What a run records of a stream's failure (an interruption as it is, not
/// as DataFusion's "External error").
fn described(failure: &DataFusionError) -> String {
    match failure {
        DataFusionError::External(why) => match why.downcast_ref::<Interruption>() {
            Some(why) => why.to_string(),
            None => failure.to_string(),
        },
        _ => failure.to_string(),
    }
}

/// Whether a stream was stopped on purpose (cancelled, or the server shut
/// down), not failed: its run ends ABORT, with the reason. A timeout is a
/// failure of the statement.
fn stopped_on_purpose(failure: Option<&DataFusionError>) -> bool {
    matches!(failure, Some(DataFusionError::External(why))
        if matches!(why.downcast_ref::<Interruption>(), Some(Interruption::Cancelled(_) | Interruption::ShuttingDown(_))))
}

/// Waits until `query` is interrupted (forever without one).
async fn interrupted(query: Option<&LiveQuery>) -> Interruption {
    match query {
        Some(query) => query.interrupted().await,
        None => std::future::pending().await,
    }
}

/// The error a stream stopped by `why` ends with.
fn stopped(why: Interruption) -> DataFusionError {
    DataFusionError::External(Box::new(why))
}

/// A query planned again with sort-merge joins instead of hash joins.
#[derive(Clone)]
pub(crate) struct Replan {
    /// The query's logical plan.
    pub(crate) plan: LogicalPlan,
    /// The types its result leaves in.
    pub(crate) wire_types: super::WireTypes,
    /// The session it was planned in.
    pub(crate) context: datafusion::prelude::SessionContext,
}

impl std::fmt::Debug for Replan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replan").finish_non_exhaustive()
    }
}

impl Replan {
    /// Plans and starts the query with `prefer_hash_join = false`.
    async fn execute(
        self,
        task_ctx: Arc<datafusion::execution::TaskContext>,
    ) -> Result<SendableRecordBatchStream, DataFusionError> {
        let mut state = self.context.state();
        let optimizer = &mut state.config_mut().options_mut().optimizer;
        optimizer.prefer_hash_join = false;
        // Small inputs would still get a hash join that collects one side.
        optimizer.hash_join_single_partition_threshold = 0;
        optimizer.hash_join_single_partition_threshold_rows = 0;
        let physical = state.create_physical_plan(&self.plan).await?;
        let wired = self
            .wire_types
            .cast_physical(physical)
            .map_err(|e| DataFusionError::Plan(e.to_string()))?;
        execute_stream(wired, task_ctx)
    }
}

/// Whether `plan` has a hash join.
fn uses_hash_join(plan: &Arc<dyn ExecutionPlan>) -> bool {
    plan.is::<datafusion::physical_plan::joins::HashJoinExec>()
        || plan.children().iter().any(|child| uses_hash_join(child))
}

/// Whether `plan` reads files (and so waits for a slot to run in).
/// A scan of held columns counts: it is the same work minus the decoding.
fn reads_files(plan: &Arc<dyn ExecutionPlan>) -> bool {
    super::scanned::file_scan(plan.as_ref()).is_some()
        || plan.children().iter().any(|child| reads_files(child))
}
