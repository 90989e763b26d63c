//! The admin HTTP endpoint: `/metrics` (Prometheus text), `/healthz` (the process runs),
//! `/readyz` (full slot map and every primary connected, else 503 with the reason) and
//! `/cluster` (JSON report of shards, nodes, keys and traffic).
//!
//! It binds where `admin.listen` says; a bare port (`9090` or `:9090`) binds loopback only, so
//! the endpoint is exposed beyond the machine only when an address says so explicitly.
//!
//! It sits below the proxy: what it shows of the routing state comes through [`ClusterView`],
//! which the proxy implements, so the admin layer never names the proxy's types.

pub mod http;
pub mod report;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cluster::fetch::FetchOptions;
use crate::cluster::refresh::TopologyHandle;
use crate::cluster::topology::Topology;
use crate::metrics::{self, ProxyMetrics};
use http::{Request, Response};

/// Why the admin endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The address could not be bound.
    #[error("cannot listen on admin address {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// One primary the router sends to, and whether it has a live connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrimaryLink {
    /// The address the proxy connects to.
    pub addr: SocketAddr,
    /// True while at least one connection to it is up.
    pub connected: bool,
}

/// The routing state at one moment: the topology the router routes by and its primaries.
#[derive(Debug, Clone)]
pub struct RoutingView {
    /// The topology in force.
    pub topology: Arc<Topology>,
    /// One entry per shard of `topology`, in its shard order.
    pub primaries: Vec<PrimaryLink>,
}

/// What the endpoint needs from the proxy's router (implemented by the proxy).
pub trait ClusterView: Send + Sync {
    /// The routing state, or None before any topology was installed.
    fn routing(&self) -> Option<RoutingView>;
}

impl<T: ClusterView + ?Sized> ClusterView for Arc<T> {
    fn routing(&self) -> Option<RoutingView> {
        (**self).routing()
    }
}

/// What the endpoint reads: the routing state, the metrics and the topology.
#[derive(Clone)]
pub struct AdminContext {
    /// The router's view of the cluster (readiness, primary links).
    pub view: Arc<dyn ClusterView>,
    /// Slow log, shard totals and the `[metrics]` settings.
    pub metrics: Arc<ProxyMetrics>,
    /// The topology refresher.
    pub topology: TopologyHandle,
    /// Connection settings for `DBSIZE` on the primaries.
    pub fetch: FetchOptions,
}

/// The address to bind for `listen`: a bare port means loopback.
pub fn bind_address(listen: &str) -> String {
    let port = listen.strip_prefix(':').unwrap_or(listen);
    if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) {
        return format!("127.0.0.1:{port}");
    }
    listen.to_string()
}

/// Binds `listen` and serves until `cancel` fires; returns the bound address.
pub async fn start(
    listen: &str,
    ctx: AdminContext,
    cancel: CancellationToken,
    tasks: &TaskTracker,
) -> Result<SocketAddr, AdminError> {
    let addr = bind_address(listen);
    let listener = TcpListener::bind(&addr)
        .await
        .map_err(|source| AdminError::Bind {
            addr: addr.clone(),
            source,
        })?;
    let local = listener
        .local_addr()
        .map_err(|source| AdminError::Bind { addr, source })?;
    tasks.spawn(accept_loop(listener, ctx, cancel));
    tracing::info!(admin = %local, "admin endpoint listening");
    Ok(local)
}

async fn accept_loop(listener: TcpListener, ctx: AdminContext, cancel: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            _ = cancel.cancelled() => return,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, _)) => {
                tokio::spawn(serve(stream, ctx.clone()));
            }
            Err(e) => {
                tracing::warn!(error = %e, "admin accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn serve(mut stream: TcpStream, ctx: AdminContext) {
    let req = match http::read_request(&mut stream).await {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(error = %e, "bad admin request");
            let resp = Response::text(400, format!("{e}\n"));
            let _ = http::write_response(&mut stream, &resp, false).await;
            return;
        }
    };
    let resp = route(&req, &ctx).await;
    let _ = http::write_response(&mut stream, &resp, req.method == "HEAD").await;
}

async fn route(req: &Request, ctx: &AdminContext) -> Response {
    if req.method != "GET" && req.method != "HEAD" {
        return Response::text(405, "only GET and HEAD\n");
    }
    match req.path.as_str() {
        "/healthz" => Response::text(200, "ok\n"),
        "/readyz" => match report::readiness(ctx.view.as_ref()) {
            Ok(()) => Response::text(200, "ready\n"),
            Err(reason) => Response::text(503, format!("not ready: {reason}\n")),
        },
        "/metrics" => Response {
            status: 200,
            content_type: "text/plain; version=0.0.4; charset=utf-8",
            body: render_metrics(ctx).into_bytes(),
        },
        "/cluster" => {
            let r = report::build(
                ctx.view.as_ref(),
                &ctx.metrics,
                ctx.topology.current(),
                &ctx.fetch,
            )
            .await;
            match serde_json::to_vec_pretty(&r) {
                Ok(body) => Response {
                    status: 200,
                    content_type: "application/json",
                    body,
                },
                Err(e) => Response::text(500, format!("cannot encode the report: {e}\n")),
            }
        }
        "/" => Response::text(200, "slotway admin: /metrics /healthz /readyz /cluster\n"),
        _ => Response::text(404, "not found\n"),
    }
}

/// Updates the gauges computed at scrape time, then renders every family.
pub fn render_metrics(ctx: &AdminContext) -> String {
    let g = metrics::global();
    let topology = ctx.topology.current();
    if let Some(t) = &topology {
        g.slot_map_age.set(t.fetched_at.elapsed().as_secs_f64());
        g.slots_covered.set(t.assigned_slots() as f64);
    }
    let ready = report::readiness(ctx.view.as_ref()).is_ok();
    g.ready.set(if ready { 1.0 } else { 0.0 });
    let mut out = metrics::install().map_or_else(String::new, |h| h.render());
    metrics::export::render(&mut out, &ctx.metrics);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_ports_bind_loopback() {
        assert_eq!(bind_address("9090"), "127.0.0.1:9090");
        assert_eq!(bind_address(":9090"), "127.0.0.1:9090");
        assert_eq!(bind_address("0.0.0.0:9090"), "0.0.0.0:9090");
        assert_eq!(bind_address("[::1]:9090"), "[::1]:9090");
    }
}
