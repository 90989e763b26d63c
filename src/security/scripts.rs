//! Scripts and functions under access control.
//!
//! A script runs on the node as the proxy's upstream Redis user: the proxy sees only the
//! `EVAL` and its declared keys, never the `redis.call`s inside, so it cannot hold a user's
//! key globs or command rules there (a declared `app:{secret}` even puts the script in the
//! slot of `secret`). A user whose rules are narrower than "every command, every key" is
//! therefore refused server-side code unless the operator opts in with
//! `auth.users.scripts = "allow"`, knowing its code then has the upstream user's rights.
//! What no client may do even inside a script (the deny list) is the upstream user's job:
//! see [`super::upstream`].

use super::auth::User;
use crate::command::CommandSpec;
use crate::config::ScriptAccess;

/// Commands that run server-side code, or define or remove code other users then run (a
/// `FUNCTION LOAD … REPLACE` would let a restricted user swap the library an unrestricted
/// user calls). `SCRIPT LOAD` defines nothing shared (a script is named by its own SHA1)
/// but is only useful for a later `EVALSHA`, so it is refused with it.
pub const CODE_COMMANDS: &[&str] = &[
    "eval",
    "eval_ro",
    "evalsha",
    "evalsha_ro",
    "fcall",
    "fcall_ro",
    "function|delete",
    "function|flush",
    "function|load",
    "function|restore",
    "script|load",
];

/// The refusal a user without script rights gets.
pub const REFUSED: &str = "NOPERM this user may not run scripts or functions through slotway: \
     its command or key rules cannot be enforced inside them (see auth.users.scripts)";

/// True when `spec` runs or defines server-side code.
pub fn runs_code(spec: &CommandSpec) -> bool {
    CODE_COMMANDS.contains(&spec.name.as_str())
}

/// True when `user` may run scripts; `all_commands` says whether its command rules allow
/// every command of the table.
pub fn allowed(user: &User, all_commands: bool) -> bool {
    match user.scripts {
        ScriptAccess::Auto => all_commands && user.all_keys(),
        ScriptAccess::Deny => false,
        ScriptAccess::Allow => true,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::command::{CommandTable, Request};
    use crate::config::{Config, ScriptAccess, UserConfig};
    use crate::security::{Secret, Security};

    fn user(name: &str, commands: &[&str], keys: &[&str], scripts: ScriptAccess) -> UserConfig {
        UserConfig {
            name: name.into(),
            password: Secret::new("pw"),
            commands: commands.iter().map(|s| s.to_string()).collect(),
            keys: keys.iter().map(|s| s.to_string()).collect(),
            scripts,
            ..UserConfig::default()
        }
    }

    /// The reply to `parts` for a client logged in as `name`; None when it goes on.
    fn reply(sec: &Security, name: &str, parts: &[&str]) -> Option<String> {
        let table = Arc::new(CommandTable::builtin());
        let mut st = sec.client(1);
        let send = |st: &mut _, parts: &[&str]| {
            let raw = bytes::Bytes::from(parts.concat().into_bytes());
            let mut at = 0;
            let args: Vec<_> = parts
                .iter()
                .map(|p| {
                    at += p.len();
                    at - p.len()..at
                })
                .collect();
            let req = Request::new(&table, &raw, &args);
            sec.check(st, &table, &req, &mut Vec::new(), || None)
                .map(|b| String::from_utf8_lossy(&b).into_owned())
        };
        assert_eq!(
            send(&mut st, &["AUTH", name, "pw"]).as_deref(),
            Some("+OK\r\n")
        );
        send(&mut st, parts)
    }

    fn security(users: Vec<UserConfig>) -> Security {
        let mut cfg = Config::default();
        cfg.auth.users = users;
        cfg.validate().unwrap();
        Security::from_config(&cfg).unwrap()
    }

    const RUNNERS: &[&[&str]] = &[
        &["EVAL", "return 1", "0"],
        &["eval_ro", "return 1", "1", "app:1"],
        &["EVALSHA", "e0e1f9fabfc9d4800c877a703b823ac0578ff8db", "0"],
        &[
            "EVALSHA_RO",
            "e0e1f9fabfc9d4800c877a703b823ac0578ff8db",
            "0",
        ],
        &["FCALL", "f", "1", "app:{secret}"],
        &["FCALL_RO", "f", "0"],
        &["SCRIPT", "LOAD", "return 1"],
        &["FUNCTION", "LOAD", "#!lua name=x\n"],
        &["function", "restore", "x"],
        &["FUNCTION", "DELETE", "x"],
        &["FUNCTION", "FLUSH"],
    ];

    #[test]
    fn restricted_users_are_refused_every_kind_of_server_side_code() {
        let sec = security(vec![
            user("app", &["+@all"], &["app:*"], ScriptAccess::Auto),
            user(
                "narrow",
                &["+@all", "-flushall"],
                &["*"],
                ScriptAccess::Auto,
            ),
            user("reader", &["+@read", "+@all"], &["*"], ScriptAccess::Deny),
        ]);
        for name in ["app", "narrow", "reader"] {
            for parts in RUNNERS {
                assert_eq!(
                    reply(&sec, name, parts).as_deref(),
                    Some(format!("-{}\r\n", super::REFUSED).as_str()),
                    "{name} {parts:?}"
                );
            }
            // Ordinary commands and script housekeeping keep their ordinary rules.
            assert_eq!(
                reply(&sec, name, &["SCRIPT", "EXISTS", "x"]),
                None,
                "{name}"
            );
        }
    }

    #[test]
    fn unrestricted_and_opted_in_users_keep_scripts() {
        let sec = security(vec![
            user("admin", &["allcommands"], &["*"], ScriptAccess::Auto),
            user(
                "trusted",
                &["+@read", "+eval"],
                &["app:*"],
                ScriptAccess::Allow,
            ),
        ]);
        for parts in RUNNERS {
            assert_eq!(reply(&sec, "admin", parts), None, "{parts:?}");
        }
        assert_eq!(
            reply(&sec, "trusted", &["EVAL", "return 1", "1", "app:1"]),
            None
        );
        // The opt-in lifts the script refusal only: command and key rules still apply.
        assert!(reply(&sec, "trusted", &["FCALL", "f", "0"])
            .unwrap()
            .contains("'fcall' command"));
        assert!(reply(&sec, "trusted", &["EVAL", "return 1", "1", "secret"])
            .unwrap()
            .contains("keys"));
    }

    #[test]
    fn the_open_proxy_keeps_scripts() {
        let sec = security(Vec::new());
        let table = Arc::new(CommandTable::builtin());
        let mut st = sec.client(1);
        let raw = bytes::Bytes::from_static(b"EVALreturn 10");
        let args = [0..4, 4..12, 12..13];
        let req = Request::new(&table, &raw, &args);
        let reply = sec.check(&mut st, &table, &req, &mut Vec::new(), || None);
        assert_eq!(reply, None);
    }
}
