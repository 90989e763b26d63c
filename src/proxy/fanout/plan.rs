//! Planning: what parts one fanned-out request becomes, from the request and the routing
//! table alone (no pools, no session state), so each family is unit-tested on its own.

use std::net::SocketAddr;

use bytes::{Bytes, BytesMut};

use super::info::{InfoPlan, Sections, NODE_REQUEST};
use super::introspect;
use super::merge::{Combine, Reduce};
use super::scan::{self, ScanPlan, DONE_REPLY};
use super::{Ctx, Part, Planned, Target};
use crate::cluster::slot::key_slot;
use crate::cluster::topology::Health;
use crate::command::{Merge, Request};
use crate::protocol::encode;
use crate::proxy::classify::Fan;
use crate::proxy::router::RoutingTable;

const CONFIG_SET_DENIED: &str = "ERR slotway: CONFIG SET and CONFIG REWRITE are disabled \
    (set commands.allow_config_set = true to send them to every node)";

/// Plans `fan` for `req` (its key indices in `keys`). An error is the client's reply text.
pub(crate) fn plan(
    fan: Fan,
    ctx: &Ctx<'_>,
    req: &Request<'_>,
    keys: &[usize],
) -> Result<Planned, String> {
    let raw = req.raw();
    match fan {
        Fan::Split { merge, readonly } => split(merge, readonly, req, keys),
        Fan::AllPrimaries { combine, readonly } => Ok(Planned::Parts(
            primaries(ctx.table, raw, readonly),
            Reduce::Combine(combine),
        )),
        Fan::ScriptLoad => {
            if let Some(body) = req.arg(2) {
                ctx.scripts.remember(body);
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
        Fan::Scan => match scan::plan(&ctx.table.topology, req)? {
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
        Fan::Wait => Ok(wait(ctx, req)),
        Fan::Info => Ok(info(ctx, req)),
        Fan::PubSub(query) => Ok(introspect::plan(query, ctx.table, req)),
    }
}

/// One sub-request per slot, each holding that slot's key groups in the client's order.
fn split(
    merge: Merge,
    readonly: bool,
    req: &Request<'_>,
    keys: &[usize],
) -> Result<Planned, String> {
    let (raw, args) = (req.raw(), req.args());
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
pub(crate) struct WaitArgs {
    /// WAITAOF rather than WAIT.
    pub(crate) aof: bool,
    /// The counts asked for, in argument order.
    pub(crate) counts: Vec<u64>,
    /// The timeout after capping, in milliseconds.
    pub(crate) timeout_ms: u64,
}

impl WaitArgs {
    /// Parses a WAIT or WAITAOF request.
    pub(crate) fn parse(req: &Request<'_>, cap_ms: u64) -> Option<Self> {
        let (raw, args) = (req.raw(), req.args());
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
fn wait(ctx: &Ctx<'_>, req: &Request<'_>) -> Planned {
    let (raw, args) = (req.raw(), req.args());
    let cap = ctx.config.backend.command_timeout_ms / 2;
    let parsed = WaitArgs::parse(req, cap);
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
fn info(ctx: &Ctx<'_>, req: &Request<'_>) -> Planned {
    let sections = Sections::parse(req);
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
