//! A store double: what a store keeps of a hub's batches, in a map, with
//! the store's rules checked (entries only grow within an object's life).

use std::collections::BTreeMap;

use bytes::Bytes;
use hummer_channel::server::{StoreBatch, StoreKey, StoreWrite, StoredObject};

/// Objects by key: the record (if put) and the entries by seq.
#[derive(Clone, Debug, Default)]
pub struct MemStore {
    objects: BTreeMap<StoreKey, (Option<Bytes>, BTreeMap<u64, Bytes>)>,
    /// Batches applied.
    pub batches: u64,
    /// Writes applied.
    pub writes: u64,
}

impl MemStore {
    /// Applies `batch` as a store must: in order, all of it.
    pub fn apply(&mut self, batch: &StoreBatch) {
        self.batches += 1;
        for w in &batch.writes {
            self.writes += 1;
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
                other => panic!("unknown write {other:?}"),
            }
        }
    }

    /// What a store returns at a restart (objects without a record are
    /// not returned: a store writes a record with its first entries).
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

    /// The entries of `key`'s object.
    pub fn entries(&self, key: &StoreKey) -> Vec<u64> {
        self.objects
            .get(key)
            .map(|o| o.1.keys().copied().collect())
            .unwrap_or_default()
    }
}
