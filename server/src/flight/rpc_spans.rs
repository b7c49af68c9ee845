//! A `tracing` span around every gRPC call, named as OpenTelemetry's RPC
//! conventions name it (`package.Service/Method`). The engine's spans for
//! the phases of a query (`plan`, `admit`, `execute`) open inside it, so a
//! trace shows which call planned what. A streamed answer keeps flowing
//! after its call's span closes; its `execute` span covers the stream.

use std::task::{Context, Poll};

use tracing::Instrument;
use tracing::instrument::Instrumented;

/// The tower layer that opens a span per call.
#[derive(Debug, Clone, Copy, Default)]
pub struct RpcSpanLayer;

impl<S> tower::Layer<S> for RpcSpanLayer {
    type Service = RpcSpans<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RpcSpans { inner }
    }
}

/// A service behind [`RpcSpanLayer`].
#[derive(Debug, Clone)]
pub struct RpcSpans<S> {
    inner: S,
}

impl<S, B> tower::Service<http::Request<B>> for RpcSpans<S>
where
    S: tower::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Instrumented<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let path = request.uri().path();
        let (service, method) = path
            .trim_start_matches('/')
            .split_once('/')
            .unwrap_or(("unknown", path));
        let span = tracing::info_span!(
            target: "tarn::rpc",
            "rpc",
            otel.name = %path.trim_start_matches('/'),
            otel.kind = "server",
            rpc.system = "grpc",
            rpc.service = %service,
            rpc.method = %method,
        );
        self.inner.call(request).instrument(span)
    }
}
