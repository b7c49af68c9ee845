//! Conjuncts a scan's own files prove: a physical optimizer rule that drops,
//! from the predicate of a Parquet scan, every conjunct that the exact
//! statistics of the very files it reads show to be true for every row.
//!
//! A row filter (`policies.rs`) that keeps every row of today's files, such
//! as `l_linenumber > 0` on a column no query reads, would otherwise make each
//! scan decode that column and test it row by row. Dropping a conjunct that
//! holds for every row changes no answer, so it is safe for any predicate,
//! whoever wrote it. The proof is made when the plan is built, on the files
//! this plan reads (their footers' statistics, already read by the listing),
//! and is never cached: a file added later is checked by the plan that reads
//! it. A file replaced in place after planning is read with the size and
//! footer it was planned with, which fails rather than serving its rows.
//!
//! A conjunct counts as proven only when, in every file, each column it uses
//! has an exact null count of zero and its negation is ruled out by exact
//! minimum and maximum values ([`PruningPredicate`] over the files as
//! containers). Only comparisons of columns with non-null literals,
//! `IS [NOT] NULL`, `IN` lists of non-null literals, `NOT`, `AND` and `OR` are
//! considered: over non-null columns they are never NULL, so "the negation is
//! false everywhere" means "the conjunct is true everywhere".

use std::sync::Arc;

use arrow::datatypes::{Schema, SchemaRef};
use datafusion::common::Statistics;
use datafusion::common::pruning::PrunableStatistics;
use datafusion::common::stats::Precision;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::config::ConfigOptions;
use datafusion::datasource::physical_plan::{FileScanConfig, FileSource, ParquetSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::Result;
use datafusion::logical_expr::Operator;
use datafusion::physical_expr::PhysicalExprRef;
use datafusion::physical_expr::expressions::{
    BinaryExpr, CastExpr, Column, InListExpr, IsNotNullExpr, IsNullExpr, Literal, NotExpr, lit,
};
use datafusion::physical_expr::utils::{collect_columns, conjunction, split_conjunction};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_optimizer::pruning::PruningPredicateBuilder;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::Partitioning;
use datafusion::physical_plan::execution_plan::{ChildrenPropertiesMode, ReplaceChildrenOptions};
use datafusion::physical_plan::filter::{FilterExec, FilterExecBuilder};
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::repartition::RepartitionExec;

/// Drops proven conjuncts from the predicates of Parquet scans.
#[derive(Debug, Default)]
pub(crate) struct ProvenConjuncts;

impl PhysicalOptimizerRule for ProvenConjuncts {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        rewrite_bottom_up(plan, |node| match without_proven_conjuncts(node)? {
            Some(scan) => Ok(Some(scan)),
            None => filter_without_proven_conjuncts(node),
        })
    }

    fn name(&self) -> &str {
        "ProvenConjuncts"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// `plan` with each node `rewrite` returns a replacement for replaced,
/// children before their parents.
pub(super) fn rewrite_bottom_up(
    plan: Arc<dyn ExecutionPlan>,
    mut rewrite: impl FnMut(&dyn ExecutionPlan) -> Result<Option<Arc<dyn ExecutionPlan>>>,
) -> Result<Arc<dyn ExecutionPlan>> {
    plan.transform_up(|node| {
        Ok(match rewrite(node.as_ref())? {
            Some(replacement) => Transformed::yes(replacement),
            None => Transformed::no(node),
        })
    })
    .map(|done| done.data)
}

/// `node` again without the conjuncts its files prove, if it is a Parquet
/// scan with any.
fn without_proven_conjuncts(node: &dyn ExecutionPlan) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    let Some(scan) = node.downcast_ref::<DataSourceExec>() else {
        return Ok(None);
    };
    let Some((config, parquet)) = scan.downcast_to_file_source::<ParquetSource>() else {
        return Ok(None);
    };
    let Some(predicate) = parquet.filter() else {
        return Ok(None);
    };
    let Some(files) = file_statistics(config) else {
        return Ok(None);
    };
    let schema = Arc::clone(config.file_source().table_schema().table_schema());
    let conjuncts = split_conjunction(&predicate);
    let mut kept = Vec::with_capacity(conjuncts.len());
    for conjunct in &conjuncts {
        if !proven(conjunct, &files, &schema) {
            kept.push(Arc::clone(conjunct));
        }
    }
    if kept.len() == conjuncts.len() {
        return Ok(None);
    }
    // A scan cannot be told to drop its predicate, only to take another;
    // `true` needs no column and prunes nothing.
    let remaining = match kept.is_empty() {
        true => lit(true),
        false => conjunction(kept),
    };
    let mut narrowed = config.clone();
    narrowed.file_source = Arc::new(parquet.with_predicate(remaining));
    Ok(Some(Arc::new(
        scan.clone().with_data_source(Arc::new(narrowed)),
    )))
}

/// `node` again without the conjuncts the files below it prove, if it is a
/// filter directly over a Parquet scan with any. Without Parquet filter
/// pushdown the predicate stays here, above the scan, in terms of the
/// scan's output columns.
fn filter_without_proven_conjuncts(
    node: &dyn ExecutionPlan,
) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    let Some((filter, config, _)) = filter_over_parquet(node) else {
        return Ok(None);
    };
    let Some(files) = file_statistics(config) else {
        return Ok(None);
    };
    let schema = Arc::clone(config.file_source().table_schema().table_schema());
    let narrowed = without_conjuncts(filter, |conjunct| {
        let in_table_columns = over_table_columns(conjunct, &schema)?;
        Ok(in_table_columns.is_some_and(|c| proven(&c, &files, &schema)))
    })?;
    Ok(match narrowed {
        None => None,
        Some(Narrowed::Gone(input)) => Some(input),
        Some(Narrowed::Fewer(filter)) => Some(with_unused_columns_unread(filter)?),
    })
}

/// What is left of a filter once some of its conjuncts are dropped.
pub(super) enum Narrowed {
    /// Nothing to test, project or limit: the filter's input stands for it.
    Gone(Arc<dyn ExecutionPlan>),
    /// The same filter (projection, fetch, selectivity) with fewer conjuncts.
    Fewer(FilterExec),
}

/// `filter` without the conjuncts for which `dropped` is true, or `None`
/// if there are none.
pub(super) fn without_conjuncts(
    filter: &FilterExec,
    mut dropped: impl FnMut(&PhysicalExprRef) -> Result<bool>,
) -> Result<Option<Narrowed>> {
    let conjuncts = split_conjunction(filter.predicate());
    let mut kept = Vec::with_capacity(conjuncts.len());
    for conjunct in &conjuncts {
        if !dropped(conjunct)? {
            kept.push(Arc::clone(conjunct));
        }
    }
    if kept.len() == conjuncts.len() {
        return Ok(None);
    }
    if kept.is_empty() && filter.projection().is_none() && filter.fetch().is_none() {
        return Ok(Some(Narrowed::Gone(Arc::clone(filter.input()))));
    }
    let remaining = match kept.is_empty() {
        true => lit(true),
        false => conjunction(kept),
    };
    let fewer = FilterExecBuilder::from(filter)
        .with_predicate(remaining)
        .build()?;
    Ok(Some(Narrowed::Fewer(fewer)))
}

/// `filter` again over a scan that reads only the columns it still uses,
/// if it projects some away and is over a scan (directly or through a
/// round-robin repartition): a column only a dropped conjunct read
/// (`l_linenumber` of `l_linenumber > 0`) is then not decoded at all.
fn with_unused_columns_unread(filter: FilterExec) -> Result<Arc<dyn ExecutionPlan>> {
    let input = Arc::clone(filter.input());
    let Some(projection) = filter.projection().clone() else {
        return Ok(Arc::new(filter));
    };
    let schema = input.schema();
    let mut used = vec![false; schema.fields().len()];
    let columns = collect_columns(filter.predicate());
    for index in projection
        .iter()
        .copied()
        .chain(columns.iter().map(Column::index))
    {
        if let Some(slot) = used.get_mut(index) {
            *slot = true;
        }
    }
    if used.iter().all(|u| *u) {
        return Ok(Arc::new(filter));
    }
    let kept: Vec<usize> = (0..used.len()).filter(|i| used[*i]).collect();
    let Some(narrower_input) = input_reading_only(&input, &kept)? else {
        return Ok(Arc::new(filter));
    };
    let renumbered = |old: usize| kept.iter().position(|&k| k == old);
    let mut lost = false;
    let predicate = Arc::clone(filter.predicate())
        .transform(|node| {
            let Some(column) = node.downcast_ref::<Column>() else {
                return Ok(Transformed::no(node));
            };
            match renumbered(column.index()) {
                Some(index) => Ok(Transformed::yes(
                    Arc::new(Column::new(column.name(), index)) as PhysicalExprRef,
                )),
                None => {
                    lost = true;
                    Ok(Transformed::no(node))
                }
            }
        })?
        .data;
    let outputs: Option<Vec<usize>> = projection.iter().map(|&i| renumbered(i)).collect();
    let (Some(outputs), false) = (outputs, lost) else {
        return Ok(Arc::new(filter));
    };
    let rebuilt = FilterExecBuilder::new(predicate, narrower_input)
        .with_default_selectivity(filter.default_selectivity())
        .with_batch_size(filter.batch_size())
        .with_fetch(filter.fetch())
        .apply_projection(Some(outputs))?
        .build()?;
    Ok(Arc::new(rebuilt))
}

/// `input` (a scan, or a round-robin repartition of one) again, producing
/// only the columns `kept` in their order, if the scan can take that
/// projection.
fn input_reading_only(
    input: &Arc<dyn ExecutionPlan>,
    kept: &[usize],
) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    if let Some(repartition) = input.downcast_ref::<RepartitionExec>() {
        if !matches!(repartition.partitioning(), Partitioning::RoundRobinBatch(_)) {
            return Ok(None);
        }
        let Some(scan) = input_reading_only(repartition.input(), kept)? else {
            return Ok(None);
        };
        let recompute = ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute);
        return Arc::clone(input)
            .replace_children(vec![scan], recompute)
            .map(Some);
    }
    let Some(scan) = input.downcast_ref::<DataSourceExec>() else {
        return Ok(None);
    };
    let schema = input.schema();
    let exprs = kept.iter().map(|&i| {
        let name = schema.field(i).name();
        (
            Arc::new(Column::new(name, i)) as PhysicalExprRef,
            name.clone(),
        )
    });
    let narrowing = ProjectionExec::try_new(exprs, Arc::clone(input))?;
    scan.try_swapping_with_projection(&narrowing)
}

/// `node` as a filter over a Parquet scan (see [`scan_below`]): the filter,
/// the scan's configuration and its source.
pub(super) fn filter_over_parquet(
    node: &dyn ExecutionPlan,
) -> Option<(&FilterExec, &FileScanConfig, &ParquetSource)> {
    let filter = node.downcast_ref::<FilterExec>()?;
    let (config, parquet) =
        scan_below(filter.input())?.downcast_to_file_source::<ParquetSource>()?;
    Some((filter, config, parquet))
}

/// The scan `plan` passes on unchanged: the scan itself, or one under
/// repartitions, which move rows between partitions but keep every row and
/// column.
pub(super) fn scan_below(plan: &Arc<dyn ExecutionPlan>) -> Option<&DataSourceExec> {
    let mut node = plan;
    loop {
        if let Some(scan) = node.downcast_ref::<DataSourceExec>() {
            return Some(scan);
        }
        node = node.downcast_ref::<RepartitionExec>()?.input();
    }
}

/// `expr` with each column numbered as in the table's schema (where the
/// files' statistics are) instead of the scan's output, or `None` if a
/// column is not the table's.
pub(super) fn over_table_columns(
    expr: &PhysicalExprRef,
    table: &Schema,
) -> Result<Option<PhysicalExprRef>> {
    let mut foreign = false;
    let renumbered = Arc::clone(expr).transform(|node| {
        let Some(column) = node.downcast_ref::<Column>() else {
            return Ok(Transformed::no(node));
        };
        match table.index_of(column.name()) {
            Ok(index) => Ok(Transformed::yes(
                Arc::new(Column::new(column.name(), index)) as PhysicalExprRef,
            )),
            Err(_) => {
                foreign = true;
                Ok(Transformed::no(node))
            }
        }
    })?;
    Ok((!foreign).then_some(renumbered.data))
}

/// The statistics of every file `config` reads, if each file has them.
fn file_statistics(config: &FileScanConfig) -> Option<Vec<Arc<Statistics>>> {
    config
        .file_groups
        .iter()
        .flat_map(|group| group.files())
        .map(|file| file.statistics.clone())
        .collect()
}

/// Whether `conjunct` is true for every row of `files` (over `schema`).
fn proven(conjunct: &PhysicalExprRef, files: &[Arc<Statistics>], schema: &SchemaRef) -> bool {
    if files.is_empty() {
        return false;
    }
    let mut columns = Vec::new();
    let Some(negation) = negate(conjunct, schema, &mut columns) else {
        return false;
    };
    let never_null = columns.iter().all(|column| {
        files.iter().all(|file| {
            file.column_statistics
                .get(column.index())
                .is_some_and(|stats| stats.null_count == Precision::Exact(0))
        }) && schema
            .fields()
            .get(column.index())
            .is_some_and(|field| field.name() == column.name())
    });
    if !never_null {
        return false;
    }
    let Ok(pruning) = PruningPredicateBuilder::new()
        .with_file_schema(Arc::clone(schema))
        .try_build(negation)
    else {
        return false;
    };
    if pruning.always_true() {
        return false;
    }
    let statistics = PrunableStatistics::new(files.to_vec(), Arc::clone(schema));
    pruning
        .prune(&statistics)
        .is_ok_and(|may_match| may_match.len() == files.len() && may_match.iter().all(|m| !m))
}

/// `NOT expr` in a form the pruning predicate reads, for the expressions
/// this module considers (`None` for any other); the columns it uses are
/// added to `columns`.
fn negate(
    expr: &PhysicalExprRef,
    schema: &Schema,
    columns: &mut Vec<Column>,
) -> Option<PhysicalExprRef> {
    if let Some(binary) = expr.downcast_ref::<BinaryExpr>() {
        let op = *binary.op();
        return match op {
            Operator::And | Operator::Or => {
                let left = negate(binary.left(), schema, columns)?;
                let right = negate(binary.right(), schema, columns)?;
                let flipped = if op == Operator::And {
                    Operator::Or
                } else {
                    Operator::And
                };
                Some(Arc::new(BinaryExpr::new(left, flipped, right)))
            }
            _ => {
                let negated = negated_comparison(op)?;
                let (left, right) = (binary.left(), binary.right());
                let column_and_value = (operand(left, columns) && value(right))
                    || (value(left) && operand(right, columns));
                column_and_value.then(|| {
                    Arc::new(BinaryExpr::new(
                        Arc::clone(left),
                        negated,
                        Arc::clone(right),
                    )) as PhysicalExprRef
                })
            }
        };
    }
    if let Some(is_null) = expr.downcast_ref::<IsNullExpr>() {
        return operand(is_null.arg(), columns)
            .then(|| Arc::new(IsNotNullExpr::new(Arc::clone(is_null.arg()))) as PhysicalExprRef);
    }
    if let Some(is_not_null) = expr.downcast_ref::<IsNotNullExpr>() {
        return operand(is_not_null.arg(), columns)
            .then(|| Arc::new(IsNullExpr::new(Arc::clone(is_not_null.arg()))) as PhysicalExprRef);
    }
    if let Some(in_list) = expr.downcast_ref::<InListExpr>() {
        let plain = operand(in_list.expr(), columns) && in_list.list().iter().all(value);
        if !plain {
            return None;
        }
        let list = in_list.list().to_vec();
        return InListExpr::try_new(Arc::clone(in_list.expr()), list, !in_list.negated(), schema)
            .ok()
            .map(|e| Arc::new(e) as PhysicalExprRef);
    }
    if let Some(not) = expr.downcast_ref::<NotExpr>() {
        // NOT NOT x is x, once x is known to be one of the forms above.
        let mut inner = Vec::new();
        negate(not.arg(), schema, &mut inner)?;
        columns.extend(inner);
        return Some(Arc::clone(not.arg()));
    }
    None
}

/// The comparison that is true exactly when `op` is false (for non-null operands).
fn negated_comparison(op: Operator) -> Option<Operator> {
    Some(match op {
        Operator::Eq => Operator::NotEq,
        Operator::NotEq => Operator::Eq,
        Operator::Lt => Operator::GtEq,
        Operator::LtEq => Operator::Gt,
        Operator::Gt => Operator::LtEq,
        Operator::GtEq => Operator::Lt,
        _ => return None,
    })
}

/// A column, possibly cast: never NULL once its column has no nulls.
fn operand(expr: &PhysicalExprRef, columns: &mut Vec<Column>) -> bool {
    if let Some(column) = expr.downcast_ref::<Column>() {
        columns.push(column.clone());
        return true;
    }
    expr.downcast_ref::<CastExpr>()
        .is_some_and(|cast| operand(cast.expr(), columns))
}

/// A literal that is not NULL.
fn value(expr: &PhysicalExprRef) -> bool {
    expr.downcast_ref::<Literal>()
        .is_some_and(|literal| !literal.value().is_null())
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::physical_plan::displayable;
    use datafusion::prelude::{ParquetReadOptions, SessionConfig, SessionContext};

    /// A context with the rule, over one Parquet file: `x` 1..=100, `y` the
    /// same, `z` NULL every tenth row.
    async fn context(dir: &std::path::Path) -> SessionContext {
        context_with_pushdown(dir, true).await
    }

    async fn context_with_pushdown(dir: &std::path::Path, pushdown: bool) -> SessionContext {
        let config = SessionConfig::new()
            .set_bool("datafusion.execution.parquet.pushdown_filters", pushdown)
            .with_target_partitions(2);
        let state = datafusion::execution::SessionStateBuilder::new()
            .with_config(config)
            .with_default_features()
            .with_physical_optimizer_rule(Arc::new(ProvenConjuncts))
            .build();
        let ctx = SessionContext::new_with_state(state);
        let path = dir.join("t.parquet");
        ctx.sql(&format!(
            "COPY (SELECT value AS x, value AS y, CASE WHEN value % 10 = 0 THEN NULL ELSE 'v' END AS z \
             FROM generate_series(1, 100)) TO '{}' STORED AS PARQUET",
            path.display()
        ))
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
        ctx.register_parquet("t", path.to_str().unwrap(), ParquetReadOptions::default())
            .await
            .unwrap();
        ctx
    }

    /// The scan's predicate and the query's count.
    async fn scan_and_count(ctx: &SessionContext, filter: &str) -> (String, i64) {
        let frame = ctx
            .sql(&format!("SELECT count(*) FROM t WHERE {filter}"))
            .await
            .unwrap();
        let plan = frame.create_physical_plan().await.unwrap();
        let shown = displayable(plan.as_ref()).indent(true).to_string();
        let scan = shown
            .lines()
            .find(|line| line.contains("DataSourceExec"))
            .unwrap()
            .to_string();
        let batches = datafusion::physical_plan::collect(plan, ctx.task_ctx())
            .await
            .unwrap();
        let count = batches[0]
            .column(0)
            .as_any()
            .downcast_ref::<arrow::array::Int64Array>()
            .unwrap()
            .value(0);
        (scan, count)
    }

    #[tokio::test]
    async fn only_conjuncts_true_for_every_row_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = context(dir.path()).await;

        // `x > 0` holds everywhere: gone; `y < 50` stays.
        let (scan, count) = scan_and_count(&ctx, "x > 0 AND y < 50").await;
        assert!(!scan.contains("x@0 > 0"), "{scan}");
        assert!(scan.contains("y@1 < 50"), "{scan}");
        assert_eq!(count, 49);

        // Everything proven: the scan keeps a predicate that reads nothing.
        let (scan, count) = scan_and_count(
            &ctx,
            "x BETWEEN 1 AND 100 AND y NOT IN (0, 101) AND x IS NOT NULL",
        )
        .await;
        assert!(scan.contains("predicate=true"), "{scan}");
        assert_eq!(count, 100);

        // Not true for every row, or a column with NULLs: kept, and applied.
        for (filter, expected) in [
            ("x > 1", 99),
            ("x <> 50", 99),
            ("NOT (x < 2 OR y > 99)", 98),
            ("z IS NOT NULL", 90),
            ("z <> 'w'", 90),
            ("x IN (1, 2, 3)", 3),
        ] {
            let (scan, count) = scan_and_count(&ctx, filter).await;
            assert!(!scan.contains("predicate=true"), "{filter}: {scan}");
            assert_eq!(count, expected, "{filter}");
        }
    }

    /// The plan as text and the first column of its one-row answer.
    async fn plan_and_answer(ctx: &SessionContext, sql: &str) -> (String, i64) {
        let plan = ctx
            .sql(sql)
            .await
            .unwrap()
            .create_physical_plan()
            .await
            .unwrap();
        let shown = displayable(plan.as_ref()).indent(true).to_string();
        let batches = datafusion::physical_plan::collect(plan, ctx.task_ctx())
            .await
            .unwrap();
        let value = batches[0]
            .column(0)
            .as_any()
            .downcast_ref::<arrow::array::Int64Array>()
            .unwrap()
            .value(0);
        (shown, value)
    }

    #[tokio::test]
    async fn without_pushdown_the_filter_above_the_scan_loses_proven_conjuncts() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = context_with_pushdown(dir.path(), false).await;

        let (plan, count) =
            plan_and_answer(&ctx, "SELECT count(*) FROM t WHERE x > 0 AND y < 50").await;
        let filter = plan.lines().find(|l| l.contains("FilterExec")).unwrap();
        assert!(!filter.contains("x@"), "{plan}");
        assert!(filter.contains("y@") && filter.contains("< 50"), "{plan}");
        assert_eq!(count, 49);

        // Everything proven: the filter left (if it also projects) tests
        // nothing; the answer is every row.
        for (sql, expected) in [
            (
                "SELECT count(*) FROM t WHERE x BETWEEN 1 AND 100 AND x IS NOT NULL",
                100,
            ),
            (
                "SELECT sum(y) FROM t WHERE x BETWEEN 1 AND 100 AND x IS NOT NULL",
                5050,
            ),
        ] {
            let (plan, answer) = plan_and_answer(&ctx, sql).await;
            let filter = plan.lines().find(|l| l.contains("FilterExec"));
            assert!(
                filter.is_none_or(|l| l.contains("FilterExec: true")),
                "{plan}"
            );
            assert_eq!(answer, expected, "{sql}");
            // `x`, read only by the dropped conjuncts, is not read at all.
            let scan = plan.lines().find(|l| l.contains("DataSourceExec")).unwrap();
            assert!(!scan.contains("projection=[x"), "{plan}");
        }

        // Columns the filter's output leaves out are still renumbered right.
        let (plan, count) = plan_and_answer(
            &ctx,
            "SELECT sum(y) FROM t WHERE x >= 1 AND y > 90 AND z IS NOT NULL",
        )
        .await;
        let filter = plan.lines().find(|l| l.contains("FilterExec")).unwrap();
        assert!(!filter.contains("x@"), "{plan}");
        assert_eq!(count, (91..=99).sum::<i64>());

        // Not proven: kept and applied.
        for (filter, expected) in [("x > 1", 99), ("z IS NOT NULL", 90), ("x IN (1, 2, 3)", 3)] {
            let (plan, count) =
                plan_and_answer(&ctx, &format!("SELECT count(*) FROM t WHERE {filter}")).await;
            assert!(plan.contains("FilterExec"), "{filter}: {plan}");
            assert_eq!(count, expected, "{filter}");
        }
    }
}
