//! The Session's fixed timer table (one slot per kind) with its earliest deadline.

use std::time::Instant;

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum Timer {
    /// Send a ping when nothing was sent for a heartbeat interval.
    Heartbeat,
    /// Dialing too long, or nothing received for the idle timeout: the link is dead.
    LinkDeadline,
    /// Dial again after a backoff.
    Reconnect,
    /// Send the coalesced P2P ack.
    Ack,
    /// Emit TokenWillExpire.
    TokenWarning,
}

const COUNT: usize = 5;

#[derive(Clone, Debug, Default)]
pub(crate) struct TimerTable {
    slots: [Option<Instant>; COUNT],
}

impl TimerTable {
    pub(crate) fn set(&mut self, timer: Timer, at: Instant) {
        self.slots[timer as usize] = Some(at);
    }

    pub(crate) fn stop(&mut self, timer: Timer) {
        self.slots[timer as usize] = None;
    }

    pub(crate) fn get(&self, timer: Timer) -> Option<Instant> {
        self.slots[timer as usize]
    }

    pub(crate) fn stop_all(&mut self) {
        self.slots = [None; COUNT];
    }

    pub(crate) fn earliest(&self) -> Option<Instant> {
        self.slots.iter().flatten().min().copied()
    }

    /// Clears and returns the timers due at `now`.
    pub(crate) fn expire(&mut self, now: Instant) -> impl Iterator<Item = Timer> {
        const ALL: [Timer; COUNT] = [
            Timer::Heartbeat,
            Timer::LinkDeadline,
            Timer::Reconnect,
            Timer::Ack,
            Timer::TokenWarning,
        ];
        let mut due = [None; COUNT];
        for (slot, timer) in ALL.into_iter().enumerate() {
            if self.slots[slot].is_some_and(|t| t <= now) {
                self.slots[slot] = None;
                due[slot] = Some(timer);
            }
        }
        due.into_iter().flatten()
    }
}
