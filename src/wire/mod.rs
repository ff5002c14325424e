//! The wire: the prost types generated from `proto/` and the byte-stream codec.
//!
//! A frame is one [`Frame`] message. Message transports (WebSocket, QUIC
//! datagrams, an in-memory channel) carry one frame per message; byte streams
//! (TCP, Unix sockets) carry a 4-byte big-endian length before each frame, see
//! [`FrameDecoder`] and [`write_length_prefixed`].

pub(crate) mod codec;
mod kind;
#[allow(missing_docs, clippy::all, clippy::pedantic)]
#[rustfmt::skip]
mod generated;

pub use codec::{
    decode_frame, encode_frame, write_length_prefixed, DecodedFrame, FrameDecoder,
    LENGTH_PREFIX_LEN, PROTOCOL_VERSION,
};
pub use generated::frame::Body;
pub use generated::*;
pub use kind::{body_name, peek_frame, BodyKind, FramePeek, MAX_BODY_TAG};

/// The WebSocket subprotocol of this protocol (`docs/protocol.md`,
/// "Transports"): one `Frame` per binary message.
pub const WEBSOCKET_SUBPROTOCOL: &str = "hummer.v1.protobuf";
/// The path of the WebSocket endpoint.
pub const WEBSOCKET_PATH: &str = "/v1/ws";
