//! Lines as HAProxy reads them: words split on blanks, quotes and escapes undone, comments cut.

/// One directive: its 1-based line number and its words, unquoted and unescaped.
pub(super) struct Line {
    pub(super) no: usize,
    pub(super) words: Vec<String>,
}

impl Line {
    pub(super) fn word(&self, i: usize) -> Option<&str> {
        self.words.get(i).map(String::as_str)
    }
    pub(super) fn args(&self, from: usize) -> &[String] {
        self.words.get(from..).unwrap_or(&[])
    }
    pub(super) fn text(&self) -> String {
        self.words.join(" ")
    }
    pub(super) fn not_translated(&self) -> String {
        format!("line {}: `{}` not translated", self.no, self.text())
    }
}

/// A line HAProxy would not read either.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(super) enum LexError {
    #[error("the line ends with `\\`")]
    TrailingBackslash,
    #[error("unterminated quote")]
    UnterminatedQuote,
}

/// Splits a line into words the way HAProxy does: blanks separate, `#` starts a comment,
/// "..." and '...' quote (only "..." interprets escapes), `\` escapes one character.
#[expect(
    clippy::match_same_arms,
    reason = "inside single quotes a backslash is text, so that arm must come before the escape"
)]
pub(super) fn split_words(line: &str) -> Result<Vec<String>, LexError> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut quote: Option<char> = None;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some('\''), c) => word.get_or_insert_with(String::new).push(c),
            (_, '\\') => {
                let escaped = chars.next().ok_or(LexError::TrailingBackslash)?;
                word.get_or_insert_with(String::new).push(unescape(escaped));
            }
            (Some(_), c) => word.get_or_insert_with(String::new).push(c),
            (None, '"' | '\'') => {
                quote = Some(c);
                word.get_or_insert_with(String::new);
            }
            (None, '#') => break,
            (None, c) if c.is_whitespace() => words.extend(word.take()),
            (None, c) => word.get_or_insert_with(String::new).push(c),
        }
    }
    if quote.is_some() {
        return Err(LexError::UnterminatedQuote);
    }
    words.extend(word);
    Ok(words)
}

pub(super) fn unescape(c: char) -> char {
    match c {
        'r' => '\r',
        'n' => '\n',
        't' => '\t',
        c => c,
    }
}
