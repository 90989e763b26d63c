//! Credentials for the nodes: [`Secret`], a value that never prints, and [`Credentials`], the
//! one shape every dialer and the config use for `AUTH`.

use std::fmt;

use serde::{Deserialize, Serialize};

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

/// What `AUTH` sends: an ACL user (or the default user) and its password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The ACL user; `None` authenticates as the `default` user (`AUTH <password>`).
    pub username: Option<String>,
    /// The password.
    pub password: Secret,
}

impl Credentials {
    /// Credentials from config-style fields: none when the password is empty (no `AUTH`),
    /// and the default user when the name is empty.
    pub fn from_parts(username: &str, password: &Secret) -> Option<Self> {
        (!password.is_empty()).then(|| Self {
            username: (!username.is_empty()).then(|| username.to_string()),
            password: password.clone(),
        })
    }
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
    fn credentials_from_config_fields() {
        assert_eq!(Credentials::from_parts("u", &Secret::default()), None);
        let c = Credentials::from_parts("", &Secret::new("p")).unwrap();
        assert_eq!((c.username, c.password.expose()), (None, "p"));
        let c = Credentials::from_parts("app", &Secret::new("hunter2")).unwrap();
        assert_eq!(c.username.as_deref(), Some("app"));
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
