//! One runner thread: a [`Gateway`] and its connections, and on the first
//! thread the [`Hub`] too. Everything here lives on its thread (`Rc`,
//! `RefCell`): no lock is taken per frame. Threads talk only through bounded
//! queues of message batches:
//!
//! ```text
//!   thread k (gateway k) --uplink: Vec<ToHub>-->     thread 0 (hub)
//!   thread k (gateway k) <--downlink: Vec<ToGateway>-- thread 0 (hub)
//! ```
//!
//! Gateway 0 and the hub share thread 0 and call each other directly.
//! Backpressure: a reader stops reading while its thread's uplink holds
//! more than [`BACKLOG_HIGH`] messages (the hub is behind), and readers of
//! thread 0 while the hub holds as many for the other gateways (they are
//! behind): a slow side slows its producers, nothing grows without bound.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use smol::channel::{Receiver, Sender, TrySendError};
use smol::future::FutureExt as _;
use smol::Timer;

use super::link::{write_now, Outgoing, Stream};
use super::Control;
use crate::server::{CloseReason, ConnId, Gateway, Hub, IdMap, ToGateway, ToHub, TransportAction};

/// Messages a thread may hold for another before its producers wait.
pub(super) const BACKLOG_HIGH: usize = 8 * 1024;
/// Batches a queue between two threads holds ...
pub(super) const QUEUE_BATCHES: usize = 16;
/// ... of at most this many messages: what is in flight between two
/// threads is bounded by `BACKLOG_HIGH + QUEUE_BATCHES * BATCH_MAX`.
pub(super) const BATCH_MAX: usize = 1024;
/// A reader hands what it decoded on after this many frames, so that a
/// long read adds at most this much to a backlog before it is checked.
pub(super) const FRAMES_PER_PUMP: u32 = 256;

/// A connection as its thread's tasks share it.
pub(super) struct Link {
    pub stream: Stream,
    /// The server closes it: read no more, flush the `Close` frame, end.
    pub closing: Cell<bool>,
    /// ... as a slow consumer: the writer drops its unsent batch too.
    pub slow_consumer: Cell<bool>,
    /// Output the direct write could not finish is waiting, or a close.
    pub wake: Notify,
    /// What the socket did not take yet. The writer task takes it out
    /// while it waits for the socket (`writer_busy`).
    pub out: RefCell<Outgoing>,
    pub writer_busy: Cell<bool>,
}

impl Link {
    pub fn new(stream: Stream) -> Link {
        Link {
            stream,
            closing: Cell::new(false),
            slow_consumer: Cell::new(false),
            wake: Notify::default(),
            out: RefCell::new(Outgoing::default()),
            writer_busy: Cell::new(false),
        }
    }
}

/// The hub's side of thread 0: the hub, and what it holds for the other
/// gateways until the flusher sends it.
pub(super) struct HubSide {
    hub: RefCell<Hub>,
    /// Per gateway (index = id), messages not sent yet, in order.
    pending: RefCell<Vec<Vec<ToGateway>>>,
    pending_len: Cell<usize>,
    /// The flusher is waiting for room in a queue: it owns the order.
    flushing: Cell<bool>,
    flush: Notify,
    flushed: Notify,
    downlinks: Vec<Option<Sender<Vec<ToGateway>>>>,
}

/// One thread's state.
pub(super) struct Shard {
    pub gateway: RefCell<Gateway>,
    pub hub: Option<HubSide>,
    /// Not thread 0: messages for the hub not sent yet, and the queue.
    uplink: RefCell<Vec<ToHub>>,
    uplink_tx: Option<Sender<Vec<ToHub>>>,
    /// The uplink task is waiting for room in the queue: it owns the order.
    uplink_sending: Cell<bool>,
    uplink_wake: Notify,
    uplink_drained: Notify,
    /// The open connections.
    pub links: RefCell<IdMap<ConnId, Rc<Link>>>,
    /// The batch a direct write fills (one per thread: an idle
    /// connection holds none).
    write_buf: RefCell<Outgoing>,
    /// The deadline the timer sleeps until, and its wake.
    armed: Cell<Option<Instant>>,
    timer_wake: Notify,
    /// The read buffer every connection of the thread shares: a connection
    /// holds no buffer while it waits for bytes.
    pub read_buf: RefCell<Vec<u8>>,
    pub control: Arc<Control>,
    scratch: RefCell<Vec<ToHub>>,
}

impl Shard {
    /// Thread 0: gateway 0 and the hub, with the queues to the other
    /// gateways (`downlinks[k]` for gateway k; none for 0).
    pub fn with_hub(
        gateway: Gateway,
        hub: Hub,
        downlinks: Vec<Option<Sender<Vec<ToGateway>>>>,
        control: Arc<Control>,
        read_buf: usize,
    ) -> Shard {
        let n = downlinks.len();
        let side = HubSide {
            hub: RefCell::new(hub),
            pending: RefCell::new((0..n).map(|_| Vec::new()).collect()),
            pending_len: Cell::new(0),
            flushing: Cell::new(false),
            flush: Notify::default(),
            flushed: Notify::default(),
            downlinks,
        };
        Shard::new(gateway, Some(side), None, control, read_buf)
    }

    /// Another thread: its gateway, and the queue to the hub.
    pub fn with_uplink(
        gateway: Gateway,
        uplink: Sender<Vec<ToHub>>,
        control: Arc<Control>,
        read_buf: usize,
    ) -> Shard {
        Shard::new(gateway, None, Some(uplink), control, read_buf)
    }

    fn new(
        gateway: Gateway,
        hub: Option<HubSide>,
        uplink_tx: Option<Sender<Vec<ToHub>>>,
        control: Arc<Control>,
        read_buf: usize,
    ) -> Shard {
        Shard {
            gateway: RefCell::new(gateway),
            hub,
            uplink: RefCell::new(Vec::new()),
            uplink_tx,
            uplink_sending: Cell::new(false),
            uplink_wake: Notify::default(),
            uplink_drained: Notify::default(),
            links: RefCell::new(IdMap::default()),
            write_buf: RefCell::new(Outgoing::default()),
            armed: Cell::new(None),
            timer_wake: Notify::default(),
            read_buf: RefCell::new(vec![0; read_buf]),
            control,
            scratch: RefCell::new(Vec::new()),
        }
    }

    /// After every input on this thread: carries the gateway's messages to
    /// the hub (directly, or into the uplink), applies the hub's output for
    /// this gateway, wakes the writers with output, flags the connections
    /// to close, and re-arms the timer when its deadline moved earlier.
    pub fn pump(&self) {
        let now = Instant::now();
        loop {
            let mut scratch = self.scratch.borrow_mut();
            {
                let mut g = self.gateway.borrow_mut();
                while let Some(m) = g.poll_hub() {
                    scratch.push(m);
                }
            }
            let Some(side) = &self.hub else {
                if !scratch.is_empty() {
                    self.uplink.borrow_mut().append(&mut scratch);
                    drop(scratch);
                    self.send_uplink_now();
                }
                break;
            };
            let mut hub = side.hub.borrow_mut();
            for m in scratch.drain(..) {
                hub.handle(now, m);
            }
            drop(scratch);
            let mut local = false;
            let mut remote = false;
            while let Some(m) = hub.poll_gateway() {
                let g = usize::from(m.gateway().0);
                if g == 0 {
                    self.gateway.borrow_mut().handle_hub(now, m);
                    local = true;
                } else if let Some(q) = side.pending.borrow_mut().get_mut(g) {
                    q.push(m);
                    side.pending_len.set(side.pending_len.get() + 1);
                    remote = true;
                }
            }
            drop(hub);
            if remote {
                self.flush_now(side);
            }
            // Gateway 0's handling of the hub's output may have more for
            // the hub (a slow consumer's lost link): go round again.
            if !local {
                break;
            }
        }
        self.signal_links();
        self.rearm();
    }

    /// Sends the uplink's messages now, as far as the queue takes them;
    /// the rest is the uplink task's (it waits for room).
    fn send_uplink_now(&self) {
        let Some(tx) = &self.uplink_tx else {
            return;
        };
        let mut queue = self.uplink.borrow_mut();
        if !self.uplink_sending.get() {
            while !queue.is_empty() {
                match tx.try_send(take_batch(&mut queue)) {
                    Ok(()) => {}
                    Err(TrySendError::Full(batch)) => {
                        put_back(&mut queue, batch);
                        break;
                    }
                    Err(TrySendError::Closed(_)) => return,
                }
            }
        }
        self.control.note_backlog(queue.len());
        if !queue.is_empty() {
            self.uplink_wake.notify();
        }
    }

    /// Sends the hub's messages for the other gateways now, as far as
    /// their queues take them; the rest is the flusher's.
    fn flush_now(&self, side: &HubSide) {
        if !side.flushing.get() {
            let mut pending = side.pending.borrow_mut();
            for (q, tx) in pending.iter_mut().zip(&side.downlinks) {
                let Some(tx) = tx else { continue };
                while !q.is_empty() {
                    let batch = take_batch(q);
                    let n = batch.len();
                    match tx.try_send(batch) {
                        Ok(()) => side.pending_len.set(side.pending_len.get() - n),
                        Err(TrySendError::Full(batch) | TrySendError::Closed(batch)) => {
                            put_back(q, batch);
                            break;
                        }
                    }
                }
            }
        }
        self.control.note_backlog(side.pending_len.get());
        if side.pending_len.get() > 0 {
            side.flush.notify();
        }
    }

    /// Applies a batch from the hub (threads other than 0).
    pub fn apply(&self, batch: Vec<ToGateway>) {
        let now = Instant::now();
        {
            let mut g = self.gateway.borrow_mut();
            for m in batch {
                g.handle_hub(now, m);
            }
        }
        self.pump();
    }

    /// Handles a batch from another gateway (thread 0).
    pub fn apply_to_hub(&self, batch: Vec<ToHub>) {
        if let Some(side) = &self.hub {
            let now = Instant::now();
            let mut hub = side.hub.borrow_mut();
            for m in batch {
                hub.handle(now, m);
            }
        }
        self.pump();
    }

    /// Whether readers of this thread must wait before reading more.
    pub fn backlogged(&self) -> bool {
        match &self.hub {
            Some(side) => side.pending_len.get() > BACKLOG_HIGH,
            None => self.uplink.borrow().len() > BACKLOG_HIGH,
        }
    }

    /// Waits until the backlog that made [`Shard::backlogged`] true shrank.
    pub async fn room(&self) {
        while self.backlogged() {
            match &self.hub {
                Some(side) => side.flushed.wait().await,
                None => self.uplink_drained.wait().await,
            }
        }
    }

    /// Writes what the gateway queued straight to the sockets that take
    /// it (no task hop), leaves the rest to the writers, and flags the
    /// connections to close.
    fn signal_links(&self) {
        let mut g = self.gateway.borrow_mut();
        let links = self.links.borrow();
        let mut scratch = self.write_buf.borrow_mut();
        while let Some(c) = g.poll_ready() {
            if let Some(link) = links.get(&c) {
                write_now(&mut g, c, link, &mut scratch);
            }
        }
        while let Some(TransportAction::Close { conn, reason }) = g.poll_transport() {
            if let Some(f) = links.get(&conn) {
                if matches!(reason, CloseReason::SlowConsumer) {
                    f.slow_consumer.set(true);
                }
                f.closing.set(true);
                f.wake.notify();
            }
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        let g = self.gateway.borrow().poll_timeout();
        let h = self
            .hub
            .as_ref()
            .and_then(|s| s.hub.borrow().poll_timeout());
        g.into_iter().chain(h).min()
    }

    fn rearm(&self) {
        let next = self.next_deadline();
        let armed = self.armed.get();
        if next.is_some() && (armed.is_none() || next < armed) {
            self.timer_wake.notify();
        }
    }

    /// The thread's timer: sleeps until the next deadline of its machines.
    pub async fn timer(self: Rc<Self>) {
        loop {
            let deadline = self.next_deadline();
            self.armed.set(deadline);
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
            sleep.or(self.timer_wake.wait()).await;
            let now = Instant::now();
            self.gateway.borrow_mut().handle_timeout(now);
            if let Some(side) = &self.hub {
                side.hub.borrow_mut().handle_timeout(now);
            }
            self.pump();
        }
    }

    /// Sends the uplink's messages to the hub, in order (threads other
    /// than 0). Ends when the hub is gone.
    pub async fn uplink(self: Rc<Self>) {
        let Some(tx) = self.uplink_tx.clone() else {
            return;
        };
        loop {
            loop {
                let batch = take_batch(&mut self.uplink.borrow_mut());
                if batch.is_empty() {
                    break;
                }
                self.uplink_sending.set(true);
                let sent = tx.send(batch).await;
                self.uplink_sending.set(false);
                if sent.is_err() {
                    return;
                }
                self.uplink_drained.notify();
            }
            self.uplink_drained.notify();
            self.uplink_wake.wait().await;
        }
    }

    /// Sends the hub's messages to the other gateways, in order (thread 0).
    pub async fn flusher(self: Rc<Self>) {
        let Some(side) = &self.hub else {
            return;
        };
        loop {
            let mut sent = false;
            for (g, tx) in side.downlinks.iter().enumerate() {
                let batch = match side.pending.borrow_mut().get_mut(g) {
                    Some(q) if !q.is_empty() => take_batch(q),
                    _ => continue,
                };
                side.pending_len
                    .set(side.pending_len.get().saturating_sub(batch.len()));
                sent = true;
                if let Some(tx) = tx {
                    // A gateway thread that ended drops what was for it.
                    side.flushing.set(true);
                    let _ = tx.send(batch).await;
                    side.flushing.set(false);
                }
            }
            side.flushed.notify();
            if !sent {
                side.flush.wait().await;
            }
        }
    }

    /// Receives the hub's batches for this gateway (threads other than 0).
    pub async fn downlink(self: Rc<Self>, rx: Receiver<Vec<ToGateway>>) {
        while let Ok(batch) = rx.recv().await {
            self.apply(batch);
        }
    }

    /// Receives the other gateways' batches for the hub (thread 0), while
    /// the hub is not behind on its own output.
    pub async fn hub_inbox(self: Rc<Self>, rx: Receiver<Vec<ToHub>>) {
        loop {
            self.room().await;
            let Ok(batch) = rx.recv().await else {
                return;
            };
            self.apply_to_hub(batch);
        }
    }
}

/// Puts a batch that could not be sent back in front of `queue`.
fn put_back<T>(queue: &mut Vec<T>, mut batch: Vec<T>) {
    batch.append(queue);
    *queue = batch;
}

/// The oldest messages of `queue`, at most [`BATCH_MAX`] of them.
fn take_batch<T>(queue: &mut Vec<T>) -> Vec<T> {
    if queue.len() <= BATCH_MAX {
        return std::mem::take(queue);
    }
    queue.drain(..BATCH_MAX).collect()
}

/// A wake-up for tasks of one thread: [`Notify::wait`] resolves at the next
/// [`Notify::notify`] after it was called. A task checks its condition,
/// then waits, with no await between: no notification is lost.
#[derive(Default)]
pub(super) struct Notify {
    generation: Cell<u64>,
    waiters: RefCell<Vec<Waker>>,
}

impl Notify {
    pub fn notify(&self) {
        self.generation.set(self.generation.get().wrapping_add(1));
        for w in self.waiters.borrow_mut().drain(..) {
            w.wake();
        }
    }

    pub fn wait(&self) -> Wait<'_> {
        self.wait_since(self.generation())
    }

    /// How many notifications there were (wrapping).
    pub fn generation(&self) -> u64 {
        self.generation.get()
    }

    /// Resolves once there was a notification after `generation`.
    pub fn wait_since(&self, generation: u64) -> Wait<'_> {
        Wait {
            notify: self,
            at: generation,
        }
    }
}

pub(super) struct Wait<'a> {
    notify: &'a Notify,
    at: u64,
}

impl Future for Wait<'_> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.notify.generation.get() != self.at {
            return Poll::Ready(());
        }
        let mut waiters = self.notify.waiters.borrow_mut();
        if !waiters.iter().any(|w| w.will_wake(cx.waker())) {
            waiters.push(cx.waker().clone());
        }
        Poll::Pending
    }
}

/// The largest backlog seen, for [`super::RunnerStats`].
#[derive(Default)]
pub(super) struct BacklogPeak(AtomicUsize);

impl BacklogPeak {
    pub fn note(&self, n: usize) {
        self.0.fetch_max(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}
