//! One table from a server error reply to what the proxy does about it, so every retry
//! path (redirects, migration, failover) agrees on the meaning of each error code.

/// A server error reply, classified by its code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerError<'a> {
    /// `-MOVED <slot> <addr>`: the slot now lives at `addr` (`host:port`; an empty host
    /// means the node that answered).
    Moved {
        /// The slot that moved.
        slot: u16,
        /// Where it lives now, as Redis printed it.
        addr: &'a str,
    },
    /// `-ASK <slot> <addr>`: one-off redirect during migration (send `ASKING` first).
    Ask {
        /// The slot being migrated.
        slot: u16,
        /// The importing node, as Redis printed it.
        addr: &'a str,
    },
    /// `-TRYAGAIN`: a multi-key request hit a slot mid-migration.
    TryAgain,
    /// `-CLUSTERDOWN`: the cluster cannot serve the slot right now.
    ClusterDown,
    /// `-LOADING`: the node is loading its dataset.
    Loading,
    /// `-MASTERDOWN`: a replica lost its primary and refuses stale reads.
    MasterDown,
    /// `-READONLY`: a write reached a replica (a demoted primary).
    ReadOnly,
    /// `-CROSSSLOT`: the client's keys span slots; the client's error.
    CrossSlot,
    /// `-NOSCRIPT`: the script is not cached on that node.
    NoScript,
    /// Any other error: passed to the client as is.
    Other,
}

/// What the proxy does with a request that received a given error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryAction {
    /// Fix the slot map, resend to the new owner, and refresh the topology.
    Redirect,
    /// Send `ASKING` then the request to the target, leaving the slot map alone.
    AskRedirect,
    /// Resend to the same node after a short backoff, within a budget.
    RetryAfterBackoff,
    /// Refresh the topology, then resend within a time budget.
    RefreshAndRetry,
    /// Pass the error to the client.
    NoRetry,
}

impl ServerError<'_> {
    /// The action this error calls for.
    pub fn action(&self) -> RetryAction {
        match self {
            Self::Moved { .. } => RetryAction::Redirect,
            Self::Ask { .. } => RetryAction::AskRedirect,
            Self::TryAgain => RetryAction::RetryAfterBackoff,
            Self::ClusterDown | Self::Loading | Self::MasterDown | Self::ReadOnly => {
                RetryAction::RefreshAndRetry
            }
            Self::CrossSlot | Self::NoScript | Self::Other => RetryAction::NoRetry,
        }
    }

    /// True for the errors of a changing cluster (MOVED, ASK, TRYAGAIN, CLUSTERDOWN, LOADING,
    /// MASTERDOWN, READONLY): the ones that call for some retry.
    pub fn is_cluster_change(&self) -> bool {
        self.action() != RetryAction::NoRetry
    }
}

/// Classifies a whole error frame: `-CODE text\r\n`, or a RESP3 blob error `!n\r\n...\r\n`.
/// A malformed `MOVED`/`ASK` classifies as `Other`.
pub fn classify_error(frame: &[u8]) -> ServerError<'_> {
    let message = error_message(frame);
    let (code, rest) = match message.iter().position(|&b| b == b' ') {
        Some(space) => (&message[..space], &message[space + 1..]),
        None => (message, &b""[..]),
    };
    match code {
        b"MOVED" => redirect(rest).map_or(ServerError::Other, |(slot, addr)| ServerError::Moved {
            slot,
            addr,
        }),
        b"ASK" => redirect(rest).map_or(ServerError::Other, |(slot, addr)| ServerError::Ask {
            slot,
            addr,
        }),
        b"TRYAGAIN" => ServerError::TryAgain,
        b"CLUSTERDOWN" => ServerError::ClusterDown,
        b"LOADING" => ServerError::Loading,
        b"MASTERDOWN" => ServerError::MasterDown,
        b"READONLY" => ServerError::ReadOnly,
        b"CROSSSLOT" => ServerError::CrossSlot,
        b"NOSCRIPT" => ServerError::NoScript,
        _ => ServerError::Other,
    }
}

/// The error text without its type byte, length line or trailing CRLF.
fn error_message(frame: &[u8]) -> &[u8] {
    let body = match frame.split_first() {
        Some((b'-', rest)) => rest,
        Some((b'!', rest)) => match rest.windows(2).position(|w| w == b"\r\n") {
            Some(at) => &rest[at + 2..],
            None => rest,
        },
        _ => frame,
    };
    body.strip_suffix(b"\r\n").unwrap_or(body)
}

/// Parses `<slot> <addr>` of a redirect; the slot must be below 16384.
fn redirect(rest: &[u8]) -> Option<(u16, &str)> {
    let space = rest.iter().position(|&b| b == b' ')?;
    let slot_text = std::str::from_utf8(&rest[..space]).ok()?;
    if slot_text.is_empty() || !slot_text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let slot: u16 = slot_text.parse().ok().filter(|&s| s < 16384)?;
    let addr_bytes = &rest[space + 1..];
    let end = addr_bytes
        .iter()
        .position(|&b| b == b' ')
        .unwrap_or(addr_bytes.len());
    let addr = std::str::from_utf8(&addr_bytes[..end]).ok()?;
    ends_in_port(addr).then_some((slot, addr))
}

/// True when `addr` ends in `:<port>` as every redirect does. Only a shape check, so text
/// that is no redirect at all stays an ordinary error; the caller parses the target with
/// `net::NodeAddr` (this module sits below `net`), and an empty host before the colon means
/// the node that sent the redirect.
fn ends_in_port(addr: &str) -> bool {
    addr.rsplit_once(':').is_some_and(|(_, port)| {
        !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) && port.parse::<u16>().is_ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects() {
        assert_eq!(
            classify_error(b"-MOVED 3999 127.0.0.1:6381\r\n"),
            ServerError::Moved {
                slot: 3999,
                addr: "127.0.0.1:6381"
            }
        );
        assert_eq!(
            classify_error(b"-ASK 16383 redis-1.redis.svc.cluster.local:6379\r\n"),
            ServerError::Ask {
                slot: 16383,
                addr: "redis-1.redis.svc.cluster.local:6379"
            }
        );
        assert_eq!(
            classify_error(b"-MOVED 0 ::1:7000\r\n"),
            ServerError::Moved {
                slot: 0,
                addr: "::1:7000"
            }
        );
        assert_eq!(
            classify_error(b"-MOVED 12 :7002\r\n"),
            ServerError::Moved {
                slot: 12,
                addr: ":7002"
            }
        );
        assert_eq!(
            ServerError::Moved {
                slot: 1,
                addr: "a:1"
            }
            .action(),
            RetryAction::Redirect
        );
        assert_eq!(
            ServerError::Ask {
                slot: 1,
                addr: "a:1"
            }
            .action(),
            RetryAction::AskRedirect
        );
    }

    #[test]
    fn malformed_redirects_are_other() {
        for bad in [
            &b"-MOVED\r\n"[..],
            b"-MOVED 3999\r\n",
            b"-MOVED 16384 h:1\r\n",
            b"-MOVED -1 h:1\r\n",
            b"-MOVED x h:1\r\n",
            b"-MOVED 1 nohost\r\n",
            b"-MOVED 1 h:port\r\n",
            b"-ASK 1 h:\xff\r\n",
            b"-MOVEDX 1 h:1\r\n",
        ] {
            assert_eq!(classify_error(bad), ServerError::Other, "{bad:?}");
        }
    }

    #[test]
    fn codes_and_actions() {
        let table = [
            (
                &b"-TRYAGAIN Multiple keys request during rehashing of slot\r\n"[..],
                ServerError::TryAgain,
                RetryAction::RetryAfterBackoff,
            ),
            (
                b"-CLUSTERDOWN The cluster is down\r\n",
                ServerError::ClusterDown,
                RetryAction::RefreshAndRetry,
            ),
            (
                b"-LOADING Redis is loading the dataset in memory\r\n",
                ServerError::Loading,
                RetryAction::RefreshAndRetry,
            ),
            (
                b"-MASTERDOWN Link with MASTER is down\r\n",
                ServerError::MasterDown,
                RetryAction::RefreshAndRetry,
            ),
            (
                b"-READONLY You can't write against a read only replica.\r\n",
                ServerError::ReadOnly,
                RetryAction::RefreshAndRetry,
            ),
            (
                b"-CROSSSLOT Keys in request don't hash to the same slot\r\n",
                ServerError::CrossSlot,
                RetryAction::NoRetry,
            ),
            (
                b"-NOSCRIPT No matching script.\r\n",
                ServerError::NoScript,
                RetryAction::NoRetry,
            ),
            (
                b"-ERR unknown command\r\n",
                ServerError::Other,
                RetryAction::NoRetry,
            ),
            (
                b"-TRYAGAIN\r\n",
                ServerError::TryAgain,
                RetryAction::RetryAfterBackoff,
            ),
            (
                b"-CLUSTERDOWN",
                ServerError::ClusterDown,
                RetryAction::RefreshAndRetry,
            ),
            (b"", ServerError::Other, RetryAction::NoRetry),
        ];
        for (frame, error, action) in table {
            assert_eq!(classify_error(frame), error, "{frame:?}");
            assert_eq!(error.action(), action);
        }
    }

    #[test]
    fn blob_errors() {
        assert_eq!(
            classify_error(b"!21\r\nMOVED 5 10.0.0.1:6379\r\n"),
            ServerError::Moved {
                slot: 5,
                addr: "10.0.0.1:6379"
            }
        );
        assert_eq!(classify_error(b"!8\r\nLOADING!\r\n"), ServerError::Other);
        assert_eq!(classify_error(b"!7\r\nLOADING\r\n"), ServerError::Loading);
    }

    #[test]
    fn redirect_targets_need_a_port() {
        for good in [
            "127.0.0.1:6379",
            "::1:7000",
            "[::1]:7000",
            ":7000",
            "pod-0.svc:6379",
        ] {
            assert!(ends_in_port(good), "{good}");
        }
        for bad in ["host", "host:70000", "host:", "host:+1"] {
            assert!(!ends_in_port(bad), "{bad}");
        }
    }
}
