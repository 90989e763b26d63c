//! Shared machinery of the slotway fuzz targets: the read schedules an input is fed in,
//! and a driver that records what a resumable scanner made of it, so targets can check
//! that the framing never depends on where the reads were split.

/// End offsets of successive reads: each read makes `data[..end]` available.
pub type Schedule = Vec<usize>;

/// The read schedules every input is scanned with: all at once, one byte per read, and a
/// few pseudo-random splits derived from the input (so a crash reproduces from the file).
pub fn schedules(data: &[u8]) -> [Schedule; 3] {
    let len = data.len();
    [vec![len], (1..=len).collect(), hashed_cuts(data)]
}

/// Up to 8 split points drawn from an FNV-1a hash of the input, plus the end.
fn hashed_cuts(data: &[u8]) -> Schedule {
    let mut state = data.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    }) | 1;
    let mut next = || {
        // xorshift64: any cheap deterministic sequence will do.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let bound = data.len() as u64 + 1;
    let count = next() % 9;
    let mut cuts: Schedule = (0..count).map(|_| (next() % bound) as usize).collect();
    cuts.push(data.len());
    cuts.sort_unstable();
    cuts
}

/// How a scan of the whole input ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End<E> {
    /// Every byte was consumed.
    Clean,
    /// A frame starting at `at` was still incomplete when the input ran out.
    Incomplete {
        /// Offset of the unfinished frame.
        at: usize,
    },
    /// The scanner refused the frame starting at `at`.
    Error {
        /// Offset of the refused frame.
        at: usize,
        /// The scanner's error.
        error: E,
    },
}

/// Everything a scanner reported for one input under one schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome<F, E> {
    /// Each frame found, in order, with its start offset.
    pub frames: Vec<(usize, F)>,
    /// How the scan stopped.
    pub end: End<E>,
}

/// Feeds `data` to a scanner read by read. `scan` is called with the unconsumed bytes
/// available so far and returns `Some((len, record))` for a complete frame of `len` bytes.
/// Mirrors a session: after each read, every complete frame is consumed.
pub fn drive<F, E>(
    data: &[u8],
    schedule: &[usize],
    mut scan: impl FnMut(&[u8]) -> Result<Option<(usize, F)>, E>,
) -> Outcome<F, E> {
    let mut frames = Vec::new();
    let mut at = 0;
    for &end in schedule {
        loop {
            match scan(&data[at..end]) {
                Ok(Some((len, record))) => {
                    assert!(len > 0, "empty frame at {at}");
                    assert!(
                        at + len <= end,
                        "frame at {at} of {len} bytes overruns read end {end}"
                    );
                    frames.push((at, record));
                    at += len;
                }
                Ok(None) => break,
                Err(error) => {
                    return Outcome {
                        frames,
                        end: End::Error { at, error },
                    }
                }
            }
        }
    }
    let end = if at == data.len() {
        End::Clean
    } else {
        End::Incomplete { at }
    };
    Outcome { frames, end }
}

/// Asserts that outcomes from different schedules agree. An error for which `read_bound`
/// is true depends on how much happened to be buffered (Redis's "too big" checks fire on a
/// long partial line that a bigger read would have completed), so past the first frame
/// such an error cut short, schedules may legitimately differ.
pub fn assert_agree<F, E>(outcomes: &[Outcome<F, E>], read_bound: impl Fn(&E) -> bool)
where
    F: PartialEq + std::fmt::Debug,
    E: PartialEq + std::fmt::Debug,
{
    let bounded = outcomes
        .iter()
        .filter(|o| matches!(&o.end, End::Error { error, .. } if read_bound(error)))
        .map(|o| o.frames.len())
        .min();
    let Some(first) = outcomes.first() else {
        return;
    };
    for other in &outcomes[1..] {
        match bounded {
            None => assert_eq!(first, other, "schedules disagree"),
            Some(k) => {
                assert!(first.frames.len() >= k && other.frames.len() >= k);
                assert_eq!(first.frames[..k], other.frames[..k], "schedules disagree");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_end_at_len() {
        let data = b"*1\r\n$4\r\nPING\r\n";
        for s in schedules(data) {
            assert_eq!(s.last(), Some(&data.len()));
            assert!(s.windows(2).all(|w| w[0] <= w[1]));
        }
        assert_eq!(schedules(b"")[1], Vec::<usize>::new());
    }
}
