//! The Session fed arbitrary frames (raw bytes and well-formed server frames
//! with arbitrary fields), transport events, commands and clock jumps: never
//! a panic, bounded queues, and every request completed exactly once.
//!
//! Transport inputs name a link: the current one, or any link the Session
//! asked for earlier (a late disconnect, connect or frame from a replaced
//! transport). Input naming an old link must change nothing but the count
//! of stale inputs.
#![no_main]

use std::collections::HashSet;
use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use bytes::Bytes;
use hummer_channel::client::{
    AttributeOptions, Event, LinkId, SendOptions, Session, SessionConfig, Sink, TransportAction,
};
use hummer_channel::wire::{self, encode_frame, Body, Frame};
use hummer_channel::{Attributes, Message, Region, Uid};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
enum Push {
    Login {
        epoch: u8,
        p2p_seq: u8,
        resumed: bool,
        expires: u16,
    },
    Ok,
    Join {
        channel: u8,
        seq: u8,
        gap: Option<(u8, u8)>,
        offline: bool,
    },
    Fetch {
        through: u8,
        gap: Option<(u8, u8)>,
    },
    Error {
        code: u16,
    },
    User {
        seq: u8,
    },
    Channel {
        channel: u8,
        seq: u8,
    },
    Members {
        channel: u8,
        joined: Vec<u8>,
        left: Vec<u8>,
    },
    Attrs {
        channel: u8,
        op: i8,
        user: bool,
    },
    Count {
        channel: u8,
        count: u32,
    },
    Close {
        code: u16,
    },
    Ping,
    Reply {
        kind: u8,
    },
}

/// Which link a transport input names: the latest one the Session asked
/// for, or an older one (picked among those it asked for).
#[derive(Arbitrary, Debug, Clone, Copy)]
enum Which {
    Current,
    Old(u8),
}

#[derive(Arbitrary, Debug)]
enum Step {
    Connected(Which),
    Disconnected(Which),
    Advance(u16),
    Raw(Which, Vec<u8>),
    Server {
        link: Which,
        request: u8,
        push: Push,
    },
    Login(bool),
    Join(u8),
    Leave(u8),
    SendUser {
        reliable: bool,
        size: u16,
    },
    SendChannel(u8),
    Attrs(u8, u8),
    Reads(u8, u8),
    Refresh,
    Logout,
}

fn gap(g: Option<(u8, u8)>) -> Option<wire::SeqGap> {
    g.map(|(from, to)| wire::SeqGap {
        from: from.into(),
        to: to.into(),
    })
}

fn body(push: Push) -> Body {
    match push {
        Push::Login {
            epoch,
            p2p_seq,
            resumed,
            expires,
        } => Body::LoginReply(wire::LoginReply {
            instance_id: 1,
            token_expires_at_ms: expires.into(),
            server_time_ms: 100,
            server_epoch: (epoch % 3).into(),
            p2p_epoch: (epoch % 5).into(),
            ping_interval_ms: u32::from(expires % 7) * 1000,
            p2p_seq: p2p_seq.into(),
            p2p_gap: None,
            is_anonymous: false,
            resumed,
            ..Default::default()
        }),
        Push::Ok => Body::Ok(wire::Empty {}),
        Push::Join {
            channel,
            seq,
            gap: g,
            offline,
        } => Body::JoinReply(wire::JoinReply {
            channel: (channel % 5).into(),
            seq: seq.into(),
            gap: gap(g),
            member_offline: offline,
            replay_truncated_at: 0,
            epoch: (seq % 3).into(),
        }),
        Push::Fetch { through, gap: g } => Body::FetchReply(wire::FetchReply {
            through_seq: through.into(),
            gap: gap(g),
            more: through % 3 == 0,
        }),
        Push::Error { code } => Body::Error(wire::ErrorReply {
            code: code.into(),
            message: String::new(),
        }),
        Push::User { seq } => Body::UserMessage(wire::UserMessagePush {
            from_uid: 2,
            message: None,
            timestamp_ms: 0,
            seq: seq.into(),
        }),
        Push::Channel { channel, seq } => Body::ChannelMessage(wire::ChannelMessagePush {
            channel: (channel % 5).into(),
            from_uid: 2,
            message: None,
            timestamp_ms: 0,
            seq: seq.into(),
        }),
        Push::Members {
            channel,
            joined,
            left,
        } => Body::Membership(wire::MembershipPush {
            channel: (channel % 5).into(),
            joined: joined.into_iter().map(u64::from).collect(),
            left: left.into_iter().map(u64::from).collect(),
        }),
        Push::Attrs {
            channel,
            op,
            user: true,
        } => Body::UserAttributesChanged(wire::UserAttributesPush {
            channel: (channel % 5).into(),
            uid: 2,
            op: op.into(),
            attributes: Default::default(),
            keys: vec!["k".into()],
            timestamp_ms: 0,
        }),
        Push::Attrs {
            channel,
            op,
            user: false,
        } => Body::ChannelAttributesChanged(wire::ChannelAttributesPush {
            channel: (channel % 5).into(),
            last_update_uid: 2,
            op: op.into(),
            attributes: Default::default(),
            keys: vec![],
            timestamp_ms: 0,
        }),
        Push::Count { channel, count } => Body::UserCountChanged(wire::UserCountPush {
            channel: (channel % 5).into(),
            count,
        }),
        Push::Close { code } => Body::Close(wire::Close {
            code: code.into(),
            reason: String::new(),
        }),
        Push::Ping => Body::Ping(wire::Ping { nonce: 1 }),
        Push::Reply { kind } => match kind % 6 {
            0 => Body::SendReply(wire::SendReply::default()),
            1 => Body::UserList(wire::UserListReply { uids: vec![1, 2] }),
            2 => Body::Attributes(wire::AttributesReply::default()),
            3 => Body::UserCount(wire::UserCountReply::default()),
            4 => Body::InstanceInfo(wire::InstanceInfoReply::default()),
            _ => Body::OnlineStatus(wire::OnlineStatusReply::default()),
        },
    }
}

/// The outputs of a drain: links asked for, and every request completed
/// exactly once.
struct Out<'a> {
    links: &'a mut Vec<LinkId>,
    completed: &'a mut HashSet<u64>,
}

impl Sink for Out<'_> {
    fn transport(&mut self, action: TransportAction) {
        if let TransportAction::Connect { link } = action {
            assert!(self.links.last().is_none_or(|l| *l < link), "link ids grow");
            self.links.push(link);
        }
    }
    fn transmit(&mut self, _frame: Bytes) {}
    fn event(&mut self, event: Event) {
        if let Event::Completed { request, .. } = event {
            assert!(self.completed.insert(request.0), "completed twice");
        }
    }
}

/// The link `which` names, if the Session asked for any yet; `stale` tells
/// whether it is not the current one.
fn pick(links: &[LinkId], current: Option<LinkId>, which: Which) -> Option<(LinkId, bool)> {
    let link = match which {
        Which::Current => current.or(links.last().copied())?,
        Which::Old(i) => *links.get(usize::from(i) % links.len().max(1))?,
    };
    Some((link, Some(link) != current))
}

fuzz_target!(|steps: Vec<Step>| {
    let mut config = SessionConfig::new(1);
    config.max_outgoing_frames = 8;
    config.max_pending_requests = 8;
    config.max_reorder_buffer = 4;
    let mut now = Instant::now();
    let mut s = Session::new(config, now);
    let channels: Vec<_> = (0..3)
        .map(|i| s.create_channel(Region::Cn, &format!("c{i}")).unwrap())
        .collect();
    let mut issued = HashSet::new();
    let mut completed = HashSet::new();
    let mut links: Vec<LinkId> = Vec::new();
    let drain = |s: &mut Session, links: &mut Vec<LinkId>, completed: &mut HashSet<u64>| {
        s.drain(&mut Out { links, completed });
        // One drain takes everything: outputs create no outputs.
        assert!(
            s.poll_transport().is_none(),
            "transport action after a drain"
        );
        assert!(s.poll_transmit().is_none(), "frame after a drain");
        assert!(s.poll_event().is_none(), "event after a drain");
    };
    for step in steps.into_iter().take(200) {
        let ch = |i: u8| channels[usize::from(i) % channels.len()];
        // A transport input on the link `which` names; one on an old link
        // must be ignored and counted, leaving everything else as it was.
        let on_link =
            |s: &mut Session, which: Which, input: &mut dyn FnMut(&mut Session, LinkId)| {
                let Some((link, stale)) = pick(&links, s.link(), which) else {
                    return;
                };
                let before = (
                    s.stale_inputs(),
                    s.connection_state(),
                    s.link(),
                    s.queued_frames(),
                    s.pending_requests(),
                    s.poll_timeout(),
                );
                input(s, link);
                if stale {
                    assert_eq!(s.stale_inputs(), before.0 + 1, "stale input counted");
                    let after = (
                        s.connection_state(),
                        s.link(),
                        s.queued_frames(),
                        s.pending_requests(),
                        s.poll_timeout(),
                    );
                    assert_eq!(
                        after,
                        (before.1, before.2, before.3, before.4, before.5),
                        "stale input changed the Session"
                    );
                }
            };
        let id = match step {
            Step::Connected(which) => {
                on_link(&mut s, which, &mut |s, l| s.handle_connected(now, l));
                None
            }
            Step::Disconnected(which) => {
                on_link(&mut s, which, &mut |s, l| s.handle_disconnected(now, l));
                None
            }
            Step::Advance(ms) => {
                now += Duration::from_millis(ms.into());
                s.handle_timeout(now);
                None
            }
            Step::Raw(which, b) => {
                let frame = Bytes::from(b);
                on_link(&mut s, which, &mut |s, l| {
                    let _ = s.handle_frame(now, l, frame.clone());
                });
                None
            }
            Step::Server {
                link,
                request,
                push,
            } => {
                let frame = encode_frame(&Frame {
                    request_id: request.into(),
                    body: Some(body(push)),
                });
                on_link(&mut s, link, &mut |s, l| {
                    let _ = s.handle_frame(now, l, frame.clone());
                });
                None
            }
            Step::Login(token) => s
                .login(now, Uid(1), token.then(|| "t".to_string()), None)
                .ok(),
            Step::Join(i) => s.join_channel(now, ch(i), Attributes::new()).ok(),
            Step::Leave(i) => s.leave_channel(now, ch(i), Attributes::new()).ok(),
            Step::SendUser { reliable, size } => s
                .send_message_to_user(
                    now,
                    Uid(2),
                    Message::new("t", vec![0; usize::from(size)]),
                    if reliable {
                        SendOptions::reliable()
                    } else {
                        SendOptions::unreliable()
                    },
                )
                .ok(),
            Step::SendChannel(i) => s
                .send_message_to_channel(now, ch(i), Message::new("t", "x"), SendOptions::default())
                .ok(),
            Step::Attrs(i, op) => {
                let a: Attributes = [("k".to_string(), "v".to_string())].into();
                let o = AttributeOptions::default();
                match op % 4 {
                    0 => s.set_local_user_attributes(now, ch(i), a, o).ok(),
                    1 => s
                        .delete_channel_attributes_by_keys(now, ch(i), vec!["k".into()], o)
                        .ok(),
                    2 => s.add_or_update_channel_attributes(now, ch(i), a, o).ok(),
                    _ => s.clear_local_user_attributes(now, ch(i), o).ok(),
                }
            }
            Step::Reads(i, op) => match op % 6 {
                0 => s.get_channel_user_list(now, ch(i)).ok(),
                1 => s.get_user_attributes(now, ch(i), Uid(2)).ok(),
                2 => s.get_channel_attributes(now, ch(i)).ok(),
                3 => s.get_channel_user_count(now, ch(i), vec!["c0".into()]).ok(),
                4 => s.get_instance_info(now).ok(),
                _ => s.query_users_online_status(now, &[Uid(2)]).ok(),
            },
            Step::Refresh => s.refresh_token(now, "t2".into()).ok(),
            Step::Logout => s.logout(now).ok(),
        };
        if let Some(id) = id {
            assert!(issued.insert(id.0));
        }
        drain(&mut s, &mut links, &mut completed);
        assert!(s.pending_requests() <= 8 + 3 + 2);
        assert!(s.held_messages() <= 4 * 4);
    }
    now += Duration::from_secs(60);
    s.handle_timeout(now);
    drain(&mut s, &mut links, &mut completed);
    assert_eq!(issued, completed, "every request completes exactly once");
});
