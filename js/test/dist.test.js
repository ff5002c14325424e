// dist/hummer.js: up to date with src/ (rebuilt into a temp file and
// compared), self-contained (no import of anything), and working: the bundle
// logs in to a real server and exchanges a message.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { startServer, WebSocket } from "./helpers/server.js";

const root = fileURLToPath(new URL("..", import.meta.url));

test("dist/hummer.js is what `npm run build` makes from src/", () => {
  const r = spawnSync(process.execPath, ["scripts/build.js", "--check"], { cwd: root, encoding: "utf8" });
  assert.equal(r.status, 0, r.stderr + r.stdout);
});

test("dist/hummer.js is one self-contained ES module exporting Hummer", async () => {
  const text = readFileSync(new URL("../dist/hummer.js", import.meta.url), "utf8");
  assert.doesNotMatch(text, /^\s*import\s/m, "no import statements");
  assert.doesNotMatch(text, /\brequire\(/, "no require");
  const mod = await import("../dist/hummer.js");
  assert.equal(typeof mod.Hummer.createHummer, "function");
  assert.equal(mod.default, mod.Hummer);
});

test("the bundle works against a real server", async () => {
  const server = await startServer();
  try {
    const { Hummer } = await import("../dist/hummer.js");
    const h = Hummer.createHummer({ appid: 10000, url: server.url, WebSocket });
    assert.equal((await h.login({ uid: "31337" })).rescode, 0);
    const client = h.createInstance();
    const got = new Promise((resolve) => client.on("MessageFromUser", resolve));
    assert.equal((await client.sendMessageToUser({ type: "t", content: "to myself", receiver: "31337" })).rescode, 0);
    const m = await got;
    assert.equal(m.message.content, "to myself");
    assert.equal(m.fromUid, "31337");
    assert.equal((await h.logout()).rescode, 0);
  } finally {
    server.stop();
  }
});
