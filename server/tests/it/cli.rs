//! The `tarn` binary as a person uses it.

use std::process::{Command, Output};

use crate::common::start;

fn tarn() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tarn"))
}

/// Runs `tarn ARGS` off the async runtime (the server under test runs on it).
async fn run(args: &[&str]) -> Output {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || tarn().args(args).output().expect("tarn runs"))
        .await
        .expect("the command thread finishes")
}

#[tokio::test(flavor = "multi_thread")]
async fn sql_prints_a_table_and_csv() {
    let t = start().await;
    let uri = t.uri();
    let output = run(&[
        "sql",
        "--host",
        &uri,
        "-c",
        "SELECT count(*) AS n FROM region",
    ])
    .await;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("│ n ") && stdout.contains("│ 5 "),
        "{stdout}"
    );
    assert!(String::from_utf8_lossy(&output.stderr).contains("1 row in"));

    let uri = t.uri();
    let output = run(&[
        "sql",
        "--host",
        &uri,
        "--format",
        "csv",
        "-c",
        "SELECT r_name FROM region ORDER BY r_regionkey LIMIT 2",
    ])
    .await;
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "r_name\nAFRICA\nAMERICA\n"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sql_reports_errors_and_fails() {
    let t = start().await;
    let uri = t.uri();
    let output = run(&["sql", "--host", &uri, "-c", "SELECT * FROM nowhere"]).await;
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("table 'nowhere' not found"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sql_describes_and_exports() {
    let t = start().await;
    let uri = t.uri();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("nation.parquet");
    let out_arg = out.display().to_string();
    let output = run(&[
        "sql",
        "--host",
        &uri,
        "-c",
        "\\d nation",
        "-c",
        "SELECT * FROM nation",
        "-o",
        &out_arg,
    ])
    .await;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("n_nationkey") && stdout.contains("Int64"),
        "{stdout}"
    );
    assert_eq!(crate::common::parquet_rows(&out), 25);
}

#[test]
fn help_documents_every_serve_option() {
    let output = tarn().args(["serve", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&output.stdout);
    for option in [
        "--lake",
        "--bind",
        "--config",
        "TARN_LAKE",
        "TARN_BIND",
        "--result-ttl",
        "--view-types",
        "--target-partitions",
        "--state-dir",
        "--openlineage-file",
        "--openlineage-url",
    ] {
        assert!(help.contains(option), "{option} missing from:\n{help}");
    }
}

#[test]
fn a_bad_config_file_is_reported_with_its_location() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tarn.toml");
    std::fs::write(&config, "[server]\nbnd = \"x\"\n").unwrap();
    let output = tarn()
        .args(["serve", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("invalid config file") && stderr.contains("bnd"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sql_splits_a_script_as_the_server_tokenizes_it() {
    let t = start().await;
    let uri = t.uri();
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("script.sql");
    std::fs::write(
        &script,
        "-- it's a comment with an apostrophe; and a semicolon\n\
         SELECT count(*) AS regions FROM region /* ; inside a block comment */;\n\
         SELECT 'it''s; quoted' AS text;\n\
         /* a last, empty statement */\n",
    )
    .unwrap();
    let output = run(&[
        "sql",
        "--host",
        &uri,
        "--format",
        "csv",
        script.to_str().unwrap(),
    ])
    .await;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "regions\n5\ntext\nit's; quoted\n"
    );
}

#[test]
fn an_invalid_log_filter_is_an_error_naming_the_flag() {
    let output = tarn()
        .args(["serve", "--log", "tarn=loud", "--bind", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("invalid --log filter 'tarn=loud'"),
        "{stderr}"
    );
    // The environment form too.
    let output = tarn()
        .args(["serve", "--bind", "127.0.0.1:0"])
        .env("TARN_LOG", "warn,tarn=shouty")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("invalid --log filter"), "{stderr}");
}
