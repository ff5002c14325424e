//! `raw --kind hummer` and `idle` over `--transport tls|ws|wss`: the same
//! clients as raw.rs's hummer path and main.rs's `idle`, on the links of
//! transport.rs. Same steps, same counts, same buffer sizes; only the
//! framing and the TLS layer differ. TCP never comes here.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use std::io;

use bytes::Bytes;
use hummer_channel::wire::{
    self, decode_frame, encode_frame, Body, ChatMessage, Frame, JoinRequest, SendToChannelRequest,
    SendToUserRequest,
};

use crate::raw::RawOutcome;
use crate::transport::{count_pushes, is_timeout, next_frame, Dial, LinkReader, LinkWriter};
use crate::{cpu_seconds, key, login_body, own_cpu_seconds, MAX_FRAME};

const PAYLOAD: usize = 100;

fn encode(request_id: u64, body: Body) -> Bytes {
    encode_frame(&Frame {
        request_id,
        body: Some(body),
    })
}

/// Connects, logs in as `uid` (request 1), joins `channel` (request 2);
/// returns the halves and what came after the last reply.
fn login(
    dial: &Dial,
    uid: u64,
    channel: Option<&str>,
) -> io::Result<(LinkWriter, LinkReader, Vec<u8>)> {
    let (mut w, mut r) = dial.connect()?;
    let mut out = Vec::new();
    w.frame(&mut out, &encode(1, login_body(uid)));
    if let Some(name) = channel {
        let join = Body::Join(JoinRequest {
            channel: Some(key(name)),
            ..Default::default()
        });
        w.frame(&mut out, &encode(2, join));
    }
    w.write_all(&out)?;
    let last = if channel.is_some() { 2 } else { 1 };
    let rest = wait_request(&mut r, last, Duration::from_secs(5))?;
    Ok((w, r, rest))
}

/// Reads frames until the reply to `request_id`; returns what followed it.
fn wait_request(r: &mut LinkReader, request_id: u64, cap: Duration) -> io::Result<Vec<u8>> {
    let end = Instant::now() + cap;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        while let Some((body, used)) = next_frame(r.ws, &buf)? {
            if let Some(body) = body {
                let f = decode_frame(Bytes::copy_from_slice(&buf[body]), MAX_FRAME)
                    .map_err(io::Error::other)?;
                if let Body::Error(e) = f.body {
                    return Err(io::Error::other(format!("hummer setup: {}", e.message)));
                }
                if f.request_id == request_id {
                    return Ok(buf.split_off(used));
                }
            }
            buf.drain(..used);
        }
        if Instant::now() > end {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "setup reply"));
        }
        match r.read(&mut chunk) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "closed in setup",
                ))
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if is_timeout(&e) => {}
            Err(e) => return Err(e),
        }
    }
}

/// raw.rs's `run` for hummer over `dial`'s transport (same steps).
pub fn run(
    dial: &Dial,
    run: u64,
    n: u64,
    subs: u64,
    cap: Duration,
    clk_tck: f64,
    server_pid: Option<u32>,
) -> io::Result<RawOutcome> {
    let name = format!("raw.{run}");
    let base = (1 << 40) + run * 10_000;
    let to_user = subs == 1;
    let publisher_uid = base;
    let channel = (!to_user).then_some(name.as_str());

    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    let mut writers = Vec::new();
    for i in 0..subs {
        let (w, r, leftover) = login(dial, base + 1 + i, channel)?;
        writers.push(w);
        let stop = stop.clone();
        threads.push(thread::spawn(move || count(r, leftover, n, &stop)));
    }

    let (mut p, mut pr, _) = login(dial, publisher_uid, channel)?;
    let mut all = Vec::new();
    for i in 0..n {
        let message = Some(ChatMessage {
            r#type: "text".into(),
            content: Bytes::from_static(&[b'x'; PAYLOAD]),
            app_extras: Default::default(),
        });
        let body = if to_user {
            Body::SendToUser(SendToUserRequest {
                receiver: base + 1,
                message,
                unreliable: true,
                message_id: i + 1,
            })
        } else {
            Body::SendToChannel(SendToChannelRequest {
                channel: Some(key(&name)),
                message,
                unreliable: true,
                message_id: i + 1,
            })
        };
        p.frame(&mut all, &encode(5, body));
    }
    let drain = {
        let stop = stop.clone();
        thread::spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            while !stop.load(Ordering::Relaxed) {
                match pr.read(&mut buf) {
                    Ok(0) => return,
                    Ok(_) => {}
                    Err(e) if is_timeout(&e) => {}
                    Err(_) => return,
                }
            }
        })
    };

    let cpu0 = own_cpu_seconds(clk_tck);
    let server_cpu0 = cpu_seconds(server_pid, clk_tck);
    let start = Instant::now();
    let stopper = {
        let stop = stop.clone();
        thread::spawn(move || {
            let end = start + cap;
            while !stop.load(Ordering::Relaxed) && Instant::now() < end {
                thread::sleep(Duration::from_millis(50));
            }
            stop.store(true, Ordering::Relaxed);
        })
    };
    p.set_write_timeout(Some(cap))?;
    let written = p.write_all(&all);
    let mut delivered = 0;
    let mut last = start;
    for t in threads {
        let (got, at) = t
            .join()
            .map_err(|_| io::Error::other("subscriber panicked"))??;
        delivered += got;
        last = last.max(at);
    }
    let cpu = own_cpu_seconds(clk_tck) - cpu0;
    let server_cpu = cpu_seconds(server_pid, clk_tck) - server_cpu0;
    stop.store(true, Ordering::Relaxed);
    let _ = stopper.join();
    p.shutdown();
    for mut w in writers {
        w.shutdown();
    }
    let _ = drain.join();
    written?;
    Ok(RawOutcome {
        rate: delivered as f64 / (last - start).as_secs_f64().max(1e-9),
        delivered,
        expected: n * subs,
        cpu,
        server_cpu,
    })
}

/// raw.rs's `count_pushes` over a link: frames found by the transport's
/// framing, pushes known by their first two bytes.
fn count(
    mut r: LinkReader,
    leftover: Vec<u8>,
    n: u64,
    stop: &AtomicBool,
) -> io::Result<(u64, Instant)> {
    let mut buf = vec![0u8; 128 * 1024];
    let mut len = leftover.len();
    buf[..len].copy_from_slice(&leftover);
    let mut got = 0;
    let mut last = Instant::now();
    let mut errors = 0;
    loop {
        let (at, k) = count_pushes(r.ws, &buf[..len], &mut |e| {
            errors += 1;
            if errors <= 3 {
                eprintln!("subscriber got an error: {e}");
            }
        })?;
        got += k;
        buf.copy_within(at..len, 0);
        len -= at;
        if got >= n || stop.load(Ordering::Relaxed) {
            return Ok((got, last));
        }
        match r.read(&mut buf[len..]) {
            Ok(0) => return Ok((got, last)),
            Ok(k) => {
                len += k;
                last = Instant::now();
            }
            Err(e) if is_timeout(&e) => {}
            Err(e) => return Err(e),
        }
    }
}

/// main.rs's `idle` over a link: `n` connections logged in (waves of 500),
/// held for `hold` with a Ping every 10 s; returns (connections, seconds to
/// open them, VmRSS KiB before, after).
pub fn idle(
    dial: &Dial,
    pid: u32,
    n: usize,
    hold: Duration,
) -> Result<(usize, f64, u64, u64), String> {
    let rss = || crate::vm_rss_kib(pid).ok_or("cannot read the server's VmRSS");
    let before = rss()?;
    let start = Instant::now();
    let cap = Duration::from_secs(120);
    let mut conns: Vec<(LinkWriter, LinkReader)> = Vec::with_capacity(n);
    let mut next_uid = 1u64;
    let mut last_ping = Instant::now();
    let ping = encode(3, Body::Ping(wire::Ping { nonce: 1 }));
    let mut ping_all = |conns: &mut Vec<(LinkWriter, LinkReader)>| -> Result<(), String> {
        if last_ping.elapsed() >= Duration::from_secs(10) {
            for (w, _) in conns.iter_mut() {
                let mut out = Vec::new();
                w.frame(&mut out, &ping);
                w.write_all(&out).map_err(|e| format!("ping: {e}"))?;
            }
            last_ping = Instant::now();
        }
        Ok(())
    };
    while conns.len() < n && start.elapsed() < cap {
        let mut wave = Vec::new();
        for _ in 0..500.min(n - conns.len()) {
            let (mut w, r) = dial.connect().map_err(|e| format!("connect: {e}"))?;
            let mut out = Vec::new();
            w.frame(&mut out, &encode(1, login_body(next_uid)));
            next_uid += 1;
            w.write_all(&out).map_err(|e| e.to_string())?;
            wave.push((w, r));
        }
        for (w, mut r) in wave {
            wait_request(&mut r, 1, Duration::from_secs(10))
                .map_err(|e| format!("login {}: {e}", conns.len()))?;
            conns.push((w, r));
        }
        ping_all(&mut conns)?;
    }
    let opened = start.elapsed().as_secs_f64();
    let hold_end = Instant::now() + hold;
    while Instant::now() < hold_end {
        thread::sleep(Duration::from_millis(100).min(hold_end - Instant::now()));
        ping_all(&mut conns)?;
    }
    let after = rss()?;
    let count = conns.len();
    for (mut w, _) in conns {
        let mut out = Vec::new();
        w.frame(&mut out, &encode(999_999, Body::Logout(wire::Empty {})));
        let _ = w.write_all(&out);
        w.shutdown();
    }
    Ok((count, opened, before, after))
}
