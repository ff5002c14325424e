//! The typed messages between the two machines of the server: what a
//! [`Gateway`](super::Gateway) tells the [`Hub`](super::Hub) ([`ToHub`]) and
//! what the hub asks of a gateway ([`ToGateway`]).
//!
//! Both travel in order per (gateway, hub) pair: that order is what keeps a
//! link's replies in the order of its requests. A [`ConnId`] names its own
//! gateway, so a hub routes each message without a table.

use std::net::IpAddr;

use bytes::Bytes;

use super::conn::{CloseReason, ConnId};
use crate::error::ServiceError;
use crate::wire::{self, Body};

/// Which gateway of a server a connection belongs to (`0` for the first).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GatewayId(pub u16);

/// What a login's token says, checked by the gateway (it holds the app
/// secrets; the hub does the rest of the login).
pub type TokenCheck = Result<TokenGrant, ServiceError>;

/// A login's credentials as the gateway verified them.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct TokenGrant {
    /// No token was given and the app allows that.
    pub is_anonymous: bool,
    /// When the token expires (unix seconds); `None`: it never does.
    pub expires_at_s: Option<u64>,
}

/// From a gateway to the hub.
#[non_exhaustive]
#[derive(Debug)]
pub enum ToHub {
    /// A login request, its token already checked.
    Login {
        /// The link it came on.
        conn: ConnId,
        /// The frame's request id.
        request_id: u64,
        /// The request.
        request: wire::LoginRequest,
        /// What the gateway found the token to be.
        token: TokenCheck,
        /// The link's peer address, when the transport told it (logins are
        /// rate limited per address).
        peer: Option<IpAddr>,
        /// Bytes counted as queued for the link when the request was read:
        /// its queue, and half the queue bound for each earlier replay of
        /// the link not answered yet (replays are budgeted against the
        /// queue bound).
        queued: usize,
    },
    /// Any other request of a link.
    Request {
        /// The link it came on.
        conn: ConnId,
        /// The frame's request id (nonzero).
        request_id: u64,
        /// The request.
        body: Body,
        /// Bytes counted as queued for the link when the request was read
        /// (as for a login).
        queued: usize,
    },
    /// A link acknowledged the P2P stream through `seq`.
    Ack {
        /// The link.
        conn: ConnId,
        /// The sequence number acknowledged.
        seq: u64,
    },
    /// The gateway closed a link, or its transport went away: its instance
    /// (if any) keeps its presence for the grace period.
    LinkLost {
        /// The link.
        conn: ConnId,
    },
}

impl ToHub {
    /// The link the message is about.
    pub fn conn(&self) -> ConnId {
        match self {
            ToHub::Login { conn, .. }
            | ToHub::Request { conn, .. }
            | ToHub::Ack { conn, .. }
            | ToHub::LinkLost { conn } => *conn,
        }
    }

    /// About the bytes the message holds besides its own size (its
    /// request's encoded length: prost sums field lengths, it encodes
    /// nothing), for a runner's bound on what waits between its threads.
    #[cfg(feature = "server-tcp")]
    pub(crate) fn weight(&self) -> usize {
        match self {
            ToHub::Login { request, .. } => prost::Message::encoded_len(request),
            ToHub::Request { body, .. } => body.encoded_len(),
            ToHub::Ack { .. } | ToHub::LinkLost { .. } => 0,
        }
    }
}

/// From the hub to one gateway.
#[non_exhaustive]
#[derive(Debug)]
pub enum ToGateway {
    /// Queue `frame` for `conn`.
    Send {
        /// The link.
        conn: ConnId,
        /// A whole frame, no length prefix.
        frame: Bytes,
    },
    /// Queue the same `frame` for each of `conns` (a broadcast, encoded
    /// once for all of them).
    Broadcast {
        /// The links, all of this gateway.
        conns: Vec<ConnId>,
        /// A whole frame, no length prefix.
        frame: Bytes,
    },
    /// `conn` logged in as `uid` (`Some`), or logged out or its login
    /// failed (`None`): it changes the largest frame the link may send and
    /// ends its login timeout.
    LoggedIn {
        /// The link.
        conn: ConnId,
        /// The uid, or `None` after a logout.
        uid: Option<u64>,
    },
    /// Close `conn` for `reason` (after what was queued for it). The hub
    /// already detached its instance.
    Close {
        /// The link.
        conn: ConnId,
        /// Why.
        reason: CloseReason,
    },
    /// Everything the hub queues for request `request_id` of `conn` (a
    /// login, a join or a fetch: its reply and the replay after it) is in
    /// the messages before this one. Until then the gateway counts that
    /// replay as the most it may be when it reports what the link has
    /// queued ([`ToHub::Request`]'s `queued`).
    Answered {
        /// The link.
        conn: ConnId,
        /// The request.
        request_id: u64,
    },
}

impl ToGateway {
    /// The gateway this message is for.
    pub fn gateway(&self) -> GatewayId {
        match self {
            ToGateway::Send { conn, .. }
            | ToGateway::LoggedIn { conn, .. }
            | ToGateway::Close { conn, .. }
            | ToGateway::Answered { conn, .. } => conn.gateway(),
            ToGateway::Broadcast { conns, .. } => {
                conns.first().map_or(GatewayId(0), |c| c.gateway())
            }
        }
    }

    /// About the bytes the message holds besides its own size (its frame,
    /// counted whole for each gateway of a broadcast), for a runner's
    /// bound on what waits between its threads.
    #[cfg(feature = "server-tcp")]
    pub(crate) fn weight(&self) -> usize {
        match self {
            ToGateway::Send { frame, .. } => frame.len(),
            ToGateway::Broadcast { conns, frame } => {
                frame.len() + std::mem::size_of_val(&conns[..])
            }
            ToGateway::LoggedIn { .. } | ToGateway::Close { .. } | ToGateway::Answered { .. } => 0,
        }
    }
}

#[cfg(all(test, feature = "server-tcp"))]
mod tests {
    use super::*;
    use crate::error::ErrorCode;

    /// A weight counts what the message carries, and little more.
    fn weighs(w: usize, payload: usize, slack: usize) {
        assert!(
            (payload..=payload + slack).contains(&w),
            "{w} for {payload} bytes (+{slack})"
        );
    }

    #[test]
    fn messages_between_gateways_and_hubs_weigh_what_they_carry() {
        let conn = ConnId(1);
        let login = ToHub::Login {
            conn,
            request_id: 1,
            request: wire::LoginRequest {
                token: "t".repeat(3_000),
                ..Default::default()
            },
            token: Err(ServiceError::new(ErrorCode::UNAUTHORIZED, "no")),
            peer: None,
            queued: 0,
        };
        weighs(login.weight(), 3_000, 16);
        let request = ToHub::Request {
            conn,
            request_id: 1,
            body: Body::SendToChannel(wire::SendToChannelRequest {
                message: Some(wire::ChatMessage {
                    content: Bytes::from(vec![1u8; 6_000]),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            queued: 0,
        };
        weighs(request.weight(), 6_000, 32);
        weighs(ToHub::Ack { conn, seq: 1 }.weight(), 0, 0);
        let frame = Bytes::from(vec![2u8; 9_000]);
        let send = ToGateway::Send {
            conn,
            frame: frame.clone(),
        };
        weighs(send.weight(), 9_000, 0);
        let broadcast = ToGateway::Broadcast {
            conns: vec![conn; 100],
            frame,
        };
        weighs(broadcast.weight(), 9_000 + 800, 0);
    }
}
