"""Tables Tarn writes are Delta tables: read back by an independent reader
(the `deltalake` package), atomic under kill -9, and safe under concurrent
INSERTs, on a local folder and in an S3-compatible bucket (moto_server)."""

import shutil
import signal
import threading
import time
import uuid

import deltalake
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import tarn
from conftest import MotoServer, RunningServer


class Lake:
    """Where a test's lake lives, as Tarn and the Delta reader address it."""

    def __init__(self, kind, folder, state, moto=None):
        self.kind = kind
        self.folder = folder
        self.state = state
        self.moto = moto
        self.args = ["--lake", str(folder)] if kind == "local" else ["--config", str(moto.config(folder, f"s3://{kind}/lake"))]

    def url(self, table: str) -> str:
        return str(self.folder / table) if self.kind == "local" else f"s3://{self.kind}/lake/{table}"

    def delta(self, table: str, version=None) -> deltalake.DeltaTable:
        options = None if self.moto is None else self.moto.storage_options()
        return deltalake.DeltaTable(self.url(table), version=version, storage_options=options)

    def files(self, table: str) -> list:
        if self.kind == "local":
            root = self.folder / table
            return [str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()] if root.exists() else []
        prefix = f"lake/{table}/"
        return [k[len(prefix):] for k in self.moto.keys(self.kind, prefix)]

    def serve(self, state_dir=None) -> RunningServer:
        """A server on this lake; restarts keep the catalog (its own
        `state_dir` gives a second server a catalog of its own)."""
        return RunningServer(None, extra_args=self.args, state_dir=state_dir or self.state)


@pytest.fixture(scope="module")
def moto():
    server = MotoServer()
    yield server
    server.stop()


@pytest.fixture(params=["local", "s3"])
def store(request, lake, tmp_path, moto):
    """A fresh lake holding the demo tables, on disk or in a new bucket."""
    folder = tmp_path / "lake"
    folder.mkdir()
    for table in ["orders.parquet", "lineitem.parquet", "nation.parquet"]:
        shutil.copy(lake / table, folder / table)
    if request.param == "local":
        return Lake("local", folder, tmp_path / "state")
    bucket = f"tarn-delta-{uuid.uuid4().hex[:12]}"
    moto.upload(folder, bucket, "lake")
    return Lake(bucket, tmp_path, tmp_path / "state", moto)


def rows(table) -> list:
    """Rows of a pyarrow table, sorted, as tuples."""
    return sorted(zip(*[c.to_pylist() for c in table.columns]), key=repr)


def count(conn, source: str) -> int:
    return conn.arrow(f"SELECT count(*) AS n FROM {source}").column("n")[0].as_py()


def test_ctas_and_insert_are_read_back_by_an_independent_delta_reader(store):
    server = store.serve()
    try:
        with tarn.connect(server.uri) as conn:
            conn.execute(
                "CREATE TABLE revenue AS SELECT o.o_orderpriority AS priority, count(*) AS orders, "
                "sum(l.l_extendedprice) AS revenue FROM orders o JOIN lineitem l ON l.l_orderkey = o.o_orderkey "
                "GROUP BY o.o_orderpriority"
            )
            first = conn.arrow("SELECT * FROM revenue")
            conn.execute("INSERT INTO revenue VALUES ('6-EXTRA', 1, 10.5), ('7-EXTRA', 2, 20.25)")
            second = conn.arrow("SELECT * FROM revenue")
            past = conn.arrow("SELECT * FROM time_travel('revenue', 0)")
        assert first.num_rows == 5 and second.num_rows == 7

        reader = store.delta("revenue")
        assert reader.version() == 1
        assert rows(reader.to_pyarrow_table()) == rows(second)
        assert rows(store.delta("revenue", version=0).to_pyarrow_table()) == rows(first) == rows(past)
        operations = [h["operation"] for h in reader.history()]
        assert operations == ["WRITE", "WRITE"], operations
    finally:
        server.stop()


def test_partitioned_tables_have_delta_partitions(store):
    server = store.serve()
    try:
        with tarn.connect(server.uri) as conn:
            conn.execute("CREATE TABLE nation_parts PARTITIONED BY (n_regionkey) AS SELECT * FROM nation")
            ours = conn.arrow("SELECT n_nationkey, n_name, n_regionkey FROM nation_parts")
    finally:
        server.stop()
    reader = store.delta("nation_parts")
    assert reader.metadata().partition_columns == ["n_regionkey"]
    theirs = reader.to_pyarrow_table().select(["n_nationkey", "n_name", "n_regionkey"])
    assert rows(theirs) == rows(ours)
    assert any(f.startswith("n_regionkey=3/") for f in store.files("nation_parts"))


def test_files_are_zstd_with_statistics(tmp_path, lake):
    shutil.copy(lake / "orders.parquet", tmp_path / "orders.parquet")
    server = RunningServer(tmp_path)
    try:
        with tarn.connect(server.uri) as conn:
            conn.execute("CREATE TABLE o AS SELECT * FROM orders")
    finally:
        server.stop()
    files = list((tmp_path / "o").glob("*.parquet"))
    assert files
    metadata = pq.ParquetFile(files[0]).metadata
    column = metadata.row_group(0).column(0)
    assert column.compression == "ZSTD"
    assert column.statistics is not None and column.statistics.has_min_max


def test_concurrent_inserts_of_n_rows_add_2n(store):
    server = store.serve()
    try:
        with tarn.connect(server.uri) as conn:
            conn.execute("CREATE TABLE target AS SELECT * FROM lineitem WHERE l_orderkey < 0")
            n = count(conn, "lineitem WHERE l_linenumber = 1")
        errors = []

        def insert():
            try:
                with tarn.connect(server.uri) as own:
                    own.execute("INSERT INTO target SELECT * FROM lineitem WHERE l_linenumber = 1")
            except Exception as e:  # reported below, with the other thread's outcome
                errors.append(e)

        for _ in range(3):
            threads = [threading.Thread(target=insert) for _ in range(2)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        assert not errors, errors
        with tarn.connect(server.uri) as conn:
            assert count(conn, "target") == 6 * n
    finally:
        server.stop()
    reader = store.delta("target")
    assert reader.version() == 6, "one commit per INSERT, none lost"
    assert reader.to_pyarrow_table().num_rows == 6 * n


def test_eight_writers_on_two_servers_land_every_insert(store):
    """Writers inside one server take turns; two servers race for versions and
    retry: all 40 INSERTs land, none fails, no row is lost or doubled."""
    servers = [store.serve()]
    try:
        with tarn.connect(servers[0].uri) as conn:
            conn.execute("CREATE TABLE target (writer BIGINT, round BIGINT)")
        # The second server finds the table in the lake at its start.
        servers.append(store.serve(state_dir=store.state.parent / "second-state"))
        errors = []

        def writer(number):
            uri = servers[number % 2].uri
            try:
                with tarn.connect(uri) as own:
                    for round in range(5):
                        own.execute(f"INSERT INTO target VALUES ({number}, {round})")
            except Exception as e:  # reported below, with every writer's outcome
                errors.append(e)

        threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        for server in servers:
            with tarn.connect(server.uri) as conn:
                conn.execute("REFRESH TABLE target")
                assert count(conn, "target") == 40
                pairs = conn.arrow("SELECT count(DISTINCT writer * 10 + round) AS n FROM target").column("n")[0].as_py()
                assert pairs == 40
    finally:
        for server in servers:
            server.stop()
    reader = store.delta("target")
    assert reader.version() == 40, "one commit per INSERT after the create"
    assert reader.to_pyarrow_table().num_rows == 40


def in_background(uri: str, sql: str):
    """Runs `sql` on its own connection in a thread; the list it returns gets
    "finished" or the exception once the statement ends."""
    outcome = []

    def run():
        try:
            with tarn.connect(uri) as own:
                own.execute(sql)
            outcome.append("finished")
        except Exception as e:  # the server may be killed under it
            outcome.append(e)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


def test_kill_9_during_a_large_ctas_leaves_no_table(store):
    server = store.serve()
    with tarn.connect(server.uri) as conn:
        before = count(conn, "orders")
    big = (
        "CREATE TABLE huge AS SELECT l.*, g.value AS copy FROM lineitem l "
        "CROSS JOIN generate_series(1, 200) g"
    )
    writer, outcome = in_background(server.uri, big)
    deadline = time.monotonic() + 60
    try:
        while not any("_tarn_create_started" in f for f in store.files("huge")):
            assert time.monotonic() < deadline, "the CTAS never started writing"
            time.sleep(0.05)
        time.sleep(1.0)  # well into writing data files
        committed = [f for f in store.files("huge") if f.endswith(".json")]
        assert not committed and not outcome, "the CTAS must still be running when it is killed"
    finally:
        server.process.send_signal(signal.SIGKILL)
    server.process.wait()
    writer.join()
    assert outcome and outcome[0] != "finished"

    assert store.files("huge"), "the killed CREATE left files behind"

    restarted = store.serve()
    try:
        # The killed CREATE left nothing behind: no data file, no marker.
        assert store.files("huge") == []
        with tarn.connect(restarted.uri) as conn:
            with pytest.raises(tarn.Error, match="not found"):
                conn.arrow("SELECT count(*) FROM huge")
            assert count(conn, "orders") == before, "earlier data is intact"
            run = conn.arrow("SELECT state, error FROM system.runs WHERE sql LIKE 'CREATE TABLE huge%'").to_pylist()
            assert run == [{"state": "ABORT", "error": "the server stopped before the statement ended"}]
            # The name is free again.
            conn.execute("CREATE TABLE huge AS SELECT * FROM nation")
            assert count(conn, "huge") == 25
        assert store.delta("huge").to_pyarrow_table().num_rows == 25
    finally:
        restarted.stop()


def test_kill_9_during_an_insert_leaves_no_uncommitted_files(tmp_path, lake):
    """Killed while writing, an INSERT leaves data files no commit references
    (and `part-...#1` staging files); the next start removes exactly those,
    and ends the run as ABORT."""
    folder = tmp_path / "lake"
    folder.mkdir()
    store = Lake("local", folder, tmp_path / "state")
    server = store.serve()
    with tarn.connect(server.uri) as conn:
        conn.execute("CREATE TABLE grows (k BIGINT, v BIGINT) PARTITIONED BY (k)")
        conn.execute("INSERT INTO grows VALUES (0, 0)")
    committed = set(store.files("grows"))
    # One file per partition: files appear one after another before the commit.
    big = "INSERT INTO grows SELECT value % 3000, value FROM generate_series(1, 300000)"
    writer, outcome = in_background(server.uri, big)
    deadline = time.monotonic() + 120
    try:
        while not (set(store.files("grows")) - committed):
            assert time.monotonic() < deadline and not outcome, "the INSERT never wrote a file"
            time.sleep(0.01)
    finally:
        server.process.send_signal(signal.SIGKILL)
    server.process.wait()
    writer.join()
    left = set(store.files("grows")) - committed
    assert left and not any(f.startswith("_delta_log") for f in left), left
    assert outcome and outcome[0] != "finished", "killed before its commit"

    restarted = store.serve()
    try:
        assert set(store.files("grows")) == committed, "exactly the unfinished files are gone"
        with tarn.connect(restarted.uri) as conn:
            assert count(conn, "grows") == 1
            run = conn.arrow("SELECT state, error FROM system.runs WHERE sql LIKE 'INSERT INTO grows SELECT%'").to_pylist()
            assert run == [{"state": "ABORT", "error": "the server stopped before the statement ended"}]
            conn.execute("INSERT INTO grows VALUES (1, 1)")
            assert count(conn, "grows") == 2
    finally:
        restarted.stop()
    assert store.delta("grows").to_pyarrow_table().num_rows == 2
    assert not [p for p in (folder / "grows").iterdir() if p.is_dir() and not any(p.iterdir())], "no empty folders"


def test_time_travel_in_the_syntax_delta_users_type(store):
    """VERSION AS OF and TIMESTAMP AS OF (Delta, Databricks, Spark), through
    ADBC, beside time_travel(); a version that does not exist is named."""
    server = store.serve()
    try:
        with tarn.connect(server.uri) as conn:
            conn.execute("CREATE TABLE tt AS SELECT * FROM nation WHERE n_regionkey = 0")
            time.sleep(1.1)
            between = conn.arrow("SELECT CAST(now() AS VARCHAR) AS t").column("t")[0].as_py()[:19].replace("T", " ")
            time.sleep(1.1)
            conn.execute("INSERT INTO tt SELECT * FROM nation WHERE n_regionkey = 1")
            assert count(conn, "tt") == 10
            assert count(conn, "tt VERSION AS OF 0") == 5
            assert count(conn, "tt version as of 1") == 10
            assert count(conn, f"tt TIMESTAMP AS OF '{between}'") == 5
            assert count(conn, "time_travel('tt', 0)") == 5
            joined = conn.arrow(
                "SELECT count(*) AS n FROM tt VERSION AS OF 0 AS old JOIN tt AS new ON old.n_nationkey = new.n_nationkey"
            ).column("n")[0].as_py()
            assert joined == 5
            with pytest.raises(tarn.Error, match="there is no version 9"):
                conn.arrow("SELECT * FROM tt VERSION AS OF 9")
            with pytest.raises(tarn.Error, match="TIMESTAMP AS OF takes a quoted UTC time"):
                conn.arrow("SELECT * FROM tt TIMESTAMP AS OF now()")
    finally:
        server.stop()


def test_dropped_tables_keep_their_files_until_purged(store):
    server = store.serve()
    try:
        with tarn.connect(server.uri) as conn:
            conn.execute("CREATE TABLE temp_copy AS SELECT * FROM nation")
            conn.execute("DROP TABLE temp_copy")
            assert store.delta("temp_copy").to_pyarrow_table().num_rows == 25
            conn.execute(f"CREATE EXTERNAL TABLE temp_copy STORED AS DELTA LOCATION '{store.url('temp_copy')}'")
            assert count(conn, "temp_copy") == 25
            conn.execute("DROP TABLE temp_copy PURGE")
            assert store.files("temp_copy") == []
    finally:
        server.stop()


def test_delta_tables_written_elsewhere_are_discovered(store):
    table = pa.table({"id": [1, 2, 3], "name": ["a", "b", "c"]})
    options = None if store.moto is None else store.moto.storage_options()
    deltalake.write_deltalake(store.url("external"), table, storage_options=options)
    deltalake.write_deltalake(store.url("external"), pa.table({"id": [4], "name": ["d"]}), mode="append", storage_options=options)
    server = store.serve()
    try:
        with tarn.connect(server.uri) as conn:
            assert count(conn, "external") == 4
            assert count(conn, "time_travel('external', 0)") == 3
            conn.execute("INSERT INTO external VALUES (5, 'e')")
    finally:
        server.stop()
    assert sorted(store.delta("external").to_pyarrow_table().column("id").to_pylist()) == [1, 2, 3, 4, 5]
