//! Secrets (passwords) as a type that never prints its value, and loading them from files.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::SecurityError;

/// A password or similar value: `Debug` prints `<redacted>`, there is no `Display`, and
/// comparison against a client's guess takes the same time wherever the first difference is.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value itself, for sending it where it belongs (AUTH to a node).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// True when no secret is set.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Compares with `guess` without an early exit, so response timing does not reveal how
    /// much of a guess was right (only whether its length was).
    pub fn matches(&self, guess: &[u8]) -> bool {
        let mine = self.0.as_bytes();
        if mine.len() != guess.len() {
            return false;
        }
        let diff = mine
            .iter()
            .zip(guess)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        // Keep the fold from being turned into a short-circuiting comparison.
        std::hint::black_box(diff) == 0
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Self::new(value)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("\"\"")
        } else {
            f.write_str("<redacted>")
        }
    }
}

/// The value of a setting given inline (or through `SLOTWAY_*`) or as a file path: the
/// file's content wins when a path is set, without its trailing line break (secret files
/// written by `echo` or mounted from Kubernetes Secrets often end with one).
pub fn read_secret(
    inline: &Secret,
    file: &str,
    key: &'static str,
) -> Result<Secret, SecurityError> {
    if file.is_empty() {
        return Ok(inline.clone());
    }
    let text = std::fs::read_to_string(file).map_err(|source| SecurityError::SecretFile {
        key,
        path: file.to_string(),
        source,
    })?;
    let value = text
        .strip_suffix('\n')
        .map(|t| t.strip_suffix('\r').unwrap_or(t))
        .unwrap_or(&text);
    Ok(Secret::new(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "<redacted>");
        assert_eq!(format!("{:?}", Secret::default()), "\"\"");
        #[derive(Debug)]
        #[allow(dead_code)]
        struct Holder {
            password: Secret,
        }
        let shown = format!("{:?}", Holder { password: s });
        assert!(!shown.contains("hunter2"), "{shown}");
    }

    #[test]
    fn matches_only_the_exact_value() {
        let s = Secret::new("abc");
        assert!(s.matches(b"abc"));
        assert!(!s.matches(b"abd"));
        assert!(!s.matches(b"ab"));
        assert!(!s.matches(b"abcd"));
        assert!(Secret::default().matches(b""));
    }

    #[test]
    fn file_content_wins_and_loses_one_line_break() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        std::fs::write(&path, "s3cret\r\n").unwrap();
        let p = path.to_str().unwrap();
        let got = read_secret(&Secret::new("inline"), p, "auth.password_file").unwrap();
        assert_eq!(got.expose(), "s3cret");
        std::fs::write(&path, "two\n\n").unwrap();
        assert_eq!(
            read_secret(&Secret::default(), p, "k").unwrap().expose(),
            "two\n"
        );
        let inline = read_secret(&Secret::new("inline"), "", "k").unwrap();
        assert_eq!(inline.expose(), "inline");
        let err = read_secret(&Secret::default(), "/nonexistent/pw", "auth.password_file")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("auth.password_file") && err.contains("/nonexistent/pw"),
            "{err}"
        );
    }
}
