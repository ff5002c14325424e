//! The multi-threaded runner over TCP: clients whose connections land on
//! different threads (gateways) share one channel and see the same
//! per-sender order, exactly once, as with one thread. Every wait is bounded.
#![cfg(feature = "server-tcp")]

#[path = "common/tcp.rs"]
mod tcp;

use std::collections::BTreeMap;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hummer_channel::adapters::server_tcp::{RunnerConfig, ServerHandle};
use hummer_channel::server::{RateLimit, RateLimits, ServerConfig};
use hummer_channel::wire::{self, Body};
use tcp::Client;

const CLIENTS: u64 = 6;
const MESSAGES: u64 = 300;

fn room() -> wire::ChannelKey {
    wire::ChannelKey {
        region: wire::Region::Cn as i32,
        channel_id: "room".into(),
    }
}

/// What one client saw: per sender, (message number, channel seq) in the
/// order received.
type Seen = BTreeMap<u64, Vec<(u64, u64)>>;

/// Every client joins "room", then all send `MESSAGES` reliable messages at
/// once (pipelined) and read until they have every other member's.
fn run(threads: usize) -> Vec<Seen> {
    let mut config = ServerConfig::demo();
    config.rate_limit_sends = 1_000_000;
    config.rate_limits = {
        let mut r = RateLimits::default();
        r.sends = RateLimit::new(1_000_000, Duration::from_secs(3));
        r
    };
    let runner = RunnerConfig::default().with_threads(threads);
    let handle =
        ServerHandle::spawn_with(config, runner, "127.0.0.1:0".parse().unwrap()).expect("spawn");
    let addr = handle.local_addr();
    let barrier = Arc::new(Barrier::new(CLIENTS as usize));
    let clients: Vec<_> = (1..=CLIENTS)
        .map(|uid| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                c.login(uid);
                let Body::JoinReply(_) = c.req(Body::Join(wire::JoinRequest {
                    channel: Some(room()),
                    ..Default::default()
                })) else {
                    panic!("join refused")
                };
                barrier.wait();
                for n in 0..MESSAGES {
                    c.send(Body::SendToChannel(wire::SendToChannelRequest {
                        channel: Some(room()),
                        message: Some(wire::ChatMessage {
                            r#type: "text".into(),
                            content: Bytes::from(n.to_string()),
                            ..Default::default()
                        }),
                        unreliable: false,
                        message_id: uid << 32 | (n + 1),
                    }));
                }
                let mut seen = Seen::new();
                let mut replies = 0;
                let deadline = Instant::now() + Duration::from_secs(60);
                let others = (CLIENTS - 1) * MESSAGES;
                while replies < MESSAGES
                    || seen.values().map(Vec::len).sum::<usize>() < others as usize
                {
                    assert!(Instant::now() < deadline, "uid {uid}: timed out");
                    let f = c.next().expect("the link stays up");
                    match f.body {
                        Body::SendReply(_) => replies += 1,
                        Body::ChannelMessage(p) if p.from_uid != uid => {
                            let text = p.message.expect("a message").content;
                            let n = std::str::from_utf8(&text).unwrap().parse().unwrap();
                            seen.entry(p.from_uid).or_default().push((n, p.seq));
                        }
                        _ => {}
                    }
                }
                seen
            })
        })
        .collect();
    let seen = clients.into_iter().map(|t| t.join().unwrap()).collect();
    handle.shutdown();
    seen
}

fn check(threads: usize, seen: &[Seen]) {
    let mut seq_of: BTreeMap<(u64, u64), u64> = BTreeMap::new();
    for (i, s) in seen.iter().enumerate() {
        let me = i as u64 + 1;
        assert_eq!(
            s.len() as u64,
            CLIENTS - 1,
            "threads {threads}: uid {me} hears every other"
        );
        for (&from, got) in s {
            let numbers: Vec<u64> = got.iter().map(|&(n, _)| n).collect();
            let expected: Vec<u64> = (0..MESSAGES).collect();
            assert_eq!(
                numbers, expected,
                "threads {threads}: uid {me} gets uid {from}'s messages in order, once each"
            );
            for &(n, seq) in got {
                // One channel sequence: every receiver sees a message under
                // the same number.
                let first = *seq_of.entry((from, n)).or_insert(seq);
                assert_eq!(first, seq, "threads {threads}: uid {from}'s message {n}");
            }
        }
    }
}

#[test]
fn clients_on_several_threads_see_one_order_exactly_once() {
    for threads in [1, 3] {
        let seen = run(threads);
        check(threads, &seen);
    }
}
