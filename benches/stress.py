"""Tarn under pressure: TPC-H under a memory limit, and a mixed load test.

`memory`: the 22 TPC-H queries through ADBC against a `tarn serve` started
with --memory-limit (its RSS sampled every 50 ms, the spilled bytes and
peak memory of each query read from system.runs), the same against a
server without a limit (peak RSS for comparison), in-process DataFusion
(tarn-bench --only tpch, beside that server) and DuckDB, all in one run;
every answer is compared with DuckDB's.

`load`: many clients for a fixed time against one server: TPC-H queries,
SELECT 1 (latency sampled), GetTables, statements that time out, queries
cancelled by their client, streams cut mid-way, and one query that alone
needs more than the memory limit. Every outcome is counted by gRPC code;
an outcome a client did not expect is an error of the run. Afterwards
system.queries must be empty and the memory pool and queue at 0.

Writes JSON next to a Markdown report in benches/results/.
"""

import argparse
import json
import os
import pathlib
import random
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import adbc_driver_flightsql.dbapi as flightsql
import duckdb
import pyarrow.flight as flight

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from python_bench import TPCH_TABLES, answer_rows  # noqa: E402
from report import canonical, machine, same  # noqa: E402

QUERIES = pathlib.Path(__file__).resolve().parent / "queries"

# An aggregate over a cross join: it sends nothing until it ends, which is never.
ENDLESS = "SELECT a.l_returnflag, count(*) AS n, sum(a.l_quantity * b.l_quantity) AS s FROM lineitem a CROSS JOIN lineitem b GROUP BY a.l_returnflag"
# Aggregates without groups whose states hold every distinct comment of
# lineitem, twelve times over: they cannot spill, and alone need more than
# the limit. (An `array_agg` is no test of the limit: its accumulators stop
# counting what they hold, and its one-row answer outgrows a gRPC message.)
HUNGRY = "SELECT " + ", ".join(f"count(DISTINCT l_comment || '{i}') AS a{i}" for i in range(12)) + " FROM lineitem"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_bytes(pid):
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


class Server:
    """`tarn serve` on the lake, its RSS sampled until it stops."""

    def __init__(self, binary, lake, extra=(), http=False):
        self.port = free_port()
        self.http_port = free_port() if http else None
        self.state = tempfile.TemporaryDirectory()
        args = [str(binary), "serve", "--lake", str(lake), "--bind", f"127.0.0.1:{self.port}", "--state-dir", self.state.name, "--log", "warn", *extra]
        if http:
            args += ["--http-bind", f"127.0.0.1:{self.http_port}"]
        self.log = open(pathlib.Path(self.state.name) / "server.log", "w+")
        self.process = subprocess.Popen(args, stderr=self.log)
        self.uri = f"grpc://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    break
            except OSError:
                if self.process.poll() is not None:
                    self.log.seek(0)
                    raise RuntimeError(f"tarn serve exited: {self.log.read()}")
                time.sleep(0.2)
        self.peak = 0
        self.window_peak = 0
        self.samples = 0
        self._stop = threading.Event()
        threading.Thread(target=self._sample, daemon=True).start()

    def _sample(self):
        while not self._stop.is_set():
            rss = rss_bytes(self.process.pid)
            if rss:
                self.peak = max(self.peak, rss)
                self.window_peak = max(self.window_peak, rss)
                self.samples += 1
            time.sleep(0.05)

    def window(self):
        """The peak RSS since the last call."""
        peak, self.window_peak = self.window_peak, rss_bytes(self.process.pid) or 0
        return peak

    def metrics(self):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/metrics", timeout=10) as answer:
            return answer.read().decode()

    def stop(self):
        self._stop.set()
        self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        self.log.close()
        self.state.cleanup()
        return code


def adbc(uri):
    return flightsql.connect(uri, autocommit=True)


def fetch(conn, sql):
    with conn.cursor() as cur:
        cur.execute(sql)
        return cur.fetch_arrow_table()


def differs(ours, theirs):
    a, b = canonical(ours), canonical(theirs)
    if len(a) != len(b):
        return f"{len(a)} rows, DuckDB {len(b)}"
    for x, y in zip(a, b):
        if len(x) != len(y) or not all(same(p, q) for p, q in zip(x, y)):
            return f"{x} != {y}"
    return None


def duckdb_answers(lake):
    duck = duckdb.connect()
    for table in TPCH_TABLES:
        duck.execute(f"CREATE VIEW {table} AS SELECT * FROM read_parquet('{lake / (table + '.parquet')}')")
    out = {}
    for number in range(1, 23):
        sql = (QUERIES / f"q{number}.sql").read_text()
        started = time.perf_counter()
        table = duck.sql(sql).to_arrow_table()
        out[f"q{number}"] = {"ms": (time.perf_counter() - started) * 1000, "answer": answer_rows(table)}
        print(f"duckdb      q{number:<2} {out[f'q{number}']['ms']:10.1f} ms", flush=True)
    return out, duck.execute("SELECT current_setting('threads')").fetchone()[0]


def tarn_answers(server, label):
    conn = adbc(server.uri)
    out = {}
    for number in range(1, 23):
        sql = (QUERIES / f"q{number}.sql").read_text()
        server.window()
        started = time.perf_counter()
        try:
            answer = answer_rows(fetch(conn, sql))
            error = None
        except Exception as err:  # reported, and the run fails
            answer, error = None, str(err)[:500]
        ms = (time.perf_counter() - started) * 1000
        time.sleep(0.1)
        peak = server.window()
        out[f"q{number}"] = {"ms": ms, "answer": answer, "error": error, "peak_rss": peak}
        print(f"{label:<11} q{number:<2} {ms:10.1f} ms  peak RSS {peak / 2**30:5.2f} GiB{'  ' + error if error else ''}", flush=True)
    runs = fetch(conn, "SELECT sql, state, peak_memory_bytes, spilled_bytes, queue_ms, note FROM system.runs WHERE kind = 'query' ORDER BY started_at").to_pylist()
    conn.close()
    for number in range(1, 23):
        sql = (QUERIES / f"q{number}.sql").read_text()
        mine = [r for r in runs if r["sql"].strip() == sql.strip()]
        if mine:
            out[f"q{number}"].update({k: mine[-1][k] for k in ("state", "peak_memory_bytes", "spilled_bytes", "note")})
    return out


def inprocess_answers(bench_binary, lake, server):
    """tarn-bench --only tpch: (a) in-process DataFusion beside (b) Tarn."""
    out = pathlib.Path(tempfile.mkdtemp()) / "rust.json"
    subprocess.run(
        [str(bench_binary), "--lake", str(lake), "--uri", server.uri, "--only", "tpch", "--runs", "1", "--warmup", "0", "--out", str(out)],
        check=True,
    )
    data = json.loads(out.read_text())["tpch"]
    return {q: {"ms": v["inprocess"]["median_ms"], "answer": v["answers"]["inprocess"], "flight_ms": v["flight_rust"]["median_ms"]} for q, v in data.items()}


def memory(args):
    started = time.time()
    duck, threads = duckdb_answers(args.lake)
    limited = Server(args.tarn, args.lake, ["--memory-limit", args.memory_limit])
    try:
        under_limit = tarn_answers(limited, "tarn-limit")
        limited_peak = limited.peak
    finally:
        limited_code = limited.stop()
    unlimited = Server(args.tarn, args.lake)
    try:
        free = tarn_answers(unlimited, "tarn")
        inprocess = inprocess_answers(args.bench, args.lake, unlimited)
        unlimited_peak = unlimited.peak
    finally:
        unlimited.stop()
    problems = []
    for q in duck:
        for name, runner in (("tarn --memory-limit", under_limit), ("tarn", free), ("in-process", inprocess)):
            if runner[q].get("error"):
                problems.append(f"{q} {name}: {runner[q]['error']}")
            elif (why := differs(runner[q]["answer"], duck[q]["answer"])) is not None:
                problems.append(f"{q} {name}: answer differs from DuckDB: {why}")
    totals = {
        "duckdb_ms": sum(v["ms"] for v in duck.values()),
        "tarn_limit_ms": sum(v["ms"] for v in under_limit.values()),
        "tarn_ms": sum(v["ms"] for v in free.values()),
        "inprocess_ms": sum(v["ms"] for v in inprocess.values()),
    }
    result = {
        "kind": "memory",
        "scale": args.scale,
        "memory_limit": args.memory_limit,
        "machine": machine(),
        "duckdb_threads": threads,
        "duration_s": time.time() - started,
        "limited_peak_rss": limited_peak,
        "limited_exit_code": limited_code,
        "unlimited_peak_rss": unlimited_peak,
        "totals": totals,
        "queries": {q: {"duckdb": duck[q]["ms"], "limit": {k: v for k, v in under_limit[q].items() if k != "answer"}, "tarn": free[q]["ms"], "tarn_peak_rss": free[q]["peak_rss"], "inprocess": inprocess[q]["ms"]} for q in duck},
        "problems": problems,
    }
    return result


def memory_markdown(r):
    gib = lambda b: f"{b / 2**30:.2f} GiB"
    t = r["totals"]
    lines = [
        f"# TPC-H SF{r['scale']} under --memory-limit {r['memory_limit']}",
        "",
        f"Machine: {r['machine']}. DuckDB threads: {r['duckdb_threads']}. One run of each query per runner (`bash benches/stress memory --scale {r['scale']}`).",
        "",
        f"- Answers compared with DuckDB's for all 22 queries: {'all equal' if not r['problems'] else str(len(r['problems'])) + ' problems'}.",
        f"- Server RSS with --memory-limit {r['memory_limit']}: peak {gib(r['limited_peak_rss'])} (sampled every 50 ms); without a limit: peak {gib(r['unlimited_peak_rss'])}.",
        f"- Totals: Tarn with the limit {t['tarn_limit_ms'] / 1000:.1f} s, Tarn without {t['tarn_ms'] / 1000:.1f} s, in-process DataFusion {t['inprocess_ms'] / 1000:.1f} s, DuckDB {t['duckdb_ms'] / 1000:.1f} s; Tarn (limit) / DuckDB {t['tarn_limit_ms'] / t['duckdb_ms']:.2f}, Tarn / in-process {t['tarn_ms'] / t['inprocess_ms']:.3f}.",
        "",
        "| query | DuckDB ms | in-process ms | Tarn ms | Tarn peak RSS | Tarn (limit) ms | peak RSS (limit) | pool peak | spilled | note |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for q, v in r["queries"].items():
        lim = v["limit"]
        lines.append(
            f"| {q} | {v['duckdb']:.0f} | {v['inprocess']:.0f} | {v['tarn']:.0f} | {gib(v['tarn_peak_rss'])} | {lim['ms']:.0f} | {gib(lim['peak_rss'])} | "
            f"{gib(lim.get('peak_memory_bytes') or 0)} | {(lim.get('spilled_bytes') or 0) / 2**20:.0f} MiB | {lim.get('note') or lim.get('error') or ''} |"
        )
    if r["problems"]:
        lines += ["", "## Problems", ""] + [f"- {p}" for p in r["problems"]]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- load test


class Tally:
    def __init__(self):
        self.lock = threading.Lock()
        self.counts = {}
        self.unexpected = []
        self.select_one_ms = []

    def add(self, kind, outcome, expected):
        with self.lock:
            key = f"{kind}: {outcome}"
            self.counts[key] = self.counts.get(key, 0) + 1
            if outcome != expected:
                self.unexpected.append(key)


def code_of(err):
    text = str(err)
    for code in ("DEADLINE_EXCEEDED", "CANCELLED", "RESOURCE_EXHAUSTED", "UNAVAILABLE", "INTERNAL", "INVALID_ARGUMENT", "NOT_FOUND"):
        if code in text or code.title().replace("_", "") in text:
            return code
    if isinstance(err, flight.FlightCancelledError):
        return "CANCELLED"
    if isinstance(err, flight.FlightTimedOutError):
        return "DEADLINE_EXCEEDED"
    match = re.search(r"\(([A-Za-z]+);", text)
    return match.group(1) if match else type(err).__name__ + ": " + text[:200]


def tpch_client(uri, stop, tally, numbers):
    conn = adbc(uri)
    sqls = {n: (QUERIES / f"q{n}.sql").read_text() for n in numbers}
    while not stop.is_set():
        n = random.choice(numbers)
        try:
            fetch(conn, sqls[n])
            tally.add("tpch", "OK", "OK")
        except Exception as err:
            tally.add("tpch", code_of(err), "OK")
    conn.close()


def select_one_client(uri, stop, tally):
    conn = adbc(uri)
    while not stop.is_set():
        started = time.perf_counter()
        try:
            fetch(conn, "SELECT 1 AS one")
            ms = (time.perf_counter() - started) * 1000
            with tally.lock:
                tally.select_one_ms.append(ms)
            tally.add("select 1", "OK", "OK")
        except Exception as err:
            tally.add("select 1", code_of(err), "OK")
        time.sleep(0.02)
    conn.close()


def get_tables_client(uri, stop, tally):
    conn = adbc(uri)
    while not stop.is_set():
        try:
            conn.adbc_get_objects(depth="tables").read_all()
            tally.add("GetTables", "OK", "OK")
        except Exception as err:
            tally.add("GetTables", code_of(err), "OK")
        time.sleep(0.2)
    conn.close()


def timeout_client(uri, stop, tally):
    conn = adbc(uri)
    with conn.cursor() as cur:
        cur.execute("SET tarn.statement_timeout = '2s'")
    while not stop.is_set():
        try:
            fetch(conn, ENDLESS)
            tally.add("timeout", "OK", "DEADLINE_EXCEEDED")
        except Exception as err:
            tally.add("timeout", code_of(err), "DEADLINE_EXCEEDED")
    conn.close()


def flight_descriptor(sql):
    import flightsql.flightsql_pb2 as fsql  # flightsql-dbapi's Flight SQL messages
    from google.protobuf import any_pb2

    packed = any_pb2.Any()
    packed.Pack(fsql.CommandStatementQuery(query=sql))
    return flight.FlightDescriptor.for_command(packed.SerializeToString())


def cancel_flight_info(client, info):
    """The CancelFlightInfo action (pyarrow.flight has no method for it)."""
    body = info.serialize()
    length, varint = len(body), b""
    while True:
        byte, length = length & 0x7F, length >> 7
        varint += bytes([byte | (0x80 if length else 0)])
        if not length:
            break
    # CancelFlightInfoRequest { info = 1 }
    list(client.do_action(flight.Action("CancelFlightInfo", b"\x0a" + varint + body)))


# Fetches the ticket (hex on stdin) and prints how the stream ended.
FETCHER = """
import sys, pyarrow.flight as flight
client = flight.FlightClient(sys.argv[1])
try:
    client.do_get(flight.Ticket(bytes.fromhex(sys.stdin.read()))).read_all()
    print("OK")
except BaseException as err:
    # pyarrow re-raises a cancelled read as KeyboardInterrupt, with the
    # FlightCancelledError as its context.
    cause = err if isinstance(err, flight.FlightError) else (err.__context__ or err)
    print("CANCELLED" if isinstance(cause, flight.FlightCancelledError) else type(cause).__name__ + " " + str(cause)[:200])
"""


def cancel_client(uri, stop, tally):
    """Starts the endless query, streams it from another process (one
    pyarrow process streaming in one thread and calling in another can
    stall both), and cancels it after a second with CancelFlightInfo."""
    location = uri.replace("grpc://", "grpc+tcp://")
    client = flight.FlightClient(location)
    while not stop.is_set():
        try:
            info = client.get_flight_info(flight_descriptor(ENDLESS))
            fetcher = subprocess.Popen([sys.executable, "-c", FETCHER, location], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            fetcher.stdin.write(info.endpoints[0].ticket.ticket.hex())
            fetcher.stdin.close()
            time.sleep(1.0)
            cancel_flight_info(client, info)
            try:
                fetcher.wait(timeout=30)
                said = fetcher.stdout.read().strip()
            except subprocess.TimeoutExpired:
                fetcher.kill()
                fetcher.wait()
                said = "no answer within 30 s"
            fetcher.stdout.close()
            tally.add("cancelled", said.split(" ")[0] if said else "nothing", "CANCELLED")
        except Exception as err:
            tally.add("cancelled", code_of(err), "CANCELLED")
    client.close()


def disconnect_client(uri, stop, tally):
    location = uri.replace("grpc://", "grpc+tcp://")
    while not stop.is_set():
        client = flight.FlightClient(location)
        try:
            info = client.get_flight_info(flight_descriptor("SELECT * FROM lineitem"))
            reader = client.do_get(info.endpoints[0].ticket)
            reader.read_chunk()
            tally.add("disconnected", "OK", "OK")
        except Exception as err:
            tally.add("disconnected", code_of(err), "OK")
        finally:
            client.close()  # mid-stream
        time.sleep(0.5)


def hungry_client(uri, stop, tally):
    conn = adbc(uri)
    while not stop.is_set():
        try:
            fetch(conn, HUNGRY)
            tally.add("over the limit", "OK", "RESOURCE_EXHAUSTED")
        except Exception as err:
            tally.add("over the limit", code_of(err), "RESOURCE_EXHAUSTED")
        time.sleep(5)
    conn.close()


def gauge(metrics, name):
    for line in metrics.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return None


def in_own_process(fn, uri, stop, results):
    """Runs a pyarrow.flight client loop in a process of its own (a stream
    cut or cancelled from another thread must never stall the others)."""
    tally = Tally()
    fn(uri, stop, tally)
    results.put((tally.counts, tally.unexpected))


def load(args):
    import multiprocessing

    server = Server(args.tarn, args.lake, ["--memory-limit", args.memory_limit], http=True)
    tally = Tally()
    stop = threading.Event()
    numbers = list(range(1, 23))
    workers = []
    special = [select_one_client, select_one_client, get_tables_client, timeout_client, hungry_client]
    own_process = [cancel_client, disconnect_client, disconnect_client]
    for i in range(args.clients - len(special) - len(own_process)):
        workers.append(threading.Thread(target=tpch_client, args=(server.uri, stop, tally, numbers), daemon=True))
    for fn in special:
        workers.append(threading.Thread(target=fn, args=(server.uri, stop, tally), daemon=True))
    context = multiprocessing.get_context("spawn")
    process_stop, process_results = context.Event(), context.Queue()
    processes = [context.Process(target=in_own_process, args=(fn, server.uri, process_stop, process_results)) for fn in own_process]
    for process in processes:
        process.start()
    started = time.monotonic()
    rss_at_start = rss_bytes(server.process.pid)
    for worker in workers:
        worker.start()
    rss_marks = []
    while time.monotonic() - started < args.seconds:
        time.sleep(min(30, args.seconds))
        rss_marks.append(rss_bytes(server.process.pid))
        print(f"load {time.monotonic() - started:6.0f} s: {sum(tally.counts.values())} calls, RSS {rss_marks[-1] / 2**30:.2f} GiB, peak {server.peak / 2**30:.2f} GiB", flush=True)
    stop.set()
    process_stop.set()
    for worker in workers:
        worker.join(timeout=120)
    hung = sum(worker.is_alive() for worker in workers)
    for process in processes:
        try:
            counts, unexpected = process_results.get(timeout=120)
        except Exception:
            hung += 1
            continue
        with tally.lock:
            for key, n in counts.items():
                tally.counts[key] = tally.counts.get(key, 0) + n
            tally.unexpected += unexpected
    for process in processes:
        process.join(timeout=10)
        if process.is_alive():
            process.kill()
    time.sleep(2)
    conn = adbc(server.uri)
    left = fetch(conn, "SELECT query_id, state, sql FROM system.queries WHERE sql NOT LIKE '%system.queries%'").to_pylist()
    conn.close()
    metrics = server.metrics()
    after = {
        "queries_left": left,
        "pool_reserved_bytes": gauge(metrics, "tarn_memory_pool_reserved_bytes"),
        "queries_running": gauge(metrics, "tarn_queries_running"),
        "queries_queued": gauge(metrics, "tarn_queries_queued"),
        "rss_after": rss_bytes(server.process.pid),
    }
    exit_code = server.stop()
    latencies = sorted(tally.select_one_ms)
    pct = lambda p: latencies[min(len(latencies) - 1, int(len(latencies) * p))] if latencies else None
    return {
        "kind": "load",
        "scale": args.scale,
        "clients": args.clients,
        "seconds": args.seconds,
        "memory_limit": args.memory_limit,
        "machine": machine(),
        "counts": tally.counts,
        "unexpected": len(tally.unexpected),
        "unexpected_kinds": sorted(set(tally.unexpected)),
        "hung_clients": hung,
        "select_one_ms": {"n": len(latencies), "p50": pct(0.5), "p99": pct(0.99), "max": latencies[-1] if latencies else None},
        "rss": {"start": rss_at_start, "peak": server.peak, "marks": rss_marks},
        "after": after,
        "exit_code": exit_code,
    }


def load_markdown(r):
    gib = lambda b: f"{(b or 0) / 2**30:.2f} GiB"
    s = r["select_one_ms"]
    a = r["after"]
    lines = [
        f"# Load test: {r['clients']} clients for {r['seconds']} s on TPC-H SF{r['scale']} (--memory-limit {r['memory_limit']})",
        "",
        f"Machine: {r['machine']}. `bash benches/stress load --scale {r['scale']} --clients {r['clients']} --seconds {r['seconds']}`.",
        "",
        f"- Unexpected outcomes: **{r['unexpected']}** {r['unexpected_kinds'] or ''}; clients still hanging at the end: {r['hung_clients']}.",
        f"- `SELECT 1` under load: p50 {s['p50']:.1f} ms, p99 {s['p99']:.1f} ms, max {s['max']:.1f} ms over {s['n']} calls." if s["n"] else "- `SELECT 1`: no samples",
        f"- Server RSS: {gib(r['rss']['start'])} at start, peak {gib(r['rss']['peak'])}, every 30 s: {', '.join(gib(m) for m in r['rss']['marks'])}; after {gib(a['rss_after'])}.",
        f"- Afterwards: system.queries {len(a['queries_left'])} rows, memory pool reserved {a['pool_reserved_bytes']} bytes, running {a['queries_running']}, queued {a['queries_queued']}; SIGTERM exit code {r['exit_code']}.",
        "",
        "| client kind: outcome | count |",
        "| --- | ---: |",
    ]
    lines += [f"| {k} | {v} |" for k, v in sorted(r["counts"].items())]
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("part", choices=["memory", "load"])
    parser.add_argument("--lake", type=pathlib.Path, required=True)
    parser.add_argument("--scale", required=True)
    parser.add_argument("--tarn", type=pathlib.Path, required=True)
    parser.add_argument("--bench", type=pathlib.Path)
    parser.add_argument("--memory-limit", default="4GiB")
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", type=int, default=300)
    parser.add_argument("--out-prefix", type=pathlib.Path, required=True)
    args = parser.parse_args()
    result = memory(args) if args.part == "memory" else load(args)
    args.out_prefix.with_suffix(".json").write_text(json.dumps(result, indent=1, default=str))
    text = memory_markdown(result) if args.part == "memory" else load_markdown(result)
    args.out_prefix.with_suffix(".md").write_text(text)
    print(text)
    failed = result.get("problems") or result.get("unexpected") or result.get("hung_clients")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
