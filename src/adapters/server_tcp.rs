//! Runs the [`Server`] on TCP with smol: length-prefixed frames on each
//! connection, one task per connection (a reader feeding the server and a
//! writer pulling its queue), and one timer task re-armed from
//! [`Server::poll_timeout`] after every pass. The server sits behind a mutex
//! that is never held across an await.
//!
//! ```no_run
//! use hummer_channel::adapters::server_tcp::ServerHandle;
//! use hummer_channel::server::ServerConfig;
//!
//! let handle = ServerHandle::spawn(ServerConfig::demo(), "127.0.0.1:0".parse().unwrap()).unwrap();
//! println!("listening on {}", handle.local_addr());
//! handle.shutdown();
//! ```

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{Shutdown, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use smol::channel::{bounded, Receiver, Sender};
use smol::future::FutureExt as _;
use smol::io::{AsyncReadExt, AsyncWriteExt};
use smol::net::{TcpListener, TcpStream};
use smol::{Executor, Timer};

use crate::server::{ConnId, Server, ServerConfig};
use crate::wire::{write_length_prefixed, FrameDecoder};

/// Logs through `tracing` when the `tracing` feature is on, else nowhere.
macro_rules! log {
    ($lvl:ident, $($arg:tt)*) => {{
        #[cfg(feature = "tracing")]
        tracing::$lvl!($($arg)*);
        #[cfg(not(feature = "tracing"))]
        let _ = format_args!($($arg)*);
    }};
}

/// Bytes gathered from the queue into one socket write.
/// How long a shutdown waits for the `Close` frames to be flushed.
const SHUTDOWN_FLUSH_TIMEOUT: Duration = Duration::from_secs(2);
const WRITE_BATCH: usize = 256 * 1024;
/// A peer that accepts no bytes for this long is dead: its connection goes.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// The same once the server has closed the connection (a slow consumer).
const CLOSE_FLUSH_TIMEOUT: Duration = Duration::from_secs(2);
/// How often a stalled write checks the timeouts.
const WRITE_TICK: Duration = Duration::from_millis(250);
/// Bytes read from a socket at once. Each connection holds this buffer for
/// its whole life, so it is kept small: idle connections dominate memory
/// (16 KiB here was about 80 % of an idle connection's resident cost), and
/// 4 KiB still takes dozens of typical frames per read.
const READ_CHUNK: usize = 4 * 1024;
/// Consecutive full reads of one connection before it lets the others run.
const YIELD_AFTER_FULL_READS: u32 = 16;

/// What a running `serve` shares with a [`ServerHandle`].
#[derive(Default)]
struct Control {
    sockets: Mutex<HashMap<ConnId, ConnHandle>>,
}

struct ConnHandle {
    stream: TcpStream,
    wake: Sender<()>,
    closing: Arc<AtomicBool>,
}

impl Control {
    fn sockets(&self) -> MutexGuard<'_, HashMap<ConnId, ConnHandle>> {
        self.sockets.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn close_all(&self) {
        for h in self.sockets().values() {
            let _ = h.stream.shutdown(Shutdown::Both);
        }
    }
}

struct Shared {
    server: Mutex<Server>,
    control: Arc<Control>,
    timer_wake: Sender<()>,
    /// The deadline the timer task sleeps until (`None`: none).
    armed: Mutex<Option<Instant>>,
    max_frame_size: usize,
}

impl Shared {
    fn server(&self) -> MutexGuard<'_, Server> {
        self.server.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// After every input: wakes the writers with output, flags the
    /// connections to close, and re-arms the timer if its deadline moved
    /// earlier.
    fn pump(&self, s: &mut Server, from_timer: bool) {
        let sockets = self.control.sockets();
        while let Some(c) = s.poll_ready() {
            if let Some(h) = sockets.get(&c) {
                let _ = h.wake.try_send(());
            }
        }
        while let Some((c, reason)) = s.poll_close() {
            log!(debug, "closing {c}: {reason}");
            if let Some(h) = sockets.get(&c) {
                h.closing.store(true, Ordering::SeqCst);
                let _ = h.wake.try_send(());
            }
        }
        drop(sockets);
        if !from_timer {
            let next = s.poll_timeout();
            let armed = *self.armed.lock().unwrap_or_else(|p| p.into_inner());
            if next.is_some() && (armed.is_none() || next < armed) {
                let _ = self.timer_wake.try_send(());
            }
        }
    }
}

/// Serves `config` on `listener` until `shutdown` completes, then closes
/// every connection and returns. Runs on the calling task (e.g. inside
/// `smol::block_on`).
pub async fn serve(
    listener: TcpListener,
    config: ServerConfig,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    serve_with(listener, config, shutdown, Arc::new(Control::default())).await
}

async fn serve_with(
    listener: TcpListener,
    config: ServerConfig,
    shutdown: impl Future<Output = ()>,
    control: Arc<Control>,
) -> io::Result<()> {
    let unix_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let max_frame_size = config.limits.max_frame_size;
    let (timer_wake, timer_rx) = bounded(1);
    let shared = Arc::new(Shared {
        server: Mutex::new(Server::new(config, Instant::now(), unix_ms)),
        control: control.clone(),
        timer_wake,
        armed: Mutex::new(None),
        max_frame_size,
    });
    let ex = Arc::new(Executor::new());
    ex.spawn(timer_task(shared.clone(), timer_rx)).detach();
    let accept_loop = {
        // Weak: the executor owns this task, which must not keep it alive.
        let (ex, shared, control) = (Arc::downgrade(&ex), shared.clone(), control.clone());
        async move {
            loop {
                let (stream, peer) = match listener.accept().await {
                    Ok(x) => x,
                    Err(e) => {
                        // Out of descriptors and the like: back off, keep serving.
                        log!(warn, "accept failed: {e}");
                        Timer::after(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let (wake, wake_rx) = bounded(1);
                let closing = Arc::new(AtomicBool::new(false));
                let conn = {
                    let mut s = shared.server();
                    let conn = s.accept(Instant::now());
                    control.sockets().insert(
                        conn,
                        ConnHandle {
                            stream: stream.clone(),
                            wake,
                            closing: closing.clone(),
                        },
                    );
                    shared.pump(&mut s, false);
                    conn
                };
                log!(debug, "accepted {conn} from {peer}");
                // Reader and writer are tasks of their own, so waking one does
                // not poll the other (a failed read and an epoll_ctl per wake).
                let Some(ex) = ex.upgrade() else {
                    return;
                };
                let reader = ex.spawn(read_loop(
                    shared.clone(),
                    conn,
                    stream.clone(),
                    closing.clone(),
                ));
                let writer = ex.spawn(write_loop(
                    shared.clone(),
                    conn,
                    stream.clone(),
                    wake_rx,
                    closing,
                ));
                ex.spawn(connection(shared.clone(), conn, stream, reader, writer))
                    .detach();
            }
        }
    };
    // The accept loop is a task of its own: `run` polls its future on every
    // wake of the executor, and a Task handle costs nothing to poll, where
    // the loop itself would try `accept` each time.
    let accept_task = ex.spawn(accept_loop);
    let stop = async {
        shutdown.await;
    };
    ex.run(stop.or(accept_task)).await;
    log!(info, "shutting down");
    // Every client gets `Close{4006}` before its socket closes: the writers
    // flush it, for a bounded time.
    {
        let mut s = shared.server();
        s.shutdown(Instant::now());
        shared.pump(&mut s, false);
    }
    let flushed = async {
        while !control.sockets().is_empty() {
            Timer::after(Duration::from_millis(5)).await;
        }
    };
    let give_up = async {
        Timer::after(SHUTDOWN_FLUSH_TIMEOUT).await;
    };
    ex.run(flushed.or(give_up)).await;
    control.close_all();
    Ok(())
}

/// One connection: the reader and the writer race; whichever ends first ends
/// the connection (the reader on EOF or error, the writer once a close the
/// server asked for is flushed). The other task is dropped, which cancels it.
async fn connection(
    shared: Arc<Shared>,
    conn: ConnId,
    stream: TcpStream,
    reader: smol::Task<()>,
    writer: smol::Task<()>,
) {
    reader.or(writer).await;
    let _ = stream.shutdown(Shutdown::Both);
    shared.control.sockets().remove(&conn);
    let mut s = shared.server();
    s.handle_closed(Instant::now(), conn);
    shared.pump(&mut s, false);
    log!(debug, "{conn} ended");
}

async fn read_loop(
    shared: Arc<Shared>,
    conn: ConnId,
    mut stream: TcpStream,
    closing: Arc<AtomicBool>,
) {
    let mut decoder = FrameDecoder::new(shared.max_frame_size);
    let mut chunk = vec![0u8; READ_CHUNK];
    let mut full_reads = 0u32;
    loop {
        let n = match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        decoder.extend(chunk.get(..n).unwrap_or_default());
        let mut failed = false;
        {
            let mut s = shared.server();
            loop {
                match decoder.next_frame() {
                    Ok(Some(frame)) => s.handle_frame(Instant::now(), conn, frame),
                    Ok(None) => break,
                    Err(e) => {
                        s.handle_stream_error(Instant::now(), conn, e);
                        failed = true;
                        break;
                    }
                }
            }
            shared.pump(&mut s, false);
        }
        if failed || closing.load(Ordering::SeqCst) {
            // The stream cannot be resynchronised, or the server closed the
            // connection: read no more and let the writer flush the Close
            // frame and end the connection.
            std::future::pending::<()>().await;
        }
        // A read that is always ready never returns Pending: a peer
        // streaming bytes would keep the single-threaded executor here and
        // starve every other connection, the writers and the timer. Yield
        // after a run of full reads only: yielding after every read costs a
        // trip through the executor per read on the busiest connections.
        full_reads = if n == chunk.len() { full_reads + 1 } else { 0 };
        if full_reads >= YIELD_AFTER_FULL_READS {
            full_reads = 0;
            smol::future::yield_now().await;
        }
    }
}

async fn write_loop(
    shared: Arc<Shared>,
    conn: ConnId,
    mut stream: TcpStream,
    wake: Receiver<()>,
    closing: Arc<AtomicBool>,
) {
    let mut buf = BytesMut::new();
    loop {
        // Read the close flag under the server lock, after draining: it is
        // set under the same lock once the Close frame is queued, so a set
        // flag with an exhausted queue means everything has been taken.
        let (exhausted, closing_now) = {
            let mut s = shared.server();
            let mut exhausted = false;
            while buf.len() < WRITE_BATCH {
                match s.poll_transmit(conn) {
                    Some(f) => write_length_prefixed(&f, &mut buf),
                    None => {
                        exhausted = true;
                        break;
                    }
                }
            }
            (exhausted, closing.load(Ordering::SeqCst))
        };
        if !buf.is_empty() {
            if !write_out(&mut stream, &buf, &closing).await {
                return;
            }
            buf.clear();
        }
        if !exhausted {
            continue;
        }
        if closing_now {
            let _ = stream.flush().await;
            return;
        }
        // Wakes coalesce in a one-slot channel, and the queue was drained
        // before waiting: no output can be missed.
        if wake.recv().await.is_err() {
            return;
        }
    }
}

/// Writes `buf` whole; `false` when the connection must end: a write error,
/// no progress for `WRITE_TIMEOUT`, or, once the server closes the
/// connection, no progress for `CLOSE_FLUSH_TIMEOUT` (a slow consumer that
/// cannot take its Close frame is not waited for).
async fn write_out(stream: &mut TcpStream, buf: &[u8], closing: &AtomicBool) -> bool {
    let mut off = 0;
    let mut stalled = Duration::ZERO;
    while let Some(rest) = buf.get(off..).filter(|r| !r.is_empty()) {
        let write = async { Some(stream.write(rest).await) };
        let tick = async {
            Timer::after(WRITE_TICK).await;
            None
        };
        // Dropping a pending write is cancel-safe: nothing was written.
        match write.or(tick).await {
            Some(Ok(0) | Err(_)) => return false,
            Some(Ok(n)) => {
                off = off.saturating_add(n);
                stalled = Duration::ZERO;
            }
            None => {
                stalled = stalled.saturating_add(WRITE_TICK);
                let limit = if closing.load(Ordering::SeqCst) {
                    CLOSE_FLUSH_TIMEOUT
                } else {
                    WRITE_TIMEOUT
                };
                if stalled >= limit {
                    return false;
                }
            }
        }
    }
    true
}

async fn timer_task(shared: Arc<Shared>, wake: Receiver<()>) {
    loop {
        let deadline = shared.server().poll_timeout();
        *shared.armed.lock().unwrap_or_else(|p| p.into_inner()) = deadline;
        let sleep = async {
            match deadline {
                Some(t) => {
                    Timer::at(t).await;
                }
                None => {
                    Timer::never().await;
                }
            }
        };
        let woken = async {
            let _ = wake.recv().await;
        };
        sleep.or(woken).await;
        let mut s = shared.server();
        s.handle_timeout(Instant::now());
        shared.pump(&mut s, true);
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
    control: Arc<Control>,
    stop: Sender<()>,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl ServerHandle {
    /// Binds `addr` (port 0: any free port) and serves `config` on a new
    /// thread.
    pub fn spawn(config: ServerConfig, addr: SocketAddr) -> io::Result<ServerHandle> {
        let std_listener = std::net::TcpListener::bind(addr)?;
        let local_addr = std_listener.local_addr()?;
        let listener = TcpListener::try_from(std_listener)?;
        let control = Arc::new(Control::default());
        let (stop, stopped) = bounded::<()>(1);
        let c = control.clone();
        let thread = std::thread::Builder::new()
            .name("hummer-server".into())
            .spawn(move || {
                smol::block_on(serve_with(
                    listener,
                    config,
                    async move {
                        let _ = stopped.recv().await;
                    },
                    c,
                ))
            })?;
        Ok(ServerHandle {
            local_addr,
            control,
            stop,
            thread: Some(thread),
        })
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
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
