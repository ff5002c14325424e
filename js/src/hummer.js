// The instance level: the link, login and re-login with resume, requests,
// heartbeat, the P2P stream and the channels' streams (docs/protocol.md).
import { Emitter } from "./emitter.js";
import { Stream } from "./stream.js";
import {
  PROTOCOL_VERSION, encodeFrame, decodeServerFrame, ProtocolError,
  parseU64, regionNumber, regionName,
} from "./codec.js";
import { Client } from "./client.js";

export const ConnectionState = Object.freeze({
  DISCONNECTED: "DISCONNECTED",
  CONNECTING: "CONNECTING",
  CONNECTED: "CONNECTED",
  RECONNECTING: "RECONNECTING",
});

export const ConnectionReason = Object.freeze({
  INIT: "INIT",
  LOGIN: "LOGIN",
  LOGIN_SUCCESS: "LOGIN_SUCCESS",
  LOGIN_FAILURE: "LOGIN_FAILURE",
  LOGIN_TIMEOUT: "LOGIN_TIMEOUT",
  INTERRUPTED: "INTERRUPTED",
  LOGOUT: "LOGOUT",
  REMOTE_LOGIN: "REMOTE_LOGIN",
  KICKED: "KICKED",
});

export const ErrorCode = Object.freeze({
  SUCCESS: 0,
  UNKNOWN: 1,
  LOGIN_KICK_OUT: 100,
  UNINITIALIZED: 1001,
  OPERATION_TIMEOUT: 1005,
  CONNECTION_EXCEPTION: 1007,
  UNAUTHORIZED: 1009,
  INVALID_PARAMETER: 2001,
  INVALID_TOKEN: 2002,
  EXPIRED_TOKEN: 2003,
  RESOURCE_NOT_FOUND: 2004,
  MSG_SIZE_LIMIT_EXCEEDED: 2007,
  UNSUPPORTED_PROTOCOL_VERSION: 2010,
  ALREADY_LOGGED_IN: 2011,
  TOO_MANY_INSTANCES: 2012,
  MESSAGE_ID_REUSED: 2013,
  APPID_UNAVAILABLE: 2018,
  PERMISSION_DENY: 3000,
  INTERNAL_SERVER_ERROR: 4000,
  OPERATION_TOO_OFTEN: 4003,
  SERVICE_UNAVAILABLE: 4010,
  USER_NOT_IN_CHANNEL: 5101,
  CHANNEL_USER_LIMIT_EXCEEDED: 5102,
  USER_ATTRIBUTES_ITEMS_OVERFLOW: 5103,
  USER_ATTRIBUTES_SIZE_OVERFLOW: 5104,
  CHANNEL_ATTRIBUTES_ITEMS_OVERFLOW: 5105,
  CHANNEL_ATTRIBUTES_SIZE_OVERFLOW: 5106,
  CHANNEL_ATTRIBUTES_NOT_EXIST: 5108,
  CHANNEL_COUNT_LIMIT_EXCEEDED: 5109,
});

const CODE_NAMES = Object.fromEntries(Object.entries(ErrorCode).map(([k, v]) => [v, k]));

export function codeMessage(code, fallback) {
  if (code === 0) return "success";
  return fallback || CODE_NAMES[code] || `error ${code}`;
}

export const SUBPROTOCOL = "hummer.v1.protobuf";

const DEFAULTS = {
  requestTimeout: 5000,
  sendTimeout: 10000,
  loginTimeout: 12000,
  ackDelay: 50,
  reconnectMinDelay: 250,
  reconnectMaxDelay: 30000,
};

// Re-login refusals worth trying again later (the others are final).
const TRANSIENT_LOGIN_CODES = new Set([4000, 4003, 2012]);

function defaultUrl() {
  const loc = globalThis.location;
  if (loc && loc.host) {
    return `${loc.protocol === "https:" ? "wss:" : "ws:"}//${loc.host}/v1/ws`;
  }
  return undefined;
}

export function channelKeyString(region, channelId) {
  return `${region}/${channelId}`;
}

export class Hummer extends Emitter {
  /**
   * @param {{appid: number, url?: string | string[], WebSocket?: any}} options
   */
  static createHummer(options) {
    return new Hummer(options);
  }

  constructor(options = {}) {
    super();
    const appid = Number(options.appid);
    if (!Number.isInteger(appid) || appid < 0 || appid > 0xffffffff) {
      throw new TypeError("createHummer: appid must be a 32-bit unsigned integer");
    }
    this.appid = appid;
    // One URL, or several servers of one service to fail over between.
    const urls = options.url ?? defaultUrl();
    if (Array.isArray(urls)) {
      if (urls.length === 0 || !urls.every((u) => typeof u === "string" && u !== "")) {
        throw new TypeError("createHummer: url must be a URL or a non-empty list of URLs");
      }
      this.urls = Object.freeze([...urls]);
    } else {
      this.urls = Object.freeze(urls === undefined ? [] : [urls]);
    }
    this._urlIndex = 0; // the URL in use, being dialed, or to dial next
    this._urlFailures = 0; // failed dials in a row in this round
    this._WebSocket = options.WebSocket;
    this._opts = { ...DEFAULTS };
    for (const k of Object.keys(DEFAULTS)) if (options[k] !== undefined) this._opts[k] = options[k];

    this._state = ConnectionState.DISCONNECTED;
    this._reason = ConnectionReason.INIT;

    this._session = null; // {uid: bigint, token, region} between login() and logout
    this._ws = null;
    this._linkLoggedIn = false;
    this._loginPending = null; // the first login's promise resolver
    this._loginRid = 0n;
    this._loginTimer = null;
    this._awaitingToken = false;

    this._nextRid = 1n;
    this._inflight = new Map();
    this._queue = [];
    this._resendable = [];

    this._instanceId = 0n;
    this._reconnectAttempt = 0;
    this._reconnectTimer = null;
    this._heartbeatTimer = null;
    this._pingInterval = 15000;
    this._idleTimeout = 45000;
    this._lastSent = 0;
    this._lastRecv = 0;
    this._pingNonce = 1n;

    this._ackTimer = null;
    this._lastAcked = -1n;

    this._channels = new Map(); // key string -> Channel handle
    this._byNumber = new Map(); // channel number of this login -> Channel
    this._client = null;

    this._p2p = new Stream({
      deliver: (push) => this._client?._deliver(push),
      gap: (from, to) => this._client?._gap(from, to),
      fetch: (afterSeq) => this._request("fetch", { afterSeq }, { internal: true }),
      advanced: () => this._scheduleAck(),
    });

    // Counters and a frame tap for tests and debugging (not part of the API).
    this._stats = { resent: 0, reconnects: 0, logins: 0 };
    this._tap = null;
  }

  // ---------------------------------------------------------------- state

  getConnectionState() {
    return { state: this._state, reason: this._reason };
  }

  get uid() {
    return this._session ? this._session.uid.toString() : undefined;
  }

  /** The server URL in use (or dialed next): one of `urls`. */
  get url() {
    return this.urls[this._urlIndex];
  }

  _setState(state, reason) {
    if (this._state === state && this._reason === reason) return;
    this._state = state;
    this._reason = reason;
    this._emit("ConnectionStateChanged", { state, reason });
  }

  // ---------------------------------------------------------------- public API

  /** @returns {Promise<{rescode: number, msg: string, instanceId?: string, ...}>} */
  login({ uid, token, region } = {}) {
    if (this._session) {
      return Promise.resolve({ rescode: ErrorCode.ALREADY_LOGGED_IN, msg: "already logged in (log out first)" });
    }
    const u = parseU64(uid);
    if (u === null || u === 0n) return Promise.resolve({ rescode: 2001, msg: "uid: a non-zero uint64 as a decimal string" });
    const r = regionNumber(region);
    if (r < 0) return Promise.resolve({ rescode: 2001, msg: `unknown region ${region}` });
    if (!this.url) return Promise.resolve({ rescode: 2001, msg: "no url: pass createHummer({url})" });
    this._session = { uid: u, token: token ?? "", region: r };
    this._instanceId = 0n;
    this._p2p.reset(0n, 0n);
    this._lastAcked = -1n;
    this._reconnectAttempt = 0;
    this._setState(ConnectionState.CONNECTING, ConnectionReason.LOGIN);
    return new Promise((resolve) => {
      this._loginPending = resolve;
      this._connect();
    });
  }

  async logout() {
    if (!this._session) return { rescode: 0, msg: "success" };
    let result = { rescode: 0, msg: "success" };
    if (this._linkLoggedIn) {
      this._sendAck();
      const res = await this._request("logout", {}, { internal: true });
      if (res.code !== 0 && res.code !== ErrorCode.UNAUTHORIZED) result = { rescode: res.code, msg: res.msg };
    }
    this._terminate(ConnectionReason.LOGOUT);
    return result;
  }

  async refreshToken({ token } = {}) {
    if (!this._session) return this._notLoggedIn();
    if (typeof token !== "string" || token === "") return { rescode: 2001, msg: "token: a non-empty string" };
    if (this._awaitingToken) {
      // The re-login was refused as expired: try again with the new token.
      this._session.token = token;
      this._awaitingToken = false;
      this._scheduleReconnect(0);
      return { rescode: 0, msg: "success" };
    }
    const res = await this._request("refreshToken", { token });
    if (res.code !== 0) return { rescode: res.code, msg: res.msg };
    if (this._session) this._session.token = token;
    return {
      rescode: 0, msg: "success",
      tokenExpiresAt: Number(res.body.tokenExpiresAtMs),
      serverTime: Number(res.body.serverTimeMs),
    };
  }

  async setUserRegion({ region } = {}) {
    const r = regionNumber(region);
    if (r <= 0) return { rescode: 2001, msg: `unknown region ${region}` };
    const res = await this._request("setUserRegion", { region: r });
    if (res.code !== 0) return { rescode: res.code, msg: res.msg };
    if (this._session) this._session.region = r;
    return { rescode: 0, msg: "success" };
  }

  async getInstanceInfo() {
    const res = await this._request("getInstanceInfo", {});
    if (res.code !== 0) return { rescode: res.code, msg: res.msg };
    const b = res.body;
    return {
      rescode: 0, msg: "success",
      appid: b.appid,
      uid: b.uid.toString(),
      instanceId: b.instanceId.toString(),
      isAnonymous: b.isAnonymous,
      region: b.region ? regionName(b.region) : "",
      channels: b.channels.map((k) => ({ region: regionName(k.region), channelId: k.channelId })),
    };
  }

  /** The messaging facade (one per Hummer; local only). */
  createInstance() {
    if (!this._client) this._client = new Client(this);
    return this._client;
  }

  _notLoggedIn() {
    return { rescode: ErrorCode.UNINITIALIZED, msg: "not logged in (call login first)" };
  }

  // ---------------------------------------------------------------- the link

  // Failover between the servers of `urls`: they are dialed in order,
  // starting from the one that last worked. A failed dial moves to the next
  // URL at once; only when every URL failed once (a round) is it a lost link
  // (the first login fails; a reconnect backs off, and the next round starts
  // where this one did). A link that was open and is lost (or abandoned: no
  // login reply, bad input) moves to the next URL, where the reconnect and
  // its resume go.

  /** The dial failed: true when another URL of the round was dialed instead. */
  _dialNext() {
    const n = this.urls.length;
    this._urlIndex = (this._urlIndex + 1) % n;
    this._urlFailures++;
    if (this._urlFailures < n && this._session) {
      this._connect();
      return true;
    }
    this._urlFailures = 0;
    return false;
  }

  /** The open link (or the dial in progress) is given up on: the next URL comes first. */
  _moveOn() {
    if (this.urls.length > 0) this._urlIndex = (this._urlIndex + 1) % this.urls.length;
    this._urlFailures = 0;
  }

  _connect() {
    const WS = this._WebSocket ?? globalThis.WebSocket;
    if (!WS) {
      this._linkFailed(undefined, "no WebSocket implementation: pass createHummer({WebSocket})");
      return;
    }
    let ws;
    try {
      ws = new WS(this.url, [SUBPROTOCOL]);
    } catch (e) {
      this._ws = null;
      if (this._dialNext()) return;
      this._linkFailed(undefined, String(e && e.message));
      return;
    }
    ws.binaryType = "arraybuffer";
    this._ws = ws;
    this._linkLoggedIn = false;
    this._lastRecv = Date.now();
    let opened = false;
    ws.onopen = () => {
      if (this._ws !== ws) return;
      opened = true;
      this._urlFailures = 0;
      this._sendLogin();
    };
    ws.onmessage = (ev) => {
      if (this._ws !== ws) return;
      this._onMessage(ev.data);
    };
    ws.onclose = () => {
      if (this._ws !== ws) return;
      this._ws = null;
      if (!opened) {
        if (this._dialNext()) return;
      } else {
        this._moveOn();
      }
      this._linkLost(undefined);
    };
    ws.onerror = () => {
      // A close event follows; nothing to do here.
    };
  }

  _writeFrame(init) {
    const ws = this._ws;
    if (!ws || ws.readyState !== 1) return false;
    this._tap?.("c2s", init);
    ws.send(encodeFrame(init));
    this._lastSent = Date.now();
    return true;
  }

  /** Leaves the current link without a Close frame (a lost link), then handles it. */
  _abandonLink(closeCode) {
    const ws = this._ws;
    this._ws = null;
    if (ws) this._moveOn();
    if (ws) {
      try {
        ws.close();
      } catch {
        // ignore
      }
    }
    this._linkLost(closeCode);
  }

  /** For tests and diagnostics: drop the link as a network failure would. */
  _dropLink() {
    if (this._ws) this._abandonLink(undefined);
  }

  _linkFailed(closeCode, msg) {
    this._ws = null;
    this._linkLost(closeCode, msg);
  }

  _linkLost(closeCode, msg) {
    const wasLoggedIn = this._linkLoggedIn;
    this._linkLoggedIn = false;
    this._stopHeartbeat();
    clearTimeout(this._loginTimer);
    this._loginTimer = null;
    this._loginRid = 0n;
    clearTimeout(this._ackTimer);
    this._ackTimer = null;
    if (!this._session) return;

    // Requests in flight: reliable sends wait for the re-login to be re-sent
    // with their message id; everything else has an unknown outcome (1007;
    // a leave's channel is then out, and the resume omitting it completes
    // the leave).
    for (const req of this._inflight.values()) {
      if (req.isSend && req.reliable) {
        req.awaitingResend = true;
        this._resendable.push(req);
      } else {
        this._finish(req, { code: ErrorCode.CONNECTION_EXCEPTION, msg: "the link was lost with the request in flight" });
      }
    }
    this._inflight.clear();

    if (this._loginPending) {
      // The first login never completed.
      const resolve = this._loginPending;
      this._loginPending = null;
      const code = closeCode ?? ErrorCode.CONNECTION_EXCEPTION;
      this._terminate(ConnectionReason.LOGIN_FAILURE);
      resolve({ rescode: code, msg: msg || codeMessage(code, "the link closed before the login completed") });
      return;
    }

    if (closeCode === 100 || closeCode === 4007) {
      this._terminate(ConnectionReason.REMOTE_LOGIN);
      return;
    }
    // 4100..4199: the app's backend kicked this instance (server API).
    if (closeCode >= 4100 && closeCode <= 4199) {
      this._terminate(ConnectionReason.KICKED);
      return;
    }
    if (closeCode === 2010) {
      this._terminate(ConnectionReason.LOGIN_FAILURE);
      return;
    }
    if (wasLoggedIn || this._state === ConnectionState.CONNECTED) {
      this._setState(ConnectionState.RECONNECTING, ConnectionReason.INTERRUPTED);
    }
    if (this._awaitingToken) return;
    this._scheduleReconnect();
  }

  _scheduleReconnect(delay) {
    clearTimeout(this._reconnectTimer);
    if (delay === undefined) {
      const { reconnectMinDelay: min, reconnectMaxDelay: max } = this._opts;
      const base = Math.min(max, min * 2 ** Math.min(this._reconnectAttempt, 20));
      delay = base / 2 + Math.random() * (base / 2); // "equal jitter"
      this._reconnectAttempt++;
    }
    this._reconnectTimer = setTimeout(() => {
      this._reconnectTimer = null;
      if (!this._session || this._ws) return;
      this._stats.reconnects++;
      this._connect();
    }, delay);
  }

  /** Ends the session locally: no reconnect, everything pending fails. */
  _terminate(reason) {
    const session = this._session;
    this._session = null;
    this._urlFailures = 0;
    this._awaitingToken = false;
    clearTimeout(this._reconnectTimer);
    this._reconnectTimer = null;
    clearTimeout(this._loginTimer);
    clearTimeout(this._ackTimer);
    this._ackTimer = null;
    this._stopHeartbeat();
    const ws = this._ws;
    this._ws = null;
    this._linkLoggedIn = false;
    if (ws) {
      try {
        ws.close();
      } catch {
        // ignore
      }
    }
    const fail = { code: ErrorCode.CONNECTION_EXCEPTION, msg: "the session ended" };
    for (const req of [...this._inflight.values(), ...this._queue, ...this._resendable]) this._finish(req, fail);
    this._inflight.clear();
    this._queue = [];
    this._resendable = [];
    for (const ch of this._channels.values()) ch._joined = false;
    this._byNumber.clear();
    this._instanceId = 0n;
    this._p2p.reset(0n, 0n);
    if (this._loginPending) {
      const resolve = this._loginPending;
      this._loginPending = null;
      resolve({ rescode: ErrorCode.CONNECTION_EXCEPTION, msg: "the session ended" });
    }
    if (session || this._state !== ConnectionState.DISCONNECTED) {
      this._setState(ConnectionState.DISCONNECTED, reason);
    }
  }

  // ---------------------------------------------------------------- login

  _sendLogin() {
    const s = this._session;
    if (!s) return;
    const login = {
      protocolVersion: PROTOCOL_VERSION,
      appid: this.appid,
      uid: s.uid,
      token: s.token,
      region: s.region,
    };
    const resume = this._instanceId !== 0n;
    if (resume) {
      const channels = [];
      for (const ch of this._channels.values()) {
        if (!ch._joined) continue;
        channels.push({ channel: ch._key(), epoch: ch._stream.epoch, seq: ch._stream.cursor });
      }
      login.resume = {
        p2pEpoch: this._p2p.epoch,
        instanceId: this._instanceId,
        p2pSeq: this._p2p.cursor,
        channels,
      };
    }
    const rid = this._nextRid++;
    this._loginRid = rid;
    this._stats.logins++;
    this._writeFrame({ requestId: rid, body: { case: "login", value: login } });
    clearTimeout(this._loginTimer);
    this._loginTimer = setTimeout(() => {
      this._loginTimer = null;
      if (this._loginRid !== rid) return;
      if (this._loginPending) {
        const resolve = this._loginPending;
        this._loginPending = null;
        this._terminate(ConnectionReason.LOGIN_TIMEOUT);
        resolve({ rescode: ErrorCode.OPERATION_TIMEOUT, msg: "no login reply in time" });
      } else {
        this._abandonLink(undefined);
      }
    }, this._opts.loginTimeout);
  }

  _onLoginReply(frame) {
    clearTimeout(this._loginTimer);
    this._loginTimer = null;
    this._loginRid = 0n;
    const body = frame.body;
    if (body.case === "error") {
      const code = body.value.code;
      const msg = body.value.message;
      if (this._loginPending) {
        const resolve = this._loginPending;
        this._loginPending = null;
        this._terminate(ConnectionReason.LOGIN_FAILURE);
        resolve({ rescode: code, msg: codeMessage(code, msg) });
        return;
      }
      // A re-login after a lost link was refused.
      const ws = this._ws;
      this._ws = null;
      try {
        ws?.close();
      } catch {
        // ignore
      }
      if (code === ErrorCode.EXPIRED_TOKEN) {
        this._awaitingToken = true;
        this._emit("TokenExpired", { rescode: code, msg: codeMessage(code, msg) });
        return;
      }
      if (TRANSIENT_LOGIN_CODES.has(code)) {
        this._scheduleReconnect();
        return;
      }
      this._terminate(ConnectionReason.LOGIN_FAILURE);
      return;
    }
    if (body.case !== "loginReply") {
      this._abandonLink(undefined);
      return;
    }
    const r = body.value;
    this._linkLoggedIn = true;
    this._reconnectAttempt = 0;
    const wasResumeAttempt = this._instanceId !== 0n;
    this._instanceId = r.instanceId;
    this._pingInterval = r.pingIntervalMs || 15000;
    this._idleTimeout = r.idleTimeoutMs || 45000;
    this._startHeartbeat();

    // P2P stream (rule 2 and 6).
    this._p2p.reset(r.p2pEpoch, r.p2pSeq);
    this._p2p.replyGap(r.p2pGap);
    if (r.p2pGap) this._scheduleAck();
    if (r.p2pReplayTruncatedAt !== 0n) this._p2p.truncatedAt(r.p2pReplayTruncatedAt);
    this._lastAcked = -1n; // ack again after a resume: the last Ack may have been lost
    if (this._p2p.cursor > 0n) this._scheduleAck();

    // Channels: the kept ones get their state; the others are re-joined.
    this._byNumber.clear();
    const kept = new Set();
    if (r.resumed) {
      for (const rc of r.channels) {
        const ch = rc.channel && this._channels.get(channelKeyString(rc.channel.region, rc.channel.channelId));
        if (!ch || !ch._joined || !rc.state) continue;
        kept.add(ch);
        this._applyJoinState(ch, rc.state);
      }
    }
    const rejoin = [];
    for (const ch of this._channels.values()) if (ch._joined && !kept.has(ch)) rejoin.push(ch);
    for (const ch of rejoin) this._rejoin(ch);

    // Sends whose reply was lost: the same message id again after a resume;
    // after a fresh login the outcome stays unknown (1007).
    const resend = this._resendable;
    this._resendable = [];
    for (const req of resend) {
      req.awaitingResend = false;
      if (r.resumed && wasResumeAttempt) {
        this._stats.resent++;
        this._transmit(req);
      } else {
        this._finish(req, { code: ErrorCode.CONNECTION_EXCEPTION, msg: "the link was lost; the instance was not resumed" });
      }
    }
    const queue = this._queue;
    this._queue = [];
    for (const req of queue) this._transmit(req);

    if (this._loginPending) {
      const resolve = this._loginPending;
      this._loginPending = null;
      this._setState(ConnectionState.CONNECTED, ConnectionReason.LOGIN_SUCCESS);
      resolve({
        rescode: 0, msg: "success",
        instanceId: r.instanceId.toString(),
        isAnonymous: r.isAnonymous,
        tokenExpiresAt: Number(r.tokenExpiresAtMs),
        serverTime: Number(r.serverTimeMs),
      });
    } else {
      this._setState(ConnectionState.CONNECTED, ConnectionReason.LOGIN_SUCCESS);
    }
  }

  // ---------------------------------------------------------------- channels

  _applyJoinState(ch, state) {
    if (ch._number !== undefined && this._byNumber.get(ch._number) === ch) this._byNumber.delete(ch._number);
    ch._number = state.channel;
    this._byNumber.set(state.channel, ch);
    ch._stream.reset(state.epoch, state.seq);
    ch._stream.replyGap(state.gap);
    if (state.replayTruncatedAt !== 0n) ch._stream.truncatedAt(state.replayTruncatedAt);
  }

  async _rejoin(ch) {
    const res = await this._request("join", {
      channel: ch._key(), rejoin: true, epoch: ch._stream.epoch, resumeSeq: ch._stream.cursor,
    }, { internal: true, front: true });
    if (res.code === 0) {
      // _applyJoinState ran in the reply handler (before the replay's pushes).
      if (res.body.memberOffline) ch._emit("RoomMemberOffline", { rejoined: true });
    } else if (res.code !== ErrorCode.CONNECTION_EXCEPTION) {
      ch._joined = false;
      ch._emit("RoomMemberOffline", { rejoined: false, rescode: res.code, msg: res.msg });
    }
  }

  // ---------------------------------------------------------------- requests

  /**
   * Sends a request; resolves with {code: 0, body} or {code, msg}; never rejects.
   * Requests made while the link is down wait for the re-login (their timeout runs).
   */
  _request(bodyCase, value, opts = {}) {
    if (!this._session) return Promise.resolve({ code: ErrorCode.UNINITIALIZED, msg: "not logged in (call login first)" });
    return new Promise((resolve) => {
      const req = {
        body: { case: bodyCase, value },
        resolve,
        isSend: !!opts.isSend,
        reliable: !!opts.reliable,
        onReply: opts.onReply,
        rid: 0n,
        done: false,
        awaitingResend: false,
      };
      const timeout = opts.timeout ?? (opts.isSend ? this._opts.sendTimeout : this._opts.requestTimeout);
      req.timer = setTimeout(() => {
        if (req.done) return;
        this._inflight.delete(req.rid);
        this._queue = this._queue.filter((q) => q !== req);
        const i = this._resendable.indexOf(req);
        if (i >= 0) {
          this._resendable.splice(i, 1);
          this._finish(req, { code: ErrorCode.CONNECTION_EXCEPTION, msg: "the link was lost and the send could not be re-sent in time" });
        } else {
          this._finish(req, { code: ErrorCode.OPERATION_TIMEOUT, msg: "no reply in time" });
        }
      }, timeout);
      if (this._linkLoggedIn) this._transmit(req);
      else if (opts.front) this._queue.unshift(req);
      else this._queue.push(req);
    });
  }

  _transmit(req) {
    const rid = this._nextRid++;
    req.rid = rid;
    this._inflight.set(rid, req);
    if (!this._writeFrame({ requestId: rid, body: req.body })) {
      this._inflight.delete(rid);
      this._queue.push(req);
    }
  }

  _finish(req, result) {
    if (req.done) return;
    req.done = true;
    clearTimeout(req.timer);
    req.resolve(result);
  }

  // ---------------------------------------------------------------- input

  _onMessage(data) {
    this._lastRecv = Date.now();
    let frame;
    try {
      if (typeof data === "string") throw new ProtocolError("a text message");
      const bytes = data instanceof ArrayBuffer ? new Uint8Array(data)
        : ArrayBuffer.isView(data) ? new Uint8Array(data.buffer, data.byteOffset, data.byteLength)
          : null;
      if (!bytes) throw new ProtocolError("not binary");
      frame = decodeServerFrame(bytes);
    } catch (e) {
      // Malformed input from the server: close the transport and reconnect (no Close sent).
      this._abandonLink(undefined);
      return;
    }
    this._tap?.("s2c", frame);
    const body = frame.body;
    const rid = frame.requestId;
    switch (body.case) {
      case "ping":
        this._writeFrame({ requestId: rid, body: { case: "pong", value: { nonce: body.value.nonce } } });
        return;
      case "pong":
        return;
      case "close":
        this._abandonLink(body.value.code);
        return;
      default:
        break;
    }
    if (rid !== 0n) {
      if (rid === this._loginRid) {
        this._onLoginReply(frame);
        return;
      }
      const req = this._inflight.get(rid);
      if (!req) return; // rule 13: a reply to nothing in flight
      this._inflight.delete(rid);
      if (body.case === "error") {
        this._finish(req, { code: body.value.code, msg: codeMessage(body.value.code, body.value.message) });
      } else {
        // Replies that set stream state run before the pushes that follow them.
        if (body.case === "joinReply") {
          const ch = this._channels.get(channelKeyString(req.body.value.channel.region, req.body.value.channel.channelId));
          if (ch) {
            ch._joined = true;
            this._applyJoinState(ch, body.value);
          }
        }
        this._finish(req, { code: 0, body: body.value, case: body.case });
      }
      return;
    }
    if (!this._linkLoggedIn) return;
    this._onPush(body);
  }

  _onPush(body) {
    const v = body.value;
    switch (body.case) {
      case "userMessage":
        this._p2p.push(v.seq, v);
        return;
      case "tokenWillExpire":
        this._emit("TokenWillExpire", {
          tokenExpiresAt: Number(v.tokenExpiresAtMs),
          serverTime: Number(v.serverTimeMs),
        });
        return;
      default: {
        const ch = this._byNumber.get(v.channel);
        if (!ch) return; // a number it does not know: ignore
        ch._onPush(body);
      }
    }
  }

  // ---------------------------------------------------------------- acks and heartbeat

  _scheduleAck() {
    if (this._ackTimer || !this._linkLoggedIn) return;
    this._ackTimer = setTimeout(() => {
      this._ackTimer = null;
      this._sendAck();
    }, this._opts.ackDelay);
  }

  _sendAck() {
    const c = this._p2p.cursor;
    if (!this._linkLoggedIn || c === 0n || c === this._lastAcked) return;
    if (this._writeFrame({ body: { case: "ack", value: { p2pSeq: c } } })) this._lastAcked = c;
  }

  _startHeartbeat() {
    this._stopHeartbeat();
    const tick = Math.max(50, Math.floor(this._pingInterval / 2));
    this._heartbeatTimer = setInterval(() => {
      const now = Date.now();
      if (now - this._lastRecv >= this._idleTimeout) {
        // Nothing heard for the idle timeout: the link is dead.
        this._abandonLink(undefined);
        return;
      }
      if (now - this._lastSent >= tick) {
        this._writeFrame({ body: { case: "ping", value: { nonce: this._pingNonce++ } } });
      }
    }, tick);
  }

  _stopHeartbeat() {
    clearInterval(this._heartbeatTimer);
    this._heartbeatTimer = null;
  }
}
