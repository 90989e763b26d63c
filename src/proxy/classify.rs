//! Decides what to do with one scanned request: forward it to a slot's owner or any primary,
//! answer it locally, or refuse it with the error Redis would give.

use std::ops::Range;

use crate::cluster::slot::key_slot;
use crate::command::{CommandFlags, CommandSpec, CommandTable, Policy};

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
    /// `HELLO [protover [AUTH user pass] [SETNAME name]]`: protocol switch (see `client.rs`).
    Hello,
    /// `CLIENT <subcommand>` about the client's own connection to the proxy.
    Client,
    /// `RESET`: back to a fresh connection's state.
    Reset,
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

/// Classifies the request whose raw bytes are `req` and arguments `args` (never empty).
/// `keys` is scratch space for key indices, reused across calls to avoid allocation.
pub fn classify(
    table: &CommandTable,
    req: &[u8],
    args: &[Range<usize>],
    keys: &mut Vec<usize>,
) -> Decision {
    let Some(spec) = table.resolve(req, args) else {
        return Decision::Error(unknown_command(req, args));
    };
    if let Err(e) = spec.check_arity(args.len()) {
        return Decision::Error(e.to_string());
    }
    match spec.policy {
        // Same-slot multi-key commands go straight through; cross-slot ones get CROSSSLOT
        // until split-and-merge exists.
        Policy::Keyed | Policy::Split(_) => keyed(spec, req, args, keys),
        Policy::AnyPrimary => Decision::Forward {
            slot: None,
            readonly: readonly(spec),
        },
        Policy::Local => local(spec, args),
        Policy::Transaction => transaction(spec, req, args, keys),
        Policy::PubSub => Decision::Subscription,
        _ => unsupported(spec),
    }
}

fn readonly(spec: &CommandSpec) -> bool {
    spec.flags.contains(CommandFlags::READONLY) && !spec.flags.contains(CommandFlags::WRITE)
}

fn keyed(spec: &CommandSpec, req: &[u8], args: &[Range<usize>], keys: &mut Vec<usize>) -> Decision {
    keys.clear();
    if let Err(e) = spec.key_indices(req, args, keys) {
        return Decision::Error(e.to_string());
    }
    let slot = match one_slot(req, args, keys) {
        Ok(slot) => slot,
        Err(e) => return e,
    };
    if spec.blocks(req, args) {
        // A dedicated connection, so a blocked command never stalls the multiplexed ones.
        return Decision::Blocking { slot };
    }
    Decision::Forward {
        slot,
        readonly: readonly(spec),
    }
}

/// The one slot every key in `keys` hashes to, or Redis's CROSSSLOT error.
fn one_slot(req: &[u8], args: &[Range<usize>], keys: &[usize]) -> Result<Option<u16>, Decision> {
    let mut slot = None;
    for &i in keys.iter() {
        let Some(range) = args.get(i) else { continue };
        let s = key_slot(&req[range.clone()]);
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

fn transaction(
    spec: &CommandSpec,
    req: &[u8],
    args: &[Range<usize>],
    keys: &mut Vec<usize>,
) -> Decision {
    let cmd = match spec.name.as_str() {
        "multi" => TxCmd::Multi,
        "exec" => TxCmd::Exec,
        "discard" => TxCmd::Discard,
        "unwatch" => TxCmd::Unwatch,
        "watch" => {
            keys.clear();
            if let Err(e) = spec.key_indices(req, args, keys) {
                return Decision::Error(e.to_string());
            }
            match one_slot(req, args, keys) {
                Ok(Some(slot)) => TxCmd::Watch { slot },
                Ok(None) => return unsupported(spec),
                Err(e) => return e,
            }
        }
        _ => return unsupported(spec),
    };
    Decision::Transaction(cmd)
}

fn local(spec: &CommandSpec, args: &[Range<usize>]) -> Decision {
    match spec.name.as_str() {
        "ping" => Decision::Local(LocalCmd::Ping((args.len() > 1).then_some(1))),
        "echo" => Decision::Local(LocalCmd::Echo),
        "quit" => Decision::Local(LocalCmd::Quit),
        "select" => Decision::Local(LocalCmd::Select),
        "readonly" | "readwrite" | "asking" => Decision::Local(LocalCmd::Ok),
        "hello" => Decision::Local(LocalCmd::Hello),
        "reset" => Decision::Local(LocalCmd::Reset),
        name if name == "client" || name.starts_with("client|") => {
            Decision::Local(LocalCmd::Client)
        }
        _ => unsupported(spec),
    }
}

fn unsupported(spec: &CommandSpec) -> Decision {
    Decision::Error(format!("ERR unsupported command '{}'", spec.name))
}

/// Redis's text for a command it does not know, quoting up to 128 bytes of each argument.
fn unknown_command(req: &[u8], args: &[Range<usize>]) -> String {
    let show = |r: &Range<usize>| {
        let bytes = &req[r.start..r.end.min(r.start + 128)];
        String::from_utf8_lossy(bytes).into_owned()
    };
    let mut msg = format!(
        "ERR unknown command '{}', with args beginning with: ",
        show(&args[0])
    );
    for r in &args[1..] {
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
mod tests {
    use super::*;

    fn request(args: &[&str]) -> (Vec<u8>, Vec<Range<usize>>) {
        let mut raw = Vec::new();
        let mut ranges = Vec::new();
        for a in args {
            let start = raw.len();
            raw.extend_from_slice(a.as_bytes());
            ranges.push(start..raw.len());
            raw.push(b' ');
        }
        (raw, ranges)
    }

    fn decide(args: &[&str]) -> Decision {
        let (raw, ranges) = request(args);
        classify(&CommandTable::builtin(), &raw, &ranges, &mut Vec::new())
    }

    #[test]
    fn single_key_commands_route_by_slot() {
        assert_eq!(
            decide(&["GET", "foo"]),
            Decision::Forward {
                slot: Some(12182),
                readonly: true
            }
        );
        assert_eq!(
            decide(&["set", "foo", "bar"]),
            Decision::Forward {
                slot: Some(12182),
                readonly: false
            }
        );
    }

    #[test]
    fn multi_key_commands_need_one_slot() {
        assert!(matches!(
            decide(&["MSET", "{u}a", "1", "{u}b", "2"]),
            Decision::Forward { slot: Some(_), .. } | Decision::Error(_)
        ));
        assert_eq!(
            decide(&["RENAME", "a", "b"]),
            Decision::Error("CROSSSLOT Keys in request don't hash to the same slot".into())
        );
        assert!(matches!(
            decide(&["RENAME", "{x}a", "{x}b"]),
            Decision::Forward { slot: Some(_), .. }
        ));
    }

    #[test]
    fn errors_match_redis_wording() {
        assert_eq!(
            decide(&["GET"]),
            Decision::Error("ERR wrong number of arguments for 'get' command".into())
        );
        assert_eq!(
            decide(&["NOPE", "a", "b"]),
            Decision::Error(
                "ERR unknown command 'NOPE', with args beginning with: 'a' 'b' ".into()
            )
        );
    }

    #[test]
    fn local_commands() {
        assert_eq!(decide(&["PING"]), Decision::Local(LocalCmd::Ping(None)));
        assert_eq!(
            decide(&["ping", "x"]),
            Decision::Local(LocalCmd::Ping(Some(1)))
        );
        assert_eq!(decide(&["ECHO", "x"]), Decision::Local(LocalCmd::Echo));
        assert_eq!(decide(&["QUIT"]), Decision::Local(LocalCmd::Quit));
        assert_eq!(decide(&["SELECT", "0"]), Decision::Local(LocalCmd::Select));
        assert_eq!(decide(&["HELLO", "3"]), Decision::Local(LocalCmd::Hello));
        assert_eq!(decide(&["RESET"]), Decision::Local(LocalCmd::Reset));
        assert_eq!(
            decide(&["CLIENT", "SETNAME", "x"]),
            Decision::Local(LocalCmd::Client)
        );
        assert_eq!(
            decide(&["CLIENT", "NOSUCH"]),
            Decision::Local(LocalCmd::Client)
        );
    }

    #[test]
    fn pinned_commands() {
        assert_eq!(
            decide(&["BLPOP", "{a}x", "{a}y", "0"]),
            Decision::Blocking {
                slot: Some(key_slot(b"a"))
            }
        );
        assert_eq!(
            decide(&["XREAD", "BLOCK", "10", "STREAMS", "s", "0"]),
            Decision::Blocking {
                slot: Some(key_slot(b"s"))
            }
        );
        assert!(matches!(
            decide(&["XREAD", "STREAMS", "s", "0"]),
            Decision::Forward { .. }
        ));
        assert_eq!(
            decide(&["BLPOP", "a", "b", "0"]),
            Decision::Error("CROSSSLOT Keys in request don't hash to the same slot".into())
        );
        assert_eq!(decide(&["MULTI"]), Decision::Transaction(TxCmd::Multi));
        assert_eq!(decide(&["exec"]), Decision::Transaction(TxCmd::Exec));
        assert_eq!(
            decide(&["WATCH", "{u}a", "{u}b"]),
            Decision::Transaction(TxCmd::Watch {
                slot: key_slot(b"u")
            })
        );
        assert_eq!(
            decide(&["WATCH", "a", "b"]),
            Decision::Error("CROSSSLOT Keys in request don't hash to the same slot".into())
        );
        assert_eq!(decide(&["SUBSCRIBE", "c"]), Decision::Subscription);
        assert_eq!(decide(&["SSUBSCRIBE", "c"]), Decision::Subscription);
        assert_eq!(decide(&["UNSUBSCRIBE"]), Decision::Subscription);
    }
}
