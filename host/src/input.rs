//! Bad input: a file the user gave us that we cannot use.

use std::path::{Path, PathBuf};

/// A problem with an input file, reported as one line: `FILE: problem`.
/// The binary exits with status 2 on it, before anything is started.
#[derive(Debug, thiserror::Error)]
#[error("{}: {msg}", path.display())]
pub struct InputError {
    /// The file at fault.
    pub path: PathBuf,
    /// What is wrong with it, on one line.
    pub msg: String,
}

impl InputError {
    /// An error about `path`; newlines in `msg` are folded so it stays one line.
    pub fn new(path: &Path, msg: impl std::fmt::Display) -> Self {
        let msg = msg.to_string();
        let msg = msg.split_whitespace().collect::<Vec<_>>().join(" ");
        InputError {
            path: path.to_path_buf(),
            msg,
        }
    }
}

/// Reads a text file, turning I/O failures into an [`InputError`].
pub fn read_text(path: &Path) -> Result<String, InputError> {
    std::fs::read_to_string(path).map_err(|e| InputError::new(path, e))
}

/// Formats a TOML parse error as `line L, column C: message`.
pub fn toml_error(path: &Path, text: &str, err: &toml::de::Error) -> InputError {
    let place = err.span().map(|span| {
        // Byte offsets: back off to a character boundary before slicing.
        let mut at = span.start.min(text.len());
        while !text.is_char_boundary(at) {
            at -= 1;
        }
        let before = &text[..at];
        let line = before.matches('\n').count() + 1;
        let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
        format!("line {line}, column {col}: ")
    });
    InputError::new(
        path,
        format!("{}{}", place.unwrap_or_default(), err.message()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_errors_name_line_and_column() {
        #[derive(serde::Deserialize, Debug)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct T {
            a: u32,
        }
        let text = "a = 1\nb = 2\n";
        let err = toml::from_str::<T>(text).unwrap_err();
        let e = toml_error(Path::new("x.toml"), text, &err).to_string();
        assert!(
            e.starts_with("x.toml: line 2, column 1: unknown field `b`"),
            "{e}"
        );
        assert!(!e.contains('\n'));
    }
}
