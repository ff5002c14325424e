//! placeholder crate docs
#![warn(missing_docs)]

pub mod error;
pub mod limits;
pub mod types;
pub mod wire;

pub use error::{CommandError, ErrorCode, ServiceError, WireError};
pub use limits::Limits;
pub use types::{AppId, Attributes, ChannelKey, Message, Region, Uid};
pub mod adapters;
pub mod client;
#[cfg(feature = "server")]
pub mod server;
