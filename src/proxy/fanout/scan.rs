//! Cluster-wide `SCAN`: each call scans one shard, and the cursor the client sees says which
//! shard and where in it.
//!
//! Cursor layout (an unsigned 64-bit decimal, as Redis's): the top 14 bits hold the *first
//! slot* of the shard being scanned, the low 50 bits that shard's own cursor. Shards are
//! visited in the order of their first slot; a shard whose node returns cursor 0 hands over to
//! the shard with the next higher first slot, and the client gets cursor 0 after the last one.
//! Cursor 0 is the natural start: "the shard owning slot 0, at its cursor 0". `MATCH`, `COUNT`
//! and `TYPE` are passed to the node unchanged, so `COUNT` is a per-call hint for one shard.
//!
//! Naming the shard by a slot rather than by a position keeps the iteration sound while the
//! topology holds still, and makes it degrade gently when it does not:
//! - failover of another shard: no effect (shards are found by slot, not by node);
//! - failover of the shard being scanned: the promoted replica has the same keys but its own
//!   hash table, so the node cursor is continued on a different table — keys of that shard may
//!   be repeated or missed for the rest of that shard's pass;
//! - resharding: a slot that moves between shards already visited and not yet visited can have
//!   its keys seen twice or not at all, and a shard added with a lower first slot than the
//!   current one is not visited. If the slot in the cursor lost its shard entirely, the scan
//!   continues with the next shard by first slot.
//!
//! Redis's own guarantee (every key present for the whole iteration is returned) holds for a
//! full iteration during which the topology did not change.

use bytes::{BufMut, Bytes, BytesMut};

use super::merge::{array_body, elements};
use crate::cluster::topology::Topology;
use crate::command::Request;
use crate::protocol::encode;

/// Bits of the client cursor that carry the shard's own cursor.
const NODE_BITS: u32 = 50;
/// Largest node cursor the client cursor can carry.
const NODE_MAX: u64 = (1 << NODE_BITS) - 1;

/// The client cursor for "shard whose first slot is `first_slot`, at its cursor
/// `node_cursor`"; None when the node's cursor does not fit in 50 bits.
pub(crate) fn encode_cursor(first_slot: u16, node_cursor: u64) -> Option<u64> {
    if node_cursor > NODE_MAX || usize::from(first_slot) >= crate::cluster::topology::SLOTS {
        return None;
    }
    Some((u64::from(first_slot) << NODE_BITS) | node_cursor)
}

/// Splits a client cursor into (slot, node cursor).
pub(crate) fn decode_cursor(cursor: u64) -> (u16, u64) {
    // The top 14 bits are below 16384 by construction.
    ((cursor >> NODE_BITS) as u16, cursor & NODE_MAX)
}

/// How the cursor in one shard's reply becomes the client's next cursor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ScanStep {
    /// First slot of the shard scanned by this call.
    pub(crate) first_slot: u16,
    /// First slot of the shard to scan after it, if any.
    pub(crate) next_first_slot: Option<u16>,
}

/// One call of a cluster-wide scan: where it goes and what it sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ScanCall {
    /// A slot of the target shard (its first), to route by.
    pub(crate) slot: u16,
    /// `SCAN <node cursor> <the client's options>`.
    pub(crate) request: Bytes,
    /// How to rewrite the reply.
    pub(crate) step: ScanStep,
}

/// What a client's `SCAN` turns into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ScanPlan {
    /// Scan one shard.
    Call(ScanCall),
    /// No shard is left to scan: reply cursor 0 and no keys.
    Done,
}

/// The reply to a scan call that has nothing left to scan.
pub(crate) const DONE_REPLY: &[u8] = b"*2\r\n$1\r\n0\r\n*0\r\n";

/// Plans one `SCAN cursor [options…]` against the topology `t`.
/// Errors are the client's reply text.
pub(crate) fn plan(t: &Topology, req: &Request<'_>) -> Result<ScanPlan, String> {
    let (raw, args) = (req.raw(), req.args());
    let cursor = args
        .get(1)
        .and_then(|r| parse_cursor(&raw[r.clone()]))
        .ok_or_else(|| "ERR invalid cursor".to_string())?;
    let firsts = first_slots(t);
    let (slot, node_cursor) = decode_cursor(cursor);
    let (first, node_cursor) = match t.shard_of_slot(slot).and_then(|s| first_slot(t, s)) {
        Some(first) => (first, node_cursor),
        // The slot lost its shard: go on with the next shard, from its start.
        None => match firsts.iter().find(|&&f| f > slot) {
            Some(&f) => (f, 0),
            None => return Ok(ScanPlan::Done),
        },
    };
    let next_first_slot = firsts.iter().copied().find(|&f| f > first);
    let mut request = BytesMut::with_capacity(raw.len() + 8);
    encode::array_header(&mut request, args.len());
    encode::bulk(&mut request, &raw[args[0].clone()]);
    encode::bulk(&mut request, node_cursor.to_string().as_bytes());
    for r in &args[2..] {
        encode::bulk(&mut request, &raw[r.clone()]);
    }
    Ok(ScanPlan::Call(ScanCall {
        slot: first,
        request: request.freeze(),
        step: ScanStep {
            first_slot: first,
            next_first_slot,
        },
    }))
}

/// The first slot of every shard that serves slots, ascending.
fn first_slots(t: &Topology) -> Vec<u16> {
    let mut firsts: Vec<u16> = (0..t.shards.len())
        .filter_map(|s| first_slot(t, s))
        .collect();
    firsts.sort_unstable();
    firsts
}

fn first_slot(t: &Topology, shard: usize) -> Option<u16> {
    t.shards.get(shard)?.slots.first().map(|&(start, _)| start)
}

/// Parses a cursor as Redis does for SCAN: an unsigned 64-bit decimal.
fn parse_cursor(text: &[u8]) -> Option<u64> {
    if text.is_empty() || !text.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(text).ok()?.parse().ok()
}

impl ScanStep {
    /// Rewrites a node's `[cursor, [keys…]]` reply into the client's; None if the reply is not
    /// that shape or the node's cursor does not fit.
    pub(crate) fn rewrite(&self, reply: &[u8]) -> Option<Bytes> {
        let (n, body) = array_body(reply)?;
        if n != 2 {
            return None;
        }
        let parts = elements(body, 2)?;
        let node_cursor = bulk_text(&body[parts[0].clone()]).and_then(parse_cursor)?;
        let cursor = if node_cursor != 0 {
            encode_cursor(self.first_slot, node_cursor)?
        } else {
            match self.next_first_slot {
                Some(next) => encode_cursor(next, 0)?,
                None => 0,
            }
        };
        let keys = &body[parts[1].clone()];
        let mut out = BytesMut::with_capacity(keys.len() + 32);
        encode::array_header(&mut out, 2);
        encode::bulk(&mut out, cursor.to_string().as_bytes());
        out.put_slice(keys);
        Some(out.freeze())
    }
}

/// The payload of a bulk string frame.
fn bulk_text(frame: &[u8]) -> Option<&[u8]> {
    let rest = frame.strip_prefix(b"$")?;
    let cr = rest.iter().position(|&b| b == b'\r')?;
    rest.get(cr + 2..)?.strip_suffix(b"\r\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::topology::{Health, Node, Role, Shard};

    fn topo(ranges: &[&[(u16, u16)]]) -> Topology {
        let nodes = (0..ranges.len())
            .map(|i| Node {
                id: format!("{i:040}"),
                addr: format!("127.0.0.1:{}", 7000 + i).parse().unwrap(),
                endpoint: "127.0.0.1".into(),
                port: 7000 + i as u16,
                role: Role::Primary,
                health: Health::Online,
            })
            .collect();
        let shards = ranges
            .iter()
            .enumerate()
            .map(|(i, r)| Shard {
                primary: i,
                replicas: vec![],
                slots: r.to_vec(),
            })
            .collect();
        Topology::new(nodes, shards).unwrap()
    }

    fn scan(t: &Topology, args: &[&str]) -> Result<ScanPlan, String> {
        let mut raw = Vec::new();
        let mut ranges = Vec::new();
        for a in args {
            ranges.push(raw.len()..raw.len() + a.len());
            raw.extend_from_slice(a.as_bytes());
        }
        let raw = Bytes::from(raw);
        plan(t, &Request::unresolved(&raw, &ranges))
    }

    fn call(p: Result<ScanPlan, String>) -> ScanCall {
        match p {
            Ok(ScanPlan::Call(c)) => c,
            other => panic!("expected a call, got {other:?}"),
        }
    }

    #[test]
    fn cursor_round_trip_and_limits() {
        assert_eq!(encode_cursor(0, 0), Some(0));
        assert_eq!(decode_cursor(0), (0, 0));
        for (slot, c) in [(0, 1), (5461, 12345), (16383, NODE_MAX), (10923, 1 << 40)] {
            let cur = encode_cursor(slot, c).unwrap();
            assert_eq!(decode_cursor(cur), (slot, c));
        }
        assert_eq!(encode_cursor(16383, NODE_MAX), Some(u64::MAX));
        assert_eq!(encode_cursor(1, NODE_MAX + 1), None);
        assert_eq!(encode_cursor(16384, 0), None);
    }

    #[test]
    fn iteration_visits_shards_in_first_slot_order() {
        let t = topo(&[&[(10923, 16383)], &[(0, 5460)], &[(5461, 10922)]]);
        let c = call(scan(&t, &["SCAN", "0", "COUNT", "10"]));
        assert_eq!(c.slot, 0);
        assert_eq!(
            &c.request[..],
            b"*4\r\n$4\r\nSCAN\r\n$1\r\n0\r\n$5\r\nCOUNT\r\n$2\r\n10\r\n"
        );
        assert_eq!(c.step.next_first_slot, Some(5461));
        // The node is mid-way: the client's cursor keeps the shard.
        let out = c
            .step
            .rewrite(b"*2\r\n$2\r\n17\r\n*1\r\n$1\r\na\r\n")
            .unwrap();
        assert_eq!(&out[..], b"*2\r\n$2\r\n17\r\n*1\r\n$1\r\na\r\n");
        // The node is done: the client's cursor moves to the next shard.
        let out = c.step.rewrite(b"*2\r\n$1\r\n0\r\n*0\r\n").unwrap();
        let next = encode_cursor(5461, 0).unwrap();
        assert_eq!(
            out,
            format!("*2\r\n${}\r\n{next}\r\n*0\r\n", next.to_string().len())
        );
        let c = call(scan(&t, &["scan", &next.to_string()]));
        assert_eq!((c.slot, c.step.next_first_slot), (5461, Some(10923)));
        let mid = encode_cursor(10923, 99).unwrap().to_string();
        let c = call(scan(&t, &["scan", &mid, "MATCH", "k*"]));
        assert_eq!(c.slot, 10923);
        assert_eq!(
            &c.request[..],
            b"*4\r\n$4\r\nscan\r\n$2\r\n99\r\n$5\r\nMATCH\r\n$2\r\nk*\r\n"
        );
        assert_eq!(c.step.next_first_slot, None);
        let out = c.step.rewrite(b"*2\r\n$1\r\n0\r\n*0\r\n").unwrap();
        assert_eq!(&out[..], b"*2\r\n$1\r\n0\r\n*0\r\n");
    }

    #[test]
    fn shards_with_split_ranges_and_unserved_slots() {
        // Shard 0 owns 100-199 and 300-399; shard 1 owns 200-299; 0-99 is unserved.
        let t = topo(&[&[(100, 199), (300, 399)], &[(200, 299)]]);
        let c = call(scan(&t, &["SCAN", "0"]));
        assert_eq!((c.slot, c.step.next_first_slot), (100, Some(200)));
        // A cursor naming a slot that lost its shard moves on to the next shard, from its start.
        let gone = encode_cursor(250, 7).unwrap().to_string();
        let t2 = topo(&[&[(100, 199)], &[(300, 399)]]);
        let c = call(scan(&t2, &["SCAN", &gone]));
        assert_eq!((c.slot, c.step.next_first_slot), (300, None));
        assert!(c.request.ends_with(b"$1\r\n0\r\n"));
        let t3 = topo(&[&[(100, 199), (300, 399)]]);
        assert_eq!(scan(&t3, &["SCAN", &gone]), Ok(ScanPlan::Done));
        // A slot that moved to another shard continues there with the same node cursor.
        let c = call(scan(
            &t3,
            &["SCAN", &encode_cursor(300, 9).unwrap().to_string()],
        ));
        assert_eq!((c.slot, c.step.next_first_slot), (100, None));
        assert!(c.request.ends_with(b"$1\r\n9\r\n"));
    }

    #[test]
    fn finished_and_invalid_cursors() {
        let t = topo(&[&[(0, 16383)]]);
        assert_eq!(scan(&t, &["SCAN", "x"]), Err("ERR invalid cursor".into()));
        assert_eq!(scan(&t, &["SCAN", "-1"]), Err("ERR invalid cursor".into()));
        assert_eq!(
            scan(&t, &["SCAN", "18446744073709551616"]),
            Err("ERR invalid cursor".into())
        );
        let t = topo(&[&[(0, 99)]]);
        let past = encode_cursor(500, 3).unwrap().to_string();
        assert_eq!(scan(&t, &["SCAN", &past]), Ok(ScanPlan::Done));
    }

    #[test]
    fn rewrite_rejects_odd_replies() {
        let step = ScanStep {
            first_slot: 0,
            next_first_slot: None,
        };
        assert!(step.rewrite(b"*1\r\n$1\r\n0\r\n").is_none());
        assert!(step.rewrite(b":1\r\n").is_none());
        let huge = format!("*2\r\n$16\r\n{}\r\n*0\r\n", 1u64 << 52);
        assert!(step.rewrite(huge.as_bytes()).is_none());
    }
}
