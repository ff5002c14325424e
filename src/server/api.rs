//! The server API: what an app's backend asks of the service without a
//! client connection (`docs/api.md`). A runner authenticates the backend,
//! turns its request into an [`ApiCall`], [`ApiCall::split`]s it over the
//! hub shards that hold the state, hands each part to its shard's
//! [`Hub::handle_api`], and [`merge`]s the answers. Every part is answered
//! at once (no shard waits for another); what it causes (pushes, closes,
//! notices) leaves through the hub's usual outputs.

use std::collections::BTreeMap;
use std::time::Duration;

use super::channel::Channel;
use super::conn::CloseReason;
use super::durable::SentRef;
use super::hub::Hub;
use super::sent_ids::Destination;
use super::shard::{channel_shard, uid_shard, ShardId};
use crate::error::{ErrorCode, ServiceError};
use crate::limits::AttributeScope;
use crate::types::{Attributes, ChannelKey, Message};
use crate::wire::{self, decode_frame, AttributeOp, Body};

/// The lowest close code a backend may kick with; codes up to
/// [`KICK_CODE_MAX`] are the app's own (`docs/protocol.md`: a client
/// closed with one does not reconnect by itself).
pub const KICK_CODE_MIN: u32 = 4100;
/// The highest close code a backend may kick with.
pub const KICK_CODE_MAX: u32 = 4199;
/// The longest a kick may refuse the uid's logins.
pub const MAX_BAN: Duration = Duration::from_secs(30 * 24 * 3600);
/// Channels per page of [`ApiRequest::ListChannels`], at most.
pub const MAX_PAGE: usize = 1000;
/// Messages per [`ApiRequest::History`], at most.
pub const MAX_HISTORY: usize = 1000;
/// Member uids a [`ChannelInfo`] lists, at most (`member_count` has all).
pub const MAX_LISTED_MEMBERS: usize = 10_000;

/// A request of an app's backend (the app is the [`ApiCall`]'s).
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq)]
pub enum ApiRequest {
    /// Publishes a message to a channel's members, as `from_uid` (0: the
    /// service itself). Reliable messages join the channel's history
    /// (a channel with no member is made for it); a re-send with the
    /// same `message_id` within the dedupe window is answered as the
    /// first and delivers nothing.
    Publish {
        /// The channel.
        channel: ChannelKey,
        /// The sender members see (0: the service).
        from_uid: u64,
        /// The caller's id of this message (nonzero).
        message_id: u64,
        /// The message.
        message: Message,
        /// Not kept, not numbered.
        unreliable: bool,
    },
    /// Sends a message to a uid's instances; a reliable one is kept in its
    /// inbox for when it is offline. Deduplicated like `Publish`.
    SendToUser {
        /// The receiver.
        receiver: u64,
        /// The sender it sees (0: the service).
        from_uid: u64,
        /// The caller's id of this message (nonzero).
        message_id: u64,
        /// The message.
        message: Message,
        /// Not kept, not numbered.
        unreliable: bool,
    },
    /// Closes a uid's instances (or one of them) with `Close{code,
    /// reason}`, without a grace period, and refuses its logins for `ban`
    /// (with 3000) when nonzero.
    Kick {
        /// The uid.
        uid: u64,
        /// Only this instance (its other instances stay).
        instance_id: Option<u64>,
        /// The close code, [`KICK_CODE_MIN`]..=[`KICK_CODE_MAX`].
        code: u32,
        /// Told to the client in the `Close` frame.
        reason: String,
        /// How long its logins are refused (zero: not at all).
        ban: Duration,
    },
    /// Whether each uid has an instance (one in its grace period counts).
    OnlineStatus {
        /// The uids.
        uids: Vec<u64>,
    },
    /// A channel's members, their count and its attributes.
    Channel {
        /// The channel.
        channel: ChannelKey,
    },
    /// The attributes of a channel's members (those that have some).
    UserAttributes {
        /// The channel.
        channel: ChannelKey,
    },
    /// Changes a channel's attributes as the service (`last_update_uid`
    /// 0), telling the members when `notify`.
    WriteChannelAttributes {
        /// The channel.
        channel: ChannelKey,
        /// Set (replace all), add or update, delete keys, clear.
        op: AttributeOp,
        /// For set and add-or-update.
        attributes: Attributes,
        /// For delete.
        keys: Vec<String>,
        /// Push the change to the members.
        notify: bool,
    },
    /// Reliable messages of a channel after `after_seq` (within its
    /// retention), oldest first, at most `limit`.
    History {
        /// The channel.
        channel: ChannelKey,
        /// Messages after this seq.
        after_seq: u64,
        /// At most this many (1..=[`MAX_HISTORY`]).
        limit: usize,
    },
    /// The channels a uid's instances are members of.
    ChannelsOfUser {
        /// The uid.
        uid: u64,
    },
    /// The app's channels with their member counts, by (id, region), one
    /// page after `after`.
    ListChannels {
        /// Where the page starts (exclusive): the last of the previous.
        after: Option<ChannelKey>,
        /// Channels per page (1..=[`MAX_PAGE`]).
        limit: usize,
    },
}

/// A request of app `appid`.
#[derive(Clone, Debug, PartialEq)]
pub struct ApiCall {
    /// The app the backend's key is for.
    pub appid: u32,
    /// What it asks.
    pub request: ApiRequest,
}

/// What a send did.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sent {
    /// Its seq in the stream (0: unreliable).
    pub seq: u64,
    /// The server's time of the send (unix ms).
    pub timestamp_ms: u64,
    /// For a send to a user: whether an instance was connected.
    pub delivered_online: bool,
}

/// A channel as [`ApiRequest::Channel`] answers.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelInfo {
    /// Distinct member uids.
    pub member_count: u64,
    /// The member uids, lowest first ([`MAX_LISTED_MEMBERS`] at most).
    pub members: Vec<u64>,
    /// Its attributes.
    pub attributes: Attributes,
    /// Who changed them last (0: the service, or never).
    pub attributes_updated_by: u64,
    /// When (unix ms; 0: never).
    pub attributes_updated_ms: u64,
    /// Its stream's epoch and the seq of its last reliable message.
    pub epoch: u64,
    /// The seq of its last reliable message.
    pub head_seq: u64,
}

/// One message of a channel's history.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq)]
pub struct HistoryMessage {
    /// Its seq.
    pub seq: u64,
    /// Its sender (0: the service).
    pub from_uid: u64,
    /// When it was sent (unix ms).
    pub timestamp_ms: u64,
    /// The message.
    pub message: Message,
}

/// The answer to an [`ApiRequest`] (one variant per kind of request).
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq)]
pub enum ApiReply {
    /// `Publish`, `SendToUser`.
    Sent(Sent),
    /// `Kick`: the instances closed.
    Kicked {
        /// How many.
        instances: u32,
    },
    /// `OnlineStatus`.
    Online(BTreeMap<u64, bool>),
    /// `Channel` (`None`: the service holds nothing of it).
    Channel(Option<ChannelInfo>),
    /// `UserAttributes`.
    UserAttributes(BTreeMap<u64, Attributes>),
    /// `WriteChannelAttributes`.
    Written,
    /// `History`.
    History {
        /// The stream's epoch (0: no such channel).
        epoch: u64,
        /// The messages, oldest first.
        messages: Vec<HistoryMessage>,
        /// Messages after `after_seq` that are gone (first, last).
        gap: Option<(u64, u64)>,
        /// There are more after the last one listed.
        more: bool,
    },
    /// `ChannelsOfUser`.
    Channels(Vec<ChannelKey>),
    /// `ListChannels`.
    ChannelPage {
        /// The channels and their member counts, by (id, region).
        channels: Vec<(ChannelKey, u64)>,
        /// There are more after the last.
        more: bool,
    },
}

/// How the answers to a call's parts are put together (from
/// [`ApiCall::split`]).
#[derive(Clone, Copy, Debug)]
pub struct ApiMerge {
    /// The page size of a listing (0 for other calls).
    page: usize,
}

impl ApiCall {
    /// The shards that hold what this call needs, each with its part (one
    /// for a channel's or a uid's state, every shard for a listing, a
    /// share of the uids each for online status), and how their answers
    /// merge. What no shard can check for its share alone is checked here
    /// first: the whole list of an online status query (`limits`).
    pub fn split(
        self,
        shards: u16,
        limits: &crate::Limits,
    ) -> Result<(Vec<(ShardId, ApiCall)>, ApiMerge), ServiceError> {
        let page = match &self.request {
            ApiRequest::ListChannels { limit, .. } => *limit,
            ApiRequest::OnlineStatus { uids } => {
                limits.check_uid_query(uids)?;
                0
            }
            _ => 0,
        };
        Ok((self.parts(shards), ApiMerge { page }))
    }

    fn parts(self, shards: u16) -> Vec<(ShardId, ApiCall)> {
        let appid = self.appid;
        let one = |s: ShardId, request| vec![(s, ApiCall { appid, request })];
        let of_channel =
            |c: &ChannelKey| channel_shard(appid, c.region.to_wire(), &c.channel_id, shards);
        match self.request {
            ApiRequest::Publish { ref channel, .. }
            | ApiRequest::Channel { ref channel }
            | ApiRequest::UserAttributes { ref channel }
            | ApiRequest::WriteChannelAttributes { ref channel, .. }
            | ApiRequest::History { ref channel, .. } => {
                let s = of_channel(channel);
                one(s, self.request)
            }
            ApiRequest::SendToUser { receiver: uid, .. }
            | ApiRequest::Kick { uid, .. }
            | ApiRequest::ChannelsOfUser { uid } => {
                one(uid_shard(appid, uid, shards), self.request)
            }
            ApiRequest::OnlineStatus { uids } => {
                let mut parts: BTreeMap<ShardId, Vec<u64>> = BTreeMap::new();
                for uid in uids {
                    parts
                        .entry(uid_shard(appid, uid, shards))
                        .or_default()
                        .push(uid);
                }
                parts
                    .into_iter()
                    .map(|(s, uids)| {
                        let request = ApiRequest::OnlineStatus { uids };
                        (s, ApiCall { appid, request })
                    })
                    .collect()
            }
            ApiRequest::ListChannels { .. } => (0..shards.max(1))
                .map(|s| (ShardId(s), self.clone()))
                .collect(),
        }
    }
}

impl ApiMerge {
    /// The answer to the call from its parts' answers: the first refusal,
    /// or the parts put together.
    pub fn merge(
        self,
        parts: Vec<Result<ApiReply, ServiceError>>,
    ) -> Result<ApiReply, ServiceError> {
        merge(parts, self.page)
    }
}

fn merge(
    parts: Vec<Result<ApiReply, ServiceError>>,
    limit: usize,
) -> Result<ApiReply, ServiceError> {
    let mut merged: Option<ApiReply> = None;
    for part in parts {
        let part = part?;
        merged = Some(match (merged, part) {
            (None, p) => p,
            (Some(ApiReply::Online(mut a)), ApiReply::Online(b)) => {
                a.extend(b);
                ApiReply::Online(a)
            }
            (
                Some(ApiReply::ChannelPage {
                    channels: mut a,
                    more: more_a,
                }),
                ApiReply::ChannelPage {
                    channels: b,
                    more: more_b,
                },
            ) => {
                a.extend(b);
                a.sort_by(|x, y| page_order(&x.0).cmp(&page_order(&y.0)));
                let more = more_a || more_b || a.len() > limit;
                a.truncate(limit);
                ApiReply::ChannelPage { channels: a, more }
            }
            (Some(a), _) => a,
        });
    }
    merged.ok_or_else(|| ServiceError::new(ErrorCode::INTERNAL_SERVER_ERROR, "no shard answered"))
}

/// The order of [`ApiRequest::ListChannels`]: by id, then region.
fn page_order(k: &ChannelKey) -> (&str, i32) {
    (&k.channel_id, k.region.to_wire())
}

fn bad(message: &'static str) -> ServiceError {
    ServiceError::new(ErrorCode::INVALID_PARAMETER, message)
}

impl Hub {
    /// This shard's part of a backend's call (see [`ApiCall::split`]),
    /// answered at once; what it causes leaves through the usual outputs.
    pub fn handle_api(
        &mut self,
        now: std::time::Instant,
        call: ApiCall,
    ) -> Result<ApiReply, ServiceError> {
        self.clock.tick(now);
        if self.config.app(call.appid).is_none() {
            return Err(ServiceError::new(
                ErrorCode::APPID_UNAVAILABLE,
                "unknown appid",
            ));
        }
        let appid = call.appid;
        let result = match call.request {
            ApiRequest::Publish {
                channel,
                from_uid,
                message_id,
                message,
                unreliable,
            } => self.api_publish(appid, channel, from_uid, message_id, message, unreliable),
            ApiRequest::SendToUser {
                receiver,
                from_uid,
                message_id,
                message,
                unreliable,
            } => self.api_send_to_user(appid, receiver, from_uid, message_id, message, unreliable),
            ApiRequest::Kick {
                uid,
                instance_id,
                code,
                reason,
                ban,
            } => self.api_kick(appid, uid, instance_id, code, reason, ban),
            ApiRequest::OnlineStatus { uids } => {
                self.config.limits.check_uid_query(&uids)?;
                let online = uids
                    .into_iter()
                    .map(|u| (u, self.users.contains_key(&(appid, u))))
                    .collect();
                Ok(ApiReply::Online(online))
            }
            ApiRequest::Channel { channel } => {
                let info = self.api_channel(appid, &channel)?.map(|ch| ChannelInfo {
                    member_count: ch.members.len() as u64,
                    members: ch
                        .members
                        .keys()
                        .copied()
                        .take(MAX_LISTED_MEMBERS)
                        .collect(),
                    attributes: ch.attrs.clone(),
                    attributes_updated_by: ch.attrs_uid,
                    attributes_updated_ms: ch.attrs_ts,
                    epoch: ch.log.epoch(),
                    head_seq: ch.log.head(),
                });
                Ok(ApiReply::Channel(info))
            }
            ApiRequest::UserAttributes { channel } => {
                let attrs = self
                    .api_channel(appid, &channel)?
                    .map(|ch| ch.user_attrs.clone())
                    .unwrap_or_default();
                Ok(ApiReply::UserAttributes(attrs))
            }
            ApiRequest::WriteChannelAttributes {
                channel,
                op,
                attributes,
                keys,
                notify,
            } => {
                let num = self.api_channel_number(appid, &channel, true)?;
                let write = wire::AttributesWrite {
                    channel: None,
                    op: op as i32,
                    attributes,
                    keys,
                    enable_notification: notify,
                };
                self.apply_attributes(num, 0, write, AttributeScope::Channel)
                    .map(|_| ApiReply::Written)
            }
            ApiRequest::History {
                channel,
                after_seq,
                limit,
            } => self.api_history(appid, &channel, after_seq, limit),
            ApiRequest::ChannelsOfUser { uid } => {
                self.config.limits.check_uid(uid)?;
                // An instance's channels of other shards have their keys
                // beside them; those of this shard are in `channels`.
                let mut keys: Vec<ChannelKey> = self
                    .users
                    .get(&(appid, uid))
                    .into_iter()
                    .flatten()
                    .filter_map(|i| self.instances.get(i))
                    .flat_map(|i| {
                        i.channels.iter().filter_map(|num| match i.keys.get(num) {
                            Some(k) => ChannelKey::from_wire(k),
                            None => {
                                let ch = self.channels.get(num)?;
                                Some(ChannelKey::new(ch.region, ch.id.clone()))
                            }
                        })
                    })
                    .collect();
                keys.sort_by(|a, b| page_order(a).cmp(&page_order(b)));
                keys.dedup();
                Ok(ApiReply::Channels(keys))
            }
            ApiRequest::ListChannels { after, limit } => {
                if !(1..=MAX_PAGE).contains(&limit) {
                    return Err(bad("limit must be 1 to 1000"));
                }
                let mut page: Vec<(ChannelKey, u64)> = self
                    .channels
                    .values()
                    .filter(|ch| ch.appid == appid && !ch.members.is_empty())
                    .map(|ch| {
                        (
                            ChannelKey::new(ch.region, ch.id.clone()),
                            ch.members.len() as u64,
                        )
                    })
                    .filter(|(k, _)| after.as_ref().is_none_or(|a| page_order(k) > page_order(a)))
                    .collect();
                page.sort_by(|x, y| page_order(&x.0).cmp(&page_order(&y.0)));
                let more = page.len() > limit;
                page.truncate(limit);
                Ok(ApiReply::ChannelPage {
                    channels: page,
                    more,
                })
            }
        };
        if let Err(e) = &result {
            self.stats.note_refusal(e.code.code());
        }
        result
    }

    /// The channel `key` of `appid`, checked, if this shard holds it.
    fn api_channel(&self, appid: u32, key: &ChannelKey) -> Result<Option<&Channel>, ServiceError> {
        self.config.limits.check_channel_id(&key.channel_id)?;
        let index = (appid, key.region, key.channel_id.clone());
        Ok(self
            .channel_index
            .get(&index)
            .and_then(|n| self.channels.get(n)))
    }

    /// The number of channel `key` of `appid`; made (empty) when absent and
    /// `make`, else 2004.
    fn api_channel_number(
        &mut self,
        appid: u32,
        key: &ChannelKey,
        make: bool,
    ) -> Result<u32, ServiceError> {
        self.config.limits.check_channel_id(&key.channel_id)?;
        let index = (appid, key.region, key.channel_id.clone());
        if let Some(&n) = self.channel_index.get(&index) {
            return Ok(n);
        }
        if !make {
            return Err(ServiceError::new(
                ErrorCode::RESOURCE_NOT_FOUND,
                "no such channel",
            ));
        }
        Ok(self.make_channel(appid, key.region, key.channel_id.clone()))
    }

    /// A send of `who` with `message_id` to `to`: answered as the first
    /// when it was sent before (within the dedupe window), else done by
    /// `send` and remembered.
    fn deduped(
        &mut self,
        who: (u32, u64),
        message_id: u64,
        to: Destination,
        send: impl FnOnce(&mut Hub) -> Result<wire::SendReply, ServiceError>,
    ) -> Result<ApiReply, ServiceError> {
        if let Some(r) = self.sent_before(who, message_id, to)? {
            return Ok(ApiReply::Sent(sent(&r)));
        }
        let reply = send(self)?;
        self.remember_sent(who, message_id, to, &reply);
        Ok(ApiReply::Sent(sent(&reply)))
    }

    fn api_publish(
        &mut self,
        appid: u32,
        channel: ChannelKey,
        from_uid: u64,
        message_id: u64,
        message: Message,
        unreliable: bool,
    ) -> Result<ApiReply, ServiceError> {
        let to = Destination::Channel(super::channel::channel_key_hash(Some(&channel.to_wire())));
        self.deduped((appid, from_uid), message_id, to, |hub| {
            // An unreliable message to a channel nobody is in goes nowhere:
            // no channel is made for it.
            let num = match hub.api_channel_number(appid, &channel, !unreliable) {
                Ok(n) => n,
                Err(e) if unreliable && e.code == ErrorCode::RESOURCE_NOT_FOUND => {
                    return Ok(wire::SendReply {
                        seq: 0,
                        timestamp_ms: hub.unix_ms(),
                        delivered_online: false,
                    })
                }
                Err(e) => return Err(e),
            };
            let push = hub.channel_push(num, from_uid, message.into())?;
            let delivered_online = hub
                .channels
                .get(&num)
                .is_some_and(|c| !c.members.is_empty());
            let sent = SentRef {
                uid: from_uid,
                message_id,
                timestamp_ms: push.timestamp_ms,
                delivered_online,
            };
            let reply = hub.publish(num, push, unreliable, sent)?;
            Ok(wire::SendReply {
                delivered_online,
                ..reply
            })
        })
    }

    fn api_send_to_user(
        &mut self,
        appid: u32,
        receiver: u64,
        from_uid: u64,
        message_id: u64,
        message: Message,
        unreliable: bool,
    ) -> Result<ApiReply, ServiceError> {
        let to = Destination::User(receiver);
        self.deduped((appid, from_uid), message_id, to, |hub| {
            let push = hub.user_push(receiver, from_uid, message.into())?;
            let ts = push.timestamp_ms;
            let (seq, delivered_online) =
                hub.deliver_p2p((appid, receiver), push, unreliable, message_id);
            Ok(wire::SendReply {
                timestamp_ms: ts,
                delivered_online,
                seq,
            })
        })
    }

    fn api_kick(
        &mut self,
        appid: u32,
        uid: u64,
        instance_id: Option<u64>,
        code: u32,
        reason: String,
        ban: Duration,
    ) -> Result<ApiReply, ServiceError> {
        self.config.limits.check_uid(uid)?;
        if !(KICK_CODE_MIN..=KICK_CODE_MAX).contains(&code) {
            return Err(bad("a kick's code must be 4100 to 4199"));
        }
        if ban > MAX_BAN {
            return Err(bad("a ban lasts 30 days at most"));
        }
        if reason.len() > 256 {
            return Err(bad("a kick's reason is 256 bytes at most"));
        }
        let targets: Vec<u64> = self
            .users
            .get(&(appid, uid))
            .into_iter()
            .flatten()
            .copied()
            .filter(|i| instance_id.is_none_or(|only| only == *i))
            .collect();
        if instance_id.is_some() && targets.is_empty() {
            return Err(ServiceError::new(
                ErrorCode::RESOURCE_NOT_FOUND,
                "no such instance of that uid",
            ));
        }
        if !ban.is_zero() {
            let until = super::add(self.now(), ban);
            self.ban(appid, uid, until);
        }
        for &inst in &targets {
            if let Some(c) = self.instances.get(&inst).and_then(|i| i.conn) {
                let reason = CloseReason::KickedByService {
                    code,
                    reason: reason.clone(),
                };
                self.close_conn(c, reason);
            }
            self.remove_instance(inst);
        }
        Ok(ApiReply::Kicked {
            instances: u32::try_from(targets.len()).unwrap_or(u32::MAX),
        })
    }

    fn api_history(
        &mut self,
        appid: u32,
        channel: &ChannelKey,
        after_seq: u64,
        limit: usize,
    ) -> Result<ApiReply, ServiceError> {
        if !(1..=MAX_HISTORY).contains(&limit) {
            return Err(bad("limit must be 1 to 1000"));
        }
        let (now, retention) = (self.now(), self.config.channel_retention());
        let max_frame = self.config.limits.max_frame_size;
        self.config.limits.check_channel_id(&channel.channel_id)?;
        let index = (appid, channel.region, channel.channel_id.clone());
        let Some(&num) = self.channel_index.get(&index) else {
            return Ok(ApiReply::History {
                epoch: 0,
                messages: Vec::new(),
                gap: None,
                more: false,
            });
        };
        let Some(ch) = self.channels.get_mut(&num) else {
            return Err(ServiceError::new(
                ErrorCode::INTERNAL_SERVER_ERROR,
                "channel vanished",
            ));
        };
        let epoch = ch.log.epoch();
        let mut replay = ch.log.replay(now, retention, after_seq, usize::MAX);
        let gap = replay.gap().map(|g| (g.from, g.to));
        let frames = replay.take_frames();
        let more = frames.len() > limit;
        let messages = frames
            .into_iter()
            .take(limit)
            .filter_map(|f| match decode_frame(f, max_frame).ok()?.body {
                Body::ChannelMessage(p) => Some(HistoryMessage {
                    seq: p.seq,
                    from_uid: p.from_uid,
                    timestamp_ms: p.timestamp_ms,
                    message: Message::from(p.message.unwrap_or_default()),
                }),
                _ => None,
            })
            .collect();
        Ok(ApiReply::History {
            epoch,
            messages,
            gap,
            more,
        })
    }
}

fn sent(r: &wire::SendReply) -> Sent {
    Sent {
        seq: r.seq,
        timestamp_ms: r.timestamp_ms,
        delivered_online: r.delivered_online,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Region;

    fn page(ids: &[&str], more: bool) -> Result<ApiReply, ServiceError> {
        let channels = ids
            .iter()
            .map(|id| (ChannelKey::new(Region::Cn, *id), 1))
            .collect();
        Ok(ApiReply::ChannelPage { channels, more })
    }

    fn merged(parts: Vec<Result<ApiReply, ServiceError>>, limit: usize) -> (Vec<String>, bool) {
        match merge(parts, limit) {
            Ok(ApiReply::ChannelPage { channels, more }) => (
                channels.into_iter().map(|(k, _)| k.channel_id).collect(),
                more,
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn pages_of_shards_merge_in_order_and_say_when_there_is_more() {
        // One shard had more than the page: more, though the page is not full.
        assert_eq!(
            merged(vec![page(&["a", "c"], true), page(&[], false)], 2),
            (vec!["a".into(), "c".into()], true)
        );
        assert_eq!(
            merged(vec![page(&[], false), page(&["b"], true)], 2),
            (vec!["b".into()], true)
        );
        // Neither had more, but together they pass the page.
        assert_eq!(
            merged(vec![page(&["a", "d"], false), page(&["b", "c"], false)], 3),
            (vec!["a".into(), "b".into(), "c".into()], true)
        );
        // Exactly a page: no more.
        assert_eq!(
            merged(vec![page(&["a"], false), page(&["b"], false)], 2),
            (vec!["a".into(), "b".into()], false)
        );
        // A refusal of any part is the answer.
        let refused = merge(vec![page(&["a"], false), Err(bad("no"))], 2);
        assert_eq!(refused.unwrap_err().code, ErrorCode::INVALID_PARAMETER);
        assert_eq!(
            merge(vec![], 1).unwrap_err().code,
            ErrorCode::INTERNAL_SERVER_ERROR
        );
    }
}
