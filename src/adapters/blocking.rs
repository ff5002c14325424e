//! A blocking client over `std::net::TcpStream`: no async runtime.
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
use crate::client::{
    AttributeOptions, AttributesReply, ChannelHandle, ConnectionReason, ConnectionState, Event,
    InstanceInfo, LinkId, LoginInfo, MessageSent, Reply, SendOptions, Session, SessionConfig,
    UserCount, UserList,
};
use crate::types::{Attributes, ChannelKey, Message, Region, Uid};

/// A write that does not finish in this time breaks the link (the server
/// stopped reading).
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

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
    addr: SocketAddr,
}

/// The blocking adapter's part of the locked state.
struct Transport {
    /// Something happened that the driver must drain.
    wake: bool,
    /// Counts links and dials; a reader or dial of an older generation is
    /// stale and ignored.
    generation: u64,
    /// The open link (the driver writes to it; its reader has a clone).
    link: Option<Arc<TcpStream>>,
    /// The Session's id of the link being dialed or open.
    link_id: Option<LinkId>,
    /// A finished dial: its generation and result.
    dialed: Option<(u64, io::Result<TcpStream>)>,
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
            let _ = link.shutdown(Shutdown::Both);
        }
        self.room_cv.notify_all();
    }
}

impl Client {
    /// A client for the server at `addr`. Nothing happens on the network
    /// until [`login`](Self::login). Starts the driver thread; fails only
    /// when the thread cannot be spawned.
    pub fn connect(addr: SocketAddr, config: SessionConfig) -> io::Result<Client> {
        Client::connect_with_event_capacity(addr, config, DEFAULT_EVENT_CAPACITY)
    }

    /// [`connect`](Self::connect) with a bound on unread events other than
    /// [`DEFAULT_EVENT_CAPACITY`] (see the module docs on backpressure).
    pub fn connect_with_event_capacity(
        addr: SocketAddr,
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
            core: Mutex::new(Core::new(config, event_capacity, transport)),
            driver_cv: Condvar::new(),
            events_cv: Condvar::new(),
            room_cv: Condvar::new(),
            wakeups: AtomicU64::new(0),
            addr,
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
                match result.and_then(|s| s.set_nodelay(true).map(|()| s)) {
                    Ok(stream) => match start_reader(shared, &stream, generation, id) {
                        Ok(()) => {
                            core.transport.link = Some(Arc::new(stream));
                            core.link_up(id);
                        }
                        Err(_) => core.link_lost(id),
                    },
                    Err(_) => core.link_lost(id),
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
        if request.close || core.shutdown {
            if let Some(link) = &core.transport.link {
                // Best effort: the Session asked to close anyway.
                let _ = (&**link).write_all(&out);
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
            let written = (&*link).write_all(&out);
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
    let dialer = shared.clone();
    let spawned = thread::Builder::new()
        .name("hummer-dial".into())
        .spawn(move || {
            let result = TcpStream::connect_timeout(&dialer.addr, timeout);
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

/// Starts the reader thread of a new link.
fn start_reader(
    shared: &Arc<Shared>,
    stream: &TcpStream,
    generation: u64,
    link: LinkId,
) -> io::Result<()> {
    stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
    let reader = stream.try_clone()?;
    let shared = shared.clone();
    thread::Builder::new()
        .name("hummer-reader".into())
        .spawn(move || read_link(&shared, reader, generation, link))?;
    Ok(())
}

/// A reader thread: reads, feeds the frames to the Session, wakes the driver;
/// pauses while the event queue is full; ends with its link.
fn read_link(shared: &Shared, mut stream: TcpStream, generation: u64, link: LinkId) {
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
