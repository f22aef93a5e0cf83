//! JSON bodies: only string values are scanned. Escapes are decoded first (so a
//! value spelled with `\u0040` or split by `\n` is still found) and a string
//! with findings is re-escaped, so the output stays valid JSON. Strings without
//! findings, keys, numbers and structure are copied byte for byte.
//!
//! A body that turns out not to be JSON (a byte outside strings that JSON does
//! not allow there) is redacted as plain text from that byte on: never passed
//! on unscanned.

use super::entity::Findings;
use super::stream::{redact_piece, redact_text, TextStream, SEGMENT_CAP};
use super::scanner::ScanState;
use super::Compiled;

/// Containers deeper than this are tracked as arrays (strings still scanned).
const MAX_DEPTH: usize = 512;

/// Streaming JSON state.
#[derive(Debug, Default)]
pub(crate) struct JsonStream {
    stack: Vec<u8>,
    expect_key: bool,
    /// Inside a string: is it a key, and is the previous byte an open backslash.
    in_str: Option<(bool, bool)>,
    /// Raw bytes of the current string value not yet processed.
    seg: Vec<u8>,
    /// Not JSON after all: plain text from here on.
    text: Option<TextStream>,
    dec: Vec<u8>,
    red: Vec<u8>,
}

impl JsonStream {
    pub(crate) fn held_back(&self) -> usize {
        self.seg.len() + self.text.as_ref().map_or(0, TextStream::held_back)
    }

    pub(crate) fn push(&mut self, eng: &Compiled, chunk: &[u8], fin: bool, out: &mut Vec<u8>, f: &mut Findings) {
        let mut i = 0;
        while i < chunk.len() {
            if let Some(t) = &mut self.text {
                t.push(eng, chunk.get(i..).unwrap_or(&[]), fin, out, f);
                return;
            }
            if let Some((key, esc)) = self.in_str {
                // Find the closing quote, honouring backslashes.
                let rest = chunk.get(i..).unwrap_or(&[]);
                let mut j = 0;
                let mut open_esc = false;
                if esc {
                    j = 1;
                }
                let mut close = None;
                while let Some(off) = rest.get(j..).and_then(|r| memchr::memchr2(b'"', b'\\', r)) {
                    j += off;
                    if rest.get(j) == Some(&b'\\') {
                        if j + 1 >= rest.len() {
                            open_esc = true;
                            break;
                        }
                        j += 2;
                        continue;
                    }
                    close = Some(j);
                    break;
                }
                let body_end = close.unwrap_or(rest.len());
                let body = rest.get(..body_end).unwrap_or(&[]);
                if key {
                    out.extend_from_slice(body);
                } else if close.is_some() && self.seg.is_empty() {
                    self.value_pieces(eng, body, true, out, f);
                } else {
                    self.seg.extend_from_slice(body);
                    let seg = std::mem::take(&mut self.seg);
                    let used = self.value_pieces(eng, &seg, close.is_some(), out, f);
                    self.seg = seg;
                    self.seg.drain(..used.min(self.seg.len()));
                }
                match close {
                    Some(c) => {
                        out.push(b'"');
                        self.in_str = None;
                        i += c + 1;
                    }
                    None => {
                        // A backslash ending the chunk stays open.
                        self.in_str = Some((key, open_esc));
                        i = chunk.len();
                    }
                }
                continue;
            }
            let Some(&c) = chunk.get(i) else { break };
            match c {
                b'"' => {
                    let key = self.expect_key && self.stack.last() == Some(&b'{');
                    self.in_str = Some((key, false));
                    out.push(c);
                }
                b'{' | b'[' => {
                    if self.stack.len() < MAX_DEPTH {
                        self.stack.push(c);
                    }
                    self.expect_key = c == b'{';
                    out.push(c);
                }
                b'}' | b']' => {
                    self.stack.pop();
                    self.expect_key = false;
                    out.push(c);
                }
                b',' => {
                    self.expect_key = self.stack.last() == Some(&b'{');
                    out.push(c);
                }
                b':' => {
                    self.expect_key = false;
                    out.push(c);
                }
                b' ' | b'\n' | b'\r' | b'\t' | b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E' | b't' | b'r' | b'u'
                | b'f' | b'a' | b'l' | b's' | b'n' => out.push(c),
                _ => {
                    let mut t = TextStream::default();
                    t.push(eng, chunk.get(i..).unwrap_or(&[]), fin, out, f);
                    self.text = Some(t);
                    return;
                }
            }
            i += 1;
        }
        if fin {
            if let Some(t) = &mut self.text {
                t.push(eng, &[], true, out, f);
            } else if !self.seg.is_empty() {
                // Unterminated string at the end: still scanned.
                let seg = std::mem::take(&mut self.seg);
                self.value_pieces(eng, &seg, true, out, f);
            }
        }
    }

    /// Redacts `raw` (string value content) in pieces of at most
    /// [`SEGMENT_CAP`]; with `complete`, all of it, else only whole pieces.
    /// Returns how many bytes were consumed.
    fn value_pieces(&mut self, eng: &Compiled, raw: &[u8], complete: bool, out: &mut Vec<u8>, f: &mut Findings) -> usize {
        let mut done = 0;
        loop {
            let rest = raw.get(done..).unwrap_or(&[]);
            if rest.len() >= SEGMENT_CAP + 12 {
                let cut = safe_cut(rest, SEGMENT_CAP);
                self.value(eng, rest.get(..cut).unwrap_or(&[]), out, f);
                done += cut;
            } else if complete {
                self.value(eng, rest, out, f);
                return raw.len();
            } else {
                return done;
            }
        }
    }

    /// Redacts one piece of a string value.
    fn value(&mut self, eng: &Compiled, raw: &[u8], out: &mut Vec<u8>, f: &mut Findings) {
        if memchr::memchr(b'\\', raw).is_none() {
            // Replacements and masks need no escaping: scan in place.
            redact_text(eng, raw, 0, true, &mut ScanState::default(), out, f);
            return;
        }
        self.dec.clear();
        if unescape(raw, &mut self.dec).is_none() {
            redact_piece(eng, raw, out, f);
            return;
        }
        self.red.clear();
        let dec = std::mem::take(&mut self.dec);
        let n = redact_piece(eng, &dec, &mut self.red, f);
        self.dec = dec;
        if n == 0 {
            out.extend_from_slice(raw);
        } else {
            escape_into(&self.red, out);
        }
    }
}

/// The largest offset <= `cap` that splits neither an escape (a surrogate pair
/// counts as one) nor a UTF-8 sequence; `cap` itself when no such offset is
/// above zero. Reads at most 12 bytes past `cap`, so the streamed and the
/// whole-body passes cut at the same offsets.
pub(crate) fn safe_cut(raw: &[u8], cap: usize) -> usize {
    let cap = cap.min(raw.len());
    // Escapes are found by jumping from backslash to backslash (memchr): the
    // plain bytes between them need no look at all.
    let mut i = 0;
    while let Some(off) = raw.get(i..cap).and_then(|r| memchr::memchr(b'\\', r)) {
        let at = i + off;
        let end = at + escape_len(raw, at);
        if end > cap {
            return if at == 0 { cap } else { at };
        }
        i = end;
    }
    // Back off from `cap` to the start of the character it falls in.
    let mut cut = cap;
    while cut > i && cut + 4 > cap && raw.get(cut).is_some_and(|&c| (0x80..0xC0).contains(&c)) {
        cut -= 1;
    }
    if raw.get(cut).is_some_and(|&c| (0x80..0xC0).contains(&c)) || cut == 0 {
        cap
    } else {
        cut
    }
}

/// Length of the escape starting at the backslash at `at`.
fn escape_len(raw: &[u8], at: usize) -> usize {
    if raw.get(at + 1) != Some(&b'u') {
        return 2;
    }
    let high = raw.get(at + 2..at + 6).and_then(hex4).is_some_and(|v| (0xD800..0xDC00).contains(&v));
    if high && raw.get(at + 6..at + 8) == Some(&b"\\u"[..]) {
        12
    } else {
        6
    }
}

fn hex4(h: &[u8]) -> Option<u32> {
    let s = std::str::from_utf8(h).ok()?;
    if s.len() != 4 {
        return None;
    }
    u32::from_str_radix(s, 16).ok()
}

/// Decodes JSON string content into `out`; `None` on a malformed escape.
pub(crate) fn unescape(raw: &[u8], out: &mut Vec<u8>) -> Option<()> {
    let mut i = 0;
    while i < raw.len() {
        let start = i;
        i += raw.get(i..).and_then(|r| memchr::memchr(b'\\', r)).unwrap_or(raw.len() - i);
        out.extend_from_slice(raw.get(start..i)?);
        if i >= raw.len() {
            break;
        }
        let e = *raw.get(i + 1)?;
        i += 2;
        match e {
            b'"' | b'\\' | b'/' => out.push(e),
            b'b' => out.push(8),
            b'f' => out.push(12),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'u' => {
                let mut v = hex4(raw.get(i..i + 4)?)?;
                i += 4;
                if (0xD800..0xDC00).contains(&v) && raw.get(i..i + 2) == Some(&b"\\u"[..]) {
                    if let Some(lo) = raw.get(i + 2..i + 6).and_then(hex4).filter(|lo| (0xDC00..0xE000).contains(lo)) {
                        v = 0x10000 + ((v - 0xD800) << 10) + (lo - 0xDC00);
                        i += 6;
                    }
                }
                let ch = char::from_u32(v).unwrap_or('\u{FFFD}');
                let mut buf = [0u8; 4];
                out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
            }
            _ => return None,
        }
    }
    Some(())
}

/// Escapes decoded text as JSON string content.
pub(crate) fn escape_into(s: &[u8], out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for &c in s {
        match c {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0..=0x1f => {
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(c >> 4)]);
                out.push(HEX[usize::from(c & 15)]);
            }
            _ => out.push(c),
        }
    }
}
