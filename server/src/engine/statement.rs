//! From SQL text to a parsed statement, within limits a hostile client
//! cannot get around.
//!
//! DataFusion's planner and optimizer, and Rust's own derived `Clone`,
//! `Drop`, `Hash` and `PartialEq` of its plans, recurse once per level of
//! nesting. `SELECT 1+1+...+1` with a few thousand terms is a few kilobytes
//! of SQL and a syntax tree thousands of levels deep: enough to overflow any
//! thread's stack and abort the process. So a statement is refused before
//! planning when its text is longer than [`StatementLimits::max_sql_length`]
//! or its nesting deeper than [`StatementLimits::max_expression_depth`].
//!
//! The parser itself builds operator chains in a loop, so a long text parses
//! without deep recursion; only dropping a deep tree recurses. Long texts are
//! therefore parsed on a stack sized for the text, which is freed again as
//! soon as the statement has been checked.

use std::ops::ControlFlow;

use datafusion::execution::SessionState;
use datafusion::sql::parser::{CopyToSource, Statement as DFStatement};
use datafusion::sql::sqlparser::ast::{Expr, Query, SetExpr, Visit, Visitor};

use super::error::{EngineError, EngineResult};

/// Texts up to this long parse on the calling thread's stack: they cannot
/// nest deeply enough to matter (at most one level per two bytes).
const SHORT_SQL: usize = 16 * 1024;

/// Bytes of stack per byte of SQL for a long text; dropping a syntax tree
/// takes under 100 bytes of stack per level, and a level takes at least two
/// bytes of SQL (`1+`).
const STACK_PER_SQL_BYTE: usize = 64;

/// Stack for the parser's own (bounded) recursion, beyond the tree's depth.
const BASE_STACK: usize = 4 * 1024 * 1024;

/// How large and how deeply nested a statement may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatementLimits {
    /// Longest SQL text accepted, in bytes (`[engine] max_sql_length`).
    pub max_sql_length: usize,
    /// Deepest nesting accepted: operators chained in one expression,
    /// set operations (`UNION`) and joins chained in one query, subqueries
    /// (`[engine] max_expression_depth`).
    pub max_expression_depth: usize,
}

impl Default for StatementLimits {
    fn default() -> Self {
        Self {
            // The limit of Snowflake and BigQuery; BI tools stay far below.
            max_sql_length: 1024 * 1024,
            // DuckDB's `max_expression_depth`.
            max_expression_depth: 1000,
        }
    }
}

/// Parses `sql` into one statement, refusing texts and trees over `limits`.
pub(crate) fn parse(
    state: &SessionState,
    sql: &str,
    limits: StatementLimits,
) -> EngineResult<DFStatement> {
    if sql.len() > limits.max_sql_length {
        return Err(EngineError::LimitExceeded(format!(
            "the statement is {} bytes long; the longest accepted is {} bytes. Shorten it (e.g. load long value lists into a table and join), or raise [engine] max_sql_length",
            sql.len(),
            limits.max_sql_length
        )));
    }
    let parse_and_check = || {
        let sql = super::as_of::rewrite(sql)?;
        let sql = super::identity_calls::rewrite(&sql);
        let dialect = state.config().options().sql_parser.dialect;
        let statement = state
            .sql_to_statement(&sql, &dialect)
            .map_err(EngineError::from_planning)?;
        check_depth(&statement, limits.max_expression_depth)?;
        Ok(statement)
    };
    if sql.len() <= SHORT_SQL {
        return parse_and_check();
    }
    // A refused tree is dropped inside, on the large stack, too.
    let stack = BASE_STACK + sql.len().saturating_mul(STACK_PER_SQL_BYTE);
    stacker::grow(stack, parse_and_check)
}

/// Refuses `statement` if it nests deeper than `max_depth`.
fn check_depth(statement: &DFStatement, max_depth: usize) -> EngineResult<()> {
    let mut meter = DepthMeter {
        max_depth,
        depth: 0,
    };
    let flow = match statement {
        DFStatement::Statement(inner) => inner.visit(&mut meter),
        DFStatement::CopyTo(copy) => match &copy.source {
            CopyToSource::Query(query) => query.visit(&mut meter),
            CopyToSource::Relation(_) => ControlFlow::Continue(()),
        },
        DFStatement::Explain(explain) => return check_depth(&explain.statement, max_depth),
        DFStatement::CreateExternalTable(_) | DFStatement::Reset(_) => ControlFlow::Continue(()),
    };
    match flow {
        ControlFlow::Continue(()) => Ok(()),
        ControlFlow::Break(TooDeep) => Err(EngineError::LimitExceeded(format!(
            "the statement nests deeper than {max_depth} levels (operators chained in one expression, UNIONs or joins chained in one query, subqueries); \
             write long lists as IN (...) or a table to join, or raise [engine] max_expression_depth"
        ))),
    }
}

struct TooDeep;

/// Measures nesting while the tree is visited, and stops the visit as soon
/// as it is too deep, so the visit itself never recurses deeper than the limit.
struct DepthMeter {
    max_depth: usize,
    depth: usize,
}

impl DepthMeter {
    fn enter(&mut self, levels: usize) -> ControlFlow<TooDeep> {
        self.depth = self.depth.saturating_add(levels);
        if self.depth > self.max_depth {
            ControlFlow::Break(TooDeep)
        } else {
            ControlFlow::Continue(())
        }
    }

    fn leave(&mut self, levels: usize) -> ControlFlow<TooDeep> {
        self.depth = self.depth.saturating_sub(levels);
        ControlFlow::Continue(())
    }
}

impl Visitor for DepthMeter {
    type Break = TooDeep;

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<TooDeep> {
        // Set operations and joins nest without passing through an
        // expression: count them before the visit descends into them.
        self.enter(query_levels(&query.body, self.max_depth))
    }

    fn post_visit_query(&mut self, query: &Query) -> ControlFlow<TooDeep> {
        self.leave(query_levels(&query.body, self.max_depth))
    }

    fn pre_visit_expr(&mut self, _expr: &Expr) -> ControlFlow<TooDeep> {
        self.enter(1)
    }

    fn post_visit_expr(&mut self, _expr: &Expr) -> ControlFlow<TooDeep> {
        self.leave(1)
    }
}

/// The levels a query body adds to a plan: its chain of set operations, and
/// the longest chain of joins (or comma-separated tables) in one `FROM`.
/// Counting stops past `cap`.
fn query_levels(body: &SetExpr, cap: usize) -> usize {
    let mut levels = 1;
    let mut widest_from = 0;
    // Parsers build `a UNION b UNION c` left-deep; walk the chain in a loop.
    let mut pending = vec![body];
    while let Some(node) = pending.pop() {
        if levels > cap {
            break;
        }
        match node {
            SetExpr::SetOperation { left, right, .. } => {
                levels += 1;
                pending.push(left);
                pending.push(right);
            }
            SetExpr::Select(select) => {
                let joins: usize = select.from.iter().map(|t| t.joins.len()).sum();
                widest_from = widest_from.max(select.from.len() + joins);
            }
            _ => {}
        }
    }
    levels.saturating_add(widest_from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_with(sql: &str, limits: StatementLimits) -> EngineResult<DFStatement> {
        let state = datafusion::prelude::SessionContext::new().state();
        parse(&state, sql, limits)
    }

    fn limit_error(result: EngineResult<DFStatement>) -> String {
        match result {
            Err(EngineError::LimitExceeded(message)) => message,
            other => panic!("expected a limit error, got {other:?}"),
        }
    }

    #[test]
    fn shallow_statements_pass() {
        let limits = StatementLimits::default();
        let chain = vec!["1"; 500].join("+");
        assert!(parse_with(&format!("SELECT {chain}"), limits).is_ok());
        let unions = vec!["SELECT 1"; 200].join(" UNION ALL ");
        assert!(parse_with(&unions, limits).is_ok());
    }

    #[test]
    fn deep_chains_are_refused_naming_the_setting() {
        let limits = StatementLimits::default();
        let chain = vec!["1"; 20_000].join("+");
        let message = limit_error(parse_with(&format!("SELECT {chain}"), limits));
        assert!(message.contains("max_expression_depth"), "{message}");
        let unions = vec!["SELECT 1"; 3_000].join(" UNION ALL ");
        limit_error(parse_with(&unions, limits));
        let tables: Vec<String> = (0..2_000).map(|i| format!("t{i}")).collect();
        limit_error(parse_with(
            &format!("SELECT 1 FROM {}", tables.join(", ")),
            limits,
        ));
        let copy = format!("COPY (SELECT {chain}) TO '/tmp/x.csv'");
        limit_error(parse_with(&copy, limits));
        limit_error(parse_with(&format!("EXPLAIN SELECT {chain}"), limits));
    }

    #[test]
    fn long_texts_are_refused_naming_the_setting() {
        let limits = StatementLimits {
            max_sql_length: 100,
            ..Default::default()
        };
        let message = limit_error(parse_with(&format!("SELECT '{}'", "x".repeat(200)), limits));
        assert!(message.contains("max_sql_length"), "{message}");
    }

    #[test]
    fn a_maximal_text_parses_without_overflowing_the_stack() {
        // 1 MiB of `1+1+...`: half a million levels, refused, not a crash.
        let limits = StatementLimits::default();
        let chain = vec!["1"; limits.max_sql_length / 2 - 8].join("+");
        limit_error(parse_with(&format!("SELECT {chain}"), limits));
    }
}
