// The client's protocol engine against a scripted fake server (no real
// server needed): login, heartbeat answers, streams (holes, fetches, gaps,
// truncated replays), resume, exactly-once re-sends, close codes, timeouts.
import { test } from "node:test";
import assert from "node:assert/strict";
import { Hummer, ConnectionState, ConnectionReason } from "../src/index.js";
import { FakeServer, nextEvent, collect } from "./helpers/fake.js";

const enc = new TextEncoder();

function setup(opts = {}) {
  const server = new FakeServer();
  const hummer = Hummer.createHummer({
    appid: 10000, url: "ws://fake/v1/ws", WebSocket: server.WebSocket,
    reconnectMinDelay: 5, reconnectMaxDelay: 20, ackDelay: 5, ...opts,
  });
  const states = collect(hummer, "ConnectionStateChanged");
  return { server, hummer, states };
}

async function loggedIn(opts, replyValue) {
  const ctx = setup(opts);
  const p = ctx.hummer.login({ uid: "7", token: "", region: "cn" });
  const conn = await ctx.server.nextConn();
  const login = await conn.recv();
  conn.loginReply(login, replyValue);
  const res = await p;
  assert.equal(res.rescode, 0);
  ctx.conn = conn;
  ctx.client = ctx.hummer.createInstance();
  return ctx;
}

function userMessage(seq, text, from = 9n) {
  return { case: "userMessage", value: { fromUid: from, seq: BigInt(seq), timestampMs: 1000n, message: { type: "t", content: enc.encode(text) } } };
}

async function finish(ctx) {
  const p = ctx.hummer.logout();
  if (ctx.hummer._linkLoggedIn) {
    const f = await ctx.conn.recv({ skip: ["ping", "ack", "fetch"] }).catch(() => null);
    if (f && f.body.case === "logout") ctx.conn.reply(f, { case: "ok", value: {} });
  }
  await p;
}

test("login: the frame, the states, the result; ids are strings", async () => {
  const { server, hummer, states } = setup();
  assert.deepEqual(hummer.getConnectionState(), { state: "DISCONNECTED", reason: "INIT" });
  const p = hummer.login({ uid: "18446744073709551615", token: "tok", region: "us" });
  const conn = await server.nextConn();
  assert.deepEqual(conn.ws.protocols, ["hummer.v1.protobuf"]);
  const f = await conn.recv();
  assert.equal(f.body.case, "login");
  assert.notEqual(f.requestId, 0n);
  assert.equal(f.body.value.protocolVersion, 2);
  assert.equal(f.body.value.appid, 10000);
  assert.equal(f.body.value.uid, 18446744073709551615n);
  assert.equal(f.body.value.token, "tok");
  assert.equal(f.body.value.region, 4);
  assert.equal(f.body.value.resume, undefined);
  conn.loginReply(f, { instanceId: 12345678901234567890n, isAnonymous: false });
  const res = await p;
  assert.equal(res.rescode, 0);
  assert.equal(res.instanceId, "12345678901234567890");
  assert.deepEqual(states, [
    { state: "CONNECTING", reason: "LOGIN" },
    { state: "CONNECTED", reason: "LOGIN_SUCCESS" },
  ]);
  await finish({ hummer, conn });
  assert.deepEqual(states.at(-1), { state: "DISCONNECTED", reason: "LOGOUT" });
});

test("a refused login resolves with the server's code and DISCONNECTED/LOGIN_FAILURE", async () => {
  const { server, hummer, states } = setup();
  const p = hummer.login({ uid: "7" });
  const conn = await server.nextConn();
  const f = await conn.recv();
  conn.reply(f, { case: "error", value: { code: 2002, message: "bad token" } });
  const res = await p;
  assert.equal(res.rescode, 2002);
  assert.deepEqual(states.at(-1), { state: "DISCONNECTED", reason: "LOGIN_FAILURE" });
  // Requests afterwards fail locally with 1001.
  assert.equal((await hummer.getInstanceInfo()).rescode, 1001);
});

test("login timeout: DISCONNECTED/LOGIN_TIMEOUT and rescode 1005", async () => {
  const { server, hummer, states } = setup({ loginTimeout: 50 });
  const p = hummer.login({ uid: "7" });
  await (await server.nextConn()).recv();
  const res = await p;
  assert.equal(res.rescode, 1005);
  assert.deepEqual(states.at(-1), { state: "DISCONNECTED", reason: "LOGIN_TIMEOUT" });
});

test("a server Ping is answered with a Pong with the same nonce and request id; a request times out with 1005", async () => {
  const ctx = await loggedIn({ requestTimeout: 60 });
  ctx.conn.send({ requestId: 0n, body: { case: "ping", value: { nonce: 987654321987654321n } } });
  const pong = await ctx.conn.recv({ skip: ["ack"] });
  assert.equal(pong.body.case, "pong");
  assert.equal(pong.body.value.nonce, 987654321987654321n);
  assert.equal(pong.requestId, 0n);
  const res = await ctx.hummer.getInstanceInfo();
  assert.equal(res.rescode, 1005);
  // A late reply to the timed-out request is ignored.
  const req = await ctx.conn.recv();
  ctx.conn.reply(req, { case: "instanceInfo", value: { appid: 1 } });
  await finish(ctx);
});

test("the client pings at the login reply's interval", async () => {
  const ctx = await loggedIn({}, { pingIntervalMs: 100, idleTimeoutMs: 5000 });
  const f = await ctx.conn.recv({ skip: ["ack"], timeoutMs: 1000 });
  assert.equal(f.body.case, "ping");
  assert.equal(f.requestId, 0n);
  await finish(ctx);
});

test("P2P stream: in order delivery, duplicates dropped, a hole fetched, a retention gap reported once, acks", async () => {
  const ctx = await loggedIn({}, { p2pSeq: 0n });
  const got = collect(ctx.client, "MessageFromUser");
  const gaps = collect(ctx.client, "MessageFromUserGap");
  ctx.conn.send({ body: userMessage(1, "one") });
  ctx.conn.send({ body: userMessage(1, "one again") }); // duplicate
  ctx.conn.send({ body: userMessage(5, "five") }); // hole 2..4
  const fetch = await ctx.conn.recv({ skip: ["ping", "ack"] });
  assert.equal(fetch.body.case, "fetch");
  assert.equal(fetch.body.value.channel, undefined);
  assert.equal(fetch.body.value.afterSeq, 1n);
  // The server replays 4 (2 and 3 were evicted), then replies with the gap.
  ctx.conn.send({ body: userMessage(4, "four") });
  ctx.conn.reply(fetch, { case: "fetchReply", value: { throughSeq: 5n, gap: { from: 2n, to: 3n } } });
  ctx.conn.send({ body: userMessage(5, "five dup") });
  ctx.conn.send({ body: userMessage(0, "unreliable") });
  const ack = await ctx.conn.recvWhere((f) => f.body.case === "ack" && f.body.value.p2pSeq === 5n);
  assert.equal(ack.requestId, 0n);
  assert.deepEqual(got.map((m) => m.message.content), ["one", "four", "five", "unreliable"]);
  assert.deepEqual(got.map((m) => m.message.seq), ["1", "4", "5", "0"]);
  assert.equal(got[0].fromUid, "9");
  assert.deepEqual(gaps, [{ from: "2", to: "3" }]);
  await finish(ctx);
});

test("binary content that is not UTF-8 stays bytes; text content is a string plus its bytes", async () => {
  const ctx = await loggedIn({}, {});
  const got = collect(ctx.client, "MessageFromUser");
  ctx.conn.send({ body: { case: "userMessage", value: { fromUid: 9n, seq: 1n, message: { type: "b", content: new Uint8Array([0xff, 0x00, 0xfe]) } } } });
  ctx.conn.send({ body: userMessage(2, "héllo") });
  await nextEvent(ctx.client, "MessageFromUser", 1000, (m) => m.message.seq === "2").catch(() => {});
  assert.ok(got[0].message.content instanceof Uint8Array);
  assert.deepEqual([...got[0].message.content], [0xff, 0, 0xfe]);
  assert.equal(got[1].message.content, "héllo");
  assert.deepEqual(got[1].message.contentBytes, enc.encode("héllo"));
  await finish(ctx);
});

test("LoginReply: an epoch change gap (to 0) is reported as unknown end; a truncated replay is fetched", async () => {
  const ctx = setup();
  const client = ctx.hummer.createInstance();
  const gaps = collect(client, "MessageFromUserGap");
  const p = ctx.hummer.login({ uid: "7" });
  const conn = await ctx.server.nextConn();
  const login = await conn.recv();
  conn.loginReply(login, { p2pSeq: 0n, p2pGap: { from: 6n, to: 0n }, p2pReplayTruncatedAt: 3n });
  conn.send({ body: userMessage(1, "a") });
  conn.send({ body: userMessage(2, "b") });
  assert.equal((await p).rescode, 0);
  const fetch = await conn.recv({ skip: ["ping", "ack"] });
  assert.equal(fetch.body.case, "fetch");
  assert.equal(fetch.body.value.afterSeq, 2n);
  assert.deepEqual(gaps, [{ from: "6", to: null }]);
  ctx.conn = conn;
  await finish(ctx);
});

test("a lost link: RECONNECTING/INTERRUPTED, resume with cursors, the same message id re-sent, unreliable and queries fail 1007", async () => {
  const ctx = await loggedIn({}, { instanceId: 77n, p2pEpoch: 5n, p2pSeq: 3n });
  const { hummer, client, server } = ctx;
  const channel = client.createChannel({ region: "cn", channelId: "lobby" });
  const jp = channel.joinChannel({ extra: { a: "b" } });
  const join = await ctx.conn.recv();
  assert.equal(join.body.case, "join");
  assert.deepEqual(join.body.value.extra, { a: "b" });
  ctx.conn.reply(join, { case: "joinReply", value: { channel: 4, epoch: 99n, seq: 10n } });
  assert.equal((await jp).rescode, 0);
  assert.equal(channel.joined, true);

  const reliable = client.sendMessageToUser({ type: "t", content: "hi", receiver: "9" });
  const unreliable = client.sendMessageToUser({ type: "t", content: "u", receiver: "9", option: { reliable: false } });
  const query = hummer.getInstanceInfo();
  const s1 = await ctx.conn.recv();
  const s2 = await ctx.conn.recv();
  await ctx.conn.recv();
  assert.equal(s1.body.value.unreliable, false);
  assert.equal(s2.body.value.unreliable, true);
  assert.notEqual(s1.body.value.messageId, 0n);
  ctx.conn.drop();
  assert.equal((await unreliable).rescode, 1007);
  assert.equal((await query).rescode, 1007);
  assert.deepEqual(hummer.getConnectionState(), { state: "RECONNECTING", reason: "INTERRUPTED" });

  const conn2 = await server.nextConn();
  const relogin = await conn2.recv();
  assert.equal(relogin.body.case, "login");
  const r = relogin.body.value.resume;
  assert.equal(r.instanceId, 77n);
  assert.equal(r.p2pEpoch, 5n);
  assert.equal(r.p2pSeq, 3n);
  assert.equal(r.channels.length, 1);
  assert.deepEqual({ region: r.channels[0].channel.region, id: r.channels[0].channel.channelId, epoch: r.channels[0].epoch, seq: r.channels[0].seq },
    { region: 1, id: "lobby", epoch: 99n, seq: 10n });
  conn2.loginReply(relogin, {
    instanceId: 77n, resumed: true, p2pEpoch: 5n, p2pSeq: 3n,
    channels: [{ channel: { region: 1, channelId: "lobby" }, state: { channel: 2, epoch: 99n, seq: 10n } }],
  });
  const resent = await conn2.recv();
  assert.equal(resent.body.case, "sendToUser");
  assert.equal(resent.body.value.messageId, s1.body.value.messageId);
  conn2.reply(resent, { case: "sendReply", value: { timestampMs: 5n, deliveredOnline: true, seq: 4n } });
  const res = await reliable;
  assert.equal(res.rescode, 0);
  assert.equal(res.seq, "4");
  assert.equal(hummer._stats.resent, 1);
  // The channel's new number routes pushes after the resume.
  const msgs = collect(channel, "ChannelMessage");
  conn2.send({ body: { case: "channelMessage", value: { channel: 2, fromUid: 9n, seq: 11n, message: { type: "t", content: enc.encode("x") } } } });
  await nextEvent(channel, "ChannelMessage", 1000).catch(() => {});
  assert.equal(msgs.length, 1);
  assert.deepEqual(hummer.getConnectionState(), { state: "CONNECTED", reason: "LOGIN_SUCCESS" });
  ctx.conn = conn2;
  await finish(ctx);
});

test("a re-login that is not resumed: in-flight reliable sends fail 1007, channels are re-joined with rejoin and the cursor", async () => {
  const ctx = await loggedIn({}, { instanceId: 77n });
  const { client, server } = ctx;
  const channel = client.createChannel({ region: "us", channelId: "room" });
  const jp = channel.joinChannel();
  const join = await ctx.conn.recv();
  ctx.conn.reply(join, { case: "joinReply", value: { channel: 1, epoch: 50n, seq: 3n } });
  await jp;
  const offline = nextEvent(channel, "RoomMemberOffline");
  const gaps = collect(channel, "ChannelMessageGap");
  const send = client.sendMessageToUser({ content: "x", receiver: "9" });
  await ctx.conn.recv();
  ctx.conn.drop();
  const conn2 = await server.nextConn();
  const relogin = await conn2.recv();
  conn2.loginReply(relogin, { instanceId: 88n, resumed: false });
  assert.equal((await send).rescode, 1007);
  const rejoin = await conn2.recv();
  assert.equal(rejoin.body.case, "join");
  assert.equal(rejoin.body.value.rejoin, true);
  assert.equal(rejoin.body.value.epoch, 50n);
  assert.equal(rejoin.body.value.resumeSeq, 3n);
  conn2.reply(rejoin, { case: "joinReply", value: { channel: 8, epoch: 51n, seq: 0n, gap: { from: 4n, to: 0n }, memberOffline: true } });
  assert.deepEqual(await offline, { rejoined: true });
  assert.deepEqual(gaps, [{ region: "us", channelId: "room", from: "4", to: null }]);
  ctx.conn = conn2;
  await finish(ctx);
});

test("Close{100}: DISCONNECTED/REMOTE_LOGIN and no reconnect; Close{1005}: reconnect", async () => {
  const ctx = await loggedIn();
  ctx.conn.send({ body: { case: "close", value: { code: 1005, reason: "idle" } } });
  await nextEvent(ctx.hummer, "ConnectionStateChanged", 1000, (s) => s.state === "RECONNECTING");
  const conn2 = await ctx.server.nextConn();
  const relogin = await conn2.recv();
  assert.ok(relogin.body.value.resume);
  conn2.loginReply(relogin, { resumed: true });
  await nextEvent(ctx.hummer, "ConnectionStateChanged", 1000, (s) => s.state === "CONNECTED");
  conn2.send({ body: { case: "close", value: { code: 100, reason: "kicked" } } });
  const st = await nextEvent(ctx.hummer, "ConnectionStateChanged", 1000);
  assert.deepEqual(st, { state: ConnectionState.DISCONNECTED, reason: ConnectionReason.REMOTE_LOGIN });
  assert.equal(ctx.server.conns.length, 2);
  assert.equal((await ctx.hummer.getInstanceInfo()).rescode, 1001);
});

test("Close{4100..4199} (the backend's kick): DISCONNECTED/KICKED and no reconnect; Close{4200} reconnects", async () => {
  const ctx = await loggedIn();
  ctx.conn.send({ body: { case: "close", value: { code: 4200, reason: "not a kick" } } });
  await nextEvent(ctx.hummer, "ConnectionStateChanged", 1000, (s) => s.state === "RECONNECTING");
  const conn2 = await ctx.server.nextConn();
  const relogin = await conn2.recv();
  conn2.loginReply(relogin, { resumed: true });
  await nextEvent(ctx.hummer, "ConnectionStateChanged", 1000, (s) => s.state === "CONNECTED");
  conn2.send({ body: { case: "close", value: { code: 4142, reason: "spam" } } });
  const st = await nextEvent(ctx.hummer, "ConnectionStateChanged", 1000);
  assert.deepEqual(st, { state: ConnectionState.DISCONNECTED, reason: ConnectionReason.KICKED });
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(ctx.server.conns.length, 2, "no reconnect");
});

test("an expired token on re-login: TokenExpired, then refreshToken logs in again with the new token", async () => {
  const ctx = await loggedIn();
  const expired = nextEvent(ctx.hummer, "TokenExpired");
  ctx.conn.drop();
  const conn2 = await ctx.server.nextConn();
  const l2 = await conn2.recv();
  conn2.reply(l2, { case: "error", value: { code: 2003, message: "expired" } });
  await expired;
  assert.equal(ctx.hummer.getConnectionState().state, "RECONNECTING");
  assert.equal((await ctx.hummer.refreshToken({ token: "fresh" })).rescode, 0);
  const conn3 = await ctx.server.nextConn();
  const l3 = await conn3.recv();
  assert.equal(l3.body.value.token, "fresh");
  conn3.loginReply(l3, { resumed: true });
  await nextEvent(ctx.hummer, "ConnectionStateChanged", 1000, (s) => s.state === "CONNECTED");
  ctx.conn = conn3;
  await finish(ctx);
});

test("malformed input from the server (a text message, a request body) drops the link and reconnects", async () => {
  const ctx = await loggedIn();
  ctx.conn.sendRaw("text");
  const conn2 = await ctx.server.nextConn();
  const l2 = await conn2.recv();
  conn2.loginReply(l2, { resumed: true });
  await nextEvent(ctx.hummer, "ConnectionStateChanged", 1000, (s) => s.state === "CONNECTED");
  conn2.send({ requestId: 3n, body: { case: "login", value: {} } });
  const conn3 = await ctx.server.nextConn();
  const l3 = await conn3.recv();
  assert.equal(l3.body.case, "login");
  assert.ok(ctx.conn.closedByClient && conn2.closedByClient);
  conn3.loginReply(l3, { resumed: true });
  await nextEvent(ctx.hummer, "ConnectionStateChanged", 1000, (s) => s.state === "CONNECTED");
  ctx.conn = conn3;
  await finish(ctx);
});

test("local argument checks: message size 2007, bad uid 2001, too many channel ids 5109, bad keys 2001", async () => {
  const ctx = await loggedIn();
  const big = "x".repeat(32769);
  assert.equal((await ctx.client.sendMessageToUser({ type: "", content: big, receiver: "9" })).rescode, 2007);
  assert.equal((await ctx.client.sendMessageToUser({ content: "x", receiver: "07x" })).rescode, 2001);
  const ch = ctx.client.createChannel({ region: "cn", channelId: "c" });
  assert.equal((await ch.getChannelUserCount({ channelIds: Array.from({ length: 33 }, (_, i) => `c${i}`) })).rescode, 5109);
  assert.equal((await ch.setLocalUserAttributes({ attributes: { "bad key": "v" } })).rescode, 2001);
  assert.equal(ctx.conn.inbox.filter((f) => f.body.case !== "ping" && f.body.case !== "ack").length, 0);
  await finish(ctx);
});

test("a leave while the channel's replay is being fetched waits for the fetch's reply", async () => {
  const ctx = await loggedIn();
  const ch = ctx.client.createChannel({ region: "cn", channelId: "f" });
  const jp = ch.joinChannel();
  const join = await ctx.conn.recv();
  ctx.conn.reply(join, { case: "joinReply", value: { channel: 3, epoch: 9n, seq: 0n, replayTruncatedAt: 1n } });
  await jp;
  const fetch = await ctx.conn.recv();
  assert.equal(fetch.body.case, "fetch");
  assert.equal(fetch.body.value.channel.channelId, "f");
  assert.equal(fetch.body.value.afterSeq, 0n);
  const got = collect(ch, "ChannelMessage");
  const lp = ch.leaveChannel();
  // Nothing is sent until the fetch completes.
  await new Promise((r) => setImmediate(r));
  assert.equal(ctx.conn.inbox.filter((f) => f.body.case === "leave").length, 0);
  ctx.conn.send({ body: { case: "channelMessage", value: { channel: 3, fromUid: 2n, seq: 1n, message: { type: "t", content: enc.encode("r") } } } });
  ctx.conn.reply(fetch, { case: "fetchReply", value: { throughSeq: 1n } });
  const leave = await ctx.conn.recv();
  assert.equal(leave.body.case, "leave");
  ctx.conn.reply(leave, { case: "ok", value: {} });
  assert.equal((await lp).rescode, 0);
  assert.equal(got.length, 1);
  assert.equal(ch.joined, false);
  await finish(ctx);
});

test("the default url in a browser follows location (ws: for http:, wss: for https:)", () => {
  const saved = Object.getOwnPropertyDescriptor(globalThis, "location");
  try {
    Object.defineProperty(globalThis, "location", { value: { protocol: "https:", host: "example.test:8443" }, configurable: true });
    assert.equal(Hummer.createHummer({ appid: 1 }).url, "wss://example.test:8443/v1/ws");
    Object.defineProperty(globalThis, "location", { value: { protocol: "http:", host: "h:1" }, configurable: true });
    assert.equal(Hummer.createHummer({ appid: 1 }).url, "ws://h:1/v1/ws");
  } finally {
    if (saved) Object.defineProperty(globalThis, "location", saved);
    else delete globalThis.location;
  }
  assert.equal(Hummer.createHummer({ appid: 1 }).url, undefined);
});

test("reconnect backoff grows exponentially with jitter while the server refuses connections", async () => {
  const ctx = await loggedIn({ reconnectMinDelay: 20, reconnectMaxDelay: 160 });
  ctx.server.refuse = true;
  const times = [];
  const orig = ctx.server.WebSocket;
  let n = 0;
  const done = new Promise((resolve) => {
    ctx.hummer._WebSocket = class extends orig {
      constructor(url, p) {
        super(url, p);
        times.push(Date.now());
        if (++n === 6) resolve();
      }
    };
  });
  const t0 = Date.now();
  ctx.conn.drop();
  await done;
  const delays = times.map((t, i) => t - (i === 0 ? t0 : times[i - 1]));
  // base 20, 40, 80, 160, 160, 160 with jitter between half and all of it.
  const bases = [20, 40, 80, 160, 160, 160];
  delays.forEach((d, i) => {
    assert.ok(d >= bases[i] / 2 - 5, `delay ${i} = ${d} >= ${bases[i] / 2}`);
    assert.ok(d <= bases[i] + 60, `delay ${i} = ${d} <= ${bases[i]}`);
  });
  ctx.server.refuse = false;
  ctx.hummer._WebSocket = orig;
  const conn2 = await ctx.server.nextConn(3000);
  const l = await conn2.recv();
  conn2.loginReply(l, { resumed: true });
  await nextEvent(ctx.hummer, "ConnectionStateChanged", 1000, (s) => s.state === "CONNECTED");
  ctx.conn = conn2;
  await finish(ctx);
});

test("a join or a leave in flight when the link is lost fails 1007 and its channel is not listed in the resume", async () => {
  const ctx = await loggedIn({}, { instanceId: 77n, p2pEpoch: 5n });
  const { client, server } = ctx;
  const leaving = client.createChannel({ region: "cn", channelId: "leaving" });
  const jp = leaving.joinChannel();
  const join = await ctx.conn.recv();
  ctx.conn.reply(join, { case: "joinReply", value: { channel: 1, epoch: 9n, seq: 2n } });
  await jp;
  const kept = client.createChannel({ region: "cn", channelId: "kept" });
  const kp = kept.joinChannel();
  const join2 = await ctx.conn.recv();
  ctx.conn.reply(join2, { case: "joinReply", value: { channel: 2, epoch: 8n, seq: 1n } });
  await kp;
  const joining = client.createChannel({ region: "cn", channelId: "joining" });
  const lp = leaving.leaveChannel();
  const jp2 = joining.joinChannel();
  const sent = [(await ctx.conn.recv()).body.case, (await ctx.conn.recv()).body.case];
  assert.deepEqual(sent.sort(), ["join", "leave"]);
  ctx.conn.drop();
  assert.equal((await lp).rescode, 1007);
  assert.equal((await jp2).rescode, 1007);
  assert.equal(leaving.joined, false, "a lost leave's channel is out");
  assert.equal(joining.joined, false, "a lost join is no membership");
  const conn2 = await server.nextConn();
  const relogin = await conn2.recv();
  const listed = relogin.body.value.resume.channels.map((c) => c.channel.channelId);
  assert.deepEqual(listed, ["kept"]);
  conn2.loginReply(relogin, {
    instanceId: 77n, resumed: true, p2pEpoch: 5n,
    channels: [{ channel: { region: 1, channelId: "kept" }, state: { channel: 3, epoch: 8n, seq: 1n } }],
  });
  ctx.conn = conn2;
  await finish(ctx);
});

test("a list of URLs: a refused one is skipped at once, a lost link moves to the next, a whole round refused backs off", async () => {
  assert.throws(() => Hummer.createHummer({ appid: 1, url: [] }), TypeError);
  const [a, b, c] = ["ws://a/v1/ws", "ws://b/v1/ws", "ws://c/v1/ws"];
  assert.equal(Hummer.createHummer({ appid: 1, url: a }).urls.length, 1);
  const ctx = setup({ url: [a, b, c], reconnectMinDelay: 40, reconnectMaxDelay: 40 });
  const { server, hummer } = ctx;
  assert.deepEqual(hummer.urls, [a, b, c]);
  const dialed = []; // [url, reconnect timers fired so far]
  let onDial = () => {};
  const orig = server.WebSocket;
  hummer._WebSocket = class extends orig {
    constructor(url, p) {
      super(url, p); // refused or not on the next tick
      dialed.push([url, hummer._stats.reconnects]);
      onDial();
    }
  };
  // The first login: a is refused, b (dialed at once, no backoff) answers.
  server.refuseUrls.add(a);
  const p = hummer.login({ uid: "7", token: "", region: "cn" });
  const conn = await server.nextConn();
  assert.equal(conn.ws.url, b);
  conn.loginReply(await conn.recv(), { instanceId: 77n });
  assert.equal((await p).rescode, 0);
  assert.equal(hummer.url, b);
  assert.equal(hummer._stats.reconnects, 0);
  // b's link is lost: the reconnect goes to c, with the resume.
  conn.drop();
  const conn2 = await server.nextConn();
  assert.equal(conn2.ws.url, c);
  const relogin = await conn2.recv();
  assert.equal(relogin.body.value.resume.instanceId, 77n);
  conn2.loginReply(relogin, { instanceId: 78n, resumed: false });
  await nextEvent(hummer, "ConnectionStateChanged", 1000, (s) => s.state === "CONNECTED");
  assert.equal(hummer.url, c);
  // Every URL refused: each round tries them all at once, from a (after c),
  // then backs off (one reconnect timer per round) and starts again from a.
  for (const u of [a, b, c]) server.refuseUrls.add(u);
  dialed.length = 0;
  const r = hummer._stats.reconnects;
  // The third round's first dial is let through.
  onDial = () => {
    if (dialed.length === 7) server.refuseUrls.clear();
  };
  conn2.drop();
  const conn3 = await server.nextConn(3000);
  assert.deepEqual(dialed, [[a, r + 1], [b, r + 1], [c, r + 1], [a, r + 2], [b, r + 2], [c, r + 2], [a, r + 3]],
    "each round dials every URL at once; one backoff timer per round, not per URL");
  assert.equal(conn3.ws.url, a);
  conn3.loginReply(await conn3.recv(), { instanceId: 78n, resumed: true });
  await nextEvent(hummer, "ConnectionStateChanged", 1000, (s) => s.state === "CONNECTED");
  assert.equal(hummer.url, a);
  ctx.conn = conn3;
  await finish(ctx);
});
