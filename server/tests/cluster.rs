//! Three `hummer-server` nodes and one real `redis-server` as one service
//! (`--cluster-listen`): the node holding the store's lease keeps the
//! state, the others relay to it. Clients on different nodes see one
//! server for every operation; a gateway node killed loses its links
//! (presence after the grace period) while its clients resume elsewhere;
//! the hub node killed hands the state to another node and everyone
//! resumes without loss. Every wait is bounded.

mod node_support;
#[path = "../../tests/redis_support/mod.rs"]
mod redis_support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hummer_channel::adapters::blocking::Client;
use hummer_channel::client::{
    AttributeOptions, ConnectionReason, ConnectionState, Event, SendOptions,
};
use hummer_channel::{Message, Region, Uid};
use node_support::*;
use redis_support::{raw_command, Persistence, RedisServer};

/// `n` nodes sharing `redis`: the first is the hub node (it starts
/// first), the others joined it as gateway nodes.
fn cluster(redis: &RedisServer, n: usize, extra: &[&str]) -> Vec<(SocketAddr, Node)> {
    let addrs: Vec<SocketAddr> = (0..n).map(|_| free_addr()).collect();
    cluster_on(&redis.url(), &addrs, extra)
}

/// The same on `addrs`, with the store at `engine`.
fn cluster_on(engine: &str, addrs: &[SocketAddr], extra: &[&str]) -> Vec<(SocketAddr, Node)> {
    let args: Vec<&str> = CLUSTER.iter().chain(extra).copied().collect();
    addrs
        .iter()
        .enumerate()
        .map(|(i, &addr)| {
            let node = Node::spawn(addr, engine, &args);
            if i == 0 {
                node.line_containing(": hub node");
            } else {
                node.line_containing(": gateway node of hub node");
            }
            (addr, node)
        })
        .collect()
}

/// The next event `pick` takes (bounded); a loss fails the test.
fn wait_for<T>(c: &Client, what: &str, mut pick: impl FnMut(Event) -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match c.recv_event(left) {
            Some(Event::MessagesLost { .. }) => panic!("messages were lost"),
            Some(e) => {
                if let Some(t) = pick(e) {
                    return t;
                }
            }
            None => panic!("no {what} within {WAIT:?}"),
        }
    }
}

fn online(c: &Client, uids: &[u64]) -> Vec<(u64, bool)> {
    let status = c
        .query_users_online_status(uids.iter().map(|&u| Uid(u)).collect())
        .unwrap();
    status.into_iter().map(|(u, on)| (u.0, on)).collect()
}

#[test]
fn three_nodes_serve_every_operation_as_one_server() {
    let redis = RedisServer::start(Persistence::Aof);
    let nodes = cluster(&redis, 3, &["--kick-older-logins"]);
    let at = |i: usize| [nodes[i].0];
    let (a, room_a) = member_on(&at(0), 1);
    let (b, room_b) = member_on(&at(1), 2);
    let (c, room_c) = member_on(&at(2), 3);

    // Members and counts, the same from every node.
    for (client, room) in [(&a, room_a), (&b, room_b), (&c, room_c)] {
        let list = client.get_channel_user_list(room).unwrap();
        assert_eq!(list.users, [Uid(1), Uid(2), Uid(3)]);
        let count = client
            .get_channel_user_count(room, vec!["room".into(), "empty".into()])
            .unwrap();
        assert_eq!(
            count.user_count,
            BTreeMap::from([("room".to_owned(), 3), ("empty".to_owned(), 0)])
        );
    }
    // The join notices crossed the nodes: uid 1 (on the hub node) hears
    // of 2 and 3.
    let mut joined = Vec::new();
    while joined.len() < 2 {
        joined.extend(wait_for(&a, "join notice", |e| match e {
            Event::NotifyJoinChannel { uids, .. } => Some(uids),
            _ => None,
        }));
    }
    joined.sort();
    assert_eq!(joined, [Uid(2), Uid(3)]);

    // A channel message from a gateway node reaches every node, in order.
    for t in ["m1", "m2", "m3"] {
        b.send_message_to_channel(room_b, Message::new("t", t), SendOptions::default())
            .unwrap();
    }
    for client in [&a, &c] {
        for t in ["m1", "m2", "m3"] {
            let (from, got) = wait_for(client, "channel message", |e| match e {
                Event::ChannelMessage {
                    from_uid, message, ..
                } => Some((
                    from_uid,
                    String::from_utf8_lossy(&message.content).into_owned(),
                )),
                _ => None,
            });
            assert_eq!((from, got.as_str()), (Uid(2), t));
        }
    }

    // P2P between two gateway nodes, delivered online.
    let sent = b
        .send_message_to_user(Uid(3), Message::new("t", "p2p"), SendOptions::default())
        .unwrap();
    assert!(sent.delivered_online);
    assert_eq!(text(&next_message(&c)), "p2p");
    // ... and to a uid never seen: kept for it, wherever it logs in.
    let sent = c
        .send_message_to_user(Uid(9), Message::new("t", "later"), SendOptions::default())
        .unwrap();
    assert!(!sent.delivered_online);

    // Online status, the same from every node.
    for client in [&a, &b, &c] {
        assert_eq!(
            online(client, &[1, 2, 3, 9]),
            [(1, true), (2, true), (3, true), (9, false)]
        );
    }
    let late = Client::connect(nodes[1].0, config()).unwrap();
    late.login(Uid(9), None, None).unwrap();
    assert_eq!(text(&next_message(&late)), "later");

    // User and channel attributes: written on one node, notified and read
    // on the others.
    let attrs = BTreeMap::from([("mood".to_owned(), "calm".to_owned())]);
    c.set_local_user_attributes(room_c, attrs.clone(), AttributeOptions::default())
        .unwrap();
    let (uid, set) = wait_for(&a, "user attributes notice", |e| match e {
        Event::NotifyUserAttributesSet {
            uid, attributes, ..
        } => Some((uid, attributes)),
        _ => None,
    });
    assert_eq!((uid, &set), (Uid(3), &attrs));
    assert_eq!(
        b.get_user_attributes(room_b, Uid(3)).unwrap().attributes,
        attrs
    );
    let topic = BTreeMap::from([("topic".to_owned(), "rust".to_owned())]);
    a.set_channel_attributes(room_a, topic.clone(), AttributeOptions::default())
        .unwrap();
    assert_eq!(c.get_channel_attributes(room_c).unwrap().attributes, topic);

    // A second login of uid 2 on another node kicks the first (the
    // service kicks older logins).
    let again = Client::connect(nodes[2].0, config()).unwrap();
    again.login(Uid(2), None, Some(Region::Cn)).unwrap();
    wait_for(&b, "remote-login kick", |e| match e {
        Event::ConnectionStateChanged {
            state: ConnectionState::Disconnected,
            reason: ConnectionReason::RemoteLogin,
        } => Some(()),
        _ => None,
    });
    assert_eq!(online(&a, &[2]), [(2, true)]);

    // A leave is seen everywhere.
    c.leave_channel(room_c, Default::default()).unwrap();
    let count = a
        .get_channel_user_count(room_a, vec!["room".into()])
        .unwrap();
    // uid 2's kicked instance left with its link; its new login never
    // joined: uid 1 is alone.
    assert_eq!(count.user_count["room"], 1);
}

#[test]
fn a_gateway_node_killed_its_clients_resume_elsewhere_and_the_rest_go_offline() {
    let redis = RedisServer::start(Persistence::Aof);
    let mut nodes = cluster(&redis, 3, &[]);
    let addrs: Vec<SocketAddr> = nodes.iter().map(|(a, _)| *a).collect();
    let (a, room_a) = member_on(&addrs[..1], 1);
    // uid 2 knows nodes 1 then 2; uid 5 only node 1.
    let (b, _) = member_on(&addrs[1..], 2);
    let (lonely, _) = member_on(&addrs[1..2], 5);
    assert_eq!(b.current_endpoint(), Some(addrs[1].into()));
    for t in ["m1", "m2"] {
        a.send_message_to_channel(room_a, Message::new("t", t), SendOptions::default())
            .unwrap();
    }
    assert_eq!(text(&next_message(&b)), "m1");
    assert_eq!(text(&next_message(&b)), "m2");

    let (_, gateway) = nodes.remove(1);
    gateway.kill();
    // Sent while uid 2 is away: it gets them when it resumed on node 2.
    for t in ["m3", "m4"] {
        a.send_message_to_channel(room_a, Message::new("t", t), SendOptions::default())
            .unwrap();
    }
    reconnected(&b);
    assert_eq!(b.current_endpoint(), Some(addrs[2].into()));
    assert_eq!(text(&next_message(&b)), "m3");
    assert_eq!(text(&next_message(&b)), "m4");
    // uid 5 had nowhere to go: online for the grace period, then gone,
    // and the room hears it left. uid 2 never left.
    assert_eq!(online(&a, &[2, 5]), [(2, true), (5, true)]);
    let left = wait_for(&a, "leave notice", |e| match e {
        Event::NotifyLeaveChannel { uids, .. } => Some(uids),
        _ => None,
    });
    assert_eq!(left, [Uid(5)]);
    assert_eq!(online(&a, &[2, 5]), [(2, true), (5, false)]);
    drop(lonely);
}

#[test]
fn the_hub_node_killed_mid_stream_another_node_takes_over_and_nothing_is_lost() {
    let redis = RedisServer::start(Persistence::Aof);
    hub_node_killed_mid_stream(&redis.url(), &[]);
}

/// The same with the store spread over two Redis (two hub shards, one
/// per instance): the node taking over holds the lease on both and loads
/// from both.
#[test]
fn with_the_store_over_two_redis_the_hub_node_killed_loses_nothing() {
    let (a, b) = (
        RedisServer::start(Persistence::Aof),
        RedisServer::start(Persistence::Aof),
    );
    hub_node_killed_mid_stream(&format!("{},{}", a.url(), b.url()), &["--threads", "2"]);
    for r in [&a, &b] {
        let lease = raw_command(r.port(), &["GET", "hummer:lease"]);
        assert!(
            !lease.starts_with("$-1"),
            "every instance's lease is held: {lease}"
        );
    }
}

/// Three nodes on `engine`; a sender on one gateway node streams to a
/// receiver on the other while the hub node is killed.
fn hub_node_killed_mid_stream(engine: &str, extra: &[&str]) {
    let addrs: Vec<SocketAddr> = (0..3).map(|_| free_addr()).collect();
    let mut nodes = cluster_on(engine, &addrs, extra);
    // The sender is on a gateway node, the receiver on the other; both
    // know every node.
    let rotate =
        |first: usize| -> Vec<SocketAddr> { (0..3).map(|i| addrs[(first + i) % 3]).collect() };
    let (sender, room) = member_on(&rotate(1), 1);
    let (receiver, _) = member_on(&rotate(2), 2);
    const N: u32 = 100;
    let stream = stream_to_channel(sender, room, N);
    let mut seen: Vec<u32> = Vec::new();
    let mut hub = Some(nodes.remove(0).1);
    while seen.last() != Some(&N) {
        let n: u32 = text(&next_message(&receiver)).parse().unwrap();
        seen.push(n);
        if n == 30 {
            hub.take().unwrap().kill();
        }
    }
    let retried = stream.join().unwrap();
    // One of the gateway nodes took the state over.
    let took = nodes
        .iter()
        .filter(|(_, n)| {
            std::iter::from_fn(|| n.1.try_recv().ok()).any(|l| l.contains(": hub node"))
        })
        .count();
    assert_eq!(took, 1, "one node took over");
    let dups = assert_once_in_order(&seen, N, &retried);
    eprintln!(
        "{N} messages through the hub node's death: {} retried, {dups} delivered twice",
        retried.len(),
    );
}

/// Every node killed and started again (Redis kept, with its AOF): the
/// clients resume with no loss event, members and offline messages as
/// they were.
#[test]
fn every_node_restarted_loses_nothing_a_client_saw() {
    let redis = RedisServer::start(Persistence::Aof);
    let nodes = cluster(&redis, 3, &[]);
    let addrs: Vec<SocketAddr> = nodes.iter().map(|(a, _)| *a).collect();
    let (a, room_a) = member_on(&addrs[1..], 1);
    let (b, _) = member_on(&addrs[2..], 2);
    a.send_message_to_channel(room_a, Message::new("t", "m1"), SendOptions::default())
        .unwrap();
    assert_eq!(text(&next_message(&b)), "m1");
    a.send_message_to_user(Uid(3), Message::new("t", "p1"), SendOptions::default())
        .unwrap();
    for (_, node) in nodes {
        node.kill();
    }
    // The old hub node's lease lapses (1 s); the first node started again
    // takes it.
    let _nodes = cluster_on(&redis.url(), &addrs, &[]);
    assert_resumed_with_nothing_lost(&a, &b, room_a, addrs[0]);
    assert_eq!(
        a.get_channel_user_list(room_a).unwrap().users,
        [Uid(1), Uid(2)]
    );
}

/// Redis restarted with its AOF under a serving cluster: the service goes
/// on, nothing is lost.
#[test]
fn redis_restarted_with_its_aof_under_a_cluster_loses_nothing() {
    let mut redis = RedisServer::start(Persistence::Aof);
    let nodes = cluster(&redis, 2, &[]);
    let (a, room) = member_on(&[nodes[1].0], 1);
    let (b, _) = member_on(&[nodes[0].0], 2);
    a.send_message_to_channel(room, Message::new("t", "m1"), SendOptions::default())
        .unwrap();
    assert_eq!(text(&next_message(&b)), "m1");
    redis.restart();
    send_retrying(&a, room, "m2");
    assert_eq!(text(&next_message(&b)), "m2");
    // A node started now finds the hub node and serves.
    let late = Node::spawn(free_addr(), &redis.url(), CLUSTER);
    late.line_containing(": gateway node of hub node");
}

/// Redis restarted empty under a serving cluster: the hub node writes its
/// whole state again and announces itself again, so a node started later
/// joins, and a restart of every node afterwards loses nothing.
#[test]
fn redis_restarted_empty_under_a_cluster_is_written_again_and_the_hub_found_again() {
    let mut redis = RedisServer::start(Persistence::None);
    let nodes = cluster(&redis, 2, &[]);
    let addrs: Vec<SocketAddr> = nodes.iter().map(|(a, _)| *a).collect();
    let (a, room) = member_on(&addrs[1..], 1);
    let (b, _) = member_on(&addrs, 2);
    a.send_message_to_channel(room, Message::new("t", "m1"), SendOptions::default())
        .unwrap();
    assert_eq!(text(&next_message(&b)), "m1");
    a.send_message_to_user(Uid(3), Message::new("t", "p1"), SendOptions::default())
        .unwrap();
    redis.restart();
    // A third node finds the hub node again (its announcement went with
    // the data, and came back).
    let third = free_addr();
    let late = Node::spawn(third, &redis.url(), CLUSTER);
    late.line_containing(": gateway node of hub node");
    // The hub node writes its whole state again (the inboxes of uids 1,
    // 2 and 3 among it); then every node restarted loses nothing.
    // (Twice the usual wait: it failed once in 15 s on a loaded machine;
    // a failure says what Redis and the nodes had.)
    let deadline = Instant::now() + 2 * WAIT;
    while raw_command(redis.port(), &["SCARD", "hummer:keys:i"]).trim() != ":3" {
        if Instant::now() >= deadline {
            let get = |key: &str| raw_command(redis.port(), &["GET", key]);
            let logs: Vec<String> = nodes
                .iter()
                .chain([(third, late)].iter())
                .map(|(addr, node)| format!("{addr}: {:?}", node.1.try_iter().collect::<Vec<_>>()))
                .collect();
            panic!(
                "the state was not written again: inboxes {:?}, lease {:?}, hub {:?}, generation {:?}; node logs:\n{}",
                raw_command(redis.port(), &["SMEMBERS", "hummer:keys:i"]),
                get("hummer:lease"),
                get("hummer:hub"),
                get("hummer:gen"),
                logs.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(late);
    for (_, node) in nodes {
        node.kill();
    }
    let _nodes = cluster_on(&redis.url(), &addrs, &[]);
    assert_resumed_with_nothing_lost(&a, &b, room, addrs[0]);
}

/// A browser's transport on a gateway node: a WebSocket client there and
/// a TCP client on the hub node are one service.
#[test]
fn a_websocket_client_on_a_gateway_node_and_a_tcp_client_on_the_hub_node_talk() {
    let redis = RedisServer::start(Persistence::Aof);
    let nodes = cluster(&redis, 1, &[]);
    let ws = free_addr().to_string();
    let args: Vec<&str> = CLUSTER
        .iter()
        .copied()
        .chain(["--ws-listen", &ws])
        .collect();
    let gateway = Node::spawn(free_addr(), &redis.url(), &args);
    gateway.line_containing(": gateway node of hub node");
    let url: hummer_channel::adapters::Endpoint = format!("ws://{ws}/v1/ws").parse().unwrap();
    let (browser, room_w) = {
        let c = Client::connect_any([url], config()).unwrap();
        c.login(Uid(7), None, Some(Region::Cn)).unwrap();
        let room = c.create_channel(Region::Cn, "room").unwrap();
        c.join_channel(room, Default::default()).unwrap();
        (c, room)
    };
    let (tcp, room_t) = member_on(&[nodes[0].0], 8);
    browser
        .send_message_to_channel(room_w, Message::new("t", "from ws"), SendOptions::default())
        .unwrap();
    assert_eq!(text(&next_message(&tcp)), "from ws");
    tcp.send_message_to_channel(
        room_t,
        Message::new("t", "from tcp"),
        SendOptions::default(),
    )
    .unwrap();
    // (The browser's own echo comes first.)
    assert_eq!(text(&next_message(&browser)), "from ws");
    assert_eq!(text(&next_message(&browser)), "from tcp");
}

/// The server API key of the demo app on the nodes of the API tests.
const API_KEY: &str = "cluster-test-api-key-0123456789abcdef";

/// A node of a cluster in `redis` on `addr` with its API listener on
/// `api`, once its log holds `role`.
fn api_node(redis: &RedisServer, addr: SocketAddr, api: SocketAddr, role: &str) -> Node {
    let api = api.to_string();
    let key = format!("{}:{API_KEY}", hummer_channel::server::DEMO_APPID);
    let args: Vec<&str> = CLUSTER
        .iter()
        .copied()
        .chain(["--api-listen", &api, "--api-key", &key])
        .collect();
    let node = Node::spawn(addr, &redis.url(), &args);
    node.line_containing(role);
    node
}

/// One server API call (HTTP/1.1, the demo app's key): its status and
/// body, or why there was none (the read waits [`WAIT`] at most).
fn try_call_api(
    api: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> Result<(u16, String), String> {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(api).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(WAIT)).unwrap();
    let body = body.unwrap_or("");
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\
         Authorization: apikey {API_KEY}\r\n"
    );
    if matches!(method, "POST" | "PUT" | "PATCH") {
        request += &format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        );
    }
    request += "\r\n";
    request += body;
    s.write_all(request.as_bytes()).map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(|e| e.to_string())?;
    let text = String::from_utf8(raw).map_err(|e| e.to_string())?;
    let (head, rest) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no whole answer: {text:?}"))?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status: {head:?}"))?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(rest)
    } else {
        rest.to_owned()
    };
    Ok((status, body))
}

fn call_api(api: SocketAddr, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    try_call_api(api, method, path, body).unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap();
        if n == 0 {
            break;
        }
        out += &rest[..n];
        s = &rest[n + 2..];
    }
    out
}

#[test]
fn the_server_api_answers_on_a_gateway_node_as_on_the_hub_node() {
    let redis = RedisServer::start(Persistence::Aof);
    let (hub_addr, gateway_addr) = (free_addr(), free_addr());
    let (hub_api, gateway_api) = (free_addr(), free_addr());
    let hub = api_node(&redis, hub_addr, hub_api, ": hub node");
    let _gateway = api_node(
        &redis,
        gateway_addr,
        gateway_api,
        ": gateway node of hub node",
    );

    // State made by a client of the hub node, and a member on the
    // gateway node.
    let (a, room_a) = member(hub_addr, 1);
    let mood = BTreeMap::from([("mood".to_owned(), "calm".to_owned())]);
    a.set_local_user_attributes(room_a, mood, AttributeOptions::default())
        .unwrap();
    let topic = BTreeMap::from([("topic".to_owned(), "rust".to_owned())]);
    a.set_channel_attributes(room_a, topic, AttributeOptions::default())
        .unwrap();
    let (b, _room_b) = member(gateway_addr, 2);

    // Reads on the gateway node answer what the hub node's own API does.
    let reads = [
        "/v1/channels/cn/room",
        "/v1/channels/cn/room/attributes",
        "/v1/channels/cn/room/user-attributes",
        "/v1/users/online?uids=1,2,3",
        "/v1/users/1/channels",
        "/v1/channels?limit=10",
    ];
    for path in reads {
        let on_hub = call_api(hub_api, "GET", path, None);
        assert_eq!(on_hub.0, 200, "{path}: {}", on_hub.1);
        assert_eq!(call_api(gateway_api, "GET", path, None), on_hub, "{path}");
    }
    let (_, channel) = call_api(gateway_api, "GET", "/v1/channels/cn/room", None);
    assert!(channel.contains(r#""members":[1,2]"#), "{channel}");
    assert!(channel.contains(r#""topic":"rust""#), "{channel}");
    let (_, users) = call_api(
        gateway_api,
        "GET",
        "/v1/channels/cn/room/user-attributes",
        None,
    );
    assert!(users.contains(r#""1":{"mood":"calm"}"#), "{users}");
    let (_, online) = call_api(gateway_api, "GET", "/v1/users/online?uids=1,2,3", None);
    assert!(
        online.contains(r#""1":true"#)
            && online.contains(r#""2":true"#)
            && online.contains(r#""3":false"#),
        "{online}"
    );

    // A publish on the gateway node reaches the members on both nodes; a
    // message to a user on the hub node reaches it.
    let (status, sent) = call_api(
        gateway_api,
        "POST",
        "/v1/channels/cn/room/messages",
        Some(r#"{"message_id": 1001, "type": "notice", "content": "from the gateway's API"}"#),
    );
    assert_eq!(status, 200, "{sent}");
    assert!(sent.contains(r#""delivered_online":true"#), "{sent}");
    for client in [&a, &b] {
        assert_eq!(text(&next_message(client)), "from the gateway's API");
    }
    let (status, sent) = call_api(
        gateway_api,
        "POST",
        "/v1/users/1/messages",
        Some(r#"{"message_id": 1002, "type": "notice", "content": "to uid 1"}"#),
    );
    assert_eq!(status, 200, "{sent}");
    assert!(sent.contains(r#""delivered_online":true"#), "{sent}");
    assert_eq!(text(&next_message(&a)), "to uid 1");
    // The hub node stored it: its history has it, as the gateway reads.
    let history = "/v1/channels/cn/room/messages?after_seq=0&limit=10";
    let (status, on_gateway) = call_api(gateway_api, "GET", history, None);
    assert_eq!(status, 200, "{on_gateway}");
    assert!(
        on_gateway.contains("from the gateway's API"),
        "{on_gateway}"
    );
    assert_eq!(call_api(hub_api, "GET", history, None), (200, on_gateway));

    // The hub node stalls: a call on the gateway node waits for it ...
    let hub_pid = hub.0.id().to_string();
    let stopped = std::process::Command::new("kill")
        .args(["-STOP", &hub_pid])
        .status()
        .unwrap();
    assert!(stopped.success());
    let waiting =
        std::thread::spawn(move || try_call_api(gateway_api, "GET", "/v1/channels/cn/room", None));
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        !waiting.is_finished(),
        "answered while the hub node was stopped: {:?}",
        waiting.join()
    );
    // ... and is answered 503 as soon as the hub node is gone.
    let killed = Instant::now();
    hub.kill();
    let answer = waiting.join().unwrap();
    let took = killed.elapsed();
    let (status, body) = answer.expect("an answer, not a dropped connection");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("the cluster's hub node was lost"), "{body}");
    assert!(took < Duration::from_secs(2), "answered after {took:?}");
    // The next call does not wait either: 503 while the node finds the
    // hub node (or, once it took over as the hub node, its answer).
    let asked = Instant::now();
    let (status, body) = call_api(gateway_api, "GET", "/v1/users/online?uids=1", None);
    assert!(status == 503 || status == 200, "{status}: {body}");
    assert!(
        asked.elapsed() < Duration::from_secs(2),
        "{:?}",
        asked.elapsed()
    );
}

#[test]
fn a_node_finding_its_hub_node_answers_the_server_api_503_at_once() {
    let redis = RedisServer::start(Persistence::Aof);
    // A lease held by a node that announced no address: this node can be
    // neither the hub node nor a gateway node until the lease lapses.
    let set = raw_command(
        redis.port(),
        &["SET", "hummer:lease", "ghost", "PX", "60000"],
    );
    assert_eq!(set.trim(), "+OK");
    let api = free_addr();
    let node = api_node(&redis, free_addr(), api, "hummer-server API on http://");
    for _ in 0..3 {
        let asked = Instant::now();
        let (status, body) = call_api(api, "GET", "/v1/users/online?uids=1", None);
        assert_eq!(status, 503, "{body}");
        assert!(body.contains("finding the cluster's hub node"), "{body}");
        assert!(
            asked.elapsed() < Duration::from_secs(2),
            "{:?}",
            asked.elapsed()
        );
    }
    // The process lives (a liveness probe must not restart it); it is not
    // ready.
    assert_eq!(call_api(api, "GET", "/healthz", None).0, 200);
    assert_eq!(call_api(api, "GET", "/readyz", None).0, 503);
    drop(node);
}

#[test]
fn a_tls_cluster_carries_channel_and_p2p_messages_between_its_nodes() {
    let redis = RedisServer::start(Persistence::None);
    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    // Each node its own certificate, both signed by the cluster's CA.
    let hub_tls = ca.node_flags(dir.path(), "hub", &ca.pem);
    let gateway_tls = ca.node_flags(dir.path(), "gateway", &ca.pem);
    let (hub_addr, gateway_addr) = (free_addr(), free_addr());
    let hub = Node::spawn(hub_addr, &redis.url(), &with_cluster(&hub_tls));
    let line = hub.line_containing("cluster links on");
    assert!(line.ends_with(", TLS)"), "{line}");
    hub.line_containing(": hub node");
    let gateway = Node::spawn(gateway_addr, &redis.url(), &with_cluster(&gateway_tls));
    gateway.line_containing(": gateway node of hub node");
    let (a, room_a) = member_on(&[hub_addr], 1);
    let (b, room_b) = member_on(&[gateway_addr], 2);

    // A channel message each way, across the TLS link (every member,
    // its sender too, hears it).
    b.send_message_to_channel(room_b, Message::new("t", "up"), SendOptions::default())
        .unwrap();
    a.send_message_to_channel(room_a, Message::new("t", "down"), SendOptions::default())
        .unwrap();
    for client in [&a, &b] {
        let mut got = [text(&next_message(client)), text(&next_message(client))];
        got.sort();
        assert_eq!(got, ["down", "up"]);
    }
    // P2P each way, delivered online.
    let sent = b
        .send_message_to_user(Uid(1), Message::new("t", "p2p up"), SendOptions::default())
        .unwrap();
    assert!(sent.delivered_online);
    assert_eq!(text(&next_message(&a)), "p2p up");
    let sent = a
        .send_message_to_user(
            Uid(2),
            Message::new("t", "p2p down"),
            SendOptions::default(),
        )
        .unwrap();
    assert!(sent.delivered_online);
    assert_eq!(text(&next_message(&b)), "p2p down");
    // Larger than one TLS record (16 KiB), whole.
    let big = "x".repeat(30_000);
    b.send_message_to_channel(
        room_b,
        Message::new("t", big.clone()),
        SendOptions::default(),
    )
    .unwrap();
    assert_eq!(text(&next_message(&a)), big);
    drop((gateway, hub));
}
