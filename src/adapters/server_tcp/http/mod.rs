//! The HTTP API listener ([`Listeners::with_api`](super::Listeners::with_api)):
//! plain HTTP/1.1 (hyper, on the runner's first thread through smol-hyper),
//! serving
//!
//! - `GET /healthz`: `200 ok` while the process serves; `GET /readyz`:
//!   `200 ready` once every runner thread serves, `503 shutting down` once
//!   the shutdown started (no key needed for either);
//! - `GET /metrics`: the Prometheus text format (0.0.4, `text/plain;
//!   version=0.0.4`), no key needed: bind the listener on a private address;
//! - `GET /v1/stats`: the dashboard's figures as JSON (API key needed);
//! - every other `/v1/...` path: the server API (`api.rs`, API key needed);
//! - `GET /dashboard` (and its files under `/dashboard/`): the live
//!   dashboard page, which holds no data itself: it asks for an API key and
//!   polls `/v1/stats`.
//!
//! Keys: `Authorization: apikey KEY`, checked with
//! [`ServerConfig::app_of_api_key`] (constant time). Errors are JSON,
//! `{"code": <service code>, "message": "..."}`: 400 (2001), 401 (1009,
//! with `WWW-Authenticate: apikey`), 404 (2004), 405 (2001, with `Allow`),
//! 411 and 413 (2007), 429 (4003, with `Retry-After`), 500 (4000), 503
//! (4000: shutting down, or a request over its time).
//!
//! What the listener bounds:
//!
//! - at most [`MAX_CONNECTIONS`] (256) open connections; one more closes
//!   the open one that has been idle longest (no request being answered),
//!   so that idle or half-sent connections cannot lock the listener, or is
//!   closed at once when every open one is answering a request;
//! - a request's head must arrive within [`HEAD_TIMEOUT`] (10 s) of its
//!   first byte, and heads are at most 64 KiB (hyper's read buffer);
//! - a keep-alive connection idle (no request in progress, no byte read or
//!   written) for [`IDLE_TIMEOUT`] (60 s) is closed;
//! - a request body is at most [`MAX_BODY`] (1 MiB): a larger
//!   `Content-Length` gets 413 before the body is read, a chunked body is
//!   read up to the cap and then gets 413; a `POST` or `PUT` with neither
//!   `Content-Length` nor `Transfer-Encoding` gets 411;
//! - every request is answered within [`REQUEST_TIMEOUT`] (30 s), body read
//!   included, or gets 503;
//! - API calls are rate limited per app with a token bucket
//!   ([`ApiOptions`]: 200 a second, bursts of 400, by default); calls
//!   without a valid key are limited the same way per client address
//!   (IPv6: per /64), so that guessing keys is slow. Beyond: 429 with
//!   `Retry-After`, counted in `hummer_rate_limited_total{limit="api_requests"}`.
//!
//! The metrics come from snapshots: each runner thread publishes its
//! gateway's and hub shards' [`Stats`](crate::server::Stats) every
//! [`PUBLISH_EVERY`] (500 ms) and at shutdown ([`Published`]); a scrape
//! merges them. No lock is taken on a frame's path.

mod dashboard;
mod limit;
mod metrics;
mod overview;
mod process;
mod published;
mod routes;

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use smol::future::FutureExt as _;
use smol::io::{AsyncRead, AsyncWrite};
use smol::net::{TcpListener, TcpStream};
use smol::{LocalExecutor, Timer};
use smol_hyper::rt::FuturesIo;

use super::api::ApiContext;
use super::{Control, RunnerConfig};
use crate::server::{Histogram, ServerConfig};
use limit::Limits;
pub(super) use published::Published;

/// How often each runner thread publishes its counters.
pub(super) const PUBLISH_EVERY: Duration = Duration::from_millis(500);
/// Open API connections at most.
pub const MAX_CONNECTIONS: usize = 256;
/// A request head must arrive within this time of its first byte.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// A keep-alive connection with nothing going on is closed after this.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// A request is answered within this time, or gets 503.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// A request body's size at most.
pub const MAX_BODY: usize = 1024 * 1024;
/// How often a connection's deadlines are checked.
const WATCH_EVERY: Duration = Duration::from_millis(500);

/// Settings of the API listener ([`RunnerConfig::api`]).
///
/// ```
/// use hummer_channel::adapters::server_tcp::{ApiOptions, RunnerConfig};
///
/// let runner = RunnerConfig::default().with_api(ApiOptions::default().with_rate_limit(50, 100));
/// assert_eq!(runner.api.requests_per_second, 50);
/// ```
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiOptions {
    /// API calls an app may make per second, on average (its key's token
    /// bucket refills at this rate); calls without a valid key, per client
    /// address. Default 200.
    pub requests_per_second: u32,
    /// Calls in a burst (the bucket's size). Default 400.
    pub burst: u32,
}

impl Default for ApiOptions {
    fn default() -> Self {
        ApiOptions {
            requests_per_second: 200,
            burst: 400,
        }
    }
}

impl ApiOptions {
    /// Sets the rate limit of API calls: `per_second` on average, `burst`
    /// at once.
    pub fn with_rate_limit(mut self, per_second: u32, burst: u32) -> Self {
        self.requests_per_second = per_second;
        self.burst = burst;
        self
    }
}

/// An open connection's activity, and the sending side of its eviction
/// signal (dropped: the connection closes).
type Tracked = (Rc<Activity>, smol::channel::Sender<()>);

/// The API listener's state, on the runner's first thread.
pub(super) struct Api {
    config: ServerConfig,
    control: Arc<Control>,
    context: Rc<ApiContext>,
    limits: RefCell<Limits>,
    open: Cell<usize>,
    /// The open connections, by a number of their own: what they do, and
    /// the sending side of their eviction signal (dropped: closed).
    connections: RefCell<HashMap<u64, Tracked>>,
    next_connection: Cell<u64>,
    /// Requests answered, by (route pattern, status).
    requests: RefCell<BTreeMap<(&'static str, u16), u64>>,
    /// Their durations, by route pattern.
    latency: RefCell<BTreeMap<&'static str, Histogram>>,
    /// Calls refused by the rate limits.
    rate_limited: Cell<u64>,
}

impl Api {
    pub fn new(
        config: &ServerConfig,
        runner: &RunnerConfig,
        control: Arc<Control>,
        context: Rc<ApiContext>,
    ) -> Api {
        Api {
            config: config.clone(),
            control,
            context,
            limits: RefCell::new(Limits::new(&runner.api)),
            open: Cell::new(0),
            connections: RefCell::default(),
            next_connection: Cell::new(0),
            requests: RefCell::default(),
            latency: RefCell::default(),
            rate_limited: Cell::new(0),
        }
    }

    /// Counts an answered request.
    fn note(&self, route: &'static str, status: u16, took: Duration) {
        *self
            .requests
            .borrow_mut()
            .entry((route, status))
            .or_default() += 1;
        self.latency
            .borrow_mut()
            .entry(route)
            .or_default()
            .observe(took);
    }
}

/// Accepts API connections and serves each on a task of the runner's
/// first thread.
pub(super) async fn serve(ex: Weak<LocalExecutor<'static>>, listener: TcpListener, api: Rc<Api>) {
    let mut backoff = super::AcceptBackoff::default();
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => {
                backoff.succeeded();
                x
            }
            Err(e) => {
                backoff.failed(&e, "API accept").await;
                continue;
            }
        };
        if api.open.get() >= MAX_CONNECTIONS && !api.evict_idlest() {
            log!(
                debug,
                "refused an API connection from {peer}: {MAX_CONNECTIONS} open, all busy"
            );
            drop(stream);
            continue;
        }
        let Some(ex) = ex.upgrade() else {
            return;
        };
        let _ = stream.set_nodelay(true);
        let open = Open::new(api.clone());
        ex.spawn(connection(stream, peer, api.clone(), open))
            .detach();
    }
}

/// Requests on the API listener of a cluster node that serves no one
/// yet (it is finding the hub node) at once get `503` (`{"code": 4010,
/// ...}`, `Retry-After: 1`) and the connection closes: the caller retries,
/// there or at another node, rather than waiting in the listen backlog.
/// `GET /healthz` gets `200 ok`: the process lives (a liveness probe must
/// not restart a node for waiting on its cluster); `/readyz` gets the 503.
/// At most [`MAX_CONNECTIONS`] are answered at once (each reads its head
/// for at most a second); more are closed unanswered. Never ends.
#[cfg(feature = "redis")]
pub(super) async fn refuse_unserved<T>(listener: &TcpListener) -> T {
    use smol::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use std::sync::atomic::{AtomicUsize, Ordering};
    let answering = Arc::new(AtomicUsize::new(0));
    let body = serde_json::json!({
        "code": crate::error::ErrorCode::SERVICE_UNAVAILABLE.code(),
        "message": "this node is finding the cluster's hub node: retry",
    })
    .to_string();
    let response: Arc<[u8]> = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         cache-control: no-store\r\nretry-after: 1\r\nconnection: close\r\n\
         content-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
    .into();
    const ALIVE: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\
        cache-control: no-store\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok";
    let mut backoff = super::AcceptBackoff::default();
    loop {
        let mut stream = match listener.accept().await {
            Ok((stream, _)) => {
                backoff.succeeded();
                stream
            }
            Err(e) => {
                backoff.failed(&e, "API accept").await;
                continue;
            }
        };
        if answering.fetch_add(1, Ordering::Relaxed) >= MAX_CONNECTIONS {
            answering.fetch_sub(1, Ordering::Relaxed);
            continue;
        }
        let (answering, response) = (answering.clone(), response.clone());
        smol::spawn(async move {
            // The head (what fits in a read or two), so that closing does
            // not reset the connection before the answer is read.
            let mut head = vec![0u8; 8 * 1024];
            let mut got = 0;
            let read_head = async {
                while got < head.len() && !head[..got].windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut head[got..]).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => got += n,
                    }
                }
            };
            let late = Timer::after(Duration::from_secs(1));
            read_head
                .or(async {
                    late.await;
                })
                .await;
            let alive = head[..got].starts_with(b"GET /healthz ");
            let _ = stream
                .write_all(if alive { ALIVE } else { &response })
                .await;
            let _ = stream.close().await;
            answering.fetch_sub(1, Ordering::Relaxed);
        })
        .detach();
    }
}

impl Api {
    /// Closes the open connection idle longest (none answering a request):
    /// whether there was one.
    fn evict_idlest(&self) -> bool {
        let mut connections = self.connections.borrow_mut();
        let idlest = connections
            .iter()
            .filter(|(_, (a, _))| !a.busy.get())
            .min_by_key(|(_, (a, _))| a.last_io.get())
            .map(|(&n, _)| n);
        match idlest {
            Some(n) => {
                // Dropping the sender ends the connection's task.
                connections.remove(&n);
                log!(
                    debug,
                    "closed the API connection idle longest: {MAX_CONNECTIONS} open"
                );
                true
            }
            None => false,
        }
    }
}

/// An open API connection's place in [`Api::open`] and
/// [`Api::connections`].
struct Open {
    api: Rc<Api>,
    number: u64,
}

impl Open {
    /// Counts a connection; its activity and its eviction signal.
    fn new(api: Rc<Api>) -> (Open, Rc<Activity>, smol::channel::Receiver<()>) {
        api.open.set(api.open.get() + 1);
        let number = api.next_connection.get();
        api.next_connection.set(number + 1);
        let activity = Rc::new(Activity::new());
        let (tx, rx) = smol::channel::bounded(1);
        api.connections
            .borrow_mut()
            .insert(number, (activity.clone(), tx));
        (Open { api, number }, activity, rx)
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.api.open.set(self.api.open.get().saturating_sub(1));
        self.api.connections.borrow_mut().remove(&self.number);
    }
}

/// What a connection is doing, for its deadlines.
struct Activity {
    /// A request is being answered.
    busy: Cell<bool>,
    /// The first byte of a head not yet complete came at this time.
    head_since: Cell<Option<Instant>>,
    /// The last byte read or written.
    last_io: Cell<Instant>,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            busy: Cell::new(false),
            head_since: Cell::new(None),
            last_io: Cell::new(Instant::now()),
        }
    }

    fn read(&self, n: usize) {
        if n > 0 {
            let now = Instant::now();
            self.last_io.set(now);
            if !self.busy.get() && self.head_since.get().is_none() {
                self.head_since.set(Some(now));
            }
        }
    }

    fn request(&self, busy: bool) {
        self.busy.set(busy);
        self.head_since.set(None);
        self.last_io.set(Instant::now());
    }

    /// Completes when a deadline passed: a head too slow, or idle too long.
    async fn expired(&self) {
        loop {
            Timer::after(WATCH_EVERY).await;
            let now = Instant::now();
            if let Some(t) = self.head_since.get() {
                if now.saturating_duration_since(t) > HEAD_TIMEOUT {
                    log!(
                        debug,
                        "API connection closed: no complete head in {HEAD_TIMEOUT:?}"
                    );
                    return;
                }
            }
            if !self.busy.get() && now.saturating_duration_since(self.last_io.get()) > IDLE_TIMEOUT
            {
                return;
            }
        }
    }
}

/// The socket, noting its reads and writes in the connection's [`Activity`].
struct Watched {
    stream: TcpStream,
    activity: Rc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.stream).poll_read(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            self.activity.read(n);
        }
        r
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.stream).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            if n > 0 {
                self.activity.last_io.set(Instant::now());
            }
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_close(cx)
    }
}

/// Serves one connection until the client closes it, hyper ends it, or a
/// deadline passes.
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    api: Rc<Api>,
    (_open, activity, evicted): (Open, Rc<Activity>, smol::channel::Receiver<()>),
) {
    let io = FuturesIo::new(Watched {
        stream,
        activity: activity.clone(),
    });
    let service = {
        let activity = activity.clone();
        hyper::service::service_fn(move |request| {
            let (api, activity) = (api.clone(), activity.clone());
            async move {
                activity.request(true);
                let response = routes::respond(&api, request, peer.ip()).await;
                activity.request(false);
                Ok::<_, Infallible>(response)
            }
        })
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .keep_alive(true)
        .header_read_timeout(None)
        .max_buf_size(64 * 1024);
    let served = async {
        if let Err(e) = builder.serve_connection(io, service).await {
            log!(debug, "API connection from {peer}: {e}");
        }
    };
    let evicted = async {
        let _ = evicted.recv().await;
    };
    served.or(activity.expired()).or(evicted).await;
}
