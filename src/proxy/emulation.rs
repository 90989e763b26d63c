//! Cluster-mode clients through one endpoint: with `commands.cluster_emulation` on, `CLUSTER
//! INFO / SLOTS / SHARDS / NODES / MYID` describe a one-node cluster that owns all 16384 slots
//! at the proxy's advertised address, so a client in cluster mode sends everything to slotway
//! (and slotway does the real routing). `CLUSTER KEYSLOT` is computed here; `COUNTKEYSINSLOT`
//! and `GETKEYSINSLOT` go to the slot's owner (see `classify`). With emulation off, the
//! describing subcommands get the error a standalone Redis gives.

use std::ops::Range;

use bytes::{Bytes, BytesMut};

use super::sha1;
use super::Shared;
use crate::cluster::slot::key_slot;
use crate::protocol::encode;

/// The `CLUSTER` subcommands answered here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterCmd {
    /// `CLUSTER INFO`.
    Info,
    /// `CLUSTER SLOTS`.
    Slots,
    /// `CLUSTER SHARDS`.
    Shards,
    /// `CLUSTER NODES`.
    Nodes,
    /// `CLUSTER MYID`.
    MyId,
    /// `CLUSTER KEYSLOT key`.
    KeySlot,
}

/// What the emulated cluster looks like to one client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct View {
    /// Emulation on (`commands.cluster_emulation`).
    pub enabled: bool,
    /// The advertised host (an IP, or a name from `commands.announce_address`).
    pub host: String,
    /// The advertised port.
    pub port: u16,
    /// Every slot of the real cluster has a primary slotway can reach.
    pub healthy: bool,
}

/// The error a Redis server without cluster support gives.
const DISABLED: &str = "ERR This instance has cluster support disabled";

impl View {
    /// The view for a client connected to `local` (the proxy's end of its connection), which
    /// is the advertised address unless `commands.announce_address` names one.
    pub fn for_client(shared: &Shared, local: std::io::Result<std::net::SocketAddr>) -> Self {
        let cfg = &shared.config.commands;
        let announced = (!cfg.announce_address.is_empty())
            .then(|| cfg.announce_address.parse::<crate::net::NodeAddr>().ok())
            .flatten()
            .map(|a| (a.host().to_string(), a.port()));
        let (host, port) = announced.unwrap_or_else(|| match local {
            Ok(a) => (a.ip().to_string(), a.port()),
            Err(_) => (String::from("127.0.0.1"), 0),
        });
        let healthy = shared
            .router
            .table()
            .as_ref()
            .is_some_and(|t| t.topology.covers_all_slots());
        View {
            enabled: cfg.cluster_emulation,
            host,
            port,
            healthy,
        }
    }

    /// The emulated node's ID: stable for an address, 40 hex characters like a real one.
    pub fn node_id(&self) -> String {
        sha1::hex(format!("slotway {}:{}", self.host, self.port).as_bytes())
    }

    /// The reply to `cmd` (the request's raw bytes and argument ranges for KEYSLOT), in
    /// RESP3 when `resp3` (maps for SHARDS, verbatim text for INFO and NODES, as Redis sends).
    pub fn reply(&self, cmd: ClusterCmd, raw: &[u8], args: &[Range<usize>], resp3: bool) -> Bytes {
        let mut out = BytesMut::new();
        match cmd {
            ClusterCmd::KeySlot => match args.get(2) {
                Some(r) => encode::integer(&mut out, i64::from(key_slot(&raw[r.clone()]))),
                None => encode::error(
                    &mut out,
                    "ERR wrong number of arguments for 'cluster|keyslot' command",
                ),
            },
            _ if !self.enabled => encode::error(&mut out, DISABLED),
            ClusterCmd::Info => encode::text(&mut out, self.info().as_bytes(), resp3),
            ClusterCmd::MyId => encode::bulk(&mut out, self.node_id().as_bytes()),
            ClusterCmd::Nodes => encode::text(&mut out, self.nodes().as_bytes(), resp3),
            ClusterCmd::Slots => self.slots(&mut out),
            ClusterCmd::Shards => self.shards(&mut out, resp3),
        }
        out.freeze()
    }

    fn info(&self) -> String {
        let (state, ok) = if self.healthy {
            ("ok", 16384)
        } else {
            ("fail", 0)
        };
        let fields: [(&str, String); 12] = [
            ("cluster_state", state.to_string()),
            ("cluster_slots_assigned", "16384".into()),
            ("cluster_slots_ok", ok.to_string()),
            ("cluster_slots_pfail", "0".into()),
            ("cluster_slots_fail", (16384 - ok).to_string()),
            ("cluster_known_nodes", "1".into()),
            ("cluster_size", "1".into()),
            ("cluster_current_epoch", "1".into()),
            ("cluster_my_epoch", "1".into()),
            ("cluster_stats_messages_sent", "0".into()),
            ("cluster_stats_messages_received", "0".into()),
            ("total_cluster_links_buffer_limit_exceeded", "0".into()),
        ];
        fields.iter().map(|(k, v)| format!("{k}:{v}\r\n")).collect()
    }

    fn nodes(&self) -> String {
        let flags = if self.healthy {
            "myself,master"
        } else {
            "myself,master,fail?"
        };
        format!(
            "{} {}:{}@0 {flags} - 0 0 1 connected 0-16383\n",
            self.node_id(),
            self.host,
            self.port
        )
    }

    fn slots(&self, out: &mut BytesMut) {
        encode::array_header(out, 1);
        encode::array_header(out, 3);
        encode::integer(out, 0);
        encode::integer(out, 16383);
        encode::array_header(out, 4);
        encode::bulk(out, self.host.as_bytes());
        encode::integer(out, i64::from(self.port));
        encode::bulk(out, self.node_id().as_bytes());
        encode::array_header(out, 0);
    }

    fn shards(&self, out: &mut BytesMut, resp3: bool) {
        encode::array_header(out, 1);
        encode::map_header(out, 2, resp3);
        encode::bulk(out, b"slots");
        encode::array_header(out, 2);
        encode::integer(out, 0);
        encode::integer(out, 16383);
        encode::bulk(out, b"nodes");
        encode::array_header(out, 1);
        encode::map_header(out, 7, resp3);
        encode::bulk(out, b"id");
        encode::bulk(out, self.node_id().as_bytes());
        encode::bulk(out, b"port");
        encode::integer(out, i64::from(self.port));
        encode::bulk(out, b"ip");
        encode::bulk(out, self.host.as_bytes());
        encode::bulk(out, b"endpoint");
        encode::bulk(out, self.host.as_bytes());
        encode::bulk(out, b"role");
        encode::bulk(out, b"master");
        encode::bulk(out, b"replication-offset");
        encode::integer(out, 0);
        encode::bulk(out, b"health");
        encode::bulk(
            out,
            if self.healthy {
                &b"online"[..]
            } else {
                b"fail"
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::parse::{parse_cluster_shards, parse_cluster_slots, Endpoint};
    use crate::cluster::topology::Role;
    use redis_protocol::resp2::decode::decode;

    fn view() -> View {
        View {
            enabled: true,
            host: "127.0.0.1".into(),
            port: 7000,
            healthy: true,
        }
    }

    fn frame(bytes: &[u8]) -> redis_protocol::resp2::types::OwnedFrame {
        let (f, used) = decode(bytes).unwrap().unwrap();
        assert_eq!(used, bytes.len());
        f
    }

    #[test]
    fn slots_and_shards_parse_as_one_node_owning_everything() {
        let v = view();
        for raw in [
            v.reply(ClusterCmd::Slots, b"", &[], false),
            v.reply(ClusterCmd::Shards, b"", &[], false),
        ] {
            let f = frame(&raw);
            let t = parse_cluster_shards(&f)
                .or_else(|_| parse_cluster_slots(&f))
                .unwrap();
            assert_eq!(t.nodes.len(), 1);
            assert_eq!(t.nodes[0].id, v.node_id());
            assert_eq!(t.nodes[0].port, 7000);
            assert_eq!(t.nodes[0].role, Role::Primary);
            assert_eq!(
                t.nodes[0].endpoint,
                Endpoint::Ip("127.0.0.1".parse().unwrap())
            );
            assert_eq!(t.shards.len(), 1);
            assert_eq!(t.shards[0].slots, vec![(0, 16383)]);
        }
    }

    #[test]
    fn info_nodes_myid() {
        let v = view();
        let id = v.node_id();
        assert_eq!(id.len(), 40);
        assert_eq!(id, view().node_id(), "stable for an address");
        let info = v.reply(ClusterCmd::Info, b"", &[], false);
        let text = String::from_utf8_lossy(&info);
        assert!(text.contains("cluster_state:ok\r\n"));
        assert!(text.contains("cluster_slots_assigned:16384\r\n"));
        assert!(text.contains("cluster_known_nodes:1\r\n"));
        let nodes = v.reply(ClusterCmd::Nodes, b"", &[], false);
        let expected = format!("{id} 127.0.0.1:7000@0 myself,master - 0 0 1 connected 0-16383\n");
        assert_eq!(nodes, format!("${}\r\n{expected}\r\n", expected.len()));
        assert_eq!(
            v.reply(ClusterCmd::MyId, b"", &[], false),
            format!("$40\r\n{id}\r\n")
        );
        let down = View {
            healthy: false,
            ..view()
        };
        let text =
            String::from_utf8_lossy(&down.reply(ClusterCmd::Info, b"", &[], false)).into_owned();
        assert!(text.contains("cluster_state:fail\r\n"));
    }

    #[test]
    fn resp3_uses_maps_and_verbatim_text() {
        let v = view();
        let shards = v.reply(ClusterCmd::Shards, b"", &[], true);
        assert!(
            shards.starts_with(
                b"*1\r\n%2\r\n$5\r\nslots\r\n*2\r\n:0\r\n:16383\r\n$5\r\nnodes\r\n*1\r\n%7\r\n"
            ),
            "{shards:?}"
        );
        let nodes = v.reply(ClusterCmd::Nodes, b"", &[], true);
        assert!(nodes.starts_with(b"="), "{nodes:?}");
        assert!(nodes.windows(4).any(|w| w == b"txt:"));
        let info = v.reply(ClusterCmd::Info, b"", &[], true);
        assert!(info.starts_with(b"="), "{info:?}");
        // Same structure in both protocols: arrays and integers.
        assert_eq!(
            v.reply(ClusterCmd::Slots, b"", &[], true),
            v.reply(ClusterCmd::Slots, b"", &[], false)
        );
    }

    #[test]
    fn keyslot_and_disabled() {
        let raw = b"CLUSTERKEYSLOTfoo";
        let args = [0..7, 7..14, 14..17];
        assert_eq!(
            view().reply(ClusterCmd::KeySlot, raw, &args, false),
            ":12182\r\n"
        );
        let off = View {
            enabled: false,
            ..view()
        };
        assert_eq!(
            off.reply(ClusterCmd::KeySlot, raw, &args, false),
            ":12182\r\n"
        );
        assert_eq!(
            off.reply(ClusterCmd::Slots, b"", &[], false),
            format!("-{DISABLED}\r\n")
        );
    }
}
