//! The messages between server nodes, and their codec.
//!
//! Several `hummer-server` nodes may serve one service: the *hub node* holds
//! the hub shards ([`Hub`](super::Hub)); each *gateway node* runs only
//! [`Gateway`](super::Gateway)s and relays over one link to the hub node. A
//! gateway node sends its gateways' [`ToHub`] messages, each with the shard
//! it is for; the hub node sends the [`ToGateway`] messages of the peer's
//! gateways. First the gateway node says [`NodeMessage::Hello`], and the hub
//! node answers [`NodeMessage::Welcome`] or [`NodeMessage::Refused`]; both
//! sides send [`NodeMessage::Ping`]s, and the hub node says when its store
//! cannot be written ([`NodeMessage::StoreDown`]). A gateway node relays the
//! server API calls it takes to the hub node ([`NodeMessage::ApiCall`]),
//! which answers each ([`NodeMessage::ApiAnswer`]).
//!
//! A node link is a byte stream of frames with the client wire's length
//! prefix: [`encode_node_message`] gives a frame with its prefix, a
//! [`FrameDecoder`](crate::wire::FrameDecoder) bounded by
//! [`MAX_NODE_FRAME`] splits the stream, and [`decode_node_message`] decodes
//! each frame. A frame is one protobuf message whose schema is the structs
//! of this module, written by hand like those of [`crate::wire`]. A client's
//! request travels as the client's own [`Frame`](wire::Frame), a frame for a
//! client as its bytes (encoded once by the hub, never re-encoded).
//!
//! Pure: no I/O, no clock.

use std::fmt;
use std::net::IpAddr;

use bytes::{Bytes, BytesMut};
use prost::Message as _;

use super::api::{ApiCall, ApiReply, KICK_CODE_MAX, KICK_CODE_MIN};
use super::conn::{CloseReason, ConnId};
use super::message::{GatewayId, ToGateway, ToHub, TokenGrant};
use super::shard::{ShardId, MAX_SHARDS};
use crate::error::{ErrorCode, ServiceError, WireError};
use crate::wire::{self, codec::put_length_prefix, LENGTH_PREFIX_LEN};

mod api;

/// Version of the node link protocol ([`NodeMessage::Hello`] carries it; the
/// hub node refuses a peer of another version). 3: server API calls cross
/// the link ([`NodeMessage::ApiCall`], [`NodeMessage::ApiAnswer`]). 4: the
/// hub node says when a replaying request is answered whole
/// ([`ToGateway::Answered`]).
pub const NODE_PROTOCOL: u32 = 4;

/// The largest node frame, prefix not counted (a broadcast may name many
/// links): 16 MiB. Give it to the link's
/// [`FrameDecoder`](crate::wire::FrameDecoder).
pub const MAX_NODE_FRAME: usize = 16 << 20;

/// A message on a link between two server nodes.
#[non_exhaustive]
pub enum NodeMessage {
    /// The first message of a gateway node: who it is, the cluster secret,
    /// and how many gateway ids it needs.
    Hello {
        /// The version of the node link protocol it speaks
        /// ([`NODE_PROTOCOL`]).
        protocol: u32,
        /// The gateway node's id (for logs).
        node: String,
        /// The cluster's shared secret (never shown by `Debug`).
        secret: String,
        /// How many gateways it runs.
        gateways: u16,
    },
    /// The hub node's answer to a [`NodeMessage::Hello`] it accepts.
    Welcome {
        /// The hub node's id (for logs).
        node: String,
        /// The first of the consecutive gateway ids the peer must use (one per
        /// gateway it asked for).
        first_gateway: GatewayId,
        /// How many hub shards the hub node has (1 to [`MAX_SHARDS`]): the
        /// peer's gateways route by them.
        shards: u16,
    },
    /// The hub node refuses the peer (a wrong secret or protocol, no gateway
    /// ids left); the link closes after it.
    Refused {
        /// Why, for the peer's logs.
        reason: String,
    },
    /// Liveness: each side sends one every interval; any message counts as
    /// a sign of life.
    Ping,
    /// A gateway's message for hub shard `shard`.
    Hub {
        /// The shard it is for (below [`MAX_SHARDS`]).
        shard: ShardId,
        /// The message.
        message: ToHub,
    },
    /// The hub's message for a gateway of the peer.
    Gateway(ToGateway),
    /// The hub node's store cannot be written (`down`), or can again: the
    /// peer's gateways refuse requests meanwhile, as the hub node's own do
    /// ([`Gateway::set_refusing`](super::Gateway::set_refusing)). Sent
    /// after the welcome when it is down, then at each change.
    StoreDown {
        /// Whether it is down now.
        down: bool,
    },
    /// A gateway node's server API call: one shard's part of it (as
    /// [`ApiCall::split`] made it), for hub shard `shard`. The hub node
    /// answers it with a [`NodeMessage::ApiAnswer`] of the same `id`.
    ApiCall {
        /// The gateway node's id of the call (the answer's).
        id: u64,
        /// The shard it is for (below [`MAX_SHARDS`]).
        shard: ShardId,
        /// The part.
        call: ApiCall,
    },
    /// The hub node's answer to the [`NodeMessage::ApiCall`] `id`.
    ApiAnswer {
        /// The call's id.
        id: u64,
        /// The shard's answer, as to a call of its own node.
        answer: Result<ApiReply, ServiceError>,
    },
}

impl fmt::Debug for NodeMessage {
    /// As derived, except that a hello's secret shows as `<redacted>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NodeMessage::Hello {
                protocol,
                node,
                secret: _,
                gateways,
            } => f
                .debug_struct("Hello")
                .field("protocol", protocol)
                .field("node", node)
                .field("secret", &format_args!("<redacted>"))
                .field("gateways", gateways)
                .finish(),
            NodeMessage::Welcome {
                node,
                first_gateway,
                shards,
            } => f
                .debug_struct("Welcome")
                .field("node", node)
                .field("first_gateway", first_gateway)
                .field("shards", shards)
                .finish(),
            NodeMessage::Refused { reason } => {
                f.debug_struct("Refused").field("reason", reason).finish()
            }
            NodeMessage::Ping => f.write_str("Ping"),
            NodeMessage::Hub { shard, message } => f
                .debug_struct("Hub")
                .field("shard", shard)
                .field("message", message)
                .finish(),
            NodeMessage::Gateway(m) => f.debug_tuple("Gateway").field(m).finish(),
            NodeMessage::StoreDown { down } => {
                f.debug_struct("StoreDown").field("down", down).finish()
            }
            NodeMessage::ApiCall { id, shard, call } => f
                .debug_struct("ApiCall")
                .field("id", id)
                .field("shard", shard)
                .field("call", call)
                .finish(),
            NodeMessage::ApiAnswer { id, answer } => f
                .debug_struct("ApiAnswer")
                .field("id", id)
                .field("answer", answer)
                .finish(),
        }
    }
}

/// The frame for `m`, with the same length prefix as client frames on byte
/// streams (so a [`FrameDecoder`](crate::wire::FrameDecoder) of
/// [`MAX_NODE_FRAME`] splits a node link's stream), in one buffer of the
/// exact size. `m` is not consumed: its strings and a request's body are
/// cloned on the way (a client frame in `m` only shares its buffer), and
/// every byte is copied into the frame once.
///
/// The caller keeps `m` within [`MAX_NODE_FRAME`] (a longer frame is
/// encoded all the same, and refused by the peer's decoder).
///
/// ```
/// use hummer_channel::server::{
///     decode_node_message, encode_node_message, ConnId, NodeMessage, ShardId, ToHub,
///     MAX_NODE_FRAME,
/// };
/// use hummer_channel::wire::FrameDecoder;
///
/// let ack = NodeMessage::Hub {
///     shard: ShardId(3),
///     message: ToHub::Ack { conn: ConnId(7), seq: 42 },
/// };
/// let stream = encode_node_message(&ack);
///
/// let mut decoder = FrameDecoder::new(MAX_NODE_FRAME);
/// decoder.extend(&stream);
/// let frame = decoder.next_frame().unwrap().unwrap();
/// let NodeMessage::Hub { shard, message: ToHub::Ack { conn, seq } } =
///     decode_node_message(frame).unwrap()
/// else {
///     panic!("not an ack")
/// };
/// assert_eq!((shard, conn, seq), (ShardId(3), ConnId(7), 42));
/// ```
pub fn encode_node_message(m: &NodeMessage) -> Bytes {
    let mut buf = BytesMut::new();
    put_node_message(m, &mut buf);
    buf.freeze()
}

/// [`encode_node_message`], appended to `buf` (a link's queue of frames:
/// no frame of its own to copy).
pub fn put_node_message(m: &NodeMessage, buf: &mut BytesMut) {
    let frame = NodeFrame {
        kind: Some(kind_to_wire(m)),
    };
    let len = frame.encoded_len();
    buf.reserve(LENGTH_PREFIX_LEN + len);
    put_length_prefix(len, buf);
    // Cannot fail: the buffer has the capacity it needs.
    frame.encode_raw(buf);
}

/// Decodes one node frame (its bytes without the length prefix, as a
/// [`FrameDecoder`](crate::wire::FrameDecoder) returns them). Never panics:
/// every malformed input is a [`WireError`] (an empty or oversized frame,
/// bytes that do not decode, a missing or unknown variant, a field out of
/// its range). Frames for clients in the result share `frame`'s buffer.
pub fn decode_node_message(frame: Bytes) -> Result<NodeMessage, WireError> {
    if frame.is_empty() {
        return Err(WireError::EmptyFrame);
    }
    if frame.len() > MAX_NODE_FRAME {
        return Err(WireError::FrameTooLarge {
            len: frame.len(),
            max: MAX_NODE_FRAME,
        });
    }
    let kind = NodeFrame::decode(frame)?
        .kind
        .ok_or(WireError::MissingBody)?;
    Ok(match kind {
        Kind::Hello(h) => NodeMessage::Hello {
            protocol: h.protocol,
            node: h.node,
            secret: h.secret,
            gateways: u16::try_from(h.gateways)
                .map_err(|_| invalid("hello.gateways", "above 65535"))?,
        },
        Kind::Welcome(w) => NodeMessage::Welcome {
            node: w.node,
            first_gateway: GatewayId(
                u16::try_from(w.first_gateway)
                    .map_err(|_| invalid("welcome.first_gateway", "above 65535"))?,
            ),
            shards: match u16::try_from(w.shards) {
                Ok(n) if (1..=MAX_SHARDS).contains(&n) => n,
                _ => return Err(invalid("welcome.shards", "not 1 to MAX_SHARDS")),
            },
        },
        Kind::Refused(r) => NodeMessage::Refused { reason: r.reason },
        Kind::Ping(wire::Empty {}) => NodeMessage::Ping,
        Kind::Hub(h) => {
            let shard = u16::try_from(h.shard)
                .ok()
                .filter(|&s| s < MAX_SHARDS)
                .ok_or(invalid("hub.shard", "not below MAX_SHARDS"))?;
            let message = h
                .message
                .ok_or(invalid("hub.message", "missing or unknown"))?;
            NodeMessage::Hub {
                shard: ShardId(shard),
                message: to_hub_from_wire(message)?,
            }
        }
        Kind::Gateway(g) => {
            let message = g
                .message
                .ok_or(invalid("gateway.message", "missing or unknown"))?;
            NodeMessage::Gateway(to_gateway_from_wire(message)?)
        }
        Kind::StoreDown(d) => NodeMessage::StoreDown { down: d.down },
        Kind::ApiCall(c) => NodeMessage::ApiCall {
            id: c.id,
            shard: ShardId(
                u16::try_from(c.shard)
                    .ok()
                    .filter(|&s| s < MAX_SHARDS)
                    .ok_or(invalid("api_call.shard", "not below MAX_SHARDS"))?,
            ),
            call: api::request_from_wire(c.appid, c.request)?,
        },
        Kind::ApiAnswer(a) => NodeMessage::ApiAnswer {
            id: a.id,
            answer: api::answer_from_wire(a.answer)?,
        },
    })
}

fn invalid(field: &'static str, reason: &'static str) -> WireError {
    WireError::InvalidField { field, reason }
}

// ---- The schema ----
//
// Field numbers are the protocol: never reuse one. `Hello.protocol` stays
// field 1 of variant 1 in every version, so a hub node can read the version
// of any peer and refuse it.

/// A node frame.
#[derive(Clone, PartialEq, prost::Message)]
struct NodeFrame {
    #[prost(oneof = "Kind", tags = "1, 2, 3, 4, 5, 6, 7, 8, 9")]
    kind: Option<Kind>,
}

/// The variants of [`NodeMessage`].
#[derive(Clone, PartialEq, prost::Oneof)]
enum Kind {
    #[prost(message, tag = "1")]
    Hello(HelloMsg),
    #[prost(message, tag = "2")]
    Welcome(WelcomeMsg),
    #[prost(message, tag = "3")]
    Refused(RefusedMsg),
    #[prost(message, tag = "4")]
    Ping(wire::Empty),
    #[prost(message, tag = "5")]
    Hub(HubMsg),
    #[prost(message, tag = "6")]
    Gateway(GatewayMsg),
    #[prost(message, tag = "7")]
    StoreDown(StoreDownMsg),
    #[prost(message, tag = "8")]
    ApiCall(api::ApiCallMsg),
    #[prost(message, tag = "9")]
    ApiAnswer(api::ApiAnswerMsg),
}

#[derive(Clone, PartialEq, prost::Message)]
struct HelloMsg {
    #[prost(uint32, tag = "1")]
    protocol: u32,
    #[prost(string, tag = "2")]
    node: String,
    #[prost(string, tag = "3")]
    secret: String,
    /// A `u16`.
    #[prost(uint32, tag = "4")]
    gateways: u32,
}

#[derive(Clone, PartialEq, prost::Message)]
struct WelcomeMsg {
    #[prost(string, tag = "1")]
    node: String,
    /// A `u16`.
    #[prost(uint32, tag = "2")]
    first_gateway: u32,
    /// 1 to `MAX_SHARDS`.
    #[prost(uint32, tag = "3")]
    shards: u32,
}

#[derive(Clone, PartialEq, prost::Message)]
struct RefusedMsg {
    #[prost(string, tag = "1")]
    reason: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct StoreDownMsg {
    #[prost(bool, tag = "1")]
    down: bool,
}

/// A [`ToHub`] and its shard.
#[derive(Clone, PartialEq, prost::Message)]
struct HubMsg {
    /// Below [`MAX_SHARDS`].
    #[prost(uint32, tag = "1")]
    shard: u32,
    #[prost(oneof = "ToHubKind", tags = "2, 3, 4, 5")]
    message: Option<ToHubKind>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
enum ToHubKind {
    #[prost(message, tag = "2")]
    Login(LoginMsg),
    #[prost(message, tag = "3")]
    Request(RequestMsg),
    #[prost(message, tag = "4")]
    Ack(AckMsg),
    #[prost(message, tag = "5")]
    LinkLost(LinkLostMsg),
}

/// [`ToHub::Login`].
#[derive(Clone, PartialEq, prost::Message)]
struct LoginMsg {
    #[prost(uint64, tag = "1")]
    conn: u64,
    #[prost(uint64, tag = "2")]
    request_id: u64,
    /// Required.
    #[prost(message, optional, tag = "3")]
    request: Option<wire::LoginRequest>,
    /// Required: the token check's outcome.
    #[prost(oneof = "TokenKind", tags = "4, 5")]
    token: Option<TokenKind>,
    /// The peer's address: 4 bytes (IPv4) or 16 (IPv6).
    #[prost(bytes = "bytes", optional, tag = "6")]
    peer: Option<Bytes>,
    #[prost(uint64, tag = "7")]
    queued: u64,
}

/// A [`TokenCheck`](super::TokenCheck).
#[derive(Clone, PartialEq, prost::Oneof)]
enum TokenKind {
    #[prost(message, tag = "4")]
    Grant(GrantMsg),
    /// The [`ServiceError`]: its code and message.
    #[prost(message, tag = "5")]
    Error(wire::ErrorReply),
}

/// A [`TokenGrant`].
#[derive(Clone, PartialEq, prost::Message)]
struct GrantMsg {
    #[prost(bool, tag = "1")]
    is_anonymous: bool,
    #[prost(uint64, optional, tag = "2")]
    expires_at_s: Option<u64>,
}

/// [`ToHub::Request`].
#[derive(Clone, PartialEq, prost::Message)]
struct RequestMsg {
    #[prost(uint64, tag = "1")]
    conn: u64,
    /// Required, with a body: the request as the client framed it.
    #[prost(message, optional, tag = "2")]
    frame: Option<wire::Frame>,
    #[prost(uint64, tag = "3")]
    queued: u64,
}

/// [`ToHub::Ack`].
#[derive(Clone, PartialEq, prost::Message)]
struct AckMsg {
    #[prost(uint64, tag = "1")]
    conn: u64,
    #[prost(uint64, tag = "2")]
    seq: u64,
}

/// [`ToHub::LinkLost`].
#[derive(Clone, PartialEq, prost::Message)]
struct LinkLostMsg {
    #[prost(uint64, tag = "1")]
    conn: u64,
}

/// A [`ToGateway`].
#[derive(Clone, PartialEq, prost::Message)]
struct GatewayMsg {
    #[prost(oneof = "ToGatewayKind", tags = "1, 2, 3, 4, 5")]
    message: Option<ToGatewayKind>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
enum ToGatewayKind {
    #[prost(message, tag = "1")]
    Send(SendMsg),
    #[prost(message, tag = "2")]
    Broadcast(BroadcastMsg),
    #[prost(message, tag = "3")]
    LoggedIn(LoggedInMsg),
    #[prost(message, tag = "4")]
    Close(CloseMsg),
    #[prost(message, tag = "5")]
    Answered(AnsweredMsg),
}

/// [`ToGateway::Answered`].
#[derive(Clone, PartialEq, prost::Message)]
struct AnsweredMsg {
    #[prost(uint64, tag = "1")]
    conn: u64,
    #[prost(uint64, tag = "2")]
    request_id: u64,
}

/// [`ToGateway::Send`].
#[derive(Clone, PartialEq, prost::Message)]
struct SendMsg {
    #[prost(uint64, tag = "1")]
    conn: u64,
    #[prost(bytes = "bytes", tag = "2")]
    frame: Bytes,
}

/// [`ToGateway::Broadcast`].
#[derive(Clone, PartialEq, prost::Message)]
struct BroadcastMsg {
    /// Packed.
    #[prost(uint64, repeated, tag = "1")]
    conns: Vec<u64>,
    #[prost(bytes = "bytes", tag = "2")]
    frame: Bytes,
}

/// [`ToGateway::LoggedIn`].
#[derive(Clone, PartialEq, prost::Message)]
struct LoggedInMsg {
    #[prost(uint64, tag = "1")]
    conn: u64,
    #[prost(uint64, optional, tag = "2")]
    uid: Option<u64>,
}

/// [`ToGateway::Close`].
#[derive(Clone, PartialEq, prost::Message)]
struct CloseMsg {
    #[prost(uint64, tag = "1")]
    conn: u64,
    /// One of the `CLOSE_*` kinds (0 is none).
    #[prost(uint32, tag = "2")]
    kind: u32,
    /// [`CloseReason::KickedByService`]'s code (0 for the others).
    #[prost(uint32, tag = "3")]
    code: u32,
    /// [`CloseReason::KickedByService`]'s reason (empty for the others).
    #[prost(string, tag = "4")]
    reason: String,
}

const CLOSE_KICKED: u32 = 1;
const CLOSE_SLOW_CONSUMER: u32 = 2;
const CLOSE_PROTOCOL_ERROR: u32 = 3;
const CLOSE_UNSUPPORTED_VERSION: u32 = 4;
const CLOSE_IDLE_TIMEOUT: u32 = 5;
const CLOSE_LOGIN_TIMEOUT: u32 = 6;
const CLOSE_REPLACED: u32 = 7;
const CLOSE_SHUTDOWN: u32 = 8;
const CLOSE_NOT_LOGGED_IN: u32 = 9;
const CLOSE_TOKEN_EXPIRED: u32 = 10;
const CLOSE_CLOSED_BY_PEER: u32 = 11;
const CLOSE_KICKED_BY_SERVICE: u32 = 12;

/// What a relayed [`CloseReason::ProtocolError`] decodes to: its
/// [`WireError`] holds `&'static str`s and prost errors, which cannot cross
/// a link faithfully. (The hub never closes a link for a protocol error:
/// the gateway does, and it is on the same node as the link.)
const RELAYED_PROTOCOL_ERROR: WireError = WireError::Unexpected("protocol error relayed by a node");

// ---- Encoding ----

fn kind_to_wire(m: &NodeMessage) -> Kind {
    match m {
        NodeMessage::Hello {
            protocol,
            node,
            secret,
            gateways,
        } => Kind::Hello(HelloMsg {
            protocol: *protocol,
            node: node.clone(),
            secret: secret.clone(),
            gateways: u32::from(*gateways),
        }),
        NodeMessage::Welcome {
            node,
            first_gateway,
            shards,
        } => Kind::Welcome(WelcomeMsg {
            node: node.clone(),
            first_gateway: u32::from(first_gateway.0),
            shards: u32::from(*shards),
        }),
        NodeMessage::Refused { reason } => Kind::Refused(RefusedMsg {
            reason: reason.clone(),
        }),
        NodeMessage::Ping => Kind::Ping(wire::Empty {}),
        NodeMessage::Hub { shard, message } => Kind::Hub(HubMsg {
            shard: u32::from(shard.0),
            message: Some(to_hub_to_wire(message)),
        }),
        NodeMessage::Gateway(m) => Kind::Gateway(GatewayMsg {
            message: Some(to_gateway_to_wire(m)),
        }),
        NodeMessage::StoreDown { down } => Kind::StoreDown(StoreDownMsg { down: *down }),
        NodeMessage::ApiCall { id, shard, call } => {
            let (appid, request) = api::request_to_wire(call);
            Kind::ApiCall(api::ApiCallMsg {
                id: *id,
                shard: u32::from(shard.0),
                appid,
                request: Some(request),
            })
        }
        NodeMessage::ApiAnswer { id, answer } => Kind::ApiAnswer(api::ApiAnswerMsg {
            id: *id,
            answer: Some(api::answer_to_wire(answer)),
        }),
    }
}

fn to_hub_to_wire(m: &ToHub) -> ToHubKind {
    match m {
        ToHub::Login {
            conn,
            request_id,
            request,
            token,
            peer,
            queued,
        } => ToHubKind::Login(LoginMsg {
            conn: conn.0,
            request_id: *request_id,
            request: Some(request.clone()),
            token: Some(match token {
                Ok(grant) => TokenKind::Grant(GrantMsg {
                    is_anonymous: grant.is_anonymous,
                    expires_at_s: grant.expires_at_s,
                }),
                Err(e) => TokenKind::Error(wire::ErrorReply {
                    code: e.code.code(),
                    message: e.message.clone(),
                }),
            }),
            peer: peer.map(|ip| match ip {
                IpAddr::V4(a) => Bytes::copy_from_slice(&a.octets()),
                IpAddr::V6(a) => Bytes::copy_from_slice(&a.octets()),
            }),
            queued: queued_to_wire(*queued),
        }),
        ToHub::Request {
            conn,
            request_id,
            body,
            queued,
        } => ToHubKind::Request(RequestMsg {
            conn: conn.0,
            frame: Some(wire::Frame {
                request_id: *request_id,
                body: Some(body.clone()),
            }),
            queued: queued_to_wire(*queued),
        }),
        ToHub::Ack { conn, seq } => ToHubKind::Ack(AckMsg {
            conn: conn.0,
            seq: *seq,
        }),
        ToHub::LinkLost { conn } => ToHubKind::LinkLost(LinkLostMsg { conn: conn.0 }),
    }
}

fn queued_to_wire(queued: usize) -> u64 {
    u64::try_from(queued).unwrap_or(u64::MAX)
}

fn to_gateway_to_wire(m: &ToGateway) -> ToGatewayKind {
    match m {
        ToGateway::Send { conn, frame } => ToGatewayKind::Send(SendMsg {
            conn: conn.0,
            frame: frame.clone(),
        }),
        ToGateway::Broadcast { conns, frame } => ToGatewayKind::Broadcast(BroadcastMsg {
            conns: conns.iter().map(|c| c.0).collect(),
            frame: frame.clone(),
        }),
        ToGateway::LoggedIn { conn, uid } => ToGatewayKind::LoggedIn(LoggedInMsg {
            conn: conn.0,
            uid: *uid,
        }),
        ToGateway::Close { conn, reason } => {
            let (kind, code, reason) = close_to_wire(reason);
            ToGatewayKind::Close(CloseMsg {
                conn: conn.0,
                kind,
                code,
                reason,
            })
        }
        ToGateway::Answered { conn, request_id } => ToGatewayKind::Answered(AnsweredMsg {
            conn: conn.0,
            request_id: *request_id,
        }),
    }
}

/// A close reason as (kind, code, reason).
fn close_to_wire(reason: &CloseReason) -> (u32, u32, String) {
    let kind = match reason {
        CloseReason::Kicked => CLOSE_KICKED,
        CloseReason::SlowConsumer => CLOSE_SLOW_CONSUMER,
        // Its WireError stays behind (see RELAYED_PROTOCOL_ERROR).
        CloseReason::ProtocolError(_) => CLOSE_PROTOCOL_ERROR,
        CloseReason::UnsupportedVersion => CLOSE_UNSUPPORTED_VERSION,
        CloseReason::IdleTimeout => CLOSE_IDLE_TIMEOUT,
        CloseReason::LoginTimeout => CLOSE_LOGIN_TIMEOUT,
        CloseReason::Replaced => CLOSE_REPLACED,
        CloseReason::Shutdown => CLOSE_SHUTDOWN,
        CloseReason::NotLoggedIn => CLOSE_NOT_LOGGED_IN,
        CloseReason::TokenExpired => CLOSE_TOKEN_EXPIRED,
        CloseReason::ClosedByPeer => CLOSE_CLOSED_BY_PEER,
        CloseReason::KickedByService { code, reason } => {
            return (CLOSE_KICKED_BY_SERVICE, *code, reason.clone())
        }
    };
    (kind, 0, String::new())
}

// ---- Decoding ----

fn to_hub_from_wire(m: ToHubKind) -> Result<ToHub, WireError> {
    Ok(match m {
        ToHubKind::Login(l) => ToHub::Login {
            conn: ConnId(l.conn),
            request_id: l.request_id,
            request: l.request.ok_or(invalid("login.request", "missing"))?,
            token: match l
                .token
                .ok_or(invalid("login.token", "missing or unknown"))?
            {
                TokenKind::Grant(g) => Ok(TokenGrant {
                    is_anonymous: g.is_anonymous,
                    expires_at_s: g.expires_at_s,
                }),
                TokenKind::Error(e) => Err(ServiceError::new(ErrorCode::new(e.code), e.message)),
            },
            peer: l.peer.map(peer_from_wire).transpose()?,
            queued: queued_from_wire(l.queued),
        },
        ToHubKind::Request(r) => {
            let frame = r.frame.ok_or(invalid("request.frame", "missing"))?;
            ToHub::Request {
                conn: ConnId(r.conn),
                request_id: frame.request_id,
                body: frame
                    .body
                    .ok_or(invalid("request.frame.body", "missing or unknown"))?,
                queued: queued_from_wire(r.queued),
            }
        }
        ToHubKind::Ack(a) => ToHub::Ack {
            conn: ConnId(a.conn),
            seq: a.seq,
        },
        ToHubKind::LinkLost(l) => ToHub::LinkLost {
            conn: ConnId(l.conn),
        },
    })
}

/// A count of bytes, saturating where `usize` is narrower than 64 bits.
fn queued_from_wire(queued: u64) -> usize {
    usize::try_from(queued).unwrap_or(usize::MAX)
}

fn peer_from_wire(peer: Bytes) -> Result<IpAddr, WireError> {
    if let Ok(v4) = <[u8; 4]>::try_from(&peer[..]) {
        return Ok(IpAddr::from(v4));
    }
    <[u8; 16]>::try_from(&peer[..])
        .map(IpAddr::from)
        .map_err(|_| invalid("login.peer", "neither 4 nor 16 bytes"))
}

fn to_gateway_from_wire(m: ToGatewayKind) -> Result<ToGateway, WireError> {
    Ok(match m {
        ToGatewayKind::Send(s) => ToGateway::Send {
            conn: ConnId(s.conn),
            frame: s.frame,
        },
        ToGatewayKind::Broadcast(b) => ToGateway::Broadcast {
            conns: b.conns.into_iter().map(ConnId).collect(),
            frame: b.frame,
        },
        ToGatewayKind::LoggedIn(l) => ToGateway::LoggedIn {
            conn: ConnId(l.conn),
            uid: l.uid,
        },
        ToGatewayKind::Close(c) => ToGateway::Close {
            conn: ConnId(c.conn),
            reason: close_from_wire(c.kind, c.code, c.reason)?,
        },
        ToGatewayKind::Answered(a) => ToGateway::Answered {
            conn: ConnId(a.conn),
            request_id: a.request_id,
        },
    })
}

/// The close reason of (kind, code, reason); `code` and `reason` are
/// ignored but for [`CloseReason::KickedByService`].
fn close_from_wire(kind: u32, code: u32, reason: String) -> Result<CloseReason, WireError> {
    Ok(match kind {
        CLOSE_KICKED => CloseReason::Kicked,
        CLOSE_SLOW_CONSUMER => CloseReason::SlowConsumer,
        CLOSE_PROTOCOL_ERROR => CloseReason::ProtocolError(RELAYED_PROTOCOL_ERROR),
        CLOSE_UNSUPPORTED_VERSION => CloseReason::UnsupportedVersion,
        CLOSE_IDLE_TIMEOUT => CloseReason::IdleTimeout,
        CLOSE_LOGIN_TIMEOUT => CloseReason::LoginTimeout,
        CLOSE_REPLACED => CloseReason::Replaced,
        CLOSE_SHUTDOWN => CloseReason::Shutdown,
        CLOSE_NOT_LOGGED_IN => CloseReason::NotLoggedIn,
        CLOSE_TOKEN_EXPIRED => CloseReason::TokenExpired,
        CLOSE_CLOSED_BY_PEER => CloseReason::ClosedByPeer,
        CLOSE_KICKED_BY_SERVICE if (KICK_CODE_MIN..=KICK_CODE_MAX).contains(&code) => {
            CloseReason::KickedByService { code, reason }
        }
        CLOSE_KICKED_BY_SERVICE => {
            return Err(invalid("close.code", "a kick's code is not in 4100..=4199"))
        }
        _ => return Err(invalid("close.kind", "unknown")),
    })
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;
    use crate::wire::{write_length_prefixed, FrameDecoder};

    /// `m` encoded, its prefix checked and stripped.
    fn body_of(m: &NodeMessage) -> Bytes {
        let mut framed = encode_node_message(m);
        assert!(framed.len() > LENGTH_PREFIX_LEN);
        let body = framed.split_off(LENGTH_PREFIX_LEN);
        let mut again = BytesMut::new();
        write_length_prefixed(&body, &mut again);
        assert_eq!(
            &again[..LENGTH_PREFIX_LEN],
            &framed[..],
            "the client prefix"
        );
        body
    }

    /// `m` through the codec: the decoded message, which must show as `m`.
    fn round_trip(m: NodeMessage) -> NodeMessage {
        let back = decode_node_message(body_of(&m)).unwrap();
        assert_eq!(format!("{back:?}"), format!("{m:?}"));
        back
    }

    /// The bytes of a hand-made node frame (no prefix).
    fn raw(kind: Kind) -> Bytes {
        NodeFrame { kind: Some(kind) }.encode_to_vec().into()
    }

    fn hub_raw(shard: u32, message: ToHubKind) -> Bytes {
        raw(Kind::Hub(HubMsg {
            shard,
            message: Some(message),
        }))
    }

    fn login_msg() -> LoginMsg {
        LoginMsg {
            conn: 1,
            request_id: 2,
            request: Some(wire::LoginRequest::default()),
            token: Some(TokenKind::Grant(GrantMsg {
                is_anonymous: true,
                expires_at_s: None,
            })),
            peer: None,
            queued: 3,
        }
    }

    fn close_raw(kind: u32, code: u32) -> Bytes {
        raw(Kind::Gateway(GatewayMsg {
            message: Some(ToGatewayKind::Close(CloseMsg {
                conn: 1,
                kind,
                code,
                reason: "r".into(),
            })),
        }))
    }

    fn err(bytes: Bytes) -> WireError {
        decode_node_message(bytes).unwrap_err()
    }

    fn invalid_field(bytes: Bytes) -> &'static str {
        match err(bytes) {
            WireError::InvalidField { field, .. } => field,
            other => panic!("not an invalid field: {other:?}"),
        }
    }

    fn login(conn: u64, token: crate::server::TokenCheck, peer: Option<IpAddr>) -> NodeMessage {
        NodeMessage::Hub {
            shard: ShardId(MAX_SHARDS - 1),
            message: ToHub::Login {
                conn: ConnId(conn),
                request_id: conn.wrapping_add(1),
                request: wire::LoginRequest {
                    protocol_version: u32::MAX,
                    appid: 7,
                    uid: u64::MAX,
                    token: "tok".into(),
                    region: 3,
                    resume: Some(wire::Resume {
                        p2p_epoch: 1,
                        instance_id: u64::MAX,
                        p2p_seq: 0,
                        channels: vec![wire::ChannelCursor {
                            channel: Some(wire::ChannelKey {
                                region: 1,
                                channel_id: "c".into(),
                            }),
                            epoch: 2,
                            seq: 3,
                        }],
                    }),
                },
                token,
                peer,
                queued: usize::MAX,
            },
        }
    }

    /// Every variant, with field values at their edges.
    fn samples() -> Vec<NodeMessage> {
        let grant = |is_anonymous, expires_at_s| {
            Ok(TokenGrant {
                is_anonymous,
                expires_at_s,
            })
        };
        let mut all = vec![
            NodeMessage::Hello {
                protocol: NODE_PROTOCOL,
                node: "gw-1".into(),
                secret: "s3cret".into(),
                gateways: u16::MAX,
            },
            NodeMessage::Hello {
                protocol: 0,
                node: String::new(),
                secret: String::new(),
                gateways: 0,
            },
            NodeMessage::Hello {
                protocol: u32::MAX,
                node: "é".into(),
                secret: "x".into(),
                gateways: 1,
            },
            NodeMessage::Welcome {
                node: "hub".into(),
                first_gateway: GatewayId(u16::MAX),
                shards: MAX_SHARDS,
            },
            NodeMessage::Welcome {
                node: String::new(),
                first_gateway: GatewayId(0),
                shards: 1,
            },
            NodeMessage::Refused {
                reason: "wrong secret".into(),
            },
            NodeMessage::Refused {
                reason: String::new(),
            },
            NodeMessage::Ping,
            NodeMessage::StoreDown { down: true },
            NodeMessage::StoreDown { down: false },
            login(0, grant(false, None), None),
            login(
                u64::MAX,
                grant(true, Some(0)),
                Some(Ipv4Addr::UNSPECIFIED.into()),
            ),
            login(
                5,
                grant(false, Some(u64::MAX)),
                Some(Ipv4Addr::BROADCAST.into()),
            ),
            login(
                6,
                Err(ServiceError::new(ErrorCode::new(0), "")),
                Some(Ipv6Addr::LOCALHOST.into()),
            ),
            login(
                7,
                Err(ServiceError::new(ErrorCode::new(u32::MAX), "bad token")),
                // An IPv4-mapped address stays an IPv6 one.
                Some(Ipv4Addr::new(1, 2, 3, 4).to_ipv6_mapped().into()),
            ),
            login(
                8,
                Err(ServiceError::new(ErrorCode::INVALID_TOKEN, "x")),
                Some(Ipv6Addr::from(u128::MAX).into()),
            ),
            NodeMessage::Hub {
                shard: ShardId(0),
                message: ToHub::Login {
                    conn: ConnId(0),
                    request_id: 0,
                    request: wire::LoginRequest::default(),
                    token: grant(false, None),
                    peer: None,
                    queued: 0,
                },
            },
            NodeMessage::Hub {
                shard: ShardId(1),
                message: ToHub::Request {
                    conn: ConnId(u64::MAX),
                    request_id: u64::MAX,
                    body: wire::Body::SendToChannel(wire::SendToChannelRequest {
                        channel: Some(wire::ChannelKey {
                            region: 2,
                            channel_id: "room".into(),
                        }),
                        message: Some(wire::ChatMessage {
                            r#type: "t".into(),
                            content: Bytes::from(vec![0xab; 300]),
                            app_extras: [("k".to_string(), "v".to_string())].into(),
                        }),
                        unreliable: true,
                        message_id: 9,
                    }),
                    queued: usize::MAX,
                },
            },
            NodeMessage::Hub {
                shard: ShardId(0),
                message: ToHub::Request {
                    conn: ConnId(0),
                    request_id: 0,
                    body: wire::Body::Logout(wire::Empty {}),
                    queued: 0,
                },
            },
            NodeMessage::Hub {
                shard: ShardId(2),
                message: ToHub::Ack {
                    conn: ConnId(u64::MAX),
                    seq: u64::MAX,
                },
            },
            NodeMessage::Hub {
                shard: ShardId(0),
                message: ToHub::Ack {
                    conn: ConnId(0),
                    seq: 0,
                },
            },
            NodeMessage::Hub {
                shard: ShardId(MAX_SHARDS - 1),
                message: ToHub::LinkLost {
                    conn: ConnId(u64::MAX),
                },
            },
            NodeMessage::Hub {
                shard: ShardId(0),
                message: ToHub::LinkLost { conn: ConnId(0) },
            },
            NodeMessage::Gateway(ToGateway::Send {
                conn: ConnId(u64::MAX),
                frame: Bytes::from_static(b"\x12\x02\x08\x07"),
            }),
            NodeMessage::Gateway(ToGateway::Send {
                conn: ConnId(0),
                frame: Bytes::new(),
            }),
            NodeMessage::Gateway(ToGateway::Broadcast {
                conns: Vec::new(),
                frame: Bytes::new(),
            }),
            NodeMessage::Gateway(ToGateway::Broadcast {
                conns: (0..10_000u64)
                    .map(|n| ConnId(n.wrapping_mul(0x9e37_79b9_7f4a_7c15)))
                    .chain([ConnId(0), ConnId(u64::MAX)])
                    .collect(),
                frame: Bytes::from(vec![1u8; 1000]),
            }),
            NodeMessage::Gateway(ToGateway::LoggedIn {
                conn: ConnId(3),
                uid: None,
            }),
            NodeMessage::Gateway(ToGateway::LoggedIn {
                conn: ConnId(0),
                uid: Some(0),
            }),
            NodeMessage::Gateway(ToGateway::LoggedIn {
                conn: ConnId(u64::MAX),
                uid: Some(u64::MAX),
            }),
            NodeMessage::Gateway(ToGateway::Answered {
                conn: ConnId(u64::MAX),
                request_id: u64::MAX,
            }),
            NodeMessage::Gateway(ToGateway::Answered {
                conn: ConnId(0),
                request_id: 7,
            }),
        ];
        all.extend(api::tests::samples());
        all.extend(close_reasons().into_iter().enumerate().map(|(n, reason)| {
            NodeMessage::Gateway(ToGateway::Close {
                conn: ConnId(n as u64),
                reason,
            })
        }));
        all
    }

    /// Every close reason that crosses a link as it is.
    fn close_reasons() -> Vec<CloseReason> {
        vec![
            CloseReason::Kicked,
            CloseReason::SlowConsumer,
            CloseReason::UnsupportedVersion,
            CloseReason::IdleTimeout,
            CloseReason::LoginTimeout,
            CloseReason::Replaced,
            CloseReason::Shutdown,
            CloseReason::NotLoggedIn,
            CloseReason::TokenExpired,
            CloseReason::ClosedByPeer,
            CloseReason::KickedByService {
                code: KICK_CODE_MIN,
                reason: String::new(),
            },
            CloseReason::KickedByService {
                code: KICK_CODE_MAX,
                reason: "banned".into(),
            },
            CloseReason::ProtocolError(RELAYED_PROTOCOL_ERROR),
        ]
    }

    #[test]
    fn every_variant_round_trips_at_its_edges() {
        for m in samples() {
            let back = round_trip(m);
            if let NodeMessage::Gateway(ToGateway::Close { reason, .. }) = &back {
                // The kind is what it says, not only what Debug shows.
                assert!(close_reasons().contains(reason));
            }
        }
        // The secret, which Debug does not show.
        let hello = NodeMessage::Hello {
            protocol: 1,
            node: "n".into(),
            secret: "s3cret".into(),
            gateways: 2,
        };
        let NodeMessage::Hello { secret, .. } = round_trip(hello) else {
            panic!("not a hello")
        };
        assert_eq!(secret, "s3cret");
    }

    #[test]
    fn a_protocol_error_crosses_as_a_fixed_one() {
        let close = NodeMessage::Gateway(ToGateway::Close {
            conn: ConnId(1),
            reason: CloseReason::ProtocolError(WireError::InvalidField {
                field: "f",
                reason: "r",
            }),
        });
        let NodeMessage::Gateway(ToGateway::Close { reason, .. }) =
            decode_node_message(body_of(&close)).unwrap()
        else {
            panic!("not a close")
        };
        assert_eq!(reason, CloseReason::ProtocolError(RELAYED_PROTOCOL_ERROR));
        assert_eq!(reason.code(), 2001);
    }

    #[test]
    fn debug_hides_the_secret() {
        let hello = NodeMessage::Hello {
            protocol: 1,
            node: "gw-1".into(),
            secret: "s3cret".into(),
            gateways: 2,
        };
        let shown = format!("{hello:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert_eq!(
            shown,
            r#"Hello { protocol: 1, node: "gw-1", secret: <redacted>, gateways: 2 }"#
        );
        assert_eq!(format!("{:?}", NodeMessage::Ping), "Ping");
        assert_eq!(
            format!(
                "{:?}",
                NodeMessage::Welcome {
                    node: "h".into(),
                    first_gateway: GatewayId(4),
                    shards: 3,
                }
            ),
            r#"Welcome { node: "h", first_gateway: GatewayId(4), shards: 3 }"#
        );
        assert_eq!(
            format!(
                "{:?}",
                NodeMessage::Refused {
                    reason: "no".into()
                }
            ),
            r#"Refused { reason: "no" }"#
        );
        assert_eq!(
            format!(
                "{:?}",
                NodeMessage::Hub {
                    shard: ShardId(1),
                    message: ToHub::LinkLost { conn: ConnId(2) }
                }
            ),
            "Hub { shard: ShardId(1), message: LinkLost { conn: ConnId(2) } }"
        );
        assert_eq!(
            format!(
                "{:?}",
                NodeMessage::Gateway(ToGateway::LoggedIn {
                    conn: ConnId(2),
                    uid: None
                })
            ),
            "Gateway(LoggedIn { conn: ConnId(2), uid: None })"
        );
    }

    #[test]
    fn truncated_frames_fail() {
        for m in samples() {
            let body = body_of(&m);
            for cut in 0..body.len() {
                assert!(
                    decode_node_message(body.slice(..cut)).is_err(),
                    "{m:?} cut at {cut}"
                );
            }
        }
    }

    #[test]
    fn empty_oversized_and_bodiless_frames_fail() {
        assert_eq!(err(Bytes::new()), WireError::EmptyFrame);
        assert!(matches!(
            err(Bytes::from_static(&[0xff; 3])),
            WireError::Malformed(_)
        ));
        assert_eq!(
            err(Bytes::from(vec![0u8; MAX_NODE_FRAME + 1])),
            WireError::FrameTooLarge {
                len: MAX_NODE_FRAME + 1,
                max: MAX_NODE_FRAME
            }
        );
        // No variant (an empty frame), or only ones this version does not
        // know (fields 10 and 999).
        assert!(NodeFrame { kind: None }.encode_to_vec().is_empty());
        assert_eq!(
            err(Bytes::from_static(&[0x52, 0x00])),
            WireError::MissingBody
        );
        assert_eq!(
            err(Bytes::from_static(&[0xb8, 0x3e, 0x01])),
            WireError::MissingBody
        );
    }

    #[test]
    fn a_frame_of_exactly_the_maximum_decodes() {
        let send = |n: usize| {
            NodeMessage::Gateway(ToGateway::Send {
                conn: ConnId(1),
                frame: Bytes::from(vec![7u8; n]),
            })
        };
        let over = body_of(&send(MAX_NODE_FRAME)).len() - MAX_NODE_FRAME;
        let mut n = MAX_NODE_FRAME - over;
        while body_of(&send(n)).len() > MAX_NODE_FRAME {
            n -= 1;
        }
        let body = body_of(&send(n));
        assert_eq!(body.len(), MAX_NODE_FRAME);
        let mut stream = FrameDecoder::new(MAX_NODE_FRAME);
        stream.extend(&encode_node_message(&send(n)));
        assert_eq!(stream.next_frame().unwrap(), Some(body.clone()));
        let Ok(NodeMessage::Gateway(ToGateway::Send { frame, .. })) = decode_node_message(body)
        else {
            panic!("not a send")
        };
        assert_eq!(frame.len(), n);
    }

    #[test]
    fn shards_past_the_maximum_fail() {
        let ack = || ToHubKind::Ack(AckMsg { conn: 1, seq: 2 });
        for shard in [u32::from(MAX_SHARDS), 1 << 16, u32::MAX] {
            assert_eq!(invalid_field(hub_raw(shard, ack())), "hub.shard");
        }
        let Ok(NodeMessage::Hub { shard, .. }) =
            decode_node_message(hub_raw(u32::from(MAX_SHARDS) - 1, ack()))
        else {
            panic!("the last shard refused")
        };
        assert_eq!(shard, ShardId(MAX_SHARDS - 1));
    }

    #[test]
    fn gateway_ids_past_u16_fail() {
        let hello = |gateways| {
            raw(Kind::Hello(HelloMsg {
                protocol: 1,
                node: "n".into(),
                secret: "s".into(),
                gateways,
            }))
        };
        assert_eq!(invalid_field(hello(1 << 16)), "hello.gateways");
        assert!(decode_node_message(hello(u32::from(u16::MAX))).is_ok());
        let welcome = |first_gateway, shards| {
            raw(Kind::Welcome(WelcomeMsg {
                node: "n".into(),
                first_gateway,
                shards,
            }))
        };
        assert_eq!(invalid_field(welcome(1 << 16, 1)), "welcome.first_gateway");
        assert!(decode_node_message(welcome(u32::from(u16::MAX), 1)).is_ok());
        // A hub node has 1 to MAX_SHARDS shards.
        for shards in [0, u32::from(MAX_SHARDS) + 1, 1 << 16] {
            assert_eq!(invalid_field(welcome(0, shards)), "welcome.shards");
        }
        assert!(decode_node_message(welcome(0, u32::from(MAX_SHARDS))).is_ok());
    }

    #[test]
    fn a_peer_of_another_length_fails() {
        for len in [0, 1, 3, 5, 15, 17, 32] {
            let bytes = hub_raw(
                0,
                ToHubKind::Login(LoginMsg {
                    peer: Some(Bytes::from(vec![1u8; len])),
                    ..login_msg()
                }),
            );
            assert_eq!(invalid_field(bytes), "login.peer", "{len} bytes");
        }
    }

    #[test]
    fn missing_parts_fail() {
        let hub = |m| hub_raw(0, m);
        assert_eq!(
            invalid_field(raw(Kind::Hub(HubMsg {
                shard: 0,
                message: None
            }))),
            "hub.message"
        );
        assert_eq!(
            invalid_field(raw(Kind::Gateway(GatewayMsg { message: None }))),
            "gateway.message"
        );
        assert_eq!(
            invalid_field(hub(ToHubKind::Login(LoginMsg {
                request: None,
                ..login_msg()
            }))),
            "login.request"
        );
        assert_eq!(
            invalid_field(hub(ToHubKind::Login(LoginMsg {
                token: None,
                ..login_msg()
            }))),
            "login.token"
        );
        assert_eq!(
            invalid_field(hub(ToHubKind::Request(RequestMsg {
                conn: 1,
                frame: None,
                queued: 0
            }))),
            "request.frame"
        );
        assert_eq!(
            invalid_field(hub(ToHubKind::Request(RequestMsg {
                conn: 1,
                frame: Some(wire::Frame {
                    request_id: 1,
                    body: None
                }),
                queued: 0
            }))),
            "request.frame.body"
        );
        assert!(decode_node_message(hub(ToHubKind::Login(login_msg()))).is_ok());
    }

    #[test]
    fn close_kinds_and_kick_codes_are_checked() {
        for kind in [0, CLOSE_KICKED_BY_SERVICE + 1, u32::MAX] {
            assert_eq!(invalid_field(close_raw(kind, 0)), "close.kind");
        }
        for code in [0, KICK_CODE_MIN - 1, KICK_CODE_MAX + 1, u32::MAX] {
            assert_eq!(
                invalid_field(close_raw(CLOSE_KICKED_BY_SERVICE, code)),
                "close.code"
            );
        }
        // Code and reason are ignored for the other kinds.
        let Ok(NodeMessage::Gateway(ToGateway::Close { reason, .. })) =
            decode_node_message(close_raw(CLOSE_KICKED, 4150))
        else {
            panic!("not a close")
        };
        assert_eq!(reason, CloseReason::Kicked);
    }

    #[test]
    fn a_stream_splits_back_into_its_messages_at_any_byte() {
        let messages: Vec<NodeMessage> = samples()
            .into_iter()
            // Keep the stream short: every cut decodes all of it.
            .filter(|m| body_of(m).len() < 2000)
            .collect();
        let mut stream = BytesMut::new();
        for m in &messages {
            stream.extend_from_slice(&encode_node_message(m));
        }
        let want: Vec<String> = messages.iter().map(|m| format!("{m:?}")).collect();
        let drain = |d: &mut FrameDecoder, got: &mut Vec<String>| {
            while let Some(f) = d.next_frame().unwrap() {
                got.push(format!("{:?}", decode_node_message(f).unwrap()));
            }
        };
        for cut in 0..=stream.len() {
            let mut d = FrameDecoder::new(MAX_NODE_FRAME);
            let mut got = Vec::new();
            for part in [&stream[..cut], &stream[cut..]] {
                d.extend(part);
                drain(&mut d, &mut got);
            }
            assert_eq!(got, want, "cut at {cut}");
            assert!(d.finish().is_ok());
        }
        // And a byte at a time.
        let mut d = FrameDecoder::new(MAX_NODE_FRAME);
        let mut got = Vec::new();
        for b in stream.iter() {
            d.extend(std::slice::from_ref(b));
            drain(&mut d, &mut got);
        }
        assert_eq!(got, want);
    }

    #[test]
    fn client_frames_share_the_input_buffer() {
        let send = NodeMessage::Gateway(ToGateway::Send {
            conn: ConnId(1),
            frame: Bytes::from(vec![7u8; 100]),
        });
        let body = body_of(&send);
        let range = body.as_ptr_range();
        let Ok(NodeMessage::Gateway(ToGateway::Send { frame, .. })) = decode_node_message(body)
        else {
            panic!("not a send")
        };
        assert!(range.contains(&frame.as_ptr()), "the frame was copied");
    }
}
