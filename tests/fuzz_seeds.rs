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
    self, AttributeOptions, Event, LinkId, SendOptions, Session, SessionConfig, TransportAction,
};
use hummer_channel::server::{self, ConnId, Server, ServerConfig, DEMO_APPID};
use hummer_channel::wire::{decode_frame, write_length_prefixed, FrameDecoder};
use hummer_channel::{Attributes, Message, Region, Uid};

/// The session's link and the server's connection for it.
type Wire = Option<(LinkId, ConnId)>;

/// The session's side of a drain: frames recorded and handed to the server;
/// transport actions carried out after the drain.
struct Up<'a> {
    server: &'a mut Server,
    wire: Wire,
    now: Instant,
    bytes: &'a mut BytesMut,
    actions: Vec<TransportAction>,
    moved: bool,
}

impl client::Sink for Up<'_> {
    fn transport(&mut self, action: TransportAction) {
        self.actions.push(action);
        self.moved = true;
    }
    fn transmit(&mut self, frame: Bytes) {
        self.moved = true;
        write_length_prefixed(&frame, self.bytes);
        let (_, conn) = self.wire.expect("a frame on an open link");
        self.server.handle_frame(self.now, conn, frame);
    }
    fn event(&mut self, _event: Event) {}
}

/// The server's side of a drain: frames recorded and handed to the session.
struct Down<'a> {
    session: &'a mut Session,
    wire: Wire,
    now: Instant,
    bytes: &'a mut BytesMut,
    moved: bool,
}

impl server::Sink for Down<'_> {
    fn transmit(&mut self, conn: ConnId, frame: Bytes) {
        self.moved = true;
        write_length_prefixed(&frame, self.bytes);
        if let Some((link, _)) = self.wire.filter(|(_, c)| *c == conn) {
            self.session.handle_frame(self.now, link, frame).unwrap();
        }
    }
    fn transport(&mut self, _action: server::TransportAction) {}
}

/// Drains the session and the server into each other (one drain each per
/// round) until nothing moves, recording both directions.
fn pump(
    s: &mut Session,
    server: &mut Server,
    wire: &mut Wire,
    now: Instant,
    up: &mut BytesMut,
    down: &mut BytesMut,
) {
    loop {
        let mut out = Up {
            server: &mut *server,
            wire: *wire,
            now,
            bytes: &mut *up,
            actions: Vec::new(),
            moved: false,
        };
        s.drain(&mut out);
        let (mut moved, actions) = (out.moved, out.actions);
        for action in actions {
            match action {
                TransportAction::Connect { link } => {
                    *wire = Some((link, server.accept(now)));
                    s.handle_connected(now, link);
                }
                TransportAction::Close { .. } => {
                    if let Some((_, conn)) = wire.take() {
                        server.handle_disconnected(now, conn);
                    }
                }
            }
        }
        let mut out = Down {
            session: &mut *s,
            wire: *wire,
            now,
            bytes: &mut *down,
            moved: false,
        };
        server.drain(&mut out);
        moved |= out.moved;
        if !moved {
            break;
        }
    }
}

fn exchange() -> (Bytes, Bytes) {
    let now = Instant::now();
    let mut config = ServerConfig::demo();
    config.seed = 1;
    let mut server = Server::new(config, now, 1_700_000_000_000);
    let mut s = Session::new(SessionConfig::new(DEMO_APPID), now);
    let (mut wire, mut up, mut down) = (None, BytesMut::new(), BytesMut::new());
    let o = AttributeOptions::default();
    s.login(now, Uid(1), None, Some(Region::Cn)).unwrap();
    pump(&mut s, &mut server, &mut wire, now, &mut up, &mut down);
    let ch = s.create_channel(Region::Cn, "seed").unwrap();
    s.join_channel(now, ch, Attributes::new()).unwrap();
    pump(&mut s, &mut server, &mut wire, now, &mut up, &mut down);
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
    pump(&mut s, &mut server, &mut wire, now, &mut up, &mut down);
    s.leave_channel(now, ch, Attributes::new()).unwrap();
    s.logout(now).unwrap();
    pump(&mut s, &mut server, &mut wire, now, &mut up, &mut down);
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
            if let hummer_channel::wire::Body::Login(l) = f.body {
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
