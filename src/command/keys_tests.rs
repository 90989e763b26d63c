//! Key extraction tests; expected keys agree with `COMMAND GETKEYS` on Redis 7.0.15.

use super::*;
use crate::command::tests::{request, table};
use crate::command::{KeySpec, KeySpecFlags, Policy};

/// The key arguments of `line` (words separated by spaces; `''` is an empty argument).
fn keys(line: &str) -> Result<Vec<String>, KeyError> {
    let (raw, args) = request(line);
    let spec = table().resolve(&raw, &args).expect("known command");
    let mut out = vec![usize::MAX]; // keys are appended, never replacing what the caller had
    spec.key_indices(&raw, &args, &mut out)?;
    assert_eq!(out.remove(0), usize::MAX);
    Ok(out
        .iter()
        .map(|&i| String::from_utf8(raw[args[i].clone()].to_vec()).unwrap())
        .collect())
}

fn ok(line: &str) -> Vec<String> {
    keys(line).unwrap_or_else(|e| panic!("{line}: {e}"))
}

fn err(line: &str) -> String {
    keys(line).expect_err(line).to_string()
}

#[test]
fn simple_keys() {
    assert_eq!(ok("GET k"), ["k"]);
    assert_eq!(ok("get k"), ["k"]);
    assert_eq!(ok("SET k v"), ["k"]);
    assert_eq!(ok("SET k v EX 10 GET"), ["k"]);
    assert_eq!(ok("MSET a 1 b 2 c 3"), ["a", "b", "c"]);
    assert_eq!(ok("MGET a b c"), ["a", "b", "c"]);
    assert_eq!(ok("DEL a b"), ["a", "b"]);
    assert_eq!(ok("RENAME a b"), ["a", "b"]);
    assert_eq!(ok("LMOVE a b LEFT RIGHT"), ["a", "b"]);
    assert_eq!(ok("BLPOP a b 0"), ["a", "b"]);
    assert_eq!(ok("BITFIELD k GET u8 0 SET u8 0 1"), ["k"]);
    assert_eq!(ok("BITFIELD_RO k GET u8 0"), ["k"]);
    assert_eq!(ok("LCS a b"), ["a", "b"]);
    assert_eq!(ok("BITOP AND dest a b"), ["dest", "a", "b"]);
    assert_eq!(ok("PING"), Vec::<String>::new());
}

#[test]
fn numkeys_commands() {
    assert_eq!(ok("EVAL s 2 a b x y"), ["a", "b"]);
    assert_eq!(ok("EVAL s 0"), Vec::<String>::new());
    assert_eq!(ok("EVAL s 0 arg"), Vec::<String>::new());
    assert_eq!(ok("EVALSHA sha 1 a x"), ["a"]);
    assert_eq!(ok("EVAL_RO s 1 a"), ["a"]);
    assert_eq!(ok("FCALL f 2 a b x"), ["a", "b"]);
    assert_eq!(ok("FCALL_RO f 0"), Vec::<String>::new());
    assert_eq!(ok("ZUNIONSTORE d 2 a b WEIGHTS 1 2"), ["d", "a", "b"]);
    assert_eq!(ok("ZINTERSTORE d 1 a"), ["d", "a"]);
    assert_eq!(ok("ZDIFFSTORE d 2 a b"), ["d", "a", "b"]);
    assert_eq!(ok("ZUNION 2 a b WITHSCORES"), ["a", "b"]);
    assert_eq!(ok("SINTERCARD 2 a b LIMIT 1"), ["a", "b"]);
    assert_eq!(ok("ZINTERCARD 2 a b"), ["a", "b"]);
    assert_eq!(ok("LMPOP 2 a b LEFT COUNT 2"), ["a", "b"]);
    assert_eq!(ok("BLMPOP 0 2 a b RIGHT"), ["a", "b"]);
    assert_eq!(ok("ZMPOP 1 a MIN"), ["a"]);
    assert_eq!(ok("BZMPOP 1.5 1 a MAX"), ["a"]);
}

#[test]
fn numkeys_errors_match_redis() {
    assert_eq!(
        err("EVAL s 2 a"),
        "ERR Number of keys can't be greater than number of args"
    );
    assert_eq!(err("EVAL s -1"), "ERR Number of keys can't be negative");
    assert_eq!(
        err("EVAL s x"),
        "ERR value is not an integer or out of range"
    );
    assert_eq!(
        err("EVAL s 99999999999999999999"),
        "ERR value is not an integer or out of range"
    );
    assert_eq!(
        err("EVAL s 9223372036854775807 a"),
        "ERR Number of keys can't be greater than number of args"
    );
    assert_eq!(
        err("EVAL s -9223372036854775808"),
        "ERR Number of keys can't be negative"
    );
    assert_eq!(
        err("FCALL f 3 a"),
        "ERR Number of keys can't be greater than number of args"
    );
    assert_eq!(
        err("EVAL s +1 a"),
        "ERR value is not an integer or out of range"
    );
    assert_eq!(
        err("EVAL s 01 a"),
        "ERR value is not an integer or out of range"
    );
    assert_eq!(
        err("ZUNIONSTORE d 0 a"),
        "ERR at least 1 input key is needed for 'zunionstore' command"
    );
    assert_eq!(
        err("ZUNIONSTORE d -1 a"),
        "ERR at least 1 input key is needed for 'zunionstore' command"
    );
    assert_eq!(err("zunionstore d 3 a"), "ERR syntax error");
    assert_eq!(
        err("ZUNIONSTORE d x a"),
        "ERR value is not an integer or out of range"
    );
    assert_eq!(
        err("ZDIFF 0 a"),
        "ERR at least 1 input key is needed for 'zdiff' command"
    );
    assert_eq!(err("ZINTERCARD 3 a"), "ERR syntax error");
    assert_eq!(
        err("SINTERCARD 0 a"),
        "ERR numkeys should be greater than 0"
    );
    assert_eq!(
        err("SINTERCARD x a"),
        "ERR numkeys should be greater than 0"
    );
    assert_eq!(
        err("SINTERCARD 3 a"),
        "ERR Number of keys can't be greater than number of args"
    );
    assert_eq!(
        err("LMPOP 0 a LEFT"),
        "ERR numkeys should be greater than 0"
    );
    assert_eq!(err("LMPOP 3 a LEFT"), "ERR syntax error");
    assert_eq!(
        err("LMPOP 99999999999999999999 a LEFT"),
        "ERR numkeys should be greater than 0"
    );
    assert_eq!(err("BLMPOP 0 3 a LEFT"), "ERR syntax error");
    assert_eq!(err("ZMPOP 5 a MIN"), "ERR syntax error");
    assert_eq!(
        err("BZMPOP 0 x a MIN"),
        "ERR numkeys should be greater than 0"
    );
}

#[test]
fn streams() {
    assert_eq!(ok("XREAD COUNT 1 STREAMS a b 0 0"), ["a", "b"]);
    assert_eq!(ok("xread block 0 streams a $"), ["a"]);
    assert_eq!(
        ok("XREADGROUP GROUP g c COUNT 1 STREAMS a b > >"),
        ["a", "b"]
    );
    assert_eq!(ok("XREADGROUP GROUP g c STREAMS streams 0"), ["streams"]);
    assert_eq!(
        err("XREAD STREAMS a b c"),
        "ERR Unbalanced XREAD list of streams: for each stream key an ID or '$' must be specified."
    );
    assert_eq!(
        err("XREADGROUP GROUP g c STREAMS a b c"),
        KeyError::UnbalancedStreams.to_string()
    );
    assert_eq!(err("XREAD BLOCK 0 STREAMS"), "ERR syntax error");
    assert_eq!(err("XREAD COUNT 1 a 0"), "ERR syntax error");
    assert_eq!(ok("XINFO STREAM s FULL"), ["s"]);
    assert_eq!(ok("XGROUP CREATE s g $ MKSTREAM"), ["s"]);
    assert_eq!(ok("XADD s * f v"), ["s"]);
}

#[test]
fn sort_store_is_a_key() {
    assert_eq!(ok("SORT k"), ["k"]);
    assert_eq!(ok("SORT k STORE d"), ["k", "d"]);
    assert_eq!(ok("sort k by w_* get o_* store d"), ["k", "d"]);
    assert_eq!(ok("SORT k LIMIT 0 10 ALPHA STORE d"), ["k", "d"]);
    assert_eq!(
        ok("SORT k STORE a STORE b"),
        ["k", "b"],
        "the last STORE wins"
    );
    assert_eq!(
        ok("SORT k GET store"),
        ["k"],
        "a GET pattern named store is not the option"
    );
    assert_eq!(ok("SORT k LIMIT store 1"), ["k"]);
    assert_eq!(ok("SORT k STORE"), ["k"]);
    assert_eq!(ok("SORT_RO k BY w GET o"), ["k"]);
    assert_eq!(ok("SORT_RO k STORE d"), ["k"], "SORT_RO has no STORE");
}

#[test]
fn migrate() {
    assert_eq!(ok("MIGRATE h 6379 k 0 5000"), ["k"]);
    assert_eq!(ok("MIGRATE h 6379 k 0 5000 COPY REPLACE"), ["k"]);
    assert_eq!(ok("MIGRATE h 6379 '' 0 5000 KEYS a b c"), ["a", "b", "c"]);
    assert_eq!(ok("MIGRATE h 6379 '' 0 5000 COPY AUTH pw KEYS a"), ["a"]);
    assert_eq!(ok("MIGRATE h 6379 '' 0 5000"), Vec::<String>::new());
}

#[test]
fn subcommand_keys() {
    assert_eq!(ok("OBJECT ENCODING k"), ["k"]);
    assert_eq!(ok("object freq k"), ["k"]);
    assert_eq!(ok("MEMORY USAGE k SAMPLES 5"), ["k"]);
    assert_eq!(ok("OBJECT HELP"), Vec::<String>::new());
    assert_eq!(ok("CLIENT SETNAME x"), Vec::<String>::new());
}

#[test]
fn geo_store_options() {
    assert_eq!(ok("GEORADIUS k 0 0 1 km"), ["k"]);
    assert_eq!(ok("GEORADIUS k 0 0 1 km STORE d"), ["k", "d"]);
    assert_eq!(ok("GEORADIUS k 0 0 1 km WITHDIST STOREDIST d"), ["k", "d"]);
    assert_eq!(ok("georadiusbymember k m 1 km store d"), ["k", "d"]);
    assert_eq!(
        ok("GEOSEARCHSTORE d k FROMMEMBER m BYRADIUS 1 km"),
        ["d", "k"]
    );
    assert_eq!(
        ok("GEORADIUS k 0 0 1 km STORE"),
        ["k"],
        "STORE as the last argument has no key"
    );
}

#[test]
fn shard_channels_hash_like_keys() {
    assert_eq!(ok("SPUBLISH ch msg"), ["ch"]);
    assert_eq!(ok("SSUBSCRIBE a b"), ["a", "b"]);
    assert_eq!(ok("PUBLISH ch msg"), Vec::<String>::new());
}

#[test]
fn hash_tags_put_keys_in_one_slot() {
    let keys = ok("MSET {user1}.name a {user1}.age 3");
    assert_eq!(keys, ["{user1}.name", "{user1}.age"]);
    // Slot hashing lives in `cluster`, above this layer; what the command table owes it is the
    // hashed part of each key, which is the tag for both.
    for key in &keys {
        assert_eq!(hash_tag(key), "user1", "{key}");
    }
}

#[test]
fn short_and_hostile_input_never_panics() {
    // Arity is the caller's check; key extraction only skips what is missing.
    assert_eq!(ok("GET"), Vec::<String>::new());
    assert_eq!(ok("MSET a"), ["a"]);
    assert_eq!(
        err("ZUNIONSTORE d"),
        "ERR wrong number of arguments for 'zunionstore' command"
    );
    assert_eq!(
        err("EVAL s"),
        "ERR wrong number of arguments for 'eval' command"
    );
    assert_eq!(err("XREAD"), "ERR syntax error");
    assert_eq!(ok("MIGRATE"), Vec::<String>::new());
    assert_eq!(ok("SORT"), Vec::<String>::new());
    assert_eq!(ok("SORT k LIMIT"), ["k"]);

    // Ranges pointing outside the request are skipped, not indexed.
    let spec = table().lookup(b"mget").unwrap();
    let mut out = Vec::new();
    spec.key_indices(b"MGET a", &[0..4, 5..6, 50..60], &mut out)
        .unwrap();
    assert_eq!(
        out,
        [1, 2],
        "indices are reported; slicing them is the caller's job"
    );
    let eval = table().lookup(b"eval").unwrap();
    let err = eval
        .key_indices(b"EVAL s", &[0..4, 5..6, 7..99], &mut out)
        .unwrap_err();
    assert_eq!(err, KeyError::WrongArity("eval".into()));
}

#[test]
fn hostile_learned_specs_never_panic() {
    let specs = [
        KeySpec {
            flags: KeySpecFlags::EMPTY,
            begin_search: BeginSearch::Index(usize::MAX),
            find_keys: FindKeys::Range {
                last_key: i32::MAX,
                key_step: usize::MAX,
                limit: usize::MAX,
            },
        },
        KeySpec {
            flags: KeySpecFlags::EMPTY,
            begin_search: BeginSearch::Index(0),
            find_keys: FindKeys::Range {
                last_key: i32::MIN,
                key_step: 0,
                limit: 0,
            },
        },
        KeySpec {
            flags: KeySpecFlags::EMPTY,
            begin_search: BeginSearch::Index(1),
            find_keys: FindKeys::Range {
                last_key: -1,
                key_step: 0,
                limit: 0,
            },
        },
        KeySpec {
            flags: KeySpecFlags::EMPTY,
            begin_search: BeginSearch::Keyword {
                keyword: "K".into(),
                start_from: i32::MIN,
            },
            find_keys: FindKeys::Range {
                last_key: -1,
                key_step: 1,
                limit: 3,
            },
        },
        KeySpec {
            flags: KeySpecFlags::EMPTY,
            begin_search: BeginSearch::Keyword {
                keyword: "K".into(),
                start_from: i32::MAX,
            },
            find_keys: FindKeys::Range {
                last_key: 0,
                key_step: 1,
                limit: 0,
            },
        },
        KeySpec {
            flags: KeySpecFlags::EMPTY,
            begin_search: BeginSearch::Index(1),
            find_keys: FindKeys::KeyNum {
                keynum_idx: usize::MAX,
                first_key: usize::MAX,
                key_step: usize::MAX,
            },
        },
        KeySpec {
            flags: KeySpecFlags::EMPTY,
            begin_search: BeginSearch::Index(1),
            find_keys: FindKeys::KeyNum {
                keynum_idx: 0,
                first_key: usize::MAX,
                key_step: usize::MAX,
            },
        },
    ];
    for spec in specs {
        let cmd = CommandSpec::new(
            "x.mod",
            -1,
            Default::default(),
            vec![spec.clone()],
            Policy::Keyed,
        );
        for line in ["X", "X 1", "X 2 a b", "X K a K b c", "X 1 K"] {
            let (raw, args) = request(line);
            let mut out = Vec::new();
            let _ = cmd.key_indices(&raw, &args, &mut out);
            assert!(
                out.iter().all(|&i| i > 0 && i < args.len()),
                "{spec:?} {line}: {out:?}"
            );
        }
    }
}

#[test]
fn keyword_search_directions() {
    let spec = |start_from| {
        let bs = BeginSearch::Keyword {
            keyword: "KEYS".into(),
            start_from,
        };
        let fk = FindKeys::Range {
            last_key: -1,
            key_step: 1,
            limit: 0,
        };
        CommandSpec::new(
            "m",
            -1,
            Default::default(),
            vec![KeySpec {
                flags: KeySpecFlags::EMPTY,
                begin_search: bs,
                find_keys: fk,
            }],
            Policy::Keyed,
        )
    };
    let run = |start_from, line: &str| {
        let (raw, args) = request(line);
        let mut out = Vec::new();
        spec(start_from).key_indices(&raw, &args, &mut out).unwrap();
        out
    };
    assert_eq!(run(1, "M x KEYS a b"), [3, 4]);
    assert_eq!(
        run(1, "M x a b KEYS"),
        Vec::<usize>::new(),
        "keyword last: nothing follows"
    );
    assert_eq!(
        run(-2, "M KEYS b KEYS a"),
        [4],
        "backward search finds the last KEYS"
    );
    assert_eq!(
        run(-2, "M KEYS a"),
        Vec::<usize>::new(),
        "backward search stops before index 1"
    );
    assert_eq!(run(0, "M KEYS a"), Vec::<usize>::new());
}

#[test]
fn strict_integers() {
    assert_eq!(parse_i64(b"0"), Some(0));
    assert_eq!(parse_i64(b"-5"), Some(-5));
    assert_eq!(parse_i64(b"9223372036854775807"), Some(i64::MAX));
    assert_eq!(parse_i64(b"-9223372036854775808"), Some(i64::MIN));
    for bad in [
        &b""[..],
        b"-",
        b"-0",
        b"01",
        b"+1",
        b" 1",
        b"1 ",
        b"1a",
        b"9223372036854775808",
    ] {
        assert_eq!(parse_i64(bad), None, "{:?}", String::from_utf8_lossy(bad));
    }
}

/// The part of `key` Redis hashes: the text between the first `{` and the next `}` when it is
/// not empty, else the whole key (the rule `cluster::slot` implements; vectors in DESIGN.md).
fn hash_tag(key: &str) -> &str {
    key.split_once('{')
        .and_then(|(_, rest)| rest.split_once('}'))
        .map(|(tag, _)| tag)
        .filter(|tag| !tag.is_empty())
        .unwrap_or(key)
}
