//! Turning a set of running, empty cluster-enabled nodes into a healthy Redis Cluster
//! without `redis-cli`.
//!
//! The steps mirror `redis-cli --cluster create`: assign slot ranges to the primaries,
//! MEET everyone, wait until every node knows every other, attach the replicas, then
//! wait until every node agrees on the same, fully covered configuration.

use std::net::SocketAddr;
use std::thread;
use std::time::Duration;

use tokio::time::Instant;

use super::client::{NodeClient, Reply};
use super::health::{all_know_each_other, check_health, cluster_info, cluster_nodes, info_field};
use super::LocalError;

/// Number of hash slots in a Redis Cluster.
pub const SLOTS: u16 = 16384;
/// How often the waits below poll the nodes.
const POLL: Duration = Duration::from_millis(50);
/// Connect/read timeout for one control command.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// Where a node is and what it should become.
#[derive(Clone, Debug)]
pub(crate) struct Planned {
    pub addr: SocketAddr,
    /// `None` for a primary, else the index of its primary in the plan.
    pub primary: Option<usize>,
    /// Inclusive slot range, primaries only.
    pub slots: Option<(u16, u16)>,
}

/// Splits the slots over `primaries` the way redis-cli does (rounded running cursor).
pub fn split_slots(primaries: usize) -> Vec<(u16, u16)> {
    let per = f64::from(SLOTS) / primaries as f64;
    let mut cursor = 0.0f64;
    let mut first = 0u16;
    let mut ranges = Vec::with_capacity(primaries);
    for i in 0..primaries {
        let mut last = (cursor + per - 1.0).round() as u16;
        if last >= SLOTS || i + 1 == primaries {
            last = SLOTS - 1;
        }
        ranges.push((first, last));
        first = last.saturating_add(1);
        cursor += per;
    }
    ranges
}

/// Opens a control connection to one node.
pub(crate) fn connect(addr: SocketAddr) -> Result<NodeClient, LocalError> {
    NodeClient::connect(addr, CALL_TIMEOUT)
}

/// Polls `check` until it returns `Ok(None)`; `Ok(Some(why))` means "not yet".
/// Hard errors from `check` end the wait at once.
pub(crate) fn wait_for(
    what: &str,
    deadline: Instant,
    mut check: impl FnMut() -> Result<Option<String>, LocalError>,
) -> Result<(), LocalError> {
    let started = Instant::now();
    loop {
        let last = match check()? {
            None => return Ok(()),
            Some(why) => why,
        };
        if Instant::now() >= deadline {
            return Err(LocalError::Timeout {
                what: what.to_string(),
                waited: started.elapsed(),
                last,
            });
        }
        thread::sleep(POLL);
    }
}

/// True when any node already carries cluster state (a reused data directory).
pub(crate) fn already_formed(addrs: &[SocketAddr]) -> Result<bool, LocalError> {
    for addr in addrs {
        let info = cluster_info(&mut connect(*addr)?)?;
        if info_field(&info, "cluster_known_nodes").is_some_and(|n| n != "1")
            || info_field(&info, "cluster_slots_assigned").is_some_and(|n| n != "0")
        {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Creates the cluster described by `plan` on fresh nodes, then waits until it is healthy.
pub(crate) fn create(plan: &[Planned], deadline: Instant) -> Result<(), LocalError> {
    let addrs: Vec<SocketAddr> = plan.iter().map(|p| p.addr).collect();
    for node in plan {
        if let Some((first, last)) = node.slots {
            add_slots(&mut connect(node.addr)?, first, last)?;
        }
    }
    let mut first = connect(addrs[0])?;
    for addr in &addrs[1..] {
        first.call_ok(&[
            "CLUSTER",
            "MEET",
            &addr.ip().to_string(),
            &addr.port().to_string(),
        ])?;
    }
    wait_for("every node to know every other", deadline, || {
        all_know_each_other(&addrs)
    })?;
    let ids = addrs
        .iter()
        .map(|a| my_id(&mut connect(*a)?))
        .collect::<Result<Vec<_>, _>>()?;
    for node in plan {
        if let Some(primary) = node.primary {
            let mut client = connect(node.addr)?;
            let id = &ids[primary];
            // The replica may still be digesting gossip about its primary; retry briefly.
            wait_for(
                "CLUSTER REPLICATE to be accepted",
                deadline,
                || match client.call(&["CLUSTER", "REPLICATE", id])? {
                    Reply::Error(e) => Ok(Some(e)),
                    _ => Ok(None),
                },
            )?;
        }
    }
    let expected: Vec<Option<String>> = plan
        .iter()
        .map(|p| p.primary.map(|i| ids[i].clone()))
        .collect();
    wait_for("the cluster to become healthy", deadline, || {
        let shape = check_health(&addrs, addrs.len())?;
        match shape {
            Some(why) => Ok(Some(why)),
            None => layout_mismatch(&addrs, &ids, &expected),
        }
    })
}

fn add_slots(client: &mut NodeClient, first: u16, last: u16) -> Result<(), LocalError> {
    let (first_s, last_s) = (first.to_string(), last.to_string());
    match client.call(&["CLUSTER", "ADDSLOTSRANGE", &first_s, &last_s])? {
        // Redis < 7.0 has no ADDSLOTSRANGE; fall back to listing every slot.
        Reply::Error(e) if e.to_ascii_lowercase().contains("unknown subcommand") => {
            let mut args = vec!["CLUSTER".to_string(), "ADDSLOTS".to_string()];
            args.extend((first..=last).map(|s| s.to_string()));
            client.call_ok(&args).map(drop)
        }
        other => other.into_result().map(drop),
    }
}

fn my_id(client: &mut NodeClient) -> Result<String, LocalError> {
    client
        .call_ok(&["CLUSTER", "MYID"])?
        .as_text()
        .ok_or_else(|| LocalError::Protocol("CLUSTER MYID did not return a string".into()))
}

/// Checks that each node serves the role the plan gave it.
fn layout_mismatch(
    addrs: &[SocketAddr],
    ids: &[String],
    expected: &[Option<String>],
) -> Result<Option<String>, LocalError> {
    let nodes = cluster_nodes(&mut connect(addrs[0])?)?;
    for ((addr, id), want) in addrs.iter().zip(ids).zip(expected) {
        match nodes.iter().find(|n| &n.id == id) {
            None => return Ok(Some(format!("{} does not know {addr} ({id})", addrs[0]))),
            Some(line) if &line.primary != want => {
                return Ok(Some(format!("{addr} does not have its planned role yet")));
            }
            Some(_) => {}
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_matches_redis_cli() {
        assert_eq!(
            split_slots(3),
            vec![(0, 5460), (5461, 10922), (10923, 16383)]
        );
        assert_eq!(split_slots(1), vec![(0, 16383)]);
        assert_eq!(split_slots(2), vec![(0, 8191), (8192, 16383)]);
    }

    #[test]
    fn split_covers_every_slot_once() {
        for n in 1..=50 {
            let ranges = split_slots(n);
            assert_eq!(ranges.len(), n);
            assert_eq!(ranges[0].0, 0);
            assert_eq!(ranges[n - 1].1, SLOTS - 1);
            for pair in ranges.windows(2) {
                assert_eq!(pair[0].1 + 1, pair[1].0);
                assert!(pair[0].0 <= pair[0].1);
            }
        }
    }
}
