//! Unit tests for the reply scanner.

use super::*;

fn scan_one(buf: &[u8]) -> ScannedReply {
    let mut s = ResponseScanner::new(16);
    let reply = s.scan(buf).unwrap().expect("complete reply");
    assert_eq!(reply.len, buf.len(), "{:?}", String::from_utf8_lossy(buf));
    reply
}

/// Checks every strict prefix is incomplete when fed byte by byte, then the whole is one reply.
fn incremental(buf: &[u8]) -> ScannedReply {
    let mut s = ResponseScanner::new(16);
    for end in 0..buf.len() {
        assert_eq!(
            s.scan(&buf[..end]).unwrap(),
            None,
            "prefix {end} of {buf:?}"
        );
    }
    let reply = s.scan(buf).unwrap().unwrap();
    assert_eq!(reply.len, buf.len());
    reply
}

fn scan_err(buf: &[u8]) -> ProtocolError {
    ResponseScanner::new(4).scan(buf).unwrap_err()
}

#[test]
fn resp2_scalars() {
    assert_eq!(scan_one(b"+OK\r\n").kind, ReplyKind::Other);
    assert_eq!(scan_one(b"-ERR bad\r\n").kind, ReplyKind::Error);
    assert_eq!(scan_one(b":-12\r\n").kind, ReplyKind::Other);
    assert_eq!(scan_one(b"$5\r\nhe\r\no\r\n").kind, ReplyKind::Other);
    assert_eq!(scan_one(b"$0\r\n\r\n").kind, ReplyKind::Other);
    assert_eq!(scan_one(b"$-1\r\n").kind, ReplyKind::Other);
    assert_eq!(scan_one(b"*-1\r\n").kind, ReplyKind::Other);
    assert_eq!(scan_one(b"*0\r\n").kind, ReplyKind::Other);
}

#[test]
fn resp3_scalars() {
    for buf in [
        &b"_\r\n"[..],
        b",3.14\r\n",
        b",-inf\r\n",
        b"#t\r\n",
        b"(3492890328409238509324850943850943825024385\r\n",
        b"=15\r\ntxt:Some string\r\n",
    ] {
        assert_eq!(incremental(buf).kind, ReplyKind::Other);
    }
    assert_eq!(
        incremental(b"!21\r\nSYNTAX invalid syntax\r\n").kind,
        ReplyKind::Error
    );
}

#[test]
fn nested_aggregates() {
    let buf = b"*3\r\n:1\r\n*2\r\n$1\r\na\r\n%1\r\n+k\r\n~2\r\n_\r\n#f\r\n$-1\r\n";
    assert_eq!(incremental(buf).kind, ReplyKind::Other);
    assert_eq!(
        incremental(b"%2\r\n+a\r\n:1\r\n+b\r\n*0\r\n").kind,
        ReplyKind::Other
    );
    // An error nested in an array does not make the reply an error.
    assert_eq!(
        incremental(b"*2\r\n-ERR x\r\n:1\r\n").kind,
        ReplyKind::Other
    );
}

#[test]
fn push_reply() {
    let buf = b">3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$2\r\nhi\r\n";
    assert_eq!(incremental(buf).kind, ReplyKind::Push);
}

#[test]
fn attributes_belong_to_the_next_reply() {
    let buf = b"|1\r\n+key-popularity\r\n%2\r\n$1\r\na\r\n,0.19\r\n$1\r\nb\r\n,0.05\r\n*2\r\n:2039123\r\n:9543892\r\n";
    assert_eq!(incremental(buf).kind, ReplyKind::Other);
    assert_eq!(
        incremental(b"|1\r\n+a\r\n+b\r\n-ERR x\r\n").kind,
        ReplyKind::Error
    );
    assert_eq!(incremental(b"|0\r\n>1\r\n+x\r\n").kind, ReplyKind::Push);
    // Nested: the attribute does not count as an array element.
    assert_eq!(
        incremental(b"*2\r\n:1\r\n|1\r\n+ttl\r\n:3600\r\n:2\r\n").kind,
        ReplyKind::Other
    );
    // Attribute on an element that is itself an aggregate, inside a map.
    assert_eq!(
        incremental(b"%1\r\n+k\r\n|1\r\n+a\r\n+b\r\n*1\r\n|0\r\n:1\r\n").kind,
        ReplyKind::Other
    );
}

#[test]
fn streamed_string() {
    let buf = b"$?\r\n;4\r\nHell\r\n;5\r\no wor\r\n;1\r\nd\r\n;0\r\n";
    assert_eq!(incremental(buf).kind, ReplyKind::Other);
    assert_eq!(
        incremental(b"*2\r\n$?\r\n;1\r\na\r\n;0\r\n:1\r\n").kind,
        ReplyKind::Other
    );
    assert_eq!(
        scan_err(b"$?\r\n:1\r\n"),
        ProtocolError::InvalidReplyType(b':')
    );
}

#[test]
fn streamed_aggregates() {
    assert_eq!(
        incremental(b"*?\r\n:1\r\n:2\r\n.\r\n").kind,
        ReplyKind::Other
    );
    assert_eq!(incremental(b"*?\r\n.\r\n").kind, ReplyKind::Other);
    assert_eq!(
        incremental(b"%?\r\n+a\r\n:1\r\n+b\r\n*?\r\n~?\r\n.\r\n.\r\n.\r\n").kind,
        ReplyKind::Other
    );
    assert_eq!(
        incremental(b"*2\r\n~?\r\n#t\r\n.\r\n*1\r\n*?\r\n$?\r\n;0\r\n.\r\n").kind,
        ReplyKind::Other
    );
}

#[test]
fn several_replies_in_one_buffer() {
    let buf = b"+OK\r\n:1\r\n*1\r\n$1\r\nx\r\n-MOVED 1 h:1\r\n";
    let mut s = ResponseScanner::new(8);
    let mut at = 0;
    let mut kinds = Vec::new();
    while let Some(r) = s.scan(&buf[at..]).unwrap() {
        at += r.len;
        kinds.push(r.kind);
    }
    assert_eq!(at, buf.len());
    assert_eq!(
        kinds,
        vec![
            ReplyKind::Other,
            ReplyKind::Other,
            ReplyKind::Other,
            ReplyKind::Error
        ]
    );
}

#[test]
fn large_body_skipped() {
    let mut buf = b"$200000\r\n".to_vec();
    let mut s = ResponseScanner::new(4);
    assert_eq!(s.scan(&buf).unwrap(), None);
    buf.extend(std::iter::repeat(b'\r').take(200_000));
    assert_eq!(s.scan(&buf).unwrap(), None);
    buf.extend_from_slice(b"\r\n");
    assert_eq!(s.scan(&buf).unwrap().unwrap().len, buf.len());
}

#[test]
fn huge_declared_counts_reserve_nothing() {
    let mut s = ResponseScanner::new(4);
    assert_eq!(s.scan(b"*4000000000\r\n:1\r\n").unwrap(), None);
    let mut s = ResponseScanner::new(4);
    assert_eq!(s.scan(b"$9000000000000000000\r\n").unwrap(), None);
}

#[test]
fn depth_limit() {
    assert_eq!(
        scan_err(b"*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n"),
        ProtocolError::ReplyTooDeep(4)
    );
    assert_eq!(
        ResponseScanner::new(4)
            .scan(b"*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n")
            .unwrap()
            .unwrap()
            .len,
        20
    );
}

#[test]
fn malformed_replies() {
    assert_eq!(scan_err(b"?\r\n"), ProtocolError::InvalidReplyType(b'?'));
    assert_eq!(scan_err(b"\r\n"), ProtocolError::InvalidReplyType(b'\r'));
    assert_eq!(scan_err(b".\r\n"), ProtocolError::InvalidReplyType(b'.'));
    assert_eq!(
        scan_err(b"*1\r\n.\r\n"),
        ProtocolError::InvalidReplyType(b'.')
    );
    assert_eq!(scan_err(b"+OK\rX"), ProtocolError::MissingCrlf);
    assert_eq!(scan_err(b"$2\r\nabcd"), ProtocolError::MissingCrlf);
    for bad in [
        &b"$x\r\n"[..],
        b"$-2\r\n",
        b"*-2\r\n",
        b"%-1\r\n",
        b">?\r\n",
        b"|?\r\n",
        b"!?\r\n",
        b"$\r\n",
        b"*99999999999999999999\r\n",
    ] {
        assert_eq!(scan_err(bad), ProtocolError::InvalidReplyLength, "{bad:?}");
    }
    assert_eq!(scan_err(b"$?\r\n;x\r\n"), ProtocolError::InvalidReplyLength);
}

#[test]
fn scanner_resets_after_reply_and_error() {
    let mut s = ResponseScanner::new(4);
    assert!(s.scan(b"*1\r\n?\r\n").is_err());
    assert_eq!(s.scan(b"+OK\r\n").unwrap().unwrap().len, 5);
    assert_eq!(s.scan(b"*1\r\n").unwrap(), None);
    assert_eq!(s.scan(b"*1\r\n:1\r\n").unwrap().unwrap().len, 8);
    assert_eq!(s.scan(b":2\r\n").unwrap().unwrap().len, 4);
}
