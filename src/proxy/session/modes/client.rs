//! The client's own connection to the proxy: `HELLO` (protocol switch, AUTH and SETNAME),
//! `CLIENT ID / GETNAME / SETNAME / INFO / LIST / NO-EVICT / …`, and `RESET`.
//!
//! These describe the connection between the client and slotway, not any backend connection,
//! so they are answered here. Commands a proxy cannot honour for its clients (client-side
//! caching with `CLIENT TRACKING`, `CLIENT KILL` of other clients, `CLIENT PAUSE` …) get an
//! error that says so.

use std::ops::Range;
use tokio::time::Instant;

use crate::tls::ClientStream;
use bytes::BytesMut;

use crate::protocol::encode;
use crate::proxy::session::Session;

/// The Redis version whose behaviour slotway mirrors (its command table is 7.0's).
const REDIS_VERSION: &str = "7.0.15";

/// What the client set on its connection.
#[derive(Debug)]
pub(in crate::proxy::session) struct ClientState {
    id: u64,
    proto: u8,
    name: Option<Vec<u8>>,
    no_evict: bool,
    created: Instant,
    peer: String,
    local: String,
}

impl ClientState {
    /// A fresh connection's state (RESP2, no name); `created` is when it was accepted.
    pub(in crate::proxy::session) fn new(
        session_id: usize,
        stream: &ClientStream,
        created: Instant,
    ) -> Self {
        let addr =
            |a: std::io::Result<std::net::SocketAddr>| a.map(|a| a.to_string()).unwrap_or_default();
        Self {
            id: session_id as u64 + 1,
            proto: 2,
            name: None,
            no_evict: false,
            created,
            peer: addr(stream.peer_addr()),
            local: addr(stream.local_addr()),
        }
    }

    /// True when the client chose RESP3.
    pub(in crate::proxy::session) fn resp3(&self) -> bool {
        self.proto == 3
    }

    /// The protocol in force (2 or 3).
    pub(in crate::proxy::session) fn proto(&self) -> u8 {
        self.proto
    }

    /// The `CLIENT ID`.
    pub(in crate::proxy::session) fn id(&self) -> u64 {
        self.id
    }
}

/// Redis's rule for client names: printable ASCII without spaces.
fn valid_name(name: &[u8]) -> bool {
    name.iter().all(|&b| (b'!'..=b'~').contains(&b))
}

const BAD_NAME: &str = "ERR Client names cannot contain spaces, newlines or special characters.";

impl Session {
    /// `HELLO [protover [AUTH username password] [SETNAME clientname]]`.
    pub(in crate::proxy::session) fn hello(&mut self, raw: &[u8], args: &[Range<usize>]) {
        let arg = |i: usize| &raw[args[i].clone()];
        let mut proto = None;
        let mut next = 1;
        if args.len() > 1 {
            let ver = std::str::from_utf8(arg(1))
                .ok()
                .and_then(|s| s.parse::<i64>().ok());
            match ver {
                None => {
                    return self
                        .push_error("ERR Protocol version is not an integer or out of range")
                }
                Some(v @ 2..=3) => proto = Some(v as u8),
                Some(_) => return self.push_error("NOPROTO unsupported protocol version"),
            }
            next = 2;
        }
        let mut auth = None;
        let mut name = None;
        let mut j = next;
        while j < args.len() {
            let more = args.len() - 1 - j;
            let opt = arg(j);
            if opt.eq_ignore_ascii_case(b"auth") && more >= 2 {
                auth = Some((arg(j + 1).to_vec(), arg(j + 2).to_vec()));
                j += 3;
            } else if opt.eq_ignore_ascii_case(b"setname") && more >= 1 {
                name = Some(arg(j + 1).to_vec());
                j += 2;
            } else {
                let opt = String::from_utf8_lossy(opt).into_owned();
                return self.push_error(&format!("ERR Syntax error in HELLO option '{opt}'"));
            }
        }
        if let Some((user, pass)) = auth {
            if let Err(msg) = self.hello_auth(&user, &pass) {
                return self.push_error(&msg);
            }
        }
        if let Some(n) = name {
            if !valid_name(&n) {
                return self.push_error(BAD_NAME);
            }
            self.client.name = (!n.is_empty()).then_some(n);
        }
        if let Some(p) = proto {
            self.client.proto = p;
        }
        let resp3 = self.client.resp3();
        let mut out = BytesMut::new();
        encode::map_header(&mut out, 7, resp3);
        encode::bulk(&mut out, b"server");
        encode::bulk(&mut out, b"redis");
        encode::bulk(&mut out, b"version");
        encode::bulk(&mut out, REDIS_VERSION.as_bytes());
        encode::bulk(&mut out, b"proto");
        encode::integer(&mut out, i64::from(self.client.proto));
        encode::bulk(&mut out, b"id");
        encode::integer(&mut out, self.client.id as i64);
        encode::bulk(&mut out, b"mode");
        encode::bulk(&mut out, self.server_mode().as_bytes());
        encode::bulk(&mut out, b"role");
        encode::bulk(&mut out, b"master");
        encode::bulk(&mut out, b"modules");
        encode::array_header(&mut out, 0);
        self.push_reply(out.freeze());
    }

    /// The mode the proxy presents, the same in `HELLO` and in `INFO`'s `redis_mode`: with
    /// cluster emulation it is a one-node cluster, else a standalone server.
    fn server_mode(&self) -> &'static str {
        if self.shared.config.commands.cluster_emulation {
            "cluster"
        } else {
            "standalone"
        }
    }

    /// `ACL WHOAMI`: the client's own proxy user. Never forwarded, as a node would name the
    /// upstream user slotway itself logs in as.
    pub(in crate::proxy::session) fn whoami(&mut self) {
        let mut out = BytesMut::new();
        encode::bulk(
            &mut out,
            self.shared.security.user_name(&self.sec).as_bytes(),
        );
        self.push_reply(out.freeze());
    }

    /// The credentials of `HELLO … AUTH`: already checked by the security layer
    /// ([`crate::security::Security::check`]) before the session saw this HELLO.
    fn hello_auth(&mut self, _user: &[u8], _pass: &[u8]) -> Result<(), String> {
        // The security layer checked the credentials before the session saw this HELLO.
        Ok(())
    }

    /// `CLIENT <subcommand> …` about the client's own connection.
    pub(in crate::proxy::session) fn client_command(&mut self, raw: &[u8], args: &[Range<usize>]) {
        let arg = |i: usize| &raw[args[i].clone()];
        let sub = arg(1).to_ascii_lowercase();
        let resp3 = self.client.resp3();
        let mut out = BytesMut::new();
        match &sub[..] {
            b"id" => encode::integer(&mut out, self.client.id as i64),
            b"getname" => match &self.client.name {
                Some(n) => encode::bulk(&mut out, n),
                None => encode::null(&mut out, resp3),
            },
            b"setname" => {
                let n = arg(2);
                if !valid_name(n) {
                    return self.push_error(BAD_NAME);
                }
                self.client.name = (!n.is_empty()).then(|| n.to_vec());
                encode::simple(&mut out, "OK");
            }
            b"info" => encode::text(&mut out, self.client_line("client|info").as_bytes(), resp3),
            b"list" => match self.list_matches(raw, args) {
                Ok(true) => encode::text(&mut out, self.client_line("client|list").as_bytes(), resp3),
                Ok(false) => encode::text(&mut out, b"", resp3),
                Err(msg) => return self.push_error(&msg),
            },
            b"no-evict" => {
                let v = arg(2);
                if v.eq_ignore_ascii_case(b"on") {
                    self.client.no_evict = true;
                } else if v.eq_ignore_ascii_case(b"off") {
                    self.client.no_evict = false;
                } else {
                    return self.push_error("ERR syntax error");
                }
                encode::simple(&mut out, "OK");
            }
            b"reply" if arg(2).eq_ignore_ascii_case(b"on") => encode::simple(&mut out, "OK"),
            b"getredir" => encode::integer(&mut out, -1),
            b"trackinginfo" => {
                encode::map_header(&mut out, 3, resp3);
                encode::bulk(&mut out, b"flags");
                out.extend_from_slice(if resp3 { b"~1\r\n" } else { b"*1\r\n" });
                encode::bulk(&mut out, b"off");
                encode::bulk(&mut out, b"redirect");
                encode::integer(&mut out, -1);
                encode::bulk(&mut out, b"prefixes");
                encode::array_header(&mut out, 0);
            }
            b"tracking" if arg(2).eq_ignore_ascii_case(b"off") => encode::simple(&mut out, "OK"),
            b"caching" => {
                return self.push_error(
                    "ERR CLIENT CACHING can be called only when the client is in tracking mode with OPTIN or OPTOUT mode enabled",
                )
            }
            b"tracking" | b"reply" | b"kill" | b"pause" | b"unpause" | b"unblock" => {
                let what = String::from_utf8_lossy(&sub).to_ascii_uppercase();
                return self.push_error(&format!(
                    "ERR slotway: CLIENT {what} cannot be honoured through the proxy (it concerns connections to the nodes, which slotway shares between clients)"
                ));
            }
            b"help" => {
                let lines = [
                    "CLIENT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                    "ID -- Return the ID of the current connection.",
                    "GETNAME -- Return the name of the current connection.",
                    "SETNAME <name> -- Assign the name <name> to the current connection.",
                    "INFO -- Return information about the current client connection.",
                    "LIST [TYPE <type>] [ID <id> ...] -- Return this connection's information.",
                    "NO-EVICT (ON|OFF) -- Accepted; the proxy does not evict clients.",
                    "Served by slotway: TRACKING, KILL, PAUSE, UNPAUSE, UNBLOCK are not available.",
                ];
                encode::array_header(&mut out, lines.len());
                for l in lines {
                    encode::simple(&mut out, l);
                }
            }
            _ => {
                let shown = String::from_utf8_lossy(arg(1)).into_owned();
                return self.push_error(&format!(
                    "ERR unknown subcommand '{shown}'. Try CLIENT HELP."
                ));
            }
        }
        self.push_reply(out.freeze());
    }

    /// Whether this connection passes `CLIENT LIST`'s TYPE / ID filters.
    fn list_matches(&self, raw: &[u8], args: &[Range<usize>]) -> Result<bool, String> {
        let arg = |i: usize| &raw[args[i].clone()];
        let mut keep = true;
        let mut i = 2;
        while i < args.len() {
            let opt = arg(i);
            if opt.eq_ignore_ascii_case(b"type") && i + 1 < args.len() {
                let t = arg(i + 1).to_ascii_lowercase();
                let is = match &t[..] {
                    b"normal" => !self.modes.subscribed(),
                    b"pubsub" => self.modes.subscribed(),
                    b"master" | b"replica" | b"slave" => false,
                    _ => {
                        return Err(format!(
                            "ERR Unknown client type '{}'",
                            String::from_utf8_lossy(arg(i + 1))
                        ))
                    }
                };
                keep &= is;
                i += 2;
            } else if opt.eq_ignore_ascii_case(b"id") && i + 1 < args.len() {
                let mut found = false;
                i += 1;
                while i < args.len() {
                    let id = std::str::from_utf8(arg(i))
                        .ok()
                        .and_then(|s| s.parse::<u64>().ok());
                    match id {
                        Some(id) => found |= id == self.client.id,
                        None => return Err("ERR Invalid client ID".into()),
                    }
                    i += 1;
                }
                keep &= found;
            } else {
                return Err("ERR syntax error".into());
            }
        }
        Ok(keep)
    }

    /// This connection's line in `CLIENT LIST` format.
    fn client_line(&self, cmd: &str) -> String {
        let (sub, psub, ssub) = self.modes.pubsub.as_ref().map_or((0, 0, 0), |p| p.counts());
        let mut flags = String::new();
        if self.modes.tx.is_some() {
            flags.push('x');
        }
        if self.modes.subscribed() {
            flags.push('P');
        }
        if self.client.no_evict {
            flags.push('e');
        }
        if flags.is_empty() {
            flags.push('N');
        }
        let c = &self.client;
        let name = c
            .name
            .as_deref()
            .map(String::from_utf8_lossy)
            .unwrap_or_default();
        format!(
            "id={} addr={} laddr={} fd=-1 name={} age={} idle=0 flags={} db=0 sub={} psub={} ssub={} multi={} qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0 rbs={} rbp=0 obl=0 oll=0 omem=0 tot-mem=0 events=r cmd={} user={} redir=-1 resp={}\n",
            c.id,
            c.peer,
            c.local,
            name,
            c.created.elapsed().as_secs(),
            flags,
            sub,
            psub,
            ssub,
            self.queued_count(),
            self.io.rbuf.capacity(),
            cmd,
            self.shared.security.user_name(&self.sec),
            c.proto
        )
    }

    /// `RESET`, as Redis documents it: leave MULTI, drop WATCH and subscriptions, back to
    /// RESP2 with no name and no flags, and de-authenticated when authentication is required
    /// (the next command gets `NOAUTH` until the client authenticates again).
    pub(in crate::proxy::session) fn reset(&mut self) {
        self.modes.reset();
        self.client.proto = 2;
        self.client.name = None;
        self.client.no_evict = false;
        self.shared.security.reset(&mut self.sec);
        self.push_simple("RESET");
    }
}
