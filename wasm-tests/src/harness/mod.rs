//! proxy-wasm host harness. (in progress)
