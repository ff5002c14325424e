//! What the server tests share beyond `common`: the imports, and the
//! helpers and scenes a few topics use.

pub use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
pub use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
pub use std::sync::atomic::{AtomicU64, Ordering};
pub use std::time::{Duration, Instant};

pub use bytes::Bytes;
pub use hummer_channel::server::{
    mint_token, AppConfig, CloseReason, ConfigError, ConnId, RateLimit, RateLimits, Server,
    ServerConfig, TransportAction, DEMO_APPID, DEMO_SECRET, MIN_SECRET_LEN,
};
pub use hummer_channel::wire::{
    self, decode_frame, encode_frame, AttributeOp, Body, DecodedFrame, Frame, SeqGap,
};
pub use hummer_channel::{ErrorCode, Limits};

pub use crate::common::clock::*;
pub use crate::common::raw::*;
pub use crate::common::raw_frame;
pub use crate::common::sinks::*;

// from server_frames
/// App secrets of the 32 bytes a server requires.
pub const ONE: &str = "the-secret-of-app-one-32-bytes-long";

// from server_frames
pub const OTHER: &str = "a-secret-of-nobody-at-all-32-bytes!";

// from server_frames

/// A chat message whose request frame is exactly `target` bytes or just
/// under: 2-byte extras keys with empty values cost 6 wire bytes for 2
/// counted bytes, so the counted size stays far below 32 KiB.
pub fn fat_message(wrap: impl Fn(wire::ChatMessage) -> Body, target: usize) -> Body {
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

// from server_frames
impl Net {
    /// `c` (of `uid`) loses its link and stays away past the grace period,
    /// so its memberships end; then `uid` logs in again (a new instance).
    pub fn depart(&mut self, c: ConnId, uid: u64) -> ConnId {
        self.s.handle_disconnected(self.now, c);
        self.advance(Duration::from_secs(31));
        self.login(uid).0
    }

    pub fn ping_keepalive(&mut self, c: ConnId) {
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

// from server_v2

/// uid 2 (`b`) in channels X and Y loses its link while messages go to X,
/// Y and to it by P2P, then resumes on `b2` listing X (cursor 1) only.
/// uid 1 (`a`) is in X and Y, uid 3 (`c`) in Y only, uid 4 (`d`) in X only.
/// `b2`'s frames are left queued in `n`.
pub struct ResumeScene {
    pub n: Net,
    pub a: ConnId,
    pub c: ConnId,
    pub d: ConnId,
    pub b2: ConnId,
    pub instance_id: u64,
    pub x: wire::JoinReply,
    pub y: wire::JoinReply,
}

// from server_v2
pub fn resume_scene() -> ResumeScene {
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

// from server_v2

#[derive(Copy, Clone, Debug)]
pub enum Kind {
    P2p,
    Channel,
}

// from server_v2
pub fn send_of(kind: Kind, text: &str, id: u64) -> Body {
    match kind {
        Kind::P2p => to_user_id(2, text, false, id),
        Kind::Channel => to_channel_id("room", text, false, id),
    }
}

// from server_v2
/// uid 1 (`a`) and uid 2 (`b`) both in "room", queues drained.
pub fn two_in_a_room(
    config: ServerConfig,
) -> (Net, ConnId, ConnId, wire::LoginReply, wire::JoinReply) {
    let mut n = Net::new(config);
    let (a, ra) = n.login(1);
    let (b, _) = n.login(2);
    let room = n.ok_join(a, "room");
    n.ok_join(b, "room");
    n.advance(secs(1));
    n.clear(&[a, b]);
    (n, a, b, ra, room)
}

// from server_v2
/// How many pushes with `text` reached `c` (P2P or channel).
pub fn delivered(n: &mut Net, c: ConnId, text: &str) -> usize {
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

// from server_limits
pub const T0_S: u64 = T0_UNIX_MS / 1000;

// from server_limits
/// What a queued frame costs besides its bytes (`conn::QUEUED_FRAME_OVERHEAD`).
pub const QUEUED_OVERHEAD: usize = 64;

// from server_limits
/// What a retained message costs besides its frame (`RETAINED_ENTRY_OVERHEAD`).
pub const RETAINED_OVERHEAD: usize = 128;

// from server_limits
/// A second app (appid mode and a good secret) and a third (appid mode).
pub const APP_B: u32 = 20_000;

// from server_limits
pub const APP_C: u32 = 30_000;

// from server_limits
/// An app whose logins need a token.
pub const APP_T: u32 = 40_000;

// from server_limits
pub const SECRET: &str = "a-test-secret-of-at-least-32-bytes!";

// from server_limits
pub const OTHER_SECRET: &str = "another-secret-of-at-least-32-bytes";

// from server_limits
pub fn token_req(uid: u64, token: String) -> wire::LoginRequest {
    wire::LoginRequest {
        appid: APP_T,
        token,
        ..login_req(uid)
    }
}

// from server_limits
/// The demo config with the send limits out of the way (tests that flood
/// on purpose).
pub fn flood_config() -> ServerConfig {
    let mut c = ServerConfig::demo();
    c.rate_limit_sends = 1_000_000;
    c.rate_limits.sends = RateLimit::new(1_000_000, secs(3));
    c
}

// from server_limits

/// Three apps: the demo app and `APP_C` are flooded, `APP_B` is the victim.
/// Each app may retain 2 MiB, the server 3 MiB (less than two apps' worth:
/// the global cap bites too).
pub fn three_apps() -> ServerConfig {
    let mut c = flood_config();
    for appid in [APP_B, APP_C] {
        c.apps.push({
            let mut cfg = AppConfig::with_secret(0, String::new());
            cfg.appid = appid;
            cfg.secret = Some(SECRET.into());
            cfg.allow_appid_mode = true;
            cfg.kick_older_logins = false;
            cfg
        });
    }
    c.app_max_retained_bytes = 2 << 20;
    c.max_retained_bytes = 3 << 20;
    c
}

// from server_limits

pub fn token_config() -> ServerConfig {
    let mut c = ServerConfig::demo();
    c.apps.push(AppConfig::with_secret(APP_T, SECRET));
    c.idle_timeout = secs(3600); // the heartbeat stays out of the way
    c
}

// from server_limits
pub fn refresh(token: String) -> Body {
    Body::RefreshToken(wire::RefreshTokenRequest { token })
}

// from server_limits
/// A token with the given claims, signed with `secret`.
pub fn signed(claims: serde_json::Value, secret: &str) -> String {
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("a token")
}

// from server_limits
pub fn warnings(bodies: &[Body]) -> Vec<wire::TokenWillExpirePush> {
    bodies
        .iter()
        .filter_map(|b| match b {
            Body::TokenWillExpire(p) => Some(*p),
            _ => None,
        })
        .collect()
}

impl Net {
    /// A login of `uid` of `APP_T` with a token expiring at `exp` (unix s).
    pub fn token_login(&mut self, uid: u64, exp: u64) -> (ConnId, wire::LoginReply) {
        self.login_req_on_new(token_req(uid, mint_token(SECRET, APP_T, uid, exp)))
    }
}
