//! SQL text as the server's tokenizer reads it: tokens with their places,
//! and the byte ranges they cover (for the shell's splitter and the engine's
//! rewrites, which must cut the text exactly where the parser would).

use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::tokenizer::{Location, Token, TokenWithSpan, Tokenizer};

/// The tokens of `text` with their places, or `None` if it does not
/// tokenize (an unterminated string or comment).
pub fn tokens(text: &str) -> Option<Vec<TokenWithSpan>> {
    Tokenizer::new(&GenericDialect {}, text)
        .tokenize_with_location()
        .ok()
}

/// The text of the (possibly qualified) table name `name` spells in `text`
/// (`a`, `s.a`, `"My Table"`), if its tokens are one.
pub fn table_name(text: &str, name: &[&TokenWithSpan]) -> Option<String> {
    let is_name = name.iter().enumerate().all(|(i, t)| match &t.token {
        Token::Word(_) => i % 2 == 0,
        Token::Period => i % 2 == 1,
        _ => false,
    });
    if name.is_empty() || !is_name || name.len().is_multiple_of(2) {
        return None;
    }
    let offsets = Offsets::of(text);
    let (first, last) = (name.first()?, name.last()?);
    Some(text[offsets.byte(first.span.start)..offsets.byte(last.span.end)].to_string())
}

/// The table of a statement `lead [optional] name [;]` (`REFRESH TABLE
/// name`, `ANALYZE [TABLE] name`), as `sql` spells it.
pub fn table_after(sql: &str, lead: &[Keyword], optional: Option<Keyword>) -> Option<String> {
    let tokens = tokens(sql)?;
    let significant: Vec<_> = tokens
        .iter()
        .filter(|t| !matches!(t.token, Token::Whitespace(_)))
        .collect();
    let keyword = |i: usize, word: Keyword| matches!(significant.get(i).map(|t| &t.token), Some(Token::Word(w)) if w.keyword == word);
    if !lead.iter().enumerate().all(|(i, &word)| keyword(i, word)) {
        return None;
    }
    let start = lead.len() + usize::from(optional.is_some_and(|word| keyword(lead.len(), word)));
    let mut name = significant.get(start..)?.to_vec();
    if name.last().is_some_and(|t| t.token == Token::SemiColon) {
        name.pop();
    }
    table_name(sql, &name)
}

/// Whether `text` holds `word` anywhere, in any case: a cheap test before
/// tokenizing for a rewrite that only a statement naming it can need.
pub fn mentions(text: &str, word: &str) -> bool {
    text.as_bytes()
        .windows(word.len())
        .any(|w| w.eq_ignore_ascii_case(word.as_bytes()))
}

/// Turns token locations (line and character column) into byte offsets.
pub struct Offsets<'a> {
    text: &'a str,
    line_starts: Vec<usize>,
}

impl<'a> Offsets<'a> {
    /// The offsets of `text`.
    pub fn of(text: &'a str) -> Self {
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        Self { text, line_starts }
    }

    /// The byte offset of `location` (the end of the text if it lies beyond).
    pub fn byte(&self, location: Location) -> usize {
        let line = usize::try_from(location.line.saturating_sub(1)).unwrap_or(usize::MAX);
        let Some(&line_start) = self.line_starts.get(line) else {
            return self.text.len();
        };
        let column = usize::try_from(location.column.saturating_sub(1)).unwrap_or(usize::MAX);
        self.text[line_start..]
            .char_indices()
            .nth(column)
            .map_or(self.text.len(), |(i, _)| line_start + i)
    }

    /// The text `token` covers.
    pub fn text_of(&self, token: &TokenWithSpan) -> &'a str {
        &self.text[self.byte(token.span.start)..self.byte(token.span.end)]
    }
}
