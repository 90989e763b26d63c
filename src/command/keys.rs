//! Key extraction: which arguments of one invocation are keys, per the command's key specs.
//!
//! Follows Redis 7's `getKeysUsingKeySpecs`, plus the few commands whose keys the specs cannot express
//! (SORT's STORE, MIGRATE's empty key) and the numkeys validation each command family performs, so a
//! malformed request gets the very error Redis would send.

use super::spec::{BeginSearch, CommandSpec, FindKeys, Quirk};
use std::ops::Range;

/// A request whose keys cannot be found; `Display` is the Redis error line (without `-` and CRLF).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Argument count outside the command's arity.
    #[error("ERR wrong number of arguments for '{0}' command")]
    WrongArity(String),
    /// A numkeys argument that is not a 64-bit integer.
    #[error("ERR value is not an integer or out of range")]
    NotInteger,
    /// A negative numkeys (EVAL, FCALL …).
    #[error("ERR Number of keys can't be negative")]
    NegativeKeys,
    /// numkeys larger than the arguments that follow (EVAL, FCALL, SINTERCARD …).
    #[error("ERR Number of keys can't be greater than number of args")]
    TooManyKeys,
    /// numkeys < 1 for ZUNION/ZINTER/ZDIFF(STORE)/ZINTERCARD.
    #[error("ERR at least 1 input key is needed for '{0}' command")]
    NoInputKeys(String),
    /// numkeys < 1 or not a number for SINTERCARD/LMPOP/BLMPOP/ZMPOP/BZMPOP.
    #[error("ERR numkeys should be greater than 0")]
    NumKeysNotPositive,
    /// Arguments Redis rejects as a syntax error (numkeys past the end for ZUNIONSTORE, LMPOP …).
    #[error("ERR syntax error")]
    Syntax,
    /// XREAD/XREADGROUP with an odd number of arguments after STREAMS.
    #[error(
        "ERR Unbalanced XREAD list of streams: for each stream key an ID or '$' must be specified."
    )]
    UnbalancedStreams,
}

/// Argument `i` of the request, or `None` when `i` or its range lies outside the request.
pub(crate) fn arg<'a>(req: &'a [u8], args: &[Range<usize>], i: usize) -> Option<&'a [u8]> {
    args.get(i).and_then(|r| req.get(r.clone()))
}

/// A request's arguments as byte slices on demand.
#[derive(Clone, Copy)]
struct Argv<'a> {
    req: &'a [u8],
    args: &'a [Range<usize>],
}

impl<'a> Argv<'a> {
    fn get(self, i: usize) -> Option<&'a [u8]> {
        arg(self.req, self.args, i)
    }

    fn is(self, i: usize, word: &[u8]) -> bool {
        self.get(i).is_some_and(|a| a.eq_ignore_ascii_case(word))
    }

    fn len(self) -> usize {
        self.args.len()
    }
}

impl CommandSpec {
    /// Push into `out` the indices (into `args`) of every key argument, per the key specs.
    ///
    /// Never panics on short or hostile input: out-of-range positions are skipped and a bad numkeys is a
    /// [`KeyError`] carrying the message Redis would reply with. Arity is not checked here.
    pub fn key_indices(
        &self,
        req: &[u8],
        args: &[Range<usize>],
        out: &mut Vec<usize>,
    ) -> Result<(), KeyError> {
        let argv = Argv { req, args };
        if let Quirk::XRead { options_from } = self.quirk {
            check_streams(argv, options_from)?;
        }
        for spec in &self.key_specs {
            let Some(start) = begin(argv, &spec.begin_search) else {
                continue;
            };
            let Some((first, last, step)) = self.find(argv, start, &spec.find_keys)? else {
                continue;
            };
            let mut i = first;
            while i <= last && i < argv.len() {
                if !(self.quirk == Quirk::Migrate && i == 3 && argv.get(3) == Some(b"")) {
                    out.push(i);
                }
                i += step;
            }
        }
        if self.quirk == Quirk::Sort {
            push_sort_store(argv, out);
        }
        Ok(())
    }

    /// The key positions `(first, last, step)` after `start`; `None` when the spec yields no key.
    fn find(
        &self,
        argv: Argv<'_>,
        start: usize,
        find: &FindKeys,
    ) -> Result<Option<(usize, usize, usize)>, KeyError> {
        // i64 arithmetic: learned specs may hold values that would overflow or go negative in usize.
        let argc = argv.len() as i64;
        let start = i64::try_from(start).unwrap_or(i64::MAX);
        let (first, last, step) = match *find {
            FindKeys::Range {
                last_key,
                key_step,
                limit,
            } => {
                let last_key = i64::from(last_key);
                let limit = i64::try_from(limit).unwrap_or(i64::MAX);
                let last = if last_key >= 0 {
                    start.saturating_add(last_key)
                } else if limit <= 1 {
                    argc + last_key
                } else {
                    start + (argc - start).max(0) / limit + last_key
                };
                (start, last, key_step)
            }
            FindKeys::KeyNum {
                keynum_idx,
                first_key,
                key_step,
            } => {
                let at = start.saturating_add(i64::try_from(keynum_idx).unwrap_or(i64::MAX));
                let raw = usize::try_from(at).ok().and_then(|at| argv.get(at));
                let raw = raw.ok_or_else(|| KeyError::WrongArity(self.name.clone()))?;
                let numkeys = self.numkeys(raw)?;
                if numkeys == 0 {
                    return Ok(None);
                }
                let first = start.saturating_add(i64::try_from(first_key).unwrap_or(i64::MAX));
                let span =
                    (numkeys - 1).saturating_mul(i64::try_from(key_step).unwrap_or(i64::MAX));
                let last = first.saturating_add(span);
                if last >= argc {
                    return Err(self.too_many_keys());
                }
                (first, last, key_step)
            }
            FindKeys::Unknown => return Ok(None),
        };
        if step == 0 || first < 1 || last < first {
            return Ok(None);
        }
        // `first >= 1` and `last >= first`, so both fit in usize; clamp `last` to the arguments we have.
        let last = last.min(argc - 1);
        match (usize::try_from(first), usize::try_from(last)) {
            (Ok(first), Ok(last)) => Ok(Some((first, last, step))),
            _ => Ok(None),
        }
    }

    /// Parses and validates a numkeys argument the way this command's family does.
    fn numkeys(&self, raw: &[u8]) -> Result<i64, KeyError> {
        let parsed = parse_i64(raw);
        match self.quirk {
            Quirk::SInterCard | Quirk::MPop => match parsed {
                Some(n) if n > 0 => Ok(n),
                _ => Err(KeyError::NumKeysNotPositive),
            },
            Quirk::ZSetNumKeys => match parsed {
                None => Err(KeyError::NotInteger),
                Some(n) if n < 1 => Err(KeyError::NoInputKeys(self.name.clone())),
                Some(n) => Ok(n),
            },
            _ => match parsed {
                None => Err(KeyError::NotInteger),
                Some(n) if n < 0 => Err(KeyError::NegativeKeys),
                Some(n) => Ok(n),
            },
        }
    }

    /// The error this command's family gives when numkeys runs past the arguments.
    fn too_many_keys(&self) -> KeyError {
        match self.quirk {
            Quirk::ZSetNumKeys | Quirk::MPop => KeyError::Syntax,
            _ => KeyError::TooManyKeys,
        }
    }
}

/// The index where a key spec's search starts, or `None` when it does not apply to this invocation.
fn begin(argv: Argv<'_>, search: &BeginSearch) -> Option<usize> {
    match search {
        BeginSearch::Index(i) => Some(*i),
        BeginSearch::Keyword {
            keyword,
            start_from,
        } => find_keyword(argv, keyword.as_bytes(), *start_from).map(|at| at + 1),
        BeginSearch::Unknown => None,
    }
}

/// Position of `keyword`, searched as Redis does: forward from `start_from` up to (not including) the last
/// argument, or for a non-positive `start_from` backward from `argc + start_from` down to index 2.
fn find_keyword(argv: Argv<'_>, keyword: &[u8], start_from: i32) -> Option<usize> {
    let argc = argv.len();
    if start_from > 0 {
        let start = usize::try_from(start_from).ok()?;
        (start..argc.saturating_sub(1)).find(|&i| argv.is(i, keyword))
    } else {
        let start = argc.checked_sub(start_from.unsigned_abs() as usize)?;
        if start >= argc {
            return None;
        }
        (2..=start).rev().find(|&i| argv.is(i, keyword))
    }
}

/// SORT's destination: the argument after the last `STORE`, skipping `LIMIT o c`, `BY p` and `GET p`.
fn push_sort_store(argv: Argv<'_>, out: &mut Vec<usize>) {
    let mut store = None;
    let mut i = 2;
    while i < argv.len() {
        if argv.is(i, b"limit") {
            i += 2;
        } else if argv.is(i, b"by") || argv.is(i, b"get") {
            i += 1;
        } else if argv.is(i, b"store") && i + 1 < argv.len() {
            store = Some(i + 1);
            i += 1;
        }
        i += 1;
    }
    out.extend(store);
}

/// XREAD/XREADGROUP need STREAMS followed by an even, non-zero number of arguments.
fn check_streams(argv: Argv<'_>, options_from: usize) -> Result<(), KeyError> {
    let streams = (options_from..argv.len()).find(|&i| argv.is(i, b"streams"));
    match streams {
        Some(at) if at + 1 < argv.len() => {
            if (argv.len() - at - 1) % 2 == 0 {
                Ok(())
            } else {
                Err(KeyError::UnbalancedStreams)
            }
        }
        _ => Err(KeyError::Syntax),
    }
}

/// Parses a decimal i64 as strictly as Redis's `string2ll` (no sign `+`, no spaces, no leading zeros).
fn parse_i64(raw: &[u8]) -> Option<i64> {
    let (negative, digits) = match raw {
        [b'-', rest @ ..] => (true, rest),
        _ => (false, raw),
    };
    match digits {
        [b'0'] if !negative => return Some(0),
        [] | [b'0', ..] => return None,
        _ => {}
    }
    let mut value: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        let d = i64::from(d - b'0');
        value = value.checked_mul(10)?;
        value = if negative {
            value.checked_sub(d)?
        } else {
            value.checked_add(d)?
        };
    }
    Some(value)
}

#[cfg(test)]
#[path = "keys_tests.rs"]
mod tests;
