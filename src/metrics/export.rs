//! Families rendered at scrape time from the proxy's own counters rather than kept in the
//! recorder: the request-path counters and latencies (per-thread shards, added up here), ops per
//! slot (only slots that saw traffic), ops per shard, and the hot keys, whose label set changes
//! (a key stops being hot), which the recorder could only forget by expiring every idle metric.

use std::fmt::Write;

use super::commands::CommandId;
use super::names;
use super::shard;
use super::slots;
use super::ProxyMetrics;
use crate::cluster::topology::SLOTS;
use crate::hotkeys;

/// Appends the scrape-time families in the Prometheus text format.
pub fn render(out: &mut String, m: &ProxyMetrics) {
    let t = shard::totals();
    let index = super::global().commands.index();
    family(
        out,
        names::COMMANDS,
        "counter",
        "Commands answered, by command and outcome (ok or error).",
    );
    for (id, [ok, error]) in t.outcomes.iter().enumerate() {
        if ok + error == 0 {
            continue;
        }
        let name = escape_label(&index.handles(CommandId(id as u16)).name);
        for (outcome, n) in [("ok", ok), ("error", error)] {
            let _ = writeln!(
                out,
                "{}{{command=\"{name}\",outcome=\"{outcome}\"}} {n}",
                names::COMMANDS
            );
        }
    }
    family(
        out,
        names::COMMAND_DURATION,
        "histogram",
        "Seconds from reading a command to having its reply, by command.",
    );
    for (id, h) in t.durations.iter().enumerate() {
        if let Some(h) = h {
            let name = escape_label(&index.handles(CommandId(id as u16)).name);
            h.render(out, names::COMMAND_DURATION, &format!("command=\"{name}\""));
        }
    }
    family(
        out,
        names::BACKEND_DURATION,
        "histogram",
        "Seconds from writing a request to a node to its reply, by node.",
    );
    for (node, h) in super::backend_histograms() {
        let labels = format!("node=\"{}\"", escape_label(&node));
        h.render(out, names::BACKEND_DURATION, &labels);
    }
    family(
        out,
        names::BYTES_RECEIVED,
        "counter",
        "Bytes read from clients.",
    );
    let _ = writeln!(out, "{} {}", names::BYTES_RECEIVED, t.bytes_in);
    family(
        out,
        names::BYTES_SENT,
        "counter",
        "Bytes written to clients.",
    );
    let _ = writeln!(out, "{} {}", names::BYTES_SENT, t.bytes_out);
    family(
        out,
        names::INFLIGHT,
        "gauge",
        "Client requests awaiting their reply.",
    );
    let _ = writeln!(out, "{} {}", names::INFLIGHT, t.inflight.max(0));
    if m.config.per_slot {
        let all = slots::slot_ops();
        family(
            out,
            names::SLOT_OPS,
            "counter",
            "Keyed requests by hash slot.",
        );
        for slot in 0..SLOTS as u16 {
            let ops = all[usize::from(slot)];
            if ops > 0 {
                let _ = writeln!(out, "{}{{slot=\"{slot}\"}} {ops}", names::SLOT_OPS);
            }
        }
    }
    family(
        out,
        names::SHARD_OPS,
        "counter",
        "Keyed requests by shard (numbered by lowest slot).",
    );
    for (shard, ops) in m.shards.totals().iter().enumerate() {
        let _ = writeln!(out, "{}{{shard=\"{shard}\"}} {ops}", names::SHARD_OPS);
    }
    family(
        out,
        names::HOT_KEY_OPS,
        "gauge",
        "Estimated recent requests of the hottest keys (sampled; counts halve every minute).",
    );
    if m.config.enabled && m.config.hot_keys > 0 {
        for (rank, hot) in hotkeys::top(m.config.hot_keys).iter().enumerate() {
            let key = hotkeys::display_key(&hot.key, m.config.hash_key_names);
            let _ = writeln!(
                out,
                "{}{{rank=\"{}\",key=\"{}\"}} {}",
                names::HOT_KEY_OPS,
                rank + 1,
                escape_label(&key),
                hot.count
            );
        }
    }
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Escapes a label value as the text format requires.
pub fn escape_label(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label(r#"a"b\c"#), r#"a\"b\\c"#);
    }

    #[test]
    fn families_have_type_lines() {
        let m = ProxyMetrics::new(crate::config::MetricsConfig::default());
        slots::count_slot(42);
        let mut out = String::new();
        render(&mut out, &m);
        assert!(out.contains("# TYPE slotway_slot_ops_total counter"));
        assert!(out.contains("slotway_slot_ops_total{slot=\"42\"} "));
        assert!(out.contains("# TYPE slotway_hot_key_ops gauge"));
    }
}
