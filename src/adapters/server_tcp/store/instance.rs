//! One Redis instance of a store: its connection, the generation it
//! saw, and the scripts that load, write, fence and lease on it.

use std::time::Duration;

use bytes::Bytes;
use redis::Value;

use super::config::{Endpoint, StoreConfig};
use super::conn::{open, send, send_one, Conn};
use super::{HubNode, StoreError};
use crate::server::{StoreKey, StoreKind, StoreWrite, StoredObject};

/// How many objects a load reads per round trip.
const LOAD_CHUNK: usize = 512;

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

/// Renews the lease `KEYS[1]` for `ARGV[1]` for `ARGV[2]` ms, and takes
/// it if it is free and `ARGV[3]` is `1`: 1 when held, 0 when free (and
/// not taken), else the holder's name.
const LEASE_SCRIPT: &str = r#"
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] or (holder == false and ARGV[3] == '1') then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if holder == false then
  return 0
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

/// What one instance says of its lease.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum LeaseState {
    /// The store's owner holds it (renewed).
    Held,
    /// Nobody does (and it was not taken).
    Free,
    /// Another owner does (its name).
    HeldBy(String),
}

/// One Redis instance of a store.
pub(super) struct Instance {
    endpoint: Endpoint,
    conn: Option<Conn>,
    /// The generation this instance had when last seen, once read.
    pub(super) generation: Option<String>,
}

impl Instance {
    /// Connects at the first call (and again after any call that dropped
    /// the connection).
    pub(super) fn new(endpoint: Endpoint) -> Instance {
        Instance {
            endpoint,
            conn: None,
            generation: None,
        }
    }

    /// Its position among the store's instances.
    pub(super) fn position(&self) -> usize {
        self.endpoint.position
    }

    /// Whether a connection is open.
    pub(super) fn is_connected(&self) -> bool {
        self.conn.is_some()
    }

    /// Opens the connection now.
    pub(super) async fn connect(&mut self, config: &StoreConfig) -> Result<(), StoreError> {
        self.ready(config).await.map(|_| ())
    }

    /// Every object stored here whose place is this instance, and how
    /// many members of the key sets were left out (see
    /// [`RedisStore::skipped`](super::RedisStore::skipped); an object of
    /// another instance's is counted too). Records the generation.
    pub(super) async fn load(
        &mut self,
        config: &StoreConfig,
    ) -> Result<(Vec<StoredObject>, usize), StoreError> {
        let result = self.load_inner(config).await;
        self.forget_on_failure(&result);
        result
    }

    async fn load_inner(
        &mut self,
        config: &StoreConfig,
    ) -> Result<(Vec<StoredObject>, usize), StoreError> {
        let ns = config.namespace.clone();
        let timeout = config.response_timeout;
        let endpoint = self.endpoint.clone();
        let conn = self.ready(config).await?;
        let generation = adopt_generation(conn, config, &endpoint).await?;
        conn.checked = true;
        self.generation = Some(generation);
        let conn = self.conn.as_mut().expect("ready() leaves a connection");

        let kinds = [
            (StoreKind::Channel, "c"),
            (StoreKind::Inbox, "i"),
            (StoreKind::Instance, "n"),
            (StoreKind::Sends, "s"),
        ];
        let mut pipe = redis::pipe();
        for (_, tag) in kinds {
            pipe.cmd("SMEMBERS").arg(format!("{ns}:keys:{tag}"));
        }
        let sets = send(conn, &pipe, 0, kinds.len(), timeout).await?;
        let mut skipped = 0;
        let mut elsewhere = 0;
        let mut keys = Vec::new();
        for ((kind, tag), set) in kinds.iter().zip(sets) {
            for member in members(set, &format!("{ns}:keys:{tag}"))? {
                match std::str::from_utf8(&member).ok().and_then(StoreKey::parse) {
                    Some(key) if key.kind() != *kind => skipped += 1,
                    Some(key) if config.instance_of(&key) != endpoint.position => {
                        elsewhere += 1;
                    }
                    Some(key) => keys.push(key),
                    None => skipped += 1,
                }
            }
        }
        if elsewhere > 0 {
            // Written by no server of this store's shape (the ring check
            // refuses a store given another shape): foreign, left alone.
            log!(
                warn,
                "{}: {elsewhere} objects belong on another instance: skipped",
                endpoint.shown
            );
            skipped += elsewhere;
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
        Ok((objects, skipped))
    }

    /// Makes `writes` durable here, in scripts of at most
    /// [`WRITES_PER_SCRIPT`] writes (see [`RedisStore::write`](super::RedisStore::write)).
    pub(super) async fn write(
        &mut self,
        config: &StoreConfig,
        number: u64,
        writes: &[&StoreWrite],
    ) -> Result<(), StoreError> {
        let result = self.write_inner(config, number, writes).await;
        self.forget_on_failure(&result);
        result
    }

    async fn write_inner(
        &mut self,
        config: &StoreConfig,
        number: u64,
        writes: &[&StoreWrite],
    ) -> Result<(), StoreError> {
        let ns = config.namespace.clone();
        let timeout = config.response_timeout;
        // A new connection reads the generation back first.
        if !self.ready(config).await?.checked {
            self.check_inner(config).await?;
        }
        let conn = self.conn.as_mut().expect("ready() leaves a connection");

        // Scripts of at most WRITES_PER_SCRIPT writes (a batch that writes
        // a whole state again can be large; one script must end within the
        // reply timeout): each checks the lease and the generation, then
        // makes its writes in order, nothing else run in between.
        let lease = match &config.lease_owner {
            Some(owner) => (format!("{ns}:lease"), owner.clone()),
            None => (String::new(), String::new()),
        };
        for (c, chunk) in writes.chunks(WRITES_PER_SCRIPT).enumerate() {
            let first = c * WRITES_PER_SCRIPT;
            let mut eval = redis::cmd("EVAL");
            eval.arg(WRITE_SCRIPT)
                .arg(0)
                .arg(&lease.0)
                .arg(&lease.1)
                .arg(&ns)
                .arg(self.generation.as_deref().unwrap_or(""));
            for (i, &write) in chunk.iter().enumerate() {
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
                            number,
                            first + i
                        )))
                    }
                }
            }
            match send_one(conn, eval, timeout).await? {
                Value::Int(n) if usize::try_from(n).ok() == Some(chunk.len()) => {}
                Value::ServerError(e) if e.code() == "FENCED" => return Err(StoreError::Fenced),
                Value::ServerError(e) if e.code() == "LOST" => {
                    self.generation = Some(adopt_generation(conn, config, &self.endpoint).await?);
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
                        number,
                        write_name(at.and_then(|i| writes.get(first + i).copied())),
                        e.code(),
                    )));
                }
                other => {
                    return Err(StoreError::Invalid(format!(
                        "batch {}: the write script answered {}",
                        number,
                        describe(&other)
                    )))
                }
            }
        }
        Ok(())
    }

    /// Reads the generation back: [`StoreError::Lost`] (once) when it is
    /// not the one last seen.
    pub(super) async fn check(&mut self, config: &StoreConfig) -> Result<(), StoreError> {
        let result = self.check_inner(config).await;
        self.forget_on_failure(&result);
        result
    }

    async fn check_inner(&mut self, config: &StoreConfig) -> Result<(), StoreError> {
        let endpoint = self.endpoint.clone();
        let conn = self.ready(config).await?;
        let current = adopt_generation(conn, config, &endpoint).await?;
        conn.checked = true;
        let lost = self.generation.as_ref().is_some_and(|g| *g != current);
        self.generation = Some(current);
        if lost {
            return Err(StoreError::Lost);
        }
        Ok(())
    }

    /// The text at `{ns}:{key}`, if set.
    pub(super) async fn get_text(
        &mut self,
        config: &StoreConfig,
        key: &str,
    ) -> Result<Option<String>, StoreError> {
        let key = format!("{}:{key}", config.namespace);
        let mut get = redis::cmd("GET");
        get.arg(&key);
        match self.call(config, get).await? {
            Value::Nil => Ok(None),
            Value::BulkString(b) => Ok(Some(String::from_utf8_lossy(&b).into_owned())),
            other => Err(StoreError::Invalid(format!(
                "GET {key}: {}",
                describe(&other)
            ))),
        }
    }

    /// Renews this instance's lease for `owner` for `ttl`, taking it if
    /// it is free and `take`.
    pub(super) async fn claim_lease(
        &mut self,
        config: &StoreConfig,
        owner: &str,
        ttl: Duration,
        take: bool,
    ) -> Result<LeaseState, StoreError> {
        let mut eval = redis::cmd("EVAL");
        eval.arg(LEASE_SCRIPT)
            .arg(1)
            .arg(format!("{}:lease", config.namespace))
            .arg(owner)
            .arg(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1))
            .arg(if take { "1" } else { "0" });
        match self.call(config, eval).await? {
            Value::Int(1) => Ok(LeaseState::Held),
            Value::Int(0) => Ok(LeaseState::Free),
            Value::BulkString(other) => {
                Ok(LeaseState::HeldBy(String::from_utf8_lossy(&other).into()))
            }
            other => Err(StoreError::Invalid(format!(
                "the lease script answered {}",
                describe(&other)
            ))),
        }
    }

    /// See [`RedisStore::announce_hub`](super::RedisStore::announce_hub).
    pub(super) async fn announce_hub(
        &mut self,
        config: &StoreConfig,
        address: &str,
        secret: &str,
    ) -> Result<bool, StoreError> {
        let owner = config.lease_owner.clone().unwrap_or_default();
        let ns = &config.namespace;
        let mut eval = redis::cmd("EVAL");
        eval.arg(ANNOUNCE_SCRIPT)
            .arg(3)
            .arg(format!("{ns}:lease"))
            .arg(format!("{ns}:hub"))
            .arg(format!("{ns}:secret"))
            .arg(&owner)
            .arg(format!("{owner} {address}"))
            .arg(secret);
        match self.call(config, eval).await? {
            Value::Int(n) => Ok(n == 1),
            other => Err(StoreError::Invalid(format!(
                "the announce script answered {}",
                describe(&other)
            ))),
        }
    }

    /// See [`RedisStore::hub_node`](super::RedisStore::hub_node).
    pub(super) async fn hub_node(
        &mut self,
        config: &StoreConfig,
    ) -> Result<Option<HubNode>, StoreError> {
        let ns = &config.namespace;
        let mut pipe = redis::pipe();
        for key in ["lease", "hub", "secret"] {
            pipe.cmd("GET").arg(format!("{ns}:{key}"));
        }
        let replies = self.round_trip(config, &pipe, 0, 3).await?;
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
        config: &StoreConfig,
        pipe: &redis::Pipeline,
        skip: usize,
        n: usize,
    ) -> Result<Vec<Value>, StoreError> {
        let result = match self.ready(config).await {
            Ok(conn) => send(conn, pipe, skip, n, config.response_timeout).await,
            Err(e) => Err(e),
        };
        self.forget_on_failure(&result);
        result
    }

    /// Sends the one command `cmd` on the open connection (see
    /// [`Instance::round_trip`]): its reply.
    async fn call(&mut self, config: &StoreConfig, cmd: redis::Cmd) -> Result<Value, StoreError> {
        let result = match self.ready(config).await {
            Ok(conn) => send_one(conn, cmd, config.response_timeout).await,
            Err(e) => Err(e),
        };
        self.forget_on_failure(&result);
        result
    }

    /// The open connection, or a new one if there is none or it died
    /// since the last call.
    async fn ready(&mut self, config: &StoreConfig) -> Result<&mut Conn, StoreError> {
        if let Some(conn) = &mut self.conn {
            if conn.is_dead().await {
                self.conn = None;
            }
        }
        if self.conn.is_none() {
            // Every new connection checks the instance's place first, for
            // lease calls too: a node given the instances in another order
            // must not take a lease it would serve wrongly.
            let mut conn = open(config, &self.endpoint).await?;
            let ns = &config.namespace;
            let mut eval = redis::cmd("EVAL");
            eval.arg(PLACE_SCRIPT)
                .arg(2)
                .arg(format!("{ns}:gen"))
                .arg(format!("{ns}:ring"));
            let found = send_one(&mut conn, eval, config.response_timeout).await?;
            check_place(config, &self.endpoint, found)?;
            self.conn = Some(conn);
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

/// Sets the generation `KEYS[1]` to `ARGV[1]` if there is none, and the
/// place `KEYS[2]` to `ARGV[2]` if there is none; answers both. A store
/// that had a generation but no place was made before places were
/// recorded, on one Redis: its place is `0/1`.
const ADOPT_SCRIPT: &str = r#"
local made = redis.call('SET', KEYS[1], ARGV[1], 'NX')
local ring = redis.call('GET', KEYS[2])
if not ring then
  if made then ring = ARGV[2] else ring = '0/1' end
  redis.call('SET', KEYS[2], ring)
end
return {redis.call('GET', KEYS[1]), ring}
"#;

/// The place `KEYS[2]` as recorded, `0/1` for a store with a generation
/// `KEYS[1]` and no place (see [`ADOPT_SCRIPT`]), nothing for an empty
/// one. Writes nothing.
const PLACE_SCRIPT: &str = r#"
local ring = redis.call('GET', KEYS[2])
if ring then
  return ring
end
if redis.call('EXISTS', KEYS[1]) == 1 then
  return '0/1'
end
return false
"#;

/// `endpoint`'s place among `config`'s instances, as `{ns}:ring` records
/// it: `POSITION/COUNT`.
fn place_of(config: &StoreConfig, endpoint: &Endpoint) -> String {
    format!("{}/{}", endpoint.position, config.instances)
}

/// Refuses an instance whose recorded place (`found`) is not the one it
/// is given: its objects would be put where no load looks for them.
fn check_place(config: &StoreConfig, endpoint: &Endpoint, found: Value) -> Result<(), StoreError> {
    let ns = &config.namespace;
    let place = place_of(config, endpoint);
    match found {
        Value::Nil => Ok(()),
        Value::BulkString(b) if b == place.as_bytes() => Ok(()),
        Value::BulkString(b) => Err(StoreError::Invalid(format!(
            "{}: this Redis is instance {} (from 0, of how many) of the store in namespace {ns}, not {place} as given: give the store's instances in the order and number it was made with",
            endpoint.shown,
            String::from_utf8_lossy(&b)
        ))),
        // A refusal (no password, a wrong one, a foreign key's type).
        other => Err(StoreError::Invalid(format!(
            "{}: {ns}:ring: {}",
            endpoint.shown,
            describe(&other)
        ))),
    }
}

/// The generation stored under `ns`, after setting a fresh one if there
/// was none (of stores racing, the first one's wins); and the instance's
/// place in its store (`{ns}:ring`, set the same way), which must be
/// `endpoint`'s ([`check_place`]).
async fn adopt_generation(
    conn: &mut Conn,
    config: &StoreConfig,
    endpoint: &Endpoint,
) -> Result<String, StoreError> {
    let ns = &config.namespace;
    let key = format!("{ns}:gen");
    let mut eval = redis::cmd("EVAL");
    eval.arg(ADOPT_SCRIPT)
        .arg(2)
        .arg(&key)
        .arg(format!("{ns}:ring"))
        .arg(fresh_generation())
        .arg(place_of(config, endpoint));
    let reply = send_one(conn, eval, config.response_timeout).await?;
    let Value::Array(mut pair) = reply else {
        return Err(StoreError::Invalid(format!(
            "the adopt script answered {}",
            describe(&reply)
        )));
    };
    let (ring, generation) = match (pair.pop(), pair.pop()) {
        (Some(ring), Some(generation)) => (ring, generation),
        _ => {
            return Err(StoreError::Invalid(
                "the adopt script answered too little".into(),
            ))
        }
    };
    check_place(config, endpoint, ring)?;
    match generation {
        Value::BulkString(b) => String::from_utf8(b)
            .ok()
            .filter(|g| !g.contains(','))
            .ok_or_else(|| StoreError::Invalid(format!("{key}: not a generation"))),
        other => Err(StoreError::Invalid(format!("{key}: {}", describe(&other)))),
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
        StoreKind::Sends => "s",
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

#[cfg(test)]
mod tests {
    use super::*;

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
