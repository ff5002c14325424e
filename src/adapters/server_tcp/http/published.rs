//! What the runner's threads publish for the API listener: each thread's
//! [`Stats`] snapshot in a slot of its own (replaced every
//! [`PUBLISH_EVERY`](super::PUBLISH_EVERY) and once more at shutdown), and
//! whether the server is ready. A scrape merges the slots; a frame never
//! touches any of this.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use crate::server::Stats;

/// The slots and readiness flags, in the runner's shared `Control`.
#[derive(Default)]
pub(in crate::adapters::server_tcp) struct Published {
    /// Threads that publish (0: no API listener, nothing is published).
    threads: AtomicUsize,
    shutting_down: AtomicBool,
    slots: Mutex<Vec<Option<Stats>>>,
}

impl Published {
    fn slots(&self) -> MutexGuard<'_, Vec<Option<Stats>>> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Turns publishing on for `threads` threads (before they start).
    pub fn enable(&self, threads: usize) {
        *self.slots() = vec![None; threads];
        self.threads.store(threads, Ordering::Release);
    }

    /// Whether the threads publish (there is an API listener).
    pub fn enabled(&self) -> bool {
        self.threads.load(Ordering::Acquire) > 0
    }

    /// Thread `thread`'s snapshot now.
    pub fn publish(&self, thread: usize, stats: Stats) {
        if let Some(slot) = self.slots().get_mut(thread) {
            *slot = Some(stats);
        }
    }

    /// The shutdown started: not ready any more.
    pub fn shutting_down(&self) {
        self.shutting_down.store(true, Ordering::Release);
    }

    /// Whether the shutdown started.
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
    }

    /// Every thread published at least once (so every thread serves), and
    /// the shutdown has not started.
    pub fn ready(&self) -> bool {
        !self.is_shutting_down() && self.enabled() && self.slots().iter().all(Option::is_some)
    }

    /// The threads' last snapshots added up.
    pub fn merged(&self) -> Stats {
        let slots = self.slots().clone();
        let mut all = Stats::default();
        for s in slots.iter().flatten() {
            all.merge(s);
        }
        all
    }
}
