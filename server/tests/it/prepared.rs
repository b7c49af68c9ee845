//! Prepared statements: create, bind through DoPut, execute, close.

use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Int64Type};
use tonic::Code;

use crate::common::{query, start, total_rows};

fn int_params(values: Vec<i64>) -> RecordBatch {
    RecordBatch::try_from_iter([("$1", Arc::new(Int64Array::from(values)) as ArrayRef)]).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_parameter_selects_the_right_rows() {
    let mut t = start().await;
    let expected = query(
        &mut t.client,
        "SELECT n_name FROM nation WHERE n_nationkey = 7",
    )
    .await;
    let expected = expected[0]
        .column(0)
        .as_string::<i32>()
        .value(0)
        .to_string();

    let mut statement = t
        .client
        .prepare("SELECT n_name FROM nation WHERE n_nationkey = $1")
        .await
        .unwrap();
    assert_eq!(statement.parameter_schema().unwrap().fields().len(), 1);
    assert_eq!(
        statement.dataset_schema().unwrap().field(0).data_type(),
        &DataType::Utf8
    );
    statement.bind(int_params(vec![7])).unwrap();
    let batches = statement.query().await.unwrap().collect().await.unwrap();
    assert_eq!(total_rows(&batches), 1);
    assert_eq!(batches[0].column(0).as_string::<i32>().value(0), expected);

    // Rebinding replaces the parameters; the plan is reused.
    statement.bind(int_params(vec![8])).unwrap();
    let batches = statement.query().await.unwrap().collect().await.unwrap();
    assert_ne!(batches[0].column(0).as_string::<i32>().value(0), expected);
    statement.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn many_parameter_rows_run_once_each() {
    let mut t = start().await;
    let mut statement = t
        .client
        .prepare("SELECT n_nationkey FROM nation WHERE n_nationkey = $1")
        .await
        .unwrap();
    statement.bind(int_params(vec![3, 1, 2])).unwrap();
    let batches = statement.query().await.unwrap().collect().await.unwrap();
    let keys: Vec<i64> = batches
        .iter()
        .flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec())
        .collect();
    assert_eq!(keys, [3, 1, 2]);
}

#[tokio::test(flavor = "multi_thread")]
async fn executing_without_binding_names_the_missing_parameters() {
    let mut t = start().await;
    let mut statement = t
        .client
        .prepare("SELECT * FROM nation WHERE n_nationkey = $1")
        .await
        .unwrap();
    let err = statement.query().await.unwrap_err();
    assert_eq!(err.status().unwrap().code(), Code::InvalidArgument);
    assert!(err.to_string().contains("bind"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn prepared_updates_execute_per_row() {
    let lake = crate::common::scratch_lake(&[]);
    let mut t = crate::common::start_with(tarn::config::ServeConfig::for_lake(lake.path())).await;
    t.client
        .execute_update("CREATE TABLE people (id BIGINT, name VARCHAR)")
        .await
        .unwrap();
    let mut insert = t
        .client
        .prepare("INSERT INTO people VALUES ($1, $2)")
        .await
        .unwrap();
    assert_eq!(
        insert.dataset_schema().unwrap().fields().len(),
        0,
        "an insert returns no dataset"
    );
    let rows = RecordBatch::try_from_iter([
        ("$1", Arc::new(Int64Array::from(vec![1, 2])) as ArrayRef),
        (
            "$2",
            Arc::new(StringArray::from(vec!["ann", "bob"])) as ArrayRef,
        ),
    ])
    .unwrap();
    insert.bind(rows).unwrap();
    assert_eq!(insert.execute_update().await.unwrap(), 2);
    insert.close().await.unwrap();

    // DDL through a prepared statement (the JDBC path) really runs.
    let mut ddl = t
        .client
        .prepare("CREATE VIEW people_names AS SELECT name FROM people")
        .await
        .unwrap();
    assert_eq!(ddl.execute_update().await.unwrap(), 0);
    let names = query(&mut t.client, "SELECT name FROM people_names ORDER BY name").await;
    assert_eq!(
        names[0]
            .column(0)
            .as_string::<i32>()
            .iter()
            .flatten()
            .collect::<Vec<_>>(),
        ["ann", "bob"]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn preparing_does_not_run_the_statement() {
    let mut t = start().await;
    let statement = t
        .client
        .prepare("CREATE VIEW never_created AS SELECT 1")
        .await
        .unwrap();
    statement.close().await.unwrap();
    let err = t
        .client
        .query("SELECT * FROM never_created")
        .await
        .unwrap_err();
    assert_eq!(err.status().unwrap().code(), Code::NotFound);
}

#[tokio::test(flavor = "multi_thread")]
async fn question_marks_bind_in_order() {
    let mut t = start().await;
    let mut statement = t
        .client
        .prepare(
            "SELECT n_nationkey FROM nation WHERE n_nationkey >= ? AND n_nationkey < ? ORDER BY 1",
        )
        .await
        .unwrap();
    assert_eq!(statement.parameter_schema().unwrap().fields().len(), 2);
    let params = RecordBatch::try_from_iter([
        ("a", Arc::new(Int64Array::from(vec![3])) as ArrayRef),
        ("b", Arc::new(Int64Array::from(vec![6])) as ArrayRef),
    ])
    .unwrap();
    statement.bind(params).unwrap();
    let batches = statement.query().await.unwrap().collect().await.unwrap();
    let keys: Vec<i64> = batches
        .iter()
        .flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec())
        .collect();
    assert_eq!(keys, [3, 4, 5]);
}

#[tokio::test(flavor = "multi_thread")]
async fn placeholders_in_a_direct_query_ask_for_a_prepared_statement() {
    let mut t = start().await;
    let err = t
        .client
        .query("SELECT * FROM nation WHERE n_nationkey = ?")
        .await
        .unwrap_err();
    assert_eq!(err.status().unwrap().code(), Code::InvalidArgument);
    assert!(err.to_string().contains("prepare it"), "{err}");
}
