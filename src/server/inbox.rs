//! Reliable P2P delivery: one sequence space per (appid, receiver uid),
//! shared by all its instances, and a bounded inbox of the encoded pushes
//! that serves offline messages, resumes and fetches.

use super::durable::SentRef;
use super::hub::{Hub, LogId, Outcome};
use super::sent_ids::Destination;
use super::seq_log::{check_sequenced_fits, Replay, SeqLog};
use super::store::StoreKey;
use super::{encode_push, ConnId};
use crate::types::Message;
use crate::wire::{self, Body};

/// The P2P inbox of one uid.
#[derive(Debug)]
pub(crate) struct Inbox {
    /// The stream; a new inbox (after a restart, or once one was forgotten
    /// under `max_inbox_users`) gets a new epoch and numbers from 1 again.
    pub log: SeqLog,
    /// The highest sequence number any instance of the uid acknowledged: a
    /// fresh login starts after it (the rest are its offline messages).
    pub acked: u64,
}

impl Hub {
    pub(super) fn send_to_user(&mut self, inst: u64, req: wire::SendToUserRequest) -> Outcome {
        let i = self.instance(inst)?;
        let (appid, from_uid) = (i.appid, i.uid);
        let to = Destination::User(req.receiver);
        if let Some(reply) = self.sent_before((appid, from_uid), req.message_id, to)? {
            return Ok((Body::SendReply(reply), Vec::new()));
        }
        let push = self.user_push(req.receiver, from_uid, req.message.unwrap_or_default())?;
        let ts = push.timestamp_ms;
        // Counted only once the send is known to be valid.
        self.rate_check(inst)?;
        let (seq, delivered_online) =
            self.deliver_p2p((appid, req.receiver), push, req.unreliable, req.message_id);
        let reply = wire::SendReply {
            timestamp_ms: ts,
            delivered_online,
            seq,
        };
        self.remember_sent((appid, from_uid), req.message_id, to, &reply);
        Ok((Body::SendReply(reply), Vec::new()))
    }

    /// The push of a message from `from_uid` to `receiver`, checked against
    /// the limits: the receiver's uid, the message's size, and that it fits
    /// in a frame a client accepts with the longest seq varint (a reliable
    /// push that does not would be replayed, and refused, on every login of
    /// the receiver).
    pub(super) fn user_push(
        &self,
        receiver: u64,
        from_uid: u64,
        message: wire::ChatMessage,
    ) -> Result<wire::UserMessagePush, crate::error::ServiceError> {
        self.config.limits.check_uid(receiver)?;
        let message = Message::from(message);
        self.config.limits.check_message(&message)?;
        let push = wire::UserMessagePush {
            from_uid,
            message: Some(message.into()),
            timestamp_ms: self.unix_ms(),
            seq: 0,
        };
        check_sequenced_fits(self.config.limits.max_frame_size, &push)?;
        Ok(push)
    }

    /// Delivers a P2P message to `(appid, receiver)` of this shard: into
    /// its inbox (when reliable) and to its connected instances. The seq
    /// (0: unreliable) and whether any instance was online.
    pub(super) fn deliver_p2p(
        &mut self,
        (appid, receiver): (u32, u64),
        mut push: wire::UserMessagePush,
        unreliable: bool,
        message_id: u64,
    ) -> (u64, bool) {
        let key = (appid, receiver);
        let conns: Vec<ConnId> = self
            .users
            .get(&key)
            .into_iter()
            .flatten()
            .filter_map(|i| self.instances.get(i).and_then(|x| x.conn))
            .collect();
        let mut seq = 0;
        let frame = if unreliable {
            encode_push(Body::UserMessage(push))
        } else {
            let now = self.now();
            let retention = self.config.inbox_retention();
            let sent = SentRef {
                uid: push.from_uid,
                message_id,
                timestamp_ms: push.timestamp_ms,
                delivered_online: !conns.is_empty(),
            };
            let pushed = self.inbox_mut(key).log.push(now, retention, |seq| {
                push.seq = seq;
                encode_push(Body::UserMessage(push))
            });
            if self.store.is_some() {
                let stored = StoreKey::Inbox {
                    appid,
                    uid: receiver,
                };
                self.store_append(
                    LogId::Inbox(appid, receiver),
                    stored,
                    pushed.seq,
                    &pushed.frame,
                    Some(sent),
                );
            }
            seq = pushed.seq;
            self.retained(appid, pushed.added);
            pushed.frame
        };
        let delivered_online = !conns.is_empty();
        self.broadcast_to(conns, &frame);
        (seq, delivered_online)
    }

    /// `Fetch` of the P2P stream (a channel's is the channel shard's).
    pub(super) fn fetch_p2p(
        &mut self,
        conn: ConnId,
        inst: u64,
        req: wire::FetchRequest,
    ) -> Outcome {
        let m = self.local_member(inst)?;
        self.fetch(conn, &m, req)
    }

    /// `Ack{p2p_seq}` from the instance on `conn` (ignored before login).
    pub(super) fn handle_ack(&mut self, conn: ConnId, seq: u64) {
        let Some(inst) = self.link_instance(conn) else {
            return;
        };
        let Some(i) = self.instances.get(&inst) else {
            return;
        };
        let key = (i.appid, i.uid);
        if let Some(inbox) = self.inboxes.get_mut(&key) {
            let acked = inbox.acked.max(seq.min(inbox.log.head()));
            if acked != inbox.acked {
                inbox.acked = acked;
                self.touch_inbox(key);
            }
        }
    }

    /// Where a login of `key` resumes its P2P stream (its epoch, and what
    /// to replay within `budget` bytes). A cursor from another epoch gets
    /// `gap{from: cursor + 1, to: 0}` (even a cursor of 0: the client cannot
    /// know what it missed) and the stream goes on from the uid's acked
    /// point, like a fresh login.
    pub(super) fn p2p_resume_point(
        &mut self,
        key: (u32, u64),
        resume: Option<&wire::Resume>,
        budget: usize,
    ) -> (u64, Replay) {
        let (now, retention) = (self.now(), self.config.inbox_retention());
        let inbox = self.inbox_mut(key);
        let cursor = resume.map_or((0, 0), |r| (r.p2p_epoch, r.p2p_seq));
        let replay = inbox
            .log
            .resume(now, retention, cursor, 0, inbox.acked, Some(budget));
        (inbox.log.epoch(), replay)
    }

    /// `Fetch` of the P2P stream: the pushes after `after`.
    pub(super) fn p2p_replay(&mut self, inst: u64, after: u64, budget: usize) -> Replay {
        let (now, retention) = (self.now(), self.config.inbox_retention());
        let Some(i) = self.instances.get(&inst) else {
            return Replay::default();
        };
        match self.inboxes.get_mut(&(i.appid, i.uid)) {
            Some(inbox) => inbox.log.replay(now, retention, after, budget),
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
            for (_, (appid, uid)) in idle {
                self.inboxes.remove(&(appid, uid));
                let key = StoreKey::Inbox { appid, uid };
                self.store_delete_stream(LogId::Inbox(appid, uid), key);
            }
        }
        // Drawn only for a new inbox: the draws stay deterministic per seed.
        let epoch = match self.inboxes.contains_key(&key) {
            true => 0,
            false => self.random_nonzero(),
        };
        if epoch != 0 {
            self.touch_inbox(key);
        }
        self.inboxes.entry(key).or_insert_with(|| Inbox {
            log: SeqLog::new(epoch),
            acked: 0,
        })
    }
}
