//! Which settings a client may change with `SET` and `RESET`, and
//! `ALTER SYSTEM SET` / `ALTER SYSTEM RESET`, which change the server's
//! defaults.
//!
//! `SET` changes the client's own session (see `session.rs`) and is
//! forgotten with it. `ALTER SYSTEM SET` (admins only) changes the settings
//! every new session starts with and is remembered across restarts. Either
//! may change only settings that shape how a query is planned or how its
//! output looks; a setting that would change where the server reads and
//! writes, how much memory it may use, which schema names resolve to, or how
//! SQL parses is refused with `PERMISSION_DENIED` naming it. The same check
//! runs on settings restored at start: one that no longer passes is skipped
//! with a warning instead of breaking every query.

use std::sync::Arc;

use datafusion::common::{DFSchema, DFSchemaRef};
use datafusion::config::ConfigOptions;
use datafusion::logical_expr::{Extension, LogicalPlan, Statement};
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::tokenizer::Token;

use super::error::{EngineError, EngineResult};
use super::statement_node::{leaf_statement_node, node_of};
use crate::identity::Principal;

/// Settings clients may change, by exact key.
const ALLOWED_KEYS: &[&str] = &[
    "datafusion.execution.batch_size",
    "datafusion.execution.target_partitions",
    "datafusion.execution.time_zone",
    "datafusion.execution.collect_statistics",
    "datafusion.execution.coalesce_batches",
    "datafusion.execution.enable_recursive_ctes",
    "datafusion.execution.split_file_groups_by_statistics",
    "datafusion.execution.skip_partial_aggregation_probe_ratio_threshold",
    "datafusion.execution.skip_partial_aggregation_probe_rows_threshold",
    "tarn.statement_timeout",
    "tarn.vacuum_retention_check",
    "tarn.result_cache",
    "tarn.data_cache",
    "tarn.column_statistics",
    "tarn.shared_subplans",
    "tarn.exact_decimals",
];

/// Settings clients may change, by group: plan choices, Parquet reading and
/// writing options, and how EXPLAIN and values are shown.
const ALLOWED_GROUPS: &[&str] = &[
    "datafusion.optimizer.",
    "datafusion.execution.parquet.",
    "datafusion.explain.",
    "datafusion.format.",
];

/// Largest batch a client may ask for (rows).
const MAX_BATCH_SIZE: usize = 1024 * 1024;
/// Largest parallelism a client may ask for.
const MAX_TARGET_PARTITIONS: usize = 1024;

/// Checks a `SET`, `RESET` or `ALTER SYSTEM` plan; other plans pass.
///
/// `ALTER SYSTEM` changes the settings of every new session, so with
/// authentication on only admins may run it.
pub(crate) fn check_plan(plan: &LogicalPlan, principal: &Principal) -> EngineResult<()> {
    let Some(system) = SystemSettingNode::of(plan) else {
        return check_statement(plan);
    };
    if !principal.is_admin() {
        return Err(EngineError::PermissionDenied(
            "ALTER SYSTEM changes the settings every new session on this server starts with; only members of the role 'admin' may run it (SET changes your own session)".into(),
        ));
    }
    check_statement(system.statement())
}

fn check_statement(plan: &LogicalPlan) -> EngineResult<()> {
    match plan {
        LogicalPlan::Statement(Statement::SetVariable(set)) => {
            check(&set.variable, Some(&set.value))
        }
        LogicalPlan::Statement(Statement::ResetVariable(reset)) => check(&reset.variable, None),
        _ => Ok(()),
    }
}

/// `ALTER SYSTEM SET key = value` / `ALTER SYSTEM RESET key` as a plan node
/// around the `SET`/`RESET` it carries: run on the engine's context (the
/// defaults of new sessions) and remembered across restarts.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct SystemSettingNode {
    statement: LogicalPlan,
    schema: DFSchemaRef,
}

impl SystemSettingNode {
    /// The `SET ...`/`RESET ...` text of `sql` if it is `ALTER SYSTEM SET
    /// ...` or `ALTER SYSTEM RESET ...`, read with the SQL tokenizer.
    pub(crate) fn parse(sql: &str) -> Option<&str> {
        let tokens = crate::sql_text::tokens(sql)?;
        let mut significant = tokens
            .iter()
            .filter(|t| !matches!(t.token, Token::Whitespace(_)));
        let mut keyword = |word: Keyword| {
            significant
                .next()
                .filter(|t| matches!(&t.token, Token::Word(w) if w.keyword == word))
        };
        keyword(Keyword::ALTER)?;
        keyword(Keyword::SYSTEM)?;
        let rest = significant.next()?;
        if !matches!(&rest.token, Token::Word(w) if matches!(w.keyword, Keyword::SET | Keyword::RESET))
        {
            return None;
        }
        let offsets = crate::sql_text::Offsets::of(sql);
        Some(&sql[offsets.byte(rest.span.start)..])
    }

    /// Wraps the planned `SET`/`RESET`; anything else is refused.
    pub(crate) fn plan(statement: LogicalPlan) -> EngineResult<LogicalPlan> {
        if !matches!(
            statement,
            LogicalPlan::Statement(Statement::SetVariable(_) | Statement::ResetVariable(_))
        ) {
            return Err(EngineError::Plan(
                "ALTER SYSTEM takes SET key = value or RESET key".into(),
            ));
        }
        Ok(LogicalPlan::Extension(Extension {
            node: Arc::new(Self {
                statement,
                schema: Arc::new(DFSchema::empty()),
            }),
        }))
    }

    /// The node, if `plan` is one.
    pub(crate) fn of(plan: &LogicalPlan) -> Option<&Self> {
        node_of::<Self>(plan)
    }

    /// The `SET` or `RESET` it runs.
    pub(crate) fn statement(&self) -> &LogicalPlan {
        &self.statement
    }
}

leaf_statement_node!(SystemSettingNode, "AlterSystem", statement, |node| node
    .statement
    .display());

/// Checks that `key` may be set (to `value`) or reset (`None`).
pub(crate) fn check(key: &str, value: Option<&str>) -> EngineResult<()> {
    let allowed =
        ALLOWED_KEYS.contains(&key) || ALLOWED_GROUPS.iter().any(|group| key.starts_with(group));
    if !allowed {
        let known = key.starts_with("datafusion.runtime.")
            || ConfigOptions::new().entries().iter().any(|e| e.key == key);
        return Err(match known {
            true => EngineError::PermissionDenied(format!(
                "'{key}' cannot be changed with SET: it applies to every client of this server. \
                 Set it in the server's config file ([engine.datafusion] or [engine]); \
                 SET may change query settings ({})",
                allowed_summary()
            )),
            false => EngineError::Plan(format!(
                "unknown setting '{key}'; `SHOW ALL` lists the settings, and SET may change {}",
                allowed_summary()
            )),
        });
    }
    match value {
        Some(value) => check_value(key, value),
        None => Ok(()),
    }
}

/// Values DataFusion would accept but that would hurt every client.
fn check_value(key: &str, value: &str) -> EngineResult<()> {
    let invalid = |why: String| EngineError::Plan(format!("invalid value for {key}: {why}"));
    match key {
        "datafusion.execution.batch_size" => match value.parse::<usize>() {
            Ok(rows) if (1..=MAX_BATCH_SIZE).contains(&rows) => Ok(()),
            _ => Err(invalid(format!(
                "'{value}' is not a row count from 1 to {MAX_BATCH_SIZE}"
            ))),
        },
        "datafusion.execution.target_partitions" => match value.parse::<usize>() {
            Ok(n) if n <= MAX_TARGET_PARTITIONS => Ok(()),
            _ => Err(invalid(format!(
                "'{value}' is not a number from 0 (one per core) to {MAX_TARGET_PARTITIONS}"
            ))),
        },
        "tarn.statement_timeout" => super::tarn_settings::parse_timeout(value)
            .map(|_| ())
            .map_err(invalid),
        "tarn.vacuum_retention_check"
        | "tarn.result_cache"
        | "tarn.data_cache"
        | "tarn.column_statistics"
        | "tarn.shared_subplans"
        | "tarn.exact_decimals" => match value.to_ascii_lowercase().as_str() {
            "true" | "false" => Ok(()),
            _ => Err(invalid(format!("'{value}' is not true or false"))),
        },
        "datafusion.execution.time_zone" => value
            .parse::<arrow::array::timezone::Tz>()
            .map(|_| ())
            .map_err(|_| {
                invalid(format!(
                    "'{value}' is not a time zone; use a name such as 'Europe/Paris' or an offset such as '+02:00'"
                ))
            }),
        _ => Ok(()),
    }
}

fn allowed_summary() -> String {
    let groups: Vec<String> = ALLOWED_GROUPS.iter().map(|g| format!("{g}*")).collect();
    format!("{}, {}", ALLOWED_KEYS.join(", "), groups.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_settings_pass_and_server_settings_are_refused() {
        for (key, value) in [
            ("datafusion.execution.batch_size", "1234"),
            ("datafusion.optimizer.prefer_hash_join", "false"),
            ("datafusion.execution.parquet.pushdown_filters", "true"),
            ("datafusion.execution.time_zone", "Europe/Paris"),
            ("datafusion.execution.time_zone", "+02:00"),
        ] {
            assert!(check(key, Some(value)).is_ok(), "{key}");
        }
        for key in [
            "datafusion.catalog.default_schema",
            "datafusion.catalog.information_schema",
            "datafusion.runtime.memory_limit",
            "datafusion.runtime.temp_directory",
            "datafusion.sql_parser.dialect",
        ] {
            assert!(
                matches!(check(key, Some("x")), Err(EngineError::PermissionDenied(m)) if m.contains(key)),
                "{key}"
            );
            assert!(matches!(
                check(key, None),
                Err(EngineError::PermissionDenied(_))
            ));
        }
        assert!(matches!(
            check("no.such.key", Some("1")),
            Err(EngineError::Plan(_))
        ));
    }

    #[test]
    fn alter_system_is_recognised_by_its_tokens() {
        let parse = SystemSettingNode::parse;
        assert_eq!(
            parse("ALTER SYSTEM SET datafusion.execution.batch_size = 10"),
            Some("SET datafusion.execution.batch_size = 10")
        );
        assert_eq!(parse("alter /* why */ system\n reset x"), Some("reset x"));
        for other in [
            "ALTER SYSTEM",
            "ALTER TABLE t SET x",
            "SET x = 1",
            "SELECT 'ALTER SYSTEM SET'",
        ] {
            assert_eq!(parse(other), None, "{other}");
        }
    }

    #[test]
    fn values_that_would_hurt_every_client_are_refused() {
        for (key, value) in [
            ("datafusion.execution.batch_size", "0"),
            ("datafusion.execution.batch_size", "999999999999"),
            ("datafusion.execution.target_partitions", "100000"),
            ("datafusion.execution.time_zone", "Mars/Olympus"),
        ] {
            assert!(
                matches!(check(key, Some(value)), Err(EngineError::Plan(_))),
                "{key} = {value}"
            );
        }
    }
}
