"""Stopping and crashing: no run stays RUNNING. A stopped server (SIGTERM)
refuses new calls (UNAVAILABLE), lets running queries finish until its
--shutdown-timeout and stops the rest, and ends the runs of results nobody
fetched; the start after a crash (kill -9) ends every run the dead process
left open. Ends that did not complete are ABORT, with a reason."""

import signal
import threading
import time

import pyarrow.flight as flight
import pytest
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
    plan_without_fetching(server.uri, 100)
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(timeout=60) == 0, "".join(server.log)

    restarted = RunningServer(lake, state_dir=state)
    try:
        assert unfetched_runs(restarted.uri) == [
            {"state": "ABORT", "error": "the server stopped before the result was fetched", "n": 100}
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


# Streams lineitem five times over: more than HTTP/2's windows hold, so the
# server streams only as fast as its client reads.
SHORT = "SELECT a.* FROM lineitem a CROSS JOIN region -- short {}"


def test_sigterm_lets_short_queries_finish_stops_long_ones_at_the_deadline_and_refuses_new_calls(lake, tmp_path):
    from test_queries import ENDLESS, live, wait_for

    state = tmp_path / "state"
    deadline_s = 8
    server = RunningServer(
        lake, state_dir=state, extra_args=["--shutdown-timeout", f"{deadline_s}s", "--max-running-queries", "8"]
    )
    location = server.uri.replace("grpc://", "grpc+tcp://")
    watcher = tarn.connect(server.uri)
    expected_rows = watcher.arrow("SELECT count(*) * 5 AS n FROM lineitem").column("n")[0].as_py()
    outcome = {}

    def fetch(key, sql, pause_s):
        client = flight.FlightClient(location)
        try:
            command = any_pb2.Any()
            command.Pack(fsql.CommandStatementQuery(query=sql))
            info = client.get_flight_info(flight.FlightDescriptor.for_command(command.SerializeToString()))
            reader = client.do_get(info.endpoints[0].ticket)
            rows = 0
            while True:
                try:
                    chunk = reader.read_chunk()
                except StopIteration:
                    break
                rows += chunk.data.num_rows
                outcome[key] = rows
                time.sleep(pause_s)
            outcome[key] = ("done", rows)
        except Exception as err:
            outcome[key] = ("error", type(err).__name__, str(err))
        finally:
            client.close()

    threads = [threading.Thread(target=fetch, args=(f"short {i}", SHORT.format(i), 0.05)) for i in range(4)]
    threads += [threading.Thread(target=fetch, args=(f"long {i}", f"{ENDLESS} -- long {i}", 0)) for i in range(4)]
    for thread in threads:
        thread.start()
    try:
        assert wait_for(
            lambda: len(live(watcher, "(sql LIKE '%-- short%' AND state = 'streaming') OR (sql LIKE '%-- long%' AND state = 'running')")) == 8,
            timeout=60,
        ), live(watcher)
        signalled = time.monotonic()
        server.process.send_signal(signal.SIGTERM)

        # New work is refused at once, on an open connection and a new one.
        time.sleep(0.3)
        with pytest.raises(tarn.Error) as refused:
            watcher.arrow("SELECT 1 AS one")
        assert "Unavailable" in str(refused.value) and "shutting down" in str(refused.value), refused.value
        newcomer = flight.FlightClient(location)
        command = any_pb2.Any()
        command.Pack(fsql.CommandStatementQuery(query="SELECT 2 AS two"))
        with pytest.raises(flight.FlightUnavailableError, match="shutting down"):
            newcomer.get_flight_info(flight.FlightDescriptor.for_command(command.SerializeToString()))
        newcomer.close()

        assert server.process.wait(timeout=deadline_s + 30) == 0, "".join(server.log)
        stopped_after = time.monotonic() - signalled
        for thread in threads:
            thread.join(timeout=30)
    finally:
        watcher.close()
        if server.alive():
            server.process.kill()

    # The short queries streamed every row; the long ones were stopped at the deadline.
    for i in range(4):
        assert outcome[f"short {i}"] == ("done", expected_rows), outcome
        kind, error_type, message = outcome[f"long {i}"]
        assert (kind, error_type) == ("error", "FlightUnavailableError"), outcome
        assert "shutdown timeout" in message, message
    assert deadline_s <= stopped_after < deadline_s + 20, stopped_after

    # The stopping server ended every run itself (not the next start).
    restarted = RunningServer(lake, state_dir=state)
    try:
        with tarn.connect(restarted.uri) as conn:
            runs = conn.arrow(
                "SELECT sql, state, rows_out, error FROM system.runs WHERE sql LIKE 'SELECT a.%-- short%' OR sql LIKE 'SELECT a.%-- long%' ORDER BY sql"
            ).to_pylist()
            still_running = conn.arrow("SELECT count(*) AS n FROM system.runs WHERE state = 'RUNNING' AND sql NOT LIKE '%system.runs%'")
    finally:
        restarted.stop()
    assert len(runs) == 8, runs
    for run in runs:
        if "-- short" in run["sql"]:
            assert (run["state"], run["rows_out"], run["error"]) == ("COMPLETE", expected_rows, None), run
        else:
            assert run["state"] == "ABORT" and "shutdown timeout" in run["error"], run
    assert still_running.column("n")[0].as_py() == 0
