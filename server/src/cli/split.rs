//! Splitting a script into statements at `;`, outside quotes and comments.

/// The statements of `script`, trimmed, without empty ones.
pub fn statements(script: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut chars = script.chars().peekable();
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        match quote {
            Some(q) => {
                current.push(c);
                if c == q {
                    quote = None;
                }
            }
            None => match c {
                '\'' | '"' => {
                    quote = Some(c);
                    current.push(c);
                }
                '-' if chars.peek() == Some(&'-') => {
                    // A line comment runs to the end of the line.
                    for c in chars.by_ref() {
                        if c == '\n' {
                            current.push('\n');
                            break;
                        }
                    }
                }
                ';' => out.push(std::mem::take(&mut current)),
                _ => current.push(c),
            },
        }
    }
    out.push(current);
    out.into_iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

/// Whether `text` ends a statement (a `;` outside quotes), so the shell can
/// run it instead of asking for another line.
pub fn is_complete(text: &str) -> bool {
    let trimmed = text.trim_end();
    if !trimmed.ends_with(';') {
        return false;
    }
    // Complete only if the final ';' is outside quotes.
    let mut quote: Option<char> = None;
    for c in trimmed.chars() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '\'' || c == '"' => quote = Some(c),
            None => {}
        }
    }
    quote.is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_outside_quotes_and_comments() {
        let script = "SELECT 'a;b'; -- one; two\nSELECT \"x;\" FROM t;\n\n;";
        assert_eq!(statements(script), ["SELECT 'a;b'", "SELECT \"x;\" FROM t"]);
        assert!(is_complete("SELECT 1;"));
        assert!(!is_complete("SELECT ';"));
        assert!(!is_complete("SELECT 1"));
    }
}
