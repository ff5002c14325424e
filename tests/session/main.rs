//! The Session, driven by scripted server frames and a fake clock
//! (`common::script::Script`) or against the real server (`common::pair`),
//! and its properties. One module per topic.
// `support` re-exports every import a topic may need.
#![allow(unused_imports)]

#[path = "../common/mod.rs"]
mod common;
mod support;

mod channels;
mod flow;
mod link;
mod login;
mod operations;
mod p2p;
mod props;
#[cfg(feature = "tracing")]
mod tracing_events;
