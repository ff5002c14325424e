//! The server state machine driven in memory with encoded frames and a
//! fake clock (`common::raw::Net`): every operation, limit and timing of
//! the protocol, one module per topic.
#![cfg(feature = "server")]
// `support` re-exports every import a topic may need.
#![allow(unused_imports)]

#[path = "../common/mod.rs"]
mod common;
mod support;

mod api;
mod attributes;
mod channels;
mod durable;
mod durable_props;
mod faults;
mod gateways;
mod hooks;
mod limits;
mod login;
mod nodes;
mod p2p;
mod props;
mod shards;
mod stats;
