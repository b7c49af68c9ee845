"""A lake in an S3-compatible bucket: a real moto_server process on 127.0.0.1."""

import pathlib
import shutil
import socket
import subprocess
import sys
import time

import boto3
import pytest

import tarn
from conftest import QUERIES, RunningServer
from test_tpch import same, sort_key


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3(lake, tmp_path_factory):
    """moto_server with the demo lake uploaded under s3://tarn-test/lake/."""
    port = free_port()
    executable = shutil.which("moto_server") or str(pathlib.Path(sys.executable).parent / "moto_server")
    process = subprocess.Popen([executable, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing")
    deadline = time.monotonic() + 60
    while True:
        try:
            client.list_buckets()
            break
        except Exception:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("moto_server did not start")
            time.sleep(0.2)
    client.create_bucket(Bucket="tarn-test")
    for path in lake.rglob("*"):
        if path.is_file() and not path.name.startswith("."):
            client.upload_file(str(path), "tarn-test", f"lake/{path.relative_to(lake)}")
    config = tmp_path_factory.mktemp("s3config") / "s3.toml"
    config.write_text(
        f"""
[stores.lake]
url = "s3://tarn-test/lake"
endpoint = "{endpoint}"
region = "us-east-1"
allow_http = true
access_key_id = "testing"
secret_access_key = "super-secret-value"
"""
    )
    yield {"process": process, "config": config, "endpoint": endpoint}
    if process.poll() is None:
        process.terminate()
        process.wait()


@pytest.fixture(scope="module")
def s3_server(s3):
    server = RunningServer(None, extra_args=["--config", str(s3["config"])])
    yield server
    server.stop()


def test_tables_are_discovered_in_the_bucket(s3_server):
    with tarn.connect(s3_server.uri) as conn:
        names = {t[2] for t in conn.tables()}
        assert {"lineitem", "orders", "sales", "awkward_types"} <= names
        # Hive partitions work on S3 too, typed and pruned.
        table = conn.arrow("SELECT year, count(*) AS n FROM sales WHERE region = 'ASIA' GROUP BY year ORDER BY year")
        assert table.column("year").to_pylist() == [2023, 2024]
    assert "super-secret-value" not in "".join(s3_server.log), "secrets never reach the log"


@pytest.mark.parametrize("number", range(1, 23))
def test_tpch_from_the_bucket_matches_local_disk(number, s3_server, conn):
    sql = (QUERIES / f"q{number}.sql").read_text()
    with tarn.connect(s3_server.uri) as s3_conn:
        from_bucket = s3_conn.arrow(sql)
    from_disk = conn.arrow(sql)
    assert from_bucket.schema == from_disk.schema
    a = sorted(zip(*[c.to_pylist() for c in from_bucket.columns]), key=sort_key)
    b = sorted(zip(*[c.to_pylist() for c in from_disk.columns]), key=sort_key)
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert all(same(p, q) for p, q in zip(x, y)), f"q{number}: {x} != {y}"


def test_locations_outside_the_store_are_refused(s3_server):
    with tarn.connect(s3_server.uri) as conn:
        with pytest.raises(tarn.Error, match="permission denied"):
            conn.execute("CREATE EXTERNAL TABLE x STORED AS PARQUET LOCATION 's3://other-bucket/data/'")
        with pytest.raises(tarn.Error, match="permission denied"):
            conn.execute("CREATE EXTERNAL TABLE x STORED AS PARQUET LOCATION 's3://tarn-test/lake/../secrets/'")
        conn.execute("CREATE EXTERNAL TABLE nation_again STORED AS PARQUET LOCATION 's3://tarn-test/lake/nation.parquet'")
        assert conn.arrow("SELECT count(*) AS n FROM nation_again").column("n").to_pylist() == [25]


def test_copy_exports_into_the_bucket(s3, s3_server):
    client = boto3.client("s3", endpoint_url=s3["endpoint"], region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing")
    with tarn.connect(s3_server.uri) as conn:
        conn.execute(
            "COPY (SELECT n_name, n_regionkey FROM nation) TO 's3://tarn-test/lake/exports/nation_by_region/' "
            "STORED AS PARQUET PARTITIONED BY (n_regionkey)"
        )
        keys = [o["Key"] for o in client.list_objects_v2(Bucket="tarn-test", Prefix="lake/exports/")["Contents"]]
        assert any("n_regionkey=3/" in k for k in keys), keys
        conn.execute("CREATE EXTERNAL TABLE exported STORED AS PARQUET LOCATION 's3://tarn-test/lake/exports/nation_by_region/'")
        assert conn.arrow("SELECT count(*) AS n FROM exported").column("n").to_pylist() == [25]


def test_a_stopped_store_gives_a_clear_error_and_the_server_survives(s3, s3_server):
    s3["process"].terminate()
    s3["process"].wait()
    with tarn.connect(s3_server.uri) as conn:
        with pytest.raises(tarn.Error) as failure:
            conn.arrow("SELECT count(*) FROM lineitem")
        message = str(failure.value)
        assert "tarn-test" in message or s3["endpoint"] in message or "127.0.0.1" in message, message
        assert conn.arrow("SELECT 1 AS one").column("one").to_pylist() == [1]
    assert s3_server.alive()
