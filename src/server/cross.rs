//! Operations that span shards: routing a request's channel part to its
//! channel's shard, P2P sends to another home, fan-out queries, resumes
//! of channels kept elsewhere, and instances leaving channels of other
//! shards. With one shard none of this runs: everything is a direct call.
//!
//! Races the asynchrony creates, and what holds:
//! - A re-send with the same message id while the first is in flight is
//!   parked at the home and answered with the first one's reply (or
//!   handled anew if the first failed: a failed send is not remembered).
//! - A leave (or any channel request) racing a send of the same link goes
//!   through the same (home, channel shard) pair, so in order.
//! - A grace expiry racing a resume is decided at the home: a resume that
//!   arrives first takes the instance over (the timer then finds it
//!   attached); one that arrives after finds it gone and logs in anew,
//!   after the channel shards were told to drop it (in order before any
//!   of the new instance's requests).
//! - A resume's reply waits for the channel shards' answers; the link's
//!   other frames and requests wait for the reply. A channel's pushes
//!   produced before its shard took the resume are in its replay (they
//!   are dropped), those after it are held until the reply is out.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Instant;

use bytes::Bytes;

use super::channel::channel_key_hash;
use super::conn::ConnId;
use super::hub::{Current, Hub, Outcome};
use super::message::ToHub;
use super::rate::RateKind;
use super::sent_ids::Destination;
use super::shard::{Effects, Member, ShardId, ShardMsg, ToShard};
use super::{channel_shard, checked_region, encode_push, uid_shard};
use crate::error::{ErrorCode, ServiceError};
use crate::limits::AttributeScope;
use crate::wire::{self, Body};

/// An instance homed on another shard, member of channels of this one.
#[derive(Debug)]
pub(crate) struct Guest {
    pub home: ShardId,
    /// Its channels here.
    pub channels: BTreeSet<u32>,
}

/// A re-send waiting for the outcome of the first send with its id.
#[derive(Debug)]
pub(crate) struct ParkedSend {
    conn: ConnId,
    rid: u64,
    body: Body,
    queued: usize,
}

/// Sends in flight to another shard: (sender, message id) to where, and
/// the re-sends waiting.
pub(crate) type InflightSends = HashMap<((u32, u64), u64), (Destination, Vec<ParkedSend>)>;

/// A request answered from several shards.
#[derive(Debug)]
pub(crate) struct Gather {
    conn: ConnId,
    rid: u64,
    waiting: usize,
    online: Option<BTreeMap<u64, bool>>,
    counts: BTreeMap<String, u32>,
}

/// A login whose resumed channels are (partly) on other shards.
#[derive(Debug)]
pub(crate) struct Resuming {
    token: u64,
    inst: u64,
    /// Shards that have not answered yet.
    awaiting: BTreeSet<ShardId>,
    /// Kept channels, by their index in the login's list.
    kept: Vec<(usize, wire::ResumedChannel)>,
    /// The other shards' replays.
    frames: Vec<Bytes>,
    /// Frames for the link produced meanwhile (after the replays).
    pub held: Vec<Bytes>,
    /// The link's messages that came meanwhile.
    pub parked: Vec<ToHub>,
    /// The login's request id and outcome, once computed.
    pub reply: Option<(u64, Outcome)>,
}

/// A resume's channels of other shards, while the login is computed.
#[derive(Debug, Default)]
pub(crate) struct RemoteResume {
    /// The login-list index of each channel kept here, in order.
    pub local: Vec<usize>,
    by_shard: BTreeMap<ShardId, Vec<Cursor>>,
}

/// A channel cursor of a resume: (index in the login's list, key, epoch,
/// seq).
type Cursor = (usize, wire::ChannelKey, u64, u64);

impl RemoteResume {
    pub fn cursor(
        &mut self,
        shard: ShardId,
        idx: usize,
        key: wire::ChannelKey,
        (epoch, seq): (u64, u64),
    ) {
        self.by_shard
            .entry(shard)
            .or_default()
            .push((idx, key, epoch, seq));
    }

    /// Every shard the instance's requests went to is asked too: it leaves
    /// the channels the resume does not keep.
    pub fn ask_all(&mut self, mask: u64, me: ShardId) {
        for s in 0..64u16 {
            if mask & (1 << s) != 0 && s != me.0 {
                self.by_shard.entry(ShardId(s)).or_default();
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.by_shard.is_empty()
    }
}

/// Whether a request is about one channel (its channel shard's business).
pub(super) fn is_channel_body(body: &Body) -> bool {
    match body {
        Body::Fetch(r) => r.channel.is_some(),
        _ => channel_key(body).is_some(),
    }
}

/// The channel a request names, if it is a channel request.
fn channel_key(body: &Body) -> Option<Option<&wire::ChannelKey>> {
    Some(match body {
        Body::Join(r) => r.channel.as_ref(),
        Body::Leave(r) => r.channel.as_ref(),
        Body::SendToChannel(r) => r.channel.as_ref(),
        Body::WriteUserAttributes(r) | Body::WriteChannelAttributes(r) => r.channel.as_ref(),
        Body::GetUserList(k) => Some(k),
        Body::GetUserAttributes(r) => r.channel.as_ref(),
        Body::GetChannelAttributes(r) => r.channel.as_ref(),
        Body::GetUserListByAttribute(r) => r.channel.as_ref(),
        Body::Fetch(r) => r.channel.as_ref(),
        _ => return None,
    })
}

/// The per-uid limit a channel request counts against.
fn rate_kind(body: &Body) -> RateKind {
    match body {
        Body::Join(_) | Body::Leave(_) => RateKind::Membership,
        Body::SendToChannel(_) => RateKind::Send,
        Body::WriteUserAttributes(_) | Body::WriteChannelAttributes(_) => RateKind::AttributeWrite,
        Body::Fetch(_) => RateKind::FetchBytes,
        _ => RateKind::Query,
    }
}

impl Hub {
    /// The next message for another shard, and which.
    pub fn poll_shard(&mut self) -> Option<(ShardId, ToShard)> {
        self.to_shards.pop(self.store.as_ref())
    }

    /// A message from shard `from`.
    pub fn handle_shard(&mut self, now: Instant, from: ShardId, message: ToShard) {
        self.clock.tick(now);
        match message.0 {
            ShardMsg::Login(m) => self.handle(now, m),
            ShardMsg::Channel {
                conn,
                rid,
                queued,
                member,
                body,
            } => self.channel_request(conn, rid, queued, member, body),
            ShardMsg::P2p {
                conn,
                rid,
                from: who,
                message_id,
                receiver,
                unreliable,
                message,
                ts,
            } => {
                let push = wire::UserMessagePush {
                    from_uid: who.1,
                    message: Some(message),
                    timestamp_ms: ts,
                    seq: 0,
                };
                let (seq, delivered_online) =
                    self.deliver_p2p((who.0, receiver), push, unreliable, message_id);
                let reply = wire::SendReply {
                    timestamp_ms: ts,
                    delivered_online,
                    seq,
                };
                let frame = encode_reply(rid, Body::SendReply(reply));
                let effects = Effects {
                    sent: Some((message_id, Destination::User(receiver), reply)),
                    ..Effects::default()
                };
                let done = ShardMsg::Done {
                    conn,
                    inst: 0,
                    who,
                    message_id: Some(message_id),
                    effects,
                    frames: vec![frame],
                    answered: None,
                };
                self.post_shard(from, done);
            }
            ShardMsg::Done {
                conn,
                inst,
                who,
                message_id,
                effects,
                frames,
                answered,
            } => {
                self.done(conn, inst, who, message_id, effects, frames);
                if let Some(rid) = answered {
                    self.replay_answered(conn, rid);
                }
            }
            ShardMsg::Deliver { insts, frame } => self.deliver(from, insts, &frame),
            ShardMsg::DropInstance { inst, uid, depart } => {
                let Some(g) = self.guests.remove(&inst) else {
                    return;
                };
                for num in g.channels {
                    if depart {
                        self.note_departure(num, uid, inst);
                    }
                    self.remove_member(num, uid, inst);
                }
            }
            ShardMsg::Resume {
                token,
                inst,
                appid,
                uid,
                cursors,
                budget,
            } => self.resume_here(from, token, inst, (appid, uid), cursors, budget),
            ShardMsg::Resumed {
                token,
                kept,
                member,
                left,
                frames,
            } => self.resumed(from, token, kept, (member, left), frames),
            ShardMsg::Online { token, appid, uids } => {
                let online = uids
                    .into_iter()
                    .map(|u| (u, self.users.contains_key(&(appid, u))))
                    .collect();
                let answer = ShardMsg::Answer {
                    token,
                    online,
                    counts: Vec::new(),
                };
                self.post_shard(from, answer);
            }
            ShardMsg::Count {
                token,
                appid,
                region,
                ids,
            } => {
                let counts = ids
                    .into_iter()
                    .map(|id| {
                        let n = self.member_count_of(appid, region, &id);
                        (id, n)
                    })
                    .collect();
                let answer = ShardMsg::Answer {
                    token,
                    online: Vec::new(),
                    counts,
                };
                self.post_shard(from, answer);
            }
            ShardMsg::Answer {
                token,
                online,
                counts,
            } => self.answered(token, online, counts),
        }
    }

    /// The instance as its channels see it (it is homed here).
    pub(super) fn local_member(&self, inst: u64) -> Result<Member, ServiceError> {
        let i = self.instance(inst)?;
        Ok(Member {
            inst,
            appid: i.appid,
            uid: i.uid,
            home: self.shard,
            conn: i.conn,
            joined: i.channels.len(),
        })
    }

    /// A channel request of member `m`, on this (the channel's) shard.
    pub(super) fn dispatch_channel(&mut self, conn: ConnId, m: &Member, body: Body) -> Outcome {
        match body {
            Body::Join(r) => self.join(m, r),
            Body::Leave(r) => self.leave(m, r.channel),
            Body::SendToChannel(r) => self.send_to_channel(m, r),
            Body::WriteUserAttributes(r) => self.write_attributes(m, r, AttributeScope::User),
            Body::WriteChannelAttributes(r) => self.write_attributes(m, r, AttributeScope::Channel),
            Body::GetUserList(k) => self.user_list(m, Some(k)),
            Body::GetUserAttributes(r) => self.user_attributes(m, r),
            Body::GetChannelAttributes(r) => self.channel_attributes(m, r),
            Body::GetUserListByAttribute(r) => self.user_list_by_attribute(m, r),
            Body::Fetch(r) => self.fetch(conn, m, r),
            _ => Err(ServiceError::new(
                ErrorCode::INVALID_PARAMETER,
                "not a request",
            )),
        }
    }

    /// Takes `cost` from the member's `kind` limit: at once when it is
    /// homed here, else charged by its home (which checked the limit had
    /// room before forwarding).
    pub(super) fn member_take(
        &mut self,
        m: &Member,
        kind: RateKind,
        cost: u64,
    ) -> Result<(), ServiceError> {
        if m.home == self.shard {
            return self.rate_take(m.inst, kind, cost);
        }
        if let Some(e) = self.effects.as_mut() {
            e.charges.push((kind, cost));
        }
        Ok(())
    }

    /// Charges `cost` to the member's `kind` limit after the work.
    pub(super) fn member_charge(&mut self, m: &Member, kind: RateKind, cost: u64) {
        if m.home == self.shard {
            return self.rate_charge(m.inst, kind, cost);
        }
        if let Some(e) = self.effects.as_mut() {
            e.charges.push((kind, cost));
        }
    }

    /// Routes a request of a link homed here (several shards): what
    /// another shard must do is forwarded there, and `None` returned; what
    /// is done here is given back.
    pub(super) fn route(&mut self, conn: ConnId, rid: u64, inst: u64, body: Body) -> Option<Body> {
        let Some((appid, uid)) = self.instances.get(&inst).map(|i| (i.appid, i.uid)) else {
            return Some(body);
        };
        if !self.inflight.is_empty() {
            // An id in flight to another shard is reused for a send here.
            let dest = match &body {
                Body::SendToUser(r) => Some((r.message_id, Destination::User(r.receiver))),
                Body::SendToChannel(r) => Some((
                    r.message_id,
                    Destination::Channel(channel_key_hash(r.channel.as_ref())),
                )),
                _ => None,
            };
            if let Some((id, to)) = dest {
                if let Some((d, _)) = self.inflight.get(&((appid, uid), id)) {
                    if *d != to {
                        let e = ServiceError::new(
                            ErrorCode::MESSAGE_ID_REUSED,
                            "this message id was used for a send to another destination",
                        );
                        self.error(conn, rid, e);
                        return None;
                    }
                }
            }
        }
        match &body {
            Body::QueryOnline(_) | Body::GetUserCount(_) => {
                if let Err(e) = self.gather(conn, rid, inst, body) {
                    self.error(conn, rid, e);
                }
                None
            }
            Body::SendToUser(r) if uid_shard(appid, r.receiver, self.shards) != self.shard => {
                let Body::SendToUser(r) = body else {
                    return None;
                };
                if let Err(e) = self.forward_p2p(conn, rid, inst, r) {
                    self.error(conn, rid, e);
                }
                None
            }
            _ => {
                let Some(key) = channel_key(&body).flatten() else {
                    return Some(body);
                };
                let owner = channel_shard(appid, key.region, &key.channel_id, self.shards);
                if owner == self.shard || checked_region(key.region).is_err() {
                    return Some(body);
                }
                if let Err(e) = self.forward_channel(conn, rid, inst, owner, body) {
                    self.error(conn, rid, e);
                }
                None
            }
        }
    }

    /// `Ok(true)`: a send with this id by `who` is in flight to `to` (the
    /// caller parks the re-send); 2013 when it went elsewhere.
    fn in_flight(&self, who: (u32, u64), id: u64, to: Destination) -> Result<bool, ServiceError> {
        match self.inflight.get(&(who, id)) {
            None => Ok(false),
            Some((dest, _)) if *dest == to => Ok(true),
            Some(_) => Err(ServiceError::new(
                ErrorCode::MESSAGE_ID_REUSED,
                "this message id was used for a send to another destination",
            )),
        }
    }

    fn park(&mut self, who: (u32, u64), id: u64, conn: ConnId, rid: u64, body: Body) {
        let queued = self.current.map_or(0, |c| c.queued);
        if let Some((_, parked)) = self.inflight.get_mut(&(who, id)) {
            parked.push(ParkedSend {
                conn,
                rid,
                body,
                queued,
            });
        }
    }

    /// Sets the instance's bit for `shard` (told when it goes).
    fn mark_shard(&mut self, inst: u64, shard: ShardId) {
        if let Some(i) = self.instances.get_mut(&inst) {
            i.shard_mask |= 1 << shard.0;
        }
    }

    fn forward_channel(
        &mut self,
        conn: ConnId,
        rid: u64,
        inst: u64,
        owner: ShardId,
        body: Body,
    ) -> Result<(), ServiceError> {
        let m = self.local_member(inst)?;
        let who = (m.appid, m.uid);
        let mut send_id = None;
        if let Body::SendToChannel(r) = &body {
            let to = Destination::Channel(channel_key_hash(r.channel.as_ref()));
            if let Some(reply) = self.sent_before(who, r.message_id, to)? {
                self.reply(conn, rid, Body::SendReply(reply));
                return Ok(());
            }
            if self.in_flight(who, r.message_id, to)? {
                let id = r.message_id;
                self.park(who, id, conn, rid, body);
                return Ok(());
            }
            self.send_room(inst)?;
            send_id = Some((r.message_id, to));
        }
        self.rate_ready(inst, rate_kind(&body))?;
        if let Some((id, to)) = send_id {
            self.inflight.insert((who, id), (to, Vec::new()));
        }
        self.mark_shard(inst, owner);
        // What this shard holds for the link counts on the channel's too.
        let queued = self.queued_for(conn);
        let msg = ShardMsg::Channel {
            conn,
            rid,
            queued,
            member: m,
            body,
        };
        self.post_shard(owner, msg);
        Ok(())
    }

    /// A P2P send to a uid homed elsewhere: checked and counted here,
    /// delivered there.
    fn forward_p2p(
        &mut self,
        conn: ConnId,
        rid: u64,
        inst: u64,
        req: wire::SendToUserRequest,
    ) -> Result<(), ServiceError> {
        let i = self.instance(inst)?;
        let who = (i.appid, i.uid);
        let to = Destination::User(req.receiver);
        if let Some(reply) = self.sent_before(who, req.message_id, to)? {
            self.reply(conn, rid, Body::SendReply(reply));
            return Ok(());
        }
        if self.in_flight(who, req.message_id, to)? {
            let id = req.message_id;
            self.park(who, id, conn, rid, Body::SendToUser(req));
            return Ok(());
        }
        let push = self.user_push(req.receiver, who.1, req.message.unwrap_or_default())?;
        let ts = push.timestamp_ms;
        self.rate_check(inst)?;
        self.inflight
            .insert((who, req.message_id), (to, Vec::new()));
        let home = uid_shard(who.0, req.receiver, self.shards);
        let msg = ShardMsg::P2p {
            conn,
            rid,
            from: who,
            message_id: req.message_id,
            receiver: req.receiver,
            unreliable: req.unreliable,
            message: push.message.unwrap_or_default(),
            ts,
        };
        self.post_shard(home, msg);
        Ok(())
    }

    /// A forwarded channel request, on the channel's shard: done as if
    /// local, its link's frames and what its home must record go back.
    fn channel_request(&mut self, conn: ConnId, rid: u64, queued: usize, m: Member, body: Body) {
        let message_id = match &body {
            Body::SendToChannel(r) => Some(r.message_id),
            _ => None,
        };
        self.current = Some(Current { conn, queued });
        self.capture = Some((conn, Vec::new()));
        self.effects = Some(Effects::default());
        let outcome = self.dispatch_channel(conn, &m, body);
        let answered = matches!(&outcome, Ok((body, _)) if super::hub::replay_may_follow(body));
        self.answer(conn, rid, outcome);
        let frames = self.capture.take().map(|(_, f)| f).unwrap_or_default();
        let effects = self.effects.take().unwrap_or_default();
        self.current = None;
        let done = ShardMsg::Done {
            conn,
            inst: m.inst,
            who: (m.appid, m.uid),
            message_id,
            effects,
            frames,
            answered: answered.then_some(rid),
        };
        self.post_shard(m.home, done);
    }

    /// A forwarded request is done: record its effects, then its frames.
    fn done(
        &mut self,
        conn: ConnId,
        inst: u64,
        who: (u32, u64),
        message_id: Option<u64>,
        effects: Effects,
        frames: Vec<Bytes>,
    ) {
        let now = self.now();
        for (kind, cost) in effects.charges {
            let limit = self.rate_limit(kind);
            self.uid_rates
                .entry(who)
                .or_default()
                .bucket(kind)
                .charge(now, limit, cost);
        }
        if effects.send_counted {
            let (limit, window) = (self.config.rate_limit_sends, self.config.rate_limit_window);
            if let Some(i) = self.instances.get_mut(&inst) {
                i.rate.allow(now, limit, window);
            }
            let limit = self.rate_limit(RateKind::Send);
            self.uid_rates
                .entry(who)
                .or_default()
                .bucket(RateKind::Send)
                .charge(now, limit, 1);
        }
        if let Some(i) = self.instances.get_mut(&inst) {
            if let Some((num, key)) = effects.joined {
                i.channels.insert(num);
                i.keys.insert(num, key);
            }
            if let Some(num) = effects.left {
                i.channels.remove(&num);
                i.keys.remove(&num);
            }
        }
        for f in frames {
            self.send(conn, f);
        }
        let Some(id) = message_id else { return };
        let Some((_, parked)) = self.inflight.remove(&(who, id)) else {
            return;
        };
        match effects.sent {
            Some((_, to, reply)) => {
                self.remember_sent(who, id, to, &reply);
                for p in parked {
                    self.reply(p.conn, p.rid, Body::SendReply(reply));
                }
            }
            // It delivered nothing: each re-send is a send of its own.
            None => {
                for p in parked {
                    self.current = Some(Current {
                        conn: p.conn,
                        queued: p.queued,
                    });
                    self.handle_request(p.conn, p.rid, p.body);
                    self.current = None;
                }
            }
        }
    }

    /// Pushes of another shard's channel for instances homed here.
    fn deliver(&mut self, from: ShardId, insts: Vec<u64>, frame: &Bytes) {
        let mut conns = Vec::with_capacity(insts.len());
        for inst in insts {
            let Some(c) = self.instances.get(&inst).and_then(|i| i.conn) else {
                continue;
            };
            if let Some(r) = self.resuming.get_mut(&c) {
                // Before the shard took the resume: in its replay.
                if !r.awaiting.contains(&from) {
                    r.held.push(frame.clone());
                }
                continue;
            }
            conns.push(c);
        }
        self.broadcast_to(conns, frame);
    }

    /// The instance is gone: the shards it went to drop it from their
    /// channels.
    pub(super) fn drop_remote(&mut self, inst: u64, uid: u64, mask: u64, depart: bool) {
        for s in 0..self.shards {
            if mask & (1 << s) != 0 && s != self.shard.0 {
                self.post_shard(ShardId(s), ShardMsg::DropInstance { inst, uid, depart });
            }
        }
    }

    /// A channel remembers that `uid`'s membership ended with a lost link
    /// (see `note_departures`).
    fn note_departure(&mut self, num: u32, uid: u64, inst: u64) {
        let now = self.now();
        let max = self.config.max_channel_members;
        let Some(ch) = self.channels.get_mut(&num) else {
            return;
        };
        let Some(&since) = ch.since.get(&inst) else {
            return;
        };
        if ch.departed.len() < max || ch.departed.contains_key(&uid) {
            let e = ch.departed.entry(uid).or_insert((since, now));
            *e = (e.0.min(since), now);
            self.touch_channel(num);
        }
    }

    /// A resume's channels of other shards are asked for; the login's
    /// reply waits for them (`kept` moves into the wait).
    pub(super) fn resume_remote(
        &mut self,
        conn: ConnId,
        inst: u64,
        remote: RemoteResume,
        kept: &mut Vec<wire::ResumedChannel>,
        budget: usize,
    ) {
        let token = self.next_token;
        self.next_token += 1;
        let per = budget / remote.by_shard.len().max(1);
        let mut awaiting = BTreeSet::new();
        let (appid, uid) = self
            .instances
            .get(&inst)
            .map_or((0, 0), |i| (i.appid, i.uid));
        for (shard, cursors) in remote.by_shard {
            awaiting.insert(shard);
            let m = ShardMsg::Resume {
                token,
                inst,
                appid,
                uid,
                cursors,
                budget: per,
            };
            self.post_shard(shard, m);
        }
        let local = remote.local.into_iter().zip(kept.drain(..)).collect();
        self.resuming.insert(
            conn,
            Resuming {
                token,
                inst,
                awaiting,
                kept: local,
                frames: Vec::new(),
                held: Vec::new(),
                parked: Vec::new(),
                reply: None,
            },
        );
    }

    /// A resume's channels on this shard: the cursors it keeps go on
    /// (replays within `budget`), the instance's other channels here are
    /// left.
    fn resume_here(
        &mut self,
        home: ShardId,
        token: u64,
        inst: u64,
        (appid, uid): (u32, u64),
        cursors: Vec<Cursor>,
        mut budget: usize,
    ) {
        let (mut kept, mut frames, mut member) = (Vec::new(), Vec::new(), Vec::new());
        let mut nums = BTreeSet::new();
        for (idx, key, epoch, seq) in cursors {
            let Ok(region) = checked_region(key.region) else {
                continue;
            };
            let index_key = (appid, region, key.channel_id.clone());
            let Some(&num) = self.channel_index.get(&index_key) else {
                continue;
            };
            if !self.is_member(num, uid, inst) || !nums.insert(num) {
                continue;
            }
            let since = self
                .channels
                .get(&num)
                .and_then(|ch| ch.since.get(&inst).copied())
                .unwrap_or(0);
            let (state, mut replay) = self.rejoin_state(num, (epoch, seq), since, Some(budget));
            budget = budget.saturating_sub(replay.bytes());
            frames.extend(replay.take_frames());
            if let Some(ch) = self.channels.get(&num) {
                let k = crate::types::ChannelKey::new(ch.region, ch.id.clone()).to_wire();
                member.push((num, k));
            }
            kept.push((
                idx,
                wire::ResumedChannel {
                    channel: Some(key),
                    state: Some(state),
                },
            ));
        }
        let left: Vec<u32> = self
            .guests
            .get(&inst)
            .map(|g| g.channels.difference(&nums).copied().collect())
            .unwrap_or_default();
        for &num in &left {
            self.remove_member(num, uid, inst);
        }
        let m = ShardMsg::Resumed {
            token,
            kept,
            member,
            left,
            frames,
        };
        self.post_shard(home, m);
    }

    fn resumed(
        &mut self,
        from: ShardId,
        token: u64,
        kept: Vec<(usize, wire::ResumedChannel)>,
        (member, left): (Vec<(u32, wire::ChannelKey)>, Vec<u32>),
        frames: Vec<Bytes>,
    ) {
        let Some((&conn, r)) = self.resuming.iter_mut().find(|(_, r)| r.token == token) else {
            return;
        };
        let inst = r.inst;
        r.awaiting.remove(&from);
        r.kept.extend(kept);
        r.frames.extend(frames);
        let done = r.awaiting.is_empty();
        // The channel shard's word on the memberships stands.
        if let Some(i) = self.instances.get_mut(&inst) {
            for (num, key) in member {
                i.channels.insert(num);
                i.keys.insert(num, key);
            }
            for num in left {
                i.channels.remove(&num);
                i.keys.remove(&num);
            }
        }
        if !done {
            return;
        }
        let Some(mut r) = self.resuming.remove(&conn) else {
            return;
        };
        if let Some((rid, outcome)) = r.reply.take() {
            r.kept.sort_by_key(|(idx, _)| *idx);
            let channels: Vec<_> = r.kept.into_iter().map(|(_, c)| c).collect();
            let outcome = outcome.map(|(body, mut after)| match body {
                Body::LoginReply(mut reply) => {
                    reply.channels = channels;
                    after.extend(r.frames);
                    (Body::LoginReply(reply), after)
                }
                other => (other, after),
            });
            self.answer(conn, rid, outcome);
        }
        for f in r.held {
            self.send(conn, f);
        }
        let now = self.now();
        for m in r.parked {
            self.handle(now, m);
        }
    }

    /// The link's resume will not complete (its instance went).
    pub(super) fn abandon_resume(&mut self, conn: ConnId) {
        self.resuming.remove(&conn);
    }

    /// `QueryOnline` and `GetUserCount` over several shards: checked and
    /// counted here, each shard answers for its own.
    fn gather(
        &mut self,
        conn: ConnId,
        rid: u64,
        inst: u64,
        body: Body,
    ) -> Result<(), ServiceError> {
        let token = self.next_token;
        let mut g = Gather {
            conn,
            rid,
            waiting: 0,
            online: None,
            counts: BTreeMap::new(),
        };
        match body {
            Body::QueryOnline(r) => {
                self.config.limits.check_uid_query(&r.uids)?;
                self.rate_take(inst, RateKind::Query, 1)?;
                let appid = self.instance(inst)?.appid;
                let mut online = BTreeMap::new();
                let mut by_shard: BTreeMap<ShardId, Vec<u64>> = BTreeMap::new();
                for u in r.uids {
                    let s = uid_shard(appid, u, self.shards);
                    if s == self.shard {
                        online.insert(u, self.users.contains_key(&(appid, u)));
                    } else {
                        by_shard.entry(s).or_default().push(u);
                    }
                }
                g.online = Some(online);
                g.waiting = by_shard.len();
                for (s, uids) in by_shard {
                    self.post_shard(s, ShardMsg::Online { token, appid, uids });
                }
            }
            Body::GetUserCount(r) => {
                let region = checked_region(r.region)?;
                self.config.limits.check_channel_id_query(&r.channel_ids)?;
                self.rate_take(inst, RateKind::Query, 1)?;
                let appid = self.instance(inst)?.appid;
                let mut by_shard: BTreeMap<ShardId, Vec<String>> = BTreeMap::new();
                for id in r.channel_ids {
                    let s = channel_shard(appid, r.region, &id, self.shards);
                    if s == self.shard {
                        let n = self.member_count_of(appid, region, &id);
                        g.counts.insert(id, n);
                    } else {
                        by_shard.entry(s).or_default().push(id);
                    }
                }
                g.waiting = by_shard.len();
                for (s, ids) in by_shard {
                    let m = ShardMsg::Count {
                        token,
                        appid,
                        region,
                        ids,
                    };
                    self.post_shard(s, m);
                }
            }
            _ => return Ok(()),
        }
        if g.waiting == 0 {
            self.gathered(g);
        } else {
            self.next_token += 1;
            self.gathers.insert(token, g);
        }
        Ok(())
    }

    fn answered(&mut self, token: u64, online: Vec<(u64, bool)>, counts: Vec<(String, u32)>) {
        let Some(g) = self.gathers.get_mut(&token) else {
            return;
        };
        if let Some(o) = g.online.as_mut() {
            o.extend(online);
        }
        g.counts.extend(counts);
        g.waiting = g.waiting.saturating_sub(1);
        if g.waiting == 0 {
            if let Some(g) = self.gathers.remove(&token) {
                self.gathered(g);
            }
        }
    }

    fn gathered(&mut self, g: Gather) {
        let body = match g.online {
            Some(status) => Body::OnlineStatus(wire::OnlineStatusReply { status }),
            None => Body::UserCount(wire::UserCountReply { counts: g.counts }),
        };
        self.reply(g.conn, g.rid, body);
    }
}

/// A reply frame.
fn encode_reply(rid: u64, body: Body) -> Bytes {
    if rid == 0 {
        return encode_push(body);
    }
    wire::encode_frame(&wire::Frame {
        request_id: rid,
        body: Some(body),
    })
}

#[cfg(test)]
mod tests {
    //! Shards wired by hand, so that messages between them can be held:
    //! the races of the asynchrony, replayed deterministically.

    use std::collections::VecDeque;
    use std::time::{Duration, Instant};

    use super::super::{Gateway, GatewayId, ServerConfig, ToShard, DEMO_APPID};
    use super::*;
    use crate::wire::{decode_frame, encode_frame, Frame};

    const SHARDS: u16 = 2;

    struct Wired {
        now: Instant,
        gw: Gateway,
        hubs: Vec<Hub>,
        /// Messages between shards not yet delivered: (from, to, message).
        held: VecDeque<(ShardId, ShardId, ToShard)>,
        /// Hold what shards send each other (else: deliver at once).
        holding: bool,
        rid: u64,
    }

    impl Wired {
        fn new() -> Wired {
            let (now, unix) = (Instant::now(), 1_700_000_000_000);
            let config = ServerConfig::demo();
            Wired {
                now,
                gw: Gateway::new(GatewayId(0), config.clone(), now, unix).with_shards(SHARDS),
                hubs: (0..SHARDS)
                    .map(|s| Hub::new_shard(config.clone(), ShardId(s), SHARDS, now, unix))
                    .collect(),
                held: VecDeque::new(),
                holding: false,
                rid: 0,
            }
        }

        fn pump(&mut self) {
            loop {
                let mut moved = false;
                while let Some((s, m)) = self.gw.poll_hub_routed() {
                    self.hubs[usize::from(s.0)].handle(self.now, m);
                    moved = true;
                }
                for s in 0..self.hubs.len() {
                    while let Some(m) = self.hubs[s].poll_gateway() {
                        self.gw.handle_hub(self.now, m);
                        moved = true;
                    }
                    while let Some((to, m)) = self.hubs[s].poll_shard() {
                        self.held.push_back((ShardId(s as u16), to, m));
                        moved = true;
                    }
                }
                if !self.holding {
                    while let Some((from, to, m)) = self.held.pop_front() {
                        self.hubs[usize::from(to.0)].handle_shard(self.now, from, m);
                        moved = true;
                    }
                }
                if !moved {
                    return;
                }
            }
        }

        /// Delivers what the shards held, in order, and everything after.
        fn release(&mut self) {
            self.holding = false;
            self.pump();
        }

        fn send(&mut self, c: ConnId, body: Body) -> u64 {
            self.rid += 1;
            let f = encode_frame(&Frame {
                request_id: self.rid,
                body: Some(body),
            });
            self.gw.handle_frame(self.now, c, f);
            self.pump();
            self.rid
        }

        fn frames(&mut self, c: ConnId) -> Vec<(u64, Body)> {
            let mut out = Vec::new();
            while let Some(b) = self.gw.poll_transmit(c) {
                let f = decode_frame(b, 1 << 20).unwrap();
                out.push((f.request_id, f.body));
            }
            out
        }

        fn login(&mut self, uid: u64, resume: Option<wire::Resume>) -> ConnId {
            let c = self.gw.accept(self.now);
            let req = wire::LoginRequest {
                protocol_version: wire::PROTOCOL_VERSION,
                appid: DEMO_APPID,
                uid,
                resume,
                ..Default::default()
            };
            self.send(c, Body::Login(req));
            c
        }
    }

    fn uid_on(shard: u16) -> u64 {
        (1..10_000)
            .find(|&u| uid_shard(DEMO_APPID, u, SHARDS) == ShardId(shard))
            .expect("uids spread over the shards")
    }

    fn channel_on(shard: u16) -> wire::ChannelKey {
        (0..10_000)
            .map(|i| wire::ChannelKey {
                region: wire::Region::Cn as i32,
                channel_id: format!("room{i}"),
            })
            .find(|k| channel_shard(DEMO_APPID, k.region, &k.channel_id, SHARDS) == ShardId(shard))
            .expect("channels spread over the shards")
    }

    fn p2p(to: u64, id: u64) -> Body {
        Body::SendToUser(wire::SendToUserRequest {
            receiver: to,
            message: Some(wire::ChatMessage {
                r#type: "t".into(),
                content: bytes::Bytes::from_static(b"hi"),
                app_extras: Default::default(),
            }),
            unreliable: false,
            message_id: id,
        })
    }

    #[test]
    fn a_re_send_while_the_first_is_in_flight_gets_its_reply_and_delivers_nothing() {
        let mut w = Wired::new();
        let (from, to) = (uid_on(0), uid_on(1));
        let a = w.login(from, None);
        let b = w.login(to, None);
        w.frames(a);
        w.frames(b);
        w.holding = true;
        let first = w.send(a, p2p(to, 9));
        let again = w.send(a, p2p(to, 9));
        // Another destination with the same id, while in flight: 2013.
        let reused = w.send(a, p2p(uid_on(0), 9));
        let replies = w.frames(a);
        assert_eq!(replies.len(), 1, "{replies:?}");
        assert!(matches!(&replies[0], (r, Body::Error(e)) if *r == reused && e.code == 2013));
        w.release();
        let replies = w.frames(a);
        let seqs: Vec<(u64, u64)> = replies
            .iter()
            .map(|(r, b)| match b {
                Body::SendReply(s) => (*r, s.seq),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(seqs, vec![(first, 1), (again, 1)]);
        let pushes = w.frames(b);
        assert_eq!(pushes.len(), 1, "{pushes:?}");
        // Remembered since: a later re-send is answered at the home.
        w.holding = true;
        w.send(a, p2p(to, 9));
        assert!(w.held.is_empty());
        assert!(matches!(&w.frames(a)[..], [(_, Body::SendReply(s))] if s.seq == 1));
    }

    #[test]
    fn a_resume_replays_what_its_channel_shard_had_and_holds_what_follows() {
        let mut w = Wired::new();
        let (me, other) = (uid_on(0), uid_on(1));
        let room = channel_on(1);
        let join = |k: &wire::ChannelKey| {
            Body::Join(wire::JoinRequest {
                channel: Some(k.clone()),
                ..Default::default()
            })
        };
        let send = |k: &wire::ChannelKey, text: &'static str| {
            Body::SendToChannel(wire::SendToChannelRequest {
                channel: Some(k.clone()),
                message: Some(wire::ChatMessage {
                    r#type: "t".into(),
                    content: bytes::Bytes::from_static(text.as_bytes()),
                    app_extras: Default::default(),
                }),
                unreliable: false,
                message_id: u64::from(text.as_bytes()[0]),
            })
        };
        let a = w.login(me, None);
        let b = w.login(other, None);
        let login = match &w.frames(a)[..] {
            [(_, Body::LoginReply(r))] => r.clone(),
            other => panic!("{other:?}"),
        };
        w.send(a, join(&room));
        w.send(b, join(&room));
        let epoch = match &w.frames(a)[..] {
            [(_, Body::JoinReply(j))] => j.epoch,
            other => panic!("{other:?}"),
        };
        w.now += Duration::from_secs(1);
        for h in &mut w.hubs {
            h.handle_timeout(w.now);
        }
        w.pump();
        w.gw.handle_disconnected(w.now, a);
        w.pump();
        w.send(b, send(&room, "1 before"));
        // The resume reaches the home; its question to the channel's shard
        // is held, and meanwhile the channel has more.
        w.holding = true;
        let resume = wire::Resume {
            p2p_epoch: login.p2p_epoch,
            instance_id: login.instance_id,
            p2p_seq: 0,
            channels: vec![wire::ChannelCursor {
                channel: Some(room.clone()),
                epoch,
                seq: 0,
            }],
        };
        let c = w.login(me, Some(resume));
        assert!(w.frames(c).is_empty(), "the reply waits for the channel");
        let after = w.send(c, Body::GetInstanceInfo(wire::Empty {}));
        w.release();
        let got = w.frames(c);
        let kinds: Vec<String> = got
            .iter()
            .map(|(r, b)| match b {
                Body::LoginReply(l) => format!("login {}", l.channels.len()),
                Body::ChannelMessage(m) => format!("seq {}", m.seq),
                Body::InstanceInfo(_) => format!("info {}", *r == after),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(kinds, vec!["login 1", "seq 1", "info true"]);
        // Live pushes go on, once.
        w.send(b, send(&room, "2 after"));
        let got = w.frames(c);
        assert!(
            matches!(&got[..], [(0, Body::ChannelMessage(m))] if m.seq == 2),
            "{got:?}"
        );
    }
}
