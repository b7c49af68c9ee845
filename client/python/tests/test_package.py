"""The `tarn` Python package's own helpers."""

import pyarrow as pa

import tarn


def test_arrow_pandas_polars(conn):
    table = conn.arrow("SELECT r_regionkey, r_name FROM region ORDER BY r_regionkey")
    assert isinstance(table, pa.Table) and table.num_rows == 5
    frame = conn.pandas("SELECT r_name FROM region WHERE r_regionkey = ?", [2])
    assert frame["r_name"].tolist() == ["ASIA"]
    polars_frame = conn.polars("SELECT count(*) AS n FROM nation")
    assert polars_frame["n"].to_list() == [25]


def test_tables_and_schema(conn):
    tables = conn.tables()
    assert ("tarn", "public", "lineitem", "TABLE") in tables
    assert [t[2] for t in conn.tables("region")] == ["region"]
    assert conn.table_schema("region").names == ["r_regionkey", "r_name", "r_comment"]


def test_execute_returns_after_running(conn):
    conn.execute("CREATE VIEW py_view AS SELECT 1 AS x")
    assert conn.arrow("SELECT x FROM py_view").column("x").to_pylist() == [1]


def test_dbapi_module_attributes():
    assert tarn.apilevel == "2.0"
    assert tarn.DEFAULT_URI.startswith("grpc://")
