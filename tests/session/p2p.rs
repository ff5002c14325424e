//! P2P messages: sequence, loss, exactly-once sends and message ids.

use crate::support::*;

#[test]
fn unreliable_messages_are_delivered_without_sequence() {
    let mut t = Script::logged_in();
    t.push(user_push(0, "u1"));
    t.push(user_push(0, "u2"));
    assert_eq!(texts(&t.take_events()), vec!["u1", "u2"]);
}

/// Peer-controlled sequence number u64::MAX + a new P2P epoch: the server's
/// gap starts at `p2p_seq + 1`, saturated, and nothing overflows.
#[test]
fn a_sequence_number_at_u64_max_does_not_overflow_on_restart_p2p() {
    let mut t = Script::new();
    t.s.login(t.now, Uid(ME), None, None).unwrap();
    t.connected();
    let login = t.last_sent();
    t.feed(
        login.request_id,
        Body::LoginReply(Script::login_reply(9, u64::MAX)),
    );
    let re = relogin(&mut t);
    let Body::Login(req) = &re.body else {
        panic!("{re:?}")
    };
    assert_eq!(req.resume.as_ref().map(|r| r.p2p_seq), Some(u64::MAX));
    // A restarted server (new epochs) with the gap it computes, saturated.
    let mut reply = Script::login_reply(10, 0);
    reply.p2p_epoch = P2P_EPOCH + 1;
    reply.p2p_gap = Some(wire::SeqGap {
        from: u64::MAX,
        to: 0,
    });
    t.feed(re.request_id, Body::LoginReply(reply));
    t.push(user_push(1, "after"));
    assert_eq!(texts(&t.take_events()), vec!["after"]);
}

#[test]
fn a_new_server_epoch_alone_reports_no_loss() {
    let mut t = Script::logged_in();
    let ch = t.joined_at("room", 1, 0, 0xA);
    t.push(user_push(1, "u1"));
    t.push(channel_push(1, 1, "c1"));
    t.take_events();
    let relogin = t.relogin();
    // Another server_epoch (diagnostics only), the same P2P epoch, no gap.
    let mut reply = Script::login_reply(9, 1);
    reply.server_epoch = 1234;
    t.feed(relogin.request_id, Body::LoginReply(reply));
    let rejoin = t.take_sent().pop().expect("a re-join");
    assert!(
        matches!(&rejoin.body, Body::Join(j) if j.rejoin && j.epoch == 0xA && j.resume_seq == 1),
        "{rejoin:?}"
    );
    t.feed(
        rejoin.request_id,
        Body::JoinReply(wire::JoinReply {
            channel: 1,
            seq: 1,
            epoch: 0xA,
            ..Default::default()
        }),
    );
    t.push(user_push(2, "u2"));
    t.push(channel_push(1, 2, "c2"));
    let events = t.take_events();
    assert!(losses(&events).is_empty(), "{events:?}");
    assert_eq!(texts(&events), vec!["u2", "c2"]);
    assert!(t.s.is_joined(ch));
}

#[test]
fn a_p2p_gap_with_an_unknown_end_is_one_loss_event() {
    let mut t = Script::logged_in();
    for s in 1..=3 {
        t.push(user_push(s, "old"));
    }
    t.take_events();
    let relogin = t.relogin();
    let mut reply = Script::login_reply(9, 0);
    reply.p2p_epoch = P2P_EPOCH + 1;
    reply.p2p_gap = Some(wire::SeqGap { from: 4, to: 0 });
    t.feed(relogin.request_id, Body::LoginReply(reply));
    // The new epoch's stream starts at the reply's p2p_seq.
    t.push(user_push(1, "new1"));
    let events = t.take_events();
    assert_eq!(
        losses(&events),
        vec![Event::MessagesLost {
            stream: LostStream::User,
            from_seq: 4,
            to_seq: None
        }]
    );
    assert_eq!(texts(&events), vec!["new1"]);
    // The next resume hands back the epoch of the last login reply.
    let resume = resume_of(&t.relogin());
    assert_eq!((resume.p2p_epoch, resume.p2p_seq), (P2P_EPOCH + 1, 1));
}

#[test]
fn reliable_sends_in_flight_at_link_loss_are_resent_unchanged_after_the_rejoins() {
    let mut t = Script::logged_in();
    let (_, sends) = two_sends_in_flight_at_link_loss(&mut t);
    assert!(
        sends.iter().all(|(id, _, _)| !t.completed(*id)),
        "not completed at link loss: {:?}",
        t.events
    );
    let relogin = t.relogin();
    let mut reply = Script::login_reply(9, 0);
    reply.resumed = true; // "y" is not kept: it is joined again.
    t.feed(relogin.request_id, Body::LoginReply(reply));
    let raw = t.take_raw();
    let rejoin = raw
        .iter()
        .position(|(_, f)| matches!(&f.body, Body::Join(j) if j.rejoin))
        .expect("a re-join");
    for (id, bytes, _) in &sends {
        let at: Vec<usize> = (0..raw.len()).filter(|&i| raw[i].0 == *bytes).collect();
        assert_eq!(at.len(), 1, "{id:?} re-sent once, byte for byte: {raw:?}");
        assert!(at[0] > rejoin, "{id:?} re-sent after the re-join");
    }
    assert_eq!(raw.iter().filter(|(_, f)| is_send(f)).count(), 2);
    assert!(sends.iter().all(|(id, _, _)| !t.completed(*id)));
    for (id, _, _) in &sends {
        t.feed(id.0, send_reply());
        assert!(
            matches!(t.completion(*id), Ok(Reply::MessageSent(m)) if m.timestamp_ms == 77),
            "{id:?}"
        );
    }
}

#[test]
fn held_sends_fail_with_1007_after_a_login_that_did_not_resume() {
    let mut t = Script::logged_in();
    let (_, sends) = two_sends_in_flight_at_link_loss(&mut t);
    assert!(sends.iter().all(|(id, _, _)| !t.completed(*id)));
    let relogin = t.relogin();
    let mut reply = Script::login_reply(9, 0);
    reply.instance_id = INSTANCE + 1;
    reply.resumed = false;
    t.feed(relogin.request_id, Body::LoginReply(reply));
    for (id, _, _) in &sends {
        assert!(is_1007(t.completion(*id)), "{id:?}");
    }
    let sent = t.take_sent();
    assert!(!sent.iter().any(is_send), "nothing re-sent: {sent:?}");
}

#[test]
fn a_held_send_whose_timeout_passes_while_disconnected_fails_with_1007() {
    let mut t = Script::logged_in();
    let id =
        t.s.send_message_to_user(
            t.now,
            Uid(2),
            Message::new("t", "p2p"),
            SendOptions::reliable(),
        )
        .unwrap();
    t.take_sent();
    t.run_for(Duration::from_secs(1));
    t.disconnected();
    // The transport never opens again (every dial is left hanging).
    t.run_for(Duration::from_millis(8_900));
    assert!(!t.completed(id), "held within its 10 s timeout");
    t.run_for(Duration::from_millis(200));
    assert!(is_1007(t.completion(id)));
    // Once the link is back and resumed, it is not sent again.
    t.connected();
    let login = t.last_sent();
    let mut reply = Script::login_reply(9, 0);
    reply.resumed = true;
    t.feed(login.request_id, Body::LoginReply(reply));
    assert!(!t.take_sent().iter().any(is_send));
}

#[test]
fn unreliable_sends_fail_with_1007_at_link_loss() {
    let mut t = Script::logged_in();
    let y = t.joined_at("y", 2, 0, 0xB);
    let user =
        t.s.send_message_to_user(
            t.now,
            Uid(2),
            Message::new("t", "u"),
            SendOptions::unreliable(),
        )
        .unwrap();
    let chan =
        t.s.send_message_to_channel(t.now, y, Message::new("t", "c"), SendOptions::unreliable())
            .unwrap();
    let reliable =
        t.s.send_message_to_user(
            t.now,
            Uid(2),
            Message::new("t", "r"),
            SendOptions::reliable(),
        )
        .unwrap();
    let reliable_bytes = t.take_raw().pop().unwrap().0;
    t.disconnected();
    t.drain();
    assert!(is_1007(t.completion(user)));
    assert!(is_1007(t.completion(chan)));
    assert!(!t.completed(reliable), "the reliable one is held");
    let relogin = t.relogin();
    let mut reply = Script::login_reply(9, 0);
    reply.resumed = true;
    reply.channels = vec![resumed_with(
        "y",
        wire::JoinReply {
            channel: 2,
            epoch: 0xB,
            ..Default::default()
        },
    )];
    t.feed(relogin.request_id, Body::LoginReply(reply));
    let resent: Vec<Bytes> = t
        .take_raw()
        .into_iter()
        .filter(|(_, f)| is_send(f))
        .map(|(b, _)| b)
        .collect();
    assert_eq!(resent, vec![reliable_bytes], "only the reliable send");
}

#[test]
fn message_ids_are_non_zero_and_distinct() {
    let mut t = Script::logged_in();
    let y = t.joined_at("y", 2, 0, 0xB);
    for i in 0..50u8 {
        let m = Message::new("t", vec![i]);
        let opts = if i % 3 == 0 {
            SendOptions::unreliable()
        } else {
            SendOptions::reliable()
        };
        if i % 2 == 0 {
            t.s.send_message_to_user(t.now, Uid(2), m, opts).unwrap();
        } else {
            t.s.send_message_to_channel(t.now, y, m, opts).unwrap();
        }
    }
    let mut ids: Vec<u64> = t.take_sent().iter().map(message_id).collect();
    assert_eq!(ids.len(), 50);
    assert!(ids.iter().all(|&id| id != 0), "{ids:?}");
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 50, "distinct");
}

#[test]
fn sessions_with_the_same_seed_and_other_instances_make_other_message_ids() {
    let first_ids = |instance_id: u64| -> Vec<u64> {
        let mut config = SessionConfig::new(10000);
        config.seed = 42;
        let mut reply = Script::login_reply(9, 0);
        reply.instance_id = instance_id;
        let mut t = Script::logged_in_with(config, reply);
        for _ in 0..3 {
            t.s.send_message_to_user(
                t.now,
                Uid(2),
                Message::new("t", "x"),
                SendOptions::reliable(),
            )
            .unwrap();
        }
        t.take_sent().iter().map(message_id).collect()
    };
    let a = first_ids(INSTANCE);
    let b = first_ids(INSTANCE + 1);
    assert!(a.iter().all(|id| !b.contains(id)), "{a:?} vs {b:?}");
}
