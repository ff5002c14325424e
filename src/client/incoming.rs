//! Frames from the server: replies complete requests, pushes become events.
//! Each frame is decoded once, then moved (not copied) into its event.

use std::time::Instant;

use super::channel::Membership;
use super::event::{
    AttributesReply, ChannelHandle, ConnectionReason, ConnectionState, Event, InstanceInfo,
    LoginInfo, LostStream, MessageSent, Reply, RequestId, UserCount, UserList,
};
use super::requests::PendingKind;
use super::seq::{Accept, FetchOutcome, SeqStream};
use super::session::Session;
use crate::error::{ErrorCode, ServiceError, WireError};
use crate::types::{ChannelKey, Region, Uid};
use crate::wire::{self, AttributeOp, Body, BodyKind, DecodedFrame};

impl Session {
    pub(super) fn on_frame(&mut self, now: Instant, frame: DecodedFrame) -> Result<(), WireError> {
        match frame.body {
            Body::Ping(p) => {
                let body = Body::Pong(wire::Pong { nonce: p.nonce });
                self.send(now, frame.request_id, body);
            }
            Body::Pong(_) => {}
            Body::Close(close) => self.on_close(now, close),
            Body::TokenWillExpire(p) => {
                // The Session keeps its own warning timer; the push matters
                // when the expiry it knows is not this one.
                if self.token_expires_at_ms != Some(p.token_expires_at_ms) {
                    self.set_token_expiry(now, p.token_expires_at_ms, p.server_time_ms);
                }
            }
            Body::UserMessage(push) => self.on_user_message(now, push),
            Body::ChannelMessage(push) => self.on_channel_message(now, push),
            Body::Membership(push) => self.on_membership(push),
            Body::UserAttributesChanged(push) => self.on_user_attributes(push),
            Body::ChannelAttributesChanged(push) => self.on_channel_attributes(push),
            Body::UserCountChanged(push) => {
                if let Some(channel) = self.channels.by_number(push.channel) {
                    self.emit(Event::NotifyUserCountChange {
                        channel,
                        count: push.count,
                    });
                }
            }
            Body::Error(e) => {
                let error = ServiceError::new(ErrorCode::new(e.code), e.message);
                self.on_reply(now, frame.request_id, Err(error));
            }
            reply if reply.kind() == BodyKind::Reply => {
                self.on_reply(now, frame.request_id, Ok(reply))
            }
            _ => return Err(WireError::Unexpected("a request frame sent to a client")),
        }
        Ok(())
    }

    /// 100 (a newer login), 4007 (another link resumed this instance) and
    /// 4100..=4199 (the app's backend kicked it) end the session; every
    /// other code is a lost link, resumed.
    fn on_close(&mut self, now: Instant, close: wire::Close) {
        log!(
            info,
            "closed by the server: {} {}",
            close.code,
            close.reason
        );
        match close.code {
            100 | 4007 => self.reset(ConnectionReason::RemoteLogin),
            4100..=4199 => self.reset(ConnectionReason::Kicked),
            _ => self.link_lost(now, true),
        }
    }

    fn on_reply(&mut self, now: Instant, request_id: u64, reply: Result<Body, ServiceError>) {
        // A late reply to a request that already timed out is dropped.
        let Some(kind) = self.requests.remove(request_id) else {
            return;
        };
        let id = RequestId(request_id);
        match kind {
            PendingKind::Login { user } => self.on_login_reply(now, id, user, reply),
            PendingKind::Join { channel, user } => {
                self.on_join_reply(now, id, channel, user, reply)
            }
            PendingKind::Fetch(stream) => self.on_fetch_reply(now, stream, reply),
            PendingKind::Unjoin => {}
            PendingKind::Logout => {
                self.finish_logout();
                self.complete(id, reply.map(|_| Reply::Done));
            }
            PendingKind::Leave { channel } => {
                let result = reply.map(|_| Reply::Done);
                match &result {
                    Err(e) if e.code != ErrorCode::USER_NOT_IN_CHANNEL => {
                        if let Some(c) = self.channels.get_mut(channel) {
                            c.membership = Membership::Joined;
                        }
                    }
                    _ => self.channels.set_out(channel),
                }
                self.complete(id, result);
            }
            other => {
                let result = reply.and_then(|body| self.typed_reply(now, &other, body));
                self.complete(id, result);
            }
        }
    }

    /// Turns a reply body into the typed reply the request expects.
    fn typed_reply(
        &mut self,
        now: Instant,
        kind: &PendingKind,
        body: Body,
    ) -> Result<Reply, ServiceError> {
        let appid = self.config.appid;
        let channel_id = |s: &Self, h: &ChannelHandle| {
            s.channels
                .get(*h)
                .map(|c| c.key.channel_id.clone())
                .unwrap_or_default()
        };
        Ok(match (kind, body) {
            (
                PendingKind::RefreshToken(token),
                body @ (Body::Ok(_) | Body::RefreshTokenReply(_)),
            ) => {
                if let Some(c) = self.credentials.as_mut() {
                    c.token = Some(token.clone());
                }
                if let Body::RefreshTokenReply(r) = body {
                    self.set_token_expiry(now, r.token_expires_at_ms, r.server_time_ms);
                }
                Reply::Done
            }
            (PendingKind::SetRegion(region), Body::Ok(_)) => {
                if let Some(c) = self.credentials.as_mut() {
                    c.region = Some(*region);
                }
                Reply::Done
            }
            (PendingKind::Done, Body::Ok(_)) => Reply::Done,
            (PendingKind::InstanceInfo, Body::InstanceInfo(i)) => {
                Reply::InstanceInfo(InstanceInfo {
                    appid: i.appid,
                    uid: Uid(i.uid),
                    instance_id: i.instance_id,
                    is_anonymous: i.is_anonymous,
                    region: Region::from_wire(i.region),
                    channels: i
                        .channels
                        .into_iter()
                        .filter_map(|k| {
                            Some(ChannelKey::new(Region::from_wire(k.region)?, k.channel_id))
                        })
                        .collect(),
                })
            }
            (PendingKind::Send(_), Body::SendReply(r)) => Reply::MessageSent(MessageSent {
                timestamp_ms: r.timestamp_ms,
                delivered_online: r.delivered_online,
            }),
            (PendingKind::OnlineStatus, Body::OnlineStatus(r)) => {
                Reply::OnlineStatus(r.status.into_iter().map(|(u, on)| (Uid(u), on)).collect())
            }
            (PendingKind::UserList { channel }, Body::UserList(r)) => Reply::UserList(UserList {
                appid,
                channel_id: channel_id(self, channel),
                users: r.uids.into_iter().map(Uid).collect(),
            }),
            (PendingKind::Attributes { channel }, Body::Attributes(r)) => {
                Reply::Attributes(AttributesReply {
                    appid,
                    channel_id: channel_id(self, channel),
                    attributes: r.attributes,
                    last_update_uid: (r.last_update_uid != 0).then_some(Uid(r.last_update_uid)),
                    last_update_ts: r.last_update_ts,
                })
            }
            (PendingKind::UserCount, Body::UserCount(r)) => Reply::UserCount(UserCount {
                appid,
                user_count: r.counts,
            }),
            _ => {
                return Err(ServiceError::new(
                    ErrorCode::UNKNOWN,
                    "the server replied with an unexpected frame type",
                ))
            }
        })
    }

    fn on_login_reply(
        &mut self,
        now: Instant,
        id: RequestId,
        user: bool,
        reply: Result<Body, ServiceError>,
    ) {
        if user {
            self.login_request = None;
        }
        let r = match reply {
            Ok(Body::LoginReply(r)) => r,
            Ok(_) => {
                let e = ServiceError::new(ErrorCode::UNKNOWN, "unexpected login reply");
                return self.on_login_refused(id, user, e);
            }
            Err(e) => return self.on_login_refused(id, user, e),
        };
        // Loss is told by the server (`p2p_gap`, each channel's `gap`):
        // nothing is inferred here.
        self.p2p_epoch = r.p2p_epoch;
        self.instance_id = Some(r.instance_id);
        self.p2p.reset(r.p2p_seq);
        self.acked_p2p = r.p2p_seq;
        self.adopt_server_timing(r.ping_interval_ms, r.idle_timeout_ms);
        if let Some(gap) = r.p2p_gap {
            self.emit_lost(LostStream::User, gap.from, (gap.to != 0).then_some(gap.to));
        }
        self.set_token_expiry(now, r.token_expires_at_ms, r.server_time_ms);
        self.set_state(ConnectionState::Connected, ConnectionReason::LoginSuccess);
        self.after_login(now);
        if r.p2p_replay_truncated_at != 0 {
            // The first number not replayed: fetch what follows the one before.
            let after = r.p2p_replay_truncated_at - 1;
            self.start_fetch(now, LostStream::User, after);
        }
        if user {
            self.complete(
                id,
                Ok(Reply::Login(LoginInfo {
                    instance_id: r.instance_id,
                    token_expires_at_ms: (r.token_expires_at_ms != 0)
                        .then_some(r.token_expires_at_ms),
                    server_time_ms: r.server_time_ms,
                    is_anonymous: r.is_anonymous,
                })),
            );
        }
        // The channels the resumed instance kept go on where they were; the
        // others are joined again, and only then do held sends go out again
        // (a channel send must find its channel joined).
        for kept in r.channels {
            let key = kept.channel.as_ref().and_then(ChannelKey::from_wire);
            let Some(h) = key.and_then(|k| self.channels.by_key(&k)) else {
                continue;
            };
            if self.channels.get(h).map(|c| c.membership) == Some(Membership::Rejoining) {
                self.apply_join_state(now, h, kept.state.unwrap_or_default(), false);
            }
        }
        self.rejoin_channels(now);
        if r.resumed {
            log!(info, "logged in: instance {} resumed", r.instance_id);
            self.resend_held(now);
        } else {
            log!(info, "logged in: instance {}", r.instance_id);
            self.fail_held_sends();
        }
    }

    fn on_login_refused(&mut self, id: RequestId, user: bool, e: ServiceError) {
        log!(info, "login refused: {e}");
        if user {
            self.complete(id, Err(e));
            self.reset(ConnectionReason::LoginFailure);
        } else if e.code == ErrorCode::EXPIRED_TOKEN
            && self.credentials.as_ref().and_then(|c| c.token.as_ref()) != self.sent_token.as_ref()
        {
            // Refreshed while this re-login was on its way: try the new token.
            let now = self.clock();
            self.link_lost(now, true);
        } else if e.code == ErrorCode::EXPIRED_TOKEN {
            // Keep the channels: refresh_token resumes the reconnect.
            self.paused = true;
            self.emit(Event::TokenExpired);
            let now = self.clock();
            self.link_lost(now, true);
        } else {
            self.reset(ConnectionReason::LoginFailure);
        }
    }

    /// After a re-login: join again every channel the application had joined
    /// and the server did not keep, resuming each stream where it stopped.
    /// A join or leave whose outcome was unknown needs nothing: a resumed
    /// login keeps only the channels listed as joined.
    fn rejoin_channels(&mut self, now: Instant) {
        for h in self.channels.handles().collect::<Vec<_>>() {
            let Some(c) = self.channels.get_mut(h) else {
                continue;
            };
            c.uncertain = false;
            if c.membership != Membership::Rejoining {
                continue;
            }
            let body = Body::Join(wire::JoinRequest {
                channel: Some(c.key.to_wire()),
                extra: Default::default(),
                resume_seq: c.stream.last,
                rejoin: true,
                epoch: c.epoch,
            });
            let id = self.requests.insert(
                now,
                &self.config.timing,
                PendingKind::Join {
                    channel: h,
                    user: false,
                },
            );
            self.send(now, id.0, body);
        }
    }

    /// A leave nobody waits for (its reply is ignored).
    fn send_unwanted_leave(&mut self, now: Instant, channel: ChannelHandle) {
        let Some(c) = self.channels.get(channel) else {
            return;
        };
        if self.link != super::session::Link::Up {
            return; // the uncertain flag undoes it after a resume
        }
        let body = Body::Leave(wire::LeaveRequest {
            channel: Some(c.key.to_wire()),
            extra: Default::default(),
        });
        let id = self
            .requests
            .insert(now, &self.config.timing, PendingKind::Unjoin);
        self.send(now, id.0, body);
    }

    fn on_join_reply(
        &mut self,
        now: Instant,
        id: RequestId,
        channel: ChannelHandle,
        user: bool,
        reply: Result<Body, ServiceError>,
    ) {
        let r = match reply {
            Ok(Body::JoinReply(r)) => r,
            other => {
                let e = match other {
                    Err(e) => e,
                    Ok(_) => ServiceError::new(ErrorCode::UNKNOWN, "unexpected join reply"),
                };
                // A refused re-join leaves the channel: tell the application.
                self.channels.set_out(channel);
                if user {
                    self.complete(id, Err(e));
                } else {
                    self.emit(Event::RoomMemberOffline { channel });
                }
                return;
            }
        };
        self.apply_join_state(now, channel, r, user);
        if user {
            self.complete(id, Ok(Reply::Done));
        }
    }

    /// A channel's membership from a join reply (or a resumed login's
    /// `ResumedChannel`): its number, its epoch and where its stream goes on.
    fn apply_join_state(
        &mut self,
        now: Instant,
        h: ChannelHandle,
        r: wire::JoinReply,
        fresh: bool,
    ) {
        self.channels.set_number(h, r.channel);
        let Some(c) = self.channels.get_mut(h) else {
            return;
        };
        if c.membership != Membership::Leaving {
            c.membership = Membership::Joined;
        }
        if fresh || r.epoch != c.epoch {
            // A first join, or the history the cursor was in is gone (the
            // server's `gap` says from where): count in the new epoch.
            c.stream.reset(r.seq);
        } else {
            // Replayed pushes follow this reply; a skipped range comes as `gap`.
            c.stream.fetching = false;
            c.stream.last = c.stream.last.max(r.seq);
        }
        c.epoch = r.epoch;
        if let Some(gap) = r.gap {
            self.emit_lost(
                LostStream::Channel(h),
                gap.from,
                (gap.to != 0).then_some(gap.to),
            );
        }
        if r.member_offline {
            self.emit(Event::RoomMemberOffline { channel: h });
        }
        if r.replay_truncated_at != 0 {
            let after = r.replay_truncated_at - 1;
            self.start_fetch(now, LostStream::Channel(h), after);
        }
        // A leave held for a fetch that this state ended (the stream was
        // reset: the fetch's link, or the server, is gone) goes out now.
        self.send_held_leave(now, LostStream::Channel(h));
    }

    fn on_fetch_reply(
        &mut self,
        now: Instant,
        stream: LostStream,
        reply: Result<Body, ServiceError>,
    ) {
        let (through, gap, more) = match reply {
            Ok(Body::FetchReply(r)) => (r.through_seq, r.gap, r.more),
            Err(e)
                if e.code == ErrorCode::USER_NOT_IN_CHANNEL
                    && matches!(stream, LostStream::Channel(_)) =>
            {
                if let Some(s) = self.stream_mut(stream) {
                    s.fetching = false;
                }
                return self.send_held_leave(now, stream);
            }
            // Could not fetch: the link is suspect; a reconnect resumes.
            _ => return self.link_lost(now, true),
        };
        let Some(s) = self.stream_mut(stream) else {
            return;
        };
        let mut lost = Vec::new();
        if let Some(g) = gap {
            if let Some(r) = s.skip(g.from, if g.to == 0 { through } else { g.to }) {
                lost.push(r);
            }
        }
        let again = if more {
            s.fetching = false;
            true
        } else {
            match s.fetch_done(through) {
                FetchOutcome::Complete => false,
                FetchOutcome::FetchAgain => true,
                FetchOutcome::Lost(from, to) => {
                    lost.push((from, to));
                    false
                }
            }
        };
        let mut ready = Vec::new();
        s.drain_ready(&mut |e| ready.push(e));
        // A hole before a held message (the hold buffer dropped what followed it).
        let again = again || s.held() > 0;
        let after = s.last;
        for (from, to) in lost {
            self.emit_lost(stream, from, Some(to));
        }
        self.deliver_all(now, stream, ready);
        if again {
            self.start_fetch(now, stream, after);
        } else {
            self.send_held_leave(now, stream);
        }
    }

    /// The channel's fetch is over: the application's leave held for it
    /// goes out now.
    fn send_held_leave(&mut self, now: Instant, stream: LostStream) {
        let LostStream::Channel(h) = stream else {
            return;
        };
        let fetching = self.channels.get(h).is_some_and(|c| c.stream.fetching);
        if fetching {
            return;
        }
        if let Some(frame) = self.channels.get_mut(h).and_then(|c| c.held_leave.take()) {
            self.send_encoded(now, frame);
        }
    }

    /// Asks the server to push again what follows `after` on `stream`.
    fn start_fetch(&mut self, now: Instant, stream: LostStream, after: u64) {
        let channel = match stream {
            LostStream::User => None,
            LostStream::Channel(h) => match self.channels.get(h) {
                Some(c) => Some(c.key.to_wire()),
                None => return,
            },
        };
        match self.stream_mut(stream) {
            Some(s) if !s.fetching => s.start_fetch(),
            _ => return,
        }
        let id = self
            .requests
            .insert(now, &self.config.timing, PendingKind::Fetch(stream));
        let body = Body::Fetch(wire::FetchRequest {
            channel,
            after_seq: after,
        });
        self.send(now, id.0, body);
    }

    fn stream_mut(&mut self, stream: LostStream) -> Option<&mut SeqStream> {
        self.stream_and_events(stream).map(|(s, _)| s)
    }

    fn deliver_all(&mut self, now: Instant, stream: LostStream, events: Vec<Event>) {
        if events.is_empty() {
            return;
        }
        for e in events {
            self.emit(e);
        }
        if stream == LostStream::User {
            self.schedule_ack(now);
        }
    }

    /// A reliable push: deliver in order, drop duplicates, fetch gaps.
    fn sequenced(&mut self, now: Instant, stream: LostStream, seq: u64, event: Event) {
        if seq == 0 {
            // Unreliable: never stored, never replayed, so never duplicated.
            return self.emit(event);
        }
        let max_held = self.config.max_reorder_buffer;
        // Straight into the event queue: no allocation on the in-order path.
        let Some((s, events)) = self.stream_and_events(stream) else {
            return;
        };
        let before = s.last;
        let (accept, event) = s.accept(seq, event, max_held);
        let after = s.last;
        events.extend(event);
        s.drain_ready(&mut |e| events.push_back(e));
        if s.last > before && stream == LostStream::User {
            self.schedule_ack(now);
        }
        if let Accept::Held { fetch: true } | Accept::Dropped { fetch: true } = accept {
            self.start_fetch(now, stream, after);
        }
    }

    fn on_user_message(&mut self, now: Instant, push: wire::UserMessagePush) {
        let event = Event::MessageFromUser {
            from_uid: Uid(push.from_uid),
            message: push.message.unwrap_or_default().into(),
            timestamp_ms: push.timestamp_ms,
        };
        self.sequenced(now, LostStream::User, push.seq, event);
    }

    fn on_channel_message(&mut self, now: Instant, push: wire::ChannelMessagePush) {
        let Some(channel) = self.channels.by_number(push.channel) else {
            return;
        };
        let event = Event::ChannelMessage {
            channel,
            from_uid: Uid(push.from_uid),
            message: push.message.unwrap_or_default().into(),
            timestamp_ms: push.timestamp_ms,
        };
        self.sequenced(now, LostStream::Channel(channel), push.seq, event);
    }

    fn on_membership(&mut self, push: wire::MembershipPush) {
        let Some(channel) = self.channels.by_number(push.channel) else {
            return;
        };
        // The server tells every member, this user included; the JS SDK
        // reports only the others.
        let me = self.uid().map_or(0, |u| u.0);
        let others = |uids: Vec<u64>| -> Vec<Uid> {
            uids.into_iter().filter(|&u| u != me).map(Uid).collect()
        };
        let joined = others(push.joined);
        let left = others(push.left);
        if !joined.is_empty() {
            self.emit(Event::NotifyJoinChannel {
                channel,
                uids: joined,
            });
        }
        if !left.is_empty() {
            self.emit(Event::NotifyLeaveChannel {
                channel,
                uids: left,
            });
        }
    }

    fn on_user_attributes(&mut self, push: wire::UserAttributesPush) {
        let Some(channel) = self.channels.by_number(push.channel) else {
            return;
        };
        let uid = Uid(push.uid);
        let last_update_ts = push.timestamp_ms;
        let event = match AttributeOp::try_from(push.op) {
            Ok(AttributeOp::Set) => Event::NotifyUserAttributesSet {
                channel,
                uid,
                attributes: push.attributes,
                last_update_ts,
            },
            Ok(AttributeOp::Delete) => Event::NotifyUserAttributesDelete {
                channel,
                uid,
                keys: push.keys,
                last_update_ts,
            },
            Ok(AttributeOp::AddOrUpdate) => Event::NotifyUserAttributesAddOrUpdate {
                channel,
                uid,
                attributes: push.attributes,
                last_update_ts,
            },
            Ok(AttributeOp::Clear) => Event::NotifyUserAttributesClear {
                channel,
                uid,
                last_update_ts,
            },
            _ => return,
        };
        self.emit(event);
    }

    fn on_channel_attributes(&mut self, push: wire::ChannelAttributesPush) {
        let Some(channel) = self.channels.by_number(push.channel) else {
            return;
        };
        let last_update_uid = Uid(push.last_update_uid);
        let last_update_ts = push.timestamp_ms;
        let event = match AttributeOp::try_from(push.op) {
            Ok(AttributeOp::Set) => Event::NotifyChannelAttributesSet {
                channel,
                last_update_uid,
                last_update_ts,
                attributes: push.attributes,
            },
            Ok(AttributeOp::Delete) => Event::NotifyChannelAttributesDelete {
                channel,
                last_update_uid,
                last_update_ts,
                keys: push.keys,
            },
            Ok(AttributeOp::AddOrUpdate) => Event::NotifyChannelAttributesAddOrUpdate {
                channel,
                last_update_uid,
                last_update_ts,
                attributes: push.attributes,
            },
            Ok(AttributeOp::Clear) => Event::NotifyChannelAttributesClear {
                channel,
                last_update_uid,
                last_update_ts,
            },
            _ => return,
        };
        self.emit(event);
    }

    pub(super) fn on_request_timeout(&mut self, now: Instant, id: RequestId, kind: PendingKind) {
        let timeout = || ServiceError::new(ErrorCode::OPERATION_TIMEOUT, "no response in time");
        match kind {
            PendingKind::Login { user: true } => {
                self.login_request = None;
                self.complete(id, Err(timeout()));
                self.reset(ConnectionReason::LoginTimeout);
            }
            PendingKind::Logout => {
                self.complete(id, Err(timeout()));
                self.finish_logout();
            }
            // The Session's own requests unanswered: the link is dead.
            PendingKind::Login { user: false }
            | PendingKind::Join { user: false, .. }
            | PendingKind::Fetch(_) => self.link_lost(now, true),
            // A join or leave without reply may still take effect: the
            // channel is out, and a leave queued behind the join makes the
            // server agree whatever the join did.
            PendingKind::Join {
                channel,
                user: true,
            } => {
                self.channels.set_out(channel);
                if let Some(c) = self.channels.get_mut(channel) {
                    c.uncertain = true;
                }
                self.send_unwanted_leave(now, channel);
                self.complete(id, Err(timeout()));
            }
            PendingKind::Leave { channel } => {
                self.channels.set_out(channel);
                if let Some(c) = self.channels.get_mut(channel) {
                    c.uncertain = true;
                }
                self.complete(id, Err(timeout()));
            }
            PendingKind::Unjoin => {}
            // A send held for a re-send whose time ran out while the link
            // was down: it may have been delivered before the link broke.
            PendingKind::Send(Some(_)) if !self.logged_in() => self.complete(
                id,
                Err(ServiceError::new(
                    ErrorCode::CONNECTION_EXCEPTION,
                    "the link was lost with the send in flight and did not come back in time",
                )),
            ),
            _ => self.complete(id, Err(timeout())),
        }
    }
}
