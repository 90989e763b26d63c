//! Decides what to do with one scanned request: forward it to a slot's owner or any primary,
//! fan it out (split by slot, or to every primary), answer it locally, or refuse it with the
//! error Redis would give.

use std::ops::Range;

use super::emulation::ClusterCmd;
use super::introspect::Query;
use super::merge::Combine;
use crate::cluster::slot::key_slot;
use crate::command::{CommandFlags, CommandSpec, KeyError, Merge, Policy, Request};

/// A command the proxy answers itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalCmd {
    /// `PING [message]`: the argument index of the message, if any.
    Ping(Option<usize>),
    /// `ECHO message`.
    Echo,
    /// `QUIT`: reply `+OK`, then close once earlier replies are written.
    Quit,
    /// `SELECT index`.
    Select,
    /// Commands that only set connection modes a proxy already provides (`READONLY`,
    /// `READWRITE`, `ASKING` from a cluster-mode client): `+OK`.
    Ok,
    /// A `CLUSTER` subcommand answered by the cluster emulation.
    Cluster(ClusterCmd),
    /// `HELLO [protover [AUTH user pass] [SETNAME name]]`: protocol switch (see `client.rs`).
    Hello,
    /// `CLIENT <subcommand>` about the client's own connection to the proxy.
    Client,
    /// `RESET`: back to a fresh connection's state.
    Reset,
    /// `SLOWLOG GET|LEN|RESET|HELP`: the proxy's own slow log.
    SlowLog,
    /// `ACL WHOAMI`: the client's own proxy user (a node would name the proxy's upstream user).
    WhoAmI,
}

/// A transaction command, handled by the session's transaction state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxCmd {
    /// `MULTI`.
    Multi,
    /// `EXEC`.
    Exec,
    /// `DISCARD`.
    Discard,
    /// `WATCH key …`, every key in `slot`.
    Watch {
        /// The slot of the watched keys.
        slot: u16,
    },
    /// `UNWATCH`.
    Unwatch,
}

/// A request that becomes several backend requests (or a rewritten one) whose replies merge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fan {
    /// Keys in several slots: one sub-request per slot (key indices are in the `keys` scratch).
    Split {
        /// How the parts' replies merge.
        merge: Merge,
        /// True when the command does not write.
        readonly: bool,
    },
    /// The same request to every primary.
    AllPrimaries {
        /// How the replies combine.
        combine: Combine,
        /// True when the command does not write.
        readonly: bool,
    },
    /// `CONFIG SET` / `CONFIG REWRITE`: every node, when `commands.allow_config_set` permits.
    AllNodes,
    /// `SCAN` over every shard in turn.
    Scan,
    /// `WAIT` (or `WAITAOF`) on each primary this client wrote to.
    Wait,
    /// `INFO`: the proxy's sections plus the keyspace of every shard.
    Info,
    /// `SCRIPT LOAD`: every primary, and the body is remembered for `NOSCRIPT` recovery.
    ScriptLoad,
    /// `SCRIPT FLUSH`: every primary, and the remembered bodies are forgotten.
    ScriptFlush,
    /// `PUBSUB` introspection: every node (or each channel's shard), merged.
    PubSub(Query),
}

/// The outcome of classifying a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Send to the primary owning `slot`, or to any primary when `slot` is `None`.
    Forward {
        /// The slot of every key, if the command has keys.
        slot: Option<u16>,
        /// True when the command does not write, so a lost connection may re-send it.
        readonly: bool,
    },
    /// Forward like `Forward`, remembering the script body (argument 1) for `NOSCRIPT` recovery.
    Eval {
        /// The slot of every key, if the script declares keys.
        slot: Option<u16>,
        /// True for `EVAL_RO`.
        readonly: bool,
    },
    /// Fan out and merge.
    Fanout(Fan),
    /// Answer locally.
    Local(LocalCmd),
    /// Reply with this error line (without the leading `-` and CRLF).
    Error(String),
    /// A transaction command.
    Transaction(TxCmd),
    /// `(S|P)SUBSCRIBE` / `(S|P)UNSUBSCRIBE`: the session's Pub/Sub state.
    Subscription,
    /// A command that may block (BLPOP, XREAD … BLOCK …): a dedicated connection to the
    /// primary of `slot` (any primary when None).
    Blocking {
        /// The slot of every key.
        slot: Option<u16>,
    },
}

/// Classifies `req` (arguments never empty). `keys` is scratch space for key indices,
/// reused across calls to avoid allocation.
pub fn classify(req: &Request<'_>, keys: &mut Vec<usize>) -> Decision {
    let Some(spec) = req.spec() else {
        return Decision::Error(unknown_command(req));
    };
    if let Err(e) = check_arity(spec, req.argc()) {
        return Decision::Error(e.to_string());
    }
    match spec.policy {
        Policy::Keyed => keyed(spec, req, keys, None),
        // Same-slot multi-key commands go straight through; cross-slot ones are split.
        Policy::Split(merge) => keyed(spec, req, keys, Some(merge)),
        Policy::AnyPrimary => cluster_wide(spec).unwrap_or(Decision::Forward {
            slot: None,
            readonly: readonly(spec),
        }),
        Policy::AllPrimaries(merge) => {
            cluster_wide(spec).unwrap_or(Decision::Fanout(Fan::AllPrimaries {
                combine: merge.into(),
                readonly: readonly(spec),
            }))
        }
        Policy::Scan => Decision::Fanout(Fan::Scan),
        Policy::Local => local(spec, req),
        Policy::Transaction => transaction(spec, req, keys),
        Policy::PubSub => Decision::Subscription,
        _ => unsupported(spec),
    }
}

/// Upper bounds (the name included) of proxy-answered commands whose table arity is "at
/// least N" while Redis's implementation refuses more arguments with the arity error itself
/// (`PING a b`). Options parsed by the command (HELLO, CLIENT LIST …) get its syntax errors.
const LOCAL_MAX_ARGS: &[(&str, usize)] = &[("ping", 2)];

/// The arity rule of the command table, plus [`LOCAL_MAX_ARGS`] for the commands the proxy
/// answers itself: one check for every command, so each gets Redis's exact error.
fn check_arity(spec: &CommandSpec, argc: usize) -> Result<(), KeyError> {
    spec.check_arity(argc)?;
    if spec.policy == Policy::Local {
        let max = LOCAL_MAX_ARGS
            .iter()
            .find(|(name, _)| *name == spec.name)
            .map(|&(_, max)| max);
        if max.is_some_and(|max| argc > max) {
            return Err(KeyError::WrongArity(spec.name.clone()));
        }
    }
    Ok(())
}

/// Cluster-wide commands whose handling the command table's policy does not say.
fn cluster_wide(spec: &CommandSpec) -> Option<Decision> {
    let all = |combine| {
        Some(Decision::Fanout(Fan::AllPrimaries {
            combine,
            readonly: true,
        }))
    };
    let pubsub = |q| Some(Decision::Fanout(Fan::PubSub(q)));
    match spec.name.as_str() {
        // One primary could be empty while others hold keys.
        "randomkey" => all(Combine::RandomNonNull),
        // The time by which every shard had saved.
        "lastsave" => all(Combine::MinInt),
        // Every primary holds the same libraries; the first shard's answer is the one reply.
        "function|list" | "function|dump" | "function|stats" => all(Combine::First),
        // WAITAOF (Redis 7.2+, Valkey) is known only when learned from such a cluster.
        "wait" | "waitaof" => Some(Decision::Fanout(Fan::Wait)),
        "config|set" | "config|rewrite" => Some(Decision::Fanout(Fan::AllNodes)),
        "script|load" => Some(Decision::Fanout(Fan::ScriptLoad)),
        "script|flush" => Some(Decision::Fanout(Fan::ScriptFlush)),
        "pubsub|channels" | "pubsub|shardchannels" => pubsub(Query::Channels),
        "pubsub|numpat" => pubsub(Query::NumPat),
        "pubsub|numsub" => pubsub(Query::NumSub),
        "pubsub|shardnumsub" => pubsub(Query::ShardNumSub),
        _ => None,
    }
}

fn readonly(spec: &CommandSpec) -> bool {
    spec.flags.contains(CommandFlags::READONLY) && !spec.flags.contains(CommandFlags::WRITE)
}

fn keyed(
    spec: &CommandSpec,
    req: &Request<'_>,
    keys: &mut Vec<usize>,
    split: Option<Merge>,
) -> Decision {
    keys.clear();
    if let Err(e) = req.key_indices(spec, keys) {
        return Decision::Error(e.to_string());
    }
    let slot = match one_slot(req, keys) {
        Ok(slot) => slot,
        Err(cross) => {
            return match split {
                Some(merge) => Decision::Fanout(Fan::Split {
                    merge,
                    readonly: readonly(spec),
                }),
                None => cross,
            }
        }
    };
    if req.blocks(spec) {
        // A dedicated connection, so a blocked command never stalls the multiplexed ones.
        // (Checked after the slots so a cross-slot BLMOVE gets CROSSSLOT, as from Redis.)
        return Decision::Blocking { slot };
    }
    let readonly = readonly(spec);
    // EVAL's body is remembered for NOSCRIPT recovery; the flag test keeps string compares
    // off the path of ordinary commands.
    if spec.flags.contains(CommandFlags::MOVABLE_KEYS)
        && matches!(spec.name.as_str(), "eval" | "eval_ro")
    {
        return Decision::Eval { slot, readonly };
    }
    Decision::Forward { slot, readonly }
}

/// The one slot every key in `keys` hashes to, or Redis's CROSSSLOT error.
fn one_slot(req: &Request<'_>, keys: &[usize]) -> Result<Option<u16>, Decision> {
    let mut slot = None;
    for &i in keys.iter() {
        let Some(key) = req.arg(i) else { continue };
        let s = key_slot(key);
        match slot {
            None => slot = Some(s),
            Some(prev) if prev != s => {
                return Err(Decision::Error(
                    "CROSSSLOT Keys in request don't hash to the same slot".into(),
                ))
            }
            Some(_) => {}
        }
    }
    Ok(slot)
}

fn transaction(spec: &CommandSpec, req: &Request<'_>, keys: &mut Vec<usize>) -> Decision {
    let cmd = match spec.name.as_str() {
        "multi" => TxCmd::Multi,
        "exec" => TxCmd::Exec,
        "discard" => TxCmd::Discard,
        "unwatch" => TxCmd::Unwatch,
        "watch" => {
            keys.clear();
            if let Err(e) = req.key_indices(spec, keys) {
                return Decision::Error(e.to_string());
            }
            match one_slot(req, keys) {
                Ok(Some(slot)) => TxCmd::Watch { slot },
                Ok(None) => return unsupported(spec),
                Err(e) => return e,
            }
        }
        _ => return unsupported(spec),
    };
    Decision::Transaction(cmd)
}

fn local(spec: &CommandSpec, req: &Request<'_>) -> Decision {
    let cluster = |cmd| Decision::Local(LocalCmd::Cluster(cmd));
    match spec.name.as_str() {
        "ping" => Decision::Local(LocalCmd::Ping((req.argc() > 1).then_some(1))),
        "echo" => Decision::Local(LocalCmd::Echo),
        "quit" => Decision::Local(LocalCmd::Quit),
        "select" => Decision::Local(LocalCmd::Select),
        "readonly" | "readwrite" | "asking" => Decision::Local(LocalCmd::Ok),
        "info" => Decision::Fanout(Fan::Info),
        "cluster|info" => cluster(ClusterCmd::Info),
        "cluster|slots" => cluster(ClusterCmd::Slots),
        "cluster|shards" => cluster(ClusterCmd::Shards),
        "cluster|nodes" => cluster(ClusterCmd::Nodes),
        "cluster|myid" => cluster(ClusterCmd::MyId),
        "cluster|keyslot" => cluster(ClusterCmd::KeySlot),
        // Counted by the slot's owner; a malformed slot goes to any node, whose error is
        // exactly Redis's.
        "cluster|countkeysinslot" | "cluster|getkeysinslot" => Decision::Forward {
            slot: slot_arg(req),
            readonly: true,
        },
        "cluster|help" => Decision::Forward {
            slot: None,
            readonly: true,
        },
        "cluster" => Decision::Error(format!(
            "ERR unknown subcommand '{}'. Try CLUSTER HELP.",
            req.arg(1)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .unwrap_or_default()
        )),
        name if name.starts_with("cluster|") => Decision::Error(format!(
            "ERR slotway: CLUSTER {} is not available through the proxy",
            name["cluster|".len()..].to_ascii_uppercase()
        )),
        "hello" => Decision::Local(LocalCmd::Hello),
        name if name == "slowlog" || name.starts_with("slowlog|") => {
            Decision::Local(LocalCmd::SlowLog)
        }
        "reset" => Decision::Local(LocalCmd::Reset),
        "acl|whoami" => Decision::Local(LocalCmd::WhoAmI),
        name if name == "client" || name.starts_with("client|") => {
            Decision::Local(LocalCmd::Client)
        }
        _ => unsupported(spec),
    }
}

/// Argument 2 as a slot number, if it is one.
fn slot_arg(req: &Request<'_>) -> Option<u16> {
    let text = std::str::from_utf8(req.arg(2)?).ok()?;
    text.parse::<u16>()
        .ok()
        .filter(|&s| usize::from(s) < crate::cluster::topology::SLOTS)
}

fn unsupported(spec: &CommandSpec) -> Decision {
    Decision::Error(format!("ERR unsupported command '{}'", spec.name))
}

/// Redis's text for a command it does not know, quoting up to 128 bytes of each argument.
fn unknown_command(req: &Request<'_>) -> String {
    let show = |r: &Range<usize>| {
        let bytes = req.slice(&(r.start..r.end.min(r.start + 128)));
        String::from_utf8_lossy(bytes).into_owned()
    };
    let args = req.args();
    let mut msg = format!(
        "ERR unknown command '{}', with args beginning with: ",
        args.first().map(show).unwrap_or_default()
    );
    for r in args.iter().skip(1) {
        if msg.len() > 512 {
            break;
        }
        msg.push('\'');
        msg.push_str(&show(r));
        msg.push_str("' ");
    }
    // An error line must not contain line breaks.
    msg.retain(|c| c != '\r' && c != '\n');
    msg
}

#[cfg(test)]
#[path = "classify_tests.rs"]
mod tests;
