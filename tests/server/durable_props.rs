//! Property: a durable server (`ServerConfig::durable`) that crashes and
//! starts again from its store (`Net::crash_restart`) at random points,
//! sometimes with the store paused for the last few operations before the
//! crash (those batches are lost) and sometimes with another number of hub
//! shards, never changes, loses or invents anything a client saw.
//!
//! Three uids (1, 2, 3) log in, join and leave two channels, send reliable
//! channel and P2P messages (also to uid 4, which only logs in at the very
//! end, and to each other while offline), write channel attributes, ack,
//! log out, lose their links and resume, while the clock moves (a little,
//! or past the grace period). Each client is modelled the way the Session
//! is: its instance id, its P2P epoch and cursor, and per channel its
//! number, epoch and cursor, all taken only from frames that reached it; a
//! request whose reply never came (the store paused, then the crash) fails
//! as with a lost link (a leave or logout counts as done, nothing is
//! re-sent). After a crash every client with an instance resumes at once
//! with what it holds and joins again (`rejoin`) what the resume did not
//! keep, except those told to stay away until their next `Connect` (their
//! restored instances may outlive the grace period meanwhile). Each case
//! ends with a crash, then every client (uid 4 too) logs in or resumes.
//!
//! What is checked, for every client, across the whole run:
//!
//! 1. A (stream, epoch, seq) never arrives with two contents, a message
//!    never arrives under two numbers, and every push is exactly the next
//!    number of its stream for that client (never a number seen already,
//!    never going backwards).
//! 2. Nothing is lost silently: a resume or rejoin in the same epoch goes
//!    on from the client's cursor (the reply's seq is the cursor, or a gap
//!    starts right after it), and once every reply is in, every connected
//!    client stands at the head of every stream it holds (what the model
//!    knows was acknowledged to senders). A new epoch is only ever told
//!    with an explicit loss (`gap{from: cursor + 1, to: 0}`).
//! 3. A message acknowledged to its sender is never missing after a
//!    restart: gaps (with a known end) only ever cover messages outside
//!    the count retention, epochs only change for streams that held no
//!    acknowledged message, and a sender's next number is always one past
//!    the last acknowledged one (no number is given twice).
//!    A fresh login starts right after the acked point the store kept.
//! 4. Whatever a client receives was acknowledged to its sender, with the
//!    same content: a send whose reply was held by the paused store is
//!    seen by nobody, before or after the crash.
//! 5. After a restart and every client's resume, each channel's members
//!    (`GetUserList`, and the server API) and attributes
//!    (`GetChannelAttributes`) are those the store had before the crash,
//!    changed only by what the resumes did (a client that left while the
//!    store was paused leaves for good; one dropped after the grace period
//!    joins again; an instance logged out while the store was paused comes
//!    back, unresumed, for its grace period), and each channel's epoch and
//!    head (server API) are the model's, before the crash and after.
//!
//! Runs stay under the channel retention age (5 min), so only the count
//! retention (`keep`, small in some cases) ever drops history.

use std::sync::atomic::AtomicU64;

use crate::props::config;
use crate::support::*;
use hummer_channel::server::{ApiCall, ApiReply, ApiRequest, ChannelInfo, RateLimit};
use hummer_channel::types::{ChannelKey, Region};
use proptest::prelude::*;
use proptest::test_runner::{TestCaseError, TestRunner};

/// The uids the operations pick from; uid 4 (`OFFLINE`) only receives
/// until it logs in at the end of each case.
const UIDS: [u64; 3] = [1, 2, 3];
const OFFLINE: u64 = 4;
const CHANNELS: [&str; 2] = ["c0", "c1"];
/// Runs stay below the channel retention age (300 s) with this margin.
const MAX_RUN: Duration = Duration::from_secs(240);
/// Past the grace period (30 s).
const LONG: Duration = Duration::from_secs(31);
/// The grace period (`presence_grace`).
const GRACE: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
enum Op {
    /// Log in, or resume when the client has an instance and no link.
    Connect(usize),
    Join(usize, usize),
    Leave(usize, usize),
    SendChannel(usize, usize),
    /// To uid 1..=4.
    SendP2p(usize, u64),
    WriteAttr(usize, usize, u8),
    Ack(usize),
    /// Acks, logs out and closes the link (the next `Connect` is a fresh
    /// login).
    Logout(usize),
    /// The link is lost (the client resumes with `Connect`).
    Lose(usize),
    /// Milliseconds (`LONG` for past the grace period).
    Advance(u64),
    /// The store is paused for the `pause` operations before this one, then
    /// the process dies, `after_ms` pass, and a process of `shards` (the
    /// same number when `None`) starts from the store (a downtime past the
    /// grace period too: restored instances get a grace period from the
    /// restart). Clients resume at
    /// once, but those in the bits of `away` (until their next `Connect`).
    Crash {
        pause: usize,
        after_ms: u64,
        shards: Option<u16>,
        away: u8,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let client = 0..UIDS.len();
    let ch = 0..CHANNELS.len();
    prop_oneof![
        3 => client.clone().prop_map(Op::Connect),
        3 => (client.clone(), ch.clone()).prop_map(|(c, h)| Op::Join(c, h)),
        1 => (client.clone(), ch.clone()).prop_map(|(c, h)| Op::Leave(c, h)),
        5 => (client.clone(), ch.clone()).prop_map(|(c, h)| Op::SendChannel(c, h)),
        3 => (client.clone(), 1..=OFFLINE).prop_map(|(c, to)| Op::SendP2p(c, to)),
        2 => (client.clone(), ch, any::<u8>()).prop_map(|(c, h, v)| Op::WriteAttr(c, h, v)),
        1 => client.clone().prop_map(Op::Ack),
        1 => client.clone().prop_map(Op::Logout),
        3 => client.prop_map(Op::Lose),
        2 => prop_oneof![4 => 0..3_000u64, 1 => Just(LONG.as_millis() as u64)].prop_map(Op::Advance),
        1 => (
            prop_oneof![1 => Just(0usize), 1 => 1..5usize],
            prop_oneof![4 => 0..3_000u64, 1 => Just(35_000u64)],
            prop_oneof![3 => Just(None), 1 => (1..=4u16).prop_map(Some)],
            prop_oneof![2 => Just(0u8), 1 => 0..8u8],
        )
            .prop_map(|(pause, after_ms, shards, away)| Op::Crash { pause, after_ms, shards, away }),
    ]
}

/// A stream, for what clients received.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Stream {
    Channel(usize),
    P2p(u64),
}

/// A channel a client holds as joined.
#[derive(Debug, Clone, Copy)]
struct Held {
    num: u32,
    epoch: u64,
    seq: u64,
}

/// A request whose reply has not come yet.
#[derive(Debug, Clone)]
enum Pending {
    Login {
        resume: bool,
    },
    /// `cursor`: a rejoin's (epoch, seq).
    Join {
        ch: usize,
        cursor: Option<(u64, u64)>,
    },
    Leave,
    Logout,
    SendChannel {
        ch: usize,
        epoch: u64,
        text: String,
    },
    SendP2p {
        to: u64,
        text: String,
    },
    Write,
}

/// A client as the Session keeps it.
#[derive(Debug)]
struct Client {
    uid: u64,
    conn: Option<ConnId>,
    /// Its LoginReply on `conn` came.
    ready: bool,
    /// 0: never logged in (or only with a login whose reply never came).
    instance: u64,
    p2p_epoch: u64,
    p2p_seq: u64,
    held: BTreeMap<usize, Held>,
    /// Channel numbers of this login.
    nums: BTreeMap<u32, usize>,
    /// The cursors its last resume listed.
    listed: BTreeMap<usize, (u64, u64)>,
    pending: BTreeMap<u64, Pending>,
    /// It logged out while the store was paused: the crash brings its
    /// instance back, and nobody resumes it.
    logged_out_unstored: bool,
    /// Such an instance: its channels, and when its grace period ends (on
    /// the model's clock).
    zombie: Option<(BTreeSet<usize>, Duration)>,
}

impl Client {
    fn new(uid: u64) -> Client {
        Client {
            uid,
            conn: None,
            ready: false,
            instance: 0,
            p2p_epoch: 0,
            p2p_seq: 0,
            held: BTreeMap::new(),
            nums: BTreeMap::new(),
            listed: BTreeMap::new(),
            pending: BTreeMap::new(),
            logged_out_unstored: false,
            zombie: None,
        }
    }

    /// The link is gone: requests in flight fail (a leave is done as far
    /// as the client is concerned; sends are not re-sent).
    fn lost(&mut self) {
        self.conn = None;
        self.ready = false;
        self.nums.clear();
        self.pending.clear();
    }

    fn usable(&self) -> Option<ConnId> {
        self.conn.filter(|_| self.ready)
    }
}

/// A channel as the server API showed it.
#[derive(Debug, Clone, PartialEq)]
struct Shown {
    members: Vec<u64>,
    attrs: BTreeMap<String, String>,
    updated_by: u64,
    updated_ms: u64,
}

/// Counts over all cases, for the summary.
#[derive(Default)]
struct Stats {
    cases: AtomicU64,
    ops: AtomicU64,
    crashes: AtomicU64,
    paused_crashes: AtomicU64,
    reshards: AtomicU64,
    lost_sends: AtomicU64,
    resumed_after_crash: AtomicU64,
    rejoins_after_crash: AtomicU64,
    replayed_after_crash: AtomicU64,
    retention_gaps: AtomicU64,
    epoch_changes: AtomicU64,
    offline_delivered: AtomicU64,
    slowest_case_us: AtomicU64,
}

static STATS: Stats = Stats {
    cases: AtomicU64::new(0),
    ops: AtomicU64::new(0),
    crashes: AtomicU64::new(0),
    paused_crashes: AtomicU64::new(0),
    reshards: AtomicU64::new(0),
    lost_sends: AtomicU64::new(0),
    resumed_after_crash: AtomicU64::new(0),
    rejoins_after_crash: AtomicU64::new(0),
    replayed_after_crash: AtomicU64::new(0),
    retention_gaps: AtomicU64::new(0),
    epoch_changes: AtomicU64::new(0),
    offline_delivered: AtomicU64::new(0),
    slowest_case_us: AtomicU64::new(0),
};

fn count(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

struct World {
    n: Net,
    shards: u16,
    keep: u64,
    clients: Vec<Client>,
    texts: u64,
    /// Per channel: the epoch clients last saw, heads (acknowledged) and
    /// contents per epoch.
    ch_epoch: [u64; 2],
    ch_head: BTreeMap<(usize, u64), u64>,
    ch_truth: BTreeMap<(usize, u64, u64), String>,
    /// Per uid: its inbox's epoch (once a client saw it), head and contents.
    p2p_epoch: BTreeMap<u64, u64>,
    p2p_head: BTreeMap<u64, u64>,
    p2p_truth: BTreeMap<(u64, u64), String>,
    /// Per uid: the highest ack sent while the store kept up.
    acked: BTreeMap<u64, u64>,
    /// Everything any client received, and what to check at the end of
    /// this step (a push to its own uid comes before the send's reply).
    seen: BTreeMap<(Stream, u64, u64), String>,
    numbered: BTreeMap<String, (Stream, u64, u64)>,
    to_check: Vec<(u64, Stream, u64, u64, String)>,
    /// Sends whose reply never came (the store was paused).
    unacked: BTreeSet<String>,
    /// The channels as the store had them when it was paused (or at the
    /// crash).
    snapshot: Option<[Option<Shown>; 2]>,
    snapshot_at: Duration,
    elapsed: Duration,
    /// After a crash, until every client resumed: counts replays.
    restarting: bool,
}

fn api_key(ch: usize) -> ChannelKey {
    ChannelKey::new(Region::Cn, CHANNELS[ch])
}

impl World {
    fn new(shards: u16, keep: usize) -> World {
        let mut cfg = ServerConfig::demo();
        cfg.idle_timeout = Duration::from_secs(86_400);
        cfg.login_timeout = Duration::from_secs(86_400);
        cfg.rate_limit_sends = 1_000_000;
        cfg.presence_grace = GRACE;
        let lots = RateLimit::new(1_000_000, Duration::from_secs(3));
        cfg.rate_limits.sends = lots;
        cfg.rate_limits.attribute_writes = lots;
        cfg.rate_limits.queries = lots;
        cfg.rate_limits.memberships = lots;
        cfg.channel_retention_messages = keep;
        cfg.inbox_max_messages = keep;
        World {
            n: Net::durable(cfg, shards),
            shards,
            keep: keep as u64,
            clients: UIDS
                .iter()
                .chain([&OFFLINE])
                .map(|&u| Client::new(u))
                .collect(),
            texts: 0,
            ch_epoch: [0; 2],
            ch_head: BTreeMap::new(),
            ch_truth: BTreeMap::new(),
            p2p_epoch: BTreeMap::new(),
            p2p_head: BTreeMap::new(),
            p2p_truth: BTreeMap::new(),
            acked: BTreeMap::new(),
            seen: BTreeMap::new(),
            numbered: BTreeMap::new(),
            to_check: Vec::new(),
            unacked: BTreeSet::new(),
            snapshot: None,
            snapshot_at: Duration::ZERO,
            elapsed: Duration::ZERO,
            restarting: false,
        }
    }

    fn paused(&self) -> bool {
        self.n.store_paused
    }

    fn text(&mut self) -> String {
        self.texts += 1;
        format!("m{}", self.texts)
    }

    fn request(&mut self, i: usize, body: Body, p: Pending) {
        let c = self.clients[i].conn.expect("a link");
        let rid = self.n.send(c, body);
        self.clients[i].pending.insert(rid, p);
    }

    fn head(&self, ch: usize, epoch: u64) -> u64 {
        self.ch_head.get(&(ch, epoch)).copied().unwrap_or(0)
    }

    fn p2p_head(&self, uid: u64) -> u64 {
        self.p2p_head.get(&uid).copied().unwrap_or(0)
    }

    // ------------------------------------------------------------ operations

    fn apply(&mut self, op: &Op) -> Result<(), TestCaseError> {
        match *op {
            Op::Connect(i) => self.connect(i),
            Op::Join(i, ch) => {
                let joining = self.clients[i]
                    .pending
                    .values()
                    .any(|p| matches!(p, Pending::Join { ch: x, .. } if *x == ch));
                if self.clients[i].usable().is_some()
                    && !self.clients[i].held.contains_key(&ch)
                    && !joining
                {
                    self.request(i, join(CHANNELS[ch]), Pending::Join { ch, cursor: None });
                }
            }
            Op::Leave(i, ch) => {
                if self.clients[i].usable().is_some() && self.clients[i].held.contains_key(&ch) {
                    let h = self.clients[i].held.remove(&ch).unwrap();
                    self.clients[i].nums.remove(&h.num);
                    self.request(i, leave(CHANNELS[ch]), Pending::Leave);
                }
            }
            Op::SendChannel(i, ch) => {
                if let (Some(_), Some(h)) =
                    (self.clients[i].usable(), self.clients[i].held.get(&ch))
                {
                    let epoch = h.epoch;
                    let text = self.text();
                    self.request(
                        i,
                        to_channel(CHANNELS[ch], &text),
                        Pending::SendChannel { ch, epoch, text },
                    );
                }
            }
            Op::SendP2p(i, to) => {
                if self.clients[i].usable().is_some() {
                    let text = self.text();
                    self.request(i, to_user(to, &text), Pending::SendP2p { to, text });
                }
            }
            Op::WriteAttr(i, ch, v) => {
                if self.clients[i].usable().is_some() && self.clients[i].held.contains_key(&ch) {
                    let k = format!("k{}", v % 3);
                    let v = format!("v{v}");
                    let body = write(
                        true,
                        CHANNELS[ch],
                        AttributeOp::AddOrUpdate,
                        attrs(&[(k.as_str(), v.as_str())]),
                        &[],
                        v.len() % 2 == 0,
                    );
                    self.request(i, body, Pending::Write);
                }
            }
            Op::Ack(i) => {
                if let Some(c) = self.clients[i].usable() {
                    self.ack(i, c);
                }
            }
            Op::Logout(i) => {
                if let Some(c) = self.clients[i].usable() {
                    // As the Session does: ack, log out, and forget the
                    // instance (whether the reply comes or not).
                    self.ack(i, c);
                    self.request(i, Body::Logout(wire::Empty {}), Pending::Logout);
                    let paused = self.paused();
                    let cl = &mut self.clients[i];
                    cl.logged_out_unstored |= paused;
                    cl.instance = 0;
                    cl.held.clear();
                    cl.nums.clear();
                    self.settle()?;
                    self.n.lose(c);
                    self.clients[i].lost();
                }
            }
            Op::Lose(i) => {
                if let Some(c) = self.clients[i].conn {
                    self.n.lose(c);
                    self.clients[i].lost();
                }
            }
            Op::Advance(ms) => {
                let mut d = Duration::from_millis(ms);
                if self.elapsed + d > MAX_RUN {
                    d = Duration::from_millis(ms % 1_000);
                }
                if self.elapsed + d <= MAX_RUN {
                    self.elapsed += d;
                    self.n.run_for(d);
                }
            }
            Op::Crash {
                after_ms,
                shards,
                away,
                ..
            } => return self.crash(Duration::from_millis(after_ms), shards, away),
        }
        self.settle()
    }

    /// Acks the client's P2P cursor (kept by the server unless the store
    /// is paused).
    fn ack(&mut self, i: usize, c: ConnId) {
        let (uid, seq) = (self.clients[i].uid, self.clients[i].p2p_seq);
        self.n.ack(c, seq);
        if !self.paused() {
            let acked = self.acked.entry(uid).or_default();
            *acked = (*acked).max(seq);
        }
    }

    /// A fresh login, or a resume with everything the client holds.
    fn connect(&mut self, i: usize) {
        let cl = &mut self.clients[i];
        if cl.conn.is_some() {
            return;
        }
        let c = self.n.accept();
        cl.conn = Some(c);
        cl.ready = false;
        let (req, resume) = if cl.instance != 0 {
            cl.listed = cl
                .held
                .iter()
                .map(|(&ch, h)| (ch, (h.epoch, h.seq)))
                .collect();
            let cursors = cl
                .held
                .iter()
                .map(|(&ch, h)| cursor(CHANNELS[ch], h.epoch, h.seq))
                .collect();
            (
                resume_req(cl.uid, cl.instance, cl.p2p_epoch, cl.p2p_seq, cursors),
                true,
            )
        } else {
            (login_req(cl.uid), false)
        };
        self.request(i, Body::Login(req), Pending::Login { resume });
    }

    /// Pauses the store (what it is asked to keep from now on is lost),
    /// after noting what it has.
    fn pause(&mut self) -> Result<(), TestCaseError> {
        self.snapshot = Some(self.stored()?);
        self.n.store_paused = true;
        Ok(())
    }

    /// The channels as the store has them now (it keeps up), checked
    /// against the model.
    fn stored(&mut self) -> Result<[Option<Shown>; 2], TestCaseError> {
        for ch in 0..CHANNELS.len() {
            self.check_stream_of(ch, "before the crash")?;
        }
        self.snapshot_at = self.elapsed;
        Ok(self.shown())
    }

    fn crash(
        &mut self,
        after: Duration,
        shards: Option<u16>,
        away: u8,
    ) -> Result<(), TestCaseError> {
        count(&STATS.crashes, 1);
        if self.paused() {
            count(&STATS.paused_crashes, 1);
        } else {
            self.snapshot = Some(self.stored()?);
        }
        let before = self.snapshot.take().unwrap();
        for cl in &mut self.clients {
            for p in cl.pending.values() {
                if let Pending::SendChannel { text, .. } | Pending::SendP2p { text, .. } = p {
                    self.unacked.insert(text.clone());
                    count(&STATS.lost_sends, 1);
                }
            }
            cl.lost();
        }
        let shards = shards.unwrap_or(self.shards);
        if shards != self.shards {
            count(&STATS.reshards, 1);
        }
        self.shards = shards;
        let after = if self.elapsed + after > MAX_RUN {
            Duration::from_millis(after.as_millis() as u64 % 1_000)
        } else {
            after
        };
        self.elapsed += after;
        self.n.crash_restart(after, shards);
        // Instances nobody resumes (logged out while the store was paused)
        // come back for the grace period from now, as do those that came
        // back before and were still there when the store last kept up.
        for cl in &mut self.clients {
            let mut back = match cl.zombie.take() {
                Some((chs, until)) if self.snapshot_at < until => chs,
                _ => BTreeSet::new(),
            };
            if std::mem::take(&mut cl.logged_out_unstored) {
                back.extend((0..CHANNELS.len()).filter(|&ch| {
                    before[ch]
                        .as_ref()
                        .is_some_and(|s| s.members.contains(&cl.uid))
                }));
                cl.zombie = Some((back, self.elapsed + GRACE));
            } else if !back.is_empty() {
                cl.zombie = Some((back, self.elapsed + GRACE));
            }
        }
        // Every client with an instance resumes at once, in turn; the
        // members the model expects change with each resume.
        self.restarting = true;
        let mut members: Vec<BTreeSet<u64>> = before
            .iter()
            .map(|s| s.iter().flat_map(|s| s.members.clone()).collect())
            .collect();
        let mut emptied: Vec<bool> = members.iter().map(BTreeSet::is_empty).collect();
        for i in 0..self.clients.len() {
            if self.clients[i].instance == 0 || away & (1 << i) != 0 {
                continue;
            }
            self.connect(i);
            self.settle()?;
            let cl = &self.clients[i];
            for ch in 0..CHANNELS.len() {
                let zombie = cl.zombie.as_ref().is_some_and(|(c, _)| c.contains(&ch));
                if !zombie {
                    members[ch].remove(&cl.uid);
                }
                if cl.held.contains_key(&ch) {
                    members[ch].insert(cl.uid);
                }
                emptied[ch] |= members[ch].is_empty();
            }
        }
        self.restarting = false;
        // Members and attributes: as the store had them, as the resumes
        // changed them.
        let after_shown = self.shown();
        for ch in 0..CHANNELS.len() {
            let expected: Vec<u64> = members[ch].iter().copied().collect();
            let shown = after_shown[ch].clone();
            let listed = shown
                .as_ref()
                .map(|s| s.members.clone())
                .unwrap_or_default();
            prop_assert_eq!(&listed, &expected, "members of {} (API)", CHANNELS[ch]);
            let (want_attrs, want_by) = match (&before[ch], emptied[ch]) {
                (Some(b), false) => (b.attrs.clone(), Some((b.updated_by, b.updated_ms))),
                _ => (BTreeMap::new(), None),
            };
            let got_attrs = shown.as_ref().map(|s| s.attrs.clone()).unwrap_or_default();
            prop_assert_eq!(
                &got_attrs,
                &want_attrs,
                "attributes of {} (API)",
                CHANNELS[ch]
            );
            if let (Some(by), Some(s)) = (want_by, &shown) {
                prop_assert_eq!((s.updated_by, s.updated_ms), by);
            }
            self.check_stream_of(ch, "after the restart")?;
            // The same through a member's requests.
            let holder = self
                .clients
                .iter()
                .find(|c| c.held.contains_key(&ch) && c.usable().is_some())
                .and_then(Client::usable);
            if let Some(c) = holder {
                match self.n.req(c, Body::GetUserList(key(CHANNELS[ch]))) {
                    Body::UserList(r) => {
                        let mut uids = r.uids;
                        uids.sort_unstable();
                        prop_assert_eq!(&uids, &expected, "GetUserList of {}", CHANNELS[ch]);
                    }
                    other => prop_assert!(false, "GetUserList: {:?}", other),
                }
                let get = Body::GetChannelAttributes(wire::GetChannelAttributesRequest {
                    channel: Some(key(CHANNELS[ch])),
                    keys: vec![],
                });
                match self.n.req(c, get) {
                    Body::Attributes(r) => prop_assert_eq!(
                        &r.attributes,
                        &want_attrs,
                        "GetChannelAttributes of {}",
                        CHANNELS[ch]
                    ),
                    other => prop_assert!(false, "GetChannelAttributes: {:?}", other),
                }
            }
        }
        self.settle()
    }

    /// Each channel as the server API shows it.
    fn shown(&mut self) -> [Option<Shown>; 2] {
        let mut out: [Option<Shown>; 2] = [None, None];
        for (ch, slot) in out.iter_mut().enumerate() {
            *slot = self.info(ch).map(|i| Shown {
                members: i.members,
                attrs: i.attributes,
                updated_by: i.attributes_updated_by,
                updated_ms: i.attributes_updated_ms,
            });
        }
        out
    }

    fn info(&mut self, ch: usize) -> Option<ChannelInfo> {
        let r = self.n.s.api(
            self.n.now,
            ApiCall {
                appid: DEMO_APPID,
                request: ApiRequest::Channel {
                    channel: api_key(ch),
                },
            },
        );
        self.n.pump();
        match r {
            Ok(ApiReply::Channel(info)) => info,
            other => panic!("API Channel: {other:?}"),
        }
    }

    /// The channel's epoch and head on the server are the model's (what
    /// clients saw and senders were told).
    fn check_stream_of(&mut self, ch: usize, when: &str) -> Result<(), TestCaseError> {
        if let Some(i) = self.info(ch) {
            if i.epoch == self.ch_epoch[ch] {
                prop_assert_eq!(
                    i.head_seq,
                    self.head(ch, i.epoch),
                    "{} {}: the head is not what senders were told",
                    CHANNELS[ch],
                    when
                );
            } else {
                // An epoch no client saw: only one that holds nothing the
                // model knows of (made by nobody's acknowledged join).
                prop_assert!(
                    self.head(ch, self.ch_epoch[ch]) == 0 && i.head_seq == 0,
                    "{} {}: epoch {} (head {}) where clients saw {} (head {})",
                    CHANNELS[ch],
                    when,
                    i.epoch,
                    i.head_seq,
                    self.ch_epoch[ch],
                    self.head(ch, self.ch_epoch[ch])
                );
            }
        }
        Ok(())
    }

    // ------------------------------------------------------------ frames

    /// Takes every frame for every client until nothing more comes (a
    /// resumed login's rejoins go out as the Session sends them), then
    /// checks what arrived and where each client stands.
    fn settle(&mut self) -> Result<(), TestCaseError> {
        loop {
            let mut rejoins = Vec::new();
            for i in 0..self.clients.len() {
                let Some(c) = self.clients[i].conn else {
                    continue;
                };
                for f in self.n.frames(c) {
                    self.on_frame(i, f, &mut rejoins)?;
                }
            }
            if rejoins.is_empty() {
                break;
            }
            for (i, ch, epoch, seq) in rejoins {
                if self.restarting {
                    count(&STATS.rejoins_after_crash, 1);
                }
                self.request(
                    i,
                    rejoin(CHANNELS[ch], epoch, seq),
                    Pending::Join {
                        ch,
                        cursor: Some((epoch, seq)),
                    },
                );
            }
        }
        // 1 and 4: what arrived was acknowledged to its sender, with this
        // content, and never arrived with another.
        for (uid, stream, epoch, seq, text) in std::mem::take(&mut self.to_check) {
            prop_assert!(
                !self.unacked.contains(&text),
                "uid {uid} received {text:?} ({stream:?} epoch {epoch} seq {seq}), whose send was never acknowledged"
            );
            let truth = match stream {
                Stream::Channel(ch) => self.ch_truth.get(&(ch, epoch, seq)),
                Stream::P2p(to) => {
                    prop_assert_eq!(self.p2p_epoch.get(&to), Some(&epoch));
                    self.p2p_truth.get(&(to, seq))
                }
            };
            prop_assert_eq!(
                truth,
                Some(&text),
                "uid {} received {:?} as {:?} epoch {} seq {}",
                uid,
                &text,
                stream,
                epoch,
                seq
            );
            let first = self
                .seen
                .entry((stream, epoch, seq))
                .or_insert_with(|| text.clone());
            prop_assert_eq!(&*first, &text, "{:?} {} {} changed", stream, epoch, seq);
            // Each text is sent once: it never comes under another number.
            let at = self
                .numbered
                .entry(text.clone())
                .or_insert((stream, epoch, seq));
            prop_assert_eq!(*at, (stream, epoch, seq), "{} arrived twice", &text);
        }
        if self.paused() {
            return Ok(());
        }
        // 2 and 3: with the store keeping up every request is answered, and
        // every connected client stands at the head of its streams.
        for cl in &self.clients {
            if cl.conn.is_none() {
                continue;
            }
            prop_assert!(cl.ready && cl.pending.is_empty(), "unanswered: {cl:?}");
            prop_assert_eq!(self.p2p_epoch.get(&cl.uid), Some(&cl.p2p_epoch));
            prop_assert_eq!(
                cl.p2p_seq,
                self.p2p_head(cl.uid),
                "uid {}'s P2P stream stopped short of the head",
                cl.uid
            );
            for (&ch, h) in &cl.held {
                prop_assert_eq!(
                    h.epoch,
                    self.ch_epoch[ch],
                    "uid {} holds {} in an old epoch",
                    cl.uid,
                    CHANNELS[ch]
                );
                prop_assert_eq!(
                    h.seq,
                    self.head(ch, h.epoch),
                    "uid {} stopped short of the head of {}",
                    cl.uid,
                    CHANNELS[ch]
                );
            }
        }
        Ok(())
    }

    fn on_frame(
        &mut self,
        i: usize,
        f: DecodedFrame,
        rejoins: &mut Vec<(usize, usize, u64, u64)>,
    ) -> Result<(), TestCaseError> {
        let uid = self.clients[i].uid;
        if f.request_id != 0 {
            let p = self.clients[i].pending.remove(&f.request_id);
            prop_assert!(p.is_some(), "uid {uid}: a reply to nothing: {:?}", f);
            let p = p.unwrap();
            return match (p, f.body) {
                (Pending::Login { resume }, Body::LoginReply(r)) => {
                    self.on_login(i, resume, r, rejoins)
                }
                (Pending::Join { ch, cursor }, Body::JoinReply(j)) => {
                    self.on_channel_state(i, ch, cursor, &j)
                }
                (Pending::Leave | Pending::Write | Pending::Logout, Body::Ok(_)) => Ok(()),
                (Pending::SendChannel { ch, epoch, text }, Body::SendReply(r)) => {
                    let head = self.head(ch, epoch);
                    prop_assert_eq!(
                        r.seq,
                        head + 1,
                        "{} epoch {}: a number given twice or skipped ({})",
                        CHANNELS[ch],
                        epoch,
                        &text
                    );
                    self.ch_head.insert((ch, epoch), r.seq);
                    self.ch_truth.insert((ch, epoch, r.seq), text);
                    Ok(())
                }
                (Pending::SendP2p { to, text }, Body::SendReply(r)) => {
                    let head = self.p2p_head(to);
                    prop_assert_eq!(
                        r.seq,
                        head + 1,
                        "uid {}'s inbox: a number given twice or skipped ({})",
                        to,
                        &text
                    );
                    self.p2p_head.insert(to, r.seq);
                    self.p2p_truth.insert((to, r.seq), text);
                    Ok(())
                }
                (p, body) => {
                    prop_assert!(false, "uid {uid}: {p:?} answered with {body:?}");
                    unreachable!()
                }
            };
        }
        match f.body {
            Body::UserMessage(m) if m.seq != 0 => {
                let cl = &mut self.clients[i];
                prop_assert_eq!(
                    m.seq,
                    cl.p2p_seq + 1,
                    "uid {}: P2P push out of order (epoch {})",
                    uid,
                    cl.p2p_epoch
                );
                cl.p2p_seq = m.seq;
                let epoch = cl.p2p_epoch;
                if self.restarting {
                    count(&STATS.replayed_after_crash, 1);
                }
                if uid == OFFLINE {
                    count(&STATS.offline_delivered, 1);
                }
                self.to_check
                    .push((uid, Stream::P2p(uid), epoch, m.seq, text(&m.message)));
            }
            Body::ChannelMessage(m) if m.seq != 0 => {
                let cl = &mut self.clients[i];
                let ch = cl.nums.get(&m.channel).copied();
                prop_assert!(
                    ch.is_some(),
                    "uid {uid}: a push for channel number {} it does not hold",
                    m.channel
                );
                let ch = ch.unwrap();
                let h = cl.held.get_mut(&ch).unwrap();
                prop_assert_eq!(
                    m.seq,
                    h.seq + 1,
                    "uid {}: push of {} out of order (epoch {})",
                    uid,
                    CHANNELS[ch],
                    h.epoch
                );
                h.seq = m.seq;
                let epoch = h.epoch;
                if self.restarting {
                    count(&STATS.replayed_after_crash, 1);
                }
                self.to_check
                    .push((uid, Stream::Channel(ch), epoch, m.seq, text(&m.message)));
            }
            Body::Close(c) => prop_assert!(false, "uid {uid}: closed: {c:?}"),
            Body::Error(e) => prop_assert!(false, "uid {uid}: error push {e:?}"),
            _ => {}
        }
        Ok(())
    }

    fn on_login(
        &mut self,
        i: usize,
        resume: bool,
        r: wire::LoginReply,
        rejoins: &mut Vec<(usize, usize, u64, u64)>,
    ) -> Result<(), TestCaseError> {
        let keep = self.keep;
        let uid = self.clients[i].uid;
        let head = self.p2p_head(uid);
        prop_assert_eq!(r.p2p_replay_truncated_at, 0);
        // The P2P stream.
        let (old_epoch, old_seq) = (self.clients[i].p2p_epoch, self.clients[i].p2p_seq);
        if let Some(&known) = self.p2p_epoch.get(&uid) {
            if known != r.p2p_epoch {
                count(&STATS.epoch_changes, 1);
                prop_assert_eq!(
                    head,
                    0,
                    "uid {}'s inbox got a new epoch with acknowledged messages in it",
                    uid
                );
            }
        }
        self.p2p_epoch.insert(uid, r.p2p_epoch);
        if resume && old_epoch == r.p2p_epoch {
            match r.p2p_gap {
                None => prop_assert_eq!(
                    r.p2p_seq,
                    old_seq,
                    "uid {}: a resume does not go on from its P2P cursor",
                    uid
                ),
                Some(g) => {
                    count(&STATS.retention_gaps, 1);
                    prop_assert_eq!((g.from, g.to), (old_seq + 1, r.p2p_seq));
                    prop_assert!(
                        g.to != 0 && g.to + keep <= head,
                        "uid {uid}: P2P gap {g:?} covers retained messages (head {head}, keep {keep})"
                    );
                }
            }
        } else if resume {
            prop_assert_eq!(
                r.p2p_gap,
                Some(SeqGap {
                    from: old_seq + 1,
                    to: 0
                }),
                "uid {}: a new P2P epoch without a told loss",
                uid
            );
        } else {
            // A fresh login starts after the uid's acked point, which a
            // restart keeps.
            let acked = self.acked.get(&uid).copied().unwrap_or(0);
            match r.p2p_gap {
                None => prop_assert_eq!(
                    r.p2p_seq,
                    acked,
                    "uid {}: a fresh login does not start after the acked point",
                    uid
                ),
                Some(g) => {
                    count(&STATS.retention_gaps, 1);
                    prop_assert!(
                        g.from == acked + 1 && g.to == r.p2p_seq && g.to + keep <= head,
                        "uid {uid}: P2P gap {g:?} on a fresh login (acked {acked}, head {head}, keep {keep})"
                    );
                }
            }
        }
        let cl = &mut self.clients[i];
        cl.p2p_epoch = r.p2p_epoch;
        cl.p2p_seq = r.p2p_seq;
        cl.ready = true;
        cl.nums.clear();
        prop_assert!(r.instance_id != 0);
        if resume && r.resumed {
            prop_assert_eq!(r.instance_id, cl.instance);
        }
        cl.instance = r.instance_id;
        if !resume {
            prop_assert!(cl.held.is_empty() && r.channels.is_empty());
            return Ok(());
        }
        if r.resumed && self.restarting {
            count(&STATS.resumed_after_crash, 1);
        }
        // The channels: those kept come with their state, the others are
        // joined again.
        let listed = std::mem::take(&mut cl.listed);
        let mut kept = BTreeSet::new();
        prop_assert!(r.resumed || r.channels.is_empty(), "{r:?}");
        for rc in &r.channels {
            let ch = CHANNELS
                .iter()
                .position(|id| rc.channel.as_ref() == Some(&key(id)));
            prop_assert!(ch.is_some(), "{rc:?}");
            let ch = ch.unwrap();
            prop_assert!(listed.contains_key(&ch) && kept.insert(ch), "{rc:?}");
            let state = rc.state.unwrap_or_default();
            self.on_channel_state(i, ch, listed.get(&ch).copied(), &state)?;
        }
        for (&ch, &(epoch, seq)) in &listed {
            if !kept.contains(&ch) {
                rejoins.push((i, ch, epoch, seq));
            }
        }
        Ok(())
    }

    /// A JoinReply or a ResumedChannel's state; `cursor`: the (epoch, seq)
    /// of a rejoin or resume.
    fn on_channel_state(
        &mut self,
        i: usize,
        ch: usize,
        cursor: Option<(u64, u64)>,
        j: &wire::JoinReply,
    ) -> Result<(), TestCaseError> {
        let uid = self.clients[i].uid;
        let keep = self.keep;
        prop_assert_eq!(j.replay_truncated_at, 0);
        let known = self.ch_epoch[ch];
        if known != 0 && known != j.epoch {
            count(&STATS.epoch_changes, 1);
            prop_assert_eq!(
                self.head(ch, known),
                0,
                "{} got a new epoch with acknowledged messages in the old one",
                CHANNELS[ch]
            );
        }
        self.ch_epoch[ch] = j.epoch;
        let head = self.head(ch, j.epoch);
        match cursor {
            Some((epoch, seq)) if epoch == j.epoch => match j.gap {
                None => prop_assert_eq!(
                    j.seq,
                    seq,
                    "uid {}: {} does not go on from its cursor",
                    uid,
                    CHANNELS[ch]
                ),
                Some(g) => {
                    count(&STATS.retention_gaps, 1);
                    prop_assert_eq!((g.from, g.to), (seq + 1, j.seq));
                    prop_assert!(
                        g.to != 0 && g.to + keep <= head,
                        "uid {uid}: {} gap {g:?} covers retained messages (head {head}, keep {keep})",
                        CHANNELS[ch]
                    );
                }
            },
            Some((epoch, seq)) => {
                prop_assert_eq!(
                    self.head(ch, epoch),
                    0,
                    "{}: epoch {} with acknowledged messages is gone",
                    CHANNELS[ch],
                    epoch
                );
                prop_assert_eq!(
                    j.gap,
                    Some(SeqGap {
                        from: seq + 1,
                        to: 0
                    }),
                    "uid {}: a new epoch of {} without a told loss",
                    uid,
                    CHANNELS[ch]
                );
                prop_assert_eq!(j.seq, head);
            }
            None => {
                prop_assert_eq!(j.gap, None);
                prop_assert_eq!(j.seq, head, "a join does not start at the head");
            }
        }
        let cl = &mut self.clients[i];
        if let Some(old) = cl.held.get(&ch) {
            cl.nums.remove(&old.num);
        }
        cl.held.insert(
            ch,
            Held {
                num: j.channel,
                epoch: j.epoch,
                seq: j.seq,
            },
        );
        cl.nums.insert(j.channel, ch);
        Ok(())
    }
}

fn run(shards: u16, keep: usize, ops: &[Op]) -> Result<(), TestCaseError> {
    count(&STATS.cases, 1);
    count(&STATS.ops, ops.len() as u64);
    // Where the store is paused: the `pause` operations before a crash
    // (not reaching back past the previous crash).
    let mut pause_at = vec![false; ops.len()];
    let mut after_crash = 0;
    for (at, op) in ops.iter().enumerate() {
        if let Op::Crash { pause, .. } = *op {
            let from = at.saturating_sub(pause).max(after_crash);
            if from < at {
                pause_at[from] = true;
            }
            after_crash = at + 1;
        }
    }
    let mut w = World::new(shards, keep);
    for (at, op) in ops.iter().enumerate() {
        if pause_at[at] {
            w.pause()?;
        }
        w.apply(op)?;
    }
    // A last crash, then everyone (uid 4 too) logs in: nothing acknowledged
    // is missing.
    w.apply(&Op::Crash {
        pause: 0,
        after_ms: 1_000,
        shards: None,
        away: 0,
    })?;
    for i in 0..w.clients.len() {
        w.connect(i);
        w.settle()?;
    }
    Ok(())
}

/// `PROPTEST_CASES` overrides the number of cases (256).
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(256)
}

#[test]
fn crashes_and_restores_never_lose_change_or_invent_what_clients_saw() {
    let mut cfg = config(cases());
    cfg.source_file = Some(file!());
    let mut runner = TestRunner::new(cfg);
    let strategy = (
        prop_oneof![Just(1u16), Just(3u16)],
        prop_oneof![1 => Just(1024usize), 1 => 2..6usize],
        prop::collection::vec(op(), 1..100),
    );
    let started = Instant::now();
    let result = runner.run(&strategy, |(shards, keep, ops)| {
        let t = Instant::now();
        let r = run(shards, keep, &ops);
        let us = t.elapsed().as_micros() as u64;
        STATS.slowest_case_us.fetch_max(us, Ordering::Relaxed);
        r
    });
    let s = &STATS;
    let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
    eprintln!(
        "durable props: {} cases ({} ops) in {:?} (the slowest {} µs): {} crashes ({} with the store paused, {} with another shard count), {} sends lost unacknowledged, after crashes {} resumed instances, {} rejoins, {} messages replayed; {} retention gaps, {} epoch changes, {} messages to uid 4 delivered at the end",
        get(&s.cases),
        get(&s.ops),
        started.elapsed(),
        get(&s.slowest_case_us),
        get(&s.crashes),
        get(&s.paused_crashes),
        get(&s.reshards),
        get(&s.lost_sends),
        get(&s.resumed_after_crash),
        get(&s.rejoins_after_crash),
        get(&s.replayed_after_crash),
        get(&s.retention_gaps),
        get(&s.epoch_changes),
        get(&s.offline_delivered),
    );
    if let Err(e) = result {
        panic!("{e}");
    }
}
