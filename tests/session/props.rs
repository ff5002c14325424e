//! Arbitrary frames, transport events, commands and clock jumps into the
//! Session: it never panics, keeps its queues bounded, and completes every
//! request exactly once.

use proptest::prelude::*;

use crate::support::*;

#[derive(Debug, Clone)]
enum Step {
    Connected,
    Disconnected,
    /// Input naming a link the Session asked for before (maybe the current
    /// one): a disconnect, or a frame.
    OldLinkDisconnected(u8),
    OldLinkFrame(u8, u64, Body),
    Advance(u32),
    Garbage(Vec<u8>),
    Server(u64, Body),
    Login,
    Join(u8),
    Leave(u8),
    SendUser(u8),
    SendChannel(u8),
    WriteAttrs(u8),
    Query,
    Logout,
}

/// A join reply (or a resumed channel's state): numbers, cursors and epochs
/// from small ranges so that they collide with what the Session holds.
fn join_reply() -> impl Strategy<Value = wire::JoinReply> {
    (
        0u32..4,
        0u64..12,
        0u64..3,
        prop::option::of((1u64..8, 0u64..3)),
    )
        .prop_map(|(channel, seq, epoch, gap)| wire::JoinReply {
            channel,
            seq,
            gap: gap.map(|(from, len)| wire::SeqGap {
                from,
                to: if len == 0 { 0 } else { from + len },
            }),
            member_offline: false,
            replay_truncated_at: seq % 4,
            epoch,
        })
}

fn resumed_channel() -> impl Strategy<Value = wire::ResumedChannel> {
    (0u8..4, join_reply()).prop_map(|(i, state)| wire::ResumedChannel {
        channel: Some(wire::ChannelKey {
            region: Region::Cn.to_wire(),
            channel_id: format!("c{i}"),
        }),
        state: Some(state),
    })
}

fn server_body() -> impl Strategy<Value = Body> {
    let seq = 0u64..12;
    let number = 0u32..4;
    prop_oneof![
        (
            any::<u64>(),
            0u64..6,
            any::<bool>(),
            0u64..3,
            prop::option::of((0u64..6, 0u64..3)),
            0u32..3,
            prop::collection::vec(resumed_channel(), 0..3),
        )
            .prop_map(
                |(epoch, p2p_seq, resumed, p2p_epoch, gap, ping, channels)| {
                    Body::LoginReply(wire::LoginReply {
                        instance_id: 1,
                        token_expires_at_ms: 0,
                        server_time_ms: 0,
                        server_epoch: epoch % 3,
                        p2p_seq,
                        p2p_gap: gap.map(|(from, len)| wire::SeqGap {
                            from,
                            to: if len == 0 { 0 } else { from + len },
                        }),
                        is_anonymous: false,
                        resumed,
                        p2p_replay_truncated_at: 0,
                        p2p_epoch,
                        ping_interval_ms: [0, 1_000, 15_000][ping as usize],
                        idle_timeout_ms: 45_000,
                        channels,
                    })
                }
            ),
        Just(Body::Ok(wire::Empty {})),
        join_reply().prop_map(Body::JoinReply),
        (seq.clone(), 0u64..3).prop_map(|(through_seq, g)| Body::FetchReply(wire::FetchReply {
            through_seq,
            gap: (g > 0).then_some(wire::SeqGap { from: g, to: g + 1 }),
            more: through_seq % 3 == 0,
        })),
        (any::<u32>(), ".{0,8}").prop_map(|(code, message)| Body::Error(wire::ErrorReply {
            code: code % 6000,
            message
        })),
        seq.clone()
            .prop_map(|seq| Body::UserMessage(wire::UserMessagePush {
                from_uid: 2,
                message: None,
                timestamp_ms: 0,
                seq
            })),
        (number.clone(), seq).prop_map(|(channel, seq)| Body::ChannelMessage(
            wire::ChannelMessagePush {
                channel,
                from_uid: 2,
                message: None,
                timestamp_ms: 0,
                seq
            }
        )),
        number
            .clone()
            .prop_map(|channel| Body::Membership(wire::MembershipPush {
                channel,
                joined: vec![1, 2],
                left: vec![3]
            })),
        (number, any::<i32>()).prop_map(|(channel, op)| Body::UserAttributesChanged(
            wire::UserAttributesPush {
                channel,
                uid: 2,
                op: op % 6,
                attributes: Default::default(),
                keys: vec![],
                timestamp_ms: 0
            }
        )),
        (any::<u32>(), ".{0,4}").prop_map(|(code, reason)| Body::Close(wire::Close {
            // The codes that end the session, those that resume, any other.
            code: match code % 10 {
                0 => 100,
                1 => 4007,
                2..=7 => [1005, 1006, 2001, 2010, 4005, 4006][(code % 10 - 2) as usize],
                _ => code,
            },
            reason
        })),
        Just(Body::Ping(wire::Ping { nonce: 1 })),
        Just(Body::Logout(wire::Empty {})),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        2 => Just(Step::Connected),
        1 => Just(Step::Disconnected),
        1 => any::<u8>().prop_map(Step::OldLinkDisconnected),
        2 => (any::<u8>(), 0u64..40, server_body()).prop_map(|(l, id, b)| Step::OldLinkFrame(l, id, b)),
        3 => (0u32..20_000).prop_map(Step::Advance),
        1 => prop::collection::vec(any::<u8>(), 0..24).prop_map(Step::Garbage),
        // Replies name recent request ids; the Session numbers them from 1.
        6 => (0u64..40, server_body()).prop_map(|(id, b)| Step::Server(id, b)),
        2 => Just(Step::Login),
        2 => (0u8..3).prop_map(Step::Join),
        1 => (0u8..3).prop_map(Step::Leave),
        2 => any::<u8>().prop_map(Step::SendUser),
        2 => (0u8..3).prop_map(Step::SendChannel),
        1 => (0u8..3).prop_map(Step::WriteAttrs),
        1 => Just(Step::Query),
        1 => Just(Step::Logout),
    ]
}

struct Harness {
    s: Session,
    now: Instant,
    /// Every link the Session asked for, the current one last.
    links: Vec<LinkId>,
    issued: HashSet<u64>,
    completed: HashSet<u64>,
    /// Every send frame transmitted, by its message id.
    sends: HashMap<u64, Bytes>,
}

impl Harness {
    fn drain(&mut self) -> Result<(), TestCaseError> {
        let mut out = SessionOut::default();
        self.s.drain(&mut out);
        for action in out.actions {
            if let TransportAction::Connect { link } = action {
                prop_assert!(!self.links.contains(&link), "a link id used twice");
                self.links.push(link);
            }
        }
        for bytes in out.frames {
            let frame = wire::decode_frame(bytes.clone(), 64 * 1024);
            prop_assert!(frame.is_ok(), "the Session sent an invalid frame");
            let message_id = match frame.ok().map(|f| f.body) {
                Some(Body::SendToUser(r)) => r.message_id,
                Some(Body::SendToChannel(r)) => r.message_id,
                _ => continue,
            };
            prop_assert!(message_id != 0, "a send without a message id");
            // A message id is used once, or again by the identical frame
            // (a held send re-sent after a resumed login).
            let first = self
                .sends
                .entry(message_id)
                .or_insert_with(|| bytes.clone());
            prop_assert_eq!(&*first, &bytes, "message id {} reused", message_id);
        }
        for e in out.events {
            if let Event::Completed { request, .. } = e {
                prop_assert!(
                    self.issued.contains(&request.0),
                    "completion of an unknown id {request:?}"
                );
                prop_assert!(
                    self.completed.insert(request.0),
                    "{request:?} completed twice"
                );
            }
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("HUMMER_PROPTEST_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(256),
        // Seeds of failures next to this file (tests/session/props.proptest-regressions).
        failure_persistence: Some(Box::new(proptest::test_runner::FileFailurePersistence::WithSource("proptest-regressions"))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn the_session_survives_anything(steps in prop::collection::vec(step(), 1..80)) {
        let mut config = SessionConfig::new(1);
        config.max_outgoing_frames = 16;
        config.max_pending_requests = 16;
        config.max_reorder_buffer = 4;
        let now = Instant::now();
        let mut h = Harness { s: Session::new(config, now), now, links: Vec::new(), issued: HashSet::new(), completed: HashSet::new(), sends: HashMap::new() };
        let channels: Vec<_> = (0..3).map(|i| h.s.create_channel(Region::Cn, &format!("c{i}")).unwrap()).collect();
        for step in steps {
            let now = h.now;
            let issued = match step {
                Step::Connected => { if let Some(&l) = h.links.last() { h.s.handle_connected(now, l) } None }
                Step::Disconnected => { if let Some(&l) = h.links.last() { h.s.handle_disconnected(now, l) } None }
                Step::OldLinkDisconnected(i) => {
                    if !h.links.is_empty() {
                        let l = h.links[i as usize % h.links.len()];
                        h.s.handle_disconnected(now, l);
                    }
                    None
                }
                Step::OldLinkFrame(i, request_id, body) => {
                    if !h.links.is_empty() {
                        let l = h.links[i as usize % h.links.len()];
                        let _ = h.s.handle_frame(now, l, raw_frame(request_id, body));
                    }
                    None
                }
                Step::Advance(ms) => {
                    h.now += Duration::from_millis(ms.into());
                    h.s.handle_timeout(h.now);
                    None
                }
                Step::Garbage(bytes) => {
                    if let Some(&l) = h.links.last() { let _ = h.s.handle_frame(now, l, Bytes::from(bytes)); }
                    None
                }
                Step::Server(request_id, body) => {
                    if let Some(&l) = h.links.last() { let _ = h.s.handle_frame(now, l, raw_frame(request_id, body)); }
                    None
                }
                Step::Login => h.s.login(now, Uid(1), None, None).ok(),
                Step::Join(i) => h.s.join_channel(now, channels[i as usize], Attributes::new()).ok(),
                Step::Leave(i) => h.s.leave_channel(now, channels[i as usize], Attributes::new()).ok(),
                Step::SendUser(n) => h.s.send_message_to_user(now, Uid(2), Message::new("t", vec![n]), if n % 3 != 0 { SendOptions::reliable() } else { SendOptions::unreliable() }).ok(),
                Step::SendChannel(i) => h.s.send_message_to_channel(now, channels[i as usize], Message::new("t", "x"), if i % 2 == 0 { SendOptions::reliable() } else { SendOptions::unreliable() }).ok(),
                Step::WriteAttrs(i) => h.s.add_or_update_channel_attributes(now, channels[i as usize], [("k".to_string(), "v".to_string())].into(), AttributeOptions::default()).ok(),
                Step::Query => h.s.query_users_online_status(now, &[Uid(2)]).ok(),
                Step::Logout => h.s.logout(now).ok(),
            };
            if let Some(id) = issued {
                prop_assert!(h.issued.insert(id.0));
            }
            h.drain()?;
            prop_assert!(h.s.queued_frames() == 0, "drained");
            prop_assert!(h.s.pending_requests() <= 16 + 3 + 2, "pending {}", h.s.pending_requests());
            prop_assert!(h.s.held_messages() <= 4 * 4, "held {}", h.s.held_messages());
        }
        // Everything issued ends, at the latest with its timeout.
        h.now += Duration::from_secs(60);
        h.s.handle_timeout(h.now);
        h.drain()?;
        prop_assert_eq!(&h.issued, &h.completed, "every request completes exactly once");
    }
}
