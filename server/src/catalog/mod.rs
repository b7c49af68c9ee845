//! The persistent catalog: every table and view, its schema history, every
//! run (statement) with its lineage, in SQLite (WAL mode) under the state
//! folder.
//!
//! Invariants:
//! - One server owns a state folder at a time (an OS file lock on `LOCK`).
//! - Each change is one SQLite transaction: a crash leaves the catalog as it
//!   was before or after, never half-written.
//! - The SQL is plain (TEXT, INTEGER, no SQLite-only types), so the schema
//!   ports to Postgres.
//! - A catalog written by a newer Tarn is refused at start, never rewritten.

pub mod openlineage;
pub mod system;

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use arrow::datatypes::Schema;
use rusqlite::{Connection, OptionalExtension, params};

use crate::lineage::Lineage;

/// The catalog schema this Tarn writes; older ones are migrated, newer refused.
/// Version 2 added `runs.target_location`.
const SCHEMA_VERSION: i64 = 2;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tables (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    location TEXT,
    format TEXT,
    definition TEXT,
    created_at TEXT NOT NULL,
    created_by_run TEXT,
    dropped_at TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS tables_live_name ON tables (name) WHERE dropped_at IS NULL;
CREATE TABLE IF NOT EXISTS schema_versions (
    table_id INTEGER NOT NULL REFERENCES tables (id),
    version INTEGER NOT NULL,
    schema_json TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    created_at TEXT NOT NULL,
    run_id TEXT,
    PRIMARY KEY (table_id, version)
);
CREATE TABLE IF NOT EXISTS table_versions (
    table_id INTEGER NOT NULL REFERENCES tables (id),
    version INTEGER NOT NULL,
    rows_total INTEGER,
    files INTEGER,
    bytes INTEGER,
    committed_at TEXT NOT NULL,
    run_id TEXT,
    PRIMARY KEY (table_id, version)
);
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    sql_text TEXT NOT NULL,
    principal TEXT NOT NULL,
    kind TEXT NOT NULL,
    state TEXT NOT NULL,
    started_at TEXT NOT NULL,
    ended_at TEXT,
    rows_out INTEGER,
    bytes_out INTEGER,
    rows_in INTEGER,
    bytes_in INTEGER,
    lineage_complete INTEGER,
    error TEXT,
    target_location TEXT
);
CREATE TABLE IF NOT EXISTS run_inputs (
    run_id TEXT NOT NULL REFERENCES runs (id),
    table_name TEXT NOT NULL,
    PRIMARY KEY (run_id, table_name)
);
CREATE TABLE IF NOT EXISTS table_lineage (
    run_id TEXT NOT NULL REFERENCES runs (id),
    source_table TEXT NOT NULL,
    target_table TEXT NOT NULL,
    PRIMARY KEY (run_id, source_table, target_table)
);
CREATE TABLE IF NOT EXISTS column_lineage (
    run_id TEXT NOT NULL REFERENCES runs (id),
    source_table TEXT NOT NULL,
    source_column TEXT NOT NULL,
    target_table TEXT NOT NULL,
    target_column TEXT NOT NULL,
    kind TEXT NOT NULL,
    subtype TEXT NOT NULL,
    PRIMARY KEY (run_id, source_table, source_column, target_table, target_column, kind, subtype)
);
CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, statement TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY,
    sink TEXT NOT NULL,
    run_id TEXT NOT NULL,
    event_json TEXT NOT NULL,
    created_at TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TEXT NOT NULL,
    delivered_at TEXT,
    last_error TEXT
);
";

/// Why the catalog cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// The state folder cannot be created or read.
    #[error("cannot use the state folder {path}: {source}; pick another with --state-dir")]
    Folder {
        /// The folder.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Another server holds the catalog.
    #[error(
        "the catalog in {path} is in use by another Tarn server; stop that server, or give this one its own --state-dir"
    )]
    Locked {
        /// The state folder.
        path: PathBuf,
    },
    /// The catalog was written by a newer Tarn.
    #[error(
        "the catalog {path} has schema version {found}, newer than this Tarn understands ({supported}); run a newer Tarn, or another --state-dir"
    )]
    TooNew {
        /// The database file.
        path: PathBuf,
        /// Its version.
        found: i64,
        /// Ours.
        supported: i64,
    },
    /// SQLite failed (corrupt file, full disk, ...).
    #[error("catalog {path}: {message}")]
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// The cause.
        message: String,
    },
}

/// What kind of object a catalog table entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableKind {
    /// Found in the lake.
    Discovered,
    /// Registered with `CREATE EXTERNAL TABLE`.
    External,
    /// Written by Tarn (`CREATE TABLE`).
    Created,
    /// A view (its SQL is the definition).
    View,
}

impl TableKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Discovered => "discovered",
            Self::External => "external",
            Self::Created => "created",
            Self::View => "view",
        }
    }
}

/// A table as the catalog records it.
#[derive(Debug, Clone)]
pub struct TableRecord {
    /// Its name.
    pub name: String,
    /// How it came to be.
    pub kind: TableKind,
    /// Where its files are.
    pub location: Option<String>,
    /// Its format (`parquet`, `delta`, ...).
    pub format: Option<String>,
    /// For views and external tables: the statement that recreates it.
    pub definition: Option<String>,
}

/// A statement being run.
#[derive(Debug, Clone)]
pub struct RunStart {
    /// Unique id (UUID v7: sortable by time).
    pub id: String,
    /// The SQL text.
    pub sql: String,
    /// Who ran it.
    pub principal: String,
    /// `query`, `write`, `ddl`.
    pub kind: &'static str,
    /// For a write, the folder of the table it writes.
    pub target_location: Option<String>,
}

/// A run an earlier process started and never ended (it was killed, or it
/// stopped before a result was fetched).
#[derive(Debug, Clone)]
pub struct InterruptedRun {
    /// Its id.
    pub id: String,
    /// `query`, `write`, `ddl`.
    pub kind: String,
    /// For a write, the folder of the table it was writing.
    pub target_location: Option<String>,
    /// When it started.
    pub started_at: chrono::DateTime<chrono::Utc>,
}

/// How a run ended.
#[derive(Debug, Clone)]
pub struct RunEnd {
    /// `COMPLETE` or `FAIL`.
    pub state: &'static str,
    /// Rows written (for writes).
    pub rows_out: Option<u64>,
    /// Bytes of data files written, when known.
    pub bytes_out: Option<u64>,
    /// Data files written, when known.
    pub files_out: Option<u64>,
    /// Rows the statement read from its sources, when known.
    pub rows_in: Option<u64>,
    /// Bytes it read from files, when known.
    pub bytes_in: Option<u64>,
    /// The failure.
    pub error: Option<String>,
}

/// The lineage of a write: its target and the traced plan.
#[derive(Debug, Clone)]
pub struct WriteLineage {
    /// The table written.
    pub target: String,
    /// Its columns, by position of the plan's output.
    pub target_columns: Vec<String>,
    /// Their types.
    pub target_types: Vec<String>,
    /// Where the target's files are, when known before it is written.
    pub target_location: Option<String>,
    /// The traced plan.
    pub lineage: Lineage,
}

/// The catalog.
pub struct Catalog {
    connection: Mutex<Connection>,
    path: PathBuf,
    pub(crate) openlineage: Option<openlineage::OpenLineageConfig>,
    // Held for the server's lifetime: the OS releases it if the process dies.
    _lock: File,
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Catalog({})", self.path.display())
    }
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

impl Catalog {
    /// Opens (or creates) the catalog in `state_dir`.
    pub fn open(state_dir: &Path) -> Result<Self, CatalogError> {
        let folder_error = |source| CatalogError::Folder {
            path: state_dir.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(state_dir).map_err(folder_error)?;
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(state_dir.join("LOCK"))
            .map_err(folder_error)?;
        if lock.try_lock().is_err() {
            return Err(CatalogError::Locked {
                path: state_dir.to_path_buf(),
            });
        }
        let path = state_dir.join("catalog.sqlite");
        let sqlite = |e: rusqlite::Error| CatalogError::Sqlite {
            path: path.clone(),
            message: e.to_string(),
        };
        let connection = Connection::open(&path).map_err(sqlite)?;
        connection
            .pragma_update(None, "journal_mode", "WAL")
            .map_err(sqlite)?;
        connection
            // WAL + NORMAL: a process crash loses nothing; a power cut may
            // lose the last commits, never corrupt the file.
            .pragma_update(None, "synchronous", "NORMAL")
            .map_err(sqlite)?;
        connection
            .pragma_update(None, "foreign_keys", "ON")
            .map_err(sqlite)?;
        let found: Option<i64> = connection
            .query_row(
                "SELECT value FROM meta WHERE key = 'schema_version'",
                [],
                |row| row.get::<_, String>(0),
            )
            .optional()
            .or_else(|e| match e {
                // A new file has no meta table yet.
                rusqlite::Error::SqliteFailure(_, Some(ref m)) if m.contains("no such table") => {
                    Ok(None)
                }
                other => Err(other),
            })
            .map_err(sqlite)?
            .and_then(|v| v.parse().ok());
        if let Some(found) = found
            && found > SCHEMA_VERSION
        {
            return Err(CatalogError::TooNew {
                path,
                found,
                supported: SCHEMA_VERSION,
            });
        }
        connection.execute_batch(SCHEMA).map_err(sqlite)?;
        if found == Some(1) {
            connection
                .execute_batch("ALTER TABLE runs ADD COLUMN target_location TEXT")
                .map_err(sqlite)?;
        }
        connection
            .execute(
                "INSERT INTO meta (key, value) VALUES ('schema_version', ?1)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                params![SCHEMA_VERSION.to_string()],
            )
            .map_err(sqlite)?;
        Ok(Self {
            connection: Mutex::new(connection),
            path,
            openlineage: None,
            _lock: lock,
        })
    }

    /// Queues OpenLineage events for each write, for `config`'s sinks.
    pub fn with_openlineage(mut self, config: openlineage::OpenLineageConfig) -> Self {
        self.openlineage = (!config.sinks().is_empty()).then_some(config);
        self
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> Result<T, CatalogError> {
        let mut guard = match self.connection.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        f(&mut guard).map_err(|e| CatalogError::Sqlite {
            path: self.path.clone(),
            message: e.to_string(),
        })
    }

    /// Records that a run started (and queues its START event for a write).
    pub fn start_run(
        &self,
        run: &RunStart,
        inputs: &[String],
        write: Option<&WriteLineage>,
    ) -> Result<(), CatalogError> {
        self.with(|c| {
            let tx = c.transaction()?;
            tx.execute(
                "INSERT INTO runs (id, sql_text, principal, kind, state, started_at, target_location) VALUES (?1, ?2, ?3, ?4, 'RUNNING', ?5, ?6)",
                params![run.id, run.sql, run.principal, run.kind, now(), run.target_location],
            )?;
            for table in inputs {
                tx.execute(
                    "INSERT OR IGNORE INTO run_inputs (run_id, table_name) VALUES (?1, ?2)",
                    params![run.id, table],
                )?;
            }
            if let Some(write) = write {
                let event = openlineage::EventRun {
                    id: &run.id,
                    sql: &run.sql,
                    event_type: "START",
                    write,
                    rows: None,
                    bytes: None,
                    files: None,
                    error: None,
                };
                self.enqueue(&tx, &event)?;
            }
            tx.commit()
        })
    }

    /// Puts the event for `run` into the outbox, once per sink.
    fn enqueue(
        &self,
        tx: &rusqlite::Transaction,
        run: &openlineage::EventRun,
    ) -> rusqlite::Result<()> {
        let Some(config) = &self.openlineage else {
            return Ok(());
        };
        let mut locations = BTreeMap::new();
        {
            let mut statement =
                tx.prepare("SELECT name, location FROM tables WHERE dropped_at IS NULL AND location IS NOT NULL")?;
            let rows = statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
            for row in rows {
                let (name, location): (String, String) = row?;
                locations.insert(name, location);
            }
        }
        let event = openlineage::run_event(config, run, &locations).to_string();
        let at = now();
        for sink in config.sinks() {
            tx.execute(
                "INSERT INTO outbox (sink, run_id, event_json, created_at, next_attempt_at) VALUES (?1, ?2, ?3, ?4, ?4)",
                params![sink, run.id, event, at],
            )?;
        }
        Ok(())
    }

    /// The next events `sink` should get, oldest first, up to the first
    /// that is waiting for a retry.
    pub(crate) fn due_events(&self, sink: &str) -> Result<Vec<(i64, String)>, CatalogError> {
        let at = now();
        self.with(|c| {
            let mut statement = c.prepare(
                "SELECT id, event_json, next_attempt_at FROM outbox WHERE sink = ?1 AND delivered_at IS NULL ORDER BY id LIMIT 100",
            )?;
            let rows = statement.query_map(params![sink], |row| {
                Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?, row.get::<_, String>(2)?))
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
        })
    }

    /// Marks an outbox event delivered, or schedules its retry.
    pub(crate) fn delivered(&self, id: i64, error: Option<String>) -> Result<(), CatalogError> {
        self.with(|c| {
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
        })
    }

    /// Records how a run ended, the tables it read and, for a write, its
    /// lineage: all in one transaction.
    pub fn end_run(
        &self,
        id: &str,
        end: &RunEnd,
        inputs: &[String],
        write: Option<&WriteLineage>,
    ) -> Result<(), CatalogError> {
        self.with(|c| {
            let tx = c.transaction()?;
            let complete = write.map(|w| w.lineage.complete);
            tx.execute(
                "UPDATE runs SET state = ?2, ended_at = ?3, rows_out = ?4, error = ?5, lineage_complete = coalesce(?6, lineage_complete), bytes_out = ?7, rows_in = ?8, bytes_in = ?9 WHERE id = ?1",
                params![
                    id,
                    end.state,
                    now(),
                    end.rows_out.map(|r| r as i64),
                    end.error,
                    complete,
                    end.bytes_out.map(|b| b as i64),
                    end.rows_in.map(|r| r as i64),
                    end.bytes_in.map(|b| b as i64)
                ],
            )?;
            for table in inputs {
                tx.execute(
                    "INSERT OR IGNORE INTO run_inputs (run_id, table_name) VALUES (?1, ?2)",
                    params![id, table],
                )?;
            }
            if let Some(write) = write.filter(|_| end.state == "COMPLETE") {
                record_lineage(&tx, id, write)?;
            }
            if let Some(write) = write {
                let sql: String =
                    tx.query_row("SELECT sql_text FROM runs WHERE id = ?1", params![id], |row| {
                        row.get(0)
                    })?;
                let event = openlineage::EventRun {
                    id,
                    sql: &sql,
                    event_type: end.state,
                    write,
                    rows: end.rows_out,
                    bytes: end.bytes_out,
                    files: end.files_out,
                    error: end.error.as_deref(),
                };
                self.enqueue(&tx, &event)?;
            }
            tx.commit()
        })
    }

    /// The runs still RUNNING. At start, before anything runs, these are the
    /// runs an earlier process left unfinished.
    pub fn interrupted_runs(&self) -> Result<Vec<InterruptedRun>, CatalogError> {
        self.with(|c| {
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
        })
    }

    /// Ends `runs` as ABORT with `reason`, and queues an ABORT event for
    /// each that sent a START event: all in one transaction.
    pub fn abort_runs(&self, runs: &[String], reason: &str) -> Result<(), CatalogError> {
        self.with(|c| {
            let tx = c.transaction()?;
            let at = now();
            for id in runs {
                tx.execute(
                    "UPDATE runs SET state = 'ABORT', ended_at = ?2, error = ?3 WHERE id = ?1 AND state = 'RUNNING'",
                    params![id, at, reason],
                )?;
                let starts: Vec<(String, String)> = {
                    let mut statement = tx.prepare(
                        "SELECT sink, event_json FROM outbox WHERE run_id = ?1 AND event_json LIKE '%\"eventType\":\"START\"%' ORDER BY id",
                    )?;
                    let rows = statement.query_map(params![id], |row| Ok((row.get(0)?, row.get(1)?)))?;
                    rows.collect::<rusqlite::Result<_>>()?
                };
                for (sink, start) in starts {
                    let Some(event) = openlineage::abort_event(&start, reason) else {
                        continue;
                    };
                    tx.execute(
                        "INSERT INTO outbox (sink, run_id, event_json, created_at, next_attempt_at) VALUES (?1, ?2, ?3, ?4, ?4)",
                        params![sink, id, event, at],
                    )?;
                }
            }
            tx.commit()
        })
    }

    /// Records `table` with its current `schema`: a new entry, or a new
    /// schema version when the schema changed. Returns the schema version.
    pub fn record_table(
        &self,
        table: &TableRecord,
        schema: &Schema,
        run_id: Option<&str>,
    ) -> Result<i64, CatalogError> {
        let schema_json = schema_json(schema);
        let fingerprint = fingerprint(&schema_json);
        self.with(|c| {
            let tx = c.transaction()?;
            let existing: Option<(i64, String)> = tx
                .query_row(
                    "SELECT id, kind FROM tables WHERE name = ?1 AND dropped_at IS NULL",
                    params![table.name],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )
                .optional()?;
            let table_id = match existing {
                Some((id, _)) => {
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
                        params![table.name, table.kind.as_str(), table.location, table.format, table.definition, now(), run_id],
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
                Some((version, _)) => insert_schema(&tx, table_id, version + 1, &schema_json, &fingerprint, run_id)?,
                None => insert_schema(&tx, table_id, 1, &schema_json, &fingerprint, run_id)?,
            };
            tx.commit()?;
            Ok(version)
        })
    }

    /// Records the size of a version of the table `name` (idempotent).
    pub fn record_table_version(
        &self,
        name: &str,
        stats: &crate::delta::VersionStats,
        run_id: Option<&str>,
    ) -> Result<(), CatalogError> {
        self.with(|c| {
            c.execute(
                "INSERT OR IGNORE INTO table_versions (table_id, version, rows_total, files, bytes, committed_at, run_id) \
                 SELECT id, ?2, ?3, ?4, ?5, ?6, ?7 FROM tables WHERE name = ?1 AND dropped_at IS NULL",
                params![
                    name,
                    stats.version as i64,
                    stats.rows.map(|r| r as i64),
                    stats.files as i64,
                    stats.bytes as i64,
                    now(),
                    run_id
                ],
            )
            .map(|_| ())
        })
    }

    /// Marks `name` dropped (its history stays).
    pub fn drop_table(&self, name: &str) -> Result<(), CatalogError> {
        self.with(|c| {
            c.execute(
                "UPDATE tables SET dropped_at = ?2 WHERE name = ?1 AND dropped_at IS NULL",
                params![name, now()],
            )
            .map(|_| ())
        })
    }

    /// Statements that recreate the views and external tables created
    /// through SQL, oldest first.
    pub fn definitions(&self) -> Result<Vec<(String, String)>, CatalogError> {
        self.with(|c| {
            let mut statement = c.prepare(
                "SELECT name, definition FROM tables WHERE dropped_at IS NULL AND definition IS NOT NULL ORDER BY id",
            )?;
            let rows = statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
            rows.collect()
        })
    }

    /// Tables Tarn wrote (`CREATE TABLE`), with their locations, oldest first.
    pub fn created_tables(&self) -> Result<Vec<(String, String)>, CatalogError> {
        self.with(|c| {
            let mut statement = c.prepare(
                "SELECT name, location FROM tables WHERE dropped_at IS NULL AND kind = 'created' AND location IS NOT NULL ORDER BY id",
            )?;
            let rows = statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
            rows.collect()
        })
    }

    /// Locations of tables dropped with `DROP TABLE` (their files kept) that
    /// no live table has: the lake still shows them, but they stay dropped.
    pub fn dropped_locations(&self) -> Result<std::collections::HashSet<String>, CatalogError> {
        self.with(|c| {
            let mut statement = c.prepare(
                "SELECT DISTINCT location FROM tables t WHERE dropped_at IS NOT NULL AND location IS NOT NULL \
                 AND NOT EXISTS (SELECT 1 FROM tables l WHERE l.dropped_at IS NULL AND l.location = t.location)",
            )?;
            let rows = statement.query_map([], |row| row.get(0))?;
            rows.collect()
        })
    }

    /// Remembers a `SET` statement, so settings survive a restart.
    pub fn record_setting(&self, key: &str, statement: &str) -> Result<(), CatalogError> {
        self.with(|c| {
            c.execute(
                "INSERT INTO settings (key, statement) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET statement = excluded.statement",
                params![key, statement],
            )
            .map(|_| ())
        })
    }

    /// Forgets the `SET` of `key` (after `RESET key`).
    pub fn forget_setting(&self, key: &str) -> Result<(), CatalogError> {
        self.with(|c| {
            c.execute("DELETE FROM settings WHERE key = ?1", params![key])
                .map(|_| ())
        })
    }

    /// The remembered `SET` statements.
    pub fn settings(&self) -> Result<Vec<String>, CatalogError> {
        self.with(|c| {
            let mut statement = c.prepare("SELECT statement FROM settings ORDER BY key")?;
            let rows = statement.query_map([], |row| row.get(0))?;
            rows.collect()
        })
    }

    /// Runs a read-only query against the catalog (for the system tables).
    pub(crate) fn read<T>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, CatalogError> {
        self.with(|c| f(c))
    }
}

fn insert_schema(
    tx: &rusqlite::Transaction,
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

fn record_lineage(
    tx: &rusqlite::Transaction,
    run_id: &str,
    write: &WriteLineage,
) -> rusqlite::Result<()> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::{DataType, Field};

    #[test]
    fn schema_changes_become_versions_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let table = TableRecord {
            name: "t".into(),
            kind: TableKind::Discovered,
            location: Some("file:///lake/t/".into()),
            format: Some("parquet".into()),
            definition: None,
        };
        let one = Schema::new(vec![Field::new("a", DataType::Int64, true)]);
        let two = Schema::new(vec![
            Field::new("a", DataType::Int64, true),
            Field::new("b", DataType::Utf8, true),
        ]);
        {
            let catalog = Catalog::open(dir.path()).unwrap();
            assert_eq!(catalog.record_table(&table, &one, None).unwrap(), 1);
            assert_eq!(catalog.record_table(&table, &one, None).unwrap(), 1);
            assert_eq!(catalog.record_table(&table, &two, None).unwrap(), 2);
            assert!(matches!(
                Catalog::open(dir.path()),
                Err(CatalogError::Locked { .. })
            ));
        }
        let catalog = Catalog::open(dir.path()).unwrap();
        assert_eq!(catalog.record_table(&table, &two, None).unwrap(), 2);
    }

    #[test]
    fn a_full_disk_is_a_clear_error_and_loses_nothing_committed() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = Catalog::open(dir.path()).unwrap();
        // SQLite reports a full disk when the file may not grow: the same error path.
        catalog
            .with(|c| c.pragma_update(None, "max_page_count", 40))
            .unwrap();
        let mut started = Vec::new();
        let err = loop {
            let run = RunStart {
                id: format!("run-{}", started.len()),
                sql: "x".repeat(2000),
                principal: "test".into(),
                kind: "query",
                target_location: None,
            };
            match catalog.start_run(&run, &["t".to_string()], None) {
                Ok(()) => started.push(run.id),
                Err(err) => break err,
            }
            assert!(started.len() < 10_000, "the page limit never hit");
        };
        let message = err.to_string();
        assert!(
            message.contains("full") && message.contains("catalog.sqlite"),
            "{message}"
        );
        // Every run recorded before stays, with its input; nothing half-written.
        let counted: (i64, i64) = catalog
            .read(|c| {
                c.query_row(
                    "SELECT (SELECT count(*) FROM runs), (SELECT count(*) FROM run_inputs)",
                    [],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )
            })
            .unwrap();
        assert_eq!(counted, (started.len() as i64, started.len() as i64));
    }

    #[test]
    fn a_version_1_catalog_is_upgraded_and_keeps_its_runs() {
        let dir = tempfile::tempdir().unwrap();
        drop(Catalog::open(dir.path()).unwrap());
        // What Tarn 0.1 wrote: no runs.target_location, schema version 1.
        let db = Connection::open(dir.path().join("catalog.sqlite")).unwrap();
        db.execute_batch(
            "ALTER TABLE runs DROP COLUMN target_location;
             UPDATE meta SET value = '1' WHERE key = 'schema_version';
             INSERT INTO runs (id, sql_text, principal, kind, state, started_at)
                 VALUES ('old', 'INSERT INTO t VALUES (1)', 'anonymous', 'write', 'RUNNING', '2026-11-01T00:00:00.000Z');",
        )
        .unwrap();
        drop(db);
        let catalog = Catalog::open(dir.path()).unwrap();
        let interrupted = catalog.interrupted_runs().unwrap();
        assert_eq!(interrupted.len(), 1);
        assert_eq!(interrupted[0].target_location, None);
        catalog.abort_runs(&["old".into()], "stopped").unwrap();
        let version: String = catalog
            .read(|c| {
                c.query_row(
                    "SELECT value FROM meta WHERE key = 'schema_version'",
                    [],
                    |row| row.get(0),
                )
            })
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION.to_string());
        assert!(catalog.interrupted_runs().unwrap().is_empty());
    }

    #[test]
    fn a_newer_or_corrupt_catalog_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        drop(Catalog::open(dir.path()).unwrap());
        let db = Connection::open(dir.path().join("catalog.sqlite")).unwrap();
        db.execute(
            "UPDATE meta SET value = '99' WHERE key = 'schema_version'",
            [],
        )
        .unwrap();
        drop(db);
        let err = Catalog::open(dir.path()).unwrap_err();
        assert!(err.to_string().contains("schema version 99"), "{err}");

        let other = tempfile::tempdir().unwrap();
        std::fs::write(other.path().join("catalog.sqlite"), vec![7u8; 4096]).unwrap();
        let err = Catalog::open(other.path()).unwrap_err();
        assert!(err.to_string().contains("catalog.sqlite"), "{err}");
    }
}
