//! Catalog listings for metadata calls (GetTables and friends).

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use datafusion::catalog::SchemaProvider;
use datafusion::catalog::information_schema::{INFORMATION_SCHEMA, InformationSchemaProvider};
use datafusion::datasource::TableType;
use datafusion::prelude::SessionContext;

use super::wire::WireTypes;

/// The kind of a table, as Flight SQL and ODBC/JDBC name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableKind {
    /// A table backed by data.
    Table,
    /// A view (including `information_schema`).
    View,
    /// A temporary table.
    Temporary,
}

impl TableKind {
    /// Every kind, in the order GetTableTypes lists them.
    pub const ALL: [TableKind; 3] = [TableKind::Table, TableKind::View, TableKind::Temporary];

    /// The name clients filter on.
    pub fn as_str(self) -> &'static str {
        match self {
            TableKind::Table => "TABLE",
            TableKind::View => "VIEW",
            TableKind::Temporary => "LOCAL TEMPORARY",
        }
    }
}

impl From<TableType> for TableKind {
    fn from(t: TableType) -> Self {
        match t {
            TableType::Base => TableKind::Table,
            TableType::View => TableKind::View,
            TableType::Temporary => TableKind::Temporary,
        }
    }
}

/// One table of the catalog.
#[derive(Debug, Clone)]
pub struct TableInfo {
    /// Catalog name.
    pub catalog: String,
    /// Schema (namespace) name.
    pub schema: String,
    /// Table name.
    pub name: String,
    /// Table or view.
    pub kind: TableKind,
    /// The schema of `SELECT *` as a client receives it.
    pub arrow_schema: SchemaRef,
}

pub(super) fn list_schemas(ctx: &SessionContext) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for catalog_name in ctx.catalog_names() {
        if let Some(catalog) = ctx.catalog(&catalog_name) {
            for schema_name in catalog.schema_names() {
                out.push((catalog_name.clone(), schema_name));
            }
            // DataFusion answers `information_schema` without registering it;
            // list it like any other schema, since SQL can query it.
            if information_schema_enabled(ctx) {
                out.push((catalog_name.clone(), INFORMATION_SCHEMA.to_string()));
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

fn information_schema_enabled(ctx: &SessionContext) -> bool {
    ctx.state().config().options().catalog.information_schema
}

fn schema_provider(
    ctx: &SessionContext,
    catalog: &str,
    schema: &str,
) -> Option<Arc<dyn SchemaProvider>> {
    if schema == INFORMATION_SCHEMA && information_schema_enabled(ctx) {
        let catalogs = Arc::clone(ctx.state().catalog_list());
        return Some(Arc::new(InformationSchemaProvider::new(catalogs)));
    }
    ctx.catalog(catalog).and_then(|c| c.schema(schema))
}

pub(super) async fn list_tables(ctx: &SessionContext, wire: WireTypes) -> Vec<TableInfo> {
    let mut out = Vec::new();
    for (catalog_name, schema_name) in list_schemas(ctx) {
        let Some(schema) = schema_provider(ctx, &catalog_name, &schema_name) else {
            continue;
        };
        let mut names = schema.table_names();
        names.sort();
        for name in names {
            // A table dropped between listing and lookup is simply skipped.
            if let Ok(Some(table)) = schema.table(&name).await {
                out.push(TableInfo {
                    catalog: catalog_name.clone(),
                    schema: schema_name.clone(),
                    name,
                    kind: table.table_type().into(),
                    arrow_schema: wire.wire_schema(&table.schema()),
                });
            }
        }
    }
    out
}
