//! Detectors: one function per entity family, each matching forward from a
//! candidate start the scanner found. They read bytes through [`at`], which says
//! [`More`] when a decision needs bytes past the end of a non-final buffer; the
//! streaming redactor then holds the candidate back until it can decide.

pub(crate) mod email;
pub(crate) mod iban;
pub(crate) mod ip;
pub(crate) mod number;
pub(crate) mod phone;
pub(crate) mod secret;

/// The decision needs bytes that have not arrived yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct More;

/// A detector's verdict: a hit `[start, end)` (`start` may lie after the
/// candidate start, e.g. the token after `Bearer `), nothing, or [`More`].
pub(crate) type Det = Result<Option<Hit>, More>;

/// A detected span.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Hit {
    pub start: usize,
    pub end: usize,
    /// The value reached its length cap while the run went on: the scanner
    /// swallows the rest of the run (bytes of this class) into the same finding.
    pub open: Option<Class>,
}

impl Hit {
    pub fn closed(start: usize, end: usize) -> Option<Hit> {
        Some(Hit { start, end, open: None })
    }
}

/// The byte at `i`; `None` at the end of a final buffer; [`More`] at the end of
/// a non-final one.
#[inline]
pub(crate) fn at(b: &[u8], i: usize, fin: bool) -> Result<Option<u8>, More> {
    match b.get(i) {
        Some(&c) => Ok(Some(c)),
        None if fin => Ok(None),
        None => Err(More),
    }
}

/// Character classes used by detectors, as bits of [`CLASS`].
pub(crate) type Class = u16;
pub(crate) const DIGIT: Class = 1;
pub(crate) const UPPER: Class = 2;
pub(crate) const LOWER: Class = 4;
pub(crate) const HEX: Class = 8;
/// `[A-Za-z0-9._%+-]`: e-mail local part.
pub(crate) const LOCAL: Class = 16;
/// `[A-Za-z0-9-.]`: domain names.
pub(crate) const DOMAIN: Class = 32;
/// `[A-Za-z0-9_-]`: API key bodies, base64url.
pub(crate) const TOKEN: Class = 64;
/// base64url plus `.`: JWTs.
pub(crate) const JWT: Class = 128;
/// RFC 6750 b64token: `[A-Za-z0-9-._~+/]` and `=`.
pub(crate) const B64TOKEN: Class = 256;
/// Base64, whitespace and PEM header punctuation: private key bodies.
pub(crate) const PEMBODY: Class = 512;
/// `[A-Za-z0-9]`
pub(crate) const ALNUM: Class = DIGIT | UPPER | LOWER;
/// Alphanumerics and `_`: a byte that continues a word.
pub(crate) const WORD: Class = 1024;
/// `[A-Z0-9]`: AWS key ids.
pub(crate) const UPNUM: Class = 2048;
/// Base64 and line ends: the rest of a PEM body past its cap.
pub(crate) const PEMCONT: Class = 4096;

const fn build_classes() -> [Class; 256] {
    let mut t = [0 as Class; 256];
    let mut i = 0;
    while i < 256 {
        let c = i as u8;
        let mut k: Class = 0;
        if c.is_ascii_digit() {
            k |= DIGIT | HEX | UPNUM;
        }
        if c.is_ascii_uppercase() {
            k |= UPPER | UPNUM;
        }
        if c.is_ascii_lowercase() {
            k |= LOWER;
        }
        if matches!(c, b'a'..=b'f' | b'A'..=b'F') {
            k |= HEX;
        }
        let alnum = c.is_ascii_alphanumeric();
        if alnum || matches!(c, b'.' | b'_' | b'%' | b'+' | b'-') {
            k |= LOCAL;
        }
        if alnum || matches!(c, b'-' | b'.') {
            k |= DOMAIN;
        }
        if alnum || matches!(c, b'_' | b'-') {
            k |= TOKEN | JWT | B64TOKEN | WORD * (c != b'-') as Class;
        }
        if c == b'.' {
            k |= JWT | B64TOKEN;
        }
        if matches!(c, b'~' | b'+' | b'/' | b'=') {
            k |= B64TOKEN;
        }
        if alnum || matches!(c, b'+' | b'/' | b'=' | b'\n' | b'\r' | b' ' | b'\t' | b':' | b',' | b'-') {
            k |= PEMBODY;
        }
        if alnum || matches!(c, b'+' | b'/' | b'=' | b'\n' | b'\r' | b'-') {
            k |= PEMCONT;
        }
        t[i] = k;
        i += 1;
    }
    t
}

/// Class bits of every byte.
pub(crate) static CLASS: [Class; 256] = build_classes();

/// Whether byte `c` has any bit of `k`.
#[inline]
pub(crate) fn is(c: u8, k: Class) -> bool {
    CLASS[c as usize] & k != 0
}

/// Whether the byte before `s` (if any) is outside class `k`: `s` starts a run.
#[inline]
pub(crate) fn starts_run(b: &[u8], s: usize, k: Class) -> bool {
    match s.checked_sub(1).and_then(|i| b.get(i)) {
        Some(&c) => !is(c, k),
        None => true,
    }
}

/// Consumes bytes of class `k` from `i`, at most up to `cap` (absolute index).
/// Returns the run end and whether the cap cut it.
#[inline]
pub(crate) fn run(b: &[u8], mut i: usize, k: Class, cap: usize, fin: bool) -> Result<(usize, bool), More> {
    while i < cap {
        match at(b, i, fin)? {
            Some(c) if is(c, k) => i += 1,
            _ => return Ok((i, false)),
        }
    }
    // At the cap: capped only if the run really goes on.
    match at(b, i, fin)? {
        Some(c) if is(c, k) => Ok((i, true)),
        _ => Ok((i, false)),
    }
}

/// Whether `lit` is at `i` (More if the buffer ends inside a matching prefix).
#[inline]
pub(crate) fn lit(b: &[u8], i: usize, lit: &[u8], fin: bool) -> Result<bool, More> {
    for (k, &l) in lit.iter().enumerate() {
        match at(b, i + k, fin)? {
            Some(c) if c == l => {}
            _ => return Ok(false),
        }
    }
    Ok(true)
}

/// Whether a number ending at `e` really ends there: not followed by a word
/// character, `@`, or `.`/`-` plus a digit (decimals, longer dotted numbers).
pub(crate) fn number_ends(b: &[u8], e: usize, fin: bool) -> Result<bool, More> {
    match at(b, e, fin)? {
        None => Ok(true),
        Some(c) if is(c, WORD) || c == b'@' => Ok(false),
        Some(b'.') | Some(b'-') => Ok(!matches!(at(b, e + 1, fin)?, Some(d) if d.is_ascii_digit())),
        Some(_) => Ok(true),
    }
}

/// Whether a number may start at `s`: not inside a word, a dotted number or an
/// e-mail local part.
pub(crate) fn number_starts(b: &[u8], s: usize) -> bool {
    match s.checked_sub(1).and_then(|i| b.get(i)) {
        Some(&c) => !(is(c, WORD) || c == b'.' || c == b'@'),
        None => true,
    }
}
