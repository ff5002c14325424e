//! The sends behind each durable stream's messages, for as long as a
//! re-send of one may come (the dedupe window).
//!
//! A send's record (sender, message id, reply) is stored with the message
//! it delivered. Retention may evict that message before the window ends
//! (a busy stream, small limits): the record then moves to the stream's
//! sends object ([`StoreKey::Sends`]), in the same batch that trims the
//! message away, so no batch ever drops a record still needed. A restart
//! reads the records back from both places and answers a re-send as the
//! first.
//!
//! Each stream keeps the records of its last `send_dedupe_max` sends
//! within the window, the bound the in-memory dedupe has per sender: a
//! stream whose retention keeps as many messages (a channel's default,
//! 1,024) never writes its sends object.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::durable::SentRef;
use super::hub::LogId;
use super::store::{StoreKey, StoreWrite};

/// One send: the seq of the message it made, when, and the send.
pub(super) type RecentSend = (u64, Instant, SentRef);

#[derive(Debug, Default)]
struct StreamSends {
    /// Ascending seq, none older than the window (as of the last expiry),
    /// at most `max` of them.
    sends: VecDeque<RecentSend>,
    /// The highest seq written to the sends object (0: none).
    written: u64,
    /// The sends object may hold records that expired: trim it.
    trim: bool,
}

impl StreamSends {
    /// Forgets the sends recorded at or before `cutoff`.
    fn expire(&mut self, cutoff: Instant) {
        while self.sends.front().is_some_and(|s| s.1 <= cutoff) {
            self.pop_oldest();
        }
    }

    fn pop_oldest(&mut self) {
        if let Some((seq, ..)) = self.sends.pop_front() {
            self.trim |= seq <= self.written;
        }
    }
}

/// Every durable stream's last sends within the dedupe window.
#[derive(Debug, Default)]
pub(crate) struct RecentSends {
    streams: BTreeMap<LogId, StreamSends>,
    /// Sends kept per stream, at most (`send_dedupe_max`; 0 keeps none).
    max: usize,
}

impl RecentSends {
    /// Keeping at most `max` sends per stream.
    pub fn new(max: usize) -> RecentSends {
        RecentSends {
            streams: BTreeMap::new(),
            max,
        }
    }

    /// Message `seq` of `log`, recorded at `at`, came from `sent`.
    pub fn record(&mut self, log: LogId, seq: u64, at: Instant, sent: SentRef) {
        if self.max == 0 {
            return;
        }
        let s = self.streams.entry(log).or_default();
        if s.sends.back().is_none_or(|&(last, ..)| seq > last) {
            if s.sends.len() >= self.max {
                s.pop_oldest();
            }
            s.sends.push_back((seq, at, sent));
        }
    }

    /// A restored stream's sends (any order) and the highest seq its sends
    /// object holds.
    pub fn restore(&mut self, log: LogId, mut sends: Vec<RecentSend>, written: u64) {
        sends.sort_by_key(|s| s.0);
        sends.dedup_by_key(|s| s.0);
        let keep = sends.len().saturating_sub(self.max);
        let s = self.streams.entry(log).or_default();
        s.sends = sends.split_off(keep).into();
        s.written = written;
        // What expired while the server was down may still be stored.
        s.trim = written > 0;
    }

    /// Forgets the sends `window` old at `now`; the streams whose sends
    /// object now holds expired records (each wants a batch to trim it).
    pub fn expire(&mut self, now: Instant, window: Duration) -> Vec<LogId> {
        let Some(cutoff) = now.checked_sub(window) else {
            return Vec::new();
        };
        let mut trim = Vec::new();
        self.streams.retain(|&log, s| {
            s.expire(cutoff);
            if s.trim {
                trim.push(log);
            }
            // A stream with records in its object keeps its `written`: a
            // later append must number past it.
            !s.sends.is_empty() || s.written > 0
        });
        trim
    }

    /// The stream is gone (its sends object with it).
    pub fn forget(&mut self, log: LogId) {
        self.streams.remove(&log);
    }

    /// The send behind message `seq` of `log`, if within the window.
    pub fn sent(&self, log: LogId, seq: u64) -> Option<SentRef> {
        let sends = &self.streams.get(&log)?.sends;
        let at = sends.binary_search_by_key(&seq, |s| s.0).ok()?;
        Some(sends[at].2)
    }

    /// The writes that keep `log`'s sends object (of stream `key`) holding
    /// the record of every message evicted (numbered below `first`, the
    /// stream's first retained or next seq) within the window at `now`, and
    /// no other; `at_ms` gives a time's unix milliseconds. Goes in the
    /// batch that trims the stream below `first`.
    pub fn writes(
        &mut self,
        log: LogId,
        key: &StoreKey,
        first: u64,
        (now, window): (Instant, Duration),
        at_ms: impl Fn(Instant) -> u64,
        out: &mut Vec<StoreWrite>,
    ) {
        let Some(s) = self.streams.get_mut(&log) else {
            return;
        };
        if let Some(cutoff) = now.checked_sub(window) {
            s.expire(cutoff);
        }
        // Ascending: the evicted ones not written yet are a range.
        let from = s.sends.partition_point(|x| x.0 <= s.written);
        let to = s.sends.partition_point(|x| x.0 < first);
        if from >= to && !s.trim {
            return;
        }
        let sends_key = StoreKey::Sends {
            of: Box::new(key.clone()),
        };
        if from < to {
            // The record makes the object one a load finds.
            out.push(StoreWrite::Put {
                key: sends_key.clone(),
                record: Bytes::new(),
            });
            for &(seq, at, sent) in s.sends.range(from..to) {
                out.push(StoreWrite::Append {
                    key: sends_key.clone(),
                    seq,
                    entry: sent.encode_entry(at_ms(at)),
                });
                s.written = seq;
            }
        }
        if s.trim {
            let seq = s.sends.front().map_or(s.written + 1, |x| x.0);
            out.push(StoreWrite::TrimBelow {
                key: sends_key,
                seq,
            });
            s.trim = false;
        }
    }

    /// The store lost everything: `log`'s sends object starts again, with
    /// the records of the messages evicted within the window (a batch that
    /// writes the stream again from `first` on).
    pub fn write_again(
        &mut self,
        log: LogId,
        key: &StoreKey,
        first: u64,
        now_and_window: (Instant, Duration),
        at_ms: impl Fn(Instant) -> u64,
        out: &mut Vec<StoreWrite>,
    ) {
        out.push(StoreWrite::Delete {
            key: StoreKey::Sends {
                of: Box::new(key.clone()),
            },
        });
        if let Some(s) = self.streams.get_mut(&log) {
            s.written = 0;
            s.trim = false;
        }
        self.writes(log, key, first, now_and_window, at_ms, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: Duration = Duration::from_secs(120);

    fn sent(id: u64) -> SentRef {
        SentRef {
            uid: 7,
            message_id: id,
            timestamp_ms: 1000 + id,
            delivered_online: id.is_multiple_of(2),
        }
    }

    fn key() -> StoreKey {
        StoreKey::Inbox { appid: 1, uid: 2 }
    }

    fn sends_key() -> StoreKey {
        StoreKey::Sends {
            of: Box::new(key()),
        }
    }

    /// `(op, seq)` of each write: `P`, `A`, `T` or `D`, with the seq of an
    /// append or a trim.
    fn ops(writes: &[StoreWrite]) -> Vec<(char, u64)> {
        writes
            .iter()
            .map(|w| {
                assert_eq!(w.key(), &sends_key());
                match w {
                    StoreWrite::Put { record, .. } => {
                        assert!(record.is_empty());
                        ('P', 0)
                    }
                    StoreWrite::Append { seq, .. } => ('A', *seq),
                    StoreWrite::TrimBelow { seq, .. } => ('T', *seq),
                    StoreWrite::Delete { .. } => ('D', 0),
                }
            })
            .collect()
    }

    const LOG: LogId = LogId::Inbox(1, 2);

    fn write(r: &mut RecentSends, first: u64, now: Instant) -> Vec<(char, u64)> {
        let mut out = Vec::new();
        r.writes(LOG, &key(), first, (now, W), |_| 5, &mut out);
        ops(&out)
    }

    #[test]
    fn evicted_sends_move_to_the_sends_object_once_and_go_when_their_window_ends() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut r = RecentSends::new(1024);
        for seq in 1..=4 {
            r.record(LOG, seq, t0 + s * seq as u32, sent(seq));
        }
        // Nothing evicted: nothing written.
        assert_eq!(write(&mut r, 1, t0 + 5 * s), []);
        // 1 and 2 evicted: their records go to the object, with its record.
        assert_eq!(write(&mut r, 3, t0 + 5 * s), [('P', 0), ('A', 1), ('A', 2)]);
        // Written once only.
        assert_eq!(write(&mut r, 3, t0 + 5 * s), []);
        assert_eq!(write(&mut r, 4, t0 + 5 * s), [('P', 0), ('A', 3)]);
        // Every retained or stored send is still known.
        assert_eq!(r.sent(LOG, 4), Some(sent(4)));
        assert_eq!(r.sent(LOG, 1), Some(sent(1)));
        // Send 1 expires exactly at its window's end: the object is
        // trimmed below send 2.
        assert_eq!(write(&mut r, 4, t0 + s + W - Duration::from_millis(1)), []);
        assert_eq!(write(&mut r, 4, t0 + s + W), [('T', 2)]);
        assert_eq!(r.sent(LOG, 1), None);
        assert_eq!(r.sent(LOG, 2), Some(sent(2)));
        // A send that expires while retained needs no trim.
        assert_eq!(r.expire(t0 + 3 * s + W, W), vec![LOG]);
        assert_eq!(write(&mut r, 4, t0 + 3 * s + W), [('T', 4)]);
        assert!(r.expire(t0 + 4 * s + W, W).is_empty());
        assert_eq!(r.sent(LOG, 4), None);
        // All gone, the written mark stays: a later eviction numbers on.
        r.record(LOG, 5, t0 + 5 * s + W, sent(5));
        r.record(LOG, 5, t0 + 5 * s + W, sent(9));
        assert_eq!(r.sent(LOG, 5), Some(sent(5)));
        assert_eq!(write(&mut r, 6, t0 + 5 * s + W), [('P', 0), ('A', 5)]);
        r.forget(LOG);
        assert_eq!(r.sent(LOG, 5), None);
        assert_eq!(write(&mut r, 6, t0 + 5 * s + W), []);
    }

    #[test]
    fn a_restored_stream_trims_what_expired_and_rewrites_after_a_store_loss() {
        let t0 = Instant::now() + W;
        let mut r = RecentSends::new(1024);
        let ms = Duration::from_millis(1);
        r.restore(
            LOG,
            vec![(3, t0, sent(3)), (2, t0 - ms, sent(2)), (3, t0, sent(3))],
            2,
        );
        assert_eq!(r.sent(LOG, 2), Some(sent(2)));
        // The object may hold records that expired during the downtime.
        assert_eq!(write(&mut r, 3, t0), [('T', 2)]);
        assert_eq!(write(&mut r, 4, t0), [('P', 0), ('A', 3)]);
        let mut out = Vec::new();
        r.write_again(
            LOG,
            &key(),
            4,
            (t0, W),
            |at| if at == t0 { 9 } else { 8 },
            &mut out,
        );
        assert_eq!(ops(&out), [('D', 0), ('P', 0), ('A', 2), ('A', 3)]);
        let StoreWrite::Append { entry, .. } = &out[3] else {
            unreachable!()
        };
        assert_eq!(SentRef::decode_entry(entry.clone()), Some((9, sent(3))));
        // A restore with nothing in the object trims nothing.
        let mut fresh = RecentSends::new(1024);
        fresh.restore(LOG, vec![(1, t0, sent(1))], 0);
        assert_eq!(write(&mut fresh, 1, t0), []);
        // Nothing expires before a window has passed since the clock began.
        assert!(RecentSends::new(1024)
            .expire(Instant::now(), Duration::MAX)
            .is_empty());
    }

    #[test]
    fn a_stream_keeps_its_last_max_sends() {
        let t0 = Instant::now();
        let mut r = RecentSends::new(2);
        for seq in 1..=3 {
            r.record(LOG, seq, t0, sent(seq));
        }
        assert_eq!(r.sent(LOG, 1), None);
        assert_eq!(r.sent(LOG, 2), Some(sent(2)));
        // Only kept ones are written; the oldest dropped after it was
        // written wants a trim.
        assert_eq!(write(&mut r, 4, t0), [('P', 0), ('A', 2), ('A', 3)]);
        r.record(LOG, 4, t0, sent(4));
        assert_eq!(write(&mut r, 4, t0), [('T', 3)]);
        assert_eq!(write(&mut r, 4, t0), []);
        // A restore keeps the last ones too.
        r.restore(LOG, (1..=5).map(|q| (q, t0, sent(q))).collect(), 0);
        assert_eq!((r.sent(LOG, 3), r.sent(LOG, 4)), (None, Some(sent(4))));
        // Zero keeps none.
        let mut none = RecentSends::new(0);
        none.record(LOG, 1, t0, sent(1));
        assert_eq!(none.sent(LOG, 1), None);
        assert_eq!(write(&mut none, 2, t0), []);
    }
}
