//! Requests that become several backend requests: the parts a request is planned into (per
//! slot for MGET/MSET/DEL…, per primary or per node for cluster-wide commands, one rewritten
//! request for SCAN and WAIT — see [`plan`]), picking each part's pool, and the pending state
//! that collects their replies until the merge (`merge.rs`).
//!
//! Each part carries its own retry state ([`Waiting`], from `proxy::recovery`), so a MOVED,
//! ASK, TRYAGAIN or lost connection on one part is retried exactly as a single request would
//! be, under the part's own tag. Nothing here knows the session: it only plans and collects.

pub(crate) mod info;
pub(crate) mod introspect;
pub(crate) mod merge;
mod plan;
pub(crate) mod scan;

pub(crate) use plan::{plan, WaitArgs};

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;

use super::classify::Fan;
use super::recovery::Waiting;
use super::router::RoutingTable;
use super::scripts::ScriptCache;
use super::Shared;
use crate::backend::NodePool;
use crate::command::Request;
use crate::config::Config;
use merge::{error_reply, merge, Reduce};

/// Where a part goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    /// The primary owning this slot (now, and again on a retry).
    Slot(u16),
    /// This node and no other: the part is never re-routed.
    Node(SocketAddr),
}

/// One backend request of a fanned-out client request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Part {
    /// The request in wire form.
    pub(crate) raw: Bytes,
    /// Where it goes.
    pub(crate) target: Target,
    /// Safe to re-send after a lost connection.
    pub(crate) readonly: bool,
}

/// What a fanned-out request turns into.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Planned {
    /// Answered without asking any node.
    Reply(Bytes),
    /// Send these parts, then merge their replies.
    Parts(Vec<Part>, Reduce),
}

/// What planning needs to know besides the request.
pub(crate) struct Ctx<'a> {
    /// The routing table in force.
    pub(crate) table: &'a RoutingTable,
    /// The proxy's settings.
    pub(crate) config: &'a Config,
    /// Script bodies (SCRIPT LOAD / FLUSH).
    pub(crate) scripts: &'a ScriptCache,
    /// Primaries this client wrote to since its last WAIT.
    pub(crate) written: &'a [SocketAddr],
    /// The port this client connected to (INFO).
    pub(crate) tcp_port: u16,
    /// The client chose RESP3 (replies built here use its types).
    pub(crate) resp3: bool,
}

/// Facts about the client a plan may need.
#[derive(Debug, Clone, Copy)]
pub(crate) struct At<'a> {
    /// Primaries this client wrote to since its last WAIT.
    pub(crate) written: &'a [SocketAddr],
    /// The port this client connected to (INFO).
    pub(crate) tcp_port: u16,
    /// The client chose RESP3.
    pub(crate) resp3: bool,
}

/// One part ready to go.
pub(crate) struct Send {
    /// The request in wire form.
    pub(crate) raw: Bytes,
    /// The pool of the node it goes to.
    pub(crate) pool: Arc<NodePool>,
    /// The part writes (tracked for WAIT).
    pub(crate) write: bool,
}

/// A fanned-out request ready to send, or the reply it gets instead.
pub(crate) enum Prepared {
    /// Answer this at once (a local reply, or an error).
    Reply(Bytes),
    /// Queue this state and send these parts (part `i` is `sends[i]`).
    Send(Box<Fanout>, Vec<Send>),
}

/// Plans `fan` against the current routing table and picks each part's pool.
pub(crate) fn prepare(
    fan: Fan,
    shared: &Shared,
    req: &Request<'_>,
    keys: &[usize],
    at: At<'_>,
) -> Prepared {
    let router = &shared.router;
    let table = router.table();
    let Some(t) = table.as_ref() else {
        router.request_refresh();
        return Prepared::Reply(error_reply(
            "CLUSTERDOWN slotway has no cluster topology yet (no seed reachable)",
        ));
    };
    let ctx = Ctx {
        table: t,
        config: &shared.config,
        scripts: &shared.scripts,
        written: at.written,
        tcp_port: at.tcp_port,
        resp3: at.resp3,
    };
    let (parts, reduce) = match plan(fan, &ctx, req, keys) {
        Ok(Planned::Parts(parts, reduce)) => (parts, reduce),
        Ok(Planned::Reply(reply)) => return Prepared::Reply(reply),
        Err(msg) => return Prepared::Reply(error_reply(&msg)),
    };
    if parts.is_empty() {
        return Prepared::Reply(merge(&reduce, &[]));
    }
    let pools: Option<Vec<Arc<NodePool>>> = parts
        .iter()
        .map(|p| match p.target {
            Target::Slot(s) => t.primary_for_slot(s).cloned(),
            Target::Node(addr) => router.pool_for_addr(addr),
        })
        .collect();
    let Some(pools) = pools else {
        router.request_refresh();
        return Prepared::Reply(error_reply("CLUSTERDOWN Hash slot not served"));
    };
    let (state, raws) = Fanout::new(parts, reduce);
    let sends = raws
        .into_iter()
        .zip(pools)
        .map(|((raw, write), pool)| Send { raw, pool, write })
        .collect();
    Prepared::Send(Box::new(state), sends)
}

/// A fanned-out request waiting for its parts.
pub(crate) struct Fanout {
    /// Per part: its retry state while in flight, its reply once in.
    parts: Vec<(Waiting, Option<Bytes>)>,
    /// Parts still in flight.
    left: usize,
    /// Bytes of the part replies held until the merge.
    held: usize,
    reduce: Reduce,
    /// Parts sent to one node as one request, by group index (`Tag::GROUP`): each part's
    /// number and the length of its bytes in the group's request. Emptied when answered.
    groups: Vec<Vec<(u32, usize)>>,
}

impl Fanout {
    /// The pending state for `parts`, and the requests to send with whether each writes
    /// (same order, part = index).
    pub(crate) fn new(parts: Vec<Part>, reduce: Reduce) -> (Self, Vec<(Bytes, bool)>) {
        let mut states = Vec::with_capacity(parts.len());
        let mut sends = Vec::with_capacity(parts.len());
        for p in parts {
            let slot = match p.target {
                Target::Slot(s) => Some(s),
                Target::Node(_) => None,
            };
            let mut waiting = Waiting::new(slot, p.readonly);
            if matches!(p.target, Target::Node(_)) {
                // Bound to one node: a retry by slot would reach another one.
                waiting.deadline = Some(tokio::time::Instant::now());
            }
            states.push((waiting, None));
            sends.push((p.raw, !p.readonly));
        }
        let left = states.len();
        (
            Self {
                parts: states,
                left,
                held: 0,
                reduce,
                groups: Vec::new(),
            },
            sends,
        )
    }

    /// The retry state of `part` while it is still in flight.
    pub(crate) fn waiting(&mut self, part: u32) -> Option<&mut Waiting> {
        match self.parts.get_mut(part as usize)? {
            (w, None) => Some(w),
            (_, Some(_)) => None,
        }
    }

    /// Records that `members` (part, request length) were sent together; returns the group's
    /// index for its tag.
    pub(crate) fn add_group(&mut self, members: Vec<(u32, usize)>) -> u32 {
        self.groups.push(members);
        (self.groups.len() - 1) as u32
    }

    /// The members of group `g`, once: a group is answered by one completion.
    pub(crate) fn take_group(&mut self, g: u32) -> Vec<(u32, usize)> {
        self.groups
            .get_mut(g as usize)
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// Records the final reply of `part`; returns the merged reply once every part is in.
    pub(crate) fn complete(&mut self, part: u32, frame: Bytes) -> Option<Bytes> {
        let slot = &mut self.parts.get_mut(part as usize)?.1;
        if slot.is_some() {
            return None;
        }
        self.held += frame.len();
        *slot = Some(frame);
        self.left -= 1;
        (self.left == 0).then(|| self.merged())
    }

    /// Bytes of part replies waiting for the rest (counted against the client's output limit).
    pub(crate) fn held_bytes(&self) -> usize {
        self.held
    }

    fn merged(&mut self) -> Bytes {
        let replies: Vec<Bytes> = self
            .parts
            .iter_mut()
            .filter_map(|(_, r)| r.take())
            .collect();
        self.held = 0;
        merge(&self.reduce, &replies)
    }
}

#[cfg(test)]
mod tests;
