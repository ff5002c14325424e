//! What the Session tests share beyond `common`: the imports, and the
//! frames and events the scripted server and the checks use.

pub use std::collections::{BTreeMap, HashMap, HashSet};
pub use std::time::{Duration, Instant};

pub use bytes::Bytes;
pub use hummer_channel::client::{
    AttributeOptions, ChannelHandle, ConnectionReason as R, ConnectionState as S, Event, LinkId,
    LostStream, Reply, RequestId, SendOptions, Session, SessionConfig, Timing, TransportAction,
};
pub use hummer_channel::wire::{self, encode_frame, Body, DecodedFrame, Frame};
pub use hummer_channel::{
    Attributes, CommandError, ErrorCode, Message, Region, ServiceError, Uid, WireError,
};

pub use crate::common::clock::*;
pub use crate::common::raw_frame;
pub use crate::common::script::*;
pub use crate::common::sinks::*;

// from session_scripted
pub fn state(state: S, reason: R) -> Event {
    Event::ConnectionStateChanged { state, reason }
}

// from session_scripted
pub fn chat(text: &str) -> wire::ChatMessage {
    wire::ChatMessage {
        r#type: "text".into(),
        content: Bytes::copy_from_slice(text.as_bytes()),
        app_extras: Default::default(),
    }
}

// from session_scripted
pub fn user_push(seq: u64, text: &str) -> Body {
    Body::UserMessage(wire::UserMessagePush {
        from_uid: 2,
        message: Some(chat(text)),
        timestamp_ms: 5,
        seq,
    })
}

// from session_scripted
pub fn channel_push(number: u32, seq: u64, text: &str) -> Body {
    Body::ChannelMessage(wire::ChannelMessagePush {
        channel: number,
        from_uid: 2,
        message: Some(chat(text)),
        timestamp_ms: 5,
        seq,
    })
}

// from session_scripted
pub fn room_key(id: &str) -> wire::ChannelKey {
    wire::ChannelKey {
        region: Region::Cn.to_wire(),
        channel_id: id.into(),
    }
}

// from session_scripted
/// A channel a resumed login kept, as the server lists it in its reply.
pub fn resumed_channel(id: &str, number: u32, seq: u64, epoch: u64) -> wire::ResumedChannel {
    wire::ResumedChannel {
        channel: Some(room_key(id)),
        state: Some(wire::JoinReply {
            channel: number,
            seq,
            epoch,
            ..Default::default()
        }),
    }
}

// from session_scripted
pub fn texts(events: &[Event]) -> Vec<String> {
    let text = |m: &Message| String::from_utf8_lossy(&m.content).into_owned();
    events.iter().filter_map(Event::message).map(text).collect()
}

// from session_scripted

/// Runs `cmd`, checks the frame it sends, answers with `reply` and returns the completion.
pub fn round_trip(
    t: &mut Script,
    cmd: impl FnOnce(&mut Session, Instant) -> Result<RequestId, CommandError>,
    check: impl FnOnce(&Body),
    reply: Body,
) -> Result<Reply, hummer_channel::ServiceError> {
    let id = cmd(&mut t.s, t.now).expect("command accepted");
    let frame = t.last_sent();
    assert_eq!(frame.request_id, id.0);
    check(&frame.body);
    t.feed(id.0, reply);
    t.completion(id)
}

// from session_scripted
pub fn ok() -> Body {
    Body::Ok(wire::Empty {})
}

// from session_scripted

/// Reconnects after a dropped link; returns the re-login frame.
pub fn relogin(t: &mut Script) -> DecodedFrame {
    t.disconnected();
    t.drain();
    t.run_for(Duration::from_secs(2));
    t.connected();
    t.last_sent()
}

// from session_scripted
pub fn cfg_buffer(n: usize) -> SessionConfig {
    let mut c = SessionConfig::new(10000);
    c.max_reorder_buffer = n;
    c
}

// from session_scripted
pub fn fetch_after(f: &DecodedFrame) -> u64 {
    match &f.body {
        Body::Fetch(r) => r.after_seq,
        other => panic!("not a fetch: {other:?}"),
    }
}

// from session_v2
pub fn key(id: &str) -> wire::ChannelKey {
    wire::ChannelKey {
        region: Region::Cn.to_wire(),
        channel_id: id.into(),
    }
}

// from session_v2
pub fn cursor(id: &str, epoch: u64, seq: u64) -> wire::ChannelCursor {
    wire::ChannelCursor {
        channel: Some(key(id)),
        epoch,
        seq,
    }
}

// from session_v2
pub fn resumed_with(id: &str, state: wire::JoinReply) -> wire::ResumedChannel {
    wire::ResumedChannel {
        channel: Some(key(id)),
        state: Some(state),
    }
}

// from session_v2
pub fn losses(events: &[Event]) -> Vec<Event> {
    events
        .iter()
        .filter(|e| matches!(e, Event::MessagesLost { .. }))
        .cloned()
        .collect()
}

// from session_v2
pub fn resume_of(login: &DecodedFrame) -> wire::Resume {
    match &login.body {
        Body::Login(req) => req.resume.clone().expect("a resume"),
        other => panic!("not a login: {other:?}"),
    }
}

// from session_v2
pub fn joins(sent: &[DecodedFrame]) -> Vec<wire::JoinRequest> {
    sent.iter()
        .filter_map(|f| match &f.body {
            Body::Join(j) => Some(j.clone()),
            _ => None,
        })
        .collect()
}

// from session_v2
pub fn message_id(frame: &DecodedFrame) -> u64 {
    match &frame.body {
        Body::SendToUser(r) => r.message_id,
        Body::SendToChannel(r) => r.message_id,
        other => panic!("not a send: {other:?}"),
    }
}

// from session_v2
pub fn is_send(frame: &DecodedFrame) -> bool {
    matches!(frame.body, Body::SendToUser(_) | Body::SendToChannel(_))
}

// from session_v2
pub fn send_reply() -> Body {
    Body::SendReply(wire::SendReply {
        timestamp_ms: 77,
        delivered_online: true,
        seq: 1,
    })
}

// from session_v2
pub fn is_1007(r: Result<Reply, ServiceError>) -> bool {
    matches!(r, Err(e) if e.code == ErrorCode::CONNECTION_EXCEPTION)
}

// from session_v2

/// Logged in, channel "y" joined (number 2, epoch 0xB), a reliable P2P send
/// and a reliable send to "y" in flight; the link is then lost. Returns the
/// channel and the two sends with their frames as transmitted.
pub fn two_sends_in_flight_at_link_loss(
    t: &mut Script,
) -> (ChannelHandle, [(RequestId, Bytes, DecodedFrame); 2]) {
    let y = t.joined_at("y", 2, 5, 0xB);
    let p =
        t.s.send_message_to_user(
            t.now,
            Uid(2),
            Message::new("t", "p2p"),
            SendOptions::reliable(),
        )
        .unwrap();
    let c =
        t.s.send_message_to_channel(t.now, y, Message::new("t", "chan"), SendOptions::reliable())
            .unwrap();
    let mut raw = t.take_raw();
    assert_eq!(raw.len(), 2);
    let (cb, cf) = raw.pop().unwrap();
    let (pb, pf) = raw.pop().unwrap();
    assert_eq!((pf.request_id, cf.request_id), (p.0, c.0));
    t.take_events();
    t.disconnected();
    t.drain();
    (y, [(p, pb, pf), (c, cb, cf)])
}

// from session_v2

/// The times of the pings sent while idle over `d`, the clock driven by
/// `poll_timeout` as a run loop would.
pub fn ping_times(t: &mut Script, d: Duration) -> Vec<Duration> {
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
            if let Body::Ping(p) = f.body {
                times.push(t.now - start);
                t.push(Body::Pong(wire::Pong { nonce: p.nonce }));
            }
        }
    }
    times
}

// from session_v2
/// A Session whose config says a frame every 10 s, logged in by a server
/// that asks for one every 3 s.
pub fn logged_in_with_3s_pings() -> Script {
    let mut reply = Script::login_reply(9, 0);
    reply.ping_interval_ms = 3_000;
    Script::logged_in_with(SessionConfig::new(10000), reply)
}
