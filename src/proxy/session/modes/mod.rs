//! The session's connection modes (submodules `client`, `transaction`, `subscribe`, each
//! owning its state) and the plumbing they share: requests answered by a pinned
//! connection (`Pending::Pinned`), request barriers, blocking commands, and RESP3 reshaping of
//! forwarded replies.
//!
//! A pinned request (WATCH, EXEC, a blocking command) runs on another connection than the
//! client's other requests, so it is a barrier both ways: it is sent only once every earlier
//! request has been answered (a pipelined `LPUSH l x` then `BLPOP l 0` must see the push), and
//! nothing after it is sent until it is answered (Redis runs a connection's commands in order,
//! and a blocked connection runs nothing else). A request that has to wait is held here.

pub(super) mod client;
mod subscribe;
mod transaction;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;

use super::{error_frame, Pending, Session};
use crate::backend::{Completion, DurableWait, NodePool, Outcome};
use crate::command::CommandFlags;
use crate::protocol::resp3::{to_resp3, Shape};
use crate::proxy::pinned::{blocking_limit, Job, JobKind, PinContext, PinnedHandle};
use crate::proxy::reshape::shape_for;
use crate::proxy::retry::RetryLane;
use crate::proxy::subscriber::{OVERFLOW_TAG, PUSH_TAG, REFUSED_TAG};
use subscribe::PubSubState;
use transaction::{TxState, Watch};

/// While a request is held, the client's socket is still read (to notice a disconnect) until
/// this much is buffered.
const READ_AHEAD: usize = 1 << 20;

/// Per-session mode state.
#[derive(Default)]
pub(in crate::proxy::session) struct Modes {
    /// Inside MULTI: the queued commands.
    pub(in crate::proxy::session) tx: Option<TxState>,
    /// The pinned connection a WATCH opened.
    pub(in crate::proxy::session) watch: Option<Watch>,
    /// The slot every key of the current transaction (WATCH included) must hash to.
    pub(in crate::proxy::session) tx_slot: Option<u16>,
    /// Subscriptions, while there are any.
    pub(in crate::proxy::session) pubsub: Option<PubSubState>,
    /// A request waiting for every earlier one to be answered.
    held: Option<(Bytes, Vec<Range<usize>>)>,
    /// A pinned request is outstanding: nothing more is sent until it is answered.
    barrier: bool,
    /// RESP3 clients: the shape of each forwarded request's reply, by sequence number.
    notes: VecDeque<(u64, Shape)>,
    /// Requests being re-sent after a failure or redirect; new requests wait for them.
    pub(in crate::proxy::session) retries: RetryLane,
    /// Writes done on a dedicated connection since the last WAIT: the slot (None: keyless)
    /// and the node it was sent to. A WAIT on the shared connections cannot see them (Redis
    /// counts from the offset of the asking connection's own last write), so WAIT checks
    /// these nodes' replication offsets instead.
    pub(in crate::proxy::session) pinned_writes: Vec<(Option<u16>, SocketAddr)>,
    /// Transactions sent on a shared connection: sequence number and frames owed.
    pub(in crate::proxy::session) shared_execs: Vec<(u64, u32)>,
}

impl Modes {
    /// True while a request cannot be sent yet: one is held, a barrier is up, or retries
    /// are being re-sent.
    fn stalled(&self) -> bool {
        self.held.is_some() || self.barrier || self.retries.is_busy()
    }

    /// True while the client socket should still be read.
    pub(in crate::proxy::session) fn may_read(&self, buffered: usize) -> bool {
        !self.stalled() || buffered < READ_AHEAD
    }

    /// True while the client has subscriptions.
    pub(in crate::proxy::session) fn subscribed(&self) -> bool {
        self.pubsub.is_some()
    }

    /// The reply for sequence `seq` in the client's protocol.
    pub(in crate::proxy::session) fn reshape_reply(&mut self, seq: u64, frame: Bytes) -> Bytes {
        while self.notes.front().is_some_and(|&(s, _)| s < seq) {
            self.notes.pop_front();
        }
        match self.notes.front() {
            Some(&(s, shape)) if s == seq => {
                self.notes.pop_front();
                to_resp3(&frame, shape).unwrap_or(frame)
            }
            _ => frame,
        }
    }

    /// Everything buffered was written to the client.
    pub(in crate::proxy::session) fn flushed(&mut self) {
        if let Some(p) = &mut self.pubsub {
            p.flushed();
        }
    }

    /// Gives back scratch capacity while the session rests (nothing is in flight).
    pub(in crate::proxy::session) fn release(&mut self) {
        self.notes = VecDeque::new();
    }

    /// Drops every mode (RESET): transaction, watch, subscriptions, held request.
    pub(in crate::proxy::session) fn reset(&mut self) {
        self.tx = None;
        self.watch = None;
        self.tx_slot = None;
        self.pubsub = None;
    }
}

impl Session {
    /// True when a request cannot be sent yet.
    pub(in crate::proxy::session) fn stalled(&self) -> bool {
        self.modes.stalled()
    }

    /// Sends the held request once everything before it has been answered.
    pub(in crate::proxy::session) async fn resume_held(&mut self) {
        if !self.pipe.is_empty() || self.modes.barrier {
            return;
        }
        if let Some((raw, args)) = self.modes.held.take() {
            self.dispatch(raw, Some(&args)).await;
        }
    }

    /// Holds `raw` when earlier requests are still unanswered; true when held.
    pub(in crate::proxy::session) fn hold_if_busy(
        &mut self,
        raw: &Bytes,
        args: &[Range<usize>],
    ) -> bool {
        if self.pipe.is_empty() {
            return false;
        }
        self.modes.held = Some((raw.clone(), args.to_vec()));
        true
    }

    /// Handles completions that bypass redirects and retries; returns the others.
    pub(in crate::proxy::session) fn special_completion(
        &mut self,
        c: Completion,
    ) -> Option<Completion> {
        if c.tag == PUSH_TAG {
            if let Outcome::Reply(frame, _) = c.outcome {
                self.on_push(frame);
            }
            return None;
        }
        if c.tag == OVERFLOW_TAG {
            self.on_overflow();
            return None;
        }
        if c.tag == REFUSED_TAG {
            self.on_refused(&c.raw);
            return None;
        }
        let idx = self.pipe.index(c.tag.seq)?;
        if !matches!(self.pipe.pending.get(idx), Some(Pending::Pinned)) {
            return Some(c);
        }
        let execs = &mut self.modes.shared_execs;
        let frame = match execs.iter().position(|&(seq, _)| seq == c.tag.seq) {
            Some(at) => {
                let (_, replies) = execs.swap_remove(at);
                let router = &self.shared.router;
                if let Outcome::Failed(err) = &c.outcome {
                    router.note_failure(err);
                }
                let (frame, refresh) = crate::proxy::recovery::exec_reply(c.outcome, replies);
                if refresh {
                    router.request_refresh();
                }
                frame
            }
            None => match c.outcome {
                Outcome::Reply(frame, _) => frame,
                Outcome::Failed(e) => error_frame(&format!("ERR slotway: {e}")),
            },
        };
        self.set_ready(idx, frame);
        self.modes.barrier = false;
        None
    }

    /// Queues a request for the pinned connection `handle`; later requests wait for it.
    pub(in crate::proxy::session) fn send_pinned(
        &mut self,
        handle: &PinnedHandle,
        raw: Bytes,
        kind: JobKind,
    ) {
        let tag = self.push_pending(Pending::Pinned);
        self.modes.barrier = true;
        let reply = self.reply_to(tag);
        handle.send(Job { raw, kind, reply });
    }

    /// What a pinned connection needs from the proxy.
    pub(in crate::proxy::session) fn pin_context(&self) -> PinContext {
        PinContext {
            pool: self.shared.dedicated.clone(),
            router: self.shared.router.clone(),
            retry_deadline: crate::config::ms(self.shared.config.cluster.retry_deadline_ms),
        }
    }

    /// The primary owning `slot` (any primary for None), or the client's error text.
    pub(in crate::proxy::session) fn pin_addr(
        &self,
        slot: Option<u16>,
    ) -> Result<SocketAddr, &'static str> {
        self.primary_pool(slot).map(|p| p.addr())
    }

    /// The pool of the primary owning `slot` (any primary for None), or the client's error.
    pub(in crate::proxy::session) fn primary_pool(
        &self,
        slot: Option<u16>,
    ) -> Result<Arc<NodePool>, &'static str> {
        let router = &self.shared.router;
        let table = router.table();
        let Some(t) = table.as_ref() else {
            router.request_refresh();
            return Err("CLUSTERDOWN slotway has no cluster topology yet (no seed reachable)");
        };
        let pool = match slot {
            Some(s) => t.primary_for_slot(s),
            None => t.any_primary(router.next_rotation()),
        };
        pool.cloned().ok_or_else(|| {
            router.request_refresh();
            "CLUSTERDOWN Hash slot not served"
        })
    }

    /// A blocking command: its own dedicated connection, so it never stalls other clients.
    pub(in crate::proxy::session) fn blocking(
        &mut self,
        slot: Option<u16>,
        raw: Bytes,
        args: &[Range<usize>],
    ) {
        if self.hold_if_busy(&raw, args) {
            return;
        }
        let addr = match self.pin_addr(slot) {
            Ok(a) => a,
            Err(msg) => return self.push_error(msg),
        };
        let words: Vec<&[u8]> = args.iter().map(|r| &raw[r.clone()]).collect();
        let name = String::from_utf8_lossy(words[0]).to_ascii_lowercase();
        let margin = crate::config::ms(self.shared.config.backend.command_timeout_ms);
        let limit = blocking_limit(&name, &words, margin);
        let writes = {
            let table = self.shared.router.commands();
            table
                .resolve(&raw, args)
                .is_some_and(|spec| spec.flags.contains(CommandFlags::WRITE))
        };
        // A pop that times out wrote nothing: its null reply needs no confirmation.
        let durable = if writes {
            self.note_pinned_write(slot, addr);
            self.durable_wait().map(DurableWait::unless_null)
        } else {
            None
        };
        let handle = PinnedHandle::open(self.pin_context(), addr, self.client.proto());
        self.send_pinned(&handle, raw, JobKind::Blocking { limit, durable });
    }

    /// Remembers a write sent on a dedicated connection, for the client's next WAIT.
    pub(in crate::proxy::session) fn note_pinned_write(
        &mut self,
        slot: Option<u16>,
        addr: SocketAddr,
    ) {
        let entry = (slot, addr);
        if !self.modes.pinned_writes.contains(&entry) {
            self.modes.pinned_writes.push(entry);
        }
    }

    /// In durable-write mode, the `WAIT` that must confirm a write on a dedicated connection.
    pub(in crate::proxy::session) fn durable_wait(&self) -> Option<DurableWait> {
        let cluster = &self.shared.config.cluster;
        cluster
            .durable_writes
            .then(|| DurableWait::new(cluster.durable_replicas, cluster.durable_timeout_ms))
    }

    /// A script for a RESP3 client. Its reply depends on the protocol of the connection that
    /// runs it (a Lua boolean, a `{double=…}` or `{map=…}` table become RESP3 types, and
    /// cannot be told apart from strings, integers and arrays once sent as RESP2), so it runs
    /// on a dedicated connection speaking RESP3, with the ordering of a blocking command.
    pub(in crate::proxy::session) fn script_resp3(
        &mut self,
        slot: Option<u16>,
        readonly: bool,
        raw: Bytes,
        args: &[Range<usize>],
    ) {
        if self.hold_if_busy(&raw, args) {
            return;
        }
        let addr = match self.pin_addr(slot) {
            Ok(a) => a,
            Err(msg) => return self.push_error(msg),
        };
        let limit = Some(crate::config::ms(
            self.shared.config.backend.command_timeout_ms,
        ));
        let reload = self
            .shared
            .scripts
            .body_for_evalsha(&raw, self.shared.scan_limits);
        let durable = if readonly {
            None
        } else {
            self.note_pinned_write(slot, addr);
            self.durable_wait()
        };
        let handle = PinnedHandle::open(self.pin_context(), addr, 3);
        let kind = JobKind::Script {
            limit,
            reload,
            durable,
        };
        self.send_pinned(&handle, raw, kind);
    }

    /// The RESP3 shape of a request's reply.
    pub(in crate::proxy::session) fn reshape(&self, raw: &[u8], args: &[Range<usize>]) -> Shape {
        let table = self.shared.router.commands();
        table
            .resolve(raw, args)
            .map_or(Shape::Keep, |spec| shape_for(spec, raw, args))
    }

    /// Remembers the reply shape of the forwarded request at `seq`, if one was queued there.
    pub(in crate::proxy::session) fn note_shape(&mut self, seq: u64, shape: Shape) {
        let Some(idx) = self.pipe.index(seq) else {
            return;
        };
        match self.pipe.pending.get(idx) {
            None | Some(Pending::Ready(_) | Pending::Pinned) => {}
            Some(_) => self.modes.notes.push_back((seq, shape)),
        }
    }
}

/// Waits until the client socket takes more bytes; a subscriber whose backlog overflowed is
/// cut off instead.
pub(in crate::proxy::session) async fn writable(
    stream: &crate::tls::ClientStream,
    backlog: Option<&crate::proxy::subscriber::Backlog>,
) -> std::io::Result<()> {
    let Some(backlog) = backlog else {
        return stream.writable().await;
    };
    tokio::select! {
        r = stream.writable() => r,
        _ = backlog.overflowed() => Err(std::io::Error::other(
            "subscriber fell behind by more than client.pubsub_buffer_bytes",
        )),
    }
}
