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
//! A stream keeps each sender's last `send_dedupe_max` sends within the
//! window, the bound the in-memory dedupe keeps per sender
//! (`sent_ids.rs`); rate limits bound how many one window holds.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::durable::SentRef;
use super::hub::LogId;
use super::store::{StoreKey, StoreWrite};

/// One send: the seq of the message it made, when, and the send.
pub(super) type RecentSend = (u64, Instant, SentRef);

#[derive(Debug, Default)]
struct StreamSends {
    /// By seq: when, and the send; none older than the window (as of the
    /// last expiry).
    sends: BTreeMap<u64, (Instant, SentRef)>,
    /// Each sender's seqs in `sends`, oldest first (at most `max`).
    by_sender: HashMap<u64, VecDeque<u64>>,
    /// The highest seq written to the sends object (0: none).
    written: u64,
    /// The sends object may hold records no longer kept: trim it.
    trim: bool,
}

impl StreamSends {
    /// Keeps `sent` (message `seq`, recorded `at`), dropping its sender's
    /// oldest past `max`.
    fn keep(&mut self, seq: u64, at: Instant, sent: SentRef, max: usize) {
        if self
            .sends
            .last_key_value()
            .is_some_and(|(&last, _)| seq <= last)
        {
            return;
        }
        let mine = self.by_sender.entry(sent.uid).or_default();
        if mine.len() >= max {
            if let Some(old) = mine.pop_front() {
                self.sends.remove(&old);
                self.trim |= old <= self.written;
            }
        }
        mine.push_back(seq);
        self.sends.insert(seq, (at, sent));
    }

    /// Forgets the sends recorded at or before `cutoff` (the oldest first:
    /// each is its sender's oldest too).
    fn expire(&mut self, cutoff: Instant) {
        while let Some((&seq, &(at, sent))) = self.sends.first_key_value() {
            if at > cutoff {
                break;
            }
            self.sends.pop_first();
            if let Some(mine) = self.by_sender.get_mut(&sent.uid) {
                mine.pop_front();
                if mine.is_empty() {
                    self.by_sender.remove(&sent.uid);
                }
            }
            self.trim |= seq <= self.written;
        }
    }
}

/// Every durable stream's recent sends.
#[derive(Debug, Default)]
pub(crate) struct RecentSends {
    streams: BTreeMap<LogId, StreamSends>,
    /// Sends kept per sender and stream, at most (`send_dedupe_max`; 0
    /// keeps none).
    max: usize,
}

impl RecentSends {
    /// Keeping at most `max` sends per sender and stream.
    pub fn new(max: usize) -> RecentSends {
        RecentSends {
            streams: BTreeMap::new(),
            max,
        }
    }

    /// Message `seq` of `log`, recorded at `at`, came from `sent`.
    pub fn record(&mut self, log: LogId, seq: u64, at: Instant, sent: SentRef) {
        if self.max > 0 {
            let s = self.streams.entry(log).or_default();
            s.keep(seq, at, sent, self.max);
        }
    }

    /// A restored stream's sends (any order) and the highest seq its sends
    /// object holds.
    pub fn restore(&mut self, log: LogId, mut sends: Vec<RecentSend>, written: u64) {
        if self.max == 0 {
            return;
        }
        sends.sort_by_key(|s| s.0);
        let s = self.streams.entry(log).or_default();
        s.written = written;
        for (seq, at, sent) in sends {
            s.keep(seq, at, sent, self.max);
        }
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
            // Later sends number past anything written: an emptied
            // stream holds nothing once its object is trimmed.
            !s.sends.is_empty() || s.trim
        });
        trim
    }

    /// The stream is gone (its sends object with it).
    pub fn forget(&mut self, log: LogId) {
        self.streams.remove(&log);
    }

    /// The send behind message `seq` of `log`, if kept.
    pub fn sent(&self, log: LogId, seq: u64) -> Option<SentRef> {
        Some(self.streams.get(&log)?.sends.get(&seq)?.1)
    }

    /// The writes that keep `log`'s sends object (of stream `key`) holding
    /// the record of every kept send whose message was evicted (numbered
    /// below `first`, the stream's first retained or next seq) as of `now`;
    /// `at_ms` gives a time's unix milliseconds. Goes in the batch that
    /// trims the stream below `first`.
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
        let evicted = s.sends.range(s.written + 1..first.max(s.written + 1));
        if evicted.clone().next().is_none() && !s.trim {
            return;
        }
        let sends_key = StoreKey::Sends {
            of: Box::new(key.clone()),
        };
        let mut written = s.written;
        for (i, (&seq, &(at, sent))) in evicted.enumerate() {
            if i == 0 {
                // The record makes the object one a load finds.
                out.push(StoreWrite::Put {
                    key: sends_key.clone(),
                    record: Bytes::new(),
                });
            }
            out.push(StoreWrite::Append {
                key: sends_key.clone(),
                seq,
                entry: sent.encode_entry(at_ms(at)),
            });
            written = seq;
        }
        s.written = written;
        if s.trim {
            let seq = s.sends.first_key_value().map_or(s.written + 1, |(&q, _)| q);
            out.push(StoreWrite::TrimBelow {
                key: sends_key,
                seq,
            });
            s.trim = false;
        }
    }

    /// The store lost everything: `log`'s sends object starts again, with
    /// the records of the kept sends whose messages were evicted (a batch
    /// that writes the stream again from `first` on).
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
        // All gone (the stream with them); a later eviction numbers on.
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
    fn a_sender_keeps_its_last_max_sends_in_a_stream() {
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

    #[test]
    fn the_bound_is_per_sender_so_a_busy_sender_drops_only_its_own() {
        let t0 = Instant::now();
        let mut r = RecentSends::new(2);
        let from = |uid, id| SentRef { uid, ..sent(id) };
        r.record(LOG, 1, t0, from(8, 1));
        for seq in 2..=10 {
            r.record(LOG, seq, t0, sent(seq));
        }
        // uid 8's one send is kept; uid 7 keeps its last two.
        assert_eq!(r.sent(LOG, 1), Some(from(8, 1)));
        assert_eq!((r.sent(LOG, 8), r.sent(LOG, 9)), (None, Some(sent(9))));
        assert_eq!(
            write(&mut r, 11, t0),
            [('P', 0), ('A', 1), ('A', 9), ('A', 10)]
        );
    }

    #[test]
    fn an_idle_stream_holds_nothing_once_its_object_is_trimmed() {
        let t0 = Instant::now();
        let mut r = RecentSends::new(1024);
        for seq in 1..=300 {
            r.record(LOG, seq, t0, sent(seq));
        }
        assert_eq!(write(&mut r, 101, t0).len(), 101);
        let later = t0 + W + Duration::from_secs(1);
        assert_eq!(r.expire(later, W), vec![LOG]);
        // Kept until its object is trimmed, then gone.
        assert_eq!(r.streams.len(), 1);
        assert_eq!(write(&mut r, 301, later), [('T', 101)]);
        assert!(r.expire(later, W).is_empty());
        assert!(r.streams.is_empty());
        // A stream whose sends expire unwritten goes at once.
        r.record(LOG, 301, later, sent(301));
        assert!(r.expire(later + W, W).is_empty());
        assert!(r.streams.is_empty());
    }
}
