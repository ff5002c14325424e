#![cfg(feature = "server-tcp")]
//! One client streaming frames as fast as it can: does the single-threaded
//! runner still serve another client?
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use hummer_channel::adapters::server_tcp::ServerHandle;
use hummer_channel::server::{ServerConfig, DEMO_APPID};
use hummer_channel::wire::{self, encode_frame, write_length_prefixed, Body, Frame, FrameDecoder};

#[test]
fn a_client_flooding_the_server_does_not_starve_the_others() {
    let h = ServerHandle::spawn(ServerConfig::demo(), "127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = h.local_addr();
    // A buffer of 1 MiB of Ping frames (never reads its socket).
    let ping = encode_frame(&Frame {
        request_id: 0,
        body: Some(Body::Ping(wire::Ping { nonce: 1 })),
    });
    let mut blob = BytesMut::new();
    while blob.len() < 1 << 20 {
        write_length_prefixed(&ping, &mut blob);
    }
    let blob = blob.freeze();
    let stop = Arc::new(AtomicBool::new(false));
    let mut flooders = Vec::new();
    for _ in 0..2 {
        let (stop, blob) = (stop.clone(), blob.clone());
        flooders.push(std::thread::spawn(move || {
            let mut s = TcpStream::connect(addr).unwrap();
            let mut sent = 0usize;
            while !stop.load(Ordering::Relaxed) {
                match s.write(&blob) {
                    Ok(n) => sent += n,
                    Err(_) => break,
                }
            }
            sent
        }));
    }
    std::thread::sleep(Duration::from_millis(300));
    // Another client logs in; how long until its reply?
    let t = Instant::now();
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let login = encode_frame(&Frame {
        request_id: 1,
        body: Some(Body::Login(wire::LoginRequest {
            protocol_version: wire::PROTOCOL_VERSION,
            appid: DEMO_APPID,
            uid: 5,
            ..Default::default()
        })),
    });
    let mut buf = BytesMut::new();
    write_length_prefixed(&login, &mut buf);
    c.write_all(&buf).unwrap();
    let mut dec = FrameDecoder::new(64 * 1024);
    let mut chunk = [0u8; 4096];
    let got = loop {
        match c.read(&mut chunk) {
            Ok(0) | Err(_) => break false,
            Ok(n) => {
                dec.extend(&chunk[..n]);
                if dec.next_frame().unwrap().is_some() {
                    break true;
                }
            }
        }
    };
    let waited = t.elapsed();
    stop.store(true, Ordering::Relaxed);
    let sent: Vec<usize> = flooders.into_iter().map(|f| f.join().unwrap()).collect();
    eprintln!("login reply: {got} after {waited:?}; flooders sent {sent:?} bytes");
    assert!(
        got && waited < Duration::from_secs(2),
        "login reply {got} after {waited:?}"
    );
}
