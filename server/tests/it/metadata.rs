//! Metadata calls answer what BI tools ask.

use std::collections::BTreeSet;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::DataType;
use arrow::ipc::convert::try_schema_from_ipc_buffer;
use arrow_flight::sql::SqlInfo;
use tarn_client::TableFilter;

use crate::common::{self, start, total_rows};

/// Every batch of a metadata call that must succeed.
async fn all(
    call: impl std::future::Future<Output = Result<tarn_client::QueryResult, tarn_client::ClientError>>,
) -> Vec<RecordBatch> {
    call.await
        .expect("the call succeeds")
        .collect()
        .await
        .expect("the result streams")
}

fn strings(batches: &[RecordBatch], column: usize) -> Vec<String> {
    batches
        .iter()
        .flat_map(|b| {
            let c = b.column(column).as_string::<i32>();
            (0..c.len())
                .map(|i| c.value(i).to_string())
                .collect::<Vec<_>>()
        })
        .collect()
}

async fn demo_table_names() -> BTreeSet<String> {
    let lake = tarn::storage::StoreConfig {
        url: common::demo_lake().display().to_string(),
        ..Default::default()
    };
    let store = tarn::storage::Store::open_alone("lake", &lake).unwrap();
    let (tables, problems) = tarn::lake::discover(&store).await.unwrap();
    assert!(problems.is_empty(), "{problems:?}");
    tables.into_iter().map(|t| t.name).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn unfiltered_get_tables_lists_every_demo_table_with_its_schema() {
    let mut t = start().await;
    let filter = TableFilter {
        include_schema: true,
        ..Default::default()
    };
    let batches = t
        .client
        .tables(filter)
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let names: BTreeSet<String> = strings(&batches, 2).into_iter().collect();
    for expected in demo_table_names().await {
        assert!(
            names.contains(&expected),
            "{expected} missing from {names:?}"
        );
    }
    for expected in ["lineitem", "sales", "awkward_types"] {
        assert!(names.contains(expected));
    }
    // Each table's IPC schema decodes and matches `SELECT *`.
    let mut checked = 0;
    for batch in &batches {
        let schemas = batch.column(4).as_binary::<i32>();
        for row in 0..batch.num_rows() {
            let name = batch.column(2).as_string::<i32>().value(row);
            if !["nation", "lineitem", "awkward_types"].contains(&name) {
                continue;
            }
            let schema = try_schema_from_ipc_buffer(schemas.value(row)).unwrap();
            let select = t
                .client
                .query(&format!("SELECT * FROM {name}"))
                .await
                .unwrap();
            assert_eq!(schema.fields(), select.schema().fields(), "{name}");
            checked += 1;
            if name == "nation" {
                assert_eq!(
                    schema.field_with_name("n_name").unwrap().data_type(),
                    &DataType::Utf8
                );
            }
        }
    }
    assert_eq!(checked, 3, "every table checked was listed");
}

#[tokio::test(flavor = "multi_thread")]
async fn get_tables_filters_by_pattern_and_type() {
    let mut t = start().await;
    t.client
        .execute_update("CREATE VIEW nation_names AS SELECT n_name FROM nation")
        .await
        .unwrap();
    let filter = TableFilter {
        table_pattern: Some("nation%".into()),
        ..Default::default()
    };
    let batches = t
        .client
        .tables(filter)
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let mut found: Vec<(String, String)> = strings(&batches, 2)
        .into_iter()
        .zip(strings(&batches, 3))
        .collect();
    found.sort();
    assert_eq!(
        found,
        [
            ("nation".into(), "TABLE".into()),
            ("nation_names".into(), "VIEW".into())
        ]
    );

    let views = TableFilter {
        table_types: vec!["VIEW".into()],
        schema_pattern: Some("public".into()),
        ..Default::default()
    };
    let batches = t
        .client
        .tables(views)
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(strings(&batches, 2), ["nation_names"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn catalogs_schemas_and_table_types() {
    let mut t = start().await;
    let catalogs = all(t.client.catalogs()).await;
    assert_eq!(strings(&catalogs, 0), ["tarn"]);
    let schemas = t
        .client
        .db_schemas(None, None)
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let schemas: BTreeSet<String> = strings(&schemas, 1).into_iter().collect();
    assert!(
        schemas.contains("public") && schemas.contains("information_schema"),
        "{schemas:?}"
    );
    let filtered = t
        .client
        .db_schemas(Some("tarn"), Some("pub%"))
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(strings(&filtered, 1), ["public"]);
    let types = t
        .client
        .table_types()
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let types = strings(&types, 0);
    assert!(
        types.contains(&"TABLE".to_string()) && types.contains(&"VIEW".to_string()),
        "{types:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sql_info_answers_every_key() {
    let mut t = start().await;
    let all = t
        .client
        .sql_info(vec![])
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let keys: BTreeSet<u32> = all
        .iter()
        .flat_map(|b| {
            b.column(0)
                .as_primitive::<arrow::datatypes::UInt32Type>()
                .values()
                .to_vec()
        })
        .collect();
    // Every key the Flight SQL spec defines, from server name to stored functions.
    let mut missing = Vec::new();
    // 6 and 7 are Substrait version bounds, meaningless without Substrait.
    for key in (0..=11).chain(100..=101).chain(500..=576) {
        if ![6, 7].contains(&key) && SqlInfo::try_from(key as i32).is_ok() && !keys.contains(&key) {
            missing.push(key);
        }
    }
    assert!(
        missing.is_empty(),
        "SqlInfo keys without an answer: {missing:?}"
    );

    let name = t
        .client
        .sql_info(vec![SqlInfo::FlightSqlServerName])
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(total_rows(&name), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn xdbc_type_info_honours_the_filter() {
    let mut t = start().await;
    let all = t
        .client
        .xdbc_type_info(None)
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let names = strings(&all, 0);
    for expected in [
        "BIGINT",
        "VARCHAR",
        "DECIMAL",
        "DATE",
        "TIMESTAMP",
        "BOOLEAN",
        "DOUBLE",
    ] {
        assert!(
            names.contains(&expected.to_string()),
            "{expected} missing from {names:?}"
        );
    }
    let bigint = t
        .client
        .xdbc_type_info(Some(-5))
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(strings(&bigint, 0), ["BIGINT"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn key_commands_answer_empty_with_a_schema() {
    let mut t = start().await;
    let request = arrow_flight::sql::CommandGetPrimaryKeys {
        catalog: None,
        db_schema: None,
        table: "nation".into(),
    };
    let info = t
        .client
        .flight_sql_client()
        .get_primary_keys(request)
        .await
        .unwrap();
    let result = t.client.fetch(info).await.unwrap();
    assert_eq!(result.schema().field(3).name(), "column_name");
    assert_eq!(total_rows(&result.collect().await.unwrap()), 0);
}
