//! A session's pinned backend connection: a small task owning one dedicated connection and
//! running the jobs the session gives it in order — a `WATCH`, a whole `MULTI … EXEC`, or one
//! blocking command — and reporting each reply on the session's completion channel.
//!
//! When the session drops its handle the task finishes the jobs already given, makes the
//! connection clean (`UNWATCH` after a `WATCH` that no `EXEC` consumed) and hands it back to
//! the pool; a connection in an unknown state is closed instead. When the session itself goes
//! away (client disconnected) a blocked job is abandoned at once and its connection closed,
//! which is what makes Redis unblock and forget that client.
//!
//! `task.rs` owns the connection's life (made on first use, broken after a failure, made
//! clean or closed at the end); `transaction.rs` runs WATCH and MULTI … EXEC; `blocking.rs`
//! runs blocking commands and RESP3 scripts with their redirects; `wire.rs` reads replies and
//! confirms durable writes; `limit.rs` says how long a blocking command may take.

mod blocking;
mod limit;
mod task;
mod transaction;
mod wire;

pub use limit::blocking_limit;
pub(crate) use wire::moving_error;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;

use super::router::Router;
use crate::backend::{Budget, Completion, DedicatedPool, DurableWait, Outcome, ReplyTo};
use crate::protocol::{encode, ReplyKind};

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
        tokio::spawn(task::run(ctx, addr, proto, rx));
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
