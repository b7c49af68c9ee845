//! Queries stream the right rows with the promised schema.

use std::time::Duration;

use arrow::array::{AsArray, RecordBatch, UInt64Array};
use arrow::datatypes::{DataType, Int64Type};
use futures::StreamExt;
use tarn::config::ServeConfig;

use crate::common::{
    self, parquet_rows, query, scratch_lake, start, start_with, table_file, total_rows,
};

#[tokio::test(flavor = "multi_thread")]
async fn count_matches_the_parquet_footer() {
    let mut t = start().await;
    let batches = query(&mut t.client, "SELECT count(*) AS n FROM lineitem").await;
    let n = batches[0].column(0).as_primitive::<Int64Type>().value(0);
    assert_eq!(n, parquet_rows(&table_file("lineitem")));
    assert!(n > 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn large_results_stream_in_many_batches_with_the_promised_schema() {
    let mut t = start().await;
    let result = t.client.query("SELECT * FROM lineitem").await.unwrap();
    let promised = result.schema();
    let mut stream = result.into_stream();
    let (mut batches, mut rows) = (0, 0);
    while let Some(batch) = stream.next().await {
        let batch = batch.unwrap();
        assert!(batch.num_rows() > 0, "no empty batches are sent");
        assert_eq!(
            batch.schema().fields(),
            promised.fields(),
            "DoGet schema equals FlightInfo schema"
        );
        batches += 1;
        rows += batch.num_rows();
    }
    assert_eq!(rows as i64, parquet_rows(&table_file("lineitem")));
    assert!(
        batches > 1,
        "a 60k-row result arrives in several batches, got {batches}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn strings_leave_as_utf8_not_views() {
    let mut t = start().await;
    let result = t
        .client
        .query("SELECT n_name, n_comment FROM nation")
        .await
        .unwrap();
    for field in result.schema().fields() {
        assert_eq!(field.data_type(), &DataType::Utf8, "{field:?}");
    }
    let batches = result.collect().await.unwrap();
    assert_eq!(batches[0].column(0).data_type(), &DataType::Utf8);

    // Nested view types are converted too.
    let nested = t
        .client
        .query("SELECT make_array(n_name) AS names FROM nation")
        .await
        .unwrap();
    let DataType::List(item) = nested.schema().field(0).data_type().clone() else {
        panic!("a list");
    };
    assert_eq!(item.data_type(), &DataType::Utf8);
}

#[tokio::test(flavor = "multi_thread")]
async fn view_types_are_sent_when_configured() {
    let mut config = ServeConfig::for_lake(common::demo_lake());
    config.engine.wire_types = tarn::engine::WireTypes::Native;
    let mut t = start_with(config).await;
    let result = t.client.query("SELECT n_name FROM nation").await.unwrap();
    assert_eq!(result.schema().field(0).data_type(), &DataType::Utf8View);
    assert_eq!(total_rows(&result.collect().await.unwrap()), 25);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_reads_view_types_gets_them_and_others_do_not() {
    let mut t = start().await;
    let options = tarn_client::ConnectOptions {
        view_types: true,
        ..Default::default()
    };
    let mut viewer = tarn_client::Client::connect_with_options(&t.uri(), options)
        .await
        .unwrap();
    let sql = "SELECT n_name, n_nationkey FROM nation ORDER BY n_nationkey";
    let viewed = viewer.query(sql).await.unwrap();
    assert_eq!(viewed.schema().field(0).data_type(), &DataType::Utf8View);
    let viewed = viewed.collect().await.unwrap();
    assert_eq!(viewed[0].column(0).data_type(), &DataType::Utf8View);

    // The same statement, prepared, and the table's schema in GetTables.
    let mut prepared = viewer.prepare(sql).await.unwrap();
    assert_eq!(
        prepared.dataset_schema().unwrap().field(0).data_type(),
        &DataType::Utf8View
    );
    let from_prepared = prepared.query().await.unwrap().collect().await.unwrap();
    assert_eq!(from_prepared[0].column(0).data_type(), &DataType::Utf8View);

    // A client on the same server that did not ask still gets plain strings,
    // with the same values.
    let plain = query(&mut t.client, sql).await;
    assert_eq!(plain[0].column(0).data_type(), &DataType::Utf8);
    let as_plain = |batches: &[RecordBatch]| -> Vec<String> {
        batches
            .iter()
            .flat_map(|b| {
                let column = arrow::compute::cast(b.column(0), &DataType::Utf8).unwrap();
                column
                    .as_string::<i32>()
                    .iter()
                    .map(|v| v.unwrap_or_default().to_string())
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    assert_eq!(as_plain(&viewed), as_plain(&plain));
    assert_eq!(as_plain(&from_prepared), as_plain(&plain));
    assert_eq!(as_plain(&plain).len(), 25);
}

#[tokio::test(flavor = "multi_thread")]
async fn zero_row_results_carry_their_schema() {
    let mut t = start().await;
    let result = t
        .client
        .query("SELECT l_orderkey, l_comment FROM lineitem WHERE false")
        .await
        .unwrap();
    let schema = result.schema();
    assert_eq!(schema.fields().len(), 2);
    assert_eq!(schema.field(1).name(), "l_comment");
    assert_eq!(total_rows(&result.collect().await.unwrap()), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn answers_match_the_files() {
    let mut t = start().await;
    let batches = query(
        &mut t.client,
        "SELECT n_nationkey, n_name FROM nation ORDER BY n_nationkey",
    )
    .await;
    let from_file = common::read_parquet(&table_file("nation"));
    let keys: Vec<i64> = batches
        .iter()
        .flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec())
        .collect();
    let mut expected: Vec<i64> = from_file
        .iter()
        .flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec())
        .collect();
    expected.sort();
    assert_eq!(keys, expected);
}

#[tokio::test(flavor = "multi_thread")]
async fn hive_partitions_are_typed_and_pruned() {
    let mut t = start().await;
    let batches = query(
        &mut t.client,
        "SELECT arrow_typeof(year) AS y, arrow_typeof(region) AS r FROM sales LIMIT 1",
    )
    .await;
    let types = &batches[0];
    assert_eq!(types.column(0).as_string::<i32>().value(0), "Int64");
    assert_eq!(types.column(1).as_string::<i32>().value(0), "Utf8");

    let plan = query(
        &mut t.client,
        "EXPLAIN SELECT sum(amount) FROM sales WHERE region = 'ASIA' AND year = 2024",
    )
    .await;
    let physical = plan[0].column(1).as_string::<i32>().value(1).to_string();
    assert!(physical.contains("region=ASIA/year=2024"), "{physical}");
    assert!(
        !physical.contains("region=EUROPE") && !physical.contains("year=2023"),
        "pruned: {physical}"
    );

    let rows = query(
        &mut t.client,
        "SELECT count(*) FROM sales WHERE year = 2024",
    )
    .await;
    let expected: i64 = ["AMERICA", "ASIA", "EUROPE"]
        .iter()
        .map(|r| {
            parquet_rows(
                &common::demo_lake().join(format!("sales/region={r}/year=2024/part-0.parquet")),
            )
        })
        .sum();
    assert_eq!(
        rows[0].column(0).as_primitive::<Int64Type>().value(0),
        expected
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn updates_run_and_report_affected_rows() {
    let lake = scratch_lake(&[]);
    let mut t = start_with(ServeConfig::for_lake(lake.path())).await;
    assert_eq!(
        t.client
            .execute_update("CREATE TABLE scratch (a BIGINT, b VARCHAR)")
            .await
            .unwrap(),
        0
    );
    let inserted = t
        .client
        .execute_update("INSERT INTO scratch VALUES (1, 'x'), (2, 'y'), (3, NULL)")
        .await
        .unwrap();
    assert_eq!(inserted, 3);
    let batches = query(&mut t.client, "SELECT sum(a) FROM scratch").await;
    assert_eq!(batches[0].column(0).as_primitive::<Int64Type>().value(0), 6);

    // A statement sent as a query runs at once, even if its result is never fetched.
    let _unfetched = t
        .client
        .query("INSERT INTO scratch VALUES (4, 'z')")
        .await
        .unwrap();
    let batches = query(&mut t.client, "SELECT count(*) FROM scratch").await;
    assert_eq!(batches[0].column(0).as_primitive::<Int64Type>().value(0), 4);

    let counted = query(&mut t.client, "INSERT INTO scratch VALUES (5, 'w')").await;
    let count = counted[0]
        .column(0)
        .as_any()
        .downcast_ref::<UInt64Array>()
        .unwrap();
    assert_eq!(count.value(0), 1);

    assert_eq!(
        t.client
            .execute_update("CREATE VIEW small AS SELECT a FROM scratch WHERE a < 3")
            .await
            .unwrap(),
        0
    );
    let batches = query(&mut t.client, "SELECT count(*) FROM small").await;
    assert_eq!(batches[0].column(0).as_primitive::<Int64Type>().value(0), 2);
    t.client.execute_update("DROP VIEW small").await.unwrap();
    t.client
        .execute_update("SET datafusion.execution.batch_size = 1024")
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_stops_reading_does_not_hurt_the_server() {
    let mut t = start().await;
    for _ in 0..3 {
        let result = t
            .client
            .query("SELECT * FROM lineitem CROSS JOIN nation")
            .await
            .unwrap();
        let mut stream = result.into_stream();
        let first = stream.next().await.unwrap().unwrap();
        assert!(first.num_rows() > 0);
        drop(stream);
    }
    let batches = query(&mut t.client, "SELECT count(*) FROM region").await;
    assert_eq!(batches[0].column(0).as_primitive::<Int64Type>().value(0), 5);
    // Each abandoned query's run ends as ABORT once the server notices.
    let runs =
        "SELECT count(*) FROM system.runs WHERE sql LIKE '%CROSS JOIN nation' AND state = 'ABORT'";
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let batches = query(&mut t.client, runs).await;
        if batches[0].column(0).as_primitive::<Int64Type>().value(0) == 3 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the runs never ended as ABORT"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The p50 and p99 of `SELECT 1` from 64 clients at once, 3 times each, on
/// a server whose catalog waits `catalog_delay` before every write.
async fn select_one_latencies(catalog_delay: Duration) -> (Duration, Duration) {
    let mut config = ServeConfig::for_lake(common::demo_lake());
    config.catalog_job_delay = catalog_delay;
    let t = start_with(config).await;
    let mut warm = t.client.clone();
    query(&mut warm, "SELECT 1").await;
    let clients: Vec<_> = (0..64)
        .map(|_| {
            let mut client = t.client.clone();
            tokio::spawn(async move {
                let mut took = Vec::new();
                for _ in 0..3 {
                    let started = std::time::Instant::now();
                    let batches = query(&mut client, "SELECT 1").await;
                    took.push(started.elapsed());
                    assert_eq!(batches[0].num_rows(), 1);
                }
                took
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for client in clients {
        latencies.extend(client.await.unwrap());
    }
    latencies.sort();
    (
        latencies[latencies.len() / 2],
        latencies[latencies.len() * 99 / 100],
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_catalog_disk_does_not_slow_queries() {
    // A catalog that waits 100 ms before every write (a disk far slower than
    // any real one) against one that does not: queries record their runs
    // without waiting, so the latencies stay alike. (Absolute figures for a
    // release build are in the benchmark report.)
    let (fast_p50, fast_p99) = select_one_latencies(Duration::ZERO).await;
    let (slow_p50, slow_p99) = select_one_latencies(Duration::from_millis(100)).await;
    // The figures, for a person reading the run (cargo test -- --nocapture).
    eprintln!(
        "SELECT 1 x 192 from 64 clients: p50 {slow_p50:?}, p99 {slow_p99:?} with a 100 ms catalog disk; p50 {fast_p50:?}, p99 {fast_p99:?} without"
    );
    // A query that waited on the catalog would wait for every queued job
    // (100 ms each): seconds. The margin only absorbs the noise of a
    // machine busy with other tests.
    assert!(
        slow_p99 < fast_p99 * 2 + Duration::from_millis(100),
        "p99 {slow_p99:?} with a 100 ms catalog disk, {fast_p99:?} without (p50 {slow_p50:?}, {fast_p50:?})"
    );
}
