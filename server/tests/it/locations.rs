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
        Code::DataLoss,
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
    // Each REFRESH is a run of its own, like any statement.
    let runs = query(
        &mut t.client,
        "SELECT count(*) FROM system.runs WHERE sql ILIKE 'refresh table events%' AND kind = 'ddl' AND state = 'COMPLETE'",
    )
    .await;
    assert_eq!(count(runs), 2);
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

/// A lake with a folder beside it that no statement may reach, and links
/// from inside the lake to that folder and to the state folder.
struct Fenced {
    _root: tempfile::TempDir,
    lake: std::path::PathBuf,
    outside: std::path::PathBuf,
    state: std::path::PathBuf,
}

fn fenced_lake() -> Fenced {
    let root = tempfile::tempdir().unwrap();
    let lake = root.path().join("lake");
    let outside = root.path().join("outside");
    let state = lake.join(".tarn");
    for folder in [&lake, &outside, &state] {
        std::fs::create_dir_all(folder).unwrap();
    }
    std::fs::write(lake.join("people.csv"), "id,name\n1,ann\n2,bob\n").unwrap();
    std::fs::write(outside.join("secret.csv"), "id,name\n99,secret\n").unwrap();
    std::os::unix::fs::symlink(&outside, lake.join("link")).unwrap();
    std::os::unix::fs::symlink(&state, lake.join("state-link")).unwrap();
    Fenced {
        lake: lake.canonicalize().unwrap(),
        outside: outside.canonicalize().unwrap(),
        state: state.canonicalize().unwrap(),
        _root: root,
    }
}

/// Every file under `folder` (links not followed), for before/after comparisons.
fn files_under(folder: &std::path::Path) -> Vec<(String, u64)> {
    let mut files = Vec::new();
    let mut pending = vec![folder.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let kind = entry.file_type().unwrap();
            if kind.is_dir() {
                pending.push(entry.path());
            } else {
                let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
                files.push((entry.path().display().to_string(), size));
            }
        }
    }
    files.sort();
    files
}

/// Locations that lead out of the lake (to `outside/<file>`) or into the
/// state folder, each disguised differently.
fn hostile_locations(f: &Fenced, file: &str) -> Vec<String> {
    let (l, o) = (f.lake.display(), f.outside.display());
    let o_relative = o.to_string();
    let o_relative = o_relative.trim_start_matches('/');
    vec![
        format!("file://{l}/%2e%2e/outside/{file}"),
        format!("file://{l}/%2E%2E/outside/{file}"),
        format!("file://{l}/.%2e/outside/{file}"),
        format!("{l}/%252e%252e/outside/{file}"),
        format!("file://{l}/%252e%252e/outside/{file}"),
        format!("file://{l}/..%2foutside%2f{file}"),
        format!("file://{l}/%2e%2e%2foutside%2f{file}"),
        format!("{l}\\..\\outside\\{file}"),
        format!("file://{l}\\..\\outside\\{file}"),
        format!("file://localhost{l}/../outside/{file}"),
        format!("file://localhost{o}/{file}"),
        format!("file:{o}/{file}"),
        format!("file:{o_relative}/{file}"),
        format!("{l}/link/{file}"),
        format!("file://{l}/link/%2e%2e/outside/{file}"),
        format!("{l}/state-link/catalog.sqlite"),
        format!("{l}/.tarn/catalog.sqlite"),
        format!("file://{l}/%2etarn/catalog.sqlite-wal"),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_locations_are_refused_and_nothing_outside_is_read_or_written() {
    let f = fenced_lake();
    let mut t = start_with(ServeConfig::for_lake(&f.lake)).await;
    let outside_before = files_under(&f.outside);
    let state_before: Vec<String> = files_under(&f.state).into_iter().map(|(p, _)| p).collect();

    let reads = hostile_locations(&f, "secret.csv");
    assert!(reads.len() >= 12);
    for location in &reads {
        let create = format!(
            "CREATE EXTERNAL TABLE stolen (id BIGINT, name VARCHAR) STORED AS CSV LOCATION '{location}' OPTIONS ('format.has_header' 'true')"
        );
        let err = t.client.execute_update(&create).await.unwrap_err();
        assert!(denied(&err), "{location}: {err}");
        assert!(err.to_string().contains("must lie inside"), "{err}");
        // As a query (ADBC), prepared (JDBC) and under EXPLAIN ANALYZE too.
        assert!(
            denied(&t.client.query(&create).await.unwrap_err()),
            "{location}"
        );
        let mut prepared = t.client.prepare(&create).await.unwrap();
        assert!(
            denied(&prepared.execute_update().await.unwrap_err()),
            "{location}"
        );
        prepared.close().await.unwrap();
    }
    let writes = hostile_locations(&f, "victim.csv");
    for location in &writes {
        for sql in [
            format!("COPY (SELECT 'overwritten' AS x) TO '{location}' STORED AS CSV"),
            format!("CREATE TABLE dropped_here (x VARCHAR) LOCATION '{location}'"),
        ] {
            let err = t.client.execute_update(&sql).await.unwrap_err();
            assert!(denied(&err), "{sql}: {err}");
        }
        let explain = format!(
            "EXPLAIN ANALYZE COPY (SELECT 'overwritten' AS x) TO '{location}' STORED AS CSV"
        );
        let err = t.client.query(&explain).await.unwrap_err();
        assert!(denied(&err), "{explain}: {err}");
    }
    let err = t.client.query("SELECT * FROM stolen").await.unwrap_err();
    assert_eq!(err.status().unwrap().code(), Code::NotFound, "{err}");

    assert_eq!(
        files_under(&f.outside),
        outside_before,
        "nothing outside was written"
    );
    let state_after: Vec<String> = files_under(&f.state).into_iter().map(|(p, _)| p).collect();
    assert_eq!(
        state_after, state_before,
        "no file was added to the state folder"
    );
    assert_eq!(
        count(query(&mut t.client, "SELECT count(*) FROM people").await),
        2
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_catalog_survives_an_attempt_to_overwrite_it() {
    let f = fenced_lake();
    let mut t = start_with(ServeConfig::for_lake(&f.lake)).await;
    t.client
        .execute_update("CREATE VIEW named AS SELECT name FROM people")
        .await
        .unwrap();
    for _ in 0..3 {
        query(&mut t.client, "SELECT count(*) FROM people").await;
    }
    let runs_before = count(query(&mut t.client, "SELECT count(*) FROM system.runs").await);
    for target in ["catalog.sqlite-wal", "catalog.sqlite", "LOCK"] {
        for location in [
            format!("{}/{target}", f.state.display()),
            format!("{}/state-link/{target}", f.lake.display()),
            format!("file://{}/%2etarn/{target}", f.lake.display()),
        ] {
            let sql = format!("COPY (SELECT 'garbage' AS x) TO '{location}' STORED AS CSV");
            let err = t.client.execute_update(&sql).await.unwrap_err();
            assert!(denied(&err), "{sql}: {err}");
            assert!(err.to_string().contains("state folder"), "{err}");
        }
    }
    t.server.shutdown().await;

    let mut t = start_with(ServeConfig::for_lake(&f.lake)).await;
    let runs_after = count(query(&mut t.client, "SELECT count(*) FROM system.runs").await);
    assert!(
        runs_after >= runs_before,
        "{runs_after} runs after, {runs_before} before"
    );
    let named = query(&mut t.client, "SELECT count(*) FROM named").await;
    assert_eq!(count(named), 2, "the view survived");
}

#[tokio::test(flavor = "multi_thread")]
async fn discovery_never_follows_a_link_out_of_the_lake() {
    let f = fenced_lake();
    let stolen = f.outside.join("stolen");
    std::fs::create_dir_all(&stolen).unwrap();
    std::fs::write(stolen.join("part-0.csv"), "id,name\n7,stolen\n").unwrap();
    std::os::unix::fs::symlink(&stolen, f.lake.join("sneaky")).unwrap();
    std::os::unix::fs::symlink(f.outside.join("secret.csv"), f.lake.join("leak.csv")).unwrap();
    let friends = f.lake.join("friends");
    std::fs::create_dir_all(&friends).unwrap();
    std::fs::write(friends.join("part-0.csv"), "id,name\n3,cy\n").unwrap();
    std::os::unix::fs::symlink(f.outside.join("secret.csv"), friends.join("part-1.csv")).unwrap();
    // A link that stays inside the lake is fine.
    std::os::unix::fs::symlink(f.lake.join("people.csv"), f.lake.join("alias.csv")).unwrap();

    let mut t = start_with(ServeConfig::for_lake(&f.lake)).await;
    let tables = query(
        &mut t.client,
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'",
    )
    .await;
    let names: Vec<String> = tables
        .iter()
        .flat_map(|batch| {
            let names = batch.column(0).as_string::<i32>();
            names
                .iter()
                .flatten()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    for name in ["link", "sneaky", "leak", "state-link"] {
        assert!(!names.contains(&name.to_string()), "{name} in {names:?}");
    }
    assert!(names.contains(&"alias".to_string()), "{names:?}");
    let rows = query(&mut t.client, "SELECT name FROM friends").await;
    let names: Vec<&str> = rows[0]
        .column(0)
        .as_string::<i32>()
        .iter()
        .flatten()
        .collect();
    assert_eq!(
        names,
        ["cy"],
        "the linked file outside is not part of the table"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_empty_parquet_file_at_the_top_is_reported_as_corrupt_not_served() {
    let lake = scratch_lake();
    std::fs::write(lake.path().join("empty.parquet"), b"").unwrap();
    let mut t = start_with(ServeConfig::for_lake(lake.path())).await;
    let err = t.client.query("SELECT * FROM empty").await.unwrap_err();
    assert_eq!(err.status().unwrap().code(), Code::NotFound, "{err}");
    assert_eq!(
        count(query(&mut t.client, "SELECT count(*) FROM people").await),
        2
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn partition_values_that_are_not_dates_stay_strings() {
    let lake = scratch_lake();
    for day in ["2024-01-31", "2024-13-45"] {
        let folder = lake.path().join(format!("events/day={day}"));
        std::fs::create_dir_all(&folder).unwrap();
        std::fs::write(folder.join("part.csv"), "id\n1\n").unwrap();
    }
    let mut t = start_with(ServeConfig::for_lake(lake.path())).await;
    let rows = query(&mut t.client, "SELECT day FROM events ORDER BY day").await;
    let days: Vec<&str> = rows[0]
        .column(0)
        .as_string::<i32>()
        .iter()
        .flatten()
        .collect();
    assert_eq!(days, ["2024-01-31", "2024-13-45"]);
    let one = query(
        &mut t.client,
        "SELECT count(*) FROM events WHERE day = '2024-13-45'",
    )
    .await;
    assert_eq!(count(one), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn show_tables_on_a_lake_that_cannot_be_listed_says_why() {
    let lake = tempfile::tempdir().unwrap();
    // A loop of links at the top: listing the folder fails.
    std::os::unix::fs::symlink(lake.path().join("b"), lake.path().join("a")).unwrap();
    std::os::unix::fs::symlink(lake.path().join("a"), lake.path().join("b")).unwrap();
    let mut t = start_with(ServeConfig::for_lake(lake.path())).await;
    let err = t.client.query("SHOW TABLES").await.unwrap_err();
    assert_eq!(
        err.status().unwrap().code(),
        Code::FailedPrecondition,
        "{err}"
    );
    let message = err.to_string();
    assert!(
        message.contains("store 'lake'")
            && message.contains(&lake.path().canonicalize().unwrap().display().to_string())
            && message.contains("listing it failed"),
        "{message}"
    );
    // Once a table exists, SHOW TABLES lists.
    t.client
        .execute_update("CREATE VIEW one AS SELECT 1 AS x")
        .await
        .unwrap();
    let shown = query(&mut t.client, "SHOW TABLES").await;
    assert!(shown.iter().map(|b| b.num_rows()).sum::<usize>() > 0);
}
