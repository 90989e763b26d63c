//! Refresher tests against a fake cluster (a fetcher answering from a table).

use std::collections::HashMap;
use std::sync::atomic::AtomicUsize;

use super::*;
use crate::cluster::round::FetchFuture;
use crate::cluster::topology::tests::{node, three_shards};
use crate::cluster::topology::{Role, Shard};

/// What each `host:port` answers; missing entries refuse the connection.
#[derive(Default)]
struct FakeCluster {
    answers: Mutex<HashMap<String, Topology>>,
    calls: AtomicUsize,
    delay: Duration,
}

impl FakeCluster {
    fn set(&self, source: &str, t: Topology) {
        self.answers.lock().insert(source.to_owned(), t);
    }

    fn fetcher(self: &Arc<Self>) -> Fetcher {
        let fake = Arc::clone(self);
        Arc::new(move |addr: String| {
            let fake = Arc::clone(&fake);
            Box::pin(async move {
                fake.calls.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(fake.delay).await;
                let answer = fake.answers.lock().get(&addr).cloned();
                let peer: SocketAddr = addr
                    .parse()
                    .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 1)));
                match answer {
                    Some(t) => Ok((t, peer)),
                    None => Err(TopologyError::Connect {
                        addr,
                        source: Arc::new(std::io::ErrorKind::ConnectionRefused.into()),
                    }),
                }
            }) as FetchFuture
        })
    }
}

fn config(seeds: &[&str]) -> RefreshConfig {
    RefreshConfig {
        period: Duration::from_secs(3600),
        min_interval: Duration::from_millis(5),
        ..RefreshConfig::new(seeds.iter().map(|s| s.to_string()).collect())
    }
}

fn spawn(
    fake: &Arc<FakeCluster>,
    seeds: &[&str],
    hook: Option<UpdateHook>,
) -> (TopologyHandle, CancellationToken) {
    let cancel = CancellationToken::new();
    let handle = spawn_with_fetcher(config(seeds), fake.fetcher(), hook, cancel.clone());
    (handle, cancel)
}

#[tokio::test]
async fn first_fetch_is_published_with_an_epoch_and_a_hook_call() {
    let fake = Arc::new(FakeCluster::default());
    fake.set("127.0.0.1:7001", three_shards());
    let hook_calls = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&hook_calls);
    let hook: UpdateHook = Box::new(move |_| {
        counter.fetch_add(1, Ordering::SeqCst);
    });
    let (handle, _cancel) = spawn(&fake, &["127.0.0.1:7001"], Some(hook));
    let mut epoch = handle.subscribe();
    epoch.wait_for(|&e| e >= 1).await.unwrap();
    assert!(handle.current().unwrap().covers_all_slots());
    // Same layout again: stored, but no new epoch and no hook call.
    let t = handle.refresh_and_wait().await.unwrap();
    assert!(t.covers_all_slots());
    assert_eq!(handle.stats().epoch, 1);
    assert_eq!(hook_calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn concurrent_requests_coalesce() {
    let fake = Arc::new(FakeCluster {
        delay: Duration::from_millis(20),
        ..FakeCluster::default()
    });
    fake.set("127.0.0.1:7001", three_shards());
    let (handle, _cancel) = spawn(&fake, &["127.0.0.1:7001"], None);
    handle.refresh_and_wait().await.unwrap();
    let before = handle.stats().rounds;
    for _ in 0..100 {
        handle.request_refresh();
    }
    handle.refresh_and_wait().await.unwrap();
    let rounds = handle.stats().rounds - before;
    assert!(
        (1..=3).contains(&rounds),
        "{rounds} rounds for 100 requests"
    );
}

#[tokio::test]
async fn refresh_and_wait_sees_a_fetch_made_after_the_call() {
    let fake = Arc::new(FakeCluster::default());
    fake.set("127.0.0.1:7001", three_shards());
    let (handle, _cancel) = spawn(&fake, &["127.0.0.1:7001"], None);
    handle.refresh_and_wait().await.unwrap();
    let mut moved = three_shards();
    moved.shards[0].primary = 3;
    moved.shards[0].replicas = vec![0];
    fake.set("127.0.0.1:7001", moved);
    let t = handle.refresh_and_wait().await.unwrap();
    assert_eq!(t.primary_of_slot(0).unwrap().id, "a1");
}

#[tokio::test]
async fn falls_back_to_seeds_and_reports_when_nothing_answers() {
    let fake = Arc::new(FakeCluster::default());
    let (handle, _cancel) = spawn(&fake, &["127.0.0.1:9", "127.0.0.1:7001"], None);
    let err = handle.refresh_and_wait().await.unwrap_err();
    assert!(
        matches!(err, TopologyError::NoSourceReachable { tried: 2, .. }),
        "{err}"
    );
    assert!(err.is_retryable());
    fake.set("127.0.0.1:7001", three_shards());
    assert!(handle.refresh_and_wait().await.unwrap().covers_all_slots());
}

#[tokio::test]
async fn a_shrunken_answer_does_not_replace_a_complete_snapshot() {
    let fake = Arc::new(FakeCluster::default());
    fake.set("127.0.0.1:7001", three_shards());
    let (handle, _cancel) = spawn(&fake, &["127.0.0.1:7001"], None);
    handle.refresh_and_wait().await.unwrap();
    // Node a lost its nodes.conf and now knows only itself; the others are unreachable.
    let alone = Topology::new(
        vec![node("a-new", 7001, Role::Primary)],
        vec![Shard {
            primary: 0,
            replicas: vec![],
            slots: vec![],
        }],
    )
    .unwrap();
    fake.set("127.0.0.1:7001", alone);
    let err = handle.refresh_and_wait().await.unwrap_err();
    assert!(
        matches!(err, TopologyError::Unconfirmed { covered: 0, .. }),
        "{err}"
    );
    assert!(handle.current().unwrap().covers_all_slots());
}

#[tokio::test]
async fn apply_moved_updates_the_snapshot() {
    let fake = Arc::new(FakeCluster::default());
    fake.set("127.0.0.1:7001", three_shards());
    let (handle, _cancel) = spawn(&fake, &["127.0.0.1:7001"], None);
    handle.refresh_and_wait().await.unwrap();
    let epoch = handle.stats().epoch;
    assert!(handle.apply_moved(42, SocketAddr::from(([127, 0, 0, 1], 7002))));
    assert_eq!(
        handle
            .load()
            .as_ref()
            .unwrap()
            .primary_of_slot(42)
            .unwrap()
            .id,
        "b"
    );
    assert_eq!(handle.stats().epoch, epoch + 1);
    assert!(!handle.apply_moved(42, SocketAddr::from(([10, 9, 9, 9], 7002))));
}

#[tokio::test]
async fn stops_on_cancel_and_when_handles_drop() {
    let fake = Arc::new(FakeCluster::default());
    fake.set("127.0.0.1:7001", three_shards());
    let (handle, cancel) = spawn(&fake, &["127.0.0.1:7001"], None);
    handle.refresh_and_wait().await.unwrap();
    cancel.cancel();
    assert!(matches!(
        handle.refresh_and_wait().await,
        Err(TopologyError::Stopped)
    ));
    assert!(handle.is_stopped());

    let (handle, cancel) = spawn(&fake, &["127.0.0.1:7001"], None);
    let clone = handle.clone();
    drop(handle);
    assert!(!clone.is_stopped(), "one handle is still alive");
    drop(clone);
    // The task owns the only other reference to the fake (through its fetcher): it goes when the task ends.
    for _ in 0..100 {
        if Arc::strong_count(&fake) == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        Arc::strong_count(&fake),
        1,
        "the refresher task is still running"
    );
    assert!(
        !cancel.is_cancelled(),
        "the caller's token is not cancelled by dropping handles"
    );
}

#[tokio::test]
async fn a_suspected_primary_is_polled_for_until_a_replica_replaces_it() {
    let fake = Arc::new(FakeCluster::default());
    fake.set("127.0.0.1:7002", three_shards());
    let (handle, _cancel) = spawn(&fake, &["127.0.0.1:7002"], None);
    handle.refresh_and_wait().await.unwrap();
    let dead = SocketAddr::from(([127, 0, 0, 1], 7001));
    assert!(!handle.suspect(SocketAddr::from(([127, 0, 0, 1], 7004))));
    assert!(handle.suspect(dead));
    let before = handle.stats().rounds;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let polled = handle.stats().rounds - before;
    assert!(
        polled >= 4,
        "only {polled} rounds in 400 ms while suspected"
    );
    // The replica a1 is promoted: polling stops with the first map that shows it.
    let mut promoted = three_shards();
    promoted.shards[0].primary = 3;
    promoted.shards[0].replicas = vec![0];
    fake.set("127.0.0.1:7002", promoted);
    let mut epoch = handle.subscribe();
    epoch.wait_for(|&e| e >= 2).await.unwrap();
    assert_eq!(
        handle.current().unwrap().primary_of_slot(0).unwrap().id,
        "a1"
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    let settled = handle.stats().rounds;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        handle.stats().rounds,
        settled,
        "still polling after the failover"
    );
    assert!(!handle.suspect(dead), "no longer a primary");
}
