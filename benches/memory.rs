//! Bytes held per idle client Session and per idle server connection,
//! measured with a counting global allocator: allocate N, take the delta of
//! live heap bytes, divide by N. Not a criterion bench (nothing is timed).
//!
//! `cargo bench --bench memory`

mod common;

use std::time::Instant;

use hummer_channel::client::{Session, SessionConfig};
use hummer_channel::server::DEMO_APPID;

#[global_allocator]
static GLOBAL: common::Counting = common::Counting;

const N: usize = 10_000;

fn main() {
    // `cargo bench` passes `--bench`; a filter that excludes "memory" skips it.
    if std::env::args()
        .skip(1)
        .any(|a| !a.starts_with('-') && !"memory".contains(a.as_str()))
    {
        return;
    }
    let now = Instant::now();

    // A Session that has never logged in.
    let l0 = common::live_bytes();
    let fresh: Vec<Session> = (0..N)
        .map(|_| Session::new(SessionConfig::new(DEMO_APPID), now))
        .collect();
    let fresh_per = (common::live_bytes() - l0) as f64 / N as f64;
    drop(fresh);

    // N Sessions logged in to one in-memory server, idle, no channel.
    let mut server = common::bench_server(now);
    let base = common::live_bytes();
    let mut sessions = Vec::with_capacity(N);
    for uid in 1..=N as u64 {
        sessions.push(common::logged_in_session(&mut server, now, uid, None).0);
    }
    let all = common::live_bytes();
    drop(sessions);
    let server_only = common::live_bytes();
    let session_per = (all - server_only) as f64 / N as f64;
    let conn_per = (server_only - base) as f64 / N as f64;

    // N Sessions joined to one channel each (their own), idle.
    let mut server2 = common::bench_server(now);
    let base2 = common::live_bytes();
    let mut joined = Vec::with_capacity(N);
    for uid in 1..=N as u64 {
        let id = format!("ch{uid}");
        joined.push(common::logged_in_session(&mut server2, now, uid, Some(&id)).0);
    }
    let all2 = common::live_bytes();
    drop(joined);
    let server2_only = common::live_bytes();
    let joined_session_per = (all2 - server2_only) as f64 / N as f64;
    let joined_conn_per = (server2_only - base2) as f64 / N as f64;
    drop(server2);
    drop(server);

    println!(
        "SUMMARY memory: Session never logged in: {fresh_per:.0} bytes ({} of them the value itself)",
        std::mem::size_of::<Session>()
    );
    println!(
        "SUMMARY memory: idle logged-in Session: {session_per:.0} bytes (its heap plus the {} bytes of the value itself)",
        std::mem::size_of::<Session>()
    );
    println!("SUMMARY memory: idle logged-in server connection: {conn_per:.0} heap bytes");
    println!(
        "SUMMARY memory: idle Session joined to one channel: {joined_session_per:.0} bytes; \
         server per such connection (with its own channel): {joined_conn_per:.0} heap bytes"
    );
}
