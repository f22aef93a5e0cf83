//! Validates the compiled-in default policy (`policy/default.json`) with the same
//! schema code the module uses at load, so a bad default policy fails the build
//! with the message an operator would see from Envoy. It also emits the default
//! policy's RBAC tables (role names, flattened permission bitsets) into
//! `$OUT_DIR/rbac_default_tables.rs`, which `src/rbac` includes.

#[allow(dead_code, unused_imports)]
#[path = "src/config/mod.rs"]
mod config;

use std::path::PathBuf;

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let policy_path = manifest.join("policy/default.json");
    println!("cargo:rerun-if-changed=policy/default.json");
    println!("cargo:rerun-if-changed=src/config");

    let bytes = match std::fs::read(&policy_path) {
        Ok(b) => b,
        Err(e) => fail(&format!("cannot read {}: {e}", policy_path.display())),
    };
    if let Err(e) = config::Policy::from_json(&bytes) {
        fail(&format!("policy/default.json is invalid: {e}"));
    }
    let tables = match config::rbac_matrix::static_tables_for_policy(&bytes) {
        Ok(t) => t,
        Err(e) => fail(&format!("policy/default.json is invalid: {e}")),
    };
    let out = PathBuf::from(std::env::var_os("OUT_DIR").unwrap_or_default()).join("rbac_default_tables.rs");
    if let Err(e) = std::fs::write(&out, tables) {
        fail(&format!("cannot write {}: {e}", out.display()));
    }
}

fn fail(message: &str) -> ! {
    // cargo shows stderr of a failed build script; `error:` makes it stand out.
    eprintln!("error: {message}");
    std::process::exit(1);
}
