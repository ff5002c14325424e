//! What both client adapters share: the state behind their lock (the
//! [`Session`], the table routing completions to waiting calls, the
//! application's event queue), the drain step run after every input, the
//! typed error, and the list of operations from which both adapters generate
//! their methods.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use super::endpoint::{Endpoint, Endpoints, Rotation};
use crate::client::{
    Event, LinkId, Reply, RequestId, Session, SessionConfig, Sink, TransportAction,
};
use crate::error::{CommandError, ErrorCode, ServiceError, WireError};
use crate::wire::{write_length_prefixed, FrameDecoder};

/// The failure of a client call (of either adapter).
///
/// Every failure that has one carries the service's numeric code:
///
/// ```
/// use hummer_channel::adapters::ClientError;
/// use hummer_channel::{CommandError, ErrorCode, ServiceError};
///
/// let refused = ClientError::Command(CommandError::NotLoggedIn);
/// assert_eq!(refused.code(), Some(ErrorCode::UNINITIALIZED));
/// let lost = ClientError::Service(ServiceError::new(ErrorCode::CONNECTION_EXCEPTION, "link lost"));
/// assert_eq!(lost.code().map(ErrorCode::code), Some(1007));
/// assert_eq!(ClientError::Closed.code(), None);
/// ```
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// The Session refused the command before anything was sent (not logged
    /// in, a bad argument, not a member, queue full...).
    #[error(transparent)]
    Command(#[from] CommandError),
    /// The request went out and failed: the service's error code, or 1005
    /// (no reply in time) / 1007 (the link broke with the request in flight).
    #[error(transparent)]
    Service(#[from] ServiceError),
    /// The client was closed (or its driver stopped) before the call ended.
    #[error("the client is closed")]
    Closed,
    /// The Session completed the request with a reply of another kind than
    /// the operation has (a bug in the Session, never expected).
    #[error("the reply does not match the request")]
    UnexpectedReply,
}

impl ClientError {
    /// The service's error code for this failure (`None` for
    /// [`Closed`](Self::Closed) and [`UnexpectedReply`](Self::UnexpectedReply)).
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Command(e) => Some(e.code()),
            ClientError::Service(e) => Some(e.code),
            ClientError::Closed | ClientError::UnexpectedReply => None,
        }
    }
}

/// What a command returns: the id of its request.
pub(crate) type Cmd = Result<RequestId, CommandError>;

/// Called once with the outcome of one request (it wakes the waiting call).
pub(crate) type Waiter = Box<dyn FnOnce(Result<Reply, ServiceError>) + Send>;

/// Events the application may leave unread before the client stops reading
/// from the server (see the adapters' docs on backpressure).
pub const DEFAULT_EVENT_CAPACITY: usize = 4096;

/// How long `close()` waits for the logout reply before closing anyway.
pub(crate) const CLOSE_LOGOUT_WAIT: Duration = Duration::from_secs(2);

/// Bytes read from the socket at once.
pub(crate) const READ_CHUNK: usize = 64 * 1024;

/// What the Session asked of the transport during one drain. Several actions
/// in one drain reduce to: close the current link (if `close`), then open
/// `connect` (the last `Connect` of the drain, if no `Close` came after it).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct TransportRequest {
    /// Close the current link (or abandon the dial in progress), after
    /// writing what was drained.
    pub close: bool,
    /// Open this link.
    pub connect: Option<LinkId>,
}

/// The adapters' side of [`Session::drain`]: frames length-prefixed into one
/// write buffer, completions to their waiters, other events to the queue.
struct AdapterSink<'a> {
    out: &'a mut BytesMut,
    waiters: &'a mut HashMap<RequestId, Waiter>,
    events: &'a mut VecDeque<Event>,
    request: TransportRequest,
}

impl Sink for AdapterSink<'_> {
    fn transport(&mut self, action: TransportAction) {
        match action {
            TransportAction::Connect { link } => self.request.connect = Some(link),
            TransportAction::Close { .. } => {
                self.request.close = true;
                self.request.connect = None;
            }
        }
    }

    fn transmit(&mut self, frame: Bytes) {
        write_length_prefixed(&frame, self.out);
    }

    fn event(&mut self, event: Event) {
        match event {
            Event::Completed { request, result } => {
                // A missing waiter is a call that gave up (close() stops
                // waiting for its logout); the outcome has no one to go to.
                if let Some(waiter) = self.waiters.remove(&request) {
                    waiter(result);
                }
            }
            other => self.events.push_back(other),
        }
    }
}

/// The state behind an adapter's lock; `T` is the adapter's own part.
pub(crate) struct Core<T> {
    /// The state machine.
    pub session: Session,
    waiters: HashMap<RequestId, Waiter>,
    events: VecDeque<Event>,
    event_capacity: usize,
    max_frame_size: usize,
    /// Which server to dial (the failover rule).
    servers: Rotation,
    /// `close()` was called: the driver flushes, closes the link and stops.
    pub shutdown: bool,
    /// The driver has stopped: no more events, every call fails with `Closed`.
    pub closed: bool,
    /// The adapter's own state (its link, wake flags...).
    #[cfg_attr(not(feature = "blocking"), allow(dead_code))]
    pub transport: T,
}

impl<T> Core<T> {
    pub fn new(
        config: SessionConfig,
        servers: Endpoints,
        event_capacity: usize,
        transport: T,
    ) -> Core<T> {
        let max_frame_size = config.limits.max_frame_size;
        Core {
            session: Session::new(config, Instant::now()),
            waiters: HashMap::new(),
            events: VecDeque::new(),
            event_capacity: event_capacity.max(1),
            max_frame_size,
            servers: Rotation::new(servers),
            shutdown: false,
            closed: false,
            transport,
        }
    }

    /// A decoder for a new link.
    pub fn decoder(&self) -> FrameDecoder {
        FrameDecoder::new(self.max_frame_size)
    }

    /// Runs one command and registers `waiter` for its completion.
    pub fn command(
        &mut self,
        op: impl FnOnce(&mut Session, Instant) -> Cmd,
        waiter: Waiter,
    ) -> Result<(), ClientError> {
        if self.closed || self.shutdown {
            return Err(ClientError::Closed);
        }
        let id = op(&mut self.session, Instant::now())?;
        self.waiters.insert(id, waiter);
        Ok(())
    }

    /// The drain step, run after every input and command: frames go into
    /// `out` (length-prefixed, batched for one write), completions to their
    /// waiters, other events to the application's queue; returns what the
    /// Session wants of the transport.
    pub fn drain(&mut self, out: &mut BytesMut) -> TransportRequest {
        let mut sink = AdapterSink {
            out,
            waiters: &mut self.waiters,
            events: &mut self.events,
            request: TransportRequest::default(),
        };
        self.session.drain(&mut sink);
        sink.request
    }

    /// Feeds bytes read from `link`. `Err` means the stream is broken
    /// (the decoder cannot resynchronise): close the link and call
    /// [`link_lost`](Self::link_lost).
    pub fn on_bytes(
        &mut self,
        link: LinkId,
        decoder: &mut FrameDecoder,
        data: &[u8],
    ) -> Result<(), WireError> {
        decoder.extend(data);
        while let Some(frame) = decoder.next_frame()? {
            // A frame the Session refuses makes it ask for Close itself.
            let _ = self.session.handle_frame(Instant::now(), link, frame);
        }
        Ok(())
    }

    /// The server to dial now (the Session asked for a link, or the last
    /// dial of the link failed and [`dial_failed`](Self::dial_failed) said
    /// to try the next).
    pub fn dial_target(&mut self) -> Endpoint {
        self.servers.dial().clone()
    }

    /// The dial for `link` failed. `true`: dial [`dial_target`](Self::dial_target)
    /// now, for the same link (another server of the list is left in this
    /// round); `false`: every server failed once, the Session was told (it
    /// backs off before it asks again).
    pub fn dial_failed(&mut self, link: LinkId) -> bool {
        if self.servers.dial_failed() {
            return true;
        }
        self.session.handle_disconnected(Instant::now(), link);
        false
    }

    /// `link`, once open, broke.
    pub fn link_lost(&mut self, link: LinkId) {
        self.servers.lost(true);
        self.session.handle_disconnected(Instant::now(), link);
    }

    /// The driver closes the link (or abandons its dial) because the Session
    /// asked: call after the drain that asked it.
    pub fn link_closed(&mut self) {
        // A Session that still wants a login (its link was declared dead)
        // redials: to the next server.
        let reconnect = self.is_logged_in();
        self.servers.lost(reconnect);
    }

    /// `link` is open.
    pub fn link_up(&mut self, link: LinkId) {
        self.servers.connected();
        self.session.handle_connected(Instant::now(), link);
    }

    /// The server of the open link.
    pub fn current_endpoint(&self) -> Option<&Endpoint> {
        self.servers.in_use()
    }

    /// The timer fired.
    pub fn timeout(&mut self) {
        self.session.handle_timeout(Instant::now());
    }

    /// The driver stops: waiting calls fail with `Closed` (their waiters are
    /// dropped), waiting readers of events see the end.
    pub fn stop(&mut self) {
        self.closed = true;
        self.waiters.clear();
    }

    /// Takes the next event for the application, and whether the queue was
    /// full before (then the driver, which stopped reading, must be woken).
    pub fn pop_event(&mut self) -> Option<(Event, bool)> {
        let was_full = self.events_full();
        self.events.pop_front().map(|e| (e, was_full))
    }

    /// Events are waiting for the application.
    pub fn has_events(&self) -> bool {
        !self.events.is_empty()
    }

    /// The application's queue is at its bound: stop reading the link.
    pub fn events_full(&self) -> bool {
        self.events.len() >= self.event_capacity
    }

    /// Logged in or logging in (so `close()` logs out first).
    pub fn is_logged_in(&self) -> bool {
        self.session.connection_state().0 != crate::client::ConnectionState::Disconnected
    }
}

/// Every request-making operation, once: its doc, its signature (without
/// `self` and `now`), the Session command, and the reply it expects. Each
/// adapter passes a macro that turns the list into its methods.
macro_rules! with_operations {
    ($m:ident) => {
        $m! {
            /// Logs in as `uid` (`token`: `None` for appid mode; `region`:
            /// the user's home region). This opens the connection; the
            /// Session re-logs-in by itself after a lost link.
            fn login(uid: Uid, token: Option<String>, region: Option<Region>) -> LoginInfo
                = |s, now| s.login(now, uid, token, region);
                Reply::Login(v) => v;
            /// Logs out: the server forgets this instance and leaves its
            /// channels; the connection is closed.
            fn logout() -> ()
                = |s, now| s.logout(now);
                Reply::Done => ();
            /// Replaces the token of the live session and of later re-logins.
            fn refresh_token(token: String) -> ()
                = |s, now| s.refresh_token(now, token);
                Reply::Done => ();
            /// Changes the user's home region.
            fn set_user_region(region: Region) -> ()
                = |s, now| s.set_user_region(now, region);
                Reply::Done => ();
            /// The server's view of this instance (debugging aid).
            fn get_instance_info() -> InstanceInfo
                = |s, now| s.get_instance_info(now);
                Reply::InstanceInfo(v) => v;
            /// Sends `message` to every online instance of `receiver` (stored
            /// for it when reliable and it is offline).
            fn send_message_to_user(receiver: Uid, message: Message, options: SendOptions) -> MessageSent
                = |s, now| s.send_message_to_user(now, receiver, message, options);
                Reply::MessageSent(v) => v;
            /// Which of `uids` have at least one live instance.
            fn query_users_online_status(uids: Vec<Uid>) -> BTreeMap<Uid, bool>
                = |s, now| s.query_users_online_status(now, &uids);
                Reply::OnlineStatus(v) => v;
            /// Joins `channel` (from `create_channel`), with `extra` for the server.
            fn join_channel(channel: ChannelHandle, extra: Attributes) -> ()
                = |s, now| s.join_channel(now, channel, extra);
                Reply::Done => ();
            /// Leaves `channel`; this user's attributes in it are removed.
            fn leave_channel(channel: ChannelHandle, extra: Attributes) -> ()
                = |s, now| s.leave_channel(now, channel, extra);
                Reply::Done => ();
            /// Broadcasts `message` to every member instance of `channel`,
            /// this one included (the echo arrives as `Event::ChannelMessage`).
            fn send_message_to_channel(channel: ChannelHandle, message: Message, options: SendOptions) -> MessageSent
                = |s, now| s.send_message_to_channel(now, channel, message, options);
                Reply::MessageSent(v) => v;
            /// Replaces all of this user's attributes in `channel`.
            fn set_local_user_attributes(channel: ChannelHandle, attributes: Attributes, options: AttributeOptions) -> ()
                = |s, now| s.set_local_user_attributes(now, channel, attributes, options);
                Reply::Done => ();
            /// Deletes some of this user's attributes in `channel`.
            fn delete_local_user_attributes_by_keys(channel: ChannelHandle, keys: Vec<String>, options: AttributeOptions) -> ()
                = |s, now| s.delete_local_user_attributes_by_keys(now, channel, keys, options);
                Reply::Done => ();
            /// Adds or updates some of this user's attributes in `channel`.
            fn add_or_update_local_user_attributes(channel: ChannelHandle, attributes: Attributes, options: AttributeOptions) -> ()
                = |s, now| s.add_or_update_local_user_attributes(now, channel, attributes, options);
                Reply::Done => ();
            /// Deletes all of this user's attributes in `channel`.
            fn clear_local_user_attributes(channel: ChannelHandle, options: AttributeOptions) -> ()
                = |s, now| s.clear_local_user_attributes(now, channel, options);
                Reply::Done => ();
            /// The members of `channel`.
            fn get_channel_user_list(channel: ChannelHandle) -> UserList
                = |s, now| s.get_channel_user_list(now, channel);
                Reply::UserList(v) => v;
            /// All attributes of member `uid` in `channel`.
            fn get_user_attributes(channel: ChannelHandle, uid: Uid) -> AttributesReply
                = |s, now| s.get_user_attributes(now, channel, uid);
                Reply::Attributes(v) => v;
            /// Some attributes of member `uid` in `channel` (missing keys are absent).
            fn get_user_attributes_by_keys(channel: ChannelHandle, uid: Uid, keys: Vec<String>) -> AttributesReply
                = |s, now| s.get_user_attributes_by_keys(now, channel, uid, keys);
                Reply::Attributes(v) => v;
            /// Replaces all attributes of `channel`.
            fn set_channel_attributes(channel: ChannelHandle, attributes: Attributes, options: AttributeOptions) -> ()
                = |s, now| s.set_channel_attributes(now, channel, attributes, options);
                Reply::Done => ();
            /// Deletes some attributes of `channel`.
            fn delete_channel_attributes_by_keys(channel: ChannelHandle, keys: Vec<String>, options: AttributeOptions) -> ()
                = |s, now| s.delete_channel_attributes_by_keys(now, channel, keys, options);
                Reply::Done => ();
            /// Adds or updates some attributes of `channel`.
            fn add_or_update_channel_attributes(channel: ChannelHandle, attributes: Attributes, options: AttributeOptions) -> ()
                = |s, now| s.add_or_update_channel_attributes(now, channel, attributes, options);
                Reply::Done => ();
            /// Deletes all attributes of `channel`.
            fn clear_channel_attributes(channel: ChannelHandle, options: AttributeOptions) -> ()
                = |s, now| s.clear_channel_attributes(now, channel, options);
                Reply::Done => ();
            /// All attributes of `channel`.
            fn get_channel_attributes(channel: ChannelHandle) -> AttributesReply
                = |s, now| s.get_channel_attributes(now, channel);
                Reply::Attributes(v) => v;
            /// Some attributes of `channel`.
            fn get_channel_attributes_by_keys(channel: ChannelHandle, keys: Vec<String>) -> AttributesReply
                = |s, now| s.get_channel_attributes_by_keys(now, channel, keys);
                Reply::Attributes(v) => v;
            /// Member counts of `channel_ids` in `channel`'s region (0 for a
            /// channel nobody is in).
            fn get_channel_user_count(channel: ChannelHandle, channel_ids: Vec<String>) -> UserCount
                = |s, now| s.get_channel_user_count(now, channel, channel_ids);
                Reply::UserCount(v) => v;
            /// The members of `channel` whose attribute `key` equals `value`.
            fn get_channel_user_list_by_attribute(channel: ChannelHandle, key: String, value: String) -> UserList
                = |s, now| s.get_channel_user_list_by_attribute(now, channel, key, value);
                Reply::UserList(v) => v;
        }
    };
}
pub(crate) use with_operations;

/// Locks a mutex, ignoring poisoning: the state stays usable after a
/// panic elsewhere (a dropped link or a bug must not cascade into panics).
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Methods both clients have that touch only local state; the client has a
/// method `core()` locking its [`Core`].
macro_rules! local_operations {
    () => {
        /// A handle for the channel `channel_id` in `region` (local, nothing
        /// on the wire); pass it to the channel operations.
        pub fn create_channel(
            &self,
            region: Region,
            channel_id: &str,
        ) -> Result<ChannelHandle, ClientError> {
            Ok(self.core().session.create_channel(region, channel_id)?)
        }

        /// The region and id of a channel handle.
        pub fn channel_key(&self, channel: ChannelHandle) -> Option<ChannelKey> {
            self.core().session.channel_key(channel).cloned()
        }

        /// Whether `channel` is joined (as the Session knows it).
        pub fn is_joined(&self, channel: ChannelHandle) -> bool {
            self.core().session.is_joined(channel)
        }

        /// The connection state and why it last changed.
        pub fn connection_state(&self) -> (ConnectionState, ConnectionReason) {
            self.core().session.connection_state()
        }

        /// The logged-in uid.
        pub fn uid(&self) -> Option<Uid> {
            self.core().session.uid()
        }

        /// The server's id for this instance, once logged in.
        pub fn instance_id(&self) -> Option<u64> {
            self.core().session.instance_id()
        }

        /// The server of the open link (one of the list given to
        /// `connect_any`), `None` while no link is open.
        pub fn current_endpoint(&self) -> Option<Endpoint> {
            self.core().current_endpoint().cloned()
        }
    };
}
pub(crate) use local_operations;
