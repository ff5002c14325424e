//! Runs the server on TCP with smol, on `threads` threads: length-prefixed
//! frames on each connection. Each thread runs a [`Gateway`] with its share
//! of the connections (spread in turn as they are accepted), one shard of
//! the [`Hub`], a reader and a writer task per connection, and a timer.
//! Threads share no lock on the path of a frame: they pass batches of
//! messages ([`ToHub`](crate::server::ToHub),
//! [`ToShard`](crate::server::ToShard),
//! [`ToGateway`](crate::server::ToGateway)) through bounded queues, and a
//! reader whose thread is behind stops reading (see `shard.rs`).
//!
//! What the runner itself bounds (the [`Server`](crate::server::Server) bounds the rest), set with
//! a [`RunnerConfig`]:
//!
//! - connections: at most `max_connections` open, and `max_connections_per_ip`
//!   from one address (IPv6: one /64). A connection over a cap is accepted
//!   and closed at once, with nothing written;
//! - the listen backlog ([`bind`]; std's `TcpListener::bind` asks for 128);
//! - frame sizes: each connection's decoder is held to
//!   [`Gateway::max_frame_size`] (8 KiB until the connection has logged in),
//!   and a partial frame holds about what arrived, never what it announced;
//! - failing `accept`s (out of file descriptors) back off from 10 ms to 1 s
//!   while the open connections keep being served;
//! - a connection the server closes gets its `Close` frame when the socket
//!   has room for it within 2 s, else it is reset; a slow consumer's unsent
//!   backlog is dropped first, and either outcome is logged at info.
//!
//! With the `webhooks` feature, the apps' events (user online/offline,
//! channels created/emptied, messages of listed channels) are delivered to
//! their backends by one thread per app with a hook (`hooks.rs`,
//! `docs/webhooks.md`).
//!
//! ```no_run
//! use hummer_channel::adapters::server_tcp::{RunnerConfig, ServerHandle};
//! use hummer_channel::server::ServerConfig;
//!
//! let runner = RunnerConfig::default().with_max_connections_per_ip(100);
//! let handle = ServerHandle::spawn_with(ServerConfig::demo(), runner, "127.0.0.1:0".parse().unwrap()).unwrap();
//! println!("listening on {}", handle.local_addr());
//! handle.shutdown();
//! ```

#[cfg(feature = "http-api")]
mod api;
// Its roles are made by `serve_cluster` only (feature `redis`).
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
mod cluster;
#[cfg(feature = "webhooks")]
mod hooks;
#[cfg(feature = "http-api")]
mod http;
mod link;
#[cfg(feature = "redis")]
mod node_tls;
mod shard;
#[cfg(feature = "redis")]
pub mod store;
mod transport;
#[cfg(feature = "websocket")]
mod web;

use std::cell::Cell;
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv6Addr, Shutdown, SocketAddr};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_io::Async;
use smol::channel::{bounded, Receiver, Sender};
use smol::future::FutureExt as _;
use smol::net::TcpListener;
use smol::{LocalExecutor, Timer};

use crate::server::{ConnId, Gateway, GatewayId, Hub, ServerConfig, ShardId, MAX_SHARDS};
#[cfg(feature = "http-api")]
pub use api::API_ROUTES;
#[cfg(feature = "webhooks")]
pub use hooks::{HookDrop, HookOutcome, HookStats, WebhookOptions, HOOK_EVENT_TYPES};
#[cfg(feature = "http-api")]
pub use http::ApiOptions;
#[cfg(feature = "redis")]
pub use node_tls::NodeTls;
use shard::{BacklogPeak, Envelope, Shard, QUEUE_BATCHES};
#[cfg(feature = "tls")]
pub use transport::ServerTls;
use transport::{Opener, Stream, Transport};
#[cfg(feature = "websocket")]
pub use web::{Page, WebSocketOptions};

/// How long a shutdown waits for the `Close` frames to be flushed.
const SHUTDOWN_FLUSH_TIMEOUT: Duration = Duration::from_secs(2);
/// Bytes read from a socket at once, into a buffer each thread shares
/// between its connections (a connection holds none while it waits).
const READ_CHUNK: usize = 64 * 1024;
/// The first wait after a failed `accept`; it doubles on each failure in a
/// row up to [`ACCEPT_BACKOFF_MAX`] and resets on a success. Out of file
/// descriptors, `accept` fails at once as long as a connection is pending:
/// without a wait the accept loop would spin and starve every connection.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
/// The longest wait between two failed `accept`s.
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Settings of the TCP runner itself (what the [`Server`](crate::server::Server) state machine does
/// not see: sockets and addresses). Start from [`RunnerConfig::default`] and
/// change what you need with the `with_` methods (or the public fields).
///
/// ```
/// use hummer_channel::adapters::server_tcp::RunnerConfig;
///
/// let runner = RunnerConfig::default()
///     .with_max_connections(50_000)
///     .with_listen_backlog(4096);
/// assert_eq!(runner.max_connections_per_ip, 1_000);
/// ```
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunnerConfig {
    /// Open connections at most (logged in or not). One more is accepted
    /// and closed at once, with nothing written. Default 100_000. Each
    /// connection needs a file descriptor: the process's `RLIMIT_NOFILE`
    /// may be the tighter bound.
    pub max_connections: usize,
    /// Open connections from one IP address at most (IPv6: from one /64,
    /// what a single host usually has; IPv4-mapped IPv6 counts as IPv4).
    /// Refused like the global cap. Default 1_000.
    pub max_connections_per_ip: usize,
    /// The listen backlog [`bind`] asks for: connections the kernel
    /// completes before the runner accepts them. Linux caps it at
    /// `net.core.somaxconn` (4096 on recent kernels). Default 1024.
    pub listen_backlog: u32,
    /// Threads serving connections, each with a gateway and a hub shard
    /// (at least 1). Default: the number of cores.
    pub threads: usize,
    /// With a TLS identity, the TCP listener speaks only TLS (`tls://`)
    /// and the WebSocket listener only `wss://`.
    #[cfg(feature = "tls")]
    pub tls: Option<ServerTls>,
    /// The WebSocket listener's origin check and pages.
    #[cfg(feature = "websocket")]
    pub websocket: WebSocketOptions,
    /// The API listener's rate limit ([`Listeners::with_api`]).
    #[cfg(feature = "http-api")]
    pub api: ApiOptions,
    /// How the apps' events are delivered to their backends (the apps'
    /// [`HookConfig`](crate::server::HookConfig)s say where).
    #[cfg(feature = "webhooks")]
    pub webhooks: WebhookOptions,
    /// Where the hubs keep their lasting state (`--engine redis://…`):
    /// channels, inboxes, instances and retained messages survive a
    /// restart, and a reply or push goes out only once what it shows is
    /// stored. `None` (the default, `--engine memory`): in the process only.
    #[cfg(feature = "redis")]
    pub store: Option<store::StoreConfig>,
    /// With a store whose configuration names a lease owner
    /// ([`StoreConfig::with_lease`](store::StoreConfig::with_lease)): how
    /// long the lease lasts unrenewed. The server renews it every third of
    /// this; a standby node takes over this long after the active one
    /// died; a node that finds another holding it stops serving. Default
    /// 5 s.
    #[cfg(feature = "redis")]
    pub store_lease: Duration,
}

impl Default for RunnerConfig {
    fn default() -> Self {
        RunnerConfig {
            max_connections: 100_000,
            max_connections_per_ip: 1_000,
            listen_backlog: 1024,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            #[cfg(feature = "tls")]
            tls: None,
            #[cfg(feature = "websocket")]
            websocket: WebSocketOptions::default(),
            #[cfg(feature = "http-api")]
            api: ApiOptions::default(),
            #[cfg(feature = "webhooks")]
            webhooks: WebhookOptions::default(),
            #[cfg(feature = "redis")]
            store: None,
            #[cfg(feature = "redis")]
            store_lease: Duration::from_secs(5),
        }
    }
}

impl RunnerConfig {
    /// Sets [`RunnerConfig::max_connections`].
    pub fn with_max_connections(mut self, n: usize) -> Self {
        self.max_connections = n;
        self
    }

    /// Sets [`RunnerConfig::max_connections_per_ip`].
    pub fn with_max_connections_per_ip(mut self, n: usize) -> Self {
        self.max_connections_per_ip = n;
        self
    }

    /// Sets [`RunnerConfig::listen_backlog`].
    pub fn with_listen_backlog(mut self, n: u32) -> Self {
        self.listen_backlog = n;
        self
    }

    /// Sets [`RunnerConfig::threads`].
    pub fn with_threads(mut self, n: usize) -> Self {
        self.threads = n;
        self
    }

    /// Keeps the lasting state in Redis ([`RunnerConfig::store`]).
    #[cfg(feature = "redis")]
    pub fn with_store(mut self, store: store::StoreConfig) -> Self {
        self.store = Some(store);
        self
    }

    /// Sets [`RunnerConfig::store_lease`].
    #[cfg(feature = "redis")]
    pub fn with_store_lease(mut self, ttl: Duration) -> Self {
        self.store_lease = ttl;
        self
    }

    /// Serves TLS with this identity on every listener.
    #[cfg(feature = "tls")]
    pub fn with_tls(mut self, tls: ServerTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// The WebSocket listener's settings.
    #[cfg(feature = "websocket")]
    pub fn with_websocket(mut self, options: WebSocketOptions) -> Self {
        self.websocket = options;
        self
    }

    /// The API listener's settings.
    #[cfg(feature = "http-api")]
    pub fn with_api(mut self, options: ApiOptions) -> Self {
        self.api = options;
        self
    }

    /// How the apps' events are delivered.
    #[cfg(feature = "webhooks")]
    pub fn with_webhooks(mut self, options: WebhookOptions) -> Self {
        self.webhooks = options;
        self
    }

    /// How the connections of a listener of this kind are opened.
    fn opener(&self, websocket: bool, max_frame_size: usize) -> Opener {
        #[cfg(feature = "tls")]
        let tls = self.tls.is_some();
        #[cfg(not(feature = "tls"))]
        let tls = false;
        let transport = match (websocket, tls) {
            (false, false) => Transport::Tcp,
            #[cfg(feature = "tls")]
            (false, true) => Transport::Tls,
            #[cfg(feature = "websocket")]
            (true, false) => Transport::WebSocket,
            #[cfg(all(feature = "websocket", feature = "tls"))]
            (true, true) => Transport::SecureWebSocket,
            #[allow(unreachable_patterns)]
            _ => Transport::Tcp,
        };
        Opener {
            transport,
            #[cfg(feature = "tls")]
            tls: self.tls.clone(),
            #[cfg(feature = "websocket")]
            site: Arc::new(web::Site::new(self.websocket.clone())),
            max_frame_size,
        }
    }
}

/// Counters of a running runner ([`ServerHandle::stats`]).
#[non_exhaustive]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RunnerStats {
    /// Connections admitted and not yet ended.
    pub open_connections: usize,
    /// Connections refused by `max_connections` or `max_connections_per_ip`
    /// since the start.
    pub refused_connections: u64,
    /// `accept` calls that failed (out of file descriptors and the like).
    pub accept_errors: u64,
    /// Bytes of memory the connections' frame decoders hold now (partial
    /// frames).
    pub decoder_bytes: usize,
    /// The most messages ever waiting between two threads (a gateway's for
    /// the hub, or the hub's for the other gateways): readers stop reading
    /// past a bound, so this stays near it however hard clients push.
    pub peak_backlog: usize,
    /// The most bytes ever waiting so (about: frames and request bodies
    /// counted): readers stop past a byte bound too, whatever the
    /// messages' size.
    pub peak_backlog_bytes: usize,
    /// The webhooks' counters: deliveries, drops, queued events.
    #[cfg(feature = "webhooks")]
    pub hooks: HookStats,
}

/// What a running `serve` shares with a [`ServerHandle`] and between its
/// threads (touched when a connection starts or ends, never per frame).
#[derive(Default)]
struct Control {
    sockets: Mutex<HashMap<ConnId, Stream>>,
    admission: Mutex<Admission>,
    refused: AtomicU64,
    accept_errors: AtomicU64,
    decoder_bytes: AtomicUsize,
    backlog: BacklogPeak,
    backlog_bytes: BacklogPeak,
    /// The threads' counter snapshots and readiness, for the API listener.
    #[cfg(feature = "http-api")]
    published: http::Published,
    /// The apps' event queues and delivery threads.
    #[cfg(feature = "webhooks")]
    hooks: hooks::Hooks,
    /// Threads whose store cannot be written now: while any, every
    /// gateway refuses requests (`ErrorCode::SERVICE_UNAVAILABLE`).
    stores_down: AtomicUsize,
    /// A gateway node: the hub node's store cannot be written (it said
    /// so), and every gateway refuses requests likewise.
    hub_store_down: AtomicBool,
}

impl Control {
    fn sockets(&self) -> MutexGuard<'_, HashMap<ConnId, Stream>> {
        self.sockets.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn admission(&self) -> MutexGuard<'_, Admission> {
        self.admission.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn close_all(&self) {
        for s in self.sockets().values() {
            let _ = s.get_ref().shutdown(Shutdown::Both);
        }
    }

    fn note_backlog(&self, load: shard::Load) {
        self.backlog.note(load.len);
        self.backlog_bytes.note(load.bytes);
    }

    fn stats(&self) -> RunnerStats {
        RunnerStats {
            open_connections: self.admission().open,
            refused_connections: self.refused.load(Ordering::Relaxed),
            accept_errors: self.accept_errors.load(Ordering::Relaxed),
            decoder_bytes: self.decoder_bytes.load(Ordering::Relaxed),
            peak_backlog: self.backlog.get(),
            peak_backlog_bytes: self.backlog_bytes.get(),
            #[cfg(feature = "webhooks")]
            hooks: self.hooks.stats(),
        }
    }
}

/// Open connections, in all and per address (clients; the cluster's links
/// waiting for their hello).
#[derive(Default)]
pub(super) struct Admission {
    open: usize,
    per_ip: HashMap<IpAddr, usize>,
}

impl Admission {
    /// Counts a new connection from `ip` (a key from [`ip_key`]), or says
    /// which cap refuses it: `all` (the first) or `per_ip`.
    pub(super) fn admit(&mut self, ip: IpAddr, all: usize, per_ip: usize) -> Result<(), Cap> {
        if self.open >= all {
            return Err(Cap::All);
        }
        let n = self.per_ip.entry(ip).or_insert(0);
        if *n >= per_ip {
            if *n == 0 {
                self.per_ip.remove(&ip);
            }
            return Err(Cap::PerAddress);
        }
        *n += 1;
        self.open += 1;
        Ok(())
    }

    pub(super) fn release(&mut self, ip: IpAddr) {
        self.open = self.open.saturating_sub(1);
        if let Some(n) = self.per_ip.get_mut(&ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_ip.remove(&ip);
            }
        }
    }
}

/// Which cap of [`Admission::admit`] refused a connection.
#[derive(Debug)]
pub(super) enum Cap {
    All,
    PerAddress,
}

/// The address a connection counts against: IPv4 as is (IPv4-mapped IPv6
/// too), IPv6 by its /64 (a single host usually holds a whole /64, so a
/// per-address cap on IPv6 addresses would cap nothing).
fn ip_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !u128::from(u64::MAX);
            IpAddr::V6(Ipv6Addr::from(bits))
        }
        v4 => v4,
    }
}

/// An admitted connection's place in [`Admission`], given back when the
/// connection's task ends (or is dropped at shutdown).
struct Admitted {
    control: Arc<Control>,
    ip: IpAddr,
}

// Sent to the thread that serves the connection.
const _: fn() = || {
    fn is_send<T: Send>() {}
    is_send::<Admitted>();
};

impl Drop for Admitted {
    fn drop(&mut self) {
        self.control.admission().release(self.ip);
    }
}

/// A reader's share of [`Control::decoder_bytes`], taken back when the
/// reader ends or is dropped.
struct DecoderShare {
    control: Arc<Control>,
    counted: usize,
}

impl DecoderShare {
    fn update(&mut self, now: usize) {
        if now > self.counted {
            self.control
                .decoder_bytes
                .fetch_add(now - self.counted, Ordering::Relaxed);
        } else if now < self.counted {
            self.control
                .decoder_bytes
                .fetch_sub(self.counted - now, Ordering::Relaxed);
        }
        self.counted = now;
    }
}

impl Drop for DecoderShare {
    fn drop(&mut self) {
        self.update(0);
    }
}

/// A listener on `addr` with `runner.listen_backlog` (std's
/// `TcpListener::bind` asks for 128), `SO_REUSEADDR` set like std does on
/// Unix, ready for [`serve_with`].
pub fn bind(addr: SocketAddr, runner: &RunnerConfig) -> io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    #[cfg(unix)]
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    // The kernel caps it (somaxconn); an absurd value is clamped, not refused.
    let backlog = i32::try_from(runner.listen_backlog).unwrap_or(i32::MAX);
    socket.listen(backlog)?;
    socket.set_nonblocking(true)?;
    TcpListener::try_from(std::net::TcpListener::from(socket))
}

/// Serves `config` on `listener` with the default [`RunnerConfig`] until
/// `shutdown` completes, then closes every connection and returns. Runs on
/// the calling task (e.g. inside `smol::block_on`).
pub async fn serve(
    listener: TcpListener,
    config: ServerConfig,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    serve_with(listener, config, RunnerConfig::default(), shutdown).await
}

/// [`serve`] with the runner's own settings (connection caps; the backlog
/// is the listener's: create it with [`bind`]).
pub async fn serve_with(
    listener: TcpListener,
    config: ServerConfig,
    runner: RunnerConfig,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    serve_on(Listeners::new(listener), config, runner, shutdown).await
}

/// An admitted connection on its way to the thread that serves it.
struct NewLink {
    stream: Stream,
    admitted: Admitted,
    opener: Opener,
}

/// The listeners a server serves: TCP (or TLS) for length-prefixed frames,
/// and optionally one for WebSocket (and the pages beside it).
///
/// ```no_run
/// use hummer_channel::adapters::server_tcp::{bind, serve_on, Listeners, RunnerConfig};
/// use hummer_channel::server::ServerConfig;
///
/// # smol::block_on(async {
/// let runner = RunnerConfig::default();
/// let tcp = bind("127.0.0.1:7300".parse().unwrap(), &runner)?;
/// let ws = bind("127.0.0.1:7301".parse().unwrap(), &runner)?;
/// serve_on(Listeners::new(tcp).with_websocket(ws), ServerConfig::demo(), runner, std::future::pending()).await
/// # }).unwrap();
/// ```
#[non_exhaustive]
#[derive(Clone, Debug)]
pub struct Listeners {
    /// Length-prefixed frames, on TCP or (with a TLS identity) TLS.
    pub tcp: TcpListener,
    /// WebSocket (`/v1/ws`) and the pages, on HTTP or (with TLS) HTTPS.
    #[cfg(feature = "websocket")]
    pub websocket: Option<TcpListener>,
    /// The HTTP API listener (plain HTTP/1.1, never TLS): `/metrics`,
    /// `/healthz`, `/readyz`, the server API under `/v1/` and the
    /// dashboard. Bind it on a private address.
    #[cfg(feature = "http-api")]
    pub api: Option<TcpListener>,
}

impl Listeners {
    /// The TCP listener alone.
    pub fn new(tcp: TcpListener) -> Listeners {
        Listeners {
            tcp,
            #[cfg(feature = "websocket")]
            websocket: None,
            #[cfg(feature = "http-api")]
            api: None,
        }
    }

    /// Adds a WebSocket listener.
    #[cfg(feature = "websocket")]
    pub fn with_websocket(mut self, listener: TcpListener) -> Listeners {
        self.websocket = Some(listener);
        self
    }

    /// Adds the HTTP API listener (metrics, health, server API, dashboard).
    #[cfg(feature = "http-api")]
    pub fn with_api(mut self, listener: TcpListener) -> Listeners {
        self.api = Some(listener);
        self
    }
}

/// [`serve_with`] on several listeners (TCP and WebSocket).
pub async fn serve_on(
    listeners: Listeners,
    config: ServerConfig,
    runner: RunnerConfig,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    run(
        listeners,
        config,
        runner,
        shutdown,
        Arc::new(Control::default()),
        cluster::Role::Alone,
    )
    .await
    .map(drop)
}

/// How a run ended, when it did not fail.
enum Ended {
    /// It was told to stop.
    Shutdown,
    /// A gateway node lost its hub node (why): it must find it again.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    HubLost(String),
}

async fn run(
    listeners: Listeners,
    #[allow(unused_mut)] mut config: ServerConfig,
    #[allow(unused_mut)] mut runner: RunnerConfig,
    shutdown: impl Future<Output = ()>,
    control: Arc<Control>,
    role: cluster::Role,
) -> io::Result<Ended> {
    let unix_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let now = Instant::now();
    // A hub shard per thread (shard k on thread k); a gateway node has
    // none, and routes by the hub node's.
    let threads = runner.threads.clamp(1, usize::from(MAX_SHARDS));
    // Each hub shard's objects on one Redis instance: its batches atomic.
    #[cfg(feature = "redis")]
    if let Some(store) = &runner.store {
        if threads % store.instances() != 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{threads} threads over a store of {} Redis instances: the number of threads must be a multiple of the number of instances",
                    store.instances()
                ),
            ));
        }
    }
    let (first_gateway, shards, relays_hubs) = match &role {
        cluster::Role::Gateway(link) => (link.first.0, link.shards, true),
        _ => (0, u16::try_from(threads).unwrap_or(MAX_SHARDS), false),
    };
    // The hub node keeps the state; a gateway node only watches that the
    // hub node still holds the lease (watch_hub_lease).
    #[cfg(feature = "redis")]
    let hub_lease = match &role {
        cluster::Role::Gateway(link) => runner
            .store
            .take()
            .map(|store| (store, link.hub.clone(), runner.store_lease)),
        _ => None,
    };
    let (stop_tx, stop_rx) = bounded::<()>(1);
    #[cfg(feature = "http-api")]
    if listeners.api.is_some() {
        control.published.enable(threads);
    }
    #[cfg(feature = "webhooks")]
    control.hooks.start(&config, &runner);
    // What the store kept, restored by every shard before anything else.
    #[cfg(feature = "redis")]
    let mut generation: Option<String> = None;
    // Renews the lease from the moment it is this node's: loading and
    // restoring a large store may take longer than the lease.
    #[cfg(feature = "redis")]
    let mut lease_keeper: Option<smol::Task<String>> = None;
    #[cfg(feature = "redis")]
    let stored: Arc<Vec<crate::server::StoredObject>> = match &runner.store {
        Some(store) => {
            let fail = |e| io::Error::other(format!("the store ({}): {e}", store.url()));
            let mut s = store::RedisStore::connect(store).await.map_err(fail)?;
            // A standby waits with `take_lease` before it listens; here the
            // lease is this node's or it does not serve.
            if let store::Lease::HeldBy(other) =
                s.claim_lease(runner.store_lease).await.map_err(fail)?
            {
                return Err(io::Error::other(format!(
                    "node {other} holds the store's lease (a standby waits with take_lease before serving)"
                )));
            }
            if store.lease_owner().is_some() {
                // On smol's own threads: the restore below keeps this one.
                // A hub node keeps its announcement too.
                let announce = match &role {
                    cluster::Role::Hub {
                        address, secret, ..
                    } => Some((address.clone(), secret.clone())),
                    _ => None,
                };
                lease_keeper = Some(smol::spawn(keep_lease(
                    store.clone(),
                    runner.store_lease,
                    announce,
                )));
            }
            let objects = s.load().await.map_err(fail)?;
            // The writers expect the generation that was loaded: Redis
            // losing it before their first write is then noticed too.
            generation = s.generation().map(str::to_owned);
            config.durable = true;
            Arc::new(objects)
        }
        None => Arc::default(),
    };
    #[cfg(not(feature = "redis"))]
    let stored: Arc<Vec<crate::server::StoredObject>> = Arc::default();
    let (inbox_txs, inbox_rxs): (Vec<_>, Vec<_>) = (0..threads)
        .map(|_| bounded::<Vec<Envelope>>(QUEUE_BATCHES))
        .unzip();
    // Each thread gets every other thread's inbound queue.
    let peers_of = |t: usize| -> Vec<Option<Sender<Vec<Envelope>>>> {
        (0..threads)
            .map(|k| (k != t).then(|| inbox_txs[k].clone()))
            .collect()
    };
    let machines = |t: usize| {
        let id = u16::try_from(t).unwrap_or(u16::MAX);
        let gateway = Gateway::new(GatewayId(first_gateway + id), config.clone(), now, unix_ms)
            .with_shards(shards);
        if relays_hubs {
            return (gateway, Vec::new());
        }
        let mut hub = Hub::new_shard(config.clone(), ShardId(id), shards, now, unix_ms);
        if config.durable {
            let restored = hub.restore(now, &stored);
            log!(info, "shard {id} restored {restored:?}");
        }
        (gateway, vec![hub])
    };
    let mut new_links = Vec::new();
    let mut joins = Vec::new();
    let mut inbox_rxs = inbox_rxs.into_iter();
    let first_inbox = inbox_rxs.next().expect("one thread at least");
    for (k, inbox) in (1..threads).zip(inbox_rxs) {
        let (link_tx, link_rx) = bounded::<NewLink>(QUEUE_BATCHES);
        new_links.push(link_tx);
        let (gateway, hubs) = machines(k);
        let (peers, control, stop) = (peers_of(k), control.clone(), stop_rx.clone());
        #[cfg(feature = "redis")]
        let (store, generation) = (writer_store(&runner, k), generation.clone());
        let thread = std::thread::Builder::new()
            .name(format!("hummer-{k}"))
            .spawn(move || {
                let ex = Rc::new(LocalExecutor::new());
                let shard = Rc::new(Shard::new(k, gateway, hubs, peers, control, READ_CHUNK));
                #[cfg(feature = "redis")]
                if let Some(store) = store {
                    ex.spawn(shard.clone().store_writer(store, generation))
                        .detach();
                }
                smol::block_on(ex.run(serve_thread(ex.clone(), shard, inbox, link_rx, stop)));
            })?;
        joins.push(thread);
    }
    let ex = Rc::new(LocalExecutor::new());
    let (gateway, hubs) = machines(0);
    let shard = Rc::new(Shard::new(
        0,
        gateway,
        hubs,
        peers_of(0),
        control.clone(),
        READ_CHUNK,
    ));
    drop(inbox_txs);
    #[cfg(feature = "redis")]
    if let Some(store) = writer_store(&runner, 0) {
        ex.spawn(shard.clone().store_writer(store, generation.clone()))
            .detach();
    }
    ex.spawn(shard.clone().timer()).detach();
    ex.spawn(shard.clone().flusher()).detach();
    ex.spawn(shard.clone().inbox(first_inbox)).detach();
    // The links to other nodes, on this thread.
    let uplink_ended = Cell::new(None::<String>);
    let mut uplink = None;
    match role {
        cluster::Role::Alone => {}
        cluster::Role::Hub {
            listener,
            node,
            secret,
            tls,
            ..
        } => {
            let peers = Rc::new(cluster::Peers::default());
            shard.set_relay(cluster::Relay::Peers(peers.clone()));
            let accept = cluster::accept_peers(
                Rc::downgrade(&ex),
                shard.clone(),
                peers,
                listener,
                cluster::HubNode {
                    node,
                    secret,
                    shards,
                    tls,
                },
            );
            ex.spawn(accept).detach();
        }
        cluster::Role::Gateway(link) => {
            let up = cluster::Uplink::new(link.first, u16::try_from(threads).unwrap_or(1));
            shard.set_relay(cluster::Relay::Uplink(up.clone()));
            uplink = Some(ex.spawn(cluster::run_uplink(shard.clone(), up, link)));
        }
    }
    #[cfg(feature = "http-api")]
    {
        ex.spawn(shard.clone().publisher()).detach();
        if let Some(listener) = listeners.api {
            let context = Rc::new(api::ApiContext::new(
                shard.clone(),
                shards,
                config.limits.clone(),
            ));
            let api = http::Api::new(&config, &runner, control.clone(), context);
            ex.spawn(http::serve(Rc::downgrade(&ex), listener, Rc::new(api)))
                .detach();
        }
    }
    // The accept loop is a task of its own: a Task handle costs nothing to
    // poll, where the loop itself would try `accept` on every wake.
    let max_frame = config.limits.max_frame_size;
    let turn = Rc::new(Cell::new(0));
    let accept = ex.spawn(accept_loop(
        Rc::downgrade(&ex),
        shard.clone(),
        listeners.tcp,
        runner.clone(),
        new_links.clone(),
        runner.opener(false, max_frame),
        turn.clone(),
    ));
    #[cfg(feature = "websocket")]
    let accept_ws = listeners.websocket.map(|listener| {
        ex.spawn(accept_loop(
            Rc::downgrade(&ex),
            shard.clone(),
            listener,
            runner.clone(),
            new_links.clone(),
            runner.opener(true, max_frame),
            turn,
        ))
    });
    #[cfg(not(feature = "websocket"))]
    let accept_ws: Option<smol::Task<()>> = None;
    let accept_ws = async {
        match accept_ws {
            Some(task) => task.await,
            None => std::future::pending().await,
        }
    };
    drop(new_links);
    let lease_lost = Cell::new(None::<String>);
    let lease = async {
        #[cfg(feature = "redis")]
        if let Some(keeper) = lease_keeper {
            lease_lost.set(Some(keeper.await));
            return;
        }
        std::future::pending::<()>().await
    };
    let hub_lost = async {
        let lease_lapsed = async {
            #[cfg(feature = "redis")]
            if let Some((store, hub, ttl)) = hub_lease {
                return watch_hub_lease(store, hub, ttl).await;
            }
            std::future::pending().await
        };
        match uplink {
            Some(task) => uplink_ended.set(Some(task.or(lease_lapsed).await)),
            None => std::future::pending().await,
        }
    };
    let main = async {
        shutdown
            .or(accept)
            .or(accept_ws)
            .or(lease)
            .or(hub_lost)
            .await;
        log!(info, "shutting down");
        #[cfg(feature = "http-api")]
        control.published.shutting_down();
        stop_tx.close();
        shut_down(&shard).await;
        // This thread's shard keeps serving the others while they flush.
        for thread in joins {
            let _ = smol::unblock(move || thread.join()).await;
        }
    };
    ex.run(main).await;
    control.close_all();
    // The events of the last turns (the users gone offline) are queued:
    // they get a grace period to go.
    #[cfg(feature = "webhooks")]
    {
        let (c, grace) = (control.clone(), runner.webhooks.shutdown_grace);
        smol::unblock(move || c.hooks.stop(grace)).await;
    }
    if let Some(why) = uplink_ended.take() {
        return Ok(Ended::HubLost(why));
    }
    match lease_lost.take() {
        // Another node serves now: this one must not (its supervisor may
        // start it again, as a standby).
        Some(why) => Err(io::Error::other(format!("stopped: {why}"))),
        None => Ok(Ended::Shutdown),
    }
}

/// The store thread `k`'s writer writes to: the one Redis instance of its
/// hub shard's objects (`run` makes the threads a multiple of the
/// instances).
#[cfg(feature = "redis")]
fn writer_store(runner: &RunnerConfig, k: usize) -> Option<store::StoreConfig> {
    let store = runner.store.as_ref()?;
    Some(store.instance(k % store.instances()))
}

/// Waits until `store`'s lease owner holds the store's lease (claiming it
/// every third of `ttl`), telling `waiting` who holds it meanwhile: a
/// standby node calls this before it listens, so its clients go to the
/// active node until it dies.
#[cfg(feature = "redis")]
pub async fn take_lease(
    store: &store::StoreConfig,
    ttl: Duration,
    mut waiting: impl FnMut(&str),
) -> Result<(), store::StoreError> {
    let mut conn = store::RedisStore::connect(store).await?;
    let mut watch = LeaseWatch::new();
    let mut told = None;
    loop {
        match watch.try_claim(&mut conn, ttl).await {
            Ok(None) => {}
            Ok(Some(store::Lease::Held)) => return Ok(()),
            Ok(Some(store::Lease::HeldBy(other))) => {
                if told.as_ref() != Some(&other) {
                    waiting(&other);
                    told = Some(other);
                }
            }
            Err(store::StoreError::Unavailable(e)) => log!(warn, "store unreachable: {e}"),
            Err(e) => return Err(e),
        }
        Timer::after(ttl / 3).await;
    }
}

/// Claims a store's lease as a node that does not hold it must.
///
/// A node that just started waits one lease period before it takes a
/// free lease: Redis may have lost everything (the lease with it) under a
/// node that is alive and holds the whole state, which takes the lease
/// back within a third of `ttl` and writes its state again; a newcomer
/// taking it first would serve an empty store and stop that node. For the
/// same reason, once another node was seen serving, a free lease in a
/// namespace whose generation is no longer the one seen then is waited
/// for two leases more. (A node that simply died leaves the generation as
/// it was, and a standby watching for longer than a lease takes over at
/// once.)
#[cfg(feature = "redis")]
struct LeaseWatch {
    since: Instant,
    seen: Option<Option<String>>,
    emptied_since: Option<Instant>,
}

#[cfg(feature = "redis")]
impl LeaseWatch {
    fn new() -> LeaseWatch {
        LeaseWatch {
            since: Instant::now(),
            seen: None,
            emptied_since: None,
        }
    }

    /// One claim: who holds the lease now, or `None` while the claim must
    /// wait (a newcomer, or the store was just emptied).
    async fn try_claim(
        &mut self,
        conn: &mut store::RedisStore,
        ttl: Duration,
    ) -> Result<Option<store::Lease>, store::StoreError> {
        if self.since.elapsed() < ttl {
            return Ok(conn.lease_holder().await?.map(store::Lease::HeldBy));
        }
        let current = conn.read_generation().await;
        if let (Some(seen), Ok(current)) = (&self.seen, &current) {
            if current != seen {
                let since = *self.emptied_since.get_or_insert_with(Instant::now);
                if since.elapsed() < ttl * 2 {
                    return Ok(None);
                }
            }
        }
        let lease = conn.claim_lease(ttl).await?;
        if let (store::Lease::HeldBy(_), Ok(current)) = (&lease, current) {
            self.seen = Some(current);
            self.emptied_since = None;
        }
        Ok(Some(lease))
    }
}

/// Where a node of a cluster takes gateway nodes while it is the hub node
/// ([`serve_cluster`]).
#[cfg(feature = "redis")]
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ClusterOptions {
    /// The listener for the other nodes' links. A link is let in by the
    /// cluster's secret; without [`tls`](Self::tls) it is plain TCP, so
    /// bind it on an address only the nodes reach.
    pub listener: TcpListener,
    /// Its address as the other nodes reach it (`host:port`). With TLS,
    /// this node's certificate must be for its host.
    pub advertise: String,
    /// TLS on every link, both ways authenticated by the cluster's CA
    /// ([`NodeTls`]); every node of the cluster needs it, or none.
    pub tls: Option<NodeTls>,
}

#[cfg(feature = "redis")]
impl ClusterOptions {
    /// Links on `listener`, reached at `advertise`.
    pub fn new(listener: TcpListener, advertise: impl Into<String>) -> ClusterOptions {
        ClusterOptions {
            listener,
            advertise: advertise.into(),
            tls: None,
        }
    }

    /// Links in TLS with `tls` (the links this node takes as the hub node,
    /// and its link to the hub node otherwise).
    pub fn with_tls(mut self, tls: NodeTls) -> ClusterOptions {
        self.tls = Some(tls);
        self
    }
}

/// Serves `listeners` as one node of a cluster sharing `runner`'s store
/// (which needs a lease owner, [`store::StoreConfig::with_lease`]: the
/// node's name).
///
/// Every node serves clients. The node that holds the store's lease is
/// the *hub node*: it keeps the whole state, with its hub shards, and
/// takes the other nodes' links on `cluster.listener`. Every other node is
/// a *gateway node*: it serves its clients with its gateways only,
/// relaying to the hub node over one link. When that link ends (the hub
/// node died), or the hub node no longer holds the lease for a whole lease
/// (it is cut off from Redis), a gateway node closes its clients' links
/// (`Close{4006}`: they resume), and claims the lease or joins the new hub
/// node; while it has no role it closes new client connections at once. A
/// hub node whose lease another node took stops with an error, as
/// [`serve_on`] does.
///
/// Every node must be given the same [`ServerConfig`] (apps, secrets and
/// limits): gateways check tokens and limits with their own.
///
/// ```no_run
/// use hummer_channel::adapters::server_tcp::store::StoreConfig;
/// use hummer_channel::adapters::server_tcp::{bind, serve_cluster, ClusterOptions, Listeners, RunnerConfig};
/// use hummer_channel::server::ServerConfig;
///
/// # smol::block_on(async {
/// let store = StoreConfig::new("redis://127.0.0.1:6379").unwrap().with_lease("node-a");
/// let runner = RunnerConfig::default().with_store(store);
/// let clients = bind("0.0.0.0:7300".parse().unwrap(), &runner)?;
/// let nodes = bind("10.0.0.5:7400".parse().unwrap(), &runner)?;
/// let cluster = ClusterOptions::new(nodes, "10.0.0.5:7400");
/// serve_cluster(Listeners::new(clients), ServerConfig::demo(), runner, cluster, std::future::pending()).await
/// # }).unwrap();
/// ```
#[cfg(feature = "redis")]
pub async fn serve_cluster(
    listeners: Listeners,
    config: ServerConfig,
    runner: RunnerConfig,
    cluster: ClusterOptions,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let Some(store) = runner.store.clone() else {
        return Err(io::Error::other(
            "a cluster needs a store (RunnerConfig::with_store)",
        ));
    };
    let Some(node) = store.lease_owner().map(str::to_owned) else {
        return Err(io::Error::other(
            "a cluster node needs a name (StoreConfig::with_lease)",
        ));
    };
    let ttl = runner.store_lease;
    let threads = u16::try_from(runner.threads.clamp(1, usize::from(MAX_SHARDS))).unwrap_or(1);
    let mut shutdown = std::pin::pin!(shutdown);
    let mut conn = store::RedisStore::new(&store);
    let mut watch = LeaseWatch::new();
    let mut told = None;
    loop {
        let attempt = async {
            match watch.try_claim(&mut conn, ttl).await? {
                Some(store::Lease::Held) => {
                    let secret = random_secret();
                    if !conn.announce_hub(&cluster.advertise, &secret).await? {
                        // The lease lapsed since: claim it again.
                        return Ok(None);
                    }
                    Ok(Some(cluster::Role::Hub {
                        listener: cluster.listener.clone(),
                        node: node.clone(),
                        address: cluster.advertise.clone(),
                        secret,
                        tls: cluster.tls.clone(),
                    }))
                }
                Some(store::Lease::HeldBy(other)) => {
                    let hub = conn.hub_node().await?.filter(|h| h.node == other);
                    let Some(hub) = hub else { return Ok(None) };
                    let tls = cluster.tls.as_ref();
                    match cluster::connect_hub(&hub.address, &node, &hub.secret, threads, tls).await
                    {
                        Ok(link) => Ok(Some(cluster::Role::Gateway(link))),
                        Err(e) => {
                            if told.as_ref() != Some(&e) {
                                log!(
                                    warn,
                                    "cannot join hub node {} at {}: {e}",
                                    hub.node,
                                    hub.address
                                );
                                told = Some(e);
                            }
                            Ok(None)
                        }
                    }
                }
                None => Ok(None),
            }
        };
        // Its clients are turned away while it has no role (below too).
        let role = match attempt.or(turn_away(&listeners)).await {
            Ok(role) => role,
            Err(store::StoreError::Unavailable(e)) => {
                log!(warn, "store unreachable: {e}");
                None
            }
            Err(e) => return Err(io::Error::other(format!("the store ({store}): {e}"))),
        };
        if let Some(role) = role {
            match &role {
                cluster::Role::Hub { .. } => log!(info, "node {node}: hub node"),
                cluster::Role::Gateway(link) => log!(
                    info,
                    "node {node}: gateway node of hub node {}, gateways from {}",
                    link.hub,
                    link.first.0
                ),
                cluster::Role::Alone => {}
            }
            told = None;
            let stop = std::future::poll_fn(|cx| shutdown.as_mut().poll(cx));
            let control = Arc::new(Control::default());
            match run(
                listeners.clone(),
                config.clone(),
                runner.clone(),
                stop,
                control,
                role,
            )
            .await?
            {
                Ended::Shutdown => return Ok(()),
                Ended::HubLost(why) => {
                    log!(warn, "node {node}: {why}; finding the hub node again");
                    continue;
                }
            }
        }
        let wait = async {
            Timer::after(ttl / 3).await;
            false
        };
        let stop = async {
            std::future::poll_fn(|cx| shutdown.as_mut().poll(cx)).await;
            true
        };
        if wait.or(stop).or(turn_away(&listeners)).await {
            return Ok(());
        }
    }
}

/// While a cluster node has no role (it is finding the hub node, or
/// waiting for the lease), its client listeners close what they accept at
/// once: the clients try another node (or again later), where they would
/// otherwise wait in the listen backlog for a login reply that cannot
/// come until the node serves. Its API listener answers every request
/// `503` at once ([`http::refuse_unserved`]). Never ends.
#[cfg(feature = "redis")]
async fn turn_away<T>(listeners: &Listeners) -> T {
    #[cfg(feature = "http-api")]
    let api = async {
        match &listeners.api {
            Some(l) => http::refuse_unserved(l).await,
            None => std::future::pending().await,
        }
    };
    #[cfg(not(feature = "http-api"))]
    let api = std::future::pending();
    api.or(turn_clients_away(listeners)).await
}

/// [`turn_away`]'s client listeners.
#[cfg(feature = "redis")]
async fn turn_clients_away<T>(listeners: &Listeners) -> T {
    loop {
        let tcp = listeners.tcp.accept();
        #[cfg(feature = "websocket")]
        let ws = async {
            match &listeners.websocket {
                Some(l) => l.accept().await,
                None => std::future::pending().await,
            }
        };
        #[cfg(not(feature = "websocket"))]
        let ws = std::future::pending();
        match tcp.or(ws).await {
            Ok((stream, peer)) => {
                log!(
                    debug,
                    "closed {peer}'s connection: this node serves no one yet"
                );
                drop(stream);
            }
            // Out of descriptors: wait, as the accept loop does.
            Err(_) => {
                Timer::after(ACCEPT_BACKOFF_MAX).await;
            }
        }
    }
}

/// A gateway node's watch on its hub node's lease: returns (why) once the
/// lease was seen not to be the hub node's on every check for a whole
/// lease. A hub node cut off from Redis alone cannot renew it, and would
/// leave the whole cluster refusing requests until it reaches Redis again
/// while this node could take over; one that can renews it within a
/// third of it, so a Redis that was down for every node and is back does
/// not hand the state over. An unreachable Redis tells nothing.
#[cfg(feature = "redis")]
async fn watch_hub_lease(store: store::StoreConfig, hub: String, ttl: Duration) -> String {
    // It connects (again) by itself at the call after a failed one.
    let mut conn = store::RedisStore::new(&store);
    let mut lapsed_since: Option<Instant> = None;
    loop {
        Timer::after(ttl / 3).await;
        match conn.hub_node().await {
            Ok(Some(h)) if h.node == hub => lapsed_since = None,
            Ok(_) => {
                let since = *lapsed_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= ttl {
                    return format!("hub node {hub} no longer holds the store's lease");
                }
            }
            Err(_) => {}
        }
    }
}

/// A secret no one guesses: 16 bytes of the system's randomness (hex).
#[cfg(feature = "redis")]
fn random_secret() -> String {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    let read = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes));
    if read.is_err() {
        // No /dev/urandom: std's per-process random keys, twice.
        use std::hash::{BuildHasher, RandomState};
        for (i, half) in bytes.chunks_mut(8).enumerate() {
            let h = RandomState::new().hash_one((i, std::process::id(), Instant::now()));
            half.copy_from_slice(&h.to_le_bytes());
        }
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Renews the store's lease every third of `ttl` while this node serves
/// (taking it again when it lapsed and no one else took it); returns why
/// it must stop: another node holds the lease. An unreachable Redis is
/// retried (the writes wait meanwhile, and are refused while the lease is
/// not this node's).
///
/// A hub node (`announce`: where it takes links, and the cluster's
/// secret) says where it is again with each renewal: a Redis that lost
/// its data (restarted empty, flushed) lost that too, and gateway nodes
/// would neither find the hub node nor see that it holds the lease.
#[cfg(feature = "redis")]
async fn keep_lease(
    store: store::StoreConfig,
    ttl: Duration,
    announce: Option<(String, String)>,
) -> String {
    // It connects (again) by itself at the call after a failed one.
    let mut conn = store::RedisStore::new(&store);
    loop {
        Timer::after(ttl / 3).await;
        match conn.claim_lease(ttl).await {
            Ok(store::Lease::Held) => {
                if let Some((address, secret)) = &announce {
                    // (Refused only if the lease lapsed since the renewal:
                    // the next one tells.)
                    if let Err(e) = conn.announce_hub(address, secret).await {
                        log!(warn, "cannot announce the hub node: {e}");
                    }
                }
            }
            Ok(store::Lease::HeldBy(other)) => {
                return format!("node {other} holds the store's lease")
            }
            Err(e) => log!(warn, "cannot renew the store's lease: {e}"),
        }
    }
}

/// A thread other than the first: its gateway, its hub shard, its
/// connections.
async fn serve_thread(
    ex: Rc<LocalExecutor<'static>>,
    shard: Rc<Shard>,
    inbox: Receiver<Vec<Envelope>>,
    new_links: Receiver<NewLink>,
    stop: Receiver<()>,
) {
    ex.spawn(shard.clone().timer()).detach();
    ex.spawn(shard.clone().flusher()).detach();
    ex.spawn(shard.clone().inbox(inbox)).detach();
    #[cfg(feature = "http-api")]
    ex.spawn(shard.clone().publisher()).detach();
    let serving = async {
        while let Ok(link) = new_links.recv().await {
            link::start(&ex, &shard, link.stream, link.admitted, &link.opener);
        }
    };
    let stopped = async {
        let _ = stop.recv().await;
    };
    serving.or(stopped).await;
    shut_down(&shard).await;
}

/// Every client of the thread gets `Close{4006}` before its socket closes:
/// the writers flush it, for a bounded time.
async fn shut_down(shard: &Shard) {
    shard.gateway.borrow_mut().shutdown(Instant::now());
    shard.pump();
    let flushed = async {
        while !shard.links.borrow().is_empty() {
            Timer::after(Duration::from_millis(5)).await;
        }
    };
    let give_up = async {
        Timer::after(SHUTDOWN_FLUSH_TIMEOUT).await;
    };
    flushed.or(give_up).await;
    #[cfg(feature = "http-api")]
    shard.publish();
}

/// Accepts connections on the first thread and spreads them over the
/// threads in turn.
async fn accept_loop(
    ex: std::rc::Weak<LocalExecutor<'static>>,
    shard: Rc<Shard>,
    listener: TcpListener,
    runner: RunnerConfig,
    others: Vec<Sender<NewLink>>,
    opener: Opener,
    turn: Rc<Cell<usize>>,
) {
    let listener: Arc<Async<std::net::TcpListener>> = listener.into();
    let control = shard.control.clone();
    let mut backoff = AcceptBackoff::default();
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => {
                backoff.succeeded();
                x
            }
            Err(e) => {
                if backoff.failed(&e, "accept").await {
                    control.accept_errors.fetch_add(1, Ordering::Relaxed);
                }
                continue;
            }
        };
        let ip = ip_key(peer.ip());
        let admitted =
            control
                .admission()
                .admit(ip, runner.max_connections, runner.max_connections_per_ip);
        if let Err(cap) = admitted {
            // Closed with nothing written: no work, no state, and the peer
            // learns nothing it could tune an attack with.
            control.refused.fetch_add(1, Ordering::Relaxed);
            let cap = match cap {
                Cap::All => "max_connections",
                Cap::PerAddress => "max_connections_per_ip",
            };
            log!(debug, "refused a connection from {peer}: {cap} reached");
            drop(stream);
            continue;
        }
        let admitted = Admitted {
            control: control.clone(),
            ip,
        };
        let _ = stream.get_ref().set_nodelay(true);
        let stream = Arc::new(stream);
        // One turn for every listener: connections of all kinds are spread.
        let k = turn.get() % (others.len() + 1);
        turn.set(turn.get().wrapping_add(1));
        match k.checked_sub(1).and_then(|i| others.get(i)) {
            None => {
                let Some(ex) = ex.upgrade() else {
                    return;
                };
                link::start(&ex, &shard, stream, admitted, &opener);
            }
            // A thread that ended drops the connection (and its admission).
            Some(tx) => {
                let opener = opener.clone();
                let _ = tx
                    .send(NewLink {
                        stream,
                        admitted,
                        opener,
                    })
                    .await;
            }
        }
    }
}

/// How an accept loop goes on after a failed `accept`.
#[derive(Default)]
struct AcceptBackoff(Duration);

impl AcceptBackoff {
    fn succeeded(&mut self) {
        self.0 = Duration::ZERO;
    }

    /// After `accept` failed with `e`: at once for a peer that gave up
    /// before it was taken (false); otherwise (out of descriptors: EMFILE,
    /// ENFILE, and the like, when `accept` would fail again at once) it
    /// waits, longer after each failure in a row, while the connections
    /// already open keep being served (true).
    async fn failed(&mut self, e: &io::Error, what: &str) -> bool {
        if e.kind() == io::ErrorKind::ConnectionAborted {
            return false;
        }
        self.0 = (self.0 * 2).clamp(ACCEPT_BACKOFF_MIN, ACCEPT_BACKOFF_MAX);
        log!(warn, "{what} failed: {e}; next try in {:?}", self.0);
        let _ = what;
        Timer::after(self.0).await;
        true
    }
}

/// A server running [`serve`] on a background thread, for tests and
/// embedding. Dropping it shuts the server down too.
///
/// ```
/// use hummer_channel::adapters::server_tcp::ServerHandle;
/// use hummer_channel::server::ServerConfig;
///
/// let handle = ServerHandle::spawn(ServerConfig::demo(), "127.0.0.1:0".parse().unwrap()).unwrap();
/// let addr = handle.local_addr();
/// assert_ne!(addr.port(), 0);
/// let _client = std::net::TcpStream::connect(addr).unwrap();
/// handle.shutdown();
/// ```
pub struct ServerHandle {
    local_addr: SocketAddr,
    websocket_addr: Option<SocketAddr>,
    api_addr: Option<SocketAddr>,
    control: Arc<Control>,
    stop: Sender<()>,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl ServerHandle {
    /// Binds `addr` (port 0: any free port) and serves `config` on a new
    /// thread, with the default [`RunnerConfig`].
    pub fn spawn(config: ServerConfig, addr: SocketAddr) -> io::Result<ServerHandle> {
        ServerHandle::spawn_with(config, RunnerConfig::default(), addr)
    }

    /// [`ServerHandle::spawn`] with the runner's own settings (connection
    /// caps, listen backlog).
    pub fn spawn_with(
        config: ServerConfig,
        runner: RunnerConfig,
        addr: SocketAddr,
    ) -> io::Result<ServerHandle> {
        let listeners = Listeners::new(bind(addr, &runner)?);
        ServerHandle::spawn_on(config, runner, listeners)
    }

    /// [`ServerHandle::spawn_with`] on several listeners (TCP and
    /// WebSocket; see [`Listeners`]).
    ///
    /// ```
    /// use hummer_channel::adapters::server_tcp::{bind, Listeners, RunnerConfig, ServerHandle};
    /// use hummer_channel::server::ServerConfig;
    ///
    /// let runner = RunnerConfig::default();
    /// let any = "127.0.0.1:0".parse().unwrap();
    /// let listeners = Listeners::new(bind(any, &runner).unwrap()).with_websocket(bind(any, &runner).unwrap());
    /// let handle = ServerHandle::spawn_on(ServerConfig::demo(), runner, listeners).unwrap();
    /// let ws = handle.websocket_addr().unwrap();
    /// println!("ws://{ws}/v1/ws");
    /// handle.shutdown();
    /// ```
    pub fn spawn_on(
        config: ServerConfig,
        runner: RunnerConfig,
        listeners: Listeners,
    ) -> io::Result<ServerHandle> {
        let local_addr = listeners.tcp.local_addr()?;
        #[cfg(feature = "websocket")]
        let websocket_addr = listeners
            .websocket
            .as_ref()
            .map(TcpListener::local_addr)
            .transpose()?;
        #[cfg(not(feature = "websocket"))]
        let websocket_addr = None;
        #[cfg(feature = "http-api")]
        let api_addr = listeners
            .api
            .as_ref()
            .map(TcpListener::local_addr)
            .transpose()?;
        #[cfg(not(feature = "http-api"))]
        let api_addr = None;
        let control = Arc::new(Control::default());
        let (stop, stopped) = bounded::<()>(1);
        let c = control.clone();
        let thread = std::thread::Builder::new()
            .name("hummer-server".into())
            .spawn(move || {
                smol::block_on(run(
                    listeners,
                    config,
                    runner,
                    async move {
                        let _ = stopped.recv().await;
                    },
                    c,
                    cluster::Role::Alone,
                ))
                .map(drop)
            })?;
        Ok(ServerHandle {
            local_addr,
            websocket_addr,
            api_addr,
            control,
            stop,
            thread: Some(thread),
        })
    }

    /// The runner's counters now: open and refused connections, failed
    /// accepts, memory held by the frame decoders.
    pub fn stats(&self) -> RunnerStats {
        self.control.stats()
    }

    /// The webhooks' counters now (also in [`RunnerStats::hooks`]).
    #[cfg(feature = "webhooks")]
    pub fn hook_stats(&self) -> HookStats {
        self.control.hooks.stats()
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The address of the WebSocket listener, if there is one.
    pub fn websocket_addr(&self) -> Option<SocketAddr> {
        self.websocket_addr
    }

    /// The address of the HTTP API listener, if there is one
    /// ([`Listeners::with_api`]).
    pub fn api_addr(&self) -> Option<SocketAddr> {
        self.api_addr
    }

    /// Fault injection for tests: closes every client socket now. The server
    /// sees lost links (the instances wait out their grace period).
    pub fn drop_connections(&self) {
        self.control.close_all();
    }

    /// Stops the server, closes its connections and joins its thread.
    pub fn shutdown(self) {
        drop(self);
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.stop.close();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl std::fmt::Debug for ServerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerHandle")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}
