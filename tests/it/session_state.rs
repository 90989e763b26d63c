//! Connection state as Redis keeps it, through a real cluster: RESET returns a connection to
//! its initial (unauthenticated) state; HELLO, INFO, ACL WHOAMI and CLIENT INFO/LIST agree on
//! the server mode and the client's user; proxy-answered commands give Redis's arity errors;
//! and the dedicated-connection budget: blocked clients cannot starve subscribers or
//! transactions, and a subscription that cannot be put in place is an error, never a silent
//! confirmation.

use std::time::{Duration, Instant};

use crate::common::cluster::{direct, wait_until, TestCluster};
use crate::common::proxy::TestProxy;
use crate::common::resp::Raw;
use slotway::config::{Config, UserConfig};
use slotway::security::Secret;

const NOAUTH: &str = "-NOAUTH Authentication required.\r\n";

fn user(name: &str, password: &str, commands: &[&str]) -> UserConfig {
    UserConfig {
        name: name.into(),
        password: Secret::new(password),
        commands: commands.iter().map(|s| s.to_string()).collect(),
        ..UserConfig::default()
    }
}

/// A proxy that needs authentication: routing is probed with `login` (AUTH's arguments).
fn start_authenticated(
    cluster: &TestCluster,
    login: &[&str],
    tweak: impl FnOnce(&mut Config),
) -> TestProxy {
    let proxy = TestProxy::spawn(cluster.seeds(), tweak);
    let mut auth = vec!["AUTH"];
    auth.extend_from_slice(login);
    wait_until(Duration::from_secs(30), "the proxy routes", || {
        let mut c = Raw::connect(proxy.addr());
        c.call(&auth) == "+OK\r\n"
            && (0..16).all(|i| !c.call(&["GET", &format!("__probe{i}")]).starts_with('-'))
    });
    proxy
}

/// Clients on `node` whose current command is `cmd`.
fn running(node: &str, cmd: &str) -> usize {
    let mut con = direct(node);
    let list: String = redis::cmd("CLIENT").arg("LIST").query(&mut con).unwrap();
    list.lines()
        .filter(|l| l.contains(&format!(" cmd={cmd} ")))
        .count()
}

/// Reads frames until one contains `needle` (a message among other pushes), or panics.
fn expect_frame_with(sub: &mut Raw, needle: &str, deadline: Duration) -> String {
    let end = Instant::now() + deadline;
    sub.timeout(Duration::from_millis(250));
    loop {
        if let Some(f) = sub.try_frame() {
            let f = String::from_utf8_lossy(&f).into_owned();
            if f.contains(needle) {
                sub.timeout(Duration::from_secs(10));
                return f;
            }
        }
        assert!(Instant::now() < end, "no frame with {needle:?} arrived");
    }
}

/// Retries `SSUBSCRIBE channel` (refused with slotway's error meanwhile) until it is
/// confirmed, then checks that the first SPUBLISH reaches it.
fn shard_subscribe_once_possible(sub: &mut Raw, publisher: &mut Raw, channel: &str) {
    wait_until(Duration::from_secs(20), "a subscription in place", || {
        let reply = sub.call(&["SSUBSCRIBE", channel]);
        if reply.ends_with(":1\r\n") {
            return true;
        }
        assert!(reply.starts_with("-ERR slotway:"), "{reply}");
        false
    });
    assert_eq!(publisher.call(&["SPUBLISH", channel, "now"]), ":1\r\n");
    expect_frame_with(sub, "now", Duration::from_secs(10));
}

/// RESET undoes AUTH, HELLO 3, SETNAME, MULTI and subscriptions; with named users and with
/// `auth.password`, the next command is refused until the client authenticates again.
#[test]
fn reset_returns_to_the_unauthenticated_initial_state() {
    let cluster = TestCluster::start_with(3, 0);
    let proxy = start_authenticated(&cluster, &["admin", "pw"], |c| {
        c.auth.users = vec![user("admin", "pw", &["+@all"])];
    });
    let mut c = Raw::connect(proxy.addr());
    assert_eq!(c.call(&["AUTH", "admin", "pw"]), "+OK\r\n");
    assert_eq!(c.call(&["SET", "reset:k", "v"]), "+OK\r\n");
    assert_eq!(c.call(&["RESET"]), "+RESET\r\n");
    assert_eq!(c.call(&["GET", "reset:k"]), NOAUTH);
    assert_eq!(c.call(&["ACL", "WHOAMI"]), NOAUTH);
    assert!(
        c.call(&["HELLO", "3"])
            .starts_with("-NOAUTH HELLO must be called with the client already authenticated"),
        "HELLO without AUTH after RESET"
    );
    assert_eq!(c.call(&["AUTH", "admin", "pw"]), "+OK\r\n");
    assert_eq!(c.call(&["GET", "reset:k"]), "$1\r\nv\r\n");

    // HELLO 3 AUTH … SETNAME, MULTI: RESET drops them all and answers in RESP2.
    let hello = c.call(&["HELLO", "3", "AUTH", "admin", "pw", "SETNAME", "app"]);
    assert!(hello.starts_with("%7\r\n"), "{hello}");
    assert_eq!(c.call(&["MULTI"]), "+OK\r\n");
    assert_eq!(c.call(&["SET", "reset:k", "w"]), "+QUEUED\r\n");
    assert_eq!(c.call(&["RESET"]), "+RESET\r\n");
    assert_eq!(c.call(&["AUTH", "admin", "pw"]), "+OK\r\n");
    assert_eq!(c.call(&["CLIENT", "GETNAME"]), "$-1\r\n");
    assert_eq!(c.call(&["EXEC"]), "-ERR EXEC without MULTI\r\n");
    assert_eq!(c.call(&["GET", "reset:k"]), "$1\r\nv\r\n");

    // Subscribed: RESET leaves the subscriptions and de-authenticates too.
    let sub = c.call(&["SUBSCRIBE", "reset:ch"]);
    assert!(
        sub.contains("subscribe") && sub.ends_with(":1\r\n"),
        "{sub}"
    );
    assert_eq!(c.call(&["RESET"]), "+RESET\r\n");
    assert_eq!(c.call(&["PING"]), NOAUTH);
    assert_eq!(c.call(&["AUTH", "admin", "pw"]), "+OK\r\n");
    assert_eq!(c.call(&["PING"]), "+PONG\r\n");
    drop(proxy);

    // The password-only form (`auth.password`).
    let proxy = start_authenticated(&cluster, &["s3cret"], |c| {
        c.auth.password = Secret::new("s3cret");
    });
    let mut c = Raw::connect(proxy.addr());
    assert_eq!(c.call(&["AUTH", "s3cret"]), "+OK\r\n");
    assert_eq!(c.call(&["GET", "reset:k"]), "$1\r\nv\r\n");
    assert_eq!(c.call(&["RESET"]), "+RESET\r\n");
    assert_eq!(c.call(&["GET", "reset:k"]), NOAUTH);
    let hello = c.call(&["HELLO", "2", "AUTH", "default", "s3cret"]);
    assert!(hello.starts_with("*14\r\n"), "{hello}");
    assert_eq!(c.call(&["GET", "reset:k"]), "$1\r\nv\r\n");

    // Without authentication configured, RESET leaves the client able to run commands.
    drop(proxy);
    let proxy = TestProxy::start(cluster.seeds());
    let mut c = Raw::connect(proxy.addr());
    assert_eq!(c.call(&["RESET"]), "+RESET\r\n");
    assert_eq!(c.call(&["GET", "reset:k"]), "$1\r\nv\r\n");
}

/// The mode a HELLO reply reports, from its `mode` entry.
fn hello_mode(reply: &str) -> &str {
    let at = reply.find("$4\r\nmode\r\n").expect("a mode entry") + "$4\r\nmode\r\n".len();
    let rest = &reply[at..];
    rest.split("\r\n").nth(1).expect("a mode value")
}

/// The value of `field` in a CLIENT INFO/LIST line.
fn client_field(reply: &str, field: &str) -> String {
    reply
        .split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{field}=")))
        .unwrap_or_else(|| panic!("no {field}= in {reply}"))
        .to_string()
}

/// `redis_mode` from an INFO reply.
fn info_mode(reply: &str) -> String {
    reply
        .lines()
        .find_map(|l| l.strip_prefix("redis_mode:"))
        .unwrap_or_else(|| panic!("no redis_mode in {reply}"))
        .trim()
        .to_string()
}

/// HELLO, INFO, ACL WHOAMI and CLIENT INFO/LIST tell one story: the mode the proxy presents and
/// the proxy user the client authenticated as (never the proxy's upstream user). ACL commands
/// about users are refused rather than answered by a node about the upstream identity.
#[test]
fn mode_and_user_agree_everywhere() {
    let cluster = TestCluster::start_with(3, 0);
    let proxy = start_authenticated(&cluster, &["admin", "a"], |c| {
        c.auth.users = vec![
            user("admin", "a", &["+@all"]),
            user("reader", "r", &["+@all", "-@write"]),
        ];
    });
    for (name, pw) in [("admin", "a"), ("reader", "r")] {
        let mut c = Raw::connect(proxy.addr());
        let hello = c.call(&["HELLO", "2", "AUTH", name, pw]);
        assert_eq!(hello_mode(&hello), "cluster", "{hello}");
        assert_eq!(info_mode(&c.call(&["INFO", "server"])), "cluster");
        let whoami = c.call(&["ACL", "WHOAMI"]);
        assert_eq!(whoami, format!("${}\r\n{name}\r\n", name.len()));
        assert_eq!(client_field(&c.call(&["CLIENT", "INFO"]), "user"), name);
        assert_eq!(client_field(&c.call(&["CLIENT", "LIST"]), "user"), name);
        // RESP3 too.
        let hello = c.call(&["HELLO", "3"]);
        assert_eq!(hello_mode(&hello), "cluster", "{hello}");
        assert_eq!(
            c.call(&["ACL", "WHOAMI"]),
            format!("${}\r\n{name}\r\n", name.len())
        );
    }
    let mut c = Raw::connect(proxy.addr());
    assert_eq!(c.call(&["AUTH", "admin", "a"]), "+OK\r\n");
    for args in [
        &["ACL", "LIST"][..],
        &["ACL", "USERS"],
        &["ACL", "GETUSER", "default"],
        &["ACL", "LOG"],
        &["ACL", "DRYRUN", "default", "GET", "k"],
        &["ACL", "SETUSER", "x", "on"],
    ] {
        let reply = c.call(args);
        assert!(
            reply.starts_with("-ERR command 'acl|") && reply.contains("command policy"),
            "{args:?}: {reply}"
        );
    }
    // Categories say nothing about any user: answered.
    assert!(c.call(&["ACL", "CAT"]).starts_with('*'));
    drop(proxy);

    // No authentication: the default user, and the mode follows `commands.cluster_emulation`.
    for (emulation, mode) in [(true, "cluster"), (false, "standalone")] {
        let proxy = TestProxy::start_with(cluster.seeds(), |c| {
            c.commands.cluster_emulation = emulation;
        });
        let mut c = Raw::connect(proxy.addr());
        assert_eq!(hello_mode(&c.call(&["HELLO", "2"])), mode);
        assert_eq!(info_mode(&c.call(&["INFO"])), mode);
        assert_eq!(c.call(&["ACL", "WHOAMI"]), "$7\r\ndefault\r\n");
        assert_eq!(
            client_field(&c.call(&["CLIENT", "INFO"]), "user"),
            "default"
        );
    }
}

/// Every command the proxy answers itself refuses a wrong argument count with Redis's text.
#[test]
fn proxy_answered_commands_check_their_arity() {
    let cluster = TestCluster::start_with(3, 0);
    let proxy = TestProxy::start(cluster.seeds());
    let mut c = Raw::connect(proxy.addr());
    let arity = |name: &str| format!("-ERR wrong number of arguments for '{name}' command\r\n");
    for (args, name) in [
        (&["PING", "a", "b"][..], "ping"),
        (&["ECHO"], "echo"),
        (&["ECHO", "a", "b"], "echo"),
        (&["SELECT"], "select"),
        (&["SELECT", "0", "1"], "select"),
        (&["RESET", "x"], "reset"),
        (&["READONLY", "x"], "readonly"),
        (&["ACL", "WHOAMI", "x"], "acl|whoami"),
        (&["CLIENT", "ID", "x"], "client|id"),
    ] {
        assert_eq!(c.call(args), arity(name), "{args:?}");
    }
    assert_eq!(c.call(&["PING", "a"]), "$1\r\na\r\n");
    // HELLO parses its own options, with Redis's syntax error for a missing value.
    for opt in ["AUTH", "SETNAME"] {
        assert_eq!(
            c.call(&["HELLO", "3", opt]),
            format!("-ERR Syntax error in HELLO option '{opt}'\r\n")
        );
    }
    // Inside MULTI the arity error comes at once and the command is not queued.
    assert_eq!(c.call(&["MULTI"]), "+OK\r\n");
    assert_eq!(c.call(&["PING", "a", "b"]), arity("ping"));
    assert_eq!(c.call(&["DISCARD"]), "+OK\r\n");
    // And in subscribed mode (RESP2).
    assert!(c.call(&["SUBSCRIBE", "arity:ch"]).ends_with(":1\r\n"));
    assert_eq!(c.call(&["PING", "a", "b"]), arity("ping"));
    assert_eq!(c.call(&["PING"]), "*2\r\n$4\r\npong\r\n$0\r\n\r\n");
}

/// Clients blocked in `BLPOP {d}x 0` use up the blocking budget of their shard only: other
/// clients still subscribe (a message published after the confirmation arrives) and run
/// transactions on that shard.
#[test]
fn blocked_clients_cannot_starve_subscribers_or_transactions() {
    let cluster = TestCluster::start_with(3, 0);
    let proxy = TestProxy::start_with(cluster.seeds(), |c| {
        c.backend.max_dedicated_per_node = 4;
    });
    let owner = cluster.primary_for_key("{d}x");
    let hogs: Vec<Raw> = (0..4)
        .map(|_| {
            let mut r = Raw::connect(proxy.addr());
            r.send(&["BLPOP", "{d}x", "0"]);
            r
        })
        .collect();
    wait_until(Duration::from_secs(20), "4 clients blocked", || {
        running(&owner, "blpop") == 4
    });
    // The blocking budget is really used up.
    let mut extra = Raw::connect(proxy.addr());
    let refused = extra.call(&["BLPOP", "{d}x", "0"]);
    assert!(
        refused.starts_with("-ERR slotway: no dedicated connection left")
            && refused.contains("max_dedicated_per_node"),
        "{refused}"
    );

    let mut publisher = Raw::connect(proxy.addr());
    let mut shard = Raw::connect(proxy.addr());
    assert_eq!(
        shard.call(&["SSUBSCRIBE", "{d}ch"]),
        "*3\r\n$10\r\nssubscribe\r\n$5\r\n{d}ch\r\n:1\r\n"
    );
    // Confirmed means in place: the very first SPUBLISH reaches the subscriber.
    assert_eq!(publisher.call(&["SPUBLISH", "{d}ch", "m1"]), ":1\r\n");
    expect_frame_with(&mut shard, "m1", Duration::from_secs(10));

    let mut global = Raw::connect(proxy.addr());
    assert_eq!(
        global.call(&["SUBSCRIBE", "{d}global"]),
        "*3\r\n$9\r\nsubscribe\r\n$9\r\n{d}global\r\n:1\r\n"
    );
    let mut pattern = Raw::connect(proxy.addr());
    assert_eq!(
        pattern.call(&["PSUBSCRIBE", "{d}glob*"]),
        "*3\r\n$10\r\npsubscribe\r\n$8\r\n{d}glob*\r\n:1\r\n"
    );
    publisher.call(&["PUBLISH", "{d}global", "m2"]);
    expect_frame_with(&mut global, "m2", Duration::from_secs(10));
    expect_frame_with(&mut pattern, "m2", Duration::from_secs(10));

    // Transactions, with and without WATCH, on the starved shard.
    let mut tx = Raw::connect(proxy.addr());
    assert_eq!(tx.call(&["MULTI"]), "+OK\r\n");
    assert_eq!(tx.call(&["SET", "{d}k", "1"]), "+QUEUED\r\n");
    assert_eq!(tx.call(&["INCR", "{d}k"]), "+QUEUED\r\n");
    assert_eq!(tx.call(&["EXEC"]), "*2\r\n+OK\r\n:2\r\n");
    assert_eq!(tx.call(&["WATCH", "{d}k"]), "+OK\r\n");
    assert_eq!(tx.call(&["MULTI"]), "+OK\r\n");
    assert_eq!(tx.call(&["INCR", "{d}k"]), "+QUEUED\r\n");
    assert_eq!(tx.call(&["EXEC"]), "*1\r\n:3\r\n");
    // The blocked clients are still blocked, and a push releases one of them.
    assert_eq!(running(&owner, "blpop"), 4);
    assert_eq!(publisher.call(&["RPUSH", "{d}x", "v"]), ":1\r\n");
    let mut hogs = hogs;
    let woke = hogs.iter_mut().any(|h| {
        h.timeout(Duration::from_millis(500));
        h.try_frame()
            .is_some_and(|f| f == b"*2\r\n$4\r\n{d}x\r\n$1\r\nv\r\n")
    });
    assert!(woke, "one blocked client got the pushed element");
}

/// A subscribe that cannot get a connection is an error, not a confirmation, and leaves the
/// client unsubscribed; once a connection is free it works.
#[test]
fn a_subscribe_without_a_connection_is_an_error() {
    let cluster = TestCluster::start_with(3, 0);
    let proxy = TestProxy::start_with(cluster.seeds(), |c| {
        c.backend.max_subscriber_per_node = 1;
    });
    let mut publisher = Raw::connect(proxy.addr());
    let mut first = Raw::connect(proxy.addr());
    assert!(first.call(&["SSUBSCRIBE", "{d}a"]).ends_with(":1\r\n"));

    let mut second = Raw::connect(proxy.addr());
    let refused = second.call(&["SSUBSCRIBE", "{d}b"]);
    assert!(
        refused.starts_with("-ERR slotway: SSUBSCRIBE not in place")
            && refused.contains("max_subscriber_per_node"),
        "{refused}"
    );
    // Not in subscribed mode: PING is a plain PONG and ordinary commands run.
    assert_eq!(second.call(&["PING"]), "+PONG\r\n");
    assert_eq!(second.call(&["SET", "{d}plain", "1"]), "+OK\r\n");
    assert_eq!(publisher.call(&["SPUBLISH", "{d}b", "lost"]), ":0\r\n");

    // SUBSCRIBE can use any primary: the two whose budget is free, then an error.
    let mut subscribers = Vec::new();
    for i in 0..2 {
        let mut s = Raw::connect(proxy.addr());
        let ch = format!("free{i}");
        let reply = s.call(&["SUBSCRIBE", &ch]);
        assert!(reply.ends_with(":1\r\n"), "{ch}: {reply}");
        subscribers.push(s);
    }
    let mut late = Raw::connect(proxy.addr());
    let refused = late.call(&["SUBSCRIBE", "late", "later"]);
    assert!(
        refused.starts_with("-ERR slotway: SUBSCRIBE not in place")
            && refused.contains("max_subscriber_per_node"),
        "{refused}"
    );
    assert_eq!(late.call(&["PING"]), "+PONG\r\n");
    for (i, s) in subscribers.iter_mut().enumerate() {
        let ch = format!("free{i}");
        publisher.call(&["PUBLISH", &ch, "hello"]);
        expect_frame_with(s, "hello", Duration::from_secs(10));
    }

    // Once the first subscriber leaves, its connection is free for the refused one.
    drop(first);
    shard_subscribe_once_possible(&mut second, &mut publisher, "{d}b");
}

/// Sends `signal` (`STOP`, `CONT`) to a node process this test's cluster started.
fn signal(pid: u32, signal: &str) {
    let status = std::process::Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success(), "kill -{signal} {pid}");
}

/// A stopped node, continued when dropped (also when the test fails).
struct Stopped(u32);

impl Drop for Stopped {
    fn drop(&mut self) {
        signal(self.0, "CONT");
    }
}

/// A node that does not answer a subscribe (hung, or stopped while it fails over): the client
/// gets an error after the backend command timeout instead of waiting for ever, and can
/// subscribe once the node answers again.
#[test]
fn a_subscribe_to_a_hung_node_is_an_error_not_a_hang() {
    let cluster = TestCluster::start_with(3, 0);
    let proxy = TestProxy::start_with(cluster.seeds(), |c| {
        c.backend.command_timeout_ms = 400;
    });
    let owner = cluster.primary_for_key("{h}ch");
    let index = cluster.node_index(&owner).expect("owner index");
    let pid = cluster.pids()[index];
    let mut sub = Raw::connect(proxy.addr());
    let stopped = Stopped(pid);
    signal(pid, "STOP");
    let started = Instant::now();
    let reply = sub.call(&["SSUBSCRIBE", "{h}ch"]);
    drop(stopped);
    assert!(
        reply.starts_with("-ERR slotway: SSUBSCRIBE not in place")
            && reply.contains("no answer from the node within 400 ms"),
        "{reply}"
    );
    assert!(started.elapsed() < Duration::from_secs(5), "answered late");
    assert_eq!(sub.call(&["PING"]), "+PONG\r\n");

    let mut publisher = Raw::connect(proxy.addr());
    shard_subscribe_once_possible(&mut sub, &mut publisher, "{h}ch");
}
