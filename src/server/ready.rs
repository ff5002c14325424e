//! The ready list: which connections have output for `Server::poll_ready`.
//!
//! Level-triggered in passes, so that a driver that stops part-way (its
//! socket is full) is told again on its next pass, and a `while let` loop
//! over it always ends.

use std::collections::VecDeque;

use super::conn::{Conn, ConnId};
use super::IdMap;

#[derive(Debug, Default)]
pub(crate) struct ReadyList {
    /// Connections still to report in this pass. A connection is in `now`
    /// or `later` at most once (`Conn::listed`).
    now: VecDeque<ConnId>,
    /// Connections reported in this pass: the next pass looks at them again.
    later: VecDeque<ConnId>,
}

impl ReadyList {
    /// `conn` (whose record is `c`) has output now; a pass in progress
    /// reports it too, unless it reported it already.
    pub fn mark(&mut self, id: ConnId, c: &mut Conn) {
        if !c.listed {
            c.listed = true;
            self.now.push_back(id);
        }
    }

    /// The next connection of this pass with output; `None` ends the pass.
    pub fn next(&mut self, conns: &mut IdMap<ConnId, Conn>) -> Option<ConnId> {
        while let Some(id) = self.now.pop_front() {
            let Some(c) = conns.get_mut(&id) else {
                continue;
            };
            if c.is_empty() {
                c.listed = false;
                continue;
            }
            self.later.push_back(id);
            return Some(id);
        }
        std::mem::swap(&mut self.now, &mut self.later);
        None
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use bytes::Bytes;

    use super::*;

    fn conns(n: u64) -> IdMap<ConnId, Conn> {
        (1..=n)
            .map(|i| (ConnId(i), Conn::new(Instant::now())))
            .collect()
    }

    fn push(list: &mut ReadyList, conns: &mut IdMap<ConnId, Conn>, id: u64) {
        let c = conns.get_mut(&ConnId(id)).unwrap();
        assert!(c.push(Bytes::from_static(b"f"), usize::MAX));
        list.mark(ConnId(id), c);
    }

    fn pass(list: &mut ReadyList, conns: &mut IdMap<ConnId, Conn>) -> Vec<u64> {
        std::iter::from_fn(|| list.next(conns))
            .map(|c| c.0)
            .collect()
    }

    #[test]
    fn a_connection_left_with_output_is_reported_again_on_the_next_pass() {
        let mut conns = conns(3);
        let mut list = ReadyList::default();
        push(&mut list, &mut conns, 1);
        push(&mut list, &mut conns, 2);
        push(&mut list, &mut conns, 2);
        assert_eq!(pass(&mut list, &mut conns), [1, 2]);
        // Nothing taken: both again, once each.
        assert_eq!(pass(&mut list, &mut conns), [1, 2]);
        conns.get_mut(&ConnId(1)).unwrap().pop();
        assert_eq!(pass(&mut list, &mut conns), [2]);
        assert!(!conns[&ConnId(1)].listed);
        conns.get_mut(&ConnId(2)).unwrap().pop();
        assert_eq!(pass(&mut list, &mut conns), [2]);
        conns.get_mut(&ConnId(2)).unwrap().pop();
        assert_eq!(pass(&mut list, &mut conns), Vec::<u64>::new());
        assert_eq!(list.now.len() + list.later.len(), 0);
        // Output after that starts over.
        push(&mut list, &mut conns, 3);
        assert_eq!(pass(&mut list, &mut conns), [3]);
    }

    #[test]
    fn output_added_during_a_pass_is_reported_in_that_pass() {
        let mut conns = conns(3);
        let mut list = ReadyList::default();
        push(&mut list, &mut conns, 1);
        assert_eq!(list.next(&mut conns), Some(ConnId(1)));
        push(&mut list, &mut conns, 3);
        // 1 is listed already: not twice in one pass.
        push(&mut list, &mut conns, 1);
        assert_eq!(list.next(&mut conns), Some(ConnId(3)));
        assert_eq!(list.next(&mut conns), None);
        // Both still have output: the next pass reports each once, in order.
        assert_eq!(pass(&mut list, &mut conns), [1, 3]);
    }

    #[test]
    fn a_forgotten_connection_is_dropped_from_the_list() {
        let mut conns = conns(2);
        let mut list = ReadyList::default();
        push(&mut list, &mut conns, 1);
        push(&mut list, &mut conns, 2);
        conns.remove(&ConnId(1));
        assert_eq!(pass(&mut list, &mut conns), [2]);
        assert_eq!(list.now.len() + list.later.len(), 1);
    }
}
