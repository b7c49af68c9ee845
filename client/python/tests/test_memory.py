"""The memory limit through a real driver: a query that cannot fit fails
alone with RESOURCE_EXHAUSTED naming the limit and how to raise it (after
its hash joins were planned again as sort-merge joins, which can spill),
while other queries go on; the limit comes from the flag, the environment
or the config file; the spill folder lives in the state folder and starts
empty."""

import threading
import time

import pytest

import tarn
from conftest import RunningServer
from test_auth import run

# A hash join whose build side holds five text columns of lineitem.
HUNGRY = (
    "SELECT max(a.l_comment || a.l_shipinstruct || a.l_shipmode || a.l_returnflag || a.l_linestatus || b.l_comment) AS m, "
    "count(*) AS n FROM lineitem a JOIN lineitem b ON a.l_orderkey = b.l_orderkey"
)


def exhausted(conn):
    with pytest.raises(tarn.Error) as err:
        run(conn, HUNGRY)
    return str(err.value)


@pytest.mark.parametrize("how", ["flag", "environment", "config file"])
def test_a_query_over_the_limit_fails_alone_and_names_the_limit(lake, tmp_path, how):
    args, env = [], None
    if how == "flag":
        args = ["--memory-limit", "3MiB"]
    elif how == "environment":
        env = {"TARN_MEMORY_LIMIT": "3MiB"}
    else:
        config = tmp_path / "tarn.toml"
        config.write_text('[engine]\nmemory_limit = "3MiB"\n')
        args = ["--config", str(config)]
    server = RunningServer(lake, extra_args=args, env=env, log="info")
    try:
        with tarn.connect(server.uri) as conn, tarn.connect(server.uri) as other:
            small = []

            def small_queries():
                for _ in range(20):
                    small.append(run(other, "SELECT count(*) AS n FROM nation").column(0)[0].as_py())

            thread = threading.Thread(target=small_queries)
            thread.start()
            message = exhausted(conn)
            thread.join(timeout=60)
            assert "RESOURCE_EXHAUSTED" in message or "ResourceExhausted" in message, message
            assert "limit of 3.0 MiB" in message and "--memory-limit" in message, message
            assert small == [25] * 20, "the other session's queries all answered"
            # The server goes on, and nothing of the failed query is left.
            assert run(conn, "SELECT count(*) AS n FROM orders").column(0)[0].as_py() > 0
            assert run(conn, "SELECT count(*) AS n FROM system.queries WHERE sql LIKE 'SELECT max(a.l_comment%'").column(0)[0].as_py() == 0
            # Its run says it was planned again.
            failed = run(conn, "SELECT state, note FROM system.runs WHERE sql LIKE 'SELECT max(a.l_comment%'").to_pylist()
            assert failed == [{"state": "FAIL", "note": "planned again with sort-merge joins: a hash join did not fit in memory"}], failed
        assert any("planning the query again with sort-merge joins" in line for line in server.log), "".join(server.log[-30:])
    finally:
        server.stop()


def test_without_a_limit_set_the_same_query_answers(lake):
    server = RunningServer(lake)
    try:
        with tarn.connect(server.uri) as conn:
            answer = run(conn, HUNGRY).to_pylist()
            assert answer[0]["n"] > 0
    finally:
        server.stop()


def test_the_spill_folder_is_in_the_state_folder_and_starts_empty(lake, tmp_path):
    state = tmp_path / "state"
    stale = state / "spill" / "datafusion-old"
    stale.mkdir(parents=True)
    (stale / "leftover.arrow").write_bytes(b"x" * 1024)
    server = RunningServer(lake, state_dir=state, extra_args=["--spill-limit", "1GiB"])
    try:
        assert (state / "spill").is_dir()
        assert not stale.exists(), "the spill files of an earlier process are removed at start"
        with tarn.connect(server.uri) as conn:
            assert run(conn, "SELECT count(*) AS n FROM nation").column(0)[0].as_py() == 25
    finally:
        server.stop()


def test_a_size_that_is_not_one_is_refused_at_start(lake, tmp_path):
    with pytest.raises(RuntimeError, match="memory-limit"):
        RunningServer(lake, extra_args=["--memory-limit", "lots"])


def test_runs_and_live_queries_show_memory_spills_and_queue_time(lake, tmp_path):
    from test_queries import ENDLESS, live, wait_for

    server = RunningServer(lake, extra_args=["--memory-limit", "20MiB", "--max-running-queries", "1"])
    try:
        with tarn.connect(server.uri) as conn, tarn.connect(server.uri) as other:
            # A sort 25 times the size of lineitem's comments spills under 20 MiB.
            rows = run(conn, "SELECT a.l_comment, n.n_nationkey FROM lineitem a CROSS JOIN nation n ORDER BY a.l_comment, n.n_nationkey -- spills")
            expected = run(conn, "SELECT count(*) * 25 AS n FROM lineitem").column(0)[0].as_py()
            comments = rows.column(0).to_pylist()
            assert len(comments) == expected and comments == sorted(comments)

            # With one slot, a second query waits behind an endless one.
            outcome = {}

            def endless():
                try:
                    run(other, ENDLESS)
                except tarn.Error as err:
                    outcome["endless"] = str(err)

            thread = threading.Thread(target=endless)
            thread.start()
            assert wait_for(lambda: live(conn, "state = 'running'"))
            held = wait_for(lambda: run(conn, "SELECT memory_reserved, peak_memory, progress FROM system.queries WHERE state = 'running'").to_pylist()[0]["peak_memory"])
            assert held > 0, "a running aggregate holds memory"
            def queued():
                with tarn.connect(server.uri) as third:
                    outcome["queued"] = run(third, "SELECT sum(o_totalprice) AS n FROM orders -- queued").column(0)[0].as_py()

            waiter = threading.Thread(target=queued)
            waiter.start()
            assert wait_for(lambda: live(conn, "state = 'queued'"))
            time.sleep(1.0)
            run(conn, f"CANCEL QUERY '{live(conn, chr(39).join(['state = ', 'running', '']))[0]['query_id']}'")
            thread.join(timeout=30)
            waiter.join(timeout=30)
            assert outcome["queued"] > 0, outcome

            runs = {
                r["marker"]: r
                for r in run(
                    conn,
                    "SELECT CASE WHEN sql LIKE '%-- spills' THEN 'spills' ELSE 'queued' END AS marker, "
                    "state, peak_memory_bytes, spilled_bytes, queue_ms, note FROM system.runs "
                    "WHERE sql LIKE '%-- spills' OR sql LIKE '%-- queued'",
                ).to_pylist()
            }
        spills, queued = runs["spills"], runs["queued"]
        assert spills["state"] == "COMPLETE" and spills["spilled_bytes"] > 0, spills
        assert 0 < spills["peak_memory_bytes"] <= 20 * 1024 * 1024, spills
        assert queued["state"] == "COMPLETE" and queued["queue_ms"] >= 900, queued
        assert spills["note"] is None and queued["note"] is None
    finally:
        server.stop()
