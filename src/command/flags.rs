//! Small `Copy` bitsets for command flags and key-spec flags, named as `COMMAND INFO` names them.

use std::fmt;
use std::ops::{BitOr, BitOrAssign};

/// Defines a bitset type whose flags each carry the name Redis uses for them.
macro_rules! bitset {
    (
        $(#[$meta:meta])*
        $name:ident($repr:ty) { $( $(#[$fmeta:meta])* $flag:ident = $bit:literal, $text:literal; )* }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
        pub struct $name($repr);

        impl $name {
            $( $(#[$fmeta])* pub const $flag: Self = Self(1 << $bit); )*
            /// No flag set.
            pub const EMPTY: Self = Self(0);
            /// Every flag with the name Redis reports for it.
            const NAMED: &'static [(&'static str, Self)] = &[$(($text, Self::$flag)),*];

            /// True when every flag of `other` is also set in `self`.
            pub const fn contains(self, other: Self) -> bool {
                self.0 & other.0 == other.0
            }

            /// True when no flag is set.
            pub const fn is_empty(self) -> bool {
                self.0 == 0
            }

            /// The flag Redis calls `name` (ASCII case-insensitive), if we model it.
            pub fn from_name(name: &str) -> Option<Self> {
                Self::NAMED
                    .iter()
                    .find(|(text, _)| text.eq_ignore_ascii_case(name))
                    .map(|&(_, flag)| flag)
            }

            /// The Redis names of the flags set, in a fixed order.
            pub fn names(self) -> impl Iterator<Item = &'static str> {
                Self::NAMED
                    .iter()
                    .filter(move |&&(_, flag)| self.contains(flag))
                    .map(|&(text, _)| text)
            }
        }

        impl BitOr for $name {
            type Output = Self;
            fn bitor(self, rhs: Self) -> Self {
                Self(self.0 | rhs.0)
            }
        }

        impl BitOrAssign for $name {
            fn bitor_assign(&mut self, rhs: Self) {
                self.0 |= rhs.0;
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_set().entries(self.names()).finish()
            }
        }
    };
}

bitset! {
    /// Command flags as `COMMAND INFO` reports them (plus `may_replicate`, which only Redis 6 reports).
    CommandFlags(u32) {
        /// May modify the keyspace.
        WRITE = 0, "write";
        /// Only reads the keyspace.
        READONLY = 1, "readonly";
        /// May grow memory use; refused when over `maxmemory`.
        DENYOOM = 2, "denyoom";
        /// Implemented by a module.
        MODULE = 3, "module";
        /// Administrative command.
        ADMIN = 4, "admin";
        /// Pub/Sub related.
        PUBSUB = 5, "pubsub";
        /// Not allowed inside scripts.
        NOSCRIPT = 6, "noscript";
        /// May block the client.
        BLOCKING = 7, "blocking";
        /// Allowed while the server loads its dataset.
        LOADING = 8, "loading";
        /// Allowed on a replica with stale data.
        STALE = 9, "stale";
        /// Not shown in MONITOR.
        SKIP_MONITOR = 10, "skip_monitor";
        /// Not shown in the slow log.
        SKIP_SLOWLOG = 11, "skip_slowlog";
        /// Accepted on an importing slot after ASKING.
        ASKING = 12, "asking";
        /// O(1) or O(log N) command.
        FAST = 13, "fast";
        /// Allowed before authentication.
        NO_AUTH = 14, "no_auth";
        /// May replicate even when read-only (reported by Redis 6 only; 7.0 keeps it internal).
        MAY_REPLICATE = 15, "may_replicate";
        /// May run without any key argument though it has key specs.
        NO_MANDATORY_KEYS = 16, "no_mandatory_keys";
        /// Refused during async loading.
        NO_ASYNC_LOADING = 17, "no_async_loading";
        /// Not allowed inside MULTI.
        NO_MULTI = 18, "no_multi";
        /// Key positions depend on the arguments.
        MOVABLE_KEYS = 19, "movablekeys";
        /// Allowed while a script or function is busy.
        ALLOW_BUSY = 20, "allow_busy";
    }
}

bitset! {
    /// Key-spec flags: how a command uses the keys one key spec finds.
    KeySpecFlags(u16) {
        /// Read-only access.
        RO = 0, "RO";
        /// Read-write access.
        RW = 1, "RW";
        /// Overwrite without reading.
        OW = 2, "OW";
        /// Removes the key.
        RM = 3, "RM";
        /// Returns or copies user data out of the key.
        ACCESS = 4, "access";
        /// Updates data in the key.
        UPDATE = 5, "update";
        /// Adds data without changing existing data.
        INSERT = 6, "insert";
        /// Deletes data from the key.
        DELETE = 7, "delete";
        /// Not a key, but hashed like one (shard channels).
        NOT_KEY = 8, "not_key";
        /// The spec may miss some keys.
        INCOMPLETE = 9, "incomplete";
        /// The flags depend on the arguments.
        VARIABLE_FLAGS = 10, "variable_flags";
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let f = CommandFlags::from_name("READONLY").unwrap() | CommandFlags::FAST;
        assert!(f.contains(CommandFlags::READONLY));
        assert!(!f.contains(CommandFlags::WRITE));
        assert_eq!(f.names().collect::<Vec<_>>(), ["readonly", "fast"]);
        assert_eq!(format!("{f:?}"), r#"{"readonly", "fast"}"#);
        assert_eq!(
            KeySpecFlags::from_name("not_key"),
            Some(KeySpecFlags::NOT_KEY)
        );
        assert_eq!(CommandFlags::from_name("sentinel"), None);
        assert!(CommandFlags::EMPTY.is_empty());
    }
}
