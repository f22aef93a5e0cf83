//! The host-side state of one sandbox: what lives in the wasmtime `Store`.
//!
//! Host functions (in `imports`) read and write it; the test-facing API (in
//! `sandbox` and `stream`) drives hooks and reads the records kept here.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use wasmtime::{Memory, TypedFunc};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;

use super::abi::{LogLevel, Pairs, StreamType};
use super::shared::SharedData;

/// Property paths as segments, e.g. `["source", "address"]`.
pub type PropertyPath = Vec<String>;

/// A settable clock shared by `proxy_get_current_time_nanoseconds` and WASI's
/// `clock_time_get` (both realtime and monotonic read it).
#[derive(Clone, Debug)]
pub struct Clock {
    nanos: Arc<AtomicU64>,
}

impl Clock {
    /// 2025-01-01T00:00:00Z: a fixed, deterministic start.
    pub const DEFAULT_START_SECS: u64 = 1_735_689_600;

    /// A clock reading the default start time.
    pub fn new() -> Self {
        Clock {
            nanos: Arc::new(AtomicU64::new(Self::DEFAULT_START_SECS * 1_000_000_000)),
        }
    }

    /// Nanoseconds since the Unix epoch.
    pub fn nanos(&self) -> u64 {
        self.nanos.load(Ordering::SeqCst)
    }

    /// The time as a `SystemTime`.
    pub fn now(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_nanos(self.nanos())
    }

    /// Sets the time (backwards too).
    pub fn set(&self, time: SystemTime) {
        let nanos = time
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        self.nanos.store(nanos, Ordering::SeqCst);
    }

    /// Moves the time forward.
    pub fn advance(&self, by: Duration) {
        let by = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        let now = self.nanos();
        self.nanos.store(now.saturating_add(by), Ordering::SeqCst);
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

impl wasmtime_wasi::HostWallClock for Clock {
    fn resolution(&self) -> Duration {
        Duration::from_nanos(1)
    }
    fn now(&self) -> Duration {
        Duration::from_nanos(self.nanos())
    }
}

impl wasmtime_wasi::HostMonotonicClock for Clock {
    fn resolution(&self) -> u64 {
        1
    }
    fn now(&self) -> u64 {
        self.nanos()
    }
}

/// One `proxy_log` call (or a line the module wrote to stdout/stderr).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    /// The level the module asked for (stdout: Info, stderr: Error).
    pub level: LogLevel,
    /// The message.
    pub message: String,
    /// The effective context when the line was written.
    pub context_id: u32,
}

/// A `proxy_send_local_response` as the module sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalResponse {
    /// HTTP status code.
    pub status: u32,
    /// `status_code_details` (Envoy's response-code-details), often empty.
    pub details: String,
    /// Response body.
    pub body: Vec<u8>,
    /// Headers the module supplied (not the ones Envoy adds).
    pub headers: Headers,
    /// gRPC status, -1 when none.
    pub grpc_status: i32,
}

/// An outbound `proxy_http_call`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpCall {
    /// Token returned to the module; pass it to `respond_to_call`.
    pub token: u32,
    /// Context that dispatched it (root or stream id).
    pub context_id: u32,
    /// Envoy cluster name.
    pub upstream: String,
    /// Request headers incl. `:method`, `:path`, `:authority`.
    pub headers: Headers,
    /// Request body.
    pub body: Vec<u8>,
    /// Request trailers.
    pub trailers: Headers,
    /// Timeout in milliseconds.
    pub timeout_ms: u32,
    /// Where the call stands.
    pub state: CallState,
}

/// Lifecycle of an outbound call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallState {
    /// Waiting for the test to respond or fail it.
    Pending,
    /// A response (or failure) was delivered.
    Answered,
    /// The dispatching stream ended first; Envoy cancels such calls.
    Cancelled,
}

/// A `proxy_continue_stream` (resume) call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resume {
    /// The stream resumed.
    pub context_id: u32,
    /// Which half.
    pub stream_type: StreamType,
}

/// Header pairs with case-insensitive lookup, for assertions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(pub Vec<(String, String)>);

impl Headers {
    /// Builds from raw pairs (values decoded as UTF-8, lossily).
    pub fn from_pairs(pairs: &Pairs) -> Self {
        Headers(
            pairs
                .iter()
                .map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned()))
                .collect(),
        )
    }

    /// The first value of `name` (case-insensitive).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `name`, in order.
    pub fn get_all(&self, name: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// Whether `name` is present.
    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Number of pairs.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no pairs.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Iterates over pairs.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

/// One half (request or response) of an HTTP stream, as Envoy's filter
/// manager sees it around our filter.
#[derive(Debug, Default)]
pub(crate) struct Half {
    pub headers: Pairs,
    pub headers_received: bool,
    pub trailers: Pairs,
    pub trailers_received: bool,
    /// The body buffered by the host and visible to the module; grows while the
    /// module pauses, drained into `forwarded_body` on continue.
    pub body: Vec<u8>,
    pub end_of_stream: bool,
    pub forwarded_headers: Option<Pairs>,
    pub forwarded_body: Vec<u8>,
    pub forwarded_trailers: Option<Pairs>,
    /// Iteration is stopped at this filter.
    pub paused: bool,
    /// No further hooks are delivered for this half.
    pub ended: bool,
    /// `proxy_continue_stream` was called while a hook of this half was running.
    pub resume_requested: bool,
}

impl Half {
    /// Lets everything received so far pass the filter (Envoy's "continue":
    /// headers first if still held, then the buffered body, then trailers).
    pub fn forward(&mut self) {
        if self.headers_received && self.forwarded_headers.is_none() {
            self.forwarded_headers = Some(self.headers.clone());
        }
        self.forwarded_body.append(&mut self.body);
        if self.trailers_received && self.forwarded_trailers.is_none() {
            self.forwarded_trailers = Some(self.trailers.clone());
        }
        self.paused = false;
    }
}

/// Per-stream (HTTP context) state.
#[derive(Debug, Default)]
pub(crate) struct StreamState {
    pub request: Half,
    pub response: Half,
    pub properties: BTreeMap<PropertyPath, Vec<u8>>,
    pub local_responses: Vec<LocalResponse>,
    /// A local response waits to be processed after the current guest call.
    pub local_pending: bool,
    /// Which half's hook is running now.
    pub in_hook: Option<StreamType>,
    /// `proxy_close_stream` was called.
    pub reset: bool,
    /// `finish` began: no more stream hooks.
    pub closed: bool,
    /// on_delete ran: the context is gone (its records stay readable).
    pub deleted: bool,
    /// on_done returned false: on_delete waits for `proxy_done`.
    pub awaiting_done: bool,
    pub done_called: bool,
}

impl StreamState {
    /// Whether Envoy would no longer call hooks of `half`.
    pub fn is_closed(&self, half: StreamType) -> bool {
        let ended = match half {
            StreamType::HttpRequest => self.request.ended,
            StreamType::HttpResponse => self.response.ended,
            StreamType::Downstream | StreamType::Upstream => true,
        };
        self.closed || self.deleted || self.reset || ended
    }

    pub fn half_mut(&mut self, stream_type: StreamType) -> Option<&mut Half> {
        match stream_type {
            StreamType::HttpRequest => Some(&mut self.request),
            StreamType::HttpResponse => Some(&mut self.response),
            StreamType::Downstream | StreamType::Upstream => None,
        }
    }
}

/// The response of an outbound call while `proxy_on_http_call_response` runs.
#[derive(Debug, Default)]
pub(crate) struct CallResponse {
    pub headers: Pairs,
    pub body: Vec<u8>,
    pub trailers: Pairs,
}

/// Everything a sandbox's `Store` holds.
pub struct HostState {
    pub(crate) wasi: WasiP1Ctx,
    pub(crate) stdout: MemoryOutputPipe,
    pub(crate) stderr: MemoryOutputPipe,
    pub(crate) stdout_read: usize,
    pub(crate) stderr_read: usize,
    pub(crate) memory: Option<Memory>,
    pub(crate) allocate: Option<TypedFunc<i32, i32>>,
    pub(crate) clock: Clock,
    pub(crate) log_level: LogLevel,
    pub(crate) root_id: u32,
    pub(crate) effective: u32,
    pub(crate) streams: BTreeMap<u32, StreamState>,
    pub(crate) vm_config: Vec<u8>,
    pub(crate) plugin_config: Vec<u8>,
    pub(crate) in_vm_start: bool,
    pub(crate) in_configure: bool,
    pub(crate) call_response: Option<CallResponse>,
    pub(crate) logs: Vec<LogEntry>,
    pub(crate) tick_period_ms: u32,
    pub(crate) shared: SharedData,
    pub(crate) vm_id: String,
    pub(crate) properties: BTreeMap<PropertyPath, Vec<u8>>,
    pub(crate) calls: Vec<HttpCall>,
    pub(crate) next_token: u32,
    pub(crate) known_upstreams: Option<Vec<String>>,
    pub(crate) resumes: Vec<Resume>,
    pub(crate) unimplemented: Vec<String>,
    pub(crate) local_reply_through_filter: bool,
}

impl HostState {
    pub(crate) fn log(&mut self, level: LogLevel, message: String) {
        let context_id = self.effective;
        self.logs.push(LogEntry {
            level,
            message,
            context_id,
        });
    }

    /// The stream the effective context addresses, if it is a live stream.
    pub(crate) fn effective_stream(&mut self) -> Option<&mut StreamState> {
        let id = self.effective;
        self.streams.get_mut(&id).filter(|s| !s.deleted)
    }

    /// Moves whatever the module wrote to stdout/stderr into the log records.
    pub(crate) fn drain_stdio(&mut self) {
        let out = self.stdout.contents();
        let err = self.stderr.contents();
        let new_out = out.get(self.stdout_read..).unwrap_or_default().to_vec();
        let new_err = err.get(self.stderr_read..).unwrap_or_default().to_vec();
        self.stdout_read = out.len();
        self.stderr_read = err.len();
        for (level, bytes) in [(LogLevel::Info, new_out), (LogLevel::Error, new_err)] {
            for line in String::from_utf8_lossy(&bytes).lines() {
                if !line.is_empty() {
                    self.log(level, line.to_string());
                }
            }
        }
    }
}
