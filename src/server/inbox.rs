//! Reliable P2P delivery: one sequence space per (appid, receiver uid),
//! shared by all its instances, and a bounded inbox of the encoded pushes
//! that serves offline messages, resumes and fetches.

use super::retention::{Replay, SeqLog};
use super::sent_ids::Destination;
use super::{ConnId, Outcome, Server};
use crate::types::Message;
use crate::wire::{self, Body, Frame, SeqGap};

/// The P2P inbox of one uid: its stream's epoch, numbering and history.
#[derive(Debug)]
pub(crate) struct Inbox {
    /// Non-zero; a new inbox (after a restart, or once one was forgotten
    /// under `max_inbox_users`) gets a new one and numbers from 1 again.
    pub epoch: u64,
    pub log: SeqLog,
    /// The highest sequence number any instance of the uid acknowledged: a
    /// fresh login starts after it (the rest are its offline messages).
    pub acked: u64,
}

/// Where a login's P2P stream starts: its epoch, what to replay, and the
/// loss to report when the client's cursor is from another epoch.
pub(super) struct P2pResume {
    pub epoch: u64,
    pub replay: Replay,
    pub epoch_gap: Option<SeqGap>,
}

/// Bytes a not yet assigned `seq` adds to a push at most: its key and a
/// 10-byte varint (a zero `seq` is not encoded at all).
const MAX_SEQ_FIELD_LEN: usize = 1 + 10;

/// Bytes of the frame holding a sequenced push whose message (with `seq`
/// still 0) encodes to `push_len` bytes, counted with the longest `seq`. The
/// push sits in a body field numbered 16..=2047: a 2-byte key.
pub(super) fn sequenced_push_frame_len(push_len: usize) -> usize {
    let inner = push_len.saturating_add(MAX_SEQ_FIELD_LEN);
    2 + prost::encoding::encoded_len_varint(inner as u64) + inner
}

/// 2007 when a push of `frame_len` bytes would exceed `max` (clients refuse
/// larger frames). Sized from borrowed data: nothing is copied to measure it.
pub(super) fn check_push_fits(
    max: usize,
    frame_len: usize,
) -> Result<(), crate::error::ServiceError> {
    if frame_len > max {
        return Err(crate::error::ServiceError::new(
            crate::error::ErrorCode::MSG_SIZE_LIMIT_EXCEEDED,
            format!("the message would be pushed as a {frame_len}-byte frame, more than {max}"),
        ));
    }
    Ok(())
}

impl Server {
    pub(super) fn send_to_user(&mut self, inst: u64, req: wire::SendToUserRequest) -> Outcome {
        let i = self.instance(inst)?;
        let (appid, from_uid) = (i.appid, i.uid);
        let to = Destination::User(req.receiver);
        if let Some(reply) = self.sent_before((appid, from_uid), req.message_id, to)? {
            return Ok((Body::SendReply(reply), Vec::new()));
        }
        self.config.limits.check_uid(req.receiver)?;
        let message = Message::from(req.message.unwrap_or_default());
        self.config.limits.check_message(&message)?;
        let key = (appid, req.receiver);
        let ts = self.unix_ms();
        let conns: Vec<ConnId> = self
            .users
            .get(&key)
            .into_iter()
            .flatten()
            .filter_map(|i| self.instances.get(i).and_then(|x| x.conn))
            .collect();
        let mut push = wire::UserMessagePush {
            from_uid,
            message: Some(message.into()),
            timestamp_ms: ts,
            seq: 0,
        };
        // The push must fit in a frame a client accepts, with the longest
        // seq varint (a reliable push that does not would be replayed, and
        // refused, on every login of the receiver).
        check_push_fits(
            self.config.limits.max_frame_size,
            sequenced_push_frame_len(prost::Message::encoded_len(&push)),
        )?;
        // Counted only once the send is known to be valid.
        self.rate_check(inst)?;
        let frame = if req.unreliable {
            encode_push(Body::UserMessage(push.clone()))
        } else {
            let (now, max, age) = (
                self.now,
                self.config.inbox_max_messages,
                self.config.inbox_max_age,
            );
            let bounds = (max, self.config.inbox_max_retained_bytes);
            let inbox = self.inbox_mut(key);
            push.seq = inbox.log.next_seq();
            let frame = encode_push(Body::UserMessage(push.clone()));
            inbox.log.prune(now, age);
            let added = inbox.log.append(push.seq, now, frame.clone(), bounds);
            self.retained(appid, added);
            frame
        };
        for c in &conns {
            self.send(*c, frame.clone());
        }
        let reply = wire::SendReply {
            timestamp_ms: ts,
            delivered_online: !conns.is_empty(),
            seq: push.seq,
        };
        self.remember_sent((appid, from_uid), req.message_id, to, &reply);
        Ok((Body::SendReply(reply), Vec::new()))
    }

    /// `Ack{p2p_seq}` from the instance on `conn` (ignored before login).
    pub(super) fn handle_ack(&mut self, conn: ConnId, seq: u64) {
        let Some(inst) = self.conns.get(&conn).and_then(|c| c.instance) else {
            return;
        };
        let Some(i) = self.instances.get(&inst) else {
            return;
        };
        if let Some(inbox) = self.inboxes.get_mut(&(i.appid, i.uid)) {
            inbox.acked = inbox.acked.max(seq.min(inbox.log.head));
        }
    }

    /// Where a login of `key` resumes its P2P stream, and what to replay
    /// within `budget` bytes. A cursor from another epoch gets
    /// `gap{from: cursor + 1, to: 0}` (even a cursor of 0: the client cannot
    /// know what it missed) and the stream goes on from the uid's acked
    /// point, like a fresh login.
    pub(super) fn p2p_resume_point(
        &mut self,
        key: (u32, u64),
        resume: Option<&wire::Resume>,
        budget: usize,
    ) -> P2pResume {
        let (now, age) = (self.now, self.config.inbox_max_age);
        let inbox = self.inbox_mut(key);
        inbox.log.prune(now, age);
        let mut epoch_gap = None;
        let after = match resume {
            Some(r) if r.p2p_epoch == inbox.epoch => r.p2p_seq,
            Some(r) if r.p2p_epoch != 0 => {
                epoch_gap = Some(SeqGap {
                    from: r.p2p_seq.saturating_add(1),
                    to: 0,
                });
                inbox.acked
            }
            _ => inbox.acked,
        };
        P2pResume {
            epoch: inbox.epoch,
            replay: inbox.log.replay(after, budget),
            epoch_gap,
        }
    }

    /// `Fetch` of the P2P stream: the pushes after `after`.
    pub(super) fn p2p_replay(&mut self, inst: u64, after: u64, budget: usize) -> Replay {
        let (now, age) = (self.now, self.config.inbox_max_age);
        let Some(i) = self.instances.get(&inst) else {
            return Replay::default();
        };
        match self.inboxes.get_mut(&(i.appid, i.uid)) {
            Some(inbox) => {
                inbox.log.prune(now, age);
                inbox.log.replay(after, budget)
            }
            None => Replay::default(),
        }
    }

    /// The inbox of `key`, made if needed (with a new epoch). Past
    /// `max_inbox_users` the inboxes of offline uids idle longest are
    /// forgotten, a tenth of the bound at a time so that the scan is
    /// amortised: their streams' next inboxes get new epochs.
    fn inbox_mut(&mut self, key: (u32, u64)) -> &mut Inbox {
        let max = self.config.max_inbox_users;
        if !self.inboxes.contains_key(&key) && self.inboxes.len() >= max {
            let users = &self.users;
            let mut idle: Vec<_> = self
                .inboxes
                .iter()
                .filter(|(k, _)| !users.contains_key(k))
                .map(|(k, b)| (b.log.newest_at(), *k))
                .collect();
            let n = (max / 10).clamp(1, idle.len().max(1));
            if idle.len() > n {
                idle.select_nth_unstable(n);
                idle.truncate(n);
            }
            for (_, k) in idle {
                self.inboxes.remove(&k);
            }
        }
        // Drawn only for a new inbox: the draws stay deterministic per seed.
        let epoch = match self.inboxes.contains_key(&key) {
            true => 0,
            false => self.random_nonzero(),
        };
        self.inboxes.entry(key).or_insert(Inbox {
            epoch,
            log: SeqLog::default(),
            acked: 0,
        })
    }
}

/// Encodes a push (request id 0) once, to be shared by every receiver.
pub(super) fn encode_push(body: Body) -> bytes::Bytes {
    wire::encode_frame(&Frame {
        request_id: 0,
        body: Some(body),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::encode_frame;

    #[test]
    fn push_sizes_match_the_encoding_with_the_longest_seq() {
        for content in [0usize, 1, 100, 127, 128, 16_000, 40_000, 70_000] {
            let message = Some(wire::ChatMessage {
                r#type: "t".into(),
                content: bytes::Bytes::from(vec![7u8; content]),
                app_extras: [("k".to_string(), "v".to_string())].into(),
            });
            let user = wire::UserMessagePush {
                from_uid: u64::MAX,
                message: message.clone(),
                timestamp_ms: u64::MAX,
                seq: 0,
            };
            let channel = wire::ChannelMessagePush {
                channel: u32::MAX,
                from_uid: u64::MAX,
                message,
                timestamp_ms: u64::MAX,
                seq: 0,
            };
            let estimated = [
                sequenced_push_frame_len(prost::Message::encoded_len(&user)),
                sequenced_push_frame_len(prost::Message::encoded_len(&channel)),
            ];
            let actual = [
                encode_push(Body::UserMessage(wire::UserMessagePush {
                    seq: u64::MAX,
                    ..user
                }))
                .len(),
                encode_push(Body::ChannelMessage(wire::ChannelMessagePush {
                    seq: u64::MAX,
                    ..channel
                }))
                .len(),
            ];
            assert_eq!(estimated, actual, "content of {content} bytes");
        }
        let notice = Body::Membership(wire::MembershipPush {
            channel: 3,
            joined: vec![1, 2],
            left: vec![9],
        });
        let frame = Frame {
            request_id: 0,
            body: Some(notice.clone()),
        };
        assert_eq!(notice.encoded_len(), encode_frame(&frame).len());
    }
}
