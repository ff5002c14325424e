//! `--transport tls|ws|wss` for `idle` and `raw --kind hummer`: the same
//! hummer frames as the TCP path, carried inside TLS, as WebSocket binary
//! messages, or both (docs/protocol.md, "Transports"). The TCP path
//! (`--transport tcp`, the default) does not come through here: it stays the
//! baseline, byte for byte.
//!
//! As cheap as the TCP path, so that what is measured is the server:
//!
//! - frames are pre-encoded before the clock starts, as on TCP; over
//!   WebSocket each one is a complete masked binary message (header, mask,
//!   masked payload) built by hand, one message per `Frame`, no prefix, and
//!   a batch of them goes out in one write;
//! - readers find frames by their WebSocket headers instead of the length
//!   prefix and look at the same two bytes of each frame as the TCP path
//!   (`count::is_push`); only what is not a push is decoded;
//! - TLS is rustls (ring), blocking, split in two halves that share the
//!   connection state behind a mutex held only to encrypt or decrypt, so
//!   that a publisher's writes and its drain thread's reads proceed at once
//!   as on a cloned `TcpStream`; sockets are written and read outside it;
//! - the WebSocket upgrade is tungstenite's client handshake (it checks
//!   `Sec-WebSocket-Accept`), offering `hummer.v1.protobuf`.
//!
//! The certificate is checked against `--ca PEM` when given, else any
//! certificate is trusted (a benchmark on loopback, not a client).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, SignatureScheme};

use hummer_channel::wire::{decode_frame, Body};

use crate::count::is_push;
use crate::MAX_FRAME;

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Transport {
    Tcp,
    Tls,
    Ws,
    Wss,
}

impl Transport {
    pub fn parse(s: &str) -> Result<Transport, String> {
        Ok(match s {
            "tcp" => Transport::Tcp,
            "tls" => Transport::Tls,
            "ws" => Transport::Ws,
            "wss" => Transport::Wss,
            _ => return Err(format!("--transport {s:?}: tcp, tls, ws or wss")),
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
            Transport::Ws => "ws",
            Transport::Wss => "wss",
        }
    }

    fn tls(self) -> bool {
        matches!(self, Transport::Tls | Transport::Wss)
    }

    pub fn ws(self) -> bool {
        matches!(self, Transport::Ws | Transport::Wss)
    }
}

/// Where and how to connect: everything a link needs, shared by threads.
#[derive(Clone)]
pub struct Dial {
    pub transport: Transport,
    pub addr: SocketAddr,
    tls: Option<(Arc<ClientConfig>, ServerName<'static>)>,
    read_timeout: Duration,
}

impl Dial {
    /// From `--transport`, `--ca PEM` and `--server-name NAME` (default: the
    /// address's IP, which the script's certificate names too).
    pub fn from_args(
        args: &std::collections::HashMap<String, String>,
        addr: SocketAddr,
    ) -> Result<Dial, String> {
        let transport = Transport::parse(args.get("transport").map_or("tcp", String::as_str))?;
        let tls = if transport.tls() {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let builder = ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .map_err(|e| format!("tls: {e}"))?;
            let config = match args.get("ca") {
                Some(path) => {
                    let mut roots = rustls::RootCertStore::empty();
                    for cert in CertificateDer::pem_file_iter(path)
                        .map_err(|e| format!("--ca {path}: {e}"))?
                    {
                        roots
                            .add(cert.map_err(|e| format!("--ca {path}: {e}"))?)
                            .map_err(|e| format!("--ca {path}: {e}"))?;
                    }
                    builder.with_root_certificates(roots).with_no_client_auth()
                }
                None => builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
                    .with_no_client_auth(),
            };
            let name = match args.get("server-name") {
                Some(n) => {
                    ServerName::try_from(n.clone()).map_err(|e| format!("--server-name: {e}"))?
                }
                None => ServerName::IpAddress(addr.ip().into()),
            };
            Some((Arc::new(config), name))
        } else {
            None
        };
        Ok(Dial {
            transport,
            addr,
            tls,
            read_timeout: Duration::from_millis(200),
        })
    }

    /// Connects, completes the TLS and WebSocket handshakes, and splits the
    /// link into its two halves.
    pub fn connect(&self) -> io::Result<(LinkWriter, LinkReader)> {
        let sock = TcpStream::connect(self.addr)?;
        sock.set_nodelay(true)?;
        // The handshakes block until done (the setup timeout of raw.rs).
        sock.set_read_timeout(Some(Duration::from_secs(5)))?;
        let (conn, sock) = match &self.tls {
            Some((config, name)) => {
                let conn = ClientConnection::new(config.clone(), name.clone())
                    .map_err(io::Error::other)?;
                let mut s = rustls::StreamOwned::new(conn, sock);
                while s.conn.is_handshaking() {
                    s.conn.complete_io(&mut s.sock)?;
                }
                let s = if self.transport.ws() {
                    ws_handshake(s, "wss", self.addr)?
                } else {
                    s
                };
                (Some(s.conn), s.sock)
            }
            None if self.transport.ws() => (None, ws_handshake(sock, "ws", self.addr)?),
            None => (None, sock),
        };
        sock.set_read_timeout(Some(self.read_timeout))?;
        let tls = conn.map(|c| Arc::new(Mutex::new(c)));
        Ok((
            LinkWriter {
                sock: sock.try_clone()?,
                tls: tls.clone(),
                ws: self.transport.ws(),
                mask_seed: mask_seed(),
                frames: 0,
                out: Vec::new(),
            },
            LinkReader {
                sock,
                tls,
                ws: self.transport.ws(),
                chunk: vec![0; 64 * 1024],
                pos: 0,
                end: 0,
            },
        ))
    }

    /// The TLS version and cipher suite a connection gets (for the record).
    pub fn describe(&self) -> io::Result<String> {
        let Some((config, name)) = &self.tls else {
            return Ok(self.transport.name().to_owned());
        };
        let sock = TcpStream::connect(self.addr)?;
        sock.set_read_timeout(Some(Duration::from_secs(5)))?;
        let conn = ClientConnection::new(config.clone(), name.clone()).map_err(io::Error::other)?;
        let mut s = rustls::StreamOwned::new(conn, sock);
        while s.conn.is_handshaking() {
            s.conn.complete_io(&mut s.sock)?;
        }
        Ok(format!(
            "{} ({:?}, {:?})",
            self.transport.name(),
            s.conn.protocol_version().map(|v| format!("{v:?}")),
            s.conn.negotiated_cipher_suite().map(|c| c.suite())
        ))
    }
}

/// The client's HTTP upgrade, offering the subprotocol; checks that the
/// server chose it.
fn ws_handshake<S: Read + Write>(s: S, scheme: &str, addr: SocketAddr) -> io::Result<S> {
    use tungstenite::client::IntoClientRequest as _;
    use tungstenite::http::HeaderValue;
    let proto = hummer_channel::wire::WEBSOCKET_SUBPROTOCOL;
    let mut request = format!("{scheme}://{addr}/v1/ws")
        .into_client_request()
        .map_err(io::Error::other)?;
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", HeaderValue::from_static(proto));
    let (ws, response) = tungstenite::client::client(request, s).map_err(|e| match e {
        tungstenite::HandshakeError::Failure(e) => io::Error::other(format!("websocket: {e}")),
        tungstenite::HandshakeError::Interrupted(_) => {
            io::Error::new(io::ErrorKind::TimedOut, "websocket handshake timed out")
        }
    })?;
    let chosen = response.headers().get("Sec-WebSocket-Protocol");
    if chosen.and_then(|v| v.to_str().ok()) != Some(proto) {
        return Err(io::Error::other(
            "the server did not select the subprotocol",
        ));
    }
    // The server sends nothing before the login: nothing is left buffered.
    Ok(ws.into_inner())
}

/// Trusts any certificate (signatures of the handshake are still checked).
#[derive(Debug)]
struct AnyCert(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A seed for the WebSocket masks of one connection (clients must mask; the
/// server unmasks whatever the key).
fn mask_seed() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    t ^ N.fetch_add(0x9e37_79b9, Ordering::Relaxed)
}

/// The sending half of a link.
pub struct LinkWriter {
    sock: TcpStream,
    tls: Option<Arc<Mutex<ClientConnection>>>,
    ws: bool,
    mask_seed: u32,
    frames: u32,
    /// TLS records to write.
    out: Vec<u8>,
}

impl LinkWriter {
    /// Appends one encoded `Frame` to `out` as this transport carries it:
    /// with its length prefix, or as one masked WebSocket binary message.
    pub fn frame(&mut self, out: &mut Vec<u8>, frame: &[u8]) {
        if !self.ws {
            out.extend_from_slice(&(frame.len() as u32).to_be_bytes());
            out.extend_from_slice(frame);
            return;
        }
        // FIN, opcode 2 (binary); the mask bit and the length.
        out.push(0x82);
        let n = frame.len();
        if n < 126 {
            out.push(0x80 | n as u8);
        } else if n <= 0xffff {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        } else {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
        self.frames = self.frames.wrapping_add(1);
        let mask = (self.mask_seed ^ self.frames.wrapping_mul(0x85eb_ca6b)).to_be_bytes();
        out.extend_from_slice(&mask);
        out.extend(frame.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
    }

    /// Writes `bytes` (whole frames as `frame` made them): over TLS in
    /// records of up to 64 KiB of plaintext, encrypted under the lock and
    /// written to the socket outside it.
    pub fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        let Some(tls) = &self.tls else {
            return self.sock.write_all(bytes);
        };
        for chunk in bytes.chunks(64 * 1024) {
            {
                let mut conn = tls.lock().expect("tls lock");
                let mut rest = chunk;
                while !rest.is_empty() {
                    let n = conn.writer().write(rest)?;
                    rest = &rest[n..];
                    while conn.wants_write() {
                        conn.write_tls(&mut self.out)?;
                    }
                }
            }
            self.sock.write_all(&self.out)?;
            self.out.clear();
        }
        Ok(())
    }

    pub fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        self.sock.set_write_timeout(t)
    }

    pub fn shutdown(&mut self) {
        if let Some(tls) = &self.tls {
            if let Ok(mut conn) = tls.lock() {
                conn.send_close_notify();
                let _ = conn.write_tls(&mut self.out);
            }
            let _ = self.sock.write_all(&self.out);
        }
        let _ = self.sock.shutdown(std::net::Shutdown::Both);
    }
}

/// The receiving half of a link: plaintext bytes (after TLS), in which
/// `frames` finds the frames.
pub struct LinkReader {
    sock: TcpStream,
    tls: Option<Arc<Mutex<ClientConnection>>>,
    pub ws: bool,
    /// TLS records read from the socket: `chunk[pos..end]` not yet given
    /// to rustls.
    chunk: Vec<u8>,
    pos: usize,
    end: usize,
}

pub fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

impl LinkReader {
    /// Reads like `Read::read` on a `TcpStream` (bounded by the read
    /// timeout: an error of kind `WouldBlock`/`TimedOut`; 0 at the end):
    /// the plaintext inside TLS, decrypted a record at a time.
    pub fn read(&mut self, dst: &mut [u8]) -> io::Result<usize> {
        let Some(tls) = &self.tls else {
            return self.sock.read(dst);
        };
        loop {
            {
                let mut conn = tls.lock().expect("tls lock");
                match conn.reader().read(dst) {
                    Ok(n) => return Ok(n), // 0: close_notify
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
                if self.pos < self.end {
                    let mut rest = &self.chunk[self.pos..self.end];
                    self.pos += conn.read_tls(&mut rest)?;
                    conn.process_new_packets().map_err(io::Error::other)?;
                    continue;
                }
            }
            let n = self.sock.read(&mut self.chunk)?;
            if n == 0 {
                return Ok(0);
            }
            (self.pos, self.end) = (0, n);
        }
    }
}

/// The first item whole at the front of `b`: the range of its body and
/// the bytes it takes, `None` if incomplete. TCP/TLS: a frame after its
/// 4-byte length prefix. WebSocket: one binary message per frame (the
/// server's messages are unmasked and not fragmented); a pong is an item
/// with no frame (the body range is `None`); a close message is an error.
#[allow(clippy::type_complexity)]
pub fn next_frame(ws: bool, b: &[u8]) -> io::Result<Option<(Option<Range<usize>>, usize)>> {
    if !ws {
        let Some(prefix) = b.get(..4) else {
            return Ok(None);
        };
        let len = u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
        if len == 0 || len > MAX_FRAME {
            return Err(io::Error::other(format!("bad frame length {len}")));
        }
        return Ok((b.len() >= 4 + len).then_some((Some(4..4 + len), 4 + len)));
    }
    let Some(h) = b.get(..2) else {
        return Ok(None);
    };
    let (fin, opcode, masked) = (h[0] & 0x80 != 0, h[0] & 0x0f, h[1] & 0x80 != 0);
    let (len, head) = match h[1] & 0x7f {
        126 => match b.get(2..4) {
            Some(l) => (u16::from_be_bytes([l[0], l[1]]) as usize, 4),
            None => return Ok(None),
        },
        127 => match b.get(2..10) {
            Some(l) => (
                u64::from_be_bytes(l.try_into().expect("8 bytes")) as usize,
                10,
            ),
            None => return Ok(None),
        },
        n => (n as usize, 2),
    };
    if masked || !fin || len > MAX_FRAME {
        return Err(io::Error::other(format!(
            "unexpected websocket frame (fin {fin}, masked {masked}, {len} bytes)"
        )));
    }
    let Some(body) = b.get(head..head + len) else {
        return Ok(None);
    };
    match opcode {
        2 => Ok(Some((Some(head..head + len), head + len))),
        8 => {
            let status = body.get(..2).map(|s| u16::from_be_bytes([s[0], s[1]]));
            Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                format!("websocket close {status:?}"),
            ))
        }
        9 | 10 => Ok(Some((None, head + len))), // the server never pings
        o => Err(io::Error::other(format!("websocket opcode {o}"))),
    }
}

/// The frames whole at the front of `b`, each body handed to `f`: returns
/// the bytes they take.
pub fn frames(
    ws: bool,
    b: &[u8],
    f: &mut impl FnMut(&[u8]) -> io::Result<()>,
) -> io::Result<usize> {
    let mut at = 0;
    while let Some((body, used)) = next_frame(ws, &b[at..])? {
        if let Some(r) = body {
            f(&b[at + r.start..at + r.end])?;
        }
        at += used;
    }
    Ok(at)
}

/// Counts the pushes among the whole frames at the front of `b` (by their
/// first two bytes, as the TCP path does); returns (bytes used, pushes).
/// Every other frame is decoded and an error or a close reported to `on`.
pub fn count_pushes(ws: bool, b: &[u8], on: &mut impl FnMut(String)) -> io::Result<(usize, u64)> {
    let mut n = 0;
    let used = frames(ws, b, &mut |f| {
        if is_push(f) {
            n += 1;
        } else {
            match decode_frame(bytes::Bytes::copy_from_slice(f), MAX_FRAME).map(|f| f.body) {
                Ok(Body::Error(e)) => on(format!("{} {}", e.code, e.message)),
                Ok(Body::Close(c)) => on(format!("close {} {}", c.code, c.reason)),
                Ok(_) => {}
                Err(e) => on(format!("undecodable frame: {e}")),
            }
        }
        Ok(())
    })?;
    Ok((used, n))
}
