//! A bounded log of encoded reliable pushes keyed by sequence number: the P2P
//! inbox of a uid and the history of a channel both keep one, and replay
//! from it after a reconnect.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::conn::QUEUED_FRAME_OVERHEAD;
use crate::wire::SeqGap;

/// What a retained message costs besides its frame's bytes: its entry
/// (seq, time, handle), the frame allocation's header and the deque's
/// slack. Counted so the retention bounds are bounds on memory.
pub(crate) const RETAINED_ENTRY_OVERHEAD: usize = 128;

#[derive(Debug)]
struct Entry {
    seq: u64,
    at: Instant,
    frame: Bytes,
}

/// The last sequence number given and the retained pushes (oldest first).
#[derive(Debug, Default)]
pub(crate) struct SeqLog {
    /// The last sequence number given (0: none yet).
    pub head: u64,
    entries: VecDeque<Entry>,
    /// What the retained frames cost: their bytes plus
    /// `RETAINED_ENTRY_OVERHEAD` each.
    bytes: usize,
}

/// What to replay after a sequence number.
#[derive(Debug, Default)]
pub(crate) struct Replay {
    /// The sequence number the replayed pushes follow (the reply's `seq`).
    pub start: u64,
    /// The evicted part, if any.
    pub gap: Option<SeqGap>,
    /// The pushes, in order.
    pub frames: Vec<Bytes>,
    /// The last sequence number replayed (or `start`): less than `head` when
    /// the byte budget cut the replay short.
    pub through: u64,
    /// The byte budget stopped the replay before the head.
    pub more: bool,
}

impl Replay {
    /// Nothing to replay: pushes follow `head`.
    pub fn at(head: u64) -> Replay {
        Replay {
            start: head,
            through: head,
            ..Replay::default()
        }
    }

    /// What the replayed frames cost a link's queue (bytes and overhead).
    pub fn bytes(&self) -> usize {
        self.frames
            .iter()
            .map(|f| f.len().saturating_add(QUEUED_FRAME_OVERHEAD))
            .sum()
    }

    /// Where the replay stops short of the head (0 when it reaches it), for
    /// the `*_truncated_at` reply fields: the client fetches what follows.
    pub fn truncated_at(&self) -> u64 {
        // The first number not replayed: never 0, even when nothing at all
        // fitted after a cursor of 0.
        if self.more {
            self.through.saturating_add(1)
        } else {
            0
        }
    }
}

impl SeqLog {
    /// The sequence number the next message gets.
    pub fn next_seq(&self) -> u64 {
        self.head.saturating_add(1)
    }

    /// Records the push of message `seq` (from [`SeqLog::next_seq`]) and
    /// evicts the oldest past `max_messages` or `max_bytes` (the new one is
    /// kept whatever its size, unless `max_messages` is 0). Returns the
    /// bytes now retained that were not before (negative: 0).
    pub fn append(
        &mut self,
        seq: u64,
        at: Instant,
        frame: Bytes,
        (max_messages, max_bytes): (usize, usize),
    ) -> usize {
        self.head = seq;
        if max_messages == 0 {
            return 0;
        }
        let before = self.bytes;
        let cost = entry_cost(&frame);
        while self.entries.len() >= max_messages
            || (!self.entries.is_empty() && self.bytes.saturating_add(cost) > max_bytes)
        {
            self.pop_oldest();
        }
        self.bytes = self.bytes.saturating_add(cost);
        self.entries.push_back(Entry { seq, at, frame });
        self.bytes.saturating_sub(before)
    }

    /// Evicts the oldest retained push; what it cost.
    pub fn pop_oldest(&mut self) -> Option<usize> {
        let e = self.entries.pop_front()?;
        let cost = entry_cost(&e.frame);
        self.bytes = self.bytes.saturating_sub(cost);
        Some(cost)
    }

    /// Bytes of the retained pushes.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Evicts the pushes older than `max_age` at `now`.
    pub fn prune(&mut self, now: Instant, max_age: Duration) {
        while let Some(e) = self.entries.front() {
            if now.saturating_duration_since(e.at) < max_age {
                break;
            }
            self.pop_oldest();
        }
    }

    /// Nothing retained.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// When the newest retained push was recorded.
    pub fn newest_at(&self) -> Option<Instant> {
        self.entries.back().map(|e| e.at)
    }

    /// What follows `after`: the evicted range as a gap, then the retained
    /// pushes up to `budget` bytes (none when the first does not fit: the
    /// budget is what the link's queue has room for). `after` past the
    /// head (a stale client) is clamped to the head.
    pub fn replay(&self, after: u64, budget: usize) -> Replay {
        let after = after.min(self.head);
        let mut r = Replay {
            start: after,
            through: after,
            ..Replay::default()
        };
        if after == self.head {
            return r;
        }
        let first_missing = after.saturating_add(1);
        match self.entries.front() {
            None => {
                r.gap = Some(SeqGap {
                    from: first_missing,
                    to: self.head,
                });
                r.start = self.head;
                r.through = self.head;
                return r;
            }
            Some(oldest) if oldest.seq > first_missing => {
                r.gap = Some(SeqGap {
                    from: first_missing,
                    to: oldest.seq.saturating_sub(1),
                });
                r.start = oldest.seq.saturating_sub(1);
                r.through = r.start;
            }
            Some(_) => {}
        }
        // Counted as the link's queue counts them, overhead included.
        let mut used = 0usize;
        for e in self.entries.iter().filter(|e| e.seq > r.start) {
            let cost = e.frame.len().saturating_add(QUEUED_FRAME_OVERHEAD);
            if used.saturating_add(cost) > budget {
                break;
            }
            used = used.saturating_add(cost);
            r.frames.push(e.frame.clone());
            r.through = e.seq;
        }
        r.more = r.through < self.head;
        r
    }
}

/// What one retained frame counts against the bounds.
fn entry_cost(frame: &Bytes) -> usize {
    frame.len().saturating_add(RETAINED_ENTRY_OVERHEAD)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(n: u64, keep: usize) -> (SeqLog, Instant) {
        let t = Instant::now();
        let mut l = SeqLog::default();
        for _ in 0..n {
            let s = l.next_seq();
            l.append(s, t, Bytes::from(vec![s as u8; 10]), (keep, usize::MAX));
        }
        (l, t)
    }

    #[test]
    fn replay_reports_evicted_part_as_gap() {
        let (l, _) = log(10, 4);
        let r = l.replay(2, usize::MAX);
        assert_eq!(r.gap, Some(SeqGap { from: 3, to: 6 }));
        assert_eq!((r.start, r.through, r.frames.len()), (6, 10, 4));
        let r = l.replay(8, usize::MAX);
        assert_eq!((r.gap, r.start, r.frames.len()), (None, 8, 2));
        let r = l.replay(50, usize::MAX);
        assert_eq!((r.gap, r.start, r.frames.len()), (None, 10, 0));
    }

    #[test]
    fn aged_out_log_gaps_to_head_and_budget_cuts() {
        let (mut l, t) = log(5, 10);
        // Each frame costs its 10 bytes and the queue's overhead.
        let two = 2 * (10 + QUEUED_FRAME_OVERHEAD) + 5;
        assert_eq!(l.replay(0, two).frames.len(), 2);
        assert_eq!(l.replay(0, two).through, 2);
        assert_eq!(l.replay(0, two).bytes(), two - 5);
        // A budget smaller than the first frame replays nothing (and says so).
        let r = l.replay(0, 10 + QUEUED_FRAME_OVERHEAD - 1);
        assert_eq!((r.frames.len(), r.through, r.more), (0, 0, true));
        l.prune(t + Duration::from_secs(1), Duration::from_secs(1));
        assert!(l.is_empty());
        let r = l.replay(1, usize::MAX);
        assert_eq!(r.gap, Some(SeqGap { from: 2, to: 5 }));
        assert_eq!(r.start, 5);
    }

    #[test]
    fn nothing_to_replay_goes_on_from_the_head() {
        let r = Replay::at(7);
        assert_eq!(
            (r.start, r.through, r.more, r.truncated_at()),
            (7, 7, false, 0)
        );
        assert!(r.frames.is_empty() && r.gap.is_none());
    }

    #[test]
    fn bytes_count_the_overhead_and_bound_the_log() {
        let t = Instant::now();
        let mut l = SeqLog::default();
        let frame = |n: usize| Bytes::from(vec![0u8; n]);
        let cost = 10 + RETAINED_ENTRY_OVERHEAD;
        assert_eq!(l.append(1, t, frame(10), (100, 3 * cost)), cost);
        assert_eq!(l.append(2, t, frame(10), (100, 3 * cost)), cost);
        assert_eq!(l.append(3, t, frame(10), (100, 3 * cost)), cost);
        assert_eq!(l.bytes(), 3 * cost);
        // A fourth fits only by evicting the first: nothing is added.
        assert_eq!(l.append(4, t, frame(10), (100, 3 * cost)), 0);
        assert_eq!(
            (l.bytes(), l.replay(0, usize::MAX).gap),
            (3 * cost, Some(SeqGap { from: 1, to: 1 }))
        );
        // One larger than the whole bound is kept alone.
        let big = 10 * cost;
        assert_eq!(
            l.append(5, t, frame(big), (100, 3 * cost)),
            big + RETAINED_ENTRY_OVERHEAD - 3 * cost
        );
        assert_eq!(l.replay(0, usize::MAX).frames.len(), 1);
        assert_eq!(l.pop_oldest(), Some(big + RETAINED_ENTRY_OVERHEAD));
        assert_eq!(l.bytes(), 0);
        // Nothing is kept with a bound of 0 messages, but the head moves.
        assert_eq!(l.append(6, t, frame(10), (0, usize::MAX)), 0);
        assert_eq!((l.head, l.is_empty()), (6, true));
    }
}
