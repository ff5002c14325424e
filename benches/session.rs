//! The client Session handling one incoming channel-message frame through to
//! its event, per message: a logged-in Session joined to a channel is fed
//! pre-encoded `ChannelMessagePush` frames with increasing seq.
//!
//! `cargo bench --bench session`

mod common;

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, Criterion, Throughput};
use hummer_channel::client::{Event, LinkId, Sink, TransportAction};
use hummer_channel::wire::{Body, ChannelMessagePush};

#[global_allocator]
static GLOBAL: common::Counting = common::Counting;

/// Frames pre-encoded per batch (the encoding is not timed).
const BATCH: u64 = 10_000;

struct Fixture {
    session: hummer_channel::client::Session,
    link: LinkId,
    channel: u32,
    next_seq: u64,
    now: Instant,
}

impl Fixture {
    fn new(reliable: bool) -> Fixture {
        let now = Instant::now();
        let mut server = common::bench_server(now);
        let (session, conn) = common::logged_in_session(&mut server, now, 1, Some("bench"));
        // Learn the channel number as the server numbered it, from a
        // second member (uid 2, the sender of the pushes).
        let other = common::login(&mut server, now, 2);
        let channel = common::join(&mut server, now, other, "bench");
        let _ = conn;
        let link = session.link().expect("logged in");
        Fixture {
            session,
            link,
            channel,
            next_seq: if reliable { 1 } else { 0 },
            now,
        }
    }

    fn frames(&mut self, n: u64) -> Vec<Bytes> {
        (0..n)
            .map(|_| {
                let seq = if self.next_seq == 0 {
                    0
                } else {
                    self.next_seq += 1;
                    self.next_seq - 1
                };
                common::frame(
                    0,
                    Body::ChannelMessage(ChannelMessagePush {
                        channel: self.channel,
                        from_uid: 2,
                        message: Some(common::message_100()),
                        timestamp_ms: 1_700_000_000_000,
                        seq,
                    }),
                )
            })
            .collect()
    }

    /// Handles `frame` and drains (one `Session::drain`); `true` when it
    /// gave a ChannelMessage event.
    fn handle(&mut self, frame: Bytes) -> bool {
        self.session
            .handle_frame(self.now, self.link, frame)
            .unwrap();
        let mut out = Drained(false);
        self.session.drain(&mut out);
        out.0
    }
}

/// Black-boxes every output of a drain; notes whether a ChannelMessage
/// event came.
struct Drained(bool);

impl Sink for Drained {
    fn transport(&mut self, action: TransportAction) {
        black_box(action);
    }
    fn transmit(&mut self, frame: Bytes) {
        black_box(frame);
    }
    fn event(&mut self, event: Event) {
        self.0 |= matches!(event, Event::ChannelMessage { .. });
        black_box(event);
    }
}

fn session(c: &mut Criterion) {
    let mut g = c.benchmark_group("session");
    g.throughput(Throughput::Elements(1));
    for (name, reliable) in [
        ("channel_message_reliable", true),
        ("channel_message_unreliable", false),
    ] {
        let mut fx = Fixture::new(reliable);
        let first = fx.frames(1).remove(0);
        assert!(fx.handle(first), "no event for a push");
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                let mut left = iters;
                while left > 0 {
                    let n = left.min(BATCH);
                    let frames = fx.frames(n);
                    let t = Instant::now();
                    for f in frames {
                        black_box(fx.handle(f));
                    }
                    total += t.elapsed();
                    left -= n;
                }
                total
            })
        });
    }
    g.finish();
}

criterion_group!(benches, session);

fn main() {
    common::mark_start();
    benches();
    Criterion::default().configure_from_args().final_summary();
    // Allocations per message, outside criterion (bounded: 10,000 messages).
    for (name, reliable) in [("reliable", true), ("unreliable", false)] {
        let mut fx = Fixture::new(reliable);
        let frames = fx.frames(10_000);
        let a0 = common::allocs();
        let mut events = 0;
        for f in frames {
            events += usize::from(fx.handle(f));
        }
        let a = common::allocs() - a0;
        assert_eq!(events, 10_000);
        println!(
            "SUMMARY session {name}: {:.2} allocations per channel message handled",
            a as f64 / 10_000.0
        );
    }
    for name in ["channel_message_reliable", "channel_message_unreliable"] {
        if let Some(ns) = common::criterion_median_ns(&format!("session/{name}")) {
            println!(
                "SUMMARY session {name}: {ns:.0} ns per message ({:.2} M messages/s)",
                1e3 / ns
            );
        }
    }
}
