"""Live queries under hostile clients, through real drivers: clients that
start an endless aggregate and go away free their queries at once (and
`SELECT 1` stays fast), `CancelFlightInfo` during DoGet and `CANCEL QUERY`
from an admin's session stop a running query, a statement timeout (from the
flag, the environment, the config file or SET) stops it with
DEADLINE_EXCEEDED, and `system.queries` lists only what is live."""

import base64
import subprocess
import sys
import threading
import time

import pyarrow.flight as flight
import pytest

import flightsql.flightsql_pb2 as fsql
import tarn
from conftest import RunningServer
from test_auth import AuthServer, _string_field, admin, make_user, run
from test_flight_sql import descriptor

# An aggregate over a cross join: it sends nothing until it ends, which is never.
ENDLESS = "SELECT a.l_returnflag, count(*) AS n, sum(a.l_quantity * b.l_quantity) AS s FROM lineitem a CROSS JOIN lineitem b GROUP BY a.l_returnflag"


def live(conn, where="TRUE"):
    return run(conn, f"SELECT query_id, user, sql, state FROM system.queries WHERE sql NOT LIKE '%system.queries%' AND {where}").to_pylist()


def wait_for(condition, timeout=10.0, step=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(step)
    return condition()


def select_one_ms(conn):
    started = time.perf_counter()
    assert run(conn, "SELECT 1 AS one").column(0)[0].as_py() == 1
    return (time.perf_counter() - started) * 1000


def start_endless(uri, deadline_s):
    """A pyarrow.flight client that plans ENDLESS and fetches it with a deadline."""
    client = flight.FlightClient(uri)
    info = client.get_flight_info(descriptor(fsql.CommandStatementQuery(query=ENDLESS)))
    options = flight.FlightCallOptions(timeout=deadline_s)
    outcome = {}

    def fetch():
        try:
            client.do_get(info.endpoints[0].ticket, options).read_all()
            outcome["error"] = None
        except Exception as err:  # the deadline
            outcome["error"] = err
        outcome["at"] = time.monotonic()

    thread = threading.Thread(target=fetch)
    thread.start()
    return thread, outcome, client, info


def test_clients_that_go_away_free_their_queries_at_once(lake):
    server = RunningServer(lake)
    try:
        with tarn.connect(server.uri) as conn:
            endless = [start_endless(server.uri, 3.0) for _ in range(2)]
            running = wait_for(lambda: [q for q in live(conn) if q["state"] == "running"] if len(live(conn, "state = 'running'")) == 2 else None)
            assert running and len(running) == 2, live(conn)
            for thread, outcome, _, _ in endless:
                thread.join(timeout=30)
                assert "Deadline" in type(outcome["error"]).__name__ or "deadline" in str(outcome["error"]).lower(), outcome
            gave_up = max(outcome["at"] for _, outcome, _, _ in endless)
            # Within a second of the clients giving up, both queries are gone...
            gone = wait_for(lambda: not live(conn, "sql LIKE '%CROSS JOIN%'"), timeout=1.0)
            assert gone, live(conn)
            assert time.monotonic() - gave_up < 1.5
            # ... the CPU is free again ...
            assert min(select_one_ms(conn) for _ in range(5)) < 100
            # ... and their runs ended ABORT.
            def ended():
                states = [r["state"] for r in run(conn, "SELECT state FROM system.runs WHERE sql = '" + ENDLESS + "'").to_pylist()]
                return states if "RUNNING" not in states else None
            states = wait_for(ended)
            assert states == ["ABORT", "ABORT"], states
    finally:
        server.stop()


# The DoGet of the cancel test runs in a process of its own, in a thread:
# pyarrow.flight answers a CANCELLED call with a KeyboardInterrupt of the
# main thread (it takes it for Ctrl-C), which would stop the test run.
FETCH = """
import base64, sys, threading
import pyarrow.flight as flight
info = flight.FlightInfo.deserialize(base64.b64decode(sys.argv[2]))
said = []
def fetch():
    try:
        flight.FlightClient(sys.argv[1]).do_get(info.endpoints[0].ticket).read_all()
        said.append("complete")
    except BaseException as err:
        said.append(f"{type(err).__name__} {err}")
thread = threading.Thread(target=fetch)
thread.start()
while thread.is_alive():
    try:
        thread.join()
    except KeyboardInterrupt:
        pass
print(said[0], flush=True)
"""


def test_cancel_flight_info_stops_a_query_while_do_get_runs(lake):
    server = RunningServer(lake)
    try:
        client = flight.FlightClient(server.uri)
        info = client.get_flight_info(descriptor(fsql.CommandStatementQuery(query=ENDLESS)))
        encoded = base64.b64encode(info.serialize()).decode()
        fetcher = subprocess.Popen([sys.executable, "-c", FETCH, server.uri, encoded], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        with tarn.connect(server.uri) as conn:
            assert wait_for(lambda: live(conn, "state = 'running'")), live(conn)
            assert cancel_flight_info(client, info) == CANCELLED
            out, err = fetcher.communicate(timeout=10)
            said = out + err
            assert "FlightCancelledError" in said and "CANCELLED" in said and "CancelFlightInfo" in said, said
            assert wait_for(lambda: not live(conn, "sql LIKE '%CROSS JOIN%'"), timeout=1.0)
            # Cancelling it again: it is no longer there to cancel.
            assert cancel_flight_info(client, info) == NOT_CANCELLABLE
    finally:
        server.stop()


def test_an_admin_cancels_another_sessions_query_and_users_only_their_own(lake, tmp_path):
    server = AuthServer(lake, state_dir=tmp_path / "state")
    try:
        make_user(server, "ada", "ada-password-1", read_all=True)
        make_user(server, "bo", "bo-password-1", read_all=True)
        failure = {}

        def ada_runs():
            with tarn.connect(server.uri, user="ada", password="ada-password-1") as ada:
                try:
                    run(ada, ENDLESS)
                except Exception as err:
                    failure["error"] = str(err)

        thread = threading.Thread(target=ada_runs)
        thread.start()
        with admin(server) as boss, tarn.connect(server.uri, user="bo", password="bo-password-1") as bo:
            listed = wait_for(lambda: live(boss, "state = 'running' AND user = 'ada'"))
            assert listed, live(boss)
            query_id = listed[0]["query_id"]
            # Bo sees only his own queries, and cannot cancel Ada's.
            assert live(bo, "user = 'ada'") == []
            with pytest.raises(Exception, match="no live query"):
                run(bo, f"CANCEL QUERY '{query_id}'")
            assert run(boss, f"CANCEL QUERY '{query_id}'").to_pylist() == [{"query_id": query_id, "cancelled": True}]
            thread.join(timeout=10)
            assert not thread.is_alive()
            assert "CANCELLED" in failure["error"] and "cancelled by admin" in failure["error"], failure
            assert wait_for(lambda: not live(boss, f"query_id = '{query_id}'"), timeout=1.0)
            with pytest.raises(Exception, match="no live query"):
                run(boss, f"CANCEL QUERY '{query_id}'")
            # Ada's connection still works.
        with tarn.connect(server.uri, user="ada", password="ada-password-1") as ada:
            assert run(ada, "SELECT 1 AS one").column(0)[0].as_py() == 1
    finally:
        server.stop()


CANCELLED, NOT_CANCELLABLE = 1, 3  # arrow.flight.protocol.CancelStatus


def cancel_flight_info(client, info):
    """The CancelFlightInfo action (pyarrow.flight has no method for it): the
    status the server answers."""
    request = _string_field(1, info.serialize())  # CancelFlightInfoRequest.info
    results = list(client.do_action(flight.Action("CancelFlightInfo", request)))
    body = results[0].body.to_pybytes()
    assert body[0] == 0x08, body  # CancelFlightInfoResult.status, a varint
    return body[1]


def timed_out(conn, sql=ENDLESS):
    started = time.monotonic()
    with pytest.raises(Exception) as err:
        run(conn, sql)
    return str(err.value), time.monotonic() - started


@pytest.mark.parametrize("how", ["flag", "environment", "config file"])
def test_the_server_statement_timeout_from_each_source(lake, tmp_path, how):
    args, env = [], None
    if how == "flag":
        args = ["--statement-timeout", "1s"]
    elif how == "environment":
        env = {"TARN_STATEMENT_TIMEOUT": "1s"}
    else:
        config = tmp_path / "tarn.toml"
        config.write_text('[engine]\nstatement_timeout = "1s"\n')
        args = ["--config", str(config)]
    server = RunningServer(lake, extra_args=args, env=env)
    try:
        with tarn.connect(server.uri) as conn:
            message, took = timed_out(conn)
            assert "DEADLINE_EXCEEDED" in message or "DeadlineExceeded" in message, message
            assert "statement timeout of 1s" in message and "tarn.statement_timeout" in message, message
            assert took < 5, took
            assert wait_for(lambda: not live(conn, "sql LIKE '%CROSS JOIN%'"), timeout=1.0)
            # A session may lift it for itself.
            run(conn, "SET tarn.statement_timeout = '0'")
            assert run(conn, "SELECT count(*) AS n FROM lineitem").column(0)[0].as_py() > 0
    finally:
        server.stop()


def test_a_session_sets_its_own_timeout_and_a_timed_out_write_commits_nothing(lake, tmp_path):
    server = RunningServer(lake, state_dir=tmp_path / "state")
    try:
        with tarn.connect(server.uri) as conn, tarn.connect(server.uri) as other:
            with pytest.raises(Exception, match="not a duration"):
                run(conn, "SET tarn.statement_timeout = 'soon'")
            run(conn, "SET tarn.statement_timeout = '1500ms'")
            message, took = timed_out(conn)
            assert "DEADLINE_EXCEEDED" in message or "DeadlineExceeded" in message, message
            assert took < 5
            # A write stopped by its timeout commits nothing, and its run says why.
            message, _ = timed_out(conn, f"CREATE TABLE never AS {ENDLESS}")
            assert "statement timeout" in message, message
            assert "never" not in {t[2] for t in other.tables()}
            ended = run(other, "SELECT state, error FROM system.runs WHERE sql LIKE 'CREATE TABLE never%'").to_pylist()
            assert ended and ended[0]["state"] == "FAIL" and "statement timeout" in ended[0]["error"], ended
            # Other sessions keep the server's default (none).
            assert run(other, "SELECT count(*) AS n FROM orders").column(0)[0].as_py() > 0
            assert live(other, "sql LIKE '%CROSS JOIN%'") == []
    finally:
        server.stop()
