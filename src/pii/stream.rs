//! Streaming redaction: bodies that arrive in chunks.
//!
//! Text: every chunk is scanned at once and everything proven safe is released;
//! only bytes that could still be part of a finding are held back:
//! - always the last [`TAIL`] bytes (72): a later `@` or `-` may pull up to 65
//!   bytes before it into an e-mail or key (the look-back bound);
//! - from the start of a candidate whose detector needs more bytes to decide
//!   (a digit run at the end of the chunk, an `eyJ...` that goes on). Detectors
//!   read at most their value's length cap: 4 KiB for tokens and JWTs
//!   (`TOKEN_CAP`), 8 KiB for PEM private key blocks (`PEM_CAP`), a few hundred
//!   bytes for everything else. So the hold-back never exceeds
//!   [`MAX_HOLDBACK`] (8 KiB + 72). A token longer than its cap is cut there and
//!   the rest of its run is swallowed as it streams by, so no part of it leaks.
//!
//! The first half of a split value is therefore never released, and the output
//! is byte for byte the same as for the whole body, whatever the chunking (the
//! property tests check every split offset).
//!
//! JSON and form bodies release structure at once and hold back the current
//! string value (up to [`SEGMENT_CAP`]); SSE holds back the current event.

use super::entity::Findings;
use super::scanner::{self, ScanState, CONTEXT};
#[allow(unused_imports)]
use super::scanner::{MAX_HOLDBACK, TAIL};
use super::{form, json, sse, BodyKind, Compiled};
use std::sync::Arc;

/// The longest JSON string value / form value / SSE event processed as one
/// piece. Longer ones are cut into pieces of this size at the same offsets in
/// whole and streamed mode (a value straddling such a cut is not seen whole).
pub const SEGMENT_CAP: usize = 64 * 1024;

/// Redacts one body arriving in chunks. Feed it with [`push`](Self::push) and
/// end with [`finish`](Self::finish); what it writes to `out` is final.
#[derive(Debug)]
pub struct StreamingRedactor {
    eng: Arc<Compiled>,
    state: KindState,
    findings: Findings,
    finished: bool,
}

#[derive(Debug)]
enum KindState {
    Text(TextStream),
    Json(json::JsonStream),
    Form(form::FormStream),
    Sse(sse::SseStream),
    Other,
}

impl StreamingRedactor {
    pub(crate) fn new(eng: Arc<Compiled>, kind: BodyKind) -> StreamingRedactor {
        let state = match kind {
            BodyKind::Text => KindState::Text(TextStream::default()),
            BodyKind::Json => KindState::Json(json::JsonStream::default()),
            BodyKind::Form => KindState::Form(form::FormStream::default()),
            BodyKind::EventStream => KindState::Sse(sse::SseStream::default()),
            BodyKind::Other => KindState::Other,
        };
        StreamingRedactor { eng, state, findings: Findings::new(), finished: false }
    }

    /// Takes the next chunk; appends everything that is now safe to `out`.
    pub fn push(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        self.feed(chunk, false, out);
    }

    /// Ends the body: appends the rest to `out`. Later calls do nothing.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        self.feed(&[], true, out);
    }

    /// `push(chunk)` then `finish()` in one step (no hold-back copy).
    pub fn push_final(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        self.feed(chunk, true, out);
    }

    /// What was found so far.
    pub fn findings(&self) -> &Findings {
        &self.findings
    }

    /// Bytes of input taken but not yet written out.
    pub fn held_back(&self) -> usize {
        match &self.state {
            KindState::Text(t) => t.held_back(),
            KindState::Json(j) => j.held_back(),
            KindState::Form(f) => f.held_back(),
            KindState::Sse(s) => s.held_back(),
            KindState::Other => 0,
        }
    }

    fn feed(&mut self, chunk: &[u8], fin: bool, out: &mut Vec<u8>) {
        if self.finished {
            return;
        }
        self.finished = fin;
        let eng = &*self.eng;
        let f = &mut self.findings;
        match &mut self.state {
            KindState::Text(t) => t.push(eng, chunk, fin, out, f),
            KindState::Json(j) => j.push(eng, chunk, fin, out, f),
            KindState::Form(s) => s.push(eng, chunk, fin, out, f),
            KindState::Sse(s) => s.push(eng, chunk, fin, out, f),
            KindState::Other => out.extend_from_slice(chunk),
        }
    }
}

/// Redacts `b[from..]`, scanning with `st`; writes the decided part to `out`
/// and returns the safe point (see [`scanner::scan`]).
pub(crate) fn redact_text(
    eng: &Compiled,
    b: &[u8],
    from: usize,
    fin: bool,
    st: &mut ScanState,
    out: &mut Vec<u8>,
    f: &mut Findings,
) -> usize {
    let mut cursor = from;
    let safe = scanner::scan(b, from, fin, eng.entities, st, |m| {
        if m.start > cursor {
            out.extend_from_slice(b.get(cursor..m.start).unwrap_or(&[]));
        }
        if !m.continuation {
            f.add(m.entity);
            eng.operators.render(m.entity, b.get(m.start..m.value_end).unwrap_or(&[]), out);
        }
        cursor = cursor.max(m.end);
    });
    if safe > cursor {
        out.extend_from_slice(b.get(cursor..safe).unwrap_or(&[]));
    }
    safe.max(cursor)
}

/// Redacts a complete piece of text (a decoded JSON string, a form value);
/// returns how many findings it had.
pub(crate) fn redact_piece(eng: &Compiled, b: &[u8], out: &mut Vec<u8>, f: &mut Findings) -> u64 {
    let before = f.total();
    redact_text(eng, b, 0, true, &mut ScanState::default(), out, f);
    f.total() - before
}

/// Plain-text streaming state: unreleased input, plus up to [`CONTEXT`] bytes
/// of released input kept for look-backs.
#[derive(Debug, Default)]
pub(crate) struct TextStream {
    carry: Vec<u8>,
    ctx: usize,
    st: ScanState,
}

impl TextStream {
    pub(crate) fn held_back(&self) -> usize {
        self.carry.len().saturating_sub(self.ctx)
    }

    pub(crate) fn push(&mut self, eng: &Compiled, chunk: &[u8], fin: bool, out: &mut Vec<u8>, f: &mut Findings) {
        let safe;
        if self.carry.is_empty() {
            // Nothing held: scan the chunk where it is; keep only the tail.
            safe = redact_text(eng, chunk, 0, fin, &mut self.st, out, f);
            let keep_from = safe.saturating_sub(CONTEXT);
            if !fin {
                self.carry.extend_from_slice(chunk.get(keep_from..).unwrap_or(&[]));
            }
            self.ctx = safe - keep_from;
            self.st.shift(keep_from);
        } else {
            self.carry.extend_from_slice(chunk);
            safe = redact_text(eng, &self.carry, self.ctx, fin, &mut self.st, out, f);
            let drop = safe.saturating_sub(CONTEXT);
            self.carry.drain(..drop.min(self.carry.len()));
            self.ctx = safe - drop;
            self.st.shift(drop);
        }
        if fin {
            self.carry.clear();
            self.ctx = 0;
            self.st = ScanState::default();
        }
    }
}
