//! Owns the published topology: a lock-free snapshot slot, the refresher task that fills it
//! (periodically and on demand, one fetch at a time) and the handle the rest of the proxy holds.
//!
//! How a refresh round picks and judges its sources lives in [`super::round`].

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::{ArcSwapOption, Guard};
use tokio::sync::{watch, Notify};
use tokio_util::sync::{CancellationToken, DropGuard};

use super::diff::TopologyDiff;
use super::error::TopologyError;
use super::fetch::FetchOptions;
use super::round::{real_fetcher, Fetcher, Refresher};
use super::suspect::Suspects;
use super::topology::Topology;
use crate::sync::Mutex;

/// What the refresher reports about its work. The cluster layer records no metrics itself (it sits
/// below `metrics`); the proxy passes an observer that does. Every method defaults to doing nothing.
pub trait RefreshObserver: Send + Sync + std::fmt::Debug {
    /// A refresh round ended after `took`; `ok` when it published (or confirmed) a snapshot.
    fn round_finished(&self, _ok: bool, _took: Duration) {}
    /// A snapshot with a changed layout was published (before the epoch moves).
    fn topology_changed(&self, _topology: &Topology) {}
    /// A node known as a replica became a primary.
    fn failover(&self) {}
}

/// The observer that records nothing, for refreshers started without one (tests, tools).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoObserver;

impl RefreshObserver for NoObserver {}

/// Settings of the refresher.
#[derive(Debug, Clone)]
pub struct RefreshConfig {
    /// `host:port` of nodes to ask when the snapshot's own nodes do not answer; re-resolved each time.
    pub seeds: Vec<String>,
    /// Time between periodic refreshes while all is well (default 10 s).
    pub period: Duration,
    /// Connection settings for each fetch.
    pub fetch: FetchOptions,
    /// On-demand refreshes start no more often than this (default 50 ms).
    pub min_interval: Duration,
    /// Time between refreshes while a primary is suspected down (default 50 ms).
    pub suspect_poll: Duration,
    /// How long one report of a failed primary keeps the fast polling going (default 10 s).
    pub suspect_window: Duration,
    /// Told about rounds, changes and failovers (default: [`NoObserver`]).
    pub observer: Arc<dyn RefreshObserver>,
}

impl RefreshConfig {
    /// Defaults for everything but the seeds.
    pub fn new(seeds: Vec<String>) -> Self {
        RefreshConfig {
            seeds,
            period: Duration::from_secs(10),
            fetch: FetchOptions::default(),
            min_interval: Duration::from_millis(50),
            suspect_poll: Duration::from_millis(50),
            suspect_window: Duration::from_secs(10),
            observer: Arc::new(NoObserver),
        }
    }
}

/// Called with every snapshot whose layout changed, on the publishing task, before the epoch moves.
///
/// Keep it short, and do not publish from it (publishers are serialised: it would deadlock).
pub type UpdateHook = Box<dyn Fn(&Arc<Topology>) + Send + Sync>;

/// Counters for tests and the admin endpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RefreshStats {
    /// Refresh rounds started (one round asks sources until one answer is accepted).
    pub rounds: u64,
    /// Individual fetches attempted across all rounds.
    pub fetches: u64,
    /// Snapshots published with a changed layout (the epoch).
    pub epoch: u64,
}

/// The outcome of one finished round, kept for waiters.
#[derive(Clone)]
pub(crate) struct Completion {
    pub(crate) round: u64,
    pub(crate) result: Result<Arc<Topology>, TopologyError>,
}

/// State shared by the handles and the refresher task.
pub(crate) struct Shared {
    current: ArcSwapOption<Topology>,
    epoch: watch::Sender<u64>,
    /// Set by a refresh request not yet served; cleared when a round starts.
    pending: AtomicBool,
    pub(crate) wake: Notify,
    pub(crate) rounds: AtomicU64,
    pub(crate) fetches: AtomicU64,
    pub(crate) completed: watch::Sender<Option<Completion>>,
    on_update: Option<UpdateHook>,
    observer: Arc<dyn RefreshObserver>,
    /// Orders publishers so each change is diffed against its true predecessor and hooks run in order.
    publish_lock: Mutex<()>,
    /// Primaries whose connections failed, polled for quickly until a new map replaces them.
    pub(crate) suspects: Suspects,
}

impl Shared {
    fn new(
        on_update: Option<UpdateHook>,
        observer: Arc<dyn RefreshObserver>,
        suspect_window: Duration,
    ) -> Self {
        Shared {
            current: ArcSwapOption::empty(),
            epoch: watch::Sender::new(0),
            pending: AtomicBool::new(false),
            wake: Notify::new(),
            rounds: AtomicU64::new(0),
            fetches: AtomicU64::new(0),
            completed: watch::Sender::new(None),
            on_update,
            observer,
            publish_lock: Mutex::new(()),
            suspects: Suspects::new(suspect_window),
        }
    }

    pub(crate) fn current(&self) -> Option<Arc<Topology>> {
        self.current.load_full()
    }

    fn request(&self) {
        if !self.pending.swap(true, Ordering::SeqCst) {
            self.wake.notify_one();
        }
    }

    /// Marks pending requests as served by the round about to start and numbers it.
    pub(crate) fn start_round(&self) -> u64 {
        self.pending.store(false, Ordering::SeqCst);
        self.rounds.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// Stores `new`; bumps the epoch, logs one line and calls the hook only if the layout changed.
    pub(crate) fn publish(&self, new: Arc<Topology>, fast_path: bool) -> Arc<Topology> {
        let _order = self.publish_lock.lock();
        let old = self.current.swap(Some(Arc::clone(&new)));
        let changed = match old {
            None => {
                tracing::info!(
                    shards = new.shards.len(),
                    nodes = new.nodes.len(),
                    slots = new.assigned_slots(),
                    "topology: first snapshot"
                );
                true
            }
            Some(old) => {
                let diff = TopologyDiff::between(&old, &new);
                if !diff.is_empty() && fast_path {
                    tracing::debug!(change = %diff, "topology: redirect applied");
                } else if !diff.is_empty() {
                    tracing::info!(change = %diff, slots = new.assigned_slots(), "topology changed");
                    log_events(&old, &new, self.observer.as_ref());
                }
                !diff.is_empty()
            }
        };
        if changed {
            self.observer.topology_changed(&new);
            // The hook runs before the epoch moves, so epoch subscribers see its effects.
            if let Some(hook) = &self.on_update {
                hook(&new);
            }
            self.epoch.send_modify(|e| *e += 1);
        }
        new
    }

    fn apply_moved(&self, slot: u16, to: SocketAddr) -> bool {
        let moved = {
            let current = self.current.load();
            match current.as_ref().and_then(|t| t.with_slot_moved(slot, to)) {
                Some(t) => t,
                None => return false,
            }
        };
        // Another publisher may slip in between load and publish; the refresh that a MOVED also
        // triggers repairs whatever this overwrites.
        self.publish(Arc::new(moved), true);
        true
    }
}

/// One line per failover (a known node became primary) and per node added or removed; tells
/// `observer` of each failover.
fn log_events(old: &Topology, new: &Topology, observer: &dyn RefreshObserver) {
    for (_, node) in new.primaries() {
        let Some((_, before)) = old.node_by_id(&node.id) else {
            continue;
        };
        if before.role == super::topology::Role::Replica {
            let replaced = old
                .primaries()
                .find(|(_, p)| {
                    new.node_by_id(&p.id)
                        .map_or(true, |(_, n)| n.role != super::topology::Role::Primary)
                })
                .map_or_else(String::new, |(_, p)| format!("{}@{}", p.id, p.addr));
            observer.failover();
            tracing::warn!(
                new_primary = %format!("{}@{}", node.id, node.addr),
                replaced = %replaced,
                "failover detected: a replica took over as primary"
            );
        }
    }
    for node in &new.nodes {
        if old.node_by_id(&node.id).is_none() {
            tracing::info!(node = %node.id, addr = %node.addr, role = ?node.role, "node added");
        }
    }
    for node in &old.nodes {
        if new.node_by_id(&node.id).is_none() {
            tracing::info!(node = %node.id, addr = %node.addr, role = ?node.role, "node removed");
        }
    }
}

/// The proxy's view of the cluster: cheap to clone, lock-free to read.
///
/// When the last handle is dropped the refresher task stops.
#[derive(Clone)]
pub struct TopologyHandle {
    shared: Arc<Shared>,
    stop: CancellationToken,
    _stop_on_last_drop: Arc<DropGuard>,
}

impl TopologyHandle {
    /// The current snapshot, if one was ever fetched (one atomic load and a reference-count bump).
    pub fn current(&self) -> Option<Arc<Topology>> {
        self.shared.current()
    }

    /// The current snapshot without touching the reference count, for the request path.
    pub fn load(&self) -> Guard<Option<Arc<Topology>>> {
        self.shared.current.load()
    }

    /// Asks for a refresh without waiting; requests made before the next round starts share it.
    pub fn request_refresh(&self) {
        self.shared.request();
    }

    /// Asks for a refresh and waits for a round that started after this call to finish.
    ///
    /// Returns the snapshot current after that round, or why the round failed.
    pub async fn refresh_and_wait(&self) -> Result<Arc<Topology>, TopologyError> {
        let mut done = self.shared.completed.subscribe();
        let target = self.shared.rounds.load(Ordering::SeqCst) + 1;
        self.shared.request();
        let wait = done.wait_for(|c| c.as_ref().is_some_and(|c| c.round >= target));
        tokio::select! {
            result = wait => match result {
                Ok(c) => c.as_ref().map_or(Err(TopologyError::Stopped), |c| c.result.clone()),
                Err(_) => Err(TopologyError::Stopped),
            },
            _ = self.stop.cancelled() => Err(TopologyError::Stopped),
        }
    }

    /// A receiver of the epoch, bumped whenever a snapshot with a different layout is published.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.shared.epoch.subscribe()
    }

    /// Publishes a snapshot built elsewhere (the `-MOVED` fast path).
    pub fn publish(&self, t: Topology) {
        self.shared.publish(Arc::new(t), true);
    }

    /// Applies `-MOVED slot addr` to the current snapshot; false when `to` is not a known primary
    /// (then only a refresh can tell).
    pub fn apply_moved(&self, slot: u16, to: SocketAddr) -> bool {
        self.shared.apply_moved(slot, to)
    }

    /// Reports that connections to the node at `addr` failed. If the current snapshot names it
    /// primary of some slots, a refresh starts now and the topology is polled every
    /// `suspect_poll` until a snapshot no longer does (a replica was promoted) or the suspicion
    /// lapses (`suspect_window` after the last report). Returns true when the node is suspected.
    pub fn suspect(&self, addr: SocketAddr) -> bool {
        let current = self.shared.current();
        let suspected = self.shared.suspects.note(addr, current.as_deref());
        if suspected {
            self.shared.request();
        }
        suspected
    }

    /// Round, fetch and epoch counters.
    pub fn stats(&self) -> RefreshStats {
        RefreshStats {
            rounds: self.shared.rounds.load(Ordering::SeqCst),
            fetches: self.shared.fetches.load(Ordering::SeqCst),
            epoch: *self.shared.epoch.borrow(),
        }
    }

    /// True once the refresher has stopped (shutdown or last handle dropped elsewhere).
    pub fn is_stopped(&self) -> bool {
        self.stop.is_cancelled()
    }
}

/// Spawns the refresher task on the current tokio runtime and returns the handle.
///
/// It fetches at once, then every `period`, on [`TopologyHandle::request_refresh`] (at most once per
/// `min_interval`), and with a short backoff while fetches fail or slots are unassigned. See
/// [`super::round`] for the source order and when a shrinking answer may replace the snapshot.
/// It stops when `cancel` fires or every handle is dropped.
pub fn spawn_refresher(
    cfg: RefreshConfig,
    on_update: Option<UpdateHook>,
    cancel: CancellationToken,
) -> TopologyHandle {
    let fetcher = real_fetcher(cfg.fetch.clone());
    spawn_with_fetcher(cfg, fetcher, on_update, cancel)
}

/// [`spawn_refresher`] with the fetch step supplied (tests use a fake cluster).
pub(crate) fn spawn_with_fetcher(
    cfg: RefreshConfig,
    fetcher: Fetcher,
    on_update: Option<UpdateHook>,
    cancel: CancellationToken,
) -> TopologyHandle {
    let shared = Arc::new(Shared::new(
        on_update,
        Arc::clone(&cfg.observer),
        cfg.suspect_window,
    ));
    let stop = cancel.child_token();
    let refresher = Refresher::new(cfg, fetcher, Arc::clone(&shared), stop.clone());
    tokio::spawn(refresher.run());
    TopologyHandle {
        shared,
        _stop_on_last_drop: Arc::new(stop.clone().drop_guard()),
        stop,
    }
}

#[cfg(test)]
#[path = "refresh_tests.rs"]
mod tests;
