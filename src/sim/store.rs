//! Where a durable server's batches go in a simulation: the [`SimStore`]
//! contract and a map that keeps them ([`MemoryStore`]).

use std::collections::BTreeMap;

use bytes::Bytes;

use crate::server::{ShardId, StoreBatch, StoreKey, StoreWrite, StoredObject};

/// A store for a simulated durable server ([`ServerConfig::durable`]):
/// [`Sim`](super::Sim) writes each batch the server makes once its store
/// latency has passed ([`SimConfig::store_latency`]), and a restarted
/// server starts from [`SimStore::load`]. A test puts a real store behind
/// it (for example Redis) to run the simulation against it.
///
/// [`ServerConfig::durable`]: crate::server::ServerConfig::durable
/// [`SimConfig::store_latency`]: super::SimConfig::store_latency
pub trait SimStore: std::fmt::Debug {
    /// Makes `batch` of hub shard `shard` durable, all of it, after the
    /// shard's earlier batches. The simulation has no store faults: a store
    /// that cannot write should panic (the test fails).
    fn write(&mut self, shard: ShardId, batch: &StoreBatch);

    /// Every object stored, for a server that starts.
    fn load(&mut self) -> Vec<StoredObject>;
}

/// A store in a map, with a store's rules checked: a batch applies in
/// order and whole, and an object's entries only grow within its life.
///
/// ```
/// use bytes::Bytes;
/// use hummer_channel::server::{StoreBatch, StoreKey, StoreWrite};
/// use hummer_channel::sim::MemoryStore;
///
/// let key = StoreKey::Inbox { appid: 1, uid: 2 };
/// let mut store = MemoryStore::default();
/// let batch = StoreBatch::new(1, vec![
///     StoreWrite::Put { key: key.clone(), record: Bytes::from_static(b"r") },
///     StoreWrite::Append { key: key.clone(), seq: 1, entry: Bytes::from_static(b"m") },
/// ]);
/// store.apply(&batch);
/// assert_eq!(store.entries(&key), [1]);
/// assert_eq!(store.objects().len(), 1);
/// ```
#[derive(Clone, Debug, Default)]
pub struct MemoryStore {
    /// Objects by key: the record (once put) and the entries by seq.
    objects: BTreeMap<StoreKey, (Option<Bytes>, BTreeMap<u64, Bytes>)>,
}

impl MemoryStore {
    /// Applies `batch` as a store must: in order, all of it.
    ///
    /// # Panics
    ///
    /// On an append that does not follow the object's last entry (the
    /// server broke the store's contract).
    pub fn apply(&mut self, batch: &StoreBatch) {
        for w in &batch.writes {
            match w {
                StoreWrite::Put { key, record } => {
                    self.objects.entry(key.clone()).or_default().0 = Some(record.clone());
                }
                StoreWrite::Delete { key } => {
                    self.objects.remove(key);
                }
                StoreWrite::Append { key, seq, entry } => {
                    let entries = &mut self.objects.entry(key.clone()).or_default().1;
                    if let Some((&last, _)) = entries.last_key_value() {
                        assert!(*seq > last, "{key:?}: append {seq} after {last}");
                    }
                    entries.insert(*seq, entry.clone());
                }
                StoreWrite::TrimBelow { key, seq } => {
                    if let Some(o) = self.objects.get_mut(key) {
                        o.1 = o.1.split_off(seq);
                    }
                }
            }
        }
    }

    /// What a store returns at a start (an object without a record is not
    /// returned: a store writes a record with its first entries).
    pub fn objects(&self) -> Vec<StoredObject> {
        self.objects
            .iter()
            .filter_map(|(k, (r, e))| {
                Some(StoredObject::new(
                    k.clone(),
                    r.clone()?,
                    e.iter().map(|(s, b)| (*s, b.clone())).collect(),
                ))
            })
            .collect()
    }

    /// The keys held.
    pub fn keys(&self) -> Vec<StoreKey> {
        self.objects.keys().cloned().collect()
    }

    /// The sequence numbers of `key`'s entries.
    pub fn entries(&self, key: &StoreKey) -> Vec<u64> {
        self.objects
            .get(key)
            .map(|o| o.1.keys().copied().collect())
            .unwrap_or_default()
    }
}

impl SimStore for MemoryStore {
    fn write(&mut self, _shard: ShardId, batch: &StoreBatch) {
        self.apply(batch);
    }

    fn load(&mut self) -> Vec<StoredObject> {
        self.objects()
    }
}

impl<S: SimStore + ?Sized> SimStore for Box<S> {
    fn write(&mut self, shard: ShardId, batch: &StoreBatch) {
        (**self).write(shard, batch);
    }

    fn load(&mut self) -> Vec<StoredObject> {
        (**self).load()
    }
}
