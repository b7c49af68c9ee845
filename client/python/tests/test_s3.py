"""A lake in an S3-compatible bucket: a real moto_server process on 127.0.0.1."""

import pytest

import tarn
from conftest import QUERIES, MotoServer, RunningServer
from test_tpch import same, sort_key


@pytest.fixture(scope="module")
def s3(lake, tmp_path_factory):
    """moto_server with the demo lake uploaded under s3://tarn-test/lake/."""
    moto = MotoServer()
    moto.upload(lake, "tarn-test", "lake")
    config = moto.config(tmp_path_factory.mktemp("s3config"), "s3://tarn-test/lake")
    yield {"moto": moto, "config": config, "endpoint": moto.endpoint}
    moto.stop()


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


def aws_environment(moto) -> dict:
    """What the AWS CLI and SDKs read: an endpoint and credentials."""
    return {
        "AWS_ENDPOINT_URL": moto.endpoint,
        "AWS_ACCESS_KEY_ID": moto.ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": moto.SECRET_KEY,
        "AWS_REGION": "us-east-1",
    }


def table_names(uri: str) -> set:
    with tarn.connect(uri) as conn:
        return {t[2] for t in conn.tables() if t[1] == "public"}


def test_the_environment_form_serves_what_the_config_form_serves(s3, s3_server, tmp_path):
    """AWS_ENDPOINT_URL and --lake s3://... (what MinIO and moto users write)
    reach the bucket with path-style addressing, as [stores.lake] does."""
    moto = s3["moto"]
    env = aws_environment(moto)
    server = RunningServer(None, extra_args=["--lake", "s3://tarn-test/lake"], state_dir=tmp_path / "state", env=env, log="debug")
    try:
        from_env = table_names(server.uri)
        assert {"lineitem", "orders", "sales"} <= from_env
        assert from_env == table_names(s3_server.uri)
        with tarn.connect(server.uri) as conn:
            assert conn.arrow("SELECT count(*) AS n FROM nation").column("n").to_pylist() == [25]
            conn.execute("CREATE TABLE env_copy AS SELECT * FROM region")
            assert conn.arrow("SELECT count(*) AS n FROM env_copy").column("n").to_pylist() == [5]
    finally:
        server.stop()
    log = "".join(server.log)
    assert "DEBUG" in log, "the log ran at debug level"
    assert moto.ACCESS_KEY not in log and moto.SECRET_KEY not in log, "no credential reaches the log, at any level"


def test_an_empty_bucket_prefix_is_explained(s3, tmp_path):
    moto = s3["moto"]
    env = aws_environment(moto)
    server = RunningServer(None, extra_args=["--lake", "s3://tarn-test/nothing-here"], state_dir=tmp_path / "state", env=env)
    try:
        with tarn.connect(server.uri) as conn:
            with pytest.raises(tarn.Error, match="serves no tables") as raised:
                conn.execute("SHOW TABLES")
            message = str(raised.value)
            assert "s3://tarn-test/nothing-here" in message and moto.endpoint in message and "path-style" in message
    finally:
        server.stop()
    assert "serves no tables" in "".join(server.log), "the start warns"


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
    with tarn.connect(s3_server.uri) as conn:
        conn.execute(
            "COPY (SELECT n_name, n_regionkey FROM nation) TO 's3://tarn-test/lake/exports/nation_by_region/' "
            "STORED AS PARQUET PARTITIONED BY (n_regionkey)"
        )
        keys = s3["moto"].keys("tarn-test", "lake/exports/")
        assert any("n_regionkey=3/" in k for k in keys), keys
        conn.execute("CREATE EXTERNAL TABLE exported STORED AS PARQUET LOCATION 's3://tarn-test/lake/exports/nation_by_region/'")
        assert conn.arrow("SELECT count(*) AS n FROM exported").column("n").to_pylist() == [25]


def test_a_stopped_store_gives_a_clear_error_and_the_server_survives(s3, s3_server, lake):
    moto = s3["moto"]
    moto.stop()
    with tarn.connect(s3_server.uri) as conn:
        with pytest.raises(tarn.Error) as failure:
            conn.arrow("SELECT count(*) FROM nation")
        message = str(failure.value)
        assert "tarn-test" in message or moto.endpoint in message or "127.0.0.1" in message, message
        assert conn.arrow("SELECT 1 AS one").column("one").to_pylist() == [1]
        # The store comes back (empty: moto keeps objects in memory) and is used again.
        moto.start()
        moto.upload(lake, "tarn-test", "lake")
        assert conn.arrow("SELECT count(*) AS n FROM nation").column("n").to_pylist() == [25]
    assert s3_server.alive()
