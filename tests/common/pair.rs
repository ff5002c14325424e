//! One Server and N Sessions wired in memory with zero latency: each
//! Session's link maps to a server connection (`LinkId` <-> `ConnId`), and
//! a pump drains every machine with `Session::drain` / `Server::drain`,
//! feeding each drain to the other side, until nothing moves.

use std::time::{Duration, Instant};

use bytes::Bytes;
use hummer_channel::client::{
    Event, LinkId, Reply, RequestId, Session, SessionConfig, TransportAction,
};
use hummer_channel::server::{self, ConnId, Server, ServerConfig, DEMO_APPID};
use hummer_channel::{CommandError, Region, ServiceError, Uid};

use super::clock::{self, T0_UNIX_MS};
use super::sinks::{ServerOut, SessionOut};

/// One Session of a pair, with its link and the events it reported.
pub struct Peer {
    pub s: Session,
    /// The open link and the server connection it maps to.
    pub link: Option<(LinkId, ConnId)>,
    pub events: Vec<Event>,
    /// Frames the Session transmitted (all links).
    pub sent: usize,
    /// Links the Session dialed.
    pub dials: usize,
}

pub struct Pair {
    pub server: Server,
    pub now: Instant,
    pub peers: Vec<Peer>,
}

impl Pair {
    pub fn new(config: ServerConfig) -> Pair {
        let now = Instant::now();
        Pair {
            server: Server::new(config, now, T0_UNIX_MS),
            now,
            peers: Vec::new(),
        }
    }

    pub fn demo() -> Pair {
        Pair::new(ServerConfig::demo())
    }

    /// A new Session (not logged in); its index.
    pub fn add(&mut self, config: SessionConfig) -> usize {
        self.peers.push(Peer {
            s: Session::new(config, self.now),
            link: None,
            events: Vec::new(),
            sent: 0,
            dials: 0,
        });
        self.peers.len() - 1
    }

    /// A new Session of the demo app logged in as `uid` (its events cleared).
    pub fn logged_in(&mut self, uid: u64) -> usize {
        let i = self.add(SessionConfig::new(DEMO_APPID));
        let r = self.call(i, |s, now| s.login(now, Uid(uid), None, Some(Region::Cn)));
        assert!(matches!(r, Ok(Reply::Login(_))), "login of {uid}: {r:?}");
        self.peers[i].events.clear();
        i
    }

    pub fn session(&mut self, i: usize) -> &mut Session {
        &mut self.peers[i].s
    }

    /// Drains every machine, feeding each drain to the other side, until
    /// nothing moves.
    pub fn pump(&mut self) {
        for _ in 0..10_000 {
            let mut moved = false;
            for i in 0..self.peers.len() {
                moved |= self.pump_session(i);
            }
            moved |= self.pump_server();
            if !moved {
                return;
            }
        }
        panic!("the pair never settles");
    }

    /// One drain of Session `i`; whether it output anything for the server.
    fn pump_session(&mut self, i: usize) -> bool {
        let now = self.now;
        let mut out = SessionOut::default();
        self.peers[i].s.drain(&mut out);
        let moved = !out.actions.is_empty() || !out.frames.is_empty();
        let peer = &mut self.peers[i];
        peer.events.extend(out.events);
        for action in out.actions {
            match action {
                TransportAction::Connect { link } => {
                    peer.dials += 1;
                    if let Some((_, old)) = peer.link.take() {
                        self.server.handle_disconnected(now, old);
                    }
                    let conn = self.server.accept(now);
                    peer.link = Some((link, conn));
                    peer.s.handle_connected(now, link);
                }
                TransportAction::Close { link } => {
                    if let Some((l, conn)) = peer.link {
                        if l == link {
                            peer.link = None;
                            self.server.handle_disconnected(now, conn);
                        }
                    }
                }
            }
        }
        // Frames were queued for the link current when they were taken.
        if let Some((_, conn)) = peer.link {
            for frame in out.frames {
                peer.sent += 1;
                self.server.handle_frame(now, conn, frame);
            }
        }
        moved
    }

    /// One drain of the server; whether it output anything.
    fn pump_server(&mut self) -> bool {
        let now = self.now;
        let mut out = ServerOut::default();
        self.server.drain(&mut out);
        let moved = !out.frames.is_empty() || !out.closes.is_empty();
        for (conn, frame) in out.frames {
            if let Some(p) = self
                .peers
                .iter_mut()
                .find(|p| p.link.map(|l| l.1) == Some(conn))
            {
                let (link, _) = p.link.unwrap();
                p.s.handle_frame(now, link, frame)
                    .expect("the server sends valid frames");
            }
        }
        for (conn, _) in out.closes {
            self.server.handle_disconnected(now, conn);
            if let Some(p) = self
                .peers
                .iter_mut()
                .find(|p| p.link.map(|l| l.1) == Some(conn))
            {
                let (link, _) = p.link.take().unwrap();
                p.s.handle_disconnected(now, link);
            }
        }
        moved
    }

    /// Runs for `d`, the clock jumping from deadline to deadline.
    pub fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        self.pump();
        let mut steps = 0;
        loop {
            let next = clock::earliest(
                self.peers
                    .iter()
                    .map(|p| p.s.poll_timeout())
                    .chain([self.server.poll_timeout()]),
            );
            if !clock::jump(&mut self.now, next, end) {
                break;
            }
            self.fire();
            steps += 1;
            assert!(steps < clock::MAX_STEPS, "a deadline never passes");
        }
        self.fire();
    }

    /// Fires every machine's timers due now, and pumps.
    fn fire(&mut self) {
        let now = self.now;
        if self.server.poll_timeout().is_some_and(|t| t <= now) {
            self.server.handle_timeout(now);
        }
        for p in &mut self.peers {
            if p.s.poll_timeout().is_some_and(|t| t <= now) {
                p.s.handle_timeout(now);
            }
        }
        self.pump();
    }

    /// Runs a command of Session `i` and pumps.
    pub fn cmd<T>(
        &mut self,
        i: usize,
        f: impl FnOnce(&mut Session, Instant) -> Result<T, CommandError>,
    ) -> Result<T, CommandError> {
        let r = f(&mut self.peers[i].s, self.now);
        self.pump();
        r
    }

    /// Runs a command of Session `i` and the pair until its completion (at
    /// most 30 s of the fake clock).
    pub fn call(
        &mut self,
        i: usize,
        f: impl FnOnce(&mut Session, Instant) -> Result<RequestId, CommandError>,
    ) -> Result<Reply, ServiceError> {
        let id = self.cmd(i, f).expect("command accepted");
        for _ in 0..300 {
            if let Some(r) = self.take_completion(i, id) {
                return r;
            }
            self.run_for(Duration::from_millis(100));
        }
        panic!("no completion for {id:?}");
    }

    /// The completion of `id` among Session `i`'s events (removed).
    pub fn take_completion(
        &mut self,
        i: usize,
        id: RequestId,
    ) -> Option<Result<Reply, ServiceError>> {
        let events = &mut self.peers[i].events;
        let pos = events
            .iter()
            .position(|e| matches!(e, Event::Completed { request, .. } if *request == id))?;
        match events.remove(pos) {
            Event::Completed { result, .. } => Some(result),
            _ => unreachable!(),
        }
    }

    pub fn take_events(&mut self, i: usize) -> Vec<Event> {
        std::mem::take(&mut self.peers[i].events)
    }

    /// Session `i`'s link breaks: both ends are told.
    pub fn drop_link(&mut self, i: usize) {
        if let Some((link, conn)) = self.peers[i].link.take() {
            self.server.handle_disconnected(self.now, conn);
            self.peers[i].s.handle_disconnected(self.now, link);
        }
        self.pump();
    }

    /// The server connection of Session `i`'s open link.
    pub fn conn(&self, i: usize) -> Option<ConnId> {
        self.peers[i].link.map(|l| l.1)
    }
}
