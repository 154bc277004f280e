//! Compile errors: every problem found in a set of rule files, each at `file:line:column`.
//!
//! Collected, never returned at the first: an operator fixing a rule folder wants the whole
//! list from one `siyu check` run, as ripgrep reports every bad line of its rc file. The
//! parser and the compiler push into a [`FileErrors`] that knows the file being read and
//! turns TOML byte offsets into the line and column an editor shows.

use std::cell::OnceCell;
use std::fmt;

/// One problem in one rule file. Lines and columns start at 1; columns count characters,
/// not bytes, so they agree with editors on lines with Chinese text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}:{column}: {message}")]
pub struct RuleError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// Every problem found, in file order then position; `Display` writes one per line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleErrors(pub Vec<RuleError>);

impl fmt::Display for RuleErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for RuleErrors {}

/// A place in a rule file, 1-based (columns in characters), as errors show it. Compiled
/// rules keep the positions of what they were written with, so that `warnings.rs` can
/// point at a keyword or placeholder long after the source text is gone.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Pos {
    pub line: usize,
    pub column: usize,
}

/// Where errors of one file go while it is parsed and compiled.
pub(crate) struct FileErrors<'a> {
    pub name: &'a str,
    pub text: &'a str,
    pub errors: &'a mut Vec<RuleError>,
    /// Built on first use: a file with thousands of rules must not rescan its text for
    /// every error or every "first defined at" location.
    lines: OnceCell<LineIndex>,
}

impl<'a> FileErrors<'a> {
    pub fn new(name: &'a str, text: &'a str, errors: &'a mut Vec<RuleError>) -> Self {
        FileErrors {
            name,
            text,
            errors,
            lines: OnceCell::new(),
        }
    }

    /// Records `message` at byte `offset` of the file.
    pub fn push(&mut self, offset: usize, message: impl Into<String>) {
        let (line, column) = self.line_column(offset);
        self.errors.push(RuleError {
            file: self.name.to_string(),
            line,
            column,
            message: message.into(),
        });
    }

    /// The `file:line` of byte `offset`, for messages that point at an earlier definition.
    pub fn location(&self, offset: usize) -> String {
        format!("{}:{}", self.name, self.line_column(offset).0)
    }

    /// Line and column of byte `offset`, kept in the compiled table for warnings.
    pub fn position(&self, offset: usize) -> Pos {
        let (line, column) = self.line_column(offset);
        Pos { line, column }
    }

    fn line_column(&self, offset: usize) -> (usize, usize) {
        self.lines
            .get_or_init(|| LineIndex::new(self.text))
            .position(self.text, offset)
    }
}

/// 1-based line and column (in characters) of byte `offset` of `text`.
#[cfg(test)]
pub(crate) fn line_column(text: &str, offset: usize) -> (usize, usize) {
    LineIndex::new(text).position(text, offset)
}

/// Where each line of a text starts.
struct LineIndex {
    starts: Vec<usize>,
}

impl LineIndex {
    fn new(text: &str) -> LineIndex {
        let after_newlines = text.match_indices('\n').map(|(i, _)| i + 1);
        LineIndex {
            starts: std::iter::once(0).chain(after_newlines).collect(),
        }
    }

    /// An offset past the end or inside a character is moved back to the nearest
    /// character start, so a bad span from a parser can never panic here.
    fn position(&self, text: &str, offset: usize) -> (usize, usize) {
        let mut offset = offset.min(text.len());
        while !text.is_char_boundary(offset) {
            offset -= 1;
        }
        // `starts[0] == 0 <= offset`, so `line >= 1`.
        let line = self.starts.partition_point(|&start| start <= offset);
        let column = text[self.starts[line - 1]..offset].chars().count() + 1;
        (line, column)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_column_cases() {
        let text = "a = 1\n规则 = \"x\"\r\nb";
        let cases = [
            ("start", 0, (1, 1)),
            ("inside first line", 4, (1, 5)),
            ("start of second line", 6, (2, 1)),
            ("after two CJK characters", 12, (2, 3)),
            ("inside a CJK character", 7, (2, 1)),
            ("after CRLF", text.len() - 1, (3, 1)),
            ("past the end", 999, (3, 2)),
        ];
        for (name, offset, expected) in cases {
            assert_eq!(
                line_column(text, offset),
                expected,
                "{name}: offset {offset}"
            );
        }
    }

    #[test]
    fn display_one_error_per_line() {
        let error = |line| RuleError {
            file: "replies/x.toml".into(),
            line,
            column: 5,
            message: "unknown intent `greting`".into(),
        };
        let errors = RuleErrors(vec![error(12), error(13)]);
        assert_eq!(
            errors.to_string(),
            "replies/x.toml:12:5: unknown intent `greting`\nreplies/x.toml:13:5: unknown intent `greting`"
        );
    }
}
