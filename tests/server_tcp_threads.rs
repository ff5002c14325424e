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
use hummer_channel::adapters::server_tcp::{RunnerConfig, RunnerStats, ServerHandle};
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

/// Content bytes of a flood message: near the 32 KiB message limit.
const BIG: usize = 32 * 1024 - 64;
/// Messages of a flood (~47 MiB).
const FLOOD: u64 = 1500;

/// One client floods a channel with big messages, pipelined as fast as
/// its socket takes them, while a member on the other thread reads (at
/// once, or `slow`ly). Every send crosses the threads three times (the
/// sender's uid is homed on the other thread, the channel on the sender's
/// thread, the member's link on the other). Returns what the member got
/// (message number, seq) and the runner's counters.
fn flood(slow: bool) -> (Vec<(u64, u64)>, RunnerStats) {
    use hummer_channel::server::{channel_shard, uid_shard, ShardId, DEMO_APPID};
    let mut config = ServerConfig::demo();
    config.rate_limit_sends = 1_000_000;
    config.rate_limits.sends = RateLimit::new(1_000_000, Duration::from_secs(3));
    // The slow member is no slow consumer: what waits for it is its
    // link's, not the threads'.
    config.max_queued_bytes = 256 << 20;
    let runner = RunnerConfig::default().with_threads(2);
    let handle =
        ServerHandle::spawn_with(config, runner, "127.0.0.1:0".parse().unwrap()).expect("spawn");
    let addr = handle.local_addr();
    let sender = (1..)
        .find(|&u| uid_shard(DEMO_APPID, u, 2) == ShardId(1))
        .unwrap();
    let member = (1000..)
        .find(|&u| uid_shard(DEMO_APPID, u, 2) == ShardId(0))
        .unwrap();
    let channel = wire::ChannelKey {
        region: wire::Region::Cn as i32,
        channel_id: (0..)
            .map(|i| format!("flood{i}"))
            .find(|c| channel_shard(DEMO_APPID, wire::Region::Cn as i32, c, 2) == ShardId(0))
            .unwrap(),
    };
    // Connections go to the threads in turn: the sender's to thread 0
    // (logged in before the member connects), the member's to thread 1.
    let stream = std::net::TcpStream::connect(addr).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut s = Client::wrap(stream);
    s.login(sender);
    let mut m = Client::connect(addr);
    m.login(member);
    for c in [&mut s, &mut m] {
        let Body::JoinReply(_) = c.req(Body::Join(wire::JoinRequest {
            channel: Some(channel.clone()),
            ..Default::default()
        })) else {
            panic!("join refused")
        };
    }
    let mut frames = Vec::new();
    for n in 0..FLOOD {
        let mut content = vec![b'x'; BIG];
        content[..8].copy_from_slice(&n.to_le_bytes());
        let (_, f) = s.frame(Body::SendToChannel(wire::SendToChannelRequest {
            channel: Some(channel.clone()),
            message: Some(wire::ChatMessage {
                r#type: "t".into(),
                content: Bytes::from(content),
                ..Default::default()
            }),
            unreliable: false,
            message_id: n + 1,
        }));
        frames.extend_from_slice(&f);
    }
    let write = std::thread::spawn(move || {
        use std::io::Write as _;
        writer.write_all(&frames).unwrap();
    });
    let replies = std::thread::spawn(move || {
        let mut ok = 0;
        while ok < FLOOD {
            match s.next().expect("the sender's link stays up").body {
                Body::SendReply(_) => ok += 1,
                Body::Error(e) => panic!("a send refused: {e:?}"),
                _ => {}
            }
        }
    });
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while (got.len() as u64) < FLOOD {
        assert!(
            Instant::now() < deadline,
            "timed out: {} messages",
            got.len()
        );
        if let Body::ChannelMessage(p) = m.next().expect("the member's link stays up").body {
            let content = p.message.expect("a message").content;
            let n = u64::from_le_bytes(content[..8].try_into().unwrap());
            got.push((n, p.seq));
            if slow && got.len() % 64 == 0 {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
    write.join().unwrap();
    replies.join().unwrap();
    let stats = handle.stats();
    handle.shutdown();
    (got, stats)
}

#[test]
fn a_flood_of_big_messages_across_threads_loses_nothing() {
    for slow in [false, true] {
        let (got, stats) = flood(slow);
        let numbers: Vec<u64> = got.iter().map(|&(n, _)| n).collect();
        assert_eq!(
            numbers,
            (0..FLOOD).collect::<Vec<_>>(),
            "slow {slow}: every message once, in order"
        );
        assert!(
            got.windows(2).all(|w| w[1].1 == w[0].1 + 1),
            "slow {slow}: one seq each, in order"
        );
        eprintln!(
            "slow {slow}: peak backlog {} messages, {} KiB",
            stats.peak_backlog,
            stats.peak_backlog_bytes / 1024
        );
        // What waited between the threads stayed within a few MiB (the
        // byte bound, and what one read and one batch add past it), not
        // hundreds of 32 KiB messages.
        assert!(stats.peak_backlog_bytes < 8 << 20, "slow {slow}: {stats:?}");
    }
}

/// A member dropped from channels on both threads' hub shards logs in
/// afresh and rejoins all of them in one write, each with 1.2 MB of
/// history after its cursor: the replays, sized on several threads at
/// once, stay within its 1 MiB queue together (it is never closed as a
/// slow consumer), and each rejoin is answered.
#[test]
fn a_burst_of_rejoins_across_threads_stays_within_the_queue() {
    for threads in [1, 2] {
        burst_of_rejoins(threads);
    }
}

fn burst_of_rejoins(threads: usize) {
    use hummer_channel::server::{channel_shard, ShardId, DEMO_APPID};
    let mut config = ServerConfig::demo();
    config.rate_limit_sends = 1_000_000;
    config.rate_limits.sends = RateLimit::new(1_000_000, Duration::from_secs(3));
    config.rate_limits.memberships = RateLimit::new(1_000, Duration::from_secs(3));
    config.max_queued_bytes = 1 << 20;
    config.presence_grace = Duration::from_millis(300);
    let handle = ServerHandle::spawn_with(
        config,
        RunnerConfig::default().with_threads(threads),
        "127.0.0.1:0".parse().unwrap(),
    )
    .expect("spawn");
    let addr = handle.local_addr();
    // Four channels on each shard.
    let channels: Vec<wire::ChannelKey> = [ShardId(0), ShardId(1)]
        .iter()
        .flat_map(|&s| {
            (0..)
                .map(|i| format!("burst{i}"))
                .filter(move |c| channel_shard(DEMO_APPID, wire::Region::Cn as i32, c, 2) == s)
                .take(4)
        })
        .map(|channel_id| wire::ChannelKey {
            region: wire::Region::Cn as i32,
            channel_id,
        })
        .collect();
    let join = |c: &mut Client, channel: &wire::ChannelKey, rejoin: Option<(u64, u64)>| {
        let (epoch, resume_seq) = rejoin.unwrap_or_default();
        Body::Join(wire::JoinRequest {
            channel: Some(channel.clone()),
            rejoin: rejoin.is_some(),
            epoch,
            resume_seq,
            ..Default::default()
        })
        .pipe(|b| c.frame(b))
    };
    let mut a = Client::connect(addr);
    a.login(1);
    let mut b = Client::connect(addr);
    b.login(2);
    let mut epochs = Vec::new();
    for ch in &channels {
        for c in [&mut a, &mut b] {
            let (_, f) = join(c, ch, None);
            c.send_raw(&f);
        }
        let Body::JoinReply(r) = b.until(|f| matches!(f.body, Body::JoinReply(_))).body else {
            unreachable!()
        };
        epochs.push(r.epoch);
        a.until(|f| matches!(f.body, Body::JoinReply(_)));
    }
    // b's link goes, and its instance departs after the grace period.
    drop(b);
    std::thread::sleep(Duration::from_millis(900));
    let text = Bytes::from(vec![b'x'; 30_000]);
    let mut sent = 0;
    for ch in &channels {
        for _ in 0..40 {
            sent += 1;
            // One at a time: the sender's own echoes fill its queue too.
            sent_ok(
                &mut a,
                Body::SendToChannel(wire::SendToChannelRequest {
                    channel: Some(ch.clone()),
                    message: Some(chat(&text)),
                    unreliable: false,
                    message_id: sent,
                }),
            );
        }
    }
    // A fresh login, then a request that replays nothing and every
    // rejoin, in one write.
    let mut b = Client::connect(addr);
    b.login(2);
    let query = Body::QueryOnline(wire::QueryOnlineRequest { uids: vec![1] });
    let mut burst = b.frame(query).1.to_vec();
    for (ch, epoch) in channels.iter().zip(&epochs) {
        burst.extend_from_slice(&join(&mut b, ch, Some((*epoch, 0))).1);
    }
    b.send_raw(&burst);
    let mut joined = 0;
    let mut replayed = 0;
    while joined < channels.len() {
        let f = b.next().expect("the link stays open");
        match f.body {
            Body::JoinReply(_) => joined += 1,
            Body::ChannelMessage(_) => replayed += 1,
            Body::Close(c) => panic!("{threads} threads: closed: {c:?}"),
            Body::Error(e) => panic!("refused: {e:?}"),
            _ => {}
        }
    }
    // The first two rejoins replay about half the queue each (the second
    // less a margin: the first's may still be on its way), the others
    // nothing until those are answered; the query took nothing from them.
    assert!(
        replayed >= 25,
        "{threads} threads: {replayed} messages replayed"
    );
    eprintln!("{threads} threads: {joined} rejoins, {replayed} messages replayed at once");
    handle.shutdown();
}

/// A chat message of `content`.
fn chat(content: &Bytes) -> wire::ChatMessage {
    wire::ChatMessage {
        r#type: "t".into(),
        content: content.clone(),
        ..Default::default()
    }
}

/// Sends `body` (a send) and waits for its `SendReply`.
fn sent_ok(c: &mut Client, body: Body) {
    let reply = c.req(body);
    assert!(matches!(reply, Body::SendReply(_)), "{reply:?}");
}

/// `x.pipe(f)` is `f(x)`: a builder's value handed on in one expression.
trait Pipe: Sized {
    fn pipe<T>(self, f: impl FnOnce(Self) -> T) -> T {
        f(self)
    }
}

impl<T> Pipe for T {}

/// A fresh login replays the uid's inbox (40 messages of 30 KB waiting)
/// and two P2P fetches follow it in the same write: the login's replay
/// counts for the fetches' budgets, so the 1 MiB queue holds (found by a
/// review: only a resuming login was counted).
#[test]
fn a_fresh_login_and_pipelined_fetches_stay_within_the_queue() {
    let mut config = ServerConfig::demo();
    config.rate_limit_sends = 1_000_000;
    config.rate_limits.sends = RateLimit::new(1_000_000, Duration::from_secs(3));
    config.max_queued_bytes = 1 << 20;
    let handle = ServerHandle::spawn_with(
        config,
        RunnerConfig::default().with_threads(1),
        "127.0.0.1:0".parse().unwrap(),
    )
    .expect("spawn");
    let addr = handle.local_addr();
    let mut a = Client::connect(addr);
    a.login(1);
    let text = Bytes::from(vec![b'x'; 30_000]);
    for id in 1..=40u64 {
        sent_ok(
            &mut a,
            Body::SendToUser(wire::SendToUserRequest {
                receiver: 2,
                message: Some(chat(&text)),
                unreliable: false,
                message_id: id,
            }),
        );
    }
    let mut b = Client::connect(addr);
    let mut burst = Vec::new();
    burst.extend_from_slice(&b.frame(tcp::login(2)).1);
    for _ in 0..2 {
        let f = Body::Fetch(wire::FetchRequest {
            channel: None,
            after_seq: 0,
        });
        burst.extend_from_slice(&b.frame(f).1);
    }
    b.send_raw(&burst);
    let (mut replies, mut pushes) = (0, 0);
    while replies < 3 {
        match b.next().expect("the link stays open").body {
            Body::LoginReply(_) | Body::FetchReply(_) => replies += 1,
            Body::UserMessage(_) => pushes += 1,
            Body::Close(c) => panic!("closed after {pushes} pushes: {c:?}"),
            _ => {}
        }
    }
    assert!(pushes > 0, "the login replayed the inbox");
    handle.shutdown();
}
