//! [`dial`]: the one way to reach a node — resolve, TCP connect, optional TLS, and one
//! pipelined handshake whose every reply is checked.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{AddrError, Credentials, NodeAddr};
use crate::protocol::{encode, ReplyKind, ResponseScanner};
use crate::tls::{UpstreamStream, UpstreamTls};

/// Nesting accepted in a handshake reply (HELLO's map is two deep).
const MAX_DEPTH: usize = 16;
/// Handshake replies larger than this mean the peer is not a Redis node answering them.
const MAX_HANDSHAKE_BYTES: usize = 64 << 10;
/// `CLIENT SETINFO lib-name`, so `CLIENT LIST` shows which connections are the proxy's.
const LIB_NAME: &[u8] = b"slotway";

/// How to connect to a node and what to set up on the connection.
#[derive(Debug, Clone)]
pub struct DialOptions {
    /// Budget for resolving a name, the TCP connect and the TLS handshake, each.
    pub connect_timeout: Duration,
    /// Budget for all the handshake's replies together.
    pub handshake_timeout: Duration,
    /// `AUTH` sent first; `None` sends none.
    pub auth: Option<Credentials>,
    /// TLS to the node; `None` = plaintext.
    pub tls: Option<Arc<UpstreamTls>>,
    /// `HELLO <proto>` when set (2 or 3).
    pub hello: Option<u8>,
    /// `READONLY`, for replica connections serving reads.
    pub readonly: bool,
    /// `CLIENT SETNAME <name>` when set.
    pub client_name: Option<String>,
    /// `CLIENT SETINFO lib-name/lib-ver`; a node older than 7.2 refuses it, which is ignored.
    pub lib_info: bool,
    /// A final `PING`: a node being killed still completes TCP handshakes until its process
    /// has exited, so only one that answers counts as reached.
    pub ping: bool,
}

impl Default for DialOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(1),
            handshake_timeout: Duration::from_secs(2),
            auth: None,
            tls: None,
            hello: None,
            readonly: false,
            client_name: None,
            lib_info: false,
            ping: false,
        }
    }
}

/// Why a node could not be reached or refused the handshake.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DialError {
    /// The address is a name that did not resolve.
    #[error(transparent)]
    Resolve(#[from] AddrError),
    /// The TCP connect failed (refused, unreachable).
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// The node.
        addr: NodeAddr,
        /// The socket error.
        source: Arc<io::Error>,
    },
    /// The TCP connect did not finish within the connect timeout.
    #[error("connecting to {addr} timed out after {} ms", after.as_millis())]
    ConnectTimeout {
        /// The node.
        addr: NodeAddr,
        /// The budget that ran out.
        after: Duration,
    },
    /// The TLS handshake failed or timed out.
    #[error("TLS to {addr}: {source}")]
    Tls {
        /// The node.
        addr: NodeAddr,
        /// What rustls or the socket said.
        source: Arc<io::Error>,
    },
    /// The node refused `AUTH` (wrong password, unknown or disabled user).
    #[error("{addr} refused AUTH: {message}")]
    AuthRefused {
        /// The node.
        addr: NodeAddr,
        /// The node's error line (it never contains the password).
        message: String,
    },
    /// The node refused `HELLO` (no such protocol, or too old for RESP3).
    #[error("{addr} refused HELLO: {message}")]
    HelloRefused {
        /// The node.
        addr: NodeAddr,
        /// The node's error line.
        message: String,
    },
    /// Another handshake command was refused.
    #[error("{addr} refused {command}: {message}")]
    Refused {
        /// The node.
        addr: NodeAddr,
        /// The command.
        command: &'static str,
        /// The node's error line.
        message: String,
    },
    /// The handshake's replies did not all arrive within the handshake timeout.
    #[error("{addr} did not answer the handshake within {} ms", after.as_millis())]
    HandshakeTimeout {
        /// The node.
        addr: NodeAddr,
        /// The budget that ran out.
        after: Duration,
    },
    /// The connection failed or closed during the handshake.
    #[error("connection to {addr} lost during the handshake: {source}")]
    Lost {
        /// The node.
        addr: NodeAddr,
        /// The socket error.
        source: Arc<io::Error>,
    },
    /// The node's replies were not RESP, or too large.
    #[error("{addr} answered the handshake with something else than RESP: {reason}")]
    Protocol {
        /// The node.
        addr: NodeAddr,
        /// What was wrong.
        reason: String,
    },
}

impl DialError {
    /// True when the node (or the way to it) was not there, as opposed to one that answered
    /// and refused: worth trying again later or elsewhere.
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            Self::Resolve(_)
                | Self::Connect { .. }
                | Self::ConnectTimeout { .. }
                | Self::HandshakeTimeout { .. }
                | Self::Lost { .. }
        )
    }
}

/// A connection that passed the handshake.
#[derive(Debug)]
pub struct NodeStream {
    /// The connection, TLS or plain.
    pub stream: UpstreamStream,
    /// The socket address that answered (the name's resolution, for a name).
    pub peer: SocketAddr,
}

/// Connects to `addr` and runs the handshake `opts` asks for. A name is resolved and each of
/// its addresses tried in turn, so one that hangs does not hide the others.
pub async fn dial(addr: &NodeAddr, opts: &DialOptions) -> Result<NodeStream, DialError> {
    let (tcp, peer) = connect(addr, opts.connect_timeout).await?;
    let tls_failed = |e: io::Error| DialError::Tls {
        addr: addr.clone(),
        source: Arc::new(e),
    };
    let mut stream =
        crate::tls::upstream_to_host(tcp, addr.host(), opts.tls.as_deref(), opts.connect_timeout)
            .await
            .map_err(tls_failed)?;
    let mut buf = BytesMut::new();
    let steps = encode_handshake(opts, &mut buf);
    if !steps.is_empty() {
        tokio::time::timeout(
            opts.handshake_timeout,
            handshake(&mut stream, addr, &buf, &steps),
        )
        .await
        .map_err(|_| DialError::HandshakeTimeout {
            addr: addr.clone(),
            after: opts.handshake_timeout,
        })??;
    }
    Ok(NodeStream { stream, peer })
}

async fn connect(addr: &NodeAddr, budget: Duration) -> Result<(TcpStream, SocketAddr), DialError> {
    let mut last = None;
    for target in addr.resolve(budget).await? {
        match tokio::time::timeout(budget, TcpStream::connect(target)).await {
            Ok(Ok(tcp)) => {
                // Requests are written whole, in batches: never wait for an ACK to send more.
                if let Err(e) = tcp.set_nodelay(true) {
                    last = Some(DialError::Connect {
                        addr: addr.clone(),
                        source: Arc::new(e),
                    });
                    continue;
                }
                return Ok((tcp, target));
            }
            Ok(Err(e)) => {
                last = Some(DialError::Connect {
                    addr: addr.clone(),
                    source: Arc::new(e),
                })
            }
            Err(_) => {
                last = Some(DialError::ConnectTimeout {
                    addr: addr.clone(),
                    after: budget,
                })
            }
        }
    }
    // `resolve` never returns an empty list, so `last` is set.
    Err(last.unwrap_or_else(|| DialError::ConnectTimeout {
        addr: addr.clone(),
        after: budget,
    }))
}

/// One handshake command, for reading its reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Auth,
    Hello,
    ReadOnly,
    SetName,
    /// Refused by nodes older than 7.2 (and by ACLs that do not list it): ignored.
    SetInfo,
    Ping,
}

/// Appends the handshake `opts` asks for to `buf`, in the order the replies will come.
fn encode_handshake(opts: &DialOptions, buf: &mut BytesMut) -> Vec<Step> {
    let mut steps = Vec::with_capacity(7);
    if let Some(c) = &opts.auth {
        let pass = c.password.expose().as_bytes();
        match &c.username {
            Some(user) => encode::command(buf, &[b"AUTH", user.as_bytes(), pass]),
            None => encode::command(buf, &[b"AUTH", pass]),
        }
        steps.push(Step::Auth);
    }
    if let Some(proto) = opts.hello {
        encode::command(buf, &[b"HELLO", proto.to_string().as_bytes()]);
        steps.push(Step::Hello);
    }
    if opts.readonly {
        encode::command(buf, &[b"READONLY"]);
        steps.push(Step::ReadOnly);
    }
    if let Some(name) = &opts.client_name {
        encode::command(buf, &[b"CLIENT", b"SETNAME", name.as_bytes()]);
        steps.push(Step::SetName);
    }
    if opts.lib_info {
        let version = env!("CARGO_PKG_VERSION").as_bytes();
        encode::command(buf, &[b"CLIENT", b"SETINFO", b"LIB-NAME", LIB_NAME]);
        encode::command(buf, &[b"CLIENT", b"SETINFO", b"LIB-VER", version]);
        steps.extend([Step::SetInfo, Step::SetInfo]);
    }
    if opts.ping {
        encode::command(buf, &[b"PING"]);
        steps.push(Step::Ping);
    }
    steps
}

/// The error a refused `step` ends the dial with; `None` for a refusal that is tolerated.
fn refusal(step: Step, addr: &NodeAddr, message: String) -> Option<DialError> {
    let addr = addr.clone();
    Some(match step {
        Step::Auth => DialError::AuthRefused { addr, message },
        Step::Hello => DialError::HelloRefused { addr, message },
        Step::SetInfo => return None,
        Step::ReadOnly => DialError::Refused {
            addr,
            command: "READONLY",
            message,
        },
        Step::SetName => DialError::Refused {
            addr,
            command: "CLIENT SETNAME",
            message,
        },
        Step::Ping => DialError::Refused {
            addr,
            command: "PING",
            message,
        },
    })
}

/// Writes the pipelined handshake and checks one reply per step, in order.
async fn handshake(
    stream: &mut UpstreamStream,
    addr: &NodeAddr,
    cmds: &[u8],
    steps: &[Step],
) -> Result<(), DialError> {
    let lost = |e: io::Error| DialError::Lost {
        addr: addr.clone(),
        source: Arc::new(e),
    };
    let protocol = |reason: String| DialError::Protocol {
        addr: addr.clone(),
        reason,
    };
    stream.write_all(cmds).await.map_err(lost)?;
    stream.flush().await.map_err(lost)?;
    let mut buf = BytesMut::with_capacity(512);
    let mut scanner = ResponseScanner::new(MAX_DEPTH);
    let mut answered = 0;
    while answered < steps.len() {
        if stream.read_buf(&mut buf).await.map_err(lost)? == 0 {
            let eof = io::Error::new(io::ErrorKind::UnexpectedEof, "closed by the node");
            return Err(lost(eof));
        }
        while let Some(r) = scanner.scan(&buf).map_err(|e| protocol(e.to_string()))? {
            let frame = buf.split_to(r.len);
            if r.kind == ReplyKind::Push {
                continue;
            }
            let Some(&step) = steps.get(answered) else {
                return Err(protocol("more replies than commands".into()));
            };
            match r.kind {
                ReplyKind::Push | ReplyKind::Other => {}
                ReplyKind::Error => {
                    let message = String::from_utf8_lossy(frame.get(1..).unwrap_or_default())
                        .trim_end()
                        .to_string();
                    if let Some(e) = refusal(step, addr, message) {
                        return Err(e);
                    }
                }
            }
            answered += 1;
        }
        if buf.len() > MAX_HANDSHAKE_BYTES {
            return Err(protocol("oversized handshake reply".into()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::Secret;

    fn encoded(opts: &DialOptions) -> (String, Vec<Step>) {
        let mut buf = BytesMut::new();
        let steps = encode_handshake(opts, &mut buf);
        (String::from_utf8(buf.to_vec()).unwrap(), steps)
    }

    #[test]
    fn nothing_asked_sends_nothing() {
        assert_eq!(encoded(&DialOptions::default()), (String::new(), vec![]));
    }

    #[test]
    fn every_step_in_reply_order() {
        let opts = DialOptions {
            auth: Some(Credentials {
                username: Some("app".into()),
                password: Secret::new("pw"),
            }),
            hello: Some(3),
            readonly: true,
            client_name: Some("slotway".into()),
            lib_info: true,
            ping: true,
            ..DialOptions::default()
        };
        let (text, steps) = encoded(&opts);
        let version = env!("CARGO_PKG_VERSION");
        let want = format!(
            "*3\r\n$4\r\nAUTH\r\n$3\r\napp\r\n$2\r\npw\r\n\
             *2\r\n$5\r\nHELLO\r\n$1\r\n3\r\n\
             *1\r\n$8\r\nREADONLY\r\n\
             *3\r\n$6\r\nCLIENT\r\n$7\r\nSETNAME\r\n$7\r\nslotway\r\n\
             *4\r\n$6\r\nCLIENT\r\n$7\r\nSETINFO\r\n$8\r\nLIB-NAME\r\n$7\r\nslotway\r\n\
             *4\r\n$6\r\nCLIENT\r\n$7\r\nSETINFO\r\n$7\r\nLIB-VER\r\n${}\r\n{version}\r\n\
             *1\r\n$4\r\nPING\r\n",
            version.len()
        );
        assert_eq!(text, want);
        use Step::*;
        assert_eq!(
            steps,
            [Auth, Hello, ReadOnly, SetName, SetInfo, SetInfo, Ping]
        );
    }

    #[test]
    fn default_user_auth_sends_the_password_only() {
        let opts = DialOptions {
            auth: Credentials::from_parts("", &Secret::new("pw")),
            ..DialOptions::default()
        };
        assert_eq!(encoded(&opts).0, "*2\r\n$4\r\nAUTH\r\n$2\r\npw\r\n");
    }

    #[test]
    fn refusals_name_the_node_and_setinfo_is_tolerated() {
        let addr: NodeAddr = "10.0.0.1:6379".parse().unwrap();
        let msg = || "WRONGPASS invalid username-password pair".to_string();
        let e = refusal(Step::Auth, &addr, msg()).unwrap();
        assert!(matches!(e, DialError::AuthRefused { .. }));
        assert_eq!(
            e.to_string(),
            "10.0.0.1:6379 refused AUTH: WRONGPASS invalid username-password pair"
        );
        assert!(!e.is_unreachable());
        assert!(refusal(Step::SetInfo, &addr, msg()).is_none());
        let e = refusal(Step::Hello, &addr, "NOPROTO".into()).unwrap();
        assert!(matches!(e, DialError::HelloRefused { .. }));
    }

    /// A fake node that answers each handshake line with the next canned reply.
    async fn fake_node(replies: &'static [u8]) -> NodeAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            if let Ok((mut s, _)) = listener.accept().await {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(replies).await;
                let _ = s.read(&mut buf).await;
            }
        });
        NodeAddr::from_socket(addr)
    }

    #[tokio::test]
    async fn an_old_node_refusing_setinfo_is_still_dialled() {
        let addr = fake_node(b"+OK\r\n-ERR unknown subcommand 'SETINFO'\r\n-ERR unknown subcommand 'SETINFO'\r\n+PONG\r\n").await;
        let opts = DialOptions {
            client_name: Some("x".into()),
            lib_info: true,
            ping: true,
            ..DialOptions::default()
        };
        let dialled = dial(&addr, &opts).await.unwrap();
        assert_eq!(dialled.peer, addr.socket_addr().unwrap());
    }

    #[tokio::test]
    async fn a_refused_readonly_fails_the_dial() {
        let addr = fake_node(b"-ERR This instance has cluster support disabled\r\n").await;
        let opts = DialOptions {
            readonly: true,
            ..DialOptions::default()
        };
        let err = dial(&addr, &opts).await.unwrap_err();
        assert!(
            matches!(
                err,
                DialError::Refused {
                    command: "READONLY",
                    ..
                }
            ),
            "{err}"
        );
    }
}
