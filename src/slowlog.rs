//! The proxy's slow log: commands whose end-to-end time (read to reply) reached a threshold, in a
//! bounded ring, answered to `SLOWLOG GET / LEN / RESET / HELP` in the format Redis uses, so
//! existing tools read it unchanged.

use std::collections::VecDeque;
use std::ops::Range;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};

use crate::protocol::encode;
use crate::sync::Mutex;

/// Arguments kept per entry, as Redis (the last one says how many more there were).
const MAX_ARGS: usize = 32;
/// Bytes kept per argument, as Redis.
const MAX_ARG_BYTES: usize = 128;
/// Entries `SLOWLOG GET` returns without a count, as Redis.
const DEFAULT_GET: usize = 10;

/// One slow command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Increasing id, unique until the process restarts.
    pub id: u64,
    /// When it finished, in seconds since the Unix epoch.
    pub time: u64,
    /// How long it took, in microseconds.
    pub micros: u64,
    /// The command's arguments, shortened as Redis does.
    pub args: Vec<Bytes>,
    /// The client's `ip:port`.
    pub client: String,
}

#[derive(Debug, Default)]
struct Ring {
    next_id: u64,
    entries: VecDeque<Entry>,
}

/// A bounded ring of slow commands.
#[derive(Debug)]
pub struct SlowLog {
    threshold: Option<Duration>,
    max_len: usize,
    ring: Mutex<Ring>,
}

impl SlowLog {
    /// A log keeping `max_len` entries of commands taking at least `threshold_us` microseconds;
    /// a negative threshold disables it.
    pub fn new(threshold_us: i64, max_len: usize) -> Self {
        Self {
            threshold: u64::try_from(threshold_us).ok().map(Duration::from_micros),
            max_len,
            ring: Mutex::new(Ring::default()),
        }
    }

    /// True when a command that took `elapsed` belongs in the log.
    #[inline]
    pub fn is_slow(&self, elapsed: Duration) -> bool {
        self.threshold.is_some_and(|t| elapsed >= t) && self.max_len > 0
    }

    /// Adds the command whose raw request is `raw` with argument ranges `args`.
    ///
    /// What is kept is copied: a slice of `raw` would keep the client's whole read buffer
    /// alive (the request may be megabytes) for as long as the entry stays in the ring.
    pub fn record(&self, raw: &Bytes, args: &[Range<usize>], elapsed: Duration, client: String) {
        let mut kept: Vec<Bytes> = args
            .iter()
            .take(if args.len() > MAX_ARGS {
                MAX_ARGS - 1
            } else {
                MAX_ARGS
            })
            .map(|r| shorten(raw, r.clone()))
            .collect();
        if args.len() > MAX_ARGS {
            let more = args.len() - (MAX_ARGS - 1);
            kept.push(Bytes::from(format!("... ({more} more arguments)")));
        }
        let time = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut ring = self.lock();
        let id = ring.next_id;
        ring.next_id += 1;
        ring.entries.push_front(Entry {
            id,
            time,
            micros: u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
            args: kept,
            client,
        });
        ring.entries.truncate(self.max_len);
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// True when no entry is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes of arguments and client addresses the entries hold (at most about 5 KiB per
    /// entry: 32 arguments of 128 bytes plus their "more bytes" notes).
    pub fn held_bytes(&self) -> usize {
        self.lock()
            .entries
            .iter()
            .map(|e| e.client.len() + e.args.iter().map(Bytes::len).sum::<usize>())
            .sum()
    }

    /// The newest `count` entries, newest first.
    pub fn get(&self, count: usize) -> Vec<Entry> {
        self.lock().entries.iter().take(count).cloned().collect()
    }

    /// Forgets every entry.
    pub fn reset(&self) {
        self.lock().entries.clear();
    }

    /// Answers `SLOWLOG <sub> [args]`; `args[0]` is the subcommand.
    pub fn reply(&self, args: &[&[u8]]) -> Bytes {
        let mut out = BytesMut::new();
        let sub = args.first().map(|s| s.to_ascii_lowercase());
        match (sub.as_deref(), args.len()) {
            (Some(b"get"), 1 | 2) => match parse_count(args.get(1).copied()) {
                Some(count) => encode_entries(&mut out, &self.get(count)),
                None => encode::error(&mut out, "ERR count should be greater than or equal to -1"),
            },
            (Some(b"len"), 1) => encode::integer(&mut out, self.len() as i64),
            (Some(b"reset"), 1) => {
                self.reset();
                encode::simple(&mut out, "OK");
            }
            (Some(b"help"), 1) => {
                let lines = [
                    "SLOWLOG <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                    "GET [<count>]",
                    "    Return top <count> entries from the slowlog (default: 10, -1 mean all).",
                    "LEN",
                    "    Return the length of the slowlog.",
                    "RESET",
                    "    Reset the slowlog.",
                ];
                encode::array_header(&mut out, lines.len());
                for l in lines {
                    encode::simple(&mut out, l);
                }
            }
            _ => {
                let name = args
                    .first()
                    .map(|s| String::from_utf8_lossy(s).into_owned())
                    .unwrap_or_default();
                encode::error(
                    &mut out,
                    &format!(
                        "ERR unknown subcommand or wrong number of arguments for '{}'. Try SLOWLOG HELP.",
                        name.replace(['\r', '\n'], " ")
                    ),
                );
            }
        }
        out.freeze()
    }

    fn lock(&self) -> crate::sync::MutexGuard<'_, Ring> {
        self.ring.lock()
    }
}

/// `SLOWLOG GET`'s count: absent = 10, -1 = all.
fn parse_count(arg: Option<&[u8]>) -> Option<usize> {
    let Some(arg) = arg else {
        return Some(DEFAULT_GET);
    };
    let n: i64 = std::str::from_utf8(arg).ok()?.parse().ok()?;
    match n {
        -1 => Some(usize::MAX),
        n if n >= 0 => usize::try_from(n).ok(),
        _ => None,
    }
}

/// An argument as the slow log keeps it: a copy of at most [`MAX_ARG_BYTES`], never a view
/// into the request.
fn shorten(raw: &[u8], r: Range<usize>) -> Bytes {
    let len = r.len();
    if len <= MAX_ARG_BYTES {
        return Bytes::copy_from_slice(&raw[r]);
    }
    let mut s = raw[r.start..r.start + MAX_ARG_BYTES].to_vec();
    s.extend_from_slice(format!("... ({} more bytes)", len - MAX_ARG_BYTES).as_bytes());
    Bytes::from(s)
}

fn encode_entries(out: &mut BytesMut, entries: &[Entry]) {
    encode::array_header(out, entries.len());
    for e in entries {
        encode::array_header(out, 6);
        encode::integer(out, e.id as i64);
        encode::integer(out, e.time as i64);
        encode::integer(out, e.micros as i64);
        encode::array_header(out, e.args.len());
        for a in &e.args {
            encode::bulk(out, a);
        }
        encode::bulk(out, e.client.as_bytes());
        // Client name: the proxy does not track CLIENT SETNAME.
        encode::bulk(out, b"");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(args: &[&str]) -> (Bytes, Vec<Range<usize>>) {
        let mut raw = Vec::new();
        let mut ranges = Vec::new();
        for a in args {
            let start = raw.len();
            raw.extend_from_slice(a.as_bytes());
            ranges.push(start..raw.len());
        }
        (Bytes::from(raw), ranges)
    }

    fn log(log: &SlowLog, args: &[&str], micros: u64) {
        let (raw, ranges) = request(args);
        log.record(
            &raw,
            &ranges,
            Duration::from_micros(micros),
            "1.2.3.4:5".into(),
        );
    }

    #[test]
    fn threshold_and_ring_bound() {
        let l = SlowLog::new(100, 2);
        assert!(!l.is_slow(Duration::from_micros(99)));
        assert!(l.is_slow(Duration::from_micros(100)));
        for i in 0..3 {
            log(&l, &["GET", &format!("k{i}")], 200);
        }
        let got = l.get(10);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].id, 2);
        assert_eq!(got[0].args[1], Bytes::from_static(b"k2"));
        assert_eq!(got[1].id, 1);
        assert!(!SlowLog::new(-1, 2).is_slow(Duration::from_secs(10)));
        assert!(SlowLog::new(0, 2).is_slow(Duration::ZERO));
    }

    #[test]
    fn long_commands_are_shortened_like_redis() {
        let l = SlowLog::new(0, 4);
        let big = "x".repeat(200);
        let mut args = vec!["MSET"];
        let many: Vec<String> = (0..40).map(|i| format!("a{i}")).collect();
        args.push(&big);
        args.extend(many.iter().map(String::as_str));
        log(&l, &args, 1);
        let e = &l.get(1)[0];
        assert_eq!(e.args.len(), MAX_ARGS);
        assert_eq!(e.args[1].len(), 128 + "... (72 more bytes)".len());
        assert_eq!(e.args[31], Bytes::from_static(b"... (11 more arguments)"));
    }

    #[test]
    fn entries_do_not_share_the_request_buffer() {
        let l = SlowLog::new(0, 4);
        let big = "b".repeat(4096);
        let (raw, ranges) = request(&["EVAL", &big, "0", "k"]);
        l.record(&raw, &ranges, Duration::from_micros(1), "c:1".into());
        let whole = raw.as_ptr_range();
        let e = &l.get(1)[0];
        assert_eq!(e.args.len(), 4);
        for a in &e.args {
            let kept = a.as_ptr_range();
            assert!(
                kept.end <= whole.start || kept.start >= whole.end,
                "{:?} points into the request",
                String::from_utf8_lossy(&a[..a.len().min(16)])
            );
        }
        // The request is the only owner of its buffer again.
        assert!(raw.is_unique());
        let held = l.held_bytes();
        assert!(held < 400, "{held} bytes held for one entry");
        l.reset();
        assert_eq!(l.held_bytes(), 0);
    }

    #[test]
    fn replies_match_the_redis_format() {
        let l = SlowLog::new(0, 4);
        log(&l, &["SET", "a", "b"], 42);
        assert_eq!(&l.reply(&[b"len"])[..], b":1\r\n");
        let got = l.reply(&[b"GET", b"1"]);
        let text = String::from_utf8_lossy(&got);
        assert!(text.starts_with("*1\r\n*6\r\n:0\r\n:"), "{text:?}");
        assert!(
            text.ends_with(
                ":42\r\n*3\r\n$3\r\nSET\r\n$1\r\na\r\n$1\r\nb\r\n$9\r\n1.2.3.4:5\r\n$0\r\n\r\n"
            ),
            "{text:?}"
        );
        assert_eq!(&l.reply(&[b"get", b"-2"])[..1], b"-");
        assert_eq!(&l.reply(&[b"reset"])[..], b"+OK\r\n");
        assert_eq!(&l.reply(&[b"len"])[..], b":0\r\n");
        assert_eq!(&l.reply(&[b"nope"])[..1], b"-");
        assert_eq!(&l.reply(&[b"help"])[..1], b"*");
    }
}
