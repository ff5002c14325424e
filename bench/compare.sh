#!/usr/bin/env bash
# End-to-end comparison over loopback TCP: hummer-server (release) against
# NATS and Redis, same workloads, interleaved, in one run; prints one table.
#
#   bench/compare.sh            # full run (5 repetitions, medians)
#   bench/compare.sh --quick    # smaller counts, for a smoke test
#   bench/compare.sh --no-raw-check     # without the raw-client check
#   IDLE_CONNS=10000 bench/compare.sh   # also run bench/idle_connections.sh after
#   HUMMER_THREADS="1 2" bench/compare.sh   # hummer-server once per --threads N
#   HUMMER_ENGINES="memory redis" bench/compare.sh   # and once per --engine
#   HUMMER_ENGINES="memory redis cluster" bench/compare.sh   # and as 2 nodes
#   HUMMER_ENGINES="cluster cluster-tls" bench/compare.sh   # links in TLS or not
#   HUMMER_ENGINES="redis redis2" bench/compare.sh   # store on one Redis or two
#   HUMMER_BASELINE_BIN=old/hummer-server bench/compare.sh   # this build against another
#
# HUMMER_BASELINE_BIN (a hummer-server binary, for example one built from
# an earlier commit in a worktree) starts every hummer server below once
# more from that binary, labelled base (base-LABEL), in the same
# interleaved repetitions: a change's cost as a ratio in one run.
#
# HUMMER_THREADS (a space-separated list) starts one hummer-server per value
# with `--threads N`, measured in the same interleaved repetitions and
# labelled tN, when `hummer-server --help` mentions --threads; otherwise
# (unset, or a server without the flag) one server as usual.
#
# HUMMER_ENGINES (a space-separated list of memory, redis, redis2, cluster
# and cluster-tls; default memory, one server as before) starts the servers
# above once per engine: for redis, each hummer-server gets a Redis of its
# own for `--engine redis://127.0.0.1:PORT` (a separate redis-server, not
# the pub/sub baseline's: a free port, `--appendonly yes --appendfsync
# everysec`, in a temporary directory), labelled redis-engine
# (tN-redis-engine with HUMMER_THREADS). For redis2, one hummer-server
# spreads its store over two such Redis (each with its own port and
# directory): `--engine redis://127.0.0.1:A,redis://127.0.0.1:B`, labelled
# redis2-engine (tN-redis2-engine). Its --threads must be a multiple of
# 2: a value of HUMMER_THREADS that is not is skipped for redis2 (with a
# note on stderr). Without HUMMER_THREADS, redis2 gets `--threads 2`, and
# so does the redis server of the same run (otherwise it would take the
# default, the number of cores: the same on 2 cores, not on others), so
# that the two differ only in their Redis; the labels stay redis-engine and
# redis2-engine, and the "variants:" line says `--threads 2` (memory and
# cluster keep their threads). For cluster, one server is two
# hummer-server nodes sharing one such Redis, both with `--cluster-listen
# 127.0.0.1:0`: the first started (and waited for until it logs that it is
# the hub node), then the second (until it logs that it is a gateway node
# of it); each node gets `--threads 1` (two nodes: the threads of a
# 2-thread single server), or each value of HUMMER_THREADS, labelled
# cluster (tN-cluster). hummer-load takes it as one server with two
# addresses and spreads its clients over both nodes, so that the traffic
# crosses them (BENCHMARKS.md, "Several nodes (cluster)"). cluster-tls is
# the same with the links between the nodes in TLS (`--cluster-tls-*`, a
# CA and a certificate for 127.0.0.1 made with openssl in the work
# directory), labelled cluster-tls (tN-cluster-tls). A server's CPU and
# resident memory are the sums over its processes (its nodes and its
# engine's Redis, both of them for redis2). The first server of the list
# is the baseline of the "/hummer" ratio columns; a cluster, and a
# redis2 server, are also compared with the redis-engine server of the
# same threads. After the table, the engine's `INFO commandstats` read
# around each run gives the Redis round trips (EVAL) and commands per
# published and per delivered message (BENCHMARKS.md, "Durable state
# (Redis engine)"), summed over both Redis for redis2, whose split
# between them follows in a table of its own.
#
# After the table, a raw check runs the brokers' 1 -> 1 and fan-out
# workloads through hummer-load's clients and through `hummer-load raw` (one
# pre-built write, subscribers only counting), interleaved, and prints both:
# they should match within ~10%, or hummer-load's clients are the limit.
#
# Installs the Debian packages nats-server and redis-server when missing,
# runs the binaries directly on 127.0.0.1 with free ports (not the system
# services; Redis without persistence), and stops every server it started
# by its PID on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

RAW_CHECK=1
ARGS=()
for a in "$@"; do
    if [[ $a == --no-raw-check ]]; then RAW_CHECK=0; else ARGS+=("$a"); fi
done

need=()
command -v nats-server >/dev/null || need+=(nats-server)
command -v redis-server >/dev/null || need+=(redis-server)
if ((${#need[@]})); then
    echo "installing ${need[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()' 2>/dev/null \
        || echo $((20000 + RANDOM % 20000))
}

PIDS=()
WORK=$(mktemp -d)
cleanup() {
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
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

cargo build --release --quiet -p hummer-server -p hummer-load
BIN=${CARGO_TARGET_DIR:-target}/release

HADDRS=(); HPIDS=(); VARIANTS=(); EADDRS=(); EPIDS=(); DESCS=()
# One hummer-server node: sets HADDR, HPID and HERR (its stderr).
start_node() { # log level, extra arguments of hummer-server
    local port log=$1
    shift
    port=$(free_port)
    HERR="$WORK/hummer-$port.err"
    # The per-instance send limit (180 / 3 s) would cap a load test; NATS
    # and Redis have none, so neither does hummer-server here.
    # HUMMER_THREADS is this script's list, not the server's setting of
    # the same name (the flag sets each server's).
    env -u HUMMER_THREADS "$SERVER_BIN" --listen "127.0.0.1:$port" --rate-limit-sends 1000000000 --login-rate-per-ip 1000000000 --max-connections-per-ip 1000000 --log "$log" "$@" >"$WORK/hummer-$port.out" 2>"$HERR" &
    HPID=$!; PIDS+=("$HPID")
    wait_port "$port" hummer-server
    HADDR="127.0.0.1:$port"
}
start_hummer() { # extra arguments of hummer-server
    start_node warn "$@"
    HADDRS+=("$HADDR"); HPIDS+=("$HPID")
}
wait_log() { # file, text, name: the node's role (it listens before it has one)
    for _ in $(seq 300); do
        if grep -qF -- "$2" "$1"; then return 0; fi
        sleep 0.1
    done
    echo "$3 did not log \"$2\" within 30 s:" >&2
    tail -20 "$1" >&2
    exit 1
}
# Two nodes sharing the engine Redis at $EPORT (logs at info: the role).
start_cluster() { # extra arguments of both nodes
    local hub hub_pid
    start_node info "$@" --engine "redis://127.0.0.1:$EPORT" --cluster-listen 127.0.0.1:0
    wait_log "$HERR" ": hub node" "the first cluster node"
    hub=$HADDR; hub_pid=$HPID
    start_node info "$@" --engine "redis://127.0.0.1:$EPORT" --cluster-listen 127.0.0.1:0
    wait_log "$HERR" ": gateway node of hub node" "the second cluster node"
    HADDRS+=("$hub+$HADDR"); HPIDS+=("$hub_pid+$HPID")
}
# A CA and a node certificate for 127.0.0.1 it signed (openssl), for
# cluster-tls: sets TLS_ARGS, the nodes' --cluster-tls-* flags.
make_cluster_tls() {
    local d="$WORK/cluster-tls"
    mkdir -p "$d"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
        -subj "/CN=bench cluster CA" -keyout "$d/ca.key" -out "$d/ca.pem" 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -subj "/CN=bench node" -keyout "$d/node.key" -out "$d/node.csr" 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n' >"$d/node.ext"
    openssl x509 -req -in "$d/node.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" -CAcreateserial \
        -days 2 -extfile "$d/node.ext" -out "$d/node.pem" 2>/dev/null
    TLS_ARGS=(--cluster-tls-cert "$d/node.pem" --cluster-tls-key "$d/node.key" --cluster-tls-ca "$d/ca.pem")
}
# A Redis for one hummer-server's --engine: sets EPORT and EPID.
start_engine_redis() {
    local dir
    EPORT=$(free_port)
    dir="$WORK/engine-$EPORT"
    mkdir -p "$dir"
    redis-server --bind 127.0.0.1 --port "$EPORT" --dir "$dir" --save '' \
        --appendonly yes --appendfsync everysec \
        --protected-mode yes --daemonize no --logfile "$dir/redis.log" >/dev/null 2>&1 &
    EPID=$!; PIDS+=("$EPID")
    wait_port "$EPORT" "engine redis-server"
}
ENGINES=()
read -ra ENGINES <<<"${HUMMER_ENGINES:-memory}"
for e in "${ENGINES[@]}"; do
    if [[ $e != memory && $e != redis && $e != redis2 && $e != cluster && $e != cluster-tls ]]; then
        echo "HUMMER_ENGINES: $e is none of memory, redis, redis2, cluster and cluster-tls" >&2
        exit 2
    fi
done
if ((${#ENGINES[@]} == 0)); then ENGINES=(memory); fi
THREADS=()
if [[ -n ${HUMMER_THREADS:-} ]]; then
    help=$("$BIN/hummer-server" --help 2>&1 || true)
    if grep -q -- '--threads' <<<"$help"; then
        read -ra THREADS <<<"$HUMMER_THREADS"
    else
        echo "HUMMER_THREADS is set but hummer-server has no --threads: one server, as usual" >&2
    fi
fi
# One server per engine and (with HUMMER_THREADS) per thread count.
SERVER_THREADS=("${THREADS[@]}")
if ((${#SERVER_THREADS[@]} == 0)); then SERVER_THREADS=(""); fi
CORES=$(nproc)
# redis2 without HUMMER_THREADS: --threads 2, for the redis server too.
REDIS2=0
if [[ " ${ENGINES[*]} " == *" redis2 "* ]]; then REDIS2=1; fi
BINS=("$BIN/hummer-server")
if [[ -n ${HUMMER_BASELINE_BIN:-} ]]; then
    [[ -x $HUMMER_BASELINE_BIN ]] || { echo "HUMMER_BASELINE_BIN: $HUMMER_BASELINE_BIN is no executable" >&2; exit 2; }
    BINS+=("$HUMMER_BASELINE_BIN")
fi
for SERVER_BIN in "${BINS[@]}"; do
base=""
if [[ $SERVER_BIN != "$BIN/hummer-server" ]]; then base="base"; fi
for e in "${ENGINES[@]}"; do
    for n in "${SERVER_THREADS[@]}"; do
        args=(); label=""
        threads="--threads default ($CORES, the cores)"
        if [[ -n $n ]]; then args+=(--threads "$n"); label="t$n"; threads="--threads $n"; fi
        if [[ -z $n ]] && ((REDIS2)) && [[ $e == redis || $e == redis2 ]]; then
            args+=(--threads 2); threads="--threads 2"
        fi
        case $e in
            redis)
                start_engine_redis
                args+=(--engine "redis://127.0.0.1:$EPORT")
                label="${label:+$label-}redis-engine"
                EADDRS+=("127.0.0.1:$EPORT"); EPIDS+=("$EPID")
                start_hummer "${args[@]}"
                DESCS+=("hummer ${label}: 1 node, $threads, engine redis 127.0.0.1:$EPORT")
                ;;
            redis2)
                if [[ -n $n ]] && ((n % 2)); then
                    echo "HUMMER_ENGINES: redis2 skipped for --threads $n (not a multiple of its 2 Redis)" >&2
                    continue
                fi
                start_engine_redis
                e1=$EPORT; p1=$EPID
                start_engine_redis
                args+=(--engine "redis://127.0.0.1:$e1,redis://127.0.0.1:$EPORT")
                label="${label:+$label-}redis2-engine"
                EADDRS+=("127.0.0.1:$e1+127.0.0.1:$EPORT"); EPIDS+=("$p1+$EPID")
                start_hummer "${args[@]}"
                DESCS+=("hummer ${label}: 1 node, $threads, engine redis over 2 instances 127.0.0.1:$e1 and 127.0.0.1:$EPORT")
                ;;
            cluster | cluster-tls)
                start_engine_redis
                if [[ -z $n ]]; then args+=(--threads 1); threads="--threads 1"; fi
                label="${label:+$label-}$e"
                links="plain links"
                if [[ $e == cluster-tls ]]; then
                    make_cluster_tls
                    args+=("${TLS_ARGS[@]}")
                    links="TLS links"
                fi
                EADDRS+=("127.0.0.1:$EPORT"); EPIDS+=("$EPID")
                start_cluster "${args[@]}"
                DESCS+=("hummer ${label}: 2 nodes (hub, gateway) x $threads, $links, one engine redis 127.0.0.1:$EPORT")
                ;;
            *)
                EADDRS+=(-); EPIDS+=(-)
                start_hummer "${args[@]}"
                DESCS+=("hummer${label:+ $label}: 1 node, $threads, engine memory")
                ;;
        esac
        if [[ -n $base ]]; then
            desc=${DESCS[-1]#hummer}
            label="base${label:+-$label}"
            DESCS[-1]="hummer $label:${desc#*:} (baseline build $SERVER_BIN)"
        fi
        VARIANTS+=("$label")
    done
done
done
join() { local IFS=,; echo "$*"; }
HARGS=(--hummer "$(join "${HADDRS[@]}")" --hummer-pid "$(join "${HPIDS[@]}")")
# Labels only when there is more than one server or a non-default one.
if ((${#VARIANTS[@]} > 1)) || [[ -n ${VARIANTS[0]} ]]; then
    HARGS+=(--hummer-variants "$(join "${VARIANTS[@]}")")
fi
if [[ " ${ENGINES[*]} " =~ \ (redis|redis2|cluster|cluster-tls)\  ]]; then
    HARGS+=(--hummer-engine-redis "$(join "${EADDRS[@]}")" --hummer-engine-pid "$(join "${EPIDS[@]}")")
fi
NPORT=$(free_port)
nats-server -a 127.0.0.1 -p "$NPORT" >"$WORK/nats.out" 2>&1 &
NPID=$!; PIDS+=("$NPID")
RPORT=$(free_port)
# The scaling workload opens 11,000 connections (Redis allows 10,000).
redis-server --bind 127.0.0.1 --port "$RPORT" --save '' --appendonly no \
    --protected-mode yes --daemonize no --maxclients 16000 --logfile "$WORK/redis.log" >/dev/null 2>&1 &
RPID=$!; PIDS+=("$RPID")
wait_port "$NPORT" nats-server
wait_port "$RPORT" redis-server

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), kernel $(uname -r)"
echo "versions: hummer-server $(git describe --always --dirty 2>/dev/null || echo '?'), $(nats-server --version), $(redis-server --version | cut -d' ' -f1-3)"
echo "servers: hummer ${HADDRS[*]} pid ${HPIDS[*]}${VARIANTS[*]:+ (${VARIANTS[*]})}, nats 127.0.0.1:$NPORT pid $NPID, redis 127.0.0.1:$RPORT pid $RPID"
echo "variants: $(IFS=';'; echo "${DESCS[*]}" | sed 's/;/; /g')"
if [[ " ${ENGINES[*]} " =~ \ (redis|redis2|cluster|cluster-tls)\  ]]; then
    echo "engines: redis ${EADDRS[*]} pid ${EPIDS[*]} (appendonly yes, appendfsync everysec)"
fi

# What the hummer-servers said besides their results: stderr with an error
# or a panic, and the last warnings of each (colours stripped; not the
# open-file limit every server states at start); and what the engines'
# Redis logged of note. Also when hummer-load fails, before the work
# directory (and the logs) go.
show_server_warnings() {
    for f in "$WORK"/hummer-*.err; do
        if grep -qiE "error|panic" "$f"; then
            echo "hummer-server stderr:" >&2; tail -20 "$f" >&2
        fi
        # Anything a node warned of during the run (colours stripped), but the
        # open-file limit every server states at start.
        warned=$(sed 's/\x1b\[[0-9;]*m//g' "$f" | grep -E " (WARN|ERROR) " | grep -v "open-file limit" || true)
        if [[ -n $warned ]]; then
            echo "hummer-server warnings ($(basename "$f" .err)): $(wc -l <<<"$warned") lines, the last ones:"
            tail -5 <<<"$warned"
        fi
    done
    # The engines' Redis: a slow fsync or a restart shows here.
    for f in "$WORK"/engine-*/redis.log; do
        [[ -e $f ]] || continue
        busy=$(grep -E "Asynchronous AOF fsync|slow|Redis is starting|MISCONF|error" "$f" | grep -v "^$" || true)
        if [[ -n $busy ]]; then
            echo "engine $(basename "$(dirname "$f")") log: $(wc -l <<<"$busy") notable lines, the last ones:"
            tail -5 <<<"$busy"
        fi
    done
}

"$BIN/hummer-load" compare \
    "${HARGS[@]}" --hummer-unlimited \
    --nats "127.0.0.1:$NPORT" --nats-pid "$NPID" \
    --redis "127.0.0.1:$RPORT" --redis-pid "$RPID" \
    --clk-tck "$(getconf CLK_TCK)" "${ARGS[@]}" || {
    status=$?
    echo "hummer-load failed (exit $status)" >&2
    show_server_warnings >&2
    exit "$status"
}

if ((RAW_CHECK)); then
    "$BIN/hummer-load" rawcheck "${HARGS[@]}" --hummer-unlimited \
        --nats "127.0.0.1:$NPORT" --nats-pid "$NPID" \
        --redis "127.0.0.1:$RPORT" --redis-pid "$RPID" \
        --clk-tck "$(getconf CLK_TCK)" "${ARGS[@]}" || echo "the raw check failed" >&2
fi

rss() { awk '/VmRSS/{print $2" "$3}' "/proc/$1/status"; }
rss_kib() { awk '/VmRSS/{print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
echo "server VmRSS after the run: nats $(rss "$NPID"), redis $(rss "$RPID")"
# Per hummer server: the sum over its processes (nodes and engine Redis).
for i in "${!HPIDS[@]}"; do
    IFS=+ read -ra pids <<<"${HPIDS[$i]}"
    if [[ ${EPIDS[$i]} != - ]]; then IFS=+ read -ra epids <<<"${EPIDS[$i]}"; pids+=("${epids[@]}"); fi
    total=0; parts=()
    for pid in "${pids[@]}"; do
        kib=$(rss_kib "$pid"); total=$((total + kib)); parts+=("pid $pid $kib kB")
    done
    echo "hummer${VARIANTS[$i]:+ ${VARIANTS[$i]}} VmRSS after the run: $total kB in all ($(IFS=,; echo "${parts[*]}" | sed 's/,/, /g'))"
done
show_server_warnings

if [[ -n "${IDLE_CONNS:-}" ]]; then
    bench/idle_connections.sh "$IDLE_CONNS"
fi
