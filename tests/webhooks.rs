//! Webhooks end to end: a real runner (`ServerHandle`) whose app has a hook
//! pointing at a small HTTP receiver written here with std (it records the
//! requests and answers as scripted), and blocking clients acting.
#![cfg(all(feature = "webhooks", feature = "blocking"))]

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use hummer_channel::adapters::blocking::Client;
use hummer_channel::adapters::server_tcp::{
    HookDrop, HookOutcome, RunnerConfig, ServerHandle, WebhookOptions,
};
use hummer_channel::client::{Event, SendOptions, SessionConfig, Timing};
use hummer_channel::server::{HookConfig, RateLimit, RateLimits, ServerConfig, DEMO_APPID};
use hummer_channel::{Message, Region, Uid};
use serde_json::Value;
use sha2::Sha256;

const SECRET: &str = "hook-secret-0123456789abcdef-0123456789";

/// Ends the process if a test hangs.
fn watchdog(limit: Duration) {
    thread::spawn(move || {
        thread::sleep(limit);
        eprintln!("watchdog: the test did not finish in {limit:?}");
        std::process::exit(101);
    });
}

/// One request the receiver got.
#[derive(Clone, Debug)]
struct Request {
    headers: HashMap<String, String>,
    body: String,
    json: Value,
    at: Instant,
}

impl Request {
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).map_or("", String::as_str)
    }
    fn kind(&self) -> &str {
        self.json["type"].as_str().unwrap_or("")
    }
    fn id(&self) -> &str {
        self.json["id"].as_str().unwrap_or("")
    }
}

/// What the receiver answers.
#[derive(Clone, Copy, Debug)]
enum Answer {
    Status(u16),
    /// Never answers (holds the connection until the client gives up).
    Hang,
}

#[derive(Default)]
struct State {
    requests: Vec<Request>,
    /// The next answers, in order; then 200 (or `otherwise`).
    script: VecDeque<Answer>,
    otherwise: Option<Answer>,
}

/// A test HTTP server on 127.0.0.1: records every request, answers as
/// scripted.
struct Receiver {
    addr: SocketAddr,
    state: Arc<(Mutex<State>, Condvar)>,
}

impl Receiver {
    fn start(script: &[Answer], otherwise: Option<Answer>) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new((
            Mutex::new(State {
                script: script.iter().copied().collect(),
                otherwise,
                ..State::default()
            }),
            Condvar::new(),
        ));
        let s = state.clone();
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let s = s.clone();
                thread::spawn(move || serve(stream, &s));
            }
        });
        Receiver { addr, state }
    }

    fn url(&self) -> String {
        format!("http://{}/hooks/hummer", self.addr)
    }

    fn requests(&self) -> Vec<Request> {
        self.state.0.lock().unwrap().requests.clone()
    }

    /// Waits until `done` holds for the requests so far (or `limit`
    /// passed); returns them.
    fn wait_until(&self, limit: Duration, done: impl Fn(&[Request]) -> bool) -> Vec<Request> {
        let end = Instant::now() + limit;
        let (m, cv) = &*self.state;
        let mut s = m.lock().unwrap();
        while !done(&s.requests) {
            let now = Instant::now();
            if now >= end {
                break;
            }
            s = cv.wait_timeout(s, end - now).unwrap().0;
        }
        s.requests.clone()
    }

    /// Waits for a request of `kind` for which `pick` holds.
    fn wait_for(&self, kind: &str, pick: impl Fn(&Value) -> bool) -> Request {
        let got = self.wait_until(Duration::from_secs(10), |r| {
            r.iter().any(|r| r.kind() == kind && pick(&r.json))
        });
        got.into_iter()
            .find(|r| r.kind() == kind && pick(&r.json))
            .unwrap_or_else(|| panic!("no {kind} event came; got {:?}", self.bodies()))
    }

    fn bodies(&self) -> Vec<String> {
        self.requests().into_iter().map(|r| r.body).collect()
    }

    fn count(&self, kind: &str, pick: impl Fn(&Value) -> bool) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.kind() == kind && pick(&r.json))
            .count()
    }
}

/// Serves one connection: requests one after the other (keep-alive).
fn serve(stream: TcpStream, state: &(Mutex<State>, Condvar)) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut out = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut headers = HashMap::new();
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
            }
        }
        let len: usize = headers
            .get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let body = String::from_utf8(body).unwrap();
        let json = serde_json::from_str(&body).unwrap_or(Value::Null);
        let answer = {
            let (m, cv) = state;
            let mut s = m.lock().unwrap();
            assert!(line.starts_with("POST /hooks/hummer "), "{line}");
            s.requests.push(Request {
                headers,
                body,
                json,
                at: Instant::now(),
            });
            cv.notify_all();
            s.script
                .pop_front()
                .or(s.otherwise)
                .unwrap_or(Answer::Status(200))
        };
        match answer {
            Answer::Status(code) => {
                let head = format!("HTTP/1.1 {code} X\r\ncontent-length: 2\r\n\r\nok");
                if out.write_all(head.as_bytes()).is_err() {
                    return;
                }
            }
            Answer::Hang => {
                // Until the client gives up and closes.
                let mut sink = Vec::new();
                let _ = reader.read_to_end(&mut sink);
                return;
            }
        }
    }
}

/// The demo app with a hook to `url` (messages of channels starting with
/// one of `prefixes`), a 1 s grace period, and no send rate limit to speak
/// of.
fn config(url: &str, prefixes: &[&str]) -> ServerConfig {
    let mut c = ServerConfig::demo();
    let mut hook = HookConfig::new(url, SECRET);
    for p in prefixes {
        hook = hook.with_message_prefix(*p);
    }
    c.apps[0].hook = Some(hook);
    c.presence_grace = Duration::from_secs(1);
    c.rate_limit_sends = 1_000_000;
    let mut r = RateLimits::default();
    r.sends = RateLimit::new(1_000_000, Duration::from_secs(3));
    c.rate_limits = r;
    c
}

fn spawn(config: ServerConfig, webhooks: WebhookOptions) -> ServerHandle {
    let runner = RunnerConfig::default()
        .with_threads(2)
        .with_webhooks(webhooks);
    ServerHandle::spawn_with(config, runner, "127.0.0.1:0".parse().unwrap()).unwrap()
}

/// A client that redials after `reconnect` (at the least).
fn client(addr: SocketAddr, reconnect: Duration) -> Client {
    let mut config = SessionConfig::new(DEMO_APPID);
    let mut t = Timing::default();
    t.reconnect_min = reconnect;
    t.reconnect_max = reconnect * 2;
    config.timing = t;
    Client::connect(addr, config).unwrap()
}

fn fast(addr: SocketAddr) -> Client {
    client(addr, Duration::from_millis(20))
}

fn uid_is(uid: u64) -> impl Fn(&Value) -> bool {
    move |v| v["uid"].as_u64() == Some(uid)
}

fn channel_is(id: &'static str) -> impl Fn(&Value) -> bool {
    move |v| v["channel"]["id"] == id && v["channel"]["region"] == "cn"
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Whether `r`'s signature is HMAC-SHA256(`secret`, "<timestamp>.<body>").
fn signed_with(r: &Request, secret: &str) -> bool {
    let Some(hex) = r.header("hummer-signature").strip_prefix("v1=") else {
        return false;
    };
    let Ok(sig) = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2).unwrap_or("zz"), 16))
        .collect::<Result<Vec<u8>, _>>()
    else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{}.{}", r.header("hummer-timestamp"), r.body).as_bytes());
    mac.verify_slice(&sig).is_ok()
}

/// Waits for a channel message on `c`, skipping other events.
fn next_message(c: &Client, limit: Duration) -> Option<Message> {
    let end = Instant::now() + limit;
    loop {
        let left = end.checked_duration_since(Instant::now())?;
        match c.recv_event(left)? {
            Event::ChannelMessage { message, .. } => return Some(message),
            _ => continue,
        }
    }
}

#[test]
fn online_on_login_is_signed_and_fresh() {
    watchdog(Duration::from_secs(60));
    let rx = Receiver::start(&[], None);
    let server = spawn(config(&rx.url(), &[]), WebhookOptions::default());
    let a = fast(server.local_addr());
    a.login(Uid(41), None, None).unwrap();
    let r = rx.wait_for("user.online", uid_is(41));
    assert_eq!(r.json["appid"].as_u64(), Some(u64::from(DEMO_APPID)));
    assert!(r.json["at_ms"].as_u64().unwrap() / 1000 + 5 >= now_secs());
    assert_eq!(r.header("content-type"), "application/json");
    assert_eq!(r.header("hummer-event-id"), r.id());
    assert_eq!(r.id().len(), 32, "{}", r.id());
    assert!(r.id().bytes().all(|c| c.is_ascii_hexdigit()));
    let ts: u64 = r.header("hummer-timestamp").parse().unwrap();
    assert!(ts.abs_diff(now_secs()) <= 5, "a fresh timestamp: {ts}");
    assert!(signed_with(&r, SECRET), "signature: {:?}", r.headers);
    assert!(!signed_with(&r, "another-secret-0123456789abcdef-xyz"));
    let mut forged = r.clone();
    forged.body = forged.body.replace("41", "42");
    assert!(!signed_with(&forged, SECRET), "the body is signed");
    // One event, delivered once.
    thread::sleep(Duration::from_millis(300));
    assert_eq!(rx.requests().len(), 1, "{:?}", rx.bodies());
    let stats = server.stats().hooks;
    assert_eq!(stats.deliveries("user.online", HookOutcome::Ok), 1);
    assert_eq!(stats.dropped_total(), 0);
    assert_eq!(server.hook_stats(), stats);
}

#[test]
fn offline_comes_once_after_the_grace_period_and_never_for_a_resumed_link() {
    watchdog(Duration::from_secs(60));
    let rx = Receiver::start(&[], None);
    let server = spawn(config(&rx.url(), &[]), WebhookOptions::default());
    let addr = server.local_addr();
    // 7 comes back at once (a resume); 8 not before the test ends.
    let back = fast(addr);
    let gone = client(addr, Duration::from_secs(60));
    back.login(Uid(7), None, None).unwrap();
    gone.login(Uid(8), None, None).unwrap();
    rx.wait_for("user.online", uid_is(7));
    rx.wait_for("user.online", uid_is(8));
    let dropped_at = Instant::now();
    server.drop_connections();
    let off = rx.wait_for("user.offline", uid_is(8));
    let after = off.at.duration_since(dropped_at);
    assert!(
        after >= Duration::from_millis(900),
        "offline only after the 1 s grace period, not {after:?} after the drop"
    );
    // Long past 7's grace period, and 8's offline had time to repeat.
    thread::sleep(Duration::from_secs(2));
    assert_eq!(rx.count("user.offline", uid_is(8)), 1, "{:?}", rx.bodies());
    assert_eq!(
        rx.count("user.offline", uid_is(7)),
        0,
        "a resume is no change"
    );
    assert_eq!(rx.count("user.online", uid_is(7)), 1, "{:?}", rx.bodies());
    // 7 really is back on the same instance: its link carries requests.
    back.query_users_online_status(vec![Uid(7)]).unwrap();
    // A logout is offline at once.
    back.logout().unwrap();
    let t = Instant::now();
    rx.wait_for("user.offline", uid_is(7));
    assert!(t.elapsed() < Duration::from_millis(900));
}

#[test]
fn channels_are_created_and_emptied_and_listed_channels_messages_are_events() {
    watchdog(Duration::from_secs(60));
    let rx = Receiver::start(&[], None);
    let server = spawn(config(&rx.url(), &["live-"]), WebhookOptions::default());
    let a = fast(server.local_addr());
    a.login(Uid(1), None, None).unwrap();
    let live = a.create_channel(Region::Cn, "live-1").unwrap();
    let quiet = a.create_channel(Region::Cn, "quiet").unwrap();
    a.join_channel(live, Default::default()).unwrap();
    a.join_channel(quiet, Default::default()).unwrap();
    rx.wait_for("channel.created", channel_is("live-1"));
    rx.wait_for("channel.created", channel_is("quiet"));
    a.send_message_to_channel(live, Message::new("chat", "hello"), SendOptions::default())
        .unwrap();
    a.send_message_to_channel(quiet, Message::new("chat", "psst"), SendOptions::default())
        .unwrap();
    let m = rx.wait_for("channel.message", channel_is("live-1"));
    assert_eq!(m.json["from_uid"].as_u64(), Some(1));
    assert_eq!(m.json["seq"].as_u64(), Some(1));
    assert_eq!(m.json["message_type"], "chat");
    assert_eq!(m.json["content"], "hello");
    assert_eq!(m.json["content_base64"], "aGVsbG8=");
    assert!(signed_with(&m, SECRET));
    a.leave_channel(live, Default::default()).unwrap();
    rx.wait_for("channel.emptied", channel_is("live-1"));
    thread::sleep(Duration::from_millis(300));
    assert_eq!(
        rx.count("channel.message", |_| true),
        1,
        "none for an unlisted channel: {:?}",
        rx.bodies()
    );
    assert_eq!(rx.count("channel.emptied", channel_is("quiet")), 0);
    let stats = server.hook_stats();
    assert_eq!(stats.deliveries("channel.created", HookOutcome::Ok), 2);
    assert_eq!(stats.deliveries("channel.message", HookOutcome::Ok), 1);
}

#[test]
fn a_receiver_that_fails_twice_gets_the_event_three_times_then_the_next_in_order() {
    watchdog(Duration::from_secs(60));
    let rx = Receiver::start(&[Answer::Status(500), Answer::Status(503)], None);
    // The default backoff: 0.5 s, then 1 s.
    let server = spawn(config(&rx.url(), &[]), WebhookOptions::default());
    let addr = server.local_addr();
    let a = fast(addr);
    let b = fast(addr);
    a.login(Uid(1), None, None).unwrap();
    b.login(Uid(2), None, None).unwrap();
    let got = rx.wait_until(Duration::from_secs(10), |r| r.len() >= 4);
    thread::sleep(Duration::from_secs(2));
    let got_later = rx.requests();
    assert_eq!(got_later.len(), 4, "then no more: {:?}", rx.bodies());
    let first = &got[0];
    assert_eq!(first.kind(), "user.online");
    for r in &got[..3] {
        assert_eq!(r.id(), first.id(), "the same event each time");
        assert_eq!(r.body, first.body);
        assert!(signed_with(r, SECRET));
    }
    let next = &got[3];
    assert_eq!(next.kind(), "user.online");
    assert_ne!(next.id(), first.id());
    assert_ne!(next.json["uid"], first.json["uid"], "the other uid, after");
    let gaps = [
        got[1].at.duration_since(got[0].at),
        got[2].at.duration_since(got[1].at),
    ];
    assert!(
        gaps[0] >= Duration::from_millis(450) && gaps[1] >= Duration::from_millis(950),
        "backoff 0.5 s then 1 s: {gaps:?}"
    );
    let s = server.hook_stats();
    assert_eq!(s.deliveries("user.online", HookOutcome::Retry), 2);
    assert_eq!(s.deliveries("user.online", HookOutcome::Ok), 2);
    assert_eq!(s.deliveries_total(HookOutcome::Failed), 0);
    assert_eq!(s.dropped_total(), 0);
    assert_eq!(s.queue_len(), 0);
}

/// Two clients in a channel exchange `n` messages; all must arrive within
/// `limit`. The clients are returned (still logged in).
fn exchange(addr: SocketAddr, n: usize, limit: Duration) -> (Client, Client) {
    let a = fast(addr);
    let b = fast(addr);
    a.login(Uid(100), None, None).unwrap();
    b.login(Uid(200), None, None).unwrap();
    let ca = a.create_channel(Region::Cn, "live-load").unwrap();
    let cb = b.create_channel(Region::Cn, "live-load").unwrap();
    a.join_channel(ca, Default::default()).unwrap();
    b.join_channel(cb, Default::default()).unwrap();
    let start = Instant::now();
    let sender = thread::spawn(move || {
        for i in 0..n {
            let m = Message::new("chat", format!("m{i}"));
            a.send_message_to_channel(ca, m, SendOptions::default())
                .unwrap();
        }
        a
    });
    for i in 0..n {
        let left = limit.saturating_sub(start.elapsed());
        let m = next_message(&b, left)
            .unwrap_or_else(|| panic!("message {i} of {n} not there within {limit:?}"));
        assert_eq!(&m.content[..], format!("m{i}").as_bytes());
    }
    let a = sender.join().unwrap();
    eprintln!("{n} messages in {:?}", start.elapsed());
    (a, b)
}

#[test]
fn a_receiver_that_never_answers_does_not_slow_the_server_and_drops_are_counted() {
    watchdog(Duration::from_secs(90));
    let rx = Receiver::start(&[], Some(Answer::Hang));
    let options = WebhookOptions::default()
        .with_queue_capacity(8)
        .with_max_attempts(2)
        .with_timeout(Duration::from_secs(3))
        .with_backoff(Duration::from_millis(100), Duration::from_millis(100))
        .with_shutdown_grace(Duration::from_secs(1));
    let server = spawn(config(&rx.url(), &["live-"]), options);
    let _clients = exchange(server.local_addr(), 200, Duration::from_secs(10));
    let s = server.hook_stats();
    // 2 online, 1 created, 200 messages: far more than one in flight and 8
    // waiting.
    assert!(
        s.dropped(HookDrop::QueueFull) >= 150,
        "a full queue drops: {s:?}"
    );
    assert!(s.queue_len() <= 8, "{s:?}");
    // The hung attempts time out: retried, then failed.
    let end = Instant::now() + Duration::from_secs(10);
    let mut s = server.hook_stats();
    while s.deliveries_total(HookOutcome::Failed) < 1 && Instant::now() < end {
        thread::sleep(Duration::from_millis(50));
        s = server.hook_stats();
    }
    assert!(s.deliveries_total(HookOutcome::Retry) >= 1, "{s:?}");
    assert!(s.deliveries_total(HookOutcome::Failed) >= 1, "{s:?}");
    assert!(s.dropped(HookDrop::GaveUp) >= 1, "{s:?}");
    assert_eq!(s.deliveries_total(HookOutcome::Ok), 0);
    assert!(rx.requests().len() >= 2, "the receiver was tried");
    // Shutdown does not wait for the hung deliveries past its grace period
    // (1 s here), though an attempt under way may have up to 3 s left.
    let t = Instant::now();
    server.shutdown();
    assert!(
        t.elapsed() < Duration::from_millis(2500),
        "shutdown took {:?}",
        t.elapsed()
    );
}

#[test]
fn a_receiver_that_is_down_does_not_slow_the_server_and_failures_are_counted() {
    watchdog(Duration::from_secs(90));
    // A port nobody listens on: connections are refused.
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hooks/hummer", closed.local_addr().unwrap());
    drop(closed);
    let options = WebhookOptions::default()
        .with_queue_capacity(16)
        .with_max_attempts(3)
        .with_backoff(Duration::from_millis(20), Duration::from_millis(40));
    let server = spawn(config(&url, &["live-"]), options);
    let _clients = exchange(server.local_addr(), 200, Duration::from_secs(10));
    let end = Instant::now() + Duration::from_secs(10);
    let mut s = server.hook_stats();
    while s.queue_len() > 0 && Instant::now() < end {
        thread::sleep(Duration::from_millis(50));
        s = server.hook_stats();
    }
    thread::sleep(Duration::from_millis(300));
    let s = server.hook_stats();
    assert_eq!(s.deliveries_total(HookOutcome::Ok), 0, "{s:?}");
    let gave_up = s.dropped(HookDrop::GaveUp);
    assert!(gave_up >= 1, "{s:?}");
    assert_eq!(
        s.deliveries_total(HookOutcome::Failed),
        gave_up,
        "one failed attempt per event given up: {s:?}"
    );
    assert_eq!(
        s.deliveries_total(HookOutcome::Retry),
        2 * gave_up,
        "three attempts per event: {s:?}"
    );
    assert_eq!(s.deliveries("channel.message", HookOutcome::Ok), 0);
    // Every event is accounted for: 2 online, 1 created, 200 messages.
    assert_eq!(
        gave_up + s.dropped(HookDrop::QueueFull),
        203,
        "delivered or dropped, never lost silently: {s:?}"
    );
}

/// The deliveries are in `/metrics` when the API listener is on.
#[cfg(feature = "http-api")]
#[test]
fn deliveries_and_drops_are_in_the_metrics() {
    use hummer_channel::adapters::server_tcp::{bind, Listeners};
    watchdog(Duration::from_secs(60));
    let rx = Receiver::start(&[], None);
    let runner = RunnerConfig::default().with_threads(2);
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let listeners =
        Listeners::new(bind(any, &runner).unwrap()).with_api(bind(any, &runner).unwrap());
    let server = ServerHandle::spawn_on(config(&rx.url(), &[]), runner, listeners).unwrap();
    let a = fast(server.local_addr());
    a.login(Uid(43), None, None).unwrap();
    rx.wait_for("user.online", uid_is(43));
    let scrape = || {
        let mut s = TcpStream::connect(server.api_addr().unwrap()).unwrap();
        write!(
            s,
            "GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        text
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let want = r#"hummer_hook_deliveries_total{event="user.online",outcome="ok"} 1"#;
    let mut text = scrape();
    while !text.contains(want) {
        assert!(Instant::now() < deadline, "{text}");
        thread::sleep(Duration::from_millis(50));
        text = scrape();
    }
    assert!(
        text.contains(r#"hummer_hook_dropped_total{reason="queue_full"} 0"#),
        "{text}"
    );
    assert!(text.contains("hummer_hook_queue 0"), "{text}");
}

/// Events are bounded by bytes too: large messages to a receiver that
/// hangs fill the byte budget long before the event count.
#[test]
fn a_queue_is_bounded_by_bytes_as_well_as_by_events() {
    watchdog(Duration::from_secs(60));
    let rx = Receiver::start(&[], Some(Answer::Hang));
    let options = WebhookOptions::default()
        .with_queue_capacity(10_000)
        .with_max_queued_bytes(64 * 1024)
        .with_timeout(Duration::from_secs(5))
        .with_shutdown_grace(Duration::from_millis(200));
    let server = spawn(config(&rx.url(), &["big-"]), options);
    let a = fast(server.local_addr());
    a.login(Uid(7), None, None).unwrap();
    let ch = a.create_channel(Region::Cn, "big-room").unwrap();
    a.join_channel(ch, Default::default()).unwrap();
    let content = "x".repeat(8 * 1024);
    for _ in 0..40 {
        let m = Message::new("chat", content.clone());
        a.send_message_to_channel(ch, m, SendOptions::default())
            .unwrap();
    }
    let end = Instant::now() + Duration::from_secs(10);
    let mut s = server.hook_stats();
    while s.dropped(HookDrop::QueueFull) < 30 && Instant::now() < end {
        thread::sleep(Duration::from_millis(20));
        s = server.hook_stats();
    }
    // 64 KiB hold 7 of these events (8 KiB and a share each), one more is
    // in flight: of the 40 messages, at least 30 were dropped, counted.
    let dropped = s.dropped(HookDrop::QueueFull);
    assert!((30..=40).contains(&dropped), "{s:?}");
    assert!(s.queue_len() <= 8, "{s:?}");
}
