//! The documented configuration keys are the ones slotway accepts, as `slotway config-keys`
//! prints them:
//! - the README's configuration table names every key exactly once (a row may name several,
//!   each spelled out in full);
//! - `config/local.toml`, the commented reference, lists every key exactly once, set or
//!   commented out in the files' way (`#   key = value` inside its section, `# [[auth.users]]`
//!   for the array of tables);
//! - every other `config/*.toml` lists known keys only, each at most once, and its opening
//!   comment does not claim to be complete;
//! - `tests/deploy/fixtures/config-keys.txt` (what `tests/deploy/validate.sh` falls back to
//!   without a binary) holds the same keys.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The example files that document every key.
const COMPLETE: &[&str] = &["local.toml"];

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// `slotway config-keys`: every key the config file accepts.
fn accepted_keys() -> BTreeSet<String> {
    let out = Command::new(env!("CARGO_BIN_EXE_slotway"))
        .arg("config-keys")
        .output()
        .expect("run slotway config-keys");
    assert!(out.status.success(), "slotway config-keys: {out:?}");
    let keys: BTreeSet<String> = String::from_utf8(out.stdout)
        .expect("UTF-8 key list")
        .lines()
        .map(str::to_owned)
        .collect();
    assert!(keys.len() > 50, "suspiciously few keys: {keys:?}");
    keys
}

/// How often each key is named; a key named twice counts 2.
type Mentions = BTreeMap<String, usize>;

fn count<I: IntoIterator<Item = String>>(keys: I) -> Mentions {
    let mut out = Mentions::new();
    for key in keys {
        *out.entry(key).or_insert(0) += 1;
    }
    out
}

/// The keys named in the first column of the table under `## Configuration`.
fn readme_keys(readme: &str) -> Mentions {
    let section = readme
        .split("\n## Configuration\n")
        .nth(1)
        .expect("a Configuration section");
    let table = section
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        // The header row and the |---| separator.
        .skip(2);
    let mut keys = Vec::new();
    for row in table {
        let first = row.split('|').nth(1).expect("a first column");
        let spans: Vec<&str> = first.split('`').skip(1).step_by(2).collect();
        assert!(!spans.is_empty(), "a row without a key: {row}");
        keys.extend(spans.into_iter().map(str::to_owned));
    }
    count(keys)
}

/// The keys a config file sets (parsed as TOML) and the ones it shows commented out.
fn toml_keys(text: &str) -> Mentions {
    let parsed: toml::Table = text.parse().expect("valid TOML");
    let mut keys = Vec::new();
    for (name, value) in &parsed {
        match value {
            toml::Value::Table(section) => {
                keys.extend(section.keys().map(|k| format!("{name}.{k}")));
            }
            _ => keys.push(name.clone()),
        }
    }
    keys.extend(commented_keys(text));
    count(keys)
}

/// `#   key = value` lines, each in the section of the last real `[section]` header, and
/// `# [[section.key]]` arrays of tables (whose commented fields that follow, up to a blank or
/// uncommented line, are the table's own, not keys).
fn commented_keys(text: &str) -> Vec<String> {
    let mut section = String::new();
    let mut in_commented_table = false;
    let mut out = Vec::new();
    for line in text.lines() {
        let Some(comment) = line.strip_prefix('#') else {
            in_commented_table = false;
            if let Some(name) = line.trim().strip_prefix('[') {
                section = name.trim_end_matches(']').to_owned();
            }
            continue;
        };
        let body = comment.trim();
        if body.is_empty() {
            in_commented_table = false;
        } else if let Some(table) = body.strip_prefix("[[").and_then(|b| b.strip_suffix("]]")) {
            out.push(table.to_owned());
            in_commented_table = true;
        } else if !in_commented_table && comment.starts_with(char::is_whitespace) {
            if let Some(key) = assigned_key(body) {
                out.push(if section.is_empty() {
                    key.to_owned()
                } else {
                    format!("{section}.{key}")
                });
            }
        }
    }
    out
}

/// `key` of a `key = value` line; prose never has a bare identifier before its first `=`.
fn assigned_key(body: &str) -> Option<&str> {
    let (key, _) = body.split_once('=')?;
    let key = key.trim();
    let bare = !key.is_empty() && key.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
    bare.then_some(key)
}

/// Keys named more than once, and keys slotway does not accept.
fn problems(mentions: &Mentions, accepted: &BTreeSet<String>) -> Vec<String> {
    let mut out = Vec::new();
    for (key, &n) in mentions {
        if n > 1 {
            out.push(format!("{key} named {n} times"));
        }
        if !accepted.contains(key) {
            out.push(format!("{key} is not a key slotway accepts"));
        }
    }
    out
}

fn missing(mentions: &Mentions, accepted: &BTreeSet<String>) -> Vec<String> {
    accepted
        .iter()
        .filter(|k| !mentions.contains_key(*k))
        .map(|k| format!("{k} missing"))
        .collect()
}

#[test]
fn the_readme_table_names_every_key_once() {
    let accepted = accepted_keys();
    let mentions = readme_keys(&read(&root().join("README.md")));
    let mut wrong = problems(&mentions, &accepted);
    wrong.extend(missing(&mentions, &accepted));
    assert!(wrong.is_empty(), "README configuration table: {wrong:#?}");
}

#[test]
fn the_example_config_files_list_known_keys_and_the_reference_all() {
    let accepted = accepted_keys();
    let dir = root().join("config");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("config/")
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    for name in COMPLETE {
        assert!(files.contains(&dir.join(name)), "config/{name} exists");
    }
    let mut all_wrong = Vec::new();
    for file in &files {
        let name = file.file_name().and_then(|n| n.to_str()).expect("a name");
        let text = read(file);
        let mentions = toml_keys(&text);
        let mut wrong = problems(&mentions, &accepted);
        if COMPLETE.contains(&name) {
            wrong.extend(missing(&mentions, &accepted));
        } else {
            let header: String = text
                .lines()
                .take_while(|l| l.starts_with('#'))
                .collect::<Vec<_>>()
                .join(" ")
                .to_lowercase();
            // Claims of completeness, not "every key can also be set from the environment".
            for claim in [
                "complete",
                "lists every",
                "all keys",
                "all settings",
                "full reference",
            ] {
                if header.contains(claim) {
                    wrong.push(format!("the opening comment claims \"{claim}\""));
                }
            }
        }
        all_wrong.extend(wrong.into_iter().map(|w| format!("config/{name}: {w}")));
    }
    assert!(all_wrong.is_empty(), "{all_wrong:#?}");
}

#[test]
fn the_deploy_fixture_holds_the_same_keys() {
    let path = root().join("tests/deploy/fixtures/config-keys.txt");
    let fixture: BTreeSet<String> = read(&path)
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(str::to_owned)
        .collect();
    assert_eq!(fixture, accepted_keys(), "{}", path.display());
}

#[test]
fn commented_keys_follow_the_files_conventions() {
    let text = "\
listen = \"x\"
[tls]
# TLS on the client listener; off while cert_file is empty (default \"\"). PEM files:
#   cert_file = \"/etc/tls.crt\"     # chain, leaf first
# policy: `deny = []` refuses nothing.
[auth]
# [[auth.users]]
# name = \"reader\"

#   password_file = \"/p\"
";
    assert_eq!(
        commented_keys(text),
        ["tls.cert_file", "auth.users", "auth.password_file"]
    );
    let mentions = toml_keys(text);
    assert_eq!(
        mentions.keys().collect::<Vec<_>>(),
        [
            "auth.password_file",
            "auth.users",
            "listen",
            "tls.cert_file"
        ]
    );
}
