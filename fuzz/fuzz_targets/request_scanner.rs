//! Fuzzes the client request scanner.
//!
//! Checks, on arbitrary bytes: no panic and frames within bounds (the library's own
//! `fuzz_scanners`); the same frames and arguments whatever the read splits; agreement
//! with redis-protocol on every well-formed multibulk; and that an inline request rewrites
//! to a multibulk carrying the same arguments.

#![no_main]

use std::ops::Range;

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use slotway::protocol::fuzz::fuzz_scanners;
use slotway::protocol::{
    encode, inline_to_multibulk, ProtocolError, RequestKind, RequestScanner, ScanLimits,
};
use slotway_fuzz::{assert_agree, drive, schedules, End, Outcome};

/// Small limits so the "too big" and count checks are reachable from short inputs.
const SMALL: ScanLimits = ScanLimits {
    max_bulk_len: 512,
    max_multibulk_len: 32,
    max_inline_len: 64,
};

/// One scanned request: its kind and argument ranges relative to its start.
type Frame = (usize, RequestKind, Vec<Range<usize>>);

fn scan_with(data: &[u8], schedule: &[usize], limits: ScanLimits) -> Outcome<Frame, ProtocolError> {
    let mut scanner = RequestScanner::new(limits);
    drive(data, schedule, |buf| {
        Ok(scanner.scan(buf)?.map(|r| {
            let args = scanner.args().to_vec();
            assert!(args.iter().all(|a| a.start <= a.end && a.end <= r.len));
            (r.len, (r.len, r.kind, args))
        }))
    })
}

/// Errors that fire on how much is buffered, not on what the bytes say.
fn read_bound(e: &ProtocolError) -> bool {
    matches!(
        e,
        ProtocolError::InlineTooBig
            | ProtocolError::MultibulkCountTooBig
            | ProtocolError::BulkCountTooBig
    )
}

/// The arguments of `buf` when it starts with a canonical RESP array of bulk strings
/// (exactly what `encode::command` writes), per redis-protocol.
fn oracle_multibulk(buf: &[u8]) -> Option<(usize, Vec<Range<usize>>)> {
    use redis_protocol::resp2::types::RangeFrame;
    let (frame, len) = redis_protocol::resp2::decode::decode_range(buf).ok()??;
    let RangeFrame::Array(items) = frame else {
        return None;
    };
    let args = items
        .into_iter()
        .map(|item| match item {
            RangeFrame::BulkString((start, end)) => Some(start..end),
            _ => None,
        })
        .collect::<Option<Vec<_>>>()?;
    if args.is_empty() {
        return None;
    }
    let mut canonical = BytesMut::new();
    let values: Vec<&[u8]> = args.iter().map(|r| &buf[r.clone()]).collect();
    encode::command(&mut canonical, &values);
    (canonical[..] == buf[..len]).then_some((len, args))
}

/// Redis-protocol and the scanner agree wherever the input holds a canonical multibulk.
fn check_oracle(data: &[u8], outcome: &Outcome<Frame, ProtocolError>) {
    for (at, (len, kind, args)) in &outcome.frames {
        if let Some((oracle_len, oracle_args)) = oracle_multibulk(&data[*at..]) {
            assert_eq!(*kind, RequestKind::MultiBulk);
            assert_eq!((*len, args), (oracle_len, &oracle_args), "frame at {at}");
        }
    }
    let stop = match outcome.end {
        End::Clean => return,
        End::Incomplete { at } | End::Error { at, .. } => at,
    };
    assert!(
        oracle_multibulk(&data[stop..]).is_none(),
        "scanner stopped at {stop} ({:?}) on a well-formed request",
        outcome.end
    );
}

/// An inline request rewrites to a multibulk with the same arguments.
fn check_inline(data: &[u8], outcome: &Outcome<Frame, ProtocolError>) {
    for (at, (len, kind, args)) in &outcome.frames {
        if *kind != RequestKind::Inline {
            continue;
        }
        let line = &data[*at..*at + len];
        let rewritten = inline_to_multibulk(line).expect("scanner accepted the line");
        if args.is_empty() {
            // Quoted: the rewrite must itself be one complete multibulk.
            let mut scanner = RequestScanner::new(ScanLimits::default());
            let req = scanner
                .scan(&rewritten)
                .expect("rewrite scans")
                .expect("complete");
            assert_eq!(
                (req.len, req.kind),
                (rewritten.len(), RequestKind::MultiBulk)
            );
        } else {
            let mut expected = BytesMut::new();
            let raw: Vec<&[u8]> = args.iter().map(|r| &line[r.clone()]).collect();
            encode::command(&mut expected, &raw);
            assert_eq!(rewritten, expected.freeze(), "inline rewrite at {at}");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let runs = schedules(data);
    fuzz_scanners(data, &runs[2]);

    let small: Vec<_> = runs.iter().map(|s| scan_with(data, s, SMALL)).collect();
    assert_agree(&small, read_bound);

    let wide: Vec<_> = runs
        .iter()
        .map(|s| scan_with(data, s, ScanLimits::default()))
        .collect();
    assert_agree(&wide, read_bound);
    check_oracle(data, &wide[0]);
    check_inline(data, &wide[0]);
});
