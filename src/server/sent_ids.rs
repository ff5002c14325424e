//! Exactly-once sends: the message ids of each uid's recent successful
//! sends and their replies, so that a re-send after a lost reply is answered
//! with the first reply and delivers nothing.
//!
//! Bounded twice: an id is remembered for a window of time, and at most
//! `max` ids per uid (the oldest forgotten first). Failed sends are not
//! remembered: they delivered nothing, so a retry is processed anew.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use super::IdMap;
use crate::error::{ErrorCode, ServiceError};
use crate::wire::SendReply;

/// Where a send went: a repeated id must name the same destination.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum Destination {
    User(u64),
    /// A hash of the channel key (numbers change when a channel is
    /// forgotten and made again; the key does not).
    Channel(u64),
}

#[derive(Debug, Default)]
struct UidIds {
    /// FxHash although clients choose the ids: the map is one uid's and
    /// holds at most `send_dedupe_max` ids, so colliding ids slow down only
    /// that uid's own sends, by a bounded amount; SipHash here was a tenth
    /// of the server's time on a 1 -> 1 stream.
    replies: IdMap<u64, (Instant, Destination, SendReply)>,
    /// Ids in the order they were remembered, with when.
    order: VecDeque<(Instant, u64)>,
}

impl UidIds {
    /// Forgets the ids remembered at or before `cutoff` (none when the
    /// window reaches back before the clock's start).
    fn forget_before(&mut self, cutoff: Option<Instant>) {
        let Some(cutoff) = cutoff else { return };
        while let Some(&(at, id)) = self.order.front() {
            if at > cutoff {
                break;
            }
            self.order.pop_front();
            self.replies.remove(&id);
        }
    }
}

/// The remembered sends of every (appid, uid).
#[derive(Debug, Default)]
pub(crate) struct SentIds {
    by_uid: HashMap<(u32, u64), UidIds>,
}

impl SentIds {
    /// The reply of an earlier send with `id`, if remembered; 2013 when that
    /// send went elsewhere; 2001 for id 0.
    pub fn lookup(
        &self,
        who: (u32, u64),
        id: u64,
        to: Destination,
        now: Instant,
        window: Duration,
    ) -> Result<Option<SendReply>, ServiceError> {
        if id == 0 {
            return Err(ServiceError::new(
                ErrorCode::INVALID_PARAMETER,
                "message_id must be non-zero",
            ));
        }
        let Some((at, dest, reply)) = self.by_uid.get(&who).and_then(|u| u.replies.get(&id)) else {
            return Ok(None);
        };
        if now.saturating_duration_since(*at) >= window {
            return Ok(None);
        }
        if *dest != to {
            return Err(ServiceError::new(
                ErrorCode::MESSAGE_ID_REUSED,
                "this message id was used for a send to another destination",
            ));
        }
        Ok(Some(*reply))
    }

    /// Remembers a successful send; forgets what is past `window` or past
    /// `max` ids of the uid.
    pub fn remember(
        &mut self,
        who: (u32, u64),
        id: u64,
        to: Destination,
        reply: &SendReply,
        now: Instant,
        (window, max): (Duration, usize),
    ) {
        if max == 0 {
            return;
        }
        let ids = self.by_uid.entry(who).or_default();
        ids.forget_before(now.checked_sub(window));
        if ids.replies.contains_key(&id) {
            return;
        }
        while ids.order.len() >= max {
            if let Some((_, old)) = ids.order.pop_front() {
                ids.replies.remove(&old);
            }
        }
        ids.replies.insert(id, (now, to, *reply));
        ids.order.push_back((now, id));
    }

    /// Forgets every id older than `window` (and uids left with none).
    pub fn sweep(&mut self, now: Instant, window: Duration) {
        let cutoff = now.checked_sub(window);
        self.by_uid.retain(|_, ids| {
            ids.forget_before(cutoff);
            !ids.order.is_empty()
        });
    }

    /// Ids remembered in all.
    pub fn len(&self) -> usize {
        self.by_uid.values().map(|u| u.order.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: Duration = Duration::from_secs(120);

    fn reply(seq: u64) -> SendReply {
        SendReply {
            timestamp_ms: 7,
            delivered_online: true,
            seq,
        }
    }

    #[test]
    fn a_remembered_id_answers_with_its_reply_until_the_window_ends() {
        let t0 = Instant::now();
        let mut ids = SentIds::default();
        let who = (1, 2);
        let to = Destination::User(3);
        assert_eq!(ids.lookup(who, 9, to, t0, W), Ok(None));
        ids.remember(who, 9, to, &reply(4), t0, (W, 10));
        assert_eq!(ids.lookup(who, 9, to, t0 + W / 2, W), Ok(Some(reply(4))));
        // Another uid has its own ids.
        assert_eq!(ids.lookup((1, 5), 9, to, t0, W), Ok(None));
        let err = ids.lookup(who, 9, Destination::User(4), t0, W).unwrap_err();
        assert_eq!(err.code, ErrorCode::MESSAGE_ID_REUSED);
        let err = ids
            .lookup(who, 9, Destination::Channel(3), t0, W)
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::MESSAGE_ID_REUSED);
        assert_eq!(
            ids.lookup(who, 0, to, t0, W).unwrap_err().code,
            ErrorCode::INVALID_PARAMETER
        );
        // At the window's end it is forgotten.
        let just_before = t0 + W - Duration::from_millis(1);
        assert_eq!(ids.lookup(who, 9, to, just_before, W), Ok(Some(reply(4))));
        assert_eq!(ids.lookup(who, 9, to, t0 + W, W), Ok(None));
        ids.sweep(just_before, W);
        assert_eq!(ids.len(), 1);
        ids.sweep(t0 + W, W);
        assert_eq!(ids.len(), 0);
    }

    #[test]
    fn at_most_max_ids_per_uid_oldest_forgotten_first() {
        let t0 = Instant::now();
        let mut ids = SentIds::default();
        let who = (1, 2);
        let to = Destination::User(3);
        for id in 1..=5 {
            ids.remember(who, id, to, &reply(id), t0, (W, 3));
        }
        assert_eq!(ids.len(), 3);
        assert_eq!(ids.lookup(who, 2, to, t0, W), Ok(None));
        assert_eq!(ids.lookup(who, 3, to, t0, W), Ok(Some(reply(3))));
        // Remembering the same id twice keeps one entry.
        ids.remember(who, 5, to, &reply(5), t0, (W, 3));
        assert_eq!(ids.len(), 3);
        // Old ids go when a new one comes after the window.
        ids.remember(who, 6, to, &reply(6), t0 + W, (W, 3));
        assert_eq!(ids.len(), 1);
        ids.remember((1, 9), 1, to, &reply(1), t0, (W, 0));
        assert_eq!(ids.len(), 1);
    }
}
