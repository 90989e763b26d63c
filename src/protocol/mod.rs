//! The hot-path RESP layer: resumable scanners that find request and reply boundaries
//! without building value trees, the table that turns a server error into a retry
//! action, and small encoders for the replies the proxy writes itself.
//!
//! Both scanners record byte ranges only and skip bulk bodies by their declared
//! length, so a request or reply that arrives in many reads is never re-parsed from
//! its first byte and its payload is never touched. Client-facing framing follows
//! Redis 7.0 `networking.c` so that the proxy accepts exactly what Redis accepts and
//! answers malformed input with the same error text.

pub mod encode;
pub mod error_reply;
pub mod fuzz;
pub mod inline;
mod number;
pub mod request;
pub mod resp3;
pub mod response;

#[cfg(test)]
mod proptests;

pub use error_reply::{classify_error, RetryAction, ServerError};
pub use inline::inline_to_multibulk;
pub use request::{RequestKind, RequestScanner, ScanLimits, ScannedRequest};
pub use response::{ReplyKind, ResponseScanner, ScannedReply};

use bytes::{BufMut, BytesMut};

/// A framing error: from a client (the `Display` text is what Redis sends after `-ERR `)
/// or from a backend reply (the stream is out of sync and the connection must go).
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ProtocolError {
    /// A `*<count>` line that is not a number Redis accepts, or a count above the limit.
    #[error("Protocol error: invalid multibulk length")]
    InvalidMultibulkLength,
    /// A `$<len>` line that is negative, malformed or above the bulk limit.
    #[error("Protocol error: invalid bulk length")]
    InvalidBulkLength,
    /// An element of a request array that is not a bulk string (the byte found instead).
    #[error("Protocol error: expected '$', got '{}'", display_byte(*.0))]
    ExpectedBulk(u8),
    /// An inline request whose quotes do not close, or close against a non-space.
    #[error("Protocol error: unbalanced quotes in request")]
    UnbalancedQuotes,
    /// An inline request longer than the inline limit without a newline.
    #[error("Protocol error: too big inline request")]
    InlineTooBig,
    /// A `*` count line longer than the inline limit without a `\r`.
    #[error("Protocol error: too big mbulk count string")]
    MultibulkCountTooBig,
    /// A `$` length line longer than the inline limit without a `\r`.
    #[error("Protocol error: too big bulk count string")]
    BulkCountTooBig,
    /// A backend reply starts with a byte that is no RESP2/RESP3 type.
    #[error("invalid RESP reply type byte 0x{0:02x}")]
    InvalidReplyType(u8),
    /// A backend reply carries a length or count that is not a non-negative number.
    #[error("invalid length or count in RESP reply")]
    InvalidReplyLength,
    /// A backend reply line or body is not terminated by CRLF.
    #[error("RESP reply line not terminated by CRLF")]
    MissingCrlf,
    /// A backend reply nests aggregates deeper than the scanner allows.
    #[error("RESP reply nests deeper than {0} levels")]
    ReplyTooDeep(usize),
}

impl ProtocolError {
    /// True when the peer at fault is a client (the error is answered with `-ERR` and the
    /// connection closed), false for a malformed backend reply.
    pub fn is_client_error(&self) -> bool {
        !matches!(
            self,
            Self::InvalidReplyType(_)
                | Self::InvalidReplyLength
                | Self::MissingCrlf
                | Self::ReplyTooDeep(_)
        )
    }

    /// Appends the exact `-ERR ...\r\n` line Redis sends for this client error, including a
    /// non-UTF-8 offending byte verbatim (which `Display` cannot carry).
    pub fn encode_reply(&self, buf: &mut BytesMut) {
        buf.put_slice(b"-ERR ");
        match self {
            Self::ExpectedBulk(b) => {
                buf.put_slice(b"Protocol error: expected '$', got '");
                // Redis replaces CR/LF in error text with spaces; every other byte goes as is.
                buf.put_u8(if matches!(b, b'\r' | b'\n') { b' ' } else { *b });
                buf.put_u8(b'\'');
            }
            other => buf.put_slice(other.to_string().as_bytes()),
        }
        buf.put_slice(b"\r\n");
    }
}

/// Renders an offending byte the way Redis's error sanitiser does for ASCII; a byte above
/// 0x7f shows as its Latin-1 character (use `encode_reply` for the raw byte).
fn display_byte(b: u8) -> char {
    if matches!(b, b'\r' | b'\n') {
        ' '
    } else {
        char::from(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_matches_redis_text() {
        assert_eq!(
            ProtocolError::ExpectedBulk(b'X').to_string(),
            "Protocol error: expected '$', got 'X'"
        );
        assert_eq!(
            ProtocolError::ExpectedBulk(b'\r').to_string(),
            "Protocol error: expected '$', got ' '"
        );
        assert_eq!(
            ProtocolError::InvalidMultibulkLength.to_string(),
            "Protocol error: invalid multibulk length"
        );
        assert_eq!(
            ProtocolError::MultibulkCountTooBig.to_string(),
            "Protocol error: too big mbulk count string"
        );
    }

    #[test]
    fn encode_reply_keeps_raw_byte() {
        let mut buf = BytesMut::new();
        ProtocolError::ExpectedBulk(0xff).encode_reply(&mut buf);
        assert_eq!(
            &buf[..],
            b"-ERR Protocol error: expected '$', got '\xff'\r\n"
        );
        buf.clear();
        ProtocolError::InvalidBulkLength.encode_reply(&mut buf);
        assert_eq!(&buf[..], b"-ERR Protocol error: invalid bulk length\r\n");
    }

    #[test]
    fn client_vs_backend_errors() {
        assert!(ProtocolError::UnbalancedQuotes.is_client_error());
        assert!(!ProtocolError::MissingCrlf.is_client_error());
    }
}
