//! Who sends each body: the one place both state machines ask.

use super::Body;

/// The role of a frame's body in the protocol.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum BodyKind {
    /// Link control either side may send: ping, pong, ack, close.
    Control,
    /// Client -> server, with a non-zero request id.
    Request,
    /// Server -> client, answering the request of the same id.
    Reply,
    /// Server -> client, unasked (request id 0).
    Push,
}

impl Body {
    /// The role of this body.
    pub fn kind(&self) -> BodyKind {
        match self {
            Body::Ping(_) | Body::Pong(_) | Body::Ack(_) | Body::Close(_) => BodyKind::Control,
            Body::Login(_)
            | Body::Logout(_)
            | Body::RefreshToken(_)
            | Body::SetUserRegion(_)
            | Body::GetInstanceInfo(_)
            | Body::SendToUser(_)
            | Body::QueryOnline(_)
            | Body::Join(_)
            | Body::Leave(_)
            | Body::SendToChannel(_)
            | Body::WriteUserAttributes(_)
            | Body::WriteChannelAttributes(_)
            | Body::GetUserList(_)
            | Body::GetUserAttributes(_)
            | Body::GetChannelAttributes(_)
            | Body::GetUserCount(_)
            | Body::GetUserListByAttribute(_)
            | Body::Fetch(_) => BodyKind::Request,
            Body::Error(_)
            | Body::LoginReply(_)
            | Body::Ok(_)
            | Body::InstanceInfo(_)
            | Body::SendReply(_)
            | Body::OnlineStatus(_)
            | Body::UserList(_)
            | Body::Attributes(_)
            | Body::UserCount(_)
            | Body::JoinReply(_)
            | Body::FetchReply(_)
            | Body::RefreshTokenReply(_) => BodyKind::Reply,
            Body::UserMessage(_)
            | Body::ChannelMessage(_)
            | Body::Membership(_)
            | Body::UserAttributesChanged(_)
            | Body::ChannelAttributesChanged(_)
            | Body::UserCountChanged(_)
            | Body::TokenWillExpire(_) => BodyKind::Push,
        }
    }
}
