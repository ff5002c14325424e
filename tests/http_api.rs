//! The HTTP API listener of the TCP runner, over real sockets: health and
//! readiness, `/metrics` parsed by a Prometheus text parser while two
//! clients log in and talk, `/v1/stats` and the keys, the server API's
//! routing and JSON errors, the rate limits, the body caps, the connection
//! cap and the head timeout. Requests are written by hand on
//! `std::net::TcpStream`: the connection cap, a head that never ends and a
//! chunked body past the cap need control of the socket that an HTTP client
//! library would hide. Every wait is bounded.
#![cfg(all(feature = "blocking", feature = "http-api", feature = "websocket"))]

#[macro_use]
mod adapters_support;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use adapters_support::*;
use hummer_channel::adapters::blocking::Client;
use hummer_channel::adapters::server_tcp::{
    bind, ApiOptions, Listeners, RunnerConfig, ServerHandle,
};
use hummer_channel::client::{Event, SendOptions};
use hummer_channel::server::ServerConfig;
use hummer_channel::{Message, Region, Uid};
use prometheus_parse::{Sample, Scrape, Value};

const KEY: &str = "api-key-of-the-demo-app-0123456789abcdef";
const OTHER_KEY: &str = "api-key-of-app-7-0123456789abcdef-xxxxxx";

/// A server with the TCP and API listeners; the demo app has [`KEY`], app
/// 7 has [`OTHER_KEY`].
fn spawn(api: ApiOptions) -> (ServerHandle, SocketAddr) {
    let mut config = ServerConfig::demo();
    config.apps[0].api_keys.push(KEY.into());
    let mut seven = config.apps[0].clone();
    seven.appid = 7;
    seven.api_keys = vec![OTHER_KEY.into()];
    config.apps.push(seven);
    let runner = RunnerConfig::default().with_threads(2).with_api(api);
    let any = "127.0.0.1:0".parse().unwrap();
    let listeners = Listeners::new(bind(any, &runner).unwrap())
        .with_websocket(bind(any, &runner).unwrap())
        .with_api(bind(any, &runner).unwrap());
    let server = ServerHandle::spawn_on(config, runner, listeners).unwrap();
    let api = server.api_addr().expect("an API listener");
    (server, api)
}

/// An HTTP response as read.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> serde_json::Value {
        assert_eq!(
            self.header("content-type"),
            Some("application/json"),
            "{self:?}"
        );
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

/// Reads a whole response (the server closes after it: `Connection:
/// close`; bodies have a Content-Length).
fn read_reply(mut s: TcpStream) -> Reply {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8(raw).expect("UTF-8");
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no head: {text:?}"));
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    Reply {
        status,
        headers,
        body: body.to_owned(),
    }
}

/// Sends a request with `headers` (a `Content-Length` for a non-empty body).
fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Reply {
    let mut s = TcpStream::connect(addr).unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n");
    for (n, v) in headers {
        head += &format!("{n}: {v}\r\n");
    }
    if !body.is_empty() {
        head += &format!("Content-Length: {}\r\n", body.len());
    }
    head += "\r\n";
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    read_reply(s)
}

fn get(addr: SocketAddr, path: &str) -> Reply {
    request(addr, "GET", path, &[], b"")
}

fn get_with_key(addr: SocketAddr, path: &str, key: &str) -> Reply {
    request(
        addr,
        "GET",
        path,
        &[("Authorization", &format!("apikey {key}"))],
        b"",
    )
}

fn scrape(addr: SocketAddr) -> Scrape {
    let r = get(addr, "/metrics");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    Scrape::parse(r.body.lines().map(|l| Ok(l.to_owned()))).unwrap()
}

/// The value of `metric` with these labels (all of them given).
fn value(s: &Scrape, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
    s.samples
        .iter()
        .find(|x| x.metric == metric && labels_are(x, labels))
        .map(|x| match x.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
            _ => panic!("{metric} is not a number"),
        })
}

fn labels_are(x: &Sample, labels: &[(&str, &str)]) -> bool {
    labels.iter().all(|(k, v)| x.labels.get(k) == Some(v))
}

/// Polls `/metrics` until `ok` holds of a scrape (5 s at most).
fn scrape_until(addr: SocketAddr, what: &str, ok: impl Fn(&Scrape) -> bool) -> Scrape {
    let end = Instant::now() + Duration::from_secs(5);
    loop {
        let s = scrape(addr);
        if ok(&s) {
            return s;
        }
        assert!(Instant::now() < end, "never: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn health_metrics_and_stats_follow_what_clients_do() {
    watchdog(Duration::from_secs(60));
    let (server, api) = spawn(ApiOptions::default());
    let r = get(api, "/healthz");
    assert_eq!((r.status, r.body.as_str()), (200, "ok"));
    let end = Instant::now() + Duration::from_secs(5);
    loop {
        let r = get(api, "/readyz");
        if r.status == 200 {
            assert_eq!(r.body, "ready");
            break;
        }
        assert_eq!((r.status, r.body.as_str()), (503, "starting"));
        assert!(Instant::now() < end, "never ready");
        std::thread::sleep(Duration::from_millis(50));
    }

    let before = scrape(api);
    assert_eq!(
        value(&before, "hummer_logins_total", &[("transport", "tcp")]),
        Some(0.0)
    );
    assert_eq!(
        value(&before, "hummer_connections", &[("transport", "ws")]),
        Some(0.0)
    );
    let delivered_before = value(
        &before,
        "hummer_deliveries_total",
        &[("body", "channel_message")],
    )
    .unwrap_or(0.0);

    let a = Client::connect(server.local_addr(), fast_config()).unwrap();
    let b = Client::connect(server.local_addr(), fast_config()).unwrap();
    a.login(Uid(1), None, None).unwrap();
    b.login(Uid(2), None, None).unwrap();
    let on_a = a.create_channel(Region::Cn, "room").unwrap();
    a.join_channel(on_a, attrs(&[])).unwrap();
    let on_b = b.create_channel(Region::Cn, "room").unwrap();
    b.join_channel(on_b, attrs(&[])).unwrap();
    a.send_message_to_channel(on_a, Message::new("t", "hello"), SendOptions::default())
        .unwrap();
    loop {
        match b.recv_event(EVENT_WAIT) {
            Some(Event::ChannelMessage { .. }) => break,
            Some(_) => continue,
            None => panic!("b never got the message"),
        }
    }

    let s = scrape_until(api, "two TCP logins and a channel message delivered", |s| {
        value(s, "hummer_logins_total", &[("transport", "tcp")]) == Some(2.0)
            && value(s, "hummer_deliveries_total", &[("body", "channel_message")])
                .is_some_and(|n| n > delivered_before)
    });
    assert_eq!(
        value(&s, "hummer_connections", &[("transport", "tcp")]),
        Some(2.0)
    );
    assert_eq!(
        value(
            &s,
            "hummer_connections_accepted_total",
            &[("transport", "tcp")]
        ),
        Some(2.0)
    );
    assert_eq!(value(&s, "hummer_instances", &[]), Some(2.0));
    assert_eq!(value(&s, "hummer_channels", &[]), Some(1.0));
    assert_eq!(value(&s, "hummer_channel_members", &[]), Some(2.0));
    assert_eq!(
        value(&s, "hummer_frames_in_total", &[("body", "send_to_channel")]),
        Some(1.0)
    );
    assert_eq!(
        value(&s, "hummer_connections_refused_total", &[]),
        Some(0.0)
    );
    assert!(value(&s, "hummer_queued_bytes", &[]).is_some());
    // The login latency histogram: every bucket, cumulative, +Inf last.
    let login = s
        .samples
        .iter()
        .find(|x| {
            x.metric == "hummer_request_duration_seconds" && labels_are(x, &[("op", "login")])
        })
        .expect("a login latency histogram");
    let Value::Histogram(buckets) = &login.value else {
        panic!("not a histogram: {login:?}")
    };
    assert_eq!(buckets.len(), 17);
    assert_eq!(buckets[0].less_than, 0.0001);
    assert_eq!(buckets[16].less_than, f64::INFINITY);
    assert_eq!(buckets[16].count, 2.0);
    assert!(buckets.windows(2).all(|w| w[0].count <= w[1].count));
    assert_eq!(
        value(
            &s,
            "hummer_request_duration_seconds_count",
            &[("op", "login")]
        ),
        Some(2.0)
    );
    // Every family has its HELP.
    for name in [
        "hummer_connections",
        "hummer_connections_accepted_total",
        "hummer_connections_refused_total",
        "hummer_logins_total",
        "hummer_instances",
        "hummer_channels",
        "hummer_channel_members",
        "hummer_frames_in_total",
        "hummer_deliveries_total",
        "hummer_queued_bytes",
        "hummer_closes_total",
        "hummer_refusals_total",
        "hummer_rate_limited_total",
        "hummer_resumes_total",
        "hummer_replayed_messages_total",
        "hummer_gaps_reported_total",
        "hummer_request_duration_seconds",
        "hummer_api_requests_total",
        "hummer_api_request_duration_seconds",
    ] {
        assert!(s.docs.contains_key(name), "no HELP for {name}");
    }
    if cfg!(target_os = "linux") {
        assert!(value(&s, "process_resident_memory_bytes", &[]).unwrap() > 0.0);
        assert!(value(&s, "process_open_fds", &[]).unwrap() > 0.0);
        assert!(value(&s, "process_cpu_seconds_total", &[]).is_some());
        assert!(value(&s, "process_start_time_seconds", &[]).unwrap() > 1.6e9);
    }
    assert!(
        value(
            &s,
            "hummer_api_requests_total",
            &[("route", "/metrics"), ("status", "200")]
        )
        .unwrap()
            >= 2.0
    );

    // The dashboard's JSON, for the key's app.
    let r = get_with_key(api, "/v1/stats", KEY);
    assert_eq!(r.status, 200, "{r:?}");
    let v = r.json();
    assert_eq!(v["connections"], 2);
    assert_eq!(v["logins_total"], 2);
    assert_eq!(v["messages_in_total"], 1);
    assert!(v["frames_in_total"].as_u64().unwrap() >= 5, "{v}");
    assert!(v["deliveries_total"].as_u64().unwrap() >= 2);
    assert!(v["unix_ms"].as_u64().unwrap() > 1_600_000_000_000);
    assert!(v["latency_ms"]["p50"].as_f64().unwrap() > 0.0);
    assert!(v["latency_ms"]["p99"].as_f64().unwrap() >= v["latency_ms"]["p50"].as_f64().unwrap());
    let busiest = v["busiest"].as_array().unwrap();
    assert_eq!(busiest.len(), 1, "{v}");
    assert_eq!(busiest[0]["id"], "room");
    assert_eq!(busiest[0]["appid"], 10000);
    assert_eq!(busiest[0]["members"], 2);
    assert_eq!(busiest[0]["messages"], 1);
    // Another app's key sees the totals, not the demo app's channels.
    let v = get_with_key(api, "/v1/stats", OTHER_KEY).json();
    assert_eq!(v["busiest"], serde_json::json!([]));

    // No key, a wrong key, a wrong scheme: 401 with the service's code.
    for r in [
        get(api, "/v1/stats"),
        get_with_key(api, "/v1/stats", "a-wrong-key-0123456789abcdef-0123456789"),
        request(
            api,
            "GET",
            "/v1/stats",
            &[("Authorization", &format!("Bearer {KEY}"))],
            b"",
        ),
        get(api, "/v1/channels/x/messages"),
    ] {
        assert_eq!(r.status, 401, "{r:?}");
        assert_eq!(r.header("www-authenticate"), Some("apikey"));
        assert_eq!(r.json()["code"], 1009);
    }
    // The server API's stub answers its 404 as JSON.
    let r = request(
        api,
        "POST",
        "/v1/channels/cn/room/messages?x=1",
        &[("Authorization", &format!("apikey {KEY}"))],
        br#"{"content":"hi"}"#,
    );
    // It reached the server API, which wants a message id.
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["code"], 2001);
    // Unknown routes and wrong methods: JSON errors too.
    let r = get(api, "/nope");
    assert_eq!((r.status, r.json()["code"].as_u64()), (404, Some(2004)));
    let r = request(api, "POST", "/metrics", &[], b"x");
    assert_eq!((r.status, r.header("allow")), (405, Some("GET")));
    assert_eq!(r.json()["code"], 2001);

    // The dashboard's page and files.
    let r = get(api, "/dashboard");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    for id in [
        "connections",
        "messages-per-second",
        "deliveries-per-second",
        "p50",
        "p99",
        "busiest",
    ] {
        assert!(r.body.contains(&format!("id=\"{id}\"")), "no #{id}");
    }
    assert_eq!(get(api, "/dashboard/dashboard.js").status, 200);
    assert_eq!(get(api, "/dashboard/dashboard.css").status, 200);
    assert_eq!(get(api, "/dashboard/nothing").status, 404);

    // The API's own requests are counted by route pattern, not path.
    let s = scrape(api);
    assert!(
        value(
            &s,
            "hummer_api_requests_total",
            &[("route", "/v1/stats"), ("status", "401")]
        )
        .unwrap()
            >= 3.0
    );
    // The server API's requests by their route's pattern.
    assert_eq!(
        value(
            &s,
            "hummer_api_requests_total",
            &[
                ("route", "/v1/channels/:region/:channel/messages"),
                ("status", "400")
            ]
        ),
        Some(1.0)
    );
    assert!(s
        .samples
        .iter()
        .all(|x| x.labels.get("route") != Some("/v1/channels/cn/room/messages")));
    assert!(s
        .samples
        .iter()
        .any(|x| x.metric == "hummer_api_request_duration_seconds"
            && labels_are(x, &[("route", "/v1/stats")])));

    a.close();
    b.close();
    server.shutdown();
}

#[test]
fn api_calls_are_rate_limited_per_app_and_per_address() {
    watchdog(Duration::from_secs(60));
    let (server, api) = spawn(ApiOptions::default().with_rate_limit(1, 5));
    for _ in 0..5 {
        assert_eq!(get_with_key(api, "/v1/stats", KEY).status, 200);
    }
    let r = get_with_key(api, "/v1/stats", KEY);
    assert_eq!(r.status, 429, "{r:?}");
    assert_eq!(r.json()["code"], 4003);
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry), "Retry-After: {retry}");
    // Another app has its own bucket.
    assert_eq!(get_with_key(api, "/v1/stats", OTHER_KEY).status, 200);
    // Calls without a valid key: 401, then 429 past the address's burst.
    for _ in 0..5 {
        assert_eq!(
            get_with_key(api, "/v1/stats", "guess-0123456789abcdef-0123456789abcdef").status,
            401
        );
    }
    assert_eq!(get(api, "/v1/stats").status, 429);
    // Health and metrics are not API calls: never limited.
    for _ in 0..10 {
        assert_eq!(get(api, "/healthz").status, 200);
    }
    let s = scrape(api);
    assert_eq!(
        value(
            &s,
            "hummer_rate_limited_total",
            &[("limit", "api_requests")]
        ),
        Some(2.0)
    );
    assert_eq!(
        value(
            &s,
            "hummer_api_requests_total",
            &[("route", "/v1/stats"), ("status", "429")]
        ),
        Some(2.0)
    );
    // The bucket refills.
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(get_with_key(api, "/v1/stats", KEY).status, 200);
    server.shutdown();
}

#[test]
fn bodies_are_capped_at_one_mebibyte() {
    watchdog(Duration::from_secs(60));
    let (server, api) = spawn(ApiOptions::default());
    let auth = format!("Authorization: apikey {KEY}\r\n");
    // A declared 2 MiB body: 413 before any of it is read.
    let mut s = TcpStream::connect(api).unwrap();
    write!(
        s,
        "POST /v1/channels/room/messages HTTP/1.1\r\nHost: t\r\n{auth}Content-Length: {}\r\n\r\n",
        2 * 1024 * 1024
    )
    .unwrap();
    let r = read_reply(s);
    assert_eq!(r.status, 413, "{r:?}");
    assert_eq!(r.json()["code"], 2007);
    // A chunked body is read up to the cap, then refused.
    let mut s = TcpStream::connect(api).unwrap();
    write!(
        s,
        "POST /v1/channels/room/messages HTTP/1.1\r\nHost: t\r\n{auth}Transfer-Encoding: chunked\r\n\r\n"
    )
    .unwrap();
    let chunk = vec![b'x'; 64 * 1024];
    for _ in 0..17 {
        write!(s, "{:x}\r\n", chunk.len()).unwrap();
        s.write_all(&chunk).unwrap();
        s.write_all(b"\r\n").unwrap();
    }
    let r = read_reply(s);
    assert_eq!(r.status, 413, "{r:?}");
    // A chunked body under the cap reaches the API.
    let mut s = TcpStream::connect(api).unwrap();
    write!(
        s,
        "POST /v1/channels/cn/room/messages HTTP/1.1\r\nHost: t\r\nConnection: close\r\n{auth}Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    )
    .unwrap();
    let r = read_reply(s);
    assert_eq!(r.status, 400, "the API read it: not JSON");
    assert!(r.body.contains("bad JSON"), "{r:?}");
    // A POST with no length at all.
    let r = request(
        api,
        "POST",
        "/v1/channels/room/messages",
        &[("Authorization", &format!("apikey {KEY}"))],
        b"",
    );
    assert_eq!(r.status, 411, "{r:?}");
    assert_eq!(r.json()["code"], 2007);
    server.shutdown();
}

#[test]
fn the_257th_connection_closes_the_idlest_and_slow_heads_time_out() {
    watchdog(Duration::from_secs(60));
    let (server, api) = spawn(ApiOptions::default());
    // 256 connections that send nothing (one client can open them all):
    // they must not lock the listener for the others.
    let mut open: Vec<TcpStream> = (0..256).map(|_| TcpStream::connect(api).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(200));
    // Three of them are served (keep-alive: a request each, they stay).
    for s in open.iter_mut().take(3) {
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
            .unwrap();
        let mut buf = [0; 512];
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let n = s.read(&mut buf).unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    }
    // The 257th is served: the connection idle longest (the first that
    // never sent a request) is closed for it.
    let mut extra = TcpStream::connect(api).unwrap();
    extra
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    extra
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut got = Vec::new();
    let _ = extra.read_to_end(&mut got);
    assert!(got.starts_with(b"HTTP/1.1 200"), "the 257th: {got:?}");
    let mut buf = [0; 64];
    open[3]
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    match open[3].read(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        other => panic!("the idlest connection stayed open: {other:?}"),
    }
    // The ones that made a request are still served.
    open[0]
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let n = open[0].read(&mut buf).unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    drop(open);
    // A head that never ends: closed after 10 s, not before.
    let mut slow = TcpStream::connect(api).unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n")
        .unwrap();
    let slow_since = Instant::now();
    slow.set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let mut buf = [0; 64];
    let r = slow.read(&mut buf);
    let took = slow_since.elapsed();
    assert!(matches!(r, Ok(0)) || r.is_err(), "{r:?}");
    assert!(
        took >= Duration::from_secs(10) && took < Duration::from_secs(13),
        "closed after {took:?}"
    );
    server.shutdown();
}

#[test]
fn links_are_counted_by_their_transport() {
    use hummer_channel::adapters::Endpoint;
    watchdog(Duration::from_secs(60));
    let (server, api) = spawn(ApiOptions::default());
    let ws = server.websocket_addr().unwrap();
    let url = Endpoint::parse(&format!("ws://{ws}")).unwrap();
    let over_ws = Client::connect_to(url, fast_config()).unwrap();
    over_ws.login(Uid(3), None, None).unwrap();
    let over_tcp = Client::connect(server.local_addr(), fast_config()).unwrap();
    over_tcp.login(Uid(4), None, None).unwrap();
    let s = scrape_until(api, "a ws and a tcp login", |s| {
        value(s, "hummer_logins_total", &[("transport", "ws")]) == Some(1.0)
            && value(s, "hummer_logins_total", &[("transport", "tcp")]) == Some(1.0)
    });
    for t in ["ws", "tcp"] {
        assert_eq!(
            value(&s, "hummer_connections", &[("transport", t)]),
            Some(1.0)
        );
        assert_eq!(
            value(&s, "hummer_connections_accepted_total", &[("transport", t)]),
            Some(1.0)
        );
    }
    over_ws.close();
    over_tcp.close();
    server.shutdown();
}
