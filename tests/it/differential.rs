//! Differential test: one scripted session covering every data type, run against a single
//! standalone Redis directly and through slotway to a 3-shard cluster, in RESP2 and in RESP3;
//! the raw replies must agree byte for byte.
//!
//! Every key carries the hash tag `{d}` so multi-key commands stay in one slot, as a cluster
//! requires. Nothing the two setups may legitimately answer differently is compared: stream
//! IDs are explicit, expiries are read back only as absolute times set by the session, sets
//! hold integers or one member (so their order does not depend on the process's hash seed),
//! and `HELLO` (connection id) is sent but not compared.

use crate::common::cluster::TestCluster;
use crate::common::proxy::TestProxy;
use crate::common::resp::Raw;
use crate::common::standalone::Standalone;

/// A library for the FUNCTION commands (`\n` is a line break inside a quoted argument).
const LIBRARY: &str = "#!lua name=dlib\\nredis.register_function('dget', function(keys, args) return redis.call('GET', keys[1]) end)";
/// A second library with one read-only function (FUNCTION LIST orders a library's functions
/// by the process's hash seed, so each library listed holds one).
const LIBRARY_RO: &str = "#!lua name=dlibro\\nredis.register_function{function_name='dlen', callback=function(keys, args) return redis.call('STRLEN', keys[1]) end, flags={'no-writes'}}";

/// The scripted session. `"…"` quotes an argument with spaces; `@dump` stands for the payload
/// of the last `DUMP` reply; `@sha` for the last `SCRIPT LOAD`'s; `@lib` and `@libro` for
/// [`LIBRARY`] and [`LIBRARY_RO`].
const SESSION: &[&str] = &[
    "FLUSHALL",
    "SCRIPT FLUSH",
    "FUNCTION FLUSH",
    "PING",
    "PING hi",
    "ECHO hello",
    // Strings.
    "SET {d}s hello",
    "GET {d}s",
    "GET {d}missing",
    "APPEND {d}s \" world\"",
    "STRLEN {d}s",
    "GETRANGE {d}s 0 4",
    "SUBSTR {d}s 6 -1",
    "SETRANGE {d}s 6 W",
    "GET {d}s",
    "SET {d}n 10",
    "INCR {d}n",
    "INCRBY {d}n 5",
    "DECR {d}n",
    "DECRBY {d}n 3",
    "INCR {d}s",
    "INCRBYFLOAT {d}f 1.5",
    "INCRBYFLOAT {d}f 2.25",
    "MSET {d}a 1 {d}b 2",
    "MGET {d}a {d}b {d}missing",
    "MSETNX {d}a 1 {d}c 3",
    "MSETNX {d}c 3 {d}c2 4",
    "SETNX {d}a 9",
    "GETSET {d}a 11",
    "GETDEL {d}c",
    "GETDEL {d}c",
    "GETEX {d}a PERSIST",
    "SET {d}x v NX",
    "SET {d}x w XX GET",
    "SET {d}x w NX GET",
    "SET {d}s2 hewlett",
    "LCS {d}s {d}s2",
    "LCS {d}s {d}s2 LEN",
    "LCS {d}s {d}s2 IDX MINMATCHLEN 2 WITHMATCHLEN",
    "SETEX {d}se 1000 v",
    "PSETEX {d}pse 1000000 v",
    // Bitmaps and bit fields.
    "SETBIT {d}bm 7 1",
    "SETBIT {d}bm 12 1",
    "GETBIT {d}bm 7",
    "GETBIT {d}bm 100",
    "BITCOUNT {d}bm",
    "BITCOUNT {d}bm 0 0",
    "BITPOS {d}bm 1",
    "BITPOS {d}bm 0 1",
    "BITOP AND {d}bd {d}bm {d}s",
    "BITOP NOT {d}bn {d}bm",
    "GET {d}bn",
    "BITFIELD {d}bf SET u8 0 200 GET u8 0 INCRBY u8 0 100 OVERFLOW SAT INCRBY u8 0 100",
    "BITFIELD_RO {d}bf GET u4 0",
    // Lists.
    "RPUSH {d}l a b c d",
    "LPUSH {d}l z",
    "LRANGE {d}l 0 -1",
    "LLEN {d}l",
    "LINDEX {d}l 2",
    "LINDEX {d}l 99",
    "LINSERT {d}l BEFORE c bb",
    "LSET {d}l 0 zz",
    "LREM {d}l 1 zz",
    "LPOS {d}l c",
    "LPOS {d}l nope",
    "LPOP {d}l",
    "RPOP {d}l 2",
    "LPOP {d}missing 2",
    "RPUSH {d}l e f g",
    "LTRIM {d}l 0 3",
    "LMOVE {d}l {d}l2 LEFT RIGHT",
    "RPOPLPUSH {d}l {d}l2",
    "LMPOP 2 {d}nol {d}l LEFT COUNT 2",
    "LRANGE {d}l2 0 -1",
    "BLPOP {d}l2 1",
    "BLPOP {d}nol 0.05",
    "BLMOVE {d}l2 {d}l3 RIGHT LEFT 1",
    "LPUSHX {d}nol a",
    "RPUSHX {d}l3 b",
    "OBJECT ENCODING {d}l3",
    "SORT {d}l3 ALPHA",
    "SORT_RO {d}l3 ALPHA DESC",
    // Hashes.
    "HSET {d}h f1 v1 f2 v2 n 5",
    "HGET {d}h f1",
    "HGET {d}h nope",
    "HMGET {d}h f1 nope f2",
    "HGETALL {d}h",
    "HGETALL {d}missing",
    "HKEYS {d}h",
    "HVALS {d}h",
    "HLEN {d}h",
    "HEXISTS {d}h f2",
    "HDEL {d}h f2 nope",
    "HINCRBY {d}h n 3",
    "HINCRBYFLOAT {d}h n 0.5",
    "HSETNX {d}h f1 x",
    "HSTRLEN {d}h f1",
    "HMSET {d}h1 only v",
    "HRANDFIELD {d}h1",
    "HRANDFIELD {d}h1 1 WITHVALUES",
    "HSCAN {d}h 0",
    "OBJECT ENCODING {d}h",
    // Sets (integers: an intset keeps them ordered in every process).
    "SADD {d}st 3 1 2",
    "SADD {d}st 2 4",
    "SMEMBERS {d}st",
    "SISMEMBER {d}st 3",
    "SMISMEMBER {d}st 1 9",
    "SCARD {d}st",
    "SREM {d}st 4 9",
    "SADD {d}st2 2 3 5",
    "SINTER {d}st {d}st2",
    "SUNION {d}st {d}st2",
    "SDIFF {d}st {d}st2",
    "SINTERCARD 2 {d}st {d}st2",
    "SINTERSTORE {d}sti {d}st {d}st2",
    "SUNIONSTORE {d}stu {d}st {d}st2",
    "SDIFFSTORE {d}std {d}st {d}st2",
    "SMEMBERS {d}stu",
    "SMOVE {d}st {d}st2 1",
    "SADD {d}one solo",
    "SMEMBERS {d}one",
    "SRANDMEMBER {d}one",
    "SPOP {d}one",
    "SPOP {d}one",
    "SSCAN {d}st 0",
    "OBJECT ENCODING {d}st",
    // Sorted sets.
    "ZADD {d}z 1 a 2 b 3 c",
    "ZADD {d}z INCR 1.5 a",
    "ZADD {d}z NX 9 a",
    "ZSCORE {d}z a",
    "ZSCORE {d}z nope",
    "ZMSCORE {d}z a nope c",
    "ZINCRBY {d}z 0.25 b",
    "ZRANGE {d}z 0 -1",
    "ZRANGE {d}z 0 -1 WITHSCORES",
    "ZRANGE {d}z (1 +inf BYSCORE LIMIT 0 2 WITHSCORES",
    "ZRANGEBYSCORE {d}z 0 3 WITHSCORES",
    "ZREVRANGE {d}z 0 1 WITHSCORES",
    "ZREVRANGEBYSCORE {d}z +inf 2",
    "ZADD {d}zl 0 a 0 b 0 c",
    "ZRANGEBYLEX {d}zl [a (c",
    "ZLEXCOUNT {d}zl - +",
    "ZCOUNT {d}z 1 3",
    "ZRANK {d}z c",
    "ZREVRANK {d}z c",
    "ZCARD {d}z",
    "ZADD {d}z2 5 b 6 x",
    "ZUNIONSTORE {d}zu 2 {d}z {d}z2 WEIGHTS 1 2",
    "ZRANGE {d}zu 0 -1 WITHSCORES",
    "ZINTER 2 {d}z {d}z2 WITHSCORES",
    "ZUNION 2 {d}z {d}z2 AGGREGATE MAX WITHSCORES",
    "ZDIFF 2 {d}z {d}z2 WITHSCORES",
    "ZINTERCARD 2 {d}z {d}z2",
    "ZRANGESTORE {d}zr {d}z 0 1",
    "ZADD {d}z1 7 only",
    "ZRANDMEMBER {d}z1 1 WITHSCORES",
    "ZPOPMIN {d}z",
    "ZPOPMAX {d}z 2",
    "ZMPOP 2 {d}none {d}zu MIN COUNT 2",
    "BZPOPMIN {d}zu 1",
    "BZMPOP 1 2 {d}none {d}zu MAX",
    "ZREM {d}zl a nope",
    "ZREMRANGEBYSCORE {d}zu -inf +inf",
    "ZSCAN {d}zl 0",
    "OBJECT ENCODING {d}zl",
    // HyperLogLog.
    "PFADD {d}hll a b c",
    "PFADD {d}hll a",
    "PFCOUNT {d}hll",
    "PFADD {d}hll2 c d",
    "PFMERGE {d}hll3 {d}hll {d}hll2",
    "PFCOUNT {d}hll3",
    "PFCOUNT {d}hll {d}hll2",
    "GET {d}hll",
    // Geo.
    "GEOADD {d}geo 13.361389 38.115556 Palermo 15.087269 37.502669 Catania",
    "GEOPOS {d}geo Palermo nope",
    "GEODIST {d}geo Palermo Catania km",
    "GEOHASH {d}geo Palermo Catania",
    "GEOSEARCH {d}geo FROMLONLAT 15 37 BYRADIUS 200 km ASC",
    "GEOSEARCH {d}geo FROMMEMBER Palermo BYBOX 400 400 km ASC WITHDIST WITHCOORD WITHHASH",
    "GEORADIUS {d}geo 15 37 200 km WITHDIST ASC",
    "GEORADIUSBYMEMBER_RO {d}geo Palermo 300 km WITHCOORD ASC",
    "GEOSEARCHSTORE {d}geo2 {d}geo FROMLONLAT 15 37 BYRADIUS 500 km ASC STOREDIST",
    "ZRANGE {d}geo2 0 -1 WITHSCORES",
    // Streams, with explicit IDs.
    "XADD {d}x 1-1 f v",
    "XADD {d}x 2-1 g w",
    "XADD {d}x MAXLEN 10 3-1 h u",
    "XADD {d}x 3-1 dup dup",
    "XLEN {d}x",
    "XRANGE {d}x - +",
    "XRANGE {d}x (1-1 + COUNT 1",
    "XREVRANGE {d}x + - COUNT 1",
    "XREAD COUNT 2 STREAMS {d}x 0",
    "XREAD STREAMS {d}x {d}nox 0 0",
    "XREAD STREAMS {d}x 3-1",
    "XGROUP CREATE {d}x g 0",
    "XGROUP CREATE {d}x g 0",
    "XGROUP CREATECONSUMER {d}x g c0",
    "XREADGROUP GROUP g c COUNT 2 STREAMS {d}x >",
    "XREADGROUP GROUP g c STREAMS {d}x 0",
    "XPENDING {d}x g",
    "XACK {d}x g 1-1 9-9",
    "XCLAIM {d}x g c2 0 2-1 JUSTID",
    "XAUTOCLAIM {d}x g c3 0 0-0 JUSTID",
    "XINFO GROUPS {d}x",
    "XINFO STREAM {d}x",
    "XGROUP SETID {d}x g 1-1 ENTRIESREAD 1",
    "XGROUP DELCONSUMER {d}x g c3",
    "XDEL {d}x 2-1",
    "XTRIM {d}x MAXLEN 1",
    "XSETID {d}x 5-5",
    "XINFO STREAM {d}x",
    "XGROUP DESTROY {d}x g",
    // Expiry.
    "SET {d}e v EX 100000",
    "EXPIRE {d}e 200000 GT",
    "EXPIRE {d}e 100 LT",
    "EXPIREAT {d}e 4102444800",
    "EXPIRETIME {d}e",
    "PEXPIRETIME {d}e",
    "PEXPIREAT {d}e 4102444800123",
    "PEXPIRETIME {d}e",
    "SET {d}e v2 KEEPTTL",
    "EXPIRETIME {d}e",
    "PERSIST {d}e",
    "TTL {d}e",
    "PTTL {d}e",
    "TTL {d}missing",
    "EXPIRE {d}missing 10",
    "GETEX {d}e EXAT 4102444800",
    "EXPIRETIME {d}e",
    // Keys.
    "TYPE {d}s",
    "TYPE {d}l3",
    "TYPE {d}h",
    "TYPE {d}st",
    "TYPE {d}z2",
    "TYPE {d}x",
    "TYPE {d}missing",
    "EXISTS {d}a {d}b {d}missing {d}a",
    "TOUCH {d}a {d}missing",
    "OBJECT ENCODING {d}n",
    "OBJECT ENCODING {d}s",
    "OBJECT ENCODING {d}missing",
    "OBJECT REFCOUNT {d}s",
    "RENAME {d}a {d}a2",
    "RENAME {d}missing {d}a3",
    "RENAMENX {d}a2 {d}b",
    "COPY {d}h {d}hcopy",
    "COPY {d}h {d}hcopy",
    "COPY {d}h {d}hcopy REPLACE",
    "HGETALL {d}hcopy",
    "DUMP {d}n",
    "DUMP {d}missing",
    "RESTORE {d}r 0 @dump",
    "RESTORE {d}r 0 @dump",
    "RESTORE {d}r 0 @dump REPLACE",
    "GET {d}r",
    "DEL {d}a2 {d}b {d}missing",
    "UNLINK {d}hcopy",
    "DBSIZE",
    // Scripts.
    "EVAL \"return redis.call('GET', KEYS[1])\" 1 {d}s",
    "EVAL \"return {1, 'two', {3, false}, true}\" 0",
    "EVAL \"return redis.call('GET', KEYS[1])\" 1 {d}missing",
    "EVAL \"return {double=3.5}\" 0",
    "EVAL \"return {map={k='v'}}\" 0",
    "EVAL \"return {set={m=true}}\" 0",
    "EVAL \"redis.setresp(3); return redis.call('HGETALL', KEYS[1])\" 1 {d}h1",
    "EVAL \"redis.setresp(3); return redis.call('GET', KEYS[1])\" 1 {d}missing",
    "EVAL \"redis.setresp(3); return redis.call('ZSCORE', KEYS[1], 'only')\" 1 {d}z1",
    "EVAL \"return true\" 0",
    "EVAL \"return false\" 0",
    "EVAL \"return 3.99\" 0",
    "EVAL \"return redis.error_reply('MYERR custom')\" 0",
    "EVAL \"return redis.status_reply('FINE')\" 0",
    "EVAL \"return redis.call('INCR', KEYS[1])\" 1 {d}s",
    "EVAL \"return redis.call('INCRBY', KEYS[1], ARGV[1])\" 1 {d}n 7",
    "EVAL_RO \"return redis.call('GET', KEYS[1])\" 1 {d}n",
    "SCRIPT LOAD \"return ARGV[1]\"",
    "EVALSHA @sha 0 x",
    "EVALSHA ffffffffffffffffffffffffffffffffffffffff 0",
    "SCRIPT EXISTS @sha ffffffffffffffffffffffffffffffffffffffff",
    // Functions.
    "FUNCTION LOAD @lib",
    "FUNCTION LOAD @lib",
    "FUNCTION LOAD @libro",
    "FCALL dget 1 {d}s",
    "FCALL dget 1 {d}missing",
    "FCALL_RO dlen 1 {d}s",
    "FCALL_RO dget 1 {d}s",
    "FUNCTION LIST LIBRARYNAME dlibro",
    "FUNCTION LIST LIBRARYNAME dlib WITHCODE",
    "FUNCTION DELETE dlib",
    "FCALL dget 1 {d}s",
    // Transactions.
    "MULTI",
    "SET {d}t 1",
    "INCR {d}t",
    "GET {d}t",
    "HGETALL {d}h1",
    "ZSCORE {d}z1 only",
    "EXEC",
    "MULTI",
    "INCR {d}t",
    "DISCARD",
    "WATCH {d}t",
    "MULTI",
    "INCR {d}t",
    "EXEC",
    "UNWATCH",
    "WATCH {d}t",
    "SET {d}t 5",
    "MULTI",
    "INCR {d}t",
    "EXEC",
    "GET {d}t",
    "MULTI",
    "GET",
    "EXEC",
    "EXEC",
    "DISCARD",
    // Pub/Sub without subscribers.
    "PUBLISH ch m",
    "SPUBLISH {d}ch m",
    "PUBSUB NUMSUB ch {d}ch",
    "PUBSUB NUMSUB",
    "PUBSUB NUMPAT",
    "PUBSUB CHANNELS",
    "PUBSUB SHARDNUMSUB {d}ch",
    "PUBSUB SHARDCHANNELS",
    "DBSIZE",
];

/// Splits a session line into arguments: spaces separate, `"…"` quotes (with `\n`).
fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = line.trim();
    while !rest.is_empty() {
        if let Some(quoted) = rest.strip_prefix('"') {
            let end = quoted.find('"').expect("closing quote");
            out.push(quoted[..end].replace("\\n", "\n"));
            rest = quoted[end + 1..].trim_start();
        } else {
            let end = rest.find(' ').unwrap_or(rest.len());
            out.push(rest[..end].to_string());
            rest = rest[end..].trim_start();
        }
    }
    out
}

fn request(args: &[Vec<u8>]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// The payload of a bulk string reply.
fn bulk_payload(frame: &[u8]) -> Option<Vec<u8>> {
    let rest = frame.strip_prefix(b"$")?;
    let cr = rest.iter().position(|&b| b == b'\r')?;
    Some(rest.get(cr + 2..rest.len() - 2)?.to_vec())
}

/// Runs the session on `conn` (after `HELLO proto`) and returns each line with its reply.
fn run_session(conn: &mut Raw, proto: &str) -> Vec<(String, Vec<u8>)> {
    let hello = conn.call(&["HELLO", proto]);
    assert!(!hello.starts_with('-'), "HELLO {proto}: {hello}");
    let mut dump = Vec::new();
    let mut sha = Vec::new();
    let mut out = Vec::new();
    for line in SESSION {
        let args: Vec<Vec<u8>> = words(line)
            .into_iter()
            .map(|w| match w.as_str() {
                "@dump" => dump.clone(),
                "@sha" => sha.clone(),
                "@lib" => LIBRARY.replace("\\n", "\n").into_bytes(),
                "@libro" => LIBRARY_RO.replace("\\n", "\n").into_bytes(),
                _ => w.into_bytes(),
            })
            .collect();
        conn.send_bytes(&request(&args));
        let reply = conn.frame();
        if let Some(p) = bulk_payload(&reply) {
            if line.starts_with("DUMP") {
                dump = p;
            } else if line.starts_with("SCRIPT LOAD") {
                sha = p;
            }
        }
        out.push((line.to_string(), reply));
    }
    out
}

fn show(frame: &[u8]) -> String {
    String::from_utf8_lossy(frame).escape_debug().to_string()
}

#[test]
fn a_scripted_session_gets_the_same_replies_as_from_one_redis() {
    let reference = Standalone::start();
    let cluster = TestCluster::start_with(3, 0);
    let proxy = TestProxy::start(cluster.seeds());
    for proto in ["2", "3"] {
        let mut direct = Raw::connect(reference.addr());
        let mut through = Raw::connect(proxy.addr());
        let want = run_session(&mut direct, proto);
        let got = run_session(&mut through, proto);
        let mismatches: Vec<String> = want
            .iter()
            .zip(&got)
            .filter(|(w, g)| w.1 != g.1)
            .map(|(w, g)| {
                format!(
                    "RESP{proto} {}\n  redis:   {}\n  slotway: {}",
                    w.0,
                    show(&w.1),
                    show(&g.1)
                )
            })
            .collect();
        assert!(
            mismatches.is_empty(),
            "{} of {} replies differ:\n{}",
            mismatches.len(),
            want.len(),
            mismatches.join("\n")
        );
    }
}
