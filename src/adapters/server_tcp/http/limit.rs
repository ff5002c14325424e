//! The API listener's rate limits: a token bucket per app for the
//! authenticated calls, and one per client address (IPv6: per /64) for the
//! calls without a valid key, so that guessing keys is slow too.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::ApiOptions;

/// Client addresses tracked at most; past it, the buckets that refilled
/// (they hold nothing a fresh one would not) are forgotten.
const MAX_TRACKED: usize = 10_000;

/// A token bucket: `burst` tokens at most, `rate` more per second.
#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Buckets by key, all with the same rate and burst.
#[derive(Debug)]
pub(super) struct Buckets<K> {
    rate: f64,
    burst: f64,
    buckets: HashMap<K, Bucket>,
}

impl<K: Eq + Hash + Copy> Buckets<K> {
    pub fn new(options: &ApiOptions) -> Self {
        Buckets {
            rate: f64::from(options.requests_per_second.max(1)),
            burst: f64::from(options.burst.max(1)),
            buckets: HashMap::new(),
        }
    }

    /// Takes a token of `key`'s bucket, or says how long until there is one.
    pub fn take(&mut self, key: K, now: Instant) -> Result<(), Duration> {
        if self.buckets.len() >= MAX_TRACKED && !self.buckets.contains_key(&key) {
            let (rate, burst) = (self.rate, self.burst);
            self.buckets.retain(|_, b| {
                b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * rate < burst
            });
        }
        let burst = self.burst;
        let b = self.buckets.entry(key).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * self.rate).min(self.burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - b.tokens) / self.rate))
        }
    }
}

/// The per-app and per-address limits of one API listener.
#[derive(Debug)]
pub(super) struct Limits {
    pub apps: Buckets<u32>,
    pub addresses: Buckets<IpAddr>,
}

impl Limits {
    pub fn new(options: &ApiOptions) -> Self {
        Limits {
            apps: Buckets::new(options),
            addresses: Buckets::new(options),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_its_rate() {
        let options = ApiOptions {
            requests_per_second: 10,
            burst: 3,
        };
        let mut b = Buckets::new(&options);
        let t = Instant::now();
        for _ in 0..3 {
            assert_eq!(b.take(1u32, t), Ok(()));
        }
        let wait = b.take(1, t).unwrap_err();
        assert!(wait > Duration::ZERO && wait <= Duration::from_millis(100));
        assert_eq!(b.take(2, t), Ok(()), "another key has its own bucket");
        let later = t + Duration::from_millis(100);
        assert_eq!(b.take(1, later), Ok(()));
        assert!(b.take(1, later).is_err());
        // Refilled to the burst at most.
        let much_later = later + Duration::from_secs(60);
        for _ in 0..3 {
            assert_eq!(b.take(1, much_later), Ok(()));
        }
        assert!(b.take(1, much_later).is_err());
    }
}
