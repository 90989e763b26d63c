//! The client-facing proxy: listener, per-client sessions, routing and retries, and the
//! start-up that wires them to the topology refresher and the backend pools.

mod classify;
pub mod emulation;
mod fanout;
pub mod pinned;
mod recovery;
pub mod replication;
pub mod reshape;
mod retry;
pub mod router;
pub mod scripts;
mod session;
pub mod sha1;
pub mod subscriber;
pub mod trust;
mod upstream_check;

pub(crate) use classify::{classify, Decision, Fan, LocalCmd};
// The fan-out's parts keep their old paths (`proxy::merge` …) for the code outside it.
pub(crate) use fanout::{info, introspect, merge};
pub use session::resting_clients;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::backend::{Backends, ConnSettings, DedicatedPool, DurableWait};
use crate::cluster::fetch::FetchOptions;
use crate::cluster::refresh::{spawn_refresher, RefreshConfig, TopologyHandle};
use crate::command::CommandTable;
use crate::config::{ms, Config};
use crate::metrics::ProxyMetrics;
use crate::protocol::ScanLimits;
use crate::security::{limits, Security, SecurityError};
use crate::tls::{ClientTls, TlsSetup};
use router::Router;

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// No seed node was configured.
    #[error("no seed nodes configured (set `seeds` or --seeds)")]
    NoSeeds,
    /// The admin endpoint could not start.
    #[error(transparent)]
    Admin(#[from] crate::admin::AdminError),
    /// Authentication or policy settings are unusable (e.g. a password file is missing).
    #[error(transparent)]
    Security(#[from] SecurityError),
    /// A TLS certificate, key or CA file is unusable.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// The SIGHUP handler for certificate reloads could not be installed.
    #[error("cannot watch SIGHUP for TLS reloads: {0}")]
    Signal(std::io::Error),
}

/// State shared by every session.
#[derive(Debug)]
pub struct Shared {
    /// The settings in force.
    pub config: Arc<Config>,
    /// Routing state.
    pub router: Arc<Router>,
    /// Request scanner limits derived from the config.
    pub scan_limits: ScanLimits,
    /// Client authentication and command rules.
    pub security: Security,
    /// Script bodies seen, for `NOSCRIPT` recovery.
    pub scripts: scripts::ScriptCache,
    /// Dedicated connections for transactions, blocking commands and subscriptions.
    pub dedicated: Arc<DedicatedPool>,
    /// Slow log, shard totals and the `[metrics]` settings.
    pub metrics: Arc<ProxyMetrics>,
    /// TLS on the listener and to the nodes, and its reload.
    pub tls: Arc<TlsSetup>,
}

/// A running proxy.
pub struct Proxy {
    local_addr: SocketAddr,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    shared: Arc<Shared>,
    topology: TopologyHandle,
    admin_addr: Option<SocketAddr>,
}

impl Proxy {
    /// Binds the listener, starts topology discovery and begins accepting clients.
    /// Returns without waiting for the cluster: clients get a clear error until it is known.
    pub async fn start(mut config: Config) -> Result<Self, ProxyError> {
        if config.seeds.is_empty() {
            return Err(ProxyError::NoSeeds);
        }
        crate::security::resolve_upstream(&mut config.cluster)?;
        let security = Security::from_config(&config)?;
        let tls = Arc::new(TlsSetup::new(&config.tls, &config.upstream_tls)?);
        let listener =
            TcpListener::bind(&config.listen)
                .await
                .map_err(|source| ProxyError::Bind {
                    addr: config.listen.clone(),
                    source,
                })?;
        let local_addr = listener.local_addr().map_err(|source| ProxyError::Bind {
            addr: config.listen.clone(),
            source,
        })?;
        info::mark_start();
        let config = Arc::new(config);
        let metrics = ProxyMetrics::new(config.metrics.clone());
        let shutdown = CancellationToken::new();
        let backends = Arc::new(Backends::new(
            conn_template(&config, &tls),
            config.backend.connections_per_node,
        ));
        let router = Arc::new(Router::new(
            backends,
            CommandTable::builtin(),
            config.cluster.read_policy(),
        ));
        let topology = start_refresher(&config, &tls, &router, &metrics, shutdown.clone());
        router.attach(topology.clone());
        spawn_command_learning(
            fetch_options(&config, &tls),
            router.clone(),
            topology.clone(),
            shutdown.clone(),
        );
        upstream_check::spawn(
            fetch_options(&config, &tls),
            config.clone(),
            router.clone(),
            topology.clone(),
            shutdown.clone(),
        );
        let dedicated = Arc::new(DedicatedPool::new(
            dedicated_template(&config, &tls),
            crate::backend::Budgets::from(&config.backend),
        ));
        let shared = Arc::new(Shared {
            dedicated,
            scan_limits: ScanLimits {
                max_bulk_len: config.client.max_bulk_bytes,
                max_multibulk_len: config.client.max_multibulk_len,
                max_inline_len: config.client.max_inline_bytes,
            },
            scripts: scripts::ScriptCache::new(
                config.commands.script_cache_entries,
                config.commands.script_cache_bytes,
            ),
            config,
            router,
            security,
            metrics,
            tls: tls.clone(),
        });
        if tls.enabled() {
            crate::tls::reload::spawn(tls, shutdown.clone()).map_err(ProxyError::Signal)?;
        }
        let tasks = TaskTracker::new();
        tasks.spawn(accept_loop(
            listener,
            shared.clone(),
            shutdown.clone(),
            tasks.clone(),
        ));
        tracing::info!(listen = %local_addr, "slotway accepting clients");
        let admin_addr = start_admin(&shared, &topology, &shutdown, &tasks).await?;
        Ok(Self {
            local_addr,
            shutdown,
            tasks,
            shared,
            topology,
            admin_addr,
        })
    }

    /// The admin endpoint's address, when `admin.listen` is set.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// The address clients connect to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The topology handle (current snapshot, refresh triggers).
    pub fn topology(&self) -> &TopologyHandle {
        &self.topology
    }

    /// State shared with sessions (config, router).
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Stops accepting, lets sessions finish what clients already sent, and waits up to
    /// `grace` for them; returns true when every session ended in time.
    pub async fn shutdown(self, grace: std::time::Duration) -> bool {
        self.shutdown.cancel();
        self.tasks.close();
        tokio::time::timeout(grace, self.tasks.wait()).await.is_ok()
    }
}

/// Starts the admin endpoint when `admin.listen` is set.
async fn start_admin(
    shared: &Arc<Shared>,
    topology: &TopologyHandle,
    shutdown: &CancellationToken,
    tasks: &TaskTracker,
) -> Result<Option<SocketAddr>, ProxyError> {
    let listen = shared.config.admin.listen.trim();
    if listen.is_empty() {
        return Ok(None);
    }
    let ctx = crate::admin::AdminContext {
        view: shared.clone(),
        metrics: shared.metrics.clone(),
        topology: topology.clone(),
        fetch: fetch_options(&shared.config, &shared.tls),
    };
    let addr = crate::admin::start(listen, ctx, shutdown.clone(), tasks).await?;
    Ok(Some(addr))
}

impl crate::admin::ClusterView for Shared {
    fn routing(&self) -> Option<crate::admin::RoutingView> {
        let table = self.router.table();
        let t = table.as_ref()?;
        Some(crate::admin::RoutingView {
            topology: t.topology.clone(),
            primaries: t
                .primaries()
                .iter()
                .map(|p| crate::admin::PrimaryLink {
                    addr: p.addr(),
                    connected: p.is_connected(),
                })
                .collect(),
        })
    }
}

fn conn_template(config: &Config, tls: &TlsSetup) -> ConnSettings {
    let b = &config.backend;
    ConnSettings {
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        connect_timeout: ms(b.connect_timeout_ms),
        command_timeout: ms(b.command_timeout_ms),
        backoff_min: ms(b.reconnect_backoff_min_ms),
        backoff_max: ms(b.reconnect_backoff_max_ms),
        queue_depth: b.queue_depth,
        max_reply_bytes: b.max_reply_bytes,
        auth: auth(config),
        readonly: false,
        metrics: config.metrics.enabled,
        wait: config.cluster.durable_writes.then(|| {
            DurableWait::new(
                config.cluster.durable_replicas,
                config.cluster.durable_timeout_ms,
            )
        }),
        tls: tls.upstream.clone(),
    }
}

/// Dedicated connections carry exactly what the client sent: no durable-write WAIT, no
/// READONLY.
fn dedicated_template(config: &Config, tls: &TlsSetup) -> ConnSettings {
    let mut t = conn_template(config, tls);
    t.wait = None;
    // A blocking command's wait is not node latency.
    t.metrics = false;
    t
}

fn auth(config: &Config) -> Option<crate::net::Credentials> {
    let c = &config.cluster;
    crate::net::Credentials::from_parts(&c.username, &c.password)
}

pub(crate) fn fetch_options(config: &Config, tls: &TlsSetup) -> FetchOptions {
    FetchOptions {
        connect_timeout: ms(config.backend.connect_timeout_ms),
        command_timeout: ms(config.backend.command_timeout_ms),
        auth: auth(config),
        tls: tls.upstream.clone(),
    }
}

fn start_refresher(
    config: &Config,
    tls: &TlsSetup,
    router: &Arc<Router>,
    metrics: &Arc<ProxyMetrics>,
    cancel: CancellationToken,
) -> TopologyHandle {
    let weak = Arc::downgrade(router);
    let metrics = Arc::downgrade(metrics);
    let upstream_tls = tls.upstream.clone();
    let on_update = Box::new(move |t: &Arc<crate::cluster::topology::Topology>| {
        if let Some(tls) = &upstream_tls {
            // Before new pools connect: their certificates are checked against these names.
            tls.learn(t.nodes.iter().map(|n| (n.addr, n.endpoint.as_str())));
        }
        if let Some(m) = metrics.upgrade() {
            // Before the router switches, so requests are attributed to the map they used.
            m.shards.on_topology(t);
        }
        if let Some(router) = weak.upgrade() {
            router.install(t);
        }
    });
    spawn_refresher(
        RefreshConfig {
            seeds: config.seeds.clone(),
            period: ms(config.cluster.refresh_interval_ms),
            fetch: fetch_options(config, tls),
            min_interval: ms(config.cluster.refresh_min_interval_ms),
            observer: Arc::new(crate::metrics::TopologyMetrics),
            ..RefreshConfig::new(Vec::new())
        },
        Some(on_update),
        cancel,
    )
}

/// Learns the cluster's own command table (module and newer commands) once a node is known;
/// the built-in table serves until then and whenever learning fails.
fn spawn_command_learning(
    opts: FetchOptions,
    router: Arc<Router>,
    topology: TopologyHandle,
    cancel: CancellationToken,
) {
    spawn_on_primaries(topology, cancel, move |addr| {
        let (opts, router) = (opts.clone(), router.clone());
        async move {
            let Ok(frame) = crate::cluster::fetch::call(&addr, &[b"COMMAND"], &opts).await else {
                return false;
            };
            let mut table = CommandTable::builtin();
            match table.learn(&frame) {
                Ok(n) => {
                    tracing::info!(commands = n, node = %addr, "learned command table");
                    router.set_commands(table);
                    true
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot learn command table");
                    false
                }
            }
        }
    });
}

/// Runs `attempt` on each shard's primary in turn until one returns true, again after each
/// topology change, until then or until `cancel`.
fn spawn_on_primaries<F, Fut>(topology: TopologyHandle, cancel: CancellationToken, mut attempt: F)
where
    F: FnMut(String) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    tokio::spawn(async move {
        let mut epochs = topology.subscribe();
        loop {
            if let Some(t) = topology.current() {
                for shard in &t.shards {
                    if attempt(t.nodes[shard.primary].addr.to_string()).await {
                        return;
                    }
                }
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                changed = epochs.changed() => if changed.is_err() { return },
            }
        }
    });
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
) {
    let slots = Arc::new(Semaphore::new(shared.config.client.max_connections));
    let tls = shared.tls.client.clone();
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            a = listener.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of descriptors and similar: back off briefly instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            limits::count_rejected("max_clients");
            tasks.spawn(refuse(stream, tls.clone()));
            continue;
        };
        let _ = stream.set_nodelay(true);
        tracing::trace!(%peer, "client connected");
        match tls.clone() {
            None => {
                tasks.spawn(session::run(
                    crate::tls::ClientStream::Plain(stream),
                    shared.clone(),
                    shutdown.clone(),
                    permit,
                ));
            }
            Some(tls) => {
                let shared = shared.clone();
                let shutdown = shutdown.clone();
                tasks.spawn(async move {
                    // The handshake runs here, not in the accept loop: a slow client delays
                    // only itself. Plaintext clients skip this wrapper so a resting one's task
                    // stays small.
                    if let Some(stream) = crate::tls::accept(Some(&tls), stream).await {
                        session::run(stream, shared, shutdown, permit).await;
                    }
                });
            }
        }
    }
}

/// Tells a client over the connection limit why (over TLS when the listener speaks it), then
/// closes.
async fn refuse(stream: TcpStream, tls: Option<Arc<ClientTls>>) {
    let Some(mut stream) = crate::tls::accept(tls.as_deref(), stream).await else {
        return;
    };
    let _ = stream
        .write_all(b"-ERR max number of clients reached\r\n")
        .await;
    let _ = stream.shutdown().await;
}
