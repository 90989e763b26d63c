//! TLS for the integration tests: certificates made at test time with rcgen (nothing
//! committed), a blocking rustls client, and [`TlsCluster`], a small Redis Cluster whose nodes
//! speak only TLS (`port 0`, `tls-port`, `tls-cluster yes`), killed on drop.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, MutexGuard};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use slotway::protocol::ResponseScanner;

use super::cluster::{serial_guard, wait_until};
use super::ports::free_ports;

/// A certificate authority that issues test certificates.
pub struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

/// A certificate and its key, as PEM and DER.
pub struct Issued {
    /// PEM certificate.
    pub cert_pem: String,
    /// PEM private key.
    pub key_pem: String,
    /// DER certificate, to compare with what a peer presents.
    pub der: CertificateDer<'static>,
}

impl Ca {
    /// A new self-signed CA.
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("CA key");
        let cert = params.self_signed(&key).expect("CA cert");
        Self { cert, key }
    }

    /// The CA certificate as PEM.
    pub fn pem(&self) -> String {
        self.cert.pem()
    }

    /// A certificate for `names` (DNS names or IP addresses), usable by servers and clients.
    pub fn issue(&self, common_name: &str, names: &[&str]) -> Issued {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(names).expect("leaf params");
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate().expect("leaf key");
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .expect("leaf cert");
        Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
        }
    }
}

/// Writes `contents` to `dir/name` atomically (write then rename, as certificate tooling does).
pub fn write(dir: &Path, name: &str, contents: &str) -> PathBuf {
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, contents).expect("write PEM");
    std::fs::rename(&tmp, &path).expect("rename PEM");
    path
}

/// Paths of a certificate and key written by [`write_pair`].
pub struct Files {
    /// Certificate file.
    pub cert: PathBuf,
    /// Key file.
    pub key: PathBuf,
}

/// Writes `issued` as `<stem>.crt` and `<stem>.key` in `dir`.
pub fn write_pair(dir: &Path, stem: &str, issued: &Issued) -> Files {
    Files {
        cert: write(dir, &format!("{stem}.crt"), &issued.cert_pem),
        key: write(dir, &format!("{stem}.key"), &issued.key_pem),
    }
}

/// A string of a path, for config fields.
pub fn path_str(p: &Path) -> String {
    p.display().to_string()
}

/// A blocking TLS client connection speaking RESP.
pub struct TlsClient {
    stream: StreamOwned<ClientConnection, TcpStream>,
    buf: Vec<u8>,
    scanner: ResponseScanner,
}

/// Client settings trusting the CAs in `ca_pems`, presenting `identity` when given.
pub fn client_config(ca_pems: &[&str], identity: Option<&Issued>) -> Arc<ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = RootCertStore::empty();
    for pem in ca_pems {
        roots
            .add(CertificateDer::from_pem_slice(pem.as_bytes()).expect("CA PEM"))
            .expect("add CA");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots);
    let config = match identity {
        None => builder.with_no_client_auth(),
        Some(id) => builder
            .with_client_auth_cert(
                vec![id.der.clone()],
                PrivateKeyDer::from_pem_slice(id.key_pem.as_bytes()).expect("key PEM"),
            )
            .expect("client identity"),
    };
    Arc::new(config)
}

impl TlsClient {
    /// Connects to `addr` and completes the handshake, checking the server as `127.0.0.1`.
    pub fn connect(addr: SocketAddr, config: Arc<ClientConfig>) -> std::io::Result<Self> {
        let tcp = TcpStream::connect(addr)?;
        tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
        let name = ServerName::IpAddress(addr.ip().into());
        let conn = ClientConnection::new(config, name).map_err(std::io::Error::other)?;
        let mut stream = StreamOwned::new(conn, tcp);
        while stream.conn.is_handshaking() {
            stream.conn.complete_io(&mut stream.sock)?;
        }
        Ok(Self {
            stream,
            buf: Vec::new(),
            scanner: ResponseScanner::new(64),
        })
    }

    /// The certificate the server presented.
    pub fn server_cert(&self) -> CertificateDer<'static> {
        self.stream
            .conn
            .peer_certificates()
            .expect("server certificate")[0]
            .clone()
    }

    /// Sends raw bytes.
    pub fn send_bytes(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)?;
        self.stream.flush()
    }

    /// Reads one reply frame.
    pub fn frame(&mut self) -> std::io::Result<Vec<u8>> {
        loop {
            if let Some(r) = self.scanner.scan(&self.buf).expect("valid RESP") {
                return Ok(self.buf.drain(..r.len).collect());
            }
            let mut chunk = [0u8; 65536];
            match self.stream.read(&mut chunk)? {
                0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
                n => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Sends one command and returns its reply as text.
    pub fn call(&mut self, args: &[&str]) -> std::io::Result<String> {
        self.send_bytes(&super::resp::encode(args))?;
        Ok(String::from_utf8_lossy(&self.frame()?).into_owned())
    }
}

/// The files a TLS node (or `redis-cli --tls`) is started with.
#[derive(Clone)]
pub struct NodeTls {
    /// CA bundle clients' and peers' certificates are checked against.
    pub ca: PathBuf,
    /// The node's certificate (also its client certificate on the cluster bus).
    pub cert: PathBuf,
    /// Its key.
    pub key: PathBuf,
}

/// Runs `redis-cli --tls` against `port` with `args`.
pub fn redis_cli(tls: &NodeTls, port: u16, args: &[&str]) -> Output {
    Command::new("redis-cli")
        .args(["--tls", "--cacert"])
        .arg(&tls.ca)
        .arg("--cert")
        .arg(&tls.cert)
        .arg("--key")
        .arg(&tls.key)
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run redis-cli")
}

/// A Redis Cluster whose nodes speak only TLS, on the cluster bus and for replication too.
pub struct TlsCluster {
    children: Vec<Child>,
    /// Each node's TLS port.
    pub ports: Vec<u16>,
    /// The nodes' certificate files.
    pub tls: NodeTls,
    _dir: tempfile::TempDir,
    _serial: MutexGuard<'static, ()>,
}

impl TlsCluster {
    /// Starts `shards` TLS-only primaries using `tls` and forms a cluster of them.
    pub fn start(shards: usize, tls: NodeTls) -> Self {
        Self::start_with_replicas(shards, 0, tls)
    }

    /// Starts `shards` x (1 primary + `replicas` replicas) TLS-only nodes using `tls` and
    /// forms a cluster of them (cluster-node-timeout 2000 ms).
    pub fn start_with_replicas(shards: usize, replicas: usize, tls: NodeTls) -> Self {
        let serial = serial_guard();
        let dir = tempfile::Builder::new()
            .prefix("slotway-tls-test-")
            .tempdir()
            .expect("tempdir");
        let ports = free_ports(shards * (1 + replicas));
        let mut cluster = TlsCluster {
            children: Vec::new(),
            ports: ports.clone(),
            tls,
            _dir: dir,
            _serial: serial,
        };
        for &port in &ports {
            let node_dir = cluster._dir.path().join(format!("node-{port}"));
            std::fs::create_dir_all(&node_dir).expect("node dir");
            let child = cluster.spawn_node(port, &node_dir);
            cluster.children.push(child);
        }
        for &port in &ports {
            wait_until(Duration::from_secs(30), "a TLS node to answer", || {
                cluster.cli(port, &["PING"]).contains("PONG")
            });
        }
        let mut create: Vec<String> = vec!["--cluster".into(), "create".into()];
        create.extend(ports.iter().map(|p| format!("127.0.0.1:{p}")));
        create.extend(["--cluster-replicas".into(), replicas.to_string()]);
        create.push("--cluster-yes".into());
        let create: Vec<&str> = create.iter().map(String::as_str).collect();
        let out = redis_cli(&cluster.tls, ports[0], &create);
        assert!(out.status.success(), "cluster create: {out:?}");
        for &port in &ports {
            wait_until(Duration::from_secs(60), "the TLS cluster to be ok", || {
                let info = cluster.cli(port, &["CLUSTER", "INFO"]);
                info.contains("cluster_state:ok") && info.contains("cluster_slots_assigned:16384")
            });
        }
        // A replica that has not finished its first sync will not stand for election: a
        // primary killed before then would never be replaced.
        wait_until(
            Duration::from_secs(60),
            "every TLS replica to be in sync",
            || {
                let synced = ports
                    .iter()
                    .filter(|&&p| {
                        cluster
                            .cli(p, &["INFO", "replication"])
                            .contains("master_link_status:up")
                    })
                    .count();
                synced == shards * replicas
            },
        );
        cluster
    }

    /// `127.0.0.1:<port>` of every node.
    pub fn seeds(&self) -> Vec<String> {
        self.ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect()
    }

    /// The TLS port of the primary serving `slot`, as the node at `ask` sees it.
    pub fn primary_for_slot(&self, ask: u16, slot: u16) -> Option<u16> {
        let nodes = self.cli(ask, &["CLUSTER", "NODES"]);
        nodes.lines().find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let primary = fields.get(2)?.split(',').any(|f| f == "master")
                && !fields.get(2)?.contains("fail");
            let serves = fields.iter().skip(8).any(|r| {
                let mut ends = r.splitn(2, '-').map(|n| n.parse::<u16>().ok());
                match (ends.next().flatten(), ends.next()) {
                    (Some(a), None) => a == slot,
                    (Some(a), Some(Some(b))) => (a..=b).contains(&slot),
                    _ => false,
                }
            });
            let port = fields.get(1)?.split('@').next()?.rsplit(':').next()?;
            (primary && serves).then(|| port.parse().ok()).flatten()
        })
    }

    /// SIGKILLs the node at `port` (its process is reaped).
    pub fn kill(&mut self, port: u16) {
        let at = self
            .ports
            .iter()
            .position(|&p| p == port)
            .expect("a node of this cluster");
        let _ = self.children[at].kill();
        let _ = self.children[at].wait();
    }

    /// `redis-cli --tls` output (stdout and stderr) for one command on the node at `port`.
    pub fn cli(&self, port: u16, args: &[&str]) -> String {
        let out = redis_cli(&self.tls, port, args);
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    fn spawn_node(&self, port: u16, dir: &Path) -> Child {
        let t = &self.tls;
        let mut cmd = super::cluster::cluster_node_command(dir);
        cmd.args(["--port", "0", "--tls-port", &port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .arg("--tls-cert-file")
            .arg(&t.cert)
            .arg("--tls-key-file")
            .arg(&t.key)
            .arg("--tls-ca-cert-file")
            .arg(&t.ca)
            .args(["--tls-cluster", "yes", "--tls-replication", "yes"]);
        cmd.spawn().expect("start a TLS redis-server")
    }
}

impl Drop for TlsCluster {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
