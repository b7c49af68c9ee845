"""The Python runners of the benchmark: Tarn through ADBC (c) and DuckDB (d).

Both fetch results as Arrow. Queries alternate between the two runners so
that neither always meets the warmer cache. Writes JSON with timings and
answers; benches/report.py compares and reports.
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

TPCH_TABLES = ["customer", "lineitem", "nation", "orders", "part", "partsupp", "region", "supplier"]


def jsonable(value):
    if isinstance(value, (decimal.Decimal,)):
        return str(value)
    if isinstance(value, (datetime.date, datetime.datetime)):
        return value.isoformat()
    return value


def answer_rows(table: pa.Table):
    return [{k: jsonable(v) for k, v in row.items()} for row in table.to_pylist()]


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lake", type=pathlib.Path, required=True)
    parser.add_argument("--uri", required=True)
    parser.add_argument("--queries", type=pathlib.Path, default=pathlib.Path("benches/queries"))
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--out", type=pathlib.Path, required=True)
    args = parser.parse_args()

    duck = duckdb.connect()
    for table in TPCH_TABLES:
        duck.execute(f"CREATE VIEW {table} AS SELECT * FROM read_parquet('{args.lake / (table + '.parquet')}')")
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
        summary = {}
        for name, values in samples.items():
            ordered = sorted(values)
            mid = len(ordered) // 2
            median = ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2
            summary[name] = {"samples_ms": values, "median_ms": median}
        summary["answers"] = {name: answer_rows(table) for name, table in answers.items()}
        results[f"q{number}"] = summary
        print(
            f"q{number:<2}  tarn/adbc {summary['flight_adbc']['median_ms']:9.1f} ms   duckdb {summary['duckdb']['median_ms']:9.1f} ms",
            flush=True,
        )
    tarn.close()
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
    }
    args.out.write_text(json.dumps(output, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
