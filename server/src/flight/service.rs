//! `FlightService` for Flight SQL, implemented directly (not through
//! arrow-rs's `FlightSqlService` trait) so that PollFlightInfo, GetSchema and
//! CancelFlightInfo are ours to serve, and authentication can wrap every call
//! later. Each request is decoded once into a typed [`Command`], then
//! dispatched to the engine.

use std::pin::Pin;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow::ipc::writer::IpcWriteOptions;
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::encode::{DictionaryHandling, FlightDataEncoderBuilder};
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::sql::{
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest,
    ActionCreatePreparedStatementResult, Any, Command, DoPutPreparedStatementResult,
    DoPutUpdateResult, ProstMessageExt,
};
use arrow_flight::{
    Action, ActionType, CancelFlightInfoRequest, CancelFlightInfoResult, CancelStatus, Criteria,
    Empty, FlightData, FlightDescriptor, FlightEndpoint, FlightInfo, HandshakeRequest,
    HandshakeResponse, IpcMessage, PollInfo, PutResult, SchemaAsIpc, SchemaResult, Ticket,
};
use futures::{FutureExt, Stream, StreamExt, TryStreamExt};
use prost::Message;
use tonic::{Request, Response, Status, Streaming};

use super::metadata;
use super::status::{bounded, from_request_stream, malformed, to_status};
use super::ticket::{
    TicketKind, decode_command, decode_prepared_handle, decode_ticket, metadata_ticket,
    prepared_handle, result_ticket,
};
use crate::engine::{Engine, EngineError, PlannedQuery};

type BoxedStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

const CREATE_PREPARED_STATEMENT: &str = "CreatePreparedStatement";
const CLOSE_PREPARED_STATEMENT: &str = "ClosePreparedStatement";
const CANCEL_FLIGHT_INFO: &str = "CancelFlightInfo";

/// Tarn's Flight SQL endpoint: a thin layer over the [`Engine`].
#[derive(Debug, Clone)]
pub struct FlightSqlEndpoint {
    engine: Arc<Engine>,
    max_flight_data_size: usize,
}

impl FlightSqlEndpoint {
    /// An endpoint serving `engine`; result messages aim at
    /// `max_flight_data_size` bytes each.
    pub fn new(engine: Arc<Engine>, max_flight_data_size: usize) -> Self {
        Self {
            engine,
            max_flight_data_size,
        }
    }

    async fn flight_info(&self, descriptor: FlightDescriptor) -> Result<FlightInfo, Status> {
        let command = decode_command(&descriptor.cmd, "FlightDescriptor command")?;
        match command {
            Command::CommandStatementQuery(query) => {
                let planned = self
                    .engine
                    .plan_query(&query.query)
                    .await
                    .map_err(to_status)?;
                self.result_info(planned, descriptor)
            }
            Command::CommandPreparedStatementQuery(cmd) => {
                let id = decode_prepared_handle(&cmd.prepared_statement_handle)?;
                let planned = self
                    .engine
                    .plan_prepared_query(&id)
                    .await
                    .map_err(to_status)?;
                self.result_info(planned, descriptor)
            }
            command => {
                let schema =
                    metadata::schema(&command).ok_or_else(|| not_for(&command, "GetFlightInfo"))?;
                let endpoint = FlightEndpoint::new().with_ticket(metadata_ticket(command));
                info(&schema, descriptor, endpoint)
            }
        }
    }

    fn result_info(
        &self,
        planned: PlannedQuery,
        descriptor: FlightDescriptor,
    ) -> Result<FlightInfo, Status> {
        let schema = planned.schema();
        let id = self.engine.park(planned);
        let endpoint = FlightEndpoint::new()
            .with_ticket(result_ticket(&id))
            .with_expiration_time(self.engine.result_expiry().into());
        info(&schema, descriptor, endpoint)
    }

    async fn schema(&self, descriptor: &FlightDescriptor) -> Result<SchemaRef, Status> {
        let command = decode_command(&descriptor.cmd, "FlightDescriptor command")?;
        match command {
            Command::CommandStatementQuery(query) => {
                self.engine.schema_of(&query.query).await.map_err(to_status)
            }
            Command::CommandPreparedStatementQuery(cmd) => {
                let id = decode_prepared_handle(&cmd.prepared_statement_handle)?;
                self.engine.prepared_dataset_schema(&id).map_err(to_status)
            }
            command => metadata::schema(&command).ok_or_else(|| not_for(&command, "GetSchema")),
        }
    }

    /// Encodes `batches` as Flight data: the schema first (even for zero
    /// rows), then every non-empty batch.
    fn encode(
        &self,
        schema: SchemaRef,
        batches: impl Stream<Item = Result<RecordBatch, FlightError>> + Send + 'static,
    ) -> BoxedStream<FlightData> {
        let batches = batches.try_filter(|b| futures::future::ready(b.num_rows() > 0));
        let encoded = FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .with_max_flight_data_size(self.max_flight_data_size)
            // Wire types already removed dictionaries unless the client asked
            // for them; then they go out as they are.
            .with_dictionary_handling(DictionaryHandling::Resend)
            .build(batches)
            .map_err(|e| bounded(Status::from(e)));
        Box::pin(encoded)
    }

    async fn put(
        &self,
        command: Command,
        data: BoxedStream<FlightData>,
    ) -> Result<PutResult, Status> {
        match command {
            Command::CommandStatementUpdate(update) => {
                let count = self
                    .engine
                    .execute_update(&update.query)
                    .await
                    .map_err(to_status)?;
                Ok(update_result(count))
            }
            Command::CommandPreparedStatementQuery(cmd) => {
                let id = decode_prepared_handle(&cmd.prepared_statement_handle)?;
                let batches = decode_batches(data).await?;
                self.engine.bind(&id, &batches).map_err(to_status)?;
                let result = DoPutPreparedStatementResult {
                    prepared_statement_handle: Some(cmd.prepared_statement_handle),
                };
                Ok(PutResult {
                    app_metadata: result.encode_to_vec().into(),
                })
            }
            Command::CommandPreparedStatementUpdate(cmd) => {
                let id = decode_prepared_handle(&cmd.prepared_statement_handle)?;
                let batches = decode_batches(data).await?;
                if !batches.is_empty() {
                    self.engine.bind(&id, &batches).map_err(to_status)?;
                }
                let count = self
                    .engine
                    .execute_prepared_update(&id)
                    .await
                    .map_err(to_status)?;
                Ok(update_result(count))
            }
            Command::CommandStatementIngest(_) => Err(Status::unimplemented(
                "bulk ingestion (CommandStatementIngest) is not supported yet; use INSERT INTO ... VALUES or CREATE EXTERNAL TABLE",
            )),
            command => Err(not_for(&command, "DoPut")),
        }
    }

    async fn create_prepared_statement(&self, body: &[u8]) -> Result<arrow_flight::Result, Status> {
        let request: ActionCreatePreparedStatementRequest =
            unpack_action(body, CREATE_PREPARED_STATEMENT)?;
        if request.transaction_id.is_some() {
            return Err(Status::unimplemented(
                "transactions are not supported; prepare without a transaction id",
            ));
        }
        let prepared = self
            .engine
            .prepare(&request.query)
            .await
            .map_err(to_status)?;
        let result = ActionCreatePreparedStatementResult {
            prepared_statement_handle: prepared_handle(&prepared.id),
            dataset_schema: ipc_schema(&prepared.dataset_schema)?,
            parameter_schema: ipc_schema(&prepared.parameter_schema)?,
        };
        Ok(arrow_flight::Result {
            body: result.as_any().encode_to_vec().into(),
        })
    }

    fn close_prepared_statement(&self, body: &[u8]) -> Result<(), Status> {
        let request: ActionClosePreparedStatementRequest =
            unpack_action(body, CLOSE_PREPARED_STATEMENT)?;
        let id = decode_prepared_handle(&request.prepared_statement_handle)?;
        self.engine.close_prepared(&id).map_err(to_status)
    }

    fn cancel_flight_info(&self, body: &[u8]) -> Result<arrow_flight::Result, Status> {
        let request = CancelFlightInfoRequest::decode(body)
            .map_err(|e| malformed("CancelFlightInfoRequest", e))?;
        let info = request.info.ok_or_else(|| {
            Status::invalid_argument("CancelFlightInfoRequest has no FlightInfo to cancel")
        })?;
        let mut cancelled = false;
        for endpoint in info.endpoint {
            if let Some(ticket) = endpoint.ticket
                && let Ok(TicketKind::Result(id)) = decode_ticket(&ticket)
            {
                cancelled |= self.engine.cancel(&id);
            }
        }
        let status = if cancelled {
            CancelStatus::Cancelled
        } else {
            CancelStatus::NotCancellable
        };
        Ok(arrow_flight::Result {
            body: CancelFlightInfoResult::new(status).encode_to_vec().into(),
        })
    }
}

fn info(
    schema: &SchemaRef,
    descriptor: FlightDescriptor,
    endpoint: FlightEndpoint,
) -> Result<FlightInfo, Status> {
    Ok(FlightInfo::new()
        .try_with_schema(schema)
        .map_err(|e| Status::internal(format!("encoding the result schema: {e}")))?
        .with_descriptor(descriptor)
        .with_endpoint(endpoint)
        .with_ordered(true)
        .with_total_records(-1)
        .with_total_bytes(-1))
}

fn not_for(command: &Command, call: &str) -> Status {
    match command {
        Command::Unknown(any) => Status::invalid_argument(format!(
            "unknown Flight SQL command '{}'; Tarn speaks Flight SQL (arrow.flight.protocol.sql)",
            any.type_url
        )),
        Command::CommandStatementSubstraitPlan(_) => {
            Status::unimplemented("Substrait plans are not supported; send SQL text")
        }
        other => {
            Status::invalid_argument(format!("{} cannot be sent with {call}", other.type_url()))
        }
    }
}

fn update_result(count: u64) -> PutResult {
    let result = DoPutUpdateResult {
        record_count: i64::try_from(count).unwrap_or(i64::MAX),
    };
    PutResult {
        app_metadata: result.encode_to_vec().into(),
    }
}

fn ipc_schema(schema: &SchemaRef) -> Result<bytes::Bytes, Status> {
    let message: IpcMessage = SchemaAsIpc::new(schema, &IpcWriteOptions::default())
        .try_into()
        .map_err(|e: arrow::error::ArrowError| {
            Status::internal(format!("encoding a schema: {e}"))
        })?;
    Ok(message.0)
}

fn unpack_action<M: ProstMessageExt + Default>(body: &[u8], action: &str) -> Result<M, Status> {
    let any = Any::decode(body).map_err(|e| malformed(action, e))?;
    any.unpack::<M>()
        .map_err(|e| malformed(action, e))?
        .ok_or_else(|| {
            malformed(
                action,
                format!("the body is a '{}', not a {action} request", any.type_url),
            )
        })
}

/// Decodes the record batches of a DoPut stream (parameter rows).
///
/// Each message is checked against its own header before arrow decodes it
/// (arrow's decoder panics on a body shorter than its header says), and
/// decoding runs inside a panic boundary, so no byte a client sends can
/// panic a thread that serves the network.
async fn decode_batches(data: BoxedStream<FlightData>) -> Result<Vec<RecordBatch>, Status> {
    // Messages that only carry the descriptor have no IPC header to decode.
    let data = data
        .try_filter(|d| futures::future::ready(!d.data_header.is_empty()))
        .and_then(|message| {
            let checked = ipc_body_fits(&message)
                .map(|()| message)
                .map_err(|why| malformed("parameter batches", why));
            futures::future::ready(checked)
        })
        .map_err(FlightError::from);
    let decoding = FlightRecordBatchStream::new_from_flight_data(data).try_collect::<Vec<_>>();
    match std::panic::AssertUnwindSafe(decoding).catch_unwind().await {
        Ok(Ok(batches)) => Ok(batches),
        Ok(Err(e)) => Err(malformed("parameter batches", Status::from(e).message())),
        Err(_) => Err(malformed(
            "parameter batches",
            "the IPC data does not match its header",
        )),
    }
}

/// Checks that every buffer an IPC message's header describes lies inside
/// the message's body.
fn ipc_body_fits(message: &FlightData) -> Result<(), String> {
    use arrow::ipc::MessageHeader;
    let header = arrow::ipc::root_as_message(&message.data_header)
        .map_err(|e| format!("the IPC header does not parse ({e})"))?;
    let body = message.data_body.len();
    let announced = usize::try_from(header.bodyLength()).unwrap_or(usize::MAX);
    if announced > body {
        return Err(format!(
            "the body is {body} bytes, but its header announces {announced}"
        ));
    }
    let buffers = match header.header_type() {
        MessageHeader::RecordBatch => header.header_as_record_batch().and_then(|b| b.buffers()),
        MessageHeader::DictionaryBatch => header
            .header_as_dictionary_batch()
            .and_then(|d| d.data())
            .and_then(|b| b.buffers()),
        _ => None,
    };
    for (i, buffer) in buffers.iter().flat_map(|b| b.iter()).enumerate() {
        let end = usize::try_from(buffer.offset())
            .ok()
            .zip(usize::try_from(buffer.length()).ok())
            .and_then(|(offset, length)| offset.checked_add(length));
        if end.is_none_or(|end| end > body) {
            return Err(format!(
                "buffer {i} (offset {}, length {}) lies outside the {body}-byte body",
                buffer.offset(),
                buffer.length()
            ));
        }
    }
    Ok(())
}

/// The calls, each answering with a `Status` of its own on failure; the
/// `FlightService` impl below only bounds what they say.
impl FlightSqlEndpoint {
    async fn poll(&self, descriptor: FlightDescriptor) -> Result<PollInfo, Status> {
        // Queries are planned synchronously, so the first poll is also the last.
        let info = self.flight_info(descriptor).await?;
        Ok(PollInfo {
            info: Some(info),
            flight_descriptor: None,
            progress: Some(1.0),
            expiration_time: None,
        })
    }

    async fn schema_result(&self, descriptor: &FlightDescriptor) -> Result<SchemaResult, Status> {
        let schema = self.schema(descriptor).await?;
        SchemaResult::try_from(SchemaAsIpc::new(&schema, &IpcWriteOptions::default()))
            .map_err(|e| Status::internal(format!("encoding a schema: {e}")))
    }

    async fn get(&self, ticket: &Ticket) -> Result<BoxedStream<FlightData>, Status> {
        match decode_ticket(ticket)? {
            TicketKind::Result(id) => {
                let planned = self.engine.take(&id).map_err(to_status)?;
                let schema = planned.schema();
                let batches = self.engine.execute(planned).map_err(|e| {
                    FlightError::Tonic(Box::new(to_status(EngineError::from_execution(e))))
                });
                Ok(self.encode(schema, batches))
            }
            TicketKind::Metadata(command) => {
                let batch = metadata::answer(&self.engine, command).await?;
                let schema = batch.schema();
                Ok(self.encode(schema, futures::stream::once(async { Ok(batch) })))
            }
        }
    }

    async fn put_stream(&self, stream: Streaming<FlightData>) -> Result<PutResult, Status> {
        // A message of the stream that does not decode is the client's error.
        let mut stream = stream.map_err(from_request_stream);
        let first = stream.next().await.transpose()?.ok_or_else(|| {
            Status::invalid_argument(
                "DoPut stream is empty; its first message must carry a FlightDescriptor",
            )
        })?;
        let descriptor = first.flight_descriptor.as_ref().ok_or_else(|| {
            Status::invalid_argument(
                "the first DoPut message must carry a FlightDescriptor with a Flight SQL command",
            )
        })?;
        let command = decode_command(&descriptor.cmd, "DoPut command")?;
        let data: BoxedStream<FlightData> =
            Box::pin(futures::stream::once(async { Ok(first) }).chain(stream));
        self.put(command, data).await
    }

    async fn action(&self, action: Action) -> Result<Vec<arrow_flight::Result>, Status> {
        match action.r#type.as_str() {
            CREATE_PREPARED_STATEMENT => {
                Ok(vec![self.create_prepared_statement(&action.body).await?])
            }
            CLOSE_PREPARED_STATEMENT => {
                self.close_prepared_statement(&action.body)?;
                Ok(vec![])
            }
            CANCEL_FLIGHT_INFO => Ok(vec![self.cancel_flight_info(&action.body)?]),
            "BeginTransaction" | "EndTransaction" | "BeginSavepoint" | "EndSavepoint" => Err(
                Status::unimplemented("transactions are not supported by Tarn"),
            ),
            "CreatePreparedSubstraitPlan" => Err(Status::unimplemented(
                "Substrait plans are not supported; send SQL text",
            )),
            other => Err(Status::invalid_argument(format!(
                "unknown action '{other}'; ListActions lists the supported ones"
            ))),
        }
    }
}

fn once<T: Send + 'static>(item: T) -> BoxedStream<T> {
    Box::pin(futures::stream::once(async { Ok(item) }))
}

#[tonic::async_trait]
impl FlightService for FlightSqlEndpoint {
    type HandshakeStream = BoxedStream<HandshakeResponse>;
    type ListFlightsStream = BoxedStream<FlightInfo>;
    type DoGetStream = BoxedStream<FlightData>;
    type DoPutStream = BoxedStream<PutResult>;
    type DoExchangeStream = BoxedStream<FlightData>;
    type DoActionStream = BoxedStream<arrow_flight::Result>;
    type ListActionsStream = BoxedStream<ActionType>;

    async fn handshake(
        &self,
        _request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        // No authentication yet: every handshake succeeds.
        Ok(Response::new(once(HandshakeResponse {
            protocol_version: 0,
            payload: Default::default(),
        })))
    }

    async fn list_flights(
        &self,
        _request: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        Err(Status::unimplemented(
            "ListFlights is not supported; list tables with the Flight SQL command GetTables",
        ))
    }

    async fn get_flight_info(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.flight_info(request.into_inner())
            .await
            .map(Response::new)
            .map_err(bounded)
    }

    async fn poll_flight_info(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        self.poll(request.into_inner())
            .await
            .map(Response::new)
            .map_err(bounded)
    }

    async fn get_schema(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        self.schema_result(request.get_ref())
            .await
            .map(Response::new)
            .map_err(bounded)
    }

    async fn do_get(
        &self,
        request: Request<Ticket>,
    ) -> Result<Response<Self::DoGetStream>, Status> {
        self.get(request.get_ref())
            .await
            .map(Response::new)
            .map_err(bounded)
    }

    async fn do_put(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        self.put_stream(request.into_inner())
            .await
            .map(|result| Response::new(once(result)))
            .map_err(bounded)
    }

    async fn do_exchange(
        &self,
        _request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        Err(Status::unimplemented("DoExchange is not supported by Tarn"))
    }

    async fn do_action(
        &self,
        request: Request<Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        let results = self.action(request.into_inner()).await.map_err(bounded)?;
        Ok(Response::new(Box::pin(futures::stream::iter(
            results.into_iter().map(Ok),
        ))))
    }

    async fn list_actions(
        &self,
        _request: Request<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        let actions = [
            (
                CREATE_PREPARED_STATEMENT,
                "Plans a SQL statement with placeholders; returns a handle and its schemas.",
            ),
            (CLOSE_PREPARED_STATEMENT, "Releases a prepared statement."),
            (
                CANCEL_FLIGHT_INFO,
                "Drops the pending result of a FlightInfo.",
            ),
        ]
        .map(|(name, description)| {
            Ok(ActionType {
                r#type: name.to_string(),
                description: description.to_string(),
            })
        });
        Ok(Response::new(Box::pin(futures::stream::iter(actions))))
    }
}
