"""OpenLineage export: every write emits START and COMPLETE (or FAIL) events
that validate against the published JSON Schema files (copied into
fixtures/openlineage with their license), to a JSON-lines file and to an
HTTP endpoint; events queued while the endpoint is down arrive after it
returns, even across a restart of Tarn."""

import http.server
import json
import pathlib
import shutil
import threading
import time

import jsonschema
import pytest
import referencing

import tarn
from conftest import RunningServer, free_port

SPEC = pathlib.Path(__file__).parent / "fixtures" / "openlineage"

CHAIN = [
    "CREATE TABLE a AS SELECT o.o_orderpriority AS priority, sum(l.l_extendedprice) AS revenue, count(*) AS n "
    "FROM lineitem l JOIN orders o ON l.l_orderkey = o.o_orderkey WHERE l.l_shipmode = 'AIR' GROUP BY o.o_orderpriority",
    "INSERT INTO a SELECT o_orderpriority, sum(o_totalprice), count(*) FROM orders WHERE o_orderstatus = 'F' GROUP BY o_orderpriority",
    "CREATE VIEW v AS SELECT priority, revenue * 2 AS double_revenue FROM a",
    "CREATE TABLE b AS SELECT * FROM v WHERE priority <> '5-LOW'",
]


def registry() -> referencing.Registry:
    resources = []
    for path in [SPEC / "OpenLineage.json", *sorted((SPEC / "facets").glob("*.json"))]:
        schema = json.loads(path.read_text())
        resources.append((schema["$id"], referencing.Resource.from_contents(schema)))
    return referencing.Registry().with_resources(resources)


def validate(event: dict, schemas: referencing.Registry) -> None:
    """The event against RunEvent, and every facet against its own schema."""

    def check(instance, url):
        jsonschema.Draft202012Validator({"$ref": url}, registry=schemas).validate(instance)

    check(event, event["schemaURL"])
    facets = [*event["run"].get("facets", {}).values(), *event["job"].get("facets", {}).values()]
    for dataset in event.get("inputs", []) + event.get("outputs", []):
        facets += dataset.get("facets", {}).values()
        facets += dataset.get("outputFacets", {}).values()
    for facet in facets:
        check(facet, facet["_schemaURL"])
    assert facets, "events carry facets"


class Receiver:
    """A Marquez-like endpoint: collects what is POSTed to /api/v1/lineage."""

    def __init__(self, port: int):
        received = self.received = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.path == "/api/v1/lineage":
                    received.append(json.loads(body))
                    self.send_response(201)
                else:
                    self.send_response(404)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def wait_for(condition, what: str, seconds: float = 30):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def lines(path: pathlib.Path) -> list:
    return [json.loads(l) for l in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture
def scratch(lake, tmp_path):
    folder = tmp_path / "lake"
    folder.mkdir()
    for table in ["lineitem.parquet", "orders.parquet"]:
        shutil.copy(lake / table, folder / table)
    return folder


def test_events_validate_and_survive_an_endpoint_outage_and_a_restart(scratch, tmp_path):
    schemas = registry()
    events_file = tmp_path / "events.jsonl"
    state = tmp_path / "state"
    port = free_port()
    args = ["--openlineage-file", str(events_file), "--openlineage-url", f"http://127.0.0.1:{port}"]
    server = RunningServer(scratch, extra_args=args, state_dir=state)
    try:
        with tarn.connect(server.uri) as conn:
            for sql in CHAIN:
                conn.execute(sql)
            with pytest.raises(tarn.Error):
                conn.execute("CREATE TABLE broken AS SELECT CAST(o_comment AS INT) AS n FROM orders")
        wait_for(lambda: len(lines(events_file)) == 10, "10 events in the file")
    finally:
        server.stop()

    events = lines(events_file)
    for event in events:
        validate(event, schemas)
    kinds = [(e["eventType"], e["outputs"][0]["name"].rsplit("/", 1)[-1]) for e in events]
    assert kinds == [
        ("START", "a"), ("COMPLETE", "a"),
        ("START", "a"), ("COMPLETE", "a"),
        ("START", "v"), ("COMPLETE", "v"),
        ("START", "b"), ("COMPLETE", "b"),
        ("START", "broken"), ("FAIL", "broken"),
    ], kinds
    first = events[1]
    assert first["job"]["facets"]["sql"]["query"] == CHAIN[0]
    # The user who ran it (anonymous: this server runs without authentication).
    assert first["job"]["facets"]["ownership"]["owners"] == [{"name": "user:anonymous", "type": "RUNNER"}]
    output = first["outputs"][0]
    assert output["namespace"] == "file" and output["name"] == str(scratch.resolve() / "a")
    statistics = output["outputFacets"]["outputStatistics"]
    assert statistics["rowCount"] == 5 and statistics["fileCount"] == 1
    first_commit = lines(scratch / "a" / "_delta_log" / "00000000000000000000.json")
    added = [action["add"]["path"] for action in first_commit if "add" in action]
    assert statistics["size"] == sum((scratch / "a" / path).stat().st_size for path in added)
    revenue = output["facets"]["columnLineage"]["fields"]["revenue"]["inputFields"]
    assert revenue == [{
        "namespace": "file", "name": str(scratch.resolve() / "lineitem.parquet"), "field": "l_extendedprice",
        "transformations": [{"type": "DIRECT", "subtype": "AGGREGATION", "description": "", "masking": False}],
    }]
    indirect = {(f["field"], f["transformations"][0]["subtype"]) for f in output["facets"]["columnLineage"]["dataset"]}
    assert indirect == {("l_orderkey", "JOIN"), ("o_orderkey", "JOIN"), ("l_shipmode", "FILTER"), ("o_orderpriority", "GROUP_BY")}
    assert [f["name"] for f in output["facets"]["schema"]["fields"]] == ["priority", "revenue", "n"]
    assert "errorMessage" in events[9]["run"]["facets"]
    assert all(e["run"]["runId"] == events[i - i % 2]["run"]["runId"] for i, e in enumerate(events))

    # The endpoint was down the whole time: the events wait in the catalog's
    # outbox, through a restart, and arrive in order once it listens.
    receiver = Receiver(port)
    restarted = RunningServer(scratch, extra_args=args, state_dir=state)
    try:
        wait_for(lambda: len(receiver.received) == 10, "10 events at the endpoint")
        assert [(e["eventType"], e["run"]["runId"]) for e in receiver.received] == [
            (e["eventType"], e["run"]["runId"]) for e in events
        ]
        time.sleep(1)
        assert len(lines(events_file)) == 10, "the file got each event once"
    finally:
        restarted.stop()
        receiver.stop()


def test_the_python_package_walks_lineage_and_lists_runs(scratch):
    server = RunningServer(scratch)
    try:
        with tarn.connect(server.uri) as conn:
            for sql in CHAIN:
                conn.execute(sql)
            upstream = conn.lineage("b.double_revenue")
            edges = list(zip(*[upstream.column(c).to_pylist() for c in ["depth", "target_table", "source_table", "source_column", "subtype"]]))
            assert edges == [
                (1, "b", "v", "double_revenue", "IDENTITY"),
                (2, "v", "a", "revenue", "TRANSFORMATION"),
                (3, "a", "lineitem", "l_extendedprice", "AGGREGATION"),
                (3, "a", "orders", "o_totalprice", "AGGREGATION"),
            ]
            downstream = conn.lineage("lineitem", downstream=True)
            assert set(downstream.column("target_table").to_pylist()) == {"a", "v", "b"}
            runs = conn.runs()
            writes = [s for s, k in zip(runs.column("sql").to_pylist(), runs.column("kind").to_pylist()) if k != "query"]
            assert writes == CHAIN
    finally:
        server.stop()


def test_a_write_killed_mid_way_gets_an_abort_event_at_the_next_start(scratch, tmp_path):
    schemas = registry()
    events_file = tmp_path / "events.jsonl"
    state = tmp_path / "state"
    args = ["--openlineage-file", str(events_file)]
    server = RunningServer(scratch, extra_args=args, state_dir=state)
    big = "CREATE TABLE huge AS SELECT l.*, g.value AS copy FROM lineitem l CROSS JOIN generate_series(1, 200) g"

    def create():
        try:
            with tarn.connect(server.uri) as conn:
                conn.execute(big)
        except Exception:
            pass  # the server is killed under it

    writer = threading.Thread(target=create)
    writer.start()
    wait_for(lambda: any(e["eventType"] == "START" for e in lines(events_file)), "the START event")
    time.sleep(0.5)
    server.process.kill()
    server.process.wait()
    writer.join()
    assert [e["eventType"] for e in lines(events_file)] == ["START"]

    restarted = RunningServer(scratch, extra_args=args, state_dir=state)
    try:
        wait_for(lambda: len(lines(events_file)) == 2, "the ABORT event")
    finally:
        restarted.stop()
    start, abort = lines(events_file)
    assert abort["eventType"] == "ABORT"
    assert abort["run"]["runId"] == start["run"]["runId"]
    assert abort["outputs"] == start["outputs"]
    assert abort["run"]["facets"]["errorMessage"]["message"] == "the server stopped before the statement ended"
    validate(abort, schemas)


def test_runs_and_events_carry_the_authenticated_user(scratch, tmp_path):
    from test_auth import AuthServer, admin, make_user, run

    schemas = registry()
    events_file = tmp_path / "events.jsonl"
    server = AuthServer(scratch, ["--openlineage-file", str(events_file)], state_dir=tmp_path / "state")
    try:
        make_user(server, "erin", "erin-password-1", read_all=True)
        with admin(server) as boss:
            run(boss, "GRANT CREATE ON SCHEMA public TO erin")
        with tarn.connect(server.uri, user="erin", password="erin-password-1") as conn:
            run(conn, "CREATE TABLE erins AS SELECT o_orderkey FROM orders LIMIT 3")
            principals = run(conn, "SELECT principal FROM system.runs WHERE sql LIKE 'CREATE TABLE erins%'").column(0).to_pylist()
        assert principals == ["erin"]
        wait_for(lambda: len(lines(events_file)) >= 2, "the START and COMPLETE events")
    finally:
        server.stop()
    events = [e for e in lines(events_file) if e["job"]["name"] == "write.erins"]
    assert [e["eventType"] for e in events] == ["START", "COMPLETE"]
    for event in events:
        validate(event, schemas)
        assert event["job"]["facets"]["ownership"]["owners"] == [{"name": "user:erin", "type": "RUNNER"}]
