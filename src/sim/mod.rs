//! A deterministic in-memory network: many [`Session`]s and one [`Server`],
//! a fake clock that jumps to the next thing due, latency and faults, all
//! randomness from one seed. A run is reproducible from its seed.
//!
//! Links behave like TCP: frames in one direction arrive in order, after a
//! latency; a close is seen after the frames sent before it. Faults:
//! [`Sim::drop_link`] (both ends see the link close), [`Sim::partition`]
//! (nothing gets through for a while: frames wait, as TCP would retransmit
//! them, dials fail, and only the timers notice),
//! [`Sim::set_slow`] (the client stops reading: the server's queue for it
//! grows), [`Sim::restart_server`] (all server state lost, or, for a
//! durable server, what it had not stored yet),
//! [`Sim::kill_node`] (one gateway's node dies: its clients' links break,
//! and the hub learns of it only later).
//!
//! A durable server ([`ServerConfig::durable`]) keeps its state in a
//! [`SimStore`]: a [`MemoryStore`] unless the test brings its own
//! ([`Sim::with_store`]). Each batch the server makes is written after the
//! store's latency ([`SimConfig::store_latency`]), in order; a restart
//! loses the batches not written yet, and the new server starts from what
//! the store holds.
//!
//! A tap, off by default, records every frame put on a link, decoded, with
//! the client, the link and the server incarnation it belongs to and whether
//! it arrived: [`Sim::record_server_frames`] (what the server sends),
//! [`Sim::record_client_frames`] (what the Sessions send), read with
//! [`Sim::frames`] or [`Sim::take_frames`]. Tests use it to check what went
//! over the wire against what the Sessions reported.
//!
//! ```
//! use std::time::Duration;
//! use hummer_channel::client::{Event, SendOptions, SessionConfig};
//! use hummer_channel::server::{ServerConfig, DEMO_APPID};
//! use hummer_channel::sim::{Sim, SimConfig};
//! use hummer_channel::{Message, Uid};
//!
//! let mut sim = Sim::new(SimConfig::new(7, ServerConfig::demo()));
//! let alice = sim.add_client(SessionConfig::new(DEMO_APPID));
//! let bob = sim.add_client(SessionConfig::new(DEMO_APPID));
//! sim.command(alice, |s, now| s.login(now, Uid(1), None, None)).unwrap();
//! sim.command(bob, |s, now| s.login(now, Uid(2), None, None)).unwrap();
//! sim.run_for(Duration::from_secs(1));
//!
//! sim.drop_link(bob); // bob reconnects by himself...
//! sim.command(alice, |s, now| {
//!     s.send_message_to_user(now, Uid(2), Message::new("t", "hi"), SendOptions::default())
//! }).unwrap();
//! sim.run_for(Duration::from_secs(5));
//! // ...and gets the reliable message exactly once.
//! let got = sim.take_events(bob).into_iter()
//!     .filter(|e| matches!(e, Event::MessageFromUser { .. }))
//!     .count();
//! assert_eq!(got, 1);
//! ```

mod store;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::client::{Event, LinkId, RequestId, Session, SessionConfig, TransportAction};
use crate::error::{CommandError, WireError};
use crate::server::{
    ConnId, GatewayId, Server, ServerConfig, ShardId, StoreBatch, TransportAction as ServerAction,
};
use crate::wire::{decode_frame, Body, DecodedFrame};

pub use store::{MemoryStore, SimStore};

/// Names a client of the simulation.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientId(pub usize);

/// The simulation's settings.
#[non_exhaustive]
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Every random choice comes from it.
    pub seed: u64,
    /// The server's configuration (its seed is derived from `seed`).
    pub server: ServerConfig,
    /// One-way latency, drawn uniformly from this range for each frame.
    pub latency: (Duration, Duration),
    /// Unix time at the start, in ms.
    pub start_unix_ms: u64,
    /// The server's gateways (connections are spread over them in turn).
    pub gateways: u16,
    /// The latency of each message between a gateway and the hub, drawn
    /// from this range (zero: handled at once, as in one thread); it
    /// applies between hub shards too.
    pub hub_latency: (Duration, Duration),
    /// The hub's shards (see [`Server::with_shape`]).
    pub hub_shards: u16,
    /// With a durable server: how long a batch takes to be stored, drawn
    /// from this range (batches are stored in the order made).
    pub store_latency: (Duration, Duration),
}

impl SimConfig {
    /// Latency 1..=20 ms, the given seed and server.
    pub fn new(seed: u64, server: ServerConfig) -> Self {
        SimConfig {
            seed,
            server,
            latency: (Duration::from_millis(1), Duration::from_millis(20)),
            start_unix_ms: 1_700_000_000_000,
            gateways: 1,
            hub_latency: (Duration::ZERO, Duration::ZERO),
            hub_shards: 1,
            store_latency: (Duration::from_millis(1), Duration::from_millis(5)),
        }
    }
}

/// Which way a tapped frame went.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// From a client's Session to the server.
    ToServer,
    /// From the server to a client's Session.
    ToClient,
}

/// One frame put on a link while the tap was on (see
/// [`Sim::record_server_frames`] and [`Sim::record_client_frames`]).
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq)]
pub struct TappedFrame {
    /// Its place among every frame tapped in this run (0, 1, 2, ...; frames
    /// taken with [`Sim::take_frames`] keep their numbers): the order the
    /// frames were put on the wire.
    pub index: u64,
    /// The client whose link carried it.
    pub client: ClientId,
    /// The client's link it was sent on: one number per transport
    /// connection of the client (see [`Sim::link`]). A frame sent on a link
    /// arrives only on that link.
    pub link: u64,
    /// The server it was sent by or to: 0 for the first, one more after
    /// each [`Sim::restart_server`] (see [`Sim::server_incarnation`]).
    pub server_incarnation: u64,
    /// Which way it went.
    pub direction: Direction,
    /// When it was put on the link.
    pub sent_at: Instant,
    /// When it reached the other end: the Session (on a link still open) or
    /// the server it was sent to (not one restarted since). `None` while in
    /// flight, or when the link closed (or the server restarted) first.
    pub delivered_at: Option<Instant>,
    /// The frame, decoded (without a size limit).
    pub frame: Result<DecodedFrame, WireError>,
}

impl TappedFrame {
    /// It reached the other end (see [`TappedFrame::delivered_at`]).
    pub fn delivered(&self) -> bool {
        self.delivered_at.is_some()
    }

    /// The frame's body, if it decoded.
    pub fn body(&self) -> Option<&Body> {
        self.frame.as_ref().ok().map(|f| &f.body)
    }

    /// The frame's request id (0 for pushes and undecodable frames).
    pub fn request_id(&self) -> u64 {
        self.frame.as_ref().map_or(0, |f| f.request_id)
    }
}

/// The tap's settings and what it recorded.
#[derive(Debug, Default)]
struct Tap {
    server: bool,
    client: bool,
    /// The index of `frames[0]` (earlier ones were taken).
    base: u64,
    frames: Vec<TappedFrame>,
}

/// What arrives. Server-bound things name the connection (and the server
/// incarnation) they were sent on; client-bound things the client's link.
#[derive(Debug)]
enum What {
    /// A frame for the server.
    ToServer(ConnId, u64, Bytes),
    /// The client closed its end: the server sees it.
    ClientClosed(ConnId, u64),
    /// A frame for a client.
    ToClient(Bytes),
    /// The client's dial completes (or fails when partitioned).
    Connected,
    /// The server closed: the client sees it.
    ServerClosed,
}

#[derive(Debug)]
struct Delivery {
    at: Instant,
    order: u64,
    client: usize,
    /// The client's link incarnation, for client-bound deliveries.
    link: u64,
    /// The tapped frame this delivers, if the tap recorded it.
    tap: Option<u64>,
    what: What,
}

impl PartialEq for Delivery {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.order) == (other.at, other.order)
    }
}
impl Eq for Delivery {}
impl PartialOrd for Delivery {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Delivery {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.order).cmp(&(other.at, other.order))
    }
}

#[derive(Debug)]
struct Client {
    session: Session,
    /// The server's connection for the current link, once accepted.
    conn: Option<ConnId>,
    /// Incremented for every new link.
    link: u64,
    /// The Session's id of its current link.
    link_id: Option<LinkId>,
    /// The link is open at the client end.
    open: bool,
    partitioned_until: Option<Instant>,
    slow: bool,
    /// The last arrival time scheduled in each direction (keeps order).
    last_up: Instant,
    last_down: Instant,
    events: Vec<Event>,
}

/// The simulated network. See the [module docs](self).
#[derive(Debug)]
pub struct Sim {
    config: SimConfig,
    rng: u64,
    now: Instant,
    start: Instant,
    server: Server,
    restarts: u64,
    clients: Vec<Client>,
    queue: BinaryHeap<Reverse<Delivery>>,
    order: u64,
    tap: Tap,
    /// Gateways killed, and when the hub learns that they are gone.
    losses: Vec<(Instant, GatewayId)>,
    /// A durable server's store.
    store: Option<Box<dyn SimStore>>,
    /// Batches on their way to the store: when each is stored, in order.
    storing: VecDeque<(Instant, ShardId, StoreBatch)>,
}

impl Sim {
    /// A network with a server and no clients, at an arbitrary fixed start.
    /// A durable server ([`ServerConfig::durable`]) gets a [`MemoryStore`].
    pub fn new(config: SimConfig) -> Sim {
        let store = config
            .server
            .durable
            .then(|| Box::new(MemoryStore::default()) as _);
        Sim::with_store_of(config, store)
    }

    /// A network whose server is durable and keeps its state in `store`,
    /// starting from what `store` holds.
    ///
    /// ```
    /// use std::time::Duration;
    /// use hummer_channel::client::{Event, SendOptions, SessionConfig};
    /// use hummer_channel::server::{ServerConfig, DEMO_APPID};
    /// use hummer_channel::sim::{MemoryStore, Sim, SimConfig};
    /// use hummer_channel::{Message, Uid};
    ///
    /// let mut sim = Sim::with_store(SimConfig::new(7, ServerConfig::demo()), MemoryStore::default());
    /// let alice = sim.add_client(SessionConfig::new(DEMO_APPID));
    /// let bob = sim.add_client(SessionConfig::new(DEMO_APPID));
    /// sim.command(alice, |s, now| s.login(now, Uid(1), None, None)).unwrap();
    /// sim.command(bob, |s, now| s.login(now, Uid(2), None, None)).unwrap();
    /// sim.run_for(Duration::from_secs(1));
    /// sim.command(alice, |s, now| {
    ///     s.send_message_to_user(now, Uid(2), Message::new("t", "kept"), SendOptions::default())
    /// }).unwrap();
    /// sim.run_for(Duration::from_secs(1));
    ///
    /// sim.restart_server(); // every link breaks; the state was stored...
    /// sim.run_for(Duration::from_secs(5));
    /// let events = sim.take_events(bob);
    /// // ...so bob resumes with nothing lost, and got the message once.
    /// assert!(!events.iter().any(|e| matches!(e, Event::MessagesLost { .. })));
    /// let got = events.iter().filter(|e| matches!(e, Event::MessageFromUser { .. })).count();
    /// assert_eq!(got, 1);
    /// ```
    pub fn with_store(mut config: SimConfig, store: impl SimStore + 'static) -> Sim {
        config.server.durable = true;
        Sim::with_store_of(config, Some(Box::new(store)))
    }

    fn with_store_of(config: SimConfig, store: Option<Box<dyn SimStore>>) -> Sim {
        let now = Instant::now();
        let mut server_config = config.server.clone();
        server_config.seed = config.seed ^ 0x5e_5e_5e;
        let server = Sim::server_of(&config, server_config, now, config.start_unix_ms);
        let mut sim = Sim {
            rng: config.seed,
            config,
            now,
            start: now,
            server,
            restarts: 0,
            clients: Vec::new(),
            queue: BinaryHeap::new(),
            order: 0,
            tap: Tap::default(),
            losses: Vec::new(),
            store: None,
            storing: VecDeque::new(),
        };
        sim.start_from(store);
        sim
    }

    /// The server, new, takes what `store` holds (before any other input).
    fn start_from(&mut self, store: Option<Box<dyn SimStore>>) {
        self.store = store;
        if let Some(store) = self.store.as_mut() {
            self.server.restore(self.now, &store.load());
        }
    }

    /// A server of the simulation's shape.
    fn server_of(sim: &SimConfig, config: ServerConfig, now: Instant, unix_ms: u64) -> Server {
        let seed = config.seed;
        let server = Server::with_shape(config, sim.gateways, sim.hub_shards, now, unix_ms);
        if sim.hub_latency.1.is_zero() {
            return server;
        }
        server.with_message_latency(sim.hub_latency, seed ^ 0x1a7e)
    }

    /// The simulated clock.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// The server.
    pub fn server(&self) -> &Server {
        &self.server
    }

    /// Adds a client whose Session gets `config` (its seed derived from the
    /// simulation's).
    pub fn add_client(&mut self, mut config: SessionConfig) -> ClientId {
        config.seed = self.next_u64();
        let id = self.clients.len();
        self.clients.push(Client {
            session: Session::new(config, self.now),
            conn: None,
            link: 0,
            link_id: None,
            open: false,
            partitioned_until: None,
            slow: false,
            last_up: self.now,
            last_down: self.now,
            events: Vec::new(),
        });
        ClientId(id)
    }

    /// The client's Session, to read its state.
    pub fn session(&self, c: ClientId) -> &Session {
        &self.clients[c.0].session
    }

    /// Runs a command on the client's Session at the current time, then
    /// moves what it produced into the network.
    pub fn command<T>(
        &mut self,
        c: ClientId,
        f: impl FnOnce(&mut Session, Instant) -> Result<T, CommandError>,
    ) -> Result<T, CommandError> {
        let now = self.now;
        let r = f(&mut self.clients[c.0].session, now);
        self.pump_client(c.0);
        r
    }

    /// The events the client has produced since the last call.
    pub fn take_events(&mut self, c: ClientId) -> Vec<Event> {
        std::mem::take(&mut self.clients[c.0].events)
    }

    /// The completion of `request` among the client's events, if it has come
    /// (removed from the events).
    pub fn take_completion(
        &mut self,
        c: ClientId,
        request: RequestId,
    ) -> Option<Result<crate::client::Reply, crate::error::ServiceError>> {
        let events = &mut self.clients[c.0].events;
        let pos = events
            .iter()
            .position(|e| matches!(e, Event::Completed { request: r, .. } if *r == request))?;
        match events.remove(pos) {
            Event::Completed { result, .. } => Some(result),
            _ => None,
        }
    }

    /// The client's current link number: it changes whenever the client's
    /// transport closes or a new one is dialled (the numbers of
    /// [`TappedFrame::link`]).
    pub fn link(&self, c: ClientId) -> u64 {
        self.clients[c.0].link
    }

    /// The gateway of the client's link, while the server holds it (see
    /// [`Sim::kill_node`]).
    pub fn gateway(&self, c: ClientId) -> Option<GatewayId> {
        self.clients[c.0].conn.map(ConnId::gateway)
    }

    /// How many times the server was restarted: the incarnation of the
    /// server running now (the numbers of [`TappedFrame::server_incarnation`]).
    pub fn server_incarnation(&self) -> u64 {
        self.restarts
    }

    // ---- the tap ------------------------------------------------------------

    /// Starts (`true`) or stops recording every frame the server puts on a
    /// client's link, from now on. Off by default: a run that does not ask
    /// pays nothing. What is recorded stays until taken ([`Sim::take_frames`]).
    pub fn record_server_frames(&mut self, on: bool) {
        self.tap.server = on;
    }

    /// Starts (`true`) or stops recording every frame a client's Session
    /// puts on its link to the server, from now on. Off by default.
    pub fn record_client_frames(&mut self, on: bool) {
        self.tap.client = on;
    }

    /// The frames recorded and not taken yet, in the order they were sent
    /// (both directions, every client).
    pub fn frames(&self) -> &[TappedFrame] {
        &self.tap.frames
    }

    /// Removes and returns the frames recorded so far (a frame still in
    /// flight is then no longer marked when it arrives).
    pub fn take_frames(&mut self) -> Vec<TappedFrame> {
        self.tap.base += self.tap.frames.len() as u64;
        std::mem::take(&mut self.tap.frames)
    }

    /// Records `frame`, sent now on client `i`'s current link, if the tap is
    /// on for `direction`; its index.
    fn tap_frame(&mut self, i: usize, direction: Direction, frame: &Bytes) -> Option<u64> {
        let on = match direction {
            Direction::ToServer => self.tap.client,
            Direction::ToClient => self.tap.server,
        };
        if !on {
            return None;
        }
        let index = self.tap.base + self.tap.frames.len() as u64;
        self.tap.frames.push(TappedFrame {
            index,
            client: ClientId(i),
            link: self.clients[i].link,
            server_incarnation: self.restarts,
            direction,
            sent_at: self.now,
            delivered_at: None,
            frame: decode_frame(frame.clone(), usize::MAX),
        });
        Some(index)
    }

    /// Notes that the tapped frame `tap` arrived.
    fn tap_delivered(&mut self, tap: Option<u64>) {
        let Some(n) = tap.and_then(|n| n.checked_sub(self.tap.base)) else {
            return;
        };
        if let Some(f) = usize::try_from(n)
            .ok()
            .and_then(|n| self.tap.frames.get_mut(n))
        {
            f.delivered_at = Some(self.now);
        }
    }

    // ---- faults ----------------------------------------------------------------

    /// Breaks the client's link now: both ends see it close.
    pub fn drop_link(&mut self, c: ClientId) {
        let client = &mut self.clients[c.0];
        if !client.open {
            return;
        }
        client.open = false;
        client.link += 1;
        if let Some(conn) = client.conn.take() {
            self.server.handle_disconnected(self.now, conn);
        }
        if let Some(link) = client.link_id {
            client.session.handle_disconnected(self.now, link);
        }
        self.pump_client(c.0);
        self.pump_server();
    }

    /// For `d`, nothing gets through to or from the client: frames are held
    /// until the partition heals (a byte stream retransmits), dials fail,
    /// and the link is not closed, so only the timers notice.
    pub fn partition(&mut self, c: ClientId, d: Duration) {
        self.clients[c.0].partitioned_until = Some(self.now + d);
    }

    /// A slow client stops reading: the server's queue for it grows.
    pub fn set_slow(&mut self, c: ClientId, slow: bool) {
        self.clients[c.0].slow = slow;
        if !slow {
            self.pump_server();
        }
    }

    /// The node of gateway `gateway` dies (see [`Server::kill_gateway`]):
    /// every client whose link is on that gateway sees its link break now,
    /// as with [`Sim::drop_link`], but the server is not told per link;
    /// the hub learns that the gateway is gone after `detect_after` of
    /// simulated time ([`Server::handle_gateway_lost`]: their instances
    /// stay present for the grace period from then). Meanwhile the clients
    /// reconnect, to whichever gateway the server gives them (never the dead
    /// one), and resume. Returns the clients whose links broke. A node
    /// already dead (the hub has not learned of it yet) does not die again:
    /// nothing happens.
    ///
    /// ```
    /// use std::time::Duration;
    /// use hummer_channel::client::{ConnectionState, SessionConfig};
    /// use hummer_channel::server::{ServerConfig, DEMO_APPID};
    /// use hummer_channel::sim::{Sim, SimConfig};
    /// use hummer_channel::Uid;
    ///
    /// let mut config = SimConfig::new(7, ServerConfig::demo());
    /// config.gateways = 2;
    /// let mut sim = Sim::new(config);
    /// let alice = sim.add_client(SessionConfig::new(DEMO_APPID));
    /// let bob = sim.add_client(SessionConfig::new(DEMO_APPID));
    /// sim.command(alice, |s, now| s.login(now, Uid(1), None, None)).unwrap();
    /// sim.command(bob, |s, now| s.login(now, Uid(2), None, None)).unwrap();
    /// sim.run_for(Duration::from_secs(1));
    ///
    /// // The links are spread over the two gateways: bob's node dies.
    /// let node = sim.gateway(bob).unwrap();
    /// assert_ne!(sim.gateway(alice), Some(node));
    /// assert_eq!(sim.kill_node(node, Duration::from_secs(3)), vec![bob]);
    /// sim.run_for(Duration::from_secs(10));
    /// let state = sim.session(bob).connection_state().0;
    /// assert_eq!(state, ConnectionState::Connected);
    /// assert_ne!(sim.gateway(bob), Some(node), "on the other node...");
    /// assert_eq!(sim.server().instance_count(), 2, "...with the same instance");
    /// ```
    pub fn kill_node(&mut self, gateway: GatewayId, detect_after: Duration) -> Vec<ClientId> {
        if self.losses.iter().any(|(_, g)| *g == gateway) {
            return Vec::new();
        }
        let held = self.server.kill_gateway(self.now, gateway);
        let mut broken = Vec::new();
        for i in 0..self.clients.len() {
            let client = &mut self.clients[i];
            if !client.conn.is_some_and(|c| held.contains(&c)) {
                continue;
            }
            broken.push(ClientId(i));
            self.break_link(i);
        }
        self.losses.push((self.now + detect_after, gateway));
        self.pump_server();
        broken
    }

    /// The server restarts; every link breaks. It loses all its state or,
    /// when durable, what it had not stored yet: the new one starts from
    /// what the store holds.
    pub fn restart_server(&mut self) {
        self.restarts += 1;
        self.losses.clear();
        let mut config = self.config.server.clone();
        config.seed = self.config.seed ^ 0x5e_5e_5e ^ (self.restarts << 32);
        let unix =
            self.config.start_unix_ms + self.now.duration_since(self.start).as_millis() as u64;
        self.server = Sim::server_of(&self.config, config, self.now, unix);
        self.storing.clear();
        let store = self.store.take();
        self.start_from(store);
        for i in 0..self.clients.len() {
            self.break_link(i);
        }
    }

    /// Client `i`'s link breaks with the server side gone (nothing more
    /// arrives on it either way): its Session sees it at once.
    fn break_link(&mut self, i: usize) {
        let client = &mut self.clients[i];
        client.conn = None;
        if client.open {
            client.open = false;
            client.link += 1;
            if let Some(link) = client.link_id {
                client.session.handle_disconnected(self.now, link);
            }
            self.pump_client(i);
        }
    }

    // ---- running ----------------------------------------------------------------

    /// Runs until `d` has passed on the simulated clock.
    pub fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        while let Some(next) = self.next_due() {
            if next > end {
                break;
            }
            self.advance_to(next);
            self.step();
        }
        self.advance_to(end);
        self.step();
    }

    fn advance_to(&mut self, t: Instant) {
        self.now = self.now.max(t);
    }

    fn next_due(&self) -> Option<Instant> {
        let deliveries = self.queue.peek().map(|Reverse(d)| d.at);
        let sessions = self.clients.iter().filter_map(|c| c.session.poll_timeout());
        let server = self.server.poll_timeout();
        let losses = self.losses.iter().map(|(at, _)| *at);
        let stored = self.storing.front().map(|(at, _, _)| *at);
        deliveries
            .into_iter()
            .chain(sessions)
            .chain(server)
            .chain(losses)
            .chain(stored)
            .min()
    }

    /// Handles everything due now.
    fn step(&mut self) {
        let now = self.now;
        while self.queue.peek().is_some_and(|Reverse(d)| d.at <= now) {
            let Some(Reverse(d)) = self.queue.pop() else {
                break;
            };
            self.deliver(d);
        }
        while self.storing.front().is_some_and(|(at, _, _)| *at <= now) {
            let Some((_, shard, batch)) = self.storing.pop_front() else {
                break;
            };
            if let Some(store) = self.store.as_mut() {
                store.write(shard, &batch);
            }
            self.server.handle_stored(now, shard, batch.number);
            self.pump_server();
        }
        while let Some(k) = self.losses.iter().position(|(at, _)| *at <= now) {
            let (_, gateway) = self.losses.remove(k);
            self.server.handle_gateway_lost(now, gateway);
            self.pump_server();
        }
        if self.server.poll_timeout().is_some_and(|t| t <= now) {
            self.server.handle_timeout(now);
            self.pump_server();
        }
        for i in 0..self.clients.len() {
            if self.clients[i]
                .session
                .poll_timeout()
                .is_some_and(|t| t <= now)
            {
                self.clients[i].session.handle_timeout(now);
                self.pump_client(i);
            }
        }
    }

    fn partitioned(&self, i: usize) -> bool {
        self.clients[i]
            .partitioned_until
            .is_some_and(|until| self.now < until)
    }

    fn deliver(&mut self, d: Delivery) {
        let now = self.now;
        let i = d.client;
        let server_bound = matches!(d.what, What::ToServer(..) | What::ClientClosed(..));
        if !server_bound && d.link != self.clients[i].link {
            return; // for a link the client has closed
        }
        match d.what {
            What::Connected => {
                let Some(link) = self.clients[i].link_id else {
                    return;
                };
                // No node to reach: every gateway is dead.
                if self.partitioned(i) || !self.server.is_accepting() {
                    self.clients[i].session.handle_disconnected(now, link);
                } else {
                    let conn = self.server.accept(now);
                    let client = &mut self.clients[i];
                    client.conn = Some(conn);
                    client.open = true;
                    client.session.handle_connected(now, link);
                }
                self.pump_client(i);
            }
            What::ToServer(conn, incarnation, frame) => {
                if incarnation == self.restarts {
                    self.tap_delivered(d.tap);
                    self.server.handle_frame(now, conn, frame);
                    self.pump_server();
                }
            }
            What::ToClient(frame) => {
                if let (true, Some(link)) = (self.clients[i].open, self.clients[i].link_id) {
                    self.tap_delivered(d.tap);
                    // A frame the Session refuses makes it drop the link itself.
                    let _ = self.clients[i].session.handle_frame(now, link, frame);
                    self.pump_client(i);
                }
            }
            What::ClientClosed(conn, incarnation) => {
                if incarnation == self.restarts {
                    self.server.handle_disconnected(now, conn);
                    self.pump_server();
                }
            }
            What::ServerClosed => {
                let client = &mut self.clients[i];
                if client.open {
                    client.open = false;
                    client.link += 1;
                    client.conn = None;
                    if let Some(link) = client.link_id {
                        client.session.handle_disconnected(now, link);
                    }
                    self.pump_client(i);
                }
            }
        }
    }

    fn latency(&mut self) -> Duration {
        self.draw(self.config.latency)
    }

    /// A duration drawn uniformly from `lo..=hi` (in µs).
    fn draw(&mut self, (lo, hi): (Duration, Duration)) -> Duration {
        let span = hi.saturating_sub(lo).as_micros() as u64;
        lo + Duration::from_micros(self.next_u64() % (span + 1))
    }

    fn schedule(&mut self, i: usize, up: bool, what: What) {
        self.schedule_tapped(i, up, what, None);
    }

    /// [`Sim::schedule`] for a frame the tap recorded as `tap`.
    fn schedule_tapped(&mut self, i: usize, up: bool, what: What, tap: Option<u64>) {
        let latency = self.latency();
        let client = &mut self.clients[i];
        let last = if up {
            &mut client.last_up
        } else {
            &mut client.last_down
        };
        // In order per direction, like a byte stream; held by a partition.
        let healed = client.partitioned_until.unwrap_or(self.now);
        let at = (self.now + latency).max(*last).max(healed);
        *last = at;
        let link = client.link;
        self.order += 1;
        self.queue.push(Reverse(Delivery {
            at,
            order: self.order,
            client: i,
            link,
            tap,
            what,
        }));
    }

    /// One drain of client `i`'s Session, then what it asked for.
    fn pump_client(&mut self, i: usize) {
        let mut out = SessionDrain::default();
        self.clients[i].session.drain(&mut out);
        for action in out.actions {
            let client = &mut self.clients[i];
            match action {
                TransportAction::Connect { link } => {
                    client.link += 1;
                    client.link_id = Some(link);
                    client.open = false;
                    client.conn = None;
                    self.schedule(i, true, What::Connected);
                }
                TransportAction::Close { .. } => {
                    client.open = false;
                    client.link += 1;
                    if let Some(conn) = client.conn.take() {
                        let incarnation = self.restarts;
                        self.schedule(i, true, What::ClientClosed(conn, incarnation));
                    }
                }
            }
        }
        for frame in out.frames {
            let client = &self.clients[i];
            if let (true, Some(conn)) = (client.open, client.conn) {
                let incarnation = self.restarts;
                let tap = self.tap_frame(i, Direction::ToServer, &frame);
                self.schedule_tapped(i, true, What::ToServer(conn, incarnation, frame), tap);
            }
        }
        self.clients[i].events.extend(out.events);
    }

    fn client_of(&self, conn: ConnId) -> Option<usize> {
        self.clients.iter().position(|c| c.conn == Some(conn))
    }

    /// One drain of the server, then its frames on their links. A slow
    /// client's frames stay queued in the server (it reads nothing); the
    /// server's next drain offers them again.
    fn pump_server(&mut self) {
        let mut out = ServerDrain {
            slow: self
                .clients
                .iter()
                .filter(|c| c.slow)
                .filter_map(|c| c.conn)
                .collect(),
            ..ServerDrain::default()
        };
        self.server.drain(&mut out);
        let mut last: Option<(ConnId, Option<usize>)> = None;
        for (conn, frame) in out.frames {
            let i = match last {
                Some((c, i)) if c == conn => i,
                _ => self.client_of(conn),
            };
            last = Some((conn, i));
            if let Some(i) = i {
                let tap = self.tap_frame(i, Direction::ToClient, &frame);
                self.schedule_tapped(i, false, What::ToClient(frame), tap);
            }
        }
        for conn in out.closes {
            if let Some(i) = self.client_of(conn) {
                self.schedule(i, false, What::ServerClosed);
                self.clients[i].conn = None;
            }
        }
        while let Some((shard, batch)) = self.server.poll_store() {
            let drawn = self.now + self.draw(self.config.store_latency);
            let at = self
                .storing
                .back()
                .map_or(drawn, |(last, _, _)| drawn.max(*last));
            self.storing.push_back((at, shard, batch));
        }
    }

    fn next_u64(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// What one drain of a Session produced, handled after the drain (handling
/// it needs the whole simulation).
#[derive(Default)]
struct SessionDrain {
    actions: Vec<TransportAction>,
    frames: Vec<Bytes>,
    events: Vec<Event>,
}

impl crate::client::Sink for SessionDrain {
    fn transport(&mut self, action: TransportAction) {
        self.actions.push(action);
    }
    fn transmit(&mut self, frame: Bytes) {
        self.frames.push(frame);
    }
    fn event(&mut self, event: Event) {
        self.events.push(event);
    }
}

/// What one drain of the server produced; `slow` connections take nothing.
#[derive(Default)]
struct ServerDrain {
    slow: Vec<ConnId>,
    frames: Vec<(ConnId, Bytes)>,
    closes: Vec<ConnId>,
}

impl crate::server::Sink for ServerDrain {
    fn writable(&mut self, conn: ConnId) -> bool {
        !self.slow.contains(&conn)
    }
    fn transmit(&mut self, conn: ConnId, frame: Bytes) {
        self.frames.push((conn, frame));
    }
    fn transport(&mut self, action: ServerAction) {
        let ServerAction::Close { conn, .. } = action;
        self.closes.push(conn);
    }
}
