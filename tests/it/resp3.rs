//! RESP3 through the proxy: HELLO, replies converted to the protocol the client chose
//! (checked byte for byte against a node's own RESP3 replies), RESP3 pushes for Pub/Sub,
//! RESET, and a redis-py session with `protocol=2` and `protocol=3`.

use std::process::Command;
use std::time::Duration;

use crate::common::cluster::TestCluster;
use crate::common::proxy::TestProxy;
use crate::common::resp::Raw;

/// The venv that `tests/install-deps.sh` sets up.
const PYTHON: &str = "/var/tmp/slotway-py/bin/python";

/// Commands run with `$` replaced by a per-side key prefix; setup first, then compared.
const SETUP: &[&str] = &[
    "HSET $h a 1 b 2",
    "HSET $h1 only v",
    "ZADD $z 1 a 2.5 b 3 c 4 d 5 e 6 f",
    "ZADD $z1 7 only",
    "SADD $s a",
    "SADD $s1 one",
    "RPUSH $l x y",
    "XADD $x 1-1 f v",
    "XADD $x 2-1 g w",
    "XGROUP CREATE $x g 0",
    "GEOADD $geo 13.361389 38.115556 Palermo 15.087269 37.502669 Catania",
    "SET $str ohmytext",
    "SET $str2 mynewtext",
];

const COMPARED: &[&str] = &[
    "GET $missing",
    "MGET $str $missing",
    "HGETALL $h",
    "HGETALL $missing",
    "HRANDFIELD $h1 1 WITHVALUES",
    "HRANDFIELD $h1 1",
    "ZSCORE $z b",
    "ZSCORE $z nope",
    "ZMSCORE $z a nope b",
    "ZINCRBY $z 0.5 a",
    "ZADD $z INCR 1 b",
    "ZADD $z 9 g",
    "ZRANGE $z 0 -1 WITHSCORES",
    "ZRANGE $z 0 1",
    "ZRANGEBYSCORE $z 0 3 WITHSCORES",
    "ZREVRANGE $z 0 1 WITHSCORES",
    "ZREVRANGEBYSCORE $z 10 4 WITHSCORES",
    "ZPOPMIN $z",
    "ZPOPMAX $z 2",
    "BZPOPMIN $z 1",
    "BZPOPMAX $z 1",
    "ZMPOP 1 $z MIN COUNT 1",
    "BZMPOP 1 1 $z MAX",
    "ZRANDMEMBER $z1 1 WITHSCORES",
    "ZUNION 1 $z WITHSCORES",
    "ZRANGE $missing 0 -1 WITHSCORES",
    "SMEMBERS $s",
    "SPOP $s1 1",
    "SINTER $s",
    "SUNION $s",
    "SDIFF $s",
    "SMISMEMBER $s a b",
    "LPOP $missing 2",
    "BLPOP $missing 0.01",
    "LRANGE $l 0 -1",
    "XREAD STREAMS $x 0",
    "XREAD COUNT 1 STREAMS $x 0",
    "XREAD STREAMS $missing 0",
    "XINFO GROUPS $x",
    "XINFO STREAM $x",
    "XREADGROUP GROUP g c COUNT 1 STREAMS $x >",
    "XPENDING $x g",
    "GEOPOS $geo Palermo nope",
    "GEOSEARCH $geo FROMLONLAT 15 37 BYRADIUS 200 km WITHDIST WITHCOORD ASC",
    "GEOSEARCH $geo FROMLONLAT 15 37 BYRADIUS 200 km ASC",
    "GEODIST $geo Palermo Catania",
    "LCS $str $str2 IDX",
    "LCS $str $str2",
    "TYPE $str",
    "INCRBYFLOAT $f 1.5",
    "GETDEL $missing",
    "SORT $l ALPHA",
    "HSCAN $h 0",
    "COMMAND INFO get sort xadd",
    "COMMAND DOCS set georadius",
    "COMMAND GETKEYSANDFLAGS set a b",
    "ACL GETUSER default",
];

fn words(template: &str, prefix: &str) -> Vec<String> {
    template
        .split(' ')
        .map(|w| w.replace('$', prefix))
        .collect()
}

fn call(raw: &mut Raw, template: &str, prefix: &str) -> String {
    let w = words(template, prefix);
    let args: Vec<&str> = w.iter().map(String::as_str).collect();
    raw.call(&args)
}

#[test]
fn resp3_replies_match_a_node() {
    let cluster = TestCluster::start();
    // ACL GETUSER is refused by the default policy (a node would describe the proxy's
    // upstream identity); allowed here to compare its RESP3 shape with a node's.
    let proxy = TestProxy::start_with(cluster.seeds(), |c| {
        c.policy.allow = vec!["acl|getuser".into()];
    });
    // Same-length prefixes in one slot, so replies differ only by the prefix.
    let (node_prefix, proxy_prefix) = ("{r3}N:", "{r3}P:");
    let mut node = Raw::connect_str(&cluster.primary_for_key("{r3}"));
    let mut prox = Raw::connect(proxy.addr());

    let hello = prox.call(&["HELLO", "3"]);
    assert!(
        hello.starts_with("%7\r\n$6\r\nserver\r\n$5\r\nredis\r\n"),
        "{hello}"
    );
    assert!(hello.contains("$5\r\nproto\r\n:3\r\n"), "{hello}");
    assert!(node.call(&["HELLO", "3"]).starts_with("%7\r\n"));

    for cmd in SETUP {
        let a = call(&mut node, cmd, node_prefix);
        let b = call(&mut prox, cmd, proxy_prefix);
        assert_eq!(a, b, "setup {cmd}");
    }
    let mut failures = Vec::new();
    for cmd in COMPARED {
        let want = call(&mut node, cmd, node_prefix);
        let got = call(&mut prox, cmd, proxy_prefix).replace(proxy_prefix, node_prefix);
        if want != got {
            failures.push(format!("{cmd}\n  node:  {want:?}\n  proxy: {got:?}"));
        }
    }
    // A transaction's replies come back in RESP3 too.
    for side in [(&mut node, node_prefix), (&mut prox, proxy_prefix)] {
        let (raw, prefix) = side;
        assert_eq!(raw.call(&["MULTI"]), "+OK\r\n");
        for cmd in ["HGETALL $h", "ZSCORE $z1 only", "GET $missing"] {
            assert_eq!(call(raw, cmd, prefix), "+QUEUED\r\n");
        }
    }
    let want = node.call(&["EXEC"]);
    let got = prox.call(&["EXEC"]);
    if want != got {
        failures.push(format!("EXEC\n  node:  {want:?}\n  proxy: {got:?}"));
    }
    assert!(
        failures.is_empty(),
        "RESP3 differences:\n{}",
        failures.join("\n")
    );

    // Back to RESP2 with HELLO 2 and with RESET.
    assert!(prox.call(&["HELLO", "2"]).starts_with("*14\r\n"));
    assert_eq!(prox.call(&["GET", "{r3}missing"]), "$-1\r\n");
    assert!(prox.call(&["HELLO", "3"]).starts_with("%7"));
    assert_eq!(prox.call(&["GET", "{r3}missing"]), "_\r\n");
    assert_eq!(prox.call(&["RESET"]), "+RESET\r\n");
    assert_eq!(prox.call(&["GET", "{r3}missing"]), "$-1\r\n");
}

#[test]
fn hello_client_and_pushes() {
    let cluster = TestCluster::start();
    let proxy = TestProxy::start(cluster.seeds());
    let mut c = Raw::connect(proxy.addr());
    assert_eq!(
        c.call(&["HELLO", "4"]),
        "-NOPROTO unsupported protocol version\r\n"
    );
    assert_eq!(
        c.call(&["HELLO", "x"]),
        "-ERR Protocol version is not an integer or out of range\r\n"
    );
    assert_eq!(
        c.call(&["HELLO", "3", "BOGUS"]),
        "-ERR Syntax error in HELLO option 'BOGUS'\r\n"
    );
    assert_eq!(
        c.call(&["HELLO", "3", "AUTH", "nobody", "pw"]),
        "-WRONGPASS invalid username-password pair or user is disabled.\r\n"
    );
    let hello = c.call(&["HELLO", "3", "AUTH", "default", "pw", "SETNAME", "app-1"]);
    assert!(hello.starts_with("%7"), "{hello}");
    assert_eq!(c.call(&["CLIENT", "GETNAME"]), "$5\r\napp-1\r\n");
    let id = c.call(&["CLIENT", "ID"]);
    assert!(id.starts_with(':'), "{id}");
    let info = c.call(&["CLIENT", "INFO"]);
    assert!(info.starts_with('='), "verbatim in RESP3: {info}");
    assert!(info.contains(&format!("id={} ", id.trim().trim_start_matches(':'))));
    assert!(
        info.contains("name=app-1 ") && info.contains("resp=3"),
        "{info}"
    );
    assert_eq!(c.call(&["CLIENT", "NO-EVICT", "on"]), "+OK\r\n");
    assert!(c.call(&["CLIENT", "LIST"]).contains("flags=e "));
    assert_eq!(
        c.call(&["CLIENT", "SETNAME", "has space"]),
        "-ERR Client names cannot contain spaces, newlines or special characters.\r\n"
    );
    assert!(c
        .call(&["CLIENT", "TRACKING", "on"])
        .starts_with("-ERR slotway: CLIENT TRACKING cannot be honoured"));
    assert!(c
        .call(&["CLIENT", "KILL", "ID", "1"])
        .starts_with("-ERR slotway: CLIENT KILL"));
    assert_eq!(
        c.call(&["CLIENT", "NOPE"]),
        "-ERR unknown subcommand 'NOPE'. Try CLIENT HELP.\r\n"
    );

    // Pub/Sub in RESP3: pushes, and other commands still allowed while subscribed.
    assert_eq!(
        c.call(&["SUBSCRIBE", "r3chan"]),
        ">3\r\n$9\r\nsubscribe\r\n$6\r\nr3chan\r\n:1\r\n"
    );
    assert_eq!(c.call(&["GET", "r3missing"]), "_\r\n");
    let mut publisher = Raw::connect(proxy.addr());
    publisher.call(&["PUBLISH", "r3chan", "hi"]);
    assert_eq!(
        String::from_utf8_lossy(&c.frame()),
        ">3\r\n$7\r\nmessage\r\n$6\r\nr3chan\r\n$2\r\nhi\r\n"
    );
    assert!(c.call(&["CLIENT", "INFO"]).contains("flags=Pe "));
    assert_eq!(c.call(&["RESET"]), "+RESET\r\n");
    assert_eq!(c.call(&["CLIENT", "GETNAME"]), "$-1\r\n");
    assert_eq!(c.call(&["PING"]), "+PONG\r\n");
}

#[test]
fn redis_py_with_both_protocols() {
    assert!(
        std::path::Path::new(PYTHON).exists(),
        "{PYTHON} is missing: run tests/install-deps.sh"
    );
    let cluster = TestCluster::start();
    let proxy = TestProxy::start(cluster.seeds());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/client_session.py");
    for proto in ["2", "3"] {
        let out = Command::new(PYTHON)
            .arg(script)
            .arg(proxy.addr().to_string())
            .arg(proto)
            .output()
            .expect("run python");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.starts_with("ok "),
            "redis-py protocol={proto}:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let _ = Duration::ZERO;
}
