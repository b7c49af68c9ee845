//! Creating, purging and cleaning up table folders: `CREATE TABLE` (with its
//! marker, so an unfinished table is never read as plain files), `DROP
//! TABLE ... PURGE`, and the files a killed write left behind.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use datafusion::execution::SessionState;
use datafusion::logical_expr::LogicalPlan;
use deltalake::DeltaTable;
use deltalake::operations::write::{SchemaMode, WriteBuilder};
use deltalake::protocol::SaveMode;
use futures::TryStreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use url::Url;

use super::commit::{BUSY_DEADLINE, retry_while_busy, with_tarn_settings, write_turn};
use super::log::{load, log_store, write_stats};
use super::{DeltaError, LOG_FOLDER, WriteStats};

/// Put under `_delta_log/` before a new table's first data file.
const CREATE_MARKER: &str = "_tarn_create_started";

/// What `CREATE TABLE` asks for.
#[derive(Debug, Clone)]
pub struct NewTable {
    /// The table folder.
    pub location: Url,
    /// Partition columns, outermost first.
    pub partition_by: Vec<String>,
    /// `OR REPLACE`: overwrite an existing table (a new version; older
    /// versions stay readable by time travel).
    pub replace: bool,
}

/// Creates the Delta table `new` from the rows of `input`; returns it with
/// the number of rows written.
pub async fn create(
    root: Arc<dyn ObjectStore>,
    new: &NewTable,
    session: Arc<SessionState>,
    input: LogicalPlan,
) -> Result<(DeltaTable, WriteStats), DeltaError> {
    let location = &new.location;
    let turn = write_turn(location);
    let _turn = turn.lock().await;
    if let Ok(folder) = location.to_file_path() {
        // deltalake resolves local table folders, so they must exist first.
        tokio::fs::create_dir_all(&folder)
            .await
            .map_err(|e| DeltaError::table(location, e))?;
    }
    let existing = existing_table(Arc::clone(&root), location).await?;
    match existing {
        Some(_) if !new.replace => {
            return Err(DeltaError::AlreadyExists {
                location: location.to_string(),
            });
        }
        None => mark_create_started(root.as_ref(), location).await?,
        Some(_) => {}
    }
    let log_store = log_store(Arc::clone(&root), location)?;
    let replace = existing.is_some();
    let table = retry_while_busy(location, BUSY_DEADLINE, || {
        let (log_store, session, input) =
            (Arc::clone(&log_store), Arc::clone(&session), input.clone());
        let partition_by = new.partition_by.clone();
        async move {
            let builder = if replace {
                // Over the newest version: a retry sees what others committed.
                let mut current = DeltaTable::new(Arc::clone(&log_store));
                current.load().await?;
                let snapshot = current.snapshot()?.snapshot().clone();
                WriteBuilder::new(log_store, Some(snapshot))
                    .with_save_mode(SaveMode::Overwrite)
                    .with_schema_mode(SchemaMode::Overwrite)
            } else {
                WriteBuilder::new(log_store, None).with_save_mode(SaveMode::ErrorIfExists)
            };
            let builder = if partition_by.is_empty() {
                builder
            } else {
                builder.with_partition_columns(partition_by)
            };
            with_tarn_settings(builder, input, session).await
        }
    })
    .await?;
    // The commit is what counts; a leftover marker is harmless.
    let _ = root.delete(&marker_path(location)).await;
    let stats = write_stats(&table).await;
    Ok((table, stats))
}

/// The table at `location`, if there is one; an error if the folder holds
/// other files.
async fn existing_table(
    root: Arc<dyn ObjectStore>,
    location: &Url,
) -> Result<Option<DeltaTable>, DeltaError> {
    let (log, data) = list_folder(root.as_ref(), location).await?;
    if log.is_empty() {
        return match data.is_empty() {
            true => Ok(None),
            false => Err(DeltaError::NotEmpty {
                location: location.to_string(),
            }),
        };
    }
    match load(root, location, None).await {
        Ok(table) => Ok(Some(table)),
        // An interrupted create: its files are unreferenced, start afresh.
        Err(DeltaError::NoCommit { .. }) => Ok(None),
        Err(err) => Err(err),
    }
}

async fn mark_create_started(root: &dyn ObjectStore, location: &Url) -> Result<(), DeltaError> {
    let note = format!("CREATE TABLE started at {}\n", Utc::now().to_rfc3339());
    root.put(&marker_path(location), PutPayload::from(note.into_bytes()))
        .await
        .map(|_| ())
        .map_err(|e| DeltaError::table(location, e))
}

fn marker_path(location: &Url) -> ObjectPath {
    let folder = object_path(location).unwrap_or_default();
    folder.join(LOG_FOLDER).join(CREATE_MARKER)
}

/// The path of `location` inside its bucket or file system.
pub(super) fn object_path(location: &Url) -> Result<ObjectPath, DeltaError> {
    if location.scheme() == "file" {
        let path = location
            .to_file_path()
            .map_err(|()| DeltaError::table(location, "not a local path"))?;
        return ObjectPath::from_filesystem_path(path).map_err(|e| DeltaError::table(location, e));
    }
    ObjectPath::parse(location.path().trim_matches('/')).map_err(|e| DeltaError::table(location, e))
}

/// The objects under the table folder `location`: those of its
/// `_delta_log/`, and the others.
pub(super) async fn list_folder(
    root: &dyn ObjectStore,
    location: &Url,
) -> Result<(Vec<object_store::ObjectMeta>, Vec<object_store::ObjectMeta>), DeltaError> {
    let folder = object_path(location)?;
    let objects: Vec<object_store::ObjectMeta> = root
        .list(Some(&folder))
        .try_collect()
        .await
        .map_err(|e| DeltaError::table(location, e))?;
    Ok(objects.into_iter().partition(|o| {
        o.location
            .prefix_match(&folder)
            .is_some_and(|mut p| p.next().is_some_and(|p| p.as_ref() == LOG_FOLDER))
    }))
}

/// Deletes every file of the table at `location`: data files first, the log
/// last, so an interrupted purge leaves a table that errors on the missing
/// files (and can be purged again), never a folder of stale plain files.
pub async fn purge(root: Arc<dyn ObjectStore>, location: &Url) -> Result<(), DeltaError> {
    let turn = write_turn(location);
    let _turn = turn.lock().await;
    let (log, data) = list_folder(root.as_ref(), location).await?;
    for object in data.iter().chain(log.iter()) {
        match root.delete(&object.location).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(DeltaError::table(location, e)),
        }
    }
    if let Ok(folder) = location.to_file_path() {
        // Local stores keep empty folders, which would still look like a table.
        match tokio::fs::remove_dir_all(&folder).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(DeltaError::table(location, e)),
        }
    }
    Ok(())
}

/// Removes what a write that began at `since` and never finished (its
/// process was killed) left in the table folder at `location`: data files
/// no commit references (complete ones, and the `name#n` staging files of
/// local writes), deltalake's temporary commit files, and Tarn's create
/// marker when no version was ever committed. Only files written at or
/// after `since` are candidates: everything older either is referenced or
/// was there before that write. Returns how many files were removed.
pub async fn remove_orphans(
    root: Arc<dyn ObjectStore>,
    location: &Url,
    since: DateTime<Utc>,
) -> Result<usize, DeltaError> {
    let turn = write_turn(location);
    let _turn = turn.lock().await;
    let folder = object_path(location)?;
    let (log, data) = list_folder(root.as_ref(), location).await?;
    let relative = |object: &object_store::ObjectMeta| -> String {
        object
            .location
            .prefix_match(&folder)
            .map(|parts| {
                parts
                    .map(|p| p.as_ref().to_string())
                    .collect::<Vec<_>>()
                    .join("/")
            })
            .unwrap_or_default()
    };
    let is_commit = |object: &object_store::ObjectMeta| {
        object.location.filename().is_some_and(|name| {
            name.strip_suffix(".json")
                .is_some_and(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
        })
    };
    // A file a write adds appears in a commit written after the file.
    let mut referenced = std::collections::HashSet::new();
    for commit in log
        .iter()
        .filter(|o| is_commit(o) && o.last_modified >= since)
    {
        let bytes = root
            .get(&commit.location)
            .await
            .map_err(|e| DeltaError::table(location, e))?
            .bytes()
            .await
            .map_err(|e| DeltaError::table(location, e))?;
        for line in bytes.split(|b| *b == b'\n') {
            let Ok(action) = serde_json::from_slice::<serde_json::Value>(line) else {
                continue;
            };
            for kind in ["add", "remove"] {
                if let Some(path) = action.get(kind).and_then(|a| a.get("path")?.as_str()) {
                    let decoded = percent_encoding::percent_decode_str(path).decode_utf8_lossy();
                    referenced.insert(decoded.into_owned());
                }
            }
        }
    }
    let committed = log.iter().any(is_commit);
    let mut orphans: Vec<&object_store::ObjectMeta> = data
        .iter()
        .filter(|o| o.last_modified >= since && !referenced.contains(&relative(o)))
        .collect();
    orphans.extend(log.iter().filter(|o| {
        let name = o.location.filename().unwrap_or_default();
        let temporary_commit = name.starts_with("_commit_") && name.ends_with(".tmp");
        let lone_marker = name == CREATE_MARKER && !committed;
        (temporary_commit && o.last_modified >= since) || lone_marker
    }));
    for orphan in &orphans {
        match root.delete(&orphan.location).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(DeltaError::table(location, e)),
        }
    }
    let mut removed = orphans.len();
    if let Ok(path) = location.to_file_path() {
        // `object_store` never lists a local write's `name#n` staging files.
        removed += remove_staging_files(&path, since);
        // Local stores keep the folders of removed files (partition folders;
        // all of an unfinished create, whose name is then free again).
        remove_empty_folders(&path);
    }
    Ok(removed)
}

/// Removes the `name#n` files (n digits) under `folder` modified at or
/// after `since`: what a local write was writing when it was killed
/// (object_store writes `name#n`, then renames it). Links are not followed.
fn remove_staging_files(folder: &std::path::Path, since: DateTime<Utc>) -> usize {
    let Ok(entries) = std::fs::read_dir(folder) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            removed += remove_staging_files(&entry.path(), since);
            continue;
        }
        let name = entry.file_name();
        let staging = name
            .to_str()
            .and_then(|n| n.rsplit_once('#'))
            .is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        let recent = entry
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| DateTime::<Utc>::from(t) >= since);
        if kind.is_file() && staging && recent && std::fs::remove_file(entry.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// Removes `folder` and its subfolders if no file is left in any of them.
fn remove_empty_folders(folder: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(folder) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            remove_empty_folders(&entry.path());
        }
    }
    // Fails, harmlessly, while anything is left inside.
    let _ = std::fs::remove_dir(folder);
}
