//! One connection's tasks on its thread: the reader (bytes -> frames ->
//! the gateway) and the writer (the gateway's queue -> the socket).

use std::io::{self, Read as _};
use std::net::Shutdown;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use smol::future::FutureExt as _;
use smol::io::AsyncWriteExt;
use smol::{LocalExecutor, Timer};

use super::shard::{Link, Shard, FRAMES_PER_PUMP};
use super::transport::{Inbound, Opened, Opener, Outbound, Stream};
use super::{Admitted, DecoderShare};
use crate::error::WireError;
use crate::server::{ConnId, Gateway, LinkKind};
use crate::wire::{write_length_prefixed, FrameDecoder};

/// Bytes gathered from the queue into one socket write. A batch is taken
/// out of the server's bounded queue, so it is memory past that bound: kept
/// well under the 1 MiB of slack a never-reading link may cost (128 KiB
/// writes are already large enough that the syscall count does not matter).
const WRITE_BATCH: usize = 128 * 1024;
/// A peer that accepts no bytes for this long is dead: its connection goes.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Once the server closes a connection, how long its last frames (the
/// `Close` frame) may take to be written, progress or not: a peer that does
/// not read (a slow consumer) is reset after it, so its connection and
/// buffers are gone within this bound.
const CLOSE_FLUSH_TIMEOUT: Duration = Duration::from_secs(2);
/// How often a stalled write checks the timeouts.
const WRITE_TICK: Duration = Duration::from_millis(250);
/// Consecutive full reads of one connection before it lets the others run.
const YIELD_AFTER_FULL_READS: u32 = 16;
/// Frames one connection may have handled before it lets the others run,
/// whatever their reads: a full read may hold thousands of empty `Ping`s,
/// so sixteen of them would hold every other connection up for
/// milliseconds per flooding peer.
const YIELD_AFTER_FRAMES: u32 = 512;

/// Starts a connection on `shard`'s thread: its handshakes first (TLS,
/// WebSocket; none on plain TCP), then the gateway gets it.
pub(super) fn start(
    ex: &Rc<LocalExecutor<'static>>,
    shard: &Rc<Shard>,
    stream: Stream,
    admitted: Admitted,
    opener: &Opener,
) {
    let kind = opener.transport.kind();
    if let Some((inbound, outbound)) = opener.open_now() {
        return open(ex, shard, stream, admitted, kind, inbound, outbound);
    }
    let (ex2, shard, opener) = (ex.clone(), shard.clone(), opener.clone());
    ex.spawn(async move {
        match opener.open(&stream).await {
            Opened::Link(inbound, outbound) => {
                open(&ex2, &shard, stream, admitted, kind, inbound, outbound)
            }
            Opened::Done => {
                let _ = stream.get_ref().shutdown(Shutdown::Both);
                drop(admitted);
            }
        }
    })
    .detach();
}

/// Gives an open link to the gateway and starts its reader and writer.
/// They race; whichever ends first ends the connection (the reader on EOF
/// or error, the writer once a close the server asked for is flushed).
fn open(
    ex: &LocalExecutor<'static>,
    shard: &Rc<Shard>,
    stream: Stream,
    admitted: Admitted,
    kind: LinkKind,
    inbound: Inbound,
    outbound: Outbound,
) {
    let ip = admitted.ip;
    let (conn, max_frame) = {
        let mut g = shard.gateway.borrow_mut();
        let conn = g.accept_link(Instant::now(), Some(ip), kind);
        (conn, g.max_frame_size(conn))
    };
    let direct = matches!(outbound, Outbound::Tcp);
    let link = Rc::new(Link::new(stream.clone(), direct));
    shard.links.borrow_mut().insert(conn, link.clone());
    shard.control.sockets().insert(conn, stream.clone());
    shard.pump();
    log!(debug, "accepted {conn} from {ip}");
    // Reader and writer are tasks of their own, so waking one does not
    // poll the other.
    let reader = ex.spawn(read_loop(
        shard.clone(),
        conn,
        link.clone(),
        inbound,
        max_frame,
    ));
    let writer = ex.spawn(write_loop(shard.clone(), conn, link, outbound));
    let shard = shard.clone();
    ex.spawn(async move {
        reader.or(writer).await;
        let _ = stream.get_ref().shutdown(Shutdown::Both);
        shard.control.sockets().remove(&conn);
        shard.links.borrow_mut().remove(&conn);
        shard
            .gateway
            .borrow_mut()
            .handle_disconnected(Instant::now(), conn);
        shard.pump();
        drop(admitted);
        log!(debug, "{conn} ended");
    })
    .detach();
}

async fn read_loop(
    shard: Rc<Shard>,
    conn: ConnId,
    link: Rc<Link>,
    mut inbound: Inbound,
    max_frame: usize,
) {
    let mut decoder = FrameDecoder::new(max_frame);
    let mut share = DecoderShare {
        control: shard.control.clone(),
        counted: 0,
    };
    let mut full_reads = 0u32;
    let mut frames = 0u32;
    loop {
        let got = read_some(&mut inbound, &shard, &link, &mut decoder).await;
        // Whether the peer's bytes were all taken (it waited for more): a
        // read that did not fill the buffer, or a message that had to be
        // waited for. Until then a run of full reads or frames yields.
        let (drained, full, message) = match got {
            Got::Bytes { drained } => (drained, !drained, None),
            Got::Message(m, waited) => (waited, false, Some(m)),
            Got::End => return,
            Got::PeerClosed => {
                // Closed as if by the server: the writer flushes, and sends
                // the WebSocket close the library queued in answer; the
                // reader stops below.
                link.closing.set(true);
                link.wake.notify();
                (true, false, None)
            }
            Got::Again | Got::Activity => {
                if matches!(got, Got::Activity) {
                    shard
                        .gateway
                        .borrow_mut()
                        .handle_activity(Instant::now(), conn);
                }
                // A peer streaming pings alone yields too.
                frames = frames.saturating_add(1);
                if frames >= YIELD_AFTER_FRAMES {
                    frames = 0;
                    smol::future::yield_now().await;
                }
                continue;
            }
        };
        let mut message = message;
        let mut failed = false;
        let mut since_pump = 0u32;
        // Refused at once while a store is down, from the first frame.
        shard.sync_refusal();
        loop {
            let next = match message.take() {
                Some(m) => m.map(Some),
                None => decoder.next_frame(),
            };
            let done = {
                let mut g = shard.gateway.borrow_mut();
                match next {
                    Ok(Some(frame)) => {
                        frames = frames.saturating_add(1);
                        g.handle_frame(Instant::now(), conn, frame);
                        // The bound may change with every frame (a login
                        // raises it, a logout lowers it).
                        decoder.set_max_frame_size(g.max_frame_size(conn));
                        false
                    }
                    Ok(None) => true,
                    Err(e) => {
                        g.handle_stream_error(Instant::now(), conn, e);
                        failed = true;
                        true
                    }
                }
            };
            if done {
                break;
            }
            since_pump += 1;
            if since_pump >= FRAMES_PER_PUMP {
                since_pump = 0;
                shard.pump();
                if shard.backlogged() {
                    // The hub (or its other gateways) is behind: read no
                    // more until it caught up; TCP pushes back on the peer.
                    shard.room().await;
                }
            }
        }
        shard.pump();
        if shard.backlogged() {
            shard.room().await;
        }
        // An idle connection holds no buffer: what a read brought that was
        // not a whole frame stays, nothing else.
        if decoder.buffered() == 0 && decoder.capacity() > 0 {
            *decoder.buffer_mut() = BytesMut::new();
        }
        share.update(decoder.capacity());
        if failed || link.closing.get() {
            // The stream cannot be resynchronised, or the connection closes
            // (by the server, or by the peer's WebSocket close): read no
            // more, free the decoder, and let the writer flush the last
            // frames and end the connection.
            drop(decoder);
            share.update(0);
            std::future::pending::<()>().await;
            return;
        }
        // A read that is always ready never returns Pending: a peer
        // streaming bytes would keep the executor here and starve every
        // other connection of the thread. Yield after a run of full reads
        // or many frames.
        if drained {
            full_reads = 0;
            frames = 0;
        } else if full {
            full_reads += 1;
        }
        if full_reads >= YIELD_AFTER_FULL_READS || frames >= YIELD_AFTER_FRAMES {
            full_reads = 0;
            frames = 0;
            smol::future::yield_now().await;
        }
    }
}

/// Writes what the direct writes of [`write_now`] left (the socket was
/// full), and flushes a connection the server closes.
async fn write_loop(shard: Rc<Shard>, conn: ConnId, link: Rc<Link>, mut outbound: Outbound) {
    loop {
        // The batch is the link's while no write waits; taken out while one
        // does (`writer_busy`), so the direct writes leave it alone.
        let mut out = std::mem::take(&mut *link.out.borrow_mut());
        // The close flag is read after draining: it is set once the Close
        // frame is queued, so a set flag with an exhausted queue means
        // everything has been taken.
        let exhausted = out.fill(&mut shard.gateway.borrow_mut(), conn);
        let closing_now = link.closing.get();
        if !out.buf.is_empty() {
            link.writer_busy.set(true);
            let written = out.write(&link, &mut outbound).await;
            link.writer_busy.set(false);
            if let Err(why) = written {
                if out.closing_since.is_some() {
                    // A closed connection whose peer does not take its last
                    // frames: reset it, so that the kernel drops the unsent
                    // bytes at once instead of retrying for minutes.
                    let _ = socket2::SockRef::from(link.stream.get_ref())
                        .set_linger(Some(Duration::ZERO));
                    if link.slow_consumer.get() {
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
            let woken = std::mem::take(&mut out.woken);
            out.release();
            *link.out.borrow_mut() = out;
            // A wake taken during the write announced output (or a close)
            // that the next drain must see: drain before waiting again.
            if !exhausted || woken {
                continue;
            }
        } else {
            out.release();
            *link.out.borrow_mut() = out;
        }
        if closing_now {
            let close = close_transport(&link, &mut outbound);
            let give_up = async {
                Timer::after(CLOSE_FLUSH_TIMEOUT).await;
            };
            close.or(give_up).await;
            if link.slow_consumer.get() {
                log!(
                    info,
                    "{conn} closed as a slow consumer: Close frame written"
                );
            }
            return;
        }
        // Nothing left to write, with no await since the drain: no output
        // can be missed.
        link.wake.wait().await;
    }
}

/// Writes `conn`'s queued frames to its socket now, without waiting, as far
/// as the socket takes them (the usual case: one syscall, no task hop); what
/// it does not take goes to the link's writer task. Left to the writer
/// altogether while it is writing (the order of bytes is its) or the link
/// closes.
pub(super) fn write_now(g: &mut Gateway, conn: ConnId, link: &Link, scratch: &mut Outgoing) {
    if !link.direct
        || link.writer_busy.get()
        || link.closing.get()
        || !link.out.borrow().buf.is_empty()
    {
        link.wake.notify();
        return;
    }
    loop {
        scratch.clear();
        let exhausted = scratch.fill(g, conn);
        if scratch.buf.is_empty() {
            return;
        }
        while scratch.off < scratch.buf.len() {
            match io::Write::write(&mut link.stream.get_ref(), &scratch.buf[scratch.off..]) {
                Ok(n) if n > 0 => scratch.off += n,
                // Full (or failing: the writer finds out and ends the link).
                _ => {
                    scratch.hand_over(&mut link.out.borrow_mut());
                    link.wake.notify();
                    return;
                }
            }
        }
        if exhausted {
            scratch.clear();
            scratch.release_above(WRITE_BATCH);
            return;
        }
    }
}

/// A writer's batch: frames with their length prefixes, and where each ends
/// (so that a slow consumer's batch can be cut between two frames).
#[derive(Default)]
pub(super) struct Outgoing {
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
    Flushed(io::Result<()>),
    Woken,
    Tick,
}

impl Outgoing {
    fn clear(&mut self) {
        self.buf.clear();
        self.ends.clear();
        self.off = 0;
    }

    /// Appends `conn`'s queued frames up to a batch; whether it took them
    /// all.
    fn fill(&mut self, g: &mut Gateway, conn: ConnId) -> bool {
        while self.buf.len() < WRITE_BATCH {
            match g.poll_transmit(conn) {
                Some(f) => {
                    write_length_prefixed(&f, &mut self.buf);
                    self.ends.push(self.buf.len());
                }
                None => return true,
            }
        }
        false
    }

    /// Moves what is unwritten to `to` (empty), from the start of the frame
    /// being written, so that a cut keeps that frame whole.
    fn hand_over(&mut self, to: &mut Outgoing) {
        let start = self
            .ends
            .iter()
            .rev()
            .find(|&&e| e <= self.off)
            .copied()
            .unwrap_or(0);
        to.buf.extend_from_slice(&self.buf[start..]);
        to.ends
            .extend(self.ends.iter().filter(|&&e| e > start).map(|e| e - start));
        to.off = self.off - start;
        self.clear();
    }

    /// Frees the buffer when a burst grew it past `max`.
    fn release_above(&mut self, max: usize) {
        if self.buf.capacity() > max {
            self.buf = BytesMut::new();
            self.ends = Vec::new();
        }
    }

    /// Frees the buffers (they are empty): an idle connection holds none.
    fn release(&mut self) {
        self.buf = BytesMut::new();
        self.ends = Vec::new();
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
    async fn write(&mut self, link: &Link, outbound: &mut Outbound) -> Result<(), &'static str> {
        let flags = link;
        let mut stalled = Duration::ZERO;
        // Bytes written since the last flush (TLS and WebSocket buffer).
        let mut dirty = false;
        // What the socket took under TLS or WebSocket: progress even while
        // their buffers keep new frames waiting.
        let mut sent = outbound.sent();
        // Notifications are counted from here: one that comes while a write
        // completes is seen by the next wait, not lost.
        let mut seen = flags.wake.generation();
        loop {
            if flags.closing.get() {
                let since = *self.closing_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= CLOSE_FLUSH_TIMEOUT {
                    return Err("close flush timeout");
                }
                if !self.cut && flags.slow_consumer.get() {
                    self.cut_backlog();
                }
            }
            let rest = self.buf.get(self.off..).unwrap_or_default();
            if rest.is_empty() && !dirty {
                self.woken |= flags.wake.generation() != seen;
                return Ok(());
            }
            let io = async {
                match rest.is_empty() {
                    true => Step::Flushed(outbound.flush().await),
                    false => Step::Wrote(outbound.write_some(&link.stream, rest).await),
                }
            };
            // A wake while stalled may be the server closing the connection:
            // look at the flags again at once.
            let woken = async {
                flags.wake.wait_since(seen).await;
                Step::Woken
            };
            let tick = async {
                Timer::after(WRITE_TICK).await;
                Step::Tick
            };
            // Dropping a pending write or flush is cancel-safe: nothing was
            // taken (see `Outbound::write_some`).
            match io.or(woken).or(tick).await {
                Step::Wrote(Ok(0)) => return Err("connection closed"),
                Step::Wrote(Err(_)) | Step::Flushed(Err(_)) => return Err("write error"),
                Step::Wrote(Ok(n)) => {
                    self.off = self.off.saturating_add(n);
                    stalled = Duration::ZERO;
                    dirty = !matches!(outbound, Outbound::Tcp);
                }
                Step::Flushed(Ok(())) => {
                    dirty = false;
                    stalled = Duration::ZERO;
                }
                Step::Woken => {
                    seen = flags.wake.generation();
                    self.woken = true;
                }
                Step::Tick if outbound.sent() != sent => {
                    sent = outbound.sent();
                    stalled = Duration::ZERO;
                }
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

/// What one read of a link brought.
#[cfg_attr(not(feature = "websocket"), allow(dead_code))]
enum Got {
    /// Bytes, now in the decoder; whether the peer's bytes were all taken
    /// (on TCP: the read did not fill the buffer; on TLS, whose reads hand
    /// out a record at a time: the read had to wait).
    Bytes { drained: bool },
    /// One whole frame (a WebSocket message), or why it is not one; and
    /// whether the read had to wait for it (the peer's bytes were all
    /// taken before).
    Message(Result<Bytes, WireError>, bool),
    /// Nothing for the gateway, but the peer is alive (a WebSocket ping).
    Activity,
    /// Nothing (a spurious wake): read again.
    Again,
    /// The peer closed the link, or it broke.
    End,
    /// The peer sent a WebSocket close: answer it, then end the link.
    PeerClosed,
}

/// Reads what the link has: on TCP and TLS into the decoder, through the
/// thread's shared buffer (borrowed only inside the read itself, so an
/// idle connection holds no buffer); on a WebSocket, one message.
async fn read_some(
    inbound: &mut Inbound,
    shard: &Shard,
    link: &Link,
    decoder: &mut FrameDecoder,
) -> Got {
    match inbound {
        Inbound::Tcp => {
            let stream = &link.stream;
            if stream.readable().await.is_err() {
                return Got::End;
            }
            let mut buf = shard.read_buf.borrow_mut();
            match stream.get_ref().read(&mut buf) {
                Ok(0) => Got::End,
                Ok(n) => {
                    decoder.extend(buf.get(..n).unwrap_or_default());
                    Got::Bytes {
                        drained: n < buf.len(),
                    }
                }
                Err(e)
                    if e.kind() == io::ErrorKind::WouldBlock
                        || e.kind() == io::ErrorKind::Interrupted =>
                {
                    Got::Again
                }
                Err(_) => Got::End,
            }
        }
        #[cfg(feature = "tls")]
        Inbound::Tls(half) => {
            use smol::io::AsyncRead as _;
            let mut waited = false;
            std::future::poll_fn(|cx| {
                let mut buf = shard.read_buf.borrow_mut();
                match std::pin::Pin::new(&mut *half).poll_read(cx, &mut buf) {
                    std::task::Poll::Pending => {
                        waited = true;
                        std::task::Poll::Pending
                    }
                    std::task::Poll::Ready(Ok(0)) => std::task::Poll::Ready(Got::End),
                    std::task::Poll::Ready(Ok(n)) => {
                        decoder.extend(buf.get(..n).unwrap_or_default());
                        std::task::Poll::Ready(Got::Bytes { drained: waited })
                    }
                    std::task::Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {
                        std::task::Poll::Ready(Got::Again)
                    }
                    std::task::Poll::Ready(Err(_)) => std::task::Poll::Ready(Got::End),
                }
            })
            .await
        }
        #[cfg(feature = "websocket")]
        Inbound::Ws(receiver) => {
            use async_tungstenite::tungstenite::{self, Message};
            use smol::stream::Stream as _;
            let mut waited = false;
            let next = std::future::poll_fn(|cx| {
                let next = std::pin::Pin::new(&mut *receiver).poll_next(cx);
                waited |= next.is_pending();
                next
            })
            .await;
            let invalid = |e| Got::Message(Err(e), waited);
            match next {
                Some(Ok(Message::Binary(frame))) => Got::Message(Ok(frame), waited),
                Some(Ok(Message::Ping(_))) => Got::Activity,
                Some(Ok(Message::Pong(_) | Message::Frame(_))) => Got::Again,
                Some(Ok(Message::Text(_))) => invalid(WireError::Unexpected(
                    "a text WebSocket message (frames are binary messages)",
                )),
                Some(Err(tungstenite::Error::Capacity(_))) => invalid(WireError::FrameTooLarge {
                    len: usize::MAX,
                    max: decoder.max_frame_size(),
                }),
                Some(Err(tungstenite::Error::Protocol(_) | tungstenite::Error::Utf8(_))) => {
                    invalid(WireError::Unexpected("a WebSocket protocol violation"))
                }
                Some(Ok(Message::Close(_))) => Got::PeerClosed,
                Some(Err(_)) | None => Got::End,
            }
        }
    }
}

/// Ends the transport after the last frames: a WebSocket close (status by
/// the reason the server closed the link), a TLS close_notify.
async fn close_transport(link: &Link, outbound: &mut Outbound) {
    match outbound {
        Outbound::Tcp => {
            let _ = (&*link.stream).flush().await;
        }
        #[cfg(feature = "tls")]
        Outbound::Tls(half, _) => {
            let _ = half.close().await;
        }
        #[cfg(feature = "websocket")]
        Outbound::Ws(..) => {
            use async_tungstenite::tungstenite::protocol::frame::{coding::CloseCode, CloseFrame};
            let frame = CloseFrame {
                code: CloseCode::from(link.ws_status.get()),
                reason: "".into(),
            };
            // After the peer's own close the library only has its answer
            // to send (a second close is refused): flush that first.
            let _ = outbound.flush().await;
            if let Outbound::Ws(sender, _) = outbound {
                let _ = sender.close(Some(frame)).await;
            }
        }
    }
}

impl Outbound {
    /// Writes from `bytes` (length-prefixed frames); how much was taken.
    /// Cancel-safe: when the future is dropped before it is ready, nothing
    /// was taken. A WebSocket takes one whole frame per call, as one
    /// message (its prefix dropped); `bytes` always starts at a frame.
    async fn write_some(&mut self, stream: &Stream, bytes: &[u8]) -> io::Result<usize> {
        match self {
            Outbound::Tcp => (&**stream).write(bytes).await,
            #[cfg(feature = "tls")]
            Outbound::Tls(half, _) => half.write(bytes).await,
            #[cfg(feature = "websocket")]
            Outbound::Ws(sender, _) => {
                use async_tungstenite::tungstenite::Message;
                use futures_util::Sink as _;
                let len = bytes
                    .get(..4)
                    .map_or(0, |p| u32::from_be_bytes([p[0], p[1], p[2], p[3]]) as usize);
                let frame = bytes.get(4..4 + len).ok_or(io::ErrorKind::InvalidData)?;
                std::future::poll_fn(|cx| {
                    let mut sender = std::pin::Pin::new(&mut *sender);
                    match sender.as_mut().poll_ready(cx) {
                        std::task::Poll::Pending => std::task::Poll::Pending,
                        std::task::Poll::Ready(Err(e)) => {
                            std::task::Poll::Ready(Err(io::Error::other(e)))
                        }
                        std::task::Poll::Ready(Ok(())) => std::task::Poll::Ready(
                            sender
                                .start_send(Message::Binary(Bytes::copy_from_slice(frame)))
                                .map(|()| 4 + len)
                                .map_err(io::Error::other),
                        ),
                    }
                })
                .await
            }
        }
    }

    /// Pushes out what the transport buffered.
    async fn flush(&mut self) -> io::Result<()> {
        match self {
            Outbound::Tcp => Ok(()),
            #[cfg(feature = "tls")]
            Outbound::Tls(half, _) => half.flush().await,
            #[cfg(feature = "websocket")]
            Outbound::Ws(sender, _) => {
                use futures_util::Sink as _;
                std::future::poll_fn(|cx| std::pin::Pin::new(&mut *sender).poll_flush(cx))
                    .await
                    .map_err(io::Error::other)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;
    use std::net::TcpListener;
    use std::sync::Arc;

    use async_io::Async;

    use smol::LocalExecutor;

    use super::super::shard::{BACKLOG_BYTES, BACKLOG_HIGH, QUEUE_BATCHES};
    use super::super::{Admitted, Control};
    use super::*;
    use crate::server::{Gateway, GatewayId, ServerConfig};
    use crate::wire::{self, encode_frame, Body, Frame};

    /// A hub that takes nothing: the gateway's queue to it fills, then its
    /// backlog reaches the bound, then the reader stops and the peer's
    /// writes block. Nothing grows past the bound however long the peer
    /// pushes.
    #[test]
    fn a_hub_that_does_not_keep_up_stops_the_reader() {
        // Small requests (the hub answers them; here it never reads them).
        let control = flood_a_hub_that_never_reads(ServerConfig::demo(), |_| {
            Body::QueryOnline(wire::QueryOnlineRequest { uids: vec![1] })
        });
        let peak = control.backlog.get();
        assert!(
            peak >= BACKLOG_HIGH,
            "the backlog reached its bound: {peak}"
        );
        assert!(
            peak <= BACKLOG_HIGH + FRAMES_PER_PUMP as usize,
            "and went no further: {peak}"
        );
    }

    /// The same with big requests: the byte bound stops the reader long
    /// before the message bound, and the backlog's bytes pass it by one
    /// read at most.
    #[test]
    fn big_requests_stop_the_reader_at_the_byte_bound() {
        let mut config = ServerConfig::demo();
        config.pre_login_max_frame_size = MAX_FRAME;
        // ~30 KiB each: 3,000 uids of 10 bytes.
        let control = flood_a_hub_that_never_reads(config, |rid| {
            Body::QueryOnline(wire::QueryOnlineRequest {
                uids: vec![u64::MAX - rid; 3000],
            })
        });
        let (peak, bytes) = (control.backlog.get(), control.backlog_bytes.get());
        assert!(
            bytes >= BACKLOG_BYTES,
            "the backlog reached its byte bound: {bytes}"
        );
        assert!(
            bytes <= BACKLOG_BYTES + READ_BUF + MAX_FRAME,
            "and went one read further at most: {bytes}"
        );
        assert!(peak < BACKLOG_HIGH / 16, "long before its count: {peak}");
    }

    const READ_BUF: usize = 64 * 1024;
    const MAX_FRAME: usize = 64 * 1024;

    /// Thread 1 of 2, with no hub shard of its own: the hub (shard 0,
    /// thread 0) never reads its queue. A peer writes requests `body(rid)`
    /// until the server has not read for half a second; the queue to the
    /// hub must be full by then. Returns the counters.
    fn flood_a_hub_that_never_reads(
        config: ServerConfig,
        body: impl Fn(u64) -> Body,
    ) -> Arc<Control> {
        let (to_hub, hub_side) = smol::channel::bounded(QUEUE_BATCHES);
        let control = Arc::new(Control::default());
        let gateway = Gateway::new(GatewayId(1), config, Instant::now(), 0);
        let peers = vec![Some(to_hub), None];
        let shard = Rc::new(Shard::new(
            1,
            gateway,
            Vec::new(),
            peers,
            control.clone(),
            READ_BUF,
        ));
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server_side, peer) = listener.accept().unwrap();
        control.admission().admit(peer.ip(), 1, 1).unwrap();
        let admitted = Admitted {
            control: control.clone(),
            ip: peer.ip(),
        };
        let ex = Rc::new(LocalExecutor::new());
        ex.spawn(shard.clone().flusher()).detach();
        start(
            &ex,
            &shard,
            Arc::new(Async::new(server_side).unwrap()),
            admitted,
            &super::super::RunnerConfig::default().opener(false, MAX_FRAME),
        );

        let mut bytes = BytesMut::new();
        for rid in 1..=10_000u64 {
            let f = encode_frame(&Frame {
                request_id: rid,
                body: Some(body(rid)),
            });
            write_length_prefixed(&f, &mut bytes);
            if bytes.len() > 64 << 20 {
                break;
            }
        }
        client.set_nonblocking(true).unwrap();
        let (mut written, mut refused_since) = (0usize, None::<Instant>);
        smol::block_on(ex.run(async {
            // Write the copies back to back (so frames stay whole) until
            // the socket has refused bytes for half a second: the server
            // stopped reading and the kernel buffers are full.
            let mut off = 0;
            loop {
                match client.write(&bytes[off..]) {
                    Ok(n) => {
                        written += n;
                        off = (off + n) % bytes.len();
                        refused_since = None;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        let since = *refused_since.get_or_insert_with(Instant::now);
                        if since.elapsed() > Duration::from_millis(500) {
                            break;
                        }
                        Timer::after(Duration::from_millis(5)).await;
                    }
                    Err(e) => panic!("write: {e}"),
                }
                // Let the server's tasks run between writes.
                smol::future::yield_now().await;
            }
        }));
        assert!(hub_side.is_full(), "the queue to the hub is full");
        // The writes were refused for half a second while the reader's
        // executor ran: it had stopped reading (TCP pushed back on the
        // peer) once the queue and the backlog were full.
        assert!(written > 1 << 20, "the peer wrote {written} bytes first");
        drop(hub_side);
        control
    }
}
