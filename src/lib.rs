//! chatguard: a security filter for chatbot and LLM APIs.
//!
//! The policy engine ([`engine`], [`jwt`], [`rbac`], [`ratelimit`], [`lockout`],
//! [`pii`], [`audit`]) is a pure library: time, shared storage, outbound calls and
//! logging reach it through the [`host::Host`] trait, and every outcome is returned
//! as data. The host adapters in `host/envoy.rs` (proxy-wasm) and `host/edge.rs`
//! (wasm-bindgen) are the only code that names a host runtime.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod audit;
pub mod client_ip;
pub mod config;
pub mod engine;
pub mod host;
pub mod jwt;
pub mod lockout;
pub mod path;
pub mod pii;
pub mod ratelimit;
pub mod rbac;

/// The module version reported in logs and `config_loaded` audit records.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
