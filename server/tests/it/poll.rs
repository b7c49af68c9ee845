//! PollFlightInfo: a long query executes while its client polls, reports
//! the share of its input read so far (rising), then hands over a ticket
//! whose stream is the same answer GetFlightInfo's would be.

use std::time::{Duration, Instant};

use arrow::array::AsArray;
use arrow::datatypes::Int64Type;
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::sql::{CommandGetCatalogs, CommandStatementQuery, ProstMessageExt};
use arrow_flight::{FlightDescriptor, PollInfo};
use futures::TryStreamExt;
use prost::Message;

use crate::common::{query, start};

/// An aggregate that sends nothing until it has read all of lineitem. Its
/// only file scan is lineitem's, so the rows promised are lineitem's (a
/// second scan cut by a LIMIT would promise the whole table, or 300 rows,
/// depending on whether the limit reached its statistics).
const SLOW: &str = "SELECT count(*) AS n, sum(a.l_quantity * b.value) AS s FROM generate_series(1, 300) b CROSS JOIN lineitem a";

fn descriptor(command: impl ProstMessageExt) -> FlightDescriptor {
    FlightDescriptor::new_cmd(command.as_any().encode_to_vec())
}

async fn connect(uri: &str) -> FlightServiceClient<tonic::transport::Channel> {
    let channel = tonic::transport::Endpoint::from_shared(uri.to_string())
        .unwrap()
        .connect()
        .await
        .unwrap();
    FlightServiceClient::new(channel)
}

async fn poll(
    flight: &mut FlightServiceClient<tonic::transport::Channel>,
    descriptor: FlightDescriptor,
) -> PollInfo {
    flight
        .poll_flight_info(descriptor)
        .await
        .unwrap()
        .into_inner()
}

#[tokio::test(flavor = "multi_thread")]
async fn polling_a_long_query_reports_rising_progress_then_its_result() {
    let mut t = start().await;
    let mut flight = connect(&t.uri()).await;
    let command = CommandStatementQuery {
        query: SLOW.into(),
        transaction_id: None,
    };
    let started = Instant::now();
    let mut answer = poll(&mut flight, descriptor(command)).await;
    let mut seen = vec![answer.progress.unwrap()];
    while let Some(again) = answer.flight_descriptor.clone() {
        assert!(started.elapsed() < Duration::from_secs(300), "{seen:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
        answer = poll(&mut flight, again).await;
        seen.push(answer.progress.unwrap());
    }
    assert!(
        seen.windows(2).all(|w| w[0] <= w[1]),
        "never falls: {seen:?}"
    );
    let mut between: Vec<f64> = seen
        .iter()
        .copied()
        .filter(|p| *p > 0.0 && *p < 1.0)
        .collect();
    between.dedup();
    assert!(between.len() >= 2, "rises while it runs: {seen:?}");
    assert!(
        *seen.last().unwrap() > 0.9,
        "all of the input read at the end: {seen:?}"
    );

    let info = answer.info.unwrap();
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    let stream = flight.do_get(ticket).await.unwrap().into_inner();
    let polled: Vec<_> = FlightRecordBatchStream::new_from_flight_data(stream.map_err(Into::into))
        .try_collect()
        .await
        .unwrap();
    let direct = query(&mut t.client, SLOW).await;
    assert_eq!(polled, direct, "the polled answer is the planned one's");
    let lineitem = query(&mut t.client, "SELECT count(*) FROM lineitem").await;
    let rows = lineitem[0].column(0).as_primitive::<Int64Type>().value(0);
    assert_eq!(
        polled[0].column(0).as_primitive::<Int64Type>().value(0),
        rows * 300
    );
    // The run ended once, complete.
    let runs = query(
        &mut t.client,
        "SELECT state FROM system.runs WHERE sql LIKE 'SELECT count(*) AS n, sum(a.l_quantity%'",
    )
    .await;
    let states: Vec<_> = runs
        .iter()
        .flat_map(|b| {
            b.column(0)
                .as_string::<i32>()
                .iter()
                .map(|s| s.unwrap().to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(
        states,
        ["COMPLETE", "COMPLETE"],
        "the polled run and the direct one"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn polling_a_listing_answers_it_whole() {
    let t = start().await;
    let mut flight = connect(&t.uri()).await;
    let answer = poll(&mut flight, descriptor(CommandGetCatalogs {})).await;
    assert_eq!(answer.progress, Some(1.0));
    assert!(answer.flight_descriptor.is_none());
    assert_eq!(answer.info.unwrap().endpoint.len(), 1);
}
