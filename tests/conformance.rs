//! Model-based conformance: random operations by several users and instances
//! (two instances share uid 2), with random faults, over the simulated
//! network; then the faults stop, the system settles, and the outcome is
//! checked against what the service promises.
//!
//! Cases: `HUMMER_CONFORMANCE_CASES` (default 24, so CI stays short). A failure
//! prints the shrunk operation list and the seed that reproduces it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use hummer_channel::client::{
    ChannelHandle, ConnectionState, Event, LostStream, Reply, RequestId, SendOptions, SessionConfig,
};
use hummer_channel::server::{ServerConfig, DEMO_APPID};
use hummer_channel::sim::{ClientId, Sim, SimConfig};
use hummer_channel::{Attributes, ErrorCode, Message, Region, Uid};
use proptest::prelude::*;

/// The uid of each client: two instances of uid 2.
const UIDS: [u64; 4] = [1, 2, 2, 3];

#[derive(Debug, Clone)]
enum Op {
    P2p {
        from: usize,
        to: u64,
        reliable: bool,
    },
    Broadcast {
        from: usize,
        reliable: bool,
    },
    Join(usize),
    Leave(usize),
    Wait(u64),
    DropLink(usize),
    Partition(usize, u64),
    Slow(usize, u64),
    RestartServer,
}

fn op() -> impl Strategy<Value = Op> {
    let client = 0usize..4;
    prop_oneof![
        6 => (client.clone(), prop::sample::select(vec![1u64, 2, 3]), prop::bool::weighted(0.8))
            .prop_map(|(from, to, reliable)| Op::P2p { from, to, reliable }),
        6 => (client.clone(), prop::bool::weighted(0.8)).prop_map(|(from, reliable)| Op::Broadcast { from, reliable }),
        3 => client.clone().prop_map(Op::Join),
        2 => client.clone().prop_map(Op::Leave),
        5 => (1u64..3_000).prop_map(Op::Wait),
        2 => client.clone().prop_map(Op::DropLink),
        1 => (client.clone(), prop::sample::select(vec![5u64, 20, 45, 80])).prop_map(|(c, s)| Op::Partition(c, s)),
        1 => (client, 1u64..4).prop_map(|(c, s)| Op::Slow(c, s)),
        1 => Just(Op::RestartServer),
    ]
}

/// A membership: the step its join completed, and the step and request of
/// the leave that ended it.
type Window = (usize, Option<(usize, RequestId)>);

/// One send, as the test issued it.
#[derive(Debug)]
struct Sent {
    from: usize,
    /// `None`: a broadcast.
    to_uid: Option<u64>,
    reliable: bool,
    request: RequestId,
    /// Step at which it was issued.
    step: usize,
}

struct Run {
    sim: Sim,
    clients: Vec<ClientId>,
    channels: Vec<ChannelHandle>,
    sent: BTreeMap<u64, Sent>,
    next_msg: u64,
    /// Per client: every request id handed out.
    issued: Vec<BTreeSet<RequestId>>,
    /// Per client: everything it reported, in order, with the step it came in.
    events: Vec<Vec<(usize, Event)>>,
    /// Per client: membership windows for required delivery: the step at
    /// which its join completed, and the step and request of its leave.
    joined_at: Vec<Vec<Window>>,
    pending_join: Vec<Option<RequestId>>,
    step: usize,
    /// The server restarted at some point (losses are then legitimate).
    restarted: bool,
}

impl Run {
    fn new(seed: u64) -> Run {
        let mut server = ServerConfig::demo();
        server.rate_limit_sends = 10_000;
        server.max_queued_bytes = 16 * 1024;
        let mut sim = Sim::new(SimConfig::new(seed, server));
        let clients: Vec<_> = UIDS
            .iter()
            .map(|_| sim.add_client(SessionConfig::new(DEMO_APPID)))
            .collect();
        let channels = clients
            .iter()
            .map(|&c| {
                sim.command(c, |s, _| s.create_channel(Region::Cn, "room"))
                    .unwrap()
            })
            .collect();
        let mut run = Run {
            sim,
            clients,
            channels,
            sent: BTreeMap::new(),
            next_msg: 0,
            issued: vec![BTreeSet::new(); 4],
            events: vec![Vec::new(); 4],
            joined_at: vec![Vec::new(); 4],
            pending_join: vec![None; 4],
            step: 0,
            restarted: false,
        };
        for (i, &uid) in UIDS.iter().enumerate() {
            let c = run.clients[i];
            let id = run
                .sim
                .command(c, |s, now| s.login(now, Uid(uid), None, None))
                .unwrap();
            run.issued[i].insert(id);
        }
        run.settle(Duration::from_secs(1));
        run
    }

    fn collect(&mut self) {
        for i in 0..4 {
            for e in self.sim.take_events(self.clients[i]) {
                if let Event::Completed { request, result } = &e {
                    if self.pending_join[i] == Some(*request) {
                        self.pending_join[i] = None;
                        if result.is_ok() {
                            self.joined_at[i].push((self.step, None));
                        }
                    }
                }
                self.events[i].push((self.step, e));
            }
        }
    }

    fn settle(&mut self, d: Duration) {
        let mut left = d;
        while !left.is_zero() {
            let slice = left.min(Duration::from_millis(500));
            self.sim.run_for(slice);
            left -= slice;
            self.collect();
        }
    }

    fn apply(&mut self, op: &Op) {
        self.step += 1;
        match *op {
            Op::P2p { from, to, reliable } => self.send(from, Some(to), reliable),
            Op::Broadcast { from, reliable } => self.send(from, None, reliable),
            Op::Join(i) => {
                let ch = self.channels[i];
                if let Ok(id) = self.sim.command(self.clients[i], |s, now| {
                    s.join_channel(now, ch, Attributes::new())
                }) {
                    self.issued[i].insert(id);
                    self.pending_join[i] = Some(id);
                }
            }
            Op::Leave(i) => {
                let ch = self.channels[i];
                if let Ok(id) = self.sim.command(self.clients[i], |s, now| {
                    s.leave_channel(now, ch, Attributes::new())
                }) {
                    self.issued[i].insert(id);
                    if let Some(w) = self.joined_at[i].last_mut() {
                        w.1.get_or_insert((self.step, id));
                    }
                }
            }
            Op::Wait(ms) => self.settle(Duration::from_millis(ms)),
            Op::DropLink(i) => self.sim.drop_link(self.clients[i]),
            Op::Partition(i, s) => self.sim.partition(self.clients[i], Duration::from_secs(s)),
            Op::Slow(i, s) => {
                self.sim.set_slow(self.clients[i], true);
                self.settle(Duration::from_secs(s));
                self.sim.set_slow(self.clients[i], false);
            }
            Op::RestartServer => {
                self.restarted = true;
                self.sim.restart_server();
            }
        }
        self.settle(Duration::from_millis(50));
    }

    fn send(&mut self, from: usize, to_uid: Option<u64>, reliable: bool) {
        self.next_msg += 1;
        let n = self.next_msg;
        let msg = Message::new("m", n.to_string());
        let options = SendOptions { reliable };
        let ch = self.channels[from];
        let r = self.sim.command(self.clients[from], |s, now| match to_uid {
            Some(uid) => s.send_message_to_user(now, Uid(uid), msg, options),
            None => s.send_message_to_channel(now, ch, msg, options),
        });
        if let Ok(request) = r {
            self.issued[from].insert(request);
            self.sent.insert(
                n,
                Sent {
                    from,
                    to_uid,
                    reliable,
                    request,
                    step: self.step,
                },
            );
        }
    }

    fn completion(
        &self,
        i: usize,
        id: RequestId,
    ) -> Vec<&Result<Reply, hummer_channel::ServiceError>> {
        self.events[i]
            .iter()
            .filter_map(|(_, e)| match e {
                Event::Completed { request, result } if *request == id => Some(result),
                _ => None,
            })
            .collect()
    }

    /// The step at which the completion of `id` came back to client `i`.
    fn completed_at(&self, i: usize, id: RequestId) -> Option<usize> {
        self.events[i].iter().find_map(|(step, e)| match e {
            Event::Completed { request, .. } if *request == id => Some(*step),
            _ => None,
        })
    }

    /// Message numbers delivered to client `i`: (number, from_uid, channel or not, step).
    fn delivered(&self, i: usize) -> Vec<(u64, bool)> {
        self.events[i]
            .iter()
            .filter_map(|(_, e)| match e {
                Event::MessageFromUser { message, .. } => Some((message, false)),
                Event::ChannelMessage { message, .. } => Some((message, true)),
                _ => None,
            })
            .filter_map(|(m, ch)| {
                std::str::from_utf8(&m.content)
                    .ok()?
                    .parse()
                    .ok()
                    .map(|n| (n, ch))
            })
            .collect()
    }

    /// Whether the client was told that messages of a stream were lost.
    /// Nothing here exceeds the server's retention, so only a restart may
    /// lose messages (checked in `check`).
    fn lost(&self, i: usize, channel: bool) -> bool {
        self.events[i].iter().any(|(_, e)| match e {
            Event::MessagesLost {
                stream: LostStream::User,
                ..
            } => !channel,
            Event::MessagesLost {
                stream: LostStream::Channel(_),
                ..
            } => channel,
            _ => false,
        })
    }

    fn saw_link_loss(&self, i: usize) -> bool {
        self.events[i].iter().any(|(_, e)| {
            matches!(
                e,
                Event::ConnectionStateChanged {
                    state: ConnectionState::Reconnecting,
                    ..
                }
            )
        })
    }

    fn check(&mut self) -> Result<(), TestCaseError> {
        // 1. Every request completes exactly once.
        for i in 0..4 {
            let mut counts: HashMap<RequestId, usize> = HashMap::new();
            for (_, e) in &self.events[i] {
                if let Event::Completed { request, .. } = e {
                    *counts.entry(*request).or_default() += 1;
                }
            }
            for id in &self.issued[i] {
                prop_assert_eq!(
                    counts.get(id).copied(),
                    Some(1),
                    "client {} request {:?}",
                    i,
                    id
                );
            }
            prop_assert_eq!(
                counts.len(),
                self.issued[i].len(),
                "client {}: completions of unknown ids",
                i
            );
        }

        // Losses are reported only where history was really lost.
        if !self.restarted {
            for i in 0..4 {
                let lost: Vec<_> = self.events[i]
                    .iter()
                    .filter(|(_, e)| matches!(e, Event::MessagesLost { .. }))
                    .collect();
                prop_assert!(
                    lost.is_empty(),
                    "client {} reported a loss without a restart: {:?}",
                    i,
                    lost
                );
            }
        }

        // 2. Deliveries: never duplicated, never of a refused send, in order.
        for i in 0..4 {
            let delivered = self.delivered(i);
            let mut seen = BTreeSet::new();
            for (n, _) in &delivered {
                prop_assert!(seen.insert(*n), "client {} got message {} twice", i, n);
                let sent = &self.sent[n];
                let result = self.completion(sent.from, sent.request);
                let refused = matches!(result.as_slice(), [Err(e)]
                    if e.code != ErrorCode::OperationTimeout && e.code != ErrorCode::ConnectionException);
                prop_assert!(
                    !refused,
                    "client {} got message {} whose send was refused",
                    i,
                    n
                );
            }
            // Reliable messages per sender, in the order sent (unreliable
            // ones carry no sequence: after a reconnect a live one may
            // overtake reliable ones still being replayed).
            let mut last_from: HashMap<(usize, bool), u64> = HashMap::new();
            for (n, ch) in delivered.iter().filter(|(n, _)| self.sent[n].reliable) {
                let from = self.sent[n].from;
                if let Some(prev) = last_from.insert((from, *ch), *n) {
                    prop_assert!(
                        prev < *n,
                        "client {} got {} after {} from client {}",
                        i,
                        n,
                        prev,
                        from
                    );
                }
            }
        }

        // 3. Reliable messages accepted reach every receiver that was there,
        // unless it was told of a loss.
        let login_step = 0;
        for (n, sent) in &self.sent {
            if !sent.reliable
                || !matches!(self.completion(sent.from, sent.request).as_slice(), [Ok(_)])
            {
                continue;
            }
            for (i, &receiver_uid) in UIDS.iter().enumerate() {
                let required = match sent.to_uid {
                    Some(uid) => {
                        receiver_uid == uid && sent.step > login_step && !self.lost(i, false)
                    }
                    // A window counts where the client certainly stayed a
                    // member: it is still joined, or its leave succeeded (a
                    // leave that timed out may have dropped what was on its way).
                    None => {
                        !self.lost(i, true)
                            && self.joined_at[i].iter().any(|&(from, until)| {
                                from < sent.step
                                    && match until {
                                        None => self
                                            .sim
                                            .session(self.clients[i])
                                            .is_joined(self.channels[i]),
                                        // Accepted (its reply back) before the
                                        // leave was even issued.
                                        Some((u, leave)) => {
                                            self.completed_at(sent.from, sent.request)
                                                .is_some_and(|done| done < u)
                                                && matches!(
                                                    self.completion(i, leave).as_slice(),
                                                    [Ok(_)]
                                                )
                                        }
                                    }
                            })
                    }
                };
                if required {
                    prop_assert!(
                        self.delivered(i).iter().any(|(m, _)| m == n),
                        "client {} never got reliable message {} ({:?})",
                        i,
                        n,
                        sent
                    );
                }
            }
        }

        // 4. Membership converges: lists and counts match who is joined.
        let members: BTreeSet<Uid> = (0..4)
            .filter(|&i| {
                self.sim
                    .session(self.clients[i])
                    .is_joined(self.channels[i])
            })
            .map(|i| Uid(UIDS[i]))
            .collect();
        for i in 0..4 {
            let session = self.sim.session(self.clients[i]);
            prop_assert_eq!(
                session.connection_state().0,
                ConnectionState::Connected,
                "client {} settled",
                i
            );
            prop_assert_eq!(session.pending_requests(), 0);
            prop_assert_eq!(session.held_messages(), 0);
            if !session.is_joined(self.channels[i]) {
                continue;
            }
            let ch = self.channels[i];
            let list = self.call(i, |s, now| s.get_channel_user_list(now, ch));
            let Some(Ok(Reply::UserList(list))) = list else {
                return Err(TestCaseError::fail(format!(
                    "user list of client {i}: {list:?}"
                )));
            };
            prop_assert_eq!(
                list.users.iter().copied().collect::<BTreeSet<_>>(),
                members.clone(),
                "client {} member list",
                i
            );
            let count = self.call(i, |s, now| {
                s.get_channel_user_count(now, ch, vec!["room".into()])
            });
            let Some(Ok(Reply::UserCount(count))) = count else {
                return Err(TestCaseError::fail(format!(
                    "count of client {i}: {count:?}"
                )));
            };
            prop_assert_eq!(
                count.user_count.get("room").copied(),
                Some(members.len() as u32)
            );
        }

        // 5. Join and leave notices alternate per uid, within each membership
        // of an observer whose own link never dropped (notices are not
        // replayed across a gap, nor sent to a non-member).
        for i in 0..4 {
            if self.saw_link_loss(i) {
                continue;
            }
            let starts: BTreeSet<usize> = self.joined_at[i].iter().map(|w| w.0).collect();
            let mut state: HashMap<Uid, bool> = HashMap::new();
            let mut membership = None;
            for (step, e) in &self.events[i] {
                let current = starts.range(..=*step).next_back();
                if current != membership {
                    membership = current;
                    state.clear();
                }
                let (uids, joined) = match e {
                    Event::NotifyJoinChannel { uids, .. } => (uids, true),
                    Event::NotifyLeaveChannel { uids, .. } => (uids, false),
                    _ => continue,
                };
                for u in uids {
                    if let Some(prev) = state.insert(*u, joined) {
                        prop_assert!(
                            prev != joined,
                            "client {} saw uid {} {} twice in a row",
                            i,
                            u,
                            if joined { "join" } else { "leave" }
                        );
                    }
                }
            }
        }

        // 6. Memory stays bounded on the server.
        prop_assert!(self.sim.server().connection_count() <= 4 + 1);
        Ok(())
    }

    fn call(
        &mut self,
        i: usize,
        cmd: impl FnOnce(
            &mut hummer_channel::client::Session,
            std::time::Instant,
        ) -> Result<RequestId, hummer_channel::CommandError>,
    ) -> Option<Result<Reply, hummer_channel::ServiceError>> {
        let id = self.sim.command(self.clients[i], cmd).ok()?;
        for _ in 0..100 {
            if let Some(r) = self.sim.take_completion(self.clients[i], id) {
                return Some(r);
            }
            self.sim.run_for(Duration::from_millis(50));
        }
        None
    }
}

fn cases() -> u32 {
    std::env::var("HUMMER_CONFORMANCE_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(24)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), max_shrink_iters: 2000, ..ProptestConfig::default() })]

    #[test]
    fn the_service_keeps_its_promises_under_faults(seed in any::<u64>(), ops in prop::collection::vec(op(), 1..40)) {
        let mut run = Run::new(seed);
        for op in &ops {
            run.apply(op);
        }
        // Faults stop: past the grace period, the longest partition and the backoff cap.
        run.settle(Duration::from_secs(150));
        // proptest prints the shrunk seed and operations of a failure.
        run.check()?;
    }
}
