//! Which commands may run: the proxy-wide deny/allow policy and ACL-style user rules
//! (`+@read`, `-@dangerous`, `+get`, `-config|set`), compiled per command table into sets of
//! command specs so the request path does one hash probe instead of any string work.

use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hasher};

use crate::command::{CommandFlags, CommandSpec, CommandTable};

use super::SecurityError;

/// Commands a shared proxy refuses unless `policy.allow` lists them. The list is the default of
/// `policy.deny`, so it lives with the config (which sits below this module).
pub use crate::config::DEFAULT_DENY;

/// A command category, derived from the flags Redis reports for each command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Category {
    /// Every command.
    All,
    /// Reads the keyspace (`readonly` flag).
    Read,
    /// Writes the keyspace (`write` flag).
    Write,
    /// Administrative (`admin` flag).
    Admin,
    /// Administrative or otherwise risky on shared data (FLUSHALL, KEYS, MIGRATE …).
    Dangerous,
    /// Pub/Sub (`pubsub` flag).
    Pubsub,
    /// May block (`blocking` flag).
    Blocking,
    /// O(1)/O(log N) (`fast` flag).
    Fast,
    /// Not `fast`.
    Slow,
}

/// Category names accepted after `@`.
const CATEGORIES: &[(&str, Category)] = &[
    ("all", Category::All),
    ("read", Category::Read),
    ("write", Category::Write),
    ("admin", Category::Admin),
    ("dangerous", Category::Dangerous),
    ("pubsub", Category::Pubsub),
    ("blocking", Category::Blocking),
    ("fast", Category::Fast),
    ("slow", Category::Slow),
];

/// Commands in `@dangerous` besides those flagged `admin` (as Redis's ACL categorises them).
const DANGEROUS_EXTRA: &[&str] = &[
    "flushall",
    "flushdb",
    "info",
    "keys",
    "lastsave",
    "migrate",
    "restore",
    "restore-asking",
    "role",
    "sort",
    "swapdb",
];

impl Category {
    fn contains(self, spec: &CommandSpec) -> bool {
        let f = spec.flags;
        match self {
            Category::All => true,
            Category::Read => f.contains(CommandFlags::READONLY),
            Category::Write => f.contains(CommandFlags::WRITE),
            Category::Admin => f.contains(CommandFlags::ADMIN),
            Category::Dangerous => {
                f.contains(CommandFlags::ADMIN) || DANGEROUS_EXTRA.contains(&top_name(spec))
            }
            Category::Pubsub => f.contains(CommandFlags::PUBSUB),
            Category::Blocking => f.contains(CommandFlags::BLOCKING),
            Category::Fast => f.contains(CommandFlags::FAST),
            Category::Slow => !f.contains(CommandFlags::FAST),
        }
    }
}

fn top_name(spec: &CommandSpec) -> &str {
    spec.name.split('|').next().unwrap_or(&spec.name)
}

/// What a rule or list entry names: a category, or a command (`get`, `config`, `config|set`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `@name`.
    Category(Category),
    /// A lower-case command name; a container name covers all its subcommands.
    Command(String),
}

impl Target {
    /// Parses `@category` or a command name (case-insensitive).
    pub fn parse(text: &str) -> Result<Self, SecurityError> {
        let text = text.trim();
        if let Some(cat) = text.strip_prefix('@') {
            return CATEGORIES
                .iter()
                .find(|(name, _)| name.eq_ignore_ascii_case(cat))
                .map(|&(_, c)| Target::Category(c))
                .ok_or_else(|| SecurityError::Rule {
                    rule: text.to_string(),
                    reason: format!(
                        "unknown category; known: {}",
                        CATEGORIES
                            .iter()
                            .map(|(n, _)| format!("@{n}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                });
        }
        let valid = !text.is_empty()
            && text.split('|').count() <= 2
            && text.split('|').all(|part| {
                !part.is_empty() && part.bytes().all(|b| b.is_ascii_graphic() && b != b'@')
            });
        if !valid {
            return Err(SecurityError::Rule {
                rule: text.to_string(),
                reason: "expected a command name, `container|subcommand` or `@category`".into(),
            });
        }
        Ok(Target::Command(text.to_ascii_lowercase()))
    }

    /// True when this entry covers `spec`.
    pub fn covers(&self, spec: &CommandSpec) -> bool {
        match self {
            Target::Category(c) => c.contains(spec),
            Target::Command(name) => {
                spec.name == *name
                    || spec
                        .name
                        .strip_prefix(name.as_str())
                        .is_some_and(|rest| rest.starts_with('|'))
            }
        }
    }
}

/// One ACL-style command rule: `+target` grants, `-target` revokes; later rules win.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Grant (`+`) or revoke (`-`).
    pub allow: bool,
    /// What the rule names.
    pub target: Target,
}

impl Rule {
    /// Parses `+@read`, `-flushall`, `+config|get`; `allcommands` and `nocommands` are the
    /// Redis aliases of `+@all` and `-@all`.
    pub fn parse(text: &str) -> Result<Self, SecurityError> {
        let text = text.trim();
        if text.eq_ignore_ascii_case("allcommands") {
            return Self::parse("+@all");
        }
        if text.eq_ignore_ascii_case("nocommands") {
            return Self::parse("-@all");
        }
        let (allow, rest) = match text.as_bytes().first() {
            Some(b'+') => (true, &text[1..]),
            Some(b'-') => (false, &text[1..]),
            _ => {
                return Err(SecurityError::Rule {
                    rule: text.to_string(),
                    reason: "a rule starts with `+` (allow) or `-` (deny)".into(),
                })
            }
        };
        Ok(Rule {
            allow,
            target: Target::parse(rest)?,
        })
    }
}

/// True when `rules` (applied in order, starting from "nothing allowed") allow `spec`.
pub fn rules_allow(rules: &[Rule], spec: &CommandSpec) -> bool {
    rules
        .iter()
        .rev()
        .find(|r| r.target.covers(spec))
        .is_some_and(|r| r.allow)
}

/// The proxy-wide command policy: refused when any `deny` entry covers a command and no
/// `allow` entry does.
#[derive(Debug, Clone, Default)]
pub struct CommandPolicy {
    deny: Vec<Target>,
    allow: Vec<Target>,
}

impl CommandPolicy {
    /// Builds the policy from the `policy.deny` and `policy.allow` lists.
    pub fn new(deny: &[String], allow: &[String]) -> Result<Self, SecurityError> {
        let parse = |list: &[String]| -> Result<Vec<Target>, SecurityError> {
            list.iter().map(|t| Target::parse(t)).collect()
        };
        Ok(Self {
            deny: parse(deny)?,
            allow: parse(allow)?,
        })
    }

    /// True when `spec` is refused.
    pub fn denies(&self, spec: &CommandSpec) -> bool {
        self.deny.iter().any(|t| t.covers(spec)) && !self.allow.iter().any(|t| t.covers(spec))
    }

    /// True when nothing is denied.
    pub fn is_open(&self) -> bool {
        self.deny.is_empty()
    }
}

/// A set of command specs of one table, by address: the table is immutable and kept alive
/// by whoever holds the set, so an address identifies a spec for the set's whole life.
#[derive(Debug, Clone, Default)]
pub struct SpecSet(HashSet<usize, BuildHasherDefault<AddrHasher>>);

impl SpecSet {
    /// Every spec (commands and subcommands) of `table` for which `pick` says yes.
    pub fn collect(table: &CommandTable, mut pick: impl FnMut(&CommandSpec) -> bool) -> Self {
        let mut set = HashSet::default();
        for spec in table.iter() {
            for s in std::iter::once(spec).chain(spec.subcommands.iter()) {
                if pick(s) {
                    set.insert(addr(s));
                }
            }
        }
        Self(set)
    }

    /// True when `spec` (from the same table) is in the set.
    pub fn contains(&self, spec: &CommandSpec) -> bool {
        !self.0.is_empty() && self.0.contains(&addr(spec))
    }

    /// Number of specs in the set.
    #[allow(clippy::len_without_is_empty)] // nothing in the crate asks whether a set is empty
    pub fn len(&self) -> usize {
        self.0.len()
    }
}

fn addr(spec: &CommandSpec) -> usize {
    spec as *const CommandSpec as usize
}

/// Spreads spec addresses (multiples of the struct's alignment) over the hash table.
#[derive(Default, Clone, Copy)]
pub struct AddrHasher(u64);

impl Hasher for AddrHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    fn write_usize(&mut self, n: usize) {
        self.0 = (n as u64 ^ (n as u64 >> 29)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec<'a>(table: &'a CommandTable, name: &str) -> &'a CommandSpec {
        let mut parts = name.split('|');
        let top = table.lookup(parts.next().unwrap().as_bytes()).unwrap();
        match parts.next() {
            Some(sub) => top.subcommand(sub.as_bytes()).unwrap(),
            None => top,
        }
    }

    fn rules(list: &[&str]) -> Vec<Rule> {
        list.iter().map(|r| Rule::parse(r).unwrap()).collect()
    }

    #[test]
    fn rule_syntax() {
        assert_eq!(
            Rule::parse("+@READ").unwrap(),
            Rule {
                allow: true,
                target: Target::Category(Category::Read)
            }
        );
        assert_eq!(
            Rule::parse("-Config|Set").unwrap().target,
            Target::Command("config|set".into())
        );
        assert!(Rule::parse("get").is_err());
        assert!(Rule::parse("+@nope")
            .unwrap_err()
            .to_string()
            .contains("@dangerous"));
        assert!(Rule::parse("+").is_err());
        assert!(Rule::parse("+a|b|c").is_err());
        assert!(Rule::parse("+a b").is_err());
        assert_eq!(
            Rule::parse("allcommands").unwrap(),
            Rule::parse("+@all").unwrap()
        );
    }

    #[test]
    fn later_rules_win() {
        let t = CommandTable::builtin();
        let r = rules(&["+@all", "-@dangerous", "+flushdb"]);
        assert!(rules_allow(&r, spec(&t, "get")));
        assert!(!rules_allow(&r, spec(&t, "flushall")));
        assert!(!rules_allow(&r, spec(&t, "config|set")));
        assert!(rules_allow(&r, spec(&t, "flushdb")));
        let r = rules(&["+@read"]);
        assert!(rules_allow(&r, spec(&t, "get")));
        assert!(!rules_allow(&r, spec(&t, "set")));
        assert!(!rules_allow(&[], spec(&t, "get")));
        let r = rules(&["+config", "-config|set"]);
        assert!(rules_allow(&r, spec(&t, "config|get")));
        assert!(!rules_allow(&r, spec(&t, "config|set")));
    }

    #[test]
    fn default_policy_denies_the_damaging_commands_only() {
        let t = CommandTable::builtin();
        let deny: Vec<String> = DEFAULT_DENY.iter().map(|s| s.to_string()).collect();
        let p = CommandPolicy::new(&deny, &[]).unwrap();
        for name in [
            "config|set",
            "debug",
            "shutdown",
            "cluster|reset",
            "cluster|setslot",
            "replicaof",
            "monitor",
            "bgsave",
            "module|load",
            "acl|setuser",
            "acl|list",
            "acl|getuser",
            "acl|log",
        ] {
            assert!(p.denies(spec(&t, name)), "{name}");
        }
        for name in [
            "get",
            "flushall",
            "config|get",
            "cluster|slots",
            "acl|whoami",
            "acl|cat",
        ] {
            assert!(!p.denies(spec(&t, name)), "{name}");
        }
        let p = CommandPolicy::new(&deny, &["monitor".into()]).unwrap();
        assert!(!p.denies(spec(&t, "monitor")));
        // Every default entry names a real command, so a typo cannot silently allow one.
        for name in DEFAULT_DENY {
            let _ = spec(&t, name);
        }
    }

    #[test]
    fn spec_sets_identify_specs_of_one_table() {
        let t = CommandTable::builtin();
        let set = SpecSet::collect(&t, |s| s.name.starts_with("config|"));
        assert!(set.contains(spec(&t, "config|set")));
        assert!(!set.contains(spec(&t, "config")));
        assert!(!set.contains(spec(&t, "get")));
        assert!(set.len() >= 5);
        let all = SpecSet::collect(&t, |_| true);
        assert!(all.len() > 200);
    }
}
