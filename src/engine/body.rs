//! Body phases: request bodies are buffered (bounded) and redacted whole;
//! response bodies are buffered when they must be seen whole (compressed, field
//! filtering) or small enough, and otherwise redacted as a stream with a bounded
//! holdback (`text/event-stream` always streams, so chat completions are never
//! held back).

use super::{reply, Engine, HeaderEdits, LocalReply, RequestContext};
use crate::host::Host;
use crate::pii::{decode_content_encoding, BodyKind, Entity, Findings, StreamingRedactor};
use std::cell::RefCell;
use std::rc::Rc;

/// Bytes of the response tail kept to find `usage.total_tokens` in a stream.
const TOKEN_TAIL: usize = 1024;

/// What the host should do with the body bytes it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyAction {
    /// Pass the bytes on unchanged.
    Continue,
    /// Keep buffering: the host accumulates and calls again with everything so far.
    Buffer,
    /// Put these bytes in place of what the host holds (the chunk when
    /// streaming, the whole body when buffering) and continue.
    Replace(Vec<u8>),
    /// Refuse with this reply instead.
    Reply(LocalReply),
}

/// How the response body is handled, decided at the response headers.
#[derive(Debug, Clone, Default)]
pub enum ResponsePlan {
    /// Not inspected.
    #[default]
    Pass,
    /// Not changed; the tail is kept to read the LLM token usage.
    Tap { tail: Vec<u8> },
    /// Buffered, then processed whole.
    Buffer { kind: BodyKind, encoding: Option<String>, redact: bool, fields: bool },
    /// Redacted chunk by chunk.
    Stream { redactor: Rc<RefCell<StreamingRedactor>>, tail: Vec<u8> },
}

/// The engine's answer at the response headers.
#[derive(Debug, Clone, Default)]
pub struct ResponseHeadersVerdict {
    pub edits: HeaderEdits,
    /// Hold the headers until the body is processed (so a 502 can still replace
    /// the response when a compressed body cannot be decoded), where the host
    /// can. Envoy's proxy-wasm cannot (see src/host/envoy.rs): it resets instead.
    pub pause: bool,
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
}

impl Engine {
    /// The request body's verdict when its size alone decides it: not
    /// inspected, over `max_body_bytes` (413), or still arriving (buffer).
    /// Hosts that accumulate the body for the filter (Envoy) ask this before
    /// reading any bytes: copying everything so far on every chunk would make
    /// a body of n chunks cost O(n²).
    pub fn request_body_by_size(&self, host: &dyn Host, ctx: &mut RequestContext, size: usize, end_of_stream: bool) -> Option<BodyAction> {
        let (Some(_), Some(pii)) = (ctx.request_body, &self.pii) else { return Some(BodyAction::Continue) };
        if size > pii.redactor.max_body_bytes() {
            host.count("body_too_large", 1);
            ctx.local_status = Some(413);
            ctx.deny_code = Some("body_too_large");
            return Some(BodyAction::Reply(reply::too_large(None)));
        }
        (!end_of_stream).then_some(BodyAction::Buffer)
    }

    /// Request body: `body` is everything received so far.
    pub fn on_request_body(&self, host: &dyn Host, ctx: &mut RequestContext, body: &[u8], end_of_stream: bool) -> BodyAction {
        if let Some(action) = self.request_body_by_size(host, ctx, body.len(), end_of_stream) {
            return action;
        }
        let (Some(kind), Some(pii)) = (ctx.request_body, &self.pii) else { return BodyAction::Continue };
        let mut findings = Findings::new();
        let out = pii.redactor.redact_unbounded(body, kind, &mut findings);
        self.count_findings(host, &findings, "request");
        ctx.request_findings.merge(&findings);
        if findings.is_empty() {
            BodyAction::Continue
        } else {
            BodyAction::Replace(out)
        }
    }

    /// Response headers: decides the response plan and the header edits.
    pub fn on_response_headers(&self, host: &dyn Host, ctx: &mut RequestContext, headers: &[(String, String)]) -> ResponseHeadersVerdict {
        let mut verdict = ResponseHeadersVerdict::default();
        verdict.edits.set.extend(ctx.response_headers.iter().cloned());
        let content_type = header(headers, "content-type").unwrap_or("");
        let kind = self.pii.as_ref().map(|p| p.redactor.classify(content_type)).unwrap_or(BodyKind::Other);
        let wanted = self.pii.as_ref().is_some_and(|p| p.response) && !ctx.exempt;
        if wanted && kind == BodyKind::Other && header(headers, "content-type").is_some() {
            host.count("pii_unlisted_content_type.response", 1);
        }
        let redact = wanted && kind != BodyKind::Other;
        // Field filtering works with or without a pii section.
        let is_json = crate::pii::content::classify(content_type, &["application/json".into(), "application/*".into()]) == BodyKind::Json;
        let fields = ctx.response_fields.is_some() && is_json;
        let kind = if fields && kind == BodyKind::Other { BodyKind::Json } else { kind };
        let tokens = self.charges_tokens(ctx);
        let encoding = header(headers, "content-encoding")
            .filter(|e| !e.eq_ignore_ascii_case("identity"))
            .map(str::to_ascii_lowercase);
        if !redact && !fields {
            if tokens && encoding.is_none() {
                ctx.response = ResponsePlan::Tap { tail: Vec::new() };
            }
            return verdict;
        }
        // The body will change: its length and encoding no longer hold.
        verdict.edits.remove.push("content-length".into());
        if encoding.is_some() {
            verdict.edits.remove.push("content-encoding".into());
            verdict.pause = true;
        }
        ctx.response = match (kind, &encoding) {
            (BodyKind::EventStream, None) if !fields => self.stream_plan(kind),
            _ => ResponsePlan::Buffer { kind, encoding, redact, fields },
        };
        verdict
    }

    fn stream_plan(&self, kind: BodyKind) -> ResponsePlan {
        match &self.pii {
            Some(p) => ResponsePlan::Stream { redactor: Rc::new(RefCell::new(p.redactor.stream(kind))), tail: Vec::new() },
            None => ResponsePlan::Pass,
        }
    }

    /// The response body's verdict when no bytes are needed to decide it: not
    /// inspected, or buffered and still arriving within `max_body_bytes`. Like
    /// [`Engine::request_body_by_size`], asked before reading the bytes.
    pub fn response_body_by_size(&self, ctx: &RequestContext, size: usize, end_of_stream: bool) -> Option<BodyAction> {
        let max = self.pii.as_ref().map(|p| p.redactor.max_body_bytes()).unwrap_or(usize::MAX);
        match &ctx.response {
            ResponsePlan::Pass => Some(BodyAction::Continue),
            ResponsePlan::Buffer { .. } if !end_of_stream && size <= max => Some(BodyAction::Buffer),
            _ => None,
        }
    }

    /// Response body: `data` is the new chunk when streaming, everything so far
    /// when buffering (the host accumulates while told to [`BodyAction::Buffer`]).
    pub fn on_response_body(&self, host: &dyn Host, ctx: &mut RequestContext, data: &[u8], end_of_stream: bool) -> BodyAction {
        let max = self.pii.as_ref().map(|p| p.redactor.max_body_bytes()).unwrap_or(usize::MAX);
        let charges = self.charges_tokens(ctx);
        match &mut ctx.response {
            ResponsePlan::Pass => BodyAction::Continue,
            ResponsePlan::Tap { tail } => {
                keep_tail(tail, data);
                if end_of_stream {
                    ctx.response_tokens = total_tokens(tail);
                }
                BodyAction::Continue
            }
            ResponsePlan::Stream { redactor, tail } => {
                let mut out = Vec::with_capacity(data.len());
                let mut r = redactor.borrow_mut();
                r.push(data, &mut out);
                if end_of_stream {
                    r.finish(&mut out);
                    let findings = *r.findings();
                    drop(r);
                    self.count_findings(host, &findings, "response");
                    ctx.response_findings.merge(&findings);
                }
                if charges {
                    keep_tail(tail, &out);
                    if end_of_stream {
                        ctx.response_tokens = total_tokens(tail);
                    }
                }
                BodyAction::Replace(out)
            }
            ResponsePlan::Buffer { kind, encoding, redact, fields } => {
                let (kind, encoding, redact, fields) = (*kind, encoding.clone(), *redact, *fields);
                if data.len() > max {
                    if encoding.is_some() || fields {
                        // Cannot be inspected whole: never passed on unscanned.
                        return BodyAction::Reply(reply::bad_gateway(None));
                    }
                    // Too large to buffer: redact what we hold and stream the rest.
                    ctx.response = self.stream_plan(kind);
                    return self.on_response_body(host, ctx, data, end_of_stream);
                }
                if !end_of_stream {
                    return BodyAction::Buffer;
                }
                let decoded;
                let mut body: &[u8] = data;
                if let Some(enc) = &encoding {
                    match decode_content_encoding(enc, data, max) {
                        Ok(d) => {
                            decoded = d;
                            body = &decoded;
                        }
                        Err(e) => {
                            host.count("undecodable_body", 1);
                            host.log(crate::host::LogLevel::Warn, &format!("response body refused: {e}"));
                            return BodyAction::Reply(reply::bad_gateway(None));
                        }
                    }
                }
                let filtered = match (&ctx.response_fields, fields) {
                    (Some(filter), true) => filter.apply(body).ok().map(|f| f.body),
                    _ => None,
                };
                let mut findings = Findings::new();
                let redacted = match (&self.pii, redact) {
                    (Some(p), true) => Some(p.redactor.redact_unbounded(filtered.as_deref().unwrap_or(body), kind, &mut findings)),
                    _ => None,
                };
                if !findings.is_empty() {
                    self.count_findings(host, &findings, "response");
                    ctx.response_findings.merge(&findings);
                }
                // Bytes the client must get instead of the upstream's: a body
                // with nothing found, filtered and encoded as it came, goes on
                // as it is (no copy back into the host).
                let changed = encoding.is_some() || filtered.is_some() || !findings.is_empty();
                let out = match (redacted, filtered) {
                    _ if !changed => None,
                    (Some(r), _) => Some(r),
                    (None, Some(f)) => Some(f),
                    (None, None) => Some(body.to_vec()),
                };
                if charges {
                    // A JSON body is parsed for `usage`; anything else (or JSON
                    // that does not parse) is searched near its end, as a stream is.
                    let seen = out.as_deref().unwrap_or(body);
                    let json = if kind == BodyKind::Json { usage_in_json(seen) } else { None };
                    ctx.response_tokens = json.or_else(|| total_tokens(seen.get(seen.len().saturating_sub(TOKEN_TAIL)..).unwrap_or(&[])));
                }
                out.map_or(BodyAction::Continue, BodyAction::Replace)
            }
        }
    }

    /// Whether this response's LLM token usage is charged to a rate bucket
    /// (only then is the body searched for `usage.total_tokens`).
    fn charges_tokens(&self, ctx: &RequestContext) -> bool {
        self.rate.charges_response_tokens() && ctx.token.is_some()
    }

    fn count_findings(&self, host: &dyn Host, findings: &Findings, direction: &str) {
        for e in Entity::ALL {
            let n = findings.count(e);
            if n > 0 {
                host.count(&format!("pii_redacted.{}.{}", direction, e.name()), u64::from(n));
            }
        }
    }
}

fn keep_tail(tail: &mut Vec<u8>, data: &[u8]) {
    tail.extend_from_slice(data);
    if tail.len() > TOKEN_TAIL {
        let cut = tail.len() - TOKEN_TAIL;
        tail.drain(..cut);
    }
}

/// `usage.total_tokens` of a JSON response.
fn usage_in_json(body: &[u8]) -> Option<u64> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    v.get("usage")?.get("total_tokens")?.as_u64()
}

/// The last `"total_tokens": N` in a byte tail (the final SSE event of an
/// OpenAI-style stream carries the usage).
fn total_tokens(tail: &[u8]) -> Option<u64> {
    const KEY: &[u8] = b"\"total_tokens\"";
    let at = tail.windows(KEY.len()).rposition(|w| w == KEY)?;
    let rest = tail.get(at + KEY.len()..)?;
    let digits: Vec<u8> = rest
        .iter()
        .skip_while(|b| b.is_ascii_whitespace() || **b == b':')
        .take_while(|b| b.is_ascii_digit())
        .copied()
        .collect();
    std::str::from_utf8(&digits).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn total_tokens_is_read_from_the_last_event() {
        let sse = b"data: {\"x\":1}\n\ndata: {\"usage\":{\"total_tokens\": 42}}\n\ndata: [DONE]\n\n";
        assert_eq!(total_tokens(sse), Some(42));
        assert_eq!(total_tokens(b"no usage"), None);
        assert_eq!(usage_in_json(br#"{"usage":{"total_tokens":7}}"#), Some(7));
    }
}
