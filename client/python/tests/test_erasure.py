"""Erasure through ADBC with authentication on: a customer's rows deleted
from a Delta table and its old files vacuumed really leave the lake (every
remaining data file read directly with DuckDB and the table with the
`deltalake` package), the delete is a run with lineage, the retention check
guards VACUUM until the session turns it off, and time travel to a
vacuumed version says its files are gone."""

import shutil

import deltalake
import duckdb
import pytest

import tarn
from test_auth import AuthServer, admin, make_user, run

DORA = ("dora", "dora-password-1")  # may erase: SELECT and DELETE on customers
ANA = ("ana", "ana-password-1")  # may only read

CUSTOMER = 42


@pytest.fixture
def scratch(lake, tmp_path):
    folder = tmp_path / "lake"
    folder.mkdir()
    for table in ["customer.parquet", "orders.parquet"]:
        shutil.copy(lake / table, folder / table)
    return folder


def failure(conn, sql):
    cursor = conn.cursor()
    with pytest.raises(Exception) as err:
        cursor.execute(sql)
        cursor.fetch_arrow_table()
    cursor.close()
    return str(err.value)


def scalar(conn, sql):
    return run(conn, sql).column(0)[0].as_py()


def data_files(folder):
    return sorted(p for p in folder.rglob("*.parquet") if "_delta_log" not in p.parts)


def customers_in_files(folder, key):
    """How many rows with `c_custkey = key` each data file under `folder` holds, read by DuckDB."""
    db = duckdb.connect()
    return {
        str(path.relative_to(folder)): db.execute(f"SELECT count(*) FROM read_parquet('{path}') WHERE c_custkey = {key}").fetchone()[0]
        for path in data_files(folder)
    }


def test_a_deleted_customer_leaves_every_file_of_the_table(scratch, tmp_path):
    server = AuthServer(scratch, state_dir=tmp_path / "state")
    table_folder = scratch / "customers"
    try:
        make_user(server, *DORA)
        make_user(server, *ANA)
        with admin(server) as boss:
            # Two versions, two files: the customer is in the first.
            run(boss, f"CREATE TABLE customers AS SELECT * FROM customer WHERE c_custkey <= 1000")
            run(boss, "INSERT INTO customers SELECT * FROM customer WHERE c_custkey > 1000")
            run(boss, "GRANT SELECT, DELETE, UPDATE ON customers TO dora")
            run(boss, "GRANT SELECT ON customers TO ana")
            total = scalar(boss, "SELECT count(*) FROM customers")
        assert sum(customers_in_files(table_folder, CUSTOMER).values()) == 1
        before_files = data_files(table_folder)

        with tarn.connect(server.uri, user=ANA[0], password=ANA[1]) as ana:
            message = failure(ana, f"DELETE FROM customers WHERE c_custkey = {CUSTOMER}")
            assert "(PermissionDenied;" in message and "DELETE" in message and "customers" in message, message
            message = failure(ana, "VACUUM customers")
            assert "(PermissionDenied;" in message and "DELETE" in message, message

        with tarn.connect(server.uri, user=DORA[0], password=DORA[1]) as dora:
            deleted = run(dora, f"DELETE FROM customers WHERE c_custkey = {CUSTOMER}")
            assert deleted.column("count").to_pylist() == [1]
            assert scalar(dora, f"SELECT count(*) FROM customers WHERE c_custkey = {CUSTOMER}") == 0
            assert scalar(dora, "SELECT count(*) FROM customers") == total - 1
            # Before VACUUM the old version is still there to travel to.
            assert scalar(dora, f"SELECT count(*) FROM time_travel('customers', 1) WHERE c_custkey = {CUSTOMER}") == 1
            assert sum(customers_in_files(table_folder, CUSTOMER).values()) == 1, "the old file is only unreferenced"

            # Below the table's minimum retention (7 days): refused until the session allows it.
            message = failure(dora, "VACUUM customers RETAIN 0 HOURS")
            assert "(FailedPrecondition;" in message and "SET tarn.vacuum_retention_check = false" in message, message
            assert "168" in message, message
            run(dora, "SET tarn.vacuum_retention_check = false")
            would = run(dora, "VACUUM customers RETAIN 0 HOURS DRY RUN").column("path").to_pylist()
            assert would, "the dry run lists the file that held the customer"
            assert all((table_folder / path).exists() for path in would), "a dry run deletes nothing"
            vacuumed = run(dora, "VACUUM customers RETAIN 0 HOURS").column("path").to_pylist()
            assert sorted(vacuumed) == sorted(would)

            # No current data file of the table holds the customer...
            in_files = customers_in_files(table_folder, CUSTOMER)
            assert in_files and set(in_files.values()) == {0}, in_files
            assert not any((table_folder / path).exists() for path in vacuumed)
            assert len(data_files(table_folder)) <= len(before_files) + 1
            # ... and the independent Delta reader agrees on what is left.
            reader = deltalake.DeltaTable(str(table_folder)).to_pyarrow_table()
            assert reader.num_rows == total - 1
            assert CUSTOMER not in reader.column("c_custkey").to_pylist()

            # Time travel to before the delete: the files are gone, and it says so.
            message = failure(dora, "SELECT count(*) FROM time_travel('customers', 1)")
            assert "(FailedPrecondition;" in message and "can no longer be read" in message and "VACUUM" in message, message
            # The current version still reads, and UPDATE is a new version too.
            updated = run(dora, "UPDATE customers SET c_phone = 'erased' WHERE c_custkey = 43")
            assert updated.column("count").to_pylist() == [1]
            assert scalar(dora, "SELECT c_phone FROM customers WHERE c_custkey = 43") == "erased"
            assert scalar(dora, "SELECT count(*) FROM customers") == total - 1

        with admin(server) as boss:
            runs = run(boss, "SELECT run_id, principal, kind, state, rows_out FROM system.runs WHERE sql LIKE 'DELETE FROM customers%'").to_pylist()
            completed = [r for r in runs if r["state"] == "COMPLETE"]
            assert len(completed) == 1, runs
            delete_run = completed[0]
            assert delete_run["principal"] == "dora" and delete_run["kind"] == "write", delete_run
            edges = run(boss, f"SELECT target_table, target_column, source_table, source_column, kind, subtype FROM system.column_lineage WHERE run_id = '{delete_run['run_id']}'").to_pylist()
            assert {"target_table": "customers", "target_column": "c_phone", "source_table": "customers", "source_column": "c_phone", "kind": "DIRECT", "subtype": "IDENTITY"} in edges, edges
            assert any(e["kind"] == "INDIRECT" and e["subtype"] == "FILTER" and e["source_table"] == "customers" for e in edges), edges
            history = [v["operation"] for v in deltalake.DeltaTable(str(table_folder)).history()]
            assert "DELETE" in history and "VACUUM END" in history and "UPDATE" in history, history
            # Refusals are audited.
            audited = run(boss, "SELECT sql FROM system.audit WHERE principal = 'ana' AND code = 'PERMISSION_DENIED'").column(0).to_pylist()
            assert any(s.startswith("DELETE FROM customers") for s in audited), audited
    finally:
        server.stop()


def test_erasure_is_refused_where_it_cannot_be_done_right(scratch, tmp_path):
    server = AuthServer(scratch, state_dir=tmp_path / "state")
    try:
        make_user(server, *ANA)
        with admin(server) as boss:
            run(boss, "CREATE TABLE customers AS SELECT * FROM customer")
            run(boss, "CREATE ROLE analysts")
            run(boss, "GRANT analysts TO ana")
            run(boss, "GRANT SELECT, DELETE ON customers TO ana")
            run(boss, "CREATE ROW FILTER building ON customers FOR analysts USING (c_mktsegment = 'BUILDING')")
            # Plain Parquet files are not rewritten in place.
            message = failure(boss, "DELETE FROM customer WHERE c_custkey = 1")
            assert "(Unimplemented;" in message and "Delta tables only" in message, message
            message = failure(boss, "DELETE FROM customers WHERE c_custkey IN (SELECT o_custkey FROM orders)")
            assert "(Unimplemented;" in message and "subquery" in message, message
            message = failure(boss, "VACUUM customers RETAIN forever")
            assert "VACUUM [TABLE] name [RETAIN n HOURS]" in message, message
            message = failure(boss, "SET tarn.vacuum_retention_check = maybe")
            assert "not true or false" in message, message
            # Without the session setting the check stays on, in every new session.
            assert "tarn.vacuum_retention_check" in failure(boss, "VACUUM customers RETAIN 1 HOURS")
            assert run(boss, "VACUUM customers").column("path").to_pylist() == []
        with tarn.connect(server.uri, user=ANA[0], password=ANA[1]) as ana:
            # Ana sees customers through a row filter: a DELETE would reach rows she cannot see.
            message = failure(ana, "DELETE FROM customers WHERE c_custkey = 42")
            assert "(PermissionDenied;" in message and "row filters" in message, message
        with admin(server) as boss:
            assert scalar(boss, "SELECT count(*) FROM customers WHERE c_custkey = 42") == 1
    finally:
        server.stop()
