"""The operators' HTTP listener: Prometheus /metrics (parsed with
prometheus_client's parser) whose counters move with the work, /healthz, and
/readyz, which turns not-ready while a store is down and ready again after.
Each way to turn it on (flag, environment, config file) is used."""

import re
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

import tarn
from conftest import MotoServer, RunningServer


def http_address(server) -> str:
    for line in server.log:
        match = re.search(r"serving metrics and health checks on (http://\S+)", line)
        if match:
            return match.group(1)
    raise AssertionError("no HTTP address in the log:\n" + "".join(server.log))


def get(url):
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def scrape(base) -> dict:
    """Every sample, by (name, sorted labels)."""
    status, text = get(f"{base}/metrics")
    assert status == 200
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples, name, **labels):
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def total(samples, name, **labels):
    """The sum over every sample of `name` whose labels include `labels`."""
    return sum(v for (n, ls), v in samples.items() if n == name and set(labels.items()) <= set(ls))


def test_metrics_move_with_the_work(lake):
    # Each query runs (and queues) every time: none is answered from the result cache.
    server = RunningServer(lake, ["--http-bind", "127.0.0.1:0", "--result-cache", "off"])
    try:
        base = http_address(server)
        assert get(f"{base}/healthz") == (200, "ok\n")
        before = scrape(base)
        assert value(before, "tarn_build_info", version=tarn_version(before)) == 1
        assert value(before, "tarn_memory_pool_limit_bytes") > 0
        with tarn.connect(server.uri) as conn:
            rows = sum(conn.arrow("SELECT * FROM nation").num_rows for _ in range(3))
            with pytest.raises(Exception):
                conn.arrow("SELECT * FROM no_such_table")
            conn.tables()
        after = scrape(base)
        assert total(after, "tarn_queries_total", outcome="ok") - total(before, "tarn_queries_total", outcome="ok") >= 3
        assert total(after, "tarn_requests_total", method="DoGet", code="OK") - total(before, "tarn_requests_total", method="DoGet", code="OK") >= 4
        # ADBC prepares each statement: the unknown table is refused there.
        assert total(after, "tarn_requests_total", code="NOT_FOUND") - total(before, "tarn_requests_total", code="NOT_FOUND") == 1
        assert value(after, "tarn_rows_streamed_total") - value(before, "tarn_rows_streamed_total") >= rows == 75
        assert value(after, "tarn_bytes_streamed_total") > value(before, "tarn_bytes_streamed_total")
        assert value(after, "tarn_query_duration_seconds_count") - value(before, "tarn_query_duration_seconds_count") >= 3
        assert value(after, "tarn_query_queue_seconds_count") - value(before, "tarn_query_queue_seconds_count") >= 3
        assert total(after, "tarn_store_requests_total", store="local files") > total(before, "tarn_store_requests_total", store="local files")
        # Nothing runs now: the gauges read at the scrape say so.
        assert value(after, "tarn_queries_running") == 0 and value(after, "tarn_queries_queued") == 0
        assert value(after, "tarn_memory_pool_reserved_bytes") == 0
        assert get(f"{base}/readyz")[0] == 200
    finally:
        server.stop()


def tarn_version(samples) -> str:
    return next(dict(labels)["version"] for (name, labels) in samples if name == "tarn_build_info")


def test_readyz_follows_a_store_going_down_and_coming_back(lake, tmp_path):
    moto = MotoServer()
    try:
        moto.upload(lake, "tarn-ready", "lake")
        config = moto.config(tmp_path, "s3://tarn-ready/lake")
        server = RunningServer(None, ["--config", str(config)], env={"TARN_HTTP_BIND": "127.0.0.1:0"})
        try:
            base = http_address(server)
            assert get(f"{base}/readyz") == (200, "ready\n")
            moto.stop()
            status, body = get(f"{base}/readyz")
            assert status == 503 and "store lake" in body, body
            # Alive all the same.
            assert get(f"{base}/healthz")[0] == 200
            moto.start()
            moto.upload(lake, "tarn-ready", "lake")
            assert get(f"{base}/readyz") == (200, "ready\n")
            # Every probe was a request to the bucket, the one given up on too.
            assert total(scrape(base), "tarn_store_requests_total", store="s3://tarn-ready", operation="list") >= 3
        finally:
            server.stop()
    finally:
        moto.stop()


def test_the_config_file_turns_the_listener_on(lake, tmp_path):
    config = tmp_path / "tarn.toml"
    config.write_text('[server]\nhttp_bind = "127.0.0.1:0"\n')
    server = RunningServer(lake, ["--config", str(config)])
    try:
        assert get(f"{http_address(server)}/healthz") == (200, "ok\n")
    finally:
        server.stop()


def test_without_the_setting_nothing_listens(lake):
    server = RunningServer(lake)
    try:
        assert not any("serving metrics" in line for line in server.log)
    finally:
        server.stop()
