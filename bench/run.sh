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

# The rate stage inside Envoy (issue 5): tokenless requests keyed on the client
# IP, so only the stage differs. Envoy's native local_ratelimit alone; chatguard
# with an empty policy (the pipeline without the stage); with one bucket; with
# three buckets and the lockout check. Buckets are large enough never to deny.
# Shared-data calls per request come from chatguard's own counters
# (`shared_data.reads|writes`, flushed on the 100 ms tick) over wrk's request count.
echo '{}' > "$OUT/rate-none.json"
echo '{"rate_limits":[{"name":"per-ip","key":"client_ip","capacity":1000000000,"refill_per_minute":1000000000}]}' > "$OUT/rate-one.json"
cat > "$OUT/rate-three.json" <<'JSON'
{"rate_limits":[
  {"name":"per-ip","key":"client_ip","capacity":1000000000,"refill_per_minute":1000000000},
  {"name":"per-tenant","key":"header:x-tenant","capacity":1000000000,"refill_per_minute":1000000000},
  {"name":"per-ip-burst","key":"client_ip","capacity":999999999,"refill_per_minute":1000000000}],
 "lockout":{"max_failures":5,"window_seconds":300,"lock_seconds":900,"key":"client_ip"}}
JSON
stat_of() { curl -s "http://127.0.0.1:$ADMIN/stats?filter=$1" | awk -F': ' -v n="$1" '$1 ~ n {print $2; f=1} END {if (!f) print 0}' | head -1; }
RATE="$OUT/rate.md"
echo "| setup | req/s | p50 | p99 | ratio vs native local_ratelimit | shared-data reads/req | writes/req |" > "$RATE"
echo "|---|---|---|---|---|---|---|" >> "$RATE"
declare -A RRPS
for setup in native-ratelimit chatguard-none chatguard-one chatguard-three; do
  case $setup in
    native-ratelimit) start_envoy native-ratelimit admin_port=$ADMIN listen_port=$LISTEN upstream_port=$UP ;;
    chatguard-*) start_envoy chatguard admin_port=$ADMIN listen_port=$LISTEN upstream_port=$UP idp_port=$UP collector_port=$UP wasm="$CHATGUARD_WASM" policy="$OUT/rate-${setup#chatguard-}.json" ;;
  esac
  wait_ready $ADMIN
  curl -s -o /dev/null -w "$setup check: %{http_code}\n" -H "x-tenant: t1" "http://127.0.0.1:$LISTEN/api/chat"
  wrk -t1 -c"$CONNECTIONS" -d2s -H "x-tenant: t1" "http://127.0.0.1:$LISTEN/api/chat" >/dev/null # warm-up
  sleep 0.3
  r0=$(stat_of shared_data.reads); w0=$(stat_of shared_data.writes)
  log="$OUT/wrk-rate-$setup.txt"
  wrk -t1 -c"$CONNECTIONS" -d"${SECONDS_PER_RUN}s" --latency -H "x-tenant: t1" "http://127.0.0.1:$LISTEN/api/chat" > "$log"
  sleep 0.3
  r1=$(stat_of shared_data.reads); w1=$(stat_of shared_data.writes)
  total=$(awk '/requests in/ {print $1}' "$log")
  non2xx=$(awk '/Non-2xx/ {print $NF}' "$log")
  [ -n "$non2xx" ] && echo "warning: $setup had $non2xx non-2xx responses (see $log)" >&2
  RRPS[$setup]=$(awk '/Requests\/sec/ {print int($2)}' "$log")
  per() { [ "$setup" = native-ratelimit ] && { echo "-"; return; }; python3 -c "print(f'{($2-$1)/max($3,1):.2f}')"; }
  echo "| $setup | ${RRPS[$setup]} | $(awk '$1=="50%" {print $2}' "$log") | $(awk '$1=="99%" {print $2}' "$log") | @$setup@ | $(per "$r0" "$r1" "$total") | $(per "$w0" "$w1" "$total") |" >> "$RATE"
  kill "${PIDS[-1]}"; wait "${PIDS[-1]}" 2>/dev/null || true; unset 'PIDS[-1]'
  sleep 1
done
for key in "${!RRPS[@]}"; do
  sed -i "s/@$key@/$(python3 -c "print(f'{${RRPS[$key]}/max(${RRPS[native-ratelimit]},1):.2f}x')")/" "$RATE"
done
stage_us() { python3 -c "print(f'{(1/max($2,1)-1/max($1,1))*1e6:.1f}')"; }
echo; cat "$RATE"
echo "rate stage, worker time per request (1/req/s difference, one worker saturated):" \
  "one bucket +$(stage_us "${RRPS[chatguard-none]}" "${RRPS[chatguard-one]}") us," \
  "three buckets + lockout +$(stage_us "${RRPS[chatguard-none]}" "${RRPS[chatguard-three]}") us"

# Native micro-benchmarks of the engine stages.
for b in $(ls benches/*.rs 2>/dev/null | xargs -n1 basename 2>/dev/null | sed 's/\.rs$//'); do
  echo; echo "## cargo bench --bench $b"; cargo bench --quiet --bench "$b" 2>/dev/null | grep -v '^$' || true
done
# Redaction inside wasm: the built module in the wasmtime harness (issue 4).
echo; echo "## redaction inside wasm (cargo run -p wasm-tests --example redact_wasm)"
cargo run --quiet -p wasm-tests --example redact_wasm
