#!/usr/bin/env bash
# `make run`: Envoy + chatguard + a demo upstream, JWKS endpoint and audit
# collector, all on 127.0.0.1. Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${ENVOY_BIN:?run through make}" "${CHATGUARD_WASM:?}" "${CHATGUARD_CLI:?}"
LISTEN=${DEMO_PORT:-10000}; ADMIN=${DEMO_ADMIN_PORT:-9901}
UPSTREAM=18080; IDP=18081; COLLECTOR=18082
DEMO=.tools/demo
mkdir -p "$DEMO"

# Demo keys are made here, never committed: the policy trusts them through the
# JWKS endpoint, exactly as it would trust a real identity provider.
[ -f "$DEMO/private.pem" ] || "$CHATGUARD_CLI" token keygen --out "$DEMO" --kid demo-rs256 >/dev/null
python3 envoy/render.py admin_port=$ADMIN listen_port=$LISTEN upstream_port=$UPSTREAM \
  idp_port=$IDP collector_port=$COLLECTOR wasm="$CHATGUARD_WASM" policy="${DEMO_POLICY:-}" > "$DEMO/envoy.yaml"

python3 envoy/demo_servers.py $UPSTREAM $IDP $COLLECTOR "$DEMO/jwks.json" &
SERVERS=$!
"$ENVOY_BIN" -c "$DEMO/envoy.yaml" --concurrency 2 -l warning --use-dynamic-base-id &
ENVOY=$!
trap 'kill $ENVOY $SERVERS 2>/dev/null || true' EXIT INT TERM

for _ in $(seq 1 100); do
  curl -sf "http://127.0.0.1:$ADMIN/ready" >/dev/null 2>&1 && break
  sleep 0.2
done

sign() { "$CHATGUARD_CLI" token sign --key "$DEMO/private.pem" --kid demo-rs256 "$@"; }
EMPLOYEE=$(sign --sub alice --claims '{"roles":["employee"],"amr":["pwd"]}')
HR=$(sign --sub hannah --claims '{"roles":["hr_specialist"],"amr":["pwd","mfa"]}')
EXPIRED=$(sign --sub mallory --ttl 1 --now $(( $(date +%s) - 3600 )))
cat <<MSG

chatguard demo: Envoy on http://127.0.0.1:$LISTEN (admin :$ADMIN), upstream :$UPSTREAM,
JWKS :$IDP, audit collector :$COLLECTOR: it prints each audit record it receives
as one "[audit] {...}" JSON line below (watch only those: make run | grep '^\[audit\]').

  # a valid token (employee): 200; the demo chat API answers with what the model
  # received (the e-mail pseudonymised on the way in) and PII in its own answer
  # redacted on the way out
  curl -s -X POST http://127.0.0.1:$LISTEN/api/chat -H "authorization: Bearer $EMPLOYEE" \
    -H 'content-type: application/json' -d '{"messages":[{"role":"user","content":"mail jane.doe@example.com"}]}'

  # an expired token: 401 with WWW-Authenticate: Bearer error="invalid_token"
  curl -si -X POST http://127.0.0.1:$LISTEN/api/chat -H "authorization: Bearer $EXPIRED"

  # no token: 401
  curl -si -X POST http://127.0.0.1:$LISTEN/api/chat

  # a route no rule allows (GET on the chat route): 403
  curl -si http://127.0.0.1:$LISTEN/api/chat -H "authorization: Bearer $EMPLOYEE"

  # an HR specialist with MFA
  curl -s http://127.0.0.1:$LISTEN/api/hr/records -H "authorization: Bearer $HR"

  # metrics
  curl -s http://127.0.0.1:$ADMIN/stats | grep chatguard

Tokens are also in $DEMO/*.token. Ctrl-C to stop.
MSG
echo "$EMPLOYEE" > "$DEMO/employee.token"; echo "$HR" > "$DEMO/hr.token"; echo "$EXPIRED" > "$DEMO/expired.token"
wait $ENVOY
