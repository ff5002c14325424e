#!/usr/bin/env python3
"""The server API on a cluster's gateway node (each call relayed to the hub
node over the node link) against the hub node's own, in the same run.

A redis-server on a free port, a hub node and a gateway node (one thread
each, `--api-rate` out of the way), one keep-alive HTTP connection to each;
N calls of each kind to each node, interleaved (hub, gateway, hub, ...):

  read   GET /v1/users/online?uids=1,2,3
  write  POST /v1/channels/cn/lobby/messages (a new message_id each time:
         stored in Redis before the answer)

Prints p50 and p99 per node and the gateway/hub ratios.

Usage: cargo build --release -p hummer-server --all-features
       bench/api_relay.py target/release/hummer-server [N=2000]
"""
import http.client, json, os, socket, subprocess, sys, tempfile, time, statistics

BIN = sys.argv[1]
N = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
KEY = "bench-api-key-0123456789abcdef0123"

def free():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

d = tempfile.mkdtemp()
rport = free()
redis = subprocess.Popen(["redis-server", "--port", str(rport), "--save", "", "--appendonly", "no", "--dir", d],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
time.sleep(0.5)
procs = [redis]
def node(role_line):
    listen, api = free(), free()
    p = subprocess.Popen([BIN, "--listen", f"127.0.0.1:{listen}", "--engine", f"redis://127.0.0.1:{rport}",
                          "--cluster-listen", "127.0.0.1:0", "--lease-secs", "1", "--api-listen", f"127.0.0.1:{api}",
                          "--api-key", f"10000:{KEY}", "--api-rate", "1000000", "--threads", "1", "--log", "info"],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    procs.append(p)
    deadline = time.time() + 20
    while time.time() < deadline:
        line = p.stdout.readline()
        if role_line in line:
            return api
    raise SystemExit(f"no '{role_line}'")
try:
    hub = node(": hub node")
    gw = node(": gateway node of hub node")
    conns = {n: http.client.HTTPConnection("127.0.0.1", a) for n, a in (("hub", hub), ("gateway", gw))}
    hdr = {"Authorization": f"apikey {KEY}", "Content-Type": "application/json"}
    def call(c, method, path, body=None):
        t = time.perf_counter()
        c.request(method, path, body=json.dumps(body) if body is not None else None, headers=hdr)
        r = c.getresponse(); data = r.read()
        took = time.perf_counter() - t
        assert r.status == 200, (r.status, data)
        return took
    results = {}
    mid = 1
    for label, method, path in [("read: GET /v1/users/online", "GET", "/v1/users/online?uids=1,2,3"),
                                ("write: POST /v1/channels/cn/lobby/messages", "POST", "/v1/channels/cn/lobby/messages")]:
        times = {"hub": [], "gateway": []}
        for i in range(N):
            for n in ("hub", "gateway"):  # interleaved
                body = None
                if method == "POST":
                    body = {"message_id": mid, "type": "t", "content": "x"}; mid += 1
                times[n].append(call(conns[n], method, path, body))
        results[label] = times
    for label, times in results.items():
        h = sorted(times["hub"]); g = sorted(times["gateway"])
        p = lambda xs, q: xs[int(q * (len(xs) - 1))] * 1e6
        print(f"{label}: hub p50 {p(h,.5):.0f} us p99 {p(h,.99):.0f} us | gateway p50 {p(g,.5):.0f} us p99 {p(g,.99):.0f} us | ratio p50 {p(g,.5)/p(h,.5):.2f} p99 {p(g,.99)/p(h,.99):.2f}")
finally:
    for p in procs[::-1]:
        p.kill()
        p.wait()
    import shutil
    shutil.rmtree(d, ignore_errors=True)
