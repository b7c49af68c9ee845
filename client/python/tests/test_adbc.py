"""ADBC (the Go Flight SQL driver) through the DB-API, as Python users connect."""

import adbc_driver_flightsql.dbapi as flightsql
import pyarrow as pa
import pytest

DEMO_TABLES = {"customer", "lineitem", "nation", "orders", "part", "partsupp", "region", "supplier", "sales", "awkward_types"}


def lake_tables(lake):
    return {p.stem if p.is_file() else p.name for p in lake.iterdir() if not p.name.startswith(".")}


def test_get_objects_at_every_depth(uri, lake):
    assert lake_tables(lake) == DEMO_TABLES
    with flightsql.connect(uri, autocommit=True) as conn:
        catalogs = conn.adbc_get_objects(depth="catalogs").read_all().to_pylist()
        assert [c["catalog_name"] for c in catalogs] == ["tarn"]

        schemas = conn.adbc_get_objects(depth="db_schemas").read_all().to_pylist()
        names = {s["db_schema_name"] for c in schemas for s in c["catalog_db_schemas"]}
        assert "public" in names

        tables = conn.adbc_get_objects(depth="tables").read_all().to_pylist()
        found = {t["table_name"]: t["table_type"] for c in tables for s in c["catalog_db_schemas"] for t in s["db_schema_tables"]}
        assert DEMO_TABLES <= set(found)
        assert found["lineitem"] == "TABLE"

        everything = conn.adbc_get_objects(depth="all").read_all().to_pylist()
        columns = {
            t["table_name"]: [col["column_name"] for col in t["table_columns"]]
            for c in everything
            for s in c["catalog_db_schemas"]
            if s["db_schema_name"] == "public"
            for t in s["db_schema_tables"]
        }
        for table in DEMO_TABLES:
            assert columns[table], f"{table} has no columns"
        assert columns["nation"] == ["n_nationkey", "n_name", "n_regionkey", "n_comment"]
        assert columns["sales"][-2:] == ["region", "year"], "partition columns come last"


def test_get_table_schema(conn):
    schema = conn.adbc_get_table_schema("lineitem")
    assert schema.field("l_comment").type == pa.string()
    assert schema.field("l_shipdate").type == pa.date32()
    assert schema.field("l_quantity").type == pa.decimal128(15, 2)


def test_queries_and_string_types(conn):
    with conn.cursor() as cur:
        cur.execute("SELECT n_name, n_regionkey FROM nation ORDER BY n_nationkey")
        table = cur.fetch_arrow_table()
    assert table.num_rows == 25
    assert table.schema.field("n_name").type == pa.utf8(), "strings arrive as utf8, not string_view"
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM lineitem")
        (count,) = cur.fetchone()
    assert count > 0


def test_prepared_statement_with_parameters(conn):
    with conn.cursor() as cur:
        cur.execute("SELECT n_name FROM nation WHERE n_nationkey = 7")
        (expected,) = cur.fetchone()
        cur.execute("SELECT n_name FROM nation WHERE n_nationkey = ?", parameters=(7,))
        assert cur.fetchall() == [(expected,)]
        cur.execute("SELECT n_nationkey FROM nation WHERE n_regionkey = $1 AND n_nationkey > $2 ORDER BY 1", parameters=(1, 2))
        keys = [row[0] for row in cur.fetchall()]
        cur.execute("SELECT n_nationkey FROM nation WHERE n_regionkey = 1 AND n_nationkey > 2 ORDER BY 1")
        assert keys == [row[0] for row in cur.fetchall()] and keys


def test_ddl_through_execute(conn):
    with conn.cursor() as cur:
        cur.execute("CREATE VIEW asia_nations AS SELECT n_name FROM nation JOIN region ON n_regionkey = r_regionkey WHERE r_name = 'ASIA'")
        cur.execute("SELECT count(*) FROM asia_nations")
        assert cur.fetchone()[0] == 5
        tables = conn.adbc_get_objects(depth="tables", table_name_filter="asia_nations").read_all().to_pylist()
        kinds = [t["table_type"] for c in tables for s in c["catalog_db_schemas"] for t in s["db_schema_tables"]]
        assert kinds == ["VIEW"]
        cur.execute("DROP VIEW asia_nations")
        with pytest.raises(flightsql.Error, match="asia_nations"):
            cur.execute("SELECT * FROM asia_nations")


def test_timestamps_keep_unit_and_zone(conn):
    table = conn.arrow("SELECT ts_naive, ts_utc, ts_paris, amount, day, tags, point FROM awkward_types ORDER BY id")
    schema = table.schema
    assert schema.field("ts_naive").type == pa.timestamp("us")
    assert schema.field("ts_utc").type == pa.timestamp("ns", tz="UTC")
    assert schema.field("ts_paris").type == pa.timestamp("us", tz="Europe/Paris")
    assert schema.field("amount").type == pa.decimal128(38, 10)
    assert schema.field("tags").type == pa.list_(pa.utf8())
    assert table.column("ts_utc")[0].value == 1_700_000_000_123_456_789
    assert table.column("ts_naive")[1].as_py() is None
    assert table.column("tags").to_pylist() == [["a", "b"], None, [None]]


def test_errors_are_clear(conn):
    with conn.cursor() as cur:
        with pytest.raises(flightsql.Error, match="syntax error"):
            cur.execute("SELEC 1")
        with pytest.raises(flightsql.Error, match="no_such_table"):
            cur.execute("SELECT * FROM no_such_table")
        with pytest.raises(flightsql.Error, match="permission denied"):
            cur.execute("CREATE EXTERNAL TABLE x STORED AS CSV LOCATION '/etc/'")
        cur.execute("SELECT 1")
        assert cur.fetchone() == (1,)
