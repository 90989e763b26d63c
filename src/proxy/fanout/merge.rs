//! Combining the replies of a fanned-out request (one part per slot or per node) into the one
//! reply the client gets, as a single Redis server would have answered.
//!
//! Replies are never decoded into value trees: element boundaries inside array replies are
//! found with the [`ResponseScanner`] and elements are copied as raw bytes, so a value keeps
//! its exact encoding (RESP2 or RESP3). Whatever the rule, an error from any part becomes the
//! client's reply: a client never gets a silently partial answer.

use std::ops::Range;

use bytes::{BufMut, Bytes, BytesMut};

use super::info::InfoPlan;
use super::introspect;
use super::scan::ScanStep;
use crate::command::Merge;
use crate::protocol::{encode, ResponseScanner};

/// Deepest nesting accepted inside an element being copied (the backends already limit it).
const MAX_DEPTH: usize = 64;

/// How the replies of a cluster-wide command combine (the data-free part of [`Reduce`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Combine {
    /// `+OK` when every part answered `+OK`.
    AllOk,
    /// Sum of integer replies.
    SumInt,
    /// Concatenation of array replies.
    Concat,
    /// Every part's reply, which must be identical.
    AllEqual,
    /// Element-wise AND of arrays of 0/1.
    AndArrays,
    /// The first part's successful reply (part order); an error only if every part failed.
    First,
    /// Smallest integer reply (`WAIT`, `LASTSAVE`).
    MinInt,
    /// Element-wise smallest of integer arrays (`WAITAOF`).
    MinArrays,
    /// A random non-null reply, null only when every part was null (`RANDOMKEY`).
    RandomNonNull,
    /// Every element of the array replies once, in the order first seen (`PUBSUB CHANNELS`).
    Union,
}

impl From<Merge> for Combine {
    fn from(m: Merge) -> Self {
        match m {
            Merge::AllOk => Combine::AllOk,
            Merge::SumInt => Combine::SumInt,
            // Per-key values only make sense for a split; across nodes they concatenate.
            Merge::Concat | Merge::Values => Combine::Concat,
            Merge::AllEqual => Combine::AllEqual,
            Merge::AndArrays => Combine::AndArrays,
            Merge::First => Combine::First,
        }
    }
}

/// Everything needed to merge one fanned-out request's replies.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Reduce {
    /// MGET: entry `i` is the (part, element) holding the value of the client's `i`-th key.
    Values(Vec<(u32, u32)>),
    /// A rule that needs no data beyond the replies.
    Combine(Combine),
    /// SCAN: rewrite the node's cursor into the client's cursor.
    Scan(ScanStep),
    /// INFO: the proxy's sections plus the keyspace summed over shards.
    Info(InfoPlan),
    /// `PUBSUB NUMSUB / SHARDNUMSUB`: each named channel's count summed over the parts.
    NumSub(Vec<Bytes>),
}

/// Merges `parts` (one reply frame per part, in part order) into the client's reply.
pub(crate) fn merge(rule: &Reduce, parts: &[Bytes]) -> Bytes {
    if !matches!(rule, Reduce::Combine(Combine::First)) {
        if let Some(err) = parts.iter().find(|p| is_error(p)) {
            return err.clone();
        }
    }
    let merged = match rule {
        Reduce::Values(order) => values(order, parts),
        Reduce::Combine(c) => combine(*c, parts),
        Reduce::Scan(step) => parts.first().and_then(|p| step.rewrite(p)),
        Reduce::Info(plan) => Some(plan.render(parts)),
        Reduce::NumSub(names) => introspect::merge_numsub(names, parts),
    };
    merged.unwrap_or_else(|| {
        error_reply("ERR slotway: a node sent an unexpected reply to a fanned-out command")
    })
}

fn combine(c: Combine, parts: &[Bytes]) -> Option<Bytes> {
    match c {
        Combine::AllOk => parts
            .iter()
            .all(|p| p.as_ref() == b"+OK\r\n")
            .then(|| Bytes::from_static(b"+OK\r\n")),
        Combine::SumInt => {
            let mut sum: i64 = 0;
            for p in parts {
                sum = sum.checked_add(integer(p)?)?;
            }
            Some(int_reply(sum))
        }
        Combine::MinInt => {
            let mut min = None;
            for p in parts {
                let v = integer(p)?;
                min = Some(min.map_or(v, |m: i64| m.min(v)));
            }
            min.map(int_reply)
        }
        Combine::Concat => concat(parts),
        Combine::AllEqual => {
            let first = parts.first()?;
            if parts.iter().all(|p| p == first) {
                Some(first.clone())
            } else {
                Some(error_reply(
                    "ERR slotway: the cluster's primaries answered differently",
                ))
            }
        }
        Combine::AndArrays => min_arrays(parts, true),
        Combine::MinArrays => min_arrays(parts, false),
        Combine::Union => introspect::union(parts),
        Combine::First => parts
            .iter()
            .find(|p| !is_error(p))
            .or_else(|| parts.first())
            .cloned(),
        Combine::RandomNonNull => {
            let found: Vec<&Bytes> = parts.iter().filter(|p| !is_null(p)).collect();
            if found.is_empty() {
                parts.first().cloned()
            } else {
                Some(found[fastrand::usize(..found.len())].clone())
            }
        }
    }
}

/// True for an error reply (`-` simple or `!` blob error).
pub(crate) fn is_error(frame: &[u8]) -> bool {
    matches!(frame.first(), Some(b'-' | b'!'))
}

fn is_null(frame: &[u8]) -> bool {
    matches!(frame, b"$-1\r\n" | b"_\r\n" | b"*-1\r\n")
}

/// The value of an integer reply `:n\r\n`.
pub(crate) fn integer(frame: &[u8]) -> Option<i64> {
    let body = frame.strip_prefix(b":")?.strip_suffix(b"\r\n")?;
    std::str::from_utf8(body).ok()?.parse().ok()
}

fn int_reply(v: i64) -> Bytes {
    let mut out = BytesMut::with_capacity(24);
    encode::integer(&mut out, v);
    out.freeze()
}

/// An error reply frame for `msg` (which starts with its code).
pub(crate) fn error_reply(msg: &str) -> Bytes {
    let mut out = BytesMut::with_capacity(msg.len() + 3);
    encode::error(&mut out, msg);
    out.freeze()
}

/// Splits an array (`*`) or set (`~`) reply into its element count and the bytes of its
/// elements; a null array counts as empty.
pub(crate) fn array_body(frame: &[u8]) -> Option<(usize, &[u8])> {
    if frame == b"*-1\r\n" {
        return Some((0, &[]));
    }
    if !matches!(frame.first(), Some(b'*' | b'~')) {
        return None;
    }
    let cr = frame.iter().position(|&b| b == b'\r')?;
    let n = std::str::from_utf8(&frame[1..cr]).ok()?.parse().ok()?;
    let body = frame.get(cr + 2..)?;
    Some((n, body))
}

/// The byte range of each of the `n` elements packed in `body`, which must hold exactly them.
pub(crate) fn elements(body: &[u8], n: usize) -> Option<Vec<Range<usize>>> {
    let mut out = Vec::with_capacity(n);
    let mut scanner = ResponseScanner::new(MAX_DEPTH);
    let mut at = 0;
    for _ in 0..n {
        let r = scanner.scan(&body[at..]).ok()??;
        out.push(at..at + r.len);
        at += r.len;
    }
    (at == body.len()).then_some(out)
}

fn values(order: &[(u32, u32)], parts: &[Bytes]) -> Option<Bytes> {
    let mut split = Vec::with_capacity(parts.len());
    let mut size = 0;
    for p in parts {
        let (n, body) = array_body(p)?;
        size += body.len();
        split.push((body, elements(body, n)?));
    }
    let mut out = BytesMut::with_capacity(size + 16);
    encode::array_header(&mut out, order.len());
    for &(part, elem) in order {
        let (body, ranges) = split.get(part as usize)?;
        let range = ranges.get(elem as usize)?;
        out.put_slice(&body[range.clone()]);
    }
    Some(out.freeze())
}

fn concat(parts: &[Bytes]) -> Option<Bytes> {
    let mut total = 0;
    let mut bodies = Vec::with_capacity(parts.len());
    for p in parts {
        let (n, body) = array_body(p)?;
        total += n;
        bodies.push(body);
    }
    let size: usize = bodies.iter().map(|b| b.len()).sum();
    let mut out = BytesMut::with_capacity(size + 16);
    encode::array_header(&mut out, total);
    for b in bodies {
        out.put_slice(b);
    }
    Some(out.freeze())
}

/// Element-wise minimum of arrays of integers of one length; with `flags`, each element
/// counts as 0 or 1 first, which makes the minimum a logical AND.
fn min_arrays(parts: &[Bytes], flags: bool) -> Option<Bytes> {
    let mut acc: Option<Vec<i64>> = None;
    for p in parts {
        let (n, body) = array_body(p)?;
        let values = elements(body, n)?
            .into_iter()
            .map(|r| integer(&body[r]).map(|v| if flags { i64::from(v != 0) } else { v }))
            .collect::<Option<Vec<i64>>>()?;
        acc = Some(match acc {
            None => values,
            Some(prev) if prev.len() == values.len() => {
                prev.iter().zip(&values).map(|(a, b)| *a.min(b)).collect()
            }
            Some(_) => return None,
        });
    }
    let acc = acc.unwrap_or_default();
    let mut out = BytesMut::with_capacity(4 + acc.len() * 4);
    encode::array_header(&mut out, acc.len());
    for v in acc {
        encode::integer(&mut out, v);
    }
    Some(out.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    fn run(rule: Reduce, parts: &[&str]) -> String {
        let parts: Vec<Bytes> = parts.iter().map(|p| b(p)).collect();
        String::from_utf8(merge(&rule, &parts).to_vec()).unwrap()
    }

    #[test]
    fn mget_values_go_back_in_client_order() {
        // Client asked a b c d; part 0 holds (a, c), part 1 holds (b, d).
        let order = vec![(0, 0), (1, 0), (0, 1), (1, 1)];
        let got = run(
            Reduce::Values(order),
            &["*2\r\n$1\r\nA\r\n$-1\r\n", "*2\r\n$2\r\nBB\r\n$0\r\n\r\n"],
        );
        assert_eq!(got, "*4\r\n$1\r\nA\r\n$2\r\nBB\r\n$-1\r\n$0\r\n\r\n");
    }

    #[test]
    fn mget_keeps_resp3_nulls_and_binary_values() {
        let order = vec![(1, 0), (0, 0)];
        let got = run(
            Reduce::Values(order),
            &["*1\r\n_\r\n", "*1\r\n$4\r\na\r\nb\r\n"],
        );
        assert_eq!(got, "*2\r\n$4\r\na\r\nb\r\n_\r\n");
    }

    #[test]
    fn any_error_part_wins() {
        let got = run(
            Reduce::Values(vec![(0, 0), (1, 0)]),
            &["*1\r\n$1\r\nA\r\n", "-MOVED 1 x:1\r\n"],
        );
        assert_eq!(got, "-MOVED 1 x:1\r\n");
        let got = run(
            Reduce::Combine(Combine::SumInt),
            &[":1\r\n", "-ERR boom\r\n", "-ERR second\r\n"],
        );
        assert_eq!(got, "-ERR boom\r\n");
        let got = run(Reduce::Combine(Combine::AllOk), &["+OK\r\n", "-OOM no\r\n"]);
        assert_eq!(got, "-OOM no\r\n");
    }

    #[test]
    fn integers() {
        let sum = Reduce::Combine(Combine::SumInt);
        assert_eq!(
            run(sum.clone(), &[":1\r\n", ":0\r\n", ":41\r\n"]),
            ":42\r\n"
        );
        assert_eq!(run(sum, &[]), ":0\r\n");
        let min = Reduce::Combine(Combine::MinInt);
        assert_eq!(run(min, &[":3\r\n", ":1\r\n", ":2\r\n"]), ":1\r\n");
        let mins = Reduce::Combine(Combine::MinArrays);
        assert_eq!(
            run(mins, &["*2\r\n:1\r\n:2\r\n", "*2\r\n:0\r\n:5\r\n"]),
            "*2\r\n:0\r\n:2\r\n"
        );
        assert!(run(Reduce::Combine(Combine::SumInt), &["+OK\r\n"]).starts_with("-ERR slotway"));
    }

    #[test]
    fn all_ok_and_all_equal() {
        let ok = Reduce::Combine(Combine::AllOk);
        assert_eq!(run(ok.clone(), &["+OK\r\n", "+OK\r\n"]), "+OK\r\n");
        assert!(run(ok, &["+OK\r\n", "+QUEUED\r\n"]).starts_with("-ERR slotway"));
        let eq = Reduce::Combine(Combine::AllEqual);
        assert_eq!(
            run(eq.clone(), &["$2\r\nab\r\n", "$2\r\nab\r\n"]),
            "$2\r\nab\r\n"
        );
        assert!(run(eq, &["$2\r\nab\r\n", "$2\r\nac\r\n"]).contains("differently"));
    }

    #[test]
    fn concat_arrays_and_sets() {
        let got = run(
            Reduce::Combine(Combine::Concat),
            &[
                "*2\r\n$1\r\na\r\n$1\r\nb\r\n",
                "*0\r\n",
                "~1\r\n*1\r\n:1\r\n",
            ],
        );
        assert_eq!(got, "*3\r\n$1\r\na\r\n$1\r\nb\r\n*1\r\n:1\r\n");
    }

    #[test]
    fn and_of_arrays() {
        let got = run(
            Reduce::Combine(Combine::AndArrays),
            &["*3\r\n:1\r\n:1\r\n:0\r\n", "*3\r\n:1\r\n:0\r\n:0\r\n"],
        );
        assert_eq!(got, "*3\r\n:1\r\n:0\r\n:0\r\n");
        let bad = run(
            Reduce::Combine(Combine::AndArrays),
            &["*1\r\n:1\r\n", "*2\r\n:1\r\n:1\r\n"],
        );
        assert!(bad.starts_with("-ERR slotway"));
    }

    #[test]
    fn first_success_and_random_non_null() {
        let first = Reduce::Combine(Combine::First);
        assert_eq!(run(first.clone(), &["-ERR a\r\n", "+OK\r\n"]), "+OK\r\n");
        assert_eq!(run(first, &["-ERR a\r\n", "-ERR b\r\n"]), "-ERR a\r\n");
        let random = Reduce::Combine(Combine::RandomNonNull);
        assert_eq!(
            run(random.clone(), &["$-1\r\n", "$1\r\nk\r\n", "_\r\n"]),
            "$1\r\nk\r\n"
        );
        assert_eq!(run(random, &["$-1\r\n", "$-1\r\n"]), "$-1\r\n");
    }

    #[test]
    fn truncated_or_mismatched_replies_are_errors() {
        let got = run(Reduce::Values(vec![(0, 0), (0, 1)]), &["*1\r\n$1\r\na\r\n"]);
        assert!(got.starts_with("-ERR slotway"));
        let got = run(Reduce::Values(vec![(0, 0)]), &["*2\r\n$1\r\na\r\n"]);
        assert!(got.starts_with("-ERR slotway"));
    }
}
