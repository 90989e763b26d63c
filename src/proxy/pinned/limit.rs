//! How long a blocking command may hold its pinned connection.

use std::time::Duration;

/// How long the proxy waits for a blocking command's reply: the command's own timeout plus
/// `margin`, or forever for a timeout of 0. `args` are the request's arguments as bytes.
pub fn blocking_limit(name: &str, args: &[&[u8]], margin: Duration) -> Option<Duration> {
    let parse = |raw: &[u8]| -> Option<f64> { std::str::from_utf8(raw).ok()?.trim().parse().ok() };
    let (value, unit_ms) = match name {
        "blmpop" | "bzmpop" => (args.get(1).and_then(|a| parse(a)), false),
        "xread" | "xreadgroup" => {
            let at = args.iter().position(|a| a.eq_ignore_ascii_case(b"block"))?;
            (args.get(at + 1).and_then(|a| parse(a)), true)
        }
        _ => (args.last().and_then(|a| parse(a)), false),
    };
    // An unparsable timeout is refused by Redis at once; the margin alone covers that.
    let secs = match value {
        Some(v) if v.is_finite() && v > 0.0 => {
            if unit_ms {
                v / 1000.0
            } else {
                v
            }
        }
        Some(0.0) => return None,
        _ => 0.0,
    };
    Some(Duration::from_secs_f64(secs.min(1e9)) + margin)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(name: &str, args: &[&str]) -> Option<Duration> {
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        blocking_limit(name, &args, Duration::from_secs(1))
    }

    #[test]
    fn timeouts_come_from_the_right_argument() {
        assert_eq!(
            limit("blpop", &["BLPOP", "a", "b", "2.5"]),
            Some(Duration::from_millis(3500))
        );
        assert_eq!(limit("blpop", &["BLPOP", "a", "0"]), None);
        assert_eq!(
            limit("blmpop", &["BLMPOP", "3", "1", "a", "LEFT"]),
            Some(Duration::from_secs(4))
        );
        assert_eq!(
            limit(
                "xread",
                &["XREAD", "COUNT", "1", "BLOCK", "500", "STREAMS", "s", "$"]
            ),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            limit("xread", &["XREAD", "BLOCK", "0", "STREAMS", "s", "$"]),
            None
        );
        assert_eq!(
            limit("blmove", &["BLMOVE", "a", "b", "LEFT", "RIGHT", "nope"]),
            Some(Duration::from_secs(1))
        );
    }
}
