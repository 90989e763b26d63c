//! The refresher task: when to run a round, which sources a round asks, and which answer it keeps.
//!
//! **Source order.** The primaries of the current snapshot (rotated one step each round, so no single
//! node's view is trusted forever), then its replicas, then the configured seeds, re-resolved on
//! every connect. Nodes the cluster marks failed are skipped; duplicates are asked once.
//!
//! **Which answer wins.** The first answer that assigns all 16384 slots is published at once. A
//! partial answer does not end the round: the remaining sources are asked too, and the answer that
//! assigns the most slots is kept. It is published if it assigns at least as many slots as the
//! current snapshot. If it assigns fewer, it may come from a node that lost its configuration or
//! has not converged yet (a partitioned node keeps its slot map, so a real partition does not
//! shrink answers), and it replaces the snapshot only when every answer in the round agrees on the
//! slot → primary map and either at least two distinct nodes answered or every source answered.
//! Otherwise the round fails with [`TopologyError::Unconfirmed`] and the current snapshot stays.
//! Answers carry no config epoch, so a complete but stale view (a cut-off node that still believes
//! in an old primary) cannot be told apart; the rotation limits how long it can win.

use std::collections::HashSet;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::error::TopologyError;
use super::fetch::{fetch_with_peer, FetchMethod, FetchOptions};
use super::refresh::{Completion, RefreshConfig, Shared};
use super::topology::{Health, Role, Topology, SLOTS};

/// First retry delay after a failed round or while slots are unassigned.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// Longest retry delay while rounds fail or slots are unassigned: a cluster that comes up (or
/// back) is noticed within this even when no client asks for a refresh.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// A pending fetch: the topology and the address that answered.
pub(crate) type FetchFuture =
    Pin<Box<dyn Future<Output = Result<(Topology, SocketAddr), TopologyError>> + Send>>;

/// Fetches the topology from one `host:port`.
pub(crate) type Fetcher = Arc<dyn Fn(String) -> FetchFuture + Send + Sync>;

/// The fetcher that talks to real nodes.
pub(crate) fn real_fetcher(opts: FetchOptions) -> Fetcher {
    let opts = Arc::new(opts);
    Arc::new(move |addr: String| {
        let opts = Arc::clone(&opts);
        Box::pin(async move { fetch_with_peer(&addr, &opts, FetchMethod::Auto).await })
            as FetchFuture
    })
}

/// The refresher task's state.
pub(crate) struct Refresher {
    cfg: RefreshConfig,
    fetcher: Fetcher,
    shared: Arc<Shared>,
    stop: CancellationToken,
    rotation: usize,
    backoff: Duration,
    failing: bool,
}

/// One source's usable but partial answer.
struct Answer {
    source: String,
    peer: SocketAddr,
    topology: Topology,
}

impl Refresher {
    pub(crate) fn new(
        cfg: RefreshConfig,
        fetcher: Fetcher,
        shared: Arc<Shared>,
        stop: CancellationToken,
    ) -> Self {
        Refresher {
            cfg,
            fetcher,
            shared,
            stop,
            rotation: 0,
            backoff: FIRST_BACKOFF,
            failing: false,
        }
    }

    /// Runs rounds until stopped; waiters of an unfinished round are told [`TopologyError::Stopped`].
    pub(crate) async fn run(mut self) {
        let stop = self.stop.clone();
        let mut next_periodic = Instant::now();
        let mut last_start: Option<Instant> = None;
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = self.shared.wake.notified() => {}
                _ = tokio::time::sleep_until(next_periodic) => {}
            }
            if let Some(earliest) = last_start.map(|t| t + self.cfg.min_interval) {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep_until(earliest) => {}
                }
            }
            last_start = Some(Instant::now());
            let round = self.shared.start_round();
            let result = tokio::select! {
                _ = stop.cancelled() => break,
                result = self.round() => result,
            };
            self.cfg.observer.round_finished(
                result.is_ok(),
                last_start.map_or(Duration::ZERO, |t| t.elapsed()),
            );
            next_periodic = Instant::now() + self.after(&result);
            self.shared
                .completed
                .send_replace(Some(Completion { round, result }));
        }
        stop.cancel();
        let stopped = Completion {
            round: u64::MAX,
            result: Err(TopologyError::Stopped),
        };
        self.shared.completed.send_replace(Some(stopped));
        tracing::debug!("topology refresher stopped");
    }

    /// Asks sources in order until one answer can be published.
    async fn round(&mut self) -> Result<Arc<Topology>, TopologyError> {
        let current = self.shared.current();
        let mut sources = sources(current.as_deref(), &self.cfg.seeds, self.rotation);
        if let Some(t) = current.as_deref() {
            // A dead node may take the whole connect timeout to fail; ask the others first.
            demote(&mut sources, t, |addr| self.shared.suspects.contains(addr));
        }
        self.rotation = self.rotation.wrapping_add(1);
        let mut answers = Vec::new();
        let mut last_error = None;
        for source in &sources {
            self.shared
                .fetches
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            match (self.fetcher)(source.clone()).await {
                Ok((topology, _)) if topology.covers_all_slots() => {
                    return Ok(self.shared.publish(Arc::new(topology), false));
                }
                Ok((topology, peer)) => answers.push(Answer {
                    source: source.clone(),
                    peer,
                    topology,
                }),
                Err(e) => {
                    tracing::debug!(%source, error = %e, "topology fetch failed");
                    last_error = Some(e);
                }
            }
        }
        if answers.is_empty() {
            let last = last_error.unwrap_or(TopologyError::BadAddress {
                addr: String::new(),
                reason: "no seeds configured and no snapshot to ask".into(),
            });
            return Err(TopologyError::NoSourceReachable {
                tried: sources.len(),
                last: Box::new(last),
            });
        }
        let chosen = choose(current.as_deref(), answers, sources.len())?;
        Ok(self.shared.publish(Arc::new(chosen), false))
    }

    /// How long until the next periodic round, logging failure streaks once.
    fn after(&mut self, result: &Result<Arc<Topology>, TopologyError>) -> Duration {
        let healthy = match result {
            Ok(t) => t.covers_all_slots(),
            Err(e) => {
                if self.failing {
                    tracing::debug!(error = %e, "topology refresh still failing");
                } else {
                    tracing::warn!(error = %e, "topology refresh failed; keeping the current snapshot");
                }
                false
            }
        };
        if result.is_ok() && self.failing {
            tracing::info!("topology refresh recovered");
        }
        self.failing = result.is_err();
        if healthy {
            self.backoff = FIRST_BACKOFF;
            let current = self.shared.current();
            if self.shared.suspects.active(current.as_deref()) {
                // A primary's connections failed and the map still names it: poll until the
                // promoted replica shows up (bounded by the suspicion's window).
                return self.cfg.suspect_poll.min(self.cfg.period);
            }
            return self.cfg.period;
        }
        // Poll quickly while broken, so a promoted replica is used soon after its election.
        let cap = self.cfg.period.min(MAX_BACKOFF);
        let delay = self.backoff.min(cap);
        self.backoff = (self.backoff * 2).min(cap);
        delay.mul_f64(0.8 + 0.4 * fastrand::f64())
    }
}

/// The sources of one round, in the order documented at the top of this module.
pub(crate) fn sources(
    current: Option<&Topology>,
    seeds: &[String],
    rotation: usize,
) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    if let Some(t) = current {
        let usable = |n: &&super::topology::Node| n.health != Health::Failed;
        let mut primaries: Vec<_> = t.primaries().map(|(_, n)| n).filter(usable).collect();
        if !primaries.is_empty() {
            let by = rotation % primaries.len();
            primaries.rotate_left(by);
        }
        let replicas = t
            .nodes
            .iter()
            .filter(|n| n.role == Role::Replica)
            .filter(usable);
        out.extend(primaries.into_iter().chain(replicas).filter_map(source_of));
    }
    out.extend(seeds.iter().cloned());
    let mut seen = HashSet::new();
    out.retain(|s| seen.insert(s.clone()));
    out
}

/// The fetch source naming `node` as announced (IPv6 in brackets); none for an endpoint that
/// is not a valid host, which a fetch could not reach either.
fn source_of(node: &super::topology::Node) -> Option<String> {
    crate::net::NodeAddr::new(&node.endpoint, node.port)
        .ok()
        .map(|a| a.to_string())
}

/// Moves the sources naming a suspected node to the end, keeping the order otherwise.
fn demote(sources: &mut [String], t: &Topology, suspected: impl Fn(SocketAddr) -> bool) {
    let late: HashSet<String> = t
        .nodes
        .iter()
        .filter(|n| suspected(n.addr))
        .filter_map(source_of)
        .collect();
    if !late.is_empty() {
        sources.sort_by_key(|s| late.contains(s));
    }
}

/// Picks the partial answer to publish, or says why none may be (see the module docs).
fn choose(
    current: Option<&Topology>,
    answers: Vec<Answer>,
    sources: usize,
) -> Result<Topology, TopologyError> {
    let mut best_index = 0;
    for (i, a) in answers.iter().enumerate() {
        if a.topology.assigned_slots() > answers[best_index].topology.assigned_slots() {
            best_index = i;
        }
    }
    let best = &answers[best_index];
    let covered = best.topology.assigned_slots();
    let known = current.map_or(0, Topology::assigned_slots);
    let distinct_peers = answers.iter().map(|a| a.peer).collect::<HashSet<_>>().len();
    let agree = answers
        .iter()
        .all(|a| same_slot_map(&a.topology, &best.topology));
    let confirmed = agree && (distinct_peers >= 2 || answers.len() == sources);
    if covered < known && !confirmed {
        return Err(TopologyError::Unconfirmed {
            addr: best.source.clone(),
            covered,
            current: known,
        });
    }
    let mut answers = answers;
    Ok(answers.swap_remove(best_index).topology)
}

fn same_slot_map(a: &Topology, b: &Topology) -> bool {
    (0..SLOTS).all(|slot| a.owner_id(slot) == b.owner_id(slot))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::topology::tests::{node, three_shards};
    use crate::cluster::topology::Shard;

    fn partial(slots: (u16, u16)) -> Topology {
        let shards = vec![Shard {
            primary: 0,
            replicas: vec![],
            slots: vec![slots],
        }];
        Topology::new(vec![node("a", 7001, Role::Primary)], shards).unwrap()
    }

    fn answer(port: u16, topology: Topology) -> Answer {
        Answer {
            source: format!("127.0.0.1:{port}"),
            peer: SocketAddr::from(([127, 0, 0, 1], port)),
            topology,
        }
    }

    #[test]
    fn sources_rotate_primaries_then_replicas_then_seeds() {
        let mut t = three_shards();
        t.nodes[5].health = Health::Failed;
        let seeds = vec!["seed:1".to_owned(), "127.0.0.1:7001".to_owned()];
        let s = sources(Some(&t), &seeds, 1);
        assert_eq!(
            s,
            [
                "127.0.0.1:7002",
                "127.0.0.1:7003",
                "127.0.0.1:7001",
                "127.0.0.1:7004",
                "127.0.0.1:7005",
                "seed:1"
            ]
        );
        assert_eq!(sources(None, &seeds, 7), seeds);
    }

    #[test]
    fn suspected_nodes_are_asked_last() {
        let t = three_shards();
        let mut s = sources(Some(&t), &[], 0);
        demote(&mut s, &t, |a| a.port() == 7001 || a.port() == 7005);
        assert_eq!(
            s,
            [
                "127.0.0.1:7002",
                "127.0.0.1:7003",
                "127.0.0.1:7004",
                "127.0.0.1:7006",
                "127.0.0.1:7001",
                "127.0.0.1:7005"
            ]
        );
    }

    #[test]
    fn more_or_equal_coverage_is_accepted_alone() {
        let current = partial((0, 99));
        let chosen = choose(Some(&current), vec![answer(1, partial((0, 199)))], 5).unwrap();
        assert_eq!(chosen.assigned_slots(), 200);
        let chosen = choose(
            None,
            vec![answer(1, partial((0, 9))), answer(2, partial((0, 19)))],
            5,
        )
        .unwrap();
        assert_eq!(chosen.assigned_slots(), 20, "the fullest answer wins");
    }

    #[test]
    fn a_lone_shrinking_answer_is_refused() {
        let current = three_shards();
        let err = choose(Some(&current), vec![answer(1, partial((0, 99)))], 4).unwrap_err();
        assert!(
            matches!(
                err,
                TopologyError::Unconfirmed {
                    covered: 100,
                    current: 16384,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn a_shrinking_answer_confirmed_by_two_nodes_is_accepted() {
        let current = three_shards();
        let both = vec![answer(1, partial((0, 99))), answer(2, partial((0, 99)))];
        assert_eq!(
            choose(Some(&current), both, 6).unwrap().assigned_slots(),
            100
        );
        // Two nodes that disagree confirm nothing.
        let split = vec![answer(1, partial((0, 99))), answer(2, partial((0, 98)))];
        assert!(choose(Some(&current), split, 6).is_err());
        // The same node twice (a seed naming a snapshot node) is one witness.
        let twice = vec![answer(1, partial((0, 99))), answer(1, partial((0, 99)))];
        assert!(choose(Some(&current), twice, 6).is_err());
        // ... unless it is the only source there is.
        assert!(choose(Some(&current), vec![answer(1, partial((0, 99)))], 1).is_ok());
    }
}
