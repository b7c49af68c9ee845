-- Schema version 4: the audit log, one row per call (allowed or refused)
-- and per identity change made outside a call. Never a password or token.
CREATE TABLE audit (
    id INTEGER PRIMARY KEY,
    at TEXT NOT NULL,
    principal TEXT,
    peer TEXT,
    method TEXT NOT NULL,
    command TEXT,
    sql_text TEXT,
    code TEXT NOT NULL,
    detail TEXT,
    rows_out INTEGER,
    bytes_out INTEGER,
    duration_ms REAL
);
CREATE INDEX audit_at ON audit (at);
