//! Starting and stopping a Tarn server: config in, listening socket out.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::TcpListenerStream;

use crate::catalog::{self, Catalog, CatalogError, TableKind, TableRecord};
use crate::config::ServeConfig;
use crate::engine::{Engine, EngineError, LocationPolicy};
use crate::storage::{self, Store, StoreConfig, StoreError, Stores};
use crate::{demo, flight, lake};

/// HTTP/2 flow-control window per stream, bytes.
const HTTP2_STREAM_WINDOW: u32 = 8 * 1024 * 1024;
/// HTTP/2 flow-control window per connection, bytes.
const HTTP2_CONNECTION_WINDOW: u32 = 32 * 1024 * 1024;

/// Largest HTTP/2 frame we accept, bytes (the default, 16 KiB, splits one
/// result message into over a hundred frames).
const HTTP2_MAX_FRAME: u32 = 1024 * 1024;

/// Why a server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The address is in use or not ours.
    #[error("cannot listen on {addr}: {source}; pick another address with --bind")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// A store is misconfigured.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// `[lake] tables_store` names no store.
    #[error(
        "[lake] tables_store = \"{0}\" names no store; declare [stores.{0}] or name one of the declared stores"
    )]
    UnknownStore(String),
    /// The state folder cannot be resolved.
    #[error("cannot use the state folder {path}: {source}; pick another with --state-dir")]
    StateDir {
        /// The folder.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The state folder is a store's folder or holds one.
    #[error(
        "the state folder {state_dir} holds the folder of store '{store}'; statements may never touch the state folder, so it must be a folder of its own: pick another with --state-dir (the default is a hidden .tarn folder inside the lake)"
    )]
    StateDirHoldsStore {
        /// The state folder.
        state_dir: PathBuf,
        /// The store inside it.
        store: String,
    },
    /// The catalog cannot be opened or written.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// The demo lake cannot be generated.
    #[error(transparent)]
    Demo(#[from] demo::DemoError),
    /// The engine cannot start.
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// A running server.
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
    engine: Arc<Engine>,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
    /// Sends queued OpenLineage events (undelivered ones wait in the catalog).
    delivery: Option<JoinHandle<()>>,
}

impl Server {
    /// Loads the lake and starts serving it.
    pub async fn start(config: ServeConfig) -> Result<Self, ServeError> {
        if config.generate_demo && !demo::exists(Path::new(&config.lake)) {
            tracing::info!(lake = %config.lake, scale = config.demo_scale, "generating the demo lake (first start)");
            let (lake, scale) = (PathBuf::from(&config.lake), config.demo_scale);
            tokio::task::spawn_blocking(move || demo::generate(&lake, scale))
                .await
                .map_err(|e| EngineError::Internal(e.to_string()))??;
        }
        let configs = store_configs(&config);
        // Before the state folder is made (by default inside the lake), so
        // that a mistyped lake is an error, not a new empty folder.
        storage::check_local_folders(&configs)?;
        // The state folder is Tarn's own: no statement may read or write it.
        let state_dir = std::fs::create_dir_all(&config.state_dir)
            .and_then(|()| config.state_dir.canonicalize())
            .map_err(|source| ServeError::StateDir {
                path: config.state_dir.clone(),
                source,
            })?;
        let stores = open_stores(&configs, &state_dir)?;
        // Statements may name locations inside the stores, and nowhere else.
        let mut options = config.engine.clone();
        options.locations = LocationPolicy::for_stores(&stores);
        if options.tables_location.is_none() {
            let store = stores
                .stores
                .iter()
                .find(|s| s.name == config.tables_store)
                .ok_or_else(|| ServeError::UnknownStore(config.tables_store.clone()))?;
            options.tables_location = Some(store.display_url());
        }
        let catalog =
            Arc::new(Catalog::open(&state_dir)?.with_openlineage(config.openlineage.clone()));
        let delivery = catalog::openlineage::spawn_delivery(Arc::clone(&catalog));
        let engine = Arc::new(Engine::new(options)?.with_catalog(Arc::clone(&catalog)));
        register_stores(&engine, &stores);
        close_interrupted_runs(&engine, &catalog).await?;
        let created = catalog.created_tables()?;
        let loaded = load_lake(&engine, &stores.stores, &created).await;
        let loaded = forget_dropped(&engine, &catalog, loaded)?;
        let loaded = serve_created(&engine, &created, loaded).await;
        record_lake(&engine, &catalog, &loaded).await?;
        restore(&engine, &catalog).await;
        catalog::system::register(engine.session(), catalog).map_err(|e| {
            EngineError::Internal(format!("cannot register the system tables: {e}"))
        })?;

        let listener = TcpListener::bind(config.bind)
            .await
            .map_err(|source| ServeError::Bind {
                addr: config.bind,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| ServeError::Bind {
            addr: config.bind,
            source,
        })?;
        let (shutdown, stopped) = oneshot::channel::<()>();
        let service = flight::service(Arc::clone(&engine), &config.flight);
        // Small responses (a FlightInfo, a one-row result) must leave at
        // once: with Nagle's algorithm on, each waits for a delayed ACK
        // (~40 ms). tonic's own `tcp_nodelay` only covers sockets it binds.
        let incoming = TcpListenerStream::new(listener).map(|stream| {
            if let Ok(stream) = &stream {
                let _ = stream.set_nodelay(true);
            }
            stream
        });
        let task = tokio::spawn(
            tonic::transport::Server::builder()
                // HTTP/2's default 64 KiB windows stall large DoPut uploads
                // on round trips; these let a few messages be in flight.
                .initial_stream_window_size(Some(HTTP2_STREAM_WINDOW))
                .initial_connection_window_size(Some(HTTP2_CONNECTION_WINDOW))
                .max_frame_size(Some(HTTP2_MAX_FRAME))
                .layer(flight::undecodable_requests_are_invalid_arguments())
                .add_service(service)
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = stopped.await;
                }),
        );
        tracing::info!(%addr, "serving Flight SQL");
        Ok(Self {
            addr,
            engine,
            shutdown: Some(shutdown),
            task,
            delivery,
        })
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The engine behind the server.
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// Stops accepting calls and waits for the calls in flight to finish;
    /// results planned but never fetched are ended (ABORT) in the catalog.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let _ = (&mut self.task).await;
        self.engine
            .abandon_pending_results("the server stopped before the result was fetched");
        if let Some(delivery) = self.delivery.take() {
            delivery.abort();
            let _ = delivery.await;
        }
    }

    /// Serves until the task ends (Ctrl-C handling is the caller's).
    pub async fn wait(&mut self) -> Result<(), String> {
        match (&mut self.task).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// The lake (store "lake") and every `[stores.NAME]`.
fn store_configs(config: &ServeConfig) -> Vec<(String, StoreConfig)> {
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
fn open_stores(configs: &[(String, StoreConfig)], state_dir: &Path) -> Result<Stores, ServeError> {
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
fn register_stores(engine: &Engine, stores: &Stores) {
    let runtime = engine.session().runtime_env();
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
async fn close_interrupted_runs(engine: &Engine, catalog: &Catalog) -> Result<(), ServeError> {
    let interrupted = catalog.interrupted_runs()?;
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
        let runtime = engine.session().runtime_env();
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
    catalog.abort_runs(&ids, STOPPED)?;
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
async fn load_lake(
    engine: &Engine,
    stores: &[Store],
    created: &[(String, String)],
) -> Vec<lake::LakeTable> {
    let (loaded, problems) = lake::load(engine.session(), stores, engine.freshness()).await;
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
async fn serve_created(
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
            let _ = engine.session().deregister_table(table.name.as_str());
            false
        });
        if matches!(engine.session().table_exist(name.as_str()), Ok(true)) {
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
    let runtime = engine.session().runtime_env();
    let root = crate::delta::root_store(&runtime, &url).map_err(|e| e.strip_backtrace())?;
    let table = crate::delta::DeltaLakeTable::open(root, url, engine.freshness())
        .await
        .map_err(|e| e.to_string())?;
    engine
        .session()
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
fn forget_dropped(
    engine: &Engine,
    catalog: &Catalog,
    loaded: Vec<lake::LakeTable>,
) -> Result<Vec<lake::LakeTable>, ServeError> {
    let dropped = catalog.dropped_locations()?;
    Ok(loaded
        .into_iter()
        .filter(|table| {
            if !dropped.contains(&table.location) {
                return true;
            }
            let _ = engine.session().deregister_table(table.name.as_str());
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
async fn record_lake(
    engine: &Engine,
    catalog: &Catalog,
    tables: &[lake::LakeTable],
) -> Result<(), ServeError> {
    for table in tables {
        let Ok(provider) = engine.session().table_provider(table.name.as_str()).await else {
            continue;
        };
        let record = TableRecord {
            name: table.name.clone(),
            kind: TableKind::Discovered,
            location: Some(table.location.clone()),
            format: Some(table.format.to_string()),
            definition: None,
        };
        catalog.record_table(&record, provider.schema().as_ref(), None)?;
        if let Some(stats) = provider
            .downcast_ref::<crate::delta::DeltaLakeTable>()
            .and_then(crate::delta::DeltaLakeTable::version_stats)
        {
            catalog.record_table_version(&table.name, &stats, None)?;
        }
    }
    Ok(())
}

/// Recreates what SQL created and the lake does not show by itself (views,
/// external tables, tables written elsewhere) and the settings made with SET.
async fn restore(engine: &Arc<Engine>, catalog: &Catalog) {
    let definitions = catalog.definitions().unwrap_or_else(|e| {
        tracing::warn!("cannot read the catalog's definitions: {e}");
        Vec::new()
    });
    for (name, sql) in definitions {
        if matches!(engine.session().table_exist(name.as_str()), Ok(true)) {
            continue;
        }
        if let Err(e) = engine.replay(&sql).await {
            tracing::warn!(table = %name, "cannot recreate '{name}' from the catalog: {e}");
        }
    }
    for sql in catalog.settings().unwrap_or_default() {
        if let Err(e) = engine.replay(&sql).await {
            // A setting refused now (or no longer valid) is skipped, so
            // that one bad setting cannot break every query after a restart.
            tracing::warn!("ignoring the remembered setting `{sql}`: {e}");
        }
    }
}
