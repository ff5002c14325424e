//! The Server fed arbitrary frames (raw bytes, and well-formed requests with
//! arbitrary fields) across several connections, with closes and clock jumps:
//! never a panic, and every connection's queue stays bounded.
//!
//! After every step the server is drained once (`Server::drain`): only the
//! connection a `Pull` step names takes frames (the others' queues grow, up
//! to the bound), and the connections the server closes are closed then
//! (`handle_disconnected`). A `Close` step may name a connection closed
//! already: the server must ignore it.
#![no_main]

use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use bytes::Bytes;
use hummer_channel::server::{
    mint_token, ConnId, Server, ServerConfig, Sink, TransportAction, DEMO_APPID, DEMO_SECRET,
};
use hummer_channel::wire::{self, encode_frame, Body, Frame};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
enum Req {
    Login {
        uid: u8,
        token: u8,
        resume: Option<(u64, u8, u8, u8)>,
        version: u8,
    },
    Logout,
    Join {
        channel: u8,
        resume: u8,
        rejoin: bool,
        epoch: u64,
    },
    Leave {
        channel: u8,
    },
    SendUser {
        to: u8,
        size: u16,
        unreliable: bool,
        id: u8,
    },
    SendChannel {
        channel: u8,
        size: u16,
        id: u8,
    },
    Attrs {
        channel: u8,
        user: bool,
        op: i8,
        n: u8,
        notify: bool,
    },
    Read {
        channel: u8,
        kind: u8,
        uid: u8,
    },
    Count {
        n: u8,
    },
    Online {
        n: u16,
    },
    Fetch {
        channel: Option<u8>,
        after: u8,
    },
    Ack(u8),
    Ping,
    Refresh(u8),
    Region(i8),
    Info,
}

#[derive(Arbitrary, Debug)]
enum Step {
    Accept,
    Raw { conn: u8, bytes: Vec<u8> },
    Request { conn: u8, id: u8, req: Req },
    Close { conn: u8 },
    Advance(u16),
    Pull { conn: u8 },
}

fn key(c: u8) -> Option<wire::ChannelKey> {
    Some(wire::ChannelKey {
        region: i32::from(c % 8),
        channel_id: format!("c{}", c % 4),
    })
}

fn body(req: Req) -> Body {
    match req {
        Req::Login {
            uid,
            token,
            resume,
            version,
        } => Body::Login(wire::LoginRequest {
            protocol_version: if version < 250 { 2 } else { version.into() },
            appid: if token == 255 { 1 } else { DEMO_APPID },
            uid: uid.into(),
            token: match token % 4 {
                0 => String::new(),
                1 => mint_token(DEMO_SECRET, DEMO_APPID, uid.into(), 2_000_000_000),
                2 => mint_token(DEMO_SECRET, DEMO_APPID, uid.into(), 1),
                _ => "x.y.z".into(),
            },
            region: 1,
            resume: resume.map(|(e, i, p, c)| wire::Resume {
                p2p_epoch: e,
                instance_id: i.into(),
                p2p_seq: p.into(),
                channels: (0..c % 4)
                    .map(|n| wire::ChannelCursor {
                        channel: key(c.wrapping_add(n)),
                        epoch: e ^ u64::from(n),
                        seq: p.into(),
                    })
                    .collect(),
            }),
        }),
        Req::Logout => Body::Logout(wire::Empty {}),
        Req::Join {
            channel,
            resume,
            rejoin,
            epoch,
        } => Body::Join(wire::JoinRequest {
            channel: key(channel),
            extra: Default::default(),
            resume_seq: resume.into(),
            rejoin,
            epoch,
        }),
        Req::Leave { channel } => Body::Leave(wire::LeaveRequest {
            channel: key(channel),
            extra: Default::default(),
        }),
        Req::SendUser {
            to,
            size,
            unreliable,
            id,
        } => Body::SendToUser(wire::SendToUserRequest {
            message_id: id.into(),
            receiver: to.into(),
            message: Some(wire::ChatMessage {
                r#type: "t".into(),
                content: Bytes::from(vec![0; usize::from(size)]),
                app_extras: Default::default(),
            }),
            unreliable,
        }),
        Req::SendChannel { channel, size, id } => Body::SendToChannel(wire::SendToChannelRequest {
            message_id: id.into(),
            channel: key(channel),
            message: Some(wire::ChatMessage {
                r#type: "t".into(),
                content: Bytes::from(vec![1; usize::from(size)]),
                app_extras: Default::default(),
            }),
            unreliable: size % 2 == 0,
        }),
        Req::Attrs {
            channel,
            user,
            op,
            n,
            notify,
        } => {
            let w = wire::AttributesWrite {
                channel: key(channel),
                op: op.into(),
                attributes: (0..n % 40)
                    .map(|i| (format!("k{i}"), "v".repeat(usize::from(n) * 20)))
                    .collect(),
                keys: (0..n % 3).map(|i| format!("k{i}")).collect(),
                enable_notification: notify,
            };
            if user {
                Body::WriteUserAttributes(w)
            } else {
                Body::WriteChannelAttributes(w)
            }
        }
        Req::Read { channel, kind, uid } => match kind % 4 {
            0 => Body::GetUserList(key(channel).unwrap_or_default()),
            1 => Body::GetUserAttributes(wire::GetUserAttributesRequest {
                channel: key(channel),
                uid: uid.into(),
                keys: vec![],
            }),
            2 => Body::GetChannelAttributes(wire::GetChannelAttributesRequest {
                channel: key(channel),
                keys: vec!["k1".into()],
            }),
            _ => Body::GetUserListByAttribute(wire::GetUserListByAttributeRequest {
                channel: key(channel),
                key: "k0".into(),
                value: "v".into(),
            }),
        },
        Req::Count { n } => Body::GetUserCount(wire::GetUserCountRequest {
            region: 1,
            channel_ids: (0..n % 40).map(|i| format!("c{i}")).collect(),
        }),
        Req::Online { n } => Body::QueryOnline(wire::QueryOnlineRequest {
            uids: (0..u64::from(n % 300)).collect(),
        }),
        Req::Fetch { channel, after } => Body::Fetch(wire::FetchRequest {
            channel: channel.and_then(key),
            after_seq: after.into(),
        }),
        Req::Ack(n) => Body::Ack(wire::Ack { p2p_seq: n.into() }),
        Req::Ping => Body::Ping(wire::Ping { nonce: 3 }),
        Req::Refresh(uid) => Body::RefreshToken(wire::RefreshTokenRequest {
            token: mint_token(DEMO_SECRET, DEMO_APPID, uid.into(), 2_000_000_000),
        }),
        Req::Region(r) => Body::SetUserRegion(wire::SetUserRegionRequest { region: r.into() }),
        Req::Info => Body::GetInstanceInfo(wire::Empty {}),
    }
}

/// One drain's outputs: frames taken only on the connection pulled; the
/// connections to close.
struct Out {
    pull: Option<ConnId>,
    closed: Vec<ConnId>,
}

impl Sink for Out {
    fn writable(&mut self, conn: ConnId) -> bool {
        self.pull == Some(conn)
    }
    fn transmit(&mut self, conn: ConnId, _frame: Bytes) {
        assert_eq!(Some(conn), self.pull, "a frame for a full transport");
    }
    fn transport(&mut self, action: TransportAction) {
        let TransportAction::Close { conn, .. } = action;
        self.closed.push(conn);
    }
}

fuzz_target!(|steps: Vec<Step>| {
    let mut config = ServerConfig::demo();
    config.max_queued_bytes = 64 * 1024;
    config.rate_limit_sends = 20;
    let max_queued = config.max_queued_bytes;
    let mut now = Instant::now();
    let mut server = Server::new(config, now, 1_700_000_000_000);
    let mut conns: Vec<ConnId> = Vec::new();
    for step in steps.into_iter().take(300) {
        let pick = |c: u8| (!conns.is_empty()).then(|| conns[usize::from(c) % conns.len()]);
        let mut pull = None;
        match step {
            Step::Accept => conns.push(server.accept(now)),
            Step::Raw { conn, bytes } => {
                if let Some(c) = pick(conn) {
                    server.handle_frame(now, c, Bytes::from(bytes));
                }
            }
            Step::Request { conn, id, req } => {
                if let Some(c) = pick(conn) {
                    let frame = Frame {
                        request_id: id.into(),
                        body: Some(body(req)),
                    };
                    server.handle_frame(now, c, encode_frame(&frame));
                }
            }
            Step::Close { conn } => {
                if let Some(c) = pick(conn) {
                    server.handle_disconnected(now, c);
                }
            }
            Step::Advance(ms) => {
                now += Duration::from_millis(u64::from(ms) * 10);
                server.handle_timeout(now);
            }
            Step::Pull { conn } => pull = pick(conn),
        }
        let mut out = Out {
            pull,
            closed: Vec::new(),
        };
        server.drain(&mut out);
        if let Some(c) = pull {
            assert_eq!(server.queued_bytes(c), 0, "a pulled connection is drained");
        }
        for c in out.closed {
            server.handle_disconnected(now, c);
        }
        for &c in &conns {
            assert!(
                server.queued_bytes(c) <= max_queued + 64 * 1024,
                "queue bound"
            );
        }
    }
});
