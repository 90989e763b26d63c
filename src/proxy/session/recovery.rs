//! What a session does with an error reply: the [`trust`] gate decides whether Redis itself
//! produced it before running the request (then it may redirect, retry or reload a script)
//! or whether it is data for the client; this module applies the decision.

use std::net::SocketAddr;

use bytes::Bytes;
use tokio::time::Instant;

use super::{error_frame, Session};
use crate::backend::Tag;
use crate::metrics::{global as metrics, RetryReason};
use crate::protocol::ServerError;
use crate::proxy::retry::{Origin, Retry};
use crate::proxy::trust::{self, Gate, Wrap};

impl Session {
    /// A script request as MULTI/EXEC (see [`trust`]); an `EVALSHA` whose body slotway knows
    /// also probes `SCRIPT EXISTS`, so a `NOSCRIPT` reply can be trusted for a reload.
    pub(super) fn wrap_script(
        &self,
        raw: &Bytes,
        args: &[std::ops::Range<usize>],
    ) -> (Bytes, Wrap) {
        let scripts = &self.shared.scripts;
        let probe = scripts
            .body_for_evalsha(raw, self.shared.scan_limits)
            .and_then(|_| args.get(1))
            .map(|sha| &raw[sha.clone()]);
        trust::wrap(raw, probe)
    }

    /// Sends `pending[idx]` again to whichever node owns its slot after a short backoff, or as
    /// soon as the map names an owner other than `failed` (the node that could not answer).
    pub(super) fn reroute(&mut self, idx: usize, raw: Bytes, tag: Tag, failed: Option<SocketAddr>) {
        let (slot, attempts) = {
            let w = self.waiting(idx, tag.part);
            (w.slot, w.attempts)
        };
        let retry = Retry::reroute(self.origin(idx, tag), raw, slot, attempts).avoiding(failed);
        self.modes.retries.push(retry);
    }

    pub(super) fn origin(&mut self, idx: usize, tag: Tag) -> Origin {
        let w = self.waiting(idx, tag.part);
        let (durable, replies) = (w.durable, w.wrap.map_or(1, Wrap::replies));
        Origin {
            durable,
            replies,
            router: self.shared.router.clone(),
            reply: self.reply_to(tag),
            affinity: self.id,
        }
    }

    /// Counts one redirect of `pending[idx]`; false once the hop limit is reached.
    pub(super) fn begin_redirect(&mut self, idx: usize, part: u32) -> bool {
        let max = self.shared.config.cluster.max_redirects;
        let w = self.waiting(idx, part);
        if w.redirects >= max {
            return false;
        }
        w.redirects += 1;
        true
    }

    /// Handles an error reply Redis produced before running the request (see [`trust`]);
    /// returns the frame to pass on, or None when a retry was sent. `confirmed`: the
    /// topology was refreshed for this redirect already.
    pub(super) fn on_error_reply(
        &mut self,
        idx: usize,
        frame: Bytes,
        raw: Bytes,
        tag: Tag,
        confirmed: bool,
    ) -> Option<Bytes> {
        let router = self.shared.router.clone();
        let err = crate::protocol::classify_error(&frame);
        let slot = self.waiting(idx, tag.part).slot;
        let gate = {
            let table = router.table();
            let topology = table.as_ref().map(|t| &*t.topology);
            trust::judge(&err, slot, topology, confirmed)
        };
        match gate {
            Gate::Data => Some(frame),
            Gate::Redirect { to, moved } => {
                if !self.begin_redirect(idx, tag.part) {
                    return Some(error_frame(&trust::too_many_redirects(slot)));
                }
                if moved.is_some() {
                    metrics().moved.increment(1);
                } else {
                    metrics().ask.increment(1);
                    router.note_ask();
                }
                let retry = Retry::redirect(self.origin(idx, tag), raw, to, moved);
                self.modes.retries.push(retry);
                None
            }
            Gate::Confirm => {
                // Counted as a hop: a stream of unknown targets cannot loop.
                if !self.begin_redirect(idx, tag.part) {
                    return Some(error_frame(&trust::too_many_redirects(slot)));
                }
                self.waiting(idx, tag.part).confirming = true;
                let wait = crate::config::ms(self.shared.config.cluster.retry_deadline_ms);
                let retry = Retry::confirm(self.origin(idx, tag), raw, frame, wait);
                self.modes.retries.push(retry);
                None
            }
            Gate::Retry { refresh } => {
                if !self.begin_retry(idx, tag.part) {
                    return Some(frame);
                }
                metrics().retry(retry_reason(&err)).increment(1);
                if refresh {
                    router.request_refresh();
                }
                self.reroute(idx, raw, tag, None);
                None
            }
            Gate::Reload => self.on_noscript(idx, frame, raw, tag),
        }
    }

    /// `NOSCRIPT` to an `EVALSHA` whose body slotway has seen: load it, then send it again.
    pub(super) fn on_noscript(
        &mut self,
        idx: usize,
        frame: Bytes,
        raw: Bytes,
        tag: Tag,
    ) -> Option<Bytes> {
        // Only a probed script's NOSCRIPT reaches here (`trust::unwrap` confirmed it).
        let Some(wrap) = self.waiting(idx, tag.part).wrap.filter(|w| w.probe) else {
            return Some(frame);
        };
        let scripts = &self.shared.scripts;
        let inner = wrap.inner(&raw);
        let Some(body) = scripts.body_for_evalsha(&inner, self.shared.scan_limits) else {
            return Some(frame);
        };
        // Counted as a redirect: a script that will not load cannot loop.
        if !self.begin_redirect(idx, tag.part) {
            return Some(frame);
        }
        let slot = self.waiting(idx, tag.part).slot;
        let origin = self.origin(idx, tag);
        crate::proxy::scripts::spawn_reload(&self.shared, origin, body, raw, slot);
        None
    }

    /// Starts (or continues) a retry of `pending[idx]`; false once its deadline has passed.
    pub(super) fn begin_retry(&mut self, idx: usize, part: u32) -> bool {
        let budget = crate::config::ms(self.shared.config.cluster.retry_deadline_ms);
        let w = self.waiting(idx, part);
        let now = Instant::now();
        let deadline = *w.deadline.get_or_insert(now + budget);
        if now >= deadline {
            return false;
        }
        w.attempts += 1;
        true
    }
}

/// The `reason` label of a retry after an error reply.
fn retry_reason(e: &ServerError) -> RetryReason {
    match e {
        ServerError::TryAgain => RetryReason::TryAgain,
        ServerError::Loading => RetryReason::Loading,
        ServerError::MasterDown => RetryReason::MasterDown,
        ServerError::ReadOnly => RetryReason::ReadOnly,
        _ => RetryReason::ClusterDown,
    }
}
