"""Authentication through the real clients: ADBC (password and API token),
pyarrow.flight (Basic token, the JDBC driver's call sequence replayed), the
`tarn` package, and the server's refusals. Every server here runs with
`--auth` on its own state folder."""

import base64
import json
import os
import pathlib
import statistics
import subprocess
import tempfile
import threading
import time

import adbc_driver_flightsql.dbapi as flightsql
import pyarrow as pa
import pyarrow.flight as flight
import pytest

import tarn
from conftest import QUERIES, RunningServer, free_port, tarn_binary

ADMIN_PASSWORD = "admin-password-1"


class AuthServer(RunningServer):
    """`tarn serve --auth` whose first admin is `admin` / ADMIN_PASSWORD."""

    def __init__(self, lake, extra_args=(), state_dir=None, config=None, env=None):
        args = ["--auth", *extra_args]
        if config is not None:
            args += ["--config", str(config)]
        super().__init__(lake, args, state_dir=state_dir, env={"TARN_ADMIN_PASSWORD": ADMIN_PASSWORD, **(env or {})})


def admin(server):
    return tarn.connect(server.uri, user="admin", password=ADMIN_PASSWORD)


def run(conn, sql):
    cursor = conn.cursor()
    cursor.execute(sql)
    table = cursor.fetch_arrow_table() if cursor.description else None
    cursor.close()
    return table


def make_user(server, name, password, roles=(), read_all=False):
    """A user (with `roles`); with `read_all`, SELECT on every table of the lake."""
    with admin(server) as conn:
        run(conn, f"CREATE USER {name} WITH PASSWORD '{password}'")
        for role in roles:
            run(conn, f"GRANT {role} TO {name}")
        if read_all:
            run(conn, f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {name}")


def make_token(server, name, user, expires=None):
    with admin(server) as conn:
        sql = f"CREATE TOKEN {name} FOR USER {user}"
        if expires:
            sql += f" EXPIRES IN '{expires}'"
        table = run(conn, sql)
    return table.column("token")[0].as_py()


def flight_client(server):
    return flight.FlightClient(server.uri)


def basic_bearer(server, user, password):
    """The JDBC driver's login: Handshake with Basic, the bearer read from the response headers."""
    client = flight_client(server)
    header = client.authenticate_basic_token(user, password)
    assert header[0] == b"authorization" and header[1].startswith(b"Bearer "), header
    return client, header


def flight_query(client, headers, sql):
    """GetFlightInfo(CommandStatementQuery) then DoGet, with `headers` on each call."""
    options = flight.FlightCallOptions(headers=headers)
    command = _any("type.googleapis.com/arrow.flight.protocol.sql.CommandStatementQuery", _string_field(1, sql))
    info = client.get_flight_info(flight.FlightDescriptor.for_command(command), options)
    return pa.concat_tables([client.do_get(e.ticket, options).read_all() for e in info.endpoints])


def _varint(n):
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _string_field(number, value):
    data = value.encode() if isinstance(value, str) else value
    return _varint(number << 3 | 2) + _varint(len(data)) + data


def _any(type_url, value):
    return _string_field(1, type_url) + _string_field(2, value)


def _fields(message):
    """Length-delimited fields of a protobuf message: {number: [bytes, ...]}."""
    fields, i = {}, 0
    while i < len(message):
        key, i = _read_varint(message, i)
        number, wire = key >> 3, key & 7
        if wire == 2:
            length, i = _read_varint(message, i)
            fields.setdefault(number, []).append(message[i : i + length])
            i += length
        elif wire == 0:
            value, i = _read_varint(message, i)
            fields.setdefault(number, []).append(value)
        else:
            raise AssertionError(f"unexpected wire type {wire}")
    return fields


def _read_varint(data, i):
    shift = result = 0
    while True:
        byte = data[i]
        i += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return result, i


def unauthenticated(call):
    """The message of the UNAUTHENTICATED status `call` fails with (without pyarrow's debug context)."""
    with pytest.raises(flight.FlightUnauthenticatedError) as err:
        call()
    text = str(err.value)
    return text.split("with message: ", 1)[-1].split("gRPC client debug context")[0].strip().rstrip(".")


@pytest.fixture(scope="module")
def auth_server(lake):
    running = AuthServer(lake)
    yield running
    assert running.alive(), "".join(running.log)
    running.stop()


def test_adbc_logs_in_with_a_password_and_with_an_api_token(auth_server, server):
    make_user(auth_server, "alice", "alice-password-1", read_all=True)
    token = make_token(auth_server, "alice_etl", "alice")
    q1 = (QUERIES / "q1.sql").read_text()
    # The same lake served without authentication gives the answer to match.
    with tarn.connect(server.uri) as conn:
        want = run(conn, q1)

    # username/password: the driver does a Basic Handshake and keeps the bearer.
    with flightsql.connect(auth_server.uri, db_kwargs={"username": "alice", "password": "alice-password-1"}, autocommit=True) as conn:
        got = run(conn, q1)
        assert run(conn, "SELECT 1 AS one").column("one").to_pylist() == [1]
    assert want.num_rows == 4
    assert got.equals(want), (got, want)

    # An API token, sent as-is on every call (no Handshake).
    header = {"adbc.flight.sql.authorization_header": f"Bearer {token}"}
    with flightsql.connect(auth_server.uri, db_kwargs=header, autocommit=True) as conn:
        assert run(conn, "SELECT count(*) AS n FROM nation").column("n").to_pylist() == [25]
    # The package's own forms.
    with tarn.connect(auth_server.uri, token=token) as conn:
        assert run(conn, "SELECT 2 AS two").column("two").to_pylist() == [2]
    with tarn.connect(auth_server.uri, user="alice", password="alice-password-1") as conn:
        runs = run(conn, "SELECT 3 AS three")
        assert runs.column("three").to_pylist() == [3]
    # Runs are recorded under the real user.
    with admin(auth_server) as conn:
        principals = run(conn, "SELECT principal FROM system.runs WHERE sql = 'SELECT 3 AS three'").column(0).to_pylist()
    assert principals == ["alice"]


def test_pyarrow_flight_basic_token_and_the_jdbc_call_sequence(auth_server):
    make_user(auth_server, "jdbc", "jdbc-password-1", read_all=True)
    client, header = basic_bearer(auth_server, "jdbc", "jdbc-password-1")
    headers = [header]
    assert flight_query(client, headers, "SELECT 40 + 2 AS answer").column(0).to_pylist() == [42]

    # The JDBC driver's statement sequence, each call on a NEW connection with the bearer.
    options = flight.FlightCallOptions(headers=headers)
    fresh = flight_client(auth_server)
    create = _any(
        "type.googleapis.com/arrow.flight.protocol.sql.ActionCreatePreparedStatementRequest",
        _string_field(1, "SELECT n_name FROM nation WHERE n_nationkey = 7"),
    )
    results = list(fresh.do_action(flight.Action("CreatePreparedStatement", create), options))
    prepared = _fields(_fields(results[0].body.to_pybytes())[2][0])
    handle = prepared[1][0]
    command = _any("type.googleapis.com/arrow.flight.protocol.sql.CommandPreparedStatementQuery", _string_field(1, handle))
    descriptor = flight.FlightDescriptor.for_command(command)
    writer, reader = fresh.do_put(descriptor, pa.schema([]), options)
    writer.done_writing()
    reader.read()
    writer.close()
    info = fresh.get_flight_info(descriptor, options)
    rows = pa.concat_tables([fresh.do_get(e.ticket, options).read_all() for e in info.endpoints])
    assert rows.column(0).to_pylist() == ["GERMANY"]
    close = _any("type.googleapis.com/arrow.flight.protocol.sql.ActionClosePreparedStatementRequest", _string_field(1, handle))
    list(fresh.do_action(flight.Action("ClosePreparedStatement", close), options))

    # Without the bearer, the same calls are refused.
    message = unauthenticated(lambda: fresh.get_flight_info(descriptor))
    assert "requires authentication" in message

    # The JDBC driver's token= path: a Handshake carrying a Bearer header is answered.
    token = make_token(auth_server, "jdbc_token", "jdbc")
    for bearer in [header[1], f"Bearer {token}".encode()]:
        handshake = flight_client(auth_server)
        handshake.authenticate(_EmptyHandshake(), flight.FlightCallOptions(headers=[(b"authorization", bearer)]))
        got = flight_query(handshake, [(b"authorization", bearer)], "SELECT 'ok' AS s")
        assert got.column(0).to_pylist() == ["ok"]
    bad = flight_client(auth_server)
    unauthenticated(lambda: bad.authenticate(_EmptyHandshake(), flight.FlightCallOptions(headers=[(b"authorization", b"Bearer tarn_t_forged")])))

    # Basic on an ordinary call works too (some clients send it every time).
    basic = b"Basic " + base64.b64encode(b"jdbc:jdbc-password-1")
    plain = flight_client(auth_server)
    for _ in range(3):
        assert flight_query(plain, [(b"authorization", basic)], "SELECT 5 AS five").column(0).to_pylist() == [5]


class _EmptyHandshake(flight.ClientAuthHandler):
    """A Handshake with no payload: the credential travels in the call's headers."""

    def authenticate(self, outgoing, incoming):
        outgoing.write(b"")
        incoming.read()

    def get_token(self):
        return b""


def test_every_bad_credential_is_unauthenticated_and_says_what_to_do(lake, tmp_path):
    config = tmp_path / "auth.toml"
    config.write_text('[auth]\nsession_idle_timeout = "2s"\n')
    server = AuthServer(lake, config=config)
    try:
        make_user(server, "bob", "bob-password-1")
        make_user(server, "carol", "carol-password-1")
        revoked = make_token(server, "bob_revoked", "bob")
        carols = make_token(server, "carol_token", "carol")
        client = flight_client(server)
        messages = []
        # No credentials.
        messages.append(unauthenticated(lambda: flight_query(client, [], "SELECT 1")))
        # A wrong password, and an unknown user: the same message.
        messages.append(unauthenticated(lambda: client.authenticate_basic_token("bob", "wrong-password")))
        messages.append(unauthenticated(lambda: client.authenticate_basic_token("nobody", "wrong-password")))
        # An expired session token (idle longer than 2 s).
        _, header = basic_bearer(server, "bob", "bob-password-1")
        assert flight_query(client, [header], "SELECT 1").num_rows == 1
        time.sleep(2.5)
        messages.append(unauthenticated(lambda: flight_query(client, [header], "SELECT 1")))
        # A revoked API token.
        bearer = [(b"authorization", f"Bearer {revoked}".encode())]
        assert flight_query(client, bearer, "SELECT 1").num_rows == 1
        with admin(server) as conn:
            run(conn, "DROP TOKEN bob_revoked")
        messages.append(unauthenticated(lambda: flight_query(client, bearer, "SELECT 1")))
        # The token of a dropped user, and that user's live session.
        carol_bearer = [(b"authorization", f"Bearer {carols}".encode())]
        _, carol_session = basic_bearer(server, "carol", "carol-password-1")
        assert flight_query(client, carol_bearer, "SELECT 1").num_rows == 1
        with admin(server) as conn:
            run(conn, "DROP USER carol")
        messages.append(unauthenticated(lambda: flight_query(client, carol_bearer, "SELECT 1")))
        messages.append(unauthenticated(lambda: flight_query(client, [carol_session], "SELECT 1")))
        rejected = set(messages[1:])
        assert len(rejected) == 1, rejected
        for message in rejected:
            assert "log in again" in message and "password" in message and "token" in message
            # Never which part was wrong, nor whose.
            for word in ["bob", "carol", "nobody", "expired", "revoked", "unknown", "wrong"]:
                assert word not in message.lower(), message
        assert "requires authentication" in messages[0]
        # The server goes on serving, and every refusal is in the audit log.
        with admin(server) as conn:
            refused = run(conn, "SELECT method, principal, detail FROM system.audit WHERE code = 'UNAUTHENTICATED' ORDER BY at").to_pylist()
        assert len(refused) >= len(messages), refused
        assert all(row["principal"] is None for row in refused), refused
        details = [row["detail"] or "" for row in refused]
        assert any("login failed for user 'bob'" in d for d in details), details
        assert any("login failed for user 'nobody'" in d for d in details), details
        assert sum(row["method"] == "GetFlightInfo" for row in refused) >= 5, refused
    finally:
        server.stop()


def test_failed_logins_are_slowed_per_user_and_peer_without_slowing_others(lake, tmp_path):
    config = tmp_path / "auth.toml"
    config.write_text('[auth]\nfailed_login_delay = "20ms"\nmax_failed_login_delay = "60ms"\n')
    server = AuthServer(lake, config=config)
    try:
        make_user(server, "dave", "dave-password-1")
        make_user(server, "erin", "erin-password-1")
        client = flight_client(server)

        started = time.monotonic()
        for _ in range(100):
            client.authenticate_basic_token("dave", "dave-password-1")
        right = time.monotonic() - started

        # Erin keeps querying with her session while dave's password is guessed.
        erin_client, erin = basic_bearer(server, "erin", "erin-password-1")
        latencies, stop = [], threading.Event()

        def query_as_erin():
            while not stop.is_set():
                begin = time.monotonic()
                flight_query(erin_client, [erin], "SELECT 1")
                latencies.append(time.monotonic() - begin)

        quiet = []
        for _ in range(20):
            begin = time.monotonic()
            flight_query(erin_client, [erin], "SELECT 1")
            quiet.append(time.monotonic() - begin)
        erin_thread = threading.Thread(target=query_as_erin)
        erin_thread.start()
        started = time.monotonic()
        for _ in range(100):
            with pytest.raises(flight.FlightUnauthenticatedError):
                client.authenticate_basic_token("dave", "not-the-password")
        wrong = time.monotonic() - started
        stop.set()
        erin_thread.join()

        # The waits grow 20 ms per failure up to 60 ms: at least 5.8 s over 100 tries.
        waited = sum(min(0.02 * k, 0.06) for k in range(100))
        assert wrong > right + 0.9 * waited, (wrong, right, waited)
        # Erin was not slowed down meanwhile (the waits block nobody else).
        assert len(latencies) >= 20
        assert statistics.median(latencies) < max(10 * statistics.median(quiet), 0.05), (statistics.median(quiet), statistics.median(latencies))
        # Dave still logs in with the right password (after the wait).
        client.authenticate_basic_token("dave", "dave-password-1")
    finally:
        server.stop()


def test_identities_need_an_admin_and_survive_a_restart(lake, tmp_path):
    state = tmp_path / "state"
    audit_file = tmp_path / "audit.jsonl"
    server = AuthServer(lake, ["--audit-file", str(audit_file)], state_dir=state)
    try:
        make_user(server, "frank", "frank-password-1")
        with admin(server) as conn:
            run(conn, "CREATE ROLE analysts")
            run(conn, "GRANT analysts TO frank")
        token = make_token(server, "frank_token", "frank", expires="30 days")
        with tarn.connect(server.uri, user="frank", password="frank-password-1") as conn:
            for sql in ["CREATE USER x WITH PASSWORD 'xxxxxxxxxx'", "SELECT * FROM system.users", "CREATE TOKEN t", "GRANT admin TO frank", "ALTER SYSTEM SET datafusion.execution.batch_size = 100"]:
                with pytest.raises(Exception) as err:
                    run(conn, sql)
                assert "PERMISSION_DENIED" in str(err.value) or "permission denied" in str(err.value).lower(), sql
            # A user may change their own password.
            run(conn, "ALTER USER frank WITH PASSWORD 'frank-password-2'")
        with admin(server) as conn:
            with pytest.raises(Exception):
                run(conn, "CREATE USER shorty WITH PASSWORD 'frank-p'")
    finally:
        server.stop()
    # The audit file has every call as a JSON line: who, what, the outcome; no secret.
    records = [json.loads(line) for line in audit_file.read_text().splitlines()]
    by_sql = {r["sql"]: r for r in records if r["sql"]}
    assert by_sql["CREATE USER frank WITH PASSWORD '***'"]["principal"] == "admin"
    assert by_sql["ALTER USER frank WITH PASSWORD '***'"]["principal"] == "frank"
    assert by_sql["SELECT * FROM system.users"]["code"] == "PERMISSION_DENIED"
    assert any(r["method"] == "Handshake" and r["principal"] == "frank" and r["code"] == "OK" for r in records)
    assert any(r["method"] == "DoGet" and r["rows"] == 1 and r["principal"] == "admin" for r in records)
    audit_text = audit_file.read_text()
    for secret in ["frank-password", "frank-p'", ADMIN_PASSWORD, "tarn_t_"]:
        assert secret not in audit_text, secret
    server = AuthServer(lake, state_dir=state, env={"TARN_ADMIN_PASSWORD": "ignored-now-1"})
    try:
        with tarn.connect(server.uri, user="frank", password="frank-password-2") as conn:
            assert run(conn, "SELECT 1 AS one").column(0).to_pylist() == [1]
        with tarn.connect(server.uri, token=token) as conn:
            assert run(conn, "SELECT 1 AS one").column(0).to_pylist() == [1]
        with admin(server) as conn:
            users = run(conn, "SELECT user_name, roles FROM system.users ORDER BY user_name").to_pylist()
            tokens = run(conn, "SELECT token_name, user_name, state FROM system.tokens").to_pylist()
            every_text = str(run(conn, "SELECT * FROM system.users")) + str(run(conn, "SELECT * FROM system.tokens")) + str(run(conn, "SELECT sql FROM system.runs"))
            every_text += str(run(conn, "SELECT * FROM system.audit").to_pylist())
            # The audit log of the first run is still there after the restart.
            kept = run(conn, "SELECT count(*) AS n FROM system.audit WHERE sql = 'CREATE ROLE analysts' AND method = 'GetFlightInfo'").column(0).to_pylist()
            assert kept == [1]
        assert users == [{"user_name": "admin", "roles": "admin"}, {"user_name": "frank", "roles": "analysts"}]
        assert tokens == [{"token_name": "frank_token", "user_name": "frank", "state": "live"}]
        for secret in ["frank-password", token, ADMIN_PASSWORD, "$argon2"]:
            assert secret not in every_text
    finally:
        server.stop()
    catalog = (state / "catalog.sqlite").read_bytes()
    for secret in [b"frank-password-1", b"frank-password-2", token.encode(), ADMIN_PASSWORD.encode()]:
        assert secret not in catalog


def start_fails(args):
    env = {k: v for k, v in os.environ.items() if k not in ("TARN_ADMIN_PASSWORD", "TARN_AUTH")}
    with tempfile.TemporaryDirectory() as state:
        result = subprocess.run(
            [str(tarn_binary()), "serve", "--state-dir", state, *args],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
        )
    assert result.returncode != 0, result.stderr
    return result.stderr


def test_secure_by_default_and_the_first_admin(lake, tmp_path):
    port = free_port()
    # No authentication on a network address: refused, saying how to enable it.
    message = start_fails(["--lake", str(lake), "--bind", f"0.0.0.0:{port}"])
    assert "without authentication" in message and "--auth" in message
    # Authentication on but no way to make the first admin: refused, saying how.
    message = start_fails(["--lake", str(lake), "--bind", "127.0.0.1:0", "--auth"])
    assert "TARN_ADMIN_PASSWORD" in message and "--admin-password-file" in message
    # A password file that is not there is named.
    message = start_fails(["--lake", str(lake), "--bind", "127.0.0.1:0", "--auth", "--admin-password-file", str(tmp_path / "missing.pw")])
    assert "missing.pw" in message
    # The password from a file, authentication from the config file.
    secret = tmp_path / "admin.pw"
    secret.write_text("from-a-file-1\n")
    config = tmp_path / "auth.toml"
    config.write_text(f'[auth]\nenabled = true\nadmin_password_file = "{secret}"\n')
    server = RunningServer(lake, ["--config", str(config)], bind=f"0.0.0.0:{port}")
    try:
        uri = server.uri.replace("0.0.0.0", "127.0.0.1")
        with tarn.connect(uri, user="admin", password="from-a-file-1") as conn:
            assert run(conn, "SELECT 1 AS one").column(0).to_pylist() == [1]
        with pytest.raises(Exception):
            with tarn.connect(uri) as conn:
                run(conn, "SELECT 1")
    finally:
        server.stop()
    # The flag and the environment variable.
    server = RunningServer(lake, ["--auth", "--admin-password-file", str(secret)])
    try:
        with tarn.connect(server.uri, user="admin", password="from-a-file-1") as conn:
            assert run(conn, "SELECT 1 AS one").column(0).to_pylist() == [1]
    finally:
        server.stop()
    server = RunningServer(lake, [], env={"TARN_AUTH": "true", "TARN_ADMIN_PASSWORD": "from-the-env-1"})
    try:
        with tarn.connect(server.uri, user="admin", password="from-the-env-1") as conn:
            assert run(conn, "SELECT 1 AS one").column(0).to_pylist() == [1]
    finally:
        server.stop()


def test_tarn_sql_asks_for_the_password_without_echo(auth_server, tmp_path):
    make_user(auth_server, "gina", "gina-password-1")
    session = f"tarn-auth-{os.getpid()}"
    out = tmp_path / "out.txt"
    command = f"{tarn_binary()} sql --host {auth_server.uri} --user gina -c 'SELECT 6 * 7 AS answer' > {out} 2>&1; echo done >> {out}"
    env = {k: v for k, v in os.environ.items() if k not in ("TARN_PASSWORD", "TARN_TOKEN", "TARN_USER")}
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "200", "-y", "50", command], check=True, env=env)
    try:
        deadline = time.monotonic() + 30
        screen = ""
        while "Password for gina" not in screen and time.monotonic() < deadline:
            time.sleep(0.2)
            screen = subprocess.run(["tmux", "capture-pane", "-p", "-t", session], capture_output=True, text=True).stdout
        assert "Password for gina" in screen, screen
        subprocess.run(["tmux", "send-keys", "-t", session, "gina-password-1", "Enter"], check=True)
        deadline = time.monotonic() + 30
        while (not out.exists() or "done" not in out.read_text()) and time.monotonic() < deadline:
            time.sleep(0.2)
        text = out.read_text()
        assert "42" in text and "answer" in text, text
        assert "gina-password-1" not in text
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
    # A wrong password in TARN_PASSWORD: a clear error, exit code 1.
    result = subprocess.run(
        [str(tarn_binary()), "sql", "--host", auth_server.uri, "--user", "gina", "-c", "SELECT 1"],
        capture_output=True,
        text=True,
        env={**env, "TARN_PASSWORD": "wrong-password"},
        timeout=60,
    )
    assert result.returncode == 1 and "log in again" in result.stderr, result.stderr
    # A token from TARN_TOKEN.
    token = make_token(auth_server, "gina_cli", "gina")
    result = subprocess.run(
        [str(tarn_binary()), "sql", "--host", auth_server.uri, "-c", "SELECT 7 AS seven", "--format", "csv"],
        capture_output=True,
        text=True,
        env={**env, "TARN_TOKEN": token},
        timeout=60,
    )
    assert result.returncode == 0 and "7" in result.stdout, result.stderr


def test_operators_manage_users_and_tokens_on_the_state_folder(lake, tmp_path):
    state = tmp_path / "state"
    env = {k: v for k, v in os.environ.items() if k not in ("TARN_ADMIN_PASSWORD", "TARN_AUTH", "TARN_TOKEN")}

    def tarn_cli(*args, password=None):
        extra = {"TARN_PASSWORD": password} if password else {}
        return subprocess.run([str(tarn_binary()), *args, "--state-dir", str(state)], capture_output=True, text=True, env={**env, **extra}, timeout=120)

    made = tarn_cli("user", "create", "ops", "--admin", password="ops-password-1")
    assert made.returncode == 0, made.stderr
    assert tarn_cli("user", "create", "ops", password="ops-password-1").returncode == 1
    short = tarn_cli("user", "create", "tiny", password="short")
    assert short.returncode == 1 and "at least 8" in short.stderr
    token = tarn_cli("token", "create", "ops_ci", "--user", "ops", "--expires-in", "7d")
    assert token.returncode == 0, token.stderr
    secret = token.stdout.strip()
    assert secret.startswith("tarn_t_")
    listed = tarn_cli("token", "list")
    assert "ops_ci" in listed.stdout and secret not in listed.stdout
    assert "ops" in tarn_cli("user", "list").stdout

    # A server with users needs no first-admin password.
    server = RunningServer(lake, ["--auth"], state_dir=state, env={"TARN_ADMIN_PASSWORD": ""})
    try:
        with tarn.connect(server.uri, user="ops", password="ops-password-1") as conn:
            assert run(conn, "SELECT 1 AS one").column(0).to_pylist() == [1]
        with tarn.connect(server.uri, token=secret) as conn:
            assert run(conn, "SELECT user_name FROM system.users").column(0).to_pylist() == ["ops"]
        # While it runs, the state folder is its own: the CLI says what to do instead.
        busy = tarn_cli("user", "list")
        assert busy.returncode == 1 and "CREATE USER" in busy.stderr, busy.stderr
    finally:
        server.stop()
    assert tarn_cli("token", "revoke", "ops_ci").returncode == 0
    assert tarn_cli("user", "password", "ops", password="ops-password-2").returncode == 0
    server = RunningServer(lake, ["--auth"], state_dir=state)
    try:
        unauthenticated(lambda: flight_query(flight_client(server), [(b"authorization", f"Bearer {secret}".encode())], "SELECT 1"))
        with tarn.connect(server.uri, user="ops", password="ops-password-2") as conn:
            assert run(conn, "SELECT 1 AS one").column(0).to_pylist() == [1]
    finally:
        server.stop()


def test_prepared_handles_and_result_tickets_belong_to_their_user(auth_server):
    make_user(auth_server, "owner1", "owner1-password")
    make_user(auth_server, "other1", "other1-password")
    client, mine = basic_bearer(auth_server, "owner1", "owner1-password")
    _, theirs = basic_bearer(auth_server, "other1", "other1-password")
    own, other = flight.FlightCallOptions(headers=[mine]), flight.FlightCallOptions(headers=[theirs])

    # A result ticket: another user's DoGet is NOT_FOUND, and the owner still fetches it.
    command = _any("type.googleapis.com/arrow.flight.protocol.sql.CommandStatementQuery", _string_field(1, "SELECT 99 AS n"))
    info = client.get_flight_info(flight.FlightDescriptor.for_command(command), own)
    ticket = info.endpoints[0].ticket
    with pytest.raises(pa.ArrowKeyError) as err:  # NOT_FOUND
        client.do_get(ticket, other).read_all()
    assert "no pending result" in str(err.value)
    assert client.do_get(ticket, own).read_all().column(0).to_pylist() == [99]

    # A prepared statement handle: every use by another user is NOT_FOUND.
    create = _any(
        "type.googleapis.com/arrow.flight.protocol.sql.ActionCreatePreparedStatementRequest",
        _string_field(1, "SELECT 7 AS seven"),
    )
    result = list(client.do_action(flight.Action("CreatePreparedStatement", create), own))[0]
    handle = _fields(_fields(result.body.to_pybytes())[2][0])[1][0]
    query = _any("type.googleapis.com/arrow.flight.protocol.sql.CommandPreparedStatementQuery", _string_field(1, handle))
    descriptor = flight.FlightDescriptor.for_command(query)
    close = _any("type.googleapis.com/arrow.flight.protocol.sql.ActionClosePreparedStatementRequest", _string_field(1, handle))
    for attempt in [
        lambda: client.get_flight_info(descriptor, other),
        lambda: client.get_schema(descriptor, other),
        lambda: list(client.do_action(flight.Action("ClosePreparedStatement", close), other)),
    ]:
        with pytest.raises(pa.ArrowKeyError) as err:  # NOT_FOUND
            attempt()
        assert "no prepared statement with this handle" in str(err.value)
    # Still the owner's, untouched.
    info = client.get_flight_info(descriptor, own)
    assert client.do_get(info.endpoints[0].ticket, own).read_all().column(0).to_pylist() == [7]
    list(client.do_action(flight.Action("ClosePreparedStatement", close), own))
