//! IBAN_CODE: country code, check digits, BBAN of the country's length, mod-97.

use super::{at, is, Det, Hit, ALNUM, UPPER};
use crate::pii::validators;

/// Longest IBAN (Saint Lucia, 32) rounded up.
const MAX_IBAN: usize = 34;

/// An IBAN at `s` (an upper-case letter at a word start), unbroken or in groups of
/// four separated by single spaces.
pub(crate) fn iban(b: &[u8], s: usize, fin: bool) -> Det {
    let (Some(c0), Some(c1)) = (at(b, s, fin)?, at(b, s + 1, fin)?) else { return Ok(None) };
    if !is(c1, UPPER) {
        return Ok(None);
    }
    let (Some(d0), Some(d1)) = (at(b, s + 2, fin)?, at(b, s + 3, fin)?) else { return Ok(None) };
    if !(d0.is_ascii_digit() && d1.is_ascii_digit()) {
        return Ok(None);
    }
    let Some(len) = validators::iban_length([c0, c1]) else { return Ok(None) };
    let mut v = [0u8; MAX_IBAN];
    let mut n = 0usize;
    let mut i = s;
    let mut grouped = None;
    while n < len {
        match at(b, i, fin)? {
            Some(c) if c.is_ascii_digit() || c.is_ascii_uppercase() => {
                if let Some(slot) = v.get_mut(n) {
                    *slot = c;
                }
                n += 1;
                i += 1;
            }
            Some(b' ') if n % 4 == 0 && grouped != Some(false) => {
                grouped = Some(true);
                i += 1;
            }
            _ => return Ok(None),
        }
        if n == 4 && grouped.is_none() {
            // Decide the spelling after the first group: spaces then, or never.
            grouped = Some(matches!(at(b, i, fin)?, Some(b' ')));
        }
    }
    if matches!(at(b, i, fin)?, Some(c) if is(c, ALNUM)) {
        return Ok(None);
    }
    if validators::iban_mod97(v.get(..n).unwrap_or(&[])) {
        Ok(Hit::closed(s, i))
    } else {
        Ok(None)
    }
}
