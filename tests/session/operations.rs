//! Every operation: its request frame and its completion; every push: its event.

use crate::support::*;

/// Every operation, one test each (`every_operation::<operation>`): its
/// request frame, and its completion from the scripted server's reply. Each
/// runs on a fresh Session logged in and joined to "room" (number 3), so
/// that one operation's failure hides no other.
mod every_operation {
    use crate::support::*;

    /// Runs `cmd` on a fresh logged-in Session joined to "room", checks the
    /// request frame with `request`, answers `reply`, and checks the
    /// completion (and the Session after it) with `done`.
    fn operation(
        cmd: impl FnOnce(&mut Session, Instant, ChannelHandle) -> Result<RequestId, CommandError>,
        request: impl FnOnce(&Body),
        reply: Body,
        done: impl FnOnce(Result<Reply, ServiceError>, &mut Script, ChannelHandle),
    ) {
        let mut t = Script::logged_in();
        let ch = t.joined("room", 3, 0);
        let r = round_trip(&mut t, |s, now| cmd(s, now, ch), request, reply);
        done(r, &mut t, ch);
    }

    /// One `#[test]` per row: `name: (cmd, request check, reply, completion check)`.
    macro_rules! operations {
        ($($name:ident: ($cmd:expr, $request:expr, $reply:expr, $done:expr $(,)?);)*) => {
            $(
                #[test]
                fn $name() {
                    operation($cmd, $request, $reply, $done);
                }
            )*
        };
    }

    fn attrs() -> Attributes {
        [("role".to_string(), "host".to_string())].into()
    }

    fn opts() -> AttributeOptions {
        AttributeOptions::default()
    }

    fn done(r: Result<Reply, ServiceError>, _: &mut Script, _: ChannelHandle) {
        assert_eq!(r, Ok(Reply::Done));
    }

    /// An attribute write: of the user (`user`) or the channel, with `op`,
    /// the payload `op` carries, and the notification flag `notify`.
    fn write(user: bool, op: wire::AttributeOp, notify: bool) -> impl FnOnce(&Body) {
        move |b| {
            let w = match (b, user) {
                (Body::WriteUserAttributes(w), true) | (Body::WriteChannelAttributes(w), false) => {
                    w
                }
                other => panic!("wrong frame {other:?}"),
            };
            assert_eq!(w.op, op as i32);
            assert_eq!(w.enable_notification, notify, "notification flag");
            match op {
                wire::AttributeOp::Set | wire::AttributeOp::AddOrUpdate => {
                    assert_eq!(w.attributes, attrs())
                }
                wire::AttributeOp::Delete => assert_eq!(w.keys, vec!["role".to_string()]),
                _ => assert!(w.attributes.is_empty() && w.keys.is_empty()),
            }
        }
    }

    fn attr_reply() -> Body {
        Body::Attributes(wire::AttributesReply {
            attributes: [("role".into(), "host".into())].into(),
            last_update_uid: 2,
            last_update_ts: 9,
        })
    }

    operations! {
        set_user_region: (
            |s, now, _| s.set_user_region(now, Region::MeEast),
            |b| assert!(matches!(b, Body::SetUserRegion(r) if r.region == Region::MeEast.to_wire())),
            ok(),
            done,
        );
        get_instance_info: (
            |s, now, _| s.get_instance_info(now),
            |b| assert!(matches!(b, Body::GetInstanceInfo(_))),
            Body::InstanceInfo(wire::InstanceInfoReply {
                appid: 10000,
                uid: ME,
                instance_id: 55,
                is_anonymous: true,
                region: Region::Cn.to_wire(),
                channels: vec![wire::ChannelKey {
                    region: Region::Cn.to_wire(),
                    channel_id: "room".into(),
                }],
            }),
            |r, _, _| {
                let Ok(Reply::InstanceInfo(info)) = r else {
                    panic!("{r:?}")
                };
                assert_eq!(info.channels[0].channel_id, "room");
                assert_eq!(info.uid, Uid(ME));
            },
        );
        send_message_to_user: (
            |s, now, _| s.send_message_to_user(now, Uid(2), Message::new("t", "hi"), SendOptions::unreliable()),
            |b| assert!(
                matches!(b, Body::SendToUser(r) if r.receiver == 2 && r.unreliable && r.message_id != 0 && r.message.as_ref().unwrap().content == "hi")
            ),
            Body::SendReply(wire::SendReply {
                timestamp_ms: 77,
                delivered_online: false,
                seq: 0,
            }),
            |r, _, _| assert!(matches!(&r, Ok(Reply::MessageSent(m)) if m.timestamp_ms == 77 && !m.delivered_online), "{r:?}"),
        );
        query_users_online_status: (
            |s, now, _| s.query_users_online_status(now, &[Uid(2), Uid(3)]),
            |b| assert!(matches!(b, Body::QueryOnline(q) if q.uids == vec![2, 3])),
            Body::OnlineStatus(wire::OnlineStatusReply {
                status: [(2, true), (3, false)].into(),
            }),
            |r, _, _| assert_eq!(r, Ok(Reply::OnlineStatus([(Uid(2), true), (Uid(3), false)].into()))),
        );
        send_message_to_channel: (
            |s, now, ch| s.send_message_to_channel(now, ch, Message::new("t", "all"), SendOptions::default()),
            |b| assert!(
                matches!(b, Body::SendToChannel(r) if !r.unreliable && r.message_id != 0 && r.channel.as_ref().unwrap().channel_id == "room")
            ),
            Body::SendReply(wire::SendReply {
                timestamp_ms: 78,
                delivered_online: true,
                seq: 1,
            }),
            |r, _, _| assert!(matches!(&r, Ok(Reply::MessageSent(m)) if m.timestamp_ms == 78), "{r:?}"),
        );
        set_local_user_attributes: (
            |s, now, ch| s.set_local_user_attributes(now, ch, attrs(), opts()),
            write(true, wire::AttributeOp::Set, true),
            ok(),
            done,
        );
        delete_local_user_attributes_by_keys: (
            |s, now, ch| s.delete_local_user_attributes_by_keys(now, ch, vec!["role".into()], AttributeOptions::notify(false)),
            write(true, wire::AttributeOp::Delete, false),
            ok(),
            done,
        );
        add_or_update_local_user_attributes: (
            |s, now, ch| s.add_or_update_local_user_attributes(now, ch, attrs(), opts()),
            write(true, wire::AttributeOp::AddOrUpdate, true),
            ok(),
            done,
        );
        clear_local_user_attributes: (
            |s, now, ch| s.clear_local_user_attributes(now, ch, opts()),
            write(true, wire::AttributeOp::Clear, true),
            ok(),
            done,
        );
        set_channel_attributes: (
            |s, now, ch| s.set_channel_attributes(now, ch, attrs(), opts()),
            write(false, wire::AttributeOp::Set, true),
            ok(),
            done,
        );
        delete_channel_attributes_by_keys: (
            |s, now, ch| s.delete_channel_attributes_by_keys(now, ch, vec!["role".into()], opts()),
            write(false, wire::AttributeOp::Delete, true),
            ok(),
            done,
        );
        add_or_update_channel_attributes: (
            |s, now, ch| s.add_or_update_channel_attributes(now, ch, attrs(), opts()),
            write(false, wire::AttributeOp::AddOrUpdate, true),
            ok(),
            done,
        );
        clear_channel_attributes: (
            |s, now, ch| s.clear_channel_attributes(now, ch, opts()),
            write(false, wire::AttributeOp::Clear, true),
            ok(),
            done,
        );
        get_channel_user_list: (
            |s, now, ch| s.get_channel_user_list(now, ch),
            |b| assert!(matches!(b, Body::GetUserList(k) if k.channel_id == "room")),
            Body::UserList(wire::UserListReply { uids: vec![2, ME] }),
            |r, _, _| {
                let Ok(Reply::UserList(list)) = r else {
                    panic!("{r:?}")
                };
                assert_eq!(
                    (list.appid, list.channel_id.as_str(), list.users),
                    (10000, "room", vec![Uid(2), Uid(ME)])
                );
            },
        );
        get_user_attributes: (
            |s, now, ch| s.get_user_attributes(now, ch, Uid(2)),
            |b| assert!(matches!(b, Body::GetUserAttributes(g) if g.uid == 2 && g.keys.is_empty())),
            attr_reply(),
            |r, _, _| assert!(
                matches!(&r, Ok(Reply::Attributes(a)) if a.attributes == attrs() && a.channel_id == "room"),
                "{r:?}"
            ),
        );
        get_user_attributes_by_keys: (
            |s, now, ch| s.get_user_attributes_by_keys(now, ch, Uid(2), vec!["role".into()]),
            |b| assert!(matches!(b, Body::GetUserAttributes(g) if g.uid == 2 && g.keys == vec!["role".to_string()])),
            attr_reply(),
            |r, _, _| assert!(matches!(&r, Ok(Reply::Attributes(a)) if a.attributes == attrs()), "{r:?}"),
        );
        get_channel_attributes: (
            |s, now, ch| s.get_channel_attributes(now, ch),
            |b| assert!(matches!(b, Body::GetChannelAttributes(g) if g.keys.is_empty())),
            attr_reply(),
            |r, _, _| assert!(
                matches!(&r, Ok(Reply::Attributes(a)) if a.last_update_uid == Some(Uid(2)) && a.last_update_ts == 9),
                "{r:?}"
            ),
        );
        get_channel_attributes_by_keys: (
            |s, now, ch| s.get_channel_attributes_by_keys(now, ch, vec!["role".into()]),
            |b| assert!(matches!(b, Body::GetChannelAttributes(g) if g.keys == vec!["role".to_string()])),
            attr_reply(),
            |r, _, _| assert!(matches!(&r, Ok(Reply::Attributes(a)) if a.attributes == attrs()), "{r:?}"),
        );
        get_channel_user_count: (
            |s, now, ch| s.get_channel_user_count(now, ch, vec!["room".into(), "empty".into()]),
            |b| assert!(
                matches!(b, Body::GetUserCount(g) if g.region == Region::Cn.to_wire() && g.channel_ids.len() == 2)
            ),
            Body::UserCount(wire::UserCountReply {
                counts: [("room".into(), 2), ("empty".into(), 0)].into(),
            }),
            |r, _, _| {
                let Ok(Reply::UserCount(c)) = r else {
                    panic!("{r:?}")
                };
                assert_eq!(c.user_count.get("room"), Some(&2));
                assert_eq!(c.user_count.get("empty"), Some(&0));
            },
        );
        get_channel_user_list_by_attribute: (
            |s, now, ch| s.get_channel_user_list_by_attribute(now, ch, "role".into(), "host".into()),
            |b| assert!(
                matches!(b, Body::GetUserListByAttribute(g) if g.key == "role" && g.value == "host")
            ),
            Body::UserList(wire::UserListReply { uids: vec![2] }),
            |r, _, _| assert!(matches!(&r, Ok(Reply::UserList(l)) if l.users == vec![Uid(2)]), "{r:?}"),
        );
        refresh_token: (
            |s, now, _| s.refresh_token(now, "new-token".into()),
            |b| assert!(matches!(b, Body::RefreshToken(r) if r.token == "new-token")),
            Body::RefreshTokenReply(wire::RefreshTokenReply {
                token_expires_at_ms: 0,
                server_time_ms: 1,
            }),
            done,
        );
        leave_channel: (
            |s, now, ch| s.leave_channel(now, ch, Attributes::new()),
            |b| assert!(matches!(b, Body::Leave(l) if l.channel.as_ref().unwrap().channel_id == "room")),
            ok(),
            |r, t, ch| {
                assert_eq!(r, Ok(Reply::Done));
                assert!(!t.s.is_joined(ch));
            },
        );
        logout: (
            |s, now, _| s.logout(now),
            |b| assert!(matches!(b, Body::Logout(_))),
            ok(),
            |r, t, _| {
                assert_eq!(r, Ok(Reply::Done));
                assert!(t.events.contains(&state(S::Disconnected, R::Logout)));
                assert_eq!(t.acts().last(), Some(&Act::Close));
            },
        );
    }
}

#[test]
fn server_errors_complete_with_their_code() {
    let mut t = Script::logged_in();
    let ch = t.joined("room", 3, 0);
    for code in [4003u32, 5101, 5103, 5108, 2004] {
        let id = t.s.get_channel_attributes(t.now, ch).unwrap();
        t.take_sent();
        t.feed(
            id.0,
            Body::Error(wire::ErrorReply {
                code,
                message: "no".into(),
            }),
        );
        assert_eq!(t.completion(id).unwrap_err().code.code(), code);
    }
    // A refused join leaves the channel out.
    let other = t.s.create_channel(Region::Cn, "full").unwrap();
    let id = t.s.join_channel(t.now, other, Attributes::new()).unwrap();
    t.take_sent();
    t.feed(
        id.0,
        Body::Error(wire::ErrorReply {
            code: 5102,
            message: "full".into(),
        }),
    );
    assert_eq!(
        t.completion(id).unwrap_err().code,
        ErrorCode::CHANNEL_USER_LIMIT_EXCEEDED
    );
    assert!(!t.s.is_joined(other));
}

#[test]
fn every_push_becomes_its_event() {
    let mut t = Script::logged_in();
    let ch = t.joined("room", 4, 0);
    let attrs: Attributes = [("k".to_string(), "v".to_string())].into();
    t.push(user_push(1, "p2p"));
    t.push(channel_push(4, 1, "bcast"));
    t.push(Body::Membership(wire::MembershipPush {
        channel: 4,
        joined: vec![2, ME],
        left: vec![3],
    }));
    t.push(Body::Membership(wire::MembershipPush {
        channel: 4,
        joined: vec![ME],
        left: vec![],
    }));
    t.push(Body::UserCountChanged(wire::UserCountPush {
        channel: 4,
        count: 2,
    }));
    for op in [
        wire::AttributeOp::Set,
        wire::AttributeOp::Delete,
        wire::AttributeOp::AddOrUpdate,
        wire::AttributeOp::Clear,
    ] {
        t.push(Body::UserAttributesChanged(wire::UserAttributesPush {
            channel: 4,
            uid: 2,
            op: op as i32,
            attributes: attrs.clone(),
            keys: vec!["k".into()],
            timestamp_ms: 11,
        }));
        t.push(Body::ChannelAttributesChanged(
            wire::ChannelAttributesPush {
                channel: 4,
                last_update_uid: 2,
                op: op as i32,
                attributes: attrs.clone(),
                keys: vec!["k".into()],
                timestamp_ms: 12,
            },
        ));
    }
    // A push for a channel this session does not know is ignored.
    t.push(channel_push(99, 1, "stray"));
    let events = t.take_events();
    let u = Uid(2);
    let expected = vec![
        Event::MessageFromUser {
            from_uid: u,
            message: Message::new("text", "p2p"),
            timestamp_ms: 5,
        },
        Event::ChannelMessage {
            channel: ch,
            from_uid: u,
            message: Message::new("text", "bcast"),
            timestamp_ms: 5,
        },
        Event::NotifyJoinChannel {
            channel: ch,
            uids: vec![u],
        },
        Event::NotifyLeaveChannel {
            channel: ch,
            uids: vec![Uid(3)],
        },
        Event::NotifyUserCountChange {
            channel: ch,
            count: 2,
        },
        Event::NotifyUserAttributesSet {
            channel: ch,
            uid: u,
            attributes: attrs.clone(),
            last_update_ts: 11,
        },
        Event::NotifyChannelAttributesSet {
            channel: ch,
            last_update_uid: u,
            last_update_ts: 12,
            attributes: attrs.clone(),
        },
        Event::NotifyUserAttributesDelete {
            channel: ch,
            uid: u,
            keys: vec!["k".into()],
            last_update_ts: 11,
        },
        Event::NotifyChannelAttributesDelete {
            channel: ch,
            last_update_uid: u,
            last_update_ts: 12,
            keys: vec!["k".into()],
        },
        Event::NotifyUserAttributesAddOrUpdate {
            channel: ch,
            uid: u,
            attributes: attrs.clone(),
            last_update_ts: 11,
        },
        Event::NotifyChannelAttributesAddOrUpdate {
            channel: ch,
            last_update_uid: u,
            last_update_ts: 12,
            attributes: attrs.clone(),
        },
        Event::NotifyUserAttributesClear {
            channel: ch,
            uid: u,
            last_update_ts: 11,
        },
        Event::NotifyChannelAttributesClear {
            channel: ch,
            last_update_uid: u,
            last_update_ts: 12,
        },
    ];
    assert_eq!(events, expected);
}
