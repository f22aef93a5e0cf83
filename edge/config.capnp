# workerd config for the chatguard edge worker (template).
#
# Rendered by edge/render.py (or the end-to-end tests) into a directory that
# also holds worker.js, pkg/ (from `make edge`) and policy.json:
#   @ORIGIN@         base URL of the guarded service, e.g. http://127.0.0.1:8000
#   @COLLECTOR_URL@  base URL of the audit collector (the policy's audit.cluster)
#   @LISTEN@         address to serve on, e.g. 127.0.0.1:8787
# Run: workerd serve config.capnp   (--socket-addr http=HOST:PORT overrides @LISTEN@)
#
# Rate buckets and lockout live in the Durable Object ChatguardState (lines
# marked `@state`), shared by every isolate bound to it; `render.py
# --per-isolate` drops those lines and each isolate keeps its own. Another
# worker service shares the object by binding
#   (name = "STATE", durableObjectNamespace = (className = "ChatguardState", serviceName = "chatguard"))
using Workerd = import "/workerd/workerd.capnp";

const config :Workerd.Config = (
  services = [
    (name = "chatguard", worker = .chatguard),
    # Outbound fetch (origin, JWKS, collector): loopback and private addresses
    # are allowed because the demo and the tests run everything on 127.0.0.1.
    (name = "internet", network = (allow = ["public", "private", "local"])),
  ],
  sockets = [(name = "http", address = "@LISTEN@", http = (), service = "chatguard")],
);

const chatguard :Workerd.Worker = (
  modules = [
    (name = "worker.js", esModule = embed "worker.js"),
    (name = "pkg/chatguard.js", esModule = embed "pkg/chatguard.js"),
    (name = "pkg/chatguard_bg.wasm", wasm = embed "pkg/chatguard_bg.wasm"),
  ],
  compatibilityDate = "2025-09-01",
  durableObjectNamespaces = [(className = "ChatguardState", uniqueKey = "chatguard-state")],  # @state-owner
  durableObjectStorage = (inMemory = void),  # @state-owner
  bindings = [
    (name = "POLICY", text = embed "policy.json"),
    (name = "ORIGIN", text = "@ORIGIN@"),
    (name = "COLLECTOR_URL", text = "@COLLECTOR_URL@"),
    (name = "STATE", durableObjectNamespace = "ChatguardState"),  # @state
  ],
  globalOutbound = "internet",
);
