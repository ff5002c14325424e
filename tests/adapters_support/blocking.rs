//! The blocking client's side of the adapter scenarios
//! (`adapters_support`): how a scenario waits, sleeps, runs calls at once
//! and takes events. Included by each test file that runs the scenarios
//! with the blocking client.
#![allow(unused_macros, dead_code)]

use hummer_channel::adapters::blocking::Client;
use hummer_channel::client::Event;

use crate::adapters_support::EVENT_WAIT;

macro_rules! wait {
    ($e:expr) => {
        $e
    };
}

macro_rules! sleep {
    ($d:expr) => {
        std::thread::sleep($d)
    };
}

pub fn next_event(client: &Client) -> Option<Event> {
    client.recv_event(EVENT_WAIT)
}

/// Runs `$body` for `0..$n` on threads of their own; their results.
macro_rules! spawn_all {
    ($client:ident, $n:expr, |$i:ident| $body:block) => {
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..$n)
                .map(|$i| {
                    let $client = &$client;
                    scope.spawn(move || $body)
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap())
                .collect::<Vec<_>>()
        })
    };
}

/// Runs two blocks at once, on threads of their own.
macro_rules! both {
    ($a:block, $b:block) => {
        std::thread::scope(|scope| {
            let a = scope.spawn(|| $a);
            let b = scope.spawn(|| $b);
            a.join().unwrap();
            b.join().unwrap();
        })
    };
}
