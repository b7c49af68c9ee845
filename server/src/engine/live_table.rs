//! `system.queries`: the live queries, read when it is scanned; the
//! registration of it and `system.caches`.

use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::memory::MemTable;
use datafusion::catalog::{Session, TableProvider};
use datafusion::datasource::TableType;
use datafusion::error::Result;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;

use super::error::{EngineError, EngineResult};
use super::live::LiveQueries;
use super::{DEFAULT_CATALOG, Engine};

/// The table: one row per live query.
#[derive(Debug)]
pub(crate) struct LiveQueriesTable {
    live: LiveQueries,
    schema: SchemaRef,
}

impl LiveQueriesTable {
    pub(crate) fn new(live: LiveQueries) -> Self {
        let text = |name: &str| Field::new(name, DataType::Utf8, true);
        let int = |name: &str| Field::new(name, DataType::Int64, true);
        let schema = Arc::new(Schema::new(vec![
            text("query_id"),
            text("user"),
            text("sql"),
            text("state"),
            text("started_at"),
            int("elapsed_ms"),
            int("rows_scanned"),
            int("bytes_scanned"),
            int("rows_sent"),
            int("memory_reserved"),
            int("peak_memory"),
            int("spilled_bytes"),
            Field::new("progress", DataType::Float64, true),
        ]));
        Self { live, schema }
    }

    fn batch(&self) -> Result<RecordBatch> {
        let queries = self.live.snapshot();
        let text = |f: &dyn Fn(&super::live::QuerySnapshot) -> String| -> ArrayRef {
            Arc::new(StringArray::from_iter_values(queries.iter().map(f)))
        };
        let int = |f: &dyn Fn(&super::live::QuerySnapshot) -> Option<u64>| -> ArrayRef {
            Arc::new(Int64Array::from_iter(
                queries.iter().map(|q| f(q).map(|n| n as i64)),
            ))
        };
        let columns = vec![
            text(&|q| q.id.clone()),
            text(&|q| q.user.clone()),
            text(&|q| q.sql.clone()),
            text(&|q| q.state.as_str().to_string()),
            text(&|q| q.started_at.to_rfc3339()),
            int(&|q| Some(q.elapsed.as_millis() as u64)),
            int(&|q| q.rows_scanned),
            int(&|q| q.bytes_scanned),
            int(&|q| Some(q.rows_sent)),
            int(&|q| Some(q.memory_reserved)),
            int(&|q| Some(q.peak_memory)),
            int(&|q| q.spilled_bytes),
            Arc::new(Float64Array::from_iter_values(
                queries.iter().map(|q| q.progress),
            )),
        ];
        Ok(RecordBatch::try_new(Arc::clone(&self.schema), columns)?)
    }
}

impl Snapshot for LiveQueriesTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn batch(&self) -> Result<RecordBatch> {
        LiveQueriesTable::batch(self)
    }
}

/// A system table computed when it is scanned: one batch of what is true now.
pub(super) trait Snapshot: std::fmt::Debug + Send + Sync + 'static {
    /// The table's columns.
    fn schema(&self) -> SchemaRef;
    /// Its rows now.
    fn batch(&self) -> Result<RecordBatch>;
}

/// A [`Snapshot`] served as a table (a view: nothing is stored).
#[derive(Debug)]
pub(super) struct SnapshotTable<T>(pub(super) T);

#[async_trait]
impl<T: Snapshot> TableProvider for SnapshotTable<T> {
    fn schema(&self) -> SchemaRef {
        self.0.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        MemTable::try_new(self.0.schema(), vec![vec![self.0.batch()?]])?
            .scan(state, projection, filters, limit)
            .await
    }
}

impl Engine {
    /// Serves `system.queries` and `system.caches` (in the schema of the
    /// other system tables).
    pub fn register_live_tables(&self) -> EngineResult<()> {
        use datafusion::catalog::MemorySchemaProvider;
        let Some(tarn) = self.ctx.catalog(DEFAULT_CATALOG) else {
            return Err(EngineError::Internal("no default catalog".into()));
        };
        let schema = match tarn.schema(crate::catalog::system::SYSTEM_SCHEMA) {
            Some(schema) => schema,
            None => {
                let schema = Arc::new(MemorySchemaProvider::new());
                tarn.register_schema(crate::catalog::system::SYSTEM_SCHEMA, schema.clone())
                    .map_err(EngineError::from_planning)?;
                schema
            }
        };
        let table = LiveQueriesTable::new(self.live.clone());
        schema
            .register_table("queries".into(), Arc::new(SnapshotTable(table)))
            .map_err(EngineError::from_planning)?;
        let caches = super::cache_table::CachesTable::new(
            Arc::clone(&self.result_cache),
            Arc::clone(&self.data_cache),
            self.ctx.runtime_env(),
        );
        schema
            .register_table("caches".into(), Arc::new(SnapshotTable(caches)))
            .map_err(EngineError::from_planning)?;
        Ok(())
    }
}
