//! `Security::check` end to end on parsed requests: authentication gating, AUTH/HELLO
//! replies, policy refusals, user rules and key patterns, and recompilation on a new table.

use std::ops::Range;
use std::sync::Arc;

use super::*;
use crate::config::{Config, UserConfig};

fn request(parts: &[&str]) -> (Vec<u8>, Vec<Range<usize>>) {
    let mut raw = Vec::new();
    let mut ranges = Vec::new();
    for p in parts {
        let s = raw.len();
        raw.extend_from_slice(p.as_bytes());
        ranges.push(s..raw.len());
        raw.push(b' ');
    }
    (raw, ranges)
}

struct Fixture {
    sec: Security,
    table: Arc<CommandTable>,
    st: ClientState,
}

impl Fixture {
    fn new(tweak: impl FnOnce(&mut Config)) -> Self {
        let mut cfg = Config::default();
        tweak(&mut cfg);
        cfg.validate().unwrap();
        let sec = Security::from_config(&cfg).unwrap();
        let st = sec.client(42);
        Self {
            sec,
            table: Arc::new(CommandTable::builtin()),
            st,
        }
    }

    /// The reply text when answered here, None when the request goes on.
    fn send(&mut self, parts: &[&str]) -> Option<String> {
        let (raw, ranges) = request(parts);
        let raw = Bytes::from(raw);
        let req = Request::new(&self.table, &raw, &ranges);
        self.sec
            .check(&mut self.st, &self.table, &req, &mut Vec::new(), || None)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
    }
}

fn user(name: &str, password: &str, commands: &[&str], keys: &[&str]) -> UserConfig {
    UserConfig {
        name: name.into(),
        password: Secret::new(password),
        commands: commands.iter().map(|s| s.to_string()).collect(),
        keys: keys.iter().map(|s| s.to_string()).collect(),
        ..UserConfig::default()
    }
}

#[test]
fn open_proxy_passes_commands_and_answers_auth_like_redis() {
    let mut f = Fixture::new(|_| {});
    assert!(!f.sec.auth_required());
    assert!(f.st.authenticated());
    assert_eq!(f.send(&["GET", "k"]), None);
    assert_eq!(f.send(&["NOPE"]), None, "unknown commands are classify's");
    assert_eq!(f.send(&["GET"]), None, "arity errors are classify's");
    assert_eq!(f.send(&["QUIT"]), None);
    assert_eq!(
        f.send(&["AUTH", "x"]).unwrap(),
        format!("-{}\r\n", auth::AUTH_WITHOUT_PASSWORD)
    );
    assert_eq!(f.send(&["AUTH", "default", "x"]).unwrap(), "+OK\r\n");
    assert_eq!(
        f.send(&["AUTH", "who", "x"]).unwrap(),
        format!("-{}\r\n", auth::WRONGPASS)
    );
    assert_eq!(
        f.send(&["AUTH", "a", "b", "c"]).unwrap(),
        "-ERR syntax error\r\n"
    );
}

#[test]
fn requirepass_gates_everything_but_auth_hello_quit() {
    let mut f = Fixture::new(|c| c.auth.password = Secret::new("pw"));
    assert!(!f.st.authenticated());
    assert_eq!(
        f.send(&["GET", "k"]).unwrap(),
        "-NOAUTH Authentication required.\r\n"
    );
    assert_eq!(
        f.send(&["PING"]).unwrap(),
        "-NOAUTH Authentication required.\r\n"
    );
    assert_eq!(f.send(&["QUIT"]), None);
    assert_eq!(
        f.send(&["HELLO", "2"]).unwrap(),
        format!("-{}\r\n", auth::HELLO_NOAUTH)
    );
    assert_eq!(
        f.send(&["AUTH", "nope"]).unwrap(),
        format!("-{}\r\n", auth::WRONGPASS)
    );
    assert!(!f.st.authenticated());
    assert_eq!(f.send(&["AUTH", "pw"]).unwrap(), "+OK\r\n");
    assert_eq!(f.send(&["GET", "k"]), None);
    // A failed AUTH does not log an authenticated client out, as in Redis.
    assert!(f.send(&["AUTH", "bad"]).unwrap().starts_with("-WRONGPASS"));
    assert_eq!(f.send(&["GET", "k"]), None);
}

#[test]
fn hello_authenticates_and_leaves_the_rest_to_the_session() {
    let mut f = Fixture::new(|c| c.auth.password = Secret::new("pw"));
    assert!(f
        .send(&["HELLO", "3"])
        .unwrap()
        .starts_with("-NOAUTH HELLO must be called"));
    assert!(f
        .send(&["HELLO", "2", "AUTH", "default", "bad"])
        .unwrap()
        .starts_with("-WRONGPASS"));
    // Authenticated: the session answers (protocol switch, server description).
    assert_eq!(
        f.send(&["HELLO", "3", "AUTH", "default", "pw", "SETNAME", "me"]),
        None
    );
    assert_eq!(f.st.name(), Some(&b"me"[..]));
    assert_eq!(f.send(&["HELLO"]), None);
    assert_eq!(
        f.send(&["HELLO", "1"]).unwrap(),
        "-NOPROTO unsupported protocol version\r\n"
    );
}

#[test]
fn policy_refuses_with_a_clear_error() {
    let mut f = Fixture::new(|_| {});
    assert_eq!(
        f.send(&["CONFIG", "SET", "maxmemory", "1"]).unwrap(),
        "-ERR command 'config|set' is disabled by slotway's command policy\r\n"
    );
    assert_eq!(
        f.send(&["cluster", "reset"]).unwrap(),
        "-ERR command 'cluster|reset' is disabled by slotway's command policy\r\n"
    );
    assert!(f.send(&["DEBUG", "SLEEP", "0"]).is_some());
    assert!(f.send(&["SHUTDOWN"]).is_some());
    assert_eq!(f.send(&["CONFIG", "GET", "maxmemory"]), None);
    assert_eq!(f.send(&["FLUSHALL"]), None);

    let mut f = Fixture::new(|c| {
        c.policy.deny = vec!["@write".into()];
        c.policy.allow = vec!["set".into()];
    });
    assert!(f.send(&["DEL", "k"]).unwrap().contains("'del' is disabled"));
    assert_eq!(f.send(&["SET", "k", "v"]), None);
    assert_eq!(f.send(&["CONFIG", "SET", "a", "b"]), None);
}

#[test]
fn users_get_their_commands_and_keys_only() {
    let mut f = Fixture::new(|c| {
        c.auth.users = vec![
            user("reader", "r", &["+@read", "-keys"], &["app:*"]),
            user("admin", "a", &["allcommands"], &["*"]),
        ];
    });
    assert!(f.sec.auth_required());
    assert!(f.send(&["AUTH", "r"]).unwrap().starts_with("-WRONGPASS"));
    assert_eq!(f.send(&["AUTH", "reader", "r"]).unwrap(), "+OK\r\n");
    assert_eq!(f.send(&["GET", "app:1"]), None);
    assert_eq!(
        f.send(&["GET", "other"]).unwrap(),
        "-NOPERM this user has no permissions to access one of the keys used as arguments\r\n"
    );
    assert!(f
        .send(&["MGET", "app:1", "secret"])
        .unwrap()
        .starts_with("-NOPERM"));
    assert_eq!(
        f.send(&["SET", "app:1", "v"]).unwrap(),
        "-NOPERM this user has no permissions to run the 'set' command\r\n"
    );
    assert!(f.send(&["KEYS", "*"]).unwrap().contains("'keys'"));
    // Policy applies to every user, ahead of the user's own rules.
    assert_eq!(f.send(&["AUTH", "admin", "a"]).unwrap(), "+OK\r\n");
    assert_eq!(f.send(&["SET", "other", "v"]), None);
    assert!(f
        .send(&["CONFIG", "SET", "a", "b"])
        .unwrap()
        .contains("command policy"));
}

#[test]
fn password_files_and_upstream_resolution() {
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "filepw\n").unwrap();
    let path = pw.to_str().unwrap().to_string();
    let mut f = Fixture::new(|c| c.auth.password_file = path.clone());
    assert_eq!(f.send(&["AUTH", "filepw"]).unwrap(), "+OK\r\n");

    let mut cluster = Config::default().cluster;
    cluster.password_file = path.clone();
    std::fs::write(dir.path().join("user"), "proxy\n").unwrap();
    cluster.username_file = dir.path().join("user").to_str().unwrap().into();
    resolve_upstream(&mut cluster).unwrap();
    assert_eq!(cluster.username, "proxy");
    assert_eq!(cluster.password.expose(), "filepw");
    assert!(cluster.password_file.is_empty());

    let mut cfg = Config::default();
    cfg.auth.password_file = "/nonexistent/slotway-pw".into();
    let err = Security::from_config(&cfg).unwrap_err().to_string();
    assert!(err.contains("/nonexistent/slotway-pw"), "{err}");
}

#[test]
fn rules_are_recompiled_for_a_new_command_table() {
    let mut f = Fixture::new(|_| {});
    assert!(f.send(&["DEBUG", "x"]).is_some());
    // A learned table is a new allocation: the cached sets must follow it.
    f.table = Arc::new(CommandTable::builtin());
    assert!(f.send(&["DEBUG", "x"]).is_some());
    assert_eq!(f.send(&["GET", "k"]), None);
}

#[test]
fn debug_output_hides_every_password() {
    let f = Fixture::new(|c| {
        c.auth.password = Secret::new("top-secret-1");
        c.cluster.password = Secret::new("top-secret-2");
        c.auth.users = vec![];
    });
    let cfg_text = format!("{:?}", f.sec);
    assert!(!cfg_text.contains("top-secret"), "{cfg_text}");
}
