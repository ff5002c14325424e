//! Instances (logins) and their presence: login and resume, lost links and
//! the grace period, logout and kick, and the instance-level requests.

use std::collections::BTreeSet;
use std::time::Instant;

use std::net::IpAddr;

use super::auth::verify_token;
use super::hooks::HookEventKind;
use super::hub::{Hub, Outcome, Timer};
use super::message::TokenCheck;
use super::rate::{RateKind, RateLimiter};
use super::store::StoreKey;
use super::{add, checked_region, CloseReason, ConnId};
use crate::error::{ErrorCode, ServiceError};
use crate::types::Region;
use crate::wire::{self, Body};

/// One logged-in client. It outlives its connection by the grace period.
#[derive(Debug)]
pub(crate) struct Instance {
    pub appid: u32,
    pub uid: u64,
    /// The connection it is attached to; `None` while its link is lost.
    pub conn: Option<ConnId>,
    /// When its link was lost (grace runs from here).
    pub lost_at: Option<Instant>,
    pub region: Option<Region>,
    pub is_anonymous: bool,
    /// When its token expires (unix seconds); `None`: it never does.
    pub token_exp: Option<u64>,
    /// The channels it is a member of, by number.
    pub channels: BTreeSet<u32>,
    pub rate: RateLimiter,
    /// The keys of its channels kept by other shards.
    pub keys: std::collections::BTreeMap<u32, wire::ChannelKey>,
    /// The other shards its requests went to (bit per shard): they are
    /// told when it goes.
    pub shard_mask: u64,
}

impl Hub {
    /// A login on `conn`, its token checked by the gateway (`token`).
    pub(super) fn login(
        &mut self,
        conn: ConnId,
        req: wire::LoginRequest,
        token: TokenCheck,
        peer: Option<IpAddr>,
    ) -> Outcome {
        if self.link_instance(conn).is_some() {
            return Err(ServiceError::new(
                ErrorCode::ALREADY_LOGGED_IN,
                "already logged in on this connection",
            ));
        }
        self.login_rate_check(peer)?;
        let app = self
            .config
            .app(req.appid)
            .cloned()
            .ok_or_else(|| ServiceError::new(ErrorCode::APPID_UNAVAILABLE, "unknown appid"))?;
        self.config.limits.check_uid(req.uid)?;
        let region = match req.region {
            0 => None,
            v => Some(checked_region(v)?),
        };
        let grant = token?;
        self.ban_check(req.appid, req.uid)?;
        let (is_anonymous, exp) = (grant.is_anonymous, grant.expires_at_s);
        let key = (req.appid, req.uid);

        // Take over the instance named by `resume` if it is still alive.
        let resumed = req.resume.as_ref().and_then(|r| {
            let i = self.instances.get(&r.instance_id)?;
            (i.appid == req.appid && i.uid == req.uid).then_some(r.instance_id)
        });
        if let Some(id) = resumed {
            // Still attached to an older connection we have not seen die yet.
            if let Some(old) = self.instances.get(&id).and_then(|i| i.conn) {
                if old != conn {
                    self.close_conn(old, CloseReason::Replaced);
                }
            }
        } else {
            let live = self.users.get(&key).map_or(0, Vec::len);
            if live >= self.config.max_instances_per_uid.max(1) {
                let oldest_lost = self.users.get(&key).and_then(|ids| {
                    ids.iter()
                        .copied()
                        .find(|i| self.instances.get(i).is_some_and(|x| x.conn.is_none()))
                });
                match oldest_lost {
                    Some(i) => self.remove_instance(i),
                    None if !app.kick_older_logins => {
                        return Err(ServiceError::new(
                            ErrorCode::TOO_MANY_INSTANCES,
                            "too many live logins of this uid",
                        ))
                    }
                    None => {}
                }
            }
        }
        if app.kick_older_logins {
            let others: Vec<u64> = self
                .users
                .get(&key)
                .map(|ids| {
                    ids.iter()
                        .copied()
                        .filter(|&i| Some(i) != resumed)
                        .collect()
                })
                .unwrap_or_default();
            for other in others {
                if let Some(c) = self.instances.get(&other).and_then(|i| i.conn) {
                    self.close_conn(c, CloseReason::Kicked);
                }
                self.remove_instance(other);
            }
        }

        let id = match resumed {
            Some(id) => {
                if let Some(i) = self.instances.get_mut(&id) {
                    i.conn = Some(conn);
                    i.lost_at = None;
                    i.is_anonymous = is_anonymous;
                    i.token_exp = exp;
                    if region.is_some() {
                        i.region = region;
                    }
                }
                self.touch_instance(id);
                id
            }
            None => {
                let mut id = self.random_nonzero();
                while self.instances.contains_key(&id) {
                    id = self.random_nonzero();
                }
                self.instances.insert(
                    id,
                    Instance {
                        appid: req.appid,
                        uid: req.uid,
                        conn: Some(conn),
                        lost_at: None,
                        region,
                        is_anonymous,
                        token_exp: exp,
                        channels: BTreeSet::new(),
                        rate: RateLimiter::default(),
                        keys: std::collections::BTreeMap::new(),
                        shard_mask: 0,
                    },
                );
                let ids = self.users.entry(key).or_default();
                ids.push(id);
                let first = ids.len() == 1;
                // Marked before the event, which waits for it to be stored.
                self.touch_instances_of(key);
                if first {
                    self.hook(req.appid, HookEventKind::UserOnline { uid: req.uid });
                }
                id
            }
        };
        self.attach(conn, id, req.uid);
        log!(
            info,
            "{conn} logged in: uid {} instance {id}{}",
            req.uid,
            if resumed.is_some() { " (resumed)" } else { "" }
        );
        self.schedule_token_timers(id, exp);

        // Replays share one budget: the P2P stream's first, then each kept
        // channel's, all queued right after the reply and before any live
        // push.
        let mut budget = self.replay_budget(Some(conn));
        let (p2p_epoch, mut p2p) = self.p2p_resume_point(key, req.resume.as_ref(), budget);
        budget = budget.saturating_sub(p2p.bytes());
        let mut frames = p2p.take_frames();
        let channels = match (resumed, req.resume) {
            (Some(id), Some(r)) => {
                self.resume_channels(conn, id, r.channels, &mut budget, &mut frames)
            }
            _ => Vec::new(),
        };
        let ms = |d: std::time::Duration| u32::try_from(d.as_millis()).unwrap_or(u32::MAX);
        let reply = wire::LoginReply {
            instance_id: id,
            token_expires_at_ms: exp.map_or(0, |e| e.saturating_mul(1000)),
            server_time_ms: self.unix_ms(),
            server_epoch: self.server_epoch(),
            p2p_seq: p2p.seq(),
            p2p_gap: p2p.gap(),
            is_anonymous,
            resumed: resumed.is_some(),
            p2p_replay_truncated_at: p2p.truncated_at(),
            p2p_epoch,
            // A client that pings this often is never idle: at most a third
            // of the idle timeout, whatever was configured.
            ping_interval_ms: ms(self.config.ping_interval.min(self.config.idle_timeout / 3)),
            idle_timeout_ms: ms(self.config.idle_timeout),
            channels,
        };
        if let Some(gap) = &reply.p2p_gap {
            log!(
                info,
                "{conn}: p2p messages {}..{} lost (0: open-ended)",
                gap.from,
                gap.to
            );
        }
        Ok((Body::LoginReply(reply), frames))
    }

    /// A resumed instance's memberships become the channels the client
    /// still holds (`cursors`): the others are left (with notices), and each
    /// kept one replays what follows its cursor into `frames`.
    fn resume_channels(
        &mut self,
        conn: ConnId,
        inst: u64,
        cursors: Vec<wire::ChannelCursor>,
        budget: &mut usize,
        frames: &mut Vec<bytes::Bytes>,
    ) -> Vec<wire::ResumedChannel> {
        let Some(i) = self.instances.get(&inst) else {
            return Vec::new();
        };
        let (appid, uid, mut member_of) = (i.appid, i.uid, i.channels.clone());
        let mask = i.shard_mask;
        let mut kept: Vec<wire::ResumedChannel> = Vec::new();
        let mut remote = super::cross::RemoteResume::default();
        for (idx, cursor) in cursors.into_iter().enumerate() {
            let Some(key) = cursor.channel else { continue };
            let Ok(region) = checked_region(key.region) else {
                continue;
            };
            if self.shards > 1 {
                // Another shard's channel: that shard decides (it knows of
                // joins whose report is still on its way here).
                let shard = super::channel_shard(appid, key.region, &key.channel_id, self.shards);
                if shard != self.shard {
                    remote.cursor(shard, idx, key, (cursor.epoch, cursor.seq));
                    continue;
                }
            }
            let index_key = (appid, region, key.channel_id.clone());
            let Some(&num) = self.channel_index.get(&index_key) else {
                continue;
            };
            // Taken out as it is kept: what is left of it at the end is
            // left, and a channel listed twice is kept once.
            if !member_of.remove(&num) {
                continue;
            }
            let since = self
                .channels
                .get(&num)
                .and_then(|ch| ch.since.get(&inst).copied())
                .unwrap_or(0);
            let at = (cursor.epoch, cursor.seq);
            let (state, mut replay) = self.rejoin_state(num, at, since, Some(*budget));
            *budget = budget.saturating_sub(replay.bytes());
            frames.extend(replay.take_frames());
            remote.local.push(idx);
            kept.push(wire::ResumedChannel {
                channel: Some(key),
                state: Some(state),
            });
        }
        for num in member_of {
            let Some(i) = self.instances.get_mut(&inst) else {
                break;
            };
            // Another shard's are left by that shard.
            if !i.keys.contains_key(&num) {
                i.channels.remove(&num);
                self.remove_member(num, uid, inst);
            }
        }
        remote.ask_all(mask, self.shard);
        if !remote.is_empty() {
            self.resume_remote(conn, inst, remote, &mut kept, *budget);
        }
        kept
    }

    /// The instance's link is lost: it stays for the grace period.
    pub(super) fn lose_link(&mut self, inst: u64) {
        log!(
            debug,
            "instance {inst} lost its link: kept for the grace period"
        );
        let now = self.now();
        if let Some(i) = self.instances.get_mut(&inst) {
            i.conn = None;
            i.lost_at = Some(now);
            self.timers
                .insert((add(now, self.config.presence_grace), Timer::Grace(inst)));
        }
    }

    pub(super) fn grace_check(&mut self, now: Instant, inst: u64) {
        let grace = self.config.presence_grace;
        let expired = self
            .instances
            .get(&inst)
            .is_some_and(|i| i.conn.is_none() && i.lost_at.is_some_and(|t| add(t, grace) <= now));
        if expired {
            log!(
                debug,
                "instance {inst} removed: no resume within the grace period"
            );
            self.note_departures(inst);
            self.remove_instance_as(inst, true);
        }
    }

    /// The instance is dropped for a lost link: each of its channels
    /// remembers where its uid's membership began, so that a rejoin of the
    /// uid (a new instance) may replay what it missed, and nothing older.
    fn note_departures(&mut self, inst: u64) {
        let now = self.now();
        let Some(i) = self.instances.get(&inst) else {
            return;
        };
        let max = self.config.max_channel_members;
        for num in &i.channels {
            let Some(ch) = self.channels.get_mut(num) else {
                continue;
            };
            let Some(&since) = ch.since.get(&inst) else {
                continue;
            };
            if ch.departed.len() < max || ch.departed.contains_key(&i.uid) {
                let e = ch.departed.entry(i.uid).or_insert((since, now));
                // (Stored with the member's removal that follows.)
                *e = (e.0.min(since), now);
            }
        }
    }

    /// Forgets an instance at once: it leaves every channel (notices go out).
    pub(super) fn remove_instance(&mut self, inst: u64) {
        self.remove_instance_as(inst, false);
    }

    /// [`Hub::remove_instance`]; `depart`: for a lost link (the channels
    /// of other shards note the departure, as `note_departures` does here).
    pub(super) fn remove_instance_as(&mut self, inst: u64, depart: bool) {
        let Some(i) = self.instances.remove(&inst) else {
            return;
        };
        self.store_delete(StoreKey::Instance {
            appid: i.appid,
            uid: i.uid,
            instance: inst,
        });
        if i.shard_mask != 0 {
            self.drop_remote(inst, i.uid, i.shard_mask, depart);
        }
        if !self.resuming.is_empty() {
            if let Some(c) = i.conn {
                self.abandon_resume(c);
            }
        }
        let key = (i.appid, i.uid);
        if let Some(ids) = self.users.get_mut(&key) {
            ids.retain(|&x| x != inst);
            // The others' places in the login order moved.
            self.touch_instances_of(key);
            if self.users.get(&key).is_some_and(Vec::is_empty) {
                self.users.remove(&key);
                self.hook(key.0, HookEventKind::UserOffline { uid: key.1 });
            }
        }
        if let Some(c) = i.conn {
            self.detach(c, inst);
        }
        for ch in i.channels {
            if !i.keys.contains_key(&ch) {
                self.remove_member(ch, i.uid, inst);
            }
        }
    }

    pub(super) fn logout(&mut self, conn: ConnId, inst: u64) -> Outcome {
        self.remove_instance(inst);
        self.detach(conn, inst);
        Ok((Body::Ok(wire::Empty {}), Vec::new()))
    }

    pub(super) fn refresh_token(&mut self, inst: u64, token: &str) -> Outcome {
        let now_s = self.unix_ms() / 1000;
        let i = self.instance(inst)?;
        let (appid, uid) = (i.appid, i.uid);
        let secret = self.config.app(appid).and_then(|a| a.secret.clone());
        if token.is_empty() {
            return Err(ServiceError::new(ErrorCode::INVALID_TOKEN, "empty token"));
        }
        // A refused token changes nothing: the old expiry still holds.
        let exp = verify_token(secret.as_deref(), token, appid, uid, now_s)?;
        if let Some(i) = self.instances.get_mut(&inst) {
            i.is_anonymous = false;
            i.token_exp = exp;
        }
        self.touch_instance(inst);
        self.schedule_token_timers(inst, exp);
        // The new expiry goes back so the client re-arms its warning.
        let reply = wire::RefreshTokenReply {
            token_expires_at_ms: exp.map_or(0, |e| e.saturating_mul(1000)),
            server_time_ms: self.unix_ms(),
        };
        Ok((Body::RefreshTokenReply(reply), Vec::new()))
    }

    /// 4003 past `rate_limits.logins_per_address` logins from the link's
    /// address (links of unknown address are not counted).
    fn login_rate_check(&mut self, peer: Option<IpAddr>) -> Result<(), ServiceError> {
        let Some(peer) = peer else {
            return Ok(());
        };
        let (now, limit) = (self.now(), self.config.rate_limits.logins_per_address);
        if self
            .login_rates
            .entry(peer)
            .or_default()
            .try_take(now, limit, 1)
        {
            return Ok(());
        }
        self.stats.note_rate_limited("logins_per_address");
        Err(ServiceError::new(
            ErrorCode::OPERATION_TOO_OFTEN,
            "too many logins from this address: slow down",
        ))
    }

    /// The warning (`TokenWillExpirePush`, `token_warning` before `exp`) and
    /// the deadline (`Close{2003}`, `token_grace` after it) of a token.
    /// Timers of an older token find another expiry and do nothing.
    fn schedule_token_timers(&mut self, inst: u64, exp: Option<u64>) {
        let Some(exp) = exp else { return };
        let at = self.clock.instant_of_unix_ms(exp.saturating_mul(1000));
        let warn = at
            .checked_sub(self.config.token_warning)
            .unwrap_or(self.now())
            .max(self.now());
        self.timers.insert((warn, Timer::TokenWarning(inst, exp)));
        let deadline = add(at, self.config.token_grace);
        self.timers
            .insert((deadline, Timer::TokenDeadline(inst, exp)));
    }

    /// A token timer fired: warn the client, or close its link when the
    /// token it logged in with (or refreshed to) is still `exp`.
    pub(super) fn token_timer(&mut self, inst: u64, exp: u64, deadline: bool) {
        let Some(i) = self.instances.get(&inst) else {
            return;
        };
        let Some(conn) = i.conn.filter(|_| i.token_exp == Some(exp)) else {
            return;
        };
        if deadline {
            return self.close_conn(conn, CloseReason::TokenExpired);
        }
        let push = wire::TokenWillExpirePush {
            token_expires_at_ms: exp.saturating_mul(1000),
            server_time_ms: self.unix_ms(),
        };
        self.reply(conn, 0, Body::TokenWillExpire(push));
    }

    /// 2003 for any request but a refresh or a logout once the instance's
    /// token has expired (it has `token_grace` to refresh before its link
    /// is closed).
    pub(super) fn token_check(&self, inst: u64, body: &Body) -> Result<(), ServiceError> {
        if matches!(body, Body::RefreshToken(_) | Body::Logout(_)) {
            return Ok(());
        }
        let expired = self
            .instances
            .get(&inst)
            .and_then(|i| i.token_exp)
            .is_some_and(|exp| exp.saturating_mul(1000) <= self.unix_ms());
        if expired {
            return Err(ServiceError::new(
                ErrorCode::EXPIRED_TOKEN,
                "the token has expired: refresh it",
            ));
        }
        Ok(())
    }

    pub(super) fn set_user_region(&mut self, inst: u64, region: i32) -> Outcome {
        let region = checked_region(region)?;
        if let Some(i) = self.instances.get_mut(&inst) {
            i.region = Some(region);
            self.touch_instance(inst);
        }
        Ok((Body::Ok(wire::Empty {}), Vec::new()))
    }

    pub(super) fn instance_info(&mut self, inst: u64) -> Outcome {
        self.rate_take(inst, RateKind::Query, 1)?;
        let i = self.instance(inst)?;
        let channels = i
            .channels
            .iter()
            .filter_map(|n| match self.channels.get(n) {
                Some(ch) => Some(crate::types::ChannelKey::new(ch.region, ch.id.clone()).to_wire()),
                None => i.keys.get(n).cloned(),
            })
            .collect();
        Ok((
            Body::InstanceInfo(wire::InstanceInfoReply {
                appid: i.appid,
                uid: i.uid,
                instance_id: inst,
                is_anonymous: i.is_anonymous,
                region: i.region.map_or(0, Region::to_wire),
                channels,
            }),
            Vec::new(),
        ))
    }

    pub(super) fn query_online(&mut self, inst: u64, uids: &[u64]) -> Outcome {
        self.config.limits.check_uid_query(uids)?;
        self.rate_take(inst, RateKind::Query, 1)?;
        let appid = self.instance(inst)?.appid;
        let status = uids
            .iter()
            .map(|&u| (u, self.users.contains_key(&(appid, u))))
            .collect();
        Ok((
            Body::OnlineStatus(wire::OnlineStatusReply { status }),
            Vec::new(),
        ))
    }

    pub(super) fn instance(&self, inst: u64) -> Result<&Instance, ServiceError> {
        self.instances
            .get(&inst)
            .ok_or_else(|| ServiceError::new(ErrorCode::UNAUTHORIZED, "not logged in"))
    }

    /// 4003 when the instance's own send limit has no room (nothing is
    /// counted: see [`Hub::rate_check`]).
    pub(super) fn send_room(&mut self, inst: u64) -> Result<(), ServiceError> {
        let (now, limit, window) = (
            self.now(),
            self.config.rate_limit_sends,
            self.config.rate_limit_window,
        );
        let i = self
            .instances
            .get_mut(&inst)
            .ok_or_else(|| ServiceError::new(ErrorCode::UNAUTHORIZED, "not logged in"))?;
        if !i.rate.has_room(now, limit, window) {
            self.stats.note_rate_limited("instance_sends");
            return Err(ServiceError::new(
                ErrorCode::OPERATION_TOO_OFTEN,
                "too many sends from this instance: slow down",
            ));
        }
        Ok(())
    }

    /// Counts one send against the instance's rate limit (4003 past it).
    pub(super) fn rate_check(&mut self, inst: u64) -> Result<(), ServiceError> {
        self.send_room(inst)?;
        // Both limits are checked before either counts the send: a refused
        // send uses up neither.
        self.rate_take(inst, RateKind::Send, 1)?;
        let (now, limit, window) = (
            self.now(),
            self.config.rate_limit_sends,
            self.config.rate_limit_window,
        );
        if let Some(i) = self.instances.get_mut(&inst) {
            i.rate.allow(now, limit, window);
        }
        Ok(())
    }

    /// Takes `cost` from the uid's `kind` limit (4003 when spent).
    pub(super) fn rate_take(
        &mut self,
        inst: u64,
        kind: RateKind,
        cost: u64,
    ) -> Result<(), ServiceError> {
        let (now, limit) = (self.now(), self.rate_limit(kind));
        let i = self.instance(inst)?;
        let bucket = self
            .uid_rates
            .entry((i.appid, i.uid))
            .or_default()
            .bucket(kind);
        if bucket.try_take(now, limit, cost) {
            return Ok(());
        }
        Err(self.rate_refused(kind))
    }

    /// 4003 when the uid's `kind` limit is spent; for costs known only
    /// after the work (see [`Hub::rate_charge`]).
    pub(super) fn rate_ready(&mut self, inst: u64, kind: RateKind) -> Result<(), ServiceError> {
        let (now, limit) = (self.now(), self.rate_limit(kind));
        let i = self.instance(inst)?;
        let ready = self
            .uid_rates
            .get(&(i.appid, i.uid))
            .is_none_or(|r| r.peek(kind).can_take(now, limit));
        if ready {
            return Ok(());
        }
        Err(self.rate_refused(kind))
    }

    /// Charges `cost` to the uid's `kind` limit after the work was done.
    pub(super) fn rate_charge(&mut self, inst: u64, kind: RateKind, cost: u64) {
        let (now, limit) = (self.now(), self.rate_limit(kind));
        if let Some(i) = self.instances.get(&inst) {
            let key = (i.appid, i.uid);
            self.uid_rates
                .entry(key)
                .or_default()
                .bucket(kind)
                .charge(now, limit, cost);
        }
    }

    pub(super) fn rate_limit(&self, kind: RateKind) -> super::RateLimit {
        let l = &self.config.rate_limits;
        match kind {
            RateKind::Send => l.sends,
            RateKind::AttributeWrite => l.attribute_writes,
            RateKind::Query => l.queries,
            RateKind::Membership => l.memberships,
            RateKind::FetchBytes => l.fetch_bytes,
        }
    }
}

impl Hub {
    /// The 4003 of a spent per-uid limit, counted.
    fn rate_refused(&mut self, kind: RateKind) -> ServiceError {
        let (path, what) = match kind {
            RateKind::Send => ("sends", "sends"),
            RateKind::AttributeWrite => ("attribute_writes", "attribute writes"),
            RateKind::Query => ("queries", "queries"),
            RateKind::Membership => ("memberships", "joins and leaves"),
            RateKind::FetchBytes => ("fetch_bytes", "fetched bytes"),
        };
        self.stats.note_rate_limited(path);
        ServiceError::new(
            ErrorCode::OPERATION_TOO_OFTEN,
            format!("too many {what} from this user: slow down"),
        )
    }
}
