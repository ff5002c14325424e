// The Hummer Channel demo page: log in, join a channel, chat, see who is
// there, their status attribute and whether they are online.
//
// No framework: the page's state is the few variables below and the DOM is
// built with createElement. The client is the ES module ./hummer.js (served
// by hummer-server next to this file); it is imported when the user logs in,
// so the page still renders (and says why) when the bundle is missing.
//
// `?ws=ws://host:port/v1/ws` in the page's address overrides the WebSocket
// URL (the default is this page's own host, /v1/ws).

const $ = (sel) => document.querySelector(sel);

/** The WebSocket URL of the server that served this page (or ?ws=). */
export function defaultWsUrl() {
  const override = new URLSearchParams(location.search).get('ws');
  if (override) return override;
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${scheme}//${location.host}/v1/ws`;
}

let modulePromise = null;
/** The `Hummer` namespace of ./hummer.js, imported once. */
async function loadHummer() {
  modulePromise ??= import('./hummer.js');
  try {
    return hummerOf(await modulePromise);
  } catch (e) {
    modulePromise = null;
    throw new Error(`could not load the client ./hummer.js: ${e.message ?? e}`);
  }
}

function hummerOf(mod) {
  const H = mod?.Hummer ?? mod?.default ?? mod;
  if (typeof H?.createHummer !== 'function') {
    throw new Error('./hummer.js does not export Hummer.createHummer');
  }
  return H;
}

// ---------------------------------------------------------------------------
// Small helpers shared by the page and the seed sample

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Message content as bytes (the protocol's content is opaque bytes). */
function encodeText(text) {
  return encoder.encode(text);
}

/** Message content as text, whatever form the client hands it in. */
function decodeContent(content) {
  if (content == null) return '';
  if (typeof content === 'string') return content;
  if (content instanceof Uint8Array) return decoder.decode(content);
  if (content instanceof ArrayBuffer) return decoder.decode(new Uint8Array(content));
  if (Array.isArray(content)) return decoder.decode(Uint8Array.from(content));
  return String(content);
}

/** JSON for logs: bytes as text, bigints as decimal strings. */
function show(value) {
  return JSON.stringify(value, (_k, v) => {
    if (typeof v === 'bigint') return v.toString();
    if (v instanceof Uint8Array) return decodeContent(v);
    if (v instanceof Map) return Object.fromEntries(v);
    return v;
  });
}

/** The uids of a join/leave notice (`{uids}`, or a lone `{uid}`). */
function uidsOf(data) {
  const list = data?.uids ?? data?.users ?? (data?.uid != null ? [data.uid] : []);
  return Array.from(list, String);
}

/** uid -> online, from a queryUsersOnlineStatus result (a map, or a list of online uids). */
function onlineMapOf(res, asked) {
  for (const key of ['onlineStatus', 'userOnlineStatus', 'usersOnlineStatus', 'status', 'results']) {
    const v = res?.[key];
    if (v == null || typeof v !== 'object') continue;
    if (v instanceof Map) return new Map([...v].map(([k, b]) => [String(k), Boolean(b)]));
    if (Array.isArray(v)) {
      const on = new Set(v.map(String));
      return new Map(asked.map((u) => [u, on.has(u)]));
    }
    return new Map(Object.entries(v).map(([k, b]) => [String(k), Boolean(b)]));
  }
  if (Array.isArray(res?.onlineUids)) {
    const on = new Set(res.onlineUids.map(String));
    return new Map(asked.map((u) => [u, on.has(u)]));
  }
  return new Map();
}

/** The count of `channelId` in a getChannelUserCount result. */
function countOf(res, channelId) {
  for (const key of ['userCount', 'userCounts', 'counts', 'channelUserCount', 'count']) {
    const v = res?.[key];
    if (v instanceof Map) return Number(v.get(channelId));
    if (v && typeof v === 'object' && channelId in v) return Number(v[channelId]);
    if (typeof v === 'number' || typeof v === 'bigint') return Number(v);
  }
  return NaN;
}

function compareUids(a, b) {
  try {
    const x = BigInt(a);
    const y = BigInt(b);
    return x < y ? -1 : x > y ? 1 : 0;
  } catch {
    return a < b ? -1 : a > b ? 1 : 0;
  }
}

function timeOf(ts) {
  const n = Number(ts);
  return new Date(Number.isFinite(n) && n > 0 ? n : Date.now());
}

// ---------------------------------------------------------------------------
// Page state

const STATUS_KEY = 'status';
const ONLINE_REFRESH_MS = 5000;
/** RESOURCE_NOT_FOUND: getUserAttributes of a uid no longer in the channel. */
const NOT_IN_CHANNEL = 2004;

let hummer = null; // the Hummer instance of the current login
let client = null; // hummer.createInstance() of the current login
let channel = null; // the joined channel
let myUid = null;
let myChannelId = null;
let generation = 0; // bumped on every login/logout; stale callbacks check it
let onlineTimer = null;
/** uid -> {status: string|null, online: boolean|null, attrEpoch: number} */
const members = new Map();

// ---------------------------------------------------------------------------
// Rendering

function showError(text) {
  // Also in the console, with the time, to tell when it happened.
  console.warn(`${new Date().toISOString()} error shown: ${text}`);
  const p = document.createElement('p');
  p.dataset.testid = 'error';
  p.textContent = text;
  $('#errors').append(p);
}

function clearErrors() {
  $('#errors').replaceChildren();
}

/** Awaits a client call; shows an error (and returns it) unless rescode is 0. */
async function call(what, promiseOrFn, { expected = [] } = {}) {
  let res;
  try {
    res = await (typeof promiseOrFn === 'function' ? promiseOrFn() : promiseOrFn);
  } catch (e) {
    res = { rescode: e?.rescode ?? -1, msg: e?.msg ?? e?.message ?? String(e) };
  }
  if (res == null || typeof res !== 'object') res = { rescode: 0, msg: '', value: res };
  const text = `${what} failed: rescode ${res.rescode}${res.msg ? ` (${res.msg})` : ''}`;
  if (expected.includes(res.rescode)) console.info(`${new Date().toISOString()} ${text}`);
  else if (res.rescode !== 0) showError(text);
  return res;
}

function setConnState(state, reason) {
  const badge = $('#conn-state');
  badge.textContent = state;
  badge.dataset.state = state;
  $('#conn-reason').textContent = reason ?? '';
}

function addMessage({ from, text, ts, direct = false }) {
  const li = document.createElement('li');
  li.dataset.testid = 'message';
  li.dataset.from = from;
  if (from === myUid) li.classList.add('mine');
  const who = document.createElement('span');
  who.className = 'from';
  who.dataset.testid = 'message-from';
  who.textContent = direct ? `${from} (direct)` : from;
  const when = timeOf(ts);
  const time = document.createElement('time');
  time.dateTime = when.toISOString();
  time.textContent = when.toLocaleTimeString();
  const body = document.createElement('span');
  body.className = 'text';
  body.dataset.testid = 'message-text';
  body.textContent = text;
  li.append(who, time, body);
  appendToLog(li);
}

function addNotice(text) {
  const li = document.createElement('li');
  li.className = 'notice';
  li.dataset.testid = 'notice';
  li.textContent = text;
  appendToLog(li);
}

function appendToLog(li) {
  const list = $('#messages');
  const atBottom = list.scrollTop + list.clientHeight >= list.scrollHeight - 4;
  list.append(li);
  if (atBottom) list.scrollTop = list.scrollHeight;
}

function renderMembers() {
  const items = [...members.keys()].sort(compareUids).map((uid) => {
    const m = members.get(uid);
    const li = document.createElement('li');
    li.dataset.testid = 'member';
    li.dataset.uid = uid;
    li.dataset.online = m.online == null ? 'unknown' : String(m.online);
    li.dataset.status = m.status ?? '';
    const dot = document.createElement('span');
    dot.className = 'dot';
    dot.setAttribute('aria-hidden', 'true');
    dot.title = m.online == null ? 'online: unknown' : m.online ? 'online' : 'offline';
    const name = document.createElement('span');
    name.className = 'uid';
    name.textContent = uid === myUid ? `${uid} (you)` : uid;
    const online = document.createElement('span');
    online.className = 'visually-hidden';
    online.dataset.testid = 'member-online';
    online.textContent = m.online == null ? 'online: unknown' : m.online ? 'online' : 'offline';
    const status = document.createElement('span');
    status.className = 'status';
    status.dataset.testid = 'member-status';
    status.textContent = m.status ?? '—';
    li.append(dot, name, online, status);
    return li;
  });
  $('#member-list').replaceChildren(...items);
}

function setMemberCount(n) {
  if (Number.isFinite(n)) $('#member-count').textContent = String(n);
}

function showRoom(on) {
  $('#login-section').hidden = on;
  $('#room').hidden = !on;
  $('#logout-btn').hidden = !on;
  const me = $('#me');
  me.hidden = !on;
  me.textContent = on ? `Logged in as ${myUid} in ${myChannelId}` : '';
  $('#room-name').textContent = on ? myChannelId : '';
}

// ---------------------------------------------------------------------------
// Members: list, attributes, online state

function ensureMember(uid) {
  let m = members.get(uid);
  if (!m) {
    m = { status: null, online: null, attrEpoch: 0 };
    members.set(uid, m);
  }
  return m;
}

/** A member's attributes, unless a notice about them came in meanwhile. */
async function fetchAttributes(uid) {
  const gen = generation;
  const m = ensureMember(uid);
  const epoch = m.attrEpoch;
  // 2004: the member left between the list (or its join notice) and this
  // call; its leave notice is on the way.
  const res = await call(`getUserAttributes(${uid})`, () => channel.getUserAttributes({ uid }), {
    expected: [NOT_IN_CHANNEL],
  });
  if (gen !== generation || res.rescode !== 0) return;
  const cur = members.get(uid);
  if (!cur || cur.attrEpoch !== epoch) return; // a notice is newer than this reply
  cur.status = attrsOf(res)?.[STATUS_KEY] ?? null;
  renderMembers();
}

function attrsOf(x) {
  const a = x?.attributes;
  return a instanceof Map ? Object.fromEntries(a) : a;
}

async function refreshMemberList() {
  const gen = generation;
  const res = await call('getChannelUserList', () => channel.getChannelUserList());
  if (gen !== generation || res.rescode !== 0) return;
  const uids = uidsOf(res);
  const listed = new Set(uids);
  for (const uid of [...members.keys()]) if (!listed.has(uid) && uid !== myUid) members.delete(uid);
  for (const uid of uids) ensureMember(uid);
  renderMembers();
  await Promise.all(uids.map(fetchAttributes));
}

async function refreshOnline() {
  const gen = generation;
  const uids = [...members.keys()].slice(0, 256);
  if (!client || uids.length === 0) return;
  const res = await call('queryUsersOnlineStatus', () => client.queryUsersOnlineStatus({ uids }));
  if (gen !== generation || res.rescode !== 0) return;
  const map = onlineMapOf(res, uids);
  for (const [uid, on] of map) {
    const m = members.get(uid);
    if (m) m.online = on;
  }
  renderMembers();
}

async function refreshCount() {
  const gen = generation;
  if (typeof channel.getChannelUserCount !== 'function') return;
  const res = await call('getChannelUserCount', () =>
    channel.getChannelUserCount({ channelIds: [myChannelId] }),
  );
  if (gen !== generation || res.rescode !== 0) return;
  setMemberCount(countOf(res, myChannelId));
}

function applyAttributeNotice(kind, data) {
  const uid = String(data?.uid ?? data?.fromUid ?? '');
  if (!uid || !members.has(uid)) return;
  const m = members.get(uid);
  m.attrEpoch += 1;
  const attrs = attrsOf(data) ?? {};
  if (kind === 'Set') {
    m.status = attrs[STATUS_KEY] ?? null;
  } else if (kind === 'AddOrUpdate') {
    if (STATUS_KEY in attrs) m.status = attrs[STATUS_KEY];
  } else if (kind === 'Delete') {
    const keys = Array.isArray(attrs) ? attrs : Object.keys(attrs);
    const keyList = Array.isArray(data?.keys) ? data.keys : keys;
    if (keyList.includes(STATUS_KEY)) m.status = null;
  } else if (kind === 'Clear') {
    m.status = null;
  }
  renderMembers();
}

async function setMyStatus(status) {
  const res = await call('addOrUpdateLocalUserAttributes', () =>
    channel.addOrUpdateLocalUserAttributes({
      attributes: { [STATUS_KEY]: status },
      options: { enableNotification: true },
    }),
  );
  if (res.rescode === 0 && members.has(myUid)) {
    const m = members.get(myUid);
    m.attrEpoch += 1;
    m.status = status;
    renderMembers();
  }
}

// ---------------------------------------------------------------------------
// Login, join, logout

async function login(event) {
  event.preventDefault();
  clearErrors();
  const form = $('#login-form');
  if (!form.reportValidity()) return;
  const uid = $('#uid').value.trim();
  const token = $('#token').value.trim();
  const appid = Number($('#appid').value.trim());
  const channelId = $('#channel-id').value.trim();
  const region = $('#region').value;
  const button = $('#login-btn');
  button.disabled = true;
  try {
    let Hummer;
    try {
      Hummer = await loadHummer();
    } catch (e) {
      showError(e.message);
      return;
    }
    const gen = ++generation;
    const h = Hummer.createHummer({ appid, url: defaultWsUrl() });
    let previous = null;
    h.on('ConnectionStateChanged', ({ state, reason }) => {
      if (gen !== generation) return;
      setConnState(state, reason);
      // Back after a lost link: presence may have changed meanwhile.
      if (previous === 'RECONNECTING' && state === 'CONNECTED' && channel) {
        refreshMemberList().then(refreshOnline);
        refreshCount();
      }
      previous = state;
    });
    hummer = h;
    myUid = uid;
    myChannelId = channelId;

    const res = await call('login', () => h.login(token ? { uid, token, region } : { uid, region }));
    if (gen !== generation) return;
    if (res.rescode !== 0) {
      hummer = null;
      return;
    }

    const c = h.createInstance();
    client = c;
    c.on('MessageFromUser', (data) => {
      if (gen !== generation) return;
      addMessage({
        from: String(data?.fromUid ?? data?.from ?? '?'),
        text: decodeContent((data?.message ?? data)?.content),
        ts: data?.timestamp ?? data?.message?.timestamp,
        direct: true,
      });
    });

    const ch = c.createChannel({ region, channelId });
    wireChannel(ch, gen);
    channel = ch;
    const joined = await call('joinChannel', () => ch.joinChannel());
    if (gen !== generation) return;
    if (joined.rescode !== 0) {
      await call('logout', () => h.logout());
      hummer = null;
      client = null;
      channel = null;
      return;
    }

    members.clear();
    ensureMember(uid);
    $('#messages').replaceChildren();
    showRoom(true);
    renderMembers();
    addNotice(`You joined ${channelId}`);
    await setMyStatus($('#my-status').value);
    await Promise.all([refreshMemberList(), refreshCount()]);
    await refreshOnline();
    clearInterval(onlineTimer);
    onlineTimer = setInterval(() => {
      if (gen === generation) refreshOnline();
    }, ONLINE_REFRESH_MS);
    $('#message-input').focus();
  } finally {
    button.disabled = false;
  }
}

function wireChannel(ch, gen) {
  const live = (fn) => (data) => {
    if (gen === generation) fn(data);
  };
  ch.on('ChannelMessage', live((data) => {
    const message = data?.message ?? data;
    addMessage({
      from: String(data?.fromUid ?? data?.from ?? message?.fromUid ?? '?'),
      text: decodeContent(message?.content),
      ts: data?.timestamp ?? data?.timestampMs ?? message?.timestamp,
    });
  }));
  ch.on('NotifyJoinChannel', live((data) => {
    const uids = uidsOf(data).filter((u) => u !== myUid || !members.has(u));
    for (const uid of uids) {
      ensureMember(uid);
      if (uid !== myUid) addNotice(`${uid} joined`);
    }
    renderMembers();
    uids.forEach(fetchAttributes);
    refreshOnline();
  }));
  ch.on('NotifyLeaveChannel', live((data) => {
    for (const uid of uidsOf(data)) {
      if (members.delete(uid)) addNotice(`${uid} left`);
    }
    renderMembers();
    refreshOnline();
  }));
  ch.on('NotifyUserCountChange', live((data) => setMemberCount(Number(data?.count ?? data))));
  ch.on('NotifyUserAttributesSet', live((d) => applyAttributeNotice('Set', d)));
  ch.on('NotifyUserAttributesAddOrUpdate', live((d) => applyAttributeNotice('AddOrUpdate', d)));
  ch.on('NotifyUserAttributesDelete', live((d) => applyAttributeNotice('Delete', d)));
  ch.on('NotifyUserAttributesClear', live((d) => applyAttributeNotice('Clear', d)));
  // The link stayed down past the server's grace: this instance was dropped
  // from the channel. The client re-joins by itself (rejoined: true); when it
  // could not, the page tries once.
  ch.on('RoomMemberOffline', live(async (data) => {
    addNotice('The server dropped this instance from the channel after a lost link; joining again');
    const res = data?.rejoined ? { rescode: 0 } : await call('joinChannel', () => ch.joinChannel());
    if (res.rescode === 0 && gen === generation) {
      await setMyStatus($('#my-status').value);
      await refreshMemberList();
      await refreshOnline();
    }
  }));
}

async function logout() {
  const h = hummer;
  generation += 1;
  clearInterval(onlineTimer);
  onlineTimer = null;
  hummer = null;
  client = null;
  channel = null;
  members.clear();
  renderMembers();
  setMemberCount(0);
  showRoom(false);
  if (h) {
    const res = await call('logout', () => h.logout());
    if (res.rescode === 0) setConnState('DISCONNECTED', 'LOGOUT');
  }
}

async function sendMessage(event) {
  event.preventDefault();
  const input = $('#message-input');
  const text = input.value.trim();
  if (!text || !channel) return;
  const res = await call('sendMessageToChannel', () =>
    channel.sendMessageToChannel({ type: 'text', content: encodeText(text), appExtras: {} }),
  );
  // The server echoes a broadcast to its sender: the message shows up through
  // ChannelMessage, like everyone else's.
  if (res.rescode === 0) input.value = '';
}

// ---------------------------------------------------------------------------
// Seed sample: the access flow of the original Hummer document (seeds/000),
// step by step, nearly verbatim. Two changes of order, both needed to make the
// flow observable: the MessageFromUser handler is registered before the P2P
// send (else the message to oneself is missed), and refreshToken and
// getInstanceInfo come before logout (after it they are refused, 1009).
// refreshToken needs a token: without one (appid mode) that step is skipped.

/**
 * Runs the seed's flow with its own login (a second instance) and logs each
 * step into `log(line)`; resolves to {ok, steps, failed}.
 * @param {object} hummerModule the ./hummer.js module (or its Hummer namespace)
 * @param {{appid?:number, uid?:string, token?:string, region?:string, url?:string, log?:(line:string)=>void}} [opts]
 */
export async function runSeedSample(hummerModule, opts = {}) {
  const Hummer = hummerOf(hummerModule);
  const appid = opts.appid ?? 10000;
  const uid = String(opts.uid ?? '1999');
  const token = opts.token || undefined;
  const region = opts.region ?? 'cn';
  const url = opts.url ?? defaultWsUrl();
  const log = opts.log ?? ((line) => console.log(line));
  const channelId = `seed-${uid}-${Math.random().toString(36).slice(2, 8)}`;
  const channelIds = [channelId];
  const uids = [uid];
  let steps = 0;
  let failed = 0;

  /** One remote step: passes when rescode is 0 and `check` (if any) holds. */
  async function step(name, fn, check) {
    steps += 1;
    let res;
    try {
      res = await fn();
    } catch (e) {
      res = { rescode: e?.rescode ?? -1, msg: e?.message ?? String(e) };
    }
    let problem = res?.rescode === 0 ? null : `rescode ${res?.rescode}`;
    if (!problem && check) {
      const why = check(res);
      if (why) problem = why;
    }
    if (problem) failed += 1;
    log(`${problem ? 'FAIL' : 'ok  '} ${name}: rescode ${res?.rescode}${problem && res?.rescode === 0 ? ` (${problem})` : ''} ${show(res)}`);
    return res;
  }
  /** One local step (nothing on the wire). */
  function local(name, fn) {
    steps += 1;
    try {
      const v = fn();
      log(`ok   ${name}: local`);
      return v;
    } catch (e) {
      failed += 1;
      log(`FAIL ${name}: ${e?.message ?? e}`);
      return undefined;
    }
  }
  /** Waits (bounded) for an event the flow caused; a step of its own. */
  async function arrival(name, promise, ms = 5000) {
    steps += 1;
    let timer;
    const timeout = new Promise((resolve) => {
      timer = setTimeout(() => resolve(null), ms);
    });
    const data = await Promise.race([promise, timeout]);
    clearTimeout(timer);
    if (data == null) {
      failed += 1;
      log(`FAIL ${name}: nothing within ${ms} ms`);
    } else {
      log(`ok   ${name}: received ${show(data)}`);
    }
  }
  const waiter = () => {
    let resolve;
    const promise = new Promise((r) => {
      resolve = r;
    });
    return { promise, resolve };
  };

  log(`seed sample: appid ${appid}, uid ${uid}, channel ${channelId}, ${url}`);

  // 1 Hummer初始化 (initialise)
  const hummer = local('createHummer', () => Hummer.createHummer({ appid, url }));
  if (!hummer) return { ok: false, steps, failed };
  hummer.on('ConnectionStateChanged', (data) => log(`     event ConnectionStateChanged ${show(data)}`));

  // 2 Hummer登录初始化 (login)
  const login = await step('login', () => hummer.login(token ? { uid, token, region } : { uid, region }));
  if (login.rescode !== 0) return { ok: false, steps, failed };

  // 3 设置用户归属地 (set the user's region)
  await step('setUserRegion', () => hummer.setUserRegion({ region }));

  // 4 ChannelService初始化 (the messaging facade)
  const client = local('createInstance', () => hummer.createInstance());

  // 5.2 接收对端消息 (receive P2P messages; registered before 5.1, see above)
  const p2p = waiter();
  client.on('MessageFromUser', (data) => {
    log(`     event MessageFromUser ${show(data)}`);
    p2p.resolve(data);
  });

  // 5.1 发送P2P的消息 (send a P2P message; here to oneself)
  await step('sendMessageToUser', () =>
    client.sendMessageToUser({
      type: 'text',
      content: encodeText('hello from the seed sample'),
      receiver: uid,
      appExtras: { from: 'seed' },
      option: { reliable: true },
    }),
  );
  await arrival('MessageFromUser', p2p.promise);

  // 5.3 批量查询用户在线 (who of these is online)
  await step('queryUsersOnlineStatus', () => client.queryUsersOnlineStatus({ uids: uids }), (res) =>
    onlineMapOf(res, uids).get(uid) === true ? null : `${uid} not reported online`,
  );

  // 6.1 先要创建一个频道实例 (a channel handle)
  const channel = local('createChannel', () => client.createChannel({ region, channelId }));

  // 6.10 - 6.15 the channel's events (registered before joining)
  const echo = waiter();
  channel.on('ChannelMessage', (data) => {
    log(`     event ChannelMessage ${show(data)}`);
    echo.resolve(data);
  });
  channel.on('NotifyJoinChannel', (data) => log(`     event NotifyJoinChannel ${show(data)}`));
  channel.on('NotifyLeaveChannel', (data) => log(`     event NotifyLeaveChannel ${show(data)}`));
  const attrSet = waiter();
  channel.on('NotifyUserAttributesSet', (data) => {
    log(`     event NotifyUserAttributesSet ${show(data)}`);
    attrSet.resolve(data);
  });
  const attrDelete = waiter();
  channel.on('NotifyUserAttributesDelete', (data) => {
    log(`     event NotifyUserAttributesDelete ${show(data)}`);
    attrDelete.resolve(data);
  });
  const countChange = waiter();
  channel.on('NotifyUserCountChange', (data) => {
    log(`     event NotifyUserCountChange ${show(data)}`);
    countChange.resolve(data);
  });

  // 6.2 加入频道 (join)
  const joined = await step('joinChannel', () => channel.joinChannel());
  if (joined.rescode === 0) {
    // The joiner is told the channel's new member count, its own join included.
    await arrival('NotifyUserCountChange', countChange.promise);

    // 6.3 给指定channel发送组播消息 (broadcast; the sender gets it too)
    await step('sendMessageToChannel', () =>
      channel.sendMessageToChannel({
        type: 'text',
        content: encodeText('hello, channel'),
        appExtras: { from: 'seed' },
      }),
    );
    await arrival('ChannelMessage', echo.promise);

    // 6.4 设置用户属性 (set my attributes)
    await step('setUserAttributes', () =>
      channel.setUserAttributes({
        attributes: { name: 'seed', role: 'sample' },
        options: { enableNotification: true },
      }),
    );
    await arrival('NotifyUserAttributesSet', attrSet.promise);

    // 6.5 删除用户某些属性 (delete some of them)
    await step('deleteUserAttributesByKeys', () =>
      channel.deleteUserAttributesByKeys({ keys: ['role'], options: { enableNotification: true } }),
    );
    await arrival('NotifyUserAttributesDelete', attrDelete.promise);

    // 6.6 获取频道用户列表 (the members)
    await step('getChannelUserList', () => channel.getChannelUserList({}), (res) =>
      uidsOf(res).includes(uid) ? null : `${uid} not in the list`,
    );

    // 6.7 获取指定用户指定属性名的属性 (some attributes of one member)
    await step('getUserAttributesByKeys', () => channel.getUserAttributesByKeys({ uid, keys: ['name'] }), (res) =>
      attrsOf(res)?.name === 'seed' ? null : 'attribute name is not "seed"',
    );

    // 6.8 获取指定用户的全部属性 (all attributes of one member)
    await step('getUserAttributes', () => channel.getUserAttributes({ uid }), (res) =>
      attrsOf(res)?.role === undefined ? null : 'the deleted attribute role is still there',
    );

    // 6.9 查询单个或多个频道用户数 (member counts)
    await step('getChannelUserCount', () => channel.getChannelUserCount({ channelIds: channelIds }), (res) =>
      countOf(res, channelId) === 1 ? null : `count of ${channelId} is ${countOf(res, channelId)}, not 1`,
    );

    // 6.16 退出channel (leave)
    await step('leaveChannel', () => channel.leaveChannel());
  }

  // (2) 更新当前Token (refresh the token)
  if (token) {
    await step('refreshToken', () => hummer.refreshToken({ token }));
  } else {
    log('skip refreshToken: no token given (appid mode); fill "Sample token" to run it');
  }

  // (3) 查询Instance实例信息 (instance information)
  await step('getInstanceInfo', () => hummer.getInstanceInfo());

  // (1) 退出登录 (log out)
  await step('logout', () => hummer.logout());

  const ok = failed === 0;
  log(`seed sample ${ok ? 'succeeded' : 'FAILED'}: ${steps} steps, ${failed} failed`);
  return { ok, steps, failed };
}

async function runSeedFromPage() {
  const button = $('#seed-btn');
  const status = $('#seed-status');
  const pre = $('#seed-log');
  button.disabled = true;
  pre.textContent = '';
  status.textContent = 'running…';
  status.dataset.result = 'running';
  const log = (line) => {
    pre.textContent += `${line}\n`;
    pre.scrollTop = pre.scrollHeight;
  };
  try {
    const mod = await import('./hummer.js');
    const result = await runSeedSample(mod, {
      appid: Number($('#appid').value.trim() || 10000),
      uid: $('#seed-uid').value.trim() || '1999',
      token: $('#seed-token').value.trim(),
      region: $('#region').value,
      log,
    });
    status.textContent = result.ok
      ? `all ${result.steps} steps succeeded`
      : `${result.failed} of ${result.steps} steps failed`;
    status.dataset.result = result.ok ? 'ok' : 'failed';
  } catch (e) {
    log(`FAIL seed sample: ${e?.message ?? e}`);
    status.textContent = 'failed';
    status.dataset.result = 'failed';
  } finally {
    button.disabled = false;
  }
}

// ---------------------------------------------------------------------------

function init() {
  $('#login-form').addEventListener('submit', login);
  $('#send-form').addEventListener('submit', sendMessage);
  $('#logout-btn').addEventListener('click', logout);
  $('#my-status').addEventListener('change', (e) => {
    if (channel) setMyStatus(e.target.value);
  });
  $('#seed-btn').addEventListener('click', runSeedFromPage);
  const params = new URLSearchParams(location.search);
  for (const [param, id] of [['uid', '#uid'], ['appid', '#appid'], ['channel', '#channel-id']]) {
    if (params.has(param)) $(id).value = params.get(param);
  }
  document.documentElement.dataset.ready = 'true';
}

if (typeof document !== 'undefined') {
  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init);
  else init();
}
