//! The `FlightService` calls: each is authenticated, served by the
//! handlers in `service.rs`, and audited.

use std::future::Future;
use std::sync::Arc;

use arrow_flight::flight_service_server::FlightService;
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightInfo,
    HandshakeRequest, HandshakeResponse, PollInfo, PutResult, SchemaResult, Ticket,
};
use tonic::{Request, Response, Status, Streaming};

use super::audit::{Audit, Call};
use super::credentials::{attempted_user, respond};
use super::service::{
    BoxedStream, CANCEL_FLIGHT_INFO, CLOSE_PREPARED_STATEMENT, CREATE_PREPARED_STATEMENT,
    FlightSqlEndpoint, once,
};
use super::sessions::{CLOSE_SESSION, GET_SESSION_OPTIONS, SET_SESSION_OPTIONS, give_cookie};
use super::status::bounded;

/// Every call: authenticated, served, audited.
impl FlightSqlEndpoint {
    /// Authenticates `request`, serves it with `work` and audits the call.
    async fn serve<T, R, F, Fut>(
        &self,
        request: Request<T>,
        method: &str,
        work: F,
    ) -> Result<Response<R>, Status>
    where
        F: FnOnce(Request<T>, Arc<Call>) -> Fut,
        Fut: Future<Output = Result<R, Status>>,
    {
        let audit = Audit::begin(&self.audit, &request, method);
        let who = match self.authenticate(&request).await {
            Ok(who) => who,
            Err(status) => {
                audit
                    .detail(attempted_user(&request).map(|u| format!("user '{u}'")))
                    .end(None, Err(&status));
                return Err(status);
            }
        };
        let (session, ended) = self.session_for(&request, &who);
        let call = Arc::new(Call::new(session, ended));
        let answer = work(request, Arc::clone(&call)).await.map_err(bounded);
        audit.end(Some(&call), answer.as_ref().map(|_| ()));
        respond(answer, &who, &call)
    }
}

/// How long a handshake waits for the client's message before it answers.
const HANDSHAKE_READ: std::time::Duration = std::time::Duration::from_secs(5);

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
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        let audit = Audit::begin(&self.audit, &request, "Handshake");
        match self.handshake_with(&request).await {
            Ok((mut response, who)) => {
                // Answer after the client's message (or its end of stream): a
                // response that overtakes the request leaves the request body
                // unread, h2 then resets the stream, and some clients (pyarrow's
                // handshake) wait forever for an answer they never get.
                let (session, ended) = self.session_for(&request, &who);
                let mut incoming = request.into_inner();
                let _ = tokio::time::timeout(HANDSHAKE_READ, incoming.message()).await;
                // The session the login's later calls will run in.
                let call = Call::new(session, ended);
                call.note("login", None);
                give_cookie(&mut response, &call.session)?;
                audit.end(Some(&call), Ok(()));
                Ok(response)
            }
            Err(status) => {
                let status = bounded(status);
                audit
                    .detail(
                        attempted_user(&request).map(|u| format!("login failed for user '{u}'")),
                    )
                    .end(None, Err(&status));
                Err(status)
            }
        }
    }

    async fn list_flights(
        &self,
        request: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        self.serve(request, "ListFlights", |_, _| async {
            Err(Status::unimplemented(
                "ListFlights is not supported; list tables with the Flight SQL command GetTables",
            ))
        })
        .await
    }

    async fn get_flight_info(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.serve(request, "GetFlightInfo", |request, call| async move {
            self.flight_info(request.into_inner(), &call).await
        })
        .await
    }

    async fn poll_flight_info(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        self.serve(request, "PollFlightInfo", |request, call| async move {
            self.poll(request.into_inner(), &call).await
        })
        .await
    }

    async fn get_schema(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        self.serve(request, "GetSchema", |request, call| async move {
            self.schema_result(request.get_ref(), &call).await
        })
        .await
    }

    async fn do_get(
        &self,
        request: Request<Ticket>,
    ) -> Result<Response<Self::DoGetStream>, Status> {
        // Audited when the stream ends, with the rows it sent.
        let audit = Audit::begin(&self.audit, &request, "DoGet");
        let who = match self.authenticate(&request).await {
            Ok(who) => who,
            Err(status) => {
                audit.end(None, Err(&status));
                return Err(status);
            }
        };
        let (session, ended) = self.session_for(&request, &who);
        let call = Arc::new(Call::new(session, ended));
        let answer = match self.get(request.get_ref(), &call).await.map_err(bounded) {
            Ok(stream) => Ok(audit.stream(Arc::clone(&call), stream)),
            Err(status) => {
                audit.end(Some(&call), Err(&status));
                Err(status)
            }
        };
        respond(answer, &who, &call)
    }

    async fn do_put(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        self.serve(request, "DoPut", |request, call| async move {
            self.put_stream(request.into_inner(), &call).await.map(once)
        })
        .await
    }

    async fn do_exchange(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        self.serve(request, "DoExchange", |_, _| async {
            Err(Status::unimplemented("DoExchange is not supported by Tarn"))
        })
        .await
    }

    async fn do_action(
        &self,
        request: Request<Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        self.serve(request, "DoAction", |request, call| async move {
            let results = self.action(request.into_inner(), &call).await?;
            let stream: Self::DoActionStream =
                Box::pin(futures::stream::iter(results.into_iter().map(Ok)));
            Ok(stream)
        })
        .await
    }

    async fn list_actions(
        &self,
        request: Request<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        self.serve(request, "ListActions", |_, _| async {
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
                (
                    SET_SESSION_OPTIONS,
                    "Sets options of this session: catalog, schema, or a setting SET may change.",
                ),
                (
                    GET_SESSION_OPTIONS,
                    "Lists this session's catalog, schema and changed settings.",
                ),
                (CLOSE_SESSION, "Ends this session and forgets its settings."),
            ]
            .map(|(name, description)| {
                Ok(ActionType {
                    r#type: name.to_string(),
                    description: description.to_string(),
                })
            });
            let stream: Self::ListActionsStream = Box::pin(futures::stream::iter(actions));
            Ok(stream)
        })
        .await
    }
}
