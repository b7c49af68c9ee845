//! Taking rows out of a Delta table for good: `DELETE` and `UPDATE` (new
//! versions that rewrite the files holding matching rows) and `VACUUM`
//! (deleting the files no current version refers to), so that a row can
//! really leave the lake.
//!
//! Invariants:
//! - Each operation is one commit (`VACUUM` two: its start and its end), made
//!   in the table's write turn and retried like an append while other
//!   processes win the commit race.
//! - `VACUUM` below the table's minimum retention
//!   (`delta.deletedFileRetentionDuration`, 7 days unless set) runs only when
//!   the caller turned the check off; it then also removes files of
//!   interrupted writes (full mode), since those may hold the rows too.
//! - Time travel to a version whose files are gone fails naming that, not
//!   with the store's "object not found" in the middle of a scan.

use std::sync::Arc;
use std::time::Duration;

use datafusion::execution::SessionState;
use datafusion::logical_expr::Expr;
use deltalake::DeltaTable;
use deltalake::operations::vacuum::VacuumMode;
use deltalake::table::config::TablePropertiesExt as _;
use futures::{StreamExt, TryStreamExt};
use object_store::ObjectStoreExt as _;
use url::Url;

use super::commit::{
    BUSY_DEADLINE, commit_properties, retry_while_busy, write_turn, writer_properties,
};
use super::provider::Snapshot;
use super::{DeltaError, DeltaLakeTable, WriteStats};

/// How many files of an old version are looked up at once.
const LOOKUPS_AT_ONCE: usize = 32;

/// What `VACUUM` was asked to do.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VacuumRequest {
    /// Keep files removed less than this long ago (`None`: the table's minimum).
    pub retain: Option<Duration>,
    /// Refuse a retention below the table's minimum.
    pub check_retention: bool,
    /// Only list what would be deleted.
    pub dry_run: bool,
}

/// What `VACUUM` deleted (or, in a dry run, would delete).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vacuumed {
    /// Paths of the files, relative to the table folder.
    pub files: Vec<String>,
    /// Whether this was a dry run.
    pub dry_run: bool,
}

impl DeltaLakeTable {
    /// Deletes the rows where `predicate` holds (all rows without one);
    /// returns the rows deleted.
    pub async fn delete(
        &self,
        session: Arc<SessionState>,
        predicate: Option<Expr>,
    ) -> Result<WriteStats, DeltaError> {
        self.rewrite(|table| {
            let session = Arc::clone(&session);
            let predicate = predicate.clone();
            async move {
                let mut builder = table
                    .delete()
                    .with_session_state(session)
                    .with_writer_properties(writer_properties())
                    .with_commit_properties(commit_properties());
                if let Some(predicate) = predicate {
                    builder = builder.with_predicate(predicate);
                }
                let (table, metrics) = builder.await?;
                let rows = metrics.num_deleted_rows.unwrap_or(0) as u64;
                Ok((table, rows))
            }
        })
        .await
    }

    /// Sets each `(column, value)` of `assignments` in the rows where
    /// `predicate` holds (all rows without one); returns the rows updated.
    pub async fn update(
        &self,
        session: Arc<SessionState>,
        predicate: Option<Expr>,
        assignments: Vec<(String, Expr)>,
    ) -> Result<WriteStats, DeltaError> {
        self.rewrite(|table| {
            let session = Arc::clone(&session);
            let (predicate, assignments) = (predicate.clone(), assignments.clone());
            async move {
                let mut builder = table
                    .update()
                    .with_session_state(session)
                    .with_writer_properties(writer_properties())
                    .with_commit_properties(commit_properties());
                if let Some(predicate) = predicate {
                    builder = builder.with_predicate(predicate);
                }
                for (column, value) in assignments {
                    builder = builder.with_update(column.as_str(), value);
                }
                let (table, metrics) = builder.await?;
                Ok((table, metrics.num_updated_rows as u64))
            }
        })
        .await
    }

    /// One commit that rewrites files (`operation`, given the newest version,
    /// returns the new table and the rows it changed), in the write turn.
    async fn rewrite<F, Fut>(&self, operation: F) -> Result<WriteStats, DeltaError>
    where
        F: Fn(DeltaTable) -> Fut,
        Fut: std::future::Future<Output = deltalake::DeltaResult<(DeltaTable, u64)>>,
    {
        let turn = write_turn(self.location());
        let _turn = turn.lock().await;
        let served = self.snapshot().table;
        let (table, rows) = retry_while_busy(self.location(), BUSY_DEADLINE, || {
            let mut base = served.clone();
            let run = &operation;
            async move {
                // Over the newest version: a retry sees what others committed.
                base.update_incremental(None).await?;
                run(base).await
            }
        })
        .await?;
        let mut stats = super::log::write_stats(&table).await;
        stats.rows = rows;
        self.install(Snapshot::of(table, self.location()).await?);
        Ok(stats)
    }

    /// The table's minimum retention for `VACUUM`.
    pub fn minimum_retention(&self) -> Option<Duration> {
        let snapshot = self.snapshot();
        let state = snapshot.table.snapshot().ok()?;
        Some(state.table_config().deleted_file_retention_duration())
    }

    /// Deletes the files no version within the retention refers to.
    pub async fn vacuum(&self, request: VacuumRequest) -> Result<Vacuumed, DeltaError> {
        let minimum = self.minimum_retention().unwrap_or(Duration::ZERO);
        let retain = request.retain.unwrap_or(minimum);
        if request.check_retention && retain < minimum {
            return Err(DeltaError::RetentionTooShort {
                location: self.location().to_string(),
                asked_hours: retain.as_secs_f64() / 3600.0,
                minimum_hours: minimum.as_secs_f64() / 3600.0,
            });
        }
        let retention = chrono::Duration::from_std(retain)
            .map_err(|e| DeltaError::table(self.location(), e))?;
        let turn = write_turn(self.location());
        let _turn = turn.lock().await;
        let mut table = self.snapshot().table;
        table
            .update_incremental(None)
            .await
            .map_err(|e| DeltaError::table(self.location(), e))?;
        let (table, metrics) = table
            .vacuum()
            .with_retention_period(retention)
            // Checked above, with the table's own minimum and a message that names the way out.
            .with_enforce_retention_duration(false)
            .with_mode(VacuumMode::Full)
            .with_dry_run(request.dry_run)
            .with_commit_properties(commit_properties())
            .await
            .map_err(|e| DeltaError::table(self.location(), e))?;
        if !request.dry_run {
            self.install(Snapshot::of(table, self.location()).await?);
        }
        Ok(Vacuumed {
            files: metrics.files_deleted,
            dry_run: metrics.dry_run,
        })
    }
}

/// Fails when a data file `old` (an earlier version of the table at
/// `location`) refers to is no longer in the store, naming the first one;
/// files the served version `current` also refers to are not looked up.
pub(super) async fn require_files(
    location: &Url,
    old: &DeltaTable,
    current: &DeltaTable,
) -> Result<(), DeltaError> {
    let (Ok(old_state), Ok(current_state)) = (old.snapshot(), current.snapshot()) else {
        return Ok(());
    };
    let current_files: std::collections::HashSet<String> = current_state
        .log_data()
        .iter()
        .map(|file| file.path().into_owned())
        .collect();
    let only_old: Vec<_> = old_state
        .log_data()
        .iter()
        .filter(|file| !current_files.contains(file.path().as_ref()))
        .map(|file| file.object_store_path())
        .collect();
    let store = old.log_store().object_store(None);
    let missing = futures::stream::iter(only_old)
        .map(|path| {
            let store = Arc::clone(&store);
            async move {
                match store.head(&path).await {
                    Ok(_) => Ok(None),
                    Err(object_store::Error::NotFound { .. }) => Ok(Some(path)),
                    Err(err) => Err(err),
                }
            }
        })
        .buffer_unordered(LOOKUPS_AT_ONCE)
        .try_filter_map(|found| futures::future::ready(Ok(found)))
        .try_next()
        .await
        .map_err(|e| DeltaError::table(location, e))?;
    match missing {
        None => Ok(()),
        Some(path) => Err(DeltaError::FilesGone {
            location: location.to_string(),
            version: old.version().unwrap_or(0),
            file: path.to_string(),
        }),
    }
}
