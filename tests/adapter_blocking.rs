//! The blocking adapter over loopback TCP against the reference server.
#![cfg(all(feature = "blocking", feature = "server-tcp"))]

#[macro_use]
mod adapters_support;
#[macro_use]
#[path = "adapters_support/blocking.rs"]
mod harness;

use std::time::Duration;

use adapters_support::*;
use harness::*;
use hummer_channel::adapters::blocking::Client;
use hummer_channel::adapters::server_tcp::ServerHandle;
use hummer_channel::client::Event;

/// A client (its driver thread started).
macro_rules! connect {
    ($addr:expr, $config:expr) => {
        Client::connect($addr, $config).expect("start the driver thread")
    };
    ($addr:expr, $config:expr, $event_capacity:expr) => {
        Client::connect_with_event_capacity($addr, $config, $event_capacity)
            .expect("start the driver thread")
    };
}

fn guard() {
    watchdog(Duration::from_secs(60));
}

/// A client for a list of servers.
macro_rules! connect_any {
    ($list:expr, $config:expr) => {
        Client::connect_any($list, $config).expect("a non-empty list, the driver thread")
    };
}

#[test]
fn every_operation_and_notice() {
    guard();
    scenario_every_operation!();
}

#[test]
fn reconnects_rejoins_and_resumes_exactly_once() {
    guard();
    scenario_reconnect!();
}

#[test]
fn request_in_flight_fails_with_1007() {
    guard();
    scenario_in_flight_fails_1007!();
}

#[test]
fn idle_client_sleeps() {
    guard();
    scenario_idle!();
}

#[test]
fn unread_events_are_kept_not_dropped() {
    guard();
    scenario_backpressure!();
}

#[test]
fn dial_failures_end_in_login_timeout() {
    guard();
    scenario_dial_failure!();
}

#[test]
fn concurrent_calls_from_threads() {
    guard();
    scenario_concurrent_calls!(spawn_all);
}

#[test]
fn bad_frames_and_streams_drop_the_link_and_redial() {
    guard();
    scenario_bad_stream!();
}

#[test]
fn bulk_traffic_both_ways_at_once() {
    guard();
    scenario_bulk_both_ways!(both);
}

/// A server restarted with the same `ServerConfig::seed` once had the same
/// epoch, so the Session kept its channel sequence numbers across the restart
/// and dropped the new server's first messages as duplicates, with no
/// `MessagesLost` (fixed: the start time is part of the epoch).
#[test]
fn restarted_server_with_the_same_seed_loses_nothing_silently() {
    use hummer_channel::client::{ConnectionState, SendOptions};
    use hummer_channel::server::ServerConfig;
    use hummer_channel::{Message, Region, Uid};

    guard();
    let server = ServerHandle::spawn(ServerConfig::demo(), "127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = server.local_addr();
    let alice = connect!(addr, fast_config());
    let bob = connect!(addr, fast_config());
    alice.login(Uid(1), None, None).unwrap();
    bob.login(Uid(2), None, None).unwrap();
    let ra = alice.create_channel(Region::Cn, "restart").unwrap();
    let rb = bob.create_channel(Region::Cn, "restart").unwrap();
    alice.join_channel(ra, attrs(&[])).unwrap();
    bob.join_channel(rb, attrs(&[])).unwrap();
    for i in 0..3 {
        let m = Message::new("t", format!("old{i}"));
        bob.send_message_to_channel(rb, m, SendOptions::default())
            .unwrap();
        expect_event!(alice, Event::ChannelMessage { .. });
    }
    server.shutdown();
    let server = ServerHandle::spawn(ServerConfig::demo(), addr).unwrap();
    expect_event!(
        alice,
        Event::ConnectionStateChanged {
            state: ConnectionState::Connected,
            ..
        }
    );
    let mut tries = 0;
    while let Err(e) =
        bob.send_message_to_channel(rb, Message::new("t", "new0"), SendOptions::default())
    {
        tries += 1;
        assert!(tries < 500, "{e}");
        std::thread::sleep(Duration::from_millis(10));
    }
    // Either the message arrives, or the loss is reported.
    let event = expect_event!(
        alice,
        Event::ChannelMessage { .. } | Event::MessagesLost { .. }
    );
    if let Event::ChannelMessage { message, .. } = &event {
        assert_eq!(
            &message.content[..],
            b"new0",
            "earlier messages were dropped"
        );
    }
    drop(server);
}

#[test]
fn failover_skips_a_dead_address() {
    guard();
    scenario_failover_skips_a_dead_address!();
}

#[test]
fn failover_to_the_next_server_when_one_stops() {
    guard();
    scenario_failover_to_the_next_server!();
}
