//! Writes: Delta tables created, appended to, dropped and read back, on a
//! real lake folder. (The independent Delta reader, S3 and kill -9 tests are
//! in `client/python/tests/test_delta.py`.)

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{AsArray, Float64Array, Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Int64Type, Schema};
use parquet::basic::Compression;
use parquet::file::reader::{FileReader, SerializedFileReader};
use tarn::config::ServeConfig;
use tarn_client::Client;
use tonic::Code;

use crate::common::{assert_status, demo_lake, query, start_with};

/// A lake of its own (tests write into it) with `orders` and `nation`.
fn scratch_lake() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for table in ["orders", "nation"] {
        let file = format!("{table}.parquet");
        std::fs::copy(demo_lake().join(&file), dir.path().join(&file)).unwrap();
    }
    dir
}

fn config(lake: &Path) -> ServeConfig {
    ServeConfig::for_lake(lake)
}

/// A server on `lake` with a second store, "archive", at `archive`.
fn config_with_archive(lake: &Path, archive: &Path) -> ServeConfig {
    let mut config = config(lake);
    config.stores.push((
        "archive".into(),
        tarn::storage::StoreConfig {
            url: archive.display().to_string(),
            ..Default::default()
        },
    ));
    config
}

async fn count(client: &mut Client, from: &str) -> i64 {
    let batches = query(client, &format!("SELECT count(*) FROM {from}")).await;
    batches[0].column(0).as_primitive::<Int64Type>().value(0)
}

async fn update(client: &mut Client, sql: &str) -> i64 {
    client
        .execute_update(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// The commit files of the Delta table in `folder`, oldest first.
fn commits(folder: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(folder.join("_delta_log"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| name.ends_with(".json"))
        .collect();
    names.sort();
    names
}

fn data_files(folder: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(folder).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() && !path.ends_with("_delta_log") {
            files.extend(data_files(&path));
        } else if path.extension().is_some_and(|e| e == "parquet") {
            files.push(path);
        }
    }
    files
}

#[tokio::test(flavor = "multi_thread")]
async fn ctas_and_insert_commit_versions_that_time_travel_reads() {
    let lake = scratch_lake();
    let mut t = start_with(config(lake.path())).await;
    let c = &mut t.client;
    let rich = count(c, "orders WHERE o_totalprice > 200000").await;
    let poor = count(c, "orders WHERE o_totalprice < 5000").await;
    assert!(rich > 0 && poor > 0);

    let sql = "CREATE TABLE big_orders AS SELECT o_orderkey, o_custkey, o_totalprice FROM orders WHERE o_totalprice > 200000";
    assert_eq!(update(c, sql).await, rich, "CTAS reports the rows it wrote");
    let after_create = chrono::Utc::now().to_rfc3339();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let sql = "INSERT INTO big_orders SELECT o_orderkey, o_custkey, o_totalprice FROM orders WHERE o_totalprice < 5000";
    assert_eq!(update(c, sql).await, poor);
    assert_eq!(
        update(c, "INSERT INTO big_orders VALUES (1, 2, 3.50)").await,
        1
    );
    assert_eq!(count(c, "big_orders").await, rich + poor + 1);

    // The JDBC path: a prepared INSERT bound to several rows.
    let mut insert = c
        .prepare("INSERT INTO big_orders VALUES (?, ?, ?)")
        .await
        .unwrap();
    let schema = Arc::new(Schema::new(vec![
        Field::new("a", DataType::Int64, false),
        Field::new("b", DataType::Int64, false),
        Field::new("c", DataType::Float64, false),
    ]));
    let rows = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from(vec![7, 8, 9])),
            Arc::new(Int64Array::from(vec![1, 1, 1])),
            Arc::new(Float64Array::from(vec![1.0, 2.0, 3.0])),
        ],
    )
    .unwrap();
    insert.bind(rows).unwrap();
    assert_eq!(insert.execute_update().await.unwrap(), 3);
    let total = rich + poor + 4;
    assert_eq!(count(c, "big_orders").await, total);

    // Each statement is one commit; the files are ZSTD Parquet with statistics.
    let folder = lake.path().join("big_orders");
    assert_eq!(commits(&folder).len(), 3 + 3, "{:?}", commits(&folder));
    for file in data_files(&folder) {
        assert!(
            file.to_string_lossy().ends_with(".zstd.parquet"),
            "{file:?}"
        );
        let reader = SerializedFileReader::new(std::fs::File::open(&file).unwrap()).unwrap();
        let column = reader.metadata().row_group(0).column(0);
        assert!(
            matches!(column.compression(), Compression::ZSTD(_)),
            "{file:?}"
        );
        assert!(column.statistics().is_some(), "{file:?} has statistics");
    }

    assert_eq!(count(c, "time_travel('big_orders', 0)").await, rich);
    assert_eq!(count(c, "time_travel('big_orders', 1)").await, rich + poor);
    let as_of_create = format!("time_travel('big_orders', '{after_create}')");
    assert_eq!(count(c, &as_of_create).await, rich);
    let now = chrono::Utc::now().to_rfc3339();
    let as_of_now = format!("time_travel('big_orders', '{now}')");
    assert_eq!(count(c, &as_of_now).await, total);

    // A restart finds the table in the lake, with its history.
    t.server.shutdown().await;
    let mut t = start_with(config(lake.path())).await;
    assert_eq!(count(&mut t.client, "big_orders").await, total);
    assert_eq!(
        count(&mut t.client, "time_travel('big_orders', 0)").await,
        rich
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn create_table_variants() {
    let lake = scratch_lake();
    let mut t = start_with(config(lake.path())).await;
    let c = &mut t.client;

    let sql = "CREATE TABLE nation_by_region PARTITIONED BY (n_regionkey) AS SELECT * FROM nation";
    assert_eq!(update(c, sql).await, 25);
    for region in 0..5 {
        let folder = lake
            .path()
            .join(format!("nation_by_region/n_regionkey={region}"));
        assert!(folder.is_dir(), "{folder:?}");
    }
    assert_eq!(count(c, "nation_by_region WHERE n_regionkey = 1").await, 5);

    let archive = lake.path().join("archive/events");
    let sql = format!(
        "CREATE TABLE events (id BIGINT, kind VARCHAR) LOCATION '{}'",
        archive.display()
    );
    assert_eq!(update(c, &sql).await, 0);
    assert_eq!(commits(&archive).len(), 1, "an empty table is one commit");
    update(c, "INSERT INTO events VALUES (1, 'open'), (2, 'close')").await;
    let kinds = query(c, "SELECT kind FROM events ORDER BY id").await;
    let kinds: Vec<&str> = kinds[0]
        .column(0)
        .as_string::<i32>()
        .iter()
        .flatten()
        .collect();
    assert_eq!(kinds, ["open", "close"]);

    let err = c
        .execute_update("CREATE TABLE events AS SELECT 1")
        .await
        .unwrap_err();
    assert_status(&err, Code::AlreadyExists, "CREATE OR REPLACE");
    assert_eq!(
        update(c, "CREATE TABLE IF NOT EXISTS events AS SELECT 1").await,
        0
    );
    update(
        c,
        "CREATE OR REPLACE TABLE events AS SELECT CAST(3 AS BIGINT) AS id, 'again' AS kind",
    )
    .await;
    assert_eq!(count(c, "events").await, 1);
    assert_eq!(
        count(c, "time_travel('events', 1)").await,
        2,
        "the replaced version stays readable"
    );

    let err = c
        .execute_update("CREATE TABLE x (a INT) LOCATION '/etc/tarn'")
        .await
        .unwrap_err();
    assert_status(&err, Code::PermissionDenied, "must lie inside");
    assert!(!Path::new("/etc/tarn").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_inserts_all_land() {
    let lake = scratch_lake();
    let mut t = start_with(config(lake.path())).await;
    update(&mut t.client, "CREATE TABLE t AS SELECT * FROM nation").await;
    let uri = t.uri();
    let (writers, rounds) = (4, 3);
    let tasks: Vec<_> = (0..writers)
        .map(|_| {
            let uri = uri.clone();
            tokio::spawn(async move {
                let mut client = Client::connect(&uri).await.unwrap();
                for _ in 0..rounds {
                    update(&mut client, "INSERT INTO t SELECT * FROM nation").await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(count(&mut t.client, "t").await, 25 * (1 + writers * rounds));
    assert_eq!(
        commits(&lake.path().join("t")).len() as i64,
        1 + writers * rounds
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn drop_keeps_the_files_unless_purge_is_asked() {
    let lake = scratch_lake();
    let mut t = start_with(config(lake.path())).await;
    let c = &mut t.client;
    let folder = lake.path().join("kept");
    update(c, "CREATE TABLE kept AS SELECT * FROM nation").await;
    update(c, "DROP TABLE kept").await;
    assert_status(
        &c.query("SELECT * FROM kept").await.unwrap_err(),
        Code::NotFound,
        "kept",
    );
    assert_eq!(commits(&folder).len(), 1, "the data stays");

    let sql = format!(
        "CREATE EXTERNAL TABLE kept STORED AS DELTA LOCATION '{}'",
        folder.display()
    );
    update(c, &sql).await;
    assert_eq!(count(c, "kept").await, 25);
    update(c, "DROP TABLE kept PURGE").await;
    assert!(!folder.exists(), "PURGE deletes the table's files");

    let err = c
        .execute_update("DROP TABLE orders PURGE")
        .await
        .unwrap_err();
    assert_status(&err, Code::Unimplemented, "Delta tables only");
    assert!(count(c, "orders").await > 0, "nothing was dropped");
    update(c, "DROP TABLE IF EXISTS nothing_here PURGE").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn time_travel_mistakes_get_clear_errors() {
    let lake = scratch_lake();
    let mut t = start_with(config(lake.path())).await;
    let c = &mut t.client;
    update(c, "CREATE TABLE n AS SELECT * FROM nation").await;
    for (sql, text) in [
        (
            "SELECT * FROM time_travel('n', 9)",
            "there is no version 9; versions run from 0 to 0",
        ),
        (
            "SELECT * FROM time_travel('n', '2001-01-01')",
            "did not exist yet",
        ),
        (
            "SELECT * FROM time_travel('nation', 0)",
            "not a Delta table",
        ),
        ("SELECT * FROM time_travel('n')", "time_travel takes"),
        (
            "SELECT * FROM time_travel('nowhere', 0)",
            "no table 'nowhere'",
        ),
    ] {
        let err = c.query(sql).await.unwrap_err();
        assert_status(&err, Code::InvalidArgument, text);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_interrupted_create_is_never_served() {
    let lake = scratch_lake();
    // What a create killed before its commit leaves: the marker and data files.
    let half = lake.path().join("half");
    std::fs::create_dir_all(half.join("_delta_log")).unwrap();
    std::fs::write(half.join("_delta_log/_tarn_create_started"), "").unwrap();
    std::fs::copy(
        lake.path().join("nation.parquet"),
        half.join("part-00000-x-c000.zstd.parquet"),
    )
    .unwrap();
    let mut t = start_with(config(lake.path())).await;
    let c = &mut t.client;
    assert_status(
        &c.query("SELECT * FROM half").await.unwrap_err(),
        Code::NotFound,
        "half",
    );
    // Creating it again writes a complete table; the stray file is not part of it.
    assert_eq!(
        update(c, "CREATE TABLE half AS SELECT * FROM nation").await,
        25
    );
    assert_eq!(count(c, "half").await, 25);
}

#[tokio::test(flavor = "multi_thread")]
async fn another_servers_commits_appear_after_refresh() {
    let lake = scratch_lake();
    let mut slow = config(lake.path());
    slow.engine.listing_cache_ttl = Duration::from_secs(3600);
    // Two servers on one lake: each needs a catalog of its own.
    let reader_state = tempfile::tempdir().unwrap();
    slow.state_dir = reader_state.path().to_path_buf();
    let mut writer = start_with(config(lake.path())).await;
    update(
        &mut writer.client,
        "CREATE TABLE shared AS SELECT * FROM nation",
    )
    .await;
    let mut reader = start_with(slow).await;
    assert_eq!(count(&mut reader.client, "shared").await, 25);
    update(
        &mut writer.client,
        "INSERT INTO shared SELECT * FROM nation",
    )
    .await;
    assert_eq!(
        count(&mut reader.client, "shared").await,
        25,
        "a snapshot is kept for the TTL"
    );
    update(&mut reader.client, "REFRESH TABLE shared").await;
    assert_eq!(count(&mut reader.client, "shared").await, 50);
}

#[tokio::test(flavor = "multi_thread")]
async fn new_tables_go_to_the_configured_store() {
    let lake = scratch_lake();
    let archive = tempfile::tempdir().unwrap();
    let mut config = config_with_archive(lake.path(), archive.path());
    config.tables_store = "archive".into();
    let mut t = start_with(config).await;
    update(&mut t.client, "CREATE TABLE kept AS SELECT * FROM nation").await;
    assert_eq!(commits(&archive.path().join("kept")).len(), 1);
    assert!(!lake.path().join("kept").exists());

    let mut wrong = ServeConfig::for_lake(lake.path());
    wrong.tables_store = "nowhere".into();
    let err = tarn::Server::start(wrong).await.unwrap_err();
    assert!(err.to_string().contains("[stores.nowhere]"), "{err}");
}

/// Every row of a result as text, for comparing results before and after a restart.
async fn text_rows(client: &mut Client, sql: &str) -> Vec<String> {
    let batches = query(client, sql).await;
    let mut rows = Vec::new();
    for batch in &batches {
        for row in 0..batch.num_rows() {
            let cells: Vec<String> = batch
                .columns()
                .iter()
                .map(|c| arrow::util::display::array_value_to_string(c, row).unwrap())
                .collect();
            rows.push(cells.join("|"));
        }
    }
    rows
}

#[tokio::test(flavor = "multi_thread")]
async fn every_table_tarn_created_comes_back_after_a_restart_with_its_versions() {
    let lake = scratch_lake();
    let archive = tempfile::tempdir().unwrap();
    let with_archive = || config_with_archive(lake.path(), archive.path());
    let mut t = start_with(with_archive()).await;
    let deep = lake.path().join("archive/events").display().to_string();
    let renamed = lake.path().join("folder_x").display().to_string();
    let far = archive.path().join("deep/far").display().to_string();
    for sql in [
        // At the default place.
        "CREATE TABLE plain AS SELECT * FROM nation".to_string(),
        "INSERT INTO plain SELECT * FROM nation WHERE n_regionkey = 1".to_string(),
        // At a LOCATION below the top of the lake.
        format!("CREATE TABLE ev (id BIGINT, kind VARCHAR) LOCATION '{deep}'"),
        "INSERT INTO ev VALUES (1, 'a'), (2, 'b')".to_string(),
        // At the top of the lake, in a folder with another name.
        format!("CREATE TABLE renamed LOCATION '{renamed}' AS SELECT n_name FROM nation"),
        // In another store, below its top.
        format!("CREATE TABLE far LOCATION '{far}' AS SELECT * FROM nation WHERE n_regionkey = 2"),
        "INSERT INTO far SELECT * FROM nation WHERE n_regionkey = 3".to_string(),
    ] {
        update(&mut t.client, &sql).await;
    }
    let checks = [
        "SELECT count(*) FROM plain",
        "SELECT count(*) FROM time_travel('plain', 0)",
        "SELECT * FROM ev ORDER BY id",
        "SELECT count(*) FROM time_travel('ev', 1)",
        "SELECT count(*) FROM renamed",
        "SELECT count(*) FROM far",
        "SELECT count(*) FROM time_travel('far', 0)",
        "SELECT table_name, version, rows, files FROM system.table_versions \
         WHERE table_name IN ('plain', 'ev', 'renamed', 'far') ORDER BY 1, 2",
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY 1",
    ];
    let mut before = Vec::new();
    for sql in checks {
        before.push(text_rows(&mut t.client, sql).await);
    }
    assert_eq!(before[2], ["1|a", "2|b"]);
    t.server.shutdown().await;

    let mut t = start_with(with_archive()).await;
    for (sql, earlier) in checks.iter().zip(&before) {
        assert_eq!(&text_rows(&mut t.client, sql).await, earlier, "{sql}");
    }
    // It is served under the name it was created with, not its folder's.
    let err = t.client.query("SELECT * FROM folder_x").await.unwrap_err();
    assert_status(&err, Code::NotFound, "folder_x");
    // And it is still written to where it lives.
    update(&mut t.client, "INSERT INTO ev VALUES (3, 'c')").await;
    assert_eq!(count(&mut t.client, "ev").await, 3);
    assert_eq!(commits(&lake.path().join("archive/events")).len(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn eight_writers_times_five_inserts_all_land() {
    let lake = scratch_lake();
    let t = start_with(config(lake.path())).await;
    let mut client = t.client.clone();
    update(
        &mut client,
        "CREATE TABLE target (writer BIGINT, round BIGINT)",
    )
    .await;
    let writers: Vec<_> = (0..8)
        .map(|writer| {
            let mut client = t.client.clone();
            tokio::spawn(async move {
                for round in 0..5 {
                    let sql = format!("INSERT INTO target VALUES ({writer}, {round})");
                    if let Err(e) = client.execute_update(&sql).await {
                        return Err(format!("{sql}: {e}"));
                    }
                }
                Ok(())
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap().unwrap();
    }
    assert_eq!(count(&mut client, "target").await, 40);
    let distinct = query(
        &mut client,
        "SELECT count(DISTINCT writer * 10 + round) FROM target",
    )
    .await;
    assert_eq!(
        distinct[0].column(0).as_primitive::<Int64Type>().value(0),
        40
    );
    assert_eq!(commits(&lake.path().join("target")).len(), 41);
}

#[tokio::test(flavor = "multi_thread")]
async fn deletes_and_updates_are_versions_that_survive_a_restart_and_vacuum_removes_old_files() {
    let lake = scratch_lake();
    let mut t = start_with(config(lake.path())).await;
    let c = &mut t.client;
    update(
        c,
        "CREATE TABLE od AS SELECT o_orderkey, o_custkey, o_orderstatus FROM orders",
    )
    .await;
    let total = count(c, "od").await;
    let of_one = count(c, "od WHERE o_custkey = 1").await;
    assert!(of_one > 0);

    // The JDBC path: a prepared DELETE bound to a value.
    let mut delete = c
        .prepare("DELETE FROM od WHERE o_custkey = ?")
        .await
        .unwrap();
    let schema = Arc::new(Schema::new(vec![Field::new("k", DataType::Int64, false)]));
    let key = RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(vec![1]))]).unwrap();
    delete.bind(key).unwrap();
    assert_eq!(delete.execute_update().await.unwrap(), of_one);
    assert_eq!(count(c, "od WHERE o_custkey = 1").await, 0);

    let open = count(c, "od WHERE o_orderstatus = 'O'").await;
    let sql = "UPDATE od SET o_orderstatus = 'X' WHERE o_orderstatus = 'O'";
    assert_eq!(update(c, sql).await, open);
    assert_eq!(count(c, "od WHERE o_orderstatus = 'X'").await, open);
    assert_eq!(update(c, "DELETE FROM od WHERE o_orderkey < 0").await, 0);
    let folder = lake.path().join("od");
    assert_eq!(
        commits(&folder).len(),
        3,
        "CTAS, DELETE, UPDATE; a DELETE that matches nothing commits nothing"
    );

    // A restart serves the newest version, and the history is intact.
    t.server.shutdown().await;
    let mut t = start_with(config(lake.path())).await;
    let c = &mut t.client;
    assert_eq!(count(c, "od").await, total - of_one);
    assert_eq!(count(c, "od WHERE o_orderstatus = 'X'").await, open);
    assert_eq!(count(c, "time_travel('od', 0)").await, total);
    let versions = text_rows(
        c,
        "SELECT version, rows FROM system.table_versions WHERE table_name = 'od' ORDER BY 1",
    )
    .await;
    assert_eq!(versions.len(), 3, "{versions:?}");
    assert!(
        versions[1].ends_with(&format!("|{}", total - of_one)),
        "{versions:?}"
    );

    // The retention check is per session; with it off the old files go.
    let err = c.query("VACUUM od RETAIN 0 HOURS").await.unwrap_err();
    assert_status(
        &err,
        Code::FailedPrecondition,
        "tarn.vacuum_retention_check",
    );
    update(c, "SET tarn.vacuum_retention_check = false").await;
    let files_before = data_files(&folder).len();
    let removed = text_rows(c, "VACUUM od RETAIN 0 HOURS").await;
    assert!(!removed.is_empty());
    assert_eq!(data_files(&folder).len(), files_before - removed.len());
    assert_eq!(count(c, "od").await, total - of_one);
    let err = c
        .query("SELECT * FROM time_travel('od', 0)")
        .await
        .unwrap_err();
    assert_status(&err, Code::FailedPrecondition, "can no longer be read");
}
