//! A session's pinned backend connection: a small task owning one dedicated connection and
//! running the jobs the session gives it in order — a `WATCH`, a whole `MULTI … EXEC`, or one
//! blocking command — and reporting each reply on the session's completion channel.
//!
//! When the session drops its handle the task finishes the jobs already given, makes the
//! connection clean (`UNWATCH` after a `WATCH` that no `EXEC` consumed) and hands it back to
//! the pool; a connection in an unknown state is closed instead. When the session itself goes
//! away (client disconnected) a blocked job is abandoned at once and its connection closed,
//! which is what makes Redis unblock and forget that client.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::router::Router;
use super::trust::{self, Gate, Verdict, Wrap};
use crate::backend::{
    Budget, Completion, DedicatedConn, DedicatedError, DedicatedPool, DurableWait, Outcome, ReplyTo,
};
use crate::protocol::{classify_error, encode, ReplyKind, ServerError};

/// Most redirects a blocking command follows.
const MAX_REDIRECTS: u32 = 5;
/// Pause before sending a request again after `-TRYAGAIN`.
const TRYAGAIN_PAUSE: Duration = Duration::from_millis(50);

/// What a job is, which decides how its replies are read and judged.
#[derive(Debug, Clone)]
pub enum JobKind {
    /// `WATCH …`: one reply; the connection then watches keys until EXEC or UNWATCH.
    Watch,
    /// `MULTI`, `queued` commands, `EXEC`: `queued + 2` replies, the client gets EXEC's.
    Exec {
        /// Commands between MULTI and EXEC.
        queued: usize,
        /// Durable-write mode for a transaction that may write: the `WAIT` that must
        /// confirm it, on the connection that ran it.
        durable: Option<DurableWait>,
    },
    /// One blocking command: one reply, waited for up to `limit` (None: forever); a MOVED
    /// is followed to the new owner on a dedicated connection there, an ASK once with
    /// `ASKING`, and a TRYAGAIN is sent again within the retry deadline.
    Blocking {
        /// How long the reply may take (the command's own timeout plus a margin).
        limit: Option<Duration>,
        /// Durable-write mode for a command that writes (a pop, a move, XREADGROUP's PEL):
        /// the `WAIT` that must confirm it.
        durable: Option<DurableWait>,
    },
    /// A script (`EVAL`, `EVALSHA`, `FCALL` …) for a RESP3 client, run like a blocking
    /// command; a `NOSCRIPT` is answered by loading `reload` (the body slotway remembers for
    /// an `EVALSHA`) and sending the request again, once.
    Script {
        /// How long the reply may take.
        limit: Option<Duration>,
        /// The script body to load on `NOSCRIPT`.
        reload: Option<Bytes>,
        /// Durable-write mode for a script that may write: the `WAIT` that must confirm it.
        durable: Option<DurableWait>,
    },
}

/// One job for the pinned connection.
#[derive(Debug)]
pub struct Job {
    /// The bytes to send.
    pub raw: Bytes,
    /// How to read and judge the replies.
    pub kind: JobKind,
    /// Where the client-facing reply goes.
    pub reply: ReplyTo,
}

/// The session's handle on its pinned connection; dropping it releases the connection.
#[derive(Debug)]
pub struct PinnedHandle {
    jobs: mpsc::UnboundedSender<Job>,
    addr: SocketAddr,
}

/// What the task needs besides its jobs.
#[derive(Clone, Debug)]
pub struct PinContext {
    /// Where dedicated connections come from.
    pub pool: Arc<DedicatedPool>,
    /// For MOVED bookkeeping and re-resolving a slot's owner.
    pub router: Arc<Router>,
    /// How long a connect failure is retried while the topology settles.
    pub retry_deadline: Duration,
}

impl PinnedHandle {
    /// Starts a pinned connection to `addr` speaking protocol `proto`; the connection is made
    /// when the first job arrives.
    pub fn open(ctx: PinContext, addr: SocketAddr, proto: u8) -> Self {
        let (jobs, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(ctx, addr, proto, rx));
        Self { jobs, addr }
    }

    /// The node the connection goes to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Queues a job; its reply arrives on the job's channel.
    pub fn send(&self, job: Job) {
        if let Err(mpsc::error::SendError(job)) = self.jobs.send(job) {
            answer(
                &job.reply,
                error_frame("ERR slotway: pinned connection ended"),
            );
        }
    }
}

/// The task's connection state.
struct Pin {
    ctx: PinContext,
    addr: SocketAddr,
    proto: u8,
    conn: Option<DedicatedConn>,
    /// Why the connection is unusable; later jobs get this error.
    broken: Option<String>,
    /// A WATCH is in force on the connection.
    watching: bool,
    /// The budget a new connection is counted against: the current job's kind.
    budget: Budget,
}

impl JobKind {
    /// The dedicated-connection budget this kind of job draws on: only commands that may
    /// block indefinitely use the blocking budget, so they cannot starve transactions.
    fn budget(&self) -> Budget {
        match self {
            JobKind::Blocking { .. } => Budget::Blocking,
            JobKind::Watch | JobKind::Exec { .. } | JobKind::Script { .. } => Budget::Transaction,
        }
    }
}

async fn run(ctx: PinContext, addr: SocketAddr, proto: u8, mut jobs: mpsc::UnboundedReceiver<Job>) {
    let mut pin = Pin {
        ctx,
        addr,
        proto,
        conn: None,
        broken: None,
        watching: false,
        budget: Budget::Transaction,
    };
    while let Some(job) = jobs.recv().await {
        let reply = job.reply.clone();
        let frame = tokio::select! {
            frame = pin.run_job(job) => frame,
            // The client went away: drop the connection (closing it) without waiting.
            _ = reply.tx.closed() => return,
        };
        answer(&reply, frame);
    }
    pin.finish().await;
}

impl Pin {
    async fn run_job(&mut self, job: Job) -> Bytes {
        if let Some(why) = &self.broken {
            return error_frame(&format!("ERR slotway: {why}"));
        }
        self.budget = job.kind.budget();
        match job.kind {
            JobKind::Watch => self.watch(&job.raw).await,
            JobKind::Exec { queued, durable } => {
                self.exec(&job.raw, queued, durable.as_ref()).await
            }
            JobKind::Blocking { limit, durable } => {
                self.blocking(job.raw, limit, None, durable.as_ref(), false)
                    .await
            }
            JobKind::Script {
                limit,
                reload,
                durable,
            } => {
                self.blocking(job.raw, limit, reload, durable.as_ref(), true)
                    .await
            }
        }
    }

    /// The connection, made on first use; connect failures are retried while the topology
    /// may be changing.
    async fn conn(&mut self) -> Result<&mut DedicatedConn, String> {
        if self.conn.is_none() {
            let deadline = Instant::now() + self.ctx.retry_deadline;
            let conn = loop {
                match self
                    .ctx
                    .pool
                    .checkout(self.addr, self.proto, self.budget)
                    .await
                {
                    Ok(c) => break c,
                    Err(e @ DedicatedError::Exhausted { .. }) => return Err(e.to_string()),
                    Err(e) if Instant::now() >= deadline => return Err(e.to_string()),
                    Err(_) => {
                        self.ctx.router.request_refresh();
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            };
            self.conn = Some(conn);
        }
        self.conn
            .as_mut()
            .ok_or_else(|| "no connection".to_string())
    }

    /// Marks the connection unusable after `err` and returns the client's error reply.
    fn fail(&mut self, what: &str, err: DedicatedError) -> Bytes {
        self.conn = None;
        let why = format!("{what}: {err}");
        self.broken = Some(why.clone());
        error_frame(&format!("ERR slotway: {why}"))
    }

    async fn watch(&mut self, raw: &[u8]) -> Bytes {
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

    async fn exec(&mut self, raw: &[u8], queued: usize, durable: Option<&DurableWait>) -> Bytes {
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

    /// Runs one blocking command or (`script`) one script, following only what Redis itself
    /// answered before running it (see [`trust`]): a script goes as MULTI/EXEC, so what it
    /// returns is the client's reply and never a redirect; a redirect is followed only to a
    /// member of the topology.
    async fn blocking(
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
            let probe = reload.as_deref().map(super::sha1::hex);
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

    /// A cluster routing error (MOVED, ASK, TRYAGAIN, CLUSTERDOWN …) inside a pinned
    /// exchange cannot be retried transparently: it becomes a clear error.
    fn routing_error(&self, what: &str, frame: &[u8]) -> Option<Bytes> {
        let err = classify_error(frame);
        match err {
            ServerError::Moved { slot, addr } => {
                let to = addr.parse::<crate::net::NodeAddr>().ok();
                if let Some(to) = to.and_then(|a| a.socket_addr()) {
                    self.ctx.router.note_moved(slot, to);
                }
            }
            ServerError::Ask { .. } | ServerError::TryAgain => {}
            ServerError::ClusterDown
            | ServerError::Loading
            | ServerError::MasterDown
            | ServerError::ReadOnly => self.ctx.router.request_refresh(),
            _ => return None,
        }
        Some(moving_error(what, frame))
    }

    /// Leaves the connection clean for the pool, or closes it.
    async fn finish(mut self) {
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        if self.watching {
            let mut cmd = BytesMut::new();
            encode::command(&mut cmd, &[b"UNWATCH"]);
            let limit = Some(conn.reply_timeout());
            if conn.write(&cmd).await.is_err() {
                return;
            }
            match conn.read_frame_within(limit).await {
                Ok((_, ReplyKind::Other)) => {}
                _ => return,
            }
        }
        conn.release();
    }
}

/// Durable-write mode: `WAIT` on the connection that ran the write, and the client's reply
/// as the shared connections would give it (an error when too few replicas confirmed).
async fn confirm(conn: &mut DedicatedConn, wait: &DurableWait, frame: Bytes) -> Bytes {
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
async fn read_frames(
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

fn answer(reply: &ReplyTo, frame: Bytes) {
    let kind = if frame.first() == Some(&b'-') {
        ReplyKind::Error
    } else {
        ReplyKind::Other
    };
    let _ = reply.tx.send(Completion {
        tag: reply.tag,
        raw: Bytes::new(),
        outcome: Outcome::Reply(frame, kind),
    });
}

fn error_frame(msg: &str) -> Bytes {
    let mut out = BytesMut::with_capacity(msg.len() + 3);
    encode::error(&mut out, msg);
    out.freeze()
}

/// How long the proxy waits for a blocking command's reply: the command's own timeout plus
/// `margin`, or forever for a timeout of 0. `args` are the request's arguments as bytes.
pub fn blocking_limit(name: &str, args: &[&[u8]], margin: Duration) -> Option<Duration> {
    let parse = |raw: &[u8]| -> Option<f64> { std::str::from_utf8(raw).ok()?.trim().parse().ok() };
    let (value, unit_ms) = match name {
        "blmpop" | "bzmpop" => (args.get(1).and_then(|a| parse(a)), false),
        "xread" | "xreadgroup" => {
            let at = args.iter().position(|a| a.eq_ignore_ascii_case(b"block"))?;
            (args.get(at + 1).and_then(|a| parse(a)), true)
        }
        _ => (args.last().and_then(|a| parse(a)), false),
    };
    // An unparsable timeout is refused by Redis at once; the margin alone covers that.
    let secs = match value {
        Some(v) if v.is_finite() && v > 0.0 => {
            if unit_ms {
                v / 1000.0
            } else {
                v
            }
        }
        Some(0.0) => return None,
        _ => 0.0,
    };
    Some(Duration::from_secs_f64(secs.min(1e9)) + margin)
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

    fn limit(name: &str, args: &[&str]) -> Option<Duration> {
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        blocking_limit(name, &args, Duration::from_secs(1))
    }

    #[test]
    fn timeouts_come_from_the_right_argument() {
        assert_eq!(
            limit("blpop", &["BLPOP", "a", "b", "2.5"]),
            Some(Duration::from_millis(3500))
        );
        assert_eq!(limit("blpop", &["BLPOP", "a", "0"]), None);
        assert_eq!(
            limit("blmpop", &["BLMPOP", "3", "1", "a", "LEFT"]),
            Some(Duration::from_secs(4))
        );
        assert_eq!(
            limit(
                "xread",
                &["XREAD", "COUNT", "1", "BLOCK", "500", "STREAMS", "s", "$"]
            ),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            limit("xread", &["XREAD", "BLOCK", "0", "STREAMS", "s", "$"]),
            None
        );
        assert_eq!(
            limit("blmove", &["BLMOVE", "a", "b", "LEFT", "RIGHT", "nope"]),
            Some(Duration::from_secs(1))
        );
    }
}
