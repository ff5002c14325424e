// Type declarations of hummer-channel, the JavaScript client of the Hummer
// Channel protocol (version 2, over WebSocket).
//
// Conventions:
// - uids, instance ids, sequence numbers and other 64-bit ids are DECIMAL
//   STRINGS in this API ("18446744073709551615"), as in the Hummer JS SDK:
//   JavaScript numbers cannot hold 64 bits. Inputs also accept a safe-integer
//   number or a bigint.
// - Times (timestamp, lastUpdateTs, tokenExpiresAt, serverTime) are unix
//   milliseconds as numbers.
// - Every operation returns a Promise that RESOLVES (never rejects) with
//   `{rescode, msg, ...}`: rescode 0 on success, else a Hummer error code (see
//   ErrorCode), including the client-side codes 1001 (not logged in), 1005
//   (no reply in time: outcome unknown) and 1007 (link lost: outcome unknown).
//   The result fields beyond rescode and msg are present only on success.
// - Regions: "cn", "ap_southeast", "ap_south", "us", "me_east", "sa_east".

export type Region = "cn" | "ap_southeast" | "ap_south" | "us" | "me_east" | "sa_east";
export type Uid = string;
/** Inputs: a decimal string, a safe integer number, or a bigint. */
export type UidInput = string | number | bigint;

export interface Result {
  /** 0 on success, else an error code (ErrorCode). */
  rescode: number;
  msg: string;
}

export declare const ConnectionState: {
  readonly DISCONNECTED: "DISCONNECTED";
  readonly CONNECTING: "CONNECTING";
  readonly CONNECTED: "CONNECTED";
  readonly RECONNECTING: "RECONNECTING";
};
export type ConnectionStateName = keyof typeof ConnectionState;

export declare const ConnectionReason: {
  readonly INIT: "INIT";
  readonly LOGIN: "LOGIN";
  readonly LOGIN_SUCCESS: "LOGIN_SUCCESS";
  readonly LOGIN_FAILURE: "LOGIN_FAILURE";
  readonly LOGIN_TIMEOUT: "LOGIN_TIMEOUT";
  readonly INTERRUPTED: "INTERRUPTED";
  readonly LOGOUT: "LOGOUT";
  readonly REMOTE_LOGIN: "REMOTE_LOGIN";
  /** The app's backend kicked this instance (Close 4100 to 4199). */
  readonly KICKED: "KICKED";
};
export type ConnectionReasonName = keyof typeof ConnectionReason;

export declare const ErrorCode: {
  readonly SUCCESS: 0;
  readonly UNKNOWN: 1;
  readonly LOGIN_KICK_OUT: 100;
  readonly UNINITIALIZED: 1001;
  readonly OPERATION_TIMEOUT: 1005;
  readonly CONNECTION_EXCEPTION: 1007;
  readonly UNAUTHORIZED: 1009;
  readonly INVALID_PARAMETER: 2001;
  readonly INVALID_TOKEN: 2002;
  readonly EXPIRED_TOKEN: 2003;
  readonly RESOURCE_NOT_FOUND: 2004;
  readonly MSG_SIZE_LIMIT_EXCEEDED: 2007;
  readonly UNSUPPORTED_PROTOCOL_VERSION: 2010;
  readonly ALREADY_LOGGED_IN: 2011;
  readonly TOO_MANY_INSTANCES: 2012;
  readonly MESSAGE_ID_REUSED: 2013;
  readonly APPID_UNAVAILABLE: 2018;
  readonly PERMISSION_DENY: 3000;
  readonly INTERNAL_SERVER_ERROR: 4000;
  readonly OPERATION_TOO_OFTEN: 4003;
  readonly SERVICE_UNAVAILABLE: 4010;
  readonly USER_NOT_IN_CHANNEL: 5101;
  readonly CHANNEL_USER_LIMIT_EXCEEDED: 5102;
  readonly USER_ATTRIBUTES_ITEMS_OVERFLOW: 5103;
  readonly USER_ATTRIBUTES_SIZE_OVERFLOW: 5104;
  readonly CHANNEL_ATTRIBUTES_ITEMS_OVERFLOW: 5105;
  readonly CHANNEL_ATTRIBUTES_SIZE_OVERFLOW: 5106;
  readonly CHANNEL_ATTRIBUTES_NOT_EXIST: 5108;
  readonly CHANNEL_COUNT_LIMIT_EXCEEDED: 5109;
};

/** The WebSocket subprotocol offered: "hummer.v1.protobuf". */
export declare const SUBPROTOCOL: "hummer.v1.protobuf";
/** The wire protocol version sent in every login: 2. */
export declare const PROTOCOL_VERSION: 2;

/** A WebSocket constructor (the browser's, or e.g. the `ws` package's in Node). */
export interface WebSocketConstructor {
  new (url: string, protocols?: string | string[]): any;
}

export interface CreateHummerOptions {
  appid: number;
  /**
   * The server's URL, or several servers of one service to fail over between
   * (a non-empty list, else createHummer throws a TypeError): dialed in order
   * from the one that last worked; a failed dial moves to the next at once,
   * a lost link moves to the next (the reconnect and its resume go there);
   * only after every URL failed once does the reconnect backoff apply.
   * Default in a browser: ws(s)://<location.host>/v1/ws after location.protocol. Required in Node.
   */
  url?: string | string[];
  /** Used when given; else globalThis.WebSocket (Node 20 has none: pass `ws`). */
  WebSocket?: WebSocketConstructor;
  /** Reply timeout of ordinary requests, ms (default 5000). */
  requestTimeout?: number;
  /** Reply timeout of sends, ms (default 10000). */
  sendTimeout?: number;
  /** Login reply timeout, ms (default 12000). */
  loginTimeout?: number;
  /** Delay before a cumulative P2P ack, ms (default 50). */
  ackDelay?: number;
  /** Reconnect backoff: first delay, ms (default 250), doubling up to reconnectMaxDelay (default 30000), with jitter. */
  reconnectMinDelay?: number;
  reconnectMaxDelay?: number;
}

export type Handler<T> = (data: T) => void;

declare class EventSource<Events> {
  on<K extends keyof Events>(name: K, fn: Handler<Events[K]>): this;
  /** Without fn: removes every handler of the event. */
  off<K extends keyof Events>(name: K, fn?: Handler<Events[K]>): this;
  once<K extends keyof Events>(name: K, fn: Handler<Events[K]>): this;
}

export interface HummerEvents {
  /** Every state change (see README for the transitions). */
  ConnectionStateChanged: { state: ConnectionStateName; reason: ConnectionReasonName };
  /** A re-login after a lost link was refused as expired: call refreshToken({token}) to continue. */
  TokenExpired: { rescode: 2003; msg: string };
  /** The server warns, 30 s before the token's expiry (at once if less is left). */
  TokenWillExpire: { tokenExpiresAt: number; serverTime: number };
}

export interface LoginResult extends Result {
  instanceId?: string;
  isAnonymous?: boolean;
  /** 0 when the login carries no expiring token. */
  tokenExpiresAt?: number;
  serverTime?: number;
}

export interface InstanceInfo extends Result {
  appid?: number;
  uid?: Uid;
  instanceId?: string;
  isAnonymous?: boolean;
  /** "" when none was set. */
  region?: Region | "";
  channels?: { region: Region; channelId: string }[];
}

export declare class Hummer extends EventSource<HummerEvents> {
  static createHummer(options: CreateHummerOptions): Hummer;
  constructor(options: CreateHummerOptions);
  readonly appid: number;
  /** The server URL in use (or dialed next): one of `urls`. */
  readonly url: string | undefined;
  /** The servers given as `url` (one or several; empty when there is none). */
  readonly urls: readonly string[];
  /** The logged-in uid (between login and logout). */
  readonly uid: Uid | undefined;
  getConnectionState(): { state: ConnectionStateName; reason: ConnectionReasonName };
  /** token: omit (or "") for appid mode where the server allows it. */
  login(args: { uid: UidInput; token?: string; region?: Region }): Promise<LoginResult>;
  /** Acks what was delivered, logs out (the instance leaves its channels) and closes the link. */
  logout(): Promise<Result>;
  /** Replaces the token of the session and of every later re-login. */
  refreshToken(args: { token: string }): Promise<Result & { tokenExpiresAt?: number; serverTime?: number }>;
  setUserRegion(args: { region: Region }): Promise<Result>;
  getInstanceInfo(): Promise<InstanceInfo>;
  /** The messaging facade (one per Hummer). */
  createInstance(): Client;
}

export default Hummer;

/** A message as received. */
export interface ReceivedMessage {
  type: string;
  /** The content as a string when it is valid UTF-8, else the raw bytes. */
  content: string | Uint8Array;
  /** The content's raw bytes, always. */
  contentBytes: Uint8Array;
  appExtras: Record<string, string>;
  /** The server's acceptance time, unix ms. */
  timestamp: number;
  /** The message's number in its stream; "0" for unreliable messages. */
  seq: string;
}

/** Messages of a stream that will never be delivered (retention, or the stream's history lost). */
export interface GapEvent {
  /** The first lost number. */
  from: string;
  /** The last lost number, or null when unknown (the stream's epoch changed: everything after from - 1 is gone). */
  to: string | null;
}

export interface ClientEvents {
  MessageFromUser: { message: ReceivedMessage; fromUid: Uid };
  /** Reliable P2P messages lost (never for unreliable ones). */
  MessageFromUserGap: GapEvent;
}

export interface SendOptions {
  /** Default true: numbered, stored and replayed; exactly once. false: may be lost on a broken link. */
  reliable?: boolean;
}

export interface OutgoingMessage {
  type?: string;
  /** A string (sent as UTF-8) or bytes. type + content + appExtras: at most 32 KiB (else 2007). */
  content?: string | Uint8Array | ArrayBuffer;
  appExtras?: Record<string, string>;
  option?: SendOptions;
}

export interface SendResult extends Result {
  /** The server's acceptance time, unix ms. */
  timestamp?: number;
  /** P2P: whether an instance of the receiver was connected (else stored as an offline message). */
  deliveredOnline?: boolean;
  /** "0" for unreliable messages. */
  seq?: string;
}

export declare class Client extends EventSource<ClientEvents> {
  sendMessageToUser(args: OutgoingMessage & { receiver: UidInput }): Promise<SendResult>;
  /** 1 to 256 uids. */
  queryUsersOnlineStatus(args: { uids: UidInput[] }): Promise<Result & { onlineStatus?: Record<Uid, boolean> }>;
  /** A local handle, the same for the same region and id. Throws a TypeError on a bad region or id (1-64 bytes). */
  createChannel(args: { region: Region; channelId: string }): Channel;
}

export interface AttributeOptions {
  /** Whether the channel's members are notified of the change. Default: TRUE in this client. */
  enableNotification?: boolean;
}

export interface ChannelEvents {
  ChannelMessage: { message: ReceivedMessage; fromUid: Uid; timestamp: number };
  /** Reliable channel messages lost. */
  ChannelMessageGap: GapEvent & { region: Region; channelId: string };
  /** uids that joined (batched; this user's own uid is filtered out). */
  NotifyJoinChannel: { uids: Uid[] };
  NotifyLeaveChannel: { uids: Uid[] };
  NotifyUserCountChange: { count: number };
  NotifyUserAttributesSet: { uid: Uid; lastUpdateTs: number; attributes: Record<string, string> };
  NotifyUserAttributesAddOrUpdate: { uid: Uid; lastUpdateTs: number; attributes: Record<string, string> };
  /** attributes: the deleted keys (also as keys). */
  NotifyUserAttributesDelete: { uid: Uid; lastUpdateTs: number; keys: string[]; attributes: string[] };
  NotifyUserAttributesClear: { uid: Uid; lastUpdateTs: number; attributes: Record<string, never> };
  NotifyChannelAttributesSet: { lastUpdateUid: Uid; lastUpdateTs: number; attributes: Record<string, string> };
  NotifyChannelAttributesAddOrUpdate: { lastUpdateUid: Uid; lastUpdateTs: number; attributes: Record<string, string> };
  NotifyChannelAttributesDelete: { lastUpdateUid: Uid; lastUpdateTs: number; keys: string[]; attributes: string[] };
  NotifyChannelAttributesClear: { lastUpdateUid: Uid; lastUpdateTs: number; attributes: Record<string, never> };
  /**
   * This instance had been dropped from the channel (its link stayed down past
   * the server's grace period; the others saw it leave). The client re-joins by
   * itself: rejoined true (missed retained messages are replayed), or false
   * with the rejoin's rescode.
   */
  RoomMemberOffline: { rejoined: boolean; rescode?: number; msg?: string };
}

export interface UserListResult extends Result {
  appid?: number;
  channelId?: string;
  users?: Uid[];
}

export interface AttributesResult extends Result {
  appid?: number;
  channelId?: string;
  attributes?: Record<string, string>;
}

export declare class Channel extends EventSource<ChannelEvents> {
  readonly region: Region;
  readonly channelId: string;
  /** Whether this instance is a member, as far as the client knows. */
  readonly joined: boolean;

  joinChannel(args?: { extra?: Record<string, string> }): Promise<Result>;
  leaveChannel(args?: { extra?: Record<string, string> }): Promise<Result>;
  /** Broadcast to every member, the sender included. */
  sendMessageToChannel(args: OutgoingMessage): Promise<SendResult>;

  setUserAttributes(args: { attributes: Record<string, string>; options?: AttributeOptions }): Promise<Result>;
  setLocalUserAttributes(args: { attributes: Record<string, string>; options?: AttributeOptions }): Promise<Result>;
  deleteUserAttributesByKeys(args: { keys: string[]; options?: AttributeOptions }): Promise<Result>;
  deleteLocalUserAttributesByKeys(args: { keys: string[]; options?: AttributeOptions }): Promise<Result>;
  addOrUpdateLocalUserAttributes(args: { attributes: Record<string, string>; options?: AttributeOptions }): Promise<Result>;
  clearLocalUserAttributes(args?: { options?: AttributeOptions }): Promise<Result>;

  setChannelAttributes(args: { attributes: Record<string, string>; options?: AttributeOptions }): Promise<Result>;
  deleteChannelAttributesByKeys(args: { keys: string[]; options?: AttributeOptions }): Promise<Result>;
  addOrUpdateChannelAttributes(args: { attributes: Record<string, string>; options?: AttributeOptions }): Promise<Result>;
  clearChannelAttributes(args?: { options?: AttributeOptions }): Promise<Result>;

  getChannelUserList(): Promise<UserListResult>;
  getUserAttributes(args: { uid: UidInput }): Promise<AttributesResult & { uid?: Uid }>;
  /** Keys absent from the set are absent from the result. */
  getUserAttributesByKeys(args: { uid: UidInput; keys: string[] }): Promise<AttributesResult & { uid?: Uid }>;
  getChannelAttributes(): Promise<AttributesResult & { lastUpdateUid?: Uid; lastUpdateTs?: number }>;
  getChannelAttributesByKeys(args: { keys: string[] }): Promise<AttributesResult & { lastUpdateUid?: Uid; lastUpdateTs?: number }>;
  /** Member counts of 1-32 channels of this channel's region (0 for a channel nobody is in); no membership needed. */
  getChannelUserCount(args: { channelIds: string[] }): Promise<Result & { appid?: number; userCount?: Record<string, number> }>;
  /** Members whose attribute `key` equals `prop` (the SDK's spelling). */
  getChannelUserListByAtrribute(args: { key: string; prop: string }): Promise<UserListResult>;
  /** The correctly spelled alias. */
  getChannelUserListByAttribute(args: { key: string; prop: string }): Promise<UserListResult>;
}
