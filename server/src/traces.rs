//! OpenTelemetry traces over OTLP/gRPC (`--otlp-endpoint`): a span per
//! Flight RPC (`flight/rpc_spans.rs`) and per query phase (`plan`, `admit`,
//! `execute` in the engine), exported in batches to a collector.
//!
//! Spans are `tracing` spans with targets under `tarn::`; this module only
//! turns them into OpenTelemetry spans. Without an endpoint no layer is
//! installed and the spans cost a disabled callsite check.
//!
//! OpenTelemetry's batch processor exports from a thread of its own, which
//! has no Tokio reactor; tonic needs one. The exporter therefore runs each
//! export on a small runtime of its own ([`OnItsRuntime`]), never on the
//! runtimes that serve clients or run queries.

use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
use tracing_subscriber::Layer;
use tracing_subscriber::registry::LookupSpan;

/// How long the exporter waits for the collector per batch.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// Exporting traces to a collector; dropping it flushes the spans not yet sent.
pub struct Traces {
    provider: SdkTracerProvider,
}

impl std::fmt::Debug for Traces {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Traces").finish_non_exhaustive()
    }
}

/// Why traces cannot be exported.
#[derive(Debug, thiserror::Error)]
pub enum TracesError {
    /// The endpoint is not a URL the exporter can use.
    #[error(
        "--otlp-endpoint '{endpoint}' is not usable ({reason}); write the collector's OTLP/gRPC address, e.g. http://127.0.0.1:4317"
    )]
    Endpoint { endpoint: String, reason: String },
    /// The exporter's runtime could not start.
    #[error("cannot start the OTLP exporter's runtime: {0}")]
    Runtime(#[from] std::io::Error),
}

impl Traces {
    /// Starts exporting to the OTLP/gRPC collector at `endpoint`; returns
    /// the `tracing` layer that feeds it, for every `tarn` span.
    pub fn start<S>(endpoint: &str) -> Result<(Self, impl Layer<S>), TracesError>
    where
        S: tracing::Subscriber + for<'span> LookupSpan<'span>,
    {
        let uri: http::Uri =
            endpoint
                .parse()
                .map_err(|e: http::uri::InvalidUri| TracesError::Endpoint {
                    endpoint: endpoint.to_string(),
                    reason: e.to_string(),
                })?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) {
            return Err(TracesError::Endpoint {
                endpoint: endpoint.to_string(),
                reason: "it needs http:// or https://".into(),
            });
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("tarn-otlp")
            .enable_all()
            .build()?;
        // tonic's channel is made (not yet connected) inside a runtime.
        let inner = {
            let _entered = runtime.enter();
            opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint)
                .with_timeout(EXPORT_TIMEOUT)
                .build()
                .map_err(|e| TracesError::Endpoint {
                    endpoint: endpoint.to_string(),
                    reason: e.to_string(),
                })?
        };
        let resource = opentelemetry_sdk::Resource::builder()
            .with_service_name("tarn")
            .with_attribute(opentelemetry::KeyValue::new(
                "service.version",
                env!("CARGO_PKG_VERSION"),
            ))
            .build();
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(OnItsRuntime { inner, runtime })
            .with_resource(resource)
            .build();
        let tracer = provider.tracer("tarn");
        let layer = tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_filter(
                tracing_subscriber::filter::Targets::new()
                    .with_target("tarn", tracing::Level::INFO),
            );
        Ok((Self { provider }, layer))
    }
}

impl Drop for Traces {
    fn drop(&mut self) {
        if let Err(e) = self.provider.shutdown() {
            tracing::warn!("not every span reached the OTLP collector: {e}");
        }
    }
}

/// The OTLP exporter, run on its own runtime.
#[derive(Debug)]
struct OnItsRuntime {
    inner: opentelemetry_otlp::SpanExporter,
    runtime: tokio::runtime::Runtime,
}

impl SpanExporter for OnItsRuntime {
    fn export(
        &self,
        batch: Vec<SpanData>,
    ) -> impl std::future::Future<Output = OTelSdkResult> + Send {
        // Called on the batch processor's own thread, one batch at a time.
        let exported = self.runtime.block_on(self.inner.export(batch));
        std::future::ready(exported)
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        self.inner.set_resource(resource);
    }
}
