//! The client-side request scanner: finds where one request ends and the byte range of
//! each argument, resuming across reads without re-parsing what it already saw.
//!
//! Framing mirrors Redis 7.0 `processMultibulkBuffer`/`processInlineBuffer`, including its
//! leniencies: the byte after a header's `\r` and the two bytes after a bulk body are
//! skipped unchecked, and a header is judged only once its `\r` has arrived. Accepting
//! exactly what Redis accepts keeps the proxy's framing identical to the server's when
//! it forwards the client's bytes untouched.

use std::ops::Range;

use super::inline::{strip_line_end, Tokens};
use super::number::{find, redis_int};
use super::ProtocolError;

/// Limits a client request must respect; the defaults are Redis's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanLimits {
    /// Largest bulk argument (Redis `proto-max-bulk-len`, 512 MiB).
    pub max_bulk_len: usize,
    /// Largest number of arguments in one multibulk request (1024 * 1024).
    pub max_multibulk_len: usize,
    /// Longest inline line, and longest header line waiting for its `\r` (64 KiB).
    pub max_inline_len: usize,
}

impl Default for ScanLimits {
    fn default() -> Self {
        Self {
            max_bulk_len: 512 * 1024 * 1024,
            max_multibulk_len: 1024 * 1024,
            max_inline_len: 64 * 1024,
        }
    }
}

/// One complete request found at the start of the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScannedRequest {
    /// Bytes the request occupies; the caller consumes exactly these.
    pub len: usize,
    /// How the request was framed.
    pub kind: RequestKind,
}

/// The framing of a scanned request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    /// A RESP array of bulk strings; `args()` holds every argument.
    MultiBulk,
    /// A telnet-style line. `args()` holds the raw tokens when the line uses no quotes;
    /// when it does, `args()` is empty and the caller rewrites the line with
    /// [`inline_to_multibulk`](super::inline_to_multibulk).
    Inline,
    /// `*0`, a negative count, or a blank line: nothing to execute, just consume `len`.
    Empty,
}

/// Where the scanner stands inside the current request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// At the first byte of a new request.
    Start,
    /// Looking for the `\n` that ends an inline line.
    Inline,
    /// Looking for the `\r` that ends the `*<count>` line.
    Count,
    /// Looking for the `\r` that ends a `$<len>` line starting at `pos`.
    BulkHeader,
    /// Waiting until the buffer reaches `body_end`.
    BulkBody,
}

/// Resumable scanner for client requests; one per client connection.
#[derive(Debug)]
pub struct RequestScanner {
    limits: ScanLimits,
    args: Vec<Range<usize>>,
    phase: Phase,
    /// Start of the header line being looked at.
    pos: usize,
    /// The line terminator is not in `buf[pos..searched]`: the next search starts here.
    searched: usize,
    /// Arguments still to come in the current multibulk.
    remaining: usize,
    /// End of the current bulk body plus its CRLF.
    body_end: usize,
}

/// Above this many remembered argument slots a new request gives the memory back, so one
/// huge MSET does not pin megabytes for the connection's lifetime.
const ARGS_KEEP_CAPACITY: usize = 64 * 1024;

impl RequestScanner {
    /// Creates a scanner enforcing `limits`.
    pub fn new(limits: ScanLimits) -> Self {
        Self {
            limits,
            args: Vec::new(),
            phase: Phase::Start,
            pos: 0,
            searched: 0,
            remaining: 0,
            body_end: 0,
        }
    }

    /// Byte ranges (relative to the request start) of each argument of the request last
    /// returned by [`scan`](Self::scan); `args()[0]` is the command name.
    pub fn args(&self) -> &[Range<usize>] {
        &self.args
    }

    /// Looks for the end of the request starting at `buf[0]`.
    ///
    /// Resumable: progress made on earlier calls for the same request is kept, provided
    /// the caller only appends to `buf` between calls and, after `Some`, consumes exactly
    /// `len` bytes before the next call. After an error the connection should be closed;
    /// the scanner itself is reset.
    pub fn scan(&mut self, buf: &[u8]) -> Result<Option<ScannedRequest>, ProtocolError> {
        let result = self.step(buf);
        if !matches!(result, Ok(None)) {
            self.phase = Phase::Start;
        }
        result
    }

    fn step(&mut self, buf: &[u8]) -> Result<Option<ScannedRequest>, ProtocolError> {
        loop {
            match self.phase {
                Phase::Start => {
                    let Some(&first) = buf.first() else {
                        return Ok(None);
                    };
                    self.start_request();
                    self.phase = if first == b'*' {
                        Phase::Count
                    } else {
                        Phase::Inline
                    };
                }
                Phase::Inline => return self.scan_inline(buf),
                Phase::Count => {
                    let Some(cr) = self.header_end(buf, ProtocolError::MultibulkCountTooBig)?
                    else {
                        return Ok(None);
                    };
                    let count =
                        redis_int(&buf[1..cr]).ok_or(ProtocolError::InvalidMultibulkLength)?;
                    if count > 0 && count as u64 > self.limits.max_multibulk_len as u64 {
                        return Err(ProtocolError::InvalidMultibulkLength);
                    }
                    self.pos = cr + 2;
                    self.searched = self.pos;
                    if count <= 0 {
                        return Ok(Some(ScannedRequest {
                            len: self.pos,
                            kind: RequestKind::Empty,
                        }));
                    }
                    // Bounded by max_multibulk_len above, so it fits.
                    self.remaining = count as usize;
                    self.phase = Phase::BulkHeader;
                }
                Phase::BulkHeader => {
                    let Some(cr) = self.header_end(buf, ProtocolError::BulkCountTooBig)? else {
                        return Ok(None);
                    };
                    let head = buf[self.pos];
                    if head != b'$' {
                        return Err(ProtocolError::ExpectedBulk(head));
                    }
                    let len = redis_int(&buf[self.pos + 1..cr])
                        .and_then(|n| usize::try_from(n).ok())
                        .filter(|&n| n <= self.limits.max_bulk_len)
                        .ok_or(ProtocolError::InvalidBulkLength)?;
                    let start = cr + 2;
                    let body_end = start
                        .checked_add(len)
                        .and_then(|end| end.checked_add(2))
                        .ok_or(ProtocolError::InvalidBulkLength)?;
                    self.args.push(start..body_end - 2);
                    self.body_end = body_end;
                    self.phase = Phase::BulkBody;
                }
                Phase::BulkBody => {
                    if buf.len() < self.body_end {
                        return Ok(None);
                    }
                    self.pos = self.body_end;
                    self.searched = self.pos;
                    self.remaining -= 1;
                    if self.remaining == 0 {
                        return Ok(Some(ScannedRequest {
                            len: self.pos,
                            kind: RequestKind::MultiBulk,
                        }));
                    }
                    self.phase = Phase::BulkHeader;
                }
            }
        }
    }

    fn start_request(&mut self) {
        if self.args.capacity() > ARGS_KEEP_CAPACITY {
            self.args = Vec::new();
        } else {
            self.args.clear();
        }
        self.pos = 0;
        self.searched = 0;
        self.remaining = 0;
        self.body_end = 0;
    }

    /// Finds the `\r` ending the header line at `pos`, once the byte after it has arrived
    /// too. Like Redis, gives up with `too_big` when more than the inline limit is
    /// buffered past `pos` without any `\r`.
    fn header_end(
        &mut self,
        buf: &[u8],
        too_big: ProtocolError,
    ) -> Result<Option<usize>, ProtocolError> {
        let from = self.searched.max(self.pos);
        let Some(cr) = buf.get(from..).and_then(|rest| find(rest, b'\r')) else {
            if buf.len() - self.pos > self.limits.max_inline_len {
                return Err(too_big);
            }
            self.searched = buf.len().max(from);
            return Ok(None);
        };
        let cr = from + cr;
        if cr + 2 > buf.len() {
            self.searched = cr;
            return Ok(None);
        }
        Ok(Some(cr))
    }

    fn scan_inline(&mut self, buf: &[u8]) -> Result<Option<ScannedRequest>, ProtocolError> {
        let from = self.searched;
        let Some(nl) = buf.get(from..).and_then(|rest| find(rest, b'\n')) else {
            if buf.len() > self.limits.max_inline_len {
                return Err(ProtocolError::InlineTooBig);
            }
            self.searched = buf.len().max(from);
            return Ok(None);
        };
        let len = from + nl + 1;
        let line = strip_line_end(&buf[..len]);
        let mut tokens = Tokens::new(line);
        let mut quoted = false;
        while let Some(token) = tokens.next_token(None)? {
            quoted |= token.quoted;
            if !quoted {
                self.args.push(token.raw);
            }
        }
        let kind = if quoted {
            self.args.clear();
            RequestKind::Inline
        } else if self.args.is_empty() {
            RequestKind::Empty
        } else {
            RequestKind::Inline
        };
        Ok(Some(ScannedRequest { len, kind }))
    }
}

#[cfg(test)]
#[path = "request_tests.rs"]
mod tests;
