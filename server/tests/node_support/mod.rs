//! What the tests of `hummer-server` processes share: a node started and
//! killed by the test, free addresses, and a blocking client's waits.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use hummer_channel::adapters::blocking::Client;
use hummer_channel::client::{
    ChannelHandle, ConnectionState, Event, SendOptions, SessionConfig, Timing,
};
use hummer_channel::server::DEMO_APPID;
use hummer_channel::{Message, Region, Uid};

pub const WAIT: Duration = Duration::from_secs(15);

/// A server process, killed (SIGKILL) when dropped, and its stdout.
pub struct Node(pub Child, pub mpsc::Receiver<String>);

impl Node {
    /// `hummer-server --engine URL` listening on `addr`, once it says so.
    pub fn start(addr: SocketAddr, engine: &str) -> Node {
        let node = Node::spawn(addr, engine, &[]);
        node.line("hummer-server listening on ");
        node
    }

    /// `hummer-server --engine URL ARGS…` on `addr`, as it starts (with
    /// `--log warn` unless `args` set a level). Its stdout and stderr
    /// lines come in one channel.
    pub fn spawn(addr: SocketAddr, engine: &str, args: &[&str]) -> Node {
        let listen = addr.to_string();
        let mut command = Command::new(env!("CARGO_BIN_EXE_hummer-server"));
        if !args.contains(&"--log") {
            command.args(["--log", "warn"]);
        }
        let mut child = command
            .args(["--listen", &listen, "--engine", engine])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start hummer-server");
        let (tx, rx) = mpsc::channel();
        let out: Box<dyn Read + Send> = Box::new(child.stdout.take().unwrap());
        let err: Box<dyn Read + Send> = Box::new(child.stderr.take().unwrap());
        for stream in [out, err] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    let _ = tx.send(line);
                }
            });
        }
        Node(child, rx)
    }

    /// Waits for a line starting with `prefix`; the line.
    pub fn line(&self, prefix: &str) -> String {
        self.line_where(prefix, |l| l.starts_with(prefix))
    }

    /// Waits for a line holding `part` (a log line); the line.
    pub fn line_containing(&self, part: &str) -> String {
        self.line_where(part, |l| l.contains(part))
    }

    /// The same, waiting up to `within` (a first node in an empty store
    /// watches the lease for a whole lease period before it takes it).
    pub fn line_containing_within(&self, part: &str, within: Duration) -> String {
        self.line_where_within(part, within, |l| l.contains(part))
    }

    /// Waits for a line holding any of `parts`; the line.
    pub fn line_containing_any(&self, parts: &[&str]) -> String {
        self.line_where(&parts.join(" | "), |l| parts.iter().any(|p| l.contains(p)))
    }

    fn line_where(&self, what: &str, found: impl Fn(&str) -> bool) -> String {
        self.line_where_within(what, WAIT, found)
    }

    fn line_where_within(
        &self,
        what: &str,
        within: Duration,
        found: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.1.recv_timeout(left) {
                Ok(line) if found(&line) => return line,
                Ok(_) => continue,
                Err(_) => panic!("no line with {what:?} within {within:?}"),
            }
        }
    }

    /// How the process ended, once it does (bounded: `what` it was
    /// expected to do fails the test past [`WAIT`]).
    pub fn exit_status(&mut self, what: &str) -> std::process::ExitStatus {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.0.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "the node did not {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill(mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A loopback address nobody listens on now (see `free_port`).
pub fn free_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], crate::redis_support::free_port()))
}

pub fn config() -> SessionConfig {
    let mut config = SessionConfig::new(DEMO_APPID);
    config.timing = {
        let mut t = Timing::default();
        t.reconnect_min = Duration::from_millis(20);
        t.reconnect_max = Duration::from_millis(200);
        t
    };
    config
}

/// Logged in as `uid` and a member of "room".
pub fn member(addr: SocketAddr, uid: u64) -> (Client, ChannelHandle) {
    member_on(&[addr], uid)
}

/// The same, with the addresses of several nodes to fail over between.
pub fn member_on(addrs: &[SocketAddr], uid: u64) -> (Client, ChannelHandle) {
    let c = Client::connect_any(addrs.to_vec(), config()).unwrap();
    c.login(Uid(uid), None, Some(Region::Cn)).unwrap();
    let room = c.create_channel(Region::Cn, "room").unwrap();
    c.join_channel(room, Default::default()).unwrap();
    (c, room)
}

/// After a restart: `a` and `b` resumed, `a`'s next message ("m2")
/// reaches `b` as the next one (no loss), and uid 3's offline message
/// "p1" waits for it on `addr`.
pub fn assert_resumed_with_nothing_lost(
    a: &Client,
    b: &Client,
    room: ChannelHandle,
    addr: SocketAddr,
) {
    reconnected(a);
    reconnected(b);
    send_retrying(a, room, "m2");
    assert_eq!(text(&next_message(b)), "m2");
    let c = Client::connect(addr, config()).unwrap();
    c.login(Uid(3), None, None).unwrap();
    assert_eq!(
        text(&next_message(&c)),
        "p1",
        "the offline message was lost"
    );
}

/// The next event that is not about the connection or the membership
/// (bounded); a loss fails the test.
pub fn next_message(c: &Client) -> Event {
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match c.recv_event(left) {
            Some(e @ (Event::ChannelMessage { .. } | Event::MessageFromUser { .. })) => return e,
            Some(Event::MessagesLost { .. }) => panic!("messages were lost"),
            Some(_) => continue,
            None => panic!("no message within {WAIT:?}"),
        }
    }
}

pub fn text(e: &Event) -> String {
    match e {
        Event::ChannelMessage { message, .. } | Event::MessageFromUser { message, .. } => {
            String::from_utf8_lossy(&message.content).into_owned()
        }
        other => panic!("{other:?}"),
    }
}

/// Waits until `c` is logged in again after a lost link.
pub fn reconnected(c: &Client) {
    let deadline = Instant::now() + WAIT;
    while c.connection_state().0 != ConnectionState::Connected {
        assert!(Instant::now() < deadline, "{:?}", c.connection_state());
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Sends `text` to the channel, retrying while the link is down.
pub fn send_retrying(c: &Client, room: ChannelHandle, text: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        match c.send_message_to_channel(
            room,
            Message::new("t", text.to_owned()),
            SendOptions::default(),
        ) {
            Ok(_) => return,
            Err(e) => {
                assert!(Instant::now() < deadline, "{e}");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// A cluster's flags: links on a free port, a short lease and grace.
pub const CLUSTER: &[&str] = &[
    "--cluster-listen",
    "127.0.0.1:0",
    "--lease-secs",
    "1",
    "--presence-grace-secs",
    "2",
    "--log",
    "info",
];

/// Sends "1" to `n` to the channel from another thread, one every 10 ms,
/// retrying what fails (a retry after an unknown outcome may deliver
/// twice): the numbers it retried.
pub fn stream_to_channel(
    sender: Client,
    room: ChannelHandle,
    n: u32,
) -> std::thread::JoinHandle<std::collections::BTreeSet<u32>> {
    std::thread::spawn(move || {
        let mut retried = std::collections::BTreeSet::new();
        for i in 1..=n {
            let deadline = Instant::now() + WAIT;
            while let Err(e) = sender.send_message_to_channel(
                room,
                Message::new("t", i.to_string()),
                SendOptions::default(),
            ) {
                assert!(Instant::now() < deadline, "{i}: {e}");
                retried.insert(i);
                std::thread::sleep(Duration::from_millis(20));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        retried
    })
}

/// Checks that `seen` holds 1 to `n` in order, each first seen once, and
/// that only numbers the sender `retried` came twice: how many did.
pub fn assert_once_in_order(
    seen: &[u32],
    n: u32,
    retried: &std::collections::BTreeSet<u32>,
) -> usize {
    let mut first_seen = Vec::new();
    let mut dups = Vec::new();
    for i in seen {
        if first_seen.contains(i) {
            dups.push(*i);
        } else {
            first_seen.push(*i);
        }
    }
    assert_eq!(
        first_seen,
        (1..=n).collect::<Vec<_>>(),
        "lost or out of order"
    );
    assert!(
        dups.iter().all(|d| retried.contains(d)),
        "delivered twice without a retry: {dups:?} (retried {retried:?})"
    );
    dups.len()
}

/// A cluster's CA (made by rcgen), signing node certificates for
/// `localhost` and 127.0.0.1.
pub struct TestCa {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    /// The CA's certificate (PEM).
    pub pem: String,
}

impl TestCa {
    pub fn new() -> TestCa {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        // A name of its own: another CA is another issuer.
        static MADE: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = MADE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        params.distinguished_name.push(
            rcgen::DnType::CommonName,
            format!("test cluster CA {}-{n}", std::process::id()),
        );
        let cert = params.self_signed(&key).unwrap();
        TestCa {
            issuer: Issuer::new(params, key),
            pem: cert.pem(),
        }
    }

    /// A node's certificate and key (PEM), for `localhost` and 127.0.0.1,
    /// good as a server's and as a client's.
    pub fn node(&self) -> (String, String) {
        use rcgen::{CertificateParams, ExtendedKeyUsagePurpose, KeyPair};
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// The `--cluster-tls-*` flags of a node with a certificate of this
    /// CA that trusts `trusted` (a CA's PEM), its files in `dir` named
    /// after `name`.
    pub fn node_flags(&self, dir: &std::path::Path, name: &str, trusted: &str) -> Vec<String> {
        let (cert, key) = self.node();
        let files = [
            (format!("{name}.pem"), cert),
            (format!("{name}.key"), key),
            (format!("{name}-ca.pem"), trusted.to_owned()),
        ];
        let mut flags = Vec::new();
        for ((file, text), flag) in files.into_iter().zip([
            "--cluster-tls-cert",
            "--cluster-tls-key",
            "--cluster-tls-ca",
        ]) {
            let path = dir.join(file);
            std::fs::write(&path, text).unwrap();
            flags.push(flag.to_owned());
            flags.push(path.to_str().unwrap().to_owned());
        }
        flags
    }
}

/// [`CLUSTER`] and `extra`, as `Node::spawn` takes them.
pub fn with_cluster(extra: &[String]) -> Vec<&str> {
    CLUSTER
        .iter()
        .copied()
        .chain(extra.iter().map(String::as_str))
        .collect()
}
