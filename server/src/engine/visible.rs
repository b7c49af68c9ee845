//! What a session sees of the catalog: only the tables its user may read,
//! only the columns granted to them, and `system.*` rows about those tables
//! (and their own runs). Listings built on the catalog (`SHOW TABLES`,
//! `information_schema`, Flight's GetTables, ADBC's get_objects) follow.
//!
//! This hides; it does not refuse. Statements are refused, naming the
//! missing privilege, before they are planned (`access.rs`); this view keeps
//! what is not granted out of every listing and `SELECT *`.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, RwLock};

use arrow::array::{Array, AsArray, BooleanArray, RecordBatch};
use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::memory::MemTable;
use datafusion::catalog::{
    CatalogProvider, CatalogProviderList, SchemaProvider, Session, TableFunctionArgs,
    TableFunctionImpl, TableProvider,
};
use datafusion::common::TableReference;
use datafusion::datasource::TableType;
use datafusion::error::Result;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionContext;

use super::policies::{Policy, policy_view};
use super::privileges::{Access, Privilege, Privileges};
use crate::catalog::system::{Direction, SYSTEM_SCHEMA};
use crate::identity::Principal;
use crate::names::table_name;

/// Whose view it is: the session's principal (as of its latest request)
/// and the server's privileges.
#[derive(Clone)]
pub(crate) struct Viewer {
    principal: Arc<RwLock<Principal>>,
    privileges: Arc<Privileges>,
    /// The engine's context, to read policies' SQL with its functions.
    base: SessionContext,
    /// The policy views built for this session, by table: a view is built
    /// again only when the table, its policy or the user's columns change.
    policy_views: Arc<std::sync::Mutex<HashMap<String, PolicyView>>>,
}

/// A table as one session sees it through masks and row filters, with what
/// it was built from.
struct PolicyView {
    table: Arc<dyn TableProvider>,
    policy: Policy,
    columns: Option<BTreeSet<String>>,
    view: Arc<dyn TableProvider>,
}

impl std::fmt::Debug for Viewer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Viewer")
            .field("principal", &self.principal)
            .finish_non_exhaustive()
    }
}

impl Viewer {
    pub(crate) fn new(
        principal: Arc<RwLock<Principal>>,
        privileges: Arc<Privileges>,
        base: SessionContext,
    ) -> Self {
        Self {
            principal,
            privileges,
            base,
            policy_views: Default::default(),
        }
    }

    /// `table` seen through `policy` (and only `columns`, when given).
    fn policy_view(
        &self,
        reference: TableReference,
        table: Arc<dyn TableProvider>,
        policy: Policy,
        columns: Option<BTreeSet<String>>,
    ) -> Result<Arc<dyn TableProvider>> {
        let key = reference.to_string();
        let mut views = self
            .policy_views
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(built) = views.get(&key)
            && Arc::ptr_eq(&built.table, &table)
            && built.policy == policy
            && built.columns == columns
        {
            return Ok(Arc::clone(&built.view));
        }
        let state = self.base.state();
        let view = policy_view(
            &state,
            reference,
            Arc::clone(&table),
            &policy,
            columns.as_ref(),
        )?;
        let built = PolicyView {
            table,
            policy,
            columns,
            view: Arc::clone(&view),
        };
        views.insert(key, built);
        Ok(view)
    }

    fn principal(&self) -> Principal {
        self.principal
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// The catalogs as `viewer` sees them.
#[derive(Debug)]
pub(crate) struct VisibleCatalogs {
    inner: Arc<dyn CatalogProviderList>,
    viewer: Viewer,
}

impl VisibleCatalogs {
    pub(crate) fn new(inner: Arc<dyn CatalogProviderList>, viewer: Viewer) -> Self {
        Self { inner, viewer }
    }
}

impl CatalogProviderList for VisibleCatalogs {
    fn register_catalog(
        &self,
        name: String,
        catalog: Arc<dyn CatalogProvider>,
    ) -> Option<Arc<dyn CatalogProvider>> {
        self.inner.register_catalog(name, catalog)
    }

    fn catalog_names(&self) -> Vec<String> {
        self.inner.catalog_names()
    }

    fn catalog(&self, name: &str) -> Option<Arc<dyn CatalogProvider>> {
        let inner = self.inner.catalog(name)?;
        Some(Arc::new(VisibleCatalog {
            inner,
            viewer: self.viewer.clone(),
            name: name.to_string(),
        }))
    }
}

#[derive(Debug)]
struct VisibleCatalog {
    inner: Arc<dyn CatalogProvider>,
    viewer: Viewer,
    name: String,
}

impl CatalogProvider for VisibleCatalog {
    fn schema_names(&self) -> Vec<String> {
        self.inner.schema_names()
    }

    fn schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        let inner = self.inner.schema(name)?;
        Some(Arc::new(VisibleSchema {
            inner,
            viewer: self.viewer.clone(),
            catalog: self.name.clone(),
            schema: name.to_string(),
        }))
    }

    fn register_schema(
        &self,
        name: &str,
        schema: Arc<dyn SchemaProvider>,
    ) -> Result<Option<Arc<dyn SchemaProvider>>> {
        self.inner.register_schema(name, schema)
    }

    fn deregister_schema(
        &self,
        name: &str,
        cascade: bool,
    ) -> Result<Option<Arc<dyn SchemaProvider>>> {
        self.inner.deregister_schema(name, cascade)
    }
}

#[derive(Debug)]
struct VisibleSchema {
    inner: Arc<dyn SchemaProvider>,
    viewer: Viewer,
    catalog: String,
    schema: String,
}

impl VisibleSchema {
    fn name_of(&self, table: &str) -> String {
        table_name(&TableReference::full(
            self.catalog.as_str(),
            self.schema.as_str(),
            table,
        ))
    }
}

#[async_trait]
impl SchemaProvider for VisibleSchema {
    fn owner_name(&self) -> Option<&str> {
        self.inner.owner_name()
    }

    fn table_names(&self) -> Vec<String> {
        let principal = self.viewer.principal();
        let names = self.inner.table_names();
        if principal.is_admin() || self.schema == SYSTEM_SCHEMA {
            return names;
        }
        names
            .into_iter()
            .filter(|name| {
                self.viewer
                    .privileges
                    .may_read(&principal, &self.name_of(name))
            })
            .collect()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        let Some(table) = self.inner.table(name).await? else {
            return Ok(None);
        };
        let principal = self.viewer.principal();
        if principal.is_admin() {
            return Ok(Some(table));
        }
        if self.schema == SYSTEM_SCHEMA {
            let rule = RowRule::of(name);
            return Ok(Some(Arc::new(FilteredRows {
                inner: table,
                rule,
                viewer: self.viewer.clone(),
            })));
        }
        let privileges = &self.viewer.privileges;
        let qualified = self.name_of(name);
        let access = privileges.access(&principal, Privilege::Select, &qualified);
        let policy = privileges.policy(&principal, &qualified);
        if !policy.is_empty() && access != Access::Denied {
            let reference = TableReference::full(self.catalog.as_str(), self.schema.as_str(), name);
            let columns = match access {
                Access::Columns(columns) => Some(columns),
                _ => None,
            };
            return self
                .viewer
                .policy_view(reference, table, policy, columns)
                .map(Some);
        }
        Ok(match access {
            Access::Denied => None,
            Access::Whole => Some(table),
            Access::Columns(columns) => Some(Arc::new(ProjectedTable::new(table, &columns)?)),
        })
    }

    fn register_table(
        &self,
        name: String,
        table: Arc<dyn TableProvider>,
    ) -> Result<Option<Arc<dyn TableProvider>>> {
        self.inner.register_table(name, table)
    }

    fn deregister_table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        self.inner.deregister_table(name)
    }

    fn table_exist(&self, name: &str) -> bool {
        self.inner.table_exist(name)
    }
}

/// A table with only the columns granted: `SELECT *` expands to them, and
/// any other column is not there.
#[derive(Debug)]
struct ProjectedTable {
    inner: Arc<dyn TableProvider>,
    /// The granted columns' positions in the inner table.
    keep: Vec<usize>,
    schema: SchemaRef,
}

impl ProjectedTable {
    fn new(
        inner: Arc<dyn TableProvider>,
        columns: &std::collections::BTreeSet<String>,
    ) -> Result<Self> {
        let full = inner.schema();
        let keep: Vec<usize> = (0..full.fields().len())
            .filter(|&i| columns.contains(full.field(i).name()))
            .collect();
        let schema = Arc::new(full.project(&keep)?);
        Ok(Self {
            inner,
            keep,
            schema,
        })
    }
}

#[async_trait]
impl TableProvider for ProjectedTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        self.inner.table_type()
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let inner: Vec<usize> = match projection {
            Some(projection) => projection.iter().map(|&i| self.keep[i]).collect(),
            None => self.keep.clone(),
        };
        self.inner.scan(state, Some(&inner), filters, limit).await
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        self.inner.supports_filters_pushdown(filters)
    }
}

/// The lineage walks as `viewer` sees them: edges that touch a table the
/// user may not read are left out, as in `system.column_lineage`.
#[derive(Debug)]
pub(crate) struct VisibleLineageWalk {
    inner: Arc<dyn TableFunctionImpl>,
    viewer: Viewer,
}

impl VisibleLineageWalk {
    /// Registers in `context` the session's view of each lineage walk of `base`.
    pub(crate) fn register_all(
        context: &SessionContext,
        base: &datafusion::execution::SessionState,
        viewer: &Viewer,
    ) {
        for direction in [Direction::Upstream, Direction::Downstream] {
            let name = direction.function();
            if let Some(walk) = base.table_functions().get(name) {
                let visible = Self {
                    inner: Arc::clone(walk.function()),
                    viewer: viewer.clone(),
                };
                context.register_udtf(name, Arc::new(visible));
            }
        }
    }
}

impl TableFunctionImpl for VisibleLineageWalk {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let edges = self.inner.call_with_args(args)?;
        Ok(Arc::new(FilteredRows {
            inner: edges,
            rule: RowRule::Readable(&["target_table", "source_table"]),
            viewer: self.viewer.clone(),
        }))
    }
}

/// Which rows of a system table a user may see.
#[derive(Debug, Clone, Copy)]
enum RowRule {
    /// Rows whose tables (in these columns) the user may read.
    Readable(&'static [&'static str]),
    /// Rows whose principal (in this column) is the user.
    Own(&'static str),
    /// Every row.
    All,
}

impl RowRule {
    fn of(table: &str) -> Self {
        match table {
            "tables" | "columns" | "schema_versions" | "table_versions" => {
                Self::Readable(&["table_name"])
            }
            "table_lineage" => Self::Readable(&["source_table", "target_table"]),
            "column_lineage" => Self::Readable(&["target_table", "source_table"]),
            "grants" => Self::Readable(&["object_name"]),
            "masks" | "row_filters" => Self::Readable(&["table_name"]),
            "runs" => Self::Own("principal"),
            "queries" => Self::Own("user"),
            _ => Self::All,
        }
    }
}

/// A system table with the rows its viewer may not see left out.
#[derive(Debug)]
struct FilteredRows {
    inner: Arc<dyn TableProvider>,
    rule: RowRule,
    viewer: Viewer,
}

impl FilteredRows {
    fn keep(&self, batch: &RecordBatch, principal: &Principal) -> Result<RecordBatch> {
        let texts = |column: &str| {
            batch
                .column_by_name(column)
                .and_then(|c| c.as_string_opt::<i32>().cloned())
        };
        let rows = batch.num_rows();
        let kept: BooleanArray = match self.rule {
            RowRule::All => return Ok(batch.clone()),
            RowRule::Own(column) => {
                let Some(owners) = texts(column) else {
                    return Ok(batch.slice(0, 0));
                };
                (0..rows)
                    .map(|i| Some(owners.is_valid(i) && owners.value(i) == principal.name()))
                    .collect()
            }
            RowRule::Readable(columns) => {
                let columns: Vec<_> = columns.iter().filter_map(|c| texts(c)).collect();
                (0..rows)
                    .map(|i| {
                        Some(columns.iter().all(|names| {
                            names.is_null(i)
                                || self.viewer.privileges.may_read(principal, names.value(i))
                        }))
                    })
                    .collect()
            }
        };
        Ok(arrow::compute::filter_record_batch(batch, &kept)?)
    }
}

#[async_trait]
impl TableProvider for FilteredRows {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }

    fn table_type(&self) -> TableType {
        self.inner.table_type()
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let everything = self.inner.scan(state, None, &[], None).await?;
        let batches = datafusion::physical_plan::collect(everything, state.task_ctx()).await?;
        let principal = self.viewer.principal();
        let kept = batches
            .iter()
            .map(|batch| self.keep(batch, &principal))
            .collect::<Result<Vec<_>>>()?;
        MemTable::try_new(self.schema(), vec![kept])?
            .scan(state, projection, filters, limit)
            .await
    }
}
