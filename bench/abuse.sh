#!/usr/bin/env bash
# The attacks of issue 10 ("Hardening") against the release hummer-server on
# 127.0.0.1, one fresh server per attack, each for a bounded time; prints one
# table: the server's peak RSS growth (VmHWM/VmRSS from /proc), a healthy
# client's login time (max, p50) and ping p99 measured during the attack,
# what happened to the attacker, and the targets missed. Exits 0 when a
# target is missed (the table says so); non-zero only when it cannot run.
#
#   bench/abuse.sh                          # every attack, 10 s each, this tree's server
#   bench/abuse.sh --secs 5 --attacks a-pings,c-half-frames
#   bench/abuse.sh --landing                # the server of the landing commit 2ff8988
#                                           # (protocol 1; built in a worktree, see below)
#   bench/abuse.sh --server PATH --protocol 1   # any other server binary
#
# Targets (from the issue): a healthy login < 500 ms and ping p99 < 20 ms
# during every attack; (b) RSS growth <= max_queued_bytes + 1 MiB; (c) RSS
# growth <= 50 MB; (e) the victims' retained messages still delivered.
# `hummer-abuse list` describes the attacks.
#
# --landing builds the landing commit's server once: `git worktree add
# $LANDING_WT 2ff8988` (default ../wt-landing) and `cargo build --release
# --bin hummer-server` with CARGO_TARGET_DIR=$LANDING_TARGET (default
# ../target-landing). Attackers connect from 127.0.0.2 and the helper clients
# from 127.0.0.3 (Linux routes all of 127/8 to lo), so per-address caps count
# the attacker alone. Every process started here is stopped by its PID.
set -euo pipefail
cd "$(dirname "$0")/.."

SECS=${ABUSE_SECS:-10}
ATTACKS=""
SERVER=""
PROTO=2
LANDING=0
while (($#)); do
    case "$1" in
    --secs) SECS=$2; shift 2 ;;
    --attacks) ATTACKS=$2; shift 2 ;;
    --server) SERVER=$2; shift 2 ;;
    --protocol) PROTO=$2; shift 2 ;;
    --landing) LANDING=1; PROTO=1; shift ;;
    -h | --help) sed -n '2,27p' "$0"; exit 0 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
done

# Each attack needs up to ~2,100 descriptors here and in the server.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

cargo build --release --quiet -p hummer-server
BIN=${CARGO_TARGET_DIR:-target}/release
if ((LANDING)); then
    LANDING_WT=${LANDING_WT:-../wt-landing}
    LANDING_TARGET=${LANDING_TARGET:-../target-landing}
    if [[ ! -d $LANDING_WT ]]; then
        git worktree add "$LANDING_WT" 2ff8988
    fi
    (cd "$LANDING_WT" && CARGO_TARGET_DIR=$(realpath -m "$OLDPWD/$LANDING_TARGET") \
        cargo build --release --quiet --bin hummer-server)
    SERVER=$LANDING_TARGET/release/hummer-server
fi
SERVER=${SERVER:-$BIN/hummer-server}
[[ -x $SERVER ]] || { echo "no server binary at $SERVER" >&2; exit 1; }
if [[ -z $ATTACKS ]]; then
    ATTACKS=$("$BIN/hummer-abuse" list | awk '{print $1}' | paste -sd, -)
fi

# App secrets of at least 32 bytes (the server refuses shorter ones).
SECRET_A=abuse-bench-secret-of-app-10000-0123456789
SECRET_B=abuse-bench-secret-of-app-10001-0123456789
MAX_QUEUED=4194304
PER_IP_CAP=1000

PIDS=()
WORK=$(mktemp -d)
stop_pid() {
    kill "$1" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.1; done
    kill -9 "$1" 2>/dev/null || true
}
cleanup() {
    for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
    rm -rf "$WORK"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()' 2>/dev/null \
        || echo $((20000 + RANDOM % 20000))
}

echo "machine: $(nproc) cores, kernel $(uname -r); open-file limit $(ulimit -n)"
echo "server: $SERVER (protocol $PROTO); tool: $BIN/hummer-abuse from $(git describe --always --dirty 2>/dev/null || echo '?')"
echo "each attack ${SECS} s against a fresh server; attacker 127.0.0.2, helpers 127.0.0.3, healthy client 127.0.0.1"

ROWS=$WORK/rows
: >"$ROWS"
IFS=, read -r -a LIST <<<"$ATTACKS"
for attack in "${LIST[@]}"; do
    port=$(free_port)
    "$SERVER" --listen "127.0.0.1:$port" --app "10000:$SECRET_A" --app "10001:$SECRET_B" \
        --appid-mode --max-queued-bytes "$MAX_QUEUED" --log warn \
        >"$WORK/$attack.out" 2>"$WORK/$attack.err" &
    pid=$!
    PIDS+=("$pid")
    up=0
    for _ in $(seq 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then up=1; break; fi
        sleep 0.1
    done
    if ((up == 0)); then
        echo "$attack | - | - | - | - | the server did not start | MISSED run" >>"$ROWS"
        stop_pid "$pid"
        continue
    fi
    sleep 0.3 # let the server settle before its baseline RSS is read
    echo "running $attack ..." >&2
    if ! timeout $((SECS + 90)) "$BIN/hummer-abuse" "$attack" --addr "127.0.0.1:$port" \
        --server-pid "$pid" --secs "$SECS" --protocol "$PROTO" --secret "$SECRET_A" \
        --max-queued-bytes "$MAX_QUEUED" --per-ip-cap "$PER_IP_CAP" >>"$ROWS" 2>"$WORK/$attack.tool"; then
        echo "$attack | - | - | - | - | hummer-abuse failed: $(tail -1 "$WORK/$attack.tool") | MISSED run" >>"$ROWS"
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
        echo "  the server died during $attack: $(tail -2 "$WORK/$attack.err")" >&2
    elif grep -q "panicked" "$WORK/$attack.err"; then
        echo "  the server panicked during $attack: $(grep -m1 panicked "$WORK/$attack.err")" >&2
    fi
    stop_pid "$pid"
done

echo
{
    echo "attack | secs | peak RSS growth | healthy login max (p50) | healthy ping p99 | attacker | targets"
    cat "$ROWS"
} | column -t -s '|' -o '|'
