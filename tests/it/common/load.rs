//! A load generator for fault tests and the failover benchmark: client threads writing (and
//! reading back) unique keys through the proxy until stopped, recording every acknowledged
//! write, every error with its time, and the timing of every request.
//!
//! Each client sends one request at a time, so at most one request per client is in flight:
//! "errors only for writes in flight at a kill" means at most one error per client.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use slotway::cluster::slot::key_slot;

/// What the clients do.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Client threads, one connection each.
    pub clients: usize,
    /// The load stops by itself after this long.
    pub max_duration: Duration,
    /// Key prefix; keys are `<prefix>:<client>:<n>`.
    pub prefix: String,
    /// `GET` each key right after its `SET` acknowledged and check the value.
    pub read_back: bool,
    /// Read timeout of each client connection (a request slower than this is an error).
    pub request_timeout: Duration,
    /// Put keys only in these slots (round robin, through hash tags); empty = anywhere.
    pub slots: Vec<u16>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            clients: 16,
            max_duration: Duration::from_secs(60),
            prefix: "load".into(),
            read_back: true,
            request_timeout: Duration::from_secs(15),
            slots: Vec::new(),
        }
    }
}

/// One failed request.
#[derive(Debug, Clone)]
pub struct OpError {
    /// Which client.
    pub client: usize,
    /// `SET` or `GET`.
    pub op: &'static str,
    /// The key.
    // Read only through `Debug`, in the failure summaries the tests print.
    #[allow(dead_code)]
    pub key: String,
    /// When the request was sent.
    pub sent: Instant,
    /// When the error arrived.
    pub at: Instant,
    /// The error code (`ERR`, `CLUSTERDOWN` …), or `io` for connection trouble.
    pub kind: String,
    /// The full error text.
    pub message: String,
}

/// The timing and outcome of one request.
#[derive(Debug, Clone, Copy)]
pub struct OpRecord {
    /// Which client.
    pub client: usize,
    /// The key's slot.
    pub slot: u16,
    /// When it was sent.
    pub start: Instant,
    /// When its reply (or error) arrived.
    pub end: Instant,
    /// True for a correct reply.
    pub ok: bool,
}

/// Everything the clients saw.
#[derive(Debug, Default)]
pub struct LoadReport {
    /// key → value of every acknowledged `SET`.
    pub acked: HashMap<String, String>,
    /// Every error.
    pub errors: Vec<OpError>,
    /// Every request, per client in order.
    pub ops: Vec<OpRecord>,
    /// `GET`s that returned something other than the value just written.
    pub mismatches: Vec<String>,
}

impl LoadReport {
    /// Requests answered correctly.
    pub fn successes(&self) -> usize {
        self.ops.iter().filter(|o| o.ok).count()
    }

    /// Errors counted by kind.
    pub fn errors_by_kind(&self) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for e in &self.errors {
            *out.entry(e.kind.clone()).or_insert(0) += 1;
        }
        out
    }

    /// The longest time any client went without a successful reply while it was sending.
    pub fn longest_stall(&self) -> Duration {
        let mut longest = Duration::ZERO;
        let mut last_ok: HashMap<usize, Instant> = HashMap::new();
        for op in &self.ops {
            let since = *last_ok.entry(op.client).or_insert(op.start);
            if op.ok {
                longest = longest.max(op.end.saturating_duration_since(since));
                last_ok.insert(op.client, op.end);
            }
        }
        longest
    }

    /// The first successful reply on one of `slots` (sorted) that arrived at or after `after`, whenever
    /// the request was sent (a request held through a failover counts when it is answered).
    pub fn first_answer_after(&self, after: Instant, slots: &[u16]) -> Option<Instant> {
        self.ops
            .iter()
            .filter(|o| o.ok && o.end >= after && slots.binary_search(&o.slot).is_ok())
            .map(|o| o.end)
            .min()
    }

    /// Reads every acknowledged key back through `addr` (pipelined) and returns those whose
    /// value is not the acknowledged one.
    pub fn lost_writes(&self, addr: SocketAddr) -> Vec<String> {
        let mut con = connect(addr, Duration::from_secs(30)).expect("connect for read-back");
        let keys: Vec<&String> = self.acked.keys().collect();
        let mut lost = Vec::new();
        for chunk in keys.chunks(500) {
            let mut pipe = redis::pipe();
            for k in chunk {
                pipe.get(*k);
            }
            let values: Vec<Option<String>> = pipe.query(&mut con).expect("read-back pipeline");
            for (k, v) in chunk.iter().zip(values) {
                if v.as_deref() != Some(self.acked[*k].as_str()) {
                    lost.push((*k).clone());
                }
            }
        }
        lost
    }
}

/// A running load; stop it to get the report.
pub struct Load {
    stop: Arc<AtomicBool>,
    successes: Arc<AtomicU64>,
    threads: Vec<JoinHandle<ClientLog>>,
}

#[derive(Default)]
struct ClientLog {
    acked: Vec<(String, String)>,
    errors: Vec<OpError>,
    ops: Vec<OpRecord>,
    mismatches: Vec<String>,
}

impl Load {
    /// Starts `opts.clients` client threads against the proxy at `addr`.
    pub fn start(addr: SocketAddr, opts: LoadOptions) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let successes = Arc::new(AtomicU64::new(0));
        let threads = (0..opts.clients)
            .map(|client| {
                let (stop, successes, opts) = (stop.clone(), successes.clone(), opts.clone());
                std::thread::spawn(move || run_client(client, addr, &opts, &stop, &successes))
            })
            .collect();
        Self {
            stop,
            successes,
            threads,
        }
    }

    /// Successful requests so far.
    pub fn successes(&self) -> u64 {
        self.successes.load(Ordering::Relaxed)
    }

    /// Waits until `more` requests have succeeded beyond the count now; false on timeout.
    pub fn wait_progress(&self, more: u64, timeout: Duration) -> bool {
        let target = self.successes() + more;
        let end = Instant::now() + timeout;
        while self.successes() < target {
            if Instant::now() >= end {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        true
    }

    /// Stops the clients (each finishes its current request) and collects what they saw.
    pub fn stop(self) -> LoadReport {
        self.stop.store(true, Ordering::Relaxed);
        let mut report = LoadReport::default();
        for t in self.threads {
            let log = t.join().expect("load client thread");
            report.acked.extend(log.acked);
            report.errors.extend(log.errors);
            report.ops.extend(log.ops);
            report.mismatches.extend(log.mismatches);
        }
        report.errors.sort_by_key(|e| e.at);
        report
    }
}

/// A short string whose slot is `slot`, to use as a hash tag.
pub fn tag_for_slot(slot: u16) -> &'static str {
    static TAGS: OnceLock<Vec<String>> = OnceLock::new();
    let tags = TAGS.get_or_init(|| {
        let mut tags = vec![String::new(); 16384];
        let mut missing = tags.len();
        let mut i = 0u64;
        while missing > 0 {
            let candidate = format!("t{i}");
            let s = usize::from(key_slot(candidate.as_bytes()));
            if tags[s].is_empty() {
                tags[s] = candidate;
                missing -= 1;
            }
            i += 1;
        }
        tags
    });
    &tags[usize::from(slot)]
}

fn connect(addr: SocketAddr, timeout: Duration) -> redis::RedisResult<redis::Connection> {
    let con = redis::Client::open(format!("redis://{addr}/"))?
        .get_connection_with_timeout(Duration::from_secs(5))?;
    con.set_read_timeout(Some(timeout))?;
    con.set_write_timeout(Some(timeout))?;
    Ok(con)
}

fn run_client(
    client: usize,
    addr: SocketAddr,
    opts: &LoadOptions,
    stop: &AtomicBool,
    successes: &AtomicU64,
) -> ClientLog {
    let mut log = ClientLog::default();
    let end = Instant::now() + opts.max_duration;
    let mut con: Option<redis::Connection> = None;
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) && Instant::now() < end {
        let c = match con.as_mut() {
            Some(c) => c,
            None => match connect(addr, opts.request_timeout) {
                Ok(c) => con.insert(c),
                Err(_) => {
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
            },
        };
        let key = match opts.slots.len() {
            0 => format!("{}:{client}:{n}", opts.prefix),
            len => {
                let slot = opts.slots[(n as usize + client) % len];
                format!("{{{}}}:{}:{client}:{n}", tag_for_slot(slot), opts.prefix)
            }
        };
        let value = format!("v{n}-{}", fastrand::u32(..));
        n += 1;
        let slot = key_slot(key.as_bytes());
        let record = |log: &mut ClientLog, op, start, res: Result<(), redis::RedisError>| {
            let at = Instant::now();
            let ok = res.is_ok();
            log.ops.push(OpRecord {
                client,
                slot,
                start,
                end: at,
                ok,
            });
            if let Err(e) = res {
                let kind = if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() {
                    "io".to_string()
                } else {
                    e.code().unwrap_or("other").to_string()
                };
                log.errors.push(OpError {
                    client,
                    op,
                    key: key.clone(),
                    sent: start,
                    at,
                    kind,
                    message: e.to_string(),
                });
                return false;
            }
            successes.fetch_add(1, Ordering::Relaxed);
            true
        };
        let start = Instant::now();
        let set: redis::RedisResult<()> = redis::cmd("SET").arg(&key).arg(&value).query(c);
        let io_failed = set
            .as_ref()
            .is_err_and(|e| e.is_io_error() || e.is_timeout());
        if !record(&mut log, "SET", start, set) {
            if io_failed {
                con = None;
            }
            continue;
        }
        log.acked.push((key.clone(), value.clone()));
        if !opts.read_back {
            continue;
        }
        let start = Instant::now();
        let get: redis::RedisResult<Option<String>> = redis::cmd("GET").arg(&key).query(c);
        let io_failed = get
            .as_ref()
            .is_err_and(|e| e.is_io_error() || e.is_timeout());
        let get = get.map(|v| {
            if v.as_deref() != Some(value.as_str()) {
                log.mismatches
                    .push(format!("{key}: wrote {value}, read {v:?}"));
            }
        });
        if !record(&mut log, "GET", start, get) && io_failed {
            con = None;
        }
    }
    log
}
