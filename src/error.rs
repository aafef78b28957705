//! meshcap's errors as data, with one rendering site (`Display`); `main` prefixes `meshcap: `.

use std::fmt;

#[derive(Debug)]
pub enum Error {
    /// A flag or environment variable has a value meshcap refuses.
    InvalidValue { source: String, value: String, why: String },
    /// A file meshcap had to read could not be read.
    Read { path: String, err: std::io::Error },
    /// A file meshcap writes could not be written; `source` is the setting that named it.
    Write {
        path: String,
        source: String,
        err: std::io::Error,
    },
    /// Anything else, already phrased (lowercase, offending value quoted).
    Other(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn invalid(source: impl Into<String>, value: impl Into<String>, why: impl Into<String>) -> Error {
        Error::InvalidValue {
            source: source.into(),
            value: value.into(),
            why: why.into(),
        }
    }

    /// The process exit code for this error.
    pub fn exit_code(&self) -> i32 {
        1
    }
}

/// Quotes a value for a one-line message: control characters and quotes are escaped.
pub fn quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('\'');
    for c in value.chars() {
        match c {
            '\'' => out.push_str("\\'"),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.extend(c.escape_default()),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// A value for a log line, as is but with control characters escaped (`\n`, `\u{1b}`), so
/// no value can start a forged log line or drive a terminal.
pub fn printable(value: &str) -> std::borrow::Cow<'_, str> {
    if !value.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(value);
    }
    let mut out = String::with_capacity(value.len() + 8);
    for c in value.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidValue { source, value, why } => {
                // The reason may quote part of the value: escaped too, the message stays one line.
                write!(f, "invalid value {} for '{}': {}", quote(value), source, printable(why))
            }
            Error::Read { path, err } => write!(f, "cannot read {}: {}", quote(path), err),
            Error::Write { path, source, err } => write!(f, "cannot write {} ({source}): {err}", quote(path)),
            Error::Other(msg) => f.write_str(msg),
        }
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(quote("a'b\nc"), "'a\\'b\\nc'");
        assert_eq!(printable("eth0"), "eth0");
        assert_eq!(printable("1\n2\t3\u{1b}[2J"), "1\\n2\\t3\\u{1b}[2J");
    }
}
