//! Runs a slotway proxy in-process for a test, on a free loopback port, on its own runtime
//! thread; dropping the handle drains and stops it.

use std::net::SocketAddr;
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use slotway::config::Config;

use super::cluster::TestCluster;
use slotway::proxy::{Proxy, Shared};

/// A proxy running for the duration of one test.
pub struct TestProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl TestProxy {
    /// Starts a proxy with default settings in front of `seeds` and waits until it routes.
    pub fn start(seeds: Vec<String>) -> Self {
        Self::start_with(seeds, |_| {})
    }

    /// Like `start`, after `tweak` has adjusted the config.
    pub fn start_with(seeds: Vec<String>, tweak: impl FnOnce(&mut Config)) -> Self {
        let proxy = Self::spawn(seeds, tweak);
        proxy.wait_routing(Duration::from_secs(30));
        proxy
    }

    /// Starts a proxy without waiting for the cluster (for tests of unreachable seeds).
    pub fn spawn(seeds: Vec<String>, tweak: impl FnOnce(&mut Config)) -> Self {
        let mut config = Config {
            listen: "127.0.0.1:0".into(),
            seeds,
            ..Config::default()
        };
        tweak(&mut config);
        let (addr_tx, addr_rx) = std_mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("test runtime");
            rt.block_on(async move {
                let proxy = match Proxy::start(config).await {
                    Ok(p) => p,
                    Err(e) => {
                        let _ = addr_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                let _ = addr_tx.send(Ok((proxy.local_addr(), proxy.shared().clone())));
                let _ = stop_rx.await;
                proxy.shutdown(Duration::from_secs(5)).await;
            });
            rt.shutdown_timeout(Duration::from_secs(1));
        });
        let (addr, shared) = addr_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("proxy did not report its address")
            .expect("proxy failed to start");
        Self {
            addr,
            shared,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    /// The proxy's client address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The proxy's shared state (config, router, topology), for white-box checks.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// True once the proxy knows a topology that serves every slot (what readiness reports).
    pub fn is_ready(&self) -> bool {
        self.shared
            .router
            .table()
            .as_ref()
            .is_some_and(|t| t.topology.covers_all_slots())
    }

    /// `-ASK` redirects the proxy has followed.
    pub fn ask_redirects(&self) -> u64 {
        self.shared.router.ask_redirects()
    }

    /// `redis://` URL of the proxy.
    pub fn url(&self) -> String {
        format!("redis://{}/", self.addr)
    }

    /// A new synchronous client connection to the proxy.
    pub fn client(&self) -> redis::Connection {
        let client = redis::Client::open(self.url()).expect("client");
        let con = client
            .get_connection_with_timeout(Duration::from_secs(5))
            .expect("connect to proxy");
        con.set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        con
    }

    /// Polls until a keyed command gets a real answer (the topology is known and covers all slots).
    pub fn wait_routing(&self, deadline: Duration) {
        let end = Instant::now() + deadline;
        let mut con = self.client();
        loop {
            let ok = (0..16).all(|i| {
                let r: redis::RedisResult<Option<String>> =
                    redis::cmd("GET").arg(format!("__probe{i}")).query(&mut con);
                r.is_ok()
            });
            if ok {
                return;
            }
            assert!(
                Instant::now() < end,
                "proxy did not start routing in {deadline:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Proves the proxy follows `-ASK`, whatever a load happened to race: opens a move of
    /// `slot` (served by node `from`) to node `to`, writes a new key there through the proxy
    /// (the source answers `-ASK`), reads it back, and checks it landed on the target.
    pub fn assert_follows_ask(&self, cluster: &TestCluster, slot: u16, from: usize, to: usize) {
        use redis::Commands;
        assert_eq!(
            cluster.primary_index_for_slot(slot),
            from,
            "slot {slot}'s owner"
        );
        cluster.begin_slot_migration(slot, from, to);
        let before = self.ask_redirects();
        let key = format!("{{{}}}asked", super::load::tag_for_slot(slot));
        let mut client = self.client();
        let () = client.set(&key, "via-ask").expect("SET through -ASK");
        let got: String = client.get(&key).expect("GET through -ASK");
        assert_eq!(got, "via-ask");
        assert!(
            self.ask_redirects() > before,
            "no -ASK redirect was followed"
        );
        assert!(
            cluster.importing_node_has(to, &key),
            "the key is not on the -ASK target"
        );
    }
}

impl Drop for TestProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
