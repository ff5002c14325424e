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

/// The largest field number of a `Frame`'s body (the size of tables
/// indexed by [`FramePeek::body_tag`]).
pub const MAX_BODY_TAG: u32 = 66;

/// Each body's field number in `Frame` and its name in `proto/`
/// (`docs/protocol.md` lists the same).
const BODY_NAMES: [(u32, &str); 41] = [
    (2, "ping"),
    (3, "pong"),
    (4, "ack"),
    (5, "error"),
    (6, "close"),
    (10, "login"),
    (11, "logout"),
    (12, "refresh_token"),
    (13, "set_user_region"),
    (14, "get_instance_info"),
    (15, "send_to_user"),
    (16, "query_online"),
    (17, "join"),
    (18, "leave"),
    (19, "send_to_channel"),
    (20, "write_user_attributes"),
    (21, "write_channel_attributes"),
    (22, "get_user_list"),
    (23, "get_user_attributes"),
    (24, "get_channel_attributes"),
    (25, "get_user_count"),
    (26, "get_user_list_by_attribute"),
    (27, "fetch"),
    (40, "login_reply"),
    (41, "ok"),
    (42, "instance_info"),
    (43, "send_reply"),
    (44, "online_status"),
    (45, "user_list"),
    (46, "attributes"),
    (47, "user_count"),
    (48, "join_reply"),
    (49, "fetch_reply"),
    (50, "refresh_token_reply"),
    (60, "user_message"),
    (61, "channel_message"),
    (62, "membership"),
    (63, "user_attributes_changed"),
    (64, "channel_attributes_changed"),
    (65, "user_count_changed"),
    (66, "token_will_expire"),
];

/// The name of the body with field number `tag` in `Frame` (`"login"`,
/// `"channel_message"`, ...), `None` for a number the protocol does not use.
pub fn body_name(tag: u32) -> Option<&'static str> {
    BODY_NAMES.iter().find(|(t, _)| *t == tag).map(|(_, n)| *n)
}

/// What the first bytes of an encoded `Frame` tell without decoding it.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct FramePeek {
    /// The frame's request id (0 for a push or a link control frame).
    pub request_id: u64,
    /// The field number of its body (see [`body_name`]).
    pub body_tag: u32,
}

/// Reads the request id and the body's field number at the start of an
/// encoded `Frame` (no length prefix), as [`encode_frame`](super::encode_frame)
/// writes it: the request id first when it is not zero, then the body.
/// `None` when the bytes do not start that way (the frame may still be
/// valid protobuf, written in another field order); counters only use this,
/// never the protocol.
pub fn peek_frame(frame: &[u8]) -> Option<FramePeek> {
    let mut at = frame;
    let mut request_id = 0;
    let mut key = read_varint(&mut at)?;
    if key == 1 << 3 {
        request_id = read_varint(&mut at)?;
        key = read_varint(&mut at)?;
    }
    // A body is a length-delimited field (wire type 2).
    if key & 7 != 2 {
        return None;
    }
    let body_tag = u32::try_from(key >> 3).ok()?;
    body_name(body_tag)?;
    Some(FramePeek {
        request_id,
        body_tag,
    })
}

fn read_varint(at: &mut &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = at.split_first()?;
        *at = rest;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{encode_frame, Frame};

    /// One body of each kind the protocol has (defaults inside).
    fn every_body() -> Vec<Body> {
        use crate::wire::*;
        vec![
            Body::Ping(Ping::default()),
            Body::Pong(Pong::default()),
            Body::Ack(Ack::default()),
            Body::Error(ErrorReply::default()),
            Body::Close(Close::default()),
            Body::Login(LoginRequest::default()),
            Body::Logout(Empty::default()),
            Body::RefreshToken(RefreshTokenRequest::default()),
            Body::SetUserRegion(SetUserRegionRequest::default()),
            Body::GetInstanceInfo(Empty::default()),
            Body::SendToUser(SendToUserRequest::default()),
            Body::QueryOnline(QueryOnlineRequest::default()),
            Body::Join(JoinRequest::default()),
            Body::Leave(LeaveRequest::default()),
            Body::SendToChannel(SendToChannelRequest::default()),
            Body::WriteUserAttributes(AttributesWrite::default()),
            Body::WriteChannelAttributes(AttributesWrite::default()),
            Body::GetUserList(ChannelKey::default()),
            Body::GetUserAttributes(GetUserAttributesRequest::default()),
            Body::GetChannelAttributes(GetChannelAttributesRequest::default()),
            Body::GetUserCount(GetUserCountRequest::default()),
            Body::GetUserListByAttribute(GetUserListByAttributeRequest::default()),
            Body::Fetch(FetchRequest::default()),
            Body::LoginReply(LoginReply::default()),
            Body::Ok(Empty::default()),
            Body::InstanceInfo(InstanceInfoReply::default()),
            Body::SendReply(SendReply::default()),
            Body::OnlineStatus(OnlineStatusReply::default()),
            Body::UserList(UserListReply::default()),
            Body::Attributes(AttributesReply::default()),
            Body::UserCount(UserCountReply::default()),
            Body::JoinReply(JoinReply::default()),
            Body::FetchReply(FetchReply::default()),
            Body::RefreshTokenReply(RefreshTokenReply::default()),
            Body::UserMessage(UserMessagePush::default()),
            Body::ChannelMessage(ChannelMessagePush::default()),
            Body::Membership(MembershipPush::default()),
            Body::UserAttributesChanged(UserAttributesPush::default()),
            Body::ChannelAttributesChanged(ChannelAttributesPush::default()),
            Body::UserCountChanged(UserCountPush::default()),
            Body::TokenWillExpire(TokenWillExpirePush::default()),
        ]
    }

    #[test]
    fn peek_names_every_body_as_its_proto_field() {
        let bodies = every_body();
        assert_eq!(bodies.len(), BODY_NAMES.len());
        let mut seen = Vec::new();
        for (i, body) in bodies.into_iter().enumerate() {
            // The variant's name in snake case is the proto field's name.
            let debug = format!("{body:?}");
            let variant = debug.split('(').next().unwrap();
            let mut snake = String::new();
            for (j, ch) in variant.chars().enumerate() {
                if ch.is_uppercase() && j > 0 {
                    snake.push('_');
                }
                snake.push(ch.to_ascii_lowercase());
            }
            for request_id in [0, 1, 300, u64::MAX] {
                let f = encode_frame(&Frame {
                    request_id,
                    body: Some(body.clone()),
                });
                let p = peek_frame(&f).expect("a frame we encode peeks");
                assert_eq!(p.request_id, request_id);
                assert_eq!(body_name(p.body_tag), Some(snake.as_str()), "body {i}");
                assert!(p.body_tag <= MAX_BODY_TAG);
            }
            seen.push(snake);
        }
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), BODY_NAMES.len(), "names are distinct");
    }

    #[test]
    fn peek_refuses_what_is_not_a_frame_start() {
        assert_eq!(peek_frame(&[]), None);
        // A request id and nothing after it.
        assert_eq!(peek_frame(&[0x08, 0x05]), None);
        // A truncated varint.
        assert_eq!(peek_frame(&[0x08, 0x80]), None);
        // Field 7 is no body; field 10 as a varint is not a message.
        assert_eq!(peek_frame(&[7 << 3 | 2, 0]), None);
        assert_eq!(peek_frame(&[10 << 3, 0]), None);
        // An eleven-byte varint.
        assert_eq!(peek_frame(&[0xff; 11]), None);
        assert_eq!(
            peek_frame(&[10 << 3 | 2, 0]),
            Some(FramePeek {
                request_id: 0,
                body_tag: 10
            })
        );
    }
}
