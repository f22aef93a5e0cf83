//! wasm-bindgen adapter (edge workers). The only file that names `wasm_bindgen`.
