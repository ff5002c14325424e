//! The client: a transport-free [`Session`] state machine.

mod config;
mod event;
mod session;

pub use config::{AttributeOptions, SendOptions, SessionConfig, Timing};
pub use event::{
    AttributesReply, ChannelHandle, ConnectionReason, ConnectionState, Event, InstanceInfo,
    LoginInfo, LostStream, MessageSent, Reply, RequestId, TransportAction, UserCount, UserList,
};
pub use session::Session;
