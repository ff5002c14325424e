//! TEMPORARY stand-in for `adapters::server_tcp::ServerHandle` (same API).
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::thread;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use hummer_channel::server::{ConnId, Server, ServerConfig};
use hummer_channel::wire::{write_length_prefixed, FrameDecoder};

enum Input {
    Accepted(TcpStream),
    Frame(ConnId, Bytes),
    Closed(ConnId),
    DropAll,
}

pub struct ServerHandle {
    addr: SocketAddr,
    tx: Sender<Input>,
}

impl ServerHandle {
    pub fn spawn(config: ServerConfig, addr: SocketAddr) -> std::io::Result<ServerHandle> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let (tx, rx) = mpsc::channel();
        let acc = tx.clone();
        thread::spawn(move || {
            for s in listener.incoming() {
                let Ok(s) = s else { return };
                if acc.send(Input::Accepted(s)).is_err() {
                    return;
                }
            }
        });
        let me = tx.clone();
        thread::spawn(move || {
            let unix = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_millis() as u64;
            let mut server = Server::new(config, Instant::now(), unix);
            let mut conns: HashMap<ConnId, TcpStream> = HashMap::new();
            loop {
                while let Some(c) = server.poll_ready() {
                    let mut out = BytesMut::new();
                    while let Some(f) = server.poll_transmit(c) {
                        write_length_prefixed(&f, &mut out);
                    }
                    if let Some(s) = conns.get_mut(&c) {
                        let _ = s.write_all(&out);
                    }
                }
                while let Some((c, _)) = server.poll_close() {
                    if let Some(s) = conns.remove(&c) {
                        let _ = s.shutdown(Shutdown::Both);
                    }
                    server.handle_closed(Instant::now(), c);
                }
                let input = match server.poll_timeout() {
                    Some(at) => rx.recv_timeout(at.saturating_duration_since(Instant::now())),
                    None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
                };
                let now = Instant::now();
                match input {
                    Ok(Input::Accepted(s)) => {
                        let c = server.accept(now);
                        let mut r = s.try_clone().unwrap();
                        conns.insert(c, s);
                        let me = me.clone();
                        thread::spawn(move || {
                            let mut d = FrameDecoder::new(64 * 1024);
                            let mut buf = [0u8; 65536];
                            loop {
                                match r.read(&mut buf) {
                                    Ok(n) if n > 0 => {
                                        d.extend(&buf[..n]);
                                        while let Ok(Some(f)) = d.next_frame() {
                                            let _ = me.send(Input::Frame(c, f));
                                        }
                                    }
                                    _ => {
                                        let _ = me.send(Input::Closed(c));
                                        return;
                                    }
                                }
                            }
                        });
                    }
                    Ok(Input::Frame(c, f)) => server.handle_frame(now, c, f),
                    Ok(Input::Closed(c)) => {
                        if conns.remove(&c).is_some() {
                            server.handle_closed(now, c);
                        }
                    }
                    Ok(Input::DropAll) => {
                        for (c, s) in conns.drain() {
                            let _ = s.shutdown(Shutdown::Both);
                            server.handle_closed(now, c);
                        }
                    }
                    Err(RecvTimeoutError::Timeout) => server.handle_timeout(now),
                    Err(RecvTimeoutError::Disconnected) => return,
                }
            }
        });
        Ok(ServerHandle { addr, tx })
    }
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
    pub fn drop_connections(&self) {
        let _ = self.tx.send(Input::DropAll);
    }
    pub fn shutdown(self) {}
}
