//! Session configuration: identity, limits, timers, queue bounds and the seed.

use std::time::Duration;

use crate::limits::Limits;
use crate::types::AppId;

/// How a [`Session`](super::Session) behaves. `SessionConfig::new(appid)` gives
/// the documented defaults.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionConfig {
    /// The application id.
    pub appid: AppId,
    /// The limits checked before sending (the server's must match).
    pub limits: Limits,
    /// Timers.
    pub timing: Timing,
    /// Seeds the reconnect jitter: the same seed and inputs give the same run.
    pub seed: u64,
    /// Frames the outgoing queue holds before commands are refused with
    /// [`CommandError::QueueFull`](crate::CommandError::QueueFull).
    pub max_outgoing_frames: usize,
    /// Requests in flight before commands are refused likewise.
    pub max_pending_requests: usize,
    /// Reliable messages held out of order while a gap is being fetched.
    pub max_reorder_buffer: usize,
}

impl SessionConfig {
    /// The defaults for `appid`.
    pub fn new(appid: AppId) -> Self {
        SessionConfig {
            appid,
            limits: Limits::default(),
            timing: Timing::default(),
            seed: 0,
            max_outgoing_frames: 1024,
            max_pending_requests: 1024,
            max_reorder_buffer: 1024,
        }
    }
}

/// The Session's timers.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timing {
    /// A ping goes out when nothing was sent for this long.
    pub heartbeat_interval: Duration,
    /// The link is declared dead when nothing arrived for this long.
    pub idle_timeout: Duration,
    /// From `login` (or a re-dial) to the login reply.
    pub login_timeout: Duration,
    /// For message sends.
    pub message_timeout: Duration,
    /// For every other request.
    pub request_timeout: Duration,
    /// The first reconnect delay; it doubles up to `reconnect_max`, with
    /// jitter of up to half of it.
    pub reconnect_min: Duration,
    /// The longest reconnect delay.
    pub reconnect_max: Duration,
    /// How long a received reliable P2P message may wait for its ack (acks
    /// are coalesced within this window).
    pub ack_delay: Duration,
    /// `TokenWillExpire` fires this long before the token's expiry.
    pub token_warning: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            heartbeat_interval: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            login_timeout: Duration::from_secs(12),
            message_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(5),
            reconnect_min: Duration::from_millis(250),
            reconnect_max: Duration::from_secs(30),
            ack_delay: Duration::from_millis(50),
            token_warning: Duration::from_secs(30),
        }
    }
}

/// Options of a send.
#[non_exhaustive]
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct SendOptions {
    /// Reliable (the default): sequenced, stored, replayed after a reconnect,
    /// delivered exactly once. Unreliable: may be lost, never duplicated.
    pub reliable: bool,
}

impl Default for SendOptions {
    fn default() -> Self {
        SendOptions { reliable: true }
    }
}

impl SendOptions {
    /// A reliable send (the default).
    pub fn reliable() -> Self {
        SendOptions { reliable: true }
    }

    /// An unreliable send: may be lost, never duplicated.
    pub fn unreliable() -> Self {
        SendOptions { reliable: false }
    }
}

/// Options of an attribute write.
#[non_exhaustive]
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct AttributeOptions {
    /// Notify the channel's members of the change. **Default: `true`**, as the
    /// Hummer 3.1 service always did (the 3.2 JS SDK defaults to `false`; set
    /// it to `false` to match that).
    pub enable_notification: bool,
}

impl Default for AttributeOptions {
    fn default() -> Self {
        AttributeOptions {
            enable_notification: true,
        }
    }
}

impl AttributeOptions {
    /// A write that notifies the channel's members (`true`) or not.
    pub fn notify(enable_notification: bool) -> Self {
        AttributeOptions {
            enable_notification,
        }
    }
}
