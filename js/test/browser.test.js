// The demo page in a real browser against a real hummer-server.
//
// Starts hummer-server (HUMMER_SERVER_BIN, default ../target/debug/hummer-server
// from js/) with a WebSocket listener, opens its demo page in Debian's Chromium
// (CHROMIUM_BIN, default /usr/bin/chromium) through puppeteer-core, as two users
// in two browser contexts, and checks what each sees: a refused login's error,
// joins, messages both ways, the status attribute, online state, a logout, a
// closed page leaving after the presence grace, and the seed sample. Nothing downloads a browser: without
// Chromium the test fails, unless HUMMER_SKIP_BROWSER=1 (then it is skipped).
//
// The server serves the demo files of this checkout (a temporary --web-root
// holding js/demo/* and js/dist/hummer.js, or the bundle HUMMER_BUNDLE names;
// without a bundle there, the binary's own); HUMMER_DEMO_BUILTIN=1 tests the
// files built into the binary instead. When the server knows --tls-cert, the
// same scenario runs again over https/wss with a self-signed certificate made
// by the system openssl (HUMMER_SKIP_TLS=1 leaves that run out).
//
// Screenshots go to js/test-artifacts/.

import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const jsDir = path.resolve(here, '..');
// Paths from the environment are relative to the working directory; the defaults to js/.
const serverBin = process.env.HUMMER_SERVER_BIN
  ? path.resolve(process.env.HUMMER_SERVER_BIN)
  : path.resolve(jsDir, '../target/debug/hummer-server');
const chromiumBin = process.env.CHROMIUM_BIN ?? '/usr/bin/chromium';
const artifactsDir = path.join(jsDir, 'test-artifacts');
const skipBrowser = process.env.HUMMER_SKIP_BROWSER === '1';
const DEMO_SECRET = 'hummer-demo-secret-not-for-production'; // README: the demo app's published secret
const DEMO_APPID = '10000';
const SEED_UID = '1999';
const UID_A = '1001';
const UID_B = '1002';
const GRACE_SECS = 2;

// Bounded waits (ms). Generous for a loaded CI machine; none is a sleep.
const T_START = 20_000;
const T_UI = 10_000;
const T_LEAVE = GRACE_SECS * 1000 + 10_000;
const T_SEED = 45_000;

const CHROMIUM_FLAGS = [
  '--headless=new',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

const skipReason = skipBrowser
  ? 'HUMMER_SKIP_BROWSER=1: the browser test is skipped'
  : false;
if (skipReason) console.log(`${skipReason}`);

// ---------------------------------------------------------------------------
// The server

function serverHelp() {
  try {
    return execFileSync(serverBin, ['--help'], { encoding: 'utf8', timeout: 10_000 });
  } catch (e) {
    return String(e.stdout ?? '');
  }
}

/** The demo files of this checkout, in a temporary web root. */
function makeWebRoot() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hummer-web-'));
  for (const f of ['index.html', 'demo.js', 'demo.css']) {
    fs.copyFileSync(path.join(jsDir, 'demo', f), path.join(dir, f));
  }
  const bundle = process.env.HUMMER_BUNDLE
    ? path.resolve(process.env.HUMMER_BUNDLE)
    : path.join(jsDir, 'dist', 'hummer.js');
  if (fs.existsSync(bundle)) fs.copyFileSync(bundle, path.join(dir, 'hummer.js'));
  return dir;
}

/** A self-signed certificate for 127.0.0.1 (system openssl). */
function makeCert() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hummer-cert-'));
  const cert = path.join(dir, 'cert.pem');
  const key = path.join(dir, 'key.pem');
  execFileSync('openssl', [
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1',
    '-nodes', '-days', '1', '-subj', '/CN=127.0.0.1',
    '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost',
    '-keyout', key, '-out', cert,
  ], { stdio: 'pipe', timeout: 20_000 });
  return { dir, cert, key };
}

/**
 * Starts hummer-server; resolves to {proc, pageUrl, wsUrl, output()} once it
 * printed its demo page address.
 */
function startServer(extraArgs = []) {
  if (!fs.existsSync(serverBin)) {
    throw new Error(
      `hummer-server not found at ${serverBin}: build it (cargo build -p hummer-server) ` +
        'or set HUMMER_SERVER_BIN',
    );
  }
  const args = [
    '--listen', '127.0.0.1:0',
    '--ws-listen', '127.0.0.1:0',
    '--presence-grace-secs', String(GRACE_SECS),
    ...extraArgs,
  ];
  const proc = spawn(serverBin, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  proc.stdout.setEncoding('utf8');
  proc.stderr.setEncoding('utf8');
  proc.stderr.on('data', (d) => {
    err += d;
  });
  const output = () => `stdout:\n${out}\nstderr:\n${err}`;
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      proc.kill('SIGKILL');
      reject(new Error(`hummer-server printed no "demo page:" line within ${T_START} ms\n${output()}`));
    }, T_START);
    const onExit = (code, signal) => {
      clearTimeout(timer);
      const hint = /unknown option --(ws-listen|web-root|tls)/.test(err)
        ? ' (this hummer-server lacks the WebSocket listener: build branch main with it)'
        : '';
      reject(new Error(`hummer-server ${args.join(' ')} exited (${code ?? signal})${hint}\n${output()}`));
    };
    proc.once('exit', onExit);
    proc.once('error', (e) => {
      clearTimeout(timer);
      reject(new Error(`cannot run ${serverBin}: ${e.message}`));
    });
    proc.stdout.on('data', (d) => {
      out += d;
      const page = /demo page: (\S+)/.exec(out);
      const ws = /websocket on (\S+)/.exec(out);
      if (page) {
        clearTimeout(timer);
        proc.off('exit', onExit);
        resolve({ proc, extraArgs, pageUrl: page[1], wsUrl: ws?.[1], output });
      }
    });
  });
}

async function stopServer(server) {
  if (!server || server.proc.exitCode !== null || server.proc.signalCode !== null) return;
  const exited = new Promise((r) => server.proc.once('exit', r));
  process.kill(server.proc.pid, 'SIGTERM');
  const timer = setTimeout(() => {
    if (server.proc.exitCode === null) process.kill(server.proc.pid, 'SIGKILL');
  }, 5000);
  await exited;
  clearTimeout(timer);
}

function mintToken(uid) {
  return execFileSync(
    serverBin,
    ['token', '--appid', DEMO_APPID, '--uid', uid, '--secret', DEMO_SECRET],
    { encoding: 'utf8', timeout: 10_000 },
  ).trim();
}

// ---------------------------------------------------------------------------
// The browser

async function launchBrowser({ insecureCerts = false } = {}) {
  if (!fs.existsSync(chromiumBin)) {
    throw new Error(
      `Chromium not found at ${chromiumBin}. Install it (apt-get install -y chromium) or set ` +
        'CHROMIUM_BIN; HUMMER_SKIP_BROWSER=1 skips this test. Nothing downloads a browser.',
    );
  }
  let puppeteer;
  try {
    puppeteer = (await import('puppeteer-core')).default;
  } catch (e) {
    throw new Error(`puppeteer-core is not installed (npm install in js/): ${e.message}`);
  }
  const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'hummer-chromium-'));
  const args = [...CHROMIUM_FLAGS];
  if (insecureCerts) args.push('--ignore-certificate-errors');
  const browser = await puppeteer.launch({
    executablePath: chromiumBin,
    headless: true,
    userDataDir,
    args,
    acceptInsecureCerts: insecureCerts,
    timeout: T_START,
  });
  return { browser, userDataDir };
}

/** A page in a browser context of its own, with its console and errors kept. */
async function openPage(browser, url, label) {
  const context = browser.createBrowserContext
    ? await browser.createBrowserContext()
    : await browser.createIncognitoBrowserContext();
  const page = await context.newPage();
  page.setDefaultTimeout(T_UI);
  await page.setViewport({ width: 1100, height: 900 });
  const record = { label, console: [], errors: [] };
  page.on('console', (m) => record.console.push(`${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => record.errors.push(String(e?.message ?? e)));
  page.on('requestfailed', (r) => record.console.push(`requestfailed: ${r.url()} ${r.failure()?.errorText}`));
  const response = await page.goto(url, { waitUntil: 'load' });
  assert.equal(response.status(), 200, `GET ${url} for ${label}`);
  await page.waitForSelector('html[data-ready="true"]');
  return { page, context, record };
}

const memberSel = (uid) => `#member-list [data-testid="member"][data-uid="${uid}"]`;

async function login(page, uid, channel = 'lobby') {
  await page.$eval('#uid', (el, v) => { el.value = v; }, uid);
  await page.$eval('#token', (el) => { el.value = ''; });
  await page.$eval('#channel-id', (el, v) => { el.value = v; }, channel);
  await page.click('#login-btn');
  await page.waitForSelector('#conn-state[data-state="CONNECTED"]');
  await page.waitForSelector('#room:not([hidden])');
  await page.waitForSelector(memberSel(uid));
}

/** Waits until `fn(...args)` is truthy in the page; the failure says what it waited for. */
async function waitFor(page, what, fn, args = [], timeout = T_UI) {
  try {
    await page.waitForFunction(fn, { timeout, polling: 100 }, ...args);
  } catch (e) {
    const state = await page.evaluate(() => ({
      conn: document.querySelector('#conn-state')?.textContent,
      members: [...document.querySelectorAll('[data-testid="member"]')].map(
        (li) => `${li.dataset.uid}:${li.dataset.online}:${li.dataset.status}`,
      ),
      count: document.querySelector('#member-count')?.textContent,
      errors: document.querySelector('#errors')?.textContent,
      messages: [...document.querySelectorAll('#messages li')].map((li) => li.textContent),
    })).catch(() => ({}));
    throw new Error(`timed out after ${timeout} ms waiting for ${what}; page: ${JSON.stringify(state)}`, { cause: e });
  }
}

function waitMessage(page, from, text) {
  return waitFor(page, `message "${text}" from ${from}`, (f, t) =>
    [...document.querySelectorAll('#messages [data-testid="message"]')].some(
      (li) => li.dataset.from === f && li.querySelector('[data-testid="message-text"]')?.textContent === t,
    ), [from, text]);
}

function waitMember(page, uid, attr, value) {
  return waitFor(page, `member ${uid} with ${attr}=${value}`, (sel, a, v) => {
    const li = document.querySelector(sel);
    return li && li.dataset[a] === v;
  }, [memberSel(uid), attr, value]);
}

function waitNoMember(page, uid, timeout) {
  return waitFor(page, `member ${uid} to leave`, (sel) => !document.querySelector(sel), [memberSel(uid)], timeout);
}

function waitCount(page, n) {
  return waitFor(page, `member count ${n}`, (v) => document.querySelector('#member-count')?.textContent === v, [String(n)]);
}

async function sendMessage(page, text) {
  await page.$eval('#message-input', (el, v) => { el.value = v; }, text);
  await page.click('#send-btn');
}

async function errorsShown(page) {
  return page.$$eval('#errors [data-testid="error"]', (ps) => ps.map((p) => p.textContent));
}

/** No error shown on the page of `p`; a failure carries the page's console (the demo logs each error there with its time). */
async function assertNoErrorsShown(p) {
  const shown = await errorsShown(p.page);
  assert.deepEqual(shown, [], `${p.record.label}: errors shown; its console:\n${p.record.console.join('\n')}`);
}

async function screenshot(page, name) {
  fs.mkdirSync(artifactsDir, { recursive: true });
  const file = path.join(artifactsDir, `${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  console.log(`screenshot: ${file}`);
  return file;
}

// ---------------------------------------------------------------------------
// The scenario, once per transport

function tlsSkipReason() {
  if (skipReason) return skipReason;
  if (process.env.HUMMER_SKIP_TLS === '1') return 'HUMMER_SKIP_TLS=1: the https/wss run is skipped';
  if (!fs.existsSync(serverBin)) return `no hummer-server at ${serverBin}`;
  if (!serverHelp().includes('--tls-cert')) return 'this hummer-server has no --tls-cert: the https/wss run is skipped';
  return false;
}

function scenario(name, { tls, skip }) {
  if (skip) console.log(`${name}: ${skip}`);
  describe(name, { skip }, () => {
    let server;
    let browser;
    let userDataDir;
    let webRoot;
    let cert;
    let a;
    let b;

    before(async () => {
      const extra = [];
      if (process.env.HUMMER_DEMO_BUILTIN !== '1') {
        webRoot = makeWebRoot();
        extra.push('--web-root', webRoot);
      }
      if (tls) {
        cert = makeCert();
        extra.push('--tls-cert', cert.cert, '--tls-key', cert.key);
      }
      ({ browser, userDataDir } = await launchBrowser({ insecureCerts: tls }));
      server = await startServer(extra);
      if (tls) assert.match(server.pageUrl, /^https:/, 'the TLS server serves https');
    });

    after(async () => {
      for (const p of [a, b]) {
        if (p && (p.record.errors.length || process.env.HUMMER_TEST_VERBOSE)) {
          console.log(`${p.record.label} console:\n${p.record.console.join('\n')}\nerrors: ${p.record.errors.join('\n')}`);
        }
      }
      await browser?.close().catch(() => {});
      await stopServer(server);
      for (const d of [userDataDir, webRoot, cert?.dir]) {
        if (d) fs.rmSync(d, { recursive: true, force: true });
      }
    });

    const prefix = tls ? 'wss-' : '';
    const step = test;

    step('a refused login shows its error and the state LOGIN_FAILURE', async () => {
      a = await openPage(browser, server.pageUrl, `page ${UID_A}`);
      b = await openPage(browser, server.pageUrl, `page ${UID_B}`);
      await b.page.$eval('#uid', (el, v) => { el.value = v; }, UID_B);
      await b.page.$eval('#token', (el) => { el.value = 'not-a-token'; });
      await b.page.click('#login-btn');
      await waitFor(b.page, 'a login error', () =>
        /login failed: rescode 2002\b/.test(document.querySelector('#errors')?.textContent ?? ''));
      await b.page.waitForSelector('#conn-state[data-state="DISCONNECTED"]');
      assert.equal(await b.page.$eval('#conn-reason', (el) => el.textContent), 'LOGIN_FAILURE');
      assert.equal(await b.page.$eval('#room', (el) => el.hidden), true, 'the room stays hidden');
    });

    step('two users log in and join "lobby"; each sees the other join', async () => {
      await login(a.page, UID_A);
      await login(b.page, UID_B);
      await a.page.waitForSelector(memberSel(UID_B));
      await b.page.waitForSelector(memberSel(UID_A));
      await waitCount(a.page, 2);
      await waitCount(b.page, 2);
      const reasonA = await a.page.$eval('#conn-reason', (el) => el.textContent);
      assert.equal(reasonA, 'LOGIN_SUCCESS');
    });

    step('each sees the other online, with the status it set on joining', async () => {
      for (const [p, other] of [[a.page, UID_B], [b.page, UID_A]]) {
        await waitMember(p, other, 'online', 'true');
        await waitMember(p, other, 'status', 'available');
      }
    });

    step('messages both ways: each sees the other\'s and its own', async () => {
      const nonce = Math.random().toString(36).slice(2, 8);
      const fromA = `hello from ${UID_A} ${nonce}`;
      const fromB = `hi ${UID_A}, ${UID_B} here ${nonce}`;
      await sendMessage(a.page, fromA);
      await waitMessage(b.page, UID_A, fromA);
      await waitMessage(a.page, UID_A, fromA);
      await sendMessage(b.page, fromB);
      await waitMessage(a.page, UID_B, fromB);
      await waitMessage(b.page, UID_B, fromB);
      const times = await a.page.$$eval('#messages [data-testid="message"] time', (ts) => ts.map((t) => t.dateTime));
      assert.ok(times.length >= 2 && times.every((s) => !Number.isNaN(Date.parse(s))), `message times ${times}`);
    });

    step('a status change is seen by the other', async () => {
      await a.page.select('#my-status', 'busy');
      await waitMember(b.page, UID_A, 'status', 'busy');
      await waitMember(a.page, UID_A, 'status', 'busy');
      await b.page.select('#my-status', 'away');
      await waitMember(a.page, UID_B, 'status', 'away');
    });

    step('screenshots of both pages', async () => {
      await screenshot(a.page, `${prefix}demo-${UID_A}`);
      await screenshot(b.page, `${prefix}demo-${UID_B}`);
      await assertNoErrorsShown(a);
      await assertNoErrorsShown(b);
    });

    step('a server restart: both pages reconnect by themselves, re-join and chat again', async () => {
      const ws = new URL(server.wsUrl);
      const extra = server.extraArgs;
      await stopServer(server);
      for (const p of [a.page, b.page]) {
        await waitFor(p, 'the link lost', () => document.querySelector('#conn-state')?.dataset.state !== 'CONNECTED');
      }
      // The same WebSocket address: the pages' reconnects find the new server.
      server = await startServer([...extra, '--ws-listen', ws.host]);
      for (const p of [a.page, b.page]) {
        await p.waitForSelector('#conn-state[data-state="CONNECTED"]', { timeout: T_LEAVE });
      }
      await a.page.waitForSelector(memberSel(UID_B), { timeout: T_LEAVE });
      await b.page.waitForSelector(memberSel(UID_A), { timeout: T_LEAVE });
      const text = `after the restart ${Math.random().toString(36).slice(2, 8)}`;
      await sendMessage(b.page, text);
      await waitMessage(a.page, UID_B, text);
    });

    step('a logout: the other sees the leave at once', async () => {
      const t0 = Date.now();
      await b.page.click('#logout-btn');
      await b.page.waitForSelector('#login-section:not([hidden])');
      await b.page.waitForSelector('#conn-state[data-state="DISCONNECTED"]');
      await waitNoMember(a.page, UID_B);
      await waitCount(a.page, 1);
      console.log(`leave after logout seen in ${Date.now() - t0} ms`);
    });

    step('a closed page: the other sees the leave after the presence grace', async () => {
      await login(b.page, UID_B);
      await a.page.waitForSelector(memberSel(UID_B));
      await waitCount(a.page, 2);
      const t0 = Date.now();
      await b.page.close();
      await waitNoMember(a.page, UID_B, T_LEAVE);
      await waitCount(a.page, 1);
      const ms = Date.now() - t0;
      console.log(`leave after page close seen in ${ms} ms (grace ${GRACE_SECS} s)`);
      assert.ok(ms >= GRACE_SECS * 1000 - 250, `left after ${ms} ms, before the ${GRACE_SECS} s grace`);
    });

    step('the seed sample: every step succeeds', async () => {
      await a.page.$eval('#seed-token', (el, v) => { el.value = v; }, mintToken(SEED_UID));
      await a.page.click('#seed-btn');
      await waitFor(a.page, 'the seed sample to finish',
        () => ['ok', 'failed'].includes(document.querySelector('#seed-status')?.dataset.result), [], T_SEED);
      const log = await a.page.$eval('#seed-log', (el) => el.textContent);
      console.log(`seed log:\n${log.replace(/^/gm, '  ')}`);
      const lines = log.split('\n');
      assert.deepEqual(lines.filter((l) => l.startsWith('FAIL')), [], 'no step failed');
      const remote = [
        'login', 'setUserRegion', 'sendMessageToUser', 'queryUsersOnlineStatus', 'joinChannel',
        'sendMessageToChannel', 'setUserAttributes', 'deleteUserAttributesByKeys', 'getChannelUserList',
        'getUserAttributesByKeys', 'getUserAttributes', 'getChannelUserCount', 'leaveChannel',
        'refreshToken', 'getInstanceInfo', 'logout',
      ];
      for (const s of remote) {
        assert.ok(lines.some((l) => l.startsWith(`ok   ${s}: rescode 0 `)), `step ${s} succeeded with rescode 0`);
      }
      for (const s of ['createHummer', 'createInstance', 'createChannel']) {
        assert.ok(lines.some((l) => l.startsWith(`ok   ${s}: local`)), `step ${s} succeeded`);
      }
      for (const e of ['MessageFromUser', 'ChannelMessage', 'NotifyUserCountChange',
        'NotifyUserAttributesSet', 'NotifyUserAttributesDelete']) {
        assert.ok(lines.some((l) => l.startsWith(`ok   ${e}: received `)), `event ${e} received`);
      }
      assert.match(lines.find((l) => l.startsWith('seed sample ')) ?? '', /^seed sample succeeded: \d+ steps, 0 failed$/);
      assert.equal(await a.page.$eval('#seed-status', (el) => el.dataset.result), 'ok');
      // The page's own session is untouched by the sample's second instance.
      assert.equal(await a.page.$eval('#conn-state', (el) => el.dataset.state), 'CONNECTED');
      await screenshot(a.page, `${prefix}demo-${UID_A}-seed`);
    });

    step('no errors shown and no script errors', async () => {
      await assertNoErrorsShown(a);
      assert.deepEqual(a.record.errors, [], 'page errors of the first page');
      assert.deepEqual(b.record.errors, [], 'page errors of the second page');
    });
  });
}

scenario('demo page over http/ws', { tls: false, skip: skipReason });
scenario('demo page over https/wss', { tls: true, skip: tlsSkipReason() });
