//! `hummer-server --engine redis://…` against a real `redis-server` (one
//! per test, on its own port, stopped by PID), driven by the blocking
//! client as an application would: the server killed with SIGKILL and
//! started again loses nothing a client saw, Redis restarted with its
//! append-only file loses nothing, Redis restarted empty is written again,
//! and a Redis that cannot be reached holds the service until it is back.
//! Every wait is bounded.

mod node_support;
#[path = "../../tests/redis_support/mod.rs"]
mod redis_support;

use std::time::{Duration, Instant};

use hummer_channel::adapters::blocking::Client;
use hummer_channel::client::{ConnectionState, Event, SendOptions};
use hummer_channel::{Message, Region, Uid};
use node_support::*;
use redis_support::{Persistence, RedisServer};

#[test]
fn a_server_killed_and_started_again_loses_nothing_a_client_saw() {
    let redis = RedisServer::start(Persistence::Aof);
    let addr = free_addr();
    let node = Node::start(addr, &redis.url());
    let (a, room_a) = member(addr, 1);
    let (b, _) = member(addr, 2);
    for t in ["m1", "m2", "m3"] {
        a.send_message_to_channel(room_a, Message::new("t", t), SendOptions::default())
            .unwrap();
    }
    for t in ["m1", "m2", "m3"] {
        assert_eq!(text(&next_message(&b)), t);
    }
    // uid 3 has never logged in: its message waits in Redis.
    a.send_message_to_user(Uid(3), Message::new("t", "p1"), SendOptions::default())
        .unwrap();
    node.kill();
    let _node = Node::start(addr, &redis.url());
    reconnected(&a);
    reconnected(&b);
    // Same epochs and numbers: b takes m4 as the next message, not as a
    // stream it must report lost.
    send_retrying(&a, room_a, "m4");
    assert_eq!(text(&next_message(&b)), "m4");
    let c = Client::connect(addr, config()).unwrap();
    c.login(Uid(3), None, None).unwrap();
    assert_eq!(text(&next_message(&c)), "p1");
    // Members as they were.
    let list = a.get_channel_user_list(room_a).unwrap();
    assert_eq!(list.users, [Uid(1), Uid(2)]);
}

#[test]
fn a_standby_takes_over_from_a_killed_node_and_clients_resume_on_it_without_loss() {
    let redis = RedisServer::start(Persistence::Aof);
    let (addr_a, addr_b) = (free_addr(), free_addr());
    let lease = ["--lease-secs", "1"];
    let node_a = Node::spawn(addr_a, &redis.url(), &lease);
    node_a.line("hummer-server listening on ");
    // The second node waits for the lease, not listening.
    let node_b = Node::spawn(addr_b, &redis.url(), &lease);
    node_b.line("hummer-server standby: node ");
    assert!(
        std::net::TcpStream::connect(addr_b).is_err(),
        "a standby listens"
    );
    let member_of_any = |uid: u64| {
        let c = Client::connect_any([addr_a, addr_b], config()).unwrap();
        c.login(Uid(uid), None, Some(Region::Cn)).unwrap();
        let room = c.create_channel(Region::Cn, "room").unwrap();
        c.join_channel(room, Default::default()).unwrap();
        (c, room)
    };
    let (a, room) = member_of_any(1);
    let (b, _) = member_of_any(2);
    let port = |c: &Client| c.current_endpoint().map(|e| e.url().port());
    assert_eq!(port(&a), Some(addr_a.port()));
    for t in ["m1", "m2"] {
        a.send_message_to_channel(room, Message::new("t", t), SendOptions::default())
            .unwrap();
        assert_eq!(text(&next_message(&b)), t);
    }
    a.send_message_to_user(Uid(3), Message::new("t", "p1"), SendOptions::default())
        .unwrap();
    let killed = Instant::now();
    node_a.kill();
    node_b.line("hummer-server listening on ");
    let took_over = killed.elapsed();
    reconnected(&a);
    reconnected(&b);
    assert_eq!(port(&b), Some(addr_b.port()));
    send_retrying(&a, room, "m3");
    assert_eq!(text(&next_message(&b)), "m3");
    let c = Client::connect_any([addr_a, addr_b], config()).unwrap();
    c.login(Uid(3), None, None).unwrap();
    assert_eq!(text(&next_message(&c)), "p1");
    assert!(took_over < Duration::from_secs(5), "{took_over:?}");
    eprintln!("the standby served {took_over:?} after the active node was killed");
}

#[test]
fn a_node_that_finds_its_lease_taken_stops_serving() {
    let redis = RedisServer::start(Persistence::None);
    let addr = free_addr();
    let mut node = Node::spawn(addr, &redis.url(), &["--lease-secs", "1"]);
    node.line("hummer-server listening on ");
    // Someone else takes the lease (an operator, or a node that saw it
    // lapse while this one was cut off from Redis).
    let reply = redis_support::raw_command(redis.port(), &["SET", "hummer:lease", "intruder"]);
    assert!(reply.starts_with("+OK"), "{reply}");
    let status = node.exit_status("stop serving");
    assert_eq!(status.code(), Some(1), "{status:?}");
}

#[test]
fn redis_restarted_empty_is_written_again_and_a_later_restart_loses_nothing() {
    let mut redis = RedisServer::start(Persistence::None);
    let addr = free_addr();
    let node = Node::start(addr, &redis.url());
    let (a, room) = member(addr, 1);
    let (b, _) = member(addr, 2);
    a.send_message_to_channel(room, Message::new("t", "m1"), SendOptions::default())
        .unwrap();
    assert_eq!(text(&next_message(&b)), "m1");
    // Redis comes back with nothing: the node writes its whole state again
    // with its next batch.
    redis.restart();
    // Refused (4010) until the node holds the lease again, then served.
    send_retrying(&a, room, "m2");
    assert_eq!(text(&next_message(&b)), "m2");
    node.kill();
    let _node = Node::start(addr, &redis.url());
    reconnected(&a);
    reconnected(&b);
    send_retrying(&a, room, "m3");
    assert_eq!(text(&next_message(&b)), "m3");
}

#[test]
fn a_redis_outage_refuses_requests_keeps_links_and_recovers_by_itself() {
    use hummer_channel::adapters::ClientError;
    use hummer_channel::ErrorCode;
    let mut redis = RedisServer::start(Persistence::Aof);
    let addr = free_addr();
    let _node = Node::start(addr, &redis.url());
    let (a, room) = member(addr, 1);
    let (b, _) = member(addr, 2);
    // The server writes after the joins' replies too: the join notice,
    // flushed after its batch window (100 ms), and a's ack of it (within
    // 50 ms). Either failing would refuse the send below before it is in
    // flight, so Redis stops once they are stored.
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match a.recv_event(left) {
            Some(Event::NotifyJoinChannel { uids, .. }) if uids.contains(&Uid(2)) => break,
            Some(_) => continue,
            None => panic!("uid 1 did not hear uid 2 join"),
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    redis.stop();
    // The first send finds the store gone: its reply and push wait ...
    let sender = std::thread::spawn(move || {
        let r =
            a.send_message_to_channel(room, Message::new("t", "during"), SendOptions::default());
        (a, r)
    });
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        b.try_recv_event()
            .is_none_or(|e| !matches!(e, Event::ChannelMessage { .. })),
        "a message went out before it was stored"
    );
    // ... and the server refuses what comes next, at once, links kept.
    let refused = b.get_channel_user_list(room).unwrap_err();
    assert!(
        matches!(&refused, ClientError::Service(e) if e.code == ErrorCode::SERVICE_UNAVAILABLE),
        "{refused:?}"
    );
    // Redis back: the waiting send goes through and requests are served.
    redis.restart();
    let (a, sent) = sender.join().unwrap();
    sent.unwrap();
    assert_eq!(text(&next_message(&b)), "during");
    let deadline = Instant::now() + WAIT;
    while b.get_channel_user_list(room).is_err() {
        assert!(Instant::now() < deadline, "still refused");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(a.connection_state().0, ConnectionState::Connected);
    assert_eq!(b.connection_state().0, ConnectionState::Connected);
}

#[test]
fn three_nodes_two_killed_mid_stream_every_message_arrives_once_in_order() {
    let redis = RedisServer::start(Persistence::Aof);
    let addrs = [free_addr(), free_addr(), free_addr()];
    let lease = ["--lease-secs", "1"];
    let first = Node::spawn(addrs[0], &redis.url(), &lease);
    first.line("hummer-server listening on ");
    let mut standbys: Vec<Node> = addrs[1..]
        .iter()
        .map(|a| {
            let n = Node::spawn(*a, &redis.url(), &lease);
            n.line("hummer-server standby: node ");
            n
        })
        .collect();
    let join = |uid: u64| {
        let c = Client::connect_any(addrs, config()).unwrap();
        c.login(Uid(uid), None, Some(Region::Cn)).unwrap();
        let room = c.create_channel(Region::Cn, "room").unwrap();
        c.join_channel(room, Default::default()).unwrap();
        (c, room)
    };
    let (a, room) = join(1);
    let (b, _) = join(2);
    // uid 1 sends 1..=N every 10 ms, retrying what fails (a retry after an
    // unknown outcome may deliver twice: those numbers are noted).
    const N: u32 = 150;
    let sender = stream_to_channel(a, room, N);
    let mut seen: Vec<u32> = Vec::new();
    let mut killed = 0;
    let mut nodes: Vec<Node> = vec![first];
    while seen.last() != Some(&N) {
        let n: u32 = text(&next_message(&b)).parse().unwrap();
        seen.push(n);
        // The serving node dies at 40 and its successor at 90: the next
        // standby serves each time.
        if (n == 40 && killed == 0) || (n == 90 && killed == 1) {
            nodes.pop().unwrap().kill();
            // Whichever standby takes the lease serves.
            let next = serving_one_of(&mut standbys);
            nodes.push(next);
            killed += 1;
        }
    }
    let retried = sender.join().unwrap();
    assert_eq!(killed, 2);
    let dups = assert_once_in_order(&seen, N, &retried);
    eprintln!(
        "{N} messages through two kills: {} retried by the sender, {dups} delivered twice",
        retried.len(),
    );
}

/// Waits until one of `standbys` listens; takes it out of the list.
fn serving_one_of(standbys: &mut Vec<Node>) -> Node {
    let deadline = Instant::now() + WAIT;
    loop {
        for i in 0..standbys.len() {
            while let Ok(line) = standbys[i].1.try_recv() {
                if line.starts_with("hummer-server listening on ") {
                    return standbys.remove(i);
                }
            }
        }
        assert!(Instant::now() < deadline, "no standby took over");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Redis comes back empty and nothing changes afterwards (no client
/// writes): the node must still write its whole state again, or a crash
/// loses all of it. Lost is only noticed by a write, so an idle node (or
/// an idle shard) never writes it again.
#[test]
fn redis_restarted_empty_is_written_again_even_with_no_change_after_it() {
    let mut redis = RedisServer::start(Persistence::None);
    let addr = free_addr();
    let node = Node::start(addr, &redis.url());
    let (a, room) = member(addr, 1);
    let (b, _) = member(addr, 2);
    a.send_message_to_channel(room, Message::new("t", "m1"), SendOptions::default())
        .unwrap();
    assert_eq!(text(&next_message(&b)), "m1");
    // uid 3 has never logged in: its message waits in Redis.
    a.send_message_to_user(Uid(3), Message::new("t", "p1"), SendOptions::default())
        .unwrap();
    redis.restart();
    // Quiet for a while: no client does anything.
    std::thread::sleep(Duration::from_secs(4));
    node.kill();
    let _node = Node::start(addr, &redis.url());
    assert_resumed_with_nothing_lost(&a, &b, room, addr);
}

/// Redis restarts empty (the lease goes with everything else) under an
/// active node and a standby: the standby must not win the race for the
/// free lease and serve an empty store while the active node, which holds
/// the whole state, is fenced and stops. Several rounds: it is a race.
#[test]
fn a_standby_does_not_take_over_a_store_redis_just_emptied_from_a_live_node() {
    for round in 0..3u64 {
        let mut redis = RedisServer::start(Persistence::None);
        let (addr_a, addr_b) = (free_addr(), free_addr());
        let lease = ["--lease-secs", "1"];
        let mut node_a = Node::spawn(addr_a, &redis.url(), &lease);
        node_a.line("hummer-server listening on ");
        // Each round starts the standby's claims at another phase of the
        // active node's renewals (both every third of the lease).
        std::thread::sleep(Duration::from_millis(70 + 110 * round));
        let node_b = Node::spawn(addr_b, &redis.url(), &lease);
        node_b.line("hummer-server standby: node ");
        let member_of_any = |uid: u64| {
            let c = Client::connect_any([addr_a, addr_b], config()).unwrap();
            c.login(Uid(uid), None, Some(Region::Cn)).unwrap();
            let room = c.create_channel(Region::Cn, "room").unwrap();
            c.join_channel(room, Default::default()).unwrap();
            (c, room)
        };
        let (a, room) = member_of_any(1);
        let (b, _) = member_of_any(2);
        a.send_message_to_channel(room, Message::new("t", "m1"), SendOptions::default())
            .unwrap();
        assert_eq!(text(&next_message(&b)), "m1");
        redis.restart();
        std::thread::sleep(Duration::from_secs(4));
        assert!(
            node_a.0.try_wait().unwrap().is_none(),
            "round {round}: the standby took the lease of a store Redis had just emptied; \
             the node holding the state stopped"
        );
        let mut node_b = node_b;
        assert!(
            node_b.0.try_wait().unwrap().is_none(),
            "round {round}: the standby died"
        );
        reconnected(&a);
        reconnected(&b);
        send_retrying(&a, room, "m2");
        assert_eq!(text(&next_message(&b)), "m2");
        drop(node_b);
    }
}

/// A standby that takes over loads the store before it serves; the lease
/// is only renewed once it serves. A store whose load (and restore) takes
/// longer than the lease lets it lapse meanwhile: a second standby takes
/// it, and the node that had it stops as soon as it starts serving.
#[test]
fn a_node_keeps_its_lease_while_it_loads_a_large_store() {
    let redis = RedisServer::start(Persistence::None);
    let (addr_a, addr_b, addr_c) = (free_addr(), free_addr(), free_addr());
    let lease = ["--lease-secs", "1"];
    let node_a = Node::spawn(addr_a, &redis.url(), &lease);
    node_a.line("hummer-server listening on ");
    let mut node_b = Node::spawn(addr_b, &redis.url(), &lease);
    node_b.line("hummer-server standby: node ");
    let mut node_c = Node::spawn(addr_c, &redis.url(), &lease);
    node_c.line("hummer-server standby: node ");
    // Many objects (unreadable records: only the time to load them counts).
    let fill = "for i = 1, tonumber(ARGV[1]) do \
        redis.call('SADD', 'hummer:keys:n', 'n/1/1/' .. i); \
        redis.call('SET', 'hummer:r:n/1/1/' .. i, 'x') end return 1";
    let reply = redis_support::raw_command(redis.port(), &["EVAL", fill, "0", "300000"]);
    assert!(reply.starts_with(":1"), "{reply}");
    node_a.kill();
    // One of the standbys takes over, loads, serves; the other waits.
    std::thread::sleep(Duration::from_secs(12));
    let b_out = node_b.0.try_wait().unwrap();
    let c_out = node_c.0.try_wait().unwrap();
    assert!(
        b_out.is_none() && c_out.is_none(),
        "a node stopped: b {b_out:?}, c {c_out:?} (its lease lapsed while it loaded)"
    );
}

/// A store spread over two Redis (`--engine URL_A,URL_B`, four threads:
/// two hub shards per instance): every object on its instance, nothing lost
/// across a kill, one instance restarted empty written again while the
/// other is left alone, and the instances given in the other order refused.
#[test]
fn a_store_over_two_redis_loses_nothing_across_kills_and_one_redis_emptied() {
    let a = RedisServer::start(Persistence::Aof);
    let mut b = RedisServer::start(Persistence::None);
    let engine = format!("{},{}", a.url(), b.url());
    let args = ["--threads", "4", "--lease-secs", "1"];
    let addr = free_addr();
    let start = || {
        let node = Node::spawn(addr, &engine, &args);
        node.line("hummer-server listening on ");
        node
    };
    let node = start();
    let rooms: Vec<String> = (0..6).map(|i| format!("room-{i}")).collect();
    let join_all = |uid: u64| {
        let c = Client::connect(addr, config()).unwrap();
        c.login(Uid(uid), None, Some(Region::Cn)).unwrap();
        let handles: Vec<_> = rooms
            .iter()
            .map(|r| {
                let h = c.create_channel(Region::Cn, r).unwrap();
                c.join_channel(h, Default::default()).unwrap();
                h
            })
            .collect();
        (c, handles)
    };
    let (alice, alice_rooms) = join_all(1);
    let (bob, _) = join_all(2);
    // Every room, in any order across rooms, each message once.
    let round = |tag: &str| {
        for (h, r) in alice_rooms.iter().zip(&rooms) {
            send_retrying(&alice, *h, &format!("{r} {tag}"));
        }
        let mut got: Vec<String> = (0..rooms.len())
            .map(|_| text(&next_message(&bob)))
            .collect();
        got.sort();
        let mut want: Vec<String> = rooms.iter().map(|r| format!("{r} {tag}")).collect();
        want.sort();
        assert_eq!(got, want);
    };
    round("m1");
    // Offline messages for uids never seen: their inboxes wait in Redis.
    let offline: Vec<u64> = (100..108).collect();
    for uid in &offline {
        alice
            .send_message_to_user(
                Uid(*uid),
                Message::new("t", format!("p{uid}")),
                SendOptions::default(),
            )
            .unwrap();
    }
    // Both instances hold channels and inboxes.
    for (name, r) in [("a", &a), ("b", &b)] {
        for set in ["hummer:keys:c", "hummer:keys:i"] {
            let n = redis_support::raw_command(r.port(), &["SCARD", set]);
            assert!(!n.starts_with(":0"), "{name} {set}: {n}");
        }
    }
    let read_offline = |uids: &[u64]| {
        for uid in uids {
            let c = Client::connect(addr, config()).unwrap();
            c.login(Uid(*uid), None, None).unwrap();
            assert_eq!(text(&next_message(&c)), format!("p{uid}"));
        }
    };
    node.kill();
    let node = start();
    reconnected(&alice);
    reconnected(&bob);
    round("m2");
    read_offline(&offline[..4]);
    // Instance b comes back empty: the node writes its shards' state
    // there again; instance a keeps its generation.
    let gen_a = redis_support::raw_command(a.port(), &["GET", "hummer:gen"]);
    b.restart();
    round("m3");
    let deadline = Instant::now() + WAIT;
    while redis_support::raw_command(b.port(), &["SCARD", "hummer:keys:i"]).starts_with(":0") {
        assert!(
            Instant::now() < deadline,
            "instance b was not written again"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        redis_support::raw_command(a.port(), &["GET", "hummer:gen"]),
        gen_a
    );
    node.kill();
    let node = start();
    reconnected(&alice);
    reconnected(&bob);
    round("m4");
    read_offline(&offline[4..]);
    let members = bob.get_channel_user_list(alice_rooms[5]);
    assert_eq!(members.unwrap().users, [Uid(1), Uid(2)]);
    node.kill();
    // The same Redis in the other order: refused at start, nothing served.
    let swapped = format!("{},{}", b.url(), a.url());
    let mut wrong = Node::spawn(free_addr(), &swapped, &args);
    let why = wrong.line_containing("order and number");
    assert!(why.contains(&b.url()), "{why}");
    let status = wrong.exit_status("stop");
    assert!(!status.success(), "{status:?}");
}
