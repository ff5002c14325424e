//! Server configuration: the apps it serves, the limits, timings and bounds.

use std::time::Duration;

pub use super::rate::RateLimit;
use super::seq_log::Retention;
use crate::limits::Limits;

/// The appid of [`ServerConfig::demo`].
pub const DEMO_APPID: u32 = 10000;

/// The HS256 token secret of the demo app in [`ServerConfig::demo`].
/// At least [`MIN_SECRET_LEN`] bytes, like every secret; public, so only
/// for demos.
pub const DEMO_SECRET: &str = "hummer-demo-secret-not-for-production";

/// One application served by the server.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppConfig {
    /// The application id.
    pub appid: u32,
    /// The HS256 key tokens of this app are signed with. `None`: token logins
    /// are refused (2002), only appid mode can work.
    pub secret: Option<String>,
    /// Whether a login without a token (appid mode, anonymous) is accepted.
    pub allow_appid_mode: bool,
    /// Whether a new login of a uid closes that uid's other instances
    /// (they get `Close{code: 100}`) instead of living beside them.
    pub kick_older_logins: bool,
    /// Keys a backend presents to the server API (`Authorization: apikey
    /// KEY`) to act for this app; several allow a rotation. Each at least
    /// [`MIN_SECRET_LEN`] bytes. Empty: the app has no API access.
    pub api_keys: Vec<String>,
    /// Where this app's events go (webhooks); `None`: nowhere.
    pub hook: Option<super::HookConfig>,
}

impl AppConfig {
    /// An app that accepts tokens signed with `secret` and nothing else.
    pub fn with_secret(appid: u32, secret: impl Into<String>) -> Self {
        AppConfig {
            appid,
            secret: Some(secret.into()),
            allow_appid_mode: false,
            kick_older_logins: false,
            api_keys: Vec::new(),
            hook: None,
        }
    }

    /// The same app, whose events go to `hook`.
    pub fn with_hook(mut self, hook: super::HookConfig) -> Self {
        self.hook = Some(hook);
        self
    }

    /// The same app, whose backend may use the server API with `key`.
    pub fn with_api_key(mut self, key: impl Into<String>) -> Self {
        self.api_keys.push(key.into());
        self
    }
}

/// Everything the [`Server`](super::Server) is configured with. Every field
/// is public; start from [`ServerConfig::default`] (no apps) or
/// [`ServerConfig::demo`] and change what you need.
///
/// ```
/// use std::time::Duration;
/// use hummer_channel::server::{AppConfig, ServerConfig};
///
/// let mut config = ServerConfig::default();
/// config.apps.push(AppConfig::with_secret(42, "s3cret"));
/// config.presence_grace = Duration::from_secs(10);
/// assert_eq!(config.max_channel_members, 100_000);
/// ```
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerConfig {
    /// The apps served. A login for any other appid gets 2018.
    pub apps: Vec<AppConfig>,
    /// The limits enforced (the same numbers the client checks).
    pub limits: Limits,
    /// Seed of every random choice (server epoch, instance ids).
    pub seed: u64,
    /// How long an instance whose link is lost stays a member of its channels
    /// and counts as online. Default 30 s.
    pub presence_grace: Duration,
    /// Join/leave notices of a channel are collected for this long and sent
    /// as one `MembershipPush`. Default 100 ms.
    pub notice_batch_window: Duration,
    /// A connection that sent nothing for this long is closed with
    /// `Close{1005}`; after half of it the server pings it. Default 45 s.
    pub idle_timeout: Duration,
    /// How often clients are told to send something (`LoginReply.
    /// ping_interval_ms`). Default 15 s, a third of the idle timeout.
    pub ping_interval: Duration,
    /// A connection that has not logged in this long after it was accepted is
    /// closed (`Close{1006}`). Default 5 s.
    pub login_timeout: Duration,
    /// The largest frame a connection may send before it has logged in (a
    /// login is small): past it the link is closed as a protocol error.
    /// Default 8 KiB.
    pub pre_login_max_frame_size: usize,
    /// Reliable channel messages kept per channel for replay. Default 1024.
    pub channel_retention_messages: usize,
    /// How long reliable channel messages are kept. Default 5 min. An empty
    /// channel is forgotten once its retained messages have aged out.
    pub channel_retention_age: Duration,
    /// Reliable P2P messages kept per receiver uid. Default 200.
    pub inbox_max_messages: usize,
    /// How long reliable P2P messages are kept. Default 7 days.
    pub inbox_max_age: Duration,
    /// Bound on the number of uids with a P2P inbox; past it the inbox of an
    /// offline uid that was idle longest is forgotten. Default 100_000.
    /// With several hub shards each keeps `1 / shards` of it (rounded up).
    pub max_inbox_users: usize,
    /// Bytes of retained reliable messages (P2P inboxes and channel
    /// histories together); past it the oldest messages server-wide are
    /// evicted (clients see them as a gap). Default 256 MiB. With several
    /// hub shards each keeps `1 / shards` of it, evicting among its own
    /// channels and inboxes.
    pub max_retained_bytes: usize,
    /// Bytes queued for one connection before it is closed as a slow
    /// consumer. Default 4 MiB.
    pub max_queued_bytes: usize,
    /// Sends (P2P + channel) allowed per instance per `rate_limit_window`
    /// (4003 beyond). Default 180.
    pub rate_limit_sends: usize,
    /// The rate limit's sliding window. Default 3 s.
    pub rate_limit_window: Duration,
    /// The limits per uid (all its instances together) on every kind of
    /// request; refusals are 4003.
    pub rate_limits: RateLimits,
    /// Reliable messages kept per channel, in bytes (with their overhead):
    /// past it the channel's oldest go first. Default 8 MiB.
    pub channel_max_retained_bytes: usize,
    /// Reliable P2P messages kept per receiver uid, in bytes. Default 2 MiB.
    pub inbox_max_retained_bytes: usize,
    /// Retained bytes of one app (its channels and inboxes): past it the
    /// app's largest histories lose their oldest messages first, so one app
    /// never evicts another's. Default 64 MiB. With several hub shards each
    /// keeps `1 / shards` of it.
    pub app_max_retained_bytes: usize,
    /// How long before a token's expiry the client is told
    /// (`TokenWillExpirePush`). Default 30 s.
    pub token_warning: Duration,
    /// How long after a token's expiry a link may wait for its refresh
    /// (requests are refused with 2003 meanwhile) before it is closed with
    /// `Close{2003}`. Default 10 s.
    pub token_grace: Duration,
    /// Distinct uids in one channel (5102 beyond). Default 100_000.
    pub max_channel_members: usize,
    /// Live instances (connected or in grace) of one uid; a login past it
    /// drops that uid's oldest disconnected instance, or is refused with 2012
    /// when all are connected. Default 64.
    pub max_instances_per_uid: usize,
    /// How long the message id of a successful send is remembered, so that a
    /// re-send with the same id is answered without delivering twice.
    /// Default 120 s (a Session re-sends only after resuming, within
    /// `presence_grace`).
    pub send_dedupe_window: Duration,
    /// Message ids remembered per sender uid (oldest forgotten first).
    /// Default 1024.
    pub send_dedupe_max: usize,
    /// How often aged-out messages and idle records are swept. Default 30 s.
    pub sweep_interval: Duration,
    /// Keep the lasting state (channels, inboxes, instances, retained
    /// messages) in a store: each hub shard then gives batches of changes
    /// ([`Hub::poll_store`](super::Hub::poll_store)) and holds back output
    /// until the changes it shows are stored. Default off (the state lives
    /// in the process only). The TCP runner's store is Redis (`--engine`).
    pub durable: bool,
}

impl Default for ServerConfig {
    /// No apps; every limit, timing and bound at its documented default.
    fn default() -> Self {
        ServerConfig {
            apps: Vec::new(),
            limits: Limits::default(),
            seed: 0x5eed_u64,
            presence_grace: Duration::from_secs(30),
            notice_batch_window: Duration::from_millis(100),
            idle_timeout: Duration::from_secs(45),
            ping_interval: Duration::from_secs(15),
            login_timeout: Duration::from_secs(5),
            pre_login_max_frame_size: 8 * 1024,
            channel_retention_messages: 1024,
            channel_retention_age: Duration::from_secs(5 * 60),
            inbox_max_messages: 200,
            inbox_max_age: Duration::from_secs(7 * 24 * 3600),
            max_inbox_users: 100_000,
            max_retained_bytes: 256 * 1024 * 1024,
            max_queued_bytes: 4 * 1024 * 1024,
            rate_limit_sends: 180,
            rate_limit_window: Duration::from_secs(3),
            rate_limits: RateLimits::default(),
            channel_max_retained_bytes: 8 * 1024 * 1024,
            inbox_max_retained_bytes: 2 * 1024 * 1024,
            app_max_retained_bytes: 64 * 1024 * 1024,
            token_warning: Duration::from_secs(30),
            token_grace: Duration::from_secs(10),
            max_channel_members: 100_000,
            max_instances_per_uid: 64,
            send_dedupe_window: Duration::from_secs(120),
            send_dedupe_max: 1024,
            sweep_interval: Duration::from_secs(30),
            durable: false,
        }
    }
}

/// The rate limits per uid (every instance of it together) on each kind of
/// request. A refused request gets 4003 and changes nothing.
///
/// ```
/// use std::time::Duration;
/// use hummer_channel::server::{RateLimit, RateLimits};
/// let mut limits = RateLimits::default();
/// limits.queries = RateLimit::new(10, Duration::from_secs(1));
/// assert_eq!(limits.sends, RateLimit::new(360, Duration::from_secs(3)));
/// ```
///
/// With several hub shards the per-uid limits are kept by the uid's home
/// shard. A request about a channel of another shard is let through when
/// its limit has room and charged when that shard reports its cost, so
/// requests in flight at once may overdraw a limit by their number (and a
/// notified write by its weight).
#[non_exhaustive]
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct RateLimits {
    /// P2P and channel sends of a uid (each instance also has
    /// `rate_limit_sends`). Default 360 per 3 s.
    pub sends: RateLimit,
    /// Attribute writes, each costing 1 plus one per 100 members it
    /// notifies. Default 60 per 3 s.
    pub attribute_writes: RateLimit,
    /// Reads: online status, user lists, counts, attributes, instance info.
    /// Default 300 per 3 s.
    pub queries: RateLimit,
    /// Joins and leaves. Default 60 per 3 s.
    pub memberships: RateLimit,
    /// Bytes replayed by fetches. Default 16 MiB per 3 s.
    pub fetch_bytes: RateLimit,
    /// Logins from one IP address (when the transport tells it). Default 60
    /// per 3 s. With several hub shards each counts the logins of its own
    /// uids: an address may log in this often on each.
    pub logins_per_address: RateLimit,
}

impl Default for RateLimits {
    fn default() -> Self {
        let per = Duration::from_secs(3);
        RateLimits {
            sends: RateLimit::new(360, per),
            attribute_writes: RateLimit::new(60, per),
            queries: RateLimit::new(300, per),
            memberships: RateLimit::new(60, per),
            fetch_bytes: RateLimit::new(16 * 1024 * 1024, per),
            logins_per_address: RateLimit::new(60, per),
        }
    }
}

/// A configuration the server refuses to start with.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// An app's token secret is shorter than [`MIN_SECRET_LEN`] bytes: tokens
    /// signed with it could be forged by brute force.
    #[error("the secret of app {appid} is {len} bytes; at least {MIN_SECRET_LEN} are needed")]
    WeakSecret {
        /// The app.
        appid: u32,
        /// The secret's length.
        len: usize,
    },
    /// An app's hook URL is not an `http://` or `https://` URL.
    #[error("the hook URL of app {appid} must start with http:// or https://")]
    BadHookUrl {
        /// The app.
        appid: u32,
    },
    /// An app's hook secret is shorter than [`MIN_SECRET_LEN`] bytes.
    #[error("the hook secret of app {appid} is {len} bytes; at least {MIN_SECRET_LEN} are needed")]
    WeakHookSecret {
        /// The app.
        appid: u32,
        /// The secret's length.
        len: usize,
    },
    /// An app's API key is shorter than [`MIN_SECRET_LEN`] bytes.
    #[error("an API key of app {appid} is {len} bytes; at least {MIN_SECRET_LEN} are needed")]
    WeakApiKey {
        /// The app.
        appid: u32,
        /// The key's length.
        len: usize,
    },
    /// One API key is given to two apps: its calls could only act as one
    /// of them.
    #[error("apps {first} and {second} have the same API key; each app needs keys of its own")]
    SharedApiKey {
        /// The first app with the key.
        first: u32,
        /// The other.
        second: u32,
    },
}

/// The shortest app secret accepted (HS256 wants at least its 32-byte hash).
pub const MIN_SECRET_LEN: usize = 32;

impl ServerConfig {
    /// Checks what the server cannot run safely with (every app's secret at
    /// least [`MIN_SECRET_LEN`] bytes). The server also refuses every token
    /// of an app whose secret is too short, whether this was called or not.
    ///
    /// ```
    /// use hummer_channel::server::{AppConfig, ServerConfig};
    /// let mut config = ServerConfig::demo();
    /// assert!(config.validate().is_ok());
    /// config.apps.push(AppConfig::with_secret(7, "short"));
    /// assert!(config.validate().is_err());
    /// ```
    pub fn validate(&self) -> Result<(), ConfigError> {
        for app in &self.apps {
            if let Some(s) = &app.secret {
                if s.len() < MIN_SECRET_LEN {
                    return Err(ConfigError::WeakSecret {
                        appid: app.appid,
                        len: s.len(),
                    });
                }
            }
            if let Some(h) = &app.hook {
                let scheme_ok = h.url.starts_with("http://") || h.url.starts_with("https://");
                if !scheme_ok {
                    return Err(ConfigError::BadHookUrl { appid: app.appid });
                }
                if h.secret.len() < MIN_SECRET_LEN {
                    return Err(ConfigError::WeakHookSecret {
                        appid: app.appid,
                        len: h.secret.len(),
                    });
                }
            }
            if let Some(k) = app.api_keys.iter().find(|k| k.len() < MIN_SECRET_LEN) {
                return Err(ConfigError::WeakApiKey {
                    appid: app.appid,
                    len: k.len(),
                });
            }
        }
        // A key maps to one app ([`ServerConfig::app_of_api_key`]).
        for (i, a) in self.apps.iter().enumerate() {
            for b in &self.apps[i + 1..] {
                if a.appid != b.appid && a.api_keys.iter().any(|k| b.api_keys.contains(k)) {
                    return Err(ConfigError::SharedApiKey {
                        first: a.appid,
                        second: b.appid,
                    });
                }
            }
        }
        Ok(())
    }

    /// The app whose API keys include `key`. Every key of every app is
    /// compared in full, in time that depends on the lengths only, so the
    /// answer's timing tells nothing about how much of a key matched.
    /// Keys shorter than [`MIN_SECRET_LEN`] never match.
    ///
    /// ```
    /// use hummer_channel::server::{AppConfig, ServerConfig};
    /// let key = "k".repeat(32);
    /// let mut config = ServerConfig::default();
    /// config.apps.push(AppConfig::with_secret(7, "s".repeat(32)).with_api_key(key.clone()));
    /// assert_eq!(config.app_of_api_key(&key), Some(7));
    /// assert_eq!(config.app_of_api_key(&"x".repeat(32)), None);
    /// ```
    pub fn app_of_api_key(&self, key: &str) -> Option<u32> {
        let mut found = None;
        for app in &self.apps {
            for k in &app.api_keys {
                if k.len() >= MIN_SECRET_LEN && constant_time_eq(k.as_bytes(), key.as_bytes()) {
                    found = found.or(Some(app.appid));
                }
            }
        }
        found
    }

    /// The defaults plus one app, [`DEMO_APPID`], that accepts both appid mode
    /// (no token) and tokens signed with [`DEMO_SECRET`].
    ///
    /// ```
    /// use hummer_channel::server::{ServerConfig, DEMO_APPID};
    /// let config = ServerConfig::demo();
    /// assert_eq!(config.apps[0].appid, DEMO_APPID);
    /// assert!(config.apps[0].allow_appid_mode);
    /// ```
    pub fn demo() -> Self {
        ServerConfig {
            apps: vec![AppConfig {
                appid: DEMO_APPID,
                secret: Some(DEMO_SECRET.to_owned()),
                allow_appid_mode: true,
                kick_older_logins: false,
                api_keys: Vec::new(),
                hook: None,
            }],
            ..ServerConfig::default()
        }
    }

    pub(crate) fn app(&self, appid: u32) -> Option<&AppConfig> {
        self.apps.iter().find(|a| a.appid == appid)
    }

    /// How much of a channel's history is kept.
    pub(crate) fn channel_retention(&self) -> Retention {
        Retention {
            max_messages: self.channel_retention_messages,
            max_bytes: self.channel_max_retained_bytes,
            max_age: self.channel_retention_age,
        }
    }

    /// How much of a uid's inbox is kept.
    pub(crate) fn inbox_retention(&self) -> Retention {
        Retention {
            max_messages: self.inbox_max_messages,
            max_bytes: self.inbox_max_retained_bytes,
            max_age: self.inbox_max_age,
        }
    }
}

/// Whether `a == b`, comparing every byte whatever the first difference.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y));
    // Keeps the optimiser from turning the fold into an early exit.
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_keys_find_their_app_and_short_ones_are_refused() {
        let long = |c: &str| c.repeat(MIN_SECRET_LEN);
        let mut config = ServerConfig::demo();
        config
            .apps
            .push(AppConfig::with_secret(7, long("s")).with_api_key(long("a")));
        config.apps.push(
            AppConfig::with_secret(8, long("s"))
                .with_api_key(long("b"))
                .with_api_key(long("c")),
        );
        assert_eq!(config.validate(), Ok(()));
        assert_eq!(config.app_of_api_key(&long("a")), Some(7));
        assert_eq!(config.app_of_api_key(&long("c")), Some(8));
        // A prefix, a longer key and a one-byte difference do not match.
        assert_eq!(config.app_of_api_key(&long("a")[1..]), None);
        assert_eq!(config.app_of_api_key(&(long("a") + "a")), None);
        let mut near = long("b");
        near.replace_range(31.., "x");
        assert_eq!(config.app_of_api_key(&near), None);
        assert_eq!(config.app_of_api_key(""), None);

        // A short key fails validation and never matches anyway.
        let short = "z".repeat(MIN_SECRET_LEN - 1);
        config.apps[1].api_keys.push(short.clone());
        assert_eq!(
            config.validate(),
            Err(ConfigError::WeakApiKey {
                appid: 7,
                len: MIN_SECRET_LEN - 1
            })
        );
        assert_eq!(config.app_of_api_key(&short), None);
        config.apps[1].api_keys.clear();
        config.apps[1].hook = Some(super::super::HookConfig::new("ftp://x", long("h")));
        assert_eq!(config.validate(), Err(ConfigError::BadHookUrl { appid: 7 }));
        config.apps[1].hook = Some(super::super::HookConfig::new("https://x", short.clone()));
        assert_eq!(
            config.validate(),
            Err(ConfigError::WeakHookSecret {
                appid: 7,
                len: MIN_SECRET_LEN - 1
            })
        );
        config.apps[1].hook = Some(super::super::HookConfig::new("http://x", long("h")));
        assert_eq!(config.validate(), Ok(()));
        let exact = "y".repeat(MIN_SECRET_LEN);
        config.apps[1].api_keys = vec![exact.clone()];
        assert_eq!(config.app_of_api_key(&exact), Some(7));
    }
}
