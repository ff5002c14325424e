//! One Server driven with encoded frames: accept raw connections, send a
//! body and get its request id, take a connection's decoded frames, log in
//! raw. Plus the wire helpers the server tests build requests with.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hummer_channel::server::{CloseReason, ConnId, Server, ServerConfig, DEMO_APPID};
use hummer_channel::wire::{self, decode_frame, encode_frame, Body, DecodedFrame, Frame};

use super::clock::{self, T0_UNIX_MS};
use super::sinks::ServerOut;
use super::store::MemStore;

/// The frame size bound the harness decodes server frames with.
pub const MAX: usize = 64 * 1024;

/// Message ids for sends: non-zero and never used twice in a test binary
/// (so unique per sender uid, as the protocol asks), and far from the few
/// ids the tests spell out.
static NEXT_MESSAGE_ID: AtomicU64 = AtomicU64::new(1_000_000);

pub fn message_id() -> u64 {
    NEXT_MESSAGE_ID.fetch_add(1, Ordering::Relaxed)
}

/// A fake network around one Server: sends requests, collects every frame
/// queued for every connection (raw and decoded) and every close. Each
/// input is followed by one `Server::drain`; a connection in `held` takes
/// no frames (its "socket" is full) until it is released.
pub struct Net {
    pub s: Server,
    pub now: Instant,
    pub rid: u64,
    pub out: HashMap<ConnId, VecDeque<(Bytes, DecodedFrame)>>,
    pub held: HashSet<ConnId>,
    pub closed: Vec<(ConnId, CloseReason)>,
    /// With a durable server: what its store holds (every batch is stored
    /// at once, before each drain, unless `store_paused`).
    pub store: Option<MemStore>,
    pub store_paused: bool,
    /// When it started.
    pub started: Instant,
    /// The shape it was made with (for a restart).
    shape: (ServerConfig, u16, u16, u64),
}

impl Net {
    /// A server whose wall clock reads `unix_ms` at its start (a restarted
    /// server starts later: with the same seed and the same clock reading
    /// it would draw the same epochs, which no real restart does).
    pub fn new_at(config: ServerConfig, unix_ms: u64) -> Net {
        // `HUMMER_TEST_SHARDS=N` runs every test on N hub shards (and two
        // gateways): what must hold whatever the shape.
        let shards = std::env::var("HUMMER_TEST_SHARDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(1);
        let gateways = if shards > 1 { 2 } else { 1 };
        // `HUMMER_TEST_DURABLE=1` runs every test with a store: output
        // waits for the store, and nothing may change for clients.
        let mut config = config;
        if std::env::var("HUMMER_TEST_DURABLE").is_ok_and(|v| v == "1") {
            config.durable = true;
        }
        Net::shaped_at(config, gateways, shards, unix_ms)
    }

    /// A server of `gateways` gateways and `shards` hub shards.
    pub fn shaped(config: ServerConfig, gateways: u16, shards: u16) -> Net {
        Net::shaped_at(config, gateways, shards, T0_UNIX_MS)
    }

    fn shaped_at(config: ServerConfig, gateways: u16, shards: u16, unix_ms: u64) -> Net {
        let now = Instant::now();
        Net {
            s: Server::with_shape(config.clone(), gateways, shards, now, unix_ms),
            now,
            rid: 0,
            out: HashMap::new(),
            held: HashSet::new(),
            closed: Vec::new(),
            store: config.durable.then(MemStore::default),
            store_paused: false,
            started: now,
            shape: (config, gateways, shards, unix_ms),
        }
    }

    /// A durable server (`ServerConfig::durable`) of `shards` hub shards
    /// with a store double.
    pub fn durable(mut config: ServerConfig, shards: u16) -> Net {
        config.durable = true;
        Net::shaped_at(config, 1, shards, T0_UNIX_MS)
    }

    /// Stores every batch the server has made (unless paused).
    pub fn store_batches(&mut self) {
        if self.store_paused {
            return;
        }
        let Some(store) = self.store.as_mut() else {
            return;
        };
        while let Some((shard, batch)) = self.s.poll_store() {
            store.apply(&batch);
            self.s.handle_stored(self.now, shard, batch.number);
        }
    }

    /// The process dies `after` from now and a new one (same shape,
    /// `shards` hub shards) starts from what the store holds: every link is
    /// gone, batches not stored are lost.
    pub fn crash_restart(
        &mut self,
        after: Duration,
        shards: u16,
    ) -> hummer_channel::server::Restored {
        let store = self.store.take().expect("a durable Net");
        let (config, gateways, _, unix_ms) = self.shape.clone();
        let elapsed = self.now.duration_since(self.started) + after;
        let unix_ms = unix_ms + u64::try_from(elapsed.as_millis()).unwrap();
        let mut fresh = Net::shaped_at(config, gateways, shards, unix_ms);
        let restored = fresh.s.restore(fresh.now, &store.objects());
        fresh.store = Some(store);
        *self = fresh;
        restored
    }

    pub fn new(config: ServerConfig) -> Net {
        Net::new_at(config, T0_UNIX_MS)
    }

    /// A server of `gateways` gateways in front of its hub (connections
    /// spread over them in turn).
    pub fn with_gateways(config: ServerConfig, gateways: u16) -> Net {
        let mut n = Net::new(config.clone());
        n.s = Server::with_gateways(config, gateways, n.now, T0_UNIX_MS);
        n
    }

    /// A server with the demo config as changed by `change`.
    pub fn with(change: impl FnOnce(&mut ServerConfig)) -> Net {
        let mut config = ServerConfig::demo();
        change(&mut config);
        Net::new(config)
    }

    pub fn demo() -> Net {
        Net::new(ServerConfig::demo())
    }

    /// The same configuration started a minute later: every stream's
    /// history is gone.
    pub fn restarted(config: ServerConfig) -> Net {
        Net::new_at(config, T0_UNIX_MS + 60_000)
    }

    /// One drain of the server: frames of connections not held, then closes.
    pub fn pump(&mut self) {
        self.store_batches();
        let mut sink = ServerOut {
            held: std::mem::take(&mut self.held),
            ..ServerOut::default()
        };
        self.s.drain(&mut sink);
        self.held = sink.held;
        for (c, b) in sink.frames {
            let f = decode_frame(b.clone(), MAX).expect("server frames decode");
            self.out.entry(c).or_default().push_back((b, f));
        }
        self.closed.extend(sink.closes);
    }

    /// Stops taking `c`'s frames (they stay queued in the server).
    pub fn hold(&mut self, c: ConnId) {
        self.held.insert(c);
    }

    /// Takes `c`'s frames again, and drains.
    pub fn release(&mut self, c: ConnId) {
        self.held.remove(&c);
        self.pump();
    }

    /// Takes everything queued for `c` now, held or not.
    pub fn drain(&mut self, c: ConnId) {
        while let Some(b) = self.s.poll_transmit(c) {
            let f = decode_frame(b.clone(), MAX).expect("server frames decode");
            self.out.entry(c).or_default().push_back((b, f));
        }
    }

    /// Moves the clock by `d` in one step and fires what is due.
    pub fn advance(&mut self, d: Duration) {
        self.now += d;
        self.s.handle_timeout(self.now);
        self.pump();
    }

    /// Runs for `d`, the clock jumping from deadline to deadline.
    pub fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        let mut steps = 0;
        while clock::jump(&mut self.now, self.s.poll_timeout(), end) {
            self.s.handle_timeout(self.now);
            self.pump();
            steps += 1;
            assert!(
                steps < clock::MAX_STEPS,
                "the server's deadline never passes"
            );
        }
        self.s.handle_timeout(self.now);
        self.pump();
    }

    pub fn accept(&mut self) -> ConnId {
        self.s.accept(self.now)
    }

    pub fn accept_from(&mut self, ip: IpAddr) -> ConnId {
        self.s.accept_from(self.now, Some(ip))
    }

    /// The transport of `c` closed (the client went away): the server is told
    /// and what was queued for `c` is forgotten.
    pub fn lose(&mut self, c: ConnId) {
        self.s.handle_disconnected(self.now, c);
        self.out.remove(&c);
    }

    pub fn raw(&mut self, c: ConnId, bytes: Bytes) {
        self.s.handle_frame(self.now, c, bytes);
        self.pump();
    }

    /// A frame with request id 0 (Ack, Pong, Close).
    pub fn notify(&mut self, c: ConnId, body: Body) {
        self.raw(c, frame(0, body));
    }

    /// Sends `body` as a request with a fresh request id; the id.
    pub fn send(&mut self, c: ConnId, body: Body) -> u64 {
        self.rid += 1;
        let rid = self.rid;
        self.raw(c, frame(rid, body));
        rid
    }

    /// Takes the reply to `rid` out of the connection's frames.
    pub fn reply_to(&mut self, c: ConnId, rid: u64) -> Body {
        let q = self.out.entry(c).or_default();
        let pos = q
            .iter()
            .position(|(_, f)| f.request_id == rid)
            .unwrap_or_else(|| panic!("no reply with request id {rid} in {q:?}"));
        q.remove(pos).unwrap().1.body
    }

    /// Sends a request and takes its reply out of the connection's frames.
    pub fn req(&mut self, c: ConnId, body: Body) -> Body {
        let rid = self.send(c, body);
        self.reply_to(c, rid)
    }

    pub fn ok(&mut self, c: ConnId, body: Body) {
        match self.req(c, body) {
            Body::Ok(_) => {}
            other => panic!("expected ok, got {other:?}"),
        }
    }

    /// A request that must not be refused: its reply.
    pub fn served(&mut self, c: ConnId, body: Body) -> Body {
        let what = format!("{body:?}");
        match self.req(c, body) {
            Body::Error(e) => panic!("{what} refused with {}: {}", e.code, e.message),
            reply => reply,
        }
    }

    /// A request that must be refused: its error code.
    pub fn err(&mut self, c: ConnId, body: Body) -> u32 {
        code(self.req(c, body))
    }

    pub fn sent(&mut self, c: ConnId, body: Body) -> wire::SendReply {
        send_reply(self.req(c, body))
    }

    pub fn fetched(&mut self, c: ConnId, body: Body) -> wire::FetchReply {
        match self.req(c, body) {
            Body::FetchReply(r) => r,
            other => panic!("expected FetchReply, got {other:?}"),
        }
    }

    /// Every frame taken for `c` since the last call, in order, with its bytes.
    pub fn raw_frames(&mut self, c: ConnId) -> Vec<(Bytes, DecodedFrame)> {
        self.out.remove(&c).unwrap_or_default().into()
    }

    /// Every frame taken for `c` since the last call, in order.
    pub fn frames(&mut self, c: ConnId) -> Vec<DecodedFrame> {
        self.raw_frames(c).into_iter().map(|(_, f)| f).collect()
    }

    pub fn bodies(&mut self, c: ConnId) -> Vec<Body> {
        self.frames(c).into_iter().map(|f| f.body).collect()
    }

    /// Forgets the frames taken for `conns`.
    pub fn clear(&mut self, conns: &[ConnId]) {
        for c in conns {
            self.out.remove(c);
        }
    }

    /// The closes reported for `c`.
    pub fn closes_of(&self, c: ConnId) -> Vec<CloseReason> {
        self.closed
            .iter()
            .filter(|(x, _)| *x == c)
            .map(|(_, r)| r.clone())
            .collect()
    }

    pub fn login_with(&mut self, c: ConnId, req: wire::LoginRequest) -> Body {
        self.req(c, Body::Login(req))
    }

    /// A login with `req` on a new connection, which must succeed.
    pub fn login_req_on_new(&mut self, req: wire::LoginRequest) -> (ConnId, wire::LoginReply) {
        let c = self.accept();
        (c, login_reply(self.login_with(c, req)))
    }

    /// A fresh anonymous login of `uid` of the demo app on a new connection.
    pub fn login(&mut self, uid: u64) -> (ConnId, wire::LoginReply) {
        self.login_req_on_new(login_req(uid))
    }

    pub fn login_app(&mut self, appid: u32, uid: u64) -> (ConnId, wire::LoginReply) {
        self.login_req_on_new(wire::LoginRequest {
            appid,
            ..login_req(uid)
        })
    }

    pub fn ok_join(&mut self, c: ConnId, id: &str) -> wire::JoinReply {
        join_reply(self.req(c, join(id)))
    }

    /// Acknowledges the P2P stream up to `p2p_seq`.
    pub fn ack(&mut self, c: ConnId, p2p_seq: u64) {
        self.notify(c, Body::Ack(wire::Ack { p2p_seq }));
    }
}

// ---------------------------------------------------------------- frames

/// An encoded frame.
pub fn frame(request_id: u64, body: Body) -> Bytes {
    encode_frame(&Frame {
        request_id,
        body: Some(body),
    })
}

/// The encoded size of a frame the harness decoded (prost encodes
/// canonically: the same bytes the server queued).
pub fn size(f: &DecodedFrame) -> usize {
    encode_frame(&Frame::from(f.clone())).len()
}

pub fn code(b: Body) -> u32 {
    match b {
        Body::Error(e) => e.code,
        other => panic!("expected an error, got {other:?}"),
    }
}

pub fn join_reply(b: Body) -> wire::JoinReply {
    match b {
        Body::JoinReply(j) => j,
        other => panic!("expected JoinReply, got {other:?}"),
    }
}

pub fn login_reply(b: Body) -> wire::LoginReply {
    match b {
        Body::LoginReply(r) => r,
        other => panic!("expected LoginReply, got {other:?}"),
    }
}

pub fn send_reply(b: Body) -> wire::SendReply {
    match b {
        Body::SendReply(r) => r,
        other => panic!("expected SendReply, got {other:?}"),
    }
}

// ---------------------------------------------------------------- requests

pub fn login_req(uid: u64) -> wire::LoginRequest {
    wire::LoginRequest {
        protocol_version: wire::PROTOCOL_VERSION,
        appid: DEMO_APPID,
        uid,
        ..Default::default()
    }
}

/// A login of `uid` of `appid` with `token`.
pub fn token_req_of(appid: u32, uid: u64, token: String) -> wire::LoginRequest {
    wire::LoginRequest {
        appid,
        token,
        ..login_req(uid)
    }
}

/// A resumed login of `uid` taking over `instance_id`.
pub fn resume_req(
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

pub fn key(id: &str) -> wire::ChannelKey {
    wire::ChannelKey {
        region: wire::Region::Cn as i32,
        channel_id: id.into(),
    }
}

/// Where a client stands in a channel, for `Resume.channels`.
pub fn cursor(id: &str, epoch: u64, seq: u64) -> wire::ChannelCursor {
    wire::ChannelCursor {
        channel: Some(key(id)),
        epoch,
        seq,
    }
}

pub fn join(id: &str) -> Body {
    Body::Join(wire::JoinRequest {
        channel: Some(key(id)),
        ..Default::default()
    })
}

/// A rejoin of a channel held before the link was lost: its cursor
/// `resume_seq` in the stream of `epoch`.
pub fn rejoin(id: &str, epoch: u64, resume_seq: u64) -> Body {
    Body::Join(wire::JoinRequest {
        channel: Some(key(id)),
        resume_seq,
        rejoin: true,
        epoch,
        ..Default::default()
    })
}

pub fn leave(id: &str) -> Body {
    Body::Leave(wire::LeaveRequest {
        channel: Some(key(id)),
        ..Default::default()
    })
}

pub fn chat(text: &str) -> wire::ChatMessage {
    wire::ChatMessage {
        r#type: "text".into(),
        content: Bytes::from(text.to_owned()),
        app_extras: BTreeMap::new(),
    }
}

pub fn to_user_id(receiver: u64, text: &str, unreliable: bool, message_id: u64) -> Body {
    Body::SendToUser(wire::SendToUserRequest {
        receiver,
        message: Some(chat(text)),
        unreliable,
        message_id,
    })
}

pub fn to_channel_id(id: &str, text: &str, unreliable: bool, message_id: u64) -> Body {
    Body::SendToChannel(wire::SendToChannelRequest {
        channel: Some(key(id)),
        message: Some(chat(text)),
        unreliable,
        message_id,
    })
}

/// A P2P send with a fresh message id.
pub fn to_user_with(receiver: u64, text: &str, unreliable: bool) -> Body {
    to_user_id(receiver, text, unreliable, message_id())
}

/// A reliable P2P send with a fresh message id.
pub fn to_user(receiver: u64, text: &str) -> Body {
    to_user_with(receiver, text, false)
}

/// A channel send with a fresh message id.
pub fn to_channel_with(id: &str, text: &str, unreliable: bool) -> Body {
    to_channel_id(id, text, unreliable, message_id())
}

/// A reliable channel send with a fresh message id.
pub fn to_channel(id: &str, text: &str) -> Body {
    to_channel_with(id, text, false)
}

pub fn fetch(channel: Option<&str>, after_seq: u64) -> Body {
    Body::Fetch(wire::FetchRequest {
        channel: channel.map(key),
        after_seq,
    })
}

pub fn query_online() -> Body {
    Body::QueryOnline(wire::QueryOnlineRequest { uids: vec![2] })
}

pub fn attrs(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// An attribute write: of the channel (`channel_scope`) or of the user in it.
pub fn write(
    channel_scope: bool,
    id: &str,
    op: wire::AttributeOp,
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

/// A user attribute write in channel `id`, notified or not.
pub fn write_attrs(id: &str, notify: bool) -> Body {
    write(
        false,
        id,
        wire::AttributeOp::AddOrUpdate,
        attrs(&[("k", "v")]),
        &[],
        notify,
    )
}

// ---------------------------------------------------------------- reading frames

pub fn text(m: &Option<wire::ChatMessage>) -> String {
    String::from_utf8(m.as_ref().unwrap().content.to_vec()).unwrap()
}

/// The P2P pushes: (seq, text).
pub fn user_msgs(bodies: &[Body]) -> Vec<(u64, String)> {
    bodies
        .iter()
        .filter_map(|b| match b {
            Body::UserMessage(m) => Some((m.seq, text(&m.message))),
            _ => None,
        })
        .collect()
}

/// The channel pushes: (channel number, seq, text).
pub fn channel_msgs(bodies: &[Body]) -> Vec<(u32, u64, String)> {
    bodies
        .iter()
        .filter_map(|b| match b {
            Body::ChannelMessage(m) => Some((m.channel, m.seq, text(&m.message))),
            _ => None,
        })
        .collect()
}

/// The channel pushes: (seq, text).
pub fn channel_texts(bodies: &[Body]) -> Vec<(u64, String)> {
    channel_msgs(bodies)
        .into_iter()
        .map(|(_, seq, t)| (seq, t))
        .collect()
}

/// The channel number a push is about, for every channel push kind.
pub fn push_channel(b: &Body) -> Option<u32> {
    match b {
        Body::ChannelMessage(m) => Some(m.channel),
        Body::Membership(m) => Some(m.channel),
        Body::UserAttributesChanged(m) => Some(m.channel),
        Body::ChannelAttributesChanged(m) => Some(m.channel),
        Body::UserCountChanged(m) => Some(m.channel),
        _ => None,
    }
}

pub fn server_pings(bodies: &[Body]) -> usize {
    bodies.iter().filter(|b| matches!(b, Body::Ping(_))).count()
}

pub fn without_server_pings(bodies: Vec<Body>) -> Vec<Body> {
    bodies
        .into_iter()
        .filter(|b| !matches!(b, Body::Ping(_)))
        .collect()
}

/// The code of the first Close among `bodies`.
pub fn close_code(bodies: &[Body]) -> Option<u32> {
    bodies.iter().find_map(|b| match b {
        Body::Close(c) => Some(c.code),
        _ => None,
    })
}

/// The code of a Close that is the last of `bodies`.
pub fn last_close(bodies: &[Body]) -> Option<u32> {
    match bodies.last() {
        Some(Body::Close(c)) => Some(c.code),
        _ => None,
    }
}
