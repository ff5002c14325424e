//! Protocol v2 behaviour of the server, driven in memory with encoded frames
//! and a fake clock (the style of `server_frames.rs`): one code per refusal,
//! the Close codes, the heartbeat, per-stream epochs, resume without
//! duplicates and exactly-once sends.
#![cfg(feature = "server")]

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hummer_channel::server::{CloseReason, ConnId, RateLimit, Server, ServerConfig, DEMO_APPID};
use hummer_channel::wire::{self, decode_frame, encode_frame, Body, Frame};

const T0_UNIX_MS: u64 = 1_700_000_000_000;
const MAX: usize = 64 * 1024;

// ---------------------------------------------------------------- harness

/// Message ids: non-zero and never used twice in this test binary (and far
/// from the few ids the tests spell out).
static NEXT_MESSAGE_ID: AtomicU64 = AtomicU64::new(1_000_000);

fn message_id() -> u64 {
    NEXT_MESSAGE_ID.fetch_add(1, Ordering::Relaxed)
}

/// A fake network around one Server: sends requests, collects every frame
/// queued for every connection and every close.
struct Net {
    s: Server,
    now: Instant,
    rid: u64,
    out: HashMap<ConnId, VecDeque<Frame>>,
    held: HashSet<ConnId>,
    closed: Vec<(ConnId, CloseReason)>,
}

impl Net {
    /// A server whose wall clock reads `unix_ms` at its start (a restarted
    /// server starts later: with the same seed and the same clock reading
    /// it would draw the same epochs, which no real restart does).
    fn new_at(config: ServerConfig, unix_ms: u64) -> Net {
        let now = Instant::now();
        Net {
            s: Server::new(config, now, unix_ms),
            now,
            rid: 0,
            out: HashMap::new(),
            held: HashSet::new(),
            closed: Vec::new(),
        }
    }

    fn new(config: ServerConfig) -> Net {
        Net::new_at(config, T0_UNIX_MS)
    }

    fn demo() -> Net {
        Net::new(ServerConfig::demo())
    }

    /// The same configuration started a minute later: every stream's
    /// history is gone.
    fn restarted(config: ServerConfig) -> Net {
        Net::new_at(config, T0_UNIX_MS + 60_000)
    }

    fn pump(&mut self) {
        while let Some(c) = self.s.poll_ready() {
            if self.held.contains(&c) {
                continue;
            }
            self.drain(c);
        }
        while let Some(x) = self.s.poll_close() {
            self.closed.push(x);
        }
    }

    fn drain(&mut self, c: ConnId) {
        while let Some(b) = self.s.poll_transmit(c) {
            let f = decode_frame(b, MAX).expect("server frames decode");
            self.out.entry(c).or_default().push_back(f);
        }
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
        self.s.handle_timeout(self.now);
        self.pump();
    }

    fn accept(&mut self) -> ConnId {
        self.s.accept(self.now)
    }

    fn raw(&mut self, c: ConnId, bytes: Bytes) {
        self.s.handle_frame(self.now, c, bytes);
        self.pump();
    }

    /// A frame with request id 0 (Ack, Pong, Close).
    fn notify(&mut self, c: ConnId, body: Body) {
        self.raw(
            c,
            encode_frame(&Frame {
                request_id: 0,
                body: Some(body),
            }),
        );
    }

    fn send(&mut self, c: ConnId, body: Body) -> u64 {
        self.rid += 1;
        let rid = self.rid;
        self.raw(
            c,
            encode_frame(&Frame {
                request_id: rid,
                body: Some(body),
            }),
        );
        rid
    }

    /// Sends a request and takes its reply out of the connection's frames.
    fn req(&mut self, c: ConnId, body: Body) -> Body {
        let rid = self.send(c, body);
        let q = self.out.entry(c).or_default();
        let pos = q
            .iter()
            .position(|f| f.request_id == rid)
            .expect("a reply with the request id");
        q.remove(pos).unwrap().body.unwrap()
    }

    fn ok(&mut self, c: ConnId, body: Body) {
        match self.req(c, body) {
            Body::Ok(_) => {}
            other => panic!("expected ok, got {other:?}"),
        }
    }

    fn err(&mut self, c: ConnId, body: Body) -> u32 {
        code(self.req(c, body))
    }

    fn sent(&mut self, c: ConnId, body: Body) -> wire::SendReply {
        match self.req(c, body) {
            Body::SendReply(r) => r,
            other => panic!("expected SendReply, got {other:?}"),
        }
    }

    /// Every frame queued for `c` since the last call, in order.
    fn frames(&mut self, c: ConnId) -> Vec<Frame> {
        self.out.remove(&c).unwrap_or_default().into()
    }

    fn bodies(&mut self, c: ConnId) -> Vec<Body> {
        self.frames(c).into_iter().filter_map(|f| f.body).collect()
    }

    fn login_with(&mut self, c: ConnId, req: wire::LoginRequest) -> Body {
        self.req(c, Body::Login(req))
    }

    /// A login on a new connection, with its reply.
    fn login_req_on_new(&mut self, req: wire::LoginRequest) -> (ConnId, wire::LoginReply) {
        let c = self.accept();
        match self.login_with(c, req) {
            Body::LoginReply(r) => (c, r),
            other => panic!("login failed: {other:?}"),
        }
    }

    /// A fresh anonymous login of `uid` on a new connection.
    fn login(&mut self, uid: u64) -> (ConnId, wire::LoginReply) {
        self.login_req_on_new(login_req(uid))
    }

    fn ok_join(&mut self, c: ConnId, id: &str) -> wire::JoinReply {
        join_reply(self.req(c, join(id)))
    }

    fn ack(&mut self, c: ConnId, p2p_seq: u64) {
        self.notify(c, Body::Ack(wire::Ack { p2p_seq }));
    }

    /// The transport of `c` closed under the server (a lost link).
    fn lose(&mut self, c: ConnId) {
        self.s.handle_closed(self.now, c);
        self.out.remove(&c);
    }

    /// Drops whatever is queued for each of `conns`.
    fn clear(&mut self, conns: &[ConnId]) {
        for c in conns {
            self.out.remove(c);
        }
    }

    fn closes_of(&self, c: ConnId) -> Vec<CloseReason> {
        self.closed
            .iter()
            .filter(|(x, _)| *x == c)
            .map(|(_, r)| r.clone())
            .collect()
    }
}

fn code(b: Body) -> u32 {
    match b {
        Body::Error(e) => e.code,
        other => panic!("expected an error, got {other:?}"),
    }
}

fn join_reply(b: Body) -> wire::JoinReply {
    match b {
        Body::JoinReply(j) => j,
        other => panic!("expected JoinReply, got {other:?}"),
    }
}

fn login_reply(b: Body) -> wire::LoginReply {
    match b {
        Body::LoginReply(r) => r,
        other => panic!("expected LoginReply, got {other:?}"),
    }
}

fn login_req(uid: u64) -> wire::LoginRequest {
    wire::LoginRequest {
        protocol_version: wire::PROTOCOL_VERSION,
        appid: DEMO_APPID,
        uid,
        ..Default::default()
    }
}

fn resume_req(
    uid: u64,
    instance_id: u64,
    p2p_epoch: u64,
    p2p_seq: u64,
    channels: Vec<wire::ChannelCursor>,
) -> wire::LoginRequest {
    wire::LoginRequest {
        resume: Some(wire::Resume {
            p2p_epoch,
            instance_id,
            p2p_seq,
            channels,
        }),
        ..login_req(uid)
    }
}

fn key(id: &str) -> wire::ChannelKey {
    wire::ChannelKey {
        region: wire::Region::Cn as i32,
        channel_id: id.into(),
    }
}

fn cursor(id: &str, epoch: u64, seq: u64) -> wire::ChannelCursor {
    wire::ChannelCursor {
        channel: Some(key(id)),
        epoch,
        seq,
    }
}

fn join(id: &str) -> Body {
    Body::Join(wire::JoinRequest {
        channel: Some(key(id)),
        ..Default::default()
    })
}

fn rejoin(id: &str, epoch: u64, resume_seq: u64) -> Body {
    Body::Join(wire::JoinRequest {
        channel: Some(key(id)),
        resume_seq,
        rejoin: true,
        epoch,
        ..Default::default()
    })
}

fn leave(id: &str) -> Body {
    Body::Leave(wire::LeaveRequest {
        channel: Some(key(id)),
        ..Default::default()
    })
}

fn chat(text: &str) -> wire::ChatMessage {
    wire::ChatMessage {
        r#type: "text".into(),
        content: Bytes::from(text.to_owned()),
        app_extras: BTreeMap::new(),
    }
}

fn to_user_id(receiver: u64, text: &str, unreliable: bool, message_id: u64) -> Body {
    Body::SendToUser(wire::SendToUserRequest {
        receiver,
        message: Some(chat(text)),
        unreliable,
        message_id,
    })
}

fn to_channel_id(id: &str, text: &str, unreliable: bool, message_id: u64) -> Body {
    Body::SendToChannel(wire::SendToChannelRequest {
        channel: Some(key(id)),
        message: Some(chat(text)),
        unreliable,
        message_id,
    })
}

/// A reliable P2P send with a fresh message id.
fn to_user(receiver: u64, text: &str) -> Body {
    to_user_id(receiver, text, false, message_id())
}

/// A reliable channel send with a fresh message id.
fn to_channel(id: &str, text: &str) -> Body {
    to_channel_id(id, text, false, message_id())
}

fn text(m: &Option<wire::ChatMessage>) -> String {
    String::from_utf8(m.as_ref().unwrap().content.to_vec()).unwrap()
}

/// The P2P pushes: (seq, text).
fn user_msgs(bodies: &[Body]) -> Vec<(u64, String)> {
    bodies
        .iter()
        .filter_map(|b| match b {
            Body::UserMessage(m) => Some((m.seq, text(&m.message))),
            _ => None,
        })
        .collect()
}

/// The channel pushes: (channel number, seq, text).
fn channel_msgs(bodies: &[Body]) -> Vec<(u32, u64, String)> {
    bodies
        .iter()
        .filter_map(|b| match b {
            Body::ChannelMessage(m) => Some((m.channel, m.seq, text(&m.message))),
            _ => None,
        })
        .collect()
}

/// The channel number a push is about, for every channel push kind.
fn push_channel(b: &Body) -> Option<u32> {
    match b {
        Body::ChannelMessage(m) => Some(m.channel),
        Body::Membership(m) => Some(m.channel),
        Body::UserAttributesChanged(m) => Some(m.channel),
        Body::ChannelAttributesChanged(m) => Some(m.channel),
        Body::UserCountChanged(m) => Some(m.channel),
        _ => None,
    }
}

fn server_pings(bodies: &[Body]) -> usize {
    bodies.iter().filter(|b| matches!(b, Body::Ping(_))).count()
}

fn last_close(bodies: &[Body]) -> Option<u32> {
    match bodies.last() {
        Some(Body::Close(c)) => Some(c.code),
        _ => None,
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

// ---------------------------------------------------------------- error codes

#[test]
fn a_login_with_another_protocol_version_gets_2010_then_close_2010() {
    for version in [1, 0, 3, u32::MAX] {
        let mut n = Net::demo();
        let c = n.accept();
        let rid = n.send(
            c,
            Body::Login(wire::LoginRequest {
                protocol_version: version,
                ..login_req(1)
            }),
        );
        let frames = n.frames(c);
        assert_eq!(frames.len(), 2, "version {version}: {frames:?}");
        assert_eq!(frames[0].request_id, rid);
        assert!(
            matches!(&frames[0].body, Some(Body::Error(e)) if e.code == 2010),
            "version {version}: {frames:?}"
        );
        assert!(
            matches!(&frames[1].body, Some(Body::Close(x)) if x.code == 2010),
            "version {version}: {frames:?}"
        );
        assert_eq!(n.closed, vec![(c, CloseReason::UnsupportedVersion)]);
        assert_eq!(n.s.instance_count(), 0);
    }
}

#[test]
fn a_second_login_on_a_logged_in_link_gets_2011_and_keeps_the_first() {
    let mut n = Net::demo();
    let (c, r) = n.login(1);
    let seconds = [
        login_req(1),
        login_req(2),
        resume_req(1, r.instance_id, r.p2p_epoch, 0, vec![]),
    ];
    for second in seconds {
        assert_eq!(code(n.login_with(c, second.clone())), 2011, "{second:?}");
    }
    assert!(n.closed.is_empty(), "the link stays open");
    assert_eq!(n.s.instance_count(), 1);
    match n.req(c, Body::GetInstanceInfo(wire::Empty {})) {
        Body::InstanceInfo(i) => assert_eq!((i.uid, i.instance_id), (1, r.instance_id)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_link_may_log_in_again_after_a_refused_login_or_a_logout() {
    for before in ["uid 0 refused", "unknown appid refused", "logged out"] {
        let mut n = Net::demo();
        let c = n.accept();
        match before {
            "uid 0 refused" => assert_eq!(code(n.login_with(c, login_req(0))), 2001),
            "unknown appid refused" => {
                let req = wire::LoginRequest {
                    appid: 99,
                    ..login_req(7)
                };
                assert_eq!(code(n.login_with(c, req)), 2018);
            }
            _ => {
                login_reply(n.login_with(c, login_req(6)));
                n.ok(c, Body::Logout(wire::Empty {}));
            }
        }
        let r = login_reply(n.login_with(c, login_req(7)));
        match n.req(c, Body::GetInstanceInfo(wire::Empty {})) {
            Body::InstanceInfo(i) => {
                assert_eq!((i.uid, i.instance_id), (7, r.instance_id), "{before}")
            }
            other => panic!("{before}: {other:?}"),
        }
        // Logged in now: another login is the 2011 refusal.
        assert_eq!(code(n.login_with(c, login_req(7))), 2011, "{before}");
        assert!(n.closed.is_empty(), "{before}");
    }
}

#[test]
fn a_login_past_max_instances_per_uid_gets_2012() {
    for max in [64, 3] {
        let mut n = Net::new(ServerConfig {
            max_instances_per_uid: max,
            ..ServerConfig::demo()
        });
        for _ in 0..max {
            n.login(5);
        }
        let c = n.accept();
        assert_eq!(code(n.login_with(c, login_req(5))), 2012, "max {max}");
        assert_eq!(n.s.instance_count(), max);
        // Refused, not closed: the link can still log in another uid.
        assert!(n.closed.is_empty());
        login_reply(n.login_with(c, login_req(6)));
    }
}

#[test]
fn a_message_id_reused_for_another_destination_gets_2013() {
    let id = 77;
    let cases = [
        (
            "another receiver",
            to_user_id(2, "a", false, id),
            to_user_id(3, "b", false, id),
        ),
        (
            "another channel",
            to_channel_id("x", "a", false, id),
            to_channel_id("y", "b", false, id),
        ),
        (
            "P2P, then a channel",
            to_user_id(2, "a", false, id),
            to_channel_id("x", "b", false, id),
        ),
        (
            "a channel, then P2P",
            to_channel_id("x", "a", false, id),
            to_user_id(2, "b", false, id),
        ),
    ];
    for (case, first, second) in cases {
        let mut n = Net::demo();
        let (a, _) = n.login(1);
        let (b, _) = n.login(2);
        let (c, _) = n.login(3);
        for (conn, ch) in [(a, "x"), (a, "y"), (b, "x"), (c, "y")] {
            n.ok_join(conn, ch);
        }
        n.advance(secs(1));
        n.sent(a, first);
        n.clear(&[a, b, c]);
        assert_eq!(n.err(a, second), 2013, "{case}");
        for conn in [a, b, c] {
            assert!(n.frames(conn).is_empty(), "{case}: nothing delivered");
        }
    }
}

#[test]
fn message_ids_are_per_sender_uid() {
    let mut n = Net::demo();
    let (a, _) = n.login(1);
    let (b, _) = n.login(2);
    let (c, _) = n.login(3);
    let first = n.sent(a, to_user_id(3, "from 1", false, 500));
    let second = n.sent(b, to_user_id(3, "from 2", false, 500));
    assert_eq!((first.seq, second.seq), (1, 2));
    assert_eq!(
        user_msgs(&n.bodies(c)),
        vec![(1, "from 1".into()), (2, "from 2".into())]
    );
}

#[test]
fn a_send_with_message_id_0_gets_2001() {
    let cases = [
        ("reliable P2P", to_user_id(2, "m", false, 0)),
        ("unreliable P2P", to_user_id(2, "m", true, 0)),
        ("reliable channel", to_channel_id("x", "m", false, 0)),
        ("unreliable channel", to_channel_id("x", "m", true, 0)),
    ];
    for (case, send) in cases {
        let mut n = Net::demo();
        let (a, _) = n.login(1);
        let (b, _) = n.login(2);
        n.ok_join(a, "x");
        n.ok_join(b, "x");
        n.advance(secs(1));
        n.clear(&[a, b]);
        assert_eq!(n.err(a, send), 2001, "{case}");
        assert!(n.frames(a).is_empty() && n.frames(b).is_empty(), "{case}");
        // Nothing was numbered: the next reliable send is the first.
        assert_eq!(n.sent(a, to_user(2, "next")).seq, 1, "{case}");
    }
}

#[test]
fn a_request_before_login_gets_1009_and_the_link_closes() {
    let requests = [
        Body::Logout(wire::Empty {}),
        Body::GetInstanceInfo(wire::Empty {}),
        to_user(2, "m"),
        to_channel("x", "m"),
        join("x"),
        leave("x"),
        Body::QueryOnline(wire::QueryOnlineRequest { uids: vec![1] }),
        Body::Fetch(wire::FetchRequest {
            channel: None,
            after_seq: 0,
        }),
        Body::RefreshToken(wire::RefreshTokenRequest { token: "t".into() }),
    ];
    let mut n = Net::demo();
    for r in requests {
        let what = format!("{r:?}");
        let c = n.accept();
        assert_eq!(n.err(c, r), 1009, "{what}");
        let close = n.frames(c);
        assert!(
            matches!(close.as_slice(), [Frame { body: Some(Body::Close(x)), .. }] if x.code == 1009),
            "{what}: {close:?}"
        );
        assert!(n.closed.iter().any(|(x, _)| *x == c), "{what}");
    }
    // Ping is answered, Ack ignored; then a login works.
    n.closed.clear();
    let c = n.accept();
    assert_eq!(
        n.req(c, Body::Ping(wire::Ping { nonce: 5 })),
        Body::Pong(wire::Pong { nonce: 5 })
    );
    n.ack(c, 3);
    assert!(n.frames(c).is_empty());
    assert!(n.closed.is_empty());
    login_reply(n.login_with(c, login_req(1)));
}

// ---------------------------------------------------------------- close codes and heartbeat

#[test]
fn a_link_not_logged_in_within_the_login_timeout_gets_close_1006() {
    let mut n = Net::demo();
    let silent = n.accept();
    let refused = n.accept();
    assert_eq!(code(n.login_with(refused, login_req(0))), 2001);
    let (logged, _) = n.login(1);
    let timeout = n.s.config().login_timeout;
    assert!(timeout < n.s.config().idle_timeout / 2, "before any ping");
    n.advance(timeout - ms(1));
    assert!(n.closed.is_empty());
    n.advance(ms(1));
    for c in [silent, refused] {
        assert_eq!(n.closes_of(c), vec![CloseReason::LoginTimeout]);
        assert_eq!(last_close(&n.bodies(c)), Some(1006));
    }
    assert!(n.closes_of(logged).is_empty());
}

#[test]
fn a_silent_link_gets_one_server_ping_at_half_the_idle_timeout() {
    let mut n = Net::demo();
    let (c, _) = n.login(1);
    n.advance(ms(22_499));
    assert!(n.frames(c).is_empty());
    n.advance(ms(1));
    let frames = n.frames(c);
    assert!(
        matches!(
            &frames[..],
            [Frame {
                request_id: 0,
                body: Some(Body::Ping(_))
            }]
        ),
        "{frames:?}"
    );
    // Once per silence: nothing more until the idle timeout.
    for _ in 0..22 {
        n.advance(secs(1));
    }
    n.advance(ms(499));
    assert!(n.frames(c).is_empty());
    assert!(n.closed.is_empty());
}

#[test]
fn any_frame_from_the_client_restarts_the_heartbeat() {
    let frames = ["pong", "ping", "request", "ack"];
    for what in frames {
        let mut n = Net::demo();
        let (c, _) = n.login(1);
        n.advance(ms(22_500));
        let nonce = match n.bodies(c).as_slice() {
            [Body::Ping(p)] => p.nonce,
            other => panic!("{what}: {other:?}"),
        };
        n.advance(ms(7_500)); // t = 30 s
        match what {
            "pong" => n.notify(c, Body::Pong(wire::Pong { nonce })),
            "ping" => {
                n.send(c, Body::Ping(wire::Ping { nonce: 1 }));
            }
            "request" => {
                n.send(c, Body::GetInstanceInfo(wire::Empty {}));
            }
            _ => n.ack(c, 0),
        }
        n.frames(c);
        // Silent again from 30 s: no close at 45 s, the next ping at 52.5 s.
        n.advance(ms(22_499));
        assert!(n.frames(c).is_empty(), "{what}");
        assert!(n.closed.is_empty(), "{what}");
        n.advance(ms(1));
        assert_eq!(server_pings(&n.bodies(c)), 1, "{what}");
        // And the close at 75 s.
        n.advance(ms(22_499));
        assert!(n.closed.is_empty(), "{what}");
        n.advance(ms(1));
        assert_eq!(n.closes_of(c), vec![CloseReason::IdleTimeout], "{what}");
    }
}

#[test]
fn a_link_silent_for_the_idle_timeout_gets_close_1005() {
    let mut n = Net::demo();
    let (c, _) = n.login(1);
    n.advance(ms(44_999));
    assert!(n.closed.is_empty());
    n.advance(ms(1));
    assert_eq!(n.closes_of(c), vec![CloseReason::IdleTimeout]);
    let bodies = n.bodies(c);
    assert_eq!(server_pings(&bodies), 1, "{bodies:?}");
    assert!(matches!(bodies.first(), Some(Body::Ping(_))));
    assert_eq!(last_close(&bodies), Some(1005));
    // A lost link: the instance waits for a resume.
    assert_eq!(n.s.instance_count(), 1);
}

#[test]
fn a_slow_consumer_gets_close_4005() {
    let mut n = Net::new(ServerConfig {
        max_queued_bytes: 4000,
        rate_limit_sends: 10_000,
        ..ServerConfig::demo()
    });
    let (a, _) = n.login(1);
    let (b, _) = n.login(2);
    n.held.insert(b);
    let mut sent = 0;
    while n.closes_of(b).is_empty() {
        n.sent(a, to_user(2, "some padding to fill the queue quickly"));
        sent += 1;
        assert!(sent < 1000, "never closed");
    }
    assert_eq!(n.closes_of(b), vec![CloseReason::SlowConsumer]);
    n.held.remove(&b);
    n.drain(b);
    assert!(matches!(
        &n.bodies(b)[..],
        [Body::Close(c)] if c.code == 4005 && c.reason == "slow consumer"
    ));
}

#[test]
fn shutdown_closes_every_open_link_with_4006() {
    let mut n = Net::demo();
    let (a, _) = n.login(1);
    let (b, _) = n.login(2);
    let anonymous = n.accept();
    let (gone, _) = n.login(3);
    n.notify(
        gone,
        Body::Close(wire::Close {
            code: 0,
            reason: "bye".into(),
        }),
    );
    n.sent(a, to_user(2, "queued before the shutdown"));
    let instances = n.s.instance_count();
    n.s.shutdown(n.now);
    n.pump();
    for c in [a, b, anonymous] {
        assert_eq!(n.closes_of(c), vec![CloseReason::Shutdown], "{c}");
        assert_eq!(last_close(&n.bodies(c)), Some(4006), "{c}");
    }
    assert_eq!(n.closes_of(gone), vec![CloseReason::ClosedByPeer]);
    assert_eq!(n.s.connection_count(), 0);
    // Lost links: the instances keep their grace period.
    assert_eq!(n.s.instance_count(), instances);
}

#[test]
fn a_resumed_login_on_a_new_link_closes_the_open_old_one_with_4007() {
    let mut n = Net::demo();
    let (a, _) = n.login(1);
    let (old, r) = n.login(2);
    let (new, x) = n.login_req_on_new(resume_req(2, r.instance_id, r.p2p_epoch, 0, vec![]));
    assert!(x.resumed && x.instance_id == r.instance_id);
    assert_eq!(n.closes_of(old), vec![CloseReason::Replaced]);
    assert!(matches!(&n.bodies(old)[..], [Body::Close(c)] if c.code == 4007));
    assert_eq!(n.s.instance_count(), 2);
    // The old link hears nothing more; pushes go to the new one.
    n.sent(a, to_user(2, "after"));
    n.send(old, Body::Ping(wire::Ping { nonce: 1 }));
    assert!(n.frames(old).is_empty());
    assert_eq!(user_msgs(&n.bodies(new)), vec![(1, "after".into())]);
}

// ---------------------------------------------------------------- login reply

#[test]
fn the_login_reply_carries_the_heartbeat_timings() {
    let custom = ServerConfig {
        ping_interval: secs(2),
        idle_timeout: secs(10),
        ..ServerConfig::demo()
    };
    // A ping interval longer than a third of the idle timeout is told as
    // that third: a client that follows it is never idle.
    let too_long = ServerConfig {
        ping_interval: secs(15),
        idle_timeout: secs(6),
        ..ServerConfig::demo()
    };
    for (config, ping, idle) in [
        (ServerConfig::demo(), 15_000, 45_000),
        (custom, 2_000, 10_000),
        (too_long, 2_000, 6_000),
    ] {
        let mut n = Net::new(config);
        let (_, r) = n.login(1);
        assert_eq!((r.ping_interval_ms, r.idle_timeout_ms), (ping, idle));
    }
}

#[test]
fn the_p2p_epoch_is_non_zero_and_the_same_for_every_login_of_the_uid() {
    let mut n = Net::demo();
    let (a, first) = n.login(2);
    assert_ne!(first.p2p_epoch, 0);
    let (b, second) = n.login(2);
    n.lose(b);
    n.advance(secs(5));
    let (_, resumed) = n.login_req_on_new(resume_req(
        2,
        second.instance_id,
        second.p2p_epoch,
        0,
        vec![],
    ));
    assert!(resumed.resumed);
    n.ok(a, Body::Logout(wire::Empty {}));
    let (_, after_logout) = n.login(2);
    for r in [&second, &resumed, &after_logout] {
        assert_eq!(r.p2p_epoch, first.p2p_epoch);
    }
    // Another uid has a stream of its own.
    let (_, other) = n.login(3);
    assert_ne!(other.p2p_epoch, 0);
    assert_ne!(other.p2p_epoch, first.p2p_epoch);
}

#[test]
fn the_p2p_epoch_survives_sweeps_while_the_uid_is_offline_with_an_empty_inbox() {
    let mut n = Net::new(ServerConfig {
        presence_grace: secs(1),
        inbox_max_age: secs(5),
        sweep_interval: secs(1),
        ..ServerConfig::demo()
    });
    let (a, _) = n.login(1);
    let (b, r) = n.login(2);
    n.sent(a, to_user(2, "m1"));
    assert_eq!(user_msgs(&n.bodies(b)), vec![(1, "m1".into())]);
    n.ack(b, 1);
    n.ok(b, Body::Logout(wire::Empty {}));
    n.ok(a, Body::Logout(wire::Empty {}));
    let inboxes = n.s.inbox_count();
    // A minute offline: the message ages out, sixty sweeps run.
    for _ in 0..60 {
        n.advance(secs(1));
    }
    assert_eq!(n.s.instance_count(), 0);
    assert_eq!(n.s.inbox_count(), inboxes);
    let (_, again) = n.login(2);
    assert_eq!(again.p2p_epoch, r.p2p_epoch);
    assert_eq!((again.p2p_seq, again.p2p_gap), (1, None));
    let (a2, _) = n.login(1);
    assert_eq!(n.sent(a2, to_user(2, "m2")).seq, 2);
}

// ---------------------------------------------------------------- per-stream epochs

#[test]
fn a_resume_with_the_p2p_epoch_replays_exactly_the_missed_messages() {
    for instance_alive in [true, false] {
        let mut n = Net::demo();
        let (a, _) = n.login(1);
        let (b, r) = n.login(2);
        for t in ["m1", "m2"] {
            n.sent(a, to_user(2, t));
        }
        assert_eq!(user_msgs(&n.bodies(b)).len(), 2);
        n.lose(b);
        if !instance_alive {
            n.advance(secs(31));
        }
        for t in ["m3", "m4", "m5"] {
            n.sent(a, to_user(2, t));
        }
        let c = n.accept();
        n.send(
            c,
            Body::Login(resume_req(2, r.instance_id, r.p2p_epoch, 2, vec![])),
        );
        let bodies = n.bodies(c);
        let x = login_reply(bodies[0].clone());
        assert_eq!(x.resumed, instance_alive);
        assert_eq!(x.p2p_epoch, r.p2p_epoch);
        assert_eq!((x.p2p_seq, x.p2p_gap), (2, None));
        assert_eq!(
            user_msgs(&bodies[1..]),
            vec![(3, "m3".into()), (4, "m4".into()), (5, "m5".into())]
        );
        assert_eq!(bodies.len(), 4, "nothing else: {bodies:?}");
    }
}

#[test]
fn a_resume_with_a_stale_p2p_epoch_gets_an_open_gap() {
    for seen in [0, 3] {
        let mut old = Net::demo();
        let (a, _) = old.login(1);
        let (b, r) = old.login(2);
        for t in ["m1", "m2", "m3"] {
            old.sent(a, to_user(2, t));
        }
        assert_eq!(user_msgs(&old.bodies(b)).len(), 3);
        // The server restarts; two messages wait for uid 2 in the new one.
        let mut n = Net::restarted(ServerConfig::demo());
        let (a, _) = n.login(1);
        for t in ["n1", "n2"] {
            n.sent(a, to_user(2, t));
        }
        let c = n.accept();
        n.send(
            c,
            Body::Login(resume_req(2, r.instance_id, r.p2p_epoch, seen, vec![])),
        );
        let bodies = n.bodies(c);
        let x = login_reply(bodies[0].clone());
        assert!(!x.resumed);
        assert_ne!(x.p2p_epoch, 0);
        assert_ne!(x.p2p_epoch, r.p2p_epoch, "cursor {seen}");
        assert_eq!(
            x.p2p_gap,
            Some(wire::SeqGap {
                from: seen + 1,
                to: 0
            }),
            "cursor {seen}"
        );
        // The new stream from the uid's acked point (nothing acked).
        assert_eq!(x.p2p_seq, 0);
        assert_eq!(
            user_msgs(&bodies[1..]),
            vec![(1, "n1".into()), (2, "n2".into())]
        );
    }
}

#[test]
fn a_login_without_a_p2p_cursor_gets_everything_no_instance_of_the_uid_acked() {
    for how in ["fresh", "resume with p2p_epoch 0"] {
        let mut n = Net::demo();
        let (a, _) = n.login(1);
        let (first, r) = n.login(2);
        for t in ["m1", "m2", "m3"] {
            n.sent(a, to_user(2, t));
        }
        assert_eq!(user_msgs(&n.bodies(first)).len(), 3);
        n.ack(first, 2);
        let req = match how {
            "fresh" => login_req(2),
            _ => resume_req(2, 0, 0, 3, vec![]),
        };
        let c = n.accept();
        n.send(c, Body::Login(req));
        let bodies = n.bodies(c);
        let x = login_reply(bodies[0].clone());
        assert!(!x.resumed);
        assert_eq!(x.p2p_epoch, r.p2p_epoch);
        assert_eq!((x.p2p_seq, x.p2p_gap), (2, None), "{how}");
        assert_eq!(user_msgs(&bodies[1..]), vec![(3, "m3".into())], "{how}");
    }
}

#[test]
fn a_rejoin_with_the_channel_epoch_replays_what_follows_resume_seq() {
    for how in ["after a leave", "after the grace period"] {
        let departed = how == "after the grace period";
        let mut n = Net::demo();
        let (a, _) = n.login(1);
        let (mut b, _) = n.login(2);
        let room = n.ok_join(a, "room");
        n.ok_join(b, "room");
        for t in ["c1", "c2"] {
            n.sent(a, to_channel("room", t));
        }
        assert_eq!(channel_msgs(&n.bodies(b)).len(), 2);
        if how == "after a leave" {
            n.ok(b, leave("room"));
        } else {
            n.lose(b);
            n.advance(secs(31));
            b = n.login(2).0;
        }
        for t in ["c3", "c4", "c5"] {
            n.sent(a, to_channel("room", t));
        }
        n.send(b, rejoin("room", room.epoch, 2));
        let bodies = n.bodies(b);
        let j = join_reply(bodies[0].clone());
        assert!(j.member_offline, "{how}");
        if !departed {
            // Only a membership lost with the link replays: a uid that
            // left is a newcomer, told what it will not get.
            let gap = Some(wire::SeqGap { from: 3, to: 5 });
            assert_eq!((j.epoch, j.seq, j.gap), (room.epoch, 5, gap), "{how}");
            assert_eq!(channel_msgs(&bodies[1..]), vec![], "{how}");
            continue;
        }
        assert_eq!((j.epoch, j.seq, j.gap), (room.epoch, 2, None), "{how}");
        assert_eq!(
            channel_msgs(&bodies[1..]),
            vec![
                (j.channel, 3, "c3".into()),
                (j.channel, 4, "c4".into()),
                (j.channel, 5, "c5".into())
            ],
            "{how}"
        );
    }
}

#[test]
fn a_rejoin_after_a_restart_gets_an_open_gap_and_no_replay() {
    for seen in [0, 2] {
        let mut old = Net::demo();
        let (a, _) = old.login(1);
        let (b, _) = old.login(2);
        let before = old.ok_join(a, "room");
        old.ok_join(b, "room");
        for t in ["c1", "c2"] {
            old.sent(a, to_channel("room", t));
        }
        // The server restarts; the channel is made again and has 3 messages.
        let mut n = Net::restarted(ServerConfig::demo());
        let (a, _) = n.login(1);
        n.ok_join(a, "room");
        for t in ["n1", "n2", "n3"] {
            n.sent(a, to_channel("room", t));
        }
        let (b, _) = n.login(2);
        n.send(b, rejoin("room", before.epoch, seen));
        let bodies = n.bodies(b);
        let j = join_reply(bodies[0].clone());
        assert_eq!(
            j.gap,
            Some(wire::SeqGap {
                from: seen + 1,
                to: 0
            }),
            "cursor {seen}"
        );
        assert_eq!(j.seq, 3, "the new epoch's head");
        assert_ne!(j.epoch, before.epoch);
        assert_ne!(j.epoch, 0);
        assert!(channel_msgs(&bodies).is_empty(), "no replay: {bodies:?}");
        // Live pushes follow the head.
        n.sent(a, to_channel("room", "n4"));
        assert_eq!(
            channel_msgs(&n.bodies(b)),
            vec![(j.channel, 4, "n4".into())]
        );
    }
}

#[test]
fn a_channel_forgotten_and_made_again_gets_a_new_epoch_and_numbers_from_1() {
    let mut n = Net::new(ServerConfig {
        channel_retention_age: secs(10),
        sweep_interval: secs(1),
        ..ServerConfig::demo()
    });
    let (a, _) = n.login(1);
    let first = n.ok_join(a, "room");
    for t in ["c1", "c2"] {
        n.sent(a, to_channel("room", t));
    }
    n.ok(a, leave("room"));
    // Empty, but its messages are retained for a while.
    n.advance(secs(5));
    assert_eq!(n.s.channel_count(), 1);
    for _ in 0..6 {
        n.advance(secs(1));
    }
    assert_eq!(n.s.channel_count(), 0, "aged out and swept");
    let again = n.ok_join(a, "room");
    assert_ne!(again.epoch, 0);
    assert_ne!(again.epoch, first.epoch);
    assert_eq!((again.seq, again.gap), (0, None));
    assert_eq!(n.sent(a, to_channel("room", "new")).seq, 1);
    // A cursor in the old epoch: an open gap, no replay.
    let (b, _) = n.login(2);
    n.send(b, rejoin("room", first.epoch, 2));
    let bodies = n.bodies(b);
    let j = join_reply(bodies[0].clone());
    assert_eq!(j.gap, Some(wire::SeqGap { from: 3, to: 0 }));
    assert_eq!((j.seq, j.epoch), (1, again.epoch));
    assert!(channel_msgs(&bodies).is_empty());
}

#[test]
fn an_inbox_forgotten_under_max_inbox_users_gets_a_new_epoch() {
    let mut n = Net::new(ServerConfig {
        max_inbox_users: 10,
        rate_limit_sends: 10_000,
        ..ServerConfig::demo()
    });
    let (a, _) = n.login(1);
    let (b, r) = n.login(2);
    n.sent(a, to_user(2, "m1"));
    n.ack(b, 1);
    n.ok(b, Body::Logout(wire::Empty {}));
    // Offline uid 2's inbox is evicted by the inboxes of many others.
    for uid in 1000..1030 {
        n.sent(a, to_user(uid, "x"));
        n.advance(ms(1));
    }
    assert!(n.s.inbox_count() <= 11);
    n.sent(a, to_user(2, "m2"));
    let c = n.accept();
    n.send(
        c,
        Body::Login(resume_req(2, r.instance_id, r.p2p_epoch, 1, vec![])),
    );
    let bodies = n.bodies(c);
    let x = login_reply(bodies[0].clone());
    assert_ne!(x.p2p_epoch, r.p2p_epoch);
    assert_eq!(x.p2p_gap, Some(wire::SeqGap { from: 2, to: 0 }));
    assert_eq!(user_msgs(&bodies[1..]), vec![(1, "m2".into())]);
}

// ---------------------------------------------------------------- resume without duplicates

/// uid 2 (`b`) in channels X and Y loses its link while messages go to X,
/// Y and to it by P2P, then resumes on `b2` listing X (cursor 1) only.
/// uid 1 (`a`) is in X and Y, uid 3 (`c`) in Y only, uid 4 (`d`) in X only.
/// `b2`'s frames are left queued in `n`.
struct ResumeScene {
    n: Net,
    a: ConnId,
    c: ConnId,
    d: ConnId,
    b2: ConnId,
    instance_id: u64,
    x: wire::JoinReply,
    y: wire::JoinReply,
}

fn resume_scene() -> ResumeScene {
    let mut n = Net::demo();
    let (a, _) = n.login(1);
    let (b, r) = n.login(2);
    let (c, _) = n.login(3);
    let (d, _) = n.login(4);
    for (conn, ch) in [(a, "X"), (a, "Y"), (c, "Y"), (d, "X")] {
        n.ok_join(conn, ch);
    }
    let x = n.ok_join(b, "X");
    let y = n.ok_join(b, "Y");
    assert_ne!(x.channel, y.channel);
    n.advance(secs(1));
    n.sent(a, to_channel("X", "x1"));
    n.sent(a, to_channel("Y", "y1"));
    assert_eq!(channel_msgs(&n.bodies(b)).len(), 2);
    n.lose(b);
    n.advance(secs(1));
    for body in [
        to_channel("X", "x2"),
        to_channel("Y", "y2"),
        to_user(2, "p1"),
        to_channel("X", "x3"),
        to_user(2, "p2"),
    ] {
        n.sent(a, body);
    }
    n.clear(&[a, c, d]);
    let b2 = n.accept();
    n.send(
        b2,
        Body::Login(resume_req(
            2,
            r.instance_id,
            r.p2p_epoch,
            0,
            vec![cursor("X", x.epoch, 1)],
        )),
    );
    ResumeScene {
        n,
        a,
        c,
        d,
        b2,
        instance_id: r.instance_id,
        x,
        y,
    }
}

#[test]
fn a_resume_keeps_the_listed_channel_and_replays_it_after_the_p2p_replay() {
    let ResumeScene {
        mut n,
        b2,
        instance_id,
        x,
        ..
    } = resume_scene();
    let bodies = n.bodies(b2);
    let r = login_reply(bodies[0].clone());
    assert!(r.resumed);
    assert_eq!(r.instance_id, instance_id);
    let kept = wire::ResumedChannel {
        channel: Some(key("X")),
        state: Some(wire::JoinReply {
            channel: x.channel,
            seq: 1,
            gap: None,
            member_offline: false,
            replay_truncated_at: 0,
            epoch: x.epoch,
        }),
    };
    assert_eq!(r.channels, vec![kept]);
    assert_eq!(r.p2p_seq, 0);
    // P2P replay first, then X's: nothing else.
    let order: Vec<(Option<u32>, u64, String)> = bodies[1..]
        .iter()
        .map(|b| match b {
            Body::UserMessage(m) => (None, m.seq, text(&m.message)),
            Body::ChannelMessage(m) => (Some(m.channel), m.seq, text(&m.message)),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(
        order,
        vec![
            (None, 1, "p1".into()),
            (None, 2, "p2".into()),
            (Some(x.channel), 2, "x2".into()),
            (Some(x.channel), 3, "x3".into()),
        ]
    );
}

#[test]
fn a_channel_left_out_of_the_resume_is_left_and_pushes_nothing() {
    let ResumeScene {
        mut n,
        a,
        c,
        d,
        b2,
        x,
        y,
        ..
    } = resume_scene();
    let mut on_b2 = n.bodies(b2);
    // Live traffic right after the resume, and the notice window passes.
    n.sent(a, to_channel("Y", "y3"));
    n.sent(a, to_channel("X", "x4"));
    n.advance(secs(1));
    on_b2.extend(n.bodies(b2));
    assert!(
        !on_b2.iter().any(|b| push_channel(b) == Some(y.channel)),
        "a push for Y reached the resumed link: {on_b2:?}"
    );
    assert!(channel_msgs(&on_b2).contains(&(x.channel, 4, "x4".into())));
    // Y's members saw uid 2 leave; X's saw nothing of it.
    let on_c = n.bodies(c);
    assert!(
        on_c.iter()
            .any(|b| matches!(b, Body::Membership(m) if m.channel == y.channel && m.left == vec![2] && m.joined.is_empty())),
        "{on_c:?}"
    );
    assert!(on_c
        .iter()
        .any(|b| matches!(b, Body::UserCountChanged(u) if u.channel == y.channel && u.count == 2)));
    assert!(
        !n.bodies(d).iter().any(|b| matches!(b, Body::Membership(_))),
        "no notice in X"
    );
    match n.req(b2, Body::GetInstanceInfo(wire::Empty {})) {
        Body::InstanceInfo(i) => assert_eq!(i.channels, vec![key("X")]),
        other => panic!("{other:?}"),
    }
    assert_eq!(n.err(b2, to_channel("Y", "not a member")), 5101);
}

#[test]
fn no_sequenced_message_reaches_the_resumed_link_twice() {
    let ResumeScene {
        mut n, a, b2, x, ..
    } = resume_scene();
    // Live messages right after the resume, before the client drained
    // anything, and the client's own join of a channel it holds.
    n.sent(a, to_channel("X", "x4"));
    n.sent(a, to_user(2, "p3"));
    let member_join = join_reply(n.req(b2, join("X")));
    let member_rejoin = join_reply(n.req(b2, rejoin("X", x.epoch, 1)));
    n.sent(a, to_channel("X", "x5"));
    n.sent(a, to_user(2, "p4"));
    for j in [&member_join, &member_rejoin] {
        assert_eq!(
            (j.channel, j.epoch, j.seq, j.gap),
            (x.channel, x.epoch, 4, None)
        );
        assert!(!j.member_offline);
    }
    let bodies = n.bodies(b2);
    let p2p: Vec<u64> = user_msgs(&bodies).into_iter().map(|(s, _)| s).collect();
    let channel: Vec<(u32, u64)> = channel_msgs(&bodies)
        .into_iter()
        .map(|(c, s, _)| (c, s))
        .collect();
    assert_eq!(p2p, vec![1, 2, 3, 4], "{bodies:?}");
    assert_eq!(
        channel,
        vec![
            (x.channel, 2),
            (x.channel, 3),
            (x.channel, 4),
            (x.channel, 5)
        ],
        "{bodies:?}"
    );
}

#[test]
fn a_join_by_a_member_replies_the_head_and_replays_nothing() {
    let mut n = Net::demo();
    let (a, _) = n.login(1);
    let (b, _) = n.login(2);
    let room = n.ok_join(a, "room");
    n.ok_join(b, "room");
    for t in ["c1", "c2", "c3"] {
        n.sent(a, to_channel("room", t));
    }
    n.advance(secs(1));
    n.clear(&[b]);
    for again in [join("room"), rejoin("room", room.epoch, 0)] {
        let what = format!("{again:?}");
        n.send(b, again);
        let bodies = n.bodies(b);
        assert_eq!(bodies.len(), 1, "{what}: {bodies:?}");
        let j = join_reply(bodies[0].clone());
        assert_eq!(
            (j.channel, j.epoch, j.seq, j.gap),
            (room.channel, room.epoch, 3, None)
        );
        assert!(!j.member_offline, "{what}");
    }
}

#[test]
fn a_plain_join_replays_nothing_whatever_its_cursor() {
    let mut n = Net::demo();
    let (a, _) = n.login(1);
    let (b, _) = n.login(2);
    let room = n.ok_join(a, "room");
    for t in ["c1", "c2", "c3"] {
        n.sent(a, to_channel("room", t));
    }
    n.send(
        b,
        Body::Join(wire::JoinRequest {
            channel: Some(key("room")),
            resume_seq: 1,
            epoch: room.epoch,
            rejoin: false,
            ..Default::default()
        }),
    );
    let bodies = n.bodies(b);
    assert_eq!(bodies.len(), 1, "{bodies:?}");
    let j = join_reply(bodies[0].clone());
    assert_eq!((j.seq, j.gap, j.epoch), (3, None, room.epoch));
}

// ---------------------------------------------------------------- exactly-once sends

#[derive(Copy, Clone, Debug)]
enum Kind {
    P2p,
    Channel,
}

fn send_of(kind: Kind, text: &str, id: u64) -> Body {
    match kind {
        Kind::P2p => to_user_id(2, text, false, id),
        Kind::Channel => to_channel_id("room", text, false, id),
    }
}

/// uid 1 (`a`) and uid 2 (`b`) both in "room", queues drained.
fn two_in_a_room(config: ServerConfig) -> (Net, ConnId, ConnId, wire::LoginReply, wire::JoinReply) {
    let mut n = Net::new(config);
    let (a, ra) = n.login(1);
    let (b, _) = n.login(2);
    let room = n.ok_join(a, "room");
    n.ok_join(b, "room");
    n.advance(secs(1));
    n.clear(&[a, b]);
    (n, a, b, ra, room)
}

/// How many pushes with `text` reached `c` (P2P or channel).
fn delivered(n: &mut Net, c: ConnId, text: &str) -> usize {
    let bodies = n.bodies(c);
    user_msgs(&bodies)
        .into_iter()
        .filter(|(_, t)| t == text)
        .count()
        + channel_msgs(&bodies)
            .into_iter()
            .filter(|(_, _, t)| t == text)
            .count()
}

#[test]
fn a_repeated_send_gets_the_first_reply_and_is_delivered_once() {
    for kind in [Kind::P2p, Kind::Channel] {
        for after_resume in [false, true] {
            let case = format!("{kind:?}, after a resume: {after_resume}");
            let (mut n, a, b, ra, room) = two_in_a_room(ServerConfig::demo());
            let id = message_id();
            let first = n.sent(a, send_of(kind, "once", id));
            // Later, so that a send processed anew would carry another time.
            n.advance(secs(2));
            let link = if after_resume {
                n.lose(a);
                let seen = match kind {
                    Kind::P2p => 0,
                    Kind::Channel => first.seq,
                };
                let held = vec![cursor("room", room.epoch, seen)];
                let (a2, r) =
                    n.login_req_on_new(resume_req(1, ra.instance_id, ra.p2p_epoch, 0, held));
                assert!(r.resumed, "{case}");
                a2
            } else {
                a
            };
            let again = n.sent(link, send_of(kind, "once", id));
            assert_eq!(again, first, "{case}");
            assert_eq!(delivered(&mut n, b, "once"), 1, "{case}");
            // Nothing was numbered for the repeat.
            let next = n.sent(link, send_of(kind, "next", message_id()));
            assert_eq!(next.seq, first.seq + 1, "{case}");
        }
    }
}

#[test]
fn a_repeated_channel_send_is_answered_after_the_sender_left_the_channel() {
    let (mut n, a, b, _, _) = two_in_a_room(ServerConfig::demo());
    let id = message_id();
    let first = n.sent(a, send_of(Kind::Channel, "once", id));
    n.ok(a, leave("room"));
    n.advance(secs(1));
    n.clear(&[b]);
    assert_eq!(n.sent(a, send_of(Kind::Channel, "once", id)), first);
    assert_eq!(delivered(&mut n, b, "once"), 0);
    // A new send is refused: a is not a member any more.
    assert_eq!(n.err(a, send_of(Kind::Channel, "new", message_id())), 5101);
}

#[test]
fn a_message_id_is_forgotten_after_the_dedupe_window() {
    for kind in [Kind::P2p, Kind::Channel] {
        let config = ServerConfig {
            send_dedupe_window: secs(10),
            ..ServerConfig::demo()
        };
        let (mut n, a, b, _, _) = two_in_a_room(config);
        let id = message_id();
        let first = n.sent(a, send_of(kind, "m", id));
        assert_eq!(delivered(&mut n, b, "m"), 1, "{kind:?}");
        n.advance(ms(9_999));
        assert_eq!(n.sent(a, send_of(kind, "m", id)), first, "{kind:?}");
        assert_eq!(delivered(&mut n, b, "m"), 0, "{kind:?}");
        n.advance(ms(1));
        let later = n.sent(a, send_of(kind, "m", id));
        assert_eq!(later.seq, first.seq + 1, "{kind:?}: a new message");
        assert_ne!(later.timestamp_ms, first.timestamp_ms);
        assert_eq!(delivered(&mut n, b, "m"), 1, "{kind:?}");
    }
}

#[test]
fn only_the_last_send_dedupe_max_ids_of_a_uid_are_remembered() {
    let config = ServerConfig {
        send_dedupe_max: 3,
        ..ServerConfig::demo()
    };
    let (mut n, a, b, _, _) = two_in_a_room(config);
    let ids: Vec<u64> = (0..4).map(|_| message_id()).collect();
    let replies: Vec<wire::SendReply> = ids
        .iter()
        .map(|id| n.sent(a, send_of(Kind::P2p, "m", *id)))
        .collect();
    n.clear(&[b]);
    // The three latest are answered from memory.
    for (id, first) in ids.iter().zip(&replies).skip(1) {
        assert_eq!(&n.sent(a, send_of(Kind::P2p, "m", *id)), first);
    }
    assert_eq!(delivered(&mut n, b, "m"), 0);
    // The oldest was forgotten: its repeat is a new message.
    let again = n.sent(a, send_of(Kind::P2p, "m", ids[0]));
    assert_eq!(again.seq, 5);
    assert_eq!(delivered(&mut n, b, "m"), 1);
}

#[test]
fn a_failed_send_is_not_remembered() {
    for case in [
        "5101 not in the channel",
        "4003 rate limit",
        "2007 too large",
    ] {
        let config = ServerConfig {
            rate_limit_sends: 1,
            ..ServerConfig::demo()
        };
        let mut n = Net::new(config);
        let (a, _) = n.login(1);
        let (b, _) = n.login(2);
        n.ok_join(b, "room");
        let id = message_id();
        let (failing, expected, retry) = match case {
            "5101 not in the channel" => (
                send_of(Kind::Channel, "m", id),
                5101,
                send_of(Kind::Channel, "m", id),
            ),
            "4003 rate limit" => {
                n.sent(a, to_user(3, "uses the one send allowed"));
                (
                    send_of(Kind::P2p, "m", id),
                    4003,
                    send_of(Kind::P2p, "m", id),
                )
            }
            _ => {
                let big = Body::SendToUser(wire::SendToUserRequest {
                    receiver: 2,
                    message: Some(wire::ChatMessage {
                        content: Bytes::from(vec![0u8; 40_000]),
                        ..chat("")
                    }),
                    unreliable: false,
                    message_id: id,
                });
                (big, 2007, send_of(Kind::P2p, "m", id))
            }
        };
        assert_eq!(n.err(a, failing), expected, "{case}");
        n.advance(secs(3));
        if case.starts_with("5101") {
            n.ok_join(a, "room");
            n.advance(secs(1));
        }
        n.clear(&[a, b]);
        let r = n.sent(a, retry);
        assert_eq!(r.seq, 1, "{case}");
        assert_eq!(delivered(&mut n, b, "m"), 1, "{case}");
    }
}

// ---------------------------------------------------------------- replay budget

/// After a login that resumed nothing (the instance outlived its grace), the
/// Session rejoins every channel it held in one burst. Each rejoin replay is
/// cut to what is left of the queue, but "at least one message" even when
/// nothing is left: past a few busy channels the burst overflows the queue
/// and the server closes the link as a slow consumer for its own replays
/// (what `a_burst_of_rejoin_replays_fits_the_connection_queue` in
/// server_frames.rs guards against, there with three channels).
#[test]
fn a_burst_of_rejoins_after_a_fresh_login_never_closes_the_link_as_a_slow_consumer() {
    let mut config = ServerConfig {
        rate_limit_sends: 1_000_000,
        max_queued_bytes: 1024 * 1024,
        ..ServerConfig::demo()
    };
    config.rate_limits.sends = RateLimit::new(1_000_000, secs(3));
    config.rate_limits.memberships = RateLimit::new(1_000, secs(3));
    let mut n = Net::new(config);
    let (a, _) = n.login(1);
    let (b, _) = n.login(2);
    let channels: Vec<String> = (0..10).map(|i| format!("c{i}")).collect();
    let mut epochs = Vec::new();
    for ch in &channels {
        n.ok_join(a, ch);
        epochs.push(n.ok_join(b, ch).epoch);
    }
    // b's link is lost past the grace period; 1.2 MB goes to each channel.
    n.lose(b);
    n.advance(secs(31));
    let text = "x".repeat(30_000);
    for ch in &channels {
        for _ in 0..40 {
            n.sent(a, to_channel(ch, &text));
        }
    }
    n.clear(&[a]);
    // A fresh login and ten rejoins in one read, before the writer runs.
    let c = n.accept();
    n.held.insert(c);
    let mut frames = vec![Body::Login(login_req(2))];
    frames.extend(
        channels
            .iter()
            .zip(&epochs)
            .map(|(ch, e)| rejoin(ch, *e, 0)),
    );
    for body in frames {
        n.rid += 1;
        let f = encode_frame(&Frame {
            request_id: n.rid,
            body: Some(body),
        });
        n.s.handle_frame(n.now, c, f);
    }
    n.pump();
    assert_eq!(n.closes_of(c), vec![], "closed by its own replays");
    n.held.remove(&c);
    n.drain(c);
    let joins = n
        .bodies(c)
        .iter()
        .filter(|b| matches!(b, Body::JoinReply(_)))
        .count();
    assert_eq!(joins, channels.len());
}
