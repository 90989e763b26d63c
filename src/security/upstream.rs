//! The proxy's upstream Redis identity: the ACL user slotway logs in as on every node.
//!
//! The command policy holds for what clients send, but a script's `redis.call` runs on the
//! node as this user, out of the proxy's sight. So the user must be a restricted Redis ACL
//! user whose rules deny what `policy.deny` denies; Redis then refuses it inside scripts
//! too. This module derives those rules from the effective policy (the one source of truth
//! for `slotway upstream-acl`, `slotway local` and the rules file in `deploy/`), minus the
//! commands slotway itself must send to the nodes.

use std::fmt::Write as _;

use super::policy::CommandPolicy;
use super::{policy_allow, Secret, SecurityError};
use crate::command::{CommandFlags, CommandSpec, CommandTable};
use crate::config::Config;

/// The upstream user's name when the config names none (or names `default`).
pub const UPSTREAM_USER: &str = "slotway";

/// Commands slotway sends to nodes on its own behalf (handshake, topology, command table,
/// fan-outs, script recovery, transactions, durable writes, Pub/Sub links): never denied to
/// the upstream user, even when the policy denies them to clients.
pub const PROXY_SENDS: &[&str] = &[
    "acl|dryrun",
    "asking",
    "auth",
    "cluster|shards",
    "cluster|slots",
    "command",
    "dbsize",
    "exec",
    "hello",
    "info",
    "multi",
    "ping",
    "psubscribe",
    "punsubscribe",
    "readonly",
    "role",
    "script|exists",
    "script|load",
    "ssubscribe",
    "subscribe",
    "sunsubscribe",
    "unsubscribe",
    "unwatch",
    "wait",
];

/// The upstream user's rules, derived from a policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamRules {
    /// ACL rules in order: every key, channel and command, then one `-cmd` per denied one.
    pub rules: Vec<String>,
    /// Denied by the policy but kept because slotway sends them itself ([`PROXY_SENDS`]):
    /// scripts can run these.
    pub kept: Vec<String>,
}

impl UpstreamRules {
    /// The rules of the effective policy of `config` (`policy.deny`, `policy.allow`,
    /// `commands.allow_config_set`) against `table`.
    pub fn from_config(config: &Config, table: &CommandTable) -> Result<Self, SecurityError> {
        let policy = CommandPolicy::new(&config.policy.deny, &policy_allow(config))?;
        Ok(Self::derive(&policy, table))
    }

    /// `+@all` minus what `policy` denies; a container is denied whole when the policy
    /// denies it and all its subcommands, else subcommand by subcommand.
    pub fn derive(policy: &CommandPolicy, table: &CommandTable) -> Self {
        let mut rules: Vec<String> = ["~*", "&*", "+@all"].map(String::from).into();
        let mut kept = Vec::new();
        let mut deny = |spec: &CommandSpec, rules: &mut Vec<String>| {
            if !policy.denies(spec) {
                return;
            }
            if PROXY_SENDS.contains(&spec.name.as_str()) {
                // A `noscript` command kept for slotway (ACL DRYRUN) is out of a script's
                // reach anyway: nothing to warn about.
                if !spec.flags.contains(CommandFlags::NOSCRIPT) {
                    kept.push(spec.name.clone());
                }
            } else {
                rules.push(format!("-{}", spec.name));
            }
        };
        for spec in table.iter() {
            let whole = spec.is_container()
                && policy.denies(spec)
                && spec
                    .subcommands
                    .iter()
                    .all(|s| policy.denies(s) && !PROXY_SENDS.contains(&s.name.as_str()));
            if whole || !spec.is_container() {
                deny(spec, &mut rules);
            } else {
                for sub in &spec.subcommands {
                    deny(sub, &mut rules);
                }
            }
        }
        Self { rules, kept }
    }

    /// The user's full `ACL SETUSER` arguments after the name: `reset on #<sha256> rules…`.
    /// `reset` first makes applying it again (a restart, a second bootstrap) idempotent.
    pub fn setuser_args(&self, password: &Secret) -> Vec<String> {
        let mut args = vec![
            "reset".to_string(),
            "on".to_string(),
            format!("#{}", password_hash(password.expose().as_bytes())),
        ];
        args.extend(self.rules.iter().cloned());
        args
    }
}

/// Commands the policy denies that a script could call, unless the upstream user's ACL
/// refuses them: denied, not sent by slotway itself, and not `noscript` (Redis refuses
/// those inside scripts on its own). Containers are replaced by their subcommands.
pub fn script_reachable<'t>(
    config: &Config,
    table: &'t CommandTable,
) -> Result<Vec<&'t CommandSpec>, SecurityError> {
    let policy = CommandPolicy::new(&config.policy.deny, &policy_allow(config))?;
    let mut out = Vec::new();
    for spec in table.iter() {
        let leaves: Vec<&CommandSpec> = if spec.is_container() {
            spec.subcommands.iter().collect()
        } else {
            vec![spec]
        };
        out.extend(leaves.into_iter().filter(|s| {
            policy.denies(s)
                && !s.flags.contains(CommandFlags::NOSCRIPT)
                && !PROXY_SENDS.contains(&s.name.as_str())
        }));
    }
    Ok(out)
}

/// `ACL DRYRUN user <command> [<subcommand>] x…`, padded to the command's arity so Redis
/// checks the permission rather than the argument count.
pub fn dryrun(user: &str, spec: &CommandSpec) -> Vec<Vec<u8>> {
    let mut args: Vec<Vec<u8>> = vec![b"ACL".to_vec(), b"DRYRUN".to_vec(), user.into()];
    let parts: Vec<Vec<u8>> = spec.name.split('|').map(|p| p.into()).collect();
    let want = usize::try_from(spec.arity.unsigned_abs()).unwrap_or(0);
    let pad = want.saturating_sub(parts.len());
    args.extend(parts);
    args.extend(std::iter::repeat(b"x".to_vec()).take(pad));
    args
}

/// The upstream user's name for `config`: `cluster.username`, or [`UPSTREAM_USER`] when that
/// is empty or `default` (restricting Redis's default user would lock out the tools that
/// administer the nodes).
pub fn user_name(config: &Config) -> &str {
    match config.cluster.username.as_str() {
        "" | "default" => UPSTREAM_USER,
        name => name,
    }
}

/// SHA-256 of a password in lower-case hex: Redis ACL's `#<hash>` form, so no file or
/// command line carries the password itself.
pub fn password_hash(password: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, password);
    let mut out = String::with_capacity(64);
    for b in digest.as_ref() {
        let _ = write!(out, "{b:02x}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_policy_denies_each_entry_and_keeps_what_slotway_sends() {
        let r = UpstreamRules::from_config(&Config::default(), &CommandTable::builtin()).unwrap();
        assert_eq!(r.rules[..3], ["~*", "&*", "+@all"]);
        for rule in [
            "-config|set",
            "-cluster|saveconfig",
            "-cluster|setslot",
            "-acl|setuser",
            "-debug",
            "-module",
            "-shutdown",
        ] {
            assert!(r.rules.iter().any(|x| x == rule), "{rule}: {:?}", r.rules);
        }
        for allowed in [
            "-config|get",
            "-cluster|shards",
            "-flushall",
            "-cluster",
            "-acl",
        ] {
            assert!(!r.rules.iter().any(|x| x == allowed), "{allowed}");
        }
        assert!(r.kept.is_empty());
    }

    #[test]
    fn what_slotway_needs_is_kept_even_when_denied() {
        let mut cfg = Config::default();
        cfg.policy.deny = vec!["cluster".into(), "info".into(), "@admin".into()];
        let r = UpstreamRules::from_config(&cfg, &CommandTable::builtin()).unwrap();
        assert!(r.rules.iter().any(|x| x == "-cluster|nodes"));
        assert!(!r
            .rules
            .iter()
            .any(|x| x == "-cluster" || x == "-cluster|shards"));
        assert!(!r.rules.iter().any(|x| x == "-info"));
        assert!(r.rules.iter().any(|x| x == "-config|set"));
        assert_eq!(r.kept, ["cluster|shards", "cluster|slots", "info"]);
    }

    #[test]
    fn allow_config_set_lifts_the_rule() {
        let mut cfg = Config::default();
        cfg.commands.allow_config_set = true;
        let r = UpstreamRules::from_config(&cfg, &CommandTable::builtin()).unwrap();
        assert!(!r.rules.iter().any(|x| x == "-config|set"));
    }

    #[test]
    fn setuser_hashes_the_password() {
        let r = UpstreamRules::derive(&CommandPolicy::default(), &CommandTable::builtin());
        let args = r.setuser_args(&Secret::new("password"));
        assert_eq!(
            args[..3],
            [
                "reset",
                "on",
                "#5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8"
            ]
        );
        assert_eq!(args[3..], ["~*", "&*", "+@all"]);
        assert!(!args.iter().any(|a| a.contains("password")));
    }

    #[test]
    fn script_reachable_skips_noscript_and_what_slotway_sends() {
        let t = CommandTable::builtin();
        let names: Vec<String> = script_reachable(&Config::default(), &t)
            .unwrap()
            .iter()
            .map(|s| s.name.clone())
            .collect();
        assert!(
            names.contains(&"cluster|saveconfig".to_string()),
            "{names:?}"
        );
        assert!(names.contains(&"cluster|setslot".to_string()));
        // CONFIG SET and CLUSTER RESET are noscript: Redis refuses them in scripts anyway.
        assert!(!names.contains(&"config|set".to_string()));
        assert!(!names.contains(&"cluster|reset".to_string()));
        let setslot = t
            .lookup(b"cluster")
            .unwrap()
            .subcommand(b"setslot")
            .unwrap();
        let args = dryrun("slotway", setslot);
        assert_eq!(
            args,
            [
                &b"ACL"[..],
                b"DRYRUN",
                b"slotway",
                b"cluster",
                b"setslot",
                b"x",
                b"x"
            ]
        );
    }

    #[test]
    fn user_name_never_restricts_the_default_user() {
        let mut cfg = Config::default();
        assert_eq!(user_name(&cfg), "slotway");
        cfg.cluster.username = "default".into();
        assert_eq!(user_name(&cfg), "slotway");
        cfg.cluster.username = "proxy".into();
        assert_eq!(user_name(&cfg), "proxy");
    }
}
