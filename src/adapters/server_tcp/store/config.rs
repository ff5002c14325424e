//! Where a store is: its Redis instances (one, or several sharing the
//! objects), a namespace, timeouts, a lease owner.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use redis::{ConnectionAddr, RedisConnectionInfo};

use super::StoreError;
use crate::server::{StoreKey, MAX_SHARDS};

/// Where the store is: one Redis URL, or several separated by commas (the
/// objects spread over them, see the [module](super) documentation), and a
/// namespace.
///
/// Its [`Debug`](fmt::Debug) and [`Display`](fmt::Display), and
/// [`StoreConfig::url`], never show a password.
#[derive(Clone)]
pub struct StoreConfig {
    /// Each Redis of the store, by position; a narrowed configuration
    /// ([`StoreConfig::instance`]) keeps one.
    pub(super) endpoints: Vec<Endpoint>,
    /// How many instances the whole store has (the objects are spread
    /// over this many, whatever `endpoints` keeps).
    pub(super) instances: usize,
    /// The URLs as shown, joined by commas.
    shown: String,
    pub(super) namespace: String,
    pub(super) ca_pem: Option<Arc<[u8]>>,
    pub(super) connect_timeout: Duration,
    pub(super) response_timeout: Duration,
    /// The lease owner whose writes are the only ones taken.
    pub(super) lease_owner: Option<String>,
}

/// One Redis of a store.
#[derive(Clone)]
pub(super) struct Endpoint {
    /// Its position among the store's instances.
    pub(super) position: usize,
    /// The URL as given (for equality only: never shown).
    given: String,
    /// The URL with its password (and a lone user name) replaced by `***`.
    pub(super) shown: String,
    pub(super) host: String,
    pub(super) port: u16,
    pub(super) tls: bool,
    pub(super) redis: RedisConnectionInfo,
}

impl StoreConfig {
    /// A store at `url`: `redis://[[user]:password@]host[:port][/db]`, or
    /// `rediss://…` for TLS (the server's certificate checked against the
    /// system roots, or [`StoreConfig::with_ca_pem`]'s). Several such URLs
    /// separated by commas spread the store's objects over several Redis
    /// instances, by a hash of each object's name; their order and number
    /// are the store's from its first use on. Namespace `hummer`, 2 s to
    /// connect and 2 s for each reply.
    ///
    /// ```
    /// use hummer_channel::adapters::server_tcp::store::StoreConfig;
    ///
    /// let one = StoreConfig::new("redis://:secret@127.0.0.1:6379/0").unwrap();
    /// assert_eq!(one.instances(), 1);
    /// assert_eq!(one.url(), "redis://:***@127.0.0.1:6379/0");
    /// let two = StoreConfig::new("redis://10.0.0.1:6379,redis://10.0.0.2:6379").unwrap();
    /// assert_eq!(two.instances(), 2);
    /// assert_eq!(two.instance(1).url(), "redis://10.0.0.2:6379");
    /// ```
    pub fn new(url: &str) -> Result<StoreConfig, StoreError> {
        let endpoints = url
            .split(',')
            .map(str::trim)
            .enumerate()
            .map(|(position, url)| Endpoint::parse(position, url))
            .collect::<Result<Vec<_>, _>>()?;
        if endpoints.len() > usize::from(MAX_SHARDS) {
            return Err(StoreError::Invalid(format!(
                "{} Redis instances: at most {MAX_SHARDS}",
                endpoints.len()
            )));
        }
        for (i, a) in endpoints.iter().enumerate() {
            if let Some(b) = endpoints[..i].iter().find(|b| b.same_place(a)) {
                return Err(StoreError::Invalid(format!(
                    "{} is given twice (as instance {} and {})",
                    a.shown, b.position, a.position
                )));
            }
        }
        Ok(StoreConfig {
            instances: endpoints.len(),
            shown: shown_list(&endpoints),
            endpoints,
            namespace: "hummer".into(),
            ca_pem: None,
            connect_timeout: Duration::from_secs(2),
            response_timeout: Duration::from_secs(2),
            lease_owner: None,
        })
    }

    /// The key prefix (`hummer` by default): stores with different
    /// namespaces never see each other's objects.
    pub fn with_namespace(mut self, ns: &str) -> Self {
        self.namespace = ns.to_owned();
        self
    }

    /// Writes only while `owner` holds the namespace's lease
    /// ([`RedisStore::claim_lease`](super::RedisStore::claim_lease));
    /// otherwise they fail with [`StoreError::Fenced`]. One node of several
    /// sharing a store is thereby its only writer, even one that lost its
    /// lease without knowing.
    pub fn with_lease(mut self, owner: &str) -> Self {
        self.lease_owner = Some(owner.to_owned());
        self
    }

    /// The lease owner, if any.
    pub fn lease_owner(&self) -> Option<&str> {
        self.lease_owner.as_deref()
    }

    /// For `rediss://`: trust the CA certificates in `pem` instead of the
    /// system's roots.
    pub fn with_ca_pem(mut self, pem: &[u8]) -> Self {
        self.ca_pem = Some(pem.into());
        self
    }

    /// How long a connection may take to open (TCP, TLS, `AUTH`, `SELECT`)
    /// and how long any reply may take (2 s and 2 s by default). Past
    /// either, the call returns [`StoreError::Unavailable`].
    pub fn with_timeouts(mut self, connect: Duration, response: Duration) -> Self {
        self.connect_timeout = connect;
        self.response_timeout = response;
        self
    }

    /// The URLs (joined by commas), passwords replaced by `***` (fit for
    /// logs).
    pub fn url(&self) -> &str {
        &self.shown
    }

    /// The key prefix.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// How many Redis instances the store's objects are spread over.
    pub fn instances(&self) -> usize {
        self.instances
    }

    /// The instance that keeps `key`: the object's hub shard among
    /// [`instances`](Self::instances) shards. (So a server whose number of
    /// hub shards is a multiple of the number of instances keeps all of a
    /// shard's objects on one instance, and each batch is atomic.)
    pub fn instance_of(&self, key: &StoreKey) -> usize {
        usize::from(
            key.shard(u16::try_from(self.instances).unwrap_or(MAX_SHARDS))
                .0,
        )
    }

    /// The same store narrowed to its instance `position` (counting from
    /// 0; the last one past the end): a writer of one hub shard needs no
    /// other. Its objects are still placed among all the store's
    /// instances: a narrowed store refuses to write an object that is
    /// another instance's.
    pub fn instance(&self, position: usize) -> StoreConfig {
        let position = position.min(self.instances.saturating_sub(1));
        let endpoints: Vec<Endpoint> = self
            .endpoints
            .iter()
            .filter(|e| e.position == position)
            .cloned()
            .collect();
        StoreConfig {
            shown: shown_list(&endpoints),
            endpoints,
            ..self.clone()
        }
    }
}

fn shown_list(endpoints: &[Endpoint]) -> String {
    let shown: Vec<&str> = endpoints.iter().map(|e| e.shown.as_str()).collect();
    shown.join(",")
}

impl Endpoint {
    fn parse(position: usize, url: &str) -> Result<Endpoint, StoreError> {
        let shown = redact(url);
        let (tls, rest) = if let Some(rest) = strip_scheme(url, "rediss://") {
            (true, rest)
        } else if let Some(rest) = strip_scheme(url, "redis://") {
            (false, rest)
        } else {
            return Err(StoreError::Invalid(format!(
                "{shown}: not a redis:// or rediss:// URL"
            )));
        };
        // redis-rs reads both forms alike; the TLS is this module's.
        let plain = format!("redis://{rest}");
        let info = redis::IntoConnectionInfo::into_connection_info(plain.as_str())
            .map_err(|e| StoreError::Invalid(format!("{shown}: {e}")))?;
        let (host, port) = match info.addr() {
            ConnectionAddr::Tcp(host, port) => (host.clone(), *port),
            _ => {
                return Err(StoreError::Invalid(format!(
                    "{shown}: only TCP addresses are supported"
                )))
            }
        };
        if host.is_empty() {
            return Err(StoreError::Invalid(format!("{shown}: no host")));
        }
        Ok(Endpoint {
            position,
            given: url.to_owned(),
            shown,
            host,
            port,
            tls,
            // CLIENT SETINFO is Redis 7.2's: older servers refuse it.
            redis: info.redis_settings().clone().set_skip_set_lib_name(),
        })
    }

    /// The same Redis database (two instances of one store must not be).
    fn same_place(&self, other: &Endpoint) -> bool {
        self.host.eq_ignore_ascii_case(&other.host)
            && self.port == other.port
            && self.redis.db() == other.redis.db()
    }
}

/// Two configurations are equal when their URLs (passwords included),
/// namespaces, CAs and timeouts are.
impl PartialEq for StoreConfig {
    fn eq(&self, other: &Self) -> bool {
        let given = |c: &StoreConfig| -> Vec<(usize, String)> {
            c.endpoints
                .iter()
                .map(|e| (e.position, e.given.clone()))
                .collect()
        };
        (
            given(self),
            self.instances,
            &self.namespace,
            &self.ca_pem,
            self.connect_timeout,
            self.response_timeout,
        ) == (
            given(other),
            other.instances,
            &other.namespace,
            &other.ca_pem,
            other.connect_timeout,
            other.response_timeout,
        )
    }
}

impl Eq for StoreConfig {}

impl fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreConfig")
            .field("url", &self.shown)
            .field("instances", &self.instances)
            .field("namespace", &self.namespace)
            .field("ca_pem", &self.ca_pem.is_some())
            .field("connect_timeout", &self.connect_timeout)
            .field("response_timeout", &self.response_timeout)
            .finish()
    }
}

impl fmt::Display for StoreConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (namespace {})", self.shown, self.namespace)
    }
}

fn strip_scheme<'a>(url: &'a str, scheme: &str) -> Option<&'a str> {
    let head = url.get(..scheme.len())?;
    head.eq_ignore_ascii_case(scheme)
        .then(|| &url[scheme.len()..])
}

/// `url` with the user information's secret replaced by `***`: the part
/// after `user:`, or the whole of it when it has no `:` (a lone name may be
/// a password too).
fn redact(url: &str) -> String {
    let Some(start) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let rest = &url[start..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let Some(at) = authority.rfind('@') else {
        return url.to_owned();
    };
    let userinfo = &authority[..at];
    let user = match userinfo.find(':') {
        Some(colon) => &userinfo[..colon + 1],
        None => "",
    };
    format!("{}{user}***{}", &url[..start], &rest[at..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_hide_their_password() {
        assert_eq!(redact("redis://:hunter2@host:1/0"), "redis://:***@host:1/0");
        assert_eq!(
            redact("rediss://user:p%40ss@host"),
            "rediss://user:***@host"
        );
        assert_eq!(redact("redis://secret@host/2"), "redis://***@host/2");
        assert_eq!(redact("redis://host:6379"), "redis://host:6379");
        let config = StoreConfig::new("redis://:hunter2@127.0.0.1:6390/3").unwrap();
        assert!(!format!("{config:?}").contains("hunter2"));
        assert!(!config.to_string().contains("hunter2"));
        assert!(!config.url().contains("hunter2"));
        assert_eq!(config.endpoints[0].redis.password(), Some("hunter2"));
        assert_eq!(config.endpoints[0].redis.db(), 3);
        assert_eq!(config.namespace(), "hummer");
        let err = StoreConfig::new("http://:hunter2@host").unwrap_err();
        assert!(matches!(&err, StoreError::Invalid(_)));
        assert!(!err.to_string().contains("hunter2"));
        assert!(StoreConfig::new("REDISS://host").unwrap().endpoints[0].tls);
        assert!(matches!(
            StoreConfig::new("redis+unix:///tmp/r.sock"),
            Err(StoreError::Invalid(_))
        ));
    }

    #[test]
    fn several_urls_make_one_store_over_several_instances() {
        let config =
            StoreConfig::new("redis://:pw1@a:1, rediss://:pw2@b:2/3,redis://a:1/1").unwrap();
        assert_eq!(config.instances(), 3);
        assert_eq!(
            config.url(),
            "redis://:***@a:1,rediss://:***@b:2/3,redis://a:1/1"
        );
        assert!(!format!("{config:?}").contains("pw"));
        let b = config.instance(1);
        assert_eq!((b.instances(), b.url()), (3, "rediss://:***@b:2/3"));
        assert_eq!(b.endpoints.len(), 1);
        assert_eq!(b.endpoints[0].position, 1);
        assert!(b.endpoints[0].tls);
        assert_eq!(config.instance(7).url(), "redis://a:1/1");
        assert_eq!(config.lease_owner(), None);
        let leased = config.clone().with_lease("node-a");
        assert_eq!(leased.lease_owner(), Some("node-a"));
        assert_eq!(leased.instance(2).lease_owner(), Some("node-a"));
        assert_ne!(b, config);
        assert_eq!(b, config.instance(1));
        // The same database twice, or a bad one among good ones.
        for bad in [
            "redis://a:1,redis://A:1",
            "redis://a:1/2,redis://:x@a:1/2",
            "redis://a:1,",
            "redis://a:1,http://b:2",
        ] {
            assert!(
                matches!(StoreConfig::new(bad), Err(StoreError::Invalid(_))),
                "{bad}"
            );
        }
        let many: Vec<String> = (0..=MAX_SHARDS).map(|p| format!("redis://h:{p}")).collect();
        assert!(StoreConfig::new(&many.join(",")).is_err());
        assert_eq!(
            StoreConfig::new(&many[..usize::from(MAX_SHARDS)].join(","))
                .unwrap()
                .instances(),
            usize::from(MAX_SHARDS)
        );
    }

    #[test]
    fn each_object_lives_on_its_hub_shards_instance() {
        use crate::server::{channel_shard, uid_shard};
        let config = StoreConfig::new("redis://a:1,redis://b:1,redis://c:1").unwrap();
        let mut seen = [0; 3];
        for uid in 0..300u64 {
            let inbox = StoreKey::Inbox { appid: 7, uid };
            let at = config.instance_of(&inbox);
            assert_eq!(at, usize::from(uid_shard(7, uid, 3).0));
            // A server with 6 hub shards keeps each shard on one instance.
            assert_eq!(at, usize::from(uid_shard(7, uid, 6).0) % 3);
            let instance = StoreKey::Instance {
                appid: 7,
                uid,
                instance: 9,
            };
            assert_eq!(config.instance_of(&instance), at);
            seen[at] += 1;
            let id = format!("room-{uid}");
            let channel = StoreKey::Channel {
                appid: 7,
                region: 1,
                id: id.clone(),
            };
            assert_eq!(
                config.instance_of(&channel),
                usize::from(channel_shard(7, 1, &id, 3).0)
            );
        }
        assert!(seen.iter().all(|&n| n > 60), "{seen:?}");
        let one = StoreConfig::new("redis://a:1").unwrap();
        assert_eq!(one.instance_of(&StoreKey::Inbox { appid: 7, uid: 5 }), 0);
    }
}
