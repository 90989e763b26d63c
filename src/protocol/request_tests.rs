//! Unit tests for the request scanner.

use super::*;

fn scanner() -> RequestScanner {
    RequestScanner::new(ScanLimits::default())
}

fn small_limits() -> ScanLimits {
    ScanLimits {
        max_bulk_len: 16,
        max_multibulk_len: 4,
        max_inline_len: 32,
    }
}

/// Scans a buffer holding exactly one request and returns it with its arguments.
fn one(buf: &[u8]) -> (ScannedRequest, Vec<Vec<u8>>) {
    let mut s = scanner();
    let req = s.scan(buf).unwrap().expect("complete request");
    let args = s.args().iter().map(|r| buf[r.clone()].to_vec()).collect();
    (req, args)
}

fn err(limits: ScanLimits, buf: &[u8]) -> ProtocolError {
    RequestScanner::new(limits).scan(buf).unwrap_err()
}

#[test]
fn multibulk_request() {
    let buf = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nv\r\nxy\r\n";
    let (req, args) = one(buf);
    assert_eq!(req.len, buf.len());
    assert_eq!(req.kind, RequestKind::MultiBulk);
    assert_eq!(
        args,
        vec![b"SET".to_vec(), b"k".to_vec(), b"v\r\nxy".to_vec()]
    );
}

#[test]
fn empty_bulk_argument() {
    let (req, args) = one(b"*2\r\n$4\r\nECHO\r\n$0\r\n\r\n");
    assert_eq!(req.kind, RequestKind::MultiBulk);
    assert_eq!(args, vec![b"ECHO".to_vec(), Vec::new()]);
}

#[test]
fn empty_requests() {
    for buf in [
        &b"*0\r\n"[..],
        b"*-1\r\n",
        b"*-5\r\n",
        b"\r\n",
        b"\n",
        b"  \t \r\n",
    ] {
        let (req, args) = one(buf);
        assert_eq!(req.kind, RequestKind::Empty, "{buf:?}");
        assert_eq!(req.len, buf.len());
        assert!(args.is_empty());
    }
}

#[test]
fn inline_request() {
    let (req, args) = one(b"SET k  v\r\n");
    assert_eq!(req.kind, RequestKind::Inline);
    assert_eq!(req.len, 10);
    assert_eq!(args, vec![b"SET".to_vec(), b"k".to_vec(), b"v".to_vec()]);

    let (req, args) = one(b"PING\n");
    assert_eq!((req.len, req.kind), (5, RequestKind::Inline));
    assert_eq!(args, vec![b"PING".to_vec()]);
}

#[test]
fn quoted_inline_request_has_no_args() {
    let (req, args) = one(b"SET k \"a b\"\r\n");
    assert_eq!(req.kind, RequestKind::Inline);
    assert!(args.is_empty());
    assert_eq!(
        err(ScanLimits::default(), b"SET k \"a b\r\n"),
        ProtocolError::UnbalancedQuotes
    );
}

#[test]
fn pipelined_requests_one_at_a_time() {
    let buf = b"*1\r\n$4\r\nPING\r\nECHO x\r\n*0\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\n";
    let mut s = scanner();
    let mut at = 0;
    let mut seen = Vec::new();
    while let Some(req) = s.scan(&buf[at..]).unwrap() {
        let args: Vec<&[u8]> = s.args().iter().map(|r| &buf[at..][r.clone()]).collect();
        seen.push((req.kind, args.concat()));
        at += req.len;
    }
    assert_eq!(at, buf.len());
    assert_eq!(
        seen,
        vec![
            (RequestKind::MultiBulk, b"PING".to_vec()),
            (RequestKind::Inline, b"ECHOx".to_vec()),
            (RequestKind::Empty, Vec::new()),
            (RequestKind::MultiBulk, b"GETk".to_vec()),
        ]
    );
}

#[test]
fn byte_by_byte_resumes() {
    let buf = b"*2\r\n$3\r\nGET\r\n$10\r\n0123456789\r\n";
    let mut s = scanner();
    for end in 0..buf.len() {
        assert_eq!(s.scan(&buf[..end]).unwrap(), None, "at {end}");
    }
    let req = s.scan(buf).unwrap().unwrap();
    assert_eq!(req.len, buf.len());
    assert_eq!(&buf[s.args()[1].clone()], b"0123456789");
}

#[test]
fn large_body_is_skipped_by_length() {
    let mut buf = b"*2\r\n$3\r\nSET\r\n$100000\r\n".to_vec();
    let mut s = scanner();
    assert_eq!(s.scan(&buf).unwrap(), None);
    // The body may contain anything, including what looks like RESP.
    buf.extend(std::iter::repeat(b'*').take(50_000));
    assert_eq!(s.scan(&buf).unwrap(), None);
    buf.extend(std::iter::repeat(b'\r').take(50_000));
    assert_eq!(s.scan(&buf).unwrap(), None);
    buf.extend_from_slice(b"\r\n");
    let req = s.scan(&buf).unwrap().unwrap();
    assert_eq!(req.len, buf.len());
    assert_eq!(s.args()[1].len(), 100_000);
}

#[test]
fn args_cleared_between_requests() {
    let mut s = scanner();
    s.scan(b"*2\r\n$1\r\na\r\n$1\r\nb\r\n").unwrap().unwrap();
    assert_eq!(s.args().len(), 2);
    s.scan(b"*1\r\n$1\r\nc\r\n").unwrap().unwrap();
    assert_eq!(s.args().to_vec(), vec![8..9]);
}

#[test]
fn redis_lenient_terminators() {
    // Redis skips the byte after a header's \r and the two bytes after a body unchecked.
    let (req, args) = one(b"*1\rX$4\r\nPING\r\n");
    assert_eq!((req.len, args), (14, vec![b"PING".to_vec()]));
    let (req, args) = one(b"*1\r\n$4\r\nPINGXY");
    assert_eq!((req.len, args), (14, vec![b"PING".to_vec()]));
}

#[test]
fn invalid_multibulk_length() {
    for buf in [
        &b"*01\r\n"[..],
        b"*+1\r\n",
        b"*x\r\n",
        b"*\r\n",
        b"*-0\r\n",
        b"*1 \r\n",
    ] {
        assert_eq!(
            err(ScanLimits::default(), buf),
            ProtocolError::InvalidMultibulkLength
        );
    }
    assert_eq!(
        err(small_limits(), b"*5\r\n"),
        ProtocolError::InvalidMultibulkLength
    );
    assert!(RequestScanner::new(small_limits())
        .scan(b"*4\r\n")
        .unwrap()
        .is_none());
    assert_eq!(
        err(ScanLimits::default(), b"*1048577\r\n"),
        ProtocolError::InvalidMultibulkLength
    );
}

#[test]
fn invalid_bulk_length() {
    for buf in [
        &b"*1\r\n$-1\r\n"[..],
        b"*1\r\n$-0\r\n",
        b"*1\r\n$01\r\n",
        b"*1\r\n$\r\n",
        b"*1\r\n$1x\r\n",
        b"*1\r\n$536870913\r\n",
        b"*1\r\n$99999999999999999999\r\n",
    ] {
        assert_eq!(
            err(ScanLimits::default(), buf),
            ProtocolError::InvalidBulkLength,
            "{buf:?}"
        );
    }
    assert!(scanner().scan(b"*1\r\n$536870912\r\n").unwrap().is_none());
    assert_eq!(
        err(small_limits(), b"*1\r\n$17\r\n"),
        ProtocolError::InvalidBulkLength
    );
}

#[test]
fn expected_bulk() {
    assert_eq!(
        err(ScanLimits::default(), b"*1\r\nX\r\n"),
        ProtocolError::ExpectedBulk(b'X')
    );
    assert_eq!(
        err(ScanLimits::default(), b"*1\r\n:1\r\n"),
        ProtocolError::ExpectedBulk(b':')
    );
    // An array inside a request.
    assert_eq!(
        err(ScanLimits::default(), b"*1\r\n*1\r\n$1\r\na\r\n"),
        ProtocolError::ExpectedBulk(b'*')
    );
    // Judged only once the header's \r has arrived, as Redis does.
    assert_eq!(scanner().scan(b"*1\r\nX").unwrap(), None);
}

#[test]
fn too_big_header_lines() {
    let limits = small_limits();
    let mut buf = b"*".to_vec();
    buf.extend(std::iter::repeat(b'1').take(31));
    assert_eq!(RequestScanner::new(limits).scan(&buf).unwrap(), None);
    buf.push(b'1');
    assert_eq!(err(limits, &buf), ProtocolError::MultibulkCountTooBig);

    let mut buf = b"*1\r\n$".to_vec();
    buf.extend(std::iter::repeat(b'1').take(31));
    assert_eq!(RequestScanner::new(limits).scan(&buf).unwrap(), None);
    buf.push(b'1');
    assert_eq!(err(limits, &buf), ProtocolError::BulkCountTooBig);

    // The limit applies before the element's type byte is checked.
    let mut buf = b"*1\r\n".to_vec();
    buf.extend(std::iter::repeat(b'X').take(33));
    assert_eq!(err(limits, &buf), ProtocolError::BulkCountTooBig);
}

#[test]
fn too_big_inline() {
    let limits = small_limits();
    let mut buf = vec![b'P'; 32];
    let mut s = RequestScanner::new(limits);
    assert_eq!(s.scan(&buf).unwrap(), None);
    buf.push(b'P');
    assert_eq!(s.scan(&buf).unwrap_err(), ProtocolError::InlineTooBig);
    // A line that is long but complete in one read is accepted, as in Redis.
    let mut line = vec![b'P'; 40];
    line.extend_from_slice(b"\r\n");
    let req = RequestScanner::new(limits).scan(&line).unwrap().unwrap();
    assert_eq!(req.len, 42);
}

#[test]
fn scanner_resets_after_error() {
    let mut s = scanner();
    assert!(s.scan(b"*1\r\nX\r\n").is_err());
    let req = s.scan(b"*1\r\n$4\r\nPING\r\n").unwrap().unwrap();
    assert_eq!(req.kind, RequestKind::MultiBulk);
    assert_eq!(s.args().to_vec(), vec![8..12]);
}

#[test]
fn empty_buffer_is_incomplete() {
    assert_eq!(scanner().scan(b"").unwrap(), None);
}
