//! The smol adapter over loopback TCP against the reference server.
#![cfg(feature = "server-tcp")]

#[macro_use]
mod adapters_support;
#[macro_use]
#[path = "adapters_support/smol.rs"]
mod harness;

use adapters_support::*;
use harness::*;
use hummer_channel::adapters::smol::Client;

/// A client (its driver task started).
macro_rules! connect {
    ($addr:expr, $config:expr) => {
        Client::connect($addr, $config)
    };
    ($addr:expr, $config:expr, $event_capacity:expr) => {
        Client::connect_with_event_capacity($addr, $config, $event_capacity)
    };
}

/// A client for a list of servers.
macro_rules! connect_any {
    ($list:expr, $config:expr) => {
        Client::connect_any($list, $config).expect("a non-empty list")
    };
}

#[test]
fn every_operation_and_notice() {
    run(async { scenario_every_operation!() });
}

#[test]
fn reconnects_rejoins_and_resumes_exactly_once() {
    run(async { scenario_reconnect!() });
}

#[test]
fn request_in_flight_fails_with_1007() {
    run(async { scenario_in_flight_fails_1007!() });
}

#[test]
fn idle_client_sleeps() {
    run(async { scenario_idle!() });
}

#[test]
fn unread_events_are_kept_not_dropped() {
    run(async { scenario_backpressure!() });
}

#[test]
fn dial_failures_end_in_login_timeout() {
    run(async { scenario_dial_failure!() });
}

#[test]
fn concurrent_calls_from_tasks() {
    run(async { scenario_concurrent_calls!(spawn_all) });
}

#[test]
fn bad_frames_and_streams_drop_the_link_and_redial() {
    run(async { scenario_bad_stream!() });
}

#[test]
fn bulk_traffic_both_ways_at_once() {
    run(async { scenario_bulk_both_ways!(both) });
}

#[test]
fn failover_skips_a_dead_address() {
    run(async { scenario_failover_skips_a_dead_address!() });
}

#[test]
fn failover_to_the_next_server_when_one_stops() {
    run(async { scenario_failover_to_the_next_server!() });
}
