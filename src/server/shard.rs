//! Hub shards: which shard owns what, and the typed messages between
//! shards.
//!
//! A server's shared state may be split over several [`Hub`](super::Hub)s,
//! each a shard of it. An (appid, uid) belongs to one shard, its *home*:
//! its instances, presence and grace periods, its P2P inbox, its send
//! dedupe, its rate limits and token timers, and every link logged in as
//! it. An (appid, region, channel id) belongs to one shard too: the
//! channel's members, attributes, sequence and retained log, and notices.
//! Both are found by [`uid_shard`] and [`channel_shard`], the one hash
//! every gateway and shard computes.
//!
//! The home shard is the only one that talks to a gateway about its links:
//! a request goes to its link's home, which checks the token, rate limits
//! and dedupe and forwards the channel part to the channel's shard; what
//! that shard has for the link (its reply, replays, pushes of the channel)
//! comes back through the home, so a link's frames of one channel keep
//! their order, and the home records what it must (memberships, the send's
//! reply for dedupe, rate-limit charges) before the client sees the reply.

use bytes::Bytes;

use super::conn::ConnId;
use super::message::ToHub;
use super::rate::RateKind;
use super::sent_ids::Destination;
use crate::wire::{self, Body};

/// One shard of a server's hub (`0` for the first).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShardId(pub u16);

/// The most shards a server may have.
pub const MAX_SHARDS: u16 = 64;

/// FNV-1a, 64 bits, then MurmurHash3's 64-bit finalizer (FNV alone spreads
/// short keys poorly over a few shards): deterministic on every machine
/// and run (unlike std's `RandomState`), so every gateway and shard finds
/// the same owner.
fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &b in *part {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

fn pick(hash: u64, shards: u16) -> ShardId {
    let n = u64::from(shards.clamp(1, MAX_SHARDS));
    ShardId((hash % n) as u16)
}

/// The home shard of `(appid, uid)` among `shards`: the hash (FNV-1a,
/// finalized) of the appid, a `u` tag and the uid (integers little-endian),
/// modulo `shards`.
pub fn uid_shard(appid: u32, uid: u64, shards: u16) -> ShardId {
    if shards <= 1 {
        return ShardId(0);
    }
    pick(
        fnv1a(&[&appid.to_le_bytes(), b"u", &uid.to_le_bytes()]),
        shards,
    )
}

/// The shard of channel `(appid, region, channel_id)` among `shards`
/// (`region` as on the wire): the hash of the appid, a `c` tag, the region
/// and the id's bytes, modulo `shards`.
pub fn channel_shard(appid: u32, region: i32, channel_id: &str, shards: u16) -> ShardId {
    if shards <= 1 {
        return ShardId(0);
    }
    pick(
        fnv1a(&[
            &appid.to_le_bytes(),
            b"c",
            &region.to_le_bytes(),
            channel_id.as_bytes(),
        ]),
        shards,
    )
}

/// A message from one hub shard to another. Opaque: a runner carries it,
/// in order per (shard, shard) pair, from [`Hub::poll_shard`](super::Hub::poll_shard)
/// to [`Hub::handle_shard`](super::Hub::handle_shard).
#[derive(Debug)]
pub struct ToShard(pub(super) ShardMsg);

impl ToShard {
    /// About the bytes the message holds besides its own size (frames,
    /// bodies, lists: lengths summed, nothing encoded), for a runner's
    /// bound on what waits between its threads.
    #[cfg(feature = "server-tcp")]
    pub(crate) fn weight(&self) -> usize {
        use prost::Message as _;
        use std::mem::size_of_val;
        let frames = |f: &[Bytes]| f.iter().map(|b| b.len()).sum::<usize>() + size_of_val(f);
        let keys = |k: &mut dyn Iterator<Item = &wire::ChannelKey>| {
            k.map(|k| size_of::<wire::ChannelKey>() + k.channel_id.len())
                .sum::<usize>()
        };
        match &self.0 {
            ShardMsg::Login(m) => m.weight(),
            ShardMsg::Channel { body, .. } => body.encoded_len(),
            ShardMsg::P2p { message, .. } => message.encoded_len(),
            ShardMsg::Done { frames: f, .. } => frames(f),
            ShardMsg::Deliver { insts, frame } => frame.len() + size_of_val(&insts[..]),
            ShardMsg::DropInstance { .. } => 0,
            ShardMsg::Resume { cursors, .. } => {
                size_of_val(&cursors[..]) + keys(&mut cursors.iter().map(|c| &c.1))
            }
            ShardMsg::Resumed {
                kept,
                member,
                left,
                frames: f,
                ..
            } => {
                kept.iter()
                    .map(|(_, k)| 16 + k.encoded_len())
                    .sum::<usize>()
                    + keys(&mut member.iter().map(|m| &m.1))
                    + size_of_val(&left[..])
                    + frames(f)
            }
            ShardMsg::Online { uids, .. } => size_of_val(&uids[..]),
            ShardMsg::Count { ids, .. } => ids.iter().map(|i| 24 + i.len()).sum(),
            ShardMsg::Answer { online, counts, .. } => {
                size_of_val(&online[..]) + counts.iter().map(|(i, _)| 32 + i.len()).sum::<usize>()
            }
        }
    }
}

/// An instance as a channel shard sees it: who it is and where its home is.
#[derive(Clone, Debug)]
pub(super) struct Member {
    pub inst: u64,
    pub appid: u32,
    pub uid: u64,
    pub home: ShardId,
    /// The link it is attached to (for replay budgets).
    pub conn: Option<ConnId>,
    /// How many channels it is a member of (the join limit).
    pub joined: usize,
}

/// What a channel shard reports back to a request's home shard.
#[derive(Debug, Default)]
pub(super) struct Effects {
    /// Rate-limit units to charge to the uid.
    pub charges: Vec<(RateKind, u64)>,
    /// A send was accepted: count it against the instance and the uid.
    pub send_counted: bool,
    /// The instance joined this channel.
    pub joined: Option<(u32, wire::ChannelKey)>,
    /// The instance left this channel.
    pub left: Option<u32>,
    /// A successful send to remember for dedupe: (message id, where, reply).
    pub sent: Option<(u64, Destination, wire::SendReply)>,
}

#[derive(Debug)]
pub(super) enum ShardMsg {
    /// A login that reached a shard that is not its uid's home.
    Login(ToHub),
    /// A request's channel part, for the channel's shard.
    Channel {
        conn: ConnId,
        rid: u64,
        /// What counts as queued for the link (its home's view: what its
        /// gateway counted, and what the home holds for the store).
        queued: usize,
        member: Member,
        body: Body,
    },
    /// A P2P send, for the receiver's home.
    P2p {
        conn: ConnId,
        rid: u64,
        from: (u32, u64),
        message_id: u64,
        receiver: u64,
        unreliable: bool,
        message: wire::ChatMessage,
        ts: u64,
    },
    /// A forwarded request done: what to record, then the frames for its
    /// link (its reply last), for the request's home.
    Done {
        conn: ConnId,
        inst: u64,
        who: (u32, u64),
        /// The message id of a send, whether it succeeded or not.
        message_id: Option<u64>,
        effects: Effects,
        frames: Vec<Bytes>,
        /// The request whose answer the frames end, when a replay may
        /// follow its reply: the home tells the gateway once they are
        /// queued (`ToGateway::Answered`).
        answered: Option<u64>,
    },
    /// Queue `frame` for the links of these instances (homed on the
    /// receiving shard).
    Deliver { insts: Vec<u64>, frame: Bytes },
    /// The instance is gone: it leaves every channel of the receiving
    /// shard (`depart`: for a lost link, so its uid may rejoin with a
    /// replay).
    DropInstance { inst: u64, uid: u64, depart: bool },
    /// A resume's channels on the receiving shard: the cursors to go on
    /// from (index in the login's list, key, epoch, seq) and the byte
    /// budget of the replays; the instance's other channels there are left.
    Resume {
        token: u64,
        inst: u64,
        appid: u32,
        uid: u64,
        cursors: Vec<(usize, wire::ChannelKey, u64, u64)>,
        budget: usize,
    },
    /// The answer to a `Resume`: the kept channels' states, the instance's
    /// memberships there (number, key) and those it left, the replays.
    Resumed {
        token: u64,
        kept: Vec<(usize, wire::ResumedChannel)>,
        member: Vec<(u32, wire::ChannelKey)>,
        left: Vec<u32>,
        frames: Vec<Bytes>,
    },
    /// Which of these uids are online.
    Online {
        token: u64,
        appid: u32,
        uids: Vec<u64>,
    },
    /// The member counts of these channels.
    Count {
        token: u64,
        appid: u32,
        region: crate::types::Region,
        ids: Vec<String>,
    },
    /// The answer to `Online` or `Count`.
    Answer {
        token: u64,
        online: Vec<(u64, bool)>,
        counts: Vec<(String, u32)>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A weight counts what the message carries, and little more: at
    /// least `payload` bytes, at most `payload + slack`.
    #[cfg(feature = "server-tcp")]
    fn assert_weighs(m: ShardMsg, payload: usize, slack: usize) {
        let w = ToShard(m).weight();
        assert!(
            (payload..=payload + slack).contains(&w),
            "{w} for {payload} bytes (+{slack})"
        );
    }

    #[cfg(feature = "server-tcp")]
    #[test]
    fn a_shard_message_weighs_what_it_carries() {
        let frame = |n: usize| Bytes::from(vec![7u8; n]);
        let key = |id: &str| wire::ChannelKey {
            region: 1,
            channel_id: id.into(),
        };
        let message = wire::ChatMessage {
            r#type: "t".into(),
            content: frame(5_000),
            app_extras: Default::default(),
        };
        let conn = ConnId(1);
        assert_weighs(
            ShardMsg::Deliver {
                insts: vec![1, 2, 3],
                frame: frame(10_000),
            },
            10_000 + 24,
            0,
        );
        assert_weighs(
            ShardMsg::Done {
                conn,
                inst: 1,
                who: (1, 1),
                message_id: None,
                effects: Effects::default(),
                frames: vec![frame(3_000), frame(4_000)],
                answered: None,
            },
            7_000,
            64,
        );
        assert_weighs(
            ShardMsg::P2p {
                conn,
                rid: 1,
                from: (1, 1),
                message_id: 1,
                receiver: 2,
                unreliable: false,
                message: message.clone(),
                ts: 0,
            },
            5_000,
            32,
        );
        assert_weighs(
            ShardMsg::Channel {
                conn,
                rid: 1,
                queued: 0,
                member: Member {
                    inst: 1,
                    appid: 1,
                    uid: 1,
                    home: ShardId(0),
                    conn: None,
                    joined: 0,
                },
                body: Body::SendToChannel(wire::SendToChannelRequest {
                    channel: Some(key("room")),
                    message: Some(message),
                    unreliable: false,
                    message_id: 1,
                }),
            },
            5_000,
            64,
        );
        let long = "r".repeat(2_000);
        assert_weighs(
            ShardMsg::Resume {
                token: 1,
                inst: 1,
                appid: 1,
                uid: 1,
                cursors: vec![(0, key(&long), 1, 1), (1, key(&long), 1, 1)],
                budget: 0,
            },
            4_000,
            256,
        );
        assert_weighs(
            ShardMsg::Resumed {
                token: 1,
                kept: vec![(
                    0,
                    wire::ResumedChannel {
                        channel: Some(key(&long)),
                        state: None,
                    },
                )],
                member: vec![(1, key(&long))],
                left: vec![1; 1_000],
                frames: vec![frame(3_000)],
            },
            11_000,
            256,
        );
        assert_weighs(
            ShardMsg::Online {
                token: 1,
                appid: 1,
                uids: vec![1; 1_000],
            },
            8_000,
            0,
        );
        assert_weighs(
            ShardMsg::Count {
                token: 1,
                appid: 1,
                region: crate::types::Region::Cn,
                ids: vec![long.clone(), long.clone()],
            },
            4_000,
            64,
        );
        assert_weighs(
            ShardMsg::Answer {
                token: 1,
                online: vec![(1, true); 100],
                counts: vec![(long.clone(), 1), (long, 2)],
            },
            1_600 + 4_000,
            128,
        );
        assert_weighs(
            ShardMsg::Login(ToHub::Login {
                conn,
                request_id: 1,
                request: wire::LoginRequest {
                    token: "t".repeat(3_000),
                    ..Default::default()
                },
                token: Err(crate::error::ServiceError::new(
                    crate::error::ErrorCode::UNAUTHORIZED,
                    "no",
                )),
                peer: None,
                queued: 0,
            }),
            3_000,
            16,
        );
        assert_weighs(
            ShardMsg::DropInstance {
                inst: 1,
                uid: 1,
                depart: true,
            },
            0,
            0,
        );
    }

    #[test]
    fn one_shard_owns_everything() {
        assert_eq!(uid_shard(1, 2, 1), ShardId(0));
        assert_eq!(uid_shard(1, 2, 0), ShardId(0));
        assert_eq!(channel_shard(1, 1, "room", 1), ShardId(0));
    }

    #[test]
    fn owners_are_fixed_and_spread() {
        // Pinned: every build and machine must agree.
        assert_eq!(fnv1a(&[b"a"]), 0x82a2_a958_a9be_ce5b);
        // The demo app's uids 1..3 and its "room" in cn (the conformance
        // model's) spread over 3 shards.
        assert_eq!(uid_shard(10_000, 1, 3), ShardId(2));
        assert_eq!(uid_shard(10_000, 2, 3), ShardId(1));
        assert_eq!(uid_shard(10_000, 3, 3), ShardId(2));
        assert_eq!(channel_shard(10_000, 1, "room", 3), ShardId(0));
        let mut seen = [0usize; 3];
        for uid in 0..300 {
            let s = uid_shard(7, uid, 3);
            assert_eq!(s, uid_shard(7, uid, 3));
            seen[usize::from(s.0)] += 1;
        }
        assert!(seen.iter().all(|&n| n > 60), "{seen:?}");
        let mut seen = [0usize; 3];
        for i in 0..300 {
            seen[usize::from(channel_shard(7, 1, &format!("room{i}"), 3).0)] += 1;
        }
        assert!(seen.iter().all(|&n| n > 60), "{seen:?}");
        // More than the maximum is the maximum.
        assert!(uid_shard(7, 99, 1000).0 < MAX_SHARDS);
    }
}
