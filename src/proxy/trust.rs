//! The one rule for error replies: only a reply that Redis itself produced *before executing*
//! a command may steer routing (a redirect, a retry, a script reload). Everything else is data
//! and goes to the client as it is.
//!
//! Two facts make the rule checkable:
//! - a script or function can return any error text (`redis.error_reply('MOVED 0 h:1')`),
//!   byte for byte what a real redirect looks like, so the proxy never judges a script's reply
//!   by its bytes. It sends a script as `MULTI`, the script, `EXEC` ([`wrap`]): Redis runs its
//!   cluster, loading and replica checks when *queuing*, so an error in reply to the queued
//!   script (then `EXECABORT`) is Redis's own and nothing ran, while whatever `EXEC`'s array
//!   holds is the script's output ([`unwrap`]);
//! - a real `MOVED`/`ASK` comes from the cluster check of a command with keys, names the
//!   request's own slot, and names a node of the cluster. A redirect that breaks any of these
//!   is data; one naming a node the topology does not know yet is followed only once a
//!   refresh has confirmed the node ([`judge`]). No client-chosen text is ever resolved by
//!   DNS, dialled, or sent the proxy's credentials.

use std::net::SocketAddr;

use bytes::{Bytes, BytesMut};

use crate::cluster::topology::Topology;
use crate::net::{parse_port, NodeAddr};
use crate::protocol::{encode, ReplyKind, ResponseScanner, RetryAction, ServerError};

/// True for the commands that run a script or a function (their replies are the script's).
pub fn is_script(name: &str) -> bool {
    matches!(
        name,
        "eval" | "eval_ro" | "evalsha" | "evalsha_ro" | "fcall" | "fcall_ro"
    )
}

/// How a script request was wrapped, to read its replies back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wrap {
    /// A `SCRIPT EXISTS <sha>` was queued before the script, so a `NOSCRIPT` can be told apart
    /// from a script returning that text.
    pub probe: bool,
    /// Bytes before the script request (MULTI and the probe).
    prefix: u32,
}

/// `EXEC` as it ends every wrapped request.
const EXEC: &[u8] = b"*1\r\n$4\r\nEXEC\r\n";

impl Wrap {
    /// The wrap of a request owed `replies` (only the reply count is known: no prefix).
    pub fn for_replies(replies: u32) -> Self {
        Self {
            probe: replies > 3,
            prefix: 0,
        }
    }
    /// The client's own script request inside the wrapped bytes `raw`.
    pub fn inner(self, raw: &Bytes) -> Bytes {
        let start = (self.prefix as usize).min(raw.len());
        let end = raw.len().saturating_sub(EXEC.len()).max(start);
        raw.slice(start..end)
    }

    /// Replies the wrapped request is owed: MULTI, the queued commands, EXEC.
    pub fn replies(self) -> u32 {
        if self.probe {
            4
        } else {
            3
        }
    }
}

/// `MULTI`, (`SCRIPT EXISTS sha`,) the script request `raw`, `EXEC`, as one contiguous request.
pub fn wrap(raw: &[u8], probe_sha: Option<&[u8]>) -> (Bytes, Wrap) {
    let mut out = BytesMut::with_capacity(raw.len() + 64);
    encode::command(&mut out, &[b"MULTI"]);
    if let Some(sha) = probe_sha {
        encode::command(&mut out, &[b"SCRIPT", b"EXISTS", sha]);
    }
    let prefix = u32::try_from(out.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(raw);
    out.extend_from_slice(EXEC);
    let wrap = Wrap {
        probe: probe_sha.is_some(),
        prefix,
    };
    (out.freeze(), wrap)
}

/// What the replies of a wrapped script say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The script ran (or may have): its reply, data for the client, never a reason to retry.
    Ran(Bytes),
    /// Nothing ran: Redis refused the script before executing it with this error, which may
    /// steer routing.
    NotRun(Bytes),
}

/// Reads the run of frames a wrapped script was answered with.
///
/// Anything unexpected is treated as "may have run" and passed on as data: the only way to
/// re-send a script is a reply that proves it did not run.
pub fn unwrap(run: &Bytes, wrap: Wrap) -> Verdict {
    let frames = split_frames(run);
    let want = wrap.replies() as usize;
    if frames.len() != want {
        return Verdict::Ran(run.clone());
    }
    let multi = &frames[0];
    let exec = &frames[want - 1];
    let queued = &frames[1..want - 1];
    if is_error(multi) {
        // MULTI refused (an ACL without it): the queued commands ran on their own, and the
        // script's reply is the last of them.
        return Verdict::Ran(queued[queued.len() - 1].clone());
    }
    match exec.first() {
        Some(b'*') if !exec.starts_with(b"*-1") => {}
        Some(b'-' | b'!') => {
            // EXEC refused: nothing ran. The first queuing error is Redis's reason; without
            // one, EXEC's own error is (a slot that moved between queuing and EXEC).
            let reason = queued.iter().find(|f| is_error(f)).unwrap_or(exec);
            return Verdict::NotRun(reason.clone());
        }
        _ => return Verdict::Ran(exec.clone()),
    }
    let Some(header) = exec.windows(2).position(|w| w == b"\r\n") else {
        return Verdict::Ran(exec.clone());
    };
    let body = exec.slice(header + 2..);
    if !wrap.probe {
        return Verdict::Ran(body);
    }
    let elements = split_frames(&body);
    let [exists, reply] = elements.as_slice() else {
        return Verdict::Ran(body);
    };
    let missing = exists.as_ref() == b"*1\r\n:0\r\n";
    let noscript = matches!(
        crate::protocol::classify_error(reply),
        ServerError::NoScript
    );
    if missing && noscript && is_error(reply) {
        Verdict::NotRun(reply.clone())
    } else {
        Verdict::Ran(reply.clone())
    }
}

fn is_error(frame: &[u8]) -> bool {
    matches!(frame.first(), Some(b'-' | b'!'))
}

/// Splits a run of complete frames; stops at the first incomplete or malformed one.
fn split_frames(run: &Bytes) -> Vec<Bytes> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < run.len() {
        let mut scanner = ResponseScanner::new(crate::backend::MAX_REPLY_DEPTH);
        match scanner.scan(&run[at..]) {
            Ok(Some(r)) => {
                out.push(run.slice(at..at + r.len));
                at += r.len;
            }
            _ => {
                out.push(run.slice(at..));
                break;
            }
        }
    }
    out
}

/// What to do with an error reply Redis produced before running the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Follow a `MOVED` (`moved`: its slot) or an `ASK` (`moved` None) to this member.
    Redirect {
        /// The member's resolved address.
        to: SocketAddr,
        /// The slot a `MOVED` reported.
        moved: Option<u16>,
    },
    /// The redirect names a node the topology does not know: refresh, then judge again.
    Confirm,
    /// A transient cluster state: send again after a backoff (`refresh`: refresh first).
    Retry {
        /// Refresh the topology before retrying (all but `TRYAGAIN`).
        refresh: bool,
    },
    /// The script is missing on the node: load it, then send again.
    Reload,
    /// Not a routing answer: pass it to the client as it is.
    Data,
}

/// Decides what an error reply may do to routing. `slot` is the request's slot (None: no
/// keys), `topology` the current snapshot, `confirmed` true once a refresh was waited for.
pub fn judge(
    err: &ServerError<'_>,
    slot: Option<u16>,
    topology: Option<&Topology>,
    confirmed: bool,
) -> Gate {
    // The error table says what the code calls for; the gate adds who may be believed.
    let (redirect_slot, addr, moved) = match (err.action(), *err) {
        (RetryAction::Redirect, ServerError::Moved { slot, addr }) => (slot, addr, true),
        (RetryAction::AskRedirect, ServerError::Ask { slot, addr }) => (slot, addr, false),
        (RetryAction::Redirect | RetryAction::AskRedirect, _) => return Gate::Data,
        (RetryAction::RetryAfterBackoff, _) => return Gate::Retry { refresh: false },
        (RetryAction::RefreshAndRetry, _) => return Gate::Retry { refresh: true },
        (RetryAction::NoRetry, ServerError::NoScript) => return Gate::Reload,
        (RetryAction::NoRetry, _) => return Gate::Data,
    };
    // Redis redirects only a command with keys, and only for the slot of those keys.
    if slot != Some(redirect_slot) {
        return Gate::Data;
    }
    let Some(topology) = topology else {
        return Gate::Data;
    };
    match member(topology, addr, redirect_slot) {
        Some(to) => Gate::Redirect {
            to,
            moved: moved.then_some(redirect_slot),
        },
        None if confirmed || !plausible(addr) => Gate::Data,
        None => Gate::Confirm,
    }
}

/// The resolved address of the member a redirect names, without resolving any name: an IP
/// must be a member's address, a host name a member's announced endpoint. An empty host
/// (Redis's "the node you asked") is the slot's current owner's IP.
pub fn member(topology: &Topology, addr: &str, slot: u16) -> Option<SocketAddr> {
    let target = match Target::parse(addr)? {
        Target::Sender(port) => {
            let ip = topology.primary_of_slot(slot)?.addr.ip();
            let sock = SocketAddr::new(ip, port);
            return topology.node_by_addr(sock).map(|(_, n)| n.addr);
        }
        Target::Node(target) => target,
    };
    if let Some(sock) = target.socket_addr() {
        if let Some((_, n)) = topology.node_by_addr(sock) {
            return Some(n.addr);
        }
    }
    topology
        .node_by_endpoint(target.host(), target.port())
        .map(|(_, n)| n.addr)
}

/// A redirect's target: a node, or (empty host) the node that sent the redirect.
enum Target {
    /// `:<port>`.
    Sender(u16),
    /// `host:port`.
    Node(NodeAddr),
}

impl Target {
    fn parse(addr: &str) -> Option<Self> {
        // `::1:7000` also starts with a colon: only a bare `:<port>` names the sender.
        match addr.strip_prefix(':').filter(|port| !port.contains(':')) {
            Some(port) => parse_port(port, addr).ok().map(Target::Sender),
            None => addr.parse().ok().map(Target::Node),
        }
    }
}

/// True when `addr` is well formed enough that a refresh could show it as a member.
fn plausible(addr: &str) -> bool {
    Target::parse(addr).is_some()
}

/// True when `addr` is a member of `topology` (pools and credentials are for members only).
pub fn is_member(topology: &Topology, addr: SocketAddr) -> bool {
    topology.node_by_addr(addr).is_some()
}

/// The slot a redirect names (None for any other error).
pub fn redirect_slot(err: &ServerError<'_>) -> Option<u16> {
    match err {
        ServerError::Moved { slot, .. } | ServerError::Ask { slot, .. } => Some(*slot),
        _ => None,
    }
}

/// The client's reply to a wrapped script (owed `replies`) sent after an `ASK`: what it
/// returned, or (nothing ran) Redis's error, except that a redirect after a redirect is not
/// followed and becomes a proxy error naming no node.
pub fn after_ask(run: &Bytes, replies: u32) -> (Bytes, ReplyKind) {
    match unwrap(run, Wrap::for_replies(replies)) {
        Verdict::Ran(reply) => (reply, ReplyKind::Other),
        Verdict::NotRun(err) => match redirect_slot(&crate::protocol::classify_error(&err)) {
            Some(slot) => {
                let mut out = BytesMut::new();
                encode::error(&mut out, &too_many_redirects(Some(slot)));
                (out.freeze(), ReplyKind::Error)
            }
            None => (err, ReplyKind::Error),
        },
    }
}

/// The client's error when the redirect budget is spent on genuine redirects: it names no
/// node, so a cluster-aware client is not invited to connect past the proxy.
pub fn too_many_redirects(slot: Option<u16>) -> String {
    match slot {
        Some(s) => format!("TRYAGAIN slotway: slot {s} is moving; too many redirects"),
        None => "TRYAGAIN slotway: too many redirects".to_string(),
    }
}

#[cfg(test)]
#[path = "trust_tests.rs"]
mod tests;
