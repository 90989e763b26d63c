//! A client's subscribe confirmation while the node has not yet confirmed it.
//!
//! The confirmation (`subscribe`, `ch`, `:1`) is a promise that a `PUBLISH` sent afterwards
//! reaches the client, so it is released only by the node's own confirmation frames on a real
//! connection. When the subscription cannot be put in place — no connection can be had, the
//! node refuses it, the connection is lost first — the client gets an error instead, and the
//! session is told (a [`REFUSED_TAG`] completion naming the channels) so that it forgets them.

use std::net::SocketAddr;

use bytes::{Bytes, BytesMut};
use tokio::time::Instant;

use super::link::{command, Link};
use super::{Kind, Task};
use crate::backend::{Completion, Outcome, ReplyTo, Tag};
use crate::protocol::{classify_error, encode, ReplyKind};
use crate::proxy::router::Router;

/// The tag of a notice to the session that a subscribe was refused; the completion's `raw`
/// is `VERB names…` (the verb says the kind) as a request.
pub const REFUSED_TAG: Tag = Tag {
    seq: u64::MAX,
    part: 2,
};

/// The client's confirmation of a subscribe, held until the node has confirmed it.
#[derive(Debug)]
pub struct Confirm {
    reply: ReplyTo,
    frame: Bytes,
    kind: Kind,
    names: Vec<Bytes>,
}

impl Confirm {
    /// The confirmation `frame` for subscribing `names` of `kind`, answered to `reply`.
    pub(super) fn new(reply: ReplyTo, frame: Bytes, kind: Kind, names: Vec<Bytes>) -> Self {
        Self {
            reply,
            frame,
            kind,
            names,
        }
    }

    /// The kind of the subscription.
    pub(super) fn kind(&self) -> Kind {
        self.kind
    }

    /// The names it subscribes.
    pub(super) fn names(&self) -> &[Bytes] {
        &self.names
    }

    /// The node confirmed: the client gets its confirmation.
    pub(super) fn deliver(self) {
        let _ = self.reply.tx.send(Completion {
            tag: self.reply.tag,
            raw: Bytes::new(),
            outcome: Outcome::Reply(self.frame, ReplyKind::Push),
        });
    }

    /// Not in place: the session forgets the names and the client gets the error `why`
    /// (an error line without the leading `-`).
    pub(super) fn refuse(self, why: &str) {
        let _ = self.reply.tx.send(Completion {
            tag: REFUSED_TAG,
            raw: command(verb(self.kind), &self.names),
            outcome: Outcome::Reply(Bytes::new(), ReplyKind::Push),
        });
        let mut out = BytesMut::with_capacity(why.len() + 3);
        encode::error(&mut out, why);
        let _ = self.reply.tx.send(Completion {
            tag: self.reply.tag,
            raw: Bytes::new(),
            outcome: Outcome::Reply(out.freeze(), ReplyKind::Error),
        });
    }
}

impl Task {
    /// When the oldest unanswered (un)subscribe on any link becomes overdue.
    pub(super) fn next_overdue(&self) -> Option<Instant> {
        let limit = self.pool.reply_timeout();
        self.global
            .iter()
            .chain(self.links.values())
            .filter_map(Link::owed_since)
            .min()
            .map(|t| t + limit)
    }

    /// Gives up on links whose node has not answered an (un)subscribe within the backend
    /// command timeout (a hung node, a failover under way): the client waiting for its
    /// confirmation gets an error instead of waiting forever, and the link's subscriptions
    /// are restored on a fresh connection once the topology says where.
    pub(super) fn expire_overdue(&mut self) {
        let limit = self.pool.reply_timeout();
        let now = Instant::now();
        let late: Vec<u64> = self
            .global
            .iter()
            .chain(self.links.values())
            .filter(|l| l.owed_since().is_some_and(|t| t + limit <= now))
            .map(|l| l.id)
            .collect();
        let why = format!("no answer from the node within {} ms", limit.as_millis());
        for id in late {
            self.lost(id, &why);
        }
    }

    /// A subscribe that cannot be put in place: the task forgets its names (so no repair
    /// subscribes them behind the client's back) and the client gets the error `why`.
    pub(super) fn refuse(&mut self, c: Confirm, why: &str) {
        for n in c.names() {
            match c.kind() {
                Kind::Channel => {
                    self.channels.remove(n);
                }
                Kind::Pattern => {
                    self.patterns.remove(n);
                }
                Kind::Shard => {
                    self.shard.remove(n);
                }
            }
        }
        c.refuse(why);
    }

    /// An error reply on link `id`: the command it answers is refused to the client.
    pub(super) fn on_error(&mut self, id: u64, frame: &[u8]) -> bool {
        if let Some(Some(c)) = self.link_mut(id).and_then(Link::refused) {
            let why = refused_by_node(c.kind(), frame);
            self.refuse(c, &why);
        }
        if is_routing_error(frame) {
            // A shard subscription refused (MOVED while the map was stale): place that link's
            // other channels again once the topology is fresh.
            self.unplace(id);
        }
        true
    }
}

/// Where a channel/pattern connection may go: any primary will do (every node sees every
/// PUBLISH), the rotation's pick first, then the others, so one node out of subscriber
/// connections does not refuse the subscription.
pub(super) fn global_candidates(router: &Router) -> Vec<SocketAddr> {
    let table = router.table();
    table.as_ref().map_or_else(Vec::new, |t| {
        let first = t.any_primary(router.next_rotation()).map(|p| p.addr());
        let mut all: Vec<SocketAddr> = first.into_iter().collect();
        for p in t.primaries() {
            if !all.contains(&p.addr()) {
                all.push(p.addr());
            }
        }
        all
    })
}

/// The subscribe verb of `kind`.
pub(super) fn verb(kind: Kind) -> &'static [u8] {
    match kind {
        Kind::Channel => b"SUBSCRIBE",
        Kind::Pattern => b"PSUBSCRIBE",
        Kind::Shard => b"SSUBSCRIBE",
    }
}

/// The client's error for a subscribe of `kind` that could not be put in place.
pub(super) fn not_in_place(kind: Kind, why: &str) -> String {
    let verb = String::from_utf8_lossy(verb(kind));
    format!("ERR slotway: {verb} not in place (nothing was subscribed): {why}")
}

/// The client's error for a subscribe the node answered with `frame`: a routing error (the
/// slot moved, the node fails over) says so and invites a retry; any other error (NOPERM for
/// a channel the proxy's upstream user may not use …) is passed on as the node sent it.
pub(super) fn refused_by_node(kind: Kind, frame: &[u8]) -> String {
    let text = String::from_utf8_lossy(frame.get(1..).unwrap_or_default())
        .trim_end()
        .to_string();
    if is_routing_error(frame) {
        not_in_place(
            kind,
            "the slot is moving or its node is failing over; retry",
        )
    } else {
        text
    }
}

/// True for MOVED, ASK, TRYAGAIN, CLUSTERDOWN and the other errors of a changing cluster.
pub(super) fn is_routing_error(frame: &[u8]) -> bool {
    classify_error(frame).is_cluster_change()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routing_errors_become_the_proxy_s_own_text() {
        let moved = refused_by_node(Kind::Shard, b"-MOVED 12 127.0.0.1:7001\r\n");
        assert!(
            moved.starts_with("ERR slotway: SSUBSCRIBE not in place"),
            "{moved}"
        );
        assert!(!moved.contains("7001"), "{moved}");
        for f in [
            &b"-TRYAGAIN x\r\n"[..],
            b"-CLUSTERDOWN down\r\n",
            b"-ASK 1 h:1\r\n",
        ] {
            assert!(is_routing_error(f));
        }
        assert_eq!(
            refused_by_node(Kind::Channel, b"-NOPERM no channel\r\n"),
            "NOPERM no channel"
        );
    }
}
