//! The connection side of the server: links, framing, heartbeats, token
//! checks and per-connection queues. Everything about state shared between
//! connections (instances, channels, inboxes) is the [`Hub`](super::Hub)'s;
//! a gateway talks to it in [`ToHub`] and [`ToGateway`] messages only.

use std::collections::{BTreeSet, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::auth::verify_token;
use super::conn::{CloseReason, Conn, ConnId};
use super::message::{GatewayId, ToGateway, ToHub, TokenCheck, TokenGrant};
use super::ready::ReadyList;
use super::shard::{uid_shard, ShardId};
use super::stats::{LinkKind, Stats};
use super::{add, Clock, IdMap, ServerConfig, Sink, TransportAction};
use crate::error::{ErrorCode, ServiceError, WireError};
use crate::wire::{self, decode_frame, encode_frame, Body, BodyKind, Frame};

/// How long a closing connection's record (and what is still queued for it)
/// is kept when the transport never reports it closed.
const CLOSE_LINGER: Duration = Duration::from_secs(10);

/// A gateway's deadlines. Checked lazily when they fire (the connection may
/// have moved on), so none needs cancelling.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    Idle(ConnId),
    Login(ConnId),
    Linger(ConnId),
}

/// One shard of connections: a Sans-IO machine like the [`Server`](super::Server)
/// (which is one gateway wired to one hub), for runners that spread
/// connections over threads.
///
/// Its inputs are the transport's ([`Gateway::handle_frame`],
/// [`Gateway::handle_disconnected`], time) and the hub's
/// ([`Gateway::handle_hub`]); its outputs are frames per connection
/// ([`Gateway::poll_ready`], [`Gateway::poll_transmit`]), closes
/// ([`Gateway::poll_transport`]) and messages for the hub
/// ([`Gateway::poll_hub`]).
///
/// ```
/// use std::time::Instant;
/// use hummer_channel::server::{Gateway, GatewayId, Hub, ServerConfig, DEMO_APPID};
/// use hummer_channel::wire::{self, encode_frame, Body, Frame, LoginRequest};
///
/// let (t0, unix_ms) = (Instant::now(), 1_700_000_000_000);
/// let mut gateway = Gateway::new(GatewayId(0), ServerConfig::demo(), t0, unix_ms);
/// let mut hub = Hub::new(ServerConfig::demo(), t0, unix_ms);
/// let conn = gateway.accept(t0);
/// let login = LoginRequest { protocol_version: wire::PROTOCOL_VERSION, appid: DEMO_APPID, uid: 7, ..Default::default() };
/// gateway.handle_frame(t0, conn, encode_frame(&Frame { request_id: 1, body: Some(Body::Login(login)) }));
/// // The gateway checked the frame and the token; the hub logs the uid in.
/// while let Some(m) = gateway.poll_hub() {
///     hub.handle(t0, m);
/// }
/// while let Some(m) = hub.poll_gateway() {
///     gateway.handle_hub(t0, m);
/// }
/// assert_eq!(gateway.poll_ready(), Some(conn));
/// assert!(gateway.poll_transmit(conn).is_some()); // the LoginReply
/// ```
#[derive(Debug)]
pub struct Gateway {
    id: GatewayId,
    config: ServerConfig,
    clock: Clock,
    conns: IdMap<ConnId, Conn>,
    next_conn: u64,
    ready: ReadyList,
    closes: VecDeque<TransportAction>,
    to_hub: VecDeque<(ShardId, ToHub)>,
    /// Every request is answered with this, and goes no further.
    refusing: Option<ServiceError>,
    /// The hub's shards, and the home shard of each link that asked to log
    /// in (its uid's; none with one shard).
    shards: u16,
    homes: IdMap<ConnId, ShardId>,
    /// Inputs naming a connection that is closed or closing, ignored.
    stale_inputs: u64,
    /// What each connection is beside its queue: its peer address, its
    /// kind, its requests in flight (kept apart from `conns`, which every
    /// delivery reads: small is fast).
    links: IdMap<ConnId, LinkInfo>,
    /// What this gateway counted.
    stats: Stats,
    /// The nonce of the last `Ping` sent.
    ping_nonce: u64,
    timers: BTreeSet<(Instant, Timer)>,
    /// Each connection's span (kept apart from `conns` for the same reason).
    #[cfg(feature = "tracing")]
    spans: IdMap<ConnId, tracing::Span>,
}

impl Gateway {
    /// Gateway `id` of a server configured by `config`, started at `now`
    /// when the wall clock read `unix_ms_at_now` (for token expiry).
    pub fn new(id: GatewayId, config: ServerConfig, now: Instant, unix_ms_at_now: u64) -> Gateway {
        Gateway {
            id,
            config,
            clock: Clock::new(now, unix_ms_at_now),
            conns: IdMap::default(),
            next_conn: 1,
            ready: ReadyList::default(),
            closes: VecDeque::new(),
            to_hub: VecDeque::new(),
            shards: 1,
            homes: IdMap::default(),
            stale_inputs: 0,
            refusing: None,
            links: IdMap::default(),
            stats: Stats::default(),
            ping_nonce: 0,
            timers: BTreeSet::new(),
            #[cfg(feature = "tracing")]
            spans: IdMap::default(),
        }
    }

    /// The same gateway in front of a hub of `shards` shards: each
    /// message for the hub goes to its link's home shard, that of the uid
    /// its login named (see [`Gateway::poll_hub_routed`]).
    pub fn with_shards(mut self, shards: u16) -> Gateway {
        self.shards = shards.clamp(1, super::MAX_SHARDS);
        self
    }

    /// This gateway's id.
    pub fn id(&self) -> GatewayId {
        self.id
    }

    /// Queues a message for the hub, for its link's home shard.
    fn post_hub(&mut self, m: ToHub) {
        let shard = match self.shards {
            1 => ShardId(0),
            _ => self.homes.get(&m.conn()).copied().unwrap_or(ShardId(0)),
        };
        self.to_hub.push_back((shard, m));
    }

    /// A new connection. It must log in within `login_timeout`.
    pub fn accept(&mut self, now: Instant) -> ConnId {
        self.accept_from(now, None)
    }

    /// A new connection from `peer` (its IP address, when the transport
    /// knows it): logins are rate limited per address.
    pub fn accept_from(&mut self, now: Instant, peer: Option<IpAddr>) -> ConnId {
        self.accept_link(now, peer, LinkKind::Tcp)
    }

    /// A new connection of `kind` from `peer`: as [`Gateway::accept_from`],
    /// counted by kind in [`Gateway::stats`].
    pub fn accept_link(&mut self, now: Instant, peer: Option<IpAddr>, kind: LinkKind) -> ConnId {
        let now = self.clock.tick(now);
        let id = ConnId::new(self.id, self.next_conn);
        self.next_conn = self.next_conn.saturating_add(1);
        self.conns.insert(id, Conn::new(now));
        self.links.insert(
            id,
            LinkInfo {
                peer,
                kind,
                waiting: Vec::new(),
                replays: Vec::new(),
            },
        );
        self.stats.note_accepted(kind);
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
    /// until it has logged in, then `limits.max_frame_size`.
    pub fn max_frame_size(&self, conn: ConnId) -> usize {
        match self.conns.get(&conn) {
            Some(c) if c.logged_in || c.login_pending => self.config.limits.max_frame_size,
            _ => self
                .config
                .pre_login_max_frame_size
                .min(self.config.limits.max_frame_size),
        }
    }

    /// One whole frame (no length prefix) received on `conn`: decoded once
    /// here; requests go to the hub. Unknown or closing connections are
    /// ignored.
    pub fn handle_frame(&mut self, now: Instant, conn: ConnId, frame: Bytes) {
        enter_span!(self.conn_span(conn));
        let now = self.clock.tick(now);
        let max = self.max_frame_size(conn);
        let Some(c) = self.conns.get_mut(&conn).filter(|c| !c.closing) else {
            log!(trace, "frame on {conn} ignored: not open");
            self.stale_inputs += 1;
            return;
        };
        c.last_recv = now;
        c.pinged = false;
        let queued = c.queued_bytes;
        let peek = wire::peek_frame(&frame);
        if let Some(p) = peek {
            self.stats.note_frame_in(p.body_tag);
        }
        let frame = match decode_frame(frame, max) {
            Ok(f) => f,
            Err(e) => return self.close_conn(conn, CloseReason::ProtocolError(e)),
        };
        let request_id = frame.request_id;
        let replays = may_replay(&frame.body);
        match frame.body {
            Body::Ping(p) => self.pong(conn, request_id, p.nonce),
            Body::Pong(_) => {}
            Body::Ack(a) => self.post_hub(ToHub::Ack {
                conn,
                seq: a.p2p_seq,
            }),
            Body::Close(_) => self.close_conn(conn, CloseReason::ClosedByPeer),
            other if other.kind() != BodyKind::Request => self.close_conn(
                conn,
                CloseReason::ProtocolError(WireError::Unexpected(
                    "a reply or push sent to the server",
                )),
            ),
            _ if request_id == 0 => self.close_conn(
                conn,
                CloseReason::ProtocolError(WireError::InvalidField {
                    field: "request_id",
                    reason: "a request needs a non-zero request_id",
                }),
            ),
            // Refused here while the runner says so: nothing goes on.
            _ if self.refused(conn, request_id) => {}
            Body::Login(request) => {
                let queued = self.note_request(conn, request_id, (peek, now), replays, queued);
                self.login(conn, request_id, request, queued)
            }
            body => {
                let queued = self.note_request(conn, request_id, (peek, now), replays, queued);
                self.post_hub(ToHub::Request {
                    conn,
                    request_id,
                    body,
                    queued,
                })
            }
        }
    }

    /// Request `request_id` of `conn` goes to the hub (read at `now`,
    /// `peek` its frame's outline; `replays` whether it may replay): starts
    /// its timing (a few in flight per link at most: a client that
    /// pipelines more is not timed for them), and says what it reports as
    /// queued: the link's `queued` bytes, and half the queue bound for each
    /// of its replays not answered yet. The hub sizes a replay against the
    /// queue (at most half of its bound), but a replay it made for an
    /// earlier request may still be on its way here (between threads, from
    /// another shard, or held until the store has what it shows): counting
    /// each as the most it may be keeps pipelined rejoins within the queue
    /// together. A request that may replay is then waited for in turn.
    fn note_request(
        &mut self,
        conn: ConnId,
        request_id: u64,
        (peek, now): (Option<wire::FramePeek>, Instant),
        replays: bool,
        queued: usize,
    ) -> usize {
        let half = self.config.max_queued_bytes / 2;
        let Some(link) = self.links.get_mut(&conn) else {
            return queued;
        };
        if let Some(p) = peek.filter(|_| link.waiting.len() < TIMED_REQUESTS_PER_LINK) {
            link.waiting.push((request_id, p.body_tag, now));
        }
        let waiting = half.saturating_mul(link.replays.len());
        // Past REPLAYS_WAITED, a request finds the queue taken whole and
        // replays nothing: it need not be waited for.
        if replays && link.replays.len() < REPLAYS_WAITED {
            link.replays.push(request_id);
        }
        queued.saturating_add(waiting)
    }

    /// A byte-stream error before any frame could be cut out (an oversized or
    /// zero length prefix): closes `conn` as a protocol error.
    pub fn handle_stream_error(&mut self, now: Instant, conn: ConnId, error: WireError) {
        enter_span!(self.conn_span(conn));
        self.clock.tick(now);
        if self.conns.get(&conn).is_some_and(|c| !c.closing) {
            self.close_conn(conn, CloseReason::ProtocolError(error));
        } else {
            self.stale_inputs += 1;
        }
    }

    /// The transport saw `conn`'s peer alive without a frame (a WebSocket
    /// ping): it counts as activity for the idle timeout, as a frame does.
    pub fn handle_activity(&mut self, now: Instant, conn: ConnId) {
        let now = self.clock.tick(now);
        match self.conns.get_mut(&conn).filter(|c| !c.closing) {
            Some(c) => {
                c.last_recv = now;
                c.pinged = false;
            }
            None => self.stale_inputs += 1,
        }
    }

    /// The transport of `conn` closed: forgets it and its queue, and tells
    /// the hub (its instance keeps its presence for the grace period).
    pub fn handle_disconnected(&mut self, now: Instant, conn: ConnId) {
        enter_span!(self.conn_span(conn));
        self.clock.tick(now);
        let home = self.homes.get(&conn).copied().unwrap_or(ShardId(0));
        match self.forget_conn(conn) {
            Some(c) if !c.closing => {
                self.stats.note_close(None);
                self.to_hub.push_back((home, ToHub::LinkLost { conn }))
            }
            Some(_) => {}
            None => {
                log!(debug, "disconnect of {conn} ignored: not open");
                self.stale_inputs += 1
            }
        }
    }

    /// A message from the hub.
    pub fn handle_hub(&mut self, now: Instant, message: ToGateway) {
        self.clock.tick(now);
        match message {
            ToGateway::Send { conn, frame } => self.send(conn, frame),
            ToGateway::Broadcast { conns, frame } => {
                if let Some(p) = wire::peek_frame(&frame) {
                    self.stats.note_deliveries(p.body_tag, conns.len() as u64);
                }
                for conn in conns {
                    self.queue(conn, frame.clone());
                }
            }
            ToGateway::LoggedIn { conn, uid } => {
                if let Some(c) = self.conns.get_mut(&conn) {
                    if uid.is_some() && !c.logged_in {
                        let kind = self.links.get(&conn).map(|l| l.kind).unwrap_or_default();
                        self.stats.note_login(kind);
                    }
                    c.logged_in = uid.is_some();
                    c.logged_in_once |= uid.is_some();
                    c.login_pending = false;
                }
                #[cfg(feature = "tracing")]
                if let (Some(span), Some(uid)) = (self.spans.get(&conn), uid) {
                    span.record("uid", uid);
                }
            }
            ToGateway::Close { conn, reason } => self.close_conn(conn, reason),
            ToGateway::Answered { conn, request_id } => {
                if let Some(link) = self.links.get_mut(&conn) {
                    link.replay_queued(request_id);
                }
            }
        }
    }

    /// Time passed: fires the idle, login and linger deadlines up to `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let now = self.clock.tick(now);
        while let Some(&(at, timer)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.pop_first();
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
            }
        }
    }

    /// When [`Gateway::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.first().map(|(t, _)| *t)
    }

    /// The next message for the hub (with one shard; see
    /// [`Gateway::poll_hub_routed`] for several).
    pub fn poll_hub(&mut self) -> Option<ToHub> {
        self.to_hub.pop_front().map(|(_, m)| m)
    }

    /// The next message for the hub, and the shard it is for.
    pub fn poll_hub_routed(&mut self) -> Option<(ShardId, ToHub)> {
        self.to_hub.pop_front()
    }

    /// A connection with queued output; level-triggered, in passes (see
    /// [`Server::poll_ready`](super::Server::poll_ready)).
    pub fn poll_ready(&mut self) -> Option<ConnId> {
        self.ready.next(&mut self.conns)
    }

    /// The next frame (no length prefix) to send on `conn`.
    pub fn poll_transmit(&mut self, conn: ConnId) -> Option<Bytes> {
        self.conns.get_mut(&conn)?.pop()
    }

    /// A connection to close, and why (see
    /// [`Server::poll_transport`](super::Server::poll_transport)).
    pub fn poll_transport(&mut self) -> Option<TransportAction> {
        self.closes.pop_front()
    }

    /// Drains the frames and closes once (see
    /// [`Server::drain`](super::Server::drain)); messages for the hub stay
    /// for [`Gateway::poll_hub`].
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

    /// Closes every open connection with `Close{4006}`.
    pub fn shutdown(&mut self, now: Instant) {
        self.clock.tick(now);
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

    /// Everything this gateway held is gone at once, as when its process
    /// dies: every connection (open or closing) with its queue, its
    /// deadlines, what was still to report and what it had not yet handed
    /// to the hub. Nothing is queued, for the hub or anyone: a dead process
    /// says nothing. Returns the connections it held, in id order. Its
    /// counters and its next connection id stay (ids are never reused).
    pub(crate) fn crash(&mut self) -> Vec<ConnId> {
        let mut held: Vec<ConnId> = self.conns.keys().copied().collect();
        held.sort_unstable();
        let open = self.conns.values().filter(|c| !c.closing).count();
        for _ in 0..open {
            self.stats.note_close(None);
        }
        self.conns.clear();
        self.links.clear();
        self.homes.clear();
        self.ready = ReadyList::default();
        self.closes.clear();
        self.to_hub.clear();
        self.timers.clear();
        #[cfg(feature = "tracing")]
        self.spans.clear();
        log!(info, "gateway {} died with {} links", self.id.0, held.len());
        held
    }

    /// A snapshot of this gateway's counters, with its links open by kind
    /// and the bytes queued for them now (see [`Stats`]).
    pub fn stats(&self) -> Stats {
        let mut s = self.stats.clone();
        for l in self.links.values() {
            s.note_link_open(l.kind);
        }
        let queued: usize = self.conns.values().map(|c| c.queued_bytes).sum();
        s.set_queued_bytes(queued as u64);
        s
    }

    /// Inputs ignored because they named a closed or closing connection.
    pub fn stale_inputs(&self) -> u64 {
        self.stale_inputs
    }

    /// Open connections (accepted, not closed, not being closed).
    pub fn connection_count(&self) -> usize {
        self.conns.values().filter(|c| !c.closing).count()
    }

    /// Answers request `request_id` with the refusal, if one is set.
    fn refused(&mut self, conn: ConnId, request_id: u64) -> bool {
        let Some(e) = self.refusing.clone() else {
            return false;
        };
        self.stats.note_refusal(e.code.code());
        self.send(conn, error_frame(request_id, e));
        true
    }

    /// While `Some`, every request (a login too) is answered with this
    /// error at once and goes no further; pings and the rest of the link's
    /// life go on. A runner sets it while the hubs cannot store what
    /// requests would change (`ErrorCode::SERVICE_UNAVAILABLE`).
    pub fn set_refusing(&mut self, refusal: Option<ServiceError>) {
        self.refusing = refusal;
    }

    /// Bytes queued for `conn` (0 for an unknown connection).
    pub fn queued_bytes(&self, conn: ConnId) -> usize {
        self.conns.get(&conn).map_or(0, |c| c.queued_bytes)
    }

    // ----- internals -----

    /// A login: the protocol version and the token are checked here (the
    /// token's signature is the costly part of a login); the hub does the
    /// rest.
    fn login(&mut self, conn: ConnId, request_id: u64, request: wire::LoginRequest, queued: usize) {
        if request.protocol_version != wire::PROTOCOL_VERSION {
            // The reason goes out first, then the link is closed: an
            // unknown version gets a clear error, not a hang.
            let e = ServiceError::new(
                ErrorCode::UNSUPPORTED_PROTOCOL_VERSION,
                format!(
                    "protocol version {} is not supported; this server speaks version {}",
                    request.protocol_version,
                    wire::PROTOCOL_VERSION
                ),
            );
            self.stats.note_refusal(e.code.code());
            self.send(conn, error_frame(request_id, e));
            return self.close_conn(conn, CloseReason::UnsupportedVersion);
        }
        let token = self.check_token(&request);
        let (mut busy, mut known) = (false, false);
        if let Some(c) = self.conns.get_mut(&conn) {
            busy = c.logged_in || c.login_pending;
            known = true;
            if token.is_ok() {
                c.login_pending = true;
            }
        }
        if self.shards > 1 && known && (!busy || !self.homes.contains_key(&conn)) {
            // A link logged in (or logging in) stays with its home, which
            // refuses a second login; another login goes to its uid's.
            let home = uid_shard(request.appid, request.uid, self.shards);
            self.homes.insert(conn, home);
        }
        self.post_hub(ToHub::Login {
            conn,
            request_id,
            request,
            token,
            peer: self.links.get(&conn).and_then(|l| l.peer),
            queued,
        });
    }

    fn check_token(&self, request: &wire::LoginRequest) -> TokenCheck {
        let app = self
            .config
            .app(request.appid)
            .ok_or_else(|| ServiceError::new(ErrorCode::APPID_UNAVAILABLE, "unknown appid"))?;
        if request.token.is_empty() {
            if !app.allow_appid_mode {
                return Err(ServiceError::new(
                    ErrorCode::INVALID_TOKEN,
                    "this app requires a token",
                ));
            }
            return Ok(TokenGrant {
                is_anonymous: true,
                expires_at_s: None,
            });
        }
        let now_s = self.clock.unix_ms() / 1000;
        let exp = verify_token(
            app.secret.as_deref(),
            &request.token,
            request.appid,
            request.uid,
            now_s,
        )?;
        Ok(TokenGrant {
            is_anonymous: false,
            expires_at_s: exp,
        })
    }

    /// Forgets `conn`: its record and what is kept beside it.
    fn forget_conn(&mut self, conn: ConnId) -> Option<Conn> {
        self.links.remove(&conn);
        if self.shards > 1 {
            self.homes.remove(&conn);
        }
        #[cfg(feature = "tracing")]
        self.spans.remove(&conn);
        self.conns.remove(&conn)
    }

    #[cfg(feature = "tracing")]
    fn conn_span(&self, conn: ConnId) -> tracing::Span {
        self.spans
            .get(&conn)
            .cloned()
            .unwrap_or_else(tracing::Span::none)
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
            let ping = encode_frame(&Frame {
                request_id: 0,
                body: Some(Body::Ping(wire::Ping {
                    nonce: self.ping_nonce,
                })),
            });
            self.send(id, ping);
        }
        let next = if ping_at <= now { close_at } else { ping_at };
        self.timers.insert((next, Timer::Idle(id)));
    }

    /// Queues `frame` for `conn`, counted as a delivery; a reply ends its
    /// request's timing.
    fn send(&mut self, conn: ConnId, frame: Bytes) {
        if let Some(p) = wire::peek_frame(&frame) {
            self.stats.note_deliveries(p.body_tag, 1);
            if p.request_id != 0 {
                self.note_reply(conn, p);
            }
        }
        self.queue(conn, frame);
    }

    /// The reply to a request of `conn` is queued: its timing ends, if it
    /// was timed. A refusal replays nothing: its replay is no longer
    /// waited for (an answer is, until [`ToGateway::Answered`]).
    fn note_reply(&mut self, conn: ConnId, reply: wire::FramePeek) {
        let request_id = reply.request_id;
        let Some(link) = self.links.get_mut(&conn) else {
            return;
        };
        if reply.body_tag == ERROR_TAG {
            link.replay_queued(request_id);
        }
        if let Some(i) = link.waiting.iter().position(|w| w.0 == request_id) {
            let (_, tag, since) = link.waiting.swap_remove(i);
            let took = self.clock.now().saturating_duration_since(since);
            self.stats.note_latency(tag, took);
        }
    }

    /// Queues `frame` for `conn`; past `max_queued_bytes` the connection is
    /// closed as a slow consumer instead.
    fn queue(&mut self, conn: ConnId, frame: Bytes) {
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
        if c.set_pong(request_id, nonce, max) {
            self.ready.mark(conn, c);
            return;
        }
        c.clear();
        self.close_conn(conn, CloseReason::SlowConsumer);
    }

    /// Marks `conn` closing: queues the `Close` frame its reason calls for
    /// (past the queue bound: it is the last frame), reports it to
    /// `poll_transport`, and tells the hub the link is lost (unless the hub
    /// asked for the close: it knows).
    fn close_conn(&mut self, conn: ConnId, reason: CloseReason) {
        let now = self.clock.now();
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
        self.stats.note_close(Some(&reason));
        if !reason.decided_by_hub() {
            self.post_hub(ToHub::LinkLost { conn });
        }
        self.closes
            .push_back(TransportAction::Close { conn, reason });
        self.timers
            .insert((add(now, CLOSE_LINGER), Timer::Linger(conn)));
    }
}

/// Requests timed at once per link, at most.
const TIMED_REQUESTS_PER_LINK: usize = 8;

/// Replays waited for at once per link, at most: two may take the whole
/// queue already.
const REPLAYS_WAITED: usize = 2;

/// Whether a request may queue a replay (a login, which replays the
/// inbox past its acknowledged position even without a resume; a rejoin;
/// a fetch).
fn may_replay(body: &Body) -> bool {
    match body {
        Body::Login(_) => true,
        Body::Join(r) => r.rejoin,
        Body::Fetch(_) => true,
        _ => false,
    }
}

/// The field number of `Frame.error` (`wire::body_name`).
const ERROR_TAG: u32 = 5;

/// What a gateway keeps of a link beside its queue.
#[derive(Debug)]
struct LinkInfo {
    /// Its peer's address, when the transport told it.
    peer: Option<IpAddr>,
    kind: LinkKind,
    /// Requests sent to the hub and not answered yet: request id, body
    /// tag, when the frame arrived.
    waiting: Vec<(u64, u32, Instant)>,
    /// The requests that may replay, sent to the hub and not answered
    /// whole yet (at most [`REPLAYS_WAITED`]).
    replays: Vec<u64>,
}

impl LinkInfo {
    /// Request `request_id`'s replay, if it was waited for, is queued.
    fn replay_queued(&mut self, request_id: u64) {
        if let Some(i) = self.replays.iter().position(|&r| r == request_id) {
            self.replays.swap_remove(i);
        }
    }
}

/// An `ErrorReply` frame.
pub(super) fn error_frame(request_id: u64, e: ServiceError) -> Bytes {
    encode_frame(&Frame {
        request_id,
        body: Some(Body::Error(wire::ErrorReply {
            code: e.code.code(),
            message: e.message,
        })),
    })
}
