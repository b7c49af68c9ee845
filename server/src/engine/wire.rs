//! The wire types: what a result looks like when it leaves the server.
//!
//! DataFusion scans Parquet into view types (`Utf8View`, `BinaryView`) and
//! may produce dictionaries. Many Flight SQL clients (the JDBC driver,
//! flightsql-dbapi) cannot read those, so by default a result is cast to the
//! plain equivalent in the plan itself: the schema a client is promised is the
//! schema it receives, field for field.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, FieldRef, Fields, Schema, SchemaRef};
use datafusion::common::Column;
use datafusion::logical_expr::{Expr, ExprSchemable, LogicalPlan, LogicalPlanBuilder, cast};

use super::error::{EngineError, EngineResult};

/// Which Arrow types may leave the server as they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WireTypes {
    /// Plain types only: view types become `Utf8`/`Binary`, dictionaries their value type.
    #[default]
    Plain,
    /// Send view types and dictionaries unchanged (for clients that read them).
    Native,
}

impl WireTypes {
    /// The type `data_type` is sent as.
    pub fn wire_type(self, data_type: &DataType) -> DataType {
        match self {
            WireTypes::Native => data_type.clone(),
            WireTypes::Plain => plain_type(data_type),
        }
    }

    /// The schema `schema` is sent as.
    pub fn wire_schema(self, schema: &Schema) -> SchemaRef {
        let fields: Fields = schema.fields().iter().map(|f| self.wire_field(f)).collect();
        Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
    }

    fn wire_field(self, field: &FieldRef) -> FieldRef {
        let wire = self.wire_type(field.data_type());
        if &wire == field.data_type() {
            Arc::clone(field)
        } else {
            Arc::new(field.as_ref().clone().with_data_type(wire))
        }
    }

    /// Wraps `plan` in a projection that casts every column to its wire type.
    /// Returns the plan unchanged when nothing needs a cast.
    pub fn cast_plan(self, plan: LogicalPlan) -> EngineResult<LogicalPlan> {
        let schema = Arc::clone(plan.schema());
        let needs_cast = schema
            .fields()
            .iter()
            .any(|f| &self.wire_type(f.data_type()) != f.data_type());
        if !needs_cast {
            return Ok(plan);
        }
        let exprs: Vec<Expr> = schema
            .iter()
            .map(|(qualifier, field)| {
                let column = Expr::Column(Column::new(qualifier.cloned(), field.name()));
                let wire = self.wire_type(field.data_type());
                if &wire == field.data_type() {
                    column
                } else {
                    cast(column, wire).alias_qualified(qualifier.cloned(), field.name())
                }
            })
            .collect();
        debug_assert!(exprs.iter().all(|e| e.get_type(schema.as_ref()).is_ok()));
        LogicalPlanBuilder::from(plan)
            .project(exprs)
            .and_then(|b| b.build())
            .map_err(|e| EngineError::Internal(format!("casting the result to wire types: {e}")))
    }
}

fn plain_type(data_type: &DataType) -> DataType {
    let plain_field = |f: &FieldRef| -> FieldRef {
        Arc::new(Field::clone(f).with_data_type(plain_type(f.data_type())))
    };
    match data_type {
        DataType::Utf8View => DataType::Utf8,
        DataType::BinaryView => DataType::Binary,
        DataType::Dictionary(_, value) => plain_type(value),
        DataType::List(f) | DataType::ListView(f) => DataType::List(plain_field(f)),
        DataType::LargeList(f) | DataType::LargeListView(f) => DataType::LargeList(plain_field(f)),
        DataType::FixedSizeList(f, n) => DataType::FixedSizeList(plain_field(f), *n),
        DataType::Struct(fields) => DataType::Struct(fields.iter().map(plain_field).collect()),
        DataType::Map(f, sorted) => DataType::Map(plain_field(f), *sorted),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_types_replace_views_and_dictionaries_recursively() {
        let nested = DataType::List(Arc::new(Field::new("item", DataType::Utf8View, true)));
        assert_eq!(
            WireTypes::Plain.wire_type(&nested),
            DataType::List(Arc::new(Field::new("item", DataType::Utf8, true)))
        );
        let dict = DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8View));
        assert_eq!(WireTypes::Plain.wire_type(&dict), DataType::Utf8);
        assert_eq!(WireTypes::Native.wire_type(&dict), dict);
        assert_eq!(
            WireTypes::Plain.wire_type(&DataType::Int64),
            DataType::Int64
        );
    }
}
