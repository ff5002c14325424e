//! User and channel attributes, and the reads.

use crate::support::*;

#[test]
fn user_attribute_ops_with_and_without_notification() {
    let mut n = Net::demo();
    let (a, _) = n.login(1);
    let (b, _) = n.login(2);
    n.ok_join(a, "room");
    n.ok_join(b, "room");
    n.advance(Duration::from_secs(1));
    n.frames(a);
    n.frames(b);
    let get = |n: &mut Net, uid| match n.req(
        b,
        Body::GetUserAttributes(wire::GetUserAttributesRequest {
            channel: Some(key("room")),
            uid,
            keys: vec![],
        }),
    ) {
        Body::Attributes(r) => r.attributes,
        other => panic!("{other:?}"),
    };
    // SET without notification: nobody hears of it.
    n.ok(
        a,
        write(
            false,
            "room",
            AttributeOp::Set,
            attrs(&[("x", "1"), ("y", "2")]),
            &[],
            false,
        ),
    );
    assert!(n.frames(b).is_empty() && n.frames(a).is_empty());
    assert_eq!(get(&mut n, 1), attrs(&[("x", "1"), ("y", "2")]));
    // ADD_OR_UPDATE with: every member (the writer too) gets the upserted.
    n.ok(
        a,
        write(
            false,
            "room",
            AttributeOp::AddOrUpdate,
            attrs(&[("y", "3"), ("z", "4")]),
            &[],
            true,
        ),
    );
    for x in [a, b] {
        let bodies = n.bodies(x);
        assert!(matches!(&bodies[..], [Body::UserAttributesChanged(p)]
            if p.uid == 1 && p.op == AttributeOp::AddOrUpdate as i32
               && p.attributes == attrs(&[("y", "3"), ("z", "4")]) && p.timestamp_ms == T0_UNIX_MS + 1000));
    }
    assert_eq!(get(&mut n, 1), attrs(&[("x", "1"), ("y", "3"), ("z", "4")]));
    n.ok(
        a,
        write(
            false,
            "room",
            AttributeOp::Delete,
            BTreeMap::new(),
            &["x"],
            true,
        ),
    );
    assert!(matches!(&n.bodies(b)[..], [Body::UserAttributesChanged(p)]
        if p.op == AttributeOp::Delete as i32 && p.keys == vec!["x".to_string()]));
    n.ok(
        a,
        write(
            false,
            "room",
            AttributeOp::Set,
            attrs(&[("k", "v")]),
            &[],
            true,
        ),
    );
    assert!(matches!(&n.bodies(b)[..], [Body::UserAttributesChanged(p)]
        if p.op == AttributeOp::Set as i32 && p.attributes == attrs(&[("k", "v")])));
    // by keys, list by attribute
    match n.req(
        b,
        Body::GetUserAttributes(wire::GetUserAttributesRequest {
            channel: Some(key("room")),
            uid: 1,
            keys: vec!["k".into(), "missing".into()],
        }),
    ) {
        Body::Attributes(r) => assert_eq!(r.attributes, attrs(&[("k", "v")])),
        other => panic!("{other:?}"),
    }
    let by = |value: &str| {
        Body::GetUserListByAttribute(wire::GetUserListByAttributeRequest {
            channel: Some(key("room")),
            key: "k".into(),
            value: value.into(),
        })
    };
    assert_eq!(
        n.req(b, by("v")),
        Body::UserList(wire::UserListReply { uids: vec![1] })
    );
    assert_eq!(
        n.req(b, by("w")),
        Body::UserList(wire::UserListReply { uids: vec![] })
    );
    n.ok(
        a,
        write(
            false,
            "room",
            AttributeOp::Clear,
            BTreeMap::new(),
            &[],
            true,
        ),
    );
    assert!(
        matches!(&n.bodies(b)[..], [Body::UserAttributesChanged(p)] if p.op == AttributeOp::Clear as i32)
    );
    assert!(get(&mut n, 1).is_empty());
    // A uid not in the channel: 2004. Leaving drops the leaver's attributes.
    let not_in = Body::GetUserAttributes(wire::GetUserAttributesRequest {
        channel: Some(key("room")),
        uid: 9,
        keys: vec![],
    });
    assert_eq!(n.err(b, not_in), 2004);
    n.ok(
        a,
        write(
            false,
            "room",
            AttributeOp::Set,
            attrs(&[("k", "v")]),
            &[],
            false,
        ),
    );
    n.ok(a, leave("room"));
    n.ok_join(a, "room");
    assert!(get(&mut n, 1).is_empty());
}

#[test]
fn channel_attribute_ops_and_lifecycle() {
    let mut n = Net::demo();
    let (a, _) = n.login(1);
    let (b, _) = n.login(2);
    n.ok_join(a, "room");
    n.ok_join(b, "room");
    n.advance(Duration::from_secs(1));
    n.frames(a);
    n.frames(b);
    let get = |n: &mut Net, keys: Vec<String>| match n.req(
        b,
        Body::GetChannelAttributes(wire::GetChannelAttributesRequest {
            channel: Some(key("room")),
            keys,
        }),
    ) {
        Body::Attributes(r) => r,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        n.err(
            a,
            write(
                true,
                "room",
                AttributeOp::Delete,
                BTreeMap::new(),
                &["x"],
                false
            )
        ),
        5108
    );
    assert_eq!(
        n.err(
            a,
            write(
                true,
                "room",
                AttributeOp::Clear,
                BTreeMap::new(),
                &[],
                false
            )
        ),
        5108
    );
    n.ok(
        a,
        write(
            true,
            "room",
            AttributeOp::Set,
            attrs(&[("t", "topic")]),
            &[],
            false,
        ),
    );
    assert!(n.frames(b).is_empty());
    let r = get(&mut n, vec![]);
    assert_eq!(r.attributes, attrs(&[("t", "topic")]));
    assert_eq!(
        (r.last_update_uid, r.last_update_ts),
        (1, T0_UNIX_MS + 1000)
    );
    n.advance(Duration::from_secs(1));
    n.ok(
        b,
        write(
            true,
            "room",
            AttributeOp::AddOrUpdate,
            attrs(&[("u", "2")]),
            &[],
            true,
        ),
    );
    for x in [a, b] {
        assert!(
            matches!(&n.bodies(x)[..], [Body::ChannelAttributesChanged(p)]
            if p.last_update_uid == 2 && p.op == AttributeOp::AddOrUpdate as i32 && p.attributes == attrs(&[("u", "2")]))
        );
    }
    assert_eq!(
        get(&mut n, vec!["u".into()]).attributes,
        attrs(&[("u", "2")])
    );
    assert_eq!(get(&mut n, vec![]).last_update_ts, T0_UNIX_MS + 2000);
    n.ok(
        a,
        write(
            true,
            "room",
            AttributeOp::Delete,
            BTreeMap::new(),
            &["t"],
            true,
        ),
    );
    assert!(
        matches!(&n.bodies(b)[..], [Body::ChannelAttributesChanged(p)] if p.keys == vec!["t".to_string()])
    );
    n.ok(
        a,
        write(true, "room", AttributeOp::Clear, BTreeMap::new(), &[], true),
    );
    assert!(
        matches!(&n.bodies(b)[..], [Body::ChannelAttributesChanged(p)] if p.op == AttributeOp::Clear as i32)
    );
    // Dropped when the last member leaves.
    n.ok(
        a,
        write(
            true,
            "room",
            AttributeOp::Set,
            attrs(&[("t", "x")]),
            &[],
            false,
        ),
    );
    n.ok(a, leave("room"));
    n.ok(b, leave("room"));
    n.ok_join(b, "room");
    assert!(get(&mut n, vec![]).attributes.is_empty());
}

#[test]
fn reads_counts_info_region_token_logout() {
    let mut n = Net::demo();
    let (a, ra) = n.login(3);
    let (b, _) = n.login(1);
    n.ok_join(a, "room");
    n.ok_join(b, "room");
    assert_eq!(
        n.req(a, Body::GetUserList(key("room"))),
        Body::UserList(wire::UserListReply { uids: vec![1, 3] })
    );
    let (outsider, _) = n.login(9);
    let count = Body::GetUserCount(wire::GetUserCountRequest {
        region: wire::Region::Cn as i32,
        channel_ids: vec!["room".into(), "empty".into()],
    });
    assert_eq!(
        n.req(outsider, count),
        Body::UserCount(wire::UserCountReply {
            counts: [("empty".to_string(), 0), ("room".to_string(), 2)]
                .into_iter()
                .collect()
        })
    );
    // Other regions are other channels.
    let other = Body::GetUserCount(wire::GetUserCountRequest {
        region: wire::Region::Us as i32,
        channel_ids: vec!["room".into()],
    });
    assert!(matches!(n.req(outsider, other), Body::UserCount(c) if c.counts["room"] == 0));
    n.ok(
        a,
        Body::SetUserRegion(wire::SetUserRegionRequest {
            region: wire::Region::Us as i32,
        }),
    );
    assert_eq!(
        n.err(
            a,
            Body::SetUserRegion(wire::SetUserRegionRequest { region: 42 })
        ),
        2001
    );
    match n.req(a, Body::GetInstanceInfo(wire::Empty {})) {
        Body::InstanceInfo(i) => {
            assert_eq!(
                (i.appid, i.uid, i.instance_id),
                (DEMO_APPID, 3, ra.instance_id)
            );
            assert!(i.is_anonymous);
            assert_eq!(i.region, wire::Region::Us as i32);
            assert_eq!(i.channels, vec![key("room")]);
        }
        other => panic!("{other:?}"),
    }
    let now_s = T0_UNIX_MS / 1000;
    let refresh = |t: String| Body::RefreshToken(wire::RefreshTokenRequest { token: t });
    match n.req(
        a,
        refresh(mint_token(DEMO_SECRET, DEMO_APPID, 3, now_s + 60)),
    ) {
        Body::RefreshTokenReply(r) => {
            assert_eq!(r.token_expires_at_ms, (now_s + 60) * 1000);
            assert_eq!(r.server_time_ms, T0_UNIX_MS);
        }
        other => panic!("expected the new expiry, got {other:?}"),
    }
    assert_eq!(
        n.err(
            a,
            refresh(mint_token(DEMO_SECRET, DEMO_APPID, 4, now_s + 60))
        ),
        2002
    );
    assert_eq!(
        n.err(a, refresh(mint_token(DEMO_SECRET, DEMO_APPID, 3, now_s))),
        2003
    );
    // Logout: leaves at once (notice after the window), instance gone.
    n.advance(Duration::from_secs(1));
    n.frames(b);
    n.ok(a, Body::Logout(wire::Empty {}));
    assert_eq!(n.err(a, Body::GetInstanceInfo(wire::Empty {})), 1009);
    n.advance(Duration::from_secs(1));
    assert!(matches!(&n.bodies(b)[0], Body::Membership(m) if m.left == vec![3]));
    assert_eq!(
        n.req(
            b,
            Body::QueryOnline(wire::QueryOnlineRequest { uids: vec![3] })
        ),
        Body::OnlineStatus(wire::OnlineStatusReply {
            status: [(3, false)].into_iter().collect()
        })
    );
}

#[test]
fn an_attribute_notice_that_would_exceed_the_frame_size_is_refused() {
    let mut n = Net::demo();
    let (a, _) = n.login(u64::MAX / 2);
    let (b, _) = n.login(2);
    n.req(a, join("c"));
    n.req(b, join("c"));
    n.ok(
        a,
        write(
            true,
            "c",
            AttributeOp::Set,
            attrs(&[("k", "v")]),
            &[],
            false,
        ),
    );
    n.advance(Duration::from_secs(1));
    n.frames(a);
    n.frames(b);
    // DELETE with as many 31-byte keys as fit in one request frame.
    let mut keys: Vec<String> = (0..(MAX as u64 / 33 - 20))
        .map(|i| format!("{:0>31}", i))
        .collect();
    let mut i = keys.len() as u64;
    loop {
        let mut k2 = keys.clone();
        k2.push(format!("{:0>31}", i));
        let w = Body::WriteChannelAttributes(wire::AttributesWrite {
            channel: Some(key("c")),
            op: AttributeOp::Delete as i32,
            attributes: BTreeMap::new(),
            keys: k2.clone(),
            enable_notification: true,
        });
        if encode_frame(&Frame {
            request_id: 99,
            body: Some(w),
        })
        .len()
            > MAX
        {
            break;
        }
        keys = k2;
        i += 1;
    }
    // Pad with one shorter key so the request is within a few bytes of MAX.
    for len in (1..=31).rev() {
        let mut k2 = keys.clone();
        k2.push(
            format!("{:0>len$}", i, len = len)
                .chars()
                .rev()
                .take(len)
                .collect(),
        );
        let w = Body::WriteChannelAttributes(wire::AttributesWrite {
            channel: Some(key("c")),
            op: AttributeOp::Delete as i32,
            attributes: BTreeMap::new(),
            keys: k2.clone(),
            enable_notification: true,
        });
        if encode_frame(&Frame {
            request_id: 99,
            body: Some(w),
        })
        .len()
            <= MAX
        {
            keys = k2;
            break;
        }
    }
    n.held.insert(b);
    let refs: Vec<&str> = keys.iter().map(|s| s.as_str()).collect();
    n.held.insert(a);
    n.rid += 1;
    let req = encode_frame(&Frame {
        request_id: n.rid,
        body: Some(write(
            true,
            "c",
            AttributeOp::Delete,
            BTreeMap::new(),
            &refs,
            true,
        )),
    });
    n.s.handle_frame(n.now, a, req);
    n.pump();
    // Refused up front (2001): no notice was queued for b.
    let a_frames: Vec<_> = std::iter::from_fn(|| n.s.poll_transmit(a))
        .map(|f| decode_frame(f, usize::MAX).unwrap().body)
        .collect();
    assert!(
        matches!(&a_frames[..], [Body::Error(e)] if e.code == 2001),
        "{a_frames:?}"
    );
    let sizes: Vec<usize> = std::iter::from_fn(|| n.s.poll_transmit(b))
        .map(|f| f.len())
        .collect();
    assert!(sizes.is_empty(), "server queued notices of {sizes:?} bytes");
    assert!(n.closed.is_empty());
}
