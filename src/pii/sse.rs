//! `text/event-stream` (how chat completions stream): redacted event by event,
//! an event being everything up to a blank line. In each event, a `data:` line
//! whose payload is JSON (OpenAI `chat.completion.chunk`) is redacted as JSON
//! (string values only); every other line as text. An event is held back until
//! its blank line arrives (at most [`SEGMENT_CAP`]; a longer one is cut at its
//! last line end within that size, at the same place whatever the chunking).
//!
//! Not caught: a value split across consecutive events, as when a model streams
//! an e-mail address token by token into successive `delta.content` strings.
//! Each event's data is complete JSON and is redacted on its own; joining the
//! content of successive events needs the rewritten text to move between events.

use super::entity::Findings;
use super::json::JsonStream;
use super::stream::{redact_piece, SEGMENT_CAP};
use super::Compiled;

/// Streaming SSE state: the current, unfinished event.
#[derive(Debug, Default)]
pub(crate) struct SseStream {
    ev: Vec<u8>,
}

/// End of the first event in `b` (after its blank line), if it ends within `limit` bytes.
fn event_end(b: &[u8], limit: usize) -> Option<usize> {
    let mut i = 0;
    while let Some(off) = b.get(i..).and_then(|r| r.iter().position(|&c| c == b'\n')) {
        let nl = i + off;
        let after = nl + 1;
        let end = match b.get(after) {
            Some(b'\n') => Some(after + 1),
            Some(b'\r') if b.get(after + 1) == Some(&b'\n') => Some(after + 2),
            _ => None,
        };
        if let Some(e) = end {
            return (e <= limit).then_some(e);
        }
        if after > limit {
            return None;
        }
        i = after;
    }
    None
}

impl SseStream {
    pub(crate) fn held_back(&self) -> usize {
        self.ev.len()
    }

    pub(crate) fn push(&mut self, eng: &Compiled, chunk: &[u8], fin: bool, out: &mut Vec<u8>, f: &mut Findings) {
        let owned;
        let buf: &[u8] = if self.ev.is_empty() {
            chunk
        } else {
            self.ev.extend_from_slice(chunk);
            owned = std::mem::take(&mut self.ev);
            &owned
        };
        let mut done = 0;
        loop {
            let rest = buf.get(done..).unwrap_or(&[]);
            if rest.is_empty() {
                break;
            }
            if let Some(e) = event_end(rest, SEGMENT_CAP) {
                event(eng, rest.get(..e).unwrap_or(&[]), out, f);
                done += e;
            } else if rest.len() >= SEGMENT_CAP + 2 {
                let head = rest.get(..SEGMENT_CAP).unwrap_or(&[]);
                let cut = head.iter().rposition(|&c| c == b'\n').map_or(SEGMENT_CAP, |p| p + 1);
                event(eng, rest.get(..cut).unwrap_or(&[]), out, f);
                done += cut;
            } else if fin {
                event(eng, rest, out, f);
                done = buf.len();
            } else {
                break;
            }
        }
        self.ev.clear();
        if !fin {
            self.ev.extend_from_slice(buf.get(done..).unwrap_or(&[]));
        }
    }
}

/// Redacts one event's lines.
fn event(eng: &Compiled, ev: &[u8], out: &mut Vec<u8>, f: &mut Findings) {
    for line in ev.split_inclusive(|&c| c == b'\n') {
        let body_len = line.len() - line.iter().rev().take_while(|&&c| c == b'\n' || c == b'\r').count();
        let (body, eol) = line.split_at(body_len);
        if let Some(payload) = body.strip_prefix(b"data:") {
            out.extend_from_slice(b"data:");
            let sp = usize::from(payload.first() == Some(&b' '));
            let (space, payload) = payload.split_at(sp);
            out.extend_from_slice(space);
            if matches!(payload.iter().find(|c| !c.is_ascii_whitespace()), Some(b'{' | b'[')) {
                JsonStream::default().push(eng, payload, true, out, f);
            } else {
                redact_piece(eng, payload, out, f);
            }
        } else {
            redact_piece(eng, body, out, f);
        }
        out.extend_from_slice(eol);
    }
}
