//! Applying recovery: a completion of a forwarded request goes to the pure decision
//! ([`recovery::decide`]) and the session carries out the [`Action`] it returns: a reply
//! for the pipeline, or a retry on the session's retry lane (redirect, confirmation by a
//! refresh, re-route, script reload). No rule about which error may do what lives here.

use std::net::SocketAddr;

use bytes::Bytes;
use tokio::time::Instant;

use super::{error_frame, Pending, Session};
use crate::backend::{Completion, Outcome, Tag};
use crate::metrics::global as metrics;
use crate::proxy::recovery::{self, Action, Limits};
use crate::proxy::retry::{Origin, Retry};
use crate::proxy::trust::{self, Wrap};

impl Session {
    /// A completion from a node (or from a retry, or the subscriber): to its pipeline entry.
    pub(super) fn on_completion(&mut self, c: Completion) {
        if let Some(group) = c.tag.group() {
            return self.on_group_completion(group, c);
        }
        let Some(c) = self.special_completion(c) else {
            return;
        };
        let Some(idx) = self.pipe.index(c.tag.seq) else {
            return;
        };
        // Whatever this answer leads to (a reply, or the same request queued again), the lane
        // releases its next retry only after it has been handled (`pump` in the serve loop).
        self.modes.retries.answered(c.tag);
        let Completion { tag, raw, outcome } = c;
        let limits = self.limits();
        let router = &self.shared.router;
        let Some(w) = self.pipe.waiting_part(idx, tag.part) else {
            return;
        };
        if let Outcome::Failed(err) = &outcome {
            router.note_failure(err);
        }
        let wrap = w.wrap;
        // Loaded only for an error reply: a plain reply costs no snapshot load and no clock.
        let topology = || router.table().as_ref().map(|t| t.topology.clone());
        let action = recovery::decide(w, outcome, &limits, topology, Instant::now);
        w.record(&action, &limits, Instant::now);
        let router = &self.shared.router;
        let frame = match action {
            Action::Reply(frame) => frame,
            Action::Fail(msg) => error_frame(&msg),
            Action::Redirect { to, moved } => {
                if moved.is_some() {
                    metrics().moved.increment(1);
                } else {
                    metrics().ask.increment(1);
                    router.note_ask();
                }
                if let Some(origin) = self.origin(idx, tag) {
                    self.modes
                        .retries
                        .push(Retry::redirect(origin, raw, to, moved));
                }
                return;
            }
            Action::Confirm { frame, wait } => {
                if let Some(origin) = self.origin(idx, tag) {
                    self.modes
                        .retries
                        .push(Retry::confirm(origin, raw, frame, wait));
                }
                return;
            }
            Action::Reroute {
                refresh,
                reason,
                avoid,
            } => {
                metrics().retry(reason).increment(1);
                if refresh {
                    router.request_refresh();
                }
                return self.reroute(idx, raw, tag, avoid);
            }
            Action::Reload(frame) => match self.reload(idx, &raw, tag) {
                Some(()) => return,
                None => frame,
            },
        };
        if matches!(self.pipe.pending[idx], Pending::Waiting(_)) {
            let raw = match wrap {
                Some(w) => w.inner(&raw),
                None => raw,
            };
            self.slow_log(tag.seq, &raw);
        }
        self.pipe.finish(idx, tag.part, frame);
    }

    /// The bounds of recovery from the configuration.
    fn limits(&self) -> Limits {
        let cluster = &self.shared.config.cluster;
        Limits {
            max_redirects: cluster.max_redirects,
            retry_deadline: crate::config::ms(cluster.retry_deadline_ms),
        }
    }

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
    fn reroute(&mut self, idx: usize, raw: Bytes, tag: Tag, failed: Option<SocketAddr>) {
        let Some((slot, attempts)) = self
            .pipe
            .waiting_part(idx, tag.part)
            .map(|w| (w.slot, w.attempts))
        else {
            return;
        };
        let Some(origin) = self.origin(idx, tag) else {
            return;
        };
        let retry = Retry::reroute(origin, raw, slot, attempts).avoiding(failed);
        self.modes.retries.push(retry);
    }

    /// Who a retry of `pending[idx]` (part of `tag`) answers to.
    fn origin(&mut self, idx: usize, tag: Tag) -> Option<Origin> {
        let w = self.pipe.waiting_part(idx, tag.part)?;
        let (durable, replies) = (w.durable, w.replies());
        Some(Origin {
            durable,
            replies,
            router: self.shared.router.clone(),
            reply: self.pipe.reply_to(tag),
            affinity: self.id,
        })
    }

    /// `NOSCRIPT` to an `EVALSHA` whose body slotway has seen: load it, then send it again.
    /// None when the body is not known after all (the `NOSCRIPT` is then the reply).
    fn reload(&mut self, idx: usize, raw: &Bytes, tag: Tag) -> Option<()> {
        let w = self.pipe.waiting_part(idx, tag.part)?;
        let (wrap, slot) = (w.wrap?, w.slot);
        let body = self
            .shared
            .scripts
            .body_for_evalsha(&wrap.inner(raw), self.shared.scan_limits)?;
        let origin = self.origin(idx, tag)?;
        crate::proxy::scripts::spawn_reload(&self.shared, origin, body, raw.clone(), slot);
        Some(())
    }

    /// Puts the request at `seq` in the slow log when it took long enough.
    fn slow_log(&mut self, seq: u64, raw: &Bytes) {
        let slowlog = &self.shared.metrics.slowlog;
        let Some(took) = self.metrics.elapsed(seq) else {
            return;
        };
        if !slowlog.is_slow(took) {
            return;
        }
        let mut scanner = crate::protocol::RequestScanner::new(self.shared.scan_limits);
        if let Ok(Some(_)) = scanner.scan(raw) {
            let client = self
                .stream
                .peer_addr()
                .map_or_else(|_| String::new(), |a| a.to_string());
            slowlog.record(raw, scanner.args(), took, client);
        }
    }
}
