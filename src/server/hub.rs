//! The state side of the server: instances and their presence, channels,
//! attributes, sequencing and retention, inboxes, notices. It never sees a
//! byte of a connection: gateways hand it decoded requests ([`ToHub`]) and
//! it answers with frames to queue and links to close ([`ToGateway`]).

use std::collections::{BTreeSet, BinaryHeap, HashMap};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::channel::Channel;
use super::conn::{CloseReason, ConnId};
use super::durable::{stored_channel_key, Fenced};
use super::gateway::error_frame;
use super::inbox::Inbox;
use super::message::{GatewayId, ToGateway, ToHub};
use super::presence::Instance;
use super::rate;
use super::sent_ids::{Destination, SentIds};
use super::shard::{Effects, ShardId, ShardMsg, ToShard, MAX_SHARDS};
use super::stats::{ChannelActivity, Stats};
use super::{add, splitmix64, Clock, IdMap, ServerConfig};
use crate::error::{ErrorCode, ServiceError};
use crate::types::Region;
use crate::wire::{self, encode_frame, Body, Frame};

/// What a hub deadline is for. Deadlines are checked lazily when they fire
/// (the state they refer to may have moved on), so none needs cancelling.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Timer {
    Grace(u64),
    /// (instance, the token expiry it was set for).
    TokenWarning(u64, u64),
    TokenDeadline(u64, u64),
    Notice(u32),
    Sweep,
}

/// A request's outcome: the reply body and the pushes that must follow it.
pub(super) type Outcome = Result<(Body, Vec<Bytes>), ServiceError>;

/// The request being handled: its link and what was queued for it then
/// (replays are budgeted against the queue bound).
#[derive(Copy, Clone, Debug)]
pub(super) struct Current {
    pub conn: ConnId,
    pub queued: usize,
}

/// The shared state of a server: a Sans-IO machine fed by gateways.
///
/// Inputs: [`Hub::handle`] (a gateway's message) and [`Hub::handle_timeout`];
/// outputs: [`Hub::poll_gateway`] (messages, each for one gateway, in the
/// order they must be applied) and [`Hub::poll_timeout`]; between shards,
/// [`Hub::poll_shard`] and [`Hub::handle_shard`]. See
/// [`Gateway`](super::Gateway) for a gateway and a hub wired by hand;
/// [`Server`](super::Server) wires gateways and shards in one machine.
///
/// Three shards: each uid and each channel has one owner, the same for
/// every gateway and shard.
///
/// ```
/// use std::time::Instant;
/// use hummer_channel::server::{uid_shard, Hub, ServerConfig, ShardId, DEMO_APPID};
///
/// let t0 = Instant::now();
/// let shards: Vec<Hub> = (0..3)
///     .map(|s| Hub::new_shard(ServerConfig::demo(), ShardId(s), 3, t0, 1_700_000_000_000))
///     .collect();
/// let home = uid_shard(DEMO_APPID, 42, 3);
/// assert_eq!(shards[usize::from(home.0)].shard(), home);
/// // Every shard tells the same epoch; none holds anything yet.
/// assert!(shards.iter().all(|h| h.server_epoch() == shards[0].server_epoch()));
/// assert!(shards.iter().all(|h| h.instance_count() == 0));
/// ```
#[derive(Debug)]
pub struct Hub {
    pub(super) config: ServerConfig,
    pub(super) clock: Clock,
    pub(super) epoch: u64,
    rng: u64,
    /// Output for gateways, each after the store batch it waits for.
    out: Fenced<ToGateway>,
    /// The instance logged in on each link.
    links: IdMap<ConnId, u64>,
    pub(super) current: Option<Current>,
    pub(super) instances: IdMap<u64, Instance>,
    /// Live instances of each (appid, uid), oldest login first.
    pub(super) users: HashMap<(u32, u64), Vec<u64>>,
    pub(super) channels: IdMap<u32, Channel>,
    pub(super) channel_index: HashMap<(u32, Region, String), u32>,
    pub(super) next_channel: u32,
    pub(super) inboxes: HashMap<(u32, u64), Inbox>,
    /// Message ids of recent successful sends, per sender uid.
    sent_ids: SentIds,
    /// The per-uid rate limits' state.
    pub(super) uid_rates: HashMap<(u32, u64), rate::UidRates>,
    /// Logins per peer address.
    pub(super) login_rates: HashMap<IpAddr, rate::Bucket>,
    pub(super) timers: BTreeSet<(Instant, Timer)>,
    /// An upper bound of the retained bytes (exact after each enforcement).
    retained_estimate: usize,
    /// The same, per app.
    app_retained: HashMap<u32, usize>,
    /// This shard, and how many the server has (1: the hub is whole).
    pub(super) shard: ShardId,
    pub(super) shards: u16,
    /// Messages for other shards, in order.
    pub(super) to_shards: Fenced<(ShardId, ToShard)>,
    /// Member instances of this shard's channels homed on other shards.
    pub(super) guests: IdMap<u64, super::cross::Guest>,
    /// While a forwarded request is handled: its link, whose frames are
    /// collected for its home, and what the home must record.
    pub(super) capture: Option<(ConnId, Vec<Bytes>)>,
    pub(super) effects: Option<Effects>,
    /// Sends forwarded to another shard and not yet done, by (sender,
    /// message id): where to, and the re-sends with the same id that wait
    /// for the first one's outcome.
    pub(super) inflight: super::cross::InflightSends,
    /// Requests whose answer is gathered from other shards, by token.
    pub(super) gathers: IdMap<u64, super::cross::Gather>,
    /// Logins whose resumed channels are on other shards, by link: their
    /// replies wait for the shards' answers, and so does what follows.
    pub(super) resuming: IdMap<ConnId, super::cross::Resuming>,
    pub(super) next_token: u64,
    /// What this shard counted.
    pub(super) stats: Stats,
    /// Uids whose logins are refused until then (a backend's kick).
    bans: HashMap<(u32, u64), Instant>,
    /// Events for the apps' backends, oldest first, each after the store
    /// batch it waits for (as output for gateways).
    pub(super) hooks: Fenced<super::HookEvent>,
    /// What must reach the store (`None`: the hub keeps nothing beyond
    /// the process).
    pub(super) store: Option<super::durable::Durable>,
}

/// A retention log: a channel's or a uid's inbox.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum LogId {
    Channel(u32),
    Inbox(u32, u64),
}

impl Hub {
    /// The hub of a server configured by `config`, started at `now`, when
    /// the wall clock read `unix_ms_at_now` (unix milliseconds).
    pub fn new(config: ServerConfig, now: Instant, unix_ms_at_now: u64) -> Hub {
        Hub::new_shard(config, ShardId(0), 1, now, unix_ms_at_now)
    }

    /// Shard `shard` of a hub split over `shards` (at most
    /// [`MAX_SHARDS`](super::MAX_SHARDS)): it owns the uids and channels that
    /// [`uid_shard`](super::uid_shard) and [`channel_shard`](super::channel_shard)
    /// give it. Every shard has the server's epoch; each has
    /// `1 / shards` of the retention budgets (`max_retained_bytes`,
    /// `app_max_retained_bytes`) and of `max_inbox_users` (rounded up).
    /// `Hub::new` is shard 0 of 1.
    pub fn new_shard(
        mut config: ServerConfig,
        shard: ShardId,
        shards: u16,
        now: Instant,
        unix_ms_at_now: u64,
    ) -> Hub {
        let shards = shards.clamp(1, MAX_SHARDS);
        let shard = ShardId(shard.0.min(shards - 1));
        if shards > 1 {
            let n = usize::from(shards);
            config.max_retained_bytes /= n;
            config.app_max_retained_bytes /= n;
            config.max_inbox_users = config.max_inbox_users.div_ceil(n);
        }
        // The start time is mixed in so that a restart with the same seed
        // still gets a new epoch: clients must see that the history is gone.
        let mut rng = config.seed ^ 0x9e37_79b9_7f4a_7c15 ^ unix_ms_at_now.rotate_left(29);
        let mut epoch = 0;
        while epoch == 0 {
            epoch = splitmix64(&mut rng);
        }
        if shard.0 > 0 {
            // The same epoch, but a stream of draws of its own.
            rng ^= u64::from(shard.0).wrapping_mul(0xd6e8_feb8_6659_fd93);
        }
        let mut timers = BTreeSet::new();
        timers.insert((add(now, config.sweep_interval), Timer::Sweep));
        let store = config
            .durable
            .then(|| super::durable::Durable::new(config.send_dedupe_max));
        Hub {
            config,
            clock: Clock::new(now, unix_ms_at_now),
            epoch,
            rng,
            out: Fenced::default(),
            links: IdMap::default(),
            current: None,
            instances: IdMap::default(),
            users: HashMap::new(),
            channels: IdMap::default(),
            channel_index: HashMap::new(),
            next_channel: 1 + u32::from(shard.0),
            inboxes: HashMap::new(),
            sent_ids: SentIds::default(),
            uid_rates: HashMap::new(),
            login_rates: HashMap::new(),
            timers,
            retained_estimate: 0,
            app_retained: HashMap::new(),
            shard,
            shards,
            to_shards: Fenced::default(),
            guests: IdMap::default(),
            capture: None,
            effects: None,
            inflight: HashMap::new(),
            gathers: IdMap::default(),
            resuming: IdMap::default(),
            next_token: 1,
            stats: Stats::default(),
            bans: HashMap::new(),
            hooks: Fenced::default(),
            store,
        }
    }

    /// This shard.
    pub fn shard(&self) -> ShardId {
        self.shard
    }

    /// The configuration in force.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// This hub's epoch (nonzero, fixed for its life), sent in every
    /// `LoginReply` for diagnostics.
    pub fn server_epoch(&self) -> u64 {
        self.epoch
    }

    /// A snapshot of this shard's counters, with its instances, channels
    /// and memberships now (see [`Stats`]).
    pub fn stats(&self) -> Stats {
        let mut s = self.stats.clone();
        let members = self.channels.values().map(|c| u64::from(c.member_count()));
        s.set_population(
            self.instances.len() as u64,
            self.channels.len() as u64,
            members.sum(),
        );
        // The busiest of each app, found without sorting them all.
        let mut by_app: HashMap<u32, Vec<&super::channel::Channel>> = HashMap::new();
        for c in self.channels.values().filter(|c| c.messages > 0) {
            by_app.entry(c.appid).or_default().push(c);
        }
        let top = super::stats::BUSIEST_CHANNELS;
        for list in by_app.values_mut() {
            if list.len() > top {
                list.select_nth_unstable_by_key(top - 1, |c| std::cmp::Reverse(c.messages));
                list.truncate(top);
            }
        }
        s.set_busiest(
            by_app
                .into_values()
                .flatten()
                .map(|c| ChannelActivity {
                    appid: c.appid,
                    region: c.region,
                    id: c.id.clone(),
                    members: u64::from(c.member_count()),
                    messages: c.messages,
                })
                .collect(),
        );
        s
    }

    /// A message from a gateway.
    pub fn handle(&mut self, now: Instant, message: ToHub) {
        self.clock.tick(now);
        enter_span!(tracing::debug_span!("hub", conn = %message.conn()));
        if !self.resuming.is_empty() {
            if let Some(r) = self.resuming.get_mut(&message.conn()) {
                // After the login's reply, which waits for other shards.
                r.parked.push(message);
                return;
            }
        }
        match message {
            ToHub::Login {
                conn,
                request_id,
                request,
                token,
                peer,
                queued,
            } => {
                if self.shards > 1 && self.link_instance(conn).is_none() {
                    let home = super::uid_shard(request.appid, request.uid, self.shards);
                    if home != self.shard {
                        let m = ToHub::Login {
                            conn,
                            request_id,
                            request,
                            token,
                            peer,
                            queued,
                        };
                        return self.post_shard(home, ShardMsg::Login(m));
                    }
                }
                self.current = Some(Current { conn, queued });
                let outcome = self.login(conn, request, token, peer);
                if outcome.is_err() && self.link_instance(conn).is_none() {
                    // The gateway let larger frames in for the login.
                    self.emit(ToGateway::LoggedIn { conn, uid: None });
                }
                match self.resuming.get_mut(&conn) {
                    // The reply waits for the resumed channels of other shards.
                    Some(r) if r.reply.is_none() => r.reply = Some((request_id, outcome)),
                    _ => self.answer(conn, request_id, outcome),
                }
                self.current = None;
            }
            ToHub::Request {
                conn,
                request_id,
                body,
                queued,
            } => {
                self.current = Some(Current { conn, queued });
                self.handle_request(conn, request_id, body);
                self.current = None;
            }
            ToHub::Ack { conn, seq } => self.handle_ack(conn, seq),
            ToHub::LinkLost { conn } => {
                if let Some(inst) = self.links.remove(&conn) {
                    self.lose_link(inst);
                }
            }
        }
    }

    /// Gateway `gateway` is gone with every link it held (its node died,
    /// or the link between the nodes broke): each of their instances homed
    /// here keeps its presence for the grace period, as after
    /// [`ToHub::LinkLost`] for each. Messages of the gateway still on their
    /// way are handled as usual (a `LinkLost` for a link already lost is
    /// nothing).
    pub fn handle_gateway_lost(&mut self, now: Instant, gateway: GatewayId) {
        self.handle_gateways_lost(now, |g| g == gateway);
    }

    /// [`Hub::handle_gateway_lost`] for every gateway `lost` says is gone
    /// (a node's), in one pass over the links.
    pub fn handle_gateways_lost(&mut self, now: Instant, lost: impl Fn(GatewayId) -> bool) {
        let mut lost: Vec<ConnId> = self
            .links
            .keys()
            .copied()
            .filter(|c| lost(c.gateway()))
            .collect();
        lost.sort_unstable();
        for conn in lost {
            self.handle(now, ToHub::LinkLost { conn });
        }
    }

    /// Time passed: fires every deadline up to `now` (grace ends, token
    /// expiry, batched notices, retention sweeps).
    pub fn handle_timeout(&mut self, now: Instant) {
        let now = self.clock.tick(now);
        while let Some(&(at, timer)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.pop_first();
            self.fire(now, timer);
        }
    }

    /// When [`Hub::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.first().map(|(t, _)| *t)
    }

    /// The next message for a gateway ([`ToGateway::gateway`] names it).
    pub fn poll_gateway(&mut self) -> Option<ToGateway> {
        let m = self.out.pop(self.store.as_ref())?;
        if let (Some(d), ToGateway::Send { conn, frame }) = (self.store.as_mut(), &m) {
            d.release(*conn, frame.len());
        }
        Some(m)
    }

    /// Live instances (connected or within their grace period).
    pub fn instance_count(&self) -> usize {
        self.instances.len()
    }

    /// Channels kept (with members, or with retained messages).
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

    /// Uids and addresses with rate-limit state (what they owe).
    pub fn rate_limit_records(&self) -> usize {
        self.uid_rates.len() + self.login_rates.len()
    }

    // ----- internals -----

    pub(super) fn now(&self) -> Instant {
        self.clock.now()
    }

    pub(super) fn unix_ms(&self) -> u64 {
        self.clock.unix_ms()
    }

    /// The instance logged in on `conn`.
    pub(super) fn link_instance(&self, conn: ConnId) -> Option<u64> {
        self.links.get(&conn).copied()
    }

    /// `conn` is now logged in as `inst` of `uid`.
    pub(super) fn attach(&mut self, conn: ConnId, inst: u64, uid: u64) {
        self.links.insert(conn, inst);
        self.emit(ToGateway::LoggedIn {
            conn,
            uid: Some(uid),
        });
    }

    /// `conn` is logged in no more (a logout, or its instance was removed)
    /// but stays open.
    pub(super) fn detach(&mut self, conn: ConnId, inst: u64) {
        if self.links.get(&conn) == Some(&inst) {
            self.links.remove(&conn);
            self.emit(ToGateway::LoggedIn { conn, uid: None });
        }
    }

    /// Queues `m` for its gateway, after the changes made so far are stored.
    fn emit(&mut self, m: ToGateway) {
        if let (Some(d), ToGateway::Send { conn, frame }) = (self.store.as_mut(), &m) {
            d.hold(*conn, frame.len());
        }
        self.out.push(self.store.as_ref(), m);
    }

    /// Queues a message for another shard, after the changes made so far
    /// are stored.
    pub(super) fn post_shard(&mut self, to: ShardId, m: ShardMsg) {
        self.to_shards.push(self.store.as_ref(), (to, ToShard(m)));
    }

    pub(super) fn random_nonzero(&mut self) -> u64 {
        loop {
            let v = splitmix64(&mut self.rng);
            if v != 0 {
                return v;
            }
        }
    }

    fn fire(&mut self, now: Instant, timer: Timer) {
        match timer {
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
        let store = &mut self.store;
        self.channels.retain(|&num, ch| {
            if let (true, Some(d)) = (ch.log.prune(now, channel_retention), store.as_mut()) {
                // Aged out: the store trims them too.
                d.touch_log(LogId::Channel(num));
            }
            // A departure older than the retention has nothing left to replay.
            ch.departed
                .retain(|_, (_, at)| now.saturating_duration_since(*at) < age);
            let forget = ch.is_forgettable();
            if let (true, Some(d)) = (forget, store.as_mut()) {
                d.forget_stream(LogId::Channel(num), stored_channel_key(ch));
            }
            !forget
        });
        let channels = &self.channels;
        self.channel_index
            .retain(|_, num| channels.contains_key(num));
        for (&(appid, uid), inbox) in self.inboxes.iter_mut() {
            if let (true, Some(d)) = (inbox.log.prune(now, inbox_retention), self.store.as_mut()) {
                d.touch_log(LogId::Inbox(appid, uid));
            }
        }
        self.sent_ids.sweep(now, self.config.send_dedupe_window);
        if let Some(d) = self.store.as_mut() {
            d.expire_sends(now, self.config.send_dedupe_window);
        }
        self.uid_rates.retain(|_, r| !r.is_idle(now));
        self.bans.retain(|_, until| *until > now);
        self.login_rates.retain(|_, b| !b.is_idle(now));
    }

    /// The reply of an earlier successful send of `who` with message `id`
    /// to `to`, when remembered: a re-send is answered with it and delivers
    /// nothing. 2001 for id 0, 2013 for an id used to another destination.
    pub(super) fn sent_before(
        &self,
        who: (u32, u64),
        id: u64,
        to: Destination,
    ) -> Result<Option<wire::SendReply>, ServiceError> {
        self.sent_ids
            .lookup(who, id, to, self.now(), self.config.send_dedupe_window)
    }

    /// Remembers a successful send for [`Hub::sent_before`].
    pub(super) fn remember_sent(
        &mut self,
        who: (u32, u64),
        id: u64,
        to: Destination,
        r: &wire::SendReply,
    ) {
        self.remember_sent_at(who, id, to, r, self.now());
    }

    /// [`Hub::remember_sent`] of a send made at `at` (a restored one).
    pub(super) fn remember_sent_at(
        &mut self,
        who: (u32, u64),
        id: u64,
        to: Destination,
        r: &wire::SendReply,
        at: Instant,
    ) {
        let bounds = (self.config.send_dedupe_window, self.config.send_dedupe_max);
        self.sent_ids.remember(who, id, to, r, at, bounds);
    }

    /// Refuses the logins of `(appid, uid)` until `until` (a longer ban
    /// already in force stays).
    pub(super) fn ban(&mut self, appid: u32, uid: u64, until: Instant) {
        let at = self.bans.entry((appid, uid)).or_insert(until);
        *at = (*at).max(until);
    }

    /// 3000 while `(appid, uid)` is banned.
    pub(super) fn ban_check(&self, appid: u32, uid: u64) -> Result<(), ServiceError> {
        match self.bans.get(&(appid, uid)) {
            Some(until) if *until > self.now() => Err(ServiceError::new(
                ErrorCode::PERMISSION_DENY,
                "this uid's logins are refused for now (kicked by the service)",
            )),
            _ => Ok(()),
        }
    }

    /// Counts `bytes` newly retained by `app`, then enforces the app's
    /// budget and the server's: past either, the largest histories (of that
    /// app; for the server's, of the largest app) lose their oldest
    /// messages down to 90% of it, so one app never evicts another's and a
    /// user's many small histories go before anyone's one. Totals are
    /// exact only then, so the cost is amortised over a tenth of the cap.
    pub(super) fn retained(&mut self, app: u32, bytes: usize) {
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
            let left = (!log.is_empty()).then(|| log.bytes());
            self.touch_log(id);
            if let Some(bytes) = left {
                heap.push((bytes, id));
            }
        }
        total
    }

    pub(super) fn handle_request(&mut self, conn: ConnId, rid: u64, body: Body) {
        let Some(inst) = self.link_instance(conn) else {
            // Before login only a login is a request: whatever else a link
            // sends costs it the link (it is no client of ours).
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
        if self.shards > 1 {
            // The channel part of a request goes to its channel's shard.
            let body = match self.route(conn, rid, inst, body) {
                Some(b) => b,
                None => return,
            };
            let outcome = self.dispatch(conn, inst, body);
            return self.answer(conn, rid, outcome);
        }
        let outcome = self.dispatch(conn, inst, body);
        self.answer(conn, rid, outcome);
    }

    /// Queues a request's reply (and what follows it) or its error.
    pub(super) fn answer(&mut self, conn: ConnId, rid: u64, outcome: Outcome) {
        match outcome {
            Ok((body, after)) => {
                self.stats.note_answer(&body, after.len());
                let replays = replay_may_follow(&body);
                self.reply(conn, rid, body);
                for f in after {
                    self.send(conn, f);
                }
                // A captured answer is relayed by the link's home, which
                // says so after the frames (`done`).
                let captured = self.capture.as_ref().is_some_and(|(c, _)| *c == conn);
                if replays && !captured {
                    self.replay_answered(conn, rid);
                }
            }
            Err(e) => self.error(conn, rid, e),
        }
    }

    /// Request `rid` of `conn` is answered whole (its replay included): its
    /// gateway stops counting the replay as the most it may be.
    pub(super) fn replay_answered(&mut self, conn: ConnId, rid: u64) {
        self.emit(ToGateway::Answered {
            conn,
            request_id: rid,
        });
    }

    fn dispatch(&mut self, conn: ConnId, inst: u64, body: Body) -> Outcome {
        if super::cross::is_channel_body(&body) {
            let m = self.local_member(inst)?;
            return self.dispatch_channel(conn, &m, body);
        }
        match body {
            Body::Logout(_) => self.logout(conn, inst),
            Body::RefreshToken(r) => self.refresh_token(inst, &r.token),
            Body::SetUserRegion(r) => self.set_user_region(inst, r.region),
            Body::GetInstanceInfo(_) => self.instance_info(inst),
            Body::SendToUser(r) => self.send_to_user(inst, r),
            Body::QueryOnline(r) => self.query_online(inst, &r.uids),
            Body::GetUserCount(r) => self.user_count(inst, r),
            Body::Fetch(r) => self.fetch_p2p(conn, inst, r),
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
    /// the rest. What is queued is what the gateway saw when it read the
    /// request (`conn` is the requester's link, or no link at all).
    pub(super) fn replay_budget(&self, conn: Option<ConnId>) -> usize {
        let max = self.config.max_queued_bytes;
        let queued = conn.map_or(0, |c| self.queued_for(c));
        // Room for a reply and a frame, but never most of a small queue.
        let margin = self
            .config
            .limits
            .max_frame_size
            .saturating_mul(2)
            .min(max / 4);
        (max / 2).min(max.saturating_sub(queued).saturating_sub(margin))
    }

    /// What counts as queued for `conn` in a replay's budget: what its
    /// gateway counted when it read the request (its queue, and the
    /// replays it still waits for), and what waits here for the store.
    pub(super) fn queued_for(&self, conn: ConnId) -> usize {
        let read = match self.current {
            Some(cur) if cur.conn == conn => cur.queued,
            _ => 0,
        };
        let held = self.store.as_ref().map_or(0, |d| d.held_for(conn));
        read.saturating_add(held)
    }

    /// Queues `frame` for `conn` (its gateway enforces the queue bound).
    pub(super) fn send(&mut self, conn: ConnId, frame: Bytes) {
        if let Some((c, frames)) = &mut self.capture {
            if *c == conn {
                return frames.push(frame);
            }
        }
        if !self.resuming.is_empty() {
            if let Some(r) = self.resuming.get_mut(&conn) {
                return r.held.push(frame);
            }
        }
        self.emit(ToGateway::Send { conn, frame });
    }

    /// Queues `frame` for each of `conns`: one message per gateway.
    pub(super) fn broadcast_to(&mut self, mut conns: Vec<ConnId>, frame: &Bytes) {
        if !self.resuming.is_empty() {
            let resuming = &mut self.resuming;
            conns.retain(|c| match resuming.get_mut(c) {
                Some(r) => {
                    r.held.push(frame.clone());
                    false
                }
                None => true,
            });
        }
        if conns.is_empty() {
            return;
        }
        let first = conns[0].gateway();
        if conns.iter().all(|c| c.gateway() == first) {
            self.emit(ToGateway::Broadcast {
                conns,
                frame: frame.clone(),
            });
            return;
        }
        conns.sort_unstable_by_key(|c| c.gateway());
        let mut rest = conns.as_slice();
        while let Some(head) = rest.first() {
            let g: GatewayId = head.gateway();
            let n = rest.iter().take_while(|c| c.gateway() == g).count();
            let (these, tail) = rest.split_at(n);
            self.emit(ToGateway::Broadcast {
                conns: these.to_vec(),
                frame: frame.clone(),
            });
            rest = tail;
        }
    }

    pub(super) fn reply(&mut self, conn: ConnId, request_id: u64, body: Body) {
        let f = encode_frame(&Frame {
            request_id,
            body: Some(body),
        });
        self.send(conn, f);
    }

    pub(super) fn error(&mut self, conn: ConnId, request_id: u64, e: ServiceError) {
        log!(debug, "request {request_id} on {conn} refused: {}", e);
        self.stats.note_refusal(e.code.code());
        self.send(conn, error_frame(request_id, e));
    }

    /// Asks `conn`'s gateway to close it, and detaches its instance: a lost
    /// link (grace period) except when it was kicked or taken over, which
    /// the caller handles.
    pub(super) fn close_conn(&mut self, conn: ConnId, reason: CloseReason) {
        debug_assert!(reason.decided_by_hub());
        let inst = self.links.remove(&conn);
        let kept = !matches!(
            reason,
            CloseReason::Kicked | CloseReason::KickedByService { .. } | CloseReason::Replaced
        );
        self.emit(ToGateway::Close { conn, reason });
        if let Some(inst) = inst.filter(|_| kept) {
            self.lose_link(inst);
        }
    }
}

/// Whether a reply is one a replay may follow (a login's, a join's, a
/// fetch's): the gateway waits for [`ToGateway::Answered`] after it.
pub(super) fn replay_may_follow(reply: &Body) -> bool {
    matches!(
        reply,
        Body::LoginReply(_) | Body::JoinReply(_) | Body::FetchReply(_)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A replay takes half the queue at most, and never the room a reply
    /// and a frame need; on a small queue that margin is a quarter of it.
    #[test]
    fn a_replay_budget_leaves_a_margin_within_the_queue() {
        let budget = |max_queued: usize, max_frame: usize, held: usize| {
            let mut config = ServerConfig::demo();
            config.durable = true;
            config.max_queued_bytes = max_queued;
            config.limits.max_frame_size = max_frame;
            let mut hub = Hub::new(config, Instant::now(), 0);
            let conn = ConnId(1);
            hub.store.as_mut().unwrap().hold(conn, held);
            (hub.replay_budget(Some(conn)), hub.replay_budget(None))
        };
        // A big queue: half of it, or the room left less two frames.
        assert_eq!(budget(1 << 20, 1000, 0), (1 << 19, 1 << 19));
        assert_eq!(
            budget(1 << 20, 1000, 600_000),
            ((1 << 20) - 602_000, 1 << 19)
        );
        // A small queue: the margin is a quarter of it, not two frames.
        assert_eq!(budget(64_000, 64_000, 20_000), (28_000, 32_000));
        assert_eq!(budget(64_000, 64_000, 60_000), (0, 32_000));
    }
}
