//! Redis-style glob patterns (`*`, `?`, `[a-z]`, `[^x]`, `\` escapes), as `KEYS` and ACL key
//! patterns use them; case-sensitive, and linear in practice (one star is backtracked at a time).

/// True when `text` matches the glob `pattern`.
pub fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    // Where to resume after the most recent star: pattern index after it, text index tried.
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if pattern.get(p) == Some(&b'*') {
            while pattern.get(p) == Some(&b'*') {
                p += 1;
            }
            star = Some((p, t));
            continue;
        }
        if let Some(next) = match_one(pattern, p, text[t]) {
            p = next;
            t += 1;
            continue;
        }
        // A later star subsumes every earlier one, so only the last needs backtracking.
        match star {
            Some((after, tried)) => {
                p = after;
                t = tried + 1;
                star = Some((after, tried + 1));
            }
            None => return false,
        }
    }
    pattern[p.min(pattern.len())..].iter().all(|&c| c == b'*')
}

/// Matches one pattern element at `p` against byte `c`; the index after the element on a match.
fn match_one(pattern: &[u8], p: usize, c: u8) -> Option<usize> {
    let &head = pattern.get(p)?;
    match head {
        b'?' => Some(p + 1),
        b'\\' if p + 1 < pattern.len() => (pattern[p + 1] == c).then_some(p + 2),
        b'[' => match_class(pattern, p + 1, c),
        _ => (head == c).then_some(p + 1),
    }
}

/// A `[...]` class starting after the `[`; an unterminated class ends with the pattern, as in Redis.
fn match_class(pattern: &[u8], mut p: usize, c: u8) -> Option<usize> {
    let negate = pattern.get(p) == Some(&b'^');
    if negate {
        p += 1;
    }
    let mut hit = false;
    loop {
        match pattern.get(p) {
            None => break,
            Some(b']') => {
                p += 1;
                break;
            }
            Some(b'\\') if p + 1 < pattern.len() => {
                hit |= pattern[p + 1] == c;
                p += 2;
            }
            Some(&lo) if pattern.get(p + 1) == Some(&b'-') && p + 2 < pattern.len() => {
                let hi = pattern[p + 2];
                let (lo, hi) = if lo <= hi { (lo, hi) } else { (hi, lo) };
                hit |= (lo..=hi).contains(&c);
                p += 3;
            }
            Some(&b) => {
                hit |= b == c;
                p += 1;
            }
        }
    }
    (hit != negate).then_some(p)
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    fn m(p: &str, t: &str) -> bool {
        glob_match(p.as_bytes(), t.as_bytes())
    }

    #[test]
    fn stars_and_questions() {
        assert!(m("*", ""));
        assert!(m("*", "anything"));
        assert!(m("app:*", "app:1"));
        assert!(!m("app:*", "ap"));
        assert!(m("a*b*c", "axxbyyc"));
        assert!(!m("a*b*c", "axxbyy"));
        assert!(m("h?llo", "hello"));
        assert!(!m("h?llo", "hllo"));
        assert!(m("**x", "abx"));
        assert!(m("", ""));
        assert!(!m("", "a"));
    }

    #[test]
    fn classes_and_escapes() {
        assert!(m("h[ae]llo", "hallo"));
        assert!(!m("h[ae]llo", "hillo"));
        assert!(m("h[^e]llo", "hallo"));
        assert!(!m("h[^e]llo", "hello"));
        assert!(m("h[a-b]llo", "hbllo"));
        assert!(m("h[b-a]llo", "hallo"));
        assert!(m("a\\*", "a*"));
        assert!(!m("a\\*", "ab"));
        assert!(m("[\\]]", "]"));
        assert!(m("x[ab", "xa"));
        assert!(!m("[]x", "x"));
    }

    #[test]
    fn many_stars_stay_fast() {
        let pattern = "*a".repeat(20) + "b";
        let text = "a".repeat(5000);
        let start = tokio::time::Instant::now();
        assert!(!m(&pattern, &text));
        assert!(start.elapsed() < std::time::Duration::from_secs(1));
    }
}
