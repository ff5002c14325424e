//! Embedding the Sans-IO `Session` in your own run loop, without the
//! ready-made adapters.
//!
//! The "network" here is an in-memory duplex: two `std::sync::mpsc` channels
//! carrying one frame per message (a message transport, so no length prefix),
//! to a `server::Server` state machine running on a thread of its own. The
//! client loop below is the whole contract of a transport adapter:
//!
//! 1. after every input or command, drain the Session once with
//!    `Session::drain` into a `client::Sink`: transport actions (open or
//!    close the transport of a `LinkId`), frames to send, events;
//! 2. re-arm the timer from `poll_timeout` on every pass;
//! 3. wait for a frame or the timer, and feed it back with
//!    `handle_frame(now, link, ..)` / `handle_timeout` (or
//!    `handle_disconnected(now, link)` when the transport breaks), naming
//!    the link it came from: input from a transport the Session already
//!    replaced is then ignored by the Session itself.
//!
//! The application logic reacts to events: log in, join a channel, broadcast
//! once, print what comes back, log out.
//!
//! Run it with `cargo run --example custom_transport`.

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hummer_channel::client::{
    self, Event, LinkId, Reply, RequestId, SendOptions, Session, SessionConfig, TransportAction,
};
use hummer_channel::server::{self, ConnId, Server, ServerConfig, DEMO_APPID};
use hummer_channel::{Message, Region, Uid};

/// What the client side sends to the server thread. Links are named by the
/// Session's own `LinkId`s.
enum ToServer {
    /// A new link; the server answers on `to_client`.
    Open {
        link: LinkId,
        to_client: Sender<Bytes>,
    },
    /// A frame on a link.
    Frame { link: LinkId, frame: Bytes },
    /// The client closed a link.
    Closed { link: LinkId },
}

/// The server's side of a drain: frames onto the client links, and the
/// connections the server closes (carried out after the drain).
struct ServerSink<'a> {
    links: &'a HashMap<ConnId, Sender<Bytes>>,
    closed: Vec<ConnId>,
}

impl server::Sink for ServerSink<'_> {
    fn transmit(&mut self, conn: ConnId, frame: Bytes) {
        if let Some(link) = self.links.get(&conn) {
            let _ = link.send(frame);
        }
    }
    fn transport(&mut self, action: server::TransportAction) {
        let server::TransportAction::Close { conn, .. } = action;
        self.closed.push(conn);
    }
}

/// The server side: a `Server` state machine behind the mpsc "network".
fn run_server(inbox: Receiver<ToServer>) {
    let unix_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let mut server = Server::new(ServerConfig::demo(), Instant::now(), unix_ms);
    let mut conns: HashMap<LinkId, ConnId> = HashMap::new();
    let mut links: HashMap<ConnId, Sender<Bytes>> = HashMap::new();
    loop {
        // The same pattern as the client: drain (once), re-arm, wait.
        let mut sink = ServerSink {
            links: &links,
            closed: Vec::new(),
        };
        server.drain(&mut sink);
        for conn in sink.closed {
            links.remove(&conn); // dropping the sender closes the link
            conns.retain(|_, c| *c != conn);
            server.handle_disconnected(Instant::now(), conn);
        }
        let input = match server.poll_timeout() {
            Some(at) => inbox.recv_timeout(at.saturating_duration_since(Instant::now())),
            None => inbox.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        let now = Instant::now();
        match input {
            Ok(ToServer::Open { link, to_client }) => {
                let conn = server.accept(now);
                conns.insert(link, conn);
                links.insert(conn, to_client);
            }
            Ok(ToServer::Frame { link, frame }) => {
                if let Some(&conn) = conns.get(&link) {
                    server.handle_frame(now, conn, frame);
                }
            }
            Ok(ToServer::Closed { link }) => {
                if let Some(conn) = conns.remove(&link) {
                    links.remove(&conn);
                    server.handle_disconnected(now, conn);
                }
            }
            Err(RecvTimeoutError::Timeout) => server.handle_timeout(now),
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// The client's end of one link.
struct Link {
    id: LinkId,
    from_server: Receiver<Bytes>,
}

/// The client's side of a drain: transport actions carried out on the spot
/// (the links opened are told to the Session after the drain, since it is
/// borrowed during it), frames onto the current link, events kept for the
/// application logic.
struct ClientSink<'a> {
    to_server: &'a Sender<ToServer>,
    link: &'a mut Option<Link>,
    opened: Vec<LinkId>,
    events: Vec<Event>,
}

impl client::Sink for ClientSink<'_> {
    fn transport(&mut self, action: TransportAction) {
        match action {
            TransportAction::Connect { link: id } => {
                let (to_client, from_server) = mpsc::channel();
                let _ = self.to_server.send(ToServer::Open {
                    link: id,
                    to_client,
                });
                *self.link = Some(Link { id, from_server });
                self.opened.push(id);
                println!("transport: {id} opened");
            }
            TransportAction::Close { link: id } => {
                // The Session has nothing left to send on it.
                if let Some(l) = self.link.take_if(|l| l.id == id) {
                    let _ = self.to_server.send(ToServer::Closed { link: l.id });
                    println!("transport: {} closed", l.id);
                }
            }
        }
    }
    fn transmit(&mut self, frame: Bytes) {
        if let Some(l) = &self.link {
            let _ = self.to_server.send(ToServer::Frame { link: l.id, frame });
        }
    }
    fn event(&mut self, event: Event) {
        self.events.push(event);
    }
}

/// Where the demo is.
enum Step {
    LoggingIn(RequestId),
    Joining(RequestId),
    Broadcasting(RequestId),
    AwaitingEcho,
    LoggingOut(RequestId),
    Done,
}

fn main() -> ExitCode {
    let (to_server, server_inbox) = mpsc::channel();
    let server = thread::spawn(move || run_server(server_inbox));

    let mut session = Session::new(SessionConfig::new(DEMO_APPID), Instant::now());
    let mut link: Option<Link> = None;

    // The first command: the Session will ask for a transport.
    let id = session
        .login(Instant::now(), Uid(42), None, Some(Region::Cn))
        .expect("login");
    let mut step = Step::LoggingIn(id);
    let channel = session
        .create_channel(Region::Cn, "custom-transport")
        .expect("channel");
    let mut echoed = false;
    let give_up = Instant::now() + Duration::from_secs(10);

    loop {
        // 1. Drain the Session once. A drain creates no output of its own,
        //    but telling the Session a link opened, or issuing commands while
        //    handling events, does: drain again until a drain brings nothing.
        loop {
            let mut sink = ClientSink {
                to_server: &to_server,
                link: &mut link,
                opened: Vec::new(),
                events: Vec::new(),
            };
            session.drain(&mut sink);
            let (opened, events) = (sink.opened, sink.events);
            if opened.is_empty() && events.is_empty() {
                break;
            }
            for id in opened {
                session.handle_connected(Instant::now(), id);
            }
            for event in events {
                let now = Instant::now();
                match event {
                    Event::Completed { request, result } => {
                        println!("completed {request:?}: {result:?}");
                        let result = match result {
                            Ok(reply) => reply,
                            Err(e) => {
                                eprintln!("request failed: {e}");
                                return ExitCode::FAILURE;
                            }
                        };
                        step = match (step, result) {
                            (Step::LoggingIn(id), Reply::Login(_)) if id == request => {
                                Step::Joining(
                                    session
                                        .join_channel(now, channel, Default::default())
                                        .expect("join"),
                                )
                            }
                            (Step::Joining(id), Reply::Done) if id == request => {
                                let message = Message::new("text", "hello from my own run loop");
                                Step::Broadcasting(
                                    session
                                        .send_message_to_channel(
                                            now,
                                            channel,
                                            message,
                                            SendOptions::default(),
                                        )
                                        .expect("send"),
                                )
                            }
                            // The echo may come before or after the reply.
                            (Step::Broadcasting(id), Reply::MessageSent(_)) if id == request => {
                                if echoed {
                                    Step::LoggingOut(session.logout(now).expect("logout"))
                                } else {
                                    Step::AwaitingEcho
                                }
                            }
                            (Step::LoggingOut(id), Reply::Done) if id == request => Step::Done,
                            (step, _) => step,
                        };
                    }
                    Event::ChannelMessage {
                        from_uid, message, ..
                    } => {
                        println!(
                            "channel message from {from_uid}: {}",
                            String::from_utf8_lossy(&message.content)
                        );
                        echoed = true;
                        if matches!(step, Step::AwaitingEcho) {
                            step = Step::LoggingOut(session.logout(now).expect("logout"));
                        }
                    }
                    other => println!("event: {other:?}"),
                }
            }
        }
        if matches!(step, Step::Done) && link.is_none() {
            break;
        }

        // 2. Re-arm the timer from poll_timeout, on every pass.
        let now = Instant::now();
        if now > give_up {
            eprintln!("the demo did not finish in time");
            return ExitCode::FAILURE;
        }
        let wait = session
            .poll_timeout()
            .map_or(Duration::from_millis(100), |at| {
                at.saturating_duration_since(now)
            })
            .min(give_up - now);

        // 3. Wait for a frame or the timer.
        match &link {
            Some(l) => match l.from_server.recv_timeout(wait) {
                Ok(frame) => {
                    if let Err(e) = session.handle_frame(Instant::now(), l.id, frame) {
                        // The Session asks for Close itself.
                        eprintln!("bad frame: {e}");
                    }
                }
                Err(RecvTimeoutError::Timeout) => session.handle_timeout(Instant::now()),
                Err(RecvTimeoutError::Disconnected) => {
                    // The server closed the link.
                    let id = l.id;
                    link = None;
                    session.handle_disconnected(Instant::now(), id);
                }
            },
            None => {
                thread::sleep(wait);
                session.handle_timeout(Instant::now());
            }
        }
    }
    drop(to_server);
    let _ = server.join();
    println!("done");
    ExitCode::SUCCESS
}
