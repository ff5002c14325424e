//! What the Session hands back: events, typed replies, connection states and
//! transport actions. All plain data.

use std::collections::BTreeMap;

use crate::error::ServiceError;
use crate::types::{AppId, Attributes, ChannelKey, Message, Region, Uid};

/// Names one command's request; its completion event carries the same id.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct RequestId(pub u64);

/// A channel made by [`Session::create_channel`](super::Session::create_channel).
/// Cheap to copy; valid for the life of the Session that made it.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ChannelHandle(pub u32);

/// The connection state (`ConnectionStateChanged.state` in the JS SDK).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "SCREAMING_SNAKE_CASE"))]
pub enum ConnectionState {
    /// Not logged in.
    Disconnected,
    /// Logging in.
    Connecting,
    /// Logged in.
    Connected,
    /// The link was lost; reconnecting and re-logging-in.
    Reconnecting,
}

/// Why the state changed (`ConnectionStateChanged.reason`).
#[non_exhaustive]
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "SCREAMING_SNAKE_CASE"))]
pub enum ConnectionReason {
    /// The initial state.
    Init,
    /// `login` was called.
    Login,
    /// The login (or re-login) succeeded.
    LoginSuccess,
    /// The server refused the login.
    LoginFailure,
    /// No login reply in time.
    LoginTimeout,
    /// The link was lost.
    Interrupted,
    /// `logout` was called.
    Logout,
    /// Another login of the same uid took over.
    RemoteLogin,
    /// The app's backend closed this instance (the server API's kick,
    /// `Close` codes 4100 to 4199): the session ends, no reconnect.
    Kicked,
}

/// Names one transport the Session asked for with
/// [`TransportAction::Connect`]. Every `handle_*` call about a transport
/// names the link it came from, so input from a previous transport that
/// arrives after a re-dial (a late disconnect, a frame still in a buffer) is
/// told apart and ignored (see [`Session::stale_inputs`](super::Session::stale_inputs)).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LinkId(pub(super) u64);

impl LinkId {
    /// The link's number: links of one Session are numbered 1, 2, 3, ...
    /// in the order they were asked for.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl std::fmt::Display for LinkId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "link#{}", self.0)
    }
}

/// What the application must do with its transport, from
/// [`Session::poll_transport`](super::Session::poll_transport).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum TransportAction {
    /// Open a transport to the server for `link`, then call
    /// `handle_connected(now, link)` (or `handle_disconnected(now, link)` if
    /// it could not be opened). Name `link` in every later input from it.
    Connect {
        /// The id of the new transport.
        link: LinkId,
    },
    /// Close the transport of `link`. Nothing is left to send on it (the
    /// Session dropped its queue). Calling `handle_disconnected` for it
    /// afterwards is harmless: the link is already gone for the Session.
    Close {
        /// The transport to close.
        link: LinkId,
    },
}

impl TransportAction {
    /// The link the action is about.
    pub fn link(self) -> LinkId {
        match self {
            TransportAction::Connect { link } | TransportAction::Close { link } => link,
        }
    }
}

/// Which reliable stream lost messages (see [`Event::MessagesLost`]).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "camelCase"))]
pub enum LostStream {
    /// This session's P2P messages.
    User,
    /// A channel's messages.
    Channel(ChannelHandle),
}

/// The successful result of a request.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "camelCase"))]
pub enum Reply {
    /// A command with no data in its result (`rescode: 0`): logout, refresh
    /// token, set region, join, leave, every attribute write.
    Done,
    /// `login`.
    Login(LoginInfo),
    /// `get_instance_info`.
    InstanceInfo(InstanceInfo),
    /// `send_message_to_user`, `send_message_to_channel`.
    MessageSent(MessageSent),
    /// `query_users_online_status`: uid -> online.
    OnlineStatus(BTreeMap<Uid, bool>),
    /// `get_channel_user_list`, `get_channel_user_list_by_attribute`.
    UserList(UserList),
    /// `get_user_attributes`, `get_user_attributes_by_keys`,
    /// `get_channel_attributes`, `get_channel_attributes_by_keys`.
    Attributes(AttributesReply),
    /// `get_channel_user_count`.
    UserCount(UserCount),
}

/// The result of a login.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "camelCase"))]
pub struct LoginInfo {
    /// The server's id for this instance.
    pub instance_id: u64,
    /// When the token expires (unix ms), if it does.
    pub token_expires_at_ms: Option<u64>,
    /// The server's clock at login (unix ms).
    pub server_time_ms: u64,
    /// Logged in without a token (appid mode).
    pub is_anonymous: bool,
}

/// The result of `get_instance_info`.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "camelCase"))]
pub struct InstanceInfo {
    /// The application.
    pub appid: AppId,
    /// The user.
    pub uid: Uid,
    /// This instance.
    pub instance_id: u64,
    /// Logged in without a token (appid mode).
    pub is_anonymous: bool,
    /// The user's home region.
    pub region: Option<Region>,
    /// The channels this instance has joined, as the server sees them.
    pub channels: Vec<ChannelKey>,
}

/// The result of a send.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "camelCase"))]
pub struct MessageSent {
    /// When the server accepted it (unix ms).
    pub timestamp_ms: u64,
    /// P2P: some instance of the receiver was connected; `false` means it
    /// was stored as an offline message (reliable) or dropped (unreliable).
    /// Always `true` for channel messages.
    pub delivered_online: bool,
}

/// A member list.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "camelCase"))]
pub struct UserList {
    /// The application.
    pub appid: AppId,
    /// The channel.
    pub channel_id: String,
    /// The members, ascending.
    pub users: Vec<Uid>,
}

/// An attribute read.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "camelCase"))]
pub struct AttributesReply {
    /// The application.
    pub appid: AppId,
    /// The channel.
    pub channel_id: String,
    /// The attributes (keys asked for but missing are absent).
    pub attributes: Attributes,
    /// Channel attributes: who changed them last (None for user attributes
    /// or when never set).
    pub last_update_uid: Option<Uid>,
    /// Channel attributes: when they last changed (unix ms; 0 if never).
    pub last_update_ts: u64,
}

/// Member counts.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "camelCase"))]
pub struct UserCount {
    /// The application.
    pub appid: AppId,
    /// channel id -> members (0 for a channel nobody is in).
    pub user_count: BTreeMap<String, u32>,
}

/// Everything the Session reports, drained with
/// [`Session::poll_event`](super::Session::poll_event).
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(
    feature = "serde",
    serde(tag = "event", rename_all_fields = "camelCase")
)]
pub enum Event {
    /// The completion of a command: exactly one per [`RequestId`] handed out.
    /// Errors carry the service's code, or 1005 (timeout) / 1007 (link lost).
    Completed {
        /// The command's id.
        request: RequestId,
        /// Its outcome.
        result: Result<Reply, ServiceError>,
    },
    /// `ConnectionStateChanged`.
    ConnectionStateChanged {
        /// The new state.
        state: ConnectionState,
        /// Why.
        reason: ConnectionReason,
    },
    /// The token was refused as expired while re-logging-in after a lost
    /// link. Call `refresh_token` to continue.
    TokenExpired,
    /// The token expires soon; call `refresh_token` before it does.
    TokenWillExpire {
        /// When it expires (unix ms, server clock).
        expires_at_ms: u64,
    },
    /// `MessageFromUser`.
    MessageFromUser {
        /// The sender.
        from_uid: Uid,
        /// The message.
        message: Message,
        /// When the server accepted it (unix ms).
        timestamp_ms: u64,
    },
    /// `ChannelMessage` (also the echo of this session's own broadcasts).
    ChannelMessage {
        /// The channel.
        channel: ChannelHandle,
        /// The sender.
        from_uid: Uid,
        /// The message.
        message: Message,
        /// When the server accepted it (unix ms).
        timestamp_ms: u64,
    },
    /// `NotifyJoinChannel`: uids that joined (batched).
    NotifyJoinChannel {
        /// The channel.
        channel: ChannelHandle,
        /// Who joined.
        uids: Vec<Uid>,
    },
    /// `NotifyLeaveChannel`: uids that left (batched).
    NotifyLeaveChannel {
        /// The channel.
        channel: ChannelHandle,
        /// Who left.
        uids: Vec<Uid>,
    },
    /// `NotifyUserAttributesSet`: the whole new set.
    NotifyUserAttributesSet {
        /// The channel.
        channel: ChannelHandle,
        /// Whose attributes.
        uid: Uid,
        /// The new set.
        attributes: Attributes,
        /// When (unix ms).
        last_update_ts: u64,
    },
    /// `NotifyUserAttributesDelete`: the deleted keys.
    NotifyUserAttributesDelete {
        /// The channel.
        channel: ChannelHandle,
        /// Whose attributes.
        uid: Uid,
        /// The deleted keys.
        keys: Vec<String>,
        /// When (unix ms).
        last_update_ts: u64,
    },
    /// `NotifyUserAttributesAddOrUpdate`: the upserted ones.
    NotifyUserAttributesAddOrUpdate {
        /// The channel.
        channel: ChannelHandle,
        /// Whose attributes.
        uid: Uid,
        /// The upserted attributes.
        attributes: Attributes,
        /// When (unix ms).
        last_update_ts: u64,
    },
    /// `NotifyUserAttributesClear`.
    NotifyUserAttributesClear {
        /// The channel.
        channel: ChannelHandle,
        /// Whose attributes.
        uid: Uid,
        /// When (unix ms).
        last_update_ts: u64,
    },
    /// `NotifyChannelAttributesSet`: the whole new set.
    NotifyChannelAttributesSet {
        /// The channel.
        channel: ChannelHandle,
        /// Who changed them.
        last_update_uid: Uid,
        /// When (unix ms).
        last_update_ts: u64,
        /// The new set.
        attributes: Attributes,
    },
    /// `NotifyChannelAttributesDelete`: the deleted keys.
    NotifyChannelAttributesDelete {
        /// The channel.
        channel: ChannelHandle,
        /// Who changed them.
        last_update_uid: Uid,
        /// When (unix ms).
        last_update_ts: u64,
        /// The deleted keys.
        keys: Vec<String>,
    },
    /// `NotifyChannelAttributesAddOrUpdate`: the upserted ones.
    NotifyChannelAttributesAddOrUpdate {
        /// The channel.
        channel: ChannelHandle,
        /// Who changed them.
        last_update_uid: Uid,
        /// When (unix ms).
        last_update_ts: u64,
        /// The upserted attributes.
        attributes: Attributes,
    },
    /// `NotifyChannelAttributesClear`.
    NotifyChannelAttributesClear {
        /// The channel.
        channel: ChannelHandle,
        /// Who cleared them.
        last_update_uid: Uid,
        /// When (unix ms).
        last_update_ts: u64,
    },
    /// `NotifyUserCountChange`: the member count after a change.
    NotifyUserCountChange {
        /// The channel.
        channel: ChannelHandle,
        /// Members now.
        count: u32,
    },
    /// `RoomMemberOffline`: this instance had been dropped from the channel
    /// after its link stayed down past the server's grace period (other
    /// members saw it leave). The Session has re-joined it already.
    RoomMemberOffline {
        /// The channel.
        channel: ChannelHandle,
    },
    /// Reliable messages that can no longer be delivered: older than the
    /// server's retention, or lost with a server restart. Emitted once per gap.
    MessagesLost {
        /// Which stream.
        stream: LostStream,
        /// The first lost sequence number.
        from_seq: u64,
        /// The last lost one; `None` when unknown (the server lost its history).
        to_seq: Option<u64>,
    },
    /// The outgoing queue has room again after a command was refused with
    /// [`CommandError::QueueFull`](crate::CommandError::QueueFull).
    Writable,
}

impl Event {
    /// The message carried by a `MessageFromUser` or `ChannelMessage`.
    pub fn message(&self) -> Option<&Message> {
        match self {
            Event::MessageFromUser { message, .. } | Event::ChannelMessage { message, .. } => {
                Some(message)
            }
            _ => None,
        }
    }
}
