//! Authentication with the Rust client: passwords, tokens, refusals, the
//! secure default, and identity statements on every statement path.

use std::net::SocketAddr;

use arrow::array::{Array, StringArray};
use tarn::ServeConfig;
use tarn::config::AdminPassword;
use tarn_client::{Client, Credentials};
use tonic::Code;

use crate::common::{assert_status, demo_lake, query, start_with};

const ADMIN_PASSWORD: &str = "admin-password-1";

fn auth_config() -> ServeConfig {
    let mut config = ServeConfig::for_lake(demo_lake());
    config.auth.enabled = true;
    config.admin_password = AdminPassword(Some(ADMIN_PASSWORD.to_string()));
    config
}

fn password(user: &str, password: &str) -> Credentials {
    Credentials::Password {
        user: user.to_string(),
        password: password.to_string(),
    }
}

fn strings(batches: &[arrow::array::RecordBatch], column: &str) -> Vec<String> {
    batches
        .iter()
        .flat_map(|b| {
            let array = b.column_by_name(column).unwrap();
            let array = array.as_any().downcast_ref::<StringArray>().unwrap();
            (0..array.len())
                .map(|i| array.value(i).to_string())
                .collect::<Vec<_>>()
        })
        .collect()
}

#[tokio::test]
async fn the_rust_client_logs_in_with_a_password_or_a_token() {
    let server = start_with(auth_config()).await;
    let uri = server.uri();

    // No credentials: the connection opens, every call is refused.
    let mut anonymous = Client::connect(&uri).await.unwrap();
    let err = anonymous.query("SELECT 1").await.unwrap_err();
    assert_status(&err, Code::Unauthenticated, "requires authentication");

    let mut admin = Client::connect_with(&uri, password("admin", ADMIN_PASSWORD))
        .await
        .unwrap();
    // Identity statements on each path: query, update, prepared update.
    admin
        .execute_update("CREATE USER alice WITH PASSWORD 'alice-password-1'")
        .await
        .unwrap();
    let mut statement = admin.prepare("CREATE ROLE analysts").await.unwrap();
    statement.execute_update().await.unwrap();
    statement.close().await.unwrap();
    query(&mut admin, "GRANT analysts TO alice").await;
    query(&mut admin, "GRANT SELECT ON nation TO analysts").await;
    let made = query(&mut admin, "CREATE TOKEN alice_token FOR USER alice").await;
    let token = strings(&made, "token").pop().unwrap();
    assert!(token.starts_with("tarn_t_"), "{token}");

    let mut alice = Client::connect_with(&uri, password("alice", "alice-password-1"))
        .await
        .unwrap();
    let rows = query(&mut alice, "SELECT count(*) FROM nation").await;
    assert_eq!(crate::common::total_rows(&rows), 1);
    let mut service = Client::connect_with(&uri, Credentials::Token(token.clone()))
        .await
        .unwrap();
    query(&mut service, "SELECT 'by token' AS s").await;

    // Wrong credentials fail at connect, with the same message.
    let wrong = Client::connect_with(&uri, password("alice", "not-her-password"))
        .await
        .unwrap_err();
    assert_status(&wrong, Code::Unauthenticated, "log in again");
    let forged = Client::connect_with(&uri, Credentials::Token(format!("{token}x")))
        .await
        .unwrap_err();
    assert_eq!(wrong.to_string(), forged.to_string());

    // A non-admin may not manage identities, nor read who exists.
    for sql in [
        "CREATE USER bob WITH PASSWORD 'bob-password-1'",
        "DROP TOKEN alice_token",
        "SELECT * FROM system.tokens",
        "SELECT * FROM (SELECT user_name FROM system.users) AS u",
    ] {
        let err = alice.query(sql).await.unwrap_err();
        assert_status(&err, Code::PermissionDenied, "admin");
    }

    // Runs carry the real user; passwords never reach the catalog.
    let runs = query(
        &mut admin,
        "SELECT principal, sql FROM system.runs ORDER BY started_at",
    )
    .await;
    let principals = strings(&runs, "principal");
    let texts = strings(&runs, "sql");
    let by = |text: &str| {
        texts
            .iter()
            .zip(&principals)
            .filter(|(t, _)| t.contains(text))
            .map(|(_, p)| p.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(by("count(*) FROM nation"), ["alice"]);
    assert_eq!(by("'by token'"), ["alice"]);
    assert_eq!(by("CREATE USER alice"), ["admin"]);
    assert!(
        texts
            .iter()
            .any(|t| t == "CREATE USER alice WITH PASSWORD '***'")
    );
    assert!(texts.iter().all(|t| !t.contains("alice-password-1")));

    // Dropping the user ends its session and its token at once.
    query(&mut admin, "DROP USER alice").await;
    for client in [&mut alice, &mut service] {
        let err = client.query("SELECT 1").await.unwrap_err();
        assert_status(&err, Code::Unauthenticated, "log in again");
    }
    let err = admin.query("DROP USER alice").await.unwrap_err();
    assert_status(&err, Code::NotFound, "user 'alice' does not exist");
    query(&mut admin, "DROP USER IF EXISTS alice").await;
    let err = admin.query("DROP USER admin").await.unwrap_err();
    assert_status(
        &err,
        Code::FailedPrecondition,
        "last member of the role 'admin'",
    );
}

#[tokio::test]
async fn a_network_address_without_authentication_is_refused() {
    let mut config = ServeConfig::for_lake(demo_lake());
    let state = tempfile::tempdir().unwrap();
    config.state_dir = state.path().to_path_buf();
    config.bind = SocketAddr::from(([0, 0, 0, 0], 0));
    let err = tarn::Server::start(config.clone()).await.unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("without authentication") && message.contains("--auth"),
        "{message}"
    );
    // Nothing was created on the way.
    assert_eq!(std::fs::read_dir(state.path()).unwrap().count(), 0);

    config.insecure_no_auth = true;
    let server = tarn::Server::start(config.clone()).await.unwrap();
    server.shutdown().await;

    config.insecure_no_auth = false;
    config.auth.enabled = true;
    let err = tarn::Server::start(config.clone()).await.unwrap_err();
    assert!(err.to_string().contains("TARN_ADMIN_PASSWORD"), "{err}");
    config.admin_password = AdminPassword(Some(ADMIN_PASSWORD.to_string()));
    let server = tarn::Server::start(config).await.unwrap();
    let uri = format!("grpc://127.0.0.1:{}", server.local_addr().port());
    let mut admin = Client::connect_with(&uri, password("admin", ADMIN_PASSWORD))
        .await
        .unwrap();
    query(&mut admin, "SELECT 1").await;
    server.shutdown().await;
}
