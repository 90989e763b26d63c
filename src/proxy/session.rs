//! One client connection: reads pipelined requests, dispatches each without waiting for the
//! others, and writes replies back in request order.
//!
//! Replies arrive on the session's completion channel in any order (different nodes answer at
//! different speeds); `pending` holds one entry per request in request order and the front is
//! written out as soon as it is ready. Redirects and retries are handled here, per request, so
//! one client's MOVED never stalls another client.
//!
//! Connection-level modes live in submodules: `client` (HELLO, CLIENT, RESET, RESP3 output),
//! `modes` (pinned requests, blocking commands, request barriers), `transaction` (MULTI/EXEC)
//! and `subscribe` (Pub/Sub).

mod client;
mod idle;
mod inflight;
mod modes;
mod parts;
mod recovery;
mod subscribe;
mod transaction;

use std::collections::VecDeque;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::classify::{classify, Decision, LocalCmd};
use super::emulation::View;
use super::fanout::Fanout;
use super::recovery::Waiting;
use super::retry;
use super::trust::{self, Verdict, Wrap};
use super::Shared;
use crate::backend::{BackendError, BackendRequest, Completion, NodePool, Outcome, ReplyTo, Tag};
use crate::command::Request;
use crate::config::ReadPolicy;
use crate::metrics::{global as metrics, RetryReason, SessionMetrics};
use crate::protocol::{encode, inline_to_multibulk, ReplyKind, RequestKind, RequestScanner};
use crate::security::limits::{self, IdleTimer};
use crate::security::ClientState;
use crate::tls::ClientStream;

/// A request awaiting its reply, or a reply waiting for earlier ones to be written.
enum Pending {
    Waiting(Waiting),
    Ready(Bytes),
    /// A request split into parts (`Tag::part`), each with its own retry state.
    Fanout(Box<Fanout>),
    /// Answered by the session's pinned connection, without redirects or retries.
    Pinned,
}

/// Why a session ended abnormally (logged at debug level: clients come and go).
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// Socket error.
    #[error("client i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// How a session loop ended.
enum Ended {
    /// The connection is over (client gone, QUIT, protocol error, drained at shutdown).
    Closed,
    /// Nothing in flight and no traffic for a quiet period: release the buffers and wait.
    Quiet,
}

impl Session {
    /// The full state of a client that has sent something (`created`: when it connected).
    fn new(
        stream: ClientStream,
        shared: Arc<Shared>,
        id: usize,
        created: std::time::Instant,
    ) -> Self {
        let client = client::ClientState::new(id, &stream, created);
        let metrics = SessionMetrics::new(
            shared.config.metrics.enabled,
            shared.config.metrics.hot_keys > 0,
        );
        Self {
            sec: shared.security.client(id as u64),
            idle: IdleTimer::new(crate::config::ms(shared.config.client.idle_timeout_ms)),
            write_blocked: false,
            capped: false,
            active: false,
            scanner: RequestScanner::new(shared.scan_limits),
            stream,
            shared,
            rbuf: BytesMut::new(),
            wbuf: BytesMut::new(),
            keys: Vec::new(),
            pending: VecDeque::new(),
            queued: 0,
            requests: inflight::RequestBytes::default(),
            base_seq: 0,
            tx: None,
            rx: None,
            closing: false,
            id,
            written: Vec::new(),
            client,
            modes: modes::Modes::default(),
            metrics,
        }
    }
}

struct Session {
    stream: ClientStream,
    shared: Arc<Shared>,
    /// Unparsed client bytes; requests are split off it without copying.
    rbuf: BytesMut,
    /// Replies ready to write, in order.
    wbuf: BytesMut,
    scanner: RequestScanner,
    /// Scratch for key indices.
    keys: Vec<usize>,
    pending: VecDeque<Pending>,
    /// Bytes of replies in `pending` not yet moved to `wbuf` (ready ones, and fan-out parts
    /// waiting for the rest): replies piled up behind a slow request count against the output
    /// limit together with `wbuf`, as everything queued for a Redis client does.
    queued: usize,
    /// Bytes of requests not yet answered to the client; reading pauses past the bound.
    requests: inflight::RequestBytes,
    /// Sequence number of `pending[0]`.
    base_seq: u64,
    /// The completion channel, created on the first forwarded request so an idle client
    /// costs no channel memory.
    tx: Option<mpsc::UnboundedSender<Completion>>,
    rx: Option<mpsc::UnboundedReceiver<Completion>>,
    /// No more requests are read (QUIT, protocol error, client EOF or shutdown).
    closing: bool,
    /// Picks this client's connection in each node pool.
    id: usize,
    /// Authentication state and compiled command rules.
    sec: ClientState,
    /// Closes the client after `client.idle_timeout_ms` without traffic.
    idle: IdleTimer,
    /// The last write stopped at a full socket; wait for writability before trying again.
    write_blocked: bool,
    /// Reading is paused at the in-flight cap (counted once per pause).
    capped: bool,
    /// Bytes moved since the last quiet-period check.
    active: bool,
    /// Primaries this client sent writes to since its last WAIT.
    written: Vec<Arc<NodePool>>,
    /// What the client set on its connection: protocol, name.
    client: client::ClientState,
    /// Transaction, pinned connection, subscriptions, held request.
    modes: modes::Modes,
    /// Per-request metric accumulators, flushed once per loop turn.
    metrics: SessionMetrics,
}

pub use idle::{resting_clients, run};

/// Session ids, spreading clients over each node's connections.
static NEXT_SESSION_ID: AtomicUsize = AtomicUsize::new(0);

impl Session {
    /// The session loop; returns when the connection ends or has been quiet for
    /// [`idle::QUIET_PERIOD`] with nothing in flight.
    async fn serve(&mut self, shutdown: &CancellationToken) -> Result<Ended, SessionError> {
        // Grows on first use only: idle clients hold no buffers.
        let mut completions = Vec::new();
        let max_inflight = self.shared.config.client.max_inflight;
        let max_inflight_bytes = self.shared.config.client.max_inflight_bytes;
        let output_limit = self.shared.config.client.output_buffer_limit_bytes;
        let mut quiet =
            tokio::time::interval_at(Instant::now() + idle::QUIET_PERIOD, idle::QUIET_PERIOD);
        quiet.set_missed_tick_behavior(MissedTickBehavior::Delay);
        // Made once, not per turn: a fresh `cancelled()` joins the token's waiter list (a
        // mutex shared by every session) on each poll and leaves it again when dropped.
        let mut cancelled = std::pin::pin!(shutdown.cancelled());
        loop {
            self.resume_held().await;
            let full = self.pending.len() >= max_inflight || self.requests.over(max_inflight_bytes);
            if !self.rbuf.is_empty() && !full {
                // Requests left buffered when the in-flight cap was hit: the socket will not
                // signal them again.
                self.dispatch_all().await;
            }
            self.flush()?;
            self.metrics.flush(self.pending.len());
            if limits::over_output_limit(self.wbuf.len() + self.queued, output_limit) {
                // A client that does not read its replies, or whose replies pile up behind a
                // slow request, must not make the proxy grow.
                limits::count_disconnect("output_buffer_limit");
                tracing::debug!(
                    buffered = self.wbuf.len(),
                    queued = self.queued,
                    "client over the output buffer limit"
                );
                return Ok(Ended::Closed);
            }
            if self.closing && self.pending.is_empty() && self.wbuf.is_empty() {
                return Ok(Ended::Closed);
            }
            let full = self.pending.len() >= max_inflight || self.requests.over(max_inflight_bytes);
            let can_read = !self.closing && !full && self.modes.may_read(self.rbuf.len());
            let capped = !self.closing && full;
            if capped && !self.capped {
                limits::count_inflight_cap();
                tracing::debug!(
                    requests = self.pending.len(),
                    bytes = self.requests.total(),
                    "client reading paused at its in-flight cap"
                );
            }
            self.capped = capped;
            let backlog = if self.write_blocked {
                self.modes.pubsub.as_ref().map(|p| p.backlog())
            } else {
                None
            };
            tokio::select! {
                biased;
                _ = recv_completions(&mut self.rx, &mut completions) => {
                    for c in completions.drain(..) {
                        self.on_completion(c);
                    }
                    self.modes.retries.pump();
                    self.collect_ready();
                }
                ready = self.stream.readable(), if can_read => {
                    ready?;
                    if !self.read().await? {
                        return Ok(Ended::Closed);
                    }
                }
                _ = &mut cancelled, if !self.closing => {
                    // Drain: stop reading, finish what the client already sent.
                    self.closing = true;
                }
                ready = modes::writable(&self.stream, backlog.as_deref()), if self.write_blocked => {
                    ready?;
                    self.write_blocked = false;
                }
                _ = self.idle.tick() => {
                    if self.idle.expired(!self.pending.is_empty()) {
                        limits::count_disconnect("idle_timeout");
                        return Ok(Ended::Closed);
                    }
                }
                _ = quiet.tick() => {
                    if !std::mem::take(&mut self.active) && self.quiescent() {
                        return Ok(Ended::Quiet);
                    }
                }
            }
        }
    }

    /// Reads what the socket has and dispatches every complete request.
    /// Returns false when the client has gone.
    async fn read(&mut self) -> Result<bool, SessionError> {
        let chunk = self.shared.config.client.read_buffer_bytes;
        if self.rbuf.capacity() - self.rbuf.len() < chunk / 4 {
            self.rbuf.reserve(chunk);
        }
        // Through `poll_read`, not `try_read_buf`: a short read clears the socket's readiness,
        // so the next turn of the loop does not spend a syscall to learn it would block.
        let read = std::future::poll_fn(|cx| match self.stream.poll_read_buf(cx, &mut self.rbuf) {
            std::task::Poll::Pending => {
                std::task::Poll::Ready(Err(std::io::ErrorKind::WouldBlock.into()))
            }
            ready => ready,
        });
        match read.await {
            Ok(0) => return Ok(false),
            Ok(n) => {
                self.idle.touch();
                self.active = true;
                self.metrics.read(n);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(true),
            Err(e) => return Err(e.into()),
        }
        self.dispatch_all().await;
        Ok(true)
    }

    /// Scans and dispatches requests until the buffer holds no complete one or the in-flight
    /// cap is reached (the rest stays buffered and is read again once replies drain).
    async fn dispatch_all(&mut self) {
        let max_inflight = self.shared.config.client.max_inflight;
        let max_bytes = self.shared.config.client.max_inflight_bytes;
        while !self.closing
            && self.pending.len() < max_inflight
            && !self.requests.over(max_bytes)
            && !self.stalled()
        {
            let scanned = match self.scanner.scan(&self.rbuf) {
                Ok(Some(s)) => s,
                Ok(None) => break,
                Err(e) => {
                    // Redis answers a protocol error and closes the connection.
                    limits::count_protocol_error(&e);
                    self.push_error(&format!("ERR {e}"));
                    self.rbuf.clear();
                    self.closing = true;
                    break;
                }
            };
            match scanned.kind {
                RequestKind::Empty => self.rbuf.advance(scanned.len),
                RequestKind::MultiBulk => {
                    let raw = self.rbuf.split_to(scanned.len).freeze();
                    self.dispatch(raw, None).await;
                }
                RequestKind::Inline => {
                    let line = self.rbuf.split_to(scanned.len);
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
        if self.rbuf.is_empty()
            && self.rbuf.capacity() > 4 * self.shared.config.client.read_buffer_bytes
        {
            // A large request has passed; don't keep its buffer for an idle client.
            self.rbuf = BytesMut::new();
        }
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
    async fn dispatch(&mut self, raw: Bytes, args: Option<&[std::ops::Range<usize>]>) {
        let Some(name) = args.unwrap_or_else(|| self.scanner.args()).first().cloned() else {
            return;
        };
        let router = &self.shared.router;
        let cmd = self.metrics.command(&raw[name], |n| {
            router.commands().lookup(n).map(|spec| spec.name.clone())
        });
        let first_seq = self.base_seq + self.pending.len() as u64;
        let written = self.wbuf.len();
        let len = raw.len();
        self.route(raw, args).await;
        let after_seq = self.base_seq + self.pending.len() as u64;
        if after_seq > first_seq {
            self.requests.add(after_seq, len);
        }
        let answer = self.wbuf.get(written).copied();
        self.metrics
            .dispatched_one(cmd, first_seq, after_seq, answer);
    }

    /// Routes one request: forward, answer locally, or refuse.
    async fn route(&mut self, raw: Bytes, args: Option<&[std::ops::Range<usize>]>) {
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
        let decision = match decision {
            Decision::Eval { slot, readonly } => {
                // Remembered for NOSCRIPT recovery after a failover or resharding.
                if let Some(body) = args.get(1) {
                    self.shared.scripts.remember(&raw[body.clone()]);
                }
                Decision::Forward { slot, readonly }
            }
            d => d,
        };
        if self.is_special(&decision) {
            let args = args.to_vec();
            return self.dispatch_special(decision, raw, &args).await;
        }
        if let Decision::Forward { slot, readonly } = decision {
            if self.client.resp3() && self.runs_script(&raw, args) {
                let args = args.to_vec();
                return self.script_resp3(slot, readonly, raw, &args);
            }
        }
        let shape = self.client.resp3().then(|| self.reshape(&raw, args));
        let first_seq = self.base_seq + self.pending.len() as u64;
        match decision {
            Decision::Forward { slot, readonly } => {
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
            }
            Decision::Local(cmd) => {
                let args = args.to_vec();
                self.local(cmd, &raw, &args);
            }
            Decision::Fanout(fan) => {
                let args = args.to_vec();
                self.fanout(fan, raw, &args).await;
            }
            Decision::Error(msg) => self.push_error(&msg),
            Decision::Eval { .. } => unreachable!("turned into Forward above"),
            other => {
                let args = args.to_vec();
                self.dispatch_special(other, raw, &args).await;
            }
        }
        if let Some(shape) = shape {
            self.note_shape(first_seq, shape);
        }
    }

    /// Remembers a primary this client wrote to, for WAIT.
    fn note_write(&mut self, pool: &Arc<NodePool>) {
        if !self.written.iter().any(|p| Arc::ptr_eq(p, pool)) {
            self.written.push(pool.clone());
        }
    }

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
        let replies = waiting.wrap.map_or(1, Wrap::replies);
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

    fn local(&mut self, cmd: LocalCmd, raw: &[u8], args: &[std::ops::Range<usize>]) {
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

    fn push_error(&mut self, msg: &str) {
        let mut out = BytesMut::with_capacity(msg.len() + 3);
        encode::error(&mut out, msg);
        self.push_reply(out.freeze());
    }

    /// Queues a reply made by the proxy; with nothing ahead of it, it goes straight out.
    fn push_reply(&mut self, reply: Bytes) {
        if self.pending.is_empty() {
            self.wbuf.extend_from_slice(&reply);
        } else {
            self.queued += reply.len();
            self.push_pending(Pending::Ready(reply));
        }
    }

    fn push_pending(&mut self, p: Pending) -> Tag {
        let seq = self.base_seq + self.pending.len() as u64;
        self.pending.push_back(p);
        Tag { seq, part: 0 }
    }

    fn on_completion(&mut self, c: Completion) {
        if let Some(group) = c.tag.group() {
            return self.on_group_completion(group, c);
        }
        let Some(c) = self.special_completion(c) else {
            return;
        };
        let Some(idx) = c
            .tag
            .seq
            .checked_sub(self.base_seq)
            .and_then(|i| usize::try_from(i).ok())
        else {
            return;
        };
        // Whatever this answer leads to (a reply, or the same request queued again), the lane
        // releases its next retry only after it has been handled (`pump` in the serve loop).
        self.modes.retries.answered(c.tag);
        let Some(w) = self.waiting_part(idx, c.tag.part) else {
            return;
        };
        let (readonly, wrap) = (w.readonly, w.wrap);
        let confirmed = std::mem::take(&mut w.confirming);
        let next = match (c.outcome, wrap) {
            // A redirect handed back after a refresh: already known to be Redis's own.
            (Outcome::Reply(frame, _), _) if confirmed => {
                self.on_error_reply(idx, frame, c.raw.clone(), c.tag, true)
            }
            (Outcome::Reply(run, _), Some(w)) => match trust::unwrap(&run, w) {
                Verdict::NotRun(err) => self.on_error_reply(idx, err, c.raw.clone(), c.tag, false),
                Verdict::Ran(reply) => Some(reply),
            },
            (Outcome::Reply(frame, ReplyKind::Error), None) => {
                self.on_error_reply(idx, frame, c.raw.clone(), c.tag, false)
            }
            (Outcome::Reply(frame, _), None) => Some(frame),
            (Outcome::Failed(err), _) => {
                self.shared.router.note_failure(&err);
                if (err.retry_safe() || readonly) && self.begin_retry(idx, c.tag.part) {
                    metrics().retry(RetryReason::Connection).increment(1);
                    self.shared.router.request_refresh();
                    self.reroute(idx, c.raw.clone(), c.tag, retry::failed_node(&err));
                    None
                } else {
                    Some(error_frame(&failure_message(&err)))
                }
            }
        };
        if let Some(frame) = next {
            if matches!(self.pending[idx], Pending::Waiting(_)) {
                let raw = wrap.map_or_else(|| c.raw.clone(), |w| w.inner(&c.raw));
                self.slow_log(c.tag.seq, &raw);
            }
            self.finish(idx, c.tag.part, frame);
        }
    }

    /// Puts the request at `seq` in the slow log when it took long enough.
    fn slow_log(&mut self, seq: u64, raw: &Bytes) {
        let slowlog = &self.shared.metrics.slowlog;
        let Some(took) = self.metrics.elapsed(seq) else {
            return;
        };
        if !slowlog.is_slow(took) {
            return;
        }
        let mut scanner = RequestScanner::new(self.shared.scan_limits);
        if let Ok(Some(_)) = scanner.scan(raw) {
            let client = self
                .stream
                .peer_addr()
                .map_or_else(|_| String::new(), |a| a.to_string());
            slowlog.record(raw, scanner.args(), took, client);
        }
    }

    /// Records the final reply of `pending[idx]` (or of one of its parts).
    fn finish(&mut self, idx: usize, part: u32, frame: Bytes) {
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
    fn set_ready(&mut self, idx: usize, reply: Bytes) {
        self.queued += reply.len();
        self.pending[idx] = Pending::Ready(reply);
    }

    fn waiting(&mut self, idx: usize, part: u32) -> &mut Waiting {
        match self.waiting_part(idx, part) {
            Some(w) => w,
            // Callers only pass indices they found waiting in this same turn.
            None => unreachable!("pending entry {idx} part {part} is not waiting"),
        }
    }

    /// The retry state of `pending[idx]` (part `part` of a fan-out) while it awaits a reply.
    fn waiting_part(&mut self, idx: usize, part: u32) -> Option<&mut Waiting> {
        match self.pending.get_mut(idx)? {
            Pending::Waiting(w) => Some(w),
            Pending::Fanout(f) => f.waiting(part),
            Pending::Ready(_) | Pending::Pinned => None,
        }
    }

    fn reply_to(&mut self, tag: Tag) -> ReplyTo {
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

    /// Moves every reply at the front of `pending` that is ready into the write buffer.
    fn collect_ready(&mut self) {
        while let Some(Pending::Ready(_)) = self.pending.front() {
            if let Some(Pending::Ready(frame)) = self.pending.pop_front() {
                self.queued = self.queued.saturating_sub(frame.len());
                self.metrics.replied(self.base_seq, frame.first().copied());
                let frame = self.modes.reshape_reply(self.base_seq, frame);
                self.wbuf.extend_from_slice(&frame);
                self.base_seq += 1;
                self.requests.written(self.base_seq);
            }
        }
    }

    /// Writes as much of the write buffer as the socket takes without waiting; the rest
    /// stays buffered (counted against the output limit) until the socket is writable.
    fn flush(&mut self) -> Result<(), SessionError> {
        self.collect_ready();
        while !self.wbuf.is_empty() && !self.write_blocked {
            match self.stream.try_write(&self.wbuf) {
                Ok(n) => {
                    self.wbuf.advance(n);
                    self.idle.touch();
                    self.active = true;
                    self.metrics.wrote(n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    self.write_blocked = true;
                }
                Err(e) => return Err(e.into()),
            }
        }
        if !self.wbuf.is_empty() {
            return Ok(());
        }
        self.modes.flushed();
        self.wbuf.clear();
        if self.wbuf.capacity() > 1 << 20 {
            self.wbuf = BytesMut::new();
        }
        Ok(())
    }
}

impl Session {
    /// True when nothing is in flight, buffered or held, and nothing but this session can
    /// send it a completion: the state can rest without its buffers and channel.
    fn quiescent(&self) -> bool {
        self.pending.is_empty()
            && self.rbuf.is_empty()
            && self.wbuf.is_empty()
            && !self.closing
            && !self.write_blocked
            && !self.stalled()
            && self.modes.pubsub.is_none()
            && self.tx.as_ref().map_or(true, |tx| tx.strong_count() == 1)
            && self.rx.as_ref().map_or(true, |rx| rx.is_empty())
    }

    /// Gives back the buffers, scratch space and completion channel of a quiescent session;
    /// each is created again on first use.
    fn release(&mut self) {
        self.rbuf = BytesMut::new();
        self.wbuf = BytesMut::new();
        self.pending = VecDeque::new();
        self.queued = 0;
        self.requests = inflight::RequestBytes::default();
        self.keys = Vec::new();
        self.scanner = RequestScanner::new(self.shared.scan_limits);
        self.tx = None;
        self.rx = None;
        self.modes.release();
    }
}

/// Waits for completions; forever while the session has never forwarded anything.
async fn recv_completions(
    rx: &mut Option<mpsc::UnboundedReceiver<Completion>>,
    out: &mut Vec<Completion>,
) -> usize {
    match rx {
        Some(rx) => rx.recv_many(out, 256).await,
        None => std::future::pending().await,
    }
}

/// The client-facing text for a request the backend could not answer.
fn failure_message(err: &BackendError) -> String {
    match err {
        BackendError::Lost(_) => format!("ERR slotway: {err}"),
        _ => format!("CLUSTERDOWN slotway: {err}"),
    }
}

fn error_frame(msg: &str) -> Bytes {
    let mut out = BytesMut::with_capacity(msg.len() + 3);
    encode::error(&mut out, msg);
    out.freeze()
}
