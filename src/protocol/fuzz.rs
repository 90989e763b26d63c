//! A fuzz-target body exercising both scanners on arbitrary input.

use super::{RequestScanner, ResponseScanner, ScanLimits};

/// Feeds arbitrary bytes to both scanners, split at `cuts`; must never panic. Usable as a
/// fuzz target body.
pub fn fuzz_scanners(data: &[u8], cuts: &[usize]) {
    let mut points: Vec<usize> = cuts.iter().map(|&c| c.min(data.len())).collect();
    points.push(data.len());
    points.sort_unstable();
    let mut requests = RequestScanner::new(ScanLimits {
        max_bulk_len: 1024,
        max_multibulk_len: 64,
        max_inline_len: 32,
    });
    let mut replies = ResponseScanner::new(8);
    let (mut req_at, mut rep_at) = (0, 0);
    let (mut req_ok, mut rep_ok) = (true, true);
    for point in points {
        while req_ok {
            match requests.scan(&data[req_at..point]) {
                Ok(Some(r)) => {
                    assert!(r.len > 0 && req_at + r.len <= point);
                    assert!(requests.args().iter().all(|a| a.end <= r.len));
                    req_at += r.len;
                }
                Ok(None) => break,
                Err(_) => req_ok = false,
            }
        }
        while rep_ok {
            match replies.scan(&data[rep_at..point]) {
                Ok(Some(r)) => {
                    assert!(r.len > 0 && rep_at + r.len <= point);
                    rep_at += r.len;
                }
                Ok(None) => break,
                Err(_) => rep_ok = false,
            }
        }
    }
}
