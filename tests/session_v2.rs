//! Protocol v2 behaviour of the Session, driven by scripted server frames and
//! a fake clock: the resume message, channels kept by a resumed login, loss
//! told only by the server, exactly-once sends, the server's ping interval and
//! the v2 Close codes.

use std::time::{Duration, Instant};

use bytes::Bytes;
use hummer_channel::client::{
    ChannelHandle, ConnectionReason as R, ConnectionState as S, Event, LostStream, Reply,
    RequestId, SendOptions, Session, SessionConfig, TransportAction,
};
use hummer_channel::wire::{self, encode_frame, Body, Frame};
use hummer_channel::{Attributes, ErrorCode, Message, Region, ServiceError, Uid};

const ME: u64 = 7;
const INSTANCE: u64 = 55;
/// The P2P stream's epoch in the scripted server's login replies.
const P2P_EPOCH: u64 = 0x5050;

/// A Session, its fake clock, and everything it has output so far.
struct Script {
    s: Session,
    now: Instant,
    /// Transmitted frames, as sent (bytes) and decoded.
    sent: Vec<(Bytes, Frame)>,
    events: Vec<Event>,
    actions: Vec<TransportAction>,
}

impl Script {
    fn with(config: SessionConfig) -> Self {
        let now = Instant::now();
        Script {
            s: Session::new(config, now),
            now,
            sent: Vec::new(),
            events: Vec::new(),
            actions: Vec::new(),
        }
    }

    fn drain(&mut self) {
        while let Some(a) = self.s.poll_transport() {
            self.actions.push(a);
        }
        while let Some(b) = self.s.poll_transmit() {
            let frame =
                wire::decode_frame(b.clone(), 64 * 1024).expect("the Session sends valid frames");
            self.sent.push((b, frame));
        }
        while let Some(e) = self.s.poll_event() {
            self.events.push(e);
        }
    }

    fn take_events(&mut self) -> Vec<Event> {
        self.drain();
        std::mem::take(&mut self.events)
    }

    /// The frames sent since the last take, with their bytes.
    fn take_raw(&mut self) -> Vec<(Bytes, Frame)> {
        self.drain();
        std::mem::take(&mut self.sent)
    }

    fn take_sent(&mut self) -> Vec<Frame> {
        self.take_raw().into_iter().map(|(_, f)| f).collect()
    }

    fn last_sent(&mut self) -> Frame {
        self.take_sent().pop().expect("a frame was sent")
    }

    fn feed(&mut self, request_id: u64, body: Body) {
        let bytes = encode_frame(&Frame {
            request_id,
            body: Some(body),
        });
        self.s.handle_frame(self.now, bytes).expect("valid frame");
        self.drain();
    }

    fn push(&mut self, body: Body) {
        self.feed(0, body);
    }

    /// Jumps the clock to each deadline in turn until `d` has passed.
    fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        while let Some(t) = self.s.poll_timeout() {
            if t > end {
                break;
            }
            self.now = self.now.max(t);
            self.s.handle_timeout(self.now);
            self.drain();
        }
        self.now = end;
        self.s.handle_timeout(self.now);
        self.drain();
    }

    fn login_reply(p2p_seq: u64) -> wire::LoginReply {
        wire::LoginReply {
            instance_id: INSTANCE,
            server_time_ms: 1_000,
            server_epoch: 9,
            p2p_seq,
            is_anonymous: true,
            resumed: false,
            p2p_epoch: P2P_EPOCH,
            ping_interval_ms: 15_000,
            idle_timeout_ms: 45_000,
            ..Default::default()
        }
    }

    /// A Session logged in with `reply`.
    fn logged_in_with(config: SessionConfig, reply: wire::LoginReply) -> Self {
        let mut t = Script::with(config);
        t.s.login(t.now, Uid(ME), None, Some(Region::Cn)).unwrap();
        t.s.handle_connected(t.now);
        let login = t.last_sent();
        t.feed(login.request_id, Body::LoginReply(reply));
        t.take_events();
        t.actions.clear();
        t
    }

    fn logged_in() -> Self {
        Self::logged_in_with(SessionConfig::new(10000), Self::login_reply(0))
    }

    /// Creates and joins `id`; the server numbers it `number`, its stream at
    /// `seq` in `epoch`.
    fn joined(&mut self, id: &str, number: u32, seq: u64, epoch: u64) -> ChannelHandle {
        let ch = self.s.create_channel(Region::Cn, id).unwrap();
        let join = self
            .s
            .join_channel(self.now, ch, Attributes::new())
            .unwrap();
        self.take_sent();
        self.feed(
            join.0,
            Body::JoinReply(wire::JoinReply {
                channel: number,
                seq,
                epoch,
                ..Default::default()
            }),
        );
        assert_eq!(self.completion(join), Ok(Reply::Done));
        ch
    }

    /// Drops the link, waits out the backoff and reconnects; the re-login frame.
    fn relogin(&mut self) -> Frame {
        self.s.handle_disconnected(self.now);
        self.drain();
        self.run_for(Duration::from_secs(2));
        self.s.handle_connected(self.now);
        let sent = self.take_sent();
        assert_eq!(sent.len(), 1, "only the login goes out first: {sent:?}");
        sent.into_iter().next().unwrap()
    }

    /// The completion of `id` among the events so far (removed).
    fn completion(&mut self, id: RequestId) -> Result<Reply, ServiceError> {
        self.drain();
        let pos = self
            .events
            .iter()
            .position(|e| matches!(e, Event::Completed { request, .. } if *request == id))
            .unwrap_or_else(|| panic!("no completion for {id:?} in {:?}", self.events));
        match self.events.remove(pos) {
            Event::Completed { result, .. } => result,
            _ => unreachable!(),
        }
    }

    /// Whether `id` has completed (without removing its event).
    fn completed(&mut self, id: RequestId) -> bool {
        self.drain();
        self.events
            .iter()
            .any(|e| matches!(e, Event::Completed { request, .. } if *request == id))
    }
}

fn state(state: S, reason: R) -> Event {
    Event::ConnectionStateChanged { state, reason }
}

fn key(id: &str) -> wire::ChannelKey {
    wire::ChannelKey {
        region: Region::Cn.to_wire(),
        channel_id: id.into(),
    }
}

fn cursor(id: &str, epoch: u64, seq: u64) -> wire::ChannelCursor {
    wire::ChannelCursor {
        channel: Some(key(id)),
        epoch,
        seq,
    }
}

fn resumed_channel(id: &str, state: wire::JoinReply) -> wire::ResumedChannel {
    wire::ResumedChannel {
        channel: Some(key(id)),
        state: Some(state),
    }
}

fn user_push(seq: u64, text: &str) -> Body {
    Body::UserMessage(wire::UserMessagePush {
        from_uid: 2,
        message: Some(chat(text)),
        timestamp_ms: 5,
        seq,
    })
}

fn channel_push(number: u32, seq: u64, text: &str) -> Body {
    Body::ChannelMessage(wire::ChannelMessagePush {
        channel: number,
        from_uid: 2,
        message: Some(chat(text)),
        timestamp_ms: 5,
        seq,
    })
}

fn chat(text: &str) -> wire::ChatMessage {
    wire::ChatMessage {
        r#type: "text".into(),
        content: Bytes::copy_from_slice(text.as_bytes()),
        app_extras: Default::default(),
    }
}

fn texts(events: &[Event]) -> Vec<String> {
    let text = |m: &Message| String::from_utf8_lossy(&m.content).into_owned();
    events.iter().filter_map(Event::message).map(text).collect()
}

fn losses(events: &[Event]) -> Vec<Event> {
    events
        .iter()
        .filter(|e| matches!(e, Event::MessagesLost { .. }))
        .cloned()
        .collect()
}

fn resume_of(login: &Frame) -> wire::Resume {
    match &login.body {
        Some(Body::Login(req)) => req.resume.clone().expect("a resume"),
        other => panic!("not a login: {other:?}"),
    }
}

fn joins(sent: &[Frame]) -> Vec<wire::JoinRequest> {
    sent.iter()
        .filter_map(|f| match &f.body {
            Some(Body::Join(j)) => Some(j.clone()),
            _ => None,
        })
        .collect()
}

fn message_id(frame: &Frame) -> u64 {
    match &frame.body {
        Some(Body::SendToUser(r)) => r.message_id,
        Some(Body::SendToChannel(r)) => r.message_id,
        other => panic!("not a send: {other:?}"),
    }
}

fn is_send(frame: &Frame) -> bool {
    matches!(
        frame.body,
        Some(Body::SendToUser(_) | Body::SendToChannel(_))
    )
}

fn send_reply() -> Body {
    Body::SendReply(wire::SendReply {
        timestamp_ms: 77,
        delivered_online: true,
        seq: 1,
    })
}

fn is_1007(r: Result<Reply, ServiceError>) -> bool {
    matches!(r, Err(e) if e.code == ErrorCode::CONNECTION_EXCEPTION)
}

const RELIABLE: SendOptions = SendOptions { reliable: true };
const UNRELIABLE: SendOptions = SendOptions { reliable: false };

// ---- the resume message --------------------------------------------------------

#[test]
fn the_relogin_resumes_the_p2p_epoch_and_cursor_and_every_joined_channel() {
    let mut t = Script::logged_in_with(SessionConfig::new(10000), Script::login_reply(3));
    t.push(user_push(4, "p4"));
    t.push(user_push(5, "p5"));
    let a = t.joined("a", 1, 10, 0xA);
    t.push(channel_push(1, 11, "a11"));
    t.joined("b", 2, 0, 0xB);
    // A channel left, and one whose join is still in flight at the loss.
    let left = t.joined("left", 3, 4, 0xC);
    let leave = t.s.leave_channel(t.now, left, Attributes::new()).unwrap();
    t.feed(leave.0, Body::Ok(wire::Empty {}));
    assert_eq!(t.completion(leave), Ok(Reply::Done));
    let pending = t.s.create_channel(Region::Cn, "pending").unwrap();
    t.s.join_channel(t.now, pending, Attributes::new()).unwrap();
    assert_eq!(texts(&t.take_events()), vec!["p4", "p5", "a11"]);
    assert!(t.s.is_joined(a));
    t.take_sent();

    let resume = resume_of(&t.relogin());
    assert_eq!(
        (resume.instance_id, resume.p2p_epoch, resume.p2p_seq),
        (INSTANCE, P2P_EPOCH, 5)
    );
    let mut channels = resume.channels;
    channels.sort_by(|x, y| {
        x.channel
            .as_ref()
            .map(|k| &k.channel_id)
            .cmp(&y.channel.as_ref().map(|k| &k.channel_id))
    });
    assert_eq!(channels, vec![cursor("a", 0xA, 11), cursor("b", 0xB, 0)]);
}

// ---- channels kept by a resumed login ----------------------------------------------

#[test]
fn a_resumed_login_keeps_the_listed_channel_and_rejoins_only_the_other() {
    let mut t = Script::logged_in();
    let x = t.joined("x", 1, 0, 0xA);
    t.push(channel_push(1, 1, "x1"));
    t.push(channel_push(1, 2, "x2"));
    t.joined("y", 2, 5, 0xB);
    t.take_events();
    let relogin = t.relogin();
    let mut reply = Script::login_reply(0);
    reply.resumed = true;
    reply.channels = vec![resumed_channel(
        "x",
        wire::JoinReply {
            channel: 7,
            seq: 2,
            epoch: 0xA,
            ..Default::default()
        },
    )];
    t.feed(relogin.request_id, Body::LoginReply(reply));
    // The replay and live pushes follow the reply at once, under the new
    // number; repeats by seq are dropped.
    t.push(channel_push(7, 2, "x2-again"));
    t.push(channel_push(7, 3, "x3"));
    t.push(channel_push(7, 3, "x3-again"));
    t.push(channel_push(7, 4, "x4"));
    let events = t.take_events();
    assert_eq!(texts(&events), vec!["x3", "x4"]);
    assert!(events
        .iter()
        .filter(|e| e.message().is_some())
        .all(|e| matches!(e, Event::ChannelMessage { channel, .. } if *channel == x)));
    assert!(losses(&events).is_empty(), "{events:?}");
    let joins = joins(&t.take_sent());
    assert_eq!(
        joins,
        vec![wire::JoinRequest {
            channel: Some(key("y")),
            extra: Default::default(),
            resume_seq: 5,
            rejoin: true,
            epoch: 0xB,
        }],
        "one re-join, for the channel the server did not keep"
    );
}

// ---- loss is told by the server, never inferred ------------------------------------

#[test]
fn a_new_server_epoch_alone_reports_no_loss() {
    let mut t = Script::logged_in();
    let ch = t.joined("room", 1, 0, 0xA);
    t.push(user_push(1, "u1"));
    t.push(channel_push(1, 1, "c1"));
    t.take_events();
    let relogin = t.relogin();
    // Another server_epoch (diagnostics only), the same P2P epoch, no gap.
    let mut reply = Script::login_reply(1);
    reply.server_epoch = 1234;
    t.feed(relogin.request_id, Body::LoginReply(reply));
    let rejoin = t.take_sent().pop().expect("a re-join");
    assert!(
        matches!(&rejoin.body, Some(Body::Join(j)) if j.rejoin && j.epoch == 0xA && j.resume_seq == 1),
        "{rejoin:?}"
    );
    t.feed(
        rejoin.request_id,
        Body::JoinReply(wire::JoinReply {
            channel: 1,
            seq: 1,
            epoch: 0xA,
            ..Default::default()
        }),
    );
    t.push(user_push(2, "u2"));
    t.push(channel_push(1, 2, "c2"));
    let events = t.take_events();
    assert!(losses(&events).is_empty(), "{events:?}");
    assert_eq!(texts(&events), vec!["u2", "c2"]);
    assert!(t.s.is_joined(ch));
}

#[test]
fn a_p2p_gap_with_an_unknown_end_is_one_loss_event() {
    let mut t = Script::logged_in();
    for s in 1..=3 {
        t.push(user_push(s, "old"));
    }
    t.take_events();
    let relogin = t.relogin();
    let mut reply = Script::login_reply(0);
    reply.p2p_epoch = P2P_EPOCH + 1;
    reply.p2p_gap = Some(wire::SeqGap { from: 4, to: 0 });
    t.feed(relogin.request_id, Body::LoginReply(reply));
    // The new epoch's stream starts at the reply's p2p_seq.
    t.push(user_push(1, "new1"));
    let events = t.take_events();
    assert_eq!(
        losses(&events),
        vec![Event::MessagesLost {
            stream: LostStream::User,
            from_seq: 4,
            to_seq: None
        }]
    );
    assert_eq!(texts(&events), vec!["new1"]);
    // The next resume hands back the epoch of the last login reply.
    let resume = resume_of(&t.relogin());
    assert_eq!((resume.p2p_epoch, resume.p2p_seq), (P2P_EPOCH + 1, 1));
}

#[test]
fn a_resumed_channel_in_a_new_epoch_resets_the_cursor_and_reports_its_gap_once() {
    let mut t = Script::logged_in();
    let ch = t.joined("room", 1, 0, 0xA);
    for s in 1..=5 {
        t.push(channel_push(1, s, "old"));
    }
    t.take_events();
    let relogin = t.relogin();
    let mut reply = Script::login_reply(0);
    reply.resumed = true;
    reply.channels = vec![resumed_channel(
        "room",
        wire::JoinReply {
            channel: 2,
            seq: 0,
            gap: Some(wire::SeqGap { from: 6, to: 0 }),
            epoch: 0xA2,
            ..Default::default()
        },
    )];
    t.feed(relogin.request_id, Body::LoginReply(reply));
    t.push(channel_push(2, 1, "new1"));
    let events = t.take_events();
    assert_eq!(
        losses(&events),
        vec![Event::MessagesLost {
            stream: LostStream::Channel(ch),
            from_seq: 6,
            to_seq: None
        }]
    );
    assert_eq!(texts(&events), vec!["new1"], "seq 1 of the new epoch");
    assert!(joins(&t.take_sent()).is_empty());
}

#[test]
fn a_rejoin_reply_in_a_new_epoch_resets_the_cursor_and_reports_its_gap_once() {
    let mut t = Script::logged_in();
    let ch = t.joined("room", 1, 0, 0xA);
    for s in 1..=5 {
        t.push(channel_push(1, s, "old"));
    }
    t.take_events();
    let relogin = t.relogin();
    t.feed(relogin.request_id, Body::LoginReply(Script::login_reply(0)));
    let rejoin = t.take_sent().pop().expect("a re-join");
    assert!(
        matches!(&rejoin.body, Some(Body::Join(j)) if j.rejoin && j.epoch == 0xA && j.resume_seq == 5),
        "the cursor goes back with its epoch: {rejoin:?}"
    );
    t.feed(
        rejoin.request_id,
        Body::JoinReply(wire::JoinReply {
            channel: 2,
            seq: 0,
            gap: Some(wire::SeqGap { from: 6, to: 0 }),
            member_offline: true,
            epoch: 0xA2,
            ..Default::default()
        }),
    );
    t.push(channel_push(2, 1, "new1"));
    let events = t.take_events();
    assert_eq!(
        losses(&events),
        vec![Event::MessagesLost {
            stream: LostStream::Channel(ch),
            from_seq: 6,
            to_seq: None
        }]
    );
    assert_eq!(texts(&events), vec!["new1"], "seq 1 of the new epoch");
}

// ---- exactly-once sends ------------------------------------------------------------------

/// Logged in, channel "y" joined (number 2, epoch 0xB), a reliable P2P send
/// and a reliable send to "y" in flight; the link is then lost. Returns the
/// channel and the two sends with their frames as transmitted.
fn two_sends_in_flight_at_link_loss(
    t: &mut Script,
) -> (ChannelHandle, [(RequestId, Bytes, Frame); 2]) {
    let y = t.joined("y", 2, 5, 0xB);
    let p =
        t.s.send_message_to_user(t.now, Uid(2), Message::new("t", "p2p"), RELIABLE)
            .unwrap();
    let c =
        t.s.send_message_to_channel(t.now, y, Message::new("t", "chan"), RELIABLE)
            .unwrap();
    let mut raw = t.take_raw();
    assert_eq!(raw.len(), 2);
    let (cb, cf) = raw.pop().unwrap();
    let (pb, pf) = raw.pop().unwrap();
    assert_eq!((pf.request_id, cf.request_id), (p.0, c.0));
    t.take_events();
    t.s.handle_disconnected(t.now);
    t.drain();
    (y, [(p, pb, pf), (c, cb, cf)])
}

#[test]
fn reliable_sends_in_flight_at_link_loss_are_resent_unchanged_after_the_rejoins() {
    let mut t = Script::logged_in();
    let (_, sends) = two_sends_in_flight_at_link_loss(&mut t);
    assert!(
        sends.iter().all(|(id, _, _)| !t.completed(*id)),
        "not completed at link loss: {:?}",
        t.events
    );
    let relogin = t.relogin();
    let mut reply = Script::login_reply(0);
    reply.resumed = true; // "y" is not kept: it is joined again.
    t.feed(relogin.request_id, Body::LoginReply(reply));
    let raw = t.take_raw();
    let rejoin = raw
        .iter()
        .position(|(_, f)| matches!(&f.body, Some(Body::Join(j)) if j.rejoin))
        .expect("a re-join");
    for (id, bytes, _) in &sends {
        let at: Vec<usize> = (0..raw.len()).filter(|&i| raw[i].0 == *bytes).collect();
        assert_eq!(at.len(), 1, "{id:?} re-sent once, byte for byte: {raw:?}");
        assert!(at[0] > rejoin, "{id:?} re-sent after the re-join");
    }
    assert_eq!(raw.iter().filter(|(_, f)| is_send(f)).count(), 2);
    assert!(sends.iter().all(|(id, _, _)| !t.completed(*id)));
    for (id, _, _) in &sends {
        t.feed(id.0, send_reply());
        assert!(
            matches!(t.completion(*id), Ok(Reply::MessageSent(m)) if m.timestamp_ms == 77),
            "{id:?}"
        );
    }
}

#[test]
fn held_sends_fail_with_1007_after_a_login_that_did_not_resume() {
    let mut t = Script::logged_in();
    let (_, sends) = two_sends_in_flight_at_link_loss(&mut t);
    assert!(sends.iter().all(|(id, _, _)| !t.completed(*id)));
    let relogin = t.relogin();
    let mut reply = Script::login_reply(0);
    reply.instance_id = INSTANCE + 1;
    reply.resumed = false;
    t.feed(relogin.request_id, Body::LoginReply(reply));
    for (id, _, _) in &sends {
        assert!(is_1007(t.completion(*id)), "{id:?}");
    }
    let sent = t.take_sent();
    assert!(!sent.iter().any(is_send), "nothing re-sent: {sent:?}");
}

#[test]
fn a_held_send_whose_timeout_passes_while_disconnected_fails_with_1007() {
    let mut t = Script::logged_in();
    let id =
        t.s.send_message_to_user(t.now, Uid(2), Message::new("t", "p2p"), RELIABLE)
            .unwrap();
    t.take_sent();
    t.run_for(Duration::from_secs(1));
    t.s.handle_disconnected(t.now);
    // The transport never opens again (every dial is left hanging).
    t.run_for(Duration::from_millis(8_900));
    assert!(!t.completed(id), "held within its 10 s timeout");
    t.run_for(Duration::from_millis(200));
    assert!(is_1007(t.completion(id)));
    // Once the link is back and resumed, it is not sent again.
    t.s.handle_connected(t.now);
    let login = t.last_sent();
    let mut reply = Script::login_reply(0);
    reply.resumed = true;
    t.feed(login.request_id, Body::LoginReply(reply));
    assert!(!t.take_sent().iter().any(is_send));
}

#[test]
fn unreliable_sends_fail_with_1007_at_link_loss() {
    let mut t = Script::logged_in();
    let y = t.joined("y", 2, 0, 0xB);
    let user =
        t.s.send_message_to_user(t.now, Uid(2), Message::new("t", "u"), UNRELIABLE)
            .unwrap();
    let chan =
        t.s.send_message_to_channel(t.now, y, Message::new("t", "c"), UNRELIABLE)
            .unwrap();
    let reliable =
        t.s.send_message_to_user(t.now, Uid(2), Message::new("t", "r"), RELIABLE)
            .unwrap();
    let reliable_bytes = t.take_raw().pop().unwrap().0;
    t.s.handle_disconnected(t.now);
    t.drain();
    assert!(is_1007(t.completion(user)));
    assert!(is_1007(t.completion(chan)));
    assert!(!t.completed(reliable), "the reliable one is held");
    let relogin = t.relogin();
    let mut reply = Script::login_reply(0);
    reply.resumed = true;
    reply.channels = vec![resumed_channel(
        "y",
        wire::JoinReply {
            channel: 2,
            epoch: 0xB,
            ..Default::default()
        },
    )];
    t.feed(relogin.request_id, Body::LoginReply(reply));
    let resent: Vec<Bytes> = t
        .take_raw()
        .into_iter()
        .filter(|(_, f)| is_send(f))
        .map(|(b, _)| b)
        .collect();
    assert_eq!(resent, vec![reliable_bytes], "only the reliable send");
}

#[test]
fn message_ids_are_non_zero_and_distinct() {
    let mut t = Script::logged_in();
    let y = t.joined("y", 2, 0, 0xB);
    for i in 0..50u8 {
        let m = Message::new("t", vec![i]);
        let opts = if i % 3 == 0 { UNRELIABLE } else { RELIABLE };
        if i % 2 == 0 {
            t.s.send_message_to_user(t.now, Uid(2), m, opts).unwrap();
        } else {
            t.s.send_message_to_channel(t.now, y, m, opts).unwrap();
        }
    }
    let mut ids: Vec<u64> = t.take_sent().iter().map(message_id).collect();
    assert_eq!(ids.len(), 50);
    assert!(ids.iter().all(|&id| id != 0), "{ids:?}");
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 50, "distinct");
}

#[test]
fn sessions_with_the_same_seed_and_other_instances_make_other_message_ids() {
    let first_ids = |instance_id: u64| -> Vec<u64> {
        let mut config = SessionConfig::new(10000);
        config.seed = 42;
        let mut reply = Script::login_reply(0);
        reply.instance_id = instance_id;
        let mut t = Script::logged_in_with(config, reply);
        for _ in 0..3 {
            t.s.send_message_to_user(t.now, Uid(2), Message::new("t", "x"), RELIABLE)
                .unwrap();
        }
        t.take_sent().iter().map(message_id).collect()
    };
    let a = first_ids(INSTANCE);
    let b = first_ids(INSTANCE + 1);
    assert!(a.iter().all(|id| !b.contains(id)), "{a:?} vs {b:?}");
}

// ---- the server's ping interval ---------------------------------------------------------

/// The times of the pings sent while idle over `d`, the clock driven by
/// `poll_timeout` as a run loop would.
fn ping_times(t: &mut Script, d: Duration) -> Vec<Duration> {
    let start = t.now;
    let end = start + d;
    let mut times = Vec::new();
    while let Some(at) = t.s.poll_timeout() {
        if at > end {
            break;
        }
        t.now = t.now.max(at);
        t.s.handle_timeout(t.now);
        for f in t.take_sent() {
            if let Some(Body::Ping(p)) = f.body {
                times.push(t.now - start);
                t.push(Body::Pong(wire::Pong { nonce: p.nonce }));
            }
        }
    }
    times
}

/// A Session whose config says a frame every 10 s, logged in by a server
/// that asks for one every 3 s.
fn logged_in_with_3s_pings() -> Script {
    let mut reply = Script::login_reply(0);
    reply.ping_interval_ms = 3_000;
    Script::logged_in_with(SessionConfig::new(10000), reply)
}

#[test]
fn the_server_ping_interval_shortens_the_heartbeat_once_a_frame_went_out() {
    let mut t = logged_in_with_3s_pings();
    let id = t.s.get_instance_info(t.now).unwrap();
    t.take_sent();
    t.feed(
        id.0,
        Body::Error(wire::ErrorReply {
            code: 1,
            message: String::new(),
        }),
    );
    let secs = |s: u64| Duration::from_secs(s);
    assert_eq!(
        ping_times(&mut t, Duration::from_millis(9_500)),
        vec![secs(3), secs(6), secs(9)]
    );
}

#[test]
fn the_server_ping_interval_shortens_the_heartbeat_from_the_login_on() {
    let mut t = logged_in_with_3s_pings();
    let secs = |s: u64| Duration::from_secs(s);
    assert_eq!(
        ping_times(&mut t, Duration::from_millis(9_500)),
        vec![secs(3), secs(6), secs(9)]
    );
}

// ---- Close codes ---------------------------------------------------------------------------

#[test]
fn close_4007_ends_the_session_as_remote_login() {
    let mut t = Script::logged_in();
    let ch = t.joined("room", 1, 0, 0xA);
    let info = t.s.get_instance_info(t.now).unwrap();
    let send =
        t.s.send_message_to_user(t.now, Uid(2), Message::new("t", "x"), RELIABLE)
            .unwrap();
    t.take_sent();
    t.push(Body::Close(wire::Close {
        code: 4007,
        reason: "replaced".into(),
    }));
    assert_eq!(t.s.connection_state(), (S::Disconnected, R::RemoteLogin));
    assert!(t.events.contains(&state(S::Disconnected, R::RemoteLogin)));
    assert!(is_1007(t.completion(info)));
    assert!(is_1007(t.completion(send)));
    assert!(!t.s.is_joined(ch));
    assert_eq!(t.actions, vec![TransportAction::Close]);
    t.run_for(Duration::from_secs(60));
    assert_eq!(t.actions, vec![TransportAction::Close], "no reconnect");
}

#[test]
fn close_4006_reconnects_and_resumes() {
    let mut t = Script::logged_in();
    let ch = t.joined("room", 1, 3, 0xA);
    let send =
        t.s.send_message_to_user(t.now, Uid(2), Message::new("t", "x"), RELIABLE)
            .unwrap();
    let send_bytes = t.take_raw().pop().unwrap().0;
    t.push(Body::Close(wire::Close {
        code: 4006,
        reason: "shutting down".into(),
    }));
    assert_eq!(t.s.connection_state(), (S::Reconnecting, R::Interrupted));
    assert_eq!(t.actions, vec![TransportAction::Close]);
    assert!(!t.completed(send), "held for a re-send");
    assert!(t.s.is_joined(ch));
    t.run_for(Duration::from_secs(2));
    assert_eq!(
        t.actions,
        vec![TransportAction::Close, TransportAction::Connect],
        "a re-dial after the backoff"
    );
    t.s.handle_connected(t.now);
    let login = t.last_sent();
    let resume = resume_of(&login);
    assert_eq!(
        (resume.instance_id, resume.p2p_epoch, resume.channels),
        (INSTANCE, P2P_EPOCH, vec![cursor("room", 0xA, 3)])
    );
    let mut reply = Script::login_reply(0);
    reply.resumed = true;
    reply.channels = vec![resumed_channel(
        "room",
        wire::JoinReply {
            channel: 1,
            seq: 3,
            epoch: 0xA,
            ..Default::default()
        },
    )];
    t.feed(login.request_id, Body::LoginReply(reply));
    let resent: Vec<Bytes> = t.take_raw().into_iter().map(|(b, _)| b).collect();
    assert_eq!(resent, vec![send_bytes]);
    t.feed(send.0, send_reply());
    assert!(matches!(t.completion(send), Ok(Reply::MessageSent(_))));
}

#[test]
fn the_server_idle_timeout_bounds_the_silence_the_session_waits_out() {
    let mut reply = Script::login_reply(0);
    reply.ping_interval_ms = 4_000;
    reply.idle_timeout_ms = 12_000;
    let mut t = Script::logged_in_with(SessionConfig::new(10000), reply);
    // The server answers nothing (not even the pings).
    t.run_for(Duration::from_millis(11_900));
    assert_eq!(t.s.connection_state(), (S::Connected, R::LoginSuccess));
    t.run_for(Duration::from_millis(200));
    assert_eq!(t.s.connection_state(), (S::Reconnecting, R::Interrupted));
    assert!(t.actions.contains(&TransportAction::Close));
}

#[test]
fn a_token_will_expire_push_rearms_the_warning_only_for_another_expiry() {
    // Logged in with a token expiring at 40 s (server clock 1 s): the
    // Session's own warning comes 30 s before, at 9 s (39 s left, less 30).
    let mut reply = Script::login_reply(0);
    reply.token_expires_at_ms = 40_000;
    let mut t = Script::logged_in_with(SessionConfig::new(10000), reply);
    let warned = |events: &[Event]| {
        events
            .iter()
            .filter_map(|e| match e {
                Event::TokenWillExpire { expires_at_ms } => Some(*expires_at_ms),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    // The server's push for the same expiry changes nothing: one warning.
    t.push(Body::TokenWillExpire(wire::TokenWillExpirePush {
        token_expires_at_ms: 40_000,
        server_time_ms: 2_000,
    }));
    t.run_for(Duration::from_millis(8_900));
    assert_eq!(warned(&t.take_events()), Vec::<u64>::new());
    t.run_for(Duration::from_millis(200));
    assert_eq!(warned(&t.take_events()), vec![40_000]);
    // A push for another expiry (the server knows better) is believed:
    // warned for it at once, since less than 30 s are left.
    t.push(Body::TokenWillExpire(wire::TokenWillExpirePush {
        token_expires_at_ms: 35_000,
        server_time_ms: 10_000,
    }));
    t.run_for(Duration::from_millis(1));
    assert_eq!(warned(&t.take_events()), vec![35_000]);
}
