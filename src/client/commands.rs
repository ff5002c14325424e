//! One method per operation of the service. Each validates locally (the
//! rules of `crate::limits`), queues one request frame and returns its id;
//! the outcome arrives as one `Event::Completed`.

use std::time::Instant;

use super::channel::Membership;
use super::event::{ChannelHandle, ConnectionReason, ConnectionState, Reply, RequestId};
use super::requests::PendingKind;
use super::session::{Credentials, Session};
use super::{AttributeOptions, SendOptions};
use crate::error::CommandError;
use crate::limits::AttributeScope;
use crate::types::{Attributes, ChannelKey, Message, Region, Uid};
use crate::wire::{self, AttributeOp, Body};

type Cmd = Result<RequestId, CommandError>;

impl Session {
    fn request(&mut self, now: Instant, kind: PendingKind, body: Body) -> Cmd {
        let (id, frame) = self.encoded_request(now, kind, body)?;
        self.send_encoded(now, frame);
        Ok(id)
    }

    /// A send: a reliable one keeps its frame to be re-sent, unchanged, if
    /// the link is lost before the reply (the message id makes the server
    /// answer a repeat without delivering twice).
    fn send_request(&mut self, now: Instant, reliable: bool, body: Body) -> Cmd {
        let (id, frame) = self.encoded_request(now, PendingKind::Send(None), body)?;
        // A message within the size limit whose extras make the frame too
        // large would be refused with a protocol error, and re-sent after
        // every resume: refuse it here.
        let max = self.config.limits.max_frame_size;
        if frame.len() > max {
            self.requests.remove(id.0);
            return Err(crate::limits::LimitError::MessageTooLarge {
                size: frame.len(),
                max,
            }
            .into());
        }
        if reliable {
            self.requests.set_frame(id.0, frame.clone());
        }
        self.send_encoded(now, frame);
        Ok(id)
    }

    /// A request admitted and in flight, encoded but not sent yet (the
    /// caller keeps or sends the frame).
    fn encoded_request(
        &mut self,
        now: Instant,
        kind: PendingKind,
        body: Body,
    ) -> Result<(RequestId, bytes::Bytes), CommandError> {
        self.admit()?;
        let id = self.requests.insert(now, &self.config.timing, kind);
        let frame = wire::encode_frame(&wire::Frame {
            request_id: id.0,
            body: Some(body),
        });
        Ok((id, frame))
    }

    /// The wire key of a joined channel, or why it cannot be used now.
    fn joined(&self, channel: ChannelHandle) -> Result<wire::ChannelKey, CommandError> {
        let c = self
            .channels
            .get(channel)
            .ok_or(CommandError::UnknownChannel)?;
        self.require_logged_in()?;
        match c.membership {
            // A re-join is already on the wire ahead of this command, and
            // the server takes frames in order: the command may go.
            Membership::Joined | Membership::Rejoining => Ok(c.key.to_wire()),
            Membership::Out | Membership::Joining | Membership::Leaving => {
                Err(CommandError::NotInChannel)
            }
        }
    }

    // ---- instance -----------------------------------------------------------

    /// `login({region?, uid, token?})`: asks for a transport
    /// ([`TransportAction::Connect`](super::TransportAction::Connect)) and logs
    /// in once it is open. Without a token the server must allow appid mode.
    /// Completes with [`Reply::Login`]; CONNECTING/LOGIN then
    /// CONNECTED/LOGIN_SUCCESS, DISCONNECTED/LOGIN_FAILURE or
    /// DISCONNECTED/LOGIN_TIMEOUT. A transport that fails to open is retried
    /// with backoff until the login timeout.
    pub fn login(
        &mut self,
        now: Instant,
        uid: Uid,
        token: Option<String>,
        region: Option<Region>,
    ) -> Cmd {
        enter_span!(self.span());
        let now = self.tick(now);
        if self.state() != ConnectionState::Disconnected {
            return Err(CommandError::AlreadyLoggedIn);
        }
        self.config.limits.check_uid(uid.0)?;
        self.admit()?;
        #[cfg(feature = "tracing")]
        self.span().record("uid", uid.0);
        let id = self
            .requests
            .insert(now, &self.config.timing, PendingKind::Login { user: true });
        self.credentials = Some(Credentials { uid, token, region });
        self.login_request = Some(id);
        self.set_state(ConnectionState::Connecting, ConnectionReason::Login);
        self.dial(now);
        Ok(id)
    }

    /// `logout()`: ends the session; the server forgets this instance and
    /// leaves its channels. Ends in DISCONNECTED/LOGOUT whatever the reply
    /// (while reconnecting it completes at once, locally).
    pub fn logout(&mut self, now: Instant) -> Cmd {
        enter_span!(self.span());
        let now = self.tick(now);
        match self.state() {
            ConnectionState::Disconnected => Err(CommandError::NotLoggedIn),
            ConnectionState::Connected => {
                self.admit()?;
                // What was delivered is acked before the instance goes, so a
                // later login of the uid does not get it again.
                self.send_ack(now);
                let id = self
                    .requests
                    .insert(now, &self.config.timing, PendingKind::Logout);
                self.send(now, id.0, Body::Logout(wire::Empty {}));
                Ok(id)
            }
            _ => {
                let id = self
                    .requests
                    .insert(now, &self.config.timing, PendingKind::Logout);
                self.requests.remove(id.0);
                self.finish_logout();
                self.complete(id, Ok(Reply::Done));
                Ok(id)
            }
        }
    }

    /// `refreshToken({token})`: replaces the token of the live session and
    /// the one used to re-login. While reconnecting (or after `TokenExpired`)
    /// it completes at once and the Session dials again with the new token.
    pub fn refresh_token(&mut self, now: Instant, token: String) -> Cmd {
        enter_span!(self.span());
        let now = self.tick(now);
        if token.is_empty() {
            return Err(crate::limits::LimitError::Empty("token").into());
        }
        match self.state() {
            ConnectionState::Disconnected => Err(CommandError::NotLoggedIn),
            ConnectionState::Connected => self.request(
                now,
                PendingKind::RefreshToken(token.clone()),
                Body::RefreshToken(wire::RefreshTokenRequest { token }),
            ),
            _ => {
                if let Some(c) = self.credentials.as_mut() {
                    c.token = Some(token);
                }
                let id = self
                    .requests
                    .insert(now, &self.config.timing, PendingKind::Done);
                self.requests.remove(id.0);
                self.complete(id, Ok(Reply::Done));
                if self.paused {
                    self.resume_dialing(now);
                }
                Ok(id)
            }
        }
    }

    /// `setUserRegion({region})`: changes the user's home region.
    pub fn set_user_region(&mut self, now: Instant, region: Region) -> Cmd {
        let now = self.tick(now);
        self.require_logged_in()?;
        self.request(
            now,
            PendingKind::SetRegion(region),
            Body::SetUserRegion(wire::SetUserRegionRequest {
                region: region.to_wire(),
            }),
        )
    }

    /// `getInstanceInfo()`: completes with [`Reply::InstanceInfo`].
    pub fn get_instance_info(&mut self, now: Instant) -> Cmd {
        let now = self.tick(now);
        self.require_logged_in()?;
        self.request(
            now,
            PendingKind::InstanceInfo,
            Body::GetInstanceInfo(wire::Empty {}),
        )
    }

    // ---- peer to peer -------------------------------------------------------

    /// `sendMessageToUser`: to every online instance of `receiver` (reliable
    /// by default: stored for it if none is online). Completes with
    /// [`Reply::MessageSent`]. A refused send hands the message back in the error.
    pub fn send_message_to_user(
        &mut self,
        now: Instant,
        receiver: Uid,
        message: Message,
        options: SendOptions,
    ) -> Cmd {
        let now = self.tick(now);
        let checked = self
            .require_logged_in()
            .and_then(|()| Ok(self.config.limits.check_uid(receiver.0)?))
            .and_then(|()| Ok(self.config.limits.check_message(&message)?))
            .and_then(|()| self.admit());
        if let Err(e) = checked {
            return Err(hand_back(e, message));
        }
        let message_id = self.next_message_id();
        self.send_request(
            now,
            options.reliable,
            Body::SendToUser(wire::SendToUserRequest {
                receiver: receiver.0,
                message: Some(message.into()),
                unreliable: !options.reliable,
                message_id,
            }),
        )
    }

    /// `queryUsersOnlineStatus({uids})`: completes with
    /// [`Reply::OnlineStatus`], a map uid -> online.
    pub fn query_users_online_status(&mut self, now: Instant, uids: &[Uid]) -> Cmd {
        let now = self.tick(now);
        self.require_logged_in()?;
        let uids: Vec<u64> = uids.iter().map(|u| u.0).collect();
        self.config.limits.check_uid_query(&uids)?;
        self.request(
            now,
            PendingKind::OnlineStatus,
            Body::QueryOnline(wire::QueryOnlineRequest { uids }),
        )
    }

    // ---- channels -----------------------------------------------------------

    /// `createChannel({region, channelId})`: a local handle, nothing on the
    /// wire. The same key always gives the same handle.
    pub fn create_channel(
        &mut self,
        region: Region,
        channel_id: &str,
    ) -> Result<ChannelHandle, CommandError> {
        self.config.limits.check_channel_id(channel_id)?;
        Ok(self
            .channels
            .handle_for(ChannelKey::new(region, channel_id)))
    }

    /// `joinChannel({extra})`: become a member. Completes with [`Reply::Done`].
    pub fn join_channel(&mut self, now: Instant, channel: ChannelHandle, extra: Attributes) -> Cmd {
        let now = self.tick(now);
        let c = self
            .channels
            .get(channel)
            .ok_or(CommandError::UnknownChannel)?;
        self.require_logged_in()?;
        if c.membership != Membership::Out {
            return Err(CommandError::AlreadyJoined);
        }
        let key = c.key.to_wire();
        self.config
            .limits
            .check_join(self.channels.joined_count())?;
        let id = self.request(
            now,
            PendingKind::Join {
                channel,
                user: true,
            },
            Body::Join(wire::JoinRequest {
                channel: Some(key),
                extra,
                resume_seq: 0,
                rejoin: false,
                epoch: 0,
            }),
        )?;
        if let Some(c) = self.channels.get_mut(channel) {
            c.membership = Membership::Joining;
            c.uncertain = false;
        }
        Ok(id)
    }

    /// `leaveChannel({extra})`: stop being a member; this user's attributes
    /// in the channel are removed. Completes with [`Reply::Done`].
    pub fn leave_channel(
        &mut self,
        now: Instant,
        channel: ChannelHandle,
        extra: Attributes,
    ) -> Cmd {
        let now = self.tick(now);
        let key = self.joined(channel)?;
        let body = Body::Leave(wire::LeaveRequest {
            channel: Some(key),
            extra,
        });
        let fetching = self
            .channels
            .get(channel)
            .is_some_and(|c| c.stream.fetching);
        let id = if fetching {
            // The channel's replay is being fetched: messages sent before
            // this leave are owed, and a fetch that reached the server after
            // the leave would be refused. The leave goes once the fetch ends.
            let (id, frame) = self.encoded_request(now, PendingKind::Leave { channel }, body)?;
            if let Some(c) = self.channels.get_mut(channel) {
                c.held_leave = Some(frame);
            }
            id
        } else {
            self.request(now, PendingKind::Leave { channel }, body)?
        };
        if let Some(c) = self.channels.get_mut(channel) {
            c.membership = Membership::Leaving;
        }
        Ok(id)
    }

    /// `sendMessageToChannel`: to every member instance, this one included
    /// (it gets its own `ChannelMessage` back). Completes with
    /// [`Reply::MessageSent`]. A refused send hands the message back.
    pub fn send_message_to_channel(
        &mut self,
        now: Instant,
        channel: ChannelHandle,
        message: Message,
        options: SendOptions,
    ) -> Cmd {
        let now = self.tick(now);
        let checked = self.joined(channel).and_then(|key| {
            self.config.limits.check_message(&message)?;
            self.admit()?;
            Ok(key)
        });
        let key = match checked {
            Ok(key) => key,
            Err(e) => return Err(hand_back(e, message)),
        };
        let message_id = self.next_message_id();
        self.send_request(
            now,
            options.reliable,
            Body::SendToChannel(wire::SendToChannelRequest {
                channel: Some(key),
                message: Some(message.into()),
                unreliable: !options.reliable,
                message_id,
            }),
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn write_attributes(
        &mut self,
        now: Instant,
        channel: ChannelHandle,
        scope: AttributeScope,
        op: AttributeOp,
        attributes: Attributes,
        keys: Vec<String>,
        options: AttributeOptions,
    ) -> Cmd {
        let now = self.tick(now);
        let key = self.joined(channel)?;
        // Against an empty set: the current one is the server's.
        let none = Attributes::new();
        self.config
            .limits
            .apply_attribute_op(scope, &none, op, &attributes, &keys)?;
        let write = wire::AttributesWrite {
            channel: Some(key),
            op: op as i32,
            attributes,
            keys,
            enable_notification: options.enable_notification,
        };
        let body = match scope {
            AttributeScope::User => Body::WriteUserAttributes(write),
            AttributeScope::Channel => Body::WriteChannelAttributes(write),
        };
        self.request(now, PendingKind::Done, body)
    }

    /// `setLocalUserAttributes`: replace all of this user's attributes in the channel.
    pub fn set_local_user_attributes(
        &mut self,
        now: Instant,
        channel: ChannelHandle,
        attributes: Attributes,
        options: AttributeOptions,
    ) -> Cmd {
        self.write_attributes(
            now,
            channel,
            AttributeScope::User,
            AttributeOp::Set,
            attributes,
            Vec::new(),
            options,
        )
    }

    /// `deleteLocalUserAttributesByKeys`: delete some of this user's attributes.
    pub fn delete_local_user_attributes_by_keys(
        &mut self,
        now: Instant,
        channel: ChannelHandle,
        keys: Vec<String>,
        options: AttributeOptions,
    ) -> Cmd {
        self.write_attributes(
            now,
            channel,
            AttributeScope::User,
            AttributeOp::Delete,
            Attributes::new(),
            keys,
            options,
        )
    }

    /// `addOrUpdateLocalUserAttributes`: upsert some of this user's attributes.
    pub fn add_or_update_local_user_attributes(
        &mut self,
        now: Instant,
        channel: ChannelHandle,
        attributes: Attributes,
        options: AttributeOptions,
    ) -> Cmd {
        self.write_attributes(
            now,
            channel,
            AttributeScope::User,
            AttributeOp::AddOrUpdate,
            attributes,
            Vec::new(),
            options,
        )
    }

    /// `clearLocalUserAttributes`: delete all of this user's attributes.
    pub fn clear_local_user_attributes(
        &mut self,
        now: Instant,
        channel: ChannelHandle,
        options: AttributeOptions,
    ) -> Cmd {
        self.write_attributes(
            now,
            channel,
            AttributeScope::User,
            AttributeOp::Clear,
            Attributes::new(),
            Vec::new(),
            options,
        )
    }

    /// `setChannelAttributes`: replace all channel attributes.
    pub fn set_channel_attributes(
        &mut self,
        now: Instant,
        channel: ChannelHandle,
        attributes: Attributes,
        options: AttributeOptions,
    ) -> Cmd {
        self.write_attributes(
            now,
            channel,
            AttributeScope::Channel,
            AttributeOp::Set,
            attributes,
            Vec::new(),
            options,
        )
    }

    /// `deleteChannelAttributesByKeys`: delete some channel attributes.
    pub fn delete_channel_attributes_by_keys(
        &mut self,
        now: Instant,
        channel: ChannelHandle,
        keys: Vec<String>,
        options: AttributeOptions,
    ) -> Cmd {
        self.write_attributes(
            now,
            channel,
            AttributeScope::Channel,
            AttributeOp::Delete,
            Attributes::new(),
            keys,
            options,
        )
    }

    /// `addOrUpdateChannelAttributes`: upsert some channel attributes.
    pub fn add_or_update_channel_attributes(
        &mut self,
        now: Instant,
        channel: ChannelHandle,
        attributes: Attributes,
        options: AttributeOptions,
    ) -> Cmd {
        self.write_attributes(
            now,
            channel,
            AttributeScope::Channel,
            AttributeOp::AddOrUpdate,
            attributes,
            Vec::new(),
            options,
        )
    }

    /// `clearChannelAttributes`: delete all channel attributes.
    pub fn clear_channel_attributes(
        &mut self,
        now: Instant,
        channel: ChannelHandle,
        options: AttributeOptions,
    ) -> Cmd {
        self.write_attributes(
            now,
            channel,
            AttributeScope::Channel,
            AttributeOp::Clear,
            Attributes::new(),
            Vec::new(),
            options,
        )
    }

    /// `getChannelUserList()`: completes with [`Reply::UserList`].
    pub fn get_channel_user_list(&mut self, now: Instant, channel: ChannelHandle) -> Cmd {
        let now = self.tick(now);
        let key = self.joined(channel)?;
        self.request(
            now,
            PendingKind::UserList { channel },
            Body::GetUserList(key),
        )
    }

    /// `getUserAttributes({uid})`: completes with [`Reply::Attributes`].
    pub fn get_user_attributes(&mut self, now: Instant, channel: ChannelHandle, uid: Uid) -> Cmd {
        self.read_user_attributes(now, channel, uid, Vec::new())
    }

    /// `getUserAttributesByKeys({uid, keys})`: completes with
    /// [`Reply::Attributes`]; missing keys are absent.
    pub fn get_user_attributes_by_keys(
        &mut self,
        now: Instant,
        channel: ChannelHandle,
        uid: Uid,
        keys: Vec<String>,
    ) -> Cmd {
        self.config.limits.check_keys(&keys)?;
        self.read_user_attributes(now, channel, uid, keys)
    }

    fn read_user_attributes(
        &mut self,
        now: Instant,
        channel: ChannelHandle,
        uid: Uid,
        keys: Vec<String>,
    ) -> Cmd {
        let now = self.tick(now);
        let key = self.joined(channel)?;
        self.config.limits.check_uid(uid.0)?;
        self.request(
            now,
            PendingKind::Attributes { channel },
            Body::GetUserAttributes(wire::GetUserAttributesRequest {
                channel: Some(key),
                uid: uid.0,
                keys,
            }),
        )
    }

    /// `getChannelAttributes()`: completes with [`Reply::Attributes`].
    pub fn get_channel_attributes(&mut self, now: Instant, channel: ChannelHandle) -> Cmd {
        self.read_channel_attributes(now, channel, Vec::new())
    }

    /// `getChannelAttributesByKeys({keys})`: completes with [`Reply::Attributes`].
    pub fn get_channel_attributes_by_keys(
        &mut self,
        now: Instant,
        channel: ChannelHandle,
        keys: Vec<String>,
    ) -> Cmd {
        self.config.limits.check_keys(&keys)?;
        self.read_channel_attributes(now, channel, keys)
    }

    fn read_channel_attributes(
        &mut self,
        now: Instant,
        channel: ChannelHandle,
        keys: Vec<String>,
    ) -> Cmd {
        let now = self.tick(now);
        let key = self.joined(channel)?;
        self.request(
            now,
            PendingKind::Attributes { channel },
            Body::GetChannelAttributes(wire::GetChannelAttributesRequest {
                channel: Some(key),
                keys,
            }),
        )
    }

    /// `getChannelUserCount({channelIds})`: member counts of channels in this
    /// channel's region (0 for a channel nobody is in). Completes with
    /// [`Reply::UserCount`].
    pub fn get_channel_user_count(
        &mut self,
        now: Instant,
        channel: ChannelHandle,
        channel_ids: Vec<String>,
    ) -> Cmd {
        let now = self.tick(now);
        let key = self.joined(channel)?;
        self.config.limits.check_channel_id_query(&channel_ids)?;
        self.request(
            now,
            PendingKind::UserCount,
            Body::GetUserCount(wire::GetUserCountRequest {
                region: key.region,
                channel_ids,
            }),
        )
    }

    /// `getChannelUserListByAtrribute({key, prop})` (1.0 SDK): the members
    /// whose attribute `key` equals `value`. Completes with [`Reply::UserList`].
    pub fn get_channel_user_list_by_attribute(
        &mut self,
        now: Instant,
        channel: ChannelHandle,
        key: String,
        value: String,
    ) -> Cmd {
        let now = self.tick(now);
        let channel_key = self.joined(channel)?;
        self.config.limits.check_key(&key)?;
        self.request(
            now,
            PendingKind::UserList { channel },
            Body::GetUserListByAttribute(wire::GetUserListByAttributeRequest {
                channel: Some(channel_key),
                key,
                value,
            }),
        )
    }
}

/// Puts a refused send's message back into the error.
fn hand_back(e: CommandError, message: Message) -> CommandError {
    match e {
        CommandError::QueueFull { .. } => CommandError::QueueFull {
            message: Some(Box::new(message)),
        },
        other => other,
    }
}
