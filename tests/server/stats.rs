//! The counters a runner turns into metrics (`Server::stats`): each moves
//! when, and only when, what it counts happens.

use crate::support::*;
use hummer_channel::server::{LinkKind, Stats};

fn count<'a>(it: impl Iterator<Item = (&'a str, u64)>, name: &str) -> u64 {
    it.filter(|(n, _)| *n == name).map(|(_, v)| v).sum()
}

#[test]
fn links_logins_frames_and_deliveries_are_counted() {
    let mut n = Net::demo();
    let s0 = n.s.stats();
    assert_eq!(s0.links_accepted(LinkKind::Tcp), 0);
    let (a, b, ..) = {
        let (n2, a, b, _, _) = two_in_a_room(ServerConfig::demo());
        n = n2;
        (a, b)
    };
    let s = n.s.stats();
    assert_eq!(s.links_accepted(LinkKind::Tcp), 2);
    assert_eq!(s.links_open(LinkKind::Tcp), 2);
    assert_eq!(s.logins(LinkKind::Tcp), 2);
    assert_eq!(s.logins(LinkKind::WebSocket), 0);
    assert_eq!(count(s.frames_in(), "login"), 2);
    assert_eq!(count(s.frames_in(), "join"), 2);
    assert_eq!((s.instances(), s.channels(), s.members()), (2, 1, 2));

    let before = count(s.deliveries(), "channel_message");
    n.sent(a, to_channel("room", "hi"));
    let s = n.s.stats();
    // One broadcast, two receivers (the sender's own copy included).
    assert_eq!(count(s.deliveries(), "channel_message") - before, 2);
    assert_eq!(count(s.frames_in(), "send_to_channel"), 1);
    assert_eq!(count(s.deliveries(), "send_reply"), 1);
    let timed: Vec<_> = s.request_latency().map(|(op, h)| (op, h.count())).collect();
    assert!(timed.contains(&("send_to_channel", 1)), "{timed:?}");
    assert!(timed.contains(&("login", 2)), "{timed:?}");
    assert!(timed.contains(&("join", 2)), "{timed:?}");

    // A link lost by its transport, one closed for a protocol error.
    n.lose(b);
    n.raw(a, Bytes::from_static(&[0xff, 0xff, 0xff]));
    let s = n.s.stats();
    assert_eq!(count(s.closes(), "lost"), 1);
    assert_eq!(count(s.closes(), "protocol_error"), 1);
    assert_eq!(
        s.links_open(LinkKind::Tcp),
        1,
        "the closing link is still open"
    );
    // Both instances are in their grace period: still counted.
    assert_eq!(s.instances(), 2);
}

#[test]
fn a_reply_late_by_the_clock_is_timed_in_its_bucket() {
    let mut n = Net::demo();
    let (a, _) = n.login(1);
    // The hub answers in the same turn: every request so far took no time.
    let s = n.s.stats();
    let (_, h) = s.request_latency().find(|(op, _)| *op == "login").unwrap();
    assert_eq!(h.quantile_bound(1.0), Some(Duration::from_micros(100)));
    assert_eq!(h.sum(), Duration::ZERO);
    let _ = a;
}

#[test]
fn refusals_rate_limits_resumes_replays_and_gaps_are_counted() {
    let mut cfg = ServerConfig::demo();
    cfg.rate_limits.queries = RateLimit::new(2, secs(3));
    let mut n = Net::new(cfg);
    let (a, _) = n.login(1);
    for _ in 0..2 {
        n.served(
            a,
            Body::QueryOnline(wire::QueryOnlineRequest { uids: vec![2] }),
        );
    }
    let code = n.err(
        a,
        Body::QueryOnline(wire::QueryOnlineRequest { uids: vec![2] }),
    );
    assert_eq!(code, ErrorCode::OPERATION_TOO_OFTEN.code());
    // Not a member: 5101-like refusals are counted by their code too.
    let code2 = n.err(a, to_channel("nowhere", "x"));
    let s = n.s.stats();
    assert_eq!(count(s.rate_limited(), "queries"), 1);
    assert_eq!(count(s.rate_limited(), "sends"), 0);
    let refusals: Vec<_> = s.refusals().collect();
    assert!(refusals.contains(&(4003, 1)), "{refusals:?}");
    assert!(refusals.contains(&(code2, 1)), "{refusals:?}");
    assert_eq!(s.resumes(), 0);

    // A resume that replays what was missed (see `resume_scene`).
    let mut scene = resume_scene();
    let reply = match scene.n.reply_to(scene.b2, scene.n.rid) {
        Body::LoginReply(r) => r,
        other => panic!("{other:?}"),
    };
    assert!(reply.resumed);
    let s = scene.n.s.stats();
    assert_eq!(s.resumes(), 1);
    // x2 and x3 on channel X, p1 and p2 on the P2P stream.
    assert_eq!(s.replayed_messages(), 4);
    assert_eq!(s.gaps_reported(), 0);
}

#[test]
fn a_fetch_past_the_retained_history_counts_its_gap_and_replays() {
    let mut cfg = ServerConfig::demo();
    cfg.channel_retention_messages = 2;
    let (mut n, a, _b, _, _) = two_in_a_room(cfg);
    for t in ["m1", "m2", "m3"] {
        n.sent(a, to_channel("room", t));
    }
    let before = n.s.stats();
    let r = n.fetched(a, fetch(Some("room"), 0));
    assert!(r.gap.is_some(), "m1 was evicted");
    let s = n.s.stats();
    assert_eq!(s.gaps_reported() - before.gaps_reported(), 1);
    assert_eq!(s.replayed_messages() - before.replayed_messages(), 2);
    // A fetch with nothing missing: a replay, no gap.
    let r = n.fetched(a, fetch(Some("room"), 2));
    assert!(r.gap.is_none());
    let s2 = n.s.stats();
    assert_eq!(s2.gaps_reported(), s.gaps_reported());
    assert_eq!(s2.replayed_messages() - s.replayed_messages(), 1);
}

#[test]
fn the_busiest_channels_are_listed_busiest_first() {
    let mut n = Net::new(flood_config());
    let (a, _) = n.login(1);
    for (room, sends) in [("quiet", 1), ("loud", 3), ("empty", 0)] {
        n.ok_join(a, room);
        for i in 0..sends {
            n.sent(a, to_channel_with(room, &format!("m{i}"), i % 2 == 1));
        }
    }
    let s = n.s.stats();
    let busiest: Vec<_> = s
        .busiest_channels()
        .iter()
        .map(|c| (c.id.as_str(), c.messages, c.members))
        .collect();
    assert_eq!(busiest, [("loud", 3, 1), ("quiet", 1, 1)]);
}

#[test]
fn a_quiet_app_keeps_its_busiest_channels_beside_a_loud_one() {
    let mut cfg = flood_config();
    cfg.apps
        .push(hummer_channel::server::AppConfig::with_secret(
            77,
            "s".repeat(32),
        ));
    cfg.apps[1].allow_appid_mode = true;
    let mut n = Net::new(cfg);
    let (a, _) = n.login(1);
    for i in 0..12 {
        let room = format!("loud{i:02}");
        n.ok_join(a, &room);
        for _ in 0..=i {
            n.sent(a, to_channel(&room, "x"));
        }
    }
    let (q, _) = n.login_app(77, 2);
    n.ok_join(q, "quiet");
    n.sent(q, to_channel("quiet", "x"));
    let s = n.s.stats();
    let of = |app: u32| -> Vec<u64> {
        s.busiest_channels()
            .iter()
            .filter(|c| c.appid == app)
            .map(|c| c.messages)
            .collect()
    };
    assert_eq!(
        of(DEMO_APPID),
        (3..=12).rev().collect::<Vec<u64>>(),
        "the ten busiest"
    );
    assert_eq!(of(77), [1]);
}
