#!/usr/bin/env bash
# `make bench`: Envoy with no filter, with Envoy's native jwt_authn + rbac +
# local_ratelimit, and with chatguard, measured in one run on this machine with
# wrk (1 thread, 16 connections, Envoy --concurrency 1), against a direct-response
# Envoy upstream. Prints a Markdown table; figures go to BENCHMARKS.md as ratios.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${ENVOY_BIN:?run through make}" "${CHATGUARD_WASM:?}" "${CHATGUARD_CLI:?}"
SECONDS_PER_RUN=${BENCH_SECONDS:-10}
CONNECTIONS=${BENCH_CONNECTIONS:-16}
OUT=target/bench; mkdir -p "$OUT"
BASE_PORT=${BENCH_BASE_PORT:-21000}
UP=$((BASE_PORT)); UP_ADMIN=$((BASE_PORT + 1)); LISTEN=$((BASE_PORT + 2)); ADMIN=$((BASE_PORT + 3))
PIDS=()
cleanup() { for p in "${PIDS[@]:-}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT INT TERM

wait_ready() { for _ in $(seq 1 150); do curl -sf "http://127.0.0.1:$1/ready" >/dev/null 2>&1 && return 0; sleep 0.2; done; echo "envoy on admin :$1 did not start" >&2; return 1; }
start_envoy() { # template name, extra render args...
  local tmpl=$1; shift
  python3 envoy/render.py "envoy/$tmpl.yaml.tmpl" "$@" > "$OUT/$tmpl.yaml"
  "$ENVOY_BIN" -c "$OUT/$tmpl.yaml" --concurrency 1 -l error --use-dynamic-base-id >"$OUT/$tmpl.log" 2>&1 &
  PIDS+=($!)
}

# Keys and tokens for this run only.
"$CHATGUARD_CLI" token keygen --out "$OUT/keys" --kid bench >/dev/null
sign() { "$CHATGUARD_CLI" token sign --key "$OUT/keys/private.pem" --kid bench --sub bench-user --ttl 7200 --claims '{"roles":["employee"]}' "$@"; }
TOKEN=$(sign)
FRESH_COUNT=${BENCH_FRESH_TOKENS:-12000}
sign --count "$FRESH_COUNT" > "$OUT/fresh.tokens"
python3 - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
jwks = json.load(open(f"{out}/keys/jwks.json"))
policy = json.load(open("bench/policy.json"))
policy["jwt"]["providers"][0]["jwks"] = jwks
json.dump(policy, open(f"{out}/policy.json", "w"))
PY

start_envoy direct-upstream admin_port=$UP_ADMIN listen_port=$UP
wait_ready $UP_ADMIN

RESULTS="$OUT/results.md"
echo "| setup | token | req/s | p50 | p99 | ratio vs native |" > "$RESULTS"
echo "|---|---|---|---|---|---|" >> "$RESULTS"
declare -A RPS
run_wrk() { # label, token mode
  local label=$1 mode=$2 log="$OUT/wrk-$1-$2.txt"
  if [ "$mode" = fresh ]; then
    TOKENS_FILE="$OUT/fresh.tokens" wrk -t1 -c"$CONNECTIONS" -d"${SECONDS_PER_RUN}s" --latency -s bench/fresh_tokens.lua "http://127.0.0.1:$LISTEN/api/chat" > "$log"
  else
    wrk -t1 -c"$CONNECTIONS" -d"${SECONDS_PER_RUN}s" --latency -H "authorization: Bearer $TOKEN" "http://127.0.0.1:$LISTEN/api/chat" > "$log"
  fi
  local rps p50 p99 non2xx
  rps=$(awk '/Requests\/sec/ {print int($2)}' "$log")
  p50=$(awk '$1=="50%" {print $2}' "$log")
  p99=$(awk '$1=="99%" {print $2}' "$log")
  non2xx=$(awk '/Non-2xx/ {print $NF}' "$log")
  [ -n "$non2xx" ] && echo "warning: $label/$mode had $non2xx non-2xx responses (see $log)" >&2
  echo "$label $mode $rps $p50 $p99"
}

for setup in no-filter native-baseline chatguard; do
  case $setup in
    no-filter) start_envoy no-filter admin_port=$ADMIN listen_port=$LISTEN upstream_port=$UP ;;
    native-baseline) start_envoy native-baseline admin_port=$ADMIN listen_port=$LISTEN upstream_port=$UP jwks="$OUT/keys/jwks.json" ;;
    chatguard) start_envoy chatguard admin_port=$ADMIN listen_port=$LISTEN upstream_port=$UP idp_port=$UP collector_port=$UP wasm="$CHATGUARD_WASM" policy="$OUT/policy.json" ;;
  esac
  wait_ready $ADMIN
  curl -s -o /dev/null -w "$setup check: %{http_code}\n" -H "authorization: Bearer $TOKEN" "http://127.0.0.1:$LISTEN/api/chat"
  wrk -t1 -c"$CONNECTIONS" -d2s -H "authorization: Bearer $TOKEN" "http://127.0.0.1:$LISTEN/api/chat" >/dev/null # warm-up
  modes="repeated fresh"; [ $setup = no-filter ] && modes=repeated
  for mode in $modes; do
    read -r l m rps p50 p99 < <(run_wrk $setup $mode)
    RPS["$setup-$mode"]=$rps
    echo "| $setup | $mode | $rps | $p50 | $p99 | @$setup-$mode@ |" >> "$RESULTS"
  done
  kill "${PIDS[-1]}"; wait "${PIDS[-1]}" 2>/dev/null || true; unset 'PIDS[-1]'
  sleep 1
done

for key in "${!RPS[@]}"; do
  mode=${key##*-}; native=${RPS[native-baseline-$mode]:-${RPS[native-baseline-repeated]}}
  ratio=$(python3 -c "print(f'{${RPS[$key]}/max($native,1):.2f}x')")
  sed -i "s/@$key@/$ratio/" "$RESULTS"
done
echo; cat "$RESULTS"
echo; echo "(wrk -t1 -c$CONNECTIONS -d${SECONDS_PER_RUN}s; Envoy --concurrency 1; logs in $OUT)"

# Native micro-benchmarks of the engine stages.
for b in $(ls benches/*.rs 2>/dev/null | xargs -n1 basename 2>/dev/null | sed 's/\.rs$//'); do
  echo; echo "## cargo bench --bench $b"; cargo bench --quiet --bench "$b" 2>/dev/null | grep -v '^$' || true
done
