//! One runner thread: a [`Gateway`] and its connections, and the hub
//! shards the thread owns (shard `k` lives on thread `k % threads`).
//! Everything here lives on its thread (`Rc`, `RefCell`): no lock is taken
//! per frame. Threads talk only through bounded queues of message batches,
//! one inbound queue per thread:
//!
//! ```text
//!   thread a (gateway a, shard a) ──Vec<Envelope>──► thread b (gateway b, shard b)
//!   envelopes: ToHub for a shard, ToShard between shards, ToGateway
//! ```
//!
//! What is for the thread itself is handled at once, by a direct call.
//! Backpressure: a reader stops reading while its thread holds more than
//! [`BACKLOG_HIGH`] messages or [`BACKLOG_BYTES`] bytes for the others
//! (their queues are full: they are behind). A thread's inbound queue is always drained (handling a message
//! never waits), so two threads can never wait on each other. On a gateway
//! node, the first thread's link to the hub node counts too: past
//! `cluster::UPLINK_HIGH` its readers wait, and it takes the other threads'
//! messages for the hub node only as the link drains (it waits on the
//! network alone).

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

use super::cluster::{Relay, Uplink};
use super::link::{write_now, Outgoing};
use super::transport::Stream;
use super::Control;
use crate::error::ServiceError;
#[cfg(feature = "http-api")]
use crate::server::{ApiCall, ApiReply};
use crate::server::{
    CloseReason, ConnId, Gateway, GatewayId, Hub, IdMap, ShardId, ToGateway, ToHub, ToShard,
    TransportAction,
};

/// Messages a thread may hold for the others before its readers wait ...
pub(super) const BACKLOG_HIGH: usize = 8 * 1024;
/// ... or bytes of them ([`Envelope::weight`]): big messages (32 KiB
/// sends, attribute writes) reach this bound first.
pub(super) const BACKLOG_BYTES: usize = 4 * 1024 * 1024;
/// Batches a queue between two threads holds ...
pub(super) const QUEUE_BATCHES: usize = 16;
/// ... of at most this many messages ...
pub(super) const BATCH_MAX: usize = 1024;
/// ... and this many bytes, unless the batch is a single message (one
/// larger than any bound still passes: nothing waits on it forever). What
/// is in flight between two threads is so bounded by
/// `BACKLOG_HIGH + QUEUE_BATCHES * BATCH_MAX` messages and
/// `BACKLOG_BYTES + QUEUE_BATCHES * BATCH_BYTES` bytes, plus one message
/// per batch and what the readers add before they check the bound.
pub(super) const BATCH_BYTES: usize = 256 * 1024;
/// A reader hands what it decoded on after this many frames, so that a
/// long read adds at most this much to a backlog before it is checked.
pub(super) const FRAMES_PER_PUMP: u32 = 256;

/// A connection as its thread's tasks share it.
pub(super) struct Link {
    pub stream: Stream,
    /// Plain TCP: frames may be written to the socket straight from the
    /// pump (`link::write_now`). TLS and WebSocket links are written by
    /// their writer task only.
    pub direct: bool,
    /// The WebSocket close status for the reason the server closes the
    /// link (`docs/protocol.md`, "Transports").
    pub ws_status: Cell<u16>,
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
    pub fn new(stream: Stream, direct: bool) -> Link {
        Link {
            stream,
            direct,
            ws_status: Cell::new(1000),
            closing: Cell::new(false),
            slow_consumer: Cell::new(false),
            wake: Notify::default(),
            out: RefCell::new(Outgoing::default()),
            writer_busy: Cell::new(false),
        }
    }
}

/// A message between two threads.
pub(super) enum Envelope {
    /// For a hub shard.
    Hub(ShardId, ToHub),
    /// From a hub shard (the first) to another (the second).
    Shard(ShardId, ShardId, ToShard),
    /// For a gateway (its `ConnId`s name it).
    Gateway(ToGateway),
    /// For a hub shard: these gateways (a gateway node's) are gone.
    GatewaysLost(ShardId, std::ops::Range<u16>),
    /// A shard's part of a server API call, and where its answer goes.
    #[cfg(feature = "http-api")]
    Api(ShardId, ApiCall, super::cluster::ApiReplyTo),
}

impl Envelope {
    /// About the bytes the envelope holds: its own size, and the frames
    /// and bodies it carries (lengths summed, nothing encoded). A server
    /// API call counts its size only: its caller waits for each answer, so
    /// calls in flight are bounded by the API listener's connections.
    pub fn weight(&self) -> usize {
        size_of::<Envelope>()
            + match self {
                Envelope::Hub(_, m) => m.weight(),
                Envelope::Shard(_, _, m) => m.weight(),
                Envelope::Gateway(m) => m.weight(),
                Envelope::GatewaysLost(..) => 0,
                #[cfg(feature = "http-api")]
                Envelope::Api(..) => 0,
            }
    }
}

/// What a thread holds for the others: messages and their bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Load {
    pub len: usize,
    pub bytes: usize,
}

impl Load {
    /// Past either bound, the thread's readers wait.
    pub fn over(self) -> bool {
        self.len > BACKLOG_HIGH || self.bytes > BACKLOG_BYTES
    }

    fn add(&mut self, len: usize, bytes: usize) {
        self.len += len;
        self.bytes += bytes;
    }

    fn sub(&mut self, len: usize, bytes: usize) {
        self.len = self.len.saturating_sub(len);
        self.bytes = self.bytes.saturating_sub(bytes);
    }
}

/// Messages for one thread not sent yet, in order, with their weights
/// (computed once, when routed).
pub(super) struct Outbox<T> {
    items: Vec<T>,
    weights: Vec<usize>,
}

impl<T> Default for Outbox<T> {
    fn default() -> Self {
        Outbox {
            items: Vec::new(),
            weights: Vec::new(),
        }
    }
}

/// Messages taken from an [`Outbox`], with their weights (put back
/// whole if the queue has no room).
pub(super) struct Batch<T> {
    pub items: Vec<T>,
    weights: Vec<usize>,
    pub bytes: usize,
}

impl<T> Outbox<T> {
    pub fn push(&mut self, item: T, weight: usize) {
        self.items.push(item);
        self.weights.push(weight);
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The oldest messages: at most [`BATCH_MAX`] of them and
    /// [`BATCH_BYTES`], but at least one, so that a queue of
    /// `QUEUE_BATCHES` batches is a byte bound too.
    pub fn take_batch(&mut self) -> Batch<T> {
        let mut n = 0;
        let mut bytes = 0;
        for &w in self.weights.iter().take(BATCH_MAX) {
            if n > 0 && bytes + w > BATCH_BYTES {
                break;
            }
            n += 1;
            bytes += w;
        }
        let (items, weights) = if n == self.items.len() {
            (
                std::mem::take(&mut self.items),
                std::mem::take(&mut self.weights),
            )
        } else {
            (
                self.items.drain(..n).collect(),
                self.weights.drain(..n).collect(),
            )
        };
        Batch {
            items,
            weights,
            bytes,
        }
    }

    /// Puts a batch that could not be sent back in front.
    pub fn put_back(&mut self, items: Vec<T>, weights: Vec<usize>) {
        put_back(&mut self.items, items);
        put_back(&mut self.weights, weights);
    }
}

/// One thread's state.
pub(super) struct Shard {
    thread: usize,
    threads: usize,
    pub gateway: RefCell<Gateway>,
    /// The hub shards this thread owns.
    hubs: Vec<RefCell<Hub>>,
    /// Per thread (index), envelopes not sent yet, in order.
    outbox: RefCell<Vec<Outbox<Envelope>>>,
    /// What the outboxes hold, in all.
    out: Cell<Load>,
    /// Per thread, its inbound queue (none for this thread).
    peers: Vec<Option<Sender<Vec<Envelope>>>>,
    /// The flusher is waiting for room in a queue: it owns the order.
    flushing: Cell<bool>,
    flush: Notify,
    flushed: Notify,
    /// Envelopes for this thread's own machines, handled in the pump.
    local: RefCell<std::collections::VecDeque<Envelope>>,
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
    /// The hubs made changes for the store (its writer waits on it).
    store_wake: Notify,
    /// This thread's store cannot be written (counted in
    /// `Control::stores_down`).
    #[cfg(feature = "redis")]
    store_down: Cell<bool>,
    /// The gateway refuses requests (some thread's store is down).
    refusing: Cell<bool>,
    /// Where the first thread sends what no machine of this node takes:
    /// the hub node's links to gateway nodes, or a gateway node's link to
    /// the hub node (`None`: the node serves alone).
    relay: RefCell<Option<Relay>>,
    /// Server API answers waiting, like every output, for the store batch
    /// holding what they show: (shard, batch, caller, answer).
    #[cfg(feature = "http-api")]
    #[allow(clippy::type_complexity)]
    parked_api: RefCell<Vec<(ShardId, u64, ApiAnswer, Result<ApiReply, ServiceError>)>>,
}

#[cfg(feature = "http-api")]
type ApiAnswer = super::cluster::ApiReplyTo;

impl Shard {
    /// Thread `thread` of `peers.len()`: its gateway, the hub shards it
    /// owns, and the other threads' inbound queues (`peers[thread]` is
    /// none).
    pub fn new(
        thread: usize,
        gateway: Gateway,
        hubs: Vec<Hub>,
        peers: Vec<Option<Sender<Vec<Envelope>>>>,
        control: Arc<Control>,
        read_buf: usize,
    ) -> Shard {
        let threads = peers.len().max(1);
        Shard {
            thread,
            threads,
            gateway: RefCell::new(gateway),
            hubs: hubs.into_iter().map(RefCell::new).collect(),
            outbox: RefCell::new((0..threads).map(|_| Outbox::default()).collect()),
            out: Cell::new(Load::default()),
            peers,
            flushing: Cell::new(false),
            flush: Notify::default(),
            flushed: Notify::default(),
            local: RefCell::new(std::collections::VecDeque::new()),
            links: RefCell::new(IdMap::default()),
            write_buf: RefCell::new(Outgoing::default()),
            armed: Cell::new(None),
            timer_wake: Notify::default(),
            read_buf: RefCell::new(vec![0; read_buf]),
            control,
            store_wake: Notify::default(),
            #[cfg(feature = "redis")]
            store_down: Cell::new(false),
            refusing: Cell::new(false),
            relay: RefCell::new(None),
            #[cfg(feature = "http-api")]
            parked_api: RefCell::new(Vec::new()),
        }
    }

    /// Makes this (first) thread the node's relay to other nodes.
    pub fn set_relay(&self, relay: Relay) {
        *self.relay.borrow_mut() = Some(relay);
    }

    /// The thread of this node's gateway `g`, if it is this node's.
    fn gateway_thread(&self, g: GatewayId) -> Option<usize> {
        let base = self.gateway.borrow().id().0 - self.thread as u16;
        let t = usize::from(g.0.checked_sub(base)?);
        (t < self.threads).then_some(t)
    }

    /// The thread that owns hub shard `s`.
    fn owner(&self, s: ShardId) -> usize {
        usize::from(s.0) % self.threads
    }

    /// This thread's hub shard `s`.
    fn hub(&self, s: ShardId) -> Option<&RefCell<Hub>> {
        self.hubs.get(usize::from(s.0) / self.threads)
    }

    /// Where an envelope goes: this thread's own machines, or a thread's
    /// outbox.
    pub fn route(&self, envelope: Envelope) {
        // What this node has no machine for goes to the first thread,
        // the relay to other nodes.
        let to = match &envelope {
            _ if self.hubs.is_empty() && !matches!(envelope, Envelope::Gateway(_)) => 0,
            Envelope::Hub(s, _) | Envelope::Shard(_, s, _) | Envelope::GatewaysLost(s, _) => {
                self.owner(*s)
            }
            #[cfg(feature = "http-api")]
            Envelope::Api(s, _, _) => self.owner(*s),
            Envelope::Gateway(m) => self.gateway_thread(m.gateway()).unwrap_or(0),
        };
        if to == self.thread {
            self.local.borrow_mut().push_back(envelope);
        } else if let Some(q) = self.outbox.borrow_mut().get_mut(to) {
            let weight = envelope.weight();
            q.push(envelope, weight);
            self.update_out(|o| o.add(1, weight));
        }
    }

    /// After every input on this thread: carries the machines' messages to
    /// each other (directly on this thread, into the outboxes for the
    /// others), writes what the gateway queued, flags the connections to
    /// close, sends what the other threads' queues take, and re-arms the
    /// timer when its deadline moved earlier.
    pub fn pump(&self) {
        let now = Instant::now();
        self.sync_refusal();
        loop {
            {
                let mut g = self.gateway.borrow_mut();
                while let Some((s, m)) = g.poll_hub_routed() {
                    self.route(Envelope::Hub(s, m));
                }
            }
            for hub in &self.hubs {
                let mut h = hub.borrow_mut();
                let from = h.shard();
                while let Some(m) = h.poll_gateway() {
                    self.route(Envelope::Gateway(m));
                }
                while let Some((to, m)) = h.poll_shard() {
                    self.route(Envelope::Shard(from, to, m));
                }
                // The apps' events: to their delivery threads, never
                // waiting (without the feature, nowhere).
                while let Some(event) = h.poll_hook() {
                    #[cfg(feature = "webhooks")]
                    self.control.hooks.send(event);
                    #[cfg(not(feature = "webhooks"))]
                    drop(event);
                }
            }
            let Some(envelope) = self.local.borrow_mut().pop_front() else {
                break;
            };
            self.handle(now, envelope);
            // Handle the rest of the local ones before polling again.
            while let Some(envelope) = self.local.borrow_mut().pop_front() {
                self.handle(now, envelope);
            }
        }
        self.signal_links();
        self.flush_now();
        self.rearm();
        self.store_wake.notify();
        #[cfg(feature = "http-api")]
        self.release_api();
    }

    /// Answers the parked server API calls whose batches are stored.
    #[cfg(feature = "http-api")]
    fn release_api(&self) {
        let mut parked = self.parked_api.borrow_mut();
        if parked.is_empty() {
            return;
        }
        let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut *parked)
            .into_iter()
            .partition(|(s, tag, ..)| self.hub(*s).is_some_and(|h| h.borrow().is_stored(*tag)));
        *parked = waiting;
        drop(parked);
        for (_, _, reply, answer) in ready {
            let _ = reply.try_send(answer);
        }
    }

    fn handle(&self, now: Instant, envelope: Envelope) {
        match envelope {
            Envelope::Hub(s, m) => match (self.hub(s), &*self.relay.borrow()) {
                (Some(h), _) => h.borrow_mut().handle(now, m),
                (None, Some(Relay::Uplink(up))) => up.to_hub(s, m),
                _ => {}
            },
            Envelope::Shard(from, to, m) => {
                if let Some(h) = self.hub(to) {
                    h.borrow_mut().handle_shard(now, from, m);
                }
            }
            Envelope::Gateway(m) => {
                if m.gateway() == self.gateway.borrow().id() {
                    self.gateway.borrow_mut().handle_hub(now, m);
                } else if let Some(Relay::Peers(peers)) = &*self.relay.borrow() {
                    // (A node that left drops what was for it.)
                    peers.to_gateway(m);
                }
            }
            Envelope::GatewaysLost(s, gateways) => {
                if let Some(h) = self.hub(s) {
                    h.borrow_mut()
                        .handle_gateways_lost(now, |g| gateways.contains(&g.0));
                }
            }
            #[cfg(feature = "http-api")]
            Envelope::Api(s, call, reply) => {
                let Some(h) = self.hub(s) else {
                    // A gateway node holds no state to answer from: the
                    // hub node answers.
                    match &*self.relay.borrow() {
                        Some(Relay::Uplink(up)) => up.call_api(s, call, reply),
                        _ => {
                            let _ = reply.try_send(Err(ServiceError::new(
                                crate::error::ErrorCode::SERVICE_UNAVAILABLE,
                                "this node holds no hub shard: retry",
                            )));
                        }
                    }
                    return;
                };
                let mut h = h.borrow_mut();
                let answer = h.handle_api(now, call);
                let tag = h.store_tag();
                if h.is_stored(tag) {
                    // The caller may have gone (its request was cancelled).
                    let _ = reply.try_send(answer);
                } else {
                    self.parked_api.borrow_mut().push((s, tag, reply, answer));
                }
            }
        }
    }

    /// Sends the outboxes now, as far as the other threads' queues take
    /// them; the rest is the flusher's (it waits for room).
    fn flush_now(&self) {
        if self.out.get().len == 0 {
            return;
        }
        if !self.flushing.get() {
            let mut outbox = self.outbox.borrow_mut();
            for (q, tx) in outbox.iter_mut().zip(&self.peers) {
                let Some(tx) = tx else { continue };
                while !q.is_empty() {
                    let Batch {
                        items,
                        weights,
                        bytes,
                    } = q.take_batch();
                    let n = items.len();
                    match tx.try_send(items) {
                        Ok(()) => self.update_out(|o| o.sub(n, bytes)),
                        Err(TrySendError::Full(items) | TrySendError::Closed(items)) => {
                            q.put_back(items, weights);
                            break;
                        }
                    }
                }
            }
        }
        self.control.note_backlog(self.out.get());
        if self.out.get().len > 0 {
            self.flush.notify();
        }
    }

    fn update_out(&self, f: impl FnOnce(&mut Load)) {
        let mut out = self.out.get();
        f(&mut out);
        self.out.set(out);
    }

    /// Handles a batch from another thread.
    pub fn apply(&self, batch: Vec<Envelope>) {
        self.local.borrow_mut().extend(batch);
        self.pump();
    }

    /// Whether readers of this thread must wait before reading more: its
    /// queues to the others are full, or (a gateway node's first thread)
    /// its link to the hub node is.
    pub fn backlogged(&self) -> bool {
        self.out.get().over()
            || matches!(&*self.relay.borrow(), Some(Relay::Uplink(up)) if up.backlogged())
    }

    /// A gateway node's link to the hub node (its first thread's).
    fn uplink(&self) -> Option<Rc<Uplink>> {
        match &*self.relay.borrow() {
            Some(Relay::Uplink(up)) => Some(up.clone()),
            _ => None,
        }
    }

    /// While a store cannot be written, the gateway answers requests with
    /// `SERVICE_UNAVAILABLE` instead of passing them on: what the hubs
    /// hold for the store stays bounded, and links stay open.
    pub fn sync_refusal(&self) {
        let down = self.control.stores_down.load(Ordering::Relaxed) > 0
            || self.control.hub_store_down.load(Ordering::Relaxed);
        if down != self.refusing.replace(down) {
            // A hub node's gateway nodes refuse with it.
            if let Some(Relay::Peers(peers)) = &*self.relay.borrow() {
                peers.tell_store_down(down);
            }
            let refusal = down.then(|| {
                ServiceError::new(
                    crate::error::ErrorCode::SERVICE_UNAVAILABLE,
                    "the server cannot store state now: retry later",
                )
            });
            self.gateway.borrow_mut().set_refusing(refusal);
        }
    }

    /// Waits until the backlog that made [`Shard::backlogged`] true shrank.
    pub async fn room(&self) {
        while self.backlogged() {
            let flushed = self.flushed.wait();
            match self.uplink() {
                Some(up) => flushed.or(up.drained()).await,
                None => flushed.await,
            }
        }
    }

    /// Waits until this thread's queues to the others have room (its link
    /// to the hub node, if any, not counted: a gateway node's reader of it
    /// must not wait on it).
    pub async fn threads_room(&self) {
        while self.out.get().over() {
            self.flushed.wait().await;
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
                f.ws_status.set(websocket_status(&reason));
                f.closing.set(true);
                f.wake.notify();
            }
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        let g = self.gateway.borrow().poll_timeout();
        let hubs = self.hubs.iter().filter_map(|h| h.borrow().poll_timeout());
        g.into_iter().chain(hubs).min()
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
            for hub in &self.hubs {
                hub.borrow_mut().handle_timeout(now);
            }
            self.pump();
        }
    }

    /// Sends what the other threads' queues did not take at once, in
    /// order, waiting for room.
    pub async fn flusher(self: Rc<Self>) {
        loop {
            let mut sent = false;
            for (t, tx) in self.peers.iter().enumerate() {
                let batch = match self.outbox.borrow_mut().get_mut(t) {
                    Some(q) if !q.is_empty() => q.take_batch(),
                    _ => continue,
                };
                self.update_out(|o| o.sub(batch.items.len(), batch.bytes));
                let batch = batch.items;
                sent = true;
                if let Some(tx) = tx {
                    // A thread that ended drops what was for it.
                    self.flushing.set(true);
                    let _ = tx.send(batch).await;
                    self.flushing.set(false);
                }
            }
            self.flushed.notify();
            if !sent {
                self.flush.wait().await;
            }
        }
    }

    /// Publishes this thread's counters (its gateway's and its hub
    /// shards' snapshots, merged) for the API listener's scrapes
    /// (`Control::published`): one lock per publication, none on a frame's
    /// path.
    #[cfg(feature = "http-api")]
    pub fn publish(&self) {
        if !self.control.published.enabled() {
            return;
        }
        let mut stats = self.gateway.borrow().stats();
        for hub in &self.hubs {
            stats.merge(&hub.borrow().stats());
        }
        self.control.published.publish(self.thread, stats);
    }

    /// Publishes at once (the thread counts as serving from then on), then
    /// every [`super::http::PUBLISH_EVERY`]; nothing without an API listener.
    #[cfg(feature = "http-api")]
    pub async fn publisher(self: Rc<Self>) {
        if !self.control.published.enabled() {
            return;
        }
        loop {
            self.publish();
            Timer::after(super::http::PUBLISH_EVERY).await;
        }
    }

    /// Writes the hub shards' batches to the store, one at a time per
    /// thread, in order (what changes while one is written goes in the
    /// next: a busy store gets fewer, larger batches), and lets out what
    /// waited for each. An unreachable store is retried with backoff while
    /// every gateway refuses requests (`SERVICE_UNAVAILABLE`); a store that
    /// lost its data gets the whole state again.
    ///
    /// `generation` is the store's when the state was loaded: a store
    /// that lost it since gets the whole state again, and an idle writer
    /// checks it every [`IDLE_CHECK`] so that Redis losing its data is
    /// noticed without waiting for a change.
    #[cfg(feature = "redis")]
    pub async fn store_writer(
        self: Rc<Self>,
        config: super::store::StoreConfig,
        generation: Option<String>,
    ) {
        use super::store::{RedisStore, StoreError};
        const BACKOFF_MIN: std::time::Duration = std::time::Duration::from_millis(50);
        const BACKOFF_MAX: std::time::Duration = std::time::Duration::from_secs(2);
        const IDLE_CHECK: std::time::Duration = std::time::Duration::from_secs(1);
        // It connects (again) by itself at the call after a failed one.
        let mut store = RedisStore::new(&config);
        if let Some(g) = &generation {
            store.expect_generation(g);
        }
        let mut backoff = BACKOFF_MIN;
        loop {
            let generation = self.store_wake.generation();
            for hub in &self.hubs {
                loop {
                    let Some(batch) = hub.borrow_mut().poll_store() else {
                        break;
                    };
                    loop {
                        match store.write(&batch).await {
                            Ok(()) => {
                                hub.borrow_mut().handle_stored(batch.number);
                                break;
                            }
                            // Unreachable, or fenced: the lease lapsed
                            // (Redis restarted empty, or this node was cut
                            // off). The lease keeper takes it again or, if
                            // another node holds it, stops the server.
                            Err(e @ (StoreError::Unavailable(_) | StoreError::Fenced)) => {
                                if !self.store_down.replace(true) {
                                    log!(warn, "store not writable, requests refused: {e}");
                                    self.control.stores_down.fetch_add(1, Ordering::Relaxed);
                                    self.pump();
                                }
                                Timer::after(backoff).await;
                                backoff = (backoff * 2).min(BACKOFF_MAX);
                            }
                            // Lost, or refused: the store gets this
                            // shard's whole state again, in a new batch.
                            Err(e) => {
                                log!(
                                    warn,
                                    "store write failed ({e}): writing the whole state again"
                                );
                                hub.borrow_mut().handle_store_lost();
                                break;
                            }
                        }
                    }
                    if self.store_down.replace(false) {
                        log!(info, "store writable again");
                        self.control.stores_down.fetch_sub(1, Ordering::Relaxed);
                    }
                    backoff = BACKOFF_MIN;
                    self.pump();
                }
            }
            if self.store_wake.generation() != generation {
                continue;
            }
            let woke = async {
                self.store_wake.wait_since(generation).await;
                true
            };
            let idle = async {
                Timer::after(IDLE_CHECK).await;
                false
            };
            if woke.or(idle).await {
                continue;
            }
            // Nothing to write for a while: has Redis lost what it had?
            if let Err(StoreError::Lost) = store.check().await {
                log!(
                    warn,
                    "the store lost its data: writing the whole state again"
                );
                for hub in &self.hubs {
                    hub.borrow_mut().handle_store_lost();
                }
            }
        }
    }

    /// Receives the other threads' batches for this one. Never waits for
    /// anything else (a thread's inbound queue always drains) but on a
    /// gateway node's first thread, whose inbound queue holds the other
    /// threads' messages for the hub node.
    pub async fn inbox(self: Rc<Self>, rx: Receiver<Vec<Envelope>>) {
        while let Ok(batch) = rx.recv().await {
            // It takes them as its link has room, so that their readers
            // wait (their queues fill) as its own do. Only the network is
            // waited on: the hub node reads its links without waiting on
            // this node.
            if let Some(up) = self.uplink() {
                while up.backlogged() {
                    up.drained().await;
                }
            }
            self.apply(batch);
        }
    }
}

/// Puts a batch that could not be sent back in front of `queue`.
fn put_back<T>(queue: &mut Vec<T>, mut batch: Vec<T>) {
    batch.append(queue);
    *queue = batch;
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

/// The WebSocket close status (RFC 6455, 7.4.1) for why the server closes
/// a link; the protocol's own `Close` frame, sent before, has the code.
fn websocket_status(reason: &CloseReason) -> u16 {
    match reason {
        CloseReason::ProtocolError(crate::error::WireError::FrameTooLarge { .. }) => 1009,
        CloseReason::ProtocolError(_) => 1008,
        CloseReason::SlowConsumer | CloseReason::Shutdown => 1013,
        _ => 1000,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outbox(weights: &[usize]) -> Outbox<usize> {
        let mut q = Outbox::default();
        for (i, &w) in weights.iter().enumerate() {
            q.push(i, w);
        }
        q
    }

    /// Takes every batch: (messages, bytes) of each.
    fn batches(q: &mut Outbox<usize>) -> Vec<(usize, usize)> {
        let mut all = Vec::new();
        let mut next = 0;
        while !q.is_empty() {
            let b = q.take_batch();
            assert_eq!(b.bytes, b.weights.iter().sum::<usize>());
            // In order, each message once.
            assert_eq!(b.items, (next..next + b.items.len()).collect::<Vec<_>>());
            next += b.items.len();
            all.push((b.items.len(), b.bytes));
        }
        all
    }

    #[test]
    fn batches_are_cut_by_count() {
        let mut q = outbox(&[8; 2 * BATCH_MAX + 1]);
        assert_eq!(
            batches(&mut q),
            [
                (BATCH_MAX, 8 * BATCH_MAX),
                (BATCH_MAX, 8 * BATCH_MAX),
                (1, 8)
            ]
        );
    }

    #[test]
    fn batches_are_cut_by_bytes() {
        // 32 KiB messages: 8 to a batch, far fewer than BATCH_MAX.
        let big = 32 * 1024;
        let mut q = outbox(&[big; 20]);
        let per = BATCH_BYTES / big;
        assert_eq!(
            batches(&mut q),
            [
                (per, per * big),
                (per, per * big),
                (20 - 2 * per, (20 - 2 * per) * big)
            ]
        );
        // A message that would pass the bound starts the next batch.
        let mut q = outbox(&[BATCH_BYTES - 10, 5, 6, 1]);
        assert_eq!(batches(&mut q), [(2, BATCH_BYTES - 5), (2, 7)]);
    }

    #[test]
    fn a_message_larger_than_a_batch_passes_alone() {
        let mut q = outbox(&[10, 3 * BATCH_BYTES, 10, 10]);
        assert_eq!(batches(&mut q), [(1, 10), (1, 3 * BATCH_BYTES), (2, 20)]);
    }

    #[test]
    fn a_batch_put_back_keeps_order_and_weights() {
        let mut q = outbox(&[BATCH_BYTES, 1, 2]);
        let b = q.take_batch();
        assert_eq!(b.items, [0]);
        q.put_back(b.items, b.weights);
        assert_eq!(batches(&mut q), [(1, BATCH_BYTES), (2, 3)]);
    }

    #[test]
    fn the_backlog_is_over_past_either_bound() {
        let over = |len, bytes| Load { len, bytes }.over();
        assert!(!over(BACKLOG_HIGH, BACKLOG_BYTES));
        assert!(over(BACKLOG_HIGH + 1, 0));
        assert!(over(1, BACKLOG_BYTES + 1));
        let mut load = Load::default();
        load.add(1, BACKLOG_BYTES + 1);
        assert!(load.over());
        load.sub(1, BACKLOG_BYTES + 1);
        assert_eq!(load, Load::default());
    }

    #[test]
    fn an_envelope_weighs_what_it_carries() {
        use crate::server::ConnId;
        let frame = bytes::Bytes::from(vec![0u8; 32 * 1024]);
        let conn = ConnId::new(GatewayId(0), 1);
        let send = Envelope::Gateway(ToGateway::Send {
            conn,
            frame: frame.clone(),
        });
        assert_eq!(send.weight(), size_of::<Envelope>() + 32 * 1024);
        let lost = Envelope::Gateway(ToGateway::Close {
            conn,
            reason: CloseReason::Shutdown,
        });
        assert_eq!(lost.weight(), size_of::<Envelope>());
        let body = crate::wire::Body::QueryOnline(crate::wire::QueryOnlineRequest {
            uids: vec![u64::MAX; 4096],
        });
        let request = Envelope::Hub(
            ShardId(0),
            ToHub::Request {
                conn,
                request_id: 1,
                body,
                queued: 0,
            },
        );
        // The body's encoded length (10 bytes a uid, and its header).
        let w = request.weight() - size_of::<Envelope>();
        assert!((40 * 1024..41 * 1024).contains(&w), "{w}");
    }
}
