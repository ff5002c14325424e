//! Channels: broadcast, notices, the grace period, rejoins, resumes and replays.

use crate::support::*;

#[test]
fn broadcast_is_encoded_once_and_echoed_to_the_sender() {
    let mut n = Net::demo();
    let (a, _) = n.login(1);
    let (b, _) = n.login(2);
    let (c, _) = n.login(3);
    let (outsider, _) = n.login(4);
    let mut number = 0;
    for x in [a, b, c] {
        match n.req(x, join("room")) {
            Body::JoinReply(j) => {
                assert_ne!(j.channel, 0);
                assert_eq!(j.seq, 0);
                number = j.channel;
            }
            other => panic!("{other:?}"),
        }
    }
    n.advance(Duration::from_secs(1));
    for x in [a, b, c] {
        n.frames(x);
    }
    let r = send_reply(n.req(a, to_channel_with("room", "hello", false)));
    assert_eq!((r.seq, r.delivered_online), (1, true));
    let mut ptrs = Vec::new();
    for x in [a, b, c] {
        let q = n.out.remove(&x).unwrap();
        assert_eq!(q.len(), 1);
        let (raw, f) = &q[0];
        assert!(matches!(&f.body, Body::ChannelMessage(m)
            if m.channel == number && m.from_uid == 1 && m.seq == 1 && m.message.as_ref().unwrap().content == "hello"));
        ptrs.push(raw.as_ptr());
    }
    assert!(ptrs.windows(2).all(|w| w[0] == w[1]), "one encoding shared");
    assert!(n.frames(outsider).is_empty());
    // Unreliable: seq 0, not stored (a replay from 0 has only seq 1).
    assert_eq!(
        send_reply(n.req(a, to_channel_with("room", "u", true))).seq,
        0
    );
    n.frames(a);
    n.send(
        a,
        Body::Fetch(wire::FetchRequest {
            channel: Some(key("room")),
            after_seq: 0,
        }),
    );
    let bodies = n.bodies(a);
    assert_eq!(bodies.len(), 2);
    assert!(matches!(&bodies[1], Body::FetchReply(f) if f.through_seq == 1));
}

#[test]
fn notices_are_batched_and_netted() {
    let mut n = Net::demo();
    let (a, _) = n.login(1);
    let (b, _) = n.login(2);
    n.ok_join(a, "room");
    n.advance(Duration::from_millis(10));
    n.ok_join(b, "room");
    assert!(n.frames(a).is_empty(), "nothing before the window ends");
    n.advance(Duration::from_millis(95));
    for x in [a, b] {
        let bodies = n.bodies(x);
        assert_eq!(bodies.len(), 2, "{bodies:?}");
        assert!(
            matches!(&bodies[0], Body::Membership(m) if m.joined == vec![1, 2] && m.left.is_empty())
        );
        assert!(matches!(&bodies[1], Body::UserCountChanged(u) if u.count == 2));
    }
    // A second instance of uid 2 changes nothing; a uid in and out within
    // one window is no news.
    let (b2, _) = n.login(2);
    n.ok_join(b2, "room");
    let (c, _) = n.login(3);
    n.ok_join(c, "room");
    n.ok(c, leave("room"));
    n.advance(Duration::from_millis(200));
    assert!(n.frames(a).is_empty());
    // One instance of uid 2 leaving: still present. The last: a leave.
    n.ok(b, leave("room"));
    n.advance(Duration::from_millis(200));
    assert!(n.frames(a).is_empty());
    n.ok(b2, leave("room"));
    n.advance(Duration::from_millis(200));
    let bodies = n.bodies(a);
    assert!(matches!(&bodies[0], Body::Membership(m) if m.left == vec![2] && m.joined.is_empty()));
    assert!(matches!(&bodies[1], Body::UserCountChanged(u) if u.count == 1));
}

#[test]
fn grace_period_hides_quick_reconnects_and_ends_with_a_leave() {
    let mut n = Net::demo();
    let (a, _) = n.login(1);
    let (b, r) = n.login(2);
    n.ok_join(a, "room");
    let room = n.ok_join(b, "room");
    n.advance(Duration::from_secs(1));
    n.frames(a);
    n.s.handle_disconnected(n.now, b);
    n.advance(Duration::from_secs(20));
    assert!(n.frames(a).is_empty(), "no leave within grace");
    assert_eq!(
        n.req(
            a,
            Body::QueryOnline(wire::QueryOnlineRequest { uids: vec![2, 3] })
        ),
        Body::OnlineStatus(wire::OnlineStatusReply {
            status: [(2, true), (3, false)].into_iter().collect()
        })
    );
    let b2 = n.accept();
    // The resume lists the channel it holds: it stays a member.
    let resume = |seq| {
        resume_req(
            2,
            r.instance_id,
            r.p2p_epoch,
            seq,
            vec![cursor("room", room.epoch, room.seq)],
        )
    };
    assert!(matches!(n.login_with(b2, resume(0)), Body::LoginReply(x) if x.resumed));
    n.advance(Duration::from_secs(1));
    assert!(n.frames(a).is_empty(), "no leave/join on resume");
    // Lost again, past the grace period this time.
    n.s.handle_disconnected(n.now, b2);
    n.advance(Duration::from_secs(31));
    n.advance(Duration::from_millis(100));
    let bodies = without_server_pings(n.bodies(a));
    assert!(matches!(&bodies[0], Body::Membership(m) if m.left == vec![2]));
    assert!(matches!(&bodies[1], Body::UserCountChanged(u) if u.count == 1));
    assert_eq!(n.s.instance_count(), 1);
    // Its resume now makes a new instance; the rejoin reports it was dropped.
    let b3 = n.accept();
    assert!(
        matches!(n.login_with(b3, resume(0)), Body::LoginReply(x) if !x.resumed && x.instance_id != r.instance_id)
    );
    match n.req(b3, rejoin("room", room.epoch, room.seq)) {
        Body::JoinReply(j) => assert!(j.member_offline),
        other => panic!("{other:?}"),
    }
}

#[test]
fn channel_rejoin_replays_and_reports_evicted_gap() {
    let mut n = Net::with(|cfg| {
        cfg.channel_retention_messages = 3;
    });
    let (a, _) = n.login(1);
    let (b, _) = n.login(2);
    let epoch = n.ok_join(a, "room").epoch;
    assert_ne!(epoch, 0);
    n.ok_join(b, "room");
    for i in 1..=5 {
        n.req(a, to_channel_with("room", &format!("c{i}"), false));
    }
    n.frames(b);
    // Already a member (v2): seq = head and nothing replayed, even for a
    // rejoin with an old cursor (a member has had every push).
    let rid = n.send(b, rejoin("room", epoch, 3));
    let frames = n.frames(b);
    assert_eq!(frames.len(), 1, "{frames:?}");
    assert_eq!(frames[0].request_id, rid);
    assert!(
        matches!(&frames[0].body, Body::JoinReply(j) if j.seq == 5 && j.gap.is_none() && !j.member_offline && j.epoch == epoch)
    );
    // Dropped after its link stayed down past the grace period, and back
    // with the cursor: the rest is replayed.
    let b = n.depart(b, 2);
    let rid = n.send(b, rejoin("room", epoch, 3));
    let frames = n.frames(b);
    assert_eq!(frames[0].request_id, rid);
    assert!(
        matches!(&frames[0].body, Body::JoinReply(j) if j.seq == 3 && j.gap.is_none() && j.epoch == epoch && j.member_offline),
        "{frames:?}"
    );
    let seqs: Vec<u64> = frames[1..]
        .iter()
        .filter_map(|f| match &f.body {
            Body::ChannelMessage(m) => Some(m.seq),
            _ => None,
        })
        .collect();
    assert_eq!(seqs, vec![4, 5]);
    // From 1 (its membership began at 0): 2 is evicted.
    let b = n.depart(b, 2);
    n.send(b, rejoin("room", epoch, 1));
    let frames = n.frames(b);
    assert!(matches!(&frames[0].body, Body::JoinReply(j)
        if j.seq == 2 && j.gap == Some(wire::SeqGap { from: 2, to: 2 })));
    assert_eq!(frames.len(), 4);
    // Stale (past the head): seq = head, no gap, no replay.
    let b = n.depart(b, 2);
    n.send(b, rejoin("room", epoch, 50));
    let frames = n.frames(b);
    assert!(matches!(&frames[0].body, Body::JoinReply(j) if j.seq == 5 && j.gap.is_none()));
    assert_eq!(frames.len(), 1);
    // Fresh join of a newcomer: seq = head, nothing replayed.
    let (c, _) = n.login(3);
    assert_eq!(n.ok_join(c, "room").seq, 5);
    // Fetch needs membership.
    let (d, _) = n.login(4);
    let fetch = Body::Fetch(wire::FetchRequest {
        channel: Some(key("room")),
        after_seq: 0,
    });
    assert_eq!(n.err(d, fetch), 5101);
}

#[test]
fn a_burst_of_rejoin_replays_fits_the_connection_queue() {
    let mut n = Net::with(|cfg| {
        cfg.rate_limit_sends = 100_000;
        cfg.max_queued_bytes = 1024 * 1024;
    });
    let (a, ra) = n.login(1);
    let (b, _) = n.login(2);
    let mut epochs = Vec::new();
    for ch in ["c1", "c2", "c3"] {
        epochs.push(n.ok_join(a, ch).epoch);
        n.req(b, join(ch));
    }
    n.advance(Duration::from_secs(1));
    // a's link drops; b sends 400 KiB into each channel while a is away.
    n.s.handle_disconnected(n.now, a);
    let text = "x".repeat(20_000);
    for ch in ["c1", "c2", "c3"] {
        for _ in 0..20 {
            n.req(b, to_channel_with(ch, &text, false));
        }
    }
    n.frames(b);
    // a's Session resumes with its three channels from seq 0, in one burst
    // (one TCP read: the server handles it all before the writer runs).
    // v2 replays them in the resume itself. (A burst of rejoins after the
    // grace period: a_burst_of_rejoins_after_a_fresh_login_... in
    // server_v2.rs.)
    for attempt in 0..4 {
        let c = n.accept();
        n.held.insert(c);
        let held = ["c1", "c2", "c3"]
            .iter()
            .zip(&epochs)
            .map(|(ch, e)| cursor(ch, *e, 0))
            .collect();
        n.rid += 1;
        n.s.handle_frame(
            n.now,
            c,
            encode_frame(&Frame {
                request_id: n.rid,
                body: Some(Body::Login(resume_req(
                    1,
                    ra.instance_id,
                    ra.p2p_epoch,
                    0,
                    held,
                ))),
            }),
        );
        n.pump();
        let closed = n
            .closed
            .iter()
            .any(|(x, r)| *x == c && *r == CloseReason::SlowConsumer);
        assert!(!closed, "attempt {attempt}: the resume's own replays overflow the queue; the client is closed as a slow consumer and loses everything queued");
        n.drain(c);
        let bodies = n.bodies(c);
        let replayed = bodies
            .iter()
            .filter(|b| matches!(b, Body::ChannelMessage(_)))
            .count();
        let states: Vec<&wire::JoinReply> = bodies
            .iter()
            .flat_map(|b| match b {
                Body::LoginReply(r) => r.channels.iter().filter_map(|k| k.state.as_ref()).collect(),
                Body::JoinReply(j) => vec![j],
                _ => vec![],
            })
            .collect();
        assert_eq!(states.len(), 3, "attempt {attempt}: {states:?}");
        assert!(replayed > 0, "attempt {attempt}: nothing replayed");
        assert!(
            replayed < 60 && states.iter().any(|j| j.replay_truncated_at != 0),
            "attempt {attempt}: 1.2 MB cannot be replayed into a 1 MB queue without a cut"
        );
    }
}

#[test]
fn a_rejoin_with_the_channel_epoch_replays_what_follows_resume_seq() {
    for how in ["after a leave", "after the grace period"] {
        let departed = how == "after the grace period";
        let mut n = Net::demo();
        let (a, _) = n.login(1);
        let (mut b, _) = n.login(2);
        let room = n.ok_join(a, "room");
        n.ok_join(b, "room");
        for t in ["c1", "c2"] {
            n.sent(a, to_channel("room", t));
        }
        assert_eq!(channel_msgs(&n.bodies(b)).len(), 2);
        if how == "after a leave" {
            n.ok(b, leave("room"));
        } else {
            n.lose(b);
            n.advance(secs(31));
            b = n.login(2).0;
        }
        for t in ["c3", "c4", "c5"] {
            n.sent(a, to_channel("room", t));
        }
        n.send(b, rejoin("room", room.epoch, 2));
        let bodies = n.bodies(b);
        let j = join_reply(bodies[0].clone());
        assert!(j.member_offline, "{how}");
        if !departed {
            // Only a membership lost with the link replays: a uid that
            // left is a newcomer, told what it will not get.
            let gap = Some(wire::SeqGap { from: 3, to: 5 });
            assert_eq!((j.epoch, j.seq, j.gap), (room.epoch, 5, gap), "{how}");
            assert_eq!(channel_msgs(&bodies[1..]), vec![], "{how}");
            continue;
        }
        assert_eq!((j.epoch, j.seq, j.gap), (room.epoch, 2, None), "{how}");
        assert_eq!(
            channel_msgs(&bodies[1..]),
            vec![
                (j.channel, 3, "c3".into()),
                (j.channel, 4, "c4".into()),
                (j.channel, 5, "c5".into())
            ],
            "{how}"
        );
    }
}

#[test]
fn a_rejoin_after_a_restart_gets_an_open_gap_and_no_replay() {
    for seen in [0, 2] {
        let mut old = Net::demo();
        let (a, _) = old.login(1);
        let (b, _) = old.login(2);
        let before = old.ok_join(a, "room");
        old.ok_join(b, "room");
        for t in ["c1", "c2"] {
            old.sent(a, to_channel("room", t));
        }
        // The server restarts; the channel is made again and has 3 messages.
        let mut n = Net::restarted(ServerConfig::demo());
        let (a, _) = n.login(1);
        n.ok_join(a, "room");
        for t in ["n1", "n2", "n3"] {
            n.sent(a, to_channel("room", t));
        }
        let (b, _) = n.login(2);
        n.send(b, rejoin("room", before.epoch, seen));
        let bodies = n.bodies(b);
        let j = join_reply(bodies[0].clone());
        assert_eq!(
            j.gap,
            Some(wire::SeqGap {
                from: seen + 1,
                to: 0
            }),
            "cursor {seen}"
        );
        assert_eq!(j.seq, 3, "the new epoch's head");
        assert_ne!(j.epoch, before.epoch);
        assert_ne!(j.epoch, 0);
        assert!(channel_msgs(&bodies).is_empty(), "no replay: {bodies:?}");
        // Live pushes follow the head.
        n.sent(a, to_channel("room", "n4"));
        assert_eq!(
            channel_msgs(&n.bodies(b)),
            vec![(j.channel, 4, "n4".into())]
        );
    }
}

#[test]
fn a_channel_forgotten_and_made_again_gets_a_new_epoch_and_numbers_from_1() {
    let mut n = Net::with(|cfg| {
        cfg.channel_retention_age = secs(10);
        cfg.sweep_interval = secs(1);
    });
    let (a, _) = n.login(1);
    let first = n.ok_join(a, "room");
    for t in ["c1", "c2"] {
        n.sent(a, to_channel("room", t));
    }
    n.ok(a, leave("room"));
    // Empty, but its messages are retained for a while.
    n.advance(secs(5));
    assert_eq!(n.s.channel_count(), 1);
    for _ in 0..6 {
        n.advance(secs(1));
    }
    assert_eq!(n.s.channel_count(), 0, "aged out and swept");
    let again = n.ok_join(a, "room");
    assert_ne!(again.epoch, 0);
    assert_ne!(again.epoch, first.epoch);
    assert_eq!((again.seq, again.gap), (0, None));
    assert_eq!(n.sent(a, to_channel("room", "new")).seq, 1);
    // A cursor in the old epoch: an open gap, no replay.
    let (b, _) = n.login(2);
    n.send(b, rejoin("room", first.epoch, 2));
    let bodies = n.bodies(b);
    let j = join_reply(bodies[0].clone());
    assert_eq!(j.gap, Some(wire::SeqGap { from: 3, to: 0 }));
    assert_eq!((j.seq, j.epoch), (1, again.epoch));
    assert!(channel_msgs(&bodies).is_empty());
}

#[test]
fn a_resume_keeps_the_listed_channel_and_replays_it_after_the_p2p_replay() {
    let ResumeScene {
        mut n,
        b2,
        instance_id,
        x,
        ..
    } = resume_scene();
    let bodies = n.bodies(b2);
    let r = login_reply(bodies[0].clone());
    assert!(r.resumed);
    assert_eq!(r.instance_id, instance_id);
    let kept = wire::ResumedChannel {
        channel: Some(key("X")),
        state: Some(wire::JoinReply {
            channel: x.channel,
            seq: 1,
            gap: None,
            member_offline: false,
            replay_truncated_at: 0,
            epoch: x.epoch,
        }),
    };
    assert_eq!(r.channels, vec![kept]);
    assert_eq!(r.p2p_seq, 0);
    // P2P replay first, then X's: nothing else.
    let order: Vec<(Option<u32>, u64, String)> = bodies[1..]
        .iter()
        .map(|b| match b {
            Body::UserMessage(m) => (None, m.seq, text(&m.message)),
            Body::ChannelMessage(m) => (Some(m.channel), m.seq, text(&m.message)),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(
        order,
        vec![
            (None, 1, "p1".into()),
            (None, 2, "p2".into()),
            (Some(x.channel), 2, "x2".into()),
            (Some(x.channel), 3, "x3".into()),
        ]
    );
}

#[test]
fn a_channel_left_out_of_the_resume_is_left_and_pushes_nothing() {
    let ResumeScene {
        mut n,
        a,
        c,
        d,
        b2,
        x,
        y,
        ..
    } = resume_scene();
    let mut on_b2 = n.bodies(b2);
    // Live traffic right after the resume, and the notice window passes.
    n.sent(a, to_channel("Y", "y3"));
    n.sent(a, to_channel("X", "x4"));
    n.advance(secs(1));
    on_b2.extend(n.bodies(b2));
    assert!(
        !on_b2.iter().any(|b| push_channel(b) == Some(y.channel)),
        "a push for Y reached the resumed link: {on_b2:?}"
    );
    assert!(channel_msgs(&on_b2).contains(&(x.channel, 4, "x4".into())));
    // Y's members saw uid 2 leave; X's saw nothing of it.
    let on_c = n.bodies(c);
    assert!(
        on_c.iter()
            .any(|b| matches!(b, Body::Membership(m) if m.channel == y.channel && m.left == vec![2] && m.joined.is_empty())),
        "{on_c:?}"
    );
    assert!(on_c
        .iter()
        .any(|b| matches!(b, Body::UserCountChanged(u) if u.channel == y.channel && u.count == 2)));
    assert!(
        !n.bodies(d).iter().any(|b| matches!(b, Body::Membership(_))),
        "no notice in X"
    );
    match n.req(b2, Body::GetInstanceInfo(wire::Empty {})) {
        Body::InstanceInfo(i) => assert_eq!(i.channels, vec![key("X")]),
        other => panic!("{other:?}"),
    }
    assert_eq!(n.err(b2, to_channel("Y", "not a member")), 5101);
}

#[test]
fn no_sequenced_message_reaches_the_resumed_link_twice() {
    let ResumeScene {
        mut n, a, b2, x, ..
    } = resume_scene();
    // Live messages right after the resume, before the client drained
    // anything, and the client's own join of a channel it holds.
    n.sent(a, to_channel("X", "x4"));
    n.sent(a, to_user(2, "p3"));
    let member_join = join_reply(n.req(b2, join("X")));
    let member_rejoin = join_reply(n.req(b2, rejoin("X", x.epoch, 1)));
    n.sent(a, to_channel("X", "x5"));
    n.sent(a, to_user(2, "p4"));
    for j in [&member_join, &member_rejoin] {
        assert_eq!(
            (j.channel, j.epoch, j.seq, j.gap),
            (x.channel, x.epoch, 4, None)
        );
        assert!(!j.member_offline);
    }
    let bodies = n.bodies(b2);
    let p2p: Vec<u64> = user_msgs(&bodies).into_iter().map(|(s, _)| s).collect();
    let channel: Vec<(u32, u64)> = channel_msgs(&bodies)
        .into_iter()
        .map(|(c, s, _)| (c, s))
        .collect();
    assert_eq!(p2p, vec![1, 2, 3, 4], "{bodies:?}");
    assert_eq!(
        channel,
        vec![
            (x.channel, 2),
            (x.channel, 3),
            (x.channel, 4),
            (x.channel, 5)
        ],
        "{bodies:?}"
    );
}

#[test]
fn a_join_by_a_member_replies_the_head_and_replays_nothing() {
    let mut n = Net::demo();
    let (a, _) = n.login(1);
    let (b, _) = n.login(2);
    let room = n.ok_join(a, "room");
    n.ok_join(b, "room");
    for t in ["c1", "c2", "c3"] {
        n.sent(a, to_channel("room", t));
    }
    n.advance(secs(1));
    n.clear(&[b]);
    for again in [join("room"), rejoin("room", room.epoch, 0)] {
        let what = format!("{again:?}");
        n.send(b, again);
        let bodies = n.bodies(b);
        assert_eq!(bodies.len(), 1, "{what}: {bodies:?}");
        let j = join_reply(bodies[0].clone());
        assert_eq!(
            (j.channel, j.epoch, j.seq, j.gap),
            (room.channel, room.epoch, 3, None)
        );
        assert!(!j.member_offline, "{what}");
    }
}

#[test]
fn a_plain_join_replays_nothing_whatever_its_cursor() {
    let mut n = Net::demo();
    let (a, _) = n.login(1);
    let (b, _) = n.login(2);
    let room = n.ok_join(a, "room");
    for t in ["c1", "c2", "c3"] {
        n.sent(a, to_channel("room", t));
    }
    n.send(
        b,
        Body::Join(wire::JoinRequest {
            channel: Some(key("room")),
            resume_seq: 1,
            epoch: room.epoch,
            rejoin: false,
            ..Default::default()
        }),
    );
    let bodies = n.bodies(b);
    assert_eq!(bodies.len(), 1, "{bodies:?}");
    let j = join_reply(bodies[0].clone());
    assert_eq!((j.seq, j.gap, j.epoch), (3, None, room.epoch));
}

#[test]
fn a_repeated_channel_send_is_answered_after_the_sender_left_the_channel() {
    let (mut n, a, b, _, _) = two_in_a_room(ServerConfig::demo());
    let id = message_id();
    let first = n.sent(a, send_of(Kind::Channel, "once", id));
    n.ok(a, leave("room"));
    n.advance(secs(1));
    n.clear(&[b]);
    assert_eq!(n.sent(a, send_of(Kind::Channel, "once", id)), first);
    assert_eq!(delivered(&mut n, b, "once"), 0);
    // A new send is refused: a is not a member any more.
    assert_eq!(n.err(a, send_of(Kind::Channel, "new", message_id())), 5101);
}

/// After a login that resumed nothing (the instance outlived its grace), the
/// Session rejoins every channel it held in one burst. Each rejoin replay is
/// cut to what is left of the queue, but "at least one message" even when
/// nothing is left: past a few busy channels the burst overflows the queue
/// and the server closes the link as a slow consumer for its own replays
/// (what `a_burst_of_rejoin_replays_fits_the_connection_queue` in
/// server_frames.rs guards against, there with three channels).
#[test]
fn a_burst_of_rejoins_after_a_fresh_login_never_closes_the_link_as_a_slow_consumer() {
    burst_of_rejoins(Net::new);
}

/// The configuration of `burst_of_rejoins`: sends and memberships
/// unlimited, a 1 MiB queue per link.
pub fn burst_config() -> ServerConfig {
    let mut cfg = ServerConfig::demo();
    cfg.rate_limit_sends = 1_000_000;
    cfg.max_queued_bytes = 1024 * 1024;
    cfg.rate_limits.sends = RateLimit::new(1_000_000, secs(3));
    cfg.rate_limits.memberships = RateLimit::new(1_000, secs(3));
    cfg
}

/// uid 2, dropped past the grace period from ten channels holding 1.2 MB
/// each, logs in afresh and rejoins all ten in one read: each replay is
/// budgeted against what is queued (or held) for the link, so it is never
/// closed as a slow consumer. `net` makes the server from
/// [`burst_config`].
pub fn burst_of_rejoins(net: impl FnOnce(ServerConfig) -> Net) {
    burst_of_rejoins_to(net, (0..10).map(|i| format!("c{i}")).collect());
}

/// The same with `channels`: the net and the rejoined link, drained.
pub fn burst_of_rejoins_to(
    net: impl FnOnce(ServerConfig) -> Net,
    channels: Vec<String>,
) -> (Net, ConnId) {
    let mut n = net(burst_config());
    let (a, _) = n.login(1);
    let (b, _) = n.login(2);
    let mut epochs = Vec::new();
    for ch in &channels {
        n.ok_join(a, ch);
        epochs.push(n.ok_join(b, ch).epoch);
    }
    // b's link is lost past the grace period; 1.2 MB goes to each channel.
    n.lose(b);
    n.advance(secs(31));
    let text = "x".repeat(30_000);
    for ch in &channels {
        for _ in 0..40 {
            n.sent(a, to_channel(ch, &text));
        }
    }
    n.clear(&[a]);
    // A fresh login and ten rejoins in one read, before the writer runs.
    let c = n.accept();
    n.held.insert(c);
    let mut frames = vec![Body::Login(login_req(2))];
    frames.extend(
        channels
            .iter()
            .zip(&epochs)
            .map(|(ch, e)| rejoin(ch, *e, 0)),
    );
    for body in frames {
        n.rid += 1;
        let f = encode_frame(&Frame {
            request_id: n.rid,
            body: Some(body),
        });
        n.s.handle_frame(n.now, c, f);
    }
    n.pump();
    assert_eq!(n.closes_of(c), vec![], "closed by its own replays");
    n.held.remove(&c);
    n.drain(c);
    let joins = n
        .bodies(c)
        .iter()
        .filter(|b| matches!(b, Body::JoinReply(_)))
        .count();
    assert_eq!(joins, channels.len());
    // What the link took in all stayed within its bound.
    let took: usize = n
        .out
        .get(&c)
        .map_or(0, |q| q.iter().map(|(b, _)| b.len()).sum());
    assert!(took <= burst_config().max_queued_bytes, "{took} bytes");
    n.clear(&[c]);
    (n, c)
}

/// Before 39a6dd7 the fetch replayed c1..c3, sent before b joined.
#[test]
fn a_fresh_member_fetches_nothing_from_before_its_join() {
    let mut n = Net::demo();
    let (a, _) = n.login(1);
    let (b, _) = n.login(2);
    n.ok_join(a, "room");
    for t in ["c1", "c2", "c3"] {
        n.sent(a, to_channel("room", t));
    }
    let j = n.ok_join(b, "room");
    assert_eq!(j.seq, 3);
    n.clear(&[b]);
    let f = n.fetched(b, fetch(Some("room"), 0));
    assert_eq!((f.through_seq, f.gap, f.more), (3, None, false), "{f:?}");
    assert_eq!(channel_texts(&n.bodies(b)), vec![], "nothing from before");
    n.sent(a, to_channel("room", "c4"));
    n.clear(&[b]);
    let f = n.fetched(b, fetch(Some("room"), 0));
    assert_eq!(f.through_seq, 4);
    assert_eq!(channel_texts(&n.bodies(b)), vec![(4, "c4".into())]);
}

/// Before 39a6dd7 a rejoin replayed from resume_seq to anyone: c1..c3.
#[test]
fn a_rejoin_from_a_uid_that_was_never_a_member_replays_nothing() {
    let mut n = Net::demo();
    let (a, _) = n.login(1);
    let room = n.ok_join(a, "room");
    for t in ["c1", "c2", "c3"] {
        n.sent(a, to_channel("room", t));
    }
    let (b, _) = n.login(2);
    n.send(b, rejoin("room", room.epoch, 0));
    let bodies = n.bodies(b);
    let j = join_reply(bodies[0].clone());
    let gap = Some(SeqGap { from: 1, to: 3 });
    assert_eq!((j.epoch, j.seq, j.gap), (room.epoch, 3, gap), "{j:?}");
    assert_eq!(channel_texts(&bodies), vec![], "no replay: {bodies:?}");
    let f = n.fetched(b, fetch(Some("room"), 0));
    assert_eq!(f.through_seq, 3);
    assert_eq!(channel_texts(&n.bodies(b)), vec![]);
}

/// Before 39a6dd7 the rejoin replayed from its cursor whatever it was: with
/// cursor 0 it got c1 and c2, sent before the uid first joined.
#[test]
fn a_uid_dropped_after_the_grace_gets_its_replay_from_its_cursor_and_its_join() {
    for cursor in [3, 0] {
        let mut n = Net::demo();
        let (a, _) = n.login(1);
        let room = n.ok_join(a, "room");
        n.sent(a, to_channel("room", "c1"));
        n.sent(a, to_channel("room", "c2"));
        let (b, _) = n.login(2);
        assert_eq!(n.ok_join(b, "room").seq, 2);
        for t in ["c3", "c4"] {
            n.sent(a, to_channel("room", t));
        }
        n.lose(b);
        for t in ["c5", "c6"] {
            n.sent(a, to_channel("room", t));
        }
        n.advance(secs(31)); // past the grace: the instance is dropped
        assert_eq!(n.s.instance_count(), 1);
        let (b, _) = n.login(2);
        n.send(b, rejoin("room", room.epoch, cursor));
        let bodies = n.bodies(b);
        let j = join_reply(bodies[0].clone());
        let from = cursor.max(2);
        assert_eq!((j.seq, j.gap), (from, None), "cursor {cursor}: {j:?}");
        let expected: Vec<(u64, String)> = (from + 1..=6).map(|s| (s, format!("c{s}"))).collect();
        assert_eq!(channel_texts(&bodies), expected, "cursor {cursor}");
    }
}

/// Two instances of uid 2 are dropped after the grace period, one at cursor
/// 0 and one at cursor 1. Before the fix the first one back (rejoin, or a
/// plain join of a new instance) consumed the uid's departure record, so the
/// other one's rejoin was treated as a uid that never was a member: a gap
/// `{1, 2}` and no replay, though the channel still kept c1 and c2
/// (conformance regression bc11ae6a).
#[test]
fn a_second_instance_of_a_departed_uid_rejoins_with_its_replay_too() {
    for first in ["rejoin", "plain join"] {
        let mut n = Net::demo();
        let (a, _) = n.login(1);
        let room = n.ok_join(a, "room");
        let (b1, _) = n.login(2);
        let (b2, _) = n.login(2);
        n.ok_join(b1, "room");
        n.ok_join(b2, "room");
        n.lose(b1); // its cursor stays 0
        n.sent(a, to_channel("room", "c1")); // b2's cursor: 1
        n.lose(b2);
        n.sent(a, to_channel("room", "c2"));
        n.advance(secs(31)); // both dropped: the uid departed
        assert_eq!(n.s.instance_count(), 1);
        let (b2, _) = n.login(2);
        match first {
            "rejoin" => {
                n.send(b2, rejoin("room", room.epoch, 1));
                let bodies = n.bodies(b2);
                let j = join_reply(bodies[0].clone());
                assert_eq!((j.seq, j.gap), (1, None), "{first}: {j:?}");
                assert_eq!(channel_texts(&bodies), vec![(2, "c2".into())], "{first}");
            }
            _ => assert_eq!(n.ok_join(b2, "room").seq, 2, "{first}"),
        }
        let (b1, _) = n.login(2);
        n.send(b1, rejoin("room", room.epoch, 0));
        let bodies = n.bodies(b1);
        let j = join_reply(bodies[0].clone());
        assert_eq!(
            (j.epoch, j.seq, j.gap),
            (room.epoch, 0, None),
            "after a {first}: nothing was lost: {j:?}"
        );
        assert_eq!(
            channel_texts(&bodies),
            vec![(1, "c1".into()), (2, "c2".into())],
            "after a {first}"
        );
    }
}

/// A uid's departure record (`Channel::departed`) outlives its joins, and
/// once was consumed only by a rejoin: after a plain join and a Leave it
/// was still there, so a later `rejoin: true` replayed what was sent while
/// the uid had left the channel, which a uid that left must not get (it is
/// a newcomer: a gap, no replay). The Leave ends it.
#[test]
fn a_uid_that_came_back_and_left_gets_no_replay_on_rejoin() {
    let mut n = Net::demo();
    let (a, _) = n.login(1);
    let room = n.ok_join(a, "room");
    n.sent(a, to_channel("room", "c1"));
    let (b, _) = n.login(2);
    n.ok_join(b, "room");
    n.lose(b);
    n.advance(secs(31)); // dropped after the grace: a departure is noted
    let (b, _) = n.login(2);
    assert_eq!(n.ok_join(b, "room").seq, 1, "a plain join");
    n.ok(b, leave("room"));
    for t in ["c2", "c3"] {
        n.sent(a, to_channel("room", t));
    }
    n.send(b, rejoin("room", room.epoch, 1));
    let bodies = n.bodies(b);
    let j = join_reply(bodies[0].clone());
    assert_eq!(
        channel_texts(&bodies),
        vec![],
        "sent after it left: {bodies:?}"
    );
    assert_eq!((j.seq, j.gap), (3, Some(SeqGap { from: 2, to: 3 })));
}

/// `replay_budget` (src/server/mod.rs:712-725) is compared with the
/// replayed frames' bytes (`SeqLog::replay`, src/server/retention.rs:180),
/// but the queue counts each frame with 64 bytes more: a replay of tiny
/// messages passes the queue's bound and closes its own link as a slow
/// consumer, which the budget exists to prevent. With a small
/// `max_queued_bytes` one fetch does it; with the defaults it takes
/// thousands of tiny messages replayed at once onto a half-full queue.
#[test]
fn a_replay_of_tiny_messages_never_closes_its_own_link() {
    let mut n = Net::new({
        let mut cfg = flood_config();
        cfg.max_queued_bytes = 10_000;
        cfg
    });
    let (a, _) = n.login(1);
    let (m, _) = n.login(2);
    n.ok_join(a, "room");
    n.ok_join(m, "room");
    for _ in 0..300 {
        n.sent(a, to_channel("room", "x"));
    }
    n.clear(&[a, m]);
    n.send(m, fetch(Some("room"), 0));
    assert!(
        n.closes_of(m).is_empty(),
        "the fetch closed its own link: {:?}",
        n.closes_of(m)
    );
    let bodies = n.bodies(m);
    assert!(
        matches!(bodies.last(), Some(Body::FetchReply(f)) if f.more),
        "a cut-short replay: {:?}",
        bodies.last()
    );
}
