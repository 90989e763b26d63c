//! Keeps the module layering of docs/architecture.md true: reads every file under `src/`,
//! collects which top-level modules each top-level module imports (`crate::m`, `use crate::{a,
//! b}`, and `super::…` chains that climb to the crate root), and fails when the graph has a
//! cycle or an edge the table below does not allow, naming the file and line of the import.
//!
//! `SLOTWAY_LAYERING_SRC=/other/tree/src` checks another tree (e.g. to see that an old one fails).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// What each top-level module may import, lowest layer first (the module map of
/// docs/architecture.md). `local`, `status` and `reference` sit on top with the binary.
const ALLOWED: &[(&str, &[&str])] = &[
    // `sync` (the non-poisoning mutex) is the foundation: it imports nothing, all may use it.
    ("sync", &[]),
    ("protocol", &[]),
    ("hotkeys", &[]),
    ("slowlog", &["protocol"]),
    ("tls", &["protocol"]),
    ("net", &["protocol", "tls"]),
    ("config", &["net", "tls", "hotkeys"]),
    ("command", &["protocol", "config"]),
    ("security", &["command", "config", "protocol", "net"]),
    ("cluster", &["net", "tls", "protocol", "config", "security"]),
    (
        "metrics",
        &["cluster", "command", "config", "hotkeys", "slowlog", "tls"],
    ),
    (
        "backend",
        &["net", "tls", "metrics", "protocol", "config", "cluster"],
    ),
    // `net` and `protocol` are leaves every layer may use; the admin endpoint asks nodes for
    // DBSIZE through them.
    (
        "admin",
        &["metrics", "cluster", "hotkeys", "config", "net", "protocol"],
    ),
    (
        "proxy",
        &[
            "protocol", "hotkeys", "slowlog", "tls", "net", "config", "command", "security",
            "cluster", "metrics", "backend", "admin",
        ],
    ),
];

/// The module beneath everything, which every module may import.
const FOUNDATION: &str = "sync";

/// Modules above everything: they may import any module of [`ALLOWED`], not each other.
const TOP: &[&str] = &["local", "status", "reference"];

/// Edges that break the layering but are tolerated while work to remove them is in flight;
/// empty when the tree is clean (issue 14 removed the last ones).
const PENDING: &[(&str, &str)] = &[];

/// One import: which file and line made it.
#[derive(Debug, Clone)]
struct Site {
    file: PathBuf,
    line: usize,
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file belongs to, and how many `super` steps reach the crate root
/// from its own module (`src/a.rs` and `src/a/mod.rs`: 1, `src/a/b.rs`: 2).
fn module_of(src: &Path, file: &Path) -> Option<(String, usize)> {
    let rel = file.strip_prefix(src).ok()?;
    let parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    let top = parts.first()?.trim_end_matches(".rs").to_string();
    if top == "lib" || top == "main" {
        return None;
    }
    let last = parts.last()?;
    let depth = if last == "mod.rs" {
        parts.len() - 1
    } else {
        parts.len()
    };
    Some((top, depth.max(1)))
}

/// The line with comments removed (a `//` outside a string literal starts one).
fn code_of(line: &str) -> &str {
    let mut in_str = false;
    let bytes = line.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if in_str => i += 1,
            b'"' => in_str = !in_str,
            b'/' if !in_str && bytes.get(i + 1) == Some(&b'/') => return &line[..i],
            _ => {}
        }
        i += 1;
    }
    line
}

fn ident_at(text: &str) -> &str {
    let end = text
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(text.len());
    &text[..end]
}

/// The top-level modules named right after `crate::` at `rest`: one ident, or the heads of a
/// `{a, b::c, d::{e}}` group (which may run over several lines, hence the whole text).
fn heads(rest: &str) -> Vec<String> {
    let rest = rest.trim_start();
    if !rest.starts_with('{') {
        return vec![ident_at(rest).to_string()];
    }
    let mut out = Vec::new();
    let mut depth = 0usize;
    let mut expect = true;
    let mut i = 0;
    let b = rest.as_bytes();
    while i < b.len() {
        match b[i] {
            b'{' => {
                depth += 1;
                expect = depth == 1;
            }
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    break;
                }
            }
            b',' if depth == 1 => expect = true,
            c if expect && depth == 1 && (c.is_ascii_alphabetic() || c == b'_') => {
                out.push(ident_at(&rest[i..]).to_string());
                expect = false;
            }
            _ => {}
        }
        i += 1;
    }
    out
}

/// Every `(imported module, line)` of one file.
fn imports(text: &str, depth: usize, own_children: &BTreeSet<String>) -> Vec<(String, usize)> {
    let code: String = text.lines().map(code_of).collect::<Vec<_>>().join("\n");
    let line_of = |pos: usize| code[..pos].matches('\n').count() + 1;
    let mut out = Vec::new();
    for (pos, _) in code.match_indices("crate::") {
        let before = code[..pos].chars().next_back();
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$') {
            continue;
        }
        for m in heads(&code[pos + "crate::".len()..]) {
            out.push((m, line_of(pos)));
        }
    }
    // `super::super::m` at file level of a depth-2 file is `crate::m`; inside an inline
    // `mod tests` it is one level lower, so only names that are not the module's own
    // children count.
    for (pos, _) in code.match_indices("super::") {
        if code[..pos].ends_with("super::") {
            continue;
        }
        let mut rest = &code[pos..];
        let mut steps = 0;
        while let Some(r) = rest.strip_prefix("super::") {
            steps += 1;
            rest = r;
        }
        if steps < depth {
            continue;
        }
        for m in heads(rest) {
            if !own_children.contains(&m) {
                out.push((m, line_of(pos)));
            }
        }
    }
    out
}

type Graph = BTreeMap<String, BTreeMap<String, Vec<Site>>>;

fn graph(src: &Path) -> Graph {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    files.sort();
    let tops: BTreeSet<String> = files
        .iter()
        .filter_map(|f| module_of(src, f).map(|(m, _)| m))
        .collect();
    let mut g = Graph::new();
    for file in &files {
        let Some((module, depth)) = module_of(src, file) else {
            continue;
        };
        let children: BTreeSet<String> = std::fs::read_dir(src.join(&module))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| {
                e.file_name()
                    .to_string_lossy()
                    .trim_end_matches(".rs")
                    .to_string()
            })
            .collect();
        let text = std::fs::read_to_string(file).unwrap_or_default();
        let entry = g.entry(module.clone()).or_default();
        for (target, line) in imports(&text, depth, &children) {
            if target != module && tops.contains(&target) {
                entry.entry(target).or_default().push(Site {
                    file: file.clone(),
                    line,
                });
            }
        }
    }
    g
}

/// A cycle through the graph, as the list of modules on it, if there is one.
fn find_cycle(g: &Graph) -> Option<Vec<String>> {
    fn visit(
        g: &Graph,
        m: &str,
        state: &mut BTreeMap<String, u8>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        match state.get(m) {
            Some(2) => return None,
            Some(1) => {
                let start = path.iter().position(|p| p == m).unwrap_or(0);
                let mut cycle = path[start..].to_vec();
                cycle.push(m.to_string());
                return Some(cycle);
            }
            _ => {}
        }
        state.insert(m.to_string(), 1);
        path.push(m.to_string());
        for next in g.get(m).into_iter().flat_map(|e| e.keys()) {
            if let Some(c) = visit(g, next, state, path) {
                return Some(c);
            }
        }
        path.pop();
        state.insert(m.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for m in g.keys() {
        if let Some(c) = visit(g, m, &mut state, &mut Vec::new()) {
            return Some(c);
        }
    }
    None
}

fn allowed(from: &str, to: &str) -> bool {
    if PENDING.contains(&(from, to)) {
        return true;
    }
    if TOP.contains(&from) || to == FOUNDATION {
        return ALLOWED.iter().any(|(m, _)| *m == to);
    }
    ALLOWED
        .iter()
        .find(|(m, _)| *m == from)
        .is_some_and(|(_, may)| may.contains(&to))
}

fn sites(sites: &[Site]) -> String {
    sites
        .iter()
        .map(|s| format!("{}:{}", s.file.display(), s.line))
        .collect::<Vec<_>>()
        .join(", ")
}

#[test]
fn modules_form_the_documented_layers_without_cycles() {
    let src = std::env::var_os("SLOTWAY_LAYERING_SRC").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        PathBuf::from,
    );
    let g = graph(&src);
    assert!(
        g.contains_key("proxy"),
        "no modules found under {}",
        src.display()
    );
    let mut problems = Vec::new();
    for (from, edges) in &g {
        let known = TOP.contains(&from.as_str()) || ALLOWED.iter().any(|(m, _)| m == from);
        if !known {
            problems.push(format!(
                "module `{from}` is not in the layering table of tests/it/layering.rs \
                 (and docs/architecture.md): place it"
            ));
        }
        for (to, at) in edges {
            if known && !allowed(from, to) {
                problems.push(format!(
                    "`{from}` may not import `{to}` (a higher or sideways layer): {}",
                    sites(at)
                ));
            }
        }
    }
    // Pending edges are left out of the cycle search: `config → security` (through `Secret`)
    // closes a cycle with `security → config` until `Secret` moves to `net`.
    let mut settled = g.clone();
    for (from, edges) in settled.iter_mut() {
        edges.retain(|to, _| !PENDING.contains(&(from.as_str(), to.as_str())));
    }
    if let Some(cycle) = find_cycle(&settled) {
        let hops: Vec<String> = cycle
            .windows(2)
            .map(|w| format!("{} → {} ({})", w[0], w[1], sites(&g[&w[0]][&w[1]][..1])))
            .collect();
        problems.push(format!("import cycle: {}", hops.join("; ")));
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

#[test]
fn the_scanner_sees_every_import_form() {
    let children = BTreeSet::from(["tls".to_string()]);
    let text = "use crate::a::X; // crate::commented\nuse crate::{b, c::{D, E},\n    d};\n\
                let s = \"// crate::in_string_is_code\"; fn f() { super::super::e::g(); }\n\
                use super::super::tls::Own;";
    let found: Vec<(String, usize)> = imports(text, 2, &children);
    let names: Vec<&str> = found.iter().map(|(m, _)| m.as_str()).collect();
    assert_eq!(names, ["a", "b", "c", "d", "in_string_is_code", "e"]);
    assert_eq!(found[3].1, 2, "the line of a group's start");
    assert_eq!(code_of("x // y"), "x ");
}
