"""Who may see what, through ADBC and pyarrow.flight with authentication on:
a user granted SELECT on `nation` only is refused `orders` on every path,
sees no trace of it in listings or system tables, and every refusal is in
the audit log; column grants; views with their owner's rights; grants that
take effect on the next statement and survive a restart."""

import shutil

import adbc_driver_flightsql.dbapi as flightsql
import pyarrow as pa
import pyarrow.flight as flight
import pytest

import flightsql.flightsql_pb2 as fsql
import tarn
from test_auth import AuthServer, admin, make_user, run
from test_flight_sql import descriptor, fetch

NINA = ("nina", "nina-password-1")
OWEN = ("owen", "owen-password-1")


@pytest.fixture
def scratch(lake, tmp_path):
    folder = tmp_path / "lake"
    folder.mkdir()
    for table in ["nation.parquet", "orders.parquet", "customer.parquet", "region.parquet"]:
        shutil.copy(lake / table, folder / table)
    return folder


def refused(conn, sql, parameters=None):
    """The message of the PERMISSION_DENIED `sql` fails with."""
    cursor = conn.cursor()
    with pytest.raises(Exception) as err:
        cursor.execute(sql, parameters)
        cursor.fetch_arrow_table()
    cursor.close()
    text = str(err.value)
    assert "PERMISSION_DENIED" in text or "permission denied" in text.lower(), f"{sql}: {text}"
    return text


def rows(conn, sql):
    return run(conn, sql).to_pylist()


def test_a_user_with_select_on_nation_only_is_refused_orders_everywhere(scratch, tmp_path):
    server = AuthServer(scratch, state_dir=tmp_path / "state")
    try:
        make_user(server, *NINA)
        make_user(server, *OWEN)
        with admin(server) as boss:
            run(boss, "GRANT SELECT ON nation TO nina")
            run(boss, "GRANT CREATE ON SCHEMA public TO nina, owen")
            run(boss, "GRANT SELECT ON orders TO owen")
            run(boss, "CREATE TABLE od AS SELECT o_orderkey, o_custkey FROM orders WHERE o_orderkey < 100")
            # Derived from nation and from orders; nina may read it, and nation, not orders.
            run(boss, "CREATE TABLE mixed AS SELECT n_name, o_orderkey FROM nation JOIN orders ON o_custkey = n_nationkey")
            run(boss, "CREATE TABLE mixed_more AS SELECT n_name FROM mixed")
            run(boss, "GRANT SELECT ON mixed, mixed_more TO nina")
        with tarn.connect(server.uri, user=OWEN[0], password=OWEN[1]) as owen:
            # Owen owns the view he creates; it runs with his rights.
            run(owen, "CREATE VIEW ov AS SELECT o_orderkey FROM orders")
            run(owen, "GRANT SELECT ON ov TO nina")
        with tarn.connect(server.uri, user=NINA[0], password=NINA[1]) as nina:
            assert rows(nina, "SELECT count(*) AS n FROM nation") == [{"n": 25}]
            viewed = run(nina, "SELECT count(*) AS n FROM ov").column(0)[0].as_py()
            assert viewed > 0, "the view answers with its owner's rights"
        with admin(server) as boss:
            run(boss, "REVOKE SELECT ON orders FROM owen")
        with tarn.connect(server.uri, user=NINA[0], password=NINA[1]) as nina:
            messages = {
                "query": refused(nina, "SELECT * FROM orders"),
                "join": refused(nina, "SELECT n_name, count(*) FROM nation JOIN orders ON o_custkey = n_nationkey GROUP BY n_name"),
                "subquery": refused(nina, "SELECT n_name FROM nation WHERE n_nationkey IN (SELECT o_custkey FROM orders)"),
                "cte": refused(nina, "WITH o AS (SELECT * FROM orders) SELECT count(*) FROM o"),
                "view": refused(nina, "SELECT * FROM ov"),
                "prepared": refused(nina, "SELECT * FROM orders WHERE o_orderkey = ?", [1]),
                "ctas": refused(nina, "CREATE TABLE stolen AS SELECT * FROM orders"),
                "copy": refused(nina, f"COPY (SELECT * FROM orders) TO '{scratch}/stolen.parquet'"),
                "time travel": refused(nina, "SELECT * FROM time_travel('orders', 0)"),
                "version as of": refused(nina, "SELECT * FROM od VERSION AS OF 0"),
                "lineage": refused(nina, "SELECT * FROM lineage_upstream('od')"),
                "explain": refused(nina, "EXPLAIN SELECT * FROM orders"),
                "insert": refused(nina, "INSERT INTO od VALUES (1, 2)"),
                "drop": refused(nina, "DROP TABLE od"),
                "refresh": refused(nina, "REFRESH TABLE orders"),
            }
            for path, message in messages.items():
                if path != "view":
                    assert "nina has no" in message and "privilege on table" in message, (path, message)
            assert "SELECT privilege on table orders" in messages["query"]
            assert "owner owen may no longer read" in messages["view"]
            assert "INSERT privilege on table od" in messages["insert"]
            assert not (scratch / "stolen.parquet").exists()
            # What nina may do still works: her own table from what she may read.
            run(nina, "CREATE TABLE mine AS SELECT n_name FROM nation")
            assert rows(nina, "SELECT count(*) AS n FROM mine") == [{"n": 25}]
            # Listings show only what she may read.
            listed = {t[2] for t in nina.tables()}
            assert {"nation", "mine", "ov"} <= listed and not {"orders", "od", "customer"} & listed, listed
            shown = {r["table_name"] for r in rows(nina, "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")}
            assert "orders" not in shown and "nation" in shown
            # System tables: only rows about what she may read.
            assert rows(nina, "SELECT * FROM system.column_lineage WHERE source_table = 'orders'") == []
            assert rows(nina, "SELECT * FROM system.table_lineage WHERE target_table = 'od'") == []
            assert {r["table_name"] for r in rows(nina, "SELECT table_name FROM system.tables")} <= listed | {"nation"}
            assert {r["principal"] for r in rows(nina, "SELECT principal FROM system.runs")} == {"nina"}
            # Lineage walks from a table she may read leave out what she may not.
            walked = rows(nina, "SELECT source_table, target_table FROM lineage_upstream('mixed_more')")
            sources = {r["source_table"] for r in walked}
            assert {"mixed", "nation"} <= sources and "orders" not in sources, walked
            walked = rows(nina, "SELECT target_table FROM lineage_downstream('nation')")
            assert {"mixed", "mixed_more"} <= {r["target_table"] for r in walked}, walked
            refused(nina, "SELECT * FROM system.audit")
        with admin(server) as boss:
            assert rows(boss, "SELECT count(*) AS n FROM system.column_lineage WHERE source_table = 'orders'")[0]["n"] > 0
            walked = rows(boss, "SELECT source_table FROM lineage_upstream('mixed_more')")
            assert "orders" in {r["source_table"] for r in walked}, "admins see every edge"
            denied = rows(boss, "SELECT sql, code FROM system.audit WHERE principal = 'nina' AND code = 'PERMISSION_DENIED'")
            denied_sql = {r["sql"] for r in denied}
            for sql in ["SELECT * FROM orders", "EXPLAIN SELECT * FROM orders", "SELECT * FROM time_travel('orders', 0)",
                        "CREATE TABLE stolen AS SELECT * FROM orders", "SELECT * FROM lineage_upstream('od')", "SELECT * FROM ov"]:
                assert sql in denied_sql, (sql, denied_sql)
            grants = rows(boss, "SELECT grantee, grantee_kind, privilege, object_kind, object_name FROM system.grants ORDER BY 1, 3, 5")
            assert {"grantee": "nina", "grantee_kind": "user", "privilege": "SELECT", "object_kind": "table", "object_name": "nation"} in grants
            owners = {r["table_name"]: r["owner"] for r in rows(boss, "SELECT table_name, owner FROM system.tables WHERE dropped_at IS NULL")}
            assert owners["ov"] == "owen" and owners["mine"] == "nina" and owners["od"] == "admin"

        # pyarrow.flight: GetTables lists what nina may read; a query of orders is refused.
        client = flight.FlightClient(server.uri)
        header = client.authenticate_basic_token(*NINA)
        options = flight.FlightCallOptions(headers=[header])
        info = client.get_flight_info(descriptor(fsql.CommandGetTables(include_schema=True)), options)
        tables = pa.concat_tables([client.do_get(e.ticket, options).read_all() for e in info.endpoints])
        names = set(tables.column("table_name").to_pylist())
        assert "nation" in names and "orders" not in names and "od" not in names
        query = fsql.CommandStatementQuery(query="SELECT * FROM orders")
        with pytest.raises(flight.FlightUnauthorizedError) as err:
            client.get_flight_info(descriptor(query), options)
        assert "SELECT privilege on table orders" in str(err.value)
    finally:
        server.stop()

    # Grants and owners survive a restart.
    server = AuthServer(scratch, state_dir=tmp_path / "state")
    try:
        with tarn.connect(server.uri, user=NINA[0], password=NINA[1]) as nina:
            assert rows(nina, "SELECT count(*) AS n FROM nation") == [{"n": 25}]
            assert rows(nina, "SELECT count(*) AS n FROM mine") == [{"n": 25}]
            refused(nina, "SELECT * FROM orders")
            run(nina, "DROP TABLE mine")
    finally:
        server.stop()


def test_column_grants_and_grants_that_change_between_statements(scratch, tmp_path):
    server = AuthServer(scratch, state_dir=tmp_path / "state")
    try:
        make_user(server, *NINA)
        with admin(server) as boss, tarn.connect(server.uri, user=NINA[0], password=NINA[1]) as nina:
            run(boss, "CREATE ROLE clerks")
            run(boss, "GRANT clerks TO nina")
            run(boss, "GRANT SELECT (c_custkey, c_name) ON customer TO clerks")
            # SELECT * expands to the granted columns; others are not there.
            table = run(nina, "SELECT * FROM customer ORDER BY c_custkey LIMIT 3")
            assert table.column_names == ["c_custkey", "c_name"]
            assert table.column("c_name").to_pylist() == run(boss, "SELECT c_name FROM customer ORDER BY c_custkey LIMIT 3").column(0).to_pylist()
            message = refused(nina, "SELECT c_phone FROM customer")
            assert "c_custkey, c_name" in message, message
            # A grant reaches her open session at its next statement, and so does a revoke.
            refused(nina, "SELECT * FROM region")
            run(boss, "GRANT SELECT ON ALL TABLES IN SCHEMA public TO clerks")
            assert rows(nina, "SELECT count(*) AS n FROM region") == [{"n": 5}]
            assert "c_phone" in run(nina, "SELECT * FROM customer LIMIT 1").column_names
            run(boss, "REVOKE SELECT ON ALL TABLES IN SCHEMA public FROM clerks")
            refused(nina, "SELECT * FROM region")
            # Only admins and owners grant.
            message = refused(nina, "GRANT SELECT ON nation TO nina")
            assert "only an admin or the table's owner" in message
            with pytest.raises(Exception) as err:
                run(boss, "GRANT SELECT ON nation TO nobody")
            assert "no user or role named 'nobody'" in str(err.value)
            with pytest.raises(Exception) as err:
                run(boss, "GRANT SELECT ON no_such_table TO nina")
            assert "no_such_table" in str(err.value)
    finally:
        server.stop()


def test_without_authentication_everyone_may_do_everything(server):
    with flightsql.connect(server.uri) as conn:
        assert rows(conn, "SELECT count(*) AS n FROM orders")[0]["n"] > 0
