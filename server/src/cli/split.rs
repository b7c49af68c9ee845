//! Splitting a script into statements at `;`, with the SQL tokenizer the
//! server's parser uses, so quotes, `--` and `/* */` comments, and quoted
//! identifiers are read exactly as the server reads them.

use datafusion::sql::sqlparser::tokenizer::Token;

use crate::sql_text::{Offsets, tokens};

/// The statements of `script`, trimmed, without empty ones. A script the
/// tokenizer cannot read (an unterminated string) is one statement: the
/// server says what is wrong with it.
pub fn statements(script: &str) -> Vec<String> {
    let Some(tokens) = tokens(script) else {
        return vec![script.trim().to_string()]
            .into_iter()
            .filter(|s| !s.is_empty())
            .collect();
    };
    let offsets = Offsets::of(script);
    let mut out = Vec::new();
    let mut start = 0;
    for token in tokens.iter().filter(|t| t.token == Token::SemiColon) {
        let end = offsets.byte(token.span.start);
        out.push(script[start..end].to_string());
        start = offsets.byte(token.span.end);
    }
    out.push(script[start..].to_string());
    out.into_iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !has_only_comments(s))
        .collect()
}

/// Whether `text` ends a statement (a `;` that is a token, not inside a
/// string or a comment), so the shell can run it instead of asking for
/// another line.
pub fn is_complete(text: &str) -> bool {
    let Some(tokens) = tokens(text) else {
        // An unterminated string or comment: more lines will follow.
        return false;
    };
    tokens
        .iter()
        .rev()
        .find(|t| !matches!(t.token, Token::Whitespace(_)))
        .is_some_and(|t| t.token == Token::SemiColon)
}

/// Whether `text` holds nothing but white space and comments.
fn has_only_comments(text: &str) -> bool {
    tokens(text).is_some_and(|tokens| {
        tokens
            .iter()
            .all(|t| matches!(t.token, Token::Whitespace(_)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_outside_quotes_and_comments() {
        let script = "SELECT 'a;b'; -- one; two\nSELECT \"x;\" FROM t;\n\n;";
        assert_eq!(
            statements(script),
            ["SELECT 'a;b'", "-- one; two\nSELECT \"x;\" FROM t"]
        );
        assert!(is_complete("SELECT 1;"));
        assert!(!is_complete("SELECT ';"));
        assert!(!is_complete("SELECT 1"));
    }

    #[test]
    fn comments_with_apostrophes_and_block_comments_do_not_confuse_it() {
        assert!(is_complete("SELECT 1 -- it's done\n;"));
        assert!(is_complete("SELECT 1; -- that's all"));
        assert!(!is_complete("SELECT 1 /* ; */"));
        assert_eq!(
            statements("SELECT 1 /* ; */ + 1; SELECT 'it''s';"),
            ["SELECT 1 /* ; */ + 1", "SELECT 'it''s'"]
        );
        assert_eq!(
            statements("SELECT 'é;ü'; SELECT 2"),
            ["SELECT 'é;ü'", "SELECT 2"]
        );
        assert_eq!(statements("-- only a comment\n"), Vec::<String>::new());
    }
}
