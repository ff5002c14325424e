//! Server API calls over a node link: the schema of
//! [`NodeMessage::ApiCall`](super::NodeMessage::ApiCall) and
//! [`NodeMessage::ApiAnswer`](super::NodeMessage::ApiAnswer), and their
//! conversions. A gateway node relays a shard's part of a call (an
//! [`ApiCall`], as [`ApiCall::split`] made it) to the hub node, which
//! answers it as it answers its own. Channel keys and messages travel as
//! the client wire's [`wire::ChannelKey`] and [`wire::ChatMessage`]; the
//! rest is the structs below, written by hand like those of the module
//! above. Decoding is strict: a region, an attribute operation or a part
//! that is missing or unknown is a [`WireError`].

use std::collections::BTreeMap;
use std::time::Duration;

use super::invalid;
use crate::error::{ErrorCode, ServiceError, WireError};
use crate::server::api::{ApiCall, ApiReply, ApiRequest, ChannelInfo, HistoryMessage, Sent};
use crate::types::{Attributes, ChannelKey};
use crate::wire::{self, AttributeOp};

/// An [`ApiCall`] (`id` and `shard` are the node message's).
#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct ApiCallMsg {
    #[prost(uint64, tag = "1")]
    pub id: u64,
    /// Below `MAX_SHARDS`.
    #[prost(uint32, tag = "2")]
    pub shard: u32,
    #[prost(uint32, tag = "3")]
    pub appid: u32,
    /// Required.
    #[prost(oneof = "RequestKind", tags = "4, 5, 6, 7, 8, 9, 10, 11, 12, 13")]
    pub request: Option<RequestKind>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
pub(super) enum RequestKind {
    #[prost(message, tag = "4")]
    Publish(PublishMsg),
    #[prost(message, tag = "5")]
    SendToUser(SendToUserMsg),
    #[prost(message, tag = "6")]
    Kick(KickMsg),
    #[prost(message, tag = "7")]
    OnlineStatus(UidsMsg),
    #[prost(message, tag = "8")]
    Channel(wire::ChannelKey),
    #[prost(message, tag = "9")]
    UserAttributes(wire::ChannelKey),
    #[prost(message, tag = "10")]
    WriteChannelAttributes(WriteAttributesMsg),
    #[prost(message, tag = "11")]
    History(HistoryMsg),
    #[prost(message, tag = "12")]
    ChannelsOfUser(UidMsg),
    #[prost(message, tag = "13")]
    ListChannels(ListChannelsMsg),
}

/// [`ApiRequest::Publish`].
#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct PublishMsg {
    /// Required.
    #[prost(message, optional, tag = "1")]
    channel: Option<wire::ChannelKey>,
    #[prost(uint64, tag = "2")]
    from_uid: u64,
    #[prost(uint64, tag = "3")]
    message_id: u64,
    /// Required.
    #[prost(message, optional, tag = "4")]
    message: Option<wire::ChatMessage>,
    #[prost(bool, tag = "5")]
    unreliable: bool,
}

/// [`ApiRequest::SendToUser`].
#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct SendToUserMsg {
    #[prost(uint64, tag = "1")]
    receiver: u64,
    #[prost(uint64, tag = "2")]
    from_uid: u64,
    #[prost(uint64, tag = "3")]
    message_id: u64,
    /// Required.
    #[prost(message, optional, tag = "4")]
    message: Option<wire::ChatMessage>,
    #[prost(bool, tag = "5")]
    unreliable: bool,
}

/// [`ApiRequest::Kick`].
#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct KickMsg {
    #[prost(uint64, tag = "1")]
    uid: u64,
    #[prost(uint64, optional, tag = "2")]
    instance_id: Option<u64>,
    #[prost(uint32, tag = "3")]
    code: u32,
    #[prost(string, tag = "4")]
    reason: String,
    /// The ban's whole seconds ...
    #[prost(uint64, tag = "5")]
    ban_secs: u64,
    /// ... and nanoseconds (below 1e9).
    #[prost(uint32, tag = "6")]
    ban_nanos: u32,
}

/// [`ApiRequest::OnlineStatus`].
#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct UidsMsg {
    /// Packed.
    #[prost(uint64, repeated, tag = "1")]
    uids: Vec<u64>,
}

/// [`ApiRequest::ChannelsOfUser`].
#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct UidMsg {
    #[prost(uint64, tag = "1")]
    uid: u64,
}

/// [`ApiRequest::WriteChannelAttributes`].
#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct WriteAttributesMsg {
    /// Required.
    #[prost(message, optional, tag = "1")]
    channel: Option<wire::ChannelKey>,
    /// A known [`AttributeOp`] (unspecified included: the hub refuses it
    /// as it does a local call's).
    #[prost(enumeration = "AttributeOp", tag = "2")]
    op: i32,
    #[prost(btree_map = "string, string", tag = "3")]
    attributes: BTreeMap<String, String>,
    #[prost(string, repeated, tag = "4")]
    keys: Vec<String>,
    #[prost(bool, tag = "5")]
    notify: bool,
}

/// [`ApiRequest::History`].
#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct HistoryMsg {
    /// Required.
    #[prost(message, optional, tag = "1")]
    channel: Option<wire::ChannelKey>,
    #[prost(uint64, tag = "2")]
    after_seq: u64,
    #[prost(uint64, tag = "3")]
    limit: u64,
}

/// [`ApiRequest::ListChannels`].
#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct ListChannelsMsg {
    #[prost(message, optional, tag = "1")]
    after: Option<wire::ChannelKey>,
    #[prost(uint64, tag = "2")]
    limit: u64,
}

/// The answer to an [`ApiCallMsg`] of the same `id`.
#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct ApiAnswerMsg {
    #[prost(uint64, tag = "1")]
    pub id: u64,
    /// Required.
    #[prost(oneof = "AnswerKind", tags = "2, 3, 4, 5, 6, 7, 8, 9, 10, 11")]
    pub answer: Option<AnswerKind>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
pub(super) enum AnswerKind {
    /// The refusal: its code and message.
    #[prost(message, tag = "2")]
    Error(wire::ErrorReply),
    #[prost(message, tag = "3")]
    Sent(SentMsg),
    #[prost(message, tag = "4")]
    Kicked(KickedMsg),
    #[prost(message, tag = "5")]
    Online(OnlineMsg),
    #[prost(message, tag = "6")]
    Channel(ChannelMsg),
    #[prost(message, tag = "7")]
    UserAttributes(UserAttributesMsg),
    #[prost(message, tag = "8")]
    Written(wire::Empty),
    #[prost(message, tag = "9")]
    History(HistoryReplyMsg),
    #[prost(message, tag = "10")]
    Channels(ChannelsMsg),
    #[prost(message, tag = "11")]
    ChannelPage(ChannelPageMsg),
}

/// [`ApiReply::Sent`].
#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct SentMsg {
    #[prost(uint64, tag = "1")]
    seq: u64,
    #[prost(uint64, tag = "2")]
    timestamp_ms: u64,
    #[prost(bool, tag = "3")]
    delivered_online: bool,
}

/// [`ApiReply::Kicked`].
#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct KickedMsg {
    #[prost(uint32, tag = "1")]
    instances: u32,
}

/// [`ApiReply::Online`].
#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct OnlineMsg {
    #[prost(btree_map = "uint64, bool", tag = "1")]
    online: BTreeMap<u64, bool>,
}

/// [`ApiReply::Channel`]: no `info` for `None`.
#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct ChannelMsg {
    #[prost(message, optional, tag = "1")]
    info: Option<ChannelInfoMsg>,
}

/// A [`ChannelInfo`].
#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct ChannelInfoMsg {
    #[prost(uint64, tag = "1")]
    member_count: u64,
    /// Packed.
    #[prost(uint64, repeated, tag = "2")]
    members: Vec<u64>,
    #[prost(btree_map = "string, string", tag = "3")]
    attributes: BTreeMap<String, String>,
    #[prost(uint64, tag = "4")]
    attributes_updated_by: u64,
    #[prost(uint64, tag = "5")]
    attributes_updated_ms: u64,
    #[prost(uint64, tag = "6")]
    epoch: u64,
    #[prost(uint64, tag = "7")]
    head_seq: u64,
}

/// [`ApiReply::UserAttributes`]: each uid once.
#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct UserAttributesMsg {
    #[prost(message, repeated, tag = "1")]
    users: Vec<UserAttributesEntry>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct UserAttributesEntry {
    #[prost(uint64, tag = "1")]
    uid: u64,
    #[prost(btree_map = "string, string", tag = "2")]
    attributes: BTreeMap<String, String>,
}

/// [`ApiReply::History`].
#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct HistoryReplyMsg {
    #[prost(uint64, tag = "1")]
    epoch: u64,
    #[prost(message, repeated, tag = "2")]
    messages: Vec<HistoryMessageMsg>,
    /// (first, last) of the messages gone.
    #[prost(message, optional, tag = "3")]
    gap: Option<wire::SeqGap>,
    #[prost(bool, tag = "4")]
    more: bool,
}

/// A [`HistoryMessage`].
#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct HistoryMessageMsg {
    #[prost(uint64, tag = "1")]
    seq: u64,
    #[prost(uint64, tag = "2")]
    from_uid: u64,
    #[prost(uint64, tag = "3")]
    timestamp_ms: u64,
    /// Required.
    #[prost(message, optional, tag = "4")]
    message: Option<wire::ChatMessage>,
}

/// [`ApiReply::Channels`].
#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct ChannelsMsg {
    #[prost(message, repeated, tag = "1")]
    channels: Vec<wire::ChannelKey>,
}

/// [`ApiReply::ChannelPage`].
#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct ChannelPageMsg {
    #[prost(message, repeated, tag = "1")]
    channels: Vec<PageEntry>,
    #[prost(bool, tag = "2")]
    more: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct PageEntry {
    /// Required.
    #[prost(message, optional, tag = "1")]
    channel: Option<wire::ChannelKey>,
    #[prost(uint64, tag = "2")]
    members: u64,
}

// ---- Encoding ----

pub(super) fn request_to_wire(call: &ApiCall) -> (u32, RequestKind) {
    let key = |c: &ChannelKey| Some(c.to_wire());
    let kind = match &call.request {
        ApiRequest::Publish {
            channel,
            from_uid,
            message_id,
            message,
            unreliable,
        } => RequestKind::Publish(PublishMsg {
            channel: key(channel),
            from_uid: *from_uid,
            message_id: *message_id,
            message: Some(message.clone().into()),
            unreliable: *unreliable,
        }),
        ApiRequest::SendToUser {
            receiver,
            from_uid,
            message_id,
            message,
            unreliable,
        } => RequestKind::SendToUser(SendToUserMsg {
            receiver: *receiver,
            from_uid: *from_uid,
            message_id: *message_id,
            message: Some(message.clone().into()),
            unreliable: *unreliable,
        }),
        ApiRequest::Kick {
            uid,
            instance_id,
            code,
            reason,
            ban,
        } => RequestKind::Kick(KickMsg {
            uid: *uid,
            instance_id: *instance_id,
            code: *code,
            reason: reason.clone(),
            ban_secs: ban.as_secs(),
            ban_nanos: ban.subsec_nanos(),
        }),
        ApiRequest::OnlineStatus { uids } => {
            RequestKind::OnlineStatus(UidsMsg { uids: uids.clone() })
        }
        ApiRequest::Channel { channel } => RequestKind::Channel(channel.to_wire()),
        ApiRequest::UserAttributes { channel } => RequestKind::UserAttributes(channel.to_wire()),
        ApiRequest::WriteChannelAttributes {
            channel,
            op,
            attributes,
            keys,
            notify,
        } => RequestKind::WriteChannelAttributes(WriteAttributesMsg {
            channel: key(channel),
            op: *op as i32,
            attributes: attributes.clone(),
            keys: keys.clone(),
            notify: *notify,
        }),
        ApiRequest::History {
            channel,
            after_seq,
            limit,
        } => RequestKind::History(HistoryMsg {
            channel: key(channel),
            after_seq: *after_seq,
            limit: count_to_wire(*limit),
        }),
        ApiRequest::ChannelsOfUser { uid } => RequestKind::ChannelsOfUser(UidMsg { uid: *uid }),
        ApiRequest::ListChannels { after, limit } => RequestKind::ListChannels(ListChannelsMsg {
            after: after.as_ref().map(ChannelKey::to_wire),
            limit: count_to_wire(*limit),
        }),
    };
    (call.appid, kind)
}

pub(super) fn answer_to_wire(answer: &Result<ApiReply, ServiceError>) -> AnswerKind {
    let reply = match answer {
        Ok(reply) => reply,
        Err(e) => {
            return AnswerKind::Error(wire::ErrorReply {
                code: e.code.code(),
                message: e.message.clone(),
            })
        }
    };
    match reply {
        ApiReply::Sent(s) => AnswerKind::Sent(SentMsg {
            seq: s.seq,
            timestamp_ms: s.timestamp_ms,
            delivered_online: s.delivered_online,
        }),
        ApiReply::Kicked { instances } => AnswerKind::Kicked(KickedMsg {
            instances: *instances,
        }),
        ApiReply::Online(online) => AnswerKind::Online(OnlineMsg {
            online: online.clone(),
        }),
        ApiReply::Channel(info) => AnswerKind::Channel(ChannelMsg {
            info: info.as_ref().map(|i| ChannelInfoMsg {
                member_count: i.member_count,
                members: i.members.clone(),
                attributes: i.attributes.clone(),
                attributes_updated_by: i.attributes_updated_by,
                attributes_updated_ms: i.attributes_updated_ms,
                epoch: i.epoch,
                head_seq: i.head_seq,
            }),
        }),
        ApiReply::UserAttributes(users) => AnswerKind::UserAttributes(UserAttributesMsg {
            users: users
                .iter()
                .map(|(uid, attributes)| UserAttributesEntry {
                    uid: *uid,
                    attributes: attributes.clone(),
                })
                .collect(),
        }),
        ApiReply::Written => AnswerKind::Written(wire::Empty {}),
        ApiReply::History {
            epoch,
            messages,
            gap,
            more,
        } => AnswerKind::History(HistoryReplyMsg {
            epoch: *epoch,
            messages: messages
                .iter()
                .map(|m| HistoryMessageMsg {
                    seq: m.seq,
                    from_uid: m.from_uid,
                    timestamp_ms: m.timestamp_ms,
                    message: Some(m.message.clone().into()),
                })
                .collect(),
            gap: gap.map(|(from, to)| wire::SeqGap { from, to }),
            more: *more,
        }),
        ApiReply::Channels(channels) => AnswerKind::Channels(ChannelsMsg {
            channels: channels.iter().map(ChannelKey::to_wire).collect(),
        }),
        ApiReply::ChannelPage { channels, more } => AnswerKind::ChannelPage(ChannelPageMsg {
            channels: channels
                .iter()
                .map(|(c, members)| PageEntry {
                    channel: Some(c.to_wire()),
                    members: *members,
                })
                .collect(),
            more: *more,
        }),
    }
}

fn count_to_wire(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

// ---- Decoding ----

/// A count, saturating where `usize` is narrower than 64 bits (the hub
/// refuses it as too large then).
fn count_from_wire(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// A channel key with a known region.
fn channel(key: Option<wire::ChannelKey>, field: &'static str) -> Result<ChannelKey, WireError> {
    let key = key.ok_or(invalid(field, "missing"))?;
    ChannelKey::from_wire(&key).ok_or(invalid(field, "an unknown region"))
}

pub(super) fn request_from_wire(
    appid: u32,
    request: Option<RequestKind>,
) -> Result<ApiCall, WireError> {
    let message =
        |m: Option<wire::ChatMessage>, field| m.map(Into::into).ok_or(invalid(field, "missing"));
    let request = match request.ok_or(invalid("api_call.request", "missing or unknown"))? {
        RequestKind::Publish(p) => ApiRequest::Publish {
            channel: channel(p.channel, "publish.channel")?,
            from_uid: p.from_uid,
            message_id: p.message_id,
            message: message(p.message, "publish.message")?,
            unreliable: p.unreliable,
        },
        RequestKind::SendToUser(s) => ApiRequest::SendToUser {
            receiver: s.receiver,
            from_uid: s.from_uid,
            message_id: s.message_id,
            message: message(s.message, "send_to_user.message")?,
            unreliable: s.unreliable,
        },
        RequestKind::Kick(k) => {
            if k.ban_nanos >= 1_000_000_000 {
                return Err(invalid("kick.ban_nanos", "not below 1e9"));
            }
            ApiRequest::Kick {
                uid: k.uid,
                instance_id: k.instance_id,
                code: k.code,
                reason: k.reason,
                ban: Duration::new(k.ban_secs, k.ban_nanos),
            }
        }
        RequestKind::OnlineStatus(u) => ApiRequest::OnlineStatus { uids: u.uids },
        RequestKind::Channel(c) => ApiRequest::Channel {
            channel: channel(Some(c), "channel.channel")?,
        },
        RequestKind::UserAttributes(c) => ApiRequest::UserAttributes {
            channel: channel(Some(c), "user_attributes.channel")?,
        },
        RequestKind::WriteChannelAttributes(w) => ApiRequest::WriteChannelAttributes {
            channel: channel(w.channel, "write_attributes.channel")?,
            op: AttributeOp::try_from(w.op)
                .map_err(|_| invalid("write_attributes.op", "unknown"))?,
            attributes: w.attributes,
            keys: w.keys,
            notify: w.notify,
        },
        RequestKind::History(h) => ApiRequest::History {
            channel: channel(h.channel, "history.channel")?,
            after_seq: h.after_seq,
            limit: count_from_wire(h.limit),
        },
        RequestKind::ChannelsOfUser(u) => ApiRequest::ChannelsOfUser { uid: u.uid },
        RequestKind::ListChannels(l) => ApiRequest::ListChannels {
            after: l
                .after
                .map(|a| channel(Some(a), "list_channels.after"))
                .transpose()?,
            limit: count_from_wire(l.limit),
        },
    };
    Ok(ApiCall { appid, request })
}

pub(super) fn answer_from_wire(
    answer: Option<AnswerKind>,
) -> Result<Result<ApiReply, ServiceError>, WireError> {
    let message = |m: Option<wire::ChatMessage>| {
        m.map(Into::into)
            .ok_or(invalid("history.messages.message", "missing"))
    };
    Ok(Ok(
        match answer.ok_or(invalid("api_answer.answer", "missing or unknown"))? {
            AnswerKind::Error(e) => {
                return Ok(Err(ServiceError::new(ErrorCode::new(e.code), e.message)))
            }
            AnswerKind::Sent(s) => ApiReply::Sent(Sent {
                seq: s.seq,
                timestamp_ms: s.timestamp_ms,
                delivered_online: s.delivered_online,
            }),
            AnswerKind::Kicked(k) => ApiReply::Kicked {
                instances: k.instances,
            },
            AnswerKind::Online(o) => ApiReply::Online(o.online),
            AnswerKind::Channel(c) => ApiReply::Channel(c.info.map(|i| ChannelInfo {
                member_count: i.member_count,
                members: i.members,
                attributes: i.attributes,
                attributes_updated_by: i.attributes_updated_by,
                attributes_updated_ms: i.attributes_updated_ms,
                epoch: i.epoch,
                head_seq: i.head_seq,
            })),
            AnswerKind::UserAttributes(u) => {
                let mut users: BTreeMap<u64, Attributes> = BTreeMap::new();
                for e in u.users {
                    if users.insert(e.uid, e.attributes).is_some() {
                        return Err(invalid("user_attributes.uid", "repeated"));
                    }
                }
                ApiReply::UserAttributes(users)
            }
            AnswerKind::Written(wire::Empty {}) => ApiReply::Written,
            AnswerKind::History(h) => ApiReply::History {
                epoch: h.epoch,
                messages: h
                    .messages
                    .into_iter()
                    .map(|m| {
                        Ok(HistoryMessage {
                            seq: m.seq,
                            from_uid: m.from_uid,
                            timestamp_ms: m.timestamp_ms,
                            message: message(m.message)?,
                        })
                    })
                    .collect::<Result<_, WireError>>()?,
                gap: h.gap.map(|g| (g.from, g.to)),
                more: h.more,
            },
            AnswerKind::Channels(c) => ApiReply::Channels(
                c.channels
                    .into_iter()
                    .map(|k| channel(Some(k), "channels.channel"))
                    .collect::<Result<_, _>>()?,
            ),
            AnswerKind::ChannelPage(p) => ApiReply::ChannelPage {
                channels: p
                    .channels
                    .into_iter()
                    .map(|e| Ok((channel(e.channel, "channel_page.channel")?, e.members)))
                    .collect::<Result<_, WireError>>()?,
                more: p.more,
            },
        },
    ))
}

#[cfg(test)]
pub(super) mod tests {
    use bytes::Bytes;
    use prost::Message as _;

    use super::super::{decode_node_message, Kind, NodeFrame, NodeMessage};
    use super::*;
    use crate::server::shard::{ShardId, MAX_SHARDS};
    use crate::types::{Message, Region};

    fn call(shard: u16, appid: u32, request: ApiRequest) -> NodeMessage {
        NodeMessage::ApiCall {
            id: u64::from(shard) * 7 + u64::from(appid),
            shard: ShardId(shard),
            call: ApiCall { appid, request },
        }
    }

    fn answer(id: u64, answer: Result<ApiReply, ServiceError>) -> NodeMessage {
        NodeMessage::ApiAnswer { id, answer }
    }

    fn room(region: Region) -> ChannelKey {
        ChannelKey::new(region, "room")
    }

    fn message() -> Message {
        let mut m = Message::new("t", vec![0xab; 40]);
        m.app_extras.insert("k".into(), "v".into());
        m
    }

    fn attributes() -> Attributes {
        [
            ("a".to_string(), "1".to_string()),
            ("é".into(), String::new()),
        ]
        .into()
    }

    /// Every request and every answer, with fields at their edges.
    pub(in crate::server::node_codec) fn samples() -> Vec<NodeMessage> {
        let requests = vec![
            ApiRequest::Publish {
                channel: room(Region::SaEast),
                from_uid: u64::MAX,
                message_id: 1,
                message: message(),
                unreliable: true,
            },
            ApiRequest::Publish {
                channel: ChannelKey::new(Region::Cn, ""),
                from_uid: 0,
                message_id: 0,
                message: Message::default(),
                unreliable: false,
            },
            ApiRequest::SendToUser {
                receiver: u64::MAX,
                from_uid: 3,
                message_id: u64::MAX,
                message: message(),
                unreliable: false,
            },
            ApiRequest::Kick {
                uid: 9,
                instance_id: Some(0),
                code: 4100,
                reason: "banned".into(),
                ban: Duration::new(u64::MAX, 999_999_999),
            },
            ApiRequest::Kick {
                uid: 0,
                instance_id: None,
                code: u32::MAX,
                reason: String::new(),
                ban: Duration::ZERO,
            },
            ApiRequest::OnlineStatus {
                uids: vec![0, 1, u64::MAX, 1],
            },
            ApiRequest::OnlineStatus { uids: Vec::new() },
            ApiRequest::Channel {
                channel: room(Region::Us),
            },
            ApiRequest::UserAttributes {
                channel: room(Region::MeEast),
            },
            ApiRequest::WriteChannelAttributes {
                channel: room(Region::ApSouth),
                op: AttributeOp::AddOrUpdate,
                attributes: attributes(),
                keys: vec!["x".into(), String::new()],
                notify: true,
            },
            ApiRequest::WriteChannelAttributes {
                channel: room(Region::ApSoutheast),
                op: AttributeOp::Unspecified,
                attributes: Attributes::new(),
                keys: Vec::new(),
                notify: false,
            },
            ApiRequest::History {
                channel: room(Region::Cn),
                after_seq: u64::MAX,
                limit: 1000,
            },
            ApiRequest::History {
                channel: room(Region::Cn),
                after_seq: 0,
                limit: 0,
            },
            ApiRequest::ChannelsOfUser { uid: u64::MAX },
            ApiRequest::ListChannels {
                after: Some(room(Region::Us)),
                limit: usize::MAX,
            },
            ApiRequest::ListChannels {
                after: None,
                limit: 1,
            },
        ];
        let replies = vec![
            Err(ServiceError::new(ErrorCode::SERVICE_UNAVAILABLE, "retry")),
            Err(ServiceError::new(ErrorCode::new(0), "")),
            Ok(ApiReply::Sent(Sent {
                seq: u64::MAX,
                timestamp_ms: 1,
                delivered_online: true,
            })),
            Ok(ApiReply::Sent(Sent {
                seq: 0,
                timestamp_ms: 0,
                delivered_online: false,
            })),
            Ok(ApiReply::Kicked {
                instances: u32::MAX,
            }),
            Ok(ApiReply::Online([(0, false), (u64::MAX, true)].into())),
            Ok(ApiReply::Online(BTreeMap::new())),
            Ok(ApiReply::Channel(None)),
            Ok(ApiReply::Channel(Some(ChannelInfo {
                member_count: 3,
                members: vec![1, 2, u64::MAX],
                attributes: attributes(),
                attributes_updated_by: 2,
                attributes_updated_ms: u64::MAX,
                epoch: 5,
                head_seq: 6,
            }))),
            Ok(ApiReply::Channel(Some(ChannelInfo {
                member_count: 0,
                members: Vec::new(),
                attributes: Attributes::new(),
                attributes_updated_by: 0,
                attributes_updated_ms: 0,
                epoch: 0,
                head_seq: 0,
            }))),
            Ok(ApiReply::UserAttributes(
                [(1, attributes()), (u64::MAX, Attributes::new())].into(),
            )),
            Ok(ApiReply::Written),
            Ok(ApiReply::History {
                epoch: 4,
                messages: vec![
                    HistoryMessage {
                        seq: 7,
                        from_uid: 0,
                        timestamp_ms: 8,
                        message: message(),
                    },
                    HistoryMessage {
                        seq: 9,
                        from_uid: u64::MAX,
                        timestamp_ms: 0,
                        message: Message::default(),
                    },
                ],
                gap: Some((1, 6)),
                more: true,
            }),
            Ok(ApiReply::History {
                epoch: 0,
                messages: Vec::new(),
                gap: None,
                more: false,
            }),
            Ok(ApiReply::Channels(vec![
                room(Region::Cn),
                room(Region::SaEast),
            ])),
            Ok(ApiReply::ChannelPage {
                channels: vec![(room(Region::Us), 0), (room(Region::Cn), u64::MAX)],
                more: true,
            }),
            Ok(ApiReply::ChannelPage {
                channels: Vec::new(),
                more: false,
            }),
        ];
        let mut all: Vec<NodeMessage> = requests
            .into_iter()
            .enumerate()
            .map(|(n, r)| {
                let shard = [0, MAX_SHARDS - 1][n % 2];
                call(shard, [1, u32::MAX][n % 2], r)
            })
            .collect();
        all.extend(
            replies
                .into_iter()
                .enumerate()
                .map(|(n, r)| answer([0, u64::MAX][n % 2] ^ n as u64, r)),
        );
        all
    }

    fn raw(kind: Kind) -> Bytes {
        NodeFrame { kind: Some(kind) }.encode_to_vec().into()
    }

    fn raw_call(request: Option<RequestKind>) -> Bytes {
        raw(Kind::ApiCall(ApiCallMsg {
            id: 1,
            shard: 0,
            appid: 1,
            request,
        }))
    }

    fn raw_answer(answer: Option<AnswerKind>) -> Bytes {
        raw(Kind::ApiAnswer(ApiAnswerMsg { id: 1, answer }))
    }

    fn invalid_field(bytes: Bytes) -> &'static str {
        match decode_node_message(bytes) {
            Err(WireError::InvalidField { field, .. }) => field,
            other => panic!("not an invalid field: {other:?}"),
        }
    }

    fn key(region: i32) -> Option<wire::ChannelKey> {
        Some(wire::ChannelKey {
            region,
            channel_id: "room".into(),
        })
    }

    fn chat() -> Option<wire::ChatMessage> {
        Some(message().into())
    }

    #[test]
    fn fields_decode_to_their_own_places() {
        // Each field of a request a value of its own: a decoder that put
        // one in another's place would show it.
        let publish = RequestKind::Publish(PublishMsg {
            channel: key(wire::Region::Us as i32),
            from_uid: 11,
            message_id: 12,
            message: chat(),
            unreliable: true,
        });
        let Ok(NodeMessage::ApiCall { id, shard, call }) =
            decode_node_message(raw(Kind::ApiCall(ApiCallMsg {
                id: 21,
                shard: 22,
                appid: 23,
                request: Some(publish),
            })))
        else {
            panic!("not a call")
        };
        assert_eq!((id, shard, call.appid), (21, ShardId(22), 23));
        assert_eq!(
            call.request,
            ApiRequest::Publish {
                channel: room(Region::Us),
                from_uid: 11,
                message_id: 12,
                message: message(),
                unreliable: true,
            }
        );
        let Ok(NodeMessage::ApiAnswer { id, answer }) =
            decode_node_message(raw(Kind::ApiAnswer(ApiAnswerMsg {
                id: 31,
                answer: Some(AnswerKind::Sent(SentMsg {
                    seq: 32,
                    timestamp_ms: 33,
                    delivered_online: true,
                })),
            })))
        else {
            panic!("not an answer")
        };
        assert_eq!(id, 31);
        assert_eq!(
            answer,
            Ok(ApiReply::Sent(Sent {
                seq: 32,
                timestamp_ms: 33,
                delivered_online: true,
            }))
        );
        let refused = raw_answer(Some(AnswerKind::Error(wire::ErrorReply {
            code: 4010,
            message: "m".into(),
        })));
        let Ok(NodeMessage::ApiAnswer { answer, .. }) = decode_node_message(refused) else {
            panic!("not an answer")
        };
        assert_eq!(
            answer,
            Err(ServiceError::new(ErrorCode::SERVICE_UNAVAILABLE, "m"))
        );
    }

    #[test]
    fn shards_past_the_maximum_fail() {
        for shard in [u32::from(MAX_SHARDS), 1 << 16, u32::MAX] {
            let bytes = raw(Kind::ApiCall(ApiCallMsg {
                id: 1,
                shard,
                appid: 1,
                request: Some(RequestKind::ChannelsOfUser(UidMsg { uid: 1 })),
            }));
            assert_eq!(invalid_field(bytes), "api_call.shard");
        }
    }

    #[test]
    fn missing_or_unknown_parts_fail() {
        assert_eq!(invalid_field(raw_call(None)), "api_call.request");
        assert_eq!(invalid_field(raw_answer(None)), "api_answer.answer");
        let publish = |channel, message| {
            raw_call(Some(RequestKind::Publish(PublishMsg {
                channel,
                from_uid: 1,
                message_id: 1,
                message,
                unreliable: false,
            })))
        };
        assert_eq!(invalid_field(publish(None, chat())), "publish.channel");
        assert_eq!(invalid_field(publish(key(1), None)), "publish.message");
        assert!(decode_node_message(publish(key(1), chat())).is_ok());
        // Region 0 is unspecified; 7 is none.
        for region in [0, 7, -1, i32::MAX] {
            assert_eq!(
                invalid_field(publish(key(region), chat())),
                "publish.channel"
            );
            assert_eq!(
                invalid_field(raw_call(Some(RequestKind::Channel(key(region).unwrap())))),
                "channel.channel"
            );
            assert_eq!(
                invalid_field(raw_call(Some(RequestKind::UserAttributes(
                    key(region).unwrap()
                )))),
                "user_attributes.channel"
            );
            assert_eq!(
                invalid_field(raw_call(Some(RequestKind::History(HistoryMsg {
                    channel: key(region),
                    after_seq: 0,
                    limit: 1,
                })))),
                "history.channel"
            );
            assert_eq!(
                invalid_field(raw_call(Some(RequestKind::ListChannels(ListChannelsMsg {
                    after: key(region),
                    limit: 1,
                })))),
                "list_channels.after"
            );
            assert_eq!(
                invalid_field(raw_answer(Some(AnswerKind::Channels(ChannelsMsg {
                    channels: vec![key(1).unwrap(), key(region).unwrap()],
                })))),
                "channels.channel"
            );
            assert_eq!(
                invalid_field(raw_answer(Some(AnswerKind::ChannelPage(ChannelPageMsg {
                    channels: vec![PageEntry {
                        channel: key(region),
                        members: 1,
                    }],
                    more: false,
                })))),
                "channel_page.channel"
            );
        }
        assert_eq!(
            invalid_field(raw_call(Some(RequestKind::SendToUser(SendToUserMsg {
                receiver: 1,
                from_uid: 1,
                message_id: 1,
                message: None,
                unreliable: false,
            })))),
            "send_to_user.message"
        );
        let write = |channel, op| {
            raw_call(Some(RequestKind::WriteChannelAttributes(
                WriteAttributesMsg {
                    channel,
                    op,
                    attributes: BTreeMap::new(),
                    keys: Vec::new(),
                    notify: false,
                },
            )))
        };
        assert_eq!(invalid_field(write(None, 1)), "write_attributes.channel");
        for op in [5, -1, i32::MAX] {
            assert_eq!(invalid_field(write(key(1), op)), "write_attributes.op");
        }
        assert!(decode_node_message(write(key(1), 4)).is_ok());
        assert_eq!(
            invalid_field(raw_answer(Some(AnswerKind::ChannelPage(ChannelPageMsg {
                channels: vec![PageEntry {
                    channel: None,
                    members: 1,
                }],
                more: false,
            })))),
            "channel_page.channel"
        );
        assert_eq!(
            invalid_field(raw_answer(Some(AnswerKind::History(HistoryReplyMsg {
                epoch: 1,
                messages: vec![HistoryMessageMsg {
                    seq: 1,
                    from_uid: 1,
                    timestamp_ms: 1,
                    message: None,
                }],
                gap: None,
                more: false,
            })))),
            "history.messages.message"
        );
    }

    #[test]
    fn a_ban_has_nanoseconds_below_a_second() {
        let kick = |ban_nanos| {
            raw_call(Some(RequestKind::Kick(KickMsg {
                uid: 1,
                instance_id: None,
                code: 4100,
                reason: String::new(),
                ban_secs: 5,
                ban_nanos,
            })))
        };
        for nanos in [1_000_000_000, u32::MAX] {
            assert_eq!(invalid_field(kick(nanos)), "kick.ban_nanos");
        }
        let Ok(NodeMessage::ApiCall { call, .. }) = decode_node_message(kick(999_999_999)) else {
            panic!("not a call")
        };
        let ApiRequest::Kick { ban, .. } = call.request else {
            panic!("not a kick")
        };
        assert_eq!(ban, Duration::new(5, 999_999_999));
    }

    #[test]
    fn a_uid_listed_twice_in_user_attributes_fails() {
        let entry = |uid| UserAttributesEntry {
            uid,
            attributes: BTreeMap::new(),
        };
        let twice = raw_answer(Some(AnswerKind::UserAttributes(UserAttributesMsg {
            users: vec![entry(1), entry(2), entry(1)],
        })));
        assert_eq!(invalid_field(twice), "user_attributes.uid");
        let once = raw_answer(Some(AnswerKind::UserAttributes(UserAttributesMsg {
            users: vec![entry(1), entry(2)],
        })));
        assert!(decode_node_message(once).is_ok());
    }
}
