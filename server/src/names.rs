//! The names every layer agrees on: where the lake's tables live in
//! DataFusion's catalog, and how a table is called in messages, the catalog
//! and lineage.

use datafusion::common::TableReference;

/// The catalog name Tarn registers its lake under.
pub const DEFAULT_CATALOG: &str = "tarn";
/// The schema lake tables are registered in.
pub const DEFAULT_SCHEMA: &str = "public";

/// The name of `reference` as Tarn records it: the bare table name for the
/// default catalog and schema, the qualified name otherwise.
pub fn table_name(reference: &TableReference) -> String {
    let default_catalog = reference.catalog().is_none_or(|c| c == DEFAULT_CATALOG);
    let default_schema = reference.schema().is_none_or(|s| s == DEFAULT_SCHEMA);
    if default_catalog && default_schema {
        reference.table().to_string()
    } else {
        reference.to_string()
    }
}
