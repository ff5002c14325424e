//! Attacks on a cluster's node links and role changes, with real
//! `hummer-server` processes and a real `redis-server` per test: raw peers
//! on the cluster port (wrong secret or protocol, no hello, half a frame,
//! a huge length prefix, garbage after a hello, ids outside their range, a
//! peer that never reads, many peers, peers in a loop), a link cut by a
//! proxy that stops forwarding, the hub node's Redis going away, a node
//! started while no hub node exists, and two nodes racing to be the hub
//! node. The servers must never panic, hang, or grow without bound, and
//! every refusal must be clear. Every wait is bounded.

mod node_support;
#[path = "../../tests/redis_support/mod.rs"]
mod redis_support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hummer_channel::adapters::blocking::Client;
use hummer_channel::client::{ChannelHandle, ConnectionState, SendOptions};
use hummer_channel::server::{
    decode_node_message, encode_node_message, ConnId, GatewayId, NodeMessage, ShardId, ToGateway,
    ToHub, TokenGrant, DEMO_APPID, MAX_NODE_FRAME, NODE_PROTOCOL,
};
use hummer_channel::wire::{self, FrameDecoder};
use hummer_channel::{Message, Region, Uid};
use node_support::*;
use redis_support::{raw_command, Persistence, RedisServer};

fn flags<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    CLUSTER.iter().chain(extra).copied().collect()
}

/// The hub node, once it says so.
fn hub_node(redis: &RedisServer, extra: &[&str]) -> (SocketAddr, Node) {
    let addr = free_addr();
    let node = Node::spawn(addr, &redis.url(), &flags(extra));
    node.line_containing(": hub node");
    (addr, node)
}

/// A string value of Redis (`GET key`), if set.
fn redis_get(redis: &RedisServer, key: &str) -> Option<String> {
    let reply = raw_command(redis.port(), &["GET", key]);
    let (head, rest) = reply.split_once("\r\n")?;
    let len: usize = head.strip_prefix('$')?.parse().ok()?;
    Some(rest.get(..len)?.to_owned())
}

/// Where the hub node takes links, and the cluster's secret.
fn hub_link(redis: &RedisServer) -> (SocketAddr, String) {
    let hub = redis_get(redis, "hummer:hub").expect("hummer:hub");
    let (_, address) = hub.split_once(' ').unwrap();
    let secret = redis_get(redis, "hummer:secret").expect("hummer:secret");
    (address.parse().unwrap(), secret)
}

/// The resident memory of a process, in KiB.
fn rss_kib(node: &Node) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", node.0.id())).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Whether the process still runs (not exited, not panicked).
fn alive(node: &mut Node) -> bool {
    node.0.try_wait().unwrap().is_none()
}

/// A raw peer on a cluster port: frames as the nodes write them.
struct Peer {
    stream: TcpStream,
    decoder: FrameDecoder,
}

#[derive(Debug, PartialEq)]
enum Ended {
    /// The other side closed (EOF or reset).
    Closed,
    /// Nothing came for the whole wait.
    Silent,
}

impl Peer {
    fn connect(addr: SocketAddr) -> Peer {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_nodelay(true).unwrap();
        Peer {
            stream,
            decoder: FrameDecoder::new(MAX_NODE_FRAME),
        }
    }

    /// Connected and welcomed with `secret`: the first gateway id and the
    /// hub's shard count.
    fn join(addr: SocketAddr, secret: &str, gateways: u16) -> (Peer, u16, u16) {
        let mut peer = Peer::connect(addr);
        peer.send(&hello(NODE_PROTOCOL, secret, gateways));
        match peer.recv(WAIT) {
            Ok(NodeMessage::Welcome {
                first_gateway,
                shards,
                ..
            }) => (peer, first_gateway.0, shards),
            other => panic!("not welcomed: {other:?}"),
        }
    }

    fn send(&mut self, m: &NodeMessage) {
        self.send_raw(&encode_node_message(m));
    }

    fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// The next message within `wait`, or how the link ended.
    fn recv(&mut self, wait: Duration) -> Result<NodeMessage, Ended> {
        let deadline = Instant::now() + wait;
        let mut buf = [0u8; 64 * 1024];
        loop {
            if let Some(frame) = self.decoder.next_frame().unwrap() {
                return Ok(decode_node_message(frame).unwrap());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Ended::Silent);
            }
            self.stream.set_read_timeout(Some(left)).unwrap();
            match self.stream.read(&mut buf) {
                Ok(0) => return Err(Ended::Closed),
                Ok(n) => self.decoder.extend(&buf[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return Err(Ended::Silent)
                }
                Err(_) => return Err(Ended::Closed),
            }
        }
    }

    /// The next message that is not a ping.
    fn recv_not_ping(&mut self, wait: Duration) -> Result<NodeMessage, Ended> {
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv(left)? {
                NodeMessage::Ping => continue,
                m => return Ok(m),
            }
        }
    }

    /// Reads (pings and all) until the hub node closes the link: how long
    /// that took, or `None` if it did not within `wait`.
    fn closed_within(&mut self, wait: Duration) -> Option<Duration> {
        let start = Instant::now();
        loop {
            let left = (start + wait).saturating_duration_since(Instant::now());
            match self.recv(left) {
                Ok(_) => continue,
                Err(Ended::Closed) => return Some(start.elapsed()),
                Err(Ended::Silent) => return None,
            }
        }
    }
}

fn hello(protocol: u32, secret: &str, gateways: u16) -> NodeMessage {
    NodeMessage::Hello {
        protocol,
        node: "raw-peer".into(),
        secret: secret.into(),
        gateways,
    }
}

/// The hub node still serves: a client logs in and hears its own message.
fn still_serves(addr: SocketAddr, uid: u64) {
    let (c, room) = member_on(&[addr], uid);
    c.send_message_to_channel(room, Message::new("t", "alive"), SendOptions::default())
        .unwrap();
}

// ---- The cluster port: hellos ----

#[test]
fn hellos_with_a_wrong_secret_protocol_or_size_are_refused_with_their_reason() {
    let redis = RedisServer::start(Persistence::None);
    let (addr, hub) = hub_node(&redis, &[]);
    let (link, secret) = hub_link(&redis);
    let refused = |m: NodeMessage| -> String {
        let mut peer = Peer::connect(link);
        peer.send(&m);
        let reason = match peer.recv(WAIT) {
            Ok(NodeMessage::Refused { reason }) => reason,
            other => panic!("{m:?}: {other:?}"),
        };
        assert_eq!(peer.recv(WAIT).err(), Some(Ended::Closed), "{m:?}");
        reason
    };
    assert_eq!(
        refused(hello(NODE_PROTOCOL, "not-the-secret", 1)),
        "wrong cluster secret"
    );
    // A secret of the right length but wrong.
    let mut wrong = secret.clone().into_bytes();
    wrong[0] ^= 1;
    assert_eq!(
        refused(hello(
            NODE_PROTOCOL,
            std::str::from_utf8(&wrong).unwrap(),
            1
        )),
        "wrong cluster secret"
    );
    assert!(refused(hello(NODE_PROTOCOL + 1, &secret, 1)).contains("node protocol"));
    // A node of protocol 3 (no word of a request answered whole) is told
    // why.
    assert_eq!(
        refused(hello(3, &secret, 1)),
        "node protocol 3; this hub speaks 4"
    );
    assert!(refused(hello(NODE_PROTOCOL, &secret, 0)).contains("gateways"));
    assert!(refused(hello(NODE_PROTOCOL, &secret, 65)).contains("gateways"));
    assert!(refused(NodeMessage::Ping).contains("begins with a hello"));
    assert!(refused(NodeMessage::Welcome {
        node: "me".into(),
        first_gateway: GatewayId(0),
        shards: 1
    })
    .contains("begins with a hello"));
    // Bytes that are not a node frame at all: closed, nothing said.
    let mut peer = Peer::connect(link);
    peer.send_raw(b"\x00\x00\x00\x05hello");
    assert_eq!(peer.recv(WAIT).err(), Some(Ended::Closed));
    let mut peer = Peer::connect(link);
    peer.send_raw(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(peer.closed_within(WAIT).is_some());
    // An empty frame.
    let mut peer = Peer::connect(link);
    peer.send_raw(&[0, 0, 0, 0]);
    assert!(peer.closed_within(WAIT).is_some());
    // A name that would forge log lines is logged quoted, on its line.
    let mut peer = Peer::connect(link);
    peer.send(&NodeMessage::Hello {
        protocol: NODE_PROTOCOL,
        node: "x\nFORGED hummer-server listening on 10.0.0.1:7300".into(),
        secret: "wrong".into(),
        gateways: 1,
    });
    assert!(matches!(peer.recv(WAIT), Ok(NodeMessage::Refused { .. })));
    let line = hub.line_containing("FORGED");
    assert!(line.contains(r#"node "x\nFORGED"#), "{line}");
    // And the right hello is still welcomed; the clients still served.
    let _ = Peer::join(link, &secret, 1);
    still_serves(addr, 1);
    drop(hub);
}

#[test]
fn a_peer_that_says_nothing_or_half_a_hello_is_dropped_after_the_hello_timeout() {
    let redis = RedisServer::start(Persistence::None);
    let (addr, hub) = hub_node(&redis, &[]);
    let (link, secret) = hub_link(&redis);
    let start = Instant::now();
    let mut silent = Peer::connect(link);
    let mut half = Peer::connect(link);
    let frame = encode_node_message(&hello(NODE_PROTOCOL, &secret, 1));
    half.send_raw(&frame[..frame.len() / 2]);
    // A slowloris: a byte of a hello every 500 ms.
    let mut drip = Peer::connect(link);
    let dripping = std::thread::spawn(move || {
        let start = Instant::now();
        for b in frame.iter() {
            if drip.stream.write_all(&[*b]).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        (drip.closed_within(WAIT), start.elapsed())
    });
    for peer in [&mut silent, &mut half] {
        assert!(peer.closed_within(WAIT).is_some(), "dropped");
        let took = start.elapsed();
        assert!(
            took > Duration::from_secs(3) && took < Duration::from_secs(8),
            "{took:?}"
        );
    }
    let (closed, took) = dripping.join().unwrap();
    assert!(
        closed.is_some() && took < Duration::from_secs(10),
        "{took:?}"
    );
    still_serves(addr, 1);
    drop(hub);
}

#[test]
fn a_huge_length_prefix_before_the_hello_is_closed_at_once() {
    let redis = RedisServer::start(Persistence::None);
    let (addr, mut hub) = hub_node(&redis, &[]);
    let (link, _) = hub_link(&redis);
    // Past the largest node frame: the decoder refuses it.
    let mut peer = Peer::connect(link);
    peer.send_raw(&u32::try_from(MAX_NODE_FRAME + 1).unwrap().to_be_bytes());
    let took = peer.closed_within(WAIT).expect("closed");
    assert!(took < Duration::from_secs(2), "{took:?}");
    peer = Peer::connect(link);
    peer.send_raw(&u32::MAX.to_be_bytes());
    assert!(peer.closed_within(WAIT).expect("closed") < Duration::from_secs(2));
    // The largest node frame, announced before any hello: no one who has
    // not shown the secret may make the hub node hold 16 MiB.
    let mut peer = Peer::connect(link);
    peer.send_raw(&u32::try_from(MAX_NODE_FRAME).unwrap().to_be_bytes());
    let took = peer.closed_within(WAIT).expect("closed");
    assert!(
        took < Duration::from_secs(2),
        "held a 16 MiB hello for {took:?}"
    );
    // Many peers streaming large hellos: the hub node does not hold them.
    let before = rss_kib(&hub);
    let streams: Vec<_> = (0..16)
        .map(|_| {
            std::thread::spawn(move || {
                let mut peer = Peer::connect(link);
                peer.send_raw(&u32::try_from(MAX_NODE_FRAME).unwrap().to_be_bytes());
                let chunk = vec![0x0au8; 64 * 1024];
                let mut sent = 0usize;
                while sent < MAX_NODE_FRAME - chunk.len() {
                    if peer.stream.write_all(&chunk).is_err() {
                        break;
                    }
                    sent += chunk.len();
                }
                sent
            })
        })
        .collect();
    let mut peak = 0;
    let sent: usize = streams
        .into_iter()
        .map(|t| {
            peak = peak.max(rss_kib(&hub));
            t.join().unwrap()
        })
        .sum();
    peak = peak.max(rss_kib(&hub));
    eprintln!("16 streamed hellos: {sent} bytes taken; hub RSS {before} KiB -> peak {peak} KiB");
    assert!(
        peak < before + 64 * 1024,
        "the hub node held {} KiB of hellos",
        peak - before
    );
    assert!(alive(&mut hub));
    still_serves(addr, 1);
}

#[test]
fn a_flood_of_silent_connections_does_not_take_the_hub_nodes_descriptors() {
    let redis = RedisServer::start(Persistence::None);
    let (addr, hub) = hub_node(&redis, &["--threads", "1"]);
    let (link, secret) = hub_link(&redis);
    // Few descriptors, so that the flood would take them all.
    let pid = hub.0.id().to_string();
    let limited = std::process::Command::new("prlimit")
        .args(["--pid", &pid, "--nofile=256:256"])
        .status()
        .unwrap();
    assert!(limited.success());
    // Connections that never say hello, more than the hub node has
    // descriptors for, from another address than the gateway node's.
    let flood: Vec<TcpStream> = (0..400)
        .map(|_| {
            let socket =
                socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
            let from: SocketAddr = "127.0.0.2:0".parse().unwrap();
            socket.bind(&from.into()).unwrap();
            socket.connect(&link.into()).unwrap();
            socket.into()
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    // The hub node's clients are served at once all the same ...
    let start = Instant::now();
    still_serves(addr, 1);
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "a client waited {:?}",
        start.elapsed()
    );
    // ... and a gateway node still joins.
    let (_peer, _, _) = Peer::join(link, &secret, 1);
    drop(flood);
}

// ---- The cluster port: after the hello ----

#[test]
fn garbage_after_a_hello_closes_the_link_and_frees_its_range() {
    let redis = RedisServer::start(Persistence::None);
    let (addr, mut hub) = hub_node(&redis, &[]);
    let (link, secret) = hub_link(&redis);
    let garbage: &[&[u8]] = &[
        // Not protobuf.
        b"\x00\x00\x00\x03\xff\xff\xff",
        // An empty frame.
        b"\x00\x00\x00\x00",
        // Past the largest frame.
        &[0xff, 0xff, 0xff, 0xff],
    ];
    for bytes in garbage {
        let (mut peer, _, _) = Peer::join(link, &secret, 1);
        peer.send_raw(bytes);
        assert!(peer.closed_within(WAIT).is_some(), "{bytes:?}");
    }
    // Messages a hub node never takes from a peer: a second hello, a
    // welcome, a refusal, a message for a gateway.
    let wrong = [
        hello(NODE_PROTOCOL, &secret, 1),
        NodeMessage::Welcome {
            node: "x".into(),
            first_gateway: GatewayId(64),
            shards: 1,
        },
        NodeMessage::Refused { reason: "x".into() },
    ];
    for m in wrong {
        let (mut peer, _, _) = Peer::join(link, &secret, 1);
        peer.send(&m);
        assert!(peer.closed_within(WAIT).is_some(), "{m:?}");
        hub.line_containing("unexpected");
    }
    assert!(alive(&mut hub));
    still_serves(addr, 1);
}

fn login(conn: ConnId, uid: u64) -> ToHub {
    ToHub::Login {
        conn,
        request_id: 1,
        request: wire::LoginRequest {
            protocol_version: wire::PROTOCOL_VERSION,
            appid: DEMO_APPID,
            uid,
            token: String::new(),
            region: wire::Region::Cn as i32,
            resume: None,
        },
        token: Ok(TokenGrant {
            is_anonymous: true,
            expires_at_s: None,
        }),
        peer: None,
        queued: 0,
    }
}

#[test]
fn a_peer_speaking_for_links_outside_its_range_or_for_a_missing_shard_is_closed() {
    let redis = RedisServer::start(Persistence::None);
    let (addr, mut hub) = hub_node(&redis, &["--threads", "2"]);
    let (link, secret) = hub_link(&redis);
    // A client of the hub node itself (gateway 0), which no peer may name.
    let (victim, room) = member_on(&[addr], 1);
    let (mut peer, first, shards) = Peer::join(link, &secret, 2);
    assert_eq!(shards, 2);
    assert!(first >= 64 && first % 64 == 0, "{first}");
    // Its own links are fine.
    peer.send(&NodeMessage::Hub {
        shard: ShardId(0),
        message: ToHub::LinkLost {
            conn: ConnId::new(GatewayId(first + 1), 1),
        },
    });
    assert_eq!(
        peer.recv_not_ping(Duration::from_secs(1)).err(),
        Some(Ended::Silent)
    );
    let outside = [
        // The hub node's own gateway: would end another client's link.
        (ShardId(0), GatewayId(0)),
        (ShardId(1), GatewayId(1)),
        // Past the two gateways it asked for, within its range.
        (ShardId(0), GatewayId(first + 2)),
        // Another range.
        (ShardId(0), GatewayId(first + 64)),
        (ShardId(0), GatewayId(u16::MAX)),
        // A shard the hub node does not have.
        (ShardId(2), GatewayId(first)),
        (ShardId(63), GatewayId(first)),
    ];
    for (i, (shard, gateway)) in outside.into_iter().enumerate() {
        if i > 0 {
            peer = Peer::join(link, &secret, 2).0;
        }
        let conn = ConnId::new(gateway, 1);
        peer.send(&NodeMessage::Hub {
            shard,
            message: ToHub::LinkLost { conn },
        });
        assert!(peer.closed_within(WAIT).is_some(), "{shard:?} {gateway:?}");
    }
    // A shard past MAX_SHARDS does not even decode.
    let (mut peer, first, _) = Peer::join(link, &secret, 1);
    let mut bad = encode_node_message(&NodeMessage::Hub {
        shard: ShardId(1),
        message: ToHub::LinkLost {
            conn: ConnId::new(GatewayId(first), 1),
        },
    })
    .to_vec();
    // HubMsg.shard is its field 1: `0x08 0x01`, made 127.
    let at = 4 + bad[4..].windows(2).position(|w| w == [0x08, 0x01]).unwrap();
    bad[at + 1] = 0x7f;
    peer.send_raw(&bad);
    assert!(peer.closed_within(WAIT).is_some());
    // The hub node's own client never noticed.
    victim
        .send_message_to_channel(
            room,
            Message::new("t", "still here"),
            SendOptions::default(),
        )
        .unwrap();
    assert_eq!(victim.connection_state().0, ConnectionState::Connected);
    assert!(alive(&mut hub));
}

#[test]
fn a_peers_server_api_calls_are_answered_and_only_for_the_hubs_shards() {
    use hummer_channel::server::{uid_shard, ApiCall, ApiReply, ApiRequest};
    let redis = RedisServer::start(Persistence::None);
    let (addr, mut hub) = hub_node(&redis, &["--threads", "2"]);
    let (link, secret) = hub_link(&redis);
    let (_online, _room) = member_on(&[addr], 1);
    let (mut peer, _, shards) = Peer::join(link, &secret, 1);
    let online = |shard| NodeMessage::ApiCall {
        id: 77,
        shard,
        call: ApiCall {
            appid: DEMO_APPID,
            request: ApiRequest::OnlineStatus { uids: vec![1, 2] },
        },
    };
    // Both uids asked of the shard of uid 1: it knows uid 1 only.
    peer.send(&online(uid_shard(DEMO_APPID, 1, shards)));
    match peer.recv_not_ping(WAIT) {
        Ok(NodeMessage::ApiAnswer {
            id: 77,
            answer: Ok(ApiReply::Online(status)),
        }) => assert!(status[&1], "{status:?}"),
        other => panic!("not the answer: {other:?}"),
    }
    // A shard the hub node does not have closes the link.
    peer.send(&online(ShardId(shards)));
    assert!(peer.closed_within(WAIT).is_some());
    assert!(alive(&mut hub));
}

#[test]
fn a_large_message_trickling_in_is_not_silence() {
    let redis = RedisServer::start(Persistence::None);
    let (addr, mut hub) = hub_node(&redis, &["--threads", "1"]);
    let (link, secret) = hub_link(&redis);
    let (mut peer, first, _) = Peer::join(link, &secret, 1);
    // One message of 1 MiB, at 200 KiB a second: 5 s without a whole
    // message, never 3 s without a byte.
    let big = encode_node_message(&NodeMessage::Hub {
        shard: ShardId(0),
        message: ToHub::Request {
            conn: ConnId::new(GatewayId(first), 1),
            request_id: 1,
            body: wire::Body::SendToChannel(wire::SendToChannelRequest {
                channel: Some(wire::ChannelKey {
                    region: wire::Region::Cn as i32,
                    channel_id: "room".into(),
                }),
                message: Some(wire::ChatMessage {
                    r#type: "t".into(),
                    content: vec![b'x'; 1 << 20].into(),
                    ..Default::default()
                }),
                unreliable: false,
                message_id: 1,
            }),
            queued: 0,
        },
    });
    let start = Instant::now();
    for chunk in big.chunks(20 * 1024) {
        let sent = peer.stream.write_all(chunk);
        assert!(
            sent.is_ok(),
            "the link was closed after {:?}",
            start.elapsed()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    peer.send(&NodeMessage::Ping);
    // (It answers the request, of a link that is not logged in.)
    loop {
        match peer.recv_not_ping(Duration::from_secs(2)) {
            Ok(m) => eprintln!("{m:?}"),
            Err(e) => {
                assert_eq!(e, Ended::Silent, "the link was closed");
                break;
            }
        }
    }
    assert!(alive(&mut hub));
    still_serves(addr, 1);
}

/// A raw peer's link `conn` logged in as `uid` and a member of "room".
fn raw_member(peer: &mut Peer, conn: ConnId, uid: u64) {
    peer.send(&NodeMessage::Hub {
        shard: ShardId(0),
        message: login(conn, uid),
    });
    peer.send(&NodeMessage::Hub {
        shard: ShardId(0),
        message: ToHub::Request {
            conn,
            request_id: 2,
            body: wire::Body::Join(wire::JoinRequest {
                channel: Some(wire::ChannelKey {
                    region: wire::Region::Cn as i32,
                    channel_id: "room".into(),
                }),
                ..Default::default()
            }),
            queued: 0,
        },
    });
}

#[test]
fn a_peer_that_never_reads_is_dropped_and_the_hub_node_stays_bounded() {
    let redis = RedisServer::start(Persistence::None);
    let (addr, mut hub) = hub_node(&redis, &["--threads", "1"]);
    let (link, secret) = hub_link(&redis);
    let (mut peer, first, _) = Peer::join(link, &secret, 1);
    let conn = ConnId::new(GatewayId(first), 1);
    raw_member(&mut peer, conn, 500);
    // It answers (the login's reply and the join's come back) ...
    assert!(matches!(
        peer.recv_not_ping(WAIT),
        Ok(NodeMessage::Gateway(_))
    ));
    // ... then pings, and never reads again.
    let pinging = Arc::new(AtomicBool::new(true));
    let mut writer = peer.stream.try_clone().unwrap();
    let ping = encode_node_message(&NodeMessage::Ping);
    let p = pinging.clone();
    let pinger = std::thread::spawn(move || {
        while p.load(Ordering::Relaxed) {
            if writer.write_all(&ping).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    });
    let before = rss_kib(&hub);
    // A member on the hub node sends what the peer's member must get.
    let senders: Vec<_> = (0..4)
        .map(|i| {
            std::thread::spawn(move || {
                let (c, room) = member_on(&[addr], 10 + i);
                let big = "x".repeat(30 * 1024);
                for n in 0..170 {
                    if let Err(e) = c.send_message_to_channel(
                        room,
                        Message::new("t", big.clone()),
                        SendOptions::default(),
                    ) {
                        panic!("send {n}: {e}");
                    }
                }
            })
        })
        .collect();
    for s in senders {
        s.join().unwrap();
    }
    let left = hub.line_containing("node raw-peer left");
    eprintln!("{left}");
    let after = rss_kib(&hub);
    eprintln!("hub RSS {before} KiB -> {after} KiB");
    assert!(after < before + 128 * 1024, "{before} -> {after}");
    pinging.store(false, Ordering::Relaxed);
    pinger.join().unwrap();
    assert!(alive(&mut hub));
    still_serves(addr, 1);
}

#[test]
fn a_peer_that_reads_slowly_keeps_its_link_while_it_reads() {
    let redis = RedisServer::start(Persistence::None);
    let (addr, mut hub) = hub_node(&redis, &["--threads", "1"]);
    let (link, secret) = hub_link(&redis);
    // A small receive buffer: what the hub node sends waits on its side.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(32 * 1024).unwrap();
    socket.connect(&link.into()).unwrap();
    let mut peer = Peer {
        stream: socket.into(),
        decoder: FrameDecoder::new(MAX_NODE_FRAME),
    };
    peer.send(&hello(NODE_PROTOCOL, &secret, 1));
    let Ok(NodeMessage::Welcome { first_gateway, .. }) = peer.recv(WAIT) else {
        panic!("not welcomed")
    };
    let conn = ConnId::new(first_gateway, 1);
    raw_member(&mut peer, conn, 500);
    // It pings, and reads about 1 MiB a second: slow, never stalled.
    let reading = Arc::new(AtomicBool::new(true));
    let mut writer = peer.stream.try_clone().unwrap();
    let r = reading.clone();
    let pinger = std::thread::spawn(move || {
        let ping = encode_node_message(&NodeMessage::Ping);
        while r.load(Ordering::Relaxed) && writer.write_all(&ping).is_ok() {
            std::thread::sleep(Duration::from_millis(300));
        }
    });
    let reader = std::thread::spawn(move || {
        let mut messages = 0usize;
        let mut buf = [0u8; 16 * 1024];
        peer.stream
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(40);
        while messages < 450 && Instant::now() < deadline {
            match peer.stream.read(&mut buf) {
                Ok(0) => return (messages, true),
                Ok(n) => peer.decoder.extend(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => return (messages, true),
            }
            while let Some(frame) = peer.decoder.next_frame().unwrap() {
                // The channel messages (30 KiB each).
                if let Ok(NodeMessage::Gateway(
                    ToGateway::Broadcast { frame, .. } | ToGateway::Send { frame, .. },
                )) = decode_node_message(frame)
                {
                    messages += usize::from(frame.len() > 30 * 1024);
                }
            }
            // 16 KiB per 8 ms: about 2 MiB a second.
            std::thread::sleep(Duration::from_millis(8));
        }
        (messages, false)
    });
    let senders: Vec<_> = (0..3)
        .map(|i| {
            std::thread::spawn(move || {
                let (c, room) = member_on(&[addr], 10 + i);
                let big = "x".repeat(30 * 1024);
                for _ in 0..150 {
                    c.send_message_to_channel(
                        room,
                        Message::new("t", big.clone()),
                        SendOptions::default(),
                    )
                    .unwrap();
                }
            })
        })
        .collect();
    for s in senders {
        s.join().unwrap();
    }
    let (messages, closed) = reader.join().unwrap();
    reading.store(false, Ordering::Relaxed);
    pinger.join().unwrap();
    eprintln!("the slow peer read {messages} messages; closed: {closed}");
    assert!(!closed, "the hub node dropped a peer that was reading");
    assert_eq!(messages, 450);
    assert!(alive(&mut hub));
}

/// A client's frame with its length prefix.
fn client_frame(request_id: u64, body: wire::Body) -> Vec<u8> {
    let frame = wire::encode_frame(&wire::Frame {
        request_id,
        body: Some(body),
    });
    let mut out = bytes::BytesMut::new();
    wire::write_length_prefixed(&frame, &mut out);
    out.to_vec()
}

/// No line holding `part` for `wait`.
fn no_line_within(node: &Node, part: &str, wait: Duration) {
    let deadline = Instant::now() + wait;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match node.1.recv_timeout(left) {
            Ok(line) => assert!(!line.contains(part), "{line}"),
            Err(_) => return,
        }
    }
}

#[test]
fn a_client_flooding_a_gateway_node_is_slowed_not_its_link_to_the_hub_node_dropped() {
    // The flood on the thread of the link to the hub node, then on
    // another one (connections are spread in turn).
    flood_a_gateway_node("1");
    flood_a_gateway_node("2");
}

fn flood_a_gateway_node(threads: &'static str) {
    let redis = RedisServer::start(Persistence::None);
    // A lease the hub node's stall (below) does not outlast.
    let args = |threads: &'static str| {
        [
            "--cluster-listen",
            "127.0.0.1:0",
            "--lease-secs",
            "10",
            "--threads",
            threads,
            "--log",
            "info",
        ]
    };
    let hub_at = free_addr();
    let hub = Node::spawn(hub_at, &redis.url(), &args("2"));
    // (The first node watches the free lease for a lease before taking it.)
    hub.line_containing_within(": hub node", WAIT + Duration::from_secs(10));
    let gw_at = free_addr();
    let gw = Node::spawn(gw_at, &redis.url(), &args(threads));
    gw.line_containing(": gateway node of hub node");
    let (a, _) = member_on(&[hub_at], 1);
    let (calm, calm_room) = member_on(&[gw_at], 2);
    // A client that sends as fast as TCP takes it, never waiting for a
    // reply.
    let mut flood = TcpStream::connect(gw_at).unwrap();
    let room = || wire::ChannelKey {
        region: wire::Region::Cn as i32,
        channel_id: "room".into(),
    };
    flood
        .write_all(&client_frame(
            1,
            wire::Body::Login(wire::LoginRequest {
                protocol_version: wire::PROTOCOL_VERSION,
                appid: DEMO_APPID,
                uid: 66,
                region: wire::Region::Cn as i32,
                ..Default::default()
            }),
        ))
        .unwrap();
    flood
        .write_all(&client_frame(
            2,
            wire::Body::Join(wire::JoinRequest {
                channel: Some(room()),
                ..Default::default()
            }),
        ))
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    // The hub node stalls (2 s: less than the links' silence limit) while
    // the flood comes.
    let hub_pid = hub.0.id().to_string();
    let signal = |sig: &str| {
        std::process::Command::new("kill")
            .args([sig, &hub_pid])
            .status()
            .unwrap();
    };
    signal("-STOP");
    flood
        .set_write_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let start = Instant::now();
    let mut sent = 0usize;
    let mut id = 3u64;
    while start.elapsed() < Duration::from_secs(2) {
        let frame = client_frame(
            id,
            wire::Body::SendToChannel(wire::SendToChannelRequest {
                channel: Some(room()),
                message: Some(wire::ChatMessage {
                    r#type: "t".into(),
                    content: vec![b'x'; 30 * 1024].into(),
                    ..Default::default()
                }),
                unreliable: false,
                message_id: id,
            }),
        );
        id += 1;
        match flood.write(&frame) {
            Ok(n) => sent += n,
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
    let gw_rss = rss_kib(&gw);
    signal("-CONT");
    eprintln!(
        "{threads} threads: the flood sent {} MiB in 2 s; gateway node RSS {gw_rss} KiB",
        sent >> 20
    );
    drop(flood);
    // Bounded (the queues between its threads count messages, not bytes:
    // with two threads they hold a few hundred MiB of 30 KiB requests).
    assert!(gw_rss < 1 << 20, "{gw_rss} KiB");
    // The gateway node kept its link, and its other client.
    no_line_within(&gw, "finding the hub node again", Duration::from_secs(5));
    assert_eq!(calm.connection_state().0, ConnectionState::Connected);
    calm.send_message_to_channel(calm_room, Message::new("t", "calm"), SendOptions::default())
        .unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        if text(&next_message(&a)) == "calm" {
            break;
        }
        assert!(Instant::now() < deadline);
    }
}

// ---- Many peers ----

#[test]
fn gateway_id_ranges_run_out_at_1022_links_and_links_in_a_loop_leak_none() {
    let redis = RedisServer::start(Persistence::None);
    let (addr, mut hub) = hub_node(&redis, &[]);
    let (link, secret) = hub_link(&redis);
    let baseline = rss_kib(&hub);
    // Every range but the hub node's own.
    let mut peers = Vec::new();
    let mut firsts = std::collections::BTreeSet::new();
    for _ in 0..1022 {
        let (peer, first, _) = Peer::join(link, &secret, 64);
        assert!(firsts.insert(first), "range {first} given twice");
        peers.push(peer);
    }
    assert_eq!(firsts.first(), Some(&64));
    assert_eq!(firsts.last(), Some(&(1022 * 64)));
    let full = rss_kib(&hub);
    let mut one_more = Peer::connect(link);
    one_more.send(&hello(NODE_PROTOCOL, &secret, 1));
    match one_more.recv(WAIT) {
        Ok(NodeMessage::Refused { reason }) => assert_eq!(reason, "no gateway ids left"),
        other => panic!("{other:?}"),
    }
    // The hub node's own clients are still served.
    still_serves(addr, 1);
    drop(peers);
    // Their ranges come back (once the hub node saw them go).
    let deadline = Instant::now() + WAIT;
    let (_peer, first, _) = loop {
        let mut peer = Peer::connect(link);
        peer.send(&hello(NODE_PROTOCOL, &secret, 1));
        match peer.recv(WAIT) {
            Ok(NodeMessage::Welcome { first_gateway, .. }) => break (peer, first_gateway.0, ()),
            Ok(NodeMessage::Refused { .. }) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50))
            }
            other => panic!("{other:?}"),
        }
    };
    assert!(first >= 64);
    drop(_peer);
    // Links that come and go, in a loop: no range nor memory kept.
    let cycle = |n: usize| {
        for _ in 0..n {
            let (mut peer, _, _) = Peer::join(link, &secret, 4);
            peer.send(&NodeMessage::Ping);
        }
    };
    cycle(1500);
    std::thread::sleep(Duration::from_millis(500));
    let warm = rss_kib(&hub);
    cycle(3000);
    std::thread::sleep(Duration::from_millis(500));
    let after = rss_kib(&hub);
    eprintln!(
        "hub RSS: {baseline} KiB at rest, {full} KiB with 1022 links, {warm} KiB after 1500 \
         links in a loop, {after} KiB after 3000 more"
    );
    assert!(after < warm + 8 * 1024, "{warm} KiB -> {after} KiB");
    // A real gateway node still joins, and a client on it is served.
    let (gw, _node) = {
        let a = free_addr();
        let n = Node::spawn(a, &redis.url(), &flags(&[]));
        n.line_containing(": gateway node of hub node");
        (a, n)
    };
    still_serves(gw, 2);
    assert!(alive(&mut hub));
}

// ---- A welcome the gateway node must not believe ----

#[test]
fn a_welcome_with_gateway_ids_past_u16_is_refused_by_the_gateway_node() {
    let redis = RedisServer::start(Persistence::None);
    // A hub node that is not one: it holds the lease and says where it is.
    let fake = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let at = fake.local_addr().unwrap();
    raw_command(
        redis.port(),
        &["SET", "hummer:lease", "fake", "PX", "60000"],
    );
    raw_command(redis.port(), &["SET", "hummer:hub", &format!("fake {at}")]);
    raw_command(redis.port(), &["SET", "hummer:secret", "s"]);
    let mut node = Node::spawn(free_addr(), &redis.url(), &flags(&["--threads", "2"]));
    fake.set_nonblocking(false).unwrap();
    let (stream, _) = fake.accept().unwrap();
    let mut peer = Peer {
        stream,
        decoder: FrameDecoder::new(MAX_NODE_FRAME),
    };
    assert!(matches!(
        peer.recv(WAIT),
        Ok(NodeMessage::Hello { gateways: 2, .. })
    ));
    peer.send(&NodeMessage::Welcome {
        node: "fake".into(),
        first_gateway: GatewayId(u16::MAX),
        shards: 1,
    });
    let line = node.line_containing("cannot join hub node fake");
    assert!(line.contains("past the last id"), "{line}");
    std::thread::sleep(Duration::from_millis(500));
    assert!(alive(&mut node), "the gateway node died");
}

// ---- TLS links ----

/// A rustls client trusting `trusted` (a CA's PEM), showing `cert` (a
/// chain and a key, PEM) when given.
fn tls_client(trusted: &str, cert: Option<(String, String)>) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(trusted.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    Arc::new(match cert {
        None => builder.with_no_client_auth(),
        Some((chain, key)) => {
            let chain = CertificateDer::pem_slice_iter(chain.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
    })
}

fn tls_connection(config: Arc<rustls::ClientConfig>) -> rustls::ClientConnection {
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    rustls::ClientConnection::new(config, name).unwrap()
}

/// A raw peer on a TLS cluster port: connects, says hello with `secret`
/// (the TLS handshake on the way) and reads the answer: a message, or
/// why none came (the TLS error, or the link closed).
fn tls_hello(
    link: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    secret: &str,
) -> (
    Result<NodeMessage, String>,
    rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
) {
    let tcp = TcpStream::connect(link).unwrap();
    tcp.set_read_timeout(Some(WAIT)).unwrap();
    let mut tls = rustls::StreamOwned::new(tls_connection(config), tcp);
    let hello = encode_node_message(&hello(NODE_PROTOCOL, secret, 1));
    if let Err(e) = tls.write_all(&hello).and_then(|()| tls.flush()) {
        return (Err(e.to_string()), tls);
    }
    let mut decoder = FrameDecoder::new(MAX_NODE_FRAME);
    let mut buf = [0u8; 4096];
    let answer = loop {
        if let Some(frame) = decoder.next_frame().unwrap() {
            break Ok(decode_node_message(frame).unwrap());
        }
        match tls.read(&mut buf) {
            Ok(0) => break Err("closed".to_owned()),
            Ok(n) => decoder.extend(&buf[..n]),
            Err(e) => break Err(e.to_string()),
        }
    };
    (answer, tls)
}

/// The lines holding `part` for `wait`.
fn lines_within(node: &Node, part: &str, wait: Duration) -> Vec<String> {
    let deadline = Instant::now() + wait;
    let mut found = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match node.1.recv_timeout(left) {
            Ok(line) if line.contains(part) => found.push(line),
            Ok(_) => {}
            Err(_) => break,
        }
    }
    found
}

/// A hub node whose links speak TLS with certificates of `ca`.
fn tls_hub_node(redis: &RedisServer, ca: &TestCa, dir: &std::path::Path) -> (SocketAddr, Node) {
    let addr = free_addr();
    let tls = ca.node_flags(dir, "hub", &ca.pem);
    let node = Node::spawn(addr, &redis.url(), &with_cluster(&tls));
    node.line_containing(": hub node");
    (addr, node)
}

#[test]
fn a_tls_hub_node_refuses_plain_peers_and_certificates_its_ca_did_not_sign() {
    let redis = RedisServer::start(Persistence::None);
    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    let (addr, mut hub) = tls_hub_node(&redis, &ca, dir.path());
    let (link, secret) = hub_link(&redis);

    // A plain peer with the right secret: its hello is no TLS record; at
    // most an alert comes back, never a welcome.
    let mut plain = TcpStream::connect(link).unwrap();
    plain
        .write_all(&encode_node_message(&hello(NODE_PROTOCOL, &secret, 1)))
        .unwrap();
    plain.set_read_timeout(Some(WAIT)).unwrap();
    let mut answer = Vec::new();
    let _ = plain.read_to_end(&mut answer);
    assert!(
        answer.is_empty() || answer[0] == 0x15,
        "not a TLS alert: {answer:?}"
    );
    // A TLS peer without a client certificate, and one whose certificate
    // another CA signed (it trusts the hub node's): refused.
    let (no_cert, _) = tls_hello(link, tls_client(&ca.pem, None), &secret);
    let other = TestCa::new();
    let (foreign, _) = tls_hello(link, tls_client(&ca.pem, Some(other.node())), &secret);
    for answer in [&no_cert, &foreign] {
        assert!(answer.is_err(), "{answer:?}");
    }
    eprintln!("no certificate: {no_cert:?}; another CA's: {foreign:?}");
    // Each said once, quoted.
    let lines = lines_within(&hub, "failed its TLS handshake", Duration::from_secs(1));
    eprintln!("{lines:#?}");
    assert_eq!(lines.len(), 3, "{lines:#?}");
    assert!(lines.iter().all(|l| l.contains(": \"")), "{lines:#?}");
    assert!(lines[0].contains("a plain link"), "{}", lines[0]);
    assert!(
        lines[1..].iter().all(|l| l.contains("certificate")),
        "{lines:#?}"
    );

    // The CA's certificate and the secret: welcomed (the refusals above
    // were for what they lacked).
    let (welcome, _peer) = tls_hello(link, tls_client(&ca.pem, Some(ca.node())), &secret);
    assert!(
        matches!(welcome, Ok(NodeMessage::Welcome { .. })),
        "{welcome:?}"
    );
    // With the certificate, the secret is still checked.
    let (wrong, _) = tls_hello(link, tls_client(&ca.pem, Some(ca.node())), "wrong");
    assert!(
        matches!(&wrong, Ok(NodeMessage::Refused { reason }) if reason.contains("secret")),
        "{wrong:?}"
    );
    assert!(alive(&mut hub));
    still_serves(addr, 1);
}

#[test]
fn a_stalled_tls_handshake_holds_its_hello_slot_no_longer_than_the_hello_deadline() {
    let redis = RedisServer::start(Persistence::None);
    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    let (addr, mut hub) = tls_hub_node(&redis, &ca, dir.path());
    let (link, secret) = hub_link(&redis);
    // Half a real ClientHello, then nothing, from every slot of one
    // address (8).
    let mut client_hello = Vec::new();
    tls_connection(tls_client(&ca.pem, Some(ca.node())))
        .write_tls(&mut client_hello)
        .unwrap();
    let start = Instant::now();
    let mut stalled: Vec<Peer> = (0..8)
        .map(|_| {
            let mut peer = Peer::connect(link);
            peer.send_raw(&client_hello[..client_hello.len() / 2]);
            peer
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    // They hold the address's slots: one more is closed at once.
    let mut more = Peer::connect(link);
    let took = more.closed_within(WAIT).expect("closed");
    assert!(took < Duration::from_secs(1), "{took:?}");
    // Each is dropped by the hello deadline (5 s from its connection).
    for peer in &mut stalled {
        let mut rest = Vec::new();
        peer.stream.set_read_timeout(Some(WAIT)).unwrap();
        let _ = peer.stream.read_to_end(&mut rest);
        let took = start.elapsed();
        assert!(
            took > Duration::from_secs(4) && took < Duration::from_secs(7),
            "{took:?}"
        );
    }
    let lines = lines_within(&hub, "no TLS handshake within 5s", Duration::from_secs(1));
    assert_eq!(lines.len(), 8, "{lines:#?}");
    // ... and gave its slot back: a node joins from that address.
    let (welcome, _peer) = tls_hello(link, tls_client(&ca.pem, Some(ca.node())), &secret);
    assert!(
        matches!(welcome, Ok(NodeMessage::Welcome { .. })),
        "{welcome:?}"
    );
    assert!(alive(&mut hub));
    still_serves(addr, 1);
}

/// A client's connection to `addr` is closed at once, before any login.
fn turned_away(addr: SocketAddr) {
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut buf = [0u8; 16];
    match c.read(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("not turned away: {other:?}"),
    }
}

#[test]
fn a_gateway_node_that_does_not_trust_the_hub_nodes_certificate_does_not_join() {
    let redis = RedisServer::start(Persistence::None);
    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    let (_, hub) = tls_hub_node(&redis, &ca, dir.path());
    // Its own certificate is the cluster CA's, but it trusts another CA.
    let other = TestCa::new();
    let tls = ca.node_flags(dir.path(), "gateway", &other.pem);
    let gateway_addr = free_addr();
    let gateway = Node::spawn(gateway_addr, &redis.url(), &with_cluster(&tls));
    let line = gateway.line_containing("cannot join hub node");
    eprintln!("{line}");
    assert!(
        line.contains("TLS handshake") && line.contains("certificate"),
        "{line}"
    );
    // Said once, not at every attempt (one every third of the lease).
    no_line_within(&gateway, "cannot join hub node", Duration::from_secs(2));
    no_line_within(
        &gateway,
        "gateway node of hub node",
        Duration::from_millis(10),
    );
    // Its clients are turned away meanwhile; the hub node's served.
    turned_away(gateway_addr);
    hub.line_containing("failed its TLS handshake");
    drop(hub);
}

#[test]
fn nodes_with_and_without_tls_do_not_join_each_other() {
    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    let tls = ca.node_flags(dir.path(), "node", &ca.pem);
    // A plain node, a TLS hub node.
    let redis = RedisServer::start(Persistence::None);
    let (_, hub) = tls_hub_node(&redis, &ca, dir.path());
    let plain_addr = free_addr();
    let plain = Node::spawn(plain_addr, &redis.url(), &flags(&[]));
    let line = plain.line_containing("cannot join hub node");
    eprintln!("a plain node: {line}");
    assert!(line.contains("the other node speaks TLS"), "{line}");
    hub.line_containing("failed its TLS handshake");
    turned_away(plain_addr);
    drop((plain, hub));
    // A TLS node, a plain hub node.
    let redis = RedisServer::start(Persistence::None);
    let (_, hub) = hub_node(&redis, &[]);
    let tls_addr = free_addr();
    let node = Node::spawn(tls_addr, &redis.url(), &with_cluster(&tls));
    let line = node.line_containing("cannot join hub node");
    eprintln!("a TLS node: {line}");
    assert!(line.contains("TLS handshake"), "{line}");
    let line = hub.line_containing("failed before its hello");
    eprintln!("a plain hub node: {line}");
    assert!(line.contains("the other node speaks TLS"), "{line}");
    turned_away(tls_addr);
}

// ---- Role changes ----

/// A TCP proxy that forwards to `upstream` until frozen: then it forwards
/// nothing, either way, and connects no new link (a partition); thawed, it
/// forwards again.
struct Proxy {
    addr: SocketAddr,
    frozen: Arc<AtomicBool>,
}

impl Proxy {
    fn start(upstream: SocketAddr) -> Proxy {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let frozen = Arc::new(AtomicBool::new(false));
        let f = frozen.clone();
        std::thread::spawn(move || {
            for down in listener.incoming() {
                let Ok(down) = down else { return };
                let f = f.clone();
                std::thread::spawn(move || {
                    while f.load(Ordering::Relaxed) {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    let Ok(up) = TcpStream::connect(upstream) else {
                        return;
                    };
                    let (d2, u2) = (down.try_clone().unwrap(), up.try_clone().unwrap());
                    let f2 = f.clone();
                    std::thread::spawn(move || pump(d2, u2, &f2));
                    pump(up, down, &f);
                });
            }
        });
        Proxy { addr, frozen }
    }

    fn freeze(&self, frozen: bool) {
        self.frozen.store(frozen, Ordering::Relaxed);
    }
}

/// Copies `from` to `to` while not frozen; ends both at EOF or an error.
fn pump(mut from: TcpStream, mut to: TcpStream, frozen: &AtomicBool) {
    from.set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    let mut buf = [0u8; 16 * 1024];
    loop {
        if frozen.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
    }
    let _ = from.shutdown(std::net::Shutdown::Both);
    let _ = to.shutdown(std::net::Shutdown::Both);
}

/// Waits for a line holding `part`: how long it took.
fn line_within(node: &Node, part: &str) -> Duration {
    let start = Instant::now();
    node.line_containing(part);
    start.elapsed()
}

#[test]
fn a_partition_between_a_gateway_node_and_the_hub_node_is_seen_by_both_and_heals() {
    let redis = RedisServer::start(Persistence::None);
    let cluster_at = free_addr();
    let proxy = Proxy::start(cluster_at);
    let (cluster_listen, advertise) = (cluster_at.to_string(), proxy.addr.to_string());
    let args = [
        "--cluster-listen",
        &cluster_listen,
        "--cluster-advertise",
        &advertise,
        "--lease-secs",
        "1",
        "--presence-grace-secs",
        "2",
        "--log",
        "info",
    ];
    let hub_at = free_addr();
    let hub = Node::spawn(hub_at, &redis.url(), &args);
    hub.line_containing(": hub node");
    let gw_at = free_addr();
    let gw = Node::spawn(gw_at, &redis.url(), &flags(&[]));
    gw.line_containing(": gateway node of hub node");
    let (a, room_a) = member_on(&[hub_at], 1);
    // uid 2 knows the gateway node, then the hub node; uid 5 only the
    // gateway node.
    let (b, _) = member_on(&[gw_at, hub_at], 2);
    let (lonely, _) = member_on(&[gw_at], 5);
    a.send_message_to_channel(room_a, Message::new("t", "m1"), SendOptions::default())
        .unwrap();
    assert_eq!(text(&next_message(&b)), "m1");

    proxy.freeze(true);
    let cut = Instant::now();
    let hub_saw = line_within(&hub, "left (");
    let gw_saw = line_within(&gw, "finding the hub node again");
    eprintln!(
        "the hub node saw the partition after {hub_saw:?}, the gateway node after {:?}",
        cut.elapsed()
    );
    assert!(hub_saw < Duration::from_secs(5), "{hub_saw:?}");
    assert!(
        cut.elapsed() < Duration::from_secs(6),
        "{:?}",
        cut.elapsed()
    );
    let _ = gw_saw;
    // Sent while uid 2 is away: it gets them once it resumed on the hub
    // node.
    for t in ["m2", "m3"] {
        a.send_message_to_channel(room_a, Message::new("t", t), SendOptions::default())
            .unwrap();
    }
    // A client new to the service, that knows the gateway node first,
    // is turned away there and served by the hub node at once.
    let start = Instant::now();
    let (newcomer, _) = member_on(&[gw_at, hub_at], 7);
    assert_eq!(newcomer.current_endpoint(), Some(hub_at.into()));
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    reconnected(&b);
    let resumed = cut.elapsed();
    assert_eq!(b.current_endpoint(), Some(hub_at.into()));
    assert_eq!(text(&next_message(&b)), "m2");
    assert_eq!(text(&next_message(&b)), "m3");
    eprintln!("uid 2 resumed on the hub node {resumed:?} after the cut");
    // uid 5 had nowhere to go: gone after the grace period.
    let deadline = Instant::now() + WAIT;
    while a
        .query_users_online_status(vec![Uid(5)])
        .unwrap()
        .get(&Uid(5))
        != Some(&false)
    {
        assert!(Instant::now() < deadline, "uid 5 still online");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Healed: the gateway node joins again and serves.
    proxy.freeze(false);
    gw.line_containing(": gateway node of hub node");
    reconnected(&lonely);
    still_serves(gw_at, 6);
}

#[test]
fn the_hub_nodes_redis_gone_clients_on_every_node_are_refused_with_4010() {
    let mut redis = RedisServer::start(Persistence::Aof);
    let (hub_at, hub) = hub_node(&redis, &[]);
    let gw_at = free_addr();
    let gw = Node::spawn(gw_at, &redis.url(), &flags(&[]));
    gw.line_containing(": gateway node of hub node");
    let (a, room_a) = member_on(&[hub_at], 1);
    let (c, room_c) = member_on(&[gw_at], 2);
    redis.kill();
    // The hub node's own clients: refused once it found out.
    let send = |client: &Client, room: ChannelHandle, text: &str| {
        let start = Instant::now();
        let r = client.send_message_to_channel(
            room,
            Message::new("t", text.to_owned()),
            SendOptions::default(),
        );
        (r.map_err(|e| e.code().map(|c| c.code())), start.elapsed())
    };
    let deadline = Instant::now() + WAIT;
    loop {
        let (r, took) = send(&a, room_a, "a");
        eprintln!("hub node client: {r:?} after {took:?}");
        if r == Err(Some(4010)) {
            break;
        }
        assert!(Instant::now() < deadline, "never refused");
    }
    // The gateway node's: refused too, at once, not after a timeout.
    let (r, took) = send(&c, room_c, "c");
    eprintln!("gateway node client: {r:?} after {took:?}");
    assert_eq!(r, Err(Some(4010)));
    assert!(took < Duration::from_secs(2), "{took:?}");
    // Redis back: both serve again, and nothing a client saw is lost.
    redis.restart();
    let deadline = Instant::now() + WAIT;
    while send(&c, room_c, "back").0.is_err() {
        assert!(Instant::now() < deadline, "still refused");
        std::thread::sleep(Duration::from_millis(100));
    }
    let got = text(&next_message(&a));
    assert!(got == "back" || got == "a" || got == "c", "{got}");
    drop((hub, gw));
}

#[test]
fn a_gateway_node_joining_while_the_hub_node_cannot_reach_redis_refuses_with_it() {
    let redis = RedisServer::start(Persistence::Aof);
    // The hub node reaches Redis through a proxy that a partition
    // freezes; the gateway node reaches it directly. The lease is long:
    // the hub node keeps it through the partition.
    let to_redis = Proxy::start(format!("127.0.0.1:{}", redis.port()).parse().unwrap());
    let long_lease = [
        "--cluster-listen",
        "127.0.0.1:0",
        "--lease-secs",
        "30",
        "--log",
        "info",
    ];
    let hub_at = free_addr();
    let hub = Node::spawn(hub_at, &format!("redis://{}/0", to_redis.addr), &long_lease);
    // (The first node watches the free lease for a lease before taking it.)
    hub.line_containing_within(": hub node", WAIT + Duration::from_secs(30));
    let (a, room_a) = member_on(&[hub_at], 1);
    to_redis.freeze(true);
    let deadline = Instant::now() + WAIT;
    loop {
        let r = a.send_message_to_channel(room_a, Message::new("t", "a"), SendOptions::default());
        if r.map_err(|e| e.code().map(|c| c.code())) == Err(Some(4010)) {
            break;
        }
        assert!(Instant::now() < deadline, "never refused");
    }
    // A gateway node joins now: told at once that the store is down.
    let gw_at = free_addr();
    let gw = Node::spawn(gw_at, &redis.url(), &long_lease);
    gw.line_containing(": gateway node of hub node");
    let c = Client::connect(gw_at, config()).unwrap();
    let start = Instant::now();
    let r = c.login(Uid(2), None, Some(Region::Cn));
    assert_eq!(
        r.map(drop).map_err(|e| e.code().map(|c| c.code())),
        Err(Some(4010)),
        "after {:?}",
        start.elapsed()
    );
    // Healed: both serve.
    to_redis.freeze(false);
    let deadline = Instant::now() + WAIT;
    loop {
        let c = Client::connect(gw_at, config()).unwrap();
        if c.login(Uid(2), None, Some(Region::Cn)).is_ok() {
            break;
        }
        assert!(Instant::now() < deadline, "still refused");
        std::thread::sleep(Duration::from_millis(200));
    }
    drop((hub, gw));
}

#[test]
fn a_hub_node_cut_off_from_redis_alone_is_taken_over_by_a_gateway_node() {
    let redis = RedisServer::start(Persistence::Aof);
    // The hub node reaches Redis through a proxy a partition freezes; the
    // gateway node reaches it directly.
    let to_redis = Proxy::start(format!("127.0.0.1:{}", redis.port()).parse().unwrap());
    let hub_at = free_addr();
    let mut hub = Node::spawn(hub_at, &format!("redis://{}/0", to_redis.addr), &flags(&[]));
    hub.line_containing(": hub node");
    let gw_at = free_addr();
    let gw = Node::spawn(gw_at, &redis.url(), &flags(&[]));
    gw.line_containing(": gateway node of hub node");
    let (a, room_a) = member_on(&[hub_at, gw_at], 1);
    let (b, room_b) = member_on(&[gw_at], 2);
    a.send_message_to_channel(room_a, Message::new("t", "m1"), SendOptions::default())
        .unwrap();
    assert_eq!(text(&next_message(&b)), "m1");
    to_redis.freeze(true);
    let cut = Instant::now();
    // The lease lapses (1 s); the gateway node, which reaches Redis, takes
    // the state over.
    gw.line_containing(": hub node");
    eprintln!(
        "the gateway node took over {:?} after the cut",
        cut.elapsed()
    );
    // Its client resumes there, and is served.
    reconnected(&b);
    send_retrying(&b, room_b, "m2");
    assert_eq!(text(&next_message(&b)), "m2");
    // The old hub node, back in touch with Redis, finds the lease taken
    // and stops (till then it refuses its clients, as a standby node cut
    // off from Redis does); its client resumes on the new hub node and
    // loses nothing.
    to_redis.freeze(false);
    let deadline = Instant::now() + WAIT;
    while alive(&mut hub) {
        assert!(Instant::now() < deadline, "the old hub node still runs");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(text(&next_message(&a)), "m1");
    assert_eq!(text(&next_message(&a)), "m2");
    assert_eq!(a.current_endpoint(), Some(gw_at.into()));
}

#[test]
fn redis_losing_its_data_leaves_the_cluster_whole() {
    let mut redis = RedisServer::start(Persistence::None);
    let (hub_at, hub) = hub_node(&redis, &[]);
    let gw_at = free_addr();
    let gw = Node::spawn(gw_at, &redis.url(), &flags(&[]));
    gw.line_containing(": gateway node of hub node");
    let (a, _) = member_on(&[hub_at], 1);
    let (b, room_b) = member_on(&[gw_at], 2);
    // Restarted empty: the lease, where the hub node is and the secret
    // are gone with the state. The hub node takes its lease again and
    // writes its state again; the gateway node stays with it, or joins it
    // again.
    redis.restart();
    hub.line_containing("the store lost its data");
    std::thread::sleep(Duration::from_secs(3));
    send_retrying(&b, room_b, "after");
    let deadline = Instant::now() + WAIT;
    while text(&next_message(&a)) != "after" {
        assert!(Instant::now() < deadline);
    }
    drop(gw);
}

#[test]
fn a_node_started_while_another_holds_the_lease_unannounced_waits_then_serves() {
    let redis = RedisServer::start(Persistence::None);
    // A node that holds the lease and never says where it is (it is
    // starting, or it is not a cluster node).
    raw_command(
        redis.port(),
        &["SET", "hummer:lease", "ghost", "PX", "6000"],
    );
    let first_at = free_addr();
    let first = Node::spawn(first_at, &redis.url(), &flags(&[]));
    first.line("hummer-server listening on ");
    // Meanwhile it turns its clients away at once (they try another node,
    // or again later), not leaving them in its listen backlog.
    for _ in 0..3 {
        let mut tcp = TcpStream::connect(first_at).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let start = Instant::now();
        let r = tcp.read(&mut [0u8; 16]);
        assert!(
            matches!(r, Ok(0))
                || r.as_ref()
                    .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
            "{r:?} after {:?}",
            start.elapsed()
        );
    }
    // A client that knows only this node logs in once it serves.
    let waiting = std::thread::spawn(move || {
        let start = Instant::now();
        let c = Client::connect(first_at, config()).unwrap();
        c.login(Uid(3), None, None).unwrap();
        start.elapsed()
    });
    // Another node starts; once the lease lapses one is the hub node and
    // the other joins it.
    let second_at = free_addr();
    let second = Node::spawn(second_at, &redis.url(), &flags(&[]));
    let mut hubs = 0;
    let mut gateways = 0;
    for n in [&first, &second] {
        let line = n.line_containing_any(&[": hub node", ": gateway node of hub node"]);
        if line.contains(": hub node") {
            hubs += 1;
        } else {
            gateways += 1;
        }
    }
    assert_eq!((hubs, gateways), (1, 1));
    eprintln!(
        "a client waited {:?} for the node to serve",
        waiting.join().unwrap()
    );
    let (x, room) = member_on(&[first_at], 1);
    let (y, _) = member_on(&[second_at], 2);
    x.send_message_to_channel(room, Message::new("t", "hi"), SendOptions::default())
        .unwrap();
    assert_eq!(text(&next_message(&y)), "hi");
}

#[test]
fn a_node_started_before_its_redis_waits_then_serves() {
    let mut redis = RedisServer::start(Persistence::None);
    redis.kill();
    let at = free_addr();
    let node = Node::spawn(at, &redis.url(), &flags(&[]));
    node.line("hummer-server listening on ");
    node.line_containing("store unreachable");
    // It turns clients away meanwhile.
    let mut tcp = TcpStream::connect(at).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let r = tcp.read(&mut [0u8; 16]);
    assert!(
        matches!(r, Ok(0))
            || r.as_ref()
                .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
        "{r:?}"
    );
    redis.restart();
    node.line_containing(": hub node");
    still_serves(at, 1);
}

#[test]
fn two_nodes_racing_to_be_the_hub_node_end_as_one_hub_and_one_gateway() {
    for round in 0..3 {
        let redis = RedisServer::start(Persistence::None);
        let (a_at, b_at) = (free_addr(), free_addr());
        let a = Node::spawn(a_at, &redis.url(), &flags(&[]));
        let b = Node::spawn(b_at, &redis.url(), &flags(&[]));
        let roles: Vec<bool> = [&a, &b]
            .iter()
            .map(|n| {
                n.line_containing_any(&[": hub node", ": gateway node of hub node"])
                    .contains(": hub node")
            })
            .collect();
        assert_eq!(
            roles.iter().filter(|h| **h).count(),
            1,
            "round {round}: {roles:?}"
        );
        let (x, room) = member_on(&[a_at], 1);
        let (y, _) = member_on(&[b_at], 2);
        x.send_message_to_channel(room, Message::new("t", "hi"), SendOptions::default())
            .unwrap();
        assert_eq!(text(&next_message(&y)), "hi", "round {round}");
    }
}
