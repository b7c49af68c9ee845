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

/// Reads and decodes the footer of one Parquet file.
async fn read_footer(
    store: Arc<dyn ObjectStore>,
    path: ObjectPath,
    size: u64,
) -> Result<(), String> {
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
        .map(|_| ())
        .map_err(|e| e.to_string())
}
