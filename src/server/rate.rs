//! The per-instance send rate limit: a sliding window log, bounded by the
//! limit itself.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

#[derive(Debug, Default)]
pub(crate) struct RateLimiter {
    hits: VecDeque<Instant>,
}

impl RateLimiter {
    /// Counts one send at `now`; `false` (not counted) when `limit` sends
    /// happened within the last `window`.
    pub fn allow(&mut self, now: Instant, limit: usize, window: Duration) -> bool {
        if !self.has_room(now, limit, window) {
            return false;
        }
        self.hits.push_back(now);
        true
    }

    /// Whether a send at `now` would be allowed (nothing is counted).
    pub fn has_room(&mut self, now: Instant, limit: usize, window: Duration) -> bool {
        while let Some(&t) = self.hits.front() {
            if now.saturating_duration_since(t) < window {
                break;
            }
            self.hits.pop_front();
        }
        self.hits.len() < limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_slides() {
        let t = Instant::now();
        let w = Duration::from_secs(3);
        let mut r = RateLimiter::default();
        assert!(r.allow(t, 2, w));
        assert!(r.allow(t + Duration::from_secs(1), 2, w));
        assert!(!r.allow(t + Duration::from_secs(2), 2, w));
        assert!(r.allow(t + Duration::from_secs(3), 2, w));
    }
}

/// One rate: `burst` units at once, earned back at `burst` per `per`.
#[non_exhaustive]
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct RateLimit {
    /// Units allowed at once (and per `per`).
    pub burst: u64,
    /// The time in which `burst` units are earned back.
    pub per: Duration,
}

impl RateLimit {
    /// `burst` units per `per`.
    pub const fn new(burst: u64, per: Duration) -> Self {
        RateLimit { burst, per }
    }

    /// The time one unit takes to earn back.
    fn unit(&self) -> Duration {
        self.per / u32::try_from(self.burst.max(1)).unwrap_or(u32::MAX)
    }
}

/// A rate limit's state, as GCRA keeps it: the time at which the bucket is
/// full again (a debt that drains at the limit's rate). 16 bytes.
#[derive(Copy, Clone, Debug, Default)]
pub(crate) struct Bucket {
    full_at: Option<Instant>,
}

impl Bucket {
    /// Takes `cost` units if they fit within the burst; `false` (nothing
    /// taken) otherwise.
    pub fn try_take(&mut self, now: Instant, limit: RateLimit, cost: u64) -> bool {
        if !self.can_take(now, limit) {
            return false;
        }
        let after = self.full_at.map_or(now, |t| t.max(now)) + mul(limit.unit(), cost);
        if after.saturating_duration_since(now) > limit.per {
            return false;
        }
        self.full_at = Some(after);
        true
    }

    /// Whether anything at all may be taken now (the bucket is not empty).
    pub fn can_take(&self, now: Instant, limit: RateLimit) -> bool {
        self.full_at
            .is_none_or(|t| t.saturating_duration_since(now) + limit.unit() <= limit.per)
    }

    /// Takes `cost` units whatever the level (for costs known only after
    /// the work, such as the bytes of a replay: the next request waits until
    /// the debt is back within one burst). The debt is what was taken: a
    /// charge is never forgiven, or a stream of charges would pass the rate.
    /// It is capped at two bursts so that one huge charge cannot lock a
    /// user out for longer than `per`.
    pub fn charge(&mut self, now: Instant, limit: RateLimit, cost: u64) {
        let after = self.full_at.map_or(now, |t| t.max(now)) + mul(limit.unit(), cost);
        self.full_at = Some(after.min(now + limit.per * 2));
    }

    /// Nothing owed at `now`: the bucket can be forgotten.
    pub fn is_idle(&self, now: Instant) -> bool {
        self.full_at.is_none_or(|t| t <= now)
    }
}

fn mul(d: Duration, n: u64) -> Duration {
    d.checked_mul(u32::try_from(n).unwrap_or(u32::MAX))
        .unwrap_or(Duration::MAX / 4)
}

#[cfg(test)]
mod bucket_tests {
    use super::*;

    #[test]
    fn a_burst_then_the_rate() {
        let t = Instant::now();
        let l = RateLimit::new(3, Duration::from_secs(3));
        let mut b = Bucket::default();
        assert!(b.try_take(t, l, 1));
        assert!(b.try_take(t, l, 1));
        assert!(b.try_take(t, l, 1));
        assert!(!b.try_take(t, l, 1), "the burst is spent");
        assert!(!b.is_idle(t));
        let s = Duration::from_secs(1);
        assert!(!b.try_take(t + s - Duration::from_millis(1), l, 1));
        assert!(b.try_take(t + s, l, 1), "one unit a second comes back");
        assert!(!b.try_take(t + s, l, 1));
        assert!(b.is_idle(t + 4 * s));
        assert!(b.try_take(t + 10 * s, l, 3), "full again after a while");
    }

    #[test]
    fn weights_and_charges() {
        let t = Instant::now();
        let l = RateLimit::new(10, Duration::from_secs(10));
        let mut b = Bucket::default();
        assert!(!b.try_take(t, l, 11), "more than a burst never fits");
        assert!(b.try_take(t, l, 10));
        let mut c = Bucket::default();
        assert!(c.can_take(t, l));
        c.charge(t, l, 1_000_000);
        assert!(!c.can_take(t, l));
        // A huge charge owes at most two bursts: usable again after `per`,
        // full after twice that.
        assert!(!c.can_take(t + Duration::from_secs(10) - Duration::from_millis(1), l));
        assert!(c.can_take(t + Duration::from_secs(11), l));
        assert!(!c.is_idle(t + Duration::from_secs(19)));
        assert!(c.is_idle(t + Duration::from_secs(20)));
        // Charges add up: twelve of 1 unit (one burst is 10) wait 2 units.
        let mut d = Bucket::default();
        for _ in 0..12 {
            d.charge(t, l, 1);
        }
        assert!(!d.can_take(t + Duration::from_millis(2_999), l));
        assert!(d.can_take(t + Duration::from_secs(3), l));
    }
}

/// What a request is, for the per-uid rate limits.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum RateKind {
    Send,
    AttributeWrite,
    Query,
    Membership,
    FetchBytes,
}

/// The rate-limit buckets of one uid (all its instances together).
#[derive(Debug, Default)]
pub(crate) struct UidRates {
    buckets: [Bucket; 5],
}

impl UidRates {
    pub fn bucket(&mut self, kind: RateKind) -> &mut Bucket {
        &mut self.buckets[kind as usize]
    }

    pub fn peek(&self, kind: RateKind) -> &Bucket {
        &self.buckets[kind as usize]
    }

    /// Nothing owed in any bucket: the record can go.
    pub fn is_idle(&self, now: Instant) -> bool {
        self.buckets.iter().all(|b| b.is_idle(now))
    }
}
