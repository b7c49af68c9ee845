//! Column-level lineage from a DataFusion logical plan.
//!
//! [`trace`] walks a plan bottom-up and says, for each output column (by
//! position, so aliases, CTEs and self-joins stay right), which source
//! columns flowed into it and how ([`Transformation`], the OpenLineage
//! types), plus the source columns that influence every row without flowing
//! into one (join keys, filters, grouping, sorting, window partitions).
//!
//! Invariant: no invented edge. A plan part that cannot be traced exactly
//! (a subquery in an expression, a recursive CTE, an extension node) adds no
//! edge and sets [`Lineage::complete`] to false.

use std::collections::{BTreeSet, HashMap};
use std::fmt;

use datafusion::common::{Column, DFSchema};
use datafusion::logical_expr::{Expr, LogicalPlan};

use crate::names::table_name;

/// How a source column reaches its target (OpenLineage 1-2-0 types).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Transformation {
    /// DIRECT/IDENTITY: the value is copied.
    Identity,
    /// DIRECT/TRANSFORMATION: the value is computed from it.
    Transformation,
    /// DIRECT/AGGREGATION: the value aggregates it.
    Aggregation,
    /// INDIRECT/JOIN: it decides which rows join.
    Join,
    /// INDIRECT/FILTER: it decides which rows stay.
    Filter,
    /// INDIRECT/GROUP_BY: it decides the groups.
    GroupBy,
    /// INDIRECT/SORT: it decides the order.
    Sort,
    /// INDIRECT/WINDOW: it partitions or orders a window.
    Window,
    /// INDIRECT/CONDITIONAL: it decides a CASE branch.
    Conditional,
}

impl Transformation {
    /// `DIRECT` or `INDIRECT`.
    pub fn kind(self) -> &'static str {
        match self {
            Self::Identity | Self::Transformation | Self::Aggregation => "DIRECT",
            _ => "INDIRECT",
        }
    }

    /// The OpenLineage subtype.
    pub fn subtype(self) -> &'static str {
        match self {
            Self::Identity => "IDENTITY",
            Self::Transformation => "TRANSFORMATION",
            Self::Aggregation => "AGGREGATION",
            Self::Join => "JOIN",
            Self::Filter => "FILTER",
            Self::GroupBy => "GROUP_BY",
            Self::Sort => "SORT",
            Self::Window => "WINDOW",
            Self::Conditional => "CONDITIONAL",
        }
    }

    /// What a direct edge becomes when its value is computed further: the
    /// stronger of the two (identity < transformation < aggregation).
    fn then(self, next: Transformation) -> Transformation {
        match (self, next) {
            (Self::Aggregation, _) | (_, Self::Aggregation) => Self::Aggregation,
            (Self::Identity, other) => other,
            (this, _) => this,
        }
    }
}

impl fmt::Display for Transformation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.kind(), self.subtype())
    }
}

/// A column of a table (or view) the plan reads.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SourceColumn {
    /// The table as the plan names it (`orders`, `public.orders`, ...).
    pub table: String,
    /// The column.
    pub column: String,
}

/// One source column and how it flows.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Edge {
    /// Where from.
    pub source: SourceColumn,
    /// How.
    pub transformation: Transformation,
}

/// The lineage of a plan's output.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lineage {
    /// Per output column, by position: the direct edges into it.
    pub columns: Vec<BTreeSet<Edge>>,
    /// Edges that influence every output row (join keys, filters, ...).
    pub indirect: BTreeSet<Edge>,
    /// Every table the plan reads.
    pub tables: BTreeSet<String>,
    /// False when a part could not be traced (then edges may be missing,
    /// never wrong).
    pub complete: bool,
}

/// Traces `plan`.
pub fn trace(plan: &LogicalPlan) -> Lineage {
    trace_with_views(plan, &HashMap::new())
}

/// Traces `plan`, in which DataFusion expanded the views in `views` (name →
/// the view's plan): a view is a dataset of its own, so edges stop at it.
pub fn trace_with_views(plan: &LogicalPlan, views: &HashMap<String, LogicalPlan>) -> Lineage {
    let mut tables = BTreeSet::new();
    let mut complete = true;
    let mut indirect = BTreeSet::new();
    let columns = walk(
        plan,
        &mut Context {
            tables: &mut tables,
            indirect: &mut indirect,
            complete: &mut complete,
            views,
        },
    );
    Lineage {
        columns,
        indirect,
        tables,
        complete,
    }
}

struct Context<'a> {
    tables: &'a mut BTreeSet<String>,
    indirect: &'a mut BTreeSet<Edge>,
    complete: &'a mut bool,
    views: &'a HashMap<String, LogicalPlan>,
}

type Columns = Vec<BTreeSet<Edge>>;

fn walk(plan: &LogicalPlan, cx: &mut Context) -> Columns {
    let width = plan.schema().fields().len();
    match plan {
        LogicalPlan::TableScan(scan) => {
            let table = table_name(&scan.table_name);
            cx.tables.insert(table.clone());
            let source_schema = scan.source.schema();
            let indices: Vec<usize> = match &scan.projection {
                Some(projection) => projection.clone(),
                None => (0..source_schema.fields().len()).collect(),
            };
            let columns: Columns = indices
                .iter()
                .map(|&i| {
                    let column = source_schema.field(i).name().clone();
                    BTreeSet::from([Edge {
                        source: SourceColumn {
                            table: table.clone(),
                            column,
                        },
                        transformation: Transformation::Identity,
                    }])
                })
                .collect();
            for filter in &scan.filters {
                let sources = scan_refs(filter, &table);
                add_indirect(cx, sources, Transformation::Filter);
            }
            columns
        }
        LogicalPlan::Projection(projection) => {
            let input = walk(&projection.input, cx);
            projection
                .expr
                .iter()
                .map(|expr| expression(expr, &projection.input, &input, cx))
                .collect()
        }
        LogicalPlan::Filter(filter) => {
            let input = walk(&filter.input, cx);
            let sources = refs(&filter.predicate, &filter.input, &input, cx);
            add_indirect(cx, sources, Transformation::Filter);
            input
        }
        LogicalPlan::Aggregate(aggregate) => {
            let input = walk(&aggregate.input, cx);
            let mut columns = Vec::with_capacity(width);
            for expr in &aggregate.group_expr {
                let sources = expression(expr, &aggregate.input, &input, cx);
                add_indirect(cx, sources.clone(), Transformation::GroupBy);
                columns.push(sources);
            }
            for expr in &aggregate.aggr_expr {
                let sources = computed(expr, &aggregate.input, &input, cx);
                columns.push(retype(sources, Transformation::Aggregation));
            }
            // Grouping sets add an internal id column; it has no source.
            columns.resize(width, BTreeSet::new());
            columns
        }
        LogicalPlan::Join(join) => {
            let left = walk(&join.left, cx);
            let right = walk(&join.right, cx);
            let mut both = left.clone();
            both.extend(right.iter().cloned());
            let mut keys = BTreeSet::new();
            for (l, r) in &join.on {
                keys.extend(refs(l, &join.left, &left, cx));
                keys.extend(refs(r, &join.right, &right, cx));
            }
            if let Some(filter) = &join.filter {
                // The filter sees both sides, whatever the join keeps.
                match join.left.schema().join(join.right.schema()) {
                    Ok(sides) => keys.extend(refs_in(filter, &sides, &both, cx)),
                    Err(_) => *cx.complete = false,
                }
            }
            add_indirect(cx, keys, Transformation::Join);
            let (l, r) = (left.len(), right.len());
            let mut columns = if width >= l + r {
                both
            } else if width >= l
                && width <= l + 1
                && !matches!(
                    join.join_type,
                    datafusion::common::JoinType::RightSemi
                        | datafusion::common::JoinType::RightAnti
                )
            {
                left
            } else {
                right
            };
            columns.resize(width, BTreeSet::new());
            columns
        }
        LogicalPlan::Sort(sort) => {
            let input = walk(&sort.input, cx);
            for key in &sort.expr {
                let sources = refs(&key.expr, &sort.input, &input, cx);
                add_indirect(cx, sources, Transformation::Sort);
            }
            input
        }
        LogicalPlan::Window(window) => {
            let input = walk(&window.input, cx);
            let mut columns = input.clone();
            for expr in &window.window_expr {
                let mut direct = BTreeSet::new();
                if let Expr::WindowFunction(function) = expr {
                    for arg in &function.params.args {
                        direct.extend(refs(arg, &window.input, &input, cx));
                    }
                    let mut shaping = BTreeSet::new();
                    for partition in &function.params.partition_by {
                        shaping.extend(refs(partition, &window.input, &input, cx));
                    }
                    for order in &function.params.order_by {
                        shaping.extend(refs(&order.expr, &window.input, &input, cx));
                    }
                    add_indirect(cx, shaping, Transformation::Window);
                } else {
                    direct.extend(refs(expr, &window.input, &input, cx));
                }
                columns.push(retype(direct, Transformation::Transformation));
            }
            columns.resize(width, BTreeSet::new());
            columns
        }
        LogicalPlan::Union(union) => {
            let mut columns: Columns = vec![BTreeSet::new(); width];
            for input in &union.inputs {
                for (i, sources) in walk(input, cx).into_iter().enumerate().take(width) {
                    columns[i].extend(sources);
                }
            }
            columns
        }
        LogicalPlan::SubqueryAlias(alias) => {
            let name = table_name(&alias.alias);
            match cx.views.get(&name) {
                // The expansion of a view (not merely an alias that shares its name).
                Some(view) if view == alias.input.as_ref() => {
                    cx.tables.insert(name.clone());
                    alias
                        .schema
                        .fields()
                        .iter()
                        .map(|field| {
                            BTreeSet::from([Edge {
                                source: SourceColumn {
                                    table: name.clone(),
                                    column: field.name().clone(),
                                },
                                transformation: Transformation::Identity,
                            }])
                        })
                        .collect()
                }
                _ => walk(&alias.input, cx),
            }
        }
        LogicalPlan::Limit(limit) => walk(&limit.input, cx),
        LogicalPlan::Repartition(repartition) => walk(&repartition.input, cx),
        LogicalPlan::Subquery(subquery) => walk(&subquery.subquery, cx),
        LogicalPlan::Distinct(datafusion::logical_expr::Distinct::All(input)) => walk(input, cx),
        LogicalPlan::Values(_) | LogicalPlan::EmptyRelation(_) => vec![BTreeSet::new(); width],
        // DISTINCT ON, UNNEST, recursive CTEs, extensions, ...: not traced exactly.
        other => {
            *cx.complete = false;
            for input in other.inputs() {
                let _ = walk(input, cx);
            }
            vec![BTreeSet::new(); width]
        }
    }
}

/// The sources of one output expression: a plain column passes its sources
/// on unchanged; anything computed makes them (at least) TRANSFORMATION, and
/// the conditions of CASE are INDIRECT/CONDITIONAL.
fn expression(
    expr: &Expr,
    input_plan: &LogicalPlan,
    input: &Columns,
    cx: &mut Context,
) -> BTreeSet<Edge> {
    let mut inner = expr;
    while let Expr::Alias(alias) = inner {
        inner = &alias.expr;
    }
    if let Expr::Column(column) = inner {
        return column_sources(column, input_plan, input, cx);
    }
    retype(
        computed(inner, input_plan, input, cx),
        Transformation::Transformation,
    )
}

/// The direct sources of a computed expression. Columns that only decide a
/// CASE branch are INDIRECT/CONDITIONAL edges instead.
fn computed(
    expr: &Expr,
    input_plan: &LogicalPlan,
    input: &Columns,
    cx: &mut Context,
) -> BTreeSet<Edge> {
    if has_subquery(expr) {
        *cx.complete = false;
    }
    let (mut values, mut conditions) = (Vec::new(), Vec::new());
    split_refs(expr, &mut values, &mut conditions);
    let sources = |columns: Vec<&Column>, cx: &mut Context| -> BTreeSet<Edge> {
        columns
            .into_iter()
            .flat_map(|c| column_sources(c, input_plan, input, cx))
            .collect()
    };
    let conditions = sources(conditions, cx);
    add_indirect(cx, conditions, Transformation::Conditional);
    sources(values, cx)
}

/// Splits the columns of `expr` into those whose values flow into the
/// result and those that only pick a CASE branch.
fn split_refs<'a>(expr: &'a Expr, values: &mut Vec<&'a Column>, conditions: &mut Vec<&'a Column>) {
    use datafusion::common::tree_node::TreeNodeRecursion;
    let _ = expr.apply(|node| match node {
        Expr::Column(column) => {
            values.push(column);
            Ok(TreeNodeRecursion::Continue)
        }
        Expr::Case(case) => {
            if let Some(operand) = &case.expr {
                conditions.extend(operand.column_refs());
            }
            for (when, then) in &case.when_then_expr {
                conditions.extend(when.column_refs());
                split_refs(then, values, conditions);
            }
            if let Some(otherwise) = &case.else_expr {
                split_refs(otherwise, values, conditions);
            }
            Ok(TreeNodeRecursion::Jump)
        }
        _ => Ok(TreeNodeRecursion::Continue),
    });
}

/// The sources of every column `expr` refers to, as they are.
fn refs(
    expr: &Expr,
    input_plan: &LogicalPlan,
    input: &Columns,
    cx: &mut Context,
) -> BTreeSet<Edge> {
    refs_in(expr, input_plan.schema(), input, cx)
}

/// The sources of every column `expr` refers to, resolved in `schema`
/// whose columns are `columns`.
fn refs_in(expr: &Expr, schema: &DFSchema, columns: &Columns, cx: &mut Context) -> BTreeSet<Edge> {
    if has_subquery(expr) {
        // Tables read by the subquery influence the result, but how exactly is not traced.
        *cx.complete = false;
    }
    expr.column_refs()
        .into_iter()
        .flat_map(|column| sources_in(column, schema, columns, cx))
        .collect()
}

fn column_sources(
    column: &Column,
    input_plan: &LogicalPlan,
    input: &Columns,
    cx: &mut Context,
) -> BTreeSet<Edge> {
    sources_in(column, input_plan.schema(), input, cx)
}

fn sources_in(
    column: &Column,
    schema: &DFSchema,
    columns: &Columns,
    cx: &mut Context,
) -> BTreeSet<Edge> {
    match schema.index_of_column(column) {
        Ok(i) => columns.get(i).cloned().unwrap_or_default(),
        // An outer reference (correlated subquery) or something unforeseen.
        Err(_) => {
            *cx.complete = false;
            BTreeSet::new()
        }
    }
}

/// Columns of a filter pushed into a scan, named directly.
fn scan_refs(expr: &Expr, table: &str) -> BTreeSet<Edge> {
    expr.column_refs()
        .into_iter()
        .map(|column| Edge {
            source: SourceColumn {
                table: table.to_string(),
                column: column.name.clone(),
            },
            transformation: Transformation::Identity,
        })
        .collect()
}

fn has_subquery(expr: &Expr) -> bool {
    let mut found = false;
    let _ = expr.apply(|node| {
        if matches!(
            node,
            Expr::Exists(_) | Expr::InSubquery(_) | Expr::ScalarSubquery(_)
        ) {
            found = true;
        }
        Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
    });
    found
}

/// Direct edges computed further.
fn retype(sources: BTreeSet<Edge>, next: Transformation) -> BTreeSet<Edge> {
    sources
        .into_iter()
        .map(|edge| Edge {
            transformation: edge.transformation.then(next),
            source: edge.source,
        })
        .collect()
}

fn add_indirect(cx: &mut Context, sources: BTreeSet<Edge>, how: Transformation) {
    cx.indirect.extend(sources.into_iter().map(|edge| Edge {
        source: edge.source,
        transformation: how,
    }));
}

use datafusion::common::tree_node::TreeNode as _;

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::datatypes::{DataType, Field, Schema};
    use datafusion::datasource::MemTable;
    use datafusion::prelude::SessionContext;

    use super::*;

    fn context() -> SessionContext {
        let ctx = SessionContext::new();
        let table = |fields: &[(&str, DataType)]| {
            let schema = Arc::new(Schema::new(
                fields
                    .iter()
                    .map(|(n, t)| Field::new(*n, t.clone(), true))
                    .collect::<Vec<_>>(),
            ));
            Arc::new(MemTable::try_new(schema, vec![vec![]]).unwrap())
        };
        ctx.register_table(
            "lineitem",
            table(&[
                ("l_orderkey", DataType::Int64),
                ("l_extendedprice", DataType::Float64),
                ("l_shipmode", DataType::Utf8),
            ]),
        )
        .unwrap();
        ctx.register_table(
            "orders",
            table(&[
                ("o_orderkey", DataType::Int64),
                ("o_orderpriority", DataType::Utf8),
            ]),
        )
        .unwrap();
        ctx
    }

    async fn lineage(sql: &str) -> Lineage {
        let plan = context().state().create_logical_plan(sql).await.unwrap();
        trace(&plan)
    }

    fn edge(table: &str, column: &str, how: Transformation) -> Edge {
        Edge {
            source: SourceColumn {
                table: table.into(),
                column: column.into(),
            },
            transformation: how,
        }
    }

    #[tokio::test]
    async fn joins_filters_and_groups_are_traced_by_position() {
        use super::Transformation::*;
        let l = lineage(
            "SELECT o.o_orderpriority AS priority, sum(l.l_extendedprice * 2) AS revenue, count(*) AS n \
             FROM lineitem l JOIN orders o ON l.l_orderkey = o.o_orderkey \
             WHERE l.l_shipmode = 'AIR' GROUP BY o.o_orderpriority ORDER BY revenue",
        )
        .await;
        assert!(l.complete);
        assert_eq!(l.columns.len(), 3);
        assert_eq!(
            l.columns[0],
            BTreeSet::from([edge("orders", "o_orderpriority", Identity)])
        );
        assert_eq!(
            l.columns[1],
            BTreeSet::from([edge("lineitem", "l_extendedprice", Aggregation)])
        );
        assert!(l.columns[2].is_empty(), "count(*) reads no column");
        assert_eq!(
            l.indirect,
            BTreeSet::from([
                edge("lineitem", "l_orderkey", Join),
                edge("orders", "o_orderkey", Join),
                edge("lineitem", "l_shipmode", Filter),
                edge("orders", "o_orderpriority", GroupBy),
                edge("lineitem", "l_extendedprice", Sort),
            ])
        );
        assert_eq!(
            l.tables,
            BTreeSet::from(["lineitem".to_string(), "orders".to_string()])
        );
    }

    #[tokio::test]
    async fn case_unions_and_self_joins() {
        use super::Transformation::*;
        let l = lineage(
            "SELECT CASE WHEN l_shipmode = 'AIR' THEN l_extendedprice ELSE 0 END AS air FROM lineitem \
             UNION ALL SELECT o_orderkey FROM orders",
        )
        .await;
        assert_eq!(
            l.columns[0],
            BTreeSet::from([
                edge(
                    "lineitem",
                    "l_extendedprice",
                    super::Transformation::Transformation
                ),
                edge("orders", "o_orderkey", Identity),
            ])
        );
        assert!(
            l.indirect
                .contains(&edge("lineitem", "l_shipmode", Conditional))
        );

        let l = lineage(
            "SELECT a.l_orderkey AS first, b.l_extendedprice AS second FROM lineitem a JOIN lineitem b ON a.l_orderkey = b.l_orderkey",
        )
        .await;
        assert_eq!(
            l.columns[0],
            BTreeSet::from([edge("lineitem", "l_orderkey", Identity)])
        );
        assert_eq!(
            l.columns[1],
            BTreeSet::from([edge("lineitem", "l_extendedprice", Identity)])
        );
    }

    #[tokio::test]
    async fn subqueries_are_marked_incomplete_not_guessed() {
        let l = lineage(
            "SELECT l_orderkey FROM lineitem WHERE l_orderkey IN (SELECT o_orderkey FROM orders)",
        )
        .await;
        assert!(!l.complete);
        assert_eq!(
            l.columns[0],
            BTreeSet::from([edge("lineitem", "l_orderkey", Transformation::Identity)])
        );
    }
}
