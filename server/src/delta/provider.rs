//! `DeltaLakeTable`: a registered Delta table serving one snapshot at a
//! time, renewed after Tarn's own writes, `REFRESH TABLE` and the TTL; and
//! appends (`INSERT`).

use std::borrow::Cow;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::datasource::TableType;
use datafusion::error::{DataFusionError, Result as DataFusionResult};
use datafusion::execution::SessionState;
use datafusion::logical_expr::{Expr, LogicalPlan, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use deltalake::DeltaTable;
use deltalake::operations::write::WriteBuilder;
use deltalake::protocol::SaveMode;
use object_store::ObjectStore;
use url::Url;

use super::commit::{BUSY_DEADLINE, retry_while_busy, with_tarn_settings, write_turn};
use super::log::{load, write_stats};
use super::{DeltaError, TableVersion, VersionStats, WriteStats};

/// A Delta table registered with the engine.
pub struct DeltaLakeTable {
    location: Url,
    root: Arc<dyn ObjectStore>,
    ttl: Duration,
    current: RwLock<Snapshot>,
    // One reload at a time; concurrent scans wait for it instead of piling up.
    reloading: tokio::sync::Mutex<()>,
}

#[derive(Clone)]
pub(super) struct Snapshot {
    pub(super) table: DeltaTable,
    provider: Arc<dyn TableProvider>,
    loaded: Instant,
}

impl std::fmt::Debug for DeltaLakeTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeltaLakeTable")
            .field("location", &self.location.as_str())
            .field("version", &self.version())
            .finish()
    }
}

impl DeltaLakeTable {
    /// Opens the newest version of the table at `location`.
    pub async fn open(
        root: Arc<dyn ObjectStore>,
        location: Url,
        ttl: Duration,
    ) -> Result<Self, DeltaError> {
        let table = load(Arc::clone(&root), &location, None).await?;
        Self::with_table(root, location, table, ttl).await
    }

    /// Serves `table` (just written or loaded).
    pub async fn with_table(
        root: Arc<dyn ObjectStore>,
        location: Url,
        table: DeltaTable,
        ttl: Duration,
    ) -> Result<Self, DeltaError> {
        let snapshot = Snapshot::of(table, &location).await?;
        Ok(Self {
            location,
            root,
            ttl,
            current: RwLock::new(snapshot),
            reloading: tokio::sync::Mutex::new(()),
        })
    }

    /// The table folder.
    pub fn location(&self) -> &Url {
        &self.location
    }

    /// The store the table lives in.
    pub fn root(&self) -> Arc<dyn ObjectStore> {
        Arc::clone(&self.root)
    }

    /// The version being served.
    pub fn version(&self) -> Option<u64> {
        self.snapshot().table.version()
    }

    pub(super) fn snapshot(&self) -> Snapshot {
        match self.current.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub(super) fn install(&self, snapshot: Snapshot) {
        match self.current.write() {
            Ok(mut guard) => *guard = snapshot,
            Err(poisoned) => *poisoned.into_inner() = snapshot,
        }
    }

    /// Loads the newest version now (`REFRESH TABLE`).
    pub async fn refresh(&self) -> Result<(), DeltaError> {
        let _one = self.reloading.lock().await;
        let mut table = self.snapshot().table;
        table
            .update_incremental(None)
            .await
            .map_err(|e| DeltaError::table(&self.location, e))?;
        self.install(Snapshot::of(table, &self.location).await?);
        Ok(())
    }

    /// The provider of a snapshot no older than the TTL.
    async fn fresh_provider(&self) -> Result<Arc<dyn TableProvider>, DeltaError> {
        let snapshot = self.snapshot();
        if snapshot.loaded.elapsed() < self.ttl {
            return Ok(snapshot.provider);
        }
        let _one = self.reloading.lock().await;
        let again = self.snapshot();
        if again.loaded.elapsed() < self.ttl {
            return Ok(again.provider);
        }
        drop(_one);
        self.refresh().await?;
        Ok(self.snapshot().provider)
    }

    /// Appends (or, with `overwrite`, replaces) the rows of `input`; returns
    /// the number of rows written. Concurrent appends all land: a commit
    /// that loses the race for a version retries at the next one.
    pub async fn append(
        &self,
        session: Arc<SessionState>,
        input: LogicalPlan,
        overwrite: bool,
    ) -> Result<WriteStats, DeltaError> {
        let turn = write_turn(&self.location);
        let _turn = turn.lock().await;
        let mode = if overwrite {
            SaveMode::Overwrite
        } else {
            SaveMode::Append
        };
        let served = self.snapshot().table;
        let table = retry_while_busy(&self.location, BUSY_DEADLINE, || {
            let (mut base, session, input) = (served.clone(), Arc::clone(&session), input.clone());
            async move {
                // Over the newest version: a retry sees what others committed.
                base.update_incremental(None).await?;
                let snapshot = base.snapshot()?.snapshot().clone();
                let builder =
                    WriteBuilder::new(base.log_store(), Some(snapshot)).with_save_mode(mode);
                with_tarn_settings(builder, input, session).await
            }
        })
        .await?;
        let stats = write_stats(&table).await;
        self.install(Snapshot::of(table, &self.location).await?);
        Ok(stats)
    }

    /// The served version with its row, file and byte counts (rows are
    /// `None` when a file lacks statistics).
    pub fn version_stats(&self) -> Option<VersionStats> {
        let snapshot = self.snapshot();
        let version = snapshot.table.version()?;
        let state = snapshot.table.snapshot().ok()?;
        let mut stats = VersionStats {
            version,
            rows: Some(0),
            files: 0,
            bytes: 0,
        };
        for file in state.log_data().iter() {
            stats.files += 1;
            stats.bytes += u64::try_from(file.size()).unwrap_or(0);
            stats.rows = stats
                .rows
                .zip(file.num_records())
                .map(|(total, rows)| total + rows as u64);
        }
        Some(stats)
    }

    /// An earlier version of this table, for time travel.
    pub async fn at(&self, version: TableVersion) -> Result<Arc<dyn TableProvider>, DeltaError> {
        let table = load(self.root(), &self.location, Some(version)).await?;
        super::erase::require_files(&self.location, &table, &self.snapshot().table).await?;
        Ok(Snapshot::of(table, &self.location).await?.provider)
    }
}

impl Snapshot {
    pub(super) async fn of(table: DeltaTable, location: &Url) -> Result<Self, DeltaError> {
        let provider = table
            .table_provider()
            .await
            .map_err(|e| DeltaError::table(location, e))?;
        Ok(Self {
            table,
            provider,
            loaded: Instant::now(),
        })
    }
}

fn to_datafusion(err: DeltaError) -> DataFusionError {
    DataFusionError::External(Box::new(err))
}

#[async_trait::async_trait]
impl TableProvider for DeltaLakeTable {
    fn schema(&self) -> SchemaRef {
        self.snapshot().provider.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn get_logical_plan(&self) -> Option<Cow<'_, LogicalPlan>> {
        None
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DataFusionResult<Arc<dyn ExecutionPlan>> {
        let provider = self.fresh_provider().await.map_err(to_datafusion)?;
        provider.scan(state, projection, filters, limit).await
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DataFusionResult<Vec<TableProviderFilterPushDown>> {
        self.snapshot().provider.supports_filters_pushdown(filters)
    }
}
