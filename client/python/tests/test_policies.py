"""Column masks and row filters through ADBC with authentication on: an
analyst sees masked phones and BUILDING customers only, through a join, a
subquery, a CTE, a window function and a CTAS, checked against DuckDB
computing the same masked, filtered answer; exempt roles and admins see the
real values; revoking the role and dropping the mask take effect on the
next statement."""

import shutil

import duckdb
import pytest

import tarn
from test_auth import AuthServer, admin, make_user, run

ANA = ("ana", "ana-password-1")
SAM = ("sam", "sam-password-1")

QUERIES = {
    "join": "SELECT c_custkey, c_phone, count(*) AS n FROM customer JOIN orders ON o_custkey = c_custkey GROUP BY c_custkey, c_phone",
    "subquery": "SELECT c_custkey, c_phone FROM customer WHERE c_custkey IN (SELECT o_custkey FROM orders WHERE o_totalprice > 100000)",
    "cte": "WITH c AS (SELECT c_mktsegment, c_phone FROM customer) SELECT c_mktsegment, count(*) AS n, min(c_phone) AS p FROM c GROUP BY c_mktsegment",
    "window": "SELECT c_custkey, c_phone, rank() OVER (PARTITION BY c_nationkey ORDER BY c_acctbal DESC) AS r FROM customer",
    "aggregate": "SELECT count(*) AS n, count(DISTINCT c_phone) AS phones FROM customer",
}


@pytest.fixture
def scratch(lake, tmp_path):
    folder = tmp_path / "lake"
    folder.mkdir()
    for table in ["customer.parquet", "orders.parquet", "nation.parquet"]:
        shutil.copy(lake / table, folder / table)
    return folder


def duck(folder, masked=True, filtered=True):
    db = duckdb.connect()
    phone = "repeat('*', greatest(length(c_phone) - 4, 0)) || right(c_phone, 4)" if masked else "c_phone"
    where = "WHERE c_mktsegment = 'BUILDING'" if filtered else ""
    db.execute(f"CREATE VIEW customer AS SELECT * REPLACE ({phone} AS c_phone) FROM read_parquet('{folder}/customer.parquet') {where}")
    db.execute(f"CREATE VIEW orders AS SELECT * FROM read_parquet('{folder}/orders.parquet')")
    return db


def answer(conn, sql):
    table = run(conn, sql)
    return sorted(tuple(None if v is None else str(v) for v in row.values()) for row in table.to_pylist())


def duck_answer(db, sql):
    result = db.execute(sql)
    return sorted(tuple(None if v is None else str(v) for v in row) for row in result.fetchall())


def test_masks_and_row_filters_apply_on_every_path(scratch, tmp_path):
    server = AuthServer(scratch, state_dir=tmp_path / "state")
    try:
        make_user(server, *ANA, read_all=True)
        make_user(server, *SAM, read_all=True)
        with admin(server) as boss:
            for sql in [
                "CREATE ROLE analysts", "CREATE ROLE support",
                "GRANT analysts TO ana", "GRANT analysts TO sam", "GRANT support TO sam",
                "GRANT CREATE ON SCHEMA public TO analysts",
                "CREATE MASK phone ON customer (c_phone) USING (mask_partial(c_phone, 4)) EXEMPT support",
                "CREATE ROW FILTER building ON customer FOR analysts USING (c_mktsegment = 'BUILDING')",
            ]:
                run(boss, sql)
            raw = answer(boss, "SELECT count(*) AS n FROM customer")
            policies = run(boss, "SELECT mask_name, table_name, column_name FROM system.masks").to_pylist()
            assert policies == [{"mask_name": "phone", "table_name": "customer", "column_name": "c_phone"}]
        masked_db = duck(scratch)
        with tarn.connect(server.uri, user=ANA[0], password=ANA[1]) as ana:
            for name, sql in QUERIES.items():
                got = answer(ana, sql)
                assert got == duck_answer(masked_db, sql), name
                assert got, name
            phones = run(ana, "SELECT DISTINCT c_phone FROM customer").column(0).to_pylist()
            assert phones and all(p.startswith("*") for p in phones)
            assert {r[0] for r in answer(ana, "SELECT DISTINCT c_mktsegment FROM customer")} == {"BUILDING"}
            # A CTAS writes what she sees: masked, filtered.
            run(ana, "CREATE TABLE ana_copy AS SELECT c_custkey, c_phone, c_mktsegment FROM customer")
            # Time travel cannot apply policies: refused.
            with pytest.raises(Exception) as err:
                run(ana, "SELECT * FROM time_travel('customer', 0)")
            assert "masks or row filters" in str(err.value)
        with admin(server) as boss:
            copied = run(boss, "SELECT c_phone, c_mktsegment FROM ana_copy").to_pylist()
            assert copied and all(r["c_phone"].startswith("*") and r["c_mktsegment"] == "BUILDING" for r in copied)
            assert len(copied) == int(duck_answer(masked_db, "SELECT count(*) FROM customer")[0][0])
            # Admins see the real values.
            assert answer(boss, QUERIES["aggregate"]) == duck_answer(duck(scratch, masked=False, filtered=False), QUERIES["aggregate"])
            assert answer(boss, "SELECT count(*) AS n FROM customer") == raw
            # Lineage records the mask as a transformation.
            edge = run(boss, "SELECT kind, subtype FROM system.column_lineage WHERE target_table = 'ana_copy' AND target_column = 'c_phone' AND source_column = 'c_phone'").to_pylist()
            assert edge == [{"kind": "DIRECT", "subtype": "TRANSFORMATION"}], edge
        with tarn.connect(server.uri, user=SAM[0], password=SAM[1]) as sam:
            # An exempt role sees real phones, and still only BUILDING rows.
            got = answer(sam, QUERIES["join"])
            assert got == duck_answer(duck(scratch, masked=False), QUERIES["join"])
        with tarn.connect(server.uri, user=ANA[0], password=ANA[1]) as ana, admin(server) as boss:
            run(boss, "REVOKE analysts FROM ana")
            assert answer(ana, QUERIES["cte"]) == duck_answer(duck(scratch, filtered=False), QUERIES["cte"])
            run(boss, "DROP MASK phone")
            assert answer(ana, QUERIES["join"]) == duck_answer(duck(scratch, masked=False, filtered=False), QUERIES["join"])
            # Only admins and owners manage policies.
            with pytest.raises(Exception) as err:
                run(ana, "CREATE MASK m ON customer (c_name) USING (mask_redact(c_name))")
            assert "only an admin or the owner" in str(err.value)
            with pytest.raises(Exception) as err:
                run(boss, "CREATE MASK m ON customer (no_column) USING (mask_redact(no_column))")
            assert "no column no_column" in str(err.value)
    finally:
        server.stop()


def test_hashed_masks_still_join_and_survive_a_restart(scratch, tmp_path):
    state = tmp_path / "state"
    server = AuthServer(scratch, state_dir=state)
    sql = "SELECT count(*) AS n FROM customer a JOIN customer b ON a.c_name = b.c_name"
    try:
        make_user(server, *ANA, read_all=True)
        with admin(server) as boss:
            run(boss, "CREATE MASK names ON customer (c_name) USING (mask_hash(c_name))")
            total = answer(boss, sql)
        with tarn.connect(server.uri, user=ANA[0], password=ANA[1]) as ana:
            hashed = run(ana, "SELECT c_name FROM customer ORDER BY c_custkey LIMIT 3").column(0).to_pylist()
            assert all(len(h) == 64 and not h.startswith("Customer") for h in hashed)
            assert answer(ana, sql) == total
    finally:
        server.stop()
    server = AuthServer(scratch, state_dir=state)
    try:
        with tarn.connect(server.uri, user=ANA[0], password=ANA[1]) as ana:
            again = run(ana, "SELECT c_name FROM customer ORDER BY c_custkey LIMIT 3").column(0).to_pylist()
            assert again == hashed, "the same salt after a restart"
    finally:
        server.stop()


def test_a_row_filter_proven_by_todays_files_still_filters_a_file_added_later(tmp_path):
    """A row filter true for every row of the files a scan reads costs that
    scan nothing (it is dropped from the plan); the proof is made for each
    plan, so a file added later with rows the filter removes is filtered."""
    folder = tmp_path / "lake"
    (folder / "events").mkdir(parents=True)
    db = duckdb.connect()
    db.execute(f"COPY (SELECT range AS id, range + 1 AS amount FROM range(1000)) TO '{folder}/events/part-1.parquet'")
    server = AuthServer(folder, state_dir=tmp_path / "state")
    try:
        make_user(server, *ANA, read_all=True)
        with admin(server) as boss:
            run(boss, "CREATE ROLE analysts")
            run(boss, "GRANT analysts TO ana")
            run(boss, "CREATE ROW FILTER positive ON events FOR analysts USING (amount > 0)")
        count = "SELECT count(*) AS n, sum(amount) AS total FROM events"
        with tarn.connect(server.uri, user=ANA[0], password=ANA[1]) as ana:
            assert answer(ana, count) == [("1000", str(sum(range(1, 1001))))]
            plan = run(ana, f"EXPLAIN {count}").column(1).to_pylist()[-1]
            scan = next(line for line in plan.splitlines() if "DataSourceExec" in line)
            assert "predicate=true" in scan and "amount@1 > 0" not in scan, scan
            # Nor is it tested above the scan.
            assert not any("amount@" in line and "> 0" in line for line in plan.splitlines()), plan

            # Rows the filter removes arrive in a new file (and NULLs, which it removes too).
            db.execute(f"COPY (SELECT range + 1000 AS id, CASE WHEN range % 7 = 0 THEN NULL ELSE range - 50 END AS amount "
                       f"FROM range(100)) TO '{folder}/events/part-2.parquet'")
            with admin(server) as boss:
                run(boss, "REFRESH TABLE events")
            expected = duck_answer(db, f"SELECT count(*), sum(amount) FROM read_parquet('{folder}/events/*.parquet') WHERE amount > 0")
            assert answer(ana, count) == expected
            plan = run(ana, f"EXPLAIN {count}").column(1).to_pylist()[-1]
            scan = next(line for line in plan.splitlines() if "DataSourceExec" in line)
            assert "amount@1 > 0" in scan, scan
        with admin(server) as boss:
            assert answer(boss, "SELECT count(*) FROM events") == [("1100",)]
    finally:
        server.stop()
