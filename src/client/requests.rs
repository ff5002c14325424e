//! Requests in flight: what each is waiting for, and its deadline.
//!
//! Timeouts come in three fixed lengths, and `now` never goes backwards, so the
//! deadlines of each class are queued in order: the earliest deadline is the
//! front of one of three queues, and finishing a request costs O(1) amortised.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::event::{ChannelHandle, LostStream, RequestId};
use super::Timing;
use crate::types::Region;

/// What a request's reply completes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum PendingKind {
    /// The application's login (`user`) or the Session's own re-login.
    Login {
        user: bool,
    },
    Logout,
    RefreshToken(String),
    SetRegion(Region),
    InstanceInfo,
    /// A send; a reliable one keeps its encoded frame (same request id,
    /// same message id) to be sent again after a resumed login.
    Send(Option<Bytes>),
    OnlineStatus,
    Join {
        channel: ChannelHandle,
        user: bool,
    },
    Leave {
        channel: ChannelHandle,
    },
    UserList {
        channel: ChannelHandle,
    },
    Attributes {
        channel: ChannelHandle,
    },
    UserCount,
    /// Attribute writes: a bare success.
    Done,
    /// The Session's own gap fetch.
    Fetch(LostStream),
    /// The Session's own leave of a channel whose join or leave outcome it
    /// does not know; its reply changes nothing.
    Unjoin,
}

impl PendingKind {
    /// Whether the application sees a completion for it.
    pub(crate) fn is_user(&self) -> bool {
        !matches!(
            self,
            PendingKind::Login { user: false }
                | PendingKind::Join { user: false, .. }
                | PendingKind::Fetch(_)
                | PendingKind::Unjoin
        )
    }

    fn class(&self) -> usize {
        match self {
            PendingKind::Login { .. } => 0,
            PendingKind::Send(_) => 1,
            _ => 2,
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct Requests {
    pending: HashMap<u64, PendingKind>,
    deadlines: [VecDeque<(Instant, u64)>; 3],
    next_id: u64,
}

impl Requests {
    pub(crate) fn len(&self) -> usize {
        self.pending.len()
    }

    fn timeout(timing: &Timing, class: usize) -> Duration {
        [
            timing.login_timeout,
            timing.message_timeout,
            timing.request_timeout,
        ][class]
    }

    pub(crate) fn insert(&mut self, now: Instant, timing: &Timing, kind: PendingKind) -> RequestId {
        self.next_id += 1;
        let id = self.next_id;
        let class = kind.class();
        self.deadlines[class].push_back((now + Self::timeout(timing, class), id));
        self.pending.insert(id, kind);
        RequestId(id)
    }

    pub(crate) fn remove(&mut self, id: u64) -> Option<PendingKind> {
        let kind = self.pending.remove(&id)?;
        // Keep every queue's front live so `earliest` is exact.
        for q in &mut self.deadlines {
            while q
                .front()
                .is_some_and(|(_, id)| !self.pending.contains_key(id))
            {
                q.pop_front();
            }
        }
        Some(kind)
    }

    pub(crate) fn earliest(&self) -> Option<Instant> {
        self.deadlines
            .iter()
            .filter_map(|q| q.front().map(|(t, _)| *t))
            .min()
    }

    /// The next request whose deadline has passed, removed.
    pub(crate) fn pop_expired(&mut self, now: Instant) -> Option<(RequestId, PendingKind)> {
        let class = (0..3).find(|&c| self.deadlines[c].front().is_some_and(|(t, _)| *t <= now))?;
        let (_, id) = self.deadlines[class].front().copied()?;
        let kind = self.remove(id)?;
        Some((RequestId(id), kind))
    }

    /// Every request `pred` selects, removed, in id order.
    /// Keeps the encoded frame of send `id` for a re-send.
    pub(crate) fn set_frame(&mut self, id: u64, frame: Bytes) {
        if let Some(PendingKind::Send(f)) = self.pending.get_mut(&id) {
            *f = Some(frame);
        }
    }

    /// The reliable sends in flight, oldest first, with their frames.
    pub(crate) fn resendable(&self) -> Vec<(u64, Bytes)> {
        let mut v: Vec<(u64, Bytes)> = self
            .pending
            .iter()
            .filter_map(|(id, k)| match k {
                PendingKind::Send(Some(frame)) => Some((*id, frame.clone())),
                _ => None,
            })
            .collect();
        v.sort_unstable_by_key(|(id, _)| *id);
        v
    }

    pub(crate) fn drain_where(
        &mut self,
        mut pred: impl FnMut(&PendingKind) -> bool,
    ) -> Vec<(RequestId, PendingKind)> {
        let mut ids: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, k)| pred(k))
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        ids.into_iter()
            .filter_map(|id| self.remove(id).map(|k| (RequestId(id), k)))
            .collect()
    }
}
