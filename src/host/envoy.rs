//! proxy-wasm adapter (Envoy). The only file that names `proxy_wasm`.
