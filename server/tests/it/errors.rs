//! Bad input gets a clear gRPC error, and the server keeps serving.

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{AsArray, Int64Array, RecordBatch};
use arrow::datatypes::Int64Type;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::sql::{CommandPreparedStatementQuery, ProstMessageExt};
use arrow_flight::{FlightDescriptor, Ticket};
use futures::{StreamExt, TryStreamExt};
use prost::Message;
use tarn::config::ServeConfig;
use tarn_client::{Client, ClientError};
use tonic::Code;

use crate::common::{self, assert_status, code, query, start, start_with};

/// GetFlightInfo for `sql`: a planned result waiting for its DoGet.
async fn planned(client: &mut Client, sql: &str) -> arrow_flight::FlightInfo {
    client
        .flight_sql_client()
        .execute(sql.into(), None)
        .await
        .expect("the statement plans")
}

/// Sends a DoPut that must fail, and returns its error.
async fn put_error(client: &mut Client, messages: Vec<arrow_flight::FlightData>) -> ClientError {
    match client
        .flight_sql_client()
        .do_put(futures::stream::iter(messages))
        .await
    {
        Err(e) => ClientError::from(e),
        Ok(mut results) => match results.next().await {
            Some(Err(status)) => ClientError::from(status),
            other => panic!("expected an error, got {other:?}"),
        },
    }
}

async fn still_serving(client: &mut Client) {
    let batches = query(client, "SELECT count(*) FROM region").await;
    assert_eq!(batches[0].column(0).as_primitive::<Int64Type>().value(0), 5);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_sql_is_invalid_argument() {
    let mut t = start().await;
    let err = t.client.query("SELEKT * FROM nation").await.unwrap_err();
    assert_eq!(code(&err), Code::InvalidArgument);
    assert!(err.to_string().contains("SQL syntax error"), "{err}");

    let err = t
        .client
        .query("SELECT no_such_column FROM nation")
        .await
        .unwrap_err();
    assert_eq!(code(&err), Code::InvalidArgument);
    assert!(err.to_string().contains("no_such_column"), "{err}");
    still_serving(&mut t.client).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_table_is_not_found_and_named() {
    let mut t = start().await;
    let err = t
        .client
        .query("SELECT * FROM nation JOIN no_such_table ON true")
        .await
        .unwrap_err();
    assert_eq!(code(&err), Code::NotFound);
    assert!(err.to_string().contains("no_such_table"), "{err}");
    let err = t
        .client
        .execute_update("INSERT INTO missing VALUES (1)")
        .await
        .unwrap_err();
    assert_status(&err, Code::NotFound, "table 'missing' not found");
    still_serving(&mut t.client).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_and_foreign_tickets_are_rejected() {
    let mut t = start().await;
    for bytes in [b"garbage".to_vec(), vec![], vec![0xff; 64]] {
        let err = t
            .client
            .flight_sql_client()
            .do_get(Ticket::new(bytes))
            .await
            .map(|_| ())
            .unwrap_err();
        let err = ClientError::from(err);
        assert_status(&err, Code::InvalidArgument, "malformed ticket");
    }
    still_serving(&mut t.client).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_ticket_is_redeemed_once() {
    let mut t = start().await;
    let info = planned(&mut t.client, "SELECT 1").await;
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    assert!(
        info.endpoint[0].expiration_time.is_some(),
        "the endpoint says when it expires"
    );
    assert!(
        info.endpoint[0].location.is_empty(),
        "no location: same connection"
    );
    let first: Vec<RecordBatch> = t
        .client
        .flight_sql_client()
        .do_get(ticket.clone())
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(first[0].num_rows(), 1);
    let err = ClientError::from(
        t.client
            .flight_sql_client()
            .do_get(ticket)
            .await
            .map(|_| ())
            .unwrap_err(),
    );
    assert_status(&err, Code::NotFound, "no pending result with this ticket");
    assert!(err.to_string().contains("already fetched"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn unfetched_results_expire() {
    let mut config = ServeConfig::for_lake(common::demo_lake());
    config.engine.result_ttl = Duration::from_millis(200);
    let mut t = start_with(config).await;
    let info = planned(&mut t.client, "SELECT 1").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    let err = ClientError::from(
        t.client
            .flight_sql_client()
            .do_get(ticket)
            .await
            .map(|_| ())
            .unwrap_err(),
    );
    assert_status(&err, Code::NotFound, "expired after");
}

#[tokio::test(flavor = "multi_thread")]
async fn do_put_to_an_unknown_prepared_statement_is_not_found() {
    let mut t = start().await;
    let params =
        RecordBatch::try_from_iter([("$1", Arc::new(Int64Array::from(vec![1])) as _)]).unwrap();
    for handle in [
        b"not a handle".to_vec(),
        tarn_proto::v1::PreparedStatementHandle {
            statement_id: vec![7; 16],
        }
        .encode_to_vec(),
    ] {
        let cmd = CommandPreparedStatementQuery {
            prepared_statement_handle: handle.into(),
        };
        let data: Vec<_> = FlightDataEncoderBuilder::new()
            .with_flight_descriptor(Some(FlightDescriptor::new_cmd(
                cmd.as_any().encode_to_vec(),
            )))
            .build(futures::stream::iter([Ok(params.clone())]))
            .try_collect()
            .await
            .unwrap();
        let err = put_error(&mut t.client, data).await;
        assert_status(&err, Code::NotFound, "prepared statement");
    }
    still_serving(&mut t.client).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_commands_and_actions_are_rejected() {
    let mut t = start().await;
    let descriptor = FlightDescriptor::new_cmd(b"\x0a\x03foo".to_vec());
    let err = t
        .client
        .flight_sql_client()
        .inner_mut()
        .get_flight_info(descriptor)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    let action = arrow_flight::Action::new("Explode", "");
    let err = t
        .client
        .flight_sql_client()
        .inner_mut()
        .do_action(action)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    assert!(err.message().contains("Explode"));
    still_serving(&mut t.client).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn cancelled_results_cannot_be_fetched() {
    let mut t = start().await;
    let info = planned(&mut t.client, "SELECT * FROM lineitem").await;
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    let request = arrow_flight::CancelFlightInfoRequest::new(info);
    let action = arrow_flight::Action::new("CancelFlightInfo", request.encode_to_vec());
    let body = first_action_result(&mut t.client, action).await;
    let result = arrow_flight::CancelFlightInfoResult::decode(body).unwrap();
    assert_eq!(result.status, arrow_flight::CancelStatus::Cancelled as i32);
    let err = ClientError::from(
        t.client
            .flight_sql_client()
            .do_get(ticket)
            .await
            .map(|_| ())
            .unwrap_err(),
    );
    assert_status(&err, Code::NotFound, "no pending result with this ticket");
}

/// The DoPut descriptor that binds parameters to a new prepared statement
/// of `sql`, created with the raw Flight SQL action.
async fn bind_descriptor(client: &mut Client, sql: &str) -> FlightDescriptor {
    let cmd = CommandPreparedStatementQuery {
        prepared_statement_handle: prepared_handle(client, sql).await,
    };
    FlightDescriptor::new_cmd(cmd.as_any().encode_to_vec())
}

/// The body of the first result of a raw Flight action.
async fn first_action_result(client: &mut Client, action: arrow_flight::Action) -> bytes::Bytes {
    let mut results = client
        .flight_sql_client()
        .inner_mut()
        .do_action(action)
        .await
        .unwrap()
        .into_inner();
    results.next().await.unwrap().unwrap().body
}

/// A prepared statement's handle, created with the raw Flight SQL action.
async fn prepared_handle(client: &mut Client, sql: &str) -> bytes::Bytes {
    let request = arrow_flight::sql::ActionCreatePreparedStatementRequest {
        query: sql.into(),
        transaction_id: None,
    };
    let action =
        arrow_flight::Action::new("CreatePreparedStatement", request.as_any().encode_to_vec());
    let body = first_action_result(client, action).await;
    let any = arrow_flight::sql::Any::decode(body).unwrap();
    any.unpack::<arrow_flight::sql::ActionCreatePreparedStatementResult>()
        .unwrap()
        .unwrap()
        .prepared_statement_handle
}

#[tokio::test(flavor = "multi_thread")]
async fn a_parameter_batch_shorter_than_its_header_is_rejected() {
    let mut t = start().await;
    let descriptor =
        bind_descriptor(&mut t.client, "SELECT * FROM nation WHERE n_nationkey = $1").await;
    let batch = RecordBatch::try_from_iter([(
        "$1",
        Arc::new(Int64Array::from((0..1000).collect::<Vec<i64>>())) as _,
    )])
    .unwrap();
    let encoded: Vec<arrow_flight::FlightData> = FlightDataEncoderBuilder::new()
        .build(futures::stream::iter([Ok(batch)]))
        .try_collect()
        .await
        .unwrap();
    for keep in [0, 8, 100] {
        let mut messages = encoded.clone();
        messages[0].flight_descriptor = Some(descriptor.clone());
        let last = messages.last_mut().unwrap();
        assert!(last.data_body.len() > keep);
        last.data_body = last.data_body.slice(..keep);
        let err = put_error(&mut t.client, messages).await;
        assert_status(&err, Code::InvalidArgument, "malformed parameter batches");
        assert!(err.to_string().contains("body"), "{err}");
        still_serving(&mut t.client).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn garbage_parameter_batches_are_rejected() {
    let mut t = start().await;
    // A real handle, so that only the batch bytes are wrong.
    let descriptor =
        bind_descriptor(&mut t.client, "SELECT * FROM nation WHERE n_nationkey = $1").await;
    let messages = vec![
        arrow_flight::FlightData::new()
            .with_descriptor(descriptor)
            .with_data_header(vec![0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4, 5, 6, 7, 8])
            .with_data_body(vec![0xff; 32]),
    ];
    let err = put_error(&mut t.client, messages).await;
    assert_eq!(code(&err), Code::InvalidArgument, "{err}");
    assert!(
        err.to_string().contains("malformed parameter batches"),
        "{err}"
    );
    still_serving(&mut t.client).await;
}

/// Sends bytes as they are, so that a test can send a message that is not
/// the protobuf the method expects.
#[derive(Debug, Clone, Default)]
struct RawBytes;

impl tonic::codec::Codec for RawBytes {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawBytes;
    type Decoder = RawBytes;

    fn encoder(&mut self) -> RawBytes {
        RawBytes
    }

    fn decoder(&mut self) -> RawBytes {
        RawBytes
    }
}

impl tonic::codec::Encoder for RawBytes {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(
        &mut self,
        item: Vec<u8>,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        bytes::BufMut::put_slice(dst, &item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawBytes {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Vec<u8>>, tonic::Status> {
        let bytes = bytes::Buf::chunk(src).to_vec();
        bytes::Buf::advance(src, bytes.len());
        Ok(Some(bytes))
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_message_that_does_not_decode_is_invalid_argument() {
    let mut t = start().await;
    let channel =
        tonic::transport::Channel::from_shared(format!("http://{}", t.server.local_addr()))
            .unwrap()
            .connect()
            .await
            .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    for method in ["GetFlightInfo", "GetSchema", "DoAction"] {
        grpc.ready().await.unwrap();
        let path = http::uri::PathAndQuery::try_from(format!(
            "/arrow.flight.protocol.FlightService/{method}"
        ))
        .unwrap();
        let outcome = grpc
            .unary(tonic::Request::new(vec![0xff, 0xff, 0xff]), path, RawBytes)
            .await;
        let err = ClientError::from(outcome.unwrap_err());
        assert_status(&err, Code::InvalidArgument, "malformed request message");
    }
    still_serving(&mut t.client).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_error_quoting_a_huge_request_is_cut_not_lost() {
    let mut t = start().await;
    let name = "x".repeat(900_000);
    let err = t
        .client
        .query(&format!("SELECT * FROM {name}"))
        .await
        .unwrap_err();
    assert_status(&err, Code::NotFound, "was cut");
    assert!(
        err.to_string().len() < 10_000,
        "{} bytes",
        err.to_string().len()
    );
    still_serving(&mut t.client).await;
}
