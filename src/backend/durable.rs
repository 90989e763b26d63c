//! Durable-write mode: the `WAIT` sent after each durable request on a multiplexed
//! connection, and the verdict on the reply once replicas have (or have not) confirmed it.

use bytes::{Bytes, BytesMut};

use crate::protocol::{encode, ReplyKind};

/// The `WAIT` that follows each durable write, and what counts as confirmed.
#[derive(Debug, Clone)]
pub struct DurableWait {
    /// `WAIT <replicas> <timeout>` in wire form.
    pub command: Bytes,
    /// Replicas that must confirm.
    pub replicas: i64,
    /// The timeout, for the client's error message.
    pub timeout_ms: u64,
    /// A null reply means nothing was written (a blocking pop that timed out, an EXEC whose
    /// WATCH fired), so it needs no confirmation.
    pub null_unwritten: bool,
}

impl DurableWait {
    /// A WAIT for `replicas` replicas within `timeout_ms`.
    pub fn new(replicas: u32, timeout_ms: u64) -> Self {
        let mut cmd = BytesMut::new();
        encode::command(
            &mut cmd,
            &[
                b"WAIT",
                replicas.to_string().as_bytes(),
                timeout_ms.to_string().as_bytes(),
            ],
        );
        Self {
            command: cmd.freeze(),
            replicas: replicas.into(),
            timeout_ms,
            null_unwritten: false,
        }
    }

    /// The same WAIT, skipped for a null reply (see [`DurableWait::null_unwritten`]).
    pub fn unless_null(self) -> Self {
        Self {
            null_unwritten: true,
            ..self
        }
    }

    /// True when `reply` may stand for a write that replicas must confirm.
    pub fn needs_confirming(&self, reply: &[u8], kind: ReplyKind) -> bool {
        let null = matches!(reply, b"$-1\r\n" | b"*-1\r\n" | b"_\r\n");
        kind != ReplyKind::Error && !(self.null_unwritten && null)
    }

    /// The reply the client gets: the command's own reply when enough replicas confirmed it
    /// (or when it failed, so there was nothing to replicate), else an error saying so.
    pub fn verdict(&self, reply: Bytes, kind: ReplyKind, wait_reply: &[u8]) -> (Bytes, ReplyKind) {
        if !self.needs_confirming(&reply, kind) {
            return (reply, kind);
        }
        let acked = parse_integer(wait_reply);
        if acked.is_some_and(|n| n >= self.replicas) {
            return (reply, kind);
        }
        let mut out = BytesMut::new();
        encode::error(
            &mut out,
            &format!(
                "ERR slotway: the write was applied on the primary but only {} of {} replica(s) confirmed it within {} ms; it may not be durable",
                acked.map_or_else(|| "an unknown number".to_string(), |n| n.to_string()),
                self.replicas,
                self.timeout_ms
            ),
        );
        (out.freeze(), ReplyKind::Error)
    }
}

/// The value of an integer reply (`:N\r\n`).
fn parse_integer(frame: &[u8]) -> Option<i64> {
    let body = frame.strip_prefix(b":")?.strip_suffix(b"\r\n")?;
    std::str::from_utf8(body).ok()?.parse().ok()
}
