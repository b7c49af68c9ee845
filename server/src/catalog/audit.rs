//! The audit log: who called what, from where, with what outcome. Rows are
//! queued (never awaited on a request's path), appended in the catalog and,
//! when configured, as JSON lines to a file; old rows are purged by age.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::{Connection, params};

use super::{CatalogResult, SqliteCatalog};

/// One audited event.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditRecord {
    /// When it started.
    pub at: DateTime<Utc>,
    /// Who (none when no credential was accepted).
    pub principal: Option<String>,
    /// The peer address.
    pub peer: Option<String>,
    /// The RPC (`GetFlightInfo`, `DoGet`, `Handshake`, ...) or `cli`.
    pub method: String,
    /// The Flight SQL command or action, when there is one.
    pub command: Option<String>,
    /// The SQL text, with passwords left out.
    pub sql: Option<String>,
    /// The gRPC code (`OK`, `UNAUTHENTICATED`, ...).
    pub code: String,
    /// More: a login's user name, a refusal's reason.
    pub detail: Option<String>,
    /// Rows returned.
    pub rows: Option<u64>,
    /// Bytes returned.
    pub bytes: Option<u64>,
    /// How long it took.
    pub duration: Duration,
}

/// Where audit records go.
pub trait AuditLog: Send + Sync + std::fmt::Debug {
    /// Queues `record`; returns at once.
    fn audit_soon(&self, record: AuditRecord);
}

impl AuditLog for SqliteCatalog {
    fn audit_soon(&self, record: AuditRecord) {
        let file = self.audit_file().map(Path::to_path_buf);
        self.submit("an audit record", move |c| {
            insert(c, &record)?;
            if let Some(file) = file {
                append_line(&file, &record);
            }
            Ok(())
        });
    }
}

impl SqliteCatalog {
    /// Deletes audit rows older than `retention`; returns how many.
    pub async fn purge_audit(&self, retention: Duration) -> CatalogResult<usize> {
        let cutoff = chrono::Duration::from_std(retention)
            .ok()
            .and_then(|d| Utc::now().checked_sub_signed(d))
            .map(time_text);
        let Some(cutoff) = cutoff else {
            return Ok(0);
        };
        self.call(move |c| c.execute("DELETE FROM audit WHERE at < ?1", [cutoff]))
            .await
    }
}

fn time_text(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn insert(c: &mut Connection, r: &AuditRecord) -> rusqlite::Result<()> {
    let mut statement = c.prepare_cached(
        "INSERT INTO audit (at, principal, peer, method, command, sql_text, code, detail, rows_out, bytes_out, duration_ms) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )?;
    statement.execute(params![
        time_text(r.at),
        r.principal,
        r.peer,
        r.method,
        r.command,
        r.sql,
        r.code,
        r.detail,
        r.rows.map(|n| i64::try_from(n).unwrap_or(i64::MAX)),
        r.bytes.map(|n| i64::try_from(n).unwrap_or(i64::MAX)),
        r.duration.as_secs_f64() * 1000.0,
    ])?;
    Ok(())
}

/// Appends `record` as one JSON line; a failure is logged, not fatal (the
/// catalog has the row).
fn append_line(file: &PathBuf, r: &AuditRecord) {
    let line = serde_json::json!({
        "at": time_text(r.at),
        "principal": r.principal,
        "peer": r.peer,
        "method": r.method,
        "command": r.command,
        "sql": r.sql,
        "code": r.code,
        "detail": r.detail,
        "rows": r.rows,
        "bytes": r.bytes,
        "duration_ms": r.duration.as_secs_f64() * 1000.0,
    });
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(file)
        .and_then(|mut f| writeln!(f, "{line}"));
    if let Err(e) = written {
        tracing::warn!("cannot append to the audit file {}: {e}", file.display());
    }
}
