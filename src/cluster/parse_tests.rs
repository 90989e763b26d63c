//! Parser tests on hand-built frames shaped like Redis 7.0.15's replies.

use super::*;
use OwnedFrame::{Array, Integer, Null};

fn s(text: &str) -> OwnedFrame {
    OwnedFrame::BulkString(text.as_bytes().to_vec())
}

/// A `CLUSTER SHARDS` node entry; `endpoint: None` leaves the field out.
fn shard_node(
    id: &str,
    port: i64,
    endpoint: Option<&str>,
    hostname: Option<&str>,
    role: &str,
    health: &str,
) -> OwnedFrame {
    let mut f = vec![
        s("id"),
        s(id),
        s("port"),
        Integer(port),
        s("ip"),
        s("10.0.0.9"),
    ];
    if let Some(e) = endpoint {
        f.extend([s("endpoint"), s(e)]);
    }
    if let Some(h) = hostname {
        f.extend([s("hostname"), s(h)]);
    }
    f.extend([
        s("role"),
        s(role),
        s("replication-offset"),
        Integer(42),
        s("health"),
        s(health),
    ]);
    Array(f)
}

fn shard(slots: &[i64], nodes: Vec<OwnedFrame>) -> OwnedFrame {
    Array(vec![
        s("slots"),
        Array(slots.iter().map(|&n| Integer(n)).collect()),
        s("nodes"),
        Array(nodes),
    ])
}

fn ip(text: &str) -> Endpoint {
    Endpoint::Ip(text.parse().unwrap())
}

#[test]
fn shards_with_replicas_hostnames_and_health() {
    let reply = Array(vec![
        shard(
            &[0, 5460],
            vec![
                shard_node(
                    "a",
                    7001,
                    Some("redis-0.redis"),
                    Some("redis-0.redis"),
                    "master",
                    "online",
                ),
                shard_node("a1", 7004, Some("10.0.0.4"), None, "replica", "loading"),
            ],
        ),
        shard(
            &[5461, 10922, 12000, 12001],
            vec![shard_node(
                "b",
                7002,
                Some("10.0.0.2"),
                None,
                "master",
                "online",
            )],
        ),
        // A failed primary that lost its slots in a failover.
        shard(
            &[],
            vec![shard_node(
                "c-old",
                7003,
                Some("10.0.0.3"),
                None,
                "master",
                "failed",
            )],
        ),
    ]);
    let t = parse_cluster_shards(&reply).unwrap();
    assert_eq!(t.nodes.len(), 4);
    assert_eq!(t.nodes[0].endpoint, Endpoint::Host("redis-0.redis".into()));
    assert_eq!(t.nodes[0].role, Role::Primary);
    assert_eq!(t.nodes[1].endpoint, ip("10.0.0.4"));
    assert_eq!(t.nodes[1].role, Role::Replica);
    assert_eq!(t.nodes[1].health, Health::Loading);
    assert_eq!(t.nodes[3].health, Health::Failed);
    assert_eq!(t.shards.len(), 3);
    assert_eq!(t.shards[0].primary, 0);
    assert_eq!(t.shards[0].replicas, [1]);
    assert_eq!(t.shards[1].slots, [(5461, 10922), (12000, 12001)]);
    assert!(t.shards[2].slots.is_empty());
}

#[test]
fn shards_unknown_endpoints() {
    let reply = Array(vec![shard(
        &[0, 16383],
        vec![
            // unknown-endpoint: empty string → the asked node.
            shard_node("a", 7001, Some(""), None, "master", "online"),
            // hostname preferred but none set: "?" → fall back to the ip field.
            shard_node("a1", 7002, Some("?"), None, "replica", "online"),
            // No endpoint field at all (pre-7.0 shape): the ip field.
            shard_node("a2", 7003, None, None, "replica", "online"),
        ],
    )]);
    let t = parse_cluster_shards(&reply).unwrap();
    assert_eq!(t.nodes[0].endpoint, Endpoint::SameAsAsked);
    assert_eq!(t.nodes[1].endpoint, ip("10.0.0.9"));
    assert_eq!(t.nodes[2].endpoint, ip("10.0.0.9"));
}

#[test]
fn shards_slots_as_strings_and_a_shard_without_primary() {
    let reply = Array(vec![
        Array(vec![
            s("slots"),
            Array(vec![s("0"), s("99")]),
            s("nodes"),
            Array(vec![shard_node(
                "a",
                7001,
                Some("10.0.0.1"),
                None,
                "master",
                "online",
            )]),
        ]),
        shard(
            &[100, 200],
            vec![shard_node(
                "x",
                7009,
                Some("10.0.0.1"),
                None,
                "replica",
                "failed",
            )],
        ),
    ]);
    let t = parse_cluster_shards(&reply).unwrap();
    assert_eq!(
        t.shards.len(),
        1,
        "the shard with no primary has no owner for its slots"
    );
    assert_eq!(t.shards[0].slots, [(0, 99)]);
    assert_eq!(t.nodes.len(), 2, "its nodes are still known");
}

#[test]
fn shards_rejects_garbage() {
    assert!(parse_cluster_shards(&s("nope")).is_err());
    assert!(parse_cluster_shards(&OwnedFrame::Error("ERR unknown".into())).is_err());
    assert!(
        parse_cluster_shards(&Array(vec![shard(&[0], vec![])])).is_err(),
        "odd slots list"
    );
    assert!(parse_cluster_shards(&Array(vec![shard(&[0, 16384], vec![])])).is_err());
    let bad_role = Array(vec![shard(
        &[0, 1],
        vec![shard_node("a", 7001, Some("h"), None, "boss", "online")],
    )]);
    assert!(parse_cluster_shards(&bad_role).is_err());
    let bad_port = Array(vec![shard(
        &[0, 1],
        vec![shard_node("a", 0, Some("h"), None, "master", "online")],
    )]);
    assert!(parse_cluster_shards(&bad_port).is_err());
    assert_eq!(
        parse_cluster_shards(&Array(vec![])).unwrap(),
        RawTopology::default()
    );
}

/// A `CLUSTER SLOTS` node: `[host, port, id, metadata]`.
fn slots_node(host: OwnedFrame, port: i64, id: &str, metadata: &[(&str, &str)]) -> OwnedFrame {
    let meta = metadata.iter().flat_map(|(k, v)| [s(k), s(v)]).collect();
    Array(vec![host, Integer(port), s(id), Array(meta)])
}

fn range(start: i64, end: i64, nodes: Vec<OwnedFrame>) -> OwnedFrame {
    let mut items = vec![Integer(start), Integer(end)];
    items.extend(nodes);
    Array(items)
}

#[test]
fn slots_groups_ranges_by_primary() {
    let reply = Array(vec![
        range(
            0,
            5460,
            vec![
                slots_node(s("10.0.0.1"), 7001, "a", &[]),
                slots_node(s("10.0.0.4"), 7004, "a1", &[]),
            ],
        ),
        range(
            5461,
            16383,
            vec![slots_node(
                s("10.0.0.2"),
                7002,
                "b",
                &[("hostname", "redis-1")],
            )],
        ),
        range(
            5000,
            5000,
            vec![
                slots_node(s("10.0.0.1"), 7001, "a", &[]),
                slots_node(s("10.0.0.4"), 7004, "a1", &[]),
            ],
        ),
    ]);
    let t = parse_cluster_slots(&reply).unwrap();
    assert_eq!(t.nodes.len(), 3);
    assert_eq!(t.shards.len(), 2);
    assert_eq!(t.shards[0].slots, [(0, 5460), (5000, 5000)]);
    assert_eq!(t.shards[0].replicas, [1], "replica listed once");
    assert_eq!(t.nodes[1].role, Role::Replica);
    assert_eq!(
        t.nodes[2].endpoint,
        ip("10.0.0.2"),
        "the preferred endpoint wins over metadata"
    );
}

#[test]
fn slots_hostnames_null_and_question_mark() {
    let reply = Array(vec![
        range(
            0,
            99,
            vec![slots_node(
                s("redis-0.redis.ns.svc"),
                7001,
                "a",
                &[("ip", "10.0.0.1")],
            )],
        ),
        range(
            100,
            199,
            vec![slots_node(Null, 7002, "b", &[("ip", "10.0.0.2")])],
        ),
        range(
            200,
            299,
            vec![slots_node(s("?"), 7003, "c", &[("ip", "10.0.0.3")])],
        ),
        range(300, 399, vec![slots_node(s("?"), 7004, "d", &[])]),
        range(400, 499, vec![slots_node(s(""), 7005, "e", &[])]),
    ]);
    let t = parse_cluster_slots(&reply).unwrap();
    let endpoints: Vec<_> = t.nodes.iter().map(|n| n.endpoint.clone()).collect();
    assert_eq!(
        endpoints,
        [
            Endpoint::Host("redis-0.redis.ns.svc".into()),
            Endpoint::SameAsAsked,
            ip("10.0.0.3"),
            Endpoint::SameAsAsked,
            Endpoint::SameAsAsked,
        ]
    );
}

#[test]
fn slots_old_shape_without_id() {
    let reply = Array(vec![range(
        0,
        16383,
        vec![Array(vec![s("10.0.0.1"), Integer(7001)])],
    )]);
    let t = parse_cluster_slots(&reply).unwrap();
    assert_eq!(t.nodes[0].id, "10.0.0.1:7001");
    assert_eq!(t.shards[0].slots, [(0, 16383)]);
}

#[test]
fn slots_rejects_garbage() {
    assert!(parse_cluster_slots(&Array(vec![Array(vec![Integer(0), Integer(1)])])).is_err());
    assert!(parse_cluster_slots(&Array(vec![range(0, 1, vec![Array(vec![s("h")])])])).is_err());
    assert!(parse_cluster_slots(&Array(vec![range(
        0,
        1,
        vec![Array(vec![Integer(3), Integer(7001)])]
    )]))
    .is_err());
    assert!(parse_cluster_slots(&Array(vec![range(
        -1,
        1,
        vec![slots_node(s("h"), 1, "a", &[])]
    )]))
    .is_err());
}

/// A node with a plaintext `port`, a `tls-port`, or both (Redis 7.0 with `tls-cluster yes`
/// lists `port` only when it is not 0).
fn ported_node(id: &str, ports: &[(&str, i64)]) -> OwnedFrame {
    let mut f = vec![s("id"), s(id)];
    for (name, port) in ports {
        f.extend([s(name), Integer(*port)]);
    }
    f.extend([s("ip"), s("10.0.0.1"), s("role"), s("master")]);
    Array(f)
}

#[test]
fn shards_tls_port_is_used_with_upstream_tls() {
    let reply = Array(vec![
        shard(&[0, 8191], vec![ported_node("a", &[("tls-port", 6380)])]),
        shard(
            &[8192, 16383],
            vec![ported_node("b", &[("port", 6379), ("tls-port", 6380)])],
        ),
    ]);
    let ports = |tls| -> Vec<u16> {
        let t = parse_cluster_shards_with(&reply, tls).unwrap();
        t.nodes.iter().map(|n| n.port).collect()
    };
    // TLS-only nodes (port 0) have only a tls-port; plaintext wins when both are open and
    // TLS is off, the TLS port when it is on.
    assert_eq!(ports(false), [6380, 6379]);
    assert_eq!(ports(true), [6380, 6380]);
    assert_eq!(parse_cluster_shards(&reply).unwrap().nodes[1].port, 6379);
}
