-- Schema version 5: privileges on tables and schemas, and who owns a table.
-- A grant names a user or a role. `columns` lists the columns of a
-- column-level SELECT ("a,b"); empty means the whole table.
CREATE TABLE grants (
    grantee TEXT NOT NULL,
    privilege TEXT NOT NULL,
    object_kind TEXT NOT NULL,
    object_name TEXT NOT NULL,
    columns TEXT NOT NULL DEFAULT '',
    granted_by TEXT NOT NULL,
    granted_at TEXT NOT NULL,
    PRIMARY KEY (grantee, privilege, object_kind, object_name)
);
ALTER TABLE tables ADD COLUMN owner TEXT;
-- Column masks: a column of a table shown through an expression to
-- everyone but the exempt roles ("a,b").
CREATE TABLE masks (
    name TEXT PRIMARY KEY,
    table_name TEXT NOT NULL,
    column_name TEXT NOT NULL,
    expression TEXT NOT NULL,
    exempt TEXT NOT NULL DEFAULT '',
    created_by TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE UNIQUE INDEX masks_column ON masks (table_name, column_name);
-- Row filters: the members of a role see only the rows of a table where
-- the predicate holds (OR across their roles).
CREATE TABLE row_filters (
    name TEXT PRIMARY KEY,
    table_name TEXT NOT NULL,
    role TEXT NOT NULL,
    predicate TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at TEXT NOT NULL
);
-- The salt of mask_hash(): random, made once, so hashes stay stable (and
-- joinable) across restarts.
CREATE TABLE mask_salt (salt TEXT NOT NULL);
INSERT INTO mask_salt (salt) VALUES (lower(hex(randomblob(32))));
