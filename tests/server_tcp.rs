//! The in-process `ServerHandle` over TCP with raw length-prefixed frames
//! (the `hummer-server` binary's own tests are in server/tests/binary.rs).
//! Every wait is bounded.
#![cfg(feature = "server-tcp")]

#[path = "common/tcp.rs"]
mod tcp;

use std::time::{Duration, Instant};

use bytes::Bytes;
use hummer_channel::adapters::server_tcp::ServerHandle;
use hummer_channel::server::{ServerConfig, DEMO_APPID};
use hummer_channel::wire::{self, encode_frame, Body, Frame};
use tcp::Client;

fn room() -> wire::ChannelKey {
    wire::ChannelKey {
        region: wire::Region::Cn as i32,
        channel_id: "room".into(),
    }
}

fn chat(text: &str) -> Option<wire::ChatMessage> {
    Some(wire::ChatMessage {
        r#type: "text".into(),
        content: Bytes::from(text.to_owned()),
        ..Default::default()
    })
}

#[test]
fn handle_drop_connections_then_resume() {
    let handle =
        ServerHandle::spawn(ServerConfig::demo(), "127.0.0.1:0".parse().unwrap()).expect("spawn");
    let addr = handle.local_addr();
    let mut a = Client::connect(addr);
    let mut b = Client::connect(addr);
    let ra = a.login(1);
    b.login(2);
    handle.drop_connections();
    assert!(a.next().is_none(), "socket closed by fault injection");
    assert!(b.next().is_none());
    // Within grace, the instance is still there to take over.
    let mut a2 = Client::connect(addr);
    let r = a2.login_with(
        1,
        Some(wire::Resume {
            p2p_epoch: ra.p2p_epoch,
            instance_id: ra.instance_id,
            p2p_seq: 0,
            channels: Vec::new(),
        }),
    );
    assert!(r.resumed);
    assert_eq!(r.instance_id, ra.instance_id);
    let Body::OnlineStatus(s) = a2.req(Body::QueryOnline(wire::QueryOnlineRequest {
        uids: vec![2],
    })) else {
        panic!("no online status")
    };
    assert_eq!(
        s.status.get(&2),
        Some(&true),
        "uid 2 within its grace period"
    );
    handle.shutdown();
    let close = a2.next().expect("a Close frame before the socket closes");
    assert!(
        matches!(close.body, Body::Close(ref c) if c.code == 4006),
        "shutdown says so: {close:?}"
    );
    assert!(a2.next().is_none(), "shutdown closes connections");
}

#[test]
fn slow_reader_is_disconnected_and_others_carry_on() {
    let config = {
        let mut cfg = ServerConfig::demo();
        cfg.max_queued_bytes = 256 * 1024;
        cfg.rate_limit_sends = 1_000_000;
        cfg.rate_limits = {
            let mut r = hummer_channel::server::RateLimits::default();
            r.sends = hummer_channel::server::RateLimit::new(1_000_000, Duration::from_secs(3));
            r
        };
        cfg
    };
    let handle = ServerHandle::spawn(config, "127.0.0.1:0".parse().unwrap()).expect("spawn");
    let addr = handle.local_addr();
    let mut a = Client::connect(addr);
    let mut slow = Client::connect(addr);
    a.login(1);
    slow.login(2);
    for c in [&mut a, &mut slow] {
        assert!(matches!(
            c.req(Body::Join(wire::JoinRequest {
                channel: Some(room()),
                ..Default::default()
            })),
            Body::JoinReply(_)
        ));
    }
    // `slow` reads nothing while 32 MiB are broadcast (more than any socket
    // buffers hold); `a` reads its echoes and replies.
    let big = "x".repeat(16 * 1024);
    let started = Instant::now();
    for _ in 0..2048 {
        let Body::SendReply(_) = a.req(Body::SendToChannel(wire::SendToChannelRequest {
            channel: Some(room()),
            message: chat(&big),
            unreliable: true,
            message_id: next_message_id(),
        })) else {
            panic!("send refused")
        };
        assert!(started.elapsed() < Duration::from_secs(60));
    }
    // The slow reader finds the end of its stream (after whatever the socket
    // buffers held), not an endless one.
    let deadline = Instant::now() + Duration::from_secs(30);
    while slow.next().is_some() {
        assert!(Instant::now() < deadline, "slow reader never disconnected");
    }
    assert_eq!(
        a.req(Body::Ping(wire::Ping { nonce: 3 })),
        Body::Pong(wire::Pong { nonce: 3 })
    );
    handle.shutdown();
}

/// A message id no other send of this test process uses.
fn next_message_id() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// Every malformed-input case of docs/protocol.md ("Malformed input"), each
/// on a fresh connection: the server answers `Close{2001}` and closes.
#[test]
fn every_malformed_frame_case_gets_close_2001_then_eof() {
    let handle =
        ServerHandle::spawn(ServerConfig::demo(), "127.0.0.1:0".parse().unwrap()).expect("spawn");
    let addr = handle.local_addr();
    let prefixed = |frame: &[u8]| {
        let mut v = (frame.len() as u32).to_be_bytes().to_vec();
        v.extend_from_slice(frame);
        v
    };
    let encoded =
        |request_id: u64, body: Option<Body>| encode_frame(&Frame { request_id, body }).to_vec();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("zero length", vec![0, 0, 0, 0]),
        ("length over 65,536", 65_537u32.to_be_bytes().to_vec()),
        ("bytes that are no Frame", prefixed(&[0xff, 0xff, 0xff])),
        ("a Frame with no body", prefixed(&encoded(1, None))),
        (
            "an unknown body field (99)",
            prefixed(&[0x08, 0x01, 0x98, 0x06, 0x01]),
        ),
        (
            "a reply sent by a client",
            prefixed(&encoded(1, Some(Body::Ok(wire::Empty {})))),
        ),
        (
            "a push sent by a client",
            prefixed(&encoded(
                0,
                Some(Body::UserCountChanged(wire::UserCountPush {
                    channel: 1,
                    count: 1,
                })),
            )),
        ),
        (
            "a request with request_id 0",
            prefixed(&encoded(0, Some(Body::GetInstanceInfo(wire::Empty {})))),
        ),
    ];
    for (case, bytes) in cases {
        let mut c = Client::connect(addr);
        c.send_raw(&bytes);
        let close = c
            .next()
            .unwrap_or_else(|| panic!("{case}: EOF without Close"));
        assert!(
            matches!(close.body, Body::Close(ref x) if x.code == 2001),
            "{case}: {close:?}"
        );
        assert!(c.next().is_none(), "{case}: the link closes after Close");
    }
}

/// The frame size bound is inclusive: a 65,536-byte frame (a Ping padded
/// with an unknown field, which receivers ignore) is answered once logged in
/// (before, frames are held to 8 KiB).
#[test]
fn a_frame_of_exactly_the_maximum_size_is_accepted() {
    let handle =
        ServerHandle::spawn(ServerConfig::demo(), "127.0.0.1:0".parse().unwrap()).expect("spawn");
    let mut c = Client::connect(handle.local_addr());
    c.login(1);
    let mut frame = encode_frame(&Frame {
        request_id: 0,
        body: Some(Body::Ping(wire::Ping { nonce: 7 })),
    })
    .to_vec();
    // Field 100, length-delimited: key 0xa2 0x06, a 3-byte length, padding.
    let pad = 65_536 - frame.len() - 2 - 3;
    frame.extend_from_slice(&[0xa2, 0x06]);
    frame.extend_from_slice(&[
        (pad as u8) | 0x80,
        ((pad >> 7) as u8) | 0x80,
        (pad >> 14) as u8,
    ]);
    frame.resize(65_536, 0);
    let mut bytes = (frame.len() as u32).to_be_bytes().to_vec();
    bytes.extend_from_slice(&frame);
    c.send_raw(&bytes);
    let pong = c.next().expect("a Pong");
    assert!(
        matches!(pong.body, Body::Pong(wire::Pong { nonce: 7 })),
        "{pong:?}"
    );
}

/// Another protocol version: `ErrorReply{2010}`, then `Close{2010}`, then EOF.
#[test]
fn another_protocol_version_is_refused_with_2010() {
    let handle =
        ServerHandle::spawn(ServerConfig::demo(), "127.0.0.1:0".parse().unwrap()).expect("spawn");
    let mut c = Client::connect(handle.local_addr());
    let rid = c.send(Body::Login(wire::LoginRequest {
        protocol_version: 1,
        appid: DEMO_APPID,
        uid: 1,
        ..Default::default()
    }));
    let reply = c.next().expect("an error reply");
    assert_eq!(reply.request_id, rid);
    assert!(
        matches!(reply.body, Body::Error(ref e) if e.code == 2010),
        "{reply:?}"
    );
    let close = c.next().expect("a Close");
    assert!(
        matches!(close.body, Body::Close(ref x) if x.code == 2010),
        "{close:?}"
    );
    assert!(c.next().is_none());
}
