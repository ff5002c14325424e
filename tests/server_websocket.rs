//! The WebSocket listener with a raw WebSocket client (tungstenite): the
//! handshake's checks, one frame per binary message, malformed input, the
//! close mapping, the pages beside it. The adapters' `ws://` and `wss://`
//! URLs are tested in tests/transports.rs. Every wait is bounded.
#![cfg(all(feature = "server-tcp", feature = "websocket"))]

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use async_tungstenite::tungstenite::client::IntoClientRequest as _;
use async_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use async_tungstenite::tungstenite::{self, Message};
use bytes::Bytes;
use hummer_channel::adapters::server_tcp::{
    bind, Listeners, Page, RunnerConfig, ServerHandle, WebSocketOptions,
};
use hummer_channel::server::{ServerConfig, DEMO_APPID};
use hummer_channel::wire::{self, decode_frame, encode_frame, Body, Frame};

type Ws = tungstenite::WebSocket<TcpStream>;

fn spawn(options: WebSocketOptions) -> ServerHandle {
    let runner = RunnerConfig::default()
        .with_threads(1)
        .with_websocket(options);
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let listeners =
        Listeners::new(bind(any, &runner).unwrap()).with_websocket(bind(any, &runner).unwrap());
    ServerHandle::spawn_on(ServerConfig::demo(), runner, listeners).unwrap()
}

/// A WebSocket handshake with these extra headers; the server's answer.
fn handshake(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Ws, tungstenite::Error> {
    let mut req = format!("ws://{addr}{path}").into_client_request().unwrap();
    for (n, v) in headers {
        req.headers_mut().insert(
            tungstenite::http::HeaderName::from_bytes(n.as_bytes()).unwrap(),
            tungstenite::http::HeaderValue::from_str(v).unwrap(),
        );
    }
    let stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    tungstenite::client::client(req, stream)
        .map(|(ws, _)| ws)
        .map_err(|e| match e {
            tungstenite::HandshakeError::Failure(e) => e,
            tungstenite::HandshakeError::Interrupted(_) => panic!("blocking handshake"),
        })
}

fn connect(addr: SocketAddr) -> Ws {
    handshake(
        addr,
        "/v1/ws",
        &[("Sec-WebSocket-Protocol", "hummer.v1.protobuf")],
    )
    .expect("handshake")
}

fn send(ws: &mut Ws, request_id: u64, body: Body) {
    let frame = encode_frame(&Frame {
        request_id,
        body: Some(body),
    });
    ws.send(Message::Binary(frame)).unwrap();
}

/// The next frame, skipping pushes the test does not look at; `None` once
/// the server closed the WebSocket (with its status).
fn next(ws: &mut Ws) -> Result<Frame, Option<CloseCode>> {
    loop {
        match ws.read() {
            Ok(Message::Binary(b)) => return Ok(decode_frame(b, 1 << 20).unwrap().into()),
            Ok(Message::Close(c)) => return Err(c.map(|c| c.code)),
            Ok(_) => continue,
            Err(_) => return Err(None),
        }
    }
}

fn login(ws: &mut Ws, uid: u64) -> wire::LoginReply {
    send(
        ws,
        1,
        Body::Login(wire::LoginRequest {
            protocol_version: 2,
            appid: DEMO_APPID,
            uid,
            ..Default::default()
        }),
    );
    match next(ws).expect("login reply").body {
        Some(Body::LoginReply(r)) => r,
        other => panic!("not a login reply: {other:?}"),
    }
}

#[test]
fn a_frame_per_binary_message_logs_in_and_a_ping_gets_its_pong() {
    let server = spawn(WebSocketOptions::default());
    let mut ws = connect(server.websocket_addr().unwrap());
    let reply = login(&mut ws, 7);
    assert!(reply.instance_id != 0 && reply.is_anonymous);
    send(&mut ws, 0, Body::Ping(wire::Ping { nonce: 99 }));
    match next(&mut ws).unwrap().body {
        Some(Body::Pong(p)) => assert_eq!(p.nonce, 99),
        other => panic!("no pong: {other:?}"),
    }
    // Two frames never share a message: a request and its reply each have
    // their own.
    send(&mut ws, 2, Body::GetInstanceInfo(wire::Empty {}));
    let f = next(&mut ws).unwrap();
    assert_eq!(f.request_id, 2);
    assert!(matches!(f.body, Some(Body::InstanceInfo(ref i)) if i.uid == 7));
}

#[test]
fn malformed_messages_close_the_link_with_2001_then_a_websocket_close() {
    let server = spawn(WebSocketOptions::default());
    let addr = server.websocket_addr().unwrap();
    let cases: Vec<(&str, Message, CloseCode)> = vec![
        ("text", Message::text("hello"), CloseCode::Policy),
        (
            "garbage",
            Message::binary(vec![0xff; 10]),
            CloseCode::Policy,
        ),
        ("empty", Message::binary(Vec::new()), CloseCode::Policy),
        // Before login the bound is 8 KiB: the message arrives whole (it is
        // under the transport's bound) and the gateway refuses it.
        (
            "over 8 KiB before login",
            Message::binary(vec![0u8; 9 * 1024]),
            CloseCode::Size,
        ),
        // Over the transport's bound: refused by the WebSocket reader.
        (
            "over 64 KiB",
            Message::binary(vec![0u8; 65 * 1024]),
            CloseCode::Size,
        ),
    ];
    for (what, message, status) in cases {
        let mut ws = connect(addr);
        ws.send(message).unwrap();
        match next(&mut ws) {
            Ok(Frame {
                body: Some(Body::Close(c)),
                ..
            }) => assert_eq!(c.code, 2001, "{what}"),
            other => panic!("{what}: no Close frame: {other:?}"),
        }
        assert_eq!(next(&mut ws).unwrap_err(), Some(status), "{what}");
    }
}

#[test]
fn a_websocket_ping_counts_as_activity_for_the_idle_timeout() {
    let mut config = ServerConfig::demo();
    config.idle_timeout = Duration::from_millis(600);
    let runner = RunnerConfig::default().with_threads(1);
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let listeners =
        Listeners::new(bind(any, &runner).unwrap()).with_websocket(bind(any, &runner).unwrap());
    let server = ServerHandle::spawn_on(config, runner, listeners).unwrap();
    let addr = server.websocket_addr().unwrap();
    let mut quiet = connect(addr);
    let mut pinging = connect(addr);
    login(&mut quiet, 1);
    login(&mut pinging, 2);
    pinging
        .get_mut()
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    // The pinging link sends WebSocket pings only (no frame) for 1.5 idle
    // timeouts; the quiet one sends nothing and is closed with 1005.
    let start = std::time::Instant::now();
    let mut pongs = 0;
    while start.elapsed() < Duration::from_millis(900) {
        pinging
            .send(Message::Ping(Bytes::from_static(b"k")))
            .unwrap();
        match pinging.read() {
            Ok(Message::Pong(p)) if &p[..] == b"k" => pongs += 1,
            Ok(Message::Binary(b)) => {
                let f: Frame = decode_frame(b, 1 << 20).unwrap().into();
                assert!(!matches!(f.body, Some(Body::Close(_))), "closed: {f:?}");
            }
            Ok(other) => panic!("{other:?}"),
            Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("the pinging link broke: {e}"),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(pongs >= 3, "WebSocket pongs: {pongs}");
    let close = loop {
        match next(&mut quiet).expect("a Close frame") {
            Frame {
                body: Some(Body::Close(c)),
                ..
            } => break c,
            _ => continue,
        }
    };
    assert_eq!(close.code, 1005, "the quiet link timed out");
}

#[test]
fn handshakes_without_the_subprotocol_or_from_a_foreign_origin_are_refused() {
    let server = spawn(WebSocketOptions::default().with_allowed_origins(["https://ok.example"]));
    let addr = server.websocket_addr().unwrap();
    let status = |path: &str, headers: &[(&str, &str)]| match handshake(addr, path, headers) {
        Err(tungstenite::Error::Http(r)) => r.status().as_u16(),
        Ok(_) => 101,
        Err(e) => panic!("{e}"),
    };
    let proto = ("Sec-WebSocket-Protocol", "hummer.v1.protobuf");
    assert_eq!(status("/v1/ws", &[]), 400, "no subprotocol");
    assert_eq!(status("/elsewhere", &[proto]), 404);
    assert_eq!(
        status("/v1/ws", &[proto, ("Origin", "https://evil.example")]),
        403
    );
    assert_eq!(
        status("/v1/ws", &[proto, ("Origin", "https://ok.example")]),
        101
    );
    assert_eq!(status("/v1/ws", &[proto]), 101, "no Origin: not a browser");
    // Refused handshakes hold no connection.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while server.stats().open_connections > 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(server.stats().open_connections, 0);
}

#[test]
fn the_listener_serves_its_pages_and_a_stalled_handshake_counts_against_the_caps() {
    let options = WebSocketOptions::default().with_page(Page::new(
        "/",
        "text/html; charset=utf-8",
        "<h1>demo</h1>",
    ));
    let runner = RunnerConfig::default()
        .with_threads(1)
        .with_max_connections_per_ip(2)
        .with_websocket(options);
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let listeners =
        Listeners::new(bind(any, &runner).unwrap()).with_websocket(bind(any, &runner).unwrap());
    let server = ServerHandle::spawn_on(ServerConfig::demo(), runner, listeners).unwrap();
    let addr = server.websocket_addr().unwrap();
    let get = |path: &str| {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    };
    let page = get("/");
    assert!(page.starts_with("HTTP/1.1 200 OK"), "{page}");
    assert!(page.ends_with("<h1>demo</h1>"), "{page}");
    assert!(get("/missing.js").starts_with("HTTP/1.1 404"));
    // Two peers that open the socket and send nothing hold both of this
    // address's places; a third is refused until they are gone.
    let _a = TcpStream::connect(addr).unwrap();
    let _b = TcpStream::connect(addr).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while server.stats().open_connections < 2 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(server.stats().open_connections, 2);
    assert_eq!(get("/"), "", "over the per-address cap: closed at once");
}

#[test]
fn a_shutdown_sends_close_4006_then_a_websocket_close_1013() {
    let server = spawn(WebSocketOptions::default());
    let mut ws = connect(server.websocket_addr().unwrap());
    login(&mut ws, 3);
    server.shutdown();
    let close = loop {
        match next(&mut ws).expect("a Close frame") {
            Frame {
                body: Some(Body::Close(c)),
                ..
            } => break c,
            _ => continue,
        }
    };
    assert_eq!(close.code, 4006);
    assert_eq!(next(&mut ws).unwrap_err(), Some(CloseCode::Again));
}

#[test]
fn a_client_close_gets_its_reply_a_clean_close() {
    let server = spawn(WebSocketOptions::default());
    let mut ws = connect(server.websocket_addr().unwrap());
    login(&mut ws, 4);
    ws.close(None).unwrap();
    let end = loop {
        match ws.read() {
            Ok(_) => continue,
            Err(e) => break e,
        }
    };
    // The close handshake completed: the server answered the close.
    assert!(
        matches!(end, tungstenite::Error::ConnectionClosed),
        "{end:?}"
    );
}
