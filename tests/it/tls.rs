//! TLS end to end: `redis-cli --tls` through slotway's TLS listener, mTLS, a TLS-only Redis
//! Cluster behind slotway, and certificate reloads that leave open connections alone.
//! Certificates are generated at test time. Cluster tests run one at a time (harness lock).

use std::io::Read;
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::common;
use crate::common::cluster::{wait_until, TestCluster};
use crate::common::proxy::TestProxy;
use crate::common::tls::{
    client_config, path_str, write, write_pair, Ca, Files, Issued, NodeTls, TlsClient, TlsCluster,
};
use slotway::config::Config;

/// Generous: the CI machine has two shared, busy cores.
const DEADLINE: Duration = Duration::from_secs(30);

/// A counter's value from the process-wide metrics recorder (the proxies run in-process).
fn counter(series: &str) -> f64 {
    let text = slotway::metrics::install().expect("recorder").render();
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

/// `redis-cli --tls` against the proxy; stdout and stderr together.
fn cli(addr: std::net::SocketAddr, ca: &Path, id: Option<(&Path, &Path)>, args: &[&str]) -> String {
    let mut cmd = Command::new("redis-cli");
    cmd.args(["--tls", "--cacert"]).arg(ca);
    if let Some((cert, key)) = id {
        cmd.arg("--cert").arg(cert).arg("--key").arg(key);
    }
    let out = cmd
        .args(["-h", "127.0.0.1", "-p", &addr.port().to_string()])
        .args(args)
        .output()
        .expect("run redis-cli");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Listener TLS with the proxy certificate at `files`.
fn listener_tls(cfg: &mut Config, cert: &Path, key: &Path) {
    cfg.tls.cert_file = path_str(cert);
    cfg.tls.key_file = path_str(key);
}

#[test]
fn redis_cli_through_the_tls_listener_and_plaintext_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("slotway test CA");
    let ca_file = write(dir.path(), "ca.crt", &ca.pem());
    let proxy_id = write_pair(
        dir.path(),
        "proxy",
        &ca.issue("proxy", &["127.0.0.1", "localhost"]),
    );
    let cluster = TestCluster::start_with(3, 0);
    let proxy = TestProxy::spawn(cluster.seeds(), |c| {
        listener_tls(c, &proxy_id.cert, &proxy_id.key)
    });
    wait_until(DEADLINE, "the proxy to route", || proxy.is_ready());

    assert_eq!(
        cli(proxy.addr(), &ca_file, None, &["SET", "tls:k", "v1"]).trim(),
        "OK"
    );
    assert_eq!(
        cli(proxy.addr(), &ca_file, None, &["GET", "tls:k"]).trim(),
        "v1"
    );

    // A large value both ways: records split across many reads and partial writes.
    let config = client_config(&[&ca.pem()], None);
    let mut client = TlsClient::connect(proxy.addr(), config).unwrap();
    let big = "x".repeat(3 << 20);
    assert_eq!(client.call(&["SET", "tls:big", &big]).unwrap(), "+OK\r\n");
    let mut pipeline = Vec::new();
    for _ in 0..3 {
        pipeline.extend(common::resp::encode(&["GET", "tls:big"]));
    }
    client.send_bytes(&pipeline).unwrap();
    let expected = format!("${}\r\n{big}\r\n", big.len());
    for _ in 0..3 {
        assert!(client.frame().unwrap() == expected.as_bytes());
    }

    // A plaintext client on the TLS port is told so and closed, not left hanging.
    let mut plain = TcpStream::connect(proxy.addr()).unwrap();
    plain.set_read_timeout(Some(DEADLINE)).unwrap();
    std::io::Write::write_all(&mut plain, b"*1\r\n$4\r\nPING\r\n").unwrap();
    let mut got = Vec::new();
    plain.read_to_end(&mut got).expect("closed by the proxy");
    assert_eq!(got, b"-ERR slotway: this port requires TLS\r\n");
    wait_until(DEADLINE, "the failed handshake to be counted", || {
        counter("slotway_tls_handshake_failures_total{side=\"client\"}") >= 1.0
    });
    // The listener still serves TLS clients.
    assert_eq!(cli(proxy.addr(), &ca_file, None, &["PING"]).trim(), "PONG");
}

#[test]
fn mutual_tls_refuses_clients_without_a_trusted_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("server CA");
    let clients = Ca::new("client CA");
    let stranger = Ca::new("another CA");
    let ca_file = write(dir.path(), "ca.crt", &ca.pem());
    let client_ca_file = write(dir.path(), "clients.crt", &clients.pem());
    let proxy_id = write_pair(dir.path(), "proxy", &ca.issue("proxy", &["127.0.0.1"]));
    let good = clients.issue("app", &["app.example"]);
    let good_files = write_pair(dir.path(), "app", &good);
    let bad_files = write_pair(dir.path(), "bad", &stranger.issue("bad", &["bad.example"]));

    let cluster = TestCluster::start_with(3, 0);
    let proxy = TestProxy::spawn(cluster.seeds(), |c| {
        listener_tls(c, &proxy_id.cert, &proxy_id.key);
        c.tls.client_ca_file = path_str(&client_ca_file);
    });
    wait_until(DEADLINE, "the proxy to route", || proxy.is_ready());

    let with_cert = Some((good_files.cert.as_path(), good_files.key.as_path()));
    assert_eq!(
        cli(proxy.addr(), &ca_file, with_cert, &["PING"]).trim(),
        "PONG"
    );
    let refused = cli(proxy.addr(), &ca_file, None, &["PING"]);
    assert!(
        !refused.contains("PONG"),
        "no client certificate: {refused}"
    );
    let wrong_ca = Some((bad_files.cert.as_path(), bad_files.key.as_path()));
    let refused = cli(proxy.addr(), &ca_file, wrong_ca, &["PING"]);
    assert!(
        !refused.contains("PONG"),
        "untrusted client certificate: {refused}"
    );

    // The same through rustls: with TLS 1.3 the refusal arrives on the first read.
    let config = client_config(&[&ca.pem()], None);
    let refused = TlsClient::connect(proxy.addr(), config).and_then(|mut c| c.call(&["PING"]));
    assert!(refused.is_err(), "{refused:?}");
    let config = client_config(&[&ca.pem()], Some(&good));
    let mut client = TlsClient::connect(proxy.addr(), config).unwrap();
    assert_eq!(client.call(&["SET", "mtls:k", "v"]).unwrap(), "+OK\r\n");
    assert_eq!(client.call(&["GET", "mtls:k"]).unwrap(), "$1\r\nv\r\n");
    drop(proxy);

    // Optional client certificates: none is fine, an untrusted one is still refused.
    let optional = TestProxy::spawn(cluster.seeds(), |c| {
        listener_tls(c, &proxy_id.cert, &proxy_id.key);
        c.tls.client_ca_file = path_str(&client_ca_file);
        c.tls.require_client_cert = false;
    });
    wait_until(DEADLINE, "the proxy to route", || optional.is_ready());
    assert_eq!(
        cli(optional.addr(), &ca_file, None, &["PING"]).trim(),
        "PONG"
    );
    assert_eq!(
        cli(optional.addr(), &ca_file, with_cert, &["PING"]).trim(),
        "PONG"
    );
    let refused = cli(optional.addr(), &ca_file, wrong_ca, &["PING"]);
    assert!(!refused.contains("PONG"), "optional, untrusted: {refused}");
}

/// Node certificates for a TLS cluster on 127.0.0.1, also named `redis.test`.
fn tls_cluster_files(dir: &Path, ca: &Ca) -> NodeTls {
    let node = write_pair(
        dir,
        "node",
        &ca.issue("redis", &["127.0.0.1", "redis.test"]),
    );
    NodeTls {
        ca: write(dir, "cluster-ca.crt", &ca.pem()),
        cert: node.cert,
        key: node.key,
    }
}

/// A cluster CA's node certificates and the proxy's client identity from the same CA (the
/// nodes ask for client certificates: tls-auth-clients yes by default).
fn upstream_certs(dir: &Path) -> (NodeTls, Files) {
    let ca = Ca::new("cluster CA");
    let files = tls_cluster_files(dir, &ca);
    let proxy_id = write_pair(dir, "slotway", &ca.issue("slotway", &["slotway"]));
    (files, proxy_id)
}

/// Upstream TLS trusting `ca`, presenting `id` to the nodes.
fn upstream_tls(c: &mut Config, ca: &Path, id: &Files) {
    c.upstream_tls.enabled = true;
    c.upstream_tls.ca_file = path_str(ca);
    c.upstream_tls.cert_file = path_str(&id.cert);
    c.upstream_tls.key_file = path_str(&id.key);
}

#[test]
fn upstream_tls_to_a_tls_only_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let (files, proxy_id) = upstream_certs(dir.path());
    let other_ca = write(
        dir.path(),
        "other-ca.crt",
        &Ca::new("not the cluster's").pem(),
    );
    let cluster = TlsCluster::start(3, files.clone());
    let upstream = |c: &mut Config, ca: &Path| upstream_tls(c, ca, &proxy_id);

    let proxy = TestProxy::spawn(cluster.seeds(), |c| upstream(c, &files.ca));
    wait_until(DEADLINE, "the proxy to route over TLS", || proxy.is_ready());
    let mut con = proxy.client();
    for i in 0..50 {
        let key = format!("tls:{i}");
        let _: () = redis::cmd("SET").arg(&key).arg(i).query(&mut con).unwrap();
        let got: i64 = redis::cmd("GET").arg(&key).query(&mut con).unwrap();
        assert_eq!(got, i);
    }
    // A transaction runs on a dedicated connection: TLS there too.
    let (a, b): (i64, i64) = redis::pipe()
        .atomic()
        .cmd("INCR")
        .arg("{tx}a")
        .cmd("INCR")
        .arg("{tx}a")
        .query(&mut con)
        .unwrap();
    assert_eq!((a, b), (1, 2));
    // The value really is on the cluster.
    let seen = cluster.cli(cluster.ports[0], &["-c", "GET", "tls:7"]);
    assert_eq!(seen.trim(), "7");
    drop(con);
    drop(proxy);

    // A certificate name override the nodes' certificates carry works; one they do not
    // carry fails, unless only the chain is checked.
    let named = TestProxy::spawn(cluster.seeds(), |c| {
        upstream(c, &files.ca);
        c.upstream_tls.server_name = "redis.test".into();
    });
    wait_until(DEADLINE, "the proxy to route by name", || named.is_ready());
    drop(named);
    let chain_only = TestProxy::spawn(cluster.seeds(), |c| {
        upstream(c, &files.ca);
        c.upstream_tls.server_name = "elsewhere.test".into();
        c.upstream_tls.verify_hostname = false;
    });
    wait_until(DEADLINE, "the proxy to route without name checks", || {
        chain_only.is_ready()
    });
    drop(chain_only);

    for (what, tweak) in [
        ("a CA that did not sign the nodes", None),
        ("a name the certificates lack", Some("elsewhere.test")),
    ] {
        let before = counter("slotway_tls_handshake_failures_total{side=\"upstream\"}");
        let proxy = TestProxy::spawn(cluster.seeds(), |c| match tweak {
            None => upstream(c, &other_ca),
            Some(name) => {
                upstream(c, &files.ca);
                c.upstream_tls.server_name = name.into();
            }
        });
        wait_until(DEADLINE, "failed upstream handshakes", || {
            counter("slotway_tls_handshake_failures_total{side=\"upstream\"}") >= before + 3.0
        });
        assert!(!proxy.is_ready(), "{what}: ready");
        let mut con = proxy.client();
        let err = redis::cmd("GET")
            .arg("tls:1")
            .query::<Option<String>>(&mut con)
            .unwrap_err();
        assert!(
            err.to_string().contains("no cluster topology"),
            "{what}: {err}"
        );
    }
}

/// Replication and failover over TLS: a primary of a TLS-only cluster is killed, its replica
/// (which replicated over TLS) takes over, and the proxy reaches it over TLS.
#[test]
fn upstream_tls_follows_a_failover() {
    let dir = tempfile::tempdir().unwrap();
    let (files, proxy_id) = upstream_certs(dir.path());
    let mut cluster = TlsCluster::start_with_replicas(3, 1, files.clone());
    let proxy = TestProxy::spawn(cluster.seeds(), |c| {
        upstream_tls(c, &files.ca, &proxy_id);
        // Room for Redis's own election on a loaded machine.
        c.cluster.retry_deadline_ms = 60_000;
    });
    wait_until(DEADLINE, "the proxy to route over TLS", || proxy.is_ready());
    let key = format!("{{{}}}tls-failover", common::load::tag_for_slot(0));
    let mut con = proxy.client();
    let _: () = redis::cmd("SET")
        .arg(&key)
        .arg("before")
        .query(&mut con)
        .unwrap();

    let ask = |cluster: &TlsCluster, not: u16| *cluster.ports.iter().find(|&&p| p != not).unwrap();
    let victim = cluster
        .primary_for_slot(cluster.ports[0], 0)
        .expect("slot 0's primary");
    cluster.kill(victim);
    // A write sent in the instant before the proxy reads the end of the connection would have
    // an unknown outcome; once it has, writes are held until a replica takes over.
    wait_until(
        DEADLINE,
        "the proxy to see the killed primary's connection fail",
        || slotway::admin::report::readiness(proxy.shared()).is_err(),
    );
    // Redis's own election takes seconds; the proxy holds the write meanwhile.
    con.set_read_timeout(Some(Duration::from_secs(90))).unwrap();
    // Held by the proxy until a replica has taken over, then sent there over TLS.
    let _: () = redis::cmd("SET")
        .arg(&key)
        .arg("after")
        .query(&mut con)
        .unwrap();
    let got: String = redis::cmd("GET").arg(&key).query(&mut con).unwrap();
    assert_eq!(got, "after");
    let owner = cluster.primary_for_slot(ask(&cluster, victim), 0);
    assert!(
        owner.is_some_and(|p| p != victim),
        "slot 0 should have a new primary, not {victim}: {owner:?}"
    );
    let direct = cluster.cli(owner.unwrap(), &["GET", &key]);
    assert_eq!(direct.trim(), "after");
}

/// A TLS connection to the proxy, trusting both test CAs.
fn connect_trusting(addr: std::net::SocketAddr, cas: &[&Ca]) -> TlsClient {
    let pems: Vec<String> = cas.iter().map(|c| c.pem()).collect();
    let pems: Vec<&str> = pems.iter().map(String::as_str).collect();
    TlsClient::connect(addr, client_config(&pems, None)).expect("TLS connect")
}

/// A routing proxy with a TLS listener using `files`, polling them every `poll_ms` (0: SIGHUP
/// only).
fn reloading_proxy(cluster: &TestCluster, files: &Files, poll_ms: u64) -> TestProxy {
    let proxy = TestProxy::spawn(cluster.seeds(), |c| {
        listener_tls(c, &files.cert, &files.key);
        c.tls.reload_interval_ms = poll_ms;
    });
    wait_until(DEADLINE, "the proxy to route", || proxy.is_ready());
    proxy
}

/// Replaces the proxy's certificate and key files with `issued`.
fn rotate(dir: &Path, issued: &Issued) {
    write_pair(dir, "proxy", issued);
}

#[test]
fn sighup_reloads_certificates_without_dropping_connections() {
    let dir = tempfile::tempdir().unwrap();
    let old_ca = Ca::new("old CA");
    let new_ca = Ca::new("new CA");
    let first = old_ca.issue("proxy", &["127.0.0.1"]);
    let files = write_pair(dir.path(), "proxy", &first);
    let cluster = TestCluster::start_with(3, 0);
    let proxy = reloading_proxy(&cluster, &files, 0);
    let mut open = connect_trusting(proxy.addr(), &[&old_ca, &new_ca]);
    assert_eq!(open.server_cert(), first.der);
    assert_eq!(open.call(&["SET", "reload:k", "1"]).unwrap(), "+OK\r\n");

    let second = new_ca.issue("proxy", &["127.0.0.1"]);
    rotate(dir.path(), &second);
    let reloads = counter("slotway_tls_reloads_total{result=\"ok\"}");
    // The proxy installed its SIGHUP handler before it started, so the signal reloads
    // instead of ending the test process.
    assert_eq!(sighup_self(), 0);
    wait_until(DEADLINE, "the SIGHUP reload", || {
        counter("slotway_tls_reloads_total{result=\"ok\"}") > reloads
    });
    let fresh = connect_trusting(proxy.addr(), &[&old_ca, &new_ca]);
    assert_eq!(
        fresh.server_cert(),
        second.der,
        "new connections get the new certificate"
    );
    // The connection opened before the reload is untouched.
    assert_eq!(open.call(&["INCR", "reload:k"]).unwrap(), ":2\r\n");
    assert_eq!(open.server_cert(), first.der);
    // Only the new CA is needed from now on.
    let mut only_new = connect_trusting(proxy.addr(), &[&new_ca]);
    assert_eq!(only_new.call(&["GET", "reload:k"]).unwrap(), "$1\r\n2\r\n");
}

/// Sends SIGHUP to this process.
fn sighup_self() -> i32 {
    let pid = std::process::id().to_string();
    let status = Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .expect("run kill");
    status.code().unwrap_or(-1)
}

#[test]
fn changed_files_are_reloaded_and_a_bad_file_keeps_the_old_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("rotation CA");
    let first = ca.issue("proxy", &["127.0.0.1"]);
    let files = write_pair(dir.path(), "proxy", &first);
    let cluster = TestCluster::start_with(3, 0);
    let proxy = reloading_proxy(&cluster, &files, 100);
    let mut open = connect_trusting(proxy.addr(), &[&ca]);
    assert_eq!(open.call(&["PING"]).unwrap(), "+PONG\r\n");

    // A certificate whose key is not the one in key_file: refused, the old pair stays.
    let errors = counter("slotway_tls_reloads_total{result=\"error\"}");
    write(
        dir.path(),
        "proxy.crt",
        &ca.issue("other", &["127.0.0.1"]).cert_pem,
    );
    wait_until(DEADLINE, "the failed reload to be counted", || {
        counter("slotway_tls_reloads_total{result=\"error\"}") > errors
    });
    assert_eq!(
        connect_trusting(proxy.addr(), &[&ca]).server_cert(),
        first.der
    );

    let second = ca.issue("proxy", &["127.0.0.1"]);
    rotate(dir.path(), &second);
    wait_until(
        DEADLINE,
        "new connections to see the new certificate",
        || connect_trusting(proxy.addr(), &[&ca]).server_cert() == second.der,
    );
    assert_eq!(open.call(&["PING"]).unwrap(), "+PONG\r\n");
}

/// A change to a test's proxy config.
type Tweak<'a> = Box<dyn Fn(&mut Config) + 'a>;

#[test]
fn unusable_certificate_files_fail_start_up_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("start-up CA");
    let good = write_pair(dir.path(), "good", &ca.issue("a", &["127.0.0.1"]));
    let other = write_pair(dir.path(), "other", &ca.issue("b", &["127.0.0.1"]));
    let garbage = write(dir.path(), "garbage.pem", "not a certificate\n");
    let missing = dir.path().join("missing.pem");
    let cases: Vec<(Tweak<'_>, &str)> = vec![
        (
            Box::new(|c: &mut Config| listener_tls(c, &missing, &good.key)),
            "tls.cert_file",
        ),
        (
            Box::new(|c: &mut Config| listener_tls(c, &garbage, &good.key)),
            "no CERTIFICATE block",
        ),
        (
            Box::new(|c: &mut Config| listener_tls(c, &good.cert, &other.key)),
            "does not belong to the certificate",
        ),
        (
            Box::new(|c: &mut Config| {
                c.upstream_tls.enabled = true;
                c.upstream_tls.ca_file = path_str(&garbage);
            }),
            "upstream_tls.ca_file",
        ),
    ];
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for (tweak, expected) in cases {
        let mut config = Config {
            listen: "127.0.0.1:0".into(),
            seeds: vec!["127.0.0.1:1".into()],
            ..Config::default()
        };
        tweak(&mut config);
        let err = match rt.block_on(slotway::proxy::Proxy::start(config)) {
            Ok(_) => panic!("started despite {expected}"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains(expected), "expected {expected:?} in {err:?}");
    }
}
