//! Column masks and row filters in the catalog, and the salt of
//! `mask_hash()`. The engine keeps a copy with the privileges and applies
//! them when a user's session looks a table up.

use rusqlite::{Connection, params};

use super::now;

/// A column mask: `column` of `table` is shown as `expression` (SQL over
/// the table's columns) to everyone but the `exempt` roles (and admins).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaskRecord {
    /// Its name.
    pub name: String,
    /// The table, as Tarn names it.
    pub table: String,
    /// The masked column.
    pub column: String,
    /// The SQL expression shown instead.
    pub expression: String,
    /// Roles that see the real values.
    pub exempt: Vec<String>,
    /// Who created it.
    pub created_by: String,
}

/// A row filter: members of `role` see only the rows of `table` where
/// `predicate` (SQL over the table's columns) holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowFilterRecord {
    /// Its name.
    pub name: String,
    /// The table, as Tarn names it.
    pub table: String,
    /// The role it applies to.
    pub role: String,
    /// The SQL predicate.
    pub predicate: String,
    /// Who created it.
    pub created_by: String,
}

/// How creating or dropping a policy went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyChange {
    /// Stored.
    Done,
    /// A policy of that name exists (or, for a mask, one on that column).
    Exists,
    /// No policy of that name.
    NoSuchPolicy,
    /// No role of that name.
    NoSuchRole,
}

pub(crate) fn create_mask(c: &mut Connection, mask: &MaskRecord) -> rusqlite::Result<PolicyChange> {
    let taken: bool = c.query_row(
        "SELECT EXISTS (SELECT 1 FROM masks WHERE name = ?1 OR (table_name = ?2 AND column_name = ?3))",
        params![mask.name, mask.table, mask.column],
        |row| row.get(0),
    )?;
    if taken {
        return Ok(PolicyChange::Exists);
    }
    c.execute(
        "INSERT INTO masks (name, table_name, column_name, expression, exempt, created_by, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![mask.name, mask.table, mask.column, mask.expression, mask.exempt.join(","), mask.created_by, now()],
    )?;
    Ok(PolicyChange::Done)
}

pub(crate) fn create_row_filter(
    c: &mut Connection,
    filter: &RowFilterRecord,
) -> rusqlite::Result<PolicyChange> {
    let role: bool = c.query_row(
        "SELECT EXISTS (SELECT 1 FROM roles WHERE name = ?1)",
        params![filter.role],
        |row| row.get(0),
    )?;
    if !role {
        return Ok(PolicyChange::NoSuchRole);
    }
    let taken: bool = c.query_row(
        "SELECT EXISTS (SELECT 1 FROM row_filters WHERE name = ?1)",
        params![filter.name],
        |row| row.get(0),
    )?;
    if taken {
        return Ok(PolicyChange::Exists);
    }
    c.execute(
        "INSERT INTO row_filters (name, table_name, role, predicate, created_by, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![filter.name, filter.table, filter.role, filter.predicate, filter.created_by, now()],
    )?;
    Ok(PolicyChange::Done)
}

/// Drops the mask (`masks`) or row filter (`row_filters`) `name`.
pub(crate) fn drop_policy(
    c: &mut Connection,
    table: &str,
    name: &str,
) -> rusqlite::Result<PolicyChange> {
    let sql = match table {
        "masks" => "DELETE FROM masks WHERE name = ?1",
        _ => "DELETE FROM row_filters WHERE name = ?1",
    };
    Ok(match c.execute(sql, params![name])? {
        0 => PolicyChange::NoSuchPolicy,
        _ => PolicyChange::Done,
    })
}

pub(crate) fn masks(c: &mut Connection) -> rusqlite::Result<Vec<MaskRecord>> {
    let mut statement = c.prepare(
        "SELECT name, table_name, column_name, expression, exempt, created_by FROM masks ORDER BY name",
    )?;
    let rows = statement.query_map([], |row| {
        let exempt: String = row.get(4)?;
        Ok(MaskRecord {
            name: row.get(0)?,
            table: row.get(1)?,
            column: row.get(2)?,
            expression: row.get(3)?,
            exempt: exempt
                .split(',')
                .filter(|r| !r.is_empty())
                .map(str::to_string)
                .collect(),
            created_by: row.get(5)?,
        })
    })?;
    rows.collect()
}

pub(crate) fn row_filters(c: &mut Connection) -> rusqlite::Result<Vec<RowFilterRecord>> {
    let mut statement = c.prepare(
        "SELECT name, table_name, role, predicate, created_by FROM row_filters ORDER BY name",
    )?;
    let rows = statement.query_map([], |row| {
        Ok(RowFilterRecord {
            name: row.get(0)?,
            table: row.get(1)?,
            role: row.get(2)?,
            predicate: row.get(3)?,
            created_by: row.get(4)?,
        })
    })?;
    rows.collect()
}

pub(crate) fn mask_salt(c: &mut Connection) -> rusqlite::Result<String> {
    c.query_row("SELECT salt FROM mask_salt LIMIT 1", [], |row| row.get(0))
}
