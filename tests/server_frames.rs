//! The server state machine driven in memory with encoded frames and a fake
//! clock: every operation, limit and timing of the protocol.
#![cfg(feature = "server")]

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hummer_channel::server::{
    mint_token, AppConfig, CloseReason, ConnId, Server, ServerConfig, DEMO_APPID, DEMO_SECRET,
};
use hummer_channel::wire::{self, decode_frame, encode_frame, AttributeOp, Body, Frame};

const T0_UNIX_MS: u64 = 1_700_000_000_000;
const MAX: usize = 64 * 1024;

/// Message ids for sends: non-zero and never used twice in this test binary
/// (so unique per sender uid, as the protocol asks), whatever the test.
static NEXT_MESSAGE_ID: AtomicU64 = AtomicU64::new(1);

fn message_id() -> u64 {
    NEXT_MESSAGE_ID.fetch_add(1, Ordering::Relaxed)
}

/// A fake network around one Server: sends requests, collects every frame
/// queued for every connection (raw and decoded) and every close.
struct Net {
    s: Server,
    now: Instant,
    rid: u64,
    out: HashMap<ConnId, VecDeque<(Bytes, Frame)>>,
    held: HashSet<ConnId>,
    closed: Vec<(ConnId, CloseReason)>,
}

impl Net {
    fn new(config: ServerConfig) -> Net {
        let now = Instant::now();
        Net {
            s: Server::new(config, now, T0_UNIX_MS),
            now,
            rid: 0,
            out: HashMap::new(),
            held: HashSet::new(),
            closed: Vec::new(),
        }
    }

    fn demo() -> Net {
        Net::new(ServerConfig::demo())
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
            let f = decode_frame(b.clone(), MAX).expect("server frames decode");
            self.out.entry(c).or_default().push_back((b, f));
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
            .position(|(_, f)| f.request_id == rid)
            .expect("a reply with the request id");
        q.remove(pos).unwrap().1.body.unwrap()
    }

    fn ok(&mut self, c: ConnId, body: Body) {
        match self.req(c, body) {
            Body::Ok(_) => {}
            other => panic!("expected ok, got {other:?}"),
        }
    }

    fn err(&mut self, c: ConnId, body: Body) -> u32 {
        match self.req(c, body) {
            Body::Error(e) => e.code,
            other => panic!("expected an error, got {other:?}"),
        }
    }

    /// Every frame queued for `c` since the last call, in order.
    fn frames(&mut self, c: ConnId) -> Vec<Frame> {
        self.out
            .remove(&c)
            .unwrap_or_default()
            .into_iter()
            .map(|(_, f)| f)
            .collect()
    }

    fn bodies(&mut self, c: ConnId) -> Vec<Body> {
        self.frames(c).into_iter().filter_map(|f| f.body).collect()
    }

    fn login_with(&mut self, c: ConnId, req: wire::LoginRequest) -> Body {
        self.req(c, Body::Login(req))
    }

    /// A fresh anonymous login of `uid` on a new connection.
    fn login(&mut self, uid: u64) -> (ConnId, wire::LoginReply) {
        let c = self.accept();
        match self.login_with(c, login_req(uid)) {
            Body::LoginReply(r) => (c, r),
            other => panic!("login failed: {other:?}"),
        }
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

fn key(id: &str) -> wire::ChannelKey {
    wire::ChannelKey {
        region: wire::Region::Cn as i32,
        channel_id: id.into(),
    }
}

fn join(id: &str) -> Body {
    Body::Join(wire::JoinRequest {
        channel: Some(key(id)),
        ..Default::default()
    })
}

/// A rejoin of a channel held before the link was lost: its cursor
/// `resume_seq` in the stream of `epoch`.
fn rejoin(id: &str, epoch: u64, resume_seq: u64) -> Body {
    Body::Join(wire::JoinRequest {
        channel: Some(key(id)),
        resume_seq,
        rejoin: true,
        epoch,
        ..Default::default()
    })
}

/// Where a client stands in a channel, for `Resume.channels`.
fn cursor(id: &str, epoch: u64, seq: u64) -> wire::ChannelCursor {
    wire::ChannelCursor {
        channel: Some(key(id)),
        epoch,
        seq,
    }
}

/// A resumed login of `uid` taking over `instance_id`.
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

fn to_user(receiver: u64, text: &str, unreliable: bool) -> Body {
    Body::SendToUser(wire::SendToUserRequest {
        receiver,
        message: Some(chat(text)),
        unreliable,
        message_id: message_id(),
    })
}

fn to_channel(id: &str, text: &str, unreliable: bool) -> Body {
    Body::SendToChannel(wire::SendToChannelRequest {
        channel: Some(key(id)),
        message: Some(chat(text)),
        unreliable,
        message_id: message_id(),
    })
}

fn attrs(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn write(
    channel_scope: bool,
    id: &str,
    op: AttributeOp,
    a: BTreeMap<String, String>,
    keys: &[&str],
    notify: bool,
) -> Body {
    let w = wire::AttributesWrite {
        channel: Some(key(id)),
        op: op as i32,
        attributes: a,
        keys: keys.iter().map(|k| k.to_string()).collect(),
        enable_notification: notify,
    };
    if channel_scope {
        Body::WriteChannelAttributes(w)
    } else {
        Body::WriteUserAttributes(w)
    }
}

fn user_msgs(bodies: &[Body]) -> Vec<(u64, String)> {
    bodies
        .iter()
        .filter_map(|b| match b {
            Body::UserMessage(m) => Some((
                m.seq,
                String::from_utf8(m.message.clone().unwrap().content.to_vec()).unwrap(),
            )),
            _ => None,
        })
        .collect()
}

fn send_reply(b: Body) -> wire::SendReply {
    match b {
        Body::SendReply(r) => r,
        other => panic!("expected SendReply, got {other:?}"),
    }
}

fn close_code(bodies: &[Body]) -> Option<u32> {
    bodies.iter().find_map(|b| match b {
        Body::Close(c) => Some(c.code),
        _ => None,
    })
}

// ---------------------------------------------------------------- login

#[test]
fn login_anonymous_and_with_token() {
    let mut n = Net::demo();
    let (_, r) = n.login(7);
    assert!(r.is_anonymous && !r.resumed);
    assert_ne!(r.instance_id, 0);
    assert_ne!(r.server_epoch, 0);
    assert_eq!(r.server_epoch, n.s.server_epoch());
    assert_eq!(r.server_time_ms, T0_UNIX_MS);
    assert_eq!(r.token_expires_at_ms, 0);

    n.advance(Duration::from_secs(2));
    let exp = T0_UNIX_MS / 1000 + 3600;
    let c = n.accept();
    let req = wire::LoginRequest {
        token: mint_token(DEMO_SECRET, DEMO_APPID, 8, exp),
        ..login_req(8)
    };
    match n.login_with(c, req) {
        Body::LoginReply(r) => {
            assert!(!r.is_anonymous);
            assert_eq!(r.token_expires_at_ms, exp * 1000);
            assert_eq!(r.server_time_ms, T0_UNIX_MS + 2000);
        }
        other => panic!("{other:?}"),
    }
}

/// App secrets of the 32 bytes a server requires.
const ONE: &str = "the-secret-of-app-one-32-bytes-long";
const OTHER: &str = "a-secret-of-nobody-at-all-32-bytes!";

#[test]
fn login_refusals_keep_the_connection_open() {
    let mut n = Net::new(ServerConfig {
        apps: vec![
            AppConfig::with_secret(1, ONE),
            AppConfig {
                appid: DEMO_APPID,
                secret: Some(DEMO_SECRET.into()),
                allow_appid_mode: true,
                kick_older_logins: false,
            },
        ],
        ..ServerConfig::default()
    });
    let now_s = T0_UNIX_MS / 1000;
    let c = n.accept();
    let with = |appid: u32, uid: u64, token: String| wire::LoginRequest {
        appid,
        token,
        ..login_req(uid)
    };
    let code = |b: Body| match b {
        Body::Error(e) => e.code,
        other => panic!("expected error, got {other:?}"),
    };
    // Bad signature, wrong uid, token of another appid.
    let r = n.login_with(c, with(1, 5, mint_token(OTHER, 1, 5, now_s + 60)));
    assert_eq!(code(r), 2002);
    let r = n.login_with(c, with(1, 5, mint_token(ONE, 1, 6, now_s + 60)));
    assert_eq!(code(r), 2002);
    let r = n.login_with(c, with(1, 5, mint_token(ONE, 2, 5, now_s + 60)));
    assert_eq!(code(r), 2002);
    let r = n.login_with(c, with(1, 5, "not.a.jwt".into()));
    assert_eq!(code(r), 2002);
    // Expired by the server's own clock (exp <= now).
    let r = n.login_with(c, with(1, 5, mint_token(ONE, 1, 5, now_s)));
    assert_eq!(code(r), 2003);
    // No appid mode for app 1.
    let r = n.login_with(c, with(1, 5, String::new()));
    assert_eq!(code(r), 2002);
    let r = n.login_with(c, with(99, 5, String::new()));
    assert_eq!(code(r), 2018);
    let r = n.login_with(c, login_req(0));
    assert_eq!(code(r), 2001);
    assert_eq!(n.s.connection_count(), 1);
    assert!(n.closed.is_empty());
    // Still usable: a good login now works, a second one is refused (2011).
    let r = n.login_with(c, with(1, 5, mint_token(ONE, 1, 5, now_s + 60)));
    assert!(matches!(r, Body::LoginReply(_)));
    assert_eq!(code(n.login_with(c, login_req(5))), 2011);
    assert!(n.closed.is_empty());
    // A request before login is no client's: 1009, and the link is closed.
    let d = n.accept();
    assert_eq!(n.err(d, Body::GetInstanceInfo(wire::Empty {})), 1009);
    assert!(n
        .closed
        .iter()
        .any(|(x, r)| *x == d && *r == CloseReason::NotLoggedIn));
    assert_eq!(n.s.connection_count(), 1);
}

#[test]
fn version_mismatch_is_refused_then_closed() {
    let mut n = Net::demo();
    let c = n.accept();
    let rid = n.send(
        c,
        Body::Login(wire::LoginRequest {
            protocol_version: 99,
            ..login_req(1)
        }),
    );
    let frames = n.frames(c);
    assert_eq!(frames.len(), 2);
    assert_eq!(frames[0].request_id, rid);
    match &frames[0].body {
        Some(Body::Error(e)) => {
            assert_eq!(e.code, 2010);
            assert!(e.message.contains("version 2"), "{}", e.message);
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(&frames[1].body, Some(Body::Close(c)) if c.code == 2010));
    assert!(matches!(
        n.closed.as_slice(),
        [(x, CloseReason::UnsupportedVersion)] if *x == c
    ));
    assert_eq!(n.s.connection_count(), 0);
}

#[test]
fn ping_is_answered_before_and_after_login() {
    let mut n = Net::demo();
    let c = n.accept();
    assert_eq!(
        n.req(c, Body::Ping(wire::Ping { nonce: 77 })),
        Body::Pong(wire::Pong { nonce: 77 })
    );
}

// ---------------------------------------------------------------- P2P

#[test]
fn p2p_online_delivery_and_unreliable() {
    let mut n = Net::demo();
    let (a, _) = n.login(1);
    let (b1, _) = n.login(2);
    let (b2, _) = n.login(2);
    let r = send_reply(n.req(a, to_user(2, "hi", false)));
    assert!(r.delivered_online);
    assert_eq!(r.seq, 1);
    assert_eq!(r.timestamp_ms, T0_UNIX_MS);
    for b in [b1, b2] {
        let bodies = n.bodies(b);
        assert_eq!(user_msgs(&bodies), vec![(1, "hi".to_string())]);
        assert!(
            matches!(&bodies[0], Body::UserMessage(m) if m.from_uid == 1 && m.timestamp_ms == T0_UNIX_MS)
        );
    }
    let r = send_reply(n.req(a, to_user(2, "fast", true)));
    assert_eq!((r.seq, r.delivered_online), (0, true));
    assert_eq!(user_msgs(&n.bodies(b1)), vec![(0, "fast".to_string())]);
    // To yourself is allowed; uid 0 and oversize messages are refused.
    assert_eq!(send_reply(n.req(a, to_user(1, "me", false))).seq, 1);
    assert_eq!(user_msgs(&n.bodies(a)), vec![(1, "me".to_string())]);
    assert_eq!(n.err(a, to_user(0, "x", false)), 2001);
    let big = Body::SendToUser(wire::SendToUserRequest {
        receiver: 2,
        message: Some(wire::ChatMessage {
            content: Bytes::from(vec![0u8; 32 * 1024 + 1]),
            ..chat("")
        }),
        unreliable: false,
        message_id: message_id(),
    });
    assert_eq!(n.err(a, big), 2007);
}

#[test]
fn offline_messages_arrive_at_next_login_and_acks_count() {
    let mut n = Net::demo();
    let (a, _) = n.login(1);
    for t in ["m1", "m2", "m3"] {
        assert!(!send_reply(n.req(a, to_user(2, t, false))).delivered_online);
    }
    let r = send_reply(n.req(a, to_user(2, "lost", true)));
    assert!(!r.delivered_online);
    // Fresh login: reply first, then the offline messages in order.
    let b = n.accept();
    n.send(b, Body::Login(login_req(2)));
    let bodies = n.bodies(b);
    assert!(matches!(&bodies[0], Body::LoginReply(r) if r.p2p_seq == 0 && r.p2p_gap.is_none()));
    assert_eq!(
        user_msgs(&bodies[1..]),
        vec![(1, "m1".into()), (2, "m2".into()), (3, "m3".into())]
    );
    // Acked through 2 (by any instance): the next fresh login gets only 3.
    n.raw(
        b,
        encode_frame(&Frame {
            request_id: 0,
            body: Some(Body::Ack(wire::Ack { p2p_seq: 2 })),
        }),
    );
    let b2 = n.accept();
    n.send(b2, Body::Login(login_req(2)));
    let bodies = n.bodies(b2);
    assert!(matches!(&bodies[0], Body::LoginReply(r) if r.p2p_seq == 2));
    assert_eq!(user_msgs(&bodies[1..]), vec![(3, "m3".into())]);
    // An ack past the head is clamped.
    n.raw(
        b,
        encode_frame(&Frame {
            request_id: 0,
            body: Some(Body::Ack(wire::Ack { p2p_seq: 1000 })),
        }),
    );
    let (_, r) = n.login(2);
    assert_eq!(r.p2p_seq, 3);
}

#[test]
fn resume_takes_the_instance_over_and_replays() {
    let mut n = Net::demo();
    let (a, _) = n.login(1);
    let (b, r) = n.login(2);
    let room = n.ok_join(b, "room");
    n.req(a, to_user(2, "m1", false));
    n.s.handle_closed(n.now, b);
    n.advance(Duration::from_secs(5));
    for t in ["m2", "m3"] {
        assert!(!send_reply(n.req(a, to_user(2, t, false))).delivered_online);
    }
    let b2 = n.accept();
    let req = resume_req(
        2,
        r.instance_id,
        r.p2p_epoch,
        1,
        vec![cursor("room", room.epoch, room.seq)],
    );
    n.send(b2, Body::Login(req));
    let bodies = n.bodies(b2);
    match &bodies[0] {
        Body::LoginReply(x) => {
            assert!(x.resumed);
            assert_eq!(x.instance_id, r.instance_id);
            assert_eq!(x.p2p_seq, 1);
            assert_eq!(x.p2p_epoch, r.p2p_epoch);
            assert_eq!(x.channels.len(), 1, "the listed channel is kept");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        user_msgs(&bodies[1..]),
        vec![(2, "m2".into()), (3, "m3".into())]
    );
    // Still a member of its channel: a join is a plain success, not offline.
    match n.req(b2, rejoin("room", room.epoch, 0)) {
        Body::JoinReply(j) => assert!(!j.member_offline),
        other => panic!("{other:?}"),
    }
    // Another epoch: history unknown, start from the acked point.
    let c = n.accept();
    let req = resume_req(2, r.instance_id, r.p2p_epoch.wrapping_add(1), 7, vec![]);
    match n.login_with(c, req) {
        Body::LoginReply(x) => {
            assert_eq!(x.p2p_gap, Some(wire::SeqGap { from: 8, to: 0 }));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn resume_detaches_an_older_live_connection() {
    let mut n = Net::demo();
    let (b, r) = n.login(2);
    let b2 = n.accept();
    let req = resume_req(2, r.instance_id, r.p2p_epoch, 0, vec![]);
    assert!(
        matches!(n.login_with(b2, req), Body::LoginReply(x) if x.resumed && x.instance_id == r.instance_id)
    );
    assert!(n.closed.contains(&(b, CloseReason::Replaced)));
    // v2: the replaced link is told why before it is closed.
    assert_eq!(close_code(&n.bodies(b)), Some(4007));
    assert_eq!(n.s.instance_count(), 1);
}

#[test]
fn evicted_p2p_messages_show_as_a_gap() {
    let mut n = Net::new(ServerConfig {
        inbox_max_messages: 3,
        ..ServerConfig::demo()
    });
    let (a, _) = n.login(1);
    for i in 1..=5 {
        n.req(a, to_user(2, &format!("m{i}"), false));
    }
    let b = n.accept();
    n.send(b, Body::Login(login_req(2)));
    let bodies = n.bodies(b);
    assert!(matches!(&bodies[0], Body::LoginReply(r)
        if r.p2p_seq == 2 && r.p2p_gap == Some(wire::SeqGap { from: 1, to: 2 })));
    assert_eq!(user_msgs(&bodies[1..]).len(), 3);
    // Fetch after 3: pushes 4 and 5, then the reply.
    n.send(
        b,
        Body::Fetch(wire::FetchRequest {
            channel: None,
            after_seq: 3,
        }),
    );
    let bodies = n.bodies(b);
    assert_eq!(user_msgs(&bodies), vec![(4, "m4".into()), (5, "m5".into())]);
    assert!(
        matches!(bodies.last(), Some(Body::FetchReply(f)) if f.through_seq == 5 && f.gap.is_none())
    );
    // Fetch from 0: the evicted part is the gap.
    n.send(
        b,
        Body::Fetch(wire::FetchRequest {
            channel: None,
            after_seq: 0,
        }),
    );
    let bodies = n.bodies(b);
    assert_eq!(user_msgs(&bodies).len(), 3);
    assert!(matches!(bodies.last(), Some(Body::FetchReply(f))
        if f.through_seq == 5 && f.gap == Some(wire::SeqGap { from: 1, to: 2 })));
    // Aged out: everything is a gap.
    n.advance(Duration::from_secs(8 * 24 * 3600));
    let (_, r) = n.login(2);
    assert_eq!(r.p2p_gap, Some(wire::SeqGap { from: 1, to: 5 }));
    assert_eq!(r.p2p_seq, 5);
}

// ---------------------------------------------------------------- channels

#[test]
fn broadcast_is_encoded_once_and_echoed_to_the_sender() {
    let mut n = Net::demo();
    let (a, _) = n.login(1);
    let (b, _) = n.login(2);
    let (c, _) = n.login(3);
    let (outsider, _) = n.login(4);
    let mut number = 0;
    for x in [a, b, c] {
        match n.req(x, join("room")) {
            Body::JoinReply(j) => {
                assert_ne!(j.channel, 0);
                assert_eq!(j.seq, 0);
                number = j.channel;
            }
            other => panic!("{other:?}"),
        }
    }
    n.advance(Duration::from_secs(1));
    for x in [a, b, c] {
        n.frames(x);
    }
    let r = send_reply(n.req(a, to_channel("room", "hello", false)));
    assert_eq!((r.seq, r.delivered_online), (1, true));
    let mut ptrs = Vec::new();
    for x in [a, b, c] {
        let q = n.out.remove(&x).unwrap();
        assert_eq!(q.len(), 1);
        let (raw, f) = &q[0];
        assert!(matches!(&f.body, Some(Body::ChannelMessage(m))
            if m.channel == number && m.from_uid == 1 && m.seq == 1 && m.message.as_ref().unwrap().content == "hello"));
        ptrs.push(raw.as_ptr());
    }
    assert!(ptrs.windows(2).all(|w| w[0] == w[1]), "one encoding shared");
    assert!(n.frames(outsider).is_empty());
    // Unreliable: seq 0, not stored (a replay from 0 has only seq 1).
    assert_eq!(send_reply(n.req(a, to_channel("room", "u", true))).seq, 0);
    n.frames(a);
    n.send(
        a,
        Body::Fetch(wire::FetchRequest {
            channel: Some(key("room")),
            after_seq: 0,
        }),
    );
    let bodies = n.bodies(a);
    assert_eq!(bodies.len(), 2);
    assert!(matches!(&bodies[1], Body::FetchReply(f) if f.through_seq == 1));
}

#[test]
fn notices_are_batched_and_netted() {
    let mut n = Net::demo();
    let (a, _) = n.login(1);
    let (b, _) = n.login(2);
    n.ok_join(a, "room");
    n.advance(Duration::from_millis(10));
    n.ok_join(b, "room");
    assert!(n.frames(a).is_empty(), "nothing before the window ends");
    n.advance(Duration::from_millis(95));
    for x in [a, b] {
        let bodies = n.bodies(x);
        assert_eq!(bodies.len(), 2, "{bodies:?}");
        assert!(
            matches!(&bodies[0], Body::Membership(m) if m.joined == vec![1, 2] && m.left.is_empty())
        );
        assert!(matches!(&bodies[1], Body::UserCountChanged(u) if u.count == 2));
    }
    // A second instance of uid 2 changes nothing; a uid in and out within
    // one window is no news.
    let (b2, _) = n.login(2);
    n.ok_join(b2, "room");
    let (c, _) = n.login(3);
    n.ok_join(c, "room");
    n.ok(c, leave("room"));
    n.advance(Duration::from_millis(200));
    assert!(n.frames(a).is_empty());
    // One instance of uid 2 leaving: still present. The last: a leave.
    n.ok(b, leave("room"));
    n.advance(Duration::from_millis(200));
    assert!(n.frames(a).is_empty());
    n.ok(b2, leave("room"));
    n.advance(Duration::from_millis(200));
    let bodies = n.bodies(a);
    assert!(matches!(&bodies[0], Body::Membership(m) if m.left == vec![2] && m.joined.is_empty()));
    assert!(matches!(&bodies[1], Body::UserCountChanged(u) if u.count == 1));
}

impl Net {
    fn ok_join(&mut self, c: ConnId, id: &str) -> wire::JoinReply {
        match self.req(c, join(id)) {
            Body::JoinReply(j) => j,
            other => panic!("join failed: {other:?}"),
        }
    }
}

#[test]
fn grace_period_hides_quick_reconnects_and_ends_with_a_leave() {
    let mut n = Net::demo();
    let (a, _) = n.login(1);
    let (b, r) = n.login(2);
    n.ok_join(a, "room");
    let room = n.ok_join(b, "room");
    n.advance(Duration::from_secs(1));
    n.frames(a);
    n.s.handle_closed(n.now, b);
    n.advance(Duration::from_secs(20));
    assert!(n.frames(a).is_empty(), "no leave within grace");
    assert_eq!(
        n.req(
            a,
            Body::QueryOnline(wire::QueryOnlineRequest { uids: vec![2, 3] })
        ),
        Body::OnlineStatus(wire::OnlineStatusReply {
            status: [(2, true), (3, false)].into_iter().collect()
        })
    );
    let b2 = n.accept();
    // The resume lists the channel it holds: it stays a member.
    let resume = |seq| {
        resume_req(
            2,
            r.instance_id,
            r.p2p_epoch,
            seq,
            vec![cursor("room", room.epoch, room.seq)],
        )
    };
    assert!(matches!(n.login_with(b2, resume(0)), Body::LoginReply(x) if x.resumed));
    n.advance(Duration::from_secs(1));
    assert!(n.frames(a).is_empty(), "no leave/join on resume");
    // Lost again, past the grace period this time.
    n.s.handle_closed(n.now, b2);
    n.advance(Duration::from_secs(31));
    n.advance(Duration::from_millis(100));
    let bodies = without_server_pings(n.bodies(a));
    assert!(matches!(&bodies[0], Body::Membership(m) if m.left == vec![2]));
    assert!(matches!(&bodies[1], Body::UserCountChanged(u) if u.count == 1));
    assert_eq!(n.s.instance_count(), 1);
    // Its resume now makes a new instance; the rejoin reports it was dropped.
    let b3 = n.accept();
    assert!(
        matches!(n.login_with(b3, resume(0)), Body::LoginReply(x) if !x.resumed && x.instance_id != r.instance_id)
    );
    match n.req(b3, rejoin("room", room.epoch, room.seq)) {
        Body::JoinReply(j) => assert!(j.member_offline),
        other => panic!("{other:?}"),
    }
}

/// The bodies without the server's heartbeat `Ping`s (a silent link gets
/// one after half the idle timeout).
fn without_server_pings(bodies: Vec<Body>) -> Vec<Body> {
    bodies
        .into_iter()
        .filter(|b| !matches!(b, Body::Ping(_)))
        .collect()
}

#[test]
fn channel_rejoin_replays_and_reports_evicted_gap() {
    let mut n = Net::new(ServerConfig {
        channel_retention_messages: 3,
        ..ServerConfig::demo()
    });
    let (a, _) = n.login(1);
    let (b, _) = n.login(2);
    let epoch = n.ok_join(a, "room").epoch;
    assert_ne!(epoch, 0);
    n.ok_join(b, "room");
    for i in 1..=5 {
        n.req(a, to_channel("room", &format!("c{i}"), false));
    }
    n.frames(b);
    // Already a member (v2): seq = head and nothing replayed, even for a
    // rejoin with an old cursor (a member has had every push).
    let rid = n.send(b, rejoin("room", epoch, 3));
    let frames = n.frames(b);
    assert_eq!(frames.len(), 1, "{frames:?}");
    assert_eq!(frames[0].request_id, rid);
    assert!(
        matches!(&frames[0].body, Some(Body::JoinReply(j)) if j.seq == 5 && j.gap.is_none() && !j.member_offline && j.epoch == epoch)
    );
    // Dropped after its link stayed down past the grace period, and back
    // with the cursor: the rest is replayed.
    let b = n.depart(b, 2);
    let rid = n.send(b, rejoin("room", epoch, 3));
    let frames = n.frames(b);
    assert_eq!(frames[0].request_id, rid);
    assert!(
        matches!(&frames[0].body, Some(Body::JoinReply(j)) if j.seq == 3 && j.gap.is_none() && j.epoch == epoch && j.member_offline),
        "{frames:?}"
    );
    let seqs: Vec<u64> = frames[1..]
        .iter()
        .filter_map(|f| match &f.body {
            Some(Body::ChannelMessage(m)) => Some(m.seq),
            _ => None,
        })
        .collect();
    assert_eq!(seqs, vec![4, 5]);
    // From 1 (its membership began at 0): 2 is evicted.
    let b = n.depart(b, 2);
    n.send(b, rejoin("room", epoch, 1));
    let frames = n.frames(b);
    assert!(matches!(&frames[0].body, Some(Body::JoinReply(j))
        if j.seq == 2 && j.gap == Some(wire::SeqGap { from: 2, to: 2 })));
    assert_eq!(frames.len(), 4);
    // Stale (past the head): seq = head, no gap, no replay.
    let b = n.depart(b, 2);
    n.send(b, rejoin("room", epoch, 50));
    let frames = n.frames(b);
    assert!(matches!(&frames[0].body, Some(Body::JoinReply(j)) if j.seq == 5 && j.gap.is_none()));
    assert_eq!(frames.len(), 1);
    // Fresh join of a newcomer: seq = head, nothing replayed.
    let (c, _) = n.login(3);
    assert_eq!(n.ok_join(c, "room").seq, 5);
    // Fetch needs membership.
    let (d, _) = n.login(4);
    let fetch = Body::Fetch(wire::FetchRequest {
        channel: Some(key("room")),
        after_seq: 0,
    });
    assert_eq!(n.err(d, fetch), 5101);
}

#[test]
fn kick_older_logins_closes_and_removes_them() {
    let mut n = Net::new(ServerConfig {
        apps: vec![AppConfig {
            appid: DEMO_APPID,
            secret: None,
            allow_appid_mode: true,
            kick_older_logins: true,
        }],
        ..ServerConfig::default()
    });
    let (a, _) = n.login(1);
    let (old, _) = n.login(5);
    n.ok_join(a, "room");
    n.ok_join(old, "room");
    n.advance(Duration::from_secs(1));
    n.frames(a);
    n.frames(old);
    let (_new, _) = n.login(5);
    assert_eq!(close_code(&n.bodies(old)), Some(100));
    assert!(n.closed.contains(&(old, CloseReason::Kicked)));
    assert_eq!(n.s.instance_count(), 2);
    n.advance(Duration::from_secs(1));
    let bodies = n.bodies(a);
    assert!(matches!(&bodies[0], Body::Membership(m) if m.left == vec![5]));
}

// ---------------------------------------------------------------- attributes

#[test]
fn user_attribute_ops_with_and_without_notification() {
    let mut n = Net::demo();
    let (a, _) = n.login(1);
    let (b, _) = n.login(2);
    n.ok_join(a, "room");
    n.ok_join(b, "room");
    n.advance(Duration::from_secs(1));
    n.frames(a);
    n.frames(b);
    let get = |n: &mut Net, uid| match n.req(
        b,
        Body::GetUserAttributes(wire::GetUserAttributesRequest {
            channel: Some(key("room")),
            uid,
            keys: vec![],
        }),
    ) {
        Body::Attributes(r) => r.attributes,
        other => panic!("{other:?}"),
    };
    // SET without notification: nobody hears of it.
    n.ok(
        a,
        write(
            false,
            "room",
            AttributeOp::Set,
            attrs(&[("x", "1"), ("y", "2")]),
            &[],
            false,
        ),
    );
    assert!(n.frames(b).is_empty() && n.frames(a).is_empty());
    assert_eq!(get(&mut n, 1), attrs(&[("x", "1"), ("y", "2")]));
    // ADD_OR_UPDATE with: every member (the writer too) gets the upserted.
    n.ok(
        a,
        write(
            false,
            "room",
            AttributeOp::AddOrUpdate,
            attrs(&[("y", "3"), ("z", "4")]),
            &[],
            true,
        ),
    );
    for x in [a, b] {
        let bodies = n.bodies(x);
        assert!(matches!(&bodies[..], [Body::UserAttributesChanged(p)]
            if p.uid == 1 && p.op == AttributeOp::AddOrUpdate as i32
               && p.attributes == attrs(&[("y", "3"), ("z", "4")]) && p.timestamp_ms == T0_UNIX_MS + 1000));
    }
    assert_eq!(get(&mut n, 1), attrs(&[("x", "1"), ("y", "3"), ("z", "4")]));
    n.ok(
        a,
        write(
            false,
            "room",
            AttributeOp::Delete,
            BTreeMap::new(),
            &["x"],
            true,
        ),
    );
    assert!(matches!(&n.bodies(b)[..], [Body::UserAttributesChanged(p)]
        if p.op == AttributeOp::Delete as i32 && p.keys == vec!["x".to_string()]));
    n.ok(
        a,
        write(
            false,
            "room",
            AttributeOp::Set,
            attrs(&[("k", "v")]),
            &[],
            true,
        ),
    );
    assert!(matches!(&n.bodies(b)[..], [Body::UserAttributesChanged(p)]
        if p.op == AttributeOp::Set as i32 && p.attributes == attrs(&[("k", "v")])));
    // by keys, list by attribute
    match n.req(
        b,
        Body::GetUserAttributes(wire::GetUserAttributesRequest {
            channel: Some(key("room")),
            uid: 1,
            keys: vec!["k".into(), "missing".into()],
        }),
    ) {
        Body::Attributes(r) => assert_eq!(r.attributes, attrs(&[("k", "v")])),
        other => panic!("{other:?}"),
    }
    let by = |value: &str| {
        Body::GetUserListByAttribute(wire::GetUserListByAttributeRequest {
            channel: Some(key("room")),
            key: "k".into(),
            value: value.into(),
        })
    };
    assert_eq!(
        n.req(b, by("v")),
        Body::UserList(wire::UserListReply { uids: vec![1] })
    );
    assert_eq!(
        n.req(b, by("w")),
        Body::UserList(wire::UserListReply { uids: vec![] })
    );
    n.ok(
        a,
        write(
            false,
            "room",
            AttributeOp::Clear,
            BTreeMap::new(),
            &[],
            true,
        ),
    );
    assert!(
        matches!(&n.bodies(b)[..], [Body::UserAttributesChanged(p)] if p.op == AttributeOp::Clear as i32)
    );
    assert!(get(&mut n, 1).is_empty());
    // A uid not in the channel: 2004. Leaving drops the leaver's attributes.
    let not_in = Body::GetUserAttributes(wire::GetUserAttributesRequest {
        channel: Some(key("room")),
        uid: 9,
        keys: vec![],
    });
    assert_eq!(n.err(b, not_in), 2004);
    n.ok(
        a,
        write(
            false,
            "room",
            AttributeOp::Set,
            attrs(&[("k", "v")]),
            &[],
            false,
        ),
    );
    n.ok(a, leave("room"));
    n.ok_join(a, "room");
    assert!(get(&mut n, 1).is_empty());
}

#[test]
fn channel_attribute_ops_and_lifecycle() {
    let mut n = Net::demo();
    let (a, _) = n.login(1);
    let (b, _) = n.login(2);
    n.ok_join(a, "room");
    n.ok_join(b, "room");
    n.advance(Duration::from_secs(1));
    n.frames(a);
    n.frames(b);
    let get = |n: &mut Net, keys: Vec<String>| match n.req(
        b,
        Body::GetChannelAttributes(wire::GetChannelAttributesRequest {
            channel: Some(key("room")),
            keys,
        }),
    ) {
        Body::Attributes(r) => r,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        n.err(
            a,
            write(
                true,
                "room",
                AttributeOp::Delete,
                BTreeMap::new(),
                &["x"],
                false
            )
        ),
        5108
    );
    assert_eq!(
        n.err(
            a,
            write(
                true,
                "room",
                AttributeOp::Clear,
                BTreeMap::new(),
                &[],
                false
            )
        ),
        5108
    );
    n.ok(
        a,
        write(
            true,
            "room",
            AttributeOp::Set,
            attrs(&[("t", "topic")]),
            &[],
            false,
        ),
    );
    assert!(n.frames(b).is_empty());
    let r = get(&mut n, vec![]);
    assert_eq!(r.attributes, attrs(&[("t", "topic")]));
    assert_eq!(
        (r.last_update_uid, r.last_update_ts),
        (1, T0_UNIX_MS + 1000)
    );
    n.advance(Duration::from_secs(1));
    n.ok(
        b,
        write(
            true,
            "room",
            AttributeOp::AddOrUpdate,
            attrs(&[("u", "2")]),
            &[],
            true,
        ),
    );
    for x in [a, b] {
        assert!(
            matches!(&n.bodies(x)[..], [Body::ChannelAttributesChanged(p)]
            if p.last_update_uid == 2 && p.op == AttributeOp::AddOrUpdate as i32 && p.attributes == attrs(&[("u", "2")]))
        );
    }
    assert_eq!(
        get(&mut n, vec!["u".into()]).attributes,
        attrs(&[("u", "2")])
    );
    assert_eq!(get(&mut n, vec![]).last_update_ts, T0_UNIX_MS + 2000);
    n.ok(
        a,
        write(
            true,
            "room",
            AttributeOp::Delete,
            BTreeMap::new(),
            &["t"],
            true,
        ),
    );
    assert!(
        matches!(&n.bodies(b)[..], [Body::ChannelAttributesChanged(p)] if p.keys == vec!["t".to_string()])
    );
    n.ok(
        a,
        write(true, "room", AttributeOp::Clear, BTreeMap::new(), &[], true),
    );
    assert!(
        matches!(&n.bodies(b)[..], [Body::ChannelAttributesChanged(p)] if p.op == AttributeOp::Clear as i32)
    );
    // Dropped when the last member leaves.
    n.ok(
        a,
        write(
            true,
            "room",
            AttributeOp::Set,
            attrs(&[("t", "x")]),
            &[],
            false,
        ),
    );
    n.ok(a, leave("room"));
    n.ok(b, leave("room"));
    n.ok_join(b, "room");
    assert!(get(&mut n, vec![]).attributes.is_empty());
}

#[test]
fn every_limit_code() {
    let mut n = Net::new(ServerConfig {
        max_channel_members: 2,
        rate_limit_sends: 3,
        ..ServerConfig::demo()
    });
    let (a, _) = n.login(1);
    let (b, _) = n.login(2);
    let (c, _) = n.login(3);
    // 5101: not a member.
    assert_eq!(n.err(a, to_channel("room", "x", false)), 5101);
    assert_eq!(n.err(a, leave("room")), 5101);
    assert_eq!(n.err(a, Body::GetUserList(key("room"))), 5101);
    assert_eq!(
        n.err(
            a,
            write(
                false,
                "room",
                AttributeOp::Set,
                attrs(&[("k", "v")]),
                &[],
                false
            )
        ),
        5101
    );
    // 2001: bad channel id, bad region, bad key.
    assert_eq!(n.err(a, join("")), 2001);
    assert_eq!(n.err(a, join(&"x".repeat(65))), 2001);
    let bad_region = Body::Join(wire::JoinRequest {
        channel: Some(wire::ChannelKey {
            region: 0,
            channel_id: "r".into(),
        }),
        ..Default::default()
    });
    assert_eq!(n.err(a, bad_region), 2001);
    n.ok_join(a, "room");
    n.ok_join(b, "room");
    assert_eq!(
        n.err(
            a,
            write(
                false,
                "room",
                AttributeOp::Set,
                attrs(&[("bad key", "v")]),
                &[],
                false
            )
        ),
        2001
    );
    assert_eq!(
        n.err(
            a,
            write(
                false,
                "room",
                AttributeOp::Unspecified,
                BTreeMap::new(),
                &[],
                false
            )
        ),
        2001
    );
    // 5102: a third uid in a channel of 2 (another instance of a member is fine).
    assert_eq!(n.err(c, join("room")), 5102);
    let (b2, _) = n.login(2);
    n.ok_join(b2, "room");
    // 5103 / 5104 (user), 5105 / 5106 (channel).
    let many: BTreeMap<String, String> = (0..33).map(|i| (format!("k{i}"), "v".into())).collect();
    let big: BTreeMap<String, String> = (0..5)
        .map(|i| (format!("k{i}"), "v".repeat(8000)))
        .collect();
    assert_eq!(
        n.err(
            a,
            write(false, "room", AttributeOp::Set, many.clone(), &[], false)
        ),
        5103
    );
    assert_eq!(
        n.err(
            a,
            write(false, "room", AttributeOp::Set, big.clone(), &[], false)
        ),
        5104
    );
    assert_eq!(
        n.err(
            a,
            write(true, "room", AttributeOp::Set, many.clone(), &[], false)
        ),
        5105
    );
    assert_eq!(
        n.err(
            a,
            write(true, "room", AttributeOp::Set, big.clone(), &[], false)
        ),
        5106
    );
    // Checked on the resulting set: 32 ok, one more by upsert is 33.
    let k32: BTreeMap<String, String> = (0..32).map(|i| (format!("k{i}"), "v".into())).collect();
    n.ok(a, write(false, "room", AttributeOp::Set, k32, &[], false));
    assert_eq!(
        n.err(
            a,
            write(
                false,
                "room",
                AttributeOp::AddOrUpdate,
                attrs(&[("new", "v")]),
                &[],
                false
            )
        ),
        5103
    );
    // A value over 8 KiB on its own.
    let huge = attrs(&[("k", &"v".repeat(8 * 1024 + 1))]);
    assert_eq!(
        n.err(a, write(true, "room", AttributeOp::Set, huge, &[], false)),
        5106
    );
    // 5109: joined too many, too many ids in a count query.
    for i in 0..19 {
        n.ok_join(c, &format!("ch{i}"));
    }
    n.ok_join(c, "ch19");
    assert_eq!(n.err(c, join("ch20")), 5109);
    let ids: Vec<String> = (0..33).map(|i| format!("ch{i}")).collect();
    let count = Body::GetUserCount(wire::GetUserCountRequest {
        region: wire::Region::Cn as i32,
        channel_ids: ids,
    });
    assert_eq!(n.err(c, count), 5109);
    // 2007, then 4003 on the 4th send within 3 s (P2P and channel count together).
    let big_msg = Body::SendToChannel(wire::SendToChannelRequest {
        channel: Some(key("room")),
        message: Some(wire::ChatMessage {
            content: Bytes::from(vec![1u8; 40_000]),
            ..chat("")
        }),
        unreliable: false,
        message_id: message_id(),
    });
    assert_eq!(n.err(a, big_msg), 2007);
    n.req(a, to_channel("room", "1", false));
    n.req(a, to_user(2, "2", false));
    n.req(a, to_channel("room", "3", true));
    assert_eq!(n.err(a, to_channel("room", "4", false)), 4003);
    assert_eq!(n.err(a, to_user(2, "5", false)), 4003);
    n.advance(Duration::from_secs(3));
    assert!(matches!(
        n.req(a, to_user(2, "6", false)),
        Body::SendReply(_)
    ));
    // 2001: too many uids in an online query, or uid 0.
    assert_eq!(
        n.err(
            a,
            Body::QueryOnline(wire::QueryOnlineRequest { uids: vec![1; 257] })
        ),
        2001
    );
    assert_eq!(
        n.err(
            a,
            Body::QueryOnline(wire::QueryOnlineRequest { uids: vec![0] })
        ),
        2001
    );
}

#[test]
fn reads_counts_info_region_token_logout() {
    let mut n = Net::demo();
    let (a, ra) = n.login(3);
    let (b, _) = n.login(1);
    n.ok_join(a, "room");
    n.ok_join(b, "room");
    assert_eq!(
        n.req(a, Body::GetUserList(key("room"))),
        Body::UserList(wire::UserListReply { uids: vec![1, 3] })
    );
    let (outsider, _) = n.login(9);
    let count = Body::GetUserCount(wire::GetUserCountRequest {
        region: wire::Region::Cn as i32,
        channel_ids: vec!["room".into(), "empty".into()],
    });
    assert_eq!(
        n.req(outsider, count),
        Body::UserCount(wire::UserCountReply {
            counts: [("empty".to_string(), 0), ("room".to_string(), 2)]
                .into_iter()
                .collect()
        })
    );
    // Other regions are other channels.
    let other = Body::GetUserCount(wire::GetUserCountRequest {
        region: wire::Region::Us as i32,
        channel_ids: vec!["room".into()],
    });
    assert!(matches!(n.req(outsider, other), Body::UserCount(c) if c.counts["room"] == 0));
    n.ok(
        a,
        Body::SetUserRegion(wire::SetUserRegionRequest {
            region: wire::Region::Us as i32,
        }),
    );
    assert_eq!(
        n.err(
            a,
            Body::SetUserRegion(wire::SetUserRegionRequest { region: 42 })
        ),
        2001
    );
    match n.req(a, Body::GetInstanceInfo(wire::Empty {})) {
        Body::InstanceInfo(i) => {
            assert_eq!(
                (i.appid, i.uid, i.instance_id),
                (DEMO_APPID, 3, ra.instance_id)
            );
            assert!(i.is_anonymous);
            assert_eq!(i.region, wire::Region::Us as i32);
            assert_eq!(i.channels, vec![key("room")]);
        }
        other => panic!("{other:?}"),
    }
    let now_s = T0_UNIX_MS / 1000;
    let refresh = |t: String| Body::RefreshToken(wire::RefreshTokenRequest { token: t });
    match n.req(
        a,
        refresh(mint_token(DEMO_SECRET, DEMO_APPID, 3, now_s + 60)),
    ) {
        Body::RefreshTokenReply(r) => {
            assert_eq!(r.token_expires_at_ms, (now_s + 60) * 1000);
            assert_eq!(r.server_time_ms, T0_UNIX_MS);
        }
        other => panic!("expected the new expiry, got {other:?}"),
    }
    assert_eq!(
        n.err(
            a,
            refresh(mint_token(DEMO_SECRET, DEMO_APPID, 4, now_s + 60))
        ),
        2002
    );
    assert_eq!(
        n.err(a, refresh(mint_token(DEMO_SECRET, DEMO_APPID, 3, now_s))),
        2003
    );
    // Logout: leaves at once (notice after the window), instance gone.
    n.advance(Duration::from_secs(1));
    n.frames(b);
    n.ok(a, Body::Logout(wire::Empty {}));
    assert_eq!(n.err(a, Body::GetInstanceInfo(wire::Empty {})), 1009);
    n.advance(Duration::from_secs(1));
    assert!(matches!(&n.bodies(b)[0], Body::Membership(m) if m.left == vec![3]));
    assert_eq!(
        n.req(
            b,
            Body::QueryOnline(wire::QueryOnlineRequest { uids: vec![3] })
        ),
        Body::OnlineStatus(wire::OnlineStatusReply {
            status: [(3, false)].into_iter().collect()
        })
    );
}

// ---------------------------------------------------------------- link faults

#[test]
fn malformed_frames_close_the_connection() {
    let mut n = Net::demo();
    let bad: Vec<Bytes> = vec![
        Bytes::from_static(&[0xff, 0xff, 0xff]),
        Bytes::new(),
        encode_frame(&Frame {
            request_id: 0,
            body: None,
        }),
        // A reply type sent by a client.
        encode_frame(&Frame {
            request_id: 1,
            body: Some(Body::Ok(wire::Empty {})),
        }),
        // A request without a request id.
        encode_frame(&Frame {
            request_id: 0,
            body: Some(Body::GetInstanceInfo(wire::Empty {})),
        }),
    ];
    for b in bad {
        let (c, _) = n.login(1);
        n.raw(c, b);
        assert_eq!(close_code(&n.bodies(c)), Some(2001));
        assert!(matches!(n.closed.last(), Some((x, CloseReason::ProtocolError(_))) if *x == c));
        // Later frames are ignored.
        n.send(c, Body::Ping(wire::Ping { nonce: 1 }));
        assert!(n.frames(c).is_empty());
    }
    // The lost link keeps the instances for the grace period only.
    assert_eq!(n.s.instance_count(), 5);
    n.advance(Duration::from_secs(31));
    assert_eq!(n.s.instance_count(), 0);
}

#[test]
fn slow_consumer_is_dropped_with_a_bounded_queue() {
    let mut n = Net::new(ServerConfig {
        max_queued_bytes: 4000,
        rate_limit_sends: 10_000,
        ..ServerConfig::demo()
    });
    let (a, _) = n.login(1);
    let (b, _) = n.login(2);
    n.held.insert(b);
    for i in 0..100 {
        n.req(
            a,
            to_user(2, &format!("message number {i} with some padding"), false),
        );
        assert!(n.s.queued_bytes(b) <= 4000 + 64);
    }
    assert!(n.closed.contains(&(b, CloseReason::SlowConsumer)));
    n.held.remove(&b);
    n.drain(b);
    let bodies = n.bodies(b);
    assert!(
        matches!(&bodies[..], [Body::Close(c)] if c.code == 4005 && c.reason == "slow consumer")
    );
    // Its instance is a lost link: the messages wait in the inbox.
    let r = send_reply(n.req(a, to_user(2, "later", false)));
    assert!(!r.delivered_online);
}

#[test]
fn idle_and_login_timeouts() {
    let mut n = Net::demo();
    let (alive, _) = n.login(1);
    let (idle, _) = n.login(2);
    let never = n.accept();
    for _ in 0..6 {
        n.advance(Duration::from_secs(10));
        n.req(alive, Body::Ping(wire::Ping { nonce: 0 }));
    }
    assert!(n.closed.contains(&(never, CloseReason::LoginTimeout)));
    assert!(n.closed.contains(&(idle, CloseReason::IdleTimeout)));
    assert!(!n.closed.iter().any(|(c, _)| *c == alive));
    // v2: the silent link was pinged at half the idle timeout, then closed.
    let bodies = n.bodies(idle);
    assert!(matches!(bodies.first(), Some(Body::Ping(_))), "{bodies:?}");
    assert_eq!(close_code(&bodies), Some(1005));
    // v2: a login timeout has its own code.
    assert_eq!(close_code(&n.bodies(never)), Some(1006));
    assert_eq!(n.s.connection_count(), 1);
    // The idle instance was a lost link; gone after the grace period.
    n.advance(Duration::from_secs(31));
    assert_eq!(n.s.instance_count(), 1);
}

#[test]
fn time_going_backwards_is_ignored() {
    let mut n = Net::demo();
    let (a, _) = n.login(1);
    let earlier = n.now - Duration::from_secs(1);
    n.s.handle_timeout(earlier);
    n.s.handle_frame(
        earlier,
        a,
        encode_frame(&Frame {
            request_id: 1,
            body: Some(Body::Ping(wire::Ping { nonce: 1 })),
        }),
    );
    n.pump();
    assert_eq!(n.frames(a).len(), 1);
    assert!(n.s.poll_timeout().unwrap() > n.now);
}

// ---------------------------------------------------------------- properties

mod props {
    use super::*;
    use proptest::prelude::*;

    fn body(uid: u64, ch: u8, n: u64) -> Body {
        let id = format!("c{ch}");
        match n % 14 {
            0 => Body::Login(login_req(uid)),
            1 => join(&id),
            2 => leave(&id),
            3 => to_channel(&id, "x", n % 3 == 0),
            4 => to_user(uid ^ 1, "p", n % 5 == 0),
            5 => Body::Ack(wire::Ack { p2p_seq: n }),
            6 => write(
                n % 2 == 0,
                &id,
                AttributeOp::try_from((n % 5) as i32).unwrap(),
                attrs(&[("k", "v")]),
                &["k"],
                true,
            ),
            7 => Body::Fetch(wire::FetchRequest {
                channel: (n % 2 == 0).then(|| key(&id)),
                after_seq: n % 7,
            }),
            8 => Body::Logout(wire::Empty {}),
            9 => rejoin(&id, n % 3, n % 9),
            10 => Body::Login(resume_req(
                uid,
                n,
                n % 3,
                n % 11,
                vec![cursor(&id, n % 2, n % 5)],
            )),
            11 => Body::GetUserList(key(&id)),
            12 => Body::QueryOnline(wire::QueryOnlineRequest { uids: vec![uid, 1] }),
            _ => Body::Ping(wire::Ping { nonce: n }),
        }
    }

    #[derive(Debug, Clone)]
    enum Step {
        Frame {
            conn: usize,
            uid: u64,
            ch: u8,
            n: u64,
            rid: u64,
        },
        Garbage {
            conn: usize,
            bytes: Vec<u8>,
        },
        Close {
            conn: usize,
        },
        Drain {
            conn: usize,
        },
        Jump {
            ms: u64,
        },
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            6 => (0..4usize, 1..4u64, 0..3u8, any::<u64>(), 0..8u64).prop_map(|(conn, uid, ch, n, rid)| Step::Frame { conn, uid, ch, n, rid }),
            1 => (0..4usize, prop::collection::vec(any::<u8>(), 0..40)).prop_map(|(conn, bytes)| Step::Garbage { conn, bytes }),
            1 => (0..4usize).prop_map(|conn| Step::Close { conn }),
            2 => (0..4usize).prop_map(|conn| Step::Drain { conn }),
            2 => prop_oneof![0..200u64, 0..100_000u64, Just(40_000_000u64)].prop_map(|ms| Step::Jump { ms }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

        #[test]
        fn arbitrary_bytes_never_panic(frames in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..200), 0..20)) {
            let t = Instant::now();
            let mut s = Server::new(ServerConfig::demo(), t, 0);
            let c = s.accept(t);
            for f in frames {
                s.handle_frame(t, c, Bytes::from(f));
            }
            while let Some(c) = s.poll_ready() {
                while let Some(f) = s.poll_transmit(c) {
                    prop_assert!(decode_frame(f, MAX).is_ok());
                }
            }
        }

        #[test]
        fn frame_sequences_never_panic_and_stay_bounded(steps in prop::collection::vec(step(), 1..120)) {
            let max_q = 2000;
            let mut s = Server::new(ServerConfig { max_queued_bytes: max_q, ..ServerConfig::demo() }, Instant::now(), 0);
            let mut now = Instant::now();
            let mut conns: Vec<ConnId> = (0..4).map(|_| s.accept(now)).collect();
            for st in steps {
                match st {
                    Step::Frame { conn, uid, ch, n, rid } => {
                        let f = encode_frame(&Frame { request_id: rid, body: Some(body(uid, ch, n)) });
                        s.handle_frame(now, conns[conn], f);
                    }
                    Step::Garbage { conn, bytes } => s.handle_frame(now, conns[conn], Bytes::from(bytes)),
                    Step::Close { conn } => {
                        s.handle_closed(now, conns[conn]);
                        conns[conn] = s.accept(now);
                    }
                    Step::Drain { conn } => {
                        while let Some(f) = s.poll_transmit(conns[conn]) {
                            prop_assert!(decode_frame(f, MAX).is_ok());
                        }
                    }
                    Step::Jump { ms } => {
                        now += Duration::from_millis(ms);
                        s.handle_timeout(now);
                    }
                }
                for c in &conns {
                    // The bound, plus at most the final Close frame.
                    prop_assert!(s.queued_bytes(*c) <= max_q + 64);
                }
                while s.poll_ready().is_some() {}
                // A closed connection is replaced, as a client would reconnect.
                while let Some((closed, _)) = s.poll_close() {
                    if let Some(slot) = conns.iter_mut().find(|c| **c == closed) {
                        s.handle_closed(now, closed);
                        *slot = s.accept(now);
                    }
                }
                if let Some(t) = s.poll_timeout() {
                    prop_assert!(t + Duration::from_secs(3600 * 24 * 8) > now);
                }
                prop_assert!(s.instance_count() <= 64);
            }
        }
    }
}

#[test]
fn poll_ready_reports_each_connection_once_until_drained() {
    let t = Instant::now();
    let mut s = Server::new(ServerConfig::demo(), t, 0);
    let c = s.accept(t);
    let req = |n, body| {
        encode_frame(&Frame {
            request_id: n,
            body: Some(body),
        })
    };
    s.handle_frame(t, c, req(1, Body::Login(login_req(1))));
    let info = || Body::GetInstanceInfo(wire::Empty {});
    s.handle_frame(t, c, req(2, info()));
    assert_eq!(s.poll_ready(), Some(c));
    s.handle_frame(t, c, req(3, info()));
    assert_eq!(s.poll_ready(), None, "reported already, not drained");
    assert!(s.poll_transmit(c).is_some());
    s.handle_frame(t, c, req(4, info()));
    assert_eq!(s.poll_ready(), None, "still not drained");
    let mut n = 0;
    while s.poll_transmit(c).is_some() {
        n += 1;
    }
    assert_eq!(n, 3);
    assert_eq!(s.queued_bytes(c), 0);
    s.handle_frame(t, c, req(5, info()));
    assert_eq!(s.poll_ready(), Some(c), "reported again after the drain");
    assert_eq!(s.poll_ready(), None);
}

#[test]
fn pings_owe_one_pong_at_most() {
    let t = Instant::now();
    let mut s = Server::new(ServerConfig::demo(), t, 0);
    let c = s.accept(t);
    for nonce in 1..=1000 {
        let ping = encode_frame(&Frame {
            request_id: 0,
            body: Some(Body::Ping(wire::Ping { nonce })),
        });
        s.handle_frame(t, c, ping);
    }
    // What the link holds is one frame and its overhead, whatever it sent.
    assert!(s.queued_bytes(c) < 100, "{}", s.queued_bytes(c));
    let pong = decode_frame(s.poll_transmit(c).unwrap(), MAX).unwrap();
    assert!(matches!(
        pong.body,
        Some(Body::Pong(wire::Pong { nonce: 1000 }))
    ));
    assert!(s.poll_transmit(c).is_none());
}

#[test]
fn retained_bytes_are_capped_server_wide() {
    let mut n = Net::new(ServerConfig {
        max_retained_bytes: 3000,
        rate_limit_sends: 10_000,
        ..ServerConfig::demo()
    });
    let (a, _) = n.login(1);
    n.ok_join(a, "room");
    for i in 0..60 {
        n.req(
            a,
            to_user(2, &format!("offline message {i:03} with padding"), false),
        );
        n.req(
            a,
            to_channel("room", &format!("channel message {i:03} padding"), false),
        );
    }
    n.frames(a);
    let b = n.accept();
    n.send(b, Body::Login(login_req(2)));
    let frames: Vec<(Bytes, Frame)> = n.out.remove(&b).unwrap().into();
    let Some(Body::LoginReply(r)) = &frames[0].1.body else {
        panic!("no login reply")
    };
    // The oldest were evicted: a gap from 1, then a contiguous tail to 60.
    let gap = r.p2p_gap.expect("a gap");
    assert_eq!(gap.from, 1);
    assert_eq!(r.p2p_seq, gap.to);
    let replayed: usize = frames[1..].iter().map(|(raw, _)| raw.len()).sum();
    assert!(replayed <= 3000, "{replayed}");
    let seqs: Vec<u64> = user_msgs(
        &frames[1..]
            .iter()
            .filter_map(|(_, f)| f.body.clone())
            .collect::<Vec<_>>(),
    )
    .into_iter()
    .map(|(s, _)| s)
    .collect();
    assert_eq!(seqs, ((gap.to + 1)..=60).collect::<Vec<_>>());
    // The channel's history was cut the same way (a member fetches it).
    n.send(
        a,
        Body::Fetch(wire::FetchRequest {
            channel: Some(key("room")),
            after_seq: 0,
        }),
    );
    match n.bodies(a).last() {
        Some(Body::FetchReply(f)) => assert!(f.gap.is_some_and(|g| g.from == 1), "{f:?}"),
        other => panic!("{other:?}"),
    }
}

/// A model client that drops and resumes its link at random: every reliable
/// P2P and channel message must reach it exactly once, in order, with no gap.
mod reliability {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        SendP2p { reliable: bool },
        SendChannel { reliable: bool },
        Drop,
        Resume,
        Deliver,
        Ack,
        Jump { secs: u64 },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => any::<bool>().prop_map(|reliable| Op::SendP2p { reliable }),
            4 => any::<bool>().prop_map(|reliable| Op::SendChannel { reliable }),
            1 => Just(Op::Drop),
            2 => Just(Op::Resume),
            3 => Just(Op::Deliver),
            1 => Just(Op::Ack),
            1 => (0..40u64).prop_map(|secs| Op::Jump { secs }),
        ]
    }

    struct Model {
        conn: Option<ConnId>,
        instance: u64,
        /// The P2P stream's epoch and cursor.
        epoch: u64,
        p2p: u64,
        /// The channel: held as joined, listed in the last resume, its
        /// number, epoch and cursor.
        in_room: bool,
        /// A rejoin is in flight: the Session still holds the channel (its
        /// state is "rejoining") and lists it in its next resume.
        rejoining: bool,
        listed: bool,
        ch_num: u32,
        ch_epoch: u64,
        ch: u64,
        /// Messages handed to the application, and those reported lost (gaps).
        got: u64,
        lost: u64,
    }

    /// A JoinReply (or a ResumedChannel's state): the stream goes on from
    /// the model's cursor, or reports exactly the missing range as lost.
    fn channel_state(m: &mut Model, j: &wire::JoinReply) -> Result<(), TestCaseError> {
        if m.ch_epoch != 0 {
            prop_assert_eq!(j.epoch, m.ch_epoch, "one server: the epoch never changes");
        }
        match j.gap {
            None => prop_assert_eq!(j.seq, m.ch),
            Some(g) => {
                prop_assert_eq!(g.from, m.ch + 1);
                prop_assert_eq!(g.to, j.seq);
                m.lost += g.to - g.from + 1;
                m.ch = j.seq;
            }
        }
        m.in_room = true;
        m.rejoining = false;
        m.ch_num = j.channel;
        m.ch_epoch = j.epoch;
        Ok(())
    }

    /// The Session's reconnect: a resumed login listing the channel, then a
    /// rejoin when the resume did not keep it.
    fn reconnect(
        s: &mut Server,
        now: Instant,
        m: &mut Model,
        rid: u64,
    ) -> Result<(), TestCaseError> {
        let c = s.accept(now);
        m.conn = Some(c);
        m.listed = m.in_room || m.rejoining;
        let held = if m.listed {
            vec![cursor("room", m.ch_epoch, m.ch)]
        } else {
            vec![]
        };
        let req = resume_req(2, m.instance, m.epoch, m.p2p, held);
        s.handle_frame(now, c, frame(rid, Body::Login(req)));
        deliver(s, m)?;
        if !m.in_room {
            s.handle_frame(
                now,
                c,
                frame(rid + 1_000_000, rejoin("room", m.ch_epoch, m.ch)),
            );
            m.rejoining = true;
        }
        Ok(())
    }

    fn frame(rid: u64, body: Body) -> Bytes {
        encode_frame(&Frame {
            request_id: rid,
            body: Some(body),
        })
    }

    /// Takes what the server queued for the model's connection, checking
    /// that sequence numbers continue exactly where the model is.
    fn deliver(s: &mut Server, m: &mut Model) -> Result<(), TestCaseError> {
        let Some(c) = m.conn else { return Ok(()) };
        while let Some(b) = s.poll_transmit(c) {
            match decode_frame(b, MAX).unwrap().body {
                Some(Body::LoginReply(r)) => {
                    match r.p2p_gap {
                        None => prop_assert_eq!(r.p2p_seq, m.p2p),
                        Some(g) => {
                            // Evicted: reported once, exactly the missing range.
                            prop_assert_eq!(g.from, m.p2p + 1);
                            prop_assert_eq!(g.to, r.p2p_seq);
                            m.lost += g.to - g.from + 1;
                            m.p2p = r.p2p_seq;
                        }
                    }
                    if m.epoch != 0 {
                        prop_assert_eq!(r.p2p_epoch, m.epoch);
                    }
                    m.instance = r.instance_id;
                    m.epoch = r.p2p_epoch;
                    // A resumed instance keeps the channel it lists (and only
                    // that: a join whose reply was lost is undone); else the
                    // model must join it again.
                    m.in_room = false;
                    if r.resumed && m.listed {
                        prop_assert_eq!(r.channels.len(), 1);
                        let kept = &r.channels[0];
                        prop_assert_eq!(kept.channel.as_ref(), Some(&key("room")));
                        channel_state(m, kept.state.as_ref().unwrap())?;
                    } else {
                        prop_assert!(r.channels.is_empty());
                    }
                }
                Some(Body::JoinReply(j)) => channel_state(m, &j)?,
                Some(Body::UserMessage(u)) if u.seq != 0 => {
                    prop_assert_eq!(u.seq, m.p2p + 1);
                    m.p2p = u.seq;
                    m.got += 1;
                }
                Some(Body::ChannelMessage(u)) if u.seq != 0 => {
                    prop_assert!(m.in_room, "a push for a channel not held");
                    prop_assert_eq!(u.channel, m.ch_num);
                    prop_assert_eq!(u.seq, m.ch + 1);
                    m.ch = u.seq;
                    m.got += 1;
                }
                Some(Body::Error(e)) => prop_assert!(false, "error {:?}", e),
                _ => {}
            }
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        #[test]
        fn reliable_messages_arrive_exactly_once_in_order(
            ops in prop::collection::vec(op(), 1..150),
            keep in prop_oneof![1..8usize, Just(100_000usize)],
        ) {
            let mut now = Instant::now();
            let config = ServerConfig {
                idle_timeout: Duration::from_secs(86_400),
                login_timeout: Duration::from_secs(86_400),
                rate_limit_sends: 1_000_000,
                inbox_max_messages: keep,
                channel_retention_messages: keep,
                ..ServerConfig::demo()
            };
            let mut s = Server::new(config, now, T0_UNIX_MS);
            let a = s.accept(now);
            s.handle_frame(now, a, frame(1, Body::Login(login_req(1))));
            s.handle_frame(now, a, frame(2, join("room")));
            let b = s.accept(now);
            s.handle_frame(now, b, frame(1, Body::Login(login_req(2))));
            s.handle_frame(now, b, frame(2, join("room")));
            let mut m = Model { conn: Some(b), instance: 0, epoch: 0, p2p: 0, in_room: false, rejoining: false, listed: false, ch_num: 0, ch_epoch: 0, ch: 0, got: 0, lost: 0 };
            deliver(&mut s, &mut m)?;
            let (mut sent_p2p, mut sent_ch, mut rid) = (0u64, 0u64, 10u64);
            for op in ops {
                rid += 1;
                match op {
                    Op::SendP2p { reliable } => {
                        s.handle_frame(now, a, frame(rid, to_user(2, "p", !reliable)));
                        sent_p2p += u64::from(reliable);
                    }
                    Op::SendChannel { reliable } => {
                        s.handle_frame(now, a, frame(rid, to_channel("room", "c", !reliable)));
                        sent_ch += u64::from(reliable);
                    }
                    Op::Drop => {
                        if let Some(c) = m.conn.take() {
                            s.handle_closed(now, c);
                        }
                    }
                    Op::Resume => {
                        if m.conn.is_none() {
                            reconnect(&mut s, now, &mut m, rid)?;
                        }
                    }
                    Op::Deliver => deliver(&mut s, &mut m)?,
                    Op::Ack => {
                        if let Some(c) = m.conn {
                            s.handle_frame(now, c, frame(0, Body::Ack(wire::Ack { p2p_seq: m.p2p })));
                        }
                    }
                    Op::Jump { secs } => {
                        now += Duration::from_secs(secs);
                        s.handle_timeout(now);
                    }
                }
                // A's own output is not under test.
                while s.poll_transmit(a).is_some() {}
                while s.poll_close().is_some() {}
                while s.poll_ready().is_some() {}
            }
            if m.conn.is_none() {
                reconnect(&mut s, now, &mut m, 1)?;
            }
            deliver(&mut s, &mut m)?;
            prop_assert_eq!(m.p2p, sent_p2p);
            prop_assert_eq!(m.ch, sent_ch);
            prop_assert_eq!(m.got + m.lost, sent_p2p + sent_ch);
            if keep == 100_000 {
                prop_assert_eq!(m.lost, 0);
            }
        }
    }
}

#[test]
fn client_close_frame_and_instance_bound() {
    let mut n = Net::new(ServerConfig {
        max_instances_per_uid: 2,
        ..ServerConfig::demo()
    });
    let (a, _) = n.login(1);
    n.raw(
        a,
        encode_frame(&Frame {
            request_id: 0,
            body: Some(Body::Close(wire::Close {
                code: 0,
                reason: "bye".into(),
            })),
        }),
    );
    assert!(n.closed.contains(&(a, CloseReason::ClosedByPeer)));
    assert!(n.frames(a).is_empty(), "no Close frame back");
    // Instance 1 is a lost link now; two more logins: the lost one makes room.
    let (_b, _) = n.login(1);
    let (_c, _) = n.login(1);
    assert_eq!(n.s.instance_count(), 2);
    // Both connected: a third is refused.
    let d = n.accept();
    assert!(matches!(n.login_with(d, login_req(1)), Body::Error(e) if e.code == 2012));
}

#[test]
fn inboxes_are_bounded_and_offline_ones_evicted_first() {
    let mut n = Net::new(ServerConfig {
        max_inbox_users: 10,
        rate_limit_sends: 10_000,
        ..ServerConfig::demo()
    });
    let (a, _) = n.login(1);
    let (_online, _) = n.login(500);
    n.req(a, to_user(500, "kept", false));
    for uid in 1000..1100 {
        n.req(a, to_user(uid, "x", false));
        n.advance(Duration::from_millis(1));
        assert!(n.s.inbox_count() <= 11, "{}", n.s.inbox_count());
    }
    // The online uid's inbox survived, the latest offline one too, the
    // oldest offline one is gone.
    for (uid, expect) in [(500, 1), (1099, 1), (1000, 0)] {
        let c = n.accept();
        n.send(c, Body::Login(login_req(uid)));
        assert_eq!(user_msgs(&n.bodies(c)).len(), expect, "uid {uid}");
    }
}

#[test]
fn big_lists_are_split_or_cut_to_fit_a_frame() {
    let mut config = ServerConfig::demo();
    config.limits.max_frame_size = 1064; // 100 uids per frame, 50 per notice list
    let mut n = Net::new(config);
    let (a, _) = n.login(u64::MAX);
    n.ok_join(a, "room");
    n.advance(Duration::from_secs(1));
    n.frames(a);
    for uid in 1..=120 {
        let (c, _) = n.login(uid);
        n.ok_join(c, "room");
    }
    n.advance(Duration::from_secs(1));
    let bodies = n.bodies(a);
    let joined: Vec<u64> = bodies
        .iter()
        .filter_map(|b| match b {
            Body::Membership(m) => Some(m.joined.clone()),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(joined, (1..=120).collect::<Vec<_>>());
    assert_eq!(bodies.len(), 4, "three notices, then one count");
    assert!(matches!(bodies.last(), Some(Body::UserCountChanged(u)) if u.count == 121));
    for (raw, _) in n.out.values().flatten() {
        assert!(raw.len() <= 1064);
    }
    let rid = n.send(a, Body::GetUserList(key("room")));
    let (raw, f) = n.out.get_mut(&a).unwrap().pop_back().unwrap();
    assert_eq!(f.request_id, rid);
    assert!(raw.len() <= 1064);
    assert!(matches!(f.body, Some(Body::UserList(l)) if l.uids == (1..=100).collect::<Vec<_>>()));
}

// ---------------------------------------------------------------- review findings

/// A chat message whose request frame is exactly `target` bytes or just
/// under: 2-byte extras keys with empty values cost 6 wire bytes for 2
/// counted bytes, so the counted size stays far below 32 KiB.
fn fat_message(wrap: impl Fn(wire::ChatMessage) -> Body, target: usize) -> Body {
    let mut extras = BTreeMap::new();
    let alphabet: Vec<char> = ('a'..='z').chain('A'..='Z').chain('0'..='9').collect();
    'outer: for a in &alphabet {
        for b in &alphabet {
            for c in &alphabet {
                if extras.len() == 8400 {
                    break 'outer;
                }
                extras.insert(format!("{a}{b}{c}"), String::new());
            }
        }
    }
    let mut content = 6000usize;
    loop {
        let m = wire::ChatMessage {
            r#type: "t".into(),
            content: Bytes::from(vec![b'x'; content + 1]),
            app_extras: extras.clone(),
        };
        let f = encode_frame(&Frame {
            request_id: 1,
            body: Some(wrap(m.clone())),
        });
        if f.len() > target {
            let m = wire::ChatMessage {
                content: Bytes::from(vec![b'x'; content]),
                ..m
            };
            return wrap(m);
        }
        content += 1;
    }
}

#[test]
fn a_message_whose_push_would_exceed_the_frame_size_is_refused() {
    let mut n = Net::demo();
    let big_uid = u64::MAX / 2;
    let (a, _) = n.login(big_uid);
    let (b, _) = n.login(2);
    n.req(a, join("c"));
    n.req(b, join("c"));
    n.advance(Duration::from_secs(1));
    n.frames(a);
    n.frames(b);
    let body = fat_message(
        |m| {
            Body::SendToChannel(wire::SendToChannelRequest {
                channel: Some(key("c")),
                message: Some(m),
                unreliable: false,
                message_id: message_id(),
            })
        },
        MAX,
    );
    // Hold b so its queue is not decoded by Net (which would panic).
    n.held.insert(b);
    n.held.insert(a);
    n.rid += 1;
    let req = encode_frame(&Frame {
        request_id: n.rid,
        body: Some(body),
    });
    assert!(req.len() <= MAX, "the request fits: {}", req.len());
    n.s.handle_frame(n.now, a, req);
    n.pump();
    // Refused up front (2007): no push was queued for b (a push over the
    // frame size would be refused by every client).
    let a_frames: Vec<_> = std::iter::from_fn(|| n.s.poll_transmit(a))
        .map(|f| decode_frame(f, usize::MAX).unwrap().body.unwrap())
        .collect();
    assert!(
        matches!(&a_frames[..], [Body::Error(e)] if e.code == 2007),
        "{a_frames:?}"
    );
    let sizes: Vec<usize> = std::iter::from_fn(|| n.s.poll_transmit(b))
        .map(|f| f.len())
        .collect();
    assert!(sizes.is_empty(), "server queued pushes of {sizes:?} bytes");
    assert!(n.closed.is_empty());
}

#[test]
fn an_attribute_notice_that_would_exceed_the_frame_size_is_refused() {
    let mut n = Net::demo();
    let (a, _) = n.login(u64::MAX / 2);
    let (b, _) = n.login(2);
    n.req(a, join("c"));
    n.req(b, join("c"));
    n.ok(
        a,
        write(
            true,
            "c",
            AttributeOp::Set,
            attrs(&[("k", "v")]),
            &[],
            false,
        ),
    );
    n.advance(Duration::from_secs(1));
    n.frames(a);
    n.frames(b);
    // DELETE with as many 31-byte keys as fit in one request frame.
    let mut keys: Vec<String> = (0..(MAX as u64 / 33 - 20))
        .map(|i| format!("{:0>31}", i))
        .collect();
    let mut i = keys.len() as u64;
    loop {
        let mut k2 = keys.clone();
        k2.push(format!("{:0>31}", i));
        let w = Body::WriteChannelAttributes(wire::AttributesWrite {
            channel: Some(key("c")),
            op: AttributeOp::Delete as i32,
            attributes: BTreeMap::new(),
            keys: k2.clone(),
            enable_notification: true,
        });
        if encode_frame(&Frame {
            request_id: 99,
            body: Some(w),
        })
        .len()
            > MAX
        {
            break;
        }
        keys = k2;
        i += 1;
    }
    // Pad with one shorter key so the request is within a few bytes of MAX.
    for len in (1..=31).rev() {
        let mut k2 = keys.clone();
        k2.push(
            format!("{:0>len$}", i, len = len)
                .chars()
                .rev()
                .take(len)
                .collect(),
        );
        let w = Body::WriteChannelAttributes(wire::AttributesWrite {
            channel: Some(key("c")),
            op: AttributeOp::Delete as i32,
            attributes: BTreeMap::new(),
            keys: k2.clone(),
            enable_notification: true,
        });
        if encode_frame(&Frame {
            request_id: 99,
            body: Some(w),
        })
        .len()
            <= MAX
        {
            keys = k2;
            break;
        }
    }
    n.held.insert(b);
    let refs: Vec<&str> = keys.iter().map(|s| s.as_str()).collect();
    n.held.insert(a);
    n.rid += 1;
    let req = encode_frame(&Frame {
        request_id: n.rid,
        body: Some(write(
            true,
            "c",
            AttributeOp::Delete,
            BTreeMap::new(),
            &refs,
            true,
        )),
    });
    n.s.handle_frame(n.now, a, req);
    n.pump();
    // Refused up front (2001): no notice was queued for b.
    let a_frames: Vec<_> = std::iter::from_fn(|| n.s.poll_transmit(a))
        .map(|f| decode_frame(f, usize::MAX).unwrap().body.unwrap())
        .collect();
    assert!(
        matches!(&a_frames[..], [Body::Error(e)] if e.code == 2001),
        "{a_frames:?}"
    );
    let sizes: Vec<usize> = std::iter::from_fn(|| n.s.poll_transmit(b))
        .map(|f| f.len())
        .collect();
    assert!(sizes.is_empty(), "server queued notices of {sizes:?} bytes");
    assert!(n.closed.is_empty());
}

#[test]
fn a_forgotten_inbox_never_reuses_sequence_numbers() {
    let mut n = Net::new(ServerConfig {
        presence_grace: Duration::from_secs(1),
        inbox_max_age: Duration::from_secs(5),
        sweep_interval: Duration::from_secs(1),
        ..ServerConfig::demo()
    });
    let (a, _) = n.login(1);
    let (b, rb) = n.login(2);
    for t in ["m1", "m2", "m3"] {
        n.req(a, to_user(2, t, false));
    }
    assert_eq!(user_msgs(&n.bodies(b)).len(), 3);
    let inboxes = n.s.inbox_count();
    // b's link is lost past the grace period, its inbox ages out and is
    // swept ten times: v2 keeps the empty inbox (and its epoch).
    n.s.handle_closed(n.now, b);
    for _ in 0..10 {
        n.advance(Duration::from_secs(1));
        n.ping_keepalive(a);
    }
    assert_eq!(n.s.inbox_count(), inboxes);
    // Two new offline messages: the numbering goes on.
    let s1 = send_reply(n.req(a, to_user(2, "new1", false)));
    let s2 = send_reply(n.req(a, to_user(2, "new2", false)));
    assert_eq!((s1.seq, s2.seq), (4, 5));
    // b's Session reconnects with what it had seen (seq 3): exactly the
    // two new ones, no gap.
    let c = n.accept();
    let reply = n.login_with(c, resume_req(2, rb.instance_id, rb.p2p_epoch, 3, vec![]));
    let Body::LoginReply(r) = reply else {
        panic!("{reply:?}")
    };
    assert!(!r.resumed, "the instance is gone past its grace");
    assert_eq!(r.p2p_epoch, rb.p2p_epoch);
    assert_eq!((r.p2p_seq, r.p2p_gap), (3, None));
    assert_eq!(
        user_msgs(&n.bodies(c)),
        vec![(4, "new1".into()), (5, "new2".into())]
    );
}

impl Net {
    /// `c` (of `uid`) loses its link and stays away past the grace period,
    /// so its memberships end; then `uid` logs in again (a new instance).
    fn depart(&mut self, c: ConnId, uid: u64) -> ConnId {
        self.s.handle_closed(self.now, c);
        self.advance(Duration::from_secs(31));
        self.login(uid).0
    }

    fn ping_keepalive(&mut self, c: ConnId) {
        self.raw(
            c,
            encode_frame(&Frame {
                request_id: 0,
                body: Some(Body::Ping(wire::Ping { nonce: 1 })),
            }),
        );
        self.frames(c);
    }
}

#[test]
fn a_burst_of_rejoin_replays_fits_the_connection_queue() {
    let mut n = Net::new(ServerConfig {
        rate_limit_sends: 100_000,
        max_queued_bytes: 1024 * 1024,
        ..ServerConfig::demo()
    });
    let (a, ra) = n.login(1);
    let (b, _) = n.login(2);
    let mut epochs = Vec::new();
    for ch in ["c1", "c2", "c3"] {
        epochs.push(n.ok_join(a, ch).epoch);
        n.req(b, join(ch));
    }
    n.advance(Duration::from_secs(1));
    // a's link drops; b sends 400 KiB into each channel while a is away.
    n.s.handle_closed(n.now, a);
    let text = "x".repeat(20_000);
    for ch in ["c1", "c2", "c3"] {
        for _ in 0..20 {
            n.req(b, to_channel(ch, &text, false));
        }
    }
    n.frames(b);
    // a's Session resumes with its three channels from seq 0, in one burst
    // (one TCP read: the server handles it all before the writer runs).
    // v2 replays them in the resume itself. (A burst of rejoins after the
    // grace period: a_burst_of_rejoins_after_a_fresh_login_... in
    // server_v2.rs.)
    for attempt in 0..4 {
        let c = n.accept();
        n.held.insert(c);
        let held = ["c1", "c2", "c3"]
            .iter()
            .zip(&epochs)
            .map(|(ch, e)| cursor(ch, *e, 0))
            .collect();
        n.rid += 1;
        n.s.handle_frame(
            n.now,
            c,
            encode_frame(&Frame {
                request_id: n.rid,
                body: Some(Body::Login(resume_req(
                    1,
                    ra.instance_id,
                    ra.p2p_epoch,
                    0,
                    held,
                ))),
            }),
        );
        n.pump();
        let closed = n
            .closed
            .iter()
            .any(|(x, r)| *x == c && *r == CloseReason::SlowConsumer);
        assert!(!closed, "attempt {attempt}: the resume's own replays overflow the queue; the client is closed as a slow consumer and loses everything queued");
        n.drain(c);
        let bodies = n.bodies(c);
        let replayed = bodies
            .iter()
            .filter(|b| matches!(b, Body::ChannelMessage(_)))
            .count();
        let states: Vec<&wire::JoinReply> = bodies
            .iter()
            .flat_map(|b| match b {
                Body::LoginReply(r) => r.channels.iter().filter_map(|k| k.state.as_ref()).collect(),
                Body::JoinReply(j) => vec![j],
                _ => vec![],
            })
            .collect();
        assert_eq!(states.len(), 3, "attempt {attempt}: {states:?}");
        assert!(replayed > 0, "attempt {attempt}: nothing replayed");
        assert!(
            replayed < 60 && states.iter().any(|j| j.replay_truncated_at != 0),
            "attempt {attempt}: 1.2 MB cannot be replayed into a 1 MB queue without a cut"
        );
    }
}
