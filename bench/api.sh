#!/usr/bin/env bash
# The server API's throughput and latency under wrk, against the API
# listener's HTTP stack alone (GET /healthz) measured in the same run:
#
#   healthz   GET /healthz                      (hyper, routing, metrics; no core)
#   online    GET /v1/users/online?uids=1..100  (auth, rate limit, every shard)
#   publish   POST /v1/channels/cn/bench/messages, a new message_id each time
#             (auth, JSON, the channel's shard, the history append)
#   history   GET /v1/channels/cn/bench/messages?limit=100 (100 messages as JSON)
#
# Usage: bench/api.sh            (DURATION=10 CONNS=16 SERVER_THREADS=2)
# Installs wrk (Debian's package) when it is missing. The rate limit is set
# out of the way (--api-rate). Prints one line per scenario: requests/s,
# p50 and p99 latency, and requests/s as a ratio of healthz's.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10}
CONNS=${CONNS:-16}
SERVER_THREADS=${SERVER_THREADS:-2}
KEY=bench-api-key-0123456789-abcdefghijklmnop

if ! command -v wrk >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk
fi
cargo build --release -q -p hummer-server
bin=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release/hummer-server

work=$(mktemp -d)
"$bin" --listen 127.0.0.1:0 --api-listen 127.0.0.1:0 --api-key "10000:$KEY" \
  --api-rate 100000000 --threads "$SERVER_THREADS" --log warn >"$work/out" 2>"$work/err" &
pid=$!
trap 'kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 100); do
  grep -q "hummer-server API on" "$work/out" && break
  sleep 0.05
done
api=$(sed -n 's/^hummer-server API on \(http:[^ ]*\).*/\1/p' "$work/out")
[ -n "$api" ] || { cat "$work/out" "$work/err"; exit 1; }

cat >"$work/auth.lua" <<EOF
wrk.headers["Authorization"] = "apikey $KEY"
EOF
cat >"$work/publish.lua" <<EOF
local next_tid = 1
function setup(thread)
  thread:set("tid", next_tid)
  next_tid = next_tid + 1
end
local n = 0
function request()
  n = n + 1
  local body = '{"message_id": ' .. (tid * 1000000000 + n) .. ', "type": "bench", "content": "hello from wrk"}'
  return wrk.format("POST", nil, {["Authorization"] = "apikey $KEY", ["Content-Type"] = "application/json"}, body)
end
EOF
uids=$(seq -s, 1 100)

# run NAME URL [SCRIPT]: one wrk run; prints "NAME rps p50 p99".
run() {
  local name=$1 url=$2 script=${3:-}
  local args=(-t2 "-c$CONNS" "-d${DURATION}s" --latency)
  [ -n "$script" ] && args+=(-s "$script")
  wrk "${args[@]}" "$url" >"$work/$name.txt"
  if grep -q "Non-2xx" "$work/$name.txt"; then
    echo "$name: answers other than 2xx:" >&2
    cat "$work/$name.txt" >&2
    exit 1
  fi
  python3 - "$name" "$work/$name.txt" <<'PY'
import re, sys
name, text = sys.argv[1], open(sys.argv[2]).read()
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
def pct(p):
    m = re.search(r"\s%s%%\s+([\d.]+)(us|ms|s)\b" % p, text)
    v, unit = float(m.group(1)), m.group(2)
    return v / 1000 if unit == "us" else v * 1000 if unit == "s" else v
print(f"{name} {rps:.0f} {pct(50):.3f} {pct(99):.3f}")
PY
}

{
  run healthz "$api/healthz"
  run online "$api/v1/users/online?uids=$uids" "$work/auth.lua"
  run publish "$api/v1/channels/cn/bench/messages" "$work/publish.lua"
  run history "$api/v1/channels/cn/bench/messages?limit=100" "$work/auth.lua"
} >"$work/results"

echo "# bench/api.sh: ${DURATION}s per scenario, $CONNS connections, wrk -t2, server threads $SERVER_THREADS"
printf "%-9s %10s %9s %9s %13s\n" scenario "req/s" "p50 ms" "p99 ms" "vs healthz"
base=$(awk '$1=="healthz"{print $2}' "$work/results")
while read -r name rps p50 p99; do
  printf "%-9s %10s %9s %9s %13s\n" "$name" "$rps" "$p50" "$p99" "$(python3 -c "print(f'{$rps/$base:.2f}')")"
done <"$work/results"
