//! Rewriting a RESP2 reply into the RESP3 form Redis would have sent a `HELLO 3` client.
//!
//! The multiplexed backend connections always speak RESP2, so a RESP3 client's replies are
//! converted on the way out. What changes is decided by the command (see `proxy::reshape`),
//! described as a [`Shape`]: nulls become `_` everywhere, and the shape says which arrays are
//! really maps, sets or pairs and which bulk strings are doubles or verbatim text. Replies
//! that need no change are returned untouched without being parsed.

use bytes::{BufMut, Bytes, BytesMut};

/// How a RESP2 reply maps onto its RESP3 form. Shapes only ever apply to the RESP2 type they
/// expect: a shape for an array leaves a bulk string or an integer as it is, so one shape
/// serves every variant of a command's reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// Same structure; only nulls change (`$-1` and `*-1` become `_`).
    Keep,
    /// A flat array of key/value pairs becomes a map; each value takes the inner shape.
    Map(&'static Shape),
    /// A map whose values under the named keys take the given shapes (others: `Keep`).
    MapWith(&'static [(&'static str, Shape)]),
    /// An array becomes a set.
    Set,
    /// An array becomes a set whose elements take the inner shape.
    SetOf(&'static Shape),
    /// An empty array becomes an empty set; elements of others take the inner shape
    /// (`COMMAND INFO` sends a command without subcommands an empty set).
    EmptySetOr(&'static Shape),
    /// A bulk string holding a number becomes a double.
    Double,
    /// Every element of an array takes the inner shape.
    Array(&'static Shape),
    /// Element `i` of an array takes the `i`-th shape; extra elements are kept.
    Tuple(&'static [Shape]),
    /// A flat array `[a1, b1, a2, b2 …]` becomes `[[a1, b1], [a2, b2] …]`; each `b` takes the
    /// inner shape.
    Pairs(&'static Shape),
    /// Elements of an array that are arrays take the inner shape; others are kept.
    ArraysOf(&'static Shape),
    /// An array of `[key, value]` arrays becomes a map (XREAD); each value takes the inner
    /// shape.
    MapOfPairs(&'static Shape),
    /// A bulk string becomes verbatim text (`=` with the `txt` format).
    Verbatim,
}

/// A parsed RESP2 value borrowing from the reply.
#[derive(Debug)]
enum Value<'a> {
    /// A whole `+`, `-` or `:` line, CRLF included.
    Line(&'a [u8]),
    /// A bulk string's payload.
    Bulk(&'a [u8]),
    /// `$-1` or `*-1`.
    Null,
    /// An array.
    Array(Vec<Value<'a>>),
}

/// Deepest nesting converted; deeper replies are passed on unchanged.
const MAX_DEPTH: usize = 64;

/// The RESP3 form of the RESP2 reply `frame` under `shape`, or None when it is the same
/// (or is not plain RESP2, e.g. already RESP3).
pub fn to_resp3(frame: &[u8], shape: Shape) -> Option<Bytes> {
    match frame.first()? {
        b'+' | b'-' | b':' => return None,
        b'$' | b'*' => {}
        _ => return None,
    }
    if shape == Shape::Keep && !contains(frame, b"-1\r\n") {
        return None;
    }
    let (value, used) = parse(frame, 0)?;
    if used != frame.len() {
        return None;
    }
    let mut out = BytesMut::with_capacity(frame.len() + 16);
    emit(&value, shape, &mut out);
    (out[..] != *frame).then(|| out.freeze())
}

/// Rewrites a RESP2 Pub/Sub message array (`*3 message …`) as a RESP3 push (`>3 …`).
pub fn push_form(frame: &[u8]) -> Option<Bytes> {
    if frame.first() != Some(&b'*') {
        return None;
    }
    let mut out = BytesMut::from(frame);
    out[0] = b'>';
    Some(out.freeze())
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Parses one value at `at`; returns it and the offset just past it.
fn parse(buf: &[u8], depth: usize) -> Option<(Value<'_>, usize)> {
    if depth > MAX_DEPTH {
        return None;
    }
    let cr = buf.windows(2).position(|w| w == b"\r\n")?;
    let line_end = cr + 2;
    match buf.first()? {
        b'+' | b'-' | b':' => Some((Value::Line(&buf[..line_end]), line_end)),
        b'$' => {
            let len: i64 = std::str::from_utf8(&buf[1..cr]).ok()?.parse().ok()?;
            if len < 0 {
                return Some((Value::Null, line_end));
            }
            let end = line_end.checked_add(usize::try_from(len).ok()?)?;
            if buf.get(end..end + 2)? != b"\r\n" {
                return None;
            }
            Some((Value::Bulk(&buf[line_end..end]), end + 2))
        }
        b'*' => {
            let n: i64 = std::str::from_utf8(&buf[1..cr]).ok()?.parse().ok()?;
            if n < 0 {
                return Some((Value::Null, line_end));
            }
            let n = usize::try_from(n).ok()?;
            let mut items = Vec::with_capacity(n.min(1024));
            let mut at = line_end;
            for _ in 0..n {
                let (v, used) = parse(buf.get(at..)?, depth + 1)?;
                items.push(v);
                at += used;
            }
            Some((Value::Array(items), at))
        }
        _ => None,
    }
}

fn header(out: &mut BytesMut, kind: u8, n: usize) {
    out.put_u8(kind);
    out.put_slice(n.to_string().as_bytes());
    out.put_slice(b"\r\n");
}

fn emit(v: &Value<'_>, shape: Shape, out: &mut BytesMut) {
    match v {
        Value::Null => out.put_slice(b"_\r\n"),
        Value::Line(l) => out.put_slice(l),
        Value::Bulk(p) => match shape {
            Shape::Double => {
                out.put_u8(b',');
                out.put_slice(p);
                out.put_slice(b"\r\n");
            }
            Shape::Verbatim => {
                header(out, b'=', p.len() + 4);
                out.put_slice(b"txt:");
                out.put_slice(p);
                out.put_slice(b"\r\n");
            }
            _ => {
                header(out, b'$', p.len());
                out.put_slice(p);
                out.put_slice(b"\r\n");
            }
        },
        Value::Array(items) => emit_array(items, shape, out),
    }
}

fn emit_array(items: &[Value<'_>], shape: Shape, out: &mut BytesMut) {
    let even = items.len() % 2 == 0;
    match shape {
        Shape::Map(inner) if even => {
            header(out, b'%', items.len() / 2);
            for pair in items.chunks(2) {
                emit(&pair[0], Shape::Keep, out);
                emit(&pair[1], *inner, out);
            }
        }
        Shape::MapWith(table) if even => {
            header(out, b'%', items.len() / 2);
            for pair in items.chunks(2) {
                let value_shape = match &pair[0] {
                    Value::Bulk(k) => table
                        .iter()
                        .find(|(name, _)| name.as_bytes() == *k)
                        .map_or(Shape::Keep, |(_, s)| *s),
                    _ => Shape::Keep,
                };
                emit(&pair[0], Shape::Keep, out);
                emit(&pair[1], value_shape, out);
            }
        }
        Shape::MapOfPairs(inner)
            if items
                .iter()
                .all(|i| matches!(i, Value::Array(kv) if kv.len() == 2)) =>
        {
            header(out, b'%', items.len());
            for item in items {
                if let Value::Array(kv) = item {
                    emit(&kv[0], Shape::Keep, out);
                    emit(&kv[1], *inner, out);
                }
            }
        }
        Shape::Set | Shape::SetOf(_) => {
            let inner = match shape {
                Shape::SetOf(inner) => *inner,
                _ => Shape::Keep,
            };
            header(out, b'~', items.len());
            for item in items {
                emit(item, inner, out);
            }
        }
        Shape::EmptySetOr(_) if items.is_empty() => out.put_slice(b"~0\r\n"),
        Shape::Array(inner) | Shape::EmptySetOr(inner) => {
            header(out, b'*', items.len());
            for item in items {
                emit(item, *inner, out);
            }
        }
        Shape::ArraysOf(inner) => {
            header(out, b'*', items.len());
            for item in items {
                let s = if matches!(item, Value::Array(_)) {
                    *inner
                } else {
                    Shape::Keep
                };
                emit(item, s, out);
            }
        }
        Shape::Tuple(shapes) => {
            header(out, b'*', items.len());
            for (i, item) in items.iter().enumerate() {
                emit(item, shapes.get(i).copied().unwrap_or(Shape::Keep), out);
            }
        }
        Shape::Pairs(inner) if even => {
            header(out, b'*', items.len() / 2);
            for pair in items.chunks(2) {
                out.put_slice(b"*2\r\n");
                emit(&pair[0], Shape::Keep, out);
                emit(&pair[1], *inner, out);
            }
        }
        _ => {
            header(out, b'*', items.len());
            for item in items {
                emit(item, Shape::Keep, out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conv(frame: &[u8], shape: Shape) -> Vec<u8> {
        to_resp3(frame, shape).map_or_else(|| frame.to_vec(), |b| b.to_vec())
    }

    // Expected forms are what Redis 7.0.15 sends a HELLO 3 client for the same command.
    #[test]
    fn nulls_become_resp3_null_everywhere() {
        assert_eq!(conv(b"$-1\r\n", Shape::Keep), b"_\r\n");
        assert_eq!(conv(b"*-1\r\n", Shape::Keep), b"_\r\n");
        assert_eq!(
            conv(b"*2\r\n$-1\r\n$-1\r\n", Shape::Keep),
            b"*2\r\n_\r\n_\r\n"
        );
        assert!(to_resp3(b"$3\r\n-1\r\r\n", Shape::Keep).is_none());
        assert!(to_resp3(b"+OK\r\n", Shape::Map(&Shape::Keep)).is_none());
        assert!(to_resp3(b"$3\r\nabc\r\n", Shape::Keep).is_none());
    }

    #[test]
    fn maps_sets_and_doubles() {
        assert_eq!(
            conv(
                b"*4\r\n$1\r\na\r\n$1\r\n1\r\n$1\r\nb\r\n$1\r\n2\r\n",
                Shape::Map(&Shape::Keep)
            ),
            b"%2\r\n$1\r\na\r\n$1\r\n1\r\n$1\r\nb\r\n$1\r\n2\r\n"
        );
        assert_eq!(
            conv(b"*2\r\n$1\r\nb\r\n$1\r\na\r\n", Shape::Set),
            b"~2\r\n$1\r\nb\r\n$1\r\na\r\n"
        );
        assert_eq!(conv(b"$3\r\n2.5\r\n", Shape::Double), b",2.5\r\n");
        assert_eq!(
            conv(
                b"*1\r\n*2\r\n$1\r\nk\r\n:1\r\n",
                Shape::SetOf(&Shape::Map(&Shape::Keep))
            ),
            b"~1\r\n%1\r\n$1\r\nk\r\n:1\r\n"
        );
        const SUBS: Shape = Shape::EmptySetOr(&Shape::Set);
        assert_eq!(conv(b"*0\r\n", SUBS), b"~0\r\n");
        assert_eq!(conv(b"*1\r\n*0\r\n", SUBS), b"*1\r\n~0\r\n");
        assert_eq!(conv(b":3\r\n", Shape::Double), b":3\r\n");
        assert_eq!(
            conv(b"*2\r\n$1\r\n1\r\n$-1\r\n", Shape::Array(&Shape::Double)),
            b"*2\r\n,1\r\n_\r\n"
        );
        // An odd element count cannot be a map: left as an array.
        assert_eq!(
            conv(b"*1\r\n$1\r\na\r\n", Shape::Map(&Shape::Keep)),
            b"*1\r\n$1\r\na\r\n"
        );
    }

    #[test]
    fn pairs_and_tuples() {
        assert_eq!(
            conv(
                b"*4\r\n$1\r\na\r\n$1\r\n1\r\n$1\r\nb\r\n$3\r\n2.5\r\n",
                Shape::Pairs(&Shape::Double)
            ),
            b"*2\r\n*2\r\n$1\r\na\r\n,1\r\n*2\r\n$1\r\nb\r\n,2.5\r\n"
        );
        const BZPOP: Shape = Shape::Tuple(&[Shape::Keep, Shape::Keep, Shape::Double]);
        assert_eq!(
            conv(b"*3\r\n$1\r\nz\r\n$1\r\nc\r\n$1\r\n3\r\n", BZPOP),
            b"*3\r\n$1\r\nz\r\n$1\r\nc\r\n,3\r\n"
        );
        const ZMPOP: Shape = Shape::Tuple(&[
            Shape::Keep,
            Shape::Array(&Shape::Tuple(&[Shape::Keep, Shape::Double])),
        ]);
        assert_eq!(
            conv(
                b"*2\r\n$1\r\nz\r\n*1\r\n*2\r\n$1\r\na\r\n$1\r\n1\r\n",
                ZMPOP
            ),
            b"*2\r\n$1\r\nz\r\n*1\r\n*2\r\n$1\r\na\r\n,1\r\n"
        );
    }

    #[test]
    fn nested_maps_and_verbatim() {
        const GROUPS: Shape = Shape::Array(&Shape::Map(&Shape::Keep));
        assert_eq!(
            conv(
                b"*1\r\n*4\r\n$4\r\nname\r\n$1\r\ng\r\n$12\r\nentries-read\r\n$-1\r\n",
                GROUPS
            ),
            b"*1\r\n%2\r\n$4\r\nname\r\n$1\r\ng\r\n$12\r\nentries-read\r\n_\r\n"
        );
        const WITH: Shape = Shape::MapWith(&[("flags", Shape::Set)]);
        assert_eq!(
            conv(
                b"*4\r\n$5\r\nflags\r\n*1\r\n$2\r\non\r\n$1\r\nx\r\n*0\r\n",
                WITH
            ),
            b"%2\r\n$5\r\nflags\r\n~1\r\n$2\r\non\r\n$1\r\nx\r\n*0\r\n"
        );
        assert_eq!(
            conv(b"$3\r\na\nb\r\n", Shape::Verbatim),
            b"=7\r\ntxt:a\nb\r\n"
        );
        const GEO: Shape = Shape::Array(&Shape::ArraysOf(&Shape::Array(&Shape::Double)));
        assert_eq!(
            conv(
                b"*1\r\n*3\r\n$1\r\nP\r\n$3\r\n1.5\r\n*2\r\n$1\r\n1\r\n$1\r\n2\r\n",
                GEO
            ),
            b"*1\r\n*3\r\n$1\r\nP\r\n$3\r\n1.5\r\n*2\r\n,1\r\n,2\r\n"
        );
    }

    #[test]
    fn stream_reads_become_maps() {
        assert_eq!(
            conv(
                b"*1\r\n*2\r\n$1\r\nx\r\n*1\r\n*2\r\n$3\r\n1-1\r\n*2\r\n$1\r\nf\r\n$1\r\nv\r\n",
                Shape::MapOfPairs(&Shape::Keep)
            ),
            b"%1\r\n$1\r\nx\r\n*1\r\n*2\r\n$3\r\n1-1\r\n*2\r\n$1\r\nf\r\n$1\r\nv\r\n"
        );
        assert_eq!(conv(b"*-1\r\n", Shape::MapOfPairs(&Shape::Keep)), b"_\r\n");
    }

    #[test]
    fn non_resp2_or_truncated_input_is_left_alone() {
        assert!(to_resp3(b"%1\r\n$1\r\na\r\n$1\r\nb\r\n", Shape::Map(&Shape::Keep)).is_none());
        assert!(to_resp3(b"*2\r\n$1\r\na\r\n", Shape::Set).is_none());
        assert!(to_resp3(b"*1\r\n$-1\r\nextra", Shape::Keep).is_none());
    }

    #[test]
    fn push_form_swaps_the_type_byte() {
        assert_eq!(
            push_form(b"*3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$1\r\nx\r\n").unwrap(),
            &b">3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$1\r\nx\r\n"[..]
        );
        assert!(push_form(b"+OK\r\n").is_none());
    }
}
