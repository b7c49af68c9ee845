"""Merges the Rust and Python runners' results, checks that all four runners
gave the same answers, and writes the JSON, Markdown and chart of a run.

Exits 1 when any answers differ (the report is still written, marked so).
"""

import argparse
import decimal
import json
import math
import os
import pathlib
import platform
import subprocess
import sys

RUNNERS = ["inprocess", "flight_rust", "flight_adbc", "duckdb"]
LABELS = {
    "inprocess": "(a) in-process DataFusion",
    "flight_rust": "(b) Tarn, Rust client",
    "flight_adbc": "(c) Tarn, ADBC (Python)",
    "duckdb": "(d) DuckDB (Python)",
}


def as_number(value):
    """A number and the tolerance its printed scale implies, or None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return float(value), 0.0
    if isinstance(value, float):
        # A decimal written as a JSON number keeps only its scale's digits:
        # allow one unit of the last digit it has.
        value = repr(value)
    if isinstance(value, str):
        try:
            d = decimal.Decimal(value)
        except decimal.InvalidOperation:
            return None
        if not d.is_finite():
            return None
        exponent = d.as_tuple().exponent
        return float(d), (10.0 ** exponent if exponent < 0 else 0.0)
    return None


def same(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    na, nb = as_number(a), as_number(b)
    if na is not None and nb is not None:
        return math.isclose(na[0], nb[0], rel_tol=1e-9, abs_tol=max(1e-9, na[1], nb[1]))
    return str(a)[:19] == str(b)[:19]  # dates and timestamps: compare the date-time part


def canonical(rows):
    out = []
    for row in rows:
        values = [row[k] for k in sorted(row)]
        out.append(values)
    def key(values):
        return tuple(
            (v is None, f"{as_number(v)[0]:.2f}" if as_number(v) is not None else str(v)) for v in values
        )
    return sorted(out, key=key)


def difference(answer, reference):
    """How an answer's rows differ from the reference's, or None."""
    rows, expected = canonical(answer), canonical(reference)
    if len(rows) != len(expected):
        return f"{len(rows)} rows, in-process {len(expected)}"
    for ours, theirs in zip(rows, expected):
        if len(ours) != len(theirs) or not all(same(a, b) for a, b in zip(ours, theirs)):
            return f"{ours} != {theirs}"
    return None


def compare(answers: dict) -> list:
    """Differences between each runner's answers and in-process DataFusion's."""
    problems = []
    for runner in RUNNERS[1:]:
        problem = difference(answers[runner], answers["inprocess"])
        if problem:
            problems.append(f"{runner}: {problem}")
    return problems


def machine():
    info = {"cores": os.cpu_count(), "platform": platform.platform()}
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        for line in pathlib.Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                info["memory_gib"] = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    try:
        info["rustc"] = subprocess.run(["rustc", "--version"], capture_output=True, text=True).stdout.strip()
    except OSError:
        pass
    return info


def fmt(ms):
    return f"{ms:,.1f}" if ms is not None and not math.isnan(ms) else "n/a"


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rust", type=pathlib.Path, required=True)
    parser.add_argument("--python", type=pathlib.Path, required=True)
    parser.add_argument("--scale", required=True)
    parser.add_argument("--out-prefix", type=pathlib.Path, required=True)
    args = parser.parse_args()

    rust = json.loads(args.rust.read_text())
    py = json.loads(args.python.read_text())

    queries = {}
    mismatches = {}
    totals = {r: 0.0 for r in RUNNERS}
    for n in range(1, 23):
        q = f"q{n}"
        medians = {
            "inprocess": rust["tpch"][q]["inprocess"]["median_ms"],
            "flight_rust": rust["tpch"][q]["flight_rust"]["median_ms"],
            "flight_adbc": py["tpch"][q]["flight_adbc"]["median_ms"],
            "duckdb": py["tpch"][q]["duckdb"]["median_ms"],
        }
        for r in RUNNERS:
            totals[r] += medians[r]
        answers = {**rust["tpch"][q]["answers"], **py["tpch"][q]["answers"]}
        problems = compare(answers)
        if problems:
            mismatches[q] = problems
        queries[q] = {
            "median_ms": medians,
            "samples_ms": {
                "inprocess": rust["tpch"][q]["inprocess"]["samples_ms"],
                "flight_rust": rust["tpch"][q]["flight_rust"]["samples_ms"],
                "flight_adbc": py["tpch"][q]["flight_adbc"]["samples_ms"],
                "duckdb": py["tpch"][q]["duckdb"]["samples_ms"],
            },
            "ratio_tarn_to_inprocess": medians["flight_rust"] / medians["inprocess"],
            "ratio_adbc_to_inprocess": medians["flight_adbc"] / medians["inprocess"],
            "ratio_tarn_to_duckdb": medians["flight_rust"] / medians["duckdb"],
            "rows": rust["tpch"][q]["rows"],
            "answers_match": q not in mismatches,
        }

    warm = warm_summary(py.get("warm"), rust["tpch"], totals["duckdb"], queries)
    if warm and warm["mismatches"]:
        mismatches["warm"] = warm["mismatches"]

    held = held_summary(py.get("held"), rust["tpch"], totals["duckdb"], queries)
    if held and held["mismatches"]:
        mismatches["held"] = held["mismatches"]

    combined = {
        "scale_factor": float(args.scale),
        "machine": machine(),
        "versions": {**rust["versions"], **py["versions"]},
        "config": {**rust["config"], "duckdb_threads": py.get("duckdb_threads")},
        "tpch": {
            "queries": queries,
            "total_ms": totals,
            "ratio_total_tarn_to_inprocess": totals["flight_rust"] / totals["inprocess"],
            "ratio_total_adbc_to_inprocess": totals["flight_adbc"] / totals["inprocess"],
            "ratio_total_tarn_to_duckdb": totals["flight_rust"] / totals["duckdb"],
            "max_ratio_tarn_to_inprocess": max(v["ratio_tarn_to_inprocess"] for v in queries.values()),
            "mismatches": mismatches,
        },
        "streaming": rust["streaming"],
        "streaming_view_types": rust.get("streaming_view_types"),
        "streaming_held": rust.get("streaming_held"),
        "latency": rust["latency"],
        "metadata": rust["metadata"],
        "concurrency": rust["concurrency"],
        "before_after": rust.get("before_after"),
        "security": rust.get("security"),
        "warm": warm,
        "held": held,
    }
    json_path = args.out_prefix.with_suffix(".json")
    json_path.write_text(json.dumps(combined, indent=1))
    chart_path = args.out_prefix.with_name(args.out_prefix.name + "-ratios.png")
    chart(queries, chart_path, args.scale)
    md_path = args.out_prefix.with_suffix(".md")
    md_path.write_text(markdown(combined, chart_path.name))
    print(f"wrote {json_path}, {md_path}, {chart_path}")
    if mismatches:
        print(f"ANSWERS DIFFER: {json.dumps(mismatches, indent=1)}", file=sys.stderr)
        sys.exit(1)


def warm_summary(warm, rust_tpch, duckdb_total, cold):
    """The warm server's times beside DuckDB's, its answers checked against
    in-process DataFusion's, and what the write to lineitem invalidated."""
    if not warm:
        return None
    queries, mismatches = {}, []
    for q, v in warm["queries"].items():
        agrees = difference(v["answers"], rust_tpch[q]["answers"]["inprocess"]) is None
        if not agrees:
            mismatches.append(f"{q} (warm)")
        queries[q] = {
            "median_ms": v["median_ms"],
            "samples_ms": v["samples_ms"],
            "cold_ms": cold[q]["median_ms"]["flight_rust"],
            "duckdb_ms": cold[q]["median_ms"]["duckdb"],
            "ratio_to_duckdb": v["median_ms"] / cold[q]["median_ms"]["duckdb"],
            "hits": v["hits"],
            "runs": v["runs"],
            "answers_match": agrees,
        }
    invalidated = warm["invalidation"]["queries"]
    for q, v in invalidated.items():
        if not v["answer_is_duckdbs"]:
            mismatches.append(f"{q} (after the write to lineitem)")
        if not v["as_it_must"]:
            mismatches.append(f"{q} ({'hit' if v['hit'] else 'ran'} after the write to lineitem)")
    total = sum(v["median_ms"] for v in queries.values())
    return {
        "queries": queries,
        "total_ms": total,
        "ratio_total_to_duckdb": total / duckdb_total,
        "hits": sum(v["hits"] for v in queries.values()),
        "runs": sum(v["runs"] for v in queries.values()),
        "caches": warm["caches"],
        "invalidation": warm["invalidation"],
        "mismatches": mismatches,
    }


def held_summary(held, rust_tpch, duckdb_total, cold):
    """The held-columns server's times beside DuckDB's, its answers checked
    against in-process DataFusion's."""
    if not held:
        return None
    queries, mismatches = {}, []
    for q, v in held["queries"].items():
        agrees = difference(v["answers"], rust_tpch[q]["answers"]["inprocess"]) is None
        if not agrees:
            mismatches.append(f"{q} (held columns)")
        queries[q] = {
            "median_ms": v["median_ms"],
            "samples_ms": v["samples_ms"],
            "cold_ms": cold[q]["median_ms"]["flight_rust"],
            "duckdb_ms": cold[q]["median_ms"]["duckdb"],
            "ratio_to_duckdb": v["median_ms"] / cold[q]["median_ms"]["duckdb"],
            "hits": v["hits"],
            "misses": v["misses"],
            "answers_match": agrees,
        }
    total = sum(v["median_ms"] for v in queries.values())
    return {
        "queries": queries,
        "total_ms": total,
        "ratio_total_to_duckdb": total / duckdb_total,
        "hits": sum(v["hits"] for v in queries.values()),
        "misses": sum(v["misses"] for v in queries.values()),
        "caches": held["caches"],
        "mismatches": mismatches,
    }


def held_section(h):
    if not h:
        return []
    data = h["caches"]["data"]
    lines = [
        "",
        "## Held columns: the decoded-data cache alone",
        "",
        "A server of this build with the result cache off and the decoded-data cache on (`--data-cache-size`, "
        "`BENCH_DATA_CACHE_SIZE` or 8GiB): "
        "every query twice, so that its columns are hot and load, the loads awaited, then the median of the timed runs "
        "through ADBC, each answer checked against in-process DataFusion's. No answer is reused: each run plans and "
        "executes the query, it only decodes nothing.",
        "",
        f"- Held Tarn / DuckDB, total: **{h['ratio_total_to_duckdb']:.3f}** ({h['total_ms']:,.1f} ms); "
        f"scans answered from held columns in the timed runs: **{h['hits']}**, from files: **{h['misses']}**; "
        f"the cache holds {data['entries']:,} columns, {data['bytes']:,} bytes",
        "",
        "| query | cold ms (Rust client) | held ms (ADBC) | DuckDB ms | held/DuckDB |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for q, v in h["queries"].items():
        lines.append(
            f"| {q.upper()} | {fmt(v['cold_ms'])} | {v['median_ms']:,.1f} | {fmt(v['duckdb_ms'])} | {v['ratio_to_duckdb']:.3f} |"
        )
    return lines


def warm_section(w):
    if not w:
        return []
    inv = w["invalidation"]["queries"]
    ran = [q.upper() for q, v in inv.items() if not v["hit"]]
    kept = [q.upper() for q, v in inv.items() if v["hit"]]
    lines = [
        "",
        "## Warm: the same queries on a server whose caches are hot",
        "",
        "A second server of this build with the result and data caches on (the defaults; every other server in this run has "
        "`TARN_RESULT_CACHE=off` and `TARN_DATA_CACHE=off`), on a hard-linked copy of the lake. Per query: one run to fill the caches, then the median of "
        f"{w['queries']['q1']['runs']} runs through ADBC (Python), each answer checked against in-process DataFusion's; "
        "DuckDB's time is its median from the cold table above.",
        "",
        f"- Warm Tarn / DuckDB, total: **{w['ratio_total_to_duckdb']:.3f}** ({w['total_ms']:,.1f} ms against {w['total_ms'] / w['ratio_total_to_duckdb']:,.1f} ms); "
        f"result-cache hits in the timed runs: **{w['hits']}/{w['runs']}**",
        "",
        "| cache | entries | bytes | budget bytes | hits | misses | evictions | hit rate |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, c in w["caches"].items():
        rate = c.get("hit_rate")
        cells = [c.get(k) for k in ("entries", "bytes", "budget_bytes", "hits", "misses", "evictions")]
        lines.append(
            f"| {name} | " + " | ".join("n/a" if x is None else f"{x:,}" for x in cells)
            + f" | {'n/a' if rate is None else f'{rate:.3f}'} |"
        )
    lines += [
        "",
        f"Then lineitem's file in that lake was replaced by one with {w['invalidation']['rows_added']:,} more rows and "
        "`REFRESH TABLE lineitem` run; each query once more, its answer checked against DuckDB over the changed lake: "
        f"ran again: {', '.join(ran) or 'none'}; answered from the cache: {', '.join(kept) or 'none'}. "
        + ("Exactly the queries that read lineitem ran again, and every answer was DuckDB's."
           if not w["mismatches"] else f"**Problems: {', '.join(w['mismatches'])}**"),
        "",
        "| query | cold ms (Rust client) | warm ms (ADBC) | DuckDB ms | warm/DuckDB | hits |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for q, v in w["queries"].items():
        lines.append(
            f"| {q.upper()} | {fmt(v['cold_ms'])} | {v['median_ms']:,.2f} | {fmt(v['duckdb_ms'])} | {v['ratio_to_duckdb']:.4f} | {v['hits']}/{v['runs']} |"
        )
    return lines


def chart(queries, path, scale):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(queries)
    x = range(len(names))
    fig, ax = plt.subplots(figsize=(12, 4.5))
    width = 0.4
    ax.bar([i - width / 2 for i in x], [queries[q]["ratio_tarn_to_inprocess"] for q in names], width, label="Tarn over Flight SQL / in-process DataFusion")
    ax.bar([i + width / 2 for i in x], [queries[q]["ratio_tarn_to_duckdb"] for q in names], width, label="Tarn over Flight SQL / DuckDB")
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.axhline(1.15, color="red", linewidth=0.8, linestyle="--", label="1.15 (per-query overhead limit)")
    ax.set_xticks(list(x), [q.upper() for q in names])
    ax.set_ylabel("time ratio (lower is better)")
    ax.set_title(f"TPC-H SF{scale}: median time ratios per query")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def markdown(r, chart_name):
    t = r["tpch"]
    m = r["machine"]
    lines = [
        f"# Tarn benchmark: TPC-H SF{r['scale_factor']:g}",
        "",
        f"Machine: {m.get('cpu', '?')}, {m.get('cores')} cores, {m.get('memory_gib', '?')} GiB; {m.get('platform')}; {m.get('rustc', '')}.",
        f"Versions: Tarn {r['versions'].get('tarn')}, DataFusion {r['versions'].get('datafusion')}, DuckDB {r['versions'].get('duckdb')}, "
        f"pyarrow {r['versions'].get('pyarrow')}, ADBC Flight SQL {r['versions'].get('adbc_driver_flightsql')}.",
        f"Method: release build; per query {r['config']['warmup']} warm-up run(s), then the median of {r['config']['runs']} runs; "
        f"(a) and (b) interleaved in one process, (c) and (d) interleaved in another, all against the same files in the same run. "
        f"Tarn here is cold: its server runs with `TARN_RESULT_CACHE=off`, so every run does the query's work (DataFusion's Parquet metadata cache stays on, as in (a)). "
        f"DataFusion target_partitions={r['config']['target_partitions']}, batch_size={r['config']['batch_size']}; DuckDB threads={r['config'].get('duckdb_threads')}.",
        "",
        "## Summary",
        "",
        f"- Tarn over Flight SQL / in-process DataFusion, total: **{t['ratio_total_tarn_to_inprocess']:.3f}** (worst query {t['max_ratio_tarn_to_inprocess']:.3f})",
        f"- Tarn through ADBC (Python) / in-process, total: {t['ratio_total_adbc_to_inprocess']:.3f}",
        f"- Tarn / DuckDB, total: **{t['ratio_total_tarn_to_duckdb']:.3f}**",
        f"- `SELECT * FROM lineitem` through the Rust client: **{r['streaming']['flight_rust']['median_gb_per_s']:.2f} GB/s** of Arrow "
        f"(in-process {r['streaming']['inprocess']['median_gb_per_s']:.2f} GB/s); first batch after "
        f"{r['streaming']['flight_rust']['runs'][0]['first_batch_ms']:.1f} ms",
        *([f"- The same stream to a Rust client that reads view types (`ConnectOptions::view_types`, no cast to `Utf8`): "
           f"**{r['streaming_view_types']['flight_rust']['median_gb_per_s']:.2f} GB/s** of Arrow "
           f"(in-process {r['streaming_view_types']['inprocess']['median_gb_per_s']:.2f} GB/s)"] if r.get("streaming_view_types") else []),
        *held_streaming(r.get("streaming_held")),
        f"- `SELECT 1` round trip: p50 **{r['latency']['select_1']['p50_ms']:.3f} ms**, p99 {r['latency']['select_1']['p99_ms']:.3f} ms; "
        f"point query p50 {r['latency']['point_query']['p50_ms']:.2f} ms, p99 {r['latency']['point_query']['p99_ms']:.2f} ms",
        f"- GetTables with schemas: p50 {r['metadata']['p50_ms']:.3f} ms, p99 {r['metadata']['p99_ms']:.3f} ms",
        f"- Answers of all four runners agree: **{'yes' if not t['mismatches'] else 'NO: ' + ', '.join(t['mismatches'])}**",
        *([f"- Warm (result cache hot, same build) Tarn / DuckDB, total: **{r['warm']['ratio_total_to_duckdb']:.3f}**, result-cache hits {r['warm']['hits']}/{r['warm']['runs']}"] if r.get("warm") else []),
        "",
        f"![per-query ratios]({chart_name})",
        "",
        "## TPC-H, per query (median ms)",
        "",
        "| query | (a) in-process | (b) Tarn, Rust | (c) Tarn, ADBC | (d) DuckDB | (b)/(a) | (b)/(d) | rows |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for q, v in t["queries"].items():
        med = v["median_ms"]
        lines.append(
            f"| {q.upper()} | {fmt(med['inprocess'])} | {fmt(med['flight_rust'])} | {fmt(med['flight_adbc'])} | {fmt(med['duckdb'])} "
            f"| {v['ratio_tarn_to_inprocess']:.3f} | {v['ratio_tarn_to_duckdb']:.2f} | {v['rows']} |"
        )
    tot = t["total_ms"]
    lines.append(
        f"| **total** | {fmt(tot['inprocess'])} | {fmt(tot['flight_rust'])} | {fmt(tot['flight_adbc'])} | {fmt(tot['duckdb'])} "
        f"| {t['ratio_total_tarn_to_inprocess']:.3f} | {t['ratio_total_tarn_to_duckdb']:.2f} | |"
    )
    slowest = sorted(t["queries"].items(), key=lambda kv: -kv[1]["ratio_tarn_to_duckdb"])[:5]
    lines += [
        "",
        "Where DuckDB leads most (Tarn/DuckDB): " + ", ".join(f"{q.upper()} {v['ratio_tarn_to_duckdb']:.2f}x" for q, v in slowest) + ".",
        "",
        "## Concurrency (Q1 and Q6 alternating, one connection per client)",
        "",
        "| clients | queries | queries/s | p50 ms | p99 ms | errors | server peak RSS MiB |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for c in r["concurrency"]:
        lines.append(
            f"| {c['clients']} | {c['queries']} | {c['queries_per_second']:.2f} | {c['p50_ms']:.0f} | {c['p99_ms']:.0f} | {c['errors']} | {c['server_peak_rss_mib']:.0f} |"
        )
    lines += warm_section(r.get("warm"))
    lines += held_section(r.get("held"))
    lines += before_after(r.get("before_after"))
    lines += security(r.get("security"), r["streaming"])
    lines += ["", "Raw samples, answers and configuration: the JSON file beside this report.", ""]
    return "\n".join(lines)


def before_after(b):
    """This build against an earlier one, measured side by side (--baseline)."""
    if not b:
        return []
    name, total, select = b["name"], b["tpch_total_ms"], b["select_1"]
    lines = [
        "",
        f"## Before/after: this build against {name}",
        "",
        f"Both servers serve the same lake at once; TPC-H queries interleaved run by run, `SELECT 1` in rounds of 50.",
        "",
        f"- TPC-H total (sum of medians): this build **{total['current']:.0f} ms**, {name} {total['baseline']:.0f} ms, ratio **{total['ratio']:.3f}**",
        f"- `SELECT 1`: p50 **{select['current']['p50_ms']:.3f} ms** (p99 {select['current']['p99_ms']:.3f}), "
        f"{name} p50 {select['baseline']['p50_ms']:.3f} ms (p99 {select['baseline']['p99_ms']:.3f})",
        "",
        f"| query | this build ms | {name} ms | ratio |",
        "| --- | ---: | ---: | ---: |",
    ]
    for q, v in sorted(b["tpch"].items(), key=lambda item: int(item[0].lstrip("q"))):
        now, before = v["current"]["median_ms"], v["baseline"]["median_ms"]
        lines.append(f"| {q.upper()} | {fmt(now)} | {fmt(before)} | {now / before:.3f} |")
    return lines


def held_streaming(s):
    """`SELECT *` from the server that holds lineitem's decoded columns."""
    if not s:
        return []
    held = s["held"]
    return [
        f"- The same stream from the held-columns server (data cache only; lineitem's columns decoded in memory, "
        f"{held['entries']} columns, {held['bytes'] / 1e9:.2f} GB held): **{s['flight_rust']['median_gb_per_s']:.2f} GB/s** of Arrow "
        f"(in-process, decoding the files, {s['inprocess']['median_gb_per_s']:.2f} GB/s); "
        f"scans from held columns {held['hits']}, from files {held['misses']}"
    ]


def security(s, plain_streaming):
    """The cost of authentication (bearer on every call) and of TLS."""
    if not s or not any(s.get(part) for part in ("authenticated", "enforced", "tls_streaming")):
        return []
    lines = ["", "## Authentication and TLS", ""]
    a = s.get("authenticated")
    if a:
        total, select = a["tpch_total_ms"], a["select_1"]
        now, before = select["current"]["p50_ms"], select["baseline"]["p50_ms"]
        lines += [
            "The same build served twice on the same lake, one with `--auth` (the client logs in once; every call then carries "
            "`authorization: Bearer <session token>`, checked and audited), measured side by side as in a before/after run.",
            "",
            f"- `SELECT 1` p50 with a bearer token **{now:.3f} ms** against {before:.3f} ms without authentication: ratio **{now / before:.3f}** (p99 {select['current']['p99_ms']:.3f} against {select['baseline']['p99_ms']:.3f})",
            f"- TPC-H total with a bearer token **{total['current']:.0f} ms** against {total['baseline']:.0f} ms: ratio **{total['ratio']:.3f}**",
        ]
    e = s.get("enforced")
    if e:
        total = e["tpch_total_ms"]
        differ = e.get("answers_differ", [])
        within = "within 3%" if total["ratio"] <= 1.03 else "**more than 3%**"
        lines += [
            f"- TPC-H total as `bench_reader`, who reads through grants (a role with `SELECT ON ALL TABLES`), a column mask and a row filter on every table, "
            f"**{total['current']:.0f} ms** against {total['baseline']:.0f} ms as the admin on the same server, side by side: ratio **{total['ratio']:.3f}** ({within}); "
            + ("answers equal to the admin's for all 22 queries" if not differ else f"**answers differ** for {', '.join(differ)}"),
            "",
            "| table | masked column | mask | row filter |",
            "| --- | --- | --- | --- |",
        ]
        lines += [f"| {p['table']} | {p['column']} | `{p['mask']}` | `{p['row_filter']}` |" for p in e.get("policies", [])]
        lines += [
            "",
            "| query | bench_reader ms | admin ms | ratio |",
            "| --- | ---: | ---: | ---: |",
        ]
        for q, v in sorted(e["tpch"].items(), key=lambda item: int(item[0].lstrip("q"))):
            now, before = v["current"]["median_ms"], v["baseline"]["median_ms"]
            lines.append(f"| {q.upper()} | {fmt(now)} | {fmt(before)} | {now / before:.3f} |")
        lines.append("")
    t = s.get("tls_streaming")
    if t:
        tls = t["flight_rust"]["median_gb_per_s"]
        plain = plain_streaming["flight_rust"]["median_gb_per_s"] if plain_streaming else float("nan")
        lines += [
            f"- `SELECT * FROM lineitem` streamed over TLS (rustls, aws-lc-rs): **{tls:.2f} GB/s** of Arrow, plain text {plain:.2f} GB/s (ratio {tls / plain:.3f})",
        ]
    return lines


if __name__ == "__main__":
    main()
