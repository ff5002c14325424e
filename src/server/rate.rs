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
        while let Some(&t) = self.hits.front() {
            if now.saturating_duration_since(t) < window {
                break;
            }
            self.hits.pop_front();
        }
        if self.hits.len() >= limit {
            return false;
        }
        self.hits.push_back(now);
        true
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
