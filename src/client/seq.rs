//! One reliable stream's sequence tracking: drop duplicates, hold messages
//! that arrive after a gap while the gap is fetched, and give up on a gap in
//! one explicit step.

use std::collections::BTreeMap;

use super::event::Event;

/// What to do with a pushed sequence number.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Accept {
    /// In order: deliver it (and then whatever `drain_ready` releases).
    Deliver,
    /// Seen before: drop it.
    Duplicate,
    /// After a gap: held; `fetch` says whether to ask for the gap now.
    Held { fetch: bool },
    /// After a gap, and the hold buffer is full: dropped (it will be
    /// fetched again with the gap).
    Dropped { fetch: bool },
}

#[derive(Debug, Default)]
pub(crate) struct SeqStream {
    /// The last sequence number delivered in order (0: none yet).
    pub(crate) last: u64,
    /// A fetch of the gap after `last` is in flight.
    pub(crate) fetching: bool,
    /// `last` when the fetch started: a fetch that brought nothing new ends
    /// the wait (what is still missing is lost).
    fetch_from: u64,
    held: BTreeMap<u64, Event>,
}

impl SeqStream {
    /// Notes that a fetch starts now (its request goes out).
    pub(crate) fn start_fetch(&mut self) {
        self.fetching = true;
        self.fetch_from = self.last;
    }

    pub(crate) fn reset(&mut self, last: u64) {
        self.last = last;
        self.fetching = false;
        self.held.clear();
    }

    pub(crate) fn held(&self) -> usize {
        self.held.len()
    }

    pub(crate) fn accept(
        &mut self,
        seq: u64,
        event: Event,
        max_held: usize,
    ) -> (Accept, Option<Event>) {
        if seq <= self.last || self.held.contains_key(&seq) {
            return (Accept::Duplicate, None);
        }
        if seq == self.last.saturating_add(1) {
            self.last = seq;
            return (Accept::Deliver, Some(event));
        }
        let fetch = !self.fetching;
        if self.held.len() >= max_held {
            return (Accept::Dropped { fetch }, None);
        }
        self.held.insert(seq, event);
        (Accept::Held { fetch }, None)
    }

    /// The held messages that are now in order, removed.
    pub(crate) fn drain_ready(&mut self, out: &mut impl FnMut(Event)) {
        while let Some(entry) = self.held.first_entry() {
            if *entry.key() <= self.last {
                entry.remove();
            } else if *entry.key() == self.last.saturating_add(1) {
                self.last += 1;
                out(entry.remove());
            } else {
                break;
            }
        }
    }

    /// Marks `from..=to` as lost (never to arrive). Returns the lost range
    /// actually beyond what was delivered, if any. A message held already is
    /// not lost, whatever the server says of its range now (it evicted it
    /// since it pushed it): the range stops before the first held one.
    pub(crate) fn skip(&mut self, from: u64, to: u64) -> Option<(u64, u64)> {
        let from = from.max(self.last.saturating_add(1));
        let to = match self.held.keys().next() {
            Some(&held) => to.min(held.saturating_sub(1)),
            None => to,
        };
        if to < from {
            return None;
        }
        self.last = to;
        Some((from, to))
    }

    /// After a complete fetch through `through` (everything the server had
    /// up to there was pushed before its reply): a hole left below `through`
    /// or before a held message was dropped by the full hold buffer, so fetch
    /// again if this fetch made progress; otherwise the hole is lost.
    pub(crate) fn fetch_done(&mut self, through: u64) -> FetchOutcome {
        self.fetching = false;
        let hole_end = match self.held.keys().next() {
            Some(&first) => first - 1,
            None if through > self.last => through,
            None => return FetchOutcome::Complete,
        };
        if self.last > self.fetch_from {
            return FetchOutcome::FetchAgain;
        }
        match self.skip(self.last.saturating_add(1), hole_end) {
            Some((from, to)) => FetchOutcome::Lost(from, to),
            None => FetchOutcome::Complete,
        }
    }
}

/// What a finished fetch leaves to do.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum FetchOutcome {
    /// Nothing missing.
    Complete,
    /// Progress was made but a hole remains: fetch after `last` again.
    FetchAgain,
    /// This range will not come.
    Lost(u64, u64),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(n: u64) -> Event {
        Event::TokenWillExpire { expires_at_ms: n }
    }

    #[test]
    fn in_order_duplicates_and_gaps() {
        let mut s = SeqStream::default();
        assert_eq!(s.accept(1, ev(1), 4).0, Accept::Deliver);
        assert_eq!(s.accept(1, ev(1), 4).0, Accept::Duplicate);
        assert_eq!(s.accept(3, ev(3), 4).0, Accept::Held { fetch: true });
        s.start_fetch();
        assert_eq!(s.accept(3, ev(3), 4).0, Accept::Duplicate);
        assert_eq!(s.accept(4, ev(4), 4).0, Accept::Held { fetch: false });
        let mut out = Vec::new();
        s.drain_ready(&mut |e| out.push(e));
        assert!(out.is_empty());
        assert_eq!(s.accept(2, ev(2), 4).0, Accept::Deliver);
        s.drain_ready(&mut |e| out.push(e));
        assert_eq!(out, vec![ev(3), ev(4)]);
        assert_eq!(s.last, 4);
    }

    #[test]
    fn a_gap_never_swallows_a_held_message() {
        let mut s = SeqStream::default();
        s.reset(0);
        s.accept(2, ev(2), 4);
        s.accept(5, ev(5), 4);
        // The server says 1..=6 are gone (it evicted 2 and 5 after pushing
        // them): only 1 is lost; 2 is delivered, then 3..=4 are lost, 5 is
        // delivered and 6 is lost.
        assert_eq!(s.skip(1, 6), Some((1, 1)));
        let mut out = Vec::new();
        s.drain_ready(&mut |e| out.push(e));
        assert_eq!((out.clone(), s.last), (vec![ev(2)], 2));
        assert_eq!(s.skip(1, 6), Some((3, 4)));
        s.drain_ready(&mut |e| out.push(e));
        assert_eq!(s.skip(1, 6), Some((6, 6)));
        assert_eq!((out, s.last), (vec![ev(2), ev(5)], 6));
        // Held right after the gap: the gap ends just before it.
        let mut s = SeqStream::default();
        s.accept(3, ev(3), 4);
        assert_eq!(s.skip(1, 2), Some((1, 2)));
        assert_eq!(s.skip(1, 3), None, "nothing left to lose before 3");
    }

    #[test]
    fn a_fetch_that_cannot_fill_the_gap_skips_it_once() {
        let mut s = SeqStream::default();
        s.reset(5);
        s.accept(9, ev(9), 4);
        s.start_fetch();
        assert_eq!(s.fetch_done(9), FetchOutcome::Lost(6, 8));
        let mut out = Vec::new();
        s.drain_ready(&mut |e| out.push(e));
        assert_eq!(out, vec![ev(9)]);
        assert_eq!(s.fetch_done(9), FetchOutcome::Complete);
    }

    #[test]
    fn a_fetch_that_made_progress_is_repeated_for_what_the_buffer_dropped() {
        let mut s = SeqStream::default();
        s.accept(3, ev(3), 1);
        assert_eq!(s.accept(4, ev(4), 1).0, Accept::Dropped { fetch: true });
        s.start_fetch();
        // The fetch replays 1 and 2; 4 was dropped, so a hole remains.
        assert_eq!(s.accept(1, ev(1), 1).0, Accept::Deliver);
        assert_eq!(s.accept(2, ev(2), 1).0, Accept::Deliver);
        s.drain_ready(&mut |_| {});
        assert_eq!(s.last, 3);
        assert_eq!(s.fetch_done(4), FetchOutcome::FetchAgain);
    }
}
