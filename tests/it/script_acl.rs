//! Scripts and functions under access control (issue 13 item 2), through a real cluster:
//! restricted users are refused server-side code on every path (plain, MULTI, WATCH-pinned,
//! RESP3, EVALSHA after SCRIPT LOAD, FCALL after FUNCTION LOAD), unrestricted and opted-in
//! users keep it, and the deny list holds inside scripts because the proxy logs in as the
//! restricted upstream user that `slotway local` (and `deploy/`) provision.

use std::time::Duration;

use crate::common;
use crate::common::cluster::{wait_until, TestCluster};
use crate::common::proxy::TestProxy;
use crate::common::resp::Raw;
use slotway::config::{Config, ScriptAccess, UserConfig};
use slotway::local::upstream::provision;
use slotway::security::{scripts, Secret};

const LIBRARY: &str = "#!lua name=acltest\n\
    redis.register_function('getk', function(keys, args) return redis.call('GET', args[1]) end)\n\
    redis.register_function{function_name='getk_ro', flags={'no-writes'}, \
    callback=function(keys, args) return redis.call('GET', args[1]) end}";
const READ_SECRET: &str = "return redis.call('GET','secret')";

fn user(name: &str, commands: &[&str], keys: &[&str], scripts: ScriptAccess) -> UserConfig {
    UserConfig {
        name: name.into(),
        password: Secret::new(format!("{name}-pw")),
        commands: commands.iter().map(|s| s.to_string()).collect(),
        keys: keys.iter().map(|s| s.to_string()).collect(),
        scripts,
        ..UserConfig::default()
    }
}

/// A 3-shard cluster whose nodes carry the upstream user `slotway local` provisions for
/// `config`'s policy; `config.cluster` then logs in as it.
fn protected_cluster(config: &mut Config) -> TestCluster {
    let mut opts = slotway::local::LocalClusterOptions::default();
    provision(&mut opts, config).expect("provision the upstream user");
    let users = opts.acl_users;
    TestCluster::start_configured(3, 0, move |o| o.acl_users = users.clone())
}

/// A proxy on `cluster` with `config`'s users, policy and upstream login; waits until its
/// slot map covers every slot (clients must authenticate, so no probe command can).
fn proxy(cluster: &TestCluster, config: &Config) -> TestProxy {
    let (auth, policy, upstream) = (
        config.auth.clone(),
        config.policy.clone(),
        config.cluster.clone(),
    );
    let proxy = TestProxy::spawn(cluster.seeds(), move |c| {
        c.auth = auth;
        c.policy = policy;
        c.cluster.username = upstream.username;
        c.cluster.password = upstream.password;
    });
    wait_until(Duration::from_secs(30), "the proxy's slot map", || {
        proxy.is_ready()
    });
    proxy
}

fn login(proxy: &TestProxy, name: &str) -> Raw {
    let mut c = Raw::connect(proxy.addr());
    let pw = format!("{name}-pw");
    assert_eq!(c.call(&["AUTH", name, &pw]), "+OK\r\n", "{name}");
    c
}

fn refused() -> String {
    format!("-{}\r\n", scripts::REFUSED)
}

/// Every form of server-side code reading `secret`, outside `app:*`.
fn code_reading_secret(sha: &str) -> Vec<Vec<String>> {
    let s = |v: &[&str]| v.iter().map(|a| a.to_string()).collect::<Vec<_>>();
    vec![
        s(&["EVAL", READ_SECRET, "0"]),
        s(&["EVAL_RO", READ_SECRET, "0"]),
        s(&["EVALSHA", sha, "0"]),
        s(&["EVALSHA_RO", sha, "0"]),
        s(&["FCALL", "getk", "0", "secret"]),
        s(&["FCALL_RO", "getk_ro", "0", "secret"]),
        // A declared key in the user's globs that hashes to secret's slot.
        s(&["EVAL", READ_SECRET, "1", "app:{secret}"]),
        s(&["SCRIPT", "LOAD", READ_SECRET]),
        s(&["FUNCTION", "LOAD", "REPLACE", LIBRARY]),
        s(&["FUNCTION", "DELETE", "acltest"]),
    ]
}

/// The `slotway_upstream_acl_gaps` gauge, once the start-up audit has set it.
fn acl_gaps() -> Option<f64> {
    let text = slotway::metrics::install()?.render();
    text.lines()
        .find_map(|l| l.strip_prefix("slotway_upstream_acl_gaps "))
        .and_then(|v| v.trim().parse().ok())
}

fn call(c: &mut Raw, args: &[String]) -> String {
    c.call(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

#[test]
fn scripts_hold_to_the_users_rules_and_the_deny_list() {
    let mut config = Config::default();
    config.policy.deny.push("flushall".into());
    config.auth.users = vec![
        user("app", &["+@all"], &["app:*"], ScriptAccess::Auto),
        user(
            "reader",
            &["+@read", "+eval", "+evalsha", "+fcall", "+script"],
            &["app:*"],
            ScriptAccess::Auto,
        ),
        user("admin", &["allcommands"], &["*"], ScriptAccess::Auto),
        user(
            "trusted",
            &["+@read", "+eval"],
            &["app:*"],
            ScriptAccess::Allow,
        ),
    ];
    let cluster = protected_cluster(&mut config);
    let proxy = proxy(&cluster, &config);

    let mut admin = login(&proxy, "admin");
    assert_eq!(admin.call(&["SET", "secret", "s3"]), "+OK\r\n");
    assert!(admin
        .call(&["FUNCTION", "LOAD", LIBRARY])
        .starts_with("$7\r\nacltest"));
    let sha = admin.call(&["SCRIPT", "LOAD", READ_SECRET]);
    let sha = sha.trim_end().rsplit('\n').next().unwrap().to_string();
    assert_eq!(sha.len(), 40, "{sha}");

    // `app` may not read `secret` directly, and no script reads it for app either.
    let mut app = login(&proxy, "app");
    assert!(app.call(&["GET", "secret"]).starts_with("-NOPERM"));
    for req in code_reading_secret(&sha) {
        assert_eq!(call(&mut app, &req), refused(), "app {req:?}");
    }
    // Queued in a transaction, or on a connection pinned by WATCH.
    assert_eq!(app.call(&["MULTI"]), "+OK\r\n");
    assert_eq!(app.call(&["EVAL", READ_SECRET, "0"]), refused());
    assert!(!app.call(&["EXEC"]).contains("s3"));
    assert_eq!(app.call(&["WATCH", "app:w"]), "+OK\r\n");
    assert_eq!(app.call(&["EVALSHA", &sha, "0"]), refused());
    assert_eq!(app.call(&["UNWATCH"]), "+OK\r\n");
    // RESP3 clients take another (pinned) path for scripts.
    let mut app3 = Raw::connect(proxy.addr());
    assert!(app3
        .call(&["HELLO", "3", "AUTH", "app", "app-pw"])
        .starts_with('%'));
    assert_eq!(app3.call(&["EVAL", READ_SECRET, "0"]), refused());
    assert_eq!(
        app3.call(&["FCALL_RO", "getk_ro", "0", "secret"]),
        refused()
    );

    // `reader` cannot write through a script, nor delete `secret` through a declared key
    // in its globs that lands in secret's slot.
    let mut reader = login(&proxy, "reader");
    let set = "return redis.call('SET',KEYS[1],'x')";
    assert_eq!(reader.call(&["EVAL", set, "1", "app:1"]), refused());
    let del = "return redis.call('DEL','secret')";
    assert_eq!(reader.call(&["EVAL", del, "1", "app:{secret}"]), refused());
    assert_eq!(reader.call(&["FCALL", "getk", "0", "secret"]), refused());
    assert_eq!(admin.call(&["GET", "secret"]), "$2\r\ns3\r\n");
    assert_eq!(admin.call(&["EXISTS", "app:1"]), ":0\r\n");

    // The unrestricted user keeps scripts and functions; the opted-in one runs with the
    // upstream user's rights (documented), but still only its own command and key rules
    // decide what the proxy forwards.
    assert_eq!(
        admin.call(&["EVAL", READ_SECRET, "1", "secret"]),
        "$2\r\ns3\r\n"
    );
    assert_eq!(
        admin.call(&["EVALSHA_RO", &sha, "1", "secret"]),
        "$2\r\ns3\r\n"
    );
    assert_eq!(
        admin.call(&["FCALL_RO", "getk_ro", "1", "secret", "secret"]),
        "$2\r\ns3\r\n"
    );
    let mut trusted = login(&proxy, "trusted");
    assert_eq!(
        trusted.call(&["EVAL", READ_SECRET, "1", "app:{secret}"]),
        "$2\r\ns3\r\n"
    );
    assert!(trusted
        .call(&["EVAL", READ_SECRET, "1", "secret"])
        .starts_with("-NOPERM"));

    // The deny list inside scripts: even the unrestricted user's script is refused by the
    // upstream ACL user (CONFIG SET and friends are refused by Redis itself: noscript).
    // ACL WHOAMI names the client's proxy user; the node shows slotway's own login.
    assert_eq!(admin.call(&["ACL", "WHOAMI"]), "$5\r\nadmin\r\n");
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query(&mut common::cluster::direct(
            &cluster.primary_for_key("secret"),
        ))
        .unwrap();
    assert!(list.contains(" user=slotway "), "{list}");
    for body in [
        "return redis.call('FLUSHALL')",
        "return redis.call('CLUSTER','SAVECONFIG')",
        "return redis.call('CLUSTER','BUMPEPOCH')",
        "return redis.call('CLUSTER','SETSLOT','1','STABLE')",
    ] {
        let reply = admin.call(&["EVAL", body, "1", "secret"]);
        assert!(
            reply.starts_with("-ERR The user executing the script can't run this command"),
            "{body}: {reply}"
        );
    }
    for body in [
        "return redis.call('CONFIG','SET','maxmemory','1')",
        "return redis.call('DEBUG','SLEEP','0')",
    ] {
        let reply = admin.call(&["EVAL", body, "1", "secret"]);
        assert!(reply.starts_with("-ERR"), "{body}: {reply}");
    }
    assert_eq!(admin.call(&["GET", "secret"]), "$2\r\ns3\r\n");
    // What slotway sends itself still works as that user: fan-outs, topology, scripts.
    assert!(admin.call(&["DBSIZE"]).starts_with(':'));
    assert!(admin.call(&["INFO", "server"]).starts_with('$'));
    // The start-up audit (ACL DRYRUN) finds nothing denied that scripts could run.
    wait_until(Duration::from_secs(30), "the upstream user audit", || {
        acl_gaps() == Some(0.0)
    });
}

#[test]
fn an_unrestricted_upstream_user_is_reported_at_start() {
    // The harness's cluster, logged in as the default user: the audit counts every denied
    // command a script could still run (CLUSTER SAVECONFIG, SETSLOT ...).
    let cluster = TestCluster::start_with(3, 0);
    let _proxy = TestProxy::start(cluster.seeds());
    wait_until(Duration::from_secs(30), "the upstream user audit", || {
        acl_gaps().is_some_and(|n| n >= 10.0)
    });
}

#[test]
fn without_users_scripts_are_unchanged() {
    let mut config = Config::default();
    let cluster = protected_cluster(&mut config);
    let proxy = proxy(&cluster, &config);
    let mut c = Raw::connect(proxy.addr());
    assert_eq!(c.call(&["SET", "secret", "s3"]), "+OK\r\n");
    assert_eq!(
        c.call(&["EVAL", READ_SECRET, "1", "secret"]),
        "$2\r\ns3\r\n"
    );
    assert!(c
        .call(&["FUNCTION", "LOAD", LIBRARY])
        .starts_with("$7\r\nacltest"));
    assert_eq!(
        c.call(&["FCALL", "getk", "1", "secret", "secret"]),
        "$2\r\ns3\r\n"
    );
}
