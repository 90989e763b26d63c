//! Learning command specs from a live server's `COMMAND` / `COMMAND INFO` reply.
//!
//! Learned arity, flags and key specs replace the built-in ones (the server knows its own version best);
//! the routing policy of a known command stays the proxy's. Unknown commands (modules, newer Redis) get a
//! policy derived from their request/response tips and key specs.

use super::flags::{CommandFlags, KeySpecFlags};
use super::spec::{BeginSearch, CommandSpec, FindKeys, KeySpec, Merge, Policy};
use super::CommandTable;
use redis_protocol::resp2::types::OwnedFrame;

/// A `COMMAND` reply the proxy could not understand; nothing was learned from it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// The server answered with an error.
    #[error("COMMAND failed on the server: {0}")]
    Server(String),
    /// The reply is not an array of command entries.
    #[error("COMMAND reply is not an array")]
    NotAnArray,
    /// One entry does not have the documented shape.
    #[error("malformed COMMAND entry {entry:?}: {reason}")]
    Malformed {
        /// Name of the entry, or its position when the name itself is unreadable.
        entry: String,
        /// What was wrong.
        reason: &'static str,
    },
}

impl CommandTable {
    /// Overlays specs from a `COMMAND INFO` (or plain `COMMAND`) reply. Learned arity, flags and key specs
    /// win for known commands; unknown commands are added with a derived policy. The reply is applied only
    /// when every entry parses. Returns how many commands and subcommands were learned.
    pub fn learn(&mut self, reply: &OwnedFrame) -> Result<usize, CommandError> {
        let entries = match reply {
            OwnedFrame::Array(entries) => entries,
            OwnedFrame::Error(e) => return Err(CommandError::Server(e.clone())),
            _ => return Err(CommandError::NotAnArray),
        };
        let mut learned = Vec::with_capacity(entries.len());
        for (pos, entry) in entries.iter().enumerate() {
            // COMMAND INFO answers nil for a name the server does not know.
            if !matches!(entry, OwnedFrame::Null) {
                learned.push(parse_entry(entry, pos, None)?);
            }
        }
        let mut count = 0;
        for spec in learned {
            count += 1 + spec.subcommands.len();
            match self.get_mut(&spec.name) {
                Some(known) => overlay(known, spec),
                None => self.insert(spec),
            }
        }
        Ok(count)
    }
}

/// Copies what the server knows into `known`, keeping the proxy's policy.
fn overlay(known: &mut CommandSpec, learned: CommandSpec) {
    known.arity = learned.arity;
    known.flags = learned.flags;
    known.key_specs = learned.key_specs;
    for mut sub in learned.subcommands {
        match known.subcommands.iter_mut().find(|s| s.name == sub.name) {
            Some(old) => overlay(old, sub),
            None => {
                // A new subcommand of a container the proxy answers or refuses itself stays that way.
                if matches!(known.policy, Policy::Local | Policy::Unsupported) {
                    sub.policy = known.policy;
                }
                known.subcommands.push(sub);
            }
        }
    }
}

/// The routing policy for a command the proxy has no knowledge of.
pub(crate) fn derive_policy(tips: &[String], key_specs: &[KeySpec]) -> Policy {
    let tip = |prefix: &str| tips.iter().find_map(|t| t.strip_prefix(prefix));
    let merge = match tip("response_policy:") {
        Some("agg_sum") => Some(Merge::SumInt),
        Some("all_succeeded") => Some(Merge::AllOk),
        Some("agg_logical_and") => Some(Merge::AndArrays),
        Some(_) => Some(Merge::First),
        None => None,
    };
    match tip("request_policy:") {
        Some("all_shards" | "all_nodes") => Policy::AllPrimaries(merge.unwrap_or(Merge::Concat)),
        // Splitting needs per-command knowledge of the argument layout, so an unknown multi-key
        // command keeps its keys together (CROSSSLOT when they span slots).
        _ if !key_specs.is_empty() => Policy::Keyed,
        _ => Policy::AnyPrimary,
    }
}

/// One command entry: `[name, arity, flags, first, last, step, acl, tips, key_specs, subcommands]`
/// (Redis 7; Redis 6 stops after `acl` and only has first/last/step for keys).
fn parse_entry(
    frame: &OwnedFrame,
    pos: usize,
    parent: Option<&str>,
) -> Result<CommandSpec, CommandError> {
    let fields = array(frame).ok_or_else(|| malformed(pos.to_string(), "not an array"))?;
    let name = fields
        .first()
        .and_then(text)
        .ok_or_else(|| malformed(pos.to_string(), "no name"))?;
    let bad = |reason| malformed(name.to_string(), reason);
    if fields.len() < 6 {
        return Err(bad("fewer than 6 fields"));
    }
    if let Some(parent) = parent {
        let ok = name
            .split_once('|')
            .is_some_and(|(p, _)| p.eq_ignore_ascii_case(parent));
        if !ok {
            return Err(bad("subcommand not named parent|sub"));
        }
    }
    let arity = int(&fields[1])
        .and_then(|a| i32::try_from(a).ok())
        .ok_or_else(|| bad("bad arity"))?;
    let mut flags = CommandFlags::EMPTY;
    for flag in array(&fields[2]).ok_or_else(|| bad("bad flags"))? {
        // Flags we do not model (newer Redis) do not change routing.
        flags |= text(flag)
            .and_then(CommandFlags::from_name)
            .unwrap_or_default();
    }
    let tips: Vec<String> = match fields.get(7) {
        Some(tips) => array(tips)
            .ok_or_else(|| bad("bad tips"))?
            .iter()
            .filter_map(|t| text(t).map(str::to_ascii_lowercase))
            .collect(),
        None => Vec::new(),
    };
    let key_specs = match fields.get(8) {
        Some(specs) => array(specs)
            .ok_or_else(|| bad("bad key specs"))?
            .iter()
            .map(|s| parse_key_spec(s).ok_or_else(|| bad("bad key spec")))
            .collect::<Result<Vec<_>, _>>()?,
        None => legacy_key_spec(&fields[3..6]).ok_or_else(|| bad("bad first/last/step"))?,
    };
    let policy = derive_policy(&tips, &key_specs);
    let mut spec = CommandSpec::new(name, arity, flags, key_specs, policy);
    if let Some(subs) = fields.get(9) {
        for (i, sub) in array(subs)
            .ok_or_else(|| bad("bad subcommands"))?
            .iter()
            .enumerate()
        {
            spec.subcommands.push(parse_entry(sub, i, Some(name))?);
        }
    }
    Ok(spec)
}

/// Redis 6's `first, last, step` as one key spec (`last` negative counts from the end).
fn legacy_key_spec(fields: &[OwnedFrame]) -> Option<Vec<KeySpec>> {
    let (first, last, step) = (int(&fields[0])?, int(&fields[1])?, int(&fields[2])?);
    if first <= 0 {
        return Some(Vec::new());
    }
    let last_key = if last < 0 { last } else { last - first };
    Some(vec![KeySpec {
        flags: KeySpecFlags::EMPTY,
        begin_search: BeginSearch::Index(usize::try_from(first).ok()?),
        find_keys: FindKeys::Range {
            last_key: i32::try_from(last_key).ok()?,
            key_step: usize::try_from(step).ok()?,
            limit: 0,
        },
    }])
}

/// A key spec map: `flags`, `begin_search`, `find_keys` (and `notes`, ignored).
fn parse_key_spec(frame: &OwnedFrame) -> Option<KeySpec> {
    let map = array(frame)?;
    let mut flags = KeySpecFlags::EMPTY;
    for flag in array(lookup(map, "flags")?)? {
        flags |= text(flag)
            .and_then(KeySpecFlags::from_name)
            .unwrap_or_default();
    }
    let (kind, spec) = typed(lookup(map, "begin_search")?)?;
    let begin_search = match kind {
        "index" => BeginSearch::Index(usize_field(spec, "index")?),
        "keyword" => BeginSearch::Keyword {
            keyword: text(lookup(spec, "keyword")?)?.to_owned(),
            start_from: i32::try_from(int(lookup(spec, "startfrom")?)?).ok()?,
        },
        _ => BeginSearch::Unknown,
    };
    let (kind, spec) = typed(lookup(map, "find_keys")?)?;
    let find_keys = match kind {
        "range" => FindKeys::Range {
            last_key: i32::try_from(int(lookup(spec, "lastkey")?)?).ok()?,
            key_step: usize_field(spec, "keystep")?,
            limit: usize_field(spec, "limit")?,
        },
        "keynum" => FindKeys::KeyNum {
            keynum_idx: usize_field(spec, "keynumidx")?,
            first_key: usize_field(spec, "firstkey")?,
            key_step: usize_field(spec, "keystep")?,
        },
        _ => FindKeys::Unknown,
    };
    Some(KeySpec {
        flags,
        begin_search,
        find_keys,
    })
}

/// A `["type", t, "spec", [..]]` map as `(t, spec fields)`.
fn typed(frame: &OwnedFrame) -> Option<(&str, &[OwnedFrame])> {
    let map = array(frame)?;
    Some((text(lookup(map, "type")?)?, array(lookup(map, "spec")?)?))
}

/// The value after `key` in a flat `[k, v, k, v …]` map.
fn lookup<'a>(map: &'a [OwnedFrame], key: &str) -> Option<&'a OwnedFrame> {
    map.chunks_exact(2)
        .find(|kv| text(&kv[0]) == Some(key))
        .map(|kv| &kv[1])
}

fn usize_field(map: &[OwnedFrame], key: &str) -> Option<usize> {
    usize::try_from(int(lookup(map, key)?)?).ok()
}

fn array(frame: &OwnedFrame) -> Option<&[OwnedFrame]> {
    match frame {
        OwnedFrame::Array(items) => Some(items),
        _ => None,
    }
}

fn text(frame: &OwnedFrame) -> Option<&str> {
    match frame {
        OwnedFrame::SimpleString(s) | OwnedFrame::BulkString(s) => std::str::from_utf8(s).ok(),
        _ => None,
    }
}

fn int(frame: &OwnedFrame) -> Option<i64> {
    match frame {
        OwnedFrame::Integer(i) => Some(*i),
        _ => None,
    }
}

fn malformed(entry: String, reason: &'static str) -> CommandError {
    CommandError::Malformed { entry, reason }
}

#[cfg(test)]
#[path = "learn_tests.rs"]
mod tests;
