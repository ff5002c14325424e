// The server's live dashboard in headless Chromium while a load runs.
//
// Starts hummer-server (HUMMER_SERVER_BIN, default ../target/debug/hummer-server
// from js/) with its API listener on a free port (--api-listen 127.0.0.1:0; the
// address is read from its "hummer-server API on http://..." line) and an API key
// for the demo app, opens /dashboard#key=... in Debian's Chromium (CHROMIUM_BIN,
// default /usr/bin/chromium) through puppeteer-core, and meanwhile has two JS
// clients of this package exchange channel messages in a loop. The page must show
// non-zero messages and deliveries per second and list the channel among the
// busiest; a refused key must be said to be refused. The screenshot goes to
// js/test-artifacts/dashboard.png. HUMMER_SKIP_BROWSER=1 skips it (no Chromium).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import WebSocket from 'ws';
import { Hummer } from '../src/index.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const jsDir = path.resolve(here, '..');
const serverBin = process.env.HUMMER_SERVER_BIN
  ? path.resolve(process.env.HUMMER_SERVER_BIN)
  : path.resolve(jsDir, '../target/debug/hummer-server');
const chromiumBin = process.env.CHROMIUM_BIN ?? '/usr/bin/chromium';
const artifactsDir = path.join(jsDir, 'test-artifacts');
const skip = process.env.HUMMER_SKIP_BROWSER === '1'
  ? 'HUMMER_SKIP_BROWSER=1: the dashboard test is skipped'
  : false;

const API_KEY = 'dashboard-test-api-key-0123456789abcdef';
const CHANNEL = 'dash-room';
const T_START = 20_000;
const T_UI = 15_000;
const SEND_EVERY_MS = 40; // 25 messages a second: well under the send rate limit

let server;
let browser;
let userDataDir;
const clients = [];
let loadRunning = false;
let loadDone = Promise.resolve();

/** Starts the server; resolves to {proc, wsUrl, apiUrl, output()}. */
function startServer() {
  if (!fs.existsSync(serverBin)) {
    throw new Error(`hummer-server not found at ${serverBin}: build it or set HUMMER_SERVER_BIN`);
  }
  const args = [
    '--listen', '127.0.0.1:0',
    '--ws-listen', '127.0.0.1:0',
    '--api-listen', '127.0.0.1:0',
    '--api-key', `10000:${API_KEY}`,
    '--log', 'warn',
  ];
  const proc = spawn(serverBin, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  proc.stdout.setEncoding('utf8');
  proc.stderr.setEncoding('utf8');
  proc.stderr.on('data', (d) => { err += d; });
  const output = () => `stdout:\n${out}\nstderr:\n${err}`;
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      proc.kill('SIGKILL');
      reject(new Error(`hummer-server printed no API line within ${T_START} ms\n${output()}`));
    }, T_START);
    const onExit = (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`hummer-server ${args.join(' ')} exited (${code ?? signal})\n${output()}`));
    };
    proc.once('exit', onExit);
    proc.stdout.on('data', (d) => {
      out += d;
      const ws = /hummer-server websocket on (\S+)/.exec(out);
      const api = /hummer-server API on (http:\/\/\S+)/.exec(out);
      if (ws && api) {
        clearTimeout(timer);
        proc.off('exit', onExit);
        resolve({ proc, wsUrl: ws[1], apiUrl: api[1], output });
      }
    });
  });
}

async function stopServer() {
  if (!server || server.proc.exitCode !== null || server.proc.signalCode !== null) return;
  const exited = new Promise((r) => server.proc.once('exit', r));
  server.proc.kill('SIGTERM');
  const timer = setTimeout(() => server.proc.kill('SIGKILL'), 5000);
  await exited;
  clearTimeout(timer);
}

/** A logged-in client in CHANNEL. */
async function member(uid) {
  const h = Hummer.createHummer({ appid: 10000, url: server.wsUrl, WebSocket });
  clients.push(h);
  const res = await h.login({ uid, region: 'cn' });
  assert.equal(res.rescode, 0, `login ${uid}: ${res.msg}`);
  const ch = h.createInstance().createChannel({ region: 'cn', channelId: CHANNEL });
  assert.equal((await ch.joinChannel()).rescode, 0);
  return ch;
}

/** Two members sending to the channel in turn until stopped (bounded: 2 minutes). */
async function runLoad(a, b) {
  const end = Date.now() + 120_000;
  let i = 0;
  while (loadRunning && Date.now() < end) {
    const from = i % 2 === 0 ? a : b;
    const r = await from.sendMessageToChannel({ type: 'text', content: `load ${i}` });
    assert.equal(r.rescode, 0, `send ${i}: ${r.msg}`);
    i += 1;
    await new Promise((res) => setTimeout(res, SEND_EVERY_MS));
  }
}

before(async () => {
  if (skip) return;
  server = await startServer();
});

after(async () => {
  loadRunning = false;
  await loadDone.catch(() => {});
  for (const h of clients) await h.logout().catch(() => {});
  if (browser) await browser.close().catch(() => {});
  if (userDataDir) fs.rmSync(userDataDir, { recursive: true, force: true });
  await stopServer();
});

async function launch() {
  if (!fs.existsSync(chromiumBin)) {
    throw new Error(`Chromium not found at ${chromiumBin}: install it (apt-get install -y chromium), set CHROMIUM_BIN, or HUMMER_SKIP_BROWSER=1`);
  }
  const puppeteer = (await import('puppeteer-core')).default;
  userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'hummer-chromium-'));
  return puppeteer.launch({
    executablePath: chromiumBin,
    headless: true,
    userDataDir,
    timeout: T_START,
    args: ['--headless=new', '--no-sandbox', '--disable-gpu', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
}

/** A number shown in `sel`, or NaN. */
const shown = (page, sel) => page.$eval(sel, (el) => Number.parseFloat(el.textContent));

test('the dashboard shows live rates and the busiest channel while a load runs', { skip }, async () => {
  browser = await launch();
  let page = await browser.newPage();
  page.setDefaultTimeout(T_UI);
  await page.setViewport({ width: 1100, height: 820 });
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e?.message ?? e)));

  // A wrong key: the page says it was refused and asks for one.
  let res = await page.goto(`${server.apiUrl}/dashboard#key=not-the-key-0123456789abcdef0123456789`, { waitUntil: 'load' });
  assert.equal(res.status(), 200);
  await page.waitForFunction(() => /401/.test(document.querySelector('#message')?.textContent ?? ''), { polling: 100 });
  assert.equal(await page.$eval('#key-form', (f) => f.hidden), false);

  // The load: two members of one channel, sending in turn.
  const a = await member('501');
  const b = await member('502');
  loadRunning = true;
  loadDone = runLoad(a, b);

  // A new tab (sessionStorage is per tab) with the right key in the URL.
  await page.close();
  page = await browser.newPage();
  page.setDefaultTimeout(T_UI);
  await page.setViewport({ width: 1100, height: 820 });
  page.on('pageerror', (e) => errors.push(String(e?.message ?? e)));
  res = await page.goto(`${server.apiUrl}/dashboard#key=${encodeURIComponent(API_KEY)}`, { waitUntil: 'load' });
  assert.equal(res.status(), 200);
  try {
    await page.waitForFunction(
      (channel) => {
        const n = (id) => Number.parseFloat(document.getElementById(id)?.textContent ?? '');
        return n('messages-per-second') > 0 && n('deliveries-per-second') > 0 && n('connections') >= 2 &&
          document.querySelector(`#busiest tr[data-channel="${channel}"]`) !== null;
      },
      { polling: 200, timeout: T_UI },
      CHANNEL,
    );
  } catch (e) {
    const html = await page.$eval('main', (m) => m.innerText).catch(() => '');
    throw new Error(`the dashboard never showed the load: ${html}\n${server.output()}`, { cause: e });
  }
  // Let the charts gather a few points for the screenshot.
  await new Promise((r) => setTimeout(r, 6000));
  const messages = await shown(page, '#messages-per-second');
  const deliveries = await shown(page, '#deliveries-per-second');
  assert.ok(messages > 0, `messages per second: ${messages}`);
  // Each message reaches both members: about twice as many deliveries.
  assert.ok(deliveries >= messages, `deliveries ${deliveries} < messages ${messages}`);
  assert.ok((await shown(page, '#p50')) > 0);
  assert.ok((await shown(page, '#p99')) > 0);
  const row = await page.$eval(`#busiest tr[data-channel="${CHANNEL}"]`, (tr) => [...tr.cells].map((c) => c.textContent));
  assert.equal(row[0], CHANNEL);
  assert.equal(row[2], '2', 'two members');
  assert.ok(Number.parseFloat(row[4]) > 0, `the channel's rate: ${row}`);
  assert.deepEqual(errors, []);
  fs.mkdirSync(artifactsDir, { recursive: true });
  await page.screenshot({ path: path.join(artifactsDir, 'dashboard.png'), fullPage: true });
  loadRunning = false;
  await loadDone;
});
