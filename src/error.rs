//! The service's error codes and the typed errors of this crate.

use std::fmt;

use crate::limits::LimitError;
use crate::types::Message;

/// The Hummer service's numeric result codes (hummer-api.md, "Error codes").
#[non_exhaustive]
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// 1: unknown error.
    Unknown,
    /// 100: another login of the same uid took over.
    LoginKickOut,
    /// 1001: operation before login.
    Uninitialized,
    /// 1005: no response in time (client-side).
    OperationTimeout,
    /// 1007: the link broke with the request in flight (client-side).
    ConnectionException,
    /// 1009: not logged in.
    Unauthorized,
    /// 2001: bad argument.
    InvalidParameter,
    /// 2002: bad token signature, appid or uid mismatch.
    InvalidToken,
    /// 2003: the token has expired.
    ExpiredToken,
    /// 2004: no such resource.
    ResourceNotFound,
    /// 2007: message too large.
    MsgSizeLimitExceeded,
    /// 2010: the login's protocol version is not the server's.
    UnsupportedProtocolVersion,
    /// 2011: a login on a link that is logged in already.
    AlreadyLoggedIn,
    /// 2012: the uid has as many live instances as the server allows.
    TooManyInstances,
    /// 2013: a send repeats a remembered message id with another destination.
    MessageIdReused,
    /// 2018: unknown or disabled appid.
    AppidUnavailable,
    /// 3000: not allowed.
    PermissionDeny,
    /// 4000: server fault.
    InternalServerError,
    /// 4003: rate limit hit.
    OperationTooOften,
    /// 5101: the user is not in the channel.
    UserNotInChannel,
    /// 5102: the channel is full.
    ChannelUserLimitExceeded,
    /// 5103: too many user attributes.
    UserAttributesItemsOverflow,
    /// 5104: user attributes too large.
    UserAttributesSizeOverflow,
    /// 5105: too many channel attributes.
    ChannelAttributesItemsOverflow,
    /// 5106: channel attributes too large.
    ChannelAttributesSizeOverflow,
    /// 5108: the channel has no attributes.
    ChannelAttributesNotExist,
    /// 5109: too many channels in one request or joined at once.
    ChannelCountLimitExceeded,
    /// A code this version does not know.
    Other(u32),
}

impl ErrorCode {
    const TABLE: [(ErrorCode, u32); 27] = [
        (ErrorCode::Unknown, 1),
        (ErrorCode::LoginKickOut, 100),
        (ErrorCode::Uninitialized, 1001),
        (ErrorCode::OperationTimeout, 1005),
        (ErrorCode::ConnectionException, 1007),
        (ErrorCode::Unauthorized, 1009),
        (ErrorCode::InvalidParameter, 2001),
        (ErrorCode::InvalidToken, 2002),
        (ErrorCode::ExpiredToken, 2003),
        (ErrorCode::ResourceNotFound, 2004),
        (ErrorCode::MsgSizeLimitExceeded, 2007),
        (ErrorCode::UnsupportedProtocolVersion, 2010),
        (ErrorCode::AlreadyLoggedIn, 2011),
        (ErrorCode::TooManyInstances, 2012),
        (ErrorCode::MessageIdReused, 2013),
        (ErrorCode::AppidUnavailable, 2018),
        (ErrorCode::PermissionDeny, 3000),
        (ErrorCode::InternalServerError, 4000),
        (ErrorCode::OperationTooOften, 4003),
        (ErrorCode::UserNotInChannel, 5101),
        (ErrorCode::ChannelUserLimitExceeded, 5102),
        (ErrorCode::UserAttributesItemsOverflow, 5103),
        (ErrorCode::UserAttributesSizeOverflow, 5104),
        (ErrorCode::ChannelAttributesItemsOverflow, 5105),
        (ErrorCode::ChannelAttributesSizeOverflow, 5106),
        (ErrorCode::ChannelAttributesNotExist, 5108),
        (ErrorCode::ChannelCountLimitExceeded, 5109),
    ];

    /// The numeric code on the wire.
    pub fn code(self) -> u32 {
        match self {
            ErrorCode::Other(c) => c,
            known => Self::TABLE
                .iter()
                .find(|(k, _)| *k == known)
                .map_or(1, |(_, c)| *c),
        }
    }

    /// From the numeric code on the wire.
    pub fn from_code(code: u32) -> ErrorCode {
        Self::TABLE
            .iter()
            .find(|(_, c)| *c == code)
            .map_or(ErrorCode::Other(code), |(k, _)| *k)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} ({})", self, self.code())
    }
}

#[cfg(feature = "serde")]
#[cfg_attr(docsrs, doc(cfg(feature = "serde")))]
impl serde::Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u32(self.code())
    }
}

#[cfg(feature = "serde")]
#[cfg_attr(docsrs, doc(cfg(feature = "serde")))]
impl<'de> serde::Deserialize<'de> for ErrorCode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        <u32 as serde::Deserialize>::deserialize(d).map(ErrorCode::from_code)
    }
}

/// A request that failed: the service's code and its message. Client-side
/// failures use the same codes (1005 timeout, 1007 link lost).
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
            CommandError::NotLoggedIn => ErrorCode::Uninitialized,
            CommandError::AlreadyLoggedIn | CommandError::AlreadyJoined => {
                ErrorCode::InvalidParameter
            }
            CommandError::NotConnected => ErrorCode::ConnectionException,
            CommandError::Invalid(e) => e.code(),
            CommandError::UnknownChannel => ErrorCode::ResourceNotFound,
            CommandError::NotInChannel => ErrorCode::UserNotInChannel,
            CommandError::QueueFull { .. } => ErrorCode::OperationTooOften,
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
    #[error("malformed frame: {0}")]
    Malformed(String),
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
        WireError::Malformed(e.to_string())
    }
}
