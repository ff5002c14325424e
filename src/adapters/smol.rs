//! An async client on [smol](https://docs.rs/smol) (async-io), over TCP,
//! TLS or WebSocket: [`Client::connect_to`] takes a URL (`tcp://`,
//! `tls://`, `ws://`, `wss://`; see [`Endpoint`]), [`Client::connect_any`]
//! several servers of one service to fail over between.
//!
//! [`Client`] wraps a [`Session`] and a driver task. The driver is one loop,
//! in the style of quinn's `ConnectionDriver`: it drains what the Session has
//! to say (frames to write, completions, events, transport actions), re-arms
//! its timer from `poll_timeout` on every pass, then sleeps until the socket
//! is readable (or writable, while frames wait to go out: reading never stops
//! for a slow write), the timer fires or a call wakes it. An idle client
//! costs nothing but its heartbeat.
//!
//! Every operation is an `async fn` that sends its request and waits for its
//! typed reply. Everything else the Session reports (messages, notices,
//! connection states) comes out of [`Client::next_event`].
//!
//! # Backpressure
//!
//! Unread events wait in a queue of `event_capacity` entries
//! ([`DEFAULT_EVENT_CAPACITY`] unless set with
//! [`Client::connect_with_event_capacity`]). Nothing is ever dropped: when the
//! queue is full, the driver stops reading from the server (timers and
//! writes go on) until the application takes events again. TCP then pushes
//! back on the server, which may disconnect a consumer too slow for it; the
//! Session resumes after reconnecting without losing reliable messages.
//! While reading is paused, replies are not read either: a call made then
//! fails with 1005 (timeout) if the application does not read its events.

use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::{Buf as _, BytesMut};
use smol::channel::{self, Receiver, Sender};
use smol::future::{self, FutureExt as _};
use smol::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use smol::net::TcpStream;
use smol::{Task, Timer};

use super::driver::{self, lock, Cmd, Core, CLOSE_LOGOUT_WAIT, READ_CHUNK};
pub use super::driver::{ClientError, DEFAULT_EVENT_CAPACITY};
use super::endpoint::{Endpoint, Endpoints, NoEndpoints, Scheme};
use crate::client::{
    AttributeOptions, AttributesReply, ChannelHandle, ConnectionReason, ConnectionState, Event,
    InstanceInfo, LinkId, LoginInfo, MessageSent, Reply, SendOptions, Session, SessionConfig,
    UserCount, UserList,
};
use crate::types::{Attributes, ChannelKey, Message, Region, Uid};
use crate::wire::FrameDecoder;

/// An async Hummer client over TCP. Cheap to clone (clones share one
/// Session); the driver stops when the last clone is dropped (without
/// logging out: call [`close`](Self::close) for a clean end).
///
/// # Example
///
/// ```
/// # #[cfg(feature = "server-tcp")] {
/// use hummer_channel::adapters::server_tcp::ServerHandle;
/// use hummer_channel::adapters::smol::Client;
/// use hummer_channel::client::{Event, SendOptions, SessionConfig};
/// use hummer_channel::server::{ServerConfig, DEMO_APPID};
/// use hummer_channel::{Message, Region, Uid};
///
/// let server = ServerHandle::spawn(ServerConfig::demo(), "127.0.0.1:0".parse().unwrap()).unwrap();
/// smol::block_on(async {
///     let client = Client::connect(server.local_addr(), SessionConfig::new(DEMO_APPID));
///     let info = client.login(Uid(7), None, Some(Region::Cn)).await.unwrap();
///     println!("logged in as instance {}", info.instance_id);
///
///     let room = client.create_channel(Region::Cn, "lobby").unwrap();
///     client.join_channel(room, Default::default()).await.unwrap();
///     client
///         .send_message_to_channel(room, Message::new("text", "hello"), SendOptions::default())
///         .await
///         .unwrap();
///     // The broadcast comes back to its sender too.
///     loop {
///         match client.next_event().await {
///             Some(Event::ChannelMessage { message, .. }) => {
///                 assert_eq!(&message.content[..], b"hello");
///                 break;
///             }
///             Some(_) => continue,
///             None => panic!("closed"),
///         }
///     }
///     client.close().await;
/// });
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
    /// Wakes the driver (bounded to one: a pending wake is enough).
    wake: Sender<()>,
    /// Closed by the driver when it stops.
    done: Receiver<()>,
    /// Dropping it cancels the driver (which closes the socket).
    _task: Task<()>,
}

struct Shared {
    core: Mutex<Core<()>>,
    /// Says "events are queued" to `next_event` (bounded to one).
    events_ready: (Sender<()>, Receiver<()>),
    /// Passes of the driver loop (for tests of idleness).
    wakeups: AtomicU64,
}

impl Client {
    /// A client for the server at `addr` (TCP). Nothing happens on the
    /// network until [`login`](Self::login). Spawns the driver on smol's
    /// global executor.
    pub fn connect(addr: SocketAddr, config: SessionConfig) -> Client {
        Client::connect_with_event_capacity(addr, config, DEFAULT_EVENT_CAPACITY)
    }

    /// A client for the server at `endpoint`: `tcp://`, `tls://`, `ws://`
    /// or `wss://` (the last three with the features `tls` and
    /// `websocket`), a DNS name resolved at every dial. A transport this
    /// build leaves out fails each dial (the login fails with 1007).
    ///
    /// ```no_run
    /// use hummer_channel::adapters::{smol::Client, Endpoint};
    /// use hummer_channel::client::SessionConfig;
    ///
    /// let endpoint = Endpoint::parse("wss://chat.example.com/v1/ws").unwrap();
    /// let client = Client::connect_to(endpoint, SessionConfig::new(10000));
    /// # let _ = client;
    /// ```
    pub fn connect_to(endpoint: impl Into<Endpoint>, config: SessionConfig) -> Client {
        Client::connect_with_event_capacity(endpoint, config, DEFAULT_EVENT_CAPACITY)
    }

    /// A client for several servers of one service, tried in order: it
    /// keeps working when one of them dies. A failed dial moves to the next
    /// address at once; when every address failed once, the reconnect
    /// backoff applies before the next round, which starts again from the
    /// address that last worked. A lost link moves to the next address, where
    /// the Session's reconnect (and its resume) goes. An empty list is
    /// [`NoEndpoints`]. See [`Endpoints`].
    ///
    /// ```
    /// # #[cfg(feature = "server-tcp")] {
    /// use hummer_channel::adapters::server_tcp::ServerHandle;
    /// use hummer_channel::adapters::{smol::Client, Endpoint};
    /// use hummer_channel::client::SessionConfig;
    /// use hummer_channel::server::{ServerConfig, DEMO_APPID};
    /// use hummer_channel::Uid;
    ///
    /// let server = ServerHandle::spawn(ServerConfig::demo(), "127.0.0.1:0".parse().unwrap()).unwrap();
    /// // Nothing listens on the first address (port 1): the client goes on to the second.
    /// let dead: Endpoint = "tcp://127.0.0.1:1".parse().unwrap();
    /// let servers = [dead, Endpoint::from(server.local_addr())];
    /// let client = Client::connect_any(servers, SessionConfig::new(DEMO_APPID)).unwrap();
    /// smol::block_on(async {
    ///     client.login(Uid(7), None, None).await.unwrap();
    ///     assert_eq!(client.current_endpoint(), Some(server.local_addr().into()));
    ///     client.close().await;
    /// });
    /// assert!(Client::connect_any(Vec::<Endpoint>::new(), SessionConfig::new(DEMO_APPID)).is_err());
    /// # }
    /// ```
    pub fn connect_any(
        endpoints: impl IntoIterator<Item = impl Into<Endpoint>>,
        config: SessionConfig,
    ) -> Result<Client, NoEndpoints> {
        let endpoints = Endpoints::new(endpoints)?;
        Ok(Client::with_endpoints(
            endpoints,
            config,
            DEFAULT_EVENT_CAPACITY,
        ))
    }

    /// [`connect_to`](Self::connect_to) with a bound on unread events other
    /// than [`DEFAULT_EVENT_CAPACITY`] (see the module docs on
    /// backpressure).
    pub fn connect_with_event_capacity(
        endpoint: impl Into<Endpoint>,
        config: SessionConfig,
        event_capacity: usize,
    ) -> Client {
        Client::with_endpoints(endpoint.into().into(), config, event_capacity)
    }

    /// The most general constructor: [`connect_any`](Self::connect_any)'s
    /// list of servers and a bound on unread events.
    pub fn with_endpoints(
        endpoints: Endpoints,
        config: SessionConfig,
        event_capacity: usize,
    ) -> Client {
        let shared = Arc::new(Shared {
            core: Mutex::new(Core::new(config, endpoints, event_capacity, ())),
            events_ready: channel::bounded(1),
            wakeups: AtomicU64::new(0),
        });
        let (wake_tx, wake_rx) = channel::bounded(1);
        let (done_tx, done_rx) = channel::bounded(1);
        let task = smol::spawn(drive(shared.clone(), wake_rx, done_tx));
        Client {
            inner: Arc::new(Inner {
                shared,
                wake: wake_tx,
                done: done_rx,
                _task: task,
            }),
        }
    }

    fn core(&self) -> MutexGuard<'_, Core<()>> {
        lock(&self.inner.shared.core)
    }

    fn wake(&self) {
        let _ = self.inner.wake.try_send(());
    }

    /// Runs one command and waits for its completion.
    async fn request(
        &self,
        op: impl FnOnce(&mut Session, Instant) -> Cmd,
    ) -> Result<Reply, ClientError> {
        let (tx, rx) = channel::bounded(1);
        self.core().command(
            op,
            Box::new(move |result| {
                let _ = tx.try_send(result);
            }),
        )?;
        self.wake();
        rx.recv()
            .await
            .map_err(|_| ClientError::Closed)?
            .map_err(ClientError::Service)
    }

    /// The next event (messages, notices, connection states; completions of
    /// calls are not among them). `None` once the client is closed and every
    /// queued event was taken.
    pub async fn next_event(&self) -> Option<Event> {
        loop {
            if let Some(event) = self.try_next_event() {
                return Some(event);
            }
            {
                let core = self.core();
                if core.closed && !core.has_events() {
                    return None;
                }
            }
            // Closed (Err) only once the driver stopped: the loop then ends.
            let _ = self.inner.shared.events_ready.1.recv().await;
        }
    }

    /// An event if one is queued, without waiting.
    pub fn try_next_event(&self) -> Option<Event> {
        let mut core = self.core();
        let (event, was_full) = core.pop_event()?;
        if was_full {
            // The driver paused reading: there is room again.
            self.wake();
        }
        if core.has_events() {
            // Another reader may be waiting.
            let _ = self.inner.shared.events_ready.0.try_send(());
        }
        Some(event)
    }

    /// Ends the client cleanly: logs out if logged in (waiting up to 2 s for
    /// the reply), closes the socket and stops the driver. Calls made after
    /// (or still waiting) fail with [`ClientError::Closed`]; queued events
    /// can still be taken.
    pub async fn close(&self) {
        if self.core().is_logged_in() {
            let _ = self
                .logout()
                .or(async {
                    Timer::after(CLOSE_LOGOUT_WAIT).await;
                    Err(ClientError::Closed)
                })
                .await;
        }
        self.core().shutdown = true;
        self.wake();
        let _ = self.inner.done.recv().await;
    }

    /// Passes of the driver loop so far (to test that an idle client sleeps).
    #[doc(hidden)]
    pub fn driver_wakeups(&self) -> u64 {
        self.inner.shared.wakeups.load(Ordering::Relaxed)
    }

    driver::local_operations!();
}

macro_rules! async_operations {
    ($(
        $(#[$doc:meta])*
        fn $name:ident($($arg:ident: $ty:ty),* $(,)?) -> $ret:ty = $call:expr;
        $pat:pat => $out:expr;
    )*) => {
        impl Client {
            $(
                $(#[$doc])*
                pub async fn $name(&self, $($arg: $ty),*) -> Result<$ret, ClientError> {
                    #[allow(clippy::unused_unit)]
                    match self.request($call).await? {
                        $pat => Ok($out),
                        #[allow(unreachable_patterns)]
                        _ => Err(ClientError::UnexpectedReply),
                    }
                }
            )*
        }
    };
}
driver::with_operations!(async_operations);

/// How long closing waits to flush what is queued.
const CLOSE_FLUSH_WAIT: Duration = Duration::from_secs(2);

/// An open link: a reading and a writing half, so that reading and
/// writing can wait at the same time.
struct Link {
    id: LinkId,
    reader: Pin<Box<dyn AsyncRead + Send>>,
    writer: Pin<Box<dyn AsyncWrite + Send>>,
    /// The socket under it, to shut down.
    socket: std::net::TcpStream,
    /// TLS and WebSocket buffer what is written: flush after writing.
    flushes: bool,
    decoder: FrameDecoder,
}

/// A link just opened, before the Session hears of it.
struct Opened {
    reader: Pin<Box<dyn AsyncRead + Send>>,
    writer: Pin<Box<dyn AsyncWrite + Send>>,
    socket: std::net::TcpStream,
    flushes: bool,
}

type Dial = Pin<Box<dyn Future<Output = io::Result<Opened>> + Send>>;

/// Opens a link to `endpoint`: resolves its host, connects, and runs the
/// TLS and WebSocket handshakes its scheme asks for.
async fn dial(endpoint: Endpoint) -> io::Result<Opened> {
    let url = endpoint.url();
    let mut last = None;
    let mut stream = None;
    for addr in smol::net::resolve((url.host(), url.port())).await? {
        match async_io::Async::<std::net::TcpStream>::connect(addr).await {
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
    stream.get_ref().set_nodelay(true)?;
    let socket = stream.get_ref().try_clone()?;
    if url.scheme() == Scheme::Tcp {
        let stream = TcpStream::from(stream);
        return Ok(Opened {
            reader: Box::pin(stream.clone()),
            writer: Box::pin(stream),
            socket,
            flushes: false,
        });
    }
    #[cfg(any(feature = "tls", feature = "websocket"))]
    {
        let link = super::link::open(url, endpoint.roots(), stream).await?;
        let (reader, writer) = futures_lite::io::split(link);
        Ok(Opened {
            reader: Box::pin(reader),
            writer: Box::pin(writer),
            socket,
            flushes: true,
        })
    }
    #[cfg(not(any(feature = "tls", feature = "websocket")))]
    Err(super::link_unsupported(url.scheme()))
}

/// What woke the driver.
enum Wake {
    Timer,
    Call,
    Stopped,
    Read(io::Result<usize>),
    Wrote(io::Result<usize>),
    Flushed(io::Result<()>),
    Dialed(io::Result<Opened>),
}

async fn drive(shared: Arc<Shared>, wake: Receiver<()>, done: Sender<()>) {
    let mut link: Option<Link> = None;
    // Bytes written to a TLS or WebSocket link since its last flush.
    let mut unflushed = false;
    let mut dialing: Option<(LinkId, Dial)> = None;
    let mut out = BytesMut::new();
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        shared.wakeups.fetch_add(1, Ordering::Relaxed);
        // Drain, and read the timer and the queue bound, on every pass.
        let (request, target, deadline, paused, shutdown) = {
            let mut core = lock(&shared.core);
            let request = core.drain(&mut out);
            if core.has_events() {
                let _ = shared.events_ready.0.try_send(());
            }
            if request.close {
                core.link_closed();
            }
            let target = request.connect.map(|_| core.dial_target());
            (
                request,
                target,
                core.session.poll_timeout(),
                core.events_full(),
                core.shutdown,
            )
        };
        if request.close || shutdown {
            if let Some(l) = link.take() {
                // Best effort, and bounded: the Session asked to close anyway.
                let mut stream = l.writer;
                let flush = async {
                    let _ = stream.write_all(&out).await;
                    let _ = stream.flush().await;
                    // A WebSocket close, a TLS close_notify.
                    if l.flushes {
                        let _ = stream.close().await;
                    }
                };
                let give_up = async {
                    Timer::after(CLOSE_FLUSH_WAIT).await;
                };
                flush.or(give_up).await;
                let _ = l.socket.shutdown(std::net::Shutdown::Both);
            }
            out.clear();
            dialing = None;
        }
        if shutdown {
            break;
        }
        if let (Some(id), Some(target)) = (request.connect, target) {
            link = None;
            dialing = Some((id, Box::pin(dial(target))));
        }
        // Frames belong to the link they were drained for: without one
        // (the Session never queues then) they are dropped.
        if link.is_none() {
            out.clear();
        }

        let timer = async {
            match deadline {
                Some(at) => {
                    Timer::at(at).await;
                }
                None => future::pending::<()>().await,
            }
            Wake::Timer
        };
        let call = async {
            match wake.recv().await {
                Ok(()) => Wake::Call,
                Err(_) => Wake::Stopped,
            }
        };
        // Reading goes on while a write is pending: a peer blocked on
        // writing to us must be read for it to read what we write.
        let (reader, writer) = match &mut link {
            Some(l) => (Some(l.reader.as_mut()), Some(l.writer.as_mut())),
            None => (None, None),
        };
        let read = async {
            match reader {
                Some(mut r) if !paused => Wake::Read(r.read(&mut buf).await),
                _ => future::pending().await,
            }
        };
        let write = async {
            match writer {
                Some(mut w) if !out.is_empty() => Wake::Wrote(w.write(&out).await),
                // Flushing is cancel-safe: it is polled again next pass.
                Some(mut w) if unflushed => Wake::Flushed(w.flush().await),
                _ => future::pending().await,
            }
        };
        let dialed = async {
            match &mut dialing {
                Some((_, d)) => Wake::Dialed(d.await),
                None => future::pending().await,
            }
        };
        let woke = timer.or(call).or(read).or(write).or(dialed).await;

        let mut core = lock(&shared.core);
        match woke {
            Wake::Timer => core.timeout(),
            Wake::Call => {}
            Wake::Stopped => break,
            Wake::Read(Ok(n)) if n > 0 => {
                let l = link.as_mut().expect("read from a link");
                if core.on_bytes(l.id, &mut l.decoder, &buf[..n]).is_err() {
                    let id = l.id;
                    link = None;
                    core.link_lost(id);
                }
            }
            Wake::Wrote(Ok(n)) if n > 0 => {
                out.advance(n);
                unflushed = link.as_ref().is_some_and(|l| l.flushes);
            }
            Wake::Flushed(Ok(())) => unflushed = false,
            Wake::Read(_) | Wake::Wrote(_) | Wake::Flushed(_) => {
                // End of stream or an error: the link is gone.
                if let Some(l) = link.take() {
                    core.link_lost(l.id);
                }
                out.clear();
            }
            Wake::Dialed(result) => {
                let Some((id, _)) = dialing.take() else {
                    continue;
                };
                match result {
                    Ok(opened) => {
                        unflushed = false;
                        link = Some(Link {
                            id,
                            reader: opened.reader,
                            writer: opened.writer,
                            socket: opened.socket,
                            flushes: opened.flushes,
                            decoder: core.decoder(),
                        });
                        core.link_up(id);
                    }
                    Err(_) => {
                        if core.dial_failed(id) {
                            // Another server of the list, at once.
                            dialing = Some((id, Box::pin(dial(core.dial_target()))));
                        }
                    }
                }
            }
        }
    }
    lock(&shared.core).stop();
    shared.events_ready.0.close();
    drop(done);
}
