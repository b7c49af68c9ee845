"""Limits per user and per role (`ALTER USER|ROLE name SET ...`), through a
real driver on a server with authentication: a user's statement timeout is
its sessions' default and their ceiling, a role's applies to its members,
`max_running_queries` queues only that user's queries, only admins may set
them, and they survive a restart until they are reset or their holder is
dropped."""

import threading
import time

import pytest

import tarn
from test_auth import AuthServer, admin, make_user, run
from test_queries import ENDLESS, live, wait_for


def as_user(server, name):
    return tarn.connect(server.uri, user=name, password=f"{name}-password-1")


def timed_out(server, user, sql=ENDLESS, setup=()):
    """Runs `sql` as `user`: the seconds until the server stopped it with
    DEADLINE_EXCEEDED. Fails (after cancelling it) if it runs on for 30 s."""
    outcome = {}

    def go():
        with as_user(server, user) as conn:
            for statement in setup:
                run(conn, statement)
            started = time.monotonic()
            try:
                run(conn, sql)
                outcome["error"] = "it ran to its end"
            except tarn.Error as err:
                outcome["error"] = str(err)
            outcome["took"] = time.monotonic() - started

    thread = threading.Thread(target=go)
    thread.start()
    thread.join(timeout=30)
    if thread.is_alive():
        with admin(server) as conn:
            for query in live(conn, f"user = '{user}'"):
                run(conn, f"CANCEL QUERY '{query['query_id']}'")
        thread.join(timeout=30)
        pytest.fail(f"{user}'s statement was not stopped by its limit within 30 s")
    message = outcome["error"]
    assert "DEADLINE_EXCEEDED" in message or "DeadlineExceeded" in message, message
    return outcome["took"]


def still_running_after(server, user, seconds, marker):
    """Starts ENDLESS as `user`: whether it is still running after `seconds`
    (it is then cancelled)."""
    outcome = {}

    def go():
        with as_user(server, user) as conn:
            try:
                run(conn, f"{ENDLESS} -- {marker}")
            except tarn.Error as err:
                outcome["error"] = str(err)

    thread = threading.Thread(target=go)
    thread.start()
    with admin(server) as conn:
        mine = f"sql LIKE '%-- {marker}' AND state = 'running'"
        assert wait_for(lambda: live(conn, mine)), live(conn)
        time.sleep(seconds)
        running = live(conn, mine)
        for query in running:
            run(conn, f"CANCEL QUERY '{query['query_id']}'")
    thread.join(timeout=30)
    return bool(running)


def test_a_statement_timeout_per_user_and_per_role_is_a_ceiling_and_survives_a_restart(lake, tmp_path):
    state = tmp_path / "state"
    server = AuthServer(lake, state_dir=state)
    try:
        for name, roles in [("alice", ()), ("bob", ("analysts",)), ("carol", ())]:
            if roles:
                with admin(server) as conn:
                    run(conn, "CREATE ROLE analysts")
            make_user(server, name, f"{name}-password-1", roles=roles, read_all=True)
        with admin(server) as conn:
            run(conn, "ALTER USER alice SET statement_timeout = '1s'")
            run(conn, "ALTER ROLE analysts SET statement_timeout TO '1s'")
            run(conn, "ALTER USER carol SET statement_timeout = '1s'")
            with pytest.raises(tarn.Error) as err:
                run(conn, "ALTER USER nobody SET statement_timeout = '1s'")
            assert "(NotFound;" in str(err.value) and "no user 'nobody'" in str(err.value), err.value
            with pytest.raises(tarn.Error) as err:
                run(conn, "ALTER USER alice SET memory = '1GiB'")
            assert "statement_timeout and max_running_queries" in str(err.value), err.value
        # Only admins change limits, their own included.
        with as_user(server, "alice") as conn:
            with pytest.raises(tarn.Error) as err:
                run(conn, "ALTER USER alice SET statement_timeout = '1h'")
            assert "(PermissionDenied;" in str(err.value) and "admin" in str(err.value), err.value
        assert timed_out(server, "alice") < 15
        # A session may not lift its user's limit.
        assert timed_out(server, "alice", setup=["SET tarn.statement_timeout = '0'"]) < 15
        assert timed_out(server, "alice", setup=["SET tarn.statement_timeout = '1h'"]) < 15
        # A role's limit applies to its members.
        assert timed_out(server, "bob") < 15
        # Dropping a user forgets its limits: a new carol has none.
        with admin(server) as conn:
            run(conn, "DROP USER carol")
        make_user(server, "carol", "carol-password-1", read_all=True)
        server.stop()

        server = AuthServer(lake, state_dir=state)
        assert timed_out(server, "alice") < 15
        assert timed_out(server, "bob") < 15
        assert still_running_after(server, "carol", 2.5, "carol")
        with admin(server) as conn:
            run(conn, "ALTER USER alice RESET statement_timeout")
        assert still_running_after(server, "alice", 2.5, "alice reset")
        server.stop()

        # The reset is remembered too.
        server = AuthServer(lake, state_dir=state)
        assert still_running_after(server, "alice", 2.5, "alice after restart")
        assert timed_out(server, "bob") < 15
    finally:
        server.stop()


def test_max_running_queries_per_role_queues_only_its_members_queries(lake, tmp_path):
    state = tmp_path / "state"
    server = AuthServer(lake, state_dir=state)
    try:
        with admin(server) as conn:
            run(conn, "CREATE ROLE etl")
        make_user(server, "ann", "ann-password-1", roles=("etl",), read_all=True)
        with admin(server) as conn:
            run(conn, "ALTER ROLE etl SET max_running_queries = 1")
            with pytest.raises(tarn.Error) as err:
                run(conn, "ALTER ROLE etl SET max_running_queries = 0")
            assert "at least 1" in str(err.value), err.value
        server.stop()
        # Remembered across a restart.
        server = AuthServer(lake, state_dir=state)
        outcome = {}

        def go(key, sql):
            with as_user(server, "ann") as conn:
                try:
                    outcome[key] = run(conn, sql).num_rows
                except tarn.Error as err:
                    outcome[key] = str(err)

        first = threading.Thread(target=go, args=("endless", f"{ENDLESS} -- ann one"))
        first.start()
        with admin(server) as conn:
            assert wait_for(lambda: live(conn, "user = 'ann' AND state = 'running'")), live(conn)
            second = threading.Thread(target=go, args=("second", "SELECT sum(o_totalprice) AS s FROM orders -- ann two"))
            second.start()
            # Slots are free, yet ann's second query waits for her first.
            assert wait_for(lambda: live(conn, "sql LIKE '%-- ann two' AND state = 'queued'")), live(conn)
            # Nobody else waits for ann's limit.
            started = time.monotonic()
            assert run(conn, "SELECT count(*) AS n FROM orders").column(0)[0].as_py() > 0
            assert time.monotonic() - started < 10
            assert live(conn, "sql LIKE '%-- ann two' AND state = 'queued'"), live(conn)
            endless = live(conn, "sql LIKE '%-- ann one'")[0]["query_id"]
            run(conn, f"CANCEL QUERY '{endless}'")
            first.join(timeout=30)
            second.join(timeout=30)
            assert "CANCELLED" in outcome["endless"], outcome
            assert outcome["second"] == 1, outcome
            assert wait_for(lambda: not live(conn, "user = 'ann'"), timeout=2), live(conn)
    finally:
        server.stop()
