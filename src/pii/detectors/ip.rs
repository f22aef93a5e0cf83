//! IP_ADDRESS: dotted-quad IPv4 and RFC 4291 text IPv6.

use super::{at, is, number_ends, Det, Hit, More, HEX, WORD};

/// A dotted quad at `s`; returns its end. Octets 0-255 without leading zeros.
fn quad(b: &[u8], s: usize, fin: bool) -> Result<Option<usize>, More> {
    let mut i = s;
    for part in 0..4 {
        if part > 0 {
            if at(b, i, fin)? != Some(b'.') {
                return Ok(None);
            }
            i += 1;
        }
        let mut v = 0u32;
        let mut k = 0;
        while let Some(c) = at(b, i, fin)? {
            if !c.is_ascii_digit() || k == 3 {
                break;
            }
            if k == 1 && v == 0 {
                return Ok(None);
            }
            v = v * 10 + u32::from(c - b'0');
            i += 1;
            k += 1;
        }
        if k == 0 || v > 255 {
            return Ok(None);
        }
    }
    Ok(Some(i))
}

/// IPv4 at digit `s`.
pub(crate) fn v4(b: &[u8], s: usize, fin: bool) -> Det {
    match quad(b, s, fin)? {
        Some(e) if number_ends(b, e, fin)? => Ok(Hit::closed(s, e)),
        _ => Ok(None),
    }
}

/// IPv6 at `s` (a hex digit or `::` at the start of a word). At least one decimal
/// digit is required so that words like `add::bee` or `a::b` stay.
pub(crate) fn v6(b: &[u8], s: usize, fin: bool) -> Det {
    let mut i = s;
    let mut groups = 0usize;
    let mut compressed = false;
    let mut has_digit = false;
    if at(b, i, fin)? == Some(b':') {
        if at(b, i + 1, fin)? != Some(b':') {
            return Ok(None);
        }
        compressed = true;
        i += 2;
    }
    loop {
        let g = i;
        while let Some(c) = at(b, i, fin)? {
            if !is(c, HEX) || i - g == 5 {
                break;
            }
            has_digit |= c.is_ascii_digit();
            i += 1;
        }
        let len = i - g;
        if len == 0 {
            break;
        }
        if len > 4 {
            return Ok(None);
        }
        if at(b, i, fin)? == Some(b'.') && groups <= 6 && (compressed || groups == 6) {
            // Embedded IPv4 tail, e.g. ::ffff:192.0.2.1; otherwise the dot is punctuation.
            if let Some(e) = quad(b, g, fin)? {
                return Ok(if number_ends(b, e, fin)? { Hit::closed(s, e) } else { None });
            }
        }
        groups += 1;
        if groups > 8 {
            return Ok(None);
        }
        if at(b, i, fin)? != Some(b':') {
            break;
        }
        match at(b, i + 1, fin)? {
            Some(b':') => {
                if compressed {
                    return Ok(None);
                }
                compressed = true;
                i += 2;
            }
            Some(c) if is(c, HEX) => i += 1,
            _ => break,
        }
    }
    let shape_ok = if compressed { groups <= 7 && groups >= 1 } else { groups == 8 };
    let ends = match at(b, i, fin)? {
        None => true,
        Some(c) => !(is(c, WORD) || c == b':' || c == b'@'),
    };
    if shape_ok && has_digit && ends {
        Ok(Hit::closed(s, i))
    } else {
        Ok(None)
    }
}
