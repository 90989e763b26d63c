//! Requests that become several backend requests: planning the parts (per slot for MGET/MSET/
//! DEL…, per primary or per node for cluster-wide commands, one rewritten request for SCAN and
//! WAIT), and the pending state that collects their replies until the merge.
//!
//! Each part is re-encoded as RESP with `protocol::encode` and carries its own retry state
//! (the session's [`Waiting`]), so a MOVED, ASK, TRYAGAIN or lost connection on one part is
//! retried exactly as a single request would be, under the part's own tag.

use std::net::SocketAddr;
use std::ops::Range;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use super::classify::Fan;
use super::info::{InfoPlan, Sections, NODE_REQUEST};
use super::introspect;
use super::merge::{error_reply, merge, Combine, Reduce};
use super::recovery::Waiting;
use super::router::RoutingTable;
use super::scan::{self, ScanPlan, DONE_REPLY};
use super::scripts::ScriptCache;
use super::Shared;
use crate::backend::NodePool;
use crate::cluster::slot::key_slot;
use crate::cluster::topology::Health;
use crate::command::Merge;
use crate::config::Config;
use crate::protocol::encode;

/// Where a part goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The primary owning this slot (now, and again on a retry).
    Slot(u16),
    /// This node and no other: the part is never re-routed.
    Node(SocketAddr),
}

/// One backend request of a fanned-out client request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// The request in wire form.
    pub raw: Bytes,
    /// Where it goes.
    pub target: Target,
    /// Safe to re-send after a lost connection.
    pub readonly: bool,
}

/// What a fanned-out request turns into.
#[derive(Debug, Clone, PartialEq)]
pub enum Planned {
    /// Answered without asking any node.
    Reply(Bytes),
    /// Send these parts, then merge their replies.
    Parts(Vec<Part>, Reduce),
}

/// What planning needs to know besides the request.
pub struct Ctx<'a> {
    /// The routing table in force.
    pub table: &'a RoutingTable,
    /// The proxy's settings.
    pub config: &'a Config,
    /// Script bodies (SCRIPT LOAD / FLUSH).
    pub scripts: &'a ScriptCache,
    /// Primaries this client wrote to since its last WAIT.
    pub written: &'a [SocketAddr],
    /// The port this client connected to (INFO).
    pub tcp_port: u16,
    /// The client chose RESP3 (replies built here use its types).
    pub resp3: bool,
}

/// Facts about the client a plan may need.
#[derive(Debug, Clone, Copy)]
pub struct At<'a> {
    /// Primaries this client wrote to since its last WAIT.
    pub written: &'a [SocketAddr],
    /// The port this client connected to (INFO).
    pub tcp_port: u16,
    /// The client chose RESP3.
    pub resp3: bool,
}

/// One part ready to go.
pub struct Send {
    /// The request in wire form.
    pub raw: Bytes,
    /// The pool of the node it goes to.
    pub pool: Arc<NodePool>,
    /// The part writes (tracked for WAIT).
    pub write: bool,
}

/// A fanned-out request ready to send, or the reply it gets instead.
pub enum Prepared {
    /// Answer this at once (a local reply, or an error).
    Reply(Bytes),
    /// Queue this state and send these parts (part `i` is `sends[i]`).
    Send(Box<Fanout>, Vec<Send>),
}

/// Plans `fan` against the current routing table and picks each part's pool.
pub fn prepare(
    fan: Fan,
    shared: &Shared,
    raw: &Bytes,
    args: &[Range<usize>],
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
    let (parts, reduce) = match plan(fan, &ctx, raw, args, keys) {
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

const CONFIG_SET_DENIED: &str = "ERR slotway: CONFIG SET and CONFIG REWRITE are disabled \
    (set commands.allow_config_set = true to send them to every node)";

/// Plans `fan` for the request `raw` (argument ranges `args`, key indices `keys`).
/// An error is the client's reply text.
pub fn plan(
    fan: Fan,
    ctx: &Ctx<'_>,
    raw: &Bytes,
    args: &[Range<usize>],
    keys: &[usize],
) -> Result<Planned, String> {
    match fan {
        Fan::Split { merge, readonly } => split(merge, readonly, raw, args, keys),
        Fan::AllPrimaries { combine, readonly } => Ok(Planned::Parts(
            primaries(ctx.table, raw, readonly),
            Reduce::Combine(combine),
        )),
        Fan::ScriptLoad => {
            if let Some(body) = args.get(2) {
                ctx.scripts.remember(&raw[body.clone()]);
            }
            Ok(Planned::Parts(
                primaries(ctx.table, raw, false),
                Reduce::Combine(Combine::AllEqual),
            ))
        }
        Fan::ScriptFlush => {
            ctx.scripts.clear();
            Ok(Planned::Parts(
                primaries(ctx.table, raw, false),
                Reduce::Combine(Combine::AllOk),
            ))
        }
        Fan::AllNodes => {
            if !ctx.config.commands.allow_config_set {
                return Err(CONFIG_SET_DENIED.into());
            }
            Ok(Planned::Parts(
                all_nodes(ctx.table, raw),
                Reduce::Combine(Combine::AllOk),
            ))
        }
        Fan::Scan => match scan::plan(&ctx.table.topology, raw, args)? {
            ScanPlan::Done => Ok(Planned::Reply(Bytes::from_static(DONE_REPLY))),
            ScanPlan::Call(call) => Ok(Planned::Parts(
                vec![Part {
                    raw: call.request,
                    target: Target::Slot(call.slot),
                    readonly: true,
                }],
                Reduce::Scan(call.step),
            )),
        },
        Fan::Wait => Ok(wait(ctx, raw, args)),
        Fan::Info => Ok(info(ctx, raw, args)),
        Fan::PubSub(query) => Ok(introspect::plan(query, ctx.table, raw, args)),
    }
}

/// One sub-request per slot, each holding that slot's key groups in the client's order.
fn split(
    merge: Merge,
    readonly: bool,
    raw: &[u8],
    args: &[Range<usize>],
    keys: &[usize],
) -> Result<Planned, String> {
    // Each key leads a group of `width` arguments (MSET: key and value). Commands whose keys
    // are not evenly spaced to the end cannot be split safely.
    let width = match keys {
        [a, b, ..] if b > a => b - a,
        _ => 1,
    };
    let evenly = keys.windows(2).all(|w| w[1] == w[0] + width)
        && keys.last().is_some_and(|&k| k + width == args.len());
    if !evenly {
        return Err("CROSSSLOT Keys in request don't hash to the same slot".into());
    }
    // Part numbers in the order slots first appear; `order[i]` places key i's reply.
    let mut slots: Vec<u16> = Vec::new();
    let mut part_of: Vec<u32> = Vec::with_capacity(keys.len());
    let mut order = Vec::with_capacity(keys.len());
    let mut sizes: Vec<u32> = Vec::new();
    let mut index = SlotIndex::default();
    for &k in keys {
        let slot = key_slot(&raw[args[k].clone()]);
        let part = index.part(slot, &mut slots);
        if part == sizes.len() {
            sizes.push(0);
        }
        order.push((part as u32, sizes[part]));
        sizes[part] += 1;
        part_of.push(part as u32);
    }
    // Every part is encoded into one buffer and split off it: one allocation for all parts.
    let name = &raw[args[0].clone()];
    let body: usize = keys
        .iter()
        .flat_map(|&k| &args[k..k + width])
        .map(|r| r.len() + 16)
        .sum();
    let mut out = BytesMut::with_capacity(body + slots.len() * (name.len() + 32));
    let (flat, start) = members_by_part(&part_of, &sizes);
    let parts = slots
        .iter()
        .zip(start.windows(2))
        .map(|(&slot, span)| {
            let group = &flat[span[0]..span[1]];
            encode::array_header(&mut out, 1 + group.len() * width);
            encode::bulk(&mut out, name);
            for &i in group {
                let k = keys[i];
                for r in &args[k..k + width] {
                    encode::bulk(&mut out, &raw[r.clone()]);
                }
            }
            Part {
                raw: out.split().freeze(),
                target: Target::Slot(slot),
                readonly,
            }
        })
        .collect();
    let reduce = match merge {
        Merge::Values => Reduce::Values(order),
        other => Reduce::Combine(other.into()),
    };
    Ok(Planned::Parts(parts, reduce))
}

/// Slot to part number, in the order slots are first seen. A linear search while few slots
/// are involved (the common MGET/MSET of a handful of keys allocates nothing more), a map
/// beyond that so a request with thousands of keys stays linear.
#[derive(Default)]
struct SlotIndex {
    map: Option<std::collections::HashMap<u16, usize>>,
}

impl SlotIndex {
    const LINEAR: usize = 32;

    fn part(&mut self, slot: u16, slots: &mut Vec<u16>) -> usize {
        if let Some(map) = &mut self.map {
            return *map.entry(slot).or_insert_with(|| {
                slots.push(slot);
                slots.len() - 1
            });
        }
        if let Some(at) = slots.iter().position(|&s| s == slot) {
            return at;
        }
        slots.push(slot);
        if slots.len() > Self::LINEAR {
            self.map = Some(slots.iter().enumerate().map(|(i, &s)| (s, i)).collect());
        }
        slots.len() - 1
    }
}

/// The key positions of each part, in the client's order, as one flat vector and the start
/// of each part in it (plus the end): `part_of[i]` is key i's part, `sizes[p]` the number of
/// keys in part p (a counting sort).
fn members_by_part(part_of: &[u32], sizes: &[u32]) -> (Vec<usize>, Vec<usize>) {
    let mut start: Vec<usize> = Vec::with_capacity(sizes.len() + 1);
    let mut at = 0;
    for &n in sizes {
        start.push(at);
        at += n as usize;
    }
    start.push(at);
    let mut flat = vec![0; part_of.len()];
    let mut next = start.clone();
    for (i, &p) in part_of.iter().enumerate() {
        flat[next[p as usize]] = i;
        next[p as usize] += 1;
    }
    (flat, start)
}

/// The same request to every primary, in the order of the shards' first slots (so `First`
/// answers from the same shard every time). A primary serving no slot is addressed directly.
fn primaries(table: &RoutingTable, raw: &Bytes, readonly: bool) -> Vec<Part> {
    let t = &table.topology;
    let mut shards: Vec<(Option<u16>, SocketAddr)> = t
        .shards
        .iter()
        .filter_map(|s| {
            let node = t.nodes.get(s.primary)?;
            // A failed primary without slots is the dead one a failover replaced: nothing to ask.
            if s.slots.is_empty() && node.health == Health::Failed {
                return None;
            }
            Some((s.slots.first().map(|&(first, _)| first), node.addr))
        })
        .collect();
    shards.sort_by_key(|&(first, _)| first.unwrap_or(u16::MAX));
    shards
        .into_iter()
        .map(|(first, addr)| Part {
            raw: raw.clone(),
            target: first.map_or(Target::Node(addr), Target::Slot),
            readonly,
        })
        .collect()
}

/// Every node that is not known to be down, primaries and replicas (CONFIG SET).
fn all_nodes(table: &RoutingTable, raw: &Bytes) -> Vec<Part> {
    table
        .topology
        .nodes
        .iter()
        .filter(|n| n.health != Health::Failed)
        .map(|n| Part {
            raw: raw.clone(),
            target: Target::Node(n.addr),
            readonly: false,
        })
        .collect()
}

/// The arguments of `WAIT numreplicas timeout` or `WAITAOF numlocal numreplicas timeout`,
/// the timeout capped at `cap_ms` (0, forever, becomes the cap too: a WAIT holds a shared
/// connection). None when malformed, which a node answers with Redis's own error.
#[derive(Debug, PartialEq, Eq)]
pub struct WaitArgs {
    /// WAITAOF rather than WAIT.
    pub aof: bool,
    /// The counts asked for, in argument order.
    pub counts: Vec<u64>,
    /// The timeout after capping, in milliseconds.
    pub timeout_ms: u64,
}

impl WaitArgs {
    /// Parses a WAIT or WAITAOF request.
    pub fn parse(raw: &[u8], args: &[Range<usize>], cap_ms: u64) -> Option<Self> {
        let aof = raw
            .get(args.first()?.clone())?
            .eq_ignore_ascii_case(b"waitaof");
        if args.len() != if aof { 4 } else { 3 } {
            return None;
        }
        let mut numbers = args[1..]
            .iter()
            .map(|r| std::str::from_utf8(&raw[r.clone()]).ok()?.parse().ok())
            .collect::<Option<Vec<u64>>>()?;
        let t = numbers.pop()?;
        Some(Self {
            aof,
            counts: numbers,
            timeout_ms: if t == 0 || t > cap_ms { cap_ms } else { t },
        })
    }
}

/// `WAIT` / `WAITAOF` on each primary the client wrote to (on the connection that carried
/// the writes), the reply being the smallest count (element-wise for WAITAOF). Without writes
/// every primary is asked. The timeout is capped below the backend command timeout.
fn wait(ctx: &Ctx<'_>, raw: &Bytes, args: &[Range<usize>]) -> Planned {
    let cap = ctx.config.backend.command_timeout_ms / 2;
    let parsed = WaitArgs::parse(raw, args, cap);
    let reduce = match &parsed {
        Some(w) if w.aof => Combine::MinArrays,
        _ => Combine::MinInt,
    };
    let request = match parsed {
        Some(w) => {
            let mut words: Vec<String> = w.counts.iter().map(u64::to_string).collect();
            words.push(w.timeout_ms.to_string());
            let mut argv: Vec<&[u8]> = vec![&raw[args[0].clone()]];
            argv.extend(words.iter().map(String::as_bytes));
            let mut out = BytesMut::new();
            encode::command(&mut out, &argv);
            out.freeze()
        }
        // Let a node give Redis's own error for malformed arguments.
        None => raw.clone(),
    };
    let nodes: Vec<SocketAddr> = if ctx.written.is_empty() {
        primaries(ctx.table, raw, true)
            .into_iter()
            .filter_map(|p| match p.target {
                Target::Slot(s) => ctx.table.primary_for_slot(s).map(|pool| pool.addr()),
                Target::Node(a) => Some(a),
            })
            .collect()
    } else {
        ctx.written.to_vec()
    };
    let parts = nodes
        .into_iter()
        .map(|addr| Part {
            raw: request.clone(),
            target: Target::Node(addr),
            readonly: true,
        })
        .collect();
    Planned::Parts(parts, Reduce::Combine(reduce))
}

/// `INFO [section …]`: the proxy's sections; the nodes are asked only for what they know.
fn info(ctx: &Ctx<'_>, raw: &[u8], args: &[Range<usize>]) -> Planned {
    let sections = Sections::parse(raw, args);
    let plan = InfoPlan {
        sections,
        tcp_port: ctx.tcp_port,
        maxclients: ctx.config.client.max_connections,
        cluster_enabled: ctx.config.commands.cluster_emulation,
        resp3: ctx.resp3,
    };
    if !sections.needs_nodes() {
        return Planned::Reply(plan.render(&[]));
    }
    let mut parts = primaries(ctx.table, &Bytes::from_static(NODE_REQUEST), true);
    if !sections.has_keyspace() {
        // Only the Redis version is needed: one node knows it.
        parts.truncate(1);
    }
    Planned::Parts(parts, Reduce::Info(plan))
}

/// A fanned-out request waiting for its parts.
pub struct Fanout {
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
    pub fn new(parts: Vec<Part>, reduce: Reduce) -> (Self, Vec<(Bytes, bool)>) {
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
    pub fn waiting(&mut self, part: u32) -> Option<&mut Waiting> {
        match self.parts.get_mut(part as usize)? {
            (w, None) => Some(w),
            (_, Some(_)) => None,
        }
    }

    /// Records that `members` (part, request length) were sent together; returns the group's
    /// index for its tag.
    pub fn add_group(&mut self, members: Vec<(u32, usize)>) -> u32 {
        self.groups.push(members);
        (self.groups.len() - 1) as u32
    }

    /// The members of group `g`, once: a group is answered by one completion.
    pub fn take_group(&mut self, g: u32) -> Vec<(u32, usize)> {
        self.groups
            .get_mut(g as usize)
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// Records the final reply of `part`; returns the merged reply once every part is in.
    pub fn complete(&mut self, part: u32, frame: Bytes) -> Option<Bytes> {
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
    pub fn held_bytes(&self) -> usize {
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
#[path = "fanout_tests.rs"]
mod tests;
