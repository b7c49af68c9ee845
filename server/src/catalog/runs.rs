//! Runs in SQLite: a statement's start, its end with its inputs and a
//! write's lineage, and the runs an earlier process left open. Each function
//! is one transaction; the OpenLineage events of a write go into the outbox
//! in the same transaction.

use rusqlite::{Connection, Transaction, params};

use super::openlineage::{self, EventRun, OpenLineageConfig};
use super::{InterruptedRun, RunEnd, RunStart, RunState, WriteLineage, now};

/// Records that a run started (and queues a write's START event).
pub(crate) fn start(
    c: &mut Connection,
    events: Option<&OpenLineageConfig>,
    run: &RunStart,
    inputs: &[String],
    write: Option<&WriteLineage>,
) -> rusqlite::Result<()> {
    let tx = c.transaction()?;
    tx.execute(
        "INSERT INTO runs (id, sql_text, principal, kind, state, started_at, target_location) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            run.id,
            run.sql,
            run.principal,
            run.kind.as_str(),
            RunState::Running.as_str(),
            now(),
            run.target_location
        ],
    )?;
    record_inputs(&tx, &run.id, inputs)?;
    if let (Some(write), Some(events)) = (write, events) {
        let event = EventRun {
            id: &run.id,
            sql: &run.sql,
            principal: &run.principal,
            event_type: "START",
            write,
            rows: None,
            bytes: None,
            files: None,
            error: None,
        };
        openlineage::enqueue(&tx, events, &event)?;
    }
    tx.commit()
}

/// Records how a run ended, and for a write that completed, its lineage
/// (and queues its COMPLETE or FAIL event).
pub(crate) fn end(
    c: &mut Connection,
    events: Option<&OpenLineageConfig>,
    id: &str,
    end: &RunEnd,
    write: Option<&WriteLineage>,
) -> rusqlite::Result<()> {
    let tx = c.transaction()?;
    let complete = write.map(|w| w.lineage.complete);
    let count = |n: Option<u64>| n.map(|n| i64::try_from(n).unwrap_or(i64::MAX));
    tx.execute(
        "UPDATE runs SET state = ?2, ended_at = ?3, rows_out = ?4, error = ?5, lineage_complete = coalesce(?6, lineage_complete), bytes_out = ?7, rows_in = ?8, bytes_in = ?9, peak_memory_bytes = ?10, spilled_bytes = ?11, queue_ms = ?12, note = ?13 WHERE id = ?1 AND state = 'RUNNING'",
        params![
            id,
            end.state.as_str(),
            now(),
            count(end.rows_out),
            end.error,
            complete,
            count(end.bytes_out),
            count(end.rows_in),
            count(end.bytes_in),
            count(end.usage.as_ref().map(|u| u.peak_memory)),
            count(end.usage.as_ref().map(|u| u.spilled_bytes)),
            count(end.usage.as_ref().map(|u| u.queued.as_millis() as u64)),
            end.usage.as_ref().and_then(|u| u.note.clone()),
        ],
    )?;
    if let Some(write) = write.filter(|_| end.state == RunState::Complete) {
        record_lineage(&tx, id, write)?;
    }
    if let (Some(write), Some(events)) = (write, events) {
        let (sql, principal): (String, String) = tx.query_row(
            "SELECT sql_text, principal FROM runs WHERE id = ?1",
            params![id],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )?;
        let event = EventRun {
            id,
            sql: &sql,
            principal: &principal,
            event_type: end.state.as_str(),
            write,
            rows: end.rows_out,
            bytes: end.bytes_out,
            files: end.files_out,
            error: end.error.as_deref(),
        };
        openlineage::enqueue(&tx, events, &event)?;
    }
    tx.commit()
}

fn record_inputs(tx: &Transaction, id: &str, inputs: &[String]) -> rusqlite::Result<()> {
    for table in inputs {
        tx.execute(
            "INSERT OR IGNORE INTO run_inputs (run_id, table_name) VALUES (?1, ?2)",
            params![id, table],
        )?;
    }
    Ok(())
}

/// The runs still RUNNING. At start, before anything runs, these are the
/// runs an earlier process left unfinished.
pub(crate) fn interrupted(c: &Connection) -> rusqlite::Result<Vec<InterruptedRun>> {
    let mut statement = c.prepare(
        "SELECT id, kind, target_location, started_at FROM runs WHERE state = 'RUNNING' ORDER BY id",
    )?;
    let rows = statement.query_map([], |row| {
        let started: String = row.get(3)?;
        Ok(InterruptedRun {
            id: row.get(0)?,
            kind: row.get(1)?,
            target_location: row.get(2)?,
            started_at: chrono::DateTime::parse_from_rfc3339(&started)
                .map(|t| t.with_timezone(&chrono::Utc))
                .unwrap_or(chrono::DateTime::UNIX_EPOCH),
        })
    })?;
    rows.collect()
}

/// Ends `ids` as ABORT with `reason`, and queues an ABORT event for each
/// that sent a START event: one transaction.
pub(crate) fn abort(c: &mut Connection, ids: &[String], reason: &str) -> rusqlite::Result<()> {
    let tx = c.transaction()?;
    let at = now();
    for id in ids {
        tx.execute(
            "UPDATE runs SET state = ?2, ended_at = ?3, error = ?4 WHERE id = ?1 AND state = 'RUNNING'",
            params![id, RunState::Abort.as_str(), at, reason],
        )?;
        openlineage::enqueue_abort(&tx, id, reason, &at)?;
    }
    tx.commit()
}

fn record_lineage(tx: &Transaction, run_id: &str, write: &WriteLineage) -> rusqlite::Result<()> {
    for source in &write.lineage.tables {
        tx.execute(
            "INSERT OR IGNORE INTO table_lineage (run_id, source_table, target_table) VALUES (?1, ?2, ?3)",
            params![run_id, source, write.target],
        )?;
    }
    let insert = |source: &crate::lineage::Edge, target_column: &str| {
        tx.execute(
            "INSERT OR IGNORE INTO column_lineage (run_id, source_table, source_column, target_table, target_column, kind, subtype) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                run_id,
                source.source.table,
                source.source.column,
                write.target,
                target_column,
                source.transformation.kind(),
                source.transformation.subtype()
            ],
        )
        .map(|_| ())
    };
    for (edges, column) in write.lineage.columns.iter().zip(&write.target_columns) {
        for edge in edges {
            insert(edge, column)?;
        }
    }
    // Indirect edges shape every row: they are recorded against the table ('*').
    for edge in &write.lineage.indirect {
        insert(edge, "*")?;
    }
    Ok(())
}
