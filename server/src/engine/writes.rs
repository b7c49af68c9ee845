//! Statements that write tables: `CREATE TABLE [AS]`, `INSERT`, `DROP TABLE
//! ... PURGE`, and `CREATE EXTERNAL TABLE ... STORED AS DELTA`.
//!
//! DataFusion parses and plans them; Tarn takes out the clauses DataFusion
//! does not plan (`PARTITIONED BY`, `LOCATION`, `PURGE`) before planning and
//! puts them into a [`TableStatement`] plan node, so that a prepared
//! statement carries them too. Running the node (and `INSERT` into a Delta
//! table) commits through [`crate::delta`]; nothing here is in memory only.

use std::cmp::Ordering;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use arrow::datatypes::{DataType, Field};
use datafusion::catalog::{Session, TableProvider, TableProviderFactory};
use datafusion::common::{DFSchema, DFSchemaRef, TableReference};
use datafusion::error::{DataFusionError, Result as DataFusionResult};
use datafusion::logical_expr::{
    CreateExternalTable, DdlStatement, Expr, Extension, LogicalPlan, UserDefinedLogicalNodeCore,
};
use datafusion::sql::parser::Statement as DFStatement;
use datafusion::sql::sqlparser::ast;
use url::Url;

use super::error::{EngineError, EngineResult};
use datafusion::datasource::source_as_provider;
use datafusion::logical_expr::WriteOp;
use datafusion::logical_expr::dml::InsertOp;

use super::Engine;
use crate::delta::DeltaLakeTable;
use crate::delta::WriteStats;
use crate::runtime::TaskFailure;

/// Clauses DataFusion's planner refuses, taken out of the statement.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct TakenClauses {
    /// `PARTITIONED BY (a, b)` or `PARTITION BY (a, b)` of `CREATE TABLE`.
    partition_by: Vec<String>,
    /// `LOCATION '...'` of `CREATE TABLE`.
    location: Option<String>,
    /// `PURGE` of `DROP TABLE`.
    purge: bool,
}

/// Takes Tarn's clauses out of `statement`, leaving what DataFusion plans.
pub(crate) fn take_clauses(statement: &mut DFStatement) -> EngineResult<TakenClauses> {
    let mut taken = TakenClauses::default();
    let DFStatement::Statement(inner) = statement else {
        return Ok(taken);
    };
    match inner.as_mut() {
        ast::Statement::CreateTable(create) if !create.external => {
            if let ast::HiveDistributionStyle::PARTITIONED { columns } = &create.hive_distribution {
                taken.partition_by = columns.iter().map(|c| c.name.value.clone()).collect();
                create.hive_distribution = ast::HiveDistributionStyle::NONE;
            }
            if let Some(expr) = create.partition_by.take() {
                taken.partition_by = partition_columns(&expr)?;
            }
            taken.location = create.location.take();
            if let Some(formats) = create.hive_formats.as_mut() {
                taken.location = taken.location.or(formats.location.take());
                if formats.row_format.is_none()
                    && formats.storage.is_none()
                    && formats.serde_properties.is_none()
                {
                    create.hive_formats = None;
                }
            }
        }
        ast::Statement::Drop {
            object_type: ast::ObjectType::Table,
            purge,
            ..
        } => {
            taken.purge = std::mem::take(purge);
        }
        _ => {}
    }
    Ok(taken)
}

fn partition_columns(expr: &ast::Expr) -> EngineResult<Vec<String>> {
    let column = |e: &ast::Expr| match e {
        ast::Expr::Identifier(ident) => Ok(ident.value.clone()),
        other => Err(EngineError::NotSupported(format!(
            "PARTITION BY {other}: partition by plain column names, e.g. PARTITIONED BY (region, year)"
        ))),
    };
    match expr {
        ast::Expr::Tuple(items) => items.iter().map(column).collect(),
        ast::Expr::Nested(inner) => Ok(vec![column(inner)?]),
        other => Ok(vec![column(other)?]),
    }
}

/// Turns DataFusion's plan of a table statement into Tarn's, with the
/// clauses taken out before planning.
pub(crate) fn rewrite_plan(plan: LogicalPlan, clauses: TakenClauses) -> EngineResult<LogicalPlan> {
    let statement = match plan {
        LogicalPlan::Ddl(DdlStatement::CreateMemoryTable(create)) => TableStatement::Create {
            name: create.name,
            location: clauses.location,
            partition_by: clauses.partition_by,
            if_not_exists: create.if_not_exists,
            or_replace: create.or_replace,
            input: create.input,
        },
        LogicalPlan::Ddl(DdlStatement::DropTable(drop)) if clauses.purge => {
            TableStatement::DropPurge {
                name: drop.name,
                if_exists: drop.if_exists,
            }
        }
        other => return Ok(other),
    };
    Ok(LogicalPlan::Extension(Extension {
        node: Arc::new(TableStatementNode::new(statement)),
    }))
}

/// A statement that writes or removes a Delta table.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum TableStatement {
    /// `CREATE [OR REPLACE] TABLE [IF NOT EXISTS] name ... [AS query]`.
    Create {
        name: TableReference,
        location: Option<String>,
        partition_by: Vec<String>,
        if_not_exists: bool,
        or_replace: bool,
        /// The rows (an empty relation with the declared columns when there is no query).
        input: Arc<LogicalPlan>,
    },
    /// `DROP TABLE [IF EXISTS] name PURGE`.
    DropPurge {
        name: TableReference,
        if_exists: bool,
    },
}

/// The plan node of a [`TableStatement`]; it returns one `count` row.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct TableStatementNode {
    pub(crate) statement: TableStatement,
    schema: DFSchemaRef,
}

impl TableStatementNode {
    fn new(statement: TableStatement) -> Self {
        Self {
            statement,
            schema: count_schema(),
        }
    }

    /// The node of `plan`, if it is one.
    pub(crate) fn of(plan: &LogicalPlan) -> Option<&TableStatement> {
        match plan {
            LogicalPlan::Extension(ext) => ext
                .node
                .as_any()
                .downcast_ref::<TableStatementNode>()
                .map(|node| &node.statement),
            _ => None,
        }
    }
}

fn count_schema() -> DFSchemaRef {
    let field = Field::new("count", DataType::UInt64, false);
    Arc::new(
        DFSchema::from_unqualified_fields(vec![field].into(), Default::default())
            .unwrap_or_else(|_| DFSchema::empty()),
    )
}

impl PartialOrd for TableStatementNode {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        // Plan nodes are ordered only to sort equal plans; the SQL text of
        // the node is a total order good enough for that.
        Some(format!("{self:?}").cmp(&format!("{other:?}")))
    }
}

impl UserDefinedLogicalNodeCore for TableStatementNode {
    fn name(&self) -> &str {
        match self.statement {
            TableStatement::Create { .. } => "CreateDeltaTable",
            TableStatement::DropPurge { .. } => "DropTablePurge",
        }
    }

    fn inputs(&self) -> Vec<&LogicalPlan> {
        match &self.statement {
            TableStatement::Create { input, .. } => vec![input.as_ref()],
            TableStatement::DropPurge { .. } => vec![],
        }
    }

    fn schema(&self) -> &DFSchemaRef {
        &self.schema
    }

    fn expressions(&self) -> Vec<Expr> {
        vec![]
    }

    fn fmt_for_explain(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match &self.statement {
            TableStatement::Create {
                name, partition_by, ..
            } => write!(
                f,
                "CreateDeltaTable: {name} partitioned by {partition_by:?}"
            ),
            TableStatement::DropPurge { name, .. } => write!(f, "DropTablePurge: {name}"),
        }
    }

    fn with_exprs_and_inputs(
        &self,
        _exprs: Vec<Expr>,
        mut inputs: Vec<LogicalPlan>,
    ) -> DataFusionResult<Self> {
        let mut statement = self.statement.clone();
        if let TableStatement::Create { input, .. } = &mut statement
            && let Some(new_input) = inputs.pop()
        {
            *input = Arc::new(new_input);
        }
        Ok(Self::new(statement))
    }
}

/// The URL a table location names, parsed as DataFusion parses the
/// locations of `CREATE EXTERNAL TABLE` and `COPY` (so that the location
/// checked is the location opened). Always ends in `/` (a table is a folder).
pub(crate) fn location_url(location: &str) -> EngineResult<Url> {
    let parsed =
        datafusion::datasource::listing::ListingTableUrl::parse(location).map_err(|e| {
            EngineError::Plan(format!(
                "invalid LOCATION '{location}': {}",
                e.strip_backtrace()
            ))
        })?;
    Ok(as_folder(AsRef::<Url>::as_ref(&parsed).clone()))
}

/// `url` as a folder URL (ending in `/`).
pub(crate) fn as_folder(mut url: Url) -> Url {
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    url
}

/// Serves `CREATE EXTERNAL TABLE ... STORED AS DELTA LOCATION '...'`.
#[derive(Debug)]
pub(crate) struct DeltaTableFactory {
    pub(crate) freshness: Duration,
}

#[async_trait::async_trait]
impl TableProviderFactory for DeltaTableFactory {
    async fn create(
        &self,
        state: &dyn Session,
        cmd: &CreateExternalTable,
    ) -> DataFusionResult<Arc<dyn TableProvider>> {
        let [location] = cmd.locations.as_slice() else {
            return Err(DataFusionError::Plan(
                "a Delta table has one LOCATION, the folder that holds its _delta_log".into(),
            ));
        };
        let url = location_url(location).map_err(|e| DataFusionError::Plan(e.to_string()))?;
        let root = crate::delta::root_store(state.runtime_env(), &url)?;
        let table = DeltaLakeTable::open(root, url, self.freshness)
            .await
            .map_err(|e| DataFusionError::Plan(e.to_string()))?;
        Ok(Arc::new(table))
    }
}

impl Engine {
    /// Runs `plan` if it writes a Delta table; returns what it wrote.
    pub(super) async fn run_table_write(
        &self,
        plan: &LogicalPlan,
    ) -> EngineResult<Option<WriteStats>> {
        if let Some(statement) = TableStatementNode::of(plan) {
            return match statement.clone() {
                TableStatement::Create {
                    name,
                    location,
                    partition_by,
                    if_not_exists,
                    or_replace,
                    input,
                } => {
                    let new = NewTableRequest {
                        name,
                        location,
                        partition_by,
                        if_not_exists,
                        or_replace,
                    };
                    self.create_table(new, input.as_ref().clone())
                        .await
                        .map(Some)
                }
                TableStatement::DropPurge { name, if_exists } => self
                    .purge_table(name, if_exists)
                    .await
                    .map(|()| Some(WriteStats::default())),
            };
        }
        let LogicalPlan::Dml(dml) = plan else {
            return Ok(None);
        };
        let WriteOp::Insert(op) = dml.op else {
            return self.run_erasure(dml).await;
        };
        let provider = source_as_provider(&dml.target).map_err(EngineError::from_planning)?;
        if provider.downcast_ref::<DeltaLakeTable>().is_none() {
            return Ok(None);
        }
        let overwrite = matches!(op, InsertOp::Overwrite);
        let (state, input) = (Arc::new(self.ctx.state()), dml.input.as_ref().clone());
        let rows = self
            .cpu
            .spawn_owned(async move {
                match provider.downcast_ref::<DeltaLakeTable>() {
                    Some(table) => table.append(state, input, overwrite).await,
                    None => Ok(WriteStats::default()),
                }
            })
            .await
            .map_err(|e| EngineError::from(TaskFailure::from(e)))??;
        Ok(Some(rows))
    }

    /// `CREATE [OR REPLACE] TABLE [IF NOT EXISTS] ...`: a new Delta table.
    async fn create_table(
        &self,
        new: NewTableRequest,
        input: LogicalPlan,
    ) -> EngineResult<WriteStats> {
        let existing = self.ctx.table_provider(new.name.clone()).await.ok();
        match &existing {
            Some(_) if new.if_not_exists => return Ok(WriteStats::default()),
            Some(_) if !new.or_replace => {
                return Err(EngineError::AlreadyExists(format!(
                    "table '{}' already exists; use CREATE OR REPLACE TABLE, or DROP TABLE it first",
                    new.name
                )));
            }
            _ => {}
        }
        let existing_delta = existing
            .as_ref()
            .and_then(|p| p.downcast_ref::<DeltaLakeTable>())
            .map(|t| t.location().clone());
        if existing.is_some() && existing_delta.is_none() {
            return Err(EngineError::AlreadyExists(format!(
                "table '{}' is a table of plain files, which OR REPLACE cannot replace atomically; DROP TABLE it first",
                new.name
            )));
        }
        // The location that is checked is the one written.
        let location = match (&new.location, existing_delta) {
            (Some(location), _) => as_folder(self.options.locations.check(location)?),
            (None, Some(current)) => current,
            (None, None) => {
                let default = self.default_location(new.name.table())?;
                as_folder(self.options.locations.check(default.as_str())?)
            }
        };
        let root = crate::delta::root_store(&self.ctx.runtime_env(), &location)
            .map_err(EngineError::from_planning)?;
        let request = crate::delta::NewTable {
            location: location.clone(),
            partition_by: new.partition_by.clone(),
            replace: new.or_replace,
        };
        let (state, task_root) = (Arc::new(self.ctx.state()), Arc::clone(&root));
        let (table, stats) = self
            .cpu
            .spawn_owned(
                async move { crate::delta::create(task_root, &request, state, input).await },
            )
            .await
            .map_err(|e| EngineError::from(TaskFailure::from(e)))??;
        let provider =
            DeltaLakeTable::with_table(root, location, table, self.options.listing_cache_ttl)
                .await?;
        if existing.is_some() {
            let _ = self.ctx.deregister_table(new.name.clone());
        }
        self.ctx
            .register_table(new.name, Arc::new(provider))
            .map_err(EngineError::from_planning)?;
        Ok(stats)
    }

    /// Where a new table goes without a `LOCATION`: a folder named after it.
    fn default_location(&self, table: &str) -> EngineResult<url::Url> {
        let Some(folder) = &self.options.tables_location else {
            return Err(EngineError::Plan(
                "no store is set for new tables; add LOCATION '<folder or s3:// URL>'".into(),
            ));
        };
        let plain = !table.is_empty()
            && table
                .chars()
                .all(|c| c.is_alphanumeric() || c == '_' || c == '-')
            && !table.starts_with(['_', '.']);
        if !plain {
            return Err(EngineError::Plan(format!(
                "table name '{table}' cannot be a folder name; use letters, digits, '_' and '-' (not first), or add LOCATION"
            )));
        }
        let folder = folder.trim_end_matches('/');
        location_url(&format!("{folder}/{table}"))
    }

    /// `DROP TABLE name PURGE`: forget the table and delete its files.
    async fn purge_table(&self, name: TableReference, if_exists: bool) -> EngineResult<()> {
        let provider = match self.ctx.table_provider(name.clone()).await {
            Ok(provider) => provider,
            Err(_) if if_exists => return Ok(()),
            Err(_) => {
                return Err(EngineError::TableNotFound {
                    name: name.to_string(),
                });
            }
        };
        let Some(table) = provider.downcast_ref::<DeltaLakeTable>() else {
            return Err(EngineError::NotSupported(format!(
                "PURGE deletes Delta tables only; '{name}' is a table of plain files: DROP TABLE it without PURGE and delete its files in the store"
            )));
        };
        let _ = self.ctx.deregister_table(name);
        crate::delta::purge(table.root(), table.location()).await?;
        Ok(())
    }
}

/// What `CREATE TABLE` asked for, apart from its rows.
struct NewTableRequest {
    name: TableReference,
    location: Option<String>,
    partition_by: Vec<String>,
    if_not_exists: bool,
    or_replace: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clauses(sql: &str) -> TakenClauses {
        let dialect = datafusion::sql::sqlparser::dialect::GenericDialect {};
        let mut statement = datafusion::sql::parser::DFParserBuilder::new(sql)
            .with_dialect(&dialect)
            .build()
            .unwrap()
            .parse_statement()
            .unwrap();
        take_clauses(&mut statement).unwrap()
    }

    #[test]
    fn partitioning_location_and_purge_are_taken_out() {
        let taken = clauses("CREATE TABLE t PARTITIONED BY (region, year) AS SELECT 1");
        assert_eq!(taken.partition_by, ["region", "year"]);
        let taken = clauses("CREATE TABLE t PARTITION BY (region) AS SELECT 1");
        assert_eq!(taken.partition_by, ["region"]);
        let taken = clauses("CREATE TABLE t (a INT) LOCATION '/lake/t'");
        assert_eq!(taken.location.as_deref(), Some("/lake/t"));
        assert!(clauses("DROP TABLE t PURGE").purge);
        assert!(!clauses("DROP TABLE t").purge);
    }

    #[test]
    fn locations_become_folder_urls() {
        assert_eq!(
            location_url("s3://bucket/lake/t").unwrap().as_str(),
            "s3://bucket/lake/t/"
        );
        assert!(
            location_url("/srv/lake/t")
                .unwrap()
                .as_str()
                .ends_with("/srv/lake/t/")
        );
    }
}
