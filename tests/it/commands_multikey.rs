//! Multi-key commands through the proxy against a real 3-shard cluster: MGET/MSET/DEL/EXISTS/
//! UNLINK/TOUCH split across slots with exact merged results, atomic multi-key commands
//! refused with Redis's exact CROSSSLOT text, and a split part following a MOVED or an ASK on
//! its own while the other parts for its node, sent with it in one request, are answered.

use std::collections::HashSet;

use crate::common;
use crate::common::cluster::{direct, TestCluster};
use crate::common::proxy::TestProxy;
use crate::common::raw::Raw;
use redis::Commands;
use slotway::cluster::slot::key_slot;

const CROSSSLOT: &str = "-CROSSSLOT Keys in request don't hash to the same slot\r\n";

fn keys(prefix: &str, n: usize) -> Vec<String> {
    let tag = fastrand::u32(..);
    (0..n).map(|i| format!("{prefix}:{tag}:{i}")).collect()
}

#[test]
fn split_commands_merge_exactly() {
    let cluster = TestCluster::start_with(3, 0);
    let proxy = TestProxy::start(cluster.seeds());
    let mut con = proxy.client();
    let ks = keys("mk", 200);
    let slots: HashSet<u16> = ks.iter().map(|k| key_slot(k.as_bytes())).collect();
    assert!(slots.len() > 100, "keys should spread over many slots");

    // MSET across slots: one +OK, and every key lands on its owner.
    let mut mset = redis::cmd("MSET");
    for (i, k) in ks.iter().enumerate() {
        mset.arg(k).arg(format!("v{i}"));
    }
    let ok: String = mset.query(&mut con).unwrap();
    assert_eq!(ok, "OK");
    for k in ks.iter().step_by(37) {
        let owner = cluster.primary_for_key(k);
        let v: String = direct(&owner).get(k).unwrap();
        assert!(v.starts_with('v'), "{k} on {owner}");
    }

    // MGET in the client's order, with missing keys and duplicates in between.
    let mut asked: Vec<String> = Vec::new();
    let mut expected: Vec<Option<String>> = Vec::new();
    for (i, k) in ks.iter().enumerate().rev() {
        asked.push(k.clone());
        expected.push(Some(format!("v{i}")));
        if i % 10 == 0 {
            asked.push(format!("missing:{i}"));
            expected.push(None);
            asked.push(ks[0].clone());
            expected.push(Some("v0".into()));
        }
    }
    let got: Vec<Option<String>> = redis::cmd("MGET").arg(&asked).query(&mut con).unwrap();
    assert_eq!(got, expected);

    // EXISTS and TOUCH count every occurrence, missing keys count 0.
    let mut probe: Vec<&str> = ks.iter().map(String::as_str).collect();
    probe.push(&ks[5]);
    probe.push("missing:x");
    let n: i64 = redis::cmd("EXISTS").arg(&probe).query(&mut con).unwrap();
    assert_eq!(n, 201);
    let n: i64 = redis::cmd("TOUCH").arg(&probe).query(&mut con).unwrap();
    assert_eq!(n, 201);

    // DEL and UNLINK sum what each shard removed.
    let n: i64 = redis::cmd("DEL")
        .arg(&ks[..100])
        .arg("missing:y")
        .query(&mut con)
        .unwrap();
    assert_eq!(n, 100);
    let n: i64 = redis::cmd("UNLINK").arg(&ks).query(&mut con).unwrap();
    assert_eq!(n, 100);
    let got: Vec<Option<String>> = redis::cmd("MGET").arg(&ks).query(&mut con).unwrap();
    assert!(got.iter().all(Option::is_none));
}

#[test]
fn pipelines_mixing_split_and_single_commands_keep_order() {
    let cluster = TestCluster::start_with(3, 0);
    let proxy = TestProxy::start(cluster.seeds());
    let mut con = proxy.client();
    let ks = keys("pipe", 30);
    let mut pipe = redis::pipe();
    for (i, k) in ks.iter().enumerate() {
        pipe.set(k, i);
        pipe.cmd("MGET").arg(&ks[..=i]);
        pipe.cmd("EXISTS").arg(&ks);
    }
    let replies: Vec<redis::Value> = pipe.query(&mut con).unwrap();
    for (i, chunk) in replies.chunks(3).enumerate() {
        let values: Vec<Option<i64>> = redis::from_redis_value(&chunk[1]).unwrap();
        let expected: Vec<Option<i64>> = (0..=i as i64).map(Some).collect();
        assert_eq!(values, expected, "MGET after SET #{i}");
        let exists: i64 = redis::from_redis_value(&chunk[2]).unwrap();
        assert_eq!(exists, i as i64 + 1);
    }
}

#[test]
fn atomic_multi_key_commands_need_one_slot() {
    let cluster = TestCluster::start_with(3, 0);
    let proxy = TestProxy::start(cluster.seeds());
    let mut via_proxy = Raw::connect(proxy.addr());
    // "a" and "b" hash to different slots (15495 and 3300).
    assert_ne!(key_slot(b"a"), key_slot(b"b"));
    let mut node = Raw::connect(cluster.primary_for_key("a"));
    let cases: &[&[&str]] = &[
        &["MSETNX", "a", "1", "b", "2"],
        &["RENAME", "a", "b"],
        &["RENAMENX", "a", "b"],
        &["SMOVE", "a", "b", "m"],
        &["LMOVE", "a", "b", "LEFT", "RIGHT"],
        &["BLMOVE", "a", "b", "LEFT", "RIGHT", "0"],
        &["RPOPLPUSH", "a", "b"],
        &["SINTERSTORE", "a", "b"],
        &["SUNIONSTORE", "d", "a", "b"],
        &["SDIFF", "a", "b"],
        &["ZUNIONSTORE", "d", "2", "a", "b"],
        &["ZINTERSTORE", "d", "2", "a", "b"],
        &["ZDIFFSTORE", "d", "2", "a", "b"],
        &["PFMERGE", "a", "b"],
        &["PFCOUNT", "a", "b"],
        &["COPY", "a", "b"],
        &["BITOP", "AND", "d", "a", "b"],
        &["SORT", "a", "STORE", "b"],
        &["EVAL", "return 1", "2", "a", "b"],
        &["EVAL_RO", "return 1", "2", "a", "b"],
        &["FCALL", "f", "2", "a", "b"],
        &[
            "GEOSEARCHSTORE",
            "d",
            "a",
            "FROMLONLAT",
            "0",
            "0",
            "BYRADIUS",
            "1",
            "km",
        ],
    ];
    for args in cases {
        let got = via_proxy.text(args);
        assert_eq!(got, CROSSSLOT, "{args:?}");
        assert_eq!(
            got,
            node.text(args),
            "Redis itself answers {args:?} the same way"
        );
    }
    // The same commands within one slot go through.
    assert_eq!(
        via_proxy.text(&["MSETNX", "{t}a", "1", "{t}b", "2"]),
        ":1\r\n"
    );
    assert_eq!(via_proxy.text(&["RENAME", "{t}a", "{t}c"]), "+OK\r\n");
}

#[test]
fn a_split_part_follows_moved_alone() {
    let cluster = TestCluster::start_with(3, 0);
    let proxy = TestProxy::start(cluster.seeds());
    let mut con = proxy.client();
    // Move the (empty) slot of a fresh key to another primary behind the proxy's back.
    let moving = format!("moving:{}", fastrand::u64(..));
    let slot = key_slot(moving.as_bytes());
    let from = cluster.primary_for_slot(slot);
    let primaries: Vec<String> = (0..16384u16)
        .step_by(512)
        .map(|s| cluster.primary_for_slot(s))
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(primaries.len(), 3);
    let to = primaries.iter().find(|p| **p != from).unwrap().clone();
    let to_id = Raw::connect(&to).text(&["CLUSTER", "MYID"]);
    let to_id = to_id.split("\r\n").nth(1).unwrap().to_string();
    let slot_s = slot.to_string();
    for p in std::iter::once(&to).chain(primaries.iter().filter(|p| **p != to)) {
        let r = Raw::connect(p).text(&["CLUSTER", "SETSLOT", &slot_s, "NODE", &to_id]);
        assert_eq!(r, "+OK\r\n", "SETSLOT on {p}");
    }
    let others = keys("other", 20);
    let mut mset = redis::cmd("MSET");
    mset.arg(&moving).arg("moved-value");
    for k in &others {
        mset.arg(k).arg("x");
    }
    let ok: String = mset.query(&mut con).unwrap();
    assert_eq!(ok, "OK");
    let v: String = direct(&to).get(&moving).unwrap();
    assert_eq!(v, "moved-value");
    let mut mget = vec![moving.clone()];
    mget.extend(others.iter().cloned());
    let got: Vec<String> = redis::cmd("MGET").arg(&mget).query(&mut con).unwrap();
    assert_eq!(got[0], "moved-value");
    assert!(got[1..].iter().all(|v| v == "x"));
}

#[test]
fn a_part_sent_with_others_to_one_node_follows_ask_alone() {
    let cluster = TestCluster::start_with(3, 0);
    let proxy = TestProxy::start(cluster.seeds());
    let mut con = proxy.client();
    let moving: u16 = 100;
    let from = cluster.primary_index_for_slot(moving);
    let to = (0..16384u16)
        .step_by(512)
        .map(|s| cluster.primary_index_for_slot(s))
        .find(|&i| i != from)
        .expect("another primary");
    // Keys in five more slots of the same primary: their parts go in the same request as the
    // migrating slot's part, whose reply is -ASK.
    let same_node: Vec<String> = (moving + 1..16384)
        .filter(|&s| cluster.primary_index_for_slot(s) == from)
        .take(5)
        .map(|s| format!("{{{}}}same", common::load::tag_for_slot(s)))
        .collect();
    assert_eq!(same_node.len(), 5);
    let asked = format!("{{{}}}asked", common::load::tag_for_slot(moving));
    cluster.begin_slot_migration(moving, from, to);
    let before = proxy.ask_redirects();

    let mut all = vec![asked.clone()];
    all.extend(same_node.iter().cloned());
    all.extend(keys("elsewhere", 10));
    let mut mset = redis::cmd("MSET");
    for k in &all {
        mset.arg(k).arg(format!("value of {k}"));
    }
    let ok: String = mset.query(&mut con).unwrap();
    assert_eq!(ok, "OK");
    let got: Vec<String> = redis::cmd("MGET").arg(&all).query(&mut con).unwrap();
    let want: Vec<String> = all.iter().map(|k| format!("value of {k}")).collect();
    assert_eq!(got, want);
    assert!(proxy.ask_redirects() > before, "no -ASK was followed");
    assert!(
        cluster.importing_node_has(to, &asked),
        "the migrating slot's key is not on the importing node"
    );
    let mut node = direct(&cluster.primary_for_slot(moving));
    for k in &same_node {
        let v: Option<String> = node.get(k).unwrap();
        assert_eq!(v.as_deref(), Some(format!("value of {k}").as_str()), "{k}");
    }
}
