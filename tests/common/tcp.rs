//! A raw-frame client over real TCP for the runner and binary tests: it
//! writes length-prefixed frames and reads decoded ones, with every wait
//! bounded.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use hummer_channel::server::DEMO_APPID;
use hummer_channel::wire::{
    self, decode_frame, encode_frame, write_length_prefixed, Body, DecodedFrame, Frame,
    FrameDecoder,
};

/// Every wait on the server is bounded by this.
pub const WAIT: Duration = Duration::from_secs(10);
/// The frame size the clients accept.
pub const MAX_FRAME: usize = 64 * 1024;

pub struct Client {
    stream: TcpStream,
    decoder: FrameDecoder,
    rid: u64,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        Client::wrap(TcpStream::connect_timeout(&addr, WAIT).expect("connect"))
    }

    /// A connection from another loopback address (Linux routes all of
    /// 127.0.0.0/8 to lo), to count against another per-address cap.
    pub fn connect_from(local: &str, addr: SocketAddr) -> Client {
        use socket2::{Domain, Socket, Type};
        let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        let from: SocketAddr = format!("{local}:0").parse().unwrap();
        s.bind(&from.into())
            .expect("bind a loopback source address");
        s.connect_timeout(&addr.into(), WAIT).expect("connect");
        Client::wrap(s.into())
    }

    /// A connection with a small receive buffer: one that never reads
    /// fills it (and the server's send buffer) at once.
    pub fn connect_small_window(addr: SocketAddr) -> Client {
        use socket2::{Domain, Socket, Type};
        let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        s.set_recv_buffer_size(4096).unwrap();
        s.connect_timeout(&addr.into(), WAIT).expect("connect");
        Client::wrap(s.into())
    }

    pub fn wrap(stream: TcpStream) -> Client {
        stream
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        stream.set_nodelay(true).unwrap();
        Client {
            stream,
            decoder: FrameDecoder::new(MAX_FRAME),
            rid: 0,
        }
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    pub fn frame(&mut self, body: Body) -> (u64, BytesMut) {
        self.rid += 1;
        let frame = encode_frame(&Frame {
            request_id: self.rid,
            body: Some(body),
        });
        let mut buf = BytesMut::new();
        write_length_prefixed(&frame, &mut buf);
        (self.rid, buf)
    }

    pub fn send(&mut self, body: Body) -> u64 {
        let (rid, buf) = self.frame(body);
        self.send_raw(&buf);
        rid
    }

    /// The next frame; `None` on EOF or a reset; panics after `within`.
    pub fn next_within(&mut self, within: Duration) -> Option<DecodedFrame> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(f) = self.decoder.next_frame().expect("well-formed stream") {
                return Some(decode_frame(f, MAX_FRAME).expect("server frame decodes"));
            }
            assert!(Instant::now() < deadline, "timed out waiting for a frame");
            let mut chunk = [0u8; 16 * 1024];
            match self.stream.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.decoder.extend(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => return None,
            }
        }
    }

    pub fn next(&mut self) -> Option<DecodedFrame> {
        self.next_within(WAIT)
    }

    /// Frames until one matches, skipping the others.
    pub fn until(&mut self, mut pred: impl FnMut(&DecodedFrame) -> bool) -> DecodedFrame {
        loop {
            let f = self.next().expect("connection closed while waiting");
            if pred(&f) {
                return f;
            }
        }
    }

    /// Sends `body` and waits for its reply (other frames are skipped).
    pub fn req(&mut self, body: Body) -> Body {
        let rid = self.send(body);
        self.until(|f| f.request_id == rid).body
    }

    /// Logs in to the demo app as `uid`.
    pub fn login(&mut self, uid: u64) -> wire::LoginReply {
        self.login_with(uid, None)
    }

    /// Logs in to the demo app as `uid`, resuming `resume` if given.
    pub fn login_with(&mut self, uid: u64, resume: Option<wire::Resume>) -> wire::LoginReply {
        let Body::Login(mut request) = login(uid) else {
            unreachable!()
        };
        request.resume = resume;
        match self.req(Body::Login(request)) {
            Body::LoginReply(r) => r,
            other => panic!("login failed: {other:?}"),
        }
    }

    pub fn ping(&mut self, nonce: u64) {
        assert_eq!(
            self.req(Body::Ping(wire::Ping { nonce })),
            Body::Pong(wire::Pong { nonce })
        );
    }

    /// True when the server closed the link having sent nothing at all.
    pub fn closed_silently(&mut self) -> bool {
        let deadline = Instant::now() + WAIT;
        let mut chunk = [0u8; 64];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return true,
                Ok(_) => return false,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    assert!(
                        Instant::now() < deadline,
                        "the link was neither served nor closed"
                    );
                }
                Err(_) => return true,
            }
        }
    }
}

/// A login request for the demo app as `uid`.
pub fn login(uid: u64) -> Body {
    Body::Login(wire::LoginRequest {
        protocol_version: wire::PROTOCOL_VERSION,
        appid: DEMO_APPID,
        uid,
        ..Default::default()
    })
}
