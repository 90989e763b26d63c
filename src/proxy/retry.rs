//! Re-sending one request after a redirect, a transient cluster error or a lost connection.
//!
//! Each retry runs as its own small task so other clients are never held up; the reply comes
//! back on the session's completion channel under the request's original tag, so replies stay
//! in request order. A session's retries also *run* in request order: its [`RetryLane`] sends
//! one at a time, lowest sequence first, and the session sends nothing new while the lane is
//! busy. Without that, a failover that held a client's pipelined `SET k v` and `GET k` could
//! release them as two racing tasks and run the `GET` first on the promoted replica (seen in
//! the soak benchmark: `+OK` for the write, then the old value).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::router::Router;
use crate::backend::{BackendError, BackendRequest, Completion, NodePool, Outcome, ReplyTo, Tag};
use crate::protocol::ReplyKind;

/// Shortest wait before re-routing a request by its slot.
const BACKOFF_MIN: Duration = Duration::from_millis(10);
/// Longest wait between two re-routes: short, so a promoted replica is used within moments.
const BACKOFF_MAX: Duration = Duration::from_millis(100);

/// Where a retried request goes.
enum Target {
    /// Whichever node owns the slot once the wait is over (None: any primary).
    Slot(Option<u16>),
    /// The member a redirect named (already checked against the topology), with the slot a
    /// MOVED reported.
    Addr {
        addr: SocketAddr,
        moved: Option<u16>,
    },
    /// Not a send: a redirect named a node the topology does not know. Refresh (bounded by
    /// `wait`), then hand `frame` back to the session to judge against the new topology.
    Confirm { frame: Bytes, wait: Duration },
}

/// Who a retry is for: the session's router, reply channel and connection affinity.
pub struct Origin {
    /// The router to re-route with.
    pub router: Arc<Router>,
    /// Where the reply goes (the request's original tag).
    pub reply: ReplyTo,
    /// The session's connection choice within each node pool.
    pub affinity: usize,
    /// Send with the durable-write `WAIT`.
    pub durable: bool,
    /// Replies the request is owed (more than 1 for a script wrapped in MULTI/EXEC).
    pub replies: u32,
}

/// One request to send again.
pub struct Retry {
    origin: Origin,
    raw: Bytes,
    target: Target,
    asking: bool,
    delay: Duration,
    /// The node that just failed the request: while the map still names it, wait for a change.
    avoid: Option<SocketAddr>,
}

impl Retry {
    /// Re-route by slot after a backoff that grows with `attempt`; an earlier topology change
    /// cuts the wait short.
    pub fn reroute(origin: Origin, raw: Bytes, slot: Option<u16>, attempt: u32) -> Self {
        let delay = BACKOFF_MIN
            .saturating_mul(1 << attempt.saturating_sub(1).min(8))
            .min(BACKOFF_MAX);
        Self {
            origin,
            raw,
            target: Target::Slot(slot),
            asking: false,
            delay,
            avoid: None,
        }
    }

    /// Sends at once if the slot's owner is no longer `addr` (the node that failed the request),
    /// else waits for a new map up to the backoff: a promoted replica is used the moment the map
    /// names it.
    pub fn avoiding(mut self, addr: Option<SocketAddr>) -> Self {
        self.avoid = addr;
        self
    }

    /// Follow a MOVED (`moved` = its slot) or an ASK (`moved` = None, sent with `ASKING`) to
    /// the member `addr` at once.
    pub fn redirect(origin: Origin, raw: Bytes, addr: SocketAddr, moved: Option<u16>) -> Self {
        Self {
            origin,
            raw,
            asking: moved.is_none(),
            target: Target::Addr { addr, moved },
            delay: Duration::ZERO,
            avoid: None,
        }
    }
}

impl Retry {
    /// Refreshes the topology (waiting at most `wait`), then returns the redirect `frame` to
    /// the session, which judges it again: followed if the node is now a member, else data.
    pub fn confirm(origin: Origin, raw: Bytes, frame: Bytes, wait: Duration) -> Self {
        Self {
            origin,
            raw,
            target: Target::Confirm { frame, wait },
            asking: false,
            delay: Duration::ZERO,
            avoid: None,
        }
    }
}

/// Runs the retry in its own task.
pub fn spawn(retry: Retry) {
    tokio::spawn(run(retry));
}

/// One session's retries, released one at a time in request order.
///
/// The next retry is sent only once the previous one has been answered (or failed and come
/// back to the lane): a retry sent to a node that is still down fails and must not be
/// overtaken by a later request of the same client that a newer map sends to the promoted
/// replica. Retries are rare (failovers, slot moves), so going one round trip at a time costs
/// nothing in the steady state.
#[derive(Default)]
pub struct RetryLane {
    /// Waiting retries by (sequence, part).
    queued: BTreeMap<(u64, u32), Retry>,
    /// The retry sent and not yet answered.
    in_flight: Option<Tag>,
}

impl RetryLane {
    /// Queues a retry and sends the lowest queued one if none is in flight.
    pub fn push(&mut self, retry: Retry) {
        let tag = retry.origin.reply.tag;
        self.queued.insert((tag.seq, tag.part), retry);
        self.pump();
    }

    /// Notes an answer for `tag`. The next retry is not sent here but by [`Self::pump`] once
    /// the answer has been handled: if it failed again, its own retry (pushed meanwhile) is
    /// still the lowest and goes first.
    pub fn answered(&mut self, tag: Tag) {
        if self.in_flight == Some(tag) {
            self.in_flight = None;
        }
    }

    /// True while a retry is queued or in flight: the session holds its new requests back.
    pub fn is_busy(&self) -> bool {
        self.in_flight.is_some() || !self.queued.is_empty()
    }

    /// Sends the lowest queued retry unless one is in flight.
    pub fn pump(&mut self) {
        if self.in_flight.is_some() {
            return;
        }
        if let Some((_, retry)) = self.queued.pop_first() {
            self.in_flight = Some(retry.origin.reply.tag);
            spawn(retry);
        }
    }
}

async fn run(r: Retry) {
    let pool = match &r.target {
        Target::Confirm { frame, wait } => {
            if let Some(handle) = r.origin.router.topology() {
                let _ = tokio::time::timeout(*wait, handle.refresh_and_wait()).await;
            }
            let frame = frame.clone();
            let _ = r.origin.reply.tx.send(Completion {
                tag: r.origin.reply.tag,
                raw: r.raw,
                outcome: Outcome::Reply(frame, ReplyKind::Error),
            });
            return;
        }
        Target::Addr { addr, moved } => {
            if let Some(slot) = moved {
                r.origin.router.note_moved(*slot, *addr);
            }
            // None when the node left the topology since the session judged the redirect.
            r.origin.router.pool_for_addr(*addr)
        }
        Target::Slot(slot) => match r.avoid {
            Some(dead) => owner_other_than(&r.origin.router, *slot, dead, r.delay).await,
            None => {
                wait_for_topology(&r.origin.router, r.delay).await;
                owner(&r.origin.router, *slot)
            }
        },
    };
    let Some(pool) = pool else {
        return give_up(r, "no node serves the slot");
    };
    pool.send(
        BackendRequest {
            raw: r.raw,
            asking: r.asking,
            durable: r.origin.durable,
            replies: r.origin.replies,
            reply: r.origin.reply,
        },
        r.origin.affinity,
    )
    .await;
}

/// The node a backend failure names, if it names one (a redirect to nowhere carries a reason).
pub fn failed_node(err: &BackendError) -> Option<SocketAddr> {
    match err {
        BackendError::Unreachable(addr)
        | BackendError::NotSent(addr)
        | BackendError::Lost(addr) => addr.parse().ok(),
        _ => None,
    }
}

/// Reports a retry that could not be sent; the session decides whether to try again.
fn give_up(r: Retry, why: &str) {
    let _ = r.origin.reply.tx.send(Completion {
        tag: r.origin.reply.tag,
        raw: r.raw,
        outcome: Outcome::Failed(BackendError::Unreachable(why.to_string())),
    });
}

/// The pool a request for `slot` goes to now (any primary when `slot` is None).
fn owner(router: &Router, slot: Option<u16>) -> Option<Arc<NodePool>> {
    let table = router.table();
    table.as_ref().and_then(|t| match slot {
        Some(s) => t.primary_for_slot(s).cloned(),
        None => t.any_primary(router.next_rotation()).cloned(),
    })
}

/// The slot's owner as soon as it is not `dead`, or whatever owns it once `delay` has passed
/// (the node may be back, or a keyless request may pick it again by rotation).
async fn owner_other_than(
    router: &Router,
    slot: Option<u16>,
    dead: SocketAddr,
    delay: Duration,
) -> Option<Arc<NodePool>> {
    let deadline = tokio::time::Instant::now() + delay;
    let mut epochs = router.topology().map(|h| h.subscribe());
    loop {
        // Subscribed before looking, so a map published in between still wakes us.
        let pool = owner(router, slot);
        if pool.as_ref().is_some_and(|p| p.addr() != dead) {
            return pool;
        }
        let changed = match epochs.as_mut() {
            Some(rx) => tokio::time::timeout_at(deadline, rx.changed()).await,
            None => {
                tokio::time::sleep_until(deadline).await;
                return pool;
            }
        };
        match changed {
            Ok(Ok(())) => continue,
            // Timed out, or the refresher is gone: go with what there is.
            _ => return owner(router, slot),
        }
    }
}

/// Waits `delay`, or less if a new topology is published meanwhile.
async fn wait_for_topology(router: &Router, delay: Duration) {
    let Some(handle) = router.topology() else {
        tokio::time::sleep(delay).await;
        return;
    };
    let mut rx = handle.subscribe();
    let _ = tokio::time::timeout(delay, rx.changed()).await;
}
