//! [`NodeAddr`]: the one `host:port` type and parser, for seeds, topology entries, redirect
//! targets and the command line.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a `host:port` text was refused, or a name could not be resolved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddrError {
    /// Nothing before the port.
    #[error("{0:?}: empty host")]
    EmptyHost(String),
    /// No `:port` at the end.
    #[error("{0:?}: missing :port")]
    MissingPort(String),
    /// The port is not a number from 1 to 65535.
    #[error("{0:?}: the port must be a number from 1 to 65535")]
    BadPort(String),
    /// Spaces, tabs or line breaks anywhere.
    #[error("{0:?}: contains whitespace")]
    Whitespace(String),
    /// An unclosed or stray bracket, or brackets around something that is not IPv6.
    #[error("{0:?}: brackets must enclose an IPv6 address, as in [::1]:6379")]
    Brackets(String),
    /// A host that is neither an IP address nor a DNS name.
    #[error("{0:?}: not an IP address or a host name")]
    BadHost(String),
    /// A name that did not resolve in time, or to nothing.
    #[error("cannot resolve {host}: {reason}")]
    Resolve {
        /// The name.
        host: String,
        /// What went wrong.
        reason: String,
    },
}

/// A node's address: an IP (v4 or v6) or a DNS name, and a port from 1 to 65535.
///
/// Parses `host:port`, `[v6]:port`, and the bracket-less `v6:port` Redis prints in `-MOVED`,
/// `-ASK` and `CLUSTER SLOTS` (split at the last colon). Displays IPv6 in brackets, so the
/// text reads back as the same address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NodeAddr {
    /// The host without brackets.
    host: String,
    /// The host parsed as an IP, when it is one.
    ip: Option<IpAddr>,
    port: u16,
}

impl NodeAddr {
    /// The address of a socket.
    pub fn from_socket(addr: SocketAddr) -> Self {
        Self {
            host: addr.ip().to_string(),
            ip: Some(addr.ip()),
            port: addr.port(),
        }
    }

    /// `host` (without brackets) and `port`, checked like the text form.
    pub fn new(host: &str, port: u16) -> Result<Self, AddrError> {
        let text = join(host, port);
        if port == 0 {
            return Err(AddrError::BadPort(text));
        }
        Self::host_part(host, &text).map(|(host, ip)| Self { host, ip, port })
    }

    /// The host as written, IPv6 without brackets.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The IP when the host is an IP literal.
    pub fn ip(&self) -> Option<IpAddr> {
        self.ip
    }

    /// True when the host is a DNS name (it must be resolved before connecting).
    pub fn is_name(&self) -> bool {
        self.ip.is_none()
    }

    /// The socket address when the host is an IP literal, without any lookup.
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        self.ip.map(|ip| SocketAddr::new(ip, self.port))
    }

    /// Every socket address the host stands for: the IP itself, or the name's lookup, which
    /// must finish within `budget`.
    pub async fn resolve(&self, budget: Duration) -> Result<Vec<SocketAddr>, AddrError> {
        if let Some(sock) = self.socket_addr() {
            return Ok(vec![sock]);
        }
        let failed = |reason: String| AddrError::Resolve {
            host: self.host.clone(),
            reason,
        };
        let found: Vec<SocketAddr> = tokio::time::timeout(
            budget,
            tokio::net::lookup_host((self.host.as_str(), self.port)),
        )
        .await
        .map_err(|_| failed(format!("no answer within {} ms", budget.as_millis())))?
        .map_err(|e| failed(e.to_string()))?
        .collect();
        if found.is_empty() {
            return Err(failed("no addresses".into()));
        }
        Ok(found)
    }

    /// Checks a host (brackets already removed); `text` is the whole input, for errors.
    fn host_part(host: &str, text: &str) -> Result<(String, Option<IpAddr>), AddrError> {
        if host.is_empty() {
            return Err(AddrError::EmptyHost(text.into()));
        }
        if host.contains(char::is_whitespace) {
            return Err(AddrError::Whitespace(text.into()));
        }
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok((host.to_string(), Some(ip)));
        }
        if !is_dns_name(host) {
            return Err(AddrError::BadHost(text.into()));
        }
        Ok((host.to_string(), None))
    }
}

/// Letters, digits, `-`, `_` and dots between non-empty labels (a trailing dot is allowed).
fn is_dns_name(host: &str) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host);
    host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// A port from 1 to 65535, digits only (no sign, no spaces).
pub fn parse_port(port: &str, text: &str) -> Result<u16, AddrError> {
    if port.is_empty() {
        return Err(AddrError::MissingPort(text.into()));
    }
    if !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(AddrError::BadPort(text.into()));
    }
    port.parse::<u16>()
        .ok()
        .filter(|&p| p != 0)
        .ok_or_else(|| AddrError::BadPort(text.into()))
}

/// `host:port`, with brackets when the host is IPv6.
fn join(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

impl FromStr for NodeAddr {
    type Err = AddrError;

    fn from_str(text: &str) -> Result<Self, AddrError> {
        if text.contains(char::is_whitespace) {
            return Err(AddrError::Whitespace(text.into()));
        }
        let (host, port) = match text.strip_prefix('[') {
            Some(rest) => {
                let (inside, after) = rest
                    .split_once(']')
                    .ok_or_else(|| AddrError::Brackets(text.into()))?;
                if inside.parse::<Ipv6Addr>().is_err() {
                    return Err(AddrError::Brackets(text.into()));
                }
                let port = after
                    .strip_prefix(':')
                    .ok_or_else(|| AddrError::MissingPort(text.into()))?;
                (inside, port)
            }
            None if text.contains(['[', ']']) => return Err(AddrError::Brackets(text.into())),
            None => text
                .rsplit_once(':')
                .ok_or_else(|| AddrError::MissingPort(text.into()))?,
        };
        let port = parse_port(port, text)?;
        if host.contains(':') && host.parse::<Ipv6Addr>().is_err() {
            // Only an IPv6 address may keep colons in the host part.
            return Err(AddrError::BadHost(text.into()));
        }
        let (host, ip) = Self::host_part(host, text)?;
        Ok(Self { host, ip, port })
    }
}

impl fmt::Display for NodeAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.ip {
            Some(IpAddr::V6(ip)) => write!(f, "[{ip}]:{}", self.port),
            _ => write!(f, "{}:{}", self.host, self.port),
        }
    }
}

impl From<SocketAddr> for NodeAddr {
    fn from(addr: SocketAddr) -> Self {
        Self::from_socket(addr)
    }
}

impl Serialize for NodeAddr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for NodeAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str) -> NodeAddr {
        text.parse()
            .unwrap_or_else(|e| panic!("{text} refused: {e}"))
    }

    #[test]
    fn accepted_forms() {
        let a = ok("127.0.0.1:7000");
        assert_eq!(
            (a.host(), a.port(), a.is_name()),
            ("127.0.0.1", 7000, false)
        );
        assert_eq!(
            a.socket_addr(),
            Some(SocketAddr::from(([127, 0, 0, 1], 7000)))
        );
        let a = ok("redis-0.redis.svc.cluster.local:6379");
        assert_eq!(
            (a.host(), a.port(), a.is_name()),
            ("redis-0.redis.svc.cluster.local", 6379, true)
        );
        assert_eq!(a.ip(), None);
        assert_eq!(ok("localhost:1").host(), "localhost");
        assert_eq!(ok("under_score.example.:65535").port(), 65535);
        // Bracketed and Redis's bracket-less IPv6 are the same address.
        let v6 = ok("[::1]:6379");
        assert_eq!(v6, ok("::1:6379"));
        assert_eq!(v6.ip(), Some("::1".parse().unwrap()));
        assert_eq!(v6.host(), "::1");
        assert_eq!(ok("fe80::1:2:7000").port(), 7000);
        assert_eq!(ok("[2001:db8::5]:1").host(), "2001:db8::5");
    }

    #[test]
    fn display_reads_back() {
        for (text, shown) in [
            ("127.0.0.1:7000", "127.0.0.1:7000"),
            ("::1:7000", "[::1]:7000"),
            ("[::1]:7000", "[::1]:7000"),
            ("pod-0.svc:6379", "pod-0.svc:6379"),
        ] {
            let a = ok(text);
            assert_eq!(a.to_string(), shown);
            assert_eq!(ok(shown), a);
        }
        let sock = SocketAddr::from((Ipv6Addr::LOCALHOST, 9));
        assert_eq!(NodeAddr::from(sock).to_string(), "[::1]:9");
        assert_eq!(NodeAddr::new("::1", 9).unwrap(), ok("[::1]:9"));
    }

    #[test]
    fn refused_forms() {
        use AddrError as E;
        type Variant = fn(String) -> AddrError;
        let cases: &[(&str, Variant)] = &[
            (":6379", E::EmptyHost),
            ("[]:6379", E::Brackets),
            ("host", E::MissingPort),
            ("host:", E::MissingPort),
            ("[::1]", E::MissingPort),
            ("[::1]6379", E::MissingPort),
            ("host:0", E::BadPort),
            ("host:x", E::BadPort),
            ("host:+80", E::BadPort),
            ("host:65536", E::BadPort),
            ("host:70000", E::BadPort),
            ("host:-1", E::BadPort),
            (" host:1", E::Whitespace),
            ("host:1 ", E::Whitespace),
            ("ho st:1", E::Whitespace),
            ("host:1\n", E::Whitespace),
            ("[::1:6379", E::Brackets),
            ("::1]:6379", E::Brackets),
            ("[host]:6379", E::Brackets),
            ("[127.0.0.1]:6379", E::Brackets),
            ("a[b:1", E::Brackets),
            ("a:b:1", E::BadHost),
            ("ho/st:1", E::BadHost),
            ("a..b:1", E::BadHost),
            ("user@host:1", E::BadHost),
        ];
        for (text, want) in cases {
            assert_eq!(
                text.parse::<NodeAddr>(),
                Err(want(text.to_string())),
                "{text}"
            );
        }
        assert!(matches!(NodeAddr::new("", 1), Err(E::EmptyHost(_))));
        assert!(matches!(NodeAddr::new("h", 0), Err(E::BadPort(_))));
    }

    #[test]
    fn serde_uses_the_text_form() {
        #[derive(Deserialize, Serialize)]
        struct Holder {
            seeds: Vec<NodeAddr>,
        }
        let h: Holder = toml::from_str(r#"seeds = ["a:1", "::1:2"]"#).unwrap();
        assert_eq!(h.seeds, vec![ok("a:1"), ok("[::1]:2")]);
        assert_eq!(
            toml::to_string(&h).unwrap().trim(),
            r#"seeds = ["a:1", "[::1]:2"]"#
        );
        let err = toml::from_str::<Holder>(r#"seeds = ["a:0"]"#)
            .err()
            .map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("1 to 65535")));
    }

    #[tokio::test]
    async fn resolve_ips_without_lookup_and_names_with_one() {
        let ip = ok("10.1.2.3:5");
        assert_eq!(
            ip.resolve(Duration::from_millis(1)).await.unwrap(),
            vec![ip.socket_addr().unwrap()]
        );
        let found = ok("localhost:6379")
            .resolve(Duration::from_secs(5))
            .await
            .unwrap();
        assert!(found
            .iter()
            .all(|a| a.ip().is_loopback() && a.port() == 6379));
        let err = ok("no-such-host.invalid:1")
            .resolve(Duration::from_secs(5))
            .await;
        assert!(matches!(err, Err(AddrError::Resolve { .. })));
    }
}
