// A fake WebSocket and a scripted fake server, for unit tests of the client's
// protocol engine without a real server.
import { encodeFrame, decodeFrame } from "../../src/codec.js";

export class FakeServer {
  constructor() {
    this.conns = [];
    this._waiters = [];
    this.refuse = false;
    this.refuseUrls = new Set(); // URLs refused while the others connect
    const server = this;
    this.WebSocket = class FakeWebSocket {
      constructor(url, protocols) {
        this.url = url;
        this.protocols = protocols;
        this.readyState = 0;
        this.binaryType = "blob";
        const conn = new FakeConn(server, this);
        this._conn = conn;
        setImmediate(() => {
          if (server.refuse || server.refuseUrls.has(url)) {
            this.readyState = 3;
            this.onclose?.({ code: 1006 });
            return;
          }
          this.readyState = 1;
          server.conns.push(conn);
          const w = server._waiters.shift();
          if (w) w(conn);
          else server._pending = [...(server._pending ?? []), conn];
          this.onopen?.({});
        });
      }
      send(bytes) {
        if (this.readyState !== 1) throw new Error("not open");
        this._conn._fromClient(decodeFrame(new Uint8Array(bytes)));
      }
      close() {
        if (this.readyState === 3) return;
        this.readyState = 3;
        this._conn.closedByClient = true;
        this._conn._wake();
        setImmediate(() => this.onclose?.({ code: 1000 }));
      }
    };
  }

  /** The next connection the client opens. */
  nextConn(timeoutMs = 2000) {
    if (this._pending?.length) return Promise.resolve(this._pending.shift());
    return withTimeout(new Promise((r) => this._waiters.push(r)), timeoutMs, "no connection");
  }
}

export class FakeConn {
  constructor(server, ws) {
    this.server = server;
    this.ws = ws;
    this.inbox = [];
    this._wait = null;
    this.closedByClient = false;
  }

  _fromClient(frame) {
    this.inbox.push(frame);
    this._wake();
  }

  _wake() {
    const w = this._wait;
    this._wait = null;
    w?.();
  }

  /** The next c2s frame; with `skip`, frames whose body case is in skip are passed over. */
  async recv({ skip = ["ping", "ack"], timeoutMs = 2000 } = {}) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      while (this.inbox.length) {
        const f = this.inbox.shift();
        if (!skip.includes(f.body.case)) return f;
      }
      const left = deadline - Date.now();
      if (left <= 0) throw new Error("no frame from the client in time");
      await withTimeout(new Promise((r) => { this._wait = r; }), left, "no frame from the client in time");
    }
  }

  /** Waits until a c2s frame matching pred arrives (others are dropped). */
  async recvWhere(pred, timeoutMs = 2000) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const f = await this.recv({ skip: [], timeoutMs: Math.max(1, deadline - Date.now()) });
      if (pred(f)) return f;
    }
  }

  send(init) {
    const bytes = encodeFrame(init);
    setImmediate(() => {
      if (this.ws.readyState === 1) this.ws.onmessage?.({ data: bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) });
    });
  }

  sendRaw(data) {
    setImmediate(() => this.ws.onmessage?.({ data }));
  }

  /** The server side ends the transport (no Close frame: a lost link). */
  drop() {
    setImmediate(() => {
      if (this.ws.readyState === 3) return;
      this.ws.readyState = 3;
      this.ws.onclose?.({ code: 1006 });
    });
  }

  reply(req, body) {
    this.send({ requestId: req.requestId, body });
  }

  loginReply(req, value = {}) {
    this.reply(req, {
      case: "loginReply",
      value: { instanceId: 77n, p2pEpoch: 5n, serverEpoch: 1n, serverTimeMs: 1n, pingIntervalMs: 15000, idleTimeoutMs: 45000, ...value },
    });
  }
}

export function withTimeout(p, ms, what) {
  let t;
  return Promise.race([
    p.finally(() => clearTimeout(t)),
    new Promise((_, rej) => { t = setTimeout(() => rej(new Error(`timeout: ${what}`)), ms); }),
  ]);
}

/** Resolves with the next event `name` of emitter (an upper bound, not a sleep). */
export function nextEvent(emitter, name, timeoutMs = 2000, pred = () => true) {
  return withTimeout(new Promise((resolve) => {
    const fn = (d) => {
      if (!pred(d)) return;
      emitter.off(name, fn);
      resolve(d);
    };
    emitter.on(name, fn);
  }), timeoutMs, `event ${name}`);
}

/** Collects every event `name` of emitter into an array. */
export function collect(emitter, name) {
  const out = [];
  emitter.on(name, (d) => out.push(d));
  return out;
}
