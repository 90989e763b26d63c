//! Blocking commands and RESP3 scripts on the pinned connection, following only the
//! redirects Redis itself gave before running them (see `proxy::trust`).

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::time::Instant;

use super::error_frame;
use super::task::Pin;
use super::wire::{confirm, read_frames};
use crate::backend::{DedicatedError, DurableWait};
use crate::protocol::{classify_error, encode, ReplyKind, ServerError};
use crate::proxy::trust::{self, Gate, Verdict, Wrap};

/// Most redirects a blocking command follows.
const MAX_REDIRECTS: u32 = 5;
/// Pause before sending a request again after `-TRYAGAIN`.
const TRYAGAIN_PAUSE: Duration = Duration::from_millis(50);

impl Pin {
    /// Runs one blocking command or (`script`) one script, following only what Redis itself
    /// answered before running it (see [`trust`]): a script goes as MULTI/EXEC, so what it
    /// returns is the client's reply and never a redirect; a redirect is followed only to a
    /// member of the topology.
    pub(super) async fn blocking(
        &mut self,
        raw: Bytes,
        limit: Option<Duration>,
        mut reload: Option<Bytes>,
        durable: Option<&DurableWait>,
        script: bool,
    ) -> Bytes {
        let mut redirects = 0;
        let deadline = Instant::now() + self.ctx.retry_deadline;
        loop {
            // The probe (on the first try only) tells a missing script from a script's text.
            let probe = reload.as_deref().map(crate::proxy::sha1::hex);
            let (send, wrap) = if script {
                let (bytes, wrap) = trust::wrap(&raw, probe.as_deref().map(str::as_bytes));
                (bytes, Some(wrap))
            } else {
                (raw.clone(), None)
            };
            let conn = match self.conn().await {
                Ok(c) => c,
                Err(e) => return error_frame(&format!("ERR slotway: {e}")),
            };
            if let Err(e) = conn.write(&send).await {
                return self.fail("blocking command not sent", e);
            }
            let frames = wrap.map_or(1, Wrap::replies);
            let (frame, kind) = match read_frames(conn, frames, limit).await {
                Ok(r) => r,
                Err(e) => return self.fail(
                    "connection lost while blocked; the command may or may not have been applied",
                    e,
                ),
            };
            let frame = match wrap.map(|w| trust::unwrap(&frame, w)) {
                Some(Verdict::Ran(reply)) => return self.confirmed(reply, durable).await,
                Some(Verdict::NotRun(err)) => err,
                None if kind != ReplyKind::Error => return self.confirmed(frame, durable).await,
                None => frame,
            };
            let err = classify_error(&frame);
            let mut gate = self.judge(&err, false);
            if gate == Gate::Confirm {
                if let Some(handle) = self.ctx.router.topology() {
                    let wait = self.ctx.retry_deadline;
                    let _ = tokio::time::timeout(wait, handle.refresh_and_wait()).await;
                }
                gate = self.judge(&err, true);
            }
            if matches!(gate, Gate::Redirect { .. }) && redirects >= MAX_REDIRECTS {
                return error_frame(&trust::too_many_redirects(trust::redirect_slot(&err)));
            }
            match gate {
                Gate::Reload => match reload.take() {
                    Some(body) => {
                        if let Err(e) = self.load_script(&body).await {
                            return self.fail("SCRIPT LOAD failed", e);
                        }
                    }
                    None => return frame,
                },
                Gate::Redirect {
                    to,
                    moved: Some(slot),
                } => {
                    self.ctx.router.note_moved(slot, to);
                    redirects += 1;
                    if let Some(conn) = self.conn.take() {
                        conn.release();
                    }
                    self.addr = to;
                }
                Gate::Redirect { to, moved: None } => {
                    self.ctx.router.note_ask();
                    return self.asking(to, &send, frames, limit, durable).await;
                }
                // Not run (a multi-key request during a migration): again shortly.
                Gate::Retry { refresh: false } if Instant::now() < deadline => {
                    tokio::time::sleep(TRYAGAIN_PAUSE).await;
                }
                _ => return frame,
            }
        }
    }

    /// What an error Redis produced may do here: the exchange carries no slot of its own,
    /// so a redirect is judged by its target alone.
    fn judge(&self, err: &ServerError<'_>, confirmed: bool) -> Gate {
        let table = self.ctx.router.table();
        let topology = table.as_ref().map(|t| &*t.topology);
        trust::judge(err, trust::redirect_slot(err), topology, confirmed)
    }

    /// The client's reply to a command that ran: confirmed by `WAIT` in durable mode.
    async fn confirmed(&mut self, frame: Bytes, durable: Option<&DurableWait>) -> Bytes {
        let is_error = matches!(frame.first(), Some(b'-' | b'!'));
        match (durable, self.conn.as_mut()) {
            (Some(wait), Some(conn)) if !is_error => confirm(conn, wait, frame).await,
            _ => frame,
        }
    }

    /// A one-off `-ASK` redirect: `ASKING` and the request (`frames` replies: a wrapped
    /// script's run) on a dedicated connection to the member `to`, handed back to the pool
    /// afterwards; the pinned connection stays where it is.
    async fn asking(
        &mut self,
        to: SocketAddr,
        raw: &[u8],
        frames: u32,
        limit: Option<Duration>,
        durable: Option<&DurableWait>,
    ) -> Bytes {
        let mut conn = match self.ctx.pool.checkout(to, self.proto, self.budget).await {
            Ok(c) => c,
            Err(e) => {
                return error_frame(&format!(
                    "ERR slotway: ASK redirect to {to} failed (not run): {e}"
                ))
            }
        };
        let mut req = BytesMut::with_capacity(raw.len() + 16);
        encode::command(&mut req, &[b"ASKING"]);
        req.extend_from_slice(raw);
        let asked = match conn.write(&req).await {
            Ok(()) => conn.read_frame_within(Some(conn.reply_timeout())).await,
            Err(e) => Err(e),
        };
        let reply = match asked {
            Ok(_) => read_frames(&mut conn, frames, limit).await,
            Err(e) => Err(e),
        };
        match reply {
            Ok((frame, kind)) => {
                let (frame, kind) = match frames {
                    1 => (frame, kind),
                    _ => trust::after_ask(&frame, frames),
                };
                let frame = match durable {
                    Some(wait) if kind != ReplyKind::Error => confirm(&mut conn, wait, frame).await,
                    _ => frame,
                };
                conn.release();
                frame
            }
            Err(e) => error_frame(&format!(
                "ERR slotway: connection lost after an ASK redirect to {to}; the command may or may not have been applied: {e}"
            )),
        }
    }

    /// Loads a script body on the connection (its reply, the SHA1, is not needed).
    async fn load_script(&mut self, body: &[u8]) -> Result<(), DedicatedError> {
        let Some(conn) = self.conn.as_mut() else {
            return Err(DedicatedError::Lost(self.addr, "no connection".into()));
        };
        let mut cmd = BytesMut::new();
        encode::command(&mut cmd, &[b"SCRIPT", b"LOAD", body]);
        let limit = Some(conn.reply_timeout());
        conn.write(&cmd).await?;
        conn.read_frame_within(limit).await.map(|_| ())
    }
}
