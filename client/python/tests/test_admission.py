"""Admission through real drivers: with one slot, a second query that reads
tables waits in the queue (`system.queries` says so) and runs when the slot
is free; a full queue and a wait past the queue timeout answer
RESOURCE_EXHAUSTED naming the setting; `SELECT 1` and listings never wait;
the slot count comes from the flag, the environment or the config file."""

import threading
import time

import pytest

import tarn
from conftest import RunningServer
from test_auth import run
from test_queries import ENDLESS, live, wait_for


def start(uri, sql, outcome, key):
    def go():
        with tarn.connect(uri) as conn:
            try:
                outcome[key] = run(conn, sql).num_rows
            except Exception as err:
                outcome[key] = str(err)

    thread = threading.Thread(target=go)
    thread.start()
    return thread


@pytest.mark.parametrize("how", ["flag", "environment", "config file"])
def test_one_slot_a_queue_of_one_and_small_work_that_never_waits(lake, tmp_path, how):
    config = tmp_path / "tarn.toml"
    lines = ["[engine]", "max_queued_queries = 1", 'queue_timeout = "30s"']
    args, env = ["--config", str(config)], None
    if how == "flag":
        args += ["--max-running-queries", "1"]
    elif how == "environment":
        env = {"TARN_MAX_RUNNING_QUERIES": "1"}
    else:
        lines.append("max_running_queries = 1")
    config.write_text("\n".join(lines) + "\n")
    server = RunningServer(lake, extra_args=args, env=env)
    try:
        with tarn.connect(server.uri) as conn:
            outcome = {}
            endless = start(server.uri, f"{ENDLESS} -- one", outcome, "endless")
            assert wait_for(lambda: live(conn, "state = 'running'")), live(conn)
            waiting = start(server.uri, "SELECT sum(o_totalprice) AS n FROM orders -- two", outcome, "waiting")
            assert wait_for(lambda: live(conn, "state = 'queued'")), live(conn)
            # The queue holds one: the next query that reads tables is refused.
            with pytest.raises(tarn.Error) as err:
                run(conn, "SELECT count(*) AS n FROM lineitem WHERE l_quantity > 1")
            assert "(ResourceExhausted;" in str(err.value) and "max_queued_queries" in str(err.value), err.value
            # Work that reads no table never waits.
            started = time.monotonic()
            assert run(conn, "SELECT 1 AS one").column(0)[0].as_py() == 1
            assert {t[2] for t in conn.tables()} >= {"orders", "lineitem"}
            assert time.monotonic() - started < 5
            # Freeing the slot lets the queued query run.
            endless_id = live(conn, "state = 'running'")[0]["query_id"]
            run(conn, f"CANCEL QUERY '{endless_id}'")
            endless.join(timeout=30)
            waiting.join(timeout=30)
            assert "CANCELLED" in outcome["endless"], outcome
            assert outcome["waiting"] == 1, outcome
            assert wait_for(lambda: not live(conn, "state IN ('queued', 'running')"), timeout=2)
    finally:
        server.stop()


def test_a_query_that_waits_past_the_queue_timeout_gives_up(lake, tmp_path):
    config = tmp_path / "tarn.toml"
    config.write_text('[engine]\nmax_running_queries = 1\nqueue_timeout = "1s"\n')
    server = RunningServer(lake, extra_args=["--config", str(config)])
    try:
        with tarn.connect(server.uri) as conn:
            outcome = {}
            endless = start(server.uri, ENDLESS, outcome, "endless")
            assert wait_for(lambda: live(conn, "state = 'running'")), live(conn)
            with pytest.raises(tarn.Error) as err:
                run(conn, "SELECT sum(o_totalprice) AS n FROM orders")
            assert "(ResourceExhausted;" in str(err.value) and "queue_timeout" in str(err.value), err.value
            run(conn, f"CANCEL QUERY '{live(conn, 'state = ' + chr(39) + 'running' + chr(39))[0]['query_id']}'")
            endless.join(timeout=30)
            assert run(conn, "SELECT count(*) AS n FROM orders").column(0)[0].as_py() > 0
    finally:
        server.stop()


def test_a_statement_timeout_that_passes_in_the_queue_is_deadline_exceeded(lake):
    server = RunningServer(lake, extra_args=["--max-running-queries", "1"])
    try:
        with tarn.connect(server.uri) as conn, tarn.connect(server.uri) as waiting:
            outcome = {}
            endless = start(server.uri, ENDLESS, outcome, "endless")
            assert wait_for(lambda: live(conn, "state = 'running'")), live(conn)
            run(waiting, "SET tarn.statement_timeout = '1s'")
            with pytest.raises(tarn.Error) as err:
                run(waiting, "SELECT sum(o_totalprice) AS n FROM orders")
            assert "DEADLINE_EXCEEDED" in str(err.value) or "DeadlineExceeded" in str(err.value), err.value
            assert "statement timeout" in str(err.value), err.value
            run(conn, f"CANCEL QUERY '{live(conn, chr(39).join(['state = ', 'running', '']))[0]['query_id']}'")
            endless.join(timeout=30)
    finally:
        server.stop()
