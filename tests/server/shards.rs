//! A server of several hub shards: operations whose uids and channels live
//! on different shards behave as on one hub.

use crate::support::*;
use hummer_channel::server::{channel_shard, uid_shard, ShardId};

const SHARDS: u16 = 3;

/// The first uids (from 1) of the demo app homed on `shard`.
fn uids_on(shard: u16, n: usize) -> Vec<u64> {
    let uids: Vec<u64> = (1..10_000)
        .filter(|&u| uid_shard(DEMO_APPID, u, SHARDS) == ShardId(shard))
        .take(n)
        .collect();
    assert_eq!(uids.len(), n, "uids spread over the shards");
    uids
}

fn uid_on(shard: u16) -> u64 {
    uids_on(shard, 1)[0]
}

/// A channel id (in `cn`) kept by `shard`.
fn channel_on(shard: u16) -> String {
    let region = key("x").region;
    (0..10_000)
        .map(|i| format!("room{i}"))
        .find(|id| channel_shard(DEMO_APPID, region, id, SHARDS) == ShardId(shard))
        .expect("channels spread over the shards")
}

fn sharded() -> Net {
    Net::shaped(ServerConfig::demo(), 2, SHARDS)
}

fn memberships(bodies: &[Body]) -> Vec<(Vec<u64>, Vec<u64>)> {
    bodies
        .iter()
        .filter_map(|b| match b {
            Body::Membership(m) => Some((m.joined.clone(), m.left.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn counts_are_summed_over_the_shards() {
    let mut n = sharded();
    let (a, _) = n.login(uid_on(1));
    let (b, _) = n.login(uid_on(2));
    n.ok_join(a, &channel_on(0));
    n.ok_join(b, &channel_on(2));
    n.sent(a, to_user(uid_on(2), "hi"));
    assert_eq!(n.s.instance_count(), 2);
    assert_eq!(n.s.channel_count(), 2);
    assert_eq!(n.s.remembered_send_ids(), 1);
    assert!(n.s.inbox_count() >= 1);
}

#[test]
fn a_channel_with_members_on_every_shard_broadcasts_notices_and_answers_reads() {
    let room = channel_on(0);
    let uids = [uid_on(0), uid_on(1), uid_on(2)];
    let mut n = sharded();
    let conns: Vec<ConnId> = uids.iter().map(|&u| n.login(u).0).collect();
    let mut number = 0;
    for &c in &conns {
        let j = n.ok_join(c, &room);
        assert!(number == 0 || number == j.channel);
        number = j.channel;
    }
    n.advance(secs(1));
    let mut sorted = uids.to_vec();
    sorted.sort_unstable();
    for &c in &conns {
        let bodies = n.bodies(c);
        let joined: BTreeSet<u64> = memberships(&bodies)
            .into_iter()
            .flat_map(|(j, _)| j)
            .collect();
        assert!(!joined.is_empty(), "{bodies:?}");
        assert!(bodies
            .iter()
            .any(|b| matches!(b, Body::UserCountChanged(u) if u.count == 3)));
    }
    // A send from each member reaches every member once, in one sequence.
    for (i, &c) in conns.iter().enumerate() {
        let r = send_reply(n.req(c, to_channel_with(&room, &format!("m{i}"), false)));
        assert_eq!((r.seq, r.delivered_online), (i as u64 + 1, true));
    }
    for &c in &conns {
        let got = channel_texts(&n.bodies(c));
        assert_eq!(
            got,
            vec![(1, "m0".into()), (2, "m1".into()), (3, "m2".into())]
        );
    }
    // Reads of a channel of another shard.
    match n.req(conns[1], Body::GetUserList(key(&room))) {
        Body::UserList(l) => assert_eq!(l.uids, sorted),
        other => panic!("{other:?}"),
    }
    n.ok(
        conns[2],
        write(
            true,
            &room,
            AttributeOp::Set,
            attrs(&[("k", "v")]),
            &[],
            true,
        ),
    );
    match n.req(
        conns[1],
        Body::GetChannelAttributes(wire::GetChannelAttributesRequest {
            channel: Some(key(&room)),
            keys: vec![],
        }),
    ) {
        Body::Attributes(a) => {
            assert_eq!(a.attributes, attrs(&[("k", "v")]));
            assert_eq!(a.last_update_uid, uids[2]);
        }
        other => panic!("{other:?}"),
    }
    // The instance's channels are known at its home.
    match n.req(conns[1], Body::GetInstanceInfo(wire::Empty {})) {
        Body::InstanceInfo(i) => assert_eq!(i.channels, vec![key(&room)]),
        other => panic!("{other:?}"),
    }
    // A leave is a notice for the others, and the leaver is no member.
    n.ok(conns[1], leave(&room));
    assert_eq!(n.err(conns[1], to_channel(&room, "late")), 5101);
    n.advance(secs(1));
    let bodies = n.bodies(conns[0]);
    assert_eq!(memberships(&bodies), vec![(vec![], vec![uids[1]])]);
    match n.req(conns[1], Body::GetInstanceInfo(wire::Empty {})) {
        Body::InstanceInfo(i) => assert!(i.channels.is_empty()),
        other => panic!("{other:?}"),
    }
}

#[test]
fn p2p_across_shards_is_delivered_sequenced_and_deduplicated() {
    let (from, to) = (uid_on(1), uid_on(2));
    let mut n = sharded();
    let (a, _) = n.login(from);
    let (b, _) = n.login(to);
    let first = n.sent(a, to_user_id(to, "one", false, 77));
    assert_eq!((first.seq, first.delivered_online), (1, true));
    assert_eq!(user_msgs(&n.bodies(b)), vec![(1, "one".into())]);
    // A re-send is answered from the sender's home and delivers nothing.
    let again = n.sent(a, to_user_id(to, "one", false, 77));
    assert_eq!(again, first);
    assert!(n.bodies(b).is_empty());
    // The same id to another destination: 2013.
    assert_eq!(n.err(a, to_user_id(uid_on(0), "x", false, 77)), 2013);
    // Offline: kept in the receiver's inbox, replayed at its next login.
    n.ack(b, 1);
    n.ok(b, Body::Logout(wire::Empty {}));
    let r = n.sent(a, to_user_id(to, "two", false, 78));
    assert_eq!((r.seq, r.delivered_online), (2, false));
    let (b2, _) = n.login(to);
    assert_eq!(user_msgs(&n.bodies(b2)), vec![(2, "two".into())]);
}

#[test]
fn query_online_and_user_counts_gather_every_shard() {
    let uids = [uid_on(0), uid_on(1), uid_on(2)];
    let offline = uids_on(2, 2)[1];
    let rooms = [channel_on(0), channel_on(1), channel_on(2)];
    let mut n = sharded();
    let conns: Vec<ConnId> = uids.iter().map(|&u| n.login(u).0).collect();
    for (i, room) in rooms.iter().enumerate() {
        for c in &conns[..=i] {
            n.ok_join(*c, room);
        }
    }
    let mut ask: Vec<u64> = uids.to_vec();
    ask.push(offline);
    match n.req(
        conns[0],
        Body::QueryOnline(wire::QueryOnlineRequest { uids: ask }),
    ) {
        Body::OnlineStatus(s) => {
            let want: BTreeMap<u64, bool> = uids
                .iter()
                .map(|&u| (u, true))
                .chain([(offline, false)])
                .collect();
            assert_eq!(s.status, want);
        }
        other => panic!("{other:?}"),
    }
    let mut ids: Vec<String> = rooms.to_vec();
    ids.push("nobody".into());
    match n.req(
        conns[1],
        Body::GetUserCount(wire::GetUserCountRequest {
            region: key("x").region,
            channel_ids: ids,
        }),
    ) {
        Body::UserCount(c) => {
            let want: BTreeMap<String, u32> = rooms
                .iter()
                .cloned()
                .zip([1, 2, 3])
                .chain([("nobody".to_string(), 0)])
                .collect();
            assert_eq!(c.counts, want);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_resume_goes_on_in_channels_of_other_shards_and_leaves_those_it_dropped() {
    let (me, other) = (uid_on(2), uid_on(1));
    let (kept, dropped) = (channel_on(0), channel_on(1));
    let local = channel_on(2);
    let mut n = sharded();
    let (a, ra) = n.login(me);
    let (b, _) = n.login(other);
    let mut epochs = BTreeMap::new();
    for room in [&kept, &dropped, &local] {
        epochs.insert(room.clone(), n.ok_join(a, room).epoch);
        n.ok_join(b, room);
    }
    n.advance(secs(1));
    n.s.handle_disconnected(n.now, a);
    for room in [&kept, &dropped, &local] {
        n.sent(b, to_channel(room, &format!("missed in {room}")));
    }
    n.advance(secs(1));
    n.clear(&[b]);
    let cursors = vec![
        cursor(&kept, epochs[&kept], 0),
        cursor(&local, epochs[&local], 0),
    ];
    let c = n.accept();
    let body = n.login_with(c, resume_req(me, ra.instance_id, ra.p2p_epoch, 0, cursors));
    let reply = login_reply(body);
    assert!(reply.resumed);
    let resumed: Vec<String> = reply
        .channels
        .iter()
        .map(|r| r.channel.as_ref().unwrap().channel_id.clone())
        .collect();
    assert_eq!(
        resumed,
        vec![kept.clone(), local.clone()],
        "in the login's order"
    );
    assert!(
        reply.channels.iter().all(|r| r.state.is_some()),
        "{reply:?}"
    );
    // The replays follow the reply.
    let mut texts: Vec<String> = channel_texts(&n.bodies(c))
        .into_iter()
        .map(|(_, t)| t)
        .collect();
    texts.sort();
    let mut want = vec![format!("missed in {kept}"), format!("missed in {local}")];
    want.sort();
    assert_eq!(texts, want);
    // The dropped channel was left: the other member is told.
    n.advance(secs(1));
    assert_eq!(memberships(&n.bodies(b)), vec![(vec![], vec![me])]);
    assert_eq!(n.err(c, to_channel(&dropped, "x")), 5101);
    // The kept ones go on, pushed live.
    n.sent(b, to_channel(&kept, "live"));
    assert_eq!(channel_texts(&n.bodies(c)), vec![(2, "live".into())]);
}

#[test]
fn grace_expiry_and_logout_leave_the_channels_of_other_shards() {
    let room = channel_on(0);
    let (me, other) = (uid_on(1), uid_on(2));
    let mut n = sharded();
    let (a, _) = n.login(me);
    let (b, _) = n.login(other);
    let epoch = n.ok_join(a, &room).epoch;
    n.ok_join(b, &room);
    n.advance(secs(1));
    n.clear(&[a, b]);
    // The grace period ends: a departure, with a replay for a rejoin.
    let a2 = n.depart(a, me);
    n.advance(secs(1));
    assert_eq!(memberships(&n.bodies(b)), vec![(vec![], vec![me])]);
    n.sent(b, to_channel(&room, "while away"));
    match n.req(a2, rejoin(&room, epoch, 0)) {
        Body::JoinReply(j) => assert_eq!(j.epoch, epoch),
        other => panic!("{other:?}"),
    }
    assert_eq!(channel_texts(&n.bodies(a2)), vec![(1, "while away".into())]);
    n.advance(secs(1));
    n.clear(&[b]);
    // A logout leaves at once.
    n.ok(a2, Body::Logout(wire::Empty {}));
    n.advance(secs(1));
    assert_eq!(memberships(&n.bodies(b)), vec![(vec![], vec![me])]);
    assert_eq!(n.s.instance_count(), 1);
    match n.req(b, Body::GetUserList(key(&room))) {
        Body::UserList(l) => assert_eq!(l.uids, vec![other]),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_second_login_on_a_link_and_requests_before_login_are_refused_as_on_one_hub() {
    let mut n = sharded();
    let c = n.accept();
    n.rid += 1;
    let rid = n.rid;
    n.raw(c, frame(rid, join(&channel_on(1))));
    assert_eq!(n.closes_of(c), vec![CloseReason::NotLoggedIn]);
    let (a, _) = n.login(uid_on(1));
    // Another uid, homed elsewhere: still this link's second login.
    assert_eq!(n.err(a, Body::Login(login_req(uid_on(2)))), 2011);
    n.ok_join(a, &channel_on(2));
}
