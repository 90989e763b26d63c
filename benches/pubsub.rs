//! Pub/Sub connection-mode benchmark (issue 4, point 5): what one backend connection per
//! subscribing client costs, against what a shared, fanned-out connection would save.
//!
//! A 3-shard cluster (no replicas) and the release `slotway` binary as its own process. For N
//! subscribers spread over a few channels it reports the backend subscriber connections, the
//! proxy's RSS growth, publish→deliver latency (p50/p99, messages paced, not saturating) and the
//! proxy's and the nodes' CPU per delivered message. Then the same subscribers straight on one
//! node, with N connections and with the one connection a shared design would use, to isolate
//! Redis's cost per subscriber connection.
//!
//! ```sh
//! cargo bench --bench pubsub                       # N = 100 and 1000
//! cargo bench --bench pubsub -- --subscribers 2000 --messages 400
//! ```
//! Under `cargo test --benches` it only checks that it starts (no cluster is started).

// Test and benchmark code times itself with std::time::Instant and shares state through
// std::sync::Mutex outside any runtime; the one-clock and non-poisoning rules of clippy.toml are
// for the proxy's own code.
#![allow(clippy::disallowed_types)]

// The integration-test harness (tests/it/common), of which a benchmark uses only part.
#[allow(dead_code)]
#[path = "../tests/it/common/mod.rs"]
mod common;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::cluster::{wait_until, TestCluster};
use common::ports::free_port;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Mutex;

/// Channels the subscribers are spread over.
const CHANNELS: usize = 4;
/// Pause between two published messages.
const PACE: Duration = Duration::from_millis(4);

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--bench") {
        println!("pubsub benchmark: skipped (run it with `cargo bench --bench pubsub`)");
        return;
    }
    let opt = |name: &str| -> Option<usize> {
        let i = args.iter().position(|a| a == name)?;
        args.get(i + 1)?.parse().ok()
    };
    let sizes = match opt("--subscribers") {
        Some(n) => vec![n],
        None => vec![100, 1000],
    };
    let messages = opt("--messages").unwrap_or(400);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let cluster = TestCluster::start_with(3, 0);
    let proxy = Proxy::start(&cluster);
    println!(
        "pubsub benchmark: {CHANNELS} channels, {messages} messages per run, one every {PACE:?}"
    );
    println!(
        "{:<22} {:>6} {:>9} {:>10} {:>9} {:>9} {:>12} {:>12} {:>11}",
        "setup",
        "subs",
        "backend",
        "proxy RSS",
        "p50",
        "p99",
        "proxy CPU",
        "redis CPU",
        "redis mem"
    );
    for &n in &sizes {
        rt.block_on(run(&cluster, Some(&proxy), n, messages, false));
        rt.block_on(run(&cluster, None, n, messages, false));
        rt.block_on(run(&cluster, None, n, messages, true));
    }
}

/// The slotway process under test.
struct Proxy {
    child: Child,
    addr: String,
}

impl Proxy {
    fn start(cluster: &TestCluster) -> Self {
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let child = Command::new(env!("CARGO_BIN_EXE_slotway"))
            .args(["--listen", &addr, "--seeds", &cluster.seeds().join(",")])
            .env("SLOTWAY_LOG_LEVEL", "warn")
            // One dedicated connection per subscriber: the default cap (64) would stop at
            // 64 subscribers per node.
            .env("SLOTWAY_BACKEND_MAX_DEDICATED_PER_NODE", "20000")
            .env("SLOTWAY_CLIENT_MAX_CONNECTIONS", "20000")
            .stdout(Stdio::null())
            .spawn()
            .expect("start slotway");
        let proxy = Proxy { child, addr };
        wait_until(Duration::from_secs(60), "slotway to route", || {
            redis_cli(&proxy.addr, &["SET", "probe", "1"]).contains("OK")
        });
        proxy
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn redis_cli(addr: &str, args: &[&str]) -> String {
    let (host, port) = addr.rsplit_once(':').expect("host:port");
    let out = Command::new("redis-cli")
        .args(["-h", host, "-p", port])
        .args(args)
        .output()
        .expect("redis-cli");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Pub/Sub clients on every node (slotway's dedicated subscriber connections, or direct ones).
fn pubsub_clients(cluster: &TestCluster) -> usize {
    (0..cluster.len())
        .map(|i| {
            redis_cli(&cluster.node_addr(i), &["CLIENT", "LIST", "TYPE", "pubsub"])
                .lines()
                .filter(|l| l.starts_with("id="))
                .count()
        })
        .sum()
}

/// `used_memory` summed over the nodes.
fn redis_memory(cluster: &TestCluster) -> i64 {
    (0..cluster.len())
        .map(|i| {
            redis_cli(&cluster.node_addr(i), &["INFO", "memory"])
                .lines()
                .find_map(|l| l.strip_prefix("used_memory:"))
                .and_then(|v| v.trim().parse::<i64>().ok())
                .unwrap_or(0)
        })
        .sum()
}

/// CPU time (user + system) of a process so far.
fn cpu(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

fn rss_kib(pid: u32) -> i64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// Reads RESP frames until `expected` messages arrived; records each one's latency from the
/// timestamp it carries. Messages are `*3 message <channel> <ns>` (any count per read).
async fn subscriber(mut s: TcpStream, expected: usize, out: Arc<Mutex<Vec<u64>>>) {
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 16384];
    let mut got = Vec::with_capacity(expected);
    while got.len() < expected {
        let n = match tokio::time::timeout(Duration::from_secs(60), s.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => n,
            _ => break,
        };
        let at = now_ns();
        buf.extend_from_slice(&chunk[..n]);
        // Each message ends with its timestamp bulk: `$<len>\r\n<ns>\r\n`.
        let mut start = 0;
        while let Some(pos) = find(&buf[start..], b"message\r\n") {
            let from = start + pos + 9;
            let Some(frame_end) = nth_crlf(&buf[from..], 4) else {
                break;
            };
            let body = &buf[from..from + frame_end];
            let ts = std::str::from_utf8(body)
                .ok()
                .and_then(|t| t.split("\r\n").nth(3))
                .and_then(|t| t.parse::<u128>().ok());
            if let Some(ts) = ts {
                got.push(at.saturating_sub(ts) as u64);
            }
            start = from + frame_end;
        }
        buf.drain(..start);
    }
    out.lock().await.extend(got);
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Offset just past the `n`-th CRLF.
fn nth_crlf(buf: &[u8], n: usize) -> Option<usize> {
    let mut at = 0;
    for _ in 0..n {
        at += find(&buf[at..], b"\r\n")? + 2;
    }
    Some(at)
}

/// Opens a connection that subscribed to `channels` (confirmations read).
async fn subscribe(addr: &str, channels: &[String]) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.set_nodelay(true).ok();
    let mut req = format!("*{}\r\n$9\r\nSUBSCRIBE\r\n", channels.len() + 1);
    for c in channels {
        req.push_str(&format!("${}\r\n{c}\r\n", c.len()));
    }
    s.write_all(req.as_bytes()).await.expect("subscribe");
    let mut seen = Vec::new();
    let mut chunk = [0u8; 4096];
    while seen
        .windows(11)
        .filter(|w: &&[u8]| *w == b"\r\nsubscribe")
        .count()
        < channels.len()
    {
        let n = s.read(&mut chunk).await.expect("confirmation");
        assert!(n > 0, "closed while subscribing");
        seen.extend_from_slice(&chunk[..n]);
    }
    s
}

/// One run: `n` subscribers through the proxy (`proxy` set), straight on node 0 with one
/// connection each, or (`shared`) straight on node 0 as the one connection a shared design
/// keeps per channel set.
async fn run(
    cluster: &TestCluster,
    proxy: Option<&Proxy>,
    n: usize,
    messages: usize,
    shared: bool,
) {
    let node0 = cluster.node_addr(0);
    let target = proxy.map_or(node0.clone(), |p| p.addr.clone());
    let label = match (proxy, shared) {
        (Some(_), _) => "slotway, per client",
        (None, false) => "redis, N connections",
        (None, true) => "redis, 1 connection",
    };
    let base_conns = pubsub_clients(cluster);
    let base_mem = redis_memory(cluster);
    let base_rss = proxy.map_or(0, |p| rss_kib(p.pid()));
    let conns = if shared { 1 } else { n };
    let channels: Vec<String> = (0..CHANNELS).map(|c| format!("bench:{c}")).collect();
    let mut subs = Vec::with_capacity(conns);
    for i in 0..conns {
        let mine = if shared {
            channels.clone()
        } else {
            vec![channels[i % CHANNELS].clone()]
        };
        subs.push(subscribe(&target, &mine).await);
    }
    let backend = pubsub_clients(cluster) - base_conns;
    let rss = proxy.map_or(0, |p| rss_kib(p.pid()) - base_rss);
    let mem = redis_memory(cluster) - base_mem;

    let latencies = Arc::new(Mutex::new(Vec::new()));
    let per_sub = messages / CHANNELS;
    let mut tasks = Vec::new();
    for s in subs {
        let expected = if shared { messages } else { per_sub };
        tasks.push(tokio::spawn(subscriber(s, expected, latencies.clone())));
    }
    let pids = cluster.pids();
    let redis_cpu0: Duration = pids.iter().map(|&p| cpu(p)).sum();
    let proxy_cpu0 = proxy.map_or(Duration::ZERO, |p| cpu(p.pid()));
    let started = Instant::now();
    let mut publisher = TcpStream::connect(&node0).await.expect("publisher");
    let mut reply = [0u8; 64];
    for m in 0..messages {
        let ch = &channels[m % CHANNELS];
        let ts = now_ns().to_string();
        let req = format!(
            "*3\r\n$7\r\nPUBLISH\r\n${}\r\n{ch}\r\n${}\r\n{ts}\r\n",
            ch.len(),
            ts.len()
        );
        publisher.write_all(req.as_bytes()).await.expect("publish");
        let _ = publisher.read(&mut reply).await;
        tokio::time::sleep(PACE).await;
    }
    for t in tasks {
        let _ = t.await;
    }
    let _elapsed = started.elapsed();
    let redis_cpu: Duration = pids.iter().map(|&p| cpu(p)).sum::<Duration>() - redis_cpu0;
    let proxy_cpu = proxy.map_or(Duration::ZERO, |p| cpu(p.pid()) - proxy_cpu0);
    let mut l = latencies.lock().await.clone();
    l.sort_unstable();
    let deliveries = if shared {
        // A shared connection delivers each message once; the proxy would fan it out.
        messages * n / CHANNELS
    } else {
        l.len()
    };
    let pct = |p: f64| -> String {
        if l.is_empty() {
            return "-".into();
        }
        let v = l[((l.len() as f64 * p) as usize).min(l.len() - 1)];
        format!("{:.0} µs", v as f64 / 1000.0)
    };
    let per = |d: Duration| -> String {
        if deliveries == 0 {
            return "-".into();
        }
        format!(
            "{:.2} µs/msg",
            d.as_nanos() as f64 / deliveries as f64 / 1000.0
        )
    };
    println!(
        "{:<22} {:>6} {:>9} {:>7} KiB {:>9} {:>9} {:>12} {:>12} {:>7} KiB",
        label,
        n,
        backend,
        rss,
        pct(0.5),
        pct(0.99),
        if proxy.is_some() {
            per(proxy_cpu)
        } else {
            "-".into()
        },
        per(redis_cpu),
        mem / 1024
    );
    if l.len() < if shared { messages } else { n * per_sub } {
        println!("  (only {} of the expected deliveries arrived)", l.len());
    }
    // Connections close when dropped with their tasks; wait until the nodes forget them.
    wait_until(Duration::from_secs(60), "subscribers to go away", || {
        pubsub_clients(cluster) <= base_conns
    });
}
