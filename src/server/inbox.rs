//! Reliable P2P delivery: one sequence space per (appid, receiver uid),
//! shared by all its instances, and a bounded inbox of the encoded pushes
//! that serves offline messages, resumes and fetches.

use super::retention::{Replay, SeqLog};
use super::{ConnId, Outcome, Server};
use crate::types::Message;
use crate::wire::{self, Body, Frame, SeqGap};

/// The P2P inbox of one uid.
#[derive(Debug, Default)]
pub(crate) struct Inbox {
    pub log: SeqLog,
    /// The highest sequence number any instance of the uid acknowledged: a
    /// fresh login starts after it (the rest are its offline messages).
    pub acked: u64,
}

impl Server {
    pub(super) fn send_to_user(&mut self, inst: u64, req: wire::SendToUserRequest) -> Outcome {
        self.config.limits.check_uid(req.receiver)?;
        let message = Message::from(req.message.unwrap_or_default());
        self.config.limits.check_message(&message)?;
        self.rate_check(inst)?;
        let i = self.instance(inst)?;
        let (appid, from_uid) = (i.appid, i.uid);
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
        let frame = if req.unreliable {
            encode_push(Body::UserMessage(push.clone()))
        } else {
            let (now, max, age) = (
                self.now,
                self.config.inbox_max_messages,
                self.config.inbox_max_age,
            );
            let inbox = self.inbox_mut(key);
            push.seq = inbox.log.next_seq();
            let frame = encode_push(Body::UserMessage(push.clone()));
            inbox.log.prune(now, age);
            inbox.log.append(push.seq, now, frame.clone(), max);
            self.retained(frame.len());
            frame
        };
        for c in &conns {
            self.send(*c, frame.clone());
        }
        Ok((
            Body::SendReply(wire::SendReply {
                timestamp_ms: ts,
                delivered_online: !conns.is_empty(),
                seq: push.seq,
            }),
            Vec::new(),
        ))
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

    /// Where a login of `key` resumes its P2P stream, and what to replay.
    /// The second value is the gap to report when the client's history is
    /// from another server epoch (lost with a restart).
    pub(super) fn p2p_resume_point(
        &mut self,
        key: (u32, u64),
        resume: Option<&wire::Resume>,
    ) -> (Replay, Option<SeqGap>) {
        let (now, age, budget) = (
            self.now,
            self.config.inbox_max_age,
            self.config.max_queued_bytes / 2,
        );
        let epoch = self.epoch;
        let acked = self.inboxes.get(&key).map_or(0, |b| b.acked);
        let mut epoch_gap = None;
        let after = match resume {
            Some(r) if r.server_epoch == epoch => r.p2p_seq,
            Some(r) => {
                if r.server_epoch != 0 && r.p2p_seq > 0 {
                    epoch_gap = Some(SeqGap {
                        from: r.p2p_seq.saturating_add(1),
                        to: 0,
                    });
                }
                acked
            }
            None => acked,
        };
        let replay = match self.inboxes.get_mut(&key) {
            Some(inbox) => {
                inbox.log.prune(now, age);
                inbox.log.replay(after, budget)
            }
            None => Replay::default(),
        };
        (replay, epoch_gap)
    }

    /// `Fetch` of the P2P stream: the pushes after `after`.
    pub(super) fn p2p_replay(&mut self, inst: u64, after: u64) -> Replay {
        let (now, age, budget) = (
            self.now,
            self.config.inbox_max_age,
            self.config.max_queued_bytes / 2,
        );
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

    /// The inbox of `key`, made if needed. Past `max_inbox_users` the inbox
    /// of an offline uid whose newest message is oldest is forgotten first.
    fn inbox_mut(&mut self, key: (u32, u64)) -> &mut Inbox {
        if !self.inboxes.contains_key(&key) && self.inboxes.len() >= self.config.max_inbox_users {
            let users = &self.users;
            let victim = self
                .inboxes
                .iter()
                .filter(|(k, _)| !users.contains_key(k))
                .min_by_key(|(_, b)| b.log.newest_at())
                .map(|(k, _)| *k);
            if let Some(v) = victim {
                self.inboxes.remove(&v);
            }
        }
        self.inboxes.entry(key).or_default()
    }
}

/// Encodes a push (request id 0) once, to be shared by every receiver.
pub(super) fn encode_push(body: Body) -> bytes::Bytes {
    wire::encode_frame(&Frame {
        request_id: 0,
        body: Some(body),
    })
}
