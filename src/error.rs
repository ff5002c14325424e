//! The service's error codes and the typed errors of this crate.

use std::fmt;

use crate::limits::LimitError;
use crate::types::Message;

/// A result code of the service (hummer-api.md, "Error codes";
/// `docs/protocol.md`, "Error codes"): a newtype over the number on the
/// wire, so that equality and lookup are by number. The codes this version
/// knows are the associated constants; any other number is a valid code too
/// (a client treats an unknown code as a failure of the request).
///
/// ```
/// use hummer_channel::ErrorCode;
///
/// assert_eq!(ErrorCode::new(5101), ErrorCode::USER_NOT_IN_CHANNEL);
/// assert_eq!(ErrorCode::USER_NOT_IN_CHANNEL.code(), 5101);
/// assert_eq!(ErrorCode::new(5101).name(), Some("USER_NOT_IN_CHANNEL"));
/// assert_eq!(ErrorCode::new(9999).name(), None);
/// assert_eq!(ErrorCode::USER_NOT_IN_CHANNEL.to_string(), "USER_NOT_IN_CHANNEL (5101)");
/// ```
#[derive(Copy, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ErrorCode(u32);

impl ErrorCode {
    /// 1: unknown error.
    pub const UNKNOWN: ErrorCode = ErrorCode(1);
    /// 100: another login of the same uid took over.
    pub const LOGIN_KICK_OUT: ErrorCode = ErrorCode(100);
    /// 1001: operation before login.
    pub const UNINITIALIZED: ErrorCode = ErrorCode(1001);
    /// 1005: no response in time (client-side).
    pub const OPERATION_TIMEOUT: ErrorCode = ErrorCode(1005);
    /// 1007: the link broke with the request in flight (client-side).
    pub const CONNECTION_EXCEPTION: ErrorCode = ErrorCode(1007);
    /// 1009: not logged in.
    pub const UNAUTHORIZED: ErrorCode = ErrorCode(1009);
    /// 2001: bad argument.
    pub const INVALID_PARAMETER: ErrorCode = ErrorCode(2001);
    /// 2002: bad token signature, appid or uid mismatch.
    pub const INVALID_TOKEN: ErrorCode = ErrorCode(2002);
    /// 2003: the token has expired.
    pub const EXPIRED_TOKEN: ErrorCode = ErrorCode(2003);
    /// 2004: no such resource.
    pub const RESOURCE_NOT_FOUND: ErrorCode = ErrorCode(2004);
    /// 2007: message too large.
    pub const MSG_SIZE_LIMIT_EXCEEDED: ErrorCode = ErrorCode(2007);
    /// 2010: the login's protocol version is not the server's.
    pub const UNSUPPORTED_PROTOCOL_VERSION: ErrorCode = ErrorCode(2010);
    /// 2011: a login on a link that is logged in already.
    pub const ALREADY_LOGGED_IN: ErrorCode = ErrorCode(2011);
    /// 2012: the uid has as many live instances as the server allows.
    pub const TOO_MANY_INSTANCES: ErrorCode = ErrorCode(2012);
    /// 2013: a send repeats a remembered message id with another destination.
    pub const MESSAGE_ID_REUSED: ErrorCode = ErrorCode(2013);
    /// 2018: unknown or disabled appid.
    pub const APPID_UNAVAILABLE: ErrorCode = ErrorCode(2018);
    /// 3000: not allowed.
    pub const PERMISSION_DENY: ErrorCode = ErrorCode(3000);
    /// 4000: server fault.
    pub const INTERNAL_SERVER_ERROR: ErrorCode = ErrorCode(4000);
    /// 4003: rate limit hit.
    pub const OPERATION_TOO_OFTEN: ErrorCode = ErrorCode(4003);
    /// 4010: the server cannot store state now (its store is unreachable):
    /// nothing was done; retry later.
    pub const SERVICE_UNAVAILABLE: ErrorCode = ErrorCode(4010);
    /// 5101: the user is not in the channel.
    pub const USER_NOT_IN_CHANNEL: ErrorCode = ErrorCode(5101);
    /// 5102: the channel is full.
    pub const CHANNEL_USER_LIMIT_EXCEEDED: ErrorCode = ErrorCode(5102);
    /// 5103: too many user attributes.
    pub const USER_ATTRIBUTES_ITEMS_OVERFLOW: ErrorCode = ErrorCode(5103);
    /// 5104: user attributes too large.
    pub const USER_ATTRIBUTES_SIZE_OVERFLOW: ErrorCode = ErrorCode(5104);
    /// 5105: too many channel attributes.
    pub const CHANNEL_ATTRIBUTES_ITEMS_OVERFLOW: ErrorCode = ErrorCode(5105);
    /// 5106: channel attributes too large.
    pub const CHANNEL_ATTRIBUTES_SIZE_OVERFLOW: ErrorCode = ErrorCode(5106);
    /// 5108: the channel has no attributes.
    pub const CHANNEL_ATTRIBUTES_NOT_EXIST: ErrorCode = ErrorCode(5108);
    /// 5109: too many channels in one request or joined at once.
    pub const CHANNEL_COUNT_LIMIT_EXCEEDED: ErrorCode = ErrorCode(5109);

    /// The code `code` (known to this version or not).
    pub const fn new(code: u32) -> ErrorCode {
        ErrorCode(code)
    }

    /// The numeric code on the wire.
    pub const fn code(self) -> u32 {
        self.0
    }

    /// The code's name in the spec (`USER_NOT_IN_CHANNEL`), if this version
    /// knows it.
    pub const fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            1 => "UNKNOWN",
            100 => "LOGIN_KICK_OUT",
            1001 => "UNINITIALIZED",
            1005 => "OPERATION_TIMEOUT",
            1007 => "CONNECTION_EXCEPTION",
            1009 => "UNAUTHORIZED",
            2001 => "INVALID_PARAMETER",
            2002 => "INVALID_TOKEN",
            2003 => "EXPIRED_TOKEN",
            2004 => "RESOURCE_NOT_FOUND",
            2007 => "MSG_SIZE_LIMIT_EXCEEDED",
            2010 => "UNSUPPORTED_PROTOCOL_VERSION",
            2011 => "ALREADY_LOGGED_IN",
            2012 => "TOO_MANY_INSTANCES",
            2013 => "MESSAGE_ID_REUSED",
            2018 => "APPID_UNAVAILABLE",
            3000 => "PERMISSION_DENY",
            4000 => "INTERNAL_SERVER_ERROR",
            4003 => "OPERATION_TOO_OFTEN",
            4010 => "SERVICE_UNAVAILABLE",
            5101 => "USER_NOT_IN_CHANNEL",
            5102 => "CHANNEL_USER_LIMIT_EXCEEDED",
            5103 => "USER_ATTRIBUTES_ITEMS_OVERFLOW",
            5104 => "USER_ATTRIBUTES_SIZE_OVERFLOW",
            5105 => "CHANNEL_ATTRIBUTES_ITEMS_OVERFLOW",
            5106 => "CHANNEL_ATTRIBUTES_SIZE_OVERFLOW",
            5108 => "CHANNEL_ATTRIBUTES_NOT_EXIST",
            5109 => "CHANNEL_COUNT_LIMIT_EXCEEDED",
            _ => return None,
        })
    }
}

impl From<u32> for ErrorCode {
    fn from(code: u32) -> Self {
        ErrorCode(code)
    }
}

impl From<ErrorCode> for u32 {
    fn from(code: ErrorCode) -> Self {
        code.0
    }
}

impl fmt::Debug for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "ErrorCode::{name}"),
            None => write!(f, "ErrorCode({})", self.0),
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "{name} ({})", self.0),
            None => write!(f, "code {}", self.0),
        }
    }
}

#[cfg(feature = "serde")]
#[cfg_attr(docsrs, doc(cfg(feature = "serde")))]
impl serde::Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u32(self.0)
    }
}

#[cfg(feature = "serde")]
#[cfg_attr(docsrs, doc(cfg(feature = "serde")))]
impl<'de> serde::Deserialize<'de> for ErrorCode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        <u32 as serde::Deserialize>::deserialize(d).map(ErrorCode)
    }
}

/// A request that failed: the service's code and its message. Client-side
/// failures use the same codes (1005 timeout, 1007 link lost).
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "camelCase"))]
#[error("{code}: {message}")]
pub struct ServiceError {
    /// The result code (`rescode` in the JS SDK).
    #[cfg_attr(feature = "serde", serde(rename = "rescode"))]
    pub code: ErrorCode,
    /// A human-readable message (`msg` in the JS SDK).
    #[cfg_attr(feature = "serde", serde(rename = "msg"))]
    pub message: String,
}

impl ServiceError {
    /// An error with `code` and `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ServiceError {
            code,
            message: message.into(),
        }
    }
}

impl From<LimitError> for ServiceError {
    fn from(e: LimitError) -> Self {
        ServiceError::new(e.code(), e.to_string())
    }
}

/// A command the [`Session`](crate::client::Session) refused before sending
/// anything. Nothing went on the wire and no completion event will follow.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// The session is not logged in (call `login` first). Code 1001.
    #[error("not logged in: call login first")]
    NotLoggedIn,
    /// A login is already in progress or done. Code 2001.
    #[error("already logged in or logging in")]
    AlreadyLoggedIn,
    /// The link is down (reconnecting) or a re-join is in progress; retry
    /// after the next `ConnectionStateChanged` to CONNECTED. Code 1007.
    #[error("not connected: the session is reconnecting")]
    NotConnected,
    /// An argument breaks a documented limit.
    #[error(transparent)]
    Invalid(#[from] LimitError),
    /// The channel handle was not made by this session. Code 2004.
    #[error("unknown channel handle")]
    UnknownChannel,
    /// The channel is not joined. Code 5101.
    #[error("not a member of this channel: join it first")]
    NotInChannel,
    /// The channel is already joined or being joined. Code 2001.
    #[error("the channel is already joined")]
    AlreadyJoined,
    /// The outgoing queue or the table of requests in flight is full. The
    /// message (for sends) is handed back; `Event::Writable` says when to retry.
    /// Code 4003.
    #[error("outgoing queue full: retry after Event::Writable")]
    QueueFull {
        /// The message of a refused send, handed back.
        message: Option<Box<Message>>,
    },
}

impl CommandError {
    /// The service code this error corresponds to.
    pub fn code(&self) -> ErrorCode {
        match self {
            CommandError::NotLoggedIn => ErrorCode::UNINITIALIZED,
            CommandError::AlreadyLoggedIn | CommandError::AlreadyJoined => {
                ErrorCode::INVALID_PARAMETER
            }
            CommandError::NotConnected => ErrorCode::CONNECTION_EXCEPTION,
            CommandError::Invalid(e) => e.code(),
            CommandError::UnknownChannel => ErrorCode::RESOURCE_NOT_FOUND,
            CommandError::NotInChannel => ErrorCode::USER_NOT_IN_CHANNEL,
            CommandError::QueueFull { .. } => ErrorCode::OPERATION_TOO_OFTEN,
        }
    }
}

/// A malformed input on the wire. Every malformed frame maps to one of these;
/// decoding never panics.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The length prefix announces more than the configured maximum.
    #[error("frame of {len} bytes exceeds the maximum of {max}")]
    FrameTooLarge {
        /// The announced length.
        len: usize,
        /// The configured maximum.
        max: usize,
    },
    /// A zero-length frame (a frame always holds at least its body).
    #[error("empty frame")]
    EmptyFrame,
    /// The protobuf bytes do not decode.
    #[error("malformed frame")]
    Malformed(#[source] prost::DecodeError),
    /// The frame decoded but carries no body this version knows.
    #[error("frame without a known body")]
    MissingBody,
    /// A field holds a value out of its range (an unknown enum value, a zero id).
    #[error("invalid field {field}: {reason}")]
    InvalidField {
        /// The field's name in the schema.
        field: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The stream ended in the middle of a frame.
    #[error("stream ended inside a frame ({buffered} bytes buffered)")]
    Truncated {
        /// How many bytes of the partial frame were buffered.
        buffered: usize,
    },
    /// A frame arrived that makes no sense in this state (a reply to no
    /// request, a request sent to a client).
    #[error("unexpected frame: {0}")]
    Unexpected(&'static str),
}

impl From<prost::DecodeError> for WireError {
    fn from(e: prost::DecodeError) -> Self {
        WireError::Malformed(e)
    }
}
