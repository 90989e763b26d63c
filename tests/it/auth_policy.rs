//! Client authentication, ACL-style users, the command policy and upstream (proxy → node)
//! authentication, through a real cluster; exact reply bytes checked over raw TCP.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::common;
use crate::common::cluster::TestCluster;
use crate::common::proxy::TestProxy;
use slotway::config::{Config, UserConfig};
use slotway::security::Secret;

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// Sends `req` and returns whatever arrives until the reply goes quiet.
fn ask(s: &mut TcpStream, req: &str) -> String {
    s.write_all(req.as_bytes()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let n = s.read(&mut buf).unwrap();
    out.extend_from_slice(&buf[..n]);
    // Replies are small; collect any remainder already on its way.
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
            Err(e) => panic!("read: {e}"),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
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

/// A proxy that needs auth: `wait_routing` cannot probe it, so poll with credentials here.
fn start_authenticated(
    cluster: &TestCluster,
    login: &str,
    tweak: impl FnOnce(&mut Config),
) -> TestProxy {
    let proxy = TestProxy::spawn(cluster.seeds(), tweak);
    let end = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let mut s = connect(proxy.addr());
        let ok = ask(&mut s, login) == "+OK\r\n"
            && (0..16).all(|i| !ask(&mut s, &format!("GET __probe{i}\r\n")).starts_with('-'));
        if ok {
            return proxy;
        }
        assert!(
            std::time::Instant::now() < end,
            "proxy did not start routing"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn requirepass_gates_commands_until_auth() {
    let cluster = TestCluster::start_with(3, 0);
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("client-password");
    std::fs::write(&pw, "s3cret\n").unwrap();
    let path = pw.to_str().unwrap().to_string();
    let proxy = start_authenticated(&cluster, "AUTH s3cret\r\n", |c| {
        c.auth.password_file = path;
    });
    let mut s = connect(proxy.addr());
    assert_eq!(
        ask(&mut s, "GET k\r\n"),
        "-NOAUTH Authentication required.\r\n"
    );
    assert_eq!(
        ask(&mut s, "PING\r\n"),
        "-NOAUTH Authentication required.\r\n"
    );
    // Unknown commands and wrong arity are reported first, as Redis does.
    assert!(ask(&mut s, "NOSUCH\r\n").starts_with("-ERR unknown command 'NOSUCH'"));
    assert_eq!(
        ask(&mut s, "AUTH wrong\r\n"),
        "-WRONGPASS invalid username-password pair or user is disabled.\r\n"
    );
    assert_eq!(
        ask(&mut s, "HELLO 2\r\n"),
        "-NOAUTH HELLO must be called with the client already authenticated, otherwise the \
         HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and \
         select the RESP protocol version at the same time\r\n"
    );
    assert_eq!(ask(&mut s, "AUTH s3cret\r\n"), "+OK\r\n");
    assert_eq!(ask(&mut s, "SET auth:k v\r\n"), "+OK\r\n");
    assert_eq!(ask(&mut s, "GET auth:k\r\n"), "$1\r\nv\r\n");

    // HELLO AUTH logs in and answers with the server description.
    let mut h = connect(proxy.addr());
    let reply = ask(&mut h, "HELLO 2 AUTH default s3cret SETNAME app\r\n");
    assert!(
        reply.starts_with("*14\r\n$6\r\nserver\r\n$5\r\nredis\r\n"),
        "{reply}"
    );
    assert!(reply.contains("$5\r\nproto\r\n:2\r\n"), "{reply}");
    assert_eq!(ask(&mut h, "GET auth:k\r\n"), "$1\r\nv\r\n");
    // Once authenticated, HELLO 3 switches the connection to RESP3.
    let reply = ask(&mut h, "HELLO 3\r\n");
    assert!(reply.starts_with("%7\r\n"), "{reply}");
    assert!(reply.contains("$5\r\nproto\r\n:3\r\n"), "{reply}");

    // QUIT is allowed before authenticating.
    let mut q = connect(proxy.addr());
    assert_eq!(ask(&mut q, "QUIT\r\n"), "+OK\r\n");

    // A stock client with the password in its URL works.
    let url = format!("redis://:s3cret@{}/", proxy.addr());
    let mut con = redis::Client::open(url).unwrap().get_connection().unwrap();
    let got: String = redis::cmd("GET").arg("auth:k").query(&mut con).unwrap();
    assert_eq!(got, "v");
    let bad = format!("redis://:nope@{}/", proxy.addr());
    let err = redis::Client::open(bad).unwrap().get_connection().err();
    assert!(err.is_some(), "a wrong password must not connect");
}

#[test]
fn users_are_limited_to_their_commands_and_keys() {
    let cluster = TestCluster::start_with(3, 0);
    let proxy = start_authenticated(&cluster, "AUTH admin adminpw\r\n", |c| {
        c.auth.users = vec![
            user("admin", "adminpw", &["+@all"], &["*"]),
            user(
                "reader",
                "readpw",
                &["+@read", "-keys"],
                &["app:*", "{shared}*"],
            ),
        ];
    });
    let mut admin = connect(proxy.addr());
    assert_eq!(
        ask(&mut admin, "AUTH adminpw\r\n").get(..10),
        Some("-WRONGPASS")
    );
    assert_eq!(ask(&mut admin, "AUTH admin adminpw\r\n"), "+OK\r\n");
    assert_eq!(ask(&mut admin, "SET app:1 one\r\n"), "+OK\r\n");
    assert_eq!(ask(&mut admin, "SET private x\r\n"), "+OK\r\n");

    let mut r = connect(proxy.addr());
    assert_eq!(
        ask(&mut r, "AUTH reader wrong\r\n").get(..10),
        Some("-WRONGPASS")
    );
    assert_eq!(ask(&mut r, "AUTH reader readpw\r\n"), "+OK\r\n");
    assert_eq!(ask(&mut r, "GET app:1\r\n"), "$3\r\none\r\n");
    assert_eq!(
        ask(&mut r, "GET private\r\n"),
        "-NOPERM this user has no permissions to access one of the keys used as arguments\r\n"
    );
    assert_eq!(
        ask(&mut r, "SET app:1 two\r\n"),
        "-NOPERM this user has no permissions to run the 'set' command\r\n"
    );
    assert_eq!(
        ask(&mut r, "KEYS *\r\n"),
        "-NOPERM this user has no permissions to run the 'keys' command\r\n"
    );
    // The connection stays usable after refusals, and replies keep their order.
    assert_eq!(
        ask(&mut r, "GET app:1\r\nSET x y\r\nGET app:1\r\n"),
        "$3\r\none\r\n-NOPERM this user has no permissions to run the 'set' command\r\n$3\r\none\r\n"
    );
    let url = format!("redis://reader:readpw@{}/", proxy.addr());
    let mut con = redis::Client::open(url).unwrap().get_connection().unwrap();
    let got: String = redis::cmd("GET").arg("app:1").query(&mut con).unwrap();
    assert_eq!(got, "one");
    let err = redis::cmd("DEL")
        .arg("app:1")
        .query::<i64>(&mut con)
        .unwrap_err();
    assert_eq!(err.code(), Some("NOPERM"), "{err}");
}

#[test]
fn the_default_policy_refuses_damaging_commands_and_allow_reenables() {
    let cluster = TestCluster::start_with(3, 0);
    let proxy = TestProxy::start(cluster.seeds());
    let mut s = connect(proxy.addr());
    for (req, name) in [
        ("CONFIG SET maxmemory 1\r\n", "config|set"),
        ("CONFIG REWRITE\r\n", "config|rewrite"),
        ("DEBUG SLEEP 0\r\n", "debug"),
        ("SHUTDOWN NOSAVE\r\n", "shutdown"),
        ("CLUSTER RESET HARD\r\n", "cluster|reset"),
        ("CLUSTER FORGET abc\r\n", "cluster|forget"),
        ("CLUSTER FAILOVER\r\n", "cluster|failover"),
        ("CLUSTER SETSLOT 1 STABLE\r\n", "cluster|setslot"),
        ("CLUSTER ADDSLOTS 1\r\n", "cluster|addslots"),
        ("CLUSTER DELSLOTS 1\r\n", "cluster|delslots"),
        ("CLUSTER MEET 127.0.0.1 1\r\n", "cluster|meet"),
        ("REPLICAOF NO ONE\r\n", "replicaof"),
        ("SLAVEOF NO ONE\r\n", "slaveof"),
        ("MONITOR\r\n", "monitor"),
        ("SAVE\r\n", "save"),
        ("BGSAVE\r\n", "bgsave"),
        ("BGREWRITEAOF\r\n", "bgrewriteaof"),
        ("MODULE LOAD /x.so\r\n", "module|load"),
        ("ACL SETUSER eve on\r\n", "acl|setuser"),
        ("ACL DELUSER eve\r\n", "acl|deluser"),
    ] {
        assert_eq!(
            ask(&mut s, req),
            format!("-ERR command '{name}' is disabled by slotway's command policy\r\n"),
            "{req:?}"
        );
    }
    // Harmless neighbours still reach the cluster.
    let reply = ask(&mut s, "CONFIG GET maxmemory\r\n");
    assert!(reply.starts_with("*2\r\n$9\r\nmaxmemory\r\n"), "{reply}");
    let reply = ask(&mut s, "ACL WHOAMI\r\n");
    assert_eq!(reply, "$7\r\ndefault\r\n");
    // The cluster was not touched: the node still runs with its settings.
    let mut node = common::cluster::direct(&cluster.node_addr(0));
    let mm: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("maxmemory")
        .query(&mut node)
        .unwrap();
    assert_eq!(mm[1], "0");
    drop(proxy);

    let proxy = TestProxy::start_with(cluster.seeds(), |c| {
        c.policy.deny = vec!["@write".into(), "config".into()];
        c.policy.allow = vec!["set".into()];
    });
    let mut s = connect(proxy.addr());
    assert_eq!(ask(&mut s, "SET pol:k v\r\n"), "+OK\r\n");
    assert_eq!(
        ask(&mut s, "DEL pol:k\r\n"),
        "-ERR command 'del' is disabled by slotway's command policy\r\n"
    );
    assert_eq!(
        ask(&mut s, "CONFIG GET maxmemory\r\n"),
        "-ERR command 'config|get' is disabled by slotway's command policy\r\n"
    );
    // No longer in the deny list once it is replaced.
    assert!(!ask(&mut s, "DEBUG HELP\r\n").contains("command policy"));
}

#[test]
fn upstream_auth_uses_an_acl_user_from_files() {
    let cluster = TestCluster::start_with(3, 0);
    for addr in cluster.seeds() {
        let mut node = common::cluster::direct(&addr);
        redis::cmd("ACL")
            .arg(&["SETUSER", "slotway", "on", ">upstream-pw", "+@all", "~*"])
            .query::<()>(&mut node)
            .unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let user_file = dir.path().join("username");
    let pw_file = dir.path().join("password");
    std::fs::write(&user_file, "slotway\n").unwrap();
    std::fs::write(&pw_file, "upstream-pw\n").unwrap();
    let (u, p) = (
        user_file.to_str().unwrap().to_string(),
        pw_file.to_str().unwrap().to_string(),
    );
    let proxy = TestProxy::start_with(cluster.seeds(), |c| {
        c.cluster.username_file = u;
        c.cluster.password_file = p;
    });
    let mut s = connect(proxy.addr());
    assert_eq!(ask(&mut s, "SET up:k v\r\n"), "+OK\r\n");
    // The node sees the proxy's connections as the ACL user from the file (ACL WHOAMI is
    // answered by the proxy with the client's own user, so ask the node who is connected).
    let owner = cluster.primary_for_key("up:k");
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query(&mut common::cluster::direct(&owner))
        .unwrap();
    assert!(list.contains(" user=slotway "), "{list}");
    assert_eq!(ask(&mut s, "ACL WHOAMI\r\n"), "$7\r\ndefault\r\n");
    drop(proxy);

    // A wrong password: the proxy cannot use the cluster and says so, without the secret.
    std::fs::write(&pw_file, "not-the-password\n").unwrap();
    let p = pw_file.to_str().unwrap().to_string();
    let u = user_file.to_str().unwrap().to_string();
    let proxy = TestProxy::spawn(cluster.seeds(), |c| {
        c.cluster.username_file = u;
        c.cluster.password_file = p;
    });
    std::thread::sleep(Duration::from_millis(1500));
    let mut s = connect(proxy.addr());
    let reply = ask(&mut s, "GET up:k\r\n");
    assert!(reply.starts_with("-CLUSTERDOWN"), "{reply}");
    assert!(!reply.contains("not-the-password"), "{reply}");
}
