"""Fixtures: a demo lake and a real `tarn serve` process on 127.0.0.1:0.

The binary comes from TARN_BIN, or target/debug/tarn (built by the test
command before pytest runs). A missing binary fails the run.
"""

import os
import pathlib
import re
import shutil
import socket
import subprocess
import sys
import tempfile
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
    """`tarn serve` on `lake`. Its catalog goes to `state_dir`, by default a
    fresh temporary folder (many servers share the demo lake)."""

    def __init__(self, lake, extra_args=(), state_dir=None, env=None, log="warn", bind="127.0.0.1:0"):
        lake_args = ["--lake", str(lake)] if lake is not None else []
        if state_dir is None:
            self._state = tempfile.TemporaryDirectory()
            state_dir = self._state.name
        self.process = subprocess.Popen(
            [
                str(tarn_binary()),
                "serve",
                *lake_args,
                "--bind",
                bind,
                "--log",
                log,
                "--state-dir",
                str(state_dir),
                *extra_args,
            ],
            stderr=subprocess.PIPE,
            text=True,
            env=None if env is None else {**os.environ, **env},
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
            match = re.search(r"serving Flight SQL on (grpc(?:\+tls)?://[^\s\"]+)", line)
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MotoServer:
    """A real S3-compatible server (moto_server from PyPI) on 127.0.0.1.

    It keeps objects in memory: a restart comes back empty, on the same port.
    """

    ACCESS_KEY = "testing"
    SECRET_KEY = "super-secret-value"

    def __init__(self):
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.process = None
        self.start()

    def start(self) -> None:
        executable = shutil.which("moto_server") or str(pathlib.Path(sys.executable).parent / "moto_server")
        self.process = subprocess.Popen(
            [executable, "-H", "127.0.0.1", "-p", str(self.port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                self.client().list_buckets()
                return
            except Exception:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("moto_server did not start")
                time.sleep(0.2)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait()

    def client(self):
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=self.ACCESS_KEY,
            aws_secret_access_key=self.SECRET_KEY,
        )

    def upload(self, folder: pathlib.Path, bucket: str, prefix: str) -> None:
        client = self.client()
        client.create_bucket(Bucket=bucket)
        for path in folder.rglob("*"):
            if path.is_file() and not path.name.startswith("."):
                client.upload_file(str(path), bucket, f"{prefix}/{path.relative_to(folder)}")

    def keys(self, bucket: str, prefix: str) -> list:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return [o["Key"] for page in pages for o in page.get("Contents", [])]

    def config(self, folder: pathlib.Path, url: str) -> pathlib.Path:
        """A Tarn config whose lake is the bucket prefix `url`."""
        path = folder / "s3.toml"
        path.write_text(
            f"""
[stores.lake]
url = "{url}"
endpoint = "{self.endpoint}"
region = "us-east-1"
allow_http = true
access_key_id = "{self.ACCESS_KEY}"
secret_access_key = "{self.SECRET_KEY}"
"""
        )
        return path

    def storage_options(self) -> dict:
        """The same bucket for the `deltalake` Python reader."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": self.SECRET_KEY,
            "AWS_REGION": "us-east-1",
            "AWS_ALLOW_HTTP": "true",
        }


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
