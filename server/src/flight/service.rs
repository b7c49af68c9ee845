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
use arrow_flight::encode::{DictionaryHandling, FlightDataEncoderBuilder};
use arrow_flight::error::FlightError;
use arrow_flight::sql::{
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest,
    ActionCreatePreparedStatementResult, Any, Command, DoPutPreparedStatementResult,
    DoPutUpdateResult, ProstMessageExt,
};
use arrow_flight::{
    Action, CancelFlightInfoRequest, CancelFlightInfoResult, CancelStatus, FlightData,
    FlightDescriptor, FlightEndpoint, FlightInfo, IpcMessage, PollInfo, PutResult, SchemaAsIpc,
    SchemaResult, Ticket,
};
use futures::{Stream, StreamExt, TryStreamExt};
use prost::Message;
use tonic::{Status, Streaming};

use super::audit::Call;
use super::ipc::decode_batches;
use super::metadata;
use super::sessions::{CLOSE_SESSION, GET_SESSION_OPTIONS, SET_SESSION_OPTIONS};
use super::status::{bounded, from_request_stream, malformed, to_status};
use super::ticket::{
    TicketKind, decode_command, decode_prepared_handle, decode_ticket, metadata_ticket,
    prepared_handle, result_ticket,
};
use crate::auth::Authenticator;
use crate::catalog::AuditLog;
use crate::engine::{Engine, EngineError, PlannedQuery, Progress, ResultId};

pub(super) type BoxedStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

pub(super) const CREATE_PREPARED_STATEMENT: &str = "CreatePreparedStatement";
pub(super) const CLOSE_PREPARED_STATEMENT: &str = "ClosePreparedStatement";
pub(super) const CANCEL_FLIGHT_INFO: &str = "CancelFlightInfo";

/// Tarn's Flight SQL endpoint: a thin layer over the [`Engine`].
#[derive(Debug, Clone)]
pub struct FlightSqlEndpoint {
    pub(super) engine: Arc<Engine>,
    pub(super) auth: Arc<Authenticator>,
    pub(super) audit: Arc<dyn AuditLog>,
    max_flight_data_size: usize,
}

impl FlightSqlEndpoint {
    /// An endpoint serving `engine` to the principals `auth` lets in;
    /// result messages aim at `max_flight_data_size` bytes each.
    pub fn new(
        engine: Arc<Engine>,
        auth: Arc<Authenticator>,
        audit: Arc<dyn AuditLog>,
        max_flight_data_size: usize,
    ) -> Self {
        Self {
            engine,
            auth,
            audit,
            max_flight_data_size,
        }
    }

    pub(super) async fn flight_info(
        &self,
        descriptor: FlightDescriptor,
        call: &Call,
    ) -> Result<FlightInfo, Status> {
        self.plan_info(descriptor, call, false)
            .await
            .map(|(info, _)| info)
    }

    /// Plans what `descriptor` asks for; a query's result is parked (and
    /// with `start`, starts executing at once). Returns the result's id.
    async fn plan_info(
        &self,
        descriptor: FlightDescriptor,
        call: &Call,
        start: bool,
    ) -> Result<(FlightInfo, Option<ResultId>), Status> {
        let command = decode_command(&descriptor.cmd, "FlightDescriptor command")?;
        self.note(call, &command);
        match command {
            Command::CommandStatementQuery(query) => {
                let planned = self
                    .engine
                    .plan_query(&query.query, &call.session)
                    .await
                    .map_err(to_status)?;
                self.result_info(planned, descriptor, call, start)
            }
            Command::CommandPreparedStatementQuery(cmd) => {
                let id = decode_prepared_handle(&cmd.prepared_statement_handle)?;
                let planned = self
                    .engine
                    .plan_prepared_query(&id, &call.session)
                    .await
                    .map_err(to_status)?;
                self.result_info(planned, descriptor, call, start)
            }
            command => {
                let schema =
                    metadata::schema(&command).ok_or_else(|| not_for(&command, "GetFlightInfo"))?;
                let endpoint = FlightEndpoint::new().with_ticket(metadata_ticket(command));
                Ok((info(&schema, descriptor, endpoint)?, None))
            }
        }
    }

    /// Tells the audit log which command `call` carries, and its SQL.
    fn note(&self, call: &Call, command: &Command) {
        let prepared_sql = |handle: &bytes::Bytes| {
            decode_prepared_handle(handle)
                .ok()
                .and_then(|id| self.engine.prepared_sql(&id))
        };
        let sql = match command {
            Command::CommandStatementQuery(query) => Some(query.query.clone()),
            Command::CommandStatementUpdate(update) => Some(update.query.clone()),
            Command::CommandPreparedStatementQuery(cmd) => {
                prepared_sql(&cmd.prepared_statement_handle)
            }
            Command::CommandPreparedStatementUpdate(cmd) => {
                prepared_sql(&cmd.prepared_statement_handle)
            }
            _ => None,
        };
        let name = command.type_url();
        let name = name.rsplit('.').next().unwrap_or(name);
        call.note(name, sql.as_deref());
    }

    fn result_info(
        &self,
        planned: PlannedQuery,
        descriptor: FlightDescriptor,
        call: &Call,
        start: bool,
    ) -> Result<(FlightInfo, Option<ResultId>), Status> {
        let schema = planned.schema();
        let id = self.engine.park(planned).map_err(to_status)?;
        if start {
            self.engine
                .start(&id, call.principal())
                .map_err(to_status)?;
        }
        Ok((self.parked_info(&schema, descriptor, &id)?, Some(id)))
    }

    /// The `FlightInfo` of the parked result `id`.
    fn parked_info(
        &self,
        schema: &SchemaRef,
        descriptor: FlightDescriptor,
        id: &ResultId,
    ) -> Result<FlightInfo, Status> {
        let endpoint = FlightEndpoint::new()
            .with_ticket(result_ticket(id))
            .with_expiration_time(self.engine.result_expiry().into());
        info(schema, descriptor, endpoint)
    }

    async fn schema(
        &self,
        descriptor: &FlightDescriptor,
        call: &Call,
    ) -> Result<SchemaRef, Status> {
        let command = decode_command(&descriptor.cmd, "FlightDescriptor command")?;
        self.note(call, &command);
        match command {
            Command::CommandStatementQuery(query) => self
                .engine
                .schema_of(&query.query, &call.session)
                .await
                .map_err(to_status),
            Command::CommandPreparedStatementQuery(cmd) => {
                let id = decode_prepared_handle(&cmd.prepared_statement_handle)?;
                self.engine
                    .prepared_dataset_schema(&id, call.principal())
                    .map_err(to_status)
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
        call: &Call,
    ) -> Result<PutResult, Status> {
        match command {
            Command::CommandStatementUpdate(update) => {
                let count = self
                    .engine
                    .execute_update(&update.query, &call.session)
                    .await
                    .map_err(to_status)?;
                Ok(update_result(count))
            }
            Command::CommandPreparedStatementQuery(cmd) => {
                let id = decode_prepared_handle(&cmd.prepared_statement_handle)?;
                let batches = decode_batches(data).await?;
                self.engine
                    .bind(&id, &batches, call.principal())
                    .map_err(to_status)?;
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
                    self.engine
                        .bind(&id, &batches, call.principal())
                        .map_err(to_status)?;
                }
                let count = self
                    .engine
                    .execute_prepared_update(&id, &call.session)
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

    async fn create_prepared_statement(
        &self,
        body: &[u8],
        call: &Call,
    ) -> Result<arrow_flight::Result, Status> {
        let request: ActionCreatePreparedStatementRequest =
            unpack_action(body, CREATE_PREPARED_STATEMENT)?;
        call.note(CREATE_PREPARED_STATEMENT, Some(&request.query));
        if request.transaction_id.is_some() {
            return Err(Status::unimplemented(
                "transactions are not supported; prepare without a transaction id",
            ));
        }
        let prepared = self
            .engine
            .prepare(&request.query, &call.session)
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

    fn close_prepared_statement(&self, body: &[u8], call: &Call) -> Result<(), Status> {
        let request: ActionClosePreparedStatementRequest =
            unpack_action(body, CLOSE_PREPARED_STATEMENT)?;
        let id = decode_prepared_handle(&request.prepared_statement_handle)?;
        self.engine
            .close_prepared(&id, call.principal())
            .map_err(to_status)
    }

    fn cancel_flight_info(&self, body: &[u8], call: &Call) -> Result<arrow_flight::Result, Status> {
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
                cancelled |= self.engine.cancel(&id, call.principal());
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

/// A poll's answer: the result's `info`, and until it is ready to fetch,
/// the descriptor to poll again with.
fn poll_info(info: FlightInfo, again: FlightDescriptor, progress: &Progress) -> PollInfo {
    let detail = tarn_proto::v1::QueryProgress {
        query_id: progress.query_id.clone().unwrap_or_default(),
        rows_scanned: progress.rows_scanned,
        bytes_scanned: progress.bytes_scanned,
        elapsed_ms: progress.elapsed.as_millis() as u64,
    };
    let info = info.with_app_metadata(detail.encode_to_vec());
    PollInfo {
        expiration_time: info.endpoint.first().and_then(|e| e.expiration_time),
        info: Some(info),
        flight_descriptor: (!progress.ready).then_some(again),
        progress: Some(progress.fraction),
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

/// The calls, each answering with a `Status` of its own on failure; the
/// `FlightService` impl below only bounds what they say.
impl FlightSqlEndpoint {
    pub(super) async fn poll(
        &self,
        descriptor: FlightDescriptor,
        call: &Call,
    ) -> Result<PollInfo, Status> {
        // A poll descriptor is the ticket of a query an earlier poll started.
        if let Ok(TicketKind::Result(id)) = decode_ticket(&Ticket::new(descriptor.cmd.clone())) {
            let progress = self
                .engine
                .progress(&id, call.principal())
                .map_err(to_status)?;
            let info = self.parked_info(&progress.schema, descriptor.clone(), &id)?;
            return Ok(poll_info(info, descriptor, &progress));
        }
        let (info, id) = self.plan_info(descriptor, call, true).await?;
        let Some(id) = id else {
            // Metadata: answered whole when its ticket is fetched.
            return Ok(PollInfo {
                info: Some(info),
                flight_descriptor: None,
                progress: Some(1.0),
                expiration_time: None,
            });
        };
        let progress = self
            .engine
            .progress(&id, call.principal())
            .map_err(to_status)?;
        let again = FlightDescriptor::new_cmd(result_ticket(&id).ticket);
        Ok(poll_info(info, again, &progress))
    }

    pub(super) async fn schema_result(
        &self,
        descriptor: &FlightDescriptor,
        call: &Call,
    ) -> Result<SchemaResult, Status> {
        let schema = self.schema(descriptor, call).await?;
        SchemaResult::try_from(SchemaAsIpc::new(&schema, &IpcWriteOptions::default()))
            .map_err(|e| Status::internal(format!("encoding a schema: {e}")))
    }

    pub(super) async fn get(
        &self,
        ticket: &Ticket,
        call: &Call,
    ) -> Result<BoxedStream<FlightData>, Status> {
        match decode_ticket(ticket)? {
            TicketKind::Result(id) => {
                let parked = self.engine.take(&id, call.principal()).map_err(to_status)?;
                call.note("Result", parked.sql());
                let schema = parked.schema();
                let batches = self.engine.stream(parked).map_err(|e| {
                    FlightError::Tonic(Box::new(to_status(EngineError::from_execution(e))))
                });
                Ok(self.encode(schema, batches))
            }
            TicketKind::Metadata(command) => {
                self.note(call, &command);
                let batch = metadata::answer(&self.engine, &call.session, command).await?;
                let schema = batch.schema();
                Ok(self.encode(schema, futures::stream::once(async { Ok(batch) })))
            }
        }
    }

    pub(super) async fn put_stream(
        &self,
        stream: Streaming<FlightData>,
        call: &Call,
    ) -> Result<PutResult, Status> {
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
        self.note(call, &command);
        let data: BoxedStream<FlightData> =
            Box::pin(futures::stream::once(async { Ok(first) }).chain(stream));
        self.put(command, data, call).await
    }

    pub(super) async fn action(
        &self,
        action: Action,
        call: &Call,
    ) -> Result<Vec<arrow_flight::Result>, Status> {
        if action.r#type != CREATE_PREPARED_STATEMENT {
            call.note(&action.r#type, None);
        }
        match action.r#type.as_str() {
            CREATE_PREPARED_STATEMENT => Ok(vec![
                self.create_prepared_statement(&action.body, call).await?,
            ]),
            CLOSE_PREPARED_STATEMENT => {
                self.close_prepared_statement(&action.body, call)?;
                Ok(vec![])
            }
            CANCEL_FLIGHT_INFO => Ok(vec![self.cancel_flight_info(&action.body, call)?]),
            SET_SESSION_OPTIONS | GET_SESSION_OPTIONS | CLOSE_SESSION => {
                Ok(vec![self.session_action(
                    &action.r#type,
                    &action.body,
                    call,
                )?])
            }
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

pub(super) fn once<T: Send + 'static>(item: T) -> BoxedStream<T> {
    Box::pin(futures::stream::once(async { Ok(item) }))
}
