//! The Server fanning one broadcast out to 100 and to 1,000 members in
//! memory: one `SendToChannelRequest` handled, then every member's queue
//! drained. Also counts heap allocations per broadcast with a counting
//! global allocator: the target is none per delivery beyond the one encode
//! per broadcast, i.e. a count that does not grow with the member count.
//!
//! `cargo bench --bench server_fanout`

mod common;

use std::time::Instant;

use bytes::Bytes;
use criterion::{criterion_group, Criterion, Throughput};
use hummer_channel::server::{ConnId, Server};

#[global_allocator]
static GLOBAL: common::Counting = common::Counting;

const SIZES: [usize; 2] = [100, 1000];

/// Distinct sends a fixture cycles through (see `Fixture::new`).
const SENDS_CYCLED: u64 = 2048;

struct Fixture {
    server: Server,
    publisher: ConnId,
    sends: Vec<Bytes>,
    next: usize,
    now: Instant,
    members: usize,
}

impl Fixture {
    /// `members` logged-in connections in one channel, the publisher among them.
    fn new(members: usize, unreliable: bool) -> Fixture {
        let now = Instant::now();
        let mut server = common::bench_server(now);
        let mut conns = Vec::new();
        for uid in 1..=members as u64 {
            let c = common::login(&mut server, now, uid);
            common::join(&mut server, now, c, "fanout");
            conns.push(c);
        }
        common::drain(&mut server);
        let mut fx = Fixture {
            server,
            publisher: conns[0],
            // More distinct message ids than the server remembers per uid
            // (1,024), cycled: every send is new to the server, and none is
            // encoded inside the timed loop.
            sends: (1..=SENDS_CYCLED)
                .map(|i| common::send_to_channel(1, i, "fanout", unreliable))
                .collect(),
            next: 0,
            now,
            members,
        };
        // Warm up every queue once (their first push allocates a buffer).
        for _ in 0..4 {
            fx.broadcast();
        }
        fx
    }

    /// One broadcast, fully drained; returns the frames delivered (the
    /// members' pushes plus the publisher's reply).
    fn broadcast(&mut self) -> usize {
        let send = self.sends[self.next].clone();
        self.next = (self.next + 1) % self.sends.len();
        self.server.handle_frame(self.now, self.publisher, send);
        let n = common::drain(&mut self.server);
        // Every member's push and the reply: a refused send (a rate limit)
        // would measure nothing, so this holds in release builds too.
        assert_eq!(n, self.members + 1);
        n
    }
}

fn fanout(c: &mut Criterion) {
    let mut g = c.benchmark_group("server_fanout");
    for &n in &SIZES {
        for (mode, unreliable) in [("unreliable", true), ("reliable", false)] {
            let mut fx = Fixture::new(n, unreliable);
            g.throughput(Throughput::Elements(n as u64));
            g.bench_function(format!("{mode}_{n}"), |b| b.iter(|| fx.broadcast()));
        }
    }
    g.finish();
}

criterion_group!(benches, fanout);

fn main() {
    common::mark_start();
    benches();
    Criterion::default().configure_from_args().final_summary();
    for &n in &SIZES {
        for (mode, unreliable) in [("unreliable", true), ("reliable", false)] {
            let mut fx = Fixture::new(n, unreliable);
            // Past the channel's retention (1024) so that eviction is included.
            for _ in 0..2000 {
                fx.broadcast();
            }
            let rounds = 1000;
            let a0 = common::allocs();
            for _ in 0..rounds {
                fx.broadcast();
            }
            let per_broadcast = (common::allocs() - a0) as f64 / rounds as f64;
            let line = match common::criterion_median_ns(&format!("server_fanout/{mode}_{n}")) {
                Some(ns) => format!(
                    "{:.2} M deliveries/s ({ns:.0} ns per broadcast)",
                    n as f64 / ns * 1e3
                ),
                None => "not timed in this run".to_owned(),
            };
            println!(
                "SUMMARY server_fanout {mode} {n} members: {line}; \
                 {per_broadcast:.2} allocations per broadcast = {:.4} per delivery",
                per_broadcast / n as f64
            );
        }
    }
}
