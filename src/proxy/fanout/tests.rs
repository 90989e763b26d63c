use std::ops::Range;
use std::sync::Arc;

use bytes::BytesMut;

use super::info::NODE_REQUEST;
use super::merge::Combine;
use super::*;
use crate::backend::{Backends, ConnSettings};
use crate::cluster::slot::key_slot;
use crate::cluster::topology::Health;
use crate::cluster::topology::{Node, Role, Shard, Topology};
use crate::command::CommandTable;
use crate::command::Merge;
use crate::protocol::encode;
use crate::proxy::router::Router;

/// A router over three shards (listed out of slot order) with one replica each. The addresses
/// are closed ports: pools are created but nothing is sent in these tests.
fn router() -> Router {
    let node = |i: u16, role| Node {
        id: format!("{i:040}"),
        addr: format!("127.0.0.1:{}", 1 + i).parse().unwrap(),
        endpoint: "127.0.0.1".into(),
        port: 1 + i,
        role,
        health: Health::Online,
    };
    let mut nodes: Vec<Node> = (0..3).map(|i| node(i, Role::Primary)).collect();
    nodes.extend((3..6).map(|i| node(i, Role::Replica)));
    nodes[5].health = Health::Failed;
    let shard = |p: usize, slots: (u16, u16)| Shard {
        primary: p,
        replicas: vec![p + 3],
        slots: vec![slots],
    };
    let topo = Topology::new(
        nodes,
        vec![
            shard(0, (10923, 16383)),
            shard(1, (0, 5460)),
            shard(2, (5461, 10922)),
        ],
    )
    .unwrap();
    let settings = ConnSettings {
        addr: "127.0.0.1:1".parse().unwrap(),
        connect_timeout: std::time::Duration::from_millis(100),
        command_timeout: std::time::Duration::from_millis(100),
        backoff_min: std::time::Duration::from_secs(60),
        backoff_max: std::time::Duration::from_secs(60),
        queue_depth: 4,
        max_reply_bytes: 1 << 20,
        auth: None,
        readonly: false,
        metrics: false,
        wait: None,
        tls: None,
    };
    let router = Router::new(
        Arc::new(Backends::new(settings, 1)),
        CommandTable::builtin(),
        crate::config::ReadPolicy::Primary,
    );
    router.install(&Arc::new(topo));
    router
}

fn request(args: &[&str]) -> (Bytes, Vec<Range<usize>>) {
    let mut raw = BytesMut::new();
    let refs: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
    encode::command(&mut raw, &refs);
    let raw = raw.freeze();
    let mut scanner = crate::protocol::RequestScanner::new(Default::default());
    scanner.scan(&raw).unwrap().unwrap();
    let ranges = scanner.args().to_vec();
    (raw, ranges)
}

fn wire(args: &[&str]) -> Bytes {
    request(args).0
}

fn run(fan: Fan, config: &Config, args: &[&str], keys: &[usize]) -> Result<Planned, String> {
    let router = router();
    let table = router.table();
    let scripts = ScriptCache::new(8, 1 << 20);
    let ctx = Ctx {
        table: table.as_ref().unwrap(),
        config,
        scripts: &scripts,
        written: &[],
        tcp_port: 7000,
        resp3: false,
    };
    let (raw, ranges) = request(args);
    plan(fan, &ctx, &Request::unresolved(&raw, &ranges), keys)
}

fn parts(p: Result<Planned, String>) -> (Vec<Part>, Reduce) {
    match p {
        Ok(Planned::Parts(parts, reduce)) => (parts, reduce),
        other => panic!("expected parts, got {other:?}"),
    }
}

#[tokio::test]
async fn mget_splits_per_slot_and_remembers_client_order() {
    let split = Fan::Split {
        merge: Merge::Values,
        readonly: true,
    };
    let (p, reduce) = parts(run(
        split,
        &Config::default(),
        &["MGET", "{x}1", "{y}1", "{x}2"],
        &[1, 2, 3],
    ));
    assert_eq!(p.len(), 2);
    assert_eq!(p[0].raw, wire(&["MGET", "{x}1", "{x}2"]));
    assert_eq!(p[0].target, Target::Slot(key_slot(b"x")));
    assert_eq!(p[1].raw, wire(&["MGET", "{y}1"]));
    assert!(p.iter().all(|p| p.readonly));
    assert_eq!(reduce, Reduce::Values(vec![(0, 0), (1, 0), (0, 1)]));
}

#[tokio::test]
async fn a_split_over_many_slots_keeps_first_seen_slot_order_and_key_order() {
    // 200 keys over 50 hash tags, each tag seen four times: past the linear slot search.
    let keys: Vec<String> = (0..200).map(|i| format!("{{t{}}}k{i}", i % 50)).collect();
    let mut args = vec!["MGET"];
    args.extend(keys.iter().map(String::as_str));
    let indices: Vec<usize> = (1..=keys.len()).collect();
    let split = Fan::Split {
        merge: Merge::Values,
        readonly: true,
    };
    let (p, reduce) = parts(run(split, &Config::default(), &args, &indices));
    // The reference: group by slot in first-seen order, keys in the client's order.
    let mut slots: Vec<u16> = Vec::new();
    let mut groups: Vec<Vec<&str>> = Vec::new();
    let mut order = Vec::new();
    for k in &keys {
        let slot = key_slot(k.as_bytes());
        let part = slots.iter().position(|&s| s == slot).unwrap_or_else(|| {
            slots.push(slot);
            groups.push(Vec::new());
            slots.len() - 1
        });
        order.push((part as u32, groups[part].len() as u32));
        groups[part].push(k);
    }
    assert_eq!(p.len(), 50);
    for ((part, slot), group) in p.iter().zip(&slots).zip(&groups) {
        let mut want = vec!["MGET"];
        want.extend(group);
        assert_eq!(part.raw, wire(&want));
        assert_eq!(part.target, Target::Slot(*slot));
    }
    assert_eq!(reduce, Reduce::Values(order));
}

#[tokio::test]
async fn mset_keeps_pairs_together() {
    let split = Fan::Split {
        merge: Merge::AllOk,
        readonly: false,
    };
    let (p, reduce) = parts(run(
        split,
        &Config::default(),
        &["mset", "{x}1", "v1", "{y}1", "v2", "{x}2", "v3"],
        &[1, 3, 5],
    ));
    assert_eq!(p[0].raw, wire(&["mset", "{x}1", "v1", "{x}2", "v3"]));
    assert_eq!(p[1].raw, wire(&["mset", "{y}1", "v2"]));
    assert_eq!(reduce, Reduce::Combine(Combine::AllOk));
}

#[tokio::test]
async fn unevenly_spaced_keys_are_not_split() {
    let split = Fan::Split {
        merge: Merge::SumInt,
        readonly: false,
    };
    let err = run(split, &Config::default(), &["del", "a", "b", "c"], &[1, 2]).unwrap_err();
    assert_eq!(err, "CROSSSLOT Keys in request don't hash to the same slot");
}

#[tokio::test]
async fn all_primaries_in_first_slot_order() {
    let fan = Fan::AllPrimaries {
        combine: Combine::SumInt,
        readonly: true,
    };
    let (p, reduce) = parts(run(fan, &Config::default(), &["DBSIZE"], &[]));
    let targets: Vec<Target> = p.iter().map(|p| p.target).collect();
    assert_eq!(
        targets,
        vec![Target::Slot(0), Target::Slot(5461), Target::Slot(10923)]
    );
    assert!(p.iter().all(|p| p.raw == wire(&["DBSIZE"])));
    assert_eq!(reduce, Reduce::Combine(Combine::SumInt));
}

#[tokio::test]
async fn config_set_is_denied_unless_allowed() {
    let args = ["CONFIG", "SET", "maxmemory", "0"];
    let err = run(Fan::AllNodes, &Config::default(), &args, &[]).unwrap_err();
    assert!(err.contains("commands.allow_config_set"), "{err}");
    let mut config = Config::default();
    config.commands.allow_config_set = true;
    let (p, _) = parts(run(Fan::AllNodes, &config, &args, &[]));
    // Six nodes, one of them failed.
    assert_eq!(p.len(), 5);
    assert!(p.iter().all(|p| matches!(p.target, Target::Node(_))));
}

#[tokio::test]
async fn wait_caps_its_timeout_and_asks_every_primary_without_writes() {
    let mut config = Config::default();
    config.backend.command_timeout_ms = 1000;
    let (p, reduce) = parts(run(Fan::Wait, &config, &["WAIT", "1", "0"], &[]));
    assert_eq!(p.len(), 3);
    assert!(p.iter().all(|p| p.raw == wire(&["WAIT", "1", "500"])));
    assert_eq!(reduce, Reduce::Combine(Combine::MinInt));
    let (p, _) = parts(run(Fan::Wait, &config, &["WAIT", "1", "20"], &[]));
    assert_eq!(p[0].raw, wire(&["WAIT", "1", "20"]));
    let (p, _) = parts(run(Fan::Wait, &config, &["WAIT", "x", "20"], &[]));
    assert_eq!(p[0].raw, wire(&["WAIT", "x", "20"]));
    // WAITAOF: the timeout is its third number, and the counts merge element-wise.
    let (p, reduce) = parts(run(Fan::Wait, &config, &["WAITAOF", "1", "2", "0"], &[]));
    assert_eq!(p.len(), 3);
    assert_eq!(p[0].raw, wire(&["WAITAOF", "1", "2", "500"]));
    assert_eq!(reduce, Reduce::Combine(Combine::MinArrays));
    let (p, _) = parts(run(Fan::Wait, &config, &["WAITAOF", "1", "20"], &[]));
    assert_eq!(p[0].raw, wire(&["WAITAOF", "1", "20"]));
}

#[tokio::test]
async fn info_asks_nodes_only_when_needed() {
    let config = Config::default();
    match run(Fan::Info, &config, &["INFO", "clients"], &[]) {
        Ok(Planned::Reply(r)) => assert!(r.windows(9).any(|w| w == b"# Clients")),
        other => panic!("{other:?}"),
    }
    let (p, _) = parts(run(Fan::Info, &config, &["INFO", "server"], &[]));
    assert_eq!(p.len(), 1);
    let (p, _) = parts(run(Fan::Info, &config, &["INFO"], &[]));
    assert_eq!(p.len(), 3);
    assert_eq!(p[0].raw, Bytes::from_static(NODE_REQUEST));
}

#[tokio::test]
async fn scan_goes_to_one_shard() {
    let (p, reduce) = parts(run(Fan::Scan, &Config::default(), &["SCAN", "0"], &[]));
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].target, Target::Slot(0));
    assert!(matches!(reduce, Reduce::Scan(_)));
}

#[test]
fn fanout_merges_once_every_part_is_in() {
    let parts = vec![
        Part {
            raw: wire(&["DEL", "a"]),
            target: Target::Slot(1),
            readonly: false,
        },
        Part {
            raw: wire(&["DEL", "b"]),
            target: Target::Node("127.0.0.1:1".parse().unwrap()),
            readonly: false,
        },
    ];
    let (mut f, sends) = Fanout::new(parts, Reduce::Combine(Combine::SumInt));
    assert_eq!(sends.len(), 2);
    assert_eq!(f.waiting(0).unwrap().slot, Some(1));
    // A node-bound part has no retry budget.
    assert!(f.waiting(1).unwrap().deadline.is_some());
    assert_eq!(f.complete(1, Bytes::from_static(b":1\r\n")), None);
    assert!(f.waiting(1).is_none());
    assert_eq!(
        f.complete(1, Bytes::from_static(b":5\r\n")),
        None,
        "duplicate"
    );
    assert_eq!(
        f.complete(0, Bytes::from_static(b":2\r\n")),
        Some(Bytes::from_static(b":3\r\n"))
    );
    assert!(sends[0].1, "a DEL part writes");
}

fn node(i: u16) -> Target {
    Target::Node(format!("127.0.0.1:{}", 1 + i).parse().unwrap())
}

#[tokio::test]
async fn pubsub_numsub_asks_every_live_node() {
    let fan = Fan::PubSub(introspect::Query::NumSub);
    let (p, reduce) = parts(run(
        fan,
        &Config::default(),
        &["PUBSUB", "NUMSUB", "a", "b"],
        &[],
    ));
    // Node 5 (a replica) is failed: not asked.
    let targets: Vec<Target> = p.iter().map(|p| p.target).collect();
    assert_eq!(targets, [node(0), node(1), node(2), node(3), node(4)]);
    assert!(p
        .iter()
        .all(|p| p.raw == wire(&["PUBSUB", "NUMSUB", "a", "b"])));
    assert_eq!(
        reduce,
        Reduce::NumSub(vec![Bytes::from_static(b"a"), Bytes::from_static(b"b")])
    );
    let none = run(fan, &Config::default(), &["PUBSUB", "NUMSUB"], &[]);
    assert_eq!(none, Ok(Planned::Reply(Bytes::from_static(b"*0\r\n"))));
}

#[tokio::test]
async fn pubsub_shardnumsub_asks_each_channels_shard() {
    let fan = Fan::PubSub(introspect::Query::ShardNumSub);
    // Slots 8363 (shard of node 2), 3443 (node 1, replica 4), 12182 (node 0, replica 3).
    let (p, _) = parts(run(
        fan,
        &Config::default(),
        &[
            "PUBSUB",
            "SHARDNUMSUB",
            "foo{}{bar}",
            "{user1000}.following",
            "foo",
        ],
        &[],
    ));
    let got: Vec<(Target, Bytes)> = p.into_iter().map(|p| (p.target, p.raw)).collect();
    let ask = |ch: &str| wire(&["PUBSUB", "SHARDNUMSUB", ch]);
    assert_eq!(
        got,
        [
            (node(2), ask("foo{}{bar}")),
            (node(1), ask("{user1000}.following")),
            (node(4), ask("{user1000}.following")),
            (node(0), ask("foo")),
            (node(3), ask("foo")),
        ]
    );
}
