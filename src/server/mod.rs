//! The reference server: a Sans-IO state machine for many connections.
//!
//! [`Server`] does no I/O, reads no clock and spawns nothing: the caller
//! accepts connections, hands it whole frames with [`Server::handle_frame`],
//! tells it about closed links and time passing, and pulls what to send with
//! [`Server::poll_ready`] / [`Server::poll_transmit`], what to close with
//! [`Server::poll_transport`] and when to call again with [`Server::poll_timeout`].
//! [`crate::adapters::server_tcp`] runs it on TCP; `hummer-server` is the binary.
//!
//! Output is pulled per connection, so a slow reader shows up as a growing
//! queue inside the server: past `max_queued_bytes` the queue is dropped, a
//! `Close{code: 4005, reason: "slow consumer"}` is queued and the connection
//! is reported by `poll_transport`. The client resumes from its sequence numbers.
//!
//! See [`Server`] for the run loop in code.
//!
//! # Semantics worth knowing
//!
//! - Presence is per uid: a uid joins a channel with its first instance and
//!   leaves with its last. Join/leave notices are batched per channel over
//!   `notice_batch_window` (net effect only), each flush followed by a
//!   `UserCountPush` (distinct uids).
//! - A lost link (transport closed, idle timeout, slow consumer, protocol
//!   error) keeps the instance present for `presence_grace`; a login with
//!   `resume.instance_id` takes it over with no notices. Logout and kicks
//!   remove it at once.
//! - Channel attributes live while the channel has members and are dropped
//!   when its last member leaves; a uid's user attributes in a channel are
//!   dropped when its last instance leaves. Writes notify members only when
//!   `enable_notification` is set (the wire default, false, is silent).
//! - Reliable messages are retained per receiver uid (P2P, 200 / 7 days) and
//!   per channel (1024 / 5 min), and in all at most `max_retained_bytes`;
//!   evicted ranges are reported as gaps. One replay (after a login, a join
//!   or a fetch) queues at most half of `max_queued_bytes`: a cut-short
//!   replay shows as a `FetchReply.through_seq` below the head, or as a jump
//!   in sequence numbers that the client fills with a fetch.
//! - Every closed link gets a `Close` frame first; its codes are listed in
//!   `docs/protocol.md` ("Close codes").

mod auth;
mod channel;
mod config;
mod conn;
mod inbox;
mod presence;
mod rate;
mod ready;
mod sent_ids;
mod seq_log;

use std::collections::{BTreeSet, BinaryHeap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::error::{ErrorCode, ServiceError, WireError};
use crate::limits::AttributeScope;
use crate::types::Region;
use crate::wire::{self, decode_frame, encode_frame, Body, BodyKind, Frame};

pub use auth::mint_token;
pub use config::{
    AppConfig, ConfigError, RateLimit, RateLimits, ServerConfig, DEMO_APPID, DEMO_SECRET,
    MIN_SECRET_LEN,
};
pub use conn::{CloseReason, ConnId};

use channel::Channel;
use conn::Conn;
use inbox::Inbox;
use presence::Instance;
use ready::ReadyList;
use sent_ids::{Destination, SentIds};

/// How long a closing connection's record (and what is still queued for it)
/// is kept when the transport never reports it closed.
const CLOSE_LINGER: Duration = Duration::from_secs(10);

/// What a deadline is for. Deadlines are checked lazily when they fire (the
/// state they refer to may have moved on), so each kind needs no cancelling.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    Idle(ConnId),
    Login(ConnId),
    Linger(ConnId),
    Grace(u64),
    /// (instance, the token expiry it was set for).
    TokenWarning(u64, u64),
    TokenDeadline(u64, u64),
    Notice(u32),
    Sweep,
}

/// A request's outcome: the reply body and the pushes that must follow it.
type Outcome = Result<(Body, Vec<Bytes>), ServiceError>;

/// The reference server state machine. See the [module docs](self).
///
/// One connection logging in, driven by hand (a transport does this in a
/// loop: feed frames, drain `poll_ready`/`poll_transmit`/`poll_transport`,
/// sleep until `poll_timeout`):
///
/// ```
/// use std::time::{Duration, Instant};
/// use hummer_channel::server::{Server, ServerConfig, DEMO_APPID};
/// use hummer_channel::wire::{self, decode_frame, encode_frame, Body, Frame, LoginRequest};
///
/// let t0 = Instant::now();
/// let mut server = Server::new(ServerConfig::demo(), t0, 1_700_000_000_000);
/// let conn = server.accept(t0);
/// let login = Frame {
///     request_id: 1,
///     body: Some(Body::Login(LoginRequest {
///         protocol_version: wire::PROTOCOL_VERSION,
///         appid: DEMO_APPID,
///         uid: 42,
///         ..Default::default()
///     })),
/// };
/// server.handle_frame(t0, conn, encode_frame(&login));
/// assert_eq!(server.poll_ready(), Some(conn));
/// let reply = decode_frame(server.poll_transmit(conn).unwrap(), 64 * 1024).unwrap();
/// assert_eq!(reply.request_id, 1);
/// assert!(matches!(reply.body, Body::LoginReply(r) if r.is_anonymous));
/// // Nothing happens before the next deadline (the idle timeout here).
/// assert!(server.poll_timeout().unwrap() > t0 + Duration::from_secs(1));
/// ```
#[derive(Debug)]
pub struct Server {
    config: ServerConfig,
    start: Instant,
    unix_ms_at_start: u64,
    /// The latest `now` seen: time going backwards is ignored.
    now: Instant,
    epoch: u64,
    rng: u64,
    conns: HashMap<ConnId, Conn>,
    next_conn: u64,
    ready: ReadyList,
    closes: VecDeque<TransportAction>,
    /// Inputs naming a connection that is closed or closing, ignored.
    stale_inputs: u64,
    instances: HashMap<u64, Instance>,
    /// Live instances of each (appid, uid), oldest login first.
    users: HashMap<(u32, u64), Vec<u64>>,
    channels: HashMap<u32, Channel>,
    channel_index: HashMap<(u32, Region, String), u32>,
    next_channel: u32,
    inboxes: HashMap<(u32, u64), Inbox>,
    /// Message ids of recent successful sends, per sender uid.
    sent_ids: SentIds,
    /// The per-uid rate limits' state.
    uid_rates: HashMap<(u32, u64), rate::UidRates>,
    /// Logins per peer address.
    login_rates: HashMap<std::net::IpAddr, rate::Bucket>,
    /// The peer address of each connection whose transport told it (kept
    /// apart from `conns`, which every delivery reads: small is fast).
    peers: HashMap<ConnId, std::net::IpAddr>,
    /// The nonce of the last `Ping` the server sent.
    ping_nonce: u64,
    timers: BTreeSet<(Instant, Timer)>,
    /// An upper bound of the retained bytes (exact after each enforcement).
    retained_estimate: usize,
    /// The same, per app.
    app_retained: HashMap<u32, usize>,
    /// Each connection's span (kept apart from `conns`, which every
    /// delivery reads).
    #[cfg(feature = "tracing")]
    spans: HashMap<ConnId, tracing::Span>,
}

/// A retention log: a channel's or a uid's inbox.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum LogId {
    Channel(u32),
    Inbox(u32, u64),
}

impl Server {
    /// A server configured by `config`, started at `now`, when the wall clock
    /// read `unix_ms_at_now` (unix milliseconds). Wall-clock time afterwards
    /// is `unix_ms_at_now + (now - start)`.
    pub fn new(config: ServerConfig, now: Instant, unix_ms_at_now: u64) -> Server {
        // The start time is mixed in so that a restart with the same seed
        // still gets a new epoch: clients must see that the history is gone.
        let mut rng = config.seed ^ 0x9e37_79b9_7f4a_7c15 ^ unix_ms_at_now.rotate_left(29);
        let mut epoch = 0;
        while epoch == 0 {
            epoch = splitmix64(&mut rng);
        }
        let mut timers = BTreeSet::new();
        timers.insert((add(now, config.sweep_interval), Timer::Sweep));
        Server {
            config,
            start: now,
            unix_ms_at_start: unix_ms_at_now,
            now,
            epoch,
            rng,
            conns: HashMap::new(),
            next_conn: 1,
            ready: ReadyList::default(),
            closes: VecDeque::new(),
            stale_inputs: 0,
            instances: HashMap::new(),
            users: HashMap::new(),
            channels: HashMap::new(),
            channel_index: HashMap::new(),
            next_channel: 1,
            inboxes: HashMap::new(),
            sent_ids: SentIds::default(),
            uid_rates: HashMap::new(),
            login_rates: HashMap::new(),
            peers: HashMap::new(),
            ping_nonce: 0,
            timers,
            retained_estimate: 0,
            app_retained: HashMap::new(),
            #[cfg(feature = "tracing")]
            spans: HashMap::new(),
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// This server's epoch (nonzero, fixed for its life), sent in every
    /// `LoginReply` for diagnostics: loss is told per stream, by its own
    /// epoch.
    pub fn server_epoch(&self) -> u64 {
        self.epoch
    }

    /// A new connection. It must log in within `login_timeout`.
    pub fn accept(&mut self, now: Instant) -> ConnId {
        self.accept_from(now, None)
    }

    /// A new connection from `peer` (its IP address, when the transport
    /// knows it): logins are rate limited per address
    /// (`rate_limits.logins_per_address`).
    pub fn accept_from(&mut self, now: Instant, peer: Option<std::net::IpAddr>) -> ConnId {
        let now = self.tick(now);
        let id = ConnId(self.next_conn);
        self.next_conn = self.next_conn.saturating_add(1);
        self.conns.insert(id, Conn::new(now));
        if let Some(ip) = peer {
            self.peers.insert(id, ip);
        }
        #[cfg(feature = "tracing")]
        self.spans.insert(
            id,
            tracing::info_span!("conn", id = id.0, peer = ?peer, uid = tracing::field::Empty),
        );
        log!(debug, "{id} accepted");
        self.timers
            .insert((add(now, self.config.idle_timeout / 2), Timer::Idle(id)));
        self.timers
            .insert((add(now, self.config.login_timeout), Timer::Login(id)));
        id
    }

    /// The largest frame `conn` may send now: `pre_login_max_frame_size`
    /// until it has logged in, then `limits.max_frame_size`. A transport
    /// should cut frames with this bound (the server checks it again).
    pub fn max_frame_size(&self, conn: ConnId) -> usize {
        match self.conns.get(&conn) {
            Some(c) if c.instance.is_some() => self.config.limits.max_frame_size,
            _ => self
                .config
                .pre_login_max_frame_size
                .min(self.config.limits.max_frame_size),
        }
    }

    /// One whole frame (no length prefix) received on `conn`. Unknown or
    /// closing connections are ignored.
    pub fn handle_frame(&mut self, now: Instant, conn: ConnId, frame: Bytes) {
        enter_span!(self.conn_span(conn));
        let now = self.tick(now);
        let max = self.max_frame_size(conn);
        let Some(c) = self.conns.get_mut(&conn).filter(|c| !c.closing) else {
            log!(trace, "frame on {conn} ignored: not open");
            self.stale_inputs += 1;
            return;
        };
        c.last_recv = now;
        c.pinged = false;
        let frame = match decode_frame(frame, max) {
            Ok(f) => f,
            Err(e) => return self.protocol_error(conn, e),
        };
        let rid = frame.request_id;
        match frame.body {
            Body::Ping(p) => self.pong(conn, rid, p.nonce),
            Body::Pong(_) => {}
            Body::Ack(a) => self.handle_ack(conn, a.p2p_seq),
            Body::Close(_) => self.close_conn(conn, CloseReason::ClosedByPeer),
            other if other.kind() != BodyKind::Request => self.protocol_error(
                conn,
                WireError::Unexpected("a reply or push sent to the server"),
            ),
            request if rid == 0 => {
                let _ = request;
                self.protocol_error(
                    conn,
                    WireError::InvalidField {
                        field: "request_id",
                        reason: "a request needs a non-zero request_id",
                    },
                )
            }
            request => self.handle_request(conn, rid, request),
        }
    }

    /// A byte-stream error before any frame could be cut out (an oversized or
    /// zero length prefix): closes `conn` as a protocol error, like a
    /// malformed frame.
    pub fn handle_stream_error(&mut self, now: Instant, conn: ConnId, error: WireError) {
        enter_span!(self.conn_span(conn));
        self.tick(now);
        if self.conns.get(&conn).is_some_and(|c| !c.closing) {
            self.protocol_error(conn, error);
        } else {
            self.stale_inputs += 1;
        }
    }

    /// The transport of `conn` closed (not a logout), or was closed as asked
    /// by [`Server::poll_transport`]: its instance stays a member of its
    /// channels and counts as online for `presence_grace`, waiting for a
    /// resume. Forgets the connection and its queue.
    pub fn handle_disconnected(&mut self, now: Instant, conn: ConnId) {
        enter_span!(self.conn_span(conn));
        self.tick(now);
        match self.forget_conn(conn) {
            Some(mut c) => {
                if let Some(inst) = c.instance.take() {
                    self.lose_link(inst);
                }
            }
            None => {
                log!(debug, "disconnect of {conn} ignored: not open");
                self.stale_inputs += 1
            }
        }
    }

    /// Time passed: fires every deadline up to `now` (idle and login
    /// timeouts, grace ends, batched notices, retention sweeps).
    pub fn handle_timeout(&mut self, now: Instant) {
        let now = self.tick(now);
        while let Some(&(at, timer)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.pop_first();
            self.fire(now, timer);
        }
    }

    /// A connection with queued output, for [`Server::poll_transmit`].
    ///
    /// Level-triggered, in passes: one pass reports every connection that
    /// has output, once each, then returns `None`; the next call starts a
    /// new pass. So a driver that leaves frames queued (its socket is full)
    /// is told about that connection again on its next pass, and a loop
    /// `while let Some(c) = poll_ready()` always ends.
    pub fn poll_ready(&mut self) -> Option<ConnId> {
        self.ready.next(&mut self.conns)
    }

    /// The next frame (no length prefix) to send on `conn`.
    pub fn poll_transmit(&mut self, conn: ConnId) -> Option<Bytes> {
        self.conns.get_mut(&conn)?.pop()
    }

    /// A connection to close, and why: send what [`Server::poll_transmit`]
    /// still holds for it (its `Close` frame, mostly), then close it and call
    /// [`Server::handle_disconnected`].
    pub fn poll_transport(&mut self) -> Option<TransportAction> {
        self.closes.pop_front()
    }

    /// Drains every output once: each ready connection's frames (while
    /// `sink.writable(conn)`), then the connections to close, each after
    /// its remaining frames. No output creates another, so one drain after
    /// each input is enough; frames a full transport did not take are
    /// reported again by the next drain.
    pub fn drain(&mut self, sink: &mut impl Sink) {
        while let Some(conn) = self.poll_ready() {
            self.offer(conn, sink);
        }
        while let Some(action) = self.poll_transport() {
            let TransportAction::Close { conn, .. } = action;
            self.offer(conn, sink);
            sink.transport(action);
        }
    }

    /// `conn`'s queued frames, for as long as `sink` takes them.
    fn offer(&mut self, conn: ConnId, sink: &mut impl Sink) {
        while sink.writable(conn) {
            let Some(frame) = self.poll_transmit(conn) else {
                break;
            };
            sink.transmit(conn, frame);
        }
    }

    /// Closes every open connection with `Close{4006}` (reported by
    /// [`Server::poll_transport`] like any other close): call it before stopping,
    /// then flush what [`Server::poll_transmit`] holds. Instances keep their
    /// grace period, as for any lost link.
    pub fn shutdown(&mut self, now: Instant) {
        self.tick(now);
        let open: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| !c.closing)
            .map(|(id, _)| *id)
            .collect();
        for id in open {
            self.close_conn(id, CloseReason::Shutdown);
        }
    }

    /// When [`Server::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.first().map(|(t, _)| *t)
    }

    /// Inputs ignored because they named a connection that is closed or
    /// being closed (a frame read after the server decided to close it, a
    /// second disconnect).
    pub fn stale_inputs(&self) -> u64 {
        self.stale_inputs
    }

    /// Open connections (accepted, not closed, not being closed).
    pub fn connection_count(&self) -> usize {
        self.conns.values().filter(|c| !c.closing).count()
    }

    /// Bytes queued for `conn` (0 for an unknown connection).
    pub fn queued_bytes(&self, conn: ConnId) -> usize {
        self.conns.get(&conn).map_or(0, |c| c.queued_bytes)
    }

    /// Live instances (connected or within their grace period).
    pub fn instance_count(&self) -> usize {
        self.instances.len()
    }

    /// Channels the server keeps (with members, or with retained messages).
    pub fn channel_count(&self) -> usize {
        self.channels.len()
    }

    /// Uids with a P2P inbox.
    pub fn inbox_count(&self) -> usize {
        self.inboxes.len()
    }

    /// Message ids remembered for answering re-sent sends.
    pub fn remembered_send_ids(&self) -> usize {
        self.sent_ids.len()
    }

    /// Uids and addresses with rate-limit state (what they owe): the sweep
    /// forgets those that owe nothing, so this stays bounded by the active.
    pub fn rate_limit_records(&self) -> usize {
        self.uid_rates.len() + self.login_rates.len()
    }

    // ----- internals -----

    /// Forgets `conn`: its record and what is kept beside it.
    fn forget_conn(&mut self, conn: ConnId) -> Option<Conn> {
        self.peers.remove(&conn);
        #[cfg(feature = "tracing")]
        self.spans.remove(&conn);
        self.conns.remove(&conn)
    }

    /// `conn`'s span (none for an unknown connection).
    #[cfg(feature = "tracing")]
    fn conn_span(&self, conn: ConnId) -> tracing::Span {
        self.spans
            .get(&conn)
            .cloned()
            .unwrap_or_else(tracing::Span::none)
    }

    /// Names the uid of `conn` in its span, once it logged in.
    #[cfg(feature = "tracing")]
    fn note_uid(&self, conn: ConnId, uid: u64) {
        if let Some(span) = self.spans.get(&conn) {
            span.record("uid", uid);
        }
    }

    fn tick(&mut self, now: Instant) -> Instant {
        if now > self.now {
            self.now = now;
        }
        self.now
    }

    /// Wall-clock unix milliseconds now.
    fn unix_ms(&self) -> u64 {
        let since = self.now.saturating_duration_since(self.start).as_millis();
        self.unix_ms_at_start
            .saturating_add(u64::try_from(since).unwrap_or(u64::MAX))
    }

    /// The instant at which the wall clock reads `unix_ms` (the start, for
    /// times before it).
    fn instant_of_unix_ms(&self, unix_ms: u64) -> Instant {
        let since = unix_ms.saturating_sub(self.unix_ms_at_start);
        add(self.start, Duration::from_millis(since))
    }

    fn random_nonzero(&mut self) -> u64 {
        loop {
            let v = splitmix64(&mut self.rng);
            if v != 0 {
                return v;
            }
        }
    }

    fn fire(&mut self, now: Instant, timer: Timer) {
        match timer {
            Timer::Idle(id) => self.idle_check(now, id),
            Timer::Login(id) => {
                if self
                    .conns
                    .get(&id)
                    .is_some_and(|c| !c.closing && !c.logged_in_once)
                {
                    self.close_conn(id, CloseReason::LoginTimeout);
                }
            }
            Timer::Linger(id) => {
                if self.conns.get(&id).is_some_and(|c| c.closing) {
                    self.forget_conn(id);
                }
            }
            Timer::Grace(inst) => self.grace_check(now, inst),
            Timer::TokenWarning(inst, exp) => self.token_timer(inst, exp, false),
            Timer::TokenDeadline(inst, exp) => self.token_timer(inst, exp, true),
            Timer::Notice(ch) => self.flush_notices(ch),
            Timer::Sweep => {
                self.sweep(now);
                self.timers.insert((
                    add(
                        now,
                        self.config.sweep_interval.max(Duration::from_millis(1)),
                    ),
                    Timer::Sweep,
                ));
            }
        }
    }

    /// The heartbeat: a link silent for half the idle timeout gets a `Ping`
    /// (once per silence), a link silent for all of it is closed (1005).
    fn idle_check(&mut self, now: Instant, id: ConnId) {
        let idle = self.config.idle_timeout;
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        if c.closing {
            return;
        }
        let (ping_at, close_at) = (add(c.last_recv, idle / 2), add(c.last_recv, idle));
        if close_at <= now {
            return self.close_conn(id, CloseReason::IdleTimeout);
        }
        if ping_at <= now && !c.pinged {
            c.pinged = true;
            self.ping_nonce = self.ping_nonce.wrapping_add(1);
            let nonce = self.ping_nonce;
            self.reply(id, 0, Body::Ping(wire::Ping { nonce }));
        }
        let next = if ping_at <= now { close_at } else { ping_at };
        self.timers.insert((next, Timer::Idle(id)));
    }

    /// Forgets aged-out messages, the channels left with nothing to keep,
    /// and the message ids past their window. Inboxes stay (empty ones
    /// cost little; forgetting one would change its stream's epoch and
    /// report a loss to a client that lost nothing); `max_inbox_users`
    /// bounds them.
    fn sweep(&mut self, now: Instant) {
        let age = self.config.channel_retention_age;
        let (channel_retention, inbox_retention) = (
            self.config.channel_retention(),
            self.config.inbox_retention(),
        );
        self.channels.retain(|_, ch| {
            ch.log.prune(now, channel_retention);
            // A departure older than the retention has nothing left to replay.
            ch.departed
                .retain(|_, (_, at)| now.saturating_duration_since(*at) < age);
            !ch.is_forgettable()
        });
        let channels = &self.channels;
        self.channel_index
            .retain(|_, num| channels.contains_key(num));
        for inbox in self.inboxes.values_mut() {
            inbox.log.prune(now, inbox_retention);
        }
        self.sent_ids.sweep(now, self.config.send_dedupe_window);
        self.uid_rates.retain(|_, r| !r.is_idle(now));
        self.login_rates.retain(|_, b| !b.is_idle(now));
    }

    /// The reply of an earlier successful send of `who` with message `id`
    /// to `to`, when remembered: a re-send is answered with it and delivers
    /// nothing. 2001 for id 0, 2013 for an id used to another destination.
    fn sent_before(
        &self,
        who: (u32, u64),
        id: u64,
        to: Destination,
    ) -> Result<Option<wire::SendReply>, ServiceError> {
        self.sent_ids
            .lookup(who, id, to, self.now, self.config.send_dedupe_window)
    }

    /// Remembers a successful send for [`Server::sent_before`].
    fn remember_sent(&mut self, who: (u32, u64), id: u64, to: Destination, r: &wire::SendReply) {
        let bounds = (self.config.send_dedupe_window, self.config.send_dedupe_max);
        self.sent_ids.remember(who, id, to, r, self.now, bounds);
    }

    /// Counts `bytes` newly retained by `app`, then enforces the app's
    /// budget and the server's: past either, the largest histories (of that
    /// app; for the server's, of the largest app) lose their oldest
    /// messages down to 90% of it, so one app never evicts another's and a
    /// user's many small histories go before anyone's one. Totals are
    /// exact only then, so the cost is amortised over a tenth of the cap.
    fn retained(&mut self, app: u32, bytes: usize) {
        let app_cap = self.config.app_max_retained_bytes;
        let estimate = self.app_retained.entry(app).or_insert(0);
        *estimate = estimate.saturating_add(bytes);
        if *estimate > app_cap {
            let left = self.evict_largest(app, app_cap / 10 * 9);
            self.app_retained.insert(app, left);
        }
        self.retained_estimate = self.retained_estimate.saturating_add(bytes);
        let cap = self.config.max_retained_bytes;
        if self.retained_estimate <= cap {
            return;
        }
        let target = cap / 10 * 9;
        let mut totals: HashMap<u32, usize> = HashMap::new();
        for ch in self.channels.values() {
            *totals.entry(ch.appid).or_default() += ch.log.bytes();
        }
        for ((a, _), inbox) in &self.inboxes {
            *totals.entry(*a).or_default() += inbox.log.bytes();
        }
        let mut total: usize = totals.values().sum();
        while total > target {
            let Some((&largest, &has)) = totals.iter().max_by_key(|(_, b)| **b) else {
                break;
            };
            let keep = has.saturating_sub(total - target);
            let left = self.evict_largest(largest, keep);
            total = total - has + left;
            totals.remove(&largest);
            self.app_retained.insert(largest, left);
        }
        self.retained_estimate = total;
    }

    /// Evicts the oldest messages of `app`'s largest histories until its
    /// histories hold at most `target` bytes; what they hold then.
    fn evict_largest(&mut self, app: u32, target: usize) -> usize {
        let mut heap: BinaryHeap<(usize, LogId)> = self
            .channels
            .iter()
            .filter(|(_, c)| c.appid == app && !c.log.is_empty())
            .map(|(n, c)| (c.log.bytes(), LogId::Channel(*n)))
            .chain(
                self.inboxes
                    .iter()
                    .filter(|((a, _), b)| *a == app && !b.log.is_empty())
                    .map(|((a, u), b)| (b.log.bytes(), LogId::Inbox(*a, *u))),
            )
            .collect();
        let mut total: usize = heap.iter().map(|(b, _)| *b).sum();
        while total > target {
            let Some((_, id)) = heap.pop() else {
                break;
            };
            let log = match id {
                LogId::Channel(n) => self.channels.get_mut(&n).map(|c| &mut c.log),
                LogId::Inbox(a, u) => self.inboxes.get_mut(&(a, u)).map(|b| &mut b.log),
            };
            let Some(log) = log else { continue };
            if let Some(freed) = log.pop_oldest() {
                total = total.saturating_sub(freed);
            }
            if !log.is_empty() {
                heap.push((log.bytes(), id));
            }
        }
        total
    }

    fn handle_request(&mut self, conn: ConnId, rid: u64, body: Body) {
        let outcome = if let Body::Login(req) = body {
            if req.protocol_version != wire::PROTOCOL_VERSION {
                // The reason goes out first, then the link is closed: an
                // unknown version gets a clear error, not a hang.
                self.error(
                    conn,
                    rid,
                    ServiceError::new(
                        ErrorCode::UNSUPPORTED_PROTOCOL_VERSION,
                        format!(
                            "protocol version {} is not supported; this server speaks version {}",
                            req.protocol_version,
                            wire::PROTOCOL_VERSION
                        ),
                    ),
                );
                return self.close_conn(conn, CloseReason::UnsupportedVersion);
            }
            self.login(conn, req)
        } else {
            let Some(inst) = self.conns.get(&conn).and_then(|c| c.instance) else {
                // Before login only a login is a request: whatever else a
                // link sends costs it the link (it is no client of ours).
                self.error(
                    conn,
                    rid,
                    ServiceError::new(ErrorCode::UNAUTHORIZED, "not logged in: log in first"),
                );
                return self.close_conn(conn, CloseReason::NotLoggedIn);
            };
            if let Err(e) = self.token_check(inst, &body) {
                return self.error(conn, rid, e);
            }
            self.dispatch(conn, inst, body)
        };
        match outcome {
            Ok((body, after)) => {
                self.reply(conn, rid, body);
                for f in after {
                    self.send(conn, f);
                }
            }
            Err(e) => self.error(conn, rid, e),
        }
    }

    fn dispatch(&mut self, conn: ConnId, inst: u64, body: Body) -> Outcome {
        match body {
            Body::Logout(_) => self.logout(conn, inst),
            Body::RefreshToken(r) => self.refresh_token(inst, &r.token),
            Body::SetUserRegion(r) => self.set_user_region(inst, r.region),
            Body::GetInstanceInfo(_) => self.instance_info(inst),
            Body::SendToUser(r) => self.send_to_user(inst, r),
            Body::QueryOnline(r) => self.query_online(inst, &r.uids),
            Body::Join(r) => self.join(inst, r),
            Body::Leave(r) => self.leave(inst, r.channel),
            Body::SendToChannel(r) => self.send_to_channel(inst, r),
            Body::WriteUserAttributes(r) => self.write_attributes(inst, r, AttributeScope::User),
            Body::WriteChannelAttributes(r) => {
                self.write_attributes(inst, r, AttributeScope::Channel)
            }
            Body::GetUserList(k) => self.user_list(inst, Some(k)),
            Body::GetUserAttributes(r) => self.user_attributes(inst, r),
            Body::GetChannelAttributes(r) => self.channel_attributes(inst, r),
            Body::GetUserCount(r) => self.user_count(inst, r),
            Body::GetUserListByAttribute(r) => self.user_list_by_attribute(inst, r),
            Body::Fetch(r) => self.fetch(conn, inst, r),
            Body::Login(_) => Err(ServiceError::new(
                ErrorCode::ALREADY_LOGGED_IN,
                "already logged in on this connection",
            )),
            _ => Err(ServiceError::new(
                ErrorCode::INVALID_PARAMETER,
                "not a request",
            )),
        }
    }

    /// The byte budget of one replay queued for `conn`: half the queue
    /// bound, and never more than the room left in its queue (less a reply
    /// and one frame), so that replays queued back to back (a resume
    /// re-joins every channel at once) cannot close their own connection
    /// as a slow consumer. A cut-short replay says so and the client fetches
    /// the rest.
    fn replay_budget(&self, conn: Option<ConnId>) -> usize {
        let max = self.config.max_queued_bytes;
        let queued = conn
            .and_then(|c| self.conns.get(&c))
            .map_or(0, |c| c.queued_bytes);
        // Room for a reply and a frame, but never most of a small queue.
        let margin = self
            .config
            .limits
            .max_frame_size
            .saturating_mul(2)
            .min(max / 4);
        (max / 2).min(max.saturating_sub(queued).saturating_sub(margin))
    }

    /// Queues `frame` for `conn`; past `max_queued_bytes` the connection is
    /// closed as a slow consumer instead.
    fn send(&mut self, conn: ConnId, frame: Bytes) {
        let max = self.config.max_queued_bytes;
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if c.closing {
            return;
        }
        if c.push(frame, max) {
            self.ready.mark(conn, c);
            return;
        }
        c.clear();
        self.close_conn(conn, CloseReason::SlowConsumer);
    }

    /// Answers a `Ping`: one `Pong` at most is ever pending per link (a
    /// newer ping replaces it), so pings cannot pile up memory.
    fn pong(&mut self, conn: ConnId, request_id: u64, nonce: u64) {
        let max = self.config.max_queued_bytes;
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if c.closing {
            return;
        }
        if c.set_pong(request_id, nonce, max) {
            self.ready.mark(conn, c);
            return;
        }
        c.clear();
        self.close_conn(conn, CloseReason::SlowConsumer);
    }

    fn reply(&mut self, conn: ConnId, request_id: u64, body: Body) {
        let f = encode_frame(&Frame {
            request_id,
            body: Some(body),
        });
        self.send(conn, f);
    }

    fn error(&mut self, conn: ConnId, request_id: u64, e: ServiceError) {
        log!(debug, "request {request_id} on {conn} refused: {}", e);
        self.reply(
            conn,
            request_id,
            Body::Error(wire::ErrorReply {
                code: e.code.code(),
                message: e.message,
            }),
        );
    }

    fn protocol_error(&mut self, conn: ConnId, e: WireError) {
        self.close_conn(conn, CloseReason::ProtocolError(e));
    }

    /// Marks `conn` closing: queues the `Close` frame its reason calls for
    /// (past the queue bound: it is the last frame), reports it to
    /// `poll_transport` and detaches its instance (a lost link, except when the
    /// instance was kicked or taken over, which the caller handles).
    fn close_conn(&mut self, conn: ConnId, reason: CloseReason) {
        let now = self.now;
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if c.closing {
            return;
        }
        match &reason {
            CloseReason::SlowConsumer => log!(warn, "closing {conn}: {reason}"),
            CloseReason::ProtocolError(_) => log!(info, "closing {conn}: {reason}"),
            _ => log!(debug, "closing {conn}: {reason}"),
        }
        if reason.code() != 0 {
            let f = encode_frame(&Frame {
                request_id: 0,
                body: Some(Body::Close(wire::Close {
                    code: reason.code(),
                    reason: reason.to_string(),
                })),
            });
            c.push_last(f);
            self.ready.mark(conn, c);
        }
        c.closing = true;
        let inst = c.instance.take();
        self.closes.push_back(TransportAction::Close {
            conn,
            reason: reason.clone(),
        });
        self.timers
            .insert((add(now, CLOSE_LINGER), Timer::Linger(conn)));
        if let Some(inst) = inst {
            if !matches!(reason, CloseReason::Kicked | CloseReason::Replaced) {
                self.lose_link(inst);
            }
        }
    }
}

/// Encodes a push (request id 0) once, to be shared by every receiver.
fn encode_push(body: Body) -> Bytes {
    encode_frame(&Frame {
        request_id: 0,
        body: Some(body),
    })
}

/// 2007 when a push of `frame_len` bytes would exceed `max` (clients refuse
/// larger frames).
fn check_push_fits(max: usize, frame_len: usize) -> Result<(), ServiceError> {
    if frame_len > max {
        return Err(ServiceError::new(
            ErrorCode::MSG_SIZE_LIMIT_EXCEEDED,
            format!("the message would be pushed as a {frame_len}-byte frame, more than {max}"),
        ));
    }
    Ok(())
}

/// What the server asks of a connection's transport, from
/// [`Server::poll_transport`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TransportAction {
    /// Send what [`Server::poll_transmit`] still holds for `conn`, then
    /// close its transport and call [`Server::handle_disconnected`].
    Close {
        /// The connection to close.
        conn: ConnId,
        /// Why (its `Close` frame carries the code).
        reason: CloseReason,
    },
}

/// Where [`Server::drain`] puts the outputs: the driver's side of a drain.
pub trait Sink {
    /// Whether `conn`'s transport takes a frame now; frames not taken stay
    /// queued in the server (default: always).
    fn writable(&mut self, conn: ConnId) -> bool {
        let _ = conn;
        true
    }
    /// A frame (no length prefix) to write on `conn`.
    fn transmit(&mut self, conn: ConnId, frame: Bytes);
    /// Close a connection (its remaining frames were offered first).
    fn transport(&mut self, action: TransportAction);
}

/// `t + d`, or `t` itself if that is not representable (absurd durations).
fn add(t: Instant, d: Duration) -> Instant {
    t.checked_add(d).unwrap_or(t)
}

/// SplitMix64: a tiny, good-enough PRNG for ids, seeded from the config.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A wire channel key checked: a known region and a valid channel id (2001).
fn checked_key(
    limits: &crate::Limits,
    key: Option<&wire::ChannelKey>,
) -> Result<(Region, String), ServiceError> {
    let key =
        key.ok_or_else(|| ServiceError::new(ErrorCode::INVALID_PARAMETER, "channel missing"))?;
    let region = checked_region(key.region)?;
    limits.check_channel_id(&key.channel_id)?;
    Ok((region, key.channel_id.clone()))
}

fn checked_region(v: i32) -> Result<Region, ServiceError> {
    Region::from_wire(v).ok_or_else(|| {
        ServiceError::new(
            ErrorCode::INVALID_PARAMETER,
            "unknown or unspecified region",
        )
    })
}
