// Starts a real hummer-server (HUMMER_SERVER_BIN, default ../target/debug/hummer-server
// relative to js/) on ephemeral ports and parses its WebSocket URL from stdout.
import { spawn, spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { existsSync } from "node:fs";
import WebSocket from "ws";

const jsDir = fileURLToPath(new URL("../../", import.meta.url));
export const SERVER_BIN = process.env.HUMMER_SERVER_BIN
  ? process.env.HUMMER_SERVER_BIN
  : fileURLToPath(new URL("../target/debug/hummer-server", `file://${jsDir}`));
export const DEMO_SECRET_FALLBACK = "hummer-demo-secret-not-for-production";
const PREFIX = "hummer-server websocket on ";

export async function startServer(extraArgs = []) {
  if (!existsSync(SERVER_BIN)) {
    throw new Error(`no server binary at ${SERVER_BIN}: run cargo build -p hummer-server or set HUMMER_SERVER_BIN`);
  }
  const child = spawn(SERVER_BIN, ["--listen", "127.0.0.1:0", "--ws-listen", "127.0.0.1:0", "--log", "warn", ...extraArgs], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  let err = "";
  child.stderr.on("data", (d) => { err += d; });
  // With --api-listen, the API's line is waited for too.
  const wantApi = extraArgs.includes("--api-listen");
  let apiUrl = null;
  const url = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`server did not print its websocket line:\n${out}\n${err}`)), 15000);
    child.stdout.on("data", (d) => {
      out += d;
      const line = out.split("\n").find((l) => l.startsWith(PREFIX));
      const api = /hummer-server API on (http:\/\/\S+)/.exec(out);
      apiUrl = api ? api[1] : null;
      if (line && (apiUrl || !wantApi)) {
        clearTimeout(timer);
        resolve(line.slice(PREFIX.length).trim());
      }
    });
    child.on("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`server exited (${code}):\n${out}\n${err}`));
    });
  });
  const m = /tokens signed with "([^"]+)"/.exec(out);
  const secret = m ? m[1] : DEMO_SECRET_FALLBACK;
  return {
    url,
    apiUrl,
    secret,
    pid: child.pid,
    stop() {
      if (child.exitCode === null) process.kill(child.pid, "SIGKILL");
    },
  };
}

export function makeToken(secret, uid, ttlSecs = 3600) {
  const r = spawnSync(SERVER_BIN, ["token", "--appid", "10000", "--uid", String(uid), "--secret", secret, "--ttl-secs", String(ttlSecs)], { encoding: "utf8" });
  if (r.status !== 0) throw new Error(`token: ${r.stderr}`);
  return r.stdout.trim().split("\n").pop().trim();
}

/** A WebSocket class (the `ws` package) whose connections can be refused at will. */
export function gatedWebSocket() {
  const gate = { closed: false, opened: 0 };
  class GatedWebSocket extends WebSocket {
    constructor(url, protocols) {
      // A refused connection: nothing listens on port 9 (discard) here.
      super(gate.closed ? "ws://127.0.0.1:9/v1/ws" : url, protocols);
      if (!gate.closed) gate.opened++;
    }
  }
  return { gate, WebSocket: GatedWebSocket };
}

export { WebSocket };
