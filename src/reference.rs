//! The command reference (`docs/commands.md`): every command grouped by how slotway routes it.
//!
//! Generated, never hand-written, so it cannot drift: the group and route of each command come from the
//! table's [`Policy`] refined by the proxy's own classifier (`crate::proxy::classify`) run on a minimal
//! request, and the default deny list comes from `crate::security::policy::DEFAULT_DENY`. It documents
//! the command table and the proxy together, so it sits above both (beside `status`), and the command
//! layer itself imports nothing from the proxy.

use std::fmt::Write as _;
use std::ops::Range;

use crate::command::Quirk;
use crate::command::{
    BeginSearch, CommandFlags, CommandSpec, CommandTable, FindKeys, KeySpecFlags,
};
use crate::command::{KeySpec, Merge, Policy};
use crate::proxy::introspect::Query;
use crate::proxy::merge::Combine;
use crate::proxy::{classify, Decision, Fan, LocalCmd};
use crate::security::policy::DEFAULT_DENY;

/// How slotway routes a group of commands; the order is the document's order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Group {
    SingleSlot,
    Split,
    AllPrimaries,
    AnyPrimary,
    Proxy,
    Transaction,
    PubSub,
    Blocking,
    Scan,
    Refused,
}

impl Group {
    const ALL: [Group; 10] = [
        Group::SingleSlot,
        Group::Split,
        Group::AllPrimaries,
        Group::AnyPrimary,
        Group::Proxy,
        Group::Transaction,
        Group::PubSub,
        Group::Blocking,
        Group::Scan,
        Group::Refused,
    ];

    fn title(self) -> &'static str {
        match self {
            Group::SingleSlot => "Single slot",
            Group::Split => "Split by slot and merged",
            Group::AllPrimaries => "Every primary (or every node), replies combined",
            Group::AnyPrimary => "Any primary",
            Group::Proxy => "Answered by the proxy",
            Group::Transaction => "Transactions",
            Group::PubSub => "Pub/Sub subscriptions",
            Group::Blocking => "Blocking, on a dedicated connection",
            Group::Scan => "SCAN",
            Group::Refused => "Refused (unsupported)",
        }
    }

    fn intro(self) -> &'static str {
        match self {
            Group::SingleSlot => {
                "Sent to the primary that owns the slot of the keys. Every key must hash to the same slot, \
                 otherwise the client gets `-CROSSSLOT Keys in request don't hash to the same slot`, exactly as \
                 from Redis. A command called without keys goes to any primary. EVAL / EVAL_RO bodies are \
                 remembered so a `NOSCRIPT` after a failover or resharding is answered by loading the script on \
                 the new node."
            }
            Group::Split => {
                "Keys in one slot: forwarded like a single-slot command. Keys in several slots: split into one \
                 request per slot, sent in parallel, and the replies merged as the Route column says. If any \
                 part fails the client gets an error, never a silent partial answer."
            }
            Group::AllPrimaries => {
                "Sent to every primary of the cluster; the replies become one reply as the Route column says."
            }
            Group::AnyPrimary => {
                "Keyless; any primary answers (the proxy spreads them over the primaries it knows)."
            }
            Group::Proxy => {
                "Answered by slotway itself, about the client's own connection to the proxy, or by the \
                 cluster emulation (slotway poses as a single-node cluster owning all 16384 slots). `AUTH` and \
                 `HELLO … AUTH` are checked by slotway's security layer. Of the `CLIENT` subcommands, \
                 `TRACKING` (except `OFF`), `CACHING`, `REPLY` (except `ON`), `KILL`, `PAUSE`, `UNPAUSE` and \
                 `UNBLOCK` answer an error, because they concern connections to the nodes, which slotway shares \
                 between clients."
            }
            Group::Transaction => {
                "Handled on a backend connection pinned to the client for the whole transaction. Every key in \
                 the transaction (and in `WATCH`) must hash to one slot; a `MOVED` or a lost connection inside \
                 the transaction ends it with a clear error."
            }
            Group::PubSub => {
                "Handled by the session's Pub/Sub state: `SUBSCRIBE` / `PSUBSCRIBE` are cluster-wide, \
                 `SSUBSCRIBE` goes to the shard that owns the channel's slot. Subscriptions are restored after \
                 a failover or slot move; a subscriber that does not read is disconnected past a bounded buffer."
            }
            Group::Blocking => {
                "Sent like single-slot commands, but on a dedicated backend connection from a bounded pool, so \
                 a blocked command never stalls the multiplexed connections. `XREAD` / `XREADGROUP` (listed as \
                 single-slot) take this path too when called with `BLOCK`."
            }
            Group::Scan => {
                "Iterates every shard in turn with an opaque cursor that encodes the shard and that shard's \
                 cursor; `MATCH`, `COUNT` and `TYPE` are passed on."
            }
            Group::Refused => {
                "Something a proxy in front of a shared cluster cannot honour; the client gets the error shown."
            }
        }
    }
}

/// Renders the whole reference as Markdown: one table per routing group, then the default deny list.
pub fn markdown(table: &CommandTable) -> String {
    let rows: Vec<(Group, Row)> = leaves(table).map(|spec| row(table, spec)).collect();
    let mut out = String::new();
    out.push_str("# slotway command reference\n\n");
    out.push_str(
        "<!-- Generated by `cargo run -- commands > docs/commands.md`; do not edit by hand. -->\n\n",
    );
    out.push_str(
        "How slotway routes every Redis command and subcommand it knows, generated from its command table \
         and its request classifier. Arity counts the command name (and the subcommand) as Redis does: \
         `3` means exactly three arguments, `≥ 3` at least three. Key positions count the command name as \
         argument 0. Commands marked **denied by default** are refused by the default command policy \
         (see the last section).\n\n",
    );
    for group in Group::ALL {
        let in_group: Vec<&Row> = rows
            .iter()
            .filter(|(g, _)| *g == group)
            .map(|(_, r)| r)
            .collect();
        if in_group.is_empty() {
            continue;
        }
        let _ = write!(
            out,
            "## {} ({})\n\n{}\n\n",
            group.title(),
            in_group.len(),
            group.intro()
        );
        out.push_str("| Command | Arity | Keys | Flags | Route |\n");
        out.push_str("|---|---|---|---|---|\n");
        for r in in_group {
            let _ = writeln!(
                out,
                "| `{}` | {} | {} | {} | {} |",
                r.name,
                r.arity,
                cell(&r.keys),
                cell(&r.flags),
                cell(&r.route)
            );
        }
        out.push('\n');
    }
    out.push_str("## Default command-policy deny list\n\n");
    out.push_str(
        "Refused with `-ERR command '<name>' is disabled by slotway's command policy` unless the \
         configuration's `policy.allow` lists them: they reconfigure, stop, reshard or spy on the cluster \
         behind every client's back. A container name denies all its subcommands.\n\n",
    );
    for name in DEFAULT_DENY {
        let _ = writeln!(out, "- `{}`", display_name(name));
    }
    out
}

/// One rendered table row.
struct Row {
    name: String,
    arity: String,
    keys: String,
    flags: String,
    route: String,
}

/// Every command a client can run: top-level commands without subcommands, and every subcommand.
fn leaves(table: &CommandTable) -> impl Iterator<Item = &CommandSpec> {
    table.iter().flat_map(|spec| {
        let own = (!spec.is_container()).then_some(spec);
        own.into_iter().chain(spec.subcommands.iter())
    })
}

fn row(table: &CommandTable, spec: &CommandSpec) -> (Group, Row) {
    let (group, mut route) = route(table, spec);
    if denied_by_default(&spec.name) {
        route = if route.is_empty() {
            "**denied by default**".to_owned()
        } else {
            format!("{route}; **denied by default**")
        };
    }
    let arity = if spec.arity >= 0 {
        spec.arity.to_string()
    } else {
        format!("≥ {}", spec.arity.unsigned_abs())
    };
    let row = Row {
        name: display_name(&spec.name),
        arity,
        keys: keys_in_words(spec),
        flags: spec.flags.names().collect::<Vec<_>>().join(", "),
        route,
    };
    (group, row)
}

/// The group of `spec` and the details its table shows in the Route column.
fn route(table: &CommandTable, spec: &CommandSpec) -> (Group, String) {
    match spec.policy {
        // XREAD/XREADGROUP carry the blocking flag, but only block (and so only take a
        // dedicated connection) with a BLOCK option: `CommandSpec::blocks` decides per request.
        Policy::Keyed if matches!(spec.quirk, Quirk::XRead { .. }) => (
            Group::SingleSlot,
            "a dedicated connection when called with `BLOCK`".to_owned(),
        ),
        Policy::Keyed if spec.flags.contains(CommandFlags::BLOCKING) => {
            (Group::Blocking, String::new())
        }
        Policy::Keyed if spec.key_specs.is_empty() => {
            (Group::SingleSlot, "no keys: any primary".to_owned())
        }
        Policy::Keyed => (Group::SingleSlot, String::new()),
        Policy::Split(merge) => (Group::Split, merge_words(merge).to_owned()),
        Policy::Scan => (Group::Scan, String::new()),
        Policy::Transaction => (Group::Transaction, String::new()),
        Policy::PubSub => (Group::PubSub, String::new()),
        Policy::AnyPrimary | Policy::AllPrimaries(_) | Policy::Local | Policy::Unsupported => {
            classified(table, spec)
        }
    }
}

/// Runs the proxy's classifier on the smallest request `spec` accepts and names the outcome.
fn classified(table: &CommandTable, spec: &CommandSpec) -> (Group, String) {
    // AUTH (and HELLO's AUTH) never reach the classifier: the security layer answers them.
    if spec.name == "auth" {
        return (Group::Proxy, "security layer".to_owned());
    }
    let (req, args) = minimal_request(spec);
    let req = bytes::Bytes::from(req);
    let decision = classify(
        &crate::command::Request::new(table, &req, &args),
        &mut Vec::new(),
    );
    let text = |s: &str| s.to_owned();
    match decision {
        Decision::Forward { slot: None, .. } | Decision::Eval { slot: None, .. } => {
            (Group::AnyPrimary, String::new())
        }
        Decision::Forward { slot: Some(_), .. } | Decision::Eval { slot: Some(_), .. } => (
            Group::SingleSlot,
            text("owner of the slot given as argument"),
        ),
        Decision::Fanout(fan) => (Group::AllPrimaries, fan_words(fan).to_owned()),
        Decision::Local(cmd) => (Group::Proxy, local_words(&cmd).to_owned()),
        Decision::Error(msg) => (Group::Refused, format!("`-{msg}`")),
        Decision::Transaction(_) => (Group::Transaction, String::new()),
        Decision::Subscription => (Group::PubSub, String::new()),
        Decision::Blocking { .. } => (Group::Blocking, String::new()),
    }
}

/// The command name (and subcommand), padded with `0` arguments up to the minimum arity.
fn minimal_request(spec: &CommandSpec) -> (Vec<u8>, Vec<Range<usize>>) {
    let mut words: Vec<&str> = spec.name.split('|').collect();
    let need = spec.arity.unsigned_abs() as usize;
    while words.len() < need {
        words.push("0");
    }
    let mut req = Vec::new();
    let mut args = Vec::new();
    for w in words {
        let start = req.len();
        req.extend_from_slice(w.as_bytes());
        args.push(start..req.len());
    }
    (req, args)
}

fn merge_words(merge: Merge) -> &'static str {
    match merge {
        Merge::Values => "values back in the client's key order",
        Merge::AllOk => "`+OK` when every part says `+OK`",
        Merge::SumInt => "sum of the integer replies",
        Merge::Concat => "concatenation of the arrays",
        Merge::AllEqual => "the one reply, which every part must agree on",
        Merge::AndArrays => "element-wise AND of the 0/1 arrays",
        Merge::First => "the first successful reply",
    }
}

fn combine_words(combine: Combine) -> &'static str {
    match combine {
        Combine::AllOk => "every primary; `+OK` when all say `+OK`",
        Combine::SumInt => "every primary; sum of the integers",
        Combine::Concat => "every primary; concatenation of the arrays",
        Combine::AllEqual => "every primary; the one reply, which all must agree on",
        Combine::AndArrays => "every primary; element-wise AND of the 0/1 arrays",
        Combine::First => "every primary; the first successful reply",
        Combine::MinInt => "every primary; the smallest integer",
        Combine::MinArrays => "every primary; the element-wise smallest integers",
        Combine::RandomNonNull => "every primary; a random non-null reply",
        Combine::Union => "every primary; each element once",
    }
}

fn fan_words(fan: Fan) -> &'static str {
    match fan {
        Fan::AllPrimaries { combine, .. } => combine_words(combine),
        Fan::Split { merge, .. } => merge_words(merge),
        Fan::AllNodes => "every node, when `commands.allow_config_set` permits (default: refused)",
        Fan::Scan => "every shard in turn",
        Fan::Wait => "each primary this client wrote to; the smallest count",
        Fan::Info => "the proxy's own sections plus the keyspace summed over the shards",
        Fan::ScriptLoad => {
            "every primary; the SHA1, and the body is remembered for `NOSCRIPT` recovery"
        }
        Fan::ScriptFlush => "every primary; `+OK`, and the remembered bodies are forgotten",
        Fan::PubSub(Query::Channels) => "every node, primaries and replicas; the union",
        Fan::PubSub(Query::NumPat) => "every node, primaries and replicas; the sum",
        Fan::PubSub(Query::NumSub) => {
            "every node, primaries and replicas; each channel's counts summed"
        }
        Fan::PubSub(Query::ShardNumSub) => {
            "the nodes of each channel's shard; each channel's counts summed"
        }
    }
}

fn local_words(cmd: &LocalCmd) -> &'static str {
    match cmd {
        LocalCmd::Ping(_) => "`PONG` or the message",
        LocalCmd::Echo => "the message",
        LocalCmd::Quit => "`+OK`, then closes the connection",
        LocalCmd::Select => "only database 0 exists in a cluster",
        LocalCmd::Ok => "`+OK`: the proxy already provides this mode",
        LocalCmd::Cluster(_) => "cluster emulation",
        LocalCmd::Hello => "protocol switch (RESP2 / RESP3), AUTH and SETNAME",
        LocalCmd::Client => "the client's own connection to the proxy",
        LocalCmd::Reset => {
            "back to a fresh connection's state, unauthenticated when authentication is on"
        }
        LocalCmd::WhoAmI => "the client's own proxy user, never the proxy's upstream user",
        LocalCmd::SlowLog => "the proxy's own slow log (commands slower than the threshold)",
    }
}

/// Key positions of `spec` in words, one clause per key spec.
fn keys_in_words(spec: &CommandSpec) -> String {
    if spec.key_specs.is_empty() {
        return String::new();
    }
    let clauses: Vec<String> = spec.key_specs.iter().map(key_spec_words).collect();
    clauses.join("; ")
}

fn key_spec_words(ks: &KeySpec) -> String {
    let what = if ks.flags.contains(KeySpecFlags::NOT_KEY) {
        "channel"
    } else {
        "key"
    };
    let access = ["RO", "RW", "OW", "RM"]
        .into_iter()
        .find(|n| KeySpecFlags::from_name(n).is_some_and(|f| ks.flags.contains(f)))
        .map(|n| format!(" ({n})"))
        .unwrap_or_default();
    let at = match (&ks.begin_search, &ks.find_keys) {
        (BeginSearch::Unknown, _) | (_, FindKeys::Unknown) => {
            return format!("{what}s found by parsing the arguments{access}");
        }
        (BeginSearch::Index(i), fk) => positions(*i, fk, ""),
        (
            BeginSearch::Keyword {
                keyword,
                start_from,
            },
            fk,
        ) => {
            let dir = if *start_from < 0 {
                " (searched from the end)"
            } else {
                ""
            };
            positions(
                1,
                fk,
                &format!(" after `{}`{dir}", keyword.to_ascii_uppercase()),
            )
        }
    };
    format!("{what}{at}{access}")
}

/// Where keys sit, given the first candidate index `i` (or, after a keyword, relative to it).
fn positions(i: usize, fk: &FindKeys, after: &str) -> String {
    let anchor = |k: usize| {
        if after.is_empty() {
            format!("arg {k}")
        } else if k == 1 {
            format!("the arg{after}")
        } else {
            format!("arg +{k}{after}")
        }
    };
    match *fk {
        FindKeys::Range { last_key: 0, .. } => format!(" at {}", anchor(i)),
        FindKeys::Range {
            last_key,
            key_step,
            limit,
        } => {
            let step = match key_step {
                1 => String::new(),
                2 => ", every 2nd".to_owned(),
                n => format!(", every {n}th"),
            };
            if last_key < 0 && limit > 1 {
                return format!(
                    "s in the first 1/{limit} of the args from {}{step}",
                    anchor(i)
                );
            }
            let end = match last_key {
                -1 => "the last".to_owned(),
                -2 => "the second-to-last".to_owned(),
                n if n < 0 => format!("{} from the end", n.unsigned_abs()),
                n => format!("+{n}"),
            };
            format!("s from {} to {end}{step}", anchor(i))
        }
        FindKeys::KeyNum {
            keynum_idx,
            first_key,
            key_step,
        } => {
            let step = if key_step > 1 {
                format!(", every {key_step}")
            } else {
                String::new()
            };
            format!(
                "s counted by {}, from {}{step}",
                anchor(i + keynum_idx),
                anchor(i + first_key)
            )
        }
        FindKeys::Unknown => String::new(),
    }
}

/// True when the default deny list names the command or its container.
fn denied_by_default(name: &str) -> bool {
    let parent = name.split('|').next().unwrap_or(name);
    DEFAULT_DENY.iter().any(|d| *d == name || *d == parent)
}

/// `config|set` → `CONFIG SET`.
fn display_name(name: &str) -> String {
    name.replace('|', " ").to_ascii_uppercase()
}

/// A table cell: pipes escaped, line breaks flattened.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace(['\r', '\n'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc() -> String {
        markdown(&CommandTable::builtin())
    }

    fn line_of(doc: &str, name: &str) -> String {
        let needle = format!("| `{name}` |");
        doc.lines()
            .find(|l| l.starts_with(&needle))
            .unwrap_or_else(|| panic!("no row for {name}"))
            .to_owned()
    }

    /// The section (heading to next heading) that holds `name`'s row.
    fn section_of(doc: &str, name: &str) -> String {
        let needle = format!("| `{name}` |");
        let mut current = "";
        for l in doc.lines() {
            if let Some(h) = l.strip_prefix("## ") {
                current = h;
            }
            if l.starts_with(&needle) {
                return current.to_owned();
            }
        }
        panic!("no row for {name}")
    }

    #[test]
    fn every_leaf_command_has_one_row() {
        let t = CommandTable::builtin();
        let d = doc();
        for spec in leaves(&t) {
            let needle = format!("| `{}` |", display_name(&spec.name));
            assert_eq!(d.matches(&needle).count(), 1, "{}", spec.name);
        }
        assert!(leaves(&t).all(|s| !s.is_container()));
    }

    #[test]
    fn groups_follow_the_classifier() {
        let d = doc();
        for (name, group) in [
            ("GET", Group::SingleSlot),
            ("MGET", Group::Split),
            ("DBSIZE", Group::AllPrimaries),
            ("RANDOMKEY", Group::AllPrimaries),
            ("WAIT", Group::AllPrimaries),
            ("CONFIG SET", Group::AllPrimaries),
            ("CONFIG GET", Group::AnyPrimary),
            ("TIME", Group::AnyPrimary),
            ("PING", Group::Proxy),
            ("INFO", Group::AllPrimaries),
            ("CLUSTER SLOTS", Group::Proxy),
            ("CLUSTER COUNTKEYSINSLOT", Group::SingleSlot),
            ("CLUSTER MEET", Group::Refused),
            ("AUTH", Group::Proxy),
            ("MULTI", Group::Transaction),
            ("SSUBSCRIBE", Group::PubSub),
            ("BLPOP", Group::Blocking),
            ("XREADGROUP", Group::SingleSlot),
            ("SCAN", Group::Scan),
            ("MONITOR", Group::Refused),
        ] {
            assert!(
                section_of(&d, name).starts_with(group.title()),
                "{name} is not under {}",
                group.title()
            );
        }
    }

    #[test]
    fn rows_describe_keys_merges_and_denials() {
        let d = doc();
        assert!(line_of(&d, "GET").contains("key at arg 1 (RO)"));
        assert!(line_of(&d, "MSET").contains("keys from arg 1 to the last, every 2nd (OW)"));
        assert!(line_of(&d, "BLPOP").contains("to the second-to-last"));
        assert!(line_of(&d, "EVAL").contains("keys counted by arg 2, from arg 3"));
        assert!(line_of(&d, "XREAD")
            .contains("keys in the first 1/2 of the args from the arg after `STREAMS`"));
        assert!(line_of(&d, "XREAD").contains("dedicated connection when called with `BLOCK`"));
        assert!(line_of(&d, "SPUBLISH").contains("channel at arg 1"));
        assert!(line_of(&d, "MGET").contains("client's key order"));
        assert!(line_of(&d, "DEL").contains("sum of the integer replies"));
        assert!(line_of(&d, "MSET").contains("≥ 3"));
        assert!(line_of(&d, "CONFIG SET").contains("**denied by default**"));
        assert!(line_of(&d, "MODULE LOAD").contains("**denied by default**"));
        assert!(!line_of(&d, "CONFIG GET").contains("denied"));
        assert!(d.contains("## Default command-policy deny list"));
        assert!(d.contains("- `CLUSTER SETSLOT`"));
    }
}
