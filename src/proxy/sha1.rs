//! SHA-1 naming of Lua scripts the way Redis does (`EVALSHA` takes the hex SHA-1 of the script
//! body) and of the emulated cluster's stable node ID. A thin wrapper over `sha1_smol` so the
//! callers keep one name for "the Redis script SHA"; not for anything that needs collision
//! resistance.

/// The lower-case hex SHA-1 of `data`, as `SCRIPT LOAD` returns it.
pub fn hex(data: &[u8]) -> String {
    sha1_smol::Sha1::from(data).digest().to_string()
}

#[cfg(test)]
mod tests {
    use super::hex;

    #[test]
    fn standard_vectors() {
        assert_eq!(hex(b""), "da39a3ee5e6b4b0d3255bfef95601890afd80709");
        assert_eq!(hex(b"abc"), "a9993e364706816aba3e25717850c26c9cd0d89d");
        assert_eq!(
            hex(b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "84983e441c3bd26ebaae4aa1f95129e5e54670f1"
        );
        assert_eq!(
            hex(&vec![b'a'; 1_000_000]),
            "34aa973cd4c4daa4f61eeb2bdbad27316534016f"
        );
    }

    #[test]
    fn padding_edges() {
        // 55, 56 and 64 bytes straddle the one-or-two padding block boundary.
        assert_eq!(hex(&[b'a'; 55]), "c1c8bbdc22796e28c0e15163d20899b65621d65a");
        assert_eq!(hex(&[b'a'; 56]), "c2db330f6083854c99d4b5bfb6e8f29f201be699");
        assert_eq!(hex(&[b'a'; 64]), "0098ba824b5c16427bd7a1122a5a442a25ec644d");
    }

    #[test]
    fn redis_script_name() {
        // `SCRIPT LOAD "return 1"` on Redis 7.0.
        assert_eq!(hex(b"return 1"), "e0e1f9fabfc9d4800c877a703b823ac0578ff8db");
    }
}
