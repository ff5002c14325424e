//! `hummer-load raw`: the simplest client that can measure a fan-out, as an
//! independent check of hummer-load's own clients (it shares none of their
//! code). One publisher writes a buffer of all its messages, built before
//! the clock starts, in one `write_all`; each subscriber is a thread that
//! only counts:
//!
//! - NATS and Redis subscribers count bytes: every message of a run is the
//!   same size, so messages = bytes / size;
//! - hummer subscribers count frames by their length prefixes, those whose
//!   first two bytes are a push's tag (the server also sends membership
//!   notices).
//!
//! No flow control: each server buffers more than one run sends to a
//! subscriber (NATS 64 MB pending, Redis 32 MB for a pub/sub client,
//! hummer-server `--max-queued-bytes`, 4 MB by default: enough for 10,000
//! messages; a 1 -> 1 run needs its subscriber to keep up, and a loss would
//! show as a short count).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use hummer_channel::server::DEMO_APPID;
use hummer_channel::wire::{
    self, decode_frame, encode_frame, write_length_prefixed, Body, ChannelKey, ChatMessage, Frame,
    JoinRequest, LoginRequest, SendToChannelRequest, SendToUserRequest,
};

use crate::{cpu_seconds, own_cpu_seconds, Kind};

const PAYLOAD: usize = 100;
const SETUP_TIMEOUT: Duration = Duration::from_secs(5);

pub struct RawOutcome {
    /// Deliveries per second, from the publisher's first write to the last
    /// subscriber's last message.
    pub rate: f64,
    pub delivered: u64,
    pub expected: u64,
    /// This process's CPU over the run, in seconds.
    pub cpu: f64,
    /// The server's CPU over the run, in seconds (NaN without its pid).
    pub server_cpu: f64,
}

/// One publisher sends `n` messages to `subs` subscribers (1: hummer P2P,
/// like hummer-load's 1 -> 1; more: a channel); bounded by `cap`. With
/// `server_pid`, the server's CPU over the same span (read outside it).
#[allow(clippy::too_many_arguments)]
pub fn run(
    kind: Kind,
    addr: SocketAddr,
    run: u64,
    n: u64,
    subs: u64,
    cap: Duration,
    clk_tck: f64,
    server_pid: Option<u32>,
) -> io::Result<RawOutcome> {
    let name = format!("raw.{run}");
    // Uids of their own, far from hummer-load's.
    let base = (1 << 40) + run * 10_000;
    let to_user = subs == 1;
    let publisher_uid = base;

    // Subscribers: subscribed (and confirmed) one by one, then counting.
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for i in 0..subs {
        let uid = base + 1 + i;
        let (s, leftover, message_size) = match kind {
            Kind::Nats => nats_subscribe(addr, &name)?,
            Kind::Redis => redis_subscribe(addr, &name)?,
            Kind::Hummer { .. } => hummer_subscribe(addr, uid, (!to_user).then_some(&name))?,
        };
        let stop = stop.clone();
        threads.push(thread::spawn(move || match message_size {
            Some(size) => count_bytes(s, leftover, size, n, &stop),
            None => count_pushes(s, leftover, n, &stop),
        }));
    }

    // The publisher, and every message it will send.
    let mut p = connect(addr)?;
    let all = match kind {
        Kind::Nats => {
            p.write_all(
                b"CONNECT {\"verbose\":false,\"pedantic\":false,\"echo\":false}\r\nPING\r\n",
            )?;
            read_until(&mut p, |b| find(b, b"PONG\r\n").map(|at| at + 6))?;
            let one = [
                format!("PUB {name} {PAYLOAD}\r\n").as_bytes(),
                &[b'x'; PAYLOAD],
                b"\r\n",
            ]
            .concat();
            one.repeat(n as usize)
        }
        Kind::Redis => {
            let one = [
                format!(
                    "*3\r\n$7\r\nPUBLISH\r\n${}\r\n{name}\r\n${PAYLOAD}\r\n",
                    name.len()
                )
                .as_bytes(),
                &[b'x'; PAYLOAD],
                b"\r\n",
            ]
            .concat();
            one.repeat(n as usize)
        }
        Kind::Hummer { .. } => {
            hummer_login(&mut p, publisher_uid, (!to_user).then_some(&name))?;
            let mut out = BytesMut::new();
            for i in 0..n {
                let message = Some(ChatMessage {
                    r#type: "text".into(),
                    content: Bytes::from_static(&[b'x'; PAYLOAD]),
                    app_extras: Default::default(),
                });
                // The server delivers a message id once per uid: all distinct.
                let body = if to_user {
                    Body::SendToUser(SendToUserRequest {
                        receiver: base + 1,
                        message,
                        unreliable: true,
                        message_id: i + 1,
                    })
                } else {
                    Body::SendToChannel(SendToChannelRequest {
                        channel: Some(channel(&name)),
                        message,
                        unreliable: true,
                        message_id: i + 1,
                    })
                };
                frame(&mut out, 5, body);
            }
            out.to_vec()
        }
    };
    // Replies (Redis `:N`, hummer `SendReply`) are read and dropped, so that
    // no server holds them back.
    let drain = {
        let mut s = p.try_clone()?;
        s.set_read_timeout(Some(Duration::from_millis(200)))?;
        let stop = stop.clone();
        thread::spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            while !stop.load(Ordering::Relaxed) {
                match s.read(&mut buf) {
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
    // The subscribers give up at the cap; so does a blocked write.
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
    let _ = p.shutdown(std::net::Shutdown::Both);
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

fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let s = TcpStream::connect(addr)?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(SETUP_TIMEOUT))?;
    Ok(s)
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

fn find(b: &[u8], what: &[u8]) -> Option<usize> {
    b.windows(what.len()).position(|w| w == what)
}

/// Reads until `done` says how many bytes the awaited reply ends at;
/// returns what came after it.
fn read_until(s: &mut TcpStream, done: impl Fn(&[u8]) -> Option<usize>) -> io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = done(&buf) {
            return Ok(buf.split_off(end));
        }
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "closed in setup",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// A subscribed socket, what followed the confirmation, and the size of one
/// message (when fixed).
type Subscribed = (TcpStream, Vec<u8>, Option<usize>);

fn nats_subscribe(addr: SocketAddr, subject: &str) -> io::Result<Subscribed> {
    let mut s = connect(addr)?;
    s.write_all(
        format!("CONNECT {{\"verbose\":false,\"pedantic\":false}}\r\nSUB {subject} 1\r\nPING\r\n")
            .as_bytes(),
    )?;
    // The PONG: the subscription is in place.
    let rest = read_until(&mut s, |b| find(b, b"PONG\r\n").map(|at| at + 6))?;
    let size = format!("MSG {subject} 1 {PAYLOAD}\r\n").len() + PAYLOAD + 2;
    Ok((s, rest, Some(size)))
}

fn redis_subscribe(addr: SocketAddr, channel: &str) -> io::Result<Subscribed> {
    let mut s = connect(addr)?;
    let len = channel.len();
    s.write_all(format!("*2\r\n$9\r\nSUBSCRIBE\r\n${len}\r\n{channel}\r\n").as_bytes())?;
    let confirmed = format!("*3\r\n$9\r\nsubscribe\r\n${len}\r\n{channel}\r\n:1\r\n");
    // Anything else (an error) ends in the setup timeout.
    let rest = read_until(&mut s, |b| {
        b.starts_with(confirmed.as_bytes())
            .then_some(confirmed.len())
    })?;
    let size =
        format!("*3\r\n$7\r\nmessage\r\n${len}\r\n{channel}\r\n${PAYLOAD}\r\n").len() + PAYLOAD + 2;
    Ok((s, rest, Some(size)))
}

fn hummer_subscribe(addr: SocketAddr, uid: u64, channel: Option<&str>) -> io::Result<Subscribed> {
    let mut s = connect(addr)?;
    let rest = hummer_login(&mut s, uid, channel)?;
    Ok((s, rest, None))
}

fn channel(name: &str) -> ChannelKey {
    ChannelKey {
        region: wire::Region::Cn as i32,
        channel_id: name.to_owned(),
    }
}

fn frame(out: &mut BytesMut, request_id: u64, body: Body) {
    let f = encode_frame(&Frame {
        request_id,
        body: Some(body),
    });
    write_length_prefixed(&f, out);
}

/// Logs in (request 1) and joins `channel` (request 2); returns what came
/// after the last reply.
fn hummer_login(s: &mut TcpStream, uid: u64, channel_name: Option<&str>) -> io::Result<Vec<u8>> {
    let mut out = BytesMut::new();
    frame(
        &mut out,
        1,
        Body::Login(LoginRequest {
            protocol_version: wire::PROTOCOL_VERSION,
            appid: DEMO_APPID,
            uid,
            ..Default::default()
        }),
    );
    if let Some(name) = channel_name {
        frame(
            &mut out,
            2,
            Body::Join(JoinRequest {
                channel: Some(channel(name)),
                ..Default::default()
            }),
        );
    }
    s.write_all(&out)?;
    let last = if channel_name.is_some() { 2 } else { 1 };
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        // Whole frames, looked at until the last reply.
        while buf.len() >= 4 {
            let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
            if buf.len() < 4 + len {
                break;
            }
            let f = decode_frame(Bytes::copy_from_slice(&buf[4..4 + len]), 64 * 1024)
                .map_err(io::Error::other)?;
            buf.drain(..4 + len);
            match f.body {
                Body::Error(e) => {
                    return Err(io::Error::other(format!("hummer setup: {}", e.message)))
                }
                _ if f.request_id == last => return Ok(buf),
                _ => {}
            }
        }
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "closed in setup",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Counts `size`-byte messages until `n` of them or `stop`; returns how
/// many and when the last one came.
fn count_bytes(
    mut s: TcpStream,
    leftover: Vec<u8>,
    size: usize,
    n: u64,
    stop: &AtomicBool,
) -> io::Result<(u64, Instant)> {
    s.set_read_timeout(Some(Duration::from_millis(200)))?;
    let want = size as u64 * n;
    let mut got = leftover.len() as u64;
    let mut last = Instant::now();
    let mut buf = vec![0u8; 64 * 1024];
    while got < want && !stop.load(Ordering::Relaxed) {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(k) => {
                got += k as u64;
                last = Instant::now();
            }
            Err(e) if is_timeout(&e) => {}
            Err(e) => return Err(e),
        }
    }
    Ok((got / size as u64, last))
}

/// Counts hummer pushes until `n` of them or `stop`.
fn count_pushes(
    mut s: TcpStream,
    leftover: Vec<u8>,
    n: u64,
    stop: &AtomicBool,
) -> io::Result<(u64, Instant)> {
    s.set_read_timeout(Some(Duration::from_millis(200)))?;
    let mut buf = vec![0u8; 128 * 1024];
    let mut len = leftover.len();
    buf[..len].copy_from_slice(&leftover);
    let mut got = 0;
    let mut last = Instant::now();
    loop {
        // Whole frames first; what remains of a partial one moves to the front.
        let mut at = 0;
        while at + 4 <= len {
            let size = u32::from_be_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]);
            let end = at + 4 + size as usize;
            if end > len {
                break;
            }
            // A push: request_id 0 (absent), then the tag of field 60 or 61.
            if size > 2 && buf[at + 5] == 0x03 && matches!(buf[at + 4], 0xe2 | 0xea) {
                got += 1;
            }
            at = end;
        }
        buf.copy_within(at..len, 0);
        len -= at;
        if got >= n || stop.load(Ordering::Relaxed) {
            return Ok((got, last));
        }
        match s.read(&mut buf[len..]) {
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
