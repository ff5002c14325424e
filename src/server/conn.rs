//! Per-connection state: the bounded outgoing queue and what the connection
//! is logged in as.

use std::collections::VecDeque;
use std::fmt;
use std::time::Instant;

use bytes::Bytes;

use super::message::GatewayId;
use crate::error::WireError;
use crate::wire::{self, encode_frame, Body, Frame};

/// A connection of the server, chosen by [`Server::accept`](super::Server::accept).
///
/// The top 16 bits name the [`GatewayId`] that holds it, so the hub routes
/// output to a connection without a table; ids are never reused.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

impl ConnId {
    const GATEWAY_SHIFT: u32 = 48;

    /// The `n`th connection of `gateway` (`n` below 2^48).
    pub fn new(gateway: GatewayId, n: u64) -> ConnId {
        ConnId(u64::from(gateway.0) << Self::GATEWAY_SHIFT | (n & ((1 << Self::GATEWAY_SHIFT) - 1)))
    }

    /// The gateway holding this connection.
    pub fn gateway(self) -> GatewayId {
        GatewayId((self.0 >> Self::GATEWAY_SHIFT) as u16)
    }
}

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.gateway() {
            GatewayId(0) => write!(f, "conn#{}", self.0),
            g => write!(
                f,
                "conn#{}.{}",
                g.0,
                self.0 & ((1 << Self::GATEWAY_SHIFT) - 1)
            ),
        }
    }
}

/// Why the server wants a connection closed (see
/// [`Server::poll_transport`](super::Server::poll_transport)). Except for
/// [`CloseReason::Kicked`] and [`CloseReason::Replaced`], the instance logged
/// in on the connection survives as a lost link for the presence grace period,
/// so the client can reconnect and resume.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// Another login of the same uid took over (app set to kick older
    /// logins). A `Close{code: 100}` frame was queued.
    Kicked,
    /// The connection's outgoing queue passed `max_queued_bytes`: the queue
    /// was dropped and a `Close{code: 4005, reason: "slow consumer"}` queued.
    SlowConsumer,
    /// A malformed or unexpected frame. A `Close{code: 2001}` frame was queued.
    ProtocolError(WireError),
    /// A login with another protocol version: `Close{code: 2010}` queued
    /// after the `ErrorReply`.
    UnsupportedVersion,
    /// Nothing received for `idle_timeout`. `Close{code: 1005}` queued.
    IdleTimeout,
    /// No successful login within `login_timeout`. `Close{code: 1006}` queued.
    LoginTimeout,
    /// A resumed login on another connection took this connection's instance
    /// over (this one was presumably dead). `Close{code: 4007}` queued.
    Replaced,
    /// [`Server::shutdown`](super::Server::shutdown): `Close{code: 4006}` queued.
    Shutdown,
    /// A request other than a login before the link logged in (after its
    /// `ErrorReply{1009}`): `Close{code: 1009}` queued.
    NotLoggedIn,
    /// The login's token expired and no refresh came within `token_grace`:
    /// `Close{code: 2003}` queued.
    TokenExpired,
    /// The client sent a `Close` frame. No frame queued.
    ClosedByPeer,
    /// The app's backend kicked the instance (the server API): `Close{code,
    /// reason}` queued, `code` in 4100..=4199. Like [`CloseReason::Kicked`],
    /// no grace period: the instance is gone.
    KickedByService {
        /// The close code the backend chose.
        code: u32,
        /// What the backend said.
        reason: String,
    },
}

impl CloseReason {
    /// The code of the `Close` frame queued for this reason (0: none).
    pub fn code(&self) -> u32 {
        match self {
            CloseReason::Kicked => 100,
            CloseReason::IdleTimeout => 1005,
            CloseReason::LoginTimeout => 1006,
            CloseReason::ProtocolError(_) => 2001,
            CloseReason::UnsupportedVersion => 2010,
            CloseReason::NotLoggedIn => 1009,
            CloseReason::TokenExpired => 2003,
            CloseReason::SlowConsumer => 4005,
            CloseReason::Shutdown => 4006,
            CloseReason::Replaced => 4007,
            CloseReason::ClosedByPeer => 0,
            CloseReason::KickedByService { code, .. } => *code,
        }
    }
}

impl CloseReason {
    /// A short name for metrics and logs: `kicked`, `slow_consumer`,
    /// `protocol_error`, `unsupported_version`, `idle_timeout`,
    /// `login_timeout`, `replaced`, `shutdown`, `not_logged_in`,
    /// `token_expired`, `closed_by_peer`.
    pub fn name(&self) -> &'static str {
        match self {
            CloseReason::Kicked => "kicked",
            CloseReason::SlowConsumer => "slow_consumer",
            CloseReason::ProtocolError(_) => "protocol_error",
            CloseReason::UnsupportedVersion => "unsupported_version",
            CloseReason::IdleTimeout => "idle_timeout",
            CloseReason::LoginTimeout => "login_timeout",
            CloseReason::Replaced => "replaced",
            CloseReason::Shutdown => "shutdown",
            CloseReason::NotLoggedIn => "not_logged_in",
            CloseReason::TokenExpired => "token_expired",
            CloseReason::ClosedByPeer => "closed_by_peer",
            CloseReason::KickedByService { .. } => "kicked_by_service",
        }
    }

    /// The hub decided this close (and already detached the instance);
    /// for the others the gateway tells the hub the link is lost.
    pub(crate) fn decided_by_hub(&self) -> bool {
        matches!(
            self,
            CloseReason::Kicked
                | CloseReason::KickedByService { .. }
                | CloseReason::Replaced
                | CloseReason::NotLoggedIn
                | CloseReason::TokenExpired
        )
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::Kicked => f.write_str("kicked by a newer login"),
            CloseReason::SlowConsumer => f.write_str("slow consumer"),
            CloseReason::ProtocolError(e) => write!(f, "protocol error: {e}"),
            CloseReason::IdleTimeout => f.write_str("idle timeout"),
            CloseReason::LoginTimeout => f.write_str("login timeout"),
            CloseReason::Replaced => f.write_str("instance resumed on another connection"),
            CloseReason::UnsupportedVersion => f.write_str("unsupported protocol version"),
            CloseReason::Shutdown => f.write_str("server shutting down"),
            CloseReason::NotLoggedIn => f.write_str("a request before login"),
            CloseReason::TokenExpired => f.write_str("the token expired and was not refreshed"),
            CloseReason::ClosedByPeer => f.write_str("closed by peer"),
            CloseReason::KickedByService { reason, .. } => f.write_str(reason),
        }
    }
}

/// What a queued frame costs besides its bytes: the `Bytes` handle, its
/// slot in the queue and the allocation's header. Counted so that a flood
/// of tiny frames (a `Pong` is 4 bytes) is bounded as memory, not as bytes.
pub(crate) const QUEUED_FRAME_OVERHEAD: usize = 64;

/// What the server keeps per connection.
#[derive(Debug)]
pub(crate) struct Conn {
    /// Frames waiting for `poll_transmit`.
    queue: VecDeque<Bytes>,
    /// The `Pong` owed to the peer's latest `Ping` (its request id and
    /// nonce), sent before `queue`: at most one is ever pending, however many
    /// pings arrive. Encoded when it is sent: this record is read for every
    /// delivery, so it is kept small.
    pong: Option<(u64, u64)>,
    /// What `queue` and `pong` cost: their bytes plus
    /// `QUEUED_FRAME_OVERHEAD` each.
    pub queued_bytes: usize,
    /// Its id is in the server's ready list.
    pub listed: bool,
    /// When the last frame arrived (for the idle timeout).
    pub last_recv: Instant,
    /// The server pinged it since its last frame (once per silence).
    pub pinged: bool,
    /// Logged in now (the hub said so): the larger frame bound applies.
    pub logged_in: bool,
    /// A login with a good token went to the hub and is not answered yet:
    /// the larger bound applies already, so that a client may send a
    /// large frame right behind its login.
    pub login_pending: bool,
    /// Ever logged in (for the login timeout).
    pub logged_in_once: bool,
    /// Set once the server decided to close it: input is ignored from then on.
    pub closing: bool,
}

impl Conn {
    pub fn new(now: Instant) -> Self {
        Conn {
            queue: VecDeque::new(),
            pong: None,
            queued_bytes: 0,
            listed: false,
            last_recv: now,
            pinged: false,
            logged_in: false,
            login_pending: false,
            logged_in_once: false,
            closing: false,
        }
    }

    /// Queues `frame` unless that passes `max`; `false` when it would.
    pub fn push(&mut self, frame: Bytes, max: usize) -> bool {
        let after = self.queued_bytes.saturating_add(cost(&frame));
        if after > max {
            return false;
        }
        self.queued_bytes = after;
        self.queue.push_back(frame);
        true
    }

    /// Queues the last frame (a `Close`), past any bound.
    pub fn push_last(&mut self, frame: Bytes) {
        self.queued_bytes = self.queued_bytes.saturating_add(cost(&frame));
        self.queue.push_back(frame);
    }

    /// Owes `pong` to the peer, replacing a pong not sent yet; `false` when
    /// that would pass `max`.
    pub fn set_pong(&mut self, request_id: u64, nonce: u64, max: usize) -> bool {
        let after = match self.pong {
            Some(_) => self.queued_bytes,
            None => self.queued_bytes.saturating_add(PONG_COST),
        };
        if after > max {
            return false;
        }
        self.queued_bytes = after;
        self.pong = Some((request_id, nonce));
        true
    }

    /// Drops everything queued (a slow consumer loses its backlog; it resumes
    /// from its sequence numbers).
    pub fn clear(&mut self) {
        self.queue.clear();
        self.pong = None;
        self.queued_bytes = 0;
    }

    /// The next frame to send: the pending pong first.
    pub fn pop(&mut self) -> Option<Bytes> {
        if let Some((request_id, nonce)) = self.pong.take() {
            self.queued_bytes = self.queued_bytes.saturating_sub(PONG_COST);
            return Some(encode_frame(&Frame {
                request_id,
                body: Some(Body::Pong(wire::Pong { nonce })),
            }));
        }
        let f = self.queue.pop_front()?;
        self.queued_bytes = self.queued_bytes.saturating_sub(cost(&f));
        Some(f)
    }

    /// Nothing to send.
    pub fn is_empty(&self) -> bool {
        self.pong.is_none() && self.queue.is_empty()
    }
}

/// What a pending pong counts: the longest pong frame and the overhead.
const PONG_COST: usize = 24 + QUEUED_FRAME_OVERHEAD;

/// What a queued frame counts against the queue bound.
fn cost(frame: &Bytes) -> usize {
    frame.len().saturating_add(QUEUED_FRAME_OVERHEAD)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_count_with_their_overhead_and_one_pong_at_most() {
        let t = Instant::now();
        let mut c = Conn::new(t);
        let max = 10 * (4 + QUEUED_FRAME_OVERHEAD);
        let tiny = Bytes::from_static(&[1, 2, 3, 4]);
        for _ in 0..10 {
            assert!(c.push(tiny.clone(), max));
        }
        assert!(!c.push(tiny.clone(), max), "ten tiny frames fill the bound");
        assert_eq!(c.queued_bytes, max);
        c.clear();
        assert!(c.is_empty());
        assert_eq!(c.queued_bytes, 0);
        for n in 0..100u64 {
            assert!(c.set_pong(n, n + 1, max));
        }
        assert_eq!(c.queued_bytes, PONG_COST, "one pong");
        assert!(c.push(tiny.clone(), max));
        let pong = crate::wire::decode_frame(c.pop().unwrap(), 64).unwrap();
        assert_eq!(pong.request_id, 99, "the latest pong first");
        assert!(matches!(pong.body, Body::Pong(wire::Pong { nonce: 100 })));
        // The longest pong fits what one counts.
        c.set_pong(u64::MAX, u64::MAX, max);
        assert!(c.pop().unwrap().len() <= PONG_COST - QUEUED_FRAME_OVERHEAD);
        assert_eq!(c.pop(), Some(tiny));
        assert_eq!(c.pop(), None);
        assert_eq!(c.queued_bytes, 0);
        c.push_last(Bytes::from(vec![0; max]));
        assert!(c.queued_bytes > max, "a Close goes past the bound");
        // A pong fits exactly up to the bound, not a byte past it.
        let mut c = Conn::new(t);
        assert!(c.push(Bytes::from(vec![0; 1000 - QUEUED_FRAME_OVERHEAD]), 1000));
        assert!(c.set_pong(1, 1, 1000 + PONG_COST));
        let mut c = Conn::new(t);
        assert!(c.push(Bytes::from(vec![0; 1000 - QUEUED_FRAME_OVERHEAD]), 1000));
        assert!(!c.set_pong(1, 1, 1000 + PONG_COST - 1));
        assert_eq!(c.queued_bytes, 1000, "a refused pong is not counted");
    }
}
