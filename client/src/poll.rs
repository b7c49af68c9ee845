//! Running a query by polling (`PollFlightInfo`): the server starts it at
//! once and reports how far it has come until its result is ready, and the
//! client may cancel it meanwhile (`CancelFlightInfo`).

use std::time::Duration;

use arrow_flight::sql::{CommandStatementQuery, ProstMessageExt};
use arrow_flight::{
    Action, CancelFlightInfoRequest, CancelFlightInfoResult, CancelStatus, FlightDescriptor,
    FlightInfo, PollInfo,
};
use prost::Message;

use crate::{AUTHORIZATION, Client, ClientError, Result};

/// One answer to a poll.
#[derive(Debug, Clone)]
pub struct Polled {
    /// The result as far as it is known; its endpoints stream it.
    pub info: FlightInfo,
    /// Poll again with this until it is `None` (the result is ready).
    pub again: Option<FlightDescriptor>,
    /// The share of its input the query has read, from 0 to 1, if known.
    pub progress: Option<f64>,
    /// What a Tarn server adds: the query's id, what it read, how long ago
    /// it started (`None` from other servers).
    pub detail: Option<QueryProgress>,
}

/// How far a query has come, as a Tarn server reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueryProgress {
    /// Its id (`system.queries`, `CANCEL QUERY`).
    pub query_id: String,
    /// Rows its scans have read so far.
    pub rows_scanned: u64,
    /// Bytes it has read from files so far.
    pub bytes_scanned: u64,
    /// How long since it was submitted.
    pub elapsed: Duration,
}

impl Polled {
    fn from_poll(poll: PollInfo) -> Result<Self> {
        let info = poll.info.ok_or_else(|| {
            ClientError::Server(Box::new(tonic::Status::internal(
                "the server's PollFlightInfo answer has no FlightInfo",
            )))
        })?;
        let detail = tarn_proto::v1::QueryProgress::decode(info.app_metadata.as_ref())
            .ok()
            .filter(|p| !p.query_id.is_empty())
            .map(|p| QueryProgress {
                query_id: p.query_id,
                rows_scanned: p.rows_scanned,
                bytes_scanned: p.bytes_scanned,
                elapsed: Duration::from_millis(p.elapsed_ms),
            });
        Ok(Self {
            info,
            again: poll.flight_descriptor,
            progress: poll.progress,
            detail,
        })
    }
}

impl Client {
    /// Starts a query and returns at once with its first progress report.
    pub async fn start(&mut self, sql: &str) -> Result<Polled> {
        let command = CommandStatementQuery {
            query: sql.to_string(),
            transaction_id: None,
        };
        self.poll(FlightDescriptor::new_cmd(command.as_any().encode_to_vec()))
            .await
    }

    /// Polls with `descriptor` (a [`Polled::again`]).
    pub async fn poll(&mut self, descriptor: FlightDescriptor) -> Result<Polled> {
        let request = self.request(descriptor);
        let poll = self
            .inner
            .inner_mut()
            .poll_flight_info(request)
            .await?
            .into_inner();
        Polled::from_poll(poll)
    }

    /// Asks the server to stop the query behind `info` (also while it is
    /// being streamed): the `CancelFlightInfo` action.
    pub async fn cancel(&mut self, info: FlightInfo) -> Result<CancelStatus> {
        let body = CancelFlightInfoRequest::new(info).encode_to_vec();
        let request = self.request(Action::new("CancelFlightInfo", body));
        let mut answers = self
            .inner
            .inner_mut()
            .do_action(request)
            .await?
            .into_inner();
        let answer = answers.message().await?.ok_or_else(|| {
            ClientError::Server(Box::new(tonic::Status::internal(
                "the server answered CancelFlightInfo with nothing",
            )))
        })?;
        let result = CancelFlightInfoResult::decode(answer.body).map_err(|e| {
            ClientError::Server(Box::new(tonic::Status::internal(format!(
                "the server's CancelFlightInfo answer does not decode: {e}"
            ))))
        })?;
        Ok(result.status())
    }

    /// A request carrying this client's session token (and, if it asked
    /// for them, that it reads view types).
    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        if self.view_types {
            request.metadata_mut().insert(
                tarn_proto::VIEW_TYPES_HEADER,
                tonic::metadata::MetadataValue::from_static("true"),
            );
        }
        if let Some(value) = self
            .inner
            .token()
            .and_then(|token| format!("Bearer {token}").parse().ok())
        {
            request.metadata_mut().insert(AUTHORIZATION, value);
        }
        request
    }
}
