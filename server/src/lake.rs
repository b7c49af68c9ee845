//! The lake: finding tables in a folder and registering them with the engine.
//!
//! Every Parquet, CSV or JSON file directly under the root is a table named
//! after the file (without extension); every folder that holds such files is a
//! table named after the folder. Inside a folder, `key=value/` directories
//! are Hive partitions: each key becomes a typed column (integer, date or
//! string, inferred from the values), and filters on it prune whole folders.
//! A folder with a `_delta_log/` is a Delta Lake table: only the files its
//! newest commit lists are read (see [`crate::delta`]).

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arrow::datatypes::DataType;
use datafusion::datasource::file_format::options::JsonReadOptions;
use datafusion::prelude::{CsvReadOptions, ParquetReadOptions, SessionContext};
use futures::TryStreamExt;
use object_store::ObjectMeta;
use object_store::path::Path as ObjectPath;

use crate::storage::Store;

/// The file formats Tarn reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum FileFormat {
    /// Apache Parquet (`.parquet`).
    Parquet,
    /// Comma-separated values with a header row (`.csv`).
    Csv,
    /// Newline-delimited JSON (`.json`, `.jsonl`, `.ndjson`).
    Json,
    /// A Delta Lake table (a folder with a `_delta_log/`).
    Delta,
}

impl FileFormat {
    /// The format a file name's extension says, if any.
    pub fn of(path: &Path) -> Option<(FileFormat, &'static str)> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "parquet" => Some((FileFormat::Parquet, ".parquet")),
            "csv" => Some((FileFormat::Csv, ".csv")),
            "json" => Some((FileFormat::Json, ".json")),
            "jsonl" => Some((FileFormat::Json, ".jsonl")),
            "ndjson" => Some((FileFormat::Json, ".ndjson")),
            _ => None,
        }
    }
}

impl fmt::Display for FileFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FileFormat::Parquet => "parquet",
            FileFormat::Csv => "csv",
            FileFormat::Json => "json",
            FileFormat::Delta => "delta",
        })
    }
}

/// A table found in the lake.
#[derive(Debug, Clone, PartialEq)]
pub struct LakeTable {
    /// The table name (the file stem or folder name).
    pub name: String,
    /// The store it was found in.
    pub store: String,
    /// The URL of the file or folder (folders end in `/`).
    pub location: String,
    /// The format of its files.
    pub format: FileFormat,
    /// The extension its files end with (".parquet", ".jsonl", ...).
    pub extension: &'static str,
    /// Hive partition columns, outermost first, with their inferred types.
    pub partitions: Vec<(String, DataType)>,
}

/// Why a part of the lake could not become a table. Discovery reports these
/// and goes on: one bad folder never hides the rest of the lake.
#[derive(Debug, thiserror::Error)]
pub enum LakeError {
    /// The store cannot be listed (missing folder or bucket, no access, unreachable).
    #[error("cannot list store '{store}' at {url}: {message}")]
    Store {
        /// Store name.
        store: String,
        /// Its URL.
        url: String,
        /// The cause.
        message: String,
    },
    /// A folder mixes formats, or partition keys differ between folders.
    #[error("skipping {location}: {reason}")]
    Inconsistent {
        /// The folder.
        location: String,
        /// What is wrong, and how to fix it.
        reason: String,
    },
    /// A folder holds Delta tables deeper down, not at its top.
    #[error(
        "skipping {location}: it holds Delta tables below the top of the store ({}); serve each with CREATE EXTERNAL TABLE name STORED AS DELTA LOCATION '...'",
        tables.join(", ")
    )]
    NestedDelta {
        /// The folder.
        location: String,
        /// The folders of the Delta tables inside it.
        tables: Vec<String>,
    },
    /// Two entries would get the same table name.
    #[error(
        "skipping {location}: a table named '{name}' already exists (from {existing}); rename one of them"
    )]
    DuplicateName {
        /// The table name.
        name: String,
        /// The entry that was skipped.
        location: String,
        /// The entry that was kept.
        existing: String,
    },
    /// DataFusion could not read the table (unreadable or corrupt file).
    #[error("skipping table '{name}' at {location}: {message}")]
    Register {
        /// The table name.
        name: String,
        /// The file or folder.
        location: String,
        /// The cause.
        message: String,
    },
}

/// The smallest Parquet file: magic, footer length, magic.
const MIN_PARQUET_SIZE: u64 = 12;

/// Finds the tables of `store`. Problems with single entries are returned
/// beside the tables, not instead of them.
pub async fn discover(store: &Store) -> Result<(Vec<LakeTable>, Vec<LakeError>), LakeError> {
    let store_error = |e: object_store::Error| LakeError::Store {
        store: store.name.clone(),
        url: store.display_url(),
        message: e.to_string(),
    };
    let listing = store
        .object_store
        .list_with_delimiter(Some(&store.prefix))
        .await
        .map_err(store_error)?;
    let empty = listing.objects.is_empty() && listing.common_prefixes.is_empty();
    if empty && store.local_path.as_ref().is_some_and(|p| !p.is_dir()) {
        return Err(LakeError::Store {
            store: store.name.clone(),
            url: store.display_url(),
            message: "the folder does not exist; pass an existing folder with --lake".into(),
        });
    }

    let mut found = Vec::new();
    for object in &listing.objects {
        let Some(table) = file_table(store, &object.location) else {
            continue;
        };
        // Too short to be Parquet (an empty file): reported as a folder's
        // corrupt file is, not served as a table without columns.
        if table.format == FileFormat::Parquet && object.size < MIN_PARQUET_SIZE {
            let root = &store.root_url[..url::Position::BeforePath];
            let checked = [(Arc::clone(&store.object_store), object.clone())];
            let named = crate::footers::describe_corrupt(
                crate::footers::corrupt_files(root, checked).await,
            );
            found.push(Err(LakeError::Register {
                name: table.name,
                location: table.location,
                message: named.unwrap_or_else(|| "the file is too short to be Parquet".into()),
            }));
            continue;
        }
        found.push(Ok(table));
    }
    for folder in &listing.common_prefixes {
        let Some(name) = folder.filename().filter(|n| !is_hidden(n)) else {
            continue;
        };
        let objects: Vec<ObjectMeta> =
            match store.object_store.list(Some(folder)).try_collect().await {
                Ok(objects) => objects,
                Err(e) => {
                    found.push(Err(store_error(e)));
                    continue;
                }
            };
        match folder_table(store, name, folder, &objects) {
            Ok(Some(table)) => found.push(Ok(table)),
            Ok(None) => {}
            Err(problem) => found.push(Err(problem)),
        }
    }

    let mut tables: BTreeMap<String, LakeTable> = BTreeMap::new();
    let mut problems = Vec::new();
    for entry in found {
        match entry {
            Ok(table) => match tables.get(&table.name) {
                Some(existing) => problems.push(LakeError::DuplicateName {
                    name: table.name.clone(),
                    location: table.location.clone(),
                    existing: existing.location.clone(),
                }),
                None => {
                    tables.insert(table.name.clone(), table);
                }
            },
            Err(problem) => problems.push(problem),
        }
    }
    Ok((tables.into_values().collect(), problems))
}

/// Discovers every table of every store and registers it with `ctx`.
/// Returns the tables registered and the problems met (each skipped, none
/// fatal: an unreachable store leaves the others served).
///
/// Delta tables serve a snapshot that is renewed at most `freshness` after
/// another writer commits.
pub async fn load(
    ctx: &SessionContext,
    stores: &[Store],
    freshness: Duration,
) -> (Vec<LakeTable>, Vec<LakeError>) {
    let mut loaded = Vec::new();
    let mut problems = Vec::new();
    for store in stores {
        let tables = match discover(store).await {
            Ok((tables, mut found)) => {
                problems.append(&mut found);
                tables
            }
            Err(problem) => {
                problems.push(problem);
                continue;
            }
        };
        for table in &tables {
            if loaded.iter().any(|t: &LakeTable| t.name == table.name) {
                problems.push(LakeError::DuplicateName {
                    name: table.name.clone(),
                    location: table.location.clone(),
                    existing: "another store".into(),
                });
                continue;
            }
            match register(ctx, table, freshness).await {
                Ok(()) => loaded.push(table.clone()),
                Err(problem) => problems.push(problem),
            }
        }
    }
    (loaded, problems)
}

/// Registers `table` with the session, reading its schema from its files.
///
/// Runs as its own task: a Parquet reader that panics on a corrupt file
/// skips this table instead of taking the server down.
pub async fn register(
    ctx: &SessionContext,
    table: &LakeTable,
    freshness: Duration,
) -> Result<(), LakeError> {
    let (task_ctx, owned) = (ctx.clone(), table.clone());
    let result =
        match tokio::spawn(async move { register_now(&task_ctx, &owned, freshness).await }).await {
            Ok(result) => result,
            Err(e) => Err(LakeError::Register {
                name: table.name.clone(),
                location: table.location.clone(),
                message: format!(
                    "reading its files failed: {}; one of them is probably corrupt",
                    crate::runtime::TaskFailure::from(e)
                ),
            }),
        };
    match result {
        Err(LakeError::Register { message, .. }) if table.format == FileFormat::Parquet => {
            Err(LakeError::Register {
                name: table.name.clone(),
                location: table.location.clone(),
                message: name_corrupt_files(ctx, table).await.unwrap_or(message),
            })
        }
        other => other,
    }
}

/// Why the Parquet files of `table` cannot be one table, naming the files:
/// unreadable footers, or columns whose type differs between files. `None`
/// when neither explains the failure.
async fn name_corrupt_files(ctx: &SessionContext, table: &LakeTable) -> Option<String> {
    let url = url::Url::parse(&table.location).ok()?;
    let store = crate::delta::root_store(&ctx.runtime_env(), &url).ok()?;
    let prefix = match url.to_file_path() {
        Ok(path) => ObjectPath::from_filesystem_path(path).ok()?,
        Err(()) => ObjectPath::parse(url.path().trim_matches('/')).ok()?,
    };
    let objects: Vec<ObjectMeta> = store.list(Some(&prefix)).try_collect().await.ok()?;
    let files: Vec<(Arc<dyn object_store::ObjectStore>, ObjectMeta)> = objects
        .into_iter()
        .filter(|o| o.location.as_ref().ends_with(table.extension))
        .map(|o| (Arc::clone(&store), o))
        .collect();
    let root = &url[..url::Position::BeforePath];
    match crate::footers::describe_corrupt(crate::footers::corrupt_files(root, files.clone()).await)
    {
        Some(corrupt) => Some(corrupt),
        None => crate::footers::schema_conflicts(root, files).await,
    }
}

async fn register_now(
    ctx: &SessionContext,
    table: &LakeTable,
    freshness: Duration,
) -> Result<(), LakeError> {
    let location = table.location.as_str();
    let partitions = table.partitions.clone();
    let result = match table.format {
        FileFormat::Delta => register_delta(ctx, table, freshness).await,
        FileFormat::Parquet => {
            let options = ParquetReadOptions::default()
                .file_extension(table.extension)
                .table_partition_cols(partitions);
            ctx.register_parquet(&table.name, location, options).await
        }
        FileFormat::Csv => {
            let options = CsvReadOptions::new()
                .has_header(true)
                .file_extension(table.extension)
                .table_partition_cols(partitions);
            ctx.register_csv(&table.name, location, options).await
        }
        FileFormat::Json => {
            let options = JsonReadOptions {
                file_extension: table.extension,
                table_partition_cols: partitions,
                ..Default::default()
            };
            ctx.register_json(&table.name, location, options).await
        }
    };
    result.map_err(|e| LakeError::Register {
        name: table.name.clone(),
        location: table.location.clone(),
        message: e.strip_backtrace(),
    })
}

async fn register_delta(
    ctx: &SessionContext,
    table: &LakeTable,
    freshness: Duration,
) -> datafusion::error::Result<()> {
    let url = url::Url::parse(&table.location)
        .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?;
    let root = crate::delta::root_store(&ctx.runtime_env(), &url)?;
    let delta = crate::delta::DeltaLakeTable::open(root, url, freshness)
        .await
        .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?;
    ctx.register_table(table.name.as_str(), Arc::new(delta))
        .map(|_| ())
}

fn is_hidden(name: &str) -> bool {
    name.starts_with('.') || name.starts_with('_')
}

fn file_table(store: &Store, path: &ObjectPath) -> Option<LakeTable> {
    let file = path.filename()?;
    if is_hidden(file) {
        return None;
    }
    let (format, extension) = FileFormat::of(Path::new(file))?;
    let name = Path::new(file).file_stem()?.to_str()?.to_string();
    Some(LakeTable {
        name,
        store: store.name.clone(),
        location: store.url_of(path),
        format,
        extension,
        partitions: Vec::new(),
    })
}

/// A folder is a table when it holds data files (at any depth).
fn folder_table(
    store: &Store,
    name: &str,
    folder: &ObjectPath,
    objects: &[ObjectMeta],
) -> Result<Option<LakeTable>, LakeError> {
    if let Some(table) = delta_table(store, name, folder, objects)? {
        return Ok(Some(table));
    }
    let relative = |object: &ObjectMeta| -> Option<Vec<String>> {
        Some(
            object
                .location
                .prefix_match(folder)?
                .map(|p| p.as_ref().to_string())
                .collect(),
        )
    };
    // Delta tables deeper down: their files are not plain files of this table.
    let mut nested_delta: Vec<Vec<String>> = objects
        .iter()
        .filter_map(|object| {
            let parts = relative(object)?;
            let log = parts.iter().position(|p| p == crate::delta::LOG_FOLDER)?;
            Some(parts[..log].to_vec())
        })
        .collect();
    nested_delta.sort();
    nested_delta.dedup();
    // Paths below the folder, without hidden parts (temporary files, _delta_log, ...).
    let files: Vec<(Vec<String>, (FileFormat, &'static str))> = objects
        .iter()
        .filter_map(|object| {
            let parts = relative(object)?;
            if parts.iter().any(|p| is_hidden(p))
                || nested_delta.iter().any(|root| parts.starts_with(root))
            {
                return None;
            }
            let format = FileFormat::of(Path::new(parts.last()?))?;
            Some((parts, format))
        })
        .collect();
    let location = format!("{}/", store.url_of(folder));
    if files.is_empty() {
        if nested_delta.is_empty() {
            return Ok(None);
        }
        let tables: Vec<String> = nested_delta
            .iter()
            .map(|root| format!("{location}{}/", root.join("/")))
            .collect();
        return Err(LakeError::NestedDelta { location, tables });
    }
    let inconsistent = |reason: String| LakeError::Inconsistent {
        location: location.clone(),
        reason,
    };

    let mut formats: Vec<(FileFormat, &'static str)> = files.iter().map(|(_, f)| *f).collect();
    formats.sort();
    formats.dedup();
    let (format, extension) = match formats.as_slice() {
        [one] => *one,
        _ => {
            let names: Vec<&str> = formats.iter().map(|(_, e)| *e).collect();
            return Err(inconsistent(format!(
                "it mixes file types ({}); keep one format per table folder",
                names.join(", ")
            )));
        }
    };

    // Partition keys, in order, must be the same on every path.
    let mut keys: Option<Vec<String>> = None;
    let mut values: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (parts, _) in &files {
        let pairs: Vec<(String, String)> = parts[..parts.len() - 1]
            .iter()
            .filter_map(|p| {
                p.split_once('=')
                    .map(|(k, v)| (k.to_string(), v.to_string()))
            })
            .collect();
        let these: Vec<String> = pairs.iter().map(|(k, _)| k.clone()).collect();
        match &keys {
            None => keys = Some(these),
            Some(expected) if *expected != these => {
                return Err(inconsistent(format!(
                    "partition folders disagree: {} has keys [{}] where others have [{}]",
                    parts.join("/"),
                    these.join(", "),
                    expected.join(", ")
                )));
            }
            Some(_) => {}
        }
        for (k, v) in pairs {
            values.entry(k).or_default().push(v);
        }
    }
    let partitions = keys
        .unwrap_or_default()
        .into_iter()
        .map(|key| {
            let data_type = infer_partition_type(values.get(&key).map_or(&[][..], |v| v));
            (key, data_type)
        })
        .collect();
    Ok(Some(LakeTable {
        name: name.to_string(),
        store: store.name.clone(),
        location,
        format,
        extension,
        partitions,
    }))
}

/// A folder with a `_delta_log/` is a Delta table once it has a commit; until
/// then (an unfinished or interrupted create) it is reported, never read as
/// plain files.
fn delta_table(
    store: &Store,
    name: &str,
    folder: &ObjectPath,
    objects: &[ObjectMeta],
) -> Result<Option<LakeTable>, LakeError> {
    let log_entries: Vec<String> = objects
        .iter()
        .filter_map(|object| {
            let mut parts = object.location.prefix_match(folder)?;
            (parts.next()?.as_ref() == crate::delta::LOG_FOLDER)
                .then(|| parts.last().map(|p| p.as_ref().to_string()))?
        })
        .collect();
    if log_entries.is_empty() {
        return Ok(None);
    }
    let location = format!("{}/", store.url_of(folder));
    if !log_entries.iter().any(|entry| is_delta_commit(entry)) {
        return Err(LakeError::Inconsistent {
            location,
            reason: "it is a Delta table without any committed version (an interrupted CREATE TABLE leaves this); delete the folder or create the table again".into(),
        });
    }
    Ok(Some(LakeTable {
        name: name.to_string(),
        store: store.name.clone(),
        location,
        format: FileFormat::Delta,
        extension: "",
        partitions: Vec::new(),
    }))
}

/// `00000000000000000003.json` or a checkpoint of a version.
fn is_delta_commit(file: &str) -> bool {
    let version = file.split('.').next().unwrap_or_default();
    version.len() == 20
        && version.bytes().all(|b| b.is_ascii_digit())
        && (file.ends_with(".json") || file.ends_with(".parquet"))
}

/// Integers become `Int64`, ISO dates `Date32`, anything else `Utf8`.
fn infer_partition_type(values: &[String]) -> DataType {
    let present: Vec<&String> = values
        .iter()
        .filter(|v| v.as_str() != "__HIVE_DEFAULT_PARTITION__")
        .collect();
    if present.is_empty() {
        return DataType::Utf8;
    }
    if present.iter().all(|v| v.parse::<i64>().is_ok()) {
        DataType::Int64
    } else if present.iter().all(|v| is_iso_date(v)) {
        DataType::Date32
    } else {
        DataType::Utf8
    }
}

/// A real calendar date written `YYYY-MM-DD` (`2024-13-45` is not one: typed
/// as a date, it would fail every query of the table).
fn is_iso_date(value: &str) -> bool {
    value.len() == 10 && chrono::NaiveDate::parse_from_str(value, "%Y-%m-%d").is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_types_are_inferred_from_values() {
        let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(infer_partition_type(&s(&["2023", "2024"])), DataType::Int64);
        assert_eq!(infer_partition_type(&s(&["2024-01-31"])), DataType::Date32);
        assert_eq!(
            infer_partition_type(&s(&["2024-01-31", "2024-13-45"])),
            DataType::Utf8,
            "not a date: typed as a date, every query would fail"
        );
        assert_eq!(infer_partition_type(&s(&["2024-02-30"])), DataType::Utf8);
        assert_eq!(infer_partition_type(&s(&["EU", "2024"])), DataType::Utf8);
    }

    #[tokio::test]
    async fn files_folders_and_partitions_become_tables() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::write(root.join("a.csv"), "x\n1\n").unwrap();
        std::fs::create_dir_all(root.join("b/year=2024/region=EU")).unwrap();
        std::fs::write(root.join("b/year=2024/region=EU/part.json"), "{}\n").unwrap();
        std::fs::create_dir_all(root.join("configs")).unwrap();
        std::fs::write(root.join("configs/s3.toml"), "").unwrap();
        std::fs::create_dir_all(root.join("mixed")).unwrap();
        std::fs::write(root.join("mixed/1.csv"), "").unwrap();
        std::fs::write(root.join("mixed/2.json"), "").unwrap();
        std::fs::write(root.join(".hidden.parquet.tmp"), "").unwrap();

        let config = crate::storage::StoreConfig {
            url: root.display().to_string(),
            ..Default::default()
        };
        let store = Store::open_alone("lake", &config).unwrap();
        let (tables, problems) = discover(&store).await.unwrap();
        let names: Vec<&str> = tables.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(
            tables[1].partitions,
            vec![
                ("year".into(), DataType::Int64),
                ("region".into(), DataType::Utf8)
            ]
        );
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].to_string().contains("mixes file types"));
    }

    #[tokio::test]
    async fn a_truncated_file_is_named_when_its_table_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let table = dir.path().join("t");
        std::fs::create_dir_all(&table).unwrap();
        std::fs::write(table.join("good.parquet"), parquet_bytes()).unwrap();
        std::fs::write(table.join("cut.parquet"), &parquet_bytes()[..100]).unwrap();
        let config = crate::storage::StoreConfig {
            url: dir.path().display().to_string(),
            ..Default::default()
        };
        let store = Store::open_alone("lake", &config).unwrap();
        let ctx = SessionContext::new();
        let (loaded, problems) = load(&ctx, &[store], Duration::from_secs(1)).await;
        assert!(loaded.is_empty());
        let message = problems[0].to_string();
        assert!(
            message.contains("corrupt Parquet file") && message.contains("t/cut.parquet"),
            "{message}"
        );
        assert!(!message.contains("good.parquet"), "{message}");
    }

    #[tokio::test]
    async fn files_that_disagree_on_a_column_type_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let table = dir.path().join("events");
        std::fs::create_dir_all(&table).unwrap();
        std::fs::write(table.join("part-1.parquet"), parquet_bytes()).unwrap();
        let text = arrow::array::RecordBatch::try_from_iter([(
            "x",
            Arc::new(arrow::array::StringArray::from(vec!["one"])) as arrow::array::ArrayRef,
        )])
        .unwrap();
        let mut bytes = Vec::new();
        let mut writer =
            parquet::arrow::ArrowWriter::try_new(&mut bytes, text.schema(), None).unwrap();
        writer.write(&text).unwrap();
        writer.close().unwrap();
        std::fs::write(table.join("part-2.parquet"), bytes).unwrap();
        let config = crate::storage::StoreConfig {
            url: dir.path().display().to_string(),
            ..Default::default()
        };
        let store = Store::open_alone("lake", &config).unwrap();
        let (loaded, problems) =
            load(&SessionContext::new(), &[store], Duration::from_secs(1)).await;
        assert!(
            loaded.is_empty(),
            "a table is never read with the wrong types"
        );
        let message = problems[0].to_string();
        assert!(
            message.contains("column 'x' is Int64 in")
                && message.contains("events/part-1.parquet but Utf8 in")
                && message.contains("events/part-2.parquet"),
            "{message}"
        );
    }

    fn parquet_bytes() -> Vec<u8> {
        let batch = arrow::array::RecordBatch::try_from_iter([(
            "x",
            Arc::new(arrow::array::Int64Array::from(vec![1, 2, 3])) as arrow::array::ArrayRef,
        )])
        .unwrap();
        let mut bytes = Vec::new();
        let mut writer =
            parquet::arrow::ArrowWriter::try_new(&mut bytes, batch.schema(), None).unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
        bytes
    }
}
