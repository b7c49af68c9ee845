-- 7: column statistics per table version (ANALYZE, and after Tarn's writes).
-- A version is a Delta version ("3") or, for a table of plain files, the
-- digest of its files; files_digest is what a scan's files are matched by,
-- location (the prefix all its files share) which table a scan reads.
CREATE TABLE IF NOT EXISTS column_statistics (
    table_name TEXT NOT NULL,
    table_version TEXT NOT NULL,
    files_digest TEXT NOT NULL,
    location TEXT NOT NULL,
    column_name TEXT NOT NULL,
    ordinal INTEGER NOT NULL,
    data_type TEXT NOT NULL,
    row_count INTEGER NOT NULL,
    null_count INTEGER,
    distinct_count INTEGER,
    min_value TEXT,
    max_value TEXT,
    computed_at TEXT NOT NULL,
    PRIMARY KEY (table_name, table_version, column_name)
);
CREATE INDEX IF NOT EXISTS column_statistics_by_time ON column_statistics (table_name, computed_at);
