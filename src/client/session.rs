//! The Session: its state, its inputs and outputs, and the link's lifecycle
//! (login, heartbeats, loss, backoff, re-login). Commands live in
//! `commands.rs`, incoming frames in `incoming.rs`.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::channel::{Channels, Membership};
use super::event::{
    ChannelHandle, ConnectionReason, ConnectionState, Event, LinkId, LostStream, RequestId,
    TransportAction,
};
use super::requests::{PendingKind, Requests};
use super::rng::Rng;
use super::seq::SeqStream;
use super::timer::{Timer, TimerTable};
use super::SessionConfig;
use crate::error::{CommandError, ErrorCode, ServiceError, WireError};
use crate::types::{ChannelKey, Region, Uid};
use crate::wire::{self, Body, Frame};

/// The client state machine of one Hummer Channel login: no I/O, no clock,
/// no threads. See the [crate docs](crate) for the run loop.
///
/// Feed it with `handle_*` (transport events, frames, timeouts), give it
/// commands (one method per operation of the service), and after every call
/// drain its outputs once ([`Session::drain`], or `poll_transport`,
/// `poll_transmit` and `poll_event` by hand, in that order), then wait until
/// `poll_timeout`.
///
/// ```
/// use std::time::Instant;
/// use hummer_channel::client::{Session, SessionConfig, TransportAction, Event,
///     ConnectionState, ConnectionReason};
/// use hummer_channel::Uid;
///
/// let now = Instant::now();
/// let mut session = Session::new(SessionConfig::new(10000), now);
/// let login = session.login(now, Uid(1), None, None).unwrap();
/// // The Session asks for a transport, and says it is connecting.
/// let Some(TransportAction::Connect { link }) = session.poll_transport() else { panic!() };
/// assert_eq!(session.poll_event(), Some(Event::ConnectionStateChanged {
///     state: ConnectionState::Connecting, reason: ConnectionReason::Login }));
/// // Once the transport is open, the login request goes out on it.
/// session.handle_connected(now, link);
/// assert!(session.poll_transmit().is_some());
/// # let _ = login;
/// ```
#[derive(Debug)]
pub struct Session {
    pub(super) config: SessionConfig,
    rng: Rng,
    /// The latest `now` seen: time never goes backwards inside.
    clock: Instant,
    state: ConnectionState,
    reason: ConnectionReason,
    pub(super) link: Link,
    /// The id of the latest transport asked for (0: none yet).
    link_id: u64,
    /// Inputs that named a link other than the current one, ignored.
    stale_inputs: u64,
    /// Token expired during a re-login: wait for `refresh_token`.
    pub(super) paused: bool,
    pub(super) credentials: Option<Credentials>,
    /// The token the last login frame carried: a refusal of an older token
    /// than the one held now is retried, not reported.
    pub(super) sent_token: Option<String>,
    /// The application's login request, while it is pending.
    pub(super) login_request: Option<RequestId>,
    pub(super) instance_id: Option<u64>,
    /// The P2P stream's epoch from the last LoginReply (0: none yet).
    pub(super) p2p_epoch: u64,
    /// Sends made so far: with the instance id, it makes message ids.
    sends_made: u64,
    /// How often to send something: the config's interval, or the server's
    /// `ping_interval_ms` when shorter.
    pub(super) heartbeat: Duration,
    /// Silence after which the link is dead: the config's, or the server's
    /// `idle_timeout_ms` when shorter.
    idle_timeout: Duration,
    pub(super) token_expires_at_ms: Option<u64>,
    pub(super) p2p: SeqStream,
    pub(super) acked_p2p: u64,
    pub(super) channels: Channels,
    pub(super) requests: Requests,
    pub(super) timers: TimerTable,
    backoff_attempt: u32,
    last_sent: Instant,
    last_received: Instant,
    ping_nonce: u64,
    outgoing: VecDeque<Bytes>,
    events: VecDeque<Event>,
    transport: VecDeque<TransportAction>,
    /// A command was refused for lack of room; emit `Writable` once there is.
    blocked: bool,
    /// This session's span: every input and command runs inside it.
    #[cfg(feature = "tracing")]
    span: tracing::Span,
}

/// Where the transport is.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(super) enum Link {
    Down,
    Dialing,
    Up,
}

#[derive(Clone, Debug)]
pub(super) struct Credentials {
    pub(super) uid: Uid,
    pub(super) token: Option<String>,
    pub(super) region: Option<Region>,
}

impl Session {
    /// A Session in state DISCONNECTED/INIT. Nothing happens until `login`.
    pub fn new(config: SessionConfig, now: Instant) -> Session {
        let (heartbeat, idle_timeout) =
            (config.timing.heartbeat_interval, config.timing.idle_timeout);
        #[cfg(feature = "tracing")]
        let config_appid = config.appid;
        Session {
            rng: Rng::new(config.seed),
            config,
            clock: now,
            state: ConnectionState::Disconnected,
            reason: ConnectionReason::Init,
            link: Link::Down,
            link_id: 0,
            stale_inputs: 0,
            paused: false,
            credentials: None,
            sent_token: None,
            login_request: None,
            instance_id: None,
            p2p_epoch: 0,
            sends_made: 0,
            heartbeat,
            idle_timeout,
            token_expires_at_ms: None,
            p2p: SeqStream::default(),
            acked_p2p: 0,
            channels: Channels::default(),
            requests: Requests::default(),
            timers: TimerTable::default(),
            backoff_attempt: 0,
            last_sent: now,
            last_received: now,
            ping_nonce: 0,
            outgoing: VecDeque::new(),
            events: VecDeque::new(),
            transport: VecDeque::new(),
            blocked: false,
            #[cfg(feature = "tracing")]
            span: tracing::info_span!(
                "session",
                appid = config_appid,
                uid = tracing::field::Empty,
                link = tracing::field::Empty
            ),
        }
    }

    // ---- inputs -------------------------------------------------------------

    /// The transport `link` asked for by [`TransportAction::Connect`] is
    /// open: the login goes out on it.
    pub fn handle_connected(&mut self, now: Instant, link: LinkId) {
        enter_span!(self.span);
        let now = self.tick(now);
        if !self.is_current(link) || self.link != Link::Dialing {
            return;
        }
        self.link = Link::Up;
        self.last_received = now;
        self.send_login(now);
    }

    /// The transport `link` could not be opened, or broke. Requests in
    /// flight fail with 1007 (reliable sends wait for a resume) and the
    /// Session reconnects by itself (see `poll_transport`).
    pub fn handle_disconnected(&mut self, now: Instant, link: LinkId) {
        enter_span!(self.span);
        let now = self.tick(now);
        if self.is_current(link) {
            log!(debug, "{link} lost");
            self.link_lost(now, false);
        }
    }

    /// One whole frame from the server, received on `link`. A malformed
    /// frame is returned as an error, and the Session drops the link (it asks
    /// for `Close`, then reconnects): a stream that carried garbage cannot be
    /// trusted. A frame from a link that is not the current one is ignored.
    pub fn handle_frame(
        &mut self,
        now: Instant,
        link: LinkId,
        frame: Bytes,
    ) -> Result<(), WireError> {
        enter_span!(self.span);
        let now = self.tick(now);
        if !self.is_current(link) || self.link != Link::Up {
            return Ok(());
        }
        self.last_received = now;
        self.arm_link_deadline(now);
        let result = wire::decode_frame(frame, self.config.limits.max_frame_size)
            .and_then(|frame| self.on_frame(now, frame));
        if let Err(e) = &result {
            log!(warn, "{link} dropped: bad frame from the server: {e}");
            self.link_lost(now, true);
        }
        result
    }

    /// Time has passed: call when `poll_timeout` is reached (early or late is fine).
    pub fn handle_timeout(&mut self, now: Instant) {
        enter_span!(self.span);
        let now = self.tick(now);
        while let Some((id, kind)) = self.requests.pop_expired(now) {
            self.on_request_timeout(now, id, kind);
        }
        let due: Vec<Timer> = self.timers.expire(now).collect();
        for timer in due {
            match timer {
                Timer::Heartbeat => self.send_ping(now),
                Timer::LinkDeadline => self.link_lost(now, true),
                Timer::Reconnect => self.dial(now),
                Timer::Ack => self.send_ack(now),
                Timer::TokenWarning => {
                    if let Some(at) = self.token_expires_at_ms {
                        self.events
                            .push_back(Event::TokenWillExpire { expires_at_ms: at });
                    }
                }
            }
        }
        self.arm_heartbeat();
    }

    // ---- outputs ------------------------------------------------------------

    /// The next encoded frame to send on the current link (on byte streams,
    /// with a length prefix: see [`wire::write_length_prefixed`]). Take as
    /// many as the transport accepts; the rest wait here, and a full queue
    /// refuses commands (`CommandError::QueueFull`).
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        self.outgoing.pop_front()
    }

    /// The next event. After the queued ones, `Event::Writable` once when a
    /// command was refused for lack of room and there is room now (taking
    /// frames with `poll_transmit` makes room, so drain events after frames).
    pub fn poll_event(&mut self) -> Option<Event> {
        if let Some(event) = self.events.pop_front() {
            return Some(event);
        }
        if self.blocked && self.has_room() {
            self.blocked = false;
            return Some(Event::Writable);
        }
        None
    }

    /// When to call `handle_timeout` next. Cheap: a minimum over a fixed table.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match (self.timers.earliest(), self.requests.earliest()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// What to do with the transport: open one, or close it.
    pub fn poll_transport(&mut self) -> Option<TransportAction> {
        self.transport.pop_front()
    }

    /// Drains every output once, in the order that loses nothing: transport
    /// actions, then frames (while `sink.writable()`), then events. No output
    /// creates another, so one drain after each input or command is enough;
    /// a driver whose transport stopped taking frames drains again when it
    /// takes frames again. Then wait for input or `poll_timeout`.
    ///
    /// ```
    /// use std::time::Instant;
    /// use bytes::Bytes;
    /// use hummer_channel::client::{Event, Session, SessionConfig, Sink, TransportAction};
    /// use hummer_channel::Uid;
    ///
    /// #[derive(Default)]
    /// struct Recorder { actions: Vec<TransportAction>, frames: Vec<Bytes>, events: Vec<Event> }
    /// impl Sink for Recorder {
    ///     fn transport(&mut self, action: TransportAction) { self.actions.push(action) }
    ///     fn transmit(&mut self, frame: Bytes) { self.frames.push(frame) }
    ///     fn event(&mut self, event: Event) { self.events.push(event) }
    /// }
    ///
    /// let now = Instant::now();
    /// let mut session = Session::new(SessionConfig::new(10000), now);
    /// session.login(now, Uid(1), None, None).unwrap();
    /// let mut out = Recorder::default();
    /// session.drain(&mut out);
    /// let TransportAction::Connect { link } = out.actions[0] else { panic!() };
    /// session.handle_connected(now, link);
    /// session.drain(&mut out);
    /// assert_eq!(out.frames.len(), 1); // the login
    /// ```
    pub fn drain(&mut self, sink: &mut impl Sink) {
        while let Some(action) = self.poll_transport() {
            sink.transport(action);
        }
        while !self.outgoing.is_empty() && sink.writable() {
            if let Some(frame) = self.poll_transmit() {
                sink.transmit(frame);
            }
        }
        while let Some(event) = self.poll_event() {
            sink.event(event);
        }
    }

    // ---- state --------------------------------------------------------------

    /// The connection state and the reason of its last change.
    pub fn connection_state(&self) -> (ConnectionState, ConnectionReason) {
        (self.state, self.reason)
    }

    /// The uid given to `login`, until `logout`.
    pub fn uid(&self) -> Option<Uid> {
        self.credentials.as_ref().map(|c| c.uid)
    }

    /// The server's id for this instance, once logged in.
    pub fn instance_id(&self) -> Option<u64> {
        self.instance_id
    }

    /// The configuration.
    pub fn config(&self) -> &SessionConfig {
        &self.config
    }

    /// The key of a channel handle.
    pub fn channel_key(&self, channel: ChannelHandle) -> Option<&ChannelKey> {
        self.channels.get(channel).map(|c| &c.key)
    }

    /// Whether the channel is joined (a re-join in progress after a lost
    /// link counts as joined).
    pub fn is_joined(&self, channel: ChannelHandle) -> bool {
        self.channels.get(channel).is_some_and(|c| {
            matches!(
                c.membership,
                Membership::Joined | Membership::Rejoining | Membership::Leaving
            )
        })
    }

    /// Inputs ignored because they named a link that is not the current one
    /// (a late disconnect or frame from a transport already replaced).
    pub fn stale_inputs(&self) -> u64 {
        self.stale_inputs
    }

    /// The current link, while one is asked for or open.
    pub fn link(&self) -> Option<LinkId> {
        (self.link != Link::Down).then_some(LinkId(self.link_id))
    }

    /// Frames waiting in the outgoing queue.
    pub fn queued_frames(&self) -> usize {
        self.outgoing.len()
    }

    /// Requests in flight.
    pub fn pending_requests(&self) -> usize {
        self.requests.len()
    }

    /// Reliable messages held after a gap (across all streams).
    pub fn held_messages(&self) -> usize {
        self.p2p.held()
            + self
                .channels
                .handles()
                .filter_map(|h| self.channels.get(h))
                .map(|c| c.stream.held())
                .sum::<usize>()
    }

    // ---- internals shared by commands and incoming frames --------------------

    /// Takes `now` in; time never goes backwards inside.
    pub(super) fn tick(&mut self, now: Instant) -> Instant {
        if now > self.clock {
            self.clock = now;
        }
        self.clock
    }

    /// A reliable stream and the event queue, borrowed together.
    pub(super) fn stream_and_events(
        &mut self,
        stream: LostStream,
    ) -> Option<(&mut SeqStream, &mut VecDeque<Event>)> {
        let s = match stream {
            LostStream::User => &mut self.p2p,
            LostStream::Channel(h) => &mut self.channels.get_mut(h)?.stream,
        };
        Some((s, &mut self.events))
    }

    #[cfg(feature = "tracing")]
    pub(super) fn span(&self) -> &tracing::Span {
        &self.span
    }

    /// The latest time seen.
    pub(super) fn clock(&self) -> Instant {
        self.clock
    }

    pub(super) fn set_state(&mut self, state: ConnectionState, reason: ConnectionReason) {
        if (self.state, self.reason) == (state, reason) {
            return;
        }
        log!(info, "connection {state:?} ({reason:?})");
        self.state = state;
        self.reason = reason;
        self.events
            .push_back(Event::ConnectionStateChanged { state, reason });
    }

    pub(super) fn state(&self) -> ConnectionState {
        self.state
    }

    pub(super) fn emit(&mut self, event: Event) {
        self.events.push_back(event);
    }

    pub(super) fn complete(&mut self, id: RequestId, result: Result<super::Reply, ServiceError>) {
        if let Err(e) = &result {
            log!(debug, "request {} failed: {e}", id.0);
        }
        self.events.push_back(Event::Completed {
            request: id,
            result,
        });
    }

    /// Queues a frame. Commands check `admit` first; the Session's own frames
    /// (login, pings, acks, re-joins) are few and bounded by their own logic.
    pub(super) fn send(&mut self, now: Instant, request_id: u64, body: Body) {
        let frame = wire::encode_frame(&Frame {
            request_id,
            body: Some(body),
        });
        self.send_encoded(now, frame);
    }

    /// Queues a frame encoded already (a send, kept for a re-send).
    pub(super) fn send_encoded(&mut self, now: Instant, frame: Bytes) {
        self.outgoing.push_back(frame);
        self.last_sent = now;
        self.arm_heartbeat();
    }

    /// A message id unique among the uid's sends: its instance ids are
    /// distinct random numbers, and each instance counts its sends. Only
    /// called logged in (a resumed login keeps the instance and the count).
    pub(super) fn next_message_id(&mut self) -> u64 {
        self.sends_made = self.sends_made.wrapping_add(1);
        let mut rng =
            super::rng::Rng::new(self.instance_id.unwrap_or(0) ^ self.sends_made.rotate_left(32));
        loop {
            let id = rng.next_u64();
            if id != 0 {
                return id;
            }
        }
    }

    /// After a resumed login: the reliable sends whose replies were lost go
    /// out again, unchanged (same request and message ids), oldest first.
    pub(super) fn resend_held(&mut self, now: Instant) {
        for (_, frame) in self.requests.resendable() {
            self.send_encoded(now, frame);
        }
    }

    /// After a login that did not resume the instance: the held sends
    /// cannot be re-sent safely (their ids may be forgotten), so they fail
    /// with 1007, their outcome unknown.
    pub(super) fn fail_held_sends(&mut self) {
        let held = self
            .requests
            .drain_where(|k| matches!(k, PendingKind::Send(Some(_))));
        for (id, kind) in held {
            self.fail_on_link_loss(id, kind);
        }
    }

    /// Whether a command may queue one more request; refuses with
    /// `QueueFull` otherwise.
    pub(super) fn admit(&mut self) -> Result<(), CommandError> {
        if self.outgoing.len() >= self.config.max_outgoing_frames
            || self.requests.len() >= self.config.max_pending_requests
        {
            log!(
                debug,
                "command refused: outgoing queue or request table full"
            );
            self.blocked = true;
            return Err(CommandError::QueueFull { message: None });
        }
        Ok(())
    }

    fn has_room(&self) -> bool {
        self.outgoing.len() < self.config.max_outgoing_frames
            && self.requests.len() < self.config.max_pending_requests
    }

    /// Whether input naming `link` is about the current transport; counts it
    /// as stale otherwise.
    fn is_current(&mut self, link: LinkId) -> bool {
        let current = link.0 == self.link_id && self.link != Link::Down;
        if !current {
            log!(debug, "input from {link} ignored: not the current link");
            self.stale_inputs += 1;
        }
        current
    }

    /// The server accepted a login on the current link (CONNECTED is only
    /// ever reported then).
    pub(super) fn logged_in(&self) -> bool {
        self.state == ConnectionState::Connected
    }

    /// Checks that commands may go out now.
    pub(super) fn require_logged_in(&self) -> Result<(), CommandError> {
        match self.state {
            ConnectionState::Disconnected => Err(CommandError::NotLoggedIn),
            ConnectionState::Connected => Ok(()),
            _ => Err(CommandError::NotConnected),
        }
    }

    // ---- the link -----------------------------------------------------------

    pub(super) fn dial(&mut self, now: Instant) {
        if self.link != Link::Down || self.credentials.is_none() || self.paused {
            return;
        }
        self.link = Link::Dialing;
        self.link_id += 1;
        #[cfg(feature = "tracing")]
        self.span.record("link", self.link_id);
        log!(debug, "dialing link#{}", self.link_id);
        self.transport.push_back(TransportAction::Connect {
            link: LinkId(self.link_id),
        });
        self.timers
            .set(Timer::LinkDeadline, now + self.config.timing.login_timeout);
    }

    fn send_login(&mut self, now: Instant) {
        let Some(creds) = self.credentials.clone() else {
            return;
        };
        let id = match self.login_request {
            Some(id) => id,
            None => {
                self.requests
                    .insert(now, &self.config.timing, PendingKind::Login { user: false })
            }
        };
        let resume = self.instance_id.map(|instance_id| wire::Resume {
            p2p_epoch: self.p2p_epoch,
            instance_id,
            p2p_seq: self.p2p.last,
            channels: self.channels.cursors(),
        });
        self.sent_token = creds.token.clone();
        let body = Body::Login(wire::LoginRequest {
            protocol_version: wire::PROTOCOL_VERSION,
            appid: self.config.appid,
            uid: creds.uid.0,
            token: creds.token.unwrap_or_default(),
            region: creds.region.map_or(0, Region::to_wire),
            resume,
        });
        self.send(now, id.0, body);
        self.arm_link_deadline(now);
    }

    fn send_ping(&mut self, now: Instant) {
        if self.link != Link::Up {
            return;
        }
        self.ping_nonce += 1;
        let nonce = self.ping_nonce;
        self.send(now, 0, Body::Ping(wire::Ping { nonce }));
    }

    pub(super) fn send_ack(&mut self, now: Instant) {
        if self.logged_in() && self.p2p.last > self.acked_p2p {
            self.acked_p2p = self.p2p.last;
            let p2p_seq = self.p2p.last;
            self.send(now, 0, Body::Ack(wire::Ack { p2p_seq }));
        }
    }

    pub(super) fn schedule_ack(&mut self, now: Instant) {
        if self.timers.get(Timer::Ack).is_none() {
            self.timers
                .set(Timer::Ack, now + self.config.timing.ack_delay);
        }
    }

    fn arm_heartbeat(&mut self) {
        if self.link == Link::Up {
            self.timers
                .set(Timer::Heartbeat, self.last_sent + self.heartbeat);
        } else {
            self.timers.stop(Timer::Heartbeat);
        }
    }

    fn arm_link_deadline(&mut self, now: Instant) {
        // While waiting for the login reply the login timeout rules; after,
        // silence longer than the idle timeout means the link is dead.
        let logged_in = self.logged_in();
        let limit = if logged_in {
            self.idle_timeout
        } else {
            self.config.timing.login_timeout
        };
        let from = if logged_in { self.last_received } else { now };
        let at = from + limit;
        if !logged_in {
            if let Some(existing) = self.timers.get(Timer::LinkDeadline) {
                if existing <= at {
                    return;
                }
            }
        }
        self.timers.set(Timer::LinkDeadline, at);
    }

    /// The server's heartbeat contract (`LoginReply`): ping at least as
    /// often as it asks, and give up on a link silent for its idle timeout.
    /// 0 means "not said": the config's value stays.
    pub(super) fn adopt_server_timing(&mut self, ping_interval_ms: u32, idle_timeout_ms: u32) {
        let ms = |v: u32| Duration::from_millis(u64::from(v));
        self.heartbeat = self.config.timing.heartbeat_interval;
        self.idle_timeout = self.config.timing.idle_timeout;
        if ping_interval_ms != 0 {
            self.heartbeat = self.heartbeat.min(ms(ping_interval_ms));
        }
        if idle_timeout_ms != 0 {
            self.idle_timeout = self.idle_timeout.min(ms(idle_timeout_ms));
        }
        self.arm_heartbeat();
    }

    pub(super) fn after_login(&mut self, now: Instant) {
        self.backoff_attempt = 0;
        self.arm_link_deadline(now);
    }

    /// The link is gone (or must go): fail what was in flight, then reconnect
    /// where a login is wanted.
    pub(super) fn link_lost(&mut self, now: Instant, close_transport: bool) {
        if close_transport {
            self.close_link();
        }
        self.link = Link::Down;
        self.outgoing.clear();
        self.timers.stop(Timer::Heartbeat);
        self.timers.stop(Timer::LinkDeadline);
        self.timers.stop(Timer::Ack);
        self.channels.forget_numbers();
        // The application's login keeps its own deadline across retries;
        // reliable sends wait to be re-sent after a resumed login.
        let failed = self.requests.drain_where(|k| {
            !matches!(
                k,
                PendingKind::Login { user: true } | PendingKind::Send(Some(_))
            )
        });
        for (id, kind) in failed {
            self.fail_on_link_loss(id, kind);
        }
        for h in self.channels.handles().collect::<Vec<_>>() {
            if let Some(c) = self.channels.get_mut(h) {
                match c.membership {
                    Membership::Joined => c.membership = Membership::Rejoining,
                    // Its outcome is unknown: out, and undone after a resume.
                    Membership::Joining | Membership::Leaving => {
                        c.uncertain = true;
                        self.channels.set_out(h);
                    }
                    Membership::Out | Membership::Rejoining => {}
                }
            }
        }
        match self.state {
            ConnectionState::Connected => {
                self.set_state(ConnectionState::Reconnecting, ConnectionReason::Interrupted);
                self.schedule_reconnect(now);
            }
            ConnectionState::Connecting | ConnectionState::Reconnecting => {
                self.schedule_reconnect(now)
            }
            ConnectionState::Disconnected => {}
        }
    }

    fn fail_on_link_loss(&mut self, id: RequestId, kind: PendingKind) {
        if kind.is_user() {
            self.complete(
                id,
                Err(ServiceError::new(
                    ErrorCode::CONNECTION_EXCEPTION,
                    "the link was lost with the request in flight",
                )),
            );
        }
        if kind == PendingKind::Logout {
            self.finish_logout();
        }
    }

    fn schedule_reconnect(&mut self, now: Instant) {
        if self.paused || self.credentials.is_none() {
            return;
        }
        let timing = &self.config.timing;
        let base = timing
            .reconnect_min
            .saturating_mul(1u32 << self.backoff_attempt.min(16))
            .min(timing.reconnect_max);
        let half = base / 2;
        let jitter = self.rng.below_or_eq(half.as_millis() as u64);
        let delay = half + Duration::from_millis(jitter);
        log!(debug, "reconnecting in {delay:?}");
        self.backoff_attempt = self.backoff_attempt.saturating_add(1);
        self.timers.set(Timer::Reconnect, now + delay);
    }

    /// Asks for the current transport to be closed, if there is one.
    fn close_link(&mut self) {
        if self.link != Link::Down {
            self.transport.push_back(TransportAction::Close {
                link: LinkId(self.link_id),
            });
        }
    }

    /// Back to DISCONNECTED: everything about the login is forgotten.
    pub(super) fn reset(&mut self, reason: ConnectionReason) {
        self.close_link();
        self.link = Link::Down;
        self.paused = false;
        self.outgoing.clear();
        self.timers.stop_all();
        // The request that caused the reset (a logout, the login) was removed
        // by the caller; everything else still pending ends here.
        for (id, kind) in self.requests.drain_where(|_| true) {
            if kind.is_user() {
                self.complete(
                    id,
                    Err(ServiceError::new(
                        ErrorCode::CONNECTION_EXCEPTION,
                        "the session was closed",
                    )),
                );
            }
        }
        for h in self.channels.handles().collect::<Vec<_>>() {
            self.channels.set_out(h);
            if let Some(c) = self.channels.get_mut(h) {
                c.uncertain = false;
            }
        }
        self.credentials = None;
        self.login_request = None;
        self.instance_id = None;
        self.p2p_epoch = 0;
        self.heartbeat = self.config.timing.heartbeat_interval;
        self.idle_timeout = self.config.timing.idle_timeout;
        self.p2p.reset(0);
        self.acked_p2p = 0;
        self.token_expires_at_ms = None;
        self.backoff_attempt = 0;
        self.set_state(ConnectionState::Disconnected, reason);
    }

    pub(super) fn finish_logout(&mut self) {
        self.reset(ConnectionReason::Logout);
    }

    pub(super) fn emit_lost(&mut self, stream: LostStream, from_seq: u64, to_seq: Option<u64>) {
        log!(
            warn,
            "messages lost on {stream:?}: from {from_seq} to {to_seq:?}"
        );
        self.events.push_back(Event::MessagesLost {
            stream,
            from_seq,
            to_seq,
        });
    }

    pub(super) fn set_token_expiry(
        &mut self,
        now: Instant,
        expires_at_ms: u64,
        server_time_ms: u64,
    ) {
        if expires_at_ms == 0 {
            self.token_expires_at_ms = None;
            self.timers.stop(Timer::TokenWarning);
            return;
        }
        self.token_expires_at_ms = Some(expires_at_ms);
        let left = Duration::from_millis(expires_at_ms.saturating_sub(server_time_ms));
        let warn_in = left.saturating_sub(self.config.timing.token_warning);
        self.timers.set(Timer::TokenWarning, now + warn_in);
    }

    pub(super) fn resume_dialing(&mut self, now: Instant) {
        self.paused = false;
        self.backoff_attempt = 0;
        self.dial(now);
    }
}

/// Where [`Session::drain`] puts the outputs: the driver's side of a drain.
pub trait Sink {
    /// Open or close a transport.
    fn transport(&mut self, action: TransportAction);
    /// Whether the transport takes a frame now; frames not taken stay queued
    /// in the Session (default: always).
    fn writable(&mut self) -> bool {
        true
    }
    /// A frame to write on the current link.
    fn transmit(&mut self, frame: Bytes);
    /// An event for the application.
    fn event(&mut self, event: Event);
}
