//! `PUBSUB CHANNELS / NUMSUB / NUMPAT / SHARDCHANNELS / SHARDNUMSUB` across the cluster.
//!
//! In Redis Cluster a subscription lives only on the node the subscriber is connected to,
//! while `PUBLISH` reaches every node, primaries and replicas alike. slotway keeps its own
//! subscribers on primaries, but clients connected straight to any node (a replica included)
//! are subscribers too, so the cluster-wide answer asks every node: `NUMSUB` sums each
//! channel's count, `CHANNELS` is the union, `NUMPAT` the sum (a pattern subscribed on two
//! nodes counts twice: no command lists the patterns, so they cannot be de-duplicated).
//! Shard channels live on the nodes of the shard owning the channel's slot: `SHARDNUMSUB`
//! asks each shard's nodes about that shard's channels only.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::ops::Range;

use bytes::{BufMut, Bytes, BytesMut};

use super::merge::{array_body, elements, integer, Combine, Reduce};
use super::{Part, Planned, Target};
use crate::cluster::slot::key_slot;
use crate::cluster::topology::Health;
use crate::command::Request;
use crate::protocol::encode;
use crate::proxy::router::RoutingTable;

/// Which `PUBSUB` introspection subcommand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Query {
    /// `CHANNELS` / `SHARDCHANNELS [pattern]`: the union over every node.
    Channels,
    /// `NUMPAT`: the sum over every node.
    NumPat,
    /// `NUMSUB channel …`: each channel's count summed over every node.
    NumSub,
    /// `SHARDNUMSUB channel …`: each channel's count summed over its shard's nodes.
    ShardNumSub,
}

/// Plans `query` for `req`.
pub(crate) fn plan(query: Query, table: &RoutingTable, req: &Request<'_>) -> Planned {
    let (raw, args) = (req.raw(), req.args());
    let every =
        |raw: &Bytes| -> Vec<Part> { live_nodes(table, None).map(|a| part(raw, a)).collect() };
    match query {
        Query::Channels => Planned::Parts(every(raw), Reduce::Combine(Combine::Union)),
        Query::NumPat => Planned::Parts(every(raw), Reduce::Combine(Combine::SumInt)),
        Query::NumSub => {
            let names = channels(raw, args);
            if names.is_empty() {
                return Planned::Reply(Bytes::from_static(b"*0\r\n"));
            }
            Planned::Parts(every(raw), Reduce::NumSub(names))
        }
        Query::ShardNumSub => shard_numsub(table, raw, args),
    }
}

/// The channel names of a `NUMSUB` / `SHARDNUMSUB` request, in the client's order.
fn channels(raw: &[u8], args: &[Range<usize>]) -> Vec<Bytes> {
    args.iter()
        .skip(2)
        .map(|r| Bytes::copy_from_slice(&raw[r.clone()]))
        .collect()
}

fn part(raw: &Bytes, addr: SocketAddr) -> Part {
    Part {
        raw: raw.clone(),
        target: Target::Node(addr),
        readonly: true,
    }
}

/// Nodes not known to be down: every one, or those of shard `shard`.
fn live_nodes(table: &RoutingTable, shard: Option<usize>) -> impl Iterator<Item = SocketAddr> + '_ {
    let t = &table.topology;
    let members: Vec<usize> = match shard.and_then(|s| t.shards.get(s)) {
        Some(s) => std::iter::once(s.primary)
            .chain(s.replicas.iter().copied())
            .collect(),
        None => (0..t.nodes.len()).collect(),
    };
    members
        .into_iter()
        .filter_map(move |i| t.nodes.get(i))
        .filter(|n| n.health != Health::Failed)
        .map(|n| n.addr)
}

/// One `PUBSUB SHARDNUMSUB` per node of each shard owning some of the channels, naming only
/// that shard's channels. A channel whose slot has no owner counts 0.
fn shard_numsub(table: &RoutingTable, raw: &[u8], args: &[Range<usize>]) -> Planned {
    let names = channels(raw, args);
    if names.is_empty() {
        return Planned::Reply(Bytes::from_static(b"*0\r\n"));
    }
    let mut by_shard: Vec<(usize, Vec<&[u8]>)> = Vec::new();
    for name in &names {
        let Some(shard) = table.topology.shard_of_slot(key_slot(name)) else {
            continue;
        };
        match by_shard.iter_mut().find(|(s, _)| *s == shard) {
            Some((_, list)) => list.push(name),
            None => by_shard.push((shard, vec![name])),
        }
    }
    let mut parts = Vec::new();
    for (shard, list) in by_shard {
        let mut words: Vec<&[u8]> = vec![&raw[args[0].clone()], &raw[args[1].clone()]];
        words.extend(list);
        let mut out = BytesMut::new();
        encode::command(&mut out, &words);
        let request = out.freeze();
        parts.extend(live_nodes(table, Some(shard)).map(|a| part(&request, a)));
    }
    Planned::Parts(parts, Reduce::NumSub(names))
}

/// Merges `NUMSUB`-style replies (`[name, count, …]` per part) into `[name, total, …]` for
/// `names` in the client's order. A channel named twice in one request is counted once per
/// node, as a single node answers.
pub(crate) fn merge_numsub(names: &[Bytes], parts: &[Bytes]) -> Option<Bytes> {
    let mut totals: HashMap<&[u8], i64> = HashMap::new();
    for p in parts {
        let (n, body) = array_body(p)?;
        let items = elements(body, n)?;
        let mut seen: Vec<&[u8]> = Vec::new();
        for pair in items.chunks(2) {
            let [name, count] = pair else { return None };
            let name = bulk_payload(&body[name.clone()])?;
            let count = integer(&body[count.clone()])?;
            if seen.contains(&name) {
                continue;
            }
            seen.push(name);
            let total = totals.entry(name).or_insert(0);
            *total = total.checked_add(count)?;
        }
    }
    let mut out = BytesMut::new();
    encode::array_header(&mut out, names.len() * 2);
    for name in names {
        encode::bulk(&mut out, name);
        encode::integer(&mut out, totals.get(&name[..]).copied().unwrap_or(0));
    }
    Some(out.freeze())
}

/// The union of array replies, each element once, in the order first seen.
pub(crate) fn union(parts: &[Bytes]) -> Option<Bytes> {
    let mut kept: Vec<&[u8]> = Vec::new();
    let mut seen: HashSet<&[u8]> = HashSet::new();
    for p in parts {
        let (n, body) = array_body(p)?;
        for r in elements(body, n)? {
            let item = &body[r];
            if seen.insert(item) {
                kept.push(item);
            }
        }
    }
    let size: usize = kept.iter().map(|k| k.len()).sum();
    let mut out = BytesMut::with_capacity(size + 16);
    encode::array_header(&mut out, kept.len());
    for k in kept {
        out.put_slice(k);
    }
    Some(out.freeze())
}

/// The payload of a bulk string frame `$n\r\n…\r\n`.
fn bulk_payload(frame: &[u8]) -> Option<&[u8]> {
    let rest = frame.strip_prefix(b"$")?;
    let cr = rest.iter().position(|&b| b == b'\r')?;
    rest.get(cr + 2..rest.len().checked_sub(2)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn numsub_sums_per_channel_in_client_order() {
        let names = vec![b("b"), b("a"), b("b"), b("zz")];
        let parts = [
            b("*6\r\n$1\r\nb\r\n:2\r\n$1\r\na\r\n:0\r\n$1\r\nb\r\n:2\r\n"),
            b("*2\r\n$1\r\na\r\n:3\r\n"),
            b("*4\r\n$1\r\nb\r\n:1\r\n$1\r\na\r\n:1\r\n"),
        ];
        let got = merge_numsub(&names, &parts).unwrap();
        assert_eq!(
            got,
            "*8\r\n$1\r\nb\r\n:3\r\n$1\r\na\r\n:4\r\n$1\r\nb\r\n:3\r\n$2\r\nzz\r\n:0\r\n"
        );
        assert!(merge_numsub(&names, &[b("*1\r\n$1\r\nb\r\n")]).is_none());
        assert!(merge_numsub(&names, &[b("*2\r\n$1\r\nb\r\n$1\r\n1\r\n")]).is_none());
    }

    #[test]
    fn union_keeps_each_element_once() {
        let parts = [
            b("*2\r\n$1\r\na\r\n$1\r\nb\r\n"),
            b("*0\r\n"),
            b("*2\r\n$1\r\nb\r\n$1\r\nc\r\n"),
        ];
        assert_eq!(
            union(&parts).unwrap(),
            "*3\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\nc\r\n"
        );
        assert!(union(&[b(":1\r\n")]).is_none());
    }

    #[test]
    fn bulk_payloads() {
        assert_eq!(bulk_payload(b"$3\r\nabc\r\n"), Some(&b"abc"[..]));
        assert_eq!(bulk_payload(b"$0\r\n\r\n"), Some(&b""[..]));
        assert_eq!(bulk_payload(b":1\r\n"), None);
    }
}
