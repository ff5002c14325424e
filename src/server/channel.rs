//! Channels: members and per-uid presence, batched join/leave notices,
//! broadcast with retention, user and channel attributes, and the reads.
//!
//! Lifecycle: a channel exists from its first join. Channel attributes live
//! while it has members and are dropped when its last member leaves; a
//! member's user attributes are dropped when its uid's last instance leaves.
//! An empty channel is forgotten once its retained messages have aged out
//! (so a quick re-join still gets its replay); a later join makes a new one,
//! with a new number.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use bytes::Bytes;

use super::durable::{stored_channel_key, SentRef};
use super::hooks::{wants_messages, HookEventKind};
use super::hub::{Hub, LogId, Outcome, Timer};
use super::rate::RateKind;
use super::sent_ids::Destination;
use super::seq_log::{check_sequenced_fits, Replay, SeqLog};
use super::shard::{Member, ShardMsg};
use super::{add, check_push_fits, checked_key, checked_region, encode_push, ConnId, IdMap};
use crate::error::{ErrorCode, ServiceError};
use crate::limits::AttributeScope;
use crate::types::{Attributes, ChannelKey, Message, Region};
use crate::wire::{self, AttributeOp, Body};

/// One channel, keyed (appid, region, id) and numbered for pushes.
#[derive(Debug)]
pub(crate) struct Channel {
    pub appid: u32,
    pub region: Region,
    pub id: String,
    /// Member uids and, for each, its member instances.
    pub members: BTreeMap<u64, BTreeSet<u64>>,
    pub user_attrs: BTreeMap<u64, Attributes>,
    pub attrs: Attributes,
    pub attrs_uid: u64,
    pub attrs_ts: u64,
    /// The stream: a channel made again after it was forgotten gets a new
    /// epoch and numbers from 1 again.
    pub log: SeqLog,
    /// Where each member instance's history starts (the head when it
    /// joined): nothing before it is replayed or fetched for it.
    pub since: IdMap<u64, u64>,
    /// Uids whose membership ended because their link stayed down past the
    /// grace period: where it had started, and when it ended. Only they may
    /// rejoin with a replay (after their cursor and their start). A record
    /// outlives the uid's joins (every dropped instance of the uid may
    /// rejoin from its own cursor); a Leave or age ends it.
    pub departed: BTreeMap<u64, (u64, Instant)>,
    /// Net membership changes since the last notice.
    pub joined: BTreeSet<u64>,
    pub left: BTreeSet<u64>,
    /// A notice flush is scheduled.
    pub notice_pending: bool,
    /// Messages sent to it (reliable or not) since it was made.
    pub messages: u64,
}

impl Channel {
    pub(super) fn new(appid: u32, region: Region, id: String, log: SeqLog) -> Self {
        Channel {
            appid,
            region,
            id,
            members: BTreeMap::new(),
            user_attrs: BTreeMap::new(),
            attrs: Attributes::new(),
            attrs_uid: 0,
            attrs_ts: 0,
            log,
            since: IdMap::default(),
            departed: BTreeMap::new(),
            joined: BTreeSet::new(),
            left: BTreeSet::new(),
            notice_pending: false,
            messages: 0,
        }
    }

    /// Nothing left worth keeping: no members, no retained messages, no
    /// departed member that may rejoin.
    pub fn is_forgettable(&self) -> bool {
        self.members.is_empty() && self.log.is_empty() && self.departed.is_empty()
    }

    pub(super) fn member_count(&self) -> u32 {
        u32::try_from(self.members.len()).unwrap_or(u32::MAX)
    }
}

impl Hub {
    /// The number of a channel the instance is a member of (5101 otherwise).
    pub(super) fn member_channel(
        &self,
        m: &Member,
        key: Option<wire::ChannelKey>,
    ) -> Result<u32, ServiceError> {
        let (region, id) = checked_key(&self.config.limits, key)?;
        self.channel_index
            .get(&(m.appid, region, id))
            .copied()
            .filter(|n| self.is_member(*n, m.uid, m.inst))
            .ok_or_else(|| {
                ServiceError::new(
                    ErrorCode::USER_NOT_IN_CHANNEL,
                    "not a member of this channel",
                )
            })
    }

    /// Whether instance `inst` of `uid` is a member of channel `num`.
    pub(super) fn is_member(&self, num: u32, uid: u64, inst: u64) -> bool {
        self.channels
            .get(&num)
            .and_then(|ch| ch.members.get(&uid))
            .is_some_and(|s| s.contains(&inst))
    }

    /// The connections of every connected member instance homed here; the
    /// others go to their homes, one message per shard.
    fn member_conns(&mut self, num: u32, frame: &Bytes) -> Vec<ConnId> {
        let Some(ch) = self.channels.get(&num) else {
            return Vec::new();
        };
        if !self.guests.is_empty() {
            let mut homes: BTreeMap<u16, Vec<u64>> = BTreeMap::new();
            for i in ch.members.values().flatten() {
                if let Some(g) = self.guests.get(i) {
                    homes.entry(g.home.0).or_default().push(*i);
                }
            }
            for (home, insts) in homes {
                let frame = frame.clone();
                self.post_shard(super::ShardId(home), ShardMsg::Deliver { insts, frame });
            }
        }
        let Some(ch) = self.channels.get(&num) else {
            return Vec::new();
        };
        // Sized up front: collecting through `flatten` has no size hint, so
        // the vector would grow (and reallocate) log2(members) times.
        let mut conns = Vec::with_capacity(ch.members.len());
        conns.extend(
            ch.members
                .values()
                .flatten()
                .filter_map(|i| self.instances.get(i).and_then(|x| x.conn)),
        );
        conns
    }

    /// Queues one encoded frame to every connected member (a refcount each).
    fn broadcast(&mut self, num: u32, frame: &Bytes) {
        let conns = self.member_conns(num, frame);
        self.broadcast_to(conns, frame);
    }

    pub(super) fn join(&mut self, m: &Member, mut req: wire::JoinRequest) -> Outcome {
        let (region, id) = checked_key(&self.config.limits, req.channel.take())?;
        let (inst, appid, uid, joined) = (m.inst, m.appid, m.uid, m.joined);
        let existing = self
            .channel_index
            .get(&(appid, region, id.clone()))
            .copied();
        let was_member = existing.is_some_and(|n| self.is_member(n, uid, inst));
        self.member_take(m, RateKind::Membership, 1)?;
        if !was_member {
            self.config.limits.check_join(joined)?;
            let max = self.config.max_channel_members;
            let full = match existing.and_then(|n| self.channels.get(&n)) {
                Some(ch) => !ch.members.contains_key(&uid) && ch.members.len() >= max,
                None => max == 0,
            };
            if full {
                return Err(ServiceError::new(
                    ErrorCode::CHANNEL_USER_LIMIT_EXCEEDED,
                    "the channel is full",
                ));
            }
        }
        let num = match existing {
            Some(n) => n,
            None => self.make_channel(appid, region, id),
        };
        if !was_member {
            if m.home == self.shard {
                if let Some(i) = self.instances.get_mut(&inst) {
                    i.channels.insert(num);
                }
            } else {
                self.guests
                    .entry(inst)
                    .or_insert_with(|| super::cross::Guest {
                        home: m.home,
                        channels: BTreeSet::new(),
                    })
                    .channels
                    .insert(num);
                if let (Some(e), Some(ch)) = (self.effects.as_mut(), self.channels.get(&num)) {
                    let key = ChannelKey::new(ch.region, ch.id.clone()).to_wire();
                    e.joined = Some((num, key));
                }
            }
            let mut created = None;
            let first = self.channels.get_mut(&num).is_some_and(|ch| {
                if ch.members.is_empty() {
                    created = Some(ChannelKey::new(ch.region, ch.id.clone()));
                }
                let set = ch.members.entry(uid).or_default();
                set.insert(inst);
                set.len() == 1
            });
            self.touch_channel(num);
            if first {
                self.note_membership(num, uid, true);
            }
            if let Some(channel) = created {
                self.hook(appid, HookEventKind::ChannelCreated { channel });
            }
        }
        // Only a rejoin replays, only to an instance that is not a member
        // already (a member has had every push on this link), and only to a
        // uid whose membership ended with a lost link, from where it began:
        // no one reads a channel's history from before joining it.
        // A join does not end the departure record: it stands for every
        // instance of the uid dropped after the grace period, and each of
        // them may rejoin from its own cursor (the first one back must not
        // turn the others' replay into a gap). A Leave ends it (a uid that
        // left did not depart), and so does age (`sweep`).
        let departed = match was_member {
            false => self
                .channels
                .get(&num)
                .and_then(|ch| ch.departed.get(&uid))
                .map(|&(since, _)| since)
                .filter(|_| req.rejoin),
            true => None,
        };
        let (state, mut replay) = match departed {
            Some(since) => {
                let budget = self.replay_budget(m.conn);
                let cursor = (req.epoch, req.resume_seq);
                self.rejoin_state(num, cursor, since, Some(budget))
            }
            None if req.rejoin && !was_member => {
                self.rejoin_state(num, (req.epoch, req.resume_seq), 0, None)
            }
            None => self.rejoin_state(num, (0, 0), 0, None),
        };
        if !was_member {
            // A rejoin's membership goes on from where the departed one began.
            let since = departed.unwrap_or(state.seq).min(state.seq);
            if let Some(ch) = self.channels.get_mut(&num) {
                ch.since.insert(inst, since);
            }
            self.touch_channel(num);
        }
        Ok((
            Body::JoinReply(wire::JoinReply {
                member_offline: req.rejoin && !was_member,
                ..state
            }),
            replay.take_frames(),
        ))
    }

    /// Where a member's channel stream goes on from its cursor `after` in
    /// `epoch`: with a `budget`, the replay (within it) when the epoch is
    /// the channel's; without, pushes from the head and what lies between
    /// as a gap. Another epoch: `gap{from: after + 1, to: 0}` (the history
    /// it was in is gone) and pushes from the head. Epoch 0: from the head,
    /// no gap. `since`, where the member's history begins in the channel's
    /// epoch, bounds the replay in that epoch only: a cursor of another
    /// epoch is reported as it was sent.
    pub(super) fn rejoin_state(
        &mut self,
        num: u32,
        (epoch, after): (u64, u64),
        since: u64,
        budget: Option<usize>,
    ) -> (wire::JoinReply, Replay) {
        let (now, retention) = (self.now(), self.config.channel_retention());
        let Some(ch) = self.channels.get_mut(&num) else {
            return (wire::JoinReply::default(), Replay::default());
        };
        let replay = ch
            .log
            .resume(now, retention, (epoch, after), since, ch.log.head(), budget);
        let reply = wire::JoinReply {
            channel: num,
            seq: replay.seq(),
            gap: replay.gap(),
            member_offline: false,
            replay_truncated_at: replay.truncated_at(),
            epoch: ch.log.epoch(),
        };
        (reply, replay)
    }

    /// A nonzero channel number never used before while this server lives
    /// (short of 2^32 channels, where in-use numbers are still skipped).
    /// Shard `s` of `n` numbers its channels `1 + s`, `1 + s + n`, ...: no
    /// two shards give the same number (until the numbers wrap).
    /// Makes channel (appid, region, id), empty, with a stream of a new
    /// epoch; its number.
    pub(super) fn make_channel(&mut self, appid: u32, region: Region, id: String) -> u32 {
        let n = self.new_channel_number();
        let log = SeqLog::new(self.random_nonzero());
        self.channels
            .insert(n, Channel::new(appid, region, id.clone(), log));
        self.channel_index.insert((appid, region, id), n);
        self.touch_channel(n);
        n
    }

    fn new_channel_number(&mut self) -> u32 {
        loop {
            let n = self.next_channel;
            self.next_channel = self.next_channel.wrapping_add(u32::from(self.shards));
            if n != 0 && !self.channels.contains_key(&n) {
                return n;
            }
        }
    }

    pub(super) fn leave(&mut self, m: &Member, key: Option<wire::ChannelKey>) -> Outcome {
        let num = self.member_channel(m, key)?;
        self.member_take(m, RateKind::Membership, 1)?;
        let (inst, uid) = (m.inst, m.uid);
        if m.home == self.shard {
            match self.instances.get_mut(&inst) {
                Some(i) => i.channels.remove(&num),
                None => return Err(ServiceError::new(ErrorCode::UNAUTHORIZED, "not logged in")),
            };
        } else if let Some(e) = self.effects.as_mut() {
            e.left = Some(num);
        }
        // A uid that leaves did not depart: no rejoin of it replays.
        if let Some(ch) = self.channels.get_mut(&num) {
            ch.departed.remove(&uid);
        }
        self.touch_channel(num);
        self.remove_member(num, uid, inst);
        Ok((Body::Ok(wire::Empty {}), Vec::new()))
    }

    /// Removes instance `inst` of `uid` from channel `num` (the instance's
    /// own channel set is the caller's business).
    pub(super) fn remove_member(&mut self, num: u32, uid: u64, inst: u64) {
        let Some(ch) = self.channels.get_mut(&num) else {
            return;
        };
        let Some(set) = ch.members.get_mut(&uid) else {
            return;
        };
        set.remove(&inst);
        ch.since.remove(&inst);
        let now_empty = set.is_empty();
        self.touch_channel(num);
        let Some(ch) = self.channels.get_mut(&num) else {
            return;
        };
        if !self.guests.is_empty() {
            if let Some(g) = self.guests.get_mut(&inst) {
                g.channels.remove(&num);
                if g.channels.is_empty() {
                    self.guests.remove(&inst);
                }
            }
        }
        if !now_empty {
            return;
        }
        ch.members.remove(&uid);
        ch.user_attrs.remove(&uid);
        let emptied = ch.members.is_empty().then(|| {
            ch.attrs.clear();
            ch.attrs_uid = 0;
            ch.attrs_ts = 0;
            (ch.appid, ChannelKey::new(ch.region, ch.id.clone()))
        });
        if ch.is_forgettable() {
            let key = (ch.appid, ch.region, ch.id.clone());
            let stored = stored_channel_key(ch);
            self.channels.remove(&num);
            self.channel_index.remove(&key);
            self.store_delete_stream(LogId::Channel(num), stored);
        } else {
            self.note_membership(num, uid, false);
        }
        if let Some((appid, channel)) = emptied {
            self.hook(appid, HookEventKind::ChannelEmptied { channel });
        }
    }

    /// Records a uid joining or leaving, netting out changes within one
    /// batch window, and schedules the flush.
    fn note_membership(&mut self, num: u32, uid: u64, joined: bool) {
        let at = add(self.now(), self.config.notice_batch_window);
        let Some(ch) = self.channels.get_mut(&num) else {
            return;
        };
        if joined {
            if !ch.left.remove(&uid) {
                ch.joined.insert(uid);
            }
        } else if !ch.joined.remove(&uid) {
            ch.left.insert(uid);
        }
        if !ch.notice_pending {
            ch.notice_pending = true;
            self.timers.insert((at, Timer::Notice(num)));
        }
        self.touch_channel(num);
    }

    /// Sends the batched `MembershipPush` and then the `UserCountPush`.
    pub(super) fn flush_notices(&mut self, num: u32) {
        // Several pushes when the lists would not fit in one frame.
        let per_frame = (self.max_uids_per_frame() / 2).max(1);
        let Some(ch) = self.channels.get_mut(&num) else {
            return;
        };
        ch.notice_pending = false;
        if ch.joined.is_empty() && ch.left.is_empty() {
            return;
        }
        self.touch_channel(num);
        let Some(ch) = self.channels.get_mut(&num) else {
            return;
        };
        let joined: Vec<u64> = std::mem::take(&mut ch.joined).into_iter().collect();
        let left: Vec<u64> = std::mem::take(&mut ch.left).into_iter().collect();
        let count = encode_push(Body::UserCountChanged(wire::UserCountPush {
            channel: num,
            count: ch.member_count(),
        }));
        let mut joined = joined.chunks(per_frame);
        let mut left = left.chunks(per_frame);
        loop {
            let (j, l) = (joined.next(), left.next());
            if j.is_none() && l.is_none() {
                break;
            }
            let membership = encode_push(Body::Membership(wire::MembershipPush {
                channel: num,
                joined: j.unwrap_or_default().to_vec(),
                left: l.unwrap_or_default().to_vec(),
            }));
            self.broadcast(num, &membership);
        }
        self.broadcast(num, &count);
    }

    /// How many uids a list in one frame may hold: a varint uid takes at
    /// most 10 bytes, and the frame has a few bytes of its own. Longer user
    /// lists are cut to this (the lowest uids), so a reply never exceeds
    /// the frame size a client accepts.
    fn max_uids_per_frame(&self) -> usize {
        (self.config.limits.max_frame_size.saturating_sub(64) / 10).max(1)
    }

    pub(super) fn send_to_channel(
        &mut self,
        m: &Member,
        mut req: wire::SendToChannelRequest,
    ) -> Outcome {
        let (inst, who, local) = (m.inst, (m.appid, m.uid), m.home == self.shard);
        let to = Destination::Channel(channel_key_hash(req.channel.as_ref()));
        // A forwarded send was looked up by its home.
        if local {
            if let Some(reply) = self.sent_before(who, req.message_id, to)? {
                return Ok((Body::SendReply(reply), Vec::new()));
            }
        }
        let num = self.member_channel(m, req.channel.take())?;
        let push = self.channel_push(num, who.1, req.message.unwrap_or_default())?;
        // Counted only once the send is known to be valid.
        if local {
            self.rate_check(inst)?;
        } else if let Some(e) = self.effects.as_mut() {
            e.send_counted = true;
        }
        let sent = SentRef {
            uid: who.1,
            message_id: req.message_id,
            timestamp_ms: push.timestamp_ms,
            delivered_online: true,
        };
        let reply = self.publish(num, push, req.unreliable, sent)?;
        if local {
            self.remember_sent(who, req.message_id, to, &reply);
        } else if let Some(e) = self.effects.as_mut() {
            e.sent = Some((req.message_id, to, reply));
        }
        Ok((Body::SendReply(reply), Vec::new()))
    }

    /// The push of a message from `from_uid` to channel `num`, checked
    /// against the limits (its size, and that it fits in a frame with the
    /// longest seq: a reliable push that does not would be replayed, and
    /// refused, on every rejoin).
    pub(super) fn channel_push(
        &self,
        num: u32,
        from_uid: u64,
        message: wire::ChatMessage,
    ) -> Result<wire::ChannelMessagePush, ServiceError> {
        let message = Message::from(message);
        self.config.limits.check_message(&message)?;
        let push = wire::ChannelMessagePush {
            channel: num,
            from_uid,
            message: Some(message.into()),
            timestamp_ms: self.unix_ms(),
            seq: 0,
        };
        check_sequenced_fits(self.config.limits.max_frame_size, &push)?;
        Ok(push)
    }

    /// Sends `push` to channel `num`'s members: appended to its stream
    /// (unless unreliable), counted, broadcast, and told to the app's
    /// backend when it listens to this channel's messages.
    pub(super) fn publish(
        &mut self,
        num: u32,
        mut push: wire::ChannelMessagePush,
        unreliable: bool,
        sent: SentRef,
    ) -> Result<wire::SendReply, ServiceError> {
        let (now, ts) = (self.now(), push.timestamp_ms);
        let retention = self.config.channel_retention();
        let Some(ch) = self.channels.get_mut(&num) else {
            return Err(ServiceError::new(
                ErrorCode::INTERNAL_SERVER_ERROR,
                "channel vanished",
            ));
        };
        ch.messages += 1;
        let appid = ch.appid;
        // Only copied for a backend that may want it.
        let event = wants_messages(&self.config, appid).then(|| {
            let m = push.message.clone().unwrap_or_default();
            let channel = ChannelKey::new(ch.region, ch.id.clone());
            (channel, push.from_uid, m.r#type, m.content)
        });
        let (seq, frame) = if unreliable {
            (0, encode_push(Body::ChannelMessage(push)))
        } else {
            let stored = self.store.is_some().then(|| stored_channel_key(ch));
            let pushed = ch.log.push(now, retention, |seq| {
                push.seq = seq;
                encode_push(Body::ChannelMessage(push))
            });
            if let Some(key) = stored {
                self.store_append(
                    LogId::Channel(num),
                    key,
                    pushed.seq,
                    &pushed.frame,
                    Some(sent),
                );
            }
            self.retained(appid, pushed.added);
            (pushed.seq, pushed.frame)
        };
        self.broadcast(num, &frame);
        if let Some((channel, from_uid, kind, content)) = event {
            self.hook(
                appid,
                HookEventKind::ChannelMessage {
                    channel,
                    from_uid,
                    seq,
                    kind,
                    content,
                },
            );
        }
        Ok(wire::SendReply {
            timestamp_ms: ts,
            delivered_online: true,
            seq,
        })
    }

    pub(super) fn write_attributes(
        &mut self,
        m: &Member,
        mut req: wire::AttributesWrite,
        scope: AttributeScope,
    ) -> Outcome {
        let num = self.member_channel(m, req.channel.take())?;
        let uid = m.uid;
        // Weighted by the notices it causes: 1, plus 1 per 100 members told.
        let told = match req.enable_notification {
            true => self.channels.get(&num).map_or(0, |c| c.members.len()),
            false => 0,
        };
        self.member_take(m, RateKind::AttributeWrite, 1 + told as u64 / 100)?;
        self.apply_attributes(num, uid, req, scope)
    }

    /// Applies an attribute write of `writer` (0: the service) to channel
    /// `num`: the operation checked against the limits, then the notice
    /// to the members when asked for.
    pub(super) fn apply_attributes(
        &mut self,
        num: u32,
        uid: u64,
        req: wire::AttributesWrite,
        scope: AttributeScope,
    ) -> Outcome {
        let op = match AttributeOp::try_from(req.op) {
            Ok(AttributeOp::Unspecified) => Err("attribute op unspecified"),
            Ok(op) => Ok(op),
            Err(_) => Err("unknown attribute op"),
        }
        .map_err(|e| ServiceError::new(ErrorCode::INVALID_PARAMETER, e))?;
        let ts = self.unix_ms();
        let limits = &self.config.limits;
        let Some(ch) = self.channels.get_mut(&num) else {
            return Err(ServiceError::new(
                ErrorCode::INTERNAL_SERVER_ERROR,
                "channel vanished",
            ));
        };
        let empty = Attributes::new();
        let current = match scope {
            AttributeScope::Channel => {
                if matches!(op, AttributeOp::Delete | AttributeOp::Clear) && ch.attrs.is_empty() {
                    return Err(ServiceError::new(
                        ErrorCode::CHANNEL_ATTRIBUTES_NOT_EXIST,
                        "the channel has no attributes",
                    ));
                }
                &ch.attrs
            }
            AttributeScope::User => ch.user_attrs.get(&uid).unwrap_or(&empty),
        };
        let new = limits.apply_attribute_op(scope, current, op, &req.attributes, &req.keys)?;
        let pushed_attrs = match op {
            AttributeOp::Set => new.clone(),
            AttributeOp::AddOrUpdate => req.attributes,
            _ => Attributes::new(),
        };
        let pushed_keys = if op == AttributeOp::Delete {
            req.keys
        } else {
            Vec::new()
        };
        let body = match scope {
            AttributeScope::Channel => {
                Body::ChannelAttributesChanged(wire::ChannelAttributesPush {
                    channel: num,
                    last_update_uid: uid,
                    op: op as i32,
                    attributes: pushed_attrs,
                    keys: pushed_keys,
                    timestamp_ms: ts,
                })
            }
            AttributeScope::User => Body::UserAttributesChanged(wire::UserAttributesPush {
                channel: num,
                uid,
                op: op as i32,
                attributes: pushed_attrs,
                keys: pushed_keys,
                timestamp_ms: ts,
            }),
        };
        if req.enable_notification {
            // A notice no client could decode would drop every member's link.
            check_push_fits(limits.max_frame_size, body.encoded_len())
                .map_err(|e| ServiceError::new(ErrorCode::INVALID_PARAMETER, e.message))?;
        }
        if scope == AttributeScope::Channel {
            ch.attrs = new;
            ch.attrs_uid = uid;
            ch.attrs_ts = ts;
        } else if new.is_empty() {
            ch.user_attrs.remove(&uid);
        } else {
            ch.user_attrs.insert(uid, new);
        }
        self.touch_channel(num);
        if req.enable_notification {
            self.broadcast(num, &encode_push(body));
        }
        Ok((Body::Ok(wire::Empty {}), Vec::new()))
    }

    pub(super) fn user_list(&mut self, m: &Member, key: Option<wire::ChannelKey>) -> Outcome {
        let num = self.member_channel(m, key)?;
        self.member_take(m, RateKind::Query, 1)?;
        let cap = self.max_uids_per_frame();
        let uids = self
            .channels
            .get(&num)
            .map(|ch| ch.members.keys().copied().take(cap).collect())
            .unwrap_or_default();
        Ok((Body::UserList(wire::UserListReply { uids }), Vec::new()))
    }

    pub(super) fn user_attributes(
        &mut self,
        m: &Member,
        mut req: wire::GetUserAttributesRequest,
    ) -> Outcome {
        let num = self.member_channel(m, req.channel.take())?;
        self.member_take(m, RateKind::Query, 1)?;
        if !req.keys.is_empty() {
            self.config.limits.check_keys(&req.keys)?;
        }
        let ch = self.channels.get(&num).ok_or_else(not_found)?;
        if !ch.members.contains_key(&req.uid) {
            return Err(ServiceError::new(
                ErrorCode::RESOURCE_NOT_FOUND,
                "that uid is not in the channel",
            ));
        }
        let empty = Attributes::new();
        let all = ch.user_attrs.get(&req.uid).unwrap_or(&empty);
        Ok((
            Body::Attributes(wire::AttributesReply {
                attributes: select(all, &req.keys),
                last_update_uid: 0,
                last_update_ts: 0,
            }),
            Vec::new(),
        ))
    }

    pub(super) fn channel_attributes(
        &mut self,
        m: &Member,
        mut req: wire::GetChannelAttributesRequest,
    ) -> Outcome {
        let num = self.member_channel(m, req.channel.take())?;
        self.member_take(m, RateKind::Query, 1)?;
        if !req.keys.is_empty() {
            self.config.limits.check_keys(&req.keys)?;
        }
        let ch = self.channels.get(&num).ok_or_else(not_found)?;
        Ok((
            Body::Attributes(wire::AttributesReply {
                attributes: select(&ch.attrs, &req.keys),
                last_update_uid: ch.attrs_uid,
                last_update_ts: ch.attrs_ts,
            }),
            Vec::new(),
        ))
    }

    pub(super) fn user_list_by_attribute(
        &mut self,
        m: &Member,
        mut req: wire::GetUserListByAttributeRequest,
    ) -> Outcome {
        self.config.limits.check_key(&req.key)?;
        let num = self.member_channel(m, req.channel.take())?;
        self.member_take(m, RateKind::Query, 1)?;
        let cap = self.max_uids_per_frame();
        let ch = self.channels.get(&num).ok_or_else(not_found)?;
        let uids = ch
            .user_attrs
            .iter()
            .filter(|(_, a)| a.get(&req.key) == Some(&req.value))
            .map(|(u, _)| *u)
            .take(cap)
            .collect();
        Ok((Body::UserList(wire::UserListReply { uids }), Vec::new()))
    }

    pub(super) fn user_count(&mut self, inst: u64, req: wire::GetUserCountRequest) -> Outcome {
        let region = checked_region(req.region)?;
        self.config
            .limits
            .check_channel_id_query(&req.channel_ids)?;
        self.rate_take(inst, RateKind::Query, 1)?;
        let appid = self.instance(inst)?.appid;
        let counts = req
            .channel_ids
            .into_iter()
            .map(|id| {
                let n = self.member_count_of(appid, region, &id);
                (id, n)
            })
            .collect();
        Ok((Body::UserCount(wire::UserCountReply { counts }), Vec::new()))
    }

    /// The member count of a channel (0: none here).
    pub(super) fn member_count_of(&self, appid: u32, region: Region, id: &str) -> u32 {
        self.channel_index
            .get(&(appid, region, id.to_owned()))
            .and_then(|n| self.channels.get(n))
            .map_or(0, Channel::member_count)
    }

    /// `Fetch`: the retained pushes after `after_seq` (queued before the
    /// reply), then `FetchReply{through_seq, gap}`. A replay cut short by the
    /// byte budget says so with a `through_seq` below the head.
    pub(super) fn fetch(&mut self, conn: ConnId, m: &Member, req: wire::FetchRequest) -> Outcome {
        let inst = m.inst;
        // Limited by the bytes replayed, charged once known.
        if m.home == self.shard {
            self.rate_ready(inst, RateKind::FetchBytes)?;
        }
        let (now, budget) = (self.now(), self.replay_budget(Some(conn)));
        let mut replay = match req.channel {
            None => self.p2p_replay(inst, req.after_seq, budget),
            Some(key) => {
                let num = self.member_channel(m, Some(key))?;
                let ch = self.channels.get_mut(&num).ok_or_else(not_found)?;
                // Nothing from before this instance joined.
                let since = ch.since.get(&inst).copied().unwrap_or(ch.log.head());
                let retention = self.config.channel_retention();
                ch.log
                    .replay(now, retention, req.after_seq.max(since), budget)
            }
        };
        self.member_charge(m, RateKind::FetchBytes, replay.bytes() as u64);
        let frames = replay.take_frames();
        // Queued before the reply, so not counted with it (`note_answer`).
        self.stats.note_replayed(frames.len());
        for f in frames {
            self.send(conn, f);
        }
        Ok((
            Body::FetchReply(wire::FetchReply {
                through_seq: replay.through(),
                gap: replay.gap(),
                more: replay.more(),
            }),
            Vec::new(),
        ))
    }
}

fn select(all: &Attributes, keys: &[String]) -> Attributes {
    if keys.is_empty() {
        return all.clone();
    }
    keys.iter()
        .filter_map(|k| all.get(k).map(|v| (k.clone(), v.clone())))
        .collect()
}

/// A fingerprint of a channel key, to tell a re-send to the same channel
/// from a reuse of its message id for another (see `sent_ids`).
pub(super) fn channel_key_hash(key: Option<&wire::ChannelKey>) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    if let Some(k) = key {
        k.region.hash(&mut h);
        k.channel_id.hash(&mut h);
    }
    h.finish()
}

fn not_found() -> ServiceError {
    ServiceError::new(ErrorCode::RESOURCE_NOT_FOUND, "no such channel")
}
