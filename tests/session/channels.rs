//! Channels: joins, rejoins, resumes, gaps, fetches and epochs.

use crate::support::*;

#[test]
fn joined_channels_are_limited_to_twenty() {
    let mut t = Script::logged_in();
    for i in 0..20 {
        t.joined(&format!("c{i}"), i + 1, 0);
    }
    let ch = t.s.create_channel(Region::Cn, "one-more").unwrap();
    assert_eq!(
        t.s.join_channel(t.now, ch, Attributes::new())
            .unwrap_err()
            .code(),
        ErrorCode::CHANNEL_COUNT_LIMIT_EXCEEDED
    );
}

#[test]
fn a_rejoin_after_the_grace_period_reports_room_member_offline() {
    let mut t = Script::logged_in();
    let ch = t.joined("room", 4, 0);
    t.disconnected();
    t.run_for(Duration::from_secs(1));
    t.connected();
    let relogin = t.last_sent();
    t.feed(
        relogin.request_id,
        Body::LoginReply(Script::login_reply(9, 0)),
    );
    // Not resumed: the channel is joined again from its cursor.
    let rejoin = t.last_sent();
    let Body::Join(j) = &rejoin.body else {
        panic!("{rejoin:?}")
    };
    assert_eq!((j.rejoin, j.epoch, j.resume_seq), (true, CH_EPOCH, 0));
    t.feed(
        rejoin.request_id,
        Body::JoinReply(wire::JoinReply {
            channel: 5,
            seq: 0,
            gap: None,
            member_offline: true,
            replay_truncated_at: 0,
            epoch: CH_EPOCH,
        }),
    );
    assert!(t
        .take_events()
        .contains(&Event::RoomMemberOffline { channel: ch }));
    assert!(t.s.is_joined(ch));
}

#[test]
fn a_gap_is_fetched_and_what_cannot_be_fetched_is_reported_once() {
    let mut t = Script::logged_in();
    t.push(user_push(1, "1"));
    t.push(user_push(4, "4"));
    t.push(user_push(5, "5"));
    assert_eq!(texts(&t.take_events()), vec!["1"]);
    let fetches: Vec<DecodedFrame> = t
        .take_sent()
        .into_iter()
        .filter(|f| matches!(f.body, Body::Fetch(_)))
        .collect();
    assert_eq!(fetches.len(), 1, "one fetch for the gap");
    let Body::Fetch(f) = &fetches[0].body else {
        panic!()
    };
    assert_eq!((f.channel.is_none(), f.after_seq), (true, 1));
    // The server replays 2, then says 3 is gone.
    t.push(user_push(2, "2"));
    t.feed(
        fetches[0].request_id,
        Body::FetchReply(wire::FetchReply {
            through_seq: 5,
            gap: Some(wire::SeqGap { from: 3, to: 3 }),
            more: false,
        }),
    );
    let events = t.take_events();
    assert_eq!(texts(&events), vec!["2", "4", "5"]);
    let lost: Vec<_> = events
        .iter()
        .filter(|e| matches!(e, Event::MessagesLost { .. }))
        .collect();
    assert_eq!(
        lost,
        vec![&Event::MessagesLost {
            stream: LostStream::User,
            from_seq: 3,
            to_seq: Some(3)
        }]
    );
    // Everything delivered is acknowledged once, coalesced.
    t.run_for(Duration::from_millis(100));
    let acks: Vec<u64> = t
        .take_sent()
        .into_iter()
        .filter_map(|f| match f.body {
            Body::Ack(a) => Some(a.p2p_seq),
            _ => None,
        })
        .collect();
    assert_eq!(acks, vec![5]);
}

/// Same with a channel: join reply seq = u64::MAX, then a new channel epoch.
#[test]
fn a_sequence_number_at_u64_max_does_not_overflow_on_restart_channel() {
    let mut t = Script::logged_in();
    t.joined("a", 1, u64::MAX);
    let re = relogin(&mut t);
    t.feed(re.request_id, Body::LoginReply(Script::login_reply(10, 0)));
    let rejoin = t.last_sent();
    let Body::Join(j) = &rejoin.body else {
        panic!("{rejoin:?}")
    };
    assert_eq!(j.resume_seq, u64::MAX);
    t.feed(
        rejoin.request_id,
        Body::JoinReply(wire::JoinReply {
            channel: 2,
            seq: 0,
            gap: Some(wire::SeqGap {
                from: u64::MAX,
                to: 0,
            }),
            member_offline: true,
            replay_truncated_at: 0,
            epoch: CH_EPOCH + 1,
        }),
    );
    t.push(channel_push(2, 1, "after"));
    assert_eq!(texts(&t.take_events()), vec!["after"]);
}

/// Same through a fetch reply's gap: skip() computes `self.last + 1`.
#[test]
fn a_fetch_gap_at_u64_max_does_not_overflow() {
    let mut t = Script::new();
    t.s.login(t.now, Uid(ME), None, None).unwrap();
    t.connected();
    let login = t.last_sent();
    let mut r = Script::login_reply(9, u64::MAX);
    r.p2p_replay_truncated_at = 4; // the first number not replayed
    t.feed(login.request_id, Body::LoginReply(r));
    let fetch = t.last_sent();
    t.feed(
        fetch.request_id,
        Body::FetchReply(wire::FetchReply {
            through_seq: 5,
            gap: Some(wire::SeqGap { from: 1, to: 2 }),
            more: false,
        }),
    );
}

/// A truncated fetch (more = true) whose pushes overflowed the hold buffer:
/// the next fetch starts after `through`, not after what was delivered, so
/// retained messages are reported lost or never delivered.
#[test]
fn a_cut_short_fetch_refetches_what_the_hold_buffer_dropped() {
    let mut t = Script::with(cfg_buffer(2));
    t.s.login(t.now, Uid(ME), None, None).unwrap();
    t.connected();
    let login = t.last_sent();
    t.feed(
        login.request_id,
        Body::LoginReply(Script::login_reply(9, 0)),
    );
    t.take_events();
    t.take_sent();
    // A live jump: 5 arrives with 1..4 missing -> held, fetch after 0.
    t.push(user_push(5, "5"));
    let f1 = t.last_sent();
    assert_eq!(fetch_after(&f1), 0);
    // The server evicted 1..2; it replays 3.. (before its reply), budget-cut at 7.
    for s in [3, 4, 5, 6, 7] {
        t.push(user_push(s, &s.to_string()));
    }
    t.feed(
        f1.request_id,
        Body::FetchReply(wire::FetchReply {
            through_seq: 7,
            gap: Some(wire::SeqGap { from: 1, to: 2 }),
            more: true,
        }),
    );
    let f2 = t.last_sent();
    // An honest server answers the fetch it was sent: what follows after_seq.
    let after = fetch_after(&f2);
    for s in (after + 1)..=8 {
        t.push(user_push(s, &s.to_string()));
    }
    t.feed(
        f2.request_id,
        Body::FetchReply(wire::FetchReply {
            through_seq: 8,
            gap: None,
            more: false,
        }),
    );
    // Anything further the Session asks for, the server serves too.
    for _ in 0..5 {
        let sent = t.take_sent();
        let Some(f) = sent.into_iter().find(|f| matches!(f.body, Body::Fetch(_))) else {
            break;
        };
        for s in (fetch_after(&f) + 1)..=8 {
            t.push(user_push(s, &s.to_string()));
        }
        t.feed(
            f.request_id,
            Body::FetchReply(wire::FetchReply {
                through_seq: 8,
                gap: None,
                more: false,
            }),
        );
    }
    let events = t.take_events();
    let lost: Vec<_> = events
        .iter()
        .filter(|e| matches!(e, Event::MessagesLost { .. }))
        .collect();
    assert_eq!(
        lost,
        vec![&Event::MessagesLost {
            stream: LostStream::User,
            from_seq: 1,
            to_seq: Some(2)
        }],
        "only what the server evicted is lost"
    );
    assert_eq!(
        texts(&events),
        vec!["3", "4", "5", "6", "7", "8"],
        "3..=8 were retained by the server"
    );
}

/// Leave right after a reconnect whose re-join replay was truncated: the
/// Session's fetch goes out behind the leave, the server answers 5101, and
/// the Session tears the whole link down.
#[test]
fn leaving_during_a_cut_short_rejoin_keeps_the_link() {
    let mut t = Script::logged_in();
    let ch = t.joined("a", 1, 0);
    t.push(channel_push(1, 1, "m1"));
    let re = relogin(&mut t);
    // Resumed, but the server did not keep the channel (it is not among the
    // reply's `channels`): the Session joins it again.
    let mut reply = Script::login_reply(9, 0);
    reply.resumed = true;
    t.feed(re.request_id, Body::LoginReply(reply));
    let rejoin = t.last_sent();
    assert!(
        matches!(&rejoin.body, Body::Join(j) if j.rejoin && j.epoch == CH_EPOCH && j.resume_seq == 1),
        "{rejoin:?}"
    );
    t.take_events();
    t.actions.clear();
    // The application leaves at once (allowed: Rejoining).
    let leave = t.s.leave_channel(t.now, ch, Attributes::new()).unwrap();
    t.take_sent();
    t.feed(
        rejoin.request_id,
        Body::JoinReply(wire::JoinReply {
            channel: 2,
            seq: 1,
            gap: None,
            member_offline: false,
            replay_truncated_at: 3,
            epoch: CH_EPOCH,
        }),
    );
    // The re-join reply must not turn the leaving channel back into a joined one.
    assert_eq!(
        t.s.leave_channel(t.now, ch, Attributes::new()),
        Err(CommandError::NotInChannel)
    );
    let fetch = t
        .take_sent()
        .into_iter()
        .find(|f| matches!(f.body, Body::Fetch(_)))
        .expect("fetch");
    t.push(channel_push(2, 2, "m2"));
    // Server order: leave reply (the leave came first), then the fetch's error.
    t.feed(leave.0, Body::Ok(wire::Empty {}));
    t.feed(
        fetch.request_id,
        Body::Error(wire::ErrorReply {
            code: 5101,
            message: "not in channel".into(),
        }),
    );
    let events = t.take_events();
    assert!(
        events.contains(&Event::Completed {
            request: leave,
            result: Ok(Reply::Done)
        }),
        "{events:?}"
    );
    assert!(!t.acts().contains(&Act::Close), "a healthy link was closed");
    assert_eq!(t.s.connection_state(), (S::Connected, R::LoginSuccess));
}

/// A leave held for a fetch whose link (and server) went away: the re-join
/// after a restart resets the stream, and the leave goes out then (it used
/// to wait for a fetch reply that never comes, the server keeping the member).
#[test]
fn a_leave_held_for_a_lost_fetch_goes_out_after_the_rejoin() {
    let mut t = Script::logged_in();
    let ch = t.joined("a", 1, 0);
    t.push(channel_push(1, 1, "m1"));
    // A hole: the Session fetches 2.
    t.push(channel_push(1, 3, "m3"));
    assert!(t
        .take_sent()
        .iter()
        .any(|f| matches!(f.body, Body::Fetch(_))));
    // The link and the server go before the fetch's reply.
    let re = relogin(&mut t);
    t.feed(re.request_id, Body::LoginReply(Script::login_reply(9, 0)));
    let rejoin = t.last_sent();
    assert!(
        matches!(&rejoin.body, Body::Join(j) if j.rejoin),
        "{rejoin:?}"
    );
    t.take_sent();
    // The application leaves while the re-join is on its way.
    t.s.leave_channel(t.now, ch, Attributes::new()).unwrap();
    let early: Vec<_> = t.take_sent();
    t.feed(
        rejoin.request_id,
        Body::JoinReply(wire::JoinReply {
            channel: 2,
            seq: 0,
            gap: Some(wire::SeqGap { from: 2, to: 0 }),
            member_offline: false,
            replay_truncated_at: 0,
            epoch: CH_EPOCH + 1,
        }),
    );
    let sent: Vec<_> = early.into_iter().chain(t.take_sent()).collect();
    assert_eq!(
        sent.iter()
            .filter(|f| matches!(f.body, Body::Leave(_)))
            .count(),
        1,
        "{sent:?}"
    );
}

/// A re-join into a channel the server forgot and created again: v2 says so
/// with a new epoch and `gap{from: resume_seq + 1, to: 0}`; the cursor is
/// reset to the reply's seq, so the new channel's messages are delivered (not
/// dropped as duplicates of the old ones) and the loss is reported once.
#[test]
fn a_rejoin_into_a_recreated_channel_delivers_its_new_messages() {
    let mut t = Script::logged_in();
    let ch = t.joined("a", 1, 0);
    for s in 1..=5 {
        t.push(channel_push(1, s, &format!("old{s}")));
    }
    let re = relogin(&mut t);
    t.feed(re.request_id, Body::LoginReply(Script::login_reply(9, 0)));
    let rejoin = t.last_sent();
    t.take_events();
    t.feed(
        rejoin.request_id,
        Body::JoinReply(wire::JoinReply {
            channel: 3,
            seq: 2,
            gap: Some(wire::SeqGap { from: 6, to: 0 }),
            member_offline: true,
            replay_truncated_at: 0,
            epoch: CH_EPOCH + 1,
        }),
    );
    t.push(channel_push(3, 3, "new3"));
    t.push(channel_push(3, 4, "new4"));
    t.push(channel_push(3, 6, "new6"));
    let events = t.take_events();
    assert_eq!(texts(&events), vec!["new3", "new4"]);
    let lost: Vec<_> = events
        .iter()
        .filter(|e| matches!(e, Event::MessagesLost { .. }))
        .collect();
    assert_eq!(
        lost,
        vec![&Event::MessagesLost {
            stream: LostStream::Channel(ch),
            from_seq: 6,
            to_seq: None
        }]
    );
}

#[test]
fn a_resumed_login_keeps_the_listed_channel_and_rejoins_only_the_other() {
    let mut t = Script::logged_in();
    let x = t.joined_at("x", 1, 0, 0xA);
    t.push(channel_push(1, 1, "x1"));
    t.push(channel_push(1, 2, "x2"));
    t.joined_at("y", 2, 5, 0xB);
    t.take_events();
    let relogin = t.relogin();
    let mut reply = Script::login_reply(9, 0);
    reply.resumed = true;
    reply.channels = vec![resumed_with(
        "x",
        wire::JoinReply {
            channel: 7,
            seq: 2,
            epoch: 0xA,
            ..Default::default()
        },
    )];
    t.feed(relogin.request_id, Body::LoginReply(reply));
    // The replay and live pushes follow the reply at once, under the new
    // number; repeats by seq are dropped.
    t.push(channel_push(7, 2, "x2-again"));
    t.push(channel_push(7, 3, "x3"));
    t.push(channel_push(7, 3, "x3-again"));
    t.push(channel_push(7, 4, "x4"));
    let events = t.take_events();
    assert_eq!(texts(&events), vec!["x3", "x4"]);
    assert!(events
        .iter()
        .filter(|e| e.message().is_some())
        .all(|e| matches!(e, Event::ChannelMessage { channel, .. } if *channel == x)));
    assert!(losses(&events).is_empty(), "{events:?}");
    let joins = joins(&t.take_sent());
    assert_eq!(
        joins,
        vec![wire::JoinRequest {
            channel: Some(key("y")),
            extra: Default::default(),
            resume_seq: 5,
            rejoin: true,
            epoch: 0xB,
        }],
        "one re-join, for the channel the server did not keep"
    );
}

#[test]
fn a_resumed_channel_in_a_new_epoch_resets_the_cursor_and_reports_its_gap_once() {
    let mut t = Script::logged_in();
    let ch = t.joined_at("room", 1, 0, 0xA);
    for s in 1..=5 {
        t.push(channel_push(1, s, "old"));
    }
    t.take_events();
    let relogin = t.relogin();
    let mut reply = Script::login_reply(9, 0);
    reply.resumed = true;
    reply.channels = vec![resumed_with(
        "room",
        wire::JoinReply {
            channel: 2,
            seq: 0,
            gap: Some(wire::SeqGap { from: 6, to: 0 }),
            epoch: 0xA2,
            ..Default::default()
        },
    )];
    t.feed(relogin.request_id, Body::LoginReply(reply));
    t.push(channel_push(2, 1, "new1"));
    let events = t.take_events();
    assert_eq!(
        losses(&events),
        vec![Event::MessagesLost {
            stream: LostStream::Channel(ch),
            from_seq: 6,
            to_seq: None
        }]
    );
    assert_eq!(texts(&events), vec!["new1"], "seq 1 of the new epoch");
    assert!(joins(&t.take_sent()).is_empty());
}

#[test]
fn a_rejoin_reply_in_a_new_epoch_resets_the_cursor_and_reports_its_gap_once() {
    let mut t = Script::logged_in();
    let ch = t.joined_at("room", 1, 0, 0xA);
    for s in 1..=5 {
        t.push(channel_push(1, s, "old"));
    }
    t.take_events();
    let relogin = t.relogin();
    t.feed(
        relogin.request_id,
        Body::LoginReply(Script::login_reply(9, 0)),
    );
    let rejoin = t.take_sent().pop().expect("a re-join");
    assert!(
        matches!(&rejoin.body, Body::Join(j) if j.rejoin && j.epoch == 0xA && j.resume_seq == 5),
        "the cursor goes back with its epoch: {rejoin:?}"
    );
    t.feed(
        rejoin.request_id,
        Body::JoinReply(wire::JoinReply {
            channel: 2,
            seq: 0,
            gap: Some(wire::SeqGap { from: 6, to: 0 }),
            member_offline: true,
            epoch: 0xA2,
            ..Default::default()
        }),
    );
    t.push(channel_push(2, 1, "new1"));
    let events = t.take_events();
    assert_eq!(
        losses(&events),
        vec![Event::MessagesLost {
            stream: LostStream::Channel(ch),
            from_seq: 6,
            to_seq: None
        }]
    );
    assert_eq!(texts(&events), vec!["new1"], "seq 1 of the new epoch");
}
