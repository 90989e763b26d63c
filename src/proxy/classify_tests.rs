//! Unit tests of `classify`: one decision per command family.

use std::ops::Range;

use super::*;
use crate::command::CommandTable;

fn request(args: &[&str]) -> (Vec<u8>, Vec<Range<usize>>) {
    let mut raw = Vec::new();
    let mut ranges = Vec::new();
    for a in args {
        let start = raw.len();
        raw.extend_from_slice(a.as_bytes());
        ranges.push(start..raw.len());
        raw.push(b' ');
    }
    (raw, ranges)
}

fn decide(args: &[&str]) -> Decision {
    let (raw, ranges) = request(args);
    let raw = bytes::Bytes::from(raw);
    classify(
        &Request::new(&CommandTable::builtin(), &raw, &ranges),
        &mut Vec::new(),
    )
}

#[test]
fn single_key_commands_route_by_slot() {
    assert_eq!(
        decide(&["GET", "foo"]),
        Decision::Forward {
            slot: Some(12182),
            readonly: true
        }
    );
    assert_eq!(
        decide(&["set", "foo", "bar"]),
        Decision::Forward {
            slot: Some(12182),
            readonly: false
        }
    );
}

#[test]
fn multi_key_commands_need_one_slot() {
    assert!(matches!(
        decide(&["MSET", "{u}a", "1", "{u}b", "2"]),
        Decision::Forward { slot: Some(_), .. } | Decision::Error(_)
    ));
    assert_eq!(
        decide(&["RENAME", "a", "b"]),
        Decision::Error("CROSSSLOT Keys in request don't hash to the same slot".into())
    );
    assert!(matches!(
        decide(&["RENAME", "{x}a", "{x}b"]),
        Decision::Forward { slot: Some(_), .. }
    ));
}

#[test]
fn errors_match_redis_wording() {
    assert_eq!(
        decide(&["GET"]),
        Decision::Error("ERR wrong number of arguments for 'get' command".into())
    );
    assert_eq!(
        decide(&["NOPE", "a", "b"]),
        Decision::Error("ERR unknown command 'NOPE', with args beginning with: 'a' 'b' ".into())
    );
}

#[test]
fn local_commands() {
    assert_eq!(decide(&["PING"]), Decision::Local(LocalCmd::Ping(None)));
    assert_eq!(
        decide(&["ping", "x"]),
        Decision::Local(LocalCmd::Ping(Some(1)))
    );
    assert_eq!(decide(&["ECHO", "x"]), Decision::Local(LocalCmd::Echo));
    assert_eq!(decide(&["QUIT"]), Decision::Local(LocalCmd::Quit));
    assert_eq!(decide(&["SELECT", "0"]), Decision::Local(LocalCmd::Select));
    assert_eq!(decide(&["HELLO", "3"]), Decision::Local(LocalCmd::Hello));
    assert_eq!(decide(&["RESET"]), Decision::Local(LocalCmd::Reset));
    assert_eq!(
        decide(&["ACL", "whoami"]),
        Decision::Local(LocalCmd::WhoAmI)
    );
    assert_eq!(
        decide(&["SLOWLOG", "get"]),
        Decision::Local(LocalCmd::SlowLog)
    );
    assert_eq!(
        decide(&["slowlog", "LEN"]),
        Decision::Local(LocalCmd::SlowLog)
    );
    assert_eq!(
        decide(&["CLIENT", "SETNAME", "x"]),
        Decision::Local(LocalCmd::Client)
    );
    assert_eq!(
        decide(&["CLIENT", "NOSUCH"]),
        Decision::Local(LocalCmd::Client)
    );
}

#[test]
fn proxy_answered_commands_get_redis_arity_errors() {
    let arity = |name: &str| {
        Decision::Error(format!(
            "ERR wrong number of arguments for '{name}' command"
        ))
    };
    assert_eq!(decide(&["PING", "a", "b"]), arity("ping"));
    assert_eq!(decide(&["ECHO"]), arity("echo"));
    assert_eq!(decide(&["ECHO", "a", "b"]), arity("echo"));
    assert_eq!(decide(&["SELECT"]), arity("select"));
    assert_eq!(decide(&["SELECT", "0", "1"]), arity("select"));
    assert_eq!(decide(&["RESET", "x"]), arity("reset"));
    assert_eq!(decide(&["READONLY", "x"]), arity("readonly"));
    assert_eq!(decide(&["ACL", "WHOAMI", "x"]), arity("acl|whoami"));
    assert_eq!(decide(&["CLIENT", "ID", "x"]), arity("client|id"));
    assert_eq!(decide(&["CLUSTER", "KEYSLOT"]), arity("cluster|keyslot"));
    // Variadic commands the proxy answers keep their own option errors.
    assert_eq!(decide(&["QUIT", "x", "y"]), Decision::Local(LocalCmd::Quit));
    assert_eq!(
        decide(&["HELLO", "3", "AUTH"]),
        Decision::Local(LocalCmd::Hello)
    );
}

#[test]
fn pinned_commands() {
    assert_eq!(
        decide(&["BLPOP", "{a}x", "{a}y", "0"]),
        Decision::Blocking {
            slot: Some(key_slot(b"a"))
        }
    );
    assert_eq!(
        decide(&["XREAD", "BLOCK", "10", "STREAMS", "s", "0"]),
        Decision::Blocking {
            slot: Some(key_slot(b"s"))
        }
    );
    assert!(matches!(
        decide(&["XREAD", "STREAMS", "s", "0"]),
        Decision::Forward { .. }
    ));
    assert_eq!(
        decide(&["BLPOP", "a", "b", "0"]),
        Decision::Error("CROSSSLOT Keys in request don't hash to the same slot".into())
    );
    assert_eq!(decide(&["MULTI"]), Decision::Transaction(TxCmd::Multi));
    assert_eq!(decide(&["exec"]), Decision::Transaction(TxCmd::Exec));
    assert_eq!(
        decide(&["WATCH", "{u}a", "{u}b"]),
        Decision::Transaction(TxCmd::Watch {
            slot: key_slot(b"u")
        })
    );
    assert_eq!(
        decide(&["WATCH", "a", "b"]),
        Decision::Error("CROSSSLOT Keys in request don't hash to the same slot".into())
    );
    assert_eq!(decide(&["SUBSCRIBE", "c"]), Decision::Subscription);
    assert_eq!(decide(&["SSUBSCRIBE", "c"]), Decision::Subscription);
    assert_eq!(decide(&["UNSUBSCRIBE"]), Decision::Subscription);
}

#[test]
fn cross_slot_split_commands_fan_out() {
    assert_eq!(
        decide(&["MGET", "a", "b"]),
        Decision::Fanout(Fan::Split {
            merge: Merge::Values,
            readonly: true
        })
    );
    assert_eq!(
        decide(&["DEL", "a", "b"]),
        Decision::Fanout(Fan::Split {
            merge: Merge::SumInt,
            readonly: false
        })
    );
    assert!(matches!(
        decide(&["MGET", "{t}a", "{t}b"]),
        Decision::Forward { slot: Some(_), .. }
    ));
    for atomic in [
        &["MSETNX", "a", "1", "b", "2"][..],
        &["SMOVE", "a", "b", "m"],
        &["SUNIONSTORE", "d", "a", "b"],
        &["EVAL", "return 1", "2", "a", "b"],
        &["FCALL", "f", "2", "a", "b"],
        &["BLMOVE", "a", "b", "LEFT", "LEFT", "0"],
    ] {
        assert_eq!(
            decide(atomic),
            Decision::Error("CROSSSLOT Keys in request don't hash to the same slot".into()),
            "{atomic:?}"
        );
    }
}

#[test]
fn cluster_wide_commands() {
    let all = |combine, readonly| Decision::Fanout(Fan::AllPrimaries { combine, readonly });
    assert_eq!(decide(&["DBSIZE"]), all(Combine::SumInt, true));
    assert_eq!(decide(&["KEYS", "*"]), all(Combine::Concat, true));
    assert_eq!(decide(&["FLUSHALL", "ASYNC"]), all(Combine::AllOk, false));
    assert_eq!(decide(&["RANDOMKEY"]), all(Combine::RandomNonNull, true));
    assert_eq!(decide(&["LASTSAVE"]), all(Combine::MinInt, true));
    assert_eq!(
        decide(&["SCRIPT", "EXISTS", "x"]),
        all(Combine::AndArrays, false)
    );
    assert_eq!(decide(&["FUNCTION", "LIST"]), all(Combine::First, true));
    assert_eq!(
        decide(&["SCRIPT", "LOAD", "return 1"]),
        Decision::Fanout(Fan::ScriptLoad)
    );
    assert_eq!(
        decide(&["script", "flush"]),
        Decision::Fanout(Fan::ScriptFlush)
    );
    assert_eq!(decide(&["SCAN", "0"]), Decision::Fanout(Fan::Scan));
    assert_eq!(decide(&["WAIT", "1", "0"]), Decision::Fanout(Fan::Wait));
    assert_eq!(decide(&["INFO"]), Decision::Fanout(Fan::Info));
    assert_eq!(
        decide(&["CONFIG", "SET", "a", "b"]),
        Decision::Fanout(Fan::AllNodes)
    );
    assert_eq!(
        decide(&["CONFIG", "GET", "a"]),
        Decision::Forward {
            slot: None,
            readonly: false
        }
    );
    assert_eq!(
        decide(&["TIME"]),
        Decision::Forward {
            slot: None,
            readonly: false
        }
    );
}

#[test]
fn scripts_route_by_keys() {
    assert_eq!(
        decide(&["EVAL", "return 1", "1", "foo"]),
        Decision::Eval {
            slot: Some(12182),
            readonly: false
        }
    );
    assert_eq!(
        decide(&["EVAL_RO", "return 1", "0"]),
        Decision::Eval {
            slot: None,
            readonly: true
        }
    );
    assert_eq!(
        decide(&["EVALSHA", "abc", "1", "foo"]),
        Decision::Forward {
            slot: Some(12182),
            readonly: false
        }
    );
}

#[test]
fn cluster_subcommands() {
    assert_eq!(
        decide(&["CLUSTER", "SLOTS"]),
        Decision::Local(LocalCmd::Cluster(ClusterCmd::Slots))
    );
    assert_eq!(
        decide(&["cluster", "keyslot", "foo"]),
        Decision::Local(LocalCmd::Cluster(ClusterCmd::KeySlot))
    );
    assert_eq!(
        decide(&["CLUSTER", "COUNTKEYSINSLOT", "12182"]),
        Decision::Forward {
            slot: Some(12182),
            readonly: true
        }
    );
    assert_eq!(
        decide(&["CLUSTER", "GETKEYSINSLOT", "99999", "10"]),
        Decision::Forward {
            slot: None,
            readonly: true
        }
    );
    assert_eq!(
        decide(&["CLUSTER", "MEET", "1.2.3.4", "5"]),
        Decision::Error("ERR slotway: CLUSTER MEET is not available through the proxy".into())
    );
    assert_eq!(
        decide(&["CLUSTER", "NOPE"]),
        Decision::Error("ERR unknown subcommand 'NOPE'. Try CLUSTER HELP.".into())
    );
}
