//! [`decide`] case by case: one outcome, one request state, one expected action.

use std::sync::Arc;

use super::*;
use crate::cluster::topology::{Health, Node, Role, Shard};

/// Two shards: 127.0.0.1:7000 (slots 0-8191, endpoint "redis-0.svc") and 127.0.0.1:7001.
fn topology() -> Arc<Topology> {
    let node = |i: u16, endpoint: &str| Node {
        id: format!("{i:040}"),
        addr: SocketAddr::from(([127, 0, 0, 1], 7000 + i)),
        endpoint: endpoint.into(),
        port: 7000 + i,
        role: Role::Primary,
        health: Health::Online,
    };
    let shard = |p, slots| Shard {
        primary: p,
        replicas: vec![],
        slots: vec![slots],
    };
    let t = Topology::new(
        vec![node(0, "redis-0.svc"), node(1, "127.0.0.1")],
        vec![shard(0, (0, 8191)), shard(1, (8192, 16383))],
    );
    Arc::new(t.expect("a valid topology"))
}

const LIMITS: Limits = Limits {
    max_redirects: 5,
    retry_deadline: Duration::from_secs(2),
};

/// A write to slot 5, not yet redirected or retried.
fn write() -> Waiting {
    Waiting::new(Some(5), false)
}

fn read() -> Waiting {
    Waiting::new(Some(5), true)
}

fn reply(frame: &'static [u8]) -> Outcome {
    let kind = match frame.first() {
        Some(b'-') => ReplyKind::Error,
        _ => ReplyKind::Other,
    };
    Outcome::Reply(Bytes::from_static(frame), kind)
}

fn decide_now(w: &Waiting, outcome: Outcome) -> Action {
    decide(w, outcome, &LIMITS, || Some(topology()), Instant::now)
}

fn data(frame: &'static [u8]) -> Action {
    Action::Reply(Bytes::from_static(frame))
}

fn to(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

#[test]
fn a_plain_reply_is_the_clients_without_looking_at_the_topology() {
    let frame = b"$3\r\nbar\r\n";
    let never = || -> Option<Arc<Topology>> { unreachable!("no snapshot for a plain reply") };
    let never_now = || -> Instant { unreachable!("no clock for a plain reply") };
    let action = decide(&read(), reply(frame), &LIMITS, never, never_now);
    assert_eq!(action, data(frame));
    assert_eq!(
        decide_now(&write(), reply(b"-ERR wrong type\r\n")),
        data(b"-ERR wrong type\r\n")
    );
}

#[test]
fn moved_and_ask_to_a_member_for_the_requests_slot_are_followed() {
    assert_eq!(
        decide_now(&write(), reply(b"-MOVED 5 127.0.0.1:7001\r\n")),
        Action::Redirect {
            to: to(7001),
            moved: Some(5)
        }
    );
    assert_eq!(
        decide_now(&read(), reply(b"-ASK 5 redis-0.svc:7000\r\n")),
        Action::Redirect {
            to: to(7000),
            moved: None
        }
    );
}

#[test]
fn a_redirect_for_another_slot_or_without_a_topology_is_data() {
    let frame = b"-MOVED 6 127.0.0.1:7001\r\n";
    assert_eq!(decide_now(&write(), reply(frame)), data(frame));
    let keyless = Waiting::new(None, false);
    assert_eq!(decide_now(&keyless, reply(frame)), data(frame));
    let none = || -> Option<Arc<Topology>> { None };
    let frame = b"-MOVED 5 127.0.0.1:7001\r\n";
    let action = decide(&write(), reply(frame), &LIMITS, none, Instant::now);
    assert_eq!(action, data(frame));
}

#[test]
fn a_redirect_to_a_non_member_is_confirmed_once_then_data() {
    let frame = b"-MOVED 5 10.0.0.9:7000\r\n";
    assert_eq!(
        decide_now(&write(), reply(frame)),
        Action::Confirm {
            frame: Bytes::from_static(frame),
            wait: LIMITS.retry_deadline
        }
    );
    let mut w = write();
    w.confirming = true;
    assert_eq!(decide_now(&w, reply(frame)), data(frame));
    // Confirmed by the refresh: the node is a member now.
    let member = b"-MOVED 5 127.0.0.1:7001\r\n";
    assert_eq!(
        decide_now(&w, reply(member)),
        Action::Redirect {
            to: to(7001),
            moved: Some(5)
        }
    );
    // A target no refresh could show (port 0) is data at once.
    let junk = b"-ASK 5 10.0.0.9:0\r\n";
    assert_eq!(decide_now(&write(), reply(junk)), data(junk));
}

#[test]
fn the_redirect_budget_ends_redirects_and_confirmations_with_an_error_naming_no_node() {
    let mut w = write();
    w.redirects = LIMITS.max_redirects;
    let spent = Action::Fail(trust::too_many_redirects(Some(5)));
    assert_eq!(decide_now(&w, reply(b"-MOVED 5 127.0.0.1:7001\r\n")), spent);
    assert_eq!(decide_now(&w, reply(b"-MOVED 5 10.0.0.9:7000\r\n")), spent);
    // One hop left: still followed.
    w.redirects = LIMITS.max_redirects - 1;
    assert!(matches!(
        decide_now(&w, reply(b"-ASK 5 127.0.0.1:7001\r\n")),
        Action::Redirect { .. }
    ));
}

#[test]
fn transient_cluster_states_are_retried_after_a_backoff() {
    let cases: [(&'static [u8], bool, RetryReason); 5] = [
        (b"-TRYAGAIN Multiple keys\r\n", false, RetryReason::TryAgain),
        (
            b"-CLUSTERDOWN The cluster is down\r\n",
            true,
            RetryReason::ClusterDown,
        ),
        (b"-LOADING loading\r\n", true, RetryReason::Loading),
        (b"-MASTERDOWN Link down\r\n", true, RetryReason::MasterDown),
        (
            b"-READONLY You can't write\r\n",
            true,
            RetryReason::ReadOnly,
        ),
    ];
    for (frame, refresh, reason) in cases {
        for w in [read(), write()] {
            assert_eq!(
                decide_now(&w, reply(frame)),
                Action::Reroute {
                    refresh,
                    reason,
                    avoid: None
                },
                "{frame:?}"
            );
        }
    }
}

#[test]
fn crossslot_is_the_clients_error() {
    let frame = b"-CROSSSLOT Keys in request don't hash to the same slot\r\n";
    assert_eq!(decide_now(&write(), reply(frame)), data(frame));
}

#[test]
fn past_the_deadline_the_error_or_the_failure_goes_to_the_client() {
    let now = Instant::now();
    let mut w = read();
    w.deadline = Some(now);
    let frame = b"-TRYAGAIN x\r\n";
    let top = || Some(topology());
    assert_eq!(decide(&w, reply(frame), &LIMITS, top, || now), data(frame));
    let lost = Outcome::Failed(BackendError::NotSent("127.0.0.1:7000".into()));
    assert!(matches!(
        decide(&w, lost, &LIMITS, top, || now),
        Action::Fail(m) if m.starts_with("CLUSTERDOWN slotway: ")
    ));
    // Before the deadline it is retried; with no deadline yet it starts now.
    w.deadline = Some(now + Duration::from_millis(1));
    assert!(matches!(
        decide(&w, reply(frame), &LIMITS, top, || now),
        Action::Reroute { .. }
    ));
    let zero = Limits {
        retry_deadline: Duration::ZERO,
        ..LIMITS
    };
    assert_eq!(
        decide(&read(), reply(frame), &zero, top, || now),
        data(frame)
    );
}

#[test]
fn a_connection_lost_before_the_write_reroutes_away_from_the_failed_node() {
    for err in [
        BackendError::Unreachable("127.0.0.1:7000".into()),
        BackendError::NotSent("127.0.0.1:7000".into()),
    ] {
        assert_eq!(
            decide_now(&write(), Outcome::Failed(err)),
            Action::Reroute {
                refresh: true,
                reason: RetryReason::Connection,
                avoid: Some(to(7000))
            }
        );
    }
    // A failure naming no address reroutes without one to avoid.
    let err = BackendError::Unreachable("no node serves the slot".into());
    assert!(matches!(
        decide_now(&write(), Outcome::Failed(err)),
        Action::Reroute { avoid: None, .. }
    ));
}

#[test]
fn a_written_write_after_a_lost_connection_is_an_error_never_re_sent() {
    let lost = || Outcome::Failed(BackendError::Lost("127.0.0.1:7000".into()));
    match decide_now(&write(), lost()) {
        Action::Fail(msg) => {
            assert!(msg.starts_with("ERR slotway: "), "{msg}");
            assert!(msg.contains("may or may not have been applied"), "{msg}");
        }
        other => panic!("a written write was {other:?}"),
    }
    // A read has no effect to double: it is sent again.
    assert_eq!(
        decide_now(&read(), lost()),
        Action::Reroute {
            refresh: true,
            reason: RetryReason::Connection,
            avoid: Some(to(7000))
        }
    );
    let garbled = Outcome::Failed(BackendError::Protocol("127.0.0.1:7000".into()));
    assert!(matches!(
        decide_now(&write(), garbled),
        Action::Fail(m) if m.starts_with("CLUSTERDOWN slotway: ")
    ));
}

/// A script wrapped in MULTI/EXEC (no probe), as `trust::wrap` sends it.
fn script() -> Waiting {
    let mut w = write();
    w.wrap = Some(trust::wrap(b"*3\r\n$4\r\nEVAL\r\n$1\r\nx\r\n$1\r\n0\r\n", None).1);
    w
}

#[test]
fn what_a_wrapped_script_returned_is_data_even_when_it_looks_like_a_redirect() {
    let ran = b"+OK\r\n+QUEUED\r\n*1\r\n-MOVED 5 127.0.0.1:7001\r\n";
    assert_eq!(
        decide_now(&script(), reply(ran)),
        data(b"-MOVED 5 127.0.0.1:7001\r\n")
    );
    let ran = b"+OK\r\n+QUEUED\r\n*1\r\n-TRYAGAIN x\r\n";
    assert_eq!(decide_now(&script(), reply(ran)), data(b"-TRYAGAIN x\r\n"));
}

#[test]
fn a_wrapped_script_refused_while_queuing_may_steer() {
    let refused = b"+OK\r\n-MOVED 5 127.0.0.1:7001\r\n-EXECABORT Transaction discarded\r\n";
    assert_eq!(
        decide_now(&script(), reply(refused)),
        Action::Redirect {
            to: to(7001),
            moved: Some(5)
        }
    );
    let refused = b"+OK\r\n-LOADING x\r\n-EXECABORT Transaction discarded\r\n";
    assert!(matches!(
        decide_now(&script(), reply(refused)),
        Action::Reroute { refresh: true, .. }
    ));
}

#[test]
fn noscript_reloads_only_a_probed_script_within_the_budget() {
    let mut w = write();
    let raw = b"*3\r\n$7\r\nEVALSHA\r\n$3\r\nabc\r\n$1\r\n0\r\n";
    w.wrap = Some(trust::wrap(raw, Some(b"abc")).1);
    let missing =
        b"+OK\r\n+QUEUED\r\n+QUEUED\r\n*2\r\n*1\r\n:0\r\n-NOSCRIPT No matching script\r\n";
    let noscript = b"-NOSCRIPT No matching script\r\n";
    assert_eq!(
        decide_now(&w, reply(missing)),
        Action::Reload(Bytes::from_static(noscript))
    );
    w.redirects = LIMITS.max_redirects;
    assert_eq!(decide_now(&w, reply(missing)), data(noscript));
    // Not probed: a NOSCRIPT is only text.
    assert_eq!(decide_now(&write(), reply(noscript)), data(noscript));
    // The script exists: its NOSCRIPT is its own output.
    let mut w = write();
    w.wrap = Some(trust::wrap(raw, Some(b"abc")).1);
    let own = b"+OK\r\n+QUEUED\r\n+QUEUED\r\n*2\r\n*1\r\n:1\r\n-NOSCRIPT mine\r\n";
    assert_eq!(decide_now(&w, reply(own)), data(b"-NOSCRIPT mine\r\n"));
}

#[test]
fn recording_an_action_spends_its_budget() {
    let now = Instant::now();
    let mut w = write();
    w.record(
        &Action::Redirect {
            to: to(7001),
            moved: None,
        },
        &LIMITS,
        || now,
    );
    assert_eq!((w.redirects, w.attempts, w.deadline), (1, 0, None));
    let confirm = Action::Confirm {
        frame: Bytes::new(),
        wait: LIMITS.retry_deadline,
    };
    w.record(&confirm, &LIMITS, || now);
    assert!(w.confirming);
    assert_eq!(w.redirects, 2);
    let reroute = Action::Reroute {
        refresh: false,
        reason: RetryReason::TryAgain,
        avoid: None,
    };
    w.record(&reroute, &LIMITS, || now);
    assert!(!w.confirming);
    assert_eq!(
        (w.attempts, w.deadline),
        (1, Some(now + LIMITS.retry_deadline))
    );
    // The deadline is set once, at the first retry.
    w.record(&reroute, &LIMITS, || now + Duration::from_secs(1));
    assert_eq!(
        (w.attempts, w.deadline),
        (2, Some(now + LIMITS.retry_deadline))
    );
}

fn exec_run(run: &'static [u8]) -> Outcome {
    Outcome::Reply(Bytes::from_static(run), ReplyKind::Other)
}

#[test]
fn exec_reply_is_the_last_frame_of_the_run() {
    let run = b"+OK\r\n+QUEUED\r\n+QUEUED\r\n*2\r\n:1\r\n$1\r\nx\r\n";
    let (frame, refresh) = exec_reply(exec_run(run), 4);
    assert_eq!(&frame[..], b"*2\r\n:1\r\n$1\r\nx\r\n");
    assert!(!refresh);
    // Errors inside EXEC's array and EXECABORT are Redis's answer, passed on.
    let run = b"+OK\r\n-ERR bad\r\n-EXECABORT Transaction discarded\r\n";
    let (frame, _) = exec_reply(exec_run(run), 3);
    assert_eq!(&frame[..], b"-EXECABORT Transaction discarded\r\n");
}

#[test]
fn a_routing_error_while_queuing_is_a_clear_error() {
    let run = b"+OK\r\n-MOVED 12 10.0.0.1:7000\r\n-EXECABORT Transaction discarded\r\n";
    let (frame, refresh) = exec_reply(exec_run(run), 3);
    let text = String::from_utf8_lossy(&frame);
    assert!(
        text.starts_with("-ERR slotway: transaction aborted (nothing was executed)"),
        "{text}"
    );
    assert!(text.contains("MOVED 12"), "{text}");
    assert!(refresh);
    // EXEC itself redirected: the node discarded the transaction.
    let run = b"+OK\r\n+QUEUED\r\n-MOVED 12 10.0.0.1:7000\r\n";
    let (frame, refresh) = exec_reply(exec_run(run), 3);
    assert!(String::from_utf8_lossy(&frame).contains("nothing was executed"));
    assert!(refresh);
}

#[test]
fn a_durability_error_or_a_failure_is_passed_on() {
    let durable = b"-ERR slotway: the write was applied on the primary but only 0 of 2\r\n";
    let (frame, _) = exec_reply(exec_run(durable), 3);
    assert_eq!(&frame[..], &durable[..]);
    let lost = Outcome::Failed(BackendError::Lost("n:1".into()));
    let (frame, _) = exec_reply(lost, 3);
    assert!(String::from_utf8_lossy(&frame).contains("may or may not have been applied"));
    let unsent = Outcome::Failed(BackendError::NotSent("n:1".into()));
    let (frame, _) = exec_reply(unsent, 3);
    assert!(String::from_utf8_lossy(&frame).contains("nothing was executed"));
}
