//! The backend-side reply scanner: finds where one complete RESP2/RESP3 reply ends,
//! resuming across reads, without building values.
//!
//! It keeps a stack of open aggregates (elements still expected, or "until `.`" for a
//! streamed aggregate) and skips blob bodies by length. Attributes (`|`) decorate the
//! element that follows them, so they never count as an element of their parent and a
//! top-level attribute makes the following reply part of the same frame.

use super::number::{find, reply_len};
use super::ProtocolError;

/// One complete reply found at the start of the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScannedReply {
    /// Bytes the reply occupies (including any leading attribute); the caller consumes
    /// exactly these.
    pub len: usize,
    /// What the top-level reply is.
    pub kind: ReplyKind,
}

/// The nature of a top-level reply, as far as routing cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyKind {
    /// A simple error (`-`) or blob error (`!`): look at it with
    /// [`classify_error`](super::classify_error).
    Error,
    /// An out-of-band push (`>`), which answers no request.
    Push,
    /// Any other reply.
    Other,
}

/// An aggregate whose elements are still being scanned.
#[derive(Debug, Clone, Copy)]
struct Open {
    /// Elements still expected; unused when `streamed`.
    remaining: u64,
    /// Ends with a `.` line instead of a count.
    streamed: bool,
    /// An attribute map: when done it does not count as an element of its parent.
    attribute: bool,
}

/// Resumable scanner for backend replies; one per backend connection.
#[derive(Debug)]
pub struct ResponseScanner {
    max_depth: usize,
    stack: Vec<Open>,
    /// Start of the next header line.
    pos: usize,
    /// No `\r` in `buf[pos..searched]`: the next search starts here.
    searched: usize,
    /// Set while waiting for a blob body: its end including the CRLF.
    body_end: Option<usize>,
    /// Inside a streamed string (`$?`): the next header must be a `;` chunk.
    in_chunks: bool,
    /// Set by the first non-attribute top-level header.
    kind: Option<ReplyKind>,
}

impl ResponseScanner {
    /// Creates a scanner refusing replies that nest more than `max_depth` aggregates.
    pub fn new(max_depth: usize) -> Self {
        Self {
            max_depth,
            stack: Vec::new(),
            pos: 0,
            searched: 0,
            body_end: None,
            in_chunks: false,
            kind: None,
        }
    }

    /// Looks for the end of the reply starting at `buf[0]`.
    ///
    /// Same resumable contract as [`RequestScanner::scan`](super::RequestScanner::scan):
    /// the caller only appends between calls and consumes exactly `len` after `Some`.
    /// An error means the connection is out of sync; the scanner itself is reset.
    pub fn scan(&mut self, buf: &[u8]) -> Result<Option<ScannedReply>, ProtocolError> {
        let result = self.step(buf);
        match result {
            Ok(None) => {}
            Ok(Some(_)) | Err(_) => self.reset(),
        }
        result
    }

    fn reset(&mut self) {
        self.stack.clear();
        self.pos = 0;
        self.searched = 0;
        self.body_end = None;
        self.in_chunks = false;
        self.kind = None;
    }

    fn step(&mut self, buf: &[u8]) -> Result<Option<ScannedReply>, ProtocolError> {
        loop {
            if let Some(end) = self.body_end {
                if buf.len() < end {
                    return Ok(None);
                }
                if &buf[end - 2..end] != b"\r\n" {
                    return Err(ProtocolError::MissingCrlf);
                }
                self.body_end = None;
                self.pos = end;
                self.searched = end;
                if !self.in_chunks && self.element_done() {
                    return Ok(Some(self.done()));
                }
                continue;
            }
            let Some(cr) = self.line_end(buf)? else {
                return Ok(None);
            };
            let head = buf[self.pos];
            let body = &buf[self.pos + 1..cr];
            let next = cr + 2;
            self.pos = next;
            self.searched = next;
            if self.header(head, body, next)? {
                return Ok(Some(self.done()));
            }
        }
    }

    fn done(&self) -> ScannedReply {
        ScannedReply {
            len: self.pos,
            kind: self.kind.unwrap_or(ReplyKind::Other),
        }
    }

    /// Finds the CRLF ending the line at `pos`, returning the index of its `\r`.
    fn line_end(&mut self, buf: &[u8]) -> Result<Option<usize>, ProtocolError> {
        let from = self.searched.max(self.pos);
        let Some(cr) = buf.get(from..).and_then(|rest| find(rest, b'\r')) else {
            self.searched = buf.len().max(from);
            return Ok(None);
        };
        let cr = from + cr;
        if cr == self.pos {
            // A line needs its type byte before the CRLF.
            return Err(ProtocolError::InvalidReplyType(b'\r'));
        }
        match buf.get(cr + 1) {
            None => {
                self.searched = cr;
                Ok(None)
            }
            Some(b'\n') => Ok(Some(cr)),
            Some(_) => Err(ProtocolError::MissingCrlf),
        }
    }

    /// Handles one header line; true when it completes the top-level reply.
    fn header(&mut self, head: u8, body: &[u8], next: usize) -> Result<bool, ProtocolError> {
        if self.in_chunks {
            if head != b';' {
                return Err(ProtocolError::InvalidReplyType(head));
            }
            let len = reply_len(body).ok_or(ProtocolError::InvalidReplyLength)?;
            if len == 0 {
                self.in_chunks = false;
                return Ok(self.element_done());
            }
            self.expect_body(next, len)?;
            return Ok(false);
        }
        if self.stack.is_empty() && self.kind.is_none() && head != b'|' {
            self.kind = Some(match head {
                b'-' | b'!' => ReplyKind::Error,
                b'>' => ReplyKind::Push,
                _ => ReplyKind::Other,
            });
        }
        match head {
            b'+' | b'-' | b':' | b'_' | b',' | b'#' | b'(' => Ok(self.element_done()),
            b'$' if body == b"?" => {
                self.in_chunks = true;
                Ok(false)
            }
            b'$' | b'!' | b'=' => {
                if head == b'$' && body == b"-1" {
                    return Ok(self.element_done());
                }
                let len = reply_len(body).ok_or(ProtocolError::InvalidReplyLength)?;
                self.expect_body(next, len)?;
                Ok(false)
            }
            b'*' | b'~' | b'%' | b'>' | b'|' => self.aggregate(head, body),
            b'.' => match self.stack.last() {
                Some(open) if open.streamed && body.is_empty() => {
                    self.stack.pop();
                    Ok(self.element_done())
                }
                _ => Err(ProtocolError::InvalidReplyType(head)),
            },
            _ => Err(ProtocolError::InvalidReplyType(head)),
        }
    }

    fn aggregate(&mut self, head: u8, body: &[u8]) -> Result<bool, ProtocolError> {
        if head == b'*' && body == b"-1" {
            return Ok(self.element_done());
        }
        let streamed = body == b"?";
        if streamed && !matches!(head, b'*' | b'~' | b'%') {
            return Err(ProtocolError::InvalidReplyLength);
        }
        let remaining = if streamed {
            0
        } else {
            let count = reply_len(body).ok_or(ProtocolError::InvalidReplyLength)?;
            let per_entry = if matches!(head, b'%' | b'|') { 2 } else { 1 };
            count
                .checked_mul(per_entry)
                .ok_or(ProtocolError::InvalidReplyLength)?
        };
        let attribute = head == b'|';
        if !streamed && remaining == 0 {
            // An empty attribute decorates the next element and is not one itself.
            return Ok(!attribute && self.element_done());
        }
        if self.stack.len() >= self.max_depth {
            return Err(ProtocolError::ReplyTooDeep(self.max_depth));
        }
        self.stack.push(Open {
            remaining,
            streamed,
            attribute,
        });
        Ok(false)
    }

    fn expect_body(&mut self, start: usize, len: u64) -> Result<(), ProtocolError> {
        let end = usize::try_from(len)
            .ok()
            .and_then(|len| start.checked_add(len))
            .and_then(|end| end.checked_add(2))
            .ok_or(ProtocolError::InvalidReplyLength)?;
        self.body_end = Some(end);
        Ok(())
    }

    /// Records that one element finished; true when that completes the top-level reply.
    fn element_done(&mut self) -> bool {
        loop {
            let Some(open) = self.stack.last_mut() else {
                return true;
            };
            if open.streamed {
                return false;
            }
            open.remaining -= 1;
            if open.remaining > 0 {
                return false;
            }
            let attribute = open.attribute;
            self.stack.pop();
            if attribute {
                return false;
            }
        }
    }
}

#[cfg(test)]
#[path = "response_tests.rs"]
mod tests;
