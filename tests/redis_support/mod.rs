//! A real `redis-server` for tests: its own loopback port and temporary
//! directory, started, stopped, killed and restarted on demand.
//!
//! Use it from a test file with `mod redis_support;` (or
//! `#[path = "redis_support/mod.rs"] mod redis_support;`). It needs the
//! `redis-server` binary on PATH (Debian's package `redis-server`, which
//! `.ci/run` installs).

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Whether the server writes what it is told to disk.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Persistence {
    /// An append-only file, synced on every write (`appendfsync always`):
    /// a restart brings every acknowledged write back.
    Aof,
    /// Nothing on disk: a restart starts empty.
    None,
}

/// A `redis-server` child process on 127.0.0.1.
pub struct RedisServer {
    port: u16,
    dir: PathBuf,
    persistence: Persistence,
    password: Option<String>,
    /// The TLS port, when the server has one (its files are in `dir`).
    tls_port: Option<u16>,
    child: Option<Child>,
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

impl RedisServer {
    /// A server on a free loopback port, answering PING before this
    /// returns (it panics, with the server's log, if not within 10 s).
    pub fn start(persistence: Persistence) -> RedisServer {
        Self::start_with(persistence, None, None)
    }

    /// The same, requiring `password` (`--requirepass`).
    pub fn start_with_password(persistence: Persistence, password: &str) -> RedisServer {
        Self::start_with(persistence, Some(password.to_owned()), None)
    }

    /// The same, with a TLS port too ([`RedisServer::tls_url`]) serving the
    /// certificate chain `chain_pem` with `key_pem` (`ca_pem`: the CA that
    /// signed it; clients need no certificate).
    pub fn start_with_tls(
        persistence: Persistence,
        ca_pem: &str,
        chain_pem: &str,
        key_pem: &str,
    ) -> RedisServer {
        Self::start_with(
            persistence,
            None,
            Some([ca_pem.into(), chain_pem.into(), key_pem.into()]),
        )
    }

    fn start_with(
        persistence: Persistence,
        password: Option<String>,
        tls: Option<[String; 3]>,
    ) -> RedisServer {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir = std::env::temp_dir().join(format!(
            "hummer-redis-{}-{}-{nanos}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("create the server's directory");
        let tls_port = tls.map(|files| {
            for (name, pem) in ["ca.pem", "chain.pem", "key.pem"].iter().zip(files) {
                std::fs::write(dir.join(name), pem).expect("write a TLS file");
            }
            free_port()
        });
        let mut server = RedisServer {
            port: free_port(),
            dir,
            persistence,
            password,
            tls_port,
            child: None,
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new("redis-server");
        cmd.arg("--bind")
            .arg("127.0.0.1")
            .arg("--port")
            .arg(self.port.to_string())
            .arg("--dir")
            .arg(&self.dir)
            .arg("--save")
            .arg("")
            .arg("--appendonly")
            .arg(match self.persistence {
                Persistence::Aof => "yes",
                Persistence::None => "no",
            })
            .arg("--appendfsync")
            .arg("always")
            .arg("--protected-mode")
            .arg("yes")
            .arg("--daemonize")
            .arg("no")
            .arg("--logfile")
            .arg(self.dir.join("redis.log"));
        if let Some(password) = &self.password {
            cmd.arg("--requirepass").arg(password);
        }
        if let Some(tls_port) = self.tls_port {
            cmd.arg("--tls-port")
                .arg(tls_port.to_string())
                .arg("--tls-ca-cert-file")
                .arg(self.dir.join("ca.pem"))
                .arg("--tls-cert-file")
                .arg(self.dir.join("chain.pem"))
                .arg("--tls-key-file")
                .arg(self.dir.join("key.pem"))
                .arg("--tls-auth-clients")
                .arg("no");
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = match cmd.spawn() {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                "redis-server is not on PATH: install the Debian package redis-server; .ci/run does"
            ),
            Err(e) => panic!("cannot run redis-server: {e}"),
        };
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if self.pings() {
                return;
            }
            if let Some(child) = &mut self.child {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!(
                        "redis-server exited ({status}) on port {}:\n{}",
                        self.port,
                        self.log_tail()
                    );
                }
            }
            if Instant::now() > deadline {
                panic!(
                    "redis-server did not answer PING on port {} within 10 s:\n{}",
                    self.port,
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the server answers PING (`+PONG`, or `-NOAUTH` when it
    /// requires a password: it is up either way).
    fn pings(&self) -> bool {
        let Ok(mut tcp) = TcpStream::connect((Ipv4Addr::LOCALHOST, self.port)) else {
            return false;
        };
        let _ = tcp.set_read_timeout(Some(Duration::from_secs(1)));
        if tcp.write_all(b"*1\r\n$4\r\nPING\r\n").is_err() {
            return false;
        }
        let mut reply = [0u8; 64];
        match tcp.read(&mut reply) {
            Ok(n) => reply[..n].starts_with(b"+PONG") || reply[..n].starts_with(b"-NOAUTH"),
            Err(_) => false,
        }
    }

    /// `redis://[:password@]127.0.0.1:PORT/0`.
    pub fn url(&self) -> String {
        match &self.password {
            Some(p) => format!("redis://:{p}@127.0.0.1:{}/0", self.port),
            None => format!("redis://127.0.0.1:{}/0", self.port),
        }
    }

    /// `rediss://localhost:TLS_PORT/0`, for a server started with TLS.
    pub fn tls_url(&self) -> Option<String> {
        self.tls_port
            .map(|port| format!("rediss://localhost:{port}/0"))
    }

    /// Its port (the same across restarts).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its directory (the AOF and `redis.log`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Stops the server with SIGTERM (it syncs its AOF and closes every
    /// connection) and waits for it to exit.
    pub fn stop(&mut self) {
        self.signal("-TERM");
    }

    /// Kills the server with SIGKILL and waits for it to exit.
    pub fn kill(&mut self) {
        self.signal("-KILL");
    }

    fn signal(&mut self, signal: &str) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .arg(signal)
            .arg(child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match child.try_wait() {
                Ok(Some(_)) => return,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return;
                }
            }
        }
    }

    /// Stops the server if it runs and starts it again on the same port
    /// and directory: with [`Persistence::Aof`] its data comes back.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// The last lines of the server's log.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A loopback port nobody listens on now, below Linux's ephemeral range
/// (32768-60999): a port the kernel hands out meanwhile, to a bind to port
/// 0 or an outgoing connection of a test running in parallel, cannot be
/// this one between the check and the server binding it. Ports taken in
/// one test binary do not repeat (a stride prime to the range's size).
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let start = std::process::id().wrapping_mul(2_654_435_761)
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = FIRST + start.wrapping_add(n.wrapping_mul(7_919)) % SPAN;
        let port = u16::try_from(port).expect("below 32768");
        if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return port;
        }
    }
}

/// One RESP command on a fresh connection, the raw reply back (for the
/// harness's own test, without the crate under test).
pub fn raw_command(port: u16, args: &[&str]) -> String {
    let mut tcp = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut out = format!("*{}\r\n", args.len());
    for a in args {
        out.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    tcp.write_all(out.as_bytes()).unwrap();
    let mut reply = [0u8; 512];
    let n = tcp.read(&mut reply).unwrap_or(0);
    String::from_utf8_lossy(&reply[..n]).into_owned()
}
