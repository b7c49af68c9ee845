"""Statement limits through a real driver: the defaults, and the config file."""

import pytest

import tarn
from conftest import RunningServer


def test_a_deep_statement_is_refused_clearly_and_the_server_goes_on(conn):
    deep = "SELECT " + "+".join(["1"] * 20_000)
    with pytest.raises(tarn.Error, match="INVALID_ARGUMENT.*max_expression_depth"):
        conn.arrow(deep)
    assert conn.arrow("SELECT 1 AS one").column("one")[0].as_py() == 1


def test_the_config_file_sets_the_limits(lake, tmp_path):
    config = tmp_path / "tarn.toml"
    config.write_text("[engine]\nmax_sql_length = 200\nmax_expression_depth = 5\n")
    server = RunningServer(lake, extra_args=["--config", str(config)])
    try:
        with tarn.connect(server.uri) as conn:
            with pytest.raises(tarn.Error, match="max_expression_depth"):
                conn.arrow("SELECT 1+1+1+1+1+1+1+1")
            with pytest.raises(tarn.Error, match="max_sql_length"):
                conn.arrow(f"SELECT '{'x' * 300}'")
            assert conn.arrow("SELECT 1+1 AS two").column("two")[0].as_py() == 2
    finally:
        server.stop()
