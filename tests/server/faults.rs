//! Link faults: malformed frames, slow consumers, timeouts, heartbeats, readiness.

use crate::support::*;

#[test]
fn malformed_frames_close_the_connection() {
    let mut n = Net::demo();
    let bad: Vec<Bytes> = vec![
        Bytes::from_static(&[0xff, 0xff, 0xff]),
        Bytes::new(),
        encode_frame(&Frame {
            request_id: 0,
            body: None,
        }),
        // A reply type sent by a client.
        encode_frame(&Frame {
            request_id: 1,
            body: Some(Body::Ok(wire::Empty {})),
        }),
        // A request without a request id.
        encode_frame(&Frame {
            request_id: 0,
            body: Some(Body::GetInstanceInfo(wire::Empty {})),
        }),
    ];
    for b in bad {
        let (c, _) = n.login(1);
        n.raw(c, b);
        assert_eq!(close_code(&n.bodies(c)), Some(2001));
        assert!(matches!(n.closed.last(), Some((x, CloseReason::ProtocolError(_))) if *x == c));
        // Later frames are ignored.
        n.send(c, Body::Ping(wire::Ping { nonce: 1 }));
        assert!(n.frames(c).is_empty());
    }
    // The lost link keeps the instances for the grace period only.
    assert_eq!(n.s.instance_count(), 5);
    n.advance(Duration::from_secs(31));
    assert_eq!(n.s.instance_count(), 0);
}

#[test]
fn slow_consumer_is_dropped_with_a_bounded_queue() {
    let mut n = Net::with(|cfg| {
        cfg.max_queued_bytes = 4000;
        cfg.rate_limit_sends = 10_000;
    });
    let (a, _) = n.login(1);
    let (b, _) = n.login(2);
    n.held.insert(b);
    for i in 0..100 {
        n.req(
            a,
            to_user_with(2, &format!("message number {i} with some padding"), false),
        );
        assert!(n.s.queued_bytes(b) <= 4000 + 64);
    }
    assert!(n.closed.contains(&(b, CloseReason::SlowConsumer)));
    n.held.remove(&b);
    n.drain(b);
    let bodies = n.bodies(b);
    assert!(
        matches!(&bodies[..], [Body::Close(c)] if c.code == 4005 && c.reason == "slow consumer")
    );
    // Its instance is a lost link: the messages wait in the inbox.
    let r = send_reply(n.req(a, to_user_with(2, "later", false)));
    assert!(!r.delivered_online);
}

#[test]
fn idle_and_login_timeouts() {
    let mut n = Net::demo();
    let (alive, _) = n.login(1);
    let (idle, _) = n.login(2);
    let never = n.accept();
    for _ in 0..6 {
        n.advance(Duration::from_secs(10));
        n.req(alive, Body::Ping(wire::Ping { nonce: 0 }));
    }
    assert!(n.closed.contains(&(never, CloseReason::LoginTimeout)));
    assert!(n.closed.contains(&(idle, CloseReason::IdleTimeout)));
    assert!(!n.closed.iter().any(|(c, _)| *c == alive));
    // v2: the silent link was pinged at half the idle timeout, then closed.
    let bodies = n.bodies(idle);
    assert!(matches!(bodies.first(), Some(Body::Ping(_))), "{bodies:?}");
    assert_eq!(close_code(&bodies), Some(1005));
    // v2: a login timeout has its own code.
    assert_eq!(close_code(&n.bodies(never)), Some(1006));
    assert_eq!(n.s.connection_count(), 1);
    // The idle instance was a lost link; gone after the grace period.
    n.advance(Duration::from_secs(31));
    assert_eq!(n.s.instance_count(), 1);
}

#[test]
fn time_going_backwards_is_ignored() {
    let mut n = Net::demo();
    let (a, _) = n.login(1);
    let earlier = n.now - Duration::from_secs(1);
    n.s.handle_timeout(earlier);
    n.s.handle_frame(
        earlier,
        a,
        encode_frame(&Frame {
            request_id: 1,
            body: Some(Body::Ping(wire::Ping { nonce: 1 })),
        }),
    );
    n.pump();
    assert_eq!(n.frames(a).len(), 1);
    assert!(n.s.poll_timeout().unwrap() > n.now);
}

#[test]
fn poll_ready_reports_a_connection_once_per_pass_while_it_has_output() {
    let t = Instant::now();
    let mut s = Server::new(ServerConfig::demo(), t, 0);
    let c = s.accept(t);
    s.handle_frame(t, c, raw_frame(1, Body::Login(login_req(1))));
    let info = || Body::GetInstanceInfo(wire::Empty {});
    s.handle_frame(t, c, raw_frame(2, info()));
    assert_eq!(s.poll_ready(), Some(c));
    s.handle_frame(t, c, raw_frame(3, info()));
    assert_eq!(s.poll_ready(), None, "once per pass: the pass ends");
    // The driver takes one frame and stops (its socket is full).
    assert_eq!(decode(s.poll_transmit(c).unwrap()).request_id, 1);
    s.handle_frame(t, c, raw_frame(4, info()));
    assert_eq!(
        s.poll_ready(),
        Some(c),
        "left with frames: the next pass reports it"
    );
    assert_eq!(s.poll_ready(), None);
    assert_eq!(s.poll_ready(), Some(c), "and the next, until it is drained");
    let mut ids = Vec::new();
    while let Some(f) = s.poll_transmit(c) {
        ids.push(decode(f).request_id);
    }
    assert_eq!(ids, [2, 3, 4], "in order, none lost");
    assert_eq!(s.poll_ready(), None, "the pass ends");
    assert_eq!(s.poll_ready(), None, "drained: not reported again");
}

fn decode(b: Bytes) -> DecodedFrame {
    decode_frame(b, MAX).expect("server frames decode")
}

/// A driver that takes only some frames of a connection on each pass of
/// `poll_ready` (its socket takes `k` at a time) and stops: every later pass
/// reports the connection again while it has frames, and every frame
/// arrives once, in order.
#[test]
fn a_driver_that_stops_part_way_gets_every_frame_on_later_passes() {
    let mut n = Net::demo();
    let (a, _) = n.login(1);
    let (b, _) = n.login(2);
    n.hold(b);
    for i in 0..20 {
        n.sent(a, to_user(2, &format!("m{i}")));
    }
    assert!(n.frames(b).is_empty(), "held");
    let queued = n.s.queued_bytes(b);
    assert!(queued > 0);
    // Passes of a driver taking 3 frames of `b` per pass.
    let mut got = Vec::new();
    let mut passes = 0;
    loop {
        let mut reported = Vec::new();
        while let Some(c) = n.s.poll_ready() {
            reported.push(c);
            if c == b {
                for _ in 0..3 {
                    let Some(f) = n.s.poll_transmit(c) else { break };
                    got.push(decode(f).body);
                }
            }
        }
        assert!(
            reported.iter().filter(|c| **c == b).count() <= 1,
            "once per pass: {reported:?}"
        );
        if !reported.contains(&b) {
            break;
        }
        passes += 1;
        assert!(passes < 100, "never drained");
    }
    assert_eq!(passes, 7, "20 frames, 3 a pass");
    assert_eq!(n.s.queued_bytes(b), 0);
    let texts: Vec<String> = user_msgs(&got).into_iter().map(|(_, t)| t).collect();
    let want: Vec<String> = (0..20).map(|i| format!("m{i}")).collect();
    assert_eq!(texts, want, "every frame, in order, once");
    let seqs: Vec<u64> = user_msgs(&got).into_iter().map(|(s, _)| s).collect();
    assert_eq!(seqs, (1..=20).collect::<Vec<_>>());
}

/// The same through `Server::drain`, with a sink whose `writable(conn)`
/// turns false after `k` frames: the frames not taken stay queued and the
/// next drains deliver them, in order, none lost, none twice.
#[test]
fn server_drain_into_a_sink_that_fills_up_loses_no_frame() {
    for k in [1, 2, 5] {
        let mut n = Net::demo();
        let (a, _) = n.login(1);
        let (b, _) = n.login(2);
        n.hold(b);
        for i in 0..12 {
            n.sent(a, to_user(2, &format!("m{i}")));
        }
        let mut got = Vec::new();
        let mut drains = 0;
        while n.s.queued_bytes(b) > 0 {
            let mut sink = ServerOut::default();
            sink.room.insert(b, k);
            n.s.drain(&mut sink);
            let taken: Vec<_> = sink.frames.iter().filter(|(c, _)| *c == b).collect();
            assert!(taken.len() <= k, "k = {k}: past writable() == false");
            assert!(!taken.is_empty(), "k = {k}: a drain with room takes frames");
            got.extend(taken.into_iter().map(|(_, f)| decode(f.clone()).body));
            drains += 1;
            assert!(drains < 100, "k = {k}: never drained");
        }
        assert_eq!(drains, 12usize.div_ceil(k), "k = {k}");
        let texts: Vec<String> = user_msgs(&got).into_iter().map(|(_, t)| t).collect();
        let want: Vec<String> = (0..12).map(|i| format!("m{i}")).collect();
        assert_eq!(texts, want, "k = {k}: every frame, in order, once");
        // Nothing is left: a drain with room takes nothing more.
        let mut sink = ServerOut::default();
        n.s.drain(&mut sink);
        assert!(sink.frames.iter().all(|(c, _)| *c != b), "k = {k}");
    }
}

#[test]
fn pings_owe_one_pong_at_most() {
    let t = Instant::now();
    let mut s = Server::new(ServerConfig::demo(), t, 0);
    let c = s.accept(t);
    for nonce in 1..=1000 {
        let ping = encode_frame(&Frame {
            request_id: 0,
            body: Some(Body::Ping(wire::Ping { nonce })),
        });
        s.handle_frame(t, c, ping);
    }
    // What the link holds is one frame and its overhead, whatever it sent.
    assert!(s.queued_bytes(c) < 100, "{}", s.queued_bytes(c));
    let pong = decode_frame(s.poll_transmit(c).unwrap(), MAX).unwrap();
    assert!(matches!(pong.body, Body::Pong(wire::Pong { nonce: 1000 })));
    assert!(s.poll_transmit(c).is_none());
}

#[test]
fn a_link_not_logged_in_within_the_login_timeout_gets_close_1006() {
    let mut n = Net::demo();
    let silent = n.accept();
    let refused = n.accept();
    assert_eq!(code(n.login_with(refused, login_req(0))), 2001);
    let (logged, _) = n.login(1);
    let timeout = n.s.config().login_timeout;
    assert!(timeout < n.s.config().idle_timeout / 2, "before any ping");
    n.advance(timeout - ms(1));
    assert!(n.closed.is_empty());
    n.advance(ms(1));
    for c in [silent, refused] {
        assert_eq!(n.closes_of(c), vec![CloseReason::LoginTimeout]);
        assert_eq!(last_close(&n.bodies(c)), Some(1006));
    }
    assert!(n.closes_of(logged).is_empty());
}

#[test]
fn a_silent_link_gets_one_server_ping_at_half_the_idle_timeout() {
    let mut n = Net::demo();
    let (c, _) = n.login(1);
    n.advance(ms(22_499));
    assert!(n.frames(c).is_empty());
    n.advance(ms(1));
    let frames = n.frames(c);
    assert!(
        matches!(
            &frames[..],
            [DecodedFrame {
                request_id: 0,
                body: Body::Ping(_)
            }]
        ),
        "{frames:?}"
    );
    // Once per silence: nothing more until the idle timeout.
    for _ in 0..22 {
        n.advance(secs(1));
    }
    n.advance(ms(499));
    assert!(n.frames(c).is_empty());
    assert!(n.closed.is_empty());
}

#[test]
fn any_frame_from_the_client_restarts_the_heartbeat() {
    let frames = ["pong", "ping", "request", "ack"];
    for what in frames {
        let mut n = Net::demo();
        let (c, _) = n.login(1);
        n.advance(ms(22_500));
        let nonce = match n.bodies(c).as_slice() {
            [Body::Ping(p)] => p.nonce,
            other => panic!("{what}: {other:?}"),
        };
        n.advance(ms(7_500)); // t = 30 s
        match what {
            "pong" => n.notify(c, Body::Pong(wire::Pong { nonce })),
            "ping" => {
                n.send(c, Body::Ping(wire::Ping { nonce: 1 }));
            }
            "request" => {
                n.send(c, Body::GetInstanceInfo(wire::Empty {}));
            }
            _ => n.ack(c, 0),
        }
        n.frames(c);
        // Silent again from 30 s: no close at 45 s, the next ping at 52.5 s.
        n.advance(ms(22_499));
        assert!(n.frames(c).is_empty(), "{what}");
        assert!(n.closed.is_empty(), "{what}");
        n.advance(ms(1));
        assert_eq!(server_pings(&n.bodies(c)), 1, "{what}");
        // And the close at 75 s.
        n.advance(ms(22_499));
        assert!(n.closed.is_empty(), "{what}");
        n.advance(ms(1));
        assert_eq!(n.closes_of(c), vec![CloseReason::IdleTimeout], "{what}");
    }
}

#[test]
fn a_link_silent_for_the_idle_timeout_gets_close_1005() {
    let mut n = Net::demo();
    let (c, _) = n.login(1);
    n.advance(ms(44_999));
    assert!(n.closed.is_empty());
    n.advance(ms(1));
    assert_eq!(n.closes_of(c), vec![CloseReason::IdleTimeout]);
    let bodies = n.bodies(c);
    assert_eq!(server_pings(&bodies), 1, "{bodies:?}");
    assert!(matches!(bodies.first(), Some(Body::Ping(_))));
    assert_eq!(last_close(&bodies), Some(1005));
    // A lost link: the instance waits for a resume.
    assert_eq!(n.s.instance_count(), 1);
}

#[test]
fn a_slow_consumer_gets_close_4005() {
    let mut n = Net::with(|cfg| {
        cfg.max_queued_bytes = 4000;
        cfg.rate_limit_sends = 10_000;
    });
    let (a, _) = n.login(1);
    let (b, _) = n.login(2);
    n.held.insert(b);
    let mut sent = 0;
    while n.closes_of(b).is_empty() {
        n.sent(a, to_user(2, "some padding to fill the queue quickly"));
        sent += 1;
        assert!(sent < 1000, "never closed");
    }
    assert_eq!(n.closes_of(b), vec![CloseReason::SlowConsumer]);
    n.held.remove(&b);
    n.drain(b);
    assert!(matches!(
        &n.bodies(b)[..],
        [Body::Close(c)] if c.code == 4005 && c.reason == "slow consumer"
    ));
}

#[test]
fn shutdown_closes_every_open_link_with_4006() {
    let mut n = Net::demo();
    let (a, _) = n.login(1);
    let (b, _) = n.login(2);
    let anonymous = n.accept();
    let (gone, _) = n.login(3);
    n.notify(
        gone,
        Body::Close(wire::Close {
            code: 0,
            reason: "bye".into(),
        }),
    );
    n.sent(a, to_user(2, "queued before the shutdown"));
    let instances = n.s.instance_count();
    n.s.shutdown(n.now);
    n.pump();
    for c in [a, b, anonymous] {
        assert_eq!(n.closes_of(c), vec![CloseReason::Shutdown], "{c}");
        assert_eq!(last_close(&n.bodies(c)), Some(4006), "{c}");
    }
    assert_eq!(n.closes_of(gone), vec![CloseReason::ClosedByPeer]);
    assert_eq!(n.s.connection_count(), 0);
    // Lost links: the instances keep their grace period.
    assert_eq!(n.s.instance_count(), instances);
}

/// Before 39a6dd7 every `Ping` queued its own `Pong`: 100,000 pings from a
/// link that never reads left 100,000 pongs queued (about 0.9 MB counted,
/// several MB of memory), and no close.
#[test]
fn a_never_reading_link_flooding_pings_holds_at_most_one_pong() {
    let mut n = Net::demo();
    let (c, _) = n.login(1);
    n.held.insert(c);
    for nonce in 1..=100_000u64 {
        let ping = encode_frame(&Frame {
            request_id: nonce,
            body: Some(Body::Ping(wire::Ping { nonce })),
        });
        n.s.handle_frame(n.now, c, ping);
        let queued = n.s.queued_bytes(c);
        assert!(
            queued < 100,
            "after {nonce} pings {queued} bytes are queued"
        );
    }
    n.pump();
    assert!(n.closed.is_empty(), "the link stays open: {:?}", n.closed);
    n.held.remove(&c);
    n.drain(c);
    assert_eq!(
        n.bodies(c),
        vec![Body::Pong(wire::Pong { nonce: 100_000 })],
        "one Pong, answering the latest Ping"
    );
    assert_eq!(n.s.queued_bytes(c), 0);
}

/// Before 39a6dd7 `queued_bytes` counted the frames' bytes only (each
/// frame really costs 64 more), so the first assertion on the count fails
/// and the close came after max / frame frames.
#[test]
fn a_never_reading_member_of_a_busy_channel_is_closed_as_a_slow_consumer() {
    let max = 64 * 1024;
    let mut n = Net::new({
        let mut cfg = flood_config();
        cfg.max_queued_bytes = max;
        cfg
    });
    let (a, _) = n.login(1);
    let (reader, _) = n.login(2);
    let (slow, _) = n.login(3);
    for c in [a, reader, slow] {
        n.ok_join(c, "busy");
    }
    n.advance(secs(1)); // the join notices
    n.clear(&[a, reader, slow]);
    n.held.insert(slow);
    let close = encode_frame(&Frame {
        request_id: 0,
        body: Some(Body::Close(wire::Close {
            code: 4005,
            reason: "slow consumer".into(),
        })),
    });
    let close_cost = close.len() + QUEUED_OVERHEAD;
    let content = "x".repeat(1000);
    let (mut expected, mut queued, mut closed_at) = (0usize, 0usize, None);
    for i in 1..=1000 {
        n.sent(a, to_channel("busy", &content));
        let push = n.frames(reader).pop().expect("the reader gets every push");
        let cost = size(&push) + QUEUED_OVERHEAD;
        let q = n.s.queued_bytes(slow);
        assert!(
            q <= max + close_cost,
            "send {i}: {q} bytes queued, past {max} + a Close"
        );
        if !n.closes_of(slow).is_empty() {
            assert!(expected + cost > max, "closed at send {i}, yet it fit");
            closed_at = Some(i);
            break;
        }
        expected += cost;
        queued += 1;
        assert_eq!(q, expected, "{queued} frames of {cost} bytes with overhead");
    }
    assert!(
        closed_at.is_some(),
        "the never-reading member is never closed"
    );
    assert!(
        queued > 10,
        "the queue held {queued} frames before the close"
    );
    assert_eq!(n.closes_of(slow), vec![CloseReason::SlowConsumer]);
    assert_eq!(n.s.queued_bytes(slow), close_cost, "only the Close is left");
    n.held.remove(&slow);
    n.drain(slow);
    assert_eq!(
        n.bodies(slow),
        vec![Body::Close(wire::Close {
            code: 4005,
            reason: "slow consumer".into()
        })]
    );
}

/// The 5 s default landed in 9c6e2ff, just before 39a6dd7 (this test
/// passes there); the landing commit waited 15 s.
#[test]
fn the_login_timeout_is_5_s_by_default() {
    assert_eq!(ServerConfig::default().login_timeout, secs(5));
    let mut n = Net::demo();
    let silent = n.accept();
    n.advance(ms(4_000));
    let (late, _) = n.login(1);
    n.advance(ms(999));
    assert!(n.closed.is_empty(), "{:?}", n.closed);
    n.advance(ms(1));
    assert_eq!(n.closes_of(silent), vec![CloseReason::LoginTimeout]);
    assert_eq!(last_close(&n.bodies(silent)), Some(1006));
    assert!(n.closes_of(late).is_empty());
}

#[test]
fn input_on_a_closed_or_closing_connection_is_ignored_and_counted() {
    let mut n = Net::new(ServerConfig::demo());
    let (a, _) = n.login(1);
    let (b, _) = n.login(2);
    assert_eq!(n.s.stale_inputs(), 0);
    // A closed connection: a second disconnect, a frame, a stream error.
    n.lose(a);
    assert_eq!(n.s.stale_inputs(), 0, "the first disconnect is not stale");
    n.lose(a);
    assert_eq!(n.s.stale_inputs(), 1);
    n.notify(a, Body::Ping(wire::Ping { nonce: 1 }));
    assert_eq!(n.s.stale_inputs(), 2);
    n.s.handle_stream_error(n.now, a, hummer_channel::WireError::EmptyFrame);
    assert_eq!(n.s.stale_inputs(), 3);
    // A closing one (the server closed it: a protocol error), not yet
    // disconnected: its later frames are stale too, and change nothing.
    n.raw(b, Bytes::from_static(b"\xff\xff\xff"));
    assert_eq!(n.s.stale_inputs(), 3, "the bad frame itself is not stale");
    n.notify(b, Body::Ping(wire::Ping { nonce: 2 }));
    assert_eq!(n.s.stale_inputs(), 4);
    assert!(
        !n.frames(b).iter().any(|f| matches!(f.body, Body::Pong(_))),
        "a closing connection is not answered"
    );
    assert_eq!(n.s.instance_count(), 2, "both kept for their grace period");
}
