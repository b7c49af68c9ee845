//! Limits per user and per role, set by admins and remembered across
//! restarts:
//!
//! ```sql
//! ALTER USER alice SET statement_timeout = '30s';
//! ALTER ROLE analysts SET max_running_queries = 2;
//! ALTER USER alice RESET statement_timeout;
//! ```
//!
//! - `statement_timeout`: the longest the user's statements may run. It is
//!   the default of the user's sessions and their ceiling: `SET
//!   tarn.statement_timeout` may lower it, never raise or remove it.
//! - `max_running_queries`: how many of the user's queries that read tables
//!   execute at once; the others wait in the admission queue (a user at its
//!   limit does not hold up anyone else's turn).
//!
//! A user's own limit wins over its roles'; among its roles, the strictest
//! applies. Like `ALTER SYSTEM`, a change is recorded as its statement and
//! replayed at start; dropping a user or role forgets its limits.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use arrow::datatypes::Schema;
use datafusion::common::{DFSchema, DFSchemaRef};
use datafusion::logical_expr::{Extension, LogicalPlan};

use super::Engine;
use super::admin::Cursor;
use super::error::{EngineError, EngineResult};
use super::statement_node::{leaf_statement_node, node_of};
use crate::identity::Principal;

const FORM: &str = "ALTER USER|ROLE name SET statement_timeout = '30s' | max_running_queries = 2, or ALTER USER|ROLE name RESET statement_timeout | max_running_queries";

/// Who a limit is set for.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd)]
pub(crate) enum Holder {
    User(String),
    Role(String),
}

impl Holder {
    fn kind(&self) -> &'static str {
        match self {
            Self::User(_) => "user",
            Self::Role(_) => "role",
        }
    }

    fn name(&self) -> &str {
        match self {
            Self::User(name) | Self::Role(name) => name,
        }
    }

    fn new(name: &str, role: bool) -> Self {
        match role {
            true => Self::Role(name.to_string()),
            false => Self::User(name.to_string()),
        }
    }
}

/// A limit that can be set per user or role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd)]
pub(crate) enum Limit {
    StatementTimeout,
    MaxRunningQueries,
}

impl Limit {
    const ALL: [Self; 2] = [Self::StatementTimeout, Self::MaxRunningQueries];

    fn name(self) -> &'static str {
        match self {
            Self::StatementTimeout => "statement_timeout",
            Self::MaxRunningQueries => "max_running_queries",
        }
    }
}

/// A value of a limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd)]
pub(crate) enum LimitValue {
    /// `None`: no limit.
    Timeout(Option<Duration>),
    Count(usize),
}

/// `ALTER USER|ROLE name SET|RESET limit`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd)]
pub(crate) struct LimitStatement {
    holder: Holder,
    limit: Limit,
    /// `None` for `RESET`.
    value: Option<LimitValue>,
}

impl LimitStatement {
    /// The statement `sql` is, if it starts with `ALTER USER|ROLE name SET|RESET`.
    pub(crate) fn parse(sql: &str) -> Option<EngineResult<Self>> {
        let mut c = Cursor::new(crate::sql_text::tokens(sql)?);
        let role = c.is(1, "ROLE");
        if !(c.is(0, "ALTER") && (role || c.is(1, "USER")) && (c.is(3, "SET") || c.is(3, "RESET")))
        {
            return None;
        }
        c.skip(2);
        Some(Self::parse_rest(&mut c, role))
    }

    fn parse_rest(c: &mut Cursor, role: bool) -> EngineResult<Self> {
        let holder = Holder::new(&c.name(FORM)?, role);
        let set = c.eat("SET");
        if !set {
            c.expect("RESET", FORM)?;
        }
        let word = c.name(FORM)?;
        let limit = Limit::ALL
            .into_iter()
            .find(|limit| limit.name() == word)
            .ok_or_else(|| {
                EngineError::Syntax(format!(
                    "there is no per-{} limit '{word}'; the limits are statement_timeout and max_running_queries",
                    holder.kind()
                ))
            })?;
        let value = match set {
            false => None,
            true => {
                if !c.eat("TO") {
                    c.eat_token(&datafusion::sql::sqlparser::tokenizer::Token::Eq);
                }
                Some(match limit {
                    Limit::StatementTimeout => {
                        let text = c
                            .string(FORM)
                            .or_else(|_| c.number(FORM).map(|n| n.to_string()))?;
                        LimitValue::Timeout(
                            super::tarn_settings::parse_timeout(&text)
                                .map_err(EngineError::Plan)?,
                        )
                    }
                    Limit::MaxRunningQueries => {
                        let n = c.number(FORM)?;
                        if n < 1.0 || n.fract() != 0.0 {
                            return Err(EngineError::Plan(format!(
                                "max_running_queries must be a whole number of at least 1, not {n}; RESET it to remove the limit"
                            )));
                        }
                        LimitValue::Count(n as usize)
                    }
                })
            }
        };
        c.end(FORM)?;
        Ok(Self {
            holder,
            limit,
            value,
        })
    }

    /// The key the statement is remembered by in the catalog.
    pub(crate) fn key(&self) -> String {
        key(&self.holder, self.limit)
    }

    /// Whether it is a `RESET`.
    pub(crate) fn is_reset(&self) -> bool {
        self.value.is_none()
    }
}

fn key(holder: &Holder, limit: Limit) -> String {
    format!(
        "limit:{}:{:?}:{}",
        holder.kind(),
        holder.name(),
        limit.name()
    )
}

/// A limit statement as a plan node.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct LimitNode {
    statement: LimitStatement,
    schema: DFSchemaRef,
}

impl LimitNode {
    pub(crate) fn plan(statement: LimitStatement) -> LogicalPlan {
        LogicalPlan::Extension(Extension {
            node: Arc::new(Self {
                statement,
                schema: Arc::new(DFSchema::empty()),
            }),
        })
    }

    /// The statement `plan` runs, if it is a limit statement.
    pub(crate) fn of(plan: &LogicalPlan) -> Option<&LimitStatement> {
        node_of::<Self>(plan).map(|node| &node.statement)
    }
}

leaf_statement_node!(LimitNode, "UserLimit", statement, |node| format!(
    "{} {} {}",
    node.statement.holder.kind(),
    node.statement.holder.name(),
    node.statement.limit.name()
));

/// The limits one user or role holds, or a principal runs under.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Held {
    statement_timeout: Option<Option<Duration>>,
    max_running: Option<usize>,
}

/// Every user's and role's limits, as the admission and the timeouts read them.
#[derive(Debug, Default)]
pub(crate) struct UserLimits {
    held: RwLock<HashMap<Holder, Held>>,
}

impl UserLimits {
    fn apply(&self, statement: &LimitStatement) {
        let mut held = self.held.write().unwrap_or_else(|e| e.into_inner());
        let limits = held.entry(statement.holder.clone()).or_default();
        match (statement.limit, statement.value) {
            (Limit::StatementTimeout, Some(LimitValue::Timeout(timeout))) => {
                limits.statement_timeout = Some(timeout)
            }
            (Limit::StatementTimeout, _) => limits.statement_timeout = None,
            (Limit::MaxRunningQueries, Some(LimitValue::Count(n))) => limits.max_running = Some(n),
            (Limit::MaxRunningQueries, _) => limits.max_running = None,
        }
    }

    /// Forgets every limit of `holder`; the catalog keys it was remembered by.
    fn forget(&self, holder: &Holder) -> Vec<String> {
        let mut held = self.held.write().unwrap_or_else(|e| e.into_inner());
        held.remove(holder);
        Limit::ALL.iter().map(|limit| key(holder, *limit)).collect()
    }

    /// The limits `principal` runs under: each its own, else the strictest
    /// of its roles'. One look per statement; free while nobody has limits.
    pub(crate) fn of(&self, principal: &Principal) -> Held {
        let held = self.held.read().unwrap_or_else(|e| e.into_inner());
        if held.is_empty() {
            return Held::default();
        }
        let own = held
            .get(&Holder::User(principal.name().to_string()))
            .copied()
            .unwrap_or_default();
        let roles: Vec<Held> = principal
            .roles()
            .iter()
            .filter_map(|role| held.get(&Holder::Role(role.clone())).copied())
            .collect();
        Held {
            statement_timeout: own.statement_timeout.or_else(|| {
                roles
                    .iter()
                    .filter_map(|role| role.statement_timeout)
                    .min_by_key(|timeout| timeout.unwrap_or(Duration::MAX))
            }),
            max_running: own
                .max_running
                .or_else(|| roles.iter().filter_map(|role| role.max_running).min()),
        }
    }
}

impl Held {
    /// The timeout a statement runs with: what its session set (else this
    /// limit, else the server's default), capped by this limit.
    pub(crate) fn statement_timeout_for(
        &self,
        session: &super::tarn_settings::TarnSettings,
        server_default: Option<Duration>,
    ) -> Option<Duration> {
        let default = self.statement_timeout.unwrap_or(server_default);
        capped_timeout(session.statement_timeout(default), self.statement_timeout)
    }

    /// How many of the user's queries may execute at once, if limited.
    pub(crate) fn max_running(&self) -> Option<usize> {
        self.max_running
    }
}

/// The timeout a statement runs with: what its session chose (or the
/// server's default), capped by its user's limit.
fn capped_timeout(chosen: Option<Duration>, ceiling: Option<Option<Duration>>) -> Option<Duration> {
    match (chosen, ceiling) {
        (_, None | Some(None)) => chosen,
        (None, Some(limit)) => limit,
        (Some(chosen), Some(Some(limit))) => Some(chosen.min(limit)),
    }
}

impl Engine {
    /// Sets or resets a limit (admins only).
    pub(super) async fn run_user_limit(
        &self,
        statement: &LimitStatement,
        principal: &Principal,
    ) -> EngineResult<Arc<dyn datafusion::physical_plan::ExecutionPlan>> {
        if !principal.is_admin() {
            return Err(EngineError::PermissionDenied(format!(
                "only members of the role 'admin' may change the limits of a {}",
                statement.holder.kind()
            )));
        }
        let auth = self.auth.as_ref().ok_or_else(|| {
            EngineError::NotSupported("per-user limits need the catalog of a state folder".into())
        })?;
        let holder = &statement.holder;
        let exists = auth
            .exists(holder.name(), matches!(holder, Holder::Role(_)))
            .await
            .map_err(|e| EngineError::Internal(e.to_string()))?;
        if !exists {
            return Err(EngineError::NoSuchObject(format!(
                "there is no {} '{}'; create it first (CREATE {} ...)",
                holder.kind(),
                holder.name(),
                holder.kind().to_uppercase()
            )));
        }
        self.user_limits.apply(statement);
        Ok(Arc::new(datafusion::physical_plan::empty::EmptyExec::new(
            Arc::new(Schema::empty()),
        )))
    }

    /// Forgets the limits of a dropped user (`role` false) or role, here and
    /// in the catalog.
    pub(super) async fn forget_user_limits(&self, name: &str, role: bool) -> EngineResult<()> {
        let keys = self.user_limits.forget(&Holder::new(name, role));
        let Some(catalog) = &self.catalog else {
            return Ok(());
        };
        for key in keys {
            catalog.forget_setting(key).await.map_err(|e| {
                EngineError::Internal(format!("cannot forget the limits of '{name}': {e}"))
            })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(sql: &str) -> LimitStatement {
        LimitStatement::parse(sql)
            .expect("a limit statement")
            .expect("valid")
    }

    #[test]
    fn statements_read_as_limits_and_others_are_left_alone() {
        let set = parsed("ALTER USER Alice SET statement_timeout = '30s'");
        assert_eq!(set.holder, Holder::User("alice".into()));
        assert_eq!(
            set.value,
            Some(LimitValue::Timeout(Some(Duration::from_secs(30))))
        );
        let role = parsed("alter role analysts set max_running_queries to 2;");
        assert_eq!(role.value, Some(LimitValue::Count(2)));
        assert!(parsed("ALTER USER alice RESET max_running_queries").is_reset());
        assert!(LimitStatement::parse("ALTER USER alice WITH PASSWORD 'x'").is_none());
        // Recorded (and replayed at start) as written, its value included.
        let sql = "ALTER USER alice SET statement_timeout = '30s'";
        assert_eq!(super::super::admin::recorded_sql(sql), sql);
        let unknown = LimitStatement::parse("ALTER USER alice SET memory = 1").expect("parsed");
        assert!(
            unknown
                .unwrap_err()
                .to_string()
                .contains("statement_timeout")
        );
        let zero =
            LimitStatement::parse("ALTER ROLE r SET max_running_queries = 0").expect("parsed");
        assert!(zero.unwrap_err().to_string().contains("at least 1"));
    }

    #[test]
    fn a_users_own_limit_wins_and_roles_give_the_strictest() {
        let limits = UserLimits::default();
        let alice = Principal::user("alice", vec!["a".into(), "b".into()]);
        assert_eq!(limits.of(&alice).statement_timeout, None);
        limits.apply(&parsed("ALTER ROLE a SET statement_timeout = '1m'"));
        limits.apply(&parsed("ALTER ROLE b SET statement_timeout = '10s'"));
        limits.apply(&parsed("ALTER ROLE a SET max_running_queries = 3"));
        assert_eq!(
            limits.of(&alice).statement_timeout,
            Some(Some(Duration::from_secs(10)))
        );
        assert_eq!(limits.of(&alice).max_running(), Some(3));
        limits.apply(&parsed("ALTER USER alice SET statement_timeout = '0'"));
        assert_eq!(limits.of(&alice).statement_timeout, Some(None));
        limits.forget(&Holder::User("alice".into()));
        assert_eq!(
            limits.of(&alice).statement_timeout,
            Some(Some(Duration::from_secs(10)))
        );
    }

    #[test]
    fn a_session_may_lower_its_users_timeout_but_not_raise_it() {
        let ten = Some(Duration::from_secs(10));
        let limit = Some(ten);
        assert_eq!(capped_timeout(None, limit), ten);
        assert_eq!(capped_timeout(Some(Duration::from_secs(60)), limit), ten);
        assert_eq!(
            capped_timeout(Some(Duration::from_secs(2)), limit),
            Some(Duration::from_secs(2))
        );
        assert_eq!(capped_timeout(None, None), None);
        assert_eq!(capped_timeout(ten, Some(None)), ten);
    }
}
