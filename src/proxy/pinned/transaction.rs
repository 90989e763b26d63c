//! Transactions on the pinned connection: `WATCH`, and a whole `MULTI … EXEC` read back as
//! one run, with EXEC's reply confirmed in durable-write mode.

use bytes::Bytes;

use super::error_frame;
use super::task::Pin;
use super::wire::confirm;
use crate::backend::DurableWait;
use crate::protocol::ReplyKind;

impl Pin {
    /// `WATCH`: the connection watches its keys until EXEC or UNWATCH.
    pub(super) async fn watch(&mut self, raw: &[u8]) -> Bytes {
        let conn = match self.conn().await {
            Ok(c) => c,
            Err(e) => return error_frame(&format!("ERR slotway: WATCH failed: {e}")),
        };
        let limit = Some(conn.reply_timeout());
        if let Err(e) = conn.write(raw).await {
            return self.fail("WATCH not sent", e);
        }
        let (frame, kind) = match conn.read_frame_within(limit).await {
            Ok(r) => r,
            Err(e) => return self.fail("WATCH failed", e),
        };
        if kind == ReplyKind::Error {
            return self.routing_error("WATCH", &frame).unwrap_or(frame);
        }
        self.watching = true;
        frame
    }

    /// `MULTI … EXEC` sent as one run; the client gets EXEC's reply (or the routing error
    /// that aborted the transaction).
    pub(super) async fn exec(
        &mut self,
        raw: &[u8],
        queued: usize,
        durable: Option<&DurableWait>,
    ) -> Bytes {
        let conn = match self.conn().await {
            Ok(c) => c,
            Err(e) => {
                return error_frame(&format!(
                    "ERR slotway: transaction not run (nothing was executed): {e}"
                ))
            }
        };
        let limit = Some(conn.reply_timeout());
        if let Err(e) = conn.write(raw).await {
            return self.fail(
                "connection lost during EXEC; the transaction may or may not have been applied",
                e,
            );
        }
        let mut aborted = None;
        let mut last = Bytes::new();
        for _ in 0..queued + 2 {
            let Some(conn) = self.conn.as_mut() else {
                break;
            };
            let (frame, kind) = match conn.read_frame_within(limit).await {
                Ok(r) => r,
                Err(e) => return self.fail(
                    "connection lost during EXEC; the transaction may or may not have been applied",
                    e,
                ),
            };
            // EXEC's own top-level error is Redis's too (a slot moved since queuing makes the
            // node discard the transaction); errors of the commands are inside its array.
            if kind == ReplyKind::Error && aborted.is_none() {
                aborted = self.routing_error("transaction aborted (nothing was executed)", &frame);
            }
            last = frame;
        }
        self.watching = false;
        if let Some(err) = aborted {
            return err;
        }
        match (durable, self.conn.as_mut()) {
            (Some(wait), Some(conn)) => confirm(conn, wait, last).await,
            _ => last,
        }
    }
}
