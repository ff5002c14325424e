//! P2P messages: delivery, offline inboxes, acks, resumes, epochs, exactly-once sends.

use crate::support::*;

#[test]
fn p2p_online_delivery_and_unreliable() {
    let mut n = Net::demo();
    let (a, _) = n.login(1);
    let (b1, _) = n.login(2);
    let (b2, _) = n.login(2);
    let r = send_reply(n.req(a, to_user_with(2, "hi", false)));
    assert!(r.delivered_online);
    assert_eq!(r.seq, 1);
    assert_eq!(r.timestamp_ms, T0_UNIX_MS);
    for b in [b1, b2] {
        let bodies = n.bodies(b);
        assert_eq!(user_msgs(&bodies), vec![(1, "hi".to_string())]);
        assert!(
            matches!(&bodies[0], Body::UserMessage(m) if m.from_uid == 1 && m.timestamp_ms == T0_UNIX_MS)
        );
    }
    let r = send_reply(n.req(a, to_user_with(2, "fast", true)));
    assert_eq!((r.seq, r.delivered_online), (0, true));
    assert_eq!(user_msgs(&n.bodies(b1)), vec![(0, "fast".to_string())]);
    // To yourself is allowed; uid 0 and oversize messages are refused.
    assert_eq!(send_reply(n.req(a, to_user_with(1, "me", false))).seq, 1);
    assert_eq!(user_msgs(&n.bodies(a)), vec![(1, "me".to_string())]);
    assert_eq!(n.err(a, to_user_with(0, "x", false)), 2001);
    let big = Body::SendToUser(wire::SendToUserRequest {
        receiver: 2,
        message: Some(wire::ChatMessage {
            content: Bytes::from(vec![0u8; 32 * 1024 + 1]),
            ..chat("")
        }),
        unreliable: false,
        message_id: message_id(),
    });
    assert_eq!(n.err(a, big), 2007);
}

#[test]
fn offline_messages_arrive_at_next_login_and_acks_count() {
    let mut n = Net::demo();
    let (a, _) = n.login(1);
    for t in ["m1", "m2", "m3"] {
        assert!(!send_reply(n.req(a, to_user_with(2, t, false))).delivered_online);
    }
    let r = send_reply(n.req(a, to_user_with(2, "lost", true)));
    assert!(!r.delivered_online);
    // Fresh login: reply first, then the offline messages in order.
    let b = n.accept();
    n.send(b, Body::Login(login_req(2)));
    let bodies = n.bodies(b);
    assert!(matches!(&bodies[0], Body::LoginReply(r) if r.p2p_seq == 0 && r.p2p_gap.is_none()));
    assert_eq!(
        user_msgs(&bodies[1..]),
        vec![(1, "m1".into()), (2, "m2".into()), (3, "m3".into())]
    );
    // Acked through 2 (by any instance): the next fresh login gets only 3.
    n.raw(
        b,
        encode_frame(&Frame {
            request_id: 0,
            body: Some(Body::Ack(wire::Ack { p2p_seq: 2 })),
        }),
    );
    let b2 = n.accept();
    n.send(b2, Body::Login(login_req(2)));
    let bodies = n.bodies(b2);
    assert!(matches!(&bodies[0], Body::LoginReply(r) if r.p2p_seq == 2));
    assert_eq!(user_msgs(&bodies[1..]), vec![(3, "m3".into())]);
    // An ack past the head is clamped.
    n.raw(
        b,
        encode_frame(&Frame {
            request_id: 0,
            body: Some(Body::Ack(wire::Ack { p2p_seq: 1000 })),
        }),
    );
    let (_, r) = n.login(2);
    assert_eq!(r.p2p_seq, 3);
}

#[test]
fn resume_takes_the_instance_over_and_replays() {
    let mut n = Net::demo();
    let (a, _) = n.login(1);
    let (b, r) = n.login(2);
    let room = n.ok_join(b, "room");
    n.req(a, to_user_with(2, "m1", false));
    n.s.handle_disconnected(n.now, b);
    n.advance(Duration::from_secs(5));
    for t in ["m2", "m3"] {
        assert!(!send_reply(n.req(a, to_user_with(2, t, false))).delivered_online);
    }
    let b2 = n.accept();
    let req = resume_req(
        2,
        r.instance_id,
        r.p2p_epoch,
        1,
        vec![cursor("room", room.epoch, room.seq)],
    );
    n.send(b2, Body::Login(req));
    let bodies = n.bodies(b2);
    match &bodies[0] {
        Body::LoginReply(x) => {
            assert!(x.resumed);
            assert_eq!(x.instance_id, r.instance_id);
            assert_eq!(x.p2p_seq, 1);
            assert_eq!(x.p2p_epoch, r.p2p_epoch);
            assert_eq!(x.channels.len(), 1, "the listed channel is kept");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        user_msgs(&bodies[1..]),
        vec![(2, "m2".into()), (3, "m3".into())]
    );
    // Still a member of its channel: a join is a plain success, not offline.
    match n.req(b2, rejoin("room", room.epoch, 0)) {
        Body::JoinReply(j) => assert!(!j.member_offline),
        other => panic!("{other:?}"),
    }
    // Another epoch: history unknown, start from the acked point.
    let c = n.accept();
    let req = resume_req(2, r.instance_id, r.p2p_epoch.wrapping_add(1), 7, vec![]);
    match n.login_with(c, req) {
        Body::LoginReply(x) => {
            assert_eq!(x.p2p_gap, Some(wire::SeqGap { from: 8, to: 0 }));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn resume_detaches_an_older_live_connection() {
    let mut n = Net::demo();
    let (b, r) = n.login(2);
    let b2 = n.accept();
    let req = resume_req(2, r.instance_id, r.p2p_epoch, 0, vec![]);
    assert!(
        matches!(n.login_with(b2, req), Body::LoginReply(x) if x.resumed && x.instance_id == r.instance_id)
    );
    assert!(n.closed.contains(&(b, CloseReason::Replaced)));
    // v2: the replaced link is told why before it is closed.
    assert_eq!(close_code(&n.bodies(b)), Some(4007));
    assert_eq!(n.s.instance_count(), 1);
}

#[test]
fn evicted_p2p_messages_show_as_a_gap() {
    let mut n = Net::with(|cfg| {
        cfg.inbox_max_messages = 3;
    });
    let (a, _) = n.login(1);
    for i in 1..=5 {
        n.req(a, to_user_with(2, &format!("m{i}"), false));
    }
    let b = n.accept();
    n.send(b, Body::Login(login_req(2)));
    let bodies = n.bodies(b);
    assert!(matches!(&bodies[0], Body::LoginReply(r)
        if r.p2p_seq == 2 && r.p2p_gap == Some(wire::SeqGap { from: 1, to: 2 })));
    assert_eq!(user_msgs(&bodies[1..]).len(), 3);
    // Fetch after 3: pushes 4 and 5, then the reply.
    n.send(
        b,
        Body::Fetch(wire::FetchRequest {
            channel: None,
            after_seq: 3,
        }),
    );
    let bodies = n.bodies(b);
    assert_eq!(user_msgs(&bodies), vec![(4, "m4".into()), (5, "m5".into())]);
    assert!(
        matches!(bodies.last(), Some(Body::FetchReply(f)) if f.through_seq == 5 && f.gap.is_none())
    );
    // Fetch from 0: the evicted part is the gap.
    n.send(
        b,
        Body::Fetch(wire::FetchRequest {
            channel: None,
            after_seq: 0,
        }),
    );
    let bodies = n.bodies(b);
    assert_eq!(user_msgs(&bodies).len(), 3);
    assert!(matches!(bodies.last(), Some(Body::FetchReply(f))
        if f.through_seq == 5 && f.gap == Some(wire::SeqGap { from: 1, to: 2 })));
    // Aged out: everything is a gap.
    n.advance(Duration::from_secs(8 * 24 * 3600));
    let (_, r) = n.login(2);
    assert_eq!(r.p2p_gap, Some(wire::SeqGap { from: 1, to: 5 }));
    assert_eq!(r.p2p_seq, 5);
}

#[test]
fn a_forgotten_inbox_never_reuses_sequence_numbers() {
    let mut n = Net::with(|cfg| {
        cfg.presence_grace = Duration::from_secs(1);
        cfg.inbox_max_age = Duration::from_secs(5);
        cfg.sweep_interval = Duration::from_secs(1);
    });
    let (a, _) = n.login(1);
    let (b, rb) = n.login(2);
    for t in ["m1", "m2", "m3"] {
        n.req(a, to_user_with(2, t, false));
    }
    assert_eq!(user_msgs(&n.bodies(b)).len(), 3);
    let inboxes = n.s.inbox_count();
    // b's link is lost past the grace period, its inbox ages out and is
    // swept ten times: v2 keeps the empty inbox (and its epoch).
    n.s.handle_disconnected(n.now, b);
    for _ in 0..10 {
        n.advance(Duration::from_secs(1));
        n.ping_keepalive(a);
    }
    assert_eq!(n.s.inbox_count(), inboxes);
    // Two new offline messages: the numbering goes on.
    let s1 = send_reply(n.req(a, to_user_with(2, "new1", false)));
    let s2 = send_reply(n.req(a, to_user_with(2, "new2", false)));
    assert_eq!((s1.seq, s2.seq), (4, 5));
    // b's Session reconnects with what it had seen (seq 3): exactly the
    // two new ones, no gap.
    let c = n.accept();
    let reply = n.login_with(c, resume_req(2, rb.instance_id, rb.p2p_epoch, 3, vec![]));
    let Body::LoginReply(r) = reply else {
        panic!("{reply:?}")
    };
    assert!(!r.resumed, "the instance is gone past its grace");
    assert_eq!(r.p2p_epoch, rb.p2p_epoch);
    assert_eq!((r.p2p_seq, r.p2p_gap), (3, None));
    assert_eq!(
        user_msgs(&n.bodies(c)),
        vec![(4, "new1".into()), (5, "new2".into())]
    );
}

#[test]
fn a_message_id_reused_for_another_destination_gets_2013() {
    let id = 77;
    let cases = [
        (
            "another receiver",
            to_user_id(2, "a", false, id),
            to_user_id(3, "b", false, id),
        ),
        (
            "another channel",
            to_channel_id("x", "a", false, id),
            to_channel_id("y", "b", false, id),
        ),
        (
            "P2P, then a channel",
            to_user_id(2, "a", false, id),
            to_channel_id("x", "b", false, id),
        ),
        (
            "a channel, then P2P",
            to_channel_id("x", "a", false, id),
            to_user_id(2, "b", false, id),
        ),
    ];
    for (case, first, second) in cases {
        let mut n = Net::demo();
        let (a, _) = n.login(1);
        let (b, _) = n.login(2);
        let (c, _) = n.login(3);
        for (conn, ch) in [(a, "x"), (a, "y"), (b, "x"), (c, "y")] {
            n.ok_join(conn, ch);
        }
        n.advance(secs(1));
        n.sent(a, first);
        n.clear(&[a, b, c]);
        assert_eq!(n.err(a, second), 2013, "{case}");
        for conn in [a, b, c] {
            assert!(n.frames(conn).is_empty(), "{case}: nothing delivered");
        }
    }
}

#[test]
fn message_ids_are_per_sender_uid() {
    let mut n = Net::demo();
    let (a, _) = n.login(1);
    let (b, _) = n.login(2);
    let (c, _) = n.login(3);
    let first = n.sent(a, to_user_id(3, "from 1", false, 500));
    let second = n.sent(b, to_user_id(3, "from 2", false, 500));
    assert_eq!((first.seq, second.seq), (1, 2));
    assert_eq!(
        user_msgs(&n.bodies(c)),
        vec![(1, "from 1".into()), (2, "from 2".into())]
    );
}

#[test]
fn a_send_with_message_id_0_gets_2001() {
    let cases = [
        ("reliable P2P", to_user_id(2, "m", false, 0)),
        ("unreliable P2P", to_user_id(2, "m", true, 0)),
        ("reliable channel", to_channel_id("x", "m", false, 0)),
        ("unreliable channel", to_channel_id("x", "m", true, 0)),
    ];
    for (case, send) in cases {
        let mut n = Net::demo();
        let (a, _) = n.login(1);
        let (b, _) = n.login(2);
        n.ok_join(a, "x");
        n.ok_join(b, "x");
        n.advance(secs(1));
        n.clear(&[a, b]);
        assert_eq!(n.err(a, send), 2001, "{case}");
        assert!(n.frames(a).is_empty() && n.frames(b).is_empty(), "{case}");
        // Nothing was numbered: the next reliable send is the first.
        assert_eq!(n.sent(a, to_user(2, "next")).seq, 1, "{case}");
    }
}

#[test]
fn the_p2p_epoch_is_non_zero_and_the_same_for_every_login_of_the_uid() {
    let mut n = Net::demo();
    let (a, first) = n.login(2);
    assert_ne!(first.p2p_epoch, 0);
    let (b, second) = n.login(2);
    n.lose(b);
    n.advance(secs(5));
    let (_, resumed) = n.login_req_on_new(resume_req(
        2,
        second.instance_id,
        second.p2p_epoch,
        0,
        vec![],
    ));
    assert!(resumed.resumed);
    n.ok(a, Body::Logout(wire::Empty {}));
    let (_, after_logout) = n.login(2);
    for r in [&second, &resumed, &after_logout] {
        assert_eq!(r.p2p_epoch, first.p2p_epoch);
    }
    // Another uid has a stream of its own.
    let (_, other) = n.login(3);
    assert_ne!(other.p2p_epoch, 0);
    assert_ne!(other.p2p_epoch, first.p2p_epoch);
}

#[test]
fn the_p2p_epoch_survives_sweeps_while_the_uid_is_offline_with_an_empty_inbox() {
    let mut n = Net::with(|cfg| {
        cfg.presence_grace = secs(1);
        cfg.inbox_max_age = secs(5);
        cfg.sweep_interval = secs(1);
    });
    let (a, _) = n.login(1);
    let (b, r) = n.login(2);
    n.sent(a, to_user(2, "m1"));
    assert_eq!(user_msgs(&n.bodies(b)), vec![(1, "m1".into())]);
    n.ack(b, 1);
    n.ok(b, Body::Logout(wire::Empty {}));
    n.ok(a, Body::Logout(wire::Empty {}));
    let inboxes = n.s.inbox_count();
    // A minute offline: the message ages out, sixty sweeps run.
    for _ in 0..60 {
        n.advance(secs(1));
    }
    assert_eq!(n.s.instance_count(), 0);
    assert_eq!(n.s.inbox_count(), inboxes);
    let (_, again) = n.login(2);
    assert_eq!(again.p2p_epoch, r.p2p_epoch);
    assert_eq!((again.p2p_seq, again.p2p_gap), (1, None));
    let (a2, _) = n.login(1);
    assert_eq!(n.sent(a2, to_user(2, "m2")).seq, 2);
}

#[test]
fn a_resume_with_the_p2p_epoch_replays_exactly_the_missed_messages() {
    for instance_alive in [true, false] {
        let mut n = Net::demo();
        let (a, _) = n.login(1);
        let (b, r) = n.login(2);
        for t in ["m1", "m2"] {
            n.sent(a, to_user(2, t));
        }
        assert_eq!(user_msgs(&n.bodies(b)).len(), 2);
        n.lose(b);
        if !instance_alive {
            n.advance(secs(31));
        }
        for t in ["m3", "m4", "m5"] {
            n.sent(a, to_user(2, t));
        }
        let c = n.accept();
        n.send(
            c,
            Body::Login(resume_req(2, r.instance_id, r.p2p_epoch, 2, vec![])),
        );
        let bodies = n.bodies(c);
        let x = login_reply(bodies[0].clone());
        assert_eq!(x.resumed, instance_alive);
        assert_eq!(x.p2p_epoch, r.p2p_epoch);
        assert_eq!((x.p2p_seq, x.p2p_gap), (2, None));
        assert_eq!(
            user_msgs(&bodies[1..]),
            vec![(3, "m3".into()), (4, "m4".into()), (5, "m5".into())]
        );
        assert_eq!(bodies.len(), 4, "nothing else: {bodies:?}");
    }
}

#[test]
fn a_resume_with_a_stale_p2p_epoch_gets_an_open_gap() {
    for seen in [0, 3] {
        let mut old = Net::demo();
        let (a, _) = old.login(1);
        let (b, r) = old.login(2);
        for t in ["m1", "m2", "m3"] {
            old.sent(a, to_user(2, t));
        }
        assert_eq!(user_msgs(&old.bodies(b)).len(), 3);
        // The server restarts; two messages wait for uid 2 in the new one.
        let mut n = Net::restarted(ServerConfig::demo());
        let (a, _) = n.login(1);
        for t in ["n1", "n2"] {
            n.sent(a, to_user(2, t));
        }
        let c = n.accept();
        n.send(
            c,
            Body::Login(resume_req(2, r.instance_id, r.p2p_epoch, seen, vec![])),
        );
        let bodies = n.bodies(c);
        let x = login_reply(bodies[0].clone());
        assert!(!x.resumed);
        assert_ne!(x.p2p_epoch, 0);
        assert_ne!(x.p2p_epoch, r.p2p_epoch, "cursor {seen}");
        assert_eq!(
            x.p2p_gap,
            Some(wire::SeqGap {
                from: seen + 1,
                to: 0
            }),
            "cursor {seen}"
        );
        // The new stream from the uid's acked point (nothing acked).
        assert_eq!(x.p2p_seq, 0);
        assert_eq!(
            user_msgs(&bodies[1..]),
            vec![(1, "n1".into()), (2, "n2".into())]
        );
    }
}

#[test]
fn a_login_without_a_p2p_cursor_gets_everything_no_instance_of_the_uid_acked() {
    for how in ["fresh", "resume with p2p_epoch 0"] {
        let mut n = Net::demo();
        let (a, _) = n.login(1);
        let (first, r) = n.login(2);
        for t in ["m1", "m2", "m3"] {
            n.sent(a, to_user(2, t));
        }
        assert_eq!(user_msgs(&n.bodies(first)).len(), 3);
        n.ack(first, 2);
        let req = match how {
            "fresh" => login_req(2),
            _ => resume_req(2, 0, 0, 3, vec![]),
        };
        let c = n.accept();
        n.send(c, Body::Login(req));
        let bodies = n.bodies(c);
        let x = login_reply(bodies[0].clone());
        assert!(!x.resumed);
        assert_eq!(x.p2p_epoch, r.p2p_epoch);
        assert_eq!((x.p2p_seq, x.p2p_gap), (2, None), "{how}");
        assert_eq!(user_msgs(&bodies[1..]), vec![(3, "m3".into())], "{how}");
    }
}

#[test]
fn an_inbox_forgotten_under_max_inbox_users_gets_a_new_epoch() {
    let mut n = Net::with(|cfg| {
        cfg.max_inbox_users = 10;
        cfg.rate_limit_sends = 10_000;
    });
    let (a, _) = n.login(1);
    let (b, r) = n.login(2);
    n.sent(a, to_user(2, "m1"));
    n.ack(b, 1);
    n.ok(b, Body::Logout(wire::Empty {}));
    // Offline uid 2's inbox is evicted by the inboxes of many others.
    for uid in 1000..1030 {
        n.sent(a, to_user(uid, "x"));
        n.advance(ms(1));
    }
    assert!(n.s.inbox_count() <= 11);
    n.sent(a, to_user(2, "m2"));
    let c = n.accept();
    n.send(
        c,
        Body::Login(resume_req(2, r.instance_id, r.p2p_epoch, 1, vec![])),
    );
    let bodies = n.bodies(c);
    let x = login_reply(bodies[0].clone());
    assert_ne!(x.p2p_epoch, r.p2p_epoch);
    assert_eq!(x.p2p_gap, Some(wire::SeqGap { from: 2, to: 0 }));
    assert_eq!(user_msgs(&bodies[1..]), vec![(1, "m2".into())]);
}

#[test]
fn a_repeated_send_gets_the_first_reply_and_is_delivered_once() {
    for kind in [Kind::P2p, Kind::Channel] {
        for after_resume in [false, true] {
            let case = format!("{kind:?}, after a resume: {after_resume}");
            let (mut n, a, b, ra, room) = two_in_a_room(ServerConfig::demo());
            let id = message_id();
            let first = n.sent(a, send_of(kind, "once", id));
            // Later, so that a send processed anew would carry another time.
            n.advance(secs(2));
            let link = if after_resume {
                n.lose(a);
                let seen = match kind {
                    Kind::P2p => 0,
                    Kind::Channel => first.seq,
                };
                let held = vec![cursor("room", room.epoch, seen)];
                let (a2, r) =
                    n.login_req_on_new(resume_req(1, ra.instance_id, ra.p2p_epoch, 0, held));
                assert!(r.resumed, "{case}");
                a2
            } else {
                a
            };
            let again = n.sent(link, send_of(kind, "once", id));
            assert_eq!(again, first, "{case}");
            assert_eq!(delivered(&mut n, b, "once"), 1, "{case}");
            // Nothing was numbered for the repeat.
            let next = n.sent(link, send_of(kind, "next", message_id()));
            assert_eq!(next.seq, first.seq + 1, "{case}");
        }
    }
}

#[test]
fn a_message_id_is_forgotten_after_the_dedupe_window() {
    for kind in [Kind::P2p, Kind::Channel] {
        let config = {
            let mut cfg = ServerConfig::demo();
            cfg.send_dedupe_window = secs(10);
            cfg
        };
        let (mut n, a, b, _, _) = two_in_a_room(config);
        let id = message_id();
        let first = n.sent(a, send_of(kind, "m", id));
        assert_eq!(delivered(&mut n, b, "m"), 1, "{kind:?}");
        n.advance(ms(9_999));
        assert_eq!(n.sent(a, send_of(kind, "m", id)), first, "{kind:?}");
        assert_eq!(delivered(&mut n, b, "m"), 0, "{kind:?}");
        n.advance(ms(1));
        let later = n.sent(a, send_of(kind, "m", id));
        assert_eq!(later.seq, first.seq + 1, "{kind:?}: a new message");
        assert_ne!(later.timestamp_ms, first.timestamp_ms);
        assert_eq!(delivered(&mut n, b, "m"), 1, "{kind:?}");
    }
}

#[test]
fn only_the_last_send_dedupe_max_ids_of_a_uid_are_remembered() {
    let config = {
        let mut cfg = ServerConfig::demo();
        cfg.send_dedupe_max = 3;
        cfg
    };
    let (mut n, a, b, _, _) = two_in_a_room(config);
    let ids: Vec<u64> = (0..4).map(|_| message_id()).collect();
    let replies: Vec<wire::SendReply> = ids
        .iter()
        .map(|id| n.sent(a, send_of(Kind::P2p, "m", *id)))
        .collect();
    n.clear(&[b]);
    // The three latest are answered from memory.
    for (id, first) in ids.iter().zip(&replies).skip(1) {
        assert_eq!(&n.sent(a, send_of(Kind::P2p, "m", *id)), first);
    }
    assert_eq!(delivered(&mut n, b, "m"), 0);
    // The oldest was forgotten: its repeat is a new message.
    let again = n.sent(a, send_of(Kind::P2p, "m", ids[0]));
    assert_eq!(again.seq, 5);
    assert_eq!(delivered(&mut n, b, "m"), 1);
}

#[test]
fn a_failed_send_is_not_remembered() {
    for case in [
        "5101 not in the channel",
        "4003 rate limit",
        "2007 too large",
    ] {
        let config = {
            let mut cfg = ServerConfig::demo();
            cfg.rate_limit_sends = 1;
            cfg
        };
        let mut n = Net::new(config);
        let (a, _) = n.login(1);
        let (b, _) = n.login(2);
        n.ok_join(b, "room");
        let id = message_id();
        let (failing, expected, retry) = match case {
            "5101 not in the channel" => (
                send_of(Kind::Channel, "m", id),
                5101,
                send_of(Kind::Channel, "m", id),
            ),
            "4003 rate limit" => {
                n.sent(a, to_user(3, "uses the one send allowed"));
                (
                    send_of(Kind::P2p, "m", id),
                    4003,
                    send_of(Kind::P2p, "m", id),
                )
            }
            _ => {
                let big = Body::SendToUser(wire::SendToUserRequest {
                    receiver: 2,
                    message: Some(wire::ChatMessage {
                        content: Bytes::from(vec![0u8; 40_000]),
                        ..chat("")
                    }),
                    unreliable: false,
                    message_id: id,
                });
                (big, 2007, send_of(Kind::P2p, "m", id))
            }
        };
        assert_eq!(n.err(a, failing), expected, "{case}");
        n.advance(secs(3));
        if case.starts_with("5101") {
            n.ok_join(a, "room");
            n.advance(secs(1));
        }
        n.clear(&[a, b]);
        let r = n.sent(a, retry);
        assert_eq!(r.seq, 1, "{case}");
        assert_eq!(delivered(&mut n, b, "m"), 1, "{case}");
    }
}
