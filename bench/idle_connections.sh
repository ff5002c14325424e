#!/usr/bin/env bash
# Holds N (default 10,000) concurrent idle logged-in connections to one
# hummer-server (release) on 127.0.0.1 and reports its resident memory
# (VmRSS from /proc/PID/status) before and after. The server is started here
# on a free port and stopped by its PID on exit.
#
#   bench/idle_connections.sh [N]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-10000}

# Each side needs N descriptors (the server one per client, the load tool one
# per connection): raise the soft limit as far as the hard limit allows.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
echo "open-file limit: $(ulimit -n)"
if (($(ulimit -n) < N + 100)); then
    echo "the open-file limit $(ulimit -n) is below $N connections plus margin" >&2
    exit 1
fi

cargo build --release --quiet -p hummer-server -p hummer-load
BIN=${CARGO_TARGET_DIR:-target}/release
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()' 2>/dev/null \
    || echo $((20000 + RANDOM % 20000)))
LOG=$(mktemp)
"$BIN/hummer-server" --listen "127.0.0.1:$PORT" --login-rate-per-ip 1000000000 --max-connections-per-ip 1000000 --log warn >"$LOG" 2>&1 &
PID=$!
trap 'kill "$PID" 2>/dev/null || true; for _ in $(seq 50); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done; kill -9 "$PID" 2>/dev/null || true; rm -f "$LOG"' EXIT
for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
    sleep 0.1
done
"$BIN/hummer-load" idle --addr "127.0.0.1:$PORT" --server-pid "$PID" --conns "$N" --hold-secs 3
