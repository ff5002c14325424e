//! Delivers the apps' events to their backends (webhooks,
//! `docs/webhooks.md`). The runner's threads hand each event their hub
//! shards queue ([`Hub::poll_hook`](crate::server::Hub::poll_hook)) to the
//! app's bounded queue without ever waiting ([`Hooks::send`]: a full queue
//! drops the event, counted); one delivery thread per app with a hook POSTs
//! them, signed, in order, at least once:
//!
//! - a 2xx answer is a success; anything else (another status, a refused
//!   connection, a timeout) is tried again after 0.5 s, 1 s, 2 s, ... (at
//!   most 30 s), for [`WebhookOptions::max_attempts`] attempts in all, then
//!   dropped (counted and logged);
//! - an event being retried holds the app's next ones back (order), so a
//!   receiver that is down fills the queue behind it, which then drops;
//! - at shutdown the pending events get [`WebhookOptions::shutdown_grace`]
//!   to go; the rest are counted as dropped.
//!
//! A delivery can be repeated (an answer lost on the way): receivers dedupe
//! by the event id.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Condvar, Mutex, PoisonError, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::server::{HookConfig, HookEvent, HookEventKind, ServerConfig};

/// How the runner delivers the apps' events ([`RunnerConfig::webhooks`](super::RunnerConfig::webhooks)).
///
/// ```
/// use std::time::Duration;
/// use hummer_channel::adapters::server_tcp::WebhookOptions;
///
/// let o = WebhookOptions::default().with_max_attempts(3);
/// assert_eq!(o.timeout, Duration::from_secs(5));
/// ```
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookOptions {
    /// Events waiting per app at most; one more is dropped (counted as
    /// [`HookDrop::QueueFull`]). Default 10_000.
    pub queue_capacity: usize,
    /// Bytes of events waiting per app at most (a message event weighs its
    /// content); past it events are dropped like in a full queue. Default
    /// 16 MiB: 10_000 events of 32 KiB messages would otherwise hold 320 MB.
    pub max_queued_bytes: usize,
    /// Attempts per event in all (at least 1), after which it is dropped
    /// ([`HookDrop::GaveUp`]). Default 6.
    pub max_attempts: u32,
    /// One attempt's time limit (connect, send, answer). Default 5 s.
    pub timeout: Duration,
    /// The wait before the second attempt; it doubles before each next one
    /// up to [`WebhookOptions::max_backoff`]. Default 0.5 s.
    pub first_backoff: Duration,
    /// The longest wait between two attempts. Default 30 s.
    pub max_backoff: Duration,
    /// How long the pending events may still take at shutdown; the rest is
    /// dropped ([`HookDrop::Shutdown`]). Default 2 s.
    pub shutdown_grace: Duration,
}

impl Default for WebhookOptions {
    fn default() -> Self {
        WebhookOptions {
            queue_capacity: 10_000,
            max_queued_bytes: 16 << 20,
            max_attempts: 6,
            timeout: Duration::from_secs(5),
            first_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(2),
        }
    }
}

impl WebhookOptions {
    /// Sets [`WebhookOptions::max_queued_bytes`].
    pub fn with_max_queued_bytes(mut self, n: usize) -> Self {
        self.max_queued_bytes = n;
        self
    }

    /// Sets [`WebhookOptions::queue_capacity`].
    pub fn with_queue_capacity(mut self, n: usize) -> Self {
        self.queue_capacity = n;
        self
    }

    /// Sets [`WebhookOptions::max_attempts`].
    pub fn with_max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n;
        self
    }

    /// Sets [`WebhookOptions::timeout`].
    pub fn with_timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    /// Sets [`WebhookOptions::first_backoff`] and
    /// [`WebhookOptions::max_backoff`].
    pub fn with_backoff(mut self, first: Duration, max: Duration) -> Self {
        self.first_backoff = first;
        self.max_backoff = max;
        self
    }

    /// Sets [`WebhookOptions::shutdown_grace`].
    pub fn with_shutdown_grace(mut self, t: Duration) -> Self {
        self.shutdown_grace = t;
        self
    }

    /// The wait after failed attempt `n` (1-based).
    fn backoff(&self, n: u32) -> Duration {
        let factor = 1u32.checked_shl(n.saturating_sub(1)).unwrap_or(u32::MAX);
        self.first_backoff
            .saturating_mul(factor)
            .min(self.max_backoff)
    }
}

/// The event types, in the order [`HookStats`] counts them.
pub const HOOK_EVENT_TYPES: [&str; 5] = [
    "user.online",
    "user.offline",
    "channel.created",
    "channel.emptied",
    "channel.message",
];

/// How one delivery attempt ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HookOutcome {
    /// A 2xx answer: the event is delivered.
    Ok,
    /// It failed and will be tried again.
    Retry,
    /// It failed and was the event's last (the event is dropped).
    Failed,
}

impl HookOutcome {
    /// Every outcome.
    pub const ALL: [HookOutcome; 3] = [HookOutcome::Ok, HookOutcome::Retry, HookOutcome::Failed];

    /// `ok`, `retry`, `failed` (a metrics label).
    pub fn as_str(self) -> &'static str {
        match self {
            HookOutcome::Ok => "ok",
            HookOutcome::Retry => "retry",
            HookOutcome::Failed => "failed",
        }
    }
}

/// Why an event was dropped, undelivered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HookDrop {
    /// Its app's queue was full (the receiver is slow or down).
    QueueFull,
    /// Every attempt failed.
    GaveUp,
    /// The server shut down before it could go.
    Shutdown,
}

impl HookDrop {
    /// Every reason.
    pub const ALL: [HookDrop; 3] = [HookDrop::QueueFull, HookDrop::GaveUp, HookDrop::Shutdown];

    /// `queue_full`, `gave_up`, `shutdown` (a metrics label).
    pub fn as_str(self) -> &'static str {
        match self {
            HookDrop::QueueFull => "queue_full",
            HookDrop::GaveUp => "gave_up",
            HookDrop::Shutdown => "shutdown",
        }
    }
}

/// The webhook counters at one moment, since the runner started
/// ([`ServerHandle::hook_stats`](super::ServerHandle::hook_stats),
/// [`RunnerStats::hooks`](super::RunnerStats::hooks)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HookStats {
    deliveries: [[u64; 3]; 5],
    dropped: [u64; 3],
    queue_len: usize,
}

impl HookStats {
    /// Delivery attempts of events of type `event` (one of
    /// [`HOOK_EVENT_TYPES`]) that ended with `outcome`.
    pub fn deliveries(&self, event: &str, outcome: HookOutcome) -> u64 {
        HOOK_EVENT_TYPES
            .iter()
            .position(|t| *t == event)
            .map_or(0, |i| self.deliveries[i][outcome as usize])
    }

    /// Delivery attempts of every type that ended with `outcome`.
    pub fn deliveries_total(&self, outcome: HookOutcome) -> u64 {
        self.deliveries.iter().map(|d| d[outcome as usize]).sum()
    }

    /// Events dropped undelivered for `reason`.
    pub fn dropped(&self, reason: HookDrop) -> u64 {
        self.dropped[reason as usize]
    }

    /// Events dropped undelivered, for any reason.
    pub fn dropped_total(&self) -> u64 {
        self.dropped.iter().sum()
    }

    /// Events waiting in the apps' queues now (not counting the one each
    /// app's delivery thread is sending).
    pub fn queue_len(&self) -> usize {
        self.queue_len
    }
}

/// The live counters behind [`HookStats`].
#[derive(Default)]
struct Counters {
    deliveries: [[AtomicU64; 3]; 5],
    dropped: [AtomicU64; 3],
    queued: AtomicUsize,
}

impl Counters {
    fn delivery(&self, kind: &HookEventKind, outcome: HookOutcome) {
        let i = HOOK_EVENT_TYPES
            .iter()
            .position(|t| *t == kind.name())
            .unwrap_or(0);
        self.deliveries[i][outcome as usize].fetch_add(1, Ordering::Relaxed);
    }

    fn dropped(&self, reason: HookDrop, n: u64) {
        self.dropped[reason as usize].fetch_add(n, Ordering::Relaxed);
    }

    fn snapshot(&self) -> HookStats {
        let mut s = HookStats {
            queue_len: self.queued.load(Ordering::Relaxed),
            ..HookStats::default()
        };
        for (d, c) in s.deliveries.iter_mut().zip(&self.deliveries) {
            for (d, c) in d.iter_mut().zip(c) {
                *d = c.load(Ordering::Relaxed);
            }
        }
        for (d, c) in s.dropped.iter_mut().zip(&self.dropped) {
            *d = c.load(Ordering::Relaxed);
        }
        s
    }
}

/// The shutdown deadline, which delivery threads sleeping between two
/// attempts wake for.
#[derive(Default)]
struct Stop {
    deadline: Mutex<Option<Instant>>,
    wake: Condvar,
}

impl Stop {
    fn deadline(&self) -> Option<Instant> {
        *self.deadline.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn passed(&self) -> bool {
        self.deadline().is_some_and(|d| Instant::now() >= d)
    }

    /// Sleeps until `until` or the deadline, whichever is first.
    fn sleep_until(&self, until: Instant) {
        let mut deadline = self.deadline.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            let end = deadline.map_or(until, |d| d.min(until));
            let now = Instant::now();
            if now >= end {
                return;
            }
            deadline = self
                .wake
                .wait_timeout(deadline, end - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

/// What the runner's threads share for webhooks: the apps' queues, the
/// delivery threads, the counters. Lives in the runner's `Control`.
#[derive(Default)]
pub(super) struct Hooks {
    /// Per appid, its queue's sending side (empty: no app has a hook, or
    /// the runner is not running).
    queues: RwLock<HashMap<u32, AppQueue>>,
    workers: Mutex<Vec<JoinHandle<()>>>,
    counters: Arc<Counters>,
    stop: Arc<Stop>,
    /// Queue-full drops not logged yet, and when the last log was.
    unlogged: AtomicU64,
    last_log: Mutex<Option<Instant>>,
}

/// One app's queue: its sending side, and the bytes it holds (its
/// delivery thread takes them off as it takes events).
struct AppQueue {
    tx: SyncSender<HookEvent>,
    bytes: Arc<AtomicUsize>,
    max_bytes: usize,
}

/// What an event weighs in [`WebhookOptions::max_queued_bytes`]: its
/// content, and a fixed share for the rest.
fn event_bytes(event: &HookEvent) -> usize {
    const FIXED: usize = 256;
    match &event.kind {
        HookEventKind::ChannelMessage {
            content,
            channel,
            kind,
            ..
        } => FIXED + content.len() + channel.channel_id.len() + kind.len(),
        _ => FIXED,
    }
}

/// How long past the shutdown grace a delivery thread may take to notice.
const STOP_SLACK: Duration = Duration::from_millis(200);

/// At most one warning per this long about full queues.
const DROP_LOG_EVERY: Duration = Duration::from_secs(10);

impl Hooks {
    /// Starts a delivery thread and a queue for every app of `config` with
    /// a hook.
    pub fn start(&self, config: &ServerConfig, options: &super::RunnerConfig) {
        let options = &options.webhooks;
        let ids = Arc::new(EventIds::new());
        let mut queues = self.queues.write().unwrap_or_else(PoisonError::into_inner);
        let mut workers = self.workers.lock().unwrap_or_else(PoisonError::into_inner);
        for app in &config.apps {
            let Some(hook) = &app.hook else { continue };
            let (tx, rx) = sync_channel(options.queue_capacity.max(1));
            let bytes = Arc::new(AtomicUsize::new(0));
            let worker = Worker {
                appid: app.appid,
                hook: hook.clone(),
                options: options.clone(),
                counters: self.counters.clone(),
                stop: self.stop.clone(),
                ids: ids.clone(),
            };
            let taken = bytes.clone();
            match std::thread::Builder::new()
                .name(format!("hummer-hook-{}", app.appid))
                .spawn(move || worker.run(rx, taken))
            {
                Ok(t) => {
                    workers.push(t);
                    let max_bytes = options.max_queued_bytes;
                    let queue = AppQueue {
                        tx,
                        bytes,
                        max_bytes,
                    };
                    queues.insert(app.appid, queue);
                }
                Err(e) => log!(
                    error,
                    "app {}: cannot start its webhook thread ({e}): its events are dropped",
                    app.appid
                ),
            }
        }
    }

    /// Queues `event` for its app's delivery thread, never waiting: a full
    /// queue drops it (counted, logged at most every 10 s).
    pub fn send(&self, event: HookEvent) {
        let queues = self.queues.read().unwrap_or_else(PoisonError::into_inner);
        let Some(q) = queues.get(&event.appid) else {
            return;
        };
        let size = event_bytes(&event);
        // Counted before the send, so the worker never takes off more than
        // was put on.
        let held = q.bytes.fetch_add(size, Ordering::Relaxed);
        self.counters.queued.fetch_add(1, Ordering::Relaxed);
        let sent = match held.saturating_add(size) > q.max_bytes {
            true => Err(event),
            false => q.tx.try_send(event).map_err(|e| match e {
                TrySendError::Full(e) | TrySendError::Disconnected(e) => e,
            }),
        };
        match sent {
            Ok(()) => {}
            Err(e) => {
                q.bytes.fetch_sub(size, Ordering::Relaxed);
                self.counters.queued.fetch_sub(1, Ordering::Relaxed);
                self.counters.dropped(HookDrop::QueueFull, 1);
                self.unlogged.fetch_add(1, Ordering::Relaxed);
                self.log_drops(e.appid);
            }
        }
    }

    /// Logs the queue-full drops since the last such log, if that was long
    /// enough ago.
    fn log_drops(&self, appid: u32) {
        let Ok(mut last) = self.last_log.try_lock() else {
            return;
        };
        let now = Instant::now();
        if last.is_some_and(|t| now.duration_since(t) < DROP_LOG_EVERY) {
            return;
        }
        *last = Some(now);
        let n = self.unlogged.swap(0, Ordering::Relaxed);
        log!(
            warn,
            "webhooks: {n} event(s) dropped, their app's queue being full (app {appid}'s receiver is slow or down)"
        );
        let _ = (n, appid);
    }

    /// Stops the delivery threads: the pending events get `grace` to go,
    /// the rest is counted as dropped. Blocks until the threads ended, or
    /// `grace` passed: a thread still in an attempt then is left to end by
    /// itself when that attempt does (it counts its event as dropped).
    pub fn stop(&self, grace: Duration) {
        let deadline = Instant::now() + grace;
        {
            let mut d = self
                .stop
                .deadline
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            *d = Some(deadline);
            self.stop.wake.notify_all();
        }
        // Their queues end: a thread ends once it sent (or dropped) the rest.
        self.queues
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        let workers =
            std::mem::take(&mut *self.workers.lock().unwrap_or_else(PoisonError::into_inner));
        for t in workers {
            while !t.is_finished() && Instant::now() < deadline + STOP_SLACK {
                std::thread::sleep(Duration::from_millis(10));
            }
            if t.is_finished() {
                let _ = t.join();
            }
        }
    }

    /// The counters now.
    pub fn stats(&self) -> HookStats {
        self.counters.snapshot()
    }
}

/// Ids unique to each event of this run: a random prefix for the run and a
/// counter.
struct EventIds {
    run: u64,
    next: AtomicU64,
}

impl EventIds {
    fn new() -> EventIds {
        let mut h = RandomState::new().build_hasher();
        h.write_u128(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        h.write_u32(std::process::id());
        EventIds {
            run: h.finish(),
            next: AtomicU64::new(1),
        }
    }

    fn next(&self) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        format!("{:016x}{n:016x}", self.run)
    }
}

/// One app's delivery thread.
struct Worker {
    appid: u32,
    hook: HookConfig,
    options: WebhookOptions,
    counters: Arc<Counters>,
    stop: Arc<Stop>,
    ids: Arc<EventIds>,
}

impl Worker {
    fn run(self, rx: Receiver<HookEvent>, bytes: Arc<AtomicUsize>) {
        let agent = agent(&self.hook.url, &self.options);
        while let Ok(event) = rx.recv() {
            bytes.fetch_sub(event_bytes(&event), Ordering::Relaxed);
            self.counters.queued.fetch_sub(1, Ordering::Relaxed);
            if self.stop.passed() {
                self.counters.dropped(HookDrop::Shutdown, 1);
                continue;
            }
            self.deliver(&agent, &event);
        }
    }

    /// Sends `event` until it is delivered or given up.
    fn deliver(&self, agent: &ureq::Agent, event: &HookEvent) {
        let id = self.ids.next();
        let body = body(&id, event);
        let attempts = self.options.max_attempts.max(1);
        for n in 1..=attempts {
            let mut timeout = self.options.timeout;
            if let Some(d) = self.stop.deadline() {
                timeout = timeout.min(d.saturating_duration_since(Instant::now()));
            }
            let result = post(agent, &self.hook, &id, &body, timeout);
            let Err(why) = result else {
                self.counters.delivery(&event.kind, HookOutcome::Ok);
                return;
            };
            let last = n == attempts;
            let wait = self.options.backoff(n);
            let resume = Instant::now() + wait;
            let cut = self.stop.deadline().is_some_and(|d| resume >= d);
            if last || cut {
                self.counters.delivery(&event.kind, HookOutcome::Failed);
                let reason = if last {
                    HookDrop::GaveUp
                } else {
                    HookDrop::Shutdown
                };
                self.counters.dropped(reason, 1);
                log!(
                    warn,
                    "webhooks: app {}: event {id} ({}) dropped after {n} attempt(s): {why}",
                    self.appid,
                    event.kind.name()
                );
                return;
            }
            self.counters.delivery(&event.kind, HookOutcome::Retry);
            log!(
                debug,
                "webhooks: app {}: event {id} attempt {n} failed ({why}); next in {wait:?}",
                self.appid
            );
            let _ = &why;
            self.stop.sleep_until(resume);
        }
    }
}

/// The app's HTTP client: no redirect followed (a 3xx is a failure), any
/// status answered as a response, the system's root certificates.
fn agent(url: &str, options: &WebhookOptions) -> ureq::Agent {
    use ureq::tls::{Certificate, RootCerts, TlsConfig, TlsProvider};
    let mut tls = TlsConfig::builder()
        .provider(TlsProvider::Rustls)
        .unversioned_rustls_crypto_provider(Arc::new(rustls::crypto::ring::default_provider()));
    if url.starts_with("https://") {
        let found = rustls_native_certs::load_native_certs();
        if found.certs.is_empty() {
            log!(
                warn,
                "webhooks: no system root certificate found ({:?}): {url} will not verify",
                found.errors
            );
        }
        let roots: Vec<Certificate<'static>> = found
            .certs
            .iter()
            .map(|c| Certificate::from_der(c.as_ref()).to_owned())
            .collect();
        tls = tls.root_certs(RootCerts::new_with_certs(&roots));
    }
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_global(Some(options.timeout))
        .user_agent(concat!("hummer-webhooks/", env!("CARGO_PKG_VERSION")))
        .tls_config(tls.build())
        .build()
        .into()
}

/// One attempt: `Ok` on a 2xx answer, else why not.
fn post(
    agent: &ureq::Agent,
    hook: &HookConfig,
    id: &str,
    body: &str,
    timeout: Duration,
) -> Result<(), String> {
    let timestamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let signature = sign(hook.secret.as_bytes(), timestamp, body);
    let response = agent
        .post(&hook.url)
        .header("Content-Type", "application/json")
        .header("Hummer-Event-Id", id)
        .header("Hummer-Timestamp", timestamp.to_string())
        .header("Hummer-Signature", format!("v1={signature}"))
        .config()
        .timeout_global(Some(timeout))
        .build()
        .send(body.as_bytes())
        .map_err(|e| e.to_string())?;
    let status = response.status();
    // Read (a little of) the answer, so that the connection can be reused.
    let mut response = response;
    let _ = response
        .body_mut()
        .with_config()
        .limit(64 * 1024)
        .read_to_vec();
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("answered {status}"))
    }
}

/// The lowercase hex HMAC-SHA256 of `"<timestamp>.<body>"` with `secret`.
pub(crate) fn sign(secret: &[u8], timestamp: u64, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    hex(&mac.finalize().into_bytes())
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// The JSON body of `event`, whose id is `id`.
fn body(id: &str, event: &HookEvent) -> String {
    use serde_json::{json, Map, Value};
    let mut o = Map::new();
    o.insert("id".into(), json!(id));
    o.insert("type".into(), json!(event.kind.name()));
    o.insert("appid".into(), json!(event.appid));
    o.insert("at_ms".into(), json!(event.at_ms));
    let channel =
        |c: &crate::types::ChannelKey| json!({ "region": c.region.as_str(), "id": c.channel_id });
    match &event.kind {
        HookEventKind::UserOnline { uid } | HookEventKind::UserOffline { uid } => {
            o.insert("uid".into(), json!(uid));
        }
        HookEventKind::ChannelCreated { channel: c }
        | HookEventKind::ChannelEmptied { channel: c } => {
            o.insert("channel".into(), channel(c));
        }
        HookEventKind::ChannelMessage {
            channel: c,
            from_uid,
            seq,
            kind,
            content,
        } => {
            o.insert("channel".into(), channel(c));
            o.insert("from_uid".into(), json!(from_uid));
            o.insert("seq".into(), json!(seq));
            o.insert("message_type".into(), json!(kind));
            o.insert(
                "content_base64".into(),
                json!(base64::engine::general_purpose::STANDARD.encode(content)),
            );
            if let Ok(text) = std::str::from_utf8(content) {
                o.insert("content".into(), json!(text));
            }
        }
    }
    Value::Object(o).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{ChannelKey, Region};

    #[test]
    fn the_backoff_doubles_up_to_its_cap() {
        let o = WebhookOptions::default();
        let waits: Vec<u64> = (1..=8).map(|n| o.backoff(n).as_millis() as u64).collect();
        assert_eq!(waits, [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000]);
        assert_eq!(o.backoff(100), Duration::from_secs(30));
    }

    #[test]
    fn a_signature_is_the_hmac_of_the_timestamp_and_the_body() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        assert_eq!(sign(b"Jefe", 0, "").len(), 64, "32 bytes in lowercase hex");
        let mut mac = Hmac::<Sha256>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"what do ya want for nothing?");
        assert_eq!(
            hex(&mac.finalize().into_bytes()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        let mut mac = Hmac::<Sha256>::new_from_slice(b"k").unwrap();
        mac.update(b"17.{}");
        assert_eq!(sign(b"k", 17, "{}"), hex(&mac.finalize().into_bytes()));
    }

    #[test]
    fn bodies_carry_the_kinds_fields() {
        let e = |kind| HookEvent {
            appid: 7,
            at_ms: 99,
            kind,
        };
        let v: serde_json::Value =
            serde_json::from_str(&body("ab", &e(HookEventKind::UserOffline { uid: 5 }))).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"id": "ab", "type": "user.offline", "appid": 7, "at_ms": 99, "uid": 5})
        );
        let msg = |content: &'static [u8]| {
            e(HookEventKind::ChannelMessage {
                channel: ChannelKey::new(Region::Us, "live-1"),
                from_uid: 3,
                seq: 4,
                kind: "chat".into(),
                content: bytes::Bytes::from_static(content),
            })
        };
        let v: serde_json::Value = serde_json::from_str(&body("c", &msg(b"hi"))).unwrap();
        assert_eq!(
            v["channel"],
            serde_json::json!({"region": "us", "id": "live-1"})
        );
        assert_eq!(v["content"], "hi");
        assert_eq!(v["content_base64"], "aGk=");
        assert_eq!(v["message_type"], "chat");
        assert_eq!(
            (v["from_uid"].as_u64(), v["seq"].as_u64()),
            (Some(3), Some(4))
        );
        let v: serde_json::Value = serde_json::from_str(&body("c", &msg(&[0xff, 0]))).unwrap();
        assert!(v.get("content").is_none(), "not UTF-8: base64 only");
        assert_eq!(v["content_base64"], "/wA=");
    }

    #[test]
    fn ids_are_distinct_hex() {
        let ids = EventIds::new();
        let (a, b) = (ids.next(), ids.next());
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
    }
}
