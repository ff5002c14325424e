//! What a connection's bytes travel in, and the handshakes that open it:
//! plain TCP (length-prefixed frames), TLS around the same stream
//! (rustls), and WebSocket (`GET /v1/ws`, subprotocol `hummer.v1.protobuf`,
//! one frame per binary message), itself over TCP or TLS. The same HTTP
//! listener serves the demo page (`web.rs`).
//!
//! A link is read and written by two tasks of one thread, so a TLS or
//! WebSocket stream is split into an [`Inbound`] and an [`Outbound`] half
//! (a lock held only inside each poll, never contended across threads).
//! Plain TCP needs no split: both tasks use the socket itself, and the
//! writer's direct path (`link::write_now`) stays one syscall.

#[cfg(any(feature = "tls", feature = "websocket", feature = "redis"))]
use std::io;
use std::net::TcpStream;
#[cfg(feature = "tls")]
use std::path::Path;
#[cfg(any(feature = "tls", feature = "websocket"))]
use std::pin::Pin;
use std::sync::Arc;
#[cfg(any(feature = "tls", feature = "websocket"))]
use std::task::{Context, Poll};

use async_io::Async;
#[cfg(any(feature = "tls", feature = "websocket"))]
use futures_lite::io::{AsyncRead, AsyncWrite};

#[cfg(feature = "websocket")]
use super::web::{self, Site};

/// The shared socket of a connection (the writer task, the direct writes,
/// the shutdown on `drop_connections` all hold it).
pub(super) type Stream = Arc<Async<TcpStream>>;

/// How a listener's connections speak (see `docs/protocol.md`,
/// "Transports").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Transport {
    /// Length-prefixed frames on TCP.
    Tcp,
    /// The same, inside TLS.
    #[cfg(feature = "tls")]
    Tls,
    /// WebSocket over TCP (`ws://`).
    #[cfg(feature = "websocket")]
    WebSocket,
    /// WebSocket over TLS (`wss://`).
    #[cfg(all(feature = "websocket", feature = "tls"))]
    SecureWebSocket,
}

impl Transport {
    /// What the gateway counts links of this transport as.
    pub fn kind(self) -> crate::server::LinkKind {
        use crate::server::LinkKind;
        match self {
            Transport::Tcp => LinkKind::Tcp,
            #[cfg(feature = "tls")]
            Transport::Tls => LinkKind::Tls,
            #[cfg(feature = "websocket")]
            Transport::WebSocket => LinkKind::WebSocket,
            #[cfg(all(feature = "websocket", feature = "tls"))]
            Transport::SecureWebSocket => LinkKind::SecureWebSocket,
        }
    }
}

/// The server's TLS identity: a certificate chain and its private key,
/// from PEM. Cloning shares it.
///
/// ```no_run
/// use hummer_channel::adapters::server_tcp::{RunnerConfig, ServerTls};
///
/// let tls = ServerTls::from_pem_files("cert.pem".as_ref(), "key.pem".as_ref()).unwrap();
/// let runner = RunnerConfig::default().with_tls(tls);
/// # let _ = runner;
/// ```
#[cfg(feature = "tls")]
#[derive(Clone)]
pub struct ServerTls(Arc<futures_rustls::rustls::ServerConfig>);

#[cfg(feature = "tls")]
impl ServerTls {
    /// From PEM text: `cert_chain` holds the server's certificate first,
    /// then its intermediates; `key` one private key (PKCS#8, PKCS#1 or
    /// SEC1). TLS 1.2 and 1.3, with rustls' safe defaults.
    pub fn from_pem(cert_chain: &[u8], key: &[u8]) -> io::Result<ServerTls> {
        use futures_rustls::rustls;

        let (certs, key) = chain_and_key_from_pem(cert_chain, key)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| bad_tls_input("TLS versions", &e))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| bad_tls_input("certificate and key", &e))?;
        Ok(ServerTls(Arc::new(config)))
    }

    /// [`from_pem`](Self::from_pem), reading both files.
    pub fn from_pem_files(cert_chain: &Path, key: &Path) -> io::Result<ServerTls> {
        let read = |p: &Path| {
            std::fs::read(p).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", p.display())))
        };
        ServerTls::from_pem(&read(cert_chain)?, &read(key)?)
    }

    fn acceptor(&self) -> futures_rustls::TlsAcceptor {
        futures_rustls::TlsAcceptor::from(self.0.clone())
    }
}

/// A certificate chain (first the certificate, then its intermediates)
/// and its private key from PEM: the server's identity ([`ServerTls`])
/// and a cluster node's (`NodeTls`), refused with the same words.
#[cfg(any(feature = "tls", feature = "redis"))]
pub(super) fn chain_and_key_from_pem(
    cert_chain: &[u8],
    key: &[u8],
) -> io::Result<(
    Vec<rustls_pki_types::CertificateDer<'static>>,
    rustls_pki_types::PrivateKeyDer<'static>,
)> {
    use rustls_pki_types::pem::PemObject as _;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};

    let certs = CertificateDer::pem_slice_iter(cert_chain)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad_tls_input("certificate chain", &e))?;
    if certs.is_empty() {
        return Err(bad_tls_input(
            "certificate chain",
            &"no CERTIFICATE in the PEM",
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| bad_tls_input("private key", &e))?;
    Ok((certs, key))
}

/// The error of a TLS identity that cannot be used: which part, and why.
#[cfg(any(feature = "tls", feature = "redis"))]
pub(super) fn bad_tls_input(what: &str, e: &dyn std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("{what}: {e}"))
}

#[cfg(feature = "tls")]
impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls").finish_non_exhaustive()
    }
}

/// Two configurations are the same when they are one (a key is not
/// compared byte by byte).
#[cfg(feature = "tls")]
impl PartialEq for ServerTls {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

#[cfg(feature = "tls")]
impl Eq for ServerTls {}

/// The socket as an owned stream for TLS and WebSocket (they own their IO;
/// the link keeps its own handle on the socket for shutdown and resets).
/// It counts the bytes the socket took: the writer's sign of progress, as
/// TLS and WebSocket buffer what they are given.
#[cfg(any(feature = "tls", feature = "websocket"))]
pub(super) struct SharedIo {
    stream: Stream,
    sent: Sent,
}

/// Bytes a link's socket took, shared by its stream and its writer.
#[cfg(any(feature = "tls", feature = "websocket"))]
pub(super) type Sent = std::rc::Rc<std::cell::Cell<u64>>;

#[cfg(any(feature = "tls", feature = "websocket"))]
impl AsyncRead for SharedIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut &*self.stream).poll_read(cx, buf)
    }
}

#[cfg(any(feature = "tls", feature = "websocket"))]
impl AsyncWrite for SharedIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut &*self.stream).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = written {
            self.sent.set(self.sent.get().wrapping_add(n as u64));
        }
        written
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut &*self.stream).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut &*self.stream).poll_close(cx)
    }
}

/// A server-side TLS stream on a connection's socket.
#[cfg(feature = "tls")]
pub(super) type TlsIo = futures_rustls::server::TlsStream<SharedIo>;

/// What a WebSocket runs on: the socket, or TLS on it.
#[cfg(feature = "websocket")]
pub(super) enum WsLayer {
    Plain(SharedIo),
    #[cfg(feature = "tls")]
    Tls(Box<TlsIo>),
}

/// A WebSocket's stream, with a budget of reads per poll: the WebSocket
/// library reads on inside one poll for as long as bytes come (a message
/// made of endless empty continuation frames never ends), so after
/// [`WS_READS_PER_POLL`] reads that did not wait this stream says "not
/// ready" once and wakes its task at once: the task goes back to the
/// executor's queue and the thread's other links run.
#[cfg(feature = "websocket")]
pub(super) struct WsIo {
    layer: WsLayer,
    ready_reads: u32,
}

/// Reads of a WebSocket's stream in a row, without waiting, before it
/// lets the thread's other tasks run (8 KiB each at most).
#[cfg(feature = "websocket")]
const WS_READS_PER_POLL: u32 = 32;

#[cfg(feature = "websocket")]
impl WsIo {
    fn new(layer: WsLayer) -> WsIo {
        WsIo {
            layer,
            ready_reads: 0,
        }
    }
}

#[cfg(feature = "websocket")]
impl AsyncRead for WsIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.ready_reads >= WS_READS_PER_POLL {
            this.ready_reads = 0;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let read = match &mut this.layer {
            WsLayer::Plain(s) => Pin::new(s).poll_read(cx, buf),
            #[cfg(feature = "tls")]
            WsLayer::Tls(s) => Pin::new(&mut **s).poll_read(cx, buf),
        };
        match read.is_pending() {
            true => this.ready_reads = 0,
            false => this.ready_reads += 1,
        }
        read
    }
}

#[cfg(feature = "websocket")]
impl AsyncWrite for WsIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().layer {
            WsLayer::Plain(s) => Pin::new(s).poll_write(cx, buf),
            #[cfg(feature = "tls")]
            WsLayer::Tls(s) => Pin::new(&mut **s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().layer {
            WsLayer::Plain(s) => Pin::new(s).poll_flush(cx),
            #[cfg(feature = "tls")]
            WsLayer::Tls(s) => Pin::new(&mut **s).poll_flush(cx),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().layer {
            WsLayer::Plain(s) => Pin::new(s).poll_close(cx),
            #[cfg(feature = "tls")]
            WsLayer::Tls(s) => Pin::new(&mut **s).poll_close(cx),
        }
    }
}

/// The reading half of a link.
pub(super) enum Inbound {
    /// Reads the socket itself.
    Tcp,
    #[cfg(feature = "tls")]
    Tls(futures_lite::io::ReadHalf<TlsIo>),
    #[cfg(feature = "websocket")]
    Ws(async_tungstenite::WebSocketReceiver<WsIo>),
}

/// The writing half of a link.
pub(super) enum Outbound {
    /// Writes the socket itself.
    Tcp,
    #[cfg(feature = "tls")]
    Tls(futures_lite::io::WriteHalf<TlsIo>, Sent),
    #[cfg(feature = "websocket")]
    Ws(async_tungstenite::WebSocketSender<WsIo>, Sent),
}

impl Outbound {
    /// Bytes the socket took so far (`None` on TCP, whose writes say it).
    pub fn sent(&self) -> Option<u64> {
        match self {
            Outbound::Tcp => None,
            #[cfg(feature = "tls")]
            Outbound::Tls(_, sent) => Some(sent.get()),
            #[cfg(feature = "websocket")]
            Outbound::Ws(_, sent) => Some(sent.get()),
        }
    }
}

/// What a listener needs to open its connections.
#[derive(Clone)]
pub(super) struct Opener {
    pub transport: Transport,
    #[cfg(feature = "tls")]
    pub tls: Option<ServerTls>,
    #[cfg(feature = "websocket")]
    pub site: Arc<Site>,
    /// The bound on a frame after login (the WebSocket library's message
    /// bound: the gateway applies the connection's own bound after it).
    #[cfg_attr(not(feature = "websocket"), allow(dead_code))]
    pub max_frame_size: usize,
}

/// Bytes a WebSocket link reads at once (its buffer lives as long as it).
#[cfg(feature = "websocket")]
const WS_READ_BUFFER: usize = 8 * 1024;
/// Bytes a WebSocket link gathers before it writes them out unasked.
#[cfg(feature = "websocket")]
const WS_WRITE_BUFFER: usize = 64 * 1024;

/// How long a TLS or WebSocket handshake may take: the connection counts
/// against the caps meanwhile, so a peer that stalls in it is dropped.
#[cfg(any(feature = "tls", feature = "websocket"))]
pub(super) const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The outcome of a handshake.
pub(super) enum Opened {
    /// A link for the gateway.
    Link(Inbound, Outbound),
    /// Not a link: an HTTP request that was answered (a page, a refusal),
    /// or a handshake that failed. Nothing reaches the gateway.
    #[cfg_attr(not(any(feature = "tls", feature = "websocket")), allow(dead_code))]
    Done,
}

impl Opener {
    /// A plain TCP link needs no handshake: open it at once.
    pub fn open_now(&self) -> Option<(Inbound, Outbound)> {
        (self.transport == Transport::Tcp).then_some((Inbound::Tcp, Outbound::Tcp))
    }

    /// Runs the handshakes of this transport on `stream` (within
    /// [`HANDSHAKE_TIMEOUT`] for TLS and WebSocket).
    #[cfg_attr(
        not(any(feature = "tls", feature = "websocket")),
        allow(unused_variables)
    )]
    pub async fn open(&self, stream: &Stream) -> Opened {
        match self.transport {
            Transport::Tcp => Opened::Link(Inbound::Tcp, Outbound::Tcp),
            #[cfg(any(feature = "tls", feature = "websocket"))]
            _ => {
                use futures_lite::FutureExt as _;
                let timeout = async {
                    async_io::Timer::after(HANDSHAKE_TIMEOUT).await;
                    log!(debug, "handshake timed out");
                    Opened::Done
                };
                self.open_slow(stream).or(timeout).await
            }
        }
    }

    #[cfg(any(feature = "tls", feature = "websocket"))]
    async fn open_slow(&self, stream: &Stream) -> Opened {
        let sent = Sent::default();
        let io = SharedIo {
            stream: stream.clone(),
            sent: sent.clone(),
        };
        match self.transport {
            Transport::Tcp => Opened::Link(Inbound::Tcp, Outbound::Tcp),
            #[cfg(feature = "tls")]
            Transport::Tls => match self.accept_tls(io).await {
                Some(tls) => {
                    let (r, w) = futures_lite::io::split(tls);
                    Opened::Link(Inbound::Tls(r), Outbound::Tls(w, sent))
                }
                None => Opened::Done,
            },
            #[cfg(feature = "websocket")]
            Transport::WebSocket => self.accept_ws(WsIo::new(WsLayer::Plain(io)), sent).await,
            #[cfg(all(feature = "websocket", feature = "tls"))]
            Transport::SecureWebSocket => match self.accept_tls(io).await {
                Some(tls) => {
                    self.accept_ws(WsIo::new(WsLayer::Tls(Box::new(tls))), sent)
                        .await
                }
                None => Opened::Done,
            },
        }
    }

    #[cfg(feature = "tls")]
    async fn accept_tls(&self, io: SharedIo) -> Option<TlsIo> {
        let tls = self.tls.as_ref()?;
        match tls.acceptor().accept(io).await {
            Ok(s) => Some(s),
            Err(e) => {
                log!(debug, "TLS handshake failed: {e}");
                None
            }
        }
    }

    /// Reads the HTTP request head; answers a page or a refusal, or
    /// upgrades `/v1/ws` to a WebSocket link.
    #[cfg(feature = "websocket")]
    async fn accept_ws(&self, mut io: WsIo, sent: Sent) -> Opened {
        use async_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
        use futures_lite::AsyncWriteExt as _;

        let (head, rest) = match web::read_head(&mut io).await {
            Ok(x) => x,
            Err(response) => {
                if let Some(r) = response {
                    answer(&mut io, r).await;
                }
                return Opened::Done;
            }
        };
        match self.site.route(&head) {
            web::Route::Upgrade { accept_key } => {
                let response = web::upgrade_response(&accept_key);
                if io.write_all(response.as_bytes()).await.is_err() || io.flush().await.is_err() {
                    return Opened::Done;
                }
                // A message is one frame: nothing larger is ever buffered
                // (the gateway holds a connection to its own bound after).
                // The library's read buffer is allocated whole per link: a
                // small one keeps an idle link cheap (its default is 128 KiB);
                // writes are flushed per batch (`link::write_loop`).
                // Its write buffer is bounded too: what the server queues
                // waits in the gateway's queue (bounded by
                // `max_queued_bytes`), and the library's own replies (pongs
                // to a peer that pings and never reads) must not pile up:
                // past the bound it keeps the newest pong only.
                let config = WebSocketConfig::default()
                    .max_message_size(Some(self.max_frame_size))
                    .max_frame_size(Some(self.max_frame_size))
                    .read_buffer_size(WS_READ_BUFFER)
                    .write_buffer_size(WS_WRITE_BUFFER)
                    .max_write_buffer_size(WS_WRITE_BUFFER + 2 * self.max_frame_size + 1024);
                let ws = async_tungstenite::WebSocketStream::from_partially_read(
                    io,
                    rest,
                    Role::Server,
                    Some(config),
                )
                .await;
                let (w, r) = ws.split();
                Opened::Link(Inbound::Ws(r), Outbound::Ws(w, sent))
            }
            web::Route::Respond(response) => {
                answer(&mut io, response).await;
                Opened::Done
            }
        }
    }
}

/// Writes an HTTP answer and closes (within the handshake's time: the
/// body is shared, so a peer that does not read holds no copy of it).
#[cfg(feature = "websocket")]
async fn answer(io: &mut WsIo, response: web::Response) {
    use futures_lite::AsyncWriteExt as _;
    let write = async {
        io.write_all(response.head.as_bytes()).await?;
        io.write_all(&response.body).await?;
        io.flush().await?;
        io.close().await
    };
    let _ = write.await;
}
