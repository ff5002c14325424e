//! The Session driven by scripted server frames and a fake clock.

use std::time::{Duration, Instant};

use bytes::Bytes;
use hummer_channel::client::{
    AttributeOptions, ChannelHandle, ConnectionReason as R, ConnectionState as S, Event,
    LostStream, Reply, RequestId, SendOptions, Session, SessionConfig, TransportAction,
};
use hummer_channel::wire::{self, encode_frame, Body, Frame};
use hummer_channel::{Attributes, CommandError, ErrorCode, Message, Region, Uid};

const ME: u64 = 7;
/// The P2P stream's epoch in the scripted server's login replies.
const P2P_EPOCH: u64 = 0x5050;
/// The epoch of every channel the scripted server numbers.
const CH_EPOCH: u64 = 0xC0FFEE;

/// A Session, its fake clock, and everything it has output so far.
struct Script {
    s: Session,
    now: Instant,
    sent: Vec<Frame>,
    events: Vec<Event>,
    actions: Vec<TransportAction>,
}

impl Script {
    fn new() -> Self {
        Self::with(SessionConfig::new(10000))
    }

    fn with(config: SessionConfig) -> Self {
        let now = Instant::now();
        Script {
            s: Session::new(config, now),
            now,
            sent: Vec::new(),
            events: Vec::new(),
            actions: Vec::new(),
        }
    }

    fn drain(&mut self) {
        while let Some(a) = self.s.poll_transport() {
            self.actions.push(a);
        }
        while let Some(b) = self.s.poll_transmit() {
            self.sent
                .push(wire::decode_frame(b, 64 * 1024).expect("the Session sends valid frames"));
        }
        while let Some(e) = self.s.poll_event() {
            self.events.push(e);
        }
    }

    fn take_events(&mut self) -> Vec<Event> {
        self.drain();
        std::mem::take(&mut self.events)
    }

    fn take_sent(&mut self) -> Vec<Frame> {
        self.drain();
        std::mem::take(&mut self.sent)
    }

    fn last_sent(&mut self) -> Frame {
        self.take_sent().pop().expect("a frame was sent")
    }

    fn feed(&mut self, request_id: u64, body: Body) {
        let bytes = encode_frame(&Frame {
            request_id,
            body: Some(body),
        });
        self.s.handle_frame(self.now, bytes).expect("valid frame");
        self.drain();
    }

    fn push(&mut self, body: Body) {
        self.feed(0, body);
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
        self.s.handle_timeout(self.now);
        self.drain();
    }

    /// Jumps the clock to each deadline in turn until `until` has passed.
    fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        while let Some(t) = self.s.poll_timeout() {
            if t > end {
                break;
            }
            self.now = self.now.max(t);
            self.s.handle_timeout(self.now);
            self.drain();
        }
        self.now = end;
        self.s.handle_timeout(self.now);
        self.drain();
    }

    fn login_reply(epoch: u64, p2p_seq: u64) -> wire::LoginReply {
        wire::LoginReply {
            instance_id: 55,
            token_expires_at_ms: 0,
            server_time_ms: 1_000,
            server_epoch: epoch,
            p2p_seq,
            p2p_gap: None,
            is_anonymous: true,
            resumed: false,
            p2p_epoch: P2P_EPOCH,
            ping_interval_ms: 15_000,
            idle_timeout_ms: 45_000,
            ..Default::default()
        }
    }

    /// Logs in and returns the login request's frame.
    fn logged_in() -> Self {
        let mut t = Script::new();
        t.s.login(t.now, Uid(ME), None, Some(Region::Cn)).unwrap();
        t.s.handle_connected(t.now);
        let login = t.last_sent();
        t.feed(login.request_id, Body::LoginReply(Self::login_reply(9, 0)));
        t.take_events();
        t.actions.clear();
        t
    }

    /// Creates and joins `id`, the server giving it push number `number`.
    fn joined(&mut self, id: &str, number: u32, seq: u64) -> ChannelHandle {
        let ch = self.s.create_channel(Region::Cn, id).unwrap();
        self.s
            .join_channel(self.now, ch, Attributes::new())
            .unwrap();
        let join = self.last_sent();
        self.feed(
            join.request_id,
            Body::JoinReply(wire::JoinReply {
                channel: number,
                seq,
                gap: None,
                member_offline: false,
                replay_truncated_at: 0,
                epoch: CH_EPOCH,
            }),
        );
        assert_eq!(self.completion(RequestId(join.request_id)), Ok(Reply::Done));
        ch
    }

    /// The completion of `id` among the events so far (removed).
    fn completion(&mut self, id: RequestId) -> Result<Reply, hummer_channel::ServiceError> {
        self.drain();
        let pos = self
            .events
            .iter()
            .position(|e| matches!(e, Event::Completed { request, .. } if *request == id))
            .unwrap_or_else(|| panic!("no completion for {id:?} in {:?}", self.events));
        match self.events.remove(pos) {
            Event::Completed { result, .. } => result,
            _ => unreachable!(),
        }
    }

    fn completions(&self) -> usize {
        self.events
            .iter()
            .filter(|e| matches!(e, Event::Completed { .. }))
            .count()
    }
}

fn state(state: S, reason: R) -> Event {
    Event::ConnectionStateChanged { state, reason }
}

fn chat(text: &str) -> wire::ChatMessage {
    wire::ChatMessage {
        r#type: "text".into(),
        content: Bytes::copy_from_slice(text.as_bytes()),
        app_extras: Default::default(),
    }
}

fn user_push(seq: u64, text: &str) -> Body {
    Body::UserMessage(wire::UserMessagePush {
        from_uid: 2,
        message: Some(chat(text)),
        timestamp_ms: 5,
        seq,
    })
}

fn channel_push(number: u32, seq: u64, text: &str) -> Body {
    Body::ChannelMessage(wire::ChannelMessagePush {
        channel: number,
        from_uid: 2,
        message: Some(chat(text)),
        timestamp_ms: 5,
        seq,
    })
}

fn room_key(id: &str) -> wire::ChannelKey {
    wire::ChannelKey {
        region: Region::Cn.to_wire(),
        channel_id: id.into(),
    }
}

/// A channel a resumed login kept, as the server lists it in its reply.
fn resumed_channel(id: &str, number: u32, seq: u64, epoch: u64) -> wire::ResumedChannel {
    wire::ResumedChannel {
        channel: Some(room_key(id)),
        state: Some(wire::JoinReply {
            channel: number,
            seq,
            epoch,
            ..Default::default()
        }),
    }
}

fn texts(events: &[Event]) -> Vec<String> {
    let text = |m: &Message| String::from_utf8_lossy(&m.content).into_owned();
    events.iter().filter_map(Event::message).map(text).collect()
}

// ---- login and the connection states ---------------------------------------

#[test]
fn login_success_goes_connecting_then_connected() {
    let mut t = Script::new();
    assert_eq!(t.s.connection_state(), (S::Disconnected, R::Init));
    let id =
        t.s.login(t.now, Uid(ME), Some("tok".into()), Some(Region::Us))
            .unwrap();
    t.drain();
    assert_eq!(t.actions, vec![TransportAction::Connect]);
    assert!(
        t.sent.is_empty(),
        "nothing is sent before the transport opens"
    );
    t.s.handle_connected(t.now);
    let login = t.last_sent();
    assert_eq!(login.request_id, id.0);
    let Some(Body::Login(req)) = login.body else {
        panic!("not a login: {login:?}")
    };
    assert_eq!(
        (req.protocol_version, req.appid, req.uid, req.token.as_str()),
        (2, 10000, ME, "tok")
    );
    assert_eq!(req.region, Region::Us.to_wire());
    assert!(req.resume.is_none());
    t.feed(id.0, Body::LoginReply(Script::login_reply(9, 0)));
    let events = t.take_events();
    assert_eq!(events[0], state(S::Connecting, R::Login));
    assert_eq!(events[1], state(S::Connected, R::LoginSuccess));
    assert!(matches!(
        &events[2],
        Event::Completed { request, result: Ok(Reply::Login(info)) }
            if *request == id && info.instance_id == 55 && info.is_anonymous
    ));
    assert_eq!(t.s.instance_id(), Some(55));
}

#[test]
fn login_failure_reports_the_code_and_disconnects() {
    let mut t = Script::new();
    let id = t.s.login(t.now, Uid(ME), Some("bad".into()), None).unwrap();
    t.s.handle_connected(t.now);
    t.take_sent();
    t.feed(
        id.0,
        Body::Error(wire::ErrorReply {
            code: 2002,
            message: "bad signature".into(),
        }),
    );
    let err = t.completion(id).unwrap_err();
    assert_eq!(err.code, ErrorCode::INVALID_TOKEN);
    assert!(t.events.contains(&state(S::Disconnected, R::LoginFailure)));
    assert_eq!(t.actions.last(), Some(&TransportAction::Close));
    // And it can log in again.
    assert!(t.s.login(t.now, Uid(ME), None, None).is_ok());
}

#[test]
fn login_times_out_after_the_login_timeout() {
    let mut t = Script::new();
    let id = t.s.login(t.now, Uid(ME), None, None).unwrap();
    t.s.handle_connected(t.now);
    t.run_for(Duration::from_millis(11_900));
    assert_eq!(t.completions(), 0);
    t.run_for(Duration::from_millis(200));
    assert_eq!(
        t.completion(id).unwrap_err().code,
        ErrorCode::OPERATION_TIMEOUT
    );
    assert!(t.events.contains(&state(S::Disconnected, R::LoginTimeout)));
}

#[test]
fn a_transport_that_fails_to_open_is_retried_until_the_login_timeout() {
    let mut t = Script::new();
    let id = t.s.login(t.now, Uid(ME), None, None).unwrap();
    t.drain();
    t.s.handle_disconnected(t.now);
    t.run_for(Duration::from_secs(1));
    let dials = t
        .actions
        .iter()
        .filter(|a| **a == TransportAction::Connect)
        .count();
    assert!(dials >= 2, "redialled: {:?}", t.actions);
    t.s.handle_connected(t.now);
    let login = t.last_sent();
    assert_eq!(login.request_id, id.0, "the application's login id is kept");
    t.feed(id.0, Body::LoginReply(Script::login_reply(9, 0)));
    assert!(matches!(t.completion(id), Ok(Reply::Login(_))));
}

#[test]
fn commands_in_the_wrong_state_are_refused_locally() {
    let mut t = Script::new();
    assert_eq!(t.s.logout(t.now), Err(CommandError::NotLoggedIn));
    assert_eq!(t.s.get_instance_info(t.now), Err(CommandError::NotLoggedIn));
    let ch = t.s.create_channel(Region::Cn, "room").unwrap();
    assert_eq!(
        t.s.join_channel(t.now, ch, Attributes::new()),
        Err(CommandError::NotLoggedIn)
    );
    t.s.login(t.now, Uid(ME), None, None).unwrap();
    assert_eq!(
        t.s.login(t.now, Uid(ME), None, None),
        Err(CommandError::AlreadyLoggedIn)
    );
    assert_eq!(
        t.s.get_instance_info(t.now),
        Err(CommandError::NotConnected)
    );
    assert!(t.take_sent().is_empty());

    let mut t = Script::logged_in();
    let ch = t.s.create_channel(Region::Cn, "room").unwrap();
    let e =
        t.s.send_message_to_channel(t.now, ch, Message::new("t", "x"), SendOptions::default())
            .unwrap_err();
    assert_eq!(e, CommandError::NotInChannel);
    assert_eq!(e.code(), ErrorCode::USER_NOT_IN_CHANNEL);
    assert_eq!(
        t.s.get_channel_user_list(t.now, ChannelHandle(99)),
        Err(CommandError::UnknownChannel)
    );
    assert!(t.take_sent().is_empty());
}

#[test]
fn arguments_are_validated_before_anything_is_sent() {
    let mut t = Script::logged_in();
    let ch = t.joined("room", 1, 0);
    let codes = [
        (
            t.s.create_channel(Region::Cn, "").unwrap_err().code(),
            ErrorCode::INVALID_PARAMETER,
        ),
        (
            t.s.create_channel(Region::Cn, &"c".repeat(65))
                .unwrap_err()
                .code(),
            ErrorCode::INVALID_PARAMETER,
        ),
        (
            t.s.send_message_to_user(
                t.now,
                Uid(2),
                Message::new("t", vec![0u8; 40_000]),
                SendOptions::default(),
            )
            .unwrap_err()
            .code(),
            ErrorCode::MSG_SIZE_LIMIT_EXCEEDED,
        ),
        (
            t.s.send_message_to_user(
                t.now,
                Uid(0),
                Message::new("t", "x"),
                SendOptions::default(),
            )
            .unwrap_err()
            .code(),
            ErrorCode::INVALID_PARAMETER,
        ),
        (
            t.s.query_users_online_status(t.now, &vec![Uid(1); 257])
                .unwrap_err()
                .code(),
            ErrorCode::INVALID_PARAMETER,
        ),
        (
            t.s.set_local_user_attributes(
                t.now,
                ch,
                [("bad key".to_string(), "v".to_string())].into(),
                AttributeOptions::default(),
            )
            .unwrap_err()
            .code(),
            ErrorCode::INVALID_PARAMETER,
        ),
        (
            t.s.set_local_user_attributes(
                t.now,
                ch,
                (0..33).map(|i| (format!("k{i}"), String::new())).collect(),
                AttributeOptions::default(),
            )
            .unwrap_err()
            .code(),
            ErrorCode::USER_ATTRIBUTES_ITEMS_OVERFLOW,
        ),
        (
            t.s.set_channel_attributes(
                t.now,
                ch,
                (0..5)
                    .map(|i| (format!("k{i}"), "v".repeat(8000)))
                    .collect(),
                AttributeOptions::default(),
            )
            .unwrap_err()
            .code(),
            ErrorCode::CHANNEL_ATTRIBUTES_SIZE_OVERFLOW,
        ),
        (
            t.s.get_channel_user_count(t.now, ch, (0..33).map(|i| i.to_string()).collect())
                .unwrap_err()
                .code(),
            ErrorCode::CHANNEL_COUNT_LIMIT_EXCEEDED,
        ),
        (
            t.s.delete_channel_attributes_by_keys(t.now, ch, vec![], AttributeOptions::default())
                .unwrap_err()
                .code(),
            ErrorCode::INVALID_PARAMETER,
        ),
        (
            t.s.join_channel(t.now, ch, Attributes::new())
                .unwrap_err()
                .code(),
            ErrorCode::INVALID_PARAMETER,
        ),
    ];
    for (i, (got, want)) in codes.into_iter().enumerate() {
        assert_eq!(got, want, "case {i}");
    }
    assert!(t.take_sent().is_empty(), "nothing went out");
}

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

// ---- every operation: its request frame and its completion -----------------

/// Runs `cmd`, checks the frame it sends, answers with `reply` and returns the completion.
fn round_trip(
    t: &mut Script,
    cmd: impl FnOnce(&mut Session, Instant) -> Result<RequestId, CommandError>,
    check: impl FnOnce(&Body),
    reply: Body,
) -> Result<Reply, hummer_channel::ServiceError> {
    let id = cmd(&mut t.s, t.now).expect("command accepted");
    let frame = t.last_sent();
    assert_eq!(frame.request_id, id.0);
    check(frame.body.as_ref().unwrap());
    t.feed(id.0, reply);
    t.completion(id)
}

fn ok() -> Body {
    Body::Ok(wire::Empty {})
}

#[test]
fn every_operation_sends_its_request_and_completes() {
    let mut t = Script::logged_in();
    let ch = t.joined("room", 3, 0);
    let opts = AttributeOptions::default();
    let attrs: Attributes = [("role".to_string(), "host".to_string())].into();

    let r = round_trip(
        &mut t,
        |s, now| s.set_user_region(now, Region::MeEast),
        |b| assert!(matches!(b, Body::SetUserRegion(r) if r.region == Region::MeEast.to_wire())),
        ok(),
    );
    assert_eq!(r, Ok(Reply::Done));

    let r = round_trip(
        &mut t,
        |s, now| s.get_instance_info(now),
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
    );
    let Ok(Reply::InstanceInfo(info)) = r else {
        panic!("{r:?}")
    };
    assert_eq!(info.channels[0].channel_id, "room");
    assert_eq!(info.uid, Uid(ME));

    let r = round_trip(
        &mut t,
        |s, now| {
            s.send_message_to_user(
                now,
                Uid(2),
                Message::new("t", "hi"),
                SendOptions { reliable: false },
            )
        },
        |b| {
            assert!(
                matches!(b, Body::SendToUser(r) if r.receiver == 2 && r.unreliable && r.message_id != 0 && r.message.as_ref().unwrap().content == "hi")
            )
        },
        Body::SendReply(wire::SendReply {
            timestamp_ms: 77,
            delivered_online: false,
            seq: 0,
        }),
    );
    assert!(matches!(r, Ok(Reply::MessageSent(m)) if m.timestamp_ms == 77 && !m.delivered_online));

    let r = round_trip(
        &mut t,
        |s, now| s.query_users_online_status(now, &[Uid(2), Uid(3)]),
        |b| assert!(matches!(b, Body::QueryOnline(q) if q.uids == vec![2, 3])),
        Body::OnlineStatus(wire::OnlineStatusReply {
            status: [(2, true), (3, false)].into(),
        }),
    );
    assert_eq!(
        r,
        Ok(Reply::OnlineStatus(
            [(Uid(2), true), (Uid(3), false)].into()
        ))
    );

    let r = round_trip(
        &mut t,
        |s, now| {
            s.send_message_to_channel(now, ch, Message::new("t", "all"), SendOptions::default())
        },
        |b| {
            assert!(
                matches!(b, Body::SendToChannel(r) if !r.unreliable && r.message_id != 0 && r.channel.as_ref().unwrap().channel_id == "room")
            )
        },
        Body::SendReply(wire::SendReply {
            timestamp_ms: 78,
            delivered_online: true,
            seq: 1,
        }),
    );
    assert!(matches!(r, Ok(Reply::MessageSent(_))));

    // The eight attribute writes: op, target, payload and the notification flag.
    type Write = Box<dyn FnOnce(&mut Session, Instant) -> Result<RequestId, CommandError>>;
    let a = attrs.clone();
    let writes: Vec<(Write, bool, wire::AttributeOp)> = vec![
        (
            Box::new(move |s, n| s.set_local_user_attributes(n, ch, a, opts)),
            true,
            wire::AttributeOp::Set,
        ),
        (
            Box::new(move |s, n| {
                s.delete_local_user_attributes_by_keys(
                    n,
                    ch,
                    vec!["role".into()],
                    AttributeOptions {
                        enable_notification: false,
                    },
                )
            }),
            true,
            wire::AttributeOp::Delete,
        ),
        (
            Box::new({
                let a = attrs.clone();
                move |s, n| s.add_or_update_local_user_attributes(n, ch, a, opts)
            }),
            true,
            wire::AttributeOp::AddOrUpdate,
        ),
        (
            Box::new(move |s, n| s.clear_local_user_attributes(n, ch, opts)),
            true,
            wire::AttributeOp::Clear,
        ),
        (
            Box::new({
                let a = attrs.clone();
                move |s, n| s.set_channel_attributes(n, ch, a, opts)
            }),
            false,
            wire::AttributeOp::Set,
        ),
        (
            Box::new(move |s, n| {
                s.delete_channel_attributes_by_keys(n, ch, vec!["role".into()], opts)
            }),
            false,
            wire::AttributeOp::Delete,
        ),
        (
            Box::new({
                let a = attrs.clone();
                move |s, n| s.add_or_update_channel_attributes(n, ch, a, opts)
            }),
            false,
            wire::AttributeOp::AddOrUpdate,
        ),
        (
            Box::new(move |s, n| s.clear_channel_attributes(n, ch, opts)),
            false,
            wire::AttributeOp::Clear,
        ),
    ];
    for (i, (cmd, user, op)) in writes.into_iter().enumerate() {
        let r = round_trip(
            &mut t,
            cmd,
            |b| {
                let w = match (b, user) {
                    (Body::WriteUserAttributes(w), true)
                    | (Body::WriteChannelAttributes(w), false) => w,
                    other => panic!("write {i}: wrong frame {other:?}"),
                };
                assert_eq!(w.op, op as i32, "write {i}");
                assert_eq!(
                    w.enable_notification,
                    i != 1,
                    "write {i}: notification flag"
                );
                match op {
                    wire::AttributeOp::Set | wire::AttributeOp::AddOrUpdate => {
                        assert_eq!(w.attributes, attrs)
                    }
                    wire::AttributeOp::Delete => assert_eq!(w.keys, vec!["role".to_string()]),
                    _ => assert!(w.attributes.is_empty() && w.keys.is_empty()),
                }
            },
            ok(),
        );
        assert_eq!(r, Ok(Reply::Done), "write {i}");
    }

    let r = round_trip(
        &mut t,
        |s, now| s.get_channel_user_list(now, ch),
        |b| assert!(matches!(b, Body::GetUserList(k) if k.channel_id == "room")),
        Body::UserList(wire::UserListReply { uids: vec![2, ME] }),
    );
    let Ok(Reply::UserList(list)) = r else {
        panic!("{r:?}")
    };
    assert_eq!(
        (list.appid, list.channel_id.as_str(), list.users),
        (10000, "room", vec![Uid(2), Uid(ME)])
    );

    let attr_reply = || {
        Body::Attributes(wire::AttributesReply {
            attributes: [("role".into(), "host".into())].into(),
            last_update_uid: 2,
            last_update_ts: 9,
        })
    };
    let r = round_trip(
        &mut t,
        |s, now| s.get_user_attributes(now, ch, Uid(2)),
        |b| assert!(matches!(b, Body::GetUserAttributes(g) if g.uid == 2 && g.keys.is_empty())),
        attr_reply(),
    );
    assert!(
        matches!(&r, Ok(Reply::Attributes(a)) if a.attributes == attrs && a.channel_id == "room"),
        "{r:?}"
    );
    let r = round_trip(
        &mut t,
        |s, now| s.get_user_attributes_by_keys(now, ch, Uid(2), vec!["role".into()]),
        |b| assert!(matches!(b, Body::GetUserAttributes(g) if g.keys == vec!["role".to_string()])),
        attr_reply(),
    );
    assert!(matches!(r, Ok(Reply::Attributes(_))));
    let r = round_trip(
        &mut t,
        |s, now| s.get_channel_attributes(now, ch),
        |b| assert!(matches!(b, Body::GetChannelAttributes(g) if g.keys.is_empty())),
        attr_reply(),
    );
    assert!(
        matches!(&r, Ok(Reply::Attributes(a)) if a.last_update_uid == Some(Uid(2)) && a.last_update_ts == 9),
        "{r:?}"
    );
    let r = round_trip(
        &mut t,
        |s, now| s.get_channel_attributes_by_keys(now, ch, vec!["role".into()]),
        |b| assert!(matches!(b, Body::GetChannelAttributes(g) if g.keys.len() == 1)),
        attr_reply(),
    );
    assert!(matches!(r, Ok(Reply::Attributes(_))));

    let r = round_trip(
        &mut t,
        |s, now| s.get_channel_user_count(now, ch, vec!["room".into(), "empty".into()]),
        |b| {
            assert!(
                matches!(b, Body::GetUserCount(g) if g.region == Region::Cn.to_wire() && g.channel_ids.len() == 2)
            )
        },
        Body::UserCount(wire::UserCountReply {
            counts: [("room".into(), 2), ("empty".into(), 0)].into(),
        }),
    );
    let Ok(Reply::UserCount(c)) = r else {
        panic!("{r:?}")
    };
    assert_eq!(c.user_count.get("empty"), Some(&0));

    let r = round_trip(
        &mut t,
        |s, now| s.get_channel_user_list_by_attribute(now, ch, "role".into(), "host".into()),
        |b| {
            assert!(
                matches!(b, Body::GetUserListByAttribute(g) if g.key == "role" && g.value == "host")
            )
        },
        Body::UserList(wire::UserListReply { uids: vec![2] }),
    );
    assert!(matches!(r, Ok(Reply::UserList(l)) if l.users == vec![Uid(2)]));

    let r = round_trip(
        &mut t,
        |s, now| s.refresh_token(now, "new-token".into()),
        |b| assert!(matches!(b, Body::RefreshToken(r) if r.token == "new-token")),
        Body::RefreshTokenReply(wire::RefreshTokenReply {
            token_expires_at_ms: 0,
            server_time_ms: 1,
        }),
    );
    assert_eq!(r, Ok(Reply::Done));

    let r = round_trip(
        &mut t,
        |s, now| s.leave_channel(now, ch, Attributes::new()),
        |b| {
            assert!(matches!(b, Body::Leave(l) if l.channel.as_ref().unwrap().channel_id == "room"))
        },
        ok(),
    );
    assert_eq!(r, Ok(Reply::Done));
    assert!(!t.s.is_joined(ch));

    let r = round_trip(
        &mut t,
        |s, now| s.logout(now),
        |b| assert!(matches!(b, Body::Logout(_))),
        ok(),
    );
    assert_eq!(r, Ok(Reply::Done));
    assert!(t.events.contains(&state(S::Disconnected, R::Logout)));
    assert_eq!(t.actions.last(), Some(&TransportAction::Close));
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

// ---- pushes and their events ------------------------------------------------

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

#[test]
fn a_ping_from_the_server_is_answered() {
    let mut t = Script::logged_in();
    t.feed(4, Body::Ping(wire::Ping { nonce: 42 }));
    let pong = t.last_sent();
    assert_eq!(
        (pong.request_id, pong.body),
        (4, Some(Body::Pong(wire::Pong { nonce: 42 })))
    );
}

#[test]
fn remote_login_disconnects_without_reconnecting() {
    let mut t = Script::logged_in();
    let id = t.s.get_instance_info(t.now).unwrap();
    t.push(Body::Close(wire::Close {
        code: 100,
        reason: "kicked".into(),
    }));
    assert_eq!(
        t.completion(id).unwrap_err().code,
        ErrorCode::CONNECTION_EXCEPTION
    );
    assert!(t.events.contains(&state(S::Disconnected, R::RemoteLogin)));
    assert_eq!(t.actions, vec![TransportAction::Close]);
    t.run_for(Duration::from_secs(60));
    assert!(
        !t.actions.contains(&TransportAction::Connect),
        "no reconnect after a kick"
    );
}

// ---- timers ------------------------------------------------------------------

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
        .filter(|f| matches!(f.body, Some(Body::Ping(_))))
        .count();
    assert_eq!(pings, 1, "one ping after 10 s idle");
    // The server answers nothing: after the idle timeout the link is dead.
    t.run_for(Duration::from_secs(21));
    assert!(t.events.contains(&state(S::Reconnecting, R::Interrupted)));
    assert!(t.actions.contains(&TransportAction::Close));
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
fn token_will_expire_fires_before_the_expiry() {
    let mut t = Script::new();
    let id = t.s.login(t.now, Uid(ME), Some("tok".into()), None).unwrap();
    t.s.handle_connected(t.now);
    t.take_sent();
    let mut reply = Script::login_reply(9, 0);
    reply.server_time_ms = 1_000_000;
    reply.token_expires_at_ms = 1_000_000 + 120_000;
    t.feed(id.0, Body::LoginReply(reply));
    t.take_events();
    let mut warned_at = None;
    for s in 1..=100 {
        t.advance(Duration::from_secs(1));
        t.push(Body::Pong(wire::Pong { nonce: 0 }));
        if t.take_events().contains(&Event::TokenWillExpire {
            expires_at_ms: 1_120_000,
        }) {
            warned_at = Some(s);
            break;
        }
    }
    assert_eq!(warned_at, Some(90), "30 s before a 120 s expiry");
}

// ---- link loss, reconnect and resume -------------------------------------------

#[test]
fn link_loss_fails_in_flight_requests_with_1007_and_reconnects_with_resume() {
    let mut t = Script::logged_in();
    let ch = t.joined("room", 4, 0);
    t.push(user_push(1, "a"));
    t.push(channel_push(4, 1, "b"));
    let info = t.s.get_instance_info(t.now).unwrap();
    t.take_sent();
    t.s.handle_disconnected(t.now);
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
    assert_eq!(
        t.actions,
        vec![TransportAction::Connect],
        "one dial after the backoff"
    );
    t.s.handle_connected(t.now);
    let relogin = t.last_sent();
    let Some(Body::Login(req)) = relogin.body else {
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
        !sent.iter().any(|f| matches!(f.body, Some(Body::Join(_)))),
        "no re-join of a kept channel: {sent:?}"
    );
    // Replayed and new messages under the new number; a duplicate is dropped.
    t.push(channel_push(8, 1, "b-again"));
    t.push(channel_push(8, 2, "c"));
    t.push(user_push(1, "a-again"));
    t.push(user_push(2, "d"));
    assert_eq!(texts(&t.take_events()), vec!["c", "d"]);
}

#[test]
fn a_rejoin_after_the_grace_period_reports_room_member_offline() {
    let mut t = Script::logged_in();
    let ch = t.joined("room", 4, 0);
    t.s.handle_disconnected(t.now);
    t.run_for(Duration::from_secs(1));
    t.s.handle_connected(t.now);
    let relogin = t.last_sent();
    t.feed(
        relogin.request_id,
        Body::LoginReply(Script::login_reply(9, 0)),
    );
    // Not resumed: the channel is joined again from its cursor.
    let rejoin = t.last_sent();
    let Some(Body::Join(j)) = &rejoin.body else {
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

/// v2: a restart is no longer inferred from `server_epoch`; the server says
/// what is gone, per stream: `p2p_gap` in the login reply and the re-join
/// reply's `gap` (new epochs). Each is reported once.
#[test]
fn a_server_restart_is_reported_as_lost_messages() {
    let mut t = Script::logged_in();
    let ch = t.joined("room", 4, 0);
    t.push(user_push(1, "a"));
    t.push(channel_push(4, 1, "b"));
    t.s.handle_disconnected(t.now);
    t.run_for(Duration::from_secs(1));
    t.s.handle_connected(t.now);
    let relogin = t.last_sent();
    let mut reply = Script::login_reply(1234, 0);
    reply.p2p_epoch = P2P_EPOCH + 1;
    reply.p2p_gap = Some(wire::SeqGap { from: 2, to: 0 });
    t.feed(relogin.request_id, Body::LoginReply(reply));
    let rejoin = t.last_sent();
    let Some(Body::Join(j)) = &rejoin.body else {
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
fn a_gap_is_fetched_and_what_cannot_be_fetched_is_reported_once() {
    let mut t = Script::logged_in();
    t.push(user_push(1, "1"));
    t.push(user_push(4, "4"));
    t.push(user_push(5, "5"));
    assert_eq!(texts(&t.take_events()), vec!["1"]);
    let fetches: Vec<Frame> = t
        .take_sent()
        .into_iter()
        .filter(|f| matches!(f.body, Some(Body::Fetch(_))))
        .collect();
    assert_eq!(fetches.len(), 1, "one fetch for the gap");
    let Some(Body::Fetch(f)) = &fetches[0].body else {
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
            Some(Body::Ack(a)) => Some(a.p2p_seq),
            _ => None,
        })
        .collect();
    assert_eq!(acks, vec![5]);
}

#[test]
fn unreliable_messages_are_delivered_without_sequence() {
    let mut t = Script::logged_in();
    t.push(user_push(0, "u1"));
    t.push(user_push(0, "u2"));
    assert_eq!(texts(&t.take_events()), vec!["u1", "u2"]);
}

#[test]
fn an_expired_token_on_relogin_pauses_until_refresh() {
    let mut t = Script::logged_in();
    t.s.handle_disconnected(t.now);
    t.run_for(Duration::from_secs(1));
    t.s.handle_connected(t.now);
    let relogin = t.last_sent();
    t.feed(
        relogin.request_id,
        Body::Error(wire::ErrorReply {
            code: 2003,
            message: "expired".into(),
        }),
    );
    assert!(t.take_events().contains(&Event::TokenExpired));
    assert_eq!(t.s.connection_state().0, S::Reconnecting);
    t.actions.clear();
    t.run_for(Duration::from_secs(60));
    assert!(
        !t.actions.contains(&TransportAction::Connect),
        "paused until refresh_token"
    );
    let id = t.s.refresh_token(t.now, "fresh".into()).unwrap();
    assert_eq!(t.completion(id), Ok(Reply::Done));
    assert_eq!(t.actions, vec![TransportAction::Connect]);
    t.s.handle_connected(t.now);
    let Some(Body::Login(req)) = t.last_sent().body else {
        panic!()
    };
    assert_eq!(req.token, "fresh");
}

#[test]
fn a_malformed_frame_is_an_error_and_drops_the_link() {
    let mut t = Script::logged_in();
    let err =
        t.s.handle_frame(t.now, Bytes::from_static(&[0xff, 0xff]))
            .unwrap_err();
    assert!(matches!(err, hummer_channel::WireError::Malformed(_)));
    t.drain();
    assert!(t.actions.contains(&TransportAction::Close));
    assert_eq!(t.s.connection_state(), (S::Reconnecting, R::Interrupted));
}

#[test]
fn logout_while_reconnecting_completes_at_once() {
    let mut t = Script::logged_in();
    t.s.handle_disconnected(t.now);
    let id = t.s.logout(t.now).unwrap();
    assert_eq!(t.completion(id), Ok(Reply::Done));
    assert_eq!(t.s.connection_state(), (S::Disconnected, R::Logout));
    t.actions.clear();
    t.run_for(Duration::from_secs(60));
    assert!(t.actions.is_empty());
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
            t.s.handle_disconnected(t.now);
            while !t.actions.contains(&TransportAction::Connect) {
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
fn a_full_queue_hands_the_message_back_and_signals_room() {
    let mut config = SessionConfig::new(1);
    config.max_outgoing_frames = 2;
    let mut t = Script::with(config);
    t.s.login(t.now, Uid(ME), None, None).unwrap();
    t.s.handle_connected(t.now);
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

#[test]
fn a_second_logout_in_flight_also_completes() {
    // Found by the `session` fuzz target: a reset completed only the logout
    // that caused it and lost a second one.
    let mut t = Script::logged_in();
    let first = t.s.logout(t.now).unwrap();
    let second = t.s.logout(t.now).unwrap();
    t.run_for(Duration::from_secs(6));
    assert_eq!(
        t.completion(first).unwrap_err().code,
        ErrorCode::OPERATION_TIMEOUT
    );
    assert!(t.completion(second).is_err());
    assert_eq!(t.s.connection_state(), (S::Disconnected, R::Logout));
}

// ---- found in review: hostile numbers, cut-short replays, stale tokens ----

/// Reconnects after a dropped link; returns the re-login frame.
fn relogin(t: &mut Script) -> Frame {
    t.s.handle_disconnected(t.now);
    t.drain();
    t.run_for(Duration::from_secs(2));
    t.s.handle_connected(t.now);
    t.last_sent()
}

fn cfg_buffer(n: usize) -> SessionConfig {
    let mut c = SessionConfig::new(10000);
    c.max_reorder_buffer = n;
    c
}

fn fetch_after(f: &Frame) -> u64 {
    match &f.body {
        Some(Body::Fetch(r)) => r.after_seq,
        other => panic!("not a fetch: {other:?}"),
    }
}

/// Peer-controlled sequence number u64::MAX + a new P2P epoch: the server's
/// gap starts at `p2p_seq + 1`, saturated, and nothing overflows.
#[test]
fn a_sequence_number_at_u64_max_does_not_overflow_on_restart_p2p() {
    let mut t = Script::new();
    t.s.login(t.now, Uid(ME), None, None).unwrap();
    t.s.handle_connected(t.now);
    let login = t.last_sent();
    t.feed(
        login.request_id,
        Body::LoginReply(Script::login_reply(9, u64::MAX)),
    );
    let re = relogin(&mut t);
    let Some(Body::Login(req)) = &re.body else {
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

/// Same with a channel: join reply seq = u64::MAX, then a new channel epoch.
#[test]
fn a_sequence_number_at_u64_max_does_not_overflow_on_restart_channel() {
    let mut t = Script::logged_in();
    t.joined("a", 1, u64::MAX);
    let re = relogin(&mut t);
    t.feed(re.request_id, Body::LoginReply(Script::login_reply(10, 0)));
    let rejoin = t.last_sent();
    let Some(Body::Join(j)) = &rejoin.body else {
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
    t.s.handle_connected(t.now);
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
    t.s.handle_connected(t.now);
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
        let Some(f) = sent
            .into_iter()
            .find(|f| matches!(f.body, Some(Body::Fetch(_))))
        else {
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
        matches!(&rejoin.body, Some(Body::Join(j)) if j.rejoin && j.epoch == CH_EPOCH && j.resume_seq == 1),
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
        .find(|f| matches!(f.body, Some(Body::Fetch(_))))
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
    assert!(
        !t.actions.contains(&TransportAction::Close),
        "a healthy link was closed"
    );
    assert_eq!(t.s.connection_state(), (S::Connected, R::LoginSuccess));
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

/// refresh_token during a re-login that is then refused as expired (it
/// carried the old token): the Session pauses and emits TokenExpired although
/// the application already gave it a fresh token.
#[test]
fn a_refresh_during_a_relogin_refused_as_expired_retries_with_the_new_token() {
    let mut t = Script::logged_in();
    let re = relogin(&mut t);
    t.take_events();
    t.actions.clear();
    let id = t.s.refresh_token(t.now, "fresh".into()).unwrap();
    assert_eq!(t.completion(id), Ok(Reply::Done));
    t.feed(
        re.request_id,
        Body::Error(wire::ErrorReply {
            code: 2003,
            message: "expired".into(),
        }),
    );
    t.run_for(Duration::from_secs(120));
    assert!(
        !t.events.contains(&Event::TokenExpired),
        "the token was already refreshed"
    );
    assert!(
        t.actions.contains(&TransportAction::Connect),
        "it should dial again with the new token"
    );
}
