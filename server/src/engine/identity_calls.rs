//! The spellings people type for the session's user and role:
//! `current_user` and `session_user` (Postgres, no parentheses),
//! `current_user()` (MySQL), `current_role` and `current_role()`.
//!
//! The parser reads `current_user` as a call without arguments and refuses
//! `current_user()`, and reads `current_role` as a column. Before parsing,
//! `current_user()` / `session_user()` lose their parentheses and a bare
//! `current_role` gains them, token by token, so that every spelling calls
//! the session's functions.

use std::borrow::Cow;

use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::tokenizer::{Token, TokenWithSpan};

use crate::sql_text::{Offsets, mentions, tokens};

/// `sql` with the identity calls spelled as the parser takes them; `sql`
/// itself when it has none.
pub(crate) fn rewrite(sql: &str) -> Cow<'_, str> {
    let mentioned = ["current_user", "session_user", "current_role"]
        .iter()
        .any(|word| mentions(sql, word));
    if !mentioned {
        return Cow::Borrowed(sql);
    }
    let Some(tokens) = tokens(sql) else {
        return Cow::Borrowed(sql);
    };
    let significant: Vec<&TokenWithSpan> = tokens
        .iter()
        .filter(|t| !matches!(t.token, Token::Whitespace(_)))
        .collect();
    let offsets = Offsets::of(sql);
    let token = |i: usize| significant.get(i).map(|t| &t.token);
    let mut rewritten = String::with_capacity(sql.len() + 2);
    let mut copied = 0;
    for (i, current) in significant.iter().enumerate() {
        let Token::Word(word) = &current.token else {
            continue;
        };
        if word.quote_style.is_some() || token(i.wrapping_sub(1)) == Some(&Token::Period) {
            continue;
        }
        let called = token(i + 1) == Some(&Token::LParen);
        match word.keyword {
            Keyword::CURRENT_USER | Keyword::SESSION_USER
                if called && token(i + 2) == Some(&Token::RParen) =>
            {
                let end = offsets.byte(current.span.end);
                rewritten.push_str(&sql[copied..end]);
                copied = offsets.byte(significant[i + 2].span.end);
            }
            Keyword::CURRENT_ROLE if !called => {
                let end = offsets.byte(current.span.end);
                rewritten.push_str(&sql[copied..end]);
                rewritten.push_str("()");
                copied = end;
            }
            _ => {}
        }
    }
    if copied == 0 {
        return Cow::Borrowed(sql);
    }
    rewritten.push_str(&sql[copied..]);
    Cow::Owned(rewritten)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_becomes_a_call_the_parser_takes() {
        for (typed, parsed) in [
            ("SELECT current_user()", "SELECT current_user"),
            (
                "SELECT CURRENT_USER ( ), session_user()",
                "SELECT CURRENT_USER, session_user",
            ),
            ("SELECT current_role", "SELECT current_role()"),
            (
                "SELECT current_role(), current_user",
                "SELECT current_role(), current_user",
            ),
            (
                "SELECT \"current_role\" FROM t",
                "SELECT \"current_role\" FROM t",
            ),
            (
                "SELECT t.current_role FROM t",
                "SELECT t.current_role FROM t",
            ),
            ("SELECT 'current_user()'", "SELECT 'current_user()'"),
        ] {
            assert_eq!(rewrite(typed), parsed, "{typed}");
        }
    }
}
