//! The tests every [`CatalogStore`](super::CatalogStore) must pass.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema};

use super::*;

fn table() -> TableRecord {
    TableRecord {
        name: "t".into(),
        origin: TableOrigin::Discovered,
        location: Some("file:///lake/t/".into()),
        format: Some("parquet".into()),
        definition: None,
    }
}

fn schema(columns: &[&str]) -> SchemaRef {
    let fields: Vec<Field> = columns
        .iter()
        .map(|c| Field::new(*c, DataType::Int64, true))
        .collect();
    Arc::new(Schema::new(fields))
}

fn started(id: &str, kind: RunKind) -> RunStart {
    RunStart {
        id: id.into(),
        sql: format!("statement {id}"),
        principal: "test".into(),
        kind,
        target_location: Some("file:///lake/w/".into()),
    }
}

fn ended(state: RunState) -> RunEnd {
    RunEnd {
        state,
        rows_out: Some(1),
        bytes_out: None,
        files_out: None,
        rows_in: None,
        bytes_in: None,
        error: None,
        usage: Some(RunUsage {
            peak_memory: 1024,
            spilled_bytes: 0,
            queued: std::time::Duration::from_millis(3),
            note: Some("a note".into()),
        }),
    }
}

fn statistics(version: &str, rows: u64, distinct: u64) -> TableStatisticsRecord {
    TableStatisticsRecord {
        table: "s".into(),
        version: version.into(),
        files_digest: format!("digest of {version}"),
        location: "file:///lake/s/".into(),
        rows,
        columns: ["a", "b"]
            .iter()
            .map(|name| ColumnStatisticsRecord {
                name: name.to_string(),
                data_type: "Int64".into(),
                null_count: Some(1),
                distinct_count: Some(distinct),
                min: Some("-1".into()),
                max: Some(rows.to_string()),
            })
            .collect(),
    }
}

/// Everything a store must do; leaves state for [`after_reopening`].
pub(crate) async fn exercise(store: &dyn CatalogStore) {
    // Statistics: the newest version's are the table's.
    store
        .record_statistics(statistics("1", 10, 3))
        .await
        .unwrap();
    store
        .record_statistics(statistics("1", 10, 4))
        .await
        .unwrap();
    assert_eq!(
        store.latest_statistics().await.unwrap(),
        [statistics("1", 10, 4)],
        "a version's statistics replace its earlier ones"
    );
    // Versions recorded within one millisecond must still order.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    store
        .record_statistics(statistics("2", 20, 5))
        .await
        .unwrap();

    // Schema changes become versions; the same schema does not.
    let t = table();
    assert_eq!(
        store
            .record_table(t.clone(), schema(&["a"]), None)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store
            .record_table(t.clone(), schema(&["a"]), None)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store
            .record_table(t, schema(&["a", "b"]), None)
            .await
            .unwrap(),
        2
    );
    // Runs end once: a second end changes nothing.
    store
        .start_run(started("w1", RunKind::Write), vec!["t".into()], None)
        .await
        .unwrap();
    store.start_run_soon(started("q1", RunKind::Query), vec!["t".into()]);
    store.end_run_soon("q1".into(), ended(RunState::Complete));
    store.end_run_soon("q1".into(), ended(RunState::Abort));
    assert_eq!(
        store
            .interrupted_runs()
            .await
            .unwrap()
            .iter()
            .map(|r| r.id.as_str())
            .collect::<Vec<_>>(),
        ["w1"],
        "queued changes are stored in order, before later calls answer"
    );
    store
        .abort_runs(vec!["w1".into()], "stopped".into())
        .await
        .unwrap();
    assert!(store.interrupted_runs().await.unwrap().is_empty());
    // Settings, drops, definitions.
    store
        .record_setting("k".into(), "SET k = 1".into())
        .await
        .unwrap();
    store
        .record_setting("gone".into(), "SET gone = 1".into())
        .await
        .unwrap();
    store.forget_setting("gone".into()).await.unwrap();
    let view = TableRecord {
        name: "v".into(),
        origin: TableOrigin::View,
        location: None,
        format: None,
        definition: Some("CREATE VIEW v AS SELECT 1".into()),
    };
    store
        .record_table(view, schema(&["x"]), None)
        .await
        .unwrap();
    let created = TableRecord {
        name: "c".into(),
        origin: TableOrigin::Created,
        location: Some("file:///lake/c/".into()),
        format: Some("delta".into()),
        definition: None,
    };
    store
        .record_table(created, schema(&["x"]), Some("w1".into()))
        .await
        .unwrap();
    let version = TableVersionRecord {
        version: 0,
        rows: Some(3),
        files: 1,
        bytes: 100,
    };
    store
        .record_table_version("c".into(), version, Some("w1".into()))
        .await
        .unwrap();
    // A dropped table's statistics go with it.
    let dropped = TableStatisticsRecord {
        table: "t".into(),
        ..statistics("1", 1, 1)
    };
    store.record_statistics(dropped).await.unwrap();
    store.drop_table("t".into()).await.unwrap();
}

/// What [`exercise`] stored, read back by a store opened afresh.
pub(crate) async fn after_reopening(store: &dyn CatalogStore) {
    assert_eq!(store.settings().await.unwrap(), ["SET k = 1"]);
    assert_eq!(
        store.latest_statistics().await.unwrap(),
        [statistics("2", 20, 5)]
    );
    assert_eq!(
        store.definitions().await.unwrap(),
        [("v".to_string(), "CREATE VIEW v AS SELECT 1".to_string())]
    );
    assert_eq!(
        store.created_tables().await.unwrap(),
        [("c".to_string(), "file:///lake/c/".to_string())]
    );
    assert!(
        store
            .dropped_locations()
            .await
            .unwrap()
            .contains("file:///lake/t/")
    );
    assert!(store.interrupted_runs().await.unwrap().is_empty());
    // `t` was dropped: a table of that name starts afresh at version 1.
    assert_eq!(
        store
            .record_table(table(), schema(&["a"]), None)
            .await
            .unwrap(),
        1
    );
}
