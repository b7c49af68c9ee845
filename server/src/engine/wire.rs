//! The wire types: what a result looks like when it leaves the server.
//!
//! DataFusion scans Parquet into view types (`Utf8View`, `BinaryView`) and
//! may produce dictionaries. Many Flight SQL clients (the JDBC driver,
//! flightsql-dbapi) cannot read those, so by default a result is cast to the
//! plain equivalent on top of its physical plan: the schema a client is promised is the
//! schema it receives, field for field.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, FieldRef, Fields, Schema, SchemaRef};
use datafusion::error::DataFusionError;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::{Column as PhysicalColumn, cast};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::projection::ProjectionExec;

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

    /// Puts a projection that casts every column to its wire type on top of
    /// the optimized physical plan. Returns the plan unchanged when nothing
    /// needs a cast.
    ///
    /// The cast is added after optimization, never to the logical plan: the
    /// optimizer does not know that a cast from a view type keeps the order,
    /// so under a logical cast an `ORDER BY` result lost its ordering
    /// requirement and could be split into partitions and merged again in
    /// any order of batches.
    pub fn cast_physical(
        self,
        plan: Arc<dyn ExecutionPlan>,
    ) -> EngineResult<Arc<dyn ExecutionPlan>> {
        let schema = plan.schema();
        let needs_cast = schema
            .fields()
            .iter()
            .any(|f| &self.wire_type(f.data_type()) != f.data_type());
        if !needs_cast {
            return Ok(plan);
        }
        let failed = |e: DataFusionError| {
            EngineError::Internal(format!("casting the result to wire types: {e}"))
        };
        let exprs = schema
            .fields()
            .iter()
            .enumerate()
            .map(|(index, field)| {
                let column: Arc<dyn PhysicalExpr> =
                    Arc::new(PhysicalColumn::new(field.name(), index));
                let wire = self.wire_type(field.data_type());
                let expr = match &wire == field.data_type() {
                    true => column,
                    false => cast(column, &schema, wire).map_err(failed)?,
                };
                Ok((expr, field.name().clone()))
            })
            .collect::<EngineResult<Vec<_>>>()?;
        let projection =
            ProjectionExec::try_new_with_schema_metadata(exprs, plan, &self.wire_schema(&schema))
                .map_err(failed)?;
        Ok(Arc::new(projection))
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

    /// An ordered result stays one ordered stream: the cast must not let the
    /// optimizer split it into partitions that are merged in any order.
    #[tokio::test]
    async fn the_cast_keeps_an_ordered_result_in_one_partition() {
        use arrow::array::{Int64Array, StringViewArray};
        use datafusion::datasource::MemTable;
        use datafusion::physical_plan::ExecutionPlanProperties;
        use datafusion::prelude::{SessionConfig, SessionContext};

        let schema = Arc::new(Schema::new(vec![
            Field::new("s", DataType::Utf8View, false),
            Field::new("n", DataType::Int64, false),
        ]));
        let part = |from: i64| {
            let n: Vec<i64> = (from..from + 500).collect();
            let s: Vec<String> = n
                .iter()
                .map(|n| format!("{:04}", (n * 7919) % 1000))
                .collect();
            vec![
                arrow::array::RecordBatch::try_new(
                    Arc::clone(&schema),
                    vec![
                        Arc::new(StringViewArray::from_iter_values(s)),
                        Arc::new(Int64Array::from(n)),
                    ],
                )
                .unwrap(),
            ]
        };
        let table = MemTable::try_new(Arc::clone(&schema), vec![part(0), part(500)]).unwrap();
        let config = SessionConfig::new()
            .with_target_partitions(2)
            .with_batch_size(16);
        let ctx = SessionContext::new_with_config(config);
        ctx.register_table("t", Arc::new(table)).unwrap();
        let plan = ctx
            .sql("SELECT s, n FROM t ORDER BY s, n")
            .await
            .unwrap()
            .create_physical_plan()
            .await
            .unwrap();
        let wired = WireTypes::Plain.cast_physical(plan).unwrap();
        assert_eq!(wired.output_partitioning().partition_count(), 1);
        assert_eq!(wired.schema().field(0).data_type(), &DataType::Utf8);
        let batches = datafusion::physical_plan::collect(wired, ctx.task_ctx())
            .await
            .unwrap();
        let rows: Vec<(String, i64)> = batches
            .iter()
            .flat_map(|b| {
                let s = b
                    .column(0)
                    .as_any()
                    .downcast_ref::<arrow::array::StringArray>()
                    .unwrap();
                let n = b.column(1).as_any().downcast_ref::<Int64Array>().unwrap();
                (0..b.num_rows())
                    .map(|i| (s.value(i).to_string(), n.value(i)))
                    .collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(rows.len(), 1000);
        assert!(
            rows.windows(2).all(|w| w[0] <= w[1]),
            "the result left its order"
        );
    }
}
