//! Join filters row by row: a physical optimizer rule that turns on Parquet
//! filter pushdown for exactly the scans a join's dynamic filter reaches.
//!
//! Tarn runs with DataFusion's default, `pushdown_filters = false`: a query's
//! own predicates are evaluated by a `FilterExec` above the scan, after
//! decoding. Measured side by side at TPC-H SF1 (`bash benches/compare-config`),
//! evaluating them inside the Parquet decoder instead cost 10% in total and
//! up to 1.9x on single queries (Q6, Q9), because the decoder decodes a
//! predicate's columns once to filter and again to output them.
//!
//! A hash join's dynamic filter (the probe side's keys must be among the
//! build side's) is the exception when it is selective, as in Q17 and Q18:
//! evaluating it in the decoder skips decoding the other columns of most
//! probe rows, and without it those queries ran 1.3x and 1.6x slower. So a
//! scan whose predicate holds a dynamic filter gets pushdown on, each join
//! filter in it wrapped in an [`AdaptiveJoinFilter`], which stops
//! evaluating it once a sample shows it keeps most rows: applied to every
//! row, join filters cost 22% of the CPU of the 22 TPC-H queries at SF1 (a
//! profile of the server), most of it in filters that removed little.
//!
//! With the session's pushdown off, every parent keeps its own filter
//! (DataFusion told it the scan would not apply them). Once a scan filters
//! row by row, the filter directly above it drops the conjuncts the scan now
//! applies exactly (those in its predicate that the decoder can evaluate),
//! so that none is evaluated twice.

use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::config::ConfigOptions;
use datafusion::datasource::physical_plan::parquet::can_expr_be_pushed_down_with_schemas;
use datafusion::datasource::physical_plan::{FileSource, ParquetSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::Result;
use datafusion::physical_expr::PhysicalExprRef;
use datafusion::physical_expr::expressions::DynamicFilterPhysicalExpr;
use datafusion::physical_expr::utils::{conjunction, reassign_expr_columns, split_conjunction};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::joins::{HashJoinExec, PartitionMode};
use datafusion::physical_plan::replace_children_if_necessary;
use std::collections::HashMap;

use super::adaptive_filter::{AdaptiveJoinFilter, FilterCost};
use super::proven::{
    Narrowed, filter_over_parquet, over_table_columns, rewrite_bottom_up, without_conjuncts,
};

/// Turns on Parquet filter pushdown for scans that a join's dynamic filter reaches.
#[derive(Debug, Default)]
pub(crate) struct JoinFiltersInScans;

impl PhysicalOptimizerRule for JoinFiltersInScans {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if config.execution.parquet.pushdown_filters {
            // Every scan filters row by row already.
            return Ok(plan);
        }
        let joins = join_filters(&plan);
        // First the routed filters above their scans, while every scan's
        // predicate still holds them.
        let plan = plan
            .transform_up(|node| {
                Ok(match routed_filters_above_scans(&node, &joins)? {
                    Some(changed) => Transformed::yes(changed),
                    None => Transformed::no(node),
                })
            })?
            .data;
        // Bottom up: a scan is changed before the filter above it.
        rewrite_bottom_up(plan, |node| {
            match with_pushdown_for_join_filter(node, &joins) {
                Some(scan) => Ok(Some(scan)),
                None => filter_without_what_its_scan_applies(node),
            }
        })
    }

    fn name(&self) -> &str {
        "JoinFiltersInScans"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// The ids of the dynamic filters of the hash joins in `plan`, with what
/// evaluating each costs.
fn join_filters(plan: &Arc<dyn ExecutionPlan>) -> HashMap<u64, FilterCost> {
    let mut ids = HashMap::new();
    let _ = plan.apply(|node| {
        if let Some(join) = node.downcast_ref::<HashJoinExec>() {
            let cost = match join.partition_mode() {
                PartitionMode::Partitioned => FilterCost::Routed,
                _ => FilterCost::Lookup,
            };
            ids.extend(
                join.dynamic_expressions_produced()
                    .iter()
                    .filter_map(|filter| filter.expression_id())
                    .map(|id| (id, cost)),
            );
        }
        Ok(TreeNodeRecursion::Continue)
    });
    ids
}

/// `node` again with filter pushdown on, if it is a Parquet scan without it
/// whose predicate holds a dynamic filter other than a partitioned join's:
/// those leave the predicate it applies row by row (they are applied above
/// the scan, [`routed_filters_above_scans`]), and each other join filter
/// is wrapped in an [`AdaptiveJoinFilter`].
fn with_pushdown_for_join_filter(
    node: &dyn ExecutionPlan,
    joins: &HashMap<u64, FilterCost>,
) -> Option<Arc<dyn ExecutionPlan>> {
    let scan = node.downcast_ref::<DataSourceExec>()?;
    let (config, parquet) = scan.downcast_to_file_source::<ParquetSource>()?;
    let predicate = parquet.filter()?;
    if parquet.table_parquet_options().global.pushdown_filters {
        return None;
    }
    let (_, kept): (Vec<_>, Vec<_>) = split_conjunction(&predicate)
        .into_iter()
        .cloned()
        .partition(|conjunct| holds_join_filter(conjunct, joins, FilterCost::Routed));
    if !kept.iter().any(holds_dynamic_filter) {
        return None;
    }
    let adaptive = conjunction(kept)
        .transform_down(|expr| {
            if expr.downcast_ref::<AdaptiveJoinFilter>().is_some() {
                return Ok(Transformed::new(expr, false, TreeNodeRecursion::Jump));
            }
            match expr.expression_id().and_then(|id| joins.get(&id)) {
                Some(cost) => Ok(Transformed::new(
                    AdaptiveJoinFilter::wrap(expr, *cost),
                    true,
                    TreeNodeRecursion::Jump,
                )),
                None => Ok(Transformed::no(expr)),
            }
        })
        .ok()?
        .data;
    let mut pushed = config.clone();
    pushed.file_source = Arc::new(parquet.with_predicate(adaptive).with_pushdown_filters(true));
    Some(Arc::new(scan.clone().with_data_source(Arc::new(pushed))))
}

/// `node` again with an adaptive filter of the partitioned joins' filters
/// put over each child that is a Parquet scan holding any, or a filter
/// directly over one: the new filter goes above that filter, so that it
/// stays where [`filter_without_what_its_scan_applies`] looks for it.
fn routed_filters_above_scans(
    node: &Arc<dyn ExecutionPlan>,
    joins: &HashMap<u64, FilterCost>,
) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    if let Some(filter) = node.downcast_ref::<FilterExec>()
        && filter.input().downcast_ref::<DataSourceExec>().is_some()
    {
        // The scan's own filter: its parent puts the new one above both.
        return Ok(None);
    }
    let mut changed = false;
    let mut children = Vec::with_capacity(node.children().len());
    for child in node.children() {
        let scan = match child.downcast_ref::<FilterExec>() {
            Some(filter) => filter.input(),
            None => child,
        };
        // The scan's predicate names columns by their place in the table;
        // above it they are found by name in what `child` outputs (a filter
        // over the scan may not output them all).
        let output = child.schema();
        let routed: Vec<_> = routed_join_filters(scan, joins)
            .into_iter()
            .filter_map(|filter| reassign_expr_columns(filter, &output).ok())
            .map(|filter| AdaptiveJoinFilter::wrap(filter, FilterCost::Routed))
            .collect();
        if routed.is_empty() {
            children.push(Arc::clone(child));
            continue;
        }
        let predicate = conjunction(routed);
        children.push(Arc::new(FilterExec::try_new(predicate, Arc::clone(child))?));
        changed = true;
    }
    match changed {
        true => Ok(Some(replace_children_if_necessary(
            Arc::clone(node),
            children,
        )?)),
        false => Ok(None),
    }
}

/// The filters of partitioned joins in the predicate of `scan`, if it is a
/// Parquet scan.
fn routed_join_filters(
    scan: &Arc<dyn ExecutionPlan>,
    joins: &HashMap<u64, FilterCost>,
) -> Vec<PhysicalExprRef> {
    let Some((_, parquet)) = scan
        .downcast_ref::<DataSourceExec>()
        .and_then(|scan| scan.downcast_to_file_source::<ParquetSource>())
    else {
        return Vec::new();
    };
    let Some(predicate) = parquet.filter() else {
        return Vec::new();
    };
    split_conjunction(&predicate)
        .into_iter()
        .filter(|conjunct| holds_join_filter(conjunct, joins, FilterCost::Routed))
        .cloned()
        .collect()
}

/// Whether `expr` holds the filter of one of `joins` whose cost is `cost`.
fn holds_join_filter(
    expr: &PhysicalExprRef,
    joins: &HashMap<u64, FilterCost>,
    cost: FilterCost,
) -> bool {
    expr.exists(|e| {
        Ok(e.expression_id()
            .and_then(|id| joins.get(&id))
            .is_some_and(|c| *c == cost))
    })
    .unwrap_or(false)
}

/// `node` again without the conjuncts that the scan below it now applies
/// exactly while decoding, if it is a filter over a scan this rule changed.
/// Without this, a costly predicate (Q13's `NOT LIKE`) ran twice.
fn filter_without_what_its_scan_applies(
    node: &dyn ExecutionPlan,
) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    let Some((filter, config, parquet)) = filter_over_parquet(node) else {
        return Ok(None);
    };
    let Some(predicate) = parquet.filter() else {
        return Ok(None);
    };
    if !parquet.table_parquet_options().global.pushdown_filters || !holds_dynamic_filter(&predicate)
    {
        return Ok(None);
    }
    let table_schema = config.file_source().table_schema();
    let (table, file) = (table_schema.table_schema(), table_schema.file_schema());
    let applied = split_conjunction(&predicate);
    // Only what the decoder can apply (file columns, supported expressions)
    // is applied there; anything else stays here.
    let narrowed = without_conjuncts(filter, |conjunct| {
        Ok(over_table_columns(conjunct, table)?.is_some_and(|own| {
            can_expr_be_pushed_down_with_schemas(&own, file)
                && applied.iter().any(|done| done.as_ref() == own.as_ref())
        }))
    })?;
    Ok(match narrowed {
        None => None,
        Some(Narrowed::Gone(input)) => Some(input),
        Some(Narrowed::Fewer(filter)) => Some(Arc::new(filter)),
    })
}

fn holds_dynamic_filter(predicate: &PhysicalExprRef) -> bool {
    predicate
        .exists(|expr| Ok(expr.downcast_ref::<DynamicFilterPhysicalExpr>().is_some()))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::physical_plan::metrics::MetricValue;
    use datafusion::prelude::{ParquetReadOptions, SessionConfig, SessionContext};

    /// A context with the rule and DataFusion's default (no pushdown), over
    /// `facts` (`x` 1..=10000 in one file) and `picks` (three keys).
    async fn context(dir: &std::path::Path) -> SessionContext {
        let config = SessionConfig::new()
            .set_bool("datafusion.execution.parquet.pushdown_filters", false)
            .with_target_partitions(2);
        let state = datafusion::execution::SessionStateBuilder::new()
            .with_config(config)
            .with_default_features()
            .with_physical_optimizer_rule(Arc::new(JoinFiltersInScans))
            .build();
        let ctx = SessionContext::new_with_state(state);
        for (name, sql) in [
            (
                "facts",
                "SELECT value AS x, value * 2 AS y FROM generate_series(1, 10000)",
            ),
            ("picks", "SELECT * FROM (VALUES (5), (500), (5000)) AS v(k)"),
        ] {
            let path = dir.join(format!("{name}.parquet"));
            ctx.sql(&format!(
                "COPY ({sql}) TO '{}' STORED AS PARQUET",
                path.display()
            ))
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
            ctx.register_parquet(name, path.to_str().unwrap(), ParquetReadOptions::default())
                .await
                .unwrap();
        }
        ctx
    }

    /// The integer in `column` of an answer's first row.
    fn int_at(batches: &[arrow::array::RecordBatch], column: usize) -> i64 {
        batches[0]
            .column(column)
            .as_any()
            .downcast_ref::<arrow::array::Int64Array>()
            .unwrap()
            .value(0)
    }

    /// Each Parquet scan of `plan`: whether it filters row by row, whether
    /// its predicate holds a dynamic filter, and the rows its row filter
    /// removed.
    fn scans(plan: &Arc<dyn ExecutionPlan>) -> Vec<(bool, bool, usize)> {
        let mut found = Vec::new();
        plan.apply(|node| {
            if let Some(scan) = node.downcast_ref::<DataSourceExec>()
                && let Some((_, parquet)) = scan.downcast_to_file_source::<ParquetSource>()
            {
                let pruned = node
                    .metrics()
                    .map(|metrics| {
                        metrics
                            .iter()
                            .filter(|m| m.value().name() == "pushdown_rows_pruned")
                            .map(|m| match m.value() {
                                MetricValue::Count { count, .. } => count.value(),
                                _ => 0,
                            })
                            .sum()
                    })
                    .unwrap_or(0);
                found.push((
                    parquet.table_parquet_options().global.pushdown_filters,
                    parquet.filter().is_some_and(|p| holds_dynamic_filter(&p)),
                    pruned,
                ));
            }
            Ok(TreeNodeRecursion::Continue)
        })
        .unwrap();
        found
    }

    #[tokio::test]
    async fn the_probe_scan_of_a_join_filters_its_rows_and_no_other_scan_does() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = context(dir.path()).await;
        let plan = ctx
            .sql("SELECT count(*), sum(y) FROM facts JOIN picks ON x = k")
            .await
            .unwrap()
            .create_physical_plan()
            .await
            .unwrap();
        let batches = datafusion::physical_plan::collect(Arc::clone(&plan), ctx.task_ctx())
            .await
            .unwrap();
        let count = int_at(&batches, 0);
        let sum = int_at(&batches, 1);
        assert_eq!((count, sum), (3, 2 * (5 + 500 + 5000)));

        let scans = scans(&plan);
        assert_eq!(scans.len(), 2, "{scans:?}");
        // The probe side: the join's filter, applied while decoding.
        let probe = scans.iter().find(|(_, dynamic, _)| *dynamic).unwrap();
        assert!(probe.0, "{scans:?}");
        assert!(probe.2 >= 9_000, "the row filter removed {} rows", probe.2);
        // The build side has no such filter and keeps DataFusion's default.
        assert!(
            scans
                .iter()
                .any(|(pushdown, dynamic, _)| !pushdown && !dynamic)
        );
    }

    #[tokio::test]
    async fn a_filter_over_a_probe_scan_is_applied_once_in_the_scan() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = context(dir.path()).await;
        let plan = ctx
            .sql("SELECT count(*) FROM facts JOIN picks ON x = k WHERE y > 20 AND x % 2 = 0")
            .await
            .unwrap()
            .create_physical_plan()
            .await
            .unwrap();
        let shown = datafusion::physical_plan::displayable(plan.as_ref())
            .indent(true)
            .to_string();
        assert!(
            !shown
                .lines()
                .any(|l| l.contains("FilterExec") && l.contains("y@")),
            "{shown}"
        );
        let batches = datafusion::physical_plan::collect(Arc::clone(&plan), ctx.task_ctx())
            .await
            .unwrap();
        let count = int_at(&batches, 0);
        // x = 5 has y = 10 and is odd: only 500 and 5000 remain.
        assert_eq!(count, 2, "{shown}");
    }

    #[tokio::test]
    async fn a_partitioned_joins_filter_is_applied_above_its_scan_and_not_in_the_decoder() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = context(dir.path()).await;
        // No build side is small enough to collect once: both sides are
        // partitioned, and the join's filter routes each row by its hash.
        for key in [
            "datafusion.optimizer.hash_join_single_partition_threshold",
            "datafusion.optimizer.hash_join_single_partition_threshold_rows",
        ] {
            ctx.sql(&format!("SET {key} = 0")).await.unwrap();
        }
        let plan = ctx
            .sql("SELECT count(*), sum(y) FROM facts JOIN picks ON x = k")
            .await
            .unwrap()
            .create_physical_plan()
            .await
            .unwrap();
        let shown = datafusion::physical_plan::displayable(plan.as_ref())
            .indent(true)
            .to_string();
        assert!(shown.contains("mode=Partitioned"), "{shown}");
        let batches = datafusion::physical_plan::collect(Arc::clone(&plan), ctx.task_ctx())
            .await
            .unwrap();
        assert_eq!(
            (int_at(&batches, 0), int_at(&batches, 1)),
            (3, 2 * (5 + 500 + 5000))
        );
        let shown = datafusion::physical_plan::displayable(plan.as_ref())
            .indent(true)
            .to_string();
        let above = shown
            .lines()
            .find(|l| l.contains("FilterExec") && l.contains("AdaptiveJoinFilter"));
        assert!(above.is_some(), "{shown}");
        assert!(
            scans(&plan).iter().all(|(pushdown, _, _)| !pushdown),
            "no scan filters row by row: {shown}"
        );
    }

    #[tokio::test]
    async fn a_plain_filter_stays_above_the_scan() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = context(dir.path()).await;
        let plan = ctx
            .sql("SELECT count(*) FROM facts WHERE y < 100")
            .await
            .unwrap()
            .create_physical_plan()
            .await
            .unwrap();
        let shown = datafusion::physical_plan::displayable(plan.as_ref())
            .indent(true)
            .to_string();
        assert!(shown.contains("FilterExec"), "{shown}");
        assert!(scans(&plan).iter().all(|(pushdown, _, _)| !pushdown));
    }
}
