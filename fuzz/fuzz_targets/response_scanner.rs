//! Fuzzes the backend reply scanner.
//!
//! Checks, on arbitrary bytes: no panic and frames within bounds (the library's own
//! `fuzz_scanners`); the same frames whatever the read splits; agreement with
//! redis-protocol's RESP2 and RESP3 decoders on frame length and kind; and that the
//! error classifier copes with every error frame found.

#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use slotway::protocol::fuzz::fuzz_scanners;
use slotway::protocol::{classify_error, ProtocolError, ReplyKind, ResponseScanner, ServerError};
use slotway_fuzz::{assert_agree, drive, schedules, End, Outcome};

/// Nesting limit for the scanner under test: low enough that the depth check is reached
/// (the `deep` seed nests 20 levels).
const MAX_DEPTH: usize = 16;

type Frame = (usize, ReplyKind);

fn scan(data: &[u8], schedule: &[usize]) -> Outcome<Frame, ProtocolError> {
    let mut scanner = ResponseScanner::new(MAX_DEPTH);
    drive(data, schedule, |buf| {
        Ok(scanner.scan(buf)?.map(|r| (r.len, (r.len, r.kind))))
    })
}

/// Length and kind of the reply at the start of `buf` when redis-protocol decodes it,
/// re-encodes it to exactly the same bytes, and the frame is one the RESP spec allows
/// (redis-protocol also accepts a few that Redis never sends: see `resp3_valid`).
fn canonical(buf: &[u8]) -> Option<Frame> {
    let bytes = Bytes::copy_from_slice(buf);
    resp2_canonical(&bytes).or_else(|| resp3_canonical(&bytes))
}

fn resp2_canonical(buf: &Bytes) -> Option<Frame> {
    use redis_protocol::resp2::{decode::decode_bytes, encode::extend_encode, types::BytesFrame};
    let (frame, len) = decode_bytes(buf).ok()??;
    let mut out = BytesMut::new();
    extend_encode(&mut out, &frame, false).ok()?;
    let kind = match frame {
        BytesFrame::Error(_) => ReplyKind::Error,
        _ => ReplyKind::Other,
    };
    (out[..] == buf[..len] && resp2_valid(&frame)).then_some((len, kind))
}

fn has_line_break(data: &[u8]) -> bool {
    data.iter().any(|&b| b == b'\r' || b == b'\n')
}

/// No line-typed value holds a CR or LF.
fn resp2_valid(frame: &redis_protocol::resp2::types::BytesFrame) -> bool {
    use redis_protocol::resp2::types::BytesFrame;
    match frame {
        BytesFrame::SimpleString(data) => !has_line_break(data),
        BytesFrame::Error(data) => !has_line_break(data.as_bytes()),
        BytesFrame::Array(items) => items.iter().all(resp2_valid),
        _ => true,
    }
}

/// No line-typed value holds a CR or LF, and no streamed-string chunk (`;`) stands
/// outside a `$?` string.
fn resp3_valid(frame: &redis_protocol::resp3::types::BytesFrame) -> bool {
    use redis_protocol::resp3::types::{BytesFrame, Resp3Frame};
    let attributes_clean = frame
        .attributes()
        .is_none_or(|a| a.iter().all(|(k, v)| resp3_valid(k) && resp3_valid(v)));
    let own_clean = match frame {
        BytesFrame::SimpleString { data, .. } | BytesFrame::BigNumber { data, .. } => {
            !has_line_break(data)
        }
        BytesFrame::SimpleError { data, .. } => !has_line_break(data.as_bytes()),
        BytesFrame::Array { data, .. } | BytesFrame::Push { data, .. } => {
            data.iter().all(resp3_valid)
        }
        BytesFrame::Set { data, .. } => data.iter().all(resp3_valid),
        BytesFrame::Map { data, .. } => data.iter().all(|(k, v)| resp3_valid(k) && resp3_valid(v)),
        BytesFrame::ChunkedString(_) | BytesFrame::Hello { .. } => false,
        _ => true,
    };
    attributes_clean && own_clean
}

fn resp3_canonical(buf: &Bytes) -> Option<Frame> {
    use redis_protocol::resp3::{
        decode::complete::decode_bytes, encode::complete::extend_encode, types::BytesFrame,
    };
    let (frame, len) = decode_bytes(buf).ok()??;
    let mut out = BytesMut::new();
    extend_encode(&mut out, &frame, false).ok()?;
    let kind = match frame {
        BytesFrame::SimpleError { .. } | BytesFrame::BlobError { .. } => ReplyKind::Error,
        BytesFrame::Push { .. } => ReplyKind::Push,
        _ => ReplyKind::Other,
    };
    (out[..] == buf[..len] && resp3_valid(&frame)).then_some((len, kind))
}

/// redis-protocol does not limit nesting, so a canonical reply nested deeper than the
/// scanner's limit is rightly refused.
fn refused_for_depth(outcome: &Outcome<Frame, ProtocolError>) -> bool {
    matches!(
        outcome.end,
        End::Error {
            error: ProtocolError::ReplyTooDeep(_),
            ..
        }
    )
}

fn check_oracle(data: &[u8], outcome: &Outcome<Frame, ProtocolError>) {
    for (at, frame) in &outcome.frames {
        if let Some(expected) = canonical(&data[*at..]) {
            assert_eq!(*frame, expected, "reply at {at}");
        }
        // Whatever redis-protocol accepts, leniently or not, must frame identically.
        let rp = redis_protocol::resp3::decode::complete::decode_range(&data[*at..]);
        if let Ok(Some((_, len))) = rp {
            assert_eq!(
                frame.0, len,
                "reply at {at}: redis-protocol frames {len} bytes"
            );
        }
    }
    let stop = match outcome.end {
        End::Clean => return,
        End::Incomplete { at } | End::Error { at, .. } => at,
    };
    if !refused_for_depth(outcome) {
        assert_eq!(
            canonical(&data[stop..]),
            None,
            "scanner stopped at {stop} ({:?}) on a well-formed reply",
            outcome.end
        );
    }
}

fn check_errors(data: &[u8], outcome: &Outcome<Frame, ProtocolError>) {
    for (at, (len, kind)) in &outcome.frames {
        if *kind != ReplyKind::Error {
            continue;
        }
        match classify_error(&data[*at..*at + len]) {
            ServerError::Moved { slot, addr } | ServerError::Ask { slot, addr } => {
                assert!(slot < 16384);
                // The caller's parser must refuse or accept any target without panicking.
                let _ = addr.parse::<slotway::net::NodeAddr>();
            }
            _ => {}
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let runs = schedules(data);
    fuzz_scanners(data, &runs[2]);
    let outcomes: Vec<_> = runs.iter().map(|s| scan(data, s)).collect();
    assert_agree(&outcomes, |_| false);
    check_oracle(data, &outcomes[0]);
    check_errors(data, &outcomes[0]);
});
