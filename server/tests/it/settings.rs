//! `SET` and `ALTER SYSTEM SET` change only query settings: a client cannot
//! poison the server for everyone, now or after a restart.

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::Int64Type;
use tarn::config::ServeConfig;
use tonic::Code;

use crate::common::{assert_status, demo_lake, query, start_with};

fn value(batches: &[RecordBatch]) -> String {
    batches[0].column(1).as_string::<i32>().value(0).to_string()
}

async fn nation_count(client: &mut tarn_client::Client) -> i64 {
    let batches = query(client, "SELECT count(*) FROM nation").await;
    batches[0].column(0).as_primitive::<Int64Type>().value(0)
}

/// A server on the demo lake whose catalog is in `state`.
fn config(state: &std::path::Path) -> ServeConfig {
    let mut config = ServeConfig::for_lake(demo_lake());
    config.state_dir = state.to_path_buf();
    config
}

#[tokio::test(flavor = "multi_thread")]
async fn server_settings_are_refused_and_a_restart_serves_as_before() {
    let state = tempfile::tempdir().unwrap();
    let mut t = start_with(config(state.path())).await;
    for (key, value) in [
        ("datafusion.catalog.default_schema", "'nope'"),
        ("datafusion.catalog.information_schema", "false"),
        ("datafusion.runtime.memory_limit", "'1K'"),
        ("datafusion.runtime.temp_directory", "'/tmp'"),
        ("datafusion.sql_parser.dialect", "'mysql'"),
    ] {
        let sql = format!("SET {key} = {value}");
        let err = t.client.execute_update(&sql).await.unwrap_err();
        assert_status(&err, Code::PermissionDenied, key);
        // Prepared (the JDBC path) too.
        let mut prepared = t.client.prepare(&sql).await.unwrap();
        let err = prepared.execute_update().await.unwrap_err();
        assert_status(&err, Code::PermissionDenied, key);
        let err = t
            .client
            .execute_update(&format!("RESET {key}"))
            .await
            .unwrap_err();
        assert_status(&err, Code::PermissionDenied, key);
    }
    // A value no client should be able to impose on the others.
    let err = t
        .client
        .execute_update("SET datafusion.execution.batch_size = 0")
        .await
        .unwrap_err();
    assert_status(&err, Code::InvalidArgument, "batch_size");
    // Query settings work, and the server's defaults are remembered.
    for key in [
        "datafusion.catalog.default_schema",
        "datafusion.runtime.memory_limit",
    ] {
        let err = t
            .client
            .execute_update(&format!("ALTER SYSTEM SET {key} = 'x'"))
            .await
            .unwrap_err();
        assert_status(&err, Code::PermissionDenied, key);
    }
    t.client
        .execute_update("ALTER SYSTEM SET datafusion.execution.batch_size = 1234")
        .await
        .unwrap();
    t.client
        .execute_update("ALTER SYSTEM SET datafusion.optimizer.prefer_hash_join = false")
        .await
        .unwrap();
    assert_eq!(nation_count(&mut t.client).await, 25);
    t.server.shutdown().await;

    let mut t = start_with(config(state.path())).await;
    assert_eq!(nation_count(&mut t.client).await, 25);
    let batch_size = query(&mut t.client, "SHOW datafusion.execution.batch_size").await;
    assert_eq!(value(&batch_size), "1234");
    // ALTER SYSTEM RESET forgets a remembered setting.
    t.client
        .execute_update("ALTER SYSTEM RESET datafusion.optimizer.prefer_hash_join")
        .await
        .unwrap();
    t.server.shutdown().await;
    let mut t = start_with(config(state.path())).await;
    let join = query(&mut t.client, "SHOW datafusion.optimizer.prefer_hash_join").await;
    assert_eq!(value(&join), "true");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_remembered_setting_that_no_longer_passes_is_ignored_at_start() {
    let state = tempfile::tempdir().unwrap();
    let t = start_with(config(state.path())).await;
    t.server.shutdown().await;
    // What an earlier Tarn, which accepted any SET, may have remembered.
    let catalog = rusqlite::Connection::open(state.path().join("catalog.sqlite")).unwrap();
    for (key, statement) in [
        (
            "datafusion.catalog.default_schema",
            "SET datafusion.catalog.default_schema = 'nope'",
        ),
        (
            "datafusion.runtime.memory_limit",
            "SET datafusion.runtime.memory_limit = '1K'",
        ),
        (
            "datafusion.execution.time_zone",
            "SET datafusion.execution.time_zone = 'Mars/Olympus'",
        ),
        (
            "datafusion.execution.batch_size",
            "SET datafusion.execution.batch_size = 4321",
        ),
    ] {
        catalog
            .execute(
                "INSERT INTO settings (key, statement) VALUES (?1, ?2)",
                rusqlite::params![key, statement],
            )
            .unwrap();
    }
    drop(catalog);

    let mut t = start_with(config(state.path())).await;
    assert_eq!(nation_count(&mut t.client).await, 25);
    let schema = query(&mut t.client, "SHOW datafusion.catalog.default_schema").await;
    assert_eq!(value(&schema), "public");
    let batch_size = query(&mut t.client, "SHOW datafusion.execution.batch_size").await;
    assert_eq!(value(&batch_size), "4321", "the valid one is restored");
}
