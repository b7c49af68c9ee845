"""Tarn's own plan rules, through a real server: an aggregate a query reads
twice is computed once (TPC-H Q15), and decimal arithmetic that cannot
overflow skips overflow checks (Q1). Each gives DuckDB's answers with the
same column names and types as without it, and each is switched by SET and
by the config file."""

import pytest

import tarn
from conftest import QUERIES, RunningServer
from test_logs import json_lines
from test_queries import wait_for
# The module's DuckDB over the same lake, shared with the TPC-H answers' tests.
from test_tpch import duck, same, sort_key  # noqa: F401


def plan_of(conn, sql) -> str:
    """The physical plan EXPLAIN ANALYZE shows for `sql` (it runs the query)."""
    rows = conn.arrow(f"EXPLAIN ANALYZE {sql}").to_pylist()
    return "\n".join(row["plan"] for row in rows)


def assert_duckdb_answer(ours, duck, sql):
    theirs = duck.sql(sql).to_arrow_table()
    assert ours.num_rows == theirs.num_rows > 0
    our_rows = sorted(zip(*[c.to_pylist() for c in ours.columns]), key=sort_key)
    their_rows = sorted(zip(*[c.to_pylist() for c in theirs.columns]), key=sort_key)
    for ours_row, theirs_row in zip(our_rows, their_rows):
        assert all(same(a, b) for a, b in zip(ours_row, theirs_row)), f"{ours_row} != {theirs_row}"


def scan_rows(plan: str) -> int:
    """The rows the file scans of an EXPLAIN ANALYZE read, each scan once
    (a shared input is shown under every place that reads it)."""
    scans = {line.strip() for line in plan.splitlines() if "DataSourceExec" in line}
    return sum(metric_rows(line) for line in scans)


def metric_rows(line: str) -> int:
    text = line.split("output_rows=")[1].split(",")[0]
    scale = {"K": 1_000, "M": 1_000_000}.get(text[-1], 1)
    return round(float(text.rstrip("KM ")) * scale)


def finished_queries(server, rows):
    return [
        line
        for line in json_lines(server)
        if line.get("target") == "tarn::query" and line.get("message") == "query finished" and line.get("rows") == rows
    ]


def test_q15_aggregates_lineitem_once_with_duckdbs_answer(lake, duck):
    sql = (QUERIES / "q15.sql").read_text()
    server = RunningServer(
        lake, extra_args=["--log-format", "json"], env={"TARN_RESULT_CACHE": "off"}, log="warn,tarn=info"
    )
    try:
        with tarn.connect(server.uri) as conn:
            shared = plan_of(conn, sql)
            # Both places read one SharedSubplanExec.
            assert shared.count("SharedSubplanExec: readers=2") == 2, shared
            shared_answer = conn.arrow(sql)
            assert_duckdb_answer(shared_answer, duck, sql)
            shared_logged = wait_for(lambda: finished_queries(server, shared_answer.num_rows), timeout=10)

            conn.execute("SET tarn.shared_subplans = false")
            plain = plan_of(conn, sql)
            assert "SharedSubplanExec" not in plain
            plain_answer = conn.arrow(sql)
            assert plain_answer.schema == shared_answer.schema
            assert plain_answer.to_pylist() == shared_answer.to_pylist()
            plain_logged = wait_for(lambda: finished_queries(server, plain_answer.num_rows)[len(shared_logged) :], timeout=10)

        # The query log counts the rows the scans read: shared, lineitem's
        # quarter is read once, so the plain plan reads it once more.
        lineitem_quarter = duck.sql(
            "SELECT count(*) FROM lineitem WHERE l_shipdate >= date '1996-01-01' AND l_shipdate < date '1996-04-01'"
        ).fetchall()[0][0]
        shared_scanned = shared_logged[-1]["rows_scanned"]
        plain_scanned = plain_logged[-1]["rows_scanned"]
        assert plain_scanned - shared_scanned >= lineitem_quarter, (shared_scanned, plain_scanned)
        # ... and it counts a shared scan once, as EXPLAIN ANALYZE shows it.
        assert abs(shared_scanned - scan_rows(shared)) <= 0.01 * shared_scanned, (shared_scanned, scan_rows(shared))
    finally:
        server.stop()


def test_q1_decimal_products_skip_overflow_checks_with_duckdbs_answer(lake, duck):
    sql = (QUERIES / "q1.sql").read_text()
    server = RunningServer(lake, env={"TARN_RESULT_CACHE": "off"})
    with tarn.connect(server.uri) as conn:
        exact = plan_of(conn, sql)
        assert "exact_decimal_multiply" in exact and "exact_decimal_subtract" in exact, exact
        exact_answer = conn.arrow(sql)
        assert_duckdb_answer(exact_answer, duck, sql)

        conn.execute("SET tarn.exact_decimals = false")
        assert "exact_decimal" not in plan_of(conn, sql)
        checked_answer = conn.arrow(sql)
        # The same names, types and values, to the last digit.
        assert checked_answer.schema == exact_answer.schema
        assert checked_answer.to_pylist() == exact_answer.to_pylist()


def test_overflowing_decimal_products_still_fail_with_the_overflow(lake):
    server = RunningServer(lake, env={"TARN_RESULT_CACHE": "off"})
    big = "arrow_cast('99999999999999999999999', 'Decimal128(38, 0)')"
    with tarn.connect(server.uri) as conn:
        with pytest.raises(Exception, match="(?i)overflow"):
            conn.arrow(f"SELECT {big} * {big} AS product FROM (VALUES (1)) AS v(x) WHERE x > 0")
        # The server keeps serving.
        assert conn.arrow("SELECT 1 AS one").to_pylist() == [{"one": 1}]


def test_the_config_file_sets_both_rules_defaults(lake, tmp_path):
    config = tmp_path / "tarn.toml"
    config.write_text('[engine.datafusion]\n"tarn.shared_subplans" = false\n"tarn.exact_decimals" = false\n')
    server = RunningServer(lake, extra_args=["--config", str(config)], env={"TARN_RESULT_CACHE": "off"})
    q15 = (QUERIES / "q15.sql").read_text()
    q1 = (QUERIES / "q1.sql").read_text()
    with tarn.connect(server.uri) as conn:
        assert "SharedSubplanExec" not in plan_of(conn, q15)
        assert "exact_decimal" not in plan_of(conn, q1)
        # A session still turns them on for itself.
        conn.execute("SET tarn.shared_subplans = true")
        conn.execute("SET tarn.exact_decimals = true")
        assert "SharedSubplanExec" in plan_of(conn, q15)
        assert "exact_decimal_multiply" in plan_of(conn, q1)
