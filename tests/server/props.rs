//! Properties: arbitrary input never panics; reliable messages arrive exactly once, in order.

use crate::support::*;
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

/// `cases` cases, and the seeds of past failures kept next to this file
/// (tests/server/props.proptest-regressions). Proptest's default
/// (`SourceParallel`) would look in tests/proptest-regressions/props.txt,
/// since this directory has a main.rs.
pub fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        ..ProptestConfig::default()
    }
}

fn body(uid: u64, ch: u8, n: u64) -> Body {
    let id = format!("c{ch}");
    match n % 14 {
        0 => Body::Login(login_req(uid)),
        1 => join(&id),
        2 => leave(&id),
        3 => to_channel_with(&id, "x", n.is_multiple_of(3)),
        4 => to_user_with(uid ^ 1, "p", n.is_multiple_of(5)),
        5 => Body::Ack(wire::Ack { p2p_seq: n }),
        6 => write(
            n.is_multiple_of(2),
            &id,
            AttributeOp::try_from((n % 5) as i32).unwrap(),
            attrs(&[("k", "v")]),
            &["k"],
            true,
        ),
        7 => Body::Fetch(wire::FetchRequest {
            channel: (n.is_multiple_of(2)).then(|| key(&id)),
            after_seq: n % 7,
        }),
        8 => Body::Logout(wire::Empty {}),
        9 => rejoin(&id, n % 3, n % 9),
        10 => Body::Login(resume_req(
            uid,
            n,
            n % 3,
            n % 11,
            vec![cursor(&id, n % 2, n % 5)],
        )),
        11 => Body::GetUserList(key(&id)),
        12 => Body::QueryOnline(wire::QueryOnlineRequest { uids: vec![uid, 1] }),
        _ => Body::Ping(wire::Ping { nonce: n }),
    }
}

#[derive(Debug, Clone)]
enum Step {
    Frame {
        conn: usize,
        uid: u64,
        ch: u8,
        n: u64,
        rid: u64,
    },
    Garbage {
        conn: usize,
        bytes: Vec<u8>,
    },
    Close {
        conn: usize,
    },
    Drain {
        conn: usize,
    },
    Jump {
        ms: u64,
    },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (0..4usize, 1..4u64, 0..3u8, any::<u64>(), 0..8u64).prop_map(|(conn, uid, ch, n, rid)| Step::Frame { conn, uid, ch, n, rid }),
        1 => (0..4usize, prop::collection::vec(any::<u8>(), 0..40)).prop_map(|(conn, bytes)| Step::Garbage { conn, bytes }),
        1 => (0..4usize).prop_map(|conn| Step::Close { conn }),
        2 => (0..4usize).prop_map(|conn| Step::Drain { conn }),
        2 => prop_oneof![0..200u64, 0..100_000u64, Just(40_000_000u64)].prop_map(|ms| Step::Jump { ms }),
    ]
}

proptest! {
    #![proptest_config(config(96))]

    #[test]
    fn arbitrary_bytes_never_panic(frames in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..200), 0..20)) {
        let t = Instant::now();
        let mut s = Server::new(ServerConfig::demo(), t, 0);
        let c = s.accept(t);
        for f in frames {
            s.handle_frame(t, c, Bytes::from(f));
        }
        while let Some(c) = s.poll_ready() {
            while let Some(f) = s.poll_transmit(c) {
                prop_assert!(decode_frame(f, MAX).is_ok());
            }
        }
    }

    #[test]
    fn frame_sequences_never_panic_and_stay_bounded(steps in prop::collection::vec(step(), 1..120)) {
        let max_q = 2000;
        let mut s = Server::new({
            let mut cfg = ServerConfig::demo();
            cfg.max_queued_bytes = max_q;
            cfg
        }, Instant::now(), 0);
        let mut now = Instant::now();
        let mut conns: Vec<ConnId> = (0..4).map(|_| s.accept(now)).collect();
        for st in steps {
            match st {
                Step::Frame { conn, uid, ch, n, rid } => {
                    let f = encode_frame(&Frame { request_id: rid, body: Some(body(uid, ch, n)) });
                    s.handle_frame(now, conns[conn], f);
                }
                Step::Garbage { conn, bytes } => s.handle_frame(now, conns[conn], Bytes::from(bytes)),
                Step::Close { conn } => {
                    s.handle_disconnected(now, conns[conn]);
                    conns[conn] = s.accept(now);
                }
                Step::Drain { conn } => {
                    while let Some(f) = s.poll_transmit(conns[conn]) {
                        prop_assert!(decode_frame(f, MAX).is_ok());
                    }
                }
                Step::Jump { ms } => {
                    now += Duration::from_millis(ms);
                    s.handle_timeout(now);
                }
            }
            for c in &conns {
                // The bound, plus at most the final Close frame.
                prop_assert!(s.queued_bytes(*c) <= max_q + 64);
            }
            while s.poll_ready().is_some() {}
            // A closed connection is replaced, as a client would reconnect.
            while let Some(TransportAction::Close { conn: closed, .. }) = s.poll_transport() {
                if let Some(slot) = conns.iter_mut().find(|c| **c == closed) {
                    s.handle_disconnected(now, closed);
                    *slot = s.accept(now);
                }
            }
            if let Some(t) = s.poll_timeout() {
                prop_assert!(t + Duration::from_secs(3600 * 24 * 8) > now);
            }
            prop_assert!(s.instance_count() <= 64);
        }
    }
}

/// A model client that drops and resumes its link at random: every reliable
/// P2P and channel message must reach it exactly once, in order, with no gap.
mod reliability {
    use super::*;

    #[derive(Debug, Clone)]
    enum Op {
        SendP2p { reliable: bool },
        SendChannel { reliable: bool },
        Drop,
        Resume,
        Deliver,
        Ack,
        Jump { secs: u64 },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => any::<bool>().prop_map(|reliable| Op::SendP2p { reliable }),
            4 => any::<bool>().prop_map(|reliable| Op::SendChannel { reliable }),
            1 => Just(Op::Drop),
            2 => Just(Op::Resume),
            3 => Just(Op::Deliver),
            1 => Just(Op::Ack),
            1 => (0..40u64).prop_map(|secs| Op::Jump { secs }),
        ]
    }

    struct Model {
        conn: Option<ConnId>,
        instance: u64,
        /// The P2P stream's epoch and cursor.
        epoch: u64,
        p2p: u64,
        /// The channel: held as joined, listed in the last resume, its
        /// number, epoch and cursor.
        in_room: bool,
        /// A rejoin is in flight: the Session still holds the channel (its
        /// state is "rejoining") and lists it in its next resume.
        rejoining: bool,
        listed: bool,
        ch_num: u32,
        ch_epoch: u64,
        ch: u64,
        /// Messages handed to the application, and those reported lost (gaps).
        got: u64,
        lost: u64,
    }

    /// A JoinReply (or a ResumedChannel's state): the stream goes on from
    /// the model's cursor, or reports exactly the missing range as lost.
    fn channel_state(m: &mut Model, j: &wire::JoinReply) -> Result<(), TestCaseError> {
        if m.ch_epoch != 0 {
            prop_assert_eq!(j.epoch, m.ch_epoch, "one server: the epoch never changes");
        }
        match j.gap {
            None => prop_assert_eq!(j.seq, m.ch),
            Some(g) => {
                prop_assert_eq!(g.from, m.ch + 1);
                prop_assert_eq!(g.to, j.seq);
                m.lost += g.to - g.from + 1;
                m.ch = j.seq;
            }
        }
        m.in_room = true;
        m.rejoining = false;
        m.ch_num = j.channel;
        m.ch_epoch = j.epoch;
        Ok(())
    }

    /// The Session's reconnect: a resumed login listing the channel, then a
    /// rejoin when the resume did not keep it.
    fn reconnect(
        s: &mut Server,
        now: Instant,
        m: &mut Model,
        rid: u64,
    ) -> Result<(), TestCaseError> {
        let c = s.accept(now);
        m.conn = Some(c);
        m.listed = m.in_room || m.rejoining;
        let held = if m.listed {
            vec![cursor("room", m.ch_epoch, m.ch)]
        } else {
            vec![]
        };
        let req = resume_req(2, m.instance, m.epoch, m.p2p, held);
        s.handle_frame(now, c, frame(rid, Body::Login(req)));
        deliver(s, m)?;
        if !m.in_room {
            s.handle_frame(
                now,
                c,
                frame(rid + 1_000_000, rejoin("room", m.ch_epoch, m.ch)),
            );
            m.rejoining = true;
        }
        Ok(())
    }

    fn frame(rid: u64, body: Body) -> Bytes {
        encode_frame(&Frame {
            request_id: rid,
            body: Some(body),
        })
    }

    /// Takes what the server queued for the model's connection, checking
    /// that sequence numbers continue exactly where the model is.
    fn deliver(s: &mut Server, m: &mut Model) -> Result<(), TestCaseError> {
        let Some(c) = m.conn else { return Ok(()) };
        while let Some(b) = s.poll_transmit(c) {
            match decode_frame(b, MAX).unwrap().body {
                Body::LoginReply(r) => {
                    match r.p2p_gap {
                        None => prop_assert_eq!(r.p2p_seq, m.p2p),
                        Some(g) => {
                            // Evicted: reported once, exactly the missing range.
                            prop_assert_eq!(g.from, m.p2p + 1);
                            prop_assert_eq!(g.to, r.p2p_seq);
                            m.lost += g.to - g.from + 1;
                            m.p2p = r.p2p_seq;
                        }
                    }
                    if m.epoch != 0 {
                        prop_assert_eq!(r.p2p_epoch, m.epoch);
                    }
                    m.instance = r.instance_id;
                    m.epoch = r.p2p_epoch;
                    // A resumed instance keeps the channel it lists (and only
                    // that: a join whose reply was lost is undone); else the
                    // model must join it again.
                    m.in_room = false;
                    if r.resumed && m.listed {
                        prop_assert_eq!(r.channels.len(), 1);
                        let kept = &r.channels[0];
                        prop_assert_eq!(kept.channel.as_ref(), Some(&key("room")));
                        channel_state(m, kept.state.as_ref().unwrap())?;
                    } else {
                        prop_assert!(r.channels.is_empty());
                    }
                }
                Body::JoinReply(j) => channel_state(m, &j)?,
                Body::UserMessage(u) if u.seq != 0 => {
                    prop_assert_eq!(u.seq, m.p2p + 1);
                    m.p2p = u.seq;
                    m.got += 1;
                }
                Body::ChannelMessage(u) if u.seq != 0 => {
                    prop_assert!(m.in_room, "a push for a channel not held");
                    prop_assert_eq!(u.channel, m.ch_num);
                    prop_assert_eq!(u.seq, m.ch + 1);
                    m.ch = u.seq;
                    m.got += 1;
                }
                Body::Error(e) => prop_assert!(false, "error {:?}", e),
                _ => {}
            }
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(config(64))]

        #[test]
        fn reliable_messages_arrive_exactly_once_in_order(
            ops in prop::collection::vec(op(), 1..150),
            keep in prop_oneof![1..8usize, Just(100_000usize)],
        ) {
            let mut now = Instant::now();
            let config = {
                let mut cfg = ServerConfig::demo();
                cfg.idle_timeout = Duration::from_secs(86_400);
                cfg.login_timeout = Duration::from_secs(86_400);
                cfg.rate_limit_sends = 1_000_000;
                cfg.inbox_max_messages = keep;
                cfg.channel_retention_messages = keep;
                cfg
            };
            let mut s = Server::new(config, now, T0_UNIX_MS);
            let a = s.accept(now);
            s.handle_frame(now, a, frame(1, Body::Login(login_req(1))));
            s.handle_frame(now, a, frame(2, join("room")));
            let b = s.accept(now);
            s.handle_frame(now, b, frame(1, Body::Login(login_req(2))));
            s.handle_frame(now, b, frame(2, join("room")));
            let mut m = Model { conn: Some(b), instance: 0, epoch: 0, p2p: 0, in_room: false, rejoining: false, listed: false, ch_num: 0, ch_epoch: 0, ch: 0, got: 0, lost: 0 };
            deliver(&mut s, &mut m)?;
            let (mut sent_p2p, mut sent_ch, mut rid) = (0u64, 0u64, 10u64);
            for op in ops {
                rid += 1;
                match op {
                    Op::SendP2p { reliable } => {
                        s.handle_frame(now, a, frame(rid, to_user_with(2, "p", !reliable)));
                        sent_p2p += u64::from(reliable);
                    }
                    Op::SendChannel { reliable } => {
                        s.handle_frame(now, a, frame(rid, to_channel_with("room", "c", !reliable)));
                        sent_ch += u64::from(reliable);
                    }
                    Op::Drop => {
                        if let Some(c) = m.conn.take() {
                            s.handle_disconnected(now, c);
                        }
                    }
                    Op::Resume => {
                        if m.conn.is_none() {
                            reconnect(&mut s, now, &mut m, rid)?;
                        }
                    }
                    Op::Deliver => deliver(&mut s, &mut m)?,
                    Op::Ack => {
                        if let Some(c) = m.conn {
                            s.handle_frame(now, c, frame(0, Body::Ack(wire::Ack { p2p_seq: m.p2p })));
                        }
                    }
                    Op::Jump { secs } => {
                        now += Duration::from_secs(secs);
                        s.handle_timeout(now);
                    }
                }
                // A's own output is not under test.
                while s.poll_transmit(a).is_some() {}
                while s.poll_transport().is_some() {}
                while s.poll_ready().is_some() {}
            }
            if m.conn.is_none() {
                reconnect(&mut s, now, &mut m, 1)?;
            }
            deliver(&mut s, &mut m)?;
            prop_assert_eq!(m.p2p, sent_p2p);
            prop_assert_eq!(m.ch, sent_ch);
            prop_assert_eq!(m.got + m.lost, sent_p2p + sent_ch);
            if keep == 100_000 {
                prop_assert_eq!(m.lost, 0);
            }
        }
    }
}
