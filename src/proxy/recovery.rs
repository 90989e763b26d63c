//! Per-request recovery state: what the proxy remembers about a forwarded request (or one
//! part of a split request) so that a redirect, a retry or a lost connection can be handled
//! without the session or the fan-out owning the policy.

use tokio::time::Instant;

use super::trust::Wrap;

/// What a session remembers about a forwarded request, for redirects and retries.
pub(crate) struct Waiting {
    /// The slot of its keys (None: any primary).
    pub(crate) slot: Option<u16>,
    /// Safe to re-send after a lost connection.
    pub(crate) readonly: bool,
    /// MOVED/ASK redirects followed so far.
    pub(crate) redirects: u32,
    /// Re-sends after transient errors or failures so far.
    pub(crate) attempts: u32,
    /// A write in durable mode: sent with `WAIT`.
    pub(crate) durable: bool,
    /// When retrying stops; set at the first retry.
    pub(crate) deadline: Option<Instant>,
    /// A script sent wrapped in MULTI/EXEC, so its own error replies stay data.
    pub(crate) wrap: Option<Wrap>,
    /// The next completion is a redirect handed back after a refresh, to judge once more.
    pub(crate) confirming: bool,
}

impl Waiting {
    /// A request not yet retried.
    pub(crate) fn new(slot: Option<u16>, readonly: bool) -> Self {
        Self {
            slot,
            readonly,
            redirects: 0,
            attempts: 0,
            durable: false,
            deadline: None,
            wrap: None,
            confirming: false,
        }
    }
}
