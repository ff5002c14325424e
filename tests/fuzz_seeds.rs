//! The fuzz seed corpus of `frame_codec` is a real exchange: a Session and
//! the Server in memory walking login, P2P, a channel, attributes and
//! reads, both directions recorded as length-prefixed streams.
//! `HUMMER_WRITE_FUZZ_SEEDS=1 cargo test --test fuzz_seeds` rewrites
//! `fuzz/seeds/frame_codec/`; otherwise the test checks the committed seeds
//! are what a real exchange produces today (so the corpus stays current).

use std::path::Path;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use hummer_channel::client::{
    AttributeOptions, SendOptions, Session, SessionConfig, TransportAction,
};
use hummer_channel::server::{ConnId, Server, ServerConfig, DEMO_APPID};
use hummer_channel::wire::{decode_frame, write_length_prefixed, FrameDecoder};
use hummer_channel::{Attributes, Message, Region, Uid};

/// Moves frames between the session and the server until nothing moves,
/// recording both directions.
fn pump(
    s: &mut Session,
    server: &mut Server,
    conn: &mut Option<ConnId>,
    now: Instant,
    up: &mut BytesMut,
    down: &mut BytesMut,
) {
    loop {
        let mut moved = false;
        while let Some(a) = s.poll_transport() {
            moved = true;
            if a == TransportAction::Connect {
                *conn = Some(server.accept(now));
                s.handle_connected(now);
            }
        }
        while let Some(f) = s.poll_transmit() {
            moved = true;
            write_length_prefixed(&f, up);
            server.handle_frame(now, conn.unwrap(), f);
        }
        while let Some(c) = server.poll_ready() {
            while let Some(f) = server.poll_transmit(c) {
                moved = true;
                write_length_prefixed(&f, down);
                s.handle_frame(now, f).unwrap();
            }
        }
        while s.poll_event().is_some() {}
        if !moved {
            break;
        }
    }
}

fn exchange() -> (Bytes, Bytes) {
    let now = Instant::now();
    let mut server = Server::new(
        ServerConfig {
            seed: 1,
            ..ServerConfig::demo()
        },
        now,
        1_700_000_000_000,
    );
    let mut s = Session::new(SessionConfig::new(DEMO_APPID), now);
    let (mut conn, mut up, mut down) = (None, BytesMut::new(), BytesMut::new());
    let o = AttributeOptions::default();
    s.login(now, Uid(1), None, Some(Region::Cn)).unwrap();
    pump(&mut s, &mut server, &mut conn, now, &mut up, &mut down);
    let ch = s.create_channel(Region::Cn, "seed").unwrap();
    s.join_channel(now, ch, Attributes::new()).unwrap();
    pump(&mut s, &mut server, &mut conn, now, &mut up, &mut down);
    s.send_message_to_user(
        now,
        Uid(1),
        Message::new("t", "p2p"),
        SendOptions::default(),
    )
    .unwrap();
    s.send_message_to_channel(now, ch, Message::new("t", "all"), SendOptions::default())
        .unwrap();
    s.set_local_user_attributes(now, ch, [("k".to_string(), "v".to_string())].into(), o)
        .unwrap();
    s.add_or_update_channel_attributes(now, ch, [("c".to_string(), "1".to_string())].into(), o)
        .unwrap();
    s.query_users_online_status(now, &[Uid(1), Uid(2)]).unwrap();
    s.get_channel_user_list(now, ch).unwrap();
    s.get_channel_attributes(now, ch).unwrap();
    s.get_channel_user_count(now, ch, vec!["seed".into()])
        .unwrap();
    s.get_instance_info(now).unwrap();
    pump(&mut s, &mut server, &mut conn, now, &mut up, &mut down);
    s.leave_channel(now, ch, Attributes::new()).unwrap();
    s.logout(now).unwrap();
    pump(&mut s, &mut server, &mut conn, now, &mut up, &mut down);
    (up.freeze(), down.freeze())
}

#[test]
fn the_seed_corpus_is_a_real_exchange() {
    let (up, down) = exchange();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/frame_codec");
    // The first byte of a frame_codec input is its read size.
    let seeds = [
        ("client-to-server", 7u8, &up),
        ("server-to-client", 200, &down),
    ];
    if std::env::var_os("HUMMER_WRITE_FUZZ_SEEDS").is_some() {
        std::fs::create_dir_all(&dir).unwrap();
        for (name, chunk, stream) in seeds {
            let mut data = vec![chunk];
            data.extend_from_slice(stream);
            std::fs::write(dir.join(name), data).unwrap();
        }
    }
    for (name, _, stream) in seeds {
        // Every recorded frame decodes; the committed seed holds the same kinds.
        let mut d = FrameDecoder::new(64 * 1024);
        d.extend(stream);
        let mut n = 0;
        while let Some(f) = d.next_frame().unwrap() {
            decode_frame(f, 64 * 1024).unwrap();
            n += 1;
        }
        assert!(n >= 10, "{name}: {n} frames");
        let seed = std::fs::read(dir.join(name))
            .expect("seed committed: run with HUMMER_WRITE_FUZZ_SEEDS=1");
        let mut d = FrameDecoder::new(64 * 1024);
        d.extend(&seed[1..]);
        let mut m = 0;
        while let Some(f) = d.next_frame().unwrap() {
            let f = decode_frame(f, 64 * 1024).unwrap();
            if let Some(hummer_channel::wire::Body::Login(l)) = f.body {
                assert_eq!(
                    l.protocol_version,
                    hummer_channel::wire::PROTOCOL_VERSION,
                    "{name}: the committed seed speaks another protocol version"
                );
            }
            m += 1;
        }
        assert_eq!(m, n, "{name}: the committed seed is stale");
    }
}
