//! The definitions of the `system.*` tables: each one's name, the SQL that
//! reads its rows from the catalog, and its columns.

use arrow::datatypes::DataType;

pub(super) struct SystemTableDef {
    pub(super) name: &'static str,
    pub(super) sql: &'static str,
    pub(super) columns: &'static [(&'static str, DataType)],
}

pub(super) const TEXT: DataType = DataType::Utf8;
pub(super) const INT: DataType = DataType::Int64;
pub(super) const BOOL: DataType = DataType::Boolean;

pub(super) const TABLES: &[SystemTableDef] = &[
    SystemTableDef {
        name: "tables",
        sql: "SELECT t.name, t.kind, t.location, t.format, t.definition, \
              (SELECT max(version) FROM schema_versions s WHERE s.table_id = t.id), \
              t.created_at, t.created_by_run, t.dropped_at, t.owner FROM tables t ORDER BY t.name, t.id",
        columns: &[
            ("table_name", TEXT),
            ("kind", TEXT),
            ("location", TEXT),
            ("format", TEXT),
            ("definition", TEXT),
            ("schema_version", INT),
            ("created_at", TEXT),
            ("created_by_run", TEXT),
            ("dropped_at", TEXT),
            ("owner", TEXT),
        ],
    },
    SystemTableDef {
        name: "columns",
        sql: "SELECT t.name, s.version, j.key + 1, json_extract(j.value, '$.name'), \
              json_extract(j.value, '$.type'), json_extract(j.value, '$.nullable') \
              FROM tables t JOIN schema_versions s ON s.table_id = t.id, json_each(s.schema_json) j \
              WHERE t.dropped_at IS NULL \
              AND s.version = (SELECT max(version) FROM schema_versions m WHERE m.table_id = t.id) \
              ORDER BY t.name, j.key",
        columns: &[
            ("table_name", TEXT),
            ("schema_version", INT),
            ("ordinal", INT),
            ("column_name", TEXT),
            ("data_type", TEXT),
            ("nullable", BOOL),
        ],
    },
    SystemTableDef {
        name: "schema_versions",
        sql: "SELECT t.name, s.version, s.schema_json, s.created_at, s.run_id \
              FROM schema_versions s JOIN tables t ON t.id = s.table_id ORDER BY t.name, s.version",
        columns: &[
            ("table_name", TEXT),
            ("version", INT),
            ("columns", TEXT),
            ("created_at", TEXT),
            ("run_id", TEXT),
        ],
    },
    SystemTableDef {
        name: "table_versions",
        sql: "SELECT t.name, v.version, v.rows_total, v.files, v.bytes, v.committed_at, v.run_id \
              FROM table_versions v JOIN tables t ON t.id = v.table_id ORDER BY t.name, v.version",
        columns: &[
            ("table_name", TEXT),
            ("version", INT),
            ("rows", INT),
            ("files", INT),
            ("bytes", INT),
            ("recorded_at", TEXT),
            ("run_id", TEXT),
        ],
    },
    SystemTableDef {
        name: "column_statistics",
        sql: "SELECT s.table_name, s.table_version, s.ordinal, s.column_name, s.data_type, s.row_count, \
              s.null_count, s.distinct_count, s.min_value, s.max_value, s.computed_at, \
              s.computed_at = (SELECT max(computed_at) FROM column_statistics m WHERE m.table_name = s.table_name) \
              FROM column_statistics s ORDER BY s.table_name, s.computed_at, s.ordinal",
        columns: &[
            ("table_name", TEXT),
            ("table_version", TEXT),
            ("ordinal", INT),
            ("column_name", TEXT),
            ("data_type", TEXT),
            ("row_count", INT),
            ("null_count", INT),
            ("distinct_count", INT),
            ("min_value", TEXT),
            ("max_value", TEXT),
            ("computed_at", TEXT),
            ("current", BOOL),
        ],
    },
    SystemTableDef {
        name: "runs",
        sql: "SELECT id, sql_text, principal, kind, state, started_at, ended_at, rows_out, bytes_out, \
              rows_in, bytes_in, lineage_complete, error, \
              (SELECT group_concat(table_name, ',') FROM run_inputs i WHERE i.run_id = r.id), \
              peak_memory_bytes, spilled_bytes, queue_ms, note \
              FROM runs r ORDER BY started_at, id",
        columns: &[
            ("run_id", TEXT),
            ("sql", TEXT),
            ("principal", TEXT),
            ("kind", TEXT),
            ("state", TEXT),
            ("started_at", TEXT),
            ("ended_at", TEXT),
            ("rows_out", INT),
            ("bytes_out", INT),
            ("rows_in", INT),
            ("bytes_in", INT),
            ("lineage_complete", BOOL),
            ("error", TEXT),
            ("inputs", TEXT),
            ("peak_memory_bytes", INT),
            ("spilled_bytes", INT),
            ("queue_ms", INT),
            ("note", TEXT),
        ],
    },
    SystemTableDef {
        name: "table_lineage",
        sql: "SELECT source_table, target_table, run_id FROM table_lineage \
              ORDER BY target_table, source_table, run_id",
        columns: &[
            ("source_table", TEXT),
            ("target_table", TEXT),
            ("run_id", TEXT),
        ],
    },
    SystemTableDef {
        name: "column_lineage",
        sql: "SELECT target_table, target_column, source_table, source_column, kind, subtype, run_id \
              FROM column_lineage ORDER BY target_table, target_column, source_table, source_column, kind, subtype",
        columns: &[
            ("target_table", TEXT),
            ("target_column", TEXT),
            ("source_table", TEXT),
            ("source_column", TEXT),
            ("kind", TEXT),
            ("subtype", TEXT),
            ("run_id", TEXT),
        ],
    },
    SystemTableDef {
        name: "grants",
        sql: "SELECT grantee, CASE WHEN EXISTS (SELECT 1 FROM users u WHERE u.name = g.grantee) \
              THEN 'user' ELSE 'role' END, privilege, object_kind, object_name, \
              nullif(columns, ''), granted_by, granted_at FROM grants g \
              ORDER BY object_kind, object_name, grantee, privilege",
        columns: &[
            ("grantee", TEXT),
            ("grantee_kind", TEXT),
            ("privilege", TEXT),
            ("object_kind", TEXT),
            ("object_name", TEXT),
            ("columns", TEXT),
            ("granted_by", TEXT),
            ("granted_at", TEXT),
        ],
    },
    SystemTableDef {
        name: "masks",
        sql: "SELECT name, table_name, column_name, expression, nullif(exempt, ''), created_by, created_at \
              FROM masks ORDER BY table_name, column_name",
        columns: &[
            ("mask_name", TEXT),
            ("table_name", TEXT),
            ("column_name", TEXT),
            ("expression", TEXT),
            ("exempt", TEXT),
            ("created_by", TEXT),
            ("created_at", TEXT),
        ],
    },
    SystemTableDef {
        name: "row_filters",
        sql: "SELECT name, table_name, role, predicate, created_by, created_at \
              FROM row_filters ORDER BY table_name, name",
        columns: &[
            ("filter_name", TEXT),
            ("table_name", TEXT),
            ("role", TEXT),
            ("predicate", TEXT),
            ("created_by", TEXT),
            ("created_at", TEXT),
        ],
    },
    SystemTableDef {
        name: "users",
        sql: "SELECT u.name, (SELECT group_concat(role, ',') FROM \
              (SELECT role FROM role_members m WHERE m.member = u.name ORDER BY role)), \
              u.created_at, u.password_changed_at FROM users u ORDER BY u.name",
        columns: &[
            ("user_name", TEXT),
            ("roles", TEXT),
            ("created_at", TEXT),
            ("password_changed_at", TEXT),
        ],
    },
    SystemTableDef {
        name: "roles",
        sql: "SELECT r.name, (SELECT group_concat(member, ',') FROM \
              (SELECT member FROM role_members m WHERE m.role = r.name ORDER BY member)), \
              r.created_at FROM roles r ORDER BY r.name",
        columns: &[("role_name", TEXT), ("members", TEXT), ("created_at", TEXT)],
    },
    SystemTableDef {
        name: "tokens",
        sql: "SELECT name, user_name, created_at, expires_at, revoked_at, \
              CASE WHEN revoked_at IS NOT NULL THEN 'revoked' \
              WHEN expires_at IS NOT NULL AND expires_at <= strftime('%Y-%m-%dT%H:%M:%fZ', 'now') THEN 'expired' \
              WHEN user_name NOT IN (SELECT name FROM users) THEN 'revoked' \
              ELSE 'live' END FROM tokens ORDER BY name, id",
        columns: &[
            ("token_name", TEXT),
            ("user_name", TEXT),
            ("created_at", TEXT),
            ("expires_at", TEXT),
            ("revoked_at", TEXT),
            ("state", TEXT),
        ],
    },
    SystemTableDef {
        name: "audit",
        sql: "SELECT at, principal, peer, method, command, sql_text, code, detail, rows_out, bytes_out, \
              CAST(round(duration_ms * 1000) AS INTEGER) FROM audit ORDER BY id",
        columns: &[
            ("at", TEXT),
            ("principal", TEXT),
            ("peer", TEXT),
            ("method", TEXT),
            ("command", TEXT),
            ("sql", TEXT),
            ("code", TEXT),
            ("detail", TEXT),
            ("rows", INT),
            ("bytes", INT),
            ("duration_us", INT),
        ],
    },
];
