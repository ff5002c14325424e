//! The scaling workload: many channels at once (by default 1,000), each with
//! its own publisher and `members` subscribers (by default 10): for hummer a
//! channel the publisher is a member of (its echo is not counted), for NATS
//! a subject, for Redis a channel.
//!
//! Thousands of connections do not get a thread each: publishers are spread
//! over a few threads, each sending one batch per publisher in turn while
//! that channel's slowest subscriber is within the window; subscribers (and
//! the publishers' replies) are read by a few threads polling their sockets
//! (epoll, level-triggered). The load generator's own CPU is reported, so
//! that a client near the core count shows as the limit.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use polling::{Event, Events, PollMode, Poller};

use crate::count::Counter;
use crate::{
    batch, close, own_cpu_seconds, subscribe_finish, subscribe_start, wait_idle, Conn, Kind,
    Outcome, Params, Publisher, Target, Topic, GATEWAY_NODE, SETTLE_CAP,
};

pub struct ScaleParams {
    pub channels: u64,
    pub members: u64,
    /// Messages per channel.
    pub messages: u64,
    pub publisher_threads: u64,
    pub reader_threads: u64,
    /// Messages a publisher may have ahead of its channel's slowest
    /// subscriber (small: there are many channels in flight).
    pub window: u64,
    /// Repetitions that include this workload (the first ones).
    pub reps: u64,
}

/// Subscriptions set up at once: their requests all sent, then the replies
/// read (below every server's listen backlog).
const WAVE: u64 = 256;

pub fn scale(t: &Target, run: u64, sp: &ScaleParams, p: &Params) -> io::Result<Outcome> {
    // Uids (hummer) of their own, far from the other workloads'.
    let base = (1 << 32) + run * 10_000_000;
    let (n, members) = (sp.messages, sp.members);
    let fds_before = open_fds_of(t);
    let topics: Vec<Topic> = (0..sp.channels)
        .map(|c| Topic::Channel(format!("scale.{run}.{c}")))
        .collect();
    let total = sp.channels * members;
    let setup = Instant::now();
    let mut subs = Vec::with_capacity(total as usize);
    let mut first = 0;
    while first < total {
        let wave = first..(first + WAVE).min(total);
        let started: Vec<Conn> = wave
            .clone()
            .map(|j| {
                // A server of several nodes: each channel's members go
                // round the nodes.
                let topic = &topics[(j / members) as usize];
                subscribe_start(&t.on(j as usize), base + 1 + j, topic)
            })
            .collect::<io::Result<_>>()?;
        for (j, mut c) in wave.zip(started) {
            subscribe_finish(&mut c, &topics[(j / members) as usize])?;
            subs.push(c);
        }
        first += WAVE;
    }
    let mut pubs = Vec::with_capacity(topics.len());
    let publisher_node = t.on(GATEWAY_NODE);
    for (ch, topic) in topics.iter().enumerate() {
        pubs.push(Publisher::open(
            &publisher_node,
            base + total + 1 + ch as u64,
            topic,
        )?);
    }

    eprintln!(
        "scale: {} subscribers and {} publishers set up in {:.1} s",
        total,
        sp.channels,
        setup.elapsed().as_secs_f64()
    );
    // Deliveries so far, per subscriber (channel c's are c * members..).
    let counts: Arc<Vec<AtomicU64>> = Arc::new((0..total).map(|_| AtomicU64::new(0)).collect());
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicU64::new(0));
    // Replies to the publishers' messages (hummer `SendReply`, Redis `:N`).
    let replies = Arc::new(AtomicU64::new(0));

    // Readers: the subscribers, and a second handle on each publisher's
    // socket for what it receives.
    let readers = sp.reader_threads.max(1) as usize;
    let mut entries: Vec<Vec<Entry>> = (0..readers).map(|_| Vec::new()).collect();
    for (j, c) in subs.into_iter().enumerate() {
        entries[j % readers].push(Entry {
            c,
            sub: Some(j),
            got: 0,
        });
    }
    for (ch, pb) in pubs.iter_mut().enumerate() {
        let c = Conn {
            s: pb.c.s.try_clone()?,
            kind: pb.c.kind,
            // What the publisher read past its last reply belongs here.
            buf: std::mem::take(&mut pb.c.buf),
            out: BytesMut::new(),
        };
        entries[ch % readers].push(Entry {
            c,
            sub: None,
            got: 0,
        });
    }
    let reader_threads: Vec<_> = entries
        .into_iter()
        .map(|entries| {
            let (counts, done, stop, errors, replies) = (
                counts.clone(),
                done.clone(),
                stop.clone(),
                errors.clone(),
                replies.clone(),
            );
            thread::spawn(move || read_all(entries, n, &counts, &done, &stop, &errors, &replies))
        })
        .collect();

    let cpu0 = t.cpu_seconds(p.clk_tck);
    let own_cpu0 = own_cpu_seconds(p.clk_tck);
    let start = Instant::now();
    let end = start + p.cap;
    let writers = sp.publisher_threads.max(1) as usize;
    let mut shares: Vec<Vec<(usize, Publisher)>> = (0..writers).map(|_| Vec::new()).collect();
    for (ch, pb) in pubs.into_iter().enumerate() {
        shares[ch % writers].push((ch, pb));
    }
    let window = sp.window.max(batch());
    let publisher_threads: Vec<_> = shares
        .into_iter()
        .map(|share| {
            let counts = counts.clone();
            thread::spawn(move || publish(share, &counts, members, n, window, end))
        })
        .collect();
    while done.load(Ordering::Relaxed) < total && Instant::now() < end {
        thread::sleep(Duration::from_micros(200));
    }
    // As in `pubsub`: the run ends with the publishers' last reply too
    // (every publisher sent its `n` when every subscriber has them).
    let all_delivered = done.load(Ordering::Relaxed) >= total;
    let expected_replies = match t.kind {
        Kind::Nats => 0,
        _ if all_delivered => sp.channels * n,
        _ => 0,
    };
    let answered = || replies.load(Ordering::Relaxed) + errors.load(Ordering::Relaxed);
    while answered() < expected_replies && Instant::now() < end {
        thread::sleep(Duration::from_micros(200));
    }
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = t.cpu_seconds(p.clk_tck) - cpu0;
    let own_cpu = own_cpu_seconds(p.clk_tck) - own_cpu0;
    let delivered: u64 = counts.iter().map(|c| c.load(Ordering::Relaxed)).sum();

    let mut failure = None;
    let mut pubs = Vec::new();
    for th in publisher_threads {
        match th.join() {
            Ok(Ok(share)) => pubs.extend(share),
            Ok(Err(e)) => failure = Some(e),
            Err(_) => failure = Some(io::Error::other("publisher thread panicked")),
        }
    }
    stop.store(true, Ordering::Relaxed);
    for th in reader_threads {
        match th.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failure = Some(e),
            Err(_) => failure = Some(io::Error::other("reader thread panicked")),
        }
    }
    for (_, pb) in pubs {
        close(pb.c);
    }
    if let Some(e) = failure {
        return Err(e);
    }
    settle(t, fds_before, p.clk_tck);
    Ok(Outcome {
        rate: delivered as f64 / elapsed,
        p99: f64::NAN,
        deliveries: delivered,
        expected: total * n,
        cpu_per_delivery: cpu / delivered.max(1) as f64,
        client_cores: own_cpu / elapsed,
        errors: errors.load(Ordering::Relaxed),
        missing_replies: expected_replies.saturating_sub(answered()),
    })
}

/// A connection a reader thread polls.
struct Entry {
    c: Conn,
    /// A subscriber's index in the counts; `None` for a publisher's replies.
    sub: Option<usize>,
    got: u64,
}

/// Reads whatever is readable among `entries` until `stop`; counts each
/// subscriber's deliveries and, when one has all `n`, `done`.
fn read_all(
    mut entries: Vec<Entry>,
    n: u64,
    counts: &[AtomicU64],
    done: &AtomicU64,
    stop: &AtomicBool,
    errors: &AtomicU64,
    replies: &AtomicU64,
) -> io::Result<()> {
    let poller = Poller::new()?;
    let mut live = vec![true; entries.len()];
    for (key, e) in entries.iter().enumerate() {
        // SAFETY: every socket is deleted from the poller below, before
        // `entries` is dropped.
        unsafe { poller.add_with_mode(&e.c.s, Event::readable(key), PollMode::Level)? };
    }
    let mut events = Events::new();
    let mut counter = Counter::new();
    let mut on_error = |e: String| {
        if errors.fetch_add(1, Ordering::Relaxed) < 3 {
            eprintln!("scale: error reply: {e}");
        }
    };
    let mut result = Ok(());
    while !stop.load(Ordering::Relaxed) {
        events.clear();
        if let Err(e) = poller.wait(&mut events, Some(Duration::from_millis(100))) {
            result = Err(e);
            break;
        }
        for ev in events.iter() {
            let e = &mut entries[ev.key];
            // Level-triggered: a readable socket, so this read does not
            // block (the socket's read timeout bounds it anyway).
            let replies_before = counter.replies;
            match counter.read(&mut e.c, &mut on_error) {
                Ok(Some(k)) => {
                    if counter.replies > replies_before {
                        replies.fetch_add(counter.replies - replies_before, Ordering::Relaxed);
                    }
                    if let Some(j) = e.sub {
                        let before = e.got;
                        e.got += k;
                        counts[j].store(e.got, Ordering::Relaxed);
                        if before < n && e.got >= n {
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                Ok(None) => {}
                // Closed: no longer polled (it would stay readable).
                Err(_) => {
                    if live[ev.key] {
                        live[ev.key] = false;
                        let _ = poller.delete(&e.c.s);
                    }
                }
            }
        }
    }
    for (e, live) in entries.iter().zip(&live) {
        if *live {
            let _ = poller.delete(&e.c.s);
        }
    }
    for e in entries {
        if e.sub.is_some() {
            close(e.c);
        }
    }
    result
}

/// Sends every publisher's `n` messages, one batch per publisher in turn,
/// each while its channel's slowest subscriber is within `window`; gives the
/// publishers back for closing.
fn publish(
    mut share: Vec<(usize, Publisher)>,
    counts: &[AtomicU64],
    members: u64,
    n: u64,
    window: u64,
    end: Instant,
) -> io::Result<Vec<(usize, Publisher)>> {
    let mut sent = vec![0u64; share.len()];
    let mut left = share.len();
    while left > 0 && Instant::now() < end {
        let mut progress = false;
        for ((ch, pb), sent) in share.iter_mut().zip(&mut sent) {
            if *sent >= n {
                continue;
            }
            let subs = &counts[*ch * members as usize..(*ch + 1) * members as usize];
            let slowest = subs
                .iter()
                .map(|c| c.load(Ordering::Relaxed))
                .min()
                .unwrap_or(0);
            if sent.saturating_sub(slowest) + batch() > window {
                continue;
            }
            let k = batch().min(n - *sent);
            pb.send(*sent, k)?;
            *sent += k;
            progress = true;
            if *sent >= n {
                left -= 1;
            }
        }
        if !progress {
            // Every window is full: the servers and readers need the CPU,
            // and a millisecond is little against what is in flight.
            thread::sleep(Duration::from_millis(1));
        }
    }
    Ok(share)
}

/// Open file descriptors of process `pid`.
fn open_fds(pid: u32) -> Option<usize> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

/// Open file descriptors of every process of the server (`None` without
/// their pids).
fn open_fds_of(t: &Target) -> Option<usize> {
    if t.pids.is_empty() {
        return None;
    }
    t.pids.iter().map(|&pid| open_fds(pid)).sum()
}

/// Waits until the server has closed the run's connections and gone idle
/// (each at most `SETTLE_CAP`): a server still tearing down thousands of
/// them would take CPU from the next run, which may be another server's.
fn settle(t: &Target, fds_before: Option<usize>, clk_tck: f64) {
    let Some(before) = fds_before else {
        return;
    };
    let start = Instant::now();
    while start.elapsed() < SETTLE_CAP {
        match open_fds_of(t) {
            Some(now) if now > before + 16 => thread::sleep(Duration::from_millis(100)),
            _ => break,
        }
    }
    let closed = start.elapsed();
    wait_idle(&t.pids, clk_tck);
    if start.elapsed() > Duration::from_secs(1) {
        eprintln!(
            "scale: {} took {:.1} s to close the connections, {:.1} s in all to go idle",
            t.label,
            closed.as_secs_f64(),
            start.elapsed().as_secs_f64()
        );
    }
}
