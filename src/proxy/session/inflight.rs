//! The bytes of a client's requests the proxy holds until their replies are written: a
//! pipeline of large writes to a slow shard would otherwise be read in full (up to
//! `client.max_inflight` requests of up to 512 MiB each). Reading pauses past
//! `client.max_inflight_bytes`, the way Redis stops reading a client it has not answered.

use std::collections::VecDeque;

/// Request bytes held, by the reply-queue position that releases them.
#[derive(Debug, Default)]
pub(super) struct RequestBytes {
    total: usize,
    /// (sequence number after the request's entries, its length), in request order.
    by_seq: VecDeque<(u64, usize)>,
}

impl RequestBytes {
    /// A request of `len` bytes whose entries end before sequence number `after_seq`.
    pub(super) fn add(&mut self, after_seq: u64, len: usize) {
        self.total += len;
        self.by_seq.push_back((after_seq, len));
    }

    /// Every entry before `base_seq` has been written: release their requests.
    #[inline]
    pub(super) fn written(&mut self, base_seq: u64) {
        while let Some(&(after, len)) = self.by_seq.front() {
            if after > base_seq {
                return;
            }
            self.total -= len;
            self.by_seq.pop_front();
        }
    }

    /// True when at least `limit` bytes are held (0: no limit).
    #[inline]
    pub(super) fn over(&self, limit: usize) -> bool {
        limit > 0 && self.total >= limit
    }

    /// Bytes held.
    pub(super) fn total(&self) -> usize {
        self.total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn released_as_replies_are_written() {
        let mut b = RequestBytes::default();
        b.add(1, 100);
        b.add(2, 50);
        // A request that took two entries (seq 2 and 3).
        b.add(4, 10);
        assert_eq!(b.total(), 160);
        assert!(b.over(160) && !b.over(161) && !b.over(0));
        b.written(1);
        assert_eq!(b.total(), 60);
        b.written(3);
        assert_eq!(b.total(), 10);
        b.written(4);
        assert_eq!(b.total(), 0);
        b.written(9);
        assert_eq!(b.total(), 0);
    }
}
