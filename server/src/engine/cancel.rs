//! `CANCEL QUERY 'id'`: stops a live query (its id from `system.queries`).
//! Admins cancel any query, other users their own; the cancelled query's
//! client gets CANCELLED naming who cancelled it, its work stops and its
//! memory is freed at once, and its run ends ABORT.

use std::sync::Arc;

use arrow::array::{BooleanArray, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::{DFSchema, DFSchemaRef};
use datafusion::logical_expr::{Extension, LogicalPlan};
use datafusion::physical_plan::ExecutionPlan;

use super::Engine;
use super::admin::Cursor;
use super::error::{EngineError, EngineResult};
use super::live::Interruption;
use super::statement_node::{leaf_statement_node, node_of};
use crate::identity::Principal;

const CANCEL_QUERY: &str = "CANCEL QUERY 'query id' (the ids are in system.queries)";

/// `CANCEL QUERY 'id'` as a plan node.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct CancelQueryNode {
    id: String,
    schema: DFSchemaRef,
}

impl CancelQueryNode {
    /// The statement `sql` is, if it starts with `CANCEL QUERY`.
    pub(crate) fn parse(sql: &str) -> Option<EngineResult<LogicalPlan>> {
        let mut c = Cursor::new(crate::sql_text::tokens(sql)?);
        if !(c.is(0, "CANCEL") && c.is(1, "QUERY")) {
            return None;
        }
        c.skip(2);
        let plan = c.string(CANCEL_QUERY).and_then(|id| {
            c.end(CANCEL_QUERY)?;
            let schema = DFSchema::try_from(result_schema().as_ref().clone())
                .map_err(|e| EngineError::Internal(e.to_string()))?;
            Ok(LogicalPlan::Extension(Extension {
                node: Arc::new(Self {
                    id,
                    schema: Arc::new(schema),
                }),
            }))
        });
        Some(plan)
    }

    /// The query `plan` cancels, if it is a `CANCEL QUERY`.
    pub(crate) fn of(plan: &LogicalPlan) -> Option<&str> {
        node_of::<Self>(plan).map(|node| node.id.as_str())
    }
}

leaf_statement_node!(CancelQueryNode, "CancelQuery", id, |node| node.id);

fn result_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("query_id", DataType::Utf8, false),
        Field::new("cancelled", DataType::Boolean, false),
    ]))
}

impl Engine {
    /// Cancels the live query `id` for `principal`.
    pub(super) fn run_cancel(
        &self,
        id: &str,
        principal: &Principal,
    ) -> EngineResult<Arc<dyn ExecutionPlan>> {
        let not_found = || {
            EngineError::NoSuchObject(format!(
                "there is no live query '{id}'; SELECT query_id, sql FROM system.queries lists them"
            ))
        };
        let query = self.live.find(id).ok_or_else(not_found)?;
        if !principal.is_admin() && query.user() != principal.name() {
            // Another user's query is not even said to exist.
            return Err(not_found());
        }
        query.interrupt(Interruption::Cancelled(format!(
            "the query was cancelled by {} (CANCEL QUERY)",
            principal.name()
        )));
        super::execution::batch_result(
            result_schema(),
            vec![
                Arc::new(StringArray::from(vec![id.to_string()])),
                Arc::new(BooleanArray::from(vec![true])),
            ],
        )
    }
}
