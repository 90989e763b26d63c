//! One client session's metric accumulators: plain integers and a run-length buffer, flushed
//! into this thread's [`shard`] once per turn of the session loop, so a pipelined batch of N
//! requests costs a handful of atomic operations instead of several per request.
//!
//! A request is counted when its reply is queued for the client, with the outcome read from
//! the reply's first byte. Time is read once per read batch (the start of every request in it)
//! and at most once more per turn of the session loop (the end of every reply queued in it),
//! never per request.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::commands::{CommandId, CommandIndex};
use super::global::global;
use super::shard;
use super::slots;
use crate::hotkeys::{self, Sampler, Samples};

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

/// A request waiting in the session's reply queue at sequence number `seq`.
#[derive(Debug, Clone, Copy)]
struct Tracked {
    seq: u64,
    id: CommandId,
    start: Instant,
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
    /// The clock of this turn of the session loop, read when first needed.
    turn_now: Option<Instant>,
    /// Requests in the reply queue, by increasing sequence number.
    tracked: VecDeque<Tracked>,
    /// Requests answered by the proxy in this read batch, timed when the batch is dispatched.
    answered: Vec<(CommandId, bool)>,
    sampler: Sampler,
    sampled: Samples,
    bytes_in: u64,
    bytes_out: u64,
    inflight: usize,
}

impl SessionMetrics {
    /// Accumulators for a new client; `enabled` false records nothing per request.
    pub fn new(enabled: bool, hot_keys: bool) -> Self {
        let g = global();
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
            turn_now: None,
            tracked: VecDeque::new(),
            answered: Vec::new(),
            sampler: Sampler::default(),
            sampled: Samples::default(),
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
            let now = Instant::now();
            self.batch_start = now;
            self.turn_now = Some(now);
        }
    }

    /// `n` bytes were written to the client.
    #[inline]
    pub fn wrote(&mut self, n: usize) {
        if self.enabled {
            self.bytes_out += n as u64;
        }
    }

    /// The clock of this turn (one read per turn).
    #[inline]
    fn now(&mut self) -> Instant {
        *self.turn_now.get_or_insert_with(Instant::now)
    }

    /// The id of the command named `name` (as the client typed it); `canonical` gives the
    /// command table's name for it, asked only the first time the session meets the name.
    #[inline]
    pub fn command(
        &mut self,
        name: &[u8],
        canonical: impl FnOnce(&[u8]) -> Option<String>,
    ) -> CommandId {
        if !self.enabled {
            return CommandId::UNKNOWN;
        }
        if name.len() == self.last_len && self.last_name[..name.len()] == *name {
            return self.last_id;
        }
        let id = match self.index.lookup(name) {
            Some(id) => id,
            None => {
                let canonical = canonical(name);
                let (id, index) = global().commands.register(name, canonical.as_deref());
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

    /// A request for `slot` whose first key is `key`: counts the slot, samples the key (a
    /// copy: the request's buffer is not kept).
    #[inline]
    pub fn keyed(&mut self, slot: u16, key: &[u8]) {
        if !self.enabled {
            return;
        }
        slots::count_slot(slot);
        if self.hot_keys && self.sampler.sample() {
            self.sampled.push(key);
        }
    }

    /// A request was dispatched: sequence numbers `first_seq..after_seq` of the reply queue
    /// were taken by it (its reply is counted in [`SessionMetrics::replied`]); when none was,
    /// it was answered at once and `answer` is the first byte of what was written, if any.
    #[inline]
    pub fn dispatched_one(
        &mut self,
        id: CommandId,
        first_seq: u64,
        after_seq: u64,
        answer: Option<u8>,
    ) {
        if !self.enabled {
            return;
        }
        if after_seq > first_seq {
            self.tracked.push_back(Tracked {
                seq: first_seq,
                id,
                start: self.batch_start,
            });
        } else {
            self.answered.push((id, answer == Some(b'-')));
        }
    }

    /// When the request at `seq` of the reply queue was read, if it is tracked.
    #[inline]
    pub fn started(&self, seq: u64) -> Option<Instant> {
        let front = self.tracked.front()?.seq;
        let guess = usize::try_from(seq.checked_sub(front)?).ok()?;
        match self.tracked.get(guess) {
            Some(t) if t.seq == seq => Some(t.start),
            _ => {
                let at = self.tracked.binary_search_by_key(&seq, |t| t.seq).ok()?;
                Some(self.tracked[at].start)
            }
        }
    }

    /// How long the request at `seq` has taken so far (for the slow log).
    #[inline]
    pub fn elapsed(&mut self, seq: u64) -> Option<Duration> {
        let start = self.started(seq)?;
        Some(self.now().saturating_duration_since(start))
    }

    /// The reply at `seq` of the reply queue, starting with `first`, is queued for the client.
    #[inline]
    pub fn replied(&mut self, seq: u64, first: Option<u8>) {
        if !self.enabled {
            return;
        }
        while let Some(t) = self.tracked.front().copied() {
            if t.seq > seq {
                return;
            }
            self.tracked.pop_front();
            if t.seq == seq {
                let end = self.now();
                self.count(t.id, t.start, end, first == Some(b'-'));
                return;
            }
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
        self.turn_now = None;
        if !self.enabled {
            return;
        }
        if let Some(r) = self.run.take() {
            self.record_run(r);
        }
        shard::with(|s| {
            s.bytes(
                std::mem::take(&mut self.bytes_in),
                std::mem::take(&mut self.bytes_out),
            );
            if inflight != self.inflight {
                s.inflight_change(inflight as i64 - self.inflight as i64);
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
    }
}

/// Client connections currently open (INFO's `connected_clients`; the gauge is write-only).
static OPEN: AtomicUsize = AtomicUsize::new(0);

/// Client connections open now, as counted by [`Connected`].
pub fn open_connections() -> usize {
    OPEN.load(Ordering::Relaxed)
}

/// Counts one client connection (accepted total, open gauge, [`open_connections`]) from accept
/// to close; apart from [`SessionMetrics`], which a connection only has while it sends requests.
#[derive(Debug)]
pub struct Connected(());

impl Connected {
    /// Counts a newly accepted client.
    pub fn new() -> Self {
        let g = global();
        g.accepted.increment(1);
        g.client_connections.increment(1.0);
        OPEN.fetch_add(1, Ordering::Relaxed);
        Self(())
    }
}

impl Default for Connected {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Connected {
    fn drop(&mut self) {
        global().client_connections.decrement(1.0);
        OPEN.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::CommandTable;

    fn canonical(table: &CommandTable) -> impl Fn(&[u8]) -> Option<String> + '_ {
        |name| table.lookup(name).map(|spec| spec.name.clone())
    }

    #[test]
    fn disabled_sessions_record_nothing() {
        let table = CommandTable::builtin();
        let mut m = SessionMetrics::new(false, true);
        assert_eq!(m.command(b"GET", canonical(&table)), CommandId::UNKNOWN);
        m.dispatched_one(CommandId::UNKNOWN, 0, 1, None);
        m.replied(0, Some(b'+'));
        assert!(m.tracked.is_empty() && m.dirty.is_empty());
    }

    #[test]
    fn replies_are_counted_by_sequence_number() {
        let table = CommandTable::builtin();
        let mut m = SessionMetrics::new(true, false);
        let get = m.command(b"get", canonical(&table));
        assert_ne!(get, CommandId::UNKNOWN);
        assert_eq!(m.command(b"GET", canonical(&table)), get);
        assert_eq!(m.command(b"NOSUCH", canonical(&table)), CommandId::UNKNOWN);
        m.read(10);
        // Three queued requests, one answered at once with an error.
        for seq in 0..3 {
            m.dispatched_one(get, seq, seq + 1, None);
        }
        m.dispatched_one(get, 3, 3, Some(b'-'));
        m.dispatched();
        assert_eq!(m.counts[usize::from(get.0)], [0, 1]);
        assert!(m.started(1).is_some());
        assert!(m.elapsed(2).is_some());
        assert!(m.started(7).is_none());
        m.flush(3);
        assert_eq!(m.inflight, 3);
        m.replied(0, Some(b'$'));
        // seq 1 never replied in order (e.g. a subscription): skipped when seq 2 comes.
        m.replied(2, Some(b'-'));
        assert_eq!(m.counts[usize::from(get.0)], [1, 1]);
        assert!(m.tracked.is_empty());
        m.flush(0);
        assert!(m.dirty.is_empty());
        assert_eq!(m.counts[usize::from(get.0)], [0, 0]);
    }

    #[test]
    fn sampled_keys_do_not_keep_the_request() {
        let mut m = SessionMetrics::new(true, true);
        let request = bytes::Bytes::from(format!(
            "*2\r\n$3\r\nGET\r\n$600\r\n{}\r\n",
            "k".repeat(600)
        ));
        let key = &request[17..617];
        // Sampling is random (about one in 32): offer until one is kept.
        for _ in 0..100_000 {
            m.keyed(7, key);
            if !m.sampled.is_empty() {
                break;
            }
        }
        let kept: Vec<&[u8]> = m.sampled.keys().collect();
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0], &key[..hotkeys::MAX_KEY_BYTES]);
        let (ours, theirs) = (m.sampled.buffer().as_ptr_range(), request.as_ptr_range());
        assert!(ours.end <= theirs.start || ours.start >= theirs.end);
        assert!(request.is_unique());
        m.flush(0);
        assert!(m.sampled.is_empty());
    }
}

/// The recording work of the request path, timed in a loop: what one pipelined batch of 16
/// costs a session with metrics on (read, command lookups, slot counts, replies, flushes),
/// plus the backend side (one clock read per socket read, one histogram add per run).
/// `cargo test --release --lib -- --ignored --nocapture recording_cost` prints ns per request;
/// benches/README.md compares it with the proxy's CPU per request.
#[cfg(test)]
mod cost {
    use super::*;
    use crate::command::CommandTable;

    #[test]
    #[ignore = "a measurement, not a check; run in release mode"]
    fn recording_cost() {
        const BATCH: u64 = 16;
        const ROUNDS: u64 = 200_000;
        let table = CommandTable::builtin();
        let canonical = |name: &[u8]| table.lookup(name).map(|spec| spec.name.clone());
        let names: [&[u8]; 2] = [b"SET", b"GET"];
        let raw: &[u8] = b"key:000000012345";
        let backend = crate::metrics::backend_histogram("127.0.0.1:1");
        let mut m = SessionMetrics::new(true, true);
        let mut seq = 0;
        let started = Instant::now();
        for round in 0..ROUNDS {
            let name = names[(round % 2) as usize];
            // Read turn: every request dispatched.
            m.read(BATCH as usize * 40);
            let start = m.batch_start;
            for i in 0..BATCH {
                let id = m.command(name, canonical);
                m.keyed(((round * BATCH + i) % 16384) as u16, raw);
                m.dispatched_one(id, seq + i, seq + i + 1, None);
            }
            m.dispatched();
            m.flush(BATCH as usize);
            // Backend reader: one clock read per socket read.
            backend.record_n(Instant::now().duration_since(start), BATCH);
            // Completion turn: every reply queued, written, flushed.
            for i in 0..BATCH {
                m.replied(seq + i, Some(b'+'));
            }
            seq += BATCH;
            m.wrote(BATCH as usize * 5);
            m.flush(0);
        }
        let per_request = started.elapsed().as_nanos() as f64 / (ROUNDS * BATCH) as f64;
        println!("metrics recording: {per_request:.1} ns per request (pipeline depth {BATCH})");
    }
}
