//! What the importer tells the operator: one note per difference between HAProxy's behaviour
//! and the translated configuration's, each with a severity that says what is at stake.

use std::fmt;

/// How much a difference matters. Ordered: errors first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// The translated configuration would lose traffic, health or access control that HAProxy
    /// keeps: `import-haproxy` refuses unless `--accept-differences`.
    Error,
    /// Weaker than HAProxy (a simpler check, a setting dropped) but safe.
    Warn,
    /// Said for the record: the translation is equivalent, or the line changes nothing.
    Info,
}

impl Severity {
    pub fn name(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warn => "warn",
            Severity::Info => "info",
        }
    }
}

/// One difference, with the haproxy.cfg line it is about (when it is about one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub severity: Severity,
    pub text: String,
}

impl Note {
    /// The line the note is about: every note about a line starts with `line N:`.
    pub fn line(&self) -> Option<usize> {
        let digits = self.text.strip_prefix("line ")?;
        digits.split(':').next()?.parse().ok()
    }
}

impl fmt::Display for Note {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.severity.name(), self.text)
    }
}

/// The notes of one import, gathered as the stages find them.
#[derive(Debug, Clone, Default)]
pub struct Notes(Vec<Note>);

impl Notes {
    pub fn error(&mut self, text: String) {
        self.0.push(Note { severity: Severity::Error, text });
    }
    pub fn warn(&mut self, text: String) {
        self.0.push(Note { severity: Severity::Warn, text });
    }
    pub fn info(&mut self, text: String) {
        self.0.push(Note { severity: Severity::Info, text });
    }

    /// Errors first, then warnings, then the rest; each group in the order of its lines.
    pub fn sorted(mut self) -> Vec<Note> {
        self.0.sort_by_key(|n| (n.severity, n.line().unwrap_or(usize::MAX)));
        self.0
    }
}
