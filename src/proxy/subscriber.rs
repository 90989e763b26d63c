//! A subscribing client's backend side: the dedicated connections that carry its
//! subscriptions, kept in step with what the client asked for, and the messages they bring.
//!
//! Design choice (issue 4, point 5): one set of dedicated connections per subscribing client
//! rather than one shared, fanned-out subscriber connection. Redis Cluster forwards every
//! `PUBLISH` to every node, so a client's channels and patterns all live on one connection to
//! any primary (spread over primaries by rotation); shard channels live on a connection to the
//! primary owning each channel's slot. Per-client connections keep Redis's own semantics
//! exactly (subscription counts, ordering, pattern matching, per-client output limits on the
//! node) and isolate a slow subscriber from the others, at the cost of one backend connection
//! per subscriber per node used — bounded by `backend.max_dedicated_per_node`.
//!
//! Subscription connections have their own per-node budget (`backend.max_subscriber_per_node`),
//! so clients parked in blocking commands cannot use them up.
//!
//! The session writes the subscribe/unsubscribe confirmations itself (it knows the counts a
//! single Redis would report), but a subscribe's confirmation is released only once the node
//! has confirmed it on a real connection; if that cannot happen the client gets an error and
//! the names are forgotten (see `confirm`). This task mirrors the wanted state onto the nodes
//! and restores it after a connection loss, a failover or a slot move, and streams `message`,
//! `pmessage` and `smessage` frames to the session. Messages published while a connection is being
//! re-established are lost, as Pub/Sub is at-most-once in Redis too.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;

mod confirm;
mod link;

use confirm::{global_candidates, not_in_place};
pub use confirm::{Confirm, REFUSED_TAG};
use link::{frame_verb, is_message, link, unsolicited_sunsubscribe, Event, Link};

use super::router::Router;
use crate::backend::{Budget, Completion, DedicatedPool, Outcome, ReplyTo, Tag};
use crate::cluster::slot::key_slot;
use crate::protocol::ReplyKind;

/// The tag of a message pushed to the session (not the reply to any request).
pub const PUSH_TAG: Tag = Tag {
    seq: u64::MAX,
    part: 0,
};
/// The tag telling the session that its client fell too far behind and must be disconnected.
pub const OVERFLOW_TAG: Tag = Tag {
    seq: u64::MAX,
    part: 1,
};

/// First wait before re-establishing a lost subscription.
const REPAIR_MIN: Duration = Duration::from_millis(100);
/// Longest wait between two attempts.
const REPAIR_MAX: Duration = Duration::from_secs(2);

/// Which kind of subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `SUBSCRIBE` channels.
    Channel,
    /// `PSUBSCRIBE` patterns.
    Pattern,
    /// `SSUBSCRIBE` shard channels.
    Shard,
}

enum Op {
    Add(Kind, Vec<Bytes>, Option<Confirm>),
    Remove(Kind, Vec<Bytes>),
}

/// Message bytes read from the nodes but not yet written to the client, and the limit on them.
#[derive(Debug)]
pub struct Backlog {
    bytes: AtomicUsize,
    limit: usize,
    tripped: AtomicBool,
    notify: Notify,
}

impl Backlog {
    /// Resolves once the limit has been exceeded.
    pub async fn overflowed(&self) {
        loop {
            let wait = self.notify.notified();
            tokio::pin!(wait);
            wait.as_mut().enable();
            if self.tripped.load(Ordering::Acquire) {
                return;
            }
            wait.await;
        }
    }

    /// The session wrote `n` message bytes to its client.
    pub fn ack(&self, n: usize) {
        let _ = self
            .bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |b| {
                Some(b.saturating_sub(n))
            });
    }

    /// Counts `n` more bytes; false once over the limit.
    fn add(&self, n: usize) -> bool {
        let now = self.bytes.fetch_add(n, Ordering::AcqRel) + n;
        if now > self.limit {
            self.tripped.store(true, Ordering::Release);
            self.notify.notify_waiters();
            return false;
        }
        true
    }
}

/// The session's handle; dropping it closes every subscription connection.
#[derive(Debug)]
pub struct Subscriber {
    ops: mpsc::UnboundedSender<Op>,
    backlog: Arc<Backlog>,
}

impl Subscriber {
    /// Starts the task; messages go to `reply` (tagged [`PUSH_TAG`]) until `limit` bytes are
    /// waiting for the client.
    pub fn spawn(
        router: Arc<Router>,
        pool: Arc<DedicatedPool>,
        reply: ReplyTo,
        limit: usize,
    ) -> Self {
        let (ops, rx) = mpsc::unbounded_channel();
        let backlog = Arc::new(Backlog {
            bytes: AtomicUsize::new(0),
            limit,
            tripped: AtomicBool::new(false),
            notify: Notify::new(),
        });
        let (events_tx, events) = mpsc::unbounded_channel();
        let task = Task {
            router,
            pool,
            reply,
            backlog: backlog.clone(),
            channels: BTreeSet::new(),
            patterns: BTreeSet::new(),
            shard: BTreeMap::new(),
            global: None,
            links: HashMap::new(),
            events_tx,
            next_id: 0,
            repair_at: None,
            repair_wait: REPAIR_MIN,
        };
        tokio::spawn(task.run(rx, events));
        Self { ops, backlog }
    }

    /// Subscribes to more channels/patterns/shard channels; `confirm` (where the client's
    /// confirmation goes, and the frame) is delivered once the node has confirmed them. If
    /// it cannot be, the client gets an error there instead and the session a [`REFUSED_TAG`]
    /// notice naming them.
    pub fn add(&self, kind: Kind, names: Vec<Bytes>, confirm: Option<(ReplyTo, Bytes)>) {
        let confirm = confirm.map(|(reply, frame)| Confirm::new(reply, frame, kind, names.clone()));
        if let Err(mpsc::error::SendError(Op::Add(_, _, Some(c)))) =
            self.ops.send(Op::Add(kind, names, confirm))
        {
            c.refuse(&not_in_place(kind, "the subscriber task has ended"));
        }
    }

    /// Unsubscribes.
    pub fn remove(&self, kind: Kind, names: Vec<Bytes>) {
        let _ = self.ops.send(Op::Remove(kind, names));
    }

    /// The message backlog shared with the task.
    pub fn backlog(&self) -> &Arc<Backlog> {
        &self.backlog
    }
}
struct Task {
    router: Arc<Router>,
    pool: Arc<DedicatedPool>,
    reply: ReplyTo,
    backlog: Arc<Backlog>,
    channels: BTreeSet<Bytes>,
    patterns: BTreeSet<Bytes>,
    /// Shard channel → the node it is subscribed on (None: to be placed).
    shard: BTreeMap<Bytes, Option<SocketAddr>>,
    /// The connection carrying channels and patterns.
    global: Option<Link>,
    /// Shard-channel connections by node.
    links: HashMap<SocketAddr, Link>,
    events_tx: mpsc::UnboundedSender<(u64, Event)>,
    next_id: u64,
    repair_at: Option<Instant>,
    repair_wait: Duration,
}

impl Task {
    async fn run(
        mut self,
        mut ops: mpsc::UnboundedReceiver<Op>,
        mut events: mpsc::UnboundedReceiver<(u64, Event)>,
    ) {
        let mut topology = self.router.topology().map(|h| h.subscribe());
        loop {
            let repair_at = self.repair_at;
            let overdue_at = self.next_overdue();
            tokio::select! {
                op = ops.recv() => match op {
                    Some(op) => self.apply(op).await,
                    None => return,
                },
                Some((id, ev)) = events.recv() => {
                    if !self.on_event(id, ev) {
                        return;
                    }
                }
                _ = self.reply.tx.closed() => return,
                changed = changed(&mut topology) => {
                    if changed {
                        self.repair().await;
                    } else {
                        topology = None;
                    }
                }
                _ = sleep_until(repair_at), if repair_at.is_some() => self.repair().await,
                _ = sleep_until(overdue_at), if overdue_at.is_some() => self.expire_overdue(),
            }
        }
    }

    async fn apply(&mut self, op: Op) {
        match op {
            Op::Add(Kind::Channel, names, confirm) => {
                self.channels.extend(names.iter().cloned());
                self.send_global(b"SUBSCRIBE", &names, confirm).await;
            }
            Op::Add(Kind::Pattern, names, confirm) => {
                self.patterns.extend(names.iter().cloned());
                self.send_global(b"PSUBSCRIBE", &names, confirm).await;
            }
            Op::Add(Kind::Shard, names, confirm) => {
                for n in names {
                    self.shard.entry(n).or_insert(None);
                }
                self.place_shards(confirm).await;
            }
            Op::Remove(Kind::Channel, names) => {
                for n in &names {
                    self.channels.remove(n);
                }
                self.send_global(b"UNSUBSCRIBE", &names, None).await;
            }
            Op::Remove(Kind::Pattern, names) => {
                for n in &names {
                    self.patterns.remove(n);
                }
                self.send_global(b"PUNSUBSCRIBE", &names, None).await;
            }
            Op::Remove(Kind::Shard, names) => {
                for n in names {
                    if let Some(Some(addr)) = self.shard.remove(&n) {
                        if let Some(link) = self.links.get_mut(&addr) {
                            link.send(b"SUNSUBSCRIBE", &[n], None);
                        }
                    }
                }
            }
        }
    }

    /// Sends a channel/pattern command on the global connection, opening it (and replaying
    /// every subscription) when there is none.
    async fn send_global(
        &mut self,
        verb: &'static [u8],
        names: &[Bytes],
        confirm: Option<Confirm>,
    ) {
        match &mut self.global {
            Some(link) => link.send(verb, names, confirm),
            None => self.open_global(confirm).await,
        }
    }

    async fn open_global(&mut self, confirm: Option<Confirm>) {
        if self.channels.is_empty() && self.patterns.is_empty() {
            if let Some(c) = confirm {
                c.deliver();
            }
            return;
        }
        let candidates = global_candidates(&self.router);
        let mut why = "slotway has no cluster topology yet".to_string();
        let mut link = None;
        for addr in candidates {
            match self.open_link(addr).await {
                Ok(l) => {
                    link = Some(l);
                    break;
                }
                Err(e) => why = e,
            }
        }
        let Some(mut link) = link else {
            if let Some(c) = confirm {
                let kind = c.kind();
                self.refuse(c, &not_in_place(kind, &why));
            }
            return self.schedule_repair();
        };
        let chans: Vec<Bytes> = self.channels.iter().cloned().collect();
        let pats: Vec<Bytes> = self.patterns.iter().cloned().collect();
        if pats.is_empty() {
            link.send(b"SUBSCRIBE", &chans, confirm);
        } else {
            link.send(b"SUBSCRIBE", &chans, None);
            link.send(b"PSUBSCRIBE", &pats, confirm);
        }
        self.global = Some(link);
    }

    /// A new subscription connection to `addr`, or why there is none.
    async fn open_link(&mut self, addr: SocketAddr) -> Result<Link, String> {
        let conn = match self.pool.checkout(addr, 2, Budget::Subscriber).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(node = %addr, error = %e, "cannot open a subscription connection");
                if !matches!(e, crate::backend::DedicatedError::Exhausted { .. }) {
                    self.router.request_refresh();
                }
                return Err(e.to_string());
            }
        };
        let id = self.next_id;
        self.next_id += 1;
        let (cmds, rx) = mpsc::unbounded_channel();
        tokio::spawn(link(
            conn,
            id,
            rx,
            self.events_tx.clone(),
            self.backlog.clone(),
        ));
        Ok(Link {
            id,
            addr,
            cmds,
            owed: VecDeque::new(),
        })
    }

    /// Subscribes every unplaced (or misplaced) shard channel on its slot's current owner;
    /// `confirm` goes with the last SSUBSCRIBE of its names (a client's SSUBSCRIBE names one slot).
    async fn place_shards(&mut self, mut confirm: Option<Confirm>) {
        let owners: Vec<(Bytes, Option<SocketAddr>, Option<SocketAddr>)> = {
            let table = self.router.table();
            self.shard
                .iter()
                .map(|(ch, at)| {
                    let owner = table
                        .as_ref()
                        .and_then(|t| t.primary_for_slot(key_slot(ch)).map(|p| p.addr()));
                    (ch.clone(), *at, owner)
                })
                .collect()
        };
        let mut missing = false;
        let mut why = "the hash slot is not served".to_string();
        for (ch, at, owner) in owners {
            let Some(owner) = owner else {
                missing = true;
                continue;
            };
            if at == Some(owner) && self.links.contains_key(&owner) {
                continue;
            }
            if let Some(old) = at.and_then(|a| self.links.get_mut(&a)) {
                old.send(b"SUNSUBSCRIBE", std::slice::from_ref(&ch), None);
            }
            if !self.links.contains_key(&owner) {
                match self.open_link(owner).await {
                    Ok(l) => {
                        self.links.insert(owner, l);
                    }
                    Err(e) => {
                        missing = true;
                        why = e;
                        self.shard.insert(ch, None);
                        continue;
                    }
                }
            }
            if let Some(l) = self.links.get_mut(&owner) {
                // Channels are placed in order, so the confirmation rides on the SSUBSCRIBE of
                // its greatest name: the node has confirmed them all once that one is.
                let last = confirm
                    .as_ref()
                    .is_some_and(|c| c.names().iter().max() == Some(&ch));
                let c = if last { confirm.take() } else { None };
                l.send(b"SSUBSCRIBE", std::slice::from_ref(&ch), c);
            }
            self.shard.insert(ch, Some(owner));
        }
        if let Some(c) = confirm {
            // Not sent with any SSUBSCRIBE: confirmed only if every name is already in place.
            let placed = c
                .names()
                .iter()
                .all(|n| matches!(self.shard.get(n), Some(Some(_))));
            if placed {
                c.deliver();
            } else {
                self.refuse(c, &not_in_place(Kind::Shard, &why));
            }
        }
        // Shard connections left without channels are closed.
        let used: BTreeSet<SocketAddr> = self.shard.values().flatten().copied().collect();
        self.links.retain(|addr, _| used.contains(addr));
        if missing {
            self.schedule_repair();
        }
    }

    /// Handles a frame or the end of a link; false when the session must be cut off.
    fn on_event(&mut self, id: u64, ev: Event) -> bool {
        match ev {
            Event::Frame(frame) => {
                if is_message(&frame) {
                    return self.deliver(frame);
                }
                if frame.first() == Some(&b'-') {
                    return self.on_error(id, &frame);
                }
                if let Some(verb) = frame_verb(&frame) {
                    if self.link_mut(id).is_some_and(|l| l.confirmed(verb)) {
                        return true;
                    }
                }
                if let Some(ch) = unsolicited_sunsubscribe(&frame) {
                    // Redis drops shard subscriptions of a slot it no longer owns: resubscribe
                    // where the slot went, once the topology shows it.
                    if let Some(at) = self.shard.get_mut(&ch) {
                        if at.is_some_and(|a| self.links.get(&a).is_some_and(|l| l.id == id)) {
                            *at = None;
                            self.router.request_refresh();
                            self.schedule_repair();
                        }
                    }
                }
                true
            }
            Event::Overflow => {
                let _ = self.reply.tx.send(Completion {
                    tag: OVERFLOW_TAG,
                    raw: Bytes::new(),
                    outcome: Outcome::Reply(Bytes::new(), ReplyKind::Push),
                });
                false
            }
            Event::Closed => {
                self.lost(id, "the connection to the node was lost");
                true
            }
        }
    }

    /// Link `id` is gone (or given up on): what it still owed is refused, its subscriptions
    /// are restored elsewhere once the topology says where.
    fn lost(&mut self, id: u64, why: &str) {
        let owed = self.link_mut(id).map(Link::take_owed).unwrap_or_default();
        for c in owed {
            let kind = c.kind();
            self.refuse(c, &not_in_place(kind, why));
        }
        if self.global.as_ref().is_some_and(|l| l.id == id) {
            self.global = None;
        }
        let lost: Vec<SocketAddr> = self
            .links
            .iter()
            .filter(|(_, l)| l.id == id)
            .map(|(a, _)| *a)
            .collect();
        for addr in lost {
            self.links.remove(&addr);
            for at in self.shard.values_mut() {
                if *at == Some(addr) {
                    *at = None;
                }
            }
        }
        self.router.request_refresh();
        self.schedule_repair();
    }

    fn link_mut(&mut self, id: u64) -> Option<&mut Link> {
        if let Some(g) = self.global.as_mut().filter(|l| l.id == id) {
            return Some(g);
        }
        self.links.values_mut().find(|l| l.id == id)
    }

    /// Marks every shard channel on link `id` as needing placement.
    fn unplace(&mut self, id: u64) {
        let Some(addr) = self.links.values().find(|l| l.id == id).map(|l| l.addr) else {
            return;
        };
        for at in self.shard.values_mut() {
            if *at == Some(addr) {
                *at = None;
            }
        }
        self.router.request_refresh();
        self.schedule_repair();
    }

    /// Passes a message on; the link counted it in the backlog when it read it.
    fn deliver(&mut self, frame: Bytes) -> bool {
        self.reply
            .tx
            .send(Completion {
                tag: PUSH_TAG,
                raw: Bytes::new(),
                outcome: Outcome::Reply(frame, ReplyKind::Push),
            })
            .is_ok()
    }

    fn schedule_repair(&mut self) {
        if self.repair_at.is_none() {
            self.repair_at = Some(Instant::now() + self.repair_wait);
            self.repair_wait = (self.repair_wait * 2).min(REPAIR_MAX);
        }
    }

    /// Re-establishes whatever is missing: the global connection, unplaced shard channels.
    async fn repair(&mut self) {
        self.repair_at = None;
        if self.global.is_none() {
            self.open_global(None).await;
        }
        self.place_shards(None).await;
        if self.repair_at.is_none() {
            self.repair_wait = REPAIR_MIN;
        }
    }
}

/// Waits for a topology change; false when the watch has ended (or there is none).
async fn changed(rx: &mut Option<tokio::sync::watch::Receiver<u64>>) -> bool {
    match rx {
        Some(rx) => rx.changed().await.is_ok(),
        None => std::future::pending().await,
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backlog_trips_past_the_limit() {
        let b = Backlog {
            bytes: AtomicUsize::new(0),
            limit: 10,
            tripped: AtomicBool::new(false),
            notify: Notify::new(),
        };
        assert!(b.add(6));
        b.ack(6);
        assert!(b.add(10));
        assert!(!b.add(1));
        assert!(b.tripped.load(Ordering::Acquire));
    }
}
