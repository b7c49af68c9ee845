//! The lake: finding tables in a folder and registering them with the engine.
//!
//! Every Parquet, CSV or JSON file directly under the root is a table named
//! after the file (without extension); every folder that holds such files is a
//! table named after the folder. Inside a folder, `key=value/` directories
//! are Hive partitions: each key becomes a typed column (integer, date or
//! string, inferred from the values), and filters on it prune whole folders.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use arrow::datatypes::DataType;
use datafusion::datasource::file_format::options::JsonReadOptions;
use datafusion::prelude::{CsvReadOptions, ParquetReadOptions, SessionContext};

/// The file formats Tarn reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum FileFormat {
    /// Apache Parquet (`.parquet`).
    Parquet,
    /// Comma-separated values with a header row (`.csv`).
    Csv,
    /// Newline-delimited JSON (`.json`, `.jsonl`, `.ndjson`).
    Json,
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
        })
    }
}

/// A table found in the lake.
#[derive(Debug, Clone, PartialEq)]
pub struct LakeTable {
    /// The table name (the file stem or folder name).
    pub name: String,
    /// The file or folder.
    pub path: PathBuf,
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
    /// The lake root is missing or unreadable.
    #[error("cannot read the lake folder {path}: {source}; pass an existing folder with --lake")]
    Root {
        /// The root.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A folder mixes formats, or partition keys differ between folders.
    #[error("skipping {path}: {reason}")]
    Inconsistent {
        /// The file or folder.
        path: PathBuf,
        /// What is wrong, and how to fix it.
        reason: String,
    },
    /// Two entries would get the same table name.
    #[error(
        "skipping {path}: a table named '{name}' already exists (from {existing}); rename one of them"
    )]
    DuplicateName {
        /// The table name.
        name: String,
        /// The entry that was skipped.
        path: PathBuf,
        /// The entry that was kept.
        existing: PathBuf,
    },
    /// DataFusion could not read the table (unreadable or corrupt file).
    #[error("skipping table '{name}' at {path}: {message}")]
    Register {
        /// The table name.
        name: String,
        /// The file or folder.
        path: PathBuf,
        /// The cause.
        message: String,
    },
}

/// Finds the tables under `root`. Problems with single entries are returned
/// beside the tables, not instead of them.
pub fn discover(root: &Path) -> Result<(Vec<LakeTable>, Vec<LakeError>), LakeError> {
    let entries = std::fs::read_dir(root).map_err(|source| LakeError::Root {
        path: root.to_path_buf(),
        source,
    })?;
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();

    let mut tables: BTreeMap<String, LakeTable> = BTreeMap::new();
    let mut problems = Vec::new();
    for path in paths {
        if is_hidden(&path) {
            continue;
        }
        let found = if path.is_dir() {
            folder_table(&path)
        } else {
            Ok(file_table(&path))
        };
        match found {
            Ok(Some(table)) => {
                if let Some(existing) = tables.get(&table.name) {
                    problems.push(LakeError::DuplicateName {
                        name: table.name.clone(),
                        path: table.path.clone(),
                        existing: existing.path.clone(),
                    });
                } else {
                    tables.insert(table.name.clone(), table);
                }
            }
            Ok(None) => {}
            Err(problem) => problems.push(problem),
        }
    }
    Ok((tables.into_values().collect(), problems))
}

/// Discovers every table under `root` and registers it with `ctx`. Returns
/// the names registered and the problems met (each skipped, none fatal).
pub async fn load(
    ctx: &SessionContext,
    root: &Path,
) -> Result<(Vec<String>, Vec<LakeError>), LakeError> {
    let (tables, mut problems) = discover(root)?;
    let mut loaded = Vec::with_capacity(tables.len());
    for table in &tables {
        match register(ctx, table).await {
            Ok(()) => loaded.push(table.name.clone()),
            Err(problem) => problems.push(problem),
        }
    }
    Ok((loaded, problems))
}

/// Registers `table` with the session, reading its schema from its files.
pub async fn register(ctx: &SessionContext, table: &LakeTable) -> Result<(), LakeError> {
    let location = table.path.to_string_lossy().to_string();
    let partitions = table.partitions.clone();
    let result = match table.format {
        FileFormat::Parquet => {
            let options = ParquetReadOptions::default()
                .file_extension(table.extension)
                .table_partition_cols(partitions);
            ctx.register_parquet(&table.name, &location, options).await
        }
        FileFormat::Csv => {
            let options = CsvReadOptions::new()
                .has_header(true)
                .file_extension(table.extension)
                .table_partition_cols(partitions);
            ctx.register_csv(&table.name, &location, options).await
        }
        FileFormat::Json => {
            let options = JsonReadOptions {
                file_extension: table.extension,
                table_partition_cols: partitions,
                ..Default::default()
            };
            ctx.register_json(&table.name, &location, options).await
        }
    };
    result.map_err(|e| LakeError::Register {
        name: table.name.clone(),
        path: table.path.clone(),
        message: e.strip_backtrace(),
    })
}

fn is_hidden(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_none_or(|n| n.starts_with('.') || n.starts_with('_'))
}

fn file_table(path: &Path) -> Option<LakeTable> {
    let (format, extension) = FileFormat::of(path)?;
    let name = path.file_stem()?.to_str()?.to_string();
    Some(LakeTable {
        name,
        path: path.to_path_buf(),
        format,
        extension,
        partitions: Vec::new(),
    })
}

/// A folder is a table when it holds data files (at any depth).
fn folder_table(dir: &Path) -> Result<Option<LakeTable>, LakeError> {
    let Some(name) = dir.file_name().and_then(|n| n.to_str()) else {
        return Ok(None);
    };
    let mut files = Vec::new();
    collect_data_files(dir, dir, &mut files);
    if files.is_empty() {
        return Ok(None);
    }
    let inconsistent = |reason: String| LakeError::Inconsistent {
        path: dir.to_path_buf(),
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
    for (relative, _) in &files {
        let pairs = partition_pairs(relative);
        let these: Vec<String> = pairs.iter().map(|(k, _)| k.clone()).collect();
        match &keys {
            None => keys = Some(these),
            Some(expected) if *expected != these => {
                return Err(inconsistent(format!(
                    "partition folders disagree: {} has keys [{}] where others have [{}]",
                    relative.display(),
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
        path: dir.to_path_buf(),
        format,
        extension,
        partitions,
    }))
}

fn collect_data_files(
    root: &Path,
    dir: &Path,
    out: &mut Vec<(PathBuf, (FileFormat, &'static str))>,
) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if is_hidden(&path) {
            continue;
        }
        if path.is_dir() {
            collect_data_files(root, &path, out);
        } else if let Some(format) = FileFormat::of(&path) {
            let relative = path.strip_prefix(root).unwrap_or(&path).to_path_buf();
            out.push((relative, format));
        }
    }
}

/// The `key=value` folders on a file's path below the table folder.
fn partition_pairs(relative: &Path) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    if let Some(parent) = relative.parent() {
        for part in parent.components() {
            if let Some((k, v)) = part.as_os_str().to_str().and_then(|s| s.split_once('=')) {
                pairs.push((k.to_string(), v.to_string()));
            }
        }
    }
    pairs
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

fn is_iso_date(value: &str) -> bool {
    let parts: Vec<&str> = value.split('-').collect();
    matches!(parts.as_slice(), [y, m, d]
        if y.len() == 4 && m.len() == 2 && d.len() == 2
        && [y, m, d].iter().all(|p| p.chars().all(|c| c.is_ascii_digit())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_types_are_inferred_from_values() {
        let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(infer_partition_type(&s(&["2023", "2024"])), DataType::Int64);
        assert_eq!(infer_partition_type(&s(&["2024-01-31"])), DataType::Date32);
        assert_eq!(infer_partition_type(&s(&["EU", "2024"])), DataType::Utf8);
    }

    #[test]
    fn files_folders_and_partitions_become_tables() {
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

        let (tables, problems) = discover(root).unwrap();
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
}
