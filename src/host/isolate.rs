//! The edge host without JavaScript: what one worker isolate holds between
//! requests, and how a request's body phases are driven. `host/edge.rs` wraps
//! this in wasm-bindgen types; keeping it free of `wasm_bindgen` lets it be
//! tested natively.
//!
//! State is per isolate: an edge runtime runs many isolates (one per machine,
//! several per data centre) that share nothing, so token caches, JWKS, rate
//! buckets and lockout counters are per isolate unless the worker puts the
//! last two in a Durable Object (see `engine::state`): the object then holds a
//! guard of its own whose isolate memory is the one store.

use super::{CallError, Cas, Host, LogLevel, MemoryHost, OutboundRequest, StoreError};
use crate::engine::{BodyAction, Engine, LocalReply, RequestContext, ResponseHeadersVerdict, ResponsePlan};
use std::cell::{Cell, RefCell};

/// Outbound calls queued and not yet taken by the worker. The worker drains
/// the queue on every request; beyond this the host refuses new calls (the
/// audit shipper then backs off and retries) rather than grow without bound.
const MAX_QUEUED_CALLS: usize = 64;

/// Content codings the edge runtime's `fetch` decodes by itself: the body the
/// worker reads is already plain, so the engine must not decode it again.
const RUNTIME_DECODED: [&str; 2] = ["gzip", "br"];

/// [`Host`] of one isolate: the clock and log sink come from the runtime,
/// shared data and counters live in the isolate's memory, outbound calls are
/// queued for the worker to send with `fetch`.
pub struct IsolateHost {
    clock: fn() -> u64,
    logger: fn(LogLevel, &str),
    memory: MemoryHost,
    outbound: RefCell<Vec<(u32, OutboundRequest)>>,
    next_call: Cell<u32>,
}

impl IsolateHost {
    /// A host reading time from `clock` (ms since the epoch) and logging to `logger`.
    pub fn new(clock: fn() -> u64, logger: fn(LogLevel, &str)) -> IsolateHost {
        IsolateHost {
            clock,
            logger,
            memory: MemoryHost::default(),
            outbound: RefCell::new(Vec::new()),
            next_call: Cell::new(0),
        }
    }

    /// Takes the outbound calls queued since the last take, with their ids.
    pub fn take_calls(&self) -> Vec<(u32, OutboundRequest)> {
        std::mem::take(&mut *self.outbound.borrow_mut())
    }

    /// Every counter of this isolate, sorted by name.
    pub fn counters(&self) -> Vec<(String, u64)> {
        let mut all: Vec<(String, u64)> = self.memory.counters.borrow().iter().map(|(k, v)| (k.clone(), *v)).collect();
        all.sort();
        all
    }
}

impl Host for IsolateHost {
    fn now_ms(&self) -> u64 {
        (self.clock)()
    }

    fn log(&self, level: LogLevel, message: &str) {
        (self.logger)(level, message);
    }

    fn shared_get(&self, key: &str) -> Result<Option<(Vec<u8>, Cas)>, StoreError> {
        self.memory.shared_get(key)
    }

    fn shared_set(&self, key: &str, value: &[u8], cas: Option<Cas>) -> Result<(), StoreError> {
        self.memory.shared_set(key, value, cas)
    }

    fn http_call(&self, request: &OutboundRequest) -> Result<u32, CallError> {
        if outbound_url(request).is_none() {
            return Err(CallError::UnknownUpstream);
        }
        let mut queue = self.outbound.borrow_mut();
        if queue.len() >= MAX_QUEUED_CALLS {
            return Err(CallError::Refused);
        }
        // Never 0: ids start at 1 like Envoy's call tokens.
        let id = self.next_call.get().wrapping_add(1).max(1);
        self.next_call.set(id);
        queue.push((id, request.clone()));
        Ok(id)
    }

    fn count(&self, metric: &str, by: u64) {
        self.memory.count(metric, by);
    }
}

/// The URL an outbound request goes to. At the edge there are no clusters: the
/// policy's `cluster` (remote JWKS, audit collector) is a base URL such as
/// `https://idp.example.com`, and the request's path is appended to it.
/// Anything but an `http://` or `https://` URL is refused.
pub fn outbound_url(request: &OutboundRequest) -> Option<String> {
    let base = request.upstream.trim_end_matches('/');
    let rest = base.strip_prefix("https://").or_else(|| base.strip_prefix("http://"))?;
    if rest.is_empty() || rest.contains(['/', '?', '#', ' ']) {
        return None;
    }
    let path = if request.path.starts_with('/') { request.path.clone() } else { format!("/{}", request.path) };
    Some(format!("{base}{path}"))
}

/// `(authority, path with query)` of an absolute request URL, the fragment
/// dropped; `/` when the URL has no path.
pub fn split_url(url: &str) -> Option<(String, String)> {
    let (_, rest) = url.split_once("://")?;
    let rest = rest.split_once('#').map_or(rest, |(before, _)| before);
    let at = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(at);
    if authority.is_empty() {
        return None;
    }
    let path = if path.starts_with('/') { path.to_string() } else { format!("/{path}") };
    Some((authority.to_string(), path))
}

/// The upstream response headers as the engine must see them at the edge:
/// codings the runtime already decoded are dropped (the body is plain), and
/// returned so the adapter removes them from the response too.
pub fn runtime_view(headers: &[(String, String)]) -> (Vec<(String, String)>, bool) {
    let decoded = |(n, v): &(String, String)| {
        n == "content-encoding" && RUNTIME_DECODED.iter().any(|c| v.trim().eq_ignore_ascii_case(c))
    };
    let was_decoded = headers.iter().any(decoded);
    (headers.iter().filter(|h| !decoded(h)).cloned().collect(), was_decoded)
}

/// What the worker does with a body chunk it handed in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chunk {
    /// Pass these bytes on (possibly empty while the engine buffers).
    Emit(Vec<u8>),
    /// Answer with this reply instead (request body: refuse the request;
    /// response body: the response cannot be passed on).
    Reply(LocalReply),
}

/// How the worker handles the response body, decided at the response headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseMode {
    /// Return the upstream body untouched.
    Pass,
    /// Pipe it through [`Exchange::response_chunk`] as it arrives.
    Stream,
    /// Read it whole through [`Exchange::response_chunk`] before answering,
    /// so a reply can still replace the response.
    Hold,
}

/// One request/response through the engine: the context carried between
/// phases, and the bytes a body phase holds while the engine buffers.
pub struct Exchange {
    ctx: RequestContext,
    request_held: Vec<u8>,
    response_held: Vec<u8>,
    /// A reply ended the exchange: later chunks are refused.
    replied: bool,
    logged: bool,
}

impl Exchange {
    /// The exchange of a request the engine let through or answered.
    pub fn new(ctx: RequestContext) -> Exchange {
        Exchange { ctx, request_held: Vec::new(), response_held: Vec::new(), replied: false, logged: false }
    }

    /// Whether the request body must go through [`Exchange::request_chunk`].
    pub fn inspects_request_body(&self) -> bool {
        self.ctx.request_body.is_some()
    }

    /// The context (for the adapter's own decisions, tests).
    pub fn context(&self) -> &RequestContext {
        &self.ctx
    }

    /// A request body chunk; `end` on the last one (an empty chunk is fine).
    pub fn request_chunk(&mut self, engine: &Engine, host: &dyn Host, chunk: &[u8], end: bool) -> Chunk {
        if self.replied {
            return Chunk::Emit(Vec::new());
        }
        self.request_held.extend_from_slice(chunk);
        let action = engine.on_request_body(host, &mut self.ctx, &self.request_held, end);
        self.settle(action, Direction::Request)
    }

    /// The response headers: edits to apply and how to handle the body.
    pub fn response_headers(
        &mut self,
        engine: &Engine,
        host: &dyn Host,
        status: u16,
        headers: &[(String, String)],
    ) -> (ResponseHeadersVerdict, ResponseMode) {
        let (mut seen, decoded) = runtime_view(headers);
        seen.insert(0, (":status".into(), status.to_string()));
        let mut verdict = engine.on_response_headers(host, &mut self.ctx, &seen);
        if decoded && !verdict.edits.remove.iter().any(|n| n == "content-encoding") {
            verdict.edits.remove.push("content-encoding".into());
        }
        let mode = match (&self.ctx.response, verdict.pause) {
            (ResponsePlan::Pass, _) => ResponseMode::Pass,
            (_, true) => ResponseMode::Hold,
            _ => ResponseMode::Stream,
        };
        (verdict, mode)
    }

    /// A response body chunk; `end` on the last one (an empty chunk is fine).
    pub fn response_chunk(&mut self, engine: &Engine, host: &dyn Host, chunk: &[u8], end: bool) -> Chunk {
        if self.replied {
            return Chunk::Emit(Vec::new());
        }
        self.response_held.extend_from_slice(chunk);
        let action = engine.on_response_body(host, &mut self.ctx, &self.response_held, end);
        self.settle(action, Direction::Response)
    }

    /// The end of the exchange: access and data-access records, token charge.
    /// `status` is what the client got. Only the first call counts. With the
    /// state in a Durable Object, returns the LLM token charge to send there.
    pub fn log(&mut self, engine: &Engine, host: &dyn Host, status: u16) -> Option<Vec<u8>> {
        if self.logged {
            return None;
        }
        self.logged = true;
        engine.on_log(host, &self.ctx, status);
        engine.charge_query(&self.ctx).map(|q| q.to_bytes())
    }

    fn settle(&mut self, action: BodyAction, direction: Direction) -> Chunk {
        let held = match direction {
            Direction::Request => &mut self.request_held,
            Direction::Response => &mut self.response_held,
        };
        match action {
            BodyAction::Buffer => Chunk::Emit(Vec::new()),
            BodyAction::Continue => Chunk::Emit(std::mem::take(held)),
            BodyAction::Replace(bytes) => {
                held.clear();
                Chunk::Emit(bytes)
            }
            BodyAction::Reply(reply) => {
                held.clear();
                self.replied = true;
                Chunk::Reply(reply)
            }
        }
    }
}

#[derive(Clone, Copy)]
enum Direction {
    Request,
    Response,
}

#[cfg(test)]
mod tests;
