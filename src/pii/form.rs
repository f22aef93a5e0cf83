//! `application/x-www-form-urlencoded` bodies: values are percent-decoded
//! (`+` is a space), scanned, and re-encoded when they had findings. Keys and
//! values without findings are copied byte for byte.

use super::entity::Findings;
use super::stream::{redact_piece, SEGMENT_CAP};
use super::Compiled;

/// Streaming form state.
#[derive(Debug, Default)]
pub(crate) struct FormStream {
    in_value: bool,
    seg: Vec<u8>,
    dec: Vec<u8>,
    red: Vec<u8>,
}

impl FormStream {
    pub(crate) fn held_back(&self) -> usize {
        self.seg.len()
    }

    pub(crate) fn push(&mut self, eng: &Compiled, chunk: &[u8], fin: bool, out: &mut Vec<u8>, f: &mut Findings) {
        let mut i = 0;
        while i < chunk.len() {
            let rest = chunk.get(i..).unwrap_or(&[]);
            if self.in_value {
                let end = rest.iter().position(|&c| c == b'&');
                self.seg.extend_from_slice(rest.get(..end.unwrap_or(rest.len())).unwrap_or(&[]));
                self.flush(eng, end.is_some(), out, f);
                match end {
                    Some(e) => {
                        out.push(b'&');
                        self.in_value = false;
                        i += e + 1;
                    }
                    None => i = chunk.len(),
                }
            } else {
                let end = rest.iter().position(|&c| c == b'=' || c == b'&');
                let key = rest.get(..end.unwrap_or(rest.len())).unwrap_or(&[]);
                out.extend_from_slice(key);
                match end {
                    Some(e) => {
                        let sep = rest.get(e).copied().unwrap_or(b'&');
                        out.push(sep);
                        self.in_value = sep == b'=';
                        i += e + 1;
                    }
                    None => i = chunk.len(),
                }
            }
        }
        if fin && self.in_value {
            self.flush(eng, true, out, f);
        }
    }

    /// Processes whole pieces of the held value (all of it when `complete`).
    fn flush(&mut self, eng: &Compiled, complete: bool, out: &mut Vec<u8>, f: &mut Findings) {
        let seg = std::mem::take(&mut self.seg);
        let mut done = 0;
        loop {
            let rest = seg.get(done..).unwrap_or(&[]);
            if rest.len() >= SEGMENT_CAP + 3 {
                // Never split a %XX escape.
                let mut cut = SEGMENT_CAP;
                for back in 1..=2 {
                    if rest.get(SEGMENT_CAP - back) == Some(&b'%') {
                        cut = SEGMENT_CAP - back;
                    }
                }
                self.value(eng, rest.get(..cut).unwrap_or(&[]), out, f);
                done += cut;
            } else if complete {
                self.value(eng, rest, out, f);
                done = seg.len();
                break;
            } else {
                break;
            }
        }
        self.seg = seg;
        self.seg.drain(..done.min(self.seg.len()));
    }

    fn value(&mut self, eng: &Compiled, raw: &[u8], out: &mut Vec<u8>, f: &mut Findings) {
        self.dec.clear();
        percent_decode(raw, &mut self.dec);
        self.red.clear();
        let dec = std::mem::take(&mut self.dec);
        let n = redact_piece(eng, &dec, &mut self.red, f);
        self.dec = dec;
        if n == 0 {
            out.extend_from_slice(raw);
        } else {
            percent_encode(&self.red, out);
        }
    }
}

fn hexval(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// `+` to space, `%XX` to the byte; a malformed `%` stays as it is.
pub(crate) fn percent_decode(raw: &[u8], out: &mut Vec<u8>) {
    let mut i = 0;
    while let Some(&c) = raw.get(i) {
        match c {
            b'+' => out.push(b' '),
            b'%' => {
                let hi = raw.get(i + 1).copied().and_then(hexval);
                let lo = raw.get(i + 2).copied().and_then(hexval);
                if let (Some(h), Some(l)) = (hi, lo) {
                    out.push(h << 4 | l);
                    i += 3;
                    continue;
                }
                out.push(c);
            }
            _ => out.push(c),
        }
        i += 1;
    }
}

/// Encodes as the WHATWG form serializer does: unreserved bytes kept, space as `+`.
pub(crate) fn percent_encode(s: &[u8], out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &c in s {
        match c {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => out.push(c),
            b' ' => out.push(b'+'),
            _ => {
                out.push(b'%');
                out.push(HEX[usize::from(c >> 4)]);
                out.push(HEX[usize::from(c & 15)]);
            }
        }
    }
}
