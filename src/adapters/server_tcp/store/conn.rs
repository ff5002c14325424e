//! One connection to one Redis: opened with smol (TLS with rustls for
//! `rediss://`), driven by the calling task while a request waits, and
//! dropped after any failure below the replies.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use futures_lite::future;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, RedisError, Value};

use super::config::{Endpoint, StoreConfig};
use super::StoreError;

/// Whether `e` is worth retrying later (else the request itself is wrong).
pub(super) fn from_redis(e: RedisError) -> StoreError {
    use redis::{ErrorKind, ServerErrorKind};
    let transient = e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || matches!(
            e.kind(),
            ErrorKind::Server(
                ServerErrorKind::BusyLoading
                    | ServerErrorKind::TryAgain
                    | ServerErrorKind::MasterDown
                    | ServerErrorKind::ReadOnly
                    | ServerErrorKind::ClusterDown
            )
        );
    if transient {
        StoreError::Unavailable(e.to_string())
    } else {
        StoreError::Invalid(e.to_string())
    }
}

type Driver = Pin<Box<dyn Future<Output = ()> + Send>>;

/// One open connection and the future that reads and writes its socket.
pub(super) struct Conn {
    redis: MultiplexedConnection,
    driver: Driver,
    /// Whether this connection read the generation back.
    pub(super) checked: bool,
    /// Whether a request on it failed below the replies (I/O, timeout, a
    /// reply that does not parse): it is not used again.
    broken: bool,
}

impl Conn {
    /// Whether it can no longer be used: a request failed on it, or its
    /// socket closed since the last call (polling the driver once reads
    /// whatever end of stream arrived).
    pub(super) async fn is_dead(&mut self) -> bool {
        self.broken || future::poll_once(self.driver.as_mut()).await.is_some()
    }
}

/// Sends `pipe`, skipping the first `skip` replies and returning the
/// `count` after them, while driving the connection, within `timeout`.
pub(super) async fn send(
    conn: &mut Conn,
    pipe: &redis::Pipeline,
    skip: usize,
    count: usize,
    timeout: Duration,
) -> Result<Vec<Value>, StoreError> {
    let Conn {
        redis,
        driver,
        broken,
        ..
    } = conn;
    let request = async {
        redis
            .send_packed_commands(pipe, skip, count)
            .await
            .map_err(from_redis)
    };
    let closed = async {
        driver.as_mut().await;
        Err(StoreError::Unavailable("the connection closed".into()))
    };
    let late = async {
        async_io::Timer::after(timeout).await;
        Err(StoreError::Unavailable(format!(
            "no reply within {timeout:?}"
        )))
    };
    let result = future::or(request, future::or(closed, late)).await;
    // Whatever failed (and the request possibly half sent), the replies
    // on this connection can no longer be matched to their requests.
    *broken |= result.is_err();
    result
}

/// Sends the one command `cmd` (see [`send`]): its reply.
pub(super) async fn send_one(
    conn: &mut Conn,
    cmd: redis::Cmd,
    timeout: Duration,
) -> Result<Value, StoreError> {
    let mut pipe = redis::pipe();
    pipe.add_command(cmd);
    Ok(send(conn, &pipe, 0, 1, timeout)
        .await?
        .pop()
        .unwrap_or(Value::Nil))
}

/// A new connection to `endpoint`, one of `config`'s Redis instances, set
/// up (`AUTH`, `SELECT`), within the connect timeout.
pub(super) async fn open(config: &StoreConfig, endpoint: &Endpoint) -> Result<Conn, StoreError> {
    let timeout = config.connect_timeout;
    let late = async {
        async_io::Timer::after(timeout).await;
        Err(StoreError::Unavailable(format!(
            "{}: no connection within {timeout:?}",
            endpoint.shown
        )))
    };
    future::or(open_now(config, endpoint), late).await
}

async fn open_now(config: &StoreConfig, endpoint: &Endpoint) -> Result<Conn, StoreError> {
    let shown = &endpoint.shown;
    let tcp = smol::net::TcpStream::connect((endpoint.host.as_str(), endpoint.port))
        .await
        .map_err(|e| StoreError::Unavailable(format!("{shown}: {e}")))?;
    let _ = tcp.set_nodelay(true);
    // redis-rs's own reply timeout (500 ms by default) would cut every
    // reply that takes longer short, whatever `response_timeout` says: a
    // large load or batch would never go through. `send` bounds each reply
    // with ours; the connect timeout bounds the setup.
    let setup = AsyncConnectionConfig::new()
        .set_response_timeout(None)
        .set_connection_timeout(None);
    let (redis, driver) = if endpoint.tls {
        let tls =
            crate::adapters::tls_client::connect(&endpoint.host, config.ca_pem.as_deref(), tcp)
                .await
                .map_err(|e| match e.kind() {
                    io::ErrorKind::InvalidInput | io::ErrorKind::InvalidData => {
                        StoreError::Invalid(format!("{shown}: TLS: {e}"))
                    }
                    _ => StoreError::Unavailable(format!("{shown}: TLS: {e}")),
                })?;
        let (redis, driver) =
            MultiplexedConnection::new_with_config(&endpoint.redis, Compat(tls), setup)
                .await
                .map_err(|e| setup_error(shown, e))?;
        (redis, Box::pin(driver) as Driver)
    } else {
        let (redis, driver) =
            MultiplexedConnection::new_with_config(&endpoint.redis, Compat(tcp), setup)
                .await
                .map_err(|e| setup_error(shown, e))?;
        (redis, Box::pin(driver) as Driver)
    };
    Ok(Conn {
        redis,
        driver,
        checked: false,
        broken: false,
    })
}

fn setup_error(shown: &str, e: RedisError) -> StoreError {
    match from_redis(e) {
        StoreError::Unavailable(why) => StoreError::Unavailable(format!("{shown}: {why}")),
        StoreError::Invalid(why) => StoreError::Invalid(format!("{shown}: {why}")),
        other => other,
    }
}

/// A futures-io stream as the tokio I/O traits redis-rs's connection reads
/// and writes through.
struct Compat<S>(S);

impl<S: futures_lite::AsyncRead + Unpin> tokio::io::AsyncRead for Compat<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let n = ready!(Pin::new(&mut self.0).poll_read(cx, buf.initialize_unfilled()))?;
        buf.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl<S: futures_lite::AsyncWrite + Unpin> tokio::io::AsyncWrite for Compat<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_close(cx)
    }
}
