//! The durable store of the hubs' state in Redis.
//!
//! A hub shard gathers the changes of its lasting state in
//! [`StoreBatch`]es; a [`RedisStore`] makes
//! each one durable with [`RedisStore::write`], and at start
//! [`RedisStore::load`] reads every stored object back.
//!
//! # Key layout
//!
//! Every key starts with the store's namespace `ns` ([`StoreConfig::with_namespace`],
//! `hummer` by default), so several deployments can share one Redis:
//!
//! | key | type | what |
//! | --- | --- | --- |
//! | `{ns}:gen` | string | the store's generation: a random id, set (`SET NX`) by the first store to find none |
//! | `{ns}:keys:c`, `{ns}:keys:i`, `{ns}:keys:n` | set | the [`StoreKey::name`]s of the channels, inboxes and instances |
//! | `{ns}:r:{name}` | string | the object's record |
//! | `{ns}:e:{name}` | stream | the object's entries: entry ID `{seq}-0`, one field `d` holding the entry |
//!
//! The writes map to commands one to one: `Put` is `SET r` + `SADD keys`,
//! `Delete` is `DEL r e` + `SREM keys`, `Append` is `XADD e {seq}-0 d ENTRY`,
//! `TrimBelow` is `XTRIM e MINID {seq}`. A stream whose object has no
//! member in its set (an `Append` without a `Put`) is never loaded.
//!
//! # Atomicity and order
//!
//! A batch is sent as Lua scripts (`EVAL`, one round trip each) of at
//! most 4096 writes (most batches take one; a whole state written again
//! takes several), each checking the lease and the generation and then
//! making its writes in order, so no other client sees one half done and
//! batches apply in the order they are written. Redis does not roll a script back: a write that fails (an
//! `Append` whose sequence number is not above the stream's last and is
//! not the same entry again, a key of the wrong type) stops the script
//! there, and the writes **before** it stay applied, none after.
//! [`RedisStore::write`] then returns [`StoreError::Invalid`] naming the
//! failed write; such a batch is a bug of its producer, and the store is
//! best rebuilt from the producer's state. A batch written again after an
//! `Unavailable` that had in fact been applied goes through (its appends
//! find their entries already there).
//!
//! # Losing Redis
//!
//! An I/O error or a timeout drops the connection
//! ([`StoreError::Unavailable`]); the next call opens a new one. On every
//! new connection the store reads `{ns}:gen` back, and every write's
//! script checks it before writing anything: if it is missing or not the
//! generation this store saw ([`RedisStore::load`]'s, or one given with
//! [`RedisStore::expect_generation`]), Redis lost what was written (a
//! restart without persistence, a flushed database, a failover to an empty
//! replica, even under a connection that stayed open). The store then
//! adopts the current generation (setting a fresh one when there is none)
//! and returns [`StoreError::Lost`] once: the caller must write its whole
//! state again. [`RedisStore::check`] asks the same without writing. With persistence (AOF with
//! `appendfsync always`) a restart keeps the generation and the data, and
//! the next write simply goes through.
//!
//! Whether a batch that got `Unavailable` was applied is unknown (the
//! connection may have dropped after `EXEC` ran): the caller retries it
//! or, safer, writes its state again.
//!
//! # Executor
//!
//! Everything runs on the calling task: the store opens its TCP connection
//! with smol (TLS with rustls and ring for `rediss://`) and drives redis-rs's
//! connection itself while a call waits, so it needs no tokio runtime and
//! no background task; a [`RedisStore`] works from a `LocalExecutor`'s task.
//!
//! ```no_run
//! use hummer_channel::adapters::server_tcp::store::{RedisStore, StoreConfig};
//! use hummer_channel::server::{StoreBatch, StoreKey, StoreWrite};
//!
//! smol::block_on(async {
//!     let config = StoreConfig::new("redis://:secret@127.0.0.1:6379/0")?.with_namespace("prod");
//!     let mut store = RedisStore::connect(&config).await?;
//!     let objects = store.load().await?;
//!     println!("{} objects ({} skipped)", objects.len(), store.skipped());
//!     let key = StoreKey::Inbox { appid: 1, uid: 42 };
//!     let put = StoreWrite::Put { key, record: "state".into() };
//!     store.write(&StoreBatch::new(1, vec![put])).await?;
//!     Ok::<(), hummer_channel::adapters::server_tcp::store::StoreError>(())
//! })
//! .unwrap();
//! ```

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_lite::future;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, ConnectionAddr, RedisConnectionInfo, RedisError, Value};

use crate::server::{StoreBatch, StoreKey, StoreKind, StoreWrite, StoredObject};

/// How many objects [`RedisStore::load`] reads per round trip.
const LOAD_CHUNK: usize = 512;

/// Where the store is: a Redis URL and a namespace.
///
/// Its [`Debug`](fmt::Debug) and [`Display`](fmt::Display), and
/// [`StoreConfig::url`], never show the password.
#[derive(Clone)]
pub struct StoreConfig {
    /// The URL as given (for equality only: never shown).
    given: String,
    /// The URL with its password (and a lone user name) replaced by `***`.
    shown: String,
    host: String,
    port: u16,
    tls: bool,
    redis: RedisConnectionInfo,
    namespace: String,
    ca_pem: Option<Arc<[u8]>>,
    connect_timeout: Duration,
    response_timeout: Duration,
    /// The lease owner whose writes are the only ones taken.
    lease_owner: Option<String>,
}

impl StoreConfig {
    /// A store at `url`: `redis://[[user]:password@]host[:port][/db]`, or
    /// `rediss://…` for TLS (the server's certificate checked against the
    /// system roots, or [`StoreConfig::with_ca_pem`]'s). Namespace `hummer`,
    /// 2 s to connect and 2 s for each reply.
    pub fn new(url: &str) -> Result<StoreConfig, StoreError> {
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
        Ok(StoreConfig {
            given: url.to_owned(),
            shown,
            host,
            port,
            tls,
            // CLIENT SETINFO is Redis 7.2's: older servers refuse it.
            redis: info.redis_settings().clone().set_skip_set_lib_name(),
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
    /// ([`RedisStore::claim_lease`]); otherwise they fail with
    /// [`StoreError::Fenced`]. One node of several sharing a store is
    /// thereby its only writer, even one that lost its lease without
    /// knowing.
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

    /// The URL, its password replaced by `***` (fit for logs).
    pub fn url(&self) -> &str {
        &self.shown
    }

    /// The key prefix.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }
}

/// Two configurations are equal when their URLs (passwords included),
/// namespaces, CAs and timeouts are.
impl PartialEq for StoreConfig {
    fn eq(&self, other: &Self) -> bool {
        (
            &self.given,
            &self.namespace,
            &self.ca_pem,
            self.connect_timeout,
            self.response_timeout,
        ) == (
            &other.given,
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

/// Why a store call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Redis could not be reached or did not answer in time (I/O error,
    /// refused connection, timeout, a server still loading its data): try
    /// again later. Whether a write that got this was applied is unknown.
    #[error("Redis unavailable: {0}")]
    Unavailable(String),
    /// Redis lost the data this store wrote (it restarted without
    /// persistence, or was flushed): the call did nothing, and the caller
    /// must write its whole state again.
    #[error("Redis lost the stored data: write everything again")]
    Lost,
    /// A bad URL, a command Redis refused, or stored data that does not
    /// decode.
    #[error("Redis store: {0}")]
    Invalid(String),
    /// Another node holds the namespace's lease (see
    /// [`StoreConfig::with_lease`]): nothing was written, and this node
    /// must stop serving.
    #[error("another node holds the store's lease")]
    Fenced,
}

/// Who holds a namespace's lease ([`RedisStore::claim_lease`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Lease {
    /// This store's owner.
    Held,
    /// Another owner (its name).
    HeldBy(String),
}

/// The node that holds the store's lease and takes gateway nodes
/// ([`RedisStore::hub_node`]).
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct HubNode {
    /// Its name (the lease owner's).
    pub node: String,
    /// Where it takes gateway nodes (`host:port`).
    pub address: String,
    /// What a gateway node shows it to be let in.
    pub secret: String,
}

impl fmt::Debug for HubNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the secret.
        f.debug_struct("HubNode")
            .field("node", &self.node)
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

/// The most writes one script makes (a batch may take several).
const WRITES_PER_SCRIPT: usize = 4096;

/// A batch's writes, fenced by the lease and by the store's generation:
/// `ARGV` is the lease key (empty: none), its owner, the namespace, the
/// generation the writer saw (empty: none yet), then each write as `P name
/// set record`, `D name set`, `A name seq entry` or `T name seq`. Returns
/// how many writes it made; stops at the first that fails (`write N: …`).
/// An append of an entry already stored with the same content succeeds
/// (a batch retried after an `Unavailable` that had in fact applied it).
/// A generation that is no longer the store's (Redis lost the data, with
/// or without this connection dropping: a flush, a restart) writes
/// nothing (`LOST`).
const WRITE_SCRIPT: &str = r#"
if ARGV[1] ~= '' and redis.call('GET', ARGV[1]) ~= ARGV[2] then
  return redis.error_reply('FENCED another node holds the lease')
end
if ARGV[4] ~= '' and redis.call('GET', ARGV[3] .. ':gen') ~= ARGV[4] then
  return redis.error_reply('LOST the store lost its data')
end
local ns, i, n = ARGV[3], 5, 0
local function call(...)
  local r = redis.pcall(...)
  if type(r) == 'table' and r.err then
    error({err = 'ERR write ' .. n .. ': ' .. r.err})
  end
end
while i <= #ARGV do
  local op, name = ARGV[i], ARGV[i + 1]
  if op == 'P' then
    call('SET', ns .. ':r:' .. name, ARGV[i + 3])
    call('SADD', ARGV[i + 2], name)
    i = i + 4
  elseif op == 'D' then
    call('DEL', ns .. ':r:' .. name, ns .. ':e:' .. name)
    call('SREM', ARGV[i + 2], name)
    i = i + 3
  elseif op == 'A' then
    local key, id = ns .. ':e:' .. name, ARGV[i + 2] .. '-0'
    local r = redis.pcall('XADD', key, id, 'd', ARGV[i + 3])
    if type(r) == 'table' and r.err then
      -- The same entry already there (a batch written again after its
      -- reply was lost) is this write done; anything else is refused.
      local same = redis.pcall('XRANGE', key, id, id)
      if type(same) ~= 'table' or same.err or #same ~= 1
          or same[1][2][1] ~= 'd' or same[1][2][2] ~= ARGV[i + 3] then
        error({err = 'ERR write ' .. n .. ': ' .. r.err})
      end
    end
    i = i + 4
  elseif op == 'T' then
    call('XTRIM', ns .. ':e:' .. name, 'MINID', ARGV[i + 2])
    i = i + 3
  else
    return redis.error_reply('ERR write ' .. n .. ': unknown')
  end
  n = n + 1
end
return n
"#;

/// Takes or renews the lease `KEYS[1]` for `ARGV[1]` for `ARGV[2]` ms:
/// 1 when held, else the holder's name.
const LEASE_SCRIPT: &str = r#"
local holder = redis.call('GET', KEYS[1])
if holder == false or holder == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return holder
"#;

/// Sets the hub's address `KEYS[2]` to `ARGV[2]` and the cluster's secret
/// `KEYS[3]` to `ARGV[3]` if the lease `KEYS[1]` is `ARGV[1]`'s: 1 if so.
const ANNOUNCE_SCRIPT: &str = r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
redis.call('SET', KEYS[2], ARGV[2])
redis.call('SET', KEYS[3], ARGV[3])
return 1
"#;

/// Whether `e` is worth retrying later (else the request itself is wrong).
fn from_redis(e: RedisError) -> StoreError {
    use redis::{ErrorKind, ServerErrorKind};
    let transient = e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || matches!(
            e.kind(),
            ErrorKind::Server(
                ServerErrorKind::BusyLoading
                    | ServerErrorKind::TryAgain
                    | ServerErrorKind::MasterDown
                    | ServerErrorKind::ReadOnly
                    | ServerErrorKind::ClusterDown
            )
        );
    if transient {
        StoreError::Unavailable(e.to_string())
    } else {
        StoreError::Invalid(e.to_string())
    }
}

type Driver = Pin<Box<dyn Future<Output = ()> + Send>>;

/// One open connection and the future that reads and writes its socket.
struct Conn {
    redis: MultiplexedConnection,
    driver: Driver,
    /// Whether this connection read the generation back.
    checked: bool,
    /// Whether a request on it failed below the replies (I/O, timeout, a
    /// reply that does not parse): it is not used again.
    broken: bool,
}

/// Redis as the hubs' durable store (see the [module](self) documentation).
pub struct RedisStore {
    config: StoreConfig,
    conn: Option<Conn>,
    /// The generation this store saw last, once it read one.
    generation: Option<String>,
    skipped: usize,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("config", &self.config)
            .field("connected", &self.conn.is_some())
            .field("generation", &self.generation)
            .finish()
    }
}

impl RedisStore {
    /// A store connected to `config`'s Redis (within its connect timeout,
    /// 2 s by default). Call [`RedisStore::load`] before the first write:
    /// it records the store's generation.
    pub async fn connect(config: &StoreConfig) -> Result<RedisStore, StoreError> {
        let mut store = RedisStore::new(config);
        store.conn = Some(open(config).await?);
        Ok(store)
    }

    /// A store for `config`'s Redis that connects at its first call (and
    /// again after any call that dropped the connection), for callers
    /// that retry: it never fails to exist.
    pub fn new(config: &StoreConfig) -> RedisStore {
        RedisStore {
            config: config.clone(),
            conn: None,
            generation: None,
            skipped: 0,
        }
    }

    /// Its configuration.
    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    /// How many members of the key sets the last [`RedisStore::load`] left
    /// out: a name that [`StoreKey::parse`] refuses (or of another kind
    /// than its set's), or an object without a record.
    pub fn skipped(&self) -> usize {
        self.skipped
    }

    /// Every object stored under the namespace, ordered by key, each with
    /// its entries by ascending sequence number; members that do not make
    /// an object are skipped and counted ([`RedisStore::skipped`]).
    /// Records the store's generation, creating it if there is none; never
    /// returns [`StoreError::Lost`] (what it returns is what there is).
    pub async fn load(&mut self) -> Result<Vec<StoredObject>, StoreError> {
        let result = self.load_inner().await;
        self.forget_on_failure(&result);
        result
    }

    async fn load_inner(&mut self) -> Result<Vec<StoredObject>, StoreError> {
        let ns = self.config.namespace.clone();
        let timeout = self.config.response_timeout;
        let conn = self.ready().await?;
        let generation = adopt_generation(conn, &ns, timeout).await?;
        conn.checked = true;
        self.generation = Some(generation);
        let conn = self.conn.as_mut().expect("ready() leaves a connection");

        let kinds = [
            (StoreKind::Channel, "c"),
            (StoreKind::Inbox, "i"),
            (StoreKind::Instance, "n"),
        ];
        let mut pipe = redis::pipe();
        for (_, tag) in kinds {
            pipe.cmd("SMEMBERS").arg(format!("{ns}:keys:{tag}"));
        }
        let sets = send(conn, &pipe, 0, kinds.len(), timeout).await?;
        let mut skipped = 0;
        let mut keys = Vec::new();
        for ((kind, tag), set) in kinds.iter().zip(sets) {
            for member in members(set, &format!("{ns}:keys:{tag}"))? {
                match std::str::from_utf8(&member).ok().and_then(StoreKey::parse) {
                    Some(key) if key.kind() == *kind => keys.push(key),
                    _ => skipped += 1,
                }
            }
        }
        keys.sort();
        keys.dedup();

        let mut objects = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(LOAD_CHUNK) {
            let mut pipe = redis::pipe();
            for key in chunk {
                let name = key.name();
                pipe.cmd("GET").arg(format!("{ns}:r:{name}"));
                pipe.cmd("XRANGE")
                    .arg(format!("{ns}:e:{name}"))
                    .arg("-")
                    .arg("+");
            }
            let replies = send(conn, &pipe, 0, chunk.len() * 2, timeout).await?;
            if replies.len() != chunk.len() * 2 {
                return Err(StoreError::Invalid(format!(
                    "{} replies to {} commands",
                    replies.len(),
                    chunk.len() * 2
                )));
            }
            let mut replies = replies.into_iter();
            for key in chunk {
                let (Some(record), Some(entries)) = (replies.next(), replies.next()) else {
                    break;
                };
                let name = key.name();
                // One damaged object (a key of the wrong type, entries
                // not as written) is skipped and counted: the others load.
                let record = match record {
                    Value::Nil => {
                        skipped += 1;
                        continue;
                    }
                    Value::BulkString(b) => Bytes::from(b),
                    Value::ServerError(e) if e.code() == "WRONGTYPE" => {
                        skipped += 1;
                        continue;
                    }
                    other => {
                        return Err(StoreError::Invalid(format!(
                            "{ns}:r:{name}: {}",
                            describe(&other)
                        )))
                    }
                };
                let entries = match entries {
                    Value::ServerError(e) if e.code() != "WRONGTYPE" => {
                        return Err(StoreError::Invalid(format!(
                            "{ns}:e:{name}: {}",
                            describe(&Value::ServerError(e))
                        )))
                    }
                    entries => match stream_entries(entries) {
                        Ok(entries) => entries,
                        Err(why) => {
                            log!(warn, "{ns}:e:{name} skipped: {why}");
                            skipped += 1;
                            continue;
                        }
                    },
                };
                objects.push(StoredObject::new(key.clone(), record, entries));
            }
        }
        self.skipped = skipped;
        Ok(objects)
    }

    /// Makes `batch` durable: all its writes in one script, in
    /// order (see the [module](self) documentation for what a failed
    /// command inside leaves).
    ///
    /// [`StoreError::Lost`] when this call's new connection found that
    /// Redis lost the data (the batch was not written: write everything
    /// again, as new batches); [`StoreError::Unavailable`] on I/O errors
    /// and timeouts (the connection is dropped and the next call opens a
    /// new one); [`StoreError::Invalid`] naming the first write Redis
    /// refused. (A store that never loaded adopts the generation it finds
    /// on its first write: it has seen none to lose.)
    pub async fn write(&mut self, batch: &StoreBatch) -> Result<(), StoreError> {
        let result = self.write_inner(batch).await;
        self.forget_on_failure(&result);
        result
    }

    async fn write_inner(&mut self, batch: &StoreBatch) -> Result<(), StoreError> {
        let ns = self.config.namespace.clone();
        let timeout = self.config.response_timeout;
        // A new connection reads the generation back first.
        if !self.ready().await?.checked {
            self.check_inner().await?;
        }
        let conn = self.conn.as_mut().expect("ready() leaves a connection");

        // Scripts of at most WRITES_PER_SCRIPT writes (a batch that writes
        // a whole state again can be large; one script must end within the
        // reply timeout): each checks the lease and the generation, then
        // makes its writes in order, nothing else run in between.
        let lease = match &self.config.lease_owner {
            Some(owner) => (format!("{ns}:lease"), owner.clone()),
            None => (String::new(), String::new()),
        };
        for (c, chunk) in batch.writes.chunks(WRITES_PER_SCRIPT).enumerate() {
            let first = c * WRITES_PER_SCRIPT;
            let mut eval = redis::cmd("EVAL");
            eval.arg(WRITE_SCRIPT)
                .arg(0)
                .arg(&lease.0)
                .arg(&lease.1)
                .arg(&ns)
                .arg(self.generation.as_deref().unwrap_or(""));
            for (i, write) in chunk.iter().enumerate() {
                match write {
                    StoreWrite::Put { key, record } => {
                        eval.arg("P")
                            .arg(key.name())
                            .arg(set_of(&ns, key))
                            .arg(record.as_ref());
                    }
                    StoreWrite::Delete { key } => {
                        eval.arg("D").arg(key.name()).arg(set_of(&ns, key));
                    }
                    StoreWrite::Append { key, seq, entry } => {
                        eval.arg("A")
                            .arg(key.name())
                            .arg(seq.to_string())
                            .arg(entry.as_ref());
                    }
                    StoreWrite::TrimBelow { key, seq } => {
                        eval.arg("T").arg(key.name()).arg(seq.to_string());
                    }
                    // StoreWrite is non_exhaustive: a write this store does
                    // not know cannot be made durable.
                    #[allow(unreachable_patterns)]
                    other => {
                        return Err(StoreError::Invalid(format!(
                            "batch {}: write {} is not supported: {other:?}",
                            batch.number,
                            first + i
                        )))
                    }
                }
            }
            let mut pipe = redis::pipe();
            pipe.add_command(eval);
            let mut replies = send(conn, &pipe, 0, 1, timeout).await?;
            match replies.pop().unwrap_or(Value::Nil) {
                Value::Int(n) if usize::try_from(n).ok() == Some(chunk.len()) => {}
                Value::ServerError(e) if e.code() == "FENCED" => return Err(StoreError::Fenced),
                Value::ServerError(e) if e.code() == "LOST" => {
                    self.generation = Some(adopt_generation(conn, &ns, timeout).await?);
                    return Err(StoreError::Lost);
                }
                Value::ServerError(e) => {
                    // "write N: …" names the write the script stopped at.
                    let details = e.details().unwrap_or("");
                    let at = details
                        .strip_prefix("write ")
                        .and_then(|d| d.split(':').next())
                        .and_then(|n| n.parse::<usize>().ok());
                    return Err(StoreError::Invalid(format!(
                        "batch {}: {} failed, the writes before it applied, none after: {} {details}",
                        batch.number,
                        write_name(at.and_then(|i| batch.writes.get(first + i))),
                        e.code(),
                    )));
                }
                other => {
                    return Err(StoreError::Invalid(format!(
                        "batch {}: the write script answered {}",
                        batch.number,
                        describe(&other)
                    )))
                }
            }
        }
        Ok(())
    }

    /// The generation this store saw last ([`RedisStore::load`] records
    /// it), if any.
    pub fn generation(&self) -> Option<&str> {
        self.generation.as_deref()
    }

    /// Takes `generation` (another store's [`RedisStore::generation`],
    /// the one that loaded what the caller holds) as the one this store
    /// saw: a store that lost it since is [`StoreError::Lost`] to the
    /// next [`RedisStore::write`] or [`RedisStore::check`].
    pub fn expect_generation(&mut self, generation: &str) {
        self.generation = Some(generation.to_owned());
    }

    /// Reads the store's generation back: [`StoreError::Lost`] (once) when
    /// it is not the one this store saw, as [`RedisStore::write`] would
    /// say. A writer with nothing to write calls it now and then, so that
    /// Redis losing its data is noticed without waiting for a change.
    pub async fn check(&mut self) -> Result<(), StoreError> {
        let result = self.check_inner().await;
        self.forget_on_failure(&result);
        result
    }

    async fn check_inner(&mut self) -> Result<(), StoreError> {
        let ns = self.config.namespace.clone();
        let timeout = self.config.response_timeout;
        let conn = self.ready().await?;
        let current = adopt_generation(conn, &ns, timeout).await?;
        conn.checked = true;
        let lost = self.generation.as_ref().is_some_and(|g| *g != current);
        self.generation = Some(current);
        if lost {
            return Err(StoreError::Lost);
        }
        Ok(())
    }

    /// The namespace's generation now, if it has one (a store loaded or
    /// wrote since Redis last lost its data), without adopting it.
    pub async fn read_generation(&mut self) -> Result<Option<String>, StoreError> {
        self.get_text("gen").await
    }

    /// The text at `{ns}:{key}`, if set.
    async fn get_text(&mut self, key: &str) -> Result<Option<String>, StoreError> {
        let key = format!("{}:{key}", self.config.namespace);
        let mut pipe = redis::pipe();
        pipe.cmd("GET").arg(&key);
        match self.round_trip(&pipe, 0, 1).await?.pop() {
            Some(Value::Nil) => Ok(None),
            Some(Value::BulkString(b)) => Ok(Some(String::from_utf8_lossy(&b).into_owned())),
            other => Err(StoreError::Invalid(format!(
                "GET {key}: {}",
                describe(&other.unwrap_or(Value::Nil))
            ))),
        }
    }

    /// Claims the namespace's lease for [`StoreConfig::with_lease`]'s
    /// owner for `ttl` (or renews it when the owner holds it): whether it
    /// holds it now, and if not, who does. Without a lease owner, always
    /// held.
    pub async fn claim_lease(&mut self, ttl: Duration) -> Result<Lease, StoreError> {
        let Some(owner) = self.config.lease_owner.clone() else {
            return Ok(Lease::Held);
        };
        let key = format!("{}:lease", self.config.namespace);
        let mut eval = redis::cmd("EVAL");
        eval.arg(LEASE_SCRIPT)
            .arg(1)
            .arg(&key)
            .arg(&owner)
            .arg(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1));
        let mut pipe = redis::pipe();
        pipe.add_command(eval);
        match self
            .round_trip(&pipe, 0, 1)
            .await?
            .pop()
            .unwrap_or(Value::Nil)
        {
            Value::Int(1) => Ok(Lease::Held),
            Value::BulkString(other) => Ok(Lease::HeldBy(String::from_utf8_lossy(&other).into())),
            other => Err(StoreError::Invalid(format!(
                "the lease script answered {}",
                describe(&other)
            ))),
        }
    }

    /// Tells the cluster that this store's lease owner, the hub node,
    /// takes gateway nodes at `address` (`{ns}:hub` = `OWNER ADDRESS`)
    /// with `secret` (`{ns}:secret`): a node that can read the store
    /// learns it, and nothing else can join. Only while the owner holds
    /// the lease (in the same script): whether it did. Each new hub node
    /// sets a secret of its own.
    pub async fn announce_hub(&mut self, address: &str, secret: &str) -> Result<bool, StoreError> {
        let owner = self.config.lease_owner.clone().unwrap_or_default();
        let ns = self.config.namespace.clone();
        let mut eval = redis::cmd("EVAL");
        eval.arg(ANNOUNCE_SCRIPT)
            .arg(3)
            .arg(format!("{ns}:lease"))
            .arg(format!("{ns}:hub"))
            .arg(format!("{ns}:secret"))
            .arg(&owner)
            .arg(format!("{owner} {address}"))
            .arg(secret);
        let mut pipe = redis::pipe();
        pipe.add_command(eval);
        match self.round_trip(&pipe, 0, 1).await?.pop() {
            Some(Value::Int(n)) => Ok(n == 1),
            other => Err(StoreError::Invalid(format!(
                "the announce script answered {}",
                describe(&other.unwrap_or(Value::Nil))
            ))),
        }
    }

    /// Who holds the namespace's lease now, if anyone (without claiming it).
    pub async fn lease_holder(&mut self) -> Result<Option<String>, StoreError> {
        self.get_text("lease").await
    }

    /// The hub node gateway nodes connect to, and the cluster's secret:
    /// `None` while no node both holds the lease and announced itself
    /// (an announcement by a node whose lease lapsed is not taken).
    pub async fn hub_node(&mut self) -> Result<Option<HubNode>, StoreError> {
        let ns = self.config.namespace.clone();
        let mut pipe = redis::pipe();
        for key in ["lease", "hub", "secret"] {
            pipe.cmd("GET").arg(format!("{ns}:{key}"));
        }
        let replies = self.round_trip(&pipe, 0, 3).await?;
        let text = |v: &Value| match v {
            Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        };
        let [lease, hub, secret] = [0, 1, 2].map(|i| replies.get(i).and_then(text));
        let (Some(lease), Some(hub), Some(secret)) = (lease, hub, secret) else {
            return Ok(None);
        };
        let Some((node, address)) = hub.split_once(' ') else {
            return Ok(None);
        };
        Ok((node == lease).then(|| HubNode {
            node: node.to_owned(),
            address: address.to_owned(),
            secret,
        }))
    }

    /// Sends `pipe` (its first `skip` replies ignored, `n` kept) on the
    /// open connection, dropping it on failure.
    async fn round_trip(
        &mut self,
        pipe: &redis::Pipeline,
        skip: usize,
        n: usize,
    ) -> Result<Vec<Value>, StoreError> {
        let timeout = self.config.response_timeout;
        let result = match self.ready().await {
            Ok(conn) => send(conn, pipe, skip, n, timeout).await,
            Err(e) => Err(e),
        };
        self.forget_on_failure(&result);
        result
    }

    /// The open connection, or a new one if there is none or its socket
    /// closed since the last call.
    async fn ready(&mut self) -> Result<&mut Conn, StoreError> {
        if let Some(conn) = &mut self.conn {
            // A closed socket ends the driver: polling it once reads
            // whatever end of stream arrived since.
            if conn.broken || future::poll_once(conn.driver.as_mut()).await.is_some() {
                self.conn = None;
            }
        }
        if self.conn.is_none() {
            self.conn = Some(open(&self.config).await?);
        }
        Ok(self.conn.as_mut().expect("just set"))
    }

    /// Drops the connection after an error that may have left it unusable
    /// (a request that failed below its replies marks it broken too).
    fn forget_on_failure<T>(&mut self, result: &Result<T, StoreError>) {
        if let Err(StoreError::Unavailable(_)) = result {
            self.conn = None;
        }
    }
}

/// The generation stored under `ns`, after setting a fresh one if there
/// was none (`SET NX`: of stores racing, the first one's wins).
async fn adopt_generation(
    conn: &mut Conn,
    ns: &str,
    timeout: Duration,
) -> Result<String, StoreError> {
    let key = format!("{ns}:gen");
    let mut pipe = redis::pipe();
    pipe.cmd("SET").arg(&key).arg(fresh_generation()).arg("NX");
    pipe.cmd("GET").arg(&key);
    let mut replies = send(conn, &pipe, 1, 1, timeout).await?;
    match replies.pop() {
        Some(Value::BulkString(b)) => {
            String::from_utf8(b).map_err(|_| StoreError::Invalid(format!("{key}: not UTF-8")))
        }
        Some(other) => Err(StoreError::Invalid(format!("{key}: {}", describe(&other)))),
        None => Err(StoreError::Invalid(format!("{key}: no reply"))),
    }
}

/// A random id (128 bits of std's per-process random hash keys, mixed with
/// the time, the process and a counter).
fn fresh_generation() -> String {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut out = String::with_capacity(32);
    for half in 0u8..2 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(nanos);
        h.write_u32(std::process::id());
        h.write_u64(count);
        h.write_u8(half);
        out.push_str(&format!("{:016x}", h.finish()));
    }
    out
}

fn set_of(ns: &str, key: &StoreKey) -> String {
    let tag = match key.kind() {
        StoreKind::Channel => "c",
        StoreKind::Inbox => "i",
        // StoreKind is non_exhaustive; every other kind has its own set
        // name once it exists, Instance's is `n`.
        _ => "n",
    };
    format!("{ns}:keys:{tag}")
}

fn write_name(write: Option<&StoreWrite>) -> String {
    match write {
        Some(StoreWrite::Put { key, .. }) => format!("Put {}", key.name()),
        Some(StoreWrite::Delete { key }) => format!("Delete {}", key.name()),
        Some(StoreWrite::Append { key, seq, .. }) => format!("Append {} #{seq}", key.name()),
        Some(StoreWrite::TrimBelow { key, seq }) => {
            format!("TrimBelow {} #{seq}", key.name())
        }
        _ => "?".into(),
    }
}

/// A short description of an unexpected reply (never its whole content).
fn describe(value: &Value) -> String {
    match value {
        Value::ServerError(e) => format!("error {} {}", e.code(), e.details().unwrap_or("")),
        Value::Nil => "nil".into(),
        Value::Int(i) => format!("integer {i}"),
        Value::Array(a) => format!("array of {}", a.len()),
        Value::BulkString(b) => format!("string of {} bytes", b.len()),
        _ => "an unexpected reply".into(),
    }
}

/// The members of a set reply.
fn members(value: Value, key: &str) -> Result<Vec<Vec<u8>>, StoreError> {
    let items = match value {
        Value::Array(items) | Value::Set(items) => items,
        other => {
            return Err(StoreError::Invalid(format!("{key}: {}", describe(&other))));
        }
    };
    items
        .into_iter()
        .map(|item| match item {
            Value::BulkString(b) => Ok(b),
            other => Err(StoreError::Invalid(format!(
                "{key}: a member is {}",
                describe(&other)
            ))),
        })
        .collect()
}

/// The entries of an XRANGE reply, by ascending sequence number.
fn stream_entries(value: Value) -> Result<Vec<(u64, Bytes)>, String> {
    let items = match value {
        Value::Array(items) => items,
        other => return Err(describe(&other)),
    };
    let mut entries = Vec::with_capacity(items.len());
    for item in items {
        let Value::Array(pair) = item else {
            return Err(format!("an entry is {}", describe(&item)));
        };
        let mut pair = pair.into_iter();
        let (Some(Value::BulkString(id)), Some(fields)) = (pair.next(), pair.next()) else {
            return Err("an entry is not [id, fields]".into());
        };
        let id = String::from_utf8_lossy(&id).into_owned();
        let seq = id
            .strip_suffix("-0")
            .and_then(|s| s.parse::<u64>().ok())
            .ok_or_else(|| format!("entry ID {id} is not SEQ-0"))?;
        let fields: Vec<Value> = match fields {
            Value::Array(f) => f,
            Value::Map(m) => m.into_iter().flat_map(|(k, v)| [k, v]).collect(),
            other => return Err(format!("entry {id}: fields are {}", describe(&other))),
        };
        let mut data = None;
        for field in fields.chunks(2) {
            if let [Value::BulkString(name), Value::BulkString(value)] = field {
                if name == b"d" {
                    data = Some(Bytes::from(value.clone()));
                }
            }
        }
        let data = data.ok_or_else(|| format!("entry {id} has no field d"))?;
        entries.push((seq, data));
    }
    // XRANGE answers in ID order; sort anyway rather than trust it.
    entries.sort_by_key(|(seq, _)| *seq);
    Ok(entries)
}

/// Sends `pipe`, skipping the first `skip` replies and returning the
/// `count` after them, while driving the connection, within `timeout`.
async fn send(
    conn: &mut Conn,
    pipe: &redis::Pipeline,
    skip: usize,
    count: usize,
    timeout: Duration,
) -> Result<Vec<Value>, StoreError> {
    let Conn {
        redis,
        driver,
        broken,
        ..
    } = conn;
    let request = async {
        redis
            .send_packed_commands(pipe, skip, count)
            .await
            .map_err(from_redis)
    };
    let closed = async {
        driver.as_mut().await;
        Err(StoreError::Unavailable("the connection closed".into()))
    };
    let late = async {
        async_io::Timer::after(timeout).await;
        Err(StoreError::Unavailable(format!(
            "no reply within {timeout:?}"
        )))
    };
    let result = future::or(request, future::or(closed, late)).await;
    // Whatever failed (and the request possibly half sent), the replies
    // on this connection can no longer be matched to their requests.
    *broken |= result.is_err();
    result
}

/// A new connection to `config`'s Redis, set up (`AUTH`, `SELECT`), within
/// the connect timeout.
async fn open(config: &StoreConfig) -> Result<Conn, StoreError> {
    let timeout = config.connect_timeout;
    let late = async {
        async_io::Timer::after(timeout).await;
        Err(StoreError::Unavailable(format!(
            "{}: no connection within {timeout:?}",
            config.shown
        )))
    };
    future::or(open_now(config), late).await
}

async fn open_now(config: &StoreConfig) -> Result<Conn, StoreError> {
    let shown = &config.shown;
    let tcp = smol::net::TcpStream::connect((config.host.as_str(), config.port))
        .await
        .map_err(|e| StoreError::Unavailable(format!("{shown}: {e}")))?;
    let _ = tcp.set_nodelay(true);
    // redis-rs's own reply timeout (500 ms by default) would cut every
    // reply that takes longer short, whatever `response_timeout` says: a
    // large load or batch would never go through. `send` bounds each reply
    // with ours; the connect timeout bounds the setup.
    let setup = AsyncConnectionConfig::new()
        .set_response_timeout(None)
        .set_connection_timeout(None);
    let (redis, driver) = if config.tls {
        let tls = crate::adapters::tls_client::connect(&config.host, config.ca_pem.as_deref(), tcp)
            .await
            .map_err(|e| match e.kind() {
                io::ErrorKind::InvalidInput | io::ErrorKind::InvalidData => {
                    StoreError::Invalid(format!("{shown}: TLS: {e}"))
                }
                _ => StoreError::Unavailable(format!("{shown}: TLS: {e}")),
            })?;
        let (redis, driver) =
            MultiplexedConnection::new_with_config(&config.redis, Compat(tls), setup)
                .await
                .map_err(|e| setup_error(shown, e))?;
        (redis, Box::pin(driver) as Driver)
    } else {
        let (redis, driver) =
            MultiplexedConnection::new_with_config(&config.redis, Compat(tcp), setup)
                .await
                .map_err(|e| setup_error(shown, e))?;
        (redis, Box::pin(driver) as Driver)
    };
    Ok(Conn {
        redis,
        driver,
        checked: false,
        broken: false,
    })
}

fn setup_error(shown: &str, e: RedisError) -> StoreError {
    match from_redis(e) {
        StoreError::Unavailable(why) => StoreError::Unavailable(format!("{shown}: {why}")),
        StoreError::Invalid(why) => StoreError::Invalid(format!("{shown}: {why}")),
        other => other,
    }
}

/// A futures-io stream as the tokio I/O traits redis-rs's connection reads
/// and writes through.
struct Compat<S>(S);

impl<S: futures_lite::AsyncRead + Unpin> tokio::io::AsyncRead for Compat<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let n = ready!(Pin::new(&mut self.0).poll_read(cx, buf.initialize_unfilled()))?;
        buf.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl<S: futures_lite::AsyncWrite + Unpin> tokio::io::AsyncWrite for Compat<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_close(cx)
    }
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
        assert_eq!(config.redis.password(), Some("hunter2"));
        assert_eq!(config.redis.db(), 3);
        assert_eq!(config.namespace(), "hummer");
        let err = StoreConfig::new("http://:hunter2@host").unwrap_err();
        assert!(matches!(&err, StoreError::Invalid(_)));
        assert!(!err.to_string().contains("hunter2"));
        assert!(StoreConfig::new("REDISS://host").unwrap().tls);
        assert!(matches!(
            StoreConfig::new("redis+unix:///tmp/r.sock"),
            Err(StoreError::Invalid(_))
        ));
    }

    #[test]
    fn a_store_can_move_to_another_thread() {
        fn send<T: Send>() {}
        send::<RedisStore>();
        send::<StoreConfig>();
    }

    #[test]
    fn stream_replies_decode_or_are_refused() {
        let entry = |id: &str, d: &[u8]| {
            Value::Array(vec![
                Value::BulkString(id.into()),
                Value::Array(vec![
                    Value::BulkString(b"d".to_vec()),
                    Value::BulkString(d.to_vec()),
                ]),
            ])
        };
        let got = stream_entries(Value::Array(vec![entry("3-0", b"c"), entry("1-0", b"a")]));
        assert_eq!(
            got.unwrap(),
            vec![(1, Bytes::from_static(b"a")), (3, Bytes::from_static(b"c"))]
        );
        assert!(stream_entries(Value::Array(vec![entry("3-1", b"c")])).is_err());
        assert!(stream_entries(Value::Int(3)).is_err());
        assert!(stream_entries(Value::Array(vec![Value::Nil])).is_err());
        assert!(stream_entries(Value::Array(vec![Value::Array(vec![
            Value::BulkString(b"1-0".to_vec()),
            Value::Array(vec![Value::BulkString(b"x".to_vec())]),
        ])]))
        .is_err());
    }
}
