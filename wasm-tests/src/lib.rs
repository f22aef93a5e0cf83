//! proxy-wasm host harness (wasmtime) and end-to-end test kit.
