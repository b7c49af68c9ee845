//! Statements too large or too deeply nested for the planner are refused
//! with a clear error naming the setting, never by a crashed server.

use arrow::array::AsArray;
use arrow::datatypes::Int64Type;
use tarn::config::ServeConfig;
use tonic::Code;

use crate::common::{assert_status, demo_lake, query, start, start_with};

/// `SELECT 1+1+...+1` with `terms` terms.
fn sum_of_ones(terms: usize) -> String {
    format!("SELECT {}", vec!["1"; terms].join("+"))
}

/// A filter of `terms` equalities joined by OR.
fn or_chain(terms: usize) -> String {
    let chain: Vec<String> = (0..terms).map(|i| format!("n_nationkey = {i}")).collect();
    format!("SELECT count(*) FROM nation WHERE {}", chain.join(" OR "))
}

/// `terms` SELECTs joined by UNION ALL.
fn union_chain(terms: usize) -> String {
    let selects: Vec<String> = (0..terms).map(|i| format!("SELECT {i} AS n")).collect();
    selects.join(" UNION ALL ")
}

async fn select_one_answers(client: &mut tarn_client::Client) {
    let batches = query(client, "SELECT 1").await;
    assert_eq!(batches[0].column(0).as_primitive::<Int64Type>().value(0), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_three_crash_shapes_at_ten_times_their_size_are_refused_clearly() {
    let mut t = start().await;
    // Today's crash sizes were 2,000 terms, 20,000 ORs and 3,000 UNIONs.
    for (sql, setting) in [
        (sum_of_ones(20_000), "max_expression_depth"),
        (or_chain(200_000), "max_sql_length"),
        (union_chain(30_000), "max_expression_depth"),
    ] {
        let err = t.client.query(&sql).await.unwrap_err();
        assert_status(&err, Code::InvalidArgument, setting);
        select_one_answers(&mut t.client).await;
        // The JDBC path (prepare) and a schema request plan the same way.
        let Err(err) = t.client.prepare(&sql).await else {
            panic!("preparing a statement over the limits succeeded");
        };
        assert_status(&err, Code::InvalidArgument, setting);
        select_one_answers(&mut t.client).await;
    }
    for sql in [sum_of_ones(2_000), or_chain(20_000), union_chain(3_000)] {
        let err = t.client.query(&sql).await.unwrap_err();
        assert_status(&err, Code::InvalidArgument, "max_expression_depth");
    }
    select_one_answers(&mut t.client).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn statements_within_the_limits_are_answered() {
    let mut t = start().await;
    let batches = query(&mut t.client, &sum_of_ones(400)).await;
    assert_eq!(
        batches[0].column(0).as_primitive::<Int64Type>().value(0),
        400
    );
    let batches = query(&mut t.client, &or_chain(300)).await;
    assert_eq!(
        batches[0].column(0).as_primitive::<Int64Type>().value(0),
        25
    );
    let batches = query(&mut t.client, &union_chain(200)).await;
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_limits_are_configurable() {
    let mut config = ServeConfig::for_lake(demo_lake());
    config.engine.limits.max_sql_length = 64;
    config.engine.limits.max_expression_depth = 5;
    let mut t = start_with(config).await;
    let err = t
        .client
        .query(&format!("SELECT '{}'", "x".repeat(100)))
        .await
        .unwrap_err();
    assert_status(&err, Code::InvalidArgument, "max_sql_length");
    let err = t.client.query(&sum_of_ones(10)).await.unwrap_err();
    assert_status(&err, Code::InvalidArgument, "max_expression_depth");
    select_one_answers(&mut t.client).await;
}
