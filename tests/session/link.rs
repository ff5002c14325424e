//! The link: dials, link ids, heartbeats, timeouts, losses, reconnection and resume.

use crate::common::pair::Pair;
use crate::common::raw_frame as frame;
use crate::support::*;

/// After a lost link the Session re-dials on a new link; a late disconnect
/// and a late (valid) frame of the old link, arriving after the new
/// `Connect` and again after the new link is up, change nothing, report
/// nothing, send nothing, and are counted; the new link logs in and works.
#[test]
fn a_stale_links_disconnect_and_frames_after_a_redial_are_ignored() {
    let mut t = Script::logged_in();
    let old = t.current();
    assert_eq!(t.s.link(), Some(old));
    assert_eq!(t.s.stale_inputs(), 0);

    t.disconnected();
    t.run_for(Duration::from_secs(2));
    assert_eq!(t.acts(), vec![Act::Connect], "one re-dial");
    let new = t.current();
    assert_ne!(new, old, "a re-dial is a new link");
    assert_eq!(t.s.link(), Some(new));
    t.take_events();
    t.take_sent();
    t.actions.clear();

    // Late input of the old link while the new one is being dialed.
    let state = t.s.connection_state();
    assert_eq!(state.0, S::Reconnecting);
    t.s.handle_disconnected(t.now, old);
    t.s.handle_frame(t.now, old, frame(0, user_push(1, "late")))
        .expect("stale input is no error");
    t.s.handle_connected(t.now, old);
    t.drain();
    assert_eq!(t.s.stale_inputs(), 3);
    assert_eq!(t.s.connection_state(), state);
    assert_eq!(t.s.link(), Some(new));
    assert_eq!(t.take_events(), vec![], "no event from a stale link");
    assert!(
        t.take_sent().is_empty(),
        "no frame: the old link did not open"
    );
    assert!(t.actions.is_empty(), "no transport action");

    // The new link opens: the (resuming) login goes out on it.
    t.connected();
    let login = t.last_sent();
    let Body::Login(req) = &login.body else {
        panic!("not a login: {login:?}")
    };
    assert!(req.resume.is_some(), "the re-login resumes");

    // Late input of the old link while the new one is up: even the reply
    // the new link waits for is not credited when it names the old link.
    let mut reply = Script::login_reply(9, 0);
    reply.resumed = true;
    t.s.handle_frame(
        t.now,
        old,
        frame(login.request_id, Body::LoginReply(reply.clone())),
    )
    .expect("stale input is no error");
    t.s.handle_frame(t.now, old, frame(0, user_push(1, "late")))
        .expect("stale input is no error");
    t.s.handle_disconnected(t.now, old);
    t.drain();
    assert_eq!(t.s.stale_inputs(), 6);
    assert_eq!(t.s.connection_state(), state, "still logging in");
    assert_eq!(t.s.link(), Some(new));
    assert_eq!(t.take_events(), vec![]);
    assert!(t.take_sent().is_empty());
    assert!(t.actions.is_empty());

    // The same reply on the new link logs in, and the link works.
    t.feed(login.request_id, Body::LoginReply(reply));
    assert_eq!(t.s.connection_state(), (S::Connected, R::LoginSuccess));
    t.push(user_push(1, "on time"));
    let events = t.take_events();
    assert!(
        events.iter().any(|e| matches!(e,
            Event::MessageFromUser { from_uid: Uid(2), message, .. } if message.content == "on time")),
        "{events:?}"
    );
    let id =
        t.s.send_message_to_user(
            t.now,
            Uid(2),
            Message::new("text", "hi"),
            SendOptions::reliable(),
        )
        .unwrap();
    let send = t.last_sent();
    assert_eq!(send.request_id, id.0);
    t.feed(
        id.0,
        Body::SendReply(wire::SendReply {
            delivered_online: true,
            ..Default::default()
        }),
    );
    assert!(matches!(t.completion(id), Ok(Reply::MessageSent(_))));
    assert_eq!(
        t.s.stale_inputs(),
        6,
        "input of the current link is not stale"
    );
}

/// The same with a real server: a link dropped under a Session in a pair;
/// input replayed from the old link after the re-dial is ignored and the
/// new link carries messages both ways.
#[test]
fn a_stale_link_in_a_pair_is_ignored_and_the_new_link_works() {
    let mut p = Pair::demo();
    let a = p.logged_in(1);
    let b = p.logged_in(2);
    let (old, _) = p.peers[a].link.unwrap();
    p.drop_link(a);
    p.run_for(Duration::from_secs(3));
    let (new, _) = p.peers[a].link.expect("re-dialed");
    assert_ne!(new, old);
    assert_eq!(
        p.peers[a].s.connection_state(),
        (S::Connected, R::LoginSuccess)
    );
    p.take_events(a);
    let now = p.now;
    let s = p.session(a);
    s.handle_disconnected(now, old);
    s.handle_frame(now, old, frame(0, user_push(99, "late")))
        .unwrap();
    p.pump();
    assert_eq!(p.peers[a].s.stale_inputs(), 2);
    assert_eq!(p.take_events(a), vec![]);
    assert_eq!(p.peers[a].s.link(), Some(new));
    let r = p.call(b, |s, now| {
        s.send_message_to_user(
            now,
            Uid(1),
            Message::new("text", "after"),
            SendOptions::reliable(),
        )
    });
    assert!(
        matches!(&r, Ok(Reply::MessageSent(m)) if m.delivered_online),
        "{r:?}"
    );
    let events = p.take_events(a);
    assert!(
        events.iter().any(|e| matches!(e,
            Event::MessageFromUser { from_uid: Uid(2), message, .. } if message.content == "after")),
        "{events:?}"
    );
}

#[test]
fn a_transport_that_fails_to_open_is_retried_until_the_login_timeout() {
    let mut t = Script::new();
    let id = t.s.login(t.now, Uid(ME), None, None).unwrap();
    t.drain();
    t.disconnected();
    t.run_for(Duration::from_secs(1));
    let dials = t.acts().iter().filter(|a| **a == Act::Connect).count();
    assert!(dials >= 2, "redialled: {:?}", t.acts());
    t.connected();
    let login = t.last_sent();
    assert_eq!(login.request_id, id.0, "the application's login id is kept");
    t.feed(id.0, Body::LoginReply(Script::login_reply(9, 0)));
    assert!(matches!(t.completion(id), Ok(Reply::Login(_))));
}

#[test]
fn a_ping_from_the_server_is_answered() {
    let mut t = Script::logged_in();
    t.feed(4, Body::Ping(wire::Ping { nonce: 42 }));
    let pong = t.last_sent();
    assert_eq!(
        (pong.request_id, pong.body),
        (4, Body::Pong(wire::Pong { nonce: 42 }))
    );
}

#[test]
fn requests_time_out_with_1005_at_their_own_deadlines() {
    let mut t = Script::logged_in();
    let info = t.s.get_instance_info(t.now).unwrap();
    let send =
        t.s.send_message_to_user(
            t.now,
            Uid(2),
            Message::new("t", "x"),
            SendOptions::default(),
        )
        .unwrap();
    t.take_sent();
    // Keep the link alive with pongs while waiting.
    t.run_for(Duration::from_millis(5_100));
    assert_eq!(
        t.completion(info).unwrap_err().code,
        ErrorCode::OPERATION_TIMEOUT
    );
    assert_eq!(t.completions(), 0, "the send waits for its longer deadline");
    t.push(Body::Pong(wire::Pong { nonce: 1 }));
    t.run_for(Duration::from_millis(5_000));
    assert_eq!(
        t.completion(send).unwrap_err().code,
        ErrorCode::OPERATION_TIMEOUT
    );
    // A late reply is ignored.
    t.feed(info.0, ok());
    assert_eq!(t.completions(), 0);
}

#[test]
fn heartbeats_keep_the_link_and_silence_kills_it() {
    let mut t = Script::logged_in();
    t.run_for(Duration::from_secs(10));
    let pings = t
        .take_sent()
        .into_iter()
        .filter(|f| matches!(f.body, Body::Ping(_)))
        .count();
    assert_eq!(pings, 1, "one ping after 10 s idle");
    // The server answers nothing: after the idle timeout the link is dead.
    t.run_for(Duration::from_secs(21));
    assert!(t.events.contains(&state(S::Reconnecting, R::Interrupted)));
    assert!(t.acts().contains(&Act::Close));
}

#[test]
fn time_going_backwards_is_ignored() {
    let mut t = Script::logged_in();
    let id = t.s.get_instance_info(t.now).unwrap();
    let earlier = t.now - Duration::from_secs(100);
    t.s.handle_timeout(earlier);
    t.s.handle_timeout(t.now + Duration::from_secs(6));
    t.s.handle_timeout(earlier);
    assert_eq!(
        t.completion(id).unwrap_err().code,
        ErrorCode::OPERATION_TIMEOUT
    );
}

#[test]
fn link_loss_fails_in_flight_requests_with_1007_and_reconnects_with_resume() {
    let mut t = Script::logged_in();
    let ch = t.joined("room", 4, 0);
    t.push(user_push(1, "a"));
    t.push(channel_push(4, 1, "b"));
    let info = t.s.get_instance_info(t.now).unwrap();
    t.take_sent();
    t.disconnected();
    t.drain();
    assert_eq!(
        t.completion(info).unwrap_err().code,
        ErrorCode::CONNECTION_EXCEPTION
    );
    assert!(t.events.contains(&state(S::Reconnecting, R::Interrupted)));
    assert!(t.s.is_joined(ch), "still joined while reconnecting");
    assert_eq!(
        t.s.get_instance_info(t.now),
        Err(CommandError::NotConnected)
    );
    t.actions.clear();
    t.run_for(Duration::from_secs(1));
    assert_eq!(t.acts(), vec![Act::Connect], "one dial after the backoff");
    t.connected();
    let relogin = t.last_sent();
    let Body::Login(req) = relogin.body else {
        panic!()
    };
    let resume = req.resume.expect("a resume");
    assert_eq!(
        (resume.instance_id, resume.p2p_epoch, resume.p2p_seq),
        (55, P2P_EPOCH, 1)
    );
    assert_eq!(
        resume.channels,
        vec![wire::ChannelCursor {
            channel: Some(room_key("room")),
            epoch: CH_EPOCH,
            seq: 1,
        }]
    );
    // v2: the resumed instance kept the channel; it comes back with the
    // login reply (a new number, the cursor it resumes from), not a re-join.
    let mut reply = Script::login_reply(9, 1);
    reply.resumed = true;
    reply.channels = vec![resumed_channel("room", 8, 1, CH_EPOCH)];
    t.feed(relogin.request_id, Body::LoginReply(reply));
    let events = t.take_events();
    assert!(events.contains(&state(S::Connected, R::LoginSuccess)));
    assert!(
        !events.iter().any(|e| matches!(e, Event::Completed { .. })),
        "a re-login completes nothing of the application's"
    );
    let sent = t.take_sent();
    assert!(
        !sent.iter().any(|f| matches!(f.body, Body::Join(_))),
        "no re-join of a kept channel: {sent:?}"
    );
    // Replayed and new messages under the new number; a duplicate is dropped.
    t.push(channel_push(8, 1, "b-again"));
    t.push(channel_push(8, 2, "c"));
    t.push(user_push(1, "a-again"));
    t.push(user_push(2, "d"));
    assert_eq!(texts(&t.take_events()), vec!["c", "d"]);
}

/// v2: a restart is no longer inferred from `server_epoch`; the server says
/// what is gone, per stream: `p2p_gap` in the login reply and the re-join
/// reply's `gap` (new epochs). Each is reported once.
#[test]
fn a_server_restart_is_reported_as_lost_messages() {
    let mut t = Script::logged_in();
    let ch = t.joined("room", 4, 0);
    t.push(user_push(1, "a"));
    t.push(channel_push(4, 1, "b"));
    t.disconnected();
    t.run_for(Duration::from_secs(1));
    t.connected();
    let relogin = t.last_sent();
    let mut reply = Script::login_reply(1234, 0);
    reply.p2p_epoch = P2P_EPOCH + 1;
    reply.p2p_gap = Some(wire::SeqGap { from: 2, to: 0 });
    t.feed(relogin.request_id, Body::LoginReply(reply));
    let rejoin = t.last_sent();
    let Body::Join(j) = &rejoin.body else {
        panic!("{rejoin:?}")
    };
    assert_eq!(
        (j.rejoin, j.epoch, j.resume_seq),
        (true, CH_EPOCH, 1),
        "the client hands its cursor back; the server judges it"
    );
    t.feed(
        rejoin.request_id,
        Body::JoinReply(wire::JoinReply {
            channel: 4,
            seq: 0,
            gap: Some(wire::SeqGap { from: 2, to: 0 }),
            member_offline: true,
            replay_truncated_at: 0,
            epoch: CH_EPOCH + 1,
        }),
    );
    let lost: Vec<Event> = t
        .take_events()
        .into_iter()
        .filter(|e| matches!(e, Event::MessagesLost { .. }))
        .collect();
    assert_eq!(
        lost,
        vec![
            Event::MessagesLost {
                stream: LostStream::User,
                from_seq: 2,
                to_seq: None
            },
            Event::MessagesLost {
                stream: LostStream::Channel(ch),
                from_seq: 2,
                to_seq: None
            },
        ]
    );
}

#[test]
fn a_malformed_frame_is_an_error_and_drops_the_link() {
    let mut t = Script::logged_in();
    let err = t.frame(Bytes::from_static(&[0xff, 0xff])).unwrap_err();
    assert!(matches!(err, hummer_channel::WireError::Malformed(_)));
    t.drain();
    assert!(t.acts().contains(&Act::Close));
    assert_eq!(t.s.connection_state(), (S::Reconnecting, R::Interrupted));
}

#[test]
fn backoff_grows_and_is_reproducible_from_the_seed() {
    fn dial_times(seed: u64) -> Vec<Duration> {
        let mut config = SessionConfig::new(1);
        config.seed = seed;
        let mut t = Script::with(config);
        let start = t.now;
        t.s.login(t.now, Uid(ME), None, None).unwrap();
        t.drain();
        let mut times = Vec::new();
        for _ in 0..6 {
            t.actions.clear();
            t.disconnected();
            while !t.acts().contains(&Act::Connect) {
                let next = t.s.poll_timeout().unwrap();
                t.now = next;
                t.s.handle_timeout(next);
                t.drain();
            }
            times.push(t.now - start);
        }
        times
    }
    let a = dial_times(1);
    assert_eq!(a, dial_times(1));
    assert_ne!(a, dial_times(2));
    let gaps: Vec<Duration> = a.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(gaps.last() > gaps.first(), "backoff grows: {gaps:?}");
}

#[test]
fn the_relogin_resumes_the_p2p_epoch_and_cursor_and_every_joined_channel() {
    let mut t = Script::logged_in_with(SessionConfig::new(10000), Script::login_reply(9, 3));
    t.push(user_push(4, "p4"));
    t.push(user_push(5, "p5"));
    let a = t.joined_at("a", 1, 10, 0xA);
    t.push(channel_push(1, 11, "a11"));
    t.joined_at("b", 2, 0, 0xB);
    // A channel left, and one whose join is still in flight at the loss.
    let left = t.joined_at("left", 3, 4, 0xC);
    let leave = t.s.leave_channel(t.now, left, Attributes::new()).unwrap();
    t.feed(leave.0, Body::Ok(wire::Empty {}));
    assert_eq!(t.completion(leave), Ok(Reply::Done));
    let pending = t.s.create_channel(Region::Cn, "pending").unwrap();
    t.s.join_channel(t.now, pending, Attributes::new()).unwrap();
    assert_eq!(texts(&t.take_events()), vec!["p4", "p5", "a11"]);
    assert!(t.s.is_joined(a));
    t.take_sent();

    let resume = resume_of(&t.relogin());
    assert_eq!(
        (resume.instance_id, resume.p2p_epoch, resume.p2p_seq),
        (INSTANCE, P2P_EPOCH, 5)
    );
    let mut channels = resume.channels;
    channels.sort_by(|x, y| {
        x.channel
            .as_ref()
            .map(|k| &k.channel_id)
            .cmp(&y.channel.as_ref().map(|k| &k.channel_id))
    });
    assert_eq!(channels, vec![cursor("a", 0xA, 11), cursor("b", 0xB, 0)]);
}

#[test]
fn the_server_ping_interval_shortens_the_heartbeat_once_a_frame_went_out() {
    let mut t = logged_in_with_3s_pings();
    let id = t.s.get_instance_info(t.now).unwrap();
    t.take_sent();
    t.feed(
        id.0,
        Body::Error(wire::ErrorReply {
            code: 1,
            message: String::new(),
        }),
    );
    let secs = |s: u64| Duration::from_secs(s);
    assert_eq!(
        ping_times(&mut t, Duration::from_millis(9_500)),
        vec![secs(3), secs(6), secs(9)]
    );
}

#[test]
fn the_server_ping_interval_shortens_the_heartbeat_from_the_login_on() {
    let mut t = logged_in_with_3s_pings();
    let secs = |s: u64| Duration::from_secs(s);
    assert_eq!(
        ping_times(&mut t, Duration::from_millis(9_500)),
        vec![secs(3), secs(6), secs(9)]
    );
}

#[test]
fn close_4006_reconnects_and_resumes() {
    let mut t = Script::logged_in();
    let ch = t.joined_at("room", 1, 3, 0xA);
    let send =
        t.s.send_message_to_user(
            t.now,
            Uid(2),
            Message::new("t", "x"),
            SendOptions::reliable(),
        )
        .unwrap();
    let send_bytes = t.take_raw().pop().unwrap().0;
    t.push(Body::Close(wire::Close {
        code: 4006,
        reason: "shutting down".into(),
    }));
    assert_eq!(t.s.connection_state(), (S::Reconnecting, R::Interrupted));
    assert_eq!(t.acts(), vec![Act::Close]);
    assert!(!t.completed(send), "held for a re-send");
    assert!(t.s.is_joined(ch));
    t.run_for(Duration::from_secs(2));
    assert_eq!(
        t.acts(),
        vec![Act::Close, Act::Connect],
        "a re-dial after the backoff"
    );
    t.connected();
    let login = t.last_sent();
    let resume = resume_of(&login);
    assert_eq!(
        (resume.instance_id, resume.p2p_epoch, resume.channels),
        (INSTANCE, P2P_EPOCH, vec![cursor("room", 0xA, 3)])
    );
    let mut reply = Script::login_reply(9, 0);
    reply.resumed = true;
    reply.channels = vec![resumed_with(
        "room",
        wire::JoinReply {
            channel: 1,
            seq: 3,
            epoch: 0xA,
            ..Default::default()
        },
    )];
    t.feed(login.request_id, Body::LoginReply(reply));
    let resent: Vec<Bytes> = t.take_raw().into_iter().map(|(b, _)| b).collect();
    assert_eq!(resent, vec![send_bytes]);
    t.feed(send.0, send_reply());
    assert!(matches!(t.completion(send), Ok(Reply::MessageSent(_))));
}

#[test]
fn the_server_idle_timeout_bounds_the_silence_the_session_waits_out() {
    let mut reply = Script::login_reply(9, 0);
    reply.ping_interval_ms = 4_000;
    reply.idle_timeout_ms = 12_000;
    let mut t = Script::logged_in_with(SessionConfig::new(10000), reply);
    // The server answers nothing (not even the pings).
    t.run_for(Duration::from_millis(11_900));
    assert_eq!(t.s.connection_state(), (S::Connected, R::LoginSuccess));
    t.run_for(Duration::from_millis(200));
    assert_eq!(t.s.connection_state(), (S::Reconnecting, R::Interrupted));
    assert!(t.acts().contains(&Act::Close));
}
