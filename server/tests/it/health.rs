//! grpc.health.v1 on the Flight port: SERVING for the server and for the
//! Flight service while it serves, NOT_SERVING once it shuts down, and
//! NOT_FOUND for a service it does not have.

use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::common::start;

async fn status(
    client: &mut HealthClient<tonic::transport::Channel>,
    service: &str,
) -> Result<i32, tonic::Code> {
    client
        .check(HealthCheckRequest {
            service: service.to_string(),
        })
        .await
        .map(|answer| answer.into_inner().status)
        .map_err(|status| status.code())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_flight_port_answers_grpc_health_checks() {
    let test = start().await;
    let channel = tonic::transport::Endpoint::from_shared(test.uri())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel);
    assert_eq!(
        status(&mut health, "").await,
        Ok(ServingStatus::Serving as i32)
    );
    assert_eq!(
        status(&mut health, "arrow.flight.protocol.FlightService").await,
        Ok(ServingStatus::Serving as i32)
    );
    assert_eq!(
        status(&mut health, "no.such.Service").await,
        Err(tonic::Code::NotFound)
    );

    // A watcher sees the server stop serving before it goes away.
    let mut watch = health
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = watch.message().await.unwrap().unwrap();
    assert_eq!(first.status, ServingStatus::Serving as i32);
    let stopping = tokio::spawn(test.server.shutdown());
    let next = watch.message().await.unwrap().unwrap();
    assert_eq!(next.status, ServingStatus::NotServing as i32);
    // A watch that stays open does not hold the shutdown.
    tokio::time::timeout(std::time::Duration::from_secs(20), stopping)
        .await
        .expect("the server stops while a health watch is open")
        .unwrap();
    drop(watch);
}
