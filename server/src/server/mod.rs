//! Starting and stopping a Tarn server: config in, listening socket out.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::TcpListenerStream;

use crate::auth::{Authenticator, FirstAdmin};
use crate::catalog::{
    self, AuditLog, CatalogError, CatalogOptions, CatalogStore, IdentityStore, SqliteCatalog,
};
use crate::config::ServeConfig;
use crate::engine::{Engine, EngineError, LocationPolicy};
use crate::storage::{self, StoreError};
use crate::{demo, flight};

mod http;
mod startup;
mod tls;

pub use tls::install_crypto_provider;

/// The Flight service's name in grpc.health.v1.
const FLIGHT_SERVICE: &str = "arrow.flight.protocol.FlightService";

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
    /// A TLS file is missing, unreadable, not PEM, or does not fit the others.
    #[error("TLS: {0}")]
    Tls(String),
    /// Asked to serve a non-loopback address without authentication.
    #[error(
        "refusing to serve {addr} without authentication: anyone who reaches it could read, change and drop every table. Start with --auth (and TARN_ADMIN_PASSWORD or --admin-password-file for the first admin), or bind a loopback address such as 127.0.0.1:{port}; --insecure-no-auth serves it open anyway"
    )]
    InsecureBind {
        /// The address asked for.
        addr: SocketAddr,
        /// Its port.
        port: u16,
    },
    /// The first admin's password file cannot be read.
    #[error("cannot read the admin password file {path}: {source}")]
    AdminPasswordFile {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Authentication is on and nobody could log in.
    #[error(transparent)]
    FirstAdmin(#[from] FirstAdmin),
    /// The demo lake cannot be generated.
    #[error(transparent)]
    Demo(#[from] demo::DemoError),
    /// The engine cannot start.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The operators' HTTP listener cannot start.
    #[error("{0}")]
    Http(String),
}

/// Reports `status` for the server and for its Flight service.
async fn report_health(
    reporter: &tonic_health::server::HealthReporter,
    status: tonic_health::ServingStatus,
) {
    for service in ["", FLIGHT_SERVICE] {
        reporter.set_service_status(service, status).await;
    }
}

/// Without authentication, only loopback addresses are served (unless the
/// operator opted out, loudly).
fn refuse_an_open_network_address(config: &ServeConfig) -> Result<(), ServeError> {
    if config.auth.enabled || config.bind.ip().is_loopback() {
        return Ok(());
    }
    if config.insecure_no_auth {
        tracing::warn!(
            addr = %config.bind,
            "serving WITHOUT authentication on a non-loopback address (--insecure-no-auth): anyone who reaches it may read, change and drop every table"
        );
        return Ok(());
    }
    Err(ServeError::InsecureBind {
        addr: config.bind,
        port: config.bind.port(),
    })
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
    /// Deletes audit rows past their retention, daily.
    audit_purge: JoinHandle<()>,
    catalog: Arc<SqliteCatalog>,
    /// `/metrics`, `/healthz`, `/readyz`, when `--http-bind` is set.
    http: Option<http::HttpListener>,
    /// Stops the HTTP listener.
    stopping: tokio_util::sync::CancellationToken,
    /// grpc.health.v1 on the Flight port.
    health: tonic_health::server::HealthReporter,
    /// From its cancellation on, new calls are refused (UNAVAILABLE).
    draining: tokio_util::sync::CancellationToken,
    /// How long live statements may finish once the server stops.
    shutdown_timeout: std::time::Duration,
}

/// How long connections get to close once every statement has ended (an
/// open grpc.health.v1 `Watch` never ends by itself).
const CONNECTIONS_CLOSE: std::time::Duration = std::time::Duration::from_secs(2);

impl Server {
    /// Loads the lake and starts serving it.
    pub async fn start(config: ServeConfig) -> Result<Self, ServeError> {
        refuse_an_open_network_address(&config)?;
        // Before the lake is listed, so that those requests count too.
        let metrics = match config.http_bind {
            Some(_) => Some(crate::telemetry::exporter().map_err(ServeError::Http)?),
            None => None,
        };
        let tls_on = config.tls_cert.is_some();
        let transport = tls::transport(&config)?;
        let admin_password = startup::admin_password(&config)?;
        if config.generate_demo && !demo::exists(Path::new(&config.lake)) {
            tracing::info!(lake = %config.lake, scale = config.demo_scale, "generating the demo lake (first start)");
            let (lake, scale) = (PathBuf::from(&config.lake), config.demo_scale);
            tokio::task::spawn_blocking(move || demo::generate(&lake, scale))
                .await
                .map_err(|e| EngineError::Internal(e.to_string()))??;
        }
        let configs = startup::store_configs(&config);
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
        let stores = startup::open_stores(&configs, &state_dir)?;
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
        let catalog = Arc::new(SqliteCatalog::open(
            &state_dir,
            CatalogOptions {
                openlineage: config.openlineage.clone(),
                job_delay: config.catalog_job_delay,
                audit_file: config.audit_file.clone(),
            },
        )?);
        // Spill files of an earlier process are removed only once the
        // catalog's lock shows that no other server uses this state folder.
        let spill = state_dir.join("spill");
        crate::engine::prepare_spill_dir(&spill).map_err(|source| ServeError::StateDir {
            path: spill.clone(),
            source,
        })?;
        options.memory.spill_dir = Some(spill);
        // A start that fails from here closes the catalog (and its lock)
        // before it returns, so the state folder is free again at once.
        let ready = async {
            let (engine, auth) =
                Self::load(&config, options, &stores, admin_password, &catalog).await?;
            let listener =
                TcpListener::bind(config.bind)
                    .await
                    .map_err(|source| ServeError::Bind {
                        addr: config.bind,
                        source,
                    })?;
            Ok::<_, ServeError>((engine, auth, listener))
        };
        let (engine, auth, listener) = match ready.await {
            Ok(ready) => ready,
            Err(e) => {
                catalog.close().await;
                return Err(e);
            }
        };
        let stopping = tokio_util::sync::CancellationToken::new();
        let http = match config.http_bind.zip(metrics) {
            Some((addr, metrics)) => {
                let stop = stopping.clone().cancelled_owned();
                match http::serve(
                    addr,
                    metrics,
                    Arc::clone(&engine),
                    Arc::clone(&catalog),
                    &stores.stores,
                    stop,
                )
                .await
                {
                    Ok(listener) => Some(listener),
                    Err(e) => {
                        catalog.close().await;
                        return Err(ServeError::Http(e));
                    }
                }
            }
            None => None,
        };
        if let Some(http) = &http {
            tracing::info!(addr = %http.addr, "serving /metrics, /healthz and /readyz over HTTP");
        }
        let (health, health_service) = tonic_health::server::health_reporter();
        report_health(&health, tonic_health::ServingStatus::Serving).await;
        let addr = listener.local_addr().map_err(|source| ServeError::Bind {
            addr: config.bind,
            source,
        })?;
        let delivery = catalog::spawn_delivery(Arc::clone(&catalog));
        let audit_purge = startup::purge_audit_daily(Arc::clone(&catalog), config.audit_retention);
        let (shutdown, stopped) = oneshot::channel::<()>();
        let draining = tokio_util::sync::CancellationToken::new();
        let audit: Arc<dyn AuditLog> = Arc::clone(&catalog) as _;
        let service = flight::service(Arc::clone(&engine), auth, audit, &config.flight);
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
            transport
                // HTTP/2's default 64 KiB windows stall large DoPut uploads
                // on round trips; these let a few messages be in flight.
                .initial_stream_window_size(Some(HTTP2_STREAM_WINDOW))
                .initial_connection_window_size(Some(HTTP2_CONNECTION_WINDOW))
                .max_frame_size(Some(HTTP2_MAX_FRAME))
                .layer(flight::RpcSpanLayer)
                .layer(flight::undecodable_requests_are_invalid_arguments())
                .layer(flight::DrainingLayer::new(draining.clone()))
                .add_service(service)
                .add_service(health_service)
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = stopped.await;
                }),
        );
        let scheme = if tls_on { "grpc+tls" } else { "grpc" };
        tracing::info!(%addr, scheme, "serving Flight SQL on {scheme}://{addr}");
        Ok(Self {
            addr,
            engine,
            shutdown: Some(shutdown),
            task,
            delivery,
            audit_purge,
            catalog,
            http,
            stopping,
            health,
            draining,
            shutdown_timeout: config.shutdown_timeout,
        })
    }

    /// Everything between opening the catalog and listening: identities,
    /// the engine, the lake and what the catalog restores.
    async fn load(
        config: &ServeConfig,
        options: crate::engine::EngineOptions,
        stores: &storage::Stores,
        admin_password: Option<String>,
        catalog: &Arc<SqliteCatalog>,
    ) -> Result<(Arc<Engine>, Arc<Authenticator>), ServeError> {
        let store: Arc<dyn CatalogStore> = Arc::clone(catalog) as _;
        let identities: Arc<dyn IdentityStore> = Arc::clone(catalog) as _;
        let grants: Arc<dyn crate::catalog::GrantStore> = Arc::clone(catalog) as _;
        let auth = Arc::new(Authenticator::new(identities, config.auth.clone()));
        if auth.is_enabled() && auth.ensure_first_admin(admin_password.as_deref()).await? {
            tracing::info!("created the user 'admin' (no user existed)");
        }
        let engine = Arc::new(
            Engine::new(options)?
                .with_catalog(Arc::clone(&store))
                .with_grants(grants)
                .with_authenticator(Arc::clone(&auth)),
        );
        engine.load_privileges().await?;
        engine.load_statistics().await?;
        startup::register_stores(&engine, stores);
        startup::close_interrupted_runs(&engine, store.as_ref()).await?;
        let created = store.created_tables().await?;
        let loaded = startup::load_lake(&engine, &stores.stores, &created).await;
        let loaded = startup::forget_dropped(&engine, store.as_ref(), loaded).await?;
        let loaded = startup::serve_created(&engine, &created, loaded).await;
        startup::record_lake(&engine, store.as_ref(), &loaded).await?;
        startup::restore(&engine, store.as_ref()).await;
        catalog::system::register(engine.shared_context(), Arc::clone(catalog)).map_err(|e| {
            EngineError::Internal(format!("cannot register the system tables: {e}"))
        })?;
        engine.register_live_tables()?;
        Ok((engine, auth))
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where `/metrics`, `/healthz` and `/readyz` are served, if anywhere.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().map(|http| http.addr)
    }

    /// The engine behind the server.
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// Stops: new calls get UNAVAILABLE at once (fetches of results already
    /// planned go on), live statements may finish within the shutdown
    /// timeout and are stopped after it (their runs end ABORT), then the
    /// connections close and every queued catalog change is stored.
    pub async fn shutdown(mut self) {
        report_health(&self.health, tonic_health::ServingStatus::NotServing).await;
        self.draining.cancel();
        let drained = self.engine.drain(self.shutdown_timeout).await;
        if drained.stopped > 0 {
            tracing::warn!(
                stopped = drained.stopped,
                timeout = %humantime::format_duration(self.shutdown_timeout),
                "statements still running at the end of the shutdown timeout were stopped"
            );
        }
        if drained.left > 0 {
            tracing::warn!(
                left = drained.left,
                "statements did not end after they were stopped; their runs are closed at the next start"
            );
        }
        self.stopping.cancel();
        if let Some(http) = self.http.take() {
            let _ = http.task.await;
        }
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if tokio::time::timeout(CONNECTIONS_CLOSE, &mut self.task)
            .await
            .is_err()
        {
            self.task.abort();
            let _ = (&mut self.task).await;
        }
        self.engine
            .abandon_pending_results("the server stopped before the result was fetched");
        if let Some(delivery) = self.delivery.take() {
            delivery.abort();
            let _ = delivery.await;
        }
        self.audit_purge.abort();
        let _ = (&mut self.audit_purge).await;
        // Every queued change is stored, and the state folder is free.
        self.catalog.close().await;
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
