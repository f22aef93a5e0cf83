//! Test hosts for the chatguard module.
//!
//! - [`harness`]: a proxy-wasm ABI 0.2.1 host embedded in wasmtime, for fast,
//!   deterministic tests of the compiled module.
//! - [`e2e`]: the kit for end-to-end tests against a real Envoy (and workerd):
//!   process launchers, an upstream echo server, an audit collector, a JWKS
//!   server and a small HTTP client, all on 127.0.0.1 with free ports.
//! - [`scenarios`]: policies, callers and tables both hosts' end-to-end tests run.
//! - [`tokens`]: keys generated per test run (never committed) and tokens minted
//!   with them, plus the policies that trust them.
pub mod e2e;
pub mod harness;
pub mod scenarios;
pub mod tokens;
