//! wasm-bindgen adapter (edge workers). The only file that names `wasm_bindgen`.
//!
//! Translation only: JavaScript values in, the engine's verdicts out as plain
//! objects. The isolate state and body driving live in [`super::isolate`]; every
//! decision is the engine's. `edge/worker.js` shows the intended use:
//!
//! ```text
//! const guard = new Guard(env.POLICY);                 // throws naming the bad field
//! let v = guard.onRequest(method, url, headers, ip, true);
//! // v.action: "forward" {path, set, remove, exchange} | "respond" {status, headers, body, exchange}
//! //         | "wait" {provider, waitMs}: fetch guard.jwksDue(), call jwksFinished, retry with false
//! v.exchange.requestChunk(bytes, end)    -> Uint8Array | {action:"respond", ...}
//! v.exchange.responseHeaders(status, h)  -> {set, remove, mode: "pass"|"stream"|"hold"}
//! v.exchange.responseChunk(bytes, end)   -> Uint8Array | {action:"respond", ...}
//! v.exchange.log(status) -> Uint8Array (a charge for the state object) | undefined
//! guard.tick() -> [{id, url, method, headers, body, timeoutMs}];  guard.callFinished(id, status)
//!
//! // Buckets and lockout in a Durable Object (engine::state): two passes.
//! let p = guard.planState(method, url, headers, ip, true);   // "wait" as above, or
//! // p: {action: "state", query: Uint8Array | null, pending}
//! const answer = p.query && await stub.answer(p.query);      // in the object: Guard.forState(policy).answerState(q)
//! v = p.pending.resume(answer ?? null);                       // null: unreachable, fails closed (503)
//! ```

use super::isolate::{self, Chunk, IsolateHost, ResponseMode};
use super::{Host, LogLevel};
use crate::config::Policy;
use crate::engine::{Engine, LocalReply, PendingRequest, RequestHead, RequestVerdict, StateAnswer, StatePlan, StateQuery};
use js_sys::{Array, Object, Reflect, Uint8Array};
use std::cell::RefCell;
use std::rc::Rc;
use wasm_bindgen::prelude::*;

#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(js_namespace = console, js_name = log)]
    fn console_log(message: &str);
    #[wasm_bindgen(js_namespace = console, js_name = warn)]
    fn console_warn(message: &str);
    #[wasm_bindgen(js_namespace = console, js_name = error)]
    fn console_error(message: &str);
}

fn now_ms() -> u64 {
    let now = js_sys::Date::now();
    if now.is_finite() && now > 0.0 {
        now as u64
    } else {
        0
    }
}

fn log_line(level: LogLevel, message: &str) {
    let line = format!("chatguard {level:?}: {message}");
    match level {
        LogLevel::Trace | LogLevel::Debug => {}
        LogLevel::Info => console_log(&line),
        LogLevel::Warn => console_warn(&line),
        LogLevel::Error | LogLevel::Critical => console_error(&line),
    }
}

/// The engine and the isolate's host, shared by a guard and its exchanges.
struct Inner {
    engine: Engine,
    host: IsolateHost,
}

/// chatguard for one isolate: build it once from the policy, use it for every request.
#[wasm_bindgen]
pub struct Guard {
    inner: Rc<Inner>,
}

#[wasm_bindgen]
impl Guard {
    /// Compiles `policy` (JSON text; empty means the compiled-in default).
    /// Throws an `Error` whose message names the offending field.
    #[wasm_bindgen(constructor)]
    pub fn new(policy: &str) -> Result<Guard, JsError> {
        Guard::compile(policy, true)
    }

    /// The guard a Durable Object holds to answer [`Guard::answer_state`]:
    /// the same policy, its isolate memory the one store of buckets and locks.
    #[wasm_bindgen(js_name = forState)]
    pub fn for_state(policy: &str) -> Result<Guard, JsError> {
        Guard::compile(policy, false)
    }

    fn compile(policy: &str, serving: bool) -> Result<Guard, JsError> {
        let host = IsolateHost::new(now_ms, log_line);
        let configured = !policy.trim().is_empty();
        let source: &[u8] = if configured { policy.as_bytes() } else { crate::engine::DEFAULT_POLICY };
        // Distinct per isolate: audit record ids and slot hashing.
        let seed = now_ms() ^ (((js_sys::Math::random() * 4_294_967_296.0) as u64) << 32);
        let engine = Policy::from_json(source)
            .and_then(|p| Engine::compile_seeded(&p, source, seed))
            .map_err(|e| JsError::new(&format!("chatguard policy refused: {e}")))?;
        host.log(
            LogLevel::Info,
            &format!(
                "chatguard {} loaded {} policy {}{}",
                crate::VERSION,
                if configured { "configured" } else { "default" },
                engine.policy_hash(),
                if serving { "" } else { " (state store)" }
            ),
        );
        if serving {
            engine.announce(&host);
        }
        Ok(Guard { inner: Rc::new(Inner { engine, host }) })
    }

    /// Short hash of the policy document.
    #[wasm_bindgen(getter, js_name = policyHash)]
    pub fn policy_hash(&self) -> String {
        self.inner.engine.policy_hash().to_string()
    }

    /// The request-headers phase. `headers`: an array of `[name, value]`, a
    /// `Headers` or a plain object. `clientIp`: the address the platform vouches
    /// for (Cloudflare: `CF-Connecting-IP`). `mayWait`: false on the retry after
    /// a `"wait"` answer.
    #[wasm_bindgen(js_name = onRequest)]
    pub fn on_request(
        &self,
        method: &str,
        url: &str,
        headers: JsValue,
        client_ip: Option<String>,
        may_wait: bool,
    ) -> Result<JsValue, JsError> {
        let head = request_head(method, url, &headers, client_ip)?;
        let verdict = self.inner.engine.on_request_headers(&self.inner.host, &head, may_wait);
        Ok(verdict_value(&self.inner, &head, verdict))
    }

    /// Pass 1 of a request whose buckets and lockout live in a Durable
    /// Object (same arguments as `onRequest`): `{action: "wait", ...}` as
    /// there, or `{action: "state", query, pending}`. Send `query` (bytes;
    /// `null` when no stage needs the state) to the object, then call
    /// `pending.resume(answer)`.
    #[wasm_bindgen(js_name = planState)]
    pub fn plan_state(
        &self,
        method: &str,
        url: &str,
        headers: JsValue,
        client_ip: Option<String>,
        may_wait: bool,
    ) -> Result<JsValue, JsError> {
        let head = request_head(method, url, &headers, client_ip)?;
        let inner = &self.inner;
        Ok(match inner.engine.plan_state(&inner.host, &head, may_wait) {
            StatePlan::WaitForKeys { provider } => wait_value(inner, provider),
            StatePlan::Ask(pending) => {
                let query: JsValue = if pending.query().is_empty() {
                    JsValue::NULL
                } else {
                    Uint8Array::from(pending.query().to_bytes().as_slice()).into()
                };
                let pending = Pending { inner: inner.clone(), head, pending: RefCell::new(Some(pending)) };
                object(&[("action", "state".into()), ("query", query), ("pending", pending.into())]).into()
            }
        })
    }

    /// In the Durable Object: answers a query from `planState` (or a charge
    /// from `exchange.log`) over this guard's store. Never throws; a query it
    /// cannot read gets the empty answer, which the asking worker refuses (503).
    #[wasm_bindgen(js_name = answerState)]
    pub fn answer_state(&self, query: &[u8]) -> Vec<u8> {
        let (engine, host) = (&self.inner.engine, &self.inner.host);
        match StateQuery::from_bytes(query) {
            Some(q) => engine.answer_state(host, &q).to_bytes(),
            None => {
                host.count("state_query_unreadable", 1);
                host.log(LogLevel::Warn, "state query unreadable: refused");
                StateAnswer::unavailable().to_bytes()
            }
        }
    }

    /// Remote JWKS fetches due now, each `{provider, url, method, headers, timeoutMs}`;
    /// they are marked as sent: answer each with [`Guard::jwks_finished`].
    #[wasm_bindgen(js_name = jwksDue)]
    pub fn jwks_due(&self) -> Array {
        let (engine, host) = (&self.inner.engine, &self.inner.host);
        let now = host.now_ms();
        let out = Array::new();
        for (provider, request) in engine.jwks_due(now) {
            match isolate::outbound_url(&request) {
                Some(url) => {
                    engine.verifier().jwks_started(provider, now, true);
                    let call = request_object(&url, &request);
                    set(&call, "provider", (provider as f64).into());
                    out.push(&call);
                }
                None => {
                    engine.verifier().jwks_started(provider, now, false);
                    host.count("jwks_fetches.failed", 1);
                    host.log(
                        LogLevel::Warn,
                        &format!(
                            "jwks fetch not sent: provider={}: remote_jwks.cluster must be a base URL (https://host) at the edge",
                            engine.verifier().provider_name(provider)
                        ),
                    );
                }
            }
        }
        out
    }

    /// The answer to a JWKS fetch: `status` undefined when the fetch failed.
    #[wasm_bindgen(js_name = jwksFinished)]
    pub fn jwks_finished(&self, provider: usize, status: Option<u16>, body: &[u8]) {
        self.inner.engine.jwks_finished(&self.inner.host, provider, status, body);
    }

    /// Background work (audit batches): returns the calls to send now, each
    /// `{id, url, method, headers, body, timeoutMs}`; answer each with
    /// [`Guard::call_finished`].
    pub fn tick(&self) -> Array {
        let (engine, host) = (&self.inner.engine, &self.inner.host);
        engine.on_tick(host);
        let out = Array::new();
        for (id, request) in host.take_calls() {
            if let Some(url) = isolate::outbound_url(&request) {
                let call = request_object(&url, &request);
                set(&call, "id", id.into());
                out.push(&call);
            }
        }
        out
    }

    /// The answer to a call from [`Guard::tick`]: `status` undefined when it failed.
    #[wasm_bindgen(js_name = callFinished)]
    pub fn call_finished(&self, id: u32, status: Option<u16>) {
        let (engine, host) = (&self.inner.engine, &self.inner.host);
        if engine.is_audit_call(id) {
            engine.audit_call_finished(host, id, status);
        }
    }

    /// Audit records held (waiting or in flight): keep ticking while non-zero.
    #[wasm_bindgen(js_name = auditPending)]
    pub fn audit_pending(&self) -> u32 {
        self.inner.engine.audit_stats().map_or(0, |s| u32::try_from(s.held).unwrap_or(u32::MAX))
    }

    /// How often to tick while audit records are pending (ms), if audit is on.
    #[wasm_bindgen(js_name = tickPeriodMs)]
    pub fn tick_period_ms(&self) -> Option<f64> {
        self.inner.engine.tick_period_ms().map(|ms| ms as f64)
    }

    /// This isolate's counters, `{name: value}`.
    pub fn counters(&self) -> Object {
        let out = Object::new();
        for (name, value) in self.inner.host.counters() {
            set(&out, &name, (value as f64).into());
        }
        out
    }
}

/// One request/response through the guard (returned by `onRequest`).
#[wasm_bindgen]
pub struct Exchange {
    inner: Rc<Inner>,
    state: RefCell<isolate::Exchange>,
}

#[wasm_bindgen]
impl Exchange {
    /// A request body chunk (`end` on the last): the bytes to forward, or a
    /// reply object (`action: "respond"`) that refuses the request.
    #[wasm_bindgen(js_name = requestChunk)]
    pub fn request_chunk(&self, chunk: &[u8], end: bool) -> JsValue {
        let out = self.state.borrow_mut().request_chunk(&self.inner.engine, &self.inner.host, chunk, end);
        chunk_value(out)
    }

    /// The upstream response headers: `{set, remove, mode}`; `mode` is `"pass"`
    /// (return the body untouched), `"stream"` (pipe it through
    /// `responseChunk`) or `"hold"` (read it whole through `responseChunk`
    /// before answering).
    #[wasm_bindgen(js_name = responseHeaders)]
    pub fn response_headers(&self, status: u16, headers: JsValue) -> Result<JsValue, JsError> {
        let headers = header_pairs(&headers)?;
        let (verdict, mode) =
            self.state.borrow_mut().response_headers(&self.inner.engine, &self.inner.host, status, &headers);
        let mode = match mode {
            ResponseMode::Pass => "pass",
            ResponseMode::Stream => "stream",
            ResponseMode::Hold => "hold",
        };
        Ok(object(&[
            ("set", pairs(&verdict.edits.set)),
            ("remove", names(&verdict.edits.remove)),
            ("mode", mode.into()),
        ])
        .into())
    }

    /// A response body chunk (`end` on the last): the bytes to send on, or a
    /// reply object when the body cannot be passed on.
    #[wasm_bindgen(js_name = responseChunk)]
    pub fn response_chunk(&self, chunk: &[u8], end: bool) -> JsValue {
        let out = self.state.borrow_mut().response_chunk(&self.inner.engine, &self.inner.host, chunk, end);
        chunk_value(out)
    }

    /// The end of the exchange: `status` is what the client got. With the
    /// state in a Durable Object, returns the LLM token charge to send it
    /// (as a query), else `undefined`.
    pub fn log(&self, status: u16) -> Option<Vec<u8>> {
        self.state.borrow_mut().log(&self.inner.engine, &self.inner.host, status)
    }
}

/// A request between its two passes (returned by `planState`).
#[wasm_bindgen]
pub struct Pending {
    inner: Rc<Inner>,
    head: RequestHead,
    pending: RefCell<Option<PendingRequest>>,
}

#[wasm_bindgen]
impl Pending {
    /// Pass 2 with the object's answer (bytes), or `null`/`undefined` when it
    /// could not be asked: every state stage then fails closed (503). Returns
    /// what `onRequest` returns, never `"wait"`. Only the first call counts.
    pub fn resume(&self, answer: Option<Vec<u8>>) -> Result<JsValue, JsError> {
        let pending = self.pending.borrow_mut().take().ok_or_else(|| JsError::new("resume: already resumed"))?;
        let answer = answer.map_or_else(StateAnswer::unavailable, |bytes| StateAnswer::from_bytes(&bytes));
        let verdict = self.inner.engine.resume(&self.inner.host, &self.head, pending, &answer);
        Ok(verdict_value(&self.inner, &self.head, verdict))
    }
}

fn request_head(method: &str, url: &str, headers: &JsValue, client_ip: Option<String>) -> Result<RequestHead, JsError> {
    let (authority, path) = isolate::split_url(url).ok_or_else(|| JsError::new("onRequest: url is not absolute"))?;
    // The worker cannot know yet whether a body follows; assume one may for
    // methods that carry bodies (an empty body is then simply inspected).
    let body_follows = !matches!(method.to_ascii_uppercase().as_str(), "GET" | "HEAD" | "OPTIONS");
    Ok(RequestHead {
        body_follows,
        method: method.to_ascii_uppercase(),
        path,
        authority,
        headers: header_pairs(headers)?,
        downstream: client_ip,
    })
}

fn wait_value(inner: &Inner, provider: usize) -> JsValue {
    object(&[
        ("action", "wait".into()),
        ("provider", (provider as f64).into()),
        ("waitMs", (inner.engine.verifier().jwks_max_wait_ms(provider) as f64).into()),
    ])
    .into()
}

fn verdict_value(inner: &Rc<Inner>, head: &RequestHead, verdict: RequestVerdict) -> JsValue {
    match verdict {
        RequestVerdict::Forward { edits, ctx } => {
            let exchange = Exchange { inner: inner.clone(), state: RefCell::new(isolate::Exchange::new(ctx)) };
            let path = edits.set.iter().find(|(n, _)| n == ":path").map_or(head.path.as_str(), |(_, v)| v.as_str());
            let set: Vec<_> = edits.set.iter().filter(|(n, _)| !n.starts_with(':')).cloned().collect();
            let inspect = exchange.state.borrow().inspects_request_body();
            object(&[
                ("action", "forward".into()),
                ("path", path.into()),
                ("set", pairs(&set)),
                ("remove", names(&edits.remove)),
                ("inspectBody", inspect.into()),
                ("exchange", exchange.into()),
            ])
            .into()
        }
        RequestVerdict::Respond { reply, ctx } => {
            let exchange = Exchange { inner: inner.clone(), state: RefCell::new(isolate::Exchange::new(ctx)) };
            let out = reply_object(&reply);
            set(&out, "exchange", exchange.into());
            out.into()
        }
        RequestVerdict::WaitForKeys { provider } => wait_value(inner, provider),
    }
}

fn chunk_value(chunk: Chunk) -> JsValue {
    match chunk {
        Chunk::Emit(bytes) => Uint8Array::from(bytes.as_slice()).into(),
        Chunk::Reply(reply) => reply_object(&reply).into(),
    }
}

fn reply_object(reply: &LocalReply) -> Object {
    object(&[
        ("action", "respond".into()),
        ("status", reply.status.into()),
        ("headers", pairs(&reply.headers)),
        ("body", Uint8Array::from(reply.body.as_slice()).into()),
        ("details", reply.details.into()),
    ])
}

fn request_object(url: &str, request: &crate::host::OutboundRequest) -> Object {
    object(&[
        ("url", url.into()),
        ("method", request.method.as_str().into()),
        ("headers", pairs(&request.headers)),
        ("body", Uint8Array::from(request.body.as_slice()).into()),
        ("timeoutMs", (request.timeout_ms as f64).into()),
    ])
}

fn object(fields: &[(&str, JsValue)]) -> Object {
    let out = Object::new();
    for (name, value) in fields {
        set(&out, name, value.clone());
    }
    out
}

fn set(target: &Object, name: &str, value: JsValue) {
    // Reflect.set on a fresh plain object cannot fail.
    let _ = Reflect::set(target, &JsValue::from_str(name), &value);
}

fn pairs(list: &[(String, String)]) -> JsValue {
    let out = Array::new();
    for (name, value) in list {
        out.push(&Array::of2(&name.as_str().into(), &value.as_str().into()));
    }
    out.into()
}

fn names(list: &[String]) -> JsValue {
    list.iter().map(|n| JsValue::from_str(n)).collect::<Array>().into()
}

/// `[name, value]` pairs (names lower-cased) from an array of pairs, a
/// `Headers` (any iterable of pairs) or a plain object.
fn header_pairs(headers: &JsValue) -> Result<Vec<(String, String)>, JsError> {
    let bad = || JsError::new("headers must be an array of [name, value], a Headers or an object");
    let mut out = Vec::new();
    if headers.is_undefined() || headers.is_null() {
        return Ok(out);
    }
    let entries: Vec<JsValue> = match js_sys::try_iter(headers).map_err(|_| bad())? {
        Some(iter) => iter.collect::<Result<Vec<_>, _>>().map_err(|_| bad())?,
        None if headers.is_object() => Object::entries(headers.unchecked_ref()).iter().collect(),
        None => return Err(bad()),
    };
    for entry in entries {
        let pair: &Array = entry.dyn_ref().ok_or_else(bad)?;
        let (name, value) = (pair.get(0).as_string(), pair.get(1).as_string());
        match (name, value) {
            (Some(n), Some(v)) => out.push((n.to_ascii_lowercase(), v)),
            _ => return Err(bad()),
        }
    }
    Ok(out)
}
