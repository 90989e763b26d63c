//! Helpers of tests/observability.rs: parsing a `/metrics` scrape, and finding the `slotway_*`
//! metrics (with the labels they select or group by) that the dashboards and alert rules use.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::Path;

use super::get;

/// One scrape of /metrics: every series with its labels, and every family's type.
pub struct Scrape {
    pub series: Vec<(String, BTreeMap<String, String>, f64)>,
    pub types: HashMap<String, String>,
}

impl Scrape {
    pub fn take(admin: SocketAddr) -> Self {
        let (code, text) = get(admin, "/metrics");
        assert_eq!(code, 200);
        Self::parse(&text)
    }

    pub fn parse(text: &str) -> Self {
        let mut series = Vec::new();
        let mut types = HashMap::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut parts = rest.split(' ');
                let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
                    panic!("bad TYPE line {line:?}");
                };
                types.insert(name.to_string(), kind.to_string());
                continue;
            }
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            series.push(parse_series(line));
        }
        Self { series, types }
    }

    /// The sum of every series of `name` carrying all of `labels`.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.series
            .iter()
            .filter(|(n, l, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(_, _, v)| v)
            .sum()
    }

    /// Label names seen on series of family `name` (histograms: on their `_bucket` series).
    pub fn labels_of(&self, name: &str) -> BTreeSet<String> {
        let bucket = format!("{name}_bucket");
        self.series
            .iter()
            .filter(|(n, _, _)| n == name || *n == bucket)
            .flat_map(|(_, l, _)| l.keys().cloned())
            .collect()
    }
}

fn parse_series(line: &str) -> (String, BTreeMap<String, String>, f64) {
    let (head, value) = line.rsplit_once(' ').expect("series has a value");
    let value: f64 = value
        .parse()
        .unwrap_or_else(|_| panic!("bad value in {line:?}"));
    let Some((name, rest)) = head.split_once('{') else {
        return (head.to_string(), BTreeMap::new(), value);
    };
    let mut labels = BTreeMap::new();
    let mut chars = rest.chars().peekable();
    loop {
        let key: String = chars.by_ref().take_while(|&c| c != '=').collect();
        let key = key.trim_start_matches(',').to_string();
        if key.is_empty() || key == "}" {
            break;
        }
        assert_eq!(chars.next(), Some('"'), "label value quoted in {line:?}");
        let mut val = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some('n') => val.push('\n'),
                    Some(other) => val.push(other),
                    None => break,
                },
                '"' => break,
                c => val.push(c),
            }
        }
        labels.insert(key, val);
        if chars.peek() == Some(&'}') {
            break;
        }
    }
    (name.to_string(), labels, value)
}

/// Checks every `slotway_*` metric used by a dashboard or an alert rule against a live scrape.
pub fn check_dashboard_metrics(admin: SocketAddr) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/monitoring");
    let mut exprs = Vec::new();
    let dashboards = std::fs::read_dir(root.join("dashboards")).unwrap();
    for entry in dashboards {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            let json: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            collect_exprs(&json, &mut exprs);
        }
    }
    let from_dashboards = exprs.len();
    assert!(from_dashboards > 20, "dashboards hold expressions");
    let rules = std::fs::read_to_string(root.join("prometheusrule.yaml")).unwrap();
    exprs.extend(yaml_exprs(&rules));
    assert!(exprs.len() > from_dashboards + 5, "rules hold expressions");

    let scrape = Scrape::take(admin);
    let mut used: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for e in &exprs {
        for (name, labels) in metrics_in(e) {
            used.entry(name).or_default().extend(labels);
        }
    }
    let fixture = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/deploy/fixtures/slotway-metrics.txt"),
    )
    .unwrap();
    for name in fixture.lines().filter(|l| l.starts_with("slotway_")) {
        used.entry(name.trim().to_string()).or_default();
    }
    assert!(used.len() >= 20, "{used:?}");
    let mut missing = Vec::new();
    for (name, labels) in &used {
        let family = family_of(name, &scrape);
        let Some(family) = family else {
            missing.push(format!("{name}: not exported"));
            continue;
        };
        let exported = scrape.labels_of(&family);
        for l in labels {
            if !exported.contains(l) {
                missing.push(format!("{name}: no label {l:?} (has {exported:?})"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "dashboard/alert metrics not served:\n{}",
        missing.join("\n")
    );
}

/// The exported family a used name belongs to (`x_bucket` → histogram `x`).
fn family_of(name: &str, scrape: &Scrape) -> Option<String> {
    if scrape.types.contains_key(name) {
        return Some(name.to_string());
    }
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            if scrape.types.get(base).map(String::as_str) == Some("histogram") {
                return Some(base.to_string());
            }
        }
    }
    None
}

fn collect_exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("expr", serde_json::Value::String(s)) => out.push(s.clone()),
                    _ => collect_exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|i| collect_exprs(i, out)),
        _ => {}
    }
}

/// The `expr:` values of a rules file: inline, or a block scalar (`|`, `>`) of deeper lines.
fn yaml_exprs(text: &str) -> Vec<String> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let indent = line.len() - line.trim_start().len();
        let key = line.trim_start();
        let key = key.strip_prefix("- ").unwrap_or(key);
        let Some(value) = key.strip_prefix("expr:") else {
            i += 1;
            continue;
        };
        let value = value.trim();
        if value.starts_with('|') || value.starts_with('>') {
            let mut block = Vec::new();
            i += 1;
            while i < lines.len() {
                let l = lines[i];
                let deeper = l.len() - l.trim_start().len() > indent;
                if !l.trim().is_empty() && !deeper {
                    break;
                }
                block.push(l.trim());
                i += 1;
            }
            out.push(block.join(" "));
        } else {
            out.push(value.trim_matches(['"', '\'']).to_string());
            i += 1;
        }
    }
    out
}

/// Every `slotway_*` name in a PromQL expression with the labels its selector names, plus
/// the `by (...)` labels when the expression uses a single metric.
fn metrics_in(expr: &str) -> Vec<(String, BTreeSet<String>)> {
    const IGNORED: [&str; 6] = ["namespace", "pod", "job", "instance", "service", "le"];
    let bytes = expr.as_bytes();
    let ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut found: Vec<(String, BTreeSet<String>)> = Vec::new();
    let mut i = 0;
    while let Some(at) = expr[i..].find("slotway_") {
        let start = i + at;
        if start > 0 && ident(bytes[start - 1]) {
            i = start + 1;
            continue;
        }
        let mut end = start;
        while end < bytes.len() && ident(bytes[end]) {
            end += 1;
        }
        let name = expr[start..end].to_string();
        let mut labels = BTreeSet::new();
        if bytes.get(end) == Some(&b'{') {
            end = selector_labels(expr, end + 1, &mut labels);
        }
        found.push((name, labels));
        i = end.max(start + 1);
    }
    let distinct: BTreeSet<&String> = found.iter().map(|(n, _)| n).collect();
    if distinct.len() == 1 {
        let mut by = BTreeSet::new();
        let mut rest = expr;
        while let Some(at) = rest.find(" by (") {
            let tail = &rest[at + 5..];
            let close = tail.find(')').unwrap_or(tail.len());
            by.extend(tail[..close].split(',').map(|l| l.trim().to_string()));
            rest = &tail[close..];
        }
        for (_, labels) in &mut found {
            labels.extend(by.iter().cloned());
        }
    }
    for (_, labels) in &mut found {
        labels.retain(|l| !l.is_empty() && !IGNORED.contains(&l.as_str()));
    }
    found
}

/// Reads the matchers of a selector starting at `at` (just after `{`) into `labels`; returns the
/// index after the closing `}`.
fn selector_labels(expr: &str, mut at: usize, labels: &mut BTreeSet<String>) -> usize {
    let b = expr.as_bytes();
    loop {
        while at < b.len() && (b[at].is_ascii_whitespace() || b[at] == b',') {
            at += 1;
        }
        if at >= b.len() || b[at] == b'}' {
            return at + 1;
        }
        let start = at;
        while at < b.len() && (b[at].is_ascii_alphanumeric() || b[at] == b'_') {
            at += 1;
        }
        labels.insert(expr[start..at].to_string());
        // The operator, then the quoted value (which may hold commas and braces).
        while at < b.len() && b[at] != b'"' {
            at += 1;
        }
        at += 1;
        while at < b.len() && b[at] != b'"' {
            at += if b[at] == b'\\' { 2 } else { 1 };
        }
        at += 1;
    }
}

#[test]
fn promql_metric_extraction() {
    let got = metrics_in(
        "sum by (command, le) (rate(slotway_command_duration_seconds_bucket{namespace=\"$namespace\", outcome=\"error\"}[5m]))",
    );
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0, "slotway_command_duration_seconds_bucket");
    let labels: Vec<&str> = got[0].1.iter().map(String::as_str).collect();
    assert_eq!(labels, ["command", "outcome"]);
    let got = metrics_in("rate(slotway_a_total{command!~\"x,y{1}\", kind=\"b\"}[1m]) / slotway_b");
    assert_eq!(got[0].0, "slotway_a_total");
    let labels: Vec<&str> = got[0].1.iter().map(String::as_str).collect();
    assert_eq!(labels, ["command", "kind"]);
    assert_eq!(got[1].0, "slotway_b");
    let exprs = yaml_exprs("  - alert: A\n    expr: |\n      rate(slotway_x_total[5m])\n        > 1\n    for: 1m\n  - expr: slotway_ready == 0\n");
    assert_eq!(
        exprs,
        ["rate(slotway_x_total[5m]) > 1", "slotway_ready == 0"]
    );
}
