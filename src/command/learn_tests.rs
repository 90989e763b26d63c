//! Tests for learning specs from `COMMAND` replies (hand-built frames in the Redis 7 and 6 shapes).

use super::*;
use crate::command::tests::request;
use crate::command::KeyError;
use redis_protocol::resp2::types::OwnedFrame as F;

fn s(text: &str) -> F {
    F::BulkString(text.as_bytes().to_vec())
}

fn a(items: Vec<F>) -> F {
    F::Array(items)
}

fn words(list: &[&str]) -> F {
    a(list.iter().map(|w| s(w)).collect())
}

/// `index N` + `range lastkey step limit` key spec.
fn range_spec(flags: &[&str], index: i64, last: i64, step: i64) -> F {
    a(vec![
        s("flags"),
        words(flags),
        s("begin_search"),
        a(vec![
            s("type"),
            s("index"),
            s("spec"),
            a(vec![s("index"), F::Integer(index)]),
        ]),
        s("find_keys"),
        a(vec![
            s("type"),
            s("range"),
            s("spec"),
            a(vec![
                s("lastkey"),
                F::Integer(last),
                s("keystep"),
                F::Integer(step),
                s("limit"),
                F::Integer(0),
            ]),
        ]),
    ])
}

/// A Redis 7 command entry.
fn entry(name: &str, arity: i64, flags: &[&str], tips: &[&str], specs: Vec<F>, subs: Vec<F>) -> F {
    a(vec![
        s(name),
        F::Integer(arity),
        words(flags),
        F::Integer(0),
        F::Integer(0),
        F::Integer(0),
        words(&[]),
        words(tips),
        a(specs),
        a(subs),
    ])
}

fn keys_of(table: &CommandTable, line: &str) -> Vec<usize> {
    let (raw, args) = request(line);
    let mut out = Vec::new();
    table
        .resolve(&raw, &args)
        .unwrap()
        .key_indices(&raw, &args, &mut out)
        .unwrap();
    out
}

#[test]
fn learns_module_commands() {
    let mut table = CommandTable::builtin();
    let reply = a(vec![
        entry(
            "JSON.GET",
            -2,
            &["readonly"],
            &[],
            vec![range_spec(&["RO", "access"], 1, 0, 1)],
            vec![],
        ),
        F::Null,
        entry(
            "ft.info",
            2,
            &["readonly"],
            &["request_policy:all_shards", "response_policy:agg_sum"],
            vec![],
            vec![],
        ),
        entry(
            "mod.mset",
            -3,
            &["write"],
            &["request_policy:multi_shard"],
            vec![range_spec(&["OW"], 1, -1, 2)],
            vec![],
        ),
        entry(
            "mod.ping",
            1,
            &["fast", "some_future_flag"],
            &[],
            vec![],
            vec![],
        ),
    ]);
    assert_eq!(table.learn(&reply), Ok(4));
    let json = table.lookup(b"json.get").unwrap();
    assert_eq!(json.name, "json.get");
    assert_eq!(json.policy, Policy::Keyed);
    assert!(json.flags.contains(CommandFlags::READONLY));
    assert_eq!(keys_of(&table, "JSON.GET doc $.a"), [1]);
    assert_eq!(
        table.lookup(b"FT.INFO").unwrap().policy,
        Policy::AllPrimaries(Merge::SumInt)
    );
    assert_eq!(table.lookup(b"mod.mset").unwrap().policy, Policy::Keyed);
    assert_eq!(keys_of(&table, "MOD.MSET a 1 b 2"), [1, 3]);
    let ping = table.lookup(b"mod.ping").unwrap();
    assert_eq!(
        (ping.policy, ping.flags),
        (Policy::AnyPrimary, CommandFlags::FAST)
    );
    assert_eq!(table.len(), 244);
}

#[test]
fn learned_facts_win_but_policy_stays() {
    let mut table = CommandTable::builtin();
    let client_sub = entry("client|no-touch", 3, &["noscript"], &[], vec![], vec![]);
    let object_sub = entry(
        "object|newthing",
        3,
        &["readonly"],
        &[],
        vec![range_spec(&["RO"], 2, 0, 1)],
        vec![],
    );
    let reply = a(vec![
        entry(
            "del",
            -2,
            &["write"],
            &["request_policy:multi_shard"],
            vec![range_spec(&["RM"], 1, -1, 1)],
            vec![],
        ),
        entry(
            "get",
            -2,
            &["readonly"],
            &[],
            vec![range_spec(&["RO"], 1, 0, 1)],
            vec![],
        ),
        entry("client", -2, &[], &[], vec![], vec![client_sub]),
        entry("object", -2, &[], &[], vec![], vec![object_sub]),
    ]);
    assert_eq!(table.learn(&reply), Ok(6));
    let get = table.lookup(b"get").unwrap();
    assert_eq!(get.arity, -2, "the server's arity wins");
    assert_eq!(get.flags, CommandFlags::READONLY, "the server's flags win");
    assert_eq!(get.key_specs[0].flags, KeySpecFlags::RO);
    assert_eq!(get.policy, Policy::Keyed);
    assert_eq!(
        table.lookup(b"del").unwrap().policy,
        Policy::Split(Merge::SumInt),
        "our policy stays"
    );
    let (raw, args) = request("CLIENT NO-TOUCH on");
    assert_eq!(
        table.resolve(&raw, &args).unwrap().policy,
        Policy::Local,
        "a Local container's new sub"
    );
    assert_eq!(keys_of(&table, "OBJECT NEWTHING k"), [2]);
    let client = table.lookup(b"client").unwrap();
    assert!(
        client.subcommand(b"setname").is_some(),
        "known subcommands are kept"
    );
    assert_eq!(table.len(), 240);
}

#[test]
fn learns_redis_6_shape() {
    let mut table = CommandTable::empty();
    let legacy = |name: &str, arity, first, last, step| {
        a(vec![
            s(name),
            F::Integer(arity),
            words(&["write"]),
            F::Integer(first),
            F::Integer(last),
            F::Integer(step),
            words(&[]),
        ])
    };
    let reply = a(vec![
        legacy("mset", -3, 1, -1, 2),
        legacy("rename", 3, 1, 2, 1),
        legacy("ping", -1, 0, 0, 0),
    ]);
    assert_eq!(table.learn(&reply), Ok(3));
    assert_eq!(keys_of(&table, "MSET a 1 b 2"), [1, 3]);
    assert_eq!(keys_of(&table, "RENAME a b"), [1, 2]);
    assert_eq!(keys_of(&table, "PING"), Vec::<usize>::new());
    assert_eq!(table.lookup(b"ping").unwrap().policy, Policy::AnyPrimary);
}

#[test]
fn keyword_and_keynum_specs() {
    let spec = |bs: F, fk: F| {
        a(vec![
            s("notes"),
            s("n"),
            s("flags"),
            words(&[]),
            s("begin_search"),
            bs,
            s("find_keys"),
            fk,
        ])
    };
    let kw = a(vec![
        s("type"),
        s("keyword"),
        s("spec"),
        a(vec![s("keyword"), s("KEYS"), s("startfrom"), F::Integer(1)]),
    ]);
    let kn = a(vec![
        s("type"),
        s("keynum"),
        s("spec"),
        a(vec![
            s("keynumidx"),
            F::Integer(0),
            s("firstkey"),
            F::Integer(1),
            s("keystep"),
            F::Integer(1),
        ]),
    ]);
    let idx = a(vec![
        s("type"),
        s("index"),
        s("spec"),
        a(vec![s("index"), F::Integer(1)]),
    ]);
    let unknown = a(vec![s("type"), s("unknown"), s("spec"), a(vec![])]);
    let reply = a(vec![
        entry(
            "m.kw",
            -2,
            &[],
            &[],
            vec![spec(kw, unknown.clone())],
            vec![],
        ),
        entry("m.kn", -2, &[], &[], vec![spec(idx, kn)], vec![]),
        entry(
            "m.unk",
            -2,
            &[],
            &[],
            vec![spec(unknown.clone(), unknown)],
            vec![],
        ),
    ]);
    let mut table = CommandTable::empty();
    assert_eq!(table.learn(&reply), Ok(3));
    let kw = table.lookup(b"m.kw").unwrap();
    assert_eq!(
        kw.key_specs[0].begin_search,
        BeginSearch::Keyword {
            keyword: "KEYS".into(),
            start_from: 1
        }
    );
    assert_eq!(kw.key_specs[0].find_keys, FindKeys::Unknown);
    assert_eq!(keys_of(&table, "M.KN 2 a b c"), [2, 3]);
    assert_eq!(keys_of(&table, "M.UNK a b"), Vec::<usize>::new());
    let (raw, args) = request("M.KN -1");
    let err = table
        .lookup(b"m.kn")
        .unwrap()
        .key_indices(&raw, &args, &mut Vec::new());
    assert_eq!(err, Err(KeyError::NegativeKeys));
}

#[test]
fn bad_replies_teach_nothing() {
    let mut table = CommandTable::builtin();
    let before = table.lookup(b"get").unwrap().clone();
    assert_eq!(
        table.learn(&F::Error("ERR unknown command".into())),
        Err(CommandError::Server("ERR unknown command".into()))
    );
    assert_eq!(table.learn(&F::Integer(1)), Err(CommandError::NotAnArray));
    let cases = [
        a(vec![F::Integer(3)]),
        a(vec![a(vec![s("x")])]),
        a(vec![a(vec![
            s("x"),
            s("2"),
            words(&[]),
            F::Integer(0),
            F::Integer(0),
            F::Integer(0),
        ])]),
        a(vec![entry(
            "x",
            2,
            &[],
            &[],
            vec![a(vec![s("flags")])],
            vec![],
        )]),
        a(vec![entry(
            "x",
            2,
            &[],
            &[],
            vec![],
            vec![entry("y|z", 2, &[], &[], vec![], vec![])],
        )]),
        a(vec![
            entry("get", -5, &[], &[], vec![], vec![]),
            entry("bad", 1, &[], &[], vec![], vec![F::Null]),
        ]),
    ];
    for reply in cases {
        assert!(
            matches!(table.learn(&reply), Err(CommandError::Malformed { .. })),
            "{reply:?}"
        );
    }
    assert_eq!(
        table.lookup(b"get"),
        Some(&before),
        "a partly bad reply changes nothing"
    );
    assert!(table.lookup(b"x").is_none());
    assert_eq!(table.learn(&a(vec![])), Ok(0));
}

#[test]
fn derived_policies() {
    let tips = |t: &[&str]| t.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let key = KeySpec {
        flags: KeySpecFlags::EMPTY,
        begin_search: BeginSearch::Index(1),
        find_keys: FindKeys::Range {
            last_key: 0,
            key_step: 1,
            limit: 0,
        },
    };
    assert_eq!(derive_policy(&tips(&[]), &[]), Policy::AnyPrimary);
    assert_eq!(
        derive_policy(&tips(&[]), std::slice::from_ref(&key)),
        Policy::Keyed
    );
    assert_eq!(
        derive_policy(&tips(&["request_policy:all_nodes"]), &[]),
        Policy::AllPrimaries(Merge::Concat)
    );
    let all_ok = tips(&["request_policy:all_shards", "response_policy:all_succeeded"]);
    assert_eq!(
        derive_policy(&all_ok, &[]),
        Policy::AllPrimaries(Merge::AllOk)
    );
    let and = tips(&[
        "request_policy:all_shards",
        "response_policy:agg_logical_and",
    ]);
    assert_eq!(
        derive_policy(&and, &[]),
        Policy::AllPrimaries(Merge::AndArrays)
    );
    let one = tips(&["response_policy:one_succeeded", "request_policy:all_shards"]);
    assert_eq!(derive_policy(&one, &[]), Policy::AllPrimaries(Merge::First));
    assert_eq!(
        derive_policy(&tips(&["request_policy:multi_shard"]), &[key]),
        Policy::Keyed
    );
    assert_eq!(
        derive_policy(&tips(&["nondeterministic_output"]), &[]),
        Policy::AnyPrimary
    );
}
