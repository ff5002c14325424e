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
//! # Gateways and hubs
//!
//! A `Server` is two Sans-IO machines wired together: a [`Gateway`] (links,
//! framing and decoding, heartbeats, token checks, per-connection queues and
//! slow consumers) and a [`Hub`] (instances and presence, channels,
//! attributes, sequencing and retention, inboxes, notices). They talk only
//! in typed messages, [`ToHub`] and [`ToGateway`], in order per pair, so a
//! runner may put many gateways on many threads in front of one hub
//! (`hummer-server --threads N`); [`Server::with_gateways`] wires several
//! gateways in one machine for simulation. `docs/server.md` has the picture.
//!
//! The hub may itself be split into shards ([`Server::with_shape`],
//! [`Hub::new_shard`]): each (appid, uid) and each channel has one owner,
//! found by [`uid_shard`] and [`channel_shard`]; a link's requests go to its
//! uid's shard, which forwards their channel part to the channel's shard
//! and relays what comes back, in [`ToShard`] messages, in order per pair
//! of shards. With one shard nothing is forwarded.
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

mod api;
mod auth;
mod channel;
mod config;
mod conn;
mod cross;
mod durable;
mod gateway;
mod hooks;
mod hub;
mod inbox;
mod message;
mod node_codec;
mod presence;
mod rate;
mod ready;
mod recent_sends;
mod sent_ids;
mod seq_log;
mod shard;
mod stats;
mod store;

use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::error::{ErrorCode, ServiceError, WireError};
use crate::types::Region;
use crate::wire::{self, encode_frame, Body, Frame};

pub use api::{
    ApiCall, ApiMerge, ApiReply, ApiRequest, ChannelInfo, HistoryMessage, Sent, KICK_CODE_MAX,
    KICK_CODE_MIN, MAX_BAN, MAX_HISTORY, MAX_LISTED_MEMBERS, MAX_PAGE,
};
pub use auth::mint_token;
pub use config::{
    AppConfig, ConfigError, RateLimit, RateLimits, ServerConfig, DEMO_APPID, DEMO_SECRET,
    MIN_SECRET_LEN,
};
pub use conn::{CloseReason, ConnId};
pub use durable::Restored;
pub use gateway::Gateway;
pub use hooks::{HookConfig, HookEvent, HookEventKind};
pub use hub::Hub;
pub use message::{GatewayId, ToGateway, ToHub, TokenCheck, TokenGrant};
pub use node_codec::{
    decode_node_message, encode_node_message, put_node_message, NodeMessage, MAX_NODE_FRAME,
    NODE_PROTOCOL,
};
pub use shard::{channel_shard, uid_shard, ShardId, ToShard, MAX_SHARDS};
pub use stats::{ChannelActivity, Histogram, LinkKind, Stats, BUSIEST_CHANNELS};
pub use store::{StoreBatch, StoreKey, StoreKind, StoreWrite, StoredObject};

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
    gateways: Vec<Gateway>,
    /// The hub's shards (one: the hub is whole).
    hubs: Vec<Hub>,
    /// The configuration as given (shards split the retention budgets).
    config: ServerConfig,
    /// The gateway the next accepted connection goes to.
    next_gateway: usize,
    /// The gateway whose pass `poll_ready` is in.
    next_ready: usize,
    /// Messages between the machines in flight, when the wiring simulates
    /// a latency between them (`None`: each is handled at once).
    wire: Option<InFlight>,
    /// Per gateway: killed ([`Server::kill_gateway`]) and the hub has not
    /// learned of it yet ([`Server::handle_gateway_lost`]).
    dead: Vec<bool>,
}

impl Server {
    /// A server configured by `config`, started at `now`, when the wall clock
    /// read `unix_ms_at_now` (unix milliseconds). Wall-clock time afterwards
    /// is `unix_ms_at_now + (now - start)`.
    pub fn new(config: ServerConfig, now: Instant, unix_ms_at_now: u64) -> Server {
        Server::with_gateways(config, 1, now, unix_ms_at_now)
    }

    /// A server of `gateways` gateways (at least one) in front of one hub,
    /// connections spread over them in turn: the same service as
    /// [`Server::new`], with the messages between the machines crossing
    /// gateway boundaries as they do in a multi-threaded runner.
    pub fn with_gateways(
        config: ServerConfig,
        gateways: u16,
        now: Instant,
        unix_ms_at_now: u64,
    ) -> Server {
        Server::with_shape(config, gateways, 1, now, unix_ms_at_now)
    }

    /// A server of `gateways` gateways in front of a hub of `hub_shards`
    /// shards (each at least one, at most [`MAX_SHARDS`] shards): the same
    /// service, with the state split by [`uid_shard`] and [`channel_shard`]
    /// and the shards talking in [`ToShard`] messages, as they would on
    /// threads or nodes. Each shard has `1 / hub_shards` of the retention
    /// budgets (`max_retained_bytes`, `app_max_retained_bytes`).
    pub fn with_shape(
        config: ServerConfig,
        gateways: u16,
        hub_shards: u16,
        now: Instant,
        unix_ms_at_now: u64,
    ) -> Server {
        let shards = hub_shards.clamp(1, MAX_SHARDS);
        let gateways: Vec<Gateway> = (0..gateways.max(1))
            .map(|g| {
                Gateway::new(GatewayId(g), config.clone(), now, unix_ms_at_now).with_shards(shards)
            })
            .collect();
        let hubs = (0..shards)
            .map(|s| Hub::new_shard(config.clone(), ShardId(s), shards, now, unix_ms_at_now))
            .collect();
        Server {
            dead: vec![false; gateways.len()],
            gateways,
            hubs,
            config,
            next_gateway: 0,
            next_ready: 0,
            wire: None,
        }
    }

    /// Delays each message between a gateway and a hub shard, or between
    /// two shards, by a latency drawn
    /// from `range` (seeded by `seed`), in order per direction and gateway,
    /// as threads or nodes would: for simulations that look for races
    /// between the machines.
    #[cfg(feature = "sim")]
    pub(crate) fn with_message_latency(mut self, range: (Duration, Duration), seed: u64) -> Server {
        self.wire = Some(InFlight {
            range,
            rng: seed,
            order: 0,
            queue: std::collections::BTreeMap::new(),
            last: std::collections::HashMap::new(),
        });
        self
    }

    /// The configuration in force.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// This server's epoch (nonzero, fixed for its life), sent in every
    /// `LoginReply` for diagnostics: loss is told per stream, by its own
    /// epoch.
    pub fn server_epoch(&self) -> u64 {
        self.hubs[0].server_epoch()
    }

    /// A new connection. It must log in within `login_timeout`.
    ///
    /// # Panics
    ///
    /// When no gateway takes connections (every one was killed and the
    /// hub has not learned of it: see [`Server::is_accepting`]).
    pub fn accept(&mut self, now: Instant) -> ConnId {
        self.accept_from(now, None)
    }

    /// A new connection from `peer` (its IP address, when the transport
    /// knows it): logins are rate limited per address
    /// (`rate_limits.logins_per_address`). Connections go to the gateways
    /// in turn, skipping those killed ([`Server::kill_gateway`]).
    ///
    /// # Panics
    ///
    /// As [`Server::accept`].
    pub fn accept_from(&mut self, now: Instant, peer: Option<std::net::IpAddr>) -> ConnId {
        let n = self.gateways.len();
        let g = (0..n)
            .map(|k| (self.next_gateway + k) % n)
            .find(|&g| !self.dead[g])
            .expect("no gateway takes connections: every one was killed");
        self.next_gateway = (g + 1) % n;
        self.gateways[g].accept_from(now, peer)
    }

    /// Whether some gateway takes connections: every one but those killed
    /// whose loss the hub has not handled yet.
    pub fn is_accepting(&self) -> bool {
        self.dead.iter().any(|d| !d)
    }

    /// Gateway `gateway` dies, as its node's process would: it loses every
    /// connection at once, with what was queued for them, and tells the
    /// hub nothing (no `LinkLost`: the hub keeps those links until
    /// [`Server::handle_gateway_lost`]). Until then it takes no connection
    /// ([`Server::accept`] skips it), what the hub sends it is dropped, and
    /// what its former connections send is ignored (counted in
    /// [`Server::stale_inputs`]). Messages it had already handed to the
    /// hub are on their way (when the wiring has a latency) and arrive as
    /// usual.
    ///
    /// Returns the connections it held, whose transports the embedder
    /// closes now, as a dead process's would break. No
    /// [`Server::poll_transport`] is reported for them and none needs
    /// [`Server::handle_disconnected`] (the server has forgotten them; a
    /// call is ignored as stale). A gateway already dead, or unknown, holds
    /// none.
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use hummer_channel::server::{ApiCall, ApiReply, ApiRequest, GatewayId, Server, ServerConfig, DEMO_APPID};
    /// use hummer_channel::wire::{self, encode_frame, Body, Frame, LoginRequest};
    ///
    /// let t0 = Instant::now();
    /// let config = ServerConfig::demo();
    /// let grace = config.presence_grace;
    /// let mut server = Server::with_gateways(config, 2, t0, 1_700_000_000_000);
    /// let online = |server: &mut Server, now| {
    ///     let call = ApiCall { appid: DEMO_APPID, request: ApiRequest::OnlineStatus { uids: vec![7] } };
    ///     match server.api(now, call).unwrap() {
    ///         ApiReply::Online(status) => status[&7],
    ///         other => panic!("{other:?}"),
    ///     }
    /// };
    /// server.accept(t0); // on gateway 0
    /// let b = server.accept(t0);
    /// assert_eq!(b.gateway(), GatewayId(1));
    /// let login = LoginRequest { protocol_version: wire::PROTOCOL_VERSION, appid: DEMO_APPID, uid: 7, ..Default::default() };
    /// server.handle_frame(t0, b, encode_frame(&Frame { request_id: 1, body: Some(Body::Login(login)) }));
    /// assert!(online(&mut server, t0));
    ///
    /// // Gateway 1's node dies: its link breaks, the hub is told nothing.
    /// assert_eq!(server.kill_gateway(t0, GatewayId(1)), vec![b]);
    /// assert_eq!(server.poll_transport(), None);
    /// assert_eq!(server.accept(t0).gateway(), GatewayId(0), "gateway 1 is skipped");
    /// assert_eq!(server.accept(t0).gateway(), GatewayId(0));
    /// assert!(online(&mut server, t0), "the hub still thinks uid 7 is linked");
    ///
    /// // Three seconds later the hub node notices: the grace period starts.
    /// let t1 = t0 + Duration::from_secs(3);
    /// server.handle_gateway_lost(t1, GatewayId(1));
    /// assert_eq!(server.accept(t1).gateway(), GatewayId(1), "the node is back");
    /// server.handle_timeout(t1 + grace - Duration::from_millis(1));
    /// assert!(online(&mut server, t1 + grace - Duration::from_millis(1)));
    /// server.handle_timeout(t1 + grace);
    /// assert!(!online(&mut server, t1 + grace));
    /// ```
    pub fn kill_gateway(&mut self, now: Instant, gateway: GatewayId) -> Vec<ConnId> {
        let g = usize::from(gateway.0);
        let Some(gw) = self.gateways.get_mut(g) else {
            return Vec::new();
        };
        let held = gw.crash();
        self.dead[g] = true;
        self.pump(now);
        held
    }

    /// The hub learned that gateway `gateway`, killed by
    /// [`Server::kill_gateway`], is gone (as the hub node does when the
    /// link to that gateway's node stays silent): every hub shard loses
    /// each of its links, as after a `LinkLost` for each (see
    /// [`Hub::handle_gateway_lost`]: their instances stay present for the
    /// grace period, from now). What was still on its way between that
    /// gateway and the hub is dropped first (a silent link carries nothing
    /// more). Then the gateway takes connections again, as a restarted node
    /// would, with fresh [`ConnId`]s (ids are never reused). Nothing
    /// happens for a gateway not killed, or unknown.
    pub fn handle_gateway_lost(&mut self, now: Instant, gateway: GatewayId) {
        let g = usize::from(gateway.0);
        if !self.dead.get(g).copied().unwrap_or(false) {
            return;
        }
        if let Some(w) = &mut self.wire {
            w.forget_gateway(gateway);
        }
        for h in &mut self.hubs {
            h.handle_gateway_lost(now, gateway);
        }
        self.dead[g] = false;
        self.pump(now);
    }

    /// The largest frame `conn` may send now: `pre_login_max_frame_size`
    /// until it has logged in, then `limits.max_frame_size`. A transport
    /// should cut frames with this bound (the server checks it again).
    pub fn max_frame_size(&self, conn: ConnId) -> usize {
        self.gateway(conn)
            .map_or(self.config().pre_login_max_frame_size, |g| {
                g.max_frame_size(conn)
            })
    }

    /// One whole frame (no length prefix) received on `conn`. Unknown or
    /// closing connections are ignored.
    pub fn handle_frame(&mut self, now: Instant, conn: ConnId, frame: Bytes) {
        if let Some(g) = self.gateway_mut(conn) {
            g.handle_frame(now, conn, frame);
        }
        self.pump(now);
    }

    /// A byte-stream error before any frame could be cut out (an oversized or
    /// zero length prefix): closes `conn` as a protocol error, like a
    /// malformed frame.
    pub fn handle_stream_error(&mut self, now: Instant, conn: ConnId, error: WireError) {
        if let Some(g) = self.gateway_mut(conn) {
            g.handle_stream_error(now, conn, error);
        }
        self.pump(now);
    }

    /// The transport of `conn` closed (not a logout), or was closed as asked
    /// by [`Server::poll_transport`]: its instance stays a member of its
    /// channels and counts as online for `presence_grace`, waiting for a
    /// resume. Forgets the connection and its queue.
    pub fn handle_disconnected(&mut self, now: Instant, conn: ConnId) {
        if let Some(g) = self.gateway_mut(conn) {
            g.handle_disconnected(now, conn);
        }
        self.pump(now);
    }

    /// A call of an app's backend (the server API): split over the hub
    /// shards that hold what it needs, answered by each, merged; what it
    /// causes (pushes, closes) is queued like any other output.
    ///
    /// ```
    /// use std::time::Instant;
    /// use hummer_channel::server::{ApiCall, ApiReply, ApiRequest, Server, ServerConfig, DEMO_APPID};
    ///
    /// let now = Instant::now();
    /// let mut server = Server::new(ServerConfig::demo(), now, 1_700_000_000_000);
    /// let call = ApiCall { appid: DEMO_APPID, request: ApiRequest::OnlineStatus { uids: vec![7] } };
    /// match server.api(now, call).unwrap() {
    ///     ApiReply::Online(status) => assert_eq!(status[&7], false),
    ///     other => panic!("{other:?}"),
    /// }
    /// ```
    pub fn api(&mut self, now: Instant, call: ApiCall) -> Result<ApiReply, ServiceError> {
        let shards = u16::try_from(self.hubs.len()).unwrap_or(MAX_SHARDS);
        let (parts, merge) = call.split(shards, &self.config.limits)?;
        let answers = parts
            .into_iter()
            .map(|(s, part)| match self.hubs.get_mut(usize::from(s.0)) {
                Some(h) => h.handle_api(now, part),
                None => Err(ServiceError::new(
                    ErrorCode::INTERNAL_SERVER_ERROR,
                    "no such shard",
                )),
            })
            .collect();
        self.pump(now);
        merge.merge(answers)
    }

    /// The next batch of lasting changes for the store, and the shard that
    /// made it (see [`Hub::poll_store`]; `None` unless
    /// [`ServerConfig::durable`]). Batches of one shard must be stored in
    /// order; shards are independent.
    pub fn poll_store(&mut self) -> Option<(ShardId, StoreBatch)> {
        self.hubs
            .iter_mut()
            .find_map(|h| Some((h.shard(), h.poll_store()?)))
    }

    /// `shard`'s batches up to `number` are stored: what waited for them
    /// goes out.
    pub fn handle_stored(&mut self, now: Instant, shard: ShardId, number: u64) {
        if let Some(h) = self.hubs.get_mut(usize::from(shard.0)) {
            h.handle_stored(number);
        }
        self.pump(now);
    }

    /// Whether every change made so far is stored (always, without a
    /// store). A [`Server::api`] answer shows state that a crash could
    /// undo until this holds: with [`ServerConfig::durable`], drive
    /// [`Server::poll_store`] and [`Server::handle_stored`] until it does
    /// before passing the answer on.
    pub fn is_stored(&self) -> bool {
        self.hubs.iter().all(|h| h.is_stored(h.store_tag()))
    }

    /// The store lost what it held: every shard writes its whole state
    /// again (see [`Hub::handle_store_lost`]).
    pub fn handle_store_lost(&mut self) {
        for h in &mut self.hubs {
            h.handle_store_lost();
        }
    }

    /// Takes what a store kept, before any other input (see
    /// [`Hub::restore`]): what every shard restored, summed.
    pub fn restore(&mut self, now: Instant, objects: &[StoredObject]) -> Restored {
        let mut all = Restored::default();
        for h in &mut self.hubs {
            all += h.restore(now, objects);
        }
        all
    }

    /// The next event for an app's backend (see [`Hub::poll_hook`]), from
    /// any hub shard.
    pub fn poll_hook(&mut self) -> Option<HookEvent> {
        self.hubs.iter_mut().find_map(Hub::poll_hook)
    }

    /// Time passed: fires every deadline up to `now` (idle and login
    /// timeouts, grace ends, batched notices, retention sweeps).
    pub fn handle_timeout(&mut self, now: Instant) {
        for g in &mut self.gateways {
            g.handle_timeout(now);
        }
        for h in &mut self.hubs {
            h.handle_timeout(now);
        }
        self.pump(now);
    }

    /// A connection with queued output, for [`Server::poll_transmit`].
    ///
    /// Level-triggered, in passes: one pass reports every connection that
    /// has output, once each, then returns `None`; the next call starts a
    /// new pass. So a driver that leaves frames queued (its socket is full)
    /// is told about that connection again on its next pass, and a loop
    /// `while let Some(c) = poll_ready()` always ends.
    pub fn poll_ready(&mut self) -> Option<ConnId> {
        // Gateways in turn; a pass ends when every gateway ended its own.
        while let Some(g) = self.gateways.get_mut(self.next_ready) {
            if let Some(c) = g.poll_ready() {
                return Some(c);
            }
            self.next_ready += 1;
        }
        self.next_ready = 0;
        None
    }

    /// The next frame (no length prefix) to send on `conn`.
    pub fn poll_transmit(&mut self, conn: ConnId) -> Option<Bytes> {
        self.gateway_mut(conn)?.poll_transmit(conn)
    }

    /// A connection to close, and why: send what [`Server::poll_transmit`]
    /// still holds for it (its `Close` frame, mostly), then close it and call
    /// [`Server::handle_disconnected`].
    pub fn poll_transport(&mut self) -> Option<TransportAction> {
        self.gateways.iter_mut().find_map(Gateway::poll_transport)
    }

    /// Drains every output once: each ready connection's frames (while
    /// `sink.writable(conn)`), then the connections to close, each after
    /// its remaining frames. No output creates another, so one drain after
    /// each input is enough; frames a full transport did not take are
    /// reported again by the next drain.
    pub fn drain(&mut self, sink: &mut impl Sink) {
        for g in &mut self.gateways {
            g.drain(sink);
        }
    }

    /// Closes every open connection with `Close{4006}` (reported by
    /// [`Server::poll_transport`] like any other close): call it before stopping,
    /// then flush what [`Server::poll_transmit`] holds. Instances keep their
    /// grace period, as for any lost link.
    pub fn shutdown(&mut self, now: Instant) {
        for g in &mut self.gateways {
            g.shutdown(now);
        }
        self.pump(now);
    }

    /// When [`Server::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let gateways = self.gateways.iter().filter_map(Gateway::poll_timeout);
        let in_flight = self.wire.as_ref().and_then(InFlight::next_due);
        let hubs = self.hubs.iter().filter_map(Hub::poll_timeout);
        gateways.chain(hubs).chain(in_flight).min()
    }

    /// Inputs ignored because they named a connection that is closed or
    /// being closed (a frame read after the server decided to close it, a
    /// second disconnect).
    pub fn stale_inputs(&self) -> u64 {
        self.gateways.iter().map(Gateway::stale_inputs).sum()
    }

    /// Open connections (accepted, not closed, not being closed).
    pub fn connection_count(&self) -> usize {
        self.gateways.iter().map(Gateway::connection_count).sum()
    }

    /// The counters of every gateway and hub shard, added up.
    pub fn stats(&self) -> Stats {
        let mut s = Stats::default();
        for g in &self.gateways {
            s.merge(&g.stats());
        }
        for h in &self.hubs {
            s.merge(&h.stats());
        }
        s
    }

    /// Bytes queued for `conn` (0 for an unknown connection).
    pub fn queued_bytes(&self, conn: ConnId) -> usize {
        self.gateway(conn).map_or(0, |g| g.queued_bytes(conn))
    }

    /// Live instances (connected or within their grace period).
    pub fn instance_count(&self) -> usize {
        self.hubs.iter().map(Hub::instance_count).sum()
    }

    /// Channels the server keeps (with members, or with retained messages).
    pub fn channel_count(&self) -> usize {
        self.hubs.iter().map(Hub::channel_count).sum()
    }

    /// Uids with a P2P inbox.
    pub fn inbox_count(&self) -> usize {
        self.hubs.iter().map(Hub::inbox_count).sum()
    }

    /// Message ids remembered for answering re-sent sends.
    pub fn remembered_send_ids(&self) -> usize {
        self.hubs.iter().map(Hub::remembered_send_ids).sum()
    }

    /// Uids and addresses with rate-limit state (what they owe): the sweep
    /// forgets those that owe nothing, so this stays bounded by the active.
    pub fn rate_limit_records(&self) -> usize {
        self.hubs.iter().map(Hub::rate_limit_records).sum()
    }

    fn gateway(&self, conn: ConnId) -> Option<&Gateway> {
        self.gateways.get(usize::from(conn.gateway().0))
    }

    fn gateway_mut(&mut self, conn: ConnId) -> Option<&mut Gateway> {
        self.gateways.get_mut(usize::from(conn.gateway().0))
    }

    /// Carries messages between the gateways and the hub shards until
    /// none is left (or, with a latency, none is due): after it, every
    /// output of the input is a gateway's.
    fn pump(&mut self, now: Instant) {
        loop {
            let mut moved = false;
            for g in &mut self.gateways {
                while let Some((shard, m)) = g.poll_hub_routed() {
                    let from = Node::Gateway(g.id().0);
                    let to = Node::Shard(shard.0);
                    match &mut self.wire {
                        Some(w) => w.post(now, from, to, Envelope::Hub(shard, m)),
                        None => Self::to_hub(&mut self.hubs, now, shard, m),
                    }
                    moved = true;
                }
            }
            for s in 0..self.hubs.len() {
                while let Some(m) = self.hubs[s].poll_gateway() {
                    let gateway = m.gateway();
                    let (from, to) = (Node::Shard(s as u16), Node::Gateway(gateway.0));
                    match &mut self.wire {
                        Some(w) => w.post(now, from, to, Envelope::Gateway(m)),
                        None => Self::to_gateway(&mut self.gateways, &self.dead, now, m),
                    }
                    moved = true;
                }
                while let Some((to, m)) = self.hubs[s].poll_shard() {
                    let from = ShardId(s as u16);
                    match &mut self.wire {
                        Some(w) => w.post(
                            now,
                            Node::Shard(from.0),
                            Node::Shard(to.0),
                            Envelope::Shard(from, to, m),
                        ),
                        None => {
                            if let Some(h) = self.hubs.get_mut(usize::from(to.0)) {
                                h.handle_shard(now, from, m);
                            }
                        }
                    }
                    moved = true;
                }
            }
            while let Some(envelope) = self.wire.as_mut().and_then(|w| w.take_due(now)) {
                match envelope {
                    Envelope::Hub(shard, m) => Self::to_hub(&mut self.hubs, now, shard, m),
                    Envelope::Gateway(m) => {
                        Self::to_gateway(&mut self.gateways, &self.dead, now, m)
                    }
                    Envelope::Shard(from, to, m) => {
                        if let Some(h) = self.hubs.get_mut(usize::from(to.0)) {
                            h.handle_shard(now, from, m);
                        }
                    }
                }
                moved = true;
            }
            if !moved {
                return;
            }
        }
    }

    fn to_hub(hubs: &mut [Hub], now: Instant, shard: ShardId, m: ToHub) {
        if let Some(h) = hubs.get_mut(usize::from(shard.0)) {
            h.handle(now, m);
        }
    }

    /// Hands `m` to its gateway, unless that one is `dead` (dropped).
    fn to_gateway(gateways: &mut [Gateway], dead: &[bool], now: Instant, m: ToGateway) {
        let g = usize::from(m.gateway().0);
        if dead.get(g).copied().unwrap_or(false) {
            return;
        }
        if let Some(g) = gateways.get_mut(g) {
            g.handle_hub(now, m);
        }
    }
}

/// A machine of the server, for the order of the messages between two.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
enum Node {
    Gateway(u16),
    Shard(u16),
}

/// A message between the machines.
#[derive(Debug)]
enum Envelope {
    /// To a hub shard.
    Hub(ShardId, ToHub),
    Gateway(ToGateway),
    /// (from, to).
    Shard(ShardId, ShardId, ToShard),
}

/// Messages in flight between the machines, each due after a drawn
/// latency but never before an earlier one on the same way (queues between
/// threads keep their order).
#[derive(Debug)]
struct InFlight {
    range: (Duration, Duration),
    rng: u64,
    order: u64,
    queue: std::collections::BTreeMap<(Instant, u64), Envelope>,
    /// The due time of the last message posted each way (from, to).
    last: std::collections::HashMap<(Node, Node), Instant>,
}

impl InFlight {
    fn post(&mut self, now: Instant, from: Node, to: Node, envelope: Envelope) {
        let (lo, hi) = self.range;
        let span = hi.saturating_sub(lo).as_micros() as u64;
        let jitter = if span == 0 {
            0
        } else {
            splitmix64(&mut self.rng) % (span + 1)
        };
        let way = (from, to);
        let mut due = add(now, lo + Duration::from_micros(jitter));
        if let Some(&last) = self.last.get(&way) {
            due = due.max(last);
        }
        self.last.insert(way, due);
        self.order += 1;
        self.queue.insert((due, self.order), envelope);
    }

    fn next_due(&self) -> Option<Instant> {
        self.queue.keys().next().map(|(t, _)| *t)
    }

    fn take_due(&mut self, now: Instant) -> Option<Envelope> {
        let entry = self.queue.first_entry()?;
        (entry.key().0 <= now).then(|| entry.remove())
    }

    /// Drops every message still on its way between `gateway` and the hub.
    fn forget_gateway(&mut self, gateway: GatewayId) {
        self.queue.retain(|_, e| match e {
            Envelope::Hub(_, m) => m.conn().gateway() != gateway,
            Envelope::Gateway(m) => m.gateway() != gateway,
            Envelope::Shard(..) => true,
        });
    }
}

/// The time of a machine: the latest `now` seen (time going backwards is
/// ignored) and the wall clock at its start.
#[derive(Copy, Clone, Debug)]
pub(crate) struct Clock {
    start: Instant,
    unix_ms_at_start: u64,
    now: Instant,
}

impl Clock {
    pub fn new(now: Instant, unix_ms_at_now: u64) -> Clock {
        Clock {
            start: now,
            unix_ms_at_start: unix_ms_at_now,
            now,
        }
    }

    /// Moves to `now` unless that is earlier; the time now.
    pub fn tick(&mut self, now: Instant) -> Instant {
        if now > self.now {
            self.now = now;
        }
        self.now
    }

    pub fn now(&self) -> Instant {
        self.now
    }

    /// Wall-clock unix milliseconds now.
    pub fn unix_ms(&self) -> u64 {
        let since = self.now.saturating_duration_since(self.start).as_millis();
        self.unix_ms_at_start
            .saturating_add(u64::try_from(since).unwrap_or(u64::MAX))
    }

    /// The instant at which the wall clock reads `unix_ms` (the start, for
    /// times before it).
    pub fn instant_of_unix_ms(&self, unix_ms: u64) -> Instant {
        let since = unix_ms.saturating_sub(self.unix_ms_at_start);
        add(self.start, Duration::from_millis(since))
    }
}

/// A map keyed by ids the server chose (connections, instances, channel
/// numbers): FxHash, as clients cannot pick colliding keys. Maps keyed by
/// what clients choose keep std's keyed SipHash.
pub(crate) type IdMap<K, V> = rustc_hash::FxHashMap<K, V>;

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
    key: Option<wire::ChannelKey>,
) -> Result<(Region, String), ServiceError> {
    let key =
        key.ok_or_else(|| ServiceError::new(ErrorCode::INVALID_PARAMETER, "channel missing"))?;
    let region = checked_region(key.region)?;
    limits.check_channel_id(&key.channel_id)?;
    // Moved, not copied: this runs for every request naming a channel.
    Ok((region, key.channel_id))
}

fn checked_region(v: i32) -> Result<Region, ServiceError> {
    Region::from_wire(v).ok_or_else(|| {
        ServiceError::new(
            ErrorCode::INVALID_PARAMETER,
            "unknown or unspecified region",
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ack(n: u64) -> Envelope {
        Envelope::Hub(
            ShardId(0),
            ToHub::Ack {
                conn: ConnId(n),
                seq: n,
            },
        )
    }

    fn in_flight(lo: u64, hi: u64) -> InFlight {
        InFlight {
            range: (Duration::from_micros(lo), Duration::from_micros(hi)),
            rng: 7,
            order: 0,
            queue: std::collections::BTreeMap::new(),
            last: std::collections::HashMap::new(),
        }
    }

    #[test]
    fn messages_are_due_within_the_range_and_in_order_per_way() {
        let t0 = Instant::now();
        let mut w = in_flight(1_000, 3_000);
        for n in 0..200 {
            w.post(t0, Node::Gateway(0), Node::Shard(0), ack(n));
        }
        let mut due = Vec::new();
        while let Some(t) = w.next_due() {
            let Some(Envelope::Hub(_, ToHub::Ack { seq, .. })) = w.take_due(t) else {
                panic!("due at its time")
            };
            due.push((t - t0, seq));
        }
        assert_eq!(due.len(), 200);
        assert!(
            due.iter()
                .all(|(d, _)| *d >= Duration::from_micros(1_000)
                    && *d <= Duration::from_micros(3_000))
        );
        let order: Vec<u64> = due.iter().map(|(_, n)| *n).collect();
        assert_eq!(
            order,
            (0..200).collect::<Vec<_>>(),
            "one way keeps its order"
        );
        // Drawn, not fixed: the latencies differ (before the order clamps them).
        assert!(due.iter().any(|(d, _)| *d > Duration::from_micros(1_000)));
        assert!(due.first().unwrap().0 < Duration::from_micros(3_000));
    }

    #[test]
    fn a_fixed_latency_is_that_latency_and_ways_are_apart() {
        let t0 = Instant::now();
        let mut w = in_flight(2_000, 2_000);
        w.post(t0, Node::Gateway(0), Node::Shard(0), ack(1));
        assert_eq!(w.next_due(), Some(t0 + Duration::from_micros(2_000)));
        assert!(w.take_due(t0 + Duration::from_micros(1_999)).is_none());
        assert!(w.take_due(t0 + Duration::from_micros(2_000)).is_some());
        // Another way is not held back by this one's last due time.
        let mut w = in_flight(0, 10_000);
        w.post(t0, Node::Gateway(0), Node::Shard(0), ack(1));
        let first = w.next_due().unwrap();
        w.post(t0, Node::Gateway(1), Node::Shard(0), ack(2));
        w.post(t0, Node::Gateway(1), Node::Shard(0), ack(3));
        let dues: Vec<Instant> = w.queue.keys().map(|(t, _)| *t).collect();
        assert!(dues.contains(&first));
        assert_eq!(dues.len(), 3);
    }

    #[test]
    fn both_ends_of_the_range_are_drawn() {
        let t0 = Instant::now();
        let mut w = in_flight(0, 1);
        // A way each, so that no order clamps a draw.
        for g in 0..64 {
            w.post(t0, Node::Gateway(g), Node::Shard(0), ack(u64::from(g)));
        }
        let mut seen: Vec<Duration> = w.queue.keys().map(|(t, _)| *t - t0).collect();
        seen.sort();
        seen.dedup();
        assert_eq!(seen, [Duration::ZERO, Duration::from_micros(1)]);
    }
}
