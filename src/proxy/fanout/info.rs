//! `INFO` through the proxy: slotway's own `Server`, `Clients` and `Cluster` sections, plus a
//! `Keyspace` section summed over every shard's primary (and the Redis version the nodes run).

use std::sync::OnceLock;
use tokio::time::Instant;

use bytes::{Bytes, BytesMut};

use crate::command::Request;
use crate::protocol::encode;

/// When the proxy started serving.
static STARTED: OnceLock<Instant> = OnceLock::new();

/// Records the proxy's start time for `uptime_in_seconds` (the first call wins).
pub(crate) fn mark_start() {
    STARTED.get_or_init(Instant::now);
}

/// The sections slotway answers (a bit each).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Sections(u8);

impl Sections {
    const SERVER: u8 = 1;
    const CLIENTS: u8 = 2;
    const CLUSTER: u8 = 4;
    const KEYSPACE: u8 = 8;
    const ALL: u8 = 15;

    /// The sections `INFO [section …]` asks for; `default`, `all` and `everything` (or none)
    /// mean every section slotway has. Unknown names select nothing, as in Redis.
    pub(crate) fn parse(req: &Request<'_>) -> Self {
        let (raw, args) = (req.raw(), req.args());
        if args.len() < 2 {
            return Sections(Self::ALL);
        }
        let mut bits = 0;
        for r in &args[1..] {
            let name = raw[r.clone()].to_ascii_lowercase();
            bits |= match name.as_slice() {
                b"default" | b"all" | b"everything" => Self::ALL,
                b"server" => Self::SERVER,
                b"clients" => Self::CLIENTS,
                b"cluster" => Self::CLUSTER,
                b"keyspace" => Self::KEYSPACE,
                _ => 0,
            };
        }
        Sections(bits)
    }

    fn has(self, bit: u8) -> bool {
        self.0 & bit != 0
    }

    /// True when the keyspace section is asked for.
    pub(crate) fn has_keyspace(self) -> bool {
        self.has(Self::KEYSPACE)
    }

    /// True when the nodes must be asked (keyspace counts, Redis version).
    pub(crate) fn needs_nodes(self) -> bool {
        self.has(Self::SERVER) || self.has(Self::KEYSPACE)
    }
}

/// Proxy-side facts for an `INFO` reply, fixed when the request arrives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct InfoPlan {
    /// The sections asked for.
    pub(crate) sections: Sections,
    /// The port this client connected to.
    pub(crate) tcp_port: u16,
    /// `client.max_connections`.
    pub(crate) maxclients: usize,
    /// Whether cluster emulation is on (`cluster_enabled`).
    pub(crate) cluster_enabled: bool,
    /// The client chose RESP3: the text is sent as verbatim text, as Redis does.
    pub(crate) resp3: bool,
}

/// What every node is asked.
pub(crate) const NODE_REQUEST: &[u8] = b"*3\r\n$4\r\nINFO\r\n$6\r\nserver\r\n$8\r\nkeyspace\r\n";

impl InfoPlan {
    /// Renders the reply from the nodes' `INFO server keyspace` replies (none when the
    /// sections asked for need no node).
    pub(crate) fn render(&self, parts: &[Bytes]) -> Bytes {
        let texts: Vec<&str> = parts.iter().filter_map(|p| bulk_str(p)).collect();
        let mut text = String::new();
        if self.sections.has(Sections::SERVER) {
            let version = texts
                .iter()
                .find_map(|t| field(t, "redis_version"))
                .unwrap_or("unknown");
            let uptime = STARTED.get_or_init(Instant::now).elapsed().as_secs();
            section(&mut text, "Server");
            line(&mut text, "redis_version", version);
            line(&mut text, "slotway_version", env!("CARGO_PKG_VERSION"));
            line(
                &mut text,
                "redis_mode",
                if self.cluster_enabled {
                    "cluster"
                } else {
                    "standalone"
                },
            );
            line(&mut text, "process_id", std::process::id());
            line(&mut text, "tcp_port", self.tcp_port);
            line(&mut text, "uptime_in_seconds", uptime);
            line(&mut text, "uptime_in_days", uptime / 86_400);
        }
        if self.sections.has(Sections::CLIENTS) {
            section(&mut text, "Clients");
            line(
                &mut text,
                "connected_clients",
                crate::metrics::session::open_connections(),
            );
            line(&mut text, "maxclients", self.maxclients);
        }
        if self.sections.has(Sections::CLUSTER) {
            section(&mut text, "Cluster");
            line(&mut text, "cluster_enabled", u8::from(self.cluster_enabled));
        }
        if self.sections.has(Sections::KEYSPACE) {
            section(&mut text, "Keyspace");
            let ks = Keyspace::sum(&texts);
            if ks.keys > 0 {
                let value = format!(
                    "keys={},expires={},avg_ttl={}",
                    ks.keys,
                    ks.expires,
                    ks.avg_ttl()
                );
                line(&mut text, "db0", value);
            }
        }
        let mut out = BytesMut::with_capacity(text.len() + 16);
        encode::text(&mut out, text.as_bytes(), self.resp3);
        out.freeze()
    }
}

fn section(text: &mut String, name: &str) {
    if !text.is_empty() {
        text.push_str("\r\n");
    }
    text.push_str("# ");
    text.push_str(name);
    text.push_str("\r\n");
}

fn line(text: &mut String, key: &str, value: impl std::fmt::Display) {
    use std::fmt::Write;
    let _ = write!(text, "{key}:{value}\r\n");
}

/// The payload of a bulk (or RESP3 verbatim `=`) string reply, as text.
fn bulk_str(frame: &[u8]) -> Option<&str> {
    let rest = frame
        .strip_prefix(b"$")
        .or_else(|| frame.strip_prefix(b"="))?;
    let cr = rest.iter().position(|&b| b == b'\r')?;
    let mut body = rest.get(cr + 2..)?.strip_suffix(b"\r\n")?;
    if frame[0] == b'=' {
        // Verbatim strings start with a `txt:` format tag.
        body = body.get(4..)?;
    }
    std::str::from_utf8(body).ok()
}

/// The value of `key:value` in an INFO text.
fn field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':').map(str::trim_end))
}

/// Keyspace totals over the shards.
#[derive(Debug, Default, PartialEq, Eq)]
struct Keyspace {
    keys: u64,
    expires: u64,
    /// Sum of each shard's avg_ttl weighted by its expiring keys.
    ttl_weighted: u128,
}

impl Keyspace {
    fn sum(texts: &[&str]) -> Self {
        let mut ks = Keyspace::default();
        for text in texts {
            let Some(db0) = field(text, "db0") else {
                continue;
            };
            let get = |name: &str| {
                db0.split(',')
                    .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0)
            };
            let expires = get("expires");
            ks.keys += get("keys");
            ks.expires += expires;
            ks.ttl_weighted += u128::from(get("avg_ttl")) * u128::from(expires);
        }
        ks
    }

    /// The average TTL over every expiring key, as each shard estimates its own.
    fn avg_ttl(&self) -> u128 {
        if self.expires == 0 {
            0
        } else {
            self.ttl_weighted / u128::from(self.expires)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::ops::Range;

    use super::*;

    fn args(parts: &[&str]) -> (Vec<u8>, Vec<Range<usize>>) {
        let mut raw = Vec::new();
        let mut ranges = Vec::new();
        for p in parts {
            ranges.push(raw.len()..raw.len() + p.len());
            raw.extend_from_slice(p.as_bytes());
        }
        (raw, ranges)
    }

    fn sections(parts: &[&str]) -> Sections {
        let (raw, ranges) = args(parts);
        let raw = Bytes::from(raw);
        Sections::parse(&Request::unresolved(&raw, &ranges))
    }

    fn node(text: &str) -> Bytes {
        let mut out = BytesMut::new();
        encode::bulk(&mut out, text.as_bytes());
        out.freeze()
    }

    #[test]
    fn section_selection() {
        assert_eq!(sections(&["INFO"]), Sections(Sections::ALL));
        assert_eq!(sections(&["info", "EVERYTHING"]), Sections(Sections::ALL));
        assert_eq!(
            sections(&["info", "keyspace"]),
            Sections(Sections::KEYSPACE)
        );
        assert_eq!(
            sections(&["info", "Server", "clients"]),
            Sections(Sections::SERVER | Sections::CLIENTS)
        );
        assert_eq!(sections(&["info", "memory"]), Sections(0));
        assert!(!sections(&["info", "clients", "cluster"]).needs_nodes());
        assert!(sections(&["info", "keyspace"]).needs_nodes());
    }

    #[test]
    fn keyspace_is_summed_and_ttl_weighted() {
        let plan = InfoPlan {
            sections: Sections(Sections::KEYSPACE),
            tcp_port: 7000,
            maxclients: 10,
            cluster_enabled: true,
            resp3: false,
        };
        let parts = [
            node("# Server\r\nredis_version:7.0.15\r\n\r\n# Keyspace\r\ndb0:keys=10,expires=2,avg_ttl=1000\r\n"),
            node("# Server\r\nredis_version:7.0.15\r\n\r\n# Keyspace\r\n"),
            node("# Keyspace\r\ndb0:keys=5,expires=2,avg_ttl=3000\r\n"),
        ];
        let out = plan.render(&parts);
        assert_eq!(
            out,
            node("# Keyspace\r\ndb0:keys=15,expires=4,avg_ttl=2000\r\n")
        );
        // No keys anywhere: the section is empty, as on an empty Redis.
        assert_eq!(
            plan.render(&[node("# Keyspace\r\n")]),
            node("# Keyspace\r\n")
        );
    }

    #[test]
    fn proxy_sections() {
        mark_start();
        let _guard = crate::metrics::session::Connected::new();
        let plan = InfoPlan {
            sections: Sections(Sections::ALL),
            tcp_port: 7000,
            maxclients: 10,
            cluster_enabled: false,
            resp3: false,
        };
        let out = plan.render(&[node("# Server\r\nredis_version:7.0.15\r\n")]);
        let text = bulk_str(&out).unwrap();
        assert!(
            text.starts_with("# Server\r\nredis_version:7.0.15\r\n"),
            "{text}"
        );
        assert_eq!(
            field(text, "slotway_version"),
            Some(env!("CARGO_PKG_VERSION"))
        );
        assert_eq!(
            field(text, "process_id"),
            Some(&*std::process::id().to_string())
        );
        assert_eq!(field(text, "tcp_port"), Some("7000"));
        assert_eq!(field(text, "redis_mode"), Some("standalone"));
        assert!(field(text, "connected_clients").is_some());
        assert_eq!(field(text, "maxclients"), Some("10"));
        assert!(text.contains("\r\n\r\n# Clients\r\n"));
        assert!(text.contains("\r\n\r\n# Cluster\r\ncluster_enabled:0\r\n"));
        assert!(text.ends_with("# Keyspace\r\n"));
    }
}
