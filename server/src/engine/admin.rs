//! Identity statements, Postgres-style: users, roles and API tokens.
//!
//! ```sql
//! CREATE USER alice WITH PASSWORD 'a long secret';
//! ALTER USER alice WITH PASSWORD 'another secret';   -- admins, or alice herself
//! DROP USER [IF EXISTS] alice;
//! CREATE ROLE analysts;   DROP ROLE [IF EXISTS] analysts;
//! GRANT analysts TO alice;   REVOKE analysts FROM alice;
//! CREATE TOKEN etl [FOR USER alice] [EXPIRES IN '30 days'];  -- shows the secret once
//! DROP TOKEN [IF EXISTS] etl;
//! ```
//!
//! DataFusion parses none of these: they are read with the SQL tokenizer
//! into an [`AdminNode`], planned, prepared and recorded as a run like any
//! statement, with the password left out of the recorded text.

use std::sync::Arc;
use std::time::Duration;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::{DFSchema, DFSchemaRef};
use datafusion::logical_expr::{Extension, LogicalPlan};

use super::statement_node::{leaf_statement_node, node_of};
use datafusion::common::TableReference;
use datafusion::sql::sqlparser::tokenizer::{Span, Token, TokenWithSpan};

use super::error::{EngineError, EngineResult};
use crate::identity::Principal;

/// The shortest password accepted.
const MIN_PASSWORD_LENGTH: usize = 8;

/// A password in a statement: never printed.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd)]
pub(crate) struct Password(pub(super) String);

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("'***'")
    }
}

/// One identity statement.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd)]
pub(crate) enum AdminStatement {
    CreateUser {
        name: String,
        password: Password,
    },
    AlterUserPassword {
        name: String,
        password: Password,
    },
    DropUser {
        name: String,
        if_exists: bool,
    },
    CreateRole {
        name: String,
    },
    DropRole {
        name: String,
        if_exists: bool,
    },
    GrantRole {
        role: String,
        user: String,
    },
    RevokeRole {
        role: String,
        user: String,
    },
    CreateToken {
        name: String,
        user: Option<String>,
        lifetime: Option<Duration>,
    },
    DropToken {
        name: String,
        if_exists: bool,
    },
}

/// The significant tokens of a statement, read front to back.
pub(super) struct Cursor {
    tokens: Vec<Token>,
    /// Where each token is in the text, for the SQL a statement carries.
    spans: Vec<Span>,
    at: usize,
}

impl Cursor {
    pub(super) fn new(tokens: Vec<TokenWithSpan>) -> Self {
        let mut significant: Vec<TokenWithSpan> = tokens
            .into_iter()
            .filter(|t| !matches!(t.token, Token::Whitespace(_)))
            .collect();
        if significant.last().map(|t| &t.token) == Some(&Token::SemiColon) {
            significant.pop();
        }
        let spans = significant.iter().map(|t| t.span).collect();
        let tokens = significant.into_iter().map(|t| t.token).collect();
        Self {
            tokens,
            spans,
            at: 0,
        }
    }

    /// Steps over `n` tokens already looked at.
    pub(super) fn skip(&mut self, n: usize) {
        self.at += n;
    }

    /// A table name (`t`, `s.t`, `c.s.t`) as Tarn records it.
    pub(super) fn table(&mut self, form: &str) -> EngineResult<String> {
        let mut parts = vec![self.name(form)?];
        while self.eat_token(&Token::Period) {
            parts.push(self.name(form)?);
        }
        let reference = match parts.as_slice() {
            [table] => TableReference::bare(table.as_str()),
            [schema, table] => TableReference::partial(schema.as_str(), table.as_str()),
            [catalog, schema, table] => {
                TableReference::full(catalog.as_str(), schema.as_str(), table.as_str())
            }
            _ => return Err(syntax(form)),
        };
        Ok(crate::names::table_name(&reference))
    }

    /// The text of `sql` inside the parentheses that come next (nesting
    /// counted): the expression a statement carries.
    pub(super) fn parenthesized(&mut self, sql: &str, form: &str) -> EngineResult<String> {
        if !self.eat_token(&Token::LParen) {
            return Err(syntax(form));
        }
        let start = self.at;
        let mut depth = 1;
        while let Some(token) = self.tokens.get(self.at) {
            depth += match token {
                Token::LParen => 1,
                Token::RParen => -1,
                _ => 0,
            };
            if depth == 0 {
                break;
            }
            self.at += 1;
        }
        if depth != 0 || start == self.at {
            return Err(syntax(form));
        }
        let offsets = crate::sql_text::Offsets::of(sql);
        let text =
            &sql[offsets.byte(self.spans[start].start)..offsets.byte(self.spans[self.at - 1].end)];
        self.at += 1;
        Ok(text.to_string())
    }

    pub(super) fn peek_word(&self, offset: usize) -> Option<&str> {
        match self.tokens.get(self.at + offset) {
            Some(Token::Word(w)) if w.quote_style.is_none() => Some(w.value.as_str()),
            _ => None,
        }
    }

    pub(super) fn is(&self, offset: usize, word: &str) -> bool {
        self.peek_word(offset)
            .is_some_and(|w| w.eq_ignore_ascii_case(word))
    }

    /// Consumes `word` if it is next.
    pub(super) fn eat(&mut self, word: &str) -> bool {
        let found = self.is(0, word);
        if found {
            self.at += 1;
        }
        found
    }

    pub(super) fn expect(&mut self, word: &str, form: &str) -> EngineResult<()> {
        match self.eat(word) {
            true => Ok(()),
            false => Err(syntax(form)),
        }
    }

    /// A name: unquoted names are folded to lower case, as DataFusion does.
    pub(super) fn name(&mut self, form: &str) -> EngineResult<String> {
        match self.tokens.get(self.at) {
            Some(Token::Word(w)) => {
                self.at += 1;
                Ok(match w.quote_style {
                    Some(_) => w.value.clone(),
                    None => w.value.to_lowercase(),
                })
            }
            _ => Err(syntax(form)),
        }
    }

    pub(super) fn number(&mut self, form: &str) -> EngineResult<f64> {
        match self.tokens.get(self.at) {
            Some(Token::Number(digits, _)) => {
                let value = digits.parse().map_err(|_| syntax(form))?;
                self.at += 1;
                Ok(value)
            }
            _ => Err(syntax(form)),
        }
    }

    pub(super) fn string(&mut self, form: &str) -> EngineResult<String> {
        match self.tokens.get(self.at) {
            Some(Token::SingleQuotedString(s)) => {
                self.at += 1;
                Ok(s.clone())
            }
            _ => Err(syntax(form)),
        }
    }

    /// Consumes `token` if it is next.
    pub(super) fn eat_token(&mut self, token: &Token) -> bool {
        let found = self.tokens.get(self.at) == Some(token);
        if found {
            self.at += 1;
        }
        found
    }

    pub(super) fn end(&self, form: &str) -> EngineResult<()> {
        match self.at == self.tokens.len() {
            true => Ok(()),
            false => Err(syntax(form)),
        }
    }
}

pub(super) fn syntax(form: &str) -> EngineError {
    EngineError::Syntax(format!("expected {form}"))
}

const CREATE_USER: &str = "CREATE USER name WITH PASSWORD 'secret'";
const ALTER_USER: &str = "ALTER USER name WITH PASSWORD 'secret'";
const DROP_USER: &str = "DROP USER [IF EXISTS] name";
const CREATE_ROLE: &str = "CREATE ROLE name";
const DROP_ROLE: &str = "DROP ROLE [IF EXISTS] name";
const GRANT_ROLE: &str = "GRANT role TO user";
const REVOKE_ROLE: &str = "REVOKE role FROM user";
const CREATE_TOKEN: &str = "CREATE TOKEN name [FOR USER user] [EXPIRES IN '30 days']";
const DROP_TOKEN: &str = "DROP TOKEN [IF EXISTS] name";

/// Privileges (a later `GRANT SELECT ON t TO u`) are not roles.
const PRIVILEGES: &[&str] = &[
    "SELECT", "INSERT", "UPDATE", "DELETE", "CREATE", "DROP", "ALL", "USAGE", "EXECUTE",
];

impl AdminStatement {
    /// `sql` as an identity statement: `None` if it is not one, an error if
    /// it starts like one but does not follow its form.
    pub(crate) fn parse(sql: &str) -> Option<EngineResult<Self>> {
        let mut c = Cursor::new(crate::sql_text::tokens(sql)?);
        let form = if c.is(0, "CREATE") && c.is(1, "USER") {
            CREATE_USER
        } else if c.is(0, "ALTER") && c.is(1, "USER") && !(c.is(3, "SET") || c.is(3, "RESET")) {
            // `ALTER USER name SET|RESET limit` is a limit (`user_limits.rs`).
            ALTER_USER
        } else if c.is(0, "DROP") && c.is(1, "USER") {
            DROP_USER
        } else if c.is(0, "CREATE") && c.is(1, "ROLE") {
            CREATE_ROLE
        } else if c.is(0, "DROP") && c.is(1, "ROLE") {
            DROP_ROLE
        } else if c.is(0, "CREATE") && c.is(1, "TOKEN") {
            CREATE_TOKEN
        } else if c.is(0, "DROP") && c.is(1, "TOKEN") {
            DROP_TOKEN
        } else if c.is(0, "GRANT") && c.is(2, "TO") && !is_privilege(c.peek_word(1)) {
            GRANT_ROLE
        } else if c.is(0, "REVOKE") && c.is(2, "FROM") && !is_privilege(c.peek_word(1)) {
            REVOKE_ROLE
        } else {
            return None;
        };
        Some(Self::parse_form(&mut c, form))
    }

    fn parse_form(c: &mut Cursor, form: &str) -> EngineResult<Self> {
        let statement = match form {
            CREATE_USER | ALTER_USER => {
                c.at = 2;
                let name = c.name(form)?;
                c.eat("WITH");
                c.expect("PASSWORD", form)?;
                let password = Password(c.string(form)?);
                match form {
                    CREATE_USER => Self::CreateUser { name, password },
                    _ => Self::AlterUserPassword { name, password },
                }
            }
            DROP_USER | DROP_ROLE | DROP_TOKEN => {
                c.at = 2;
                let if_exists = c.is(0, "IF") && c.is(1, "EXISTS");
                if if_exists {
                    c.at += 2;
                }
                let name = c.name(form)?;
                match form {
                    DROP_USER => Self::DropUser { name, if_exists },
                    DROP_ROLE => Self::DropRole { name, if_exists },
                    _ => Self::DropToken { name, if_exists },
                }
            }
            CREATE_ROLE => {
                c.at = 2;
                Self::CreateRole {
                    name: c.name(form)?,
                }
            }
            GRANT_ROLE | REVOKE_ROLE => {
                c.at = 1;
                let role = c.name(form)?;
                c.at += 1;
                let user = c.name(form)?;
                match form {
                    GRANT_ROLE => Self::GrantRole { role, user },
                    _ => Self::RevokeRole { role, user },
                }
            }
            _ => {
                c.at = 2;
                let name = c.name(form)?;
                let user = match c.eat("FOR") {
                    true => {
                        c.expect("USER", form)?;
                        Some(c.name(form)?)
                    }
                    false => None,
                };
                let lifetime = match c.eat("EXPIRES") {
                    true => {
                        c.expect("IN", form)?;
                        let text = c.string(form)?;
                        Some(humantime::parse_duration(&text).map_err(|e| {
                            EngineError::Syntax(format!(
                                "'{text}' is not a duration ({e}); write it like '30 days' or '12h'"
                            ))
                        })?)
                    }
                    false => None,
                };
                Self::CreateToken {
                    name,
                    user,
                    lifetime,
                }
            }
        };
        c.end(form)?;
        if let Self::CreateUser { password, .. } | Self::AlterUserPassword { password, .. } =
            &statement
            && password.0.chars().count() < MIN_PASSWORD_LENGTH
        {
            return Err(EngineError::InvalidParameters(format!(
                "a password needs at least {MIN_PASSWORD_LENGTH} characters"
            )));
        }
        Ok(statement)
    }

    /// The statement as recorded in the catalog: passwords left out.
    pub(crate) fn recorded_text(&self) -> String {
        match self {
            Self::CreateUser { name, .. } => format!("CREATE USER {name} WITH PASSWORD '***'"),
            Self::AlterUserPassword { name, .. } => {
                format!("ALTER USER {name} WITH PASSWORD '***'")
            }
            Self::DropUser { name, if_exists } => {
                format!("DROP USER {}{name}", if_exists_text(*if_exists))
            }
            Self::CreateRole { name } => format!("CREATE ROLE {name}"),
            Self::DropRole { name, if_exists } => {
                format!("DROP ROLE {}{name}", if_exists_text(*if_exists))
            }
            Self::GrantRole { role, user } => format!("GRANT {role} TO {user}"),
            Self::RevokeRole { role, user } => format!("REVOKE {role} FROM {user}"),
            Self::CreateToken {
                name,
                user,
                lifetime,
            } => {
                let mut text = format!("CREATE TOKEN {name}");
                if let Some(user) = user {
                    text.push_str(&format!(" FOR USER {user}"));
                }
                if let Some(lifetime) = lifetime {
                    text.push_str(&format!(
                        " EXPIRES IN '{}'",
                        humantime::format_duration(*lifetime)
                    ));
                }
                text
            }
            Self::DropToken { name, if_exists } => {
                format!("DROP TOKEN {}{name}", if_exists_text(*if_exists))
            }
        }
    }

    /// Whether `principal` may run it: admins, and any user changing their
    /// own password.
    pub(super) fn allowed(&self, principal: &Principal) -> bool {
        match self {
            Self::AlterUserPassword { name, .. } if principal.is_authenticated() => {
                principal.is_admin() || name == principal.name()
            }
            _ => principal.is_admin(),
        }
    }

    /// The columns of its result: the new token for `CREATE TOKEN`, none
    /// otherwise.
    pub(super) fn result_schema(&self) -> SchemaRef {
        match self {
            Self::CreateToken { .. } => Arc::new(Schema::new(
                ["token_name", "user_name", "token", "expires_at"]
                    .map(|name| Field::new(name, DataType::Utf8, name == "expires_at"))
                    .to_vec(),
            )),
            _ => Arc::new(Schema::empty()),
        }
    }
}

pub(super) fn is_privilege(word: Option<&str>) -> bool {
    word.is_some_and(|w| PRIVILEGES.iter().any(|p| p.eq_ignore_ascii_case(w)))
}

fn if_exists_text(if_exists: bool) -> &'static str {
    if if_exists { "IF EXISTS " } else { "" }
}

/// An identity statement as a plan node.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct AdminNode {
    pub(crate) statement: AdminStatement,
    schema: DFSchemaRef,
}

impl AdminNode {
    pub(crate) fn plan(statement: AdminStatement) -> EngineResult<LogicalPlan> {
        let schema = DFSchema::try_from(statement.result_schema())
            .map_err(|e| EngineError::Internal(e.to_string()))?;
        Ok(LogicalPlan::Extension(Extension {
            node: Arc::new(Self {
                statement,
                schema: Arc::new(schema),
            }),
        }))
    }

    /// The statement of `plan`, if it is an identity statement.
    pub(crate) fn of(plan: &LogicalPlan) -> Option<&AdminStatement> {
        node_of::<Self>(plan).map(|node| &node.statement)
    }
}

leaf_statement_node!(AdminNode, "Admin", statement, |node| node
    .statement
    .recorded_text());

/// `sql` as it may be recorded (the audit log): an identity statement
/// without its password; one that does not follow its form with every
/// string left out.
pub fn recorded_sql(sql: &str) -> String {
    match AdminStatement::parse(sql) {
        None if sql.to_ascii_uppercase().contains("PASSWORD")
            && crate::sql_text::tokens(sql).is_none() =>
        {
            "(not recorded: a statement that mentions a password and does not tokenize)".into()
        }
        None => sql.to_string(),
        Some(Ok(statement)) => statement.recorded_text(),
        Some(Err(_)) => strings_left_out(sql),
    }
}

fn strings_left_out(sql: &str) -> String {
    let Some(tokens) = crate::sql_text::tokens(sql) else {
        return String::new();
    };
    let offsets = crate::sql_text::Offsets::of(sql);
    tokens
        .iter()
        .map(|t| match t.token {
            Token::SingleQuotedString(_) => "'***'",
            _ => offsets.text_of(t),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(sql: &str) -> Option<EngineResult<AdminStatement>> {
        AdminStatement::parse(sql)
    }

    #[test]
    fn identity_statements_are_read_by_their_tokens() {
        let ok = |sql: &str| parse(sql).unwrap().unwrap();
        assert_eq!(
            ok("create user Alice with password 'long enough';").recorded_text(),
            "CREATE USER alice WITH PASSWORD '***'"
        );
        assert_eq!(
            ok("CREATE USER \"Bob\" PASSWORD 'long enough'"),
            AdminStatement::CreateUser {
                name: "Bob".into(),
                password: Password("long enough".into())
            }
        );
        assert_eq!(
            ok("DROP USER IF EXISTS x").recorded_text(),
            "DROP USER IF EXISTS x"
        );
        assert_eq!(
            ok("GRANT analysts TO alice").recorded_text(),
            "GRANT analysts TO alice"
        );
        assert_eq!(
            ok("REVOKE analysts FROM alice").recorded_text(),
            "REVOKE analysts FROM alice"
        );
        assert_eq!(
            ok("CREATE TOKEN etl FOR USER bob EXPIRES IN '30 days'").recorded_text(),
            "CREATE TOKEN etl FOR USER bob EXPIRES IN '30days'"
        );
        assert_eq!(ok("drop token etl").recorded_text(), "DROP TOKEN etl");
        // Not identity statements: left to DataFusion.
        for other in [
            "GRANT SELECT ON t TO alice",
            "CREATE TABLE user (a INT)",
            "SELECT 'CREATE USER x'",
            "DROP TABLE users",
        ] {
            assert!(parse(other).is_none(), "{other}");
        }
        // Identity statements that do not follow their form.
        for (bad, why) in [
            ("CREATE USER alice", "CREATE USER name WITH PASSWORD"),
            ("CREATE USER alice WITH PASSWORD 'short'", "at least 8"),
            ("CREATE TOKEN t EXPIRES IN 'soon'", "not a duration"),
            ("DROP ROLE a b", "DROP ROLE [IF EXISTS] name"),
        ] {
            let err = parse(bad).unwrap().unwrap_err().to_string();
            assert!(err.contains(why), "{bad}: {err}");
        }
        // Nor in what the audit log records, even when the statement fails.
        for sql in [
            "CREATE USER a WITH PASSWORD 'hunter2hunter2'",
            "CREATE USER a WITH PASSWORD 'hunter2'",
            "ALTER USER a PASSWORD 'hunter2hunter2' extra",
            "CREATE USER a WITH PASSWORD 'hunter2",
        ] {
            let recorded = recorded_sql(sql);
            assert!(!recorded.contains("hunter2"), "{sql}: {recorded}");
        }
        assert_eq!(recorded_sql("SELECT 'x'"), "SELECT 'x'");
        // The password never shows in a plan or a debug print.
        let plan = AdminNode::plan(ok("ALTER USER a WITH PASSWORD 'hunter2hunter2'")).unwrap();
        assert!(!format!("{plan} {plan:?}").contains("hunter2"));
    }
}
