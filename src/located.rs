//! A mistake in an operator's file (coupons, campaigns), with where it is.

/// `file:line:column: message`, as editors jump to.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{file}:{line}:{column}: {message}")]
pub struct FileError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl FileError {
    /// The error at byte `offset` of `text`.
    pub fn at(file: &str, text: &str, offset: usize, message: impl Into<String>) -> FileError {
        let (line, column) = line_column(text, offset);
        FileError {
            file: file.to_string(),
            line,
            column,
            message: message.into(),
        }
    }

    /// A file that is not TOML (or not of the expected shape), at the place the parser
    /// names.
    pub fn from_toml(file: &str, text: &str, e: &toml::de::Error) -> FileError {
        FileError::at(
            file,
            text,
            e.span().map_or(0, |s| s.start),
            e.message().trim(),
        )
    }
}

/// 1-based line and column (in characters) of byte `offset`.
pub fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_columns_count_characters() {
        let text = "a = 1\n名字 = \"x\"\n";
        assert_eq!(line_column(text, 0), (1, 1));
        assert_eq!(line_column(text, 6), (2, 1));
        // After the two three-byte characters and a space.
        assert_eq!(line_column(text, 13), (2, 4));
        assert_eq!(
            line_column(text, 7),
            (2, 1),
            "inside a character: its start"
        );
        assert_eq!(line_column(text, 999), (3, 1));
        let e = FileError::at("c.toml", text, 6, "bad");
        assert_eq!(e.to_string(), "c.toml:2:1: bad");
    }
}
