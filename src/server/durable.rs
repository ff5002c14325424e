//! A hub's durable state: what changed since the last batch, the batches
//! that carry it to a store, the fence that holds output until the changes
//! it shows are stored, and the restore from what a store kept.
//!
//! What lasts: channels (stream epoch and head, attributes, members and
//! their user attributes, departed members, pending notices), inboxes
//! (epoch, head, acknowledged position), instances, and every retained
//! message with the send that made it (its message id and reply: a re-send
//! after a restart is answered as the first; a send whose message
//! retention evicted within the dedupe window keeps its record in the
//! stream's sends object, `recent_sends.rs`). What does not: links,
//! rate-limit and ban records, unreliable sends' ids, token timers. A restart is thereby the same as every link being
//! lost at once: each instance is kept for the grace period from the
//! restore, and a client that resumes within it finds its memberships and
//! streams as they were, with nothing lost.
//!
//! Changes are collected, not written one by one: each batch carries every
//! record changed since the last one once, with the retained messages
//! appended and the evictions trimmed. Output is tagged with the batch
//! that holds what it shows; [`Fence`] releases it once that batch is
//! stored.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;
use prost::Message as _;

use super::channel::channel_key_hash;
use super::channel::Channel;
use super::hub::{Hub, LogId, Timer};
use super::inbox::Inbox;
use super::presence::Instance;
use super::recent_sends::{RecentSend, RecentSends};
use super::sent_ids::Destination;
use super::seq_log::{Retention, SeqLog};
use super::shard::ShardId;
use super::store::{StoreBatch, StoreKey, StoreWrite, StoredObject};
use super::{uid_shard, ConnId, IdMap};
use crate::types::Region;
use crate::wire;

/// What changed since the last batch, and where the batches are.
#[derive(Debug, Default)]
pub(crate) struct Durable {
    channels: BTreeSet<u32>,
    inboxes: BTreeSet<(u32, u64)>,
    instances: BTreeSet<u64>,
    /// Logs appended to or evicted from: their trim (or, emptied, their
    /// record with its head) goes in the next batch.
    logs: BTreeSet<LogId>,
    /// Appends and deletes, in the order they happened.
    writes: Vec<StoreWrite>,
    /// The last batch made, and the last one stored.
    sealed: u64,
    stored: u64,
    /// Bytes of frames held for each link (a replay's budget counts them).
    held: IdMap<ConnId, usize>,
    /// The objects deleted by batches made but not yet stored, with their
    /// batch: a store that loses or refuses a batch gets them again.
    deleting: Vec<(u64, StoreKey)>,
    /// The sends behind each stream's messages, within the dedupe window.
    sends: RecentSends,
}

impl Durable {
    /// A hub's, keeping each sender's last `max_sends` sends per stream
    /// (`send_dedupe_max`).
    pub fn new(max_sends: usize) -> Durable {
        Durable {
            sends: RecentSends::new(max_sends),
            ..Durable::default()
        }
    }

    fn is_clean(&self) -> bool {
        self.channels.is_empty()
            && self.inboxes.is_empty()
            && self.instances.is_empty()
            && self.logs.is_empty()
            && self.writes.is_empty()
    }

    /// Bytes of frames for `conn` held until the store catches up.
    pub fn held_for(&self, conn: ConnId) -> usize {
        self.held.get(&conn).copied().unwrap_or(0)
    }

    /// A frame of `bytes` for `conn` is held.
    pub fn hold(&mut self, conn: ConnId, bytes: usize) {
        *self.held.entry(conn).or_default() += bytes;
    }

    /// A held frame of `bytes` for `conn` went out.
    pub fn release(&mut self, conn: ConnId, bytes: usize) {
        if let Some(h) = self.held.get_mut(&conn) {
            *h = h.saturating_sub(bytes);
            if *h == 0 {
                self.held.remove(&conn);
            }
        }
    }

    /// Log `log` lost entries (aged out at a sweep, for callers holding
    /// other fields of the hub): its trim goes in the next batch.
    pub fn touch_log(&mut self, log: LogId) {
        self.logs.insert(log);
    }

    /// Object `key` is gone.
    pub fn forget(&mut self, key: StoreKey) {
        self.writes.push(StoreWrite::Delete { key });
    }

    /// Stream `log` (object `key`) is gone, with its sends.
    pub fn forget_stream(&mut self, log: LogId, key: StoreKey) {
        self.sends.forget(log);
        let sends = StoreKey::Sends {
            of: Box::new(key.clone()),
        };
        self.forget(key);
        self.forget(sends);
    }

    /// Forgets the sends past the dedupe `window` at `now`; the streams
    /// whose sends object held some get a trim in the next batch.
    pub fn expire_sends(&mut self, now: Instant, window: Duration) {
        for log in self.sends.expire(now, window) {
            self.logs.insert(log);
        }
    }

    /// The batch that will hold every change made so far.
    fn tag(&self) -> u64 {
        self.sealed + u64::from(!self.is_clean())
    }
}

/// Holds output tagged with a batch until that batch is stored. Without a
/// store every tag is 0 and nothing waits.
pub(crate) struct Fence;

impl Fence {
    /// The tag for output produced now.
    pub fn tag(store: Option<&Durable>) -> u64 {
        store.map_or(0, Durable::tag)
    }

    /// Whether output tagged `tag` may go.
    pub fn released(store: Option<&Durable>, tag: u64) -> bool {
        store.map_or(0, |d| d.stored) >= tag
    }
}

/// Output in order, each item tagged with the store batch it waits for:
/// the fence's one queue, for gateways, other shards and backends alike.
#[derive(Debug)]
pub(crate) struct Fenced<T>(VecDeque<(u64, T)>);

impl<T> Default for Fenced<T> {
    fn default() -> Self {
        Fenced(VecDeque::new())
    }
}

impl<T> Fenced<T> {
    /// Queues `item` after the changes made so far (to `store`).
    pub fn push(&mut self, store: Option<&Durable>, item: T) {
        self.0.push_back((Fence::tag(store), item));
    }

    /// The oldest item, once the batch it waits for is stored.
    pub fn pop(&mut self, store: Option<&Durable>) -> Option<T> {
        let &(tag, _) = self.0.front()?;
        if !Fence::released(store, tag) {
            return None;
        }
        self.0.pop_front().map(|(_, item)| item)
    }

    /// The newest item.
    pub fn back(&self) -> Option<&T> {
        self.0.back().map(|(_, item)| item)
    }

    /// Takes the newest item back.
    pub fn pop_back(&mut self) -> Option<T> {
        self.0.pop_back().map(|(_, item)| item)
    }
}

/// A channel's record.
#[derive(Clone, PartialEq, prost::Message)]
struct ChannelRecord {
    #[prost(uint64, tag = "1")]
    epoch: u64,
    #[prost(uint64, tag = "2")]
    head: u64,
    #[prost(btree_map = "string, string", tag = "3")]
    attrs: BTreeMap<String, String>,
    #[prost(uint64, tag = "4")]
    attrs_uid: u64,
    #[prost(uint64, tag = "5")]
    attrs_ts: u64,
    #[prost(message, repeated, tag = "6")]
    members: Vec<MemberRecord>,
    #[prost(message, repeated, tag = "7")]
    user_attrs: Vec<UserAttrsRecord>,
    #[prost(message, repeated, tag = "8")]
    departed: Vec<DepartedRecord>,
    #[prost(uint64, repeated, tag = "9")]
    joined: Vec<u64>,
    #[prost(uint64, repeated, tag = "10")]
    left: Vec<u64>,
    #[prost(uint64, tag = "11")]
    messages: u64,
    /// Its number: pushes carry it, retained ones too.
    #[prost(uint32, tag = "12")]
    num: u32,
}

#[derive(Clone, PartialEq, prost::Message)]
struct MemberRecord {
    #[prost(uint64, tag = "1")]
    uid: u64,
    #[prost(uint64, tag = "2")]
    instance: u64,
    /// Where its history starts.
    #[prost(uint64, tag = "3")]
    since: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
struct UserAttrsRecord {
    #[prost(uint64, tag = "1")]
    uid: u64,
    #[prost(btree_map = "string, string", tag = "2")]
    attrs: BTreeMap<String, String>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct DepartedRecord {
    #[prost(uint64, tag = "1")]
    uid: u64,
    #[prost(uint64, tag = "2")]
    since: u64,
    #[prost(uint64, tag = "3")]
    at_ms: u64,
}

/// An inbox's record.
#[derive(Clone, PartialEq, prost::Message)]
struct InboxRecord {
    #[prost(uint64, tag = "1")]
    epoch: u64,
    #[prost(uint64, tag = "2")]
    head: u64,
    #[prost(uint64, tag = "3")]
    acked: u64,
}

/// An instance's record (its memberships are in its channels' records).
#[derive(Clone, PartialEq, prost::Message)]
struct InstanceRecord {
    #[prost(int32, optional, tag = "1")]
    region: Option<i32>,
    #[prost(bool, tag = "2")]
    anonymous: bool,
    #[prost(uint64, optional, tag = "3")]
    token_exp: Option<u64>,
    /// Its place among its uid's instances (oldest login first).
    #[prost(uint32, tag = "4")]
    order: u32,
}

/// A retained message as stored: when it was recorded, its encoded push,
/// and the send that made it (so that a re-send after a restart is
/// answered as the first: the record of a send is stored with what it
/// delivered, in one batch of the shard that delivered it).
#[derive(Clone, PartialEq, prost::Message)]
struct LogEntry {
    #[prost(uint64, tag = "1")]
    at_ms: u64,
    #[prost(bytes = "bytes", tag = "2")]
    frame: Bytes,
    #[prost(message, optional, tag = "3")]
    sent: Option<SentRef>,
}

/// The send behind a retained message: its sender, message id and reply
/// (the reply's seq is the entry's).
#[derive(Copy, Clone, PartialEq, prost::Message)]
pub(super) struct SentRef {
    #[prost(uint64, tag = "1")]
    pub uid: u64,
    #[prost(uint64, tag = "2")]
    pub message_id: u64,
    #[prost(uint64, tag = "3")]
    pub timestamp_ms: u64,
    #[prost(bool, tag = "4")]
    pub delivered_online: bool,
}

/// An entry of a [`StoreKey::Sends`] object: when the send was recorded,
/// and the send (the reply's seq is the entry's).
#[derive(Clone, PartialEq, prost::Message)]
struct SendEntry {
    #[prost(uint64, tag = "1")]
    at_ms: u64,
    #[prost(message, optional, tag = "2")]
    sent: Option<SentRef>,
}

impl SentRef {
    /// As an entry of a sends object, recorded at `at_ms`.
    pub(super) fn encode_entry(self, at_ms: u64) -> Bytes {
        SendEntry {
            at_ms,
            sent: Some(self),
        }
        .encode_to_vec()
        .into()
    }

    /// `(recorded at, send)` of a sends object's entry.
    pub(super) fn decode_entry(entry: Bytes) -> Option<(u64, SentRef)> {
        let e = SendEntry::decode(entry).ok()?;
        Some((e.at_ms, e.sent?))
    }
}

fn encode_entry(at_ms: u64, frame: &Bytes, sent: Option<SentRef>) -> Bytes {
    LogEntry {
        at_ms,
        frame: frame.clone(),
        sent,
    }
    .encode_to_vec()
    .into()
}

fn decode_entry(entry: Bytes) -> Option<LogEntry> {
    LogEntry::decode(entry).ok().filter(|e| !e.frame.is_empty())
}

/// What [`Hub::restore`] took from a store.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Restored {
    /// Channels of this shard restored.
    pub channels: usize,
    /// Inboxes of this shard restored.
    pub inboxes: usize,
    /// Instances of this shard restored (kept for the grace period).
    pub instances: usize,
    /// Retained messages restored (within retention now).
    pub messages: usize,
    /// Sends of those messages within the dedupe window: their re-sends
    /// are answered as the first and deliver nothing.
    pub sends: usize,
    /// Objects of this shard that could not be read (skipped).
    pub unreadable: usize,
}

fn channel_key(ch: &Channel) -> StoreKey {
    StoreKey::Channel {
        appid: ch.appid,
        region: ch.region.to_wire(),
        id: ch.id.clone(),
    }
}

fn encode_channel(num: u32, ch: &Channel, unix_ms: impl Fn(Instant) -> u64) -> Bytes {
    let record = ChannelRecord {
        num,
        epoch: ch.log.epoch(),
        head: ch.log.head(),
        attrs: ch.attrs.clone(),
        attrs_uid: ch.attrs_uid,
        attrs_ts: ch.attrs_ts,
        members: ch
            .members
            .iter()
            .flat_map(|(&uid, insts)| insts.iter().map(move |&instance| (uid, instance)))
            .map(|(uid, instance)| MemberRecord {
                uid,
                instance,
                since: ch.since.get(&instance).copied().unwrap_or(0),
            })
            .collect(),
        user_attrs: ch
            .user_attrs
            .iter()
            .map(|(&uid, attrs)| UserAttrsRecord {
                uid,
                attrs: attrs.clone(),
            })
            .collect(),
        departed: ch
            .departed
            .iter()
            .map(|(&uid, &(since, at))| DepartedRecord {
                uid,
                since,
                at_ms: unix_ms(at),
            })
            .collect(),
        joined: ch.joined.iter().copied().collect(),
        left: ch.left.iter().copied().collect(),
        messages: ch.messages,
    };
    record.encode_to_vec().into()
}

impl Hub {
    /// The next batch of changes for the store, if there are any (see
    /// [`StoreBatch`]). Each call makes a new batch of everything changed
    /// since the last; a runner may keep several in flight, written in
    /// order. `None` without a store (`ServerConfig::durable` off).
    pub fn poll_store(&mut self) -> Option<StoreBatch> {
        let d = self.store.as_mut()?;
        if d.is_clean() {
            return None;
        }
        let mut writes = std::mem::take(&mut d.writes);
        let logs = std::mem::take(&mut d.logs);
        let mut channels = std::mem::take(&mut d.channels);
        let inboxes = std::mem::take(&mut d.inboxes);
        let instances = std::mem::take(&mut d.instances);
        d.sealed += 1;
        let number = d.sealed;
        let mut inboxes = inboxes;
        let (now, unix_now) = (self.clock.now(), self.clock.unix_ms());
        let window = self.config.send_dedupe_window;
        for log in logs {
            let (key, seq) = match log {
                LogId::Channel(n) => {
                    let Some(ch) = self.channels.get(&n) else {
                        continue;
                    };
                    // Emptied logs: the record carries the head.
                    if ch.log.is_empty() {
                        channels.insert(n);
                    }
                    (channel_key(ch), ch.log.kept_from())
                }
                LogId::Inbox(appid, uid) => {
                    let Some(b) = self.inboxes.get(&(appid, uid)) else {
                        continue;
                    };
                    if b.log.is_empty() {
                        inboxes.insert((appid, uid));
                    }
                    (StoreKey::Inbox { appid, uid }, b.log.kept_from())
                }
            };
            // The records of the sends it evicts go in the same batch.
            if let Some(d) = self.store.as_mut() {
                let at_ms = |at| unix_ms_of(now, unix_now, at);
                d.sends
                    .writes(log, &key, seq, (now, window), at_ms, &mut writes);
            }
            writes.push(StoreWrite::TrimBelow { key, seq });
        }
        for n in channels {
            if let Some(ch) = self.channels.get(&n) {
                let record = encode_channel(n, ch, |at| unix_ms_of(now, unix_now, at));
                writes.push(StoreWrite::Put {
                    key: channel_key(ch),
                    record,
                });
            }
        }
        for key in inboxes {
            self.put_inbox(&mut writes, key);
        }
        for inst in instances {
            if let Some(i) = self.instances.get(&inst) {
                let order = self
                    .users
                    .get(&(i.appid, i.uid))
                    .and_then(|ids| ids.iter().position(|&x| x == inst))
                    .unwrap_or(0);
                let record = InstanceRecord {
                    region: i.region.map(Region::to_wire),
                    anonymous: i.is_anonymous,
                    token_exp: i.token_exp,
                    order: u32::try_from(order).unwrap_or(u32::MAX),
                };
                writes.push(StoreWrite::Put {
                    key: StoreKey::Instance {
                        appid: i.appid,
                        uid: i.uid,
                        instance: inst,
                    },
                    record: record.encode_to_vec().into(),
                });
            }
        }
        if let Some(d) = self.store.as_mut() {
            for w in &writes {
                if let StoreWrite::Delete { key } = w {
                    d.deleting.push((number, key.clone()));
                }
            }
        }
        Some(StoreBatch::new(number, writes))
    }

    fn put_inbox(&self, writes: &mut Vec<StoreWrite>, (appid, uid): (u32, u64)) {
        if let Some(b) = self.inboxes.get(&(appid, uid)) {
            let record = InboxRecord {
                epoch: b.log.epoch(),
                head: b.log.head(),
                acked: b.acked,
            };
            writes.push(StoreWrite::Put {
                key: StoreKey::Inbox { appid, uid },
                record: record.encode_to_vec().into(),
            });
        }
    }

    /// The store batch that holds every change made so far (0 without a
    /// store): an answer given now (a server API call's) shows nothing a
    /// crash could undo once [`Hub::is_stored`] says this batch is.
    pub fn store_tag(&self) -> u64 {
        Fence::tag(self.store.as_ref())
    }

    /// Whether batch `tag` is stored (always, without a store).
    pub fn is_stored(&self, tag: u64) -> bool {
        Fence::released(self.store.as_ref(), tag)
    }

    /// Batches up to `number` are durable: output that waited for them
    /// may go ([`Hub::poll_gateway`], [`Hub::poll_shard`]).
    pub fn handle_stored(&mut self, number: u64) {
        if let Some(d) = self.store.as_mut() {
            d.stored = d.stored.max(number.min(d.sealed));
            let stored = d.stored;
            d.deleting.retain(|(batch, _)| *batch > stored);
        }
    }

    /// The store lost what it held (a restart without persistence): the
    /// next batch writes this shard's whole lasting state again. Batches
    /// in flight count as not stored; output waiting for them goes once
    /// that batch is stored.
    pub fn handle_store_lost(&mut self) {
        let Some(d) = self.store.as_mut() else {
            return;
        };
        // What batches not stored and the changes not yet in one deleted
        // stays deleted: the store may still hold it (a refused batch
        // applies its writes up to the refused one).
        let mut writes: Vec<StoreWrite> = std::mem::take(&mut d.deleting)
            .into_iter()
            .map(|(_, key)| key)
            .chain(d.writes.drain(..).filter_map(|w| match w {
                StoreWrite::Delete { key } => Some(key),
                _ => None,
            }))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .map(|key| StoreWrite::Delete { key })
            .collect();
        let logs = self
            .channels
            .iter()
            .map(|(&n, ch)| (LogId::Channel(n), channel_key(ch), &ch.log))
            .chain(self.inboxes.iter().map(|(&(appid, uid), b)| {
                (
                    LogId::Inbox(appid, uid),
                    StoreKey::Inbox { appid, uid },
                    &b.log,
                )
            }));
        let (now, unix_now) = (self.clock.now(), self.clock.unix_ms());
        let at_ms = |at| unix_ms_of(now, unix_now, at);
        let now_and_window = (now, self.config.send_dedupe_window);
        for (id, key, log) in logs {
            writes.push(StoreWrite::Delete { key: key.clone() });
            for (seq, at, frame) in log.entries() {
                writes.push(StoreWrite::Append {
                    key: key.clone(),
                    seq,
                    entry: encode_entry(at_ms(at), frame, d.sends.sent(id, seq)),
                });
            }
            let first = log.kept_from();
            d.sends
                .write_again(id, &key, first, now_and_window, at_ms, &mut writes);
        }
        for (&inst, i) in &self.instances {
            writes.push(StoreWrite::Delete {
                key: StoreKey::Instance {
                    appid: i.appid,
                    uid: i.uid,
                    instance: inst,
                },
            });
        }
        d.writes = writes;
        d.logs.clear();
        d.channels = self.channels.keys().copied().collect();
        d.inboxes = self.inboxes.keys().copied().collect();
        d.instances = self.instances.keys().copied().collect();
    }

    /// Takes this shard's part of what a store kept (`objects`: everything
    /// the store returned; each shard picks its own). Call once, before
    /// any other input. Instances come back as if their links had just
    /// been lost: each is kept for the grace period from `now`.
    pub fn restore(&mut self, now: Instant, objects: &[StoredObject]) -> Restored {
        let now = self.clock.tick(now);
        let unix_now = self.clock.unix_ms();
        let shards = self.shards;
        let mut done = Restored::default();
        // Channels keep their numbers (pushes carry them, retained ones
        // too). Every shard reads every channel: a home learns its
        // instances' channels of other shards, and all number new channels
        // past every restored one.
        let mut nums = BTreeSet::new();
        let mut mine = Vec::new();
        // The instances kept: a channel's member whose instance is not
        // (its home stored its removal, this shard had not stored the
        // member's when the process died) left the channel.
        let live: BTreeSet<(u32, u64, u64)> = objects
            .iter()
            .filter_map(|o| match o.key {
                StoreKey::Instance {
                    appid,
                    uid,
                    instance,
                } if instance != 0 && InstanceRecord::decode(o.record.clone()).is_ok() => {
                    Some((appid, uid, instance))
                }
                _ => None,
            })
            .collect();
        let mut memberships: BTreeMap<u64, Vec<(ShardId, u32, StoreKey)>> = BTreeMap::new();
        for o in objects {
            let StoreKey::Channel { appid, region, .. } = &o.key else {
                continue;
            };
            let owner = o.key.shard(shards);
            let record = ChannelRecord::decode(o.record.clone())
                .ok()
                .filter(|r| r.epoch != 0 && r.num != 0 && Region::from_wire(*region).is_some());
            let Some(mut r) = record.filter(|r| nums.insert(r.num)) else {
                if owner == self.shard {
                    done.unreadable += 1;
                }
                continue;
            };
            let before: BTreeSet<u64> = r.members.iter().map(|m| m.uid).collect();
            let count = r.members.len();
            r.members
                .retain(|m| live.contains(&(*appid, m.uid, m.instance)));
            let changed = r.members.len() != count;
            if changed && r.members.is_empty() {
                // Emptied: its attributes go, as a last leave's do.
                r.attrs.clear();
                r.attrs_uid = 0;
                r.attrs_ts = 0;
            }
            let gone: Vec<u64> = before
                .into_iter()
                .filter(|uid| !r.members.iter().any(|m| m.uid == *uid))
                .collect();
            for uid in gone {
                // Its leave is told to the others, as if just now.
                if let Some(at) = r.joined.iter().position(|&u| u == uid) {
                    r.joined.remove(at);
                } else if !r.left.contains(&uid) {
                    r.left.push(uid);
                }
            }
            for m in &r.members {
                if uid_shard(*appid, m.uid, shards) == self.shard {
                    memberships
                        .entry(m.instance)
                        .or_default()
                        .push((owner, r.num, o.key.clone()));
                }
            }
            if owner == self.shard {
                mine.push((r, o, changed));
            }
        }
        let retention = self.config.channel_retention();
        let max_age = self.config.channel_retention_age;
        for (r, o, changed) in mine {
            let StoreKey::Channel { appid, region, id } = o.key.clone() else {
                continue;
            };
            let Some(region) = Region::from_wire(region) else {
                continue;
            };
            let num = r.num;
            let log = restore_log(r.epoch, r.head, &o.entries, now, unix_now, retention);
            done.messages += log.entries().count();
            let bytes = log.bytes();
            let mut ch = Channel::new(appid, region, id.clone(), log);
            ch.attrs = r.attrs;
            ch.attrs_uid = r.attrs_uid;
            ch.attrs_ts = r.attrs_ts;
            ch.messages = r.messages;
            for m in &r.members {
                ch.members.entry(m.uid).or_default().insert(m.instance);
                ch.since.insert(m.instance, m.since);
                let home = uid_shard(appid, m.uid, shards);
                if home != self.shard {
                    self.guests
                        .entry(m.instance)
                        .or_insert_with(|| super::cross::Guest {
                            home,
                            channels: BTreeSet::new(),
                        })
                        .channels
                        .insert(num);
                }
            }
            ch.user_attrs = r
                .user_attrs
                .into_iter()
                .filter(|u| ch.members.contains_key(&u.uid))
                .map(|u| (u.uid, u.attrs))
                .collect();
            for d in r.departed {
                let age = Duration::from_millis(unix_now.saturating_sub(d.at_ms));
                if let (true, Some(at)) = (age < max_age, now.checked_sub(age)) {
                    ch.departed.insert(d.uid, (d.since, at));
                }
            }
            ch.joined = r.joined.into_iter().collect();
            ch.left = r.left.into_iter().collect();
            if !ch.joined.is_empty() || !ch.left.is_empty() {
                ch.notice_pending = true;
                self.timers.insert((now, Timer::Notice(num)));
            }
            self.channel_index.insert((appid, region, id), num);
            self.channels.insert(num, ch);
            if changed {
                self.touch_channel(num);
            }
            self.retained(appid, bytes);
            done.channels += 1;
        }
        // New numbers go on past the highest restored one, in this shard's
        // residue class.
        let step = u32::from(shards);
        let first = 1 + u32::from(self.shard.0);
        let above = nums.last().copied().unwrap_or(0);
        let rounds = above.saturating_sub(first) / step + 1;
        self.next_channel = first.wrapping_add(rounds.wrapping_mul(step));
        if above < first {
            self.next_channel = first;
        }

        let inbox_retention = self.config.inbox_retention();
        let mut restored_instances: Vec<(u32, u64, u64, InstanceRecord)> = Vec::new();
        let mine = self.shard;
        for o in objects.iter().filter(|o| o.key.shard(shards) == mine) {
            match o.key {
                StoreKey::Inbox { appid, uid } => {
                    let Ok(r) = InboxRecord::decode(o.record.clone()) else {
                        done.unreadable += 1;
                        continue;
                    };
                    if r.epoch == 0 {
                        done.unreadable += 1;
                        continue;
                    }
                    let log =
                        restore_log(r.epoch, r.head, &o.entries, now, unix_now, inbox_retention);
                    done.messages += log.entries().count();
                    let bytes = log.bytes();
                    let acked = r.acked.min(log.head());
                    self.inboxes.insert((appid, uid), Inbox { log, acked });
                    self.retained(appid, bytes);
                    done.inboxes += 1;
                }
                StoreKey::Instance {
                    appid,
                    uid,
                    instance,
                } => match InstanceRecord::decode(o.record.clone()) {
                    Ok(r) if instance != 0 => restored_instances.push((appid, uid, instance, r)),
                    _ => done.unreadable += 1,
                },
                _ => {}
            }
        }
        self.restore_sends(now, unix_now, objects, &mut done);
        restored_instances.sort_by_key(|(a, u, inst, r)| (*a, *u, r.order, *inst));
        for (appid, uid, inst, r) in restored_instances {
            let mut channels = BTreeSet::new();
            let mut keys = BTreeMap::new();
            let mut shard_mask = 0u64;
            for (owner, num, key) in memberships.remove(&inst).unwrap_or_default() {
                channels.insert(num);
                if owner != self.shard {
                    if let StoreKey::Channel { region, id, .. } = key {
                        keys.insert(
                            num,
                            crate::wire::ChannelKey {
                                region,
                                channel_id: id,
                            },
                        );
                    }
                    shard_mask |= 1 << owner.0;
                }
            }
            self.instances.insert(
                inst,
                Instance {
                    appid,
                    uid,
                    conn: None,
                    lost_at: Some(now),
                    region: r.region.and_then(Region::from_wire),
                    is_anonymous: r.anonymous,
                    token_exp: r.token_exp,
                    channels,
                    rate: Default::default(),
                    keys,
                    shard_mask,
                },
            );
            self.users.entry((appid, uid)).or_default().push(inst);
            self.timers.insert((
                super::add(now, self.config.presence_grace),
                Timer::Grace(inst),
            ));
            done.instances += 1;
        }
        done
    }

    /// The sends behind the stored messages (with the messages, and in
    /// the streams' sends objects), within the dedupe window: remembered
    /// where re-sends are looked up, at the sender's home (a client's) and
    /// at the shard of the stream (the server API's), and kept with this
    /// shard's streams for when retention evicts their messages.
    fn restore_sends(
        &mut self,
        now: Instant,
        unix_now: u64,
        objects: &[StoredObject],
        done: &mut Restored,
    ) {
        let shards = self.shards;
        let window = self.config.send_dedupe_window;
        let mut sends = Vec::new();
        // This shard's streams: their sends, and the last seq of each
        // sends object.
        let mut streams: BTreeMap<LogId, (Vec<RecentSend>, u64)> = BTreeMap::new();
        for o in objects {
            let (stream, in_sends_object) = match &o.key {
                StoreKey::Sends { of } => (&**of, true),
                key => (key, false),
            };
            let (appid, to) = match stream {
                StoreKey::Channel { appid, region, id } => {
                    let key = wire::ChannelKey {
                        region: *region,
                        channel_id: id.clone(),
                    };
                    (*appid, Destination::Channel(channel_key_hash(Some(&key))))
                }
                StoreKey::Inbox { appid, uid } => (*appid, Destination::User(*uid)),
                _ => continue,
            };
            let owner = stream.shard(shards);
            let log = (owner == self.shard)
                .then(|| self.restored_log(stream))
                .flatten();
            if let (Some(log), true, Some(&(last, _))) = (log, in_sends_object, o.entries.last()) {
                streams.entry(log).or_default().1 = last;
            }
            for (seq, entry) in &o.entries {
                let decoded = match in_sends_object {
                    true => SentRef::decode_entry(entry.clone()),
                    false => decode_entry(entry.clone()).and_then(|e| Some((e.at_ms, e.sent?))),
                };
                let Some((at_ms, sent)) = decoded else {
                    continue;
                };
                let age = Duration::from_millis(unix_now.saturating_sub(at_ms));
                if sent.message_id == 0 || age >= window {
                    continue;
                }
                let Some(at) = now.checked_sub(age) else {
                    continue;
                };
                if let Some(log) = log {
                    streams.entry(log).or_default().0.push((*seq, at, sent));
                }
                if owner == self.shard || uid_shard(appid, sent.uid, shards) == self.shard {
                    let reply = wire::SendReply {
                        timestamp_ms: sent.timestamp_ms,
                        delivered_online: sent.delivered_online,
                        seq: *seq,
                    };
                    sends.push((at, (appid, sent.uid), sent.message_id, to, reply));
                }
            }
        }
        // Oldest first, as they were remembered.
        sends.sort_by_key(|s| s.0);
        for (at, who, id, to, reply) in sends {
            self.remember_sent_at(who, id, to, &reply, at);
            done.sends += 1;
        }
        if let Some(d) = self.store.as_mut() {
            for (log, (list, written)) in streams {
                d.sends.restore(log, list, written);
            }
        }
    }

    /// The log of restored stream `key`, if this shard has it.
    fn restored_log(&self, key: &StoreKey) -> Option<LogId> {
        match key {
            StoreKey::Channel { appid, region, id } => {
                let region = Region::from_wire(*region)?;
                let num = self.channel_index.get(&(*appid, region, id.clone()))?;
                Some(LogId::Channel(*num))
            }
            StoreKey::Inbox { appid, uid } => {
                let log = LogId::Inbox(*appid, *uid);
                self.inboxes.contains_key(&(*appid, *uid)).then_some(log)
            }
            _ => None,
        }
    }

    /// A record of channel `num` changed.
    pub(super) fn touch_channel(&mut self, num: u32) {
        if let Some(d) = self.store.as_mut() {
            d.channels.insert(num);
        }
    }

    /// A record of inbox `key` changed.
    pub(super) fn touch_inbox(&mut self, key: (u32, u64)) {
        if let Some(d) = self.store.as_mut() {
            d.inboxes.insert(key);
        }
    }

    /// Instance `inst` was made or changed.
    pub(super) fn touch_instance(&mut self, inst: u64) {
        if let Some(d) = self.store.as_mut() {
            d.instances.insert(inst);
        }
    }

    /// Every instance of `(appid, uid)` changed (their login order, which
    /// each record holds as a place).
    pub(super) fn touch_instances_of(&mut self, key: (u32, u64)) {
        if let (Some(d), Some(ids)) = (self.store.as_mut(), self.users.get(&key)) {
            d.instances.extend(ids.iter().copied());
        }
    }

    /// A log lost entries (evictions): its trim goes in the next batch.
    pub(super) fn touch_log(&mut self, log: LogId) {
        if let Some(d) = self.store.as_mut() {
            d.logs.insert(log);
        }
    }

    /// Push `seq` was retained by `log` (named `key`) with `frame`.
    pub(super) fn store_append(
        &mut self,
        log: LogId,
        key: StoreKey,
        seq: u64,
        frame: &Bytes,
        sent: Option<SentRef>,
    ) {
        let (now, unix_ms) = (self.clock.now(), self.clock.unix_ms());
        if let Some(d) = self.store.as_mut() {
            d.writes.push(StoreWrite::Append {
                key,
                seq,
                entry: encode_entry(unix_ms, frame, sent),
            });
            d.logs.insert(log);
            if let Some(sent) = sent.filter(|s| s.message_id != 0) {
                d.sends.record(log, seq, now, sent);
            }
        }
    }

    /// The object `key` is gone.
    pub(super) fn store_delete(&mut self, key: StoreKey) {
        if let Some(d) = self.store.as_mut() {
            d.forget(key);
        }
    }

    /// Stream `log` (object `key`) is gone, with its sends.
    pub(super) fn store_delete_stream(&mut self, log: LogId, key: StoreKey) {
        if let Some(d) = self.store.as_mut() {
            d.forget_stream(log, key);
        }
    }
}

impl std::ops::AddAssign for Restored {
    /// Sums another shard's.
    fn add_assign(&mut self, r: Restored) {
        self.channels += r.channels;
        self.inboxes += r.inboxes;
        self.instances += r.instances;
        self.messages += r.messages;
        self.sends += r.sends;
        self.unreadable += r.unreadable;
    }
}

/// The store key of channel `ch` (for `channel.rs`'s deletes).
pub(super) fn stored_channel_key(ch: &Channel) -> StoreKey {
    channel_key(ch)
}

/// Unix milliseconds of `at`, given that `now` is `unix_now`.
fn unix_ms_of(now: Instant, unix_now: u64, at: Instant) -> u64 {
    match now.checked_duration_since(at) {
        Some(ago) => unix_now.saturating_sub(ms(ago)),
        None => unix_now.saturating_add(ms(at - now)),
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A log from its record and stored entries; entries older than the
/// retention's age are dropped.
fn restore_log(
    epoch: u64,
    head: u64,
    entries: &[(u64, Bytes)],
    now: Instant,
    unix_now: u64,
    retention: Retention,
) -> SeqLog {
    let head = entries.iter().map(|(s, _)| *s).max().unwrap_or(0).max(head);
    let decoded = entries.iter().filter_map(|(seq, e)| {
        let LogEntry { at_ms, frame, .. } = decode_entry(e.clone())?;
        let age = Duration::from_millis(unix_now.saturating_sub(at_ms));
        Some((*seq, now.checked_sub(age)?, frame))
    });
    SeqLog::restore(epoch, head, decoded, now, retention)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_read_back_and_short_ones_are_refused() {
        let sent = SentRef {
            uid: 7,
            message_id: 9,
            timestamp_ms: 11,
            delivered_online: true,
        };
        let e = encode_entry(1_700_000_000_123, &Bytes::from_static(b"frame"), Some(sent));
        let d = decode_entry(e).unwrap();
        assert_eq!(
            (d.at_ms, &d.frame[..], d.sent),
            (1_700_000_000_123, &b"frame"[..], Some(sent))
        );
        assert_eq!(decode_entry(Bytes::from_static(b"\xff\xff")), None);
        assert_eq!(decode_entry(encode_entry(5, &Bytes::new(), None)), None);
    }

    #[test]
    fn held_bytes_are_counted_per_link_until_released() {
        let g = super::super::GatewayId(1);
        let (a, b) = (ConnId::new(g, 1), ConnId::new(g, 2));
        let mut d = Durable::default();
        d.hold(a, 10);
        d.hold(a, 5);
        d.hold(b, 7);
        assert_eq!((d.held_for(a), d.held_for(b)), (15, 7));
        d.release(a, 10);
        assert_eq!(d.held_for(a), 5);
        d.release(a, 5);
        d.release(b, 7);
        assert_eq!((d.held_for(a), d.held_for(b)), (0, 0));
        assert!(d.held.is_empty(), "links with nothing held are forgotten");
        // A release of what was not held changes nothing.
        d.release(a, 3);
        assert_eq!(d.held_for(a), 0);
    }

    #[test]
    fn unix_times_of_instants_either_side_of_now() {
        let now = Instant::now();
        assert_eq!(unix_ms_of(now, 10_000, now), 10_000);
        assert_eq!(
            unix_ms_of(now, 10_000, now - Duration::from_millis(250)),
            9_750
        );
        assert_eq!(
            unix_ms_of(now, 10_000, now + Duration::from_millis(5)),
            10_005
        );
    }
}
