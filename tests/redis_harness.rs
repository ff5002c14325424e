//! The redis-server harness of the Redis store's tests works: start,
//! restart (with and without persistence), kill, a password, cleanup.
#![cfg(feature = "redis")]

mod redis_support;

use std::net::{Ipv4Addr, TcpStream};

use redis_support::{raw_command, Persistence, RedisServer};

#[test]
fn the_harness_starts_restarts_and_kills_a_server() {
    let mut server = RedisServer::start(Persistence::Aof);
    let port = server.port();
    let pid = server.pid().expect("running");
    assert_eq!(raw_command(port, &["SET", "k", "v"]), "+OK\r\n");
    server.restart();
    assert_eq!(server.port(), port);
    assert_ne!(server.pid(), Some(pid));
    assert_eq!(
        raw_command(port, &["GET", "k"]),
        "$1\r\nv\r\n",
        "the AOF kept it"
    );
    server.kill();
    assert_eq!(server.pid(), None);
    assert!(TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err());
    server.restart();
    assert_eq!(raw_command(port, &["GET", "k"]), "$1\r\nv\r\n");

    let mut bare = RedisServer::start(Persistence::None);
    assert_eq!(raw_command(bare.port(), &["SET", "k", "v"]), "+OK\r\n");
    bare.restart();
    assert_eq!(
        raw_command(bare.port(), &["GET", "k"]),
        "$-1\r\n",
        "nothing kept"
    );

    let locked = RedisServer::start_with_password(Persistence::None, "s3cret");
    assert!(raw_command(locked.port(), &["GET", "k"]).starts_with("-NOAUTH"));
    assert!(locked.url().contains(":s3cret@"));
    let dir = locked.dir().to_owned();
    drop(locked);
    assert!(!dir.exists(), "Drop removes the directory");
}
