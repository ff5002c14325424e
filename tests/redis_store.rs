//! The Redis store against a real redis-server (each test its own): what a
//! batch writes is what a load reads back, namespaces, a refused write,
//! restarts with and without persistence, an unreachable server, a
//! password; and a store over several Redis (`sharding`).
#![cfg(feature = "redis")]

mod redis_support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use hummer_channel::adapters::server_tcp::store::{RedisStore, StoreConfig, StoreError};
use hummer_channel::server::{StoreBatch, StoreKey, StoreWrite, StoredObject};
use redis_support::{raw_command, Persistence, RedisServer};

#[path = "common/certs.rs"]
mod certs;
#[path = "redis_store/sharding.rs"]
mod sharding;

fn channel(id: &str) -> StoreKey {
    StoreKey::Channel {
        appid: 7,
        region: -1,
        id: id.into(),
    }
}

fn put(key: &StoreKey, record: &str) -> StoreWrite {
    StoreWrite::Put {
        key: key.clone(),
        record: Bytes::copy_from_slice(record.as_bytes()),
    }
}

fn append(key: &StoreKey, seq: u64, entry: &str) -> StoreWrite {
    StoreWrite::Append {
        key: key.clone(),
        seq,
        entry: Bytes::copy_from_slice(entry.as_bytes()),
    }
}

fn trim(key: &StoreKey, seq: u64) -> StoreWrite {
    StoreWrite::TrimBelow {
        key: key.clone(),
        seq,
    }
}

fn delete(key: &StoreKey) -> StoreWrite {
    StoreWrite::Delete { key: key.clone() }
}

fn object(key: &StoreKey, record: &str, entries: &[(u64, &str)]) -> StoredObject {
    StoredObject::new(
        key.clone(),
        Bytes::copy_from_slice(record.as_bytes()),
        entries
            .iter()
            .map(|(seq, e)| (*seq, Bytes::copy_from_slice(e.as_bytes())))
            .collect(),
    )
}

/// `objects` in a stable order, to compare with an expected list.
fn sorted(mut objects: Vec<StoredObject>) -> Vec<StoredObject> {
    objects.sort_by(|a, b| a.key.cmp(&b.key));
    objects
}

async fn store(server: &RedisServer, ns: &str) -> RedisStore {
    let config = StoreConfig::new(&server.url()).unwrap().with_namespace(ns);
    let mut store = RedisStore::connect(&config).await.unwrap();
    store.load().await.unwrap();
    store
}

#[test]
fn what_batches_write_is_what_load_reads_back() {
    let server = RedisServer::start(Persistence::None);
    smol::block_on(async {
        let mut store = store(&server, "t").await;
        let odd = channel("room/1 with spaces ü 漢字");
        let plain = channel("lobby");
        let gone = channel("gone");
        let inbox = StoreKey::Inbox { appid: 7, uid: 42 };
        let instance = StoreKey::Instance {
            appid: 7,
            uid: 42,
            instance: u64::MAX,
        };
        // A stream's sends object: an empty record, entries trimmed by age.
        let sends = StoreKey::Sends {
            of: Box::new(inbox.clone()),
        };
        let batches = [
            vec![
                put(&odd, "odd v1"),
                append(&odd, 1, "m1"),
                append(&odd, 2, "m2"),
                put(&plain, "plain"),
                put(&gone, "soon gone"),
                append(&gone, 1, "x"),
            ],
            vec![
                append(&odd, 3, "m3"),
                trim(&odd, 3),
                put(&odd, "odd v2"),
                put(&inbox, "inbox"),
                append(&inbox, 10, "p10"),
                append(&inbox, 11, "p11 \u{0}\u{ff} bytes"),
                put(&instance, "instance"),
            ],
            vec![
                delete(&gone),
                append(&inbox, 12, "p12"),
                trim(&inbox, 11),
                put(&sends, ""),
                append(&sends, 8, "s8"),
                append(&sends, 9, "s9"),
                append(&sends, 10, "s10"),
                trim(&sends, 9),
            ],
        ];
        for (n, writes) in batches.into_iter().enumerate() {
            store
                .write(&StoreBatch::new(n as u64 + 1, writes))
                .await
                .unwrap();
        }
        let want = sorted(vec![
            object(&odd, "odd v2", &[(3, "m3")]),
            object(&plain, "plain", &[]),
            object(
                &inbox,
                "inbox",
                &[(11, "p11 \u{0}\u{ff} bytes"), (12, "p12")],
            ),
            object(&instance, "instance", &[]),
            object(&sends, "", &[(9, "s9"), (10, "s10")]),
        ]);
        assert_eq!(sorted(store.load().await.unwrap()), want);
        assert_eq!(store.skipped(), 0);

        // A second store (a restarted node) reads the same.
        let mut other = RedisStore::connect(store.config()).await.unwrap();
        assert_eq!(sorted(other.load().await.unwrap()), want);

        // Deleted, then created again: a new life, sequence numbers anew.
        store
            .write(&StoreBatch::new(
                4,
                vec![delete(&odd), put(&odd, "odd v3"), append(&odd, 1, "again")],
            ))
            .await
            .unwrap();
        let loaded = store.load().await.unwrap();
        let odd_now = loaded.iter().find(|o| o.key == odd).unwrap();
        assert_eq!(*odd_now, object(&odd, "odd v3", &[(1, "again")]));
    });
}

#[test]
fn load_skips_and_counts_members_that_make_no_object() {
    let server = RedisServer::start(Persistence::None);
    smol::block_on(async {
        let mut store = store(&server, "t").await;
        let key = channel("kept");
        store
            .write(&StoreBatch::new(
                1,
                vec![put(&key, "r"), append(&key, 1, "e")],
            ))
            .await
            .unwrap();
        // Not a name, a name in the wrong set, a name without a record.
        let orphan = StoreKey::Inbox { appid: 1, uid: 2 }.name();
        for (set, member) in [
            ("t:keys:c", "garbage"),
            ("t:keys:c", orphan.as_str()),
            ("t:keys:i", orphan.as_str()),
        ] {
            assert_eq!(raw_command(server.port(), &["SADD", set, member]), ":1\r\n");
        }
        let loaded = store.load().await.unwrap();
        assert_eq!(loaded, vec![object(&key, "r", &[(1, "e")])]);
        assert_eq!(store.skipped(), 3);

        // Stored data of the wrong type is skipped and counted, not a
        // panic, and not a failed load.
        raw_command(server.port(), &["DEL", &format!("t:e:{}", key.name())]);
        raw_command(
            server.port(),
            &["SET", &format!("t:e:{}", key.name()), "not a stream"],
        );
        assert_eq!(store.load().await, Ok(vec![]));
        assert_eq!(store.skipped(), 4);
    });
}

#[test]
fn namespaces_are_isolated() {
    let server = RedisServer::start(Persistence::None);
    smol::block_on(async {
        let mut a = store(&server, "a").await;
        let mut b = store(&server, "b").await;
        let key = channel("same");
        a.write(&StoreBatch::new(
            1,
            vec![put(&key, "of a"), append(&key, 1, "a1")],
        ))
        .await
        .unwrap();
        b.write(&StoreBatch::new(1, vec![put(&key, "of b")]))
            .await
            .unwrap();
        assert_eq!(
            a.load().await.unwrap(),
            vec![object(&key, "of a", &[(1, "a1")])]
        );
        assert_eq!(b.load().await.unwrap(), vec![object(&key, "of b", &[])]);
        b.write(&StoreBatch::new(2, vec![delete(&key)]))
            .await
            .unwrap();
        assert_eq!(b.load().await.unwrap(), vec![]);
        assert_eq!(a.load().await.unwrap().len(), 1);
        let mut c = store(&server, "c").await;
        assert_eq!(c.load().await.unwrap(), vec![]);
    });
}

/// MULTI/EXEC does not roll back: the refused write fails alone, the
/// batch's other writes (before and after it) are applied, and the store
/// goes on working.
#[test]
fn a_write_redis_refuses_is_invalid_and_its_batch_stops_there() {
    let server = RedisServer::start(Persistence::None);
    smol::block_on(async {
        let mut store = store(&server, "t").await;
        let a = channel("a");
        let b = channel("b");
        store
            .write(&StoreBatch::new(1, vec![put(&a, "a"), append(&a, 5, "a5")]))
            .await
            .unwrap();
        let err = store
            .write(&StoreBatch::new(
                2,
                vec![
                    append(&a, 6, "a6"),
                    append(&a, 3, "not above the last"),
                    put(&b, "b"),
                ],
            ))
            .await
            .unwrap_err();
        let StoreError::Invalid(why) = &err else {
            panic!("{err:?}");
        };
        assert!(
            why.contains("batch 2: Append c/7/-1/61 #3 failed, the writes before it applied"),
            "{why}"
        );
        assert_eq!(
            sorted(store.load().await.unwrap()),
            vec![object(&a, "a", &[(5, "a5"), (6, "a6")])]
        );
        store
            .write(&StoreBatch::new(3, vec![put(&b, "b")]))
            .await
            .unwrap();
        // An entry numbered 0 is refused too.
        assert!(matches!(
            store
                .write(&StoreBatch::new(4, vec![append(&b, 0, "zero")]))
                .await,
            Err(StoreError::Invalid(_))
        ));
        store
            .write(&StoreBatch::new(5, vec![append(&b, 1, "b1")]))
            .await
            .unwrap();
    });
}

#[test]
fn only_the_lease_holder_writes_and_a_lapsed_lease_passes_on() {
    use hummer_channel::adapters::server_tcp::store::Lease;
    let server = RedisServer::start(Persistence::None);
    smol::block_on(async {
        let config = |owner: &str| {
            StoreConfig::new(&server.url())
                .unwrap()
                .with_namespace("t")
                .with_lease(owner)
        };
        let mut one = RedisStore::connect(&config("one")).await.unwrap();
        let mut two = RedisStore::connect(&config("two")).await.unwrap();
        let ttl = Duration::from_millis(300);
        assert_eq!(one.claim_lease(ttl).await, Ok(Lease::Held));
        assert_eq!(two.claim_lease(ttl).await, Ok(Lease::HeldBy("one".into())));
        // Renewed by its holder, still refused to the other.
        assert_eq!(one.claim_lease(ttl).await, Ok(Lease::Held));
        let a = channel("a");
        assert_eq!(
            two.write(&StoreBatch::new(1, vec![put(&a, "from two")]))
                .await,
            Err(StoreError::Fenced)
        );
        one.write(&StoreBatch::new(1, vec![put(&a, "from one")]))
            .await
            .unwrap();
        // The holder goes quiet: once the lease lapses the other takes it,
        // and the old holder's writes are refused.
        std::thread::sleep(Duration::from_millis(400));
        assert_eq!(two.claim_lease(ttl).await, Ok(Lease::Held));
        assert_eq!(
            one.write(&StoreBatch::new(2, vec![put(&a, "late")])).await,
            Err(StoreError::Fenced)
        );
        two.write(&StoreBatch::new(1, vec![append(&a, 1, "a1")]))
            .await
            .unwrap();
        assert_eq!(
            sorted(two.load().await.unwrap()),
            vec![object(&a, "from one", &[(1, "a1")])]
        );
        // Without a lease owner every write goes (one node alone).
        let mut free =
            RedisStore::connect(&StoreConfig::new(&server.url()).unwrap().with_namespace("t"))
                .await
                .unwrap();
        assert_eq!(free.claim_lease(ttl).await, Ok(Lease::Held));
    });
}

#[test]
fn a_restart_with_aof_loses_nothing_and_the_next_write_goes_through() {
    let mut server = RedisServer::start(Persistence::Aof);
    smol::block_on(async {
        let mut store = store(&server, "t").await;
        let key = channel("durable");
        store
            .write(&StoreBatch::new(
                1,
                vec![put(&key, "r"), append(&key, 1, "e1")],
            ))
            .await
            .unwrap();
        server.restart();
        store
            .write(&StoreBatch::new(2, vec![append(&key, 2, "e2")]))
            .await
            .unwrap();
        assert_eq!(
            store.load().await.unwrap(),
            vec![object(&key, "r", &[(1, "e1"), (2, "e2")])]
        );
        // Killed, not stopped: appendfsync always kept every write too.
        server.kill();
        server.restart();
        store
            .write(&StoreBatch::new(3, vec![append(&key, 3, "e3")]))
            .await
            .unwrap();
        let mut fresh = RedisStore::connect(store.config()).await.unwrap();
        assert_eq!(
            fresh.load().await.unwrap(),
            vec![object(&key, "r", &[(1, "e1"), (2, "e2"), (3, "e3")])]
        );
    });
}

#[test]
fn a_restart_without_persistence_is_lost_once_then_writes_go_on() {
    let mut server = RedisServer::start(Persistence::None);
    smol::block_on(async {
        let mut store = store(&server, "t").await;
        let old = channel("old");
        let new = channel("new");
        store
            .write(&StoreBatch::new(
                1,
                vec![put(&old, "r"), append(&old, 1, "e1")],
            ))
            .await
            .unwrap();
        server.restart();
        let batch = StoreBatch::new(2, vec![put(&new, "after")]);
        assert_eq!(store.write(&batch).await, Err(StoreError::Lost));
        // The batch that got Lost was not written.
        let mut peek = RedisStore::connect(store.config()).await.unwrap();
        assert_eq!(peek.load().await.unwrap(), vec![]);
        store.write(&batch).await.unwrap();
        store
            .write(&StoreBatch::new(3, vec![append(&new, 1, "n1")]))
            .await
            .unwrap();
        assert_eq!(
            store.load().await.unwrap(),
            vec![object(&new, "after", &[(1, "n1")])]
        );
        // A store that shares the namespace finds the loss as well, once,
        // and adopts the generation the first set (no back and forth).
        assert_eq!(
            peek.write(&StoreBatch::new(1, vec![])).await,
            Ok(()),
            "peek loaded after the loss: its generation is the new one"
        );
    });
}

#[test]
fn two_stores_of_a_namespace_each_find_the_loss_once() {
    let mut server = RedisServer::start(Persistence::None);
    smol::block_on(async {
        let mut a = store(&server, "t").await;
        let mut b = store(&server, "t").await;
        server.restart();
        let empty = |n| StoreBatch::new(n, vec![]);
        assert_eq!(a.write(&empty(1)).await, Err(StoreError::Lost));
        assert_eq!(b.write(&empty(1)).await, Err(StoreError::Lost));
        assert_eq!(a.write(&empty(1)).await, Ok(()));
        assert_eq!(b.write(&empty(1)).await, Ok(()));
        assert_eq!(a.write(&empty(2)).await, Ok(()));
    });
}

#[test]
fn a_stopped_redis_is_unavailable_quickly_and_the_store_recovers_by_itself() {
    let mut server = RedisServer::start(Persistence::Aof);
    smol::block_on(async {
        let mut store = store(&server, "t").await;
        let key = channel("k");
        store
            .write(&StoreBatch::new(1, vec![put(&key, "r")]))
            .await
            .unwrap();
        server.stop();
        for n in 2..4 {
            let started = Instant::now();
            let got = store
                .write(&StoreBatch::new(n, vec![append(&key, n, "e")]))
                .await;
            assert!(matches!(got, Err(StoreError::Unavailable(_))), "{got:?}");
            assert!(started.elapsed() <= Duration::from_secs(3));
        }
        let started = Instant::now();
        assert!(matches!(
            store.load().await,
            Err(StoreError::Unavailable(_))
        ));
        assert!(started.elapsed() <= Duration::from_secs(3));
        server.restart();
        store
            .write(&StoreBatch::new(4, vec![append(&key, 4, "e4")]))
            .await
            .unwrap();
        assert_eq!(
            store.load().await.unwrap(),
            vec![object(&key, "r", &[(4, "e4")])]
        );

        // Killed likewise.
        server.kill();
        let started = Instant::now();
        assert!(matches!(
            store
                .write(&StoreBatch::new(5, vec![append(&key, 5, "e5")]))
                .await,
            Err(StoreError::Unavailable(_))
        ));
        assert!(started.elapsed() <= Duration::from_secs(3));
        server.restart();
        store
            .write(&StoreBatch::new(6, vec![append(&key, 6, "e6")]))
            .await
            .unwrap();
    });
}

#[test]
fn connecting_to_nothing_is_unavailable() {
    let server = RedisServer::start(Persistence::None);
    let url = server.url();
    drop(server);
    smol::block_on(async {
        let started = Instant::now();
        let got = RedisStore::connect(&StoreConfig::new(&url).unwrap()).await;
        assert!(matches!(got, Err(StoreError::Unavailable(_))), "{got:?}");
        assert!(started.elapsed() <= Duration::from_secs(3));
    });
}

#[test]
fn a_password_connects_a_wrong_one_is_refused_and_neither_is_shown() {
    let server = RedisServer::start_with_password(Persistence::None, "s3cret-pw");
    smol::block_on(async {
        let config = StoreConfig::new(&server.url()).unwrap();
        for shown in [
            format!("{config:?}"),
            config.to_string(),
            config.url().into(),
        ] {
            assert!(!shown.contains("s3cret-pw"), "{shown}");
        }
        let mut store = RedisStore::connect(&config).await.unwrap();
        store.load().await.unwrap();
        store
            .write(&StoreBatch::new(1, vec![put(&channel("x"), "r")]))
            .await
            .unwrap();

        let wrong = format!("redis://:wrong@127.0.0.1:{}/0", server.port());
        let err = RedisStore::connect(&StoreConfig::new(&wrong).unwrap())
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Invalid(_)), "{err:?}");
        assert!(!err.to_string().contains("wrong@"), "{err}");

        // Without one: refused at the first command, the place check.
        let none = format!("redis://127.0.0.1:{}/0", server.port());
        let err = RedisStore::connect(&StoreConfig::new(&none).unwrap())
            .await
            .unwrap_err();
        assert!(
            matches!(&err, StoreError::Invalid(w) if w.contains("NOAUTH")),
            "{err:?}"
        );
    });
}

/// A CA, and a certificate for `localhost` it signed: (the CA's PEM, the
/// server's chain PEM, the server's key PEM).
fn certificates() -> (String, String, String) {
    certs::signed(&["localhost"])
}

#[test]
fn rediss_connects_with_the_servers_ca_and_refuses_an_unknown_one() {
    let (ca, chain, key) = certificates();
    let server = RedisServer::start_with_tls(Persistence::None, &ca, &chain, &key);
    let url = server.tls_url().unwrap();
    smol::block_on(async {
        let config = StoreConfig::new(&url).unwrap().with_ca_pem(ca.as_bytes());
        let mut store = RedisStore::connect(&config).await.unwrap();
        store.load().await.unwrap();
        let key = channel("over tls");
        store
            .write(&StoreBatch::new(
                1,
                vec![put(&key, "r"), append(&key, 1, "e")],
            ))
            .await
            .unwrap();
        assert_eq!(
            store.load().await.unwrap(),
            vec![object(&key, "r", &[(1, "e")])]
        );

        // Another CA's certificate is refused (and the system's roots do
        // not know the test CA either).
        let (other_ca, _, _) = certificates();
        let strict = StoreConfig::new(&url)
            .unwrap()
            .with_ca_pem(other_ca.as_bytes());
        assert!(RedisStore::connect(&strict).await.is_err());
        assert!(RedisStore::connect(&StoreConfig::new(&url).unwrap())
            .await
            .is_err());
        // A TLS client on the plain port fails rather than hangs or panics.
        let plain_as_tls = format!("rediss://localhost:{}/0", server.port());
        let started = Instant::now();
        let got = RedisStore::connect(
            &StoreConfig::new(&plain_as_tls)
                .unwrap()
                .with_ca_pem(ca.as_bytes()),
        )
        .await;
        // (Redis reads the ClientHello as an unfinished inline command:
        // the connect timeout, 2 s, ends it.)
        assert!(got.is_err());
        assert!(started.elapsed() <= Duration::from_secs(5));
    });
}

// ---- review-durable ----

/// One damaged object (a record of the wrong type, an entry whose ID is
/// not `SEQ-0`, an entry without its field) must not stop the load of the
/// others: the server would not start at all. It is skipped and counted.
#[test]
fn one_damaged_object_is_skipped_and_counted_not_fatal_to_the_load() {
    let server = RedisServer::start(Persistence::None);
    smol::block_on(async {
        let mut store = store(&server, "t").await;
        let good = channel("good");
        let (wrong_record, odd_id, no_field) = (channel("a"), channel("b"), channel("c"));
        let mut writes = vec![put(&good, "r"), append(&good, 1, "e")];
        for k in [&wrong_record, &odd_id, &no_field] {
            writes.push(put(k, "r"));
        }
        store.write(&StoreBatch::new(1, writes)).await.unwrap();
        let port = server.port();
        let r = format!("t:r:{}", wrong_record.name());
        raw_command(port, &["DEL", &r]);
        raw_command(port, &["HSET", &r, "f", "v"]);
        let e = format!("t:e:{}", odd_id.name());
        raw_command(port, &["XADD", &e, "5-7", "d", "x"]);
        let e = format!("t:e:{}", no_field.name());
        raw_command(port, &["XADD", &e, "5-0", "other", "x"]);
        let loaded = store.load().await;
        assert_eq!(
            loaded,
            Ok(vec![object(&good, "r", &[(1, "e")])]),
            "a damaged object failed the whole load"
        );
        assert_eq!(store.skipped(), 3);
    });
}

/// Redis is flushed (FLUSHDB by an operator, a failover behind a proxy
/// that keeps the client's connection) while the store's connection stays
/// open: the next write must be Lost, not go on into an empty store.
#[test]
fn a_flush_under_an_open_connection_is_lost_at_the_next_write() {
    let server = RedisServer::start(Persistence::None);
    smol::block_on(async {
        let mut store = store(&server, "t").await;
        let old = channel("old");
        store
            .write(&StoreBatch::new(1, vec![put(&old, "r")]))
            .await
            .unwrap();
        assert_eq!(raw_command(server.port(), &["FLUSHDB"]), "+OK\r\n");
        let batch = StoreBatch::new(2, vec![put(&channel("new"), "after")]);
        assert_eq!(store.write(&batch).await, Err(StoreError::Lost));
        assert_eq!(store.write(&batch).await, Ok(()));
    });
}

/// A store that never loaded, told the generation another store loaded
/// (the TCP runner's writers), finds a loss that happened in between.
#[test]
fn a_writer_told_the_loaded_generation_finds_a_loss_before_its_first_write() {
    let mut server = RedisServer::start(Persistence::None);
    smol::block_on(async {
        let loader = store(&server, "t").await;
        let generation = loader.generation().unwrap().to_owned();
        server.restart();
        let mut writer = RedisStore::connect(loader.config()).await.unwrap();
        writer.expect_generation(&generation);
        assert_eq!(writer.check().await, Err(StoreError::Lost));
        assert_eq!(writer.check().await, Ok(()));
        let mut writer = RedisStore::connect(loader.config()).await.unwrap();
        writer.expect_generation(&generation);
        let batch = StoreBatch::new(1, vec![put(&channel("x"), "r")]);
        assert_eq!(writer.write(&batch).await, Err(StoreError::Lost));
    });
}

/// A batch whose reply did not come in time is `Unavailable`, "applied or
/// not, unknown", and the runner writes it again. When it was applied, its
/// appends are now "not above the last": the retry is refused (Invalid),
/// and the runner falls back to writing its whole state again — which, for
/// a large state, can itself outlast the reply timeout, over and over. A
/// retried batch must go through: an entry already stored with the same
/// content is the same write.
#[test]
fn a_batch_retried_after_its_reply_timed_out_goes_through() {
    let server = RedisServer::start(Persistence::None);
    smol::block_on(async {
        let mut store = store(&server, "t").await;
        let key = channel("busy");
        let mut writes = vec![put(&key, "r")];
        writes.extend((1..=30_000).map(|seq| append(&key, seq, "entry")));
        let batch = StoreBatch::new(1, writes);
        let hasty = store
            .config()
            .clone()
            .with_timeouts(Duration::from_secs(2), Duration::from_millis(5));
        let mut hasty = RedisStore::connect(&hasty).await.unwrap();
        // The generation the other store loaded: a load by this one could
        // itself outlast 5 ms on a busy machine (CI's one failure of it).
        hasty.expect_generation(store.generation().unwrap());
        // Its reply is late (a script of 4,096 appends takes a few ms)...
        // or, on a fast machine, not: either way the retry below writes
        // again a batch that was applied, in part or whole.
        let first = hasty.write(&batch).await;
        assert!(
            matches!(first, Ok(()) | Err(StoreError::Unavailable(_))),
            "{first:?}"
        );
        // Its first script ran all the same (a batch this large takes
        // several; the timeout stopped the rest).
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let loaded = store.load().await.unwrap();
            if loaded.first().is_some_and(|o| !o.entries.is_empty()) {
                break;
            }
            assert!(Instant::now() < deadline, "the first write was not applied");
            smol::Timer::after(Duration::from_millis(20)).await;
        }
        assert_eq!(store.write(&batch).await, Ok(()), "the retry was refused");
        let loaded = store.load().await.unwrap();
        assert_eq!(loaded[0].entries.len(), 30_000);
    });
}

/// redis-rs's own reply timeout (500 ms by default) cut any reply slower
/// than that, whatever `StoreConfig::with_timeouts` said (2 s by
/// default): a store of a few hundred thousand objects never loaded, so
/// the server never started again.
#[test]
fn a_large_store_loads_within_the_configured_reply_timeout() {
    let server = RedisServer::start(Persistence::None);
    let fill = "for i = 1, tonumber(ARGV[1]) do \
        redis.call('SADD', 't:keys:n', 'n/1/1/' .. i); \
        redis.call('SET', 't:r:n/1/1/' .. i, 'x') end return 1";
    let reply = raw_command(server.port(), &["EVAL", fill, "0", "300000"]);
    assert!(reply.starts_with(":1"), "{reply}");
    smol::block_on(async {
        let config = StoreConfig::new(&server.url()).unwrap().with_namespace("t");
        let mut store = RedisStore::connect(&config).await.unwrap();
        let loaded = store.load().await;
        assert_eq!(loaded.map(|o| o.len()), Ok(300_000));
    });
}

#[test]
fn a_batch_larger_than_one_script_is_written_whole_and_in_order() {
    let server = RedisServer::start(Persistence::None);
    smol::block_on(async {
        let mut store = store(&server, "t").await;
        let a = channel("big");
        let mut writes = vec![put(&a, "first")];
        writes.extend((1..=10_000).map(|s| append(&a, s, "e")));
        // The last write of the batch wins over the first.
        writes.push(put(&a, "last"));
        store
            .write(&StoreBatch::new(1, writes.clone()))
            .await
            .unwrap();
        // Written again (a retry after a lost reply): the same result.
        store.write(&StoreBatch::new(1, writes)).await.unwrap();
        let objects = store.load().await.unwrap();
        assert_eq!(objects.len(), 1);
        assert_eq!(&objects[0].record[..], b"last");
        let seqs: Vec<u64> = objects[0].entries.iter().map(|e| e.0).collect();
        assert_eq!(seqs, (1..=10_000).collect::<Vec<_>>());
    });
}
