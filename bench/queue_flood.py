#!/usr/bin/env python3
"""Floods the queues between a 2-thread hummer-server's threads and prints
its peak resident memory (BENCHMARKS.md, "Memory between threads").

    bench/queue_flood.py SERVER_BINARY [--secs 10] [--threads 2] [--refused] [--cluster]

Starts SERVER_BINARY on a free loopback port (--threads 2,
--rate-limit-sends 1000000: no send is rate limited), then:

- a receiver (the first connection: thread 0) joins channel C and reads
  everything as fast as it can;
- a sender (the second connection: thread 1), whose uid's home shard is on
  thread 0 and C's shard on thread 1, joins C too and sends 32 KiB channel
  messages as fast as its socket takes them (a thread reads its replies).

So every send crosses threads three times (the request to the uid's home,
its channel part to C's shard, the push back to the receiver's thread).
A reader slower than the server is closed as a slow consumer, which ends
its part of the flood. With --refused the sender is no member: its sends
cross twice and are refused at C's shard (no deliveries to read).

With --cluster (needs redis-server) it starts a Redis, a hub node
(--threads 1) and then SERVER_BINARY as a gateway node (--threads N) of
it, and floods the gateway node: its first thread relays every request to
the hub node over one link, so the sender's thread queues them for the
first thread as fast as that link drains (the case of a gateway node).
It prints VmHWM and VmRSS (/proc/PID/status) at the end, in MiB, and the
frames each client got. No dependency but Python 3; the frames are encoded
by hand (proto/hummer/channel/v1/frame.proto).
"""
import argparse
import os
import re
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

APPID = 10000  # the demo app: anonymous logins
MASK = (1 << 64) - 1


def varint(n):
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def field(num, wt, payload):
    tag = varint((num << 3) | wt)
    if wt == 0:
        return tag + varint(payload)
    return tag + varint(len(payload)) + payload


def frame(rid, body_field, body):
    f = field(1, 0, rid) + field(body_field, 2, body)
    return struct.pack(">I", len(f)) + f


def key(channel):
    return field(1, 0, 1) + field(2, 2, channel.encode())


def fnv_shard(parts, shards):
    """server::shard's hash: FNV-1a 64, then MurmurHash3's finalizer."""
    h = 0xCBF29CE484222325
    for p in parts:
        for b in p:
            h ^= b
            h = (h * 0x100000001B3) & MASK
    h ^= h >> 33
    h = (h * 0xFF51AFD7ED558CCD) & MASK
    h ^= h >> 33
    h = (h * 0xC4CEB9FE1A85EC53) & MASK
    return (h ^ (h >> 33)) % shards


def uid_shard(uid, shards):
    return fnv_shard([struct.pack("<I", APPID), b"u", struct.pack("<Q", uid)], shards)


def channel_shard(cid, shards):
    return fnv_shard(
        [struct.pack("<I", APPID), b"c", struct.pack("<i", 1), cid.encode()], shards
    )


def read_frame(s, buf):
    while True:
        if len(buf) >= 4:
            n = struct.unpack(">I", buf[:4])[0]
            if len(buf) >= 4 + n:
                return buf[4 : 4 + n], buf[4 + n :]
        d = s.recv(1 << 20)
        if not d:
            raise EOFError("closed")
        buf += d


def request(s, f, buf):
    """Sends a request and waits for its reply (pushes skipped)."""
    s.sendall(f)
    while True:
        fr, buf = read_frame(s, buf)
        if fr[:1] == b"\x08" and fr[1:2] != b"\x00":
            return fr, buf


def login(port, uid):
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    body = field(1, 0, 2) + field(2, 0, APPID) + field(3, 0, uid)
    _, buf = request(s, frame(1, 10, body), b"")
    return s, buf


def status(pid):
    out = {}
    for line in open(f"/proc/{pid}/status"):
        m = re.match(r"(VmHWM|VmRSS):\s+(\d+) kB", line)
        if m:
            out[m.group(1)] = int(m.group(2)) / 1024
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("server")
    ap.add_argument("--secs", type=float, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cluster", action="store_true")
    ap.add_argument("--refused", action="store_true",
                    help="the sender is no member: its sends cross to the channel's "
                         "shard and are refused there (no deliveries, no echo)")
    a = ap.parse_args()
    shards = a.threads
    if a.cluster:
        shards = 1  # the hub node's
    # The sender: its home on the receiver's thread (0); the channel on 1.
    sender = next(u for u in range(1, 1000) if uid_shard(u, shards) == 0)
    receiver = next(u for u in range(1000, 2000) if uid_shard(u, shards) == 1 % shards)
    channel = next(f"flood{i}" for i in range(1000)
                   if channel_shard(f"flood{i}", shards) == 1 % shards)

    procs = []
    tmp = tempfile.mkdtemp()

    def start(args, role=None):
        err = open(os.path.join(tmp, f"{len(procs)}.err"), "w+")
        p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=err, text=True)
        procs.append(p)
        line = ""
        while "listening on" not in line:
            line = p.stdout.readline()
            assert line, "the server ended"
        deadline = time.monotonic() + 30
        while role and role not in open(err.name).read():
            assert time.monotonic() < deadline, open(err.name).read()
            time.sleep(0.1)
        return p, int(line.split("listening on ")[1].split()[0].rsplit(":", 1)[1])

    common = ["--listen", "127.0.0.1:0", "--rate-limit-sends", "1000000"]
    try:
        if a.cluster:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                rport = s.getsockname()[1]
            procs.append(subprocess.Popen(
                ["redis-server", "--port", str(rport), "--save", "", "--appendonly", "no",
                 "--dir", tmp], stdout=subprocess.DEVNULL))
            time.sleep(0.5)
            engine = ["--engine", f"redis://127.0.0.1:{rport}", "--cluster-listen",
                      "127.0.0.1:0", "--log", "info"]
            start([a.server] + common + engine + ["--threads", "1"], ": hub node")
            proc, port = start([a.server] + common + engine + ["--threads", str(a.threads)],
                               ": gateway node of hub node")
        else:
            proc, port = start([a.server] + common + ["--threads", str(a.threads),
                                                      "--log", "warn"])
        base = status(proc.pid)
        # Connections go to the threads in turn: the receiver first (thread 0).
        rcv, rbuf = login(port, receiver)
        snd, sbuf = login(port, sender)
        for s, buf in ((snd, sbuf), (rcv, rbuf))[1 if a.refused else 0:]:
            reply, buf = request(s, frame(2, 17, field(1, 2, key(channel))), buf)
            assert b"\x82\x03" in reply[:4], "join refused: %r" % reply  # join_reply = 48
        rbuf = buf
        got = [0, 0, False]  # frames, bytes, closed
        replies = [0, 0, False]
        stop = threading.Event()

        def drain(sock, buf, got):
            sock.settimeout(0.5)
            buf = bytearray(buf)
            while not stop.is_set():
                try:
                    d = sock.recv(1 << 20)
                except socket.timeout:
                    continue
                except OSError:
                    d = b""
                if not d:
                    got[2] = True
                    break
                buf += d
                got[1] += len(d)
                # Count whole frames.
                at = 0
                while len(buf) - at >= 4:
                    n = struct.unpack_from(">I", buf, at)[0]
                    if len(buf) - at < 4 + n:
                        break
                    got[0] += 1
                    at += 4 + n
                del buf[:at]

        # Both read everything (the sender its replies, so that it is no
        # slow consumer).
        threads = [
            threading.Thread(target=drain, args=(rcv, rbuf, got), daemon=True),
            threading.Thread(target=drain, args=(snd, b"", replies), daemon=True),
        ]
        for t in threads:
            t.start()
        content = b"x" * (32 * 1024 - 16)
        msgs = []
        for i in range(64):
            msg = field(1, 2, b"t") + field(2, 2, content)
            msgs.append(msg)
        sent = 0
        end = time.monotonic() + a.secs
        batch = bytearray()
        while time.monotonic() < end:
            batch.clear()
            for _ in range(32):
                sent += 1
                body = (field(1, 2, key(channel)) + field(2, 2, msgs[sent % 64])
                        + field(4, 0, sent))
                batch += frame(10 + sent, 19, body)
            try:
                snd.sendall(batch)
            except OSError as e:
                print(f"the sender's link failed: {e}")
                break
        peak = status(proc.pid)
        stop.set()
        for t in threads:
            t.join()
        print(f"sent {sent} sends of 32 KiB; the sender got {replies[0]} frames"
              + (" then was closed" if replies[2] else "")
              + f"; the receiver {got[0]} frames ({got[1] / 1048576:.0f} MiB)"
              + (" then was closed" if got[2] else ""))
        print(f"VmHWM {peak['VmHWM']:.1f} MiB, VmRSS {peak['VmRSS']:.1f} MiB "
              f"(at start {base['VmRSS']:.1f} MiB)")
    finally:
        for p in reversed(procs):
            p.terminate()
            p.wait()


if __name__ == "__main__":
    sys.exit(main())
