// The golden transcripts of ../tests/golden replayed through the JS codec:
// every frame's canonical JSON -> Frame (fromJson) -> binary -> Frame -> JSON,
// which must equal the original; plus the byte examples of docs/protocol.md
// encoded by the JS codec and compared byte for byte.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync, readdirSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { join } from "node:path";
import {
  encodeFrame, decodeFrame, decodeServerFrame, frameFromJson, frameToJson, ProtocolError,
} from "../src/codec.js";
import { toBinary } from "@bufbuild/protobuf";
import { FrameSchema } from "../gen/hummer/channel/v1/frame_pb.js";

const goldenDir = fileURLToPath(new URL("../../tests/golden/", import.meta.url));
const files = readdirSync(goldenDir).filter((f) => f.endsWith(".jsonl")).sort();

const hex = (b) => Buffer.from(b).toString("hex");
const unhex = (s) => new Uint8Array(Buffer.from(s.replace(/\s+/g, ""), "hex"));

test("the golden directory has the nine flows of docs/protocol.md", () => {
  assert.deepEqual(files, [
    "attributes.jsonl", "channel_broadcast.jsonl", "idempotent_resend.jsonl",
    "login.jsonl", "p2p_reliable.jsonl", "p2p_unreliable.jsonl",
    "refusals.jsonl", "restart.jsonl", "resume.jsonl",
  ]);
});

for (const file of files) {
  test(`golden ${file}: every frame round-trips JSON -> binary -> JSON`, () => {
    const lines = readFileSync(join(goldenDir, file), "utf8").split("\n").filter((l) => l.trim());
    const header = JSON.parse(lines[0]);
    assert.equal(header.transcript + ".jsonl", file);
    let frames = 0;
    for (let i = 1; i < lines.length; i++) {
      const ev = JSON.parse(lines[i]);
      if (ev.frame) {
        const msg = frameFromJson(ev.frame);
        if (ev.dir === "s2c") assert.notEqual(msg.body.case, undefined, `${file}:${i + 1} has a body`);
        const bin = encodeFrame(msg);
        const back = decodeFrame(bin);
        assert.deepEqual(frameToJson(back), ev.frame, `${file}:${i + 1}`);
        // Re-encoding the decoded frame gives the same bytes (deterministic).
        assert.equal(hex(encodeFrame(back)), hex(bin), `${file}:${i + 1} bytes`);
        if (ev.dir === "s2c") {
          // What the client accepts from a server.
          decodeServerFrame(bin);
          assert.equal(back.requestId === 0n, !isReply(back.body.case),
            `${file}:${i + 1}: request id 0 exactly on pushes and control frames`);
        }
        if (msg.body.case === undefined) {
          // A deliberately bodiless c2s frame (refusals): the same rule binds the client.
          assert.throws(() => decodeServerFrame(bin), ProtocolError, `${file}:${i + 1}`);
        }
        frames++;
      } else if (ev.raw_hex !== undefined) {
        // Malformed input: the JS client would refuse such bytes from a server.
        assert.throws(() => decodeServerFrame(unhex(ev.raw_hex)), ProtocolError, `${file}:${i + 1}`);
      }
    }
    assert.ok(frames > 0);
  });
}

function isReply(c) {
  return ["error", "loginReply", "ok", "instanceInfo", "sendReply", "onlineStatus", "userList",
    "attributes", "userCount", "joinReply", "fetchReply", "refreshTokenReply"].includes(c);
}

// The byte examples of docs/protocol.md, "Framing" (a second, independent
// source of binary): the JS encoding without the 4-byte prefix must match.
test("docs/protocol.md byte examples match the JS encoding", () => {
  const cases = [
    [{ body: { case: "ping", value: { nonce: 1n } } }, "00 00 00 04 12 02 08 01"],
    [{ requestId: 1n, body: { case: "login", value: { protocolVersion: 2, appid: 10000, uid: 42n } } },
      "00 00 00 0b 08 01 52 07 08 02 10 90 4e 18 2a"],
    [{ requestId: 2n, body: { case: "ok", value: {} } }, "00 00 00 05 08 02 ca 02 00"],
    [{ body: { case: "close", value: { code: 2001 } } }, "00 00 00 05 32 03 08 d1 0f"],
  ];
  for (const [init, doc] of cases) {
    const withPrefix = unhex(doc);
    const n = new DataView(withPrefix.buffer).getUint32(0);
    const body = withPrefix.subarray(4);
    assert.equal(n, body.length);
    assert.equal(hex(encodeFrame(init)), hex(body));
    assert.equal(hex(toBinary(FrameSchema, decodeFrame(body))), hex(body));
  }
});

test("the doc's example frames decode to the same JSON the transcripts use", () => {
  const f = decodeFrame(unhex("08 01 52 07 08 02 10 90 4e 18 2a"));
  assert.deepEqual(frameToJson(f), { requestId: "1", login: { protocolVersion: 2, appid: 10000, uid: "42" } });
  // An empty message member is still encoded (key and length 0).
  assert.equal(hex(encodeFrame({ requestId: 4n, body: { case: "logout", value: {} } })), "08042a0400".slice(0, 4) + "5a00");
});

test("client-side malformed input checks", () => {
  assert.throws(() => decodeServerFrame(new Uint8Array(0)), ProtocolError);
  assert.throws(() => decodeServerFrame(new Uint8Array(65537)), ProtocolError);
  assert.throws(() => decodeServerFrame(unhex("08 01")), ProtocolError, "no body");
  assert.throws(() => decodeServerFrame(unhex("ff ff ff")), ProtocolError, "undecodable");
  // A request body (login) or an ack from a server.
  assert.throws(() => decodeServerFrame(encodeFrame({ requestId: 1n, body: { case: "login", value: {} } })), ProtocolError);
  assert.throws(() => decodeServerFrame(encodeFrame({ body: { case: "ack", value: { p2pSeq: 1n } } })), ProtocolError);
  // uint64 beyond 2^53 survives as BigInt.
  const big = 18446744073709551615n;
  const f = decodeServerFrame(encodeFrame({ body: { case: "userMessage", value: { fromUid: big, seq: 1n } } }));
  assert.equal(f.body.value.fromUid, big);
});
