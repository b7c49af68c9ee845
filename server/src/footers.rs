//! Parquet footer checks: which files of a table are corrupt, by name.
//!
//! DataFusion reports a corrupt file without its name, and the parquet
//! crate's footer decoder panics on some bytes. When a table fails to load or
//! a query fails that way, these checks read each file's footer (two small
//! range reads) in its own task and name the files that do not decode.

use std::sync::Arc;

use object_store::path::Path as ObjectPath;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt};

/// At most this many files are checked after a failure.
const MAX_CHECKED: usize = 10_000;

/// The files among `files` whose footer does not decode, each as
/// `"<url> (<cause>)"`. `root` is the store's URL (`s3://bucket`, `file://`).
pub async fn corrupt_files(
    root: &str,
    files: impl IntoIterator<Item = (Arc<dyn ObjectStore>, ObjectMeta)>,
) -> Vec<String> {
    let mut corrupt = Vec::new();
    for (store, object) in files.into_iter().take(MAX_CHECKED) {
        let (path, size) = (object.location.clone(), object.size);
        let problem = match tokio::spawn(async move { read_footer(store, path, size).await }).await
        {
            Ok(Ok(())) => continue,
            Ok(Err(problem)) => problem,
            Err(_) => "its footer cannot be decoded".to_string(),
        };
        corrupt.push(format!(
            "{}/{} ({problem})",
            root.trim_end_matches('/'),
            object.location
        ));
    }
    corrupt
}

/// A sentence naming `corrupt` files, or `None` when there are none.
pub fn describe_corrupt(corrupt: Vec<String>) -> Option<String> {
    let one = corrupt.len() == 1;
    (!corrupt.is_empty()).then(|| {
        format!(
            "corrupt Parquet file{}: {}; replace or remove {}",
            if one { "" } else { "s" },
            corrupt.join(", "),
            if one { "it" } else { "them" }
        )
    })
}

/// Names the columns on which the Parquet `files` disagree, with the files
/// of each type: `None` when every file has the same type for every column
/// it has (files may add columns: that is schema evolution, not a conflict).
pub async fn schema_conflicts(
    root: &str,
    files: impl IntoIterator<Item = (Arc<dyn ObjectStore>, ObjectMeta)>,
) -> Option<String> {
    use std::collections::BTreeMap;
    // column -> type -> files
    let mut types: BTreeMap<String, BTreeMap<String, Vec<String>>> = BTreeMap::new();
    for (store, object) in files.into_iter().take(MAX_CHECKED) {
        let (path, size) = (object.location.clone(), object.size);
        let Ok(Ok(schema)) =
            tokio::spawn(async move { arrow_schema(store, path, size).await }).await
        else {
            continue;
        };
        let file = format!("{}/{}", root.trim_end_matches('/'), object.location);
        for field in schema.fields() {
            types
                .entry(field.name().clone())
                .or_default()
                .entry(field.data_type().to_string())
                .or_default()
                .push(file.clone());
        }
    }
    let conflicts: Vec<String> = types
        .into_iter()
        .filter(|(_, by_type)| by_type.len() > 1)
        .map(|(column, by_type)| {
            let sides: Vec<String> = by_type
                .into_iter()
                .map(|(data_type, files)| format!("{data_type} in {}", files.join(", ")))
                .collect();
            format!("column '{column}' is {}", sides.join(" but "))
        })
        .collect();
    (!conflicts.is_empty()).then(|| {
        format!(
            "its files disagree on column types: {}; rewrite or move the files that differ",
            conflicts.join("; ")
        )
    })
}

async fn arrow_schema(
    store: Arc<dyn ObjectStore>,
    path: ObjectPath,
    size: u64,
) -> Result<arrow::datatypes::Schema, String> {
    let metadata = decode_footer(store, path, size).await?;
    let file = metadata.file_metadata();
    parquet::arrow::parquet_to_arrow_schema(file.schema_descr(), file.key_value_metadata())
        .map_err(|e| e.to_string())
}

/// Reads and decodes the footer of one Parquet file.
async fn read_footer(
    store: Arc<dyn ObjectStore>,
    path: ObjectPath,
    size: u64,
) -> Result<(), String> {
    decode_footer(store, path, size).await.map(|_| ())
}

async fn decode_footer(
    store: Arc<dyn ObjectStore>,
    path: ObjectPath,
    size: u64,
) -> Result<parquet::file::metadata::ParquetMetaData, String> {
    if size < 12 {
        return Err(format!("{size} bytes is too short for a Parquet file"));
    }
    let tail = store
        .get_range(&path, size - 8..size)
        .await
        .map_err(|e| e.to_string())?;
    if &tail[4..] != b"PAR1" {
        return Err("no Parquet magic at the end: a truncated or non-Parquet file".into());
    }
    let length = u64::from(u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]));
    if length + 8 > size {
        return Err("its footer length points before the start of the file".into());
    }
    let footer = store
        .get_range(&path, size - 8 - length..size - 8)
        .await
        .map_err(|e| e.to_string())?;
    parquet::file::metadata::ParquetMetaDataReader::decode_metadata(&footer)
        .map_err(|e| e.to_string())
}
