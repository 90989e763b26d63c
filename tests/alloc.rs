//! Heap allocations on the GET/SET path: after warm-up, the proxy's threads allocate (almost)
//! nothing per request — buffers are reused and reply slots recycled. A counting global
//! allocator counts allocations made on the proxy runtime's threads only.
//!
//! A test target of its own, not a module of `tests/it`: a `#[global_allocator]` is process-wide,
//! so in the shared binary it would wrap every other test's allocations too.

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
use std::cell::Cell;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::cluster::TestCluster;
use slotway::config::Config;
use slotway::proxy::Proxy;

/// Counts allocations made by threads that opted in.
struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static COUNTED: Cell<bool> = const { Cell::new(false) };
}

// SAFETY: every call is forwarded unchanged to the system allocator; the only addition is an
// atomic increment and a read of a const-initialised thread-local, neither of which allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTED.with(Cell::get) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTED.with(Cell::get) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Sends `batches` pipelined batches of `per_batch` requests, reading every reply.
fn run_load(addr: std::net::SocketAddr, batch: &[u8], reply_len: usize, batches: usize) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut buf = vec![0u8; reply_len];
    for _ in 0..batches {
        s.write_all(batch).unwrap();
        s.read_exact(&mut buf).unwrap();
    }
}

#[test]
fn get_and_set_allocate_nothing_per_request_after_warm_up() {
    let cluster = TestCluster::start();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .on_thread_start(|| COUNTED.with(|c| c.set(true)))
        .build()
        .unwrap();
    let proxy = rt
        .block_on(Proxy::start(Config {
            listen: "127.0.0.1:0".into(),
            seeds: cluster.seeds(),
            ..Config::default()
        }))
        .unwrap();
    let addr = proxy.local_addr();

    // 16 SETs and 16 GETs of one key per batch: one slot, one node, fixed-size replies.
    let mut batch = Vec::new();
    for _ in 0..16 {
        batch.extend_from_slice(b"*3\r\n$3\r\nSET\r\n$8\r\nalloc-k1\r\n$5\r\nvalue\r\n");
        batch.extend_from_slice(b"*2\r\n$3\r\nGET\r\n$8\r\nalloc-k1\r\n");
    }
    let reply_len = 16 * ("+OK\r\n".len() + "$5\r\nvalue\r\n".len());
    let routed = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(b"GET alloc-probe\r\n").unwrap();
        let mut b = [0u8; 5];
        if s.read_exact(&mut b).is_ok() && &b == b"$-1\r\n" {
            break;
        }
        assert!(std::time::Instant::now() < routed, "proxy never routed");
        std::thread::sleep(Duration::from_millis(50));
    }

    // Warm up: buffers, channel blocks and connection state reach their steady size.
    run_load(addr, &batch, reply_len, 2_000);
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    let batches = 2_000;
    run_load(addr, &batch, reply_len, batches);
    let allocations = ALLOCATIONS.load(Ordering::Relaxed) - before;
    let requests = (batches * 32) as f64;
    let per_request = allocations as f64 / requests;
    eprintln!("{allocations} allocations for {requests} requests ({per_request:.4} per request)");
    // Buffer growth (a new 16-64 KiB read buffer every so many KiB of traffic) is allowed;
    // anything per request would show as >= 1.
    assert!(per_request < 0.05, "{per_request} allocations per request");

    rt.block_on(proxy.shutdown(Duration::from_secs(5)));
}
