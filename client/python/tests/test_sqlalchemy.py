"""flightsql-dbapi's SQLAlchemy dialect: what Superset uses."""

import sqlalchemy
from sqlalchemy import inspect, text


def engine_for(uri):
    host_port = uri.removeprefix("grpc://")
    return sqlalchemy.create_engine(f"datafusion://{host_port}?insecure=true")


def test_inspector_and_query(uri):
    engine = engine_for(uri)
    inspector = inspect(engine)
    tables = inspector.get_table_names()
    assert {"lineitem", "nation", "sales", "awkward_types"} <= set(tables)
    columns = {c["name"]: c for c in inspector.get_columns("nation")}
    assert list(columns) == ["n_nationkey", "n_name", "n_regionkey", "n_comment"]
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT r_name FROM region ORDER BY r_regionkey")).fetchall()
    assert [r[0] for r in rows] == ["AFRICA", "AMERICA", "ASIA", "EUROPE", "MIDDLE EAST"]
