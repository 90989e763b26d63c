//! [`Request`]: one client request as every stage after the scanner sees it — the raw bytes, the
//! argument ranges and the command spec they resolve to, looked up once.
//!
//! It is a borrowed view: the bytes stay in the client's buffer slice and the ranges in the
//! scanner's reused vector, so building one per request allocates nothing.

use std::ops::Range;

use bytes::Bytes;

use super::{keys, CommandSpec, CommandTable, KeyError};

/// One scanned request: raw bytes, argument ranges and the resolved command, if known.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    raw: &'a Bytes,
    args: &'a [Range<usize>],
    spec: Option<&'a CommandSpec>,
}

impl<'a> Request<'a> {
    /// Resolves `args[0]` (and a container's subcommand, `args[1]`) in `table`.
    pub fn new(table: &'a CommandTable, raw: &'a Bytes, args: &'a [Range<usize>]) -> Self {
        Self {
            raw,
            args,
            spec: table.resolve(raw, args),
        }
    }

    /// A view for stages that only read the bytes (fan-out planning runs after the session has
    /// let go of the command table, so the spec cannot come along).
    pub fn unresolved(raw: &'a Bytes, args: &'a [Range<usize>]) -> Self {
        Self {
            raw,
            args,
            spec: None,
        }
    }

    /// The request in wire form.
    pub fn raw(&self) -> &'a Bytes {
        self.raw
    }

    /// Byte ranges of the arguments within [`Request::raw`]; `args()[0]` is the command name.
    pub fn args(&self) -> &'a [Range<usize>] {
        self.args
    }

    /// The command (or subcommand) spec; None when the table does not know the name.
    pub fn spec(&self) -> Option<&'a CommandSpec> {
        self.spec
    }

    /// Number of arguments, the command name included.
    pub fn argc(&self) -> usize {
        self.args.len()
    }

    /// Argument `i`, or None when `i` or its range lies outside the request.
    pub fn arg(&self, i: usize) -> Option<&'a [u8]> {
        keys::arg(self.raw, self.args, i)
    }

    /// The bytes of `range` (an element of [`Request::args`]); empty when it lies outside.
    pub fn slice(&self, range: &Range<usize>) -> &'a [u8] {
        self.raw.get(range.clone()).unwrap_or_default()
    }

    /// True when the command is known and the argument count fits its arity.
    pub fn arity_ok(&self) -> bool {
        self.spec.is_some_and(|s| s.arity_ok(self.argc()))
    }

    /// Pushes into `out` the indices of every key argument of `spec` (see
    /// [`CommandSpec::key_indices`]).
    pub fn key_indices(&self, spec: &CommandSpec, out: &mut Vec<usize>) -> Result<(), KeyError> {
        spec.key_indices(self.raw, self.args, out)
    }

    /// True when this invocation of `spec` blocks (see [`CommandSpec::blocks`]).
    pub fn blocks(&self, spec: &CommandSpec) -> bool {
        spec.blocks(self.raw, self.args)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::tests::{request, table};

    fn with<T>(line: &str, f: impl FnOnce(Request<'_>) -> T) -> T {
        let (raw, args) = request(line);
        let raw = Bytes::from(raw);
        f(Request::new(table(), &raw, &args))
    }

    #[test]
    fn resolves_subcommands_case_insensitively() {
        let name = |line| with(line, |r| r.spec().map(|s| s.name.clone()));
        assert_eq!(name("client setname x").as_deref(), Some("client|setname"));
        assert_eq!(name("CONFIG get maxmemory").as_deref(), Some("config|get"));
        assert_eq!(name("Get k").as_deref(), Some("get"));
        // An unknown subcommand leaves the container, whose handler reports it.
        assert_eq!(name("client nosuch").as_deref(), Some("client"));
        assert_eq!(name("nosuch a b"), None);
    }

    #[test]
    fn argument_access() {
        with("SET k v", |r| {
            assert_eq!(r.argc(), 3);
            assert_eq!(r.arg(0), Some(&b"SET"[..]));
            assert_eq!(r.arg(2), Some(&b"v"[..]));
            assert_eq!(r.arg(3), None);
            assert_eq!(r.slice(&r.args()[1]), b"k");
            assert_eq!(r.slice(&(100..200)), b"");
            let spec = r.spec().expect("set is known");
            let mut keys = Vec::new();
            r.key_indices(spec, &mut keys).expect("well-formed");
            assert_eq!(keys, [1]);
            assert!(!r.blocks(spec));
        });
        with("BLPOP q 0", |r| assert!(r.blocks(r.spec().expect("known"))));
    }

    #[test]
    fn arity() {
        assert!(with("GET k", |r| r.arity_ok()));
        assert!(!with("GET", |r| r.arity_ok()));
        assert!(!with("GET a b", |r| r.arity_ok()));
        assert!(with("CONFIG GET a b", |r| r.arity_ok()));
        assert!(!with("nosuch", |r| r.arity_ok()));
    }

    #[test]
    fn unresolved_view_keeps_bytes() {
        let (raw, args) = request("PING hi");
        let raw = Bytes::from(raw);
        let r = Request::unresolved(&raw, &args);
        assert!(r.spec().is_none());
        assert_eq!(r.arg(1), Some(&b"hi"[..]));
        assert!(std::ptr::eq(r.raw(), &raw));
    }
}
