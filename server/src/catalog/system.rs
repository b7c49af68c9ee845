//! The catalog in SQL: `system.*` tables and the lineage table functions.
//!
//! ```sql
//! SELECT * FROM system.column_lineage WHERE target_table = 'b';
//! SELECT * FROM lineage_upstream('b.revenue', 5);     -- where a column comes from
//! SELECT * FROM lineage_downstream('lineitem', 3);    -- what a table feeds
//! ```

use std::borrow::Cow;
use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanBuilder, Int64Builder, RecordBatch, StringBuilder};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::memory::{MemTable, MemorySchemaProvider};
use datafusion::catalog::{
    SchemaProvider, Session, TableFunctionArgs, TableFunctionImpl, TableProvider,
};
use datafusion::common::{ScalarValue, plan_err};
use datafusion::datasource::TableType;
use datafusion::error::{DataFusionError, Result as DataFusionResult};
use datafusion::logical_expr::{Expr, LogicalPlan};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionContext;

use rusqlite::Connection;

use super::SqliteCatalog;

/// The schema the system tables are in.
pub const SYSTEM_SCHEMA: &str = "system";

/// The system tables only admins may read: they list who may connect, and
/// (`column_statistics`) the smallest and largest values of every column,
/// masked ones too.
pub const ADMIN_ONLY_TABLES: &[&str] = &["users", "roles", "tokens", "audit", "column_statistics"];

use super::system_tables::{INT, SystemTableDef, TABLES, TEXT};

/// Registers `system.*` and the lineage functions with `ctx`, under its
/// default catalog.
pub fn register(ctx: &SessionContext, catalog: Arc<SqliteCatalog>) -> DataFusionResult<()> {
    let schema = Arc::new(MemorySchemaProvider::new());
    for def in TABLES {
        let table = SystemTable {
            catalog: Arc::clone(&catalog),
            def,
            schema: schema_of(def.columns),
        };
        schema.register_table(def.name.to_string(), Arc::new(table))?;
    }
    let default_catalog = ctx
        .state()
        .config()
        .options()
        .catalog
        .default_catalog
        .clone();
    let Some(tarn) = ctx.catalog(&default_catalog) else {
        return plan_err!("no default catalog to put the system tables in");
    };
    tarn.register_schema(SYSTEM_SCHEMA, schema)?;
    for direction in [Direction::Upstream, Direction::Downstream] {
        ctx.register_udtf(
            direction.function(),
            Arc::new(LineageWalk {
                catalog: Arc::clone(&catalog),
                direction,
            }),
        );
    }
    Ok(())
}

fn schema_of(columns: &[(&str, DataType)]) -> SchemaRef {
    Arc::new(Schema::new(
        columns
            .iter()
            .map(|(name, data_type)| Field::new(*name, data_type.clone(), true))
            .collect::<Vec<_>>(),
    ))
}

/// A system table: its rows are read from the catalog at each scan.
struct SystemTable {
    catalog: Arc<SqliteCatalog>,
    def: &'static SystemTableDef,
    schema: SchemaRef,
}

impl std::fmt::Debug for SystemTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "system.{}", self.def.name)
    }
}

#[async_trait::async_trait]
impl TableProvider for SystemTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    fn get_logical_plan(&self) -> Option<Cow<'_, LogicalPlan>> {
        None
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DataFusionResult<Arc<dyn ExecutionPlan>> {
        let (sql, schema) = (self.def.sql, self.schema());
        let columns = self
            .catalog
            .call(move |c| read_rows(c, sql, schema))
            .await
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        let batch = RecordBatch::try_new(self.schema(), columns)?;
        let table = MemTable::try_new(self.schema(), vec![vec![batch]])?;
        table.scan(state, projection, filters, limit).await
    }
}

/// The rows of `sql`, one array per column of `schema`.
fn read_rows(c: &Connection, sql: &str, schema: SchemaRef) -> rusqlite::Result<Vec<ArrayRef>> {
    let mut statement = c.prepare(sql)?;
    let mut builders: Vec<Builder> = schema
        .fields()
        .iter()
        .map(|f| Builder::new(f.data_type()))
        .collect();
    let mut rows = statement.query([])?;
    while let Some(row) = rows.next()? {
        for (i, builder) in builders.iter_mut().enumerate() {
            builder.push(row, i)?;
        }
    }
    Ok(builders.into_iter().map(Builder::finish).collect())
}

enum Builder {
    Text(StringBuilder),
    Int(Int64Builder),
    Bool(BooleanBuilder),
}

impl Builder {
    fn new(data_type: &DataType) -> Self {
        match data_type {
            DataType::Int64 => Self::Int(Int64Builder::new()),
            DataType::Boolean => Self::Bool(BooleanBuilder::new()),
            _ => Self::Text(StringBuilder::new()),
        }
    }

    fn push(&mut self, row: &rusqlite::Row, i: usize) -> rusqlite::Result<()> {
        match self {
            Self::Text(b) => b.append_option(row.get::<_, Option<String>>(i)?),
            Self::Int(b) => b.append_option(row.get::<_, Option<i64>>(i)?),
            Self::Bool(b) => b.append_option(row.get::<_, Option<bool>>(i)?),
        }
        Ok(())
    }

    fn finish(self) -> ArrayRef {
        match self {
            Self::Text(mut b) => Arc::new(b.finish()),
            Self::Int(mut b) => Arc::new(b.finish()),
            Self::Bool(mut b) => Arc::new(b.finish()),
        }
    }
}

/// Which way a lineage walk goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Towards the sources.
    Upstream,
    /// Towards what is derived.
    Downstream,
}

impl Direction {
    /// The name of the table function that walks this way.
    pub fn function(self) -> &'static str {
        match self {
            Self::Upstream => "lineage_upstream",
            Self::Downstream => "lineage_downstream",
        }
    }
}

/// One edge met on a lineage walk.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct WalkEdge {
    /// Steps from the start (1 = a direct neighbour).
    pub depth: i64,
    /// The table derived.
    pub target_table: String,
    /// Its column (`*` for edges that shape the whole table).
    pub target_column: String,
    /// The table read.
    pub source_table: String,
    /// Its column.
    pub source_column: String,
    /// DIRECT or INDIRECT.
    pub kind: String,
    /// IDENTITY, AGGREGATION, JOIN, ...
    pub subtype: String,
}

/// Every recorded column edge.
fn read_edges(c: &Connection) -> rusqlite::Result<Vec<WalkEdge>> {
    let mut statement = c.prepare(
        "SELECT DISTINCT target_table, target_column, source_table, source_column, kind, subtype FROM column_lineage",
    )?;
    let rows = statement.query_map([], |row| {
        Ok(WalkEdge {
            depth: 0,
            target_table: row.get(0)?,
            target_column: row.get(1)?,
            source_table: row.get(2)?,
            source_column: row.get(3)?,
            kind: row.get(4)?,
            subtype: row.get(5)?,
        })
    })?;
    rows.collect()
}

/// Walks `edges` from `start` (`table` or `table.column`). A column walk
/// follows DIRECT edges; a table walk follows every edge.
pub fn walk(edges: &[WalkEdge], start: &str, direction: Direction, depth: i64) -> Vec<WalkEdge> {
    let (table, column) = match start.split_once('.') {
        Some((t, c)) => (t.to_string(), Some(c.to_string())),
        None => (start.to_string(), None),
    };
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    let mut queue = VecDeque::from([(table, column, 0_i64)]);
    let mut visited = BTreeSet::new();
    while let Some((table, column, level)) = queue.pop_front() {
        if level >= depth || !visited.insert((table.clone(), column.clone())) {
            continue;
        }
        for edge in edges {
            let (near_table, near_column, far_table, far_column) = match direction {
                Direction::Upstream => (
                    &edge.target_table,
                    &edge.target_column,
                    &edge.source_table,
                    &edge.source_column,
                ),
                Direction::Downstream => (
                    &edge.source_table,
                    &edge.source_column,
                    &edge.target_table,
                    &edge.target_column,
                ),
            };
            let matches = near_table == &table
                && match &column {
                    Some(c) => near_column == c && edge.kind == "DIRECT",
                    None => true,
                };
            if !matches {
                continue;
            }
            let found = WalkEdge {
                depth: level + 1,
                ..edge.clone()
            };
            if seen.insert(found.clone()) {
                out.push(found);
            }
            let next_column = column.as_ref().map(|_| far_column.clone());
            if far_column != "*" || column.is_none() {
                queue.push_back((far_table.clone(), next_column, level + 1));
            }
        }
    }
    out.sort();
    out
}

/// `lineage_upstream(start [, depth])` and `lineage_downstream(...)`.
#[derive(Debug)]
struct LineageWalk {
    catalog: Arc<SqliteCatalog>,
    direction: Direction,
}

impl TableFunctionImpl for LineageWalk {
    fn call_with_args(&self, args: TableFunctionArgs) -> DataFusionResult<Arc<dyn TableProvider>> {
        let usage = || {
            DataFusionError::Plan(format!(
                "{}(name [, depth]) takes a table or table.column and an optional depth (default 10): {}('b.revenue', 3)",
                self.direction.function(),
                self.direction.function()
            ))
        };
        let (start, depth) = match args.exprs() {
            [Expr::Literal(ScalarValue::Utf8(Some(start)), _)] => (start.clone(), 10),
            [
                Expr::Literal(ScalarValue::Utf8(Some(start)), _),
                Expr::Literal(ScalarValue::Int64(Some(depth)), _),
            ] => (start.clone(), *depth),
            _ => return Err(usage()),
        };
        // The edges are read when the walk is scanned: planning never waits
        // on the catalog.
        Ok(Arc::new(LineageEdges {
            catalog: Arc::clone(&self.catalog),
            start,
            direction: self.direction,
            depth,
            schema: schema_of(&[
                ("depth", INT),
                ("target_table", TEXT),
                ("target_column", TEXT),
                ("source_table", TEXT),
                ("source_column", TEXT),
                ("kind", TEXT),
                ("subtype", TEXT),
            ]),
        }))
    }
}

/// The edges of one lineage walk, read from the catalog at scan.
#[derive(Debug)]
struct LineageEdges {
    catalog: Arc<SqliteCatalog>,
    start: String,
    direction: Direction,
    depth: i64,
    schema: SchemaRef,
}

#[async_trait::async_trait]
impl TableProvider for LineageEdges {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Temporary
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DataFusionResult<Arc<dyn ExecutionPlan>> {
        let all = self
            .catalog
            .call(|c| read_edges(c))
            .await
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        let edges = walk(&all, &self.start, self.direction, self.depth);
        let text = |f: fn(&WalkEdge) -> &str| -> ArrayRef {
            Arc::new(arrow::array::StringArray::from_iter_values(
                edges.iter().map(f),
            ))
        };
        let columns: Vec<ArrayRef> = vec![
            Arc::new(arrow::array::Int64Array::from_iter_values(
                edges.iter().map(|e| e.depth),
            )),
            text(|e| &e.target_table),
            text(|e| &e.target_column),
            text(|e| &e.source_table),
            text(|e| &e.source_column),
            text(|e| &e.kind),
            text(|e| &e.subtype),
        ];
        let batch = RecordBatch::try_new(self.schema(), columns)?;
        MemTable::try_new(self.schema(), vec![vec![batch]])?
            .scan(state, projection, filters, limit)
            .await
    }
}
