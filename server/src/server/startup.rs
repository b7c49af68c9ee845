//! Bringing a server up: its stores, the runs an earlier process left open,
//! the lake's tables, the tables Tarn created, and what the catalog
//! recreates (views, external tables, settings). Nothing is served before
//! all of this is done.

use std::path::Path;
use std::sync::Arc;

use crate::catalog::{CatalogStore, SqliteCatalog, TableOrigin, TableRecord};
use crate::engine::Engine;
use crate::lake;
use crate::storage::{self, Store, StoreConfig, Stores};

use super::{ServeConfig, ServeError};

/// The lake (store "lake") and every `[stores.NAME]`.
pub(super) fn store_configs(config: &ServeConfig) -> Vec<(String, StoreConfig)> {
    let mut configs = config.stores.clone();
    if !configs.iter().any(|(name, _)| name == "lake") {
        let lake = StoreConfig {
            url: config.lake.clone(),
            ..Default::default()
        };
        configs.insert(0, ("lake".to_string(), lake));
    }
    configs
}

/// Opens the stores; the state folder (resolved) is fenced off from them.
pub(super) fn open_stores(
    configs: &[(String, StoreConfig)],
    state_dir: &Path,
) -> Result<Stores, ServeError> {
    let stores = storage::open_all(configs, &[state_dir.to_path_buf()])?;
    // A state folder that is (or holds) a store would fence off the store.
    for store in &stores.stores {
        if let Some(folder) = &store.local_path
            && folder.starts_with(state_dir)
        {
            return Err(ServeError::StateDirHoldsStore {
                state_dir: state_dir.to_path_buf(),
                store: store.name.clone(),
            });
        }
    }
    Ok(stores)
}

/// Makes every store reachable by URL for the engine. Every file:// URL,
/// whatever a statement or library makes of it, is opened through the fence.
pub(super) fn register_stores(engine: &Engine, stores: &Stores) {
    let runtime = engine.shared_context().runtime_env();
    if let Ok(files) = url::Url::parse("file:///") {
        runtime.register_object_store(&files, Arc::clone(&stores.local_files) as _);
    }
    for store in stores.stores.iter().filter(|s| s.local_path.is_none()) {
        runtime.register_object_store(&store.root_url, Arc::clone(&store.object_store));
    }
}

/// Why runs of an earlier process are closed at start.
const STOPPED: &str = "the server stopped before the statement ended";

/// Ends the runs an earlier process left RUNNING (it was killed, or stopped
/// with results unfetched) as ABORT, after removing what its unfinished
/// writes left in their tables.
pub(super) async fn close_interrupted_runs(
    engine: &Engine,
    catalog: &dyn CatalogStore,
) -> Result<(), ServeError> {
    let interrupted = catalog.interrupted_runs().await?;
    if interrupted.is_empty() {
        return Ok(());
    }
    let mut removed = 0;
    for run in interrupted.iter().filter(|r| r.kind == "write") {
        let Some(location) = run
            .target_location
            .as_deref()
            .and_then(|l| url::Url::parse(l).ok())
        else {
            continue;
        };
        let runtime = engine.shared_context().runtime_env();
        // File times are compared with the run's start: allow for coarse clocks.
        let since = run.started_at - chrono::Duration::seconds(2);
        let cleaned = match crate::delta::root_store(&runtime, &location) {
            Ok(root) => crate::delta::remove_orphans(root, &location, since)
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.strip_backtrace()),
        };
        match cleaned {
            Ok(files) => removed += files,
            Err(e) => tracing::warn!(
                run = %run.id,
                "cannot remove what the unfinished write {} left in {location}: {e}",
                run.id
            ),
        }
    }
    let ids: Vec<String> = interrupted.iter().map(|r| r.id.clone()).collect();
    catalog.abort_runs(ids.clone(), STOPPED.to_string()).await?;
    tracing::info!(
        runs = ids.len(),
        files_removed = removed,
        "closed the runs an earlier process left unfinished (ABORT), and removed the uncommitted files of its writes"
    );
    Ok(())
}

/// Discovers and registers the tables of every store. `created` (tables Tarn
/// wrote, by name and location) are served by [`serve_created`]: folders
/// that hold them deeper down are not worth a warning.
pub(super) async fn load_lake(
    engine: &Engine,
    stores: &[Store],
    created: &[(String, String)],
) -> Vec<lake::LakeTable> {
    let (loaded, problems) = lake::load(engine.shared_context(), stores, engine.freshness()).await;
    let empty_stores = explain_empty_stores(stores, &loaded, &problems);
    for note in &empty_stores {
        tracing::warn!("{note}");
    }
    engine.explain_an_empty_lake(empty_stores);
    for problem in problems {
        match &problem {
            lake::LakeError::NestedDelta { tables, .. }
                if tables
                    .iter()
                    .all(|t| created.iter().any(|(_, l)| same_location(t, l))) =>
            {
                tracing::debug!("{problem} (each is a table Tarn created, served by its name)");
            }
            _ => tracing::warn!("{problem}"),
        }
    }
    let urls: Vec<String> = stores.iter().map(Store::display_url).collect();
    tracing::info!(stores = %urls.join(", "), tables = loaded.len(), "lake loaded");
    loaded
}

/// Why each store that serves no table serves none: the listing failed (the
/// cause), or it found nothing that is a table; with the store's location
/// and, for a bucket, its endpoint and addressing.
fn explain_empty_stores(
    stores: &[Store],
    loaded: &[lake::LakeTable],
    problems: &[lake::LakeError],
) -> Vec<String> {
    stores
        .iter()
        .filter(|store| !loaded.iter().any(|t| t.store == store.name))
        .map(|store| {
            let reached = match &store.addressing {
                Some(addressing) => format!(" ({})", addressing.describe()),
                None => String::new(),
            };
            let cause = problems
                .iter()
                .find_map(|p| match p {
                    lake::LakeError::Store { store: name, message, .. } if *name == store.name => {
                        Some(format!("listing it failed: {message}"))
                    }
                    _ => None,
                })
                .unwrap_or_else(|| {
                    "its top level holds no Parquet, CSV or JSON file and no folder of them or Delta table".into()
                });
            format!(
                "store '{}' at {}{reached} serves no tables: {cause}",
                store.name,
                store.display_url()
            )
        })
        .collect()
}

/// Serves every table Tarn created under the name it was created with,
/// wherever it lies: at the top of a store (where discovery finds it, maybe
/// under its folder's name), at a LOCATION below the top, or in another store.
pub(super) async fn serve_created(
    engine: &Engine,
    created: &[(String, String)],
    mut loaded: Vec<lake::LakeTable>,
) -> Vec<lake::LakeTable> {
    for (name, location) in created {
        // Discovery named the folder; the table has the name it was created with.
        loaded.retain(|table| {
            if table.name == *name || !same_location(&table.location, location) {
                return true;
            }
            let _ = engine
                .shared_context()
                .deregister_table(table.name.as_str());
            false
        });
        if matches!(engine.shared_context().table_exist(name.as_str()), Ok(true)) {
            continue;
        }
        if let Err(e) = register_delta(engine, name, location).await {
            tracing::warn!(table = %name, "cannot serve table '{name}' at {location}: {e}");
        }
    }
    loaded
}

async fn register_delta(engine: &Engine, name: &str, location: &str) -> Result<(), String> {
    let url = url::Url::parse(location).map_err(|e| e.to_string())?;
    let runtime = engine.shared_context().runtime_env();
    let root = crate::delta::root_store(&runtime, &url).map_err(|e| e.strip_backtrace())?;
    let table = crate::delta::DeltaLakeTable::open(root, url, engine.freshness())
        .await
        .map_err(|e| e.to_string())?;
    engine
        .shared_context()
        .register_table(name, Arc::new(table))
        .map(|_| ())
        .map_err(|e| e.strip_backtrace())
}

/// Whether two location URLs name the same folder (however each is encoded).
fn same_location(a: &str, b: &str) -> bool {
    let normal = |s: &str| {
        url::Url::parse(s).map_or_else(
            |_| s.trim_end_matches('/').to_string(),
            |u| u.as_str().trim_end_matches('/').to_string(),
        )
    };
    normal(a) == normal(b)
}

/// Unregisters lake tables that were dropped with `DROP TABLE` (which keeps
/// files): dropping is remembered across restarts.
pub(super) async fn forget_dropped(
    engine: &Engine,
    catalog: &dyn CatalogStore,
    loaded: Vec<lake::LakeTable>,
) -> Result<Vec<lake::LakeTable>, ServeError> {
    let dropped = catalog.dropped_locations().await?;
    Ok(loaded
        .into_iter()
        .filter(|table| {
            if !dropped.contains(&table.location) {
                return true;
            }
            let _ = engine.shared_context().deregister_table(table.name.as_str());
            tracing::info!(
                table = %table.name,
                "not serving '{}': it was dropped (its files at {} were kept); CREATE EXTERNAL TABLE brings it back, DROP TABLE ... PURGE deletes them",
                table.name,
                table.location
            );
            false
        })
        .collect())
}

/// Records every table found in the lake with its schema: a table whose
/// files gained columns since the last start gets a new schema version.
pub(super) async fn record_lake(
    engine: &Engine,
    catalog: &dyn CatalogStore,
    tables: &[lake::LakeTable],
) -> Result<(), ServeError> {
    for table in tables {
        let Ok(provider) = engine
            .shared_context()
            .table_provider(table.name.as_str())
            .await
        else {
            continue;
        };
        let record = TableRecord {
            name: table.name.clone(),
            origin: TableOrigin::Discovered,
            location: Some(table.location.clone()),
            format: Some(table.format.to_string()),
            definition: None,
        };
        catalog
            .record_table(record, provider.schema(), None)
            .await?;
        if let Some(stats) = provider
            .downcast_ref::<crate::delta::DeltaLakeTable>()
            .and_then(crate::delta::DeltaLakeTable::version_stats)
        {
            let version = crate::engine::version_record(stats);
            catalog
                .record_table_version(table.name.clone(), version, None)
                .await?;
        }
    }
    Ok(())
}

/// Recreates what SQL created and the lake does not show by itself (views,
/// external tables, tables written elsewhere) and the settings made with SET.
pub(super) async fn restore(engine: &Arc<Engine>, catalog: &dyn CatalogStore) {
    let definitions = catalog.definitions().await.unwrap_or_else(|e| {
        tracing::warn!("cannot read the catalog's definitions: {e}");
        Vec::new()
    });
    for (name, sql) in definitions {
        if matches!(engine.shared_context().table_exist(name.as_str()), Ok(true)) {
            continue;
        }
        if let Err(e) = engine.replay(&sql).await {
            tracing::warn!(table = %name, "cannot recreate '{name}' from the catalog: {e}");
        }
    }
    for sql in catalog.settings().await.unwrap_or_default() {
        if let Err(e) = engine.replay(&sql).await {
            // A setting refused now (or no longer valid) is skipped, so
            // that one bad setting cannot break every query after a restart.
            tracing::warn!("ignoring the remembered setting `{sql}`: {e}");
        }
    }
}

/// The first admin's password: `TARN_ADMIN_PASSWORD`, else the first line
/// of `--admin-password-file` (a trailing newline is not part of it).
pub(super) fn admin_password(config: &ServeConfig) -> Result<Option<String>, ServeError> {
    if let Some(password) = &config.admin_password.0 {
        return Ok(Some(password.clone()));
    }
    let Some(path) = &config.admin_password_file else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(path).map_err(|source| ServeError::AdminPasswordFile {
        path: path.clone(),
        source,
    })?;
    Ok(Some(text.trim_end_matches(['\n', '\r']).to_string()))
}

/// Deletes audit rows older than `retention` now, then once a day.
pub(super) fn purge_audit_daily(
    catalog: Arc<SqliteCatalog>,
    retention: std::time::Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut daily = tokio::time::interval(std::time::Duration::from_secs(24 * 60 * 60));
        loop {
            daily.tick().await;
            match catalog.purge_audit(retention).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(
                    "purged {n} audit rows older than {}",
                    humantime::format_duration(retention)
                ),
                Err(e) => tracing::warn!("cannot purge old audit rows: {e}"),
            }
        }
    })
}
