//! proxy-wasm adapter (Envoy). The only file that names `proxy_wasm`.
//!
//! One wasm VM per Envoy worker thread. The root context compiles the policy in
//! `on_configure` (returning false on any error, so Envoy refuses the plugin:
//! fail closed), sends JWKS fetches and other background calls on tick, and
//! resumes requests parked while keys were missing. HTTP contexts translate the
//! engine's verdicts into host calls. Host statuses are handled, never unwrapped:
//! a panic would kill the VM and every request on the worker with it.

use super::{CallError, Cas, Host, LogLevel, OutboundRequest, StoreError};
use crate::config::Policy;
use crate::engine::{BodyAction, Engine, HeaderEdits, LocalReply, RequestContext, RequestHead, RequestVerdict};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, MapType, MetricType, Status};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, UNIX_EPOCH};

/// How often the root context wakes up (JWKS refresh, parked-request deadlines).
const TICK: Duration = Duration::from_millis(100);
/// Prefix of every metric: Envoy shows them as `wasmcustom.chatguard.*`.
const METRIC_PREFIX: &str = "chatguard.";

proxy_wasm::main! {{
    proxy_wasm::set_log_level(proxy_wasm::types::LogLevel::Trace);
    std::panic::set_hook(Box::new(|info| {
        // Never reached in normal operation (clippy denies unwrap/expect/panic);
        // if it is, say so loudly before the VM dies.
        let _ = hostcalls::log(proxy_wasm::types::LogLevel::Critical, &format!("chatguard panic: {info}"));
    }));
    proxy_wasm::set_root_context(|context_id| -> Box<dyn RootContext> { Box::new(Root::new(context_id)) });
}}

/// A request waiting for its provider's keys.
struct Parked {
    context_id: u32,
    provider: usize,
    deadline_ms: u64,
    head: RequestHead,
}

/// State shared by the root and HTTP contexts of one VM (single-threaded).
#[derive(Default)]
struct Vm {
    engine: RefCell<Option<Rc<Engine>>>,
    metrics: RefCell<HashMap<String, u32>>,
    parked: RefCell<Vec<Parked>>,
    /// Contexts of parked requests resolved by the root, picked up by their stream.
    resolved: RefCell<HashMap<u32, RequestContext>>,
    /// Outstanding JWKS fetches: call token -> provider.
    jwks_calls: RefCell<HashMap<u32, usize>>,
    /// Shared-data reads and writes since the VM started, and how many of
    /// them the metrics already show. Counted here and flushed on tick: a
    /// metric host call per shared-data call would double the stage's cost.
    store_calls: Cell<StoreCalls>,
    store_flushed: Cell<StoreCalls>,
}

#[derive(Default, Clone, Copy)]
struct StoreCalls {
    reads: u64,
    writes: u64,
}

/// [`Host`] over proxy-wasm host calls, for one context.
struct EnvoyHost<'a> {
    vm: &'a Vm,
    context_id: u32,
}

impl Host for EnvoyHost<'_> {
    fn now_ms(&self) -> u64 {
        hostcalls::get_current_time()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }

    fn log(&self, level: LogLevel, message: &str) {
        let level = match level {
            LogLevel::Trace => proxy_wasm::types::LogLevel::Trace,
            LogLevel::Debug => proxy_wasm::types::LogLevel::Debug,
            LogLevel::Info => proxy_wasm::types::LogLevel::Info,
            LogLevel::Warn => proxy_wasm::types::LogLevel::Warn,
            LogLevel::Error => proxy_wasm::types::LogLevel::Error,
            LogLevel::Critical => proxy_wasm::types::LogLevel::Critical,
        };
        let _ = hostcalls::log(level, &format!("[ctx={}] {message}", self.context_id));
    }

    fn shared_get(&self, key: &str) -> Result<Option<(Vec<u8>, Cas)>, StoreError> {
        let mut calls = self.vm.store_calls.get();
        calls.reads += 1;
        self.vm.store_calls.set(calls);
        match hostcalls::get_shared_data(key) {
            Ok((Some(value), Some(cas))) => Ok(Some((value, cas))),
            Ok((Some(value), None)) => Ok(Some((value, 0))),
            Ok((None, _)) => Ok(None),
            Err(Status::NotFound) => Ok(None),
            Err(_) => Err(StoreError::Unavailable),
        }
    }

    fn shared_set(&self, key: &str, value: &[u8], cas: Option<Cas>) -> Result<(), StoreError> {
        let mut calls = self.vm.store_calls.get();
        calls.writes += 1;
        self.vm.store_calls.set(calls);
        match hostcalls::set_shared_data(key, Some(value), cas) {
            Ok(()) => Ok(()),
            Err(Status::CasMismatch) => Err(StoreError::CasMismatch),
            Err(_) => Err(StoreError::Unavailable),
        }
    }

    fn http_call(&self, request: &OutboundRequest) -> Result<u32, CallError> {
        let mut headers: Vec<(&str, &str)> = vec![
            (":method", request.method.as_str()),
            (":path", request.path.as_str()),
            (":authority", request.authority.as_str()),
        ];
        headers.extend(request.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let body = (!request.body.is_empty()).then_some(request.body.as_slice());
        hostcalls::dispatch_http_call(
            &request.upstream,
            headers,
            body,
            vec![],
            Duration::from_millis(request.timeout_ms),
        )
        .map_err(|status| match status {
            Status::NotFound | Status::BadArgument => CallError::UnknownUpstream,
            _ => CallError::Refused,
        })
    }

    fn count(&self, metric: &str, by: u64) {
        let id = {
            let mut metrics = self.vm.metrics.borrow_mut();
            match metrics.get(metric) {
                Some(id) => Some(*id),
                None => match hostcalls::define_metric(MetricType::Counter, &metric_name(metric)) {
                    Ok(id) => {
                        metrics.insert(metric.to_string(), id);
                        Some(id)
                    }
                    Err(_) => None,
                },
            }
        };
        if let Some(id) = id {
            let _ = hostcalls::increment_metric(id, by as i64);
        }
    }
}

/// `chatguard.<name>`: some stages name their metrics with the prefix already.
fn metric_name(metric: &str) -> String {
    if metric.starts_with(METRIC_PREFIX) {
        metric.to_string()
    } else {
        format!("{METRIC_PREFIX}{metric}")
    }
}

struct Root {
    context_id: u32,
    vm: Rc<Vm>,
}

impl Root {
    fn new(context_id: u32) -> Self {
        Root { context_id, vm: Rc::new(Vm::default()) }
    }

    fn host(&self) -> EnvoyHost<'_> {
        EnvoyHost { vm: &self.vm, context_id: self.context_id }
    }

    fn engine(&self) -> Option<Rc<Engine>> {
        self.vm.engine.borrow().clone()
    }

    /// Moves the shared-data call counts into the `shared_data.reads` /
    /// `shared_data.writes` counters (what `make bench` divides by requests).
    fn flush_store_calls(&self) {
        let (now, before) = (self.vm.store_calls.get(), self.vm.store_flushed.get());
        let host = self.host();
        if now.reads > before.reads {
            host.count("shared_data.reads", now.reads - before.reads);
        }
        if now.writes > before.writes {
            host.count("shared_data.writes", now.writes - before.writes);
        }
        self.vm.store_flushed.set(now);
    }

    fn send_due_jwks_fetches(&self, engine: &Engine) {
        let host = self.host();
        let now = host.now_ms();
        for (provider, request) in engine.jwks_due(now) {
            match host.http_call(&request) {
                Ok(token) => {
                    self.vm.jwks_calls.borrow_mut().insert(token, provider);
                    engine.verifier().jwks_started(provider, now, true);
                }
                Err(e) => {
                    engine.verifier().jwks_started(provider, now, false);
                    host.count("jwks_fetches.failed", 1);
                    host.log(
                        LogLevel::Warn,
                        &format!(
                            "jwks fetch not sent: provider={} cluster={}: {e:?} (is the cluster defined?)",
                            engine.verifier().provider_name(provider),
                            request.upstream
                        ),
                    );
                }
            }
        }
    }

    /// Re-evaluates parked requests for `provider` (or, with `None`, those past
    /// their deadline) without waiting, and answers or resumes each.
    fn resolve_parked(&self, engine: &Engine, provider: Option<usize>) {
        let now = self.host().now_ms();
        let ready: Vec<Parked> = {
            let mut parked = self.vm.parked.borrow_mut();
            let (ready, waiting): (Vec<_>, Vec<_>) = parked.drain(..).partition(|p| match provider {
                Some(done) => p.provider == done,
                None => now >= p.deadline_ms,
            });
            *parked = waiting;
            ready
        };
        for p in ready {
            if hostcalls::set_effective_context(p.context_id).is_err() {
                continue; // the stream is gone
            }
            let host = EnvoyHost { vm: &self.vm, context_id: p.context_id };
            let verdict = engine.on_request_headers(&host, &p.head, false);
            match apply_verdict(&host, verdict) {
                Applied::Forwarded(ctx) => {
                    self.vm.resolved.borrow_mut().insert(p.context_id, ctx);
                    let _ = hostcalls::resume_http_request();
                }
                Applied::Replied(ctx) => {
                    self.vm.resolved.borrow_mut().insert(p.context_id, ctx);
                }
                Applied::Parked(_) => {
                    // Unreachable with may_wait == false; fail closed all the same.
                    let _ = send_reply(&crate::engine::unauthorized(
                        crate::jwt::AuthnFailure::JwksUnavailable,
                        p.head.request_id(),
                    ));
                }
            }
        }
        let _ = hostcalls::set_effective_context(self.context_id);
    }
}

impl Context for Root {
    fn on_http_call_response(&mut self, token_id: u32, num_headers: usize, body_size: usize, _num_trailers: usize) {
        let Some(engine) = self.engine() else { return };
        // Envoy reports a failed call (reset, timeout, no host) with no headers.
        let status = if num_headers == 0 {
            None
        } else {
            hostcalls::get_map_value(MapType::HttpCallResponseHeaders, ":status")
                .ok()
                .flatten()
                .and_then(|s| s.parse::<u16>().ok())
        };
        if engine.is_audit_call(token_id) {
            engine.audit_call_finished(&self.host(), token_id, status);
            return;
        }
        let provider = self.vm.jwks_calls.borrow_mut().remove(&token_id);
        if let Some(provider) = provider {
            let body = hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, body_size)
                .ok()
                .flatten()
                .unwrap_or_default();
            engine.jwks_finished(&self.host(), provider, status, &body);
            self.resolve_parked(&engine, Some(provider));
        }
    }
}

impl RootContext for Root {
    fn on_vm_start(&mut self, _vm_configuration_size: usize) -> bool {
        true
    }

    fn on_configure(&mut self, plugin_configuration_size: usize) -> bool {
        let config = hostcalls::get_buffer(BufferType::PluginConfiguration, 0, plugin_configuration_size)
            .ok()
            .flatten()
            .filter(|c| !c.iter().all(u8::is_ascii_whitespace));
        let host = self.host();
        // Distinct per worker: audit record ids and slot hashing.
        let seed = hostcalls::get_current_time()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
            ^ (u64::from(self.context_id) << 32);
        let source: &[u8] = config.as_deref().unwrap_or(crate::engine::DEFAULT_POLICY);
        let compiled = Policy::from_json(source).and_then(|p| Engine::compile_seeded(&p, source, seed));
        match compiled {
            Ok(engine) => {
                host.log(
                    LogLevel::Info,
                    &format!(
                        "chatguard {} loaded {} policy {}",
                        crate::VERSION,
                        if config.is_some() { "configured" } else { "default" },
                        engine.policy_hash()
                    ),
                );
                engine.announce(&host);
                let tick = engine.tick_period_ms().map(Duration::from_millis).unwrap_or(TICK).min(TICK);
                *self.vm.engine.borrow_mut() = Some(Rc::new(engine));
                if hostcalls::set_tick_period(tick).is_err() {
                    host.log(LogLevel::Error, "cannot set tick period: JWKS refresh will not run");
                }
                true
            }
            Err(e) => {
                host.log(LogLevel::Critical, &format!("chatguard policy refused: {e}"));
                false
            }
        }
    }

    fn on_tick(&mut self) {
        let Some(engine) = self.engine() else { return };
        self.flush_store_calls();
        engine.on_tick(&self.host());
        self.send_due_jwks_fetches(&engine);
        if !self.vm.parked.borrow().is_empty() {
            self.resolve_parked(&engine, None);
        }
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Stream {
            context_id,
            vm: self.vm.clone(),
            engine: self.engine(),
            ctx: None,
            replied: false,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// One HTTP request/response.
struct Stream {
    context_id: u32,
    vm: Rc<Vm>,
    engine: Option<Rc<Engine>>,
    ctx: Option<RequestContext>,
    /// A local reply was sent: every later callback stops the stream.
    replied: bool,
}

impl Stream {
    fn host(&self) -> EnvoyHost<'_> {
        EnvoyHost { vm: &self.vm, context_id: self.context_id }
    }

    fn request_head(&self, end_of_stream: bool) -> RequestHead {
        let headers = hostcalls::get_map(MapType::HttpRequestHeaders).unwrap_or_default();
        let pseudo = |name: &str| {
            headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone()).unwrap_or_default()
        };
        let downstream = hostcalls::get_property(vec!["source", "address"])
            .ok()
            .flatten()
            .and_then(|b| String::from_utf8(b).ok());
        RequestHead {
            method: pseudo(":method"),
            path: pseudo(":path"),
            authority: pseudo(":authority"),
            downstream,
            headers,
            body_follows: !end_of_stream,
        }
    }

    /// Picks up the result of a request the root context resolved after parking.
    fn adopt_resolved(&mut self) {
        if let Some(ctx) = self.vm.resolved.borrow_mut().remove(&self.context_id) {
            self.replied = ctx.authn_failure.is_some();
            self.ctx = Some(ctx);
        }
    }
}

impl Context for Stream {}

impl HttpContext for Stream {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let Some(engine) = self.engine.clone() else {
            // No policy compiled: Envoy should have refused the plugin; refuse the request.
            let _ = send_reply(&internal_error());
            self.replied = true;
            return Action::Pause;
        };
        let head = self.request_head(end_of_stream);
        let host = self.host();
        let verdict = engine.on_request_headers(&host, &head, true);
        match apply_verdict(&host, verdict) {
            Applied::Forwarded(ctx) => {
                self.ctx = Some(ctx);
                Action::Continue
            }
            Applied::Replied(ctx) => {
                self.ctx = Some(ctx);
                self.replied = true;
                Action::Pause
            }
            Applied::Parked(provider) => {
                let wait = engine.verifier().jwks_max_wait_ms(provider);
                let deadline_ms = host.now_ms().saturating_add(wait);
                self.vm.parked.borrow_mut().push(Parked { context_id: self.context_id, provider, deadline_ms, head });
                Action::Pause
            }
        }
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        self.adopt_resolved();
        if self.replied {
            return Action::Pause;
        }
        let (Some(engine), Some(mut ctx)) = (self.engine.clone(), self.ctx.take()) else { return Action::Continue };
        if ctx.request_body.is_none() {
            self.ctx = Some(ctx);
            return Action::Continue;
        }
        if let Some(action) = engine.request_body_by_size(&self.host(), &mut ctx, body_size, end_of_stream) {
            self.ctx = Some(ctx);
            return self.apply_body_action(BufferType::HttpRequestBody, body_size, action);
        }
        let body = hostcalls::get_buffer(BufferType::HttpRequestBody, 0, body_size).ok().flatten().unwrap_or_default();
        let action = engine.on_request_body(&self.host(), &mut ctx, &body, end_of_stream);
        self.ctx = Some(ctx);
        self.apply_body_action(BufferType::HttpRequestBody, body_size, action)
    }

    /// HTTP/2 bodies that end with trailers never see `end_of_stream` in the body
    /// callback: the buffered body is finished here, or the request refused.
    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        self.adopt_resolved();
        if self.replied {
            return Action::Pause;
        }
        let (Some(engine), Some(mut ctx)) = (self.engine.clone(), self.ctx.take()) else { return Action::Continue };
        if ctx.request_body.is_none() {
            self.ctx = Some(ctx);
            return Action::Continue;
        }
        let Ok(Some(body)) = hostcalls::get_buffer(BufferType::HttpRequestBody, 0, usize::MAX >> 1) else {
            self.ctx = Some(ctx);
            self.host().log(LogLevel::Error, "cannot read the buffered body at trailers: refusing");
            let _ = send_reply(&crate::engine::internal(None));
            self.replied = true;
            return Action::Pause;
        };
        let action = engine.on_request_body(&self.host(), &mut ctx, &body, true);
        self.ctx = Some(ctx);
        self.apply_body_action(BufferType::HttpRequestBody, body.len(), action)
    }

    fn on_http_response_trailers(&mut self, _num_trailers: usize) -> Action {
        if self.replied {
            return Action::Continue;
        }
        let (Some(engine), Some(mut ctx)) = (self.engine.clone(), self.ctx.take()) else { return Action::Continue };
        if matches!(ctx.response, crate::engine::ResponsePlan::Pass) {
            self.ctx = Some(ctx);
            return Action::Continue;
        }
        // Finish the plan: a buffered body is processed whole; a stream's held
        // tail cannot be appended after the last chunk here, so it is dropped
        // (never released unscanned).
        let body = hostcalls::get_buffer(BufferType::HttpResponseBody, 0, usize::MAX >> 1).ok().flatten().unwrap_or_default();
        let action = engine.on_response_body(&self.host(), &mut ctx, &body, true);
        self.ctx = Some(ctx);
        match action {
            BodyAction::Replace(bytes) if !matches!(self.ctx.as_ref().map(|c| &c.response), Some(crate::engine::ResponsePlan::Stream { .. })) => {
                self.apply_body_action(BufferType::HttpResponseBody, body.len(), BodyAction::Replace(bytes))
            }
            BodyAction::Reply(reply) => self.apply_body_action(BufferType::HttpResponseBody, body.len(), BodyAction::Reply(reply)),
            _ => Action::Continue,
        }
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        self.adopt_resolved();
        if self.replied {
            return Action::Continue;
        }
        let (Some(engine), Some(mut ctx)) = (self.engine.clone(), self.ctx.take()) else { return Action::Continue };
        let headers = hostcalls::get_map(MapType::HttpResponseHeaders).unwrap_or_default();
        let verdict = engine.on_response_headers(&self.host(), &mut ctx, &headers);
        self.ctx = Some(ctx);
        for name in &verdict.edits.remove {
            let _ = hostcalls::set_map_value(MapType::HttpResponseHeaders, name, None);
        }
        for (name, value) in &verdict.edits.set {
            let _ = hostcalls::set_map_value(MapType::HttpResponseHeaders, name, Some(value));
        }
        // Never pause here, whatever `verdict.pause` asks: proxy-wasm turns a
        // paused headers callback into StopAllIterationAndWatermark, so the body
        // callbacks would never come and the response would hang. The headers
        // go out now; a body that then cannot be decoded resets the stream.
        Action::Continue
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if self.replied {
            return Action::Continue;
        }
        let (Some(engine), Some(mut ctx)) = (self.engine.clone(), self.ctx.take()) else { return Action::Continue };
        if let Some(action) = engine.response_body_by_size(&ctx, body_size, end_of_stream) {
            self.ctx = Some(ctx);
            return self.apply_body_action(BufferType::HttpResponseBody, body_size, action);
        }
        let body = hostcalls::get_buffer(BufferType::HttpResponseBody, 0, body_size).ok().flatten().unwrap_or_default();
        let action = engine.on_response_body(&self.host(), &mut ctx, &body, end_of_stream);
        self.ctx = Some(ctx);
        self.apply_body_action(BufferType::HttpResponseBody, body_size, action)
    }

    fn on_log(&mut self) {
        let id = self.context_id;
        self.vm.parked.borrow_mut().retain(|p| p.context_id != id);
        self.vm.resolved.borrow_mut().remove(&id);
        if let (Some(engine), Some(ctx)) = (&self.engine, &self.ctx) {
            let status = hostcalls::get_property(vec!["response", "code"])
                .ok()
                .flatten()
                .and_then(|b| b.get(..8).and_then(|b| b.try_into().ok()).map(u64::from_le_bytes))
                .unwrap_or(0);
            engine.on_log(&self.host(), ctx, status as u16);
        }
    }
}

impl Stream {
    /// Carries out a body verdict on the current body buffer.
    fn apply_body_action(&mut self, buffer: BufferType, body_size: usize, action: BodyAction) -> Action {
        match action {
            BodyAction::Continue => Action::Continue,
            BodyAction::Buffer => Action::Pause,
            BodyAction::Replace(bytes) => match hostcalls::set_buffer(buffer, 0, body_size, &bytes) {
                Ok(()) => Action::Continue,
                Err(status) => {
                    // The unredacted bytes must not go on: fail closed.
                    self.host().log(LogLevel::Error, &format!("cannot replace body ({status:?}): refusing"));
                    let _ = send_reply(&crate::engine::internal(None));
                    self.replied = true;
                    Action::Pause
                }
            },
            BodyAction::Reply(reply) => {
                let _ = send_reply(&reply);
                self.replied = true;
                Action::Pause
            }
        }
    }
}

enum Applied {
    Forwarded(RequestContext),
    Replied(RequestContext),
    Parked(usize),
}

/// Carries out a verdict on the effective context.
fn apply_verdict(host: &EnvoyHost<'_>, verdict: RequestVerdict) -> Applied {
    match verdict {
        RequestVerdict::Forward { edits, ctx } => match apply_edits(&edits) {
            Ok(()) => Applied::Forwarded(ctx),
            Err(status) => {
                // A header we must strip (token, forged identity) could not be:
                // forwarding would leak or trust it. Fail closed.
                host.log(LogLevel::Error, &format!("cannot edit request headers ({status:?}): refusing request"));
                let _ = send_reply(&internal_error());
                Applied::Replied(ctx)
            }
        },
        RequestVerdict::Respond { reply, ctx } => {
            if let Err(status) = send_reply(&reply) {
                host.log(LogLevel::Error, &format!("cannot send local reply ({status:?})"));
            }
            Applied::Replied(ctx)
        }
        RequestVerdict::WaitForKeys { provider } => Applied::Parked(provider),
    }
}

fn apply_edits(edits: &HeaderEdits) -> Result<(), Status> {
    for name in &edits.remove {
        hostcalls::set_map_value(MapType::HttpRequestHeaders, name, None)?;
    }
    for (name, value) in &edits.set {
        hostcalls::set_map_value(MapType::HttpRequestHeaders, name, Some(value))?;
    }
    Ok(())
}

fn send_reply(reply: &LocalReply) -> Result<(), Status> {
    let headers: Vec<(&str, &str)> = reply.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    hostcalls::send_http_response(reply.status as u32, headers, Some(&reply.body))
}

fn internal_error() -> LocalReply {
    crate::engine::internal(None)
}
