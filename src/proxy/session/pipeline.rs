//! The pipeline: one entry per client request in request order, the sequence numbers that
//! tag each request's completion, and in-order release of the replies. Replies arrive in
//! any order (different nodes answer at different speeds); only the front of the queue is
//! ever written, so a client sees its replies in the order it asked.
//!
//! This module owns the queue, the completion channel and the byte counts of what is held
//! (replies not yet written, requests not yet answered); it knows nothing of sockets,
//! routing or recovery.

use std::collections::VecDeque;

use bytes::Bytes;
use tokio::sync::mpsc;

use super::inflight::RequestBytes;
use super::Session;
use crate::backend::{Completion, ReplyTo, Tag};
use crate::proxy::fanout::Fanout;
use crate::proxy::recovery::Waiting;

/// A request awaiting its reply, or a reply waiting for earlier ones to be written.
pub(super) enum Pending {
    /// Forwarded; its recovery state until the reply is final.
    Waiting(Waiting),
    /// Answered; written once every earlier entry is.
    Ready(Bytes),
    /// A request split into parts (`Tag::part`), each with its own retry state.
    Fanout(Box<Fanout>),
    /// Answered by the session's pinned connection, without redirects or retries.
    Pinned,
}

/// The session's queue of requests in flight, in request order.
#[derive(Default)]
pub(super) struct Pipeline {
    /// One entry per request (or per pinned job), in request order.
    pub(super) pending: VecDeque<Pending>,
    /// Sequence number of `pending[0]`.
    pub(super) base_seq: u64,
    /// Bytes of replies in `pending` not yet moved to the write buffer (ready ones, and
    /// fan-out parts waiting for the rest): replies piled up behind a slow request count
    /// against the output limit together with the write buffer, as everything queued for a
    /// Redis client does.
    pub(super) queued: usize,
    /// Bytes of requests not yet answered to the client; reading pauses past the bound.
    pub(super) requests: RequestBytes,
    /// The completion channel, created on the first forwarded request so an idle client
    /// costs no channel memory.
    tx: Option<mpsc::UnboundedSender<Completion>>,
    rx: Option<mpsc::UnboundedReceiver<Completion>>,
}

impl Pipeline {
    /// The sequence number the next entry gets.
    #[inline]
    pub(super) fn next_seq(&self) -> u64 {
        self.base_seq + self.pending.len() as u64
    }

    /// Entries in flight.
    #[inline]
    pub(super) fn len(&self) -> usize {
        self.pending.len()
    }

    /// True when nothing is in flight.
    #[inline]
    pub(super) fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Queues an entry; its tag routes the completion back to it.
    pub(super) fn push(&mut self, p: Pending) -> Tag {
        let seq = self.next_seq();
        self.pending.push_back(p);
        Tag { seq, part: 0 }
    }

    /// Queues a reply made by the proxy behind the entries still in flight.
    pub(super) fn push_ready(&mut self, reply: Bytes) {
        self.queued += reply.len();
        self.push(Pending::Ready(reply));
    }

    /// The queue position sequence number `seq` has (or had: entries may have been
    /// discarded); None once it has been written.
    #[inline]
    pub(super) fn index(&self, seq: u64) -> Option<usize> {
        usize::try_from(seq.checked_sub(self.base_seq)?).ok()
    }

    /// The retry state of `pending[idx]` (part `part` of a fan-out) while it awaits a reply.
    pub(super) fn waiting_part(&mut self, idx: usize, part: u32) -> Option<&mut Waiting> {
        match self.pending.get_mut(idx)? {
            Pending::Waiting(w) => Some(w),
            Pending::Fanout(f) => f.waiting(part),
            Pending::Ready(_) | Pending::Pinned => None,
        }
    }

    /// Records the final reply of `pending[idx]` (or of one of its parts).
    pub(super) fn finish(&mut self, idx: usize, part: u32, frame: Bytes) {
        let reply = match &mut self.pending[idx] {
            Pending::Fanout(f) => {
                let before = f.held_bytes();
                let merged = f.complete(part, frame);
                self.queued = self.queued.saturating_sub(before) + f.held_bytes();
                match merged {
                    Some(merged) => merged,
                    None => return,
                }
            }
            _ => frame,
        };
        self.set_ready(idx, reply);
    }

    /// Makes `reply` the answer of `pending[idx]`, to be written once those before it are.
    pub(super) fn set_ready(&mut self, idx: usize, reply: Bytes) {
        self.queued += reply.len();
        self.pending[idx] = Pending::Ready(reply);
    }

    /// Takes the front reply if it is ready, with its sequence number.
    #[inline]
    pub(super) fn pop_ready(&mut self) -> Option<(u64, Bytes)> {
        if !matches!(self.pending.front(), Some(Pending::Ready(_))) {
            return None;
        }
        let Some(Pending::Ready(frame)) = self.pending.pop_front() else {
            return None;
        };
        let seq = self.base_seq;
        self.queued = self.queued.saturating_sub(frame.len());
        self.base_seq += 1;
        self.requests.written(self.base_seq);
        Some((seq, frame))
    }

    /// Where the completion of the entry tagged `tag` goes; the channel is made on first use.
    pub(super) fn reply_to(&mut self, tag: Tag) -> ReplyTo {
        let tx = match &self.tx {
            Some(tx) => tx.clone(),
            None => {
                let (tx, rx) = mpsc::unbounded_channel();
                self.rx = Some(rx);
                self.tx.insert(tx).clone()
            }
        };
        ReplyTo { tx, tag }
    }

    /// Waits for completions; forever while the session has never forwarded anything.
    pub(super) async fn recv(&mut self, out: &mut Vec<Completion>) -> usize {
        match &mut self.rx {
            Some(rx) => rx.recv_many(out, 256).await,
            None => std::future::pending().await,
        }
    }

    /// True when nothing is queued and no one but this session can send it a completion.
    pub(super) fn quiescent(&self) -> bool {
        self.pending.is_empty()
            && self.tx.as_ref().map_or(true, |tx| tx.strong_count() == 1)
            && self.rx.as_ref().map_or(true, |rx| rx.is_empty())
    }

    /// Drops every entry (the client is being cut off): nothing more will be written.
    pub(super) fn discard(&mut self) {
        self.pending.clear();
        self.queued = 0;
        self.requests = RequestBytes::default();
    }

    /// Gives back the queue's memory and the channel; both are made again on first use.
    pub(super) fn release(&mut self) {
        let base_seq = self.base_seq;
        *self = Self {
            base_seq,
            ..Self::default()
        };
    }
}

impl Session {
    /// Queues an entry in the pipeline.
    pub(super) fn push_pending(&mut self, p: Pending) -> Tag {
        self.pipe.push(p)
    }

    /// Where the completion for `tag` goes.
    pub(super) fn reply_to(&mut self, tag: Tag) -> ReplyTo {
        self.pipe.reply_to(tag)
    }

    /// The retry state of `pending[idx]` (part `part`), if it still awaits a reply.
    pub(super) fn waiting_part(&mut self, idx: usize, part: u32) -> Option<&mut Waiting> {
        self.pipe.waiting_part(idx, part)
    }

    /// Makes `reply` the answer of `pending[idx]`.
    pub(super) fn set_ready(&mut self, idx: usize, reply: Bytes) {
        self.pipe.set_ready(idx, reply);
    }

    /// Queues a reply made by the proxy; with nothing ahead of it, it goes straight out.
    pub(super) fn push_reply(&mut self, reply: Bytes) {
        if self.pipe.is_empty() {
            self.io.wbuf.extend_from_slice(&reply);
        } else {
            self.pipe.push_ready(reply);
        }
    }

    /// Queues an error reply made by the proxy.
    pub(super) fn push_error(&mut self, msg: &str) {
        self.push_reply(super::error_frame(msg));
    }

    /// Moves every reply at the front of the pipeline that is ready into the write buffer,
    /// in the client's protocol.
    pub(super) fn collect_ready(&mut self) {
        while let Some((seq, frame)) = self.pipe.pop_ready() {
            self.metrics.replied(seq, frame.first().copied());
            let frame = self.modes.reshape_reply(seq, frame);
            self.io.wbuf.extend_from_slice(&frame);
        }
    }
}
