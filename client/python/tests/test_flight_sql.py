"""Raw Flight SQL over pyarrow.flight: the calls BI drivers make, byte for byte.

The Flight SQL protobuf messages come from flightsql-dbapi's generated module.
"""

import pyarrow as pa
import pyarrow.flight as flight
import pytest
from google.protobuf import any_pb2

import flightsql.flightsql_pb2 as fsql
from conftest import RunningServer


def packed(message) -> bytes:
    wrapper = any_pb2.Any()
    wrapper.Pack(message)
    return wrapper.SerializeToString()


def unpacked(data: bytes, message_type):
    wrapper = any_pb2.Any()
    wrapper.ParseFromString(data)
    message = message_type()
    assert wrapper.Unpack(message), f"expected {message_type.__name__}, got {wrapper.type_url}"
    return message


def descriptor(message) -> flight.FlightDescriptor:
    return flight.FlightDescriptor.for_command(packed(message))


@pytest.fixture
def client(uri):
    c = flight.FlightClient(uri.replace("grpc://", "grpc+tcp://"))
    yield c
    c.close()


def fetch(client, info: flight.FlightInfo) -> pa.Table:
    tables = [client.do_get(endpoint.ticket).read_all() for endpoint in info.endpoints]
    return pa.concat_tables(tables) if len(tables) > 1 else tables[0]


def test_statement_query_schema_matches_stream(client):
    info = client.get_flight_info(descriptor(fsql.CommandStatementQuery(query="SELECT * FROM orders LIMIT 5")))
    assert all(not e.locations for e in info.endpoints), "a single server advertises no location"
    table = fetch(client, info)
    assert table.schema == info.schema
    assert table.num_rows == 5


def test_zero_rows_still_have_a_schema(client):
    info = client.get_flight_info(descriptor(fsql.CommandStatementQuery(query="SELECT o_orderkey, o_comment FROM orders WHERE false")))
    table = fetch(client, info)
    assert table.num_rows == 0
    assert table.schema.names == ["o_orderkey", "o_comment"]
    assert table.schema == info.schema


def test_a_client_that_says_it_reads_view_types_gets_them(client):
    """pyarrow reads string views: with the header it gets them; without it,
    on the same connection, plain strings with the same values."""
    sql = "SELECT n_nationkey, n_name FROM nation ORDER BY n_nationkey"
    views = flight.FlightCallOptions(headers=[(b"x-tarn-view-types", b"true")])
    info = client.get_flight_info(descriptor(fsql.CommandStatementQuery(query=sql)), views)
    assert info.schema.field("n_name").type == pa.string_view()
    viewed = pa.concat_tables([client.do_get(e.ticket, views).read_all() for e in info.endpoints])
    assert viewed.schema == info.schema
    plain_info = client.get_flight_info(descriptor(fsql.CommandStatementQuery(query=sql)))
    assert plain_info.schema.field("n_name").type == pa.string()
    plain = fetch(client, plain_info)
    assert plain.schema.field("n_name").type == pa.string()
    assert viewed.column("n_name").cast(pa.string()).to_pylist() == plain.column("n_name").to_pylist()
    assert plain.num_rows == 25


def test_timestamps_and_nested_types_round_trip(client):
    info = client.get_flight_info(descriptor(fsql.CommandStatementQuery(query="SELECT * FROM awkward_types ORDER BY id")))
    table = fetch(client, info)
    assert table.schema == info.schema
    assert table.schema.field("ts_naive").type == pa.timestamp("us")
    assert table.schema.field("ts_utc").type == pa.timestamp("ns", tz="UTC")
    assert table.schema.field("ts_paris").type == pa.timestamp("us", tz="Europe/Paris")
    assert table.schema.field("point").type == pa.struct([("x", pa.int32()), ("label", pa.utf8())])
    assert len(table.column("note")[0].as_py()) == 10_000


def test_sql_info_is_decodable_and_complete(client):
    info = client.get_flight_info(descriptor(fsql.CommandGetSqlInfo()))
    table = fetch(client, info)
    answers = dict(zip(table.column("info_name").to_pylist(), table.column("value").to_pylist()))
    assert answers[fsql.FLIGHT_SQL_SERVER_NAME] == "Tarn"
    assert answers[fsql.FLIGHT_SQL_SERVER_READ_ONLY] is False
    assert answers[fsql.SQL_IDENTIFIER_QUOTE_CHAR] == '"'
    assert answers[fsql.SQL_TRANSACTIONS_SUPPORTED] is False
    assert "TABLES" in answers[fsql.SQL_KEYWORDS]
    # Every key the JDBC driver's DatabaseMetaData reads has an answer.
    jdbc_keys = [
        fsql.FLIGHT_SQL_SERVER_VERSION, fsql.FLIGHT_SQL_SERVER_ARROW_VERSION, fsql.SQL_DDL_CATALOG,
        fsql.SQL_DDL_SCHEMA, fsql.SQL_DDL_TABLE, fsql.SQL_IDENTIFIER_CASE, fsql.SQL_QUOTED_IDENTIFIER_CASE,
        fsql.SQL_NULL_ORDERING, fsql.SQL_NUMERIC_FUNCTIONS, fsql.SQL_STRING_FUNCTIONS, fsql.SQL_SYSTEM_FUNCTIONS,
        fsql.SQL_DATETIME_FUNCTIONS, fsql.SQL_SEARCH_STRING_ESCAPE, fsql.SQL_SUPPORTS_CONVERT,
        fsql.SQL_SUPPORTED_GROUP_BY, fsql.SQL_OUTER_JOINS_SUPPORT_LEVEL, fsql.SQL_SUPPORTED_SUBQUERIES,
        fsql.SQL_SUPPORTED_UNIONS, fsql.SQL_MAX_COLUMNS_IN_SELECT, fsql.SQL_DEFAULT_TRANSACTION_ISOLATION,
        fsql.SQL_SUPPORTED_RESULT_SET_TYPES, fsql.SQL_SCHEMA_TERM, fsql.SQL_CATALOG_TERM,
    ]
    missing = [k for k in jdbc_keys if k not in answers]
    assert not missing, missing
    # Asking for some keys returns exactly those.
    some = fetch(client, client.get_flight_info(descriptor(fsql.CommandGetSqlInfo(info=[fsql.FLIGHT_SQL_SERVER_NAME]))))
    assert some.column("info_name").to_pylist() == [fsql.FLIGHT_SQL_SERVER_NAME]


def test_xdbc_type_info_and_filter(client):
    everything = fetch(client, client.get_flight_info(descriptor(fsql.CommandGetXdbcTypeInfo())))
    names = everything.column("type_name").to_pylist()
    for expected in ["BIGINT", "VARCHAR", "DECIMAL", "DATE", "TIMESTAMP", "BOOLEAN"]:
        assert expected in names
    varchar = fetch(client, client.get_flight_info(descriptor(fsql.CommandGetXdbcTypeInfo(data_type=12))))
    assert varchar.column("type_name").to_pylist() == ["VARCHAR"]


def test_get_tables_with_schema_and_types(client):
    request = fsql.CommandGetTables(include_schema=True, table_types=["TABLE"], table_name_filter_pattern="line%")
    table = fetch(client, client.get_flight_info(descriptor(request)))
    assert table.column("table_name").to_pylist() == ["lineitem"]
    schema = pa.ipc.read_schema(pa.py_buffer(table.column("table_schema")[0].as_py()))
    assert schema.field("l_comment").type == pa.utf8()
    table_types = fetch(client, client.get_flight_info(descriptor(fsql.CommandGetTableTypes())))
    assert {"TABLE", "VIEW"} <= set(table_types.column("table_type").to_pylist())
    for command in [fsql.CommandGetPrimaryKeys(table="nation"), fsql.CommandGetExportedKeys(table="nation"),
                    fsql.CommandGetImportedKeys(table="nation"),
                    fsql.CommandGetCrossReference(pk_table="nation", fk_table="region")]:
        keys = fetch(client, client.get_flight_info(descriptor(command)))
        assert keys.num_rows == 0 and keys.num_columns > 0


def create_prepared(client, sql):
    results = list(client.do_action(flight.Action("CreatePreparedStatement", packed(fsql.ActionCreatePreparedStatementRequest(query=sql)))))
    assert len(results) == 1
    return unpacked(results[0].body.to_pybytes(), fsql.ActionCreatePreparedStatementResult)


def bind(client, handle: bytes, batch: pa.RecordBatch) -> bytes:
    writer, reader = client.do_put(descriptor(fsql.CommandPreparedStatementQuery(prepared_statement_handle=handle)), batch.schema)
    if batch.num_rows:
        writer.write_batch(batch)
    writer.done_writing()
    metadata = reader.read()
    writer.close()
    # DoPutPreparedStatementResult: field 1 is the (possibly new) handle.
    assert metadata is not None and metadata.to_pybytes()[:1] == b"\x0a"
    return handle


def test_prepared_statement_the_jdbc_way(client):
    prepared = create_prepared(client, "SELECT n_name, n_regionkey FROM nation WHERE n_regionkey = ? ORDER BY n_nationkey")
    dataset_schema = pa.ipc.read_schema(pa.py_buffer(prepared.dataset_schema))
    parameter_schema = pa.ipc.read_schema(pa.py_buffer(prepared.parameter_schema))
    assert dataset_schema.names == ["n_name", "n_regionkey"]
    assert len(parameter_schema) == 1
    handle = bind(client, prepared.prepared_statement_handle, pa.record_batch([pa.array([3], pa.int64())], names=["p"]))
    info = client.get_flight_info(descriptor(fsql.CommandPreparedStatementQuery(prepared_statement_handle=handle)))
    table = fetch(client, info)
    assert table.schema == info.schema
    assert table.num_rows == 5 and set(table.column("n_regionkey").to_pylist()) == {3}
    client.do_action(flight.Action("ClosePreparedStatement", packed(fsql.ActionClosePreparedStatementRequest(prepared_statement_handle=handle))))
    with pytest.raises(pa.ArrowException, match="prepared statement"):
        client.get_flight_info(descriptor(fsql.CommandPreparedStatementQuery(prepared_statement_handle=handle)))


def test_parameterless_prepared_statement_with_an_empty_bind(client):
    prepared = create_prepared(client, "SELECT count(*) AS n FROM region")
    bind(client, prepared.prepared_statement_handle, pa.record_batch([], schema=pa.schema([])))
    info = client.get_flight_info(descriptor(fsql.CommandPreparedStatementQuery(prepared_statement_handle=prepared.prepared_statement_handle)))
    assert fetch(client, info).column("n").to_pylist() == [5]


def test_prepared_update_executes(client):
    prepared = create_prepared(client, "CREATE VIEW jdbc_view AS SELECT r_name FROM region")
    writer, reader = client.do_put(
        descriptor(fsql.CommandPreparedStatementUpdate(prepared_statement_handle=prepared.prepared_statement_handle)), pa.schema([])
    )
    writer.done_writing()
    result = fsql.DoPutUpdateResult()
    result.ParseFromString(reader.read().to_pybytes())
    writer.close()
    assert result.record_count == 0
    info = client.get_flight_info(descriptor(fsql.CommandStatementQuery(query="SELECT count(*) AS n FROM jdbc_view")))
    assert fetch(client, info).column("n").to_pylist() == [5]


@pytest.fixture
def own_client(tmp_path):
    """A client of a server on a lake of its own: tests that write never
    change the shared demo lake other tests list."""
    folder = tmp_path / "lake"
    folder.mkdir()
    server = RunningServer(folder)
    c = flight.FlightClient(server.uri.replace("grpc://", "grpc+tcp://"))
    yield c
    c.close()
    server.stop()


def test_statement_update_reports_rows(own_client):
    client = own_client

    def update(sql):
        writer, reader = client.do_put(descriptor(fsql.CommandStatementUpdate(query=sql)), pa.schema([]))
        writer.done_writing()
        result = fsql.DoPutUpdateResult()
        result.ParseFromString(reader.read().to_pybytes())
        writer.close()
        return result.record_count

    assert update("CREATE TABLE counted (x BIGINT)") == 0
    assert update("INSERT INTO counted VALUES (1), (2), (3)") == 3


def test_bad_requests_get_clear_errors_and_the_server_survives(client, server):
    with pytest.raises(pa.ArrowException, match="malformed ticket"):
        client.do_get(flight.Ticket(b"not a ticket")).read_all()
    with pytest.raises(pa.ArrowException, match="prepared statement"):
        bind(client, b"no such handle", pa.record_batch([pa.array([1])], names=["p"]))
    with pytest.raises(pa.ArrowException, match="malformed FlightDescriptor"):
        client.get_flight_info(flight.FlightDescriptor.for_command(b"\xff\xff\xff"))
    with pytest.raises(pa.ArrowException, match="syntax error"):
        client.get_flight_info(descriptor(fsql.CommandStatementQuery(query="SELEC 1")))
    assert server.alive()
    info = client.get_flight_info(descriptor(fsql.CommandStatementQuery(query="SELECT 1 AS one")))
    assert fetch(client, info).column("one").to_pylist() == [1]


def failure(client, sql: str) -> str:
    """The error text pyarrow.flight gives for `sql`, which names the gRPC code."""
    with pytest.raises(pa.ArrowException) as raised:
        info = client.get_flight_info(descriptor(fsql.CommandStatementQuery(query=sql)))
        fetch(client, info)
    return str(raised.value)


@pytest.mark.parametrize(
    "sql, code",
    [
        ("SELECT 1/0", "out-of-range error"),
        ("SELECT n_nationkey / (n_regionkey - n_regionkey) FROM nation", "out-of-range error"),
        ("SELECT CAST('abc' AS INT)", "invalid argument error"),
        ("SELECT CAST(n_name AS INT) FROM nation", "invalid argument error"),
        ("SELECT regexp_like('a', '(')", "invalid argument error"),
        ("SELECT regexp_like(n_name, '(') FROM nation", "invalid argument error"),
    ],
)
def test_errors_carry_the_code_of_their_cause(client, sql, code):
    message = failure(client, sql)
    assert code in message, message
    assert "internal" not in message.lower(), message


def test_a_corrupt_file_is_data_loss_naming_the_file(tmp_path, lake):
    folder = tmp_path / "lake" / "orders"
    folder.mkdir(parents=True)
    (folder / "good.parquet").write_bytes((lake / "orders.parquet").read_bytes())
    server = RunningServer(tmp_path / "lake")
    try:
        (folder / "zz-bad.parquet").write_bytes(b"PAR1 garbage PAR1")
        c = flight.FlightClient(server.uri.replace("grpc://", "grpc+tcp://"))
        # REFRESH TABLE names the file, as the query after it does.
        for sql in ["REFRESH TABLE orders", "SELECT sum(o_totalprice) FROM orders"]:
            message = failure(c, sql)
            assert "data loss error" in message, message
            assert "zz-bad.parquet" in message, message
        c.close()
    finally:
        server.stop()


def test_integer_overflow_wraps_as_datafusion_does_today(client):
    """DataFusion 55 wraps integer +, - and * (apache/datafusion#17539, open);
    Tarn documents it. This test fails once it errors instead: then update
    the README's known limits."""
    info = client.get_flight_info(descriptor(fsql.CommandStatementQuery(query="SELECT 9223372036854775807 + 1 AS x")))
    assert fetch(client, info).column("x").to_pylist() == [-9223372036854775808]
