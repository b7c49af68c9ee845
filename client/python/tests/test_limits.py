"""Statement limits through a real driver: the defaults, and the config file."""

import pytest

import tarn
from conftest import RunningServer


def test_a_deep_statement_is_refused_clearly_and_the_server_goes_on(conn):
    deep = "SELECT " + "+".join(["1"] * 20_000)
    with pytest.raises(tarn.Error, match="INVALID_ARGUMENT.*max_expression_depth"):
        conn.arrow(deep)
    assert conn.arrow("SELECT 1 AS one").column("one")[0].as_py() == 1


def test_the_config_file_sets_the_limits(lake, tmp_path):
    config = tmp_path / "tarn.toml"
    config.write_text("[engine]\nmax_sql_length = 200\nmax_expression_depth = 5\n")
    server = RunningServer(lake, extra_args=["--config", str(config)])
    try:
        with tarn.connect(server.uri) as conn:
            with pytest.raises(tarn.Error, match="max_expression_depth"):
                conn.arrow("SELECT 1+1+1+1+1+1+1+1")
            with pytest.raises(tarn.Error, match="max_sql_length"):
                conn.arrow(f"SELECT '{'x' * 300}'")
            assert conn.arrow("SELECT 1+1 AS two").column("two")[0].as_py() == 2
    finally:
        server.stop()


def test_a_session_may_hold_only_so_many_prepared_statements_and_unfetched_results(lake, tmp_path):
    import pyarrow as pa
    import pyarrow.flight as flight

    import flightsql.flightsql_pb2 as fsql
    from test_flight_sql import create_prepared, descriptor, fetch, packed

    config = tmp_path / "tarn.toml"
    config.write_text("[engine]\nmax_prepared_statements = 3\nmax_unfetched_results = 4\n")
    server = RunningServer(lake, extra_args=["--config", str(config)])
    location = server.uri.replace("grpc://", "grpc+tcp://")
    # Without a login or a cookie, each connection is a session of its own.
    first, second = flight.FlightClient(location), flight.FlightClient(location)
    try:
        handles = [create_prepared(first, f"SELECT {i} AS n") for i in range(3)]
        # pyarrow reports RESOURCE_EXHAUSTED as ArrowInvalid, naming the code.
        with pytest.raises(pa.ArrowInvalid, match="resource exhausted error.*max_prepared_statements"):
            create_prepared(first, "SELECT 99 AS n")
        assert create_prepared(second, "SELECT 7 AS n")  # another session is not counted
        close = fsql.ActionClosePreparedStatementRequest(prepared_statement_handle=handles[0].prepared_statement_handle)
        list(first.do_action(flight.Action("ClosePreparedStatement", packed(close))))
        assert create_prepared(first, "SELECT 4 AS n")  # closing one makes room

        def plan(client, sql):
            return client.get_flight_info(descriptor(fsql.CommandStatementQuery(query=sql)))

        infos = [plan(first, f"SELECT {i} AS unfetched_{i}") for i in range(4)]
        with pytest.raises(pa.ArrowInvalid, match="resource exhausted error.*max_unfetched_results"):
            plan(first, "SELECT 'refused' AS refused_result")
        assert fetch(second, plan(second, "SELECT 5 AS n")).column(0)[0].as_py() == 5
        assert fetch(first, infos[0]).column(0)[0].as_py() == 0  # fetching one makes room
        assert fetch(first, plan(first, "SELECT 6 AS n")).column(0)[0].as_py() == 6
        with tarn.connect(server.uri) as conn:
            refused_runs = conn.arrow("SELECT state, error FROM system.runs WHERE sql LIKE '%refused_result'").to_pylist()
        assert len(refused_runs) == 1 and refused_runs[0]["state"] == "ABORT", refused_runs
        assert "max_unfetched_results" in refused_runs[0]["error"], refused_runs
    finally:
        first.close()
        second.close()
        server.stop()
