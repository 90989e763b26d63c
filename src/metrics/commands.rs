//! Command names behind small integer ids.
//!
//! A session looks a command up once per request in its own cached copy of the index (an
//! allocation-free hash of the lower-cased name) and then counts into arrays by id. Ids are
//! given the first time a command is seen; names the command table does not know share the id
//! of `unknown`, so clients cannot grow the label set.

use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::sync::Arc;

use arc_swap::ArcSwap;

use super::shard::MAX_COMMANDS;
use crate::command::Fnv1a;
use crate::sync::Mutex;

/// Longest command name indexed; longer names are `unknown`.
const MAX_NAME: usize = 64;

/// A command's index in the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct CommandId(pub u16);

impl CommandId {
    /// Commands the table does not know.
    pub const UNKNOWN: CommandId = CommandId(0);
}

/// What the metrics know of one command.
#[derive(Debug)]
pub struct CommandHandles {
    /// The `command` label.
    pub name: String,
}

impl CommandHandles {
    fn new(name: &str) -> Arc<Self> {
        Arc::new(Self {
            name: name.to_string(),
        })
    }
}

/// An immutable name → id map with the handles; replaced (copy on write) when a command is
/// first seen, which happens a few hundred times per process at most.
#[derive(Debug, Default)]
pub struct CommandIndex {
    ids: HashMap<Box<[u8]>, CommandId, BuildHasherDefault<Fnv1a>>,
    handles: Vec<Arc<CommandHandles>>,
}

impl CommandIndex {
    /// The id of `name` (any case), if indexed.
    #[inline]
    pub fn lookup(&self, name: &[u8]) -> Option<CommandId> {
        if name.len() > MAX_NAME {
            return None;
        }
        let mut buf = [0u8; MAX_NAME];
        let lower = &mut buf[..name.len()];
        lower.copy_from_slice(name);
        lower.make_ascii_lowercase();
        self.ids.get(&*lower).copied()
    }

    /// Every command's handles, `unknown` first.
    pub fn all(&self) -> &[Arc<CommandHandles>] {
        &self.handles
    }

    /// The handles of `id` (those of `unknown` for an id from another index).
    pub fn handles(&self, id: CommandId) -> &Arc<CommandHandles> {
        self.handles
            .get(usize::from(id.0))
            .unwrap_or(&self.handles[0])
    }
}

/// Every command seen by the process.
#[derive(Debug)]
pub struct CommandRegistry {
    index: ArcSwap<CommandIndex>,
    grow: Mutex<()>,
}

impl CommandRegistry {
    /// A registry holding only `unknown`.
    pub fn new() -> Self {
        let mut first = CommandIndex::default();
        first.handles.push(CommandHandles::new("unknown"));
        Self {
            index: ArcSwap::from_pointee(first),
            grow: Mutex::new(()),
        }
    }

    /// The current index (sessions keep it and come back only on a miss).
    pub fn index(&self) -> Arc<CommandIndex> {
        self.index.load_full()
    }

    /// Registers `name` as typed by the client when `canonical` (the command table's name for
    /// it) is known, else maps it to `unknown`; returns its id and the index that holds it.
    pub fn register(&self, name: &[u8], canonical: Option<&str>) -> (CommandId, Arc<CommandIndex>) {
        let Some(canonical) = canonical.filter(|c| c.len() <= MAX_NAME && name.len() <= MAX_NAME)
        else {
            return (CommandId::UNKNOWN, self.index());
        };
        let _grow = self.grow.lock();
        let current = self.index.load_full();
        if let Some(id) = current.lookup(name) {
            return (id, current);
        }
        let Ok(raw) = u16::try_from(current.handles.len()) else {
            return (CommandId::UNKNOWN, current);
        };
        if usize::from(raw) >= MAX_COMMANDS {
            return (CommandId::UNKNOWN, current);
        }
        let id = CommandId(raw);
        let mut ids = current.ids.clone();
        ids.insert(name.to_ascii_lowercase().into(), id);
        let mut handles = current.handles.clone();
        handles.push(CommandHandles::new(canonical));
        let next = Arc::new(CommandIndex { ids, handles });
        self.index.store(next.clone());
        (id, next)
    }
}

impl Default for CommandRegistry {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_and_case_insensitive() {
        let reg = CommandRegistry::new();
        let (get, idx) = reg.register(b"GET", Some("get"));
        assert_ne!(get, CommandId::UNKNOWN);
        assert_eq!(idx.lookup(b"get"), Some(get));
        assert_eq!(idx.lookup(b"gEt"), Some(get));
        let (again, _) = reg.register(b"get", Some("get"));
        assert_eq!(again, get);
        let (set, idx) = reg.register(b"set", Some("set"));
        assert_ne!(set, get);
        assert_eq!(idx.handles(set).name, "set");
        assert_eq!(idx.handles(CommandId(999)).name, "unknown");
    }

    #[test]
    fn unknown_names_do_not_grow_the_index() {
        let reg = CommandRegistry::new();
        let (id, idx) = reg.register(b"nosuchcommand", None);
        assert_eq!(id, CommandId::UNKNOWN);
        assert_eq!(idx.lookup(b"nosuchcommand"), None);
        let long = vec![b'a'; 100];
        assert_eq!(reg.register(&long, Some("a")).0, CommandId::UNKNOWN);
    }
}
