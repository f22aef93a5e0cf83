//! End-to-end kit: a real Envoy (V8) on 127.0.0.1 in front of servers written
//! in the test, driven with real HTTP requests. Ports are picked by the kernel,
//! each Envoy has its own temp dir and base id, so tests run in parallel.
//!
//! ```no_run
//! use wasm_tests::e2e::{self, http, Envoy, EnvoyConfig, JwksServer, Upstream};
//! if e2e::skip_without_chatguard("my_test") { return; }
//! let up = Upstream::start();
//! let jwks = JwksServer::start(r#"{"keys":[]}"#);
//! let envoy = Envoy::start(
//!     EnvoyConfig::chatguard("{}").upstream(up.port()).cluster("idp", jwks.port()).concurrency(1),
//! ).unwrap();
//! let r = http::get(envoy.listener_port(), "/api/faq", &[("authorization", "Bearer x")]);
//! assert_eq!(r.status, 401);
//! assert_eq!(up.request_count(), 0);
//! ```

mod collector;
mod config;
mod envoy;
pub mod http;
mod jwks;
mod server;
mod upstream;
mod wire;
mod workerd;

pub use collector::{Collector, CollectorMode};
pub use config::{EnvoyConfig, JwksSource, NativeBaseline};
pub use envoy::{Envoy, StartError};
pub use jwks::{JwksServer, DEFAULT_JWKS_PATH};
pub use server::{Received, Reply};
pub use upstream::Upstream;
pub use workerd::{Workerd, WorkerdConfig};

use std::path::PathBuf;

/// The workspace root (where the Makefile puts `.tools` and `target`).
fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The Envoy binary: `$ENVOY_BIN`, else the one `make envoy` installs, if present.
pub fn envoy_bin() -> Option<PathBuf> {
    match std::env::var_os("ENVOY_BIN") {
        Some(p) if !p.is_empty() => Some(PathBuf::from(p)),
        _ => Some(workspace_root().join(".tools/envoy-1.40.0/envoy/_bin/envoy")).filter(|p| p.is_file()),
    }
}

/// The chatguard module: `$CHATGUARD_WASM`, else the one `make wasm` builds, if present.
pub fn chatguard_wasm() -> Option<PathBuf> {
    match std::env::var_os("CHATGUARD_WASM") {
        Some(p) if !p.is_empty() => Some(PathBuf::from(p)),
        _ => Some(workspace_root().join("target/wasm32-wasip1/release/chatguard.wasm")).filter(|p| p.is_file()),
    }
}

/// The workerd binary: `$WORKERD_BIN`, else the one `make workerd` installs, if present.
pub fn workerd_bin() -> Option<PathBuf> {
    match std::env::var_os("WORKERD_BIN") {
        Some(p) if !p.is_empty() => Some(PathBuf::from(p)),
        _ => {
            let tools = workspace_root().join(".tools");
            let mut found: Vec<PathBuf> = std::fs::read_dir(&tools)
                .into_iter()
                .flatten()
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("workerd-"))
                .map(|e| e.path().join("node_modules/@cloudflare/workerd-linux-64/bin/workerd"))
                .filter(|p| p.is_file())
                .collect();
            found.sort();
            found.pop()
        }
    }
}

/// The edge worker's sources (`edge/`: worker.js, config.capnp).
pub fn edge_dir() -> PathBuf {
    workspace_root().join("edge")
}

/// The wasm-bindgen package `make edge` builds (`$CHATGUARD_EDGE_PKG` or edge/pkg), if present.
pub fn edge_pkg() -> Option<PathBuf> {
    let dir = match std::env::var_os("CHATGUARD_EDGE_PKG") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => edge_dir().join("pkg"),
    };
    let dir = dir.canonicalize().ok()?;
    dir.join("chatguard_bg.wasm").is_file().then_some(dir)
}

/// True (after printing why) when workerd or the edge package is missing and
/// the test should return early. Under CI it fails instead.
pub fn skip_without_workerd(test: &str) -> bool {
    if workerd_bin().is_none() {
        return skip(test, "WORKERD_BIN is not set and `make workerd` has not run");
    }
    match edge_pkg() {
        Some(_) => false,
        None => skip(test, "edge/pkg is missing: run `make edge`"),
    }
}

/// True when running under CI (`CI` set to anything but empty, `0` or `false`).
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && !v.eq_ignore_ascii_case("false"))
}

fn skip(test: &str, missing: &str) -> bool {
    assert!(!in_ci(), "{test}: {missing}, and CI is set: end-to-end tests may not be skipped in CI");
    eprintln!("SKIPPED {test}: {missing} (run `make test`, or set it; under CI this fails)");
    true
}

/// True (after printing why) when Envoy is missing and the test should return
/// early. Under CI a missing Envoy fails the test instead.
pub fn skip_without_envoy(test: &str) -> bool {
    match envoy_bin() {
        Some(_) => false,
        None => skip(test, "ENVOY_BIN is not set and `make envoy` has not run"),
    }
}

/// Like [`skip_without_envoy`], also requiring the built chatguard module.
pub fn skip_without_chatguard(test: &str) -> bool {
    if skip_without_envoy(test) {
        return true;
    }
    match chatguard_wasm() {
        Some(_) => false,
        None => skip(test, "CHATGUARD_WASM is not set and `make wasm` has not run"),
    }
}
