//! The sequenced log of one reliable stream (a uid's P2P inbox, a channel's
//! history): its epoch, the numbering of its pushes, the encoded pushes it
//! retains within its bounds, and the replay that follows a client's cursor
//! after a reconnect or a fetch.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::check_push_fits;
use super::conn::QUEUED_FRAME_OVERHEAD;
use crate::error::ServiceError;
use crate::wire::SeqGap;

/// What a retained message costs besides its frame's bytes: its entry
/// (seq, time, handle), the frame allocation's header and the deque's
/// slack. Counted so the retention bounds are bounds on memory.
pub(crate) const RETAINED_ENTRY_OVERHEAD: usize = 128;

/// Bytes a not yet assigned `seq` adds to a push at most: its key and a
/// 10-byte varint (a zero `seq` is not encoded at all).
const MAX_SEQ_FIELD_LEN: usize = 1 + 10;

/// How much of a stream is kept: past any bound the oldest pushes go. Plain
/// configuration, no invariant.
#[derive(Copy, Clone, Debug)]
pub(crate) struct Retention {
    pub max_messages: usize,
    pub max_bytes: usize,
    pub max_age: Duration,
}

#[derive(Debug)]
struct Entry {
    seq: u64,
    at: Instant,
    frame: Bytes,
}

/// One stream: its epoch, the last sequence number given and the retained
/// pushes (oldest first), with what they cost.
#[derive(Debug)]
pub(crate) struct SeqLog {
    /// Non-zero: a stream made again (a restart, a forgotten inbox or
    /// channel) gets a new one and numbers from 1 again.
    epoch: u64,
    /// The last sequence number given (0: none yet).
    head: u64,
    entries: VecDeque<Entry>,
    /// What the retained frames cost: their bytes plus
    /// `RETAINED_ENTRY_OVERHEAD` each.
    bytes: usize,
}

/// A push numbered and recorded by [`SeqLog::push`].
#[derive(Debug)]
pub(crate) struct Sequenced {
    /// Its sequence number.
    pub seq: u64,
    /// Its encoded frame, to be queued to every receiver.
    pub frame: Bytes,
    /// Bytes now retained that were not before (0 when evictions made up
    /// for it), for the app-wide budget.
    pub added: usize,
}

/// What follows a client's cursor: the pushes to queue and what the reply
/// says about them.
#[derive(Debug, Default)]
pub(crate) struct Replay {
    /// The sequence number the replayed pushes follow.
    start: u64,
    /// The evicted part after the cursor, if any.
    evicted: Option<SeqGap>,
    /// A loss told before the replay: the cursor's epoch is gone, or the
    /// part skipped when nothing is replayed.
    lost: Option<SeqGap>,
    /// The pushes, in order.
    frames: Vec<Bytes>,
    /// The last sequence number replayed (or `start`).
    through: u64,
    /// The byte budget stopped the replay before the head.
    more: bool,
}

/// 2007 when `push` (its `seq` still 0), once numbered with the longest
/// `seq`, would not fit in a frame of `max_frame_size` bytes: clients refuse
/// larger frames, and a reliable one would be replayed, and refused, on
/// every login of its receiver. Sized from borrowed data.
pub(crate) fn check_sequenced_fits(
    max_frame_size: usize,
    push: &impl prost::Message,
) -> Result<(), ServiceError> {
    check_push_fits(max_frame_size, sequenced_frame_len(push.encoded_len()))
}

/// Bytes of the frame holding a sequenced push whose message (with `seq`
/// still 0) encodes to `push_len` bytes, counted with the longest `seq`. The
/// push sits in a body field numbered 16..=2047: a 2-byte key.
fn sequenced_frame_len(push_len: usize) -> usize {
    let inner = push_len.saturating_add(MAX_SEQ_FIELD_LEN);
    2 + prost::encoding::encoded_len_varint(inner as u64) + inner
}

impl Replay {
    /// Nothing to replay: pushes follow `head`.
    fn at(head: u64) -> Replay {
        Replay {
            start: head,
            through: head,
            ..Replay::default()
        }
    }

    /// The sequence number the client goes on from (the reply's `seq`).
    /// With a loss and an evicted part both, the evicted part is not
    /// skipped over but left for the client's fetch, whose reply reports it.
    pub fn seq(&self) -> u64 {
        match (&self.lost, &self.evicted) {
            (Some(_), Some(g)) => g.from.saturating_sub(1),
            _ => self.start,
        }
    }

    /// The one gap a reply reports: the loss, else the evicted part.
    pub fn gap(&self) -> Option<SeqGap> {
        self.lost.or(self.evicted)
    }

    /// The last sequence number replayed (or the one the replay follows):
    /// less than the head when the byte budget cut the replay short.
    pub fn through(&self) -> u64 {
        self.through
    }

    /// The byte budget stopped the replay before the head.
    pub fn more(&self) -> bool {
        self.more
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

    /// What the frames still held cost a link's queue (bytes and overhead).
    pub fn bytes(&self) -> usize {
        self.frames
            .iter()
            .map(|f| f.len().saturating_add(QUEUED_FRAME_OVERHEAD))
            .sum()
    }

    /// The pushes to queue, in order (taken: [`Replay::bytes`] is 0 after).
    pub fn take_frames(&mut self) -> Vec<Bytes> {
        std::mem::take(&mut self.frames)
    }
}

impl SeqLog {
    /// An empty stream of `epoch` (non-zero). Its retention bounds are
    /// passed to each call that prunes (they are the same for every log of
    /// a kind: not kept per log, which would cost every inbox and channel).
    pub fn new(epoch: u64) -> SeqLog {
        SeqLog {
            epoch,
            head: 0,
            entries: VecDeque::new(),
            bytes: 0,
        }
    }

    /// The stream's epoch.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The last sequence number given (0: none yet).
    pub fn head(&self) -> u64 {
        self.head
    }

    /// A stream read back from a store: `epoch`, `head`, and its retained
    /// pushes `(seq, recorded at, frame)` ascending, kept within
    /// `retention` at `now` as [`SeqLog::push`] would have. Entries at or
    /// past the head, or out of order, are dropped (a store never has
    /// them; a damaged one might).
    pub fn restore(
        epoch: u64,
        head: u64,
        entries: impl IntoIterator<Item = (u64, Instant, Bytes)>,
        now: Instant,
        retention: Retention,
    ) -> SeqLog {
        let mut log = SeqLog::new(epoch);
        for (seq, at, frame) in entries {
            if seq <= log.head || seq > head {
                continue;
            }
            log.head = seq;
            log.retain(seq, at, frame, retention);
        }
        log.head = head;
        log.prune(now, retention);
        log
    }

    /// The sequence number of the oldest retained push.
    pub fn first_seq(&self) -> Option<u64> {
        self.entries.front().map(|e| e.seq)
    }

    /// Where what is retained begins: the oldest retained push's sequence
    /// number, or the next one's when none is retained (everything below
    /// it is evicted).
    pub fn kept_from(&self) -> u64 {
        self.first_seq()
            .unwrap_or_else(|| self.head.saturating_add(1))
    }

    /// The retained pushes `(seq, recorded at, frame)`, oldest first.
    pub fn entries(&self) -> impl Iterator<Item = (u64, Instant, &Bytes)> {
        self.entries.iter().map(|e| (e.seq, e.at, &e.frame))
    }

    /// Numbers the next push, encodes it with that number (`encode`) and
    /// retains it: aged-out pushes go first, then the oldest past the
    /// message or byte bound (the new one is kept whatever its size, unless
    /// the message bound is 0).
    pub fn push(
        &mut self,
        now: Instant,
        retention: Retention,
        encode: impl FnOnce(u64) -> Bytes,
    ) -> Sequenced {
        self.prune(now, retention);
        let seq = self.head.saturating_add(1);
        let frame = encode(seq);
        self.head = seq;
        let added = self.retain(seq, now, frame.clone(), retention);
        Sequenced { seq, frame, added }
    }

    /// Keeps `frame` within the message and byte bounds; the bytes added.
    fn retain(&mut self, seq: u64, at: Instant, frame: Bytes, retention: Retention) -> usize {
        let Retention {
            max_messages,
            max_bytes,
            ..
        } = retention;
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

    /// Evicts the oldest retained push (the app-wide budget's way); what it
    /// cost.
    pub fn pop_oldest(&mut self) -> Option<usize> {
        let e = self.entries.pop_front()?;
        let cost = entry_cost(&e.frame);
        self.bytes = self.bytes.saturating_sub(cost);
        Some(cost)
    }

    /// What the retained pushes cost.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Evicts the pushes that are `max_age` old at `now`; whether any went.
    pub fn prune(&mut self, now: Instant, retention: Retention) -> bool {
        let before = self.entries.len();
        while let Some(e) = self.entries.front() {
            if now.saturating_duration_since(e.at) < retention.max_age {
                break;
            }
            self.pop_oldest();
        }
        self.entries.len() != before
    }

    /// Nothing retained.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// When the newest retained push was recorded.
    pub fn newest_at(&self) -> Option<Instant> {
        self.entries.back().map(|e| e.at)
    }

    /// What follows `after` at `now` (a fetch): the evicted range as a gap,
    /// then the retained pushes up to `budget` bytes (none when the first
    /// does not fit: the budget is what the link's queue has room for).
    /// `after` past the head (a stale client) is clamped to the head.
    pub fn replay(
        &mut self,
        now: Instant,
        retention: Retention,
        after: u64,
        budget: usize,
    ) -> Replay {
        self.prune(now, retention);
        self.replay_after(after, budget)
    }

    /// Where a client's stream goes on from its cursor `(epoch, after)` at
    /// `now`. In this epoch: after `after`, but not before `floor` (where
    /// the client's history begins), replayed within `budget`. Another
    /// epoch: the loss `{from: after + 1, to: 0}`, as sent (the history it
    /// was in is gone), then on from `fallback`. Epoch 0 (no cursor): on
    /// from `fallback`. Without a budget nothing is replayed: pushes go on
    /// from the head, and what lies between is told as lost.
    pub fn resume(
        &mut self,
        now: Instant,
        retention: Retention,
        (epoch, after): (u64, u64),
        floor: u64,
        fallback: u64,
        budget: Option<usize>,
    ) -> Replay {
        self.prune(now, retention);
        let (after, lost) = if epoch == self.epoch {
            (after.max(floor), None)
        } else if epoch != 0 {
            let lost = SeqGap {
                from: after.saturating_add(1),
                to: 0,
            };
            (fallback, Some(lost))
        } else {
            (fallback, None)
        };
        let mut r = match budget {
            Some(budget) => self.replay_after(after, budget),
            None => Replay::at(self.head),
        };
        let skipped = (budget.is_none() && after < self.head).then(|| SeqGap {
            from: after.saturating_add(1),
            to: self.head,
        });
        r.lost = lost.or(skipped);
        r
    }

    fn replay_after(&self, after: u64, budget: usize) -> Replay {
        let after = after.min(self.head);
        let mut r = Replay::at(after);
        if after == self.head {
            return r;
        }
        let first_missing = after.saturating_add(1);
        match self.entries.front() {
            None => {
                r.evicted = Some(SeqGap {
                    from: first_missing,
                    to: self.head,
                });
                r.start = self.head;
                r.through = self.head;
                return r;
            }
            Some(oldest) if oldest.seq > first_missing => {
                r.evicted = Some(SeqGap {
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
    use crate::error::ErrorCode;
    use crate::wire::{self, encode_frame, Body, Frame};

    const EPOCH: u64 = 77;
    const DAY: Duration = Duration::from_secs(24 * 3600);

    fn bounds(max_messages: usize, max_bytes: usize) -> Retention {
        Retention {
            max_messages,
            max_bytes,
            max_age: DAY,
        }
    }

    /// A log with its bounds, paired as the server pairs them.
    struct Log {
        log: SeqLog,
        bounds: Retention,
    }

    impl std::ops::Deref for Log {
        type Target = SeqLog;
        fn deref(&self) -> &SeqLog {
            &self.log
        }
    }

    impl std::ops::DerefMut for Log {
        fn deref_mut(&mut self) -> &mut SeqLog {
            &mut self.log
        }
    }

    impl Log {
        fn new(epoch: u64, bounds: Retention) -> Log {
            Log {
                log: SeqLog::new(epoch),
                bounds,
            }
        }
        fn push(&mut self, now: Instant, encode: impl FnOnce(u64) -> Bytes) -> Sequenced {
            self.log.push(now, self.bounds, encode)
        }
        fn prune(&mut self, now: Instant) -> bool {
            self.log.prune(now, self.bounds)
        }
        fn replay(&mut self, now: Instant, after: u64, budget: usize) -> Replay {
            self.log.replay(now, self.bounds, after, budget)
        }
        fn resume(
            &mut self,
            now: Instant,
            cursor: (u64, u64),
            floor: u64,
            fallback: u64,
            budget: Option<usize>,
        ) -> Replay {
            self.log
                .resume(now, self.bounds, cursor, floor, fallback, budget)
        }
    }

    fn frame(seq: u64, len: usize) -> Bytes {
        Bytes::from(vec![seq as u8; len])
    }

    /// A log of `n` pushes of 10 bytes each, keeping the last `keep`.
    fn log(n: u64, keep: usize) -> (Log, Instant) {
        let t = Instant::now();
        let mut l = Log::new(EPOCH, bounds(keep, usize::MAX));
        for _ in 0..n {
            l.push(t, |s| frame(s, 10));
        }
        (l, t)
    }

    /// What a replay holds, for comparing in one assertion.
    fn shape(r: &Replay) -> (u64, Option<SeqGap>, usize, u64, bool, u64) {
        (
            r.seq(),
            r.gap(),
            r.frames.len(),
            r.through(),
            r.more(),
            r.truncated_at(),
        )
    }

    #[test]
    fn pushes_are_numbered_encoded_with_their_number_and_kept() {
        let t = Instant::now();
        let mut l = Log::new(EPOCH, bounds(10, usize::MAX));
        assert_eq!((l.epoch(), l.head(), l.is_empty()), (EPOCH, 0, true));
        let p = l.push(t, |s| frame(s, 10 + s as usize));
        assert_eq!((p.seq, p.frame.len()), (1, 11));
        assert_eq!(p.added, 11 + RETAINED_ENTRY_OVERHEAD);
        let p = l.push(t, |s| frame(s, 10 + s as usize));
        assert_eq!((p.seq, p.frame[0], l.head()), (2, 2, 2));
        assert_eq!(l.bytes(), 23 + 2 * RETAINED_ENTRY_OVERHEAD);
        assert_eq!(l.newest_at(), Some(t));
        let r = l.replay(t, 0, usize::MAX);
        assert_eq!(r.frames, vec![frame(1, 11), frame(2, 12)]);
    }

    #[test]
    fn replay_reports_evicted_part_as_gap() {
        let (mut l, t) = log(10, 4);
        let r = l.replay(t, 2, usize::MAX);
        assert_eq!(
            shape(&r),
            (6, Some(SeqGap { from: 3, to: 6 }), 4, 10, false, 0)
        );
        assert_eq!(r.frames[0], frame(7, 10));
        let r = l.replay(t, 8, usize::MAX);
        assert_eq!(shape(&r), (8, None, 2, 10, false, 0));
        // A cursor past the head (a stale client) is clamped to it.
        let r = l.replay(t, 50, usize::MAX);
        assert_eq!(shape(&r), (10, None, 0, 10, false, 0));
        // Right at the oldest kept one: no gap.
        let r = l.replay(t, 6, usize::MAX);
        assert_eq!(shape(&r), (6, None, 4, 10, false, 0));
    }

    #[test]
    fn aged_out_log_gaps_to_head_and_budget_cuts() {
        let (mut l, t) = log(5, 10);
        // Each frame costs its 10 bytes and the queue's overhead.
        let two = 2 * (10 + QUEUED_FRAME_OVERHEAD) + 5;
        let r = l.replay(t, 0, two);
        assert_eq!(shape(&r), (0, None, 2, 2, true, 3));
        assert_eq!(r.bytes(), two - 5);
        // Exactly the cost of two fits two.
        assert_eq!(l.replay(t, 0, two - 5).frames.len(), 2);
        // A budget smaller than the first frame replays nothing (and says so).
        let r = l.replay(t, 0, 10 + QUEUED_FRAME_OVERHEAD - 1);
        assert_eq!(shape(&r), (0, None, 0, 0, true, 1));
        // Not aged out a moment before max_age, gone at it.
        assert!(!l.prune(t + DAY - Duration::from_millis(1)), "nothing went");
        assert!(!l.is_empty());
        assert!(l.prune(t + DAY), "the aged-out went");
        let r = l.replay(t + DAY, 1, usize::MAX);
        assert!(l.is_empty());
        assert_eq!(l.bytes(), 0);
        assert_eq!(
            shape(&r),
            (5, Some(SeqGap { from: 2, to: 5 }), 0, 5, false, 0)
        );
    }

    #[test]
    fn a_push_prunes_what_aged_out_first() {
        let (mut l, t) = log(3, 10);
        let p = l.push(t + DAY, |s| frame(s, 10));
        // The three old ones went before this one was counted in.
        assert_eq!(p.added, 10 + RETAINED_ENTRY_OVERHEAD);
        assert_eq!(l.bytes(), 10 + RETAINED_ENTRY_OVERHEAD);
        let r = l.replay(t + DAY, 0, usize::MAX);
        assert_eq!(
            shape(&r),
            (3, Some(SeqGap { from: 1, to: 3 }), 1, 4, false, 0)
        );
    }

    #[test]
    fn taken_frames_leave_the_reply_fields() {
        let (mut l, t) = log(3, 10);
        let mut r = l.replay(t, 0, 2 * (10 + QUEUED_FRAME_OVERHEAD));
        assert_eq!(r.bytes(), 2 * (10 + QUEUED_FRAME_OVERHEAD));
        assert_eq!(r.take_frames(), vec![frame(1, 10), frame(2, 10)]);
        assert_eq!((r.bytes(), r.through(), r.truncated_at()), (0, 2, 3));
    }

    #[test]
    fn bytes_count_the_overhead_and_bound_the_log() {
        let t = Instant::now();
        let cost = 10 + RETAINED_ENTRY_OVERHEAD;
        let mut l = Log::new(EPOCH, bounds(100, 3 * cost));
        for _ in 0..3 {
            assert_eq!(l.push(t, |s| frame(s, 10)).added, cost);
        }
        assert_eq!(l.bytes(), 3 * cost);
        // A fourth fits only by evicting the first: nothing is added.
        assert_eq!(l.push(t, |s| frame(s, 10)).added, 0);
        let r = l.replay(t, 0, usize::MAX);
        assert_eq!(
            (l.bytes(), r.gap()),
            (3 * cost, Some(SeqGap { from: 1, to: 1 }))
        );
        // One larger than the whole bound is kept alone.
        let big = 10 * cost;
        assert_eq!(
            l.push(t, |s| frame(s, big)).added,
            big + RETAINED_ENTRY_OVERHEAD - 3 * cost
        );
        assert_eq!(l.replay(t, 0, usize::MAX).frames.len(), 1);
        assert_eq!(l.pop_oldest(), Some(big + RETAINED_ENTRY_OVERHEAD));
        assert_eq!((l.bytes(), l.pop_oldest()), (0, None));
    }

    #[test]
    fn the_message_bound_counts_messages() {
        let (l, _) = log(5, 2);
        assert_eq!(l.bytes(), 2 * (10 + RETAINED_ENTRY_OVERHEAD));
        // Nothing is kept with a bound of 0 messages, but the head moves.
        let (l, _) = log(2, 0);
        assert_eq!((l.head(), l.is_empty(), l.bytes()), (2, true, 0));
    }

    #[test]
    fn resume_in_the_epoch_replays_after_the_cursor_and_the_floor() {
        let (mut l, t) = log(6, 10);
        let r = l.resume(t, (EPOCH, 2), 0, 0, Some(usize::MAX));
        assert_eq!(shape(&r), (2, None, 4, 6, false, 0));
        // Nothing before the floor, where the client's history begins.
        let r = l.resume(t, (EPOCH, 2), 4, 0, Some(usize::MAX));
        assert_eq!(shape(&r), (4, None, 2, 6, false, 0));
        // Without a budget: on from the head, the rest told as lost.
        let r = l.resume(t, (EPOCH, 2), 3, 0, None);
        assert_eq!(
            shape(&r),
            (6, Some(SeqGap { from: 4, to: 6 }), 0, 6, false, 0)
        );
        let r = l.resume(t, (EPOCH, 6), 0, 0, None);
        assert_eq!(shape(&r), (6, None, 0, 6, false, 0));
    }

    #[test]
    fn resume_from_another_epoch_tells_the_loss_and_goes_on_from_the_fallback() {
        let (mut l, t) = log(6, 10);
        let lost = Some(SeqGap { from: 10, to: 0 });
        let r = l.resume(t, (EPOCH + 1, 9), 5, 2, Some(usize::MAX));
        assert_eq!(shape(&r), (2, lost, 4, 6, false, 0));
        let r = l.resume(t, (EPOCH + 1, 9), 5, 6, None);
        assert_eq!(shape(&r), (6, lost, 0, 6, false, 0));
        // No cursor (epoch 0): from the fallback, nothing lost.
        let r = l.resume(t, (0, 9), 5, 2, Some(usize::MAX));
        assert_eq!(shape(&r), (2, None, 4, 6, false, 0));
        let r = l.resume(t, (0, 0), 0, 6, None);
        assert_eq!(shape(&r), (6, None, 0, 6, false, 0));
    }

    #[test]
    fn a_loss_and_an_evicted_part_leave_the_evicted_part_to_a_fetch() {
        let (mut l, t) = log(6, 2);
        let r = l.resume(t, (EPOCH + 1, 0), 0, 1, Some(usize::MAX));
        // The loss is the one gap told; the seq stays before the evicted
        // part, so the replay after it reads as a jump the client fetches.
        assert_eq!(
            shape(&r),
            (1, Some(SeqGap { from: 1, to: 0 }), 2, 6, false, 0)
        );
        let r = l.resume(t, (EPOCH, 1), 0, 0, Some(usize::MAX));
        assert_eq!(
            shape(&r),
            (4, Some(SeqGap { from: 2, to: 4 }), 2, 6, false, 0)
        );
    }

    #[test]
    fn resume_prunes_first() {
        let (mut l, t) = log(3, 10);
        let r = l.resume(t + DAY, (EPOCH, 0), 0, 0, Some(usize::MAX));
        assert_eq!(
            shape(&r),
            (3, Some(SeqGap { from: 1, to: 3 }), 0, 3, false, 0)
        );
        assert!(l.is_empty());
    }

    #[test]
    fn nothing_to_replay_goes_on_from_the_head() {
        let r = Replay::at(7);
        assert_eq!(shape(&r), (7, None, 0, 7, false, 0));
    }

    #[test]
    fn push_sizes_match_the_encoding_with_the_longest_seq() {
        for content in [0usize, 1, 100, 127, 128, 16_000, 40_000, 70_000] {
            let message = Some(wire::ChatMessage {
                r#type: "t".into(),
                content: Bytes::from(vec![7u8; content]),
                app_extras: [("k".to_string(), "v".to_string())].into(),
            });
            let user = wire::UserMessagePush {
                from_uid: u64::MAX,
                message: message.clone(),
                timestamp_ms: u64::MAX,
                seq: 0,
            };
            let channel = wire::ChannelMessagePush {
                channel: u32::MAX,
                from_uid: u64::MAX,
                message,
                timestamp_ms: u64::MAX,
                seq: 0,
            };
            let actual = [
                super::super::encode_push(Body::UserMessage(wire::UserMessagePush {
                    seq: u64::MAX,
                    ..user.clone()
                }))
                .len(),
                super::super::encode_push(Body::ChannelMessage(wire::ChannelMessagePush {
                    seq: u64::MAX,
                    ..channel.clone()
                }))
                .len(),
            ];
            let estimated = [
                sequenced_frame_len(prost::Message::encoded_len(&user)),
                sequenced_frame_len(prost::Message::encoded_len(&channel)),
            ];
            assert_eq!(estimated, actual, "content of {content} bytes");
            // Fits exactly at its estimated size, not a byte below.
            assert!(check_sequenced_fits(actual[0], &user).is_ok());
            let e = check_sequenced_fits(actual[0] - 1, &user).unwrap_err();
            assert_eq!(e.code, ErrorCode::MSG_SIZE_LIMIT_EXCEEDED);
        }
        let notice = Body::Membership(wire::MembershipPush {
            channel: 3,
            joined: vec![1, 2],
            left: vec![9],
        });
        let frame = Frame {
            request_id: 0,
            body: Some(notice.clone()),
        };
        assert_eq!(notice.encoded_len(), encode_frame(&frame).len());
    }
}
