//! Bytes a link's home shard promised to replays running on other shards.
//!
//! A replay is budgeted against what its link has queued (or held for the
//! store) when it is made. A home shard that forwards a rejoin or a fetch
//! to the channel's shard cannot see what that shard will queue for the
//! link: its frames come back later, and with a store only once that
//! shard's batch is stored. So the home reserves the whole budget it
//! allows the forwarded request until the request is done, and counts the
//! reservation as queued for every later budget of the link: replays in
//! flight on several shards together stay within the link's queue bound.

use std::collections::HashMap;

use super::conn::ConnId;

/// Per link, the replay bytes reserved for requests still on other shards.
#[derive(Debug, Default)]
pub(super) struct Reserved {
    by_link: HashMap<ConnId, usize>,
}

impl Reserved {
    /// Reserves `bytes` for a request of `conn` sent to another shard.
    pub fn reserve(&mut self, conn: ConnId, bytes: usize) {
        if bytes > 0 {
            let r = self.by_link.entry(conn).or_default();
            *r = r.saturating_add(bytes);
        }
    }

    /// The request that reserved `bytes` for `conn` is done (its frames
    /// are queued or held here now, and counted as such).
    pub fn release(&mut self, conn: ConnId, bytes: usize) {
        if let Some(r) = self.by_link.get_mut(&conn) {
            *r = r.saturating_sub(bytes);
            if *r == 0 {
                self.by_link.remove(&conn);
            }
        }
    }

    /// What `conn` has reserved now.
    pub fn of(&self, conn: ConnId) -> usize {
        self.by_link.get(&conn).copied().unwrap_or(0)
    }

    /// The link is gone: nothing more will be queued for it.
    pub fn forget(&mut self, conn: ConnId) {
        self.by_link.remove(&conn);
    }

    /// How many links have a reservation.
    #[cfg(test)]
    pub fn links(&self) -> usize {
        self.by_link.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::GatewayId;

    #[test]
    fn reservations_add_up_per_link_and_end_with_their_requests() {
        let (a, b) = (ConnId::new(GatewayId(0), 1), ConnId::new(GatewayId(0), 2));
        let mut r = Reserved::default();
        r.reserve(a, 100);
        r.reserve(a, 50);
        r.reserve(b, 7);
        r.reserve(b, 0);
        assert_eq!((r.of(a), r.of(b), r.links()), (150, 7, 2));
        r.release(a, 100);
        assert_eq!(r.of(a), 50);
        // A release past what is left (a request done after its link was
        // forgotten and reserved again) never wraps.
        r.release(a, 80);
        assert_eq!((r.of(a), r.links()), (0, 1));
        r.release(a, 1);
        r.forget(b);
        assert_eq!((r.of(b), r.links()), (0, 0));
        r.reserve(a, 0);
        assert_eq!(r.links(), 0, "nothing reserved, nothing kept");
        r.reserve(a, usize::MAX);
        r.reserve(a, 1);
        assert_eq!(r.of(a), usize::MAX);
    }
}
