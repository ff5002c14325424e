//! A hostile client against the WebSocket listener (and its pages): what
//! one peer must not be able to do to the server or to the other links of
//! its thread. Raw sockets for the attacker (it breaks the protocol on
//! purpose), the server in-process on one thread.
//!
//! The first four tests reproduce problems found by probing (they fail on
//! the server as it is); the others guard bounds that hold. Tests that
//! measure the process's memory (`VmRSS`) or a victim's latency run one at a
//! time (`SERIAL`).
#![cfg(all(feature = "server-tcp", feature = "websocket", target_os = "linux"))]

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use hummer_channel::adapters::server_tcp::{
    bind, Listeners, RunnerConfig, ServerHandle, WebSocketOptions,
};
use hummer_channel::server::{ServerConfig, DEMO_APPID};
use hummer_channel::wire::{self, decode_frame, encode_frame, Body, Frame};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

fn spawn_with(options: WebSocketOptions, per_ip: usize) -> ServerHandle {
    let runner = RunnerConfig::default()
        .with_threads(1)
        .with_max_connections_per_ip(per_ip)
        .with_websocket(options);
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let listeners =
        Listeners::new(bind(any, &runner).unwrap()).with_websocket(bind(any, &runner).unwrap());
    ServerHandle::spawn_on(ServerConfig::demo(), runner, listeners).unwrap()
}

fn spawn() -> ServerHandle {
    spawn_with(WebSocketOptions::default(), 1_000)
}

/// The process's resident memory, in bytes.
fn rss() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    let kib: usize = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

const MIB: usize = 1024 * 1024;

// ---- raw WebSocket (client side: masked frames) ----

const HANDSHAKE: &str = "GET /v1/ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\
    Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
    Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: hummer.v1.protobuf\r\n\r\n";

/// A WebSocket frame as a client sends it (masked unless told otherwise).
fn ws_frame(
    fin: bool,
    rsv: u8,
    opcode: u8,
    payload: &[u8],
    masked: bool,
    len: Option<u64>,
) -> Vec<u8> {
    let mut out = vec![(if fin { 0x80 } else { 0 }) | (rsv << 4) | opcode];
    let n = len.unwrap_or(payload.len() as u64);
    let m = if masked { 0x80 } else { 0 };
    if n < 126 {
        out.push(m | n as u8);
    } else if n < 65_536 {
        out.push(m | 126);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(m | 127);
        out.extend_from_slice(&n.to_be_bytes());
    }
    let key = [1u8, 2, 3, 4];
    if masked {
        out.extend_from_slice(&key);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    } else {
        out.extend_from_slice(payload);
    }
    out
}

fn binary(payload: &[u8]) -> Vec<u8> {
    ws_frame(true, 0, 2, payload, true, None)
}

fn login_frame(uid: u64) -> Vec<u8> {
    encode_frame(&Frame {
        request_id: 1,
        body: Some(Body::Login(wire::LoginRequest {
            protocol_version: 2,
            appid: DEMO_APPID,
            uid,
            ..Default::default()
        })),
    })
    .to_vec()
}

/// Connects and upgrades; the socket after the 101 (nothing else read).
fn ws_open(addr: SocketAddr, recv_buffer: Option<usize>) -> TcpStream {
    let stream = match recv_buffer {
        None => TcpStream::connect(addr).unwrap(),
        Some(n) => {
            let s =
                socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
            s.set_recv_buffer_size(n).unwrap();
            s.connect(&addr.into()).unwrap();
            s.into()
        }
    };
    let mut stream = stream;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream.write_all(HANDSHAKE.as_bytes()).unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    stream
}

/// Reads one server frame: (opcode, payload).
fn read_ws(s: &mut TcpStream) -> std::io::Result<(u8, Vec<u8>)> {
    let mut h = [0u8; 2];
    s.read_exact(&mut h)?;
    let mut n = u64::from(h[1] & 0x7f);
    if n == 126 {
        let mut b = [0u8; 2];
        s.read_exact(&mut b)?;
        n = u64::from(u16::from_be_bytes(b));
    } else if n == 127 {
        let mut b = [0u8; 8];
        s.read_exact(&mut b)?;
        n = u64::from_be_bytes(b);
    }
    let mut p = vec![0u8; n as usize];
    s.read_exact(&mut p)?;
    Ok((h[0] & 0x0f, p))
}

/// What the server answers to what the attacker sent: the protocol `Close`
/// code (from its binary message) and the WebSocket close status.
fn close_of(s: &mut TcpStream) -> (Option<u32>, Option<u16>) {
    let (mut code, mut status) = (None, None);
    while let Ok((op, p)) = read_ws(s) {
        match op {
            2 => {
                let f: Frame = decode_frame(p.into(), 1 << 20).unwrap().into();
                if let Some(Body::Close(c)) = f.body {
                    code = Some(c.code);
                }
            }
            8 => {
                status = p.get(..2).map(|b| u16::from_be_bytes([b[0], b[1]]));
                break;
            }
            _ => {}
        }
    }
    (code, status)
}

// ---- a victim on plain TCP, on the attacker's thread ----

struct Victim(TcpStream);

impl Victim {
    fn login(addr: SocketAddr, uid: u64) -> Victim {
        let s = TcpStream::connect(addr).unwrap();
        s.set_nodelay(true).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut v = Victim(s);
        v.send(&login_frame(uid));
        let f = v.next().expect("login reply");
        assert!(matches!(f.body, Some(Body::LoginReply(_))), "{f:?}");
        v
    }

    fn send(&mut self, frame: &[u8]) {
        let mut out = (frame.len() as u32).to_be_bytes().to_vec();
        out.extend_from_slice(frame);
        self.0.write_all(&out).unwrap();
    }

    fn next(&mut self) -> std::io::Result<Frame> {
        let mut len = [0u8; 4];
        self.0.read_exact(&mut len)?;
        let mut f = vec![0u8; u32::from_be_bytes(len) as usize];
        self.0.read_exact(&mut f)?;
        Ok(decode_frame(f.into(), 1 << 20).unwrap().into())
    }

    /// A protocol ping's round trip, or `None` when no pong came within
    /// `limit`.
    fn ping(&mut self, nonce: u64, limit: Duration) -> Option<Duration> {
        self.0.set_read_timeout(Some(limit)).unwrap();
        let start = Instant::now();
        self.send(&encode_frame(&Frame {
            request_id: 0,
            body: Some(Body::Ping(wire::Ping { nonce })),
        }));
        loop {
            match self.next() {
                Ok(Frame {
                    body: Some(Body::Pong(p)),
                    ..
                }) if p.nonce == nonce => return Some(start.elapsed()),
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
    }
}

/// Pings the victim every 100 ms for `total`; the worst round trip (`None`:
/// one got no pong within a second).
fn worst_ping(victim: &mut Victim, total: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut worst = Duration::ZERO;
    let mut nonce = 100;
    while start.elapsed() < total {
        nonce += 1;
        worst = worst.max(victim.ping(nonce, Duration::from_secs(1))?);
        std::thread::sleep(Duration::from_millis(100));
    }
    Some(worst)
}

/// Writes `batch` over and over until `stop` (or the socket breaks).
fn flood(
    mut s: TcpStream,
    batch: Vec<u8>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<usize> {
    std::thread::spawn(move || {
        let mut sent = 0;
        s.set_write_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        while !stop.load(Ordering::Relaxed) {
            match s.write(&batch) {
                Ok(n) => sent += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => {}
                Err(_) => break,
            }
        }
        sent
    })
}

// ======================================================================
// Problems (these fail on the server as probed)
// ======================================================================

/// A logged-in WebSocket client sends pings and never reads. tungstenite
/// queues each automatic pong in its own write buffer (unbounded by
/// default: `max_write_buffer_size` is `usize::MAX`), the socket is full,
/// the server's writer has nothing of its own to send (so no slow-consumer
/// or write timeout runs), and pings count as activity (no idle timeout):
/// the buffer grows by one pong per ping for as long as the link lives.
/// Probed: 864 MB of pings in 8 s grew hummer-server to 817 MB (wss: 543 MB).
#[test]
fn a_websocket_pinger_that_never_reads_does_not_grow_the_server() {
    let _serial = serial();
    let server = spawn();
    let mut ws = ws_open(server.websocket_addr().unwrap(), Some(4096));
    ws.write_all(&binary(&login_frame(5))).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let before = rss();
    // 125-byte pings (the largest control frame), 192 MiB of them at most.
    let batch: Vec<u8> = ws_frame(true, 0, 9, &[b'p'; 125], true, None).repeat(2_000);
    ws.set_write_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let (start, mut sent) = (Instant::now(), 0usize);
    while sent < 192 * MIB && start.elapsed() < Duration::from_secs(6) {
        match ws.write(&batch) {
            Ok(n) => sent += n,
            // The server stopped reading: bounded.
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => break,
            // Closed by the server: bounded.
            Err(_) => break,
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    let grown = rss().saturating_sub(before);
    eprintln!(
        "pinger: {} MiB of pings sent, the process grew {} KiB",
        sent / MIB,
        grown / 1024
    );
    assert!(
        grown < 32 * MIB,
        "{} MiB of unread pongs sent ({} MiB of pings): the server grew by {} MiB",
        sent / MIB,
        sent / MIB,
        grown / MIB
    );
}

/// A WebSocket client opens a binary message with a non-final frame, then
/// streams empty continuation frames. The message never grows (the 64 KiB
/// bound is never reached) and never completes, so `receiver.next()` never
/// returns: tungstenite loops over the frames inside one poll as long as the
/// socket has bytes, and every other connection of the thread waits.
/// Probed: a victim's ping took 7.7 s, then none came back within 10 s
/// (ws:// and wss://).
#[test]
fn empty_continuation_frames_do_not_starve_the_thread() {
    let _serial = serial();
    let server = spawn();
    let mut victim = Victim::login(server.local_addr(), 1);
    let mut ws = ws_open(server.websocket_addr().unwrap(), None);
    ws.write_all(&binary(&login_frame(2))).unwrap();
    ws.write_all(&ws_frame(false, 0, 2, b"\x08", true, None))
        .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let stop = Arc::new(AtomicBool::new(false));
    let empty = ws_frame(false, 0, 0, b"", true, None).repeat(40_000);
    let attacker = flood(ws, empty, stop.clone());
    std::thread::sleep(Duration::from_millis(200));
    let worst = worst_ping(&mut victim, Duration::from_millis(1200));
    stop.store(true, Ordering::Relaxed);
    let sent = attacker.join().unwrap();
    eprintln!(
        "continuation flood: {} MiB sent, victim's worst ping {worst:?}",
        sent / MIB
    );
    assert!(
        worst.is_some_and(|w| w < Duration::from_millis(500)),
        "the victim's worst ping during {} MiB of empty continuation frames: {worst:?}",
        sent / MIB
    );
}

/// Clients ask for an 8 MiB file of the web root and do not read the
/// answer. Each request reads the file whole and copies it into its
/// response; both stay until the handshake timeout (10 s) ends the
/// connection: 8 MiB per connection, up to the per-IP cap (1,000: 8 GiB
/// from one address). Probed: 300 connections, 2.3 GB for 10 s.
#[test]
fn unread_page_answers_do_not_hold_a_file_per_connection() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("big.bin"), vec![7u8; 8 * 1024 * 1024]).unwrap();
    let server = spawn_with(WebSocketOptions::default().with_web_root(dir.path()), 1_000);
    let addr = server.websocket_addr().unwrap();
    let before = rss();
    let mut held = Vec::new();
    for _ in 0..24 {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        s.set_recv_buffer_size(4096).unwrap();
        s.connect(&addr.into()).unwrap();
        let mut s: TcpStream = s.into();
        s.write_all(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        held.push(s);
    }
    std::thread::sleep(Duration::from_millis(1000));
    let grown = rss().saturating_sub(before);
    eprintln!(
        "24 unread 8 MiB answers: the process grew {} KiB",
        grown / 1024
    );
    assert!(
        grown < 48 * MIB,
        "24 unread requests for an 8 MiB page grew the server by {} MiB",
        grown / MIB
    );
    drop(held);
}

/// One client asks for an 8 MiB page in a loop (closing each connection
/// at once). The file is read and copied on the connection's thread, and
/// the links of that thread wait. Probed: a victim's single ping took 13 s.
#[test]
fn big_page_requests_do_not_starve_the_links_of_the_thread() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("big.bin"), vec![7u8; 8 * 1024 * 1024]).unwrap();
    let server = spawn_with(WebSocketOptions::default().with_web_root(dir.path()), 1_000);
    let addr = server.websocket_addr().unwrap();
    let mut victim = Victim::login(server.local_addr(), 1);
    let stop = Arc::new(AtomicBool::new(false));
    let attacker = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                if let Ok(mut s) = TcpStream::connect(addr) {
                    let _ = s.write_all(b"GET /big.bin HTTP/1.1\r\n\r\n");
                    n += 1;
                }
            }
            n
        })
    };
    std::thread::sleep(Duration::from_millis(200));
    let worst = worst_ping(&mut victim, Duration::from_millis(1200));
    stop.store(true, Ordering::Relaxed);
    let requests = attacker.join().unwrap();
    eprintln!("page loop: {requests} requests, victim's worst ping {worst:?}");
    assert!(
        worst.is_some_and(|w| w < Duration::from_millis(500)),
        "the victim's worst ping during {requests} requests for an 8 MiB page: {worst:?}"
    );
}

// ======================================================================
// Bounds that hold (regression guards)
// ======================================================================

/// Frame headers announcing more than the bound (up to 2^64 - 1 bytes)
/// are refused from the header, without waiting for (or buffering) the
/// payload: `Close{2001}` then WebSocket status 1009.
#[test]
fn a_frame_header_announcing_huge_lengths_is_refused_at_once() {
    let server = spawn();
    let addr = server.websocket_addr().unwrap();
    for len in [
        65 * 1024 + 1,
        1u64 << 32,
        (1u64 << 63) - 1,
        1u64 << 63,
        u64::MAX,
    ] {
        let mut ws = ws_open(addr, None);
        ws.write_all(&ws_frame(true, 0, 2, b"", true, Some(len)))
            .unwrap();
        assert_eq!(close_of(&mut ws), (Some(2001), Some(1009)), "length {len}");
    }
}

/// Protocol violations end the link with `Close{2001}` and status 1008:
/// an unmasked client frame, reserved bits (a compressed frame without
/// negotiation), reserved opcodes, oversized or fragmented control frames,
/// a stray continuation, a new message inside a fragmented one, a text
/// message.
#[test]
fn websocket_protocol_violations_close_with_2001_and_1008() {
    let server = spawn();
    let addr = server.websocket_addr().unwrap();
    let login = login_frame(1);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("unmasked", ws_frame(true, 0, 2, &login, false, None)),
        ("rsv1", ws_frame(true, 4, 2, &login, true, None)),
        ("rsv3", ws_frame(true, 1, 2, &login, true, None)),
        ("opcode 3", ws_frame(true, 0, 3, b"x", true, None)),
        ("opcode 11", ws_frame(true, 0, 11, b"x", true, None)),
        (
            "ping of 126 bytes",
            ws_frame(true, 0, 9, &[0; 126], true, None),
        ),
        ("fragmented ping", ws_frame(false, 0, 9, b"x", true, None)),
        ("continuation first", ws_frame(true, 0, 0, b"x", true, None)),
        (
            "binary inside a fragmented message",
            [ws_frame(false, 0, 2, b"x", true, None), binary(b"y")].concat(),
        ),
        ("text", ws_frame(true, 0, 1, b"hello", true, None)),
    ];
    for (what, bytes) in cases {
        let mut ws = ws_open(addr, None);
        ws.write_all(&bytes).unwrap();
        assert_eq!(close_of(&mut ws), (Some(2001), Some(1008)), "{what}");
    }
}

/// A message built of 70,000 one-byte fragments passes the 64 KiB bound
/// and is refused (1009) without the server waiting for its end.
#[test]
fn many_small_fragments_are_held_to_the_message_bound() {
    let server = spawn();
    let mut ws = ws_open(server.websocket_addr().unwrap(), None);
    let mut bytes = ws_frame(false, 0, 2, b"x", true, None);
    bytes.extend(ws_frame(false, 0, 0, b"x", true, None).repeat(70_000));
    ws.write_all(&bytes).unwrap();
    assert_eq!(close_of(&mut ws), (Some(2001), Some(1009)));
}

/// A WebSocket close from the client ends the link at once, even when the
/// client keeps its socket open.
#[test]
fn a_websocket_close_ends_the_link_even_if_the_socket_stays_open() {
    let server = spawn();
    let mut ws = ws_open(server.websocket_addr().unwrap(), None);
    ws.write_all(&binary(&login_frame(3))).unwrap();
    assert_eq!(read_ws(&mut ws).unwrap().0, 2, "login reply");
    ws.write_all(&ws_frame(true, 0, 8, &1000u16.to_be_bytes(), true, None))
        .unwrap();
    let start = Instant::now();
    while read_ws(&mut ws).is_ok() {}
    assert!(start.elapsed() < Duration::from_secs(2));
    let deadline = Instant::now() + Duration::from_secs(2);
    while server.stats().open_connections > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(server.stats().open_connections, 0);
}

/// The HTTP head is bounded: an endless one gets 431 and is closed after
/// 8 KiB; more than 32 headers get 400.
#[test]
fn endless_heads_and_too_many_headers_are_refused() {
    let server = spawn();
    let addr = server.websocket_addr().unwrap();
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(3))).unwrap();
    let _ = s.write_all(b"GET / HTTP/1.1\r\n");
    let line = [b"X: ".as_slice(), &[b'a'; 1000], b"\r\n"].concat();
    let mut sent = 0;
    while sent < 64 * MIB {
        match s.write(&line) {
            Ok(n) => sent += n,
            Err(_) => break,
        }
    }
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    assert!(
        answer.starts_with(b"HTTP/1.1 431"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    assert!(sent < 64 * MIB, "the server kept reading an endless head");

    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut req = b"GET / HTTP/1.1\r\n".to_vec();
    for i in 0..33 {
        req.extend_from_slice(format!("X{i}: y\r\n").as_bytes());
    }
    req.extend_from_slice(b"\r\n");
    s.write_all(&req).unwrap();
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    assert!(
        answer.starts_with(b"HTTP/1.1 400"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
}

/// Connections that stall in their handshake count against the per-IP
/// cap: one more is closed at once, nothing written.
#[test]
fn stalled_handshakes_count_against_the_per_ip_cap() {
    let server = spawn_with(WebSocketOptions::default(), 3);
    let addr = server.websocket_addr().unwrap();
    let held: Vec<_> = (0..3)
        .map(|_| {
            let mut s = TcpStream::connect(addr).unwrap();
            s.write_all(b"GET /v1/ws HTTP/1.1\r\n").unwrap();
            s
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(2);
    while server.stats().open_connections < 3 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut extra = TcpStream::connect(addr).unwrap();
    extra
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(
        extra.read(&mut buf).unwrap_or(0),
        0,
        "closed, nothing written"
    );
    assert!(server.stats().refused_connections >= 1);
    drop(held);
}

/// Methods other than GET and HEAD get 405; HEAD gets no body; a second,
/// pipelined request on the same connection is never answered.
#[test]
fn methods_and_pipelined_requests() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("index.html"), "hello").unwrap();
    let server = spawn_with(WebSocketOptions::default().with_web_root(dir.path()), 1_000);
    let addr = server.websocket_addr().unwrap();
    let ask = |req: &[u8]| {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        s.write_all(req).unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    };
    for m in ["POST", "PUT", "OPTIONS", "DELETE", "TRACE", "CONNECT"] {
        let a =
            ask(format!("{m} /index.html HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello").as_bytes());
        assert!(a.starts_with("HTTP/1.1 405"), "{m}: {a}");
    }
    let a = ask(b"HEAD /index.html HTTP/1.1\r\n\r\n");
    assert!(
        a.starts_with("HTTP/1.1 200") && a.ends_with("\r\n\r\n"),
        "{a}"
    );
    let a = ask(b"GET /index.html HTTP/1.1\r\n\r\nGET /index.html HTTP/1.1\r\n\r\n");
    assert_eq!(a.matches("HTTP/1.1 200").count(), 1, "{a}");
    for bad in ["/../index.html", "/%2e%2e/x", "/.hidden", "//etc/passwd"] {
        let a = ask(format!("GET {bad} HTTP/1.1\r\n\r\n").as_bytes());
        assert!(a.starts_with("HTTP/1.1 404"), "{bad}: {a}");
    }
}

/// A client that has not logged in streams `Pong` frames over TLS (the
/// gateway answers nothing) as fast as it can encrypt them. A TLS read
/// never fills the shared read buffer (rustls hands out a record at a
/// time), so the reader must tell "more is waiting" from whether the read
/// had to wait, or it never lets the thread's other links run. The victim,
/// a client of the same thread, keeps getting its replies.
#[test]
fn a_tls_flood_does_not_starve_the_thread() {
    use futures_rustls::rustls::{self, ClientConnection, RootCertStore, StreamOwned};
    use hummer_channel::adapters::blocking::Client;
    use hummer_channel::adapters::server_tcp::ServerTls;
    use hummer_channel::adapters::Endpoint;
    use hummer_channel::client::SessionConfig;
    use rcgen::{CertificateParams, KeyPair};

    let _serial = serial();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".into()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let runner = RunnerConfig::default().with_threads(1).with_tls(
        ServerTls::from_pem(cert.pem().as_bytes(), key.serialize_pem().as_bytes()).unwrap(),
    );
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let server = ServerHandle::spawn_on(
        ServerConfig::demo(),
        runner.clone(),
        Listeners::new(bind(any, &runner).unwrap()),
    )
    .unwrap();
    let addr = server.local_addr();

    let pong = encode_frame(&Frame {
        request_id: 0,
        body: Some(Body::Pong(wire::Pong { nonce: 1 })),
    });
    let mut batch = Vec::new();
    while batch.len() < 64 * 1024 {
        batch.extend_from_slice(&(pong.len() as u32).to_be_bytes());
        batch.extend_from_slice(&pong);
    }
    let mut roots = RootCertStore::empty();
    roots.add(cert.der().clone()).unwrap();
    let config = Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth(),
    );

    let victim = Client::connect_to(
        Endpoint::parse(&format!("tls://localhost:{}", addr.port()))
            .unwrap()
            .with_ca_pem(cert.pem()),
        SessionConfig::new(DEMO_APPID),
    )
    .unwrap();
    victim.login(hummer_channel::Uid(1), None, None).unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let flooder = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let conn = ClientConnection::new(config, "localhost".try_into().unwrap()).unwrap();
            let mut tls = StreamOwned::new(conn, TcpStream::connect(addr).unwrap());
            let mut sent = 0usize;
            while !stop.load(Ordering::Relaxed) {
                match tls.write_all(&batch) {
                    Ok(()) => sent += batch.len(),
                    Err(_) => break,
                }
            }
            sent
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let start = Instant::now();
    let mut worst = Duration::ZERO;
    let mut calls = 0;
    while start.elapsed() < Duration::from_secs(2) {
        let t = Instant::now();
        victim.get_instance_info().expect("the victim is served");
        worst = worst.max(t.elapsed());
        calls += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::Relaxed);
    let sent = flooder.join().unwrap();
    victim.close();
    eprintln!(
        "TLS flood: {} MiB sent, {calls} victim calls, worst reply {worst:?}",
        sent / MIB
    );
    assert!(sent > 10 * MIB, "the flooder sent {sent} bytes");
    assert!(calls >= 10, "{calls} calls in 2 s");
    assert!(worst < Duration::from_millis(500), "worst reply {worst:?}");
}
