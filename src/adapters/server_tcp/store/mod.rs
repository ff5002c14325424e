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
//! | `{ns}:ring` | string | the instance's place in its store, `POSITION/COUNT` (`0/1` for a store on one Redis), set the same way |
//! | `{ns}:lease` | string | the node that writes, with an expiry ([`RedisStore::claim_lease`]) |
//! | `{ns}:hub`, `{ns}:secret` | string | on the first instance: the hub node and its address, the cluster's secret ([`RedisStore::announce_hub`]) |
//! | `{ns}:keys:c`, `{ns}:keys:i`, `{ns}:keys:n`, `{ns}:keys:s` | set | the [`StoreKey::name`](crate::server::StoreKey::name)s of the channels, inboxes, instances and streams' sends |
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
//! # Several instances
//!
//! A [`StoreConfig`] of several URLs spreads the objects over several
//! Redis instances (client-side sharding: no Redis Cluster needed), each
//! object on one: the instance of an object is its hub shard
//! ([`StoreKey::shard`](crate::server::StoreKey::shard)) among as many
//! shards as there are instances ([`StoreConfig::instance_of`]). A server
//! whose number of hub shards is a multiple of the number of instances
//! (the TCP runner insists) thereby keeps every object of a hub shard on
//! one instance, so each of its batches is one instance's, atomic as
//! above; a batch that spans instances is written instance by instance,
//! each part atomic, the parts in the order of the instances. Every
//! instance keeps its own generation, lease (the store's lease is held
//! when all are) and place in the store (`{ns}:ring`): an instance found
//! in another place (the URLs given in another order, or another number
//! of them) is refused at its first call, since its objects would be
//! loaded by nobody. The number of instances is therefore fixed when a
//! store is first used; moving to another number means a new store
//! (another namespace, or empty instances) filled by the clients' new
//! logins. A writer of one hub shard narrows its store to that shard's
//! instance ([`StoreConfig::instance`]).
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
//! the next write simply goes through. With several instances each one
//! is watched apart, and only the one that lost its data needs writing
//! again.
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
use std::time::{Duration, Instant};

use crate::server::{StoreBatch, StoreWrite, StoredObject};

mod config;
mod conn;
mod instance;

pub use config::StoreConfig;
use instance::{Instance, LeaseState};

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

/// Redis as the hubs' durable store (see the [module](self) documentation).
pub struct RedisStore {
    config: StoreConfig,
    /// One per Redis of the configuration, by position.
    instances: Vec<Instance>,
    /// The generations the instances had when last seen, joined
    /// ([`RedisStore::generation`]).
    generation: Option<String>,
    skipped: usize,
    /// When a claim last found the whole lease this owner's.
    held_at: Option<Instant>,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("config", &self.config)
            .field(
                "connected",
                &self.instances.iter().filter(|i| i.is_connected()).count(),
            )
            .field("generation", &self.generation)
            .finish()
    }
}

impl RedisStore {
    /// A store connected to each of `config`'s Redis instances (each
    /// within its connect timeout, 2 s by default). Call
    /// [`RedisStore::load`] before the first write: it records the store's
    /// generation.
    pub async fn connect(config: &StoreConfig) -> Result<RedisStore, StoreError> {
        let mut store = RedisStore::new(config);
        for instance in &mut store.instances {
            instance.connect(config).await?;
        }
        Ok(store)
    }

    /// A store for `config`'s Redis instances that connects to each at its
    /// first call there (and again after any call that dropped the
    /// connection), for callers that retry: it never fails to exist.
    pub fn new(config: &StoreConfig) -> RedisStore {
        RedisStore {
            instances: config
                .endpoints
                .iter()
                .cloned()
                .map(Instance::new)
                .collect(),
            config: config.clone(),
            generation: None,
            skipped: 0,
            held_at: None,
        }
    }

    /// Its configuration.
    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    /// How many members of the key sets the last [`RedisStore::load`] left
    /// out: a name that [`StoreKey::parse`](crate::server::StoreKey::parse)
    /// refuses (or of another kind than its set's), an object without a
    /// record, or one on an instance that is not its place.
    pub fn skipped(&self) -> usize {
        self.skipped
    }

    /// Every object stored under the namespace, ordered by key, each with
    /// its entries by ascending sequence number; members that do not make
    /// an object are skipped and counted ([`RedisStore::skipped`]).
    /// Records the store's generation, creating it if there is none; never
    /// returns [`StoreError::Lost`] (what it returns is what there is).
    /// Refuses ([`StoreError::Invalid`]) an instance that another store's
    /// configuration placed elsewhere (see the [module](self) documentation).
    pub async fn load(&mut self) -> Result<Vec<StoredObject>, StoreError> {
        let mut objects = Vec::new();
        let mut skipped = 0;
        let mut failed = None;
        for instance in &mut self.instances {
            match instance.load(&self.config).await {
                Ok((found, left_out)) => {
                    objects.extend(found);
                    skipped += left_out;
                }
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        self.remember_generations();
        if let Some(e) = failed {
            return Err(e);
        }
        // Each object lives on one instance only: sorting merges them.
        objects.sort_by(|a, b| a.key.cmp(&b.key));
        self.skipped = skipped;
        Ok(objects)
    }

    /// Makes `batch` durable: its writes of each instance in scripts on
    /// that instance, in order (see the [module](self) documentation for
    /// what a failed command inside leaves, and for batches that span
    /// instances).
    ///
    /// [`StoreError::Lost`] when an instance lost the data (the batch's
    /// writes there were not made: write everything again, as new
    /// batches); [`StoreError::Unavailable`] on I/O errors and timeouts
    /// (the connection is dropped and the next call opens a new one);
    /// [`StoreError::Invalid`] naming the first write Redis refused, or an
    /// object whose place is an instance this store was narrowed away
    /// from ([`StoreConfig::instance`]: nothing is written). (A store that
    /// never loaded adopts the generation it finds on its first write: it
    /// has seen none to lose.)
    pub async fn write(&mut self, batch: &StoreBatch) -> Result<(), StoreError> {
        let mut parts: Vec<(usize, Vec<&StoreWrite>)> = Vec::new();
        for write in &batch.writes {
            let place = self.config.instance_of(write.key());
            let at = match self.instances.iter().position(|i| i.position() == place) {
                Some(at) => at,
                None => {
                    return Err(StoreError::Invalid(format!(
                        "batch {}: {} belongs on instance {place}, not in this store ({})",
                        batch.number,
                        write.key().name(),
                        self.config.url()
                    )))
                }
            };
            match parts.iter_mut().find(|(i, _)| *i == at) {
                Some((_, writes)) => writes.push(write),
                None => parts.push((at, vec![write])),
            }
        }
        if parts.is_empty() {
            // Nothing to write still checks each new connection's
            // generation, as any write does.
            parts = (0..self.instances.len())
                .map(|at| (at, Vec::new()))
                .collect();
        }
        parts.sort_by_key(|(at, _)| *at);
        let mut result = Ok(());
        for (at, writes) in parts {
            result = self.instances[at]
                .write(&self.config, batch.number, &writes)
                .await;
            if result.is_err() {
                break;
            }
        }
        self.remember_generations();
        result
    }

    /// The generations this store's instances had when last seen
    /// ([`RedisStore::load`] records them), one per instance of the whole
    /// store in order, joined by commas (empty for an instance not seen or
    /// not in this store); `None` before any was seen.
    pub fn generation(&self) -> Option<&str> {
        self.generation.as_deref()
    }

    /// Takes `generation` (another store's [`RedisStore::generation`], the
    /// one that loaded what the caller holds, for the same store or a
    /// wider one) as the one this store saw: an instance that lost it
    /// since is [`StoreError::Lost`] to the next [`RedisStore::write`] or
    /// [`RedisStore::check`]. A text with another number of parts than the
    /// store has instances is ignored.
    pub fn expect_generation(&mut self, generation: &str) {
        let parts: Vec<&str> = generation.split(',').collect();
        if parts.len() != self.config.instances {
            return;
        }
        for instance in &mut self.instances {
            let part = parts[instance.position()];
            instance.generation = (!part.is_empty()).then(|| part.to_owned());
        }
        self.remember_generations();
    }

    /// Reads each instance's generation back: [`StoreError::Lost`] (once)
    /// when one is not the one this store saw, as [`RedisStore::write`]
    /// would say (every instance is checked, and each one lost is noticed
    /// once). A writer with nothing to write calls it now and then, so
    /// that Redis losing its data is noticed without waiting for a change.
    pub async fn check(&mut self) -> Result<(), StoreError> {
        let mut result = Ok(());
        for instance in &mut self.instances {
            match (instance.check(&self.config).await, &result) {
                (Err(StoreError::Lost), _) => result = Err(StoreError::Lost),
                (Err(e), Ok(())) => result = Err(e),
                _ => {}
            }
        }
        self.remember_generations();
        result
    }

    /// The store's generations now (joined as [`RedisStore::generation`]'s),
    /// if any instance has one, without adopting them.
    pub async fn read_generation(&mut self) -> Result<Option<String>, StoreError> {
        let mut parts = vec![String::new(); self.config.instances];
        let mut any = false;
        for instance in &mut self.instances {
            if let Some(g) = instance.get_text(&self.config, "gen").await? {
                parts[instance.position()] = g;
                any = true;
            }
        }
        Ok(any.then(|| parts.join(",")))
    }

    /// Claims the namespace's lease for [`StoreConfig::with_lease`]'s
    /// owner for `ttl` (or renews it when the owner holds it): whether it
    /// holds it now, and if not, who does. Without a lease owner, always
    /// held.
    ///
    /// With several instances the lease is one per instance, each fencing
    /// the writes there, and the owner holds the store's when it holds
    /// all of them. They are taken in order, and one is taken only when
    /// the owner holds every one before it, so that two nodes never wait
    /// on each other's halves; those it holds up to the first another
    /// node holds are renewed, also past an instance that does not answer
    /// (a short outage of one costs the others nothing).
    /// [`StoreError::Unavailable`] when an instance could not be asked
    /// (and no other node holds one).
    ///
    /// A holder that could not hold the whole lease for `ttl` (one
    /// instance out of its reach) renews nothing more until every instance
    /// answers again: its parts lapse, so that a node that reaches them
    /// all takes over, and the holder learns it (`HeldBy`) from any
    /// instance it still reaches. (With one Redis, the same as before: an
    /// unreachable Redis renews nothing.)
    pub async fn claim_lease(&mut self, ttl: Duration) -> Result<Lease, StoreError> {
        let Some(owner) = self.config.lease_owner.clone() else {
            return Ok(Lease::Held);
        };
        if self.held_at.is_some_and(|t| t.elapsed() >= ttl) {
            let mut unavailable = None;
            for instance in &mut self.instances {
                match instance.get_text(&self.config, "lease").await {
                    Ok(Some(holder)) if holder != owner => return Ok(Lease::HeldBy(holder)),
                    Ok(_) => {}
                    Err(e @ StoreError::Unavailable(_)) => {
                        unavailable.get_or_insert(e);
                    }
                    Err(e) => return Err(e),
                }
            }
            if let Some(e) = unavailable {
                return Err(e);
            }
        }
        let lease = self.claim_in_order(&owner, ttl).await;
        if lease == Ok(Lease::Held) {
            self.held_at = Some(Instant::now());
        }
        lease
    }

    /// One claim of every instance's lease, in order (see
    /// [`RedisStore::claim_lease`]).
    async fn claim_in_order(&mut self, owner: &str, ttl: Duration) -> Result<Lease, StoreError> {
        let mut taking = true;
        let mut unavailable = None;
        for instance in &mut self.instances {
            match instance.claim_lease(&self.config, owner, ttl, taking).await {
                Ok(LeaseState::Held) => {}
                Ok(LeaseState::Free) => taking = false,
                Ok(LeaseState::HeldBy(other)) => return Ok(Lease::HeldBy(other)),
                Err(e @ StoreError::Unavailable(_)) => {
                    taking = false;
                    unavailable.get_or_insert(e);
                }
                Err(e) => return Err(e),
            }
        }
        match unavailable {
            Some(e) => Err(e),
            None => Ok(Lease::Held),
        }
    }

    /// Tells the cluster that this store's lease owner, the hub node,
    /// takes gateway nodes at `address` (`{ns}:hub` = `OWNER ADDRESS`)
    /// with `secret` (`{ns}:secret`), on the store's first instance: a
    /// node that can read the store learns it, and nothing else can join.
    /// Only while the owner holds the lease there (in the same script):
    /// whether it did. Each new hub node sets a secret of its own.
    pub async fn announce_hub(&mut self, address: &str, secret: &str) -> Result<bool, StoreError> {
        let config = &self.config;
        first(&mut self.instances, config)?
            .announce_hub(config, address, secret)
            .await
    }

    /// Who holds the namespace's lease now (on the store's first
    /// instance), if anyone (without claiming it).
    pub async fn lease_holder(&mut self) -> Result<Option<String>, StoreError> {
        let config = &self.config;
        first(&mut self.instances, config)?
            .get_text(config, "lease")
            .await
    }

    /// The hub node gateway nodes connect to, and the cluster's secret:
    /// `None` while no node both holds the lease and announced itself
    /// (an announcement by a node whose lease lapsed is not taken).
    pub async fn hub_node(&mut self) -> Result<Option<HubNode>, StoreError> {
        let config = &self.config;
        first(&mut self.instances, config)?.hub_node(config).await
    }

    /// Joins the instances' generations (see [`RedisStore::generation`]).
    fn remember_generations(&mut self) {
        let mut parts = vec![""; self.config.instances];
        let mut any = false;
        for instance in &self.instances {
            if let Some(g) = &instance.generation {
                parts[instance.position()] = g;
                any = true;
            }
        }
        self.generation = any.then(|| parts.join(","));
    }
}

/// The store's first instance, where the lease that names the hub node
/// and its address live.
fn first<'a>(
    instances: &'a mut [Instance],
    config: &StoreConfig,
) -> Result<&'a mut Instance, StoreError> {
    instances
        .iter_mut()
        .find(|i| i.position() == 0)
        .ok_or_else(|| {
            StoreError::Invalid(format!(
                "{}: the hub node is named on the store's first instance, not in this one",
                config.url()
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_can_move_to_another_thread() {
        fn send<T: Send>() {}
        send::<RedisStore>();
        send::<StoreConfig>();
    }
}
