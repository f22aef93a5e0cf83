//! The single-pass scanner: a 256-entry table of the bytes that can start (or
//! anchor) a finding, a fast skip over everything else, and the detectors run
//! only at those anchors.
//!
//! Semantics, which the streaming redactor relies on: a finding is a pure
//! function of the bytes around it. Each candidate has a start decided by
//! local bytes (the anchor, or a short look-back from it: at most
//! [`LOOKBACK`] bytes, for the `@` of an e-mail or the `-` of `sk-`), findings
//! never overlap and are taken left to right. So scanning may resume at any
//! point that is not inside a finding, as long as [`CONTEXT`] bytes before it
//! are still visible, and give the same result as one pass over the whole text.

use super::detectors::{self, email, ip, iban, number, phone, secret, More, CLASS, HEX, JWT, TOKEN, WORD};
use super::entity::{Entity, EntitySet};

/// The longest look-back from an anchor to a candidate start (an e-mail local
/// part of 64 bytes plus the byte before it).
pub const LOOKBACK: usize = email::MAX_LOCAL + 1;
/// Bytes at the end of a non-final buffer that are always held back, because a
/// later anchor (an `@`, a `-`) could still pull them into a finding.
pub const TAIL: usize = LOOKBACK + 7;
/// Bytes of already released input kept visible before the resume point.
pub const CONTEXT: usize = TAIL + 8;
/// The most a streaming redactor holds back of plain text: a pending PEM block
/// (8 KiB cap plus its END line).
pub const MAX_HOLDBACK: usize = secret::PEM_CAP + 128;

/// One finding, in buffer coordinates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Match {
    /// First byte of the finding.
    pub start: usize,
    /// One past the last byte replaced.
    pub end: usize,
    /// One past the last byte of the value the operator sees (before `end` when
    /// an over-long token is cut at its cap and the rest is swallowed).
    pub value_end: usize,
    /// What was found.
    pub entity: Entity,
    /// The rest of a capped token continued from an earlier buffer: removed,
    /// not rendered or counted again.
    pub continuation: bool,
}

/// What a scan carries from one buffer to the next.
#[derive(Debug, Clone, Copy, Default)]
pub struct ScanState {
    /// End of the last finding; nothing may start before it.
    pub last_end: usize,
    /// An over-long token is still running: bytes of this class belong to it.
    pub swallow: Option<(detectors::Class, Entity)>,
}

impl ScanState {
    /// Shifts positions after `n` bytes were dropped from the buffer front.
    pub fn shift(&mut self, n: usize) {
        self.last_end = self.last_end.saturating_sub(n);
    }
}

const fn build_anchors() -> [bool; 256] {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        let c = i as u8;
        t[i] = c.is_ascii_digit()
            || c.is_ascii_uppercase()
            || matches!(c, b'@' | b':' | b'+' | b'(' | b'-' | b'_');
        i += 1;
    }
    t
}

/// Bytes at which a detector may have to look.
static ANCHOR: [bool; 256] = build_anchors();

/// Every anchor byte lies in `ANCHOR_RANGE` (a unit test holds the table to it).
const ANCHOR_RANGE: (u8, u8) = (0x28, 0x5F);

/// The first anchor at or after `p`. Eight bytes at a time: one SWAR range test
/// passes over whole words of lower-case prose and spaces, which hold no byte
/// of `ANCHOR_RANGE`; a word that does is checked byte by byte from the first
/// such byte (often a `,` or `.`, which the table then rejects). About three
/// times fewer instructions than a byte loop on chat text, natively and in wasm
/// (64-bit integer ops are native there; no SIMD needed).
#[inline]
fn next_anchor(b: &[u8], mut p: usize) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = ONES * 0x80;
    const LOW7: u64 = ONES * 0x7F;
    const AT_LEAST_LO: u64 = ONES * (0x80 - ANCHOR_RANGE.0 as u64);
    const ABOVE_HI: u64 = ONES * (0x7F - ANCHOR_RANGE.1 as u64);
    while let Some(word) = b.get(p..p + 8).and_then(|w| <[u8; 8]>::try_from(w).ok()) {
        let x = u64::from_le_bytes(word);
        // Per byte, no carries between bytes (each low-7-bit value plus at most
        // 0x58 stays below 0x100): high bit set iff the byte is ASCII and in range.
        let low7 = x & LOW7;
        let hits = low7.wrapping_add(AT_LEAST_LO) & !low7.wrapping_add(ABOVE_HI) & !x & HIGH;
        if hits == 0 {
            p += 8;
            continue;
        }
        let at = p + (hits.trailing_zeros() / 8) as usize;
        if b.get(at).is_some_and(|&c| ANCHOR[c as usize]) {
            return Some(at);
        }
        p = at + 1;
    }
    b.get(p..)?.iter().position(|&c| ANCHOR[c as usize]).map(|off| p + off)
}

/// A candidate's outcome: found (with the candidate start), nothing, or more
/// bytes needed to decide the candidate starting at the given position.
enum Outcome {
    Found(usize, Entity, detectors::Hit),
    Nothing,
    Pending(usize),
}

/// Scans `b[from..]`, calling `emit` for each finding in order, and returns the
/// safe point: every byte before it is decided (it is the buffer length when
/// `fin`). Bytes from the safe point on must be presented again, with more
/// input after them, to the next call.
pub fn scan(b: &[u8], from: usize, fin: bool, set: EntitySet, st: &mut ScanState, mut emit: impl FnMut(Match)) -> usize {
    let len = b.len();
    let tail_limit = if fin { len } else { len.saturating_sub(TAIL) };
    let mut p = from.max(st.last_end);
    if let Some((k, entity)) = st.swallow {
        let q = p + b.get(p..).unwrap_or(&[]).iter().take_while(|&&c| CLASS[c as usize] & k != 0).count();
        if q > p {
            emit(Match { start: p, end: q, value_end: q, entity, continuation: true });
        }
        st.last_end = q;
        p = q;
        if q == len && !fin {
            return len;
        }
        st.swallow = None;
    }
    while let Some(at) = next_anchor(b, p) {
        p = at;
        match candidate(b, p, fin, set, st.last_end) {
            Outcome::Nothing => p += 1,
            Outcome::Pending(c) => return c.min(tail_limit).max(st.last_end),
            Outcome::Found(c, entity, hit) => {
                if c >= tail_limit {
                    return tail_limit.max(st.last_end);
                }
                let mut end = hit.end;
                if let Some(k) = hit.open {
                    end += b.get(end..).unwrap_or(&[]).iter().take_while(|&&c| CLASS[c as usize] & k != 0).count();
                    if end == len && !fin {
                        st.swallow = Some((k, entity));
                    }
                }
                emit(Match { start: hit.start, end, value_end: hit.end, entity, continuation: false });
                st.last_end = end;
                p = end.max(p + 1);
                if st.swallow.is_some() {
                    return len;
                }
            }
        }
    }
    tail_limit.max(st.last_end)
}

/// Runs the detectors that apply at anchor `p`.
#[inline]
fn candidate(b: &[u8], p: usize, fin: bool, set: EntitySet, floor: usize) -> Outcome {
    let Some(&c) = b.get(p) else { return Outcome::Nothing };
    let r = match c {
        b'0'..=b'9' => digit(b, p, fin, set),
        b'@' => {
            if !set.contains(Entity::EmailAddress) {
                return Outcome::Nothing;
            }
            let Some(s) = email::local_start(b, p, floor) else { return Outcome::Nothing };
            return wrap(s, Entity::EmailAddress, email::domain(b, s, p, fin));
        }
        b':' => {
            if !set.contains(Entity::IpAddress) {
                return Outcome::Nothing;
            }
            let mut s = p;
            while s > floor && s + 4 > p && b.get(s - 1).is_some_and(|&c| CLASS[c as usize] & HEX != 0) {
                s -= 1;
            }
            let letter_start = s < p && b.get(s).is_some_and(|c| c.is_ascii_alphabetic());
            let double_start = s == p && b.get(p + 1) == Some(&b':');
            let bounded = detectors::starts_run(b, s, WORD) && (s == 0 || b.get(s - 1) != Some(&b':'));
            if !((letter_start || double_start || (s == p && b.get(p + 1).is_none() && !fin)) && bounded) {
                return Outcome::Nothing;
            }
            return wrap(s, Entity::IpAddress, ip::v6(b, s, fin));
        }
        b'+' => {
            if !set.contains(Entity::PhoneNumber) || !detectors::starts_run(b, p, WORD) {
                return Outcome::Nothing;
            }
            Some((p, Entity::PhoneNumber, phone::at_plus(b, p, fin)))
        }
        b'(' => {
            if !set.contains(Entity::PhoneNumber) || !detectors::starts_run(b, p, WORD) {
                return Outcome::Nothing;
            }
            Some((p, Entity::PhoneNumber, phone::at_paren(b, p, fin)))
        }
        b'-' => {
            if !set.contains(Entity::Secret) {
                return Outcome::Nothing;
            }
            Some((p.saturating_sub(4).max(floor), Entity::Secret, secret::at_dash(b, p, floor, fin)))
        }
        b'_' => {
            if !set.contains(Entity::Secret) {
                return Outcome::Nothing;
            }
            Some((p.saturating_sub(6).max(floor), Entity::Secret, secret::at_underscore(b, p, floor, fin)))
        }
        _ => upper(b, p, c, fin, set, floor),
    };
    match r {
        None => Outcome::Nothing,
        Some((start, entity, det)) => wrap(start, entity, det),
    }
}

/// Turns a detector verdict into an [`Outcome`] for candidate start `s`.
#[inline]
fn wrap(s: usize, entity: Entity, det: Result<Option<detectors::Hit>, More>) -> Outcome {
    match det {
        Ok(Some(hit)) => Outcome::Found(s.min(hit.start), entity, hit),
        Ok(None) => Outcome::Nothing,
        Err(More) => Outcome::Pending(s),
    }
}

type Tried = Option<(usize, Entity, Result<Option<detectors::Hit>, More>)>;

/// Numbers: SSN, card, phone, IPv4, IPv6 (in that order; their shapes differ).
fn digit(b: &[u8], p: usize, fin: bool, set: EntitySet) -> Tried {
    if !detectors::number_starts(b, p) {
        return None;
    }
    let tries: [(Entity, fn(&[u8], usize, bool) -> detectors::Det); 5] = [
        (Entity::UsSsn, number::ssn),
        (Entity::CreditCard, number::card),
        (Entity::PhoneNumber, phone::at_digit),
        (Entity::IpAddress, ip::v4),
        (Entity::IpAddress, ip::v6),
    ];
    for (entity, f) in tries {
        if !set.contains(entity) {
            continue;
        }
        match f(b, p, fin) {
            Ok(None) => {}
            other => return Some((p, entity, other)),
        }
    }
    None
}

/// Upper-case anchors: the `J` of a JWT's `eyJ`, IBANs, AWS key ids, `Bearer`.
fn upper(b: &[u8], p: usize, c: u8, fin: bool, set: EntitySet, floor: usize) -> Tried {
    if c == b'J'
        && set.contains(Entity::Secret)
        && p >= 2 + floor
        && b.get(p - 2..p) == Some(&b"ey"[..])
        && detectors::starts_run(b, p - 2, JWT)
    {
        match secret::jwt(b, p - 2, fin) {
            Ok(None) => {}
            other => return Some((p - 2, Entity::Secret, other)),
        }
    }
    if !detectors::starts_run(b, p, TOKEN) {
        return None;
    }
    if set.contains(Entity::IbanCode) {
        match iban::iban(b, p, fin) {
            Ok(None) => {}
            other => return Some((p, Entity::IbanCode, other)),
        }
    }
    if set.contains(Entity::Secret) && matches!(c, b'A' | b'B') {
        return Some((p, Entity::Secret, secret::at_upper(b, p, fin)));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_anchor_lies_in_the_swar_range() {
        for c in 0..=255u8 {
            if ANCHOR[c as usize] {
                assert!((ANCHOR_RANGE.0..=ANCHOR_RANGE.1).contains(&c), "anchor {c:#x} outside the range");
            }
        }
    }

    #[test]
    fn next_anchor_agrees_with_a_byte_loop() {
        let mut text: Vec<u8> = b"plain words, and more. Then 42 (x) a-b c_d e@f g:h +1 \xff\x80 caf\xc3\xa9 end".to_vec();
        text.extend((0..=255u8).rev());
        text.extend(b"tail without anchors at all");
        for from in 0..=text.len() {
            let expect = text[from..].iter().position(|&c| ANCHOR[c as usize]).map(|o| from + o);
            assert_eq!(next_anchor(&text, from), expect, "from {from}");
        }
    }
}
