"""TLS and mutual TLS with certificates made by the test (openssl): the
Python package and `tarn sql` over grpc+tls://, plain-text clients refused
cleanly, client certificates required with --tls-client-ca, and every bad
TLS file named at start."""

import os
import subprocess
import tempfile

import pytest

import tarn
from conftest import RunningServer, tarn_binary

EXT_SERVER = "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n"
EXT_CLIENT = "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=clientAuth\n"


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_ca(folder, name):
    openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2", "-subj", f"/CN={name}",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=folder,
    )


def make_leaf(folder, name, ca, ext):
    (folder / f"{name}.ext").write_text(ext)
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=folder)
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key", "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext", cwd=folder)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pki")
    make_ca(folder, "ca")
    make_leaf(folder, "server", "ca", EXT_SERVER)
    make_leaf(folder, "alice", "ca", EXT_CLIENT)
    make_ca(folder, "other_ca")
    make_leaf(folder, "stranger", "other_ca", EXT_CLIENT)
    return folder


def text(path):
    return path.read_text()


def one(conn, sql):
    return conn.arrow(sql).column(0).to_pylist()


def tarn_sql(uri, *args):
    env = {k: v for k, v in os.environ.items() if not k.startswith("TARN_")}
    return subprocess.run([str(tarn_binary()), "sql", "--host", uri, *args, "--format", "csv"], capture_output=True, text=True, timeout=60, env=env)


def test_tls_serves_the_package_and_tarn_sql_and_refuses_plain_text(lake, pki):
    server = RunningServer(lake, ["--tls-cert", str(pki / "server.pem"), "--tls-key", str(pki / "server.key")])
    try:
        assert server.uri.startswith("grpc+tls://127.0.0.1:")
        with tarn.connect(server.uri, tls_root_certs=text(pki / "ca.pem")) as conn:
            assert one(conn, "SELECT count(*) FROM nation") == [25]
        result = tarn_sql(server.uri, "--tls-ca", str(pki / "ca.pem"), "-c", "SELECT 6 * 7 AS answer")
        assert result.returncode == 0 and "42" in result.stdout, result.stderr
        # A certificate nobody told the client to trust: refused by the client.
        result = tarn_sql(server.uri, "-c", "SELECT 1")
        assert result.returncode == 1 and "error:" in result.stderr, result.stderr
        # A plain-text client against the TLS port fails cleanly, and quickly.
        plain = server.uri.replace("grpc+tls://", "grpc://")
        result = tarn_sql(plain, "-c", "SELECT 1")
        assert result.returncode == 1 and "error:" in result.stderr, result.stderr
        with pytest.raises(Exception):
            with tarn.connect(plain) as conn:
                conn.arrow("SELECT 1")
        # The server goes on serving TLS clients.
        with tarn.connect(server.uri, tls_root_certs=text(pki / "ca.pem")) as conn:
            assert one(conn, "SELECT 1") == [1]
        assert server.alive()
    finally:
        server.stop()


def test_tls_with_authentication(lake, pki):
    server = RunningServer(
        lake,
        ["--auth", "--tls-cert", str(pki / "server.pem"), "--tls-key", str(pki / "server.key")],
        env={"TARN_ADMIN_PASSWORD": "admin-password-1"},
    )
    try:
        with tarn.connect(server.uri, user="admin", password="admin-password-1", tls_root_certs=text(pki / "ca.pem")) as conn:
            assert one(conn, "SELECT 1") == [1]
            assert one(conn, "SELECT principal FROM system.runs WHERE sql = 'SELECT 1'") == ["admin"]
    finally:
        server.stop()


def test_mutual_tls_requires_a_client_certificate_from_the_ca(lake, pki):
    server = RunningServer(
        lake,
        ["--tls-cert", str(pki / "server.pem"), "--tls-key", str(pki / "server.key"), "--tls-client-ca", str(pki / "ca.pem")],
    )
    try:
        ca = text(pki / "ca.pem")
        with tarn.connect(server.uri, tls_root_certs=ca, tls_client_cert=text(pki / "alice.pem"), tls_client_key=text(pki / "alice.key")) as conn:
            assert one(conn, "SELECT 5") == [5]
        result = tarn_sql(server.uri, "--tls-ca", str(pki / "ca.pem"), "--tls-client-cert", str(pki / "alice.pem"), "--tls-client-key", str(pki / "alice.key"), "-c", "SELECT 8 AS eight")
        assert result.returncode == 0 and "8" in result.stdout, result.stderr
        # No certificate, or one from another CA: refused.
        with pytest.raises(Exception):
            with tarn.connect(server.uri, tls_root_certs=ca) as conn:
                conn.arrow("SELECT 1")
        with pytest.raises(Exception):
            with tarn.connect(server.uri, tls_root_certs=ca, tls_client_cert=text(pki / "stranger.pem"), tls_client_key=text(pki / "stranger.key")) as conn:
                conn.arrow("SELECT 1")
        result = tarn_sql(server.uri, "--tls-ca", str(pki / "ca.pem"), "-c", "SELECT 1")
        assert result.returncode == 1, result.stdout
        assert server.alive()
    finally:
        server.stop()


def start_fails(lake, args):
    with tempfile.TemporaryDirectory() as state:
        result = subprocess.run(
            [str(tarn_binary()), "serve", "--lake", str(lake), "--bind", "127.0.0.1:0", "--state-dir", state, *args],
            capture_output=True, text=True, timeout=120,
        )
    assert result.returncode != 0, result.stderr
    return result.stderr


def test_bad_tls_files_stop_the_start_and_are_named(lake, pki, tmp_path):
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("this is not a certificate\n")
    missing = tmp_path / "missing.pem"
    cert, key = str(pki / "server.pem"), str(pki / "server.key")
    cases = [
        (["--tls-cert", str(missing), "--tls-key", key], "missing.pem"),
        (["--tls-cert", str(garbage), "--tls-key", key], "garbage.pem"),
        (["--tls-cert", cert, "--tls-key", str(garbage)], "garbage.pem"),
        (["--tls-cert", cert, "--tls-key", str(pki / "alice.key")], "cannot be used together"),
        (["--tls-cert", cert, "--tls-key", key, "--tls-client-ca", str(garbage)], "garbage.pem"),
        (["--tls-cert", cert], "--tls-key"),
        (["--tls-client-ca", str(pki / "ca.pem")], "--tls-cert"),
    ]
    for args, named in cases:
        message = start_fails(lake, args)
        assert named in message and "TLS" in message, (args, message)
