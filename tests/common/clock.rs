//! The fake clock: time is an argument of every call, and a test jumps it
//! straight to the next deadline instead of sleeping.

use std::time::{Duration, Instant};

/// The wall clock (unix ms) the test servers read at their start.
pub const T0_UNIX_MS: u64 = 1_700_000_000_000;

pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

pub fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// The earliest of some deadlines.
pub fn earliest(deadlines: impl IntoIterator<Item = Option<Instant>>) -> Option<Instant> {
    deadlines.into_iter().flatten().min()
}

/// Jumps `now` to `next` if that deadline is due by `end` (never backwards)
/// and says so; otherwise moves `now` to `end` and returns false. The loop
/// `while jump(&mut now, machine.poll_timeout(), end) { fire }` runs a
/// machine for a span of time in as many steps as it has deadlines.
pub fn jump(now: &mut Instant, next: Option<Instant>, end: Instant) -> bool {
    match next {
        Some(t) if t <= end => {
            *now = (*now).max(t);
            true
        }
        _ => {
            *now = (*now).max(end);
            false
        }
    }
}

/// A guard against a machine whose deadline never moves past `now`: the
/// number of deadlines a run may fire before the test fails.
pub const MAX_STEPS: usize = 1_000_000;
