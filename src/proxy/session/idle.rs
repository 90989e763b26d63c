//! A connection's life between bursts of traffic: while a client sends nothing, its task holds
//! only the socket, a few ids and (once it has been active) the boxed session state; the
//! buffers, the completion channel and the session loop exist only while there is traffic.
//!
//! Idle clients are the common case for pooled client libraries, so their cost is what decides
//! how many connections a proxy can hold. The session loop's future nests every await of the
//! request path (reads, routing, backend sends) and is several KiB; it is boxed and dropped
//! whenever the connection has been quiet for a whole [`QUIET_PERIOD`], and the task goes back
//! to waiting for readability with nothing else allocated.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;

use super::{Ended, Session, NEXT_SESSION_ID};
use crate::metrics::session::Connected;
use crate::proxy::Shared;
use crate::security::limits;
use crate::tls::ClientStream;

/// A session with nothing in flight and no traffic for this long releases its buffers and
/// channel and waits in the light state. Long enough that a client sending one request every
/// few hundred milliseconds keeps its buffers (no allocation per request), short enough that
/// connections left open by pools cost little soon after their last use.
pub(super) const QUIET_PERIOD: Duration = Duration::from_secs(1);

/// Connections waiting in the light state.
static RESTING: AtomicUsize = AtomicUsize::new(0);

/// Client connections currently resting: connected, with nothing in flight, holding no
/// buffers (never used yet, or quiet for a while).
pub fn resting_clients() -> usize {
    RESTING.load(Ordering::Relaxed)
}

/// Serves one client until it disconnects, sends QUIT, breaks the protocol, or shutdown drains it.
/// `permit` is its place under `client.max_connections`, held until the connection closes.
pub fn run(
    stream: ClientStream,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    permit: OwnedSemaphorePermit,
) -> impl Future<Output = ()> + Send {
    // Not an `async fn`, and `drive` borrows: an async fn keeps its arguments in the task
    // beside the locals they are moved into, so `Conn` would be stored twice (96 bytes more
    // in every idle client's task). The block keeps it once, as its capture.
    let mut conn = Conn {
        fresh: Some((stream, shared)),
        session: None,
        shutdown,
        id: NEXT_SESSION_ID.fetch_add(1, Ordering::Relaxed),
        created: tokio::time::Instant::now(),
        _permit: permit,
        _connected: Connected::new(),
    };
    async move { conn.drive().await }
}

/// One client connection: its socket until the first bytes arrive, its session after.
struct Conn {
    /// The socket and shared state, until the session takes them.
    fresh: Option<(ClientStream, Arc<Shared>)>,
    session: Option<Box<Session>>,
    shutdown: CancellationToken,
    id: usize,
    /// When the client connected (`CLIENT INFO` age).
    created: tokio::time::Instant,
    _permit: OwnedSemaphorePermit,
    _connected: Connected,
}

impl Conn {
    async fn drive(&mut self) {
        loop {
            // A session that came to rest has been silent for a quiet period already.
            let (stream, shared, silent) = match (&self.session, &self.fresh) {
                (Some(s), _) => (&s.stream, &s.shared, QUIET_PERIOD),
                (None, Some((stream, shared))) => (stream, shared, Duration::ZERO),
                (None, None) => return,
            };
            if !wait_for_data(stream, shared, &self.shutdown, silent).await {
                return;
            }
            let session = match (&mut self.session, self.fresh.take()) {
                (Some(s), _) => s,
                (None, Some((stream, shared))) => self.session.insert(Box::new(Session::new(
                    stream,
                    shared,
                    self.id,
                    self.created,
                ))),
                (None, None) => return,
            };
            // Boxed: the loop's future is large and lives only while the client is active.
            match Box::pin(session.serve(&self.shutdown)).await {
                Ok(Ended::Quiet) => session.release(),
                Ok(Ended::Closed) => return,
                Err(e) => {
                    tracing::debug!(error = %e, "client session ended");
                    return;
                }
            }
        }
    }
}

/// Waits until the client sends something. False when it closes, the proxy shuts down, or
/// `client.idle_timeout_ms` passes first (counting `silent`, the time it has already been
/// silent, at least); nothing is in flight here, so each of those ends the connection at once.
///
/// Written as one `poll_fn` over the three events rather than a `select!` of futures: this
/// state is in every idle client's task, and the futures of `peek()` and `select!` would
/// add about 200 bytes to it. `poll_peek` keeps its waker in the socket's registration.
fn wait_for_data<'a>(
    stream: &'a ClientStream,
    shared: &Shared,
    shutdown: &'a CancellationToken,
    silent: Duration,
) -> impl Future<Output = bool> + 'a {
    let resting = Resting::new();
    let idle_timeout = crate::config::ms(shared.config.client.idle_timeout_ms);
    // Boxed, and only with a timeout: the timer entry would otherwise grow every idle task.
    let mut expire = (!idle_timeout.is_zero())
        .then(|| Box::pin(tokio::time::sleep(idle_timeout.saturating_sub(silent))));
    // Not an `async fn`: its four arguments would stay in the state beside what is computed
    // from them; the block keeps only what the wait needs.
    async move {
        let _resting = resting;
        let mut cancelled = std::pin::pin!(shutdown.cancelled());
        std::future::poll_fn(|cx| {
            if cancelled.as_mut().poll(cx).is_ready() {
                return Poll::Ready(false);
            }
            // A peek, not `readable()`: a socket is reported readable as soon as it is
            // registered, before any data, and entering the session then would allocate its
            // buffers for nothing.
            if let Poll::Ready(has_data) = stream.poll_has_data(cx) {
                return Poll::Ready(has_data);
            }
            if let Some(sleep) = &mut expire {
                if sleep.as_mut().poll(cx).is_ready() {
                    limits::count_disconnect("idle_timeout");
                    return Poll::Ready(false);
                }
            }
            Poll::Pending
        })
        .await
    }
}

/// Counts one connection in [`RESTING`] while it lives.
struct Resting;

impl Resting {
    fn new() -> Self {
        RESTING.fetch_add(1, Ordering::Relaxed);
        Self
    }
}

impl Drop for Resting {
    fn drop(&mut self) {
        RESTING.fetch_sub(1, Ordering::Relaxed);
    }
}
