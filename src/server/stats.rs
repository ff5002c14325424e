//! Counters of what the server did, for an operator's metrics: each
//! [`Gateway`](super::Gateway) and [`Hub`](super::Hub) keeps its own
//! [`Stats`] (no sharing, no atomics on the path of a frame) and a runner
//! adds up the snapshots of its threads ([`Stats::merge`]) when asked.
//! Counters only grow; gauges (`*_open`, `instances`, ...) are read when
//! the snapshot is taken.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::types::Region;
use crate::wire::{body_name, Body, MAX_BODY_TAG};

use super::conn::CloseReason;

const TAGS: usize = MAX_BODY_TAG as usize + 1;

/// What carries a link, as the runner tells the gateway
/// ([`Gateway::accept_link`](super::Gateway::accept_link)): metrics count
/// connections and logins by it.
#[non_exhaustive]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash)]
pub enum LinkKind {
    /// Length-prefixed frames on TCP (`tcp://`).
    #[default]
    Tcp,
    /// The same inside TLS (`tls://`).
    Tls,
    /// WebSocket (`ws://`).
    WebSocket,
    /// WebSocket inside TLS (`wss://`).
    SecureWebSocket,
}

impl LinkKind {
    /// Every kind, in the order of [`LinkKind::name`]'s table.
    pub const ALL: [LinkKind; 4] = [
        LinkKind::Tcp,
        LinkKind::Tls,
        LinkKind::WebSocket,
        LinkKind::SecureWebSocket,
    ];

    /// The URL scheme of this kind: `tcp`, `tls`, `ws`, `wss`.
    pub fn name(self) -> &'static str {
        match self {
            LinkKind::Tcp => "tcp",
            LinkKind::Tls => "tls",
            LinkKind::WebSocket => "ws",
            LinkKind::SecureWebSocket => "wss",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Why links were closed, as counted: [`CloseReason::name`] for the
/// server's closes, and `lost` for a transport that went away by itself.
const CLOSE_CAUSES: [&str; 13] = [
    "kicked",
    "kicked_by_service",
    "slow_consumer",
    "protocol_error",
    "unsupported_version",
    "idle_timeout",
    "login_timeout",
    "replaced",
    "shutdown",
    "not_logged_in",
    "token_expired",
    "closed_by_peer",
    "lost",
];

/// The limits whose refusals (4003) are counted, by name.
const RATE_PATHS: [&str; 7] = [
    "logins_per_address",
    "instance_sends",
    "sends",
    "attribute_writes",
    "queries",
    "memberships",
    "fetch_bytes",
];

/// A distribution of durations in fixed buckets (Prometheus style: each
/// bucket's bound is its largest value; the last is unbounded).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Histogram {
    /// Observations per bucket (not cumulative), the last past every bound.
    counts: [u64; Histogram::BOUNDS_US.len() + 1],
    sum_us: u64,
}

impl Histogram {
    /// The buckets' upper bounds, in microseconds: 100 µs to 10 s.
    pub const BOUNDS_US: [u64; 16] = [
        100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
        1_000_000, 2_500_000, 5_000_000, 10_000_000,
    ];

    /// Counts one observation.
    pub fn observe(&mut self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let i = Self::BOUNDS_US.partition_point(|&b| b < us);
        self.counts[i] += 1;
        self.sum_us = self.sum_us.saturating_add(us);
    }

    /// Observations in all.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The sum of the observations.
    pub fn sum(&self) -> Duration {
        Duration::from_micros(self.sum_us)
    }

    /// `(upper bound, observations at most that long)` for each bound, and
    /// `(None, count)` last: the cumulative buckets of the text format.
    pub fn cumulative(&self) -> impl Iterator<Item = (Option<Duration>, u64)> + '_ {
        let bounds = Self::BOUNDS_US
            .iter()
            .map(|&b| Some(Duration::from_micros(b)))
            .chain([None]);
        bounds.zip(self.counts.iter().scan(0, |acc, &c| {
            *acc += c;
            Some(*acc)
        }))
    }

    /// The smallest bucket bound under which at least `q` (0 to 1) of the
    /// observations fall; `None` without observations or when they lie
    /// past the last bound.
    pub fn quantile_bound(&self, q: f64) -> Option<Duration> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let want = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        self.cumulative()
            .find(|&(_, n)| n >= want)
            .and_then(|(b, _)| b)
    }

    /// Adds `other`'s observations to these (same buckets).
    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.sum_us = self.sum_us.saturating_add(other.sum_us);
    }
}

/// A snapshot of the counters of one gateway or hub, or of a whole server
/// (snapshots add up with [`Stats::merge`]). Read it with the accessors;
/// each yields `(label, value)` for the labels that were ever counted.
///
/// ```
/// use std::time::Instant;
/// use hummer_channel::server::{LinkKind, Server, ServerConfig};
///
/// let mut server = Server::new(ServerConfig::demo(), Instant::now(), 1_700_000_000_000);
/// let _conn = server.accept(Instant::now());
/// let stats = server.stats();
/// assert_eq!(stats.links_open(LinkKind::Tcp), 1);
/// assert_eq!(stats.links_accepted(LinkKind::Tcp), 1);
/// assert_eq!(stats.instances(), 0);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stats {
    links_accepted: [u64; 4],
    links_open: [u64; 4],
    logins: [u64; 4],
    requests: [u64; TAGS],
    deliveries: [u64; TAGS],
    closes: [u64; CLOSE_CAUSES.len()],
    latency: Vec<(u32, Histogram)>,
    queued_bytes: u64,
    instances: u64,
    channels: u64,
    members: u64,
    refusals: BTreeMap<u32, u64>,
    rate_limited: [u64; RATE_PATHS.len()],
    resumes: u64,
    replayed: u64,
    gaps: u64,
    busiest: Vec<ChannelActivity>,
}

/// How many channels of each app [`Stats::busiest_channels`] lists.
pub const BUSIEST_CHANNELS: usize = 10;

/// One channel's activity, in [`Stats::busiest_channels`].
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelActivity {
    /// The channel's app.
    pub appid: u32,
    /// Its region.
    pub region: Region,
    /// Its id.
    pub id: String,
    /// Distinct member uids now.
    pub members: u64,
    /// Messages sent to it since it was made (reliable or not).
    pub messages: u64,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            links_accepted: [0; 4],
            links_open: [0; 4],
            logins: [0; 4],
            requests: [0; TAGS],
            deliveries: [0; TAGS],
            closes: [0; CLOSE_CAUSES.len()],
            latency: Vec::new(),
            queued_bytes: 0,
            instances: 0,
            channels: 0,
            members: 0,
            refusals: BTreeMap::new(),
            rate_limited: [0; RATE_PATHS.len()],
            resumes: 0,
            replayed: 0,
            gaps: 0,
            busiest: Vec::new(),
        }
    }
}

/// `(name, value)` of a table indexed by body tag, for the names counted.
fn by_tag(table: &[u64; TAGS]) -> impl Iterator<Item = (&'static str, u64)> + '_ {
    table.iter().enumerate().filter_map(|(tag, &n)| {
        let name = body_name(tag as u32)?;
        (n > 0).then_some((name, n))
    })
}

/// Keeps the [`BUSIEST_CHANNELS`] busiest of each app, busiest first
/// (ties by app and id, so snapshots compare).
fn keep_busiest(channels: &mut Vec<ChannelActivity>) {
    let order = |a: &ChannelActivity, b: &ChannelActivity| {
        (b.messages, a.appid, &a.id, a.region as u8).cmp(&(
            a.messages,
            b.appid,
            &b.id,
            b.region as u8,
        ))
    };
    channels.sort_by(|a, b| a.appid.cmp(&b.appid).then_with(|| order(a, b)));
    let mut kept = 0;
    let mut app = None;
    channels.retain(|c| {
        if app != Some(c.appid) {
            (app, kept) = (Some(c.appid), 0);
        }
        kept += 1;
        kept <= BUSIEST_CHANNELS
    });
    channels.sort_by(order);
}

fn add_all(a: &mut [u64], b: &[u64]) {
    for (x, y) in a.iter_mut().zip(b) {
        *x += y;
    }
}

impl Stats {
    /// Adds `other`'s counters and gauges to these.
    pub fn merge(&mut self, other: &Stats) {
        add_all(&mut self.links_accepted, &other.links_accepted);
        add_all(&mut self.links_open, &other.links_open);
        add_all(&mut self.logins, &other.logins);
        add_all(&mut self.requests, &other.requests);
        add_all(&mut self.deliveries, &other.deliveries);
        add_all(&mut self.closes, &other.closes);
        add_all(&mut self.rate_limited, &other.rate_limited);
        for (tag, h) in &other.latency {
            self.latency_mut(*tag).merge(h);
        }
        self.latency.sort_unstable_by_key(|(t, _)| *t);
        for (code, n) in &other.refusals {
            *self.refusals.entry(*code).or_default() += n;
        }
        self.queued_bytes += other.queued_bytes;
        self.instances += other.instances;
        self.channels += other.channels;
        self.members += other.members;
        self.resumes += other.resumes;
        self.replayed += other.replayed;
        self.gaps += other.gaps;
        self.busiest.extend(other.busiest.iter().cloned());
        keep_busiest(&mut self.busiest);
    }

    /// Links accepted since the start, of this kind.
    pub fn links_accepted(&self, kind: LinkKind) -> u64 {
        self.links_accepted[kind.index()]
    }

    /// Links open now (logged in or not, closing ones included), of this kind.
    pub fn links_open(&self, kind: LinkKind) -> u64 {
        self.links_open[kind.index()]
    }

    /// Successful logins (resumes included) on links of this kind.
    pub fn logins(&self, kind: LinkKind) -> u64 {
        self.logins[kind.index()]
    }

    /// Frames received from clients, by body name (`"login"`,
    /// `"send_to_channel"`, `"ping"`, ...): what clients sent.
    pub fn frames_in(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        by_tag(&self.requests)
    }

    /// Frames queued for clients, by body name (`"channel_message"`,
    /// `"send_reply"`, ...): a broadcast counts once per receiver.
    pub fn deliveries(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        by_tag(&self.deliveries)
    }

    /// Closes by cause: the name of the server's [`CloseReason`], or
    /// `lost` when the transport went away by itself.
    pub fn closes(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        CLOSE_CAUSES
            .iter()
            .zip(&self.closes)
            .filter(|(_, &n)| n > 0)
            .map(|(&c, &n)| (c, n))
    }

    /// How long requests took, from the frame read to the reply queued,
    /// by request name. Requests the gateway answers itself (a ping) are
    /// not in it.
    pub fn request_latency(&self) -> impl Iterator<Item = (&'static str, &Histogram)> + '_ {
        self.latency
            .iter()
            .filter_map(|(t, h)| Some((body_name(*t)?, h)))
    }

    /// Bytes queued for clients and not yet taken by their transports.
    pub fn queued_bytes(&self) -> u64 {
        self.queued_bytes
    }

    /// Logged-in instances, those in their presence grace included.
    pub fn instances(&self) -> u64 {
        self.instances
    }

    /// Channels the server holds (with members, or with retained history).
    pub fn channels(&self) -> u64 {
        self.channels
    }

    /// Memberships: distinct uids in each channel, added up.
    pub fn members(&self) -> u64 {
        self.members
    }

    /// Requests refused, by the code of their `ErrorReply`.
    pub fn refusals(&self) -> impl Iterator<Item = (u32, u64)> + '_ {
        self.refusals.iter().map(|(&c, &n)| (c, n))
    }

    /// Refusals (4003) by the limit that was spent: `logins_per_address`,
    /// `instance_sends`, `sends`, `attribute_writes`, `queries`,
    /// `memberships`, `fetch_bytes`.
    pub fn rate_limited(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        RATE_PATHS
            .iter()
            .zip(&self.rate_limited)
            .filter(|(_, &n)| n > 0)
            .map(|(&p, &n)| (p, n))
    }

    /// Logins that resumed an instance in its grace period.
    pub fn resumes(&self) -> u64 {
        self.resumes
    }

    /// Retained messages replayed (on a resume, a rejoin or a fetch).
    pub fn replayed_messages(&self) -> u64 {
        self.replayed
    }

    /// Gaps reported to clients (a range of messages they will never get).
    pub fn gaps_reported(&self) -> u64 {
        self.gaps
    }

    /// The channels with the most messages since they were made ([`BUSIEST_CHANNELS`]
    /// at most of each app, busiest first): a dashboard's rates are the
    /// differences between two snapshots.
    pub fn busiest_channels(&self) -> &[ChannelActivity] {
        &self.busiest
    }

    // What the gateway and the hub count.

    pub(super) fn note_accepted(&mut self, kind: LinkKind) {
        self.links_accepted[kind.index()] += 1;
    }

    /// One more link of `kind` open (a snapshot counts them afresh).
    pub(super) fn note_link_open(&mut self, kind: LinkKind) {
        self.links_open[kind.index()] += 1;
    }

    pub(super) fn note_login(&mut self, kind: LinkKind) {
        self.logins[kind.index()] += 1;
    }

    pub(super) fn note_frame_in(&mut self, tag: u32) {
        if let Some(n) = self.requests.get_mut(tag as usize) {
            *n += 1;
        }
    }

    pub(super) fn note_deliveries(&mut self, tag: u32, n: u64) {
        if let Some(d) = self.deliveries.get_mut(tag as usize) {
            *d += n;
        }
    }

    pub(super) fn note_close(&mut self, reason: Option<&CloseReason>) {
        let name = reason.map_or("lost", CloseReason::name);
        if let Some(i) = CLOSE_CAUSES.iter().position(|&c| c == name) {
            self.closes[i] += 1;
        }
    }

    pub(super) fn note_latency(&mut self, tag: u32, d: Duration) {
        self.latency_mut(tag).observe(d);
    }

    fn latency_mut(&mut self, tag: u32) -> &mut Histogram {
        let i = match self.latency.iter().position(|(t, _)| *t == tag) {
            Some(i) => i,
            None => {
                self.latency.push((tag, Histogram::default()));
                self.latency.len() - 1
            }
        };
        &mut self.latency[i].1
    }

    pub(super) fn note_replayed(&mut self, messages: usize) {
        self.replayed += messages as u64;
    }

    pub(super) fn set_queued_bytes(&mut self, n: u64) {
        self.queued_bytes = n;
    }

    pub(super) fn set_population(&mut self, instances: u64, channels: u64, members: u64) {
        self.instances = instances;
        self.channels = channels;
        self.members = members;
    }

    pub(super) fn set_busiest(&mut self, channels: Vec<ChannelActivity>) {
        self.busiest = channels;
        keep_busiest(&mut self.busiest);
    }

    pub(super) fn note_refusal(&mut self, code: u32) {
        *self.refusals.entry(code).or_default() += 1;
    }

    pub(super) fn note_rate_limited(&mut self, path: &str) {
        if let Some(i) = RATE_PATHS.iter().position(|&p| p == path) {
            self.rate_limited[i] += 1;
        }
    }

    /// A successful reply with `after` frames behind it: a login's or a
    /// join's are replayed messages (a fetch's replay comes before its
    /// reply: [`Stats::note_replayed`]); the gaps of all three are counted.
    pub(super) fn note_answer(&mut self, body: &Body, after: usize) {
        let gaps = match body {
            Body::LoginReply(r) => {
                if r.resumed {
                    self.resumes += 1;
                }
                let channels = r.channels.iter().filter_map(|c| c.state.as_ref());
                usize::from(r.p2p_gap.is_some()) + channels.filter(|s| s.gap.is_some()).count()
            }
            Body::JoinReply(r) => usize::from(r.gap.is_some()),
            Body::FetchReply(r) => {
                self.gaps += u64::from(r.gap.is_some());
                return;
            }
            _ => return,
        };
        self.replayed += after as u64;
        self.gaps += gaps as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_inclusive_upper_bounds() {
        let mut h = Histogram::default();
        assert_eq!(h.quantile_bound(0.5), None);
        h.observe(Duration::from_micros(100)); // in the first bucket
        h.observe(Duration::from_micros(101)); // in the second
        h.observe(Duration::from_secs(11)); // past every bound
        assert_eq!(h.count(), 3);
        assert_eq!(h.sum(), Duration::from_micros(11_000_201));
        let c: Vec<_> = h.cumulative().collect();
        assert_eq!(c.len(), 17);
        assert_eq!(c[0], (Some(Duration::from_micros(100)), 1));
        assert_eq!(c[1], (Some(Duration::from_micros(250)), 2));
        assert_eq!(c[15], (Some(Duration::from_secs(10)), 2));
        assert_eq!(c[16], (None, 3));
        assert_eq!(h.quantile_bound(0.0), Some(Duration::from_micros(100)));
        assert_eq!(h.quantile_bound(0.34), Some(Duration::from_micros(250)));
        assert_eq!(h.quantile_bound(0.66), Some(Duration::from_micros(250)));
        assert_eq!(h.quantile_bound(0.67), None);
        h.observe(Duration::from_secs(10));
        assert_eq!(
            h.cumulative().nth(15),
            Some((Some(Duration::from_secs(10)), 3))
        );
    }

    #[test]
    fn merged_histograms_answer_as_one_histogram_of_all() {
        let (mut a, mut b, mut all) = (
            Histogram::default(),
            Histogram::default(),
            Histogram::default(),
        );
        for us in [100u64, 300, 2_000, 40_000] {
            a.observe(Duration::from_micros(us));
            all.observe(Duration::from_micros(us));
        }
        for us in [90u64, 700, 700, 3_000_000, 20_000_000] {
            b.observe(Duration::from_micros(us));
            all.observe(Duration::from_micros(us));
        }
        a.merge(&b);
        assert_eq!(a, all);
        for q in [0.0, 0.1, 0.5, 0.7, 0.9, 0.99, 1.0] {
            assert_eq!(a.quantile_bound(q), all.quantile_bound(q), "q = {q}");
        }
    }

    #[test]
    fn snapshots_add_up_and_list_only_what_was_counted() {
        let mut a = Stats::default();
        a.note_accepted(LinkKind::WebSocket);
        a.note_frame_in(10);
        a.note_frame_in(10);
        a.note_deliveries(61, 5);
        a.note_close(Some(&CloseReason::SlowConsumer));
        a.note_close(None);
        a.note_latency(10, Duration::from_millis(1));
        a.note_refusal(4003);
        a.note_rate_limited("sends");
        a.note_rate_limited("no such path");
        a.note_frame_in(9999);
        let mut b = Stats::default();
        b.note_accepted(LinkKind::WebSocket);
        b.note_login(LinkKind::Tls);
        for _ in 0..3 {
            b.note_link_open(LinkKind::Tcp);
        }
        b.note_latency(10, Duration::from_millis(2));
        b.note_latency(17, Duration::from_millis(2));
        b.note_refusal(4003);
        b.note_refusal(2007);
        b.set_population(4, 5, 6);
        b.set_queued_bytes(7);
        let resumed = crate::wire::LoginReply {
            resumed: true,
            p2p_gap: Some(crate::wire::SeqGap::default()),
            ..Default::default()
        };
        b.note_answer(&Body::LoginReply(resumed), 8);
        b.note_answer(&Body::Ok(crate::wire::Empty::default()), 3);
        a.merge(&b);
        assert_eq!(a.links_accepted(LinkKind::WebSocket), 2);
        assert_eq!(a.links_accepted(LinkKind::Tcp), 0);
        assert_eq!(a.logins(LinkKind::Tls), 1);
        assert_eq!(a.links_open(LinkKind::Tcp), 3);
        assert_eq!(a.frames_in().collect::<Vec<_>>(), [("login", 2)]);
        assert_eq!(a.deliveries().collect::<Vec<_>>(), [("channel_message", 5)]);
        assert_eq!(
            a.closes().collect::<Vec<_>>(),
            [("slow_consumer", 1), ("lost", 1)]
        );
        let lat: Vec<_> = a.request_latency().map(|(n, h)| (n, h.count())).collect();
        assert_eq!(lat, [("login", 2), ("join", 1)]);
        assert_eq!(a.refusals().collect::<Vec<_>>(), [(2007, 1), (4003, 2)]);
        assert_eq!(a.rate_limited().collect::<Vec<_>>(), [("sends", 1)]);
        assert_eq!((a.instances(), a.channels(), a.members()), (4, 5, 6));
        assert_eq!(a.queued_bytes(), 7);
        assert_eq!(
            (a.resumes(), a.replayed_messages(), a.gaps_reported()),
            (1, 8, 1)
        );
    }

    #[test]
    fn the_busiest_are_kept_per_app_so_a_quiet_app_still_sees_its_own() {
        let ch = |appid, id: &str, messages| ChannelActivity {
            appid,
            region: Region::Cn,
            id: id.into(),
            members: 1,
            messages,
        };
        let loud: Vec<_> = (0..12)
            .map(|i| ch(1, &format!("l{i:02}"), 100 + i))
            .collect();
        let mut a = Stats::default();
        a.set_busiest(loud);
        let mut b = Stats::default();
        b.set_busiest(vec![ch(2, "q1", 1), ch(2, "q2", 2)]);
        a.merge(&b);
        let got: Vec<(u32, u64)> = a
            .busiest_channels()
            .iter()
            .map(|c| (c.appid, c.messages))
            .collect();
        let mut want: Vec<(u32, u64)> = (102..112).rev().map(|m| (1, m)).collect();
        want.extend([(2, 2), (2, 1)]);
        assert_eq!(got, want, "ten of app 1, busiest first, then app 2's two");
        // A tie is broken by app, then id.
        let mut t = Stats::default();
        t.set_busiest(vec![ch(2, "b", 5), ch(1, "z", 5), ch(1, "a", 5)]);
        let ids: Vec<&str> = t.busiest_channels().iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, ["a", "z", "b"]);
    }

    #[test]
    fn every_close_reason_has_a_counted_cause() {
        use crate::error::WireError;
        for r in [
            CloseReason::Kicked,
            CloseReason::SlowConsumer,
            CloseReason::ProtocolError(WireError::Unexpected("x")),
            CloseReason::UnsupportedVersion,
            CloseReason::IdleTimeout,
            CloseReason::LoginTimeout,
            CloseReason::Replaced,
            CloseReason::Shutdown,
            CloseReason::NotLoggedIn,
            CloseReason::TokenExpired,
            CloseReason::ClosedByPeer,
            CloseReason::KickedByService {
                code: 4100,
                reason: "spam".into(),
            },
        ] {
            let mut s = Stats::default();
            s.note_close(Some(&r));
            assert_eq!(s.closes().collect::<Vec<_>>(), [(r.name(), 1)]);
        }
    }
}
