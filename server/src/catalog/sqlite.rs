//! The catalog in SQLite, owned by one thread of its own.
//!
//! Every read and write is a job sent to the catalog thread, which holds
//! the only connection (and the state folder's lock). Async callers await
//! the job's answer; [`SqliteCatalog::submit`] queues one without waiting
//! (a query's start and end, an expired result's end), so no statement waits
//! on the disk unless it must: a write's start is awaited, because a write
//! that cannot be recorded does not run. No catalog work runs on an async
//! runtime, in a `Drop`, or under another lock; jobs run in the order sent.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::mpsc;
use std::time::Duration;

use arrow::datatypes::SchemaRef;
use rusqlite::Connection;

use super::openlineage::OpenLineageConfig;
use super::{
    CatalogError, CatalogResult, CatalogStore, InterruptedRun, RunEnd, RunStart, TableRecord,
    TableStatisticsRecord, TableVersionRecord, WriteLineage, open, runs, tables,
};

type Job = Box<dyn FnOnce(&mut Connection) + Send>;

enum Message {
    Job(Job),
    /// Stop: drop the connection and release the lock, then say so.
    Close(tokio::sync::oneshot::Sender<()>),
}

/// How a catalog is opened.
#[derive(Debug, Clone, Default)]
pub struct CatalogOptions {
    /// OpenLineage sinks events are queued for.
    pub openlineage: OpenLineageConfig,
    /// A pause before every job: simulates a slow disk (for tests).
    pub job_delay: Duration,
    /// A file audit records are appended to as JSON lines, too.
    pub audit_file: Option<PathBuf>,
}

/// The SQLite catalog in a state folder.
pub struct SqliteCatalog {
    jobs: Mutex<mpsc::Sender<Message>>,
    path: PathBuf,
    openlineage: Option<OpenLineageConfig>,
    audit_file: Option<PathBuf>,
}

impl std::fmt::Debug for SqliteCatalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SqliteCatalog({})", self.path.display())
    }
}

impl SqliteCatalog {
    /// Opens (or creates) the catalog in `state_dir` and starts its thread.
    pub fn open(state_dir: &Path, options: CatalogOptions) -> Result<Self, CatalogError> {
        let opened = open::open(state_dir)?;
        let path = opened.path.clone();
        let (jobs, inbox) = mpsc::channel::<Message>();
        let delay = options.job_delay;
        std::thread::Builder::new()
            .name("tarn-catalog".into())
            .spawn(move || serve(opened, inbox, delay))
            .map_err(|source| CatalogError::Folder {
                path: state_dir.to_path_buf(),
                source,
            })?;
        let sinks = !options.openlineage.sinks().is_empty();
        Ok(Self {
            jobs: Mutex::new(jobs),
            path,
            openlineage: sinks.then_some(options.openlineage),
            audit_file: options.audit_file,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file audit records are appended to, if any.
    pub fn audit_file(&self) -> Option<&Path> {
        self.audit_file.as_deref()
    }

    /// Where OpenLineage events go, if anywhere.
    pub fn openlineage(&self) -> Option<&OpenLineageConfig> {
        self.openlineage.as_ref()
    }

    fn send(&self, message: Message) -> bool {
        let jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        jobs.send(message).is_ok()
    }

    /// Runs `work` on the catalog thread and waits for its answer.
    pub async fn call<T, F>(&self, work: F) -> CatalogResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let (answer, answered) = tokio::sync::oneshot::channel();
        let path = self.path.clone();
        let job: Job = Box::new(move |c| {
            let _ = answer.send(work(c).map_err(|e| CatalogError::sqlite(&path, e)));
        });
        if !self.send(Message::Job(job)) {
            return Err(CatalogError::Closed);
        }
        answered.await.map_err(|_| CatalogError::Closed)?
    }

    /// OpenLineage events waiting for their sink; an answer at all also
    /// shows that the catalog is open and reads.
    pub async fn outbox_depth(&self) -> CatalogResult<u64> {
        self.call(|c| super::openlineage::outbox_depth(c)).await
    }

    /// Queues `work` on the catalog thread without waiting; a failure is
    /// logged, naming `what`.
    pub fn submit<F>(&self, what: &'static str, work: F)
    where
        F: FnOnce(&mut Connection) -> rusqlite::Result<()> + Send + 'static,
    {
        let path = self.path.clone();
        let job: Job = Box::new(move |c| {
            if let Err(e) = work(c) {
                tracing::warn!(
                    "the catalog could not record {what}: {}",
                    CatalogError::sqlite(&path, e)
                );
            }
        });
        if !self.send(Message::Job(job)) {
            tracing::warn!("the catalog is closed: {what} was not recorded");
        }
    }

    /// Finishes the queued jobs, closes the database and releases the state
    /// folder (another server may open it once this returns).
    pub async fn close(&self) {
        let (done, closed) = tokio::sync::oneshot::channel();
        if self.send(Message::Close(done)) {
            let _ = closed.await;
        }
    }
}

/// The catalog thread: runs jobs in order until closed (or every handle is
/// gone), then drops the connection and the lock.
fn serve(opened: open::Opened, inbox: mpsc::Receiver<Message>, delay: Duration) {
    let open::Opened {
        mut connection,
        lock,
        ..
    } = opened;
    let mut closed = None;
    for message in inbox.iter() {
        match message {
            Message::Job(job) => {
                if !delay.is_zero() {
                    std::thread::sleep(delay);
                }
                job(&mut connection);
            }
            Message::Close(done) => {
                closed = Some(done);
                break;
            }
        }
    }
    drop(connection);
    drop(lock);
    if let Some(done) = closed {
        let _ = done.send(());
    }
}

#[async_trait::async_trait]
impl CatalogStore for SqliteCatalog {
    async fn start_run(
        &self,
        run: RunStart,
        inputs: Vec<String>,
        write: Option<WriteLineage>,
    ) -> CatalogResult<()> {
        let events = self.openlineage.clone();
        self.call(move |c| runs::start(c, events.as_ref(), &run, &inputs, write.as_ref()))
            .await
    }

    fn start_run_soon(&self, run: RunStart, inputs: Vec<String>) {
        self.submit("the start of a query", move |c| {
            runs::start(c, None, &run, &inputs, None)
        });
    }

    async fn end_run(
        &self,
        id: String,
        end: RunEnd,
        write: Option<WriteLineage>,
    ) -> CatalogResult<()> {
        let events = self.openlineage.clone();
        self.call(move |c| runs::end(c, events.as_ref(), &id, &end, write.as_ref()))
            .await
    }

    fn end_run_soon(&self, id: String, end: RunEnd) {
        self.submit("the end of a query", move |c| {
            runs::end(c, None, &id, &end, None)
        });
    }

    async fn interrupted_runs(&self) -> CatalogResult<Vec<InterruptedRun>> {
        self.call(|c| runs::interrupted(c)).await
    }

    async fn abort_runs(&self, ids: Vec<String>, reason: String) -> CatalogResult<()> {
        self.call(move |c| runs::abort(c, &ids, &reason)).await
    }

    async fn record_table(
        &self,
        table: TableRecord,
        schema: SchemaRef,
        run_id: Option<String>,
    ) -> CatalogResult<i64> {
        self.call(move |c| tables::record(c, &table, &schema, run_id.as_deref()))
            .await
    }

    async fn record_table_version(
        &self,
        name: String,
        version: TableVersionRecord,
        run_id: Option<String>,
    ) -> CatalogResult<()> {
        self.call(move |c| tables::record_version(c, &name, &version, run_id.as_deref()))
            .await
    }

    async fn drop_table(&self, name: String) -> CatalogResult<()> {
        self.call(move |c| {
            let tx = c.transaction()?;
            tables::drop(&tx, &name)?;
            super::statistics::forget(&tx, &name)?;
            tx.commit()
        })
        .await
    }

    async fn definitions(&self) -> CatalogResult<Vec<(String, String)>> {
        self.call(|c| tables::definitions(c)).await
    }

    async fn created_tables(&self) -> CatalogResult<Vec<(String, String)>> {
        self.call(|c| tables::created(c)).await
    }

    async fn dropped_locations(&self) -> CatalogResult<std::collections::HashSet<String>> {
        self.call(|c| tables::dropped_locations(c)).await
    }

    async fn record_setting(&self, key: String, statement: String) -> CatalogResult<()> {
        self.call(move |c| tables::record_setting(c, &key, &statement))
            .await
    }

    async fn forget_setting(&self, key: String) -> CatalogResult<()> {
        self.call(move |c| tables::forget_setting(c, &key)).await
    }

    async fn settings(&self) -> CatalogResult<Vec<String>> {
        self.call(|c| tables::settings(c)).await
    }

    async fn record_statistics(&self, stats: TableStatisticsRecord) -> CatalogResult<()> {
        self.call(move |c| super::statistics::record(c, &stats))
            .await
    }

    async fn latest_statistics(&self) -> CatalogResult<Vec<TableStatisticsRecord>> {
        self.call(|c| super::statistics::latest(c)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &Path) -> SqliteCatalog {
        SqliteCatalog::open(dir, CatalogOptions::default()).unwrap()
    }

    #[tokio::test]
    async fn the_shared_suite_passes() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = open(dir.path());
        super::super::suite::exercise(&catalog).await;
        catalog.close().await;
        // Closed, the folder is free, and everything is still there.
        let again = open(dir.path());
        super::super::suite::after_reopening(&again).await;
    }

    #[tokio::test]
    async fn the_identity_suite_passes() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = open(dir.path());
        super::super::identities::suite::exercise(&catalog).await;
        catalog.close().await;
        let again = open(dir.path());
        super::super::identities::suite::after_reopening(&again).await;
    }

    #[tokio::test]
    async fn the_grant_suite_passes_and_grants_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = open(dir.path());
        super::super::grants::suite::exercise(&catalog).await;
        catalog.close().await;
        let again = open(dir.path());
        use super::super::GrantStore;
        assert_eq!(again.grants().await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_full_disk_is_a_clear_error_and_loses_nothing_committed() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = open(dir.path());
        // SQLite reports a full disk when the file may not grow: the same error path.
        catalog
            .call(|c| c.pragma_update(None, "max_page_count", 40))
            .await
            .unwrap();
        let mut started = Vec::new();
        let err = loop {
            let run = RunStart {
                id: format!("run-{}", started.len()),
                sql: "x".repeat(2000),
                principal: "test".into(),
                kind: super::super::RunKind::Query,
                target_location: None,
            };
            match catalog
                .start_run(run.clone(), vec!["t".to_string()], None)
                .await
            {
                Ok(()) => started.push(run.id),
                Err(err) => break err,
            }
            assert!(started.len() < 10_000, "the page limit never hit");
        };
        let message = err.to_string();
        assert!(
            message.contains("full") && message.contains("catalog.sqlite"),
            "{message}"
        );
        // Every run recorded before stays, with its input; nothing half-written.
        let counted: (i64, i64) = catalog
            .call(|c| {
                c.query_row(
                    "SELECT (SELECT count(*) FROM runs), (SELECT count(*) FROM run_inputs)",
                    [],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )
            })
            .await
            .unwrap();
        assert_eq!(counted, (started.len() as i64, started.len() as i64));
    }
}
