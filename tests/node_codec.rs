//! The node link codec through its public API: arbitrary bytes never panic
//! the decoder, damaged frames decode to something that re-encodes the same
//! or fail, and arbitrary messages round-trip through a split stream.
//!
//! The seeds of the `node_message` fuzz target (`fuzz/seeds/node_message/`)
//! are one message of each kind: `HUMMER_WRITE_FUZZ_SEEDS=1 cargo test
//! --test node_codec` rewrites them; otherwise the test checks the committed
//! seeds are what the codec encodes today.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use bytes::{Bytes, BytesMut};
use hummer_channel::server::{
    decode_node_message, encode_node_message, ApiCall, ApiReply, ApiRequest, CloseReason, ConnId,
    GatewayId, NodeMessage, ShardId, ToGateway, ToHub, TokenGrant, MAX_NODE_FRAME, MAX_SHARDS,
    NODE_PROTOCOL,
};
use hummer_channel::wire::{self, Body, FrameDecoder, LENGTH_PREFIX_LEN};
use hummer_channel::{ChannelKey, ErrorCode, Message, Region, ServiceError};
use proptest::prelude::*;

/// A message the decoder accepted, re-encoded and decoded again, shows the
/// same (decoding is deterministic and encoding loses nothing it kept).
fn stable(m: &NodeMessage) -> Result<(), TestCaseError> {
    let framed = encode_node_message(m);
    let again = decode_node_message(framed.slice(LENGTH_PREFIX_LEN..)).unwrap();
    prop_assert_eq!(format!("{again:?}"), format!("{m:?}"));
    Ok(())
}

fn conn() -> impl Strategy<Value = ConnId> {
    any::<u64>().prop_map(ConnId)
}

fn frame() -> impl Strategy<Value = Bytes> {
    prop::collection::vec(any::<u8>(), 0..64).prop_map(Bytes::from)
}

/// Messages of every shape whose fields are plain numbers and bytes.
fn message() -> impl Strategy<Value = NodeMessage> {
    prop_oneof![
        Just(()).prop_map(|()| NodeMessage::Ping),
        (0..MAX_SHARDS, conn(), any::<u64>()).prop_map(|(s, conn, seq)| NodeMessage::Hub {
            shard: ShardId(s),
            message: ToHub::Ack { conn, seq },
        }),
        (0..MAX_SHARDS, conn()).prop_map(|(s, conn)| NodeMessage::Hub {
            shard: ShardId(s),
            message: ToHub::LinkLost { conn },
        }),
        (conn(), frame())
            .prop_map(|(conn, frame)| NodeMessage::Gateway(ToGateway::Send { conn, frame })),
        (prop::collection::vec(conn(), 0..40), frame()).prop_map(|(conns, frame)| {
            NodeMessage::Gateway(ToGateway::Broadcast { conns, frame })
        }),
        (conn(), any::<Option<u64>>())
            .prop_map(|(conn, uid)| NodeMessage::Gateway(ToGateway::LoggedIn { conn, uid })),
        (conn(), 4100u32..=4199, ".{0,8}").prop_map(|(conn, code, reason)| {
            NodeMessage::Gateway(ToGateway::Close {
                conn,
                reason: CloseReason::KickedByService { code, reason },
            })
        }),
        (
            any::<u64>(),
            0..MAX_SHARDS,
            any::<u32>(),
            prop::collection::vec(any::<u64>(), 0..40)
        )
            .prop_map(|(id, s, appid, uids)| NodeMessage::ApiCall {
                id,
                shard: ShardId(s),
                call: ApiCall {
                    appid,
                    request: ApiRequest::OnlineStatus { uids },
                },
            }),
        (any::<u64>(), any::<u64>(), frame()).prop_map(|(id, from_uid, content)| {
            NodeMessage::ApiCall {
                id,
                shard: ShardId(0),
                call: ApiCall {
                    appid: 1,
                    request: ApiRequest::Publish {
                        channel: ChannelKey::new(Region::Us, "room"),
                        from_uid,
                        message_id: id,
                        message: Message::new("t", content),
                        unreliable: false,
                    },
                },
            }
        }),
        (
            any::<u64>(),
            prop::collection::btree_map(any::<u64>(), any::<bool>(), 0..20)
        )
            .prop_map(|(id, online)| NodeMessage::ApiAnswer {
                id,
                answer: Ok(ApiReply::Online(online)),
            }),
        (any::<u64>(), any::<u32>(), ".{0,8}").prop_map(|(id, code, message)| {
            NodeMessage::ApiAnswer {
                id,
                answer: Err(ServiceError::new(ErrorCode::new(code), message)),
            }
        }),
        (any::<u32>(), ".{0,8}", ".{0,8}", any::<u16>()).prop_map(
            |(protocol, node, secret, gateways)| NodeMessage::Hello {
                protocol,
                node,
                secret,
                gateways,
            }
        ),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        if let Ok(m) = decode_node_message(Bytes::from(bytes)) {
            stable(&m)?;
        }
    }

    #[test]
    fn damaged_frames_fail_or_stay_stable(
        m in message(),
        damage in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let mut body = BytesMut::from(&encode_node_message(&m)[LENGTH_PREFIX_LEN..]);
        for (at, byte) in damage {
            let at = at.index(body.len());
            body[at] = byte;
        }
        if let Ok(m) = decode_node_message(body.freeze()) {
            stable(&m)?;
        }
    }

    #[test]
    fn messages_cross_a_split_stream(
        messages in prop::collection::vec(message(), 1..8),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..4),
    ) {
        let mut stream = BytesMut::new();
        for m in &messages {
            stream.extend_from_slice(&encode_node_message(m));
        }
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c.index(stream.len() + 1)).collect();
        cuts.push(0);
        cuts.push(stream.len());
        cuts.sort_unstable();
        let mut decoder = FrameDecoder::new(MAX_NODE_FRAME);
        let mut got = Vec::new();
        for w in cuts.windows(2) {
            decoder.extend(&stream[w[0]..w[1]]);
            while let Some(f) = decoder.next_frame().unwrap() {
                got.push(format!("{:?}", decode_node_message(f).unwrap()));
            }
        }
        let want: Vec<String> = messages.iter().map(|m| format!("{m:?}")).collect();
        prop_assert_eq!(got, want);
        prop_assert!(decoder.finish().is_ok());
    }
}

/// One message of each kind, named.
fn seed_messages() -> Vec<(&'static str, NodeMessage)> {
    let login = |peer: IpAddr, token| NodeMessage::Hub {
        shard: ShardId(1),
        message: ToHub::Login {
            conn: ConnId::new(GatewayId(2), 5),
            request_id: 1,
            request: wire::LoginRequest {
                protocol_version: wire::PROTOCOL_VERSION,
                appid: 1,
                uid: 42,
                token: "header.payload.signature".into(),
                region: 0,
                resume: None,
            },
            token,
            peer: Some(peer),
            queued: 0,
        },
    };
    let chat = wire::ChatMessage {
        r#type: "text".into(),
        content: Bytes::from_static(b"hello"),
        app_extras: Default::default(),
    };
    vec![
        (
            "hello",
            NodeMessage::Hello {
                protocol: NODE_PROTOCOL,
                node: "gw-1".into(),
                secret: "a cluster secret".into(),
                gateways: 2,
            },
        ),
        (
            "welcome",
            NodeMessage::Welcome {
                node: "hub".into(),
                first_gateway: GatewayId(2),
                shards: 2,
            },
        ),
        (
            "refused",
            NodeMessage::Refused {
                reason: "wrong secret".into(),
            },
        ),
        ("ping", NodeMessage::Ping),
        (
            "login",
            login(
                Ipv4Addr::new(192, 0, 2, 1).into(),
                Ok(TokenGrant {
                    is_anonymous: false,
                    expires_at_s: Some(1_700_000_000),
                }),
            ),
        ),
        (
            "login-refused",
            login(
                Ipv6Addr::LOCALHOST.into(),
                Err(ServiceError::new(ErrorCode::EXPIRED_TOKEN, "token expired")),
            ),
        ),
        (
            "request",
            NodeMessage::Hub {
                shard: ShardId(0),
                message: ToHub::Request {
                    conn: ConnId::new(GatewayId(2), 5),
                    request_id: 2,
                    body: Body::SendToChannel(wire::SendToChannelRequest {
                        channel: Some(wire::ChannelKey {
                            region: 0,
                            channel_id: "room".into(),
                        }),
                        message: Some(chat),
                        unreliable: false,
                        message_id: 7,
                    }),
                    queued: 100,
                },
            },
        ),
        (
            "ack",
            NodeMessage::Hub {
                shard: ShardId(1),
                message: ToHub::Ack {
                    conn: ConnId::new(GatewayId(2), 5),
                    seq: 9,
                },
            },
        ),
        (
            "link-lost",
            NodeMessage::Hub {
                shard: ShardId(1),
                message: ToHub::LinkLost {
                    conn: ConnId::new(GatewayId(2), 5),
                },
            },
        ),
        (
            "send",
            NodeMessage::Gateway(ToGateway::Send {
                conn: ConnId::new(GatewayId(2), 5),
                frame: Bytes::from_static(b"\x08\x01\x12\x02\x08\x07"),
            }),
        ),
        (
            "broadcast",
            NodeMessage::Gateway(ToGateway::Broadcast {
                conns: (1..=20).map(|n| ConnId::new(GatewayId(3), n)).collect(),
                frame: Bytes::from_static(b"\x12\x02\x08\x07"),
            }),
        ),
        (
            "logged-in",
            NodeMessage::Gateway(ToGateway::LoggedIn {
                conn: ConnId::new(GatewayId(2), 5),
                uid: Some(42),
            }),
        ),
        (
            "close",
            NodeMessage::Gateway(ToGateway::Close {
                conn: ConnId::new(GatewayId(2), 5),
                reason: CloseReason::KickedByService {
                    code: 4100,
                    reason: "banned".into(),
                },
            }),
        ),
        (
            "api-call",
            NodeMessage::ApiCall {
                id: 3,
                shard: ShardId(1),
                call: ApiCall {
                    appid: 1,
                    request: ApiRequest::Publish {
                        channel: ChannelKey::new(Region::Cn, "room"),
                        from_uid: 0,
                        message_id: 8,
                        message: Message::new("text", "hello"),
                        unreliable: false,
                    },
                },
            },
        ),
        (
            "api-answer",
            NodeMessage::ApiAnswer {
                id: 3,
                answer: Ok(ApiReply::Online([(42, true), (43, false)].into())),
            },
        ),
        (
            "close-replaced",
            NodeMessage::Gateway(ToGateway::Close {
                conn: ConnId::new(GatewayId(2), 5),
                reason: CloseReason::Replaced,
            }),
        ),
        (
            "answered",
            NodeMessage::Gateway(ToGateway::Answered {
                conn: ConnId::new(GatewayId(2), 5),
                request_id: 9,
            }),
        ),
    ]
}

#[test]
fn the_fuzz_seeds_are_current() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/node_message");
    // The first byte of a node_message input is its read size; the rest is
    // one frame without its prefix.
    let seeds: Vec<(&str, Vec<u8>)> = seed_messages()
        .into_iter()
        .map(|(name, m)| {
            let mut data = vec![3u8];
            data.extend_from_slice(&encode_node_message(&m)[LENGTH_PREFIX_LEN..]);
            (name, data)
        })
        .collect();
    if std::env::var_os("HUMMER_WRITE_FUZZ_SEEDS").is_some() {
        std::fs::create_dir_all(&dir).unwrap();
        for (name, data) in &seeds {
            std::fs::write(dir.join(name), data).unwrap();
        }
    }
    for (name, data) in &seeds {
        let seed = std::fs::read(dir.join(name))
            .expect("seed committed: run with HUMMER_WRITE_FUZZ_SEEDS=1");
        assert_eq!(&seed, data, "{name}: the committed seed is stale");
        decode_node_message(Bytes::from(seed).slice(1..)).unwrap();
    }
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        seeds.len(),
        "a seed of no message"
    );
}
