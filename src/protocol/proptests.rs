//! Differential property tests: random RESP2/RESP3 streams, split at random points and fed
//! incrementally, must be framed exactly as redis-protocol's decoder (or, for streamed
//! RESP3 types it cannot nest, as the generator built them) frames them.

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;

use super::fuzz::fuzz_scanners;
use super::*;

/// A generated reply.
#[derive(Debug, Clone)]
enum F {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Vec<u8>),
    NullBulk,
    NullArray,
    Array(Vec<F>),
    Null,
    Bool(bool),
    Double(&'static str),
    BigNum(String),
    BlobError(Vec<u8>),
    Verbatim(Vec<u8>),
    Map(Vec<(F, F)>),
    Set(Vec<F>),
    Push(Vec<F>),
    Attr(Vec<(F, F)>, Box<F>),
    StreamStr(Vec<Vec<u8>>),
    StreamAgg(u8, Vec<F>),
}

fn enc_agg(out: &mut Vec<u8>, head: u8, n: usize) {
    out.push(head);
    out.extend_from_slice(format!("{n}\r\n").as_bytes());
}

fn enc_blob(out: &mut Vec<u8>, head: u8, data: &[u8]) {
    enc_agg(out, head, data.len());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

fn enc(f: &F, out: &mut Vec<u8>) {
    match f {
        F::Simple(s) => out.extend_from_slice(format!("+{s}\r\n").as_bytes()),
        F::Error(s) => out.extend_from_slice(format!("-{s}\r\n").as_bytes()),
        F::Int(i) => out.extend_from_slice(format!(":{i}\r\n").as_bytes()),
        F::Bulk(b) => enc_blob(out, b'$', b),
        F::NullBulk => out.extend_from_slice(b"$-1\r\n"),
        F::NullArray => out.extend_from_slice(b"*-1\r\n"),
        F::Null => out.extend_from_slice(b"_\r\n"),
        F::Bool(b) => out.extend_from_slice(if *b { b"#t\r\n" } else { b"#f\r\n" }),
        F::Double(d) => out.extend_from_slice(format!(",{d}\r\n").as_bytes()),
        F::BigNum(n) => out.extend_from_slice(format!("({n}\r\n").as_bytes()),
        F::BlobError(b) => enc_blob(out, b'!', b),
        F::Verbatim(b) => enc_blob(out, b'=', &[b"txt:", &b[..]].concat()),
        F::Array(items) | F::Set(items) | F::Push(items) => {
            let head = match f {
                F::Array(_) => b'*',
                F::Set(_) => b'~',
                _ => b'>',
            };
            enc_agg(out, head, items.len());
            items.iter().for_each(|i| enc(i, out));
        }
        F::Map(pairs) | F::Attr(pairs, _) => {
            enc_agg(
                out,
                if matches!(f, F::Map(_)) { b'%' } else { b'|' },
                pairs.len(),
            );
            for (k, v) in pairs {
                enc(k, out);
                enc(v, out);
            }
            if let F::Attr(_, inner) = f {
                enc(inner, out);
            }
        }
        F::StreamStr(chunks) => {
            out.extend_from_slice(b"$?\r\n");
            for c in chunks {
                enc_blob(out, b';', c);
            }
            out.extend_from_slice(b";0\r\n");
        }
        F::StreamAgg(head, items) => {
            out.extend_from_slice(&[*head, b'?', b'\r', b'\n']);
            items.iter().for_each(|i| enc(i, out));
            out.extend_from_slice(b".\r\n");
        }
    }
}

fn top_kind(f: &F) -> ReplyKind {
    match f {
        F::Error(_) | F::BlobError(_) => ReplyKind::Error,
        F::Push(_) => ReplyKind::Push,
        F::Attr(_, inner) => top_kind(inner),
        _ => ReplyKind::Other,
    }
}

fn bytes_strategy() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![4 => vec(any::<u8>(), 0..12), 1 => vec(any::<u8>(), 0..400)]
}

fn resp2_leaf() -> BoxedStrategy<F> {
    prop_oneof![
        "[A-Za-z0-9 ]{0,12}".prop_map(F::Simple),
        "[A-Z]{1,8}( [a-z0-9:. ]{0,16})?".prop_map(F::Error),
        any::<i64>().prop_map(F::Int),
        bytes_strategy().prop_map(F::Bulk),
        Just(F::NullBulk),
        Just(F::NullArray),
    ]
    .boxed()
}

fn resp2_frame() -> impl Strategy<Value = F> {
    resp2_leaf().prop_recursive(4, 48, 6, |inner| vec(inner, 0..6).prop_map(F::Array))
}

/// RESP3 scalars redis-protocol can use as map keys and set members.
fn resp3_key() -> BoxedStrategy<F> {
    prop_oneof![
        "[A-Za-z0-9 ]{0,12}".prop_map(F::Simple),
        "[A-Z]{1,8}( [a-z ]{0,8})?".prop_map(F::Error),
        any::<i64>().prop_map(F::Int),
        bytes_strategy().prop_map(F::Bulk),
        any::<bool>().prop_map(F::Bool),
        prop::sample::select(vec!["1.5", "-0.25", "3", "inf", "-inf", "1e10"]).prop_map(F::Double),
        "-?[1-9][0-9]{0,40}".prop_map(F::BigNum),
        bytes_strategy().prop_map(F::BlobError),
        bytes_strategy().prop_map(F::Verbatim),
    ]
    .boxed()
}

fn resp3_leaf() -> BoxedStrategy<F> {
    prop_oneof![6 => resp3_key(), 1 => Just(F::Null)].boxed()
}

/// Wraps `inner` in an attribute unless it cannot carry one (redis-protocol refuses
/// attributes on nulls and on attributes).
fn decorate(attrs: Vec<(F, F)>, inner: F) -> F {
    match inner {
        F::Null | F::Attr(..) => inner,
        other => F::Attr(attrs, Box::new(other)),
    }
}

fn resp3_aggregates(inner: BoxedStrategy<F>) -> BoxedStrategy<F> {
    prop_oneof![
        vec(inner.clone(), 0..5).prop_map(F::Array),
        vec(resp3_key(), 0..5).prop_map(F::Set),
        vec((resp3_key(), inner.clone()), 0..4).prop_map(F::Map),
        vec(inner.clone(), 0..5).prop_map(F::Push),
        (vec((resp3_key(), inner.clone()), 0..3), inner).prop_map(|(a, i)| decorate(a, i)),
    ]
    .boxed()
}

fn resp3_frame() -> impl Strategy<Value = F> {
    resp3_leaf().prop_recursive(4, 48, 5, |inner| resp3_aggregates(inner.boxed()))
}

/// RESP3 including streamed strings and aggregates at any depth.
fn resp3_streamed_frame() -> impl Strategy<Value = F> {
    let leaf = prop_oneof![
        4 => resp3_leaf(),
        1 => vec(vec(any::<u8>(), 1..10), 0..4).prop_map(F::StreamStr),
    ];
    leaf.prop_recursive(4, 48, 5, |inner| {
        let inner = inner.boxed();
        prop_oneof![
            3 => resp3_aggregates(inner.clone()),
            1 => (prop::sample::select(vec![b'*', b'~', b'%']), vec(inner, 0..5))
                .prop_map(|(h, items)| F::StreamAgg(h, items)),
        ]
    })
}

#[derive(Clone, Copy)]
enum Oracle {
    Resp2,
    Resp3,
    /// Only the generator's own boundaries.
    None,
}

/// Ends of each frame found by redis-protocol.
fn oracle_ends(bytes: &[u8], oracle: Oracle) -> Option<Vec<usize>> {
    let mut at = 0;
    let mut ends = Vec::new();
    while at < bytes.len() {
        let len = match oracle {
            Oracle::Resp2 => {
                redis_protocol::resp2::decode::decode(&bytes[at..])
                    .unwrap()
                    .unwrap()
                    .1
            }
            Oracle::Resp3 => {
                redis_protocol::resp3::decode::complete::decode(&bytes[at..])
                    .unwrap()
                    .unwrap()
                    .1
            }
            Oracle::None => return None,
        };
        at += len;
        ends.push(at);
    }
    Some(ends)
}

/// Splits `len` bytes at the given random points.
fn cut_points(len: usize, cuts: &[Index]) -> Vec<usize> {
    let mut points: Vec<usize> = cuts.iter().map(|i| i.index(len + 1)).collect();
    points.push(len);
    points.sort_unstable();
    points.dedup();
    points
}

fn check_replies(frames: &[F], cuts: &[Index], oracle: Oracle) {
    let mut bytes = Vec::new();
    let mut expected = Vec::new();
    for f in frames {
        enc(f, &mut bytes);
        expected.push((bytes.len(), top_kind(f)));
    }
    if let Some(ends) = oracle_ends(&bytes, oracle) {
        let built: Vec<usize> = expected.iter().map(|e| e.0).collect();
        assert_eq!(ends, built, "oracle disagrees with generator");
    }
    let mut scanner = ResponseScanner::new(64);
    let mut buf = Vec::new();
    let mut consumed = 0;
    let mut found = Vec::new();
    let mut prev = 0;
    for point in cut_points(bytes.len(), cuts) {
        buf.extend_from_slice(&bytes[prev..point]);
        prev = point;
        while let Some(reply) = scanner.scan(&buf).unwrap() {
            consumed += reply.len;
            found.push((consumed, reply.kind));
            buf.drain(..reply.len);
        }
    }
    assert!(buf.is_empty());
    assert_eq!(found, expected);
}

/// A generated request and the arguments it must yield.
#[derive(Debug, Clone)]
enum Req {
    MultiBulk(Vec<Vec<u8>>),
    Inline(Vec<String>, &'static str, &'static str),
    Empty(&'static str),
}

fn request_strategy() -> impl Strategy<Value = Req> {
    prop_oneof![
        6 => vec(bytes_strategy(), 1..8).prop_map(Req::MultiBulk),
        2 => (
            vec("[A-Za-z0-9_:{}.\\-]{1,10}", 1..6),
            prop::sample::select(vec![" ", "  ", "\t", " \t "]),
            prop::sample::select(vec!["\r\n", "\n"]),
        )
            .prop_map(|(t, sep, end)| Req::Inline(t, sep, end)),
        1 => prop::sample::select(vec!["*0\r\n", "*-1\r\n", "\r\n", "\n", "  \r\n"]).prop_map(Req::Empty),
    ]
}

fn encode_request(req: &Req, out: &mut Vec<u8>) -> (RequestKind, Vec<Vec<u8>>) {
    match req {
        Req::MultiBulk(args) => {
            enc_agg(out, b'*', args.len());
            args.iter().for_each(|a| enc_blob(out, b'$', a));
            (RequestKind::MultiBulk, args.clone())
        }
        Req::Inline(tokens, sep, end) => {
            out.extend_from_slice(tokens.join(sep).as_bytes());
            out.extend_from_slice(end.as_bytes());
            let args = tokens.iter().map(|t| t.as_bytes().to_vec()).collect();
            (RequestKind::Inline, args)
        }
        Req::Empty(text) => {
            out.extend_from_slice(text.as_bytes());
            (RequestKind::Empty, Vec::new())
        }
    }
}

fn check_requests(reqs: &[Req], cuts: &[Index]) {
    let mut bytes = Vec::new();
    let mut expected = Vec::new();
    for req in reqs {
        let start = bytes.len();
        let (kind, args) = encode_request(req, &mut bytes);
        if let Req::MultiBulk(args) = req {
            let (frame, len) = redis_protocol::resp2::decode::decode(&bytes[start..])
                .unwrap()
                .unwrap();
            assert_eq!(len, bytes.len() - start);
            let redis_protocol::resp2::types::OwnedFrame::Array(items) = frame else {
                panic!("not an array");
            };
            let decoded: Vec<Vec<u8>> = items
                .into_iter()
                .map(|i| match i {
                    redis_protocol::resp2::types::OwnedFrame::BulkString(b) => b,
                    other => panic!("unexpected {other:?}"),
                })
                .collect();
            assert_eq!(&decoded, args);
        }
        expected.push((bytes.len(), kind, args));
    }
    let mut scanner = RequestScanner::new(ScanLimits::default());
    let mut buf = Vec::new();
    let mut consumed = 0;
    let mut found = Vec::new();
    let mut prev = 0;
    for point in cut_points(bytes.len(), cuts) {
        buf.extend_from_slice(&bytes[prev..point]);
        prev = point;
        while let Some(req) = scanner.scan(&buf).unwrap() {
            let args = scanner
                .args()
                .iter()
                .map(|r| buf[r.clone()].to_vec())
                .collect();
            consumed += req.len;
            found.push((consumed, req.kind, args));
            buf.drain(..req.len);
        }
    }
    assert!(buf.is_empty());
    assert_eq!(found, expected);
}

/// Quotes arbitrary bytes as an inline argument using only `\xHH` escapes.
fn hex_quoted(arg: &[u8]) -> String {
    let mut s = String::from("\"");
    for b in arg {
        s.push_str(&format!("\\x{b:02x}"));
    }
    s.push('"');
    s
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn resp2_replies_match_oracle(frames in vec(resp2_frame(), 1..8), cuts in vec(any::<Index>(), 0..12)) {
        check_replies(&frames, &cuts, Oracle::Resp2);
    }

    #[test]
    fn resp3_replies_match_oracle(frames in vec(resp3_frame(), 1..8), cuts in vec(any::<Index>(), 0..12)) {
        check_replies(&frames, &cuts, Oracle::Resp3);
    }

    #[test]
    fn resp3_streamed_replies(frames in vec(resp3_streamed_frame(), 1..6), cuts in vec(any::<Index>(), 0..12)) {
        check_replies(&frames, &cuts, Oracle::None);
    }

    #[test]
    fn requests_match_oracle(reqs in vec(request_strategy(), 1..10), cuts in vec(any::<Index>(), 0..16)) {
        check_requests(&reqs, &cuts);
    }

    #[test]
    fn quoted_inline_round_trips(args in vec(vec(any::<u8>(), 0..16), 1..5)) {
        let line: Vec<String> = args.iter().map(|a| hex_quoted(a)).collect();
        let line = format!("{}\r\n", line.join(" "));
        let mut scanner = RequestScanner::new(ScanLimits::default());
        let req = scanner.scan(line.as_bytes()).unwrap().unwrap();
        prop_assert_eq!(req.len, line.len());
        prop_assert_eq!(req.kind, RequestKind::Inline);
        prop_assert!(scanner.args().is_empty());
        let multibulk = inline_to_multibulk(line.as_bytes()).unwrap();
        let mut expected = BytesMut::new();
        let refs: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
        encode::command(&mut expected, &refs);
        prop_assert_eq!(&multibulk[..], &expected[..]);
    }

    #[test]
    fn scanners_never_panic_on_garbage(data in vec(any::<u8>(), 0..64), cuts in vec(any::<Index>(), 0..4)) {
        fuzz_scanners(&data, &cuts.iter().map(|c| c.index(data.len() + 1)).collect::<Vec<_>>());
    }
}
