"""Logs an operator can collect: `--log-format json` (or TARN_LOG_FORMAT)
writes one JSON object per line, every finished query is one line under
the target tarn::query (id, user, duration, rows, bytes, outcome), and a
query at or over the slow-query threshold (flag, environment or config
file) is logged at WARN with its plan and the plan's metrics."""

import json
import time

import pytest

import tarn
from conftest import RunningServer
from test_queries import wait_for


def json_lines(server):
    lines = []
    for line in list(server.log):
        line = line.strip()
        if line.startswith("{"):
            lines.append(json.loads(line))
    return lines


@pytest.mark.parametrize("how", ["flag", "environment"])
def test_json_logs_have_one_line_per_finished_query(lake, how):
    args, env = [], None
    if how == "flag":
        args = ["--log-format", "json"]
    else:
        env = {"TARN_LOG_FORMAT": "json"}
    server = RunningServer(lake, extra_args=args, env=env, log="warn,tarn=info")
    try:
        with tarn.connect(server.uri) as conn:
            expected = conn.arrow("SELECT count(*) AS n FROM orders WHERE o_orderstatus = 'F'").column("n")[0].as_py()
            rows = conn.arrow("SELECT o_orderkey FROM orders WHERE o_orderstatus = 'F'").num_rows
            assert rows == expected

        def finished():
            return [line for line in json_lines(server) if line.get("target") == "tarn::query" and line.get("rows") == rows]

        lines = wait_for(finished, timeout=10)
        assert lines, "".join(server.log)
        line = lines[-1]
        assert line["message"] == "query finished" and line["level"] == "INFO", line
        assert line["user"] == "anonymous" and line["outcome"] == "ok", line
        assert line["rows_scanned"] > 0 and line["bytes_scanned"] > 0 and line["duration_ms"] > 0, line
        assert len(line["query_id"]) == 36, line
        # Every line of the server's log is JSON, the start-up lines too.
        text = [l for l in server.log if l.strip() and not l.strip().startswith("{")]
        assert not text, text
        assert any(l.get("message", "").startswith("serving Flight SQL") for l in json_lines(server))
    finally:
        server.stop()


@pytest.mark.parametrize("how", ["flag", "environment", "config file"])
def test_a_slow_query_is_logged_with_its_plan_and_metrics(lake, tmp_path, how):
    args, env = ["--log-format", "json"], None
    if how == "flag":
        args += ["--slow-query-threshold", "300ms"]
    elif how == "environment":
        env = {"TARN_SLOW_QUERY_THRESHOLD": "300ms"}
    else:
        config = tmp_path / "tarn.toml"
        config.write_text('[engine]\nslow_query_threshold = "300ms"\n')
        args += ["--config", str(config)]
    server = RunningServer(lake, extra_args=args, env=env, log="warn,tarn=info")
    try:
        with tarn.connect(server.uri) as conn:
            # Fast: logged as finished, without a plan.
            conn.arrow("SELECT count(*) AS fast FROM nation")
            # Slow: a cross join that takes well over the threshold.
            started = time.monotonic()
            conn.arrow("SELECT count(*) AS slow FROM lineitem a CROSS JOIN (SELECT * FROM lineitem LIMIT 200) b WHERE a.l_quantity > b.l_quantity")
            assert time.monotonic() - started > 0.3

        def slow():
            return [l for l in json_lines(server) if l.get("target") == "tarn::query" and l.get("message") == "slow query"]

        lines = wait_for(slow, timeout=10)
        assert len(lines) == 1, lines
        line = lines[0]
        assert line["level"] == "WARN" and line["duration_ms"] >= 300 and line["outcome"] == "ok", line
        assert "CrossJoinExec" in line["plan"] or "NestedLoopJoinExec" in line["plan"], line["plan"]
        assert "metrics=[output_rows=" in line["plan"], line["plan"]
        fast = [l for l in json_lines(server) if l.get("target") == "tarn::query" and l.get("message") == "query finished"]
        assert fast and all("plan" not in l for l in fast), fast
    finally:
        server.stop()
