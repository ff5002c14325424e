//! Several nodes serving one service: the links between them.
//!
//! One node, the *hub node*, holds the store's lease and every hub shard;
//! every other node is a *gateway node*: it serves its clients with its
//! gateways only, and relays what they tell the hub over one TCP link to
//! the hub node, which relays what the hub has for them back:
//!
//! ```text
//!   gateway node ── Hello ─────────────────────────► hub node
//!                ◄─ Welcome{first gateway id, shards}
//!                ── Hub{shard, ToHub} ... Ping ────►   (its gateways' messages)
//!                ◄─ Gateway(ToGateway) ... Ping ───   (the hub's, for them)
//!                ◄─ StoreDown{down} ───────────────   (refuse requests, or not)
//!                ── ApiCall{id, shard, call} ──────►   (its server API's calls)
//!                ◄─ ApiAnswer{id, answer} ─────────   (the hub shards' answers)
//! ```
//!
//! A link carries messages in order both ways, which is all the gateways
//! and the hub need (as between the threads of one node). Gateway ids
//! name their node: the hub node gives each link a range of its own, so a
//! `ConnId` routes the hub's messages without a table, and a link may only
//! speak for its range.
//!
//! The server API answers on every node: a gateway node holds no state to
//! answer from, so it sends each shard's part of a call up its link with
//! an id of its own, keeps the caller's answer channel by that id, and
//! hands it the hub node's answer. The hub node hands the part to its
//! shard exactly as a call of its own (the answer waits for the store as
//! one does) and sends the answer back down the link. At most
//! [`API_CALLS_MAX`] parts wait per gateway node: more are answered
//! `SERVICE_UNAVAILABLE` at once (a hub node closes a link that has more
//! in flight). When the link ends, every part waiting is answered
//! `SERVICE_UNAVAILABLE` at once (retry: the node finds the hub node
//! again); on the hub node, the answers for a link that ended are dropped.
//!
//! When a link ends (closed, or silent for [`SILENCE_LIMIT`]), the hub
//! node treats every link of the peer's gateways as lost
//! ([`Hub::handle_gateway_lost`](crate::server::Hub::handle_gateway_lost)):
//! presence lasts the grace period, as for any lost link, and the clients
//! resume on whichever node they reach. The gateway node closes its
//! clients (`Close{4006}`: they resume) and finds the hub node again,
//! which may be itself: see [`serve_cluster`](super::serve_cluster).

use std::cell::{Cell, RefCell};
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use smol::future::FutureExt as _;
use smol::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use smol::net::{TcpListener, TcpStream};
use smol::{LocalExecutor, Timer};

use super::shard::{Envelope, Notify, Shard, Wait};
use super::Admission;
#[cfg(feature = "redis")]
pub(super) use super::NodeTls;
use crate::error::{ErrorCode, ServiceError};
use crate::server::{
    decode_node_message, encode_node_message, put_node_message, ApiCall, ApiReply, GatewayId,
    NodeMessage, ShardId, ToGateway, ToHub, MAX_NODE_FRAME, NODE_PROTOCOL,
};
use crate::wire::{FrameDecoder, LENGTH_PREFIX_LEN};

/// How often each side of a link says it is alive, when it has nothing
/// else to send.
pub const PING_EVERY: Duration = Duration::from_millis(500);
/// A link that received nothing for this long is dead.
pub const SILENCE_LIMIT: Duration = Duration::from_secs(3);
/// How long a new link has to say `Hello` (and its answer to come).
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest frame before the hello is accepted: a peer that has not
/// shown the secret makes the hub node hold no more than this (a hello is
/// a name and a secret), not [`MAX_NODE_FRAME`].
const MAX_HELLO_FRAME: usize = 16 * 1024;
/// Links that may wait for their hello at once, from one address (IPv6:
/// one /64) and in all: more are closed at once. Gateway nodes say hello
/// as they connect; connections that say nothing must not take the hub
/// node's descriptors (its clients', its store's) for [`HELLO_TIMEOUT`].
const HELLOS_PER_ADDRESS: usize = 8;
const HELLOS_MAX: usize = 256;
/// What one link may hold unsent (queued, and in the write under way)
/// before it is dropped (its node is not reading: its clients resume
/// elsewhere).
const OUT_MAX: usize = 64 << 20;
/// What a gateway node's link may hold unsent before its readers wait
/// (the hub node is behind): its clients are slowed, as on one node,
/// long before [`OUT_MAX`] would drop every one of them.
const UPLINK_HIGH: usize = 8 << 20;
/// The gateway ids a node may have (its threads), and the size of each
/// link's range: range `k` is ids `64k .. 64k + 64`; the hub node's own
/// gateways are range 0.
pub const GATEWAYS_PER_NODE: u16 = 64;
/// How many ranges ids hold.
const RANGES: u16 = u16::MAX / GATEWAYS_PER_NODE;
/// Server API calls (shards' parts of them) a gateway node may have
/// waiting for the hub node's answers; more are answered
/// `SERVICE_UNAVAILABLE` at once. A hub node closes a link with more in
/// flight (its node ignores the bound).
pub const API_CALLS_MAX: usize = 1024;

/// Where a server API call's answer goes.
pub(super) type ApiReplyTo = smol::channel::Sender<Result<ApiReply, ServiceError>>;

/// What a node does in a cluster.
pub(super) enum Role {
    /// It serves alone (the memory engine, or one node and standbys).
    Alone,
    /// It holds every hub shard; gateway nodes connect to `listener`.
    Hub {
        listener: TcpListener,
        /// This node's name (the lease owner's), told to peers.
        node: String,
        /// Where the others reach `listener`, as announced.
        address: String,
        secret: String,
        /// The links' TLS, if they speak it.
        tls: Option<NodeTls>,
    },
    /// It relays its gateways' messages to the hub node over `link`.
    Gateway(Uplinked),
}

/// A gateway node's link to the hub node, welcomed.
pub(super) struct Uplinked {
    io: LinkIo,
    /// What was read past the `Welcome`.
    decoder: FrameDecoder,
    /// The id of the node's first gateway (its thread 0's).
    pub first: GatewayId,
    /// How many hub shards the hub node has (the gateways route by them).
    pub shards: u16,
    /// The hub node's name.
    pub hub: String,
}

/// A node link's two halves, read and written by two tasks of one
/// thread: clones of its socket, or TLS on it split in two (a lock held
/// only inside each poll, never contended: one thread).
pub(super) struct LinkIo {
    reader: Box<dyn AsyncRead + Unpin>,
    writer: Box<dyn AsyncWrite + Unpin>,
}

impl LinkIo {
    fn plain(stream: TcpStream) -> LinkIo {
        LinkIo {
            reader: Box::new(stream.clone()),
            writer: Box::new(stream),
        }
    }

    /// `stream` (TLS) in two halves.
    pub(super) fn split<S: AsyncRead + AsyncWrite + Unpin + 'static>(stream: S) -> LinkIo {
        let (reader, writer) = smol::io::split(stream);
        LinkIo {
            reader: Box::new(reader),
            writer: Box::new(writer),
        }
    }
}

/// Without the cluster's feature (`redis`), no TLS for its links: no
/// node is ever given any.
#[cfg(not(feature = "redis"))]
pub(super) enum NodeTls {}

#[cfg(not(feature = "redis"))]
impl NodeTls {
    async fn accept(&self, _: TcpStream) -> std::io::Result<LinkIo> {
        match *self {}
    }

    async fn connect(&self, _: &str, _: TcpStream) -> std::io::Result<LinkIo> {
        match *self {}
    }
}

/// Writes `bytes` whole and pushes them out (TLS holds what it is given
/// until flushed).
async fn send(writer: &mut (dyn AsyncWrite + Unpin), bytes: &[u8]) -> std::io::Result<()> {
    writer.write_all(bytes).await?;
    writer.flush().await
}

/// Bytes waiting for a link's writer, and its wake.
#[derive(Default)]
struct Outbox {
    buf: RefCell<BytesMut>,
    wake: Notify,
    /// The link is over: nothing more is queued.
    closed: Cell<bool>,
    /// Bytes of the write under way not yet taken by the socket.
    writing: Cell<usize>,
    /// The socket took some of it.
    drained: Notify,
}

impl Outbox {
    /// Queues `m`; false when the link is over or holds too much.
    fn push(&self, m: &NodeMessage) -> bool {
        if self.closed.get() {
            return false;
        }
        let mut buf = self.buf.borrow_mut();
        put_node_message(m, &mut buf);
        if buf.len() + self.writing.get() > OUT_MAX {
            drop(buf);
            self.close();
            return false;
        }
        drop(buf);
        self.wake.notify();
        true
    }

    fn close(&self) {
        self.closed.set(true);
        self.wake.notify();
        self.drained.notify();
    }

    /// Bytes queued or being written; none once the link is over.
    fn held(&self) -> usize {
        if self.closed.get() {
            return 0;
        }
        self.buf.borrow().len() + self.writing.get()
    }

    /// Writes what is queued as it comes, and a ping when nothing came for
    /// [`PING_EVERY`]; ends when the link is closed or a write fails or
    /// the socket takes nothing for [`SILENCE_LIMIT`] (a slow peer is not
    /// a dead one: [`OUT_MAX`] bounds what it holds). Each batch is
    /// flushed (TLS holds what it is given until then; TCP holds nothing).
    async fn write_to(&self, mut stream: Box<dyn AsyncWrite + Unpin>) -> String {
        let ping = encode_node_message(&NodeMessage::Ping);
        loop {
            let since = self.wake.generation();
            let pending: Bytes = self.buf.borrow_mut().split().freeze();
            if self.closed.get() {
                return "closed".into();
            }
            let bytes = if pending.is_empty() {
                let woke = async {
                    self.wake.wait_since(since).await;
                    true
                };
                let idle = async {
                    Timer::after(PING_EVERY).await;
                    false
                };
                if woke.or(idle).await {
                    continue;
                }
                ping.clone()
            } else {
                pending
            };
            let mut rest = &bytes[..];
            while !rest.is_empty() {
                self.writing.set(rest.len());
                let write = async { stream.write(rest).await.map_err(|e| e.to_string()) };
                let stalled = async {
                    Timer::after(SILENCE_LIMIT).await;
                    Err(format!("a write stalled for {SILENCE_LIMIT:?}"))
                };
                match write.or(stalled).await {
                    Ok(n) if n > 0 => {
                        rest = &rest[n..];
                        self.writing.set(rest.len());
                        self.drained.notify();
                    }
                    taken => {
                        let e = taken
                            .err()
                            .unwrap_or_else(|| "the socket took nothing".into());
                        self.writing.set(0);
                        self.close();
                        return e;
                    }
                }
            }
            self.writing.set(0);
            let flush = async { stream.flush().await.map_err(|e| e.to_string()) };
            let stalled = async {
                Timer::after(SILENCE_LIMIT).await;
                Err(format!("a flush stalled for {SILENCE_LIMIT:?}"))
            };
            if let Err(e) = flush.or(stalled).await {
                self.close();
                return e;
            }
        }
    }
}

/// How long [`next_message`] waits.
#[derive(Clone, Copy)]
enum ReadLimit {
    /// For the whole message, until this deadline (a hello: a slow one is
    /// an attack).
    Until(Instant),
    /// For each byte (a link: a large message may take longer than this
    /// on a slow network, a link that sends nothing is dead).
    Silence(Duration),
}

/// Reads the next message of `stream` within `wait`.
async fn next_message(
    stream: &mut (dyn AsyncRead + Unpin),
    decoder: &mut FrameDecoder,
    buf: &mut [u8],
    wait: ReadLimit,
) -> Result<NodeMessage, String> {
    let mut deadline = match wait {
        ReadLimit::Until(deadline) => deadline,
        ReadLimit::Silence(limit) => Instant::now() + limit,
    };
    // The first bytes of a link: a TLS record's (a handshake, an alert)
    // means a TLS node on a plain link.
    let mut first: Option<[u8; 2]> = None;
    loop {
        match decoder.next_frame() {
            Ok(Some(frame)) => return decode_node_message(frame).map_err(|e| e.to_string()),
            Ok(None) => {}
            Err(e) => {
                return Err(match (wait, first) {
                    (ReadLimit::Until(_), Some([0x15 | 0x16, 3])) => {
                        format!("{e}: the other node speaks TLS, this one's links do not (TLS on every node, or none)")
                    }
                    _ => e.to_string(),
                })
            }
        }
        let read = async { stream.read(buf).await.map_err(|e| e.to_string()) };
        let late = async {
            Timer::at(deadline).await;
            Err(match wait {
                ReadLimit::Until(_) => format!("no hello or answer within {HELLO_TIMEOUT:?}"),
                ReadLimit::Silence(limit) => format!("silent for {limit:?}"),
            })
        };
        match read.or(late).await? {
            0 => return Err("closed by the peer".into()),
            n => {
                if n >= 2 {
                    first.get_or_insert([buf[0], buf[1]]);
                }
                decoder.extend(&buf[..n]);
            }
        }
        if let ReadLimit::Silence(limit) = wait {
            deadline = Instant::now() + limit;
        }
    }
}

/// The hub node's links to gateway nodes, on its first thread.
#[derive(Default)]
pub(super) struct Peers {
    links: RefCell<Vec<Rc<Peer>>>,
    /// The range the next link may take (1 and up: 0 is the hub node's).
    next_range: Cell<u16>,
    /// What the links were last told of the store (`StoreDown`).
    store_down: Cell<bool>,
}

struct Peer {
    gateways: Range<u16>,
    out: Outbox,
    /// Its server API calls the hub shards have not answered yet.
    api_calls: Cell<usize>,
}

impl Peer {
    /// Takes the link's server API call `id` for hub shard `s`: handed to
    /// the shard as a call of this node's (`ex` waits for its answer and
    /// sends it down the link, or drops it if the link ended meanwhile).
    /// An error when the link has more than [`API_CALLS_MAX`] in flight.
    fn take_api_call(
        self: &Rc<Self>,
        ex: &std::rc::Weak<LocalExecutor<'static>>,
        shard: &Shard,
        id: u64,
        s: ShardId,
        call: ApiCall,
    ) -> Result<(), String> {
        if self.api_calls.get() >= API_CALLS_MAX {
            return Err(format!(
                "more than {API_CALLS_MAX} server API calls in flight"
            ));
        }
        #[cfg(feature = "http-api")]
        {
            let Some(ex) = ex.upgrade() else {
                return Err("the node is stopping".into());
            };
            let (tx, rx) = smol::channel::bounded(1);
            shard.route(Envelope::Api(s, call, tx));
            self.api_calls.set(self.api_calls.get() + 1);
            let peer = self.clone();
            ex.spawn(async move {
                let answer = rx.recv().await.unwrap_or_else(|_| {
                    Err(ServiceError::new(
                        ErrorCode::SERVICE_UNAVAILABLE,
                        "the hub node is stopping: retry",
                    ))
                });
                peer.api_calls.set(peer.api_calls.get() - 1);
                peer.answer_api(id, answer);
            })
            .detach();
        }
        #[cfg(not(feature = "http-api"))]
        {
            let _ = (ex, shard, s, call);
            self.answer_api(
                id,
                Err(ServiceError::new(
                    ErrorCode::SERVICE_UNAVAILABLE,
                    "the hub node serves no server API (built without http-api)",
                )),
            );
        }
        Ok(())
    }

    /// Sends the answer to call `id` down the link (nothing once it
    /// ended). An answer too large for a node frame is a refusal: the
    /// peer would drop the link (and its clients) for it.
    fn answer_api(&self, id: u64, answer: Result<ApiReply, ServiceError>) {
        let mut m = NodeMessage::ApiAnswer { id, answer };
        if encode_node_message(&m).len() > LENGTH_PREFIX_LEN + MAX_NODE_FRAME {
            m = NodeMessage::ApiAnswer {
                id,
                answer: Err(ServiceError::new(
                    ErrorCode::INTERNAL_SERVER_ERROR,
                    "the answer is too large to relay: call the hub node",
                )),
            };
        }
        self.out.push(&m);
    }
}

impl Peers {
    /// Queues `m` for the link of its gateway: false when there is none
    /// (the node left; its links are lost already).
    pub fn to_gateway(&self, m: ToGateway) -> bool {
        let g = m.gateway().0;
        let peer = self
            .links
            .borrow()
            .iter()
            .find(|p| p.gateways.contains(&g))
            .cloned();
        peer.is_some_and(|p| p.out.push(&NodeMessage::Gateway(m)))
    }

    /// Tells every link that the hub node's store cannot be written
    /// (`down`), or can again, when that changed: their gateways refuse
    /// requests meanwhile, as this node's do.
    pub fn tell_store_down(&self, down: bool) {
        if self.store_down.replace(down) != down {
            for p in self.links.borrow().iter() {
                p.out.push(&NodeMessage::StoreDown { down });
            }
        }
    }

    /// A free range for a new link: the next one in turn that no live link
    /// holds (a range comes back in use only after the hub shards were
    /// told that its former gateways are lost, in the same order).
    fn allocate(&self) -> Option<Range<u16>> {
        let links = self.links.borrow();
        for _ in 0..RANGES {
            let k = self.next_range.get().max(1);
            self.next_range.set(if k + 1 >= RANGES { 1 } else { k + 1 });
            let first = k * GATEWAYS_PER_NODE;
            if !links.iter().any(|p| p.gateways.start == first) {
                return Some(first..first + GATEWAYS_PER_NODE);
            }
        }
        None
    }
}

/// Takes gateway nodes on `listener` (the hub node's first thread).
pub(super) async fn accept_peers(
    ex: std::rc::Weak<LocalExecutor<'static>>,
    shard: Rc<Shard>,
    peers: Rc<Peers>,
    listener: TcpListener,
    hub: HubNode,
) {
    let waiting = Rc::new(Hellos::default());
    let hub = Rc::new(hub);
    loop {
        let (stream, from) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                log!(warn, "cluster listener: {e}");
                Timer::after(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some(slot) = waiting.take(super::ip_key(from.ip())) else {
            log!(
                debug,
                "closed {from}'s link: too many links wait for their hello"
            );
            continue;
        };
        let _ = stream.set_nodelay(true);
        let Some(ex) = ex.upgrade() else { return };
        let session = serve_peer(
            Rc::downgrade(&ex),
            shard.clone(),
            peers.clone(),
            stream,
            from,
            slot,
            hub.clone(),
        );
        ex.spawn(session).detach();
    }
}

/// What a hub node tells and asks of the nodes that join it.
pub(super) struct HubNode {
    /// Its name.
    pub node: String,
    /// The cluster's secret.
    pub secret: String,
    /// How many hub shards it has.
    pub shards: u16,
    /// The links' TLS, if they speak it.
    pub tls: Option<NodeTls>,
}

/// The links waiting for their hello ([`HELLOS_MAX`], and
/// [`HELLOS_PER_ADDRESS`] per address), counted as clients are.
#[derive(Default)]
struct Hellos(RefCell<Admission>);

/// A link's place among those waiting for their hello, given back when
/// dropped.
struct HelloSlot {
    hellos: Rc<Hellos>,
    ip: IpAddr,
}

impl Hellos {
    fn take(self: &Rc<Self>, ip: IpAddr) -> Option<HelloSlot> {
        let mut waiting = self.0.borrow_mut();
        waiting.admit(ip, HELLOS_MAX, HELLOS_PER_ADDRESS).ok()?;
        Some(HelloSlot {
            hellos: self.clone(),
            ip,
        })
    }
}

impl Drop for HelloSlot {
    fn drop(&mut self) {
        self.hellos.0.borrow_mut().release(self.ip);
    }
}

/// One gateway node's link, on the hub node: its TLS handshake (with
/// TLS) and its hello, both within [`HELLO_TIMEOUT`] of its connection
/// while it holds its `slot`, then its gateways' messages to the hub
/// shards until it ends; then its gateways are lost to every shard.
async fn serve_peer(
    ex: std::rc::Weak<LocalExecutor<'static>>,
    shard: Rc<Shard>,
    peers: Rc<Peers>,
    stream: TcpStream,
    from: SocketAddr,
    slot: HelloSlot,
    hub: Rc<HubNode>,
) {
    let HubNode {
        ref node,
        ref secret,
        shards,
        ref tls,
    } = *hub;
    let deadline = Instant::now() + HELLO_TIMEOUT;
    let io = match tls {
        None => LinkIo::plain(stream),
        Some(tls) => {
            let handshake = async { tls.accept(stream).await.map_err(|e| e.to_string()) };
            let late = async {
                Timer::at(deadline).await;
                Err(format!("no TLS handshake within {HELLO_TIMEOUT:?}"))
            };
            match handshake.or(late).await {
                Ok(io) => io,
                Err(e) => {
                    // Quoted: it may hold what the peer sent.
                    log!(
                        warn,
                        "a node link from {from} failed its TLS handshake: {e:?}"
                    );
                    return;
                }
            }
        }
    };
    let LinkIo {
        mut reader,
        mut writer,
    } = io;
    let mut decoder = FrameDecoder::new(MAX_HELLO_FRAME);
    let mut buf = vec![0u8; 4096];
    let refuse = |reason: &str| {
        encode_node_message(&NodeMessage::Refused {
            reason: reason.into(),
        })
    };
    let hello = next_message(
        &mut *reader,
        &mut decoder,
        &mut buf,
        ReadLimit::Until(deadline),
    )
    .await;
    drop(slot);
    let (peer_node, wanted) = match hello {
        Ok(NodeMessage::Hello {
            protocol,
            node,
            secret: theirs,
            gateways,
        }) => {
            let why = if protocol != NODE_PROTOCOL {
                Some(format!(
                    "node protocol {protocol}; this hub speaks {NODE_PROTOCOL}"
                ))
            } else if !constant_time_eq(theirs.as_bytes(), secret.as_bytes()) {
                Some("wrong cluster secret".to_owned())
            } else if gateways == 0 || gateways > GATEWAYS_PER_NODE {
                Some(format!("{gateways} gateways (1 to {GATEWAYS_PER_NODE})"))
            } else {
                None
            };
            if let Some(why) = why {
                // Quoted: the name is the peer's, who may not be one.
                log!(warn, "node {node:?} refused: {why}");
                let _ = send(&mut *writer, &refuse(&why)).await;
                return;
            }
            decoder.set_max_frame_size(MAX_NODE_FRAME);
            (node, gateways)
        }
        Ok(other) => {
            log!(warn, "a node link began with {other:?}, not a hello");
            let _ = send(&mut *writer, &refuse("a link begins with a hello")).await;
            return;
        }
        Err(e) => {
            log!(warn, "a node link from {from} failed before its hello: {e}");
            return;
        }
    };
    let Some(range) = peers.allocate() else {
        let _ = send(&mut *writer, &refuse("no gateway ids left")).await;
        return;
    };
    let welcome = NodeMessage::Welcome {
        node: node.clone(),
        first_gateway: GatewayId(range.start),
        shards,
    };
    if send(&mut *writer, &encode_node_message(&welcome))
        .await
        .is_err()
    {
        return;
    }
    let allowed = range.start..range.start + wanted;
    log!(
        info,
        "node {peer_node} joined: gateways {}..{}",
        allowed.start,
        allowed.end
    );
    let peer = Rc::new(Peer {
        gateways: range.clone(),
        out: Outbox::default(),
        api_calls: Cell::new(0),
    });
    // What the others were told; changes reach it with them from now on.
    if peers.store_down.get() {
        peer.out.push(&NodeMessage::StoreDown { down: true });
    }
    peers.links.borrow_mut().push(peer.clone());
    let writer = peer.out.write_to(writer);
    let reader = async {
        let Err(e) = read_peer(
            &ex,
            &shard,
            &peer,
            &mut *reader,
            &mut decoder,
            &allowed,
            shards,
        )
        .await;
        e
    };
    let why = reader.or(writer).await;
    peer.out.close();
    peers.links.borrow_mut().retain(|p| !Rc::ptr_eq(p, &peer));
    log!(
        warn,
        "node {peer_node} left ({why}): its links are lost, their presence kept for the grace period"
    );
    for s in 0..shards {
        shard.route(Envelope::GatewaysLost(ShardId(s), range.clone()));
    }
    shard.pump();
}

/// Hands a gateway node's messages to the hub shards until the link
/// fails.
async fn read_peer(
    ex: &std::rc::Weak<LocalExecutor<'static>>,
    shard: &Shard,
    peer: &Rc<Peer>,
    stream: &mut (dyn AsyncRead + Unpin),
    decoder: &mut FrameDecoder,
    allowed: &Range<u16>,
    shards: u16,
) -> Result<Infallible, String> {
    let take = |m: NodeMessage| match m {
        // A link speaks only for its own node's gateways.
        NodeMessage::Hub { shard: s, message }
            if s.0 < shards && allowed.contains(&message.conn().gateway().0) =>
        {
            shard.route(Envelope::Hub(s, message));
            Ok(())
        }
        // ... and calls only the hub node's shards.
        NodeMessage::ApiCall { id, shard: s, call } if s.0 < shards => {
            peer.take_api_call(ex, shard, id, s, call)
        }
        NodeMessage::Ping => Ok(()),
        other => Err(format!("unexpected {other:?}")),
    };
    read_link(shard, stream, decoder, || shard.room(), take).await
}

/// Reads a link's messages into `take`, a read's worth per turn of the
/// thread (then pumped), waiting for `room` before each read, until the
/// link fails.
async fn read_link<R: Future<Output = ()>>(
    shard: &Shard,
    stream: &mut (dyn AsyncRead + Unpin),
    decoder: &mut FrameDecoder,
    room: impl Fn() -> R,
    take: impl Fn(NodeMessage) -> Result<(), String>,
) -> Result<Infallible, String> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        room().await;
        take(next_message(stream, decoder, &mut buf, ReadLimit::Silence(SILENCE_LIMIT)).await?)?;
        // What else that read brought goes in the same turn.
        while let Some(frame) = decoder.next_frame().map_err(|e| e.to_string())? {
            take(decode_node_message(frame).map_err(|e| e.to_string())?)?;
        }
        shard.pump();
    }
}

/// Compares two secrets in time independent of where they differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Connects to the hub node at `address` (with TLS, when `tls`: its
/// certificate checked for the host of `address`) and says hello: the
/// link, once welcomed.
pub(super) async fn connect_hub(
    address: &str,
    node: &str,
    secret: &str,
    gateways: u16,
    tls: Option<&NodeTls>,
) -> Result<Uplinked, String> {
    let connect = async { TcpStream::connect(address).await.map_err(|e| e.to_string()) };
    let late = async {
        Timer::after(HELLO_TIMEOUT).await;
        Err(format!("no connection within {HELLO_TIMEOUT:?}"))
    };
    let stream = connect.or(late).await?;
    let _ = stream.set_nodelay(true);
    let LinkIo {
        mut reader,
        mut writer,
    } = match tls {
        None => LinkIo::plain(stream),
        Some(tls) => {
            let handshake = async {
                tls.connect(address, stream)
                    .await
                    .map_err(|e| format!("TLS handshake: {e}"))
            };
            let late = async {
                Timer::after(HELLO_TIMEOUT).await;
                Err(format!("no TLS handshake within {HELLO_TIMEOUT:?}"))
            };
            handshake.or(late).await?
        }
    };
    let hello = NodeMessage::Hello {
        protocol: NODE_PROTOCOL,
        node: node.to_owned(),
        secret: secret.to_owned(),
        gateways,
    };
    send(&mut *writer, &encode_node_message(&hello))
        .await
        .map_err(|e| e.to_string())?;
    let mut decoder = FrameDecoder::new(MAX_NODE_FRAME);
    let mut buf = vec![0u8; 4096];
    match next_message(
        &mut *reader,
        &mut decoder,
        &mut buf,
        ReadLimit::Until(Instant::now() + HELLO_TIMEOUT),
    )
    .await?
    {
        // Its gateways are `first_gateway + thread`: ids past u16 would
        // overflow (a hub node never gives them; a fake one might).
        NodeMessage::Welcome { first_gateway, .. }
            if usize::from(first_gateway.0) + usize::from(gateways) > 1 << 16 =>
        {
            Err(format!(
                "welcomed with {gateways} gateways from {}, past the last id",
                first_gateway.0
            ))
        }
        NodeMessage::Welcome {
            node,
            first_gateway,
            shards,
        } => Ok(Uplinked {
            io: LinkIo { reader, writer },
            decoder,
            first: first_gateway,
            shards,
            hub: node,
        }),
        NodeMessage::Refused { reason } => Err(format!("refused: {reason}")),
        other => Err(format!("answered {other:?}, not a welcome")),
    }
}

/// A gateway node's link to the hub node, on its first thread.
pub(super) struct Uplink {
    out: Outbox,
    /// The node's gateway ids.
    gateways: Range<u16>,
    /// The server API calls sent up, waiting for their answers, by id.
    api_calls: RefCell<std::collections::HashMap<u64, ApiReplyTo>>,
    /// The next call's id.
    next_api_call: Cell<u64>,
}

impl Uplink {
    /// Queues a gateway's message for hub shard `s`.
    pub fn to_hub(&self, s: ShardId, message: ToHub) {
        self.out.push(&NodeMessage::Hub { shard: s, message });
    }

    /// Sends a server API call for hub shard `s` up the link; `reply`
    /// gets the hub node's answer, or `SERVICE_UNAVAILABLE` at once when
    /// [`API_CALLS_MAX`] wait already or the link is over (and when it
    /// ends: [`Uplink::lose_api_calls`]).
    #[cfg_attr(not(feature = "http-api"), allow(dead_code))]
    pub fn call_api(&self, s: ShardId, call: ApiCall, reply: ApiReplyTo) {
        if self.api_calls.borrow().len() >= API_CALLS_MAX {
            let _ = reply.try_send(Err(ServiceError::new(
                ErrorCode::SERVICE_UNAVAILABLE,
                format!("{API_CALLS_MAX} server API calls wait for the cluster's hub node: retry"),
            )));
            return;
        }
        let id = self.next_api_call.get();
        self.next_api_call.set(id.wrapping_add(1));
        if self.out.push(&NodeMessage::ApiCall { id, shard: s, call }) {
            self.api_calls.borrow_mut().insert(id, reply);
        } else {
            let _ = reply.try_send(Err(hub_lost()));
        }
    }

    /// Hands the hub node's answer to call `id` to its caller (who may
    /// have gone); false for an id that waits for no answer.
    fn answer_api_call(&self, id: u64, answer: Result<ApiReply, ServiceError>) -> bool {
        let Some(reply) = self.api_calls.borrow_mut().remove(&id) else {
            return false;
        };
        let _ = reply.try_send(answer);
        true
    }

    /// The link ended: every call waiting is answered `SERVICE_UNAVAILABLE`.
    fn lose_api_calls(&self) {
        let waiting = std::mem::take(&mut *self.api_calls.borrow_mut());
        for reply in waiting.into_values() {
            let _ = reply.try_send(Err(hub_lost()));
        }
    }

    /// Whether the link holds more than [`UPLINK_HIGH`] unsent: the node's
    /// readers wait ([`Shard::room`]).
    pub fn backlogged(&self) -> bool {
        self.out.held() > UPLINK_HIGH
    }

    /// Resolves when the socket took some of what the link holds (or the
    /// link ended).
    pub fn drained(&self) -> Wait<'_> {
        self.out.drained.wait()
    }

    /// The uplink of a node whose `threads` gateways start at `first`.
    pub fn new(first: GatewayId, threads: u16) -> Rc<Uplink> {
        Rc::new(Uplink {
            out: Outbox::default(),
            gateways: first.0..first.0.saturating_add(threads),
            api_calls: RefCell::default(),
            next_api_call: Cell::new(0),
        })
    }
}

/// Runs a gateway node's link until it ends (the hub node died, left or
/// dropped it): why.
pub(super) async fn run_uplink(shard: Rc<Shard>, uplink: Rc<Uplink>, link: Uplinked) -> String {
    let Uplinked {
        io: LinkIo { mut reader, writer },
        mut decoder,
        hub,
        ..
    } = link;
    let writer = uplink.out.write_to(writer);
    let reader = async {
        let Err(e) = read_uplink(&shard, &uplink, &mut *reader, &mut decoder).await;
        e
    };
    let why = reader.or(writer).await;
    uplink.out.close();
    uplink.lose_api_calls();
    format!("the link to hub node {hub}: {why}")
}

/// The answer to a server API call whose hub node was lost.
fn hub_lost() -> ServiceError {
    ServiceError::new(
        ErrorCode::SERVICE_UNAVAILABLE,
        "the cluster's hub node was lost: retry",
    )
}

/// Hands the hub's messages to this node's gateways until the link fails.
async fn read_uplink(
    shard: &Shard,
    uplink: &Uplink,
    stream: &mut (dyn AsyncRead + Unpin),
    decoder: &mut FrameDecoder,
) -> Result<Infallible, String> {
    let take = |m: NodeMessage| match m {
        NodeMessage::Gateway(m) if uplink.gateways.contains(&m.gateway().0) => {
            shard.route(Envelope::Gateway(m));
            Ok(())
        }
        // Every thread's gateway refuses requests meanwhile (the pump
        // tells this thread's, the others see it at their next).
        NodeMessage::StoreDown { down } => {
            shard.control.hub_store_down.store(down, Ordering::Relaxed);
            Ok(())
        }
        NodeMessage::ApiAnswer { id, answer } => match uplink.answer_api_call(id, answer) {
            true => Ok(()),
            false => Err(format!("an answer to no server API call ({id})")),
        },
        NodeMessage::Ping => Ok(()),
        other => Err(format!("unexpected {other:?}")),
    };
    // While this node's other threads are behind (their gateways' clients
    // take less than the hub sends), read no more: TCP pushes back on the
    // hub node, which drops a link it cannot write to rather than this
    // node holding it all.
    read_link(shard, stream, decoder, || shard.threads_room(), take).await
}

/// Where a node's first thread sends what its own machines do not take.
pub(super) enum Relay {
    /// The hub node: to its gateway nodes.
    Peers(Rc<Peers>),
    /// A gateway node: to the hub node.
    Uplink(Rc<Uplink>),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::{ApiRequest, DEMO_APPID};
    use smol::channel::{bounded, Receiver, TryRecvError};

    type Answer = Result<ApiReply, ServiceError>;

    fn call(uplink: &Uplink) -> Receiver<Answer> {
        let call = ApiCall {
            appid: DEMO_APPID,
            request: ApiRequest::OnlineStatus { uids: vec![7] },
        };
        let (tx, rx) = bounded(1);
        uplink.call_api(ShardId(0), call, tx);
        rx
    }

    fn waits(rx: &Receiver<Answer>) -> bool {
        matches!(rx.try_recv(), Err(TryRecvError::Empty))
    }

    fn refused_at_once(rx: &Receiver<Answer>) -> bool {
        matches!(rx.try_recv(), Ok(Err(e)) if e.code == ErrorCode::SERVICE_UNAVAILABLE)
    }

    /// A gateway node relays at most 1,024 parts at a time (the hub node
    /// would close a link with more); the next is refused with 4010 (HTTP
    /// 503) at once, and an answer makes room for one more. The number is
    /// spelled out, not `API_CALLS_MAX`: the documented bound is checked.
    #[test]
    fn a_gateway_node_relays_at_most_1024_api_calls_and_refuses_the_next_at_once() {
        const BOUND: usize = 1024;
        let uplink = Uplink::new(GatewayId(GATEWAYS_PER_NODE), 2);
        let waiting: Vec<_> = (0..BOUND).map(|_| call(&uplink)).collect();
        assert!(waiting.iter().all(waits), "the first {BOUND} wait");
        let sent = uplink.out.held();
        let over = call(&uplink);
        assert!(refused_at_once(&over), "call {} is refused", BOUND + 1);
        assert_eq!(uplink.out.held(), sent, "and not sent up the link");

        // The hub node answers the first (ids count from 0): one more may wait.
        assert!(uplink.answer_api_call(0, Ok(ApiReply::Kicked { instances: 1 })));
        assert!(matches!(
            waiting[0].try_recv(),
            Ok(Ok(ApiReply::Kicked { instances: 1 }))
        ));
        let next = call(&uplink);
        assert!(waits(&next));
        assert!(refused_at_once(&call(&uplink)));

        // A lost link answers every waiting call at once.
        uplink.lose_api_calls();
        assert!(waiting[1..].iter().all(refused_at_once) && refused_at_once(&next));
    }
}
