//! One client session's metric accumulators: plain integers and a run-length buffer, flushed
//! into this thread's [`shard`] once per turn of the session loop, so a pipelined batch of N
//! requests costs a handful of atomic operations instead of several per request.
//!
//! Time is read once per read batch (the start of every request in it) and once per batch of
//! completions (their end), never per request.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::commands::{CommandId, CommandIndex};
use super::global::global;
use super::shard;
use super::slots;
use crate::command::CommandTable;
use crate::hotkeys::{self, Sampler};

/// Longest command name the one-entry lookup cache holds.
const CACHED_NAME: usize = 16;

/// Consecutive requests of one command with the same start and end: one histogram call.
#[derive(Debug, Clone, Copy)]
struct Run {
    id: CommandId,
    start: Instant,
    end: Instant,
    /// `end - start`, computed once per run.
    took: Duration,
    count: u32,
}

/// Accumulators of one session.
#[derive(Debug)]
pub struct SessionMetrics {
    enabled: bool,
    hot_keys: bool,
    index: Arc<CommandIndex>,
    /// The last command looked up, exactly as the client spelt it: pipelines tend to repeat one.
    last_name: [u8; CACHED_NAME],
    last_len: usize,
    last_id: CommandId,
    /// `[ok, error]` per command id since the last flush.
    counts: Vec<[u32; 2]>,
    /// Ids with non-zero `counts`.
    dirty: Vec<CommandId>,
    run: Option<Run>,
    /// When the current read batch was read.
    batch_start: Instant,
    /// When the current batch of completions arrived.
    completed_at: Instant,
    /// Requests answered by the proxy in this read batch, timed when the batch is dispatched.
    answered: Vec<(CommandId, bool)>,
    sampler: Sampler,
    sampled: Vec<Bytes>,
    bytes_in: u64,
    bytes_out: u64,
    inflight: usize,
}

impl SessionMetrics {
    /// Accumulators for a new client; `enabled` false records nothing per request.
    pub fn new(enabled: bool, hot_keys: bool) -> Self {
        let g = global();
        g.accepted.increment(1);
        g.client_connections.increment(1.0);
        let now = Instant::now();
        Self {
            enabled,
            hot_keys: enabled && hot_keys,
            index: g.commands.index(),
            last_name: [0; CACHED_NAME],
            last_len: usize::MAX,
            last_id: CommandId::UNKNOWN,
            counts: Vec::new(),
            dirty: Vec::new(),
            run: None,
            batch_start: now,
            completed_at: now,
            answered: Vec::new(),
            sampler: Sampler::default(),
            sampled: Vec::new(),
            bytes_in: 0,
            bytes_out: 0,
            inflight: 0,
        }
    }

    /// True when per-request metrics are recorded.
    #[inline]
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// `n` bytes were read; the requests in them start now.
    #[inline]
    pub fn read(&mut self, n: usize) {
        if self.enabled {
            self.bytes_in += n as u64;
            self.batch_start = Instant::now();
        }
    }

    /// When the current read batch was read (the start time of its requests).
    #[inline]
    pub fn batch_start(&self) -> Instant {
        self.batch_start
    }

    /// `n` bytes were written to the client.
    #[inline]
    pub fn wrote(&mut self, n: usize) {
        if self.enabled {
            self.bytes_out += n as u64;
        }
    }

    /// The id of the command named `name` (as the client typed it).
    #[inline]
    pub fn command(&mut self, name: &[u8], table: &CommandTable) -> CommandId {
        if !self.enabled {
            return CommandId::UNKNOWN;
        }
        if name.len() == self.last_len && self.last_name[..name.len()] == *name {
            return self.last_id;
        }
        let id = match self.index.lookup(name) {
            Some(id) => id,
            None => {
                let canonical = table.lookup(name).map(|spec| spec.name.as_str());
                let (id, index) = global().commands.register(name, canonical);
                self.index = index;
                id
            }
        };
        if name.len() <= CACHED_NAME {
            self.last_name[..name.len()].copy_from_slice(name);
            self.last_len = name.len();
            self.last_id = id;
        }
        id
    }

    /// A request for `slot` whose first key is `key()`: counts the slot, samples the key.
    #[inline]
    pub fn keyed(&mut self, slot: u16, key: impl FnOnce() -> Bytes) {
        if !self.enabled {
            return;
        }
        slots::count_slot(slot);
        if self.hot_keys && self.sampler.sample() {
            self.sampled.push(key());
        }
    }

    /// A batch of completions arrived; requests finished in it end now.
    #[inline]
    pub fn completions(&mut self) {
        if self.enabled {
            self.completed_at = Instant::now();
        }
    }

    /// A forwarded request that started at `start` got its final reply in the current batch of
    /// completions; returns how long it took.
    #[inline]
    pub fn finished(&mut self, id: CommandId, start: Instant, error: bool) -> Duration {
        if !self.enabled {
            return Duration::ZERO;
        }
        let end = self.completed_at;
        self.count(id, start, end, error)
    }

    /// A request of the current read batch was answered by the proxy itself.
    #[inline]
    pub fn answered(&mut self, id: CommandId, error: bool) {
        if self.enabled {
            self.answered.push((id, error));
        }
    }

    /// The read batch is dispatched: times the requests the proxy answered itself.
    pub fn dispatched(&mut self) {
        if self.answered.is_empty() {
            return;
        }
        let end = Instant::now();
        let start = self.batch_start;
        for (id, error) in std::mem::take(&mut self.answered) {
            self.count(id, start, end, error);
        }
    }

    /// Counts one request and returns how long it took.
    fn count(&mut self, id: CommandId, start: Instant, end: Instant, error: bool) -> Duration {
        let i = usize::from(id.0);
        if self.counts.len() <= i {
            self.counts.resize(i + 1, [0, 0]);
        }
        let c = &mut self.counts[i];
        if c[0] == 0 && c[1] == 0 {
            self.dirty.push(id);
        }
        c[usize::from(error)] += 1;
        if let Some(r) = &mut self.run {
            if r.id == id && r.start == start && r.end == end {
                r.count += 1;
                return r.took;
            }
        }
        if let Some(prev) = self.run.take() {
            self.record_run(prev);
        }
        let took = end.saturating_duration_since(start);
        self.run = Some(Run {
            id,
            start,
            end,
            took,
            count: 1,
        });
        took
    }

    fn record_run(&self, r: Run) {
        shard::with(|s| {
            if let Some(h) = s.duration(usize::from(r.id.0)) {
                h.record_n(r.took, u64::from(r.count));
            }
        });
    }

    /// Pushes everything accumulated into this thread's shard; `inflight` is the session's
    /// number of requests awaiting replies.
    pub fn flush(&mut self, inflight: usize) {
        if !self.enabled {
            return;
        }
        if let Some(r) = self.run.take() {
            self.record_run(r);
        }
        shard::with(|s| {
            if self.bytes_in > 0 {
                s.bytes_in
                    .fetch_add(std::mem::take(&mut self.bytes_in), Ordering::Relaxed);
            }
            if self.bytes_out > 0 {
                s.bytes_out
                    .fetch_add(std::mem::take(&mut self.bytes_out), Ordering::Relaxed);
            }
            if inflight != self.inflight {
                s.inflight
                    .fetch_add(inflight as i64 - self.inflight as i64, Ordering::Relaxed);
                self.inflight = inflight;
            }
            for id in self.dirty.drain(..) {
                let c = &mut self.counts[usize::from(id.0)];
                s.outcomes(usize::from(id.0), u64::from(c[0]), u64::from(c[1]));
                *c = [0, 0];
            }
        });
        if !self.sampled.is_empty() {
            hotkeys::offer_sampled(&self.sampled);
            self.sampled.clear();
        }
    }
}

impl Drop for SessionMetrics {
    fn drop(&mut self) {
        self.dispatched();
        self.flush(0);
        global().client_connections.decrement(1.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disabled_sessions_record_nothing() {
        let table = CommandTable::builtin();
        let mut m = SessionMetrics::new(false, true);
        assert_eq!(m.command(b"GET", &table), CommandId::UNKNOWN);
        assert_eq!(
            m.finished(CommandId::UNKNOWN, Instant::now(), false),
            Duration::ZERO
        );
        assert!(m.dirty.is_empty());
    }

    #[test]
    fn counts_accumulate_until_flushed() {
        let table = CommandTable::builtin();
        let mut m = SessionMetrics::new(true, false);
        let get = m.command(b"get", &table);
        assert_ne!(get, CommandId::UNKNOWN);
        assert_eq!(m.command(b"NOSUCH", &table), CommandId::UNKNOWN);
        m.read(10);
        m.completions();
        let start = m.batch_start();
        for _ in 0..3 {
            m.finished(get, start, false);
        }
        m.finished(get, start, true);
        assert_eq!(m.counts[usize::from(get.0)], [3, 1]);
        assert_eq!(m.run.map(|r| r.count), Some(4));
        m.flush(2);
        assert!(m.dirty.is_empty());
        assert_eq!(m.counts[usize::from(get.0)], [0, 0]);
        assert_eq!(m.inflight, 2);
    }
}

/// The recording work of the request path, timed in a loop: what one pipelined batch of 16
/// costs a session with metrics on (read, command lookups, slot counts, completions, flush),
/// plus the backend side (one clock read per socket read, one histogram add per run).
/// `cargo test --release --lib -- --ignored --nocapture recording_cost` prints ns per request;
/// benches/README.md compares it with the proxy's CPU per request.
#[cfg(test)]
mod cost {
    use super::*;

    #[test]
    #[ignore = "a measurement, not a check; run in release mode"]
    fn recording_cost() {
        const BATCH: usize = 16;
        const ROUNDS: usize = 200_000;
        let table = CommandTable::builtin();
        let names: [&[u8]; 2] = [b"SET", b"GET"];
        let raw = Bytes::from_static(b"key:000000012345");
        let backend = crate::metrics::backend_histogram("127.0.0.1:1");
        let mut m = SessionMetrics::new(true, true);
        let started = Instant::now();
        for round in 0..ROUNDS {
            let name = names[round % 2];
            m.read(BATCH * 40);
            let start = m.batch_start();
            let mut ids = [CommandId::UNKNOWN; BATCH];
            for (i, id) in ids.iter_mut().enumerate() {
                *id = m.command(name, &table);
                m.keyed(((round * BATCH + i) % 16384) as u16, || raw.clone());
            }
            m.dispatched();
            let read_at = Instant::now();
            backend.record_n(read_at.duration_since(start), BATCH as u64);
            m.completions();
            for id in ids {
                m.finished(id, start, false);
            }
            m.wrote(BATCH * 5);
            m.flush(0);
        }
        let per_request = started.elapsed().as_nanos() as f64 / (ROUNDS * BATCH) as f64;
        println!("metrics recording: {per_request:.1} ns per request (pipeline depth {BATCH})");
    }
}
