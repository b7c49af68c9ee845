//! Query answers as JSON rows, so that every runner's answers can be compared.

use arrow::array::RecordBatch;
use serde_json::Value;

/// The rows of `batches` as JSON objects (decimals and dates as strings).
pub fn rows(batches: &[RecordBatch]) -> Value {
    // Explicit nulls keep every row's keys, so rows compare column by column.
    let mut writer = arrow::json::WriterBuilder::new()
        .with_explicit_nulls(true)
        .build::<_, arrow::json::writer::JsonArray>(Vec::new());
    let refs: Vec<&RecordBatch> = batches.iter().collect();
    let written = writer.write_batches(&refs).and_then(|()| writer.finish());
    match written {
        Ok(()) => {
            let bytes = writer.into_inner();
            if bytes.is_empty() {
                Value::Array(vec![])
            } else {
                serde_json::from_slice(&bytes).unwrap_or(Value::Null)
            }
        }
        Err(e) => Value::String(format!("cannot encode answers: {e}")),
    }
}

/// Bytes of Arrow data in `batch` (the slices the batch covers, not capacity).
pub fn arrow_bytes(batch: &RecordBatch) -> usize {
    batch
        .columns()
        .iter()
        .map(|c| {
            c.to_data()
                .get_slice_memory_size()
                .unwrap_or_else(|_| c.get_array_memory_size())
        })
        .sum()
}
