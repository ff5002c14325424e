//! Model-based conformance: random operations by several users and instances
//! (two instances share uid 2), with random faults, over the simulated
//! network; then the faults stop, the system settles, and the outcome is
//! checked against what the service promises.
//!
//! The simulator's tap records every frame on every link, both ways, so the
//! checks also hold the Sessions' reports against what the server really
//! sent (protocol v2): every loss reported matches a gap the server sent on
//! that client's links, and no gap is reported twice; the server never sends
//! a sequenced message twice on one link except in reply to a fetch; a send
//! completed Ok was accepted once and is delivered exactly once to every
//! receiver owed it (only a reported loss that covers it excuses it), a
//! refused one never; after a server restart each stream the client held is
//! reported lost exactly once, from the cursor it resumed with.
//!
//! A second property runs the same operations and checks on three
//! "nodes" (three gateways, see `docs/server.md`, "Scaling out"), with one
//! fault more: a node dies (`Sim::kill_node`). Its clients' links break at
//! once, the hub learns of it only `detect_ms` later (the cluster's silence
//! limit is 3 s), and the clients resume on the other nodes meanwhile, or,
//! when they stay away (`away_ms`: their network went down with the node)
//! past the hub's detection and the grace period (shortened to 3 s for
//! these runs), log in anew after their instance departed. Every promise
//! above must hold the same, and one more: (e) a client whose instance was
//! on a link the death broke, and who logs in again before the hub's
//! detection plus the grace period, resumes that instance.
//!
//! A third property runs them on a durable server (`ServerConfig::durable`,
//! a store double the simulator writes each batch to after a latency), in
//! every shape, restarts more frequent: a restart loses the batches not yet
//! stored, and the new server starts from the store. There a restart is no
//! excuse for any loss: every promise above holds as on a server that never
//! restarted, and (d') each client's first login after a restart goes on in
//! the epochs it resumed from, with no gap. A fourth runs the same with the
//! store in a real Redis (`redis-server` on a free port, the TCP runner's
//! Redis store), with the `redis` feature.
//!
//! Cases: `HUMMER_CONFORMANCE_CASES` (default 24, so CI stays short),
//! `HUMMER_CONFORMANCE_NODE_CASES` for the nodes,
//! `HUMMER_CONFORMANCE_DURABLE_CASES` and `HUMMER_CONFORMANCE_REDIS_CASES`
//! for the durable runs (default 8 each). A failure
//! prints the shrunk operation list and the seed that reproduces it.
//! `HUMMER_CONFORMANCE_STATS=1` (with `--nocapture`) prints, after each case,
//! how often the scenarios the v2 checks are about have come up so far.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hummer_channel::client::{
    ChannelHandle, ConnectionState, Event, LostStream, Reply, RequestId, SendOptions, SessionConfig,
};
use hummer_channel::server::{GatewayId, ServerConfig, DEMO_APPID};
use hummer_channel::sim::{
    ClientId, Direction, MemoryStore, Sim, SimConfig, SimStore, TappedFrame,
};
use hummer_channel::wire::{self, Body};
use hummer_channel::{Attributes, ErrorCode, Message, Region, Uid};
use proptest::prelude::*;

#[cfg(feature = "redis")]
mod redis_support;

/// The uid of each client: two instances of uid 2.
const UIDS: [u64; 4] = [1, 2, 2, 3];

#[derive(Debug, Clone)]
enum Op {
    /// A send; `cut`: the sender's link breaks that many ms after it (the
    /// reply is likely lost: a reliable send is then re-sent on the resume).
    P2p {
        from: usize,
        to: u64,
        reliable: bool,
        big: bool,
        cut: Option<u64>,
    },
    Broadcast {
        from: usize,
        reliable: bool,
        big: bool,
        cut: Option<u64>,
    },
    /// `n` reliable sends, one every `every_ms`: traffic that goes on while
    /// a receiver resumes (with a replay cut short, its fetch then asks for
    /// pushes the link already carried).
    Burst {
        from: usize,
        to: Option<u64>,
        n: u64,
        every_ms: u64,
        big: bool,
    },
    Join(usize),
    Leave(usize),
    Wait(u64),
    DropLink(usize),
    Partition(usize, u64),
    Slow(usize, u64),
    RestartServer,
    /// The node of gateway `gateway` dies; the hub learns of it `detect_ms`
    /// later. `away_ms`: its clients cannot reach any node for that long
    /// (their dials fail). `lead_ms`: every client sends a reliable P2P
    /// message and a reliable broadcast that many ms before the death, so
    /// that requests, replies and pushes are on their way through it.
    KillNode {
        gateway: u16,
        detect_ms: u64,
        away_ms: Option<u64>,
        lead_ms: Option<u64>,
    },
}

/// Now and then, a link cut within a send's round trip (0..40 ms after it).
fn cut() -> impl Strategy<Value = Option<u64>> {
    prop::option::weighted(0.15, 0u64..40)
}

fn op() -> impl Strategy<Value = Op> {
    let client = 0usize..4;
    prop_oneof![
        6 => (client.clone(), prop::sample::select(vec![1u64, 2, 3]), prop::bool::weighted(0.8), prop::bool::weighted(0.2), cut())
            .prop_map(|(from, to, reliable, big, cut)| Op::P2p { from, to, reliable, big, cut }),
        6 => (client.clone(), prop::bool::weighted(0.8), prop::bool::weighted(0.2), cut())
            .prop_map(|(from, reliable, big, cut)| Op::Broadcast { from, reliable, big, cut }),
        2 => (client.clone(), prop::sample::select(vec![None, Some(1u64), Some(2), Some(3)]), 2u64..8, 5u64..60, prop::bool::weighted(0.5))
            .prop_map(|(from, to, n, every_ms, big)| Op::Burst { from, to, n, every_ms, big }),
        3 => client.clone().prop_map(Op::Join),
        2 => client.clone().prop_map(Op::Leave),
        5 => (1u64..3_000).prop_map(Op::Wait),
        2 => client.clone().prop_map(Op::DropLink),
        1 => (client.clone(), prop::sample::select(vec![5u64, 20, 45, 80])).prop_map(|(c, s)| Op::Partition(c, s)),
        1 => (client, 1u64..4).prop_map(|(c, s)| Op::Slow(c, s)),
        1 => Just(Op::RestartServer),
    ]
}

/// The presence grace period of the runs on several nodes: the hub's
/// detection of a dead node (`KillNode::detect_ms`) takes sometimes less,
/// sometimes more.
const NODE_GRACE: Duration = Duration::from_secs(3);

/// The operations of [`op`], and nodes dying now and then.
fn node_op() -> impl Strategy<Value = Op> {
    let kill = (
        0u16..3,
        // The link between the nodes closes at once (the process died,
        // its machine did not), or goes silent for the silence limit,
        // shorter or longer than the grace period.
        prop_oneof![1 => 0u64..50, 3 => 1_000u64..3_000, 3 => 3_000u64..6_000],
        prop::option::weighted(
            0.3,
            prop::sample::select(vec![1_000u64, 4_000, 8_000, 15_000]),
        ),
        prop::option::weighted(0.5, 0u64..30),
    )
        .prop_map(|(gateway, detect_ms, away_ms, lead_ms)| Op::KillNode {
            gateway,
            detect_ms,
            away_ms,
            lead_ms,
        });
    prop_oneof![12 => op(), 1 => kill]
}

/// A membership: the step its join completed, and the step and request of
/// the leave that ended it.
type Window = (usize, Option<(usize, RequestId)>);

/// One send, as the test issued it.
#[derive(Debug)]
struct Sent {
    from: usize,
    /// `None`: a broadcast.
    to_uid: Option<u64>,
    reliable: bool,
    request: RequestId,
    /// Step at which it was issued.
    step: usize,
}

struct Run {
    sim: Sim,
    clients: Vec<ClientId>,
    channels: Vec<ChannelHandle>,
    sent: BTreeMap<u64, Sent>,
    next_msg: u64,
    /// Per client: every request id handed out.
    issued: Vec<BTreeSet<RequestId>>,
    /// Per client: everything it reported, in order, with the step it came in.
    events: Vec<Vec<(usize, Event)>>,
    /// Per client: membership windows for required delivery: the step at
    /// which its join completed, and the step and request of its leave.
    joined_at: Vec<Vec<Window>>,
    pending_join: Vec<Option<RequestId>>,
    step: usize,
    /// The server keeps its state in a store: a restart loses nothing it
    /// showed, so streams go on across restarts as on one server.
    durable: bool,
    /// The server keeps only `SMALL_RETENTION` messages per stream:
    /// retention gaps are legitimate.
    small_retention: bool,
    /// The links broken by a node's death.
    killed: Vec<Killed>,
    /// When the server restarted.
    restarts: Vec<std::time::Instant>,
}

/// A client's link broken by a node's death.
#[derive(Debug)]
struct Killed {
    client: usize,
    /// The client's link number right after (the broken one was the one
    /// before).
    link: u64,
    /// When, and how long the hub took to learn of it.
    at: std::time::Instant,
    detect: Duration,
    /// The server incarnation then.
    incarnation: u64,
}

/// Messages per stream a small-retention server keeps.
const SMALL_RETENTION: usize = 5;

/// A reliable stream as one client sees it: its P2P stream, or a channel
/// (by its wire key: region and id).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Stream {
    User,
    Channel(i32, String),
}

fn stream_of_key(key: Option<&wire::ChannelKey>) -> Stream {
    match key {
        None => Stream::User,
        Some(k) => Stream::Channel(k.region, k.channel_id.clone()),
    }
}

/// What a gap frame told the client, for one stream.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Gap {
    /// The stream's epoch changed: everything after `from - 1` of the epoch
    /// the client resumed from (`prev_epoch`) is gone; it goes on in
    /// `new_epoch` after `head`.
    Epoch {
        prev_epoch: u64,
        from: u64,
        new_epoch: u64,
        head: u64,
    },
    /// `from..=to` of the stream's `epoch` will not come (past retention).
    Range { epoch: u64, from: u64, to: u64 },
}

/// A `MessagesLost` event and the frame that justifies it.
#[derive(Debug)]
struct MatchedLoss {
    stream: Stream,
    /// The tapped frame's index and server incarnation.
    frame: u64,
    incarnation: u64,
    gap: Gap,
}

/// How often the scenarios the v2 checks are about came up (all cases).
static STATS: [AtomicU64; 23] = [const { AtomicU64::new(0) }; 23];
const STAT_NAMES: [&str; 23] = [
    "restart re-logins checked (P2P)",
    "restart re-joins checked (channel)",
    "  of which cursor 0 with accepted, undelivered messages",
    "loss events matched to frames",
    "sequenced pushes repeated by a fetch",
    "sends completed Ok and owed, checked exactly once",
    "channel epochs replaced without a restart (channel forgotten)",
    "fetches answered",
    "replays cut short by the byte budget",
    "held sends re-sent after a resumed login",
    "  of which reached the server twice (answered from its memory)",
    "ranges reported lost past retention (small-retention runs)",
    "node kills (ops, a node already dead does not die again)",
    "links broken by a node's death",
    "  of which resumed their instance on a later link",
    "  of which logged in anew, same server (the instance had departed)",
    "  of which logged in anew: the server had restarted",
    "  of which back within detection + grace, checked resumed",
    "ranges reported lost to a rejoin after another instance of the uid left",
    "durable restarts",
    "  first logins after one, resuming: streams checked kept",
    "    of which resumed their instance",
    "send records read back from sends objects (messages evicted within the dedupe window)",
];

fn stat(i: usize, n: u64) {
    STATS[i].fetch_add(n, Ordering::Relaxed);
}

/// See [`Wire::incarnation`].
fn streams_incarnation(durable: bool, f: &TappedFrame) -> u64 {
    if durable {
        0
    } else {
        f.server_incarnation
    }
}

/// What went over the wire (the simulator's tap), indexed for the checks.
struct Wire<'a> {
    frames: &'a [TappedFrame],
    /// (client, request id) -> the request (request ids are unique per Session).
    requests: HashMap<(usize, u64), &'a Body>,
    /// A stream epoch -> the server incarnation that handed it out.
    epoch_incarnation: HashMap<u64, u64>,
    /// The server is durable: its restarts keep every stream, so for the
    /// streams there is one incarnation (see [`Wire::incarnation`]).
    durable: bool,
}

impl<'a> Wire<'a> {
    fn new(frames: &'a [TappedFrame], durable: bool) -> Self {
        let mut requests = HashMap::new();
        let mut epoch_incarnation = HashMap::new();
        for f in frames {
            let Some(body) = f.body() else { continue };
            match f.direction {
                Direction::ToServer => {
                    if f.request_id() != 0 {
                        requests.insert((f.client.0, f.request_id()), body);
                    }
                }
                Direction::ToClient => {
                    let incarnation = streams_incarnation(durable, f);
                    let mut note = |e: u64| {
                        if e != 0 {
                            epoch_incarnation.entry(e).or_insert(incarnation);
                        }
                    };
                    match body {
                        Body::LoginReply(r) => {
                            note(r.p2p_epoch);
                            for c in &r.channels {
                                note(c.state.as_ref().map_or(0, |s| s.epoch));
                            }
                        }
                        Body::JoinReply(r) => note(r.epoch),
                        _ => {}
                    }
                }
            }
        }
        Wire {
            frames,
            requests,
            epoch_incarnation,
            durable,
        }
    }

    /// The server incarnation whose streams `f` belongs to: the one that
    /// sent it, or, for a durable server, 0 (its streams outlive it).
    fn incarnation(&self, f: &TappedFrame) -> u64 {
        streams_incarnation(self.durable, f)
    }

    /// The server's frames to client `i`, in the order sent.
    fn to_client(&self, i: usize) -> impl Iterator<Item = &'a TappedFrame> + '_ {
        self.frames
            .iter()
            .filter(move |f| f.client.0 == i && f.direction == Direction::ToClient)
    }

    fn request(&self, i: usize, f: &TappedFrame) -> Option<&'a Body> {
        self.requests.get(&(i, f.request_id())).copied()
    }

    /// What frame `f` (to client `i`) says was lost of `stream`, as the
    /// Session would report it: one gap per stream a frame can carry, from
    /// `LoginReply.p2p_gap`, a `ResumedChannel`'s or a `JoinReply`'s `gap`.
    /// After a `FetchReply` the Session reports its `gap`, or (a fetch that
    /// made no progress, `seq.rs` `fetch_done`) the hole before what it
    /// holds: a range up to `through_seq` (the caller checks that the link
    /// had not carried any of it: the hole was really not filled).
    fn gap(
        &self,
        i: usize,
        f: &TappedFrame,
        stream: &Stream,
        from: u64,
        to: Option<u64>,
    ) -> Option<Gap> {
        // `prev_epoch`: the cursor's; `new_epoch`: the reply's.
        let told = |g: &wire::SeqGap, prev_epoch: u64, new_epoch: u64, head: u64| {
            if g.from != from || (g.to != 0).then_some(g.to) != to {
                return None;
            }
            Some(if g.to == 0 {
                Gap::Epoch {
                    prev_epoch,
                    from,
                    new_epoch,
                    head,
                }
            } else {
                Gap::Range {
                    epoch: new_epoch,
                    from,
                    to: g.to,
                }
            })
        };
        match (f.body()?, self.request(i, f)?) {
            (Body::LoginReply(r), Body::Login(req)) => match stream {
                Stream::User => {
                    let prev = req.resume.as_ref().map_or(0, |x| x.p2p_epoch);
                    told(r.p2p_gap.as_ref()?, prev, r.p2p_epoch, r.p2p_seq)
                }
                Stream::Channel(..) => {
                    let kept = r
                        .channels
                        .iter()
                        .find(|c| stream_of_key(c.channel.as_ref()) == *stream)?;
                    let state = kept.state.as_ref()?;
                    let prev = req
                        .resume
                        .as_ref()?
                        .channels
                        .iter()
                        .find(|c| stream_of_key(c.channel.as_ref()) == *stream)
                        .map_or(0, |c| c.epoch);
                    told(state.gap.as_ref()?, prev, state.epoch, state.seq)
                }
            },
            (Body::JoinReply(r), Body::Join(req))
                if stream_of_key(req.channel.as_ref()) == *stream =>
            {
                told(r.gap.as_ref()?, req.epoch, r.epoch, r.seq)
            }
            (Body::FetchReply(r), Body::Fetch(req))
                if stream_of_key(req.channel.as_ref()) == *stream =>
            {
                let to = to?;
                // The epoch is the stream's on that link (filled in by the caller).
                (from <= to && to <= r.through_seq).then_some(Gap::Range { epoch: 0, from, to })
            }
            _ => None,
        }
    }
}

/// The stream and sequence number of a sequenced push (seq > 0); P2P
/// pushes are keyed by channel number 0.
fn sequenced(body: &Body) -> Option<(u32, u64)> {
    match body {
        Body::UserMessage(p) if p.seq > 0 => Some((0, p.seq)),
        Body::ChannelMessage(p) if p.seq > 0 => Some((p.channel, p.seq)),
        _ => None,
    }
}

/// The channel number a channel push is about.
fn channel_push(body: &Body) -> Option<u32> {
    match body {
        Body::ChannelMessage(p) => Some(p.channel),
        Body::Membership(p) => Some(p.channel),
        Body::UserAttributesChanged(p) => Some(p.channel),
        Body::ChannelAttributesChanged(p) => Some(p.channel),
        Body::UserCountChanged(p) => Some(p.channel),
        _ => None,
    }
}

/// The test's message number a push carries.
fn pushed_number(body: &Body) -> Option<u64> {
    let m = match body {
        Body::UserMessage(p) => p.message.as_ref()?,
        Body::ChannelMessage(p) => p.message.as_ref()?,
        _ => return None,
    };
    number(&m.content)
}

/// The test's message number in a message's content.
fn number(content: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(content).ok()?;
    text.split(' ').next()?.parse().ok()
}

impl Run {
    fn new(seed: u64, small_retention: bool, shape: Shape) -> Run {
        Run::with_store(seed, small_retention, shape, None)
    }

    /// A run whose server is durable when `store` is given: it keeps its
    /// state there (a map: [`MemoryStore`]; or Redis).
    fn with_store(
        seed: u64,
        small_retention: bool,
        shape: Shape,
        store: Option<Box<dyn SimStore>>,
    ) -> Run {
        let durable = store.is_some();
        let mut server = ServerConfig::demo();
        server.rate_limit_sends = 10_000;
        server.max_queued_bytes = 16 * 1024;
        if small_retention {
            server.channel_retention_messages = SMALL_RETENTION;
            server.inbox_max_messages = SMALL_RETENTION;
        }
        let mut config = SimConfig::new(seed, server);
        let (none, some) = (
            (Duration::ZERO, Duration::ZERO),
            (Duration::ZERO, Duration::from_millis(3)),
        );
        (config.gateways, config.hub_shards, config.hub_latency) = match shape {
            Shape::OneGateway => (1, 1, none),
            Shape::TwoGateways => (2, 1, none),
            // As threads would: every message between a gateway and the
            // hub takes its time, so replies, pushes and closes race.
            Shape::TwoGatewaysWithLatency => (2, 1, some),
            // The uids and the channel spread over hub shards: joins,
            // broadcasts, P2P sends and resumes cross shards.
            Shape::TwoByThreeShards => (2, 3, none),
            // ... and every message between machines, shards included,
            // takes its time.
            Shape::TwoByThreeShardsWithLatency => (2, 3, some),
            // Three nodes (a gateway each) and the messages between them
            // taking their time, in front of a hub of one shard or three.
            Shape::ThreeNodes => (3, 1, some),
            Shape::ThreeNodesByThreeShards => (3, 3, some),
        };
        if config.gateways == 3 {
            config.server.presence_grace = NODE_GRACE;
        }
        let mut sim = match store {
            Some(store) => Sim::with_store(config, store),
            None => Sim::new(config),
        };
        let clients: Vec<_> = UIDS
            .iter()
            .map(|_| sim.add_client(SessionConfig::new(DEMO_APPID)))
            .collect();
        let channels = clients
            .iter()
            .map(|&c| {
                sim.command(c, |s, _| s.create_channel(Region::Cn, "room"))
                    .unwrap()
            })
            .collect();
        let mut run = Run {
            sim,
            clients,
            channels,
            sent: BTreeMap::new(),
            next_msg: 0,
            issued: vec![BTreeSet::new(); 4],
            events: vec![Vec::new(); 4],
            joined_at: vec![Vec::new(); 4],
            pending_join: vec![None; 4],
            step: 0,
            durable,
            small_retention,
            killed: Vec::new(),
            restarts: Vec::new(),
        };
        run.sim.record_server_frames(true);
        run.sim.record_client_frames(true);
        for (i, &uid) in UIDS.iter().enumerate() {
            let c = run.clients[i];
            let id = run
                .sim
                .command(c, |s, now| s.login(now, Uid(uid), None, None))
                .unwrap();
            run.issued[i].insert(id);
        }
        run.settle(Duration::from_secs(1));
        run
    }

    fn collect(&mut self) {
        for i in 0..4 {
            for e in self.sim.take_events(self.clients[i]) {
                if let Event::Completed { request, result } = &e {
                    if self.pending_join[i] == Some(*request) {
                        self.pending_join[i] = None;
                        if result.is_ok() {
                            self.joined_at[i].push((self.step, None));
                        }
                    }
                }
                self.events[i].push((self.step, e));
            }
        }
    }

    fn settle(&mut self, d: Duration) {
        let mut left = d;
        while !left.is_zero() {
            let slice = left.min(Duration::from_millis(500));
            self.sim.run_for(slice);
            left -= slice;
            self.collect();
        }
    }

    fn apply(&mut self, op: &Op) {
        self.step += 1;
        match *op {
            Op::P2p {
                from,
                to,
                reliable,
                big,
                cut,
            } => self.send(from, Some(to), reliable, big, cut),
            Op::Broadcast {
                from,
                reliable,
                big,
                cut,
            } => self.send(from, None, reliable, big, cut),
            Op::Burst {
                from,
                to,
                n,
                every_ms,
                big,
            } => {
                for _ in 0..n {
                    self.send(from, to, true, big, None);
                    self.settle(Duration::from_millis(every_ms));
                }
            }
            Op::Join(i) => {
                let ch = self.channels[i];
                if let Ok(id) = self.sim.command(self.clients[i], |s, now| {
                    s.join_channel(now, ch, Attributes::new())
                }) {
                    self.issued[i].insert(id);
                    self.pending_join[i] = Some(id);
                }
            }
            Op::Leave(i) => {
                let ch = self.channels[i];
                if let Ok(id) = self.sim.command(self.clients[i], |s, now| {
                    s.leave_channel(now, ch, Attributes::new())
                }) {
                    self.issued[i].insert(id);
                    if let Some(w) = self.joined_at[i].last_mut() {
                        w.1.get_or_insert((self.step, id));
                    }
                }
            }
            Op::Wait(ms) => self.settle(Duration::from_millis(ms)),
            Op::DropLink(i) => self.sim.drop_link(self.clients[i]),
            Op::Partition(i, s) => self.sim.partition(self.clients[i], Duration::from_secs(s)),
            Op::Slow(i, s) => {
                self.sim.set_slow(self.clients[i], true);
                self.settle(Duration::from_secs(s));
                self.sim.set_slow(self.clients[i], false);
            }
            Op::RestartServer => {
                stat(19, u64::from(self.durable));
                self.restarts.push(self.sim.now());
                self.sim.restart_server();
            }
            Op::KillNode {
                gateway,
                detect_ms,
                away_ms,
                lead_ms,
            } => {
                if let Some(ms) = lead_ms {
                    for from in 0..4 {
                        let to = UIDS[(from + 1) % 4];
                        self.send(from, Some(to), true, false, None);
                        self.send(from, None, true, false, None);
                    }
                    self.settle(Duration::from_millis(ms));
                }
                stat(12, 1);
                let detect = Duration::from_millis(detect_ms);
                let broken = self.sim.kill_node(GatewayId(gateway), detect);
                for c in broken {
                    self.killed.push(Killed {
                        client: c.0,
                        link: self.sim.link(c),
                        at: self.sim.now(),
                        detect,
                        incarnation: self.sim.server_incarnation(),
                    });
                    if let Some(ms) = away_ms {
                        self.sim.partition(c, Duration::from_millis(ms));
                    }
                }
            }
        }
        self.settle(Duration::from_millis(50));
    }

    /// A send of message number `n` (its content starts with the number);
    /// a big one (6 KB) makes replays pass the server's byte budget (half
    /// its 16 KiB queue bound), so that they are cut short and fetched.
    fn send(
        &mut self,
        from: usize,
        to_uid: Option<u64>,
        reliable: bool,
        big: bool,
        cut: Option<u64>,
    ) {
        self.next_msg += 1;
        let n = self.next_msg;
        let content = match big {
            true => format!("{n} {}", "x".repeat(6000)),
            false => n.to_string(),
        };
        let msg = Message::new("m", content);
        let options = {
            let mut cfg = SendOptions::default();
            cfg.reliable = reliable;
            cfg
        };
        let ch = self.channels[from];
        let r = self.sim.command(self.clients[from], |s, now| match to_uid {
            Some(uid) => s.send_message_to_user(now, Uid(uid), msg, options),
            None => s.send_message_to_channel(now, ch, msg, options),
        });
        if let Ok(request) = r {
            self.issued[from].insert(request);
            self.sent.insert(
                n,
                Sent {
                    from,
                    to_uid,
                    reliable,
                    request,
                    step: self.step,
                },
            );
        }
        if let Some(ms) = cut {
            self.settle(Duration::from_millis(ms));
            self.sim.drop_link(self.clients[from]);
        }
    }

    fn completion(
        &self,
        i: usize,
        id: RequestId,
    ) -> Vec<&Result<Reply, hummer_channel::ServiceError>> {
        self.events[i]
            .iter()
            .filter_map(|(_, e)| match e {
                Event::Completed { request, result } if *request == id => Some(result),
                _ => None,
            })
            .collect()
    }

    /// The step at which the completion of `id` came back to client `i`.
    fn completed_at(&self, i: usize, id: RequestId) -> Option<usize> {
        self.events[i].iter().find_map(|(step, e)| match e {
            Event::Completed { request, .. } if *request == id => Some(*step),
            _ => None,
        })
    }

    /// Message numbers delivered to client `i`: (number, from_uid, channel or not, step).
    fn delivered(&self, i: usize) -> Vec<(u64, bool)> {
        self.events[i]
            .iter()
            .filter_map(|(_, e)| match e {
                Event::MessageFromUser { message, .. } => Some((message, false)),
                Event::ChannelMessage { message, .. } => Some((message, true)),
                _ => None,
            })
            .filter_map(|(m, ch)| number(&m.content).map(|n| (n, ch)))
            .collect()
    }

    fn saw_link_loss(&self, i: usize) -> bool {
        self.events[i].iter().any(|(_, e)| {
            matches!(
                e,
                Event::ConnectionStateChanged {
                    state: ConnectionState::Reconnecting,
                    ..
                }
            )
        })
    }

    /// The stream a `MessagesLost` of client `i` names.
    fn stream_of(&self, i: usize, stream: LostStream) -> Stream {
        match stream {
            LostStream::User => Stream::User,
            LostStream::Channel(h) => {
                let key = self.sim.session(self.clients[i]).channel_key(h);
                key.map_or(Stream::Channel(0, String::new()), |k| {
                    Stream::Channel(k.region.to_wire(), k.channel_id.clone())
                })
            }
        }
    }

    /// (a) Every `MessagesLost` a client reports comes from a gap frame the
    /// server sent it (and that arrived), in order, one event per gap (a
    /// `FetchReply` may carry two: its gap, and the hole it left unfilled);
    /// a range is never reported lost when the link had carried part of
    /// it; an epoch change is reported once, a retention gap once.
    fn match_losses(&self, wire: &Wire) -> Result<Vec<Vec<MatchedLoss>>, TestCaseError> {
        let mut all = Vec::new();
        for i in 0..4 {
            let frames: Vec<&TappedFrame> = wire.to_client(i).filter(|f| f.delivered()).collect();
            // For each fetch: the epoch it counted in (the stream's in the
            // last reply that set it) and the seqs its link had carried.
            let mut epochs: HashMap<Stream, u64> = HashMap::new();
            let mut numbers: HashMap<Stream, u32> = HashMap::new();
            let mut pushed: HashMap<(u64, u32), BTreeSet<u64>> = HashMap::new();
            let mut fetches: HashMap<u64, (u64, BTreeSet<u64>)> = HashMap::new();
            for f in &frames {
                match (f.body(), wire.request(i, f)) {
                    (Some(Body::LoginReply(r)), _) => {
                        epochs.insert(Stream::User, r.p2p_epoch);
                        numbers.insert(Stream::User, 0);
                        for c in &r.channels {
                            let state = c.state.unwrap_or_default();
                            epochs.insert(stream_of_key(c.channel.as_ref()), state.epoch);
                            numbers.insert(stream_of_key(c.channel.as_ref()), state.channel);
                        }
                    }
                    (Some(Body::JoinReply(r)), Some(Body::Join(req))) => {
                        epochs.insert(stream_of_key(req.channel.as_ref()), r.epoch);
                        numbers.insert(stream_of_key(req.channel.as_ref()), r.channel);
                    }
                    (Some(Body::FetchReply(_)), Some(Body::Fetch(req))) => {
                        let stream = stream_of_key(req.channel.as_ref());
                        let e = epochs.get(&stream).copied().unwrap_or(0);
                        let num = numbers.get(&stream).copied().unwrap_or(u32::MAX);
                        let seqs = pushed.get(&(f.link, num)).cloned().unwrap_or_default();
                        fetches.insert(f.index, (e, seqs));
                    }
                    (Some(body), _) => {
                        if let Some((num, seq)) = sequenced(body) {
                            pushed.entry((f.link, num)).or_default().insert(seq);
                        }
                    }
                    _ => {}
                }
            }
            let mut used: HashMap<(u64, Stream), usize> = HashMap::new();
            let mut next: HashMap<Stream, usize> = HashMap::new();
            let mut matched = Vec::new();
            for (step, e) in &self.events[i] {
                let Event::MessagesLost {
                    stream,
                    from_seq,
                    to_seq,
                } = e
                else {
                    continue;
                };
                let stream = self.stream_of(i, *stream);
                let start = next.get(&stream).copied().unwrap_or(0);
                let found = frames[start..].iter().enumerate().find_map(|(k, f)| {
                    let cap = match f.body() {
                        Some(Body::FetchReply(_)) => 2,
                        _ => 1,
                    };
                    let n = used.get(&(f.index, stream.clone())).copied().unwrap_or(0);
                    if n >= cap {
                        return None;
                    }
                    let mut gap = wire.gap(i, f, &stream, *from_seq, *to_seq)?;
                    if let (Gap::Range { epoch, .. }, Some((e, _))) =
                        (&mut gap, fetches.get(&f.index))
                    {
                        *epoch = *e;
                    }
                    Some((start + k, *f, gap))
                });
                let Some((k, f, gap)) = found else {
                    return Err(TestCaseError::fail(format!(
                        "client {i} reported {e:?} (step {step}) with no gap frame from the server to match it"
                    )));
                };
                // What a fetch reports lost it had not received: a message
                // its link carried is delivered, not dropped as lost.
                if let (Gap::Range { from, to, .. }, Some((_, seqs))) =
                    (&gap, fetches.get(&f.index))
                {
                    let had = seqs.range(*from..=*to).collect::<Vec<_>>();
                    prop_assert!(
                        had.is_empty(),
                        "client {} reported {:?} (step {}) after {:?}, but had received seqs {:?} of it on that link",
                        i,
                        e,
                        step,
                        f.body(),
                        had
                    );
                }
                *used.entry((f.index, stream.clone())).or_default() += 1;
                next.insert(stream.clone(), k);
                matched.push(MatchedLoss {
                    stream,
                    frame: f.index,
                    incarnation: wire.incarnation(f),
                    gap,
                });
            }
            stat(3, matched.len() as u64);
            // One report per epoch change, of an epoch the server really
            // replaced (P2P epochs only change with a restart here).
            let mut changes = HashSet::new();
            for m in &matched {
                let Gap::Epoch {
                    prev_epoch,
                    new_epoch,
                    ..
                } = m.gap
                else {
                    continue;
                };
                prop_assert!(
                    prev_epoch != 0 && prev_epoch != new_epoch,
                    "client {} was told of an epoch change from {} to {}: {:?}",
                    i,
                    prev_epoch,
                    new_epoch,
                    m
                );
                prop_assert!(
                    changes.insert((m.stream.clone(), new_epoch)),
                    "client {} reported the change to epoch {} of {:?} twice",
                    i,
                    new_epoch,
                    m.stream
                );
                let before = wire.epoch_incarnation.get(&prev_epoch).copied();
                if m.stream == Stream::User {
                    prop_assert!(
                        before.is_some_and(|k| k < m.incarnation),
                        "client {} lost its P2P stream without a restart: {:?}",
                        i,
                        m
                    );
                }
            }
            // A retention gap is reported once: the ranges lost of one
            // stream's epoch do not overlap.
            let mut ranges: BTreeMap<(Stream, u64), Vec<(u64, u64)>> = BTreeMap::new();
            for m in &matched {
                if let Gap::Range { epoch, from, to } = m.gap {
                    ranges
                        .entry((m.stream.clone(), epoch))
                        .or_default()
                        .push((from, to));
                }
            }
            for ((stream, epoch), mut r) in ranges {
                r.sort_unstable();
                for w in r.windows(2) {
                    prop_assert!(
                        w[0].1 < w[1].0,
                        "client {} reported {:?} of {:?} epoch {} lost twice",
                        i,
                        w,
                        stream,
                        epoch
                    );
                }
                stat(11, r.len() as u64);
            }
            all.push(matched);
        }
        Ok(all)
    }

    /// (d) After each restart, a client that logs in again (resuming from an
    /// older epoch) is told of the loss of each stream it held exactly once,
    /// from the cursor it resumed with: a cursor of 0 (it had seen nothing)
    /// included, whether or not the stream had messages.
    fn check_restarts(
        &self,
        wire: &Wire,
        losses: &[Vec<MatchedLoss>],
        accepted: &BTreeMap<u64, (u64, u64)>,
    ) -> Result<(), TestCaseError> {
        let older = |epoch: u64, r: u64| {
            epoch != 0 && wire.epoch_incarnation.get(&epoch).is_none_or(|&k| k < r)
        };
        for r in 1..=self.sim.server_incarnation() {
            for i in 0..4 {
                let in_r = || {
                    wire.to_client(i)
                        .filter(move |f| f.delivered() && f.server_incarnation == r)
                };
                // Messages of the stream accepted by the incarnation the
                // client's cursor belonged to (it saw none of them when its
                // cursor is 0).
                let undelivered = |epoch: u64, p2p: bool| {
                    let k = wire.epoch_incarnation.get(&epoch).copied();
                    self.sent.iter().any(|(n, sent)| {
                        sent.reliable
                            && (sent.to_uid == Some(UIDS[i])) == p2p
                            && (p2p || sent.to_uid.is_none())
                            && accepted.get(n).map(|a| a.0) == k
                    })
                };
                // P2P: the first login the new server answered.
                let first = in_r().find_map(|f| match (f.body(), wire.request(i, f)) {
                    (Some(Body::LoginReply(rep)), Some(Body::Login(req))) => {
                        Some((f, rep, req.resume.as_ref()?))
                    }
                    _ => None,
                });
                if let Some((f, rep, resume)) = first.filter(|x| older(x.2.p2p_epoch, r)) {
                    stat(0, 1);
                    if resume.p2p_seq == 0 && undelivered(resume.p2p_epoch, true) {
                        stat(2, 1);
                    }
                    let want = wire::SeqGap {
                        from: resume.p2p_seq + 1,
                        to: 0,
                    };
                    prop_assert_eq!(
                        rep.p2p_gap.as_ref(),
                        Some(&want),
                        "client {} resumed from P2P seq {} after restart {}",
                        i,
                        resume.p2p_seq,
                        r
                    );
                    let reported = losses[i]
                        .iter()
                        .filter(|m| {
                            m.stream == Stream::User
                                && m.incarnation == r
                                && matches!(m.gap, Gap::Epoch { .. })
                        })
                        .collect::<Vec<_>>();
                    prop_assert!(
                        reported.len() == 1 && reported[0].frame == f.index,
                        "client {} after restart {}: P2P losses {:?}",
                        i,
                        r,
                        reported
                    );
                }
                // The channel: the first re-join (or resumed login keeping
                // it) from a cursor of an older epoch.
                let stream = self.stream_of(i, LostStream::Channel(self.channels[i]));
                let first = in_r().find_map(|f| {
                    let (state, cursor) = match (f.body()?, wire.request(i, f)?) {
                        (Body::JoinReply(rep), Body::Join(req))
                            if req.rejoin && stream_of_key(req.channel.as_ref()) == stream =>
                        {
                            (rep, (req.epoch, req.resume_seq))
                        }
                        (Body::LoginReply(rep), Body::Login(req)) => {
                            let kept = rep
                                .channels
                                .iter()
                                .find(|c| stream_of_key(c.channel.as_ref()) == stream)?;
                            let c = req
                                .resume
                                .as_ref()?
                                .channels
                                .iter()
                                .find(|c| stream_of_key(c.channel.as_ref()) == stream)?;
                            (kept.state.as_ref()?, (c.epoch, c.seq))
                        }
                        _ => return None,
                    };
                    older(cursor.0, r).then_some((f, state, cursor))
                });
                if let Some((f, state, (epoch, seq))) = first {
                    stat(1, 1);
                    if seq == 0 && undelivered(epoch, false) {
                        stat(2, 1);
                    }
                    let want = wire::SeqGap {
                        from: seq + 1,
                        to: 0,
                    };
                    prop_assert_eq!(
                        state.gap.as_ref(),
                        Some(&want),
                        "client {} re-joined from channel seq {} after restart {}",
                        i,
                        seq,
                        r
                    );
                    let reported = losses[i]
                        .iter()
                        .filter(|m| {
                            m.stream == stream
                                && matches!(m.gap, Gap::Epoch { new_epoch, .. } if new_epoch == state.epoch)
                        })
                        .collect::<Vec<_>>();
                    prop_assert!(
                        reported.len() == 1 && reported[0].frame == f.index,
                        "client {} after restart {}: channel losses {:?}",
                        i,
                        r,
                        reported
                    );
                }
            }
        }
        Ok(())
    }

    /// (d') A durable server's restart loses nothing it showed: the first
    /// login of each client on a restarted server that resumes goes on in
    /// the P2P epoch it resumed from, with no gap (but a retention range),
    /// and each channel it kept goes on in its cursor's epoch. (That no
    /// loss is reported anywhere else is checked with the other losses:
    /// for a durable server, every frame belongs to one incarnation.)
    fn check_durable_restarts(&self, wire: &Wire) -> Result<(), TestCaseError> {
        for r in 1..=self.sim.server_incarnation() {
            for i in 0..4 {
                let first = wire
                    .to_client(i)
                    .filter(|f| f.delivered() && f.server_incarnation == r)
                    .find_map(|f| match (f.body(), wire.request(i, f)) {
                        (Some(Body::LoginReply(rep)), Some(Body::Login(req))) => {
                            Some((rep, req.resume.as_ref().filter(|x| x.p2p_epoch != 0)?))
                        }
                        _ => None,
                    });
                let Some((rep, resume)) = first else {
                    continue;
                };
                stat(20, 1);
                stat(21, u64::from(rep.resumed));
                prop_assert_eq!(
                    rep.p2p_epoch,
                    resume.p2p_epoch,
                    "client {} lost its P2P stream to durable restart {}",
                    i,
                    r
                );
                prop_assert!(
                    rep.p2p_gap.is_none()
                        || (self.small_retention
                            && rep.p2p_gap.as_ref().is_some_and(|g| g.to != 0)),
                    "client {} was told of a P2P gap {:?} after durable restart {}",
                    i,
                    rep.p2p_gap,
                    r
                );
                for kept in &rep.channels {
                    let asked = resume
                        .channels
                        .iter()
                        .find(|c| c.channel == kept.channel)
                        .map(|c| c.epoch);
                    let epoch = kept.state.as_ref().map_or(0, |s| s.epoch);
                    prop_assert_eq!(
                        Some(epoch),
                        asked,
                        "client {} kept {:?} in another epoch after durable restart {}",
                        i,
                        kept.channel,
                        r
                    );
                }
            }
        }
        Ok(())
    }

    /// (b) On one link the server sends each sequenced message once, except
    /// the pushes a `Fetch` on that link asked for again (the run of pushes
    /// right before its `FetchReply`, within `after_seq..=through_seq`).
    /// Also: a resume or rejoin in the same epoch never goes back before
    /// the client's cursor, the other pushes of a stream come in rising
    /// order after the `seq` of the reply that started it on the link (so
    /// nothing the client had is sent again on a new link), and the server
    /// pushes about a channel only between the reply that gave the link its
    /// number and a successful leave.
    fn check_links(&self, wire: &Wire) -> Result<(), TestCaseError> {
        let mut links: BTreeMap<(usize, u64), Vec<&TappedFrame>> = BTreeMap::new();
        for f in wire.frames {
            if f.direction == Direction::ToClient {
                links.entry((f.client.0, f.link)).or_default().push(f);
            }
        }
        for ((i, link), frames) in links {
            let mut fetched = vec![false; frames.len()];
            let mut numbers: HashMap<Stream, u32> = HashMap::new();
            let mut live: HashSet<u32> = HashSet::new();
            let mut seen: HashSet<(u32, u64)> = HashSet::new();
            for (j, f) in frames.iter().enumerate() {
                let Some(body) = f.body() else {
                    return Err(TestCaseError::fail(format!(
                        "client {i} link {link}: undecodable frame {f:?}"
                    )));
                };
                match (body, wire.request(i, f)) {
                    (Body::JoinReply(r), Some(Body::Join(req))) => {
                        stat(8, u64::from(r.replay_truncated_at != 0));
                        // A rejoin in the same epoch goes on from its cursor
                        // (it replays only what is missing).
                        prop_assert!(
                            !req.rejoin || req.epoch != r.epoch || r.seq >= req.resume_seq,
                            "client {} link {}: a rejoin went back before its cursor: {:?} -> {:?}",
                            i,
                            link,
                            req,
                            r
                        );
                        numbers.insert(stream_of_key(req.channel.as_ref()), r.channel);
                        live.insert(r.channel);
                    }
                    (Body::LoginReply(r), _) => {
                        let cut = r.channels.iter().filter_map(|c| c.state.as_ref());
                        let cut = cut.filter(|s| s.replay_truncated_at != 0).count();
                        stat(8, cut as u64 + u64::from(r.p2p_replay_truncated_at != 0));
                        if let Some(Body::Login(req)) = wire.request(i, f) {
                            let resume = req.resume.as_ref();
                            if let Some(x) = resume.filter(|x| x.p2p_epoch == r.p2p_epoch) {
                                prop_assert!(
                                    r.p2p_seq >= x.p2p_seq,
                                    "client {} link {}: a resume went back before its cursor: {:?} -> {:?}",
                                    i,
                                    link,
                                    x,
                                    r
                                );
                            }
                            for c in &r.channels {
                                let state = c.state.unwrap_or_default();
                                let key = stream_of_key(c.channel.as_ref());
                                let cursor =
                                    resume.into_iter().flat_map(|x| &x.channels).find(|x| {
                                        stream_of_key(x.channel.as_ref()) == key
                                            && x.epoch == state.epoch
                                    });
                                prop_assert!(
                                    cursor.is_none_or(|x| state.seq >= x.seq),
                                    "client {} link {}: a resume went back before its cursor: {:?} -> {:?}",
                                    i,
                                    link,
                                    cursor,
                                    r
                                );
                            }
                        }
                        for c in &r.channels {
                            let n = c.state.as_ref().map_or(0, |s| s.channel);
                            numbers.insert(stream_of_key(c.channel.as_ref()), n);
                            live.insert(n);
                        }
                    }
                    (Body::Ok(_), Some(Body::Leave(req))) => {
                        if let Some(n) = numbers.get(&stream_of_key(req.channel.as_ref())) {
                            live.remove(n);
                        }
                    }
                    (Body::FetchReply(r), Some(Body::Fetch(req))) => {
                        stat(7, 1);
                        let num = match req.channel.as_ref() {
                            None => Some(0),
                            Some(k) => numbers.get(&stream_of_key(Some(k))).copied(),
                        };
                        // The replayed pushes come right before the reply,
                        // in order, ending at `through_seq`.
                        let mut want = r.through_seq;
                        for k in (0..j).rev() {
                            if want <= req.after_seq
                                || frames[k].body().and_then(sequenced) != num.map(|n| (n, want))
                            {
                                break;
                            }
                            fetched[k] = true;
                            want -= 1;
                        }
                    }
                    _ => {}
                }
                if let Some(n) = channel_push(body) {
                    prop_assert!(
                        live.contains(&n),
                        "client {} link {}: a push for channel {} it is not a member of on this link: {:?}",
                        i,
                        link,
                        n,
                        body
                    );
                }
            }
            // Per stream (channel number, 0 for P2P): the reply's `seq` the
            // link's pushes follow, then the last push.
            let mut follows: HashMap<u32, u64> = HashMap::new();
            for (j, f) in frames.iter().enumerate() {
                match (f.body(), wire.request(i, f)) {
                    (Some(Body::JoinReply(r)), Some(Body::Join(_))) => {
                        follows.insert(r.channel, r.seq);
                    }
                    (Some(Body::LoginReply(r)), _) => {
                        follows.insert(0, r.p2p_seq);
                        for c in r.channels.iter().filter_map(|c| c.state.as_ref()) {
                            follows.insert(c.channel, c.seq);
                        }
                    }
                    _ => {}
                }
                let Some(key) = f.body().and_then(sequenced) else {
                    continue;
                };
                if !fetched[j] {
                    // In order, after what the reply said it follows.
                    let after = follows.insert(key.0, key.1);
                    prop_assert!(
                        after.is_none_or(|a| key.1 > a),
                        "client {} link {}: stream {} push {} after {:?}",
                        i,
                        link,
                        key.0,
                        key.1,
                        after
                    );
                }
                if !seen.insert(key) {
                    prop_assert!(
                        fetched[j],
                        "client {} link {}: {:?} sent twice without a fetch",
                        i,
                        link,
                        f.body()
                    );
                    stat(4, 1);
                }
            }
        }
        Ok(())
    }

    /// The Session re-sends, on the link of a resumed login, every reliable
    /// send still waiting for its reply (its frame, request id and message
    /// id unchanged): one sent before the login, not answered on an earlier
    /// link, not failed by a login that did not resume, and within its
    /// timeout.
    fn check_resends(&self, wire: &Wire) -> Result<(), TestCaseError> {
        let timeout = SessionConfig::new(DEMO_APPID).timing.message_timeout;
        for i in 0..4 {
            // Request id -> (first sent, the request frame).
            let mut sends: BTreeMap<u64, (std::time::Instant, &wire::DecodedFrame)> =
                BTreeMap::new();
            let mut answered: HashMap<u64, std::time::Instant> = HashMap::new();
            let mut logins = Vec::new();
            for f in wire.frames.iter().filter(|f| f.client.0 == i) {
                let (Ok(frame), Some(body)) = (&f.frame, f.body()) else {
                    continue;
                };
                match (f.direction, body) {
                    (
                        Direction::ToServer,
                        Body::SendToUser(wire::SendToUserRequest {
                            unreliable: false, ..
                        }),
                    )
                    | (
                        Direction::ToServer,
                        Body::SendToChannel(wire::SendToChannelRequest {
                            unreliable: false, ..
                        }),
                    ) => {
                        sends.entry(f.request_id()).or_insert((f.sent_at, frame));
                    }
                    (Direction::ToClient, Body::SendReply(_) | Body::Error(_)) => {
                        if let Some(at) = f.delivered_at {
                            answered.entry(f.request_id()).or_insert(at);
                        }
                    }
                    (Direction::ToClient, Body::LoginReply(r)) => {
                        if let Some(at) = f.delivered_at {
                            logins.push((at, f.link, r.resumed));
                        }
                    }
                    _ => {}
                }
            }
            let mut failed = HashSet::new();
            for (at, link, resumed) in logins {
                for (&id, &(sent_at, frame)) in sends.range(..) {
                    let waiting = sent_at < at
                        && at < sent_at + timeout
                        && answered.get(&id).is_none_or(|&t| t > at)
                        && !failed.contains(&id);
                    if !waiting {
                        continue;
                    }
                    if !resumed {
                        failed.insert(id);
                        continue;
                    }
                    let again = wire.frames.iter().any(|f| {
                        f.client.0 == i
                            && f.link == link
                            && f.direction == Direction::ToServer
                            && f.frame.as_ref().ok() == Some(frame)
                    });
                    prop_assert!(
                        again,
                        "client {} did not re-send request {} after the resumed login on link {}",
                        i,
                        id,
                        link
                    );
                    stat(9, 1);
                    let reached = wire.frames.iter().filter(|f| {
                        f.client.0 == i
                            && f.direction == Direction::ToServer
                            && f.delivered()
                            && f.frame.as_ref().ok() == Some(frame)
                    });
                    if reached.count() > 1 {
                        stat(10, 1);
                    }
                }
            }
        }
        Ok(())
    }

    /// (e) A node's death keeps the instances of its links for the grace
    /// period from when the hub learned of it: a client whose instance was
    /// logged in on a link the death broke, and whose next login the
    /// server answered before then (`detect_ms` + `NODE_GRACE` after the
    /// death, the same server), resumes that instance. Also counts how the
    /// clients came back.
    fn check_kills(&self, wire: &Wire) -> Result<(), TestCaseError> {
        for k in &self.killed {
            stat(13, 1);
            let i = k.client;
            let login_reply = |f: &TappedFrame| match f.body() {
                Some(Body::LoginReply(r)) if f.delivered() => Some(r.clone()),
                _ => None,
            };
            // The next login the server answered, whether or not the
            // answer reached the client: a resume the server took on a
            // link then lost (a partition) restarts the instance's grace
            // period from that loss, and a later login is that loss's.
            let next = wire
                .to_client(i)
                .filter(|f| f.link >= k.link)
                .find_map(|f| match f.body() {
                    Some(Body::LoginReply(r)) => Some((f, r.clone())),
                    _ => None,
                });
            let Some((f, reply)) = next else { continue };
            // A durable server's restart keeps the instance.
            let same_server = self.durable || f.server_incarnation == k.incarnation;
            stat(
                match (reply.resumed, same_server) {
                    (true, _) => 14,
                    (false, true) => 15,
                    (false, false) => 16,
                },
                1,
            );
            // The instance logged in on the broken link, and the one the
            // next login asked to resume.
            let on_link = wire
                .to_client(i)
                .filter(|g| g.link + 1 == k.link)
                .find_map(|g| Some(login_reply(g)?.instance_id));
            let asked = match wire.request(i, f) {
                Some(Body::Login(req)) => req.resume.as_ref().map(|x| x.instance_id),
                _ => None,
            };
            // The grace period runs from the hub's detection, or from a
            // durable server's restart before it (the restored instance's
            // link is lost from then on).
            let restarted = self.restarts.iter().copied().filter(|&t| t >= k.at).min();
            let detected = (k.at + k.detect).min(restarted.unwrap_or(k.at + k.detect));
            if on_link.is_some() && on_link == asked && same_server {
                stat(17, u64::from(f.sent_at < detected + NODE_GRACE));
                prop_assert!(
                    reply.resumed || f.sent_at >= detected + NODE_GRACE,
                    "client {} lost its instance {:?} to a node's death within the grace period: {:?} (link {} broken at {:?}, detected after {:?}, answered {:?} later)",
                    i,
                    on_link,
                    reply,
                    k.link - 1,
                    k.at,
                    k.detect,
                    f.sent_at - k.at
                );
            }
        }
        Ok(())
    }

    /// Whether loss `m` of client `i` is the gap of a rejoin with "no such
    /// membership" (`docs/protocol.md`, "Join"): the client's instance was
    /// dropped after the grace period and meanwhile another instance of
    /// its uid left the channel. A leave ends the uid's departure record
    /// (the uid left, it did not depart), so the server does not replay
    /// what came after the rejoin's cursor: `gap{from: resume_seq + 1, to:
    /// head}`. Which of the drop and the leave comes first at the channel
    /// decides whether this gap or a replay answers.
    fn left_meanwhile(&self, wire: &Wire, i: usize, m: &MatchedLoss) -> bool {
        let Gap::Range { from, to, .. } = m.gap else {
            return false;
        };
        let Some(f) = wire.frames.iter().find(|f| f.index == m.frame) else {
            return false;
        };
        let (Some(Body::JoinReply(r)), Some(Body::Join(req))) = (f.body(), wire.request(i, f))
        else {
            return false;
        };
        if !(req.rejoin && r.member_offline && from == req.resume_seq + 1 && to == r.seq) {
            return false;
        }
        // When the client went away: the last frame an earlier link brought.
        let Some(away) = wire
            .to_client(i)
            .filter(|g| g.link < f.link && g.delivered())
            .map(|g| g.sent_at)
            .last()
        else {
            return false;
        };
        (0..4).filter(|&j| j != i && UIDS[j] == UIDS[i]).any(|j| {
            wire.to_client(j).any(|g| {
                let left = match (g.body(), wire.request(j, g)) {
                    (Some(Body::Ok(_)), Some(Body::Leave(l))) => {
                        stream_of_key(l.channel.as_ref()) == m.stream
                    }
                    _ => false,
                };
                left && away < g.sent_at && g.sent_at < f.sent_at
            })
        })
    }

    /// Where each send the server accepted was numbered: message number ->
    /// (server incarnation, seq) from the `SendReply` its sender got (0 for
    /// an unreliable one). Every push of one message carries one number.
    fn accepted(&self, wire: &Wire) -> Result<BTreeMap<u64, (u64, u64)>, TestCaseError> {
        let mut by_request: HashMap<(usize, u64), (u64, u64)> = HashMap::new();
        for f in wire.frames {
            if let (Direction::ToClient, true, Some(Body::SendReply(r))) =
                (f.direction, f.delivered(), f.body())
            {
                by_request.insert((f.client.0, f.request_id()), (wire.incarnation(f), r.seq));
            }
        }
        let mut accepted = BTreeMap::new();
        for (n, sent) in &self.sent {
            if let [Ok(_)] = self.completion(sent.from, sent.request).as_slice() {
                let a = by_request.get(&(sent.from, sent.request.0)).copied();
                let Some(a) = a else {
                    return Err(TestCaseError::fail(format!(
                        "message {n} completed Ok without a SendReply reaching client {}",
                        sent.from
                    )));
                };
                prop_assert_eq!(a.1 > 0, sent.reliable, "message {} seq {}", n, a.1);
                accepted.insert(*n, a);
            }
        }
        // One message, one number (a re-sent send is not taken twice).
        let mut numbered: HashMap<u64, (u64, u64, u32, u64)> = HashMap::new();
        for f in wire
            .frames
            .iter()
            .filter(|f| f.direction == Direction::ToClient)
        {
            let Some(body) = f.body() else { continue };
            let (Some(n), Some((ch, seq))) = (pushed_number(body), sequenced(body)) else {
                continue;
            };
            let uid = if ch == 0 { UIDS[f.client.0] } else { 0 };
            let key = (wire.incarnation(f), uid, ch, seq);
            let first = *numbered.entry(n).or_insert(key);
            prop_assert_eq!(first, key, "message {} was numbered twice", n);
            if let Some(&(inc, s)) = accepted.get(&n) {
                prop_assert_eq!((inc, s), (key.0, key.3), "message {} pushed as", n);
            }
        }
        Ok(accepted)
    }

    fn check(&mut self) -> Result<(), TestCaseError> {
        // 1. Every request completes exactly once.
        for i in 0..4 {
            let mut counts: HashMap<RequestId, usize> = HashMap::new();
            for (_, e) in &self.events[i] {
                if let Event::Completed { request, .. } = e {
                    *counts.entry(*request).or_default() += 1;
                }
            }
            for id in &self.issued[i] {
                prop_assert_eq!(
                    counts.get(id).copied(),
                    Some(1),
                    "client {} request {:?}",
                    i,
                    id
                );
            }
            prop_assert_eq!(
                counts.len(),
                self.issued[i].len(),
                "client {}: completions of unknown ids",
                i
            );
        }

        // The wire: (a) losses match gaps, (b) no sequenced push twice on a
        // link, (d) one loss per stream per restart; the numbers sends got.
        let frames = self.sim.frames();
        let wire = Wire::new(frames, self.durable);
        let losses = self.match_losses(&wire)?;

        // Losses are reported only where history was really lost: ranges
        // only when the server keeps little (nothing else here exceeds its
        // retention), or for a rejoin after the uid left meanwhile (see
        // `left_meanwhile`); epoch changes of the P2P stream with a restart (see
        // `match_losses`), of a channel with a restart, or when the server
        // forgot the channel (v2: a channel left with no member and no
        // retained message is forgotten at once, so a member back after the
        // grace period re-joins a new epoch and is told of a loss from its
        // cursor on, even when the channel never had a message).
        for (i, matched) in losses.iter().enumerate() {
            for m in matched {
                let Gap::Epoch { prev_epoch, .. } = m.gap else {
                    let left = self.left_meanwhile(&wire, i, m);
                    stat(18, u64::from(left));
                    prop_assert!(
                        self.small_retention || left,
                        "client {} was told of a range lost, with nothing past retention: {:?}",
                        i,
                        m
                    );
                    continue;
                };
                let restart = wire
                    .epoch_incarnation
                    .get(&prev_epoch)
                    .is_none_or(|&k| k < m.incarnation);
                prop_assert!(
                    restart || m.stream != Stream::User,
                    "client {} reported a loss without a restart: {:?}",
                    i,
                    m
                );
                if !restart {
                    stat(6, 1);
                }
            }
        }
        self.check_kills(&wire)?;
        self.check_links(&wire)?;
        self.check_resends(&wire)?;
        let accepted = self.accepted(&wire)?;
        if self.durable {
            self.check_durable_restarts(&wire)?;
        } else {
            self.check_restarts(&wire, &losses, &accepted)?;
        }

        // 2. Deliveries: never duplicated, never of a refused send, in order.
        for i in 0..4 {
            let delivered = self.delivered(i);
            let mut seen = BTreeSet::new();
            for (n, _) in &delivered {
                prop_assert!(seen.insert(*n), "client {} got message {} twice", i, n);
                let sent = &self.sent[n];
                let result = self.completion(sent.from, sent.request);
                let refused = matches!(result.as_slice(), [Err(e)]
                    if e.code != ErrorCode::OPERATION_TIMEOUT && e.code != ErrorCode::CONNECTION_EXCEPTION);
                prop_assert!(
                    !refused,
                    "client {} got message {} whose send was refused",
                    i,
                    n
                );
            }
            // Reliable messages per sender, in the order sent (unreliable
            // ones carry no sequence: after a reconnect a live one may
            // overtake reliable ones still being replayed).
            let mut last_from: HashMap<(usize, bool), u64> = HashMap::new();
            for (n, ch) in delivered.iter().filter(|(n, _)| self.sent[n].reliable) {
                let from = self.sent[n].from;
                if let Some(prev) = last_from.insert((from, *ch), *n) {
                    prop_assert!(
                        prev < *n,
                        "client {} got {} after {} from client {}",
                        i,
                        n,
                        prev,
                        from
                    );
                }
            }
        }

        // 3. A reliable send completed Ok is delivered exactly once to every
        // receiver owed it; only a reported loss that covers its number
        // excuses it: a range lost in the epoch it was numbered in, or an
        // epoch change (everything after the resumed cursor of the old epoch,
        // any epoch the client never saw, and what the new epoch had before
        // the point the client goes on from).
        let excused = |i: usize, stream: &Stream, (inc, seq): (u64, u64)| {
            losses[i].iter().any(|m| {
                m.stream == *stream
                    && match m.gap {
                        Gap::Range { from, to, .. } => {
                            inc == m.incarnation && (from..=to).contains(&seq)
                        }
                        Gap::Epoch {
                            prev_epoch,
                            from,
                            head,
                            ..
                        } => {
                            let prev = wire.epoch_incarnation.get(&prev_epoch).copied();
                            (inc < m.incarnation && (Some(inc) != prev || seq >= from))
                                || (inc == m.incarnation && seq <= head)
                        }
                    }
            })
        };
        let login_step = 0;
        for (n, sent) in &self.sent {
            let Some(&number) = accepted.get(n) else {
                continue;
            };
            if !sent.reliable {
                continue;
            }
            for (i, &receiver_uid) in UIDS.iter().enumerate() {
                let channel = self.stream_of(i, LostStream::Channel(self.channels[i]));
                let required = match sent.to_uid {
                    Some(uid) => {
                        receiver_uid == uid
                            && sent.step > login_step
                            && !excused(i, &Stream::User, number)
                    }
                    // A window counts where the client certainly stayed a
                    // member: it is still joined, or its leave succeeded (a
                    // leave that timed out may have dropped what was on its way).
                    None => {
                        !excused(i, &channel, number)
                            && self.joined_at[i].iter().any(|&(from, until)| {
                                from < sent.step
                                    && match until {
                                        None => self
                                            .sim
                                            .session(self.clients[i])
                                            .is_joined(self.channels[i]),
                                        // Accepted (its reply back) before the
                                        // leave was even issued.
                                        Some((u, leave)) => {
                                            self.completed_at(sent.from, sent.request)
                                                .is_some_and(|done| done < u)
                                                && matches!(
                                                    self.completion(i, leave).as_slice(),
                                                    [Ok(_)]
                                                )
                                        }
                                    }
                            })
                    }
                };
                if required {
                    stat(5, 1);
                    let got = self.delivered(i).iter().filter(|(m, _)| m == n).count();
                    prop_assert!(
                        got == 1,
                        "client {} got reliable message {} {} times ({:?}, numbered {:?}); losses {:?}",
                        i,
                        n,
                        got,
                        sent,
                        number,
                        losses[i]
                    );
                }
            }
        }

        // 4. Membership converges: lists and counts match who is joined.
        let members: BTreeSet<Uid> = (0..4)
            .filter(|&i| {
                self.sim
                    .session(self.clients[i])
                    .is_joined(self.channels[i])
            })
            .map(|i| Uid(UIDS[i]))
            .collect();
        for i in 0..4 {
            let session = self.sim.session(self.clients[i]);
            prop_assert_eq!(
                session.connection_state().0,
                ConnectionState::Connected,
                "client {} settled",
                i
            );
            prop_assert_eq!(session.pending_requests(), 0);
            prop_assert_eq!(session.held_messages(), 0);
            if !session.is_joined(self.channels[i]) {
                continue;
            }
            let ch = self.channels[i];
            let list = self.call(i, |s, now| s.get_channel_user_list(now, ch));
            let Some(Ok(Reply::UserList(list))) = list else {
                return Err(TestCaseError::fail(format!(
                    "user list of client {i}: {list:?}"
                )));
            };
            prop_assert_eq!(
                list.users.iter().copied().collect::<BTreeSet<_>>(),
                members.clone(),
                "client {} member list",
                i
            );
            let count = self.call(i, |s, now| {
                s.get_channel_user_count(now, ch, vec!["room".into()])
            });
            let Some(Ok(Reply::UserCount(count))) = count else {
                return Err(TestCaseError::fail(format!(
                    "count of client {i}: {count:?}"
                )));
            };
            prop_assert_eq!(
                count.user_count.get("room").copied(),
                Some(members.len() as u32)
            );
        }

        // 5. Join and leave notices alternate per uid, within each membership
        // of an observer whose own link never dropped (notices are not
        // replayed across a gap, nor sent to a non-member).
        for i in 0..4 {
            if self.saw_link_loss(i) {
                continue;
            }
            let starts: BTreeSet<usize> = self.joined_at[i].iter().map(|w| w.0).collect();
            let mut state: HashMap<Uid, bool> = HashMap::new();
            let mut membership = None;
            for (step, e) in &self.events[i] {
                let current = starts.range(..=*step).next_back();
                if current != membership {
                    membership = current;
                    state.clear();
                }
                let (uids, joined) = match e {
                    Event::NotifyJoinChannel { uids, .. } => (uids, true),
                    Event::NotifyLeaveChannel { uids, .. } => (uids, false),
                    _ => continue,
                };
                for u in uids {
                    if let Some(prev) = state.insert(*u, joined) {
                        prop_assert!(
                            prev != joined,
                            "client {} saw uid {} {} twice in a row",
                            i,
                            u,
                            if joined { "join" } else { "leave" }
                        );
                    }
                }
            }
        }

        // 6. Memory stays bounded on the server.
        prop_assert!(self.sim.server().connection_count() <= 4 + 1);
        Ok(())
    }

    fn call(
        &mut self,
        i: usize,
        cmd: impl FnOnce(
            &mut hummer_channel::client::Session,
            std::time::Instant,
        ) -> Result<RequestId, hummer_channel::CommandError>,
    ) -> Option<Result<Reply, hummer_channel::ServiceError>> {
        let id = self.sim.command(self.clients[i], cmd).ok()?;
        for _ in 0..100 {
            if let Some(r) = self.sim.take_completion(self.clients[i], id) {
                return Some(r);
            }
            self.sim.run_for(Duration::from_millis(50));
        }
        None
    }
}

/// How the server is wired: its gateways and hub shards, and the latency
/// between the machines.
#[derive(Copy, Clone, Debug)]
enum Shape {
    OneGateway,
    TwoGateways,
    TwoGatewaysWithLatency,
    TwoByThreeShards,
    TwoByThreeShardsWithLatency,
    ThreeNodes,
    ThreeNodesByThreeShards,
}

/// `HUMMER_CONFORMANCE_SHAPE` (a `Shape` name) pins the shape; `shapes`
/// by default.
fn pinned_or(shapes: BoxedStrategy<Shape>) -> BoxedStrategy<Shape> {
    let all = [
        Shape::OneGateway,
        Shape::TwoGateways,
        Shape::TwoGatewaysWithLatency,
        Shape::TwoByThreeShards,
        Shape::TwoByThreeShardsWithLatency,
        Shape::ThreeNodes,
        Shape::ThreeNodesByThreeShards,
    ];
    if let Ok(name) = std::env::var("HUMMER_CONFORMANCE_SHAPE") {
        let pinned = all.into_iter().find(|s| format!("{s:?}") == name);
        return Just(pinned.expect("HUMMER_CONFORMANCE_SHAPE names a Shape")).boxed();
    }
    shapes
}

/// The shapes of one process: one or two gateways.
fn shape() -> BoxedStrategy<Shape> {
    pinned_or(
        prop_oneof![
            Just(Shape::OneGateway),
            Just(Shape::TwoGateways),
            Just(Shape::TwoGatewaysWithLatency),
            Just(Shape::TwoByThreeShards),
            Just(Shape::TwoByThreeShardsWithLatency),
        ]
        .boxed(),
    )
}

/// The shapes of three nodes.
fn node_shape() -> BoxedStrategy<Shape> {
    pinned_or(
        prop_oneof![
            Just(Shape::ThreeNodes),
            Just(Shape::ThreeNodesByThreeShards)
        ]
        .boxed(),
    )
}

fn cases_of(var: &str, default: u32) -> u32 {
    std::env::var(var)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn cases() -> u32 {
    cases_of("HUMMER_CONFORMANCE_CASES", 24)
}

fn node_cases() -> u32 {
    cases_of("HUMMER_CONFORMANCE_NODE_CASES", 8)
}

fn durable_cases() -> u32 {
    cases_of("HUMMER_CONFORMANCE_DURABLE_CASES", 8)
}

/// The runs of a durable server: every shape, restarts more often, and on
/// three nodes, nodes dying too.
fn durable_case() -> impl Strategy<Value = (Shape, Vec<Op>)> {
    prop_oneof![shape(), node_shape()].prop_flat_map(|shape| {
        let ops = match shape {
            Shape::ThreeNodes | Shape::ThreeNodesByThreeShards => node_op().boxed(),
            _ => op().boxed(),
        };
        let ops = prop_oneof![8 => ops, 1 => Just(Op::RestartServer)];
        (Just(shape), prop::collection::vec(ops, 1..40))
    })
}

/// One case: the operations, then the faults stop, the system settles and
/// the promises are checked.
fn run_case(
    seed: u64,
    small_retention: bool,
    shape: Shape,
    ops: &[Op],
) -> Result<(), TestCaseError> {
    run_case_with(seed, small_retention, shape, ops, None)
}

/// A store that counts the send records a restart reads back from sends
/// objects (the path a re-send after an eviction and a restart needs).
#[derive(Debug)]
struct CountingSends(Box<dyn SimStore>);

impl SimStore for CountingSends {
    fn write(
        &mut self,
        shard: hummer_channel::server::ShardId,
        batch: &hummer_channel::server::StoreBatch,
    ) {
        self.0.write(shard, batch);
    }

    fn load(&mut self) -> Vec<hummer_channel::server::StoredObject> {
        let objects = self.0.load();
        let records = objects
            .iter()
            .filter(|o| matches!(o.key, hummer_channel::server::StoreKey::Sends { .. }))
            .map(|o| o.entries.len() as u64)
            .sum();
        stat(22, records);
        objects
    }
}

/// [`run_case`] with a durable server keeping its state in `store`.
fn run_case_with(
    seed: u64,
    small_retention: bool,
    shape: Shape,
    ops: &[Op],
    store: Option<Box<dyn SimStore>>,
) -> Result<(), TestCaseError> {
    let store = store.map(|s| Box::new(CountingSends(s)) as Box<dyn SimStore>);
    let mut run = Run::with_store(seed, small_retention, shape, store);
    for op in ops {
        run.apply(op);
    }
    // Faults stop: past the grace period, the longest partition and the backoff cap.
    run.settle(Duration::from_secs(150));
    // proptest prints the shrunk seed and operations of a failure.
    let result = run.check();
    if std::env::var_os("HUMMER_CONFORMANCE_STATS").is_some() {
        let counts: Vec<String> = STAT_NAMES
            .iter()
            .zip(&STATS)
            .map(|(name, n)| format!("{name}: {}", n.load(Ordering::Relaxed)))
            .collect();
        eprintln!("{}", counts.join("; "));
    }
    result
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), max_shrink_iters: 2000, ..ProptestConfig::default() })]

    #[test]
    fn the_service_keeps_its_promises_under_faults(
        seed in any::<u64>(),
        small_retention in prop::bool::weighted(0.3),
        shape in shape(),
        ops in prop::collection::vec(op(), 1..40),
    ) {
        run_case(seed, small_retention, shape, &ops)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: node_cases(), max_shrink_iters: 2000, ..ProptestConfig::default() })]

    #[test]
    fn the_service_keeps_its_promises_when_nodes_die(
        seed in any::<u64>(),
        small_retention in prop::bool::weighted(0.3),
        shape in node_shape(),
        ops in prop::collection::vec(node_op(), 1..40),
    ) {
        run_case(seed, small_retention, shape, &ops)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: durable_cases(), max_shrink_iters: 2000, ..ProptestConfig::default() })]

    #[test]
    fn a_durable_service_keeps_its_promises_across_restarts(
        seed in any::<u64>(),
        small_retention in prop::bool::weighted(0.3),
        (shape, ops) in durable_case(),
    ) {
        run_case_with(seed, small_retention, shape, &ops, Some(Box::new(MemoryStore::default())))?;
    }
}

/// The durable property with the store in a real Redis.
#[cfg(feature = "redis")]
mod in_redis {
    use super::*;
    use crate::redis_support::{raw_command, Persistence, RedisServer};
    use hummer_channel::adapters::server_tcp::store::{RedisStore, StoreConfig};
    use hummer_channel::server::{ShardId, StoreBatch, StoredObject};
    use proptest::test_runner::{Config, TestRunner};

    /// The durable runs with the state in a real Redis (`redis-server`, one
    /// for the test, a namespace per case), through the TCP runner's store:
    /// what the server writes is what a restarted one reads back. Every
    /// other case spreads the store over two Redis (each batch split by
    /// the objects' places, each load merged).
    /// `HUMMER_CONFORMANCE_REDIS_CASES` cases (default 8).
    #[test]
    fn a_service_with_its_state_in_redis_keeps_its_promises_across_restarts() {
        let redis = RedisServer::start(Persistence::None);
        let second = RedisServer::start(Persistence::None);
        let both = format!("{},{}", redis.url(), second.url());
        let cases = cases_of("HUMMER_CONFORMANCE_REDIS_CASES", 8);
        let mut runner = TestRunner::new(Config {
            cases,
            max_shrink_iters: 200,
            ..Config::default()
        });
        let namespaces = AtomicU64::new(0);
        let strategy = (any::<u64>(), prop::bool::weighted(0.3), durable_case());
        let result = runner.run(&strategy, |(seed, small_retention, (shape, ops))| {
            let n = namespaces.fetch_add(1, Ordering::Relaxed);
            let url = if n.is_multiple_of(2) {
                redis.url()
            } else {
                both.clone()
            };
            let store = RedisSimStore::connect(&url, &format!("conformance{n}"));
            run_case_with(seed, small_retention, shape, &ops, Some(Box::new(store)))
        });
        if let Err(e) = result {
            panic!("{e}");
        }
        // The runs went through Redis: batches written, and restarted servers
        // that read state back.
        let [batches, restored] = REDIS_COUNTS.each_ref().map(|n| n.load(Ordering::Relaxed));
        eprintln!(
            "{cases} cases: {batches} batches written to Redis, {restored} objects read back"
        );
        assert!(
            batches > 0 && restored > 0,
            "{batches} batches, {restored} objects"
        );
        let on_second = raw_command(second.port(), &["DBSIZE"]);
        assert!(
            !on_second.starts_with(":0"),
            "the second Redis holds nothing"
        );
    }

    /// Batches [`RedisSimStore`] wrote, and objects it read back at restarts.
    static REDIS_COUNTS: [AtomicU64; 2] = [const { AtomicU64::new(0) }; 2];

    /// The TCP runner's Redis store behind the simulator's store contract.
    #[derive(Debug)]
    struct RedisSimStore(RedisStore);

    impl RedisSimStore {
        fn connect(url: &str, namespace: &str) -> RedisSimStore {
            let config = StoreConfig::new(url).unwrap().with_namespace(namespace);
            RedisSimStore(smol::block_on(RedisStore::connect(&config)).unwrap())
        }
    }

    impl SimStore for RedisSimStore {
        fn write(&mut self, _shard: ShardId, batch: &StoreBatch) {
            smol::block_on(self.0.write(batch)).expect("Redis takes the batch");
            REDIS_COUNTS[0].fetch_add(1, Ordering::Relaxed);
        }

        fn load(&mut self) -> Vec<StoredObject> {
            let objects = smol::block_on(self.0.load()).expect("Redis gives the state back");
            assert_eq!(self.0.skipped(), 0, "objects Redis could not give back");
            REDIS_COUNTS[1].fetch_add(objects.len() as u64, Ordering::Relaxed);
            objects
        }
    }
}

/// Found by the nodes property (shrunk): instance A of uid 2 (client 1) is
/// dropped after the grace period (its node died while it was cut off),
/// and meanwhile instance B of uid 2 (client 2) joins and leaves the room.
/// The leave reaches the room's shard after A's drop: it ends uid 2's
/// departure record, so A's rejoin is answered with a gap for the
/// broadcast sent meanwhile, not a replay ("no such membership",
/// `docs/protocol.md`, "Join"), and every check still holds.
#[test]
fn a_rejoin_after_another_instance_of_the_uid_left_is_told_of_a_gap() {
    let ops = [
        Op::Join(1),
        Op::Partition(1, 5),
        Op::KillNode {
            gateway: 2,
            detect_ms: 0,
            away_ms: None,
            lead_ms: None,
        },
        Op::Wait(2786),
        Op::Join(2),
        Op::Join(3),
        Op::Leave(2),
        Op::Broadcast {
            from: 3,
            reliable: true,
            big: false,
            cut: None,
        },
    ];
    let mut run = Run::new(0, false, Shape::ThreeNodesByThreeShards);
    for op in &ops {
        run.apply(op);
    }
    run.settle(Duration::from_secs(150));
    let lost: Vec<&Event> = run.events[1]
        .iter()
        .map(|(_, e)| e)
        .filter(|e| matches!(e, Event::MessagesLost { .. }))
        .collect();
    assert!(
        matches!(
            lost.as_slice(),
            [Event::MessagesLost {
                from_seq: 1,
                to_seq: Some(1),
                ..
            }]
        ),
        "{lost:?}"
    );
    run.check().unwrap();
}

/// Found by a 2,000-case run of the durable property (shrunk): on three
/// nodes, client 0's reliable P2P message to uid 2 is stored, pushed (seq
/// 3) and acknowledged; client 0's link died with the node before the reply
/// reached it, so its Session sends the message again with the same id
/// once it is back (4 s later). Meanwhile the inbox's small retention
/// evicted seq 3, and a durable restart came between. The send's record
/// was stored only with its message and went with the eviction, so the
/// restarted server took the re-send as a new message (seq 10), a second
/// delivery. Now the record moves to the inbox's sends object in the batch
/// that trims the message (`src/server/recent_sends.rs`).
#[test]
fn a_re_send_after_a_restart_and_an_eviction_is_not_delivered_twice() {
    let p = |from, to| Op::P2p {
        from,
        to,
        reliable: false,
        big: false,
        cut: None,
    };
    let kill = |gateway, detect_ms, away_ms, lead_ms| Op::KillNode {
        gateway,
        detect_ms,
        away_ms,
        lead_ms,
    };
    let ops = [
        kill(2, 0, None, Some(23)),
        Op::RestartServer,
        kill(2, 1000, None, Some(6)),
        p(0, 1),
        p(0, 1),
        kill(1, 0, Some(4000), Some(5)),
        Op::RestartServer,
        Op::Join(0),
        p(0, 1),
        p(0, 1),
        Op::Burst {
            from: 2,
            to: Some(2),
            n: 5,
            every_ms: 5,
            big: false,
        },
        Op::Wait(635),
        Op::RestartServer,
    ];
    let store = Some(Box::new(MemoryStore::default()) as Box<dyn SimStore>);
    run_case_with(17125790272070869189, true, Shape::ThreeNodes, &ops, store).unwrap();
}
