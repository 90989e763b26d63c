//! One command's routing facts: arity, flags, key specs (Redis 7 model), routing policy and subcommands.

use super::flags::{CommandFlags, KeySpecFlags};
use super::keys::{arg, KeyError};
use std::ops::Range;

/// Where a key spec starts looking for keys (Redis 7 `begin_search`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BeginSearch {
    /// At a fixed argument index (0 is the command name).
    Index(usize),
    /// Just after `keyword`, searched from `start_from` (negative: from the end, backwards).
    Keyword {
        /// The keyword, compared ASCII case-insensitively.
        keyword: String,
        /// First index searched; negative counts from the end and searches backwards.
        start_from: i32,
    },
    /// Cannot be told from the arguments alone (e.g. SORT's STORE).
    Unknown,
}

/// How a key spec finds keys once it knows where to start (Redis 7 `find_keys`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FindKeys {
    /// Keys from the start to `last_key` (relative; negative counts from the end), every `key_step`.
    Range {
        /// Last key relative to the start; negative: relative to the end (or to `limit`).
        last_key: i32,
        /// Distance between keys (2 for key-value pairs).
        key_step: usize,
        /// When `last_key` is negative and `limit` > 1, only the first 1/`limit` of the rest holds keys.
        limit: usize,
    },
    /// A count argument at `keynum_idx` (relative to the start), keys from `first_key` after the start.
    KeyNum {
        /// Index of the key count, relative to the start.
        keynum_idx: usize,
        /// Index of the first key, relative to the start.
        first_key: usize,
        /// Distance between keys.
        key_step: usize,
    },
    /// Cannot be told from the arguments alone.
    Unknown,
}

/// One Redis 7 key spec: a search start plus a rule for the keys after it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeySpec {
    /// How the command uses the keys (RO/RW/OW/RM, not_key, incomplete …).
    pub flags: KeySpecFlags,
    /// Where the search starts.
    pub begin_search: BeginSearch,
    /// Which arguments after the start are keys.
    pub find_keys: FindKeys,
}

/// How replies from several nodes become one reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Merge {
    /// One value per key, put back in the client's key order (MGET).
    Values,
    /// `+OK` when every part answered `+OK`, else the first error.
    AllOk,
    /// Sum of the integer replies.
    SumInt,
    /// Concatenation of the array replies.
    Concat,
    /// Every node's reply, which must all be equal (SCRIPT LOAD's SHA1).
    AllEqual,
    /// Element-wise logical AND of 0/1 arrays (SCRIPT EXISTS).
    AndArrays,
    /// The first successful reply; errors only when every node failed (SCRIPT KILL).
    First,
}

/// How the proxy routes a command (proxy knowledge, not from Redis; learned commands get a derived policy).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Policy {
    /// Route to the slot of its keys; all keys must share one slot (else CROSSSLOT). No key: any primary.
    Keyed,
    /// Split per slot, send the parts, merge the replies.
    Split(Merge),
    /// Send to every primary and merge the replies.
    AllPrimaries(Merge),
    /// Keyless; any primary can answer.
    AnyPrimary,
    /// Answered by the proxy itself.
    Local,
    /// MULTI/EXEC/DISCARD/WATCH/UNWATCH: pinned backend connection.
    Transaction,
    /// Subscription commands: pinned backend connection.
    PubSub,
    /// SCAN with a cursor that encodes the shard.
    Scan,
    /// Something a proxy cannot honour.
    Unsupported,
}

/// Per-command argument handling that key specs alone do not express (derived from the name).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Quirk {
    /// Key specs say it all.
    Plain,
    /// SORT: `STORE dest` may appear anywhere after the key.
    Sort,
    /// MIGRATE: an empty key at index 3 means "see KEYS".
    Migrate,
    /// XREAD/XREADGROUP: options (e.g. BLOCK) start at this index; STREAMS list must be balanced.
    XRead { options_from: usize },
    /// WAIT blocks though Redis does not flag it blocking.
    Wait,
    /// ZUNION/ZINTER/ZDIFF(STORE)/ZINTERCARD numkeys errors.
    ZSetNumKeys,
    /// SINTERCARD numkeys errors.
    SInterCard,
    /// LMPOP/BLMPOP/ZMPOP/BZMPOP numkeys errors.
    MPop,
}

impl Quirk {
    fn for_name(name: &str) -> Self {
        match name {
            "sort" => Quirk::Sort,
            "migrate" => Quirk::Migrate,
            "xread" => Quirk::XRead { options_from: 1 },
            "xreadgroup" => Quirk::XRead { options_from: 4 },
            "wait" => Quirk::Wait,
            "zunionstore" | "zinterstore" | "zdiffstore" | "zunion" | "zinter" | "zdiff"
            | "zintercard" => Quirk::ZSetNumKeys,
            "sintercard" => Quirk::SInterCard,
            "lmpop" | "blmpop" | "zmpop" | "bzmpop" => Quirk::MPop,
            _ => Quirk::Plain,
        }
    }
}

/// Everything the proxy knows about one command or subcommand.
#[derive(Clone, Debug, PartialEq)]
pub struct CommandSpec {
    /// Lower-case name as Redis reports it: `get`, `object|encoding`.
    pub name: String,
    /// Redis arity, counting the name: positive = exactly, negative = at least.
    pub arity: i32,
    /// Command flags.
    pub flags: CommandFlags,
    /// Key specs, in Redis order.
    pub key_specs: Vec<KeySpec>,
    /// Routing policy.
    pub policy: Policy,
    /// Subcommands of a container command (OBJECT, CLIENT …), each named `parent|sub`.
    pub subcommands: Vec<CommandSpec>,
    /// Derived from `name` when constructed.
    pub(crate) quirk: Quirk,
}

impl CommandSpec {
    /// A spec without subcommands; the name is lower-cased.
    pub fn new(
        name: &str,
        arity: i32,
        flags: CommandFlags,
        key_specs: Vec<KeySpec>,
        policy: Policy,
    ) -> Self {
        let name = name.to_ascii_lowercase();
        let quirk = Quirk::for_name(&name);
        CommandSpec {
            name,
            arity,
            flags,
            key_specs,
            policy,
            subcommands: Vec::new(),
            quirk,
        }
    }

    /// True when `argc` arguments (the name included) satisfy the arity.
    pub fn arity_ok(&self, argc: usize) -> bool {
        let need = self.arity.unsigned_abs() as usize;
        if self.arity >= 0 {
            argc == need
        } else {
            argc >= need
        }
    }

    /// `arity_ok` as a Redis error: "ERR wrong number of arguments for 'get' command".
    pub fn check_arity(&self, argc: usize) -> Result<(), KeyError> {
        if self.arity_ok(argc) {
            Ok(())
        } else {
            Err(KeyError::WrongArity(self.name.clone()))
        }
    }

    /// True for a container command (OBJECT, CLIENT …) whose work is done by subcommands.
    pub fn is_container(&self) -> bool {
        !self.subcommands.is_empty()
    }

    /// The subcommand called `sub` (ASCII case-insensitive), e.g. `encoding` under `object`.
    pub fn subcommand(&self, sub: &[u8]) -> Option<&CommandSpec> {
        self.subcommands
            .iter()
            .find(|s| s.sub_name().eq_ignore_ascii_case(sub))
    }

    /// The part after `parent|`, or the whole name for a top-level command.
    pub fn sub_name(&self) -> &[u8] {
        let name = self.name.as_bytes();
        match name.iter().position(|&b| b == b'|') {
            Some(bar) => &name[bar + 1..],
            None => name,
        }
    }

    /// True when this invocation blocks: BLOCKING flag, or XREAD/XREADGROUP with a BLOCK option (and WAIT).
    pub fn blocks(&self, req: &[u8], args: &[Range<usize>]) -> bool {
        match self.quirk {
            Quirk::XRead { options_from } => has_block_option(req, args, options_from),
            Quirk::Wait => true,
            _ => self.flags.contains(CommandFlags::BLOCKING),
        }
    }
}

/// Walks XREAD options (`COUNT n`, `BLOCK ms`, `NOACK`) up to STREAMS looking for BLOCK.
fn has_block_option(req: &[u8], args: &[Range<usize>], mut i: usize) -> bool {
    while let Some(opt) = arg(req, args, i) {
        if opt.eq_ignore_ascii_case(b"block") {
            return true;
        }
        if opt.eq_ignore_ascii_case(b"streams") {
            return false;
        }
        i += if opt.eq_ignore_ascii_case(b"count") {
            2
        } else {
            1
        };
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, arity: i32) -> CommandSpec {
        CommandSpec::new(name, arity, CommandFlags::EMPTY, Vec::new(), Policy::Keyed)
    }

    #[test]
    fn arity() {
        let get = spec("GET", 2);
        assert_eq!(get.name, "get");
        assert!(get.arity_ok(2));
        assert!(!get.arity_ok(1));
        assert!(!get.arity_ok(3));
        let mset = spec("mset", -3);
        assert!(!mset.arity_ok(2));
        assert!(mset.arity_ok(3));
        assert!(mset.arity_ok(99));
        assert_eq!(
            get.check_arity(3).unwrap_err().to_string(),
            "ERR wrong number of arguments for 'get' command"
        );
    }

    #[test]
    fn sub_name() {
        assert_eq!(spec("object|encoding", 3).sub_name(), b"encoding");
        assert_eq!(spec("get", 2).sub_name(), b"get");
    }
}
