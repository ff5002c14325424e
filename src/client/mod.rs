//! The client: a transport-free [`Session`] state machine.

mod channel;
mod commands;
mod config;
mod event;
mod incoming;
mod requests;
mod rng;
mod seq;
mod session;
mod timer;

pub use config::{AttributeOptions, SendOptions, SessionConfig, Timing};
pub use event::{
    AttributesReply, ChannelHandle, ConnectionReason, ConnectionState, Event, InstanceInfo, LinkId,
    LoginInfo, LostStream, MessageSent, Reply, RequestId, TransportAction, UserCount, UserList,
};
pub use session::{Session, Sink};
