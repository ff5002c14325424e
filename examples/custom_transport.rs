//! Embedding the Sans-IO `Session` in your own run loop, without the
//! ready-made adapters.
//!
//! The "network" here is an in-memory duplex: two `std::sync::mpsc` channels
//! carrying one frame per message (a message transport, so no length prefix),
//! to a `server::Server` state machine running on a thread of its own. The
//! client loop below is the whole contract of a transport adapter:
//!
//! 1. after every input or command, drain `poll_transport` (open/close the
//!    transport), `poll_transmit` (frames to send) and `poll_event`;
//! 2. re-arm the timer from `poll_timeout` on every pass;
//! 3. wait for a frame or the timer, and feed it back with `handle_frame` /
//!    `handle_timeout` (or `handle_disconnected` when the transport breaks).
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
    Event, Reply, RequestId, SendOptions, Session, SessionConfig, TransportAction,
};
use hummer_channel::server::{ConnId, Server, ServerConfig, DEMO_APPID};
use hummer_channel::{Message, Region, Uid};

/// What the client side sends to the server thread.
enum ToServer {
    /// A new link; the server answers on `to_client`.
    Open { link: u64, to_client: Sender<Bytes> },
    /// A frame on a link.
    Frame { link: u64, frame: Bytes },
    /// The client closed a link.
    Closed { link: u64 },
}

/// The server side: a `Server` state machine behind the mpsc "network".
fn run_server(inbox: Receiver<ToServer>) {
    let unix_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let mut server = Server::new(ServerConfig::demo(), Instant::now(), unix_ms);
    let mut conns: HashMap<u64, ConnId> = HashMap::new();
    let mut links: HashMap<ConnId, Sender<Bytes>> = HashMap::new();
    loop {
        // The same pattern as the client: drain, re-arm, wait.
        while let Some(conn) = server.poll_ready() {
            while let Some(frame) = server.poll_transmit(conn) {
                if let Some(link) = links.get(&conn) {
                    let _ = link.send(frame);
                }
            }
        }
        while let Some((conn, _reason)) = server.poll_close() {
            links.remove(&conn); // dropping the sender closes the link
            server.handle_closed(Instant::now(), conn);
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
                    server.handle_closed(now, conn);
                }
            }
            Err(RecvTimeoutError::Timeout) => server.handle_timeout(now),
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// The client's end of one link.
struct Link {
    id: u64,
    from_server: Receiver<Bytes>,
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
    let mut next_link = 0;

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
        // 1. Drain everything the Session has to say. Commands issued while
        //    handling events queue more output: drain until nothing is left.
        let mut progressed = true;
        while progressed {
            progressed = false;
            while let Some(action) = session.poll_transport() {
                progressed = true;
                match action {
                    TransportAction::Connect => {
                        let (to_client, from_server) = mpsc::channel();
                        next_link += 1;
                        let _ = to_server.send(ToServer::Open {
                            link: next_link,
                            to_client,
                        });
                        link = Some(Link {
                            id: next_link,
                            from_server,
                        });
                        println!("transport: link {next_link} opened");
                        session.handle_connected(Instant::now());
                    }
                    TransportAction::Close => {
                        // Flush what is queued, then close (no handle_disconnected).
                        if let Some(l) = link.take() {
                            while let Some(frame) = session.poll_transmit() {
                                let _ = to_server.send(ToServer::Frame { link: l.id, frame });
                            }
                            let _ = to_server.send(ToServer::Closed { link: l.id });
                            println!("transport: link {} closed", l.id);
                        }
                    }
                }
            }
            while let Some(frame) = session.poll_transmit() {
                progressed = true;
                if let Some(l) = &link {
                    let _ = to_server.send(ToServer::Frame { link: l.id, frame });
                }
            }
            while let Some(event) = session.poll_event() {
                progressed = true;
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
                    if let Err(e) = session.handle_frame(Instant::now(), frame) {
                        // The Session asks for Close itself.
                        eprintln!("bad frame: {e}");
                    }
                }
                Err(RecvTimeoutError::Timeout) => session.handle_timeout(Instant::now()),
                Err(RecvTimeoutError::Disconnected) => {
                    // The server closed the link.
                    link = None;
                    session.handle_disconnected(Instant::now());
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
