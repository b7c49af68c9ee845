//! Shared subplans: a physical optimizer rule that computes a repeated
//! aggregate once per query.
//!
//! DataFusion plans a CTE or a view again wherever a query reads it. TPC-H
//! Q15 reads `revenue0` twice, once joined to `supplier` and once for its
//! maximum, so a quarter of `lineitem` was read, filtered and summed twice;
//! DuckDB computes such a CTE once, and Q15 took 2.5 times as long here.
//!
//! [`SharedSubplans`] finds aggregates that appear more than once in the
//! plan with the same input, and puts one [`SharedSubplanExec`] in each
//! place. It runs before DataFusion pushes the joins' dynamic filters into
//! scans: afterwards the places differ by the filter of the join each
//! feeds, and no join filter is pushed into a shared input. The first reader of a partition runs the aggregate and
//! keeps its batches; the other readers replay them; once every reader has
//! asked for the partition, the node lets go of it (a re-run computes it
//! again).
//!
//! Two subtrees count as the same only when nothing they do is hidden from
//! their plan text: their verbose plan text and output schema are equal,
//! every operator in them is one whose text says all it does, every leaf is
//! a scan of files (whose text names each file and byte range), and none of
//! their expressions is volatile (`random()`), set by a join outside them
//! (a dynamic filter) or a scalar subquery's result. Only an aggregate's
//! output is kept: it is no larger than the hash table that produced it,
//! and it is reserved in the query's memory pool like that table.
//! `SET tarn.shared_subplans = false` turns the rule off for a session.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use arrow::array::RecordBatch;
use datafusion::common::Statistics;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::config::ConfigOptions;
use datafusion::datasource::physical_plan::FileScanConfig;
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::Volatility;
use datafusion::physical_expr::expressions::DynamicFilterPhysicalExpr;
use datafusion::physical_expr::scalar_subquery::ScalarSubqueryExpr;
use datafusion::physical_expr::{PhysicalExpr, ScalarFunctionExpr};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::metrics::{BaselineMetrics, ExecutionPlanMetricsSet, MetricsSet};
use datafusion::physical_plan::statistics::StatisticsArgs;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties, displayable,
};
use futures::future::{BoxFuture, FutureExt, Shared};
use futures::{StreamExt, TryStreamExt};

use super::tarn_settings::TarnSettings;

/// The rule (see the module's documentation).
#[derive(Debug, Default)]
pub(crate) struct SharedSubplans;

/// How many times one plan is searched for another repeated subtree.
const MAX_SHARED: usize = 16;

impl PhysicalOptimizerRule for SharedSubplans {
    fn optimize(
        &self,
        mut plan: Arc<dyn ExecutionPlan>,
        config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if !TarnSettings::of(config).shared_subplans {
            return Ok(plan);
        }
        for _ in 0..MAX_SHARED {
            let Some(repeated) = largest_repeated(&plan)? else {
                break;
            };
            plan = share(plan, &repeated)?;
        }
        Ok(plan)
    }

    fn name(&self) -> &str {
        "SharedSubplans"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// The address of a plan node, to tell its places apart from equal copies.
fn address(node: &Arc<dyn ExecutionPlan>) -> usize {
    Arc::as_ptr(node).cast::<()>() as usize
}

/// The places of the largest shareable aggregate that appears more than
/// once in `plan` (by the length of its text, so an enclosing repeat is
/// shared before the repeats inside it).
fn largest_repeated(plan: &Arc<dyn ExecutionPlan>) -> Result<Option<Vec<Arc<dyn ExecutionPlan>>>> {
    let mut seen = HashSet::new();
    let mut candidates = Vec::new();
    plan.apply(|node| {
        if !seen.insert(address(node)) {
            // An already shared node is reached once per place: count it once.
            return Ok(TreeNodeRecursion::Jump);
        }
        if is_final_aggregate(node.as_ref()) && is_shareable(node)? {
            candidates.push(Arc::clone(node));
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    // Most plans hold one aggregate: their text is never rendered.
    if candidates.len() < 2 {
        return Ok(None);
    }
    let mut by_text: HashMap<String, Vec<Arc<dyn ExecutionPlan>>> = HashMap::new();
    for candidate in candidates {
        by_text
            .entry(identity(&candidate))
            .or_default()
            .push(candidate);
    }
    Ok(by_text
        .into_iter()
        .filter(|(_, places)| places.len() > 1)
        .max_by(|(a, _), (b, _)| a.len().cmp(&b.len()).then_with(|| b.cmp(a)))
        .map(|(_, places)| places))
}

/// What two subtrees must share to be the same: their verbose text (every
/// file and byte range, every expression) and their output schema.
fn identity(node: &Arc<dyn ExecutionPlan>) -> String {
    format!(
        "{}\n{:?}",
        displayable(node.as_ref()).indent(true),
        node.schema()
    )
}

fn is_final_aggregate(node: &dyn ExecutionPlan) -> bool {
    node.downcast_ref::<AggregateExec>()
        .is_some_and(|aggregate| {
            matches!(
                aggregate.mode(),
                AggregateMode::Final
                    | AggregateMode::FinalPartitioned
                    | AggregateMode::Single
                    | AggregateMode::SinglePartitioned
            )
        })
}

/// Operators whose verbose text says all they do with their input.
const TOLD_BY_TEXT: &[&str] = &[
    "AggregateExec",
    "CoalesceBatchesExec",
    "CoalescePartitionsExec",
    "CooperativeExec",
    "FilterExec",
    "HashJoinExec",
    "ProjectionExec",
    "RepartitionExec",
    "SortExec",
    "SortPreservingMergeExec",
];

/// Whether every node under `root` is told by its text, reads files or
/// nothing, and evaluates only expressions that give the same answer in
/// each place.
fn is_shareable(root: &Arc<dyn ExecutionPlan>) -> Result<bool> {
    every(root, |node| {
        let told = if node.children().is_empty() {
            is_file_scan(node.as_ref())
        } else {
            TOLD_BY_TEXT.contains(&node.name())
        };
        Ok(told && node_expressions_are_fixed(node.as_ref())?)
    })
}

/// Whether `holds` is true of every node of the tree under `root`
/// (stopping at the first it is not).
fn every<T: TreeNode>(root: &T, mut holds: impl FnMut(&T) -> Result<bool>) -> Result<bool> {
    let mut all = true;
    root.apply(|node| {
        if holds(node)? {
            Ok(TreeNodeRecursion::Continue)
        } else {
            all = false;
            Ok(TreeNodeRecursion::Stop)
        }
    })?;
    Ok(all)
}

fn is_file_scan(node: &dyn ExecutionPlan) -> bool {
    node.downcast_ref::<DataSourceExec>()
        .is_some_and(|scan| scan.data_source().is::<FileScanConfig>())
}

/// Whether no expression of `node` is volatile, a dynamic filter or a
/// scalar subquery's result.
fn node_expressions_are_fixed(node: &dyn ExecutionPlan) -> Result<bool> {
    let mut fixed = true;
    node.apply_expressions(&mut |root| {
        fixed = every(root, |expr| Ok(is_fixed(expr.as_ref())))?;
        Ok(if fixed {
            TreeNodeRecursion::Continue
        } else {
            TreeNodeRecursion::Stop
        })
    })?;
    Ok(fixed)
}

fn is_fixed(expr: &dyn PhysicalExpr) -> bool {
    if expr.is::<DynamicFilterPhysicalExpr>()
        || expr.is::<ScalarSubqueryExpr>()
        || expr.is::<super::adaptive_filter::AdaptiveJoinFilter>()
    {
        return false;
    }
    match expr.downcast_ref::<ScalarFunctionExpr>() {
        Some(function) => function.fun().signature().volatility != Volatility::Volatile,
        None => true,
    }
}

/// `plan` with every one of `places` replaced by one shared node.
fn share(
    plan: Arc<dyn ExecutionPlan>,
    places: &[Arc<dyn ExecutionPlan>],
) -> Result<Arc<dyn ExecutionPlan>> {
    let addresses: HashSet<usize> = places.iter().map(address).collect();
    let shared: Arc<dyn ExecutionPlan> =
        Arc::new(SharedSubplanExec::new(Arc::clone(&places[0]), places.len()));
    plan.transform_down(|node| {
        if addresses.contains(&address(&node)) {
            Ok(Transformed::new(
                Arc::clone(&shared),
                true,
                TreeNodeRecursion::Jump,
            ))
        } else {
            Ok(Transformed::no(node))
        }
    })
    .map(|done| done.data)
}

/// One subplan read from several places in a query: each partition is
/// computed once, by whichever reader asks first, and kept until every
/// reader has asked for it.
pub(crate) struct SharedSubplanExec {
    input: Arc<dyn ExecutionPlan>,
    readers: Arc<Readers>,
    metrics: ExecutionPlanMetricsSet,
}

impl SharedSubplanExec {
    fn new(input: Arc<dyn ExecutionPlan>, readers: usize) -> Self {
        let partitions = input.properties().partitioning.partition_count();
        Self {
            input,
            readers: Arc::new(Readers::new(readers, partitions)),
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }
}

impl fmt::Debug for SharedSubplanExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedSubplanExec")
            .field("readers", &self.readers.count)
            .finish_non_exhaustive()
    }
}

/// A partition's batches, with the memory they hold reserved.
struct Kept {
    batches: Vec<RecordBatch>,
    _reservation: MemoryReservation,
}

type Computing = Shared<BoxFuture<'static, Result<Arc<Kept>, Arc<DataFusionError>>>>;

/// Who has asked for each partition of a shared subplan.
struct Readers {
    count: usize,
    partitions: Mutex<Vec<Slot>>,
}

#[derive(Default)]
struct Slot {
    computing: Option<Computing>,
    readers_left: usize,
}

impl Readers {
    fn new(count: usize, partitions: usize) -> Self {
        Self {
            count,
            partitions: Mutex::new((0..partitions).map(|_| Slot::default()).collect()),
        }
    }

    /// The computation of `partition` for one more reader, started by the
    /// first; the last reader takes it out of the slot, so that a later run
    /// of the plan computes it afresh.
    fn read(&self, partition: usize, start: impl FnOnce() -> Computing) -> Result<Computing> {
        let mut partitions = self
            .partitions
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let Some(slot) = partitions.get_mut(partition) else {
            return Err(DataFusionError::Internal(format!(
                "SharedSubplanExec has no partition {partition}"
            )));
        };
        let computing = match &slot.computing {
            Some(computing) => computing.clone(),
            None => {
                let computing = start();
                slot.computing = Some(computing.clone());
                slot.readers_left = self.count;
                computing
            }
        };
        slot.readers_left = slot.readers_left.saturating_sub(1);
        if slot.readers_left == 0 {
            slot.computing = None;
        }
        Ok(computing)
    }
}

/// Runs `input`'s `partition` to its end and keeps its batches.
async fn compute(
    input: Arc<dyn ExecutionPlan>,
    partition: usize,
    context: Arc<TaskContext>,
) -> Result<Arc<Kept>> {
    let reservation = MemoryConsumer::new(format!("SharedSubplanExec[{partition}]"))
        .register(context.memory_pool());
    let mut stream = input.execute(partition, context)?;
    let mut batches = Vec::new();
    while let Some(batch) = stream.try_next().await? {
        reservation.try_grow(batch.get_array_memory_size())?;
        batches.push(batch);
    }
    Ok(Arc::new(Kept {
        batches,
        _reservation: reservation,
    }))
}

impl DisplayAs for SharedSubplanExec {
    fn fmt_as(&self, _: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "SharedSubplanExec: readers={}", self.readers.count)
    }
}

impl ExecutionPlan for SharedSubplanExec {
    fn name(&self) -> &str {
        "SharedSubplanExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.input.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    /// Every place keeps sharing one computation: later rules change each
    /// place's copy of the input alike (they see the same subtree).
    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if children.len() != 1 {
            return Err(DataFusionError::Internal(format!(
                "SharedSubplanExec takes one child, not {}",
                children.len()
            )));
        }
        Ok(Arc::new(Self {
            input: children.swap_remove(0),
            readers: Arc::clone(&self.readers),
            metrics: self.metrics.clone(),
        }))
    }

    /// A plan run again from the start (a recursive query's step) computes
    /// its own copy in each place.
    fn reset_state(self: Arc<Self>) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(Self::new(Arc::clone(&self.input), 1)))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let computing = self.readers.read(partition, || {
            let input = Arc::clone(&self.input);
            let context = Arc::clone(&context);
            async move { compute(input, partition, context).await.map_err(Arc::new) }
                .boxed()
                .shared()
        })?;
        let metrics = BaselineMetrics::new(&self.metrics, partition);
        let batches = futures::stream::once(computing)
            .map(move |kept| match kept {
                Ok(kept) => {
                    let rows: usize = kept.batches.iter().map(RecordBatch::num_rows).sum();
                    metrics.record_output(rows);
                    let replay = (0..kept.batches.len()).map(move |i| Ok(kept.batches[i].clone()));
                    futures::stream::iter(replay).left_stream()
                }
                Err(err) => futures::stream::once(async move { Err(DataFusionError::Shared(err)) })
                    .right_stream(),
            })
            .flatten();
        let stream = RecordBatchStreamAdapter::new(self.schema(), batches);
        Ok(datafusion::physical_plan::coop::make_cooperative(Box::pin(
            stream,
        )))
    }

    fn statistics_from_inputs(
        &self,
        input_stats: &[Arc<Statistics>],
        _args: &StatisticsArgs,
    ) -> Result<Arc<Statistics>> {
        Ok(Arc::clone(&input_stats[0]))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Int64Array;
    use datafusion::physical_plan::collect;
    use datafusion::prelude::{ParquetReadOptions, SessionConfig, SessionContext};

    /// Rows in `facts`.
    const ROWS: usize = 10_000;

    /// A context with the rule after DataFusion's, over `facts` (`k` in
    /// 0..100 and `v`, in one Parquet file).
    async fn context(dir: &std::path::Path, shared: bool) -> SessionContext {
        let mut config = SessionConfig::new().with_target_partitions(2);
        config.options_mut().extensions.insert(TarnSettings {
            shared_subplans: shared,
            ..TarnSettings::default()
        });
        let state = datafusion::execution::SessionStateBuilder::new()
            .with_config(config)
            .with_default_features()
            .with_physical_optimizer_rule(Arc::new(SharedSubplans))
            .build();
        let ctx = SessionContext::new_with_state(state);
        let path = dir.join("facts.parquet");
        let sql = format!(
            "COPY (SELECT value % 100 AS k, value AS v FROM generate_series(1, {ROWS})) TO '{}' STORED AS PARQUET",
            path.display()
        );
        ctx.sql(&sql).await.unwrap().collect().await.unwrap();
        ctx.register_parquet(
            "facts",
            path.to_str().unwrap(),
            ParquetReadOptions::default(),
        )
        .await
        .unwrap();
        ctx
    }

    /// Q15's shape: a CTE read for its rows and for its maximum.
    const READ_TWICE: &str = "WITH totals AS (SELECT k, sum(v) AS total FROM facts GROUP BY k) \
         SELECT k, total FROM totals WHERE total = (SELECT max(total) FROM totals)";

    async fn plan(ctx: &SessionContext, sql: &str) -> Arc<dyn ExecutionPlan> {
        ctx.sql(sql)
            .await
            .unwrap()
            .create_physical_plan()
            .await
            .unwrap()
    }

    /// The distinct nodes named `name` in `plan` (a shared node's input is
    /// reached from each place but counted once).
    fn distinct(plan: &Arc<dyn ExecutionPlan>, name: &str) -> Vec<Arc<dyn ExecutionPlan>> {
        let mut seen = HashSet::new();
        let mut found = Vec::new();
        plan.apply(|node| {
            if node.name() == name && seen.insert(address(node)) {
                found.push(Arc::clone(node));
            }
            Ok(TreeNodeRecursion::Continue)
        })
        .unwrap();
        found
    }

    /// How many places of `plan` hold a node named `name`.
    fn places(plan: &Arc<dyn ExecutionPlan>, name: &str) -> usize {
        let mut count = 0;
        plan.apply(|node| {
            count += usize::from(node.name() == name);
            Ok(TreeNodeRecursion::Continue)
        })
        .unwrap();
        count
    }

    /// Rows the distinct file scans of `plan` produced in its last run.
    fn rows_scanned(plan: &Arc<dyn ExecutionPlan>) -> usize {
        distinct(plan, "DataSourceExec")
            .iter()
            .filter_map(|scan| scan.metrics()?.output_rows())
            .sum()
    }

    fn answer(batches: &[RecordBatch]) -> Vec<(i64, i64)> {
        let mut rows = Vec::new();
        for batch in batches {
            let k = batch
                .column(0)
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap();
            let total = batch
                .column(1)
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap();
            rows.extend((0..batch.num_rows()).map(|i| (k.value(i), total.value(i))));
        }
        rows.sort_unstable();
        rows
    }

    #[tokio::test]
    async fn a_cte_read_twice_is_aggregated_once_with_the_same_answer() {
        let dir = tempfile::tempdir().unwrap();
        let shared_ctx = context(dir.path(), true).await;
        let shared = plan(&shared_ctx, READ_TWICE).await;
        // One node in two places, over one scan.
        assert_eq!(distinct(&shared, "SharedSubplanExec").len(), 1);
        assert_eq!(places(&shared, "SharedSubplanExec"), 2);
        assert_eq!(distinct(&shared, "DataSourceExec").len(), 1);
        let shared_answer = collect(Arc::clone(&shared), shared_ctx.task_ctx())
            .await
            .unwrap();
        assert_eq!(rows_scanned(&shared), ROWS);

        let plain_ctx = context(dir.path(), false).await;
        let plain = plan(&plain_ctx, READ_TWICE).await;
        assert!(distinct(&plain, "SharedSubplanExec").is_empty());
        let plain_answer = collect(Arc::clone(&plain), plain_ctx.task_ctx())
            .await
            .unwrap();
        assert_eq!(rows_scanned(&plain), 2 * ROWS);

        // k = 0 holds 100, 200, ..., 10000: the largest total.
        assert_eq!(answer(&shared_answer), vec![(0, 505_000)]);
        assert_eq!(answer(&shared_answer), answer(&plain_answer));
    }

    #[tokio::test]
    async fn subtrees_whose_text_does_not_tell_their_rows_are_not_shared() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = context(dir.path(), true).await;
        // Rows written in the query are a memory scan: two different VALUES
        // lists have the same text.
        let values = "WITH a AS (SELECT k, count(*) AS n FROM (VALUES (1), (1)) v(k) GROUP BY k), \
             b AS (SELECT k, count(*) AS n FROM (VALUES (1), (2)) v(k) GROUP BY k) \
             SELECT a.k, a.n FROM a JOIN b ON a.n = b.n";
        // random() gives each place its own values.
        let volatile = "WITH r AS (SELECT k, sum(v * random()) AS total FROM facts GROUP BY k) \
             SELECT k, total FROM r WHERE total = (SELECT max(total) FROM r)";
        for sql in [values, volatile] {
            let plan = plan(&ctx, sql).await;
            assert!(distinct(&plan, "SharedSubplanExec").is_empty(), "{sql}");
        }
    }

    #[tokio::test]
    async fn each_reader_gets_every_batch_and_the_last_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = context(dir.path(), true).await;
        let plan = plan(&ctx, READ_TWICE).await;
        let node = Arc::clone(&distinct(&plan, "SharedSubplanExec")[0]);
        let shared = node.downcast_ref::<SharedSubplanExec>().unwrap();
        let partitions = node.properties().partitioning.partition_count();
        let mut first = Vec::new();
        let mut second = Vec::new();
        for partition in 0..partitions {
            first.extend(collect_partition(&node, partition, &ctx).await);
            second.extend(collect_partition(&node, partition, &ctx).await);
        }
        let groups =
            |batches: &[RecordBatch]| batches.iter().map(RecordBatch::num_rows).sum::<usize>();
        assert_eq!(groups(&first), 100);
        assert_eq!(groups(&second), 100);
        assert_eq!(rows_scanned(&plan), ROWS);
        let slots = shared.readers.partitions.lock().unwrap();
        assert!(slots.iter().all(|slot| slot.computing.is_none()));
    }

    async fn collect_partition(
        node: &Arc<dyn ExecutionPlan>,
        partition: usize,
        ctx: &SessionContext,
    ) -> Vec<RecordBatch> {
        node.execute(partition, ctx.task_ctx())
            .unwrap()
            .try_collect()
            .await
            .unwrap()
    }
}
