//! US_SSN and CREDIT_CARD: digit groups, then the validators.

use super::{at, number_ends, Det, Hit, More};
use crate::pii::validators;

/// `ddd-dd-dddd` or `ddd dd dddd` at `s`, with the SSA validity rules. Bare nine
/// digit runs are not taken: order and account numbers look the same.
pub(crate) fn ssn(b: &[u8], s: usize, fin: bool) -> Det {
    let mut d = [0u8; 9];
    let mut n = 0;
    let mut i = s;
    let mut sep = 0u8;
    for (g, len) in [3usize, 2, 4].into_iter().enumerate() {
        if g > 0 {
            match at(b, i, fin)? {
                Some(c @ (b'-' | b' ')) if g == 1 || c == sep => sep = c,
                _ => return Ok(None),
            }
            i += 1;
        }
        for _ in 0..len {
            match at(b, i, fin)? {
                Some(c) if c.is_ascii_digit() => {
                    if let Some(slot) = d.get_mut(n) {
                        *slot = c;
                    }
                    n += 1;
                    i += 1;
                }
                _ => return Ok(None),
            }
        }
    }
    if validators::ssn(&d) && number_ends(b, i, fin)? {
        Ok(Hit::closed(s, i))
    } else {
        Ok(None)
    }
}

/// 13-19 digits at `s`, optionally in groups separated by one space or dash
/// (the same throughout), Luhn-valid and in a known issuer range.
pub(crate) fn card(b: &[u8], s: usize, fin: bool) -> Det {
    let mut d = [0u8; 19];
    let mut n = 0usize;
    let mut i = s;
    let mut sep = 0u8;
    let mut group = 0usize;
    // Group ends (position, digit count), to retry shorter when a run goes on,
    // as in "4111 1111 1111 1111 2025".
    let mut ends = [(0usize, 0usize); 8];
    let mut n_ends = 0usize;
    loop {
        match at(b, i, fin)? {
            Some(c) if c.is_ascii_digit() => {
                if n == 19 {
                    if sep == 0 {
                        return Ok(None);
                    }
                    break;
                }
                if let Some(slot) = d.get_mut(n) {
                    *slot = c;
                }
                n += 1;
                group += 1;
                i += 1;
            }
            Some(c @ (b' ' | b'-')) if (sep == 0 || sep == c) && group >= 3 => {
                if !matches!(at(b, i + 1, fin)?, Some(x) if x.is_ascii_digit()) {
                    break;
                }
                if n_ends == ends.len() {
                    break;
                }
                if let Some(slot) = ends.get_mut(n_ends) {
                    *slot = (i, n);
                }
                n_ends += 1;
                sep = c;
                group = 0;
                i += 1;
            }
            _ => break,
        }
    }
    if n <= 19 && group > 0 {
        if let Some(hit) = card_at(b, s, i, d.get(..n).unwrap_or(&[]), fin)? {
            return Ok(Some(hit));
        }
    }
    if sep == b' ' {
        for &(e, k) in ends.iter().take(n_ends).rev() {
            if let Some(hit) = card_at(b, s, e, d.get(..k).unwrap_or(&[]), fin)? {
                return Ok(Some(hit));
            }
        }
    }
    Ok(None)
}

fn card_at(b: &[u8], s: usize, e: usize, digits: &[u8], fin: bool) -> Result<Option<Hit>, More> {
    if validators::credit_card(digits) && number_ends(b, e, fin)? {
        Ok(Hit::closed(s, e))
    } else {
        Ok(None)
    }
}
