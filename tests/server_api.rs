//! The server API end to end (`docs/api.md`): real HTTP requests to a
//! running server's API listener, with Rust clients on its TCP listener
//! seeing what the backend does; every documented error; and
//! `docs/openapi.json` describing exactly the routes the server has.
#![cfg(all(feature = "blocking", feature = "http-api"))]

#[macro_use]
mod adapters_support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use adapters_support::*;
use hummer_channel::adapters::blocking::Client;
use hummer_channel::adapters::server_tcp::{
    bind, Listeners, RunnerConfig, ServerHandle, API_ROUTES,
};
use hummer_channel::client::{
    AttributeOptions, ConnectionReason, ConnectionState, Event, SendOptions,
};
use hummer_channel::server::{AppConfig, ServerConfig, DEMO_APPID};
use hummer_channel::{ErrorCode, Message, Region, Uid};
use serde_json::{json, Value};

#[macro_use]
#[path = "adapters_support/blocking.rs"]
mod blocking_harness;
use blocking_harness::next_event;

const KEY: &str = "test-api-key-0123456789-abcdefghijklmnop";
const OTHER_KEY: &str = "other-app-key-0123456789-abcdefghijklmno";

/// A server of the demo app (with `KEY`) and app 7 (with `OTHER_KEY`), on
/// `threads` threads, with its API listener.
fn spawn(threads: usize) -> ServerHandle {
    let mut config = ServerConfig::demo();
    config.apps[0].api_keys.push(KEY.into());
    config
        .apps
        .push(AppConfig::with_secret(7, "s".repeat(32)).with_api_key(OTHER_KEY));
    config.presence_grace = Duration::from_secs(1);
    let runner = RunnerConfig::default().with_threads(threads);
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let listeners =
        Listeners::new(bind(any, &runner).unwrap()).with_api(bind(any, &runner).unwrap());
    ServerHandle::spawn_on(config, runner, listeners).unwrap()
}

/// One HTTP/1.1 request; the status and the JSON body (`Null` if none).
fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n");
    if let Some(k) = key {
        req += &format!("Authorization: apikey {k}\r\n");
    }
    if !body.is_empty() || matches!(method, "POST" | "PUT" | "PATCH") {
        req += &format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        );
    }
    req += "\r\n";
    req += &body;
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (head, rest) = text.split_once("\r\n\r\n").expect("a whole answer");
    let status: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(rest)
    } else {
        rest.to_string()
    };
    let json = if body.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body:?}"))
    };
    (status, json)
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap();
        if n == 0 {
            break;
        }
        out += &rest[..n];
        s = &rest[n + 2..];
    }
    out
}

fn api(server: &ServerHandle) -> SocketAddr {
    server.api_addr().expect("the API listener")
}

fn logged_in(server: &ServerHandle, uid: u64) -> Client {
    let c = Client::connect(server.local_addr(), fast_config()).unwrap();
    c.login(Uid(uid), None, None).unwrap();
    c
}

/// Waits for a channel message with `text`; its sender.
fn channel_message_from(client: &Client, text: &str) -> u64 {
    loop {
        match next_event(client).expect("an event in time") {
            Event::ChannelMessage {
                message, from_uid, ..
            } if &message.content[..] == text.as_bytes() => return from_uid.0,
            _ => {}
        }
    }
}

#[test]
fn a_backend_publishes_to_a_channel_and_sends_to_a_user_exactly_once() {
    watchdog(Duration::from_secs(60));
    let server = spawn(2);
    let (alice, bob) = (logged_in(&server, 1), logged_in(&server, 2));
    for c in [&alice, &bob] {
        let ch = c.create_channel(Region::Cn, "lobby").unwrap();
        c.join_channel(ch, attrs(&[])).unwrap();
    }
    let publish = json!({"message_id": 1001, "type": "notice", "content": "maintenance at 02:00"});
    let (status, sent) = http(
        api(&server),
        "POST",
        "/v1/channels/cn/lobby/messages",
        Some(KEY),
        Some(publish.clone()),
    );
    assert_eq!(status, 200, "{sent}");
    assert_eq!(sent["seq"], 1);
    assert_eq!(sent["delivered_online"], true);
    for c in [&alice, &bob] {
        assert_eq!(
            channel_message_from(c, "maintenance at 02:00"),
            0,
            "from the service"
        );
    }
    // A retry with the same id: the same answer, nothing delivered again.
    let (status, again) = http(
        api(&server),
        "POST",
        "/v1/channels/cn/lobby/messages",
        Some(KEY),
        Some(publish),
    );
    assert_eq!((status, &again), (200, &sent));
    let ch = alice.create_channel(Region::Cn, "lobby").unwrap();
    alice
        .send_message_to_channel(ch, Message::new("t", "after"), SendOptions::default())
        .unwrap();
    assert_eq!(
        channel_message_from(&bob, "after"),
        1,
        "the retry was not delivered before it"
    );
    // The history holds both, in order.
    let (status, h) = http(
        api(&server),
        "GET",
        "/v1/channels/cn/lobby/messages?after_seq=0&limit=10",
        Some(KEY),
        None,
    );
    assert_eq!(status, 200);
    let texts: Vec<&str> = h["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["maintenance at 02:00", "after"]);

    // To a user who is offline: kept, and delivered at its login.
    let to_carol =
        json!({"message_id": "18446744073709551615", "content": "welcome", "from_uid": 1});
    let (status, s) = http(
        api(&server),
        "POST",
        "/v1/users/3/messages",
        Some(KEY),
        Some(to_carol),
    );
    assert_eq!(
        (status, s["delivered_online"].clone(), s["seq"].clone()),
        (200, json!(false), json!(1))
    );
    let carol = logged_in(&server, 3);
    loop {
        let event = next_event(&carol).expect("the offline message");
        if let Event::MessageFromUser {
            message, from_uid, ..
        } = event
        {
            assert_eq!((&message.content[..], from_uid.0), (&b"welcome"[..], 1));
            break;
        }
    }
}

#[test]
fn a_kicked_user_is_closed_with_the_backends_code_and_kept_out_while_banned() {
    watchdog(Duration::from_secs(60));
    let server = spawn(2);
    let alice = logged_in(&server, 1);
    let (status, online) = http(
        api(&server),
        "GET",
        "/v1/users/online?uids=1,2",
        Some(KEY),
        None,
    );
    assert_eq!(status, 200);
    assert_eq!(online["online"], json!({"1": true, "2": false}));
    let kick = json!({"code": 4142, "reason": "spam", "ban_secs": 600});
    let (status, k) = http(
        api(&server),
        "POST",
        "/v1/users/1/kick",
        Some(KEY),
        Some(kick),
    );
    assert_eq!((status, k["instances"].clone()), (200, json!(1)));
    loop {
        let event = next_event(&alice).expect("the kick");
        if let Event::ConnectionStateChanged {
            state: ConnectionState::Disconnected,
            reason,
        } = event
        {
            assert_eq!(reason, ConnectionReason::Kicked);
            break;
        }
    }
    let (_, online) = http(
        api(&server),
        "GET",
        "/v1/users/online?uids=1",
        Some(KEY),
        None,
    );
    assert_eq!(online["online"]["1"], false, "no grace period after a kick");
    // Banned: a new login is refused with 3000.
    let again = Client::connect(server.local_addr(), fast_config()).unwrap();
    let err = again.login(Uid(1), None, None).unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::PERMISSION_DENY), "{err}");
    // A bad kick names what is wrong.
    let (status, e) = http(
        api(&server),
        "POST",
        "/v1/users/1/kick",
        Some(KEY),
        Some(json!({"code": 100})),
    );
    assert_eq!((status, e["code"].clone()), (400, json!(2001)));
    let (status, e) = http(
        api(&server),
        "POST",
        "/v1/users/2/kick",
        Some(KEY),
        Some(json!({"instance_id": 5})),
    );
    assert_eq!((status, e["code"].clone()), (404, json!(2004)));
}

#[test]
fn channel_state_is_read_and_written_and_listed() {
    watchdog(Duration::from_secs(60));
    let server = spawn(3);
    let alice = logged_in(&server, 1);
    for id in ["b-room", "a-room", "c room"] {
        let ch = alice.create_channel(Region::Us, id).unwrap();
        alice.join_channel(ch, attrs(&[])).unwrap();
        let status = attrs(&[("status", "busy")]);
        alice
            .set_local_user_attributes(ch, status, AttributeOptions::default())
            .unwrap();
    }
    let a = api(&server);
    let (status, _) = http(
        a,
        "PUT",
        "/v1/channels/us/a-room/attributes",
        Some(KEY),
        Some(json!({"attributes": {"topic": "rust"}, "notify": true})),
    );
    assert_eq!(status, 200);
    loop {
        let event = next_event(&alice).expect("the attributes notice");
        if let Event::NotifyChannelAttributesSet {
            attributes,
            last_update_uid,
            ..
        } = event
        {
            assert_eq!(attributes["topic"], "rust");
            assert_eq!(last_update_uid.0, 0, "the service");
            break;
        }
    }
    let (status, c) = http(a, "GET", "/v1/channels/us/a-room", Some(KEY), None);
    assert_eq!(status, 200);
    assert_eq!(
        (c["member_count"].clone(), c["members"].clone()),
        (json!(1), json!([1]))
    );
    assert_eq!(c["attributes"], json!({"topic": "rust"}));
    assert_eq!(c["attributes_updated_by"], 0);
    let (_, u) = http(
        a,
        "GET",
        "/v1/channels/us/a-room/user-attributes",
        Some(KEY),
        None,
    );
    assert_eq!(u["users"], json!({"1": {"status": "busy"}}));
    let (status, _) = http(
        a,
        "DELETE",
        "/v1/channels/us/a-room/attributes?keys=topic",
        Some(KEY),
        None,
    );
    assert_eq!(status, 200);
    let (status, e) = http(
        a,
        "DELETE",
        "/v1/channels/us/a-room/attributes",
        Some(KEY),
        None,
    );
    assert_eq!(
        (status, e["code"].clone()),
        (404, json!(5108)),
        "nothing left to clear"
    );
    // The channel with a space in its id is reached percent-encoded.
    let (status, c) = http(a, "GET", "/v1/channels/us/c%20room", Some(KEY), None);
    assert_eq!((status, c["member_count"].clone()), (200, json!(1)));
    // Pages over three shards, in order.
    let (_, p1) = http(a, "GET", "/v1/channels?limit=2", Some(KEY), None);
    let ids = |p: &Value| -> Vec<String> {
        p["channels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(ids(&p1), ["a-room", "b-room"]);
    let next = p1["next"].as_str().unwrap().replace(' ', "%20");
    let (_, p2) = http(
        a,
        "GET",
        &format!("/v1/channels?limit=2&after={next}"),
        Some(KEY),
        None,
    );
    assert_eq!(ids(&p2), ["c room"]);
    assert_eq!(p2["next"], Value::Null);
    let (_, mine) = http(a, "GET", "/v1/users/1/channels", Some(KEY), None);
    assert_eq!(mine["channels"].as_array().unwrap().len(), 3);
    // Another app's key sees none of it.
    let (_, theirs) = http(a, "GET", "/v1/channels", Some(OTHER_KEY), None);
    assert_eq!(theirs["channels"], json!([]));
}

#[test]
fn every_documented_refusal_is_json_with_its_status() {
    let server = spawn(1);
    let a = api(&server);
    // Method, path, key, body; the status and code it gets.
    type Case<'a> = (&'a str, &'a str, Option<&'a str>, Option<Value>, u16, u32);
    let cases: Vec<Case> = vec![
        ("GET", "/v1/users/online?uids=1", None, None, 401, 1009),
        (
            "GET",
            "/v1/users/online?uids=1",
            Some("not-a-key-not-a-key-not-a-key-xx"),
            None,
            401,
            1009,
        ),
        ("GET", "/v1/nothing/here", Some(KEY), None, 404, 2004),
        ("DELETE", "/v1/users/online", Some(KEY), None, 405, 2001),
        ("GET", "/v1/users/online", Some(KEY), None, 400, 2001),
        (
            "GET",
            "/v1/users/online?uids=1,x",
            Some(KEY),
            None,
            400,
            2001,
        ),
        ("GET", "/v1/channels/mars/x", Some(KEY), None, 400, 2001),
        (
            "POST",
            "/v1/users/5/messages",
            Some(KEY),
            Some(json!({"content": "no id"})),
            400,
            2001,
        ),
        (
            "POST",
            "/v1/users/5/messages",
            Some(KEY),
            Some(json!({"message_id": 0})),
            400,
            2001,
        ),
        (
            "POST",
            "/v1/users/5/messages",
            Some(KEY),
            Some(json!({"message_id": 1, "oops": 1})),
            400,
            2001,
        ),
        (
            "POST",
            "/v1/users/5/messages",
            Some(KEY),
            Some(json!({"message_id": 2, "content": "x".repeat(40_000)})),
            400,
            2007,
        ),
        (
            "GET",
            "/v1/channels/cn/x/messages?limit=0",
            Some(KEY),
            None,
            400,
            2001,
        ),
    ];
    for (method, path, key, body, status, code) in cases {
        let (got, json) = http(a, method, path, key, body);
        assert_eq!(
            (got, json["code"].clone()),
            (status, json!(code)),
            "{method} {path}: {json}"
        );
        assert!(json["message"].is_string(), "{method} {path}");
    }
    // A message id reused for another destination (one shard: detected).
    let send = |to: &str| json!({"message_id": 99, "content": to});
    assert_eq!(
        http(
            a,
            "POST",
            "/v1/users/5/messages",
            Some(KEY),
            Some(send("5"))
        )
        .0,
        200
    );
    let (status, e) = http(
        a,
        "POST",
        "/v1/users/6/messages",
        Some(KEY),
        Some(send("6")),
    );
    assert_eq!((status, e["code"].clone()), (409, json!(2013)));
    let _ = DEMO_APPID;
}

/// `docs/openapi.json` is OpenAPI 3 and lists exactly the server's routes,
/// each with a success and an error answer, every reference resolving.
#[test]
fn the_openapi_description_matches_the_routes() {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.json")).unwrap();
    let doc: Value = serde_json::from_str(&text).unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let mut documented = Vec::new();
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            // `{x}` there is `:x` in the server's table (and metric labels).
            let pattern: Vec<String> = path
                .split('/')
                .map(
                    |seg| match seg.strip_prefix('{').and_then(|x| x.strip_suffix('}')) {
                        Some(name) => format!(":{name}"),
                        None => seg.to_string(),
                    },
                )
                .collect();
            documented.push((method.to_uppercase(), pattern.join("/")));
            let responses = op["responses"].as_object().unwrap();
            assert!(
                responses.contains_key("200") && responses.contains_key("default"),
                "{method} {path}"
            );
            assert!(
                op["summary"].is_string() && op["description"].is_string(),
                "{method} {path}"
            );
            // Every path parameter of the pattern is described.
            for seg in path.split('/').filter(|s| s.starts_with('{')) {
                let name = seg.trim_matches(|c| c == '{' || c == '}');
                let params = op["parameters"].as_array().unwrap();
                assert!(
                    params
                        .iter()
                        .any(|p| p["name"] == name && p["in"] == "path"),
                    "{method} {path}: {name}"
                );
            }
        }
    }
    let mut routes: Vec<(String, String)> = API_ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    documented.sort();
    routes.sort();
    assert_eq!(documented, routes);
    // Every $ref points at something.
    fn refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(r)) = m.get("$ref") {
                    out.push(r.clone());
                }
                m.values().for_each(|x| refs(x, out));
            }
            Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    refs(&doc, &mut all);
    assert!(!all.is_empty());
    for r in all {
        let pointer = r.strip_prefix('#').unwrap();
        assert!(doc.pointer(pointer).is_some(), "{r} resolves");
    }
}

#[test]
fn online_status_takes_256_uids_at_most_whatever_the_threads() {
    // The uids go to the shards that own them: each shard sees only its
    // share, and the call's limit is the whole list's.
    let server = spawn(4);
    let a = api(&server);
    let uids = |n: u64| (1..=n).map(|u| u.to_string()).collect::<Vec<_>>().join(",");
    let (status, body) = http(
        a,
        "GET",
        &format!("/v1/users/online?uids={}", uids(256)),
        Some(KEY),
        None,
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["online"].as_object().unwrap().len(), 256);
    let (status, body) = http(
        a,
        "GET",
        &format!("/v1/users/online?uids={}", uids(257)),
        Some(KEY),
        None,
    );
    assert_eq!((status, body["code"].clone()), (400, json!(2001)), "{body}");
    server.shutdown();
}

/// A route's path with a method it does not take: 405 naming the methods
/// it does take.
#[test]
fn a_wrong_method_is_told_the_right_ones() {
    let server = spawn(1);
    let mut s = TcpStream::connect(api(&server)).unwrap();
    let req = format!(
        "DELETE /v1/channels/cn/x/messages HTTP/1.1\r\nHost: t\r\nConnection: close\r\nAuthorization: apikey {KEY}\r\n\r\n"
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let head = text.split("\r\n\r\n").next().unwrap().to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 405"), "{head}");
    assert!(head.contains("\r\nallow: post, get\r\n"), "{head}");
}

/// With Redis as the store, a backend's publish is answered once it is
/// stored: while Redis is down the answer waits, and it comes (and the
/// members get the message) when Redis is back.
#[cfg(feature = "redis")]
#[test]
fn a_publish_is_answered_once_the_store_has_it() {
    #[path = "redis_support/mod.rs"]
    mod redis_support;
    use hummer_channel::adapters::server_tcp::store::StoreConfig;
    use redis_support::{Persistence, RedisServer};

    watchdog(Duration::from_secs(60));
    let mut redis = RedisServer::start(Persistence::Aof);
    let mut config = ServerConfig::demo();
    config.apps[0].api_keys.push(KEY.into());
    let runner = RunnerConfig::default()
        .with_threads(2)
        .with_store(StoreConfig::new(&redis.url()).unwrap());
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let listeners =
        Listeners::new(bind(any, &runner).unwrap()).with_api(bind(any, &runner).unwrap());
    let server = ServerHandle::spawn_on(config, runner, listeners).unwrap();
    let alice = logged_in(&server, 1);
    let ch = alice.create_channel(Region::Cn, "lobby").unwrap();
    alice.join_channel(ch, attrs(&[])).unwrap();
    redis.stop();
    let addr = api(&server);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let publish = json!({"message_id": 7, "type": "t", "content": "stored first"});
        let _ = tx.send(http(
            addr,
            "POST",
            "/v1/channels/cn/lobby/messages",
            Some(KEY),
            Some(publish),
        ));
    });
    assert!(
        rx.recv_timeout(Duration::from_millis(700)).is_err(),
        "answered before the store had it"
    );
    redis.restart();
    let (status, sent) = rx.recv_timeout(Duration::from_secs(20)).unwrap();
    assert_eq!((status, &sent["seq"]), (200, &json!(1)), "{sent}");
    assert_eq!(channel_message_from(&alice, "stored first"), 0);
}
