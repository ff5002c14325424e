//! Durable state: what a hub shard asks a store to keep so that a restart
//! loses nothing it acknowledged.
//!
//! A hub with a store (`ServerConfig::durable`) writes every change of its
//! lasting state (instances, channels with their members and attributes,
//! inboxes, and the retained entries of every stream) as [`StoreWrite`]s,
//! gathered in [`StoreBatch`]es pulled with [`Hub::poll_store`](super::Hub::poll_store).
//! The runner makes each batch durable, in order and all or nothing, and
//! says so with [`Hub::handle_stored`](super::Hub::handle_stored). Until
//! then, whatever the hub produced after the changes (replies, pushes,
//! messages to other shards) is held back: a client never sees a change
//! that a crash could undo. At start the runner loads every stored object
//! and hands them to [`Hub::restore`](super::Hub::restore).
//!
//! The store itself is not here (the core does no I/O): the TCP runner's
//! is Redis (`adapters::server_tcp::store`), and tests use a map.

use bytes::Bytes;

use super::shard::{channel_shard, uid_shard, ShardId};

/// The name of one stored object.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum StoreKey {
    /// A channel: its stream's epoch and head, attributes, members (and
    /// their user attributes), departed members; its entries are the
    /// channel's retained messages.
    Channel {
        /// Its app.
        appid: u32,
        /// Its region, as on the wire.
        region: i32,
        /// Its id.
        id: String,
    },
    /// A uid's P2P inbox: epoch, head, the acknowledged position; its
    /// entries are the retained messages.
    Inbox {
        /// Its app.
        appid: u32,
        /// The receiver.
        uid: u64,
    },
    /// A logged-in instance (restored as if its link had just been lost).
    /// No entries.
    Instance {
        /// Its app.
        appid: u32,
        /// Its uid.
        uid: u64,
        /// The instance id (what a resume names).
        instance: u64,
    },
    /// The records of the sends behind a stream's messages that retention
    /// evicted within the dedupe window (the stream: a [`StoreKey::Channel`]
    /// or a [`StoreKey::Inbox`]). Its record is empty; its entries are
    /// numbered by the messages' sequence numbers. It lives where its
    /// stream does.
    Sends {
        /// The stream.
        of: Box<StoreKey>,
    },
}

/// The kinds of [`StoreKey`], for stores that index each kind apart.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum StoreKind {
    /// [`StoreKey::Channel`].
    Channel,
    /// [`StoreKey::Inbox`].
    Inbox,
    /// [`StoreKey::Instance`].
    Instance,
    /// [`StoreKey::Sends`].
    Sends,
}

impl StoreKey {
    /// The hub shard that owns the object among `shards`: a channel's
    /// shard ([`channel_shard`]), or its uid's home ([`uid_shard`]) for an
    /// inbox or an instance.
    ///
    /// ```
    /// use hummer_channel::server::{uid_shard, StoreKey};
    ///
    /// let inbox = StoreKey::Inbox { appid: 1, uid: 42 };
    /// assert_eq!(inbox.shard(4), uid_shard(1, 42, 4));
    /// ```
    pub fn shard(&self, shards: u16) -> ShardId {
        match self {
            StoreKey::Channel { appid, region, id } => channel_shard(*appid, *region, id, shards),
            StoreKey::Inbox { appid, uid } | StoreKey::Instance { appid, uid, .. } => {
                uid_shard(*appid, *uid, shards)
            }
            StoreKey::Sends { of } => of.shard(shards),
        }
    }

    /// Its kind.
    pub fn kind(&self) -> StoreKind {
        match self {
            StoreKey::Channel { .. } => StoreKind::Channel,
            StoreKey::Inbox { .. } => StoreKind::Inbox,
            StoreKey::Instance { .. } => StoreKind::Instance,
            StoreKey::Sends { .. } => StoreKind::Sends,
        }
    }

    /// A printable name, unique per key, that [`StoreKey::parse`] reads
    /// back: `c/APPID/REGION/HEXID`, `i/APPID/UID`, `n/APPID/UID/INSTANCE`,
    /// and `s/` followed by its stream's name for [`StoreKey::Sends`] (the
    /// channel id in lowercase hex, so any id is safe in a key).
    ///
    /// ```
    /// use hummer_channel::server::StoreKey;
    ///
    /// let key = StoreKey::Inbox { appid: 7, uid: 42 };
    /// assert_eq!(key.name(), "i/7/42");
    /// assert_eq!(StoreKey::parse(&key.name()), Some(key));
    /// ```
    pub fn name(&self) -> String {
        match self {
            StoreKey::Channel { appid, region, id } => {
                let mut s = format!("c/{appid}/{region}/");
                for b in id.as_bytes() {
                    s.push_str(&format!("{b:02x}"));
                }
                s
            }
            StoreKey::Inbox { appid, uid } => format!("i/{appid}/{uid}"),
            StoreKey::Instance {
                appid,
                uid,
                instance,
            } => format!("n/{appid}/{uid}/{instance}"),
            StoreKey::Sends { of } => format!("s/{}", of.name()),
        }
    }

    /// The key named `name` ([`StoreKey::name`]'s form), if it is one.
    pub fn parse(name: &str) -> Option<StoreKey> {
        if let Some(stream) = name.strip_prefix("s/") {
            return match StoreKey::parse(stream)? {
                of @ (StoreKey::Channel { .. } | StoreKey::Inbox { .. }) => {
                    Some(StoreKey::Sends { of: Box::new(of) })
                }
                _ => None,
            };
        }
        let mut parts = name.split('/');
        let kind = parts.next()?;
        let appid = parts.next()?.parse().ok()?;
        let key = match kind {
            "c" => {
                let region = parts.next()?.parse().ok()?;
                let hex = parts.next()?.as_bytes();
                if hex.len() % 2 != 0 {
                    return None;
                }
                let bytes = hex
                    .chunks(2)
                    .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok())
                    .collect::<Option<Vec<u8>>>()?;
                StoreKey::Channel {
                    appid,
                    region,
                    id: String::from_utf8(bytes).ok()?,
                }
            }
            "i" => StoreKey::Inbox {
                appid,
                uid: parts.next()?.parse().ok()?,
            },
            "n" => StoreKey::Instance {
                appid,
                uid: parts.next()?.parse().ok()?,
                instance: parts.next()?.parse().ok()?,
            },
            _ => return None,
        };
        match parts.next() {
            None if key.name() == name => Some(key),
            _ => None,
        }
    }
}

/// One change to the store. A batch's writes apply in order.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreWrite {
    /// Sets the object's record (replacing any), keeping its entries.
    Put {
        /// The object.
        key: StoreKey,
        /// Its record, opaque to the store.
        record: Bytes,
    },
    /// Removes the object: its record and all its entries.
    Delete {
        /// The object.
        key: StoreKey,
    },
    /// Adds entry `seq` to the object's entries (sequence numbers only grow
    /// within an object's life).
    Append {
        /// The object.
        key: StoreKey,
        /// The entry's sequence number (≥ 1).
        seq: u64,
        /// The entry, opaque to the store.
        entry: Bytes,
    },
    /// Removes the object's entries numbered below `seq`.
    TrimBelow {
        /// The object.
        key: StoreKey,
        /// The first sequence number kept.
        seq: u64,
    },
}

impl StoreWrite {
    /// The object it changes.
    pub fn key(&self) -> &StoreKey {
        match self {
            StoreWrite::Put { key, .. }
            | StoreWrite::Delete { key }
            | StoreWrite::Append { key, .. }
            | StoreWrite::TrimBelow { key, .. } => key,
        }
    }
}

/// Writes to make durable together, all or nothing, after every batch
/// numbered before it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoreBatch {
    /// Its number: 1 for a hub's first batch, then one more each.
    pub number: u64,
    /// Its writes, in order.
    pub writes: Vec<StoreWrite>,
}

/// One object as a store kept it: its record and its entries, oldest first.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoredObject {
    /// Its name.
    pub key: StoreKey,
    /// Its record (the last `Put`).
    pub record: Bytes,
    /// Its entries by sequence number, ascending.
    pub entries: Vec<(u64, Bytes)>,
}

impl StoredObject {
    /// An object read back from a store.
    pub fn new(key: StoreKey, record: Bytes, entries: Vec<(u64, Bytes)>) -> StoredObject {
        StoredObject {
            key,
            record,
            entries,
        }
    }
}

impl StoreBatch {
    /// A batch (for stores' tests; hubs make their own).
    pub fn new(number: u64, writes: Vec<StoreWrite>) -> StoreBatch {
        StoreBatch { number, writes }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_read_back_and_refuse_what_is_not_one() {
        let keys = [
            StoreKey::Channel {
                appid: 1,
                region: -3,
                id: "room/1 ü".into(),
            },
            StoreKey::Channel {
                appid: 1,
                region: 0,
                id: String::new(),
            },
            StoreKey::Inbox { appid: 2, uid: 9 },
            StoreKey::Instance {
                appid: 3,
                uid: u64::MAX,
                instance: 5,
            },
            StoreKey::Sends {
                of: Box::new(StoreKey::Inbox { appid: 2, uid: 9 }),
            },
            StoreKey::Sends {
                of: Box::new(StoreKey::Channel {
                    appid: 1,
                    region: 2,
                    id: "x".into(),
                }),
            },
        ];
        for k in keys {
            assert_eq!(StoreKey::parse(&k.name()), Some(k.clone()), "{}", k.name());
        }
        assert_eq!(
            StoreKey::Channel {
                appid: 1,
                region: 0,
                id: "ab".into()
            }
            .name(),
            "c/1/0/6162"
        );
        let sends = StoreKey::Sends {
            of: Box::new(StoreKey::Inbox { appid: 2, uid: 9 }),
        };
        assert_eq!(sends.name(), "s/i/2/9");
        assert_eq!(sends.kind(), StoreKind::Sends);
        for shards in [1, 3, 8] {
            assert_eq!(sends.shard(shards), uid_shard(2, 9, shards));
        }
        for bad in [
            "",
            "x/1/2",
            "i/1",
            "i/1/2/3",
            "c/1/0/6",
            "c/1/0/zz",
            "c/1/0/ff",
            "n/1/2",
            "i/01/2",
            "i/1/+2",
            "s/",
            "s/n/1/2/3",
            "s/s/i/1/2",
            "s/i/1",
            "S/i/1/2",
        ] {
            assert_eq!(StoreKey::parse(bad), None, "{bad}");
        }
    }
}
