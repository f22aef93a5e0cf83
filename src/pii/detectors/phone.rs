//! PHONE_NUMBER: North American spellings and E.164-style international numbers.

use super::{at, number_ends, Det, Hit, More};

/// Reads exactly `n` digits at `i`; returns the index after them.
fn digits(b: &[u8], i: usize, n: usize, fin: bool) -> Result<Option<usize>, More> {
    for k in 0..n {
        match at(b, i + k, fin)? {
            Some(c) if c.is_ascii_digit() => {}
            _ => return Ok(None),
        }
    }
    Ok(Some(i + n))
}

/// A North American number body at `i`: `(555) 123-4567`, `(555)123-4567`,
/// `555-123-4567`, `555.123.4567`, `555 123 4567`. With `bare_ok`, also ten
/// unbroken digits (only after a `+1` prefix). Returns the end.
fn nanp_body(b: &[u8], i: usize, bare_ok: bool, fin: bool) -> Result<Option<usize>, More> {
    let (area_first, mut i, parens) = match at(b, i, fin)? {
        Some(b'(') => (at(b, i + 1, fin)?, i + 1, true),
        c => (c, i, false),
    };
    if !matches!(area_first, Some(b'2'..=b'9')) {
        return Ok(None);
    }
    let Some(e) = digits(b, i, 3, fin)? else { return Ok(None) };
    i = e;
    let sep1 = if parens {
        if at(b, i, fin)? != Some(b')') {
            return Ok(None);
        }
        i += 1;
        match at(b, i, fin)? {
            Some(b' ') => {
                i += 1;
                None
            }
            _ => None,
        }
    } else {
        match at(b, i, fin)? {
            Some(c @ (b'-' | b'.' | b' ')) => {
                i += 1;
                Some(c)
            }
            _ if bare_ok => None,
            _ => return Ok(None),
        }
    };
    let Some(e) = digits(b, i, 3, fin)? else { return Ok(None) };
    i = e;
    match (at(b, i, fin)?, sep1) {
        (Some(c), Some(s)) if c == s => i += 1,
        (Some(c @ (b'-' | b'.' | b' ')), None) if parens => {
            let _ = c;
            i += 1;
        }
        (_, None) if parens || bare_ok => {}
        _ => return Ok(None),
    }
    let Some(e) = digits(b, i, 4, fin)? else { return Ok(None) };
    Ok(if number_ends(b, e, fin)? { Some(e) } else { None })
}

/// A phone number starting at digit `s`: a NANP body, optionally after `1-`/`1 `/`1.`.
pub(crate) fn at_digit(b: &[u8], s: usize, fin: bool) -> Det {
    if at(b, s, fin)? == Some(b'1') {
        if let Some(b'-' | b' ' | b'.') = at(b, s + 1, fin)? {
            if let Some(e) = nanp_body(b, s + 2, false, fin)? {
                return Ok(Hit::closed(s, e));
            }
        }
    }
    Ok(nanp_body(b, s, false, fin)?.and_then(|e| Hit::closed(s, e)))
}

/// A phone number starting at `(` at `s`.
pub(crate) fn at_paren(b: &[u8], s: usize, fin: bool) -> Det {
    Ok(nanp_body(b, s, false, fin)?.and_then(|e| Hit::closed(s, e)))
}

/// A phone number starting at `+` at `s`: `+1` plus a NANP body, or an
/// international number: country code, then digit groups separated by single
/// spaces or dashes (one group may be in parentheses), 8 to 15 digits in all.
pub(crate) fn at_plus(b: &[u8], s: usize, fin: bool) -> Det {
    if at(b, s + 1, fin)? == Some(b'1') {
        let mut i = s + 2;
        if let Some(b'-' | b' ' | b'.') = at(b, i, fin)? {
            i += 1;
        }
        if let Some(e) = nanp_body(b, i, true, fin)? {
            return Ok(Hit::closed(s, e));
        }
    }
    if !matches!(at(b, s + 1, fin)?, Some(b'1'..=b'9')) {
        return Ok(None);
    }
    let mut i = s + 1;
    let mut n = 0usize;
    let mut end = 0usize;
    let mut n_at_end = 0usize;
    let mut paren_used = false;
    loop {
        match at(b, i, fin)? {
            Some(c) if c.is_ascii_digit() => {
                n += 1;
                i += 1;
                if n > 15 {
                    return Ok(None);
                }
                end = i;
                n_at_end = n;
            }
            Some(b' ' | b'-') if i == end => {
                match at(b, i + 1, fin)? {
                    Some(c) if c.is_ascii_digit() => i += 1,
                    Some(b'(') if !paren_used => i += 1,
                    _ => break,
                }
            }
            Some(b'(') if !paren_used && (i == end || matches!(b.get(i.wrapping_sub(1)), Some(b' ' | b'-'))) => {
                paren_used = true;
                let mut j = i + 1;
                let mut k = 0;
                while let Some(c) = at(b, j, fin)? {
                    if !c.is_ascii_digit() || k == 4 {
                        break;
                    }
                    j += 1;
                    k += 1;
                }
                if k == 0 || at(b, j, fin)? != Some(b')') {
                    break;
                }
                n += k;
                i = j + 1;
                end = i;
                n_at_end = n;
                if let Some(b' ' | b'-') = at(b, i, fin)? {
                    if matches!(at(b, i + 1, fin)?, Some(c) if c.is_ascii_digit()) {
                        i += 1;
                    }
                }
            }
            _ => break,
        }
    }
    if (8..=15).contains(&n_at_end) && number_ends(b, end, fin)? {
        Ok(Hit::closed(s, end))
    } else {
        Ok(None)
    }
}
