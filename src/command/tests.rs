//! Table-level tests: lookup, resolve, built-in invariants, policies, blocking.

use super::*;
use std::sync::OnceLock;

/// The built-in table, built once per test binary.
pub(crate) fn table() -> &'static CommandTable {
    static TABLE: OnceLock<CommandTable> = OnceLock::new();
    TABLE.get_or_init(CommandTable::builtin)
}

/// A request of space-separated words as raw bytes plus each word's byte range.
pub(crate) fn request(line: &str) -> (Vec<u8>, Vec<Range<usize>>) {
    let mut raw = Vec::new();
    let mut args = Vec::new();
    for word in line.split(' ').filter(|w| !w.is_empty()) {
        // `''` stands for an empty argument.
        let word = if word == "''" { "" } else { word };
        args.push(raw.len()..raw.len() + word.len());
        raw.extend_from_slice(word.as_bytes());
        raw.push(b' ');
    }
    (raw, args)
}

fn resolve(line: &str) -> Option<&'static CommandSpec> {
    let (raw, args) = request(line);
    table().resolve(&raw, &args)
}

#[test]
fn every_redis_7_0_command_is_there() {
    let t = table();
    assert_eq!(t.len(), 240);
    assert_eq!(t.iter().map(|c| c.subcommands.len()).sum::<usize>(), 126);
    for spec in t.iter() {
        assert!(!spec.name.contains('|'), "{}", spec.name);
        for sub in &spec.subcommands {
            assert!(
                sub.name.starts_with(&format!("{}|", spec.name)),
                "{}",
                sub.name
            );
            assert!(sub.subcommands.is_empty());
        }
    }
}

#[test]
fn lookup_is_case_insensitive() {
    let t = table();
    for name in ["get", "GET", "Get", "gEt"] {
        assert_eq!(
            t.lookup(name.as_bytes()).map(|c| c.name.as_str()),
            Some("get")
        );
    }
    assert_eq!(t.lookup(b"ZUNIONSTORE").unwrap().name, "zunionstore");
    assert!(t.lookup(b"nosuchcommand").is_none());
    assert!(t.lookup(b"").is_none());
    assert!(t.lookup(&[b'a'; 1000]).is_none());
    assert!(
        t.lookup(b"object|encoding").is_none(),
        "subcommands are not top-level"
    );
    assert!(t.lookup(&[0xff, 0xfe]).is_none());
}

#[test]
fn resolve_descends_into_subcommands() {
    assert_eq!(
        resolve("OBJECT ENCODING k").unwrap().name,
        "object|encoding"
    );
    assert_eq!(resolve("memory usage k").unwrap().name, "memory|usage");
    assert_eq!(resolve("XINFO Stream k").unwrap().name, "xinfo|stream");
    assert_eq!(resolve("SCRIPT LOAD x").unwrap().name, "script|load");
    assert_eq!(resolve("client setname x").unwrap().name, "client|setname");
    // Unknown or missing subcommand: the container itself.
    assert_eq!(resolve("OBJECT nope k").unwrap().name, "object");
    assert_eq!(resolve("OBJECT").unwrap().name, "object");
    // Not a container: args[1] is an argument.
    assert_eq!(resolve("GET encoding").unwrap().name, "get");
    assert!(resolve("").is_none());
    assert!(resolve("nosuch x").is_none());
}

#[test]
fn resolve_survives_bad_ranges() {
    let t = table();
    let raw = b"GET".to_vec();
    // A lone range is the point here, not a typo for `0..10` as a list of indices.
    #[allow(clippy::single_range_in_vec_init, clippy::reversed_empty_ranges)]
    let (past_end, backwards) = ([0..10], [2..1]);
    assert!(t.resolve(&raw, &past_end).is_none());
    assert!(t.resolve(&raw, &backwards).is_none());
    assert_eq!(t.resolve(b"OBJECT", &[0..6, 7..20]).unwrap().name, "object");
}

#[test]
fn policies() {
    let p = |line: &str| resolve(line).unwrap().policy;
    assert_eq!(p("GET k"), Policy::Keyed);
    assert_eq!(p("MSETNX a 1 b 2"), Policy::Keyed);
    assert_eq!(p("EVAL s 0"), Policy::Keyed);
    assert_eq!(p("MGET a b"), Policy::Split(Merge::Values));
    assert_eq!(p("MSET a 1"), Policy::Split(Merge::AllOk));
    for cmd in ["DEL", "UNLINK", "EXISTS", "TOUCH"] {
        assert_eq!(p(cmd), Policy::Split(Merge::SumInt), "{cmd}");
    }
    assert_eq!(p("DBSIZE"), Policy::AllPrimaries(Merge::SumInt));
    assert_eq!(p("KEYS *"), Policy::AllPrimaries(Merge::Concat));
    assert_eq!(p("FLUSHALL"), Policy::AllPrimaries(Merge::AllOk));
    assert_eq!(p("SCRIPT LOAD s"), Policy::AllPrimaries(Merge::AllEqual));
    assert_eq!(p("SCRIPT EXISTS a"), Policy::AllPrimaries(Merge::AndArrays));
    assert_eq!(p("FUNCTION LOAD s"), Policy::AllPrimaries(Merge::AllEqual));
    for line in [
        "COMMAND",
        "TIME",
        "LASTSAVE",
        "PUBLISH c m",
        "FUNCTION LIST",
        "FUNCTION DUMP",
    ] {
        assert_eq!(p(line), Policy::AnyPrimary, "{line}");
    }
    for line in [
        "PING",
        "ECHO x",
        "QUIT",
        "SELECT 0",
        "HELLO",
        "AUTH p",
        "RESET",
        "CLIENT ID",
    ] {
        assert_eq!(p(line), Policy::Local, "{line}");
    }
    assert_eq!(p("CLUSTER SLOTS"), Policy::Local);
    assert_eq!(p("INFO"), Policy::Local);
    for cmd in ["MULTI", "EXEC", "DISCARD", "WATCH k", "UNWATCH"] {
        assert_eq!(p(cmd), Policy::Transaction, "{cmd}");
    }
    for cmd in [
        "SUBSCRIBE",
        "PSUBSCRIBE",
        "UNSUBSCRIBE",
        "PUNSUBSCRIBE",
        "SSUBSCRIBE",
        "SUNSUBSCRIBE",
    ] {
        assert_eq!(p(cmd), Policy::PubSub, "{cmd}");
    }
    assert_eq!(p("SPUBLISH c m"), Policy::Keyed);
    assert_eq!(p("SCAN 0"), Policy::Scan);
    for cmd in ["MONITOR", "SYNC", "PSYNC", "REPLCONF"] {
        assert_eq!(p(cmd), Policy::Unsupported, "{cmd}");
    }
}

#[test]
fn every_keyed_command_has_key_specs() {
    for spec in table()
        .iter()
        .flat_map(|c| std::iter::once(c).chain(&c.subcommands))
    {
        let has_keys = !spec.key_specs.is_empty();
        if spec.policy == Policy::Keyed || matches!(spec.policy, Policy::Split(_)) {
            assert!(has_keys, "{} is keyed without key specs", spec.name);
        }
        if has_keys {
            let keyless_ok = matches!(spec.policy, Policy::Transaction | Policy::PubSub);
            assert!(
                keyless_ok || spec.policy != Policy::AnyPrimary,
                "{}",
                spec.name
            );
        }
    }
}

#[test]
fn blocking() {
    let blocks = |line: &str| {
        let (raw, args) = request(line);
        table().resolve(&raw, &args).unwrap().blocks(&raw, &args)
    };
    assert!(blocks("BLPOP k 0"));
    assert!(blocks("BZPOPMIN k 0"));
    assert!(blocks("BLMOVE a b LEFT RIGHT 0"));
    assert!(blocks("WAIT 1 0"));
    assert!(blocks("XREAD COUNT 2 BLOCK 0 STREAMS s $"));
    assert!(blocks("xread block 10 streams s $"));
    assert!(blocks(
        "XREADGROUP GROUP g c COUNT 1 BLOCK 0 NOACK STREAMS s >"
    ));
    assert!(!blocks("XREAD COUNT 2 STREAMS s 0"));
    assert!(
        !blocks("XREAD STREAMS block 0"),
        "a stream named block is not the option"
    );
    assert!(!blocks("XREADGROUP GROUP block c STREAMS s >"));
    assert!(!blocks("XREAD COUNT"));
    assert!(!blocks("GET k"));
}

#[test]
fn docs_iteration_is_sorted() {
    let names: Vec<&str> = table().iter().map(|c| c.name.as_str()).collect();
    let mut sorted = names.clone();
    sorted.sort_unstable();
    assert_eq!(names, sorted);
}
