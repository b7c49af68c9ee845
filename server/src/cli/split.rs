//! Splitting a script into statements at `;`, with the SQL tokenizer the
//! server's parser uses, so quotes, `--` and `/* */` comments, and quoted
//! identifiers are read exactly as the server reads them.

use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::tokenizer::{Location, Token, TokenWithSpan, Tokenizer};

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
    let offsets = LineOffsets::of(script);
    let mut out = Vec::new();
    let mut start = 0;
    for token in tokens.iter().filter(|t| t.token == Token::SemiColon) {
        let end = offsets.byte(script, token.span.start);
        out.push(script[start..end].to_string());
        start = offsets.byte(script, token.span.end);
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

fn tokens(text: &str) -> Option<Vec<TokenWithSpan>> {
    Tokenizer::new(&GenericDialect {}, text)
        .tokenize_with_location()
        .ok()
}

/// Whether `text` holds nothing but white space and comments.
fn has_only_comments(text: &str) -> bool {
    tokens(text).is_some_and(|tokens| {
        tokens
            .iter()
            .all(|t| matches!(t.token, Token::Whitespace(_)))
    })
}

/// Where each line of a text starts, to turn token locations (line and
/// character column) into byte offsets.
struct LineOffsets(Vec<usize>);

impl LineOffsets {
    fn of(text: &str) -> Self {
        let mut starts = vec![0];
        starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        Self(starts)
    }

    fn byte(&self, text: &str, location: Location) -> usize {
        let line = usize::try_from(location.line.saturating_sub(1)).unwrap_or(usize::MAX);
        let Some(&line_start) = self.0.get(line) else {
            return text.len();
        };
        let column = usize::try_from(location.column.saturating_sub(1)).unwrap_or(usize::MAX);
        text[line_start..]
            .char_indices()
            .nth(column)
            .map_or(text.len(), |(i, _)| line_start + i)
    }
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
