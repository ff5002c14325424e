//! A blocking client over `std::net::TcpStream`: no async runtime.
//! [`Client::connect_to`] also takes `tls://`, `ws://` and `wss://` URLs
//! (features `tls`, `websocket`; see [`Endpoint`]): their links run on the
//! same threads, each blocking call of the link being a small `block_on`
//! of async-io. [`Client::connect_any`] takes several servers of one
//! service to fail over between.
//!
//! [`Client`] has the same operations as the smol client
//! (`adapters::smol::Client`), as methods that block until their reply.
//! Events come out of [`Client::recv_event`].
//!
//! # Threads
//!
//! A driver thread owns the Session's timer and the transport: it sleeps on a
//! condition variable until the next deadline from `poll_timeout` (re-armed
//! on every pass) or until something wakes it (a call, bytes read, a dial
//! finished), then drains the Session and writes what it produced. Each link
//! has a reader thread blocked in `read` that feeds the Session the frames it
//! finds and wakes the driver; each dial runs on a short-lived thread, so
//! the driver never waits for a dial. The driver writes without holding the
//! lock (a write stalled for 10 s breaks the link). Calls from any thread
//! lock the Session, issue their command, wake the driver and wait on a channel of
//! their own for the completion. Nothing polls: an idle client sleeps until
//! its heartbeat.
//!
//! # Backpressure
//!
//! Unread events wait in a queue of `event_capacity` entries
//! ([`DEFAULT_EVENT_CAPACITY`] unless set with
//! [`Client::connect_with_event_capacity`]). Nothing is ever dropped: when the
//! queue is full the reader stops reading from the server (timers and writes
//! go on) until the application takes events again. TCP then pushes back on
//! the server, which may disconnect a consumer too slow for it; the Session
//! resumes after reconnecting without losing reliable messages. While
//! reading is paused, replies are not read either: a call made then fails
//! with 1005 (timeout) if the application does not read its events.

use std::collections::BTreeMap;
use std::io::{self, Read as _, Write as _};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use bytes::BytesMut;

use super::driver::{self, lock, Cmd, Core, CLOSE_LOGOUT_WAIT, READ_CHUNK};
pub use super::driver::{ClientError, DEFAULT_EVENT_CAPACITY};
use super::endpoint::{Endpoint, Endpoints, Scheme};
#[cfg(any(feature = "tls", feature = "websocket"))]
use super::link::LinkStream;
use crate::client::{
    AttributeOptions, AttributesReply, ChannelHandle, ConnectionReason, ConnectionState, Event,
    InstanceInfo, LinkId, LoginInfo, MessageSent, Reply, SendOptions, Session, SessionConfig,
    UserCount, UserList,
};
use crate::types::{Attributes, ChannelKey, Message, Region, Uid};

/// A write that does not finish in this time breaks the link (the server
/// stopped reading).
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long closing a TLS or WebSocket link may take to write its last
/// frames and its close.
#[cfg(any(feature = "tls", feature = "websocket"))]
const CLOSE_FLUSH_WAIT: Duration = Duration::from_secs(2);

/// A blocking Hummer client over TCP. `Send + Sync`: share it between
/// threads by reference or clone it (clones share one Session). The driver
/// stops when the last clone is dropped (without logging out: call
/// [`close`](Self::close) for a clean end).
///
/// # Example
///
/// ```
/// # #[cfg(feature = "server-tcp")] {
/// use std::time::Duration;
/// use hummer_channel::adapters::blocking::Client;
/// use hummer_channel::adapters::server_tcp::ServerHandle;
/// use hummer_channel::client::{Event, SendOptions, SessionConfig};
/// use hummer_channel::server::{ServerConfig, DEMO_APPID};
/// use hummer_channel::{Message, Region, Uid};
///
/// let server = ServerHandle::spawn(ServerConfig::demo(), "127.0.0.1:0".parse().unwrap()).unwrap();
/// let alice = Client::connect(server.local_addr(), SessionConfig::new(DEMO_APPID)).unwrap();
/// let bob = Client::connect(server.local_addr(), SessionConfig::new(DEMO_APPID)).unwrap();
/// alice.login(Uid(1), None, Some(Region::Cn)).unwrap();
/// bob.login(Uid(2), None, Some(Region::Cn)).unwrap();
///
/// let sent = alice
///     .send_message_to_user(Uid(2), Message::new("text", "hi bob"), SendOptions::default())
///     .unwrap();
/// assert!(sent.delivered_online);
/// loop {
///     match bob.recv_event(Duration::from_secs(5)) {
///         Some(Event::MessageFromUser { from_uid, message, .. }) => {
///             assert_eq!(from_uid, Uid(1));
///             assert_eq!(&message.content[..], b"hi bob");
///             break;
///         }
///         Some(_) => continue,
///         None => panic!("no message"),
///     }
/// }
/// alice.close();
/// bob.close();
/// server.shutdown();
/// # }
/// ```
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("state", &self.connection_state())
            .finish_non_exhaustive()
    }
}

struct Inner {
    shared: Arc<Shared>,
    driver: Mutex<Option<JoinHandle<()>>>,
}

impl Inner {
    /// Stops the driver thread and waits for it to end.
    fn stop(&self) {
        self.shared.stop_driver();
        if let Some(driver) = lock(&self.driver).take() {
            let _ = driver.join();
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop();
    }
}

struct Shared {
    core: Mutex<Core<Transport>>,
    /// The driver waits on it (with the Session's deadline).
    driver_cv: Condvar,
    /// `recv_event` waits on it.
    events_cv: Condvar,
    /// Readers paused by a full event queue wait on it.
    room_cv: Condvar,
    /// Passes of the driver loop (for tests of idleness).
    wakeups: AtomicU64,
}

/// The blocking adapter's part of the locked state.
struct Transport {
    /// Something happened that the driver must drain.
    wake: bool,
    /// Counts links and dials; a reader or dial of an older generation is
    /// stale and ignored.
    generation: u64,
    /// The open link (the driver writes to it; its reader has a clone).
    link: Option<Arc<Writer>>,
    /// The Session's id of the link being dialed or open.
    link_id: Option<LinkId>,
    /// A finished dial: its generation and result.
    dialed: Option<(u64, io::Result<Dialed>)>,
}

/// A link just opened.
enum Dialed {
    Tcp(TcpStream),
    /// TLS or WebSocket, and the socket under it (to shut down).
    #[cfg(any(feature = "tls", feature = "websocket"))]
    Framed(TcpStream, LinkStream),
}

/// The driver's side of an open link.
enum Writer {
    Tcp(TcpStream),
    #[cfg(any(feature = "tls", feature = "websocket"))]
    Framed(TcpStream, Mutex<futures_lite::io::WriteHalf<LinkStream>>),
}

/// The reader thread's side of an open link.
enum Reader {
    Tcp(TcpStream),
    #[cfg(any(feature = "tls", feature = "websocket"))]
    Framed(futures_lite::io::ReadHalf<LinkStream>),
}

impl Writer {
    fn socket(&self) -> &TcpStream {
        match self {
            Writer::Tcp(s) => s,
            #[cfg(any(feature = "tls", feature = "websocket"))]
            Writer::Framed(s, _) => s,
        }
    }

    /// Writes all of `bytes`: on TCP an error after [`WRITE_TIMEOUT`]
    /// without the peer taking any; on TLS and WebSocket after
    /// [`WRITE_TIMEOUT`] in all (or [`CLOSE_FLUSH_WAIT`] when closing).
    /// `close` ends the transport after them (a WebSocket close, a TLS
    /// close_notify).
    fn write_all(&self, bytes: &[u8], close: bool) -> io::Result<()> {
        match self {
            Writer::Tcp(s) => {
                // TCP ends with the shutdown that follows a close.
                let _ = close;
                let mut s = s;
                s.write_all(bytes)
            }
            #[cfg(any(feature = "tls", feature = "websocket"))]
            Writer::Framed(_, half) => {
                use futures_lite::{AsyncWriteExt as _, FutureExt as _};
                let mut half = lock(half);
                let write = async {
                    half.write_all(bytes).await?;
                    half.flush().await?;
                    if close {
                        half.close().await?;
                    }
                    Ok(())
                };
                let limit = if close {
                    CLOSE_FLUSH_WAIT
                } else {
                    WRITE_TIMEOUT
                };
                let timeout = async {
                    async_io::Timer::after(limit).await;
                    Err(io::ErrorKind::TimedOut.into())
                };
                async_io::block_on(write.or(timeout))
            }
        }
    }
}

impl Reader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Reader::Tcp(s) => s.read(buf),
            #[cfg(any(feature = "tls", feature = "websocket"))]
            Reader::Framed(half) => async_io::block_on(futures_lite::AsyncReadExt::read(half, buf)),
        }
    }
}

/// Opens a link to `endpoint` (on a dial thread): resolves, connects
/// within `timeout`, and runs the TLS and WebSocket handshakes its scheme
/// asks for within the same time.
fn dial(endpoint: &Endpoint, timeout: Duration) -> io::Result<Dialed> {
    use std::net::ToSocketAddrs as _;
    let url = endpoint.url();
    let mut last = None;
    let mut stream = None;
    for addr in (url.host(), url.port()).to_socket_addrs()? {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = Some(e),
        }
    }
    let stream = stream.ok_or_else(|| {
        last.unwrap_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address"))
    })?;
    stream.set_nodelay(true)?;
    if url.scheme() == Scheme::Tcp {
        return Ok(Dialed::Tcp(stream));
    }
    #[cfg(any(feature = "tls", feature = "websocket"))]
    {
        use futures_lite::FutureExt as _;
        let socket = stream.try_clone()?;
        let open = super::link::open(url, endpoint.roots(), async_io::Async::new(stream)?);
        let give_up = async {
            async_io::Timer::after(timeout).await;
            Err(io::ErrorKind::TimedOut.into())
        };
        Ok(Dialed::Framed(
            socket,
            async_io::block_on(open.or(give_up))?,
        ))
    }
    #[cfg(not(any(feature = "tls", feature = "websocket")))]
    Err(super::link_unsupported(url.scheme()))
}

impl Shared {
    /// Marks work for the driver and wakes it.
    fn wake(&self, core: &mut Core<Transport>) {
        core.transport.wake = true;
        self.driver_cv.notify_one();
    }

    fn stop_driver(&self) {
        let mut core = lock(&self.core);
        core.shutdown = true;
        self.wake(&mut core);
    }

    /// Ends the current link (if any) without telling the Session.
    fn drop_link(&self, core: &mut Core<Transport>) {
        core.transport.generation += 1;
        if let Some(link) = core.transport.link.take() {
            let _ = link.socket().shutdown(Shutdown::Both);
        }
        self.room_cv.notify_all();
    }
}

impl Client {
    /// A client for the server at `addr` (TCP). Nothing happens on the
    /// network until [`login`](Self::login). Starts the driver thread;
    /// fails only when the thread cannot be spawned.
    pub fn connect(addr: SocketAddr, config: SessionConfig) -> io::Result<Client> {
        Client::connect_with_event_capacity(addr, config, DEFAULT_EVENT_CAPACITY)
    }

    /// A client for the server at `endpoint`: `tcp://`, `tls://`, `ws://`
    /// or `wss://` (the last three with the features `tls` and
    /// `websocket`), a DNS name resolved at every dial. A transport this
    /// build leaves out fails each dial (the login fails with 1007).
    ///
    /// ```no_run
    /// use hummer_channel::adapters::{blocking::Client, Endpoint};
    /// use hummer_channel::client::SessionConfig;
    ///
    /// let ca = std::fs::read("ca.pem").unwrap();
    /// let endpoint = Endpoint::parse("tls://localhost:7300").unwrap().with_ca_pem(ca);
    /// let client = Client::connect_to(endpoint, SessionConfig::new(10000)).unwrap();
    /// # let _ = client;
    /// ```
    pub fn connect_to(endpoint: impl Into<Endpoint>, config: SessionConfig) -> io::Result<Client> {
        Client::connect_with_event_capacity(endpoint, config, DEFAULT_EVENT_CAPACITY)
    }

    /// A client for several servers of one service, tried in order: it
    /// keeps working when one of them dies. A failed dial moves to the next
    /// address at once; when every address failed once, the reconnect
    /// backoff applies before the next round, which starts again from the
    /// address that last worked. A lost link moves to the next address, where
    /// the Session's reconnect (and its resume) goes. See [`Endpoints`].
    ///
    /// An empty list fails with an error of kind
    /// [`InvalidInput`](io::ErrorKind::InvalidInput) carrying
    /// [`NoEndpoints`](super::NoEndpoints) (or build the list with [`Endpoints::new`] and pass it
    /// to [`with_endpoints`](Self::with_endpoints)); otherwise it fails only
    /// when the driver thread cannot be spawned.
    ///
    /// ```
    /// # #[cfg(feature = "server-tcp")] {
    /// use hummer_channel::adapters::server_tcp::ServerHandle;
    /// use hummer_channel::adapters::{blocking::Client, Endpoint, NoEndpoints};
    /// use hummer_channel::client::SessionConfig;
    /// use hummer_channel::server::{ServerConfig, DEMO_APPID};
    /// use hummer_channel::Uid;
    ///
    /// let server = ServerHandle::spawn(ServerConfig::demo(), "127.0.0.1:0".parse().unwrap()).unwrap();
    /// // Nothing listens on the first address (port 1): the client goes on to the second.
    /// let dead: Endpoint = "tcp://127.0.0.1:1".parse().unwrap();
    /// let servers = [dead, Endpoint::from(server.local_addr())];
    /// let client = Client::connect_any(servers, SessionConfig::new(DEMO_APPID)).unwrap();
    /// client.login(Uid(7), None, None).unwrap();
    /// assert_eq!(client.current_endpoint(), Some(server.local_addr().into()));
    /// client.close();
    ///
    /// let empty = Client::connect_any(Vec::<Endpoint>::new(), SessionConfig::new(DEMO_APPID));
    /// let err = empty.unwrap_err();
    /// assert_eq!(err.get_ref().and_then(|e| e.downcast_ref()), Some(&NoEndpoints));
    /// # }
    /// ```
    pub fn connect_any(
        endpoints: impl IntoIterator<Item = impl Into<Endpoint>>,
        config: SessionConfig,
    ) -> io::Result<Client> {
        let endpoints = Endpoints::new(endpoints)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        Client::with_endpoints(endpoints, config, DEFAULT_EVENT_CAPACITY)
    }

    /// [`connect_to`](Self::connect_to) with a bound on unread events other
    /// than [`DEFAULT_EVENT_CAPACITY`] (see the module docs on
    /// backpressure).
    pub fn connect_with_event_capacity(
        endpoint: impl Into<Endpoint>,
        config: SessionConfig,
        event_capacity: usize,
    ) -> io::Result<Client> {
        Client::with_endpoints(endpoint.into().into(), config, event_capacity)
    }

    /// The most general constructor: [`connect_any`](Self::connect_any)'s
    /// list of servers (never empty) and a bound on unread events.
    pub fn with_endpoints(
        endpoints: Endpoints,
        config: SessionConfig,
        event_capacity: usize,
    ) -> io::Result<Client> {
        let transport = Transport {
            wake: false,
            generation: 0,
            link: None,
            link_id: None,
            dialed: None,
        };
        let shared = Arc::new(Shared {
            core: Mutex::new(Core::new(config, endpoints, event_capacity, transport)),
            driver_cv: Condvar::new(),
            events_cv: Condvar::new(),
            room_cv: Condvar::new(),
            wakeups: AtomicU64::new(0),
        });
        let driver = {
            let shared = shared.clone();
            thread::Builder::new()
                .name("hummer-driver".into())
                .spawn(move || drive(&shared))?
        };
        Ok(Client {
            inner: Arc::new(Inner {
                shared,
                driver: Mutex::new(Some(driver)),
            }),
        })
    }

    fn core(&self) -> MutexGuard<'_, Core<Transport>> {
        lock(&self.inner.shared.core)
    }

    /// Runs one command and waits (up to `limit`, if any) for its completion.
    fn request_within(
        &self,
        op: impl FnOnce(&mut Session, Instant) -> Cmd,
        limit: Option<Duration>,
    ) -> Result<Reply, ClientError> {
        let (tx, rx) = mpsc::sync_channel(1);
        {
            let mut core = self.core();
            core.command(
                op,
                Box::new(move |result| {
                    let _ = tx.try_send(result);
                }),
            )?;
            self.inner.shared.wake(&mut core);
        }
        let result = match limit {
            None => rx.recv().map_err(|_| ClientError::Closed)?,
            Some(limit) => rx.recv_timeout(limit).map_err(|_| ClientError::Closed)?,
        };
        result.map_err(ClientError::Service)
    }

    fn request(&self, op: impl FnOnce(&mut Session, Instant) -> Cmd) -> Result<Reply, ClientError> {
        self.request_within(op, None)
    }

    /// The next event (messages, notices, connection states; completions of
    /// calls are not among them), waiting up to `timeout`. `None` if none
    /// came in time, or once the client is closed and every queued event
    /// was taken.
    pub fn recv_event(&self, timeout: Duration) -> Option<Event> {
        let deadline = Instant::now() + timeout;
        let shared = &self.inner.shared;
        let mut core = self.core();
        loop {
            if let Some((event, was_full)) = core.pop_event() {
                if was_full {
                    shared.room_cv.notify_all();
                }
                return Some(event);
            }
            let now = Instant::now();
            if core.closed || now >= deadline {
                return None;
            }
            core = shared
                .events_cv
                .wait_timeout(core, deadline - now)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
    }

    /// An event if one is queued, without waiting.
    pub fn try_recv_event(&self) -> Option<Event> {
        self.recv_event(Duration::ZERO)
    }

    /// Ends the client cleanly: logs out if logged in (waiting up to 2 s for
    /// the reply), closes the socket and stops the driver thread. Calls made
    /// after (or still waiting) fail with [`ClientError::Closed`]; queued
    /// events can still be taken.
    pub fn close(&self) {
        if self.core().is_logged_in() {
            let _ = self.request_within(|s, now| s.logout(now), Some(CLOSE_LOGOUT_WAIT));
        }
        self.inner.stop();
    }

    /// Passes of the driver loop so far (to test that an idle client sleeps).
    #[doc(hidden)]
    pub fn driver_wakeups(&self) -> u64 {
        self.inner.shared.wakeups.load(Ordering::Relaxed)
    }

    driver::local_operations!();
}

macro_rules! blocking_operations {
    ($(
        $(#[$doc:meta])*
        fn $name:ident($($arg:ident: $ty:ty),* $(,)?) -> $ret:ty = $call:expr;
        $pat:pat => $out:expr;
    )*) => {
        impl Client {
            $(
                $(#[$doc])*
                pub fn $name(&self, $($arg: $ty),*) -> Result<$ret, ClientError> {
                    #[allow(clippy::unused_unit)]
                    match self.request($call)? {
                        $pat => Ok($out),
                        #[allow(unreachable_patterns)]
                        _ => Err(ClientError::UnexpectedReply),
                    }
                }
            )*
        }
    };
}
driver::with_operations!(blocking_operations);

/// The driver thread: drain, write, obey transport actions, sleep until the
/// deadline or a wake.
fn drive(shared: &Arc<Shared>) {
    let mut out = BytesMut::new();
    let mut core = lock(&shared.core);
    loop {
        shared.wakeups.fetch_add(1, Ordering::Relaxed);
        core.transport.wake = false;
        if let Some((generation, result)) = core.transport.dialed.take() {
            if let (true, Some(id)) = (
                generation == core.transport.generation,
                core.transport.link_id,
            ) {
                match result.and_then(|dialed| start_reader(shared, dialed, generation, id)) {
                    Ok(writer) => {
                        core.transport.link = Some(Arc::new(writer));
                        core.link_up(id);
                    }
                    Err(_) => {
                        if core.dial_failed(id) {
                            // Another server of the list, at once.
                            start_dial(shared, &mut core);
                        }
                    }
                }
            }
        }
        if core
            .session
            .poll_timeout()
            .is_some_and(|at| at <= Instant::now())
        {
            core.timeout();
        }

        let request = core.drain(&mut out);
        if core.has_events() {
            shared.events_cv.notify_all();
        }
        if request.close {
            core.link_closed();
        }
        if request.close || core.shutdown {
            if let Some(link) = &core.transport.link {
                // Best effort: the Session asked to close anyway.
                let _ = link.write_all(&out, true);
            }
            out.clear();
            shared.drop_link(&mut core);
        }
        if core.shutdown {
            break;
        }
        if let Some(id) = request.connect {
            shared.drop_link(&mut core);
            core.transport.link_id = Some(id);
            start_dial(shared, &mut core);
        }
        // Frames belong to the link they were drained for: without one
        // (the Session never queues then) they are dropped.
        let link = match out.is_empty() {
            true => None,
            false => core.transport.link.clone(),
        };
        if let Some(link) = link {
            // Written without the lock, so that the reader (which may have
            // to drain the socket for the server to read ours) and callers
            // are never held up by a slow write. Only this thread writes.
            let generation = core.transport.generation;
            drop(core);
            let written = link.write_all(&out, false);
            core = lock(&shared.core);
            if written.is_err() && core.transport.generation == generation {
                shared.drop_link(&mut core);
                if let Some(id) = core.transport.link_id {
                    core.link_lost(id);
                }
                out.clear();
                continue;
            }
        }
        out.clear();

        if core.transport.wake {
            continue;
        }
        core = match core.session.poll_timeout() {
            Some(at) => {
                let now = Instant::now();
                if at <= now {
                    continue;
                }
                shared
                    .driver_cv
                    .wait_timeout(core, at - now)
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .0
            }
            None => shared
                .driver_cv
                .wait(core)
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        };
    }
    core.stop();
    shared.events_cv.notify_all();
    shared.room_cv.notify_all();
}

/// Opens a link on a thread of its own; the result goes to the driver.
fn start_dial(shared: &Arc<Shared>, core: &mut Core<Transport>) {
    let generation = core.transport.generation;
    let timeout = core.session.config().timing.login_timeout;
    let target = core.dial_target();
    let dialer = shared.clone();
    let spawned = thread::Builder::new()
        .name("hummer-dial".into())
        .spawn(move || {
            let result = dial(&target, timeout);
            let mut core = lock(&dialer.core);
            core.transport.dialed = Some((generation, result));
            dialer.wake(&mut core);
        });
    if let Err(e) = spawned {
        // Reported as a failed dial on the driver's next pass.
        core.transport.dialed = Some((generation, Err(e)));
        shared.wake(core);
    }
}

/// Starts the reader thread of a new link; the driver's side of it.
fn start_reader(
    shared: &Arc<Shared>,
    dialed: Dialed,
    generation: u64,
    link: LinkId,
) -> io::Result<Writer> {
    let (reader, writer) = match dialed {
        Dialed::Tcp(stream) => {
            stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
            (Reader::Tcp(stream.try_clone()?), Writer::Tcp(stream))
        }
        #[cfg(any(feature = "tls", feature = "websocket"))]
        Dialed::Framed(socket, stream) => {
            let (r, w) = futures_lite::io::split(stream);
            (Reader::Framed(r), Writer::Framed(socket, Mutex::new(w)))
        }
    };
    let shared = shared.clone();
    thread::Builder::new()
        .name("hummer-reader".into())
        .spawn(move || read_link(&shared, reader, generation, link))?;
    Ok(writer)
}

/// A reader thread: reads, feeds the frames to the Session, wakes the driver;
/// pauses while the event queue is full; ends with its link.
fn read_link(shared: &Shared, mut stream: Reader, generation: u64, link: LinkId) {
    let mut decoder = lock(&shared.core).decoder();
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        {
            let mut core = lock(&shared.core);
            while core.events_full() && core.transport.generation == generation {
                core = shared
                    .room_cv
                    .wait(core)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
            }
            if core.transport.generation != generation {
                return;
            }
        }
        let read = stream.read(&mut buf);
        let mut core = lock(&shared.core);
        if core.transport.generation != generation {
            // The link was closed on purpose: nothing to report.
            return;
        }
        let broken = match read {
            Ok(0) => true,
            Ok(n) => core.on_bytes(link, &mut decoder, &buf[..n]).is_err(),
            Err(e) => e.kind() != io::ErrorKind::Interrupted,
        };
        if broken {
            shared.drop_link(&mut core);
            core.link_lost(link);
        }
        shared.wake(&mut core);
        if broken {
            return;
        }
    }
}
