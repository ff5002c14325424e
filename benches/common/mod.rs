//! Shared by the benches: a counting global allocator, criterion's own
//! estimates read back for the summaries, and an in-memory server with
//! logged-in members.
#![allow(dead_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::PathBuf;
use std::sync::atomic::{AtomicIsize, AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hummer_channel::server::{self, ConnId, RateLimit, Server, ServerConfig, DEMO_APPID};
use hummer_channel::wire::{
    self, decode_frame, encode_frame, Body, ChannelKey, ChatMessage, DecodedFrame, Frame,
    JoinRequest, LoginRequest, SendToChannelRequest,
};

/// Counts allocations and live bytes (the system allocator underneath).
pub struct Counting;

static ALLOCS: AtomicUsize = AtomicUsize::new(0);
static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Relaxed);
        LIVE.fetch_add(layout.size() as isize, Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Relaxed);
        LIVE.fetch_add(layout.size() as isize, Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Relaxed);
        LIVE.fetch_add(new_size as isize - layout.size() as isize, Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Allocations (alloc, alloc_zeroed and realloc) so far.
pub fn allocs() -> usize {
    ALLOCS.load(Relaxed)
}

/// Bytes allocated and not freed.
pub fn live_bytes() -> isize {
    LIVE.load(Relaxed)
}

static STARTED: std::sync::OnceLock<std::time::SystemTime> = std::sync::OnceLock::new();

/// Call first in `main`: estimates older than this are not reported.
pub fn mark_start() {
    STARTED.get_or_init(std::time::SystemTime::now);
}

/// The median (criterion's point estimate, ns per iteration) of `group/bench`
/// measured by this process (not in `cargo test` mode, not filtered out).
pub fn criterion_median_ns(id: &str) -> Option<f64> {
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    let path = dir.join("criterion").join(id).join("new/estimates.json");
    let modified = std::fs::metadata(&path).ok()?.modified().ok()?;
    if modified < *STARTED.get()? {
        return None;
    }
    let text = std::fs::read_to_string(path).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v["median"]["point_estimate"].as_f64()
}

/// A 100-byte message.
pub fn message_100() -> ChatMessage {
    ChatMessage {
        r#type: "text".into(),
        content: Bytes::from(vec![b'x'; 100]),
        app_extras: Default::default(),
    }
}

pub fn key(id: &str) -> ChannelKey {
    ChannelKey {
        region: wire::Region::Cn as i32,
        channel_id: id.into(),
    }
}

/// A server with the demo app and no effective rate limit (a zero window
/// forgets every earlier send).
pub fn bench_server(t0: Instant) -> Server {
    let mut config = ServerConfig::demo();
    config.rate_limit_window = Duration::ZERO;
    // The benches flood from one uid on purpose: no rate limit applies.
    config.rate_limits.sends = RateLimit::new(u64::MAX / 4, Duration::from_secs(3));
    config.max_queued_bytes = 64 * 1024 * 1024;
    Server::new(config, t0, 1_700_000_000_000)
}

/// Counts (and black-boxes) the frames of a server drain; closes are
/// dropped.
struct CountFrames(usize);

impl server::Sink for CountFrames {
    fn transmit(&mut self, _conn: ConnId, frame: Bytes) {
        std::hint::black_box(&frame);
        self.0 += 1;
    }
    fn transport(&mut self, _action: server::TransportAction) {}
}

/// Drains every queued frame (one `Server::drain`); returns how many there
/// were.
pub fn drain(server: &mut Server) -> usize {
    let mut sink = CountFrames(0);
    server.drain(&mut sink);
    sink.0
}

/// Decodes the frames of a server drain queued for one connection (the
/// others are dropped, as are closes).
struct FramesFor {
    conn: ConnId,
    frames: Vec<DecodedFrame>,
}

impl server::Sink for FramesFor {
    fn transmit(&mut self, conn: ConnId, frame: Bytes) {
        if conn == self.conn {
            self.frames
                .push(decode_frame(frame, 1 << 20).expect("valid frame"));
        }
    }
    fn transport(&mut self, _action: server::TransportAction) {}
}

/// Drains and returns the frames queued for `conn` (others are dropped).
pub fn drain_for(server: &mut Server, conn: ConnId) -> Vec<DecodedFrame> {
    let mut sink = FramesFor {
        conn,
        frames: Vec::new(),
    };
    server.drain(&mut sink);
    sink.frames
}

pub fn frame(request_id: u64, body: Body) -> Bytes {
    encode_frame(&Frame {
        request_id,
        body: Some(body),
    })
}

/// Accepts a connection and logs it in as `uid`.
pub fn login(server: &mut Server, now: Instant, uid: u64) -> ConnId {
    let c = server.accept(now);
    server.handle_frame(
        now,
        c,
        frame(
            1,
            Body::Login(LoginRequest {
                protocol_version: wire::PROTOCOL_VERSION,
                appid: DEMO_APPID,
                uid,
                ..Default::default()
            }),
        ),
    );
    c
}

/// `conn` joins channel `id`; returns the channel number.
pub fn join(server: &mut Server, now: Instant, conn: ConnId, id: &str) -> u32 {
    server.handle_frame(
        now,
        conn,
        frame(
            2,
            Body::Join(JoinRequest {
                channel: Some(key(id)),
                ..Default::default()
            }),
        ),
    );
    for f in drain_for(server, conn) {
        if let Body::JoinReply(r) = f.body {
            return r.channel;
        }
    }
    panic!("no join reply")
}

/// A send of a 100-byte message to channel `id`, with its message id (a
/// repeated id is answered without delivering: every send needs its own).
pub fn send_to_channel(request_id: u64, message_id: u64, id: &str, unreliable: bool) -> Bytes {
    frame(
        request_id,
        Body::SendToChannel(SendToChannelRequest {
            channel: Some(key(id)),
            message: Some(message_100()),
            unreliable,
            message_id,
        }),
    )
}

use hummer_channel::client::{self, Event, LinkId, Session, SessionConfig, TransportAction};
use hummer_channel::{Attributes, Region, Uid};

/// The transport between one Session and the server: the Session's link
/// and the server's connection for it.
pub type Wire = Option<(LinkId, ConnId)>;

/// The Session's side of a drain: transport actions to carry out after
/// the drain (the Session is borrowed during it), frames into the server on
/// the current connection, events collected.
struct SessionSide<'a> {
    server: &'a mut Server,
    wire: Wire,
    now: Instant,
    actions: Vec<TransportAction>,
    events: &'a mut Vec<Event>,
    moved: bool,
}

impl client::Sink for SessionSide<'_> {
    fn transport(&mut self, action: TransportAction) {
        self.actions.push(action);
        self.moved = true;
    }
    fn transmit(&mut self, frame: Bytes) {
        if let Some((_, conn)) = self.wire {
            self.server.handle_frame(self.now, conn, frame);
        }
        self.moved = true;
    }
    fn event(&mut self, event: Event) {
        self.events.push(event);
    }
}

/// The server's side of a drain: frames for the Session's connection into
/// the Session on its link (others dropped); a close of that connection
/// noted, to be carried out after the drain.
struct ServerSide<'a> {
    session: &'a mut Session,
    wire: Wire,
    now: Instant,
    closed: bool,
    moved: bool,
}

impl server::Sink for ServerSide<'_> {
    fn transmit(&mut self, conn: ConnId, frame: Bytes) {
        if let Some((link, _)) = self.wire.filter(|(_, c)| *c == conn) {
            self.session
                .handle_frame(self.now, link, frame)
                .expect("valid frame");
            self.moved = true;
        }
    }
    fn transport(&mut self, action: server::TransportAction) {
        let server::TransportAction::Close { conn, .. } = action;
        if self.wire.is_some_and(|(_, c)| c == conn) {
            self.closed = true;
            self.moved = true;
        }
    }
}

/// Moves frames between `session` (on `wire`) and `server` until nothing
/// moves: each round is one `Session::drain` and one `Server::drain`, the
/// output of one being the input of the other. Returns the session's
/// events. Frames for other connections are dropped.
pub fn pump(
    session: &mut Session,
    wire: &mut Wire,
    server: &mut Server,
    now: Instant,
) -> Vec<Event> {
    let mut events = Vec::new();
    for _ in 0..1000 {
        let mut side = SessionSide {
            server: &mut *server,
            wire: *wire,
            now,
            actions: Vec::new(),
            events: &mut events,
            moved: false,
        };
        session.drain(&mut side);
        let (mut moved, actions) = (side.moved, side.actions);
        for action in actions {
            match action {
                TransportAction::Connect { link } => {
                    *wire = Some((link, server.accept(now)));
                    session.handle_connected(now, link);
                }
                TransportAction::Close { .. } => {
                    if let Some((_, conn)) = wire.take() {
                        server.handle_disconnected(now, conn);
                    }
                }
            }
        }
        let mut side = ServerSide {
            session: &mut *session,
            wire: *wire,
            now,
            closed: false,
            moved: false,
        };
        server.drain(&mut side);
        moved |= side.moved;
        if side.closed {
            if let Some((link, conn)) = wire.take() {
                server.handle_disconnected(now, conn);
                session.handle_disconnected(now, link);
            }
        }
        if !moved {
            break;
        }
    }
    events
}

/// A Session logged in as `uid` to `server`, joined to channel `channel`
/// (when given). Returns the session and its connection.
pub fn logged_in_session(
    server: &mut Server,
    now: Instant,
    uid: u64,
    channel: Option<&str>,
) -> (Session, ConnId) {
    let mut s = Session::new(SessionConfig::new(DEMO_APPID), now);
    let mut wire = None;
    s.login(now, Uid(uid), None, Some(Region::Cn)).unwrap();
    pump(&mut s, &mut wire, server, now);
    if let Some(id) = channel {
        let h = s.create_channel(Region::Cn, id).unwrap();
        s.join_channel(now, h, Attributes::new()).unwrap();
        pump(&mut s, &mut wire, server, now);
        assert!(s.is_joined(h));
    }
    (s, wire.expect("connected").1)
}
