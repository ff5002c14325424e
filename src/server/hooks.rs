//! Events for an app's backend (webhooks, `docs/api.md`): a hub shard
//! queues them where they happen ([`Hub::poll_hook`]) for the apps that
//! asked for them ([`AppConfig::hook`](super::AppConfig::hook)); a runner
//! delivers them. Presence is the uid's: `user_online` when its first
//! instance logs in, `user_offline` when its last one is gone, which for a
//! lost link is after the grace period, so a link resumed within it causes
//! neither.

use bytes::Bytes;

use super::hub::Hub;
use crate::types::ChannelKey;

/// Where and how an app's events are delivered, and which it gets.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HookConfig {
    /// The receiver: an `http://` or `https://` URL the events are POSTed to.
    pub url: String,
    /// The HMAC-SHA256 key each delivery is signed with (at least
    /// [`MIN_SECRET_LEN`](super::MIN_SECRET_LEN) bytes).
    pub secret: String,
    /// Channel messages are sent as events for the channels whose id
    /// starts with one of these (none: no message events; `""`: all).
    pub message_channel_prefixes: Vec<String>,
}

impl HookConfig {
    /// Presence and channel events to `url`, signed with `secret`.
    pub fn new(url: impl Into<String>, secret: impl Into<String>) -> HookConfig {
        HookConfig {
            url: url.into(),
            secret: secret.into(),
            message_channel_prefixes: Vec::new(),
        }
    }

    /// The same, with message events for channels whose id starts with
    /// `prefix`.
    pub fn with_message_prefix(mut self, prefix: impl Into<String>) -> HookConfig {
        self.message_channel_prefixes.push(prefix.into());
        self
    }
}

/// What happened, for the backend of app `appid`.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HookEvent {
    /// The app.
    pub appid: u32,
    /// When (the server's unix ms).
    pub at_ms: u64,
    /// What.
    pub kind: HookEventKind,
}

/// The kinds of [`HookEvent`].
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HookEventKind {
    /// The uid's first instance logged in (`user.online`).
    UserOnline {
        /// The uid.
        uid: u64,
    },
    /// The uid's last instance is gone: logged out, kicked, or its link
    /// stayed lost for the grace period (`user.offline`).
    UserOffline {
        /// The uid.
        uid: u64,
    },
    /// A channel got its first member (`channel.created`).
    ChannelCreated {
        /// The channel.
        channel: ChannelKey,
    },
    /// A channel's last member left (`channel.emptied`).
    ChannelEmptied {
        /// The channel.
        channel: ChannelKey,
    },
    /// A message was sent to a channel of a listed prefix
    /// (`channel.message`).
    ChannelMessage {
        /// The channel.
        channel: ChannelKey,
        /// The sender (0: the service).
        from_uid: u64,
        /// Its seq (0: unreliable).
        seq: u64,
        /// The application's message type.
        kind: String,
        /// Its content.
        content: Bytes,
    },
}

impl HookEventKind {
    /// The event's name in deliveries: `user.online`, `user.offline`,
    /// `channel.created`, `channel.emptied`, `channel.message`.
    pub fn name(&self) -> &'static str {
        match self {
            HookEventKind::UserOnline { .. } => "user.online",
            HookEventKind::UserOffline { .. } => "user.offline",
            HookEventKind::ChannelCreated { .. } => "channel.created",
            HookEventKind::ChannelEmptied { .. } => "channel.emptied",
            HookEventKind::ChannelMessage { .. } => "channel.message",
        }
    }
}

impl Hub {
    /// The next event for an app's backend, oldest first.
    /// With a store, an event waits until what it tells of is stored.
    pub fn poll_hook(&mut self) -> Option<HookEvent> {
        self.hooks.pop(self.store.as_ref())
    }

    /// Queues `kind` for `appid`'s backend, if it has one.
    pub(super) fn hook(&mut self, appid: u32, kind: HookEventKind) {
        let Some(hook) = self.config.app(appid).and_then(|a| a.hook.as_ref()) else {
            return;
        };
        if let HookEventKind::ChannelMessage { channel, .. } = &kind {
            let listed = hook
                .message_channel_prefixes
                .iter()
                .any(|p| channel.channel_id.starts_with(p.as_str()));
            if !listed {
                return;
            }
        }
        if let HookEventKind::UserOnline { uid } = kind {
            // Offline and online again in one turn (a login that replaced
            // the uid's other instances): the uid never left.
            let back = self.hooks.back();
            if back
                .is_some_and(|e| e.appid == appid && e.kind == HookEventKind::UserOffline { uid })
            {
                self.hooks.pop_back();
                return;
            }
        }
        let at_ms = self.unix_ms();
        self.hooks
            .push(self.store.as_ref(), HookEvent { appid, at_ms, kind });
    }
}

/// Whether `appid` gets message events for some channel (a cheap check
/// before a message's content is copied for one). Of the configuration
/// alone, so a caller may hold a channel meanwhile.
pub(super) fn wants_messages(config: &super::ServerConfig, appid: u32) -> bool {
    config
        .app(appid)
        .and_then(|a| a.hook.as_ref())
        .is_some_and(|h| !h.message_channel_prefixes.is_empty())
}
