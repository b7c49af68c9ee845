//! Refusing new work while the server shuts down.
//!
//! Once the server starts to stop, every call that would start new work
//! gets `UNAVAILABLE` before it is decoded; `DoGet` (fetching a result that
//! was already planned) and the health service go on, so that queries
//! admitted before the signal can finish and load balancers see
//! `NOT_SERVING`.

use std::task::{Context, Poll};

use futures::future::{Either, Ready, ready};
use tokio_util::sync::CancellationToken;

/// What a refused call is told.
const REFUSAL: &str = "the server is shutting down and accepts no new work; run the statement again once it is back, or against another server";

/// The tower layer that refuses new calls once `stopping` is cancelled.
#[derive(Debug, Clone)]
pub struct DrainingLayer {
    stopping: CancellationToken,
}

impl DrainingLayer {
    /// Refuses new calls from the moment `stopping` is cancelled.
    pub fn new(stopping: CancellationToken) -> Self {
        Self { stopping }
    }
}

impl<S> tower::Layer<S> for DrainingLayer {
    type Service = Draining<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Draining {
            inner,
            stopping: self.stopping.clone(),
        }
    }
}

/// A service behind [`DrainingLayer`].
#[derive(Debug, Clone)]
pub struct Draining<S> {
    inner: S,
    stopping: CancellationToken,
}

/// Whether a call to `path` continues work begun before the shutdown.
fn continues_work(path: &str) -> bool {
    path == "/arrow.flight.protocol.FlightService/DoGet" || path.starts_with("/grpc.health.v1.")
}

impl<S, B, R> tower::Service<http::Request<B>> for Draining<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    R: Default,
{
    type Response = http::Response<R>;
    type Error = S::Error;
    type Future = Either<Ready<Result<Self::Response, Self::Error>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if self.stopping.is_cancelled() && !continues_work(request.uri().path()) {
            return Either::Left(ready(Ok(tonic::Status::unavailable(REFUSAL).into_http())));
        }
        Either::Right(self.inner.call(request))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_fetches_and_health_checks_continue() {
        assert!(continues_work("/arrow.flight.protocol.FlightService/DoGet"));
        assert!(continues_work("/grpc.health.v1.Health/Check"));
        for new_work in [
            "/arrow.flight.protocol.FlightService/GetFlightInfo",
            "/arrow.flight.protocol.FlightService/DoPut",
            "/arrow.flight.protocol.FlightService/DoAction",
            "/arrow.flight.protocol.FlightService/Handshake",
            "/arrow.flight.protocol.FlightService/PollFlightInfo",
        ] {
            assert!(!continues_work(new_work), "{new_work}");
        }
    }
}
