//! Answers to Flight SQL metadata commands, as record batches.

use std::sync::{Arc, LazyLock};

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow_flight::sql::Command;
use arrow_flight::sql::CommandGetTableTypes;
use arrow_flight::sql::metadata::GetCatalogsBuilder;
use tonic::Status;

use super::sql_info::{SQL_INFO, XDBC_TYPE_INFO};
use crate::engine::Session;
use crate::engine::{Engine, TableKind};

/// The schema a metadata command's result has, or `None` when `command` is
/// not a metadata command.
pub fn schema(command: &Command) -> Option<SchemaRef> {
    Some(match command {
        Command::CommandGetCatalogs(_) => GetCatalogsBuilder::new().schema(),
        Command::CommandGetDbSchemas(c) => c.clone().into_builder().schema(),
        Command::CommandGetTables(c) => c.clone().into_builder().schema(),
        Command::CommandGetTableTypes(_) => CommandGetTableTypes {}.into_builder().schema(),
        Command::CommandGetSqlInfo(_) => SQL_INFO.schema(),
        Command::CommandGetXdbcTypeInfo(_) => XDBC_TYPE_INFO.schema(),
        Command::CommandGetPrimaryKeys(_) => Arc::clone(&PRIMARY_KEYS_SCHEMA),
        Command::CommandGetExportedKeys(_)
        | Command::CommandGetImportedKeys(_)
        | Command::CommandGetCrossReference(_) => Arc::clone(&FOREIGN_KEYS_SCHEMA),
        _ => return None,
    })
}

/// Answers a metadata command.
pub async fn answer(
    engine: &Engine,
    session: &Session,
    command: Command,
) -> Result<RecordBatch, Status> {
    match command {
        Command::CommandGetCatalogs(c) => {
            let mut b = c.into_builder();
            for catalog in engine.catalog_names(session) {
                b.append(catalog);
            }
            b.build().map_err(internal)
        }
        Command::CommandGetDbSchemas(c) => {
            let mut b = c.into_builder();
            for (catalog, schema) in engine.schemas(session) {
                b.append(catalog, schema);
            }
            b.build().map_err(internal)
        }
        Command::CommandGetTables(c) => {
            let mut b = c.into_builder();
            for t in engine.tables(session).await {
                b.append(
                    &t.catalog,
                    &t.schema,
                    &t.name,
                    t.kind.as_str(),
                    &t.arrow_schema,
                )
                .map_err(internal)?;
            }
            b.build().map_err(internal)
        }
        Command::CommandGetTableTypes(c) => {
            let mut b = c.into_builder();
            for kind in TableKind::ALL {
                b.append(kind.as_str());
            }
            b.build().map_err(internal)
        }
        Command::CommandGetSqlInfo(c) => c.into_builder(&SQL_INFO).build().map_err(internal),
        Command::CommandGetXdbcTypeInfo(c) => {
            XDBC_TYPE_INFO.record_batch(c.data_type).map_err(internal)
        }
        // Tarn tables have no declared keys: correct, empty answers.
        Command::CommandGetPrimaryKeys(_) => {
            Ok(RecordBatch::new_empty(Arc::clone(&PRIMARY_KEYS_SCHEMA)))
        }
        Command::CommandGetExportedKeys(_)
        | Command::CommandGetImportedKeys(_)
        | Command::CommandGetCrossReference(_) => {
            Ok(RecordBatch::new_empty(Arc::clone(&FOREIGN_KEYS_SCHEMA)))
        }
        other => Err(Status::invalid_argument(format!(
            "{} is not a metadata command",
            other.type_url()
        ))),
    }
}

fn internal(e: impl std::fmt::Display) -> Status {
    Status::internal(format!("building metadata: {e}"))
}

static PRIMARY_KEYS_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("catalog_name", DataType::Utf8, true),
        Field::new("db_schema_name", DataType::Utf8, true),
        Field::new("table_name", DataType::Utf8, false),
        Field::new("column_name", DataType::Utf8, false),
        Field::new("key_name", DataType::Utf8, true),
        Field::new("key_sequence", DataType::Int32, false),
    ]))
});

static FOREIGN_KEYS_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("pk_catalog_name", DataType::Utf8, true),
        Field::new("pk_db_schema_name", DataType::Utf8, true),
        Field::new("pk_table_name", DataType::Utf8, false),
        Field::new("pk_column_name", DataType::Utf8, false),
        Field::new("fk_catalog_name", DataType::Utf8, true),
        Field::new("fk_db_schema_name", DataType::Utf8, true),
        Field::new("fk_table_name", DataType::Utf8, false),
        Field::new("fk_column_name", DataType::Utf8, false),
        Field::new("key_sequence", DataType::Int32, false),
        Field::new("fk_key_name", DataType::Utf8, true),
        Field::new("pk_key_name", DataType::Utf8, true),
        Field::new("update_rule", DataType::UInt8, false),
        Field::new("delete_rule", DataType::UInt8, false),
    ]))
});
