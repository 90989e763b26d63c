//! Start-up audit of the upstream Redis user: the deny list only holds inside scripts when
//! that user's ACL refuses what the policy denies, so once a node is known, ask it with
//! `ACL DRYRUN` (Redis 7.0+) and warn, with the `slotway_upstream_acl_gaps` gauge, about
//! each denied command a script could still run.

use std::sync::Arc;

use redis_protocol::resp2::types::OwnedFrame;
use tokio_util::sync::CancellationToken;

use super::router::Router;
use crate::cluster::fetch::{call_many, FetchOptions};
use crate::cluster::refresh::TopologyHandle;
use crate::config::Config;
use crate::metrics::names::UPSTREAM_ACL_GAPS;
use crate::security::upstream::{dryrun, script_reachable};

/// Audits once, on the first primary that answers (retried on each topology change).
pub(super) fn spawn(
    opts: FetchOptions,
    config: Arc<Config>,
    router: Arc<Router>,
    topology: TopologyHandle,
    cancel: CancellationToken,
) {
    super::spawn_on_primaries(topology, cancel, move |addr| {
        let (opts, config, router) = (opts.clone(), config.clone(), router.clone());
        async move { audit(&addr, &opts, &config, &router).await }
    });
}

/// True when the node answered (whatever the verdict); false to try another node later.
async fn audit(addr: &str, opts: &FetchOptions, config: &Config, router: &Router) -> bool {
    let whoami = vec![b"ACL".to_vec(), b"WHOAMI".to_vec()];
    let user = match call_many(addr, &[whoami], opts).await.as_deref() {
        Ok([OwnedFrame::BulkString(name)]) => String::from_utf8_lossy(name).into_owned(),
        Ok(other) => {
            tracing::warn!(node = addr, reply = ?other, "cannot audit the upstream Redis user: ACL WHOAMI failed");
            return true;
        }
        Err(_) => return false,
    };
    let table = router.commands();
    let Ok(specs) = script_reachable(config, &table) else {
        return true;
    };
    let probes: Vec<Vec<Vec<u8>>> = specs.iter().map(|s| dryrun(&user, s)).collect();
    let replies = match call_many(addr, &probes, opts).await {
        Ok(r) => r,
        Err(_) => return false,
    };
    let gaps: Vec<&str> = specs
        .iter()
        .zip(&replies)
        .filter(|(_, r)| matches!(r, OwnedFrame::SimpleString(ok) if ok == b"OK"))
        .map(|(s, _)| s.name.as_str())
        .collect();
    metrics::gauge!(UPSTREAM_ACL_GAPS).set(gaps.len() as f64);
    if gaps.is_empty() {
        tracing::info!(
            user,
            node = addr,
            "upstream Redis user refuses every denied command"
        );
    } else {
        tracing::warn!(
            user,
            node = addr,
            commands = %gaps.join(" "),
            "the upstream Redis user may run commands that policy.deny refuses, so client \
             scripts can run them: log in as the user `slotway upstream-acl` prints"
        );
    }
    true
}
