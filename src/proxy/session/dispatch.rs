//! Dispatch: scanning complete requests off the read buffer, the security check and the
//! classification, and one exhaustive `match` on the routing decision that hands each
//! request to exactly one place: a node (`forward`), a fan-out, a local answer or a mode.
//!
//! This module owns the scan loop and the decision; what happens to a forwarded request's
//! reply is `apply`'s, the ordering of replies the pipeline's.

use std::ops::Range;
use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};

use super::{Pending, Session};
use crate::backend::{BackendRequest, NodePool};
use crate::command::Request;
use crate::config::ReadPolicy;
use crate::protocol::{encode, inline_to_multibulk, RequestKind, RequestScanner};
use crate::proxy::classify::{classify, Decision, LocalCmd};
use crate::proxy::emulation::View;
use crate::proxy::recovery::Waiting;
use crate::proxy::trust;
use crate::security::limits;

impl Session {
    /// Scans and dispatches requests until the buffer holds no complete one or the in-flight
    /// cap is reached (the rest stays buffered and is read again once replies drain).
    pub(super) async fn dispatch_all(&mut self) {
        let max_inflight = self.shared.config.client.max_inflight;
        let max_bytes = self.shared.config.client.max_inflight_bytes;
        while !self.closing
            && self.pipe.len() < max_inflight
            && !self.pipe.requests.over(max_bytes)
            && !self.stalled()
        {
            let scanned = match self.scanner.scan(&self.io.rbuf) {
                Ok(Some(s)) => s,
                Ok(None) => break,
                Err(e) => {
                    // Redis answers a protocol error and closes the connection.
                    limits::count_protocol_error(&e);
                    self.push_error(&format!("ERR {e}"));
                    self.io.rbuf.clear();
                    self.closing = true;
                    break;
                }
            };
            match scanned.kind {
                RequestKind::Empty => self.io.rbuf.advance(scanned.len),
                RequestKind::MultiBulk => {
                    let raw = self.io.rbuf.split_to(scanned.len).freeze();
                    self.dispatch(raw, None).await;
                }
                RequestKind::Inline => {
                    let line = self.io.rbuf.split_to(scanned.len);
                    match inline_to_multibulk(&line) {
                        Ok(raw) => self.dispatch_rescanned(raw).await,
                        Err(e) => {
                            limits::count_protocol_error(&e);
                            self.push_error(&format!("ERR {e}"));
                            self.closing = true;
                        }
                    }
                }
            }
        }
        self.metrics.dispatched();
        self.io
            .shrink_rbuf(self.shared.config.client.read_buffer_bytes);
    }

    /// Dispatches an inline command after converting it to a multibulk request.
    async fn dispatch_rescanned(&mut self, raw: Bytes) {
        let mut scanner = RequestScanner::new(self.shared.scan_limits);
        match scanner.scan(&raw) {
            Ok(Some(s)) if s.kind == RequestKind::MultiBulk => {
                let args = scanner.args().to_vec();
                self.dispatch(raw, Some(&args)).await;
            }
            // A blank line is ignored, as Redis does.
            Ok(_) => {}
            Err(e) => self.push_error(&format!("ERR {e}")),
        }
    }

    /// Routes one request and counts it for the metrics (when its reply is queued).
    /// `args`: the argument ranges, when not the scanner's.
    pub(super) async fn dispatch(&mut self, raw: Bytes, args: Option<&[Range<usize>]>) {
        let Some(name) = args.unwrap_or_else(|| self.scanner.args()).first().cloned() else {
            return;
        };
        let router = &self.shared.router;
        let cmd = self.metrics.command(&raw[name], |n| {
            router.commands().lookup(n).map(|spec| spec.name.clone())
        });
        let first_seq = self.pipe.next_seq();
        let written = self.io.wbuf.len();
        let len = raw.len();
        self.route(raw, args).await;
        let after_seq = self.pipe.next_seq();
        if after_seq > first_seq {
            self.pipe.requests.add(after_seq, len);
        }
        let answer = self.io.wbuf.get(written).copied();
        self.metrics
            .dispatched_one(cmd, first_seq, after_seq, answer);
    }

    /// Checks and classifies one request, then hands it to the one place its decision names.
    async fn route(&mut self, raw: Bytes, args: Option<&[Range<usize>]>) {
        let args = args.unwrap_or_else(|| self.scanner.args());
        if args.is_empty() {
            return;
        }
        let commands = self.shared.router.commands();
        let stream = &self.stream;
        let peer = || stream.peer_addr().ok();
        // Looked up once for both the security check and the classification.
        let req = Request::new(&commands, &raw, args);
        let spec = req.spec();
        if let Some(msg) = self.local_in_tx(spec) {
            return self.refuse_in_tx(&msg);
        }
        let security = &self.shared.security;
        if let Some(reply) = security.check(&mut self.sec, &commands, &req, &mut self.keys, peer) {
            // Inside MULTI a refusal flags the transaction, as Redis's `flagTransaction`.
            return self.refuse_reply(reply);
        }
        let decision = classify(&req, &mut self.keys);
        let script = spec.is_some_and(|s| trust::is_script(&s.name));
        drop(commands);
        if let (Decision::Eval { .. }, Some(body)) = (&decision, args.get(1)) {
            // Remembered for NOSCRIPT recovery after a failover or resharding, whether the
            // script runs now or inside EXEC.
            self.shared.scripts.remember(&raw[body.clone()]);
        }
        // The connection's mode sees every request before its command does.
        if self.modes.tx.is_some() {
            let args = args.to_vec();
            return self.queue_in_tx(decision, raw, &args).await;
        }
        if self.modes.subscribed() && !self.client.resp3() {
            let args = args.to_vec();
            return self.while_subscribed(decision, raw, &args);
        }
        // The one match on the decision. Only the forward arm (the hot path) borrows the
        // scanner's argument ranges; the others own a copy, since they need the session.
        match decision {
            Decision::Forward { slot, readonly } | Decision::Eval { slot, readonly } => {
                if script && self.client.resp3() {
                    let args = args.to_vec();
                    return self.script_resp3(slot, readonly, raw, &args);
                }
                let shape = self.client.resp3().then(|| self.reshape(&raw, args));
                let seq = self.pipe.next_seq();
                if let Some(s) = slot {
                    let key = self.keys.first().and_then(|&i| args.get(i));
                    self.metrics
                        .keyed(s, key.map_or(&[][..], |r| &raw[r.clone()]));
                }
                let mut waiting = Waiting::new(slot, readonly);
                waiting.durable = !readonly && self.shared.config.cluster.durable_writes;
                let raw = if script {
                    let (wrapped, wrap) = self.wrap_script(&raw, args);
                    waiting.wrap = Some(wrap);
                    wrapped
                } else {
                    raw
                };
                self.forward(raw, waiting).await;
                if let Some(shape) = shape {
                    self.note_shape(seq, shape);
                }
            }
            Decision::Fanout(fan) => {
                let shape = self.client.resp3().then(|| self.reshape(&raw, args));
                let seq = self.pipe.next_seq();
                let args = args.to_vec();
                self.fanout(fan, raw, &args).await;
                if let Some(shape) = shape {
                    self.note_shape(seq, shape);
                }
            }
            Decision::Local(cmd) => {
                let args = args.to_vec();
                self.local(cmd, &raw, &args);
            }
            Decision::Error(msg) => self.push_error(&msg),
            Decision::Transaction(cmd) => {
                let args = args.to_vec();
                self.transaction(cmd, raw, &args).await;
            }
            Decision::Subscription => {
                let args = args.to_vec();
                self.subscription(&raw, &args);
            }
            Decision::Blocking { slot } => {
                let args = args.to_vec();
                self.blocking(slot, raw, &args);
            }
        }
    }

    /// Remembers a primary this client wrote to, for WAIT.
    pub(super) fn note_write(&mut self, pool: &Arc<NodePool>) {
        if !self.written.iter().any(|p| Arc::ptr_eq(p, pool)) {
            self.written.push(pool.clone());
        }
    }

    /// Sends a request to the node that serves its slot (a replica by the read policy for a
    /// read), queued in the pipeline as waiting for its reply.
    async fn forward(&mut self, raw: Bytes, waiting: Waiting) {
        let router = &self.shared.router;
        let pool = {
            let table = router.table();
            match table.as_ref() {
                None => None,
                Some(t) => match waiting.slot {
                    Some(s) if waiting.readonly => {
                        let pick = match router.read_policy() {
                            ReadPolicy::ReplicaRoundRobin => router.next_rotation(),
                            _ => self.id,
                        };
                        t.reader_for_slot(s, router.read_policy(), pick).cloned()
                    }
                    Some(s) => t.primary_for_slot(s).cloned(),
                    None => t.any_primary(router.next_rotation()).cloned(),
                },
            }
        };
        let Some(pool) = pool else {
            router.request_refresh();
            let msg = if router.table().is_none() {
                "CLUSTERDOWN slotway has no cluster topology yet (no seed reachable)"
            } else {
                "CLUSTERDOWN Hash slot not served"
            };
            return self.push_error(msg);
        };
        let durable = waiting.durable;
        let replies = waiting.replies();
        if !waiting.readonly {
            self.note_write(&pool);
        }
        let tag = self.push_pending(Pending::Waiting(waiting));
        let req = BackendRequest {
            raw,
            asking: false,
            durable,
            replies,
            reply: self.reply_to(tag),
        };
        pool.send(req, self.id).await;
    }

    /// Answers a command the proxy serves itself.
    pub(super) fn local(&mut self, cmd: LocalCmd, raw: &[u8], args: &[Range<usize>]) {
        let mut out = BytesMut::new();
        match cmd {
            LocalCmd::Ping(None) => encode::simple(&mut out, "PONG"),
            LocalCmd::Ping(Some(i)) => encode::bulk(&mut out, &raw[args[i].clone()]),
            LocalCmd::Echo => encode::bulk(&mut out, &raw[args[1].clone()]),
            LocalCmd::Ok => encode::simple(&mut out, "OK"),
            LocalCmd::Quit => {
                encode::simple(&mut out, "OK");
                self.closing = true;
            }
            LocalCmd::Hello => return self.hello(raw, args),
            LocalCmd::Client => return self.client_command(raw, args),
            LocalCmd::Reset => return self.reset(),
            LocalCmd::WhoAmI => return self.whoami(),
            LocalCmd::Select => match std::str::from_utf8(&raw[args[1].clone()])
                .ok()
                .and_then(|s| s.parse::<i64>().ok())
            {
                None => encode::error(&mut out, "ERR value is not an integer or out of range"),
                Some(0) => encode::simple(&mut out, "OK"),
                Some(_) => encode::error(&mut out, "ERR SELECT is not allowed in cluster mode"),
            },
            LocalCmd::Cluster(cmd) => {
                let view = View::for_client(&self.shared, self.stream.local_addr());
                out.extend_from_slice(&view.reply(cmd, raw, args, self.client.resp3()));
            }
            LocalCmd::SlowLog => {
                let argv: Vec<&[u8]> = args[1..].iter().map(|r| &raw[r.clone()]).collect();
                out.extend_from_slice(&self.shared.metrics.slowlog.reply(&argv));
            }
        }
        self.push_reply(out.freeze());
    }
}
