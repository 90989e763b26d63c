//! Which RESP3 shape each command's reply takes, for clients that chose RESP3 with `HELLO 3`.
//!
//! The table below lists every Redis 7.0 command whose RESP3 reply differs from its RESP2
//! reply by more than nulls (checked against a 7.0.15 server; `tests/it/resp3.rs` compares the
//! proxy's RESP3 replies with a node's own). Commands not listed only get the null rewrite.

use std::ops::Range;

use crate::command::CommandSpec;
use crate::protocol::resp3::Shape;

const KEEP: Shape = Shape::Keep;
const DOUBLE: Shape = Shape::Double;
const MAP: Shape = Shape::Map(&KEEP);
const MAP_OF_MAPS: Shape = Shape::Map(&MAP);
const MAPS: Shape = Shape::Array(&MAP);
const SCORE_PAIRS: Shape = Shape::Pairs(&DOUBLE);
const MEMBER_SCORE: Shape = Shape::Tuple(&[KEEP, DOUBLE]);
const KEY_MEMBER_SCORE: Shape = Shape::Tuple(&[KEEP, KEEP, DOUBLE]);
const KEY_AND_SCORED: Shape = Shape::Tuple(&[KEEP, Shape::Array(&MEMBER_SCORE)]);
const COORDS: Shape = Shape::Array(&DOUBLE);
const GEO_ITEMS: Shape = Shape::Array(&Shape::ArraysOf(&COORDS));
const XINFO_STREAM: Shape = Shape::MapWith(&[(
    "groups",
    Shape::Array(&Shape::MapWith(&[("consumers", MAPS)])),
)]);
const FUNCTION_LIST: Shape = Shape::Array(&Shape::MapWith(&[(
    "functions",
    Shape::Array(&Shape::MapWith(&[("flags", Shape::Set)])),
)]));

/// A key specification in `COMMAND INFO`: a map whose search specs are maps.
const KEY_SPEC: Shape = Shape::MapWith(&[
    ("flags", Shape::Set),
    ("begin_search", Shape::MapWith(&[("spec", MAP)])),
    ("find_keys", Shape::MapWith(&[("spec", MAP)])),
]);
/// One command in `COMMAND` / `COMMAND INFO`: flags, ACL categories, tips and key specs are
/// sets; `subcommands` holds commands of the same form (without subcommands of their own).
/// Shapes are spelt out level by level rather than recursive, so they stay comparable and
/// printable.
macro_rules! command_entry {
    ($subcommands:expr) => {
        Shape::Tuple(&[
            KEEP,
            KEEP,
            Shape::Set,
            KEEP,
            KEEP,
            KEEP,
            Shape::Set,
            Shape::Set,
            Shape::SetOf(&KEY_SPEC),
            Shape::EmptySetOr(&$subcommands),
        ])
    };
}
const SUBCOMMAND_ENTRY: Shape = command_entry!(KEEP);
const COMMAND_ENTRY: Shape = command_entry!(SUBCOMMAND_ENTRY);
/// An argument in `COMMAND DOCS` whose nested arguments take the given shape.
macro_rules! doc_arg {
    ($nested:expr) => {
        Shape::MapWith(&[("flags", Shape::Set), ("arguments", Shape::Array(&$nested))])
    };
}
const DOC_ARG_4: Shape = doc_arg!(KEEP);
const DOC_ARG_3: Shape = doc_arg!(DOC_ARG_4);
const DOC_ARG_2: Shape = doc_arg!(DOC_ARG_3);
const DOC_ARG: Shape = doc_arg!(DOC_ARG_2);
/// One command's `COMMAND DOCS` entry; `subcommands` maps names to entries of the same form.
macro_rules! doc {
    ($subcommands:expr) => {
        Shape::MapWith(&[
            ("doc_flags", Shape::Set),
            ("history", Shape::Set),
            ("arguments", Shape::Array(&DOC_ARG)),
            ("subcommands", Shape::Map(&$subcommands)),
        ])
    };
}
const SUBCOMMAND_DOC: Shape = doc!(KEEP);
const DOC: Shape = doc!(SUBCOMMAND_DOC);

/// The RESP3 shape of the reply to the request `args` of `req`, resolved to `spec`.
pub fn shape_for(spec: &CommandSpec, req: &[u8], args: &[Range<usize>]) -> Shape {
    let has = |word: &[u8]| {
        args.iter()
            .skip(1)
            .any(|r| req[r.clone()].eq_ignore_ascii_case(word))
    };
    match spec.name.as_str() {
        "hgetall" | "config|get" | "lcs" => MAP,
        "xread" | "xreadgroup" => Shape::MapOfPairs(&KEEP),
        "memory|stats" => MAP_OF_MAPS,
        "function|stats" | "latency|histogram" => Shape::Map(&MAP_OF_MAPS),
        "function|list" => FUNCTION_LIST,
        "xinfo|stream" => XINFO_STREAM,
        "xinfo|groups" | "xinfo|consumers" => MAPS,
        "command" | "command|info" => Shape::Array(&COMMAND_ENTRY),
        "command|docs" => Shape::Map(&DOC),
        "command|getkeysandflags" => Shape::Array(&Shape::Tuple(&[KEEP, Shape::Set])),
        "acl|getuser" => Shape::MapWith(&[("flags", Shape::Set), ("selectors", MAPS)]),
        "hrandfield" if has(b"withvalues") => Shape::Pairs(&KEEP),
        "smembers" | "sinter" | "sunion" | "sdiff" | "spop" => Shape::Set,
        "zscore" | "zincrby" | "zadd" => DOUBLE,
        "zmscore" => Shape::Array(&DOUBLE),
        "geopos" => Shape::Array(&COORDS),
        "georadius"
        | "georadius_ro"
        | "georadiusbymember"
        | "georadiusbymember_ro"
        | "geosearch"
            if has(b"withcoord") =>
        {
            GEO_ITEMS
        }
        "zrange" | "zrangebyscore" | "zrevrange" | "zrevrangebyscore" | "zunion" | "zinter"
        | "zdiff" | "zrandmember"
            if has(b"withscores") =>
        {
            SCORE_PAIRS
        }
        "zpopmin" | "zpopmax" if args.len() > 2 => SCORE_PAIRS,
        "zpopmin" | "zpopmax" => MEMBER_SCORE,
        "bzpopmin" | "bzpopmax" => KEY_MEMBER_SCORE,
        "zmpop" | "bzmpop" => KEY_AND_SCORED,
        "info" | "memory|doctor" | "latency|doctor" | "lolwut" => Shape::Verbatim,
        _ => KEEP,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::CommandTable;

    fn shape(words: &[&str]) -> Shape {
        let mut raw = Vec::new();
        let mut args = Vec::new();
        for w in words {
            let start = raw.len();
            raw.extend_from_slice(w.as_bytes());
            args.push(start..raw.len());
            raw.push(b' ');
        }
        let table = CommandTable::builtin();
        let spec = table.resolve(&raw, &args).unwrap();
        shape_for(spec, &raw, &args)
    }

    #[test]
    fn options_select_the_shape() {
        assert_eq!(shape(&["ZRANGE", "z", "0", "-1"]), KEEP);
        assert_eq!(
            shape(&["zrange", "z", "0", "-1", "WithScores"]),
            SCORE_PAIRS
        );
        assert_eq!(shape(&["ZPOPMIN", "z"]), MEMBER_SCORE);
        assert_eq!(shape(&["ZPOPMIN", "z", "2"]), SCORE_PAIRS);
        assert_eq!(shape(&["HRANDFIELD", "h", "2"]), KEEP);
        assert_eq!(
            shape(&["HRANDFIELD", "h", "2", "WITHVALUES"]),
            Shape::Pairs(&KEEP)
        );
    }

    #[test]
    fn command_introspection_shapes() {
        assert_eq!(
            shape(&["COMMAND", "INFO", "get"]),
            Shape::Array(&COMMAND_ENTRY)
        );
        assert_eq!(shape(&["COMMAND", "DOCS"]), Shape::Map(&DOC));
        assert_eq!(
            to_resp3_text(
                b"*1\r\n*10\r\n$1\r\nx\r\n:1\r\n*0\r\n:0\r\n:0\r\n:0\r\n*0\r\n*0\r\n*0\r\n*0\r\n",
                shape(&["COMMAND", "INFO", "x"])
            ),
            "*1\r\n*10\r\n$1\r\nx\r\n:1\r\n~0\r\n:0\r\n:0\r\n:0\r\n~0\r\n~0\r\n~0\r\n~0\r\n"
        );
    }

    fn to_resp3_text(frame: &[u8], shape: Shape) -> String {
        let out = crate::protocol::resp3::to_resp3(frame, shape).unwrap();
        String::from_utf8(out.to_vec()).unwrap()
    }

    #[test]
    fn subcommands_and_plain_commands() {
        assert_eq!(shape(&["CONFIG", "GET", "maxmemory"]), MAP);
        assert_eq!(shape(&["xinfo", "groups", "x"]), MAPS);
        assert_eq!(shape(&["HGETALL", "h"]), MAP);
        assert_eq!(shape(&["SMEMBERS", "s"]), Shape::Set);
        assert_eq!(shape(&["GET", "k"]), KEEP);
    }
}
