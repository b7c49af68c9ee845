//! The operators' HTTP listener (`--http-bind`): Prometheus metrics at
//! `/metrics`, liveness at `/healthz`, readiness at `/readyz`.
//!
//! `/healthz` answers 200 while the process serves. `/readyz` answers 200
//! only when the catalog answers a read and every store answers a listing of
//! its root, each within [`PROBE_TIMEOUT`]; otherwise 503 with one line per
//! failed check, so that a load balancer stops sending work to a server that
//! could not do it, and an operator sees why.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use object_store::ObjectStore;
use object_store::path::Path as ObjectPath;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::catalog::SqliteCatalog;
use crate::engine::Engine;
use crate::storage::Store;

/// The longest one readiness check may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// What the handlers read.
#[derive(Clone)]
struct Observed {
    engine: Arc<Engine>,
    catalog: Arc<SqliteCatalog>,
    stores: Arc<Vec<Probe>>,
    metrics: &'static metrics_exporter_prometheus::PrometheusHandle,
}

/// What readiness lists of one store: its root.
struct Probe {
    name: String,
    store: Arc<dyn ObjectStore>,
    prefix: ObjectPath,
}

/// The listener, bound and serving.
#[derive(Debug)]
pub(super) struct HttpListener {
    pub(super) addr: SocketAddr,
    pub(super) task: JoinHandle<()>,
}

/// Binds `addr` and serves the operators' endpoints (`metrics` rendered
/// at `/metrics`) until `stop` resolves.
pub(super) async fn serve(
    addr: SocketAddr,
    metrics: &'static metrics_exporter_prometheus::PrometheusHandle,
    engine: Arc<Engine>,
    catalog: Arc<SqliteCatalog>,
    stores: &[Store],
    stop: impl Future<Output = ()> + Send + 'static,
) -> Result<HttpListener, String> {
    let stores = stores
        .iter()
        .map(|s| Probe {
            name: s.name.clone(),
            store: Arc::clone(&s.object_store),
            prefix: s.prefix.clone(),
        })
        .collect();
    let observed = Observed {
        engine,
        catalog,
        stores: Arc::new(stores),
        metrics,
    };
    let app = Router::new()
        .route("/metrics", get(render_metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readiness))
        .with_state(observed);
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr} for --http-bind: {e}"))?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("cannot read the --http-bind address: {e}"))?;
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(stop)
            .await
        {
            tracing::warn!("the HTTP listener stopped: {e}");
        }
    });
    Ok(HttpListener { addr, task })
}

async fn render_metrics(State(observed): State<Observed>) -> Response {
    let mut gauges = observed.engine.gauges();
    gauges.outbox_depth = tokio::time::timeout(PROBE_TIMEOUT, observed.catalog.outbox_depth())
        .await
        .ok()
        .and_then(Result::ok);
    crate::telemetry::set_gauges(&gauges);
    observed.metrics.run_upkeep();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        observed.metrics.render(),
    )
        .into_response()
}

async fn readiness(State(observed): State<Observed>) -> Response {
    let mut problems = Vec::new();
    match tokio::time::timeout(PROBE_TIMEOUT, observed.catalog.outbox_depth()).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => problems.push(format!("catalog: {e}")),
        Err(_) => problems.push(format!("catalog: no answer within {PROBE_TIMEOUT:?}")),
    }
    let probes = observed.stores.iter().map(
        |Probe {
             name,
             store,
             prefix,
         }| async move {
            let prefix = (!prefix.as_ref().is_empty()).then_some(prefix);
            match tokio::time::timeout(PROBE_TIMEOUT, store.list_with_delimiter(prefix)).await {
                Ok(Ok(_)) => None,
                Ok(Err(e)) => Some(format!("store {name}: {}", first_line(&e.to_string()))),
                Err(_) => Some(format!("store {name}: no answer within {PROBE_TIMEOUT:?}")),
            }
        },
    );
    problems.extend(
        futures::future::join_all(probes)
            .await
            .into_iter()
            .flatten(),
    );
    if problems.is_empty() {
        return (StatusCode::OK, "ready\n").into_response();
    }
    let body = format!("not ready\n{}\n", problems.join("\n"));
    (StatusCode::SERVICE_UNAVAILABLE, body).into_response()
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or(text)
}
