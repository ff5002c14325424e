//! One Session fed scripted server frames, with the fake clock: the
//! harness of the scripted Session tests. It tracks the Session's current
//! link (the `LinkId` of the last `Connect`), so that tests say "the link
//! opened" or "a frame arrived" without naming it, and name an old link
//! only when they mean to.

use std::time::{Duration, Instant};

use bytes::Bytes;
use hummer_channel::client::{
    ChannelHandle, Event, LinkId, Reply, RequestId, Session, SessionConfig, TransportAction,
};
use hummer_channel::wire::{self, encode_frame, Body, DecodedFrame, Frame};
use hummer_channel::{Attributes, Region, ServiceError, Uid, WireError};

use super::clock;
use super::sinks::SessionOut;

/// The uid the scripted Sessions log in as.
pub const ME: u64 = 7;
/// The instance id of the scripted server's login replies.
pub const INSTANCE: u64 = 55;
/// The P2P stream's epoch in the scripted server's login replies.
pub const P2P_EPOCH: u64 = 0x5050;
/// The epoch of every channel the scripted server numbers (unless a test says).
pub const CH_EPOCH: u64 = 0xC0FFEE;

/// A transport action without its link, for comparing lists of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Act {
    Connect,
    Close,
}

impl Act {
    pub fn of(a: &TransportAction) -> Act {
        match a {
            TransportAction::Connect { .. } => Act::Connect,
            TransportAction::Close { .. } => Act::Close,
        }
    }
}

/// A Session, its fake clock, its current link, and everything it has
/// output so far (each drain is one `Session::drain`).
pub struct Script {
    pub s: Session,
    pub now: Instant,
    /// The link of the last `Connect` the Session asked for.
    pub link: Option<LinkId>,
    /// Transmitted frames, as sent (bytes) and decoded.
    pub sent: Vec<(Bytes, DecodedFrame)>,
    pub events: Vec<Event>,
    pub actions: Vec<TransportAction>,
}

impl Script {
    pub fn new() -> Self {
        Self::with(SessionConfig::new(10000))
    }

    pub fn with(config: SessionConfig) -> Self {
        let now = Instant::now();
        Script {
            s: Session::new(config, now),
            now,
            link: None,
            sent: Vec::new(),
            events: Vec::new(),
            actions: Vec::new(),
        }
    }

    /// One drain of the Session into the script's records.
    pub fn drain(&mut self) {
        let mut out = SessionOut::default();
        self.s.drain(&mut out);
        self.record(out);
    }

    /// Records what a drain produced (for tests that drain with their own sink).
    pub fn record(&mut self, out: SessionOut) {
        for a in &out.actions {
            if let TransportAction::Connect { link } = a {
                self.link = Some(*link);
            }
        }
        self.actions.extend(out.actions);
        for b in out.frames {
            let frame =
                wire::decode_frame(b.clone(), 64 * 1024).expect("the Session sends valid frames");
            self.sent.push((b, frame));
        }
        self.events.extend(out.events);
    }

    /// The transport actions so far, without their links.
    pub fn acts(&self) -> Vec<Act> {
        self.actions.iter().map(Act::of).collect()
    }

    /// The current link (the Session asked for one; drains first to learn it).
    pub fn current(&mut self) -> LinkId {
        self.drain();
        self.link.expect("the Session asked for a transport")
    }

    /// The current link opened.
    pub fn connected(&mut self) {
        let link = self.current();
        self.s.handle_connected(self.now, link);
        self.drain();
    }

    /// The current link broke.
    pub fn disconnected(&mut self) {
        let link = self.current();
        self.s.handle_disconnected(self.now, link);
        self.drain();
    }

    /// Raw bytes arrived on the current link.
    pub fn frame(&mut self, bytes: Bytes) -> Result<(), WireError> {
        let link = self.current();
        let r = self.s.handle_frame(self.now, link, bytes);
        self.drain();
        r
    }

    pub fn take_events(&mut self) -> Vec<Event> {
        self.drain();
        std::mem::take(&mut self.events)
    }

    /// The frames sent since the last take, with their bytes.
    pub fn take_raw(&mut self) -> Vec<(Bytes, DecodedFrame)> {
        self.drain();
        std::mem::take(&mut self.sent)
    }

    pub fn take_sent(&mut self) -> Vec<DecodedFrame> {
        self.take_raw().into_iter().map(|(_, f)| f).collect()
    }

    pub fn last_sent(&mut self) -> DecodedFrame {
        self.take_sent().pop().expect("a frame was sent")
    }

    /// A frame from the scripted server on the current link.
    pub fn feed(&mut self, request_id: u64, body: Body) {
        let bytes = encode_frame(&Frame {
            request_id,
            body: Some(body),
        });
        self.frame(bytes).expect("valid frame");
    }

    /// A push (request id 0) from the scripted server.
    pub fn push(&mut self, body: Body) {
        self.feed(0, body);
    }

    /// Moves the clock by `d` in one step.
    pub fn advance(&mut self, d: Duration) {
        self.now += d;
        self.s.handle_timeout(self.now);
        self.drain();
    }

    /// Jumps the clock to each deadline in turn until `d` has passed.
    pub fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        let mut steps = 0;
        while clock::jump(&mut self.now, self.s.poll_timeout(), end) {
            self.s.handle_timeout(self.now);
            self.drain();
            steps += 1;
            assert!(
                steps < clock::MAX_STEPS,
                "the Session's deadline never passes"
            );
        }
        self.s.handle_timeout(self.now);
        self.drain();
    }

    /// The scripted server's login reply: server epoch `epoch`, the P2P
    /// stream at `p2p_seq`.
    pub fn login_reply(epoch: u64, p2p_seq: u64) -> wire::LoginReply {
        wire::LoginReply {
            instance_id: INSTANCE,
            token_expires_at_ms: 0,
            server_time_ms: 1_000,
            server_epoch: epoch,
            p2p_seq,
            p2p_gap: None,
            is_anonymous: true,
            resumed: false,
            p2p_epoch: P2P_EPOCH,
            ping_interval_ms: 15_000,
            idle_timeout_ms: 45_000,
            ..Default::default()
        }
    }

    /// A Session logged in with `reply`; its events and actions so far cleared.
    pub fn logged_in_with(config: SessionConfig, reply: wire::LoginReply) -> Self {
        let mut t = Script::with(config);
        t.s.login(t.now, Uid(ME), None, Some(Region::Cn)).unwrap();
        t.drain();
        t.connected();
        let login = t.last_sent();
        t.feed(login.request_id, Body::LoginReply(reply));
        t.take_events();
        t.actions.clear();
        t
    }

    pub fn logged_in() -> Self {
        Self::logged_in_with(SessionConfig::new(10000), Self::login_reply(9, 0))
    }

    /// Creates and joins `id`, the server giving it push number `number`,
    /// its stream at `seq` in `CH_EPOCH`.
    pub fn joined(&mut self, id: &str, number: u32, seq: u64) -> ChannelHandle {
        self.joined_at(id, number, seq, CH_EPOCH)
    }

    /// Creates and joins `id`; the server numbers it `number`, its stream at
    /// `seq` in `epoch`.
    pub fn joined_at(&mut self, id: &str, number: u32, seq: u64, epoch: u64) -> ChannelHandle {
        let ch = self.s.create_channel(Region::Cn, id).unwrap();
        let join = self
            .s
            .join_channel(self.now, ch, Attributes::new())
            .unwrap();
        let frame = self.last_sent();
        assert_eq!(frame.request_id, join.0);
        self.feed(
            join.0,
            Body::JoinReply(wire::JoinReply {
                channel: number,
                seq,
                epoch,
                ..Default::default()
            }),
        );
        assert_eq!(self.completion(join), Ok(Reply::Done));
        ch
    }

    /// Drops the link, waits out the backoff and reconnects; the re-login
    /// frame, which must be the only frame sent.
    pub fn relogin(&mut self) -> DecodedFrame {
        self.disconnected();
        self.run_for(Duration::from_secs(2));
        self.connected();
        let sent = self.take_sent();
        assert_eq!(sent.len(), 1, "only the login goes out first: {sent:?}");
        sent.into_iter().next().unwrap()
    }

    /// The completion of `id` among the events so far (removed).
    pub fn completion(&mut self, id: RequestId) -> Result<Reply, ServiceError> {
        self.drain();
        let pos = self
            .events
            .iter()
            .position(|e| matches!(e, Event::Completed { request, .. } if *request == id))
            .unwrap_or_else(|| panic!("no completion for {id:?} in {:?}", self.events));
        match self.events.remove(pos) {
            Event::Completed { result, .. } => result,
            _ => unreachable!(),
        }
    }

    /// Whether `id` has completed (without removing its event).
    pub fn completed(&mut self, id: RequestId) -> bool {
        self.drain();
        self.events
            .iter()
            .any(|e| matches!(e, Event::Completed { request, .. } if *request == id))
    }

    /// The number of completions among the events so far.
    pub fn completions(&self) -> usize {
        self.events
            .iter()
            .filter(|e| matches!(e, Event::Completed { .. }))
            .count()
    }
}

impl Default for Script {
    fn default() -> Self {
        Self::new()
    }
}
