//! What the proxy keeps of a client's input is bounded in bytes and owns its memory: script
//! bodies (`commands.script_cache_bytes`), slow-log entries and subscription names (copies,
//! never views into the request buffers), and replies piling up behind a slow request
//! (counted with the write buffer against `client.output_buffer_limit_bytes`). A live-heap
//! counter (this binary's global allocator) shows the request buffers are not kept alive.
//!
//! A test target of its own, not a module of `tests/it`: the live-heap counter is a process-wide
//! `#[global_allocator]`, which another test running in the same process would move.

// Test and benchmark code times itself with std::time::Instant and shares state through
// std::sync::Mutex outside any runtime; the one-clock and non-poisoning rules of clippy.toml are
// for the proxy's own code.
#![allow(clippy::disallowed_types)]
// The counting allocator below is unsafe by its trait's contract; each block states why it holds.
#![allow(unsafe_code)]

// The shared harness of tests/it, by path: this target is its own process (see above) and
// uses only part of the harness.
#[allow(dead_code)]
#[path = "it/common/mod.rs"]
mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write;
use std::net::TcpStream;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use common::cluster::{wait_until, TestCluster};
use common::proxy::TestProxy;
use common::raw::{read_all, Raw};
use slotway::protocol::encode;

/// Counts the bytes currently allocated, by every thread.
struct LiveBytes;

static LIVE: AtomicIsize = AtomicIsize::new(0);

fn signed(n: usize) -> isize {
    isize::try_from(n).unwrap_or(isize::MAX)
}

// SAFETY: every call is forwarded unchanged to the system allocator; the only addition is an
// atomic add, which does not allocate.
unsafe impl GlobalAlloc for LiveBytes {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as our caller's.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            LIVE.fetch_add(signed(layout.size()), Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(signed(layout.size()), Ordering::Relaxed);
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_add(signed(new_size) - signed(layout.size()), Ordering::Relaxed);
        }
        p
    }
}

#[global_allocator]
static GLOBAL: LiveBytes = LiveBytes;

fn live_bytes() -> isize {
    LIVE.load(Ordering::Relaxed)
}

const BODY_BYTES: usize = 256 << 10;
const CACHE_BYTES: usize = 1 << 20;

/// A distinct script body of exactly `BODY_BYTES` returning `n`.
fn body(n: usize) -> String {
    let mut b = format!("return {n} --");
    b.extend(std::iter::repeat('x').take(BODY_BYTES - b.len()));
    b
}

#[test]
fn large_eval_bodies_are_bounded_in_bytes_and_the_slow_log_keeps_copies() {
    let cluster = TestCluster::start_with(3, 0);
    let proxy = TestProxy::start_with(cluster.seeds(), |c| {
        c.commands.script_cache_bytes = CACHE_BYTES;
        c.metrics.slowlog_threshold_us = 0;
        c.metrics.slowlog_max_len = 128;
    });
    let shared = proxy.shared().clone();
    let scripts = &shared.scripts;
    let slowlog = &shared.metrics.slowlog;

    // Warm-up at the same sizes: connection buffers reach their steady size before the
    // baseline, so what is left over afterwards is what the caches kept.
    let mut admin = Raw::connect(proxy.addr());
    for n in 0..4 {
        assert_eq!(
            admin.text(&["EVAL", &body(1000 + n), "0"]),
            format!(":{}\r\n", 1000 + n)
        );
    }
    assert_eq!(admin.text(&["SCRIPT", "FLUSH"]), "+OK\r\n");
    assert_eq!(admin.text(&["SLOWLOG", "RESET"]), "+OK\r\n");
    let baseline = live_bytes();

    {
        let mut client = Raw::connect(proxy.addr());
        for n in 0..60 {
            assert_eq!(client.text(&["EVAL", &body(n), "0"]), format!(":{n}\r\n"));
            let held = scripts.held_bytes();
            assert!(held <= CACHE_BYTES, "script cache holds {held} bytes");
        }
        // It still remembers what fits: the most recent four bodies.
        assert_eq!(scripts.len(), CACHE_BYTES / BODY_BYTES);
        assert_eq!(scripts.held_bytes(), CACHE_BYTES);
    }

    // The slow log logged every EVAL, each argument cut to 128 bytes and copied.
    assert!(slowlog.len() >= 60, "{} slow-log entries", slowlog.len());
    let logged = slowlog.held_bytes();
    assert!(logged < 64 << 10, "the slow log holds {logged} bytes");

    assert_eq!(admin.text(&["SCRIPT", "FLUSH"]), "+OK\r\n");
    assert!(scripts.is_empty());
    assert_eq!(scripts.held_bytes(), 0);

    // 15 MiB of requests went through; with the client gone and the cache flushed, nothing
    // may still hold them (a slow-log entry that is a view into a request keeps the whole
    // request buffer alive).
    wait_until(
        Duration::from_secs(30),
        "the proxy to give back the request buffers",
        || live_bytes() - baseline < 4 << 20,
    );
    eprintln!(
        "heap after the client left: {} KiB over the baseline",
        (live_bytes() - baseline) / 1024
    );
}

/// Stops `node` from answering anyone for `ms` milliseconds (`CLIENT PAUSE`): a slow shard
/// that, unlike a busy script, leaves the CPU to the rest of the test.
fn pause(node: &mut Raw, ms: u32) {
    assert_eq!(node.text(&["CLIENT", "PAUSE", &ms.to_string()]), "+OK\r\n");
}

fn command(out: &mut BytesMut, args: &[&str]) {
    let refs: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
    encode::command(out, &refs);
}

/// Sends `pipeline` on a new connection and checks the proxy hangs up without a byte of
/// reply: the first reply owed is the slow one, so anything at all means later replies were
/// kept, past the limit, until it came.
fn assert_cut_off_before_any_reply(proxy: &TestProxy, pipeline: &[u8], what: &str) {
    let mut s = TcpStream::connect(proxy.addr()).unwrap();
    s.write_all(pipeline).unwrap();
    let (got, closed) = read_all(&mut s, Duration::from_secs(20));
    assert!(closed, "{what}: the client was not disconnected");
    assert!(
        got.is_empty(),
        "{what}: {} bytes reached the client",
        got.len()
    );
}

#[test]
fn replies_piling_up_behind_a_slow_request_count_against_the_output_limit() {
    const LIMIT: usize = 1 << 20;
    let cluster = TestCluster::start_with(3, 0);
    let proxy = TestProxy::start_with(cluster.seeds(), |c| {
        c.client.output_buffer_limit_bytes = LIMIT;
    });
    // A slow shard and another one.
    let slow = "{slow}k";
    let mut slow_node = Raw::connect(cluster.primary_for_key(slow));
    let fast = (0..)
        .map(|i| format!("{{fast{i}}}big"))
        .find(|k| cluster.primary_for_key(k) != cluster.primary_for_key(slow))
        .unwrap();
    let value = "v".repeat(100 << 10);
    let mut admin = Raw::connect(proxy.addr());
    assert_eq!(admin.text(&["SET", &fast, &value]), "+OK\r\n");
    let get_reply = format!("${}\r\n{value}\r\n", value.len());

    // Under the limit: 800 KiB waiting behind a GET to a shard paused for a second reach the
    // client, round after round (the count goes down again as replies are written).
    let mut client = Raw::connect(proxy.addr());
    for _ in 0..3 {
        pause(&mut slow_node, 1000);
        let mut pipeline = BytesMut::new();
        command(&mut pipeline, &["GET", slow]);
        for _ in 0..8 {
            command(&mut pipeline, &["GET", &fast]);
        }
        client.send_bytes(&pipeline);
        assert_eq!(client.read_reply(), b"$-1\r\n");
        for _ in 0..8 {
            assert!(client.read_reply() == get_reply.as_bytes());
        }
    }

    // Over it: 3 MiB of GET replies behind a GET to the paused shard. The client is cut off
    // before the first reply it is owed exists.
    pause(&mut slow_node, 4000);
    let mut pipeline = BytesMut::new();
    command(&mut pipeline, &["GET", slow]);
    for _ in 0..30 {
        command(&mut pipeline, &["GET", &fast]);
    }
    assert_cut_off_before_any_reply(&proxy, &pipeline, "GETs");
    assert_eq!(slow_node.text(&["CLIENT", "UNPAUSE"]), "+OK\r\n");

    // Parts of a split request count too: an MGET's 2 MiB from the fast shard wait for its
    // part on the paused one.
    pause(&mut slow_node, 4000);
    let mut mget = vec!["MGET", slow];
    mget.extend(std::iter::repeat(fast.as_str()).take(20));
    let mut pipeline = BytesMut::new();
    command(&mut pipeline, &mget);
    assert_cut_off_before_any_reply(&proxy, &pipeline, "MGET");
    assert_eq!(slow_node.text(&["CLIENT", "UNPAUSE"]), "+OK\r\n");

    // The client that stayed within the limit is still served.
    assert!(client.text(&["GET", &fast]).as_bytes() == get_reply.as_bytes());
    assert_eq!(client.text(&["GET", slow]), "$-1\r\n");
}

#[test]
fn subscriptions_keep_their_own_copy_of_channel_names() {
    const CLIENTS: usize = 20;
    let cluster = TestCluster::start_with(3, 0);
    let proxy = TestProxy::start(cluster.seeds());
    let value = "v".repeat(512 << 10);
    // A large request and a subscription read together: the name must not be a view into
    // the buffer both were read into, or each subscriber keeps half a MiB alive.
    let subscribe = |n: usize| {
        let mut s = Raw::connect(proxy.addr());
        let mut pipeline = BytesMut::new();
        command(&mut pipeline, &["SET", &format!("big{n}"), &value]);
        command(&mut pipeline, &["SUBSCRIBE", &format!("chan{n}")]);
        s.send_bytes(&pipeline);
        assert_eq!(s.read_reply(), b"+OK\r\n");
        let confirm = format!(
            "*3\r\n$9\r\nsubscribe\r\n${}\r\nchan{n}\r\n:1\r\n",
            4 + n.to_string().len()
        );
        assert_eq!(String::from_utf8_lossy(&s.read_reply()), confirm);
        s
    };
    // Warm-up: the dedicated pool and buffers reach their size before the baseline.
    drop((0..2).map(|n| subscribe(1000 + n)).collect::<Vec<_>>());
    let baseline = live_bytes();
    let clients: Vec<Raw> = (0..CLIENTS).map(subscribe).collect();
    let grown = live_bytes() - baseline;
    eprintln!("{CLIENTS} subscribers hold {} KiB", grown / 1024);
    assert!(
        grown < 4 << 20,
        "{CLIENTS} subscribers hold {} KiB: their names keep the request buffers alive",
        grown / 1024
    );
    // They are real subscriptions (PUBLISH counts the receivers of the node it reached only).
    let mut publisher = Raw::connect(proxy.addr());
    assert!(publisher.text(&["PUBLISH", "chan3", "hi"]).starts_with(':'));
    let mut third = clients.into_iter().nth(3).unwrap();
    assert_eq!(
        third.read_reply(),
        b"*3\r\n$7\r\nmessage\r\n$5\r\nchan3\r\n$2\r\nhi\r\n"
    );
}

#[test]
fn requests_waiting_behind_a_slow_request_pause_reading_at_the_byte_bound() {
    const BOUND: usize = 1 << 20;
    const SETS: usize = 60;
    let cluster = TestCluster::start_with(3, 0);
    let proxy = TestProxy::start_with(cluster.seeds(), |c| {
        c.client.max_inflight_bytes = BOUND;
    });
    let slow = "{slow}k";
    let mut slow_node = Raw::connect(cluster.primary_for_key(slow));
    let value = "v".repeat(256 << 10);
    let mut admin = Raw::connect(proxy.addr());
    // Warm-up: the connections to the slow shard have carried requests of this size.
    assert_eq!(admin.text(&["SET", "{slow}w", &value]), "+OK\r\n");

    // 15 MiB of writes to a shard paused for 2 s: they cannot be answered before it resumes,
    // so past 1 MiB the proxy must stop reading them rather than hold them all.
    let mut pipeline = BytesMut::new();
    command(&mut pipeline, &["GET", slow]);
    for n in 0..SETS {
        command(&mut pipeline, &["SET", &format!("{{slow}}v{n}"), &value]);
    }
    let mut client = Raw::connect(proxy.addr());
    let mut writer = client.writer();
    pause(&mut slow_node, 2000);
    // The pipeline itself is the test's, not the proxy's.
    let baseline = live_bytes();
    let sender = std::thread::spawn(move || writer.write_all(&pipeline).unwrap());
    let replies = std::thread::spawn(move || {
        let first = client.read_reply();
        let rest: Vec<Vec<u8>> = (0..SETS).map(|_| client.read_reply()).collect();
        (first, rest)
    });
    let mut most = 0;
    // Sampled (not a wait for anything) until the last reply is in.
    while !replies.is_finished() {
        most = most.max(live_bytes() - baseline);
        std::thread::sleep(Duration::from_millis(1));
    }
    sender.join().unwrap();
    let (first, rest) = replies.join().unwrap();
    assert_eq!(first, b"$-1\r\n");
    assert!(
        rest.iter().all(|r| r == b"+OK\r\n"),
        "every SET is answered"
    );
    eprintln!("heap grew by at most {} KiB", most / 1024);
    assert!(
        most < 4 << 20,
        "the proxy held {} KiB of a client's requests (bound {} KiB)",
        most / 1024,
        BOUND / 1024
    );
}
