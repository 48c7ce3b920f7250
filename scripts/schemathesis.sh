#!/usr/bin/env bash
# Runs schemathesis (pinned, in a project-local venv) against /openapi.json of
# a real `doorcode serve` on loopback with a fresh SQLite data dir, seeded
# through the API with a courier's route for today, parcels and an enrolled
# device, so authenticated operations are tested past authentication.
#
#   scripts/schemathesis.sh              (bounded: ~2-3 minutes with a warm build)
#   SCHEMATHESIS_MAX_EXAMPLES=200 SCHEMATHESIS_MAX_TIME=300 scripts/schemathesis.sh
#
# Every check applies (no 5xx, response schema and status code conformance,
# content types, headers, negative data rejected, positive data accepted,
# ignored auth...) except the ones excluded below with the reason. Exits
# non-zero on any failure; the reports land in target/schemathesis/.
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=4.32.5
VENV=.tools/schemathesis-venv
MAX_EXAMPLES="${SCHEMATHESIS_MAX_EXAMPLES:-40}"
# Per group of operations (three groups, one per kind of credential).
MAX_TIME="${SCHEMATHESIS_MAX_TIME:-45}"
SEED="${SCHEMATHESIS_SEED:-$RANDOM}"

step() { printf '\n==> %s\n' "$*"; }

if ! "$VENV/bin/schemathesis" --version 2>/dev/null | grep -q "version $VERSION\$"; then
  step "installing schemathesis $VERSION into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$VERSION"
fi

step "building the server"
# The same feature set as `cargo test --workspace --all-targets` (scripts/test.sh):
# after that run this builds nothing; a `-p` build would rebuild ~30 crates.
cargo build --workspace --all-targets --locked
BIN="$PWD/target/debug/doorcode"

work="$(mktemp -d "${TMPDIR:-/tmp}/doorcode-schemathesis.XXXXXX")"
server_pid=""
cleanup() {
  if [ -n "$server_pid" ]; then
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

step "starting doorcode serve on a free loopback port"
"$BIN" serve --data-dir "$work/data" --listen 127.0.0.1:0 >"$work/stdout" 2>"$work/server.log" &
server_pid=$!
url=""
for _ in $(seq 1 200); do
  url="$(sed -n 's/^doorcode listening on \(http:[^ ]*\)$/\1/p' "$work/stdout")"
  [ -n "$url" ] && break
  kill -0 "$server_pid" 2>/dev/null || { cat "$work/server.log" >&2; exit 1; }
  sleep 0.05
done
[ -n "$url" ] || { echo "the server did not start" >&2; cat "$work/server.log" >&2; exit 1; }
admin="$(sed -n 's/^dispatch admin token (shown once, stored hashed): //p' "$work/stdout")"
[ -n "$admin" ] || { echo "no admin token on stdout" >&2; exit 1; }
echo "server at $url"

# POST JSON; prints the answer; fails on any status but 200.
post() {
  local path="$1" token="$2" body="$3" out status
  out="$work/answer.json"
  status="$(curl -sS -o "$out" -w '%{http_code}' -X POST "$url$path" \
    -H 'Content-Type: application/json' ${token:+-H "Authorization: Bearer $token"} \
    --data-binary "$body")"
  if [ "$status" != 200 ]; then
    echo "seeding $path answered $status: $(cat "$out")" >&2
    exit 1
  fi
  cat "$out"
}

step "seeding: parcels, a route for today, an enrolled device"
today="$(date -u +%F)"
post /v1/parcels "$admin" '{"parcels":[
  {"parcel_id":"P-1001","recipient":{"name":"J. Doe","email":"j@example.com"},"address":"1 Example Street","value":120,"currency":"EUR"},
  {"parcel_id":"P-1002","recipient":{"name":"A. Roe","phone":"+442079460000"},"address":"2 Example Street","value":10,"currency":"EUR"},
  {"parcel_id":"P-1003","recipient":{"name":"B. Poe"},"address":"3 Example Street","value":80,"currency":"USD","requires_code":true}]}' >/dev/null
enrollment="$(post /v1/enrollments "$admin" '{"courier_id":"C-42"}' | jq -r .enrollment_code)"
# A real Ed25519 public key (32 bytes, base64url); the device never signs here.
public_key="Kay64UG8yvCyLhqU000LxzYeUm0L_hLIl5S8kyKWbdc"
device="$(post /v1/devices "" "{\"enrollment_code\":\"$enrollment\",\"device_public_key\":\"$public_key\",\"device_name\":\"schemathesis phone\"}")"
device_token="$(jq -r .device_token <<<"$device")"
post /v1/routes "$admin" "{\"route_id\":\"R-7\",\"courier_id\":\"C-42\",\"delivery_date\":\"$today\",\"stops\":[
  {\"stop_id\":\"S-1\",\"address\":\"1 Example Street\",\"parcel_ids\":[\"P-1001\",\"P-1002\"]},
  {\"stop_id\":\"S-2\",\"address\":\"3 Example Street\",\"parcel_ids\":[\"P-1003\"]}]}" >/dev/null

# Checks left out, and why:
# - positive_data_acceptance: schema-valid bodies are routinely and rightly
#   refused by domain rules the schema cannot express (a route for a courier
#   or parcel that does not exist is 404/409, an enrollment code that was never
#   issued is 403, a date more than a year away is 422).
checks=(--checks all --exclude-checks positive_data_acceptance)
# One worker: with two, hypothesis parses lambda sources (ast) from two threads
# at once, and CPython 3.11.7 (this machine's python3) then raises a spurious
# "SystemError: AST constructor recursion depth mismatch" (cpython gh-106905,
# fixed in 3.11.8), which schemathesis reports as a failed operation.
common=("$url/openapi.json" "${checks[@]}" --max-examples "$MAX_EXAMPLES" --max-time "$MAX_TIME"
  --seed "$SEED" --workers 1 --request-timeout 20 --no-color
  --generation-database none --report junit,ndjson --report-dir target/schemathesis)

rc=0
step "schemathesis: dispatch operations with the dispatch token (seed $SEED)"
"$VENV/bin/schemathesis" run "${common[@]}" --include-tag dispatch \
  -H "Authorization: Bearer $admin" --report-junit-path target/schemathesis/dispatch.xml || rc=1
step "schemathesis: device operations with the device token"
"$VENV/bin/schemathesis" run "${common[@]}" --include-tag device \
  -H "Authorization: Bearer $device_token" --report-junit-path target/schemathesis/device.xml || rc=1
step "schemathesis: customer and ops operations, no credentials"
"$VENV/bin/schemathesis" run "${common[@]}" --include-tag customer --include-tag ops \
  --report-junit-path target/schemathesis/public.xml || rc=1

if grep -q 'status=5[0-9][0-9]' "$work/server.log"; then
  echo "the server logged a 5xx:" >&2
  grep 'status=5[0-9][0-9]' "$work/server.log" | head -20 >&2
  rc=1
fi
if [ "$rc" != 0 ]; then
  step "SCHEMATHESIS FOUND PROBLEMS (seed $SEED; reports in target/schemathesis/)"
  exit 1
fi
step "schemathesis: no failures (seed $SEED)"
