//! Small encoders appending RESP to a `BytesMut`, for the replies and requests the proxy
//! builds itself (local commands, merged multi-key replies, `ASKING`, topology queries).

use bytes::{BufMut, BytesMut};

/// Appends a decimal integer without going through `fmt`.
fn decimal(buf: &mut BytesMut, value: i64) {
    if value < 0 {
        buf.put_u8(b'-');
    }
    unsigned(buf, value.unsigned_abs());
}

fn unsigned(buf: &mut BytesMut, mut value: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    buf.put_slice(&digits[at..]);
}

fn header(buf: &mut BytesMut, kind: u8, len: usize) {
    buf.put_u8(kind);
    unsigned(buf, len as u64);
    buf.put_slice(b"\r\n");
}

/// Appends a line's text with CR and LF turned into spaces, as Redis does for status and
/// error text, so a message can never break the framing.
fn line_text(buf: &mut BytesMut, text: &str) {
    for &b in text.as_bytes() {
        buf.put_u8(if matches!(b, b'\r' | b'\n') { b' ' } else { b });
    }
    buf.put_slice(b"\r\n");
}

/// Appends a simple string `+s\r\n`.
pub fn simple(buf: &mut BytesMut, s: &str) {
    buf.put_u8(b'+');
    line_text(buf, s);
}

/// Appends a simple error `-msg\r\n`; `msg` starts with its code, e.g. `"ERR unknown ..."`.
pub fn error(buf: &mut BytesMut, msg: &str) {
    buf.put_u8(b'-');
    line_text(buf, msg);
}

/// Appends an integer `:i\r\n`.
pub fn integer(buf: &mut BytesMut, i: i64) {
    buf.put_u8(b':');
    decimal(buf, i);
    buf.put_slice(b"\r\n");
}

/// Appends a bulk string `$len\r\ndata\r\n`.
pub fn bulk(buf: &mut BytesMut, data: &[u8]) {
    header(buf, b'$', data.len());
    buf.put_slice(data);
    buf.put_slice(b"\r\n");
}

/// Appends free text as Redis sends it (INFO, CLUSTER NODES, CLIENT INFO): verbatim text
/// (`=len\r\ntxt:…`) in RESP3, a bulk string in RESP2.
pub fn text(buf: &mut BytesMut, data: &[u8], resp3: bool) {
    if !resp3 {
        return bulk(buf, data);
    }
    header(buf, b'=', data.len() + 4);
    buf.put_slice(b"txt:");
    buf.put_slice(data);
    buf.put_slice(b"\r\n");
}

/// Appends a null: `_\r\n` in RESP3, the null bulk `$-1\r\n` in RESP2.
pub fn null(buf: &mut BytesMut, resp3: bool) {
    buf.put_slice(if resp3 { b"_\r\n" } else { b"$-1\r\n" });
}

/// Appends an array header `*n\r\n`; the caller appends the `n` elements.
pub fn array_header(buf: &mut BytesMut, n: usize) {
    header(buf, b'*', n);
}

/// Appends a map header for `n` pairs: `%n\r\n` in RESP3, an array of `2n` in RESP2.
pub fn map_header(buf: &mut BytesMut, n: usize, resp3: bool) {
    if resp3 {
        header(buf, b'%', n);
    } else {
        header(buf, b'*', n.saturating_mul(2));
    }
}

/// Appends a request: a multibulk of `args`, the command name first.
pub fn command(buf: &mut BytesMut, args: &[&[u8]]) {
    array_header(buf, args.len());
    for arg in args {
        bulk(buf, arg);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(f: impl FnOnce(&mut BytesMut)) -> Vec<u8> {
        let mut buf = BytesMut::new();
        f(&mut buf);
        buf.to_vec()
    }

    #[test]
    fn scalars() {
        assert_eq!(out(|b| simple(b, "OK")), b"+OK\r\n");
        assert_eq!(out(|b| simple(b, "a\r\nb")), b"+a  b\r\n");
        assert_eq!(
            out(|b| error(b, "ERR unknown command 'x'")),
            b"-ERR unknown command 'x'\r\n"
        );
        assert_eq!(out(|b| error(b, "ERR a\nb")), b"-ERR a b\r\n");
        assert_eq!(out(|b| integer(b, 0)), b":0\r\n");
        assert_eq!(out(|b| integer(b, -42)), b":-42\r\n");
        assert_eq!(out(|b| integer(b, i64::MIN)), b":-9223372036854775808\r\n");
        assert_eq!(out(|b| integer(b, i64::MAX)), b":9223372036854775807\r\n");
        assert_eq!(out(|b| bulk(b, b"a\r\nb")), b"$4\r\na\r\nb\r\n");
        assert_eq!(out(|b| bulk(b, b"")), b"$0\r\n\r\n");
        assert_eq!(out(|b| null(b, true)), b"_\r\n");
        assert_eq!(out(|b| text(b, b"a:1\r\n", true)), b"=9\r\ntxt:a:1\r\n\r\n");
        assert_eq!(out(|b| text(b, b"a:1\r\n", false)), b"$5\r\na:1\r\n\r\n");
        assert_eq!(out(|b| null(b, false)), b"$-1\r\n");
    }

    #[test]
    fn aggregates() {
        assert_eq!(out(|b| array_header(b, 12)), b"*12\r\n");
        assert_eq!(out(|b| map_header(b, 3, true)), b"%3\r\n");
        assert_eq!(out(|b| map_header(b, 3, false)), b"*6\r\n");
        assert_eq!(
            out(|b| command(b, &[b"GET", b"k"])),
            b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"
        );
        assert_eq!(out(|b| command(b, &[])), b"*0\r\n");
    }
}
