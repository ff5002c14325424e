//! Shared by the benches: a counting global allocator, criterion's own
//! estimates read back for the summaries, and an in-memory server with
//! logged-in members.
#![allow(dead_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::PathBuf;
use std::sync::atomic::{AtomicIsize, AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hummer_channel::server::{ConnId, RateLimit, Server, ServerConfig, DEMO_APPID};
use hummer_channel::wire::{
    self, decode_frame, encode_frame, Body, ChannelKey, ChatMessage, Frame, JoinRequest,
    LoginRequest, SendToChannelRequest,
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

/// Drains every queued frame; returns how many there were.
pub fn drain(server: &mut Server) -> usize {
    let mut n = 0;
    while let Some(c) = server.poll_ready() {
        while let Some(f) = server.poll_transmit(c) {
            std::hint::black_box(&f);
            n += 1;
        }
    }
    n
}

/// Drains and returns the frames queued for `conn` (others are dropped).
pub fn drain_for(server: &mut Server, conn: ConnId) -> Vec<Frame> {
    let mut out = Vec::new();
    while let Some(c) = server.poll_ready() {
        while let Some(f) = server.poll_transmit(c) {
            if c == conn {
                out.push(decode_frame(f, 1 << 20).expect("valid frame"));
            }
        }
    }
    out
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
        if let Some(Body::JoinReply(r)) = f.body {
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

use hummer_channel::client::{Event, Session, SessionConfig, TransportAction};
use hummer_channel::{Attributes, Region, Uid};

/// Moves frames between `session` (on `conn`) and `server` until nothing
/// moves; returns the session's events. Frames for other connections are
/// dropped.
pub fn pump(
    session: &mut Session,
    conn: &mut Option<ConnId>,
    server: &mut Server,
    now: Instant,
) -> Vec<Event> {
    let mut events = Vec::new();
    for _ in 0..1000 {
        let mut moved = false;
        while let Some(action) = session.poll_transport() {
            match action {
                TransportAction::Connect => {
                    *conn = Some(server.accept(now));
                    session.handle_connected(now);
                }
                TransportAction::Close => {
                    if let Some(c) = conn.take() {
                        server.handle_closed(now, c)
                    }
                }
            }
            moved = true;
        }
        while let Some(f) = session.poll_transmit() {
            if let Some(c) = *conn {
                server.handle_frame(now, c, f)
            }
            moved = true;
        }
        while let Some(c) = server.poll_ready() {
            while let Some(f) = server.poll_transmit(c) {
                if Some(c) == *conn {
                    session.handle_frame(now, f).expect("valid frame");
                    moved = true;
                }
            }
        }
        while let Some(e) = session.poll_event() {
            events.push(e);
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
    let mut conn = None;
    s.login(now, Uid(uid), None, Some(Region::Cn)).unwrap();
    pump(&mut s, &mut conn, server, now);
    if let Some(id) = channel {
        let h = s.create_channel(Region::Cn, id).unwrap();
        s.join_channel(now, h, Attributes::new()).unwrap();
        pump(&mut s, &mut conn, server, now);
        assert!(s.is_joined(h));
    }
    (s, conn.expect("connected"))
}
