//! The Flight SQL transport: decodes requests, calls the [`Engine`], encodes
//! answers. It owns no query logic.
//!
//! [`Engine`]: crate::engine::Engine

mod audit;
mod credentials;
mod draining;
mod ipc;
mod metadata;
mod rpc;
mod rpc_spans;
mod service;
mod sessions;
mod sql_info;
mod status;
mod ticket;

use std::sync::Arc;

use arrow_flight::flight_service_server::FlightServiceServer;

pub use draining::DrainingLayer;
pub use rpc_spans::RpcSpanLayer;
pub use service::FlightSqlEndpoint;

use crate::auth::Authenticator;
use crate::catalog::AuditLog;
use crate::engine::Engine;

/// Transport limits.
#[derive(Debug, Clone)]
pub struct FlightOptions {
    /// The largest gRPC message accepted or sent, in bytes.
    pub max_message_size: usize,
    /// The size result messages aim at, in bytes.
    pub max_flight_data_size: usize,
}

impl Default for FlightOptions {
    fn default() -> Self {
        Self {
            max_message_size: 64 * 1024 * 1024,
            max_flight_data_size: 2 * 1024 * 1024,
        }
    }
}

/// The layer that makes tonic's answer to a request message that does not
/// decode (INTERNAL, "failed to decode Protobuf message", sent before any
/// handler runs) an INVALID_ARGUMENT: the bytes came from the client.
pub fn undecodable_requests_are_invalid_arguments() -> tower::util::MapResponseLayer<
    fn(http::Response<tonic::body::Body>) -> http::Response<tonic::body::Body>,
> {
    tower::util::MapResponseLayer::new(status::undecodable_request_as_invalid_argument)
}

/// The gRPC service that serves `engine` over Flight SQL.
pub fn service(
    engine: Arc<Engine>,
    auth: Arc<Authenticator>,
    audit: Arc<dyn AuditLog>,
    options: &FlightOptions,
) -> FlightServiceServer<FlightSqlEndpoint> {
    FlightServiceServer::new(FlightSqlEndpoint::new(
        engine,
        auth,
        audit,
        options.max_flight_data_size,
    ))
    .max_decoding_message_size(options.max_message_size)
    .max_encoding_message_size(options.max_message_size)
}
