//! One multiplexed, pipelined connection to a Redis node.
//!
//! A supervisor task owns the socket: it connects (with capped, jittered backoff), then runs a
//! writer and a reader side by side. The writer drains every queued request into one buffer and
//! one syscall, recording a reply slot per request in a FIFO; the reader finds reply boundaries
//! and hands each frame to the slot at the FIFO's head. Redis answers in order on a connection,
//! so the FIFO is the whole matching scheme.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::durable::DurableWait;
use super::{BackendError, BackendRequest, Completion, Outcome, ReplyTo, MAX_REPLY_DEPTH};
use crate::metrics::histogram::AtomicHistogram;
use crate::net::{dial, Credentials, DialError, DialOptions, NodeAddr};
use crate::protocol::{ReplyKind, ResponseScanner};
use crate::sync::Mutex;
use crate::tls::{UpstreamRead, UpstreamStream, UpstreamTls, UpstreamWrite};

/// `ASKING` in wire form, sent before a request redirected by `-ASK`.
const ASKING: &[u8] = b"*1\r\n$6\r\nASKING\r\n";
/// Most requests taken from the queue for one write.
const WRITE_BATCH: usize = 256;
/// Requests larger than this are written from their own buffer instead of copied into the batch.
const COPY_LIMIT: usize = 64 << 10;
/// Read chunk reserved when the read buffer runs low.
const READ_CHUNK: usize = 64 << 10;
/// At most one warning per connection this often about a node that cannot be reached; the
/// others go to debug, so a dead node does not flood the log while the backoff retries.
const WARN_EVERY: Duration = Duration::from_secs(30);

/// How to reach and talk to one node.
#[derive(Debug, Clone)]
pub struct ConnSettings {
    /// The node's address.
    pub addr: SocketAddr,
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// A reply slower than this marks the connection dead.
    pub command_timeout: Duration,
    /// First reconnect delay.
    pub backoff_min: Duration,
    /// Cap of the reconnect delay.
    pub backoff_max: Duration,
    /// Requests that may wait to be written.
    pub queue_depth: usize,
    /// Largest reply accepted.
    pub max_reply_bytes: usize,
    /// `AUTH` credentials, sent on connect.
    pub auth: Option<Credentials>,
    /// Send `READONLY` on connect (replica connections serving reads).
    pub readonly: bool,
    /// Record per-reply latency (`metrics.enabled`).
    pub metrics: bool,
    /// Durable-write mode: the `WAIT` sent after each durable request.
    pub wait: Option<DurableWait>,
    /// TLS to the node (`[upstream_tls]`); `None` = plaintext.
    pub tls: Option<Arc<UpstreamTls>>,
}

impl ConnSettings {
    /// How [`dial`] reaches the node: `HELLO <proto>` when set, a final `PING` when `ping`
    /// (the handshake replies share the command timeout).
    pub fn dial_options(&self, hello: Option<u8>, ping: bool) -> DialOptions {
        DialOptions {
            connect_timeout: self.connect_timeout,
            handshake_timeout: self.command_timeout,
            auth: self.auth.clone(),
            tls: self.tls.clone(),
            hello,
            readonly: self.readonly,
            client_name: None,
            lib_info: false,
            ping,
        }
    }
}

/// Handle to one backend connection; cheap to clone.
#[derive(Debug, Clone)]
pub struct BackendConn {
    tx: mpsc::Sender<BackendRequest>,
    addr: Arc<str>,
    connected: Arc<AtomicBool>,
}

impl BackendConn {
    /// Starts the connection's supervisor task; it ends when every handle is dropped.
    pub fn spawn(settings: Arc<ConnSettings>) -> Self {
        let (tx, rx) = mpsc::channel(settings.queue_depth);
        let connected = Arc::new(AtomicBool::new(false));
        tokio::spawn(supervise(settings.clone(), rx, connected.clone()));
        Self {
            tx,
            addr: settings.addr.to_string().into(),
            connected,
        }
    }

    /// Queues a request; when the queue is full the caller waits for room (backpressure on
    /// the client), and a connection that has shut down fails the request as not sent.
    pub async fn send(&self, req: BackendRequest) {
        let req = match self.tx.try_send(req) {
            Ok(()) => return,
            Err(mpsc::error::TrySendError::Full(r)) => {
                // The per-node queue bound is hit: this client now waits (backpressure).
                metrics::counter!("slotway_backend_queue_full_total").increment(1);
                r
            }
            Err(mpsc::error::TrySendError::Closed(r)) => {
                return fail(r, BackendError::NotSent(self.addr.to_string()))
            }
        };
        if let Err(mpsc::error::SendError(r)) = self.tx.send(req).await {
            fail(r, BackendError::NotSent(self.addr.to_string()));
        }
    }

    /// True while the connection is established.
    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }
}

/// A request written to the socket, waiting for its reply.
enum InFlight {
    /// The reply to an `ASKING` the writer added; dropped.
    Asking,
    /// A client's request.
    Request {
        reply: ReplyTo,
        raw: Bytes,
        /// Replies it is owed (commands in `raw`); they are delivered together.
        replies: u32,
        sent_at: Instant,
        /// Durable mode: followed by a `WAIT`; holds the command's own reply until the
        /// WAIT's reply arrives.
        durable: Option<Option<(Bytes, ReplyKind)>>,
    },
}

type Fifo = Mutex<VecDeque<InFlight>>;

fn deliver(reply: ReplyTo, raw: Bytes, outcome: Outcome) {
    // A session that has gone away no longer wants the reply.
    let _ = reply.tx.send(Completion {
        tag: reply.tag,
        raw,
        outcome,
    });
}

fn fail(req: BackendRequest, err: BackendError) {
    deliver(req.reply, req.raw, Outcome::Failed(err));
}

async fn supervise(
    settings: Arc<ConnSettings>,
    mut rx: mpsc::Receiver<BackendRequest>,
    connected: Arc<AtomicBool>,
) {
    let addr = settings.addr.to_string();
    let obs = NodeMetrics::new(&addr, settings.metrics);
    let mut warned: Option<(Instant, u64)> = None;
    let mut backoff = settings.backoff_min;
    loop {
        match connect(&settings).await {
            Ok(stream) => {
                backoff = settings.backoff_min;
                warned = None;
                connected.store(true, Ordering::Relaxed);
                obs.connections.increment(1.0);
                let fifo = Fifo::default();
                let result = serve(stream, &mut rx, &fifo, &settings, &obs).await;
                obs.connections.decrement(1.0);
                connected.store(false, Ordering::Relaxed);
                let lost = std::mem::take(&mut *fifo.lock());
                for entry in lost {
                    if let InFlight::Request { reply, raw, .. } = entry {
                        deliver(
                            reply,
                            raw,
                            Outcome::Failed(BackendError::Lost(addr.clone())),
                        );
                    }
                }
                match result {
                    Ok(()) => return,
                    Err(e) => tracing::warn!(node = %addr, error = %e, "backend connection lost"),
                }
                // Requests still queued were never written: hand them back so the session can
                // re-route them (the node may be gone for good after a failover).
                while let Ok(req) = rx.try_recv() {
                    fail(req, BackendError::NotSent(addr.clone()));
                }
            }
            Err(e) => {
                rate_limited_warn(&mut warned, &addr, &e);
                if !refuse_until(&mut rx, &addr, jitter(backoff)).await {
                    return;
                }
                backoff = (backoff * 2).min(settings.backoff_max);
            }
        }
    }
}

/// Warns about a failed connect at most once per [`WARN_EVERY`], counting the ones in between.
fn rate_limited_warn(warned: &mut Option<(Instant, u64)>, addr: &str, e: &ConnError) {
    match warned {
        Some((at, suppressed)) if at.elapsed() < WARN_EVERY => {
            *suppressed += 1;
            tracing::debug!(node = %addr, error = %e, "backend connect failed");
        }
        _ => {
            let suppressed = warned.map_or(0, |(_, n)| n);
            tracing::warn!(node = %addr, error = %e, suppressed, "cannot connect to backend node");
            *warned = Some((Instant::now(), 0));
        }
    }
}

/// The metric handles of one node, created once per connection task.
struct NodeMetrics {
    connections: metrics::Gauge,
    /// Reply latency; `None` when `metrics.enabled` is off.
    duration: Option<Arc<AtomicHistogram>>,
}

impl NodeMetrics {
    fn new(addr: &str, enabled: bool) -> Self {
        crate::metrics::install();
        let node = addr.to_string();
        Self {
            connections: metrics::gauge!(crate::metrics::names::BACKEND_CONNECTIONS, "node" => node.clone()),
            duration: enabled.then(|| crate::metrics::backend_histogram(&node)),
        }
    }
}

/// Replies of one read that were written in the same batch share one latency: one histogram
/// call for the run.
#[derive(Default)]
struct LatencyRun {
    sent_at: Option<Instant>,
    count: u64,
}

impl LatencyRun {
    #[inline]
    fn add(&mut self, sent_at: Instant, now: Instant, h: &AtomicHistogram) {
        if self.sent_at == Some(sent_at) {
            self.count += 1;
            return;
        }
        self.flush(now, h);
        self.sent_at = Some(sent_at);
        self.count = 1;
    }

    fn flush(&mut self, now: Instant, h: &AtomicHistogram) {
        if let Some(sent) = self.sent_at.take() {
            h.record_n(now.duration_since(sent), self.count);
        }
    }
}

/// While waiting to reconnect, fail new requests at once rather than letting them hang.
/// Returns false when every handle is gone.
async fn refuse_until(
    rx: &mut mpsc::Receiver<BackendRequest>,
    addr: &str,
    delay: Duration,
) -> bool {
    let deadline = Instant::now() + delay;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => return true,
            req = rx.recv() => match req {
                Some(req) => fail(req, BackendError::Unreachable(addr.to_string())),
                None => return false,
            },
        }
    }
}

/// Spreads reconnects of many connections so they don't hit a recovering node together.
fn jitter(d: Duration) -> Duration {
    let ms = d.as_millis() as u64;
    Duration::from_millis(ms / 2 + fastrand::u64(0..=ms / 2 + 1))
}

/// Errors that end one connection; the supervisor reconnects.
#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("no reply within the command timeout")]
    ReplyTimeout,
    #[error("node closed the connection")]
    Eof,
    #[error("protocol: {0}")]
    Protocol(String),
    #[error(transparent)]
    Dial(#[from] DialError),
}

async fn connect(s: &ConnSettings) -> Result<UpstreamStream, ConnError> {
    let opts = s.dial_options(None, true);
    Ok(dial(&NodeAddr::from_socket(s.addr), &opts).await?.stream)
}

/// Runs writer and reader until the socket fails (Err) or every handle is gone and all replies
/// arrived (Ok).
async fn serve(
    stream: UpstreamStream,
    rx: &mut mpsc::Receiver<BackendRequest>,
    fifo: &Fifo,
    s: &ConnSettings,
    obs: &NodeMetrics,
) -> Result<(), ConnError> {
    let (rd, wr) = stream.into_split();
    let writer = write_loop(wr, rx, fifo, s);
    let reader = read_loop(rd, fifo, s, obs.duration.as_deref());
    tokio::pin!(writer, reader);
    tokio::select! {
        res = &mut writer => {
            res?;
            // Every handle is gone: let the reader collect the replies still owed, then stop.
            drain_replies(&mut reader, fifo).await
        }
        res = &mut reader => res,
    }
}

async fn drain_replies(
    reader: &mut (impl std::future::Future<Output = Result<(), ConnError>> + Unpin),
    fifo: &Fifo,
) -> Result<(), ConnError> {
    let empty = || fifo.lock().is_empty();
    loop {
        if empty() {
            return Ok(());
        }
        tokio::select! {
            res = &mut *reader => return res,
            _ = tokio::time::sleep(Duration::from_millis(10)) => {}
        }
    }
}

/// Requests taken from the queue but not yet in the FIFO. If the connection fails meanwhile
/// (the writer is dropped while it yields), they were never written: each fails as not sent,
/// so its session retries it, instead of vanishing with the writer.
struct Unsent<'a> {
    reqs: Vec<BackendRequest>,
    addr: &'a SocketAddr,
}

impl Drop for Unsent<'_> {
    fn drop(&mut self) {
        for req in self.reqs.drain(..) {
            fail(req, BackendError::NotSent(self.addr.to_string()));
        }
    }
}

async fn write_loop(
    mut wr: UpstreamWrite,
    rx: &mut mpsc::Receiver<BackendRequest>,
    fifo: &Fifo,
    s: &ConnSettings,
) -> Result<(), ConnError> {
    let wait = &s.wait;
    let mut unsent = Unsent {
        reqs: Vec::with_capacity(WRITE_BATCH),
        addr: &s.addr,
    };
    let batch = &mut unsent.reqs;
    let mut buf = BytesMut::new();
    loop {
        if rx.recv_many(batch, WRITE_BATCH).await == 0 {
            return Ok(());
        }
        if batch.len() < WRITE_BATCH {
            // The first client to queue a request wakes this task at once (the runtime runs a
            // task woken by the running one next). Yielding lets every other client already
            // woken by the same poll of the sockets queue its request too, so one write
            // carries them all instead of one write per request.
            tokio::task::yield_now().await;
            while batch.len() < WRITE_BATCH {
                match rx.try_recv() {
                    Ok(req) => batch.push(req),
                    Err(_) => break,
                }
            }
        }
        buf.clear();
        let mut large: Vec<Bytes> = Vec::new();
        {
            let mut q = fifo.lock();
            let now = Instant::now();
            for req in batch.drain(..) {
                if req.asking {
                    buf.extend_from_slice(ASKING);
                    q.push_back(InFlight::Asking);
                }
                if req.raw.len() > COPY_LIMIT {
                    // Keep order: flush what is buffered before the large request.
                    large.push(buf.split().freeze());
                    large.push(req.raw.clone());
                } else {
                    buf.extend_from_slice(&req.raw);
                }
                let durable = match (wait, req.durable) {
                    (Some(w), true) => {
                        buf.extend_from_slice(&w.command);
                        Some(None)
                    }
                    _ => None,
                };
                q.push_back(InFlight::Request {
                    reply: req.reply,
                    raw: req.raw,
                    replies: req.replies.max(1),
                    sent_at: now,
                    durable,
                });
            }
        }
        for chunk in large {
            wr.write_all(&chunk).await?;
        }
        if !buf.is_empty() {
            wr.write_all(&buf).await?;
        }
        // TLS may hold the last records back; a plain socket has nothing to flush.
        wr.flush().await?;
        if buf.capacity() > 4 * COPY_LIMIT {
            buf = BytesMut::new();
        }
    }
}

/// A request completed by a reply: where it goes, its bytes, the reply, and when it was written.
type Answered = (ReplyTo, Bytes, Bytes, ReplyKind, Instant);

/// Replies the FIFO's head is owed, or None when the FIFO is empty (the writer may be about
/// to add an entry, so the answer must be asked again).
fn head_wants(q: &VecDeque<InFlight>) -> Option<u32> {
    q.front().map(|e| match e {
        InFlight::Asking => 1,
        InFlight::Request { replies, .. } => *replies,
    })
}

/// A reply frame (or the run of frames a request of several commands is owed) is for the
/// FIFO's head. Returns the request it completes, if any (an `ASKING` reply completes
/// nothing; a durable request's own reply waits for its `WAIT`), and what the next head wants.
fn take_answered(
    fifo: &Fifo,
    frame: Bytes,
    kind: ReplyKind,
    wait: Option<&DurableWait>,
) -> Result<(Option<Answered>, Option<u32>), ConnError> {
    let mut q = fifo.lock();
    match q.front_mut() {
        None => return Err(ConnError::Protocol("reply without a request".into())),
        Some(InFlight::Asking) => {
            q.pop_front();
            return Ok((None, head_wants(&q)));
        }
        Some(InFlight::Request {
            durable: Some(held @ None),
            ..
        }) => {
            *held = Some((frame, kind));
            return Ok((None, Some(1)));
        }
        Some(InFlight::Request { .. }) => {}
    }
    let Some(InFlight::Request {
        reply,
        raw,
        durable,
        sent_at,
        ..
    }) = q.pop_front()
    else {
        return Ok((None, head_wants(&q)));
    };
    let next = head_wants(&q);
    drop(q);
    let answered = match (durable, wait) {
        (Some(Some((own, own_kind))), Some(w)) => {
            let (out, kind) = w.verdict(own, own_kind, &frame);
            (reply, raw, out, kind, sent_at)
        }
        _ => (reply, raw, frame, kind, sent_at),
    };
    Ok((Some(answered), next))
}

async fn read_loop(
    mut rd: UpstreamRead,
    fifo: &Fifo,
    s: &ConnSettings,
    latency: Option<&AtomicHistogram>,
) -> Result<(), ConnError> {
    let mut buf = BytesMut::new();
    let mut scanner = ResponseScanner::new(MAX_REPLY_DEPTH);
    let mut run = LatencyRun::default();
    // When the bytes being scanned arrived; one clock read per socket read.
    let mut read_at = Instant::now();
    // Complete frames kept at the front of `buf` for a head owed several (bytes, frames),
    // and what the head wants, when known.
    let (mut held, mut held_frames) = (0usize, 0u32);
    let mut wants: Option<u32> = None;
    loop {
        while let Some(r) = scanner
            .scan(&buf[held..])
            .map_err(|e| ConnError::Protocol(e.to_string()))?
        {
            held += r.len;
            held_frames += 1;
            let want = match wants {
                Some(w) => w,
                None => head_wants(&fifo.lock())
                    .ok_or_else(|| ConnError::Protocol("reply without a request".into()))?,
            };
            if held_frames < want {
                wants = Some(want);
                continue;
            }
            let frame = buf.split_to(held).freeze();
            (held, held_frames) = (0, 0);
            let (answered, next) = take_answered(fifo, frame, r.kind, s.wait.as_ref())?;
            wants = next;
            if let Some((reply, raw, frame, kind, sent_at)) = answered {
                if let Some(h) = latency {
                    run.add(sent_at, read_at, h);
                }
                deliver(reply, raw, Outcome::Reply(frame, kind))
            }
        }
        if let Some(h) = latency {
            run.flush(read_at, h);
        }
        // The bound is per reply: frames held for a request of several commands are replies
        // the session would hold anyway.
        if buf.len() - held > s.max_reply_bytes {
            return Err(ConnError::Protocol(
                "reply exceeds backend.max_reply_bytes".into(),
            ));
        }
        if buf.capacity() - buf.len() < READ_CHUNK / 4 {
            buf.reserve(READ_CHUNK);
        }
        let oldest = fifo.lock().iter().find_map(|e| match e {
            InFlight::Request { sent_at, .. } => Some(*sent_at),
            InFlight::Asking => None,
        });
        // With nothing owed the wait is only a re-check point: requests written meanwhile get
        // their deadline on the next turn, so a hung node is found within two timeouts.
        let wake = oldest.unwrap_or_else(Instant::now) + s.command_timeout;
        let n = match tokio::time::timeout_at(wake, rd.read_buf(&mut buf)).await {
            Ok(n) => n?,
            Err(_) if oldest.is_some() => return Err(ConnError::ReplyTimeout),
            Err(_) => continue,
        };
        if n == 0 {
            return Err(ConnError::Eof);
        }
        if latency.is_some() {
            read_at = Instant::now();
        }
    }
}
