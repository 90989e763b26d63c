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
    /// `SLOWLOG GET|LEN|RESET|HELP`: the proxy's own slow log.
    SlowLog,
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
    if spec.blocks(req, args) {
        // Blocking commands need a dedicated connection so they cannot stall the multiplexed
        // ones; until that exists they are refused rather than risk stalling other clients.
        return unsupported(spec);
    }
    let mut slot = None;
    for &i in keys.iter() {
        let Some(range) = args.get(i) else { continue };
        let s = key_slot(&req[range.clone()]);
        match slot {
            None => slot = Some(s),
            Some(prev) if prev != s => {
                return Decision::Error(
                    "CROSSSLOT Keys in request don't hash to the same slot".into(),
                )
            }
            Some(_) => {}
        }
    }
    Decision::Forward {
        slot,
        readonly: readonly(spec),
    }
}

fn local(spec: &CommandSpec, args: &[Range<usize>]) -> Decision {
    match spec.name.as_str() {
        "ping" => Decision::Local(LocalCmd::Ping((args.len() > 1).then_some(1))),
        "echo" => Decision::Local(LocalCmd::Echo),
        "quit" => Decision::Local(LocalCmd::Quit),
        "select" => Decision::Local(LocalCmd::Select),
        "readonly" | "readwrite" | "asking" => Decision::Local(LocalCmd::Ok),
        name if name == "slowlog" || name.starts_with("slowlog|") => {
            Decision::Local(LocalCmd::SlowLog)
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
        assert_eq!(
            decide(&["SLOWLOG", "get"]),
            Decision::Local(LocalCmd::SlowLog)
        );
        assert_eq!(
            decide(&["slowlog", "LEN"]),
            Decision::Local(LocalCmd::SlowLog)
        );
    }
}
