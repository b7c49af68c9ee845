//! Tables in SQLite: each table or view with its schema versions and
//! version sizes, what recreates it at start, what was dropped, and the
//! remembered `SET` statements. Each function is one statement or one
//! transaction.

use arrow::datatypes::Schema;
use rusqlite::{Connection, OptionalExtension, Transaction, params};

use super::{TableRecord, TableVersionRecord, now};

/// Records `table` with its current `schema`: a new entry, or a new schema
/// version when the schema changed. Returns the schema version.
pub(crate) fn record(
    c: &mut Connection,
    table: &TableRecord,
    schema: &Schema,
    run_id: Option<&str>,
) -> rusqlite::Result<i64> {
    let schema_json = schema_json(schema);
    let fingerprint = fingerprint(&schema_json);
    let tx = c.transaction()?;
    let existing: Option<i64> = tx
        .query_row(
            "SELECT id FROM tables WHERE name = ?1 AND dropped_at IS NULL",
            params![table.name],
            |row| row.get(0),
        )
        .optional()?;
    let table_id = match existing {
        Some(id) => {
            // How a table came to be does not change when it is written to.
            tx.execute(
                "UPDATE tables SET location = coalesce(?2, location), format = coalesce(?3, format), definition = coalesce(?4, definition) WHERE id = ?1",
                params![id, table.location, table.format, table.definition],
            )?;
            id
        }
        None => {
            tx.execute(
                "INSERT INTO tables (name, kind, location, format, definition, created_at, created_by_run) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![table.name, table.origin.as_str(), table.location, table.format, table.definition, now(), run_id],
            )?;
            tx.last_insert_rowid()
        }
    };
    let latest: Option<(i64, String)> = tx
        .query_row(
            "SELECT version, fingerprint FROM schema_versions WHERE table_id = ?1 ORDER BY version DESC LIMIT 1",
            params![table_id],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .optional()?;
    let version = match latest {
        Some((version, known)) if known == fingerprint => version,
        Some((version, _)) => insert_schema(
            &tx,
            table_id,
            version + 1,
            &schema_json,
            &fingerprint,
            run_id,
        )?,
        None => insert_schema(&tx, table_id, 1, &schema_json, &fingerprint, run_id)?,
    };
    tx.commit()?;
    Ok(version)
}

fn insert_schema(
    tx: &Transaction,
    table_id: i64,
    version: i64,
    schema_json: &str,
    fingerprint: &str,
    run_id: Option<&str>,
) -> rusqlite::Result<i64> {
    tx.execute(
        "INSERT INTO schema_versions (table_id, version, schema_json, fingerprint, created_at, run_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![table_id, version, schema_json, fingerprint, now(), run_id],
    )?;
    Ok(version)
}

/// Records the size of a version of the table `name` (idempotent).
pub(crate) fn record_version(
    c: &Connection,
    name: &str,
    version: &TableVersionRecord,
    run_id: Option<&str>,
) -> rusqlite::Result<()> {
    let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    c.execute(
        "INSERT OR IGNORE INTO table_versions (table_id, version, rows_total, files, bytes, committed_at, run_id) \
         SELECT id, ?2, ?3, ?4, ?5, ?6, ?7 FROM tables WHERE name = ?1 AND dropped_at IS NULL",
        params![
            name,
            count(version.version),
            version.rows.map(count),
            count(version.files),
            count(version.bytes),
            now(),
            run_id
        ],
    )
    .map(|_| ())
}

/// Marks `name` dropped (its history stays).
pub(crate) fn drop(c: &Connection, name: &str) -> rusqlite::Result<()> {
    c.execute(
        "UPDATE tables SET dropped_at = ?2 WHERE name = ?1 AND dropped_at IS NULL",
        params![name, now()],
    )
    .map(|_| ())
}

/// Statements that recreate the views and external tables created through
/// SQL, oldest first.
pub(crate) fn definitions(c: &Connection) -> rusqlite::Result<Vec<(String, String)>> {
    let mut statement = c.prepare(
        "SELECT name, definition FROM tables WHERE dropped_at IS NULL AND definition IS NOT NULL ORDER BY id",
    )?;
    let rows = statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
    rows.collect()
}

/// Tables Tarn wrote (`CREATE TABLE`), with their locations, oldest first.
pub(crate) fn created(c: &Connection) -> rusqlite::Result<Vec<(String, String)>> {
    let mut statement = c.prepare(
        "SELECT name, location FROM tables WHERE dropped_at IS NULL AND kind = 'created' AND location IS NOT NULL ORDER BY id",
    )?;
    let rows = statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
    rows.collect()
}

/// Locations of tables dropped with `DROP TABLE` (their files kept) that no
/// live table has: the lake still shows them, but they stay dropped.
pub(crate) fn dropped_locations(
    c: &Connection,
) -> rusqlite::Result<std::collections::HashSet<String>> {
    let mut statement = c.prepare(
        "SELECT DISTINCT location FROM tables t WHERE dropped_at IS NOT NULL AND location IS NOT NULL \
         AND NOT EXISTS (SELECT 1 FROM tables l WHERE l.dropped_at IS NULL AND l.location = t.location)",
    )?;
    let rows = statement.query_map([], |row| row.get(0))?;
    rows.collect()
}

/// Remembers a `SET` statement, so settings survive a restart.
pub(crate) fn record_setting(c: &Connection, key: &str, statement: &str) -> rusqlite::Result<()> {
    c.execute(
        "INSERT INTO settings (key, statement) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET statement = excluded.statement",
        params![key, statement],
    )
    .map(|_| ())
}

/// Forgets the `SET` of `key` (after `RESET key`).
pub(crate) fn forget_setting(c: &Connection, key: &str) -> rusqlite::Result<()> {
    c.execute("DELETE FROM settings WHERE key = ?1", params![key])
        .map(|_| ())
}

/// The remembered `SET` statements.
pub(crate) fn settings(c: &Connection) -> rusqlite::Result<Vec<String>> {
    let mut statement = c.prepare("SELECT statement FROM settings ORDER BY key")?;
    let rows = statement.query_map([], |row| row.get(0))?;
    rows.collect()
}

/// A schema as JSON: `[{"name", "type", "nullable"}]`, stable across releases.
pub fn schema_json(schema: &Schema) -> String {
    let fields: Vec<serde_json::Value> = schema
        .fields()
        .iter()
        .map(|f| {
            serde_json::json!({
                "name": f.name(),
                "type": f.data_type().to_string(),
                "nullable": f.is_nullable(),
            })
        })
        .collect();
    serde_json::Value::Array(fields).to_string()
}

fn fingerprint(schema_json: &str) -> String {
    // FNV-1a: stable, dependency-free; collisions only cost a missed version.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in schema_json.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")
}
