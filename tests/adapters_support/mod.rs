//! What the adapter tests share: the server, configs, a scripted fake
//! server, and the scenarios, written once as macros over `wait!` (identity
//! for the blocking client, `.await` for the smol one) and `next_event`.
#![allow(dead_code, unused_macros)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use hummer_channel::client::{SessionConfig, Timing};
use hummer_channel::server::DEMO_APPID;
use hummer_channel::wire::{self, Body, DecodedFrame, Frame, FrameDecoder};
use hummer_channel::Attributes;

/// Every wait on an event is bounded by this.
pub const EVENT_WAIT: Duration = Duration::from_secs(5);

/// Aborts the test process if a test hangs (every wait is bounded, but a
/// blocking call waits on the Session's own timeouts).
pub fn watchdog(limit: Duration) {
    thread::spawn(move || {
        thread::sleep(limit);
        eprintln!("watchdog: the test did not finish in {limit:?}");
        std::process::exit(101);
    });
}

/// The demo app with fast reconnects.
pub fn fast_config() -> SessionConfig {
    let mut config = SessionConfig::new(DEMO_APPID);
    config.timing = {
        let mut cfg = Timing::default();
        cfg.reconnect_min = Duration::from_millis(20);
        cfg.reconnect_max = Duration::from_millis(200);
        cfg
    };
    config
}

/// The demo app reconnecting after 0.5..1 s.
pub fn slow_reconnect_config() -> SessionConfig {
    let mut config = fast_config();
    config.timing.reconnect_min = Duration::from_secs(1);
    config.timing.reconnect_max = Duration::from_secs(1);
    config
}

pub fn unix_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

pub fn attrs(pairs: &[(&str, &str)]) -> Attributes {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// What the fake server does once it has answered the first login.
#[derive(Copy, Clone, Debug)]
pub enum AfterLogin {
    /// Reads one more request and closes the link without answering it.
    DropOnNextRequest,
    /// Sends a frame that is not protobuf (the Session rejects it).
    SendGarbageFrame,
    /// Sends a length prefix beyond the frame size limit (the stream
    /// decoder rejects it).
    SendOversizedPrefix,
}

/// A fake server on loopback: it answers the first login, then misbehaves as
/// `after` says. Later connections are accepted and left silent. Returns its
/// address and a counter of the connections it accepted.
pub fn fake_server(after: AfterLogin) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    thread::spawn(move || {
        let mut parked = Vec::new();
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            if count.fetch_add(1, Ordering::SeqCst) > 0 {
                parked.push(stream);
                continue;
            }
            let mut decoder = FrameDecoder::new(64 * 1024);
            let login = read_frame(&mut stream, &mut decoder);
            let reply = Frame {
                request_id: login.request_id,
                body: Some(Body::LoginReply(wire::LoginReply {
                    instance_id: 1,
                    server_time_ms: unix_s() * 1000,
                    server_epoch: 1,
                    is_anonymous: true,
                    ..Default::default()
                })),
            };
            let mut out = BytesMut::new();
            wire::write_length_prefixed(&wire::encode_frame(&reply), &mut out);
            match after {
                AfterLogin::DropOnNextRequest => {
                    stream.write_all(&out).unwrap();
                    let _ = read_frame(&mut stream, &mut decoder);
                    drop(stream);
                }
                AfterLogin::SendGarbageFrame => {
                    wire::write_length_prefixed(&[0xff; 8], &mut out);
                    stream.write_all(&out).unwrap();
                    parked.push(stream);
                }
                AfterLogin::SendOversizedPrefix => {
                    out.extend_from_slice(&u32::MAX.to_be_bytes());
                    stream.write_all(&out).unwrap();
                    parked.push(stream);
                }
            }
        }
    });
    (addr, accepted)
}

fn read_frame(stream: &mut TcpStream, decoder: &mut FrameDecoder) -> DecodedFrame {
    let mut buf = [0u8; 4096];
    loop {
        if let Some(frame) = decoder.next_frame().unwrap() {
            let frame = wire::decode_frame(frame, 64 * 1024).unwrap();
            // Skip pings and acks: wait for a request.
            if !matches!(frame.body, Body::Ping(_) | Body::Pong(_) | Body::Ack(_)) {
                return frame;
            }
            continue;
        }
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0, "the client closed the link");
        decoder.extend(&buf[..n]);
    }
}

/// The server of a scenario (TCP), and the address its clients connect
/// to. A test file may define its own before running the scenarios (a
/// later definition shadows this one).
macro_rules! spawn_server {
    () => {{
        let server = hummer_channel::adapters::server_tcp::ServerHandle::spawn(
            hummer_channel::server::ServerConfig::demo(),
            "127.0.0.1:0".parse().unwrap(),
        )
        .unwrap();
        let addr = server.local_addr();
        (server, addr)
    }};
}

/// The next event of `$client` matching the pattern (skipping others),
/// waiting up to [`EVENT_WAIT`] for each.
macro_rules! expect_event {
    ($client:expr, $($pat:tt)+) => {{
        loop {
            match wait!(next_event(&$client)) {
                Some(event) if matches!(&event, $($pat)+) => break event,
                Some(other) => eprintln!("  (skipped {other:?})"),
                None => panic!("no event matching `{}` came", stringify!($($pat)+)),
            }
        }
    }};
}

/// Every operation once with its reply checked, and every kind of notice.
macro_rules! scenario_every_operation {
    () => {{
        use std::collections::BTreeMap;
        use hummer_channel::adapters::ClientError;
        use hummer_channel::client::{
            AttributeOptions, ConnectionReason, ConnectionState, Event, SendOptions,
        };
        use hummer_channel::server::{mint_token, DEMO_APPID, DEMO_SECRET};
        use hummer_channel::{ChannelKey, CommandError, ErrorCode, Message, Region, Uid};

        let (server, addr) = spawn_server!();
        let alice = connect!(addr, fast_config());
        let bob = connect!(addr, fast_config());
        let carol = connect!(addr, fast_config());
        let notify = AttributeOptions::default();
        let quiet = {
            let mut cfg = AttributeOptions::default();
            cfg.enable_notification = false;
            cfg
        };

        // Before login: refused locally.
        assert_eq!(
            wait!(alice.get_instance_info()),
            Err(ClientError::Command(CommandError::NotLoggedIn))
        );
        assert_eq!(alice.connection_state(), (ConnectionState::Disconnected, ConnectionReason::Init));

        // Login: token mode, appid mode, and a refused token.
        let token = mint_token(DEMO_SECRET, DEMO_APPID, 1, unix_s() + 3600);
        let a = wait!(alice.login(Uid(1), Some(token), Some(Region::Cn))).unwrap();
        assert!(!a.is_anonymous);
        assert_eq!(alice.instance_id(), Some(a.instance_id));
        assert_eq!(alice.uid(), Some(Uid(1)));
        assert_eq!(alice.connection_state(), (ConnectionState::Connected, ConnectionReason::LoginSuccess));
        expect_event!(alice, Event::ConnectionStateChanged { state: ConnectionState::Connected, .. });
        let b = wait!(bob.login(Uid(2), None, Some(Region::Cn))).unwrap();
        assert!(b.is_anonymous);
        let refused = wait!(carol.login(Uid(3), Some("not-a-token".into()), None)).unwrap_err();
        assert_eq!(refused.code(), Some(ErrorCode::INVALID_TOKEN), "{refused:?}");

        // Instance level.
        wait!(alice.set_user_region(Region::Us)).unwrap();
        let info = wait!(alice.get_instance_info()).unwrap();
        assert_eq!((info.appid, info.uid, info.instance_id), (DEMO_APPID, Uid(1), a.instance_id));
        assert_eq!(info.region, Some(Region::Us));
        assert!(!info.is_anonymous && info.channels.is_empty());
        let token = mint_token(DEMO_SECRET, DEMO_APPID, 1, unix_s() + 7200);
        wait!(alice.refresh_token(token)).unwrap();

        // P2P.
        let sent = wait!(alice.send_message_to_user(Uid(2), Message::new("t", "p2p"), SendOptions::default())).unwrap();
        assert!(sent.delivered_online && sent.timestamp_ms > 0);
        expect_event!(bob, Event::MessageFromUser { from_uid: Uid(1), message, .. } if &message.content[..] == b"p2p");
        let online = wait!(alice.query_users_online_status(vec![Uid(2), Uid(3)])).unwrap();
        assert_eq!(online, BTreeMap::from([(Uid(2), true), (Uid(3), false)]));

        // Channels: create, join, notices.
        let ra = alice.create_channel(Region::Cn, "room").unwrap();
        let rb = bob.create_channel(Region::Cn, "room").unwrap();
        assert_eq!(alice.channel_key(ra), Some(ChannelKey::new(Region::Cn, "room")));
        assert!(!alice.is_joined(ra));
        wait!(alice.join_channel(ra, attrs(&[]))).unwrap();
        assert!(alice.is_joined(ra));
        wait!(bob.join_channel(rb, attrs(&[("why", "test")]))).unwrap();
        expect_event!(alice, Event::NotifyJoinChannel { channel, uids } if *channel == ra && uids.contains(&Uid(2)));
        expect_event!(alice, Event::NotifyUserCountChange { count: 2, .. });

        // Broadcast: to the others and back to the sender.
        let sent = wait!(alice.send_message_to_channel(ra, Message::new("t", "all"), SendOptions::default())).unwrap();
        assert!(sent.delivered_online);
        expect_event!(bob, Event::ChannelMessage { channel, from_uid: Uid(1), message, .. } if *channel == rb && &message.content[..] == b"all");
        expect_event!(alice, Event::ChannelMessage { from_uid: Uid(1), message, .. } if &message.content[..] == b"all");

        // User attributes, with and without notification.
        wait!(alice.set_local_user_attributes(ra, attrs(&[("a", "1"), ("b", "2"), ("c", "3")]), notify)).unwrap();
        expect_event!(bob, Event::NotifyUserAttributesSet { uid: Uid(1), attributes, .. } if *attributes == attrs(&[("a", "1"), ("b", "2"), ("c", "3")]));
        wait!(alice.delete_local_user_attributes_by_keys(ra, vec!["a".into()], notify)).unwrap();
        expect_event!(bob, Event::NotifyUserAttributesDelete { uid: Uid(1), keys, .. } if keys == &["a".to_string()]);
        wait!(alice.add_or_update_local_user_attributes(ra, attrs(&[("b", "20"), ("d", "4")]), notify)).unwrap();
        expect_event!(bob, Event::NotifyUserAttributesAddOrUpdate { uid: Uid(1), attributes, .. } if *attributes == attrs(&[("b", "20"), ("d", "4")]));
        let got = wait!(bob.get_user_attributes(rb, Uid(1))).unwrap();
        assert_eq!(got.attributes, attrs(&[("b", "20"), ("c", "3"), ("d", "4")]));
        assert_eq!((got.appid, got.channel_id.as_str()), (DEMO_APPID, "room"));
        let got = wait!(bob.get_user_attributes_by_keys(rb, Uid(1), vec!["b".into(), "zz".into()])).unwrap();
        assert_eq!(got.attributes, attrs(&[("b", "20")]));
        let by = wait!(bob.get_channel_user_list_by_attribute(rb, "d".into(), "4".into())).unwrap();
        assert_eq!(by.users, vec![Uid(1)]);
        wait!(alice.clear_local_user_attributes(ra, quiet)).unwrap();
        assert!(wait!(bob.get_user_attributes(rb, Uid(1))).unwrap().attributes.is_empty());

        // Channel attributes. The quiet clear above sent no notice: the next
        // attribute notice bob sees is the channel's.
        wait!(alice.set_channel_attributes(ra, attrs(&[("x", "1"), ("y", "2")]), notify)).unwrap();
        let event = expect_event!(bob, Event::NotifyUserAttributesClear { .. } | Event::NotifyChannelAttributesSet { .. });
        assert!(matches!(&event, Event::NotifyChannelAttributesSet { last_update_uid: Uid(1), attributes, .. } if *attributes == attrs(&[("x", "1"), ("y", "2")])), "{event:?}");
        wait!(alice.delete_channel_attributes_by_keys(ra, vec!["x".into()], notify)).unwrap();
        expect_event!(bob, Event::NotifyChannelAttributesDelete { keys, .. } if keys == &["x".to_string()]);
        wait!(alice.add_or_update_channel_attributes(ra, attrs(&[("z", "3")]), notify)).unwrap();
        expect_event!(bob, Event::NotifyChannelAttributesAddOrUpdate { attributes, .. } if *attributes == attrs(&[("z", "3")]));
        let got = wait!(bob.get_channel_attributes(rb)).unwrap();
        assert_eq!(got.attributes, attrs(&[("y", "2"), ("z", "3")]));
        assert_eq!(got.last_update_uid, Some(Uid(1)));
        let got = wait!(bob.get_channel_attributes_by_keys(rb, vec!["z".into()])).unwrap();
        assert_eq!(got.attributes, attrs(&[("z", "3")]));
        wait!(alice.clear_channel_attributes(ra, notify)).unwrap();
        expect_event!(bob, Event::NotifyChannelAttributesClear { last_update_uid: Uid(1), .. });

        // Members and counts.
        let list = wait!(bob.get_channel_user_list(rb)).unwrap();
        assert_eq!(list.users, vec![Uid(1), Uid(2)]);
        let counts = wait!(alice.get_channel_user_count(ra, vec!["room".into(), "nobody".into()])).unwrap();
        assert_eq!(counts.user_count, BTreeMap::from([("room".to_string(), 2), ("nobody".to_string(), 0)]));

        // A channel not joined is refused locally.
        let elsewhere = bob.create_channel(Region::Cn, "elsewhere").unwrap();
        assert_eq!(
            wait!(bob.get_channel_user_list(elsewhere)),
            Err(ClientError::Command(CommandError::NotInChannel))
        );

        // Leave, logout, close.
        wait!(bob.leave_channel(rb, attrs(&[]))).unwrap();
        assert!(!bob.is_joined(rb));
        expect_event!(alice, Event::NotifyLeaveChannel { uids, .. } if uids.contains(&Uid(2)));
        expect_event!(alice, Event::NotifyUserCountChange { count: 1, .. });
        wait!(bob.logout()).unwrap();
        expect_event!(bob, Event::ConnectionStateChanged { state: ConnectionState::Disconnected, reason: ConnectionReason::Logout });
        wait!(alice.close());
        assert_eq!(wait!(alice.get_instance_info()), Err(ClientError::Closed));
        wait!(bob.close());
        wait!(carol.close());
        server.shutdown();
    }};
}

/// A dropped link: the client reconnects by itself, re-joins, and gets the
/// reliable messages sent meanwhile exactly once; a request in flight when
/// the link drops fails with 1007.
macro_rules! scenario_reconnect {
    () => {{
        use hummer_channel::client::{ConnectionReason, ConnectionState, Event, SendOptions};
        use hummer_channel::{Message, Region, Uid};

        let (server, addr) = spawn_server!();
        // alice comes back after 0.5..1 s, bob at once: bob sends meanwhile.
        let alice = connect!(addr, slow_reconnect_config());
        let bob = connect!(addr, fast_config());
        wait!(alice.login(Uid(1), None, None)).unwrap();
        wait!(bob.login(Uid(2), None, None)).unwrap();
        let ra = alice.create_channel(Region::Cn, "resume").unwrap();
        let rb = bob.create_channel(Region::Cn, "resume").unwrap();
        wait!(alice.join_channel(ra, attrs(&[]))).unwrap();
        wait!(bob.join_channel(rb, attrs(&[]))).unwrap();
        wait!(bob.send_message_to_channel(rb, Message::new("t", "before"), SendOptions::default())).unwrap();
        expect_event!(alice, Event::ChannelMessage { message, .. } if &message.content[..] == b"before");

        server.drop_connections();
        expect_event!(alice, Event::ConnectionStateChanged { state: ConnectionState::Reconnecting, reason: ConnectionReason::Interrupted });
        expect_event!(bob, Event::ConnectionStateChanged { state: ConnectionState::Reconnecting, .. });
        expect_event!(bob, Event::ConnectionStateChanged { state: ConnectionState::Connected, reason: ConnectionReason::LoginSuccess });
        // bob is back (and re-joined) while alice is still away.
        assert_eq!(alice.connection_state().0, ConnectionState::Reconnecting);
        // The re-join has no event of its own: retry while it is in flight.
        let mut tries = 0;
        while let Err(e) = wait!(bob.send_message_to_channel(rb, Message::new("t", "while-away"), SendOptions::default())) {
            tries += 1;
            assert!(tries < 100, "{e}");
            sleep!(std::time::Duration::from_millis(10));
        }
        let p2p = wait!(bob.send_message_to_user(Uid(1), Message::new("t", "p2p-away"), SendOptions::default())).unwrap();
        eprintln!("p2p while away: {p2p:?}");
        assert_eq!(alice.connection_state().0, ConnectionState::Reconnecting, "alice came back too early for the test");

        expect_event!(alice, Event::ConnectionStateChanged { state: ConnectionState::Connected, reason: ConnectionReason::LoginSuccess });
        assert!(alice.is_joined(ra));
        // A marker sent after alice is back: once she has it, she has
        // everything before it.
        let mut tries = 0;
        while let Err(e) = wait!(alice.send_message_to_channel(ra, Message::new("t", "marker"), SendOptions::default())) {
            tries += 1;
            assert!(tries < 100, "{e}");
            sleep!(std::time::Duration::from_millis(10));
        }
        let (mut channel_copies, mut p2p_copies) = (0, 0);
        loop {
            match wait!(next_event(&alice)) {
                Some(Event::ChannelMessage { message, .. }) if &message.content[..] == b"while-away" => channel_copies += 1,
                Some(Event::ChannelMessage { message, .. }) if &message.content[..] == b"marker" => break,
                Some(Event::MessageFromUser { message, .. }) if &message.content[..] == b"p2p-away" => p2p_copies += 1,
                Some(Event::MessagesLost { .. }) => panic!("messages were lost"),
                Some(other) => eprintln!("  (alice: {other:?})"),
                None => panic!("the marker never came"),
            }
        }
        // The P2P message may be fetched after the marker: wait for it if so.
        while p2p_copies == 0 {
            match wait!(next_event(&alice)) {
                Some(Event::MessageFromUser { message, .. }) if &message.content[..] == b"p2p-away" => p2p_copies += 1,
                Some(other) => eprintln!("  (alice: {other:?})"),
                None => panic!("the P2P message sent while away never came"),
            }
        }
        assert_eq!((channel_copies, p2p_copies), (1, 1));
        // Nothing more, in particular no second copy.
        wait!(bob.send_message_to_channel(rb, Message::new("t", "end"), SendOptions::default())).unwrap();
        loop {
            match wait!(next_event(&alice)) {
                Some(Event::ChannelMessage { message, .. }) if &message.content[..] == b"end" => break,
                Some(Event::ChannelMessage { message, .. } | Event::MessageFromUser { message, .. }) =>
                    panic!("a second copy: {message:?}"),
                Some(_) => {}
                None => panic!("the end marker never came"),
            }
        }
        wait!(alice.close());
        wait!(bob.close());
        server.shutdown();
    }};
}

/// A request in flight when the link drops fails with 1007, and the client
/// does not panic.
macro_rules! scenario_in_flight_fails_1007 {
    () => {{
        use hummer_channel::client::{ConnectionState, Event};
        use hummer_channel::{ErrorCode, Uid};

        let (addr, _) = fake_server(AfterLogin::DropOnNextRequest);
        let client = connect!(addr, fast_config());
        wait!(client.login(Uid(9), None, None)).unwrap();
        let err = wait!(client.get_instance_info()).unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::CONNECTION_EXCEPTION), "{err:?}");
        expect_event!(
            client,
            Event::ConnectionStateChanged {
                state: ConnectionState::Reconnecting,
                ..
            }
        );
        wait!(client.close());
    }};
}

/// An idle logged-in client sleeps: its driver loop barely turns.
macro_rules! scenario_idle {
    () => {{
        use hummer_channel::{Region, Uid};

        let (server, addr) = spawn_server!();
        let client = connect!(addr, fast_config());
        wait!(client.login(Uid(5), None, None)).unwrap();
        let room = client.create_channel(Region::Cn, "idle").unwrap();
        wait!(client.join_channel(room, attrs(&[]))).unwrap();
        // The join's last notice, then measure.
        expect_event!(
            client,
            hummer_channel::client::Event::NotifyUserCountChange { count: 1, .. }
        );
        let before = client.driver_wakeups();
        sleep!(std::time::Duration::from_secs(1));
        let wakeups = client.driver_wakeups() - before;
        eprintln!("idle for 1 s: {wakeups} driver wakeups");
        // A heartbeat is 10 s away; at most a coalesced ack may be due.
        assert!(wakeups <= 3, "{wakeups} wakeups while idle");
        wait!(client.close());
        server.shutdown();
    }};
}

/// Events the application does not read are kept (reading from the server
/// pauses), and all arrive in order once it reads.
macro_rules! scenario_backpressure {
    () => {{
        use hummer_channel::client::{Event, SendOptions};
        use hummer_channel::{Message, Region, Uid};

        let (server, addr) = spawn_server!();
        let alice = connect!(addr, fast_config(), 4);
        let bob = connect!(addr, fast_config());
        wait!(alice.login(Uid(1), None, None)).unwrap();
        wait!(bob.login(Uid(2), None, None)).unwrap();
        let ra = alice.create_channel(Region::Cn, "bp").unwrap();
        let rb = bob.create_channel(Region::Cn, "bp").unwrap();
        wait!(alice.join_channel(ra, attrs(&[]))).unwrap();
        wait!(bob.join_channel(rb, attrs(&[]))).unwrap();
        for i in 0..40 {
            let m = Message::new("t", format!("m{i}"));
            wait!(bob.send_message_to_channel(rb, m, SendOptions::default())).unwrap();
        }
        let mut next = 0;
        while next < 40 {
            match wait!(next_event(&alice)) {
                Some(Event::ChannelMessage { message, .. }) => {
                    assert_eq!(message.content, format!("m{next}").into_bytes());
                    next += 1;
                }
                Some(_) => {}
                None => panic!("only {next} of 40 messages came"),
            }
        }
        wait!(alice.close());
        wait!(bob.close());
        server.shutdown();
    }};
}

/// A server that is not there: dials fail, are retried with backoff, and the
/// login ends with 1005 and DISCONNECTED/LOGIN_TIMEOUT; the client stays usable.
macro_rules! scenario_dial_failure {
    () => {{
        use hummer_channel::client::{ConnectionReason, ConnectionState};
        use hummer_channel::{ErrorCode, Uid};

        let addr = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap()
        }; // closed again: nothing listens there now
        let mut config = fast_config();
        config.timing.login_timeout = std::time::Duration::from_millis(600);
        let client = connect!(addr, config);
        let err = wait!(client.login(Uid(3), None, None)).unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::OPERATION_TIMEOUT), "{err:?}");
        assert_eq!(
            client.connection_state(),
            (
                ConnectionState::Disconnected,
                ConnectionReason::LoginTimeout
            )
        );
        // Retried with backoff, not in a busy loop.
        let wakeups = client.driver_wakeups();
        assert!(wakeups < 100, "{wakeups} driver passes for a 0.6 s login");
        wait!(client.close());
    }};
}

/// Many calls in flight at once each get their own reply; a client dropped
/// without `close` goes away quietly.
macro_rules! scenario_concurrent_calls {
    ($spawn_all:ident) => {{
        use hummer_channel::client::SendOptions;
        use hummer_channel::{Message, Uid};

        let (server, addr) = spawn_server!();
        let alice = connect!(addr, fast_config());
        let bob = connect!(addr, fast_config());
        wait!(alice.login(Uid(1), None, None)).unwrap();
        wait!(bob.login(Uid(2), None, None)).unwrap();
        // 4 callers x 10 sends, concurrently.
        let results = $spawn_all!(alice, 4, |i| {
            let mut sent = Vec::new();
            for j in 0..10 {
                let m = Message::new("t", format!("{i}-{j}"));
                sent.push(
                    wait!(alice.send_message_to_user(Uid(2), m, SendOptions::default()))
                        .unwrap()
                        .timestamp_ms,
                );
            }
            sent
        });
        assert_eq!(results.iter().map(Vec::len).sum::<usize>(), 40);
        let mut got = std::collections::BTreeSet::new();
        while got.len() < 40 {
            match wait!(next_event(&bob)) {
                Some(hummer_channel::client::Event::MessageFromUser { message, .. }) => {
                    assert!(got.insert(message.content.clone()), "a duplicate");
                }
                Some(_) => {}
                None => panic!("only {} of 40 messages came", got.len()),
            }
        }
        drop(alice);
        wait!(bob.close());
        server.shutdown();
    }};
}

/// A malformed frame, or a stream the decoder cannot cut into frames: the
/// link is dropped and the client dials again by itself, without panicking.
macro_rules! scenario_bad_stream {
    () => {{
        use hummer_channel::client::{ConnectionReason, ConnectionState, Event};
        use hummer_channel::Uid;

        for after in [
            AfterLogin::SendGarbageFrame,
            AfterLogin::SendOversizedPrefix,
        ] {
            let (addr, accepted) = fake_server(after);
            let client = connect!(addr, fast_config());
            wait!(client.login(Uid(9), None, None)).unwrap();
            expect_event!(
                client,
                Event::ConnectionStateChanged {
                    state: ConnectionState::Reconnecting,
                    reason: ConnectionReason::Interrupted,
                }
            );
            // The redial reaches the (now silent) server.
            let mut tries = 0;
            while accepted.load(std::sync::atomic::Ordering::SeqCst) < 2 {
                tries += 1;
                assert!(tries < 500, "{after:?}: no redial");
                sleep!(std::time::Duration::from_millis(10));
            }
            wait!(client.close());
        }
    }};
}

/// Two clients broadcast large messages at the same time, so that both
/// directions of both links are busy: nothing stalls, everything arrives.
macro_rules! scenario_bulk_both_ways {
    ($both:ident) => {{
        use hummer_channel::client::{Event, SendOptions};
        use hummer_channel::{Message, Region, Uid};

        const EACH: usize = 60;
        let (server, addr) = spawn_server!();
        let alice = connect!(addr, fast_config());
        let bob = connect!(addr, fast_config());
        wait!(alice.login(Uid(1), None, None)).unwrap();
        wait!(bob.login(Uid(2), None, None)).unwrap();
        let ra = alice.create_channel(Region::Cn, "bulk").unwrap();
        let rb = bob.create_channel(Region::Cn, "bulk").unwrap();
        wait!(alice.join_channel(ra, attrs(&[]))).unwrap();
        wait!(bob.join_channel(rb, attrs(&[]))).unwrap();
        let big = vec![b'x'; 30 * 1024];
        $both!(
            {
                for i in 0..EACH {
                    let mut m = Message::new("a", big.clone());
                    m.app_extras.insert("i".into(), i.to_string());
                    wait!(alice.send_message_to_channel(ra, m, SendOptions::default())).unwrap();
                }
            },
            {
                for i in 0..EACH {
                    let mut m = Message::new("b", big.clone());
                    m.app_extras.insert("i".into(), i.to_string());
                    wait!(bob.send_message_to_channel(rb, m, SendOptions::default())).unwrap();
                }
            }
        );
        for (name, client) in [("alice", &alice), ("bob", &bob)] {
            let (mut from_a, mut from_b) = (0, 0);
            while from_a + from_b < 2 * EACH {
                match wait!(next_event(client)) {
                    Some(Event::ChannelMessage { message, .. }) => {
                        assert_eq!(message.content.len(), 30 * 1024);
                        let n = if message.kind == "a" {
                            &mut from_a
                        } else {
                            &mut from_b
                        };
                        assert_eq!(message.app_extras["i"], n.to_string(), "{name}: order");
                        *n += 1;
                    }
                    Some(_) => {}
                    None => panic!("{name} got {from_a} + {from_b} of {} messages", 2 * EACH),
                }
            }
        }
        wait!(alice.close());
        wait!(bob.close());
        server.shutdown();
    }};
}

/// A port nothing listens on (bound, then closed again).
pub fn dead_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

/// A client given [a dead address, a live server] logs in on the live one;
/// an empty list is refused. The test file defines `connect_any!` (a list of
/// endpoints and a config to a client).
macro_rules! scenario_failover_skips_a_dead_address {
    () => {{
        use hummer_channel::adapters::Endpoint;
        use hummer_channel::client::{ConnectionState, Event, SendOptions};
        use hummer_channel::{Message, Uid};

        let (server, addr) = spawn_server!();
        let mut config = fast_config();
        // A long backoff: had the dead address's failure gone to the Session
        // (instead of the live address being dialed at once), the login would
        // time out before the next dial.
        config.timing.reconnect_min = std::time::Duration::from_secs(30);
        config.timing.reconnect_max = std::time::Duration::from_secs(30);
        let alice = connect_any!([Endpoint::from(dead_addr()), Endpoint::from(addr)], config);
        let bob = connect!(addr, fast_config());
        assert_eq!(alice.current_endpoint(), None);
        wait!(alice.login(Uid(1), None, None)).unwrap();
        wait!(bob.login(Uid(2), None, None)).unwrap();
        assert_eq!(alice.connection_state().0, ConnectionState::Connected);
        assert_eq!(alice.current_endpoint(), Some(Endpoint::from(addr)));
        wait!(bob.send_message_to_user(Uid(1), Message::new("t", "hi"), SendOptions::default())).unwrap();
        expect_event!(alice, Event::MessageFromUser { message, .. } if &message.content[..] == b"hi");
        wait!(alice.close());
        wait!(bob.close());
        server.shutdown();
    }};
}

/// A client given [A, B], logged in on A, goes over to B by itself when A
/// stops: its resume, offered to B (which never saw the instance), is
/// answered as a fresh login; it re-joins its channel and can send and
/// receive there.
macro_rules! scenario_failover_to_the_next_server {
    () => {{
        use hummer_channel::adapters::Endpoint;
        use hummer_channel::client::{ConnectionReason, ConnectionState, Event, SendOptions};
        use hummer_channel::{Message, Region, Uid};

        let (server_a, addr_a) = spawn_server!();
        let (server_b, addr_b) = spawn_server!();
        let alice = connect_any!([addr_a, addr_b], fast_config());
        let bob = connect!(addr_b, fast_config());
        wait!(alice.login(Uid(1), None, None)).unwrap();
        wait!(bob.login(Uid(2), None, None)).unwrap();
        assert_eq!(alice.current_endpoint(), Some(Endpoint::from(addr_a)));
        let first_instance = alice.instance_id();
        let ra = alice.create_channel(Region::Cn, "failover").unwrap();
        let rb = bob.create_channel(Region::Cn, "failover").unwrap();
        wait!(alice.join_channel(ra, attrs(&[]))).unwrap();
        wait!(bob.join_channel(rb, attrs(&[]))).unwrap();

        server_a.shutdown();
        expect_event!(alice, Event::ConnectionStateChanged { state: ConnectionState::Reconnecting, .. });
        expect_event!(alice, Event::ConnectionStateChanged { state: ConnectionState::Connected, reason: ConnectionReason::LoginSuccess });
        assert_eq!(alice.current_endpoint(), Some(Endpoint::from(addr_b)));
        assert_ne!(alice.instance_id(), first_instance, "B gave a new instance");
        // B knows alice now; the re-join has no event of its own: retry
        // while it is in flight.
        let mut tries = 0;
        while let Err(e) = wait!(alice.send_message_to_channel(ra, Message::new("t", "from-alice"), SendOptions::default())) {
            tries += 1;
            assert!(tries < 100, "{e}");
            sleep!(std::time::Duration::from_millis(10));
        }
        assert!(alice.is_joined(ra));
        expect_event!(bob, Event::ChannelMessage { message, .. } if &message.content[..] == b"from-alice");
        wait!(bob.send_message_to_user(Uid(1), Message::new("t", "to-alice"), SendOptions::default())).unwrap();
        expect_event!(alice, Event::MessageFromUser { message, .. } if &message.content[..] == b"to-alice");
        wait!(alice.close());
        wait!(bob.close());
        server_b.shutdown();
    }};
}
