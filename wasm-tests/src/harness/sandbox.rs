//! One instance of a plugin with its own `Store`: Envoy's view of one worker
//! thread running the filter. It owns the lifecycle (start, configure, tick,
//! call responses) and drives the stream hooks on behalf of [`Stream`].

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use wasmtime::{Instance, Store, WasmParams, WasmResults};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::WasiCtxBuilder;

use super::abi::{self, Action, LogLevel, Pairs, StreamType};
use super::plugin::Plugin;
use super::shared::{MetricValue, SharedData};
use super::state::{
    CallResponse, CallState, Clock, HostState, HttpCall, LogEntry, PropertyPath, Resume, StreamState,
};
use super::stream::Stream;
use super::HarnessError;

/// How much a module may print to stdout/stderr over a sandbox's life.
const STDIO_CAPACITY: usize = 16 << 20;

/// Settings for a [`Sandbox`] before it starts.
#[derive(Debug)]
pub struct SandboxBuilder<'p> {
    plugin: &'p Plugin,
    vm_config: Vec<u8>,
    plugin_config: Vec<u8>,
    shared: Option<SharedData>,
    properties: BTreeMap<PropertyPath, Vec<u8>>,
    time: Option<SystemTime>,
    log_level: LogLevel,
    vm_id: String,
    upstreams: Option<Vec<String>>,
    local_reply_through_filter: bool,
    env: Vec<(String, String)>,
}

impl<'p> SandboxBuilder<'p> {
    fn new(plugin: &'p Plugin) -> Self {
        let mut properties = BTreeMap::new();
        properties.insert(vec!["plugin_name".to_string()], b"test_plugin".to_vec());
        properties.insert(vec!["plugin_root_id".to_string()], Vec::new());
        properties.insert(vec!["plugin_vm_id".to_string()], Vec::new());
        SandboxBuilder {
            plugin,
            vm_config: Vec::new(),
            plugin_config: Vec::new(),
            shared: None,
            properties,
            time: None,
            log_level: LogLevel::Trace,
            vm_id: String::new(),
            upstreams: None,
            local_reply_through_filter: true,
            env: Vec::new(),
        }
    }

    /// The plugin `configuration` (what `proxy_on_configure` reads).
    pub fn config(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.plugin_config = bytes.into();
        self
    }

    /// The VM `configuration` (what `proxy_on_vm_start` reads).
    pub fn vm_config(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.vm_config = bytes.into();
        self
    }

    /// Shares shared data, queues and metrics with other sandboxes (workers).
    pub fn shared(mut self, shared: SharedData) -> Self {
        self.shared = Some(shared);
        self
    }

    /// A property every context sees, e.g. `(&["plugin_name"], b"chatguard")`.
    pub fn property(mut self, path: &[&str], value: impl Into<Vec<u8>>) -> Self {
        self.properties.insert(path_of(path), value.into());
        self
    }

    /// Sets the `plugin_name` property.
    pub fn plugin_name(self, name: &str) -> Self {
        self.property(&["plugin_name"], name.as_bytes().to_vec())
    }

    /// The clock's start (default 2025-01-01T00:00:00Z).
    pub fn time(mut self, time: SystemTime) -> Self {
        self.time = Some(time);
        self
    }

    /// What `proxy_get_log_level` answers (default Trace; every `proxy_log`
    /// is recorded whatever the level).
    pub fn log_level(mut self, level: LogLevel) -> Self {
        self.log_level = level;
        self
    }

    /// The VM id used for shared queues (default empty, as in Envoy).
    pub fn vm_id(mut self, vm_id: &str) -> Self {
        self.vm_id = vm_id.to_string();
        self
    }

    /// Restricts `proxy_http_call` to these clusters (others: BadArgument, as
    /// Envoy answers for an unknown cluster). Default: any name is accepted.
    pub fn upstreams(mut self, names: &[&str]) -> Self {
        self.upstreams = Some(names.iter().map(|s| s.to_string()).collect());
        self
    }

    /// Whether a local response passes through the plugin's own response hooks
    /// (default true: Envoy runs its local replies through the encoder filters,
    /// the sending filter included).
    pub fn local_reply_through_filter(mut self, yes: bool) -> Self {
        self.local_reply_through_filter = yes;
        self
    }

    /// A WASI environment variable.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// Instantiates, runs `_initialize` and creates the root context, but does
    /// not call `proxy_on_vm_start` / `proxy_on_configure`.
    pub fn instantiate(self) -> Result<Sandbox, HarnessError> {
        let clock = Clock::new();
        if let Some(time) = self.time {
            clock.set(time);
        }
        let stdout = MemoryOutputPipe::new(STDIO_CAPACITY);
        let stderr = MemoryOutputPipe::new(STDIO_CAPACITY);
        let wasi = WasiCtxBuilder::new()
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .wall_clock(clock.clone())
            .monotonic_clock(clock.clone())
            .envs(&self.env)
            .build_p1();
        let root_id = 1;
        let state = HostState {
            wasi,
            stdout,
            stderr,
            stdout_read: 0,
            stderr_read: 0,
            memory: None,
            allocate: None,
            clock,
            log_level: self.log_level,
            root_id,
            effective: root_id,
            streams: BTreeMap::new(),
            vm_config: self.vm_config,
            plugin_config: self.plugin_config,
            in_vm_start: false,
            in_configure: false,
            call_response: None,
            logs: Vec::new(),
            tick_period_ms: 0,
            shared: self.shared.unwrap_or_default(),
            vm_id: self.vm_id,
            properties: self.properties,
            calls: Vec::new(),
            next_token: 1,
            known_upstreams: self.upstreams,
            resumes: Vec::new(),
            unimplemented: Vec::new(),
            local_reply_through_filter: self.local_reply_through_filter,
        };
        let mut store = Store::new(self.plugin.engine(), state);
        let instance = self
            .plugin
            .pre()
            .instantiate(&mut store)
            .map_err(|e| HarnessError::Trap {
                during: "instantiation".to_string(),
                message: format!("{e:#}"),
                recent_logs: Vec::new(),
            })?;
        let memory = instance.get_memory(&mut store, "memory");
        let allocate = ["proxy_on_memory_allocate", "malloc"]
            .iter()
            .find_map(|name| instance.get_typed_func::<i32, i32>(&mut store, name).ok());
        store.data_mut().memory = memory;
        store.data_mut().allocate = allocate;
        if instance.get_func(&mut store, "proxy_abi_version_0_2_1").is_none() {
            let found = self
                .plugin
                .exports()
                .into_iter()
                .filter(|name| name.starts_with("proxy_abi_version_"))
                .collect();
            return Err(HarnessError::AbiVersion { found });
        }
        let mut sandbox = Sandbox {
            store,
            instance,
            root_id,
            next_id: root_id + 1,
            guest_time: Duration::ZERO,
        };
        if sandbox.has_export("_initialize") {
            sandbox.call::<(), ()>("_initialize", ())?;
            if sandbox.has_export("main") {
                sandbox.call::<(i32, i32), i32>("main", (0, 0))?;
            }
        } else if sandbox.has_export("_start") {
            sandbox.call::<(), ()>("_start", ())?;
        }
        sandbox.call::<(i32, i32), ()>("proxy_on_context_create", (root_id as i32, 0))?;
        Ok(sandbox)
    }

    /// Instantiates, then `proxy_on_vm_start` and `proxy_on_configure`; a
    /// `false` from either is an error carrying the module's logs.
    pub fn start(self) -> Result<Sandbox, HarnessError> {
        let mut sandbox = self.instantiate()?;
        if !sandbox.vm_start()? {
            return Err(HarnessError::VmStartRefused {
                logs: sandbox.logs(),
            });
        }
        let config = sandbox.store.data().plugin_config.clone();
        if !sandbox.configure(config)? {
            return Err(HarnessError::ConfigureRefused {
                logs: sandbox.logs(),
            });
        }
        Ok(sandbox)
    }
}

fn path_of(path: &[&str]) -> PropertyPath {
    path.iter().map(|s| s.to_string()).collect()
}

/// Arguments of a stream hook after the context id.
#[derive(Debug, Clone, Copy)]
pub(crate) enum HookArgs {
    /// `(size_or_count, end_of_stream)`.
    SizeEos(usize, bool),
    /// `(count)` (trailers).
    Count(usize),
}

/// A running plugin instance; see the module docs.
pub struct Sandbox {
    store: Store<HostState>,
    instance: Instance,
    root_id: u32,
    next_id: u32,
    /// Wall time spent inside guest calls (with the host functions they call).
    guest_time: Duration,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox").field("root_id", &self.root_id).finish_non_exhaustive()
    }
}

impl Sandbox {
    /// Wall time spent inside the module's exports so far, host functions they
    /// call included (what a proxy's worker spends in the filter), harness
    /// bookkeeping excluded: the benchmark's "inside wasm" figure.
    pub fn guest_time(&self) -> Duration {
        self.guest_time
    }

    /// Settings first, then [`SandboxBuilder::start`].
    pub fn builder(plugin: &Plugin) -> SandboxBuilder<'_> {
        SandboxBuilder::new(plugin)
    }

    /// A started sandbox with the given plugin configuration.
    pub fn new(plugin: &Plugin, config: impl Into<Vec<u8>>) -> Result<Self, HarnessError> {
        Self::builder(plugin).config(config).start()
    }

    /// Like [`Sandbox::new`], sharing shared data, queues and metrics with
    /// other sandboxes built with clones of `shared` (two workers of one Envoy).
    pub fn new_with_shared(
        plugin: &Plugin,
        config: impl Into<Vec<u8>>,
        shared: SharedData,
    ) -> Result<Self, HarnessError> {
        Self::builder(plugin).config(config).shared(shared).start()
    }

    // ---- lifecycle ---------------------------------------------------------

    /// Calls `proxy_on_vm_start` with the VM configuration; its answer.
    pub fn vm_start(&mut self) -> Result<bool, HarnessError> {
        let size = self.store.data().vm_config.len() as i32;
        self.store.data_mut().effective = self.root_id;
        self.store.data_mut().in_vm_start = true;
        let result = self.call::<(i32, i32), i32>("proxy_on_vm_start", (self.root_id as i32, size));
        self.store.data_mut().in_vm_start = false;
        Ok(result?.map_or(true, |ok| ok != 0))
    }

    /// Calls `proxy_on_configure` with `config` (Envoy does this for each new
    /// plugin configuration); `false` means the plugin refused it.
    pub fn configure(&mut self, config: impl Into<Vec<u8>>) -> Result<bool, HarnessError> {
        let config = config.into();
        let size = config.len() as i32;
        self.store.data_mut().plugin_config = config;
        self.store.data_mut().effective = self.root_id;
        self.store.data_mut().in_configure = true;
        let result = self.call::<(i32, i32), i32>("proxy_on_configure", (self.root_id as i32, size));
        self.store.data_mut().in_configure = false;
        let ok = result?.map_or(true, |ok| ok != 0);
        self.settle()?;
        Ok(ok)
    }

    /// The root context id.
    pub fn root_id(&self) -> u32 {
        self.root_id
    }

    /// The period set by `proxy_set_tick_period_milliseconds`, if any.
    pub fn tick_period(&self) -> Option<Duration> {
        match self.store.data().tick_period_ms {
            0 => None,
            ms => Some(Duration::from_millis(u64::from(ms))),
        }
    }

    /// Calls `proxy_on_tick` once; an error if the plugin never armed the timer.
    pub fn tick(&mut self) -> Result<(), HarnessError> {
        if self.tick_period().is_none() {
            return Err(HarnessError::TickNotArmed);
        }
        self.store.data_mut().effective = self.root_id;
        self.call::<(i32,), ()>("proxy_on_tick", (self.root_id as i32,))?;
        self.settle()
    }

    /// Advances the clock by `by`, calling `proxy_on_tick` at each period
    /// boundary on the way (as Envoy's timer would); returns how many ticks ran.
    pub fn advance_ticking(&mut self, by: Duration) -> Result<u32, HarnessError> {
        let mut left = by;
        let mut ticks = 0;
        while let Some(period) = self.tick_period() {
            if left < period {
                break;
            }
            self.advance(period);
            left -= period;
            self.tick()?;
            ticks += 1;
        }
        self.advance(left);
        Ok(ticks)
    }

    /// Calls `proxy_on_queue_ready(root, queue_id)` (the harness never does it
    /// by itself).
    pub fn queue_ready(&mut self, queue_id: u32) -> Result<(), HarnessError> {
        self.store.data_mut().effective = self.root_id;
        self.call::<(i32, i32), ()>("proxy_on_queue_ready", (self.root_id as i32, queue_id as i32))?;
        self.settle()
    }

    // ---- clock ---------------------------------------------------------------

    /// The clock both the proxy-wasm and the WASI clocks read.
    pub fn now(&self) -> SystemTime {
        self.store.data().clock.now()
    }

    /// Sets the clock.
    pub fn set_time(&mut self, time: SystemTime) {
        self.store.data().clock.set(time);
    }

    /// Moves the clock forward without ticking.
    pub fn advance(&mut self, by: Duration) {
        self.store.data().clock.advance(by);
    }

    // ---- streams -----------------------------------------------------------

    /// Creates an HTTP stream context (`proxy_on_context_create(id, root)`).
    pub fn new_stream(&mut self) -> Result<u32, HarnessError> {
        let id = self.next_id;
        self.next_id += 1;
        let state = self.store.data_mut();
        state.streams.insert(id, StreamState::default());
        state.effective = id;
        self.call::<(i32, i32), ()>("proxy_on_context_create", (id as i32, self.root_id as i32))?;
        self.settle()?;
        Ok(id)
    }

    /// A new stream, as a handle.
    pub fn http(&mut self) -> Result<Stream<'_>, HarnessError> {
        let id = self.new_stream()?;
        Ok(Stream::new(self, id))
    }

    /// A handle on an existing stream.
    pub fn stream(&mut self, id: u32) -> Stream<'_> {
        Stream::new(self, id)
    }

    /// Sets a property seen only by stream `id` (e.g. `["request", "id"]`).
    pub fn set_stream_property(&mut self, id: u32, path: &[&str], value: impl Into<Vec<u8>>) -> Result<(), HarnessError> {
        let stream = self.stream_state_mut(id)?;
        stream.properties.insert(path_of(path), value.into());
        Ok(())
    }

    /// Sets a property every context sees.
    pub fn set_property(&mut self, path: &[&str], value: impl Into<Vec<u8>>) {
        self.store.data_mut().properties.insert(path_of(path), value.into());
    }

    pub(crate) fn stream_state(&self, id: u32) -> Result<&StreamState, HarnessError> {
        self.store.data().streams.get(&id).ok_or(HarnessError::UnknownStream(id))
    }

    pub(crate) fn stream_state_mut(&mut self, id: u32) -> Result<&mut StreamState, HarnessError> {
        self.store.data_mut().streams.get_mut(&id).ok_or(HarnessError::UnknownStream(id))
    }

    /// Delivers headers (`trailers == false`) or trailers of one half.
    pub(crate) fn deliver_fields(
        &mut self,
        id: u32,
        half: StreamType,
        fields: Pairs,
        end_of_stream: bool,
        trailers: bool,
    ) -> Result<Action, HarnessError> {
        let stream = self.stream_state_mut(id)?;
        if stream.is_closed(half) {
            return Ok(Action::NotDelivered);
        }
        if half == StreamType::HttpResponse
            && !trailers
            && stream.request.forwarded_headers.is_none()
            && stream.local_responses.is_empty()
        {
            return Err(HarnessError::ResponseBeforeRequest(id));
        }
        let count = fields.len();
        let lowered: Pairs = fields.into_iter().map(|(k, v)| (k.to_ascii_lowercase(), v)).collect();
        let Some(h) = stream.half_mut(half) else {
            return Err(HarnessError::UnknownStream(id));
        };
        if trailers {
            h.trailers = lowered;
            h.trailers_received = true;
            h.end_of_stream = true;
        } else {
            h.headers = lowered;
            h.headers_received = true;
            h.end_of_stream = end_of_stream;
        }
        let (hook, args) = match (half, trailers) {
            (StreamType::HttpRequest, false) => ("proxy_on_request_headers", HookArgs::SizeEos(count, end_of_stream)),
            (StreamType::HttpRequest, true) => ("proxy_on_request_trailers", HookArgs::Count(count)),
            (_, false) => ("proxy_on_response_headers", HookArgs::SizeEos(count, end_of_stream)),
            (_, true) => ("proxy_on_response_trailers", HookArgs::Count(count)),
        };
        self.hook(id, half, hook, args)
    }

    /// Delivers one body chunk of one half.
    pub(crate) fn deliver_body(
        &mut self,
        id: u32,
        half: StreamType,
        chunk: &[u8],
        end_of_stream: bool,
    ) -> Result<Action, HarnessError> {
        let stream = self.stream_state_mut(id)?;
        if stream.is_closed(half) {
            return Ok(Action::NotDelivered);
        }
        let Some(h) = stream.half_mut(half) else {
            return Err(HarnessError::UnknownStream(id));
        };
        h.body.extend_from_slice(chunk);
        h.end_of_stream = end_of_stream;
        // Envoy passes the size of everything buffered so far, not the chunk.
        let size = h.body.len();
        let hook = match half {
            StreamType::HttpRequest => "proxy_on_request_body",
            _ => "proxy_on_response_body",
        };
        self.hook(id, half, hook, HookArgs::SizeEos(size, end_of_stream))
    }

    /// Runs one stream hook and applies Envoy's iteration rules to its answer.
    pub(crate) fn hook(
        &mut self,
        id: u32,
        half: StreamType,
        name: &str,
        args: HookArgs,
    ) -> Result<Action, HarnessError> {
        self.store.data_mut().effective = id;
        self.stream_state_mut(id)?.in_hook = Some(half);
        let raw = match args {
            HookArgs::SizeEos(size, eos) => {
                self.call::<(i32, i32, i32), i32>(name, (id as i32, size as i32, i32::from(eos)))
            }
            HookArgs::Count(count) => self.call::<(i32, i32), i32>(name, (id as i32, count as i32)),
        };
        self.stream_state_mut(id)?.in_hook = None;
        let action = match raw? {
            None => Action::Continue,
            Some(value) => Action::from_raw(value).ok_or(HarnessError::BadAction {
                hook: name.to_string(),
                value,
            })?,
        };
        let stream = self.stream_state_mut(id)?;
        // After a local response Envoy stops iteration whatever the hook says.
        let replying = stream.local_pending;
        if let Some(h) = stream.half_mut(half) {
            let go = action == Action::Continue || h.resume_requested;
            h.resume_requested = false;
            if replying || h.ended {
                h.paused = false;
            } else if go {
                h.forward();
            } else {
                h.paused = true;
            }
        }
        self.settle()?;
        Ok(action)
    }

    /// Runs `proxy_on_log`, `proxy_on_done` and (unless the plugin defers it
    /// with `false` + `proxy_done`) `proxy_on_delete`, in Envoy's order.
    /// Pending outbound calls of the stream are cancelled. Idempotent.
    pub fn finish(&mut self, id: u32) -> Result<(), HarnessError> {
        let stream = self.stream_state_mut(id)?;
        if stream.closed {
            return Ok(());
        }
        stream.closed = true;
        self.store.data_mut().effective = id;
        self.call::<(i32,), ()>("proxy_on_log", (id as i32,))?;
        self.store.data_mut().effective = id;
        let done = self.call::<(i32,), i32>("proxy_on_done", (id as i32,))?.map_or(true, |d| d != 0);
        if done {
            self.delete(id)?;
        } else {
            self.stream_state_mut(id)?.awaiting_done = true;
        }
        self.settle()
    }

    fn delete(&mut self, id: u32) -> Result<(), HarnessError> {
        self.store.data_mut().effective = id;
        self.call::<(i32,), ()>("proxy_on_delete", (id as i32,))?;
        let state = self.store.data_mut();
        if let Some(stream) = state.streams.get_mut(&id) {
            stream.deleted = true;
            stream.awaiting_done = false;
        }
        for call in state.calls.iter_mut() {
            if call.context_id == id && call.state == CallState::Pending {
                call.state = CallState::Cancelled;
            }
        }
        state.effective = self.root_id;
        Ok(())
    }

    /// Work Envoy does after a callback returns: send local responses the
    /// module asked for, and delete contexts that called `proxy_done`.
    fn settle(&mut self) -> Result<(), HarnessError> {
        loop {
            let state = self.store.data();
            let replying = state.streams.iter().find(|(_, s)| s.local_pending).map(|(id, _)| *id);
            let done = state
                .streams
                .iter()
                .find(|(_, s)| s.awaiting_done && s.done_called)
                .map(|(id, _)| *id);
            if let Some(id) = replying {
                self.deliver_local_reply(id)?;
            } else if let Some(id) = done {
                self.delete(id)?;
            } else {
                return Ok(());
            }
        }
    }

    fn deliver_local_reply(&mut self, id: u32) -> Result<(), HarnessError> {
        let through_filter = self.store.data().local_reply_through_filter;
        let stream = self.stream_state_mut(id)?;
        stream.local_pending = false;
        let Some(reply) = stream.local_responses.first().cloned() else {
            return Ok(());
        };
        stream.request.ended = true;
        stream.request.paused = false;
        let mut headers: Pairs = vec![(":status".to_string(), reply.status.to_string().into_bytes())];
        headers.extend(abi::pairs(&reply.headers.0).into_iter().map(|(k, v)| (k.to_ascii_lowercase(), v)));
        if !reply.body.is_empty() {
            if !headers.iter().any(|(k, _)| k == "content-type") {
                headers.push(("content-type".to_string(), b"text/plain".to_vec()));
            }
            headers.push(("content-length".to_string(), reply.body.len().to_string().into_bytes()));
        }
        let response = &mut stream.response;
        if response.headers_received || !through_filter || stream.reset {
            // Sent from the response path (or not shown to the filter): the
            // reply replaces the upstream response, unless its headers already
            // left, in which case Envoy can only reset the stream.
            if response.forwarded_headers.is_some() && response.headers_received {
                stream.reset = true;
            } else {
                response.forwarded_headers = Some(headers);
                response.forwarded_body = reply.body;
            }
            response.ended = true;
            return Ok(());
        }
        response.headers = headers;
        response.headers_received = true;
        response.end_of_stream = reply.body.is_empty();
        let count = response.headers.len();
        let eos = reply.body.is_empty();
        self.hook(id, StreamType::HttpResponse, "proxy_on_response_headers", HookArgs::SizeEos(count, eos))?;
        if !eos {
            let stream = self.stream_state_mut(id)?;
            stream.response.body = reply.body.clone();
            stream.response.end_of_stream = true;
            let size = reply.body.len();
            self.hook(id, StreamType::HttpResponse, "proxy_on_response_body", HookArgs::SizeEos(size, true))?;
        }
        self.stream_state_mut(id)?.response.ended = true;
        Ok(())
    }

    // ---- outbound calls ----------------------------------------------------

    /// Every `proxy_http_call` so far, in order.
    pub fn calls(&self) -> &[HttpCall] {
        &self.store.data().calls
    }

    /// Calls still waiting for a response.
    pub fn pending_calls(&self) -> Vec<HttpCall> {
        self.calls().iter().filter(|c| c.state == CallState::Pending).cloned().collect()
    }

    /// Delivers a response to call `token`: `:status` plus `headers`, `body`.
    pub fn respond_to_call(
        &mut self,
        token: u32,
        status: u16,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<(), HarnessError> {
        let mut all: Pairs = vec![(":status".to_string(), status.to_string().into_bytes())];
        all.extend(abi::pairs(headers));
        self.deliver_call_response(token, all, body.to_vec())
    }

    /// Fails call `token` the way Envoy does (timeout, reset, no upstream): the
    /// response callback arrives with zero headers and no body.
    pub fn fail_call(&mut self, token: u32) -> Result<(), HarnessError> {
        self.deliver_call_response(token, Vec::new(), Vec::new())
    }

    fn deliver_call_response(&mut self, token: u32, headers: Pairs, body: Vec<u8>) -> Result<(), HarnessError> {
        let state = self.store.data_mut();
        let call = state
            .calls
            .iter_mut()
            .find(|c| c.token == token)
            .ok_or(HarnessError::UnknownCall(token))?;
        if call.state != CallState::Pending {
            return Err(HarnessError::CallNotPending {
                token,
                state: call.state,
            });
        }
        call.state = CallState::Answered;
        let context_id = call.context_id;
        let (count, size) = (headers.len(), body.len());
        state.call_response = Some(CallResponse {
            headers,
            body,
            trailers: Vec::new(),
        });
        state.effective = context_id;
        let result = self.call::<(i32, i32, i32, i32, i32), ()>(
            "proxy_on_http_call_response",
            (context_id as i32, token as i32, count as i32, size as i32, 0),
        );
        self.store.data_mut().call_response = None;
        result?;
        self.settle()
    }

    // ---- records -----------------------------------------------------------

    /// Every log line as (level, message), stdout/stderr lines included.
    pub fn logs(&self) -> Vec<(LogLevel, String)> {
        self.store.data().logs.iter().map(|e| (e.level, e.message.clone())).collect()
    }

    /// Every log line with its context id.
    pub fn log_entries(&self) -> &[LogEntry] {
        &self.store.data().logs
    }

    /// Whether any log line contains `needle`.
    pub fn logged(&self, needle: &str) -> bool {
        self.store.data().logs.iter().any(|e| e.message.contains(needle))
    }

    /// Every metric by name (process-wide, like Envoy's stats).
    pub fn metrics(&self) -> BTreeMap<String, MetricValue> {
        self.store.data().shared.metrics()
    }

    /// A counter's or gauge's value; `None` if undefined or a histogram.
    pub fn metric(&self, name: &str) -> Option<u64> {
        match self.metrics().get(name)? {
            MetricValue::Counter(v) | MetricValue::Gauge(v) => Some(*v),
            MetricValue::Histogram(_) => None,
        }
    }

    /// A shared-data value.
    pub fn shared_data(&self, key: &str) -> Option<Vec<u8>> {
        self.store.data().shared.value(key)
    }

    /// The shared store itself (clone it into another sandbox, pre-seed it,
    /// read CAS tokens, force mismatches).
    pub fn shared(&self) -> SharedData {
        self.store.data().shared.clone()
    }

    /// The next `n` CAS-checked shared-data writes fail with `CasMismatch`.
    pub fn force_cas_mismatches(&self, n: u32) {
        self.store.data().shared.force_cas_mismatches(n);
    }

    /// Every `proxy_continue_stream` call, in order.
    pub fn resumes(&self) -> &[Resume] {
        &self.store.data().resumes
    }

    /// Names of stubbed (`Unimplemented`) host functions the module called.
    pub fn unimplemented_calls(&self) -> &[String] {
        &self.store.data().unimplemented
    }

    // ---- guest calls -------------------------------------------------------

    fn has_export(&mut self, name: &str) -> bool {
        self.instance.get_func(&mut self.store, name).is_some()
    }

    /// Calls an export if the module has it (`None` if not: every callback is
    /// optional). A trap or a wrong signature is an error.
    pub(crate) fn call<P: WasmParams, R: WasmResults>(
        &mut self,
        name: &str,
        params: P,
    ) -> Result<Option<R>, HarnessError> {
        let Some(func) = self.instance.get_func(&mut self.store, name) else {
            return Ok(None);
        };
        let typed = func.typed::<P, R>(&self.store).map_err(|e| HarnessError::Signature {
            export: name.to_string(),
            message: format!("{e:#}"),
        })?;
        let started = Instant::now();
        let result = typed.call(&mut self.store, params);
        self.guest_time += started.elapsed();
        self.store.data_mut().drain_stdio();
        result.map(Some).map_err(|e| HarnessError::Trap {
            during: name.to_string(),
            message: format!("{e:?}"),
            recent_logs: self
                .store
                .data()
                .logs
                .iter()
                .rev()
                .take(10)
                .rev()
                .map(|e| e.message.clone())
                .collect(),
        })
    }
}
