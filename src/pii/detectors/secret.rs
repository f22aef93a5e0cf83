//! SECRET: AWS access key ids, private-key PEM blocks, JWTs, `Bearer` tokens and
//! well-known API key formats (OpenAI/Anthropic `sk-`, Stripe `sk_live_`,
//! GitHub `ghp_`/`github_pat_`, Slack `xox?-`).

use super::{at, is, lit, run, starts_run, Det, Hit, ALNUM, B64TOKEN, JWT, PEMBODY, PEMCONT, TOKEN, UPNUM};

/// Longest token value taken whole; longer runs are cut here and the rest of the
/// run is swallowed into the same finding (see `Hit::open`).
pub(crate) const TOKEN_CAP: usize = 4096;
/// Longest PEM block taken whole (a 4096-bit RSA key is about 3.3 KiB).
pub(crate) const PEM_CAP: usize = 8192;

/// A token body of class `k` from `i`, at least `min` bytes; the hit spans `[s, end)`.
fn token(b: &[u8], s: usize, i: usize, k: super::Class, min: usize, fin: bool) -> Det {
    let (e, capped) = run(b, i, k, s + TOKEN_CAP, fin)?;
    if e - i < min {
        return Ok(None);
    }
    Ok(Some(Hit { start: s, end: e, open: capped.then_some(k) }))
}

/// At a `-` at `t`: `-----BEGIN ... PRIVATE KEY-----`, `sk-...`, `xoxb-...`.
pub(crate) fn at_dash(b: &[u8], t: usize, floor: usize, fin: bool) -> Det {
    if b.get(t.wrapping_sub(1)) != Some(&b'-') && lit(b, t, b"-----BEGIN ", fin)? {
        return pem(b, t, fin);
    }
    if t >= 2 + floor && has(b, t - 2..t, b"sk") && starts_run(b, t - 2, TOKEN) {
        return token(b, t - 2, t + 1, TOKEN, 20, fin);
    }
    if t >= 4 + floor
        && has(b, t - 4..t - 1, b"xox")
        && matches!(b.get(t - 1), Some(b'a' | b'b' | b'p' | b'r' | b's'))
        && starts_run(b, t - 4, TOKEN)
    {
        return token(b, t - 4, t + 1, TOKEN, 10, fin);
    }
    Ok(None)
}

/// At a `_` at `t`: `ghp_` (and `gho_ ghu_ ghs_ ghr_`), `github_pat_`, `sk_live_`/`rk_test_`...
pub(crate) fn at_underscore(b: &[u8], t: usize, floor: usize, fin: bool) -> Det {
    if t >= 3 + floor
        && has(b, t - 3..t - 1, b"gh")
        && matches!(b.get(t - 1), Some(b'p' | b'o' | b'u' | b's' | b'r'))
        && starts_run(b, t - 3, TOKEN)
    {
        return token(b, t - 3, t + 1, ALNUM, 30, fin);
    }
    if t >= 6 + floor && has(b, t - 6..t, b"github") && starts_run(b, t - 6, TOKEN) && lit(b, t, b"_pat_", fin)? {
        return token(b, t - 6, t + 5, TOKEN, 22, fin);
    }
    if t >= 2 + floor
        && (has(b, t - 2..t, b"sk") || has(b, t - 2..t, b"rk"))
        && starts_run(b, t - 2, TOKEN)
        && (lit(b, t, b"_live_", fin)? || lit(b, t, b"_test_", fin)?)
    {
        return token(b, t - 2, t + 6, ALNUM, 16, fin);
    }
    Ok(None)
}

/// At an upper-case letter `s` that starts a word: AWS key ids and `Bearer` tokens.
pub(crate) fn at_upper(b: &[u8], s: usize, fin: bool) -> Det {
    match b.get(s) {
        Some(b'A') => {
            for p in [&b"AKIA"[..], b"ASIA", b"AGPA", b"AIDA", b"AROA", b"ANPA"] {
                if lit(b, s, p, fin)? {
                    let (e, _) = run(b, s + 4, UPNUM, s + 21, fin)?;
                    let ends = !matches!(at(b, e, fin)?, Some(c) if is(c, ALNUM));
                    return Ok(if e == s + 20 && ends { Hit::closed(s, e) } else { None });
                }
            }
            Ok(None)
        }
        Some(b'B') => {
            if !(lit(b, s, b"Bearer ", fin)? || lit(b, s, b"BEARER ", fin)?) {
                return Ok(None);
            }
            let mut i = s + 7;
            while at(b, i, fin)? == Some(b' ') && i < s + 12 {
                i += 1;
            }
            token(b, i, i, B64TOKEN, 16, fin).map(|h| h.map(|h| Hit { start: i, ..h }))
        }
        _ => Ok(None),
    }
}

/// A JWT whose `eyJ` starts at `s`: three base64url segments, the first two at
/// least 10 bytes and starting `eyJ` (a JSON object), the signature possibly empty.
pub(crate) fn jwt(b: &[u8], s: usize, fin: bool) -> Det {
    let (e1, _) = run(b, s, TOKEN, s + TOKEN_CAP, fin)?;
    if e1 - s < 10 || at(b, e1, fin)? != Some(b'.') {
        return Ok(None);
    }
    if !lit(b, e1 + 1, b"eyJ", fin)? {
        return Ok(None);
    }
    let (e2, _) = run(b, e1 + 1, TOKEN, s + TOKEN_CAP, fin)?;
    if e2 - e1 - 1 < 10 || at(b, e2, fin)? != Some(b'.') {
        return Ok(None);
    }
    let (e3, capped) = run(b, e2 + 1, TOKEN, s + TOKEN_CAP, fin)?;
    Ok(Some(Hit { start: s, end: e3, open: capped.then_some(JWT) }))
}

/// A PEM private key block at `s` (`-----BEGIN `): the header must name a
/// PRIVATE KEY; the block runs to the end of its `-----END ...-----` line, or
/// to the first byte that cannot be in a PEM body.
fn pem(b: &[u8], s: usize, fin: bool) -> Det {
    let label = s + 11;
    let mut i = label;
    while let Some(c) = at(b, i, fin)? {
        if !(c.is_ascii_uppercase() || c == b' ') || i - label > 40 {
            break;
        }
        i += 1;
    }
    if !(b.get(label..i).is_some_and(|l| l.ends_with(b"PRIVATE KEY")) && lit(b, i, b"-----", fin)?) {
        return Ok(None);
    }
    i += 5;
    let cap = s + PEM_CAP;
    while i < cap {
        match at(b, i, fin)? {
            Some(b'-') if lit(b, i, b"-----END ", fin)? => {
                let mut j = i + 9;
                while let Some(c) = at(b, j, fin)? {
                    if !(c.is_ascii_uppercase() || c == b' ') || j - i > 60 {
                        break;
                    }
                    j += 1;
                }
                if lit(b, j, b"-----", fin)? {
                    return Ok(Hit::closed(s, j + 5));
                }
                return Ok(Hit::closed(s, i));
            }
            Some(c) if is(c, PEMBODY) => i += 1,
            _ => return Ok(Hit::closed(s, trim_ws(b, s, i))),
        }
    }
    // Cut at the cap: swallow the rest of the base64 lines with it.
    Ok(Some(Hit { start: s, end: cap, open: Some(PEMCONT) }))
}

/// Trailing whitespace after a truncated body stays outside the finding.
fn trim_ws(b: &[u8], s: usize, mut e: usize) -> usize {
    while e > s && matches!(b.get(e - 1), Some(b' ' | b'\n' | b'\r' | b'\t')) {
        e -= 1;
    }
    e
}

fn has(b: &[u8], r: std::ops::Range<usize>, lit: &[u8]) -> bool {
    b.get(r) == Some(lit)
}
