// The wire codec: one protobuf `Frame` per WebSocket binary message
// (docs/protocol.md, "Transports"), through the code generated into ../gen.
import { create, fromBinary, toBinary, fromJson, toJson } from "@bufbuild/protobuf";
import { FrameSchema } from "../gen/hummer/channel/v1/frame_pb.js";

export { FrameSchema };

export const PROTOCOL_VERSION = 2;
export const MAX_FRAME_SIZE = 65536;

const U64_MAX = (1n << 64n) - 1n;

/** Encodes a Frame (a message or a plain init object) to bytes. */
export function encodeFrame(init) {
  return toBinary(FrameSchema, create(FrameSchema, init));
}

/** Reply bodies (s2c, with the request's id). */
const REPLY_CASES = new Set([
  "error", "loginReply", "ok", "instanceInfo", "sendReply", "onlineStatus",
  "userList", "attributes", "userCount", "joinReply", "fetchReply",
  "refreshTokenReply",
]);
/** Push bodies (s2c, request id 0). */
const PUSH_CASES = new Set([
  "userMessage", "channelMessage", "membership", "userAttributesChanged",
  "channelAttributesChanged", "userCountChanged", "tokenWillExpire",
]);
const CONTROL_CASES = new Set(["ping", "pong", "close"]);

export class ProtocolError extends Error {}

/**
 * Decodes one frame received from the server and applies the client side of
 * "Malformed input": it must decode, carry a known body, and that body must be
 * one a server may send (no request body, no ack).
 */
export function decodeServerFrame(bytes) {
  if (!(bytes instanceof Uint8Array)) throw new ProtocolError("not binary");
  if (bytes.length === 0 || bytes.length > MAX_FRAME_SIZE) {
    throw new ProtocolError(`frame size ${bytes.length}`);
  }
  let frame;
  try {
    frame = fromBinary(FrameSchema, bytes);
  } catch (e) {
    throw new ProtocolError(`undecodable frame: ${e.message}`);
  }
  const c = frame.body.case;
  if (c === undefined) throw new ProtocolError("frame without a body");
  if (!REPLY_CASES.has(c) && !PUSH_CASES.has(c) && !CONTROL_CASES.has(c)) {
    throw new ProtocolError(`a client body from the server: ${c}`);
  }
  return frame;
}

/** Decodes any frame, without the direction check (tests, tools). */
export function decodeFrame(bytes) {
  return fromBinary(FrameSchema, bytes);
}

export function frameFromJson(json) {
  return fromJson(FrameSchema, json);
}

export function frameToJson(frame) {
  return toJson(FrameSchema, frame);
}

// ---- ids: decimal strings in the API, BigInt on the wire ----

/** A uint64 from a decimal string, a safe integer Number or a BigInt; null if invalid. */
export function parseU64(v) {
  if (typeof v === "bigint") return v >= 0n && v <= U64_MAX ? v : null;
  if (typeof v === "number") {
    return Number.isSafeInteger(v) && v >= 0 ? BigInt(v) : null;
  }
  if (typeof v === "string" && /^[0-9]{1,20}$/.test(v)) {
    const b = BigInt(v);
    return b <= U64_MAX ? b : null;
  }
  return null;
}

export function u64String(b) {
  return b.toString();
}

/** A random non-zero uint64 (message ids). */
export function randomU64() {
  const a = new Uint32Array(2);
  for (;;) {
    globalThis.crypto.getRandomValues(a);
    const v = (BigInt(a[0]) << 32n) | BigInt(a[1]);
    if (v !== 0n) return v;
  }
}

// ---- regions ----

const REGIONS = ["", "cn", "ap_southeast", "ap_south", "us", "me_east", "sa_east"];

/** Region enum number from "cn", "ap_southeast", ... (case-insensitive); -1 if unknown; 0 for none. */
export function regionNumber(region) {
  if (region === undefined || region === null || region === "") return 0;
  if (typeof region === "number") return region >= 1 && region <= 6 ? region : -1;
  const i = REGIONS.indexOf(String(region).toLowerCase());
  return i > 0 ? i : -1;
}

export function regionName(n) {
  return REGIONS[n] ?? String(n);
}

// ---- message content ----

const encoder = new TextEncoder();
const strictDecoder = new TextDecoder("utf-8", { fatal: true });

export function utf8(s) {
  return encoder.encode(s);
}

export function utf8Len(s) {
  return encoder.encode(s).length;
}

/** Content bytes from a string or a Uint8Array (or ArrayBuffer); null if neither. */
export function contentBytes(content) {
  if (content === undefined || content === null) return new Uint8Array(0);
  if (typeof content === "string") return encoder.encode(content);
  if (content instanceof Uint8Array) return content;
  if (content instanceof ArrayBuffer) return new Uint8Array(content);
  return null;
}

/** Content as the application gets it: a string when valid UTF-8, else the bytes. */
export function contentForApp(bytes) {
  try {
    return strictDecoder.decode(bytes);
  } catch {
    return bytes;
  }
}
