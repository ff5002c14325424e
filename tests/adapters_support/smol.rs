//! The smol client's side of the adapter scenarios (`adapters_support`):
//! how a scenario waits, sleeps, runs calls at once and takes events.
//! Included by each test file that runs the scenarios with the smol client.
#![allow(unused_macros, dead_code)]

use std::time::Duration;

use hummer_channel::adapters::smol::Client;
use hummer_channel::client::Event;
use smol::future::FutureExt as _;
use smol::Timer;

use crate::adapters_support::{watchdog, EVENT_WAIT};

macro_rules! wait {
    ($e:expr) => {
        $e.await
    };
}

macro_rules! sleep {
    ($d:expr) => {
        smol::Timer::after($d).await
    };
}

pub async fn next_event(client: &Client) -> Option<Event> {
    client
        .next_event()
        .or(async {
            Timer::after(EVENT_WAIT).await;
            None
        })
        .await
}

/// Runs `$body` for `0..$n` as concurrent futures; their results.
macro_rules! spawn_all {
    ($client:ident, $n:expr, |$i:ident| $body:block) => {{
        let client = &$client;
        let futures: Vec<_> = (0..$n)
            .map(|$i| {
                let $client = client;
                Box::pin(async move { $body })
            })
            .collect();
        let mut results = Vec::new();
        // Poll them all together: every call is in flight at once.
        let mut pending: Vec<_> = futures.into_iter().map(Some).collect();
        smol::future::poll_fn(|cx| {
            let mut done = true;
            for slot in pending.iter_mut() {
                if let Some(f) = slot {
                    match std::future::Future::poll(f.as_mut(), cx) {
                        std::task::Poll::Ready(v) => {
                            results.push(v);
                            *slot = None;
                        }
                        std::task::Poll::Pending => done = false,
                    }
                }
            }
            if done {
                std::task::Poll::Ready(())
            } else {
                std::task::Poll::Pending
            }
        })
        .await;
        results
    }};
}

/// Runs two blocks at once, as concurrent futures.
macro_rules! both {
    ($a:block, $b:block) => {
        smol::future::zip(async { $a }, async { $b }).await
    };
}

/// Runs a scenario on smol, under a watchdog.
pub fn run(test: impl std::future::Future<Output = ()>) {
    watchdog(Duration::from_secs(60));
    smol::block_on(test);
}
