-- The catalog's first schema (version 1). Later versions are migrations in
-- open.rs; this file never changes once released. Plain SQL types only, so
-- the schema ports to Postgres.
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
    error TEXT
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
