use super::*;
use crate::cluster::topology::{Health, Node, Role, Shard};
use crate::protocol::classify_error;

/// Two shards: 127.0.0.1:7000 (slots 0-8191, endpoint "redis-0.svc") and 127.0.0.1:7001.
fn topology() -> Topology {
    let node = |i: u16, endpoint: &str| Node {
        id: format!("{i:040}"),
        addr: format!("127.0.0.1:{}", 7000 + i).parse().unwrap(),
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
    Topology::new(
        vec![node(0, "redis-0.svc"), node(1, "127.0.0.1")],
        vec![shard(0, (0, 8191)), shard(1, (8192, 16383))],
    )
    .unwrap()
}

fn gate(frame: &[u8], slot: Option<u16>, confirmed: bool) -> Gate {
    let t = topology();
    judge(&classify_error(frame), slot, Some(&t), confirmed)
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[test]
fn redirects_to_members_of_the_request_slot_are_followed() {
    assert_eq!(
        gate(b"-MOVED 9000 127.0.0.1:7000\r\n", Some(9000), false),
        Gate::Redirect {
            to: addr("127.0.0.1:7000"),
            moved: Some(9000)
        }
    );
    assert_eq!(
        gate(b"-ASK 5 127.0.0.1:7001\r\n", Some(5), false),
        Gate::Redirect {
            to: addr("127.0.0.1:7001"),
            moved: None
        }
    );
    // A host name only as a member announced it, mapped to that member's address.
    assert_eq!(
        gate(b"-MOVED 5 redis-0.svc:7000\r\n", Some(5), false),
        Gate::Redirect {
            to: addr("127.0.0.1:7000"),
            moved: Some(5)
        }
    );
    // An empty host is the node that answered: the slot's owner.
    assert_eq!(
        gate(b"-MOVED 9000 :7001\r\n", Some(9000), false),
        Gate::Redirect {
            to: addr("127.0.0.1:7001"),
            moved: Some(9000)
        }
    );
}

#[test]
fn redirects_that_redis_could_not_have_sent_are_data() {
    // No keys: Redis redirects only commands with keys.
    assert_eq!(
        gate(b"-MOVED 0 127.0.0.1:7000\r\n", None, false),
        Gate::Data
    );
    assert_eq!(gate(b"-ASK 0 127.0.0.1:7000\r\n", None, false), Gate::Data);
    // Another slot than the request's.
    assert_eq!(
        gate(b"-MOVED 1 127.0.0.1:7000\r\n", Some(2), false),
        Gate::Data
    );
    assert_eq!(
        gate(b"-ASK 1 127.0.0.1:7000\r\n", Some(2), false),
        Gate::Data
    );
    // No topology to check against.
    let err = classify_error(b"-MOVED 1 127.0.0.1:7000\r\n");
    assert_eq!(judge(&err, Some(1), None, false), Gate::Data);
}

#[test]
fn unknown_targets_wait_for_a_refresh_then_are_data() {
    for frame in [
        &b"-MOVED 3 127.0.0.1:18999\r\n"[..],
        b"-ASK 3 10.1.2.3:7000\r\n",
        b"-MOVED 3 attacker.example:7000\r\n",
        // A member's port under another host name: still not a member.
        b"-MOVED 3 localhost:7000\r\n",
    ] {
        assert_eq!(gate(frame, Some(3), false), Gate::Confirm, "{frame:?}");
        assert_eq!(gate(frame, Some(3), true), Gate::Data, "{frame:?}");
    }
    // Port 0 can never be a member: no refresh for it.
    assert_eq!(
        gate(b"-MOVED 3 127.0.0.1:0\r\n", Some(3), false),
        Gate::Data
    );
}

#[test]
fn other_errors() {
    let retry = |refresh| Gate::Retry { refresh };
    assert_eq!(gate(b"-TRYAGAIN x\r\n", Some(1), false), retry(false));
    for frame in [
        &b"-CLUSTERDOWN x\r\n"[..],
        b"-LOADING x\r\n",
        b"-MASTERDOWN x\r\n",
        b"-READONLY x\r\n",
    ] {
        assert_eq!(gate(frame, None, false), retry(true), "{frame:?}");
    }
    assert_eq!(gate(b"-NOSCRIPT x\r\n", Some(1), false), Gate::Reload);
    assert_eq!(gate(b"-CROSSSLOT x\r\n", Some(1), false), Gate::Data);
    assert_eq!(gate(b"-ERR x\r\n", Some(1), false), Gate::Data);
}

#[test]
fn membership_is_by_resolved_address() {
    let t = topology();
    assert!(is_member(&t, addr("127.0.0.1:7000")));
    assert!(!is_member(&t, addr("127.0.0.1:18999")));
    assert_eq!(member(&t, "127.0.0.2:7000", 0), None);
    assert_eq!(
        member(&t, "REDIS-0.SVC:7000", 0),
        Some(addr("127.0.0.1:7000"))
    );
}

fn run(frames: &[&[u8]]) -> Bytes {
    Bytes::from(frames.concat())
}

const PLAIN: Wrap = Wrap {
    probe: false,
    prefix: 0,
};
const PROBED: Wrap = Wrap {
    probe: true,
    prefix: 0,
};

#[test]
fn wrapping_keeps_the_request_and_counts_replies() {
    let raw = b"*3\r\n$4\r\nEVAL\r\n$8\r\nreturn 1\r\n$1\r\n0\r\n";
    let (bytes, w) = wrap(raw, None);
    assert!(bytes.starts_with(b"*1\r\n$5\r\nMULTI\r\n"));
    assert!(bytes.ends_with(EXEC));
    assert_eq!(w.replies(), 3);
    assert_eq!(&w.inner(&bytes)[..], &raw[..]);
    let (bytes, w) = wrap(raw, Some(b"abc"));
    assert_eq!(w.replies(), 4);
    assert_eq!(&w.inner(&bytes)[..], &raw[..]);
    assert!(bytes[15..].starts_with(b"*3\r\n$6\r\nSCRIPT\r\n$6\r\nEXISTS\r\n$3\r\nabc\r\n"));
}

#[test]
fn a_script_reply_inside_exec_is_data() {
    for reply in [
        &b"-MOVED 0 127.0.0.1:7000\r\n"[..],
        b"-ASK 0 127.0.0.1:7000\r\n",
        b"-TRYAGAIN x\r\n",
        b"-NOSCRIPT x\r\n",
        b":1\r\n",
        b"*2\r\n:1\r\n$1\r\na\r\n",
    ] {
        let got = unwrap(&run(&[b"+OK\r\n", b"+QUEUED\r\n", b"*1\r\n", reply]), PLAIN);
        assert_eq!(got, Verdict::Ran(Bytes::copy_from_slice(reply)));
    }
}

#[test]
fn a_queuing_error_means_nothing_ran() {
    let moved = b"-MOVED 5 127.0.0.1:7001\r\n";
    let abort = b"-EXECABORT Transaction discarded because of previous errors.\r\n";
    let got = unwrap(&run(&[b"+OK\r\n", moved, abort]), PLAIN);
    assert_eq!(got, Verdict::NotRun(Bytes::from_static(moved)));
    // A slot that moved between queuing and EXEC: EXEC's own redirect.
    let got = unwrap(&run(&[b"+OK\r\n", b"+QUEUED\r\n", moved]), PLAIN);
    assert_eq!(got, Verdict::NotRun(Bytes::from_static(moved)));
}

#[test]
fn anything_unexpected_counts_as_run() {
    // MULTI refused: the script ran on its own; its reply is the queued slot's.
    let got = unwrap(
        &run(&[
            b"-NOPERM no multi\r\n",
            b"-MOVED 1 h:1\r\n",
            b"-ERR EXEC without MULTI\r\n",
        ]),
        PLAIN,
    );
    assert_eq!(got, Verdict::Ran(Bytes::from_static(b"-MOVED 1 h:1\r\n")));
    // A short run (the durable-write verdict replaced it): passed on whole.
    let short = run(&[b"-ERR slotway: not durable\r\n"]);
    assert_eq!(unwrap(&short, PLAIN), Verdict::Ran(short.clone()));
    let null = run(&[b"+OK\r\n", b"+QUEUED\r\n", b"*-1\r\n"]);
    assert_eq!(
        unwrap(&null, PLAIN),
        Verdict::Ran(Bytes::from_static(b"*-1\r\n"))
    );
}

#[test]
fn noscript_is_trusted_only_when_the_probe_saw_no_script() {
    let noscript = b"-NOSCRIPT No matching script.\r\n";
    let q = b"+QUEUED\r\n";
    let missing = run(&[b"+OK\r\n", q, q, b"*2\r\n*1\r\n:0\r\n", noscript]);
    assert_eq!(
        unwrap(&missing, PROBED),
        Verdict::NotRun(Bytes::from_static(noscript))
    );
    let present = run(&[b"+OK\r\n", q, q, b"*2\r\n*1\r\n:1\r\n", noscript]);
    assert_eq!(
        unwrap(&present, PROBED),
        Verdict::Ran(Bytes::from_static(noscript))
    );
    let ok = run(&[b"+OK\r\n", q, q, b"*2\r\n*1\r\n:1\r\n", b":7\r\n"]);
    assert_eq!(
        unwrap(&ok, PROBED),
        Verdict::Ran(Bytes::from_static(b":7\r\n"))
    );
}

#[test]
fn budget_error_names_no_node() {
    let text = too_many_redirects(Some(12));
    assert!(text.starts_with("TRYAGAIN slotway: slot 12"));
    assert!(!text.starts_with("MOVED") && !text.starts_with("ASK"));
}
