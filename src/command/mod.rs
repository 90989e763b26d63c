//! The command table: what each Redis command looks like (arity, flags, key specs, subcommands) and how
//! the proxy routes it.
//!
//! [`CommandTable::builtin`] knows every Redis 7.0 command; [`CommandTable::learn`] overlays what a live
//! cluster reports through `COMMAND INFO`, so module and newer commands route correctly too. Lookups on the
//! request path are case-insensitive and allocation-free.

mod builtin;
mod flags;
mod keys;
mod learn;
mod request;
mod spec;

pub use flags::{CommandFlags, KeySpecFlags};
pub use keys::KeyError;
pub use learn::CommandError;
pub use request::Request;
pub use spec::{BeginSearch, CommandSpec, FindKeys, KeySpec, Merge, Policy};
// The command reference (`crate::reference`) names the key-finding quirk of XREAD.
pub(crate) use spec::Quirk;

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::ops::Range;

/// Longest command name the table accepts; lookups lower-case into a stack buffer of this size.
const MAX_NAME_LEN: usize = 64;

/// All known commands, indexed by lower-case name.
#[derive(Clone, Debug)]
pub struct CommandTable {
    /// Top-level commands in name order.
    commands: Vec<CommandSpec>,
    /// Lower-case name → position in `commands`.
    index: HashMap<Box<[u8]>, usize, BuildHasherDefault<Fnv1a>>,
    /// Longest name in the table; longer lookups fail without hashing.
    max_name_len: usize,
}

impl CommandTable {
    /// Every Redis 7.0 command and subcommand, with the proxy's routing policy.
    pub fn builtin() -> Self {
        let mut table = CommandTable::empty();
        for spec in builtin::rows() {
            table.insert(spec);
        }
        table
    }

    /// A table that knows no command (fill it with [`CommandTable::learn`]).
    pub fn empty() -> Self {
        CommandTable {
            commands: Vec::new(),
            index: HashMap::default(),
            max_name_len: 0,
        }
    }

    /// Adds or replaces a command; a `parent|sub` name goes under its parent (ignored without one).
    /// Names longer than 64 bytes are ignored: lookups could never find them.
    pub fn insert(&mut self, spec: CommandSpec) {
        if spec.name.len() > MAX_NAME_LEN {
            return;
        }
        if let Some((parent, _)) = spec.name.split_once('|') {
            let Some(&at) = self.index.get(parent.as_bytes()) else {
                return;
            };
            let subs = &mut self.commands[at].subcommands;
            match subs.iter_mut().find(|s| s.name == spec.name) {
                Some(old) => *old = spec,
                None => subs.push(spec),
            }
            return;
        }
        match self.index.get(spec.name.as_bytes()) {
            Some(&at) => self.commands[at] = spec,
            None => {
                self.max_name_len = self.max_name_len.max(spec.name.len());
                self.index
                    .insert(spec.name.as_bytes().into(), self.commands.len());
                self.commands.push(spec);
            }
        }
    }

    /// Case-insensitive, allocation-free lookup of a top-level command by name.
    pub fn lookup(&self, name: &[u8]) -> Option<&CommandSpec> {
        if name.len() > self.max_name_len {
            return None;
        }
        let mut buf = [0u8; MAX_NAME_LEN];
        let lower = &mut buf[..name.len()];
        lower.copy_from_slice(name);
        lower.make_ascii_lowercase();
        self.index.get(&*lower).map(|&at| &self.commands[at])
    }

    /// Looks up `args[0]`, then descends into a container's subcommand (`args[1]`) when the table has it.
    /// `req` is the raw request, `args` the argument byte ranges within it.
    pub fn resolve(&self, req: &[u8], args: &[Range<usize>]) -> Option<&CommandSpec> {
        let spec = self.lookup(keys::arg(req, args, 0)?)?;
        if !spec.is_container() {
            return Some(spec);
        }
        Some(
            keys::arg(req, args, 1)
                .and_then(|sub| spec.subcommand(sub))
                .unwrap_or(spec),
        )
    }

    /// Every top-level command (subcommands hang off each), in name order for built-ins.
    pub fn iter(&self) -> impl Iterator<Item = &CommandSpec> {
        self.commands.iter()
    }

    /// Number of top-level commands.
    pub fn len(&self) -> usize {
        self.commands.len()
    }

    /// True when the table knows no command.
    pub fn is_empty(&self) -> bool {
        self.commands.is_empty()
    }

    /// Mutable access to a known top-level command (exact lower-case name), for [`CommandTable::learn`].
    fn get_mut(&mut self, name: &str) -> Option<&mut CommandSpec> {
        let at = *self.index.get(name.as_bytes())?;
        self.commands.get_mut(at)
    }
}

impl Default for CommandTable {
    fn default() -> Self {
        CommandTable::builtin()
    }
}

/// FNV-1a: command names are short, so a simple byte hash beats SipHash here; the keys are ours, not the
/// client's, so hash flooding is not a concern.
#[derive(Clone, Copy)]
pub(crate) struct Fnv1a(u64);

impl Default for Fnv1a {
    fn default() -> Self {
        Fnv1a(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for Fnv1a {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

#[cfg(test)]
mod tests;
