//! Finding the tables of a store by listing it: files and folders of
//! Parquet, CSV and JSON, typed Hive partitions, Delta tables. Nothing is
//! registered here.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use arrow::datatypes::DataType;
use futures::TryStreamExt;
use object_store::ObjectMeta;
use object_store::path::Path as ObjectPath;

use super::{FileFormat, LakeError, LakeTable};
use crate::storage::Store;

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
    use std::time::Duration;

    use datafusion::prelude::SessionContext;

    use super::*;
    use crate::lake::load;

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
