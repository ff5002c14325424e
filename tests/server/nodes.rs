//! A gateway's node dying (`Server::kill_gateway`): its links break and the
//! hub is told nothing until it notices (`Server::handle_gateway_lost`);
//! meanwhile messages for the dead gateway are dropped and new connections
//! go to the others.

use hummer_channel::server::GatewayId;

use crate::support::*;

/// The shapes every test here runs on: three gateways ("nodes") in front
/// of a hub of one shard, and of three; a grace period of 5 s (well
/// within the idle timeout: the links that stay need no pings).
fn shapes() -> [Net; 2] {
    let mut config = ServerConfig::demo();
    config.presence_grace = Duration::from_secs(5);
    [Net::shaped(config.clone(), 3, 1), Net::shaped(config, 3, 3)]
}

/// Whether each of `uids` is online, asked on `c`.
fn online(n: &mut Net, c: ConnId, uids: &[u64]) -> Vec<bool> {
    let q = Body::QueryOnline(wire::QueryOnlineRequest {
        uids: uids.to_vec(),
    });
    match n.req(c, q) {
        Body::OnlineStatus(s) => uids.iter().map(|u| s.status[u]).collect(),
        other => panic!("{other:?}"),
    }
}

/// Uids `1, 2, 3` logged in on gateways 0, 1, 2, all in "room", their
/// frames so far taken.
fn three_in_a_room(n: &mut Net) -> [(ConnId, wire::LoginReply); 3] {
    let logins = [n.login(1), n.login(2), n.login(3)];
    for (k, (c, _)) in logins.iter().enumerate() {
        assert_eq!(c.gateway(), GatewayId(k as u16));
        n.ok_join(*c, "room");
    }
    n.advance(Duration::from_secs(1));
    n.clear(&logins.iter().map(|l| l.0).collect::<Vec<_>>());
    logins
}

#[test]
fn a_killed_gateway_says_nothing_and_its_instances_leave_a_grace_period_after_the_hub_learns() {
    for mut n in shapes() {
        let grace = n.s.config().presence_grace;
        let [(a, _), (b, _), (c, _)] = three_in_a_room(&mut n);

        assert_eq!(n.s.kill_gateway(n.now, GatewayId(1)), vec![b]);
        n.pump();
        assert!(n.closed.is_empty(), "no close reported: {:?}", n.closed);
        assert_eq!(n.s.connection_count(), 2);
        // The dead gateway's link that the client still writes to gets
        // nothing, and nothing it says reaches the hub.
        let stale = n.s.stale_inputs();
        n.send(b, to_channel("room", "from the dead"));
        assert_eq!(n.s.stale_inputs(), stale + 1);
        assert!(n.bodies(b).is_empty());
        // Messages for it are dropped: the hub still thinks b is linked.
        let r = n.sent(a, to_user(2, "to the dead"));
        assert!(r.delivered_online, "the hub does not know yet");
        n.sent(a, to_channel("room", "to everyone"));
        n.advance(Duration::from_secs(1));
        assert!(n.bodies(b).is_empty());
        assert!(n
            .bodies(c)
            .iter()
            .any(|x| matches!(x, Body::ChannelMessage(_))));
        // New connections skip it.
        let accepted: Vec<u16> = (0..4).map(|_| n.accept().gateway().0).collect();
        assert!(!accepted.contains(&1), "{accepted:?}");
        // However long the hub takes to learn, uid 2 stays online until then.
        n.run_for(grace + Duration::from_secs(10));
        assert_eq!(online(&mut n, a, &[1, 2, 3]), [true, true, true]);
        assert_eq!(n.s.instance_count(), 3);

        // The hub learns: the grace period starts now; the gateway is back,
        // with fresh connection ids.
        n.s.handle_gateway_lost(n.now, GatewayId(1));
        n.pump();
        let back: Vec<ConnId> = (0..3).map(|_| n.accept()).collect();
        let fresh = back.iter().find(|x| x.gateway() == GatewayId(1));
        assert!(fresh.is_some_and(|x| x.0 > b.0), "{back:?} after {b}");
        n.clear(&[a, c]);
        n.advance(grace - Duration::from_millis(1));
        assert_eq!(online(&mut n, a, &[1, 2, 3]), [true, true, true]);
        n.run_for(Duration::from_secs(2));
        assert_eq!(online(&mut n, a, &[1, 2, 3]), [true, false, true]);
        assert_eq!(n.s.instance_count(), 2);
        for x in [a, c] {
            let heard = n.bodies(x);
            assert!(
                heard
                    .iter()
                    .any(|m| matches!(m, Body::Membership(m) if m.left == vec![2])),
                "{x}: {heard:?}"
            );
        }
        // A second word of the same loss, or of a gateway alive, is nothing.
        n.s.handle_gateway_lost(n.now, GatewayId(1));
        n.s.handle_gateway_lost(n.now, GatewayId(2));
        n.s.handle_gateway_lost(n.now, GatewayId(9));
        n.pump();
        n.sent(a, to_channel("room", "still here"));
        assert!(n
            .bodies(c)
            .iter()
            .any(|x| matches!(x, Body::ChannelMessage(_))));
        assert_eq!(n.s.kill_gateway(n.now, GatewayId(9)), vec![]);
    }
}

#[test]
fn a_client_of_a_killed_gateway_resumes_elsewhere_before_the_hub_learns() {
    for mut n in shapes() {
        let grace = n.s.config().presence_grace;
        let [(a, _), (b, rb), (c, _)] = three_in_a_room(&mut n);
        let room = n.ok_join(b, "room");
        n.clear(&[a, b, c]);
        assert_eq!(n.s.kill_gateway(n.now, GatewayId(1)), vec![b]);
        let sent = n.sent(a, to_user(2, "while the node was dead"));
        n.sent(a, to_channel("room", "in the room meanwhile"));
        n.advance(Duration::from_millis(500));

        // b resumes from its cursors on a link of another gateway: what was
        // sent to the dead link comes again, on the new one.
        let (b2, r) = n.login_req_on_new(resume_req(
            2,
            rb.instance_id,
            rb.p2p_epoch,
            rb.p2p_seq,
            vec![cursor("room", room.epoch, room.seq)],
        ));
        assert_ne!(b2.gateway(), GatewayId(1));
        assert!(r.resumed);
        n.advance(Duration::from_millis(200));
        let got = n.bodies(b2);
        assert!(
            got.iter()
                .any(|x| matches!(x, Body::UserMessage(m) if m.seq == sent.seq)),
            "{got:?}"
        );
        assert!(
            got.iter().any(|x| matches!(x, Body::ChannelMessage(_))),
            "{got:?}"
        );
        // The old link's replacement goes nowhere: its gateway is dead.
        assert!(n.closes_of(b).is_empty());

        // The hub learns of the loss later: the resumed instance is not on
        // the lost gateway any more, and stays.
        n.advance(Duration::from_secs(3));
        n.s.handle_gateway_lost(n.now, GatewayId(1));
        n.pump();
        n.run_for(grace + Duration::from_secs(5));
        assert_eq!(online(&mut n, a, &[1, 2, 3]), [true, true, true]);
        assert_eq!(n.s.instance_count(), 3);
        let heard = n.bodies(a);
        assert!(
            !heard.iter().any(|x| matches!(x, Body::Membership(_))),
            "{heard:?}"
        );
        n.sent(a, to_channel("room", "after"));
        assert!(n
            .bodies(b2)
            .iter()
            .any(|x| matches!(x, Body::ChannelMessage(_))));
    }
}

#[test]
fn with_every_gateway_dead_none_accepts_until_the_hub_learns() {
    let mut n = Net::shaped(ServerConfig::demo(), 2, 1);
    let (a, _) = n.login(1);
    let (b, _) = n.login(2);
    assert!(n.s.is_accepting());
    assert_eq!(n.s.kill_gateway(n.now, GatewayId(0)), vec![a]);
    assert!(n.s.is_accepting());
    assert_eq!(n.s.kill_gateway(n.now, GatewayId(1)), vec![b]);
    assert_eq!(
        n.s.kill_gateway(n.now, GatewayId(1)),
        vec![],
        "dead already"
    );
    assert!(!n.s.is_accepting());
    assert_eq!(n.s.connection_count(), 0);
    n.s.handle_gateway_lost(n.now, GatewayId(1));
    assert!(n.s.is_accepting());
    let fresh: Vec<ConnId> = (0..2).map(|_| n.accept()).collect();
    assert!(fresh.iter().all(|x| x.gateway() == GatewayId(1)));
    assert_eq!(n.s.instance_count(), 2, "both in their grace period");
    let (c, _) = n.login(3);
    assert_eq!(c.gateway(), GatewayId(1));
    assert_eq!(n.s.instance_count(), 3);
}

#[test]
#[should_panic(expected = "no gateway takes connections")]
fn accepting_with_every_gateway_dead_panics() {
    let mut n = Net::shaped(ServerConfig::demo(), 1, 1);
    n.s.kill_gateway(n.now, GatewayId(0));
    n.accept();
}
