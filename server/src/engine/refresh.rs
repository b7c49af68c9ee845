//! `REFRESH TABLE name`: forget cached listings and snapshots so that what
//! other writers added is seen now; a table of files re-reads its schema.

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use datafusion::catalog::TableProvider;
use datafusion::common::TableReference;
use datafusion::datasource::listing::{ListingTable, ListingTableConfig};

use datafusion::common::DFSchema;
use datafusion::common::DFSchemaRef;
use datafusion::logical_expr::{Extension, LogicalPlan};
use datafusion::sql::sqlparser::keywords::Keyword;

use super::error::{EngineError, EngineResult};
use super::statement_node::{leaf_statement_node, node_of};
use super::{Engine, corruption};
use crate::catalog::{TableOrigin, TableRecord};
use crate::delta::DeltaLakeTable;
use crate::runtime::TaskFailure;

impl Engine {
    /// `REFRESH TABLE name`: forget cached file listings, so files others
    /// added or removed are seen by the next query.
    pub(super) async fn refresh_table(&self, name: &str) -> EngineResult<()> {
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
}

/// `REFRESH TABLE name` as a plan node: planned, prepared, recorded as a run
/// and run like any other statement (DataFusion has no such statement).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct RefreshTableNode {
    /// The table, as the statement names it.
    name: String,
    schema: DFSchemaRef,
}

impl RefreshTableNode {
    /// The table of `sql` if it is `REFRESH TABLE name` (with an optional
    /// `;`), read with the SQL tokenizer.
    pub(crate) fn parse(sql: &str) -> Option<String> {
        crate::sql_text::table_after(sql, &[Keyword::REFRESH, Keyword::TABLE], None)
    }

    /// The plan of `REFRESH TABLE name`.
    pub(crate) fn plan(name: String) -> LogicalPlan {
        LogicalPlan::Extension(Extension {
            node: Arc::new(Self {
                name,
                schema: Arc::new(DFSchema::empty()),
            }),
        })
    }

    /// The table `plan` refreshes, if it is a refresh.
    pub(crate) fn of(plan: &LogicalPlan) -> Option<&str> {
        node_of::<Self>(plan).map(|node| node.name.as_str())
    }
}

leaf_statement_node!(RefreshTableNode, "RefreshTable", name, |node| node.name);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_statements_are_recognised_by_their_tokens() {
        let parse = RefreshTableNode::parse;
        assert_eq!(parse("REFRESH TABLE events").as_deref(), Some("events"));
        assert_eq!(
            parse("  refresh table public.events ;").as_deref(),
            Some("public.events")
        );
        assert_eq!(
            parse("REFRESH TABLE \"My Table\"").as_deref(),
            Some("\"My Table\"")
        );
        assert_eq!(
            parse("REFRESH TABLE -- why\n events").as_deref(),
            Some("events")
        );
        for other in [
            "REFRESH TABLE",
            "REFRESH TABLE a b",
            "SELECT 'REFRESH TABLE x'",
            "REFRESH MATERIALIZED VIEW v",
        ] {
            assert_eq!(parse(other), None, "{other}");
        }
    }
}
