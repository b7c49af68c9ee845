//! `t VERSION AS OF 3` and `t TIMESTAMP AS OF '2026-11-22 07:00:00'`: the
//! time travel syntax of Delta Lake, Databricks and Spark, for the dialect
//! DataFusion parses (which has no table versions).
//!
//! Before parsing, each such table reference is rewritten, token by token,
//! into the `time_travel` table function under the table's name:
//! `time_travel('t', 3) AS t`. Only a version number or a quoted time
//! follows `AS OF`; anything else is refused with the forms that work.

use std::borrow::Cow;

use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::tokenizer::{Token, TokenWithSpan};

use super::error::{EngineError, EngineResult};
use crate::sql_text::{Offsets, mentions, tokens};

const USAGE: &str = "write t VERSION AS OF 3, t TIMESTAMP AS OF '2026-11-22 07:00:00' (UTC), or time_travel('t', ...)";

/// `sql` with every `name VERSION AS OF n` / `name TIMESTAMP AS OF 'time'`
/// rewritten into `time_travel(...)`; `sql` itself when there is none.
pub(crate) fn rewrite(sql: &str) -> EngineResult<Cow<'_, str>> {
    if !mentions(sql, "version") && !mentions(sql, "timestamp") {
        return Ok(Cow::Borrowed(sql));
    }
    // What does not tokenize is the parser's to report.
    let Some(tokens) = tokens(sql) else {
        return Ok(Cow::Borrowed(sql));
    };
    let significant: Vec<&TokenWithSpan> = tokens
        .iter()
        .filter(|t| !matches!(t.token, Token::Whitespace(_)))
        .collect();
    let offsets = Offsets::of(sql);
    let mut rewritten = String::with_capacity(sql.len());
    let mut copied = 0;
    let mut i = 0;
    while i < significant.len() {
        let Some(found) = versioned_table(&significant, i)? else {
            i += 1;
            continue;
        };
        let start = offsets.byte(significant[found.name_start].span.start);
        let end = offsets.byte(significant[found.value].span.end);
        let name = &sql[start..offsets.byte(significant[found.name_end].span.end)];
        let last_part = offsets.text_of(significant[found.name_end]);
        let value = offsets.text_of(significant[found.value]);
        rewritten.push_str(&sql[copied..start]);
        rewritten.push_str(&format!(
            "time_travel('{}', {value})",
            name.replace('\'', "''")
        ));
        if !has_alias(significant.get(found.value + 1).copied()) {
            rewritten.push_str(&format!(" AS {last_part}"));
        }
        copied = end;
        i = found.value + 1;
    }
    if copied == 0 {
        return Ok(Cow::Borrowed(sql));
    }
    rewritten.push_str(&sql[copied..]);
    Ok(Cow::Owned(rewritten))
}

/// Token positions (among the significant tokens) of one versioned table.
struct Versioned {
    name_start: usize,
    name_end: usize,
    value: usize,
}

/// The versioned table reference whose name starts at `i`, if one does:
/// after FROM, JOIN or a comma, a name (`a`, `s.a`, `"A"`), then `VERSION`
/// or `TIMESTAMP`, `AS OF` and the value.
fn versioned_table(tokens: &[&TokenWithSpan], i: usize) -> EngineResult<Option<Versioned>> {
    let opens_a_table = i > 0
        && match &tokens[i - 1].token {
            Token::Word(w) => matches!(w.keyword, Keyword::FROM | Keyword::JOIN),
            Token::Comma => true,
            _ => false,
        };
    if !opens_a_table || !is_name_part(tokens[i]) {
        return Ok(None);
    }
    let mut name_end = i;
    while tokens
        .get(name_end + 1)
        .is_some_and(|t| t.token == Token::Period)
        && tokens.get(name_end + 2).is_some_and(|t| is_name_part(t))
    {
        name_end += 2;
    }
    let keyword = |at: usize| match tokens.get(at).map(|t| &t.token) {
        Some(Token::Word(w)) => Some(w.keyword),
        _ => None,
    };
    let by_version = match keyword(name_end + 1) {
        Some(Keyword::VERSION) => true,
        Some(Keyword::TIMESTAMP) => false,
        _ => return Ok(None),
    };
    if keyword(name_end + 2) != Some(Keyword::AS) || keyword(name_end + 3) != Some(Keyword::OF) {
        return Ok(None);
    }
    let value = name_end + 4;
    let fits = match tokens.get(value).map(|t| &t.token) {
        Some(Token::Number(_, _)) => by_version,
        Some(Token::SingleQuotedString(_)) => !by_version,
        _ => false,
    };
    if !fits {
        return Err(EngineError::NotSupported(format!(
            "{} AS OF takes {}; {USAGE}",
            if by_version { "VERSION" } else { "TIMESTAMP" },
            if by_version {
                "a version number"
            } else {
                "a quoted UTC time"
            }
        )));
    }
    Ok(Some(Versioned {
        name_start: i,
        name_end,
        value,
    }))
}

/// A word of a table name (`public` is a keyword too, so any word is; the
/// `VERSION AS OF` that must follow keeps this from matching elsewhere).
fn is_name_part(token: &TokenWithSpan) -> bool {
    matches!(&token.token, Token::Word(_))
}

/// Whether the token after the value starts an alias (`AS x` or `x`).
fn has_alias(next: Option<&TokenWithSpan>) -> bool {
    match next.map(|t| &t.token) {
        Some(Token::Word(w)) => {
            w.keyword == Keyword::AS || w.keyword == Keyword::NoKeyword || w.quote_style.is_some()
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewritten(sql: &str) -> String {
        rewrite(sql).unwrap().into_owned()
    }

    #[test]
    fn versions_and_times_become_time_travel() {
        assert_eq!(
            rewritten("SELECT * FROM t VERSION AS OF 3"),
            "SELECT * FROM time_travel('t', 3) AS t"
        );
        assert_eq!(
            rewritten(
                "select count(*) from public.t timestamp as of '2026-11-22 07:00:00' x where a = 1"
            ),
            "select count(*) from time_travel('public.t', '2026-11-22 07:00:00') x where a = 1"
        );
        assert_eq!(
            rewritten(
                "SELECT * FROM a JOIN \"B\" VERSION AS OF 0 AS b ON a.id = b.id, c VERSION AS OF 1"
            ),
            "SELECT * FROM a JOIN time_travel('\"B\"', 0) AS b ON a.id = b.id, time_travel('c', 1) AS c"
        );
    }

    #[test]
    fn other_uses_of_the_words_are_left_alone() {
        for sql in [
            "SELECT CAST(x AS TIMESTAMP) AS ts FROM t",
            "SELECT version FROM t",
            "SELECT 'VERSION AS OF 3' FROM t",
            "SELECT timestamp '2026-01-01 00:00:00'",
        ] {
            assert_eq!(rewritten(sql), sql);
        }
    }

    #[test]
    fn other_values_are_refused_with_the_forms_that_work() {
        let err = rewrite("SELECT * FROM t TIMESTAMP AS OF now()").unwrap_err();
        assert!(err.to_string().contains("time_travel"), "{err}");
        assert!(rewrite("SELECT * FROM t VERSION AS OF 'x'").is_err());
    }
}
