//! Issue 13, items 1 and 3: a reply is data, never an instruction. A script's or function's
//! error text that looks like a redirect or a transient cluster error is never followed or
//! retried (no connection, no credentials, no pool for an outsider; a script that ran is
//! never run again), while Redis's own redirects still are — through a real cluster with an
//! upstream ACL user, and a fake listener standing for the outside address.

use std::io::ErrorKind;
use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use crate::common;
use crate::common::cluster::TestCluster;
use crate::common::load::tag_for_slot;
use crate::common::proxy::TestProxy;
use crate::common::resp::Raw;
use slotway::security::Secret;

/// Creates on the node at `addr` the ACL user the proxy authenticates as.
fn grant_upstream_user(addr: &str) {
    let mut node = common::cluster::direct(addr);
    redis::cmd("ACL")
        .arg(&[
            "SETUSER",
            "slotway",
            "on",
            ">upstream-pw",
            "+@all",
            "~*",
            "&*",
        ])
        .query::<()>(&mut node)
        .unwrap();
}

/// A cluster whose nodes know the ACL user the proxy authenticates as, and a proxy using it.
fn cluster_and_proxy(tweak: impl FnOnce(&mut slotway::config::Config)) -> (TestCluster, TestProxy) {
    let cluster = TestCluster::start_with(3, 0);
    for addr in cluster.seeds() {
        grant_upstream_user(&addr);
    }
    let proxy = TestProxy::start_with(cluster.seeds(), |c| {
        c.cluster.username = "slotway".into();
        c.cluster.password = Secret::new("upstream-pw".to_string());
        tweak(c);
    });
    (cluster, proxy)
}

/// A listener that stands for an address outside the cluster; it is never served.
struct Outsider {
    listener: TcpListener,
}

impl Outsider {
    fn new() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        Self { listener }
    }

    fn port(&self) -> u16 {
        self.listener.local_addr().unwrap().port()
    }

    /// Fails if anything ever connected (a closed connection stays in the accept queue).
    fn assert_never_connected(&self, proxy: &TestProxy) {
        match self.listener.accept() {
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Ok((_, peer)) => panic!("slotway connected to the outside listener from {peer}"),
            Err(e) => panic!("accept: {e}"),
        }
        let outside = SocketAddr::from(([127, 0, 0, 1], self.port()));
        let pools = proxy.shared().router.pool_addrs();
        assert!(
            !pools.contains(&outside),
            "a pool for an outsider: {pools:?}"
        );
        let text = slotway::metrics::install()
            .expect("metrics recorder")
            .render();
        // Members' series are labelled this way, so the outsider's absence means something.
        let labelled = |a: &SocketAddr| text.contains(&format!("node=\"{a}\""));
        assert!(pools.iter().any(labelled), "{text}");
        assert!(!labelled(&outside), "a metric series for an outsider");
    }
}

/// `SCRIPT LOAD` through the proxy (which remembers the body); returns the SHA-1.
fn script_load(raw: &mut Raw, body: &str) -> String {
    let reply = raw.call(&["SCRIPT", "LOAD", body]);
    reply.split("\r\n").nth(1).unwrap_or_default().to_string()
}

fn script_error(text: &str) -> String {
    format!("return redis.error_reply('{text}')")
}

fn incr_then_error(text: &str) -> String {
    format!("redis.call('INCR', KEYS[1]); return redis.error_reply('{text}')")
}

/// A key hashing to `slot`.
fn key_in(slot: u16, name: &str) -> String {
    format!("{{{}}}{name}", tag_for_slot(slot))
}

fn counter(cluster: &TestCluster, key: &str) -> i64 {
    let owner = cluster.primary_for_key(key);
    let mut node = common::cluster::direct(&owner);
    redis::cmd("GET")
        .arg(key)
        .query::<Option<i64>>(&mut node)
        .unwrap()
        .unwrap_or(0)
}

#[test]
fn script_redirects_to_an_outsider_are_data() {
    let (cluster, proxy) = cluster_and_proxy(|_| {});
    let outsider = Outsider::new();
    let port = outsider.port();
    let slot = 77;
    let key = key_in(slot, "out");
    let mut raw = Raw::connect(proxy.addr());
    raw.call(&["FUNCTION", "LOAD", "REPLACE", FUNCTIONS]);
    for code in ["MOVED", "ASK"] {
        for host in ["127.0.0.1", "localhost"] {
            let text = format!("{code} {slot} {host}:{port}");
            let body = script_error(&text);
            let want = format!("-{text}\r\n");
            for cmd in ["EVAL", "EVAL_RO"] {
                // Keyed (the redirect names the key's own slot) and keyless.
                let got = raw.call(&[cmd, &body, "1", &key]);
                assert_eq!(got, want, "{cmd} keyed");
                let keyless = format!("{code} 0 {host}:{port}");
                let got = raw.call(&[cmd, &script_error(&keyless), "0"]);
                assert_eq!(got, format!("-{keyless}\r\n"), "{cmd} keyless");
            }
            let sha = script_load(&mut raw, &body);
            assert_eq!(raw.call(&["EVALSHA", &sha, "1", &key]), want, "EVALSHA");
            assert_eq!(raw.call(&["EVALSHA_RO", &sha, "1", &key]), want);
            assert_eq!(raw.call(&["FCALL", "say", "1", &key, &text]), want);
            assert_eq!(raw.call(&["FCALL_RO", "say_ro", "1", &key, &text]), want);
        }
    }
    outsider.assert_never_connected(&proxy);
    drop(cluster);
}

#[test]
fn resp3_script_redirects_to_an_outsider_are_data() {
    let (_cluster, proxy) = cluster_and_proxy(|_| {});
    let outsider = Outsider::new();
    let port = outsider.port();
    let slot = 1234;
    let key = key_in(slot, "out3");
    let mut raw = Raw::connect(proxy.addr());
    assert_eq!(
        raw.call(&["FUNCTION", "LOAD", "REPLACE", FUNCTIONS]),
        "$8\r\ntrustlib\r\n"
    );
    assert!(raw.call(&["HELLO", "3"]).starts_with('%'));
    for code in ["MOVED", "ASK"] {
        for host in ["127.0.0.1", "localhost"] {
            let text = format!("{code} {slot} {host}:{port}");
            let want = format!("-{text}\r\n");
            let body = script_error(&text);
            assert_eq!(raw.call(&["EVAL", &body, "1", &key]), want, "EVAL");
            assert_eq!(raw.call(&["EVAL_RO", &body, "1", &key]), want, "EVAL_RO");
            let sha = script_load(&mut raw, &body);
            assert_eq!(raw.call(&["EVALSHA", &sha, "1", &key]), want, "EVALSHA");
            assert_eq!(raw.call(&["FCALL", "say", "1", &key, &text]), want, "FCALL");
            assert_eq!(raw.call(&["FCALL_RO", "say_ro", "1", &key, &text]), want);
            let keyless = format!("{code} 0 {host}:{port}");
            let got = raw.call(&["EVAL", &script_error(&keyless), "0"]);
            assert_eq!(got, format!("-{keyless}\r\n"), "keyless");
        }
    }
    outsider.assert_never_connected(&proxy);
}

/// Error texts a script returns after a write; every one must reach the client as is, the
/// write applied exactly once.
fn transient_texts(cluster: &TestCluster, slot: u16) -> Vec<String> {
    let owner = cluster.primary_for_slot(slot);
    let other = cluster.seeds().into_iter().find(|a| *a != owner).unwrap();
    vec![
        "TRYAGAIN Multiple keys request during rehashing of slot".into(),
        "CLUSTERDOWN The cluster is down".into(),
        "LOADING Redis is loading the dataset in memory".into(),
        "MASTERDOWN Link with MASTER is down".into(),
        "READONLY You cannot write against a read only replica.".into(),
        format!("MOVED {slot} {owner}"),
        format!("ASK {slot} {other}"),
        "NOSCRIPT No matching script. Please use EVAL.".into(),
    ]
}

const FUNCTIONS: &str = "#!lua name=trustlib\n\
    redis.register_function('bump', function(keys, args) \
        redis.call('INCR', keys[1]); return redis.error_reply(args[1]) end)\n\
    redis.register_function{function_name='say', callback=function(keys, args) \
        return redis.error_reply(args[1]) end}\n\
    redis.register_function{function_name='say_ro', callback=function(keys, args) \
        return redis.error_reply(args[1]) end, flags={'no-writes'}}";

#[test]
fn a_script_that_ran_is_never_run_again() {
    let (cluster, proxy) = cluster_and_proxy(|_| {});
    let slot = 4321;
    let texts = transient_texts(&cluster, slot);
    let mut raw = Raw::connect(proxy.addr());
    assert_eq!(
        raw.call(&["FUNCTION", "LOAD", "REPLACE", FUNCTIONS]),
        "$8\r\ntrustlib\r\n"
    );
    for (i, text) in texts.iter().enumerate() {
        let want = format!("-{text}\r\n");
        let body = incr_then_error(text);
        let key = key_in(slot, &format!("eval{i}"));
        assert_eq!(raw.call(&["EVAL", &body, "1", &key]), want, "EVAL");
        assert_eq!(counter(&cluster, &key), 1, "EVAL {text}");

        // EVALSHA of a script the proxy knows the body of (so a NOSCRIPT could reload it).
        let key = key_in(slot, &format!("sha{i}"));
        let sha = script_load(&mut raw, &body);
        assert_eq!(raw.call(&["EVALSHA", &sha, "1", &key]), want, "EVALSHA");
        assert_eq!(counter(&cluster, &key), 1, "EVALSHA {text}");

        let key = key_in(slot, &format!("fcall{i}"));
        assert_eq!(raw.call(&["FCALL", "bump", "1", &key, text]), want, "FCALL");
        assert_eq!(counter(&cluster, &key), 1, "FCALL {text}");
    }
}

#[test]
fn a_resp3_script_that_ran_is_never_run_again() {
    let (cluster, proxy) = cluster_and_proxy(|_| {});
    let slot = 999;
    let mut raw = Raw::connect(proxy.addr());
    assert!(raw.call(&["HELLO", "3"]).starts_with('%'));
    for (i, text) in transient_texts(&cluster, slot).iter().enumerate() {
        let key = key_in(slot, &format!("r3-{i}"));
        let body = incr_then_error(text);
        assert_eq!(
            raw.call(&["EVAL", &body, "1", &key]),
            format!("-{text}\r\n")
        );
        assert_eq!(counter(&cluster, &key), 1, "RESP3 EVAL {text}");
        let key = key_in(slot, &format!("r3sha-{i}"));
        let sha = script_load(&mut raw, &body);
        assert_eq!(
            raw.call(&["EVALSHA", &sha, "1", &key]),
            format!("-{text}\r\n")
        );
        assert_eq!(counter(&cluster, &key), 1, "RESP3 EVALSHA {text}");
    }
}

#[test]
fn a_keyed_script_follows_a_real_ask_and_runs_once() {
    let (cluster, proxy) = cluster_and_proxy(|_| {});
    let slot = 6000;
    let from = cluster.primary_index_for_slot(slot);
    let to = (0..cluster.len()).find(|&i| i != from).unwrap();
    cluster.begin_slot_migration(slot, from, to);
    let body = "return redis.call('INCR', KEYS[1])";
    for (proto, name) in [("2", "asked2"), ("3", "asked3")] {
        let mut raw = Raw::connect(proxy.addr());
        raw.call(&["HELLO", proto]);
        let key = key_in(slot, name);
        let before = proxy.ask_redirects();
        // Not on the migrating source: Redis answers -ASK before running anything.
        assert_eq!(
            raw.call(&["EVAL", body, "1", &key]),
            ":1\r\n",
            "RESP{proto}"
        );
        assert!(
            proxy.ask_redirects() > before,
            "RESP{proto}: no -ASK followed"
        );
        assert!(
            cluster.importing_node_has(to, &key),
            "RESP{proto}: not on the target"
        );
        let mut node = cluster.client(to);
        node.call_ok(&["ASKING"]).unwrap();
        let got = node.call(&["GET", &key]).unwrap();
        assert_eq!(
            got.as_text().as_deref(),
            Some("1"),
            "RESP{proto}: ran more than once"
        );
    }
}

#[test]
fn a_spent_redirect_budget_names_no_node() {
    let (cluster, proxy) = cluster_and_proxy(|c| c.cluster.max_redirects = 3);
    let slot = 7777;
    let from = cluster.primary_index_for_slot(slot);
    let to = (0..cluster.len()).find(|&i| i != from).unwrap();
    // The source says ASK, the target (not importing) says MOVED back: genuine redirects
    // that never end.
    let to_id = cluster.node_id(to);
    cluster
        .client(from)
        .call_ok(&["CLUSTER", "SETSLOT", &slot.to_string(), "MIGRATING", &to_id])
        .unwrap();
    let key = key_in(slot, "loop");
    let want = format!("-TRYAGAIN slotway: slot {slot} is moving; too many redirects\r\n");
    let mut raw = Raw::connect(proxy.addr());
    assert_eq!(raw.call(&["GET", &key]), want);
    let body = "return redis.call('INCR', KEYS[1])";
    assert_eq!(raw.call(&["EVAL", body, "1", &key]), want);
    for node in [from, to] {
        let keys = cluster
            .client(node)
            .call(&["CLUSTER", "COUNTKEYSINSLOT", &slot.to_string()])
            .unwrap();
        assert_eq!(keys.as_int(), Some(0), "the script ran on node {node}");
    }
    let mut raw3 = Raw::connect(proxy.addr());
    raw3.call(&["HELLO", "3"]);
    assert_eq!(raw3.call(&["EVAL", body, "1", &key]), want);
    // Let the migration end so nothing else depends on it.
    cluster
        .client(from)
        .call_ok(&["CLUSTER", "SETSLOT", &slot.to_string(), "STABLE"])
        .unwrap();
    // Genuine traffic still works once the slot is stable.
    assert_eq!(raw.call(&["SET", &key, "v"]), "+OK\r\n");
}

#[test]
fn a_real_noscript_still_reloads_and_runs_once() {
    let (cluster, proxy) = cluster_and_proxy(|_| {});
    let slot = 3210;
    let body = "return redis.call('INCR', KEYS[1])";
    for (proto, name) in [("2", "ns2"), ("3", "ns3")] {
        let mut raw = Raw::connect(proxy.addr());
        raw.call(&["HELLO", proto]);
        let sha = script_load(&mut raw, body);
        // The key's owner forgets its scripts, as a promoted replica would.
        let owner = cluster.primary_for_slot(slot);
        let mut node = common::cluster::direct(&owner);
        redis::cmd("SCRIPT")
            .arg("FLUSH")
            .query::<()>(&mut node)
            .unwrap();
        let key = key_in(slot, name);
        assert_eq!(
            raw.call(&["EVALSHA", &sha, "1", &key]),
            ":1\r\n",
            "RESP{proto}"
        );
        assert_eq!(counter(&cluster, &key), 1, "RESP{proto}");
    }
}

#[test]
fn a_real_moved_to_a_node_the_proxy_does_not_know_yet_is_confirmed_then_followed() {
    // No periodic refresh: only the redirect itself can teach the proxy the new node.
    let (mut cluster, proxy) = cluster_and_proxy(|c| c.cluster.refresh_interval_ms = 3_600_000);
    let new = cluster.add_node();
    let new_addr: SocketAddr = cluster.node_addr(new).parse().unwrap();
    grant_upstream_user(&new_addr.to_string());
    let slot = 2222;
    let from = cluster.primary_index_for_slot(slot);
    let key = key_in(slot, "moved");
    cluster.migrate_slots(&[slot], from, new, Duration::ZERO);
    cluster.wait_slots_owned(&[slot], new, Duration::from_secs(30));
    assert!(
        !proxy.shared().router.is_member(new_addr),
        "the proxy already knew the new node; the test proves nothing"
    );
    let mut raw = Raw::connect(proxy.addr());
    let body = "return redis.call('INCR', KEYS[1])";
    // The old owner answers -MOVED (queuing the script): a refresh confirms the node, the
    // script runs there, once.
    assert_eq!(raw.call(&["EVAL", body, "1", &key]), ":1\r\n");
    assert_eq!(counter(&cluster, &key), 1);
    assert!(proxy.shared().router.is_member(new_addr));
    assert_eq!(raw.call(&["GET", &key]), "$1\r\n1\r\n");
}
