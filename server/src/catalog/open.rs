//! Opening a catalog: the state folder, its lock, the SQLite connection and
//! the schema migrations.
//!
//! The schema's version is SQLite's `user_version`; migrations run in order
//! from the file's version to this Tarn's ([`MIGRATIONS`]). A catalog written
//! by a newer Tarn is refused, never rewritten. Catalogs of Tarn 0.1 kept
//! their version in a `meta` table; it is adopted as `user_version` first.

use std::fs::File;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension};
use rusqlite_migration::{M, Migrations};

use super::CatalogError;

/// The schema, one migration per version. Released migrations never change.
const MIGRATIONS: &[M<'static>] = &[
    // 1: tables, schema and table versions, runs, lineage, settings, outbox.
    M::up(include_str!("schema.sql")),
    // 2: the folder a write writes, so a killed write can be cleaned up.
    M::up("ALTER TABLE runs ADD COLUMN target_location TEXT;"),
    // 3: users, roles, role members, API tokens (hashes only).
    M::up(include_str!("identities.sql")),
    // 4: the audit log.
    M::up(include_str!("audit.sql")),
    // 5: privileges, and the owner of each table.
    M::up(include_str!("grants.sql")),
    // 6: what a query's execution used, and what the server did beyond its plan.
    M::up(
        "ALTER TABLE runs ADD COLUMN peak_memory_bytes INTEGER;
         ALTER TABLE runs ADD COLUMN spilled_bytes INTEGER;
         ALTER TABLE runs ADD COLUMN queue_ms INTEGER;
         ALTER TABLE runs ADD COLUMN note TEXT;",
    ),
    // 7: column statistics per table version.
    M::up(include_str!("statistics.sql")),
];

/// The schema version this Tarn writes.
pub(crate) fn schema_version() -> i64 {
    MIGRATIONS.len() as i64
}

/// An open catalog: its connection, the lock that keeps other servers out
/// while it is held, and the database file.
pub(crate) struct Opened {
    pub(crate) connection: Connection,
    pub(crate) lock: File,
    pub(crate) path: PathBuf,
}

/// Opens (or creates) the catalog in `state_dir`, migrated to this Tarn's
/// schema.
pub(crate) fn open(state_dir: &Path) -> Result<Opened, CatalogError> {
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
    let sqlite = |e: rusqlite::Error| CatalogError::sqlite(&path, e);
    let mut connection = Connection::open(&path).map_err(sqlite)?;
    connection
        .pragma_update(None, "journal_mode", "WAL")
        .map_err(sqlite)?;
    // WAL + NORMAL: a process crash loses nothing; a power cut may lose the
    // last commits, never corrupt the file.
    connection
        .pragma_update(None, "synchronous", "NORMAL")
        .map_err(sqlite)?;
    connection
        .pragma_update(None, "foreign_keys", "ON")
        .map_err(sqlite)?;
    adopt_version_1_meta(&connection).map_err(sqlite)?;
    let found: i64 = connection
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(sqlite)?;
    if found > schema_version() {
        return Err(CatalogError::TooNew {
            path,
            found,
            supported: schema_version(),
        });
    }
    Migrations::from_slice(MIGRATIONS)
        .to_latest(&mut connection)
        .map_err(|e| CatalogError::Sqlite {
            path: path.clone(),
            message: format!(
                "cannot bring the catalog to schema version {}: {e}",
                schema_version()
            ),
        })?;
    Ok(Opened {
        connection,
        lock,
        path,
    })
}

/// Tarn 0.1 kept the schema version in `meta.schema_version`, leaving
/// `user_version` at 0: take it over, so the migrations start from there.
fn adopt_version_1_meta(connection: &Connection) -> rusqlite::Result<()> {
    let user_version: i64 =
        connection.pragma_query_value(None, "user_version", |row| row.get(0))?;
    if user_version != 0 {
        return Ok(());
    }
    let has_meta: bool = connection.query_row(
        "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'meta'",
        [],
        |row| row.get(0),
    )?;
    if !has_meta {
        return Ok(());
    }
    let recorded: Option<String> = connection
        .query_row(
            "SELECT value FROM meta WHERE key = 'schema_version'",
            [],
            |row| row.get(0),
        )
        .optional()?;
    if let Some(version) = recorded.and_then(|v| v.parse::<i64>().ok()) {
        connection.pragma_update(None, "user_version", version)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_version_1_catalog_is_upgraded() {
        let dir = tempfile::tempdir().unwrap();
        let db = Connection::open(dir.path().join("catalog.sqlite")).unwrap();
        // What Tarn 0.1 wrote: the first schema, its version in `meta`.
        db.execute_batch(include_str!("schema.sql")).unwrap();
        db.execute_batch(
            "INSERT INTO meta (key, value) VALUES ('schema_version', '1');
             INSERT INTO runs (id, sql_text, principal, kind, state, started_at)
                 VALUES ('old', 'SELECT 1', 'anonymous', 'query', 'COMPLETE', '2026-11-01T00:00:00.000Z');",
        )
        .unwrap();
        drop(db);
        let opened = open(dir.path()).unwrap();
        let version: i64 = opened
            .connection
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .unwrap();
        assert_eq!(version, schema_version());
        let kept: (String, Option<String>) = opened
            .connection
            .query_row("SELECT id, target_location FROM runs", [], |row| {
                Ok((row.get(0)?, row.get(1)?))
            })
            .unwrap();
        assert_eq!(kept, ("old".to_string(), None));
    }

    #[test]
    fn a_newer_or_corrupt_catalog_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        drop(open(dir.path()).unwrap());
        let db = Connection::open(dir.path().join("catalog.sqlite")).unwrap();
        db.pragma_update(None, "user_version", 99).unwrap();
        drop(db);
        let err = open(dir.path()).err().unwrap();
        assert!(err.to_string().contains("schema version 99"), "{err}");

        let other = tempfile::tempdir().unwrap();
        std::fs::write(other.path().join("catalog.sqlite"), vec![7u8; 4096]).unwrap();
        let err = open(other.path()).err().unwrap();
        assert!(err.to_string().contains("catalog.sqlite"), "{err}");
    }

    #[test]
    fn one_server_per_state_folder() {
        let dir = tempfile::tempdir().unwrap();
        let first = open(dir.path()).unwrap();
        assert!(matches!(open(dir.path()), Err(CatalogError::Locked { .. })));
        drop(first);
        assert!(open(dir.path()).is_ok());
    }
}
