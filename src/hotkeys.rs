//! The hottest keys: a space-saving sketch (Metwally et al.) of bounded size, fed with a random
//! sample of keyed requests, plus the process-wide instance the sessions feed.
//!
//! The sketch keeps `capacity` counters. A key already counted gets its weight added; a new key
//! takes over a small counter and inherits its count as a possible overestimate (`error`).
//! With a capacity several times the reported K, keys well above the rest are reliably kept. Counts are halved every
//! [`DECAY_PERIOD`] so the report follows what is hot now rather than since start.
//!
//! Sessions sample about one keyed request in [`SAMPLE_RATE`] (a random skip, so periodic
//! request patterns cannot alias with the sample) and offer each sampled key with weight
//! `SAMPLE_RATE`, so the counts estimate real requests; the lock is taken once per read batch.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Duration;

use tokio::time::Instant;

use crate::sync::Mutex;

/// Largest K a config may ask for (`metrics.hot_keys`).
pub const MAX_K: usize = 100;
/// Counters the shared sketch keeps: several times the largest K, so the top K are reliable.
pub const CAPACITY: usize = 4 * MAX_K;
/// About one keyed request in this many is offered to the sketch.
pub const SAMPLE_RATE: u32 = 32;
/// Counts halve this often.
pub const DECAY_PERIOD: Duration = Duration::from_secs(60);
/// Longer keys are counted by their first this-many bytes.
pub const MAX_KEY_BYTES: usize = 256;

/// One counted key.
#[derive(Debug, Clone)]
struct Counter {
    key: Vec<u8>,
    hash: u64,
    count: u64,
    error: u64,
}

/// A space-saving top-K sketch.
///
/// Two changes from the textbook version keep a sampled miss cheap: counters are found by a
/// 64-bit hash of the key (the key is compared to rule out a collision, whose sample is then
/// dropped), and the counter given up for a new key is the smallest of [`EVICTION_SAMPLES`]
/// random ones rather than the global minimum. A key far above the rest is practically never
/// the smallest of a random handful, so the top of the report is unaffected; counts stay upper
/// bounds with `error` the most they may be over.
#[derive(Debug)]
pub struct SpaceSaving {
    capacity: usize,
    counters: Vec<Counter>,
    index: HashMap<u64, usize>,
}

/// Counters looked at to choose one to give up for a new key.
const EVICTION_SAMPLES: usize = 8;

/// A key in a top-K report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HotKey {
    /// The key (truncated to 256 bytes).
    pub key: Vec<u8>,
    /// Estimated requests (an upper bound).
    pub count: u64,
    /// How much of `count` may be overestimate.
    pub error: u64,
}

impl SpaceSaving {
    /// An empty sketch of `capacity` counters (at least 1).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            counters: Vec::new(),
            index: HashMap::new(),
        }
    }

    /// Counts `weight` requests of `key`.
    pub fn offer(&mut self, key: &[u8], weight: u64) {
        let key = &key[..key.len().min(MAX_KEY_BYTES)];
        let hash = fnv1a(key);
        if let Some(&at) = self.index.get(&hash) {
            let c = &mut self.counters[at];
            if c.key == key {
                c.count += weight;
            }
            return;
        }
        if self.counters.len() < self.capacity {
            self.index.insert(hash, self.counters.len());
            self.counters.push(Counter {
                key: key.to_vec(),
                hash,
                count: weight,
                error: 0,
            });
            return;
        }
        let n = self.counters.len();
        let mut at = fastrand::usize(..n);
        for _ in 1..EVICTION_SAMPLES {
            let other = fastrand::usize(..n);
            if self.counters[other].count < self.counters[at].count {
                at = other;
            }
        }
        let victim = &mut self.counters[at];
        self.index.remove(&victim.hash);
        victim.key.clear();
        victim.key.extend_from_slice(key);
        victim.hash = hash;
        victim.error = victim.count;
        victim.count += weight;
        self.index.insert(hash, at);
    }

    /// The `k` keys with the highest counts, highest first.
    pub fn top(&self, k: usize) -> Vec<HotKey> {
        let mut all: Vec<&Counter> = self.counters.iter().collect();
        all.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.key.cmp(&b.key)));
        all.into_iter()
            .take(k)
            .map(|c| HotKey {
                key: c.key.clone(),
                count: c.count,
                error: c.error,
            })
            .collect()
    }

    /// Halves every count, forgetting keys that reach zero.
    pub fn decay(&mut self) {
        for c in &mut self.counters {
            c.count /= 2;
            c.error /= 2;
        }
        self.counters.retain(|c| c.count > 0);
        self.index = self
            .counters
            .iter()
            .enumerate()
            .map(|(i, c)| (c.hash, i))
            .collect();
    }

    /// Keys counted (the tests' view of the sketch's size).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.counters.len()
    }
}

/// FNV-1a: stable across processes and releases, unlike std's randomised SipHash. Keys come
/// from clients, but a crafted collision only drops that key's samples.
fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The process-wide sketch with its decay clock.
struct Shared {
    sketch: SpaceSaving,
    decayed_at: Instant,
}

impl Shared {
    fn decay_if_due(&mut self, now: Instant) {
        while now.duration_since(self.decayed_at) >= DECAY_PERIOD {
            self.sketch.decay();
            self.decayed_at += DECAY_PERIOD;
        }
    }
}

fn shared() -> &'static Mutex<Shared> {
    static SKETCH: OnceLock<Mutex<Shared>> = OnceLock::new();
    SKETCH.get_or_init(|| {
        Mutex::new(Shared {
            sketch: SpaceSaving::new(CAPACITY),
            decayed_at: Instant::now(),
        })
    })
}

/// One session's sampled keys until its next flush, copied (at most [`MAX_KEY_BYTES`] each)
/// into one buffer reused from batch to batch: a view into the request would keep the
/// client's whole read buffer alive, and a copy per key would allocate on the request path.
#[derive(Debug, Default)]
pub struct Samples {
    bytes: Vec<u8>,
    /// Where each key ends in `bytes`.
    ends: Vec<usize>,
}

impl Samples {
    /// Keeps (the counted prefix of) `key`.
    pub fn push(&mut self, key: &[u8]) {
        self.bytes
            .extend_from_slice(&key[..key.len().min(MAX_KEY_BYTES)]);
        self.ends.push(self.bytes.len());
    }

    /// True when nothing was sampled since the last clear.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Forgets the keys, keeping the buffers.
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.ends.clear();
    }

    /// The keys, in sampling order.
    pub fn keys(&self) -> impl Iterator<Item = &[u8]> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts
            .zip(self.ends.iter().copied())
            .map(|(a, b)| &self.bytes[a..b])
    }

    /// The buffer the keys are copied into, to check it is the samples' own.
    #[cfg(test)]
    pub fn buffer(&self) -> &[u8] {
        &self.bytes
    }
}

/// Offers a batch of sampled keys to the process-wide sketch (one lock for the batch).
pub fn offer_sampled(keys: &Samples) {
    if keys.is_empty() {
        return;
    }
    let mut s = shared().lock();
    s.decay_if_due(Instant::now());
    for k in keys.keys() {
        s.sketch.offer(k, u64::from(SAMPLE_RATE));
    }
}

/// The `k` hottest keys of the process-wide sketch.
pub fn top(k: usize) -> Vec<HotKey> {
    let mut s = shared().lock();
    s.decay_if_due(Instant::now());
    s.sketch.top(k)
}

/// Picks which keyed requests of one session are sampled.
#[derive(Debug)]
pub struct Sampler {
    countdown: u32,
}

impl Default for Sampler {
    fn default() -> Self {
        Self {
            countdown: next_skip(),
        }
    }
}

impl Sampler {
    /// True for about one call in [`SAMPLE_RATE`].
    #[inline]
    pub fn sample(&mut self) -> bool {
        self.countdown -= 1;
        if self.countdown > 0 {
            return false;
        }
        self.countdown = next_skip();
        true
    }
}

/// A random skip with mean `SAMPLE_RATE`.
fn next_skip() -> u32 {
    fastrand::u32(1..2 * SAMPLE_RATE)
}

/// How a key is shown in a label: printable ASCII as it is, anything else escaped as `\xNN`,
/// or `h:` and 16 hex digits of a hash when names must not be exposed.
pub fn display_key(key: &[u8], hashed: bool) -> String {
    if hashed {
        return format!("h:{:016x}", fnv1a(key));
    }
    let mut out = String::with_capacity(key.len());
    for &b in key {
        if b.is_ascii_graphic() || b == b' ' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heavy_hitters_survive_a_stream_of_singletons() {
        let mut s = SpaceSaving::new(32);
        for i in 0..10_000u32 {
            s.offer(format!("cold{i}").as_bytes(), 1);
            if i % 10 == 0 {
                s.offer(b"hot", 1);
            }
            if i % 20 == 0 {
                s.offer(b"warm", 1);
            }
        }
        let top = s.top(2);
        assert_eq!(top[0].key, b"hot");
        assert_eq!(top[1].key, b"warm");
        assert!(top[0].count >= 1000, "{top:?}");
        assert!(top[0].count - top[0].error <= 1000);
        assert_eq!(s.len(), 32);
    }

    #[test]
    fn counts_are_exact_below_capacity() {
        let mut s = SpaceSaving::new(8);
        s.offer(b"a", 3);
        s.offer(b"b", 1);
        s.offer(b"a", 2);
        assert_eq!(
            s.top(5),
            vec![
                HotKey {
                    key: b"a".to_vec(),
                    count: 5,
                    error: 0
                },
                HotKey {
                    key: b"b".to_vec(),
                    count: 1,
                    error: 0
                }
            ]
        );
    }

    #[test]
    fn decay_halves_and_forgets() {
        let mut s = SpaceSaving::new(8);
        s.offer(b"a", 4);
        s.offer(b"b", 1);
        s.decay();
        assert_eq!(s.top(5).len(), 1);
        assert_eq!(s.top(5)[0].count, 2);
        s.offer(b"a", 1);
        assert_eq!(s.top(1)[0].count, 3);
    }

    #[test]
    fn long_keys_are_truncated_consistently() {
        let mut s = SpaceSaving::new(4);
        let long = vec![b'x'; 1000];
        s.offer(&long, 1);
        s.offer(&long, 1);
        assert_eq!(s.top(1)[0].count, 2);
        assert_eq!(s.top(1)[0].key.len(), MAX_KEY_BYTES);
    }

    #[test]
    fn samples_are_copied_and_capped() {
        let mut samples = Samples::default();
        let request = bytes::Bytes::from(vec![b'k'; 4096]);
        samples.push(&request[..10]);
        samples.push(&request);
        samples.push(b"");
        let keys: Vec<&[u8]> = samples.keys().collect();
        assert_eq!(keys.len(), 3);
        assert_eq!(keys[0], &request[..10]);
        assert_eq!(keys[1].len(), MAX_KEY_BYTES);
        assert!(keys[2].is_empty());
        let (kept, whole) = (samples.buffer().as_ptr_range(), request.as_ptr_range());
        assert!(kept.end <= whole.start || kept.start >= whole.end);
        assert!(request.is_unique());
        samples.clear();
        assert!(samples.is_empty() && samples.keys().next().is_none());
    }

    #[test]
    fn sampler_rate_is_about_one_in_sample_rate() {
        let mut sampler = Sampler::default();
        let hits = (0..160_000).filter(|_| sampler.sample()).count();
        let expected = 160_000 / SAMPLE_RATE as usize;
        assert!(
            hits > expected * 9 / 10 && hits < expected * 11 / 10,
            "{hits}"
        );
    }

    #[test]
    fn key_display() {
        assert_eq!(display_key(b"user:1", false), "user:1");
        assert_eq!(display_key(b"a\n\"", false), "a\\x0a\"");
        let h = display_key(b"user:1", true);
        assert!(h.starts_with("h:") && h.len() == 18, "{h}");
        assert_eq!(h, display_key(b"user:1", true));
    }
}
