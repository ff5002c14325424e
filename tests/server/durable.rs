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
    resume_in_room(n, 2, s_rb, room, seq)
}

/// `uid`'s instance (its first login's `reply`) resumes on a new link, with
/// "room" (`room`) at `seq`.
fn resume_in_room(
    n: &mut Net,
    uid: u64,
    reply: &wire::LoginReply,
    room: &wire::JoinReply,
    seq: u64,
) -> (ConnId, wire::LoginReply) {
    let c = n.accept();
    let resumed = login_reply(n.login_with(
        c,
        resume_req(
            uid,
            reply.instance_id,
            reply.p2p_epoch,
            0,
            vec![cursor("room", room.epoch, seq)],
        ),
    ));
    (c, resumed)
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
    let (a2, ra2) = resume_in_room(&mut n, 1, &ra, &room, 3);
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
    let (a2, ra2) = resume_in_room(&mut n, 1, &ra, &room, 3);
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

// ---- review-durable: faults found in review ----

fn hooked_durable(shards: u16) -> Net {
    use hummer_channel::server::HookConfig;
    let mut c = ServerConfig::demo();
    c.apps[0].hook = Some(
        HookConfig::new("http://127.0.0.1:9/hook", "h".repeat(32)).with_message_prefix("room"),
    );
    Net::durable(c, shards)
}

fn hooked_messages(n: &mut Net) -> Vec<(u64, String)> {
    use hummer_channel::server::HookEventKind;
    std::iter::from_fn(|| n.s.poll_hook())
        .filter_map(|e| match e.kind {
            HookEventKind::ChannelMessage { seq, content, .. } => {
                Some((seq, String::from_utf8_lossy(&content).into_owned()))
            }
            _ => None,
        })
        .collect()
}

/// A backend's `channel.message` event is output like any push: it must
/// wait for the store, or a crash gives its seq to another message.
#[test]
fn a_webhook_is_not_told_of_a_message_the_store_does_not_have() {
    let mut n = hooked_durable(1);
    let (a, ra) = n.login(1);
    let room = n.ok_join(a, "room");
    while n.s.poll_hook().is_some() {}
    n.store_paused = true;
    n.send(a, to_channel("room", "lost"));
    let told = hooked_messages(&mut n);
    n.crash_restart(secs(1), 1);
    let (a2, ra2) = resume_in_room(&mut n, 1, &ra, &room, 0);
    assert!(ra2.resumed);
    let next = n.sent(a2, to_channel("room", "next")).seq;
    assert!(
        told.is_empty(),
        "the backend was told of {told:?}, which the store never had; after a crash seq {next} is \"next\""
    );
    // Once stored, the event goes.
    assert_eq!(hooked_messages(&mut n), [(next, "next".to_string())]);
}

/// Stores the batches of `shard` only; the others' are sealed and lost
/// (the process dies before they are stored).
fn store_only(n: &mut Net, shard: hummer_channel::server::ShardId) {
    for _ in 0..8 {
        let mut any = false;
        while let Some((s, batch)) = n.s.poll_store() {
            if s == shard {
                n.store.as_mut().unwrap().apply(&batch);
                n.s.handle_stored(n.now, s, batch.number);
                any = true;
            }
        }
        if !any {
            break;
        }
    }
}

/// A uid homed on one shard in a channel of another logs out: its home
/// stores the instance's removal and lets the reply out, the channel's
/// shard has not stored the member's removal when the process dies. The
/// restored channel must not keep a member whose instance is gone.
#[test]
fn a_logged_out_instance_is_not_a_member_after_a_crash_between_shards() {
    use hummer_channel::server::{channel_shard, uid_shard};
    let shards = 3;
    let owner = channel_shard(DEMO_APPID, cn(), "room", shards);
    let u = (1..100)
        .find(|&u| uid_shard(DEMO_APPID, u, shards) != owner)
        .unwrap();
    let home = uid_shard(DEMO_APPID, u, shards);
    let v = (1..100)
        .find(|&v| v != u && uid_shard(DEMO_APPID, v, shards) == owner)
        .unwrap();
    let mut n = Net::durable(ServerConfig::demo(), shards);
    let (a, _) = n.login(u);
    let (b, rb) = n.login(v);
    n.ok_join(a, "room");
    let room = n.ok_join(b, "room");
    n.advance(secs(1));
    n.clear(&[a, b]);
    n.store_paused = true;
    n.send(a, Body::Logout(wire::Empty {}));
    store_only(&mut n, home);
    n.pump();
    assert!(
        n.bodies(a).iter().any(|b| matches!(b, Body::Ok(_))),
        "the logout was answered"
    );
    n.crash_restart(secs(1), shards);
    let b2 = n.accept();
    let reply = login_reply(n.login_with(
        b2,
        resume_req(
            v,
            rb.instance_id,
            rb.p2p_epoch,
            0,
            vec![cursor("room", room.epoch, 0)],
        ),
    ));
    assert!(reply.resumed);
    // The instance of u is gone for good (its record was deleted): it
    // never resumes, and no grace period ends for it on the channel's shard.
    n.advance(secs(1));
    n.clear(&[b2]);
    match n.req(b2, Body::GetUserList(key("room"))) {
        Body::UserList(r) => assert_eq!(r.uids, [v], "uid {u} logged out but is still a member"),
        other => panic!("{other:?}"),
    }
}

/// `SetUserRegion` is answered Ok: the region is the instance's, and a
/// restart from the store must keep it.
#[test]
fn a_region_set_by_the_client_survives_a_restart() {
    let mut n = Net::durable(ServerConfig::demo(), 1);
    let (a, ra) = n.login(1);
    n.ok(
        a,
        Body::SetUserRegion(wire::SetUserRegionRequest {
            region: wire::Region::Us as i32,
        }),
    );
    n.crash_restart(secs(1), 1);
    let a2 = n.accept();
    let reply =
        login_reply(n.login_with(a2, resume_req(1, ra.instance_id, ra.p2p_epoch, 0, vec![])));
    assert!(reply.resumed);
    match n.req(a2, Body::GetInstanceInfo(wire::Empty {})) {
        Body::InstanceInfo(i) => assert_eq!(
            i.region,
            wire::Region::Us as i32,
            "the region the client set was lost"
        ),
        other => panic!("{other:?}"),
    }
}

/// The TCP runner answers a refused batch (`StoreError::Invalid`: Redis
/// applied its writes up to the one it refused, none after) by dropping
/// it and writing the whole state again (`handle_store_lost`). A rewrite
/// puts what exists; what was deleted in the dropped batch, or is waiting
/// in the next, must still be deleted, or it comes back at a restart.
#[test]
fn a_rewrite_after_a_refused_batch_still_deletes_what_is_gone() {
    let Scene {
        mut n, ra, a, rb, ..
    } = scene(1);
    let gone = StoreKey::Instance {
        appid: DEMO_APPID,
        uid: 1,
        instance: ra.instance_id,
    };
    assert!(n.store.as_ref().unwrap().keys().contains(&gone));
    n.store_paused = true;
    n.send(a, Body::Logout(wire::Empty {}));
    // The batch with the instance's Delete is refused and dropped.
    let (_, refused) = n.s.poll_store().expect("a batch");
    assert!(refused
        .writes
        .iter()
        .any(|w| matches!(w, hummer_channel::server::StoreWrite::Delete { key } if *key == gone)));
    n.s.handle_store_lost();
    n.store_paused = false;
    n.pump();
    assert!(
        !n.store.as_ref().unwrap().keys().contains(&gone),
        "the logged-out instance is still stored"
    );
    // And a restart does not bring it back.
    let restored = n.crash_restart(secs(1), 1);
    assert_eq!(restored.instances, 1, "{restored:?}");
    let _ = rb;
}

/// Messages that age out of an inbox (or a channel that lives on) leave
/// memory at the sweep; they must leave the store too, or Redis keeps the
/// whole retention of every idle stream for ever.
#[test]
fn aged_out_history_leaves_the_store_without_a_new_message() {
    let mut config = ServerConfig::demo();
    config.inbox_max_age = secs(60);
    config.channel_retention_age = secs(60);
    let mut n = Net::durable(config, 1);
    let (a, _) = n.login(1);
    n.ok_join(a, "room");
    for t in ["p1", "p2"] {
        n.sent(a, to_user(3, t));
    }
    n.sent(a, to_channel("room", "m1"));
    let inbox = StoreKey::Inbox {
        appid: DEMO_APPID,
        uid: 3,
    };
    let ch = StoreKey::Channel {
        appid: DEMO_APPID,
        region: cn(),
        id: "room".into(),
    };
    assert_eq!(n.store.as_ref().unwrap().entries(&inbox), [1, 2]);
    n.run_for(secs(120));
    let store = n.store.as_ref().unwrap();
    assert_eq!(
        store.entries(&inbox),
        [0u64; 0],
        "aged-out inbox entries stay"
    );
    assert_eq!(
        store.entries(&ch),
        [0u64; 0],
        "aged-out channel entries stay"
    );
    // Nothing changes for a restart: the heads are kept.
    n.crash_restart(secs(1), 1);
    let (c, rc) = n.login(3);
    assert_eq!(rc.p2p_seq, 2, "{rc:?}");
    let _ = c;
}

/// `channels::a_burst_of_rejoins_after_a_fresh_login_never_closes_the_link_as_a_slow_consumer`
/// with a store and three shards: each channel shard holds its replay for
/// the store, where neither the gateway nor the other shards see it; the
/// gateway counts each replay not answered yet as half the queue, so the
/// replays together stay within it. (Before, they overran it and the link
/// was closed as a slow consumer.)
#[test]
fn rejoins_on_several_shards_do_not_close_the_link_while_frames_wait_for_the_store() {
    crate::channels::burst_of_rejoins(|c| Net::durable(c, 3));
}

/// Every rejoin on a shard that is not the link's home, two shards each
/// holding theirs for the store: neither sees the other's replays, nor the
/// gateway either until both are stored; the gateway's count of the
/// replays not answered yet keeps them within the link's queue together.
#[test]
fn rejoins_held_on_two_other_shards_stay_within_the_queue_together() {
    use hummer_channel::server::{channel_shard, uid_shard};
    let home = uid_shard(DEMO_APPID, 2, 3);
    let mut by_shard: Vec<Vec<String>> = vec![Vec::new(); 3];
    for i in 0.. {
        let id = format!("r{i}");
        let s = channel_shard(DEMO_APPID, cn(), &id, 3);
        if s != home && by_shard[usize::from(s.0)].len() < 2 {
            by_shard[usize::from(s.0)].push(id);
        }
        if by_shard.iter().map(Vec::len).sum::<usize>() == 4 {
            break;
        }
    }
    // Alternating shards: each shard's second replay sees its first.
    let (x, y): (Vec<_>, Vec<_>) = by_shard
        .into_iter()
        .filter(|v| !v.is_empty())
        .map(|v| (v[0].clone(), v[1].clone()))
        .unzip();
    let channels = vec![x[0].clone(), x[1].clone(), y[0].clone(), y[1].clone()];
    let (mut n, c) = crate::channels::burst_of_rejoins_to(|c| Net::durable(c, 3), channels);
    // Each replay counted ended with its answer: a fetch now replays up
    // to half the queue again (the history holds 1.2 MB).
    let f = n.fetched(c, fetch(Some(&x[0]), 0));
    let got: usize = n.raw_frames(c).iter().map(|(b, _)| b.len()).sum();
    assert!(f.more, "{f:?}");
    let half = crate::channels::burst_config().max_queued_bytes / 2;
    assert!(got > half * 9 / 10 && got <= half, "{got} bytes fetched");
}

/// With one shard, the frames it holds for the store count in a replay's
/// budget (what `HUMMER_TEST_DURABLE=1` also checks of the whole suite).
#[test]
fn rejoins_do_not_close_the_link_while_frames_wait_for_the_store() {
    crate::channels::burst_of_rejoins(|c| Net::durable(c, 1));
}

/// `Server::api` answers at once; with a store the answer may show what a
/// crash undoes until `Server::is_stored` holds: an embedder waits for it
/// (the TCP runner does, `tests/server_api.rs`). Here the answer is passed
/// on too early on purpose, and a crash gives its seq to another message.
#[test]
fn a_server_api_answer_is_stored_only_once_is_stored_says_so() {
    use hummer_channel::server::{ApiCall, ApiReply, ApiRequest};
    use hummer_channel::types::{ChannelKey, Message, Region};
    let mut n = Net::durable(ServerConfig::demo(), 1);
    let (a, ra) = n.login(1);
    let room = n.ok_join(a, "room");
    n.store_paused = true;
    let publish = ApiCall {
        appid: DEMO_APPID,
        request: ApiRequest::Publish {
            channel: ChannelKey::new(Region::Cn, "room"),
            from_uid: 0,
            message_id: 1,
            message: Message::new("text", b"lost".to_vec()),
            unreliable: false,
        },
    };
    let Ok(ApiReply::Sent(answered)) = n.s.api(n.now, publish) else {
        panic!("a publish is answered");
    };
    assert!(!n.s.is_stored(), "the answer's message is not stored yet");
    n.crash_restart(secs(1), 1);
    let a2 = n.accept();
    let r = login_reply(n.login_with(
        a2,
        resume_req(
            1,
            ra.instance_id,
            ra.p2p_epoch,
            0,
            vec![cursor("room", room.epoch, 0)],
        ),
    ));
    assert!(r.resumed);
    assert_eq!(n.sent(a2, to_channel("room", "next")).seq, answered.seq);
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
    let (a2, ra2) = resume_in_room(&mut n, 1, &ra, &room, 4);
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

/// A batch stored while a later one (with a delete) is still in flight:
/// the later one's delete is kept for a rewrite, the stored one's is not
/// needed.
#[test]
fn a_rewrite_keeps_the_deletes_of_batches_after_the_last_stored() {
    use hummer_channel::server::StoreWrite;
    let Scene { mut n, ra, a, .. } = scene(1);
    let gone = StoreKey::Instance {
        appid: DEMO_APPID,
        uid: 1,
        instance: ra.instance_id,
    };
    n.store_paused = true;
    // Batch A: a change with no delete (uid 3 logs in; its reply waits).
    let c = n.accept();
    n.send(c, Body::Login(login_req(3)));
    let (shard, first) = n.s.poll_store().expect("batch A");
    // Batch B: the logout's delete, in flight.
    n.send(a, Body::Logout(wire::Empty {}));
    let (_, second) = n.s.poll_store().expect("batch B");
    assert!(second.number > first.number);
    assert!(second
        .writes
        .iter()
        .any(|w| matches!(w, StoreWrite::Delete { key } if *key == gone)));
    // A is stored, B is lost with the store.
    n.store.as_mut().unwrap().apply(&first);
    n.s.handle_stored(n.now, shard, first.number);
    n.s.handle_store_lost();
    n.store_paused = false;
    n.pump();
    assert!(
        !n.store.as_ref().unwrap().keys().contains(&gone),
        "the rewrite forgot the delete of the batch in flight"
    );
}

/// A uid's instances come back in their login order: the oldest
/// disconnected one is the one a login past the per-uid bound drops.
#[test]
fn instances_come_back_in_their_login_order() {
    let mut config = ServerConfig::demo();
    config.max_instances_per_uid = 2;
    let mut n = Net::durable(config, 1);
    let (_, old) = n.login(1);
    let (_, new) = n.login(1);
    n.crash_restart(secs(1), 1);
    // Both are disconnected: a third login drops the older.
    n.login(1);
    let again = |n: &mut Net, r: &wire::LoginReply| {
        let c = n.accept();
        login_reply(n.login_with(c, resume_req(1, r.instance_id, r.p2p_epoch, 0, vec![])))
    };
    assert!(
        again(&mut n, &new).resumed,
        "the newer instance was dropped"
    );
    // The older is gone: its resume is a fresh login, refused since both
    // live instances are connected (a kept one would have been resumed).
    let c = n.accept();
    let refused = n.login_with(c, resume_req(1, old.instance_id, old.p2p_epoch, 0, vec![]));
    assert_eq!(code(refused), 2012);
}

/// A delete not yet in any batch when the store is lost is in the rewrite.
#[test]
fn a_rewrite_keeps_the_deletes_not_yet_in_a_batch() {
    let Scene { mut n, ra, a, .. } = scene(1);
    let gone = StoreKey::Instance {
        appid: DEMO_APPID,
        uid: 1,
        instance: ra.instance_id,
    };
    n.store_paused = true;
    n.send(a, Body::Logout(wire::Empty {}));
    n.s.handle_store_lost();
    n.store_paused = false;
    n.pump();
    assert!(
        !n.store.as_ref().unwrap().keys().contains(&gone),
        "the rewrite forgot a pending delete"
    );
}

/// A busy stream: retention evicted a message before its send's dedupe
/// window ended, and the server restarted. The re-send is still answered
/// as the first: the send's record moved to the channel's sends object in
/// the batch that trimmed the message.
#[test]
fn a_re_send_after_retention_evicted_its_message_and_a_restart_delivers_nothing() {
    let mut config = ServerConfig::demo();
    config.channel_retention_messages = 2;
    let mut n = Net::durable(config, 3);
    let (a, ra) = n.login(1);
    let (b, rb) = n.login(2);
    let room = n.ok_join(a, "room");
    n.ok_join(b, "room");
    let first = n.sent(a, to_channel_id("room", "once", false, 4242));
    let ch = StoreKey::Channel {
        appid: DEMO_APPID,
        region: cn(),
        id: "room".into(),
    };
    let sends = StoreKey::Sends {
        of: Box::new(ch.clone()),
    };
    // Retained: its record is with it, the sends object is not needed.
    assert!(!n.store.as_ref().unwrap().keys().contains(&sends));
    for t in ["m2", "m3"] {
        n.sent(b, to_channel("room", t));
    }
    let store = n.store.as_ref().unwrap();
    assert_eq!(store.entries(&ch), [first.seq + 1, first.seq + 2]);
    assert_eq!(store.entries(&sends), [first.seq]);
    n.clear(&[a, b]);
    let restored = n.crash_restart(secs(2), 3);
    assert!(restored.sends >= 3, "{restored:?}");
    let head = first.seq + 2;
    let (b2, _) = resume_b(&mut n, &rb, &room, head);
    let (a2, ra2) = resume_in_room(&mut n, 1, &ra, &room, head);
    assert!(ra2.resumed);
    n.clear(&[a2, b2]);
    let again = n.sent(a2, to_channel_id("room", "once", false, 4242));
    assert_eq!(again, first);
    assert!(channel_msgs(&n.bodies(b2)).is_empty(), "delivered twice");
    assert_eq!(n.sent(a2, to_channel("room", "next")).seq, head + 1);
}

/// The same for a P2P inbox, after the store lost everything and was
/// written again (the sends object with it) and then a restart.
#[test]
fn a_p2p_re_send_after_an_eviction_a_store_loss_and_a_restart_delivers_nothing() {
    let mut config = ServerConfig::demo();
    config.inbox_max_messages = 1;
    let mut n = Net::durable(config, 2);
    let (a, ra) = n.login(1);
    let first = n.sent(a, to_user_id(3, "once", false, 77));
    n.sent(a, to_user(3, "evicts it"));
    let inbox = StoreKey::Inbox {
        appid: DEMO_APPID,
        uid: 3,
    };
    let sends = StoreKey::Sends {
        of: Box::new(inbox.clone()),
    };
    assert_eq!(n.store.as_ref().unwrap().entries(&sends), [first.seq]);
    let before = n.store.as_ref().unwrap().keys();
    n.store = Some(Default::default());
    n.s.handle_store_lost();
    n.pump();
    let store = n.store.as_ref().unwrap();
    assert_eq!(store.keys(), before);
    assert_eq!(store.entries(&inbox), [first.seq + 1]);
    assert_eq!(store.entries(&sends), [first.seq]);
    n.crash_restart(secs(1), 2);
    let a2 = n.accept();
    let reply =
        login_reply(n.login_with(a2, resume_req(1, ra.instance_id, ra.p2p_epoch, 0, vec![])));
    assert!(reply.resumed);
    assert_eq!(n.sent(a2, to_user_id(3, "once", false, 77)), first);
    // Nothing new in the inbox: the re-send delivered nothing.
    assert_eq!(n.store.as_ref().unwrap().entries(&inbox), [first.seq + 1]);
}

/// A send's record leaves the sends object when its dedupe window ends,
/// and the sends object goes with its channel.
#[test]
fn the_sends_object_keeps_records_for_the_window_and_goes_with_its_channel() {
    let mut config = ServerConfig::demo();
    config.channel_retention_messages = 1;
    config.channel_retention_age = secs(200);
    config.sweep_interval = secs(1);
    let window = config.send_dedupe_window;
    let mut n = Net::durable(config, 1);
    let (a, _) = n.login(1);
    n.ok_join(a, "room");
    let s1 = n.sent(a, to_channel("room", "m1"));
    n.advance(secs(10));
    let s2 = n.sent(a, to_channel("room", "m2"));
    n.sent(a, to_channel("room", "m3"));
    let ch = StoreKey::Channel {
        appid: DEMO_APPID,
        region: cn(),
        id: "room".into(),
    };
    let sends = StoreKey::Sends {
        of: Box::new(ch.clone()),
    };
    assert_eq!(n.store.as_ref().unwrap().entries(&sends), [s1.seq, s2.seq]);
    // Empty, the channel is kept while its history is (200 s).
    n.ok(a, leave("room"));
    // m1's window ends (the next sweep sees it): its record goes, m2's
    // stays.
    n.advance(window - secs(9));
    assert_eq!(n.store.as_ref().unwrap().entries(&sends), [s2.seq]);
    n.advance(secs(10));
    assert_eq!(n.store.as_ref().unwrap().entries(&sends), Vec::<u64>::new());
    assert!(n.store.as_ref().unwrap().keys().contains(&sends));
    // The channel is forgotten once aged out: its sends object too.
    n.advance(secs(80));
    let keys = n.store.as_ref().unwrap().keys();
    assert!(!keys.contains(&ch) && !keys.contains(&sends), "{keys:?}");
}

/// Found by a second reader: a busy channel at the default configuration
/// (retention 1,024 messages, as many as `send_dedupe_max`). uid 1 sends
/// once; uid 2's next 1,024 messages (within 103 s, inside the 120 s
/// window) evict it. The in-memory dedupe keeps 1,024 ids per sender, so
/// before a restart the re-send is answered as the first; a bound per
/// stream dropped the record as the message went, and after a restart the
/// re-send was delivered again. The bound is per sender now.
#[test]
fn a_re_send_to_a_busy_channel_at_default_retention_after_a_restart_delivers_nothing() {
    let mut n = Net::durable(ServerConfig::demo(), 1);
    let (a, ra) = n.login(1);
    let (b, rb) = n.login(2);
    let room = n.ok_join(a, "room");
    n.ok_join(b, "room");
    let first = n.sent(a, to_channel_id("room", "once", false, 4242));
    let mut head = first.seq;
    for i in 0..1024 {
        n.advance(Duration::from_millis(100));
        head = n.sent(b, to_channel("room", &format!("m{i}"))).seq;
        if i % 50 == 0 {
            n.ping_keepalive(a);
        }
        n.clear(&[a, b]);
    }
    // Control: without a restart the re-send delivers nothing.
    assert_eq!(n.sent(a, to_channel_id("room", "once", false, 4242)), first);
    n.clear(&[a, b]);
    n.crash_restart(secs(1), 1);
    let (b2, _) = resume_b(&mut n, &rb, &room, head);
    let (a2, ra2) = resume_in_room(&mut n, 1, &ra, &room, head);
    assert!(ra2.resumed);
    n.clear(&[a2, b2]);
    let again = n.sent(a2, to_channel_id("room", "once", false, 4242));
    assert_eq!(
        again, first,
        "the re-send after the restart was delivered again"
    );
}

/// Sends retained at a crash, evicted after the restart (on another number
/// of shards), and re-sent after a second restart: the restored stream
/// moves their records as it evicts them.
#[test]
fn sends_retained_at_a_crash_and_evicted_after_it_are_still_deduped() {
    let mut config = ServerConfig::demo();
    config.channel_retention_messages = 3;
    let mut n = Net::durable(config, 1);
    let (a, ra) = n.login(1);
    let (b, rb) = n.login(2);
    let room = n.ok_join(a, "room");
    n.ok_join(b, "room");
    // Evicted before the crash: in the sends object.
    let s1 = n.sent(a, to_channel_id("room", "one", false, 501));
    let s2 = n.sent(a, to_channel_id("room", "two", false, 502));
    for t in ["x", "y"] {
        n.sent(b, to_channel("room", t));
    }
    let s3 = n.sent(a, to_channel_id("room", "three", false, 503));
    n.clear(&[a, b]);
    let ch = StoreKey::Channel {
        appid: DEMO_APPID,
        region: cn(),
        id: "room".into(),
    };
    let sends = StoreKey::Sends {
        of: Box::new(ch.clone()),
    };
    assert_eq!(n.store.as_ref().unwrap().entries(&sends), [s1.seq, s2.seq]);
    n.crash_restart(secs(1), 3);
    let mut head = s3.seq;
    let (b2, _) = resume_b(&mut n, &rb, &room, head);
    // After the restart, b's sends evict x, y and a's "three" (whose record
    // came back from the stream's entries).
    for t in ["p", "q", "r"] {
        head = n.sent(b2, to_channel("room", t)).seq;
    }
    assert_eq!(
        n.store.as_ref().unwrap().entries(&sends),
        (1..=s3.seq).collect::<Vec<_>>()
    );
    n.crash_restart(secs(1), 2);
    let (a2, ra2) = resume_in_room(&mut n, 1, &ra, &room, head);
    assert!(ra2.resumed);
    assert_eq!(n.sent(a2, to_channel_id("room", "three", false, 503)), s3);
    assert_eq!(n.sent(a2, to_channel_id("room", "one", false, 501)), s1);
}

/// A retained message's re-send after a store loss (the rewrite keeps the
/// records with the messages) and a restart delivers nothing.
#[test]
fn a_retained_messages_re_send_after_a_store_loss_and_a_restart_delivers_nothing() {
    let mut n = Net::durable(ServerConfig::demo(), 1);
    let (a, ra) = n.login(1);
    let first = n.sent(a, to_user_id(3, "kept", false, 88));
    n.store = Some(Default::default());
    n.s.handle_store_lost();
    n.pump();
    n.crash_restart(secs(1), 1);
    let a2 = n.accept();
    let reply =
        login_reply(n.login_with(a2, resume_req(1, ra.instance_id, ra.p2p_epoch, 0, vec![])));
    assert!(reply.resumed);
    assert_eq!(n.sent(a2, to_user_id(3, "kept", false, 88)), first);
}

/// A send's record past its dedupe window is not restored: a re-send after
/// it is a new send, as without a restart.
#[test]
fn records_past_the_dedupe_window_are_not_restored() {
    let config = ServerConfig::demo();
    let window = config.send_dedupe_window;
    let mut n = Net::durable(config, 1);
    let (a, ra) = n.login(1);
    let first = n.sent(a, to_user_id(3, "old", false, 77));
    let restored = n.crash_restart(window + secs(1), 1);
    assert_eq!((restored.messages, restored.sends), (1, 0), "{restored:?}");
    let a2 = n.accept();
    let reply =
        login_reply(n.login_with(a2, resume_req(1, ra.instance_id, ra.p2p_epoch, 0, vec![])));
    assert!(reply.resumed);
    assert_eq!(
        n.sent(a2, to_user_id(3, "old", false, 77)).seq,
        first.seq + 1
    );
}

/// An inbox's sends retained at a crash and evicted after the restart: the
/// restored inbox moves their records as it evicts them, so a re-send
/// after a second restart delivers nothing.
#[test]
fn an_inboxs_sends_retained_at_a_crash_and_evicted_after_it_are_still_deduped() {
    let mut config = ServerConfig::demo();
    config.inbox_max_messages = 2;
    let mut n = Net::durable(config, 2);
    let (a, ra) = n.login(1);
    let first = n.sent(a, to_user_id(3, "one", false, 61));
    n.crash_restart(secs(1), 2);
    let (b, _) = n.login(2);
    for t in ["x", "y"] {
        n.sent(b, to_user(3, t));
    }
    let inbox = StoreKey::Inbox {
        appid: DEMO_APPID,
        uid: 3,
    };
    let sends = StoreKey::Sends {
        of: Box::new(inbox.clone()),
    };
    assert_eq!(n.store.as_ref().unwrap().entries(&sends), [first.seq]);
    n.crash_restart(secs(1), 2);
    let a2 = n.accept();
    let reply =
        login_reply(n.login_with(a2, resume_req(1, ra.instance_id, ra.p2p_epoch, 0, vec![])));
    assert!(reply.resumed);
    assert_eq!(n.sent(a2, to_user_id(3, "one", false, 61)), first);
}

/// A server API publish to a channel on another shard than its sender's
/// (uid 0) home: the channel's shard answers its re-send, and remembers it
/// across a restart too.
#[test]
fn a_server_api_re_send_after_a_restart_is_answered_as_the_first() {
    use hummer_channel::server::{channel_shard, uid_shard, ApiCall, ApiRequest};
    use hummer_channel::types::{ChannelKey, Message, Region};
    let shards = 3;
    let home = uid_shard(DEMO_APPID, 0, shards);
    let id = (0..)
        .map(|n| format!("room{n}"))
        .find(|id| channel_shard(DEMO_APPID, cn(), id, shards) != home)
        .unwrap();
    let mut n = Net::durable(ServerConfig::demo(), shards);
    let (a, _) = n.login(1);
    n.ok_join(a, &id);
    let publish = |n: &mut Net| {
        let call = ApiCall {
            appid: DEMO_APPID,
            request: ApiRequest::Publish {
                channel: ChannelKey::new(Region::Cn, id.as_str()),
                from_uid: 0,
                message_id: 91,
                message: Message::new("text", b"once".to_vec()),
                unreliable: false,
            },
        };
        let answer = n.s.api(n.now, call).map_err(|e| e.code);
        n.pump();
        answer
    };
    let first = publish(&mut n).unwrap();
    n.crash_restart(secs(1), shards);
    assert_eq!(publish(&mut n).unwrap(), first);
}
