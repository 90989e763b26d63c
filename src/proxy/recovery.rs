//! Recovery as a pure decision: what the proxy remembers about a forwarded request (or one
//! part of a split request) in [`Waiting`], and [`decide`], the one function from what
//! became of it to what happens next. The session and the fan-out only apply the [`Action`];
//! nothing here sends, spawns, counts metrics or reads a clock of its own, so every rule is
//! unit-tested case by case (`recovery_tests.rs`).
//!
//! The rules, in the order [`decide`] applies them:
//! - a reply that is not an error is the client's, and so is everything a script returned
//!   ([`trust::unwrap`]): only an error Redis produced before running the request may steer;
//! - that error goes through the error table (`protocol::RetryAction`) and the trust gate
//!   ([`trust::judge`]): only a topology member's redirect for the request's own slot is
//!   followed, one naming an unknown node is confirmed by a refresh first, never twice;
//! - redirects (and script reloads, and confirmations) spend one budget, `max_redirects`;
//!   retries after a transient error or a lost connection stop at one deadline;
//! - a lost connection re-sends only what certainly was not written, or a read: a write that
//!   may have run is an error for the client, never a silent re-send.
//!
//! [`exec_reply`] is the same kind of decision for a `MULTI … EXEC` sent on a shared
//! connection, which is judged but never redirected or re-sent.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::time::Instant;

use super::trust::{self, Gate, Verdict, Wrap};
use crate::backend::{BackendError, Outcome};
use crate::cluster::topology::Topology;
use crate::metrics::RetryReason;
use crate::protocol::{classify_error, encode, ReplyKind, ResponseScanner, ServerError};

/// What a session remembers about a forwarded request, for redirects and retries.
pub(crate) struct Waiting {
    /// The slot of its keys (None: any primary).
    pub(crate) slot: Option<u16>,
    /// Safe to re-send after a lost connection.
    pub(crate) readonly: bool,
    /// MOVED/ASK redirects followed so far.
    pub(crate) redirects: u32,
    /// Re-sends after transient errors or failures so far.
    pub(crate) attempts: u32,
    /// A write in durable mode: sent with `WAIT`.
    pub(crate) durable: bool,
    /// When retrying stops; set at the first retry.
    pub(crate) deadline: Option<Instant>,
    /// A script sent wrapped in MULTI/EXEC, so its own error replies stay data.
    pub(crate) wrap: Option<Wrap>,
    /// The next completion is a redirect handed back after a refresh, to judge once more.
    pub(crate) confirming: bool,
}

impl Waiting {
    /// A request not yet retried.
    pub(crate) fn new(slot: Option<u16>, readonly: bool) -> Self {
        Self {
            slot,
            readonly,
            redirects: 0,
            attempts: 0,
            durable: false,
            deadline: None,
            wrap: None,
            confirming: false,
        }
    }

    /// Replies the request is owed by the node (more than 1 for a wrapped script).
    pub(crate) fn replies(&self) -> u32 {
        self.wrap.map_or(1, Wrap::replies)
    }

    /// Records that `action` is being carried out, so the next decision sees its budget spent
    /// (`now`: read only when a first retry starts the deadline).
    pub(crate) fn record(
        &mut self,
        action: &Action,
        limits: &Limits,
        now: impl FnOnce() -> Instant,
    ) {
        self.confirming = matches!(action, Action::Confirm { .. });
        match action {
            Action::Redirect { .. } | Action::Confirm { .. } | Action::Reload(_) => {
                self.redirects += 1;
            }
            Action::Reroute { .. } => {
                if self.deadline.is_none() {
                    self.deadline = Some(now() + limits.retry_deadline);
                }
                self.attempts += 1;
            }
            Action::Reply(_) | Action::Fail(_) => {}
        }
    }
}

/// The bounds of recovery, from `cluster.max_redirects` and `cluster.retry_deadline_ms`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Redirects (and reloads, confirmations) one request may follow.
    pub(crate) max_redirects: u32,
    /// How long after its first retry a request may still be retried.
    pub(crate) retry_deadline: Duration,
}

/// What to do next with a forwarded request.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Action {
    /// The request is answered: this frame goes to the client.
    Reply(Bytes),
    /// Follow a `MOVED` (`moved`: its slot, to fix in the map) or an `ASK` (`moved` None:
    /// sent with `ASKING`) to this member at once.
    Redirect {
        /// The member's resolved address.
        to: SocketAddr,
        /// The slot a `MOVED` reported.
        moved: Option<u16>,
    },
    /// The redirect names a node the topology does not know: refresh (waiting at most
    /// `wait`), then decide once more on `frame` against the new topology.
    Confirm {
        /// The redirect, handed back after the refresh.
        frame: Bytes,
        /// How long to wait for the refresh.
        wait: Duration,
    },
    /// Send again to the slot's owner after a backoff (the retry-after of a transient state).
    Reroute {
        /// Refresh the topology first.
        refresh: bool,
        /// Why, for the retry counter.
        reason: RetryReason,
        /// The node that failed the request: wait for the map to name another, up to the backoff.
        avoid: Option<SocketAddr>,
    },
    /// `NOSCRIPT` to a probed `EVALSHA`: load the script, then send again; if slotway does not
    /// know the body after all, this frame is the reply.
    Reload(Bytes),
    /// The request cannot be answered: this error (without the leading `-`) goes to the client.
    Fail(String),
}

/// Decides what `outcome` means for the request `w`. `topology` and `now` are asked for only
/// when an error reply or a failure needs them, so a plain reply costs no snapshot load and
/// no clock read.
pub(crate) fn decide<T>(
    w: &Waiting,
    outcome: Outcome,
    limits: &Limits,
    topology: impl FnOnce() -> Option<T>,
    now: impl FnOnce() -> Instant,
) -> Action
where
    T: std::ops::Deref<Target = Topology>,
{
    let frame = match outcome {
        Outcome::Failed(err) => return after_failure(w, &err, limits, now),
        // A redirect handed back after a refresh: the error the gate already saw once.
        Outcome::Reply(frame, _) if w.confirming => frame,
        Outcome::Reply(run, kind) => match (w.wrap, kind) {
            (Some(wrap), _) => match trust::unwrap(&run, wrap) {
                Verdict::NotRun(err) => err,
                Verdict::Ran(reply) => return Action::Reply(reply),
            },
            (None, ReplyKind::Error) => run,
            (None, _) => return Action::Reply(run),
        },
    };
    after_error(w, frame, limits, topology, now)
}

/// An error reply Redis produced before running the request (or any error of an unwrapped
/// request): the trust gate says whether it may steer, the budgets whether it still can.
fn after_error<T>(
    w: &Waiting,
    frame: Bytes,
    limits: &Limits,
    topology: impl FnOnce() -> Option<T>,
    now: impl FnOnce() -> Instant,
) -> Action
where
    T: std::ops::Deref<Target = Topology>,
{
    let err = classify_error(&frame);
    let (gate, reason) = {
        let topology = topology();
        (
            trust::judge(&err, w.slot, topology.as_deref(), w.confirming),
            retry_reason(&err),
        )
    };
    let hop_left = w.redirects < limits.max_redirects;
    match gate {
        Gate::Data => Action::Reply(frame),
        // A stream of redirects to unknown nodes counts as hops too: it cannot loop.
        Gate::Redirect { .. } | Gate::Confirm if !hop_left => {
            Action::Fail(trust::too_many_redirects(w.slot))
        }
        Gate::Redirect { to, moved } => Action::Redirect { to, moved },
        Gate::Confirm => Action::Confirm {
            frame,
            wait: limits.retry_deadline,
        },
        Gate::Retry { refresh } if retry_left(w, limits, now) => Action::Reroute {
            refresh,
            reason,
            avoid: None,
        },
        Gate::Retry { .. } => Action::Reply(frame),
        // Only a probed script's NOSCRIPT is Redis's own (`trust::unwrap` proved it did not
        // run); a script that will not load spends the redirect budget, so it cannot loop.
        Gate::Reload if w.wrap.is_some_and(|w| w.probe) && hop_left => Action::Reload(frame),
        Gate::Reload => Action::Reply(frame),
    }
}

/// The node did not answer: re-send what certainly was not written, and any read, within the
/// deadline; a write that may have run gets an error naming the doubt.
fn after_failure(
    w: &Waiting,
    err: &BackendError,
    limits: &Limits,
    now: impl FnOnce() -> Instant,
) -> Action {
    if (err.retry_safe() || w.readonly) && retry_left(w, limits, now) {
        return Action::Reroute {
            refresh: true,
            reason: RetryReason::Connection,
            avoid: super::retry::failed_node(err),
        };
    }
    Action::Fail(failure_message(err))
}

/// True while the retry deadline (counted from the first retry) has not passed.
fn retry_left(w: &Waiting, limits: &Limits, now: impl FnOnce() -> Instant) -> bool {
    let now = now();
    now < w.deadline.unwrap_or(now + limits.retry_deadline)
}

/// The client-facing text for a request the backend could not answer.
pub(crate) fn failure_message(err: &BackendError) -> String {
    match err {
        BackendError::Lost(_) => format!("ERR slotway: {err}"),
        _ => format!("CLUSTERDOWN slotway: {err}"),
    }
}

/// A proxy-made error reply (`msg` without the leading `-`).
pub(crate) fn error_frame(msg: &str) -> Bytes {
    let mut out = BytesMut::with_capacity(msg.len() + 3);
    encode::error(&mut out, msg);
    out.freeze()
}

/// The `reason` label of a retry after an error reply.
fn retry_reason(e: &ServerError<'_>) -> RetryReason {
    match e {
        ServerError::TryAgain => RetryReason::TryAgain,
        ServerError::Loading => RetryReason::Loading,
        ServerError::MasterDown => RetryReason::MasterDown,
        ServerError::ReadOnly => RetryReason::ReadOnly,
        _ => RetryReason::ClusterDown,
    }
}

/// The client's reply to a `MULTI … EXEC` sent on a shared connection, from the run of
/// `replies` frames (MULTI's, one per queued command, EXEC's) or the failure. A routing
/// error while queuing or for EXEC (the slot moved, the node is failing over) means Redis
/// ran nothing:
/// it becomes a clear error, and true says the topology should be refreshed; the request is
/// never re-sent.
pub(crate) fn exec_reply(outcome: Outcome, replies: u32) -> (Bytes, bool) {
    let run = match outcome {
        Outcome::Reply(run, _) => run,
        Outcome::Failed(err) => {
            let what = if err.retry_safe() {
                "transaction not run (nothing was executed)"
            } else {
                "connection lost during EXEC; the transaction may or may not have been applied"
            };
            return (error_frame(&format!("ERR slotway: {what}: {err}")), false);
        }
    };
    let mut scanner = ResponseScanner::new(crate::backend::MAX_REPLY_DEPTH);
    let mut frames = Vec::with_capacity(2);
    let mut at = 0;
    while let Ok(Some(r)) = scanner.scan(&run[at..]) {
        frames.push((at..at + r.len, r.kind));
        at += r.len;
    }
    // Durable mode puts one error in place of a run it could not confirm.
    if frames.len() != replies as usize {
        return (run, false);
    }
    // EXEC's own top-level error counts too: a slot moved since queuing makes the node
    // discard the transaction (errors of the commands are inside EXEC's array).
    for (range, kind) in &frames {
        if *kind != ReplyKind::Error {
            continue;
        }
        let frame = &run[range.clone()];
        if classify_error(frame).is_cluster_change() {
            let what = "transaction aborted (nothing was executed)";
            return (crate::proxy::pinned::moving_error(what, frame), true);
        }
    }
    match frames.last() {
        Some((range, _)) => (run.slice(range.clone()), false),
        None => (run, false),
    }
}

#[cfg(test)]
#[path = "recovery_tests.rs"]
mod tests;
