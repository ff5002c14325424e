//! A durable server (`ServerConfig::durable`) with a store double: output
//! waits for the store, and a process that dies and starts again from the
//! store loses nothing a client saw (`Net::crash_restart`).

use crate::support::*;
use hummer_channel::server::{StoreKey, DEMO_APPID};
use hummer_channel::wire::AttributeOp;

fn cn() -> i32 {
    wire::Region::Cn as i32
}

#[test]
fn output_waits_until_the_store_has_what_it_shows() {
    let mut n = Net::durable(ServerConfig::demo(), 1);
    n.store_paused = true;
    let c = n.accept();
    n.send(c, Body::Login(login_req(1)));
    assert!(
        n.bodies(c).is_empty(),
        "the login's reply went out unstored"
    );
    assert!(n.store.as_ref().unwrap().keys().is_empty());
    n.store_paused = false;
    n.pump();
    assert!(matches!(n.bodies(c).as_slice(), [Body::LoginReply(_)]));
    let store = n.store.as_ref().unwrap();
    assert!(store
        .keys()
        .iter()
        .any(|k| matches!(k, StoreKey::Instance { uid: 1, .. })));
}

/// uid 1 (`a`) and uid 2 (`b`) in "room" with attributes, three messages
/// there, two P2P messages for uid 3 (never logged in); all stored.
struct Scene {
    n: Net,
    a: ConnId,
    b: ConnId,
    ra: wire::LoginReply,
    rb: wire::LoginReply,
    room: wire::JoinReply,
}

fn scene(shards: u16) -> Scene {
    let mut n = Net::durable(ServerConfig::demo(), shards);
    let (a, ra) = n.login(1);
    let (b, rb) = n.login(2);
    let room = n.ok_join(a, "room");
    n.ok_join(b, "room");
    n.ok(
        a,
        write(
            true,
            "room",
            AttributeOp::AddOrUpdate,
            attrs(&[("topic", "t")]),
            &[],
            false,
        ),
    );
    n.ok(b, write_attrs("room", false));
    n.advance(secs(1));
    for t in ["m1", "m2", "m3"] {
        n.sent(a, to_channel("room", t));
    }
    for t in ["p1", "p2"] {
        n.sent(a, to_user(3, t));
    }
    let seen = channel_msgs(&n.bodies(b));
    assert_eq!(seen.iter().map(|m| m.1).collect::<Vec<_>>(), [1, 2, 3]);
    n.clear(&[a, b]);
    Scene {
        n,
        a,
        b,
        ra,
        rb,
        room,
    }
}

fn resume_b(
    n: &mut Net,
    s_rb: &wire::LoginReply,
    room: &wire::JoinReply,
    seq: u64,
) -> (ConnId, wire::LoginReply) {
    let b2 = n.accept();
    let reply = login_reply(n.login_with(
        b2,
        resume_req(
            2,
            s_rb.instance_id,
            s_rb.p2p_epoch,
            0,
            vec![cursor("room", room.epoch, seq)],
        ),
    ));
    (b2, reply)
}

fn restart_loses_nothing(shards: u16, restart_shards: u16) {
    let Scene {
        mut n,
        a: _,
        b: _,
        ra,
        rb,
        room,
    } = scene(shards);
    let restored = n.crash_restart(secs(2), restart_shards);
    assert_eq!(
        (
            restored.channels,
            restored.inboxes,
            restored.instances,
            restored.messages,
            restored.unreadable
        ),
        (1, 3, 2, 5, 0),
        "{restored:?}"
    );
    // b resumes on the new process from seq 2: m3 is replayed, nothing lost.
    let (b2, reply) = resume_b(&mut n, &rb, &room, 2);
    assert!(reply.resumed, "{reply:?}");
    assert_eq!(reply.instance_id, rb.instance_id);
    let kept = &reply.channels[0].state.as_ref().unwrap();
    assert_eq!(
        (kept.epoch, kept.channel),
        (room.epoch, room.channel),
        "{kept:?}"
    );
    assert_eq!(kept.gap, None);
    let replayed = channel_msgs(&n.bodies(b2));
    assert_eq!(replayed, [(room.channel, 3, "m3".to_string())]);
    // Attributes and members are as they were.
    match n.req(
        b2,
        Body::GetChannelAttributes(wire::GetChannelAttributesRequest {
            channel: Some(key("room")),
            keys: vec![],
        }),
    ) {
        Body::Attributes(r) => assert_eq!(r.attributes, attrs(&[("topic", "t")])),
        other => panic!("{other:?}"),
    }
    match n.req(b2, Body::GetUserList(key("room"))) {
        Body::UserList(r) => assert_eq!(r.uids, [1, 2]),
        other => panic!("{other:?}"),
    }
    // a resumes too, and the stream goes on in the same epoch.
    let a2 = n.accept();
    let ra2 = login_reply(n.login_with(
        a2,
        resume_req(
            1,
            ra.instance_id,
            ra.p2p_epoch,
            0,
            vec![cursor("room", room.epoch, 3)],
        ),
    ));
    assert!(ra2.resumed);
    n.clear(&[a2, b2]);
    assert_eq!(n.sent(a2, to_channel("room", "m4")).seq, 4);
    assert_eq!(
        channel_msgs(&n.bodies(b2)),
        [(room.channel, 4, "m4".to_string())]
    );
    // uid 3's offline messages wait for it.
    let (c, rc) = n.login(3);
    assert_eq!(rc.p2p_gap, None);
    let p2p = user_msgs(&n.bodies(c));
    assert_eq!(p2p, [(1, "p1".to_string()), (2, "p2".to_string())]);
}

#[test]
fn a_restart_from_the_store_loses_nothing_a_client_saw() {
    restart_loses_nothing(1, 1);
}

#[test]
fn a_restart_with_three_shards_loses_nothing_a_client_saw() {
    restart_loses_nothing(3, 3);
}

#[test]
fn a_restart_with_another_number_of_shards_loses_nothing() {
    restart_loses_nothing(1, 4);
    restart_loses_nothing(3, 1);
}

#[test]
fn an_instance_not_resumed_within_the_grace_period_departs_after_a_restart() {
    let Scene {
        mut n, rb, room, ..
    } = scene(1);
    n.crash_restart(secs(1), 1);
    let (b2, reply) = resume_b(&mut n, &rb, &room, 3);
    assert!(reply.resumed);
    n.clear(&[b2]);
    // uid 1 never comes back: its instance goes when the grace period ends.
    n.advance(secs(29));
    assert!(membership(&n.bodies(b2)).is_empty());
    n.run_for(secs(2));
    let notices = membership(&n.bodies(b2));
    assert_eq!(notices, [(Vec::new(), vec![1])], "{notices:?}");
    let store = n.store.as_ref().unwrap();
    assert!(
        !store
            .keys()
            .iter()
            .any(|k| matches!(k, StoreKey::Instance { uid: 1, .. })),
        "the departed instance is still stored: {:?}",
        store.keys()
    );
}

fn membership(bodies: &[Body]) -> Vec<(Vec<u64>, Vec<u64>)> {
    bodies
        .iter()
        .filter_map(|b| match b {
            Body::Membership(m) => Some((m.joined.clone(), m.left.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn what_the_store_never_took_was_never_seen_and_is_not_missed() {
    let Scene {
        mut n,
        a,
        b,
        ra,
        rb,
        room,
    } = scene(1);
    n.store_paused = true;
    n.send(a, to_channel("room", "lost"));
    n.send(a, to_user(2, "lost too"));
    assert!(n.bodies(b).is_empty(), "b saw what the store did not take");
    n.crash_restart(secs(1), 1);
    let (b2, reply) = resume_b(&mut n, &rb, &room, 3);
    assert!(reply.resumed);
    assert_eq!(reply.p2p_gap, None);
    assert!(n.bodies(b2).is_empty());
    let a2 = n.accept();
    let ra2 = login_reply(n.login_with(
        a2,
        resume_req(
            1,
            ra.instance_id,
            ra.p2p_epoch,
            0,
            vec![cursor("room", room.epoch, 3)],
        ),
    ));
    assert!(ra2.resumed);
    n.clear(&[a2]);
    // The next message takes the number the lost one had: no client saw it.
    assert_eq!(n.sent(a2, to_channel("room", "next")).seq, 4);
    assert_eq!(
        channel_msgs(&n.bodies(b2)),
        [(room.channel, 4, "next".to_string())]
    );
}

#[test]
fn a_store_that_lost_everything_is_written_again_in_full() {
    let Scene {
        mut n, rb, room, ..
    } = scene(3);
    let before = n.store.as_ref().unwrap().keys();
    // The store comes back empty (a restart without persistence).
    n.store = Some(Default::default());
    n.s.handle_store_lost();
    n.pump();
    assert_eq!(n.store.as_ref().unwrap().keys(), before);
    let restored = n.crash_restart(secs(1), 3);
    assert_eq!(restored.messages, 5);
    let (b2, reply) = resume_b(&mut n, &rb, &room, 1);
    assert!(reply.resumed);
    assert_eq!(
        channel_msgs(&n.bodies(b2))
            .iter()
            .map(|m| m.1)
            .collect::<Vec<_>>(),
        [2, 3]
    );
}

#[test]
fn a_store_without_a_channel_gives_a_new_epoch_and_a_told_loss() {
    let Scene {
        mut n, rb, room, ..
    } = scene(1);
    // Redis restarted empty and the nodes then too: nothing comes back.
    n.store = Some(Default::default());
    n.crash_restart(secs(1), 1);
    let (b2, reply) = resume_b(&mut n, &rb, &room, 3);
    assert!(!reply.resumed);
    let _ = b2;
    let rejoined = join_reply(n.req(b2, rejoin("room", room.epoch, 3)));
    assert_ne!(rejoined.epoch, room.epoch);
    assert_eq!(
        rejoined.gap,
        Some(wire::SeqGap { from: 4, to: 0 }),
        "{rejoined:?}"
    );
}

#[test]
fn evicted_and_forgotten_history_leaves_the_store() {
    let mut config = ServerConfig::demo();
    config.channel_retention_messages = 2;
    config.channel_retention_age = secs(2);
    let mut n = Net::durable(config, 1);
    let (a, _) = n.login(1);
    n.ok_join(a, "room");
    for t in ["m1", "m2", "m3", "m4"] {
        n.sent(a, to_channel("room", t));
    }
    let ch = StoreKey::Channel {
        appid: DEMO_APPID,
        region: cn(),
        id: "room".into(),
    };
    assert_eq!(n.store.as_ref().unwrap().entries(&ch), [3, 4]);
    // The channel is forgotten once empty and aged out: so is its object.
    n.ok(a, leave("room"));
    n.advance(secs(31));
    assert!(!n.store.as_ref().unwrap().keys().contains(&ch));
    // A logout removes the instance.
    n.ok(a, Body::Logout(wire::Empty {}));
    let inbox = StoreKey::Inbox {
        appid: DEMO_APPID,
        uid: 1,
    };
    assert_eq!(n.store.as_ref().unwrap().keys(), [inbox]);
}

#[test]
fn backend_events_and_api_answers_wait_for_the_store_too() {
    use hummer_channel::server::{ApiCall, ApiReply, ApiRequest, HookConfig, HookEventKind};
    let mut config = ServerConfig::demo();
    config.apps[0].hook = Some(HookConfig::new("http://127.0.0.1:9/hook", "h".repeat(32)));
    let mut n = Net::durable(config, 1);
    n.store_paused = true;
    let c = n.accept();
    n.send(c, Body::Login(login_req(1)));
    assert!(
        n.s.poll_hook().is_none(),
        "an event told before it was stored"
    );
    // A server API call's answer shows what is not stored yet: its hub
    // says which batch to wait for.
    let call = ApiCall {
        appid: DEMO_APPID,
        request: ApiRequest::OnlineStatus { uids: vec![1] },
    };
    assert!(matches!(n.s.api(n.now, call), Ok(ApiReply::Online(s)) if s[&1]));
    assert!(!n.s.is_stored());
    n.store_paused = false;
    n.pump();
    assert!(n.s.is_stored());
    assert_eq!(
        n.s.poll_hook().map(|e| e.kind),
        Some(HookEventKind::UserOnline { uid: 1 })
    );
}

#[test]
fn a_re_send_after_a_restart_is_answered_as_the_first_and_delivers_nothing() {
    let Scene {
        mut n,
        a,
        b,
        ra,
        rb,
        room,
    } = scene(3);
    let first = n.sent(a, to_channel_id("room", "once", false, 4242));
    assert_eq!(first.seq, 4);
    n.clear(&[b]);
    let restored = n.crash_restart(secs(2), 3);
    assert!(restored.sends >= 6, "{restored:?}");
    let (b2, _) = resume_b(&mut n, &rb, &room, 4);
    let a2 = n.accept();
    let ra2 = login_reply(n.login_with(
        a2,
        resume_req(
            1,
            ra.instance_id,
            ra.p2p_epoch,
            0,
            vec![cursor("room", room.epoch, 4)],
        ),
    ));
    assert!(ra2.resumed);
    n.clear(&[a2, b2]);
    // The Session re-sends what it had no reply for, with the same id.
    let again = n.sent(a2, to_channel_id("room", "once", false, 4242));
    assert_eq!(again, first);
    assert!(channel_msgs(&n.bodies(b2)).is_empty(), "delivered twice");
    // A new send goes on after it.
    assert_eq!(n.sent(a2, to_channel("room", "next")).seq, 5);
    let _ = b;
}
