"""Fixtures: a demo lake and a real `tarn serve` process on 127.0.0.1:0.

The binary comes from TARN_BIN, or target/debug/tarn (built by the test
command before pytest runs). A missing binary fails the run.
"""

import os
import pathlib
import re
import subprocess
import threading
import time

import pytest

REPO = pathlib.Path(__file__).resolve().parents[3]
QUERIES = REPO / "benches" / "queries"


def tarn_binary() -> pathlib.Path:
    target = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    path = pathlib.Path(os.environ.get("TARN_BIN", target / "debug" / "tarn"))
    if not path.exists():
        pytest.fail(f"tarn binary not found at {path}: run `cargo build` first or set TARN_BIN")
    return path


@pytest.fixture(scope="session")
def lake(tmp_path_factory) -> pathlib.Path:
    path = tmp_path_factory.mktemp("lake")
    subprocess.run([str(tarn_binary()), "demo", "--lake", str(path), "--scale", "0.01"], check=True, capture_output=True)
    return path


class RunningServer:
    def __init__(self, lake, extra_args=()):
        lake_args = ["--lake", str(lake)] if lake is not None else []
        self.process = subprocess.Popen(
            [str(tarn_binary()), "serve", *lake_args, "--bind", "127.0.0.1:0", "--log", "warn", *extra_args],
            stderr=subprocess.PIPE,
            text=True,
        )
        self.log: list = []
        self.uri = self._wait_for_address()
        # Keep draining stderr so the server never blocks on a full pipe.
        threading.Thread(target=self._drain, daemon=True).start()

    def _wait_for_address(self) -> str:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = self.process.stderr.readline()
            if not line:
                if self.process.poll() is not None:
                    raise RuntimeError(f"tarn serve exited early: {''.join(self.log)}")
                continue
            self.log.append(line)
            match = re.search(r"serving Flight SQL on (grpc://\S+)", line)
            if match:
                return match.group(1)
        raise RuntimeError(f"tarn serve did not report its address: {''.join(self.log)}")

    def _drain(self) -> None:
        for line in self.process.stderr:
            self.log.append(line)

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process.stderr.close()


@pytest.fixture(scope="session")
def server(lake):
    running = RunningServer(lake)
    yield running
    assert running.alive(), "the server crashed during the tests:\n" + "".join(running.log)
    running.stop()


@pytest.fixture
def uri(server) -> str:
    return server.uri


@pytest.fixture
def conn(uri):
    import tarn

    connection = tarn.connect(uri)
    yield connection
    connection.close()
