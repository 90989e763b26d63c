//! Key → hash slot mapping, exactly as Redis Cluster computes it.
//!
//! The slot is CRC16-XMODEM of the key's hashed part, modulo 16384. A key's hashed part is the text
//! between its first `{` and the first `}` after it, but only when that text is non-empty; otherwise the
//! whole key is hashed. This lets clients force related keys into one slot (`{user1}.a`, `{user1}.b`).

/// Number of hash slots in a Redis Cluster.
pub const SLOT_COUNT: u16 = 16384;

/// The hash slot (0..16384) that owns `key`, honouring `{hash tags}`.
pub fn key_slot(key: &[u8]) -> u16 {
    let hashed = hash_tag(key).unwrap_or(key);
    // SLOT_COUNT is a power of two, so the modulo is a mask over the low 14 bits.
    crc16::State::<crc16::XMODEM>::calculate(hashed) & (SLOT_COUNT - 1)
}

/// The non-empty text between the first `{` and the first `}` after it, if any.
fn hash_tag(key: &[u8]) -> Option<&[u8]> {
    let open = key.iter().position(|&b| b == b'{')?;
    let rest = &key[open + 1..];
    let close = rest.iter().position(|&b| b == b'}')?;
    (close > 0).then(|| &rest[..close])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_redis_cluster_keyslot() {
        // Expected values from `CLUSTER KEYSLOT` on Redis 7.0.15.
        let cases: &[(&[u8], u16)] = &[
            (b"123456789", 12739),
            (b"foo", 12182),
            (b"", 0),
            (b"{user1000}.following", 3443),
            (b"foo{}{bar}", 8363),
            (b"foo{{bar}}zap", 4015),
            (b"{bar", 4015),
            (b"8xjx7vWrfPq54mKfFD3Y1CcjjofpnAcQ", 5458),
        ];
        for (key, slot) in cases {
            assert_eq!(
                key_slot(key),
                *slot,
                "key {:?}",
                String::from_utf8_lossy(key)
            );
        }
    }

    #[test]
    fn hash_tag_rules() {
        assert_eq!(hash_tag(b"{a}b"), Some(&b"a"[..]));
        assert_eq!(hash_tag(b"x{}y"), None);
        assert_eq!(hash_tag(b"x{y"), None);
        assert_eq!(hash_tag(b"}x{y}"), Some(&b"y"[..]));
        assert_eq!(
            key_slot(b"{user1000}.followers"),
            key_slot(b"{user1000}.following")
        );
    }

    #[test]
    fn slot_is_always_in_range() {
        for i in 0..2000u32 {
            assert!(key_slot(&i.to_le_bytes()) < SLOT_COUNT);
        }
    }
}
