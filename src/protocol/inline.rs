//! Inline (telnet-style) requests: splitting a line into arguments with Redis's
//! `sdssplitargs` rules, and rewriting a quoted line into a RESP multibulk.
//!
//! Inline requests are rare (humans with `nc`, health checks), so the rewrite allocates;
//! the scanner only walks the line to validate it and, when no quote is used, records
//! the raw token ranges.

use std::ops::Range;

use bytes::{Bytes, BytesMut};

use super::{encode, ProtocolError};

/// One argument of an inline line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Token {
    /// The raw bytes of the argument in the line, quotes included.
    pub raw: Range<usize>,
    /// True when quotes were used, so the raw bytes differ from the argument.
    pub quoted: bool,
}

/// Walks an inline line argument by argument.
pub(crate) struct Tokens<'a> {
    line: &'a [u8],
    pos: usize,
}

/// Blank bytes skipped between arguments (C `isspace`).
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

/// Bytes that end an unquoted argument; `\v` and `\f` do not, as in `sdssplitargs`.
fn ends_token(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

fn hex_value(b: Option<&u8>) -> Option<u8> {
    let b = *b?;
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

enum Mode {
    Plain,
    Double,
    Single,
}

impl<'a> Tokens<'a> {
    /// Starts splitting `line` (without its line terminator).
    pub(crate) fn new(line: &'a [u8]) -> Self {
        // sdssplitargs works on a C string, so a NUL ends the line.
        let end = line.iter().position(|&b| b == 0).unwrap_or(line.len());
        Self {
            line: &line[..end],
            pos: 0,
        }
    }

    /// Returns the next argument, appending its unescaped bytes to `out` when given.
    pub(crate) fn next_token(
        &mut self,
        mut out: Option<&mut Vec<u8>>,
    ) -> Result<Option<Token>, ProtocolError> {
        let line = self.line;
        while self.pos < line.len() && is_space(line[self.pos]) {
            self.pos += 1;
        }
        if self.pos == line.len() {
            return Ok(None);
        }
        let start = self.pos;
        let mut quoted = false;
        let mut mode = Mode::Plain;
        let mut push = |b: u8| {
            if let Some(out) = out.as_deref_mut() {
                out.push(b);
            }
        };
        loop {
            let p = self.pos;
            match mode {
                Mode::Plain => match line.get(p) {
                    None => {
                        return Ok(Some(Token {
                            raw: start..p,
                            quoted,
                        }))
                    }
                    Some(&b) if ends_token(b) => {
                        self.pos += 1;
                        return Ok(Some(Token {
                            raw: start..p,
                            quoted,
                        }));
                    }
                    Some(b'"') => {
                        mode = Mode::Double;
                        quoted = true;
                        self.pos += 1;
                    }
                    Some(b'\'') => {
                        mode = Mode::Single;
                        quoted = true;
                        self.pos += 1;
                    }
                    Some(&b) => {
                        push(b);
                        self.pos += 1;
                    }
                },
                Mode::Double => {
                    let Some(&b) = line.get(p) else {
                        return Err(ProtocolError::UnbalancedQuotes);
                    };
                    let next = line.get(p + 1).copied();
                    if b == b'\\' && next == Some(b'x') {
                        if let (Some(hi), Some(lo)) =
                            (hex_value(line.get(p + 2)), hex_value(line.get(p + 3)))
                        {
                            push(hi * 16 + lo);
                            self.pos += 4;
                            continue;
                        }
                    }
                    match (b, next) {
                        (b'\\', Some(e)) => {
                            push(match e {
                                b'n' => b'\n',
                                b'r' => b'\r',
                                b't' => b'\t',
                                b'b' => 0x08,
                                b'a' => 0x07,
                                other => other,
                            });
                            self.pos += 2;
                        }
                        (b'"', _) => return self.close_quote(start),
                        _ => {
                            push(b);
                            self.pos += 1;
                        }
                    }
                }
                Mode::Single => {
                    let Some(&b) = line.get(p) else {
                        return Err(ProtocolError::UnbalancedQuotes);
                    };
                    match (b, line.get(p + 1)) {
                        (b'\\', Some(b'\'')) => {
                            push(b'\'');
                            self.pos += 2;
                        }
                        (b'\'', _) => return self.close_quote(start),
                        _ => {
                            push(b);
                            self.pos += 1;
                        }
                    }
                }
            }
        }
    }

    /// A closing quote ends the argument and must be followed by a blank or the line end.
    fn close_quote(&mut self, start: usize) -> Result<Option<Token>, ProtocolError> {
        let after = self.pos + 1;
        if let Some(&b) = self.line.get(after) {
            if !is_space(b) {
                return Err(ProtocolError::UnbalancedQuotes);
            }
        }
        self.pos = after;
        Ok(Some(Token {
            raw: start..after,
            quoted: true,
        }))
    }
}

/// Strips one trailing `\n` and a `\r` just before it, as Redis does for an inline line.
pub(crate) fn strip_line_end(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Rewrites one inline request line (with or without its `\r\n`) into the RESP multibulk
/// Redis would have parsed from it (`sdssplitargs` semantics: quotes, `\n`, `\x41` escapes).
pub fn inline_to_multibulk(line: &[u8]) -> Result<Bytes, ProtocolError> {
    let mut tokens = Tokens::new(strip_line_end(line));
    let mut data = Vec::new();
    let mut ends = Vec::new();
    while tokens.next_token(Some(&mut data))?.is_some() {
        ends.push(data.len());
    }
    let mut out = BytesMut::with_capacity(data.len() + 16 * ends.len() + 16);
    encode::array_header(&mut out, ends.len());
    let mut start = 0;
    for end in ends {
        encode::bulk(&mut out, &data[start..end]);
        start = end;
    }
    Ok(out.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(line: &[u8]) -> Result<Vec<Vec<u8>>, ProtocolError> {
        let mut tokens = Tokens::new(line);
        let mut out = Vec::new();
        loop {
            let mut arg = Vec::new();
            match tokens.next_token(Some(&mut arg))? {
                Some(_) => out.push(arg),
                None => return Ok(out),
            }
        }
    }

    fn words(list: &[&str]) -> Vec<Vec<u8>> {
        list.iter().map(|s| s.as_bytes().to_vec()).collect()
    }

    #[test]
    fn plain_tokens_and_blanks() {
        assert_eq!(split(b"  SET  k\tv ").unwrap(), words(&["SET", "k", "v"]));
        assert_eq!(split(b"").unwrap(), words(&[]));
        assert_eq!(split(b" \t\x0b ").unwrap(), words(&[]));
        // \v is skipped between arguments but is part of an unquoted argument.
        assert_eq!(
            split(b"ECHO \x0ba\x0bb").unwrap(),
            words(&["ECHO", "a\x0bb"])
        );
        // A backslash outside quotes is literal.
        assert_eq!(split(br"a\nb").unwrap(), words(&[r"a\nb"]));
    }

    #[test]
    fn double_quotes_and_escapes() {
        assert_eq!(
            split(br#"ECHO "\x41\n\r\t\b\a\q\"" "" x"#).unwrap(),
            vec![
                b"ECHO".to_vec(),
                b"A\n\r\t\x08\x07q\"".to_vec(),
                vec![],
                b"x".to_vec()
            ]
        );
        // An incomplete hex escape falls back to the single-character escape.
        assert_eq!(split(br#""\x4g""#).unwrap(), words(&["x4g"]));
        assert_eq!(
            split(br#"a"b c"d"#).unwrap_err(),
            ProtocolError::UnbalancedQuotes
        );
        assert_eq!(split(br#"a"b c""#).unwrap(), words(&["ab c"]));
    }

    #[test]
    fn single_quotes() {
        assert_eq!(split(br"ECHO 'a\'b'").unwrap(), words(&["ECHO", "a'b"]));
        assert_eq!(split(br"'a\nb'").unwrap(), words(&[r"a\nb"]));
    }

    #[test]
    fn unbalanced_quotes() {
        for bad in [
            &br#"ECHO "a"b"#[..],
            br#"ECHO "a"#,
            br"ECHO 'a",
            br"ECHO 'a'b",
            br#"ECHO "abc\""#,
            br#"ECHO "a\"#,
        ] {
            assert_eq!(split(bad).unwrap_err(), ProtocolError::UnbalancedQuotes);
        }
    }

    #[test]
    fn nul_ends_the_line() {
        assert_eq!(split(b"a b\0c d").unwrap(), words(&["a", "b"]));
        assert_eq!(
            split(b"\"a\0\"").unwrap_err(),
            ProtocolError::UnbalancedQuotes
        );
    }

    #[test]
    fn token_ranges_and_quote_flag() {
        let mut t = Tokens::new(b" GET \"k\" v");
        assert_eq!(
            t.next_token(None).unwrap(),
            Some(Token {
                raw: 1..4,
                quoted: false
            })
        );
        assert_eq!(
            t.next_token(None).unwrap(),
            Some(Token {
                raw: 5..8,
                quoted: true
            })
        );
        assert_eq!(
            t.next_token(None).unwrap(),
            Some(Token {
                raw: 9..10,
                quoted: false
            })
        );
        assert_eq!(t.next_token(None).unwrap(), None);
    }

    #[test]
    fn rewrite_to_multibulk() {
        assert_eq!(
            &inline_to_multibulk(b"SET k \"a b\\r\\n\"\r\n").unwrap()[..],
            b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\na b\r\n\r\n"
        );
        assert_eq!(
            &inline_to_multibulk(b"PING\n").unwrap()[..],
            b"*1\r\n$4\r\nPING\r\n"
        );
        assert_eq!(&inline_to_multibulk(b"   \r\n").unwrap()[..], b"*0\r\n");
        assert_eq!(
            inline_to_multibulk(b"ECHO \"x\r\n").unwrap_err(),
            ProtocolError::UnbalancedQuotes
        );
    }
}
