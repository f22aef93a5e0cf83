#!/usr/bin/env bash
# `make bench`, in one run on this machine (figures go to BENCHMARKS.md as ratios):
# - envoy: Envoy with no filter, with Envoy's native jwt_authn + rbac +
#   local_ratelimit, and with chatguard (repeated and fresh RS256 tokens);
# - rate:  the rate stage beside native local_ratelimit, shared-data calls/request;
# - micro: native stage benchmarks (cargo bench: rbac, ratelimit, redact);
# - wasm:  redaction inside wasm (the wasmtime harness) beside regex-lite.
# wrk: 1 thread, 16 connections; Envoy --concurrency 1; a direct-response Envoy upstream.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${ENVOY_BIN:?run through make}" "${CHATGUARD_WASM:?}" "${CHATGUARD_CLI:?}"
CONNECTIONS=${BENCH_CONNECTIONS:-16}
OUT=target/bench; mkdir -p "$OUT"
BASE_PORT=${BENCH_BASE_PORT:-21000}
UP=$((BASE_PORT)); UP_ADMIN=$((BASE_PORT + 1))
PIDS=()
cleanup() { for p in "${PIDS[@]:-}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT INT TERM

wait_ready() { for _ in $(seq 1 150); do curl -sf "http://127.0.0.1:$1/ready" >/dev/null 2>&1 && return 0; sleep 0.2; done; echo "envoy on admin :$1 did not start" >&2; return 1; }

# CPU pinning: every Envoy under test runs on the last CPU, wrk and the upstream
# on the others, so a setup's figure is what one Envoy worker core can do rather
# than how the scheduler shared two cores among four busy threads that round.
# BENCH_NO_PIN=1 turns it off.
PIN_SUT=""; PIN_LOAD=""
if [ -z "${BENCH_NO_PIN:-}" ] && command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
  LAST_CPU=$(( $(nproc) - 1 ))
  PIN_SUT="taskset -c $LAST_CPU"; PIN_LOAD="taskset -c 0-$(( LAST_CPU - 1 ))"
fi

# One Envoy: render TEMPLATE as NAME, start it (pinned as the system under
# test, or as load when it is the upstream).
launch() { # name, template, render args...
  local name=$1 tmpl=$2 pin=$PIN_SUT; shift 2
  [ "$name" = direct-upstream ] && pin=$PIN_LOAD
  python3 envoy/render.py "envoy/$tmpl.yaml.tmpl" "$@" > "$OUT/$name.yaml"
  $pin "$ENVOY_BIN" -c "$OUT/$name.yaml" --concurrency 1 -l error --use-dynamic-base-id >"$OUT/$name.log" 2>&1 &
  PIDS+=($!)
}
# Waits for it, checks one request, warms it up: name, admin port, port, header.
warm() {
  wait_ready "$2"
  curl -s -o /dev/null -w "$1 check: %{http_code}\n" -H "$4" "http://127.0.0.1:$3/api/chat"
  $PIN_LOAD wrk -t1 -c"$CONNECTIONS" -d2s -H "$4" "http://127.0.0.1:$3/api/chat" >/dev/null
}
# Stops the last N Envoys started.
stop_last() { for _ in $(seq 1 "$1"); do kill "${PIDS[-1]}" 2>/dev/null || true; wait "${PIDS[-1]}" 2>/dev/null || true; unset 'PIDS[-1]'; done; }

# Keys and tokens for this run only.
"$CHATGUARD_CLI" token keygen --out "$OUT/keys" --kid bench >/dev/null
sign() { "$CHATGUARD_CLI" token sign --key "$OUT/keys/private.pem" --kid bench --sub bench-user --ttl 7200 --claims '{"roles":["employee"]}' "$@"; }
TOKEN=$(sign)
# Enough fresh tokens that no round replays another's (a cache-miss round at
# up to 1,500 req/s); signed on two cores.
FRESH_COUNT=${BENCH_FRESH_TOKENS:-$(( ${BENCH_ROUNDS:-5} * ${BENCH_ROUND_SECONDS:-4} * 1500 ))}
sign --count $(( (FRESH_COUNT + 1) / 2 )) > "$OUT/fresh.tokens.1" &
sign --count $(( FRESH_COUNT / 2 )) > "$OUT/fresh.tokens.2"
wait
cat "$OUT/fresh.tokens.1" "$OUT/fresh.tokens.2" > "$OUT/fresh.tokens"
python3 - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
jwks = json.load(open(f"{out}/keys/jwks.json"))
policy = json.load(open("bench/policy.json"))
policy["jwt"]["providers"][0]["jwks"] = jwks
json.dump(policy, open(f"{out}/policy.json", "w"))
PY

launch direct-upstream direct-upstream admin_port=$UP_ADMIN listen_port=$UP
wait_ready $UP_ADMIN

# Sections: BENCH_ONLY="envoy rate micro wasm" (default: all) picks some.
# Envoy setups run side by side and are measured in BENCH_ROUNDS interleaved
# rounds of BENCH_ROUND_SECONDS each.
ROUNDS=${BENCH_ROUNDS:-5}
ROUND_SECONDS=${BENCH_ROUND_SECONDS:-4}
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
want() { [ -z "${BENCH_ONLY:-}" ] || [[ " $BENCH_ONLY " == *" $1 "* ]]; }

# Envoy with no filter, native jwt_authn + rbac + local_ratelimit, chatguard,
# side by side, measured in interleaved rounds (median req/s; p50/p99 of the
# median round): single runs on a small machine differ by 20%.
envoy_section() {
  local setups="no-filter native-baseline chatguard" n=0 setup mode round
  declare -A PORT AD RUNS LOGS MED
  for setup in $setups; do
    PORT[$setup]=$((BASE_PORT + 30 + 2 * n)); AD[$setup]=$((BASE_PORT + 31 + 2 * n)); n=$((n + 1))
    local args=(admin_port=${AD[$setup]} listen_port=${PORT[$setup]} upstream_port=$UP)
    case $setup in
      native-baseline) args+=(jwks="$OUT/keys/jwks.json") ;;
      chatguard) args+=(idp_port=$UP collector_port=$UP wasm="$CHATGUARD_WASM" policy="$OUT/policy.json") ;;
    esac
    launch "$setup" "$setup" "${args[@]}"
  done
  for setup in $setups; do warm "$setup" "${AD[$setup]}" "${PORT[$setup]}" "authorization: Bearer $TOKEN"; done
  for round in $(seq 1 "$ROUNDS"); do
    for setup in $setups; do
      for mode in repeated fresh; do
        [ "$setup" = no-filter ] && [ "$mode" = fresh ] && continue
        local log="$OUT/wrk-$setup-$mode-$round.txt" url="http://127.0.0.1:${PORT[$setup]}/api/chat"
        if [ "$mode" = fresh ]; then
          TOKENS_OFFSET=$(( (round - 1) * FRESH_COUNT / ROUNDS )) TOKENS_FILE="$OUT/fresh.tokens" $PIN_LOAD wrk -t1 -c"$CONNECTIONS" -d"${ROUND_SECONDS}s" --latency -s bench/fresh_tokens.lua "$url" > "$log"
        else
          $PIN_LOAD wrk -t1 -c"$CONNECTIONS" -d"${ROUND_SECONDS}s" --latency -H "authorization: Bearer $TOKEN" "$url" > "$log"
        fi
        # Native jwt_authn caches nothing, so only chatguard must never see a token twice.
        if [ "$setup" = chatguard ] && [ "$mode" = fresh ] && [ "$(awk '/requests in/ {print $1}' "$log")" -gt $(( FRESH_COUNT / ROUNDS )) ]; then
          echo "warning: $setup/fresh round $round used more than its $(( FRESH_COUNT / ROUNDS )) tokens: raise BENCH_FRESH_TOKENS" >&2
        fi
        local non2xx; non2xx=$(awk '/Non-2xx/ {print $NF}' "$log")
        [ -n "$non2xx" ] && echo "warning: $setup/$mode had $non2xx non-2xx responses (see $log)" >&2
        RUNS[$setup-$mode]="${RUNS[$setup-$mode]:-} $(awk '/Requests\/sec/ {print int($2)}' "$log")"
        LOGS[$setup-$mode]="${LOGS[$setup-$mode]:-} $log"
      done
    done
  done
  RESULTS="$OUT/results.md"
  {
    echo "| setup | token | req/s (median of $ROUNDS) | all rounds | p50 | p99 | ratio vs native (same token mode) |"
    echo "|---|---|---|---|---|---|---|"
    local keys="no-filter-repeated native-baseline-repeated native-baseline-fresh chatguard-repeated chatguard-fresh" key
    for key in $keys; do MED[$key]=$(echo "${RUNS[$key]}" | median); done
    for key in $keys; do
      local mlog; mlog=$(for l in ${LOGS[$key]}; do echo "$(awk '/Requests\/sec/ {print int($2)}' "$l") $l"; done | awk -v m="${MED[$key]}" '$1==m {print $2; exit}')
      local native=${MED[native-baseline-${key##*-}]:-${MED[native-baseline-repeated]}}
      echo "| ${key%-*} | ${key##*-} | ${MED[$key]} | ${RUNS[$key]# } | $(awk '$1=="50%" {print $2}' "$mlog") | $(awk '$1=="99%" {print $2}' "$mlog") | $(python3 -c "print(f'{${MED[$key]}/max($native,1):.2f}x')") |"
    done
  } > "$RESULTS"
  stop_last 3
  echo; cat "$RESULTS"
  echo; echo "(wrk -t1 -c$CONNECTIONS, $ROUNDS rounds of ${ROUND_SECONDS}s; Envoy --concurrency 1; pinning: ${PIN_SUT:-none} for Envoy, ${PIN_LOAD:-none} for wrk and upstream; logs in $OUT)"
}

rate_section() {
  # The rate stage inside Envoy (issue 5): tokenless requests keyed on the client
  # IP, so only the stage differs. Envoy's native local_ratelimit alone; chatguard
  # with an empty policy (the pipeline without the stage); with one bucket; with
  # three buckets and the lockout check. Buckets are large enough never to deny.
  # The four Envoys run side by side and are measured in interleaved rounds
  # (median req/s): on a small machine single runs differ by 20%, more than the
  # stage costs. Shared-data calls per request come from chatguard's own counters
  # (`shared_data.reads|writes`, flushed on the 100 ms tick) over wrk's request count.
  echo '{}' > "$OUT/rate-none.json"
  echo '{"rate_limits":[{"name":"per-ip","key":"client_ip","capacity":1000000000,"refill_per_minute":1000000000}]}' > "$OUT/rate-one.json"
  echo '{"rate_limits":[
    {"name":"per-ip","key":"client_ip","capacity":1000000000,"refill_per_minute":1000000000},
    {"name":"per-tenant","key":"header:x-tenant","capacity":1000000000,"refill_per_minute":1000000000},
    {"name":"per-ip-burst","key":"client_ip","capacity":999999999,"refill_per_minute":1000000000}],
   "lockout":{"max_failures":5,"window_seconds":300,"lock_seconds":900,"key":"client_ip"}}' > "$OUT/rate-three.json"
  RATE_SETUPS="native-ratelimit chatguard-none chatguard-one chatguard-three"
  declare -A RPORT RADMIN
  n=0
  for setup in $RATE_SETUPS; do
    RPORT[$setup]=$((BASE_PORT + 10 + 2 * n)); RADMIN[$setup]=$((BASE_PORT + 11 + 2 * n)); n=$((n + 1))
    local args=(admin_port=${RADMIN[$setup]} listen_port=${RPORT[$setup]} upstream_port=$UP)
    case $setup in
      native-ratelimit) launch "$setup" native-ratelimit "${args[@]}" ;;
      chatguard-*) launch "$setup" chatguard "${args[@]}" idp_port=$UP collector_port=$UP wasm="$CHATGUARD_WASM" policy="$OUT/rate-${setup#chatguard-}.json" ;;
    esac
  done
  for setup in $RATE_SETUPS; do warm "$setup" "${RADMIN[$setup]}" "${RPORT[$setup]}" "x-tenant: t1"; done
  stat_of() { curl -s "http://127.0.0.1:$1/stats?filter=$2" | awk -F': ' -v n="$2" '$1 ~ n {print $2; f=1} END {if (!f) print 0}' | head -1; }
  declare -A RUNS READS WRITES TOTAL
  sleep 0.3
  for setup in $RATE_SETUPS; do
    READS[$setup]=$(( - $(stat_of ${RADMIN[$setup]} shared_data.reads) )); WRITES[$setup]=$(( - $(stat_of ${RADMIN[$setup]} shared_data.writes) )); TOTAL[$setup]=0
  done
  for round in $(seq 1 "$ROUNDS"); do
    for setup in $RATE_SETUPS; do
      log="$OUT/wrk-rate-$setup-$round.txt"
      $PIN_LOAD wrk -t1 -c"$CONNECTIONS" -d"${ROUND_SECONDS}s" -H "x-tenant: t1" "http://127.0.0.1:${RPORT[$setup]}/api/chat" > "$log"
      non2xx=$(awk '/Non-2xx/ {print $NF}' "$log")
      [ -n "$non2xx" ] && echo "warning: $setup had $non2xx non-2xx responses (see $log)" >&2
      RUNS[$setup]="${RUNS[$setup]:-} $(awk '/Requests\/sec/ {print int($2)}' "$log")"
      TOTAL[$setup]=$(( TOTAL[$setup] + $(awk '/requests in/ {print $1}' "$log") ))
    done
  done
  sleep 0.3
  declare -A RRPS
  for setup in $RATE_SETUPS; do
    READS[$setup]=$(( READS[$setup] + $(stat_of ${RADMIN[$setup]} shared_data.reads) ))
    WRITES[$setup]=$(( WRITES[$setup] + $(stat_of ${RADMIN[$setup]} shared_data.writes) ))
    RRPS[$setup]=$(echo "${RUNS[$setup]}" | median)
  done
  RATE="$OUT/rate.md"
  {
    echo "| setup | req/s (median of $ROUNDS) | all rounds | ratio vs native local_ratelimit | shared-data reads/req | writes/req |"
    echo "|---|---|---|---|---|---|"
    for setup in $RATE_SETUPS; do
      ratio=$(python3 -c "print(f'{${RRPS[$setup]}/max(${RRPS[native-ratelimit]},1):.2f}x')")
      if [ "$setup" = native-ratelimit ]; then per="- | -"; else
        per=$(python3 -c "t=max(${TOTAL[$setup]},1); print(f'{${READS[$setup]}/t:.2f} | {${WRITES[$setup]}/t:.2f}')"); fi
      echo "| $setup | ${RRPS[$setup]} | ${RUNS[$setup]# } | $ratio | $per |"
    done
  } > "$RATE"
  stop_last 4
  stage_us() { python3 -c "print(f'{(1/max($2,1)-1/max($1,1))*1e6:+.1f}')"; }
  echo; cat "$RATE"
  echo "rate stage, worker time per request (difference of 1/median req/s, one worker saturated):" \
    "one bucket $(stage_us "${RRPS[chatguard-none]}" "${RRPS[chatguard-one]}") us," \
    "three buckets + lockout $(stage_us "${RRPS[chatguard-none]}" "${RRPS[chatguard-three]}") us"

}

micro_section() {
  # Native micro-benchmarks of the engine stages.
  for b in $(ls benches/*.rs 2>/dev/null | xargs -n1 basename 2>/dev/null | sed 's/\.rs$//'); do
    # cargo bench also builds the CLI binary, with the release profile's
    # panic=abort, and so the library twice (abort, and unwind for the bench)
    # into one unhashed file (a cdylib crate): a bench could then link the wrong
    # one. One panic strategy for this build avoids it (the CLI is rebuilt with
    # abort by the next `make cli`).
    echo; echo "## cargo bench --bench $b"
    CARGO_PROFILE_RELEASE_PANIC=unwind cargo bench --quiet --bench "$b" 2>&1 | grep -v '^$' | grep -v 'output filename collision\|= note\|= help\|^ *|$' || true
  done
}

wasm_section() {
  # Redaction inside wasm: the built module in the wasmtime harness (issue 4).
  echo; echo "## redaction inside wasm (cargo run -p wasm-tests --example redact_wasm)"
  cargo run --quiet -p wasm-tests --example redact_wasm
}

if want envoy; then envoy_section; fi
if want rate; then rate_section; fi
if want micro; then micro_section; fi
if want wasm; then wasm_section; fi
