//! Runs the [`Server`] on TCP with smol: length-prefixed frames on each
//! connection, one task per connection (a reader feeding the server and a
//! writer pulling its queue), and one timer task re-armed from
//! [`Server::poll_timeout`] after every pass. The server sits behind a mutex
//! that is never held across an await.
//!
//! What the runner itself bounds (the [`Server`] bounds the rest), set with
//! a [`RunnerConfig`]:
//!
//! - connections: at most `max_connections` open, and `max_connections_per_ip`
//!   from one address (IPv6: one /64). A connection over a cap is accepted
//!   and closed at once, with nothing written;
//! - the listen backlog ([`bind`]; std's `TcpListener::bind` asks for 128);
//! - frame sizes: each connection's decoder is held to
//!   [`Server::max_frame_size`] (8 KiB until the connection has logged in),
//!   and a partial frame holds about what arrived, never what it announced;
//! - failing `accept`s (out of file descriptors) back off from 10 ms to 1 s
//!   while the open connections keep being served;
//! - a connection the server closes gets its `Close` frame when the socket
//!   has room for it within 2 s, else it is reset; a slow consumer's unsent
//!   backlog is dropped first, and either outcome is logged at info.
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

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv6Addr, Shutdown, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use smol::channel::{bounded, Receiver, Sender};
use smol::future::FutureExt as _;
use smol::io::{AsyncReadExt, AsyncWriteExt};
use smol::net::{TcpListener, TcpStream};
use smol::{Executor, Timer};

use crate::server::{CloseReason, ConnId, Server, ServerConfig, TransportAction};
use crate::wire::{write_length_prefixed, FrameDecoder};

/// How long a shutdown waits for the `Close` frames to be flushed.
const SHUTDOWN_FLUSH_TIMEOUT: Duration = Duration::from_secs(2);
/// Bytes gathered from the queue into one socket write. A batch is taken
/// out of the server's bounded queue, so it is memory past that bound: kept
/// well under the 1 MiB of slack a never-reading link may cost (128 KiB
/// writes are already large enough that the syscall count does not matter).
const WRITE_BATCH: usize = 128 * 1024;
/// A writer going idle keeps a batch buffer up to this size; a larger one
/// (from a burst) is freed, or every connection that ever had a burst would
/// hold up to `WRITE_BATCH` for good.
const IDLE_WRITE_BUFFER: usize = 16 * 1024;
/// A peer that accepts no bytes for this long is dead: its connection goes.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Once the server closes a connection, how long its last frames (the
/// `Close` frame) may take to be written, progress or not: a peer that does
/// not read (a slow consumer) is reset after it, so its connection and
/// buffers are gone within this bound.
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
/// Frames one connection may have handled before it lets the others run,
/// whatever their reads: a 4 KiB read holds up to 682 empty `Ping`s, so
/// sixteen full reads of them (11,000 frames) would hold every other
/// connection up for milliseconds per flooding peer. Typical traffic
/// (frames of 100 bytes and more) stays under it, and keeps the batching of
/// [`YIELD_AFTER_FULL_READS`].
const YIELD_AFTER_FRAMES: u32 = 512;
/// The first wait after a failed `accept`; it doubles on each failure in a
/// row up to [`ACCEPT_BACKOFF_MAX`] and resets on a success. Out of file
/// descriptors, `accept` fails at once as long as a connection is pending:
/// without a wait the accept loop would spin and starve every connection.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
/// The longest wait between two failed `accept`s.
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Settings of the TCP runner itself (what the [`Server`] state machine does
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
}

impl Default for RunnerConfig {
    fn default() -> Self {
        RunnerConfig {
            max_connections: 100_000,
            max_connections_per_ip: 1_000,
            listen_backlog: 1024,
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
    /// frames, and the unread rest of the last read).
    pub decoder_bytes: usize,
}

/// What a running `serve` shares with a [`ServerHandle`].
#[derive(Default)]
struct Control {
    sockets: Mutex<HashMap<ConnId, ConnHandle>>,
    admission: Mutex<Admission>,
    refused: AtomicU64,
    accept_errors: AtomicU64,
    decoder_bytes: AtomicUsize,
}

struct ConnHandle {
    stream: TcpStream,
    wake: Sender<()>,
    flags: Arc<ConnFlags>,
}

/// What the server decided about a connection, for its reader and writer.
#[derive(Default)]
struct ConnFlags {
    /// The server closes it: read no more, flush the `Close` frame, end.
    closing: AtomicBool,
    /// ... as a slow consumer: the writer drops its unsent batch too.
    slow_consumer: AtomicBool,
}

impl Control {
    fn sockets(&self) -> MutexGuard<'_, HashMap<ConnId, ConnHandle>> {
        self.sockets.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn admission(&self) -> MutexGuard<'_, Admission> {
        self.admission.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn close_all(&self) {
        for h in self.sockets().values() {
            let _ = h.stream.shutdown(Shutdown::Both);
        }
    }

    fn stats(&self) -> RunnerStats {
        RunnerStats {
            open_connections: self.admission().open,
            refused_connections: self.refused.load(Ordering::Relaxed),
            accept_errors: self.accept_errors.load(Ordering::Relaxed),
            decoder_bytes: self.decoder_bytes.load(Ordering::Relaxed),
        }
    }
}

/// Open connections, in all and per address.
#[derive(Default)]
struct Admission {
    open: usize,
    per_ip: HashMap<IpAddr, usize>,
}

impl Admission {
    /// Counts a new connection from `ip` (a key from [`ip_key`]), or says
    /// which cap refuses it.
    fn admit(&mut self, ip: IpAddr, runner: &RunnerConfig) -> Result<(), &'static str> {
        if self.open >= runner.max_connections {
            return Err("max_connections");
        }
        let n = self.per_ip.entry(ip).or_insert(0);
        if *n >= runner.max_connections_per_ip {
            if *n == 0 {
                self.per_ip.remove(&ip);
            }
            return Err("max_connections_per_ip");
        }
        *n += 1;
        self.open += 1;
        Ok(())
    }

    fn release(&mut self, ip: IpAddr) {
        self.open = self.open.saturating_sub(1);
        if let Some(n) = self.per_ip.get_mut(&ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_ip.remove(&ip);
            }
        }
    }
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

struct Shared {
    server: Mutex<Server>,
    control: Arc<Control>,
    timer_wake: Sender<()>,
    /// The deadline the timer task sleeps until (`None`: none).
    armed: Mutex<Option<Instant>>,
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
        while let Some(TransportAction::Close { conn: c, reason }) = s.poll_transport() {
            log!(debug, "closing {c}: {reason}");
            if let Some(h) = sockets.get(&c) {
                if matches!(reason, CloseReason::SlowConsumer) {
                    h.flags.slow_consumer.store(true, Ordering::SeqCst);
                }
                h.flags.closing.store(true, Ordering::SeqCst);
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
    run(
        listener,
        config,
        runner,
        shutdown,
        Arc::new(Control::default()),
    )
    .await
}

async fn run(
    listener: TcpListener,
    config: ServerConfig,
    runner: RunnerConfig,
    shutdown: impl Future<Output = ()>,
    control: Arc<Control>,
) -> io::Result<()> {
    let unix_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let (timer_wake, timer_rx) = bounded(1);
    let shared = Arc::new(Shared {
        server: Mutex::new(Server::new(config, Instant::now(), unix_ms)),
        control: control.clone(),
        timer_wake,
        armed: Mutex::new(None),
    });
    let ex = Arc::new(Executor::new());
    ex.spawn(timer_task(shared.clone(), timer_rx)).detach();
    let accept_loop = {
        // Weak: the executor owns this task, which must not keep it alive.
        let (ex, shared, control) = (Arc::downgrade(&ex), shared.clone(), control.clone());
        async move {
            let mut backoff = Duration::ZERO;
            loop {
                let (stream, peer) = match listener.accept().await {
                    Ok(x) => {
                        backoff = Duration::ZERO;
                        x
                    }
                    // The peer gave up before we took it: take the next one.
                    Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => continue,
                    Err(e) => {
                        // Out of descriptors (EMFILE, ENFILE) and the like:
                        // `accept` would fail again at once, so wait, longer
                        // each time; the connections already open keep being
                        // served meanwhile (their tasks run during the wait).
                        control.accept_errors.fetch_add(1, Ordering::Relaxed);
                        backoff = (backoff * 2).clamp(ACCEPT_BACKOFF_MIN, ACCEPT_BACKOFF_MAX);
                        log!(warn, "accept failed: {e}; next try in {backoff:?}");
                        Timer::after(backoff).await;
                        continue;
                    }
                };
                let ip = ip_key(peer.ip());
                if let Err(cap) = control.admission().admit(ip, &runner) {
                    // Closed with nothing written: no work, no state, and the
                    // peer learns nothing it could tune an attack with.
                    control.refused.fetch_add(1, Ordering::Relaxed);
                    log!(debug, "refused a connection from {peer}: {cap} reached");
                    drop(stream);
                    continue;
                }
                let admitted = Admitted {
                    control: control.clone(),
                    ip,
                };
                let _ = stream.set_nodelay(true);
                let (wake, wake_rx) = bounded(1);
                let flags = Arc::new(ConnFlags::default());
                let (conn, max_frame) = {
                    let mut s = shared.server();
                    let conn = s.accept_from(Instant::now(), Some(ip));
                    control.sockets().insert(
                        conn,
                        ConnHandle {
                            stream: stream.clone(),
                            wake,
                            flags: flags.clone(),
                        },
                    );
                    shared.pump(&mut s, false);
                    (conn, s.max_frame_size(conn))
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
                    flags.clone(),
                    max_frame,
                ));
                let writer = ex.spawn(write_loop(
                    shared.clone(),
                    conn,
                    stream.clone(),
                    wake_rx,
                    flags,
                ));
                ex.spawn(connection(
                    shared.clone(),
                    conn,
                    stream,
                    reader,
                    writer,
                    admitted,
                ))
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
    admitted: Admitted,
) {
    reader.or(writer).await;
    let _ = stream.shutdown(Shutdown::Both);
    shared.control.sockets().remove(&conn);
    {
        let mut s = shared.server();
        s.handle_disconnected(Instant::now(), conn);
        shared.pump(&mut s, false);
    }
    drop(admitted);
    log!(debug, "{conn} ended");
}

async fn read_loop(
    shared: Arc<Shared>,
    conn: ConnId,
    mut stream: TcpStream,
    flags: Arc<ConnFlags>,
    max_frame: usize,
) {
    let mut decoder = FrameDecoder::new(max_frame);
    let mut share = DecoderShare {
        control: shared.control.clone(),
        counted: 0,
    };
    let mut chunk = vec![0u8; READ_CHUNK];
    let mut full_reads = 0u32;
    let mut frames = 0u32;
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
                    Ok(Some(frame)) => {
                        frames = frames.saturating_add(1);
                        s.handle_frame(Instant::now(), conn, frame);
                        // The bound may change with every frame (a login
                        // raises it, a logout lowers it): the next prefix is
                        // checked against the server's current one, so a
                        // login and a large frame may be sent back to back.
                        decoder.set_max_frame_size(s.max_frame_size(conn));
                    }
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
        share.update(decoder.capacity());
        if failed || flags.closing.load(Ordering::SeqCst) {
            // The stream cannot be resynchronised, or the server closed the
            // connection: read no more, free the decoder, and let the writer
            // flush the Close frame and end the connection.
            drop(decoder);
            drop(chunk);
            share.update(0);
            std::future::pending::<()>().await;
            return;
        }
        // A read that is always ready never returns Pending: a peer
        // streaming bytes would keep the single-threaded executor here and
        // starve every other connection, the writers and the timer. Yield
        // after a run of full reads only: yielding after every read costs a
        // trip through the executor per read on the busiest connections.
        // (A short read means the socket is drained: the next read waits,
        // and the others run then.)
        if n < chunk.len() {
            full_reads = 0;
            frames = 0;
        } else {
            full_reads += 1;
        }
        if full_reads >= YIELD_AFTER_FULL_READS || frames >= YIELD_AFTER_FRAMES {
            full_reads = 0;
            frames = 0;
            smol::future::yield_now().await;
        }
    }
}

async fn write_loop(
    shared: Arc<Shared>,
    conn: ConnId,
    mut stream: TcpStream,
    wake: Receiver<()>,
    flags: Arc<ConnFlags>,
) {
    let mut out = Outgoing::default();
    loop {
        // Read the close flag under the server lock, after draining: it is
        // set under the same lock once the Close frame is queued, so a set
        // flag with an exhausted queue means everything has been taken.
        let (exhausted, closing_now) = {
            let mut s = shared.server();
            let mut exhausted = false;
            while out.buf.len() < WRITE_BATCH {
                match s.poll_transmit(conn) {
                    Some(f) => {
                        write_length_prefixed(&f, &mut out.buf);
                        out.ends.push(out.buf.len());
                    }
                    None => {
                        exhausted = true;
                        break;
                    }
                }
            }
            (exhausted, flags.closing.load(Ordering::SeqCst))
        };
        if !out.buf.is_empty() {
            if let Err(why) = out.write(&mut stream, &wake, &flags).await {
                if out.closing_since.is_some() {
                    // A closed connection whose peer does not take its last
                    // frames: reset it, so that the kernel drops the unsent
                    // bytes at once instead of retrying for minutes.
                    let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
                    if flags.slow_consumer.load(Ordering::SeqCst) {
                        log!(
                            info,
                            "{conn} closed as a slow consumer: no room for its Close frame ({why}); link reset"
                        );
                    } else {
                        log!(
                            debug,
                            "{conn} closed: its Close frame was not taken ({why}); link reset"
                        );
                    }
                }
                return;
            }
            out.clear();
            // A wake taken during the write announced output (or a close)
            // that the next drain must see: drain before waiting again.
            if !exhausted || std::mem::take(&mut out.woken) {
                continue;
            }
        }
        if closing_now {
            let _ = stream.flush().await;
            if flags.slow_consumer.load(Ordering::SeqCst) {
                log!(
                    info,
                    "{conn} closed as a slow consumer: Close frame written"
                );
            }
            return;
        }
        // Idle: a batch buffer grown by a burst (up to 128 KiB) is not kept
        // for the connection's whole life.
        out.release();
        // Wakes coalesce in a one-slot channel, and the queue was drained
        // before waiting: no output can be missed.
        if wake.recv().await.is_err() {
            return;
        }
    }
}

/// A writer's batch: frames with their length prefixes, and where each ends
/// (so that a slow consumer's batch can be cut between two frames).
#[derive(Default)]
struct Outgoing {
    buf: BytesMut,
    ends: Vec<usize>,
    /// Bytes of `buf` written.
    off: usize,
    /// A wake was taken while writing.
    woken: bool,
    /// The slow consumer's backlog was cut already.
    cut: bool,
    /// When the writer first saw the connection closing.
    closing_since: Option<Instant>,
}

/// What ended one wait of [`Outgoing::write`].
enum Step {
    Wrote(io::Result<usize>),
    Woken,
    Tick,
}

impl Outgoing {
    fn clear(&mut self) {
        self.buf.clear();
        self.ends.clear();
        self.off = 0;
    }

    /// Frees the buffers when they are empty and larger than a typical
    /// batch of an idle connection.
    fn release(&mut self) {
        if self.buf.is_empty() && self.buf.capacity() > IDLE_WRITE_BUFFER {
            self.buf = BytesMut::new();
        }
        if self.ends.is_empty() && self.ends.capacity() > IDLE_WRITE_BUFFER / 64 {
            self.ends = Vec::new();
        }
    }

    /// Drops the frames of the batch not begun yet: the server dropped a
    /// slow consumer's queue, and what the writer took from it goes too. A
    /// frame written in part is kept whole (the stream must stay framed for
    /// the `Close` frame to be read).
    fn cut_backlog(&mut self) {
        let keep = if self.off == 0 {
            0
        } else {
            match self.ends.binary_search(&self.off) {
                Ok(_) => self.off,
                Err(i) => self.ends.get(i).copied().unwrap_or(self.buf.len()),
            }
        };
        self.buf.truncate(keep);
        self.ends.retain(|&e| e <= keep);
        // Give the memory back now: a batch may hold 128 KiB.
        let mut small = BytesMut::with_capacity(self.buf.len());
        small.extend_from_slice(&self.buf);
        self.buf = small;
        self.cut = true;
    }

    /// Writes the batch whole; an error when the connection must end: a
    /// write error, no progress for `WRITE_TIMEOUT`, or `CLOSE_FLUSH_TIMEOUT`
    /// passed since the server closed the connection (progress or not: a
    /// peer that trickles its reads does not hold the link open).
    async fn write(
        &mut self,
        stream: &mut TcpStream,
        wake: &Receiver<()>,
        flags: &ConnFlags,
    ) -> Result<(), &'static str> {
        let mut stalled = Duration::ZERO;
        loop {
            if flags.closing.load(Ordering::SeqCst) {
                let since = *self.closing_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= CLOSE_FLUSH_TIMEOUT {
                    return Err("close flush timeout");
                }
                if !self.cut && flags.slow_consumer.load(Ordering::SeqCst) {
                    self.cut_backlog();
                }
            }
            let Some(rest) = self.buf.get(self.off..).filter(|r| !r.is_empty()) else {
                return Ok(());
            };
            let write = async { Step::Wrote(stream.write(rest).await) };
            // A wake while stalled may be the server closing the connection:
            // look at the flags again at once.
            let woken = async {
                if wake.recv().await.is_err() {
                    // No sender left: nothing will wake us; the write or
                    // the tick ends this wait.
                    std::future::pending::<()>().await;
                }
                Step::Woken
            };
            let tick = async {
                Timer::after(WRITE_TICK).await;
                Step::Tick
            };
            // Dropping a pending write is cancel-safe: nothing was written.
            match write.or(woken).or(tick).await {
                Step::Wrote(Ok(0)) => return Err("connection closed"),
                Step::Wrote(Err(_)) => return Err("write error"),
                Step::Wrote(Ok(n)) => {
                    self.off = self.off.saturating_add(n);
                    stalled = Duration::ZERO;
                }
                Step::Woken => self.woken = true,
                Step::Tick => {
                    stalled = stalled.saturating_add(WRITE_TICK);
                    if stalled >= WRITE_TIMEOUT {
                        return Err("write timeout");
                    }
                }
            }
        }
    }
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
        let listener = bind(addr, &runner)?;
        let local_addr = listener.local_addr()?;
        let control = Arc::new(Control::default());
        let (stop, stopped) = bounded::<()>(1);
        let c = control.clone();
        let thread = std::thread::Builder::new()
            .name("hummer-server".into())
            .spawn(move || {
                smol::block_on(run(
                    listener,
                    config,
                    runner,
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

    /// The runner's counters now: open and refused connections, failed
    /// accepts, memory held by the frame decoders.
    pub fn stats(&self) -> RunnerStats {
        self.control.stats()
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
