//! One client connection: reads pipelined requests, dispatches each without waiting for the
//! others, and writes replies back in request order. The session only sequences; each
//! concern is a submodule that owns its own state:
//!
//! - `io`: the read and write buffers, the output limit, write backpressure, the idle timer;
//! - `dispatch`: scanning requests, the security check and classification, and the one
//!   `match` on the routing decision;
//! - `pipeline`: sequence numbers, the queue of requests in flight, in-order completion;
//! - `apply`: carrying out what `proxy::recovery` decides about a forwarded request's
//!   outcome (reply, redirect, re-route, reload, fail);
//! - `modes/`: the connection modes, each owning its state: `modes/mod.rs` (pinned
//!   requests, blocking commands, request barriers, the retry lane), `client` (HELLO,
//!   CLIENT, RESET, RESP3 output), `transaction` (MULTI/EXEC), `subscribe` (Pub/Sub);
//! - `parts`: sending and splitting fanned-out requests; `idle`: a client at rest.
//!
//! One GET: `io::read` → `dispatch::route` (scan, check, classify, `forward`) → the node's
//! pool → a completion → `apply::on_completion` (`recovery::decide`: a plain reply) →
//! `pipeline` (in order) → `io::flush`.

mod apply;
mod dispatch;
mod idle;
mod inflight;
mod io;
mod modes;
mod parts;
mod pipeline;

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::Shared;
use crate::backend::NodePool;
use crate::metrics::SessionMetrics;
use crate::protocol::RequestScanner;
use crate::proxy::recovery::error_frame;
use crate::security::limits::{self, IdleTimer};
use crate::security::ClientState;
use crate::tls::ClientStream;
use io::ClientIo;
use pipeline::{Pending, Pipeline};

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

struct Session {
    stream: ClientStream,
    shared: Arc<Shared>,
    /// Picks this client's connection in each node pool.
    id: usize,
    /// Buffers and socket state.
    io: ClientIo,
    /// Requests in flight, in request order.
    pipe: Pipeline,
    scanner: RequestScanner,
    /// Scratch for key indices.
    keys: Vec<usize>,
    /// No more requests are read (QUIT, protocol error, client EOF or shutdown).
    closing: bool,
    /// Authentication state and compiled command rules.
    sec: ClientState,
    /// Primaries this client sent writes to since its last WAIT.
    written: Vec<Arc<NodePool>>,
    /// What the client set on its connection: protocol, name.
    client: modes::client::ClientState,
    /// Transaction, pinned connection, subscriptions, held request, retries.
    modes: modes::Modes,
    /// Per-request metric accumulators, flushed once per loop turn.
    metrics: SessionMetrics,
}

impl Session {
    /// The full state of a client that has sent something (`created`: when it connected).
    fn new(stream: ClientStream, shared: Arc<Shared>, id: usize, created: Instant) -> Self {
        let client = modes::client::ClientState::new(id, &stream, created);
        let metrics = SessionMetrics::new(
            shared.config.metrics.enabled,
            shared.config.metrics.hot_keys > 0,
        );
        let idle = IdleTimer::new(crate::config::ms(shared.config.client.idle_timeout_ms));
        Self {
            sec: shared.security.client(id as u64),
            io: ClientIo::new(idle),
            pipe: Pipeline::default(),
            scanner: RequestScanner::new(shared.scan_limits),
            stream,
            shared,
            keys: Vec::new(),
            closing: false,
            id,
            written: Vec::new(),
            client,
            modes: modes::Modes::default(),
            metrics,
        }
    }
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
            let full =
                self.pipe.len() >= max_inflight || self.pipe.requests.over(max_inflight_bytes);
            if !self.io.rbuf.is_empty() && !full {
                // Requests left buffered when the in-flight cap was hit: the socket will not
                // signal them again.
                self.dispatch_all().await;
            }
            self.flush()?;
            self.metrics.flush(self.pipe.len());
            if self.io.over_output_limit(self.pipe.queued, output_limit) {
                // A client that does not read its replies, or whose replies pile up behind a
                // slow request, must not make the proxy grow.
                limits::count_disconnect("output_buffer_limit");
                tracing::debug!(
                    buffered = self.io.wbuf.len(),
                    queued = self.pipe.queued,
                    "client over the output buffer limit"
                );
                return Ok(Ended::Closed);
            }
            if self.closing && self.pipe.is_empty() && self.io.wbuf.is_empty() {
                return Ok(Ended::Closed);
            }
            let full =
                self.pipe.len() >= max_inflight || self.pipe.requests.over(max_inflight_bytes);
            let can_read = !self.closing && !full && self.modes.may_read(self.io.rbuf.len());
            let capped = !self.closing && full;
            if capped && !self.io.capped {
                limits::count_inflight_cap();
                tracing::debug!(
                    requests = self.pipe.len(),
                    bytes = self.pipe.requests.total(),
                    "client reading paused at its in-flight cap"
                );
            }
            self.io.capped = capped;
            let backlog = if self.io.write_blocked {
                self.modes.pubsub.as_ref().map(|p| p.backlog())
            } else {
                None
            };
            tokio::select! {
                biased;
                _ = self.pipe.recv(&mut completions) => {
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
                ready = modes::writable(&self.stream, backlog.as_deref()), if self.io.write_blocked => {
                    ready?;
                    self.io.write_blocked = false;
                }
                _ = self.io.idle.tick() => {
                    if self.io.idle.expired(!self.pipe.is_empty()) {
                        limits::count_disconnect("idle_timeout");
                        return Ok(Ended::Closed);
                    }
                }
                _ = quiet.tick() => {
                    if !std::mem::take(&mut self.io.active) && self.quiescent() {
                        return Ok(Ended::Quiet);
                    }
                }
            }
        }
    }
}

impl Session {
    /// True when nothing is in flight, buffered or held, and nothing but this session can
    /// send it a completion: the state can rest without its buffers and channel.
    fn quiescent(&self) -> bool {
        self.pipe.quiescent()
            && self.io.is_idle()
            && !self.closing
            && !self.stalled()
            && self.modes.pubsub.is_none()
    }

    /// Gives back the buffers, scratch space and completion channel of a quiescent session;
    /// each is created again on first use.
    fn release(&mut self) {
        self.io.release();
        self.pipe.release();
        self.keys = Vec::new();
        self.scanner = RequestScanner::new(self.shared.scan_limits);
        self.modes.release();
    }
}
