//! Login, logout, tokens, and the states and refusals around them.

use crate::support::*;

#[test]
fn login_success_goes_connecting_then_connected() {
    let mut t = Script::new();
    assert_eq!(t.s.connection_state(), (S::Disconnected, R::Init));
    let id =
        t.s.login(t.now, Uid(ME), Some("tok".into()), Some(Region::Us))
            .unwrap();
    t.drain();
    assert_eq!(t.acts(), vec![Act::Connect]);
    assert!(
        t.sent.is_empty(),
        "nothing is sent before the transport opens"
    );
    t.connected();
    let login = t.last_sent();
    assert_eq!(login.request_id, id.0);
    let Body::Login(req) = login.body else {
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
    t.connected();
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
    assert_eq!(t.acts().last(), Some(&Act::Close));
    // And it can log in again.
    assert!(t.s.login(t.now, Uid(ME), None, None).is_ok());
}

#[test]
fn login_times_out_after_the_login_timeout() {
    let mut t = Script::new();
    let id = t.s.login(t.now, Uid(ME), None, None).unwrap();
    t.connected();
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
    assert_eq!(t.acts(), vec![Act::Close]);
    t.run_for(Duration::from_secs(60));
    assert!(
        !t.acts().contains(&Act::Connect),
        "no reconnect after a kick"
    );
}

#[test]
fn a_kick_by_the_apps_backend_ends_the_session_and_its_neighbours_codes_do_not() {
    for (code, kicked) in [
        (4099, false),
        (4100, true),
        (4150, true),
        (4199, true),
        (4200, false),
    ] {
        let mut t = Script::logged_in();
        t.push(Body::Close(wire::Close {
            code,
            reason: "spam".into(),
        }));
        if kicked {
            assert_eq!(
                t.s.connection_state(),
                (S::Disconnected, R::Kicked),
                "{code}"
            );
            assert_eq!(t.acts(), vec![Act::Close], "{code}");
            t.run_for(Duration::from_secs(60));
            assert!(!t.acts().contains(&Act::Connect), "{code}: no reconnect");
        } else {
            assert_eq!(
                t.s.connection_state().0,
                S::Reconnecting,
                "{code}: a lost link"
            );
        }
    }
}

#[test]
fn token_will_expire_fires_before_the_expiry() {
    let mut t = Script::new();
    let id = t.s.login(t.now, Uid(ME), Some("tok".into()), None).unwrap();
    t.connected();
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

#[test]
fn an_expired_token_on_relogin_pauses_until_refresh() {
    let mut t = Script::logged_in();
    t.disconnected();
    t.run_for(Duration::from_secs(1));
    t.connected();
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
        !t.acts().contains(&Act::Connect),
        "paused until refresh_token"
    );
    let id = t.s.refresh_token(t.now, "fresh".into()).unwrap();
    assert_eq!(t.completion(id), Ok(Reply::Done));
    assert_eq!(t.acts(), vec![Act::Connect]);
    t.connected();
    let Body::Login(req) = t.last_sent().body else {
        panic!()
    };
    assert_eq!(req.token, "fresh");
}

#[test]
fn logout_while_reconnecting_completes_at_once() {
    let mut t = Script::logged_in();
    t.disconnected();
    let id = t.s.logout(t.now).unwrap();
    assert_eq!(t.completion(id), Ok(Reply::Done));
    assert_eq!(t.s.connection_state(), (S::Disconnected, R::Logout));
    t.actions.clear();
    t.run_for(Duration::from_secs(60));
    assert!(t.acts().is_empty());
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
        t.acts().contains(&Act::Connect),
        "it should dial again with the new token"
    );
}

#[test]
fn close_4007_ends_the_session_as_remote_login() {
    let mut t = Script::logged_in();
    let ch = t.joined_at("room", 1, 0, 0xA);
    let info = t.s.get_instance_info(t.now).unwrap();
    let send =
        t.s.send_message_to_user(
            t.now,
            Uid(2),
            Message::new("t", "x"),
            SendOptions::reliable(),
        )
        .unwrap();
    t.take_sent();
    t.push(Body::Close(wire::Close {
        code: 4007,
        reason: "replaced".into(),
    }));
    assert_eq!(t.s.connection_state(), (S::Disconnected, R::RemoteLogin));
    assert!(t.events.contains(&state(S::Disconnected, R::RemoteLogin)));
    assert!(is_1007(t.completion(info)));
    assert!(is_1007(t.completion(send)));
    assert!(!t.s.is_joined(ch));
    assert_eq!(t.acts(), vec![Act::Close]);
    t.run_for(Duration::from_secs(60));
    assert_eq!(t.acts(), vec![Act::Close], "no reconnect");
}

#[test]
fn a_token_will_expire_push_rearms_the_warning_only_for_another_expiry() {
    // Logged in with a token expiring at 40 s (server clock 1 s): the
    // Session's own warning comes 30 s before, at 9 s (39 s left, less 30).
    let mut reply = Script::login_reply(9, 0);
    reply.token_expires_at_ms = 40_000;
    let mut t = Script::logged_in_with(SessionConfig::new(10000), reply);
    let warned = |events: &[Event]| {
        events
            .iter()
            .filter_map(|e| match e {
                Event::TokenWillExpire { expires_at_ms } => Some(*expires_at_ms),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    // The server's push for the same expiry changes nothing: one warning.
    t.push(Body::TokenWillExpire(wire::TokenWillExpirePush {
        token_expires_at_ms: 40_000,
        server_time_ms: 2_000,
    }));
    t.run_for(Duration::from_millis(8_900));
    assert_eq!(warned(&t.take_events()), Vec::<u64>::new());
    t.run_for(Duration::from_millis(200));
    assert_eq!(warned(&t.take_events()), vec![40_000]);
    // A push for another expiry (the server knows better) is believed:
    // warned for it at once, since less than 30 s are left.
    t.push(Body::TokenWillExpire(wire::TokenWillExpirePush {
        token_expires_at_ms: 35_000,
        server_time_ms: 10_000,
    }));
    t.run_for(Duration::from_millis(1));
    assert_eq!(warned(&t.take_events()), vec![35_000]);
}
