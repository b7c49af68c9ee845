"""OpenTelemetry traces over OTLP/gRPC, received by a real collector (the
OTLP TraceService of opentelemetry-proto, served by grpcio): a span per
Flight RPC and per query phase, nested as the work is; the endpoint set by
flag, environment and config file; a collector that is down costs no
query, and an endpoint that is not a URL stops the start with its fix."""

import subprocess
import threading
import time
from concurrent import futures

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

import tarn
from conftest import RunningServer, free_port, tarn_binary
from test_auth import run

FLIGHT = "arrow.flight.protocol.FlightService"


class Collector(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self):
        self.spans = []
        self.services = set()
        self.lock = threading.Lock()

    def Export(self, request, context):
        with self.lock:
            for resource_spans in request.resource_spans:
                for kv in resource_spans.resource.attributes:
                    if kv.key == "service.name":
                        self.services.add(kv.value.string_value)
                for scope in resource_spans.scope_spans:
                    self.spans.extend(scope.spans)
        return trace_service_pb2.ExportTraceServiceResponse()


@pytest.fixture
def collector():
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    received = Collector()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(received, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield received, f"http://127.0.0.1:{port}"
    server.stop(0)


def attributes(span):
    return {kv.key: kv.value.string_value for kv in span.attributes}


@pytest.mark.parametrize("how", ["flag", "environment", "config file"])
def test_each_rpc_and_query_phase_is_a_span_nested_as_the_work_is(lake, tmp_path, collector, how):
    received, endpoint = collector
    args, env = [], None
    if how == "flag":
        args = ["--otlp-endpoint", endpoint]
    elif how == "environment":
        env = {"TARN_OTLP_ENDPOINT": endpoint}
    else:
        config = tmp_path / "tarn.toml"
        config.write_text(f'[server]\notlp_endpoint = "{endpoint}"\n')
        args = ["--config", str(config)]
    server = RunningServer(lake, extra_args=args, env=env)
    try:
        with tarn.connect(server.uri) as conn:
            assert run(conn, "SELECT count(*) AS n FROM orders").column(0)[0].as_py() > 0
    finally:
        # A graceful stop flushes the spans not yet sent.
        server.stop()
    assert server.process.returncode == 0, "".join(server.log)
    with received.lock:
        spans = list(received.spans)
    assert received.services == {"tarn"}, received.services
    names = [span.name for span in spans]
    by_id = {span.span_id: span for span in spans}

    def parent(span):
        return by_id.get(span.parent_span_id)

    planned = [s for s in spans if s.name == "plan" and parent(s) and parent(s).name == f"{FLIGHT}/GetFlightInfo"]
    assert planned, names
    executed = [s for s in spans if s.name == "execute" and parent(s) and parent(s).name == f"{FLIGHT}/DoGet"]
    assert executed, names
    admitted = [s for s in spans if s.name == "admit" and parent(s) in executed]
    assert admitted, names
    for span in planned + executed + admitted:
        assert span.trace_id == parent(span).trace_id
        assert span.end_time_unix_nano >= span.start_time_unix_nano
    rpc = parent(executed[0])
    assert attributes(rpc)["rpc.system"] == "grpc" and attributes(rpc)["rpc.method"] == "DoGet", attributes(rpc)
    # The execute spans name their queries.
    assert all(attributes(s).get("query.id") for s in executed), [attributes(s) for s in executed]


def test_a_collector_that_is_down_costs_no_query(lake):
    server = RunningServer(lake, extra_args=["--otlp-endpoint", f"http://127.0.0.1:{free_port()}"])
    try:
        with tarn.connect(server.uri) as conn:
            for _ in range(3):
                assert run(conn, "SELECT count(*) AS n FROM nation").column(0)[0].as_py() == 25
    finally:
        started = time.monotonic()
        server.stop()
    assert server.process.returncode == 0, "".join(server.log)
    assert time.monotonic() - started < 20


def test_an_endpoint_that_is_not_a_url_stops_the_start_with_its_fix(lake, tmp_path):
    done = subprocess.run(
        [str(tarn_binary()), "serve", "--lake", str(lake), "--bind", "127.0.0.1:0", "--state-dir", str(tmp_path), "--otlp-endpoint", "collector:4317"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "--otlp-endpoint 'collector:4317'" in done.stderr and "http://127.0.0.1:4317" in done.stderr, done.stderr
