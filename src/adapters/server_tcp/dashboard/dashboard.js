// The hummer-server dashboard: polls /v1/stats every second with the API
// key of this tab (sessionStorage, or #key=... in the URL) and shows the
// figures, rates from the difference between two polls, and 60 s charts.
'use strict';
(function () {
  const POLL_MS = 1000;
  const HISTORY = 60;
  const $ = (id) => document.getElementById(id);
  const state = { key: null, prev: null, timer: null, history: { connections: [], messages: [], deliveries: [] } };

  function keyFromUrl() {
    const m = /(?:^#|&)key=([^&]+)/.exec(location.hash);
    if (!m) return null;
    history.replaceState(null, '', location.pathname + location.search);
    return decodeURIComponent(m[1]);
  }

  function showMessage(text) {
    const el = $('message');
    el.textContent = text || '';
    el.hidden = !text;
  }

  function setStatus(text, kind) {
    const el = $('status');
    el.textContent = text;
    el.className = 'status' + (kind ? ' ' + kind : '');
  }

  function askForKey(reason) {
    stop();
    state.key = null;
    sessionStorage.removeItem('hummer-api-key');
    $('key-form').hidden = false;
    $('forget').hidden = true;
    setStatus('not connected', 'down');
    showMessage(reason);
    $('key').focus();
  }

  function start(key) {
    state.key = key;
    state.prev = null;
    sessionStorage.setItem('hummer-api-key', key);
    $('key-form').hidden = true;
    $('forget').hidden = false;
    showMessage('');
    setStatus('connecting…');
    stop();
    poll();
    state.timer = setInterval(poll, POLL_MS);
  }

  function stop() {
    if (state.timer) clearInterval(state.timer);
    state.timer = null;
  }

  async function poll() {
    const key = state.key;
    if (!key) return;
    let res;
    try {
      res = await fetch('/v1/stats', { headers: { Authorization: 'apikey ' + key }, cache: 'no-store' });
    } catch (e) {
      setStatus('server unreachable', 'down');
      showMessage('Cannot reach the server: retrying every second.');
      return;
    }
    if (key !== state.key) return;
    if (res.status === 401) {
      askForKey('The API key was refused (401): enter a valid key of your app.');
      return;
    }
    if (!res.ok) {
      let detail = '';
      try { detail = (await res.json()).message || ''; } catch (e) { /* not JSON */ }
      setStatus('error ' + res.status, 'down');
      showMessage('The server answered ' + res.status + (detail ? ': ' + detail : '') + '. Retrying.');
      return;
    }
    const now = await res.json();
    setStatus('live, updated ' + new Date(now.unix_ms).toLocaleTimeString(), 'live');
    showMessage('');
    render(now, state.prev);
    state.prev = now;
  }

  function rate(now, prev, field) {
    if (!prev) return null;
    const secs = (now.unix_ms - prev.unix_ms) / 1000;
    if (secs <= 0) return null;
    return Math.max(0, (now[field] - prev[field]) / secs);
  }

  const fmtRate = (v) => (v === null ? '–' : v >= 100 ? v.toFixed(0) : v.toFixed(1));
  const fmtMs = (v) => (v === null || v === undefined ? '–' : v < 1 ? v.toFixed(2) : String(Math.round(v * 100) / 100));

  function push(series, v) {
    series.push(v);
    if (series.length > HISTORY) series.shift();
  }

  function render(now, prev) {
    const msgs = rate(now, prev, 'messages_in_total');
    const dels = rate(now, prev, 'deliveries_total');
    $('connections').textContent = String(now.connections);
    $('messages-per-second').textContent = fmtRate(msgs);
    $('deliveries-per-second').textContent = fmtRate(dels);
    $('p50').textContent = fmtMs(now.latency_ms.p50);
    $('p99').textContent = fmtMs(now.latency_ms.p99);
    push(state.history.connections, now.connections);
    if (msgs !== null) push(state.history.messages, msgs);
    if (dels !== null) push(state.history.deliveries, dels);
    chart($('chart-connections'), state.history.connections);
    chart($('chart-messages'), state.history.messages);
    chart($('chart-deliveries'), state.history.deliveries);
    busiest(now, prev);
  }

  function chart(svg, series) {
    const W = 300, H = 60;
    const max = Math.max(1, ...series);
    const step = W / (HISTORY - 1);
    const x0 = W - (series.length - 1) * step;
    const points = series.map((v, i) => (x0 + i * step).toFixed(1) + ',' + (H - 2 - (v / max) * (H - 6)).toFixed(1));
    const ns = 'http://www.w3.org/2000/svg';
    svg.replaceChildren();
    if (points.length < 2) return;
    const area = document.createElementNS(ns, 'polygon');
    area.setAttribute('points', x0.toFixed(1) + ',' + H + ' ' + points.join(' ') + ' ' + W + ',' + H);
    const line = document.createElementNS(ns, 'polyline');
    line.setAttribute('points', points.join(' '));
    svg.append(area, line);
  }

  function busiest(now, prev) {
    const before = new Map();
    if (prev) for (const c of prev.busiest) before.set(c.region + '/' + c.id, c.messages);
    const secs = prev ? (now.unix_ms - prev.unix_ms) / 1000 : 0;
    const body = $('busiest');
    body.replaceChildren();
    if (now.busiest.length === 0) {
      const tr = document.createElement('tr');
      const td = document.createElement('td');
      td.colSpan = 5;
      td.className = 'empty';
      td.textContent = 'no channel has messages yet';
      tr.append(td);
      body.append(tr);
      return;
    }
    for (const c of now.busiest) {
      const was = before.get(c.region + '/' + c.id);
      const perSec = was === undefined || secs <= 0 ? null : Math.max(0, (c.messages - was) / secs);
      const tr = document.createElement('tr');
      tr.dataset.channel = c.id;
      for (const [text, num] of [[c.id, false], [c.region, false], [String(c.members), true], [String(c.messages), true], [fmtRate(perSec), true]]) {
        const td = document.createElement('td');
        td.textContent = text;
        if (num) td.className = 'num';
        tr.append(td);
      }
      body.append(tr);
    }
  }

  $('key-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const key = $('key').value.trim();
    $('key').value = '';
    if (key) start(key);
  });
  $('forget').addEventListener('click', () => askForKey(''));
  window.addEventListener('hashchange', () => {
    const key = keyFromUrl();
    if (key) start(key);
  });

  const key = keyFromUrl() || sessionStorage.getItem('hummer-api-key');
  if (key) start(key); else askForKey('');
})();
