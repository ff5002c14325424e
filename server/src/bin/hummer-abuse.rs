//! `hummer-abuse`: runs one attack of issue 10 ("Hardening") against a
//! running `hummer-server` on loopback for a bounded time, and prints one
//! table row: the server's peak RSS growth, a healthy client's login time
//! and ping p99 measured during the attack, what happened to the attacker,
//! and which targets were missed. `bench/abuse.sh` starts a server per
//! attack and prints the table.
//!
//! ```text
//! hummer-abuse ATTACK --addr ADDR --server-pid PID --secret S
//!              [--secs 10] [--protocol 2] [--appid 10000] [--other-appid 10001]
//!              [--max-queued-bytes 4194304] [--per-ip-cap 1000] [--rss-cap-mib 3072]
//!              [--attacker-ip 127.0.0.2] [--helper-ip 127.0.0.3]
//! hummer-abuse list
//! ```
//!
//! The server must serve `--appid` (tokens signed with `--secret`) and
//! `--other-appid`, both in appid mode (`--app A:S --app B:S2 --appid-mode`). Attackers connect from
//! `--attacker-ip` and the clients an attack needs (publishers, channel
//! members, victims) from `--helper-ip`, both loopback addresses other than
//! the healthy client's 127.0.0.1, so that per-address caps count the
//! attacker alone, as they would for distinct hosts.
//!
//! `--protocol 1` speaks version 1 (no message ids; login version 1), for the
//! server of the landing commit. Every loop is bounded in count and time, and
//! an attack stops early if the server's RSS passes `--rss-cap-mib`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use hummer_channel::server::mint_token;
use hummer_channel::wire::{
    self, decode_frame, encode_frame, write_length_prefixed, Body, ChannelKey, ChatMessage, Frame,
    FrameDecoder,
};

const MAX_FRAME: usize = 64 * 1024;
/// Any single blocking read waits at most this long.
const READ_TICK: Duration = Duration::from_millis(100);
/// A request of the setup (logins, joins) must be answered within this.
const SETUP_WAIT: Duration = Duration::from_secs(5);
/// How often the healthy client pings, and how often a fresh login is timed.
const PING_EVERY: Duration = Duration::from_millis(10);
const LOGIN_EVERY: Duration = Duration::from_millis(250);
/// The targets of the issue.
const LOGIN_TARGET: Duration = Duration::from_millis(500);
const P99_TARGET: Duration = Duration::from_millis(20);
const HALF_FRAMES_TARGET_KIB: u64 = 50 * 1000 * 1000 / 1024;
/// The rate-limit code (OPERATION_TOO_OFTEN).
const RATE_LIMITED: &[u32] = &[4003];

const ATTACKS: &[(&str, &str)] = &[
    (
        "a-pings",
        "16 links never log in, send empty Pings, never read",
    ),
    (
        "b-never-reader",
        "a logged-in member of a busy channel never reads",
    ),
    (
        "c-half-frames",
        "1,000 links, half of a 64 KiB frame each, no login",
    ),
    (
        "d-big-prelogin",
        "64 links send 64 KiB frames of 6,000 attributes, no login",
    ),
    (
        "e-retention",
        "20 instances send reliable 32 KB P2P to fresh uids",
    ),
    (
        "f-attr-notify",
        "notified 8 KiB attribute writes in a 100-member channel",
    ),
    (
        "g1-queries",
        "online status, user list and count queries, pipelined",
    ),
    ("g2-join-leave", "join and leave, pipelined"),
    ("g3-fetch", "fetches of a 2 MB channel history, pipelined"),
    (
        "h-conn-flood",
        "twice the per-address cap of links from one address",
    ),
    (
        "i-expired-token",
        "a login whose token has expired keeps sending",
    ),
];

// ------------------------------------------------------------- settings --

struct Ctx {
    addr: SocketAddr,
    pid: u32,
    secs: Duration,
    proto: u32,
    appid: u32,
    secret: String,
    other_appid: u32,
    attacker_ip: IpAddr,
    helper_ip: IpAddr,
    max_queued: u64,
    per_ip_cap: usize,
    rss_cap_kib: u64,
    /// Set when the attack must end (its time is up, or the RSS cap).
    stop: Arc<AtomicBool>,
}

impl Ctx {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Sleeps up to `d`, less if the attack is stopped.
    fn nap(&self, d: Duration) {
        let until = Instant::now() + d;
        while !self.stopped() && Instant::now() < until {
            thread::sleep(Duration::from_millis(20).min(until - Instant::now()));
        }
    }

    /// A message id for a send: unique, non-zero; 0 in version 1.
    fn message_id(&self) -> u64 {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        if self.proto < 2 {
            return 0;
        }
        let salt = u64::from(std::process::id()) << 40;
        salt ^ NEXT.fetch_add(1, Ordering::Relaxed)
    }

    fn login_body(&self, appid: u32, uid: u64, token: String) -> Body {
        Body::Login(wire::LoginRequest {
            protocol_version: self.proto,
            appid,
            uid,
            token,
            ..Default::default()
        })
    }
}

fn key(id: &str) -> ChannelKey {
    ChannelKey {
        region: wire::Region::Cn as i32,
        channel_id: id.to_owned(),
    }
}

fn chat(len: usize) -> Option<ChatMessage> {
    Some(ChatMessage {
        r#type: "t".into(),
        content: Bytes::from(vec![b'x'; len]),
        ..Default::default()
    })
}

fn unix_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

// ------------------------------------------------------------- a client --

/// One raw-protocol connection (blocking, with short read timeouts).
struct Conn {
    s: TcpStream,
    dec: FrameDecoder,
    rid: u64,
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

impl Conn {
    /// Connects from `from` (a loopback address) when given.
    fn open(addr: SocketAddr, from: Option<IpAddr>) -> io::Result<Conn> {
        use socket2::{Domain, Socket, Type};
        let s = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
        if let Some(ip) = from {
            s.bind(&SocketAddr::new(ip, 0).into())?;
        }
        s.connect_timeout(&addr.into(), Duration::from_secs(5))?;
        let s: TcpStream = s.into();
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(READ_TICK))?;
        s.set_write_timeout(Some(Duration::from_secs(2)))?;
        Ok(Conn {
            s,
            dec: FrameDecoder::new(MAX_FRAME),
            rid: 0,
        })
    }

    fn encode(&mut self, body: Body, out: &mut BytesMut) -> u64 {
        self.rid += 1;
        let f = encode_frame(&Frame {
            request_id: self.rid,
            body: Some(body),
        });
        write_length_prefixed(&f, out);
        self.rid
    }

    fn send(&mut self, body: Body) -> io::Result<u64> {
        let mut out = BytesMut::new();
        let rid = self.encode(body, &mut out);
        self.s.write_all(&out)?;
        Ok(rid)
    }

    /// The next frame within `within`: `Ok(None)` on timeout, an error on
    /// EOF or reset.
    fn frame(&mut self, within: Duration) -> io::Result<Option<Frame>> {
        let until = Instant::now() + within;
        loop {
            if let Some(f) = self.dec.next_frame().map_err(io::Error::other)? {
                return decode_frame(f, MAX_FRAME)
                    .map(|f| Some(Frame::from(f)))
                    .map_err(io::Error::other);
            }
            if Instant::now() >= until {
                return Ok(None);
            }
            let mut chunk = [0u8; 64 * 1024];
            match self.s.read(&mut chunk) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => self.dec.extend(&chunk[..n]),
                Err(e) if is_timeout(&e) => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Sends `body` and waits for its reply (other frames are skipped).
    fn request(&mut self, body: Body, within: Duration) -> io::Result<Body> {
        let rid = self.send(body)?;
        let until = Instant::now() + within;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "no reply"));
            }
            match self.frame(left)? {
                Some(f) if f.request_id == rid => {
                    return f.body.ok_or_else(|| io::Error::other("no body"))
                }
                Some(Frame {
                    body: Some(Body::Close(c)),
                    ..
                }) => return Err(io::Error::other(format!("closed: Close {}", c.code))),
                _ => {}
            }
        }
    }

    fn login(&mut self, ctx: &Ctx, appid: u32, uid: u64, token: String) -> io::Result<()> {
        match self.request(ctx.login_body(appid, uid, token), SETUP_WAIT)? {
            Body::LoginReply(_) => Ok(()),
            other => Err(io::Error::other(format!(
                "login refused: {}",
                describe(&other)
            ))),
        }
    }

    fn join(&mut self, channel: &str) -> io::Result<()> {
        match self.request(
            Body::Join(wire::JoinRequest {
                channel: Some(key(channel)),
                ..Default::default()
            }),
            SETUP_WAIT,
        )? {
            Body::JoinReply(_) => Ok(()),
            other => Err(io::Error::other(format!(
                "join refused: {}",
                describe(&other)
            ))),
        }
    }

    fn reader(&self) -> io::Result<TcpStream> {
        self.s.try_clone()
    }
}

fn describe(b: &Body) -> String {
    match b {
        Body::Error(e) => format!("error {}", e.code),
        Body::Close(c) => format!("Close {}", c.code),
        other => format!("{:?}", other.kind()),
    }
}

// -------------------------------------------------- counting what comes --

/// What a reader thread saw on one connection.
#[derive(Default)]
struct Tally {
    replies: AtomicU64,
    ok_replies: AtomicU64,
    pushes: AtomicU64,
    bytes: AtomicU64,
    /// `ErrorReply` codes and their counts.
    errors: Mutex<BTreeMap<u32, u64>>,
    /// The `Close` code received, if any.
    close: Mutex<Option<u32>>,
    /// The stream ended (EOF, reset, or a framing error).
    ended: AtomicBool,
    /// When the first `Close`, or `ErrorReply` other than the rate limit, came.
    first_refusal: Mutex<Option<Instant>>,
}

impl Tally {
    fn note_refusal(&self) {
        let mut f = self.first_refusal.lock().unwrap();
        if f.is_none() {
            *f = Some(Instant::now());
        }
    }

    fn take(&self, f: &Frame) {
        match &f.body {
            Some(Body::Error(e)) => {
                self.replies.fetch_add(1, Ordering::Relaxed);
                *self.errors.lock().unwrap().entry(e.code).or_default() += 1;
                if !RATE_LIMITED.contains(&e.code) {
                    self.note_refusal();
                }
            }
            Some(Body::Close(c)) => {
                *self.close.lock().unwrap() = Some(c.code);
                self.note_refusal();
            }
            Some(_) if f.request_id != 0 => {
                self.replies.fetch_add(1, Ordering::Relaxed);
                self.ok_replies.fetch_add(1, Ordering::Relaxed);
            }
            _ => {
                self.pushes.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Whether an `ErrorReply` with one of `codes` came.
    fn refused_with(&self, codes: &[u32]) -> bool {
        let errors = self.errors.lock().unwrap();
        codes.iter().any(|c| errors.contains_key(c))
    }

    fn replies(&self) -> u64 {
        self.replies.load(Ordering::Relaxed)
    }

    fn ended(&self) -> bool {
        self.ended.load(Ordering::Relaxed)
    }

    /// "ok N, err 4003 xM, Close 4005" and the like.
    fn summary(&self) -> String {
        let mut s = format!("ok {}", self.ok_replies.load(Ordering::Relaxed));
        for (code, n) in self.errors.lock().unwrap().iter() {
            let _ = write!(s, ", err {code} x{n}");
        }
        if let Some(c) = *self.close.lock().unwrap() {
            let _ = write!(s, ", Close {c}");
        } else if self.ended() {
            s.push_str(", EOF");
        }
        s
    }
}

/// Reads `s` until it ends or `stop`, counting into `tally`; `delay` per
/// read slows the reader down (a slow member).
fn spawn_reader(
    mut s: TcpStream,
    tally: Arc<Tally>,
    stop: Arc<AtomicBool>,
    delay: Option<Duration>,
) -> JoinHandle<()> {
    thread::spawn(move || {
        let mut dec = FrameDecoder::new(MAX_FRAME);
        let mut chunk = vec![0u8; 64 * 1024];
        while !stop.load(Ordering::Relaxed) {
            match s.read(&mut chunk) {
                Ok(0) => {
                    tally.ended.store(true, Ordering::Relaxed);
                    break;
                }
                Ok(n) => {
                    tally.bytes.fetch_add(n as u64, Ordering::Relaxed);
                    dec.extend(&chunk[..n]);
                    loop {
                        match dec.next_frame() {
                            Ok(Some(f)) => match decode_frame(f, MAX_FRAME).map(Frame::from) {
                                Ok(f) => tally.take(&f),
                                Err(_) => {
                                    tally.ended.store(true, Ordering::Relaxed);
                                    return;
                                }
                            },
                            Ok(None) => break,
                            Err(_) => {
                                tally.ended.store(true, Ordering::Relaxed);
                                return;
                            }
                        }
                    }
                    if let Some(d) = delay {
                        thread::sleep(d);
                    }
                }
                Err(e) if is_timeout(&e) => {}
                Err(_) => {
                    tally.ended.store(true, Ordering::Relaxed);
                    break;
                }
            }
        }
        // Stopped by the attack's end: the link did not end.
        if !stop.load(Ordering::Relaxed) {
            tally.ended.store(true, Ordering::Relaxed);
        }
    })
}

/// Sends requests made by `next` on `conn`, at most `window` unanswered,
/// until the attack stops or the link ends. Returns the requests sent.
fn pipeline(
    ctx: &Ctx,
    conn: &mut Conn,
    tally: &Tally,
    window: u64,
    mut next: impl FnMut(u64) -> Body,
) -> u64 {
    let mut sent = 0u64;
    let mut out = BytesMut::new();
    while !ctx.stopped() && !tally.ended() {
        let room = window.saturating_sub(sent.saturating_sub(tally.replies()));
        if room == 0 {
            thread::sleep(Duration::from_micros(200));
            continue;
        }
        out.clear();
        for _ in 0..room.min(16) {
            let body = next(sent);
            conn.encode(body, &mut out);
            sent += 1;
        }
        if let Err(e) = conn.s.write_all(&out) {
            if !is_timeout(&e) {
                break;
            }
            // The server stopped reading: stop too (a partial write broke
            // the framing anyway).
            break;
        }
    }
    sent
}

// ------------------------------------------------------ the measurements --

fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Samples the server's VmRSS every 50 ms; stops the attack past the cap.
fn spawn_rss_sampler(
    pid: u32,
    cap_kib: u64,
    stop: Arc<AtomicBool>,
    done: Arc<AtomicBool>,
) -> JoinHandle<u64> {
    thread::spawn(move || {
        let mut peak = 0;
        while !done.load(Ordering::Relaxed) {
            if let Some(kib) = status_kib(pid, "VmRSS:") {
                peak = peak.max(kib);
                if kib > cap_kib {
                    stop.store(true, Ordering::Relaxed);
                }
            }
            thread::sleep(Duration::from_millis(50));
        }
        peak
    })
}

#[derive(Default)]
struct Health {
    rtts: Vec<Duration>,
    lost_pings: u64,
    logins: Vec<Duration>,
    failed_logins: Vec<String>,
}

/// The healthy client: logged in before the attack, it pings every 10 ms;
/// another thread times a fresh login (connect + LoginReply) every 250 ms.
fn spawn_health(ctx: &Ctx, done: Arc<AtomicBool>) -> io::Result<JoinHandle<Health>> {
    let mut pinger = Conn::open(ctx.addr, None)?;
    let login = ctx.login_body(ctx.appid, 1, String::new());
    match pinger.request(login, SETUP_WAIT)? {
        Body::LoginReply(_) => {}
        other => {
            return Err(io::Error::other(format!(
                "healthy login: {}",
                describe(&other)
            )))
        }
    }
    let (addr, proto, appid) = (ctx.addr, ctx.proto, ctx.appid);
    let logins = {
        let done = done.clone();
        thread::spawn(move || {
            let mut times = Vec::new();
            let mut failed = Vec::new();
            let mut uid = 100_000u64;
            while !done.load(Ordering::Relaxed) {
                uid += 1;
                let t = Instant::now();
                let body = Body::Login(wire::LoginRequest {
                    protocol_version: proto,
                    appid,
                    uid,
                    ..Default::default()
                });
                match Conn::open(addr, None).and_then(|mut c| c.request(body, SETUP_WAIT)) {
                    Ok(Body::LoginReply(_)) => times.push(t.elapsed()),
                    Ok(other) => failed.push(describe(&other)),
                    Err(e) => failed.push(e.to_string()),
                }
                thread::sleep(LOGIN_EVERY);
            }
            (times, failed)
        })
    };
    Ok(thread::spawn(move || {
        let mut h = Health::default();
        let mut nonce = 0u64;
        while !done.load(Ordering::Relaxed) {
            nonce += 1;
            let t = Instant::now();
            match pinger.request(Body::Ping(wire::Ping { nonce }), Duration::from_secs(2)) {
                Ok(Body::Pong(p)) if p.nonce == nonce => h.rtts.push(t.elapsed()),
                _ => {
                    h.lost_pings += 1;
                    // A link that failed is replaced.
                    if let Ok(mut c) = Conn::open(addr, None) {
                        let body = Body::Login(wire::LoginRequest {
                            protocol_version: proto,
                            appid,
                            uid: 1,
                            ..Default::default()
                        });
                        if c.request(body, SETUP_WAIT).is_ok() {
                            pinger = c;
                        }
                    }
                }
            }
            thread::sleep(PING_EVERY);
        }
        let (times, failed) = logins.join().unwrap_or_default();
        h.logins = times;
        h.failed_logins = failed;
        h
    }))
}

fn percentile(v: &mut [Duration], p: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    v.sort_unstable();
    let i = ((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1;
    v[i]
}

/// What an attack reports beyond the common measurements.
struct Outcome {
    attacker: String,
    /// Extra targets: a name and whether it was met.
    targets: Vec<(String, bool)>,
    /// The most the server's RSS may grow during this attack (KiB), if the
    /// issue sets a bound.
    rss_target_kib: Option<u64>,
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

fn run(name: &str, ctx: &Ctx) -> Result<(), String> {
    let attack: fn(&Ctx) -> io::Result<Outcome> = match name {
        "a-pings" => attack_pings,
        "b-never-reader" => attack_never_reader,
        "c-half-frames" => attack_half_frames,
        "d-big-prelogin" => attack_big_prelogin,
        "e-retention" => attack_retention,
        "f-attr-notify" => attack_attr_notify,
        "g1-queries" => attack_queries,
        "g2-join-leave" => attack_join_leave,
        "g3-fetch" => attack_fetch,
        "h-conn-flood" => attack_conn_flood,
        "i-expired-token" => attack_expired_token,
        other => {
            return Err(format!(
                "unknown attack {other:?} (see `hummer-abuse list`)"
            ))
        }
    };
    let base = status_kib(ctx.pid, "VmRSS:").ok_or("cannot read the server's VmRSS")?;
    let done = Arc::new(AtomicBool::new(false));
    let sampler = spawn_rss_sampler(
        ctx.pid,
        base + ctx.rss_cap_kib,
        ctx.stop.clone(),
        done.clone(),
    );
    let health = spawn_health(ctx, done.clone()).map_err(|e| format!("healthy client: {e}"))?;
    // The attack's clock: it stops the attack after `secs`.
    let timer = {
        let (stop, secs) = (ctx.stop.clone(), ctx.secs);
        thread::spawn(move || {
            let until = Instant::now() + secs;
            while !stop.load(Ordering::Relaxed) && Instant::now() < until {
                thread::sleep(Duration::from_millis(20));
            }
            stop.store(true, Ordering::Relaxed);
        })
    };
    let started = Instant::now();
    let outcome = attack(ctx);
    ctx.stop.store(true, Ordering::Relaxed);
    let _ = timer.join();
    let ran = started.elapsed();
    done.store(true, Ordering::Relaxed);
    let mut h = health.join().map_err(|_| "healthy client panicked")?;
    let sampled = sampler.join().unwrap_or(0);
    let hwm = status_kib(ctx.pid, "VmHWM:").unwrap_or(0);
    let peak = sampled.max(hwm);
    let growth_kib = peak.saturating_sub(base);
    let outcome = outcome.unwrap_or_else(|e| Outcome {
        attacker: format!("attack failed: {e}"),
        targets: vec![("attack ran".to_owned(), false)],
        rss_target_kib: None,
    });
    let p99 = percentile(&mut h.rtts, 0.99);
    let login_max = h.logins.iter().copied().max().unwrap_or_default();
    let mut login_p50 = h.logins.clone();
    let login_p50 = percentile(&mut login_p50, 0.5);
    let mut missed = Vec::new();
    if login_max >= LOGIN_TARGET || !h.failed_logins.is_empty() || h.logins.is_empty() {
        missed.push("login<500ms".to_owned());
    }
    if p99 >= P99_TARGET || h.lost_pings > 0 {
        missed.push("p99<20ms".to_owned());
    }
    if let Some(max) = outcome.rss_target_kib {
        if growth_kib > max {
            missed.push(format!("RSS growth<={:.1}MiB", max as f64 / 1024.0));
        }
    }
    for (t, ok) in &outcome.targets {
        if !ok {
            missed.push(t.clone());
        }
    }
    let mut attacker = outcome.attacker;
    if !h.failed_logins.is_empty() {
        let _ = write!(
            attacker,
            "; healthy logins failed x{} ({})",
            h.failed_logins.len(),
            h.failed_logins[0]
        );
    }
    if h.lost_pings > 0 {
        let _ = write!(attacker, "; healthy pings lost x{}", h.lost_pings);
    }
    // One row: attack | secs | RSS growth | login max (p50) | ping p99 (n) |
    // attacker | targets missed.
    println!(
        "{name} | {:.1} | {:.1} MiB | {} ({}) ms | {} ms (n={}) | {attacker} | {}",
        ran.as_secs_f64(),
        growth_kib as f64 / 1024.0,
        ms(login_max),
        ms(login_p50),
        ms(p99),
        h.rtts.len(),
        if missed.is_empty() {
            "met".to_owned()
        } else {
            format!("MISSED {}", missed.join(", "))
        },
    );
    Ok(())
}

// -------------------------------------------------------------- attacks --

/// Collects the outcome of attacker threads: counts of how each link ended.
#[derive(Default)]
struct Ends {
    links: u64,
    closed: u64,
    codes: BTreeMap<u32, u64>,
    open: u64,
}

impl Ends {
    fn add(&mut self, end: LinkEnd) {
        self.links += 1;
        match end {
            LinkEnd::Open => self.open += 1,
            LinkEnd::Closed(code) => {
                self.closed += 1;
                if let Some(c) = code {
                    *self.codes.entry(c).or_default() += 1;
                }
            }
        }
    }

    fn summary(&self) -> String {
        let mut s = format!("{}/{} links closed by the server", self.closed, self.links);
        for (c, n) in &self.codes {
            let _ = write!(s, ", Close {c} x{n}");
        }
        s
    }
}

enum LinkEnd {
    Open,
    /// Closed, with the `Close` code seen if any.
    Closed(Option<u32>),
}

/// Reads what `s` holds for up to `within`: whether the server closed it,
/// and the last `Close` code on the way.
fn link_end(s: &mut TcpStream, within: Duration) -> LinkEnd {
    let _ = s.set_read_timeout(Some(Duration::from_millis(50)));
    let mut dec = FrameDecoder::new(MAX_FRAME);
    let mut chunk = vec![0u8; 64 * 1024];
    let mut code = None;
    let until = Instant::now() + within;
    let mut quiet = 0;
    while Instant::now() < until {
        match s.read(&mut chunk) {
            Ok(0) => return LinkEnd::Closed(code),
            Ok(n) => {
                quiet = 0;
                dec.extend(&chunk[..n]);
                while let Ok(Some(f)) = dec.next_frame() {
                    if let Ok(Frame {
                        body: Some(Body::Close(c)),
                        ..
                    }) = decode_frame(f, MAX_FRAME).map(Frame::from)
                    {
                        code = Some(c.code);
                    }
                }
            }
            Err(e) if is_timeout(&e) => {
                // Nothing more for a while, and no end: still open.
                quiet += 1;
                if quiet >= 4 {
                    return if code.is_some() {
                        LinkEnd::Closed(code)
                    } else {
                        LinkEnd::Open
                    };
                }
            }
            Err(_) => return LinkEnd::Closed(code),
        }
    }
    LinkEnd::Open
}

/// Whether the server closed `s`, without waiting: reads what is there
/// (up to 1 MB) without blocking.
fn probe_link(s: &mut TcpStream) -> LinkEnd {
    if s.set_nonblocking(true).is_err() {
        return LinkEnd::Closed(None);
    }
    let mut dec = FrameDecoder::new(MAX_FRAME);
    let mut chunk = vec![0u8; 64 * 1024];
    let mut code = None;
    let mut read = 0;
    let end = loop {
        match s.read(&mut chunk) {
            Ok(0) => break LinkEnd::Closed(code),
            Ok(n) => {
                read += n;
                dec.extend(&chunk[..n]);
                while let Ok(Some(f)) = dec.next_frame() {
                    if let Ok(Frame {
                        body: Some(Body::Close(c)),
                        ..
                    }) = decode_frame(f, MAX_FRAME).map(Frame::from)
                    {
                        code = Some(c.code);
                    }
                }
                if read > 1_000_000 {
                    break LinkEnd::Open;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                break match code {
                    Some(c) => LinkEnd::Closed(Some(c)),
                    None => LinkEnd::Open,
                }
            }
            Err(_) => break LinkEnd::Closed(code),
        }
    };
    let _ = s.set_nonblocking(false);
    end
}

/// (a) 16 links that never log in send empty Pings as fast as the server
/// takes them and never read.
fn attack_pings(ctx: &Ctx) -> io::Result<Outcome> {
    let ping = encode_frame(&Frame {
        request_id: 0,
        body: Some(Body::Ping(wire::Ping { nonce: 0 })),
    });
    let mut blob = BytesMut::new();
    while blob.len() < 64 * 1024 {
        write_length_prefixed(&ping, &mut blob);
    }
    let blob = blob.freeze();
    let sent = Arc::new(AtomicU64::new(0));
    let threads: Vec<JoinHandle<LinkEnd>> = (0..16)
        .map(|_| {
            let mut c = Conn::open(ctx.addr, Some(ctx.attacker_ip));
            let (blob, sent, stop) = (blob.clone(), sent.clone(), ctx.stop.clone());
            thread::spawn(move || {
                let Ok(c) = c.as_mut() else {
                    return LinkEnd::Closed(None);
                };
                let _ = c.s.set_write_timeout(Some(Duration::from_millis(200)));
                while !stop.load(Ordering::Relaxed) {
                    match c.s.write(&blob) {
                        Ok(n) => {
                            sent.fetch_add(n as u64, Ordering::Relaxed);
                        }
                        Err(e) if is_timeout(&e) => {}
                        Err(_) => break,
                    }
                }
                link_end(&mut c.s, Duration::from_secs(2))
            })
        })
        .collect();
    let mut ends = Ends::default();
    for t in threads {
        ends.add(t.join().unwrap_or(LinkEnd::Open));
    }
    Ok(Outcome {
        attacker: format!(
            "{}; {} MB of Pings sent",
            ends.summary(),
            sent.load(Ordering::Relaxed) / 1_000_000
        ),
        targets: Vec::new(),
        rss_target_kib: None,
    })
}

/// (b) A logged-in member of a busy channel never reads: 8 publishers send
/// 32,000-byte unreliable messages at their rate limit.
fn attack_never_reader(ctx: &Ctx) -> io::Result<Outcome> {
    let channel = "busy";
    let mut never = Conn::open(ctx.addr, Some(ctx.attacker_ip))?;
    never.login(ctx, ctx.appid, 2_000_001, String::new())?;
    never.join(channel)?;
    let mut pubs = Vec::new();
    for i in 0..8 {
        let mut p = Conn::open(ctx.addr, Some(ctx.helper_ip))?;
        p.login(ctx, ctx.appid, 2_100_000 + i, String::new())?;
        p.join(channel)?;
        pubs.push(p);
    }
    let tallies: Vec<Arc<Tally>> = thread::scope(|sc| {
        let handles: Vec<_> = pubs
            .iter_mut()
            .map(|p| {
                sc.spawn(move || {
                    let tally = Arc::new(Tally::default());
                    let r = spawn_reader(
                        p.reader().expect("clone"),
                        tally.clone(),
                        ctx.stop.clone(),
                        None,
                    );
                    pipeline(ctx, p, &tally, 4, |_| {
                        Body::SendToChannel(wire::SendToChannelRequest {
                            channel: Some(key(channel)),
                            message: chat(32_000),
                            unreliable: true,
                            message_id: ctx.message_id(),
                        })
                    });
                    let _ = r.join();
                    tally
                })
            })
            .collect();
        handles.into_iter().filter_map(|h| h.join().ok()).collect()
    });
    let sent: u64 = tallies
        .iter()
        .map(|t| t.ok_replies.load(Ordering::Relaxed))
        .sum();
    let end = link_end(&mut never.s, Duration::from_secs(3));
    let attacker = match end {
        LinkEnd::Open => "never-reader still open".to_owned(),
        LinkEnd::Closed(Some(c)) => format!("never-reader closed, Close {c} read"),
        LinkEnd::Closed(None) => "never-reader closed, no Close frame read".to_owned(),
    };
    Ok(Outcome {
        attacker: format!("{attacker}; {sent} x 32 KB messages published"),
        targets: Vec::new(),
        // The issue's bound: the queue bound plus 1 MiB.
        rss_target_kib: Some(ctx.max_queued / 1024 + 1024),
    })
}

/// (c) 1,000 links that never log in each send half of a 64 KiB frame and
/// hold.
fn attack_half_frames(ctx: &Ctx) -> io::Result<Outcome> {
    let mut half = BytesMut::new();
    half.extend_from_slice(&(MAX_FRAME as u32).to_be_bytes());
    half.extend_from_slice(&vec![0x12; 32 * 1024]);
    let mut links = Vec::new();
    let mut failed = 0;
    for _ in 0..1000 {
        if ctx.stopped() {
            break;
        }
        match Conn::open(ctx.addr, Some(ctx.attacker_ip)) {
            Ok(mut c) => {
                if c.s.write_all(&half).is_err() {
                    failed += 1;
                }
                links.push(c);
            }
            Err(_) => failed += 1,
        }
    }
    while !ctx.stopped() {
        ctx.nap(Duration::from_millis(100));
    }
    let mut ends = Ends::default();
    for c in &mut links {
        ends.add(probe_link(&mut c.s));
    }
    Ok(Outcome {
        attacker: format!("{}; {failed} connects or writes failed", ends.summary()),
        targets: Vec::new(),
        rss_target_kib: Some(HALF_FRAMES_TARGET_KIB),
    })
}

/// (d) 64 links, no login, send ~60 KB `WriteUserAttributes` frames of
/// 6,000 entries (costly to decode), reconnecting when closed.
fn attack_big_prelogin(ctx: &Ctx) -> io::Result<Outcome> {
    let mut attributes = BTreeMap::new();
    let alphabet: Vec<char> = ('a'..='z').chain('A'..='Z').chain('0'..='9').collect();
    'fill: for a in &alphabet {
        for b in &alphabet {
            for c in &alphabet {
                attributes.insert(format!("{a}{b}{c}"), "v".to_owned());
                if attributes.len() == 6000 {
                    break 'fill;
                }
            }
        }
    }
    let frame = encode_frame(&Frame {
        request_id: 1,
        body: Some(Body::WriteUserAttributes(wire::AttributesWrite {
            channel: Some(key("x")),
            op: wire::AttributeOp::AddOrUpdate as i32,
            attributes,
            keys: Vec::new(),
            enable_notification: false,
        })),
    });
    let mut one = BytesMut::new();
    write_length_prefixed(&frame, &mut one);
    let one = one.freeze();
    let frames = Arc::new(AtomicU64::new(0));
    let conns = Arc::new(AtomicU64::new(0));
    let closed = Arc::new(AtomicU64::new(0));
    let threads: Vec<JoinHandle<()>> = (0..64)
        .map(|_| {
            let (one, frames, conns, closed) =
                (one.clone(), frames.clone(), conns.clone(), closed.clone());
            let (addr, ip, stop) = (ctx.addr, ctx.attacker_ip, ctx.stop.clone());
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let Ok(mut c) = Conn::open(addr, Some(ip)) else {
                        thread::sleep(Duration::from_millis(10));
                        continue;
                    };
                    conns.fetch_add(1, Ordering::Relaxed);
                    let _ = c.s.set_write_timeout(Some(Duration::from_millis(200)));
                    while !stop.load(Ordering::Relaxed) {
                        match c.s.write_all(&one) {
                            Ok(()) => {
                                frames.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(e) if is_timeout(&e) => break,
                            Err(_) => {
                                closed.fetch_add(1, Ordering::Relaxed);
                                break;
                            }
                        }
                    }
                    // Reconnect, a little later (a tighter loop mostly
                    // measures this tool's own copying on a small machine).
                    thread::sleep(Duration::from_millis(100));
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
    Ok(Outcome {
        attacker: format!(
            "{} frames of {} bytes written on {} links, {} links closed by the server",
            frames.load(Ordering::Relaxed),
            frame.len(),
            conns.load(Ordering::Relaxed),
            closed.load(Ordering::Relaxed)
        ),
        targets: Vec::new(),
        rss_target_kib: None,
    })
}

/// (e) One uid with 20 instances sends reliable 32 KB P2P messages to fresh
/// uids; then a victim's offline message (another app) and a channel's
/// history must still be delivered.
fn attack_retention(ctx: &Ctx) -> io::Result<Outcome> {
    // The victims, before the attack: an offline message in the other app,
    // and a channel's history in this one.
    let mut sender = Conn::open(ctx.addr, Some(ctx.helper_ip))?;
    sender.login(ctx, ctx.other_appid, 6_000_001, String::new())?;
    match sender.request(
        Body::SendToUser(wire::SendToUserRequest {
            receiver: 6_000_002,
            message: Some(ChatMessage {
                r#type: "t".into(),
                content: Bytes::from_static(b"offline-1"),
                ..Default::default()
            }),
            unreliable: false,
            message_id: ctx.message_id(),
        }),
        SETUP_WAIT,
    )? {
        Body::SendReply(_) => {}
        other => {
            return Err(io::Error::other(format!(
                "victim send: {}",
                describe(&other)
            )))
        }
    }
    let mut member = Conn::open(ctx.addr, Some(ctx.helper_ip))?;
    member.login(ctx, ctx.appid, 5_000_001, String::new())?;
    member.join("hist")?;
    match member.request(
        Body::SendToChannel(wire::SendToChannelRequest {
            channel: Some(key("hist")),
            message: Some(ChatMessage {
                r#type: "t".into(),
                content: Bytes::from_static(b"history-1"),
                ..Default::default()
            }),
            unreliable: false,
            message_id: ctx.message_id(),
        }),
        SETUP_WAIT,
    )? {
        Body::SendReply(_) => {}
        other => {
            return Err(io::Error::other(format!(
                "history send: {}",
                describe(&other)
            )))
        }
    }

    // The flood.
    let mut instances = Vec::new();
    for _ in 0..20 {
        let mut c = Conn::open(ctx.addr, Some(ctx.attacker_ip))?;
        c.login(ctx, ctx.appid, 3_000_000, String::new())?;
        instances.push(c);
    }
    let next_uid = AtomicU64::new(4_000_000);
    let tallies: Vec<Arc<Tally>> = thread::scope(|sc| {
        let handles: Vec<_> = instances
            .iter_mut()
            .map(|c| {
                let next_uid = &next_uid;
                sc.spawn(move || {
                    let tally = Arc::new(Tally::default());
                    let r = spawn_reader(
                        c.reader().expect("clone"),
                        tally.clone(),
                        ctx.stop.clone(),
                        None,
                    );
                    pipeline(ctx, c, &tally, 4, |_| {
                        Body::SendToUser(wire::SendToUserRequest {
                            receiver: next_uid.fetch_add(1, Ordering::Relaxed),
                            message: chat(32_000),
                            unreliable: false,
                            message_id: ctx.message_id(),
                        })
                    });
                    let _ = r.join();
                    tally
                })
            })
            .collect();
        handles.into_iter().filter_map(|h| h.join().ok()).collect()
    });
    let attacker = merge(&tallies);

    // The victims afterwards.
    let offline_ok = {
        let mut v = Conn::open(ctx.addr, Some(ctx.helper_ip))?;
        let rid = v.send(ctx.login_body(ctx.other_appid, 6_000_002, String::new()))?;
        let mut gap = false;
        let mut got = false;
        let until = Instant::now() + Duration::from_secs(2);
        while Instant::now() < until && !got {
            match v.frame(Duration::from_millis(200))? {
                Some(f) if f.request_id == rid => {
                    if let Some(Body::LoginReply(r)) = f.body {
                        gap = r.p2p_gap.is_some();
                    }
                }
                Some(Frame {
                    body: Some(Body::UserMessage(m)),
                    ..
                }) => {
                    got = m
                        .message
                        .is_some_and(|m| m.content.as_ref() == b"offline-1");
                }
                _ => {}
            }
        }
        got && !gap
    };
    let history_ok = {
        let rid = member.send(Body::Fetch(wire::FetchRequest {
            channel: Some(key("hist")),
            after_seq: 0,
        }))?;
        let mut got = false;
        let mut gap = true;
        let until = Instant::now() + Duration::from_secs(3);
        while Instant::now() < until {
            match member.frame(Duration::from_millis(200))? {
                Some(Frame {
                    body: Some(Body::ChannelMessage(m)),
                    ..
                }) => {
                    got |= m
                        .message
                        .is_some_and(|m| m.content.as_ref() == b"history-1");
                }
                Some(f) if f.request_id == rid => {
                    if let Some(Body::FetchReply(r)) = f.body {
                        gap = r.gap.is_some();
                    }
                    break;
                }
                _ => {}
            }
        }
        got && !gap
    };
    let word = |ok| if ok { "delivered" } else { "LOST (gap)" };
    Ok(Outcome {
        attacker: format!(
            "sends: {attacker}; victim offline message: {}; channel history: {}",
            word(offline_ok),
            word(history_ok)
        ),
        targets: vec![
            ("victim inbox".to_owned(), offline_ok),
            ("channel history".to_owned(), history_ok),
        ],
        rss_target_kib: None,
    })
}

/// Sums the tallies of several links into one summary.
fn merge(tallies: &[Arc<Tally>]) -> String {
    let all = Tally::default();
    let mut closes: BTreeMap<u32, u64> = BTreeMap::new();
    for t in tallies {
        all.ok_replies
            .fetch_add(t.ok_replies.load(Ordering::Relaxed), Ordering::Relaxed);
        for (c, n) in t.errors.lock().unwrap().iter() {
            *all.errors.lock().unwrap().entry(*c).or_default() += n;
        }
        if let Some(c) = *t.close.lock().unwrap() {
            *closes.entry(c).or_default() += 1;
        }
    }
    let mut s = all.summary();
    for (c, n) in closes {
        let _ = write!(s, ", Close {c} on {n} link(s)");
    }
    s
}

/// The address of the `i`th of many legitimate users: 127.0.1.1 onwards
/// when the helpers are on loopback, else the helpers' address.
fn member_ip(helper: IpAddr, i: u64) -> IpAddr {
    match helper {
        IpAddr::V4(v4) if v4.is_loopback() => IpAddr::V4(std::net::Ipv4Addr::new(
            127,
            0,
            1 + (i / 250) as u8,
            1 + (i % 250) as u8,
        )),
        other => other,
    }
}

/// (f) A member writes 8 KiB user attributes with notifications in a
/// 100-member channel as fast as it is answered; the other members read at
/// 2 MB/s each (as in the issue), and must not be closed as slow consumers.
fn attack_attr_notify(ctx: &Ctx) -> io::Result<Outcome> {
    let channel = "attrs";
    let mut members = Vec::new();
    for i in 0..100 {
        // 100 users are not one host: each member from its own loopback
        // address (the server limits logins per address).
        let mut m = Conn::open(ctx.addr, Some(member_ip(ctx.helper_ip, i)))?;
        m.login(ctx, ctx.appid, 7_000_000 + i, String::new())?;
        m.join(channel)?;
        members.push(m);
    }
    let mut attacker = Conn::open(ctx.addr, Some(ctx.attacker_ip))?;
    attacker.login(ctx, ctx.appid, 7_100_000, String::new())?;
    attacker.join(channel)?;
    let member_tallies: Vec<Arc<Tally>> = members.iter().map(|_| Arc::default()).collect();
    let readers: Vec<JoinHandle<()>> = members
        .iter()
        .zip(&member_tallies)
        .map(|(m, t)| {
            // 64 KiB reads, one per 32 ms: 2 MB/s.
            let slow = Some(Duration::from_millis(32));
            spawn_reader(
                m.reader().expect("clone"),
                t.clone(),
                ctx.stop.clone(),
                slow,
            )
        })
        .collect();
    let tally = Arc::new(Tally::default());
    let r = spawn_reader(attacker.reader()?, tally.clone(), ctx.stop.clone(), None);
    let value = "v".repeat(8000);
    pipeline(ctx, &mut attacker, &tally, 8, |n| {
        Body::WriteUserAttributes(wire::AttributesWrite {
            channel: Some(key(channel)),
            op: wire::AttributeOp::AddOrUpdate as i32,
            attributes: [(format!("k{}", n % 2), value.clone())].into(),
            keys: Vec::new(),
            enable_notification: true,
        })
    });
    let _ = r.join();
    for r in readers {
        let _ = r.join();
    }
    let closed = member_tallies
        .iter()
        .filter(|t| t.close.lock().unwrap().is_some() || t.ended())
        .count();
    let received: u64 = member_tallies
        .iter()
        .map(|t| t.bytes.load(Ordering::Relaxed))
        .sum();
    Ok(Outcome {
        attacker: format!(
            "writes: {}; {closed}/100 members closed; members received {} MB",
            tally.summary(),
            received / 1_000_000
        ),
        targets: vec![
            ("no member closed".to_owned(), closed == 0),
            (
                "writes rate-limited".to_owned(),
                tally.refused_with(RATE_LIMITED),
            ),
        ],
        rss_target_kib: None,
    })
}

/// A logged-in attacker with a reader, from the attacker's address.
fn attacker_conn(ctx: &Ctx, uid: u64) -> io::Result<(Conn, Arc<Tally>, JoinHandle<()>)> {
    let mut c = Conn::open(ctx.addr, Some(ctx.attacker_ip))?;
    c.login(ctx, ctx.appid, uid, String::new())?;
    let tally = Arc::new(Tally::default());
    let r = spawn_reader(c.reader()?, tally.clone(), ctx.stop.clone(), None);
    Ok((c, tally, r))
}

/// (g1) Online-status queries (256 uids), user lists and counts (32 ids),
/// pipelined.
fn attack_queries(ctx: &Ctx) -> io::Result<Outcome> {
    let mut c = Conn::open(ctx.addr, Some(ctx.attacker_ip))?;
    c.login(ctx, ctx.appid, 8_000_000, String::new())?;
    c.join("q")?;
    let tally = Arc::new(Tally::default());
    let r = spawn_reader(c.reader()?, tally.clone(), ctx.stop.clone(), None);
    let uids: Vec<u64> = (1..=256).collect();
    let ids: Vec<String> = (0..32).map(|i| format!("c{i}")).collect();
    let started = Instant::now();
    pipeline(ctx, &mut c, &tally, 64, |n| match n % 3 {
        0 => Body::QueryOnline(wire::QueryOnlineRequest { uids: uids.clone() }),
        1 => Body::GetUserList(key("q")),
        _ => Body::GetUserCount(wire::GetUserCountRequest {
            region: wire::Region::Cn as i32,
            channel_ids: ids.clone(),
        }),
    });
    let _ = r.join();
    Ok(Outcome {
        attacker: format!(
            "queries: {} ({:.0} answered/s)",
            tally.summary(),
            tally.replies() as f64 / started.elapsed().as_secs_f64()
        ),
        targets: vec![("rate-limited".to_owned(), tally.refused_with(RATE_LIMITED))],
        rss_target_kib: None,
    })
}

/// (g2) Join and leave the same channel, pipelined.
fn attack_join_leave(ctx: &Ctx) -> io::Result<Outcome> {
    let (mut c, tally, r) = attacker_conn(ctx, 8_100_000)?;
    let started = Instant::now();
    pipeline(ctx, &mut c, &tally, 64, |n| {
        if n % 2 == 0 {
            Body::Join(wire::JoinRequest {
                channel: Some(key("jl")),
                ..Default::default()
            })
        } else {
            Body::Leave(wire::LeaveRequest {
                channel: Some(key("jl")),
                ..Default::default()
            })
        }
    });
    let _ = r.join();
    Ok(Outcome {
        attacker: format!(
            "joins/leaves: {} ({:.0} answered/s)",
            tally.summary(),
            tally.replies() as f64 / started.elapsed().as_secs_f64()
        ),
        targets: vec![("rate-limited".to_owned(), tally.refused_with(RATE_LIMITED))],
        rss_target_kib: None,
    })
}

/// (g3) A member fills a channel with 60 x 32 KB reliable messages, then
/// fetches it from the start over and over (an 18-byte request, MBs back).
fn attack_fetch(ctx: &Ctx) -> io::Result<Outcome> {
    let mut c = Conn::open(ctx.addr, Some(ctx.attacker_ip))?;
    c.login(ctx, ctx.appid, 8_200_000, String::new())?;
    c.join("f")?;
    let mut stored = 0;
    for _ in 0..60 {
        if let Ok(Body::SendReply(_)) = c.request(
            Body::SendToChannel(wire::SendToChannelRequest {
                channel: Some(key("f")),
                message: chat(32_000),
                unreliable: false,
                message_id: ctx.message_id(),
            }),
            SETUP_WAIT,
        ) {
            stored += 1;
        }
    }
    let tally = Arc::new(Tally::default());
    let r = spawn_reader(c.reader()?, tally.clone(), ctx.stop.clone(), None);
    let started = Instant::now();
    // One fetch at a time (its replay is up to half the queue): the reader
    // takes everything at full speed, so only a limit can slow it.
    pipeline(ctx, &mut c, &tally, 1, |_| {
        Body::Fetch(wire::FetchRequest {
            channel: Some(key("f")),
            after_seq: 0,
        })
    });
    let _ = r.join();
    let secs = started.elapsed().as_secs_f64();
    Ok(Outcome {
        attacker: format!(
            "fetches of {stored} x 32 KB: {} ({:.0} answered/s, {:.0} MB/s replayed)",
            tally.summary(),
            tally.replies() as f64 / secs,
            tally.bytes.load(Ordering::Relaxed) as f64 / secs / 1e6
        ),
        targets: vec![("rate-limited".to_owned(), tally.refused_with(RATE_LIMITED))],
        rss_target_kib: None,
    })
}

/// (h) Twice the per-address cap of links from one address, no login, held;
/// closed ones are reopened every second.
fn attack_conn_flood(ctx: &Ctx) -> io::Result<Outcome> {
    let want = ctx.per_ip_cap * 2;
    let mut links: Vec<Option<TcpStream>> = Vec::new();
    let (mut opened, mut failed, mut silent, mut later) = (0u64, 0u64, 0u64, 0u64);
    while !ctx.stopped() {
        // (Re)open up to `want`.
        for slot in links.iter_mut().filter(|s| s.is_none()) {
            if let Ok(c) = Conn::open(ctx.addr, Some(ctx.attacker_ip)) {
                opened += 1;
                *slot = Some(c.s);
            } else {
                failed += 1;
            }
        }
        while links.len() < want && !ctx.stopped() {
            match Conn::open(ctx.addr, Some(ctx.attacker_ip)) {
                Ok(c) => {
                    opened += 1;
                    links.push(Some(c.s));
                }
                Err(_) => {
                    failed += 1;
                    links.push(None);
                }
            }
        }
        ctx.nap(Duration::from_secs(1));
        // Which ones did the server close, and did it say anything?
        for slot in &mut links {
            let Some(s) = slot else { continue };
            let _ = s.set_nonblocking(true);
            let mut buf = [0u8; 256];
            let closed = match s.read(&mut buf) {
                Ok(0) => Some(true),
                Ok(_) => Some(false),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
                Err(_) => Some(true),
            };
            let _ = s.set_nonblocking(false);
            match closed {
                Some(true) => {
                    silent += 1;
                    *slot = None;
                }
                Some(false) => {
                    later += 1;
                    *slot = None;
                }
                None => {}
            }
        }
    }
    let open = links.iter().filter(|s| s.is_some()).count();
    Ok(Outcome {
        attacker: format!(
            "{opened} links opened ({failed} connects failed): {silent} closed with nothing written \
             (refused), {later} closed after a frame, {open} open at the end"
        ),
        targets: Vec::new(),
        rss_target_kib: None,
    })
}

/// (i) A login with a token that expires 2 s later keeps sending after the
/// expiry.
fn attack_expired_token(ctx: &Ctx) -> io::Result<Outcome> {
    let exp = unix_s() + 2;
    let token = mint_token(&ctx.secret, ctx.appid, 9_000_000, exp);
    let mut c = Conn::open(ctx.addr, Some(ctx.attacker_ip))?;
    c.login(ctx, ctx.appid, 9_000_000, token)?;
    // Wait until the token has expired (whole seconds, the server's unit).
    while unix_s() <= exp && !ctx.stopped() {
        ctx.nap(Duration::from_millis(100));
    }
    let expired_at = Instant::now();
    let tally = Arc::new(Tally::default());
    let r = spawn_reader(c.reader()?, tally.clone(), ctx.stop.clone(), None);
    let sent = pipeline(ctx, &mut c, &tally, 1, |_| {
        // 20 sends/s, under the send rate limit (180 per 3 s): it is the
        // token, not the rate, under test.
        thread::sleep(Duration::from_millis(50));
        Body::SendToUser(wire::SendToUserRequest {
            receiver: 9_000_001,
            message: chat(100),
            unreliable: false,
            message_id: ctx.message_id(),
        })
    });
    let _ = r.join();
    let refused_after = tally
        .first_refusal
        .lock()
        .unwrap()
        .map(|t| format!("{:.1} s", t.duration_since(expired_at).as_secs_f64()));
    let stopped = refused_after.is_some();
    Ok(Outcome {
        attacker: format!(
            "{sent} sends after expiry: {}; first token refusal or close {} after expiry",
            tally.summary(),
            refused_after.unwrap_or_else(|| "never".to_owned())
        ),
        targets: vec![("expired token stopped".to_owned(), stopped)],
        rss_target_kib: None,
    })
}

// ----------------------------------------------------------------- main --

fn parse(args: &[String]) -> Result<(String, Ctx), String> {
    let mut it = args.iter();
    let attack = it
        .next()
        .ok_or("which attack? (see `hummer-abuse list`)")?
        .clone();
    let mut get = BTreeMap::new();
    while let Some(a) = it.next() {
        let name = a
            .strip_prefix("--")
            .ok_or_else(|| format!("unexpected argument {a:?}"))?;
        let v = it.next().ok_or_else(|| format!("--{name} needs a value"))?;
        get.insert(name.to_owned(), v.clone());
    }
    fn num<T: std::str::FromStr>(
        get: &BTreeMap<String, String>,
        name: &str,
        default: Option<T>,
    ) -> Result<T, String> {
        match get.get(name) {
            Some(v) => v
                .parse()
                .map_err(|_| format!("--{name}: {v:?} is not valid")),
            None => default.ok_or_else(|| format!("--{name} is required")),
        }
    }
    let proto: u32 = num(&get, "protocol", Some(2))?;
    if !(1..=2).contains(&proto) {
        return Err("--protocol: 1 or 2".into());
    }
    let ctx = Ctx {
        addr: num(&get, "addr", None)?,
        pid: num(&get, "server-pid", None)?,
        secs: Duration::from_secs_f64(num::<f64>(&get, "secs", Some(10.0))?.clamp(1.0, 55.0)),
        proto,
        appid: num(&get, "appid", Some(10_000))?,
        secret: get.get("secret").cloned().ok_or("--secret is required")?,
        other_appid: num(&get, "other-appid", Some(10_001))?,
        attacker_ip: num(&get, "attacker-ip", Some("127.0.0.2".parse().unwrap()))?,
        helper_ip: num(&get, "helper-ip", Some("127.0.0.3".parse().unwrap()))?,
        max_queued: num(&get, "max-queued-bytes", Some(4 * 1024 * 1024))?,
        per_ip_cap: num(&get, "per-ip-cap", Some(1000))?,
        rss_cap_kib: num::<u64>(&get, "rss-cap-mib", Some(3072))? * 1024,
        stop: Arc::new(AtomicBool::new(false)),
    };
    Ok((attack, ctx))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("list") {
        for (name, what) in ATTACKS {
            println!("{name:16} {what}");
        }
        return ExitCode::SUCCESS;
    }
    let result = parse(&args).and_then(|(attack, ctx)| run(&attack, &ctx));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hummer-abuse: {e}");
            ExitCode::from(2)
        }
    }
}
