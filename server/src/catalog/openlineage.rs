//! OpenLineage export: START and COMPLETE/FAIL run events (spec 2-0-2) for
//! every write, with `sql`, `schema`, `columnLineage` and `outputStatistics`
//! facets, delivered to a JSON-lines file and/or a Marquez-compatible
//! `POST {endpoint}/api/v1/lineage`.
//!
//! Events go into the catalog's outbox in the same transaction as the run
//! they describe; [`spawn_delivery`] sends them, in order per sink, retrying
//! with backoff while a sink fails. An event is never lost: it leaves the
//! outbox (is marked delivered) only once its sink accepted it.

use std::collections::BTreeMap;
use std::path::PathBuf;

use rusqlite::{Connection, Transaction, params};
use serde_json::{Value, json};

use super::{WriteLineage, now};

const PRODUCER: &str = concat!(
    "https://example.invalid/tarn/tree/v",
    env!("CARGO_PKG_VERSION")
);
const RUN_EVENT: &str = "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent";
const SQL_FACET: &str =
    "https://openlineage.io/spec/facets/1-1-0/SQLJobFacet.json#/$defs/SQLJobFacet";
const SCHEMA_FACET: &str =
    "https://openlineage.io/spec/facets/1-2-0/SchemaDatasetFacet.json#/$defs/SchemaDatasetFacet";
const COLUMN_LINEAGE_FACET: &str = "https://openlineage.io/spec/facets/1-2-0/ColumnLineageDatasetFacet.json#/$defs/ColumnLineageDatasetFacet";
const OUTPUT_STATISTICS_FACET: &str = "https://openlineage.io/spec/facets/1-0-2/OutputStatisticsOutputDatasetFacet.json#/$defs/OutputStatisticsOutputDatasetFacet";
const ERROR_FACET: &str = "https://openlineage.io/spec/facets/1-0-1/ErrorMessageRunFacet.json#/$defs/ErrorMessageRunFacet";
const OWNERSHIP_FACET: &str =
    "https://openlineage.io/spec/facets/1-0-1/OwnershipJobFacet.json#/$defs/OwnershipJobFacet";

/// Where events go (`[openlineage]`).
#[derive(Debug, Clone, Default, serde::Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct OpenLineageConfig {
    /// Append each event as one JSON line to this file.
    pub file: Option<PathBuf>,
    /// POST each event to `{endpoint}/api/v1/lineage` (Marquez and compatible servers).
    pub endpoint: Option<String>,
    /// The job namespace (default "tarn").
    pub namespace: Option<String>,
}

impl OpenLineageConfig {
    /// The sinks events are queued for.
    pub(crate) fn sinks(&self) -> Vec<&'static str> {
        let mut sinks = Vec::new();
        if self.file.is_some() {
            sinks.push("file");
        }
        if self.endpoint.is_some() {
            sinks.push("http");
        }
        sinks
    }

    fn namespace(&self) -> &str {
        self.namespace.as_deref().unwrap_or("tarn")
    }
}

/// A dataset's OpenLineage identity from its location: `file` + absolute
/// path for local files, `s3://bucket` + key prefix in a bucket; tables
/// without files (views) are named in the job namespace.
pub(crate) fn dataset_id(namespace: &str, table: &str, location: Option<&str>) -> (String, String) {
    if let Some(location) = location
        && let Ok(url) = url::Url::parse(location)
    {
        let path = url.path().trim_end_matches('/');
        return match url.scheme() {
            "file" => ("file".to_string(), path.to_string()),
            scheme => (
                format!("{scheme}://{}", url.host_str().unwrap_or_default()),
                path.trim_start_matches('/').to_string(),
            ),
        };
    }
    (namespace.to_string(), table.to_string())
}

/// What an event says about its run.
pub(crate) struct EventRun<'a> {
    pub id: &'a str,
    pub sql: &'a str,
    /// The user who ran it.
    pub principal: &'a str,
    pub event_type: &'static str,
    pub write: &'a WriteLineage,
    pub rows: Option<u64>,
    pub bytes: Option<u64>,
    pub files: Option<u64>,
    pub error: Option<&'a str>,
}

/// A RunEvent. `locations` maps table names to their locations.
pub(crate) fn run_event(
    config: &OpenLineageConfig,
    run: &EventRun,
    locations: &BTreeMap<String, String>,
) -> Value {
    let namespace = config.namespace();
    let id = |table: &str| dataset_id(namespace, table, locations.get(table).map(String::as_str));
    let target_location = run
        .write
        .target_location
        .clone()
        .or_else(|| locations.get(&run.write.target).cloned())
        .or_else(|| {
            run.write
                .target
                .contains("://")
                .then(|| run.write.target.clone())
        });
    let (out_ns, out_name) = dataset_id(namespace, &run.write.target, target_location.as_deref());
    let inputs: Vec<Value> = run
        .write
        .lineage
        .tables
        .iter()
        .map(|table| {
            let (ns, name) = id(table);
            json!({"namespace": ns, "name": name})
        })
        .collect();
    let input_field = |edge: &crate::lineage::Edge| {
        let (ns, name) = id(&edge.source.table);
        json!({
            "namespace": ns,
            "name": name,
            "field": edge.source.column,
            "transformations": [{
                "type": edge.transformation.kind(),
                "subtype": edge.transformation.subtype(),
                "description": "",
                "masking": false,
            }],
        })
    };
    let mut fields = serde_json::Map::new();
    for (column, edges) in run
        .write
        .target_columns
        .iter()
        .zip(&run.write.lineage.columns)
    {
        let inputs: Vec<Value> = edges.iter().map(input_field).collect();
        fields.insert(column.clone(), json!({"inputFields": inputs}));
    }
    let dataset: Vec<Value> = run.write.lineage.indirect.iter().map(input_field).collect();
    let schema: Vec<Value> = run
        .write
        .target_columns
        .iter()
        .zip(&run.write.target_types)
        .enumerate()
        .map(|(i, (name, data_type))| json!({"name": name, "type": data_type, "ordinal_position": i + 1}))
        .collect();
    let mut output = json!({
        "namespace": out_ns,
        "name": out_name,
        "facets": {
            "schema": {"_producer": PRODUCER, "_schemaURL": SCHEMA_FACET, "fields": schema},
            "columnLineage": {
                "_producer": PRODUCER,
                "_schemaURL": COLUMN_LINEAGE_FACET,
                "fields": fields,
                "dataset": dataset,
            },
        },
    });
    if let Some(rows) = run.rows {
        let mut statistics =
            json!({"_producer": PRODUCER, "_schemaURL": OUTPUT_STATISTICS_FACET, "rowCount": rows});
        if let Some(bytes) = run.bytes {
            statistics["size"] = json!(bytes);
        }
        if let Some(files) = run.files {
            statistics["fileCount"] = json!(files);
        }
        output["outputFacets"] = json!({ "outputStatistics": statistics });
    }
    let mut run_facets = serde_json::Map::new();
    if let Some(error) = run.error {
        run_facets.insert(
            "errorMessage".into(),
            json!({"_producer": PRODUCER, "_schemaURL": ERROR_FACET, "message": error, "programmingLanguage": "SQL"}),
        );
    }
    json!({
        "eventType": run.event_type,
        "eventTime": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "producer": PRODUCER,
        "schemaURL": RUN_EVENT,
        "run": {"runId": run.id, "facets": run_facets},
        "job": {
            "namespace": namespace,
            "name": format!("write.{}", run.write.target),
            "facets": {
                "sql": {"_producer": PRODUCER, "_schemaURL": SQL_FACET, "query": run.sql, "dialect": "datafusion"},
                // Who ran the statement, in OpenLineage's URN form for people.
                "ownership": {
                    "_producer": PRODUCER,
                    "_schemaURL": OWNERSHIP_FACET,
                    "owners": [{"name": format!("user:{}", run.principal), "type": "RUNNER"}],
                },
            },
        },
        "inputs": inputs,
        "outputs": [output],
    })
}

/// The ABORT event of a run whose START event was `start`: the same job,
/// run and datasets, now, with `reason` as its error message. `None` if
/// `start` is not an event.
pub(crate) fn abort_event(start: &str, reason: &str) -> Option<String> {
    let mut event: Value = serde_json::from_str(start).ok()?;
    event["eventType"] = json!("ABORT");
    event["eventTime"] =
        json!(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
    event["run"]["facets"]["errorMessage"] = json!({
        "_producer": PRODUCER,
        "_schemaURL": ERROR_FACET,
        "message": reason,
        "programmingLanguage": "SQL",
    });
    Some(event.to_string())
}

/// Puts the event of `run` into the outbox, once per sink.
pub(crate) fn enqueue(
    tx: &Transaction,
    config: &OpenLineageConfig,
    run: &EventRun,
) -> rusqlite::Result<()> {
    let mut locations = BTreeMap::new();
    {
        let mut statement = tx.prepare(
            "SELECT name, location FROM tables WHERE dropped_at IS NULL AND location IS NOT NULL",
        )?;
        let rows = statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
        for row in rows {
            let (name, location): (String, String) = row?;
            locations.insert(name, location);
        }
    }
    let event = run_event(config, run, &locations).to_string();
    let at = now();
    for sink in config.sinks() {
        tx.execute(
            "INSERT INTO outbox (sink, run_id, event_json, created_at, next_attempt_at) VALUES (?1, ?2, ?3, ?4, ?4)",
            params![sink, run.id, event, at],
        )?;
    }
    Ok(())
}

/// Queues an ABORT event for run `id`, built from each START event it sent.
pub(crate) fn enqueue_abort(
    tx: &Transaction,
    id: &str,
    reason: &str,
    at: &str,
) -> rusqlite::Result<()> {
    let starts: Vec<(String, String)> = {
        let mut statement = tx.prepare(
            "SELECT sink, event_json FROM outbox WHERE run_id = ?1 AND event_json LIKE '%\"eventType\":\"START\"%' ORDER BY id",
        )?;
        let rows = statement.query_map(params![id], |row| Ok((row.get(0)?, row.get(1)?)))?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    for (sink, start) in starts {
        let Some(event) = abort_event(&start, reason) else {
            continue;
        };
        tx.execute(
            "INSERT INTO outbox (sink, run_id, event_json, created_at, next_attempt_at) VALUES (?1, ?2, ?3, ?4, ?4)",
            params![sink, id, event, at],
        )?;
    }
    Ok(())
}

/// Events in the outbox that no sink has accepted yet.
pub(crate) fn outbox_depth(c: &Connection) -> rusqlite::Result<u64> {
    c.query_row(
        "SELECT count(*) FROM outbox WHERE delivered_at IS NULL",
        [],
        |row| row.get::<_, i64>(0),
    )
    .map(|n| u64::try_from(n).unwrap_or(0))
}

/// The next events `sink` should get, oldest first, up to the first that is
/// waiting for a retry.
pub(crate) fn due_events(c: &Connection, sink: &str) -> rusqlite::Result<Vec<(i64, String)>> {
    let at = now();
    let mut statement = c.prepare(
        "SELECT id, event_json, next_attempt_at FROM outbox WHERE sink = ?1 AND delivered_at IS NULL ORDER BY id LIMIT 100",
    )?;
    let rows = statement.query_map(params![sink], |row| {
        Ok((
            row.get::<_, i64>(0)?,
            row.get::<_, String>(1)?,
            row.get::<_, String>(2)?,
        ))
    })?;
    let mut due = Vec::new();
    for row in rows {
        let (id, event, next) = row?;
        if next > at {
            break;
        }
        due.push((id, event));
    }
    Ok(due)
}

/// Marks an outbox event delivered, or schedules its retry: 0.5 s doubling
/// to 10 s.
pub(crate) fn delivered(c: &Connection, id: i64, error: Option<String>) -> rusqlite::Result<()> {
    match error {
        None => c.execute(
            "UPDATE outbox SET delivered_at = ?2, last_error = NULL WHERE id = ?1",
            params![id, now()],
        )?,
        Some(error) => {
            let attempts: i64 = c.query_row(
                "SELECT attempts FROM outbox WHERE id = ?1",
                params![id],
                |row| row.get(0),
            )?;
            let backoff_ms = (500_i64 << attempts.min(5)).min(10_000);
            let next = (chrono::Utc::now() + chrono::Duration::milliseconds(backoff_ms))
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
            c.execute(
                "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = ?2, last_error = ?3 WHERE id = ?1",
                params![id, next, error],
            )?
        }
    };
    Ok(())
}
