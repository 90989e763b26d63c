//! The checks of the `[auth]` and `[policy]` settings that need the rule grammar: every user
//! rule and policy entry must parse, and a user may not be named like the default user while
//! `auth.password` sets that one. The config owns the file format and its plain checks; this
//! module reads it, so the dependency runs one way only (security → config).

use crate::config::{Config, ConfigError};

use super::auth::DEFAULT_USER;
use super::policy::{Rule, Target};

fn invalid(key: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        reason: reason.into(),
    }
}

/// Checks the access rules of a loaded config; errors name the setting, like
/// [`Config::load`]'s own.
pub fn validate(config: &Config) -> Result<(), ConfigError> {
    let auth = &config.auth;
    let has_default_password = !auth.password.is_empty() || !auth.password_file.is_empty();
    for u in &auth.users {
        if u.name == DEFAULT_USER && has_default_password {
            return Err(invalid(
                "auth.users.name",
                "a user named \"default\" conflicts with auth.password; use one of them",
            ));
        }
        for rule in &u.commands {
            Rule::parse(rule).map_err(|e| invalid("auth.users.commands", e.to_string()))?;
        }
    }
    for t in &config.policy.deny {
        Target::parse(t).map_err(|e| invalid("policy.deny", e.to_string()))?;
    }
    for t in &config.policy.allow {
        Target::parse(t).map_err(|e| invalid("policy.allow", e.to_string()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str) -> Result<(), String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let path = dir.path().join("c.toml");
        std::fs::write(&path, text).map_err(|e| e.to_string())?;
        let cfg = Config::load(Some(&path), Vec::new()).map_err(|e| e.to_string())?;
        validate(&cfg).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_and_examples_pass() {
        assert!(validate(&Config::default()).is_ok());
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        for name in ["config/local.toml", "config/kubernetes.toml"] {
            let cfg = Config::load(Some(&root.join(name)), Vec::new())
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(validate(&cfg).is_ok(), "{name}");
        }
        assert!(check(
            "[[auth.users]]\nname = \"u\"\npassword = \"p\"\ncommands = [\"+@read\", \"-keys\"]\n"
        )
        .is_ok());
    }

    #[test]
    fn bad_rules_name_the_setting() {
        let cases = [
            (
                "[auth]\npassword = \"x\"\n[[auth.users]]\nname = \"default\"\npassword = \"p\"\n",
                "auth.users.name",
            ),
            (
                "[[auth.users]]\nname = \"u\"\npassword = \"p\"\ncommands = [\"get\"]\n",
                "auth.users.commands",
            ),
            ("[policy]\ndeny = [\"@nonsense\"]\n", "policy.deny"),
            ("[policy]\nallow = [\"a|b|c\"]\n", "policy.allow"),
        ];
        for (text, key) in cases {
            let err = check(text).unwrap_err();
            assert!(err.contains(key), "{text}: {err}");
        }
    }
}
