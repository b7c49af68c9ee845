"""The result cache: identical queries on unchanged files are answered from
memory with the same answers, and a Delta commit, a REFRESH TABLE or a
replaced file makes the next one run again (checked against DuckDB). The
cache stays within its byte budget, and each way to turn it off (flag,
environment, config file, SET) is used."""

import shutil
import time

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import tarn
from conftest import QUERIES, RunningServer
from test_metrics import http_address, scrape, value
from test_tpch import TPCH_TABLES, same, sort_key


def result_cache(conn) -> dict:
    table = conn.arrow("SELECT * FROM system.caches WHERE cache = 'result'")
    assert table.num_rows == 1
    return {name: table.column(name)[0].as_py() for name in table.column_names}


def assert_same_rows(ours, theirs, what):
    assert ours.num_rows == theirs.num_rows, f"{what}: {ours.num_rows} rows, DuckDB {theirs.num_rows}"
    our_rows = sorted(zip(*[c.to_pylist() for c in ours.columns]), key=sort_key)
    their_rows = sorted(zip(*[c.to_pylist() for c in theirs.columns]), key=sort_key)
    for a, b in zip(our_rows, their_rows):
        assert all(same(x, y) for x, y in zip(a, b)), f"{what}: {a} != {b}"


@pytest.fixture
def own_lake(lake, tmp_path):
    """A copy of the demo lake this test may change."""
    copy = tmp_path / "lake"
    shutil.copytree(lake, copy, ignore=shutil.ignore_patterns(".tarn"))
    return copy


def duck_over(lake) -> duckdb.DuckDBPyConnection:
    db = duckdb.connect()
    for table in TPCH_TABLES:
        db.execute(f"CREATE VIEW {table} AS SELECT * FROM read_parquet('{lake / (table + '.parquet')}')")
    return db


def test_cached_answers_are_duckdbs_across_tpch(lake):
    """Each query twice: the second is a hit, and both equal DuckDB's."""
    server = RunningServer(lake)
    duck = duck_over(lake)
    try:
        with tarn.connect(server.uri) as conn:
            before = result_cache(conn)
            for number in range(1, 23):
                sql = (QUERIES / f"q{number}.sql").read_text()
                theirs = duck.sql(sql).to_arrow_table()
                first = conn.arrow(sql)
                hits = result_cache(conn)["hits"]
                second = conn.arrow(sql)
                assert result_cache(conn)["hits"] == hits + 1, f"q{number} was not answered from the cache"
                assert first.schema == second.schema
                assert_same_rows(first, theirs, f"q{number} (ran)")
                assert_same_rows(second, theirs, f"q{number} (cached)")
            after = result_cache(conn)
            assert after["hits"] - before["hits"] == 22
            assert after["entries"] >= 22 and 0 < after["bytes"] <= after["budget_bytes"]
            # A session that turned the cache off runs the query, and counts nothing.
            conn.execute("SET tarn.result_cache = false")
            sql = (QUERIES / "q6.sql").read_text()
            assert_same_rows(conn.arrow(sql), duck.sql(sql).to_arrow_table(), "q6 (session without cache)")
            off = result_cache(conn)
            assert (off["hits"], off["misses"]) == (after["hits"], after["misses"])
    finally:
        duck.close()
        server.stop()


def test_a_commit_invalidates_exactly_the_answers_of_its_table(own_lake):
    server = RunningServer(own_lake)
    duck = duck_over(own_lake)
    q1 = (QUERIES / "q1.sql").read_text().replace("lineitem", "li")
    q3 = (QUERIES / "q3.sql").read_text()
    try:
        with tarn.connect(server.uri) as conn:
            conn.execute("CREATE TABLE li AS SELECT * FROM lineitem")
            for sql in (q1, q3, q1, q3):
                conn.arrow(sql)
            warm = result_cache(conn)
            conn.execute("INSERT INTO li SELECT * FROM lineitem WHERE l_orderkey < 1000")
            after_commit = conn.arrow(q1)
            assert result_cache(conn)["hits"] == warm["hits"], "q1 on li was answered from before the commit"
            duck.execute("CREATE VIEW li AS SELECT * FROM lineitem UNION ALL SELECT * FROM lineitem WHERE l_orderkey < 1000")
            assert_same_rows(after_commit, duck.sql(q1).to_arrow_table(), "q1 after the commit")
            # Q3 reads no table the commit changed: still a hit.
            assert_same_rows(conn.arrow(q3), duck.sql(q3).to_arrow_table(), "q3")
            assert result_cache(conn)["hits"] == warm["hits"] + 1
            # The new version is cached in its turn.
            assert_same_rows(conn.arrow(q1), duck.sql(q1).to_arrow_table(), "q1 again")
            assert result_cache(conn)["hits"] == warm["hits"] + 2
    finally:
        duck.close()
        server.stop()


def write_numbers(path, numbers):
    pq.write_table(pa.table({"n": pa.array(numbers, pa.int64())}), path)


def test_refresh_table_and_a_replaced_file_invalidate(tmp_path):
    """A file replaced under a table: REFRESH TABLE makes the next query see
    it at once; without one, the listing's expiry (listing_cache_ttl, set with
    the [cache] section in the config file) does."""
    lake = tmp_path / "lake"
    lake.mkdir()
    write_numbers(lake / "numbers.parquet", range(10))
    config = tmp_path / "tarn.toml"
    config.write_text('[lake]\nlisting_cache_ttl = "1s"\n[cache]\nresult = true\nresult_size = "8MiB"\n')
    server = RunningServer(lake, ["--config", str(config)])
    sql = "SELECT count(*) AS rows, sum(n) AS total FROM numbers"
    try:
        with tarn.connect(server.uri) as conn:
            assert result_cache(conn)["budget_bytes"] == 8 * 1024 * 1024
            assert conn.arrow(sql).to_pylist() == [{"rows": 10, "total": 45}]
            assert conn.arrow(sql).to_pylist() == [{"rows": 10, "total": 45}]
            hits = result_cache(conn)["hits"]
            assert hits == 1
            write_numbers(lake / "numbers.parquet", range(100))
            conn.execute("REFRESH TABLE numbers")
            assert conn.arrow(sql).to_pylist() == [{"rows": 100, "total": 4950}]
            assert result_cache(conn)["hits"] == hits
            write_numbers(lake / "numbers.parquet", range(5))
            time.sleep(1.5)
            assert conn.arrow(sql).to_pylist() == [{"rows": 5, "total": 10}]
            assert result_cache(conn)["hits"] == hits
            assert conn.arrow(sql).to_pylist() == [{"rows": 5, "total": 10}]
            assert result_cache(conn)["hits"] == hits + 1
    finally:
        server.stop()


def test_the_cache_stays_within_its_budget(lake):
    server = RunningServer(lake, ["--result-cache-size", "256KiB", "--http-bind", "127.0.0.1:0"])
    try:
        with tarn.connect(server.uri) as conn:
            for limit in range(100, 3100, 100):
                sql = f"SELECT l_orderkey, l_comment FROM lineitem WHERE l_orderkey < {limit}"
                assert conn.arrow(sql).num_rows > 0
                now = result_cache(conn)
                assert now["bytes"] <= now["budget_bytes"] == 256 * 1024, now
            full = result_cache(conn)
            assert full["evictions"] > 0 and full["entries"] > 0, full
            # The most recent answer is still there and still right.
            expected = conn.arrow(sql)
            assert result_cache(conn)["hits"] == full["hits"] + 1
            conn.execute("SET tarn.result_cache = false")
            assert conn.arrow(sql).sort_by("l_orderkey") == expected.sort_by("l_orderkey")
            samples = scrape(http_address(server))
            assert value(samples, "tarn_cache_hits_total", cache="result") == full["hits"] + 1
            assert value(samples, "tarn_cache_misses_total", cache="result") == full["misses"]
            assert 0 < value(samples, "tarn_cache_bytes", cache="result") <= 256 * 1024
            assert value(samples, "tarn_cache_budget_bytes", cache="result") == 256 * 1024
    finally:
        server.stop()


@pytest.mark.parametrize(
    "how",
    ["flag", "environment", "config file"],
)
def test_the_server_can_turn_the_cache_off(lake, tmp_path, how):
    args, env = [], None
    if how == "flag":
        args = ["--result-cache", "off"]
    elif how == "environment":
        env = {"TARN_RESULT_CACHE": "off"}
    else:
        config = tmp_path / "tarn.toml"
        config.write_text("[cache]\nresult = false\n")
        args = ["--config", str(config)]
    server = RunningServer(lake, args, env=env)
    try:
        with tarn.connect(server.uri) as conn:
            for _ in range(3):
                assert conn.arrow("SELECT count(*) AS n FROM orders").column(0)[0].as_py() > 0
            state = result_cache(conn)
            assert state["enabled"] is False
            assert (state["hits"], state["misses"], state["entries"]) == (0, 0, 0)
    finally:
        server.stop()


def test_volatile_and_system_queries_are_never_cached(lake):
    server = RunningServer(lake)
    try:
        with tarn.connect(server.uri) as conn:
            draws = [conn.arrow("SELECT random() AS r FROM region").column(0).to_pylist() for _ in range(2)]
            assert draws[0] != draws[1]
            conn.arrow("SELECT count(*) FROM system.queries")
            conn.arrow("SELECT count(*) FROM system.queries")
            state = result_cache(conn)
            assert (state["hits"], state["entries"]) == (0, 0), state
    finally:
        server.stop()
