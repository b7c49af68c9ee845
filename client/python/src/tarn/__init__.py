"""Python client for Tarn, an Arrow Flight SQL analytics server.

``tarn.connect(uri)`` returns a DB-API 2.0 connection backed by the ADBC
Flight SQL driver, extended with helpers that return Arrow tables, pandas and
polars frames, and list tables.
"""

from __future__ import annotations

from typing import Any, List, Optional, Sequence, Tuple

import adbc_driver_flightsql.dbapi as _flightsql
import pyarrow as pa

__all__ = ["connect", "Connection", "DEFAULT_URI"]
__version__ = "0.1.0"

#: The address ``tarn serve`` listens on by default.
DEFAULT_URI = "grpc://127.0.0.1:50051"

# DB-API 2.0 module globals.
apilevel = "2.0"
threadsafety = 1
paramstyle = "qmark"
Error = _flightsql.Error
DatabaseError = _flightsql.DatabaseError
ProgrammingError = _flightsql.ProgrammingError


class Connection:
    """A DB-API 2.0 connection to Tarn with Arrow-native helpers.

    Every DB-API method and attribute of the underlying ADBC connection
    (``cursor``, ``commit``, ``adbc_get_objects``, ...) is available as is.
    """

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def __enter__(self) -> "Connection":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def cursor(self) -> Any:
        """A DB-API cursor."""
        return self._inner.cursor()

    def close(self) -> None:
        """Closes the connection."""
        self._inner.close()

    def arrow(self, sql: str, parameters: Optional[Sequence[Any]] = None) -> pa.Table:
        """Runs ``sql`` (with ``?`` or ``$1`` parameters) and returns a ``pyarrow.Table``."""
        with self._inner.cursor() as cur:
            cur.execute(sql, parameters)
            return cur.fetch_arrow_table()

    def pandas(self, sql: str, parameters: Optional[Sequence[Any]] = None) -> Any:
        """Runs ``sql`` and returns a ``pandas.DataFrame`` (needs ``pandas``)."""
        return self.arrow(sql, parameters).to_pandas()

    def polars(self, sql: str, parameters: Optional[Sequence[Any]] = None) -> Any:
        """Runs ``sql`` and returns a ``polars.DataFrame`` (needs ``polars``)."""
        import polars as pl

        return pl.from_arrow(self.arrow(sql, parameters))

    def execute(self, sql: str, parameters: Optional[Sequence[Any]] = None) -> int:
        """Runs a statement that changes something (DDL, INSERT, ...); returns the affected row count (-1 if unknown)."""
        with self._inner.cursor() as cur:
            cur.execute(sql, parameters)
            return cur.rowcount

    def tables(self, pattern: Optional[str] = None) -> List[Tuple[str, str, str, str]]:
        """Lists ``(catalog, schema, table, type)`` for every table, optionally matching a LIKE pattern."""
        objects = self._inner.adbc_get_objects(depth="tables", table_name_filter=pattern).read_all()
        rows: List[Tuple[str, str, str, str]] = []
        for catalog in objects.to_pylist():
            for schema in catalog["catalog_db_schemas"] or []:
                for table in schema["db_schema_tables"] or []:
                    rows.append(
                        (catalog["catalog_name"], schema["db_schema_name"], table["table_name"], table["table_type"])
                    )
        return rows

    def table_schema(self, table: str, schema: Optional[str] = None) -> pa.Schema:
        """The Arrow schema of ``table``."""
        return self._inner.adbc_get_table_schema(table, db_schema_filter=schema)

    def lineage(self, name: str, downstream: bool = False, depth: int = 10) -> pa.Table:
        """The recorded lineage of a table (``"b"``) or column (``"b.revenue"``).

        Upstream (where it comes from) by default, or ``downstream=True`` (what
        it feeds); one row per edge: depth, target_table, target_column,
        source_table, source_column, kind (DIRECT/INDIRECT), subtype.
        """
        function = "lineage_downstream" if downstream else "lineage_upstream"
        quoted = name.replace("'", "''")
        return self.arrow(f"SELECT * FROM {function}('{quoted}', {int(depth)}) ORDER BY depth, source_table, source_column")

    def runs(self) -> pa.Table:
        """Every recorded run (statement): id, SQL, kind, state, times, rows, inputs."""
        return self.arrow("SELECT * FROM system.runs ORDER BY run_id")


def connect(
    uri: str = DEFAULT_URI,
    *,
    user: Optional[str] = None,
    password: Optional[str] = None,
    token: Optional[str] = None,
    tls_root_certs: Optional[str] = None,
    tls_client_cert: Optional[str] = None,
    tls_client_key: Optional[str] = None,
    **kwargs: Any,
) -> Connection:
    """Connects to a Tarn server (``grpc://host:port``).

    With ``user`` and ``password`` the driver logs in (a Flight Handshake)
    and uses the session token the server returns; with ``token`` (an API
    token from ``CREATE TOKEN``) it sends ``authorization: Bearer <token>``
    on every call. For ``grpc+tls://`` servers, ``tls_root_certs`` is a CA
    certificate (PEM text) to trust, and ``tls_client_cert`` /
    ``tls_client_key`` (PEM text) a client certificate for servers that
    require one. Extra keyword arguments go to
    ``adbc_driver_flightsql.dbapi.connect`` (for example ``db_kwargs`` with
    driver options).
    """
    if token is not None and (user is not None or password is not None):
        raise ValueError("give either user and password, or token, not both")
    if (user is None) != (password is None):
        raise ValueError("give both user and password")
    db_kwargs = dict(kwargs.pop("db_kwargs", None) or {})
    if user is not None:
        db_kwargs["username"] = user
        db_kwargs["password"] = password
    if token is not None:
        db_kwargs["adbc.flight.sql.authorization_header"] = f"Bearer {token}"
    if tls_root_certs is not None:
        db_kwargs["adbc.flight.sql.client_option.tls_root_certs"] = tls_root_certs
    if (tls_client_cert is None) != (tls_client_key is None):
        raise ValueError("give both tls_client_cert and tls_client_key")
    if tls_client_cert is not None:
        db_kwargs["adbc.flight.sql.client_option.mtls_cert_chain"] = tls_client_cert
        db_kwargs["adbc.flight.sql.client_option.mtls_private_key"] = tls_client_key
    if db_kwargs:
        kwargs["db_kwargs"] = db_kwargs
    # Tarn has no transactions: every statement commits on its own.
    kwargs.setdefault("autocommit", True)
    return Connection(_flightsql.connect(uri, **kwargs))
