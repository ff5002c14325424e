// The messaging facade (P2P) and the channel handles.
import { Emitter } from "./emitter.js";
import { Stream } from "./stream.js";
import {
  parseU64, regionNumber, regionName, randomU64, contentBytes, contentForApp, utf8Len,
} from "./codec.js";

const MAX_MESSAGE = 32768;
const KEY_RE = /^[A-Za-z0-9_-]{1,32}$/;

function fail(rescode, msg) {
  return { rescode, msg };
}

function toStringMap(obj, what) {
  if (obj === undefined || obj === null) return {};
  if (typeof obj !== "object") throw new TypeError(`${what}: an object of strings`);
  const out = {};
  for (const [k, v] of Object.entries(obj)) {
    if (typeof v !== "string") throw new TypeError(`${what}.${k}: a string`);
    out[k] = v;
  }
  return out;
}

/** Builds a ChatMessage from the API's {type, content, appExtras}; a {rescode,msg} on a bad argument. */
function chatMessage({ type, content, appExtras }) {
  if (type !== undefined && typeof type !== "string") return fail(2001, "type: a string");
  const bytes = contentBytes(content);
  if (bytes === null) return fail(2001, "content: a string or a Uint8Array");
  let extras;
  try {
    extras = toStringMap(appExtras, "appExtras");
  } catch (e) {
    return fail(2001, e.message);
  }
  let size = utf8Len(type ?? "") + bytes.length;
  for (const [k, v] of Object.entries(extras)) size += utf8Len(k) + utf8Len(v);
  if (size > MAX_MESSAGE) return fail(2007, `message of ${size} bytes (at most ${MAX_MESSAGE})`);
  return { message: { type: type ?? "", content: bytes, appExtras: extras } };
}

/** A received ChatMessage as the application sees it. */
function appMessage(m, timestampMs, seq) {
  const bytes = m?.content ?? new Uint8Array(0);
  return {
    type: m?.type ?? "",
    content: contentForApp(bytes),
    contentBytes: bytes,
    appExtras: { ...(m?.appExtras ?? {}) },
    timestamp: Number(timestampMs),
    seq: seq.toString(),
  };
}

function sendResult(res) {
  if (res.code !== 0) return fail(res.code, res.msg);
  return {
    rescode: 0, msg: "success",
    timestamp: Number(res.body.timestampMs),
    deliveredOnline: res.body.deliveredOnline,
    seq: res.body.seq.toString(),
  };
}

function gapEvent(from, to, extra) {
  return { ...extra, from: from.toString(), to: to === 0n ? null : to.toString() };
}

export class Client extends Emitter {
  constructor(hummer) {
    super();
    this._hummer = hummer;
  }

  /** @returns {Promise<{rescode, msg, timestamp?, deliveredOnline?, seq?}>} */
  async sendMessageToUser({ type, content, receiver, appExtras, option } = {}) {
    const r = parseU64(receiver);
    if (r === null || r === 0n) return fail(2001, "receiver: a non-zero uid as a decimal string");
    const m = chatMessage({ type, content, appExtras });
    if (!m.message) return m;
    const reliable = option?.reliable !== false;
    const res = await this._hummer._request("sendToUser", {
      receiver: r, message: m.message, unreliable: !reliable, messageId: randomU64(),
    }, { isSend: true, reliable });
    return sendResult(res);
  }

  /** @returns {Promise<{rescode, msg, onlineStatus?: Record<string, boolean>}>} */
  async queryUsersOnlineStatus({ uids } = {}) {
    if (!Array.isArray(uids) || uids.length === 0 || uids.length > 256) return fail(2001, "uids: 1 to 256 uids");
    const list = uids.map(parseU64);
    if (list.some((u) => u === null || u === 0n)) return fail(2001, "uids: non-zero uids as decimal strings");
    const res = await this._hummer._request("queryOnline", { uids: list });
    if (res.code !== 0) return fail(res.code, res.msg);
    const onlineStatus = {};
    for (const u of list) onlineStatus[u.toString()] = false;
    for (const [k, v] of Object.entries(res.body.status)) onlineStatus[BigInt(k).toString()] = v;
    return { rescode: 0, msg: "success", onlineStatus };
  }

  /** A local channel handle (the same handle for the same region and id). */
  createChannel({ region, channelId } = {}) {
    const r = regionNumber(region);
    if (r <= 0) throw new TypeError(`createChannel: unknown region ${region}`);
    if (typeof channelId !== "string" || channelId === "" || utf8Len(channelId) > 64) {
      throw new TypeError("createChannel: channelId: 1 to 64 bytes");
    }
    const key = `${r}/${channelId}`;
    let ch = this._hummer._channels.get(key);
    if (!ch) {
      ch = new Channel(this._hummer, r, channelId);
      this._hummer._channels.set(key, ch);
    }
    return ch;
  }

  _deliver(push) {
    this._emit("MessageFromUser", {
      message: appMessage(push.message, push.timestampMs, push.seq),
      fromUid: push.fromUid.toString(),
    });
  }

  _gap(from, to) {
    this._emit("MessageFromUserGap", gapEvent(from, to, {}));
  }
}

function attrOptions(options) {
  const o = options ?? {};
  const v = o.enableNotification ?? o.enable_notification;
  return v === undefined ? true : !!v;
}

function checkKeys(keys) {
  if (!Array.isArray(keys)) return "keys: an array of strings";
  for (const k of keys) if (typeof k !== "string" || !KEY_RE.test(k)) return `invalid attribute key ${JSON.stringify(k)}`;
  return null;
}

function checkAttrs(attributes) {
  let a;
  try {
    a = toStringMap(attributes, "attributes");
  } catch (e) {
    return { error: e.message };
  }
  for (const k of Object.keys(a)) if (!KEY_RE.test(k)) return { error: `invalid attribute key ${JSON.stringify(k)}` };
  return { attributes: a };
}

const OP = { SET: 1, DELETE: 2, ADD_OR_UPDATE: 3, CLEAR: 4 };
const OP_NAME = { 1: "Set", 2: "Delete", 3: "AddOrUpdate", 4: "Clear" };

export class Channel extends Emitter {
  constructor(hummer, region, channelId) {
    super();
    this._hummer = hummer;
    this._region = region;
    this.channelId = channelId;
    this.region = regionName(region);
    this._joined = false;
    this._number = undefined;
    this._stream = new Stream({
      deliver: (push) => this._emit("ChannelMessage", {
        message: appMessage(push.message, push.timestampMs, push.seq),
        fromUid: push.fromUid.toString(),
        timestamp: Number(push.timestampMs),
      }),
      gap: (from, to) => this._emit("ChannelMessageGap", gapEvent(from, to, { region: this.region, channelId: this.channelId })),
      fetch: (afterSeq) => this._hummer._request("fetch", { channel: this._key(), afterSeq }, { internal: true }),
    });
  }

  /** Whether this instance is a member (as far as the client knows). */
  get joined() {
    return this._joined;
  }

  _key() {
    return { region: this._region, channelId: this.channelId };
  }

  _ok(res, extra) {
    if (res.code !== 0) return fail(res.code, res.msg);
    return { rescode: 0, msg: "success", ...extra };
  }

  async joinChannel({ extra } = {}) {
    let e;
    try {
      e = toStringMap(extra, "extra");
    } catch (err) {
      return fail(2001, err.message);
    }
    const res = await this._hummer._request("join", { channel: this._key(), extra: e });
    // The reply handler set the membership and the stream (before the pushes).
    return this._ok(res);
  }

  async leaveChannel({ extra } = {}) {
    let e;
    try {
      e = toStringMap(extra, "extra");
    } catch (err) {
      return fail(2001, err.message);
    }
    // A leave while the channel's replay is being fetched waits for the fetch
    // (else the fetch is refused with 5101 and the rest of the replay is lost).
    await this._stream.whenIdle();
    const res = await this._hummer._request("leave", { channel: this._key(), extra: e });
    if (res.code === 0 || res.code === 5101) this._left();
    return this._ok(res);
  }

  _left() {
    this._joined = false;
    if (this._number !== undefined && this._hummer._byNumber.get(this._number) === this) {
      this._hummer._byNumber.delete(this._number);
    }
    this._number = undefined;
  }

  async sendMessageToChannel({ type, content, appExtras, option } = {}) {
    const m = chatMessage({ type, content, appExtras });
    if (!m.message) return m;
    const reliable = option?.reliable !== false;
    const res = await this._hummer._request("sendToChannel", {
      channel: this._key(), message: m.message, unreliable: !reliable, messageId: randomU64(),
    }, { isSend: true, reliable });
    return sendResult(res);
  }

  // ---- my attributes in this channel

  async _writeAttrs(which, op, { attributes, keys, options } = {}) {
    const w = { channel: this._key(), op, enableNotification: attrOptions(options) };
    if (op === OP.SET || op === OP.ADD_OR_UPDATE) {
      const a = checkAttrs(attributes);
      if (a.error) return fail(2001, a.error);
      if (op === OP.ADD_OR_UPDATE && Object.keys(a.attributes).length === 0) return fail(2001, "attributes: at least one");
      w.attributes = a.attributes;
    } else if (op === OP.DELETE) {
      const err = checkKeys(keys);
      if (err) return fail(2001, err);
      if (keys.length === 0) return fail(2001, "keys: at least one");
      w.keys = keys;
    }
    return this._ok(await this._hummer._request(which, w));
  }

  setLocalUserAttributes(args) {
    return this._writeAttrs("writeUserAttributes", OP.SET, args);
  }

  setUserAttributes(args) {
    return this.setLocalUserAttributes(args);
  }

  deleteLocalUserAttributesByKeys(args) {
    return this._writeAttrs("writeUserAttributes", OP.DELETE, args);
  }

  deleteUserAttributesByKeys(args) {
    return this.deleteLocalUserAttributesByKeys(args);
  }

  addOrUpdateLocalUserAttributes(args) {
    return this._writeAttrs("writeUserAttributes", OP.ADD_OR_UPDATE, args);
  }

  clearLocalUserAttributes(args) {
    return this._writeAttrs("writeUserAttributes", OP.CLEAR, args);
  }

  setChannelAttributes(args) {
    return this._writeAttrs("writeChannelAttributes", OP.SET, args);
  }

  deleteChannelAttributesByKeys(args) {
    return this._writeAttrs("writeChannelAttributes", OP.DELETE, args);
  }

  addOrUpdateChannelAttributes(args) {
    return this._writeAttrs("writeChannelAttributes", OP.ADD_OR_UPDATE, args);
  }

  clearChannelAttributes(args) {
    return this._writeAttrs("writeChannelAttributes", OP.CLEAR, args);
  }

  // ---- queries

  async getChannelUserList() {
    const res = await this._hummer._request("getUserList", this._key());
    return this._ok(res, res.code === 0 ? {
      appid: this._hummer.appid, channelId: this.channelId,
      users: res.body.uids.map((u) => u.toString()),
    } : {});
  }

  async getUserAttributes({ uid } = {}) {
    return this.getUserAttributesByKeys({ uid, keys: [] });
  }

  async getUserAttributesByKeys({ uid, keys } = {}) {
    const u = parseU64(uid);
    if (u === null) return fail(2001, "uid: a uid as a decimal string");
    const err = checkKeys(keys ?? []);
    if (err) return fail(2001, err);
    const res = await this._hummer._request("getUserAttributes", { channel: this._key(), uid: u, keys: keys ?? [] });
    return this._ok(res, res.code === 0 ? {
      appid: this._hummer.appid, channelId: this.channelId, uid: u.toString(),
      attributes: { ...res.body.attributes },
    } : {});
  }

  async getChannelAttributes() {
    return this.getChannelAttributesByKeys({ keys: [] });
  }

  async getChannelAttributesByKeys({ keys } = {}) {
    const err = checkKeys(keys ?? []);
    if (err) return fail(2001, err);
    const res = await this._hummer._request("getChannelAttributes", { channel: this._key(), keys: keys ?? [] });
    return this._ok(res, res.code === 0 ? {
      appid: this._hummer.appid, channelId: this.channelId,
      attributes: { ...res.body.attributes },
      lastUpdateUid: res.body.lastUpdateUid.toString(),
      lastUpdateTs: Number(res.body.lastUpdateTs),
    } : {});
  }

  /** Member counts of channels of this channel's region (no membership needed). */
  async getChannelUserCount({ channelIds } = {}) {
    if (!Array.isArray(channelIds) || channelIds.length === 0) return fail(2001, "channelIds: at least one id");
    if (channelIds.length > 32) return fail(5109, "channelIds: at most 32 ids");
    for (const id of channelIds) {
      if (typeof id !== "string" || id === "" || utf8Len(id) > 64) return fail(2001, "channelIds: ids of 1 to 64 bytes");
    }
    const res = await this._hummer._request("getUserCount", { region: this._region, channelIds });
    if (res.code !== 0) return fail(res.code, res.msg);
    const userCount = {};
    for (const id of channelIds) userCount[id] = 0;
    Object.assign(userCount, res.body.counts);
    return { rescode: 0, msg: "success", appid: this._hummer.appid, userCount };
  }

  /** Members whose attribute `key` equals `prop` (the 1.0 SDK's spelling). */
  async getChannelUserListByAtrribute({ key, prop } = {}) {
    if (typeof key !== "string" || !KEY_RE.test(key)) return fail(2001, "key: an attribute key");
    if (typeof prop !== "string") return fail(2001, "prop: a string");
    const res = await this._hummer._request("getUserListByAttribute", { channel: this._key(), key, value: prop });
    return this._ok(res, res.code === 0 ? {
      appid: this._hummer.appid, channelId: this.channelId,
      users: res.body.uids.map((u) => u.toString()),
    } : {});
  }

  /** The correctly spelled alias of getChannelUserListByAtrribute. */
  getChannelUserListByAttribute(args) {
    return this.getChannelUserListByAtrribute(args);
  }

  // ---- pushes

  _onPush(body) {
    const v = body.value;
    const me = this._hummer.uid;
    switch (body.case) {
      case "channelMessage":
        this._stream.push(v.seq, v);
        return;
      case "membership": {
        const joined = v.joined.map((u) => u.toString()).filter((u) => u !== me);
        const left = v.left.map((u) => u.toString()).filter((u) => u !== me);
        if (joined.length) this._emit("NotifyJoinChannel", { uids: joined });
        if (left.length) this._emit("NotifyLeaveChannel", { uids: left });
        return;
      }
      case "userCountChanged":
        this._emit("NotifyUserCountChange", { count: v.count });
        return;
      case "userAttributesChanged": {
        const name = OP_NAME[v.op];
        if (!name) return;
        const ev = { uid: v.uid.toString(), lastUpdateTs: Number(v.timestampMs) };
        if (v.op === OP.DELETE) ev.keys = [...v.keys];
        if (v.op === OP.DELETE) ev.attributes = [...v.keys];
        else ev.attributes = v.op === OP.CLEAR ? {} : { ...v.attributes };
        this._emit(`NotifyUserAttributes${name}`, ev);
        return;
      }
      case "channelAttributesChanged": {
        const name = OP_NAME[v.op];
        if (!name) return;
        const ev = { lastUpdateUid: v.lastUpdateUid.toString(), lastUpdateTs: Number(v.timestampMs) };
        if (v.op === OP.DELETE) ev.keys = [...v.keys];
        if (v.op === OP.DELETE) ev.attributes = [...v.keys];
        else ev.attributes = v.op === OP.CLEAR ? {} : { ...v.attributes };
        this._emit(`NotifyChannelAttributes${name}`, ev);
        return;
      }
      default:
    }
  }
}
