//! Lua script bodies the proxy has seen, so a `NOSCRIPT` reply to `EVALSHA` (the script is not
//! cached on the node: a promoted replica, a new shard after resharding, a restarted node) is
//! answered by loading the script on the cluster's primaries and sending the `EVALSHA` again,
//! instead of reaching the client.
//!
//! Bodies are remembered from `EVAL`/`EVAL_RO` and `SCRIPT LOAD` passing through, in a
//! least-recently-used map bounded both in scripts (`commands.script_cache_entries`) and in
//! bytes (`commands.script_cache_bytes`): bodies are client input of up to 512 MiB each, so a
//! count alone bounds nothing. A body larger than the byte bound is not remembered (its
//! `EVALSHA` then gets `NOSCRIPT` after a failover, as it would without the proxy).
//! `SCRIPT FLUSH` through the proxy empties it, so a flushed script stays flushed as it would
//! on one Redis server.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;

use super::retry::{self, Origin, Retry};
use super::sha1;
use super::Shared;
use crate::backend::{BackendRequest, NodePool, ReplyTo, Tag};
use crate::protocol::{encode, RequestKind, RequestScanner, ScanLimits};
use crate::sync::Mutex;

/// A bounded LRU map from a script's SHA-1 (lower-case hex) to its body.
#[derive(Debug)]
pub struct ScriptCache {
    capacity: usize,
    max_bytes: usize,
    inner: Mutex<Lru>,
}

#[derive(Debug, Default)]
struct Lru {
    /// sha → (body, last use).
    entries: HashMap<String, (Bytes, u64)>,
    /// last use → sha, oldest first.
    by_use: BTreeMap<u64, String>,
    clock: u64,
    /// Bytes of the bodies held.
    bytes: usize,
}

impl Lru {
    fn touch(&mut self, sha: &str) -> Option<Bytes> {
        self.clock += 1;
        let clock = self.clock;
        let (body, used) = self.entries.get_mut(sha)?;
        self.by_use.remove(used);
        *used = clock;
        self.by_use.insert(clock, sha.to_string());
        Some(body.clone())
    }

    /// Drops the least recently used script; false when there is none.
    fn evict_oldest(&mut self) -> bool {
        let Some((_, oldest)) = self.by_use.pop_first() else {
            return false;
        };
        if let Some((body, _)) = self.entries.remove(&oldest) {
            self.bytes -= body.len();
        }
        true
    }
}

impl ScriptCache {
    /// A cache holding at most `capacity` scripts of `max_bytes` in all (either 0: remember
    /// nothing).
    pub fn new(capacity: usize, max_bytes: usize) -> Self {
        Self {
            capacity,
            max_bytes,
            inner: Mutex::new(Lru::default()),
        }
    }

    fn lock(&self) -> crate::sync::MutexGuard<'_, Lru> {
        self.inner.lock()
    }

    /// Remembers a script body under its SHA-1 (a copy: the request's buffer is not kept).
    pub fn remember(&self, body: &[u8]) {
        if self.capacity == 0 || body.len() > self.max_bytes {
            return;
        }
        let sha = sha1::hex(body);
        let mut lru = self.lock();
        if lru.touch(&sha).is_some() {
            return;
        }
        while lru.entries.len() >= self.capacity || lru.bytes + body.len() > self.max_bytes {
            if !lru.evict_oldest() {
                break;
            }
        }
        let clock = lru.clock;
        lru.by_use.insert(clock, sha.clone());
        lru.bytes += body.len();
        lru.entries
            .insert(sha, (Bytes::copy_from_slice(body), clock));
    }

    /// The body of the script named `sha` (any case), marking it recently used.
    pub fn get(&self, sha: &[u8]) -> Option<Bytes> {
        let sha = std::str::from_utf8(sha).ok()?.to_ascii_lowercase();
        self.lock().touch(&sha)
    }

    /// Forgets every script (`SCRIPT FLUSH`).
    pub fn clear(&self) {
        let mut lru = self.lock();
        lru.entries.clear();
        lru.by_use.clear();
        lru.bytes = 0;
    }

    /// Bytes of the script bodies remembered.
    pub fn held_bytes(&self) -> usize {
        self.lock().bytes
    }

    /// Scripts remembered.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// True when no script is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The body for an `EVALSHA`/`EVALSHA_RO` request (raw RESP), if it is one and the script
    /// is known.
    pub fn body_for_evalsha(&self, raw: &[u8], limits: ScanLimits) -> Option<Bytes> {
        let mut scanner = RequestScanner::new(limits);
        let scanned = scanner.scan(raw).ok()??;
        if scanned.kind != RequestKind::MultiBulk {
            return None;
        }
        let args = scanner.args();
        let name = raw.get(args.first()?.clone())?;
        if !(name.eq_ignore_ascii_case(b"evalsha") || name.eq_ignore_ascii_case(b"evalsha_ro")) {
            return None;
        }
        self.get(raw.get(args.get(1)?.clone())?)
    }
}

/// Loads `body` on every primary, then sends the failed `EVALSHA` (`raw`) again by its slot.
/// The reply reaches the session under the request's own tag, like any retry.
pub fn spawn_reload(shared: &Shared, origin: Origin, body: Bytes, raw: Bytes, slot: Option<u16>) {
    let primaries: Vec<Arc<NodePool>> = shared
        .router
        .table()
        .as_ref()
        .map(|t| t.primaries().to_vec())
        .unwrap_or_default();
    let wait = crate::config::ms(shared.config.backend.command_timeout_ms);
    tokio::spawn(async move {
        let mut load = BytesMut::with_capacity(body.len() + 32);
        encode::command(&mut load, &[b"SCRIPT", b"LOAD", &body]);
        let load = load.freeze();
        let (tx, mut rx) = mpsc::unbounded_channel();
        for (i, pool) in primaries.iter().enumerate() {
            let req = BackendRequest {
                raw: load.clone(),
                asking: false,
                durable: false,
                replies: 1,
                reply: ReplyTo {
                    tx: tx.clone(),
                    tag: Tag {
                        seq: 0,
                        part: u32::try_from(i).unwrap_or(u32::MAX),
                    },
                },
            };
            pool.send(req, origin.affinity).await;
        }
        drop(tx);
        // Whatever the loads answered, the retry's own reply tells the client the outcome.
        let _ = tokio::time::timeout(wait, async { while rx.recv().await.is_some() {} }).await;
        retry::spawn(Retry::reroute(origin, raw, slot, 0));
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lru_bounds_and_order() {
        let cache = ScriptCache::new(2, 1 << 20);
        cache.remember(b"return 1");
        cache.remember(b"return 2");
        let one = sha1::hex(b"return 1");
        // Using script 1 makes script 2 the oldest.
        assert_eq!(cache.get(one.as_bytes()).as_deref(), Some(&b"return 1"[..]));
        cache.remember(b"return 3");
        assert_eq!(cache.len(), 2);
        assert!(cache.get(sha1::hex(b"return 2").as_bytes()).is_none());
        assert!(cache.get(one.to_uppercase().as_bytes()).is_some());
        assert!(cache.get(sha1::hex(b"return 3").as_bytes()).is_some());
        cache.remember(b"return 3");
        assert_eq!(cache.len(), 2);
        cache.clear();
        assert!(cache.is_empty());
    }

    #[test]
    fn disabled_cache_remembers_nothing() {
        let cache = ScriptCache::new(0, 1 << 20);
        cache.remember(b"return 1");
        assert!(cache.is_empty());
        let cache = ScriptCache::new(8, 0);
        cache.remember(b"return 1");
        assert!(cache.is_empty());
    }

    /// A body of `len` bytes, distinct per `n`.
    fn body(n: usize, len: usize) -> Vec<u8> {
        let mut b = format!("return {n} --").into_bytes();
        b.resize(len, b'x');
        b
    }

    #[test]
    fn bytes_bound_evicts_least_recently_used() {
        let cache = ScriptCache::new(100, 1000);
        for n in 0..3 {
            cache.remember(&body(n, 300));
        }
        assert_eq!((cache.len(), cache.held_bytes()), (3, 900));
        // Script 0 used again: script 1 is the oldest, and goes to make room.
        assert!(cache.get(sha1::hex(&body(0, 300)).as_bytes()).is_some());
        cache.remember(&body(3, 300));
        assert_eq!((cache.len(), cache.held_bytes()), (3, 900));
        assert!(cache.get(sha1::hex(&body(1, 300)).as_bytes()).is_none());
        assert!(cache.get(sha1::hex(&body(0, 300)).as_bytes()).is_some());
        // One body needing most of the bound pushes out all but what still fits.
        cache.remember(&body(4, 800));
        assert_eq!(cache.len(), 1);
        assert_eq!(cache.held_bytes(), 800);
        for n in 10..100 {
            cache.remember(&body(n, 150));
            assert!(cache.held_bytes() <= 1000, "{}", cache.held_bytes());
        }
        cache.clear();
        assert_eq!((cache.len(), cache.held_bytes()), (0, 0));
    }

    #[test]
    fn oversize_body_is_not_cached_and_evicts_nothing() {
        let cache = ScriptCache::new(100, 1000);
        cache.remember(&body(0, 500));
        cache.remember(&body(1, 1001));
        assert_eq!((cache.len(), cache.held_bytes()), (1, 500));
        assert!(cache.get(sha1::hex(&body(1, 1001)).as_bytes()).is_none());
        cache.remember(&body(2, 1000));
        assert_eq!((cache.len(), cache.held_bytes()), (1, 1000));
    }

    #[test]
    fn evalsha_body_lookup() {
        let cache = ScriptCache::new(4, 1 << 20);
        cache.remember(b"return 1");
        let sha = sha1::hex(b"return 1");
        let mut raw = BytesMut::new();
        encode::command(&mut raw, &[b"EVALSHA", sha.as_bytes(), b"0"]);
        let limits = ScanLimits::default();
        assert_eq!(
            cache.body_for_evalsha(&raw, limits).as_deref(),
            Some(&b"return 1"[..])
        );
        let mut other = BytesMut::new();
        encode::command(&mut other, &[b"EVAL", sha.as_bytes(), b"0"]);
        assert!(cache.body_for_evalsha(&other, limits).is_none());
        assert!(cache.body_for_evalsha(b"*1\r\n", limits).is_none());
    }
}
