//! Tickets and prepared-statement handles: the opaque bytes Tarn hands out.
//!
//! A statement ticket is a Flight SQL `TicketStatementQuery` whose handle is
//! Tarn's own `ResultTicket` message. A metadata ticket is the metadata
//! command itself: it is cheap to recompute, valid on any connection and
//! never expires.

use arrow_flight::Ticket;
use arrow_flight::sql::{Any, Command, ProstMessageExt, TicketStatementQuery};
use prost::Message;
use tarn_proto::v1::{PreparedStatementHandle, ResultTicket};
use tonic::Status;

use super::status::malformed;
use crate::engine::{PreparedStatementId, ResultId};

/// A decoded ticket.
pub enum TicketKind {
    /// A planned statement result parked in the engine.
    Result(ResultId),
    /// A metadata command, answered when the ticket is redeemed.
    Metadata(Command),
}

/// The ticket for a parked result.
pub fn result_ticket(id: &ResultId) -> Ticket {
    let handle = ResultTicket {
        result_id: id.as_bytes().to_vec(),
    };
    let ticket = TicketStatementQuery {
        statement_handle: handle.encode_to_vec().into(),
    };
    Ticket::new(ticket.as_any().encode_to_vec())
}

/// The ticket for a metadata command: the command itself.
pub fn metadata_ticket(command: Command) -> Ticket {
    Ticket::new(command.into_any().encode_to_vec())
}

/// Decodes any protobuf `Any` carrying a Flight SQL command.
pub fn decode_command(bytes: &[u8], what: &str) -> Result<Command, Status> {
    let any = Any::decode(bytes).map_err(|e| malformed(what, e))?;
    Command::try_from(any).map_err(|e| malformed(what, e))
}

/// Decodes a ticket this server issued.
pub fn decode_ticket(ticket: &Ticket) -> Result<TicketKind, Status> {
    let not_ours = || {
        malformed(
            "ticket",
            "it was not issued by this server; use the ticket from GetFlightInfo",
        )
    };
    match decode_command(&ticket.ticket, "ticket")? {
        Command::TicketStatementQuery(t) => {
            let handle =
                ResultTicket::decode(t.statement_handle.as_ref()).map_err(|_| not_ours())?;
            ResultId::from_bytes(&handle.result_id)
                .map(TicketKind::Result)
                .ok_or_else(not_ours)
        }
        Command::Unknown(any) => Err(malformed(
            "ticket",
            format!("unknown command type '{}'", any.type_url),
        )),
        command => Ok(TicketKind::Metadata(command)),
    }
}

/// The handle bytes of a prepared statement.
pub fn prepared_handle(id: &PreparedStatementId) -> bytes::Bytes {
    PreparedStatementHandle {
        statement_id: id.as_bytes().to_vec(),
    }
    .encode_to_vec()
    .into()
}

/// Decodes a prepared statement handle this server issued.
pub fn decode_prepared_handle(handle: &[u8]) -> Result<PreparedStatementId, Status> {
    PreparedStatementHandle::decode(handle)
        .ok()
        .and_then(|h| PreparedStatementId::from_bytes(&h.statement_id))
        .ok_or_else(|| {
            Status::not_found(
                "no prepared statement with this handle: it was not issued by this server; prepare the statement again",
            )
        })
}
