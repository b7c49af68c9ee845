//! Tarn's own protobuf messages.
//!
//! Flight SQL defines the envelope (`TicketStatementQuery`, prepared
//! statement handles); these messages define what Tarn puts inside it. They
//! are opaque to clients: a client only hands back the bytes it was given,
//! except `QueryProgress`, which a client may read to show a query's
//! progress.

/// Version 1 of Tarn's messages (`package tarn.v1`).
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/tarn.v1.rs"));
}

/// Arrow Flight's session messages (`package arrow.flight.protocol`):
/// `SetSessionOptions`, `GetSessionOptions` and `CloseSession` bodies.
pub mod flight_session {
    include!(concat!(env!("OUT_DIR"), "/arrow.flight.protocol.rs"));
}

/// The request header a client sends (value `true`) to say it reads Arrow
/// view types (`Utf8View`, `BinaryView`) and dictionaries: Tarn then sends
/// results as DataFusion produced them, without casting them to plain
/// `Utf8`/`Binary` for clients that cannot read views (JDBC, most drivers).
pub const VIEW_TYPES_HEADER: &str = "x-tarn-view-types";
