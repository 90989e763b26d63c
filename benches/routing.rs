//! Micro-benchmarks of routing: slot hashing of keys and the command-table lookup plus key
//! extraction that run once per request.
//!
//! Not registered in Cargo.toml until `cluster::slot` and the command table are on main;
//! then add the `[[bench]] name = "routing"` stanza (see benches/README.md) and run
//! `cargo bench --bench routing -- --warm-up-time 1 --measurement-time 3`.

// Test and benchmark code times itself with std::time::Instant and shares state through
// std::sync::Mutex outside any runtime; the one-clock and non-poisoning rules of clippy.toml are
// for the proxy's own code.
#![allow(clippy::disallowed_types)]

use std::hint::black_box;
use std::ops::Range;

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use slotway::cluster::slot::key_slot;
use slotway::command::CommandTable;
use slotway::protocol::{encode, RequestScanner, ScanLimits};

fn bench_key_slot(c: &mut Criterion) {
    let long = vec![b'k'; 1024];
    let long_tagged = [&b"{user:1000}"[..], &long].concat();
    let cases: [(&str, &[u8]); 5] = [
        ("short", b"foo"),
        ("key_32b", b"8xjx7vWrfPq54mKfFD3Y1CcjjofpnAcQ"),
        ("long_1k", &long),
        ("hash_tag", b"{user1000}.following"),
        ("hash_tag_long_1k", &long_tagged),
    ];
    let mut group = c.benchmark_group("key_slot");
    for (name, key) in cases {
        group.throughput(Throughput::Bytes(key.len() as u64));
        group.bench_function(name, |b| b.iter(|| key_slot(black_box(key))));
    }
    group.finish();
}

/// A request's raw bytes and argument ranges, as the session hands them to the router.
struct Scanned {
    name: &'static str,
    req: Vec<u8>,
    args: Vec<Range<usize>>,
    keys: usize,
}

fn scanned(name: &'static str, args: &[&[u8]], keys: usize) -> Scanned {
    let mut buf = BytesMut::new();
    encode::command(&mut buf, args);
    let mut scanner = RequestScanner::new(ScanLimits::default());
    let found = scanner.scan(&buf).ok().flatten().map(|r| r.len);
    assert_eq!(found, Some(buf.len()), "{name}: request does not scan");
    Scanned {
        name,
        req: buf.to_vec(),
        args: scanner.args().to_vec(),
        keys,
    }
}

fn requests() -> Vec<Scanned> {
    let pairs: Vec<Vec<u8>> = (0..10)
        .flat_map(|i| [format!("{{user}}:{i}").into_bytes(), b"value".to_vec()])
        .collect();
    let mut mset: Vec<&[u8]> = vec![b"MSET"];
    mset.extend(pairs.iter().map(Vec::as_slice));
    vec![
        scanned("get", &[b"GET", b"user:1000"], 1),
        scanned("mset_10", &mset, 10),
        scanned(
            "eval_2_keys",
            &[
                b"EVAL",
                b"return redis.call('GET', KEYS[1])",
                b"2",
                b"{u}:a",
                b"{u}:b",
                b"arg",
            ],
            2,
        ),
    ]
}

fn bench_route(c: &mut Criterion) {
    let table = CommandTable::builtin();
    let requests = requests();
    let mut keys = Vec::with_capacity(64);
    for r in &requests {
        let spec = table.resolve(&r.req, &r.args).expect("known command");
        keys.clear();
        spec.key_indices(&r.req, &r.args, &mut keys)
            .expect("keys extract");
        assert_eq!(keys.len(), r.keys, "{}", r.name);
    }

    let mut group = c.benchmark_group("resolve_key_indices");
    group.throughput(Throughput::Elements(1));
    for r in &requests {
        group.bench_function(r.name, |b| {
            b.iter(|| {
                keys.clear();
                if let Some(spec) = table.resolve(black_box(&r.req), black_box(&r.args)) {
                    let _ = spec.key_indices(&r.req, &r.args, &mut keys);
                }
                keys.len()
            })
        });
    }
    group.finish();

    // The whole per-request routing decision: lookup, key positions, slot of every key.
    let mut group = c.benchmark_group("route_to_slots");
    group.throughput(Throughput::Elements(1));
    for r in &requests {
        group.bench_function(r.name, |b| {
            b.iter(|| {
                keys.clear();
                let mut slots = 0u32;
                if let Some(spec) = table.resolve(black_box(&r.req), black_box(&r.args)) {
                    let _ = spec.key_indices(&r.req, &r.args, &mut keys);
                    for &k in &keys {
                        slots += u32::from(key_slot(&r.req[r.args[k].clone()]));
                    }
                }
                slots
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_key_slot, bench_route);
criterion_main!(benches);
