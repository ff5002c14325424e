//! The Session's channel table: handles, keys, push numbers and membership state.

use std::collections::HashMap;

use super::event::ChannelHandle;
use super::seq::SeqStream;
use crate::types::ChannelKey;

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum Membership {
    /// Not a member.
    Out,
    /// The application's join is in flight.
    Joining,
    /// A member.
    Joined,
    /// A member whose link was lost; the Session's re-join is in flight (or
    /// will be, once re-logged-in).
    Rejoining,
    /// The application's leave is in flight (still a member until it ends).
    Leaving,
}

#[derive(Debug)]
pub(crate) struct Channel {
    pub(crate) key: ChannelKey,
    pub(crate) membership: Membership,
    /// The server's number for this channel in pushes (from the join reply).
    pub(crate) number: Option<u32>,
    pub(crate) stream: SeqStream,
    /// The epoch of the channel's stream that `stream` counts in (0: none).
    pub(crate) epoch: u64,
    /// The application's leave, encoded and waiting for the channel's fetch
    /// to end (see `Session::leave_channel`).
    pub(crate) held_leave: Option<bytes::Bytes>,
    /// A join or leave ended without its reply (timeout, lost link): the
    /// server may hold a membership the application does not know of, so a
    /// leave follows it.
    pub(crate) uncertain: bool,
}

#[derive(Debug, Default)]
pub(crate) struct Channels {
    list: Vec<Channel>,
    by_key: HashMap<ChannelKey, ChannelHandle>,
    by_number: HashMap<u32, ChannelHandle>,
}

impl Channels {
    pub(crate) fn handle_for(&mut self, key: ChannelKey) -> ChannelHandle {
        if let Some(h) = self.by_key.get(&key) {
            return *h;
        }
        let h = ChannelHandle(self.list.len() as u32);
        self.by_key.insert(key.clone(), h);
        self.list.push(Channel {
            key,
            membership: Membership::Out,
            number: None,
            stream: SeqStream::default(),
            epoch: 0,
            held_leave: None,
            uncertain: false,
        });
        h
    }

    pub(crate) fn get(&self, h: ChannelHandle) -> Option<&Channel> {
        self.list.get(h.0 as usize)
    }

    pub(crate) fn get_mut(&mut self, h: ChannelHandle) -> Option<&mut Channel> {
        self.list.get_mut(h.0 as usize)
    }

    pub(crate) fn by_number(&self, number: u32) -> Option<ChannelHandle> {
        self.by_number.get(&number).copied()
    }

    pub(crate) fn handles(&self) -> impl Iterator<Item = ChannelHandle> {
        (0..self.list.len() as u32).map(ChannelHandle)
    }

    /// Channels counted against the joined limit (members, or about to be).
    pub(crate) fn joined_count(&self) -> usize {
        self.list
            .iter()
            .filter(|c| c.membership != Membership::Out)
            .count()
    }

    pub(crate) fn set_number(&mut self, h: ChannelHandle, number: u32) {
        let Some(c) = self.list.get_mut(h.0 as usize) else {
            return;
        };
        if let Some(old) = c.number.replace(number) {
            self.by_number.remove(&old);
        }
        // A number moves to its newest holder; the old holder's is stale.
        if let Some(prev) = self.by_number.insert(number, h) {
            if prev != h {
                if let Some(p) = self.list.get_mut(prev.0 as usize) {
                    p.number = None;
                }
            }
        }
    }

    /// Not a member any more: forget its push number and its stream.
    pub(crate) fn set_out(&mut self, h: ChannelHandle) {
        let Some(c) = self.list.get_mut(h.0 as usize) else {
            return;
        };
        c.membership = Membership::Out;
        c.stream.reset(0);
        c.epoch = 0;
        c.held_leave = None;
        if let Some(n) = c.number.take() {
            self.by_number.remove(&n);
        }
    }

    /// Where the Session stands in each channel it holds as joined (waiting
    /// to be re-joined after a lost link), for a resume.
    pub(crate) fn cursors(&self) -> Vec<crate::wire::ChannelCursor> {
        self.list
            .iter()
            .filter(|c| c.membership == Membership::Rejoining)
            .map(|c| crate::wire::ChannelCursor {
                channel: Some(c.key.to_wire()),
                epoch: c.epoch,
                seq: c.stream.last,
            })
            .collect()
    }

    /// The handle of `key`, if the application made one.
    pub(crate) fn by_key(&self, key: &ChannelKey) -> Option<ChannelHandle> {
        self.by_key.get(key).copied()
    }

    /// Push numbers are valid until the next login (a resumed login hands
    /// out the kept channels' numbers again).
    pub(crate) fn forget_numbers(&mut self) {
        self.by_number.clear();
        for c in &mut self.list {
            c.number = None;
        }
    }
}
