//! # hummer-channel
//!
//! A Sans-IO implementation of the Hummer Channel real-time signalling
//! service: login with tokens, peer-to-peer messages, online status, channels
//! with broadcast, user and channel attributes, member lists and counts, and
//! the notifications for all of them.
//!
//! The heart is [`client::Session`], a state machine with no I/O, no clock
//! and no threads: you hand it what happened (a frame arrived, the transport
//! opened or broke, time passed) and commands (one method per operation of
//! the service), and you take from it what to do (frames to send, a transport
//! to open or close, when to wake it next) and what happened (typed events).
//! That makes it embeddable in any runtime, and testable, fuzzable and
//! simulatable with a fake clock. [`server::Server`] is the reference server,
//! built the same way; [`adapters`] holds thin optional drivers for smol and
//! for blocking std sockets.
//!
//! ## The run loop
//!
//! Everything a driver does fits in one loop:
//!
//! 1. feed the Session one input: `handle_connected(now, link)`,
//!    `handle_disconnected(now, link)`, `handle_frame(now, link, frame)` or
//!    `handle_timeout(now)`; or give it a command such as
//!    `send_message_to_user(now, ..)`, which returns a [`client::RequestId`];
//! 2. drain its outputs once, in this order: `poll_transport()` (open a
//!    transport for a new [`client::LinkId`], or close one),
//!    `poll_transmit()` (frames to write, as many as the transport takes),
//!    `poll_event()` (events, including one `Completed` per request id).
//!    No output creates another output, so one pass is a whole drain;
//!    [`client::Session::drain`] does exactly this pass into a
//!    [`client::Sink`];
//! 3. sleep until a frame arrives, the transport takes more frames, or
//!    `poll_timeout()` passes, then go to 1.
//!
//! Every transport the Session asks for has a [`client::LinkId`], and every
//! input names the link it came from: a late disconnect or frame from a
//! transport already replaced is ignored (and counted by
//! [`client::Session::stale_inputs`]), never credited to the new one.
//!
//! The [`server::Server`] is driven the same way, per connection: inputs
//! `accept`, `handle_frame(now, conn, frame)`, `handle_disconnected(now,
//! conn)`, `handle_timeout(now)`; outputs `poll_ready()` then
//! `poll_transmit(conn)`, `poll_transport()` (connections to close) and
//! `poll_timeout()`; [`server::Server::drain`] is the one pass.
//!
//! Here the loop runs over an in-memory "transport" to the reference server,
//! with a fake clock that jumps to the next deadline. With two machines, a
//! drain of one is an input of the other, so the pair is pumped until
//! neither has anything left:
//!
//! ```
//! use std::time::{Duration, Instant};
//! use hummer_channel::client::{Event, LinkId, Reply, SendOptions, Session, SessionConfig, TransportAction};
//! use hummer_channel::server::{ConnId, Server, ServerConfig, DEMO_APPID};
//! use hummer_channel::{Message, Region, Uid};
//!
//! let mut now = Instant::now();
//! let mut server = Server::new(ServerConfig::demo(), now, 1_700_000_000_000);
//! let mut alice = Session::new(SessionConfig::new(DEMO_APPID), now);
//! // The transport: alice's link and the server's connection for it.
//! let mut link: Option<(LinkId, ConnId)> = None;
//! let mut events = Vec::new();
//!
//! let mut pump = |alice: &mut Session, server: &mut Server, now: Instant, events: &mut Vec<Event>| loop {
//!     let mut moved = false;
//!     // Step 2 for alice: one drain.
//!     while let Some(action) = alice.poll_transport() {
//!         match action {
//!             TransportAction::Connect { link: id } => {
//!                 link = Some((id, server.accept(now)));
//!                 alice.handle_connected(now, id);
//!             }
//!             TransportAction::Close { .. } => {
//!                 if let Some((_, conn)) = link.take() { server.handle_disconnected(now, conn) }
//!             }
//!         }
//!         moved = true;
//!     }
//!     while let Some(frame) = alice.poll_transmit() {
//!         if let Some((_, conn)) = link { server.handle_frame(now, conn, frame) }
//!         moved = true;
//!     }
//!     while let Some(e) = alice.poll_event() {
//!         events.push(e);
//!     }
//!     // One drain of the server: its frames are alice's input.
//!     while let Some(conn) = server.poll_ready() {
//!         while let Some(frame) = server.poll_transmit(conn) {
//!             if let Some((id, c)) = link.filter(|(_, c)| *c == conn) {
//!                 alice.handle_frame(now, id, frame).expect("the server sends valid frames");
//!                 moved = true;
//!             }
//!         }
//!     }
//!     if !moved { break }
//! };
//!
//! alice.login(now, Uid(1), None, Some(Region::Cn)).unwrap();
//! pump(&mut alice, &mut server, now, &mut events);
//! let send = alice
//!     .send_message_to_user(now, Uid(1), Message::new("text", "hello, me"), SendOptions::default())
//!     .unwrap();
//! pump(&mut alice, &mut server, now, &mut events);
//!
//! // Step 3: nothing to read, so sleep until the next deadline (here: jump).
//! let wake = alice.poll_timeout().unwrap().min(server.poll_timeout().unwrap_or(now + Duration::from_secs(60)));
//! now = wake;
//! alice.handle_timeout(now);
//! server.handle_timeout(now);
//! pump(&mut alice, &mut server, now, &mut events);
//!
//! assert!(events.iter().any(|e| matches!(e,
//!     Event::Completed { request, result: Ok(Reply::MessageSent(_)) } if *request == send)));
//! assert!(events.iter().any(|e| matches!(e,
//!     Event::MessageFromUser { from_uid: Uid(1), message, .. } if message.content == "hello, me")));
//! ```
//!
//! A real driver replaces the closures with a socket: on a byte stream, each
//! frame is preceded by its length ([`wire::write_length_prefixed`],
//! [`wire::FrameDecoder`]). The [`adapters`] do exactly this for TCP.
//!
//! ## Contract
//!
//! - Every command returns a [`client::RequestId`] or a [`CommandError`]
//!   (nothing was sent). Every id ends in exactly one `Event::Completed`:
//!   the reply, the service's error code, 1005 (timeout) or 1007 (link lost
//!   with the outcome unknown).
//! - The Session owns reconnection: after a lost link it asks for a new
//!   transport after an exponential backoff with jitter (seeded), logs in
//!   again resuming its instance (the server keeps its channels and replays
//!   only what was missed), and resumes every reliable stream, so the
//!   application sees no gap; a gap the server reports is passed on once,
//!   as `Event::MessagesLost`.
//! - Sends are exactly-once: a reliable send whose reply was lost with the
//!   link is re-sent with the same message id after the resume, and the
//!   server answers a repeat without delivering it again.
//! - The wire is specified in `docs/protocol.md` (version 2).
//! - Time is an argument. Time going backwards is ignored.
//! - The outgoing queue is bounded: a full queue refuses commands with
//!   `CommandError::QueueFull` (handing a message back) and `Event::Writable`
//!   says when there is room (taking frames makes room: drain events after
//!   frames, as in step 2).
//!
//! ## Features
//!
//! The default features are what an embedder of the Session needs: the
//! Session, the wire codec and the blocking adapter (std only), on `bytes`,
//! `prost` and `thiserror`. Everything else is opt-in:
//!
//! - `blocking` (default): `adapters::blocking`, a client on `std::net`.
//! - `serde`: serde derives on events and public types (JSON names follow the JS SDK).
//! - `smol`: `adapters::smol`, an async client on smol / async-io.
//! - `server`: `server::Server` and JWT checking.
//! - `server-tcp`: `adapters::server_tcp`, the Server's TCP runner on smol
//!   (implies `server` and `smol`).
//! - `sim`: `sim::Sim`, a deterministic simulated network with faults
//!   (implies `server`).
//! - `tracing`: logs and spans from the Session, the Server and the TCP runner through `tracing`.
//!
//! `default-features = false` leaves the pure core. The `hummer-server`
//! binary (logging, signal handling) is a package of its own, so no feature
//! of this crate brings a logger, a signal or a CLI crate.
#![warn(missing_docs)]
#![forbid(unsafe_code)]
// docs.rs (`--cfg docsrs`, nightly): each feature-gated item shows the
// features it needs.
#![cfg_attr(docsrs, feature(doc_cfg))]
// The crate docs link into feature-gated modules: the links resolve with
// the features on (docs.rs builds with all of them) and are plain text
// without.
#![cfg_attr(
    not(all(feature = "server", feature = "smol")),
    allow(rustdoc::broken_intra_doc_links)
)]

#[macro_use]
mod trace;

pub mod adapters;
pub mod client;
pub mod error;
pub mod limits;
#[cfg(feature = "server")]
#[cfg_attr(docsrs, doc(cfg(feature = "server")))]
pub mod server;
#[cfg(feature = "sim")]
#[cfg_attr(docsrs, doc(cfg(feature = "sim")))]
pub mod sim;
pub mod types;
pub mod wire;

pub use error::{CommandError, ErrorCode, ServiceError, WireError};
pub use limits::Limits;
pub use types::{AppId, Attributes, ChannelKey, Message, Region, Uid};
