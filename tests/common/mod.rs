//! The one test harness, shared by the scripted, server and end-to-end tests:
//!
//! - [`clock`]: the fake clock (time is an argument; it jumps to the next deadline);
//! - [`sinks`]: `client::Sink` and `server::Sink` that collect a drain, with
//!   a limit on how many frames the "transport" takes (backpressure);
//! - [`raw`]: one Server driven with encoded frames (`Net`), and the wire helpers;
//! - [`script`]: one Session fed scripted server frames (`Script`), tracking its link;
//! - [`pair`]: one Server and N Sessions wired in memory (`Pair`), zero latency;
//! - `tcp.rs`: a raw-frame client over real TCP, for the runner's and the
//!   binary's tests (they include it by path: it needs no other module).
#![allow(dead_code, unused_imports)]

pub mod clock;
#[cfg(feature = "server")]
pub mod pair;
#[cfg(feature = "server")]
pub mod raw;
pub mod script;
pub mod sinks;
#[cfg(feature = "server")]
pub mod store;

/// An encoded frame (`request_id`, `body`).
pub fn raw_frame(request_id: u64, body: hummer_channel::wire::Body) -> bytes::Bytes {
    hummer_channel::wire::encode_frame(&hummer_channel::wire::Frame {
        request_id,
        body: Some(body),
    })
}
