//! The SQL of column statistics: one row per table version and column,
//! written in one transaction per version.

use rusqlite::{Connection, params};

use super::{ColumnStatisticsRecord, TableStatisticsRecord, now};

/// Stores the statistics of one version of a table, replacing any earlier
/// ones of the same version.
pub(crate) fn record(c: &mut Connection, stats: &TableStatisticsRecord) -> rusqlite::Result<()> {
    let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    let tx = c.transaction()?;
    tx.execute(
        "DELETE FROM column_statistics WHERE table_name = ?1 AND table_version = ?2",
        params![stats.table, stats.version],
    )?;
    let computed_at = now();
    for (ordinal, column) in stats.columns.iter().enumerate() {
        tx.execute(
            "INSERT INTO column_statistics (table_name, table_version, files_digest, location, column_name, \
             ordinal, data_type, row_count, null_count, distinct_count, min_value, max_value, computed_at) \
             VALUES (?1, ?2, ?3, ?13, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            params![
                stats.table,
                stats.version,
                stats.files_digest,
                column.name,
                count(ordinal as u64 + 1),
                column.data_type,
                count(stats.rows),
                column.null_count.map(count),
                column.distinct_count.map(count),
                column.min,
                column.max,
                computed_at,
                stats.location,
            ],
        )?;
    }
    tx.commit()
}

/// Forgets every statistic of `table` (when it is dropped: a table created
/// again under its name starts with none).
pub(crate) fn forget(c: &Connection, table: &str) -> rusqlite::Result<()> {
    c.execute(
        "DELETE FROM column_statistics WHERE table_name = ?1",
        params![table],
    )
    .map(|_| ())
}

/// The newest statistics of every table that has any.
pub(crate) fn latest(c: &Connection) -> rusqlite::Result<Vec<TableStatisticsRecord>> {
    let mut statement = c.prepare(
        "SELECT s.table_name, s.table_version, s.files_digest, s.row_count, s.column_name, s.data_type, \
         s.null_count, s.distinct_count, s.min_value, s.max_value, s.location \
         FROM column_statistics s \
         WHERE s.computed_at = (SELECT max(computed_at) FROM column_statistics m WHERE m.table_name = s.table_name) \
         ORDER BY s.table_name, s.ordinal",
    )?;
    let count = |n: Option<i64>| n.and_then(|n| u64::try_from(n).ok());
    let mut tables: Vec<TableStatisticsRecord> = Vec::new();
    let mut rows = statement.query([])?;
    while let Some(row) = rows.next()? {
        let (table, version, digest): (String, String, String) =
            (row.get(0)?, row.get(1)?, row.get(2)?);
        let column = ColumnStatisticsRecord {
            name: row.get(4)?,
            data_type: row.get(5)?,
            null_count: count(row.get(6)?),
            distinct_count: count(row.get(7)?),
            min: row.get(8)?,
            max: row.get(9)?,
        };
        match tables.last_mut() {
            Some(last) if last.table == table && last.version == version => {
                last.columns.push(column)
            }
            _ => tables.push(TableStatisticsRecord {
                table,
                version,
                files_digest: digest,
                location: row.get(10)?,
                rows: count(row.get(3)?).unwrap_or(0),
                columns: vec![column],
            }),
        }
    }
    Ok(tables)
}
