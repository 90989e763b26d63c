//! The `[auth]` and `[policy]` settings: client passwords and users, and the command policy.
//! Secrets may come inline, from `SLOTWAY_AUTH_PASSWORD`, or from files (`*_file`), and never
//! show in `Debug` output.

use serde::{Deserialize, Serialize};

use super::ConfigError;
use crate::net::Secret;

/// Commands a shared proxy refuses unless `policy.allow` lists them: they reconfigure,
/// stop, reshard or spy on the cluster behind every client's back.
///
/// The ACL subcommands a node would answer about (or for) the proxy's own upstream user, not
/// the client's proxy user, are among them: `ACL WHOAMI` is answered by the proxy, `ACL CAT`,
/// `GENPASS` and `HELP` say nothing about any user and pass through.
pub const DEFAULT_DENY: &[&str] = &[
    "acl|deluser",
    "acl|dryrun",
    "acl|getuser",
    "acl|list",
    "acl|load",
    "acl|log",
    "acl|save",
    "acl|setuser",
    "acl|users",
    "bgrewriteaof",
    "bgsave",
    "cluster|addslots",
    "cluster|addslotsrange",
    "cluster|bumpepoch",
    "cluster|delslots",
    "cluster|delslotsrange",
    "cluster|failover",
    "cluster|flushslots",
    "cluster|forget",
    "cluster|meet",
    "cluster|replicate",
    "cluster|reset",
    "cluster|saveconfig",
    "cluster|set-config-epoch",
    "cluster|setslot",
    "config|resetstat",
    "config|rewrite",
    "config|set",
    "debug",
    "failover",
    "module",
    "monitor",
    "psync",
    "replicaof",
    "save",
    "shutdown",
    "slaveof",
    "sync",
];

/// Client authentication.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// `requirepass`: the default user's password; empty = none (default empty).
    pub password: Secret,
    /// A file holding the default user's password (one trailing newline ignored).
    pub password_file: String,
    /// Named users (`AUTH user pass`); any user makes authentication mandatory.
    pub users: Vec<UserConfig>,
}

/// One named user.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct UserConfig {
    /// The name given to `AUTH`.
    pub name: String,
    /// The user's password.
    pub password: Secret,
    /// A file holding the user's password, instead of `password`.
    pub password_file: String,
    /// ACL-style rules applied in order from "nothing allowed": `+@read`, `-@dangerous`,
    /// `+get`, `-config|set`, `allcommands` (default none: list what the user may run).
    pub commands: Vec<String>,
    /// Glob patterns of the keys the user may touch (default `["*"]`, every key).
    pub keys: Vec<String>,
    /// Whether the user may run scripts and functions (EVAL, EVALSHA, FCALL, their `_RO`
    /// forms, SCRIPT LOAD, FUNCTION LOAD/RESTORE): `"auto"` (default) allows them only to a
    /// user with every command and every key, whose rules a script cannot exceed; `"deny"`
    /// refuses them; `"allow"` lets a restricted user run them anyway, with the rights of
    /// the proxy's upstream Redis user instead of its own.
    pub scripts: ScriptAccess,
}

/// Whether a user may run server-side code; see [`UserConfig::scripts`].
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum ScriptAccess {
    /// Allowed only when the user's command and key rules are unrestricted (the default).
    #[default]
    Auto,
    /// Never allowed.
    Deny,
    /// Allowed; the code runs with the upstream user's rights, not the user's own.
    Allow,
}

impl Default for UserConfig {
    fn default() -> Self {
        Self {
            name: String::new(),
            password: Secret::default(),
            password_file: String::new(),
            commands: Vec::new(),
            keys: vec!["*".into()],
            scripts: ScriptAccess::Auto,
        }
    }
}

/// The proxy-wide command policy.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyConfig {
    /// Commands refused for everyone: names, `container|subcommand` or `@category`
    /// (default: the commands that can damage the cluster, see `DEFAULT_DENY`).
    pub deny: Vec<String>,
    /// Exceptions to `deny`, same syntax (default empty).
    pub allow: Vec<String>,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            deny: DEFAULT_DENY.iter().map(|s| s.to_string()).collect(),
            allow: Vec::new(),
        }
    }
}

fn invalid(key: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        reason: reason.into(),
    }
}

impl AuthConfig {
    /// Checks users and secrets for contradictions; the rules' grammar is checked by
    /// `security::access`, which owns it.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !self.password.is_empty() && !self.password_file.is_empty() {
            return Err(invalid(
                "auth.password_file",
                "set either auth.password or auth.password_file, not both",
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for u in &self.users {
            let bad_name = u.name.is_empty()
                || !u.name.bytes().all(|b| b.is_ascii_graphic())
                || u.name.len() > 128;
            if bad_name {
                return Err(invalid(
                    "auth.users.name",
                    format!(
                        "{:?} is not a valid user name (printable, no spaces)",
                        u.name
                    ),
                ));
            }
            if !seen.insert(u.name.as_str()) {
                return Err(invalid(
                    "auth.users.name",
                    format!("user {:?} is defined twice", u.name),
                ));
            }
            if u.password.is_empty() == u.password_file.is_empty() {
                return Err(invalid(
                    "auth.users.password",
                    format!(
                        "user {:?} needs exactly one of password or password_file",
                        u.name
                    ),
                ));
            }
            if u.keys.iter().any(String::is_empty) {
                return Err(invalid(
                    "auth.users.keys",
                    format!("user {:?} has an empty key pattern", u.name),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    fn load(text: &str) -> Result<Config, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, text).unwrap();
        Config::load(Some(&path), Vec::new()).map_err(|e| e.to_string())
    }

    #[test]
    fn users_and_policy_from_toml() {
        let cfg = load(
            r#"
[auth]
password_file = "/run/secrets/pw"
[[auth.users]]
name = "reader"
password = "r"
commands = ["+@read", "-keys"]
keys = ["app:*"]
scripts = "allow"
[policy]
deny = ["@admin", "flushall"]
allow = ["config|get"]
"#,
        )
        .unwrap();
        assert_eq!(cfg.auth.password_file, "/run/secrets/pw");
        assert_eq!(cfg.auth.users[0].commands, ["+@read", "-keys"]);
        assert_eq!(cfg.auth.users[0].keys, ["app:*"]);
        assert_eq!(cfg.auth.users[0].scripts, super::ScriptAccess::Allow);
        assert_eq!(cfg.policy.deny, ["@admin", "flushall"]);
        assert_eq!(cfg.policy.allow, ["config|get"]);
        let shown = format!("{cfg:?}");
        assert!(!shown.contains("password: \"r\""), "{shown}");
    }

    #[test]
    fn example_config_files_load() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        for name in ["config/local.toml", "config/kubernetes.toml"] {
            let cfg = Config::load(Some(&root.join(name)), Vec::new())
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            // The local example spells out the default deny list: keep them in step.
            assert_eq!(cfg.policy, super::PolicyConfig::default(), "{name}");
        }
    }

    #[test]
    fn defaults_deny_damaging_commands_and_need_no_auth() {
        let cfg = Config::default();
        assert!(cfg.policy.deny.iter().any(|d| d == "config|set"));
        assert!(cfg.auth.password.is_empty() && cfg.auth.users.is_empty());
    }

    #[test]
    fn secrets_from_environment_are_redacted() {
        let cfg = Config::load(
            None,
            vec![
                ("SLOTWAY_AUTH_PASSWORD".to_string(), "topsecret".to_string()),
                (
                    "SLOTWAY_CLUSTER_PASSWORD".to_string(),
                    "nodesecret".to_string(),
                ),
                (
                    "SLOTWAY_POLICY_DENY".to_string(),
                    "debug, monitor".to_string(),
                ),
            ],
        )
        .unwrap();
        assert_eq!(cfg.auth.password.expose(), "topsecret");
        assert_eq!(cfg.cluster.password.expose(), "nodesecret");
        assert_eq!(cfg.policy.deny, ["debug", "monitor"]);
        let shown = format!("{cfg:?}");
        assert!(
            !shown.contains("topsecret") && !shown.contains("nodesecret"),
            "{shown}"
        );
    }

    #[test]
    fn contradictions_are_rejected() {
        let cases = [
            ("[auth]\npassword = \"a\"\npassword_file = \"/f\"\n", "auth.password_file"),
            ("[[auth.users]]\nname = \"u\"\ncommands = [\"+@all\"]\n", "auth.users.password"),
            (
                "[[auth.users]]\nname = \"u\"\npassword = \"p\"\npassword_file = \"/f\"\n",
                "auth.users.password",
            ),
            ("[[auth.users]]\nname = \"a b\"\npassword = \"p\"\n", "auth.users.name"),
            (
                "[[auth.users]]\nname = \"u\"\npassword = \"p\"\n[[auth.users]]\nname = \"u\"\npassword = \"q\"\n",
                "auth.users.name",
            ),
            ("[[auth.users]]\nname = \"u\"\npassword = \"p\"\nkeys = [\"\"]\n", "auth.users.keys"),
            ("[[auth.users]]\nname = \"u\"\npassword = \"p\"\nscripts = \"maybe\"\n", "scripts"),
            ("[cluster]\npassword = \"a\"\npassword_file = \"/f\"\n", "cluster.password_file"),
            ("[cluster]\nusername = \"a\"\nusername_file = \"/f\"\n", "cluster.username_file"),
            ("[[auth.users]]\nname = \"u\"\npassword = \"p\"\nrules = []\n", "rules"),
        ];
        for (text, key) in cases {
            let err = load(text).unwrap_err();
            assert!(err.contains(key), "{text}: {err}");
        }
    }
}
