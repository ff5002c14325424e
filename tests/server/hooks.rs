//! Events for an app's backend (`Hub::poll_hook`): presence debounced by
//! the grace period, channel life, and messages of listed channels.

use crate::support::*;
use hummer_channel::server::{HookConfig, HookEvent, HookEventKind};

fn hooked(prefixes: &[&str]) -> ServerConfig {
    let mut c = ServerConfig::demo();
    let mut h = HookConfig::new("http://127.0.0.1:9/hook", "h".repeat(32));
    for p in prefixes {
        h = h.with_message_prefix(*p);
    }
    c.apps[0].hook = Some(h);
    c
}

fn events(n: &mut Net) -> Vec<HookEventKind> {
    std::iter::from_fn(|| n.s.poll_hook())
        .map(|e: HookEvent| {
            assert_eq!(e.appid, DEMO_APPID);
            e.kind
        })
        .collect()
}

#[test]
fn offline_comes_once_after_the_grace_period_and_never_for_a_resumed_link() {
    let mut n = Net::new(hooked(&[]));
    let (a, r) = n.login(1);
    assert_eq!(events(&mut n), [HookEventKind::UserOnline { uid: 1 }]);
    // A second instance of the same uid: no event.
    let (a2, _) = n.login(1);
    assert!(events(&mut n).is_empty());
    n.ok(a2, Body::Logout(wire::Empty {}));
    assert!(events(&mut n).is_empty(), "one instance is left");
    // The link drops and is resumed within the grace period: nothing.
    n.lose(a);
    n.advance(secs(5));
    let b = n.accept();
    n.send(
        b,
        Body::Login(resume_req(1, r.instance_id, r.p2p_epoch, 0, vec![])),
    );
    assert!(events(&mut n).is_empty(), "a resume is no presence change");
    // Dropped again and not resumed: offline once, after the grace period.
    n.lose(b);
    n.advance(ServerConfig::demo().presence_grace - secs(1));
    assert!(events(&mut n).is_empty(), "still within the grace period");
    n.run_for(secs(2));
    assert_eq!(events(&mut n), [HookEventKind::UserOffline { uid: 1 }]);
    n.run_for(secs(60));
    assert!(events(&mut n).is_empty());
}

#[test]
fn a_logout_is_offline_at_once_and_a_replacing_login_is_no_change() {
    let mut cfg = hooked(&[]);
    cfg.apps[0].kick_older_logins = true;
    let mut n = Net::new(cfg);
    let (a, _) = n.login(3);
    n.login(3); // kicks the first
    assert_eq!(n.closes_of(a).len(), 1);
    assert_eq!(events(&mut n), [HookEventKind::UserOnline { uid: 3 }]);
    let (c, _) = n.login(4);
    n.ok(c, Body::Logout(wire::Empty {}));
    assert_eq!(
        events(&mut n),
        [
            HookEventKind::UserOnline { uid: 4 },
            HookEventKind::UserOffline { uid: 4 }
        ]
    );
}

#[test]
fn channels_are_created_and_emptied_and_listed_messages_are_events() {
    let mut n = Net::new(hooked(&["live-"]));
    let (a, _) = n.login(1);
    let (b, _) = n.login(2);
    events(&mut n);
    n.ok_join(a, "live-1");
    n.ok_join(b, "live-1");
    n.ok_join(a, "quiet");
    let key =
        |id: &str| hummer_channel::types::ChannelKey::new(hummer_channel::types::Region::Cn, id);
    assert_eq!(
        events(&mut n),
        [
            HookEventKind::ChannelCreated {
                channel: key("live-1")
            },
            HookEventKind::ChannelCreated {
                channel: key("quiet")
            },
        ]
    );
    n.sent(a, to_channel("live-1", "hello"));
    n.sent(a, to_channel_with("live-1", "fast", true));
    n.sent(a, to_channel("quiet", "not listed"));
    let got = events(&mut n);
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(
        matches!(&got[0], HookEventKind::ChannelMessage { channel, from_uid: 1, seq: 1, content, .. }
        if *channel == key("live-1") && &content[..] == b"hello")
    );
    assert!(
        matches!(&got[1], HookEventKind::ChannelMessage { seq: 0, content, .. } if &content[..] == b"fast")
    );
    n.ok(a, leave("live-1"));
    assert!(events(&mut n).is_empty(), "b is still in");
    n.ok(b, leave("live-1"));
    assert_eq!(
        events(&mut n),
        [HookEventKind::ChannelEmptied {
            channel: key("live-1")
        }]
    );
}

#[test]
fn an_online_after_another_event_of_the_app_cancels_nothing() {
    let mut n = Net::new(hooked(&[]));
    let (a, _) = n.login(1);
    n.ok_join(a, "room");
    // With one hub shard, uid 1's channel event is the last one queued when
    // uid 2 logs in. Shards queue apart: their events interleave in any order.
    n.login(2);
    let key = hummer_channel::types::ChannelKey::new(hummer_channel::types::Region::Cn, "room");
    let mut got = events(&mut n);
    got.sort_by_key(|e| format!("{e:?}"));
    assert_eq!(
        got,
        [
            HookEventKind::ChannelCreated { channel: key },
            HookEventKind::UserOnline { uid: 1 },
            HookEventKind::UserOnline { uid: 2 },
        ]
    );
}

#[test]
fn an_app_without_a_hook_gets_no_events() {
    let (mut n, a, _, _, _) = two_in_a_room(ServerConfig::demo());
    n.sent(a, to_channel("room", "x"));
    assert!(n.s.poll_hook().is_none());
}
