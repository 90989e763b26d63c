//! Failover benchmark: a 9-node cluster (cluster-node-timeout 2000 ms) behind an in-process
//! slotway, 16 clients writing and reading back unique keys, and the primary of slot 0
//! SIGKILLed. Replicas are polled with `ROLE` to timestamp the promotion; the figures are what
//! the proxy adds on top of Redis' own failover.
//!
//! ```sh
//! cargo bench --bench failover                  # 3 runs, default settings
//! cargo bench --bench failover -- --runs 5 --durable
//! ```
//! Under `cargo test --benches` it only checks that it starts (no cluster is started).

// Test and benchmark code times itself with std::time::Instant and shares state through
// std::sync::Mutex outside any runtime; the one-clock and non-poisoning rules of clippy.toml are
// for the proxy's own code.
#![allow(clippy::disallowed_types)]

// The integration-test harness (tests/it/common), of which a benchmark uses only part.
#[allow(dead_code)]
#[path = "../tests/it/common/mod.rs"]
mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::cluster::TestCluster;
use common::load::{Load, LoadOptions, LoadReport};
use common::proxy::TestProxy;

const CLIENTS: usize = 16;
/// Load before the kill, so connections and pools are warm.
const WARM_UP: Duration = Duration::from_secs(2);
/// Load kept running after the promotion.
const AFTER: Duration = Duration::from_secs(3);

/// One run's figures.
struct Figures {
    promotion: Duration,
    lag: Option<Duration>,
    stall: Duration,
    errors: String,
    error_count: usize,
    acked: usize,
    lost: usize,
    ops_per_sec: f64,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--bench") {
        println!("failover benchmark: skipped (run it with `cargo bench --bench failover`)");
        return;
    }
    let durable = args.iter().any(|a| a == "--durable");
    let runs = args
        .iter()
        .position(|a| a == "--runs")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(3usize);
    let mode = if durable {
        "durable (WAIT 1 100 ms)"
    } else {
        "default"
    };
    println!(
        "failover benchmark: {runs} runs, {mode} mode, {CLIENTS} clients (SET + GET read-back)"
    );
    println!(
        "{:>3} {:>10} {:>9} {:>9} {:>7} {:>8} {:>6} {:>8}  errors by kind",
        "run", "promotion", "lag", "stall", "errors", "acked", "lost", "ops/s"
    );
    let mut all = Vec::new();
    for run in 1..=runs {
        let f = one_run(durable);
        println!(
            "{run:>3} {:>10} {:>9} {:>9} {:>7} {:>8} {:>6} {:>8.0}  {}",
            ms(f.promotion),
            f.lag.map_or("none".into(), ms),
            ms(f.stall),
            f.error_count,
            f.acked,
            f.lost,
            f.ops_per_sec,
            f.errors
        );
        let _ = std::io::stdout().flush();
        all.push(f);
    }
    let median = |mut v: Vec<Duration>| {
        v.sort();
        v.get(v.len() / 2).copied().unwrap_or_default()
    };
    println!(
        "median: promotion {}, lag {}, stall {}; worst lag {}; errors {} total; lost {} total",
        ms(median(all.iter().map(|f| f.promotion).collect())),
        ms(median(all.iter().filter_map(|f| f.lag).collect())),
        ms(median(all.iter().map(|f| f.stall).collect())),
        ms(all.iter().filter_map(|f| f.lag).max().unwrap_or_default()),
        all.iter().map(|f| f.error_count).sum::<usize>(),
        all.iter().map(|f| f.lost).sum::<usize>(),
    );
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

fn signed_ms(t: Instant, base: Instant) -> f64 {
    if t >= base {
        (t - base).as_secs_f64() * 1000.0
    } else {
        -((base - t).as_secs_f64() * 1000.0)
    }
}

fn one_run(durable: bool) -> Figures {
    let mut cluster = TestCluster::start();
    let proxy = TestProxy::start_with(cluster.seeds(), |c| {
        if durable {
            c.cluster.durable_writes = true;
            c.cluster.durable_replicas = 1;
            c.cluster.durable_timeout_ms = 100;
        }
    });
    let load = Load::start(
        proxy.addr(),
        LoadOptions {
            clients: CLIENTS,
            max_duration: Duration::from_secs(120),
            prefix: "bench".into(),
            ..LoadOptions::default()
        },
    );
    let started = Instant::now();
    std::thread::sleep(WARM_UP);
    let victim = cluster.primary_index_for_slot(0);
    let slots = cluster.slots_of(victim);
    let replicas = cluster.replicas_of(victim);
    let killed = Instant::now();
    cluster.kill_node(victim);
    let promoted = loop {
        if replicas
            .iter()
            .any(|&r| cluster.role(r).as_deref() == Some("master"))
        {
            break Instant::now();
        }
        assert!(killed.elapsed() < Duration::from_secs(60), "no promotion");
        std::thread::sleep(Duration::from_millis(5));
    };
    std::thread::sleep(AFTER);
    let report: LoadReport = load.stop();
    let elapsed = started.elapsed();
    let lost = report.lost_writes(proxy.addr()).len();
    if std::env::var_os("FAILOVER_BENCH_VERBOSE").is_some() {
        for e in &report.errors {
            println!(
                "    client {:>2} {} sent {:+.1} ms, failed {:+.1} ms after the kill: {}",
                e.client,
                e.op,
                signed_ms(e.sent, killed),
                signed_ms(e.at, killed),
                e.message
            );
        }
    }
    Figures {
        promotion: promoted - killed,
        lag: report
            .first_answer_after(promoted, &slots)
            .map(|t| t.saturating_duration_since(promoted)),
        stall: report.longest_stall(),
        errors: format!("{:?}", report.errors_by_kind()),
        error_count: report.errors.len(),
        acked: report.acked.len(),
        lost,
        ops_per_sec: report.successes() as f64 / elapsed.as_secs_f64(),
    }
}
