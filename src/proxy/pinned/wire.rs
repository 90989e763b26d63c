//! Reading replies off a dedicated connection and confirming durable writes on it.

use std::time::Duration;

use bytes::{Bytes, BytesMut};

use super::error_frame;
use crate::backend::{DedicatedConn, DedicatedError, DurableWait};
use crate::protocol::ReplyKind;

/// Durable-write mode: `WAIT` on the connection that ran the write, and the client's reply
/// as the shared connections would give it (an error when too few replicas confirmed).
pub(super) async fn confirm(conn: &mut DedicatedConn, wait: &DurableWait, frame: Bytes) -> Bytes {
    let kind = match frame.first() {
        Some(b'-' | b'!') => ReplyKind::Error,
        _ => ReplyKind::Other,
    };
    if !wait.needs_confirming(&frame, kind) {
        return frame;
    }
    let limit = Some(conn.reply_timeout());
    let waited = match conn.write(&wait.command).await {
        Ok(()) => conn.read_frame_within(limit).await,
        Err(e) => Err(e),
    };
    let wait_reply = waited.map(|(r, _)| r).unwrap_or_default();
    wait.verdict(frame, kind, &wait_reply).0
}

/// Reads `frames` replies as one run (the kind is the last one's).
pub(super) async fn read_frames(
    conn: &mut DedicatedConn,
    frames: u32,
    limit: Option<Duration>,
) -> Result<(Bytes, ReplyKind), DedicatedError> {
    let first = conn.read_frame_within(limit).await?;
    if frames <= 1 {
        return Ok(first);
    }
    let mut run = BytesMut::from(&first.0[..]);
    let mut kind = first.1;
    for _ in 1..frames {
        let (frame, k) = conn.read_frame_within(limit).await?;
        run.extend_from_slice(&frame);
        kind = k;
    }
    Ok((run.freeze(), kind))
}

/// The client's error for `what` when the node answered `frame`, an error of a changing
/// cluster: nothing ran, and the client may retry.
pub(crate) fn moving_error(what: &str, frame: &[u8]) -> Bytes {
    let text = String::from_utf8_lossy(frame.get(1..).unwrap_or_default())
        .trim_end()
        .to_string();
    error_frame(&format!(
        "ERR slotway: {what}: the slot is moving or its node is failing over ({text}); retry"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_null_reply_of_a_blocking_write_needs_no_confirmation() {
        let plain = DurableWait::new(2, 100);
        let blocking = DurableWait::new(2, 100).unless_null();
        for null in [&b"*-1\r\n"[..], b"$-1\r\n", b"_\r\n"] {
            assert!(plain.needs_confirming(null, ReplyKind::Other));
            assert!(!blocking.needs_confirming(null, ReplyKind::Other));
        }
        assert!(blocking.needs_confirming(b"$4\r\nitem\r\n", ReplyKind::Other));
        assert!(!blocking.needs_confirming(b"-ERR x\r\n", ReplyKind::Error));
        // Not confirmed: the same error a plain write gets.
        let (frame, kind) = blocking.verdict(
            Bytes::from_static(b"$1\r\nx\r\n"),
            ReplyKind::Other,
            b":0\r\n",
        );
        assert_eq!(kind, ReplyKind::Error);
        assert!(String::from_utf8_lossy(&frame).contains("only 0 of 2 replica(s)"));
    }
}
