//! The client's TLS and WebSocket links, each seen as one byte stream of
//! length-prefixed frames ([`LinkStream`]): the drivers of both adapters
//! read, decode and write every transport alike. A WebSocket message
//! becomes its frame with a prefix on the way in; on the way out, each
//! prefixed frame becomes one binary message (`docs/protocol.md`,
//! "Transports").

use std::io;
use std::net::TcpStream;
use std::pin::Pin;
#[cfg(feature = "websocket")]
use std::task::ready;
use std::task::{Context, Poll};

use async_io::Async;
use futures_lite::io::{AsyncRead, AsyncWrite};

use super::endpoint::{Scheme, ServerUrl, TlsRoots};

/// A frame announced larger than this is refused on the way out: the
/// Session never writes one (its bound is 64 KiB), so it is a bug.
#[cfg(feature = "websocket")]
const MAX_OUT_FRAME: usize = 16 * 1024 * 1024;

/// What TLS and WebSocket run on.
enum Io {
    Tcp(Async<TcpStream>),
    #[cfg(feature = "tls")]
    Tls(Box<futures_rustls::client::TlsStream<Async<TcpStream>>>),
}

/// An open TLS or WebSocket link as a stream of length-prefixed frames.
pub(crate) struct LinkStream(Kind);

enum Kind {
    #[cfg_attr(not(feature = "tls"), allow(dead_code))]
    Bytes(Io),
    #[cfg(feature = "websocket")]
    Ws(Box<WsBytes>),
}

/// Runs the TLS and WebSocket handshakes of `url` on a connected socket.
/// `Err(Unsupported)` for a scheme whose feature is off; `tcp://` needs no
/// handshake and is not for this function.
pub(crate) async fn open(
    url: &ServerUrl,
    roots: &TlsRoots,
    tcp: Async<TcpStream>,
) -> io::Result<LinkStream> {
    let io = match url.scheme().is_tls() {
        false => Io::Tcp(tcp),
        #[cfg(feature = "tls")]
        true => Io::Tls(Box::new(tls::connect(url.host(), roots, tcp).await?)),
        #[cfg(not(feature = "tls"))]
        true => {
            let _ = roots;
            return Err(super::link_unsupported(url.scheme()));
        }
    };
    match url.scheme() {
        Scheme::Tls => Ok(LinkStream(Kind::Bytes(io))),
        #[cfg(feature = "websocket")]
        Scheme::Ws | Scheme::Wss => Ok(LinkStream(Kind::Ws(Box::new(
            WsBytes::connect(url, io).await?,
        )))),
        #[cfg(not(feature = "websocket"))]
        Scheme::Ws | Scheme::Wss => Err(super::link_unsupported(url.scheme())),
        Scheme::Tcp => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "tcp:// needs no handshake",
        )),
    }
}

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            #[cfg(feature = "tls")]
            Io::Tls(s) => Pin::new(&mut **s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            #[cfg(feature = "tls")]
            Io::Tls(s) => Pin::new(&mut **s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Tcp(s) => Pin::new(s).poll_flush(cx),
            #[cfg(feature = "tls")]
            Io::Tls(s) => Pin::new(&mut **s).poll_flush(cx),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Tcp(s) => Pin::new(s).poll_close(cx),
            #[cfg(feature = "tls")]
            Io::Tls(s) => Pin::new(&mut **s).poll_close(cx),
        }
    }
}

impl AsyncRead for LinkStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().0 {
            Kind::Bytes(io) => Pin::new(io).poll_read(cx, buf),
            #[cfg(feature = "websocket")]
            Kind::Ws(ws) => ws.poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for LinkStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().0 {
            Kind::Bytes(io) => Pin::new(io).poll_write(cx, buf),
            #[cfg(feature = "websocket")]
            Kind::Ws(ws) => ws.poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().0 {
            Kind::Bytes(io) => Pin::new(io).poll_flush(cx),
            #[cfg(feature = "websocket")]
            Kind::Ws(ws) => ws.poll_flush(cx),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().0 {
            Kind::Bytes(io) => Pin::new(io).poll_close(cx),
            #[cfg(feature = "websocket")]
            Kind::Ws(ws) => ws.poll_close(cx),
        }
    }
}

#[cfg(feature = "tls")]
mod tls {
    use std::io;
    use std::net::TcpStream;

    use async_io::Async;

    use super::super::endpoint::TlsRoots;

    /// A TLS client on `tcp` for `host`, its certificate checked against
    /// `roots`.
    pub async fn connect(
        host: &str,
        roots: &TlsRoots,
        tcp: Async<TcpStream>,
    ) -> io::Result<futures_rustls::client::TlsStream<Async<TcpStream>>> {
        let ca_pem = match roots {
            TlsRoots::System => None,
            TlsRoots::Pem(pem) => Some(&pem[..]),
        };
        super::super::tls_client::connect(host, ca_pem, tcp).await
    }
}

/// A client WebSocket as a stream of length-prefixed frames.
#[cfg(feature = "websocket")]
struct WsBytes {
    ws: async_tungstenite::WebSocketStream<Io>,
    /// The message being read out: its prefix and bytes, and how much of
    /// them went out.
    reading: Option<(bytes::Bytes, usize)>,
    /// The frame being written, prefix included, until it is whole.
    writing: Vec<u8>,
    /// A whole frame the WebSocket has not taken yet.
    pending: Option<bytes::Bytes>,
}

#[cfg(feature = "websocket")]
impl WsBytes {
    async fn connect(url: &ServerUrl, io: Io) -> io::Result<WsBytes> {
        use async_tungstenite::tungstenite::client::IntoClientRequest as _;
        use async_tungstenite::tungstenite::http::HeaderValue;
        use async_tungstenite::tungstenite::protocol::WebSocketConfig;

        let scheme = if url.scheme().is_tls() { "wss" } else { "ws" };
        let host = match url.host().contains(':') {
            true => format!("[{}]", url.host()),
            false => url.host().to_owned(),
        };
        let mut request = format!("{scheme}://{host}:{}{}", url.port(), url.path())
            .into_client_request()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        request.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_static(crate::wire::WEBSOCKET_SUBPROTOCOL),
        );
        let config = WebSocketConfig::default()
            .max_message_size(Some(MAX_OUT_FRAME))
            .max_frame_size(Some(MAX_OUT_FRAME));
        let (ws, response) = async_tungstenite::client_async_with_config(request, io, Some(config))
            .await
            .map_err(|e| io::Error::new(io::ErrorKind::ConnectionRefused, e))?;
        let chosen = response.headers().get("Sec-WebSocket-Protocol");
        if chosen.and_then(|v| v.to_str().ok()) != Some(crate::wire::WEBSOCKET_SUBPROTOCOL) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the server did not select the hummer.v1.protobuf subprotocol",
            ));
        }
        Ok(WsBytes {
            ws,
            reading: None,
            writing: Vec::new(),
            pending: None,
        })
    }

    fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        use async_tungstenite::tungstenite::Message;
        use futures_lite::Stream as _;
        loop {
            if let Some((message, off)) = &mut self.reading {
                let n = (message.len() - *off).min(buf.len());
                buf[..n].copy_from_slice(&message[*off..*off + n]);
                *off += n;
                if *off == message.len() {
                    self.reading = None;
                }
                return Poll::Ready(Ok(n));
            }
            match ready!(Pin::new(&mut self.ws).poll_next(cx)) {
                Some(Ok(Message::Binary(frame))) => {
                    let mut prefixed = bytes::BytesMut::with_capacity(4 + frame.len());
                    crate::wire::write_length_prefixed(&frame, &mut prefixed);
                    self.reading = Some((prefixed.freeze(), 0));
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
                Some(Ok(Message::Text(_))) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "a text WebSocket message",
                    )))
                }
                Some(Ok(Message::Close(_))) | None => return Poll::Ready(Ok(0)),
                Some(Err(e)) => return Poll::Ready(Err(io::Error::other(e))),
            }
        }
    }

    /// Hands the whole frame waiting, if any, to the WebSocket.
    fn poll_send_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        use async_tungstenite::tungstenite::Message;
        use futures_util::Sink as _;
        if self.pending.is_some() {
            ready!(Pin::new(&mut self.ws).poll_ready(cx)).map_err(io::Error::other)?;
            let frame = self.pending.take().unwrap_or_default();
            Pin::new(&mut self.ws)
                .start_send(Message::Binary(frame))
                .map_err(io::Error::other)?;
        }
        Poll::Ready(Ok(()))
    }

    /// Takes bytes up to the end of the frame they belong to; a whole frame
    /// becomes one message. Nothing is taken when it returns `Pending`.
    fn poll_write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        ready!(self.poll_send_pending(cx))?;
        let mut taken = 0;
        if self.writing.len() < 4 {
            taken = (4 - self.writing.len()).min(buf.len());
            self.writing.extend_from_slice(&buf[..taken]);
            if self.writing.len() < 4 {
                return Poll::Ready(Ok(taken));
            }
        }
        let len = u32::from_be_bytes([
            self.writing[0],
            self.writing[1],
            self.writing[2],
            self.writing[3],
        ]) as usize;
        if len > MAX_OUT_FRAME {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "a frame over 16 MiB",
            )));
        }
        let more = (4 + len - self.writing.len()).min(buf.len() - taken);
        self.writing.extend_from_slice(&buf[taken..taken + more]);
        taken += more;
        if self.writing.len() == 4 + len {
            self.pending = Some(bytes::Bytes::copy_from_slice(&self.writing[4..]));
            self.writing.clear();
            // Sent now if the WebSocket has room; else by the next write or
            // flush (the bytes are taken either way).
            let _ = self.poll_send_pending(cx)?;
        }
        Poll::Ready(Ok(taken))
    }

    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        use futures_util::Sink as _;
        ready!(self.poll_send_pending(cx))?;
        Pin::new(&mut self.ws)
            .poll_flush(cx)
            .map_err(io::Error::other)
    }

    fn poll_close(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        use futures_util::Sink as _;
        ready!(self.poll_send_pending(cx))?;
        Pin::new(&mut self.ws)
            .poll_close(cx)
            .map_err(io::Error::other)
    }
}

#[cfg(all(test, feature = "websocket"))]
mod tests {
    use std::io::Write as _;
    use std::net::{TcpListener, TcpStream};

    use async_io::Async;
    use async_tungstenite::tungstenite::protocol::Role;
    use futures_lite::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    /// A client WebSocket on loopback, and the raw server side of it.
    fn pair() -> (WsBytes, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let io = Io::Tcp(Async::new(client).unwrap());
        let ws = smol::block_on(async_tungstenite::WebSocketStream::from_raw_socket(
            io,
            Role::Client,
            None,
        ));
        let bytes = WsBytes {
            ws,
            reading: None,
            writing: Vec::new(),
            pending: None,
        };
        (bytes, server)
    }

    #[test]
    fn a_message_read_in_small_pieces_comes_out_whole_with_its_prefix() {
        let (mut ws, mut server) = pair();
        // Two unmasked binary messages from the server: 300 and 2 bytes.
        let first: Vec<u8> = (0..300u32).map(|i| i as u8).collect();
        let mut raw = vec![0x82, 126, 0x01, 0x2c];
        raw.extend_from_slice(&first);
        raw.extend_from_slice(&[0x82, 2, 7, 8]);
        server.write_all(&raw).unwrap();
        let mut out = Vec::new();
        smol::block_on(async {
            let mut buf = [0u8; 7];
            while out.len() < 4 + 300 + 4 + 2 {
                let n = futures_lite::future::poll_fn(|cx| ws.poll_read(cx, &mut buf))
                    .await
                    .unwrap();
                assert!(n > 0 && n <= 7);
                out.extend_from_slice(&buf[..n]);
            }
        });
        let mut want = 300u32.to_be_bytes().to_vec();
        want.extend_from_slice(&first);
        want.extend_from_slice(&[0, 0, 0, 2, 7, 8]);
        assert_eq!(out, want);
    }

    #[test]
    fn prefixed_frames_written_in_pieces_become_one_message_each() {
        let (ws, server) = pair();
        let mut stream = LinkStream(Kind::Ws(Box::new(ws)));
        let mut bytes = Vec::new();
        for frame in [&b"hello"[..], &[], &[9u8; 200][..]] {
            bytes.extend_from_slice(&(frame.len() as u32).to_be_bytes());
            bytes.extend_from_slice(frame);
        }
        smol::block_on(async {
            for piece in bytes.chunks(3) {
                stream.write_all(piece).await.unwrap();
            }
            stream.flush().await.unwrap();
        });
        let mut server = tungstenite_server(server);
        for want in [&b"hello"[..], &[], &[9u8; 200][..]] {
            match server.read().unwrap() {
                async_tungstenite::tungstenite::Message::Binary(b) => assert_eq!(&b[..], want),
                other => panic!("{other:?}"),
            }
        }
        // Reading back through the stream: what the server sends.
        server
            .send(async_tungstenite::tungstenite::Message::binary(vec![
                1, 2, 3,
            ]))
            .unwrap();
        let mut got = [0u8; 7];
        smol::block_on(stream.read_exact(&mut got)).unwrap();
        assert_eq!(got, [0, 0, 0, 3, 1, 2, 3]);
    }

    fn tungstenite_server(s: TcpStream) -> async_tungstenite::tungstenite::WebSocket<TcpStream> {
        async_tungstenite::tungstenite::WebSocket::from_raw_socket(s, Role::Server, None)
    }
}
