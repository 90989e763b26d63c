//! One client connection: reads pipelined requests, dispatches each without waiting for the
//! others, and writes replies back in request order.
//!
//! Replies arrive on the session's completion channel in any order (different nodes answer at
//! different speeds); `pending` holds one entry per request in request order and the front is
//! written out as soon as it is ready. Redirects and retries are handled here, per request, so
//! one client's MOVED never stalls another client.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::classify::{classify, Decision, LocalCmd};
use super::retry::{self, Origin, Retry};
use super::Shared;
use crate::backend::{BackendError, BackendRequest, Completion, Outcome, ReplyTo, Tag};
use crate::config::ReadPolicy;
use crate::metrics::{global as metrics, CommandId, RetryReason, SessionMetrics};
use crate::protocol::{
    encode, inline_to_multibulk, ReplyKind, RequestKind, RequestScanner, ServerError,
};

/// A request awaiting its reply, or a reply waiting for earlier ones to be written.
enum Pending {
    Waiting(Waiting),
    Ready(Bytes),
}

/// What a session remembers about a forwarded request, for redirects and retries.
struct Waiting {
    /// The slot of its keys (None: any primary).
    slot: Option<u16>,
    /// Safe to re-send after a lost connection.
    readonly: bool,
    /// MOVED/ASK redirects followed so far.
    redirects: u32,
    /// Re-sends after transient errors or failures so far.
    attempts: u32,
    /// A write in durable mode: sent with `WAIT`.
    durable: bool,
    /// When retrying stops; set at the first retry.
    deadline: Option<Instant>,
    /// The command, for metrics.
    cmd: CommandId,
    /// When the request was read (its read batch), for latency.
    start: std::time::Instant,
}

/// Why a session ended abnormally (logged at debug level: clients come and go).
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// Socket error.
    #[error("client i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// Serves one client until it disconnects, sends QUIT, breaks the protocol, or shutdown drains it.
pub async fn run(stream: TcpStream, shared: Arc<Shared>, shutdown: CancellationToken) {
    let limits = shared.scan_limits;
    let metrics = SessionMetrics::new(
        shared.config.metrics.enabled,
        shared.config.metrics.hot_keys > 0,
    );
    let mut session = Session {
        stream,
        shared,
        rbuf: BytesMut::new(),
        wbuf: BytesMut::new(),
        scanner: RequestScanner::new(limits),
        keys: Vec::new(),
        pending: VecDeque::new(),
        base_seq: 0,
        tx: None,
        rx: None,
        closing: false,
        id: NEXT_SESSION_ID.fetch_add(1, Ordering::Relaxed),
        metrics,
    };
    if let Err(e) = session.serve(shutdown).await {
        tracing::debug!(error = %e, "client session ended");
    }
}

struct Session {
    stream: TcpStream,
    shared: Arc<Shared>,
    /// Unparsed client bytes; requests are split off it without copying.
    rbuf: BytesMut,
    /// Replies ready to write, in order.
    wbuf: BytesMut,
    scanner: RequestScanner,
    /// Scratch for key indices.
    keys: Vec<usize>,
    pending: VecDeque<Pending>,
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
    /// Per-request metric accumulators, flushed once per loop turn.
    metrics: SessionMetrics,
}

/// Session ids, spreading clients over each node's connections.
static NEXT_SESSION_ID: AtomicUsize = AtomicUsize::new(0);

impl Session {
    async fn serve(&mut self, shutdown: CancellationToken) -> Result<(), SessionError> {
        // Grows on first use only: idle clients hold no buffers.
        let mut completions = Vec::new();
        let max_inflight = self.shared.config.client.max_inflight;
        loop {
            if !self.rbuf.is_empty() && self.pending.len() < max_inflight {
                // Requests left buffered when the in-flight cap was hit: the socket will not
                // signal them again.
                self.dispatch_all().await;
            }
            self.flush().await?;
            self.metrics.flush(self.pending.len());
            if self.closing && self.pending.is_empty() {
                return Ok(());
            }
            let can_read = !self.closing && self.pending.len() < max_inflight;
            tokio::select! {
                biased;
                _ = recv_completions(&mut self.rx, &mut completions) => {
                    self.metrics.completions();
                    for c in completions.drain(..) {
                        self.on_completion(c);
                    }
                    self.collect_ready();
                }
                ready = self.stream.readable(), if can_read => {
                    ready?;
                    if !self.read().await? {
                        return Ok(());
                    }
                }
                _ = shutdown.cancelled(), if !self.closing => {
                    // Drain: stop reading, finish what the client already sent.
                    self.closing = true;
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
        match self.stream.try_read_buf(&mut self.rbuf) {
            Ok(0) => return Ok(false),
            Ok(n) => self.metrics.read(n),
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
        while !self.closing && self.pending.len() < max_inflight {
            let scanned = match self.scanner.scan(&self.rbuf) {
                Ok(Some(s)) => s,
                Ok(None) => break,
                Err(e) => {
                    // Redis answers a protocol error and closes the connection.
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

    /// Routes one request: forward, answer locally, or refuse.
    async fn dispatch(&mut self, raw: Bytes, args: Option<&[std::ops::Range<usize>]>) {
        let args = args.unwrap_or_else(|| self.scanner.args());
        if args.is_empty() {
            return;
        }
        let commands = self.shared.router.commands();
        let decision = classify(&commands, &raw, args, &mut self.keys);
        let cmd = self.metrics.command(&raw[args[0].clone()], &commands);
        drop(commands);
        match decision {
            Decision::Forward { slot, readonly } => {
                if let Some(s) = slot {
                    let key = self.keys.first().and_then(|&i| args.get(i));
                    self.metrics
                        .keyed(s, || key.map_or_else(Bytes::new, |r| raw.slice(r.clone())));
                }
                let waiting = Waiting {
                    slot,
                    readonly,
                    redirects: 0,
                    attempts: 0,
                    durable: !readonly && self.shared.config.cluster.durable_writes,
                    deadline: None,
                    cmd,
                    start: self.metrics.batch_start(),
                };
                self.forward(raw, waiting).await;
            }
            Decision::Local(local) => {
                let args = args.to_vec();
                let error = self.local(local, &raw, &args);
                self.metrics.answered(cmd, error);
            }
            Decision::Error(msg) => {
                self.push_error(&msg);
                self.metrics.answered(cmd, true);
            }
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
            self.metrics.answered(waiting.cmd, true);
            let msg = if router.table().is_none() {
                "CLUSTERDOWN slotway has no cluster topology yet (no seed reachable)"
            } else {
                "CLUSTERDOWN Hash slot not served"
            };
            return self.push_error(msg);
        };
        let durable = waiting.durable;
        let tag = self.push_pending(Pending::Waiting(waiting));
        let req = BackendRequest {
            raw,
            asking: false,
            durable,
            reply: self.reply_to(tag),
        };
        pool.send(req, self.id).await;
    }

    /// Answers a local command; true when the answer is an error.
    fn local(&mut self, cmd: LocalCmd, raw: &[u8], args: &[std::ops::Range<usize>]) -> bool {
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
            LocalCmd::Select => match std::str::from_utf8(&raw[args[1].clone()])
                .ok()
                .and_then(|s| s.parse::<i64>().ok())
            {
                None => encode::error(&mut out, "ERR value is not an integer or out of range"),
                Some(0) => encode::simple(&mut out, "OK"),
                Some(_) => encode::error(&mut out, "ERR SELECT is not allowed in cluster mode"),
            },
            LocalCmd::SlowLog => {
                let argv: Vec<&[u8]> = args[1..].iter().map(|r| &raw[r.clone()]).collect();
                out.extend_from_slice(&self.shared.metrics.slowlog.reply(&argv));
            }
        }
        let error = out.first() == Some(&b'-');
        self.push_reply(out.freeze());
        error
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
            self.push_pending(Pending::Ready(reply));
        }
    }

    fn push_pending(&mut self, p: Pending) -> Tag {
        let seq = self.base_seq + self.pending.len() as u64;
        self.pending.push_back(p);
        Tag { seq, part: 0 }
    }

    fn on_completion(&mut self, c: Completion) {
        let Some(idx) = c
            .tag
            .seq
            .checked_sub(self.base_seq)
            .and_then(|i| usize::try_from(i).ok())
        else {
            return;
        };
        let Some(Pending::Waiting(w)) = self.pending.get(idx) else {
            return;
        };
        let (readonly, cmd, start) = (w.readonly, w.cmd, w.start);
        let next = match c.outcome {
            Outcome::Reply(frame, ReplyKind::Error) => {
                self.on_error_reply(idx, frame, c.raw.clone(), c.tag)
            }
            Outcome::Reply(frame, _) => Some(frame),
            Outcome::Failed(err) => {
                if (err.retry_safe() || readonly) && self.begin_retry(idx) {
                    metrics().retry(RetryReason::Connection).increment(1);
                    self.shared.router.request_refresh();
                    self.reroute(idx, c.raw.clone(), c.tag);
                    None
                } else {
                    Some(error_frame(&failure_message(&err)))
                }
            }
        };
        if let Some(frame) = next {
            self.observe_reply(cmd, start, &frame, &c.raw);
            self.pending[idx] = Pending::Ready(frame);
        }
    }

    /// Counts a request's final reply and puts it in the slow log when it took long enough.
    fn observe_reply(
        &mut self,
        cmd: CommandId,
        start: std::time::Instant,
        frame: &[u8],
        raw: &Bytes,
    ) {
        let took = self
            .metrics
            .finished(cmd, start, frame.first() == Some(&b'-'));
        let slowlog = &self.shared.metrics.slowlog;
        if !self.metrics.enabled() || !slowlog.is_slow(took) {
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

    /// Sends `pending[idx]` again to whichever node owns its slot after a short backoff.
    fn reroute(&mut self, idx: usize, raw: Bytes, tag: Tag) {
        let (slot, attempts) = {
            let w = self.waiting(idx);
            (w.slot, w.attempts)
        };
        retry::spawn(Retry::reroute(self.origin(idx, tag), raw, slot, attempts));
    }

    fn origin(&mut self, idx: usize, tag: Tag) -> Origin {
        Origin {
            durable: self.waiting(idx).durable,
            router: self.shared.router.clone(),
            reply: self.reply_to(tag),
            affinity: self.id,
        }
    }

    /// Counts one redirect of `pending[idx]`; false once the hop limit is reached.
    fn begin_redirect(&mut self, idx: usize) -> bool {
        let max = self.shared.config.cluster.max_redirects;
        let w = self.waiting(idx);
        if w.redirects >= max {
            return false;
        }
        w.redirects += 1;
        true
    }

    /// Handles an error reply; returns the frame to pass on, or None when a retry was sent.
    fn on_error_reply(&mut self, idx: usize, frame: Bytes, raw: Bytes, tag: Tag) -> Option<Bytes> {
        let router = self.shared.router.clone();
        match crate::protocol::classify_error(&frame) {
            ServerError::Moved { slot, addr } => {
                if !self.begin_redirect(idx) {
                    return Some(frame);
                }
                metrics().moved.increment(1);
                let target = addr.to_string();
                retry::spawn(Retry::redirect(
                    self.origin(idx, tag),
                    raw,
                    target,
                    Some(slot),
                ));
                None
            }
            ServerError::Ask { addr, .. } => {
                if !self.begin_redirect(idx) {
                    return Some(frame);
                }
                metrics().ask.increment(1);
                let target = addr.to_string();
                retry::spawn(Retry::redirect(self.origin(idx, tag), raw, target, None));
                None
            }
            e @ (ServerError::TryAgain
            | ServerError::ClusterDown
            | ServerError::Loading
            | ServerError::MasterDown
            | ServerError::ReadOnly) => {
                if !self.begin_retry(idx) {
                    return Some(frame);
                }
                metrics().retry(retry_reason(&e)).increment(1);
                if !matches!(e, ServerError::TryAgain) {
                    router.request_refresh();
                }
                self.reroute(idx, raw, tag);
                None
            }
            _ => Some(frame),
        }
    }

    /// Starts (or continues) a retry of `pending[idx]`; false once its deadline has passed.
    fn begin_retry(&mut self, idx: usize) -> bool {
        let budget = crate::config::ms(self.shared.config.cluster.retry_deadline_ms);
        let w = self.waiting(idx);
        let now = Instant::now();
        let deadline = *w.deadline.get_or_insert(now + budget);
        if now >= deadline {
            return false;
        }
        w.attempts += 1;
        true
    }

    fn waiting(&mut self, idx: usize) -> &mut Waiting {
        match &mut self.pending[idx] {
            Pending::Waiting(w) => w,
            // Callers only pass indices they found Waiting in this same turn.
            Pending::Ready(_) => unreachable!("pending entry {idx} is not waiting"),
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
                self.wbuf.extend_from_slice(&frame);
                self.base_seq += 1;
            }
        }
    }

    /// Writes the write buffer out completely.
    async fn flush(&mut self) -> Result<(), SessionError> {
        self.collect_ready();
        self.metrics.wrote(self.wbuf.len());
        let mut data: &[u8] = &self.wbuf;
        while !data.is_empty() {
            match self.stream.try_write(data) {
                Ok(n) => data = &data[n..],
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    self.stream.writable().await?;
                }
                Err(e) => return Err(e.into()),
            }
        }
        self.wbuf.clear();
        if self.wbuf.capacity() > 1 << 20 {
            self.wbuf = BytesMut::new();
        }
        Ok(())
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

/// The `reason` label of a retry after an error reply.
fn retry_reason(e: &ServerError) -> RetryReason {
    match e {
        ServerError::TryAgain => RetryReason::TryAgain,
        ServerError::Loading => RetryReason::Loading,
        ServerError::MasterDown => RetryReason::MasterDown,
        ServerError::ReadOnly => RetryReason::ReadOnly,
        _ => RetryReason::ClusterDown,
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
