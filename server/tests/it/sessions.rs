//! Sessions: each connection (or login) has its own settings; `ALTER
//! SYSTEM` changes the defaults of new sessions and survives a restart;
//! `current_user()` and `current_role()` answer for the session's user.

use arrow::array::{Array, AsArray, RecordBatch};
use tarn::ServeConfig;
use tarn::config::AdminPassword;
use tarn_client::{Client, Credentials};
use tonic::Code;

use crate::common::{assert_status, demo_lake, query, start_with};

/// The text in row 0 of column `index`.
fn text(batches: &[RecordBatch], index: usize) -> Option<String> {
    let column = batches[0].column(index);
    let column = arrow::compute::cast(column, &arrow::datatypes::DataType::Utf8).unwrap();
    let column = column.as_string::<i32>();
    (!column.is_null(0)).then(|| column.value(0).to_string())
}

async fn batch_size(client: &mut Client) -> String {
    text(
        &query(client, "SHOW datafusion.execution.batch_size").await,
        1,
    )
    .unwrap()
}

/// The rows of a batch of `n` rows come out in batches no larger than the
/// session's batch size: a setting that really applies, not only shows.
async fn largest_batch(client: &mut Client) -> usize {
    let batches = query(client, "SELECT * FROM generate_series(1, 5000)").await;
    batches.iter().map(RecordBatch::num_rows).max().unwrap()
}

fn state_config(state: &std::path::Path) -> ServeConfig {
    let mut config = ServeConfig::for_lake(demo_lake());
    config.state_dir = state.to_path_buf();
    config
}

#[tokio::test(flavor = "multi_thread")]
async fn two_connections_never_see_each_others_settings() {
    let server = start_with(ServeConfig::for_lake(demo_lake())).await;
    let mut first = Client::connect(&server.uri()).await.unwrap();
    let mut second = Client::connect(&server.uri()).await.unwrap();
    first
        .execute_update("SET datafusion.execution.batch_size = 100")
        .await
        .unwrap();
    second
        .execute_update("SET datafusion.execution.batch_size = 700")
        .await
        .unwrap();
    assert_eq!(batch_size(&mut first).await, "100");
    assert_eq!(batch_size(&mut second).await, "700");
    assert_eq!(largest_batch(&mut first).await, 100);
    assert_eq!(largest_batch(&mut second).await, 700);
    let mut third = Client::connect(&server.uri()).await.unwrap();
    assert_eq!(
        batch_size(&mut third).await,
        "8192",
        "a new session has the defaults"
    );
    // RESET goes back to the server's default, in that session only.
    first
        .execute_update("RESET datafusion.execution.batch_size")
        .await
        .unwrap();
    assert_eq!(batch_size(&mut first).await, "8192");
    assert_eq!(batch_size(&mut second).await, "700");
    let who = query(
        &mut first,
        "SELECT current_user AS a, current_user() AS b, current_role AS c",
    )
    .await;
    assert_eq!(text(&who, 0).as_deref(), Some("anonymous"));
    assert_eq!(text(&who, 1).as_deref(), Some("anonymous"));
    assert_eq!(text(&who, 2), None);
}

#[tokio::test(flavor = "multi_thread")]
async fn alter_system_changes_new_sessions_and_survives_a_restart_while_set_does_not() {
    let state = tempfile::tempdir().unwrap();
    let server = start_with(state_config(state.path())).await;
    let mut before = Client::connect(&server.uri()).await.unwrap();
    assert_eq!(batch_size(&mut before).await, "8192");
    let mut admin = Client::connect(&server.uri()).await.unwrap();
    admin
        .execute_update("ALTER SYSTEM SET datafusion.execution.batch_size = 1234")
        .await
        .unwrap();
    admin
        .execute_update("SET datafusion.optimizer.prefer_hash_join = false")
        .await
        .unwrap();
    // Sessions keep what they started with; new ones start with the new default.
    assert_eq!(batch_size(&mut before).await, "8192");
    let mut after = Client::connect(&server.uri()).await.unwrap();
    assert_eq!(batch_size(&mut after).await, "1234");
    // Only server settings may be changed this way, as with SET.
    let err = admin
        .execute_update("ALTER SYSTEM SET datafusion.runtime.memory_limit = '1K'")
        .await
        .unwrap_err();
    assert_status(
        &err,
        Code::PermissionDenied,
        "datafusion.runtime.memory_limit",
    );
    let err = admin
        .execute_update("ALTER SYSTEM SELECT 1")
        .await
        .unwrap_err();
    assert_eq!(crate::common::code(&err), Code::InvalidArgument, "{err}");
    server.server.shutdown().await;

    let server = start_with(state_config(state.path())).await;
    let mut client = Client::connect(&server.uri()).await.unwrap();
    assert_eq!(
        batch_size(&mut client).await,
        "1234",
        "ALTER SYSTEM is remembered"
    );
    let join = query(&mut client, "SHOW datafusion.optimizer.prefer_hash_join").await;
    assert_eq!(text(&join, 1).as_deref(), Some("true"), "SET is not");
    client
        .execute_update("ALTER SYSTEM RESET datafusion.execution.batch_size")
        .await
        .unwrap();
    server.server.shutdown().await;
    let server = start_with(state_config(state.path())).await;
    let mut client = Client::connect(&server.uri()).await.unwrap();
    assert_eq!(
        batch_size(&mut client).await,
        "8192",
        "ALTER SYSTEM RESET is remembered"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_login_keeps_its_session_and_users_have_their_own() {
    const ADMIN_PASSWORD: &str = "admin-password-1";
    let mut config = ServeConfig::for_lake(demo_lake());
    config.auth.enabled = true;
    config.admin_password = AdminPassword(Some(ADMIN_PASSWORD.to_string()));
    let server = start_with(config).await;
    let login = |user: &str, password: &str| Credentials::Password {
        user: user.to_string(),
        password: password.to_string(),
    };
    let mut admin = Client::connect_with(&server.uri(), login("admin", ADMIN_PASSWORD))
        .await
        .unwrap();
    for sql in [
        "CREATE USER alice WITH PASSWORD 'alice-password-1'",
        "CREATE ROLE analysts",
        "GRANT analysts TO alice",
    ] {
        admin.execute_update(sql).await.unwrap();
    }
    let mut alice = Client::connect_with(&server.uri(), login("alice", "alice-password-1"))
        .await
        .unwrap();
    let who = query(&mut alice, "SELECT current_user(), current_role()").await;
    assert_eq!(text(&who, 0).as_deref(), Some("alice"));
    assert_eq!(text(&who, 1).as_deref(), Some("analysts"));
    // Any user may change their own session's settings; only admins the server's.
    alice
        .execute_update("SET datafusion.execution.batch_size = 321")
        .await
        .unwrap();
    let err = alice
        .execute_update("ALTER SYSTEM SET datafusion.execution.batch_size = 5")
        .await
        .unwrap_err();
    assert_status(&err, Code::PermissionDenied, "ALTER SYSTEM");
    assert_eq!(batch_size(&mut alice).await, "321");
    assert_eq!(batch_size(&mut admin).await, "8192");
    // A role granted now shows on her next statement.
    admin
        .execute_update("REVOKE analysts FROM alice")
        .await
        .unwrap();
    let who = query(&mut alice, "SELECT current_role()").await;
    assert_eq!(text(&who, 0), None);
    assert_eq!(batch_size(&mut alice).await, "321", "same session");
}
