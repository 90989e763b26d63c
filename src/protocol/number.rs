//! Number parsing and byte search shared by the request and reply scanners.

/// Parses a signed decimal exactly as Redis's `string2ll` does: no sign other than a
/// leading `-`, no leading zeros, no `-0`, at most 20 characters, no overflow.
pub(crate) fn redis_int(s: &[u8]) -> Option<i64> {
    // Redis refuses anything that cannot fit its LONG_STR_SIZE (21) buffer.
    if s.is_empty() || s.len() >= 21 {
        return None;
    }
    if s == b"0" {
        return Some(0);
    }
    let (negative, digits) = match s.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, s),
    };
    match digits.first() {
        Some(b'1'..=b'9') => {}
        _ => return None,
    }
    let mut magnitude: u64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        magnitude = magnitude
            .checked_mul(10)?
            .checked_add(u64::from(d - b'0'))?;
    }
    if negative {
        // i64::MIN has no positive counterpart, so negate through i128.
        i64::try_from(-i128::from(magnitude)).ok()
    } else {
        i64::try_from(magnitude).ok()
    }
}

/// Parses a non-negative decimal length from a reply header (plain digits, no sign).
pub(crate) fn reply_len(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 19 {
        return None;
    }
    let mut v: u64 = 0;
    for &d in s {
        if !d.is_ascii_digit() {
            return None;
        }
        v = v * 10 + u64::from(d - b'0');
    }
    Some(v)
}

/// Position of the first `needle` in `hay`, relative to `hay`.
#[inline]
pub(crate) fn find(hay: &[u8], needle: u8) -> Option<usize> {
    hay.iter().position(|&b| b == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_int_follows_string2ll() {
        assert_eq!(redis_int(b"0"), Some(0));
        assert_eq!(redis_int(b"12"), Some(12));
        assert_eq!(redis_int(b"-1"), Some(-1));
        assert_eq!(
            redis_int(b"9223372036854775807"),
            Some(9_223_372_036_854_775_807)
        );
        assert_eq!(redis_int(b"-9223372036854775808"), Some(i64::MIN));
        for bad in [
            &b""[..],
            b"-",
            b"-0",
            b"01",
            b"+1",
            b"1a",
            b" 1",
            b"9223372036854775808",
            b"000000000000000000001",
        ] {
            assert_eq!(redis_int(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn reply_len_plain_digits() {
        assert_eq!(reply_len(b"0"), Some(0));
        assert_eq!(reply_len(b"123"), Some(123));
        assert_eq!(reply_len(b""), None);
        assert_eq!(reply_len(b"-1"), None);
        assert_eq!(reply_len(b"12x"), None);
        assert_eq!(reply_len(b"99999999999999999999"), None);
    }
}
