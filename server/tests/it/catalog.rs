//! The catalog over Flight SQL: lineage of a chain of statements, written
//! out by hand; a restart that loses nothing; schema versions; bad catalogs.

use std::path::Path;
use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::Int64Type;
use tarn::config::ServeConfig;
use tarn_client::Client;

use crate::common::{demo_lake, query, start_with};

fn scratch_lake() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for table in ["lineitem", "orders"] {
        let file = format!("{table}.parquet");
        std::fs::copy(demo_lake().join(&file), dir.path().join(&file)).unwrap();
    }
    dir
}

/// Every row of a result as strings ("NULL" for nulls), for comparing by hand.
async fn rows(client: &mut Client, sql: &str) -> Vec<Vec<String>> {
    let batches = query(client, sql).await;
    let mut out = Vec::new();
    for batch in &batches {
        for row in 0..batch.num_rows() {
            out.push(
                (0..batch.num_columns())
                    .map(|c| cell(batch, c, row))
                    .collect(),
            );
        }
    }
    out
}

fn cell(batch: &RecordBatch, column: usize, row: usize) -> String {
    let array = batch.column(column);
    if array.is_null(row) {
        return "NULL".into();
    }
    arrow::util::display::array_value_to_string(array, row).unwrap()
}

fn table(text: &str) -> Vec<Vec<String>> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| l.split(',').map(|c| c.trim().to_string()).collect())
        .collect()
}

async fn run(client: &mut Client, sql: &str) {
    client
        .execute_update(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

const CHAIN: [&str; 4] = [
    "CREATE TABLE a AS SELECT o.o_orderpriority AS priority, sum(l.l_extendedprice) AS revenue, count(*) AS n \
     FROM lineitem l JOIN orders o ON l.l_orderkey = o.o_orderkey \
     WHERE l.l_shipmode = 'AIR' GROUP BY o.o_orderpriority",
    "INSERT INTO a SELECT o_orderpriority, sum(o_totalprice), count(*) FROM orders \
     WHERE o_orderstatus = 'F' GROUP BY o_orderpriority",
    "CREATE VIEW v AS SELECT priority, revenue * 2 AS double_revenue FROM a",
    "CREATE TABLE b AS SELECT * FROM v WHERE priority <> '5-LOW'",
];

const COLUMN_EDGES: &str = "
    a, *, lineitem, l_orderkey, INDIRECT, JOIN
    a, *, lineitem, l_shipmode, INDIRECT, FILTER
    a, *, orders, o_orderkey, INDIRECT, JOIN
    a, *, orders, o_orderpriority, INDIRECT, GROUP_BY
    a, *, orders, o_orderstatus, INDIRECT, FILTER
    a, priority, orders, o_orderpriority, DIRECT, IDENTITY
    a, revenue, lineitem, l_extendedprice, DIRECT, AGGREGATION
    a, revenue, orders, o_totalprice, DIRECT, AGGREGATION
    b, *, v, priority, INDIRECT, FILTER
    b, double_revenue, v, double_revenue, DIRECT, IDENTITY
    b, priority, v, priority, DIRECT, IDENTITY
    v, double_revenue, a, revenue, DIRECT, TRANSFORMATION
    v, priority, a, priority, DIRECT, IDENTITY
";

const EDGES_SQL: &str = "SELECT DISTINCT target_table, target_column, source_table, source_column, kind, subtype \
     FROM system.column_lineage ORDER BY 1, 2, 3, 4, 5, 6";

#[tokio::test(flavor = "multi_thread")]
async fn a_chain_of_statements_has_exactly_the_expected_lineage() {
    let lake = scratch_lake();
    let mut t = start_with(ServeConfig::for_lake(lake.path())).await;
    let c = &mut t.client;
    for sql in CHAIN {
        run(c, sql).await;
    }
    assert_eq!(rows(c, EDGES_SQL).await, table(COLUMN_EDGES));
    assert_eq!(
        rows(
            c,
            "SELECT DISTINCT source_table, target_table FROM system.table_lineage ORDER BY 2, 1"
        )
        .await,
        table("lineitem, a\norders, a\nv, b\na, v")
    );
    let upstream = "SELECT depth, target_table, target_column, source_table, source_column, subtype \
                    FROM lineage_upstream('b.double_revenue') ORDER BY 1, 4, 5";
    assert_eq!(
        rows(c, upstream).await,
        table(
            "1, b, double_revenue, v, double_revenue, IDENTITY
             2, v, double_revenue, a, revenue, TRANSFORMATION
             3, a, revenue, lineitem, l_extendedprice, AGGREGATION
             3, a, revenue, orders, o_totalprice, AGGREGATION"
        )
    );
    // Delta writes know the bytes they wrote, and it matches the table's files.
    assert_eq!(
        rows(
            c,
            "SELECT count(*) FROM system.runs r WHERE kind = 'write' AND bytes_out > 0"
        )
        .await,
        table("3")
    );
    let bytes_on_disk: u64 = std::fs::read_dir(lake.path().join("b"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "parquet"))
        .map(|e| e.metadata().unwrap().len())
        .sum();
    assert_eq!(
        rows(
            c,
            "SELECT bytes_out FROM system.runs WHERE sql LIKE 'CREATE TABLE b%'"
        )
        .await,
        table(&bytes_on_disk.to_string())
    );
    // A read is a run too: rows out, rows and bytes read, recorded when streamed.
    assert_eq!(
        query(c, "SELECT * FROM b")
            .await
            .iter()
            .map(|b| b.num_rows())
            .sum::<usize>(),
        8
    );
    let read = "SELECT state, rows_out, rows_in, bytes_in > 0, inputs FROM system.runs WHERE sql = 'SELECT * FROM b'";
    let mut recorded = Vec::new();
    for _ in 0..50 {
        recorded = rows(c, read).await;
        if recorded.first().is_some_and(|r| r[0] != "RUNNING") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(recorded, table("COMPLETE, 8, 8, true, b"));
    // Every version a write committed, with its size.
    assert_eq!(
        rows(
            c,
            "SELECT table_name, version, rows, files FROM system.table_versions ORDER BY 1, 2"
        )
        .await,
        table("a, 0, 5, 1\na, 1, 10, 2\nb, 0, 8, 1")
    );
    let downstream = "SELECT DISTINCT target_table FROM lineage_downstream('lineitem') ORDER BY 1";
    assert_eq!(rows(c, downstream).await, table("a\nb\nv"));

    // Each statement is a run with its inputs; reads are runs too.
    let runs = rows(
        c,
        "SELECT kind, state, rows_out, replace(inputs, ',', '+') FROM system.runs \
         WHERE sql NOT LIKE '%system.%' AND sql NOT LIKE '%lineage_%' ORDER BY run_id",
    )
    .await;
    assert_eq!(
        runs,
        table(
            "write, COMPLETE, 5, lineitem+orders
             write, COMPLETE, 5, orders
             ddl, COMPLETE, 0, a
             write, COMPLETE, 8, v
             query, COMPLETE, 8, b"
        )
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restart_loses_nothing() {
    let lake = scratch_lake();
    let mut t = start_with(ServeConfig::for_lake(lake.path())).await;
    for sql in CHAIN {
        run(&mut t.client, sql).await;
    }
    run(
        &mut t.client,
        "ALTER SYSTEM SET datafusion.execution.batch_size = 1234",
    )
    .await;
    let queries = [
        EDGES_SQL,
        "SELECT table_name, kind, location, format, schema_version FROM system.tables ORDER BY 1",
        "SELECT table_name, version, columns FROM system.schema_versions ORDER BY 1, 2",
        "SELECT run_id, sql, state, rows_out FROM system.runs WHERE kind <> 'query' ORDER BY 1",
        "SELECT * FROM v ORDER BY priority",
    ];
    let mut before = Vec::new();
    for sql in queries {
        before.push(rows(&mut t.client, sql).await);
    }
    assert!(before[1].iter().any(|r| r[0] == "v" && r[1] == "view"));
    t.server.shutdown().await;

    let mut t = start_with(ServeConfig::for_lake(lake.path())).await;
    for (sql, earlier) in queries.iter().zip(&before) {
        assert_eq!(&rows(&mut t.client, sql).await, earlier, "{sql}");
    }
    let setting = rows(&mut t.client, "SHOW datafusion.execution.batch_size").await;
    assert_eq!(setting[0][1], "1234");
}

#[tokio::test(flavor = "multi_thread")]
async fn files_with_a_new_column_add_a_schema_version() {
    let lake = tempfile::tempdir().unwrap();
    let events = lake.path().join("events");
    std::fs::create_dir_all(&events).unwrap();
    write_parquet(&events.join("part-1.parquet"), &[1], false);
    let t = start_with(ServeConfig::for_lake(lake.path())).await;
    t.server.shutdown().await;

    write_parquet(&events.join("part-2.parquet"), &[2], true);
    let mut t = start_with(ServeConfig::for_lake(lake.path())).await;
    let versions = rows(
        &mut t.client,
        "SELECT version, columns FROM system.schema_versions WHERE table_name = 'events' ORDER BY 1",
    )
    .await;
    assert_eq!(versions.len(), 2, "{versions:?}");
    assert!(!versions[0][1].contains("extra") && versions[1][1].contains("extra"));
    let columns = rows(
        &mut t.client,
        "SELECT column_name FROM system.columns WHERE table_name = 'events' ORDER BY ordinal",
    )
    .await;
    assert_eq!(columns, table("id\nextra"));
    let counted = query(&mut t.client, "SELECT count(extra) FROM events").await;
    assert_eq!(counted[0].column(0).as_primitive::<Int64Type>().value(0), 1);
}

/// A Parquet file with an Int64 `id` (and, if asked, a Utf8 `extra`).
fn write_parquet(path: &Path, ids: &[i64], extra: bool) {
    let mut columns: Vec<(&str, Arc<dyn Array>)> =
        vec![("id", Arc::new(arrow::array::Int64Array::from(ids.to_vec())))];
    if extra {
        columns.push((
            "extra",
            Arc::new(arrow::array::StringArray::from(vec!["new"; ids.len()])),
        ));
    }
    let batch = RecordBatch::try_from_iter(columns).unwrap();
    let file = std::fs::File::create(path).unwrap();
    let mut writer = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_catalog_stops_the_start_with_a_clear_message() {
    let lake = scratch_lake();
    let state = tempfile::tempdir().unwrap();
    let mut config = ServeConfig::for_lake(lake.path());
    config.state_dir = state.path().to_path_buf();

    // In use by another server.
    let first = tarn::Server::start(config.clone()).await.unwrap();
    let err = tarn::Server::start(config.clone()).await.unwrap_err();
    assert!(
        err.to_string().contains("in use by another Tarn server"),
        "{err}"
    );
    first.shutdown().await;

    // Not a database.
    std::fs::write(state.path().join("catalog.sqlite"), vec![42u8; 8192]).unwrap();
    let _ = std::fs::remove_file(state.path().join("catalog.sqlite-wal"));
    let _ = std::fs::remove_file(state.path().join("catalog.sqlite-shm"));
    let err = tarn::Server::start(config.clone()).await.unwrap_err();
    assert!(err.to_string().contains("catalog.sqlite"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn tarn_lineage_prints_the_tree_down_to_lineitem_columns() {
    // Also from a server that sends view types (--view-types).
    for wire_types in [
        tarn::engine::WireTypes::Plain,
        tarn::engine::WireTypes::Native,
    ] {
        let lake = scratch_lake();
        let mut config = ServeConfig::for_lake(lake.path());
        config.engine.wire_types = wire_types;
        let mut t = start_with(config).await;
        for sql in CHAIN {
            run(&mut t.client, sql).await;
        }
        let uri = format!("grpc://{}", t.server.local_addr());
        let output = tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_tarn"))
                .args(["lineage", "b.double_revenue", "--upstream", "--host", &uri])
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        assert!(
            output.status.success(),
            "{wire_types:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&output.stdout),
            "b.double_revenue\n\
             └── v.double_revenue  (DIRECT/IDENTITY)\n\
             \x20   └── a.revenue  (DIRECT/TRANSFORMATION)\n\
             \x20       ├── lineitem.l_extendedprice  (DIRECT/AGGREGATION)\n\
             \x20       └── orders.o_totalprice  (DIRECT/AGGREGATION)\n",
            "{wire_types:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dropped_table_stays_dropped_after_a_restart() {
    let lake = scratch_lake();
    let mut t = start_with(ServeConfig::for_lake(lake.path())).await;
    run(&mut t.client, "CREATE TABLE kept AS SELECT * FROM orders").await;
    run(&mut t.client, "DROP TABLE kept").await;
    run(&mut t.client, "DROP TABLE lineitem").await;
    t.server.shutdown().await;
    assert!(
        lake.path().join("kept/_delta_log").is_dir(),
        "DROP keeps the files"
    );

    let mut t = start_with(ServeConfig::for_lake(lake.path())).await;
    for table in ["kept", "lineitem"] {
        let err = t
            .client
            .query(&format!("SELECT * FROM {table}"))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("not found"), "{table}: {err}");
    }
    let location = lake.path().join("kept").display().to_string();
    run(
        &mut t.client,
        &format!("CREATE EXTERNAL TABLE kept STORED AS DELTA LOCATION '{location}'"),
    )
    .await;
    assert!(
        !rows(&mut t.client, "SELECT * FROM kept LIMIT 1")
            .await
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn refresh_table_widens_the_schema_and_names_a_conflicting_file() {
    let lake = tempfile::tempdir().unwrap();
    let events = lake.path().join("events");
    std::fs::create_dir_all(&events).unwrap();
    write_parquet(&events.join("part-1.parquet"), &[1], false);
    let mut t = start_with(ServeConfig::for_lake(lake.path())).await;

    write_parquet(&events.join("part-2.parquet"), &[2], true);
    run(&mut t.client, "REFRESH TABLE events").await;
    let versions = rows(
        &mut t.client,
        "SELECT version FROM system.schema_versions WHERE table_name = 'events' ORDER BY 1",
    )
    .await;
    assert_eq!(versions, table("1\n2"));
    let counted = query(&mut t.client, "SELECT count(extra) FROM events").await;
    assert_eq!(counted[0].column(0).as_primitive::<Int64Type>().value(0), 1);

    // A file whose `id` is text cannot join the table: named, not mis-read.
    let text = RecordBatch::try_from_iter([(
        "id",
        Arc::new(arrow::array::StringArray::from(vec!["three"])) as Arc<dyn Array>,
    )])
    .unwrap();
    let file = std::fs::File::create(events.join("part-3.parquet")).unwrap();
    let mut writer = parquet::arrow::ArrowWriter::try_new(file, text.schema(), None).unwrap();
    writer.write(&text).unwrap();
    writer.close().unwrap();
    let err = t
        .client
        .execute_update("REFRESH TABLE events")
        .await
        .unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("column 'id' is Int64 in")
            && message.contains("events/part-1.parquet")
            && message.contains("but Utf8 in")
            && message.contains("events/part-3.parquet"),
        "{message}"
    );
}
