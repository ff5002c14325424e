// Every method and event of the seed's API end to end against a real
// hummer-server over WebSocket, plus a dropped link resumed with no loss and
// no duplicate, an idempotent re-send, a kick, and a membership lost past the
// grace period.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { Hummer } from "../src/index.js";
import { startServer, makeToken, gatedWebSocket, WebSocket } from "./helpers/server.js";
import { nextEvent, collect, withTimeout } from "./helpers/fake.js";

let server;
const open = [];
let uidBase = 1000;
const freshUid = () => String(++uidBase);

before(async () => {
  server = await startServer();
});

after(async () => {
  for (const h of open) await h.logout().catch(() => {});
  server?.stop();
});

function make(WS = WebSocket, url = server.url, opts = {}) {
  const h = Hummer.createHummer({ appid: 10000, url, WebSocket: WS, reconnectMinDelay: 20, reconnectMaxDelay: 200, ...opts });
  open.push(h);
  return h;
}

async function loginAs(uid, opts = {}) {
  const h = make(opts.WebSocket, opts.url, opts.hummerOpts);
  const res = await h.login({ uid, token: opts.token, region: opts.region ?? "cn" });
  assert.equal(res.rescode, 0, `login ${uid}: ${res.msg}`);
  return h;
}

/** Waits for events until pred holds on the collected list (upper bound only). */
async function until(pred, what, ms = 5000) {
  const t0 = Date.now();
  // Polls the condition on a short tick; the events themselves are collected
  // by handlers, so this bounds time without standing in for synchronisation.
  while (!pred()) {
    if (Date.now() - t0 > ms) throw new Error(`timeout: ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

test("the seed's access flow: createHummer, login with a token, setUserRegion, getInstanceInfo, refreshToken, logout", async () => {
  const uid = freshUid();
  const h = make();
  const states = collect(h, "ConnectionStateChanged");
  const token = makeToken(server.secret, uid, 3600);
  const res = await h.login({ uid, token, region: "cn" });
  assert.equal(res.rescode, 0);
  assert.equal(res.isAnonymous, false);
  assert.ok(res.tokenExpiresAt > Date.now());
  assert.match(res.instanceId, /^[0-9]+$/);
  assert.equal((await h.setUserRegion({ region: "ap_southeast" })).rescode, 0);
  const info = await h.getInstanceInfo();
  assert.equal(info.rescode, 0);
  assert.equal(info.appid, 10000);
  assert.equal(info.uid, uid);
  assert.equal(info.instanceId, res.instanceId);
  assert.equal(info.isAnonymous, false);
  assert.equal(info.region, "ap_southeast");
  const rt = await h.refreshToken({ token: makeToken(server.secret, uid, 7200) });
  assert.equal(rt.rescode, 0);
  assert.ok(rt.tokenExpiresAt > res.tokenExpiresAt);
  // A token of another uid is refused.
  assert.equal((await h.refreshToken({ token: makeToken(server.secret, "999999", 60) })).rescode, 2002);
  assert.equal((await h.logout()).rescode, 0);
  assert.deepEqual(states.map((s) => `${s.state}/${s.reason}`), [
    "CONNECTING/LOGIN", "CONNECTED/LOGIN_SUCCESS", "DISCONNECTED/LOGOUT",
  ]);
  assert.equal((await h.getInstanceInfo()).rescode, 1001);
});

test("login refusals: a bad token 2002, an unknown appid 2018", async () => {
  const h = make();
  const states = collect(h, "ConnectionStateChanged");
  const r = await h.login({ uid: freshUid(), token: "not-a-jwt" });
  assert.equal(r.rescode, 2002);
  assert.deepEqual(states.at(-1), { state: "DISCONNECTED", reason: "LOGIN_FAILURE" });
  const h2 = Hummer.createHummer({ appid: 4242, url: server.url, WebSocket });
  assert.equal((await h2.login({ uid: "5" })).rescode, 2018);
});

test("TokenWillExpire: a token expiring in 20 s is warned about at once", async () => {
  const uid = freshUid();
  const h = make();
  const warned = nextEvent(h, "TokenWillExpire", 5000);
  assert.equal((await h.login({ uid, token: makeToken(server.secret, uid, 20) })).rescode, 0);
  const w = await warned;
  assert.ok(w.tokenExpiresAt > w.serverTime);
  assert.ok(w.tokenExpiresAt - w.serverTime <= 20000);
  await h.logout();
});

test("P2P: sendMessageToUser (reliable, unreliable, binary, appExtras), MessageFromUser, queryUsersOnlineStatus", async () => {
  const ua = freshUid();
  const ub = freshUid();
  const a = await loginAs(ua);
  const b = await loginAs(ub);
  const ca = a.createInstance();
  const cb = b.createInstance();
  assert.equal(a.createInstance(), ca);
  const got = collect(cb, "MessageFromUser");
  const r1 = await ca.sendMessageToUser({ type: "text", content: "hello", receiver: ub, appExtras: { k: "v" } });
  assert.equal(r1.rescode, 0);
  assert.equal(r1.deliveredOnline, true);
  assert.equal(r1.seq, "1");
  const r2 = await ca.sendMessageToUser({ type: "bin", content: new Uint8Array([0, 255, 1]), receiver: ub, option: { reliable: false } });
  assert.equal(r2.rescode, 0);
  assert.equal(r2.seq, "0");
  await until(() => got.length >= 2, "two messages");
  assert.equal(got[0].fromUid, ua);
  assert.equal(got[0].message.type, "text");
  assert.equal(got[0].message.content, "hello");
  assert.deepEqual(got[0].message.appExtras, { k: "v" });
  assert.ok(got[0].message.timestamp > 0);
  assert.equal(got[0].message.seq, "1");
  assert.deepEqual([...got[1].message.contentBytes], [0, 255, 1]);
  assert.ok(got[1].message.content instanceof Uint8Array);
  const q = await ca.queryUsersOnlineStatus({ uids: [ub, "123456789012"] });
  assert.equal(q.rescode, 0);
  assert.deepEqual(q.onlineStatus, { [ub]: true, "123456789012": false });
  // Argument errors come back as rescodes.
  assert.equal((await ca.queryUsersOnlineStatus({ uids: [] })).rescode, 2001);
  await b.logout();
  // An offline (reliable) message is kept and replayed to the next login of the uid.
  const r3 = await ca.sendMessageToUser({ type: "text", content: "while away", receiver: ub });
  assert.equal(r3.deliveredOnline, false);
  const b2 = make();
  const got2 = collect(b2.createInstance(), "MessageFromUser");
  assert.equal((await b2.login({ uid: ub })).rescode, 0);
  await until(() => got2.length >= 1, "the offline message");
  assert.equal(got2[0].message.content, "while away");
  await a.logout();
  await b2.logout();
});

test("channels: join, notices, messages, user and channel attributes, lists, counts, by-attribute lookup, leave", async () => {
  const ua = freshUid();
  const ub = freshUid();
  const a = await loginAs(ua);
  const b = await loginAs(ub);
  const id = `room-${ua}`;
  const cha = a.createInstance().createChannel({ region: "cn", channelId: id });
  const chb = b.createInstance().createChannel({ region: "cn", channelId: id });
  assert.equal(a.createInstance().createChannel({ region: "cn", channelId: id }), cha);

  // Before joining: 5101.
  assert.equal((await cha.getChannelUserList()).rescode, 5101);

  const countA = collect(cha, "NotifyUserCountChange");
  assert.equal((await cha.joinChannel({ extra: { hello: "1" } })).rescode, 0);
  await until(() => countA.some((c) => c.count === 1), "count 1");
  const joinSeen = nextEvent(cha, "NotifyJoinChannel", 3000);
  assert.equal((await chb.joinChannel()).rescode, 0);
  assert.deepEqual(await joinSeen, { uids: [ub] });
  await until(() => countA.some((c) => c.count === 2), "count 2");

  // Messages: every member gets each, the sender's own echo included.
  const msgsA = collect(cha, "ChannelMessage");
  const msgsB = collect(chb, "ChannelMessage");
  const s = await chb.sendMessageToChannel({ type: "text", content: "hi all", appExtras: { x: "y" } });
  assert.equal(s.rescode, 0);
  assert.equal(s.seq, "1");
  assert.ok(s.timestamp > 0);
  assert.equal((await chb.sendMessageToChannel({ type: "text", content: "fast", option: { reliable: false } })).seq, "0");
  await until(() => msgsA.length >= 2 && msgsB.length >= 2, "channel messages");
  for (const m of [msgsA[0], msgsB[0]]) {
    assert.equal(m.fromUid, ub);
    assert.equal(m.message.content, "hi all");
    assert.deepEqual(m.message.appExtras, { x: "y" });
  }

  // User attributes with notifications (the default).
  const setEv = nextEvent(cha, "NotifyUserAttributesSet", 3000);
  assert.equal((await chb.setUserAttributes({ attributes: { role: "host", mic: "on" } })).rescode, 0);
  const se = await setEv;
  assert.equal(se.uid, ub);
  assert.deepEqual(se.attributes, { role: "host", mic: "on" });
  assert.ok(se.lastUpdateTs > 0);
  const addEv = nextEvent(cha, "NotifyUserAttributesAddOrUpdate", 3000);
  assert.equal((await chb.addOrUpdateLocalUserAttributes({ attributes: { cam: "off" } })).rescode, 0);
  assert.deepEqual((await addEv).attributes, { cam: "off" });
  const delEv = nextEvent(cha, "NotifyUserAttributesDelete", 3000);
  assert.equal((await chb.deleteUserAttributesByKeys({ keys: ["mic"] })).rescode, 0);
  assert.deepEqual((await delEv).keys, ["mic"]);
  const all = await cha.getUserAttributes({ uid: ub });
  assert.equal(all.rescode, 0);
  assert.equal(all.channelId, id);
  assert.deepEqual(all.attributes, { role: "host", cam: "off" });
  const some = await cha.getUserAttributesByKeys({ uid: ub, keys: ["role", "absent"] });
  assert.deepEqual(some.attributes, { role: "host" });
  const byAttr = await cha.getChannelUserListByAtrribute({ key: "role", prop: "host" });
  assert.equal(byAttr.rescode, 0);
  assert.deepEqual(byAttr.users, [ub]);
  assert.deepEqual((await cha.getChannelUserListByAttribute({ key: "role", prop: "guest" })).users, []);
  // enable_notification false is silent: the next notice A sees is the later, notified write.
  const nextUserNotice = nextEvent(cha, "NotifyUserAttributesAddOrUpdate", 3000);
  assert.equal((await chb.addOrUpdateLocalUserAttributes({ attributes: { quiet: "1" }, options: { enableNotification: false } })).rescode, 0);
  assert.equal((await chb.addOrUpdateLocalUserAttributes({ attributes: { loud: "1" }, options: { enableNotification: true } })).rescode, 0);
  assert.deepEqual((await nextUserNotice).attributes, { loud: "1" });
  const clrEv = nextEvent(cha, "NotifyUserAttributesClear", 3000);
  assert.equal((await chb.clearLocalUserAttributes()).rescode, 0);
  assert.equal((await clrEv).uid, ub);
  assert.deepEqual((await cha.getUserAttributes({ uid: ub })).attributes, {});
  // setLocalUserAttributes and deleteLocalUserAttributesByKeys are the same operations.
  assert.equal((await chb.setLocalUserAttributes({ attributes: { a: "1", b: "2" } })).rescode, 0);
  assert.equal((await chb.deleteLocalUserAttributesByKeys({ keys: ["a"] })).rescode, 0);
  assert.deepEqual((await cha.getUserAttributes({ uid: ub })).attributes, { b: "2" });
  // A uid not in the channel: 2004.
  assert.equal((await cha.getUserAttributes({ uid: "777777" })).rescode, 2004);

  // Channel attributes.
  assert.equal((await cha.deleteChannelAttributesByKeys({ keys: ["x"] })).rescode, 5108);
  const cset = nextEvent(chb, "NotifyChannelAttributesSet", 3000);
  assert.equal((await cha.setChannelAttributes({ attributes: { topic: "music", mode: "open" } })).rescode, 0);
  const cs = await cset;
  assert.equal(cs.lastUpdateUid, ua);
  assert.deepEqual(cs.attributes, { topic: "music", mode: "open" });
  const cadd = nextEvent(chb, "NotifyChannelAttributesAddOrUpdate", 3000);
  assert.equal((await cha.addOrUpdateChannelAttributes({ attributes: { mode: "closed" } })).rescode, 0);
  assert.deepEqual((await cadd).attributes, { mode: "closed" });
  const cdel = nextEvent(chb, "NotifyChannelAttributesDelete", 3000);
  assert.equal((await cha.deleteChannelAttributesByKeys({ keys: ["topic"] })).rescode, 0);
  assert.deepEqual((await cdel).keys, ["topic"]);
  const ga = await chb.getChannelAttributes();
  assert.equal(ga.rescode, 0);
  assert.deepEqual(ga.attributes, { mode: "closed" });
  assert.equal(ga.lastUpdateUid, ua);
  assert.ok(ga.lastUpdateTs > 0);
  assert.deepEqual((await chb.getChannelAttributesByKeys({ keys: ["mode", "nope"] })).attributes, { mode: "closed" });
  const cclr = nextEvent(chb, "NotifyChannelAttributesClear", 3000);
  assert.equal((await cha.clearChannelAttributes()).rescode, 0);
  assert.equal((await cclr).lastUpdateUid, ua);
  assert.deepEqual((await chb.getChannelAttributes()).attributes, {});

  // Lists and counts.
  const list = await cha.getChannelUserList();
  assert.equal(list.rescode, 0);
  assert.equal(list.appid, 10000);
  assert.deepEqual([...list.users].sort(), [ua, ub].sort());
  const counts = await cha.getChannelUserCount({ channelIds: [id, "nobody-here"] });
  assert.equal(counts.rescode, 0);
  assert.deepEqual(counts.userCount, { [id]: 2, "nobody-here": 0 });

  // getInstanceInfo lists the joined channel.
  assert.deepEqual((await a.getInstanceInfo()).channels, [{ region: "cn", channelId: id }]);

  // Leave: the others are told; the leaver's attributes go.
  const leftSeen = nextEvent(cha, "NotifyLeaveChannel", 3000);
  assert.equal((await chb.leaveChannel({ extra: { bye: "1" } })).rescode, 0);
  assert.deepEqual(await leftSeen, { uids: [ub] });
  assert.equal(chb.joined, false);
  assert.equal((await chb.sendMessageToChannel({ content: "x" })).rescode, 5101);
  await a.logout();
  await b.logout();
});

test("a dropped link is resumed: reliable P2P and channel messages sent meanwhile arrive once each, in order, no gap, nobody sees a leave", async () => {
  const ua = freshUid();
  const ub = freshUid();
  const { gate, WebSocket: Gated } = gatedWebSocket();
  const a = await loginAs(ua);
  const b = await loginAs(ub, { WebSocket: Gated });
  const id = `resume-${ua}`;
  const cha = a.createInstance().createChannel({ region: "us", channelId: id });
  const cb = b.createInstance();
  const chb = cb.createChannel({ region: "us", channelId: id });
  assert.equal((await chb.joinChannel()).rescode, 0);
  const joined = nextEvent(cha, "NotifyJoinChannel", 3000);
  assert.equal((await cha.joinChannel()).rescode, 0);
  await joined;
  const p2p = collect(cb, "MessageFromUser");
  const chan = collect(chb, "ChannelMessage");
  const p2pGaps = collect(cb, "MessageFromUserGap");
  const chanGaps = collect(chb, "ChannelMessageGap");
  const leaves = collect(cha, "NotifyLeaveChannel");
  const statesB = collect(b, "ConnectionStateChanged");
  // Live traffic before the drop.
  await a.createInstance().sendMessageToUser({ type: "t", content: "p0", receiver: ub });
  await cha.sendMessageToChannel({ type: "t", content: "c0" });
  await until(() => p2p.length === 1 && chan.length === 1, "live messages");

  gate.closed = true;
  b._dropLink();
  assert.equal(b.getConnectionState().state, "RECONNECTING");
  for (let i = 1; i <= 5; i++) {
    assert.equal((await a.createInstance().sendMessageToUser({ type: "t", content: `p${i}`, receiver: ub })).rescode, 0);
    assert.equal((await cha.sendMessageToChannel({ type: "t", content: `c${i}` })).rescode, 0);
  }
  const opensBefore = gate.opened;
  gate.closed = false;
  await nextEvent(b, "ConnectionStateChanged", 10000, (s) => s.state === "CONNECTED");
  assert.ok(gate.opened > opensBefore);
  await until(() => p2p.length >= 6 && chan.length >= 6, "replayed messages");
  // Live traffic after the resume, then a marker: anything duplicated would come before it.
  await a.createInstance().sendMessageToUser({ type: "t", content: "p6", receiver: ub });
  await cha.sendMessageToChannel({ type: "t", content: "c6" });
  await until(() => p2p.length >= 7 && chan.length >= 7, "live after resume");
  assert.deepEqual(p2p.map((m) => m.message.content), ["p0", "p1", "p2", "p3", "p4", "p5", "p6"]);
  assert.deepEqual(p2p.map((m) => m.message.seq), ["1", "2", "3", "4", "5", "6", "7"]);
  assert.deepEqual(chan.map((m) => m.message.content), ["c0", "c1", "c2", "c3", "c4", "c5", "c6"]);
  assert.deepEqual(p2pGaps, []);
  assert.deepEqual(chanGaps, []);
  assert.deepEqual(leaves, []);
  assert.deepEqual(statesB.map((s) => `${s.state}/${s.reason}`), ["RECONNECTING/INTERRUPTED", "CONNECTED/LOGIN_SUCCESS"]);
  // Still a member after the resume, with the same instance.
  assert.equal((await chb.getChannelUserList()).rescode, 0);
  await a.logout();
  await b.logout();
});

test("an in-flight reliable send whose reply is lost is re-sent with the same message id and delivered once", async () => {
  const ua = freshUid();
  const ub = freshUid();
  const a = await loginAs(ua);
  const b = await loginAs(ub);
  const got = collect(a.createInstance(), "MessageFromUser");
  const sent = [];
  b._tap = (dir, f) => {
    if (dir !== "c2s" || f.body.case !== "sendToUser") return;
    sent.push(f.body.value.messageId);
    // Lose the link right after the first attempt is written, before its reply.
    if (sent.length === 1) queueMicrotask(() => b._dropLink());
  };
  const res = await b.createInstance().sendMessageToUser({ type: "t", content: "once", receiver: ua });
  assert.equal(res.rescode, 0, res.msg);
  assert.equal(sent.length, 2, "sent twice");
  assert.equal(sent[0], sent[1], "with the same message id");
  assert.equal(b._stats.resent, 1);
  b._tap = null;
  const marker = await b.createInstance().sendMessageToUser({ type: "t", content: "marker", receiver: ua });
  assert.equal(marker.rescode, 0);
  await until(() => got.some((m) => m.message.content === "marker"), "marker");
  assert.deepEqual(got.map((m) => m.message.content), ["once", "marker"]);
  assert.equal(got[0].message.seq, res.seq);
  await a.logout();
  await b.logout();
});

test("the same message id sent twice on the wire is delivered once, the second answered with the first reply", async () => {
  const ua = freshUid();
  const ub = freshUid();
  const a = await loginAs(ua);
  const b = await loginAs(ub);
  const got = collect(a.createInstance(), "MessageFromUser");
  const msg = { receiver: BigInt(ua), message: { type: "t", content: new TextEncoder().encode("dup") }, messageId: 4242424242n };
  const r1 = await b._request("sendToUser", msg, { isSend: true });
  const r2 = await b._request("sendToUser", msg, { isSend: true });
  assert.equal(r1.code, 0);
  assert.equal(r2.code, 0);
  assert.equal(r2.body.seq, r1.body.seq);
  assert.equal(r2.body.timestampMs, r1.body.timestampMs);
  // Same id, another receiver: 2013.
  const r3 = await b._request("sendToUser", { ...msg, receiver: 5n }, { isSend: true });
  assert.equal(r3.code, 2013);
  await b.createInstance().sendMessageToUser({ content: "marker", receiver: ua });
  await until(() => got.some((m) => m.message.content === "marker"), "marker");
  assert.deepEqual(got.map((m) => m.message.content), ["dup", "marker"]);
  await a.logout();
  await b.logout();
});

test("Close{100}: a newer login of the same uid kicks the older one (DISCONNECTED/REMOTE_LOGIN, no reconnect)", async () => {
  const kickServer = await startServer(["--kick-older-logins"]);
  try {
    const uid = freshUid();
    const first = await loginAs(uid, { url: kickServer.url });
    const kicked = nextEvent(first, "ConnectionStateChanged", 5000, (s) => s.state === "DISCONNECTED");
    const second = await loginAs(uid, { url: kickServer.url });
    assert.deepEqual(await kicked, { state: "DISCONNECTED", reason: "REMOTE_LOGIN" });
    assert.equal((await first.getInstanceInfo()).rescode, 1001);
    assert.equal((await second.getInstanceInfo()).rescode, 0);
    await second.logout();
  } finally {
    kickServer.stop();
  }
});

test("the server API: a backend's publish reaches a JS member (from uid 0), and its kick ends the session (DISCONNECTED/KICKED)", async () => {
  const key = "e2e-api-key-0123456789-abcdefghijklmnop";
  const apiServer = await startServer(["--api-listen", "127.0.0.1:0", "--api-key", `10000:${key}`]);
  try {
    assert.ok(apiServer.apiUrl, "the API listener's address was printed");
    const uid = freshUid();
    const h = await loginAs(uid, { url: apiServer.url });
    const ch = h.createInstance().createChannel({ region: "cn", channelId: "api-room" });
    assert.equal((await ch.joinChannel()).rescode, 0);
    const got = nextEvent(ch, "ChannelMessage", 5000);
    const call = (method, path, body) => fetch(`${apiServer.apiUrl}${path}`, {
      method,
      headers: { authorization: `apikey ${key}`, "content-type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const res = await call("POST", "/v1/channels/cn/api-room/messages", { message_id: "77", type: "notice", content: "from the backend" });
    assert.equal(res.status, 200);
    assert.equal((await res.json()).seq, 1);
    const m = await got;
    assert.equal(m.fromUid, "0");
    assert.equal(m.message.content, "from the backend");
    assert.equal(m.message.type, "notice");
    // Without the key: refused as JSON.
    const bare = await fetch(`${apiServer.apiUrl}/v1/users/online?uids=${uid}`);
    assert.equal(bare.status, 401);
    assert.equal((await bare.json()).code, 1009);
    const kicked = nextEvent(h, "ConnectionStateChanged", 5000, (s) => s.state === "DISCONNECTED");
    const k = await call("POST", `/v1/users/${uid}/kick`, { code: 4101, reason: "policy" });
    assert.equal((await k.json()).instances, 1);
    assert.deepEqual(await kicked, { state: "DISCONNECTED", reason: "KICKED" });
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(h.getConnectionState().state, "DISCONNECTED", "no reconnect after a kick");
  } finally {
    apiServer.stop();
  }
});

test("a link down past the grace period: re-login not resumed, the channel re-joined (RoomMemberOffline), the missed channel messages replayed", async () => {
  const graceServer = await startServer(["--presence-grace-secs", "1"]);
  try {
    const ua = freshUid();
    const ub = freshUid();
    const { gate, WebSocket: Gated } = gatedWebSocket();
    const a = await loginAs(ua, { url: graceServer.url });
    const b = await loginAs(ub, { url: graceServer.url, WebSocket: Gated });
    const id = `grace-${ua}`;
    const cha = a.createInstance().createChannel({ region: "cn", channelId: id });
    const chb = b.createInstance().createChannel({ region: "cn", channelId: id });
    assert.equal((await cha.joinChannel()).rescode, 0);
    const bJoined = nextEvent(cha, "NotifyJoinChannel", 3000);
    assert.equal((await chb.joinChannel()).rescode, 0);
    await bJoined;
    const chan = collect(chb, "ChannelMessage");
    await cha.sendMessageToChannel({ content: "before" });
    await until(() => chan.length === 1, "before");
    const bLeft = nextEvent(cha, "NotifyLeaveChannel", 10000);
    gate.closed = true;
    b._dropLink();
    // The server drops B's instance after the grace period: A sees B leave.
    assert.deepEqual(await bLeft, { uids: [ub] });
    await cha.sendMessageToChannel({ content: "missed" });
    const offline = nextEvent(chb, "RoomMemberOffline", 10000);
    const back = nextEvent(cha, "NotifyJoinChannel", 10000);
    gate.closed = false;
    assert.deepEqual(await offline, { rejoined: true });
    assert.deepEqual(await back, { uids: [ub] });
    await until(() => chan.length === 2, "missed replayed");
    assert.deepEqual(chan.map((m) => m.message.content), ["before", "missed"]);
    assert.equal(chb.joined, true);
    await a.logout();
    await b.logout();
  } finally {
    graceServer.stop();
  }
});

test("heartbeat: the client pings a real server on its interval and the link stays CONNECTED", async () => {
  // The client pings at the login reply's interval; an idle link must stay connected.
  const h = await loginAs(freshUid());
  const pings = [];
  h._tap = (dir, f) => { if (dir === "c2s" && f.body.case === "ping") pings.push(f); };
  h._pingInterval = 100;
  h._startHeartbeat();
  await withTimeout(new Promise((r) => { const t = setInterval(() => { if (pings.length >= 2) { clearInterval(t); r(); } }, 10); }), 3000, "client pings");
  assert.equal(h.getConnectionState().state, "CONNECTED");
  await h.logout();
});

test("failover: a dead URL of the list is skipped; when the server in use stops, the client logs in on the next by itself", async () => {
  const serverA = await startServer();
  const serverB = await startServer();
  let aRunning = true;
  try {
    const ua = freshUid();
    const ub = freshUid();
    // Nothing listens on port 9 (discard) here.
    const a = make(WebSocket, ["ws://127.0.0.1:9/v1/ws", serverA.url, serverB.url]);
    const res = await a.login({ uid: ua, region: "cn" });
    assert.equal(res.rescode, 0, res.msg);
    assert.equal(a.url, serverA.url);
    const b = await loginAs(ub, { url: serverB.url });
    const states = collect(a, "ConnectionStateChanged");
    serverA.stop();
    aRunning = false;
    await until(() => states.some((s) => s.state === "CONNECTED"), "a logged in again", 10000);
    assert.deepEqual(states[0], { state: "RECONNECTING", reason: "INTERRUPTED" });
    assert.equal(a.url, serverB.url);
    // B never saw a's instance: the resume was answered as a fresh login.
    const ca = a.createInstance();
    const cb = b.createInstance();
    const toB = collect(cb, "MessageFromUser");
    const toA = collect(ca, "MessageFromUser");
    assert.equal((await ca.sendMessageToUser({ type: "text", content: "from a", receiver: ub })).rescode, 0);
    assert.equal((await cb.sendMessageToUser({ type: "text", content: "to a", receiver: ua })).rescode, 0);
    await until(() => toB.length >= 1 && toA.length >= 1, "both messages");
    assert.equal(toB[0].message.content, "from a");
    assert.equal(toA[0].message.content, "to a");
    await a.logout();
    await b.logout();
  } finally {
    if (aRunning) serverA.stop();
    serverB.stop();
  }
});
