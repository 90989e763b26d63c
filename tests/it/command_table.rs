//! Checks the built-in command table against a live Redis 7.0 so it cannot drift: every command and
//! subcommand with the same arity, flags and key specs; the same keys as `COMMAND GETKEYS` for sample
//! invocations; the same error text for malformed ones; and a table learned from `COMMAND` routes alike.

use crate::common::standalone::Standalone;
use redis_protocol::resp2::decode::decode;
use redis_protocol::resp2::types::OwnedFrame;
use slotway::command::{CommandSpec, CommandTable};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::ops::Range;
use std::time::Duration;

/// A throwaway redis-server (the shared harness's, killed on drop) and one connection to it.
struct Server {
    conn: TcpStream,
    _server: Standalone,
}

impl Server {
    fn start() -> Server {
        let server = Standalone::start();
        let conn = TcpStream::connect(server.addr()).expect("connect to redis-server");
        conn.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut server = Server {
            conn,
            _server: server,
        };
        assert_eq!(
            server.call(&["PING"]),
            OwnedFrame::SimpleString(b"PONG".to_vec())
        );
        server
    }

    fn call(&mut self, args: &[&str]) -> OwnedFrame {
        let mut req = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            req.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
        }
        self.conn.write_all(&req).unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 65536];
        loop {
            if let Some((frame, _)) = decode(&buf).unwrap() {
                return frame;
            }
            let n = self.conn.read(&mut chunk).unwrap();
            assert!(n > 0, "server closed the connection");
            buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// Sample invocations whose keys `COMMAND GETKEYS` can report (`''` is an empty argument).
const SAMPLES: &[&str] = &[
    "GET k",
    "SET k v EX 10 GET",
    "MSET a 1 b 2 c 3",
    "MGET a b c",
    "DEL a b",
    "UNLINK a",
    "EXISTS a b a",
    "TOUCH a",
    "MSETNX a 1 b 2",
    "RENAME a b",
    "COPY a b DB 0",
    "LMOVE a b LEFT RIGHT",
    "BLMOVE a b LEFT RIGHT 0",
    "BLPOP a b 0",
    "BRPOPLPUSH a b 0",
    "BZPOPMIN a b 0",
    "EVAL s 2 a b x",
    "EVAL s 0",
    "EVALSHA s 1 a",
    "EVAL_RO s 1 a x",
    "FCALL f 2 a b x",
    "FCALL_RO f 0 x",
    "ZUNIONSTORE d 2 a b WEIGHTS 1 2",
    "ZINTERSTORE d 1 a",
    "ZDIFFSTORE d 2 a b",
    "ZUNION 2 a b",
    "ZINTER 1 a WITHSCORES",
    "ZDIFF 2 a b",
    "SINTERCARD 2 a b LIMIT 1",
    "ZINTERCARD 2 a b",
    "LMPOP 2 a b LEFT",
    "BLMPOP 0 1 a RIGHT COUNT 2",
    "ZMPOP 2 a b MIN",
    "BZMPOP 0 1 a MAX",
    "XREAD COUNT 1 STREAMS a b 0 0",
    "XREAD BLOCK 0 STREAMS a $",
    "XREADGROUP GROUP g c COUNT 1 STREAMS a b > >",
    "XADD s * f v",
    "XINFO STREAM s FULL",
    "XGROUP CREATE s g $ MKSTREAM",
    "XAUTOCLAIM s g c 0 0",
    "SORT k",
    "SORT k STORE d",
    "SORT k BY w_* GET o_* LIMIT 0 1 STORE d",
    "SORT_RO k BY w",
    "MIGRATE h 1 k 0 1000",
    "MIGRATE h 1 '' 0 1000 COPY KEYS a b",
    "OBJECT ENCODING k",
    "OBJECT FREQ k",
    "MEMORY USAGE k",
    "GEORADIUS k 0 0 1 km STORE d",
    "GEORADIUS k 0 0 1 km STOREDIST d",
    "GEORADIUSBYMEMBER k m 1 km STORE d",
    "GEOSEARCHSTORE d k FROMMEMBER m BYRADIUS 1 km",
    "BITFIELD k GET u8 0",
    "BITFIELD_RO k GET u8 0",
    "BITOP AND d a b",
    "LCS a b",
    "PFMERGE d a b",
    "PFCOUNT a b",
    "SMOVE a b m",
    "SUNIONSTORE d a b",
    "SDIFF a b",
    "RPOPLPUSH a b",
    "GETEX k PERSIST",
    "GETDEL k",
    "HSET k f v",
    "SETRANGE k 0 v",
    "RESTORE k 0 x",
    "DUMP k",
    "WATCH a b",
    "GEOSEARCH k FROMMEMBER m BYBOX 1 1 km",
    "EXPIRETIME k",
    "OBJECT IDLETIME k",
    "XSETID s 0-1",
    "ZRANGESTORE d s 0 -1",
    "LPOS k v",
    "RENAMENX a b",
    "MOVE k 1",
];

/// Shard-channel commands: channels hash like keys (`not_key` specs), which `COMMAND GETKEYS` omits.
const SHARD_SAMPLES: &[(&str, &[&str])] = &[
    ("SPUBLISH ch m", &["ch"]),
    ("SSUBSCRIBE a b", &["a", "b"]),
    ("SUNSUBSCRIBE a", &["a"]),
];

/// Malformed invocations whose error we answer ourselves; the server must say exactly the same.
const BAD: &[&str] = &[
    "EVAL s 2 a",
    "EVAL s -1",
    "EVAL s x",
    "EVAL s 9223372036854775807 a",
    "ZUNIONSTORE d 0 a",
    "ZUNIONSTORE d 3 a",
    "ZUNIONSTORE d x a",
    "ZINTER -1 a",
    "ZDIFF 5 a",
    "ZINTERCARD 0 a",
    "ZINTERCARD 2 a",
    "SINTERCARD 0 a",
    "SINTERCARD x a",
    "SINTERCARD 3 a",
    "LMPOP 0 a LEFT",
    "LMPOP 3 a LEFT",
    "BLMPOP 0 x a LEFT",
    "ZMPOP 5 a MIN",
    "BZMPOP 0 -2 a MAX",
    "XREAD STREAMS a b c",
    "XREADGROUP GROUP g c STREAMS a b c",
    "XREAD BLOCK 0 STREAMS",
    "XREAD COUNT 1 a 0",
];

fn words(line: &str) -> Vec<&str> {
    line.split(' ')
        .map(|w| if w == "''" { "" } else { w })
        .collect()
}

fn request(line: &str) -> (Vec<u8>, Vec<Range<usize>>) {
    let mut raw = Vec::new();
    let mut args = Vec::new();
    for w in words(line) {
        args.push(raw.len()..raw.len() + w.len());
        raw.extend_from_slice(w.as_bytes());
        raw.push(b'\n');
    }
    (raw, args)
}

/// The spec `line` resolves to and the key names it extracts.
fn route<'t>(
    table: &'t CommandTable,
    line: &str,
) -> (&'t CommandSpec, Result<Vec<String>, String>) {
    let (raw, args) = request(line);
    let spec = table
        .resolve(&raw, &args)
        .unwrap_or_else(|| panic!("{line}: unknown"));
    let mut out = Vec::new();
    let keys = spec
        .key_indices(&raw, &args, &mut out)
        .map(|()| {
            out.iter()
                .map(|&i| String::from_utf8_lossy(&raw[args[i].clone()]).into_owned())
                .collect()
        })
        .map_err(|e| e.to_string());
    (spec, keys)
}

fn strings(frame: &OwnedFrame) -> Vec<String> {
    match frame {
        OwnedFrame::Array(items) => items.iter().flat_map(strings).collect(),
        OwnedFrame::BulkString(s) | OwnedFrame::SimpleString(s) => {
            vec![String::from_utf8_lossy(s).into_owned()]
        }
        other => panic!("unexpected {other:?}"),
    }
}

fn all(table: &CommandTable) -> Vec<&CommandSpec> {
    table
        .iter()
        .flat_map(|c| std::iter::once(c).chain(&c.subcommands))
        .collect()
}

fn find<'t>(table: &'t CommandTable, name: &str) -> Option<&'t CommandSpec> {
    match name.split_once('|') {
        Some((parent, sub)) => table.lookup(parent.as_bytes())?.subcommand(sub.as_bytes()),
        None => table.lookup(name.as_bytes()),
    }
}

#[test]
fn builtin_table_matches_redis() {
    let mut server = Server::start();
    let reply = server.call(&["COMMAND"]);
    let builtin = CommandTable::builtin();
    let mut served = CommandTable::empty();
    let learned = served.learn(&reply).expect("COMMAND reply parses");
    assert_eq!(learned, all(&served).len());

    // Same commands both ways, with the same arity, flags and key specs.
    assert_eq!(all(&served).len(), all(&builtin).len(), "command count");
    for theirs in all(&served) {
        let ours =
            find(&builtin, &theirs.name).unwrap_or_else(|| panic!("{} missing", theirs.name));
        assert_eq!(ours.name, theirs.name);
        assert_eq!(ours.arity, theirs.arity, "{} arity", theirs.name);
        assert_eq!(ours.flags, theirs.flags, "{} flags", theirs.name);
        assert_eq!(
            ours.key_specs, theirs.key_specs,
            "{} key specs",
            theirs.name
        );
        assert_eq!(
            ours.subcommands.len(),
            theirs.subcommands.len(),
            "{} subcommands",
            theirs.name
        );
    }

    // Same keys as the server reports for sample invocations, and the learned table routes alike.
    let mut overlaid = CommandTable::builtin();
    assert_eq!(overlaid.learn(&reply), Ok(learned));
    let shard = SHARD_SAMPLES.iter().map(|&(line, keys)| (line, Some(keys)));
    for (line, known) in SAMPLES.iter().map(|&line| (line, None)).chain(shard) {
        let expected: Vec<String> = match known {
            Some(keys) => keys.iter().map(|k| k.to_string()).collect(),
            None => {
                let mut getkeys = vec!["COMMAND", "GETKEYS"];
                getkeys.extend(words(line));
                strings(&server.call(&getkeys))
            }
        };
        let (spec, keys) = route(&builtin, line);
        assert_eq!(keys.as_deref(), Ok(&expected[..]), "{line}");
        let (learned_spec, learned_keys) = route(&overlaid, line);
        assert_eq!(learned_keys, keys, "{line} (learned over built-in)");
        assert_eq!(learned_spec.policy, spec.policy, "{line}");
        let (raw, args) = request(line);
        assert_eq!(
            learned_spec.blocks(&raw, &args),
            spec.blocks(&raw, &args),
            "{line}"
        );
        assert_eq!(route(&served, line).1, keys, "{line} (learned only)");
    }
    for spec in all(&builtin) {
        assert_eq!(
            find(&overlaid, &spec.name).map(|s| s.policy),
            Some(spec.policy),
            "{}",
            spec.name
        );
    }
}

#[test]
fn key_errors_match_redis_errors() {
    let mut server = Server::start();
    let table = CommandTable::builtin();
    for line in BAD {
        let (_, keys) = route(&table, line);
        let ours = keys.expect_err(line);
        match server.call(&words(line)) {
            OwnedFrame::Error(theirs) => assert_eq!(ours, theirs, "{line}"),
            other => panic!("{line}: server answered {other:?}"),
        }
    }
    for line in [
        "GET",
        "GET a b",
        "OBJECT ENCODING",
        "MSET a",
        "XINFO STREAM",
    ] {
        let (raw, args) = request(line);
        let spec = table.resolve(&raw, &args).unwrap();
        let ours = spec.check_arity(args.len()).expect_err(line).to_string();
        match server.call(&words(line)) {
            OwnedFrame::Error(theirs) => assert_eq!(ours, theirs, "{line}"),
            other => panic!("{line}: server answered {other:?}"),
        }
    }
}
