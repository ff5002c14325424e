//! Login: anonymous and token logins, refusals, versions, instances, tokens, logout.

use crate::support::*;

#[test]
fn login_anonymous_and_with_token() {
    let mut n = Net::demo();
    let (_, r) = n.login(7);
    assert!(r.is_anonymous && !r.resumed);
    assert_ne!(r.instance_id, 0);
    assert_ne!(r.server_epoch, 0);
    assert_eq!(r.server_epoch, n.s.server_epoch());
    assert_eq!(r.server_time_ms, T0_UNIX_MS);
    assert_eq!(r.token_expires_at_ms, 0);

    n.advance(Duration::from_secs(2));
    let exp = T0_UNIX_MS / 1000 + 3600;
    let c = n.accept();
    let req = wire::LoginRequest {
        token: mint_token(DEMO_SECRET, DEMO_APPID, 8, exp),
        ..login_req(8)
    };
    match n.login_with(c, req) {
        Body::LoginReply(r) => {
            assert!(!r.is_anonymous);
            assert_eq!(r.token_expires_at_ms, exp * 1000);
            assert_eq!(r.server_time_ms, T0_UNIX_MS + 2000);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn login_refusals_keep_the_connection_open() {
    let mut n = Net::new({
        let mut cfg = ServerConfig::default();
        cfg.apps = vec![AppConfig::with_secret(1, ONE), {
            let mut cfg = AppConfig::with_secret(0, String::new());
            cfg.appid = DEMO_APPID;
            cfg.secret = Some(DEMO_SECRET.into());
            cfg.allow_appid_mode = true;
            cfg.kick_older_logins = false;
            cfg
        }];
        cfg
    });
    let now_s = T0_UNIX_MS / 1000;
    let c = n.accept();
    let with = |appid: u32, uid: u64, token: String| wire::LoginRequest {
        appid,
        token,
        ..login_req(uid)
    };
    let code = |b: Body| match b {
        Body::Error(e) => e.code,
        other => panic!("expected error, got {other:?}"),
    };
    // Bad signature, wrong uid, token of another appid.
    let r = n.login_with(c, with(1, 5, mint_token(OTHER, 1, 5, now_s + 60)));
    assert_eq!(code(r), 2002);
    let r = n.login_with(c, with(1, 5, mint_token(ONE, 1, 6, now_s + 60)));
    assert_eq!(code(r), 2002);
    let r = n.login_with(c, with(1, 5, mint_token(ONE, 2, 5, now_s + 60)));
    assert_eq!(code(r), 2002);
    let r = n.login_with(c, with(1, 5, "not.a.jwt".into()));
    assert_eq!(code(r), 2002);
    // Expired by the server's own clock (exp <= now).
    let r = n.login_with(c, with(1, 5, mint_token(ONE, 1, 5, now_s)));
    assert_eq!(code(r), 2003);
    // No appid mode for app 1.
    let r = n.login_with(c, with(1, 5, String::new()));
    assert_eq!(code(r), 2002);
    let r = n.login_with(c, with(99, 5, String::new()));
    assert_eq!(code(r), 2018);
    let r = n.login_with(c, login_req(0));
    assert_eq!(code(r), 2001);
    assert_eq!(n.s.connection_count(), 1);
    assert!(n.closed.is_empty());
    // Still usable: a good login now works, a second one is refused (2011).
    let r = n.login_with(c, with(1, 5, mint_token(ONE, 1, 5, now_s + 60)));
    assert!(matches!(r, Body::LoginReply(_)));
    assert_eq!(code(n.login_with(c, login_req(5))), 2011);
    assert!(n.closed.is_empty());
    // A request before login is no client's: 1009, and the link is closed.
    let d = n.accept();
    assert_eq!(n.err(d, Body::GetInstanceInfo(wire::Empty {})), 1009);
    assert!(n
        .closed
        .iter()
        .any(|(x, r)| *x == d && *r == CloseReason::NotLoggedIn));
    assert_eq!(n.s.connection_count(), 1);
}

#[test]
fn version_mismatch_is_refused_then_closed() {
    let mut n = Net::demo();
    let c = n.accept();
    let rid = n.send(
        c,
        Body::Login(wire::LoginRequest {
            protocol_version: 99,
            ..login_req(1)
        }),
    );
    let frames = n.frames(c);
    assert_eq!(frames.len(), 2);
    assert_eq!(frames[0].request_id, rid);
    match &frames[0].body {
        Body::Error(e) => {
            assert_eq!(e.code, 2010);
            assert!(e.message.contains("version 2"), "{}", e.message);
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(&frames[1].body, Body::Close(c) if c.code == 2010));
    assert!(matches!(
        n.closed.as_slice(),
        [(x, CloseReason::UnsupportedVersion)] if *x == c
    ));
    assert_eq!(n.s.connection_count(), 0);
}

#[test]
fn ping_is_answered_before_and_after_login() {
    let mut n = Net::demo();
    let c = n.accept();
    assert_eq!(
        n.req(c, Body::Ping(wire::Ping { nonce: 77 })),
        Body::Pong(wire::Pong { nonce: 77 })
    );
}

#[test]
fn kick_older_logins_closes_and_removes_them() {
    let mut n = Net::new({
        let mut cfg = ServerConfig::default();
        cfg.apps = vec![{
            let mut cfg = AppConfig::with_secret(0, String::new());
            cfg.appid = DEMO_APPID;
            cfg.secret = None;
            cfg.allow_appid_mode = true;
            cfg.kick_older_logins = true;
            cfg
        }];
        cfg
    });
    let (a, _) = n.login(1);
    let (old, _) = n.login(5);
    n.ok_join(a, "room");
    n.ok_join(old, "room");
    n.advance(Duration::from_secs(1));
    n.frames(a);
    n.frames(old);
    let (_new, _) = n.login(5);
    assert_eq!(close_code(&n.bodies(old)), Some(100));
    assert!(n.closed.contains(&(old, CloseReason::Kicked)));
    assert_eq!(n.s.instance_count(), 2);
    n.advance(Duration::from_secs(1));
    let bodies = n.bodies(a);
    assert!(matches!(&bodies[0], Body::Membership(m) if m.left == vec![5]));
}

#[test]
fn client_close_frame_and_instance_bound() {
    let mut n = Net::with(|cfg| {
        cfg.max_instances_per_uid = 2;
    });
    let (a, _) = n.login(1);
    n.raw(
        a,
        encode_frame(&Frame {
            request_id: 0,
            body: Some(Body::Close(wire::Close {
                code: 0,
                reason: "bye".into(),
            })),
        }),
    );
    assert!(n.closed.contains(&(a, CloseReason::ClosedByPeer)));
    assert!(n.frames(a).is_empty(), "no Close frame back");
    // Instance 1 is a lost link now; two more logins: the lost one makes room.
    let (_b, _) = n.login(1);
    let (_c, _) = n.login(1);
    assert_eq!(n.s.instance_count(), 2);
    // Both connected: a third is refused.
    let d = n.accept();
    assert!(matches!(n.login_with(d, login_req(1)), Body::Error(e) if e.code == 2012));
}

#[test]
fn a_login_with_another_protocol_version_gets_2010_then_close_2010() {
    for version in [1, 0, 3, u32::MAX] {
        let mut n = Net::demo();
        let c = n.accept();
        let rid = n.send(
            c,
            Body::Login(wire::LoginRequest {
                protocol_version: version,
                ..login_req(1)
            }),
        );
        let frames = n.frames(c);
        assert_eq!(frames.len(), 2, "version {version}: {frames:?}");
        assert_eq!(frames[0].request_id, rid);
        assert!(
            matches!(&frames[0].body, Body::Error(e) if e.code == 2010),
            "version {version}: {frames:?}"
        );
        assert!(
            matches!(&frames[1].body, Body::Close(x) if x.code == 2010),
            "version {version}: {frames:?}"
        );
        assert_eq!(n.closed, vec![(c, CloseReason::UnsupportedVersion)]);
        assert_eq!(n.s.instance_count(), 0);
    }
}

#[test]
fn a_second_login_on_a_logged_in_link_gets_2011_and_keeps_the_first() {
    let mut n = Net::demo();
    let (c, r) = n.login(1);
    let seconds = [
        login_req(1),
        login_req(2),
        resume_req(1, r.instance_id, r.p2p_epoch, 0, vec![]),
    ];
    for second in seconds {
        assert_eq!(code(n.login_with(c, second.clone())), 2011, "{second:?}");
    }
    assert!(n.closed.is_empty(), "the link stays open");
    assert_eq!(n.s.instance_count(), 1);
    match n.req(c, Body::GetInstanceInfo(wire::Empty {})) {
        Body::InstanceInfo(i) => assert_eq!((i.uid, i.instance_id), (1, r.instance_id)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_link_may_log_in_again_after_a_refused_login_or_a_logout() {
    for before in ["uid 0 refused", "unknown appid refused", "logged out"] {
        let mut n = Net::demo();
        let c = n.accept();
        match before {
            "uid 0 refused" => assert_eq!(code(n.login_with(c, login_req(0))), 2001),
            "unknown appid refused" => {
                let req = wire::LoginRequest {
                    appid: 99,
                    ..login_req(7)
                };
                assert_eq!(code(n.login_with(c, req)), 2018);
            }
            _ => {
                login_reply(n.login_with(c, login_req(6)));
                n.ok(c, Body::Logout(wire::Empty {}));
            }
        }
        let r = login_reply(n.login_with(c, login_req(7)));
        match n.req(c, Body::GetInstanceInfo(wire::Empty {})) {
            Body::InstanceInfo(i) => {
                assert_eq!((i.uid, i.instance_id), (7, r.instance_id), "{before}")
            }
            other => panic!("{before}: {other:?}"),
        }
        // Logged in now: another login is the 2011 refusal.
        assert_eq!(code(n.login_with(c, login_req(7))), 2011, "{before}");
        assert!(n.closed.is_empty(), "{before}");
    }
}

#[test]
fn a_login_past_max_instances_per_uid_gets_2012() {
    for max in [64, 3] {
        let mut n = Net::with(|cfg| {
            cfg.max_instances_per_uid = max;
        });
        for _ in 0..max {
            n.login(5);
        }
        let c = n.accept();
        assert_eq!(code(n.login_with(c, login_req(5))), 2012, "max {max}");
        assert_eq!(n.s.instance_count(), max);
        // Refused, not closed: the link can still log in another uid.
        assert!(n.closed.is_empty());
        login_reply(n.login_with(c, login_req(6)));
    }
}

#[test]
fn a_request_before_login_gets_1009_and_the_link_closes() {
    let requests = [
        Body::Logout(wire::Empty {}),
        Body::GetInstanceInfo(wire::Empty {}),
        to_user(2, "m"),
        to_channel("x", "m"),
        join("x"),
        leave("x"),
        Body::QueryOnline(wire::QueryOnlineRequest { uids: vec![1] }),
        Body::Fetch(wire::FetchRequest {
            channel: None,
            after_seq: 0,
        }),
        Body::RefreshToken(wire::RefreshTokenRequest { token: "t".into() }),
    ];
    let mut n = Net::demo();
    for r in requests {
        let what = format!("{r:?}");
        let c = n.accept();
        assert_eq!(n.err(c, r), 1009, "{what}");
        let close = n.frames(c);
        assert!(
            matches!(close.as_slice(), [DecodedFrame { body: Body::Close(x), .. }] if x.code == 1009),
            "{what}: {close:?}"
        );
        assert!(n.closed.iter().any(|(x, _)| *x == c), "{what}");
    }
    // Ping is answered, Ack ignored; then a login works.
    n.closed.clear();
    let c = n.accept();
    assert_eq!(
        n.req(c, Body::Ping(wire::Ping { nonce: 5 })),
        Body::Pong(wire::Pong { nonce: 5 })
    );
    n.ack(c, 3);
    assert!(n.frames(c).is_empty());
    assert!(n.closed.is_empty());
    login_reply(n.login_with(c, login_req(1)));
}

#[test]
fn a_resumed_login_on_a_new_link_closes_the_open_old_one_with_4007() {
    let mut n = Net::demo();
    let (a, _) = n.login(1);
    let (old, r) = n.login(2);
    let (new, x) = n.login_req_on_new(resume_req(2, r.instance_id, r.p2p_epoch, 0, vec![]));
    assert!(x.resumed && x.instance_id == r.instance_id);
    assert_eq!(n.closes_of(old), vec![CloseReason::Replaced]);
    assert!(matches!(&n.bodies(old)[..], [Body::Close(c)] if c.code == 4007));
    assert_eq!(n.s.instance_count(), 2);
    // The old link hears nothing more; pushes go to the new one.
    n.sent(a, to_user(2, "after"));
    n.send(old, Body::Ping(wire::Ping { nonce: 1 }));
    assert!(n.frames(old).is_empty());
    assert_eq!(user_msgs(&n.bodies(new)), vec![(1, "after".into())]);
}

#[test]
fn the_login_reply_carries_the_heartbeat_timings() {
    let custom = {
        let mut cfg = ServerConfig::demo();
        cfg.ping_interval = secs(2);
        cfg.idle_timeout = secs(10);
        cfg
    };
    // A ping interval longer than a third of the idle timeout is told as
    // that third: a client that follows it is never idle.
    let too_long = {
        let mut cfg = ServerConfig::demo();
        cfg.ping_interval = secs(15);
        cfg.idle_timeout = secs(6);
        cfg
    };
    for (config, ping, idle) in [
        (ServerConfig::demo(), 15_000, 45_000),
        (custom, 2_000, 10_000),
        (too_long, 2_000, 6_000),
    ] {
        let mut n = Net::new(config);
        let (_, r) = n.login(1);
        assert_eq!((r.ping_interval_ms, r.idle_timeout_ms), (ping, idle));
    }
}

/// Before 39a6dd7 the link got ErrorReply{1009} and stayed open, so it
/// could send requests (decoded at its cost) forever.
#[test]
fn a_request_before_login_gets_1009_then_close_1009() {
    let requests = [
        Body::GetInstanceInfo(wire::Empty {}),
        to_user(2, "m"),
        to_channel("room", "m"),
        join("room"),
        query_online(),
        write_attrs("room", true),
        fetch(None, 0),
        Body::RefreshToken(wire::RefreshTokenRequest { token: "t".into() }),
        Body::Logout(wire::Empty {}),
    ];
    let mut n = Net::demo();
    for r in requests {
        let what = format!("{r:?}");
        let c = n.accept();
        assert_eq!(n.err(c, r), 1009, "{what}");
        assert_eq!(last_close(&n.bodies(c)), Some(1009), "{what}");
        assert_eq!(n.closes_of(c), vec![CloseReason::NotLoggedIn], "{what}");
    }
    // A Ping is answered and the link stays open for its login.
    let c = n.accept();
    let pong = n.req(c, Body::Ping(wire::Ping { nonce: 9 }));
    assert_eq!(pong, Body::Pong(wire::Pong { nonce: 9 }));
    assert!(n.closes_of(c).is_empty());
    login_reply(n.login_with(c, login_req(1)));
}

/// Before 39a6dd7 the server never warned (the push did not exist).
#[test]
fn the_token_warning_comes_token_warning_before_exp() {
    let mut n = Net::new(token_config());
    let exp = T0_S + 120;
    let (c, r) = n.token_login(5, exp);
    assert_eq!(r.token_expires_at_ms, exp * 1000);
    assert_eq!(n.s.config().token_warning, secs(30));
    n.advance(secs(90) - ms(1));
    assert!(n.bodies(c).is_empty(), "no warning before exp - 30 s");
    n.advance(ms(1));
    assert_eq!(
        n.bodies(c),
        vec![Body::TokenWillExpire(wire::TokenWillExpirePush {
            token_expires_at_ms: exp * 1000,
            server_time_ms: (exp - 30) * 1000,
        })]
    );
    n.advance(secs(29));
    assert!(n.bodies(c).is_empty(), "one warning");
    n.served(c, query_online());
}

/// Before 39a6dd7 an expired token kept working (the issue: "a token
/// expired 2.5 s ago still sends, writes and reads") and no close came.
#[test]
fn after_exp_requests_get_2003_and_the_link_closes_after_the_grace() {
    let mut n = Net::new(token_config());
    let exp = T0_S + 60;
    let (c, _) = n.token_login(5, exp);
    let (quits, _) = n.token_login(6, exp);
    n.ok_join(c, "room");
    n.advance(secs(60) - ms(1));
    n.served(c, query_online());
    n.advance(ms(1));
    let refused = [
        query_online(),
        to_user(2, "m"),
        to_channel("room", "m"),
        join("other"),
        leave("room"),
        write_attrs("room", false),
        fetch(None, 0),
        Body::GetInstanceInfo(wire::Empty {}),
    ];
    for r in refused {
        let what = format!("{r:?}");
        assert_eq!(n.err(c, r), 2003, "{what} after exp");
    }
    n.ok(quits, Body::Logout(wire::Empty {}));
    assert_eq!(n.s.config().token_grace, secs(10));
    n.advance(secs(10) - ms(1));
    assert!(n.closed.is_empty(), "{:?}", n.closed);
    n.advance(ms(1));
    assert_eq!(n.closes_of(c), vec![CloseReason::TokenExpired]);
    assert_eq!(last_close(&n.bodies(c)), Some(2003));
    assert!(n.closes_of(quits).is_empty(), "a logged-out link stays");
}

/// Before 39a6dd7 there was no close to cancel and no warning to re-arm.
#[test]
fn a_refresh_within_the_grace_cancels_the_close_and_rearms_the_warning() {
    let mut n = Net::new(token_config());
    let (exp1, exp2) = (T0_S + 60, T0_S + 200);
    let (c, _) = n.token_login(5, exp1);
    n.advance(secs(65));
    assert_eq!(n.err(c, query_online()), 2003);
    n.clear(&[c]);
    match n.req(c, refresh(mint_token(SECRET, APP_T, 5, exp2))) {
        Body::RefreshTokenReply(r) => assert_eq!(r.token_expires_at_ms, exp2 * 1000),
        other => panic!("expected RefreshTokenReply, got {other:?}"),
    }
    n.served(c, query_online());
    n.advance(secs(170) - secs(65) - ms(1)); // past exp1 + grace
    assert!(n.closed.is_empty(), "{:?}", n.closed);
    assert!(n.bodies(c).is_empty(), "nothing more about the old token");
    n.advance(ms(1));
    let pushed = warnings(&n.bodies(c));
    assert_eq!(
        pushed,
        vec![wire::TokenWillExpirePush {
            token_expires_at_ms: exp2 * 1000,
            server_time_ms: (exp2 - 30) * 1000,
        }],
        "a warning for the new expiry"
    );
    n.advance(secs(40));
    assert_eq!(n.closes_of(c), vec![CloseReason::TokenExpired]);
}

/// Before 39a6dd7 nothing was enforced after exp, refused refresh or not.
#[test]
fn a_refused_refresh_changes_nothing() {
    let mut n = Net::new(token_config());
    let exp = T0_S + 60;
    let (c, _) = n.token_login(5, exp);
    n.advance(secs(55));
    let forged = mint_token(OTHER_SECRET, APP_T, 5, T0_S + 3600);
    assert_eq!(n.err(c, refresh(forged)), 2002, "a bad signature");
    let other_uid = mint_token(SECRET, APP_T, 6, T0_S + 3600);
    assert_eq!(n.err(c, refresh(other_uid)), 2002, "another uid");
    n.advance(secs(5));
    assert_eq!(n.err(c, query_online()), 2003, "expired all the same");
    n.advance(secs(10) - ms(1));
    assert!(n.closed.is_empty(), "{:?}", n.closed);
    n.advance(ms(1));
    assert_eq!(n.closes_of(c), vec![CloseReason::TokenExpired]);
}

/// Before 39a6dd7 `nbf` was ignored: the early token logged in.
#[test]
fn a_token_not_valid_yet_is_refused() {
    let mut n = Net::new(token_config());
    let claims = |nbf: u64| serde_json::json!({"appid": APP_T, "uid": "5", "nbf": nbf});
    let early = signed(claims(T0_S + 60), SECRET);
    let c = n.accept();
    assert_eq!(code(n.login_with(c, token_req(5, early.clone()))), 2002);
    let c = n.accept();
    login_reply(n.login_with(c, token_req(5, signed(claims(T0_S), SECRET))));
    n.advance(secs(60));
    let c = n.accept();
    login_reply(n.login_with(c, token_req(5, early)));
}

/// Before 39a6dd7 "07" and "+7" parsed as 7 and logged in as uid 7.
#[test]
fn uids_in_tokens_must_be_canonical() {
    let mut n = Net::new(token_config());
    let token = |uid: &str| signed(serde_json::json!({"appid": APP_T, "uid": uid}), SECRET);
    for uid in ["07", "+7", "7 ", "0x7"] {
        let c = n.accept();
        let reply = n.login_with(c, token_req(7, token(uid)));
        assert_eq!(code(reply), 2002, "uid {uid:?}");
    }
    let c = n.accept();
    login_reply(n.login_with(c, token_req(7, token("7"))));
}

/// Before 39a6dd7 there was no `validate`, and tokens signed with any
/// secret (even "") logged in.
#[test]
fn secrets_shorter_than_32_bytes_are_refused() {
    let short = "s".repeat(MIN_SECRET_LEN - 1);
    let mut config = token_config();
    config
        .apps
        .push(AppConfig::with_secret(50_000, short.clone()));
    config.apps.push(AppConfig::with_secret(50_001, ""));
    assert_eq!(
        config.validate(),
        Err(ConfigError::WeakSecret {
            appid: 50_000,
            len: MIN_SECRET_LEN - 1
        })
    );
    let mut n = Net::new(config);
    for (appid, secret) in [(50_000, short.as_str()), (50_001, "")] {
        let c = n.accept();
        let token = mint_token(secret, appid, 5, T0_S + 3600);
        let reply = n.login_with(
            c,
            wire::LoginRequest {
                appid,
                ..token_req(5, token)
            },
        );
        assert_eq!(code(reply), 2002, "a token of app {appid}");
    }
    let mut fine = token_config();
    fine.apps
        .push(AppConfig::with_secret(50_002, "s".repeat(MIN_SECRET_LEN)));
    assert_eq!(fine.validate(), Ok(()));
}
