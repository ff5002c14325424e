//! Flow control: the bounded outgoing queue, `Session::drain` and `Event::Writable`.

use crate::support::*;

fn writables(events: &[Event]) -> usize {
    events
        .iter()
        .filter(|e| matches!(e, Event::Writable))
        .count()
}

/// `Session::drain` into a transport that stops taking frames: the frames
/// stay queued, commands get `QueueFull`, and once the driver takes frames
/// and drains again `Event::Writable` is reported exactly once.
#[test]
fn drain_into_a_full_transport_keeps_frames_and_reports_writable_once() {
    let mut config = SessionConfig::new(10000);
    config.max_outgoing_frames = 4;
    let mut t = Script::logged_in_with(config, Script::login_reply(9, 0));
    let send = |t: &mut Script, text: &str| {
        t.s.send_message_to_user(
            t.now,
            Uid(2),
            Message::new("text", text.to_string()),
            SendOptions::unreliable(),
        )
    };

    // The transport takes nothing.
    let mut full = SessionOut::with_room(0);
    for i in 0..4 {
        send(&mut t, &format!("m{i}")).expect("room for 4 frames");
        t.s.drain(&mut full);
    }
    assert!(full.frames.is_empty(), "no frame past writable() == false");
    assert_eq!(t.s.queued_frames(), 4);
    let refused = send(&mut t, "m4");
    assert!(
        matches!(refused, Err(CommandError::QueueFull { .. })),
        "{refused:?}"
    );
    t.s.drain(&mut full);
    t.s.drain(&mut full);
    assert!(full.frames.is_empty());
    assert_eq!(writables(&full.events), 0, "no room yet");
    assert_eq!(t.s.queued_frames(), 4, "nothing lost");

    // The driver takes two frames: room again, told once.
    let mut some = SessionOut::with_room(2);
    t.s.drain(&mut some);
    assert_eq!(some.frames.len(), 2);
    assert_eq!(t.s.queued_frames(), 2);
    assert_eq!(writables(&some.events), 1, "{:?}", some.events);
    let mut again = SessionOut::with_room(0);
    t.s.drain(&mut again);
    t.s.drain(&mut again);
    assert_eq!(writables(&again.events), 0, "Writable is reported once");

    // The rest, in order, then the refused command fits.
    let mut all = SessionOut::default();
    t.s.drain(&mut all);
    assert_eq!(writables(&all.events), 0);
    some.events.clear();
    t.record(some);
    t.record(all);
    let texts: Vec<String> = t
        .take_sent()
        .into_iter()
        .map(|f| match f.body {
            hummer_channel::wire::Body::SendToUser(r) => {
                String::from_utf8(r.message.unwrap().content.to_vec()).unwrap()
            }
            other => panic!("not a send: {other:?}"),
        })
        .collect();
    assert_eq!(texts, ["m0", "m1", "m2", "m3"]);
    send(&mut t, "m4").expect("room after the frames were taken");
    assert_eq!(writables(&t.take_events()), 0);
}

#[test]
fn a_full_queue_hands_the_message_back_and_signals_room() {
    let mut config = SessionConfig::new(1);
    config.max_outgoing_frames = 2;
    let mut t = Script::with(config);
    t.s.login(t.now, Uid(ME), None, None).unwrap();
    t.connected();
    let login = t.last_sent();
    t.feed(
        login.request_id,
        Body::LoginReply(Script::login_reply(9, 0)),
    );
    t.take_events();
    let msg = Message::new("t", "keep me");
    t.s.send_message_to_user(t.now, Uid(2), msg.clone(), SendOptions::default())
        .unwrap();
    t.s.send_message_to_user(t.now, Uid(2), msg.clone(), SendOptions::default())
        .unwrap();
    let err =
        t.s.send_message_to_user(t.now, Uid(2), msg.clone(), SendOptions::default())
            .unwrap_err();
    assert_eq!(
        err,
        CommandError::QueueFull {
            message: Some(Box::new(msg))
        }
    );
    assert!(t.s.poll_transmit().is_some());
    assert_eq!(t.s.poll_event(), Some(Event::Writable));
}

/// The table of requests in flight bounds commands too: a full table
/// refuses, and `Writable` comes only once a reply makes room, however
/// many frames the driver takes meanwhile.
#[test]
fn a_full_request_table_signals_room_only_when_a_reply_frees_a_slot() {
    let mut config = SessionConfig::new(10000);
    config.max_pending_requests = 2;
    let mut t = Script::logged_in_with(config, Script::login_reply(9, 0));
    let uids = [Uid(2)];
    t.s.query_users_online_status(t.now, &uids).unwrap();
    let first = t.last_sent();
    t.s.query_users_online_status(t.now, &uids).unwrap();
    let refused = t.s.query_users_online_status(t.now, &uids);
    assert!(
        matches!(refused, Err(CommandError::QueueFull { .. })),
        "{refused:?}"
    );
    // Every frame taken: the table is still full.
    let mut out = SessionOut::default();
    t.s.drain(&mut out);
    assert_eq!(t.s.queued_frames(), 0);
    assert_eq!(writables(&out.events), 0, "two requests still in flight");
    // One reply: a slot, told once.
    t.feed(first.request_id, Body::OnlineStatus(Default::default()));
    let events = t.take_events();
    assert_eq!(writables(&events), 1, "{events:?}");
    t.s.query_users_online_status(t.now, &uids)
        .expect("room for one more");
}
