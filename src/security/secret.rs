//! Loading secrets from files; the [`Secret`] type itself lives in `net`, next to the dialer
//! that sends it.

pub use crate::net::Secret;

use super::SecurityError;

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
