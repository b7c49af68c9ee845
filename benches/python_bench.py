"""The Python runners of the benchmark: Tarn through ADBC (c) and DuckDB (d).

Both fetch results as Arrow. Queries alternate between the two runners so
that neither always meets the warmer cache. With --warm-uri, a server with
the result cache on is measured with its caches hot (each query once to fill
them, then the timed runs), its hit rates read from system.caches; then
lineitem's file in its lake is replaced and, after REFRESH TABLE, every query
runs once more: those reading lineitem must run again, the others must be
hits, and every answer must be DuckDB's over the changed lake. With
--held-uri, a server with only the decoded-data cache on is measured once
every query's columns are held (each query twice, then the loads awaited):
queries that are not repeats of each other, served without decoding. Writes JSON
with timings and answers; benches/report.py compares and reports.
"""

import argparse
import datetime
import decimal
import json
import pathlib
import platform
import time

import adbc_driver_flightsql
import adbc_driver_flightsql.dbapi as flightsql
import duckdb
import pyarrow as pa

from report import canonical, same

TPCH_TABLES = ["customer", "lineitem", "nation", "orders", "part", "partsupp", "region", "supplier"]


def jsonable(value):
    if isinstance(value, (decimal.Decimal,)):
        return str(value)
    if isinstance(value, (datetime.date, datetime.datetime)):
        return value.isoformat()
    return value


def answer_rows(table: pa.Table):
    return [{k: jsonable(v) for k, v in row.items()} for row in table.to_pylist()]


def median(values):
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def duckdb_over(lake):
    duck = duckdb.connect()
    for table in TPCH_TABLES:
        duck.execute(f"CREATE VIEW {table} AS SELECT * FROM read_parquet('{lake / (table + '.parquet')}')")
    return duck


def fetch(conn, sql):
    with conn.cursor() as cur:
        cur.execute(sql)
        return cur.fetch_arrow_table()


def caches(conn):
    """system.caches, one dict per cache."""
    return {row["cache"]: row for row in fetch(conn, "SELECT * FROM system.caches").to_pylist()}


def result_hits(conn):
    return caches(conn)["result"]["hits"]


def agree(ours: pa.Table, theirs: pa.Table) -> bool:
    a, b = canonical(answer_rows(ours)), canonical(answer_rows(theirs))
    return len(a) == len(b) and all(len(x) == len(y) and all(same(u, v) for u, v in zip(x, y)) for x, y in zip(a, b))


def warm_runs(uri, queries, runs, duckdb_medians):
    """Each query once to fill the caches, then `runs` timed runs (hits)."""
    conn = flightsql.connect(uri, autocommit=True)
    results = {}
    try:
        for number in range(1, 23):
            sql = (queries / f"q{number}.sql").read_text()
            fetch(conn, sql)
            before = result_hits(conn)
            samples, table = [], None
            for _ in range(runs):
                started = time.perf_counter()
                table = fetch(conn, sql)
                samples.append((time.perf_counter() - started) * 1000.0)
            hits = result_hits(conn) - before
            results[f"q{number}"] = {
                "samples_ms": samples,
                "median_ms": median(samples),
                "hits": hits,
                "runs": runs,
                "answers": answer_rows(table),
            }
            print(
                f"q{number:<2}  warm tarn/adbc {median(samples):9.2f} ms   duckdb {duckdb_medians[f'q{number}']:9.1f} ms   hits {hits}/{runs}",
                flush=True,
            )
        return {"queries": results, "caches": caches(conn)}
    finally:
        conn.close()


def held_runs(uri, queries, runs, duckdb_medians):
    """Every query twice (its columns become hot and load), the loads
    awaited, then `runs` timed runs per query with the result cache off."""
    conn = flightsql.connect(uri, autocommit=True)
    results = {}
    try:
        sqls = {number: (queries / f"q{number}.sql").read_text() for number in range(1, 23)}
        for _ in range(2):
            for sql in sqls.values():
                fetch(conn, sql)
        last, stable = None, 0
        while stable < 3:
            time.sleep(1)
            now = caches(conn)["data"]
            stable = stable + 1 if last and (now["entries"], now["bytes"]) == (last["entries"], last["bytes"]) else 0
            last = now
        for number, sql in sqls.items():
            before = caches(conn)["data"]
            samples, table = [], None
            for _ in range(runs):
                started = time.perf_counter()
                table = fetch(conn, sql)
                samples.append((time.perf_counter() - started) * 1000.0)
            after = caches(conn)["data"]
            results[f"q{number}"] = {
                "samples_ms": samples,
                "median_ms": median(samples),
                "hits": after["hits"] - before["hits"],
                "misses": after["misses"] - before["misses"],
                "runs": runs,
                "answers": answer_rows(table),
            }
            print(
                f"q{number:<2}  held tarn/adbc {median(samples):9.2f} ms   duckdb {duckdb_medians[f'q{number}']:9.1f} ms   "
                f"scans from held columns {after['hits'] - before['hits']}, from files {after['misses'] - before['misses']}",
                flush=True,
            )
        return {"queries": results, "caches": caches(conn)}
    finally:
        conn.close()


def replace_lineitem(lake):
    """lineitem's file replaced by one with more rows (its orders below 1000
    twice), written by DuckDB: a new file under the same name, as a nightly
    rewrite by another tool leaves it."""
    path = lake / "lineitem.parquet"
    fresh = path.with_name("lineitem.parquet.new")
    duck = duckdb.connect()
    duck.execute("SET enable_progress_bar = false")
    try:
        added = duck.execute(f"SELECT count(*) FROM read_parquet('{path}') WHERE l_orderkey < 1000").fetchone()[0]
        duck.execute(
            f"COPY (SELECT * FROM read_parquet('{path}') UNION ALL "
            f"SELECT * FROM read_parquet('{path}') WHERE l_orderkey < 1000) TO '{fresh}' (FORMAT parquet)"
        )
    finally:
        duck.close()
    fresh.replace(path)
    return added


def invalidation(uri, lake, queries):
    """After lineitem changes, exactly the queries that read it run again."""
    added = replace_lineitem(lake)
    duck = duckdb_over(lake)
    conn = flightsql.connect(uri, autocommit=True)
    results = {}
    try:
        with conn.cursor() as cur:
            cur.execute("REFRESH TABLE lineitem")
        for number in range(1, 23):
            sql = (queries / f"q{number}.sql").read_text()
            before = result_hits(conn)
            table = fetch(conn, sql)
            hit = result_hits(conn) > before
            reads_lineitem = "lineitem" in sql.lower()
            results[f"q{number}"] = {
                "reads_lineitem": reads_lineitem,
                "hit": hit,
                "as_it_must": hit != reads_lineitem,
                "answer_is_duckdbs": agree(table, duck.sql(sql).to_arrow_table()),
            }
            print(f"q{number:<2}  after the write: {'hit' if hit else 'ran'}, reads lineitem: {reads_lineitem}", flush=True)
    finally:
        conn.close()
        duck.close()
    return {"rows_added": added, "queries": results}


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lake", type=pathlib.Path, required=True)
    parser.add_argument("--uri", required=True)
    parser.add_argument("--queries", type=pathlib.Path, default=pathlib.Path("benches/queries"))
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--out", type=pathlib.Path, required=True)
    parser.add_argument("--warm-uri", help="a server with the result cache on, serving --warm-lake")
    parser.add_argument("--warm-lake", type=pathlib.Path, help="its lake: a copy of --lake this runner may change")
    parser.add_argument("--held-uri", help="a server with only the decoded-data cache on")
    args = parser.parse_args()
    if bool(args.warm_uri) != bool(args.warm_lake):
        parser.error("--warm-uri and --warm-lake go together")

    duck = duckdb_over(args.lake)
    tarn = flightsql.connect(args.uri, autocommit=True)

    def adbc(sql):
        with tarn.cursor() as cur:
            cur.execute(sql)
            return cur.fetch_arrow_table()

    def duckdb_arrow(sql):
        return duck.sql(sql).to_arrow_table()

    def timed(fn, sql):
        started = time.perf_counter()
        table = fn(sql)
        return (time.perf_counter() - started) * 1000.0, table

    results = {}
    for number in range(1, 23):
        sql = (args.queries / f"q{number}.sql").read_text()
        for _ in range(args.warmup):
            adbc(sql)
            duckdb_arrow(sql)
        samples = {"flight_adbc": [], "duckdb": []}
        answers = {}
        for run in range(args.runs):
            order = [("flight_adbc", adbc), ("duckdb", duckdb_arrow)]
            if run % 2:
                order.reverse()
            for name, fn in order:
                ms, table = timed(fn, sql)
                samples[name].append(ms)
                answers[name] = table
        summary = {name: {"samples_ms": values, "median_ms": median(values)} for name, values in samples.items()}
        summary["answers"] = {name: answer_rows(table) for name, table in answers.items()}
        results[f"q{number}"] = summary
        print(
            f"q{number:<2}  tarn/adbc {summary['flight_adbc']['median_ms']:9.1f} ms   duckdb {summary['duckdb']['median_ms']:9.1f} ms",
            flush=True,
        )
    tarn.close()
    warm, held = None, None
    duckdb_medians = {q: v["duckdb"]["median_ms"] for q, v in results.items()}
    if args.held_uri:
        held = held_runs(args.held_uri, args.queries, args.runs, duckdb_medians)
    if args.warm_uri:
        warm = warm_runs(args.warm_uri, args.queries, args.runs, duckdb_medians)
        warm["invalidation"] = invalidation(args.warm_uri, args.warm_lake, args.queries)
    output = {
        "runner": "python_bench",
        "versions": {
            "duckdb": duckdb.__version__,
            "pyarrow": pa.__version__,
            "adbc_driver_flightsql": adbc_driver_flightsql.__version__,
            "python": platform.python_version(),
        },
        "duckdb_threads": duck.execute("SELECT current_setting('threads')").fetchone()[0],
        "tpch": results,
        "warm": warm,
        "held": held,
    }
    args.out.write_text(json.dumps(output, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
