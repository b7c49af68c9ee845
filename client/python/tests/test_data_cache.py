"""The decoded-data cache: columns scanned again are held in memory and
scans of them decode nothing, with the same answers as DuckDB across TPC-H;
a Delta commit, a REFRESH TABLE and a replaced file each make scans read the
new data; ANALYZE and a session with SET tarn.data_cache = false read past it; a table pinned with ALTER TABLE ... SET (cache = 'memory') is
loaded at once and again after a restart; the cache stays within its
budget; each way to turn it off or size it (flag, environment, config
file) is used."""

import re
import shutil
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import tarn
from conftest import QUERIES, RunningServer
from test_metrics import http_address, scrape, value
from test_result_cache import assert_same_rows, duck_over, write_numbers


def data_cache(conn) -> dict:
    table = conn.arrow("SELECT * FROM system.caches WHERE cache = 'data'")
    assert table.num_rows == 1
    return {name: table.column(name)[0].as_py() for name in table.column_names}


def plan_of(conn, sql) -> str:
    return "\n".join(conn.arrow(f"EXPLAIN {sql}").column("plan").to_pylist())


def settled(conn, timeout=60) -> dict:
    """Waits until the background loads stop adding columns."""
    deadline = time.monotonic() + timeout
    last = data_cache(conn)
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = data_cache(conn)
        if (now["entries"], now["bytes"]) == (last["entries"], last["bytes"]):
            return now
        last = now
    pytest.fail(f"the data cache was still loading after {timeout} s: {last}")


def wait_until_held(conn, sql, timeout=60):
    """Polls until every scan of `sql` is answered from held columns."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        plan = plan_of(conn, sql)
        if "CachedScanExec" in plan and "DataSourceExec" not in plan:
            return plan
        time.sleep(0.2)
    pytest.fail(f"the scans of {sql!r} were not held after {timeout} s:\n{plan}")


@pytest.fixture
def own_lake(lake, tmp_path):
    copy = tmp_path / "lake"
    shutil.copytree(lake, copy, ignore=shutil.ignore_patterns(".tarn"))
    return copy


def test_held_columns_give_duckdbs_answers_across_tpch(lake):
    """Every query twice makes its columns hot; once they are loaded, every
    scan of every query is answered from memory, and the answers are
    DuckDB's."""
    server = RunningServer(lake, ["--result-cache", "off"])
    duck = duck_over(lake)
    try:
        with tarn.connect(server.uri) as conn:
            queries = {n: (QUERIES / f"q{n}.sql").read_text() for n in range(1, 23)}
            for _ in range(2):
                for sql in queries.values():
                    conn.arrow(sql)
            settled(conn)
            before = data_cache(conn)
            for number, sql in queries.items():
                plan = plan_of(conn, sql)
                assert "DataSourceExec" not in plan, f"q{number} still decodes files:\n{plan}"
                assert_same_rows(conn.arrow(sql), duck.sql(sql).to_arrow_table(), f"q{number} (held)")
            after = data_cache(conn)
            assert after["hits"] - before["hits"] >= 2 * 22, (before, after)
            assert after["misses"] == before["misses"], "a scan missed after every column was loaded"
            assert 0 < after["bytes"] <= after["budget_bytes"]
    finally:
        duck.close()
        server.stop()


def test_a_commit_refresh_and_replaced_file_each_invalidate(own_lake, tmp_path):
    config = tmp_path / "tarn.toml"
    config.write_text('[lake]\nlisting_cache_ttl = "1s"\n')
    write_numbers(own_lake / "numbers.parquet", range(10))
    server = RunningServer(own_lake, ["--config", str(config), "--result-cache", "off"])
    duck = duck_over(own_lake)
    q1 = (QUERIES / "q1.sql").read_text().replace("lineitem", "li")
    numbers = "SELECT count(*) AS rows, sum(n) AS total FROM numbers WHERE n >= 0"
    try:
        with tarn.connect(server.uri) as conn:
            # A Delta commit: new files, so the held columns of the old ones go unused.
            conn.execute("CREATE TABLE li AS SELECT * FROM lineitem")
            conn.arrow(q1)
            conn.arrow(q1)
            wait_until_held(conn, q1)
            conn.execute("INSERT INTO li SELECT * FROM lineitem WHERE l_orderkey < 1000")
            duck.execute("CREATE VIEW li AS SELECT * FROM lineitem UNION ALL SELECT * FROM lineitem WHERE l_orderkey < 1000")
            assert "DataSourceExec" in plan_of(conn, q1), "the new version's file was served from memory"
            assert_same_rows(conn.arrow(q1), duck.sql(q1).to_arrow_table(), "q1 after the commit")

            # A file replaced, then REFRESH TABLE.
            for _ in range(2):
                assert conn.arrow(numbers).to_pylist() == [{"rows": 10, "total": 45}]
            wait_until_held(conn, numbers)
            assert conn.arrow(numbers).to_pylist() == [{"rows": 10, "total": 45}]
            write_numbers(own_lake / "numbers.parquet", range(100))
            conn.execute("REFRESH TABLE numbers")
            assert conn.arrow(numbers).to_pylist() == [{"rows": 100, "total": 4950}]

            # A file replaced, seen once the listing expires.
            conn.arrow(numbers)
            wait_until_held(conn, numbers)
            write_numbers(own_lake / "numbers.parquet", range(5))
            time.sleep(1.5)
            assert conn.arrow(numbers).to_pylist() == [{"rows": 5, "total": 10}]
    finally:
        duck.close()
        server.stop()


def test_a_pinned_table_is_loaded_at_once_and_after_a_restart(own_lake, tmp_path):
    state = tmp_path / "state"
    duck = duck_over(own_lake)
    q6 = (QUERIES / "q6.sql").read_text()
    server = RunningServer(own_lake, ["--result-cache", "off"], state_dir=state)
    try:
        with tarn.connect(server.uri) as conn:
            with pytest.raises(Exception, match="'memory'"):
                conn.execute("ALTER TABLE lineitem SET (cache = 'sometimes')")
            with pytest.raises(Exception, match="no_such_table"):
                conn.execute("ALTER TABLE no_such_table SET (cache = 'memory')")
            conn.execute("ALTER TABLE lineitem SET (cache = 'memory')")
            # No query has scanned it: the pin alone loads every column.
            wait_until_held(conn, q6)
            columns = len(pq.read_schema(own_lake / "lineitem.parquet"))
            assert settled(conn)["entries"] >= columns
            assert_same_rows(conn.arrow(q6), duck.sql(q6).to_arrow_table(), "q6 (pinned)")
    finally:
        server.stop()

    server = RunningServer(own_lake, ["--result-cache", "off"], state_dir=state)
    try:
        with tarn.connect(server.uri) as conn:
            wait_until_held(conn, q6)
            assert_same_rows(conn.arrow(q6), duck.sql(q6).to_arrow_table(), "q6 (pinned, after a restart)")
            conn.execute("ALTER TABLE lineitem SET (cache = 'none')")
            for _ in range(3):
                assert "DataSourceExec" in plan_of(conn, q6), "a table set to 'none' was served from memory"
                conn.arrow(q6)
            time.sleep(1)
            assert "CachedScanExec" not in plan_of(conn, q6)
    finally:
        server.stop()
        duck.close()


def spill_count(conn, sql) -> int:
    plan = "\n".join(conn.arrow(f"EXPLAIN ANALYZE {sql}").column("plan").to_pylist())
    counts = [int(n) for n in re.findall(r"spill_count=(\d+)", plan)]
    assert counts, plan
    return sum(counts)


def test_held_columns_go_out_in_batches_of_their_own_size(lake):
    """Held columns are chunks that own their bytes. A slice of a
    whole-column array was sized as the whole column: the Flight encoder cut
    every batch of SELECT * into tiny messages, and a sort within a memory
    limit spilled where the same sort from the files did not."""
    server = RunningServer(lake, ["--result-cache", "off", "--memory-limit", "64MiB"])
    sql = "SELECT * FROM lineitem"
    sort = "SELECT l_orderkey, l_comment FROM lineitem ORDER BY l_extendedprice, l_comment, l_orderkey"
    try:
        with tarn.connect(server.uri) as conn:
            from_files = conn.arrow(sql)
            sorted_from_files = conn.arrow(sort)
            spills_from_files = spill_count(conn, sort)
            wait_until_held(conn, sql)
            held = conn.arrow(sql)
            assert held.num_rows == from_files.num_rows
            assert len(held.to_batches()) <= len(from_files.to_batches()), (
                f"{len(held.to_batches())} batches from held columns, {len(from_files.to_batches())} from the files"
            )
            keys = [(name, "ascending") for name in ("l_orderkey", "l_linenumber")]
            assert held.sort_by(keys).equals(from_files.sort_by(keys))
            assert "CachedScanExec" in plan_of(conn, sort)
            assert spill_count(conn, sort) <= spills_from_files
            assert conn.arrow(sort).equals(sorted_from_files)
    finally:
        server.stop()


def test_analyze_and_a_session_without_the_cache_neither_read_nor_heat_it(own_lake):
    """ANALYZE reads past the data cache (so a write, analysed after its
    commit, loads nothing), and so does a session that SETs
    tarn.data_cache = false, while another session's scans still make the
    columns hot and read them from memory."""
    server = RunningServer(own_lake, ["--result-cache", "off"])
    sql = "SELECT n_name, n_regionkey FROM nation ORDER BY n_name"
    try:
        with tarn.connect(server.uri) as conn, tarn.connect(server.uri) as past:
            empty = data_cache(conn)
            for _ in range(3):
                conn.execute("ANALYZE nation")
            past.execute("SET tarn.data_cache = false")
            for _ in range(3):
                past.arrow(sql)
            time.sleep(1)
            after = settled(conn)
            assert after["entries"] == empty["entries"], (empty, after)
            assert after["misses"] == empty["misses"], (empty, after)
            conn.arrow(sql)
            conn.arrow(sql)
            wait_until_held(conn, sql)
            plan = plan_of(past, sql)
            assert "DataSourceExec" in plan and "CachedScanExec" not in plan, plan
            assert past.arrow(sql) == conn.arrow(sql)
            with pytest.raises(Exception, match="true or false"):
                past.execute("SET tarn.data_cache = sometimes")
    finally:
        server.stop()


def test_the_cache_stays_within_its_budget(lake):
    server = RunningServer(lake, ["--data-cache-size", "1MiB", "--result-cache", "off", "--http-bind", "127.0.0.1:0"])
    try:
        with tarn.connect(server.uri) as conn:
            for column in ["l_orderkey", "l_partkey", "l_suppkey", "l_shipdate", "l_linenumber"] * 3:
                sql = f"SELECT count(DISTINCT {column}) AS n FROM lineitem"
                assert conn.arrow(sql).column(0)[0].as_py() > 0
                now = data_cache(conn)
                assert now["bytes"] <= now["budget_bytes"] == 1024 * 1024, now
            full = settled(conn)
            assert full["bytes"] <= 1024 * 1024 and full["entries"] > 0, full
            assert full["evictions"] > 0, full
            samples = scrape(http_address(server))
            assert value(samples, "tarn_cache_budget_bytes", cache="data") == 1024 * 1024
            assert 0 < value(samples, "tarn_cache_bytes", cache="data") <= 1024 * 1024
            assert value(samples, "tarn_cache_evictions_total", cache="data") >= full["evictions"]
    finally:
        server.stop()


@pytest.mark.parametrize("how", ["flag", "environment", "config file"])
def test_the_server_can_turn_the_cache_off_and_size_it(lake, tmp_path, how):
    config = tmp_path / "tarn.toml"
    if how == "flag":
        off, sized = (["--data-cache", "off"], None), (["--data-cache-size", "5MiB"], None)
    elif how == "environment":
        off, sized = ([], {"TARN_DATA_CACHE": "off"}), ([], {"TARN_DATA_CACHE_SIZE": "5MiB"})
    else:
        config.write_text("[cache]\ndata = false\n")
        sized_config = tmp_path / "sized.toml"
        sized_config.write_text('[cache]\ndata_size = "5MiB"\n')
        off, sized = (["--config", str(config)], None), (["--config", str(sized_config)], None)
    server = RunningServer(lake, [*off[0], "--result-cache", "off"], env=off[1])
    try:
        with tarn.connect(server.uri) as conn:
            sql = "SELECT sum(o_totalprice) AS t FROM orders"
            for _ in range(3):
                conn.arrow(sql)
            time.sleep(1)
            assert "DataSourceExec" in plan_of(conn, sql)
            state = data_cache(conn)
            assert state["enabled"] is False
            assert (state["hits"], state["entries"]) == (0, 0), state
    finally:
        server.stop()
    server = RunningServer(lake, sized[0], env=sized[1])
    try:
        with tarn.connect(server.uri) as conn:
            state = data_cache(conn)
            assert state["enabled"] is True and state["budget_bytes"] == 5 * 1024 * 1024
    finally:
        server.stop()
