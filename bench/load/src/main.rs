//! `hummer-load`: load generator for `hummer-server`, NATS and Redis, over
//! loopback TCP, with minimal raw-protocol clients for all three (length-
//! prefixed frames for hummer, the NATS text protocol, RESP for Redis),
//! blocking std sockets and one thread per connection (the scaling workload:
//! a few threads polling thousands).
//!
//! ```text
//! hummer-load compare --hummer ADDR --hummer-pid PID --nats ADDR --nats-pid PID
//!                     --redis ADDR --redis-pid PID [--reps 5] [--quick]
//! hummer-load rawcheck --nats ADDR --redis ADDR [--hummer ADDR --hummer-unlimited]
//! hummer-load raw --kind nats|redis|hummer --addr ADDR [--subscribers 100]
//!                 [--server-pid PID] [--transport tcp|tls|ws|wss] [--ca PEM]
//! hummer-load idle --addr ADDR --conns 10000 --server-pid PID [--hold-secs 3]
//!                  [--transport tcp|tls|ws|wss] [--ca PEM] [--server-name NAME]
//! ```
//!
//! `--transport` (hummer only; transport.rs, rawlink.rs): `idle`, and `raw`
//! with `--subscribers 1` (the 1 -> 1 stream, P2P) or more (fan-out in one
//! channel), over TLS, WebSocket (`ws://ADDR/v1/ws`) or both; `--addr` is
//! then the server's TLS or WebSocket listener. TLS trusts any certificate
//! unless `--ca PEM` is given; the name checked is `--server-name` or the
//! address's IP. TCP, the default, is the baseline and takes the paths it
//! always took.
//!
//! `compare` runs the workloads interleaved (hummer, nats, redis, per
//! workload, `--reps` times), takes medians and prints one table; see
//! BENCHMARKS.md. `rawcheck` measures the 1 -> 1 and fan-out workloads
//! through these clients and through the raw client of raw.rs, interleaved,
//! to show that the clients are not what limits a server. `idle` holds
//! logged-in idle connections and reports the server's resident memory.
//! Every loop is bounded in count and in time.
//!
//! A hummer server of several nodes (`hummer-server --cluster-listen`,
//! given as `--hummer HUB+GATEWAY` with `--hummer-pid PID+PID`) is one
//! target: its clients are spread over its nodes so that the traffic
//! crosses them (1 -> 1 from the gateway node to the hub node, and back as
//! a run of its own; the fan-out's subscribers on both nodes in turn, its
//! publisher on the gateway node; the round trip between the two), with
//! the same clients as every other server. A hummer server's CPU is the
//! sum over its processes: its nodes and its engine's Redis.
//!
//! Every client does the same work per message, the least its protocol
//! allows: publishers write `batch()` pre-encoded messages per write (only
//! hummer patches an id in them), subscribers count deliveries without
//! decoding them (count.rs).
//!
//! `hummer-server` limits each login instance to 180 sends per 3 s (unless
//! started with a higher `--rate-limit-sends`, then `--hummer-unlimited`),
//! so hummer publishers log out and in again (pipelined on the same
//! connection, a new instance with a new budget) every [`QUOTA`] sends.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use hummer_channel::adapters::server_tcp::ServerHandle;
use hummer_channel::server::{RateLimit, ServerConfig, DEMO_APPID};
use hummer_channel::wire::{
    self, decode_frame, encode_frame, write_length_prefixed, Ack, Body, ChannelKey, ChatMessage,
    Empty, Frame, JoinRequest, LoginRequest, SendToChannelRequest, SendToUserRequest,
};

mod count;
mod engine;
mod raw;
mod rawlink;
mod scale;
mod transport;

use count::Counter;
use scale::ScaleParams;

/// Sends per login instance before a hummer client logs in again (the
/// server allows 180 per 3 s). Unbounded against the in-process server.
static QUOTA: AtomicU64 = AtomicU64::new(170);

fn quota() -> u64 {
    QUOTA.load(Ordering::Relaxed)
}
/// Messages a publisher may have ahead of its slowest subscriber (`--window`):
/// enough to keep every stage of the pipeline busy (1,000 left NATS 1 -> 1
/// at about half the raw client's rate), small enough that no server holds
/// more than ~1.5 MB for one subscriber (hummer-server closes a connection
/// past 4 MB queued).
const WINDOW: u64 = 10_000;
/// Messages per socket write of every publisher (`--batch`, 50 by default).
/// A server reading in bigger pieces gains from bigger writes (NATS reads up
/// to 64 KB, Redis 16 KB, hummer-server 4 KB), so it is the same for all.
static BATCH: AtomicU64 = AtomicU64::new(50);

fn batch() -> u64 {
    BATCH.load(Ordering::Relaxed)
}
const PAYLOAD: usize = 100;
const MAX_FRAME: usize = 64 * 1024;
/// Any blocking read gives up after this long (then loops check their caps).
const READ_TIMEOUT: Duration = Duration::from_millis(200);

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Kind {
    /// Hummer, with reliable (sequenced, retained) or unreliable sends.
    Hummer {
        reliable: bool,
    },
    Nats,
    Redis,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Hummer { reliable: false } => "hummer",
            Kind::Hummer { reliable: true } => "hummer-reliable",
            Kind::Nats => "nats",
            Kind::Redis => "redis",
        }
    }
}

#[derive(Clone, Debug)]
struct Target {
    kind: Kind,
    /// Where a client connects: one of `nodes` (see [`Target::on`]).
    addr: SocketAddr,
    /// Every node's client address (one for a single server): a server of
    /// several nodes (a cluster) is one target, the hub node's first, then
    /// the gateway nodes'.
    nodes: Vec<SocketAddr>,
    /// Every process of the server (its nodes, and the Redis of its
    /// engine): the server's CPU is the sum over them.
    pids: Vec<u32>,
    /// The kind's name, and which of several servers of that kind (e.g.
    /// "hummer t2", started with `--threads 2`).
    label: String,
    /// The Redis of a hummer-server started with `--engine redis://…`
    /// (its address and pid; several for a store spread over several
    /// instances, none without a Redis engine), read around each run
    /// (engine.rs).
    engine: engine::Instances,
}

/// Which node of a server a client connects to: the hub node, or the first
/// gateway node (the same one for a single server).
const HUB_NODE: usize = 0;
const GATEWAY_NODE: usize = 1;

impl Target {
    fn new(kind: Kind, addr: SocketAddr, pid: Option<u32>, variant: &str) -> Target {
        let label = match variant {
            "" => kind.name().to_owned(),
            v => format!("{} {v}", kind.name()),
        };
        Target {
            kind,
            addr,
            nodes: vec![addr],
            pids: pid.into_iter().collect(),
            label,
            engine: Vec::new(),
        }
    }

    /// The same server, its clients connecting to node `i` (modulo the
    /// nodes: every `i` is the one node of a single server).
    fn on(&self, i: usize) -> Target {
        Target {
            addr: self.nodes[i % self.nodes.len()],
            ..self.clone()
        }
    }

    /// A server of several nodes (whose clients are spread over them).
    fn several_nodes(&self) -> bool {
        self.nodes.len() > 1
    }

    /// utime + stime of every process of the server, in seconds (NaN
    /// without their pids).
    fn cpu_seconds(&self, clk_tck: f64) -> f64 {
        if self.pids.is_empty() {
            return f64::NAN;
        }
        self.pids
            .iter()
            .map(|&pid| cpu_seconds(Some(pid), clk_tck))
            .sum()
    }
}

// ---------------------------------------------------------------- sockets --

/// A connection with an input buffer, speaking one of the three protocols.
struct Conn {
    s: TcpStream,
    kind: Kind,
    /// What was read and not yet parsed (for a counting reader: the partial
    /// item its last read left).
    buf: BytesMut,
    out: BytesMut,
}

/// What arrived.
#[derive(Debug)]
enum Item {
    /// A message delivered to a subscriber: its payload.
    Msg {
        payload: Bytes,
        /// NATS: the reply subject.
        reply: Option<Bytes>,
        /// Hummer: the P2P or channel sequence number (0: unreliable).
        seq: u64,
    },
    /// Anything else (replies, acknowledgements, notices).
    Other(Body),
    Error(String),
    /// Nothing within the read timeout.
    Idle,
}

impl Conn {
    fn connect(kind: Kind, addr: SocketAddr) -> io::Result<Conn> {
        let s = TcpStream::connect(addr)?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(READ_TIMEOUT))?;
        Ok(Conn {
            s,
            kind,
            buf: BytesMut::new(),
            out: BytesMut::new(),
        })
    }

    fn flush(&mut self) -> io::Result<()> {
        if !self.out.is_empty() {
            self.s.write_all(&self.out)?;
            self.out.clear();
        }
        Ok(())
    }

    /// Reads once (bounded by the read timeout); `false` on timeout.
    fn fill(&mut self) -> io::Result<bool> {
        let mut chunk = [0u8; 32 * 1024];
        match self.s.read(&mut chunk) {
            Ok(0) => Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed")),
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(true)
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// The next item already buffered, if any.
    fn parse(&mut self) -> io::Result<Option<Item>> {
        match self.kind {
            Kind::Hummer { .. } => self.parse_hummer(),
            Kind::Nats => self.parse_nats(),
            Kind::Redis => Ok(parse_resp(&mut self.buf)?.map(redis_item)),
        }
    }

    /// The next item, reading as needed; `Item::Idle` after a read timeout.
    fn next(&mut self) -> io::Result<Item> {
        loop {
            if let Some(item) = self.parse()? {
                return Ok(item);
            }
            if !self.fill()? {
                return Ok(Item::Idle);
            }
        }
    }

    fn parse_hummer(&mut self) -> io::Result<Option<Item>> {
        let Some(prefix) = self.buf.get(..4) else {
            return Ok(None);
        };
        let len = u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
        if self.buf.len() < 4 + len {
            return Ok(None);
        }
        let f = self.buf.split_to(4 + len).freeze().slice(4..);
        let frame = decode_frame(f, MAX_FRAME).map_err(io::Error::other)?;
        Ok(Some(match frame.body {
            Body::UserMessage(m) => Item::Msg {
                payload: m.message.map(|m| m.content).unwrap_or_default(),
                reply: None,
                seq: m.seq,
            },
            Body::ChannelMessage(m) => Item::Msg {
                payload: m.message.map(|m| m.content).unwrap_or_default(),
                reply: None,
                seq: m.seq,
            },
            Body::Error(e) => Item::Error(format!("{} {}", e.code, e.message)),
            Body::Close(c) => Item::Error(format!("close {} {}", c.code, c.reason)),
            b => Item::Other(b),
        }))
    }

    fn parse_nats(&mut self) -> io::Result<Option<Item>> {
        loop {
            let Some(eol) = find_crlf(&self.buf) else {
                return Ok(None);
            };
            let line = &self.buf[..eol];
            if line.starts_with(b"MSG ") {
                let parts: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
                let n: usize = std::str::from_utf8(parts[parts.len() - 1])
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| io::Error::other("bad MSG line"))?;
                let reply = (parts.len() == 5).then(|| Bytes::copy_from_slice(parts[3]));
                if self.buf.len() < eol + 2 + n + 2 {
                    return Ok(None);
                }
                let mut rest = self.buf.split_to(eol + 2 + n + 2).freeze();
                let _ = rest.split_to(eol + 2);
                let payload = rest.slice(..n);
                return Ok(Some(Item::Msg {
                    payload,
                    reply,
                    seq: 0,
                }));
            }
            let item = if line.starts_with(b"PING") {
                self.out.extend_from_slice(b"PONG\r\n");
                None
            } else if line.starts_with(b"-ERR") {
                Some(Item::Error(String::from_utf8_lossy(line).into_owned()))
            } else if line.starts_with(b"PONG") {
                Some(Item::Other(Body::Pong(wire::Pong { nonce: 0 })))
            } else {
                None // INFO, +OK
            };
            let _ = self.buf.split_to(eol + 2);
            if !self.out.is_empty() {
                self.flush()?;
            }
            if let Some(item) = item {
                return Ok(Some(item));
            }
        }
    }
}

fn find_crlf(b: &[u8]) -> Option<usize> {
    b.windows(2).position(|w| w == b"\r\n")
}

/// A RESP value (the contents of replies are only shown in errors).
#[derive(Debug)]
#[allow(dead_code)]
enum Resp {
    Simple(Bytes),
    Error(String),
    Int(i64),
    Bulk(Option<Bytes>),
    Array(Vec<Resp>),
}

/// Parses one RESP value from the front of `buf`, leaving it untouched when
/// incomplete.
fn parse_resp(buf: &mut BytesMut) -> io::Result<Option<Resp>> {
    fn at(b: &[u8], pos: usize) -> io::Result<Option<(Resp, usize)>> {
        let Some(&t) = b.get(pos) else {
            return Ok(None);
        };
        let Some(eol) = find_crlf(&b[pos..]).map(|e| pos + e) else {
            return Ok(None);
        };
        let line = &b[pos + 1..eol];
        let num = || -> io::Result<i64> {
            std::str::from_utf8(line)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| io::Error::other("bad RESP number"))
        };
        Ok(match t {
            b'+' => Some((Resp::Simple(Bytes::copy_from_slice(line)), eol + 2)),
            b'-' => Some((
                Resp::Error(String::from_utf8_lossy(line).into_owned()),
                eol + 2,
            )),
            b':' => Some((Resp::Int(num()?), eol + 2)),
            b'$' => {
                let n = num()?;
                if n < 0 {
                    return Ok(Some((Resp::Bulk(None), eol + 2)));
                }
                let end = eol + 2 + n as usize;
                if b.len() < end + 2 {
                    return Ok(None);
                }
                Some((
                    Resp::Bulk(Some(Bytes::copy_from_slice(&b[eol + 2..end]))),
                    end + 2,
                ))
            }
            b'*' | b'>' => {
                let n = num()?;
                let mut items = Vec::new();
                let mut p = eol + 2;
                for _ in 0..n.max(0) {
                    match at(b, p)? {
                        Some((v, next)) => {
                            items.push(v);
                            p = next;
                        }
                        None => return Ok(None),
                    }
                }
                Some((Resp::Array(items), p))
            }
            _ => return Err(io::Error::other("bad RESP type")),
        })
    }
    match at(buf, 0)? {
        Some((v, used)) => {
            let _ = buf.split_to(used);
            Ok(Some(v))
        }
        None => Ok(None),
    }
}

fn redis_item(v: Resp) -> Item {
    match v {
        Resp::Array(mut items) if items.len() == 3 => {
            if matches!(&items[0], Resp::Bulk(Some(k)) if &k[..] == b"message") {
                if let Resp::Bulk(Some(p)) = items.pop().unwrap_or(Resp::Int(0)) {
                    return Item::Msg {
                        payload: p,
                        reply: None,
                        seq: 0,
                    };
                }
            }
            Item::Other(Body::Ok(Empty {}))
        }
        Resp::Error(e) => Item::Error(e),
        _ => Item::Other(Body::Ok(Empty {})),
    }
}

// ------------------------------------------------------- protocol helpers --

/// A message id for send number `n`: unique in this process (a salt from
/// the start time) and always a 10-byte varint (top bit set), so that a
/// pre-encoded send can be patched in place.
fn message_id(n: u64) -> u64 {
    static SALT: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let salt = *SALT.get_or_init(|| {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        (t ^ u64::from(std::process::id()).rotate_left(40)) << 24
    });
    (1 << 63) | ((salt ^ n) & !(1 << 63))
}

/// Writes `message_id(n)` as the 10-byte varint it always is.
fn patch_message_id(out: &mut [u8], n: u64) {
    let mut v = message_id(n);
    for b in out.iter_mut().take(10) {
        *b = (v as u8 & 0x7f) | 0x80;
        v >>= 7;
    }
    out[9] &= 0x7f;
}

fn hummer_frame(out: &mut BytesMut, request_id: u64, body: Body) {
    let f = encode_frame(&Frame {
        request_id,
        body: Some(body),
    });
    write_length_prefixed(&f, out);
}

fn key(topic: &str) -> ChannelKey {
    ChannelKey {
        region: wire::Region::Cn as i32,
        channel_id: topic.to_owned(),
    }
}

fn login_body(uid: u64) -> Body {
    Body::Login(LoginRequest {
        protocol_version: wire::PROTOCOL_VERSION,
        appid: DEMO_APPID,
        uid,
        ..Default::default()
    })
}

fn resp_command(out: &mut BytesMut, args: &[&[u8]]) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

/// Where a workload's messages go: a hummer uid (P2P) or channel, a NATS
/// subject or a Redis channel.
#[derive(Clone, Debug)]
enum Topic {
    /// Hummer: P2P to this uid; brokers: this subject/channel name.
    User(u64, String),
    /// Hummer: this channel; brokers: the same name.
    Channel(String),
}

impl Topic {
    fn name(&self) -> &str {
        match self {
            Topic::User(_, s) | Topic::Channel(s) => s,
        }
    }
}

/// A connection that receives `topic`; for hummer logged in as `uid`.
fn subscriber(t: &Target, uid: u64, topic: &Topic) -> io::Result<Conn> {
    let mut c = subscribe_start(t, uid, topic)?;
    subscribe_finish(&mut c, topic)?;
    Ok(c)
}

/// Connects and sends every request a subscription needs, at once (so that
/// many can be set up in parallel); `subscribe_finish` waits for the replies.
fn subscribe_start(t: &Target, uid: u64, topic: &Topic) -> io::Result<Conn> {
    let mut c = Conn::connect(t.kind, t.addr)?;
    match t.kind {
        Kind::Hummer { .. } => {
            hummer_frame(&mut c.out, 1, login_body(uid));
            if let Topic::Channel(name) = topic {
                let join = Body::Join(JoinRequest {
                    channel: Some(key(name)),
                    ..Default::default()
                });
                hummer_frame(&mut c.out, 2, join);
            }
        }
        Kind::Nats => {
            c.out.extend_from_slice(NATS_CONNECT);
            // The PONG says the subscription is in place.
            c.out
                .extend_from_slice(format!("SUB {} 1\r\nPING\r\n", topic.name()).as_bytes());
        }
        Kind::Redis => resp_command(&mut c.out, &[b"SUBSCRIBE", topic.name().as_bytes()]),
    }
    c.flush()?;
    Ok(c)
}

fn subscribe_finish(c: &mut Conn, topic: &Topic) -> io::Result<()> {
    let replies = match (c.kind, topic) {
        (Kind::Hummer { .. }, Topic::Channel(_)) => 2, // login, join
        _ => 1,
    };
    for _ in 0..replies {
        wait_reply(c, Duration::from_secs(5), "subscribe")?;
    }
    Ok(())
}

const NATS_CONNECT: &[u8] =
    b"CONNECT {\"verbose\":false,\"pedantic\":false,\"echo\":false,\"name\":\"hummer-load\"}\r\n";

fn nats_handshake(c: &mut Conn) -> io::Result<()> {
    c.out.extend_from_slice(NATS_CONNECT);
    c.out.extend_from_slice(b"PING\r\n");
    c.flush()?;
    wait_reply(c, Duration::from_secs(5), "nats CONNECT")?;
    Ok(())
}

/// Waits for the next non-message reply (hummer reply frame, RESP reply).
fn wait_reply(c: &mut Conn, cap: Duration, what: &str) -> io::Result<Body> {
    let end = Instant::now() + cap;
    while Instant::now() < end {
        match c.next()? {
            Item::Other(b) => match b {
                Body::Membership(_) | Body::UserCountChanged(_) => {}
                b => return Ok(b),
            },
            Item::Error(e) => return Err(io::Error::other(format!("{what}: {e}"))),
            Item::Idle | Item::Msg { .. } => {}
        }
    }
    Err(io::Error::new(io::ErrorKind::TimedOut, what.to_owned()))
}

/// A publisher: sends batches of messages to `topic`; for hummer, logs in
/// again every `QUOTA` sends (the rate limit) and, for a channel, joins it
/// again.
struct Publisher {
    c: Conn,
    topic: Topic,
    uid: u64,
    sent_on_login: u64,
    rid: u64,
    /// `batch()` copies of one message as sent (for hummer with its length
    /// prefix), encoded once: a batch is one write of a prefix of it. No
    /// protocol needs anything patched but hummer, whose server answers a
    /// repeated `message_id` with the first reply and delivers nothing.
    batch: Vec<u8>,
    msg_len: usize,
    /// Hummer: where the 10-byte message id is in each copy.
    msgid_at: Option<usize>,
}

impl Publisher {
    fn open(t: &Target, uid: u64, topic: &Topic) -> io::Result<Publisher> {
        let mut c = Conn::connect(t.kind, t.addr)?;
        let cap = Duration::from_secs(5);
        match t.kind {
            Kind::Hummer { .. } => {}
            Kind::Nats => nats_handshake(&mut c)?,
            Kind::Redis => {
                resp_command(&mut c.out, &[b"PING"]);
                c.flush()?;
                wait_reply(&mut c, cap, "PING")?;
            }
        }
        let payload = vec![b'x'; PAYLOAD];
        let mut template = BytesMut::new();
        match (t.kind, topic) {
            (Kind::Hummer { reliable }, _) => {
                let message = Some(ChatMessage {
                    r#type: "text".into(),
                    content: Bytes::from(payload),
                    app_extras: Default::default(),
                });
                // One request id for every send: the server only echoes it.
                let body = match topic {
                    Topic::User(uid, _) => Body::SendToUser(SendToUserRequest {
                        receiver: *uid,
                        message,
                        unreliable: !reliable,
                        message_id: message_id(0),
                    }),
                    Topic::Channel(name) => Body::SendToChannel(SendToChannelRequest {
                        channel: Some(key(name)),
                        message,
                        unreliable: !reliable,
                        message_id: message_id(0),
                    }),
                };
                hummer_frame(&mut template, 5, body);
            }
            (Kind::Nats, _) => {
                template
                    .extend_from_slice(format!("PUB {} {PAYLOAD}\r\n", topic.name()).as_bytes());
                template.extend_from_slice(&payload);
                template.extend_from_slice(b"\r\n");
            }
            (Kind::Redis, _) => {
                resp_command(
                    &mut template,
                    &[b"PUBLISH", topic.name().as_bytes(), &payload],
                );
            }
        }
        // The message id (field 4, varint: key byte 0x20) follows the message.
        let msgid_at = match t.kind {
            Kind::Hummer { .. } => {
                let mut id_varint = [0u8; 10];
                patch_message_id(&mut id_varint, 0);
                let at = template
                    .windows(11)
                    .position(|w| w[0] == 0x20 && w[1..] == id_varint)
                    .expect("the message id is in the template");
                Some(at + 1)
            }
            _ => None,
        };
        let mut p = Publisher {
            c,
            topic: topic.clone(),
            uid,
            sent_on_login: 0,
            rid: 10,
            batch: template.repeat(batch() as usize),
            msg_len: template.len(),
            msgid_at,
        };
        if let Kind::Hummer { .. } = t.kind {
            p.hummer_login(false);
            p.c.flush()?;
            let replies = if let Topic::Channel(_) = topic { 2 } else { 1 };
            for _ in 0..replies {
                wait_reply(&mut p.c, cap, "publisher login/join")?;
            }
        }
        Ok(p)
    }

    fn next_rid(&mut self) -> u64 {
        self.rid += 1;
        self.rid
    }

    /// Queues (logout,) login (and join): a new instance, a new send budget.
    fn hummer_login(&mut self, logout: bool) {
        if logout {
            let rid = self.next_rid();
            hummer_frame(&mut self.c.out, rid, Body::Logout(Empty {}));
        }
        let rid = self.next_rid();
        hummer_frame(&mut self.c.out, rid, login_body(self.uid));
        if let Topic::Channel(name) = &self.topic {
            let join = Body::Join(JoinRequest {
                channel: Some(key(name)),
                ..Default::default()
            });
            let rid = self.next_rid();
            hummer_frame(&mut self.c.out, rid, join);
        }
        self.sent_on_login = 0;
    }

    /// Sends messages `first..first + k` (`k` at most `batch()`) in one write.
    fn send(&mut self, first: u64, k: u64) -> io::Result<()> {
        if let Some(m) = self.msgid_at {
            if self.sent_on_login + k > quota() {
                self.hummer_login(true);
                self.c.flush()?;
            }
            self.sent_on_login += k;
            for i in 0..k {
                // Unique per publisher: its uid in the high bits.
                let at = i as usize * self.msg_len + m;
                patch_message_id(&mut self.batch[at..], (first + i) ^ (self.uid << 40));
            }
        }
        self.c.s.write_all(&self.batch[..k as usize * self.msg_len])
    }

    /// A thread that reads and discards what the publisher receives
    /// (replies, its own echoes), counting the replies to its messages
    /// (hummer `SendReply`, Redis `:N`; NATS sends none) and errors; ends
    /// at `stop`.
    fn drain_thread(
        &mut self,
        stop: Arc<AtomicBool>,
        errors: Arc<AtomicU64>,
        replies: Arc<AtomicU64>,
    ) -> JoinHandle<()> {
        let mut c = Conn {
            s: self.c.s.try_clone().expect("clone socket"),
            kind: self.c.kind,
            // What the publisher read past its last reply belongs here.
            buf: std::mem::take(&mut self.c.buf),
            out: BytesMut::new(),
        };
        thread::spawn(move || {
            let mut counter = Counter::new();
            while !stop.load(Ordering::Relaxed) {
                let r = counter.read(&mut c, &mut |e| {
                    if errors.fetch_add(1, Ordering::Relaxed) < 3 {
                        eprintln!("publisher got an error: {e}");
                    }
                });
                if r.is_err() {
                    return;
                }
                replies.store(counter.replies, Ordering::Relaxed);
            }
        })
    }
}

/// Politely ends a connection (hummer: logout, so no instance lingers).
fn close(mut c: Conn) {
    if let Kind::Hummer { .. } = c.kind {
        hummer_frame(&mut c.out, 999_999, Body::Logout(Empty {}));
        let _ = c.flush();
    }
    let _ = c.s.shutdown(std::net::Shutdown::Both);
}

// -------------------------------------------------------------- workloads --

/// utime + stime of `pid` in seconds.
fn cpu_seconds(pid: Option<u32>, clk_tck: f64) -> f64 {
    let Some(pid) = pid else { return f64::NAN };
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return f64::NAN;
    };
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        f.get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 here.
    (ticks(11) + ticks(12)) / clk_tck
}

/// The longest wait for a server to finish the work of a run.
const SETTLE_CAP: Duration = Duration::from_secs(180);

/// Waits until every process of `pids` uses under 5% of a core (over half a
/// second), at most `SETTLE_CAP`: what a server still does after a run
/// (hummer-server takes tens of seconds to close 11,000 connections) must
/// not run during the next one.
fn wait_idle(pids: &[u32], clk_tck: f64) {
    let start = Instant::now();
    let busy = || -> f64 {
        let cpu = |pid| cpu_seconds(Some(pid), clk_tck);
        let before: Vec<f64> = pids.iter().map(|&p| cpu(p)).collect();
        thread::sleep(Duration::from_millis(500));
        let after: Vec<f64> = pids.iter().map(|&p| cpu(p)).collect();
        after
            .iter()
            .zip(&before)
            .map(|(a, b)| a - b)
            .fold(0.0, f64::max)
            / 0.5
    };
    // A process that is gone (NaN) is idle.
    while start.elapsed() < SETTLE_CAP && busy() >= 0.05 {}
}

/// utime + stime of this process in seconds.
fn own_cpu_seconds(clk_tck: f64) -> f64 {
    cpu_seconds(Some(std::process::id()), clk_tck)
}

#[derive(Clone, Debug, Default)]
struct Outcome {
    /// Messages (W1) or deliveries (W2) per second; RTT: p50 µs.
    rate: f64,
    p99: f64,
    deliveries: u64,
    expected: u64,
    cpu_per_delivery: f64,
    /// This process's CPU (user + system, every thread) over the run, in
    /// cores: near the core count, the load generator is the bottleneck.
    client_cores: f64,
    errors: u64,
    /// Replies to sent messages the publisher had not received by the time
    /// cap (1 -> 1 and fan-out).
    missing_replies: u64,
}

struct Params {
    reps: u64,
    messages: u64,
    fanout_messages: u64,
    subscribers: u64,
    rtt_samples: u64,
    window: u64,
    cap: Duration,
    clk_tck: f64,
}

/// The counts of `compare` and `rawcheck` (`--quick`: smaller ones); sets
/// the batch size.
fn params(args: &HashMap<String, String>) -> Params {
    let quick = args.contains_key("quick");
    let num = |k: &str, d: u64| args.get(k).and_then(|v| v.parse().ok()).unwrap_or(d);
    BATCH.store(num("batch", batch()).max(1), Ordering::Relaxed);
    Params {
        reps: num("reps", if quick { 1 } else { 5 }),
        messages: num("messages", if quick { 20_000 } else { 200_000 }),
        fanout_messages: num("fanout-messages", if quick { 1_000 } else { 10_000 }),
        subscribers: num("subscribers", 100),
        rtt_samples: num("rtt-samples", if quick { 300 } else { 2_000 }),
        window: num("window", WINDOW),
        cap: Duration::from_secs(num("time-cap-secs", 15)),
        clk_tck: num("clk-tck", 100) as f64,
    }
}

/// One publisher to `subs` subscribers; `n` messages, bounded by `cap`.
/// On a server of several nodes the publisher connects to node
/// `publisher_node` ([`HUB_NODE`] or [`GATEWAY_NODE`]) and the traffic
/// crosses nodes: one subscriber is on the other of the two, several go
/// round every node in turn (subscriber `i` on node `i`, modulo).
fn pubsub(
    t: &Target,
    run: u64,
    n: u64,
    subs: u64,
    publisher_node: usize,
    p: &Params,
) -> io::Result<Outcome> {
    let base = run * 10_000;
    let name = format!("bench.{run}");
    let topic = if subs == 1 {
        Topic::User(base + 1, name)
    } else {
        Topic::Channel(name)
    };
    let counters: Vec<Arc<AtomicU64>> = (0..subs).map(|_| Arc::new(AtomicU64::new(0))).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicU64::new(0));
    // A subscriber says when it has every message: the end of the run is
    // waited for, not polled (no wake-ups of this thread meanwhile).
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let mut threads = Vec::new();
    for (i, counter) in counters.iter().enumerate() {
        let node = match (subs, publisher_node) {
            (1, HUB_NODE) => GATEWAY_NODE,
            (1, _) => HUB_NODE,
            _ => i,
        };
        let mut c = subscriber(&t.on(node), base + 1 + i as u64, &topic)?;
        let (counter, stop, errors) = (counter.clone(), stop.clone(), errors.clone());
        let done_tx = done_tx.clone();
        threads.push(thread::spawn(move || {
            let mut reader = Counter::new();
            let mut got = 0;
            while got < n && !stop.load(Ordering::Relaxed) {
                let r = reader.read(&mut c, &mut |e| {
                    if errors.fetch_add(1, Ordering::Relaxed) < 3 {
                        eprintln!("subscriber got an error: {e}");
                    }
                });
                match r {
                    Ok(Some(k)) if k > 0 => {
                        got += k;
                        counter.store(got, Ordering::Relaxed);
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
            if got >= n {
                let _ = done_tx.send(());
            }
            close(c);
        }));
    }
    let mut publisher = Publisher::open(&t.on(publisher_node), base + 9_999, &topic)?;
    let replies = Arc::new(AtomicU64::new(0));
    let drain = publisher.drain_thread(stop.clone(), errors.clone(), replies.clone());
    let min_received = || {
        counters
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .min()
            .unwrap_or(0)
    };
    let total_received = || {
        counters
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum::<u64>()
    };
    let cpu0 = t.cpu_seconds(p.clk_tck);
    let own_cpu0 = own_cpu_seconds(p.clk_tck);
    let start = Instant::now();
    let end = start + p.cap;
    let mut sent = 0;
    while sent < n && Instant::now() < end {
        if sent.saturating_sub(min_received()) + batch() > p.window {
            // Asleep, not spinning: on a small machine a spinning publisher
            // takes CPU from the server and the subscribers it waits for
            // (the raw client's publisher blocks in its write instead). A
            // full window is milliseconds of work: no bubble in 200 us.
            thread::sleep(Duration::from_micros(200));
            continue;
        }
        let k = batch().min(n - sent);
        publisher.send(sent, k)?;
        sent += k;
    }
    let mut finished = 0;
    while finished < subs {
        match done_rx.recv_timeout(end.saturating_duration_since(Instant::now())) {
            Ok(()) => finished += 1,
            Err(_) => break, // the time cap
        }
    }
    // A run ends when every subscriber has every message and the publisher
    // every reply to them (hummer `SendReply`, Redis `:N`; NATS sends
    // none; an error counts as a reply), within the time cap. A single
    // server's replies come with the deliveries; a hummer cluster's come
    // back from the hub node over its link, and may come later: the run
    // does not end (nor the server's CPU get read) before the work is
    // done. Reading on also keeps the server from closing a publisher that
    // stopped reading.
    let expected_replies = match t.kind {
        Kind::Nats => 0,
        _ => sent,
    };
    let answered = || replies.load(Ordering::Relaxed) + errors.load(Ordering::Relaxed);
    let (last_delivery, answered_then) = (start.elapsed().as_secs_f64(), answered());
    while answered() < expected_replies && Instant::now() < end {
        thread::sleep(Duration::from_micros(200));
    }
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = t.cpu_seconds(p.clk_tck) - cpu0;
    let own_cpu = own_cpu_seconds(p.clk_tck) - own_cpu0;
    let delivered = total_received();
    if answered_then + expected_replies / 10 < expected_replies || answered() < expected_replies {
        eprintln!(
            "{} on {}: the publisher had {answered_then} of its {expected_replies} replies at the \
             last delivery ({last_delivery:.3} s), {} at the end ({elapsed:.3} s)",
            if subs == 1 { "1 -> 1" } else { "fan-out" },
            t.label,
            answered(),
        );
    }
    stop.store(true, Ordering::Relaxed);
    for th in threads {
        let _ = th.join();
    }
    close(publisher.c);
    let _ = drain.join();
    Ok(Outcome {
        rate: delivered as f64 / elapsed,
        p99: f64::NAN,
        deliveries: delivered,
        expected: n * subs,
        cpu_per_delivery: cpu / delivered.max(1) as f64,
        client_cores: own_cpu / elapsed,
        errors: errors.load(Ordering::Relaxed),
        missing_replies: expected_replies.saturating_sub(answered()),
    })
}

/// The answering peer: B.
struct Responder {
    c: Conn,
    pub_c: Option<Conn>,
    kind: Kind,
    uid: u64,
    peer: u64,
    sent_on_login: u64,
}

/// A request/reply round trip, one at a time: `samples` of them (after 50
/// unrecorded), bounded by `cap`. Returns (p50, p99) in µs.
fn rtt(t: &Target, run: u64, samples: u64, p: &Params) -> io::Result<Outcome> {
    let base = run * 10_000;
    let (a_uid, b_uid) = (base + 1, base + 2);
    let (req_topic, rep_topic) = (format!("rtt.req.{run}"), format!("rtt.rep.{run}"));
    let stop = Arc::new(AtomicBool::new(false));
    // B: the responder, on the hub node of a server of several nodes, A
    // on a gateway node: each leg crosses nodes.
    let (a_t, b_t) = (t.on(GATEWAY_NODE), t.on(HUB_NODE));
    let b_sub = subscriber(&b_t, b_uid, &Topic::User(b_uid, req_topic.clone()))?;
    let b_pub = match t.kind {
        Kind::Redis => Some(Publisher::open(&b_t, 0, &Topic::Channel(rep_topic.clone()))?.c),
        _ => None,
    };
    let mut b = Responder {
        c: b_sub,
        pub_c: b_pub,
        kind: t.kind,
        uid: b_uid,
        peer: a_uid,
        sent_on_login: 0,
    };
    let b_stop = stop.clone();
    let rep = rep_topic.clone();
    let b_thread = thread::spawn(move || -> io::Result<()> {
        let mut echoes = 0u64;
        while !b_stop.load(Ordering::Relaxed) {
            let Item::Msg {
                payload,
                reply,
                seq,
                ..
            } = b.c.next()?
            else {
                continue;
            };
            match b.kind {
                Kind::Hummer { reliable } => {
                    if reliable && seq > 0 {
                        hummer_frame(&mut b.c.out, 0, Body::Ack(Ack { p2p_seq: seq }));
                    }
                    hummer_frame(
                        &mut b.c.out,
                        7,
                        Body::SendToUser(SendToUserRequest {
                            receiver: b.peer,
                            message: Some(ChatMessage {
                                r#type: "text".into(),
                                content: payload,
                                app_extras: Default::default(),
                            }),
                            unreliable: !reliable,
                            message_id: {
                                echoes += 1;
                                message_id(echoes ^ (b.uid << 40) ^ (1 << 39))
                            },
                        }),
                    );
                    b.sent_on_login += 1;
                    if b.sent_on_login >= quota() {
                        hummer_frame(&mut b.c.out, 8, Body::Logout(Empty {}));
                        hummer_frame(&mut b.c.out, 9, login_body(b.uid));
                        b.sent_on_login = 0;
                    }
                    b.c.flush()?;
                }
                Kind::Nats => {
                    let to = reply.unwrap_or_else(|| Bytes::from(rep.clone()));
                    b.c.out.extend_from_slice(b"PUB ");
                    b.c.out.extend_from_slice(&to);
                    b.c.out
                        .extend_from_slice(format!(" {}\r\n", payload.len()).as_bytes());
                    b.c.out.extend_from_slice(&payload);
                    b.c.out.extend_from_slice(b"\r\n");
                    b.c.flush()?;
                }
                Kind::Redis => {
                    let pc = b.pub_c.as_mut().expect("redis publisher");
                    resp_command(&mut pc.out, &[b"PUBLISH", rep.as_bytes(), &payload]);
                    pc.flush()?;
                    wait_reply(pc, Duration::from_secs(5), "PUBLISH reply")?;
                }
            }
        }
        close(b.c);
        Ok(())
    });
    // A: the requester.
    let mut a = subscriber(&a_t, a_uid, &Topic::User(a_uid, rep_topic.clone()))?;
    let mut a_pub = match t.kind {
        Kind::Redis => Some(Publisher::open(&a_t, 0, &Topic::Channel(req_topic.clone()))?.c),
        _ => None,
    };
    let mut payload = vec![b'x'; PAYLOAD];
    let mut lat = Vec::with_capacity(samples as usize);
    let mut sent_on_login = 0;
    let cpu0 = t.cpu_seconds(p.clk_tck);
    let end = Instant::now() + p.cap;
    let warmup = 50;
    let mut errors = 0;
    let mut i = 0u64;
    // The sample right after a hummer re-login is not recorded (the re-login
    // only works around the binary's fixed rate limit).
    let mut skip = false;
    // HUMMER_LOAD_SLOW_US=N prints every round trip slower than N µs.
    let slow_us: Option<u64> = std::env::var("HUMMER_LOAD_SLOW_US")
        .ok()
        .and_then(|v| v.parse().ok());
    while (lat.len() as u64) < samples && i < 2 * samples + warmup && Instant::now() < end {
        payload[..8].copy_from_slice(&i.to_be_bytes());
        let t0 = Instant::now();
        match t.kind {
            Kind::Hummer { reliable } => {
                hummer_frame(
                    &mut a.out,
                    100 + i,
                    Body::SendToUser(SendToUserRequest {
                        receiver: b_uid,
                        message: Some(ChatMessage {
                            r#type: "text".into(),
                            content: Bytes::copy_from_slice(&payload),
                            app_extras: Default::default(),
                        }),
                        unreliable: !reliable,
                        message_id: message_id(i ^ (b_uid << 40) ^ (1 << 38)),
                    }),
                );
                a.flush()?;
            }
            Kind::Nats => {
                a.out.extend_from_slice(
                    format!("PUB {req_topic} {rep_topic} {PAYLOAD}\r\n").as_bytes(),
                );
                a.out.extend_from_slice(&payload);
                a.out.extend_from_slice(b"\r\n");
                a.flush()?;
            }
            Kind::Redis => {
                let pc = a_pub.as_mut().expect("redis publisher");
                resp_command(&mut pc.out, &[b"PUBLISH", req_topic.as_bytes(), &payload]);
                pc.flush()?;
            }
        }
        // Wait for the answer carrying this id (bounded by the cap).
        let mut answered = None;
        while Instant::now() < end {
            match a.next()? {
                Item::Msg {
                    payload: got, seq, ..
                } if got.len() >= 8 && got[..8] == payload[..8] => {
                    answered = Some((t0.elapsed(), seq));
                    break;
                }
                Item::Error(e) => {
                    errors += 1;
                    if errors <= 3 {
                        eprintln!("rtt requester got an error: {e}");
                    }
                }
                _ => {}
            }
        }
        let Some((d, seq)) = answered else { break };
        if i >= warmup && !skip {
            lat.push(d);
        }
        if slow_us.is_some_and(|us| d > Duration::from_micros(us)) {
            eprintln!(
                "slow round trip: sample {i} ({} since a re-login) {d:?}",
                sent_on_login
            );
        }
        skip = false;
        // Bookkeeping outside the timed part.
        match t.kind {
            Kind::Hummer { reliable } => {
                if reliable && seq > 0 {
                    hummer_frame(&mut a.out, 0, Body::Ack(Ack { p2p_seq: seq }));
                }
                sent_on_login += 1;
                if sent_on_login >= quota() {
                    hummer_frame(&mut a.out, 1_000_000 + i, Body::Logout(Empty {}));
                    hummer_frame(&mut a.out, 2_000_000 + i, login_body(a_uid));
                    a.flush()?;
                    // Wait for the new login, then let B's settle too.
                    let cap = Duration::from_secs(5);
                    loop {
                        if let Body::LoginReply(_) = wait_reply(&mut a, cap, "relogin")? {
                            break;
                        }
                    }
                    thread::sleep(Duration::from_millis(2));
                    sent_on_login = 0;
                    skip = true;
                }
                a.flush()?;
            }
            Kind::Redis => {
                let pc = a_pub.as_mut().expect("redis publisher");
                wait_reply(pc, Duration::from_secs(5), "PUBLISH reply")?;
            }
            Kind::Nats => {}
        }
        i += 1;
    }
    let cpu = t.cpu_seconds(p.clk_tck) - cpu0;
    stop.store(true, Ordering::Relaxed);
    close(a);
    if let Some(c) = a_pub {
        close(c);
    }
    // B notices the stop within one read timeout.
    let _ = b_thread.join();
    lat.sort();
    let pct = |q: f64| -> f64 {
        if lat.is_empty() {
            return f64::NAN;
        }
        let idx = ((lat.len() as f64 * q).ceil() as usize).clamp(1, lat.len()) - 1;
        lat[idx].as_secs_f64() * 1e6
    };
    let n = lat.len() as u64;
    Ok(Outcome {
        rate: pct(0.50),
        p99: pct(0.99),
        deliveries: n * 2,
        expected: samples * 2,
        cpu_per_delivery: cpu / (n * 2).max(1) as f64,
        client_cores: f64::NAN,
        errors,
        missing_replies: 0,
    })
}

// ---------------------------------------------------------------- raw check --

/// `hummer-load raw --kind nats|redis|hummer --addr ADDR`: one run of the
/// raw client (raw.rs), printed.
fn raw_once(args: &HashMap<String, String>) -> Result<(), String> {
    let addr: SocketAddr = args
        .get("addr")
        .ok_or("--addr is required")?
        .parse()
        .map_err(|_| "--addr: not an address")?;
    let kind = match args.get("kind").map(String::as_str) {
        Some("nats") => Kind::Nats,
        Some("redis") => Kind::Redis,
        Some("hummer") => Kind::Hummer { reliable: false },
        _ => return Err("--kind nats|redis|hummer is required".into()),
    };
    let num = |k: &str, d: u64| args.get(k).and_then(|v| v.parse().ok()).unwrap_or(d);
    let (n, subs) = (num("messages", 10_000), num("subscribers", 100));
    let cap = Duration::from_secs(num("time-cap-secs", 15));
    let clk_tck = num("clk-tck", 100) as f64;
    let server_pid = args.get("server-pid").and_then(|v| v.parse().ok());
    let dial = transport::Dial::from_args(args, addr)?;
    let o = match dial.transport {
        transport::Transport::Tcp => {
            raw::run(kind, addr, num("run", 1), n, subs, cap, clk_tck, server_pid)
        }
        _ if kind != (Kind::Hummer { reliable: false }) => {
            return Err("--transport tls|ws|wss is for --kind hummer".into())
        }
        _ => rawlink::run(&dial, num("run", 1), n, subs, cap, clk_tck, server_pid),
    }
    .map_err(|e| format!("raw {} over {}: {e}", kind.name(), dial.transport.name()))?;
    println!(
        "raw {} 1 pub -> {subs} subs: {:.0} deliveries/s, delivered {}/{}",
        kind.name(),
        o.rate,
        o.delivered,
        o.expected
    );
    println!(
        "SUMMARY raw transport={} subs={subs} rate={:.0} delivered={} expected={} \
         server_us_per_delivery={:.3} client_us_per_delivery={:.3}",
        dial.transport.name(),
        o.rate,
        o.delivered,
        o.expected,
        o.server_cpu / o.delivered.max(1) as f64 * 1e6,
        o.cpu / o.delivered.max(1) as f64 * 1e6,
    );
    Ok(())
}

/// `hummer-load rawcheck`: the 1 -> 1 and fan-out workloads through
/// hummer-load's clients and through the raw client, interleaved (which
/// goes first alternates by repetition), against the same servers: the two
/// should agree when hummer-load's clients are not what limits the rate.
fn rawcheck(args: &HashMap<String, String>) -> Result<(), String> {
    let p = params(args);
    let reps = p.reps;
    if args.contains_key("hummer-unlimited") {
        QUOTA.store(u64::MAX, Ordering::Relaxed);
    }
    // The first of a comma-separated list (of a server of several nodes,
    // `ADDR+ADDR`: its first node, as a server of its own here).
    let first = |k: &str| args.get(k).and_then(|v| v.split([',', '+']).next());
    let pid = |k: &str| first(k).and_then(|v| v.parse().ok());
    let mut targets = Vec::new();
    for (k, kind) in [("nats", Kind::Nats), ("redis", Kind::Redis)] {
        if let Some(a) = first(k) {
            let addr = a.parse().map_err(|_| format!("--{k}: not an address"))?;
            targets.push(Target::new(kind, addr, pid(&format!("{k}-pid")), ""));
        }
    }
    // The raw client does not log in again: only against a server without
    // the send limit.
    if let (Some(a), true) = (first("hummer"), args.contains_key("hummer-unlimited")) {
        let addr = a.parse().map_err(|_| "--hummer: not an address")?;
        let kind = Kind::Hummer { reliable: false };
        targets.push(Target::new(kind, addr, pid("hummer-pid"), ""));
    }
    targets.retain(|t| {
        args.get("targets")
            .is_none_or(|v| v.split(',').any(|x| x == t.kind.name()))
    });
    // Whatever a server still does after an earlier run (the scaling
    // workload's teardown) would slow this one.
    wait_idle(
        &targets
            .iter()
            .flat_map(|t| t.pids.iter().copied())
            .collect::<Vec<_>>(),
        p.clk_tck,
    );
    let mut failed = Vec::new();
    let workloads = [
        ("1 pub -> 1 sub, messages/s", p.messages, 1),
        (
            "1 pub -> N subs, deliveries/s",
            p.fanout_messages,
            p.subscribers,
        ),
    ];
    // Far from compare's run numbers (uids and subject names).
    let mut run = 1_000u64;
    // (workload, target) -> (hummer-load, raw) per repetition.
    let mut results: HashMap<(usize, &str), Vec<(Outcome, raw::RawOutcome)>> = HashMap::new();
    for rep in 0..reps {
        for (wi, &(label, n, subs)) in workloads.iter().enumerate() {
            for t in &targets {
                // The raw client's names and uids are its own: one run number.
                run += 1;
                let load = || {
                    pubsub(t, run, n, subs, GATEWAY_NODE, &p)
                        .map_err(|e| format!("{label} on {}: {e}", t.label))
                };
                let raw_run = || {
                    let pid = t.pids.first().copied();
                    raw::run(t.kind, t.addr, run, n, subs, p.cap, p.clk_tck, pid)
                        .map_err(|e| format!("raw {label} on {}: {e}", t.label))
                };
                let pair = if rep % 2 == 0 {
                    load().and_then(|l| Ok((l, raw_run()?)))
                } else {
                    raw_run().and_then(|r| Ok((load()?, r)))
                };
                // One failure does not end the check of the others.
                let (l, r) = match pair {
                    Ok(pair) => pair,
                    Err(e) => {
                        eprintln!("rawcheck: {e}");
                        failed.push(e);
                        continue;
                    }
                };
                eprintln!(
                    "rep {} {:30} {:8} hummer-load {:>10.0} delivered {}/{} cores {:.2}, raw {:>10.0} delivered {}/{} cores {:.2}",
                    rep + 1,
                    label.replace('N', &subs.to_string()),
                    t.label,
                    l.rate,
                    l.deliveries,
                    l.expected,
                    l.client_cores,
                    r.rate,
                    r.delivered,
                    r.expected,
                    r.cpu * r.rate / r.delivered.max(1) as f64,
                );
                results
                    .entry((wi, t.label.as_str()))
                    .or_default()
                    .push((l, r));
            }
        }
    }
    println!();
    println!(
        "Raw check: hummer-load's clients against the raw client (one pre-built write, \
         subscribers only counting), medians of {reps} interleaved repetitions; the ratio is \
         computed within each repetition, then the median taken (near 1: hummer-load's \
         clients do not limit the rate)."
    );
    println!(
        "| workload | server | hummer-load | raw client | hummer-load/raw | \
         load generator ns/delivery, hummer-load | same, raw client |"
    );
    println!("| --- | --- | ---: | ---: | ---: | ---: | ---: |");
    let mut short = Vec::new();
    for (wi, &(label, _, subs)) in workloads.iter().enumerate() {
        for t in &targets {
            let Some(v) = results.get(&(wi, t.label.as_str())) else {
                continue;
            };
            let label = label.replace('N', &subs.to_string());
            // CPU from clock ticks: coarse for runs of a few hundred ms.
            let ns = |cores: f64, rate: f64| cores / rate * 1e9;
            println!(
                "| {label} | {} | {} | {} | {:.2} | {} | {} |",
                t.label,
                fmt(median(v.iter().map(|(l, _)| l.rate).collect())),
                fmt(median(v.iter().map(|(_, r)| r.rate).collect())),
                median(v.iter().map(|(l, r)| l.rate / r.rate).collect()),
                fmt(median(
                    v.iter().map(|(l, _)| ns(l.client_cores, l.rate)).collect()
                )),
                fmt(median(
                    v.iter()
                        .map(|(_, r)| r.cpu / r.delivered.max(1) as f64 * 1e9)
                        .collect()
                )),
            );
            if v.iter()
                .any(|(l, r)| l.deliveries < l.expected || r.delivered < r.expected || l.errors > 0)
            {
                short.push(format!("{label} on {}", t.label));
            }
        }
    }
    if short.is_empty() && failed.is_empty() {
        println!("\nEvery run of both clients delivered every message.");
    }
    if !short.is_empty() {
        println!(
            "\nShort runs (time cap, losses or errors): {}",
            short.join("; ")
        );
    }
    if !failed.is_empty() {
        println!("\nFailed runs: {}", failed.join("; "));
    }
    Ok(())
}

// ------------------------------------------------------------------ compare --

/// What a hummer target is made of, and what its server CPU sums.
fn describe(t: &Target, node_pids: &[u32]) -> String {
    let pid = |i: usize| {
        node_pids
            .get(i)
            .map_or(String::new(), |p| format!(", pid {p}"))
    };
    let nodes: Vec<String> = t
        .nodes
        .iter()
        .enumerate()
        .map(|(i, a)| match (t.several_nodes(), i) {
            (false, _) => format!("{a}{}", pid(i)),
            (true, HUB_NODE) => format!("{a} (hub node{})", pid(i)),
            (true, _) => format!("{a} (gateway node{})", pid(i)),
        })
        .collect();
    let engine = match t.engine[..] {
        [] => String::new(),
        [(a, Some(pid))] => format!(" and its engine's Redis ({a}, pid {pid})"),
        [(a, None)] => format!("; engine Redis {a} (no pid: not counted)"),
        ref several => {
            let counted: Vec<String> = several
                .iter()
                .filter_map(|(a, pid)| pid.map(|p| format!("{a}, pid {p}")))
                .collect();
            let uncounted: Vec<String> = several
                .iter()
                .filter(|(_, pid)| pid.is_none())
                .map(|(a, _)| a.to_string())
                .collect();
            let mut e = String::new();
            if !counted.is_empty() {
                e += &format!(
                    " and its engine's {} Redis instances ({})",
                    counted.len(),
                    counted.join("; ")
                );
            }
            if !uncounted.is_empty() {
                e += &format!(
                    "; engine Redis {} (no pid: not counted)",
                    uncounted.join(", ")
                );
            }
            e
        }
    };
    let what = if t.several_nodes() {
        format!("{} nodes", t.nodes.len())
    } else {
        "1 node".to_owned()
    };
    format!(
        "{}: {what}, {}; server CPU: the sum over the node{}{engine}",
        t.label,
        nodes.join(", "),
        if t.several_nodes() { "s" } else { "" }
    )
}

fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn compare(args: &HashMap<String, String>) -> Result<(), String> {
    let addr = |k: &str| -> Result<SocketAddr, String> {
        args.get(k)
            .ok_or(format!("--{k} is required"))?
            .parse()
            .map_err(|_| format!("--{k}: not an address"))
    };
    let pid = |k: &str| args.get(k).and_then(|v| v.parse().ok());
    let p = params(args);
    let reps = p.reps;
    let num = |k: &str, d: u64| args.get(k).and_then(|v| v.parse().ok()).unwrap_or(d);
    let sp = ScaleParams {
        channels: num("scale-channels", 1_000),
        members: num("scale-members", 10),
        messages: num(
            "scale-messages",
            if args.contains_key("quick") {
                100
            } else {
                1_000
            },
        ),
        publisher_threads: num("scale-publisher-threads", 2),
        reader_threads: num("scale-reader-threads", 2),
        window: num("scale-window", 4 * batch()),
        // hummer-server takes tens of seconds to close 11,000 connections
        // (and goes idle before the next run): 3 repetitions of this one.
        reps: num("scale-reps", p.reps.min(3)),
    };
    // Every hummer server to measure: (its nodes' addresses, their pids,
    // variant label); one node but for a cluster.
    let mut hummers: Vec<(Vec<SocketAddr>, Vec<u32>, String)> = Vec::new();
    // Per hummer server, the Redis of its `--engine redis://…` (one per
    // instance of its store), if any.
    let mut engines: Vec<engine::Instances> = Vec::new();
    // A sanity run only: an in-process server with no rate limit (so no
    // re-logins), sharing this process's CPU with the clients.
    let mut _inprocess = None;
    if args.contains_key("inprocess-hummer") {
        let mut config = ServerConfig::demo();
        config.rate_limit_window = Duration::ZERO;
        // Every client of this tool logs in from 127.0.0.1, and floods.
        let unlimited = RateLimit::new(u64::MAX / 4, Duration::from_secs(3));
        config.rate_limits.sends = unlimited;
        config.rate_limits.logins_per_address = unlimited;
        let handle = ServerHandle::spawn(config, "127.0.0.1:0".parse().expect("address"))
            .map_err(|e| format!("in-process server: {e}"))?;
        let a = handle.local_addr();
        _inprocess = Some(handle);
        QUOTA.store(u64::MAX, Ordering::Relaxed);
        eprintln!("hummer: in-process server on {a} (no rate limit; CPU not measured)");
        hummers.push((vec![a], Vec::new(), String::new()));
    } else {
        if args.contains_key("hummer-unlimited") {
            // Started with --rate-limit-sends high enough: no re-logins.
            QUOTA.store(u64::MAX, Ordering::Relaxed);
        }
        // Several servers (e.g. one per `--threads N`): comma-separated
        // addresses, pids and variant labels, in the same order; a server
        // of several nodes (a cluster) has its nodes' addresses and pids
        // joined by '+', the hub node's first.
        let list = |k: &str| -> Vec<String> {
            args.get(k)
                .map_or(Vec::new(), |v| v.split(',').map(str::to_owned).collect())
        };
        let (pids, variants) = (list("hummer-pid"), list("hummer-variants"));
        let addrs = list("hummer");
        if addrs.is_empty() {
            return Err("--hummer is required".into());
        }
        // "-" (or nothing) for a server without a Redis engine; a store
        // over several instances has them joined by '+'.
        engines = engine::parse_servers(
            &list("hummer-engine-redis"),
            &list("hummer-engine-pid"),
            addrs.len(),
        )?;
        for (i, a) in addrs.iter().enumerate() {
            let nodes = a
                .split('+')
                .map(|a| {
                    a.parse()
                        .map_err(|_| format!("--hummer: {a:?} is not an address"))
                })
                .collect::<Result<Vec<SocketAddr>, _>>()?;
            let node_pids: Vec<u32> = pids.get(i).map_or(Vec::new(), |v| {
                v.split('+').filter_map(|p| p.parse().ok()).collect()
            });
            if !node_pids.is_empty() && node_pids.len() != nodes.len() {
                return Err(format!("--hummer-pid: {} pids for {a}", node_pids.len()));
            }
            hummers.push((
                nodes,
                node_pids,
                variants.get(i).cloned().unwrap_or_default(),
            ));
        }
    }
    // Per repetition: each hummer server's unreliable run, the brokers
    // after the first one's, then its reliable run.
    let mut all = Vec::new();
    for (i, (nodes, node_pids, v)) in hummers.iter().enumerate() {
        let engine = engines.get(i).cloned().unwrap_or_default();
        // The server's CPU: every node's and its engine Redis's.
        let mut pids = node_pids.clone();
        pids.extend(engine.iter().filter_map(|&(_, pid)| pid));
        let hummer = |reliable| Target {
            engine: engine.clone(),
            nodes: nodes.clone(),
            pids: pids.clone(),
            ..Target::new(Kind::Hummer { reliable }, nodes[0], None, v)
        };
        println!("{}", describe(&hummer(false), node_pids));
        all.push(hummer(false));
        if i == 0 {
            all.push(Target::new(Kind::Nats, addr("nats")?, pid("nats-pid"), ""));
            all.push(Target::new(
                Kind::Redis,
                addr("redis")?,
                pid("redis-pid"),
                "",
            ));
        }
        all.push(hummer(true));
    }
    let only = |list: &str, name: &str| {
        args.get(list)
            .is_none_or(|v| v.split(',').any(|x| x == name))
    };
    let targets: Vec<Target> = all
        .into_iter()
        .filter(|t| only("targets", t.kind.name()))
        .collect();
    let mut workloads: Vec<&str> = ["pubsub", "fanout", "rtt", "scale"]
        .into_iter()
        .filter(|w| only("workloads", w))
        .collect();
    // A server of several nodes runs 1 -> 1 both ways: "pubsub" from a
    // gateway node to the hub node, "pubsub-rev" from the hub node to a
    // gateway node (only those servers run it).
    if workloads.contains(&"pubsub") && targets.iter().any(Target::several_nodes) {
        workloads.insert(1, "pubsub-rev");
    }
    let mut results: HashMap<(&str, &str), Vec<Outcome>> = HashMap::new();
    // Per workload and target with a Redis engine: what its Redis ran.
    let mut engine_runs: HashMap<(&str, &str), Vec<EngineRun>> = HashMap::new();
    let mut run = 1u64;
    for rep in 0..reps {
        for &w in &workloads {
            if w == "scale" && rep >= sp.reps {
                continue;
            }
            for t in &targets {
                if w == "pubsub-rev" && !t.several_nodes() {
                    continue;
                }
                run += 1;
                // Every instance's commands, and the engine's CPU (the sum).
                let engine_stats =
                    |t: &Target| -> Result<(Vec<engine::CommandStats>, f64), String> {
                        let stats = t
                            .engine
                            .iter()
                            .map(|&(a, _)| {
                                engine::command_stats(a)
                                    .map_err(|e| format!("INFO commandstats of {a}: {e}"))
                            })
                            .collect::<Result<_, _>>()?;
                        let cpu = t
                            .engine
                            .iter()
                            .map(|&(_, pid)| cpu_seconds(pid, p.clk_tck))
                            .sum();
                        Ok((stats, cpu))
                    };
                let engine_before = if t.engine.is_empty() {
                    None
                } else {
                    Some(engine_stats(t)?)
                };
                let o = match w {
                    "pubsub" => pubsub(t, run, p.messages, 1, GATEWAY_NODE, &p),
                    "pubsub-rev" => pubsub(t, run, p.messages, 1, HUB_NODE, &p),
                    "fanout" => pubsub(t, run, p.fanout_messages, p.subscribers, GATEWAY_NODE, &p),
                    "scale" => scale::scale(t, run, &sp, &p),
                    _ => rtt(t, run, p.rtt_samples, &p),
                }
                .map_err(|e| format!("{w} on {}: {e}", t.label))?;
                if let Some((stats0, cpu0)) = engine_before {
                    let (stats, cpu) = engine_stats(t)?;
                    let deltas: Vec<engine::CommandStats> = stats0
                        .iter()
                        .zip(&stats)
                        .map(|(b, a)| engine::delta(b, a))
                        .collect();
                    // Published: each delivery of the 1 -> 1 and round-trip
                    // workloads is one message, the fan-out's go to every
                    // subscriber, the scaling one's to each member.
                    let per = match w {
                        "fanout" => p.subscribers,
                        "scale" => sp.members,
                        _ => 1,
                    };
                    let r = EngineRun {
                        published: o.deliveries.div_ceil(per.max(1)),
                        delivered: o.deliveries,
                        commands: engine::sum(&deltas),
                        per_instance: deltas.iter().map(engine::total).collect(),
                        cpu: cpu - cpu0,
                    };
                    let mut by_name: Vec<(&String, &u64)> = r.commands.iter().collect();
                    by_name.sort_by(|a, b| b.1.cmp(a.1));
                    let by_name: Vec<String> =
                        by_name.iter().map(|(n, c)| format!("{n} {c}")).collect();
                    // Several instances: how the commands split over them.
                    let split = if r.per_instance.len() > 1 {
                        let v: Vec<String> = r.per_instance.iter().map(u64::to_string).collect();
                        format!(" [per instance: {}]", v.join(" + "))
                    } else {
                        String::new()
                    };
                    eprintln!(
                        "rep {} {w:7} {:19} engine: {} round trips, {} commands{split} ({}) for {} published, {} delivered",
                        rep + 1,
                        t.label,
                        engine::round_trips(&r.commands),
                        engine::total(&r.commands),
                        by_name.join(", "),
                        r.published,
                        r.delivered
                    );
                    engine_runs
                        .entry((w, t.label.as_str()))
                        .or_default()
                        .push(r);
                }
                eprintln!(
                    "rep {} {w:7} {:19} {:>12.1} {:>9.1} delivered {}/{} errors {} cpu/delivery {:.3e} load cores {:.2}",
                    rep + 1,
                    t.label,
                    o.rate,
                    o.p99,
                    o.deliveries,
                    o.expected,
                    o.errors,
                    o.cpu_per_delivery,
                    o.client_cores
                );
                results.entry((w, t.label.as_str())).or_default().push(o);
            }
        }
    }
    let values = |w: &str, k: &str, f: fn(&Outcome) -> f64| -> Vec<f64> {
        results
            .get(&(w, k))
            .map_or(Vec::new(), |v| v.iter().map(f).collect())
    };
    // The runs a row compares a server against: those of the row's
    // workload, or for a server that does not run it (only servers of
    // several nodes run "pubsub-rev"), of the workload it stands for.
    let runs_of = |w: &'static str, k: &str| -> &'static str {
        match w {
            "pubsub-rev" if !results.contains_key(&(w, k)) => "pubsub",
            w => w,
        }
    };
    // The median over repetitions of the ratio within each repetition: the
    // baseline is always measured in the same pass, seconds apart.
    let ratio = |w: &'static str, a: &str, b: &str, f: fn(&Outcome) -> f64| -> f64 {
        let (x, y) = (values(w, a, f), values(runs_of(w, b), b, f));
        median(x.iter().zip(&y).map(|(x, y)| x / y).collect())
    };
    let cpu = |o: &Outcome| o.cpu_per_delivery * 1e6;
    /// Workload, label, the figure of one run.
    type Row = (&'static str, String, fn(&Outcome) -> f64);
    let rows: Vec<Row> = vec![
        ("pubsub", "1 pub -> 1 sub, messages/s".into(), |o| o.rate),
        (
            "pubsub-rev",
            "1 pub -> 1 sub, publisher on the hub node, messages/s".into(),
            |o| o.rate,
        ),
        (
            "fanout",
            format!("1 pub -> {} subs, deliveries/s", p.subscribers),
            |o| o.rate,
        ),
        (
            "scale",
            format!(
                "{} channels x (1 pub -> {} subs), deliveries/s",
                sp.channels, sp.members
            ),
            |o| o.rate,
        ),
        ("rtt", "round trip p50, us".into(), |o| o.rate),
        ("rtt", "round trip p99, us".into(), |o| o.p99),
        ("pubsub", "server CPU us per delivery, pubsub".into(), cpu),
        (
            "pubsub-rev",
            "server CPU us per delivery, pubsub publisher on the hub node".into(),
            cpu,
        ),
        ("fanout", "server CPU us per delivery, fanout".into(), cpu),
        ("scale", "server CPU us per delivery, scale".into(), cpu),
        ("rtt", "server CPU us per delivery, rtt".into(), cpu),
        ("pubsub", "load generator CPU, cores, pubsub".into(), |o| {
            o.client_cores
        }),
        (
            "pubsub-rev",
            "load generator CPU, cores, pubsub publisher on the hub node".into(),
            |o| o.client_cores,
        ),
        ("fanout", "load generator CPU, cores, fanout".into(), |o| {
            o.client_cores
        }),
        ("scale", "load generator CPU, cores, scale".into(), |o| {
            o.client_cores
        }),
    ];
    // Columns: each hummer target (the first one's before the brokers'),
    // with its ratios to NATS and Redis.
    struct Column {
        /// The target's label (the key of its results).
        key: String,
        title: String,
        short: String,
        variant: String,
        reliable: bool,
    }
    let hummer_columns: Vec<Column> = hummers
        .iter()
        .flat_map(|(nodes, _, v)| {
            [false, true].map(|reliable| {
                let t = Target::new(Kind::Hummer { reliable }, nodes[0], None, v);
                let short = if reliable { "reliable" } else { "hummer" };
                let short = format!("{short} {v}").trim_end().to_owned();
                Column {
                    key: t.label.clone(),
                    title: t.label.replace('-', " "),
                    short,
                    variant: v.clone(),
                    reliable,
                }
            })
        })
        .collect();
    // The other hummer columns each one is compared with, same reliability:
    // the first server (every other server), and for a cluster the
    // single server with the same engine and threads (`redis-engine` for
    // `cluster`, `t2-redis-engine` for `t2-cluster`), and for a server
    // whose store is on two Redis the one on one (`redis-engine` for
    // `redis2-engine`).
    let bases: Vec<Vec<usize>> = hummer_columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let mut b = Vec::new();
            if i >= 2 {
                b.push(i % 2);
            }
            let prefix = c
                .variant
                .strip_suffix("cluster")
                .or_else(|| c.variant.strip_suffix("redis2-engine"));
            if let Some(prefix) = prefix {
                let single = format!("{prefix}redis-engine");
                if let Some(j) = hummer_columns
                    .iter()
                    .position(|d| d.variant == single && d.reliable == c.reliable)
                {
                    if !b.contains(&j) {
                        b.push(j);
                    }
                }
            }
            b
        })
        .collect();
    println!();
    println!(
        "Medians of {reps} interleaved repetitions{}. Ratios are hummer / broker (and hummer / \
         another hummer server), computed within each repetition, then the median taken (rates: \
         higher is better; latencies and CPU: lower is better). Server CPU: the sum over the \
         server's processes (every node, and the engine's Redis).",
        if workloads.contains(&"scale") && sp.reps < reps {
            format!(" ({} for the channels x subs rows)", sp.reps)
        } else {
            String::new()
        }
    );
    if targets.iter().any(Target::several_nodes) {
        println!(
            "A server of several nodes: 1 -> 1 with the publisher on a gateway node and the \
             subscriber on the hub node (and the reverse, a row of its own, compared with the \
             others' 1 -> 1 runs of the same repetition); the fan-out's subscribers on every \
             node in turn, its publisher on a gateway node; the round trip's requester on a \
             gateway node, its responder on the hub node."
        );
    }
    let mut header = String::from("| workload |");
    let mut columns = 1;
    for (i, c) in hummer_columns.iter().enumerate() {
        header += &format!(" {} |", c.title);
        if i == 0 {
            header += " nats | redis |";
            columns += 2;
        }
        header += &format!(" {short}/nats | {short}/redis |", short = c.short);
        columns += 3;
        for &j in &bases[i] {
            header += &format!(" {}/{} |", c.short, hummer_columns[j].short);
            columns += 1;
        }
    }
    println!("{header}");
    println!("| --- |{}", " ---: |".repeat(columns - 1));
    for (w, label, f) in rows {
        if !workloads.contains(&w) {
            continue;
        }
        // A server without runs of its own for this row: "-".
        let has = |k: &str| results.contains_key(&(w, k));
        let m = |k: &str| {
            if has(k) {
                fmt(median(values(w, k, f)))
            } else {
                "-".into()
            }
        };
        // The load generator's CPU is not the server's: no ratio.
        let r = |k: &str, b: &str| {
            if has(k) && !label.starts_with("load generator") {
                format!("{:.2}", ratio(w, k, b, f))
            } else {
                "-".into()
            }
        };
        let mut line = format!("| {label} |");
        for (i, c) in hummer_columns.iter().enumerate() {
            line += &format!(" {} |", m(&c.key));
            if i == 0 {
                line += &format!(" {} | {} |", m("nats"), m("redis"));
            }
            line += &format!(" {} | {} |", r(&c.key, "nats"), r(&c.key, "redis"));
            for &j in &bases[i] {
                line += &format!(" {} |", r(&c.key, &hummer_columns[j].key));
            }
        }
        println!("{line}");
    }
    let lost: Vec<String> = results
        .iter()
        .filter(|(_, v)| {
            v.iter()
                .any(|o| o.deliveries < o.expected || o.errors > 0 || o.missing_replies > 0)
        })
        .map(|((w, k), v)| {
            format!(
                "{w}/{k}: delivered {:?} of {}, errors {:?}, replies missing {:?}",
                v.iter().map(|o| o.deliveries).collect::<Vec<_>>(),
                v[0].expected,
                v.iter().map(|o| o.errors).collect::<Vec<_>>(),
                v.iter().map(|o| o.missing_replies).collect::<Vec<_>>()
            )
        })
        .collect();
    if lost.is_empty() {
        println!(
            "\nEvery run delivered every message, with no error replies; every publisher had \
             every reply."
        );
    } else {
        println!("\nShort runs (time cap or errors): {}", lost.join("; "));
    }
    print_engine_runs(&engine_runs, &workloads, &all_labels(&targets));
    Ok(())
}

/// What a hummer-server's Redis engine ran during one run.
struct EngineRun {
    published: u64,
    delivered: u64,
    /// Summed over the instances of the store.
    commands: engine::CommandStats,
    /// Every command per instance of the store, in the order given.
    per_instance: Vec<u64>,
    /// The engine Redis's CPU over the run, seconds (every instance's).
    cpu: f64,
}

fn all_labels(targets: &[Target]) -> Vec<String> {
    targets.iter().map(|t| t.label.clone()).collect()
}

/// The commands each Redis engine ran per published and per delivered
/// message: medians over the repetitions.
fn print_engine_runs(
    runs: &HashMap<(&str, &str), Vec<EngineRun>>,
    workloads: &[&str],
    labels: &[String],
) {
    if runs.is_empty() {
        return;
    }
    println!();
    println!(
        "Redis engine: the engine's INFO commandstats read before and after each run (medians \
         of the repetitions). Round trips: EVAL/EVALSHA calls (one per batch, plus the lease's \
         renewals); commands: every cmdstat call, the scripts' inner commands included. \
         Published: per message sent (round trip: per message each way)."
    );
    println!(
        "| workload | server | published | delivered | round trips / published | commands / published \
         | commands / delivered | commands / round trip | engine Redis CPU us / delivery | commands per published, by name |"
    );
    println!("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |");
    for &w in workloads {
        for label in labels {
            let Some(v) = runs.get(&(w, label.as_str())) else {
                continue;
            };
            let m = |f: &dyn Fn(&EngineRun) -> f64| median(v.iter().map(f).collect());
            let per_pub = |r: &EngineRun, x: u64| x as f64 / r.published.max(1) as f64;
            let mut names: Vec<&String> = v.iter().flat_map(|r| r.commands.keys()).collect();
            names.sort();
            names.dedup();
            let mut by_name: Vec<(f64, &String)> = names
                .into_iter()
                .map(|n| {
                    (
                        m(&|r| per_pub(r, r.commands.get(n).copied().unwrap_or(0))),
                        n,
                    )
                })
                .collect();
            by_name.sort_by(|a, b| b.0.total_cmp(&a.0));
            let by_name: Vec<String> = by_name
                .iter()
                .filter(|(x, _)| *x > 0.0)
                .map(|(x, n)| format!("{n} {x:.3}"))
                .collect();
            println!(
                "| {w} | {label} | {} | {} | {:.4} | {:.4} | {:.4} | {:.1} | {} | {} |",
                fmt(m(&|r| r.published as f64)),
                fmt(m(&|r| r.delivered as f64)),
                m(&|r| per_pub(r, engine::round_trips(&r.commands))),
                m(&|r| per_pub(r, engine::total(&r.commands))),
                m(&|r| engine::total(&r.commands) as f64 / r.delivered.max(1) as f64),
                m(&|r| {
                    engine::total(&r.commands) as f64
                        / engine::round_trips(&r.commands).max(1) as f64
                }),
                fmt(m(&|r| r.cpu / r.delivered.max(1) as f64 * 1e6)),
                by_name.join(", ")
            );
        }
    }
    // A store over several instances: each one's share (a table of its
    // own, so that the one above reads the same for one Redis).
    if !runs.values().flatten().any(|r| r.per_instance.len() > 1) {
        return;
    }
    println!();
    println!(
        "Redis engine over several instances: commands per published message on each instance, \
         the busiest first in every run (medians of the repetitions: which instance is the \
         busiest depends on where the run's channels and inboxes hash, a new set each run), and \
         every run's commands per instance in the order of --engine."
    );
    println!(
        "| workload | server | commands / published, per instance, busiest first \
         | share of the commands, busiest first | commands per instance, each run |"
    );
    println!("| --- | --- | --- | --- | --- |");
    for &w in workloads {
        for label in labels {
            let Some(v) = runs.get(&(w, label.as_str())) else {
                continue;
            };
            let n = v.iter().map(|r| r.per_instance.len()).max().unwrap_or(0);
            if n < 2 {
                continue;
            }
            let m = |f: &dyn Fn(&EngineRun) -> f64| median(v.iter().map(f).collect());
            // The i-th busiest instance of a run.
            let at = |r: &EngineRun, i: usize| {
                let mut c = r.per_instance.clone();
                c.sort_unstable_by(|a, b| b.cmp(a));
                c.get(i).copied().unwrap_or(0) as f64
            };
            let per_pub: Vec<String> = (0..n)
                .map(|i| format!("{:.4}", m(&|r| at(r, i) / r.published.max(1) as f64)))
                .collect();
            let share: Vec<String> = (0..n)
                .map(|i| {
                    format!(
                        "{:.0}%",
                        m(&|r| at(r, i) / engine::total(&r.commands).max(1) as f64 * 100.0)
                    )
                })
                .collect();
            let each: Vec<String> = v
                .iter()
                .map(|r| {
                    let c: Vec<String> = r.per_instance.iter().map(u64::to_string).collect();
                    c.join(" + ")
                })
                .collect();
            println!(
                "| {w} | {label} | {} | {} | {} |",
                per_pub.join(" + "),
                share.join(" + "),
                each.join("; ")
            );
        }
    }
}

fn fmt(v: f64) -> String {
    if !v.is_finite() {
        "n/a".into()
    } else if v >= 10_000.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

// --------------------------------------------------------------------- idle --

fn vm_rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Opens `conns` connections, logs each in (a distinct uid), holds them idle
/// for `hold` and reports the server's VmRSS before and after.
fn idle(args: &HashMap<String, String>) -> Result<(), String> {
    let addr: SocketAddr = args
        .get("addr")
        .ok_or("--addr is required")?
        .parse()
        .map_err(|_| "--addr: not an address")?;
    let pid: u32 = args
        .get("server-pid")
        .and_then(|v| v.parse().ok())
        .ok_or("--server-pid is required")?;
    let n: usize = args
        .get("conns")
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let hold = Duration::from_secs(
        args.get("hold-secs")
            .and_then(|v| v.parse().ok())
            .unwrap_or(3),
    );
    let dial = transport::Dial::from_args(args, addr)?;
    if dial.transport != transport::Transport::Tcp {
        let (count, opened, before, after) = rawlink::idle(&dial, pid, n, hold)?;
        println!(
            "SUMMARY idle: {count} logged-in idle connections over {} (opened in {opened:.1} s): server VmRSS {before} KiB before, {after} KiB after; {:.0} bytes per connection",
            dial.describe().map_err(|e| e.to_string())?,
            (after.saturating_sub(before) * 1024) as f64 / count.max(1) as f64
        );
        return Ok(());
    }
    let kind = Kind::Hummer { reliable: false };
    let before = vm_rss_kib(pid).ok_or("cannot read the server's VmRSS")?;
    let start = Instant::now();
    let cap = Duration::from_secs(120);
    let mut conns = Vec::with_capacity(n);
    // Log in in waves of 500: write all the logins, then read the replies.
    // Every 10 s each open connection sends a Ping, as a client would, so
    // none reaches the server's idle timeout (45 s) on a slow machine.
    let mut next_uid = 1u64;
    let mut last_ping = Instant::now();
    let mut ping_all = |conns: &mut Vec<Conn>| -> Result<(), String> {
        if last_ping.elapsed() >= Duration::from_secs(10) {
            for c in conns.iter_mut() {
                hummer_frame(&mut c.out, 3, Body::Ping(wire::Ping { nonce: 1 }));
                c.flush().map_err(|e| format!("ping: {e}"))?;
            }
            last_ping = Instant::now();
        }
        Ok(())
    };
    while conns.len() < n && start.elapsed() < cap {
        let mut wave = Vec::new();
        for _ in 0..500.min(n - conns.len()) {
            let mut c = Conn::connect(kind, addr).map_err(|e| format!("connect: {e}"))?;
            hummer_frame(&mut c.out, 1, login_body(next_uid));
            next_uid += 1;
            c.flush().map_err(|e| e.to_string())?;
            wave.push(c);
        }
        for mut c in wave {
            match wait_reply(&mut c, Duration::from_secs(10), "login") {
                Ok(Body::LoginReply(_)) => conns.push(c),
                other => return Err(format!("login {}: {other:?}", conns.len())),
            }
        }
        ping_all(&mut conns)?;
    }
    let opened = start.elapsed();
    let hold_end = Instant::now() + hold;
    while Instant::now() < hold_end {
        thread::sleep(Duration::from_millis(100).min(hold_end - Instant::now()));
        ping_all(&mut conns)?;
    }
    let after = vm_rss_kib(pid).ok_or("cannot read the server's VmRSS")?;
    println!(
        "SUMMARY idle: {} logged-in idle connections over tcp (opened in {:.1} s): server VmRSS {} KiB before, {} KiB after; {:.0} bytes per connection",
        conns.len(),
        opened.as_secs_f64(),
        before,
        after,
        (after.saturating_sub(before) * 1024) as f64 / conns.len().max(1) as f64
    );
    for c in conns {
        close(c);
    }
    Ok(())
}

fn parse_args(args: &[String]) -> Result<HashMap<String, String>, String> {
    let mut out = HashMap::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let name = a
            .strip_prefix("--")
            .ok_or(format!("unexpected argument {a:?}"))?;
        if name == "quick" || name == "inprocess-hummer" || name == "hummer-unlimited" {
            out.insert(name.to_owned(), String::new());
            continue;
        }
        let v = it.next().ok_or(format!("--{name} needs a value"))?;
        out.insert(name.to_owned(), v.clone());
    }
    Ok(out)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("compare") => parse_args(&args[1..]).and_then(|a| compare(&a)),
        Some("idle") => parse_args(&args[1..]).and_then(|a| idle(&a)),
        Some("raw") => parse_args(&args[1..]).and_then(|a| raw_once(&a)),
        Some("rawcheck") => parse_args(&args[1..]).and_then(|a| rawcheck(&a)),
        _ => Err(
            "usage: hummer-load compare --hummer ADDR --hummer-pid PID --nats ADDR \
                  --nats-pid PID --redis ADDR --redis-pid PID [--reps 3] [--quick] \
                  [--messages N] [--fanout-messages N] [--subscribers N] [--rtt-samples N] \
                  [--time-cap-secs S] [--clk-tck N] [--targets hummer,nats,redis,hummer-reliable] \
                  [--workloads pubsub,fanout,rtt,scale] [--inprocess-hummer] [--window N] [--batch 50] \
                  [--scale-channels 1000] [--scale-members 10] [--scale-messages N] \
                  [--scale-publisher-threads 2] [--scale-reader-threads 2] [--scale-window N] \
                  [--scale-reps 3] \
                  (--hummer, --hummer-pid: comma-separated lists, with --hummer-variants LABELS \
                  and --hummer-engine-redis ADDRS --hummer-engine-pid PIDS, '-' for none; a \
                  server of several nodes: ADDR+ADDR and PID+PID, its hub node's first; an \
                  engine of several Redis instances: ADDR+ADDR and PID+PID)\n       \
                  hummer-load idle --addr ADDR --server-pid PID [--conns 10000] [--hold-secs 3] \
                  [--transport tcp|tls|ws|wss] [--ca PEM] [--server-name NAME]\n       \
                  hummer-load raw --kind nats|redis|hummer --addr ADDR [--subscribers 100] \
                  [--messages 10000] [--time-cap-secs S] [--server-pid PID] \
                  [--transport tcp|tls|ws|wss] [--ca PEM] [--server-name NAME]\n       \
                  hummer-load rawcheck [--nats ADDR] [--redis ADDR] [--hummer ADDR \
                  --hummer-unlimited] [--reps 5] [--quick] [the counts of compare]"
                .to_owned(),
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hummer-load: {e}");
            ExitCode::from(2)
        }
    }
}
