//! Transport adapters: ready-made run loops that drive a
//! [`Session`](crate::client::Session) over TCP, TLS or WebSocket (an
//! [`Endpoint`] names the server by URL: `tcp://`, `tls://`, `ws://`,
//! `wss://`).
//!
//! - [`smol`] (feature `smol`): an async [`Client`](smol::Client) on smol /
//!   async-io, one driver task per client.
//! - [`blocking`] (feature `blocking`): a blocking
//!   [`Client`](blocking::Client) on `std::net`, with a driver thread.
//!
//! Both have the same operations (generated from one list), the same error
//! type [`ClientError`] and the same event backpressure (nothing is dropped:
//! a full event queue pauses reading from the server). For another runtime,
//! write the loop yourself: see `examples/custom_transport.rs`.

#[cfg(any(feature = "smol", feature = "blocking"))]
mod driver;
#[cfg(any(feature = "smol", feature = "blocking"))]
mod endpoint;
#[cfg(all(
    any(feature = "smol", feature = "blocking"),
    any(feature = "tls", feature = "websocket")
))]
mod link;

#[cfg(any(feature = "smol", feature = "blocking"))]
#[cfg_attr(docsrs, doc(cfg(any(feature = "smol", feature = "blocking"))))]
pub use endpoint::{Endpoint, Endpoints, NoEndpoints, Scheme, ServerUrl, TlsRoots, UrlError};

/// The error of a dial to a URL whose transport this build leaves out.
#[cfg(all(
    any(feature = "smol", feature = "blocking"),
    not(all(feature = "tls", feature = "websocket"))
))]
pub(crate) fn link_unsupported(scheme: Scheme) -> std::io::Error {
    let feature = match scheme.is_tls() {
        true => "tls",
        false => "websocket",
    };
    std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        format!(
            "{}:// needs the `{feature}` feature of hummer-channel",
            scheme.as_str()
        ),
    )
}

#[cfg(any(feature = "smol", feature = "blocking"))]
#[cfg_attr(docsrs, doc(cfg(any(feature = "smol", feature = "blocking"))))]
pub use driver::{ClientError, DEFAULT_EVENT_CAPACITY};

#[cfg(feature = "blocking")]
#[cfg_attr(docsrs, doc(cfg(feature = "blocking")))]
pub mod blocking;
#[cfg(feature = "smol")]
#[cfg_attr(docsrs, doc(cfg(feature = "smol")))]
pub mod smol;

#[cfg(feature = "server-tcp")]
#[cfg_attr(docsrs, doc(cfg(feature = "server-tcp")))]
pub mod server_tcp;
#[cfg(any(
    all(feature = "tls", any(feature = "smol", feature = "blocking")),
    feature = "redis"
))]
mod tls_client;
