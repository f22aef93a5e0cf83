//! EMAIL_ADDRESS, found from its `@`.

use super::{at, is, Det, Hit, DOMAIN, LOCAL};

/// Longest local part (RFC 5321).
pub(crate) const MAX_LOCAL: usize = 64;
/// Longest domain (RFC 1035).
const MAX_DOMAIN: usize = 253;

/// Where the local part before the `@` at `t` starts: the start of the run of
/// local-part characters, trimmed of leading `.`, `-`, `+`. `None` if there is
/// none, or the run is longer than [`MAX_LOCAL`], or it runs into `floor` (the
/// end of the previous finding), which would make it overlap.
pub(crate) fn local_start(b: &[u8], t: usize, floor: usize) -> Option<usize> {
    let limit = floor.max(t.saturating_sub(MAX_LOCAL));
    let mut j = t;
    while j > limit && b.get(j - 1).is_some_and(|&c| is(c, LOCAL)) {
        j -= 1;
    }
    if j == limit && j > 0 && b.get(j - 1).is_some_and(|&c| is(c, LOCAL)) {
        return None;
    }
    while j < t && matches!(b.get(j), Some(b'.' | b'-' | b'+')) {
        j += 1;
    }
    if j == t || b.get(t - 1) == Some(&b'.') {
        return None;
    }
    Some(j)
}

/// The address whose local part starts at `s` and whose `@` is at `t`.
pub(crate) fn domain(b: &[u8], s: usize, t: usize, fin: bool) -> Det {
    let d = t + 1;
    let mut i = d;
    while let Some(c) = at(b, i, fin)? {
        if !is(c, DOMAIN) || i - d > MAX_DOMAIN {
            break;
        }
        i += 1;
    }
    // Trailing dots and dashes are punctuation, not part of the name.
    while i > d && matches!(b.get(i - 1), Some(b'.' | b'-')) {
        i -= 1;
    }
    let name = b.get(d..i).unwrap_or(&[]);
    if name.is_empty() || name.len() > MAX_DOMAIN {
        return Ok(None);
    }
    let mut labels = 0;
    let mut last: &[u8] = &[];
    for label in name.split(|&c| c == b'.') {
        if label.is_empty() || label.first() == Some(&b'-') || label.last() == Some(&b'-') {
            return Ok(None);
        }
        labels += 1;
        last = label;
    }
    if labels < 2 || last.len() < 2 || !last.iter().all(u8::is_ascii_alphabetic) {
        return Ok(None);
    }
    Ok(Hit::closed(s, i))
}
