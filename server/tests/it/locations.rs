//! Statements can only read and write inside the lake.

use arrow::array::AsArray;
use arrow::datatypes::Int64Type;
use tarn::config::ServeConfig;
use tonic::Code;

use crate::common::{query, start_with};

/// A small lake of its own, so that tests may write into it.
fn scratch_lake() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("people.csv"), "id,name\n1,ann\n2,bob\n").unwrap();
    dir
}

/// The single integer a `SELECT count(*)` returns.
fn count(batches: Vec<arrow::array::RecordBatch>) -> i64 {
    batches[0].column(0).as_primitive::<Int64Type>().value(0)
}

fn denied(err: &tarn_client::ClientError) -> bool {
    err.status()
        .is_some_and(|s| s.code() == Code::PermissionDenied)
}

#[tokio::test(flavor = "multi_thread")]
async fn locations_outside_the_lake_are_refused() {
    let lake = scratch_lake();
    let outside = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(outside.path(), lake.path().join("link")).unwrap();
    let mut t = start_with(ServeConfig::for_lake(lake.path())).await;
    let lake_path = lake.path().display().to_string();
    for location in [
        "/etc/".to_string(),
        "file:///etc/passwd".to_string(),
        format!("{lake_path}/../"),
        format!("{lake_path}/link/"),
        "s3://undeclared-bucket/prefix/".to_string(),
    ] {
        let sql = format!("CREATE EXTERNAL TABLE stolen STORED AS CSV LOCATION '{location}'");
        let err = t.client.execute_update(&sql).await.unwrap_err();
        assert!(denied(&err), "{location}: {err}");
        assert!(err.to_string().contains("must lie inside"), "{err}");
        // The same statement sent as a query, or prepared (the JDBC path), is refused too.
        assert!(
            denied(&t.client.query(&sql).await.unwrap_err()),
            "{location}"
        );
        let mut prepared = t.client.prepare(&sql).await.unwrap();
        assert!(
            denied(&prepared.execute_update().await.unwrap_err()),
            "{location}"
        );
    }
    let err = t.client.query("SELECT * FROM stolen").await.unwrap_err();
    assert_eq!(
        err.status().unwrap().code(),
        Code::NotFound,
        "nothing was registered"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn copy_cannot_write_outside_the_lake() {
    let lake = scratch_lake();
    let outside = tempfile::tempdir().unwrap();
    let mut t = start_with(ServeConfig::for_lake(lake.path())).await;
    let target = outside.path().join("leak.csv");
    for sql in [
        format!(
            "COPY (SELECT * FROM people) TO '{}' STORED AS CSV",
            target.display()
        ),
        format!(
            "EXPLAIN ANALYZE COPY (SELECT * FROM people) TO '{}' STORED AS CSV",
            target.display()
        ),
    ] {
        let err = t.client.query(&sql).await.unwrap_err();
        assert!(denied(&err), "{sql}: {err}");
    }
    assert!(!target.exists(), "nothing was written");
}

#[tokio::test(flavor = "multi_thread")]
async fn locations_inside_the_lake_work() {
    let lake = scratch_lake();
    let mut t = start_with(ServeConfig::for_lake(lake.path())).await;
    let export = lake.path().join("exports/people.parquet");
    let copied = t
        .client
        .execute_update(&format!(
            "COPY (SELECT * FROM people) TO '{}' STORED AS PARQUET",
            export.display()
        ))
        .await
        .unwrap();
    assert_eq!(copied, 2);
    assert!(export.exists());
    t.client
        .execute_update(&format!(
            "CREATE EXTERNAL TABLE exported STORED AS PARQUET LOCATION '{}'",
            export.display()
        ))
        .await
        .unwrap();
    let batches = query(&mut t.client, "SELECT count(*) FROM exported").await;
    assert_eq!(batches[0].column(0).as_primitive::<Int64Type>().value(0), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn files_added_to_a_table_folder_are_visible_after_the_listing_ttl() {
    let lake = scratch_lake();
    let events = lake.path().join("events");
    std::fs::create_dir_all(&events).unwrap();
    std::fs::write(events.join("part-0.csv"), "id,kind\n1,a\n2,b\n").unwrap();
    let mut config = ServeConfig::for_lake(lake.path());
    config.engine.listing_cache_ttl = std::time::Duration::from_millis(300);
    let mut t = start_with(config).await;
    assert_eq!(
        count(query(&mut t.client, "SELECT count(*) FROM events").await),
        2
    );
    // Another writer adds a file: once the listing expires, queries see it.
    std::fs::write(events.join("part-1.csv"), "id,kind\n3,c\n").unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(
        count(query(&mut t.client, "SELECT count(*) FROM events").await),
        3
    );
    std::fs::remove_file(events.join("part-0.csv")).unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(
        count(query(&mut t.client, "SELECT count(*) FROM events").await),
        1
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn corrupt_parquet_fails_clearly_and_the_rest_is_served() {
    let lake = scratch_lake();
    // A lone corrupt file cannot become a table; the lake's other tables still load.
    // (These bytes make the parquet crate panic: the server must survive that too.)
    std::fs::write(
        lake.path().join("broken.parquet"),
        b"PAR1 this is not parquet",
    )
    .unwrap();
    let orders = lake.path().join("orders");
    std::fs::create_dir_all(&orders).unwrap();
    std::fs::copy(
        crate::common::table_file("orders"),
        orders.join("good.parquet"),
    )
    .unwrap();
    let mut config = ServeConfig::for_lake(lake.path());
    config.engine.listing_cache_ttl = std::time::Duration::ZERO;
    let mut t = start_with(config).await;

    let err = t.client.query("SELECT * FROM broken").await.unwrap_err();
    assert_eq!(err.status().unwrap().code(), Code::NotFound, "{err}");
    let people = query(&mut t.client, "SELECT count(*) FROM people").await;
    assert_eq!(people[0].column(0).as_primitive::<Int64Type>().value(0), 2);

    // A corrupt file appears among good ones: the query that reads it fails
    // with an error (never a silently short result), and the server goes on.
    std::fs::write(orders.join("zz-bad.parquet"), b"PAR1 garbage PAR1").unwrap();
    let outcome = match t.client.query("SELECT sum(o_totalprice) FROM orders").await {
        Err(e) => e,
        Ok(result) => result.collect().await.unwrap_err(),
    };
    assert_eq!(
        outcome.status().unwrap().code(),
        Code::Internal,
        "{outcome}"
    );
    // The message names the file, so the person knows what to replace.
    assert!(
        outcome.to_string().contains("corrupt Parquet file")
            && outcome.to_string().contains("orders/zz-bad.parquet"),
        "{outcome}"
    );
    let people = query(&mut t.client, "SELECT count(*) FROM people").await;
    assert_eq!(
        people[0].column(0).as_primitive::<Int64Type>().value(0),
        2,
        "the server keeps serving"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn refresh_table_shows_new_files_at_once() {
    let lake = scratch_lake();
    let events = lake.path().join("events");
    std::fs::create_dir_all(&events).unwrap();
    std::fs::write(events.join("part-0.csv"), "id,kind\n1,a\n").unwrap();
    let mut config = ServeConfig::for_lake(lake.path());
    config.engine.listing_cache_ttl = std::time::Duration::from_secs(3600);
    let mut t = start_with(config).await;
    assert_eq!(
        count(query(&mut t.client, "SELECT count(*) FROM events").await),
        1
    );
    std::fs::write(events.join("part-1.csv"), "id,kind\n2,b\n").unwrap();
    let cached = count(query(&mut t.client, "SELECT count(*) FROM events").await);
    assert_eq!(cached, 1, "the listing is cached");
    assert_eq!(
        t.client
            .execute_update("REFRESH TABLE events")
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        count(query(&mut t.client, "SELECT count(*) FROM events").await),
        2
    );
    // As a query (the ADBC path) it works too; an unknown table is NOT_FOUND.
    std::fs::write(events.join("part-2.csv"), "id,kind\n3,c\n").unwrap();
    query(&mut t.client, "refresh table events;").await;
    assert_eq!(
        count(query(&mut t.client, "SELECT count(*) FROM events").await),
        3
    );
    let err = t
        .client
        .execute_update("REFRESH TABLE nope")
        .await
        .unwrap_err();
    assert_eq!(err.status().unwrap().code(), Code::NotFound);
}

#[tokio::test(flavor = "multi_thread")]
async fn refresh_table_works_as_a_prepared_statement() {
    let lake = scratch_lake();
    let mut config = ServeConfig::for_lake(lake.path());
    config.engine.listing_cache_ttl = std::time::Duration::from_secs(3600);
    let mut t = start_with(config).await;
    assert_eq!(
        count(query(&mut t.client, "SELECT count(*) FROM people").await),
        2
    );
    std::fs::write(
        lake.path().join("people.csv"),
        "id,name\n1,ann\n2,bob\n3,cy\n",
    )
    .unwrap();
    // The JDBC driver prepares every statement, REFRESH included.
    let mut refresh = t.client.prepare("REFRESH TABLE people").await.unwrap();
    assert_eq!(refresh.execute_update().await.unwrap(), 0);
    refresh.close().await.unwrap();
    assert_eq!(
        count(query(&mut t.client, "SELECT count(*) FROM people").await),
        3
    );
}
