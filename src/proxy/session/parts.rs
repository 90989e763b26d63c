//! Fanned-out requests: sending a request's parts, the parts bound for one node together as
//! one backend request, and splitting that request's run of replies back into one completion
//! per part, so redirects, retries and the merge see each part as if it had been sent alone.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use super::{error_frame, Pending, Session};
use crate::backend::{BackendRequest, Completion, NodePool, Outcome, Tag};
use crate::command::Request;
use crate::protocol::ReplyKind;
use crate::proxy::classify::Fan;
use crate::proxy::fanout::{self, Prepared, WaitArgs};
use crate::proxy::replication::OffsetWait;

/// Parts of a fanned-out request sent to one node as one request: their numbers and bytes.
struct Batch {
    pool: Arc<NodePool>,
    /// A durable part, sent alone with its WAIT.
    durable: bool,
    members: Vec<(u32, Bytes)>,
}

impl Session {
    /// Plans a fanned-out request, sends its parts, and queues its pending state.
    pub(super) async fn fanout(&mut self, fan: Fan, raw: Bytes, args: &[std::ops::Range<usize>]) {
        // The session let go of the command table before this await point: planning needs
        // only the bytes.
        let req = Request::unresolved(&raw, args);
        if matches!(fan, Fan::Wait) && !self.modes.pinned_writes.is_empty() {
            match self.offset_wait(&req) {
                Some(Ok(wait)) => {
                    let tag = self.push_pending(Pending::Pinned);
                    let reply = self.reply_to(tag);
                    tokio::spawn(wait.run(reply));
                    return;
                }
                Some(Err(msg)) => return self.push_reply(error_frame(msg)),
                None => {}
            }
        }
        let tcp_port = self.stream.local_addr().map_or(0, |a| a.port());
        let written: Vec<std::net::SocketAddr> = match fan {
            Fan::Wait => self.written.drain(..).map(|p| p.addr()).collect(),
            _ => Vec::new(),
        };
        let at = fanout::At {
            written: &written,
            tcp_port,
            resp3: self.client.resp3(),
        };
        let (state, sends) = match fanout::prepare(fan, &self.shared, &req, &self.keys, at) {
            Prepared::Reply(reply) => return self.push_reply(reply),
            Prepared::Send(state, sends) => (state, sends),
        };
        let seq = self.push_pending(Pending::Fanout(state)).seq;
        let idx = self.pipe.len() - 1;
        // The parts bound for one node go as one request: one queue message, one reply slot
        // and one completion instead of one per slot. A durable part goes alone, since each
        // carries its own WAIT.
        let mut batches: Vec<Batch> = Vec::new();
        for (part, send) in sends.into_iter().enumerate() {
            let part = part as u32;
            let durable = send.write && self.shared.config.cluster.durable_writes;
            if send.write {
                self.note_write(&send.pool);
                if let Some(w) = self.waiting_part(idx, part) {
                    w.durable = durable;
                }
            }
            let joins = batches
                .iter_mut()
                .find(|b| !durable && !b.durable && Arc::ptr_eq(&b.pool, &send.pool));
            match joins {
                Some(b) => b.members.push((part, send.raw)),
                None => batches.push(Batch {
                    pool: send.pool,
                    durable,
                    members: vec![(part, send.raw)],
                }),
            }
        }
        for Batch {
            pool,
            durable,
            mut members,
        } in batches
        {
            let (raw, replies, part) = if members.len() == 1 {
                let (part, raw) = members.swap_remove(0);
                (raw, 1, part)
            } else {
                let mut raw = BytesMut::with_capacity(members.iter().map(|m| m.1.len()).sum());
                for (_, r) in &members {
                    raw.extend_from_slice(r);
                }
                let lengths = members.iter().map(|(p, r)| (*p, r.len())).collect();
                let Some(Pending::Fanout(f)) = self.pipe.pending.get_mut(idx) else {
                    return;
                };
                let group = f.add_group(lengths);
                (raw.freeze(), members.len() as u32, Tag::GROUP | group)
            };
            let req = BackendRequest {
                raw,
                asking: false,
                durable,
                replies,
                reply: self.reply_to(Tag { seq, part }),
            };
            pool.send(req, self.id).await;
        }
    }

    /// A `WAIT numreplicas timeout` after writes on dedicated connections: answered from the
    /// replication offsets of every primary written to since the last WAIT (shared and
    /// dedicated connections alike), with the timeout capped as for a WAIT on the shared
    /// connections. None for malformed arguments, which a node answers with Redis's error.
    /// A WAITAOF cannot be answered so (ROLE tells nothing of fsyncs): it gets an error.
    fn offset_wait(&mut self, req: &Request<'_>) -> Option<Result<OffsetWait, &'static str>> {
        let cap = self.shared.config.backend.command_timeout_ms / 2;
        let wait = WaitArgs::parse(req, cap)?;
        let &[replicas] = &wait.counts[..] else {
            return Some(Err("ERR slotway: WAITAOF cannot confirm writes this client made on dedicated connections (EXEC after WATCH or from a RESP3 client, blocking commands, RESP3 scripts); use WAIT"));
        };
        let timeout = wait.timeout_ms;
        let router = &self.shared.router;
        let mut nodes: Vec<Arc<NodePool>> = self.written.drain(..).collect();
        {
            let table = router.table();
            for (slot, addr) in self.modes.pinned_writes.drain(..) {
                // The slot's owner now: a MOVED followed on the dedicated connection wrote there.
                let owner = table.as_ref().and_then(|t| match slot {
                    Some(s) => t.primary_for_slot(s).cloned(),
                    None => t.primaries().iter().find(|p| p.addr() == addr).cloned(),
                });
                // A node that is no longer a member cannot be asked: say so rather than
                // count replicas that may lack the write.
                let Some(pool) = owner.or_else(|| router.pool_for_addr(addr)) else {
                    return Some(Err("ERR slotway: WAIT cannot confirm a write made on a node that has left the cluster's topology"));
                };
                if !nodes.iter().any(|p| Arc::ptr_eq(p, &pool)) {
                    nodes.push(pool);
                }
            }
        }
        Some(Ok(OffsetWait {
            nodes,
            replicas: i64::try_from(replicas).unwrap_or(i64::MAX),
            timeout: crate::config::ms(timeout),
            affinity: self.id,
        }))
    }

    /// Splits the answer to a group of parts sent to one node together into one completion
    /// per part, each then handled (redirected, retried, merged) as if sent alone.
    pub(super) fn on_group_completion(&mut self, group: u32, c: Completion) {
        let seq = c.tag.seq;
        let idx = seq
            .checked_sub(self.pipe.base_seq)
            .and_then(|i| usize::try_from(i).ok());
        let members = match idx.and_then(|i| self.pipe.pending.get_mut(i)) {
            Some(Pending::Fanout(f)) => f.take_group(group),
            _ => return,
        };
        let mut at = 0;
        let mut frames = match c.outcome {
            Outcome::Reply(frames, _) => Ok(frames),
            Outcome::Failed(err) => Err(err),
        };
        let mut scanner = crate::protocol::ResponseScanner::new(crate::backend::MAX_REPLY_DEPTH);
        for (part, len) in members {
            let raw = c.raw.slice(at..(at + len).min(c.raw.len()));
            at += len;
            let outcome = match &mut frames {
                Err(err) => Outcome::Failed(err.clone()),
                // The connection counted these frames already; one that is not there is a
                // broken promise, answered as an error rather than left hanging.
                Ok(rest) => match scanner.scan(rest) {
                    Ok(Some(r)) => Outcome::Reply(rest.split_to(r.len), r.kind),
                    _ => Outcome::Reply(
                        error_frame("ERR slotway: a node's reply to a batch was cut short"),
                        ReplyKind::Error,
                    ),
                },
            };
            self.on_completion(Completion {
                tag: Tag { seq, part },
                raw,
                outcome,
            });
        }
    }
}
