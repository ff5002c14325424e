//! A store spread over several real redis-servers (each test its own):
//! every object on its hub shard's instance, loads merged, instances given
//! in another order refused, each instance's loss found apart, the lease
//! held on all of them, taken in order.

use super::*;
use hummer_channel::adapters::server_tcp::store::Lease;

fn inbox(uid: u64) -> StoreKey {
    StoreKey::Inbox { appid: 7, uid }
}

/// Two redis-servers without persistence.
fn two_redis() -> (RedisServer, RedisServer) {
    (
        RedisServer::start(Persistence::None),
        RedisServer::start(Persistence::None),
    )
}

fn urls(servers: &[&RedisServer]) -> String {
    let urls: Vec<String> = servers.iter().map(|s| s.url()).collect();
    urls.join(",")
}

fn config(servers: &[&RedisServer]) -> StoreConfig {
    StoreConfig::new(&urls(servers))
        .unwrap()
        .with_namespace("t")
}

/// Two inboxes whose place is instance 0 and two whose place is 1 (of 2).
fn keys_by_instance(config: &StoreConfig) -> [Vec<StoreKey>; 2] {
    let mut by = [Vec::new(), Vec::new()];
    for uid in 1.. {
        let key = inbox(uid);
        let at = config.instance_of(&key);
        if by[at].len() < 2 {
            by[at].push(key);
        }
        if by.iter().all(|b| b.len() == 2) {
            return by;
        }
    }
    unreachable!()
}

/// The object names a Redis holds in the inbox set of namespace `t`.
fn names_on(server: &RedisServer) -> String {
    raw_command(server.port(), &["SMEMBERS", "t:keys:i"])
}

#[test]
fn each_object_is_written_to_its_instance_and_a_load_merges_them() {
    let (a, b) = two_redis();
    smol::block_on(async {
        let config = config(&[&a, &b]);
        let [zero, one] = keys_by_instance(&config);
        let mut store = RedisStore::connect(&config).await.unwrap();
        assert_eq!(store.load().await.unwrap(), vec![]);
        // One batch over both instances: each part lands where it lives.
        let mut writes = Vec::new();
        for key in zero.iter().chain(&one) {
            writes.push(put(key, &key.name()));
            writes.push(append(key, 1, "m1"));
        }
        store.write(&StoreBatch::new(1, writes)).await.unwrap();
        for key in &zero {
            assert!(names_on(&a).contains(&key.name()));
            assert!(!names_on(&b).contains(&key.name()));
        }
        for key in &one {
            assert!(names_on(&b).contains(&key.name()));
            assert!(!names_on(&a).contains(&key.name()));
        }
        let mut expected: Vec<StoredObject> = zero
            .iter()
            .chain(&one)
            .map(|k| {
                StoredObject::new(
                    k.clone(),
                    Bytes::from(k.name()),
                    vec![(1, Bytes::from_static(b"m1"))],
                )
            })
            .collect();
        expected.sort_by(|x, y| x.key.cmp(&y.key));
        let mut again = RedisStore::connect(&config).await.unwrap();
        assert_eq!(again.load().await.unwrap(), expected);
        assert_eq!(again.skipped(), 0);
        // A generation per instance, in order.
        let g = again.generation().unwrap().to_owned();
        let parts: Vec<&str> = g.split(',').collect();
        assert_eq!(parts.len(), 2);
        assert!(parts.iter().all(|p| p.len() == 32), "{g}");
        assert_ne!(parts[0], parts[1]);
        // An object found on an instance that is not its place (written
        // by hand) is left out and counted: no load would look there.
        let stray = &zero[0].name();
        raw_command(b.port(), &["SET", &format!("t:r:{stray}"), "stray"]);
        raw_command(b.port(), &["SADD", "t:keys:i", stray]);
        let mut third = RedisStore::connect(&config).await.unwrap();
        assert_eq!(third.load().await.unwrap(), expected);
        assert_eq!(third.skipped(), 1);
        // Each instance knows its place.
        assert!(raw_command(a.port(), &["GET", "t:ring"]).contains("0/2"));
        assert!(raw_command(b.port(), &["GET", "t:ring"]).contains("1/2"));
    });
}

#[test]
fn instances_given_in_another_order_or_number_are_refused() {
    let (a, b) = two_redis();
    smol::block_on(async {
        let mut store = RedisStore::connect(&config(&[&a, &b])).await.unwrap();
        store.load().await.unwrap();
        for wrong in [config(&[&b, &a]), config(&[&a]), config(&[&b])] {
            let mut store = RedisStore::new(&wrong);
            match store.load().await {
                Err(StoreError::Invalid(why)) => {
                    assert!(why.contains("in the order and number"), "{why}")
                }
                other => panic!("{wrong:?} loaded: {other:?}"),
            }
            // A write finds it too, before writing anything.
            let key = inbox(1);
            let got = store.write(&StoreBatch::new(1, vec![put(&key, "x")])).await;
            assert!(matches!(got, Err(StoreError::Invalid(_))), "{got:?}");
        }
        assert!(!names_on(&a).contains("i/7/1") && !names_on(&b).contains("i/7/1"));
        // A store that was one Redis stays one.
        let c = RedisServer::start(Persistence::None);
        RedisStore::connect(&config(&[&c]))
            .await
            .unwrap()
            .load()
            .await
            .unwrap();
        let grown = RedisStore::new(&config(&[&c, &a])).load().await;
        assert!(matches!(grown, Err(StoreError::Invalid(_))), "{grown:?}");
    });
}

#[test]
fn a_narrowed_store_writes_its_instance_only() {
    let (a, b) = two_redis();
    smol::block_on(async {
        let whole = config(&[&a, &b]);
        let [zero, one] = keys_by_instance(&whole);
        let mut loader = RedisStore::connect(&whole).await.unwrap();
        loader.load().await.unwrap();
        let generation = loader.generation().unwrap().to_owned();
        let mut writer = RedisStore::new(&whole.instance(1));
        writer.expect_generation(&generation);
        assert_eq!(
            writer.generation(),
            Some(&generation[generation.find(',').unwrap()..])
        );
        writer
            .write(&StoreBatch::new(1, vec![put(&one[0], "mine")]))
            .await
            .unwrap();
        let got = writer
            .write(&StoreBatch::new(
                2,
                vec![put(&one[1], "mine"), put(&zero[0], "not mine")],
            ))
            .await;
        match got {
            Err(StoreError::Invalid(why)) => assert!(why.contains("instance 0"), "{why}"),
            other => panic!("{other:?}"),
        }
        // Refused whole: not even the part that was its own.
        assert!(!names_on(&b).contains(&one[1].name()));
        assert!(!names_on(&a).contains(&zero[0].name()));
        // The hub's address lives on the first instance only.
        assert!(matches!(
            writer.hub_node().await,
            Err(StoreError::Invalid(_))
        ));
        // Instance 1 loses its data: the writer of 1 finds it once; the
        // whole store's check finds it too, and instance 0 is untouched.
        raw_command(b.port(), &["FLUSHALL"]);
        assert_eq!(writer.check().await, Err(StoreError::Lost));
        assert_eq!(writer.check().await, Ok(()));
        assert_eq!(loader.check().await, Err(StoreError::Lost));
        assert_eq!(loader.check().await, Ok(()));
        let after = loader.generation().unwrap().to_owned();
        assert_eq!(after.split(',').next(), generation.split(',').next());
        assert_ne!(after.split(',').nth(1), generation.split(',').nth(1));
        // The other instance's writer saw nothing lost.
        let mut other = RedisStore::new(&whole.instance(0));
        other.expect_generation(&generation);
        other
            .write(&StoreBatch::new(1, vec![put(&zero[0], "z")]))
            .await
            .unwrap();
        // A generation of another shape is ignored, not misread.
        let mut odd = RedisStore::new(&whole);
        odd.expect_generation("only-one");
        assert_eq!(odd.generation(), None);
    });
}

#[test]
fn the_lease_is_held_on_every_instance_and_taken_in_order() {
    let (a, mut b) = two_redis();
    smol::block_on(async {
        let node = |owner: &str| config(&[&a, &b]).with_lease(owner);
        let ttl = Duration::from_millis(1000);
        let lease_on = |s: &RedisServer| raw_command(s.port(), &["GET", "t:lease"]);
        let mut one = RedisStore::connect(&node("one")).await.unwrap();
        one.load().await.unwrap();
        // A dying node still holds instance 1's lease.
        raw_command(b.port(), &["SET", "t:lease", "old", "PX", "300"]);
        assert_eq!(one.claim_lease(ttl).await, Ok(Lease::HeldBy("old".into())));
        assert!(lease_on(&a).contains("one"));
        // Meanwhile nothing is written on 1, but 0 takes writes.
        let [zero, first] = keys_by_instance(one.config());
        assert_eq!(
            one.write(&StoreBatch::new(1, vec![put(&first[0], "x")]))
                .await,
            Err(StoreError::Fenced)
        );
        one.write(&StoreBatch::new(2, vec![put(&zero[0], "x")]))
            .await
            .unwrap();
        // Another node waiting finds instance 0 held and takes nothing
        // after it, though 1 is free now: it never holds half of the
        // store against `one`.
        let mut two = RedisStore::connect(&node("two")).await.unwrap();
        std::thread::sleep(Duration::from_millis(350));
        assert_eq!(two.claim_lease(ttl).await, Ok(Lease::HeldBy("one".into())));
        assert!(lease_on(&b).contains("$-1"), "{}", lease_on(&b));
        assert_eq!(one.claim_lease(ttl).await, Ok(Lease::Held));
        assert!(lease_on(&b).contains("one"));
        one.write(&StoreBatch::new(3, vec![put(&first[0], "x")]))
            .await
            .unwrap();
        // Instance 1 unreachable: the claim says the store could not be
        // asked whole, and instance 0's lease is renewed all the same,
        // past its ttl.
        b.stop();
        for _ in 0..5 {
            assert!(matches!(
                one.claim_lease(ttl).await,
                Err(StoreError::Unavailable(_))
            ));
            std::thread::sleep(Duration::from_millis(300));
        }
        assert!(lease_on(&a).contains("one"));
        assert_eq!(two.claim_lease(ttl).await, Ok(Lease::HeldBy("one".into())));
        // `one` goes quiet: `two` takes instance 0, and 1 when it is back.
        std::thread::sleep(Duration::from_millis(1100));
        assert!(matches!(
            two.claim_lease(ttl).await,
            Err(StoreError::Unavailable(_))
        ));
        assert!(lease_on(&a).contains("two"));
        b.restart();
        assert_eq!(two.claim_lease(ttl).await, Ok(Lease::Held));
        assert!(lease_on(&b).contains("two"));
        assert_eq!(one.claim_lease(ttl).await, Ok(Lease::HeldBy("two".into())));
    });
}

#[test]
fn checks_and_generations_report_each_instance() {
    let (mut a, mut b) = two_redis();
    smol::block_on(async {
        let config = config(&[&a, &b]);
        let mut store = RedisStore::connect(&config).await.unwrap();
        assert_eq!(
            store.read_generation().await,
            Ok(None),
            "nothing loaded yet"
        );
        store.load().await.unwrap();
        let g = store.generation().unwrap().to_owned();
        assert_eq!(store.read_generation().await, Ok(Some(g.clone())));
        // One instance emptied: its part of the text is empty.
        raw_command(b.port(), &["FLUSHALL"]);
        let first = g.split(',').next().unwrap();
        assert_eq!(store.read_generation().await, Ok(Some(format!("{first},"))));
        // An instance out of reach is said, not hidden by the other's Ok.
        b.stop();
        assert!(matches!(
            store.check().await,
            Err(StoreError::Unavailable(_))
        ));
        // One out of reach and the other lost: the loss is what counts
        // (the caller must write again; it is told once).
        b.restart();
        a.stop();
        let mut fresh = RedisStore::new(&config);
        fresh.expect_generation(&g);
        assert_eq!(fresh.check().await, Err(StoreError::Lost));
        a.restart();
    });
}

#[test]
fn the_hub_node_is_named_on_the_first_instance_only() {
    let (a, b) = two_redis();
    smol::block_on(async {
        let ttl = Duration::from_secs(5);
        let mut hub = RedisStore::connect(&config(&[&a, &b]).with_lease("hub-1"))
            .await
            .unwrap();
        hub.load().await.unwrap();
        assert_eq!(hub.claim_lease(ttl).await, Ok(Lease::Held));
        assert_eq!(hub.lease_holder().await, Ok(Some("hub-1".into())));
        assert_eq!(hub.hub_node().await, Ok(None), "not announced yet");
        assert_eq!(hub.announce_hub("10.0.0.1:7400", "s3cret").await, Ok(true));
        let mut other = RedisStore::connect(&config(&[&a, &b]).with_lease("node-2"))
            .await
            .unwrap();
        let found = other.hub_node().await.unwrap().unwrap();
        assert_eq!(
            (found.node.as_str(), found.address.as_str()),
            ("hub-1", "10.0.0.1:7400")
        );
        assert_eq!(found.secret, "s3cret");
        // Another node cannot announce itself while the lease is held.
        assert_eq!(other.announce_hub("10.0.0.2:7400", "x").await, Ok(false));
        assert!(raw_command(a.port(), &["GET", "t:hub"]).contains("hub-1 10.0.0.1:7400"));
        assert!(raw_command(b.port(), &["GET", "t:hub"]).contains("$-1"));
        assert!(raw_command(b.port(), &["GET", "t:lease"]).contains("hub-1"));
    });
}

#[test]
fn a_store_from_before_places_were_recorded_is_one_redis() {
    let (a, b) = two_redis();
    smol::block_on(async {
        // As an older server left it: a generation and objects, no place.
        raw_command(
            a.port(),
            &["SET", "t:gen", "0123456789abcdef0123456789abcdef"],
        );
        raw_command(a.port(), &["SET", "t:r:i/7/1", "old"]);
        raw_command(a.port(), &["SADD", "t:keys:i", "i/7/1"]);
        // Given as the first of two, it is refused (half its objects would
        // be left out), and nothing is written on either.
        let got = RedisStore::new(&config(&[&a, &b])).load().await;
        assert!(
            matches!(&got, Err(StoreError::Invalid(w)) if w.contains("0/1")),
            "{got:?}"
        );
        assert!(raw_command(a.port(), &["GET", "t:ring"]).contains("$-1"));
        assert!(raw_command(b.port(), &["GET", "t:gen"]).contains("$-1"));
        // Given alone, it loads, and is recorded as one Redis.
        let mut one = RedisStore::new(&config(&[&a]));
        let objects = one.load().await.unwrap();
        assert_eq!(objects.len(), 1);
        assert!(raw_command(a.port(), &["GET", "t:ring"]).contains("0/1"));
    });
}

#[test]
fn a_lease_is_not_taken_over_instances_in_another_order() {
    let (a, b) = two_redis();
    smol::block_on(async {
        RedisStore::connect(&config(&[&a, &b]))
            .await
            .unwrap()
            .load()
            .await
            .unwrap();
        let mut wrong = RedisStore::new(&config(&[&b, &a]).with_lease("standby"));
        let got = wrong.claim_lease(Duration::from_secs(5)).await;
        assert!(
            matches!(&got, Err(StoreError::Invalid(w)) if w.contains("order")),
            "{got:?}"
        );
        assert!(matches!(
            wrong.lease_holder().await,
            Err(StoreError::Invalid(_))
        ));
        for r in [&a, &b] {
            assert!(raw_command(r.port(), &["GET", "t:lease"]).contains("$-1"));
        }
    });
}

#[test]
fn a_holder_that_cannot_reach_every_instance_lets_its_lease_lapse() {
    let (a, mut b) = two_redis();
    smol::block_on(async {
        let ttl = Duration::from_millis(600);
        let lease_on_a = || raw_command(a.port(), &["GET", "t:lease"]);
        let mut one = RedisStore::connect(&config(&[&a, &b]).with_lease("one"))
            .await
            .unwrap();
        assert_eq!(one.claim_lease(ttl).await, Ok(Lease::Held));
        b.stop();
        // Renewing every ttl/4: instance a's part is renewed for a while,
        // then, the whole lease unheld for ttl, no more.
        let start = std::time::Instant::now();
        while start.elapsed() < ttl * 3 {
            assert!(matches!(
                one.claim_lease(ttl).await,
                Err(StoreError::Unavailable(_))
            ));
            std::thread::sleep(ttl / 4);
        }
        assert!(lease_on_a().contains("$-1"), "{}", lease_on_a());
        // A node that reaches both takes over; the old holder learns it
        // from the instance it still reaches.
        raw_command(a.port(), &["SET", "t:lease", "two", "PX", "5000"]);
        assert_eq!(one.claim_lease(ttl).await, Ok(Lease::HeldBy("two".into())));
        // Everything back and nobody holding it: claimed as usual.
        b.restart();
        raw_command(a.port(), &["DEL", "t:lease"]);
        assert_eq!(one.claim_lease(ttl).await, Ok(Lease::Held));
        assert!(lease_on_a().contains("one"));
    });
}
