//! The server API in the core (`Server::api`): a backend's calls, answered
//! by the shards that hold the state, with the pushes and closes they cause.

use crate::support::*;
use hummer_channel::server::{ApiCall, ApiReply, ApiRequest, Sent};
use hummer_channel::types::{ChannelKey, Message, Region};

fn room(id: &str) -> ChannelKey {
    ChannelKey::new(Region::Cn, id)
}

fn call(n: &mut Net, request: ApiRequest) -> Result<ApiReply, u32> {
    let r = n.s.api(
        n.now,
        ApiCall {
            appid: DEMO_APPID,
            request,
        },
    );
    n.pump();
    r.map_err(|e| e.code.code())
}

fn publish(id: &str, message_id: u64, text: &str, unreliable: bool) -> ApiRequest {
    ApiRequest::Publish {
        channel: room(id),
        from_uid: 0,
        message_id,
        message: Message::new("text", text.as_bytes().to_vec()),
        unreliable,
    }
}

fn sent(r: Result<ApiReply, u32>) -> Sent {
    match r {
        Ok(ApiReply::Sent(s)) => s,
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_published_message_reaches_every_member_once_and_a_resend_is_answered_as_the_first() {
    let (mut n, a, b, _, _) = two_in_a_room(ServerConfig::demo());
    let first = sent(call(&mut n, publish("room", 77, "from the backend", false)));
    assert_eq!(first.seq, 1);
    assert!(first.delivered_online);
    for c in [a, b] {
        let bodies = n.bodies(c);
        let pushes: Vec<_> = bodies
            .iter()
            .filter_map(|b| match b {
                Body::ChannelMessage(m) => Some((m.from_uid, m.seq, text(&m.message))),
                _ => None,
            })
            .collect();
        assert_eq!(pushes, [(0, 1, "from the backend".to_string())], "{c}");
    }
    // The same id again: the first answer, nothing delivered.
    let again = sent(call(&mut n, publish("room", 77, "from the backend", false)));
    assert_eq!(again, first);
    assert!(channel_msgs(&n.bodies(a)).is_empty());
    // A client's next message follows in the same stream.
    let r = n.sent(a, to_channel("room", "from a client"));
    assert_eq!(r.seq, 2);
    // The history has both, oldest first, with their senders.
    match call(
        &mut n,
        ApiRequest::History {
            channel: room("room"),
            after_seq: 0,
            limit: 10,
        },
    ) {
        Ok(ApiReply::History {
            epoch,
            messages,
            gap,
            more,
        }) => {
            assert_ne!(epoch, 0);
            assert_eq!(gap, None);
            assert!(!more);
            let got: Vec<_> = messages
                .iter()
                .map(|m| (m.seq, m.from_uid, m.message.content.to_vec()))
                .collect();
            assert_eq!(
                got,
                [
                    (1, 0, b"from the backend".to_vec()),
                    (2, 1, b"from a client".to_vec())
                ]
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn publishing_to_an_empty_channel_keeps_a_reliable_message_and_drops_an_unreliable_one() {
    let mut n = Net::demo();
    let s = sent(call(&mut n, publish("later", 1, "kept", false)));
    assert_eq!((s.seq, s.delivered_online), (1, false));
    let u = sent(call(&mut n, publish("nowhere", 2, "gone", true)));
    assert_eq!((u.seq, u.delivered_online), (0, false));
    assert_eq!(
        n.s.channel_count(),
        1,
        "only the reliable one made a channel"
    );
    // A member who joins later fetches it (its history starts at its join,
    // so the backend's history call shows it instead).
    match call(
        &mut n,
        ApiRequest::History {
            channel: room("later"),
            after_seq: 0,
            limit: 1,
        },
    ) {
        Ok(ApiReply::History { messages, more, .. }) => {
            assert_eq!(messages.len(), 1);
            assert!(!more);
        }
        other => panic!("{other:?}"),
    }
    // History of a channel the service never held.
    match call(
        &mut n,
        ApiRequest::History {
            channel: room("never"),
            after_seq: 0,
            limit: 5,
        },
    ) {
        Ok(ApiReply::History {
            epoch, messages, ..
        }) => {
            assert_eq!(epoch, 0);
            assert!(messages.is_empty());
        }
        other => panic!("{other:?}"),
    }
    // A channel id past the limits is refused, reliable or not.
    let long = "x".repeat(65);
    for unreliable in [false, true] {
        let r = call(&mut n, publish(&long, 3, "x", unreliable));
        assert_eq!(
            r,
            Err(ErrorCode::INVALID_PARAMETER.code()),
            "unreliable: {unreliable}"
        );
    }
    for bad in [0, hummer_channel::server::MAX_HISTORY + 1] {
        let r = call(
            &mut n,
            ApiRequest::History {
                channel: room("later"),
                after_seq: 0,
                limit: bad,
            },
        );
        assert_eq!(r, Err(ErrorCode::INVALID_PARAMETER.code()), "limit {bad}");
    }
}

#[test]
fn a_message_to_an_offline_user_waits_in_its_inbox() {
    let mut n = Net::demo();
    let send = |id| ApiRequest::SendToUser {
        receiver: 9,
        from_uid: 0,
        message_id: id,
        message: Message::new("notice", b"welcome".to_vec()),
        unreliable: false,
    };
    let s = sent(call(&mut n, send(5)));
    assert_eq!((s.seq, s.delivered_online), (1, false));
    assert_eq!(sent(call(&mut n, send(5))), s, "a re-send");
    let (c, _) = n.login(9);
    let msgs = user_msgs(&n.bodies(c));
    assert_eq!(msgs, [(1, "welcome".to_string())]);
    // Online now: delivered at once.
    let s2 = sent(call(&mut n, send(6)));
    assert_eq!((s2.seq, s2.delivered_online), (2, true));
    assert_eq!(user_msgs(&n.bodies(c)), [(2, "welcome".to_string())]);
    // A receiver of 0 is refused.
    let r = call(
        &mut n,
        ApiRequest::SendToUser {
            receiver: 0,
            from_uid: 0,
            message_id: 7,
            message: Message::new("t", b"x".to_vec()),
            unreliable: false,
        },
    );
    assert_eq!(r, Err(ErrorCode::INVALID_PARAMETER.code()));
}

fn kick(uid: u64, instance_id: Option<u64>, ban: Duration) -> ApiRequest {
    ApiRequest::Kick {
        uid,
        instance_id,
        code: 4100,
        reason: "spam".into(),
        ban,
    }
}

#[test]
fn a_kicked_uid_is_closed_with_the_backends_code_leaves_at_once_and_stays_out_while_banned() {
    let (mut n, a, b, _, _) = two_in_a_room(ServerConfig::demo());
    match call(&mut n, kick(2, None, secs(60))) {
        Ok(ApiReply::Kicked { instances }) => assert_eq!(instances, 1),
        other => panic!("{other:?}"),
    }
    let closes = n.closes_of(b);
    assert_eq!(closes.len(), 1);
    assert_eq!(closes[0].code(), 4100);
    let last = n.bodies(b).pop();
    assert!(
        matches!(&last, Some(Body::Close(c)) if c.code == 4100 && c.reason == "spam"),
        "{last:?}"
    );
    // No grace period: offline at once, and the others are told it left.
    match call(&mut n, ApiRequest::OnlineStatus { uids: vec![1, 2] }) {
        Ok(ApiReply::Online(s)) => {
            assert_eq!(s.into_iter().collect::<Vec<_>>(), [(1, true), (2, false)])
        }
        other => panic!("{other:?}"),
    }
    n.advance(secs(1));
    let left = n
        .bodies(a)
        .into_iter()
        .any(|body| matches!(&body, Body::Membership(m) if m.left.contains(&2)));
    assert!(left, "the member saw uid 2 leave");
    // Banned for 60 s: refused with 3000, then let in.
    let c = n.accept();
    let r = n.login_with(c, login_req(2));
    assert!(matches!(&r, Body::Error(e) if e.code == 3000), "{r:?}");
    n.advance(secs(60));
    n.login(2);
}

#[test]
fn one_instance_can_be_kicked_and_bad_kicks_are_refused() {
    let mut n = Net::demo();
    let (c1, r1) = n.login(5);
    let (c2, _) = n.login(5);
    match call(&mut n, kick(5, Some(r1.instance_id), Duration::ZERO)) {
        Ok(ApiReply::Kicked { instances }) => assert_eq!(instances, 1),
        other => panic!("{other:?}"),
    }
    assert_eq!(n.closes_of(c1).len(), 1);
    assert!(n.closes_of(c2).is_empty());
    assert_eq!(
        call(&mut n, kick(5, Some(r1.instance_id), Duration::ZERO)),
        Err(ErrorCode::RESOURCE_NOT_FOUND.code())
    );
    // Nobody to kick is no error (nothing was closed).
    assert_eq!(
        call(&mut n, kick(6, None, Duration::ZERO)),
        Ok(ApiReply::Kicked { instances: 0 })
    );
    let bad = |code, ban| ApiRequest::Kick {
        uid: 5,
        instance_id: None,
        code,
        reason: String::new(),
        ban,
    };
    for (code, ban) in [
        (4099, Duration::ZERO),
        (4200, Duration::ZERO),
        (100, Duration::ZERO),
        (4100, hummer_channel::server::MAX_BAN + secs(1)),
    ] {
        assert_eq!(
            call(&mut n, bad(code, ban)),
            Err(ErrorCode::INVALID_PARAMETER.code()),
            "{code} {ban:?}"
        );
    }
    assert!(n.closes_of(c2).is_empty(), "refused kicks close nothing");
    // A reason is 256 bytes at most.
    let said = |reason: String| ApiRequest::Kick {
        uid: 6,
        instance_id: None,
        code: 4100,
        reason,
        ban: Duration::ZERO,
    };
    assert_eq!(
        call(&mut n, said("r".repeat(256))),
        Ok(ApiReply::Kicked { instances: 0 })
    );
    assert_eq!(
        call(&mut n, said("r".repeat(257))),
        Err(ErrorCode::INVALID_PARAMETER.code())
    );
    // The longest ban is 30 days, as documented.
    let ban = |secs| ApiRequest::Kick {
        uid: 6,
        instance_id: None,
        code: 4100,
        reason: String::new(),
        ban: Duration::from_secs(secs),
    };
    assert_eq!(
        call(&mut n, ban(2_592_000)),
        Ok(ApiReply::Kicked { instances: 0 })
    );
    assert_eq!(
        call(&mut n, ban(2_592_001)),
        Err(ErrorCode::INVALID_PARAMETER.code())
    );
    // Without a ban the uid logs in again at once.
    n.login(5);
}

#[test]
fn channel_state_reads_and_writes_as_the_service() {
    let (mut n, a, b, _, _) = two_in_a_room(ServerConfig::demo());
    n.ok(a, write_attrs("room", false));
    let mut set = BTreeMap::new();
    set.insert("topic".to_string(), "rust".to_string());
    let w = ApiRequest::WriteChannelAttributes {
        channel: room("room"),
        op: wire::AttributeOp::Set,
        attributes: set.clone(),
        keys: vec![],
        notify: true,
    };
    assert_eq!(call(&mut n, w), Ok(ApiReply::Written));
    for c in [a, b] {
        let told = n.bodies(c).into_iter().any(|body| {
            matches!(&body, Body::ChannelAttributesChanged(p) if p.last_update_uid == 0 && p.attributes == set)
        });
        assert!(told, "{c} was told");
    }
    match call(
        &mut n,
        ApiRequest::Channel {
            channel: room("room"),
        },
    ) {
        Ok(ApiReply::Channel(Some(info))) => {
            assert_eq!(info.member_count, 2);
            assert_eq!(info.members, [1, 2]);
            assert_eq!(info.attributes, set);
            assert_eq!(info.attributes_updated_by, 0);
            assert_ne!(info.attributes_updated_ms, 0);
            assert_ne!(info.epoch, 0);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        call(
            &mut n,
            ApiRequest::Channel {
                channel: room("nope")
            }
        ),
        Ok(ApiReply::Channel(None))
    );
    match call(
        &mut n,
        ApiRequest::UserAttributes {
            channel: room("room"),
        },
    ) {
        Ok(ApiReply::UserAttributes(m)) => {
            assert_eq!(m.keys().copied().collect::<Vec<_>>(), [1]);
            assert_eq!(m[&1]["k"], "v");
        }
        other => panic!("{other:?}"),
    }
    // Limits hold for the service too: a bad key is refused.
    let mut bad = BTreeMap::new();
    bad.insert("not a key!".to_string(), "v".to_string());
    let r = call(
        &mut n,
        ApiRequest::WriteChannelAttributes {
            channel: room("room"),
            op: wire::AttributeOp::AddOrUpdate,
            attributes: bad,
            keys: vec![],
            notify: false,
        },
    );
    assert!(r.is_err());
    // Clearing a channel without attributes is the members' 5108 too.
    let clear = |id: &str| ApiRequest::WriteChannelAttributes {
        channel: room(id),
        op: wire::AttributeOp::Clear,
        attributes: BTreeMap::new(),
        keys: vec![],
        notify: false,
    };
    assert_eq!(call(&mut n, clear("room")), Ok(ApiReply::Written));
    assert_eq!(
        call(&mut n, clear("room")),
        Err(ErrorCode::CHANNEL_ATTRIBUTES_NOT_EXIST.code())
    );
}

#[test]
fn channels_are_listed_by_page_and_by_uid() {
    let mut cfg = ServerConfig::demo();
    let mut other = hummer_channel::server::AppConfig::with_secret(77, "s".repeat(32));
    other.allow_appid_mode = true;
    cfg.apps.push(other);
    let mut n = Net::new(cfg);
    let (a, _) = n.login(1);
    let (b, _) = n.login(2);
    // Another app's channel, listed to that app only.
    let (o, _) = n.login_app(77, 3);
    n.ok_join(o, "b0-other-app");
    for id in ["c", "a", "e", "b", "d"] {
        n.ok_join(a, id);
    }
    n.ok_join(b, "b");
    let page = |n: &mut Net, after: Option<&str>, limit| match call(
        n,
        ApiRequest::ListChannels {
            after: after.map(room),
            limit,
        },
    ) {
        Ok(ApiReply::ChannelPage { channels, more }) => (
            channels
                .into_iter()
                .map(|(k, c)| (k.channel_id, c))
                .collect::<Vec<_>>(),
            more,
        ),
        other => panic!("{other:?}"),
    };
    let (p1, more) = page(&mut n, None, 2);
    assert_eq!(p1, [("a".to_string(), 1), ("b".to_string(), 2)]);
    assert!(more);
    let (p2, more) = page(&mut n, Some("b"), 2);
    assert_eq!(p2, [("c".to_string(), 1), ("d".to_string(), 1)]);
    assert!(more);
    // A page that ends right at the last channel: no more.
    let (exact, more) = page(&mut n, Some("c"), 2);
    assert_eq!(exact, [("d".to_string(), 1), ("e".to_string(), 1)]);
    assert!(!more);
    // A channel with history but no member is not listed.
    call(&mut n, publish("f-empty", 9, "kept", false)).unwrap();
    let (p3, more) = page(&mut n, Some("d"), 2);
    assert_eq!(p3, [("e".to_string(), 1)]);
    assert!(!more);
    assert_eq!(
        call(
            &mut n,
            ApiRequest::ListChannels {
                after: None,
                limit: 0
            }
        ),
        Err(ErrorCode::INVALID_PARAMETER.code())
    );
    match call(&mut n, ApiRequest::ChannelsOfUser { uid: 2 }) {
        Ok(ApiReply::Channels(keys)) => assert_eq!(keys, [room("b")]),
        other => panic!("{other:?}"),
    }
    match call(&mut n, ApiRequest::ChannelsOfUser { uid: 1 }) {
        Ok(ApiReply::Channels(keys)) => assert_eq!(keys.len(), 5),
        other => panic!("{other:?}"),
    }
    // App 77's backend sees its own channel only.
    let theirs = n.s.api(
        n.now,
        ApiCall {
            appid: 77,
            request: ApiRequest::ListChannels {
                after: None,
                limit: 10,
            },
        },
    );
    match theirs {
        Ok(ApiReply::ChannelPage { channels, more }) => {
            assert_eq!(channels, [(room("b0-other-app"), 1)]);
            assert!(!more);
        }
        other => panic!("{other:?}"),
    }
    // An app the server does not serve is refused.
    let other = n.s.api(
        n.now,
        ApiCall {
            appid: 4242,
            request: ApiRequest::ListChannels {
                after: None,
                limit: 10,
            },
        },
    );
    assert_eq!(
        other.map_err(|e| e.code.code()),
        Err(ErrorCode::APPID_UNAVAILABLE.code())
    );
}

#[test]
fn online_status_spans_every_shard() {
    let mut n = Net::shaped(ServerConfig::demo(), 2, 4);
    let uids: Vec<u64> = (1..=12).collect();
    for &u in uids.iter().filter(|u| *u % 3 == 0) {
        n.login(u);
    }
    match call(&mut n, ApiRequest::OnlineStatus { uids: uids.clone() }) {
        Ok(ApiReply::Online(s)) => {
            assert_eq!(s.len(), 12);
            for u in uids {
                assert_eq!(s[&u], u % 3 == 0, "uid {u}");
            }
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        call(&mut n, ApiRequest::OnlineStatus { uids: vec![] }),
        Err(ErrorCode::INVALID_PARAMETER.code())
    );
    // The query's limit is the whole list's, not each shard's share.
    let max = ServerConfig::demo().limits.max_uids_per_query as u64;
    assert!(matches!(
        call(&mut n, ApiRequest::OnlineStatus { uids: (1..=max).collect() }),
        Ok(ApiReply::Online(s)) if s.len() as u64 == max
    ));
    assert_eq!(
        call(
            &mut n,
            ApiRequest::OnlineStatus {
                uids: (1..=max + 1).collect()
            }
        ),
        Err(ErrorCode::INVALID_PARAMETER.code())
    );
}
