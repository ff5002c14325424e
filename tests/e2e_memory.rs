//! Real Sessions against the real Server over the simulated network: every
//! operation and event end to end, auth failures, several instances of one
//! uid, the grace period, offline messages, resume without loss or duplicates,
//! and the v2 promises in focused schedules: one loss per stream after a
//! restart, a send in flight across a lost link completed once, a resume
//! that replays only what is missing (checked on the wire with the tap); a
//! node's death on a server of three gateways (`Sim::kill_node`).

use std::time::Duration;

use hummer_channel::client::{
    AttributeOptions, ChannelHandle, ConnectionReason as R, ConnectionState as S, Event,
    LostStream, Reply, RequestId, SendOptions, Session, SessionConfig,
};
use hummer_channel::server::{mint_token, AppConfig, ServerConfig, DEMO_APPID, DEMO_SECRET};
use hummer_channel::sim::{ClientId, Direction, MemoryStore, Sim, SimConfig};
use hummer_channel::wire::{self, Body};
use hummer_channel::{Attributes, CommandError, ErrorCode, Message, Region, ServiceError, Uid};

const UNIX_S: u64 = 1_700_000_000;

/// An app secret of the 32 bytes a server requires.
const SECRET: &str = "e2e-test-secret-of-32-bytes-or-more";

fn sim(seed: u64) -> Sim {
    Sim::new(SimConfig::new(seed, ServerConfig::demo()))
}

/// Runs `cmd` and the network until its completion arrives (at most 30 s).
fn call(
    sim: &mut Sim,
    c: ClientId,
    cmd: impl FnOnce(&mut Session, std::time::Instant) -> Result<RequestId, CommandError>,
) -> Result<Reply, ServiceError> {
    let id = sim.command(c, cmd).expect("command accepted");
    for _ in 0..3000 {
        if let Some(r) = sim.take_completion(c, id) {
            return r;
        }
        sim.run_for(Duration::from_millis(10));
    }
    panic!("no completion for {id:?}");
}

fn ok(
    sim: &mut Sim,
    c: ClientId,
    cmd: impl FnOnce(&mut Session, std::time::Instant) -> Result<RequestId, CommandError>,
) -> Reply {
    call(sim, c, cmd).expect("success")
}

fn login(sim: &mut Sim, uid: u64) -> ClientId {
    let c = sim.add_client(SessionConfig::new(DEMO_APPID));
    let r = ok(sim, c, |s, now| {
        s.login(now, Uid(uid), None, Some(Region::Cn))
    });
    assert!(matches!(r, Reply::Login(_)));
    c
}

fn join(sim: &mut Sim, c: ClientId, id: &str) -> ChannelHandle {
    let ch = sim
        .command(c, |s, _| s.create_channel(Region::Cn, id))
        .unwrap();
    assert_eq!(
        ok(sim, c, |s, now| s.join_channel(now, ch, Attributes::new())),
        Reply::Done
    );
    ch
}

fn texts(events: &[Event]) -> Vec<String> {
    let text = |m: &Message| String::from_utf8_lossy(&m.content).into_owned();
    events.iter().filter_map(Event::message).map(text).collect()
}

fn attrs(pairs: &[(&str, &str)]) -> Attributes {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn msg(text: &str) -> Message {
    Message::new("text", text.to_string())
}

#[test]
fn the_whole_access_flow_end_to_end() {
    let mut sim = sim(1);
    let alice = login(&mut sim, 1);
    let bob = login(&mut sim, 2);
    assert_eq!(
        ok(&mut sim, alice, |s, now| s.set_user_region(now, Region::Us)),
        Reply::Done
    );

    // P2P: send, receive, online status.
    let r = ok(&mut sim, alice, |s, now| {
        s.send_message_to_user(now, Uid(2), msg("hi bob"), SendOptions::default())
    });
    assert!(matches!(r, Reply::MessageSent(m) if m.delivered_online));
    sim.run_for(Duration::from_millis(100));
    let ev = sim.take_events(bob);
    assert!(ev.iter().any(|e| matches!(e, Event::MessageFromUser { from_uid: Uid(1), message, .. } if message.content == "hi bob")));
    let r = ok(&mut sim, alice, |s, now| {
        s.query_users_online_status(now, &[Uid(2), Uid(3)])
    });
    assert_eq!(
        r,
        Reply::OnlineStatus([(Uid(2), true), (Uid(3), false)].into())
    );

    // Channels: join, notices, broadcast with echo.
    let ca = join(&mut sim, alice, "lobby");
    sim.take_events(alice);
    let cb = join(&mut sim, bob, "lobby");
    sim.run_for(Duration::from_millis(500));
    let ev = sim.take_events(alice);
    assert!(
        ev.contains(&Event::NotifyJoinChannel {
            channel: ca,
            uids: vec![Uid(2)]
        }),
        "{ev:?}"
    );
    assert!(
        ev.contains(&Event::NotifyUserCountChange {
            channel: ca,
            count: 2
        }),
        "{ev:?}"
    );
    ok(&mut sim, alice, |s, now| {
        s.send_message_to_channel(now, ca, msg("hello all"), SendOptions::default())
    });
    sim.run_for(Duration::from_millis(100));
    assert_eq!(
        texts(&sim.take_events(alice)),
        vec!["hello all"],
        "the sender gets its echo"
    );
    assert_eq!(texts(&sim.take_events(bob)), vec!["hello all"]);

    // User attributes, with notifications (the default).
    ok(&mut sim, bob, |s, now| {
        s.set_local_user_attributes(
            now,
            cb,
            attrs(&[("role", "guest"), ("mic", "on")]),
            AttributeOptions::default(),
        )
    });
    ok(&mut sim, bob, |s, now| {
        s.delete_local_user_attributes_by_keys(
            now,
            cb,
            vec!["mic".into()],
            AttributeOptions::default(),
        )
    });
    ok(&mut sim, bob, |s, now| {
        s.add_or_update_local_user_attributes(
            now,
            cb,
            attrs(&[("cam", "off")]),
            AttributeOptions::default(),
        )
    });
    sim.run_for(Duration::from_millis(100));
    let ev = sim.take_events(alice);
    assert!(ev.iter().any(|e| matches!(e, Event::NotifyUserAttributesSet { uid: Uid(2), attributes, .. } if *attributes == attrs(&[("role", "guest"), ("mic", "on")]))), "{ev:?}");
    assert!(ev.iter().any(|e| matches!(e, Event::NotifyUserAttributesDelete { uid: Uid(2), keys, .. } if keys == &vec!["mic".to_string()])), "{ev:?}");
    assert!(ev.iter().any(|e| matches!(e, Event::NotifyUserAttributesAddOrUpdate { uid: Uid(2), attributes, .. } if *attributes == attrs(&[("cam", "off")]))), "{ev:?}");

    // Reads.
    let Reply::UserList(list) = ok(&mut sim, alice, |s, now| s.get_channel_user_list(now, ca))
    else {
        panic!()
    };
    assert_eq!(
        (list.appid, list.channel_id.as_str(), list.users),
        (DEMO_APPID, "lobby", vec![Uid(1), Uid(2)])
    );
    let Reply::Attributes(a) = ok(&mut sim, alice, |s, now| {
        s.get_user_attributes(now, ca, Uid(2))
    }) else {
        panic!()
    };
    assert_eq!(a.attributes, attrs(&[("cam", "off"), ("role", "guest")]));
    let Reply::Attributes(a) = ok(&mut sim, alice, |s, now| {
        s.get_user_attributes_by_keys(now, ca, Uid(2), vec!["role".into(), "nope".into()])
    }) else {
        panic!()
    };
    assert_eq!(a.attributes, attrs(&[("role", "guest")]));
    let Reply::UserList(by) = ok(&mut sim, alice, |s, now| {
        s.get_channel_user_list_by_attribute(now, ca, "role".into(), "guest".into())
    }) else {
        panic!()
    };
    assert_eq!(by.users, vec![Uid(2)]);
    let Reply::UserCount(count) = ok(&mut sim, alice, |s, now| {
        s.get_channel_user_count(now, ca, vec!["lobby".into(), "empty".into()])
    }) else {
        panic!()
    };
    assert_eq!(
        count.user_count,
        [("lobby".to_string(), 2), ("empty".to_string(), 0)].into()
    );

    // Channel attributes.
    ok(&mut sim, alice, |s, now| {
        s.set_channel_attributes(
            now,
            ca,
            attrs(&[("topic", "rust"), ("lang", "en")]),
            AttributeOptions::default(),
        )
    });
    ok(&mut sim, alice, |s, now| {
        s.add_or_update_channel_attributes(
            now,
            ca,
            attrs(&[("lang", "zh")]),
            AttributeOptions::default(),
        )
    });
    ok(&mut sim, alice, |s, now| {
        s.delete_channel_attributes_by_keys(
            now,
            ca,
            vec!["topic".into()],
            AttributeOptions::default(),
        )
    });
    let Reply::Attributes(a) = ok(&mut sim, bob, |s, now| s.get_channel_attributes(now, cb)) else {
        panic!()
    };
    assert_eq!(
        (a.attributes, a.last_update_uid),
        (attrs(&[("lang", "zh")]), Some(Uid(1)))
    );
    assert!(a.last_update_ts >= 1_700_000_000_000);
    let Reply::Attributes(a) = ok(&mut sim, bob, |s, now| {
        s.get_channel_attributes_by_keys(now, cb, vec!["lang".into()])
    }) else {
        panic!()
    };
    assert_eq!(a.attributes, attrs(&[("lang", "zh")]));
    ok(&mut sim, alice, |s, now| {
        s.clear_channel_attributes(now, ca, AttributeOptions::default())
    });
    ok(&mut sim, bob, |s, now| {
        s.clear_local_user_attributes(now, cb, AttributeOptions::default())
    });
    sim.run_for(Duration::from_millis(100));
    let ev = sim.take_events(bob);
    for want in ["set", "add", "del", "clear"] {
        assert!(
            ev.iter().any(|e| match (want, e) {
                (
                    "set",
                    Event::NotifyChannelAttributesSet {
                        last_update_uid: Uid(1),
                        ..
                    },
                ) => true,
                ("add", Event::NotifyChannelAttributesAddOrUpdate { attributes, .. }) =>
                    *attributes == attrs(&[("lang", "zh")]),
                ("del", Event::NotifyChannelAttributesDelete { keys, .. }) =>
                    keys == &vec!["topic".to_string()],
                ("clear", Event::NotifyChannelAttributesClear { .. }) => true,
                _ => false,
            }),
            "{want} in {ev:?}"
        );
    }
    assert!(sim
        .take_events(alice)
        .iter()
        .any(|e| matches!(e, Event::NotifyUserAttributesClear { uid: Uid(2), .. })));

    // Leave: notices and count; bob's attributes are gone.
    ok(&mut sim, bob, |s, now| {
        s.add_or_update_local_user_attributes(
            now,
            cb,
            attrs(&[("x", "1")]),
            AttributeOptions::default(),
        )
    });
    assert_eq!(
        ok(&mut sim, bob, |s, now| s.leave_channel(
            now,
            cb,
            Attributes::new()
        )),
        Reply::Done
    );
    sim.run_for(Duration::from_millis(500));
    let ev = sim.take_events(alice);
    assert!(
        ev.contains(&Event::NotifyLeaveChannel {
            channel: ca,
            uids: vec![Uid(2)]
        }),
        "{ev:?}"
    );
    assert!(
        ev.contains(&Event::NotifyUserCountChange {
            channel: ca,
            count: 1
        }),
        "{ev:?}"
    );
    let e = call(&mut sim, alice, |s, now| {
        s.get_user_attributes(now, ca, Uid(2))
    })
    .unwrap_err();
    assert_eq!(e.code, ErrorCode::RESOURCE_NOT_FOUND);

    // Instance level: info, refresh token, logout.
    let Reply::InstanceInfo(info) = ok(&mut sim, alice, |s, now| s.get_instance_info(now)) else {
        panic!()
    };
    assert_eq!(
        (info.appid, info.uid, info.is_anonymous),
        (DEMO_APPID, Uid(1), true)
    );
    assert_eq!(info.region, Some(Region::Us));
    assert_eq!(
        info.channels,
        vec![hummer_channel::ChannelKey::new(Region::Cn, "lobby")]
    );
    let token = mint_token(DEMO_SECRET, DEMO_APPID, 1, UNIX_S + 3600);
    assert_eq!(
        ok(&mut sim, alice, |s, now| s.refresh_token(now, token)),
        Reply::Done
    );
    let bad = mint_token("wrong", DEMO_APPID, 1, UNIX_S + 3600);
    assert_eq!(
        call(&mut sim, alice, |s, now| s.refresh_token(now, bad))
            .unwrap_err()
            .code,
        ErrorCode::INVALID_TOKEN
    );
    assert_eq!(ok(&mut sim, alice, |s, now| s.logout(now)), Reply::Done);
    assert_eq!(
        sim.session(alice).connection_state(),
        (S::Disconnected, R::Logout)
    );
    let r = ok(&mut sim, bob, |s, now| {
        s.query_users_online_status(now, &[Uid(1)])
    });
    assert_eq!(r, Reply::OnlineStatus([(Uid(1), false)].into()));
}

#[test]
fn notifications_follow_enable_notification() {
    let mut sim = sim(2);
    let alice = login(&mut sim, 1);
    let bob = login(&mut sim, 2);
    let ca = join(&mut sim, alice, "room");
    let _cb = join(&mut sim, bob, "room");
    sim.run_for(Duration::from_millis(500));
    sim.take_events(bob);
    let quiet = {
        let mut cfg = AttributeOptions::default();
        cfg.enable_notification = false;
        cfg
    };
    ok(&mut sim, alice, |s, now| {
        s.set_local_user_attributes(now, ca, attrs(&[("a", "1")]), quiet)
    });
    ok(&mut sim, alice, |s, now| {
        s.set_channel_attributes(now, ca, attrs(&[("b", "2")]), quiet)
    });
    sim.run_for(Duration::from_millis(200));
    let ev = sim.take_events(bob);
    assert!(
        !ev.iter().any(|e| format!("{e:?}").starts_with("Notify")),
        "{ev:?}"
    );
    ok(&mut sim, alice, |s, now| {
        s.add_or_update_local_user_attributes(
            now,
            ca,
            attrs(&[("a", "3")]),
            AttributeOptions::default(),
        )
    });
    sim.run_for(Duration::from_millis(200));
    assert!(sim
        .take_events(bob)
        .iter()
        .any(|e| matches!(e, Event::NotifyUserAttributesAddOrUpdate { .. })));
}

#[test]
fn token_logins_and_their_failures() {
    let mut config = ServerConfig::default();
    config.apps.push(AppConfig::with_secret(42, SECRET));
    let mut sim = Sim::new(SimConfig::new(3, config));
    let try_login = |sim: &mut Sim, appid: u32, token: Option<String>| {
        let c = sim.add_client(SessionConfig::new(appid));
        let r = call(sim, c, |s, now| s.login(now, Uid(5), token, None));
        (c, r)
    };
    let (c, r) = try_login(&mut sim, 42, Some(mint_token(SECRET, 42, 5, UNIX_S + 3600)));
    let Ok(Reply::Login(info)) = r else {
        panic!("{r:?}")
    };
    assert_eq!(info.token_expires_at_ms, Some((UNIX_S + 3600) * 1000));
    assert!(!info.is_anonymous);
    assert_eq!(
        sim.session(c).connection_state(),
        (S::Connected, R::LoginSuccess)
    );
    for (appid, token, code) in [
        (
            42,
            Some(mint_token("other", 42, 5, UNIX_S + 3600)),
            ErrorCode::INVALID_TOKEN,
        ),
        (
            42,
            Some(mint_token(SECRET, 42, 6, UNIX_S + 3600)),
            ErrorCode::INVALID_TOKEN,
        ),
        (
            42,
            Some(mint_token(SECRET, 43, 5, UNIX_S + 3600)),
            ErrorCode::INVALID_TOKEN,
        ),
        (42, Some("garbage".to_string()), ErrorCode::INVALID_TOKEN),
        (
            42,
            Some(mint_token(SECRET, 42, 5, UNIX_S - 10)),
            ErrorCode::EXPIRED_TOKEN,
        ),
        (42, None, ErrorCode::INVALID_TOKEN),
        (77, None, ErrorCode::APPID_UNAVAILABLE),
    ] {
        let (c, r) = try_login(&mut sim, appid, token);
        assert_eq!(r.unwrap_err().code, code);
        assert_eq!(
            sim.session(c).connection_state(),
            (S::Disconnected, R::LoginFailure)
        );
    }
}

#[test]
fn token_will_expire_then_refresh() {
    let mut sim = sim(4);
    let c = sim.add_client(SessionConfig::new(DEMO_APPID));
    let token = mint_token(DEMO_SECRET, DEMO_APPID, 9, UNIX_S + 60);
    ok(&mut sim, c, |s, now| {
        s.login(now, Uid(9), Some(token), None)
    });
    sim.run_for(Duration::from_secs(25));
    assert!(!sim
        .take_events(c)
        .iter()
        .any(|e| matches!(e, Event::TokenWillExpire { .. })));
    sim.run_for(Duration::from_secs(10));
    assert!(sim.take_events(c).contains(&Event::TokenWillExpire {
        expires_at_ms: (UNIX_S + 60) * 1000
    }));
    let fresh = mint_token(DEMO_SECRET, DEMO_APPID, 9, UNIX_S + 3600);
    assert_eq!(
        ok(&mut sim, c, |s, now| s.refresh_token(now, fresh)),
        Reply::Done
    );
}

#[test]
fn offline_messages_arrive_at_the_next_login_in_order() {
    let mut sim = sim(5);
    let alice = login(&mut sim, 1);
    let bob = login(&mut sim, 2);
    ok(&mut sim, bob, |s, now| s.logout(now));
    for i in 0..3 {
        let r = ok(&mut sim, alice, |s, now| {
            s.send_message_to_user(now, Uid(2), msg(&format!("m{i}")), SendOptions::default())
        });
        assert!(matches!(r, Reply::MessageSent(m) if !m.delivered_online));
    }
    // Unreliable messages to an offline user are not kept.
    ok(&mut sim, alice, |s, now| {
        s.send_message_to_user(now, Uid(2), msg("lost"), {
            let mut cfg = SendOptions::default();
            cfg.reliable = false;
            cfg
        })
    });
    sim.take_events(bob);
    let bob2 = login(&mut sim, 2);
    sim.run_for(Duration::from_millis(200));
    assert_eq!(texts(&sim.take_events(bob2)), vec!["m0", "m1", "m2"]);
    // A later login of the same uid does not get them again (acknowledged).
    sim.run_for(Duration::from_secs(1));
    let bob3 = login(&mut sim, 2);
    sim.run_for(Duration::from_millis(200));
    assert!(texts(&sim.take_events(bob3)).is_empty());
}

/// Bob's events `ev` hold "c0".."c4" from the channel and "p0".."p4"
/// from alice, once each and in order, with no loss and no one going
/// offline; bob is still in `cb`, and alice heard no leave or join.
fn assert_got_all_without_loss_or_flapping(
    sim: &mut Sim,
    ev: &[Event],
    alice: ClientId,
    bob: ClientId,
    cb: ChannelHandle,
) {
    let got = texts(ev);
    let channel: Vec<_> = got.iter().filter(|t| t.starts_with('c')).cloned().collect();
    let p2p: Vec<_> = got.iter().filter(|t| t.starts_with('p')).cloned().collect();
    assert_eq!(channel, vec!["c0", "c1", "c2", "c3", "c4"]);
    assert_eq!(p2p, vec!["p0", "p1", "p2", "p3", "p4"]);
    assert!(sim.session(bob).is_joined(cb));
    assert!(!ev.iter().any(|e| matches!(
        e,
        Event::MessagesLost { .. } | Event::RoomMemberOffline { .. }
    )));
    let ev = sim.take_events(alice);
    assert!(
        !ev.iter().any(|e| matches!(
            e,
            Event::NotifyLeaveChannel { .. } | Event::NotifyJoinChannel { .. }
        )),
        "no flapping: {ev:?}"
    );
}

#[test]
fn a_dropped_link_resumes_without_loss_duplicates_or_flapping() {
    let mut sim = sim(6);
    let alice = login(&mut sim, 1);
    let bob = login(&mut sim, 2);
    let ca = join(&mut sim, alice, "room");
    let cb = join(&mut sim, bob, "room");
    sim.run_for(Duration::from_millis(500));
    sim.take_events(alice);
    sim.take_events(bob);
    sim.drop_link(bob);
    for i in 0..5 {
        sim.command(alice, |s, now| {
            s.send_message_to_channel(now, ca, msg(&format!("c{i}")), SendOptions::default())
        })
        .unwrap();
        sim.command(alice, |s, now| {
            s.send_message_to_user(now, Uid(2), msg(&format!("p{i}")), SendOptions::default())
        })
        .unwrap();
    }
    sim.run_for(Duration::from_secs(5));
    let ev = sim.take_events(bob);
    assert!(ev.contains(&Event::ConnectionStateChanged {
        state: S::Reconnecting,
        reason: R::Interrupted
    }));
    assert!(ev.contains(&Event::ConnectionStateChanged {
        state: S::Connected,
        reason: R::LoginSuccess
    }));
    assert_got_all_without_loss_or_flapping(&mut sim, &ev, alice, bob, cb);
}

#[test]
fn a_link_down_past_the_grace_period_leaves_and_rejoins() {
    let mut sim = sim(7);
    let alice = login(&mut sim, 1);
    let bob = login(&mut sim, 2);
    let ca = join(&mut sim, alice, "room");
    let cb = join(&mut sim, bob, "room");
    sim.run_for(Duration::from_millis(500));
    sim.take_events(alice);
    // The server notices at its idle timeout (45 s), the grace ends 30 s
    // later, and bob is back only after that.
    sim.partition(bob, Duration::from_secs(100));
    sim.run_for(Duration::from_secs(130));
    let ev = sim.take_events(alice);
    let leave = ev.iter().position(|e| {
        *e == Event::NotifyLeaveChannel {
            channel: ca,
            uids: vec![Uid(2)],
        }
    });
    let rejoin = ev.iter().position(|e| {
        *e == Event::NotifyJoinChannel {
            channel: ca,
            uids: vec![Uid(2)],
        }
    });
    assert!(
        matches!((leave, rejoin), (Some(l), Some(j)) if l < j),
        "{ev:?}"
    );
    let ev = sim.take_events(bob);
    assert!(
        ev.contains(&Event::RoomMemberOffline { channel: cb }),
        "{ev:?}"
    );
    assert!(sim.session(bob).is_joined(cb));
    assert_eq!(
        sim.session(bob).connection_state(),
        (S::Connected, R::LoginSuccess)
    );
}

/// Three nodes (gateways) in front of one hub.
fn nodes(seed: u64) -> Sim {
    let mut config = SimConfig::new(seed, ServerConfig::demo());
    config.gateways = 3;
    config.hub_latency = (Duration::ZERO, Duration::from_millis(3));
    Sim::new(config)
}

#[test]
fn a_dead_node_s_clients_resume_on_the_others_without_loss_or_flapping() {
    let mut sim = nodes(11);
    let alice = login(&mut sim, 1);
    let bob = login(&mut sim, 2);
    let carol = login(&mut sim, 3);
    let ca = join(&mut sim, alice, "room");
    let cb = join(&mut sim, bob, "room");
    join(&mut sim, carol, "room");
    sim.run_for(Duration::from_millis(500));
    for c in [alice, bob, carol] {
        sim.take_events(c);
    }
    let node = sim.gateway(bob).unwrap();
    assert_ne!(sim.gateway(alice), Some(node));
    let carol_too = sim.gateway(carol) == Some(node);
    let broken = sim.kill_node(node, Duration::from_secs(3));
    assert_eq!(broken.len(), 1 + usize::from(carol_too));
    assert!(broken.contains(&bob));
    // A node already dead does not die again.
    assert!(sim.kill_node(node, Duration::ZERO).is_empty());
    for i in 0..5 {
        sim.command(alice, |s, now| {
            s.send_message_to_channel(now, ca, msg(&format!("c{i}")), SendOptions::default())
        })
        .unwrap();
        sim.command(alice, |s, now| {
            s.send_message_to_user(now, Uid(2), msg(&format!("p{i}")), SendOptions::default())
        })
        .unwrap();
        sim.run_for(Duration::from_millis(400));
    }
    // Bob is back on another node before the hub learned the first one
    // died, and long after it did nothing changes.
    sim.run_for(Duration::from_secs(60));
    assert_ne!(sim.gateway(bob), Some(node));
    let ev = sim.take_events(bob);
    assert_got_all_without_loss_or_flapping(&mut sim, &ev, alice, bob, cb);
    assert_eq!(sim.server().instance_count(), 3);
}

#[test]
fn with_every_node_dead_clients_wait_for_the_hub_to_take_one_back() {
    let mut sim = nodes(12);
    let alice = login(&mut sim, 1);
    let bob = login(&mut sim, 2);
    sim.run_for(Duration::from_millis(500));
    let mut broken = Vec::new();
    for g in 0..3 {
        let detect = Duration::from_secs(if g == 2 { 5 } else { 60 });
        broken.extend(sim.kill_node(hummer_channel::server::GatewayId(g), detect));
    }
    broken.sort();
    assert_eq!(broken, vec![alice, bob]);
    // No node takes them until the hub learned that gateway 2's is gone.
    sim.run_for(Duration::from_millis(4900));
    for c in [alice, bob] {
        assert_eq!(sim.session(c).connection_state().0, S::Reconnecting);
    }
    sim.run_for(Duration::from_secs(20));
    for c in [alice, bob] {
        assert_eq!(
            sim.session(c).connection_state(),
            (S::Connected, R::LoginSuccess)
        );
        assert_eq!(sim.gateway(c), Some(hummer_channel::server::GatewayId(2)));
    }
    assert_eq!(sim.server().instance_count(), 2, "both resumed");
}

#[test]
fn a_server_restart_is_reported_and_the_session_recovers() {
    let mut sim = sim(8);
    let alice = login(&mut sim, 1);
    let ca = join(&mut sim, alice, "room");
    ok(&mut sim, alice, |s, now| {
        s.send_message_to_channel(now, ca, msg("before"), SendOptions::default())
    });
    sim.run_for(Duration::from_millis(100));
    sim.take_events(alice);
    sim.restart_server();
    sim.run_for(Duration::from_secs(5));
    let ev = sim.take_events(alice);
    assert!(
        ev.contains(&Event::MessagesLost {
            stream: LostStream::Channel(ca),
            from_seq: 2,
            to_seq: None
        }),
        "{ev:?}"
    );
    assert!(sim.session(alice).is_joined(ca));
    ok(&mut sim, alice, |s, now| {
        s.send_message_to_channel(now, ca, msg("after"), SendOptions::default())
    });
    sim.run_for(Duration::from_millis(100));
    assert_eq!(texts(&sim.take_events(alice)), vec!["after"]);
}

/// A durable server (`Sim::with_store`) restarted: what it stored comes
/// back (no loss reported), and what it had not stored was never shown: a
/// send whose batch was still on its way gets no reply before the restart,
/// is re-sent on the resume and delivered once.
#[test]
fn a_durable_server_restart_loses_nothing_shown() {
    let mut config = SimConfig::new(9, ServerConfig::demo());
    config.store_latency = (Duration::from_millis(200), Duration::from_millis(200));
    let mut sim = Sim::with_store(config, MemoryStore::default());
    let alice = login(&mut sim, 1);
    let bob = login(&mut sim, 2);
    let ca = join(&mut sim, alice, "room");
    join(&mut sim, bob, "room");
    ok(&mut sim, alice, |s, now| {
        s.send_message_to_channel(now, ca, msg("stored"), SendOptions::default())
    });
    let unstored = sim
        .command(alice, |s, now| {
            s.send_message_to_channel(now, ca, msg("in flight"), SendOptions::default())
        })
        .unwrap();
    sim.run_for(Duration::from_millis(100));
    // Accepted, not stored yet: nobody saw it.
    assert_eq!(sim.take_completion(alice, unstored), None);
    assert_eq!(texts(&sim.take_events(bob)), vec!["stored"]);
    sim.restart_server();
    sim.run_for(Duration::from_secs(5));
    assert!(matches!(sim.take_completion(alice, unstored), Some(Ok(_))));
    let ev = sim.take_events(bob);
    assert_eq!(losses(&ev), Vec::<&Event>::new());
    assert_eq!(texts(&ev), vec!["in flight"]);
    assert!(losses(&sim.take_events(alice)).is_empty());
    assert_eq!(sim.server_incarnation(), 1);
    assert_eq!(sim.server().channel_count(), 1, "the room came back");
}

#[test]
fn several_instances_of_one_uid() {
    let mut sim = sim(9);
    let phone = login(&mut sim, 2);
    let laptop = login(&mut sim, 2);
    let alice = login(&mut sim, 1);
    ok(&mut sim, alice, |s, now| {
        s.send_message_to_user(now, Uid(2), msg("both"), SendOptions::default())
    });
    sim.run_for(Duration::from_millis(200));
    assert_eq!(texts(&sim.take_events(phone)), vec!["both"]);
    assert_eq!(texts(&sim.take_events(laptop)), vec!["both"]);
    // Presence is per uid: one instance leaving keeps the uid a member.
    let ca = join(&mut sim, alice, "room");
    let cp = join(&mut sim, phone, "room");
    let cl = join(&mut sim, laptop, "room");
    sim.run_for(Duration::from_millis(500));
    sim.take_events(alice);
    ok(&mut sim, phone, |s, now| {
        s.leave_channel(now, cp, Attributes::new())
    });
    sim.run_for(Duration::from_millis(500));
    assert!(!sim
        .take_events(alice)
        .iter()
        .any(|e| matches!(e, Event::NotifyLeaveChannel { .. })));
    let Reply::UserList(l) = ok(&mut sim, alice, |s, now| s.get_channel_user_list(now, ca)) else {
        panic!()
    };
    assert_eq!(l.users, vec![Uid(1), Uid(2)]);
    ok(&mut sim, laptop, |s, now| {
        s.leave_channel(now, cl, Attributes::new())
    });
    sim.run_for(Duration::from_millis(500));
    assert!(sim.take_events(alice).contains(&Event::NotifyLeaveChannel {
        channel: ca,
        uids: vec![Uid(2)]
    }));
}

#[test]
fn a_newer_login_kicks_older_ones_where_configured() {
    let mut config = ServerConfig::demo();
    config.apps[0].kick_older_logins = true;
    let mut sim = Sim::new(SimConfig::new(10, config));
    let first = login(&mut sim, 2);
    let _second = login(&mut sim, 2);
    sim.run_for(Duration::from_secs(2));
    assert_eq!(
        sim.session(first).connection_state(),
        (S::Disconnected, R::RemoteLogin)
    );
    sim.run_for(Duration::from_secs(30));
    assert_eq!(
        sim.session(first).connection_state(),
        (S::Disconnected, R::RemoteLogin),
        "no reconnect after a kick"
    );
}

#[test]
fn server_limits_reach_the_application_as_codes() {
    let mut config = ServerConfig::demo();
    config.max_channel_members = 1;
    config.rate_limit_sends = 5;
    let mut sim = Sim::new(SimConfig::new(11, config));
    let alice = login(&mut sim, 1);
    let bob = login(&mut sim, 2);
    let ca = join(&mut sim, alice, "small");
    let cb = sim
        .command(bob, |s, _| s.create_channel(Region::Cn, "small"))
        .unwrap();
    assert_eq!(
        call(&mut sim, bob, |s, now| s.join_channel(
            now,
            cb,
            Attributes::new()
        ))
        .unwrap_err()
        .code,
        ErrorCode::CHANNEL_USER_LIMIT_EXCEEDED
    );
    assert!(!sim.session(bob).is_joined(cb));
    let codes: Vec<_> = (0..7)
        .map(|_| {
            call(&mut sim, alice, |s, now| {
                s.send_message_to_channel(now, ca, msg("x"), SendOptions::default())
            })
            .err()
            .map(|e| e.code)
        })
        .collect();
    assert_eq!(
        codes
            .iter()
            .filter(|c| **c == Some(ErrorCode::OPERATION_TOO_OFTEN))
            .count(),
        2,
        "{codes:?}"
    );
    assert_eq!(
        call(&mut sim, alice, |s, now| s
            .delete_channel_attributes_by_keys(
                now,
                ca,
                vec!["k".into()],
                AttributeOptions::default()
            ))
        .unwrap_err()
        .code,
        ErrorCode::CHANNEL_ATTRIBUTES_NOT_EXIST
    );
}

#[test]
fn a_slow_consumer_is_disconnected_and_resumes_without_loss() {
    let mut config = ServerConfig::demo();
    config.max_queued_bytes = 4096;
    config.rate_limit_sends = 10_000;
    let mut sim = Sim::new(SimConfig::new(12, config));
    let alice = login(&mut sim, 1);
    let bob = login(&mut sim, 2);
    let ca = join(&mut sim, alice, "room");
    let _cb = join(&mut sim, bob, "room");
    sim.run_for(Duration::from_millis(500));
    sim.take_events(bob);
    sim.set_slow(bob, true);
    for i in 0..60 {
        sim.command(alice, |s, now| {
            s.send_message_to_channel(
                now,
                ca,
                Message::new("t", format!("{i:03}{}", "x".repeat(100))),
                SendOptions::default(),
            )
        })
        .unwrap();
        sim.run_for(Duration::from_millis(20));
    }
    sim.set_slow(bob, false);
    sim.run_for(Duration::from_secs(5));
    let ev = sim.take_events(bob);
    assert!(
        ev.contains(&Event::ConnectionStateChanged {
            state: S::Reconnecting,
            reason: R::Interrupted
        }),
        "it was disconnected"
    );
    let got: Vec<String> = texts(&ev).into_iter().map(|t| t[..3].to_string()).collect();
    let want: Vec<String> = (0..60).map(|i| format!("{i:03}")).collect();
    assert_eq!(got, want, "every message once, in order");
}

/// The `MessagesLost` events among `events`.
fn losses(events: &[Event]) -> Vec<&Event> {
    events
        .iter()
        .filter(|e| matches!(e, Event::MessagesLost { .. }))
        .collect()
}

/// The server's frames to `c` with a body `pick` selects, from the tap.
fn server_frames<'a, T>(sim: &'a Sim, c: ClientId, pick: impl Fn(&'a Body) -> Option<T>) -> Vec<T> {
    sim.frames()
        .iter()
        .filter(|f| f.client == c && f.direction == Direction::ToClient && f.delivered())
        .filter_map(|f| pick(f.body()?))
        .collect()
}

#[test]
fn a_restart_while_the_receiver_has_seen_nothing_reports_one_p2p_loss() {
    let mut sim = sim(13);
    let alice = login(&mut sim, 1);
    let bob = login(&mut sim, 2);
    sim.record_server_frames(true);
    sim.record_client_frames(true);
    // Bob stops reading: the messages are accepted (stored for him, their
    // pushes queued in the server) but he sees none of them.
    sim.set_slow(bob, true);
    for i in 0..3 {
        let r = ok(&mut sim, alice, |s, now| {
            s.send_message_to_user(now, Uid(2), msg(&format!("p{i}")), SendOptions::default())
        });
        assert!(matches!(r, Reply::MessageSent(m) if m.delivered_online));
    }
    sim.restart_server();
    sim.set_slow(bob, false);
    sim.run_for(Duration::from_secs(10));
    let ev = sim.take_events(bob);
    assert!(texts(&ev).is_empty(), "{ev:?}");
    assert_eq!(
        losses(&ev),
        vec![&Event::MessagesLost {
            stream: LostStream::User,
            from_seq: 1,
            to_seq: None
        }],
        "exactly one loss, from 1: {ev:?}"
    );
    assert_eq!(
        sim.session(bob).connection_state(),
        (S::Connected, R::LoginSuccess)
    );
    // The new server told him so, once: he resumed from cursor 0 of an
    // epoch it does not have.
    let gaps = server_frames(&sim, bob, |b| match b {
        Body::LoginReply(r) => r.p2p_gap,
        _ => None,
    });
    assert_eq!(gaps, vec![wire::SeqGap { from: 1, to: 0 }]);
    // Nothing more comes later, and the stream goes on in the new epoch.
    sim.run_for(Duration::from_secs(30));
    assert!(losses(&sim.take_events(bob)).is_empty());
    ok(&mut sim, alice, |s, now| {
        s.send_message_to_user(now, Uid(2), msg("after"), SendOptions::default())
    });
    sim.run_for(Duration::from_millis(200));
    assert_eq!(texts(&sim.take_events(bob)), vec!["after"]);
}

#[test]
fn a_restart_while_a_member_has_seen_nothing_reports_one_channel_loss() {
    let mut sim = sim(14);
    let alice = login(&mut sim, 1);
    let bob = login(&mut sim, 2);
    let ca = join(&mut sim, alice, "room");
    let cb = join(&mut sim, bob, "room");
    sim.run_for(Duration::from_millis(500));
    sim.take_events(bob);
    sim.set_slow(bob, true);
    for i in 0..3 {
        ok(&mut sim, alice, |s, now| {
            s.send_message_to_channel(now, ca, msg(&format!("c{i}")), SendOptions::default())
        });
    }
    sim.restart_server();
    sim.set_slow(bob, false);
    sim.run_for(Duration::from_secs(10));
    let ev = sim.take_events(bob);
    assert!(texts(&ev).is_empty(), "{ev:?}");
    let channel_losses: Vec<_> = losses(&ev)
        .into_iter()
        .filter(|e| {
            matches!(
                e,
                Event::MessagesLost {
                    stream: LostStream::Channel(_),
                    ..
                }
            )
        })
        .collect();
    assert_eq!(
        channel_losses,
        vec![&Event::MessagesLost {
            stream: LostStream::Channel(cb),
            from_seq: 1,
            to_seq: None
        }],
        "exactly one channel loss, from 1: {ev:?}"
    );
    // His (empty) P2P stream is reported too: the server cannot know it
    // was empty, only that its epoch is gone.
    assert_eq!(losses(&ev).len(), 2, "{ev:?}");
    assert!(sim.session(bob).is_joined(cb));
    sim.run_for(Duration::from_secs(30));
    assert!(losses(&sim.take_events(bob)).is_empty());
    ok(&mut sim, alice, |s, now| {
        s.send_message_to_channel(now, ca, msg("after"), SendOptions::default())
    });
    sim.run_for(Duration::from_millis(200));
    assert_eq!(texts(&sim.take_events(bob)), vec!["after"]);
}

#[test]
fn a_reliable_send_in_flight_when_the_link_drops_completes_once_after_the_resume() {
    let mut sim = sim(15);
    let alice = login(&mut sim, 1);
    let bob = login(&mut sim, 2);
    sim.take_events(bob);
    sim.record_server_frames(true);
    sim.record_client_frames(true);
    let id = sim
        .command(alice, |s, now| {
            s.send_message_to_user(now, Uid(2), msg("once"), SendOptions::default())
        })
        .unwrap();
    // The schedule: the send reaches the server (bob gets the push), and
    // alice's link breaks before the reply reaches her.
    let is_send = |f: &hummer_channel::sim::TappedFrame| {
        f.client == alice && matches!(f.body(), Some(Body::SendToUser(_)))
    };
    let is_reply = |f: &hummer_channel::sim::TappedFrame| {
        f.client == alice && matches!(f.body(), Some(Body::SendReply(_)))
    };
    for _ in 0..100 {
        if sim.frames().iter().any(|f| is_send(f) && f.delivered()) {
            break;
        }
        sim.run_for(Duration::from_millis(1));
    }
    assert!(sim.frames().iter().any(|f| is_reply(f) && !f.delivered()));
    let first_link = sim.link(alice);
    sim.drop_link(alice);
    assert!(sim.take_completion(alice, id).is_none(), "held, not failed");
    sim.run_for(Duration::from_secs(5));
    let r = sim
        .take_completion(alice, id)
        .expect("completed after the resume");
    assert!(matches!(r, Ok(Reply::MessageSent(_))), "{r:?}");
    assert_eq!(
        texts(&sim.take_events(bob)),
        vec!["once"],
        "delivered exactly once"
    );
    // Over the wire: the same request went out on the new link and the
    // server answered it from its memory, pushing nothing more.
    let sends: Vec<_> = sim.frames().iter().filter(|f| is_send(f)).collect();
    assert_eq!(sends.len(), 2, "{sends:?}");
    assert!(sends[1].link != first_link && sends[1].delivered());
    assert_eq!(
        sends[0].frame, sends[1].frame,
        "the same frame, same message id"
    );
    let replies: Vec<_> = sim.frames().iter().filter(|f| is_reply(f)).collect();
    assert_eq!(replies.len(), 2);
    assert_eq!(replies[0].frame, replies[1].frame, "the original reply");
    let pushes = server_frames(&sim, bob, |b| match b {
        Body::UserMessage(p) => Some(p.seq),
        _ => None,
    });
    assert_eq!(pushes, vec![1]);
}

#[test]
fn a_resumed_member_gets_no_duplicates_and_no_offline_notice() {
    let mut sim = sim(16);
    let alice = login(&mut sim, 1);
    let bob = login(&mut sim, 2);
    let ca = join(&mut sim, alice, "room");
    let cb = join(&mut sim, bob, "room");
    sim.run_for(Duration::from_millis(500));
    sim.take_events(bob);
    sim.record_server_frames(true);
    sim.record_client_frames(true);
    let send = |sim: &mut Sim, i: usize| {
        sim.command(alice, |s, now| {
            s.send_message_to_channel(now, ca, msg(&format!("c{i:02}")), SendOptions::default())
        })
        .unwrap();
    };
    // Pushes in flight when bob's link breaks (he has had the first four,
    // the fifth is on its way), more while he is away, more after he is back.
    for i in 0..5 {
        send(&mut sim, i);
        sim.run_for(Duration::from_millis(if i < 4 { 50 } else { 0 }));
    }
    let in_flight = |sim: &Sim| {
        sim.frames().iter().any(|f| {
            f.client == bob && !f.delivered() && matches!(f.body(), Some(Body::ChannelMessage(_)))
        })
    };
    for _ in 0..100 {
        if in_flight(&sim) {
            break;
        }
        sim.run_for(Duration::from_millis(1));
    }
    let first_link = sim.link(bob);
    sim.drop_link(bob);
    for i in 5..10 {
        send(&mut sim, i);
        sim.run_for(Duration::from_millis(20));
    }
    sim.run_for(Duration::from_secs(3));
    for i in 10..15 {
        send(&mut sim, i);
        sim.run_for(Duration::from_millis(5));
    }
    sim.run_for(Duration::from_secs(1));
    let ev = sim.take_events(bob);
    let want: Vec<String> = (0..15).map(|i| format!("c{i:02}")).collect();
    assert_eq!(texts(&ev), want, "every message once, in order");
    assert!(
        !ev.iter().any(|e| matches!(
            e,
            Event::RoomMemberOffline { .. } | Event::MessagesLost { .. }
        )),
        "{ev:?}"
    );
    assert!(sim.session(bob).is_joined(cb));
    // The resume kept the channel and replayed only what bob had not seen:
    // no channel message went twice to him, and he did not join again.
    let resumed = server_frames(&sim, bob, |b| match b {
        Body::LoginReply(r) => Some((r.resumed, r.channels.len())),
        _ => None,
    });
    assert_eq!(resumed, vec![(true, 1)]);
    let joins = sim
        .frames()
        .iter()
        .filter(|f| f.client == bob && matches!(f.body(), Some(Body::Join(_))))
        .count();
    assert_eq!(joins, 0, "no re-join");
    // The schedule did what it is for: pushes were lost with the first link
    // (sent, never arrived) and came again, replayed, after the resume.
    let lost_in_flight = sim
        .frames()
        .iter()
        .filter(|f| f.client == bob && f.link == first_link && !f.delivered())
        .filter(|f| matches!(f.body(), Some(Body::ChannelMessage(_))))
        .count();
    let seen_before = sim
        .frames()
        .iter()
        .filter(|f| f.client == bob && f.link == first_link && f.delivered())
        .filter(|f| matches!(f.body(), Some(Body::ChannelMessage(_))))
        .count();
    assert!(
        lost_in_flight > 0 && seen_before > 0,
        "{seen_before} {lost_in_flight}"
    );
    let mut seqs: Vec<u64> = sim
        .frames()
        .iter()
        .filter(|f| f.client == bob && f.direction == Direction::ToClient)
        .filter_map(|f| match f.body() {
            Some(Body::ChannelMessage(p)) if f.delivered() => Some(p.seq),
            _ => None,
        })
        .collect();
    let delivered = seqs.len();
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs.len(), delivered, "a channel message sent twice to bob");
    assert!(!sim
        .take_events(alice)
        .iter()
        .any(|e| matches!(e, Event::NotifyLeaveChannel { .. })));
}
