"""Column statistics: `ANALYZE` records what DuckDB counts in the same files,
the planner is given it (EXPLAIN shows the distinct counts), it survives a
restart, a changed file or a Delta commit brings new statistics, and only
admins read them."""

import shutil
import time

import duckdb
import pyarrow.parquet as pq
import pytest

import tarn
from conftest import RunningServer
from test_auth import AuthServer, admin, make_user, run


def statistics(conn, table) -> dict:
    """The current statistics of `table`, by column."""
    found = conn.arrow(
        f"SELECT * FROM system.column_statistics WHERE table_name = '{table}' AND current ORDER BY ordinal"
    ).to_pylist()
    return {row["column_name"]: row for row in found}


def wait_for_statistics(conn, table, rows, timeout=60) -> dict:
    """Polls until the current statistics of `table` count `rows` rows."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = statistics(conn, table)
        if found and all(column["row_count"] == rows for column in found.values()):
            return found
        time.sleep(0.2)
    pytest.fail(f"no statistics of {table} with {rows} rows after {timeout} s: {statistics(conn, table)}")


@pytest.fixture
def own_lake(lake, tmp_path):
    copy = tmp_path / "lake"
    copy.mkdir()
    for table in ["lineitem.parquet", "orders.parquet", "nation.parquet"]:
        shutil.copy(lake / table, copy / table)
    return copy


def test_analyze_records_what_duckdb_counts_and_the_planner_uses_it(own_lake):
    server = RunningServer(own_lake)
    duck = duckdb.connect()
    try:
        with tarn.connect(server.uri) as conn:
            assert statistics(conn, "orders") == {}
            conn.execute("ANALYZE orders")
            conn.execute("ANALYZE TABLE lineitem")
            for table in ["orders", "lineitem"]:
                found = statistics(conn, table)
                path = own_lake / f"{table}.parquet"
                columns = pq.read_schema(path).names
                assert list(found) == columns
                for name in columns:
                    rows, nulls, distinct, low, high = duck.execute(
                        f"SELECT count(*), count(*) - count({name}), count(DISTINCT {name}), "
                        f"min({name})::VARCHAR, max({name})::VARCHAR FROM read_parquet('{path}')"
                    ).fetchone()
                    column = found[name]
                    assert (column["row_count"], column["null_count"]) == (rows, nulls), name
                    assert (column["min_value"], column["max_value"]) == (low, high), name
                    # An estimate (HyperLogLog): within 5% of the exact count.
                    assert abs(column["distinct_count"] - distinct) <= max(2, distinct * 0.05), (
                        f"{table}.{name}: estimated {column['distinct_count']} distinct values, DuckDB counts {distinct}"
                    )
                    assert column["table_version"].startswith("files:")
            # The planner is given the counts the files do not hold, when
            # the session (or ALTER SYSTEM) asks for them.
            conn.execute("SET datafusion.explain.show_statistics = true")
            customers = statistics(conn, "orders")["o_custkey"]["distinct_count"]
            explain = "EXPLAIN SELECT o_custkey FROM orders"
            plan = "\n".join(conn.arrow(explain).column("plan").to_pylist())
            assert f"Distinct=Inexact({customers})" not in plan, plan
            conn.execute("SET tarn.column_statistics = true")
            plan = "\n".join(conn.arrow(explain).column("plan").to_pylist())
            assert f"Distinct=Inexact({customers})" in plan, plan
    finally:
        duck.close()
        server.stop()


def test_statistics_survive_a_restart_and_analyze_refreshes_them(own_lake, tmp_path):
    state = tmp_path / "state"
    server = RunningServer(own_lake, state_dir=state)
    try:
        with tarn.connect(server.uri) as conn:
            conn.execute("ANALYZE nation")
            before = statistics(conn, "nation")
    finally:
        server.stop()
    assert before["n_nationkey"]["row_count"] == 25

    server = RunningServer(own_lake, state_dir=state)
    try:
        with tarn.connect(server.uri) as conn:
            assert statistics(conn, "nation") == before
            conn.execute("SET datafusion.explain.show_statistics = true")
            conn.execute("SET tarn.column_statistics = true")
            plan = "\n".join(conn.arrow("EXPLAIN SELECT n_name FROM nation").column("plan").to_pylist())
            assert f"Distinct=Inexact({before['n_name']['distinct_count']})" in plan, plan
            # The file is replaced by one with ten rows; ANALYZE brings a new version.
            path = own_lake / "nation.parquet"
            pq.write_table(pq.read_table(path).slice(0, 10), path)
            conn.execute("REFRESH TABLE nation")
            conn.execute("ANALYZE nation")
            after = statistics(conn, "nation")
            assert after["n_nationkey"]["row_count"] == 10
            assert after["n_nationkey"]["max_value"] == "9"
            assert after["n_nationkey"]["table_version"] != before["n_nationkey"]["table_version"]
            versions = conn.arrow(
                "SELECT DISTINCT table_version, current FROM system.column_statistics WHERE table_name = 'nation'"
            ).to_pylist()
            assert sorted(v["current"] for v in versions) == [False, True], versions
    finally:
        server.stop()


def test_each_delta_commit_is_analysed_without_asking(own_lake):
    server = RunningServer(own_lake)
    try:
        with tarn.connect(server.uri) as conn:
            conn.execute("CREATE TABLE big_orders AS SELECT * FROM orders WHERE o_totalprice > 100000")
            rows = conn.arrow("SELECT count(*) AS n FROM big_orders").column("n")[0].as_py()
            first = wait_for_statistics(conn, "big_orders", rows)
            assert first["o_orderkey"]["table_version"] == "0"
            conn.execute("INSERT INTO big_orders SELECT * FROM orders WHERE o_totalprice <= 1000")
            more = conn.arrow("SELECT count(*) AS n FROM big_orders").column("n")[0].as_py()
            assert more > rows
            second = wait_for_statistics(conn, "big_orders", more)
            assert second["o_orderkey"]["table_version"] == "1"
            low = conn.arrow("SELECT min(o_totalprice)::VARCHAR AS low FROM big_orders").column("low")[0].as_py()
            assert second["o_totalprice"]["min_value"] == low
            # A dropped table's statistics go with it.
            conn.execute("DROP TABLE big_orders")
            assert statistics(conn, "big_orders") == {}
    finally:
        server.stop()


def test_analyze_errors_name_the_table_and_only_admins_read_statistics(own_lake, tmp_path):
    server = AuthServer(own_lake, state_dir=tmp_path / "state")
    try:
        make_user(server, "nina", "nina-password-1")
        with admin(server) as boss:
            run(boss, "GRANT SELECT ON nation TO nina")
            with pytest.raises(Exception, match="no_such_table"):
                run(boss, "ANALYZE no_such_table")
            with pytest.raises(Exception, match="system.caches|not one"):
                run(boss, "ANALYZE system.caches")
            run(boss, "ANALYZE orders")
        with tarn.connect(server.uri, user="nina", password="nina-password-1") as nina:
            run(nina, "ANALYZE nation")
            for sql in ["ANALYZE orders", "SELECT * FROM system.column_statistics"]:
                with pytest.raises(Exception) as refused:
                    run(nina, sql)
                assert "PERMISSION_DENIED" in str(refused.value) or "permission" in str(refused.value).lower(), sql
        with admin(server) as boss:
            analysed = {row["table_name"] for row in run(boss, "SELECT table_name FROM system.column_statistics").to_pylist()}
            assert analysed == {"orders", "nation"}
        assert server.alive()
    finally:
        server.stop()
