//! A server of several gateways in front of one hub: connections spread in
//! turn, and every operation that spans connections works across gateways.

use crate::support::*;

fn three() -> Net {
    Net::with_gateways(ServerConfig::demo(), 3)
}

#[test]
fn connections_spread_over_the_gateways_in_turn() {
    let mut n = three();
    let ids: Vec<ConnId> = (0..7).map(|_| n.accept()).collect();
    let gateways: Vec<u16> = ids.iter().map(|c| c.gateway().0).collect();
    assert_eq!(gateways, [0, 1, 2, 0, 1, 2, 0]);
    assert_eq!(n.s.connection_count(), 7);
    assert_eq!(
        n.s.config().max_queued_bytes,
        ServerConfig::demo().max_queued_bytes
    );
    let mut small = ServerConfig::demo();
    small.max_queued_bytes = 12_345;
    assert_eq!(
        Net::with_gateways(small, 2).s.config().max_queued_bytes,
        12_345
    );
}

#[test]
fn a_broadcast_reaches_members_on_every_gateway_encoded_once() {
    let mut n = three();
    let members: Vec<ConnId> = (1..=6).map(|uid| n.login(uid).0).collect();
    for &c in &members {
        n.ok_join(c, "room");
    }
    n.advance(Duration::from_secs(1));
    n.clear(&members);
    let r = n.sent(members[0], to_channel_with("room", "hello", false));
    assert_eq!(r.seq, 1);
    let mut ptrs = Vec::new();
    for &c in &members {
        let frames = n.raw_frames(c);
        assert_eq!(frames.len(), 1, "{c}: {frames:?}");
        assert!(
            matches!(&frames[0].1.body, Body::ChannelMessage(m) if m.seq == 1 && m.from_uid == 1)
        );
        ptrs.push(frames[0].0.as_ptr());
    }
    assert!(
        ptrs.windows(2).all(|w| w[0] == w[1]),
        "one encoding for all gateways"
    );
    // The join notices crossed the gateways too: a member on gateway 2
    // heard of the one on gateway 0.
    let late = n.login(7).0;
    assert_eq!(late.gateway().0, 0);
    n.ok_join(late, "room");
    n.advance(Duration::from_secs(1));
    let heard = n.bodies(members[2]);
    assert!(
        heard
            .iter()
            .any(|b| matches!(b, Body::Membership(m) if m.joined == vec![7])),
        "{heard:?}"
    );
}

#[test]
fn a_uid_on_two_gateways_gets_its_messages_on_both() {
    let mut n = three();
    let (sender, _) = n.login(1);
    let (a, _) = n.login(2);
    let (b, _) = n.login(2);
    assert_ne!(a.gateway(), b.gateway());
    // Each logged-in uid has its inbox (its P2P stream).
    assert_eq!((n.s.inbox_count(), n.s.remembered_send_ids()), (2, 0));
    let r = n.sent(sender, to_user(2, "to both"));
    assert!(r.delivered_online);
    // The hub's counters, through the server: one remembered id more.
    assert_eq!((n.s.inbox_count(), n.s.remembered_send_ids()), (2, 1));
    for c in [a, b] {
        let bodies = n.bodies(c);
        assert!(
            matches!(&bodies[..], [Body::UserMessage(m)] if m.seq == r.seq && m.from_uid == 1),
            "{c}: {bodies:?}"
        );
    }
}

#[test]
fn kicks_and_resumes_close_the_old_link_on_its_own_gateway() {
    let mut n = Net::with_gateways(
        {
            let mut cfg = ServerConfig::demo();
            for app in &mut cfg.apps {
                app.kick_older_logins = true;
            }
            cfg
        },
        2,
    );
    let (old, _) = n.login(5);
    // Driven by hand: the close is reported by the server's
    // `poll_transport`, whichever gateway holds the link.
    let new = n.accept();
    n.s.handle_frame(n.now, new, frame(1, Body::Login(login_req(5))));
    let Some(TransportAction::Close { conn, reason }) = n.s.poll_transport() else {
        panic!("the kick is reported")
    };
    assert_eq!((conn, reason), (old, CloseReason::Kicked));
    assert_eq!(n.s.poll_transport(), None);
    n.drain(new);
    let r = login_reply(n.reply_to(new, 1));
    assert_ne!(old.gateway(), new.gateway());
    n.drain(old);
    assert!(matches!(&n.bodies(old)[..], [Body::Close(c)] if c.code == 100));
    // A resume of `new`'s instance on a link of the other gateway.
    let (resumed, x) = n.login_req_on_new(resume_req(5, r.instance_id, r.p2p_epoch, 0, vec![]));
    assert_ne!(resumed.gateway(), new.gateway());
    assert!(x.resumed);
    assert_eq!(n.closes_of(new), vec![CloseReason::Replaced]);
    assert_eq!(n.s.instance_count(), 1);
}

#[test]
fn a_lost_link_on_any_gateway_keeps_its_grace_period() {
    let mut n = three();
    let (a, _) = n.login(1);
    let (b, _) = n.login(2);
    n.ok_join(a, "room");
    n.ok_join(b, "room");
    n.advance(Duration::from_secs(1));
    n.frames(a);
    n.lose(b);
    n.lose(b);
    assert_eq!(n.s.stale_inputs(), 1, "the second disconnect is stale");
    let online = n.req(
        a,
        Body::QueryOnline(wire::QueryOnlineRequest { uids: vec![2] }),
    );
    assert!(matches!(online, Body::OnlineStatus(s) if s.status.get(&2) == Some(&true)));
    n.run_for(ServerConfig::demo().presence_grace + Duration::from_secs(2));
    let bodies = n.bodies(a);
    assert!(
        bodies
            .iter()
            .any(|x| matches!(x, Body::Membership(m) if m.left == vec![2])),
        "{bodies:?}"
    );
}

#[test]
fn a_pass_of_poll_ready_covers_every_gateway_once() {
    let mut n = three();
    let conns: Vec<ConnId> = (1..=3).map(|uid| n.login(uid).0).collect();
    for &c in &conns {
        n.hold(c);
        n.s.handle_frame(n.now, c, frame(99, Body::Ping(wire::Ping { nonce: 1 })));
    }
    let mut pass = Vec::new();
    while let Some(c) = n.s.poll_ready() {
        pass.push(c);
    }
    pass.sort();
    assert_eq!(pass, conns, "each connection once, whatever its gateway");
    let mut again = Vec::new();
    while let Some(c) = n.s.poll_ready() {
        again.push(c);
        n.drain(c);
    }
    again.sort();
    assert_eq!(
        again, conns,
        "still queued: reported again on the next pass"
    );
    assert_eq!(n.s.poll_ready(), None);
    assert_eq!(n.s.poll_ready(), None, "nothing left on any gateway");
}

/// A gateway on its own: its deadlines, its stream errors and what it tells
/// the hub about a link it closed.
#[test]
fn a_gateway_alone_times_closes_and_tells_the_hub_once() {
    use hummer_channel::server::{Gateway, GatewayId, ToHub};
    use hummer_channel::WireError;
    let config = ServerConfig::demo();
    let t0 = Instant::now();
    let mut g = Gateway::new(GatewayId(3), config.clone(), t0, T0_UNIX_MS);
    assert_eq!(g.poll_timeout(), None, "nothing to wait for");
    let c = g.accept(t0);
    assert_eq!(c.gateway(), GatewayId(3));
    let first = g
        .poll_timeout()
        .expect("a deadline: the heartbeat or the login");
    assert!(first > t0 && first <= t0 + config.login_timeout.max(config.idle_timeout));

    // A broken stream closes the link as a protocol error, and the hub is
    // told once, however the transport ends afterwards.
    g.handle_stream_error(t0, c, WireError::EmptyFrame);
    assert!(matches!(
        g.poll_transport(),
        Some(TransportAction::Close { conn, reason: CloseReason::ProtocolError(_) }) if conn == c
    ));
    g.handle_stream_error(t0, c, WireError::EmptyFrame);
    assert_eq!(
        g.stale_inputs(),
        1,
        "a second error on a closing link is stale"
    );
    g.handle_disconnected(t0, c);
    let told: Vec<ToHub> = std::iter::from_fn(|| g.poll_hub()).collect();
    assert!(
        matches!(told.as_slice(), [ToHub::LinkLost { conn }] if *conn == c),
        "{told:?}"
    );
    assert_eq!(g.connection_count(), 0);
}

#[test]
fn a_refusing_gateway_answers_every_request_itself_and_keeps_the_link() {
    use hummer_channel::server::{Gateway, GatewayId, ToHub};
    let t0 = Instant::now();
    let mut g = Gateway::new(GatewayId(0), ServerConfig::demo(), t0, T0_UNIX_MS);
    let c = g.accept(t0);
    let refusal = hummer_channel::ServiceError::new(ErrorCode::SERVICE_UNAVAILABLE, "store down");
    g.set_refusing(Some(refusal));
    g.handle_frame(t0, c, frame(1, Body::Login(login_req(1))));
    g.handle_frame(t0, c, frame(2, Body::Ping(wire::Ping { nonce: 7 })));
    let out: Vec<_> = std::iter::from_fn(|| g.poll_transmit(c))
        .map(|b| decode_frame(b, MAX).unwrap())
        .collect();
    // (A pong may go ahead of replies.)
    assert_eq!(out.len(), 2, "{out:?}");
    assert!(
        out.iter()
            .any(|f| matches!(&f.body, Body::Error(e) if e.code == 4010 && f.request_id == 1)),
        "{out:?}"
    );
    assert!(
        out.iter()
            .any(|f| matches!(&f.body, Body::Pong(p) if p.nonce == 7)),
        "{out:?}"
    );
    assert!(g.poll_hub().is_none(), "a refused request reached the hub");
    assert!(g.poll_transport().is_none(), "the link was closed");
    // Once the store is back, requests go on to the hub.
    g.set_refusing(None);
    g.handle_frame(t0, c, frame(3, Body::Login(login_req(1))));
    assert!(matches!(
        g.poll_hub(),
        Some(ToHub::Login { request_id: 3, .. })
    ));
}

use hummer_channel::server::{Gateway, Hub};

/// Carries every message between hand-wired gateways and one hub
/// until nothing moves.
fn settle(now: Instant, hub: &mut Hub, gateways: &mut [&mut Gateway]) {
    loop {
        let mut moved = false;
        for g in gateways.iter_mut() {
            while let Some(m) = g.poll_hub() {
                hub.handle(now, m);
                moved = true;
            }
        }
        while let Some(m) = hub.poll_gateway() {
            let to = m.gateway();
            if let Some(g) = gateways.iter_mut().find(|g| g.id() == to) {
                g.handle_hub(now, m);
            }
            moved = true;
        }
        if !moved {
            return;
        }
    }
}

/// What `conn` received, decoded.
fn received(g: &mut Gateway, conn: ConnId) -> Vec<Body> {
    std::iter::from_fn(|| g.poll_transmit(conn))
        .map(|b| decode_frame(b, MAX).unwrap().body)
        .collect()
}

/// A gateway that goes away with its links (its node died): their
/// instances keep their presence for the grace period, then leave; the
/// other gateway's links are untouched.
#[test]
fn a_lost_gateway_loses_its_links_after_the_grace_period_only() {
    use hummer_channel::server::GatewayId;
    let config = ServerConfig::demo();
    let grace = config.presence_grace;
    let t0 = Instant::now();
    let mut hub = Hub::new(config.clone(), t0, T0_UNIX_MS);
    let mut g1 = Gateway::new(GatewayId(1), config.clone(), t0, T0_UNIX_MS);
    let mut g2 = Gateway::new(GatewayId(2), config.clone(), t0, T0_UNIX_MS);
    let (a, b) = (g1.accept(t0), g2.accept(t0));
    let a2 = g1.accept(t0);
    g1.handle_frame(t0, a, frame(1, Body::Login(login_req(1))));
    g1.handle_frame(t0, a2, frame(1, Body::Login(login_req(3))));
    g2.handle_frame(t0, b, frame(1, Body::Login(login_req(2))));
    settle(t0, &mut hub, &mut [&mut g1, &mut g2]);
    g1.handle_frame(t0, a, frame(2, join("room")));
    g1.handle_frame(t0, a2, frame(2, join("room")));
    g2.handle_frame(t0, b, frame(2, join("room")));
    settle(t0, &mut hub, &mut [&mut g1, &mut g2]);
    let t1 = t0 + Duration::from_secs(1);
    hub.handle_timeout(t1);
    settle(t1, &mut hub, &mut [&mut g1, &mut g2]);
    received(&mut g2, b);
    assert_eq!(hub.instance_count(), 3);

    hub.handle_gateway_lost(t1, GatewayId(1));
    // A gateway the hub never saw, and the same one again: nothing.
    hub.handle_gateway_lost(t1, GatewayId(7));
    hub.handle_gateway_lost(t1, GatewayId(1));
    let online = |hub: &mut Hub, g2: &mut Gateway, now: Instant, rid: u64| {
        let q = Body::QueryOnline(wire::QueryOnlineRequest {
            uids: vec![1, 2, 3],
        });
        g2.handle_frame(now, b, frame(rid, q));
        settle(now, hub, &mut [g2]);
        received(g2, b)
            .into_iter()
            .find_map(|body| match body {
                Body::OnlineStatus(s) => Some(s.status.into_iter().collect::<Vec<_>>()),
                _ => None,
            })
            .expect("an online status reply")
    };
    // Within the grace period both lost uids are still online.
    let t2 = t1 + grace - Duration::from_millis(1);
    hub.handle_timeout(t2);
    assert_eq!(
        online(&mut hub, &mut g2, t2, 3),
        [(1, true), (2, true), (3, true)]
    );
    assert_eq!(hub.instance_count(), 3);
    // After it they are gone, and the member on the other gateway hears
    // that both left the room.
    let t3 = t1 + grace + Duration::from_secs(2);
    hub.handle_timeout(t3);
    assert_eq!(hub.instance_count(), 1);
    // (Notices are batched over a short window.)
    let t3 = t3 + Duration::from_secs(2);
    hub.handle_timeout(t3);
    settle(t3, &mut hub, &mut [&mut g2]);
    let heard = received(&mut g2, b);
    let mut left: Vec<u64> = heard
        .iter()
        .filter_map(|body| match body {
            Body::Membership(m) => Some(m.left.clone()),
            _ => None,
        })
        .flatten()
        .collect();
    left.sort_unstable();
    assert_eq!(left, [1, 3], "{heard:?}");
    assert_eq!(
        online(&mut hub, &mut g2, t3, 4),
        [(1, false), (2, true), (3, false)]
    );
}

/// A node's gateways lost at once, in one pass: the links of every
/// gateway the predicate names go into their grace period, the others'
/// stay.
#[test]
fn gateways_lost_together_lose_exactly_their_links() {
    use hummer_channel::server::GatewayId;
    let config = ServerConfig::demo();
    let grace = config.presence_grace;
    let t0 = Instant::now();
    let mut hub = Hub::new(config.clone(), t0, T0_UNIX_MS);
    let mut gateways: Vec<Gateway> = (1..=3)
        .map(|g| Gateway::new(GatewayId(g), config.clone(), t0, T0_UNIX_MS))
        .collect();
    for (uid, g) in (1..).zip(gateways.iter_mut()) {
        let c = g.accept(t0);
        g.handle_frame(t0, c, frame(1, Body::Login(login_req(uid))));
    }
    let mut all: Vec<&mut Gateway> = gateways.iter_mut().collect();
    settle(t0, &mut hub, &mut all);
    assert_eq!(hub.instance_count(), 3);
    hub.handle_gateways_lost(t0, |g| g == GatewayId(1) || g == GatewayId(3));
    // Present through the grace period, then only gateway 2's remains.
    hub.handle_timeout(t0 + grace - Duration::from_millis(1));
    assert_eq!(hub.instance_count(), 3);
    hub.handle_timeout(t0 + grace + Duration::from_secs(1));
    assert_eq!(hub.instance_count(), 1);
    hub.handle_gateways_lost(t0, |_| false);
    hub.handle_timeout(t0 + grace * 3);
    assert_eq!(
        hub.instance_count(),
        1,
        "a predicate naming none loses none"
    );
}

/// A login's reply reaches the gateway before the inbox replay after it
/// (between threads, the replay may come in a later batch): a request
/// read in between reports that replay as the most it may be, half the
/// queue bound, until the hub says the login is answered whole; then
/// only what is queued.
#[test]
fn a_replay_counts_until_its_request_is_answered_whole_not_until_its_reply() {
    use hummer_channel::server::{GatewayId, ToGateway, ToHub};
    let config = ServerConfig::demo();
    let half = config.max_queued_bytes / 2;
    let t0 = Instant::now();
    let mut hub = Hub::new(config.clone(), t0, T0_UNIX_MS);
    let mut g = Gateway::new(GatewayId(0), config.clone(), t0, T0_UNIX_MS);
    // uid 2 sends uid 1 (offline) ten messages: its inbox.
    let b = g.accept(t0);
    g.handle_frame(t0, b, frame(1, Body::Login(login_req(2))));
    for n in 0..10 {
        g.handle_frame(t0, b, frame(2 + n, to_user(1, &"x".repeat(500))));
    }
    settle(t0, &mut hub, &mut [&mut g]);
    // uid 1 logs in: its reply, then the inbox replayed, then the mark.
    let a = g.accept(t0);
    g.handle_frame(t0, a, frame(1, Body::Login(login_req(1))));
    while let Some(m) = g.poll_hub() {
        hub.handle(t0, m);
    }
    let out: Vec<ToGateway> = std::iter::from_fn(|| hub.poll_gateway()).collect();
    let reply_at = out
        .iter()
        .position(|m| matches!(m, ToGateway::Send { frame, .. } if decode_frame(frame.clone(), MAX).is_ok_and(|f| f.request_id == 1)))
        .expect("the login's reply");
    assert!(
        matches!(out.last(), Some(ToGateway::Answered { conn, request_id: 1 }) if *conn == a),
        "{out:?}"
    );
    assert!(
        out.len() >= reply_at + 12,
        "the ten pushes follow the reply: {out:?}"
    );
    let mut out = out.into_iter();
    for m in out.by_ref().take(reply_at + 1) {
        g.handle_hub(t0, m);
    }
    // Each request read goes on to the hub; what it reported as queued.
    let read = |g: &mut Gateway, hub: &mut Hub, rid: u64, body: Body| {
        g.handle_frame(t0, a, frame(rid, body));
        let m = g.poll_hub().expect("the request goes to the hub");
        let ToHub::Request { queued, .. } = &m else {
            panic!("{m:?}")
        };
        let queued = *queued;
        hub.handle(t0, m);
        queued
    };
    // Read while the replay is on its way.
    let waiting = read(&mut g, &mut hub, 2, fetch(None, 0));
    assert_eq!(waiting, g.queued_bytes(a) + half);
    // The replay and the mark arrive: a request read now reports what is
    // queued, and the fetch's replay (not answered yet) only.
    for m in out {
        g.handle_hub(t0, m);
    }
    let info = Body::GetInstanceInfo(wire::Empty {});
    assert_eq!(
        read(&mut g, &mut hub, 3, info.clone()),
        g.queued_bytes(a) + half
    );
    settle(t0, &mut hub, &mut [&mut g]);
    assert_eq!(read(&mut g, &mut hub, 4, info.clone()), g.queued_bytes(a));
    // A refusal ends a wait too.
    let rejoin = wire::JoinRequest {
        rejoin: true,
        ..Default::default()
    };
    read(&mut g, &mut hub, 5, Body::Join(rejoin));
    settle(t0, &mut hub, &mut [&mut g]);
    assert_eq!(read(&mut g, &mut hub, 6, info), g.queued_bytes(a));
}

/// On two hub shards, a fetch of a channel homed on the other shard than
/// its uid: the channel's shard answers it for the link's home, which
/// relays the frames and only then says the request is answered whole.
#[test]
fn a_forwarded_request_is_said_answered_after_its_relayed_frames() {
    use hummer_channel::server::{channel_shard, uid_shard, GatewayId, ShardId, ToGateway};
    let config = ServerConfig::demo();
    let t0 = Instant::now();
    let mut hubs: Vec<Hub> = (0..2)
        .map(|s| Hub::new_shard(config.clone(), ShardId(s), 2, t0, T0_UNIX_MS))
        .collect();
    let mut g = Gateway::new(GatewayId(0), config.clone(), t0, T0_UNIX_MS).with_shards(2);
    let home = uid_shard(DEMO_APPID, 1, 2);
    let room = (0..)
        .map(|n| format!("room{n}"))
        .find(|id| channel_shard(DEMO_APPID, wire::Region::Cn as i32, id, 2) != home)
        .unwrap();
    // Every message for the gateway, in the order it got them.
    let mut told: Vec<ToGateway> = Vec::new();
    let pump = |g: &mut Gateway, hubs: &mut Vec<Hub>, told: &mut Vec<ToGateway>| loop {
        let mut moved = false;
        while let Some((shard, m)) = g.poll_hub_routed() {
            hubs[usize::from(shard.0)].handle(t0, m);
            moved = true;
        }
        for s in 0..hubs.len() {
            while let Some(m) = hubs[s].poll_gateway() {
                told.push(clone_to_gateway(&m));
                g.handle_hub(t0, m);
                moved = true;
            }
            while let Some((to, m)) = hubs[s].poll_shard() {
                hubs[usize::from(to.0)].handle_shard(t0, ShardId(s as u16), m);
                moved = true;
            }
        }
        if !moved {
            return;
        }
    };
    let a = g.accept(t0);
    g.handle_frame(t0, a, frame(1, Body::Login(login_req(1))));
    g.handle_frame(t0, a, frame(2, join(&room)));
    g.handle_frame(t0, a, frame(3, to_channel(&room, "m1")));
    pump(&mut g, &mut hubs, &mut told);
    told.clear();
    g.handle_frame(t0, a, frame(4, fetch(Some(&room), 0)));
    pump(&mut g, &mut hubs, &mut told);
    let reply_at = told
        .iter()
        .position(|m| matches!(m, ToGateway::Send { frame, .. } if decode_frame(frame.clone(), MAX).is_ok_and(|f| f.request_id == 4 && matches!(f.body, Body::FetchReply(_)))))
        .expect("the fetch's reply");
    let marks: Vec<usize> = told
        .iter()
        .enumerate()
        .filter(|(_, m)| matches!(m, ToGateway::Answered { conn, request_id: 4 } if *conn == a))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(marks, [told.len() - 1], "{told:?}");
    assert!(reply_at < told.len() - 1);
}

/// A copy of a message for the gateway (the type is not `Clone`).
fn clone_to_gateway(m: &hummer_channel::server::ToGateway) -> hummer_channel::server::ToGateway {
    use hummer_channel::server::ToGateway;
    match m {
        ToGateway::Send { conn, frame } => ToGateway::Send {
            conn: *conn,
            frame: frame.clone(),
        },
        ToGateway::Answered { conn, request_id } => ToGateway::Answered {
            conn: *conn,
            request_id: *request_id,
        },
        ToGateway::LoggedIn { conn, uid } => ToGateway::LoggedIn {
            conn: *conn,
            uid: *uid,
        },
        ToGateway::Broadcast { conns, frame } => ToGateway::Broadcast {
            conns: conns.clone(),
            frame: frame.clone(),
        },
        other => panic!("not expected here: {other:?}"),
    }
}

/// Each reply ends its own request's timing: two pipelined requests
/// answered 10 ms and 50 ms after they were read are timed so, each under
/// its own kind.
#[test]
fn each_reply_times_its_own_request() {
    use hummer_channel::server::{GatewayId, ToGateway};
    let config = ServerConfig::demo();
    let t0 = Instant::now();
    let mut hub = Hub::new(config.clone(), t0, T0_UNIX_MS);
    let mut g = Gateway::new(GatewayId(0), config, t0, T0_UNIX_MS);
    let a = g.accept(t0);
    g.handle_frame(t0, a, frame(1, Body::Login(login_req(1))));
    settle(t0, &mut hub, &mut [&mut g]);
    let base: Vec<(&str, u64)> = g
        .stats()
        .request_latency()
        .map(|(n, h)| (n, h.count()))
        .collect();
    g.handle_frame(t0, a, frame(10, Body::GetInstanceInfo(wire::Empty {})));
    let query = wire::QueryOnlineRequest { uids: vec![2] };
    g.handle_frame(t0, a, frame(11, Body::QueryOnline(query)));
    while let Some(m) = g.poll_hub() {
        hub.handle(t0, m);
    }
    let replies: Vec<ToGateway> = std::iter::from_fn(|| hub.poll_gateway()).collect();
    assert_eq!(replies.len(), 2, "{replies:?}");
    for (m, ms) in replies.into_iter().zip([10, 50]) {
        g.handle_hub(t0 + Duration::from_millis(ms), m);
    }
    let took: Vec<(&str, Duration)> = g
        .stats()
        .request_latency()
        .filter(|(n, _)| !base.iter().any(|(b, _)| b == n))
        .map(|(n, h)| (n, h.sum()))
        .collect();
    assert_eq!(
        took,
        [
            ("get_instance_info", Duration::from_millis(10)),
            ("query_online", Duration::from_millis(50))
        ]
    );
}
