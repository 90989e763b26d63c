//! The client's subscriptions as a single Redis would see them.
//!
//! The session keeps the channel, pattern and shard-channel sets and writes every
//! (un)subscribe confirmation itself, with the counts one Redis would report (channels plus
//! patterns; shard channels on their own), while the subscriber task (`proxy::subscriber`)
//! mirrors the sets onto dedicated backend connections. A subscribe's confirmation is sent
//! only once the node has confirmed the subscription; when it cannot be put in place the
//! client gets an error instead and the names are dropped from the sets again
//! ([`Session::on_refused`]), so a confirmed subscription is never a silent no-op.

use std::collections::BTreeSet;
use std::ops::Range;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use crate::cluster::slot::key_slot;
use crate::protocol::{encode, resp3::push_form};
use crate::proxy::classify::{Decision, LocalCmd};
use crate::proxy::session::{Pending, Session};
use crate::proxy::subscriber::{Backlog, Kind, Subscriber, PUSH_TAG};

/// What a subscribed client has.
#[derive(Debug)]
pub(in crate::proxy::session) struct PubSubState {
    channels: BTreeSet<Bytes>,
    patterns: BTreeSet<Bytes>,
    shard: BTreeSet<Bytes>,
    task: Subscriber,
    /// Message bytes moved to the client's buffer since the last flush.
    unacked: usize,
}

impl PubSubState {
    /// Counts (channels, patterns, shard channels) for CLIENT INFO.
    pub(in crate::proxy::session) fn counts(&self) -> (usize, usize, usize) {
        (self.channels.len(), self.patterns.len(), self.shard.len())
    }

    /// The message backlog, watched while waiting to write to the client.
    pub(in crate::proxy::session) fn backlog(&self) -> Arc<Backlog> {
        self.task.backlog().clone()
    }

    /// Everything buffered reached the client: release that much backlog.
    pub(in crate::proxy::session) fn flushed(&mut self) {
        if self.unacked > 0 {
            self.task.backlog().ack(self.unacked);
            self.unacked = 0;
        }
    }

    fn set(&mut self, kind: Kind) -> &mut BTreeSet<Bytes> {
        match kind {
            Kind::Channel => &mut self.channels,
            Kind::Pattern => &mut self.patterns,
            Kind::Shard => &mut self.shard,
        }
    }

    /// The count Redis reports after a command of `kind`.
    fn count(&self, kind: Kind) -> usize {
        match kind {
            Kind::Shard => self.shard.len(),
            _ => self.channels.len() + self.patterns.len(),
        }
    }

    /// True when the client is still subscribed to what message `frame` was sent for.
    fn wants(&self, frame: &[u8]) -> bool {
        let (set, prefix): (&BTreeSet<Bytes>, &[u8]) =
            if frame.starts_with(b"*3\r\n$7\r\nmessage\r\n") {
                (&self.channels, b"*3\r\n$7\r\nmessage\r\n")
            } else if frame.starts_with(b"*4\r\n$8\r\npmessage\r\n") {
                (&self.patterns, b"*4\r\n$8\r\npmessage\r\n")
            } else if frame.starts_with(b"*3\r\n$8\r\nsmessage\r\n") {
                (&self.shard, b"*3\r\n$8\r\nsmessage\r\n")
            } else {
                return true;
            };
        bulk_at(&frame[prefix.len()..]).map_or(true, |name| set.contains(name))
    }

    fn is_empty(&self) -> bool {
        self.channels.is_empty() && self.patterns.is_empty() && self.shard.is_empty()
    }
}

impl Session {
    /// `(S|P)SUBSCRIBE` and `(S|P)UNSUBSCRIBE`.
    pub(in crate::proxy::session) fn subscription(&mut self, raw: &Bytes, args: &[Range<usize>]) {
        let verb = raw[args[0].clone()].to_ascii_lowercase();
        let (kind, subscribe) = match &verb[..] {
            b"subscribe" => (Kind::Channel, true),
            b"psubscribe" => (Kind::Pattern, true),
            b"ssubscribe" => (Kind::Shard, true),
            b"unsubscribe" => (Kind::Channel, false),
            b"punsubscribe" => (Kind::Pattern, false),
            _ => (Kind::Shard, false),
        };
        // Copies: the names live as long as the subscriptions, and a view into the request
        // would keep the client's whole read buffer alive with them.
        let names: Vec<Bytes> = args[1..]
            .iter()
            .map(|r| Bytes::copy_from_slice(&raw[r.clone()]))
            .collect();
        if kind == Kind::Shard && names.windows(2).any(|w| key_slot(&w[0]) != key_slot(&w[1])) {
            return self.push_error("CROSSSLOT Keys in request don't hash to the same slot");
        }
        if subscribe && self.modes.pubsub.is_none() {
            let reply = self.reply_to(PUSH_TAG);
            let task = Subscriber::spawn(
                self.shared.router.clone(),
                self.shared.dedicated.clone(),
                reply,
                self.shared.config.client.pubsub_buffer_bytes,
            );
            self.modes.pubsub = Some(PubSubState {
                channels: BTreeSet::new(),
                patterns: BTreeSet::new(),
                shard: BTreeSet::new(),
                task,
                unacked: 0,
            });
        }
        let resp3 = self.client.resp3();
        let mut out = BytesMut::new();
        let Some(state) = self.modes.pubsub.as_mut() else {
            // Unsubscribing with no subscription at all: one confirmation, count 0.
            let names = if names.is_empty() {
                vec![None]
            } else {
                names.into_iter().map(Some).collect()
            };
            for n in names {
                confirmation(&mut out, resp3, &verb, n.as_deref(), 0);
            }
            return self.push_reply(out.freeze());
        };
        let mut changed = Vec::new();
        if subscribe {
            for n in names {
                if state.set(kind).insert(n.clone()) {
                    changed.push(n.clone());
                }
                confirmation(&mut out, resp3, &verb, Some(&n), state.count(kind));
            }
            if !changed.is_empty() {
                // Answered once the node has subscribed, so a PUBLISH sent after the client
                // saw its confirmation is always delivered.
                let tag = self.push_pending(Pending::Pinned);
                let confirm = (self.reply_to(tag), out.freeze());
                if let Some(state) = self.modes.pubsub.as_mut() {
                    state.task.add(kind, changed, Some(confirm));
                }
                return;
            }
        } else {
            let names: Vec<Bytes> = if names.is_empty() {
                state.set(kind).iter().cloned().collect()
            } else {
                names
            };
            if names.is_empty() {
                confirmation(&mut out, resp3, &verb, None, state.count(kind));
            }
            for n in names {
                // Redis confirms a channel that was not subscribed too; only real changes
                // go to the node.
                if state.set(kind).remove(&n) {
                    changed.push(n.clone());
                }
                confirmation(&mut out, resp3, &verb, Some(&n), state.count(kind));
            }
            state.task.remove(kind, changed);
        }
        if state.is_empty() {
            // Dropping the task closes its connections: the client leaves subscribed mode.
            self.modes.pubsub = None;
        }
        self.push_reply(out.freeze());
    }

    /// The subscriber task could not put a subscribe in place (`raw` is `VERB names…`): the
    /// client got an error for it, so it is not subscribed to those names.
    pub(in crate::proxy::session) fn on_refused(&mut self, raw: &Bytes) {
        let mut scanner = crate::protocol::RequestScanner::new(self.shared.scan_limits);
        let Ok(Some(_)) = scanner.scan(raw) else {
            return;
        };
        let args = scanner.args();
        let Some(state) = self.modes.pubsub.as_mut() else {
            return;
        };
        let kind = match args.first().map(|r| &raw[r.clone()]) {
            Some(b"SUBSCRIBE") => Kind::Channel,
            Some(b"PSUBSCRIBE") => Kind::Pattern,
            Some(b"SSUBSCRIBE") => Kind::Shard,
            _ => return,
        };
        for r in &args[1..] {
            state.set(kind).remove(&raw[r.clone()]);
        }
        if state.is_empty() {
            // Nothing left: the client is out of subscribed mode, as it would be after the
            // matching unsubscribe.
            self.modes.pubsub = None;
        }
    }

    /// PING while subscribed (RESP2): `pong` and the message as an array, as Redis answers.
    fn subscribed_pong(&mut self, raw: &[u8], args: &[Range<usize>], msg: Option<usize>) {
        let mut out = BytesMut::new();
        encode::array_header(&mut out, 2);
        encode::bulk(&mut out, b"pong");
        encode::bulk(&mut out, msg.map_or(&b""[..], |i| &raw[args[i].clone()]));
        self.push_reply(out.freeze());
    }

    /// A request from a RESP2 client with subscriptions: only the subscription commands,
    /// PING (in its subscribed form), QUIT and RESET run, as in Redis.
    pub(in crate::proxy::session) fn while_subscribed(
        &mut self,
        decision: Decision,
        raw: Bytes,
        args: &[Range<usize>],
    ) {
        match decision {
            Decision::Subscription => self.subscription(&raw, args),
            Decision::Error(msg) => self.push_error(&msg),
            Decision::Local(LocalCmd::Ping(msg)) => self.subscribed_pong(&raw, args, msg),
            Decision::Local(cmd @ (LocalCmd::Quit | LocalCmd::Reset)) => {
                self.local(cmd, &raw, args)
            }
            _ => self.refuse_while_subscribed(&raw, args),
        }
    }

    /// Any other command while subscribed (RESP2): Redis's error.
    fn refuse_while_subscribed(&mut self, raw: &[u8], args: &[Range<usize>]) {
        let name = {
            let table = self.shared.router.commands();
            table
                .resolve(raw, args)
                .map(|s| s.name.clone())
                .unwrap_or_default()
        };
        self.push_error(&format!(
            "ERR Can't execute '{name}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context"
        ));
    }

    /// A message from the subscriber task, in the client's protocol.
    pub(in crate::proxy::session) fn on_push(&mut self, frame: Bytes) {
        let resp3 = self.client.resp3();
        let Some(state) = self.modes.pubsub.as_mut() else {
            return;
        };
        if !state.wants(&frame) {
            // Sent by the node before it processed an unsubscribe the client already saw;
            // counted in the backlog when read, so released here.
            state.task.backlog().ack(frame.len());
            return;
        }
        let frame = if resp3 {
            push_form(&frame).unwrap_or(frame)
        } else {
            frame
        };
        state.unacked += frame.len();
        self.push_reply(frame);
    }

    /// The client did not read its messages: disconnect it, as Redis does past its
    /// pubsub output-buffer limit.
    pub(in crate::proxy::session) fn on_overflow(&mut self) {
        tracing::info!(
            client = self.client.id(),
            "disconnecting a subscriber that fell behind"
        );
        self.modes.pubsub = None;
        self.closing = true;
        self.io.rbuf.clear();
        self.pipe.discard();
        self.io.wbuf.clear();
    }
}

/// The payload of the bulk string at the start of `buf`.
fn bulk_at(buf: &[u8]) -> Option<&[u8]> {
    let rest = buf.strip_prefix(b"$")?;
    let cr = rest.iter().position(|&b| b == b'\r')?;
    let len: usize = std::str::from_utf8(&rest[..cr]).ok()?.parse().ok()?;
    rest.get(cr + 2..cr + 2 + len)
}

/// Appends one (un)subscribe confirmation: `[verb, name, count]` (a push in RESP3).
fn confirmation(out: &mut BytesMut, resp3: bool, verb: &[u8], name: Option<&[u8]>, count: usize) {
    out.extend_from_slice(if resp3 { b">3\r\n" } else { b"*3\r\n" });
    encode::bulk(out, verb);
    match name {
        Some(n) => encode::bulk(out, n),
        None => encode::null(out, resp3),
    }
    encode::integer(out, i64::try_from(count).unwrap_or(i64::MAX));
}
