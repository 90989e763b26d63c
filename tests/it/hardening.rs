//! Bad and hostile input against a real cluster, over raw TCP: malformed RESP answered as
//! Redis answers it (compared byte for byte with a node), inline commands, huge or negative
//! declared lengths that must not commit memory, arrays inside requests, half-sent requests,
//! one-byte dribbles, thousands of connections opened and dropped, slow readers, idle clients
//! and the client limit. A control client runs SET/GET throughout each test and must never fail.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::common::cluster::TestCluster;
use crate::common::proxy::TestProxy;
use crate::common::raw::read_all;
use slotway::config::Config;

/// A client doing SET/GET in a loop for the whole test; `finish` fails the test if any failed.
struct Control {
    stop: Arc<AtomicBool>,
    /// Round trips completed so far.
    done: Arc<AtomicU64>,
    thread: Option<JoinHandle<Result<u64, String>>>,
}

impl Control {
    fn start(proxy: &TestProxy) -> Self {
        let mut con = proxy.client();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let done = Arc::new(AtomicU64::new(0));
        let counter = done.clone();
        let thread = std::thread::spawn(move || {
            let mut n = 0u64;
            while !flag.load(Ordering::Relaxed) {
                let key = format!("control:{}", n % 64);
                let val = format!("v{n}");
                redis::cmd("SET")
                    .arg(&key)
                    .arg(&val)
                    .query::<()>(&mut con)
                    .map_err(|e| format!("SET #{n}: {e}"))?;
                let got: String = redis::cmd("GET")
                    .arg(&key)
                    .query(&mut con)
                    .map_err(|e| format!("GET #{n}: {e}"))?;
                if got != val {
                    return Err(format!("GET #{n} returned {got:?}, expected {val:?}"));
                }
                n += 1;
                counter.store(n, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(2));
            }
            Ok(n)
        });
        Self {
            stop,
            done,
            thread: Some(thread),
        }
    }

    fn finish(mut self) {
        // A short test can end before the thread's first round trip on a loaded machine:
        // wait for one (or for the thread to fail) before stopping it.
        let end = Instant::now() + Duration::from_secs(30);
        let thread = self.thread.as_ref().expect("control thread");
        while self.done.load(Ordering::Relaxed) == 0
            && !thread.is_finished()
            && Instant::now() < end
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        self.stop.store(true, Ordering::Relaxed);
        let result = self.thread.take().unwrap().join().expect("control thread");
        let n = result.unwrap_or_else(|e| panic!("control client failed: {e}"));
        assert!(n > 0, "control client made no progress");
    }
}

impl Drop for Control {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn setup(tweak: impl FnOnce(&mut Config)) -> (TestCluster, TestProxy) {
    let cluster = TestCluster::start_with(3, 0);
    let proxy = TestProxy::start_with(cluster.seeds(), tweak);
    (cluster, proxy)
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// Sends `req` and reads exactly the reply bytes expected (the connection stays open).
fn roundtrip(s: &mut TcpStream, req: &[u8], expect: &[u8]) {
    s.write_all(req).unwrap();
    let mut got = vec![0u8; expect.len()];
    s.read_exact(&mut got).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(expect)
    );
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Waits until the descriptor count is back within `slack` of `baseline`.
fn wait_fds(baseline: usize, slack: usize, what: &str) {
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        let now = open_fds();
        if now <= baseline + slack {
            return;
        }
        assert!(
            Instant::now() < end,
            "{what}: {now} descriptors open, baseline {baseline}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn malformed_requests_get_the_same_bytes_as_from_redis_and_a_close() {
    let (cluster, proxy) = setup(|_| {});
    let control = Control::start(&proxy);
    let node: SocketAddr = cluster.node_addr(0).parse().unwrap();
    let cases: &[&[u8]] = &[
        b"*abc\r\n",
        b"*99999999999\r\n",
        b"*1\r\n$-5\r\n",
        b"*1\r\n$abc\r\n",
        b"*2\r\n$3\r\nGET\r\n$600000000\r\n",
        b"*1\r\n:5\r\n",
        b"*1\r\n*1\r\n$4\r\nPING\r\n",
        b"*2\r\n$4\r\nECHO\r\n*1\r\n$1\r\na\r\n",
        b"SET \"unbalanced\r\n",
        b"GET 'a'b\r\n",
        b"PING\r\n*1\r\n+x\r\n",
    ];
    for case in cases {
        let mut expected = connect(node);
        expected.write_all(case).unwrap();
        let (want, want_closed) = read_all(&mut expected, Duration::from_secs(2));
        let mut s = connect(proxy.addr());
        s.write_all(case).unwrap();
        let (got, closed) = read_all(&mut s, Duration::from_secs(2));
        let shown = String::from_utf8_lossy(case);
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(&want),
            "reply to {shown:?}"
        );
        assert!(
            String::from_utf8_lossy(&got).contains("Protocol error"),
            "{shown:?}"
        );
        assert_eq!(closed, want_closed, "close after {shown:?}");
        assert!(closed, "Redis closes after a protocol error ({shown:?})");
    }
    // Oversized header lines without a CR: "too big" errors, like Redis.
    let mut s = connect(proxy.addr());
    s.write_all(&[b'*'; 70_000]).unwrap();
    let (got, closed) = read_all(&mut s, Duration::from_secs(2));
    assert_eq!(got, b"-ERR Protocol error: too big mbulk count string\r\n");
    assert!(closed);
    control.finish();
}

#[test]
fn inline_commands_and_empty_or_negative_counts_are_served() {
    let (_cluster, proxy) = setup(|_| {});
    let control = Control::start(&proxy);
    let mut s = connect(proxy.addr());
    roundtrip(&mut s, b"PING\r\n", b"+PONG\r\n");
    roundtrip(&mut s, b"SET inline:k \"a b\"\r\n", b"+OK\r\n");
    roundtrip(&mut s, b"GET inline:k\n", b"$3\r\na b\r\n");
    // Blank lines, `*0` and a negative count are skipped without a reply, as in Redis.
    roundtrip(&mut s, b"\r\n*0\r\n*-5\r\nECHO x\r\n", b"$1\r\nx\r\n");
    roundtrip(&mut s, b"ECHO \"\\x41\\n\"\r\n", b"$2\r\nA\n\r\n");
    control.finish();
}

#[test]
fn declared_lengths_commit_no_memory_until_bytes_arrive() {
    let (_cluster, proxy) = setup(|_| {});
    let control = Control::start(&proxy);
    let before = rss_kib();
    // 200 clients each announce a bulk just under the 512 MiB limit and send 1 KiB of it.
    let mut clients = Vec::new();
    for i in 0..200 {
        let mut s = connect(proxy.addr());
        let head = format!("*3\r\n$3\r\nSET\r\n$7\r\nbig:{i:03}\r\n$536870000\r\n");
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(&[b'x'; 1024]).unwrap();
        clients.push(s);
    }
    std::thread::sleep(Duration::from_millis(500));
    let during = rss_kib();
    eprintln!("RSS KiB: before {before}, with 200 half-sent 512 MiB bulks {during}");
    assert!(
        during < before + 64 * 1024,
        "RSS grew from {before} KiB to {during} KiB on declared lengths alone"
    );
    // The half-sent requests are still pending: nobody got a reply.
    for s in &mut clients {
        let (got, closed) = read_all(s, Duration::from_millis(5));
        assert!(got.is_empty() && !closed);
    }
    drop(clients);
    control.finish();
}

#[test]
fn half_sent_requests_then_disconnect_leave_nothing_behind() {
    let (_cluster, proxy) = setup(|_| {});
    let control = Control::start(&proxy);
    std::thread::sleep(Duration::from_millis(200));
    let baseline = open_fds();
    let partials: &[&[u8]] = &[
        b"*3\r\n$3\r\nSET\r\n$1\r\nk",
        b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$100\r\nabc",
        b"*2\r\n",
        b"*2\r\n$3\r\nGE",
        b"GET somekey",
        b"*1",
    ];
    for _ in 0..50 {
        for p in partials {
            let mut s = connect(proxy.addr());
            s.write_all(p).unwrap();
        }
    }
    wait_fds(baseline, 8, "after half-sent requests");
    // Nothing half-sent was executed.
    let mut s = connect(proxy.addr());
    roundtrip(&mut s, b"*2\r\n$6\r\nEXISTS\r\n$1\r\nk\r\n", b":0\r\n");
    control.finish();
}

#[test]
fn a_client_dribbling_one_byte_at_a_time_is_served() {
    let (_cluster, proxy) = setup(|_| {});
    let control = Control::start(&proxy);
    let mut s = connect(proxy.addr());
    s.set_nodelay(true).unwrap();
    let req = b"*3\r\n$3\r\nSET\r\n$7\r\ndribble\r\n$5\r\nhello\r\n*2\r\n$3\r\nGET\r\n$7\r\ndribble\r\nPING\r\n";
    for b in req.iter() {
        s.write_all(&[*b]).unwrap();
        std::thread::sleep(Duration::from_millis(2));
    }
    let want = b"+OK\r\n$5\r\nhello\r\n+PONG\r\n";
    let mut got = vec![0u8; want.len()];
    s.read_exact(&mut got).unwrap();
    assert_eq!(got, want);
    control.finish();
}

#[test]
fn two_thousand_connections_opened_and_dropped_release_their_descriptors() {
    let (_cluster, proxy) = setup(|_| {});
    let control = Control::start(&proxy);
    std::thread::sleep(Duration::from_millis(200));
    let baseline = open_fds();
    let mut held = Vec::with_capacity(2000);
    for i in 0..2000 {
        let mut s = connect(proxy.addr());
        if i % 100 == 0 {
            roundtrip(&mut s, b"PING\r\n", b"+PONG\r\n");
        }
        held.push(s);
    }
    // Both ends of every connection live in this process while they are open.
    assert!(open_fds() >= baseline + 2000);
    drop(held);
    wait_fds(baseline, 8, "after 2,000 connections closed");
    control.finish();
}

#[test]
fn two_thousand_clients_announcing_512_mib_then_hanging_up() {
    let (_cluster, proxy) = setup(|_| {});
    let control = Control::start(&proxy);
    std::thread::sleep(Duration::from_millis(200));
    let fds = open_fds();
    let rss = rss_kib();
    let mut held = Vec::with_capacity(2000);
    for i in 0..2000 {
        let mut s = connect(proxy.addr());
        let head = format!("*3\r\n$3\r\nSET\r\n$8\r\nhuge:{i:03}\r\n$536870912\r\n");
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(&[b'z'; 512]).unwrap();
        held.push(s);
    }
    std::thread::sleep(Duration::from_millis(300));
    let peak = rss_kib();
    drop(held);
    wait_fds(fds, 8, "after 2,000 announcing clients hung up");
    std::thread::sleep(Duration::from_millis(300));
    let after = rss_kib();
    eprintln!("RSS KiB: baseline {rss}, 2,000 announcing clients {peak}, after {after}");
    assert!(
        peak < rss + 96 * 1024,
        "RSS {rss} KiB -> {peak} KiB while 2,000 clients announced 512 MiB"
    );
    assert!(
        after < rss + 48 * 1024,
        "RSS {rss} KiB -> {after} KiB after they hung up"
    );
    control.finish();
}

#[test]
fn a_slow_reader_is_disconnected_past_the_output_buffer_limit() {
    let (_cluster, proxy) = setup(|c| c.client.output_buffer_limit_bytes = 1 << 20);
    let control = Control::start(&proxy);
    let value = "v".repeat(256 << 10);
    let mut con = proxy.client();
    redis::cmd("SET")
        .arg("slow:big")
        .arg(&value)
        .query::<()>(&mut con)
        .unwrap();
    let mut s = connect(proxy.addr());
    // 400 replies of 256 KiB = 100 MiB, far more than the socket buffers hold.
    let mut req = Vec::new();
    for _ in 0..400 {
        req.extend_from_slice(b"*2\r\n$3\r\nGET\r\n$8\r\nslow:big\r\n");
    }
    s.write_all(&req).unwrap();
    // Do not read for a while: the proxy's buffer for us passes the limit and it hangs up.
    std::thread::sleep(Duration::from_secs(2));
    let (got, closed) = read_all(&mut s, Duration::from_secs(5));
    assert!(closed, "the slow reader was not disconnected");
    assert!(
        got.len() < 400 * (256 << 10),
        "all {} bytes were delivered",
        got.len()
    );
    // Normal clients with big replies that read them are fine.
    for _ in 0..20 {
        let got: String = redis::cmd("GET").arg("slow:big").query(&mut con).unwrap();
        assert_eq!(got.len(), value.len());
    }
    control.finish();
}

#[test]
fn idle_clients_are_closed_and_active_ones_kept() {
    let (_cluster, proxy) = setup(|c| c.client.idle_timeout_ms = 400);
    let control = Control::start(&proxy);
    let mut idle = connect(proxy.addr());
    roundtrip(&mut idle, b"PING\r\n", b"+PONG\r\n");
    let mut active = connect(proxy.addr());
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(1200) {
        roundtrip(&mut active, b"PING\r\n", b"+PONG\r\n");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (got, closed) = read_all(&mut idle, Duration::from_secs(2));
    assert!(got.is_empty() && closed, "idle client still open");
    roundtrip(&mut active, b"PING\r\n", b"+PONG\r\n");
    // A silent client is closed too, not only one that sent something first.
    let mut silent = connect(proxy.addr());
    let t = Instant::now();
    let (_, closed) = read_all(&mut silent, Duration::from_secs(3));
    assert!(closed);
    assert!(
        t.elapsed() >= Duration::from_millis(350),
        "{:?}",
        t.elapsed()
    );
    control.finish();
}

#[test]
fn clients_over_the_limit_are_refused_with_redis_error() {
    let (_cluster, proxy) = setup(|c| c.client.max_connections = 6);
    let control = Control::start(&proxy);
    // The control client holds one slot.
    let mut held = Vec::new();
    for _ in 0..5 {
        let mut s = connect(proxy.addr());
        roundtrip(&mut s, b"PING\r\n", b"+PONG\r\n");
        held.push(s);
    }
    let mut extra = connect(proxy.addr());
    let (got, closed) = read_all(&mut extra, Duration::from_secs(2));
    assert_eq!(got, b"-ERR max number of clients reached\r\n");
    assert!(closed);
    held.pop();
    // The slot frees once the session has ended.
    let end = Instant::now() + Duration::from_secs(5);
    loop {
        let mut s = connect(proxy.addr());
        s.write_all(b"PING\r\n").unwrap();
        let (got, _) = read_all(&mut s, Duration::from_millis(500));
        if got == b"+PONG\r\n" {
            break;
        }
        assert!(Instant::now() < end, "slot not released: {got:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    control.finish();
}

#[test]
fn a_pipeline_beyond_the_inflight_cap_completes_in_order() {
    let (_cluster, proxy) = setup(|c| c.client.max_inflight = 8);
    let control = Control::start(&proxy);
    let mut s = connect(proxy.addr());
    roundtrip(&mut s, b"SET cap:k x\r\n", b"+OK\r\n");
    let mut req = Vec::new();
    let mut want = Vec::new();
    // Forwarded GETs fill the in-flight slots; local ECHOs queue behind them in order.
    for i in 0..2000 {
        let v = i.to_string();
        req.extend_from_slice(b"*2\r\n$3\r\nGET\r\n$5\r\ncap:k\r\n");
        req.extend_from_slice(format!("*2\r\n$4\r\nECHO\r\n${}\r\n{v}\r\n", v.len()).as_bytes());
        want.extend_from_slice(b"$1\r\nx\r\n");
        want.extend_from_slice(format!("${}\r\n{v}\r\n", v.len()).as_bytes());
    }
    s.write_all(&req).unwrap();
    let mut got = vec![0u8; want.len()];
    s.read_exact(&mut got).unwrap();
    assert_eq!(got, want);
    control.finish();
}
