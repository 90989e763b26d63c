//! `WAIT` for writes that ran on dedicated connections (a WATCH'd or RESP3 transaction, a
//! blocking pop or move, a RESP3 client's script).
//!
//! Redis's WAIT counts the replicas that acknowledged the asking connection's own last write
//! (its `woff`). A WAIT sent on a shared connection therefore knows nothing of a write made
//! on a dedicated one: with no write of its own it answers at once with every connected
//! replica, even frozen ones. For those nodes the proxy instead reads the primary's
//! replication offset with `ROLE` when the WAIT arrives — the write came before, so the
//! offset covers it — and polls `ROLE` until enough replicas' acknowledged offsets reach it,
//! or the WAIT's timeout passes. Replicas acknowledge about once a second by themselves, so
//! such a WAIT may take up to that long; it never counts a replica that lacks the write.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::backend::{BackendRequest, Completion, NodePool, Outcome, ReplyTo, Tag};
use crate::protocol::{encode, ReplyKind};

/// Pause between two `ROLE` reads of one node.
const POLL: Duration = Duration::from_millis(20);

/// A WAIT answered from the primaries' replication offsets.
pub struct OffsetWait {
    /// The primaries whose replicas must have the client's writes.
    pub nodes: Vec<Arc<NodePool>>,
    /// Replicas asked for.
    pub replicas: i64,
    /// How long to wait for them.
    pub timeout: Duration,
    /// The client's connection choice in each pool.
    pub affinity: usize,
}

/// What a primary's `ROLE` says about replication.
#[derive(Debug, PartialEq, Eq)]
struct Role {
    /// The primary's replication offset.
    offset: u64,
    /// Each replica's acknowledged offset.
    acked: Vec<u64>,
}

impl OffsetWait {
    /// Runs the WAIT and sends its reply (the smallest count over the nodes) to `reply`.
    pub async fn run(self, reply: ReplyTo) {
        let (frame, kind) = match self.count().await {
            Ok(n) => {
                let mut out = BytesMut::new();
                encode::integer(&mut out, n);
                (out.freeze(), ReplyKind::Other)
            }
            Err(msg) => {
                let mut out = BytesMut::new();
                encode::error(&mut out, &msg);
                (out.freeze(), ReplyKind::Error)
            }
        };
        let _ = reply.tx.send(Completion {
            tag: reply.tag,
            raw: Bytes::new(),
            outcome: Outcome::Reply(frame, kind),
        });
    }

    async fn count(&self) -> Result<i64, String> {
        let deadline = Instant::now() + self.timeout;
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut least: Option<i64> = None;
        for pool in &self.nodes {
            let mut target = None;
            let acked = loop {
                let role = role(pool, self.affinity, &tx, &mut rx).await?;
                let target = *target.get_or_insert(role.offset);
                let acked = role.acked.iter().filter(|&&a| a >= target).count() as i64;
                let now = Instant::now();
                if acked >= self.replicas || now >= deadline {
                    break acked;
                }
                tokio::time::sleep(POLL.min(deadline - now)).await;
            };
            least = Some(least.map_or(acked, |l| l.min(acked)));
        }
        Ok(least.unwrap_or(0))
    }
}

/// One `ROLE` through the node's shared connection.
async fn role(
    pool: &NodePool,
    affinity: usize,
    tx: &mpsc::UnboundedSender<Completion>,
    rx: &mut mpsc::UnboundedReceiver<Completion>,
) -> Result<Role, String> {
    let addr = pool.addr();
    let fail = |why: &str| {
        format!("ERR slotway: WAIT could not read the replication offset of {addr}: {why}")
    };
    let req = BackendRequest {
        raw: Bytes::from_static(b"*1\r\n$4\r\nROLE\r\n"),
        asking: false,
        durable: false,
        replies: 1,
        reply: ReplyTo {
            tx: tx.clone(),
            tag: Tag { seq: 0, part: 0 },
        },
    };
    pool.send(req, affinity).await;
    let Some(done) = rx.recv().await else {
        return Err(fail("no answer"));
    };
    match done.outcome {
        Outcome::Failed(e) => Err(fail(&e.to_string())),
        Outcome::Reply(frame, ReplyKind::Error) => {
            Err(fail(String::from_utf8_lossy(&frame[1..]).trim_end()))
        }
        Outcome::Reply(frame, _) => parse_role(&frame).ok_or_else(|| fail("not a primary")),
    }
}

/// Reads a primary's `ROLE` reply: `["master", offset, [[ip, port, acked offset] …]]`.
fn parse_role(frame: &[u8]) -> Option<Role> {
    let mut r = Reader { buf: frame, at: 0 };
    if r.header(b'*')? != 3 || !r.bulk()?.eq_ignore_ascii_case(b"master") {
        return None;
    }
    let offset = u64::try_from(r.header(b':')?).ok()?;
    let replicas = r.header(b'*')?;
    let mut acked = Vec::new();
    for _ in 0..replicas {
        if r.header(b'*')? != 3 {
            return None;
        }
        r.bulk()?;
        r.bulk()?;
        acked.push(std::str::from_utf8(r.bulk()?).ok()?.parse().ok()?);
    }
    Some(Role { offset, acked })
}

/// A cursor over a RESP2 reply whose shape is known.
struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn line(&mut self) -> Option<&'a [u8]> {
        let rest = self.buf.get(self.at..)?;
        let end = rest.windows(2).position(|w| w == b"\r\n")?;
        self.at += end + 2;
        Some(&rest[..end])
    }

    /// A `<kind><integer>` line's integer.
    fn header(&mut self, kind: u8) -> Option<i64> {
        let line = self.line()?;
        let (&first, digits) = line.split_first()?;
        if first != kind {
            return None;
        }
        std::str::from_utf8(digits).ok()?.parse().ok()
    }

    fn bulk(&mut self) -> Option<&'a [u8]> {
        let len = usize::try_from(self.header(b'$')?).ok()?;
        let data = self.buf.get(self.at..self.at.checked_add(len)?)?;
        self.at += len;
        if self.buf.get(self.at..self.at + 2)? != b"\r\n" {
            return None;
        }
        self.at += 2;
        Some(data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_of_a_primary_is_read() {
        let frame = b"*3\r\n$6\r\nmaster\r\n:3129659\r\n*2\r\n*3\r\n$9\r\n127.0.0.1\r\n$4\r\n9001\r\n$7\r\n3129242\r\n*3\r\n$9\r\n127.0.0.1\r\n$4\r\n9002\r\n$7\r\n3129543\r\n";
        assert_eq!(
            parse_role(frame),
            Some(Role {
                offset: 3129659,
                acked: vec![3129242, 3129543]
            })
        );
        let alone = b"*3\r\n$6\r\nmaster\r\n:0\r\n*0\r\n";
        assert_eq!(
            parse_role(alone),
            Some(Role {
                offset: 0,
                acked: vec![]
            })
        );
    }

    #[test]
    fn a_replica_or_garbage_is_refused() {
        let replica =
            b"*5\r\n$5\r\nslave\r\n$9\r\n127.0.0.1\r\n:9000\r\n$9\r\nconnected\r\n:3167038\r\n";
        assert_eq!(parse_role(replica), None);
        assert_eq!(
            parse_role(b"*3\r\n$6\r\nmaster\r\n:12\r\n*1\r\n*3\r\n$3\r\n"),
            None
        );
        assert_eq!(parse_role(b""), None);
    }
}
