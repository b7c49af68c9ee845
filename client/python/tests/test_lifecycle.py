"""Stopping and crashing: no run stays RUNNING. A stopped server (SIGTERM)
ends the runs of results nobody fetched; the start after a crash (kill -9)
ends every run the dead process left open. Both as ABORT, with a reason."""

import signal
import time

import pyarrow.flight as flight
from google.protobuf import any_pb2

import flightsql.flightsql_pb2 as fsql
import tarn
from conftest import RunningServer


def plan_without_fetching(uri: str, count: int) -> None:
    """GetFlightInfo `count` times and never DoGet: results wait in the server."""
    client = flight.FlightClient(uri.replace("grpc://", "grpc+tcp://"))
    try:
        for i in range(count):
            command = any_pb2.Any()
            command.Pack(fsql.CommandStatementQuery(query=f"SELECT {i} AS unfetched"))
            client.get_flight_info(flight.FlightDescriptor.for_command(command.SerializeToString()))
    finally:
        client.close()


def unfetched_runs(uri: str) -> list:
    with tarn.connect(uri) as conn:
        return conn.arrow(
            "SELECT state, error, count(*) AS n FROM system.runs "
            "WHERE sql LIKE '%AS unfetched' GROUP BY state, error"
        ).to_pylist()


def running(uri: str) -> int:
    with tarn.connect(uri) as conn:
        table = conn.arrow("SELECT count(*) AS n FROM system.runs WHERE state = 'RUNNING' AND sql NOT LIKE '%system.runs%'")
        return table.column("n")[0].as_py()


def test_sigterm_stops_gracefully_and_ends_unfetched_results(lake, tmp_path):
    state = tmp_path / "state"
    server = RunningServer(lake, state_dir=state)
    plan_without_fetching(server.uri, 300)
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(timeout=60) == 0, "".join(server.log)

    restarted = RunningServer(lake, state_dir=state)
    try:
        assert unfetched_runs(restarted.uri) == [
            {"state": "ABORT", "error": "the server stopped before the result was fetched", "n": 300}
        ]
        assert running(restarted.uri) == 0
    finally:
        restarted.stop()


def test_kill_9_leaves_no_run_running_after_the_next_start(lake, tmp_path):
    state = tmp_path / "state"
    server = RunningServer(lake, state_dir=state)
    plan_without_fetching(server.uri, 40)
    server.process.send_signal(signal.SIGKILL)
    server.process.wait()

    restarted = RunningServer(lake, state_dir=state)
    try:
        assert unfetched_runs(restarted.uri) == [
            {"state": "ABORT", "error": "the server stopped before the statement ended", "n": 40}
        ]
        assert running(restarted.uri) == 0
    finally:
        restarted.stop()


def test_a_second_signal_stops_at_once(lake, tmp_path):
    server = RunningServer(lake, state_dir=tmp_path / "state")
    # A long query keeps the graceful shutdown waiting for its stream.
    client = flight.FlightClient(server.uri.replace("grpc://", "grpc+tcp://"))
    command = any_pb2.Any()
    command.Pack(fsql.CommandStatementQuery(query="SELECT sum(a.l_quantity * b.l_quantity) FROM lineitem a CROSS JOIN lineitem b"))
    info = client.get_flight_info(flight.FlightDescriptor.for_command(command.SerializeToString()))
    reader = client.do_get(info.endpoints[0].ticket)
    server.process.send_signal(signal.SIGTERM)
    time.sleep(1.0)
    assert server.process.poll() is None, "the first signal waits for the query in flight"
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(timeout=30) != 0
    del reader
    client.close()
