//! A proxy-wasm ABI 0.2.1 host embedded in wasmtime: Envoy's side of the ABI,
//! small enough to read, deterministic enough to assert exact bytes.
//!
//! ```no_run
//! use wasm_tests::harness::{Plugin, Request, Sandbox, Action};
//! # fn main() -> Result<(), wasm_tests::harness::HarnessError> {
//! let plugin = Plugin::cached("target/wasm32-wasip1/release/chatguard.wasm")?;
//! let mut sandbox = Sandbox::new(&plugin, r#"{"jwt": {"providers": []}}"#)?;
//! let mut stream = sandbox.http()?;
//! let sent = stream.send_request(&Request::post("/v1/chat").json("{}").chunked(5))?;
//! assert_eq!(sent.headers, Action::Pause);
//! assert_eq!(stream.local_response().map(|r| r.status), Some(401));
//! # Ok(()) }
//! ```
//!
//! - [`Plugin`]: the compiled module, shared by tests ([`Plugin::cached`]).
//! - [`Sandbox`]: one instance with its own `Store` (one Envoy worker): lifecycle,
//!   clock, tick, outbound calls, logs, metrics, shared data.
//! - [`Stream`]: one HTTP stream: hooks in, forwarded bytes and local replies out.
//! - [`SharedData`]: process-wide shared data, queues and metrics; clone it into
//!   two sandboxes to emulate two workers.
//!
//! Envoy behaviours emulated (each documented where implemented): body
//! buffering while the filter pauses and forwarding on continue; a `Continue`
//! from a body hook releasing paused headers; local replies deferred to the end
//! of the callback and then run through the plugin's own response hooks;
//! shared-data CAS rules; `set_buffer_bytes` only prepending/replacing from 0
//! or appending; configuration buffers readable only in their callbacks;
//! outbound calls cancelled when their stream is deleted; failed calls
//! delivered with zero headers.

mod abi;
mod imports;
mod memory;
mod plugin;
mod sandbox;
mod shared;
mod state;
mod stream;

use std::path::{Path, PathBuf};

pub use abi::{Action, LogLevel, MetricType, Status, StreamType};
pub use plugin::Plugin;
pub use sandbox::{Sandbox, SandboxBuilder};
pub use shared::{MetricValue, SetError, SharedData};
pub use state::{CallState, Clock, Headers, HttpCall, LocalResponse, LogEntry, Resume};
pub use stream::{Request, Response, Sent, Stream};

/// Everything that can go wrong driving a module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HarnessError {
    /// The module file could not be read.
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        message: String,
    },
    /// wasmtime refused to compile the module.
    Compile {
        /// The file.
        path: PathBuf,
        /// wasmtime's error.
        message: String,
    },
    /// An import could not be resolved (the message names it).
    Link {
        /// The file.
        path: PathBuf,
        /// What is missing.
        message: String,
    },
    /// The module does not export `proxy_abi_version_0_2_1`.
    AbiVersion {
        /// The `proxy_abi_version_*` exports it has instead.
        found: Vec<String>,
    },
    /// The module trapped (panic, unreachable, out-of-bounds, proc_exit).
    Trap {
        /// The export being called.
        during: String,
        /// wasmtime's description, with the wasm backtrace.
        message: String,
        /// The last log lines (a Rust panic message lands here via stderr).
        recent_logs: Vec<String>,
    },
    /// An export has a signature other than the ABI's.
    Signature {
        /// The export.
        export: String,
        /// wasmtime's description.
        message: String,
    },
    /// A hook returned a value that is not a `proxy_action_t`.
    BadAction {
        /// The hook.
        hook: String,
        /// What it returned.
        value: i32,
    },
    /// `proxy_on_vm_start` returned false.
    VmStartRefused {
        /// Everything the module logged.
        logs: Vec<(LogLevel, String)>,
    },
    /// `proxy_on_configure` returned false: Envoy would refuse the plugin.
    ConfigureRefused {
        /// Everything the module logged (the reason should be there).
        logs: Vec<(LogLevel, String)>,
    },
    /// No stream with this id.
    UnknownStream(u32),
    /// Response hooks driven for a stream whose request never reached the
    /// upstream (and got no local reply): no response could exist.
    ResponseBeforeRequest(u32),
    /// No outbound call with this token.
    UnknownCall(u32),
    /// The call was already answered or cancelled.
    CallNotPending {
        /// The token.
        token: u32,
        /// Its state.
        state: CallState,
    },
    /// `tick` without `proxy_set_tick_period_milliseconds`: Envoy would not tick.
    TickNotArmed,
}

impl std::fmt::Display for HarnessError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HarnessError::Read { path, message } => {
                write!(f, "cannot read {}: {message} (build the module first?)", path.display())
            }
            HarnessError::Compile { path, message } => {
                write!(f, "wasmtime cannot compile {}: {message}", path.display())
            }
            HarnessError::Link { path, message } => {
                write!(f, "cannot link {}: {message}", path.display())
            }
            HarnessError::AbiVersion { found } => write!(
                f,
                "the module does not export proxy_abi_version_0_2_1 (found: {found:?}); build it with proxy-wasm 0.2.x"
            ),
            HarnessError::Trap {
                during,
                message,
                recent_logs,
            } => write!(f, "the module trapped in {during}: {message}\nlast logs: {recent_logs:#?}"),
            HarnessError::Signature { export, message } => {
                write!(f, "export {export} has the wrong signature: {message}")
            }
            HarnessError::BadAction { hook, value } => {
                write!(f, "{hook} returned {value}, which is neither Continue (0) nor Pause (1)")
            }
            HarnessError::VmStartRefused { logs } => {
                write!(f, "proxy_on_vm_start returned false; logs: {logs:#?}")
            }
            HarnessError::ConfigureRefused { logs } => {
                write!(f, "proxy_on_configure returned false; logs: {logs:#?}")
            }
            HarnessError::UnknownStream(id) => write!(f, "no stream with context id {id}"),
            HarnessError::ResponseBeforeRequest(id) => write!(
                f,
                "stream {id}: response hooks driven but the request never reached the upstream \
                 (still paused?) and no local reply was sent"
            ),
            HarnessError::UnknownCall(token) => write!(f, "no outbound call with token {token}"),
            HarnessError::CallNotPending { token, state } => {
                write!(f, "outbound call {token} is not pending ({state:?})")
            }
            HarnessError::TickNotArmed => {
                write!(f, "tick() but the plugin never called proxy_set_tick_period_milliseconds")
            }
        }
    }
}

impl std::error::Error for HarnessError {}

/// The chatguard module for harness tests: `$CHATGUARD_WASM`, else
/// `target/wasm32-wasip1/release/chatguard.wasm` in the workspace.
pub fn chatguard_wasm_path() -> PathBuf {
    match std::env::var_os("CHATGUARD_WASM") {
        Some(path) if !path.is_empty() => PathBuf::from(path),
        _ => workspace_root().join("target/wasm32-wasip1/release/chatguard.wasm"),
    }
}

/// The workspace root (the parent of this crate).
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}
