#!/usr/bin/env bash
# hummer-server over its four transports (tcp, tls, ws, wss), in one run:
# idle memory per logged-in connection, the 1 -> 1 message stream and a
# 1 -> 100 fan-out, each with its ratio to tcp from the same run.
#
#   bench/transports.sh            # ~2 minutes after the build
#   REPS=5 IDLE_CONNS=5000 bench/transports.sh
#
# One fresh hummer-server (release, --threads 1) per transport on free
# ports of 127.0.0.1, the TLS ones with a self-signed certificate for
# localhost made here by openssl in a temporary directory; every server is
# stopped by its PID on exit. Throughput runs are `hummer-load raw --kind
# hummer --transport T` (one pre-built write, subscribers only counting),
# interleaved tcp, tls, ws, wss in each of REPS repetitions; the table gives
# medians, and each ratio is the median of the per-repetition ratios.
# Idle memory is `hummer-load idle --transport T` on each server before
# any other load (VmRSS after minus before, per connection).
set -euo pipefail
cd "$(dirname "$0")/.."

REPS=${REPS:-3}
IDLE_CONNS=${IDLE_CONNS:-2000}
MESSAGES=${MESSAGES:-200000}       # 1 -> 1
FANOUT_MESSAGES=${FANOUT_MESSAGES:-10000}
SUBSCRIBERS=${SUBSCRIBERS:-100}
read -r -a TRANSPORTS <<< "${TRANSPORT_LIST:-tcp tls ws wss}"

ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if (($(ulimit -n) < IDLE_CONNS + 200)); then
    echo "the open-file limit $(ulimit -n) is below $IDLE_CONNS connections plus margin" >&2
    exit 1
fi

cargo build --release --quiet -p hummer-server -p hummer-load
BIN=${CARGO_TARGET_DIR:-target}/release

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()' 2>/dev/null \
        || echo $((20000 + RANDOM % 20000))
}

PIDS=()
WORK=$(mktemp -d)
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT

wait_port() { # port name
    for _ in $(seq 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "$2 did not come up on port $1" >&2
    exit 1
}

# basicConstraints CA:FALSE so that the certificate can also be given to
# the client as its own trust anchor (--ca): webpki refuses a CA
# certificate as a server's end-entity certificate.
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$WORK/key.pem" -out "$WORK/cert.pem" \
    -days 2 -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
    -addext basicConstraints=critical,CA:FALSE 2>/dev/null

# No send rate limit (the raw client never logs in again), every client from
# 127.0.0.1, and an output bound no run reaches: the raw publisher has no
# flow control, and a server that reads faster than it writes a subscriber
# (WebSocket, TLS) would otherwise close it as a slow consumer.
COMMON=(--threads 1 --rate-limit-sends 1000000000 --login-rate-per-ip 1000000000
    --max-connections-per-ip 1000000 --max-queued-bytes 268435456 --log warn)
TLS=(--tls-cert "$WORK/cert.pem" --tls-key "$WORK/key.pem")
declare -A ADDR PID
for t in "${TRANSPORTS[@]}"; do
    port=$(free_port)
    args=(--listen "127.0.0.1:$port")
    if [[ $t == ws || $t == wss ]]; then
        wsport=$(free_port)
        args+=(--ws-listen "127.0.0.1:$wsport")
        port=$wsport
    fi
    if [[ $t == tls || $t == wss ]]; then args+=("${TLS[@]}"); fi
    env -u HUMMER_THREADS "$BIN/hummer-server" "${args[@]}" "${COMMON[@]}" \
        >"$WORK/$t.out" 2>"$WORK/$t.err" &
    PID[$t]=$!; PIDS+=("${PID[$t]}")
    ADDR[$t]=127.0.0.1:$port
done
for t in "${TRANSPORTS[@]}"; do wait_port "${ADDR[$t]#*:}" "hummer-server ($t)"; done

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), kernel $(uname -r), load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "hummer-server $(git describe --always --dirty 2>/dev/null || echo '?'), --threads 1, one server per transport: $(for t in "${TRANSPORTS[@]}"; do printf '%s %s pid %s; ' "$t" "${ADDR[$t]}" "${PID[$t]}"; done)"

LOAD=("$BIN/hummer-load")
tls_args() { # transport: the client trusts only the generated certificate
    if [[ $1 == tls || $1 == wss ]]; then echo "--ca $WORK/cert.pem --server-name localhost"; fi
}

RESULTS=$WORK/results
: >"$RESULTS"
for t in "${TRANSPORTS[@]}"; do
    # shellcheck disable=SC2046
    line=$("${LOAD[@]}" idle --transport "$t" $(tls_args "$t") --addr "${ADDR[$t]}" \
        --server-pid "${PID[$t]}" --conns "$IDLE_CONNS" --hold-secs 2 | grep '^SUMMARY idle')
    echo "$line"
    bytes=$(sed -E 's/.*; ([0-9]+) bytes per connection.*/\1/' <<<"$line")
    echo "idle $t 0 $bytes" >>"$RESULTS"
done
sleep 2 # the servers close those connections

run=0
for rep in $(seq "$REPS"); do
    for t in "${TRANSPORTS[@]}"; do
        for w in p2p fanout; do
            run=$((run + 1))
            if [[ $w == p2p ]]; then n=$MESSAGES subs=1; else n=$FANOUT_MESSAGES subs=$SUBSCRIBERS; fi
            # shellcheck disable=SC2046
            line=$("${LOAD[@]}" raw --kind hummer --transport "$t" $(tls_args "$t") \
                --addr "${ADDR[$t]}" --server-pid "${PID[$t]}" --run "$run" \
                --messages "$n" --subscribers "$subs" --time-cap-secs 20 | grep '^SUMMARY raw') \
                || { echo "rep $rep $t $w: failed" >&2; continue; }
            rate=$(sed -E 's/.* rate=([0-9.]+).*/\1/' <<<"$line")
            got=$(sed -E 's/.* delivered=([0-9]+) expected=([0-9]+).*/\1\/\2/' <<<"$line")
            scpu=$(sed -E 's/.* server_us_per_delivery=([0-9.NaN]+).*/\1/' <<<"$line")
            ccpu=$(sed -E 's/.* client_us_per_delivery=([0-9.NaN]+).*/\1/' <<<"$line")
            printf 'rep %s %-4s %-6s %10.0f deliveries/s delivered %s server %s us/delivery client %s us/delivery\n' \
                "$rep" "$t" "$w" "$rate" "$got" "$scpu" "$ccpu" >&2
            echo "$w $t $rep $rate" >>"$RESULTS"
            echo "${w}_cpu $t $rep $scpu" >>"$RESULTS"
            if [[ ${got%/*} != "${got#*/}" ]]; then echo "short $t $w rep $rep: $got" >>"$WORK/short"; fi
        done
    done
done

echo
echo "Medians of $REPS repetitions (idle: one run); ratio = transport / tcp, per repetition, then the median."
awk -v transports="${TRANSPORTS[*]}" '
function median(arr, n,   i, j, tmp) {
    for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (arr[j] < arr[i]) { tmp = arr[i]; arr[i] = arr[j]; arr[j] = tmp }
    return n ? arr[int((n + 1) / 2)] : "nan"
}
{ v[$1, $2, $3] = $4; reps[$3] = 1; rows[$1] = 1 }
END {
    nt = split(transports, T, " ")
    split("idle p2p fanout p2p_cpu fanout_cpu", R, " ")
    label["idle"] = "idle logged-in connection, bytes of server VmRSS"
    label["p2p"] = "1 pub -> 1 sub, messages/s"
    label["fanout"] = "1 pub -> 100 subs, deliveries/s"
    label["p2p_cpu"] = "server CPU us per delivery, 1 -> 1"
    label["fanout_cpu"] = "server CPU us per delivery, fan-out"
    head = "| |"; sep = "| --- |"
    for (i = 1; i <= nt; i++) { head = head " " T[i] " |"; sep = sep " ---: |" }
    for (i = 2; i <= nt; i++) { head = head " " T[i] "/tcp |"; sep = sep " ---: |" }
    print head; print sep
    for (r = 1; r <= 5; r++) {
        row = R[r]; if (!(row in rows)) continue
        line = "| " label[row] " |"
        for (i = 1; i <= nt; i++) {
            n = 0; delete a
            for (k in reps) if ((row, T[i], k) in v) a[++n] = v[row, T[i], k] + 0
            m = median(a, n)
            line = line " " (m >= 1000 ? sprintf("%.0f", m) : sprintf("%.3f", m)) " |"
        }
        for (i = 2; i <= nt; i++) {
            n = 0; delete a
            for (k in reps) if (((row, T[i], k) in v) && ((row, "tcp", k) in v) && v[row, "tcp", k] > 0) a[++n] = v[row, T[i], k] / v[row, "tcp", k]
            line = line " " sprintf("%.2f", median(a, n)) " |"
        }
        print line
    }
}' "$RESULTS"
if [[ -s $WORK/short ]]; then echo; echo "Short runs:"; cat "$WORK/short"; else echo; echo "Every run delivered every message."; fi
for t in "${TRANSPORTS[@]}"; do
    if grep -qiE "error|panic" "$WORK/$t.err"; then echo "hummer-server ($t) stderr:" >&2; tail -5 "$WORK/$t.err" >&2; fi
done
