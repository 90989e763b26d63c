//! Per-client resource limits that need more than a comparison: the coarse idle timer, and
//! the metrics counted whenever a limit is hit.

use std::time::Duration;

use tokio::time::{interval_at, Instant, Interval, MissedTickBehavior};

use crate::protocol::ProtocolError;

/// Coarse idle detection for one client. Activity only sets a flag (no timer is reset per
/// request); a periodic tick, a quarter of the timeout apart, checks and clears it. A client
/// is closed after being idle for at least the timeout and at most a tick longer.
#[derive(Debug)]
pub struct IdleTimer {
    interval: Option<Interval>,
    ticks_needed: u32,
    idle_ticks: u32,
    active: bool,
}

impl IdleTimer {
    /// A timer closing clients idle for `timeout`; zero disables it.
    pub fn new(timeout: Duration) -> Self {
        if timeout.is_zero() {
            return Self {
                interval: None,
                ticks_needed: 0,
                idle_ticks: 0,
                active: false,
            };
        }
        let period = (timeout / 4).clamp(Duration::from_millis(10), Duration::from_secs(10));
        let ticks_needed = timeout.as_nanos().div_ceil(period.as_nanos()).max(1);
        let mut interval = interval_at(Instant::now() + period, period);
        interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Self {
            interval: Some(interval),
            ticks_needed: u32::try_from(ticks_needed).unwrap_or(u32::MAX),
            idle_ticks: 0,
            active: false,
        }
    }

    /// Records activity (bytes read or written).
    pub fn touch(&mut self) {
        self.active = true;
    }

    /// Completes at the next check; never when the timer is disabled.
    pub async fn tick(&mut self) {
        match &mut self.interval {
            Some(i) => {
                i.tick().await;
            }
            None => std::future::pending().await,
        }
    }

    /// After a tick: true when the client was idle for the whole timeout. `busy` (requests
    /// awaiting replies) counts as activity: the client is waiting for us, not idle.
    pub fn expired(&mut self, busy: bool) -> bool {
        if self.active || busy {
            self.active = false;
            self.idle_ticks = 0;
            return false;
        }
        self.idle_ticks = self.idle_ticks.saturating_add(1);
        self.idle_ticks >= self.ticks_needed
    }
}

/// True when `buffered` reply bytes exceed the output limit (0 disables the limit).
pub fn over_output_limit(buffered: usize, limit: usize) -> bool {
    limit > 0 && buffered > limit
}

/// Counts a client closed by the proxy (`output_buffer_limit`, `idle_timeout`, `protocol_error`).
pub fn count_disconnect(reason: &'static str) {
    metrics::counter!("slotway_client_disconnects_total", "reason" => reason).increment(1);
}

/// Counts a connection refused at accept time (`max_clients`).
pub fn count_rejected(reason: &'static str) {
    metrics::counter!("slotway_client_connections_rejected_total", "reason" => reason).increment(1);
}

/// Counts a client that reached its in-flight cap, so reading from it paused.
pub fn count_inflight_cap() {
    metrics::counter!("slotway_client_inflight_limit_total").increment(1);
}

/// Counts a malformed or oversized request; the label says which limit or rule it broke.
pub fn count_protocol_error(e: &ProtocolError) {
    let kind = match e {
        ProtocolError::InvalidMultibulkLength => "invalid_multibulk_length",
        ProtocolError::InvalidBulkLength => "invalid_bulk_length",
        ProtocolError::ExpectedBulk(_) => "expected_bulk",
        ProtocolError::UnbalancedQuotes => "unbalanced_quotes",
        ProtocolError::InlineTooBig => "inline_too_big",
        ProtocolError::MultibulkCountTooBig | ProtocolError::BulkCountTooBig => "header_too_big",
        _ => "other",
    };
    metrics::counter!("slotway_client_protocol_errors_total", "error" => kind).increment(1);
    count_disconnect("protocol_error");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn idle_timer_expires_only_after_a_quiet_timeout() {
        let mut t = IdleTimer::new(Duration::from_millis(80));
        let start = Instant::now();
        t.touch();
        t.tick().await;
        assert!(!t.expired(false), "activity in the first period");
        let mut ticks = 0;
        loop {
            t.tick().await;
            ticks += 1;
            if t.expired(false) {
                break;
            }
        }
        assert_eq!(ticks, 4);
        assert!(start.elapsed() >= Duration::from_millis(80));
        // Busy clients (waiting for replies) never expire.
        for _ in 0..10 {
            t.tick().await;
            assert!(!t.expired(true));
        }
    }

    #[tokio::test]
    async fn disabled_idle_timer_never_ticks() {
        let mut t = IdleTimer::new(Duration::ZERO);
        let ticked = tokio::time::timeout(Duration::from_millis(50), t.tick()).await;
        assert!(ticked.is_err());
    }

    #[test]
    fn output_limit_zero_is_unlimited() {
        assert!(!over_output_limit(usize::MAX, 0));
        assert!(over_output_limit(11, 10));
        assert!(!over_output_limit(10, 10));
    }
}
