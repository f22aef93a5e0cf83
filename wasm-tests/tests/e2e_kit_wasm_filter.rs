//! Proves the kit's chatguard bootstrap (envoy.filters.http.wasm, V8, plugin
//! configuration as a StringValue, fail_open false) in a real Envoy 1.40 with
//! a minimal proxy-wasm module written in WAT, independent of the real module.

use std::time::Duration;
use wasm_tests::e2e::{self, http, Envoy, EnvoyConfig, Upstream};

/// A proxy-wasm 0.2.1 module whose `proxy_on_configure` answers `configure_ok`
/// and whose request-headers hook lets every request continue.
fn stub_module(configure_ok: bool) -> Vec<u8> {
    let wat = format!(
        r#"(module
          (memory (export "memory") 4)
          (global $heap (mut i32) (i32.const 1024))
          (func (export "proxy_abi_version_0_2_1"))
          (func (export "proxy_on_memory_allocate") (param $n i32) (result i32)
            (local $p i32)
            (local.set $p (global.get $heap))
            (global.set $heap (i32.add (global.get $heap) (local.get $n)))
            (local.get $p))
          (func (export "proxy_on_context_create") (param i32 i32))
          (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1))
          (func (export "proxy_on_configure") (param i32 i32) (result i32) (i32.const {}))
          (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) (i32.const 0))
          (func (export "proxy_on_done") (param i32) (result i32) (i32.const 1))
          (func (export "proxy_on_delete") (param i32)))"#,
        u8::from(configure_ok)
    );
    wat::parse_str(wat).unwrap()
}

fn write_module(name: &str, configure_ok: bool) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("chatguard-e2e-stub-{}-{name}.wasm", std::process::id()));
    std::fs::write(&path, stub_module(configure_ok)).unwrap();
    path
}

#[test]
fn wasm_filter_bootstrap_loads_module_and_passes_traffic() {
    if e2e::skip_without_envoy("wasm_filter_bootstrap_loads_module_and_passes_traffic") {
        return;
    }
    let module = write_module("ok", true);
    let up = Upstream::start();
    let policy = r#"{"jwt":{"providers":[]},"note":"quotes \" and \\ survive"}"#;
    let envoy = Envoy::start(
        EnvoyConfig::chatguard(policy).wasm_module(&module).upstream(up.port()).cluster("idp", up.port()).concurrency(2),
    )
    .unwrap();
    eprintln!("envoy with wasm LIVE in {:?}", envoy.started_in());
    let r = http::get(envoy.listener_port(), "/api/faq", &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(up.request_count(), 1);
    let _ = std::fs::remove_file(module);
}

#[test]
fn wasm_filter_refusing_configuration_fails_closed() {
    if e2e::skip_without_envoy("wasm_filter_refusing_configuration_fails_closed") {
        return;
    }
    let module = write_module("refuse", false);
    let up = Upstream::start();
    let started = Envoy::start(
        EnvoyConfig::chatguard("{}").wasm_module(&module).upstream(up.port()).start_timeout(Duration::from_secs(15)),
    );
    // Envoy 1.40 with a static listener: a fail-closed plugin that refuses
    // its configuration stops Envoy at load (exit 1), it never serves.
    let err = started.err().expect("Envoy must not start with a plugin that refused its configuration");
    assert!(err.log.contains("Unable to create Wasm plugin chatguard"), "{err}");
    assert_eq!(up.request_count(), 0);
    let _ = std::fs::remove_file(module);
}
