"""Sessions through the real clients: Flight's SetSessionOptions,
GetSessionOptions and CloseSession through pyarrow.flight (with the session
cookie, as the JDBC driver keeps it), and SET values that stay in their own
session for ADBC connections, with and without authentication."""

import struct

import adbc_driver_flightsql.dbapi as flightsql
import pyarrow.flight as flight
import pytest

import tarn
from test_auth import AuthServer, _fields, _read_varint, _string_field, _varint, admin, flight_query, make_user, run

SET_OPTIONS = "SetSessionOptions"
GET_OPTIONS = "GetSessionOptions"
CLOSE = "CloseSession"
INVALID_NAME, INVALID_VALUE, ERROR = 1, 2, 3


class CookieJar(flight.ClientMiddlewareFactory):
    """Keeps the cookies a server sets and sends them back, as the JDBC driver does."""

    def __init__(self):
        self.cookies = {}

    def start_call(self, info):
        return _CookieMiddleware(self)


class _CookieMiddleware(flight.ClientMiddleware):
    def __init__(self, jar):
        self.jar = jar

    def sending_headers(self):
        if not self.jar.cookies:
            return {}
        return {"cookie": "; ".join(f"{k}={v}" for k, v in self.jar.cookies.items())}

    def received_headers(self, headers):
        for value in headers.get("set-cookie", []):
            value = value.decode() if isinstance(value, bytes) else value
            name, _, rest = value.partition("=")
            self.jar.cookies[name.strip()] = rest.split(";")[0].strip()


def text(value):
    return _string_field(1, value)


def int64(value):
    return _varint(3 << 3 | 1) + struct.pack("<q", value)


def boolean(value):
    return _varint(2 << 3) + _varint(int(value))


def action(client, name, body=b"", options=None):
    results = list(client.do_action(flight.Action(name, body), options))
    assert len(results) == 1, results
    return results[0].body.to_pybytes()


def set_options(client, options, call_options=None):
    """SetSessionOptions with {name: encoded SessionOptionValue}; returns {name: error value}."""
    body = b"".join(_string_field(1, _string_field(1, name) + _string_field(2, value)) for name, value in options.items())
    errors = {}
    for entry in _fields(action(client, SET_OPTIONS, body, call_options)).get(1, []):
        entry = _fields(entry)
        error = _fields(entry[2][0]) if 2 in entry else {}
        errors[entry[1][0].decode()] = error.get(1, [0])[0]
    return errors


def get_options(client, call_options=None):
    """GetSessionOptions as {name: value}; Tarn answers strings."""
    options = {}
    for entry in _fields(action(client, GET_OPTIONS, b"", call_options)).get(1, []):
        entry = _fields(entry)
        value = _fields(entry[2][0]) if 2 in entry else {}
        options[entry[1][0].decode()] = value[1][0].decode() if 1 in value else None
    return options


def close_status(client, call_options=None):
    result = action(client, CLOSE, b"", call_options)
    return _read_varint(result, 1)[0] if result else 0


def show(client, key, call_options=None):
    headers = call_options.headers if call_options else []
    return flight_query(client, headers, f"SHOW {key}").column(1).to_pylist()[0]


BATCH = "datafusion.execution.batch_size"


def test_session_options_round_trip_through_pyarrow_flight_and_follow_the_cookie(server):
    jar = CookieJar()
    client = flight.FlightClient(server.uri, middleware=[jar])
    assert set_options(client, {BATCH: int64(123), "datafusion.optimizer.prefer_hash_join": boolean(False), "catalog": text("tarn"), "schema": text("public")}) == {}
    assert "arrow_flight_session_id" in jar.cookies
    options = get_options(client)
    assert options["catalog"] == "tarn" and options["schema"] == "public"
    assert options[BATCH] == "123"
    assert options["datafusion.optimizer.prefer_hash_join"] == "false"
    # What SetSessionOptions set is what this session's statements use.
    assert show(client, BATCH) == "123"
    # Each bad option is reported by name with its kind of error; the rest still apply.
    errors = set_options(client, {
        "no.such.option": text("1"),
        "datafusion.runtime.memory_limit": text("1K"),
        BATCH: int64(0),
        "catalog": text("nope"),
        "datafusion.execution.target_partitions": int64(3),
    })
    assert errors == {"no.such.option": INVALID_NAME, "datafusion.runtime.memory_limit": ERROR, BATCH: INVALID_VALUE, "catalog": INVALID_VALUE}
    assert get_options(client)["datafusion.execution.target_partitions"] == "3"

    # The cookie is the session, on any connection.
    other_connection = flight.FlightClient(server.uri, middleware=[jar])
    assert show(other_connection, BATCH) == "123"
    # Another client without the cookie has a session of its own.
    stranger_jar = CookieJar()
    stranger = flight.FlightClient(server.uri, middleware=[stranger_jar])
    assert set_options(stranger, {BATCH: int64(456)}) == {}
    assert show(stranger, BATCH) == "456"
    assert show(client, BATCH) == "123"
    assert stranger_jar.cookies["arrow_flight_session_id"] != jar.cookies["arrow_flight_session_id"]

    # An unset value goes back to the server's default.
    assert set_options(client, {"datafusion.execution.target_partitions": b""}) == {}
    assert "datafusion.execution.target_partitions" not in get_options(client)

    # CloseSession ends it: CLOSED, then NOT_FOUND for the old cookie, and
    # the client's statements run with the defaults again.
    assert close_status(client) == 1
    # NOT_FOUND, which pyarrow raises as a KeyError.
    with pytest.raises(KeyError) as err:
        get_options(client)
    assert "session has ended" in str(err.value)
    with pytest.raises(KeyError):
        close_status(client)
    assert show(flight.FlightClient(server.uri), BATCH) == "8192"
    assert show(stranger, BATCH) == "456"


def test_sql_set_stays_in_its_adbc_connection(server):
    with flightsql.connect(server.uri) as first, flightsql.connect(server.uri) as second:
        run(first, f"SET {BATCH} = 111")
        run(second, f"SET {BATCH} = 222")
        assert run(first, f"SHOW {BATCH}").column(1).to_pylist() == ["111"]
        assert run(second, f"SHOW {BATCH}").column(1).to_pylist() == ["222"]
        with flightsql.connect(server.uri) as third:
            assert run(third, f"SHOW {BATCH}").column(1).to_pylist() == ["8192"]


def test_authenticated_sessions_are_per_login_and_per_user(lake):
    server = AuthServer(lake)
    try:
        make_user(server, "carol", "carol-password-1")
        make_user(server, "dave", "dave-password-1")
        with tarn.connect(server.uri, user="carol", password="carol-password-1") as carol, \
                tarn.connect(server.uri, user="carol", password="carol-password-1") as carol_again, \
                tarn.connect(server.uri, user="dave", password="dave-password-1") as dave, \
                admin(server) as boss:
            run(carol, f"SET {BATCH} = 333")
            run(dave, f"SET {BATCH} = 444")
            assert run(carol, f"SHOW {BATCH}").column(1).to_pylist() == ["333"]
            assert run(dave, f"SHOW {BATCH}").column(1).to_pylist() == ["444"]
            assert run(carol_again, f"SHOW {BATCH}").column(1).to_pylist() == ["8192"]
            assert run(boss, f"SHOW {BATCH}").column(1).to_pylist() == ["8192"]
            assert run(carol, "SELECT current_user() AS u").column(0).to_pylist() == ["carol"]
            assert run(dave, "SELECT current_user AS u").column(0).to_pylist() == ["dave"]
            # Only admins change the server's defaults.
            with pytest.raises(Exception) as err:
                run(carol, f"ALTER SYSTEM SET {BATCH} = 5")
            assert "ALTER SYSTEM" in str(err.value)

        # pyarrow.flight with a bearer: the session is the login's, whichever connection.
        client = flight.FlightClient(server.uri)
        header = client.authenticate_basic_token("carol", "carol-password-1")
        options = flight.FlightCallOptions(headers=[header])
        assert set_options(client, {BATCH: int64(555)}, options) == {}
        assert show(flight.FlightClient(server.uri), BATCH, options) == "555"
        assert get_options(flight.FlightClient(server.uri), options)[BATCH] == "555"
    finally:
        server.stop()
