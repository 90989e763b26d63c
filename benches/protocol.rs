//! Micro-benchmarks of the hot-path RESP layer: the request and reply scanners, fed whole
//! and in 16 KiB reads, next to redis-protocol's `decode_range` on the same bytes (the
//! decoder the design notes say restarts from byte 0 on a partial frame), and the error
//! classifier on a `-MOVED` line.
//!
//! Run: `cargo bench --bench protocol -- --warm-up-time 1 --measurement-time 3`.

// Test and benchmark code times itself with std::time::Instant and shares state through
// std::sync::Mutex outside any runtime; the one-clock and non-poisoning rules of clippy.toml are
// for the proxy's own code.
#![allow(clippy::disallowed_types)]

use std::hint::black_box;

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use slotway::protocol::{classify_error, encode, RequestScanner, ResponseScanner, ScanLimits};

/// Size of one simulated socket read for the chunked cases.
const CHUNK: usize = 16 * 1024;
/// Size of the large value / bulk reply.
const MIB: usize = 1024 * 1024;
/// Nesting limit given to the reply scanner, as a backend connection would.
const MAX_DEPTH: usize = 64;

/// Encodes one request as a RESP array of bulk strings.
fn command(args: &[&[u8]]) -> Vec<u8> {
    let mut buf = BytesMut::new();
    encode::command(&mut buf, args);
    buf.to_vec()
}

/// `MSET k0 v0 … k{n-1} v{n-1}` with short keys and 16-byte values.
fn mset(n: usize) -> Vec<u8> {
    let pairs: Vec<(Vec<u8>, Vec<u8>)> = (0..n)
        .map(|i| (format!("key:{i:06}").into_bytes(), vec![b'v'; 16]))
        .collect();
    let mut args: Vec<&[u8]> = vec![b"MSET"];
    for (k, v) in &pairs {
        args.push(k);
        args.push(v);
    }
    command(&args)
}

/// `n` pipelined `GET key:<i>` requests in one buffer.
fn pipelined_gets(n: usize) -> Vec<u8> {
    (0..n)
        .flat_map(|i| command(&[b"GET", format!("key:{i:06}").as_bytes()]))
        .collect()
}

/// Scans `buf` as if it arrived in reads of `read` bytes: after each read every complete
/// request is consumed and the scanner resumes on the (grown) remainder, as a session does.
/// Returns the bytes consumed.
fn scan_requests(scanner: &mut RequestScanner, buf: &[u8], read: usize) -> usize {
    let (mut at, mut end) = (0, 0);
    while end < buf.len() {
        end = (end + read).min(buf.len());
        while let Ok(Some(req)) = scanner.scan(&buf[at..end]) {
            at += req.len;
        }
    }
    at
}

/// [`scan_requests`] for backend replies.
fn scan_replies(scanner: &mut ResponseScanner, buf: &[u8], read: usize) -> usize {
    let (mut at, mut end) = (0, 0);
    while end < buf.len() {
        end = (end + read).min(buf.len());
        while let Ok(Some(reply)) = scanner.scan(&buf[at..end]) {
            at += reply.len;
        }
    }
    at
}

/// Which redis-protocol decoder a baseline uses.
#[derive(Clone, Copy)]
enum Resp {
    V2,
    V3,
}

/// Length of the first frame per redis-protocol (ranges only, no copies), `None` if partial.
fn rp_frame_len(buf: &[u8], resp: Resp) -> Option<usize> {
    match resp {
        Resp::V2 => redis_protocol::resp2::decode::decode_range(buf)
            .ok()
            .flatten()
            .map(|f| f.1),
        Resp::V3 => redis_protocol::resp3::decode::complete::decode_range(buf)
            .ok()
            .flatten()
            .map(|f| f.1),
    }
}

/// redis-protocol's equivalent of [`scan_requests`]: every read re-parses the
/// pending frame from its first byte, as its decoder keeps no partial state.
fn rp_scan(buf: &[u8], read: usize, resp: Resp) -> usize {
    let (mut at, mut end) = (0, 0);
    while end < buf.len() {
        end = (end + read).min(buf.len());
        while let Some(len) = rp_frame_len(&buf[at..end], resp) {
            at += len;
        }
    }
    at
}

/// A named input with the throughput it is reported in.
struct Case {
    name: &'static str,
    bytes: Vec<u8>,
    /// Report requests (or replies) per second instead of bytes per second.
    elements: Option<u64>,
    /// Feed in reads of this many bytes instead of all at once.
    chunk: Option<usize>,
}

impl Case {
    fn bytes(name: &'static str, bytes: Vec<u8>) -> Self {
        Self {
            name,
            bytes,
            elements: None,
            chunk: None,
        }
    }

    fn chunked(mut self, chunk: usize) -> Self {
        self.chunk = Some(chunk);
        self
    }

    fn elements(mut self, n: u64) -> Self {
        self.elements = Some(n);
        self
    }

    /// The read size: the chunk, or the whole input in one read.
    fn read_size(&self) -> usize {
        self.chunk.unwrap_or(self.bytes.len())
    }

    fn throughput(&self) -> Throughput {
        match self.elements {
            Some(n) => Throughput::Elements(n),
            None => Throughput::Bytes(self.bytes.len() as u64),
        }
    }
}

fn request_cases() -> Vec<Case> {
    let big = command(&[b"SET", b"key:big", &vec![b'x'; MIB]]);
    let huge = command(&[b"SET", b"key:big", &vec![b'x'; 4 * MIB]]);
    let mset_1000 = mset(1000);
    vec![
        Case::bytes("get", command(&[b"GET", b"key:000001"])),
        Case::bytes("set_100b", command(&[b"SET", b"key:000001", &[b'x'; 100]])),
        Case::bytes("mset_10", mset(10)),
        Case::bytes("set_1mib/whole", big.clone()),
        Case::bytes("set_1mib/chunks_16k", big).chunked(CHUNK),
        Case::bytes("set_4mib/chunks_16k", huge).chunked(CHUNK),
        Case::bytes("pipeline_64_get", pipelined_gets(64)).elements(64),
        Case::bytes("mset_1000/whole", mset_1000.clone()),
        Case::bytes("mset_1000/chunks_16k", mset_1000.clone()).chunked(CHUNK),
        Case::bytes("mset_1000/chunks_1k", mset_1000).chunked(1024),
    ]
}

fn bulk(data: &[u8]) -> Vec<u8> {
    let mut out = format!("${}\r\n", data.len()).into_bytes();
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
    out
}

/// A `HELLO 3`-like reply whose `modules` entry is an array of maps with a nested map.
fn resp3_nested_map() -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(
        b"%7\r\n$6\r\nserver\r\n$5\r\nredis\r\n$7\r\nversion\r\n$6\r\n7.0.15\r\n",
    );
    out.extend_from_slice(
        b"$5\r\nproto\r\n:3\r\n$2\r\nid\r\n:42\r\n$4\r\nmode\r\n$7\r\ncluster\r\n",
    );
    out.extend_from_slice(b"$4\r\nrole\r\n$6\r\nmaster\r\n$7\r\nmodules\r\n*2\r\n");
    for name in ["search", "json"] {
        out.extend_from_slice(b"%3\r\n+name\r\n");
        out.extend_from_slice(&bulk(name.as_bytes()));
        out.extend_from_slice(b"+ver\r\n:20612\r\n+args\r\n%2\r\n+a\r\n#t\r\n+b\r\n,1.5\r\n");
    }
    out
}

fn reply_cases() -> Vec<Case> {
    let big = bulk(&vec![b'x'; MIB]);
    let array_10: Vec<u8> = b"*10\r\n"
        .iter()
        .copied()
        .chain((0..10).flat_map(|_| bulk(&[b'v'; 16])))
        .collect();
    vec![
        Case::bytes("ok", b"+OK\r\n".to_vec()),
        Case::bytes("bulk_100b", bulk(&[b'x'; 100])),
        Case::bytes("array_10_bulks", array_10),
        Case::bytes("bulk_1mib/whole", big.clone()),
        Case::bytes("bulk_1mib/chunks_16k", big).chunked(CHUNK),
        Case::bytes("resp3_nested_map", resp3_nested_map()),
    ]
}

fn bench_requests(c: &mut Criterion) {
    let cases = request_cases();
    let mut group = c.benchmark_group("request_scan");
    let mut scanner = RequestScanner::new(ScanLimits::default());
    for case in &cases {
        let read = case.read_size();
        let consumed = scan_requests(&mut scanner, &case.bytes, read);
        assert_eq!(consumed, case.bytes.len(), "{}", case.name);
        group.throughput(case.throughput());
        group.bench_function(case.name, |b| {
            b.iter(|| scan_requests(&mut scanner, black_box(&case.bytes), read))
        });
    }
    group.finish();

    let mut group = c.benchmark_group("request_scan_redis_protocol");
    for case in &cases {
        let read = case.read_size();
        assert_eq!(rp_scan(&case.bytes, read, Resp::V2), case.bytes.len());
        group.throughput(case.throughput());
        group.bench_function(case.name, |b| {
            b.iter(|| rp_scan(black_box(&case.bytes), read, Resp::V2))
        });
    }
    group.finish();
}

fn bench_replies(c: &mut Criterion) {
    let cases = reply_cases();
    let mut group = c.benchmark_group("reply_scan");
    let mut scanner = ResponseScanner::new(MAX_DEPTH);
    for case in &cases {
        let read = case.read_size();
        let consumed = scan_replies(&mut scanner, &case.bytes, read);
        assert_eq!(consumed, case.bytes.len(), "{}", case.name);
        group.throughput(case.throughput());
        group.bench_function(case.name, |b| {
            b.iter(|| scan_replies(&mut scanner, black_box(&case.bytes), read))
        });
    }
    group.finish();

    let mut group = c.benchmark_group("reply_scan_redis_protocol");
    for case in &cases {
        let resp = if case.name.starts_with("resp3") {
            Resp::V3
        } else {
            Resp::V2
        };
        let read = case.read_size();
        assert_eq!(rp_scan(&case.bytes, read, resp), case.bytes.len());
        group.throughput(case.throughput());
        group.bench_function(case.name, |b| {
            b.iter(|| rp_scan(black_box(&case.bytes), read, resp))
        });
    }
    group.finish();
}

fn bench_classify(c: &mut Criterion) {
    let mut group = c.benchmark_group("classify_error");
    group.throughput(Throughput::Elements(1));
    for (name, line) in [
        ("moved", &b"-MOVED 3999 127.0.0.1:6381\r\n"[..]),
        (
            "moved_hostname",
            b"-MOVED 16383 redis-2.redis.default.svc:6379\r\n",
        ),
        ("other", b"-ERR unknown command 'FOO'\r\n"),
    ] {
        group.bench_with_input(BenchmarkId::from_parameter(name), line, |b, line| {
            b.iter(|| classify_error(black_box(line)))
        });
    }
    group.finish();
}

criterion_group!(benches, bench_requests, bench_replies, bench_classify);
criterion_main!(benches);
