//! The `hummer-server` binary itself (its flags, the `token` subcommand,
//! its open-file limit) over TCP with raw length-prefixed frames; the runner
//! it wraps is tested in the library's tests/server_tcp*.rs. Every wait is
//! bounded.

#[path = "../../tests/common/tcp.rs"]
mod tcp;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hummer_channel::server::DEMO_APPID;
use hummer_channel::wire::{self, Body};
use tcp::{Client, WAIT};

fn room() -> wire::ChannelKey {
    wire::ChannelKey {
        region: wire::Region::Cn as i32,
        channel_id: "room".into(),
    }
}

fn chat(text: &str) -> Option<wire::ChatMessage> {
    Some(wire::ChatMessage {
        r#type: "text".into(),
        content: Bytes::from(text.to_owned()),
        ..Default::default()
    })
}

/// A message id no other send of this test process uses.
fn next_message_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// The child is killed even when an assertion fails.
struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_binary() -> (Kill, SocketAddr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_hummer-server"))
        .args(["--listen", "127.0.0.1:0", "--log", "warn"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start hummer-server");
    let stdout = child.stdout.take().unwrap();
    let child = Kill(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(addr) = line.strip_prefix("hummer-server listening on ") {
                let _ = tx.send(addr.trim().to_owned());
            }
        }
    });
    let addr = rx
        .recv_timeout(WAIT)
        .expect("the server prints its address")
        .parse()
        .unwrap();
    (child, addr)
}

#[test]
fn binary_serves_p2p_and_broadcast_and_drops_garbage() {
    let (_child, addr) = start_binary();
    let mut a = Client::connect(addr);
    let mut b = Client::connect(addr);
    a.login(1);
    b.login(2);

    // P2P.
    let Body::SendReply(r) = a.req(Body::SendToUser(wire::SendToUserRequest {
        receiver: 2,
        message: chat("hello b"),
        unreliable: false,
        message_id: next_message_id(),
    })) else {
        panic!("no send reply")
    };
    assert!(r.delivered_online);
    assert_eq!(r.seq, 1);
    let push = b.until(|f| matches!(f.body, Body::UserMessage(_)));
    assert!(
        matches!(push.body, Body::UserMessage(m) if m.from_uid == 1 && m.seq == 1
        && m.message.as_ref().unwrap().content == "hello b")
    );

    // Channel broadcast, echoed to the sender.
    for c in [&mut a, &mut b] {
        assert!(matches!(
            c.req(Body::Join(wire::JoinRequest {
                channel: Some(room()),
                ..Default::default()
            })),
            Body::JoinReply(_)
        ));
    }
    a.send(Body::SendToChannel(wire::SendToChannelRequest {
        channel: Some(room()),
        message: chat("to all"),
        unreliable: false,
        message_id: next_message_id(),
    }));
    for c in [&mut a, &mut b] {
        let f = c.until(|f| matches!(f.body, Body::ChannelMessage(_)));
        assert!(matches!(f.body, Body::ChannelMessage(m) if m.from_uid == 1 && m.seq == 1));
    }

    // Garbage: a Close frame, then EOF.
    let mut g = Client::connect(addr);
    g.send_raw(&[0, 0, 0, 5, 0xff, 0xff, 0xff, 0xff, 0xff]);
    let f = g.next().expect("a Close frame before EOF");
    assert!(matches!(f.body, Body::Close(c) if c.code == 2001));
    assert!(g.next().is_none(), "EOF after the Close frame");
    // An oversized length prefix too.
    let mut g2 = Client::connect(addr);
    g2.send_raw(&(1u32 << 30).to_be_bytes());
    assert!(matches!(g2.next().map(|f| f.body), Some(Body::Close(c)) if c.code == 2001));
    assert!(g2.next().is_none());

    // The others carry on.
    assert_eq!(
        a.req(Body::Ping(wire::Ping { nonce: 9 })),
        Body::Pong(wire::Pong { nonce: 9 })
    );
    b.send(Body::SendToChannel(wire::SendToChannelRequest {
        channel: Some(room()),
        message: chat("still here"),
        unreliable: false,
        message_id: next_message_id(),
    }));
    let f = a.until(|f| matches!(f.body, Body::ChannelMessage(_)));
    assert!(matches!(f.body, Body::ChannelMessage(m) if m.from_uid == 2 && m.seq == 2));
}

#[test]
fn binary_token_subcommand_mints_a_token_the_server_accepts() {
    let out = Command::new(env!("CARGO_BIN_EXE_hummer-server"))
        .args([
            "token",
            "--appid",
            "10000",
            "--uid",
            "77",
            "--secret",
            hummer_channel::server::DEMO_SECRET,
            "--ttl-secs",
            "600",
        ])
        .output()
        .expect("run hummer-server token");
    assert!(out.status.success());
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let (_child, addr) = start_binary();
    let mut c = Client::connect(addr);
    let reply = c.req(Body::Login(wire::LoginRequest {
        protocol_version: wire::PROTOCOL_VERSION,
        appid: DEMO_APPID,
        uid: 77,
        token,
        ..Default::default()
    }));
    let Body::LoginReply(r) = reply else {
        panic!("token refused: {reply:?}")
    };
    assert!(!r.is_anonymous);
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert!(r.token_expires_at_ms > now_ms && r.token_expires_at_ms <= now_ms + 601_000);
    // Unknown options are refused with a usage message.
    let bad = Command::new(env!("CARGO_BIN_EXE_hummer-server"))
        .arg("--no-such-flag")
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown option --no-such-flag"));
}

/// CPU time (user + system) of `pid` in clock ticks, from /proc.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

/// With `ulimit -n 64` the binary runs out of descriptors; `accept` fails,
/// backs off without spinning, a logged-in client keeps its quick pongs, and
/// once connections close new ones are served again.
#[test]
fn out_of_descriptors_the_runner_backs_off_and_keeps_serving() {
    if !std::path::Path::new("/proc/self/stat").exists() {
        eprintln!("skipped: needs /proc");
        return;
    }
    let cmd = format!(
        "ulimit -n 64 && exec '{}' --listen 127.0.0.1:0 --log warn",
        env!("CARGO_BIN_EXE_hummer-server")
    );
    let mut child = Command::new("sh")
        .args(["-c", &cmd])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start hummer-server");
    let pid = child.id();
    let (stdout, stderr) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let _child = Kill(child);
    let (addr_tx, addr_rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(a) = line.strip_prefix("hummer-server listening on ") {
                let _ = addr_tx.send(a.trim().to_owned());
            }
        }
    });
    let accept_failed = Arc::new(AtomicBool::new(false));
    {
        let flag = accept_failed.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if line.contains("accept failed") {
                    flag.store(true, Ordering::SeqCst);
                }
            }
        });
    }
    let addr: SocketAddr = addr_rx
        .recv_timeout(WAIT)
        .expect("address")
        .parse()
        .unwrap();
    let mut healthy = Client::connect(addr);
    healthy.login(1);

    // Open links until the server cannot accept any more (64 descriptors,
    // a few taken by stdio, the listener and the poller).
    let mut flood = Vec::new();
    let deadline = Instant::now() + WAIT;
    while !accept_failed.load(Ordering::SeqCst) {
        assert!(Instant::now() < deadline, "accept never failed");
        if flood.len() < 200 {
            flood.push(TcpStream::connect_timeout(&addr, WAIT).expect("the kernel takes it"));
        } else {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    // The accept loop waits between tries: the process is mostly idle.
    let t0 = cpu_ticks(pid);
    let started = Instant::now();
    let mut worst = Duration::ZERO;
    for nonce in 0..20 {
        let t = Instant::now();
        healthy.ping(nonce);
        worst = worst.max(t.elapsed());
        std::thread::sleep(Duration::from_millis(50));
    }
    let ticks = cpu_ticks(pid) - t0;
    let wall = started.elapsed();
    eprintln!("out of descriptors: worst pong {worst:?}, {ticks} CPU ticks in {wall:?}");
    assert!(
        worst < Duration::from_millis(500),
        "pongs slowed to {worst:?}"
    );
    // Clock ticks are 1/100 s on Linux: a spinning accept loop would burn
    // about one per 10 ms of wall time.
    let tick_s = 0.01;
    assert!(
        (ticks as f64) * tick_s < wall.as_secs_f64() / 2.0,
        "{ticks} ticks in {wall:?}: the accept loop spins"
    );

    // The flood goes: descriptors come back and new links are served (the
    // backoff is at most 1 s).
    drop(flood);
    let t = Instant::now();
    let mut late = Client::connect(addr);
    late.login(2);
    eprintln!("login after the flood: {:?}", t.elapsed());
    assert!(t.elapsed() < Duration::from_secs(5));
    healthy.ping(99);
}

/// Starts the binary with `args` (after `--log warn`); its stdout lines as
/// they come.
fn start_with(args: &[&str]) -> (Kill, mpsc::Receiver<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_hummer-server"))
        .args(["--log", "warn"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start hummer-server");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    (Kill(child), rx)
}

/// The rest of the first line that starts with `prefix`.
fn line_after(lines: &mpsc::Receiver<String>, prefix: &str) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = lines
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no line starting with {prefix:?}"));
        if let Some(rest) = line.strip_prefix(prefix) {
            return rest.trim().to_owned();
        }
    }
}

/// One HTTP/1.1 GET; the whole response.
fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read as _, Write as _};
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[test]
fn binary_serves_websocket_clients_and_the_built_in_demo_page() {
    use hummer_channel::adapters::blocking::Client;
    use hummer_channel::adapters::Endpoint;
    use hummer_channel::client::SessionConfig;
    use hummer_channel::Uid;

    let (_child, lines) = start_with(&["--listen", "127.0.0.1:0", "--ws-listen", "127.0.0.1:0"]);
    let ws = line_after(&lines, "hummer-server websocket on ");
    let page = line_after(&lines, "demo page: ");
    let host = page
        .strip_prefix("http://")
        .and_then(|p| p.strip_suffix('/'))
        .expect("http://ADDR/")
        .to_owned();
    assert_eq!(ws, format!("ws://{host}/v1/ws"));

    // The built-in page and the JavaScript client it loads.
    let index = http_get(&host, "/");
    assert!(index.starts_with("HTTP/1.1 200 OK"), "{index}");
    assert!(index.contains("Content-Type: text/html"), "{index}");
    let js = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../js");
    for (path, file) in [
        ("/", "demo/index.html"),
        ("/demo.js", "demo/demo.js"),
        ("/hummer.js", "dist/hummer.js"),
    ] {
        let body = std::fs::read_to_string(js.join(file)).expect("the demo files are in js/");
        let got = http_get(&host, path);
        assert!(got.starts_with("HTTP/1.1 200 OK"), "{path}: {got}");
        assert!(got.ends_with(&body), "{path} is {file}, built in");
    }

    let client = Client::connect_to(
        Endpoint::parse(&ws).unwrap(),
        SessionConfig::new(DEMO_APPID),
    )
    .unwrap();
    let login = client.login(Uid(5), None, None).unwrap();
    assert!(login.is_anonymous);
    assert_eq!(client.get_instance_info().unwrap().uid, Uid(5));
    client.close();
}

#[test]
fn binary_serves_tls_and_wss_with_the_given_certificate() {
    use hummer_channel::adapters::blocking::Client;
    use hummer_channel::adapters::Endpoint;
    use hummer_channel::client::SessionConfig;
    use hummer_channel::Uid;
    use rcgen::{CertificateParams, KeyPair};

    let dir = tempfile::tempdir().unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".into()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let (cert_file, key_file) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_file, cert.pem()).unwrap();
    std::fs::write(&key_file, key.serialize_pem()).unwrap();
    let (_child, lines) = start_with(&[
        "--listen",
        "127.0.0.1:0",
        "--ws-listen",
        "127.0.0.1:0",
        "--tls-cert",
        cert_file.to_str().unwrap(),
        "--tls-key",
        key_file.to_str().unwrap(),
    ]);
    let tcp = line_after(&lines, "hummer-server listening on ");
    let tcp = tcp.strip_suffix(" (TLS: tls://)").expect("says it is TLS");
    let wss = line_after(&lines, "hummer-server websocket on ");
    assert!(wss.starts_with("wss://"), "{wss}");
    let page = line_after(&lines, "demo page: ");
    assert!(page.starts_with("https://"), "{page}");

    let tcp_port = tcp.rsplit_once(':').unwrap().1;
    let wss = wss.replace("127.0.0.1", "localhost");
    for url in [format!("tls://localhost:{tcp_port}"), wss] {
        let endpoint = Endpoint::parse(&url).unwrap().with_ca_pem(cert.pem());
        let client = Client::connect_to(endpoint, SessionConfig::new(DEMO_APPID)).unwrap();
        client.login(Uid(6), None, None).unwrap();
        assert_eq!(client.get_instance_info().unwrap().uid, Uid(6), "{url}");
        client.close();
    }
    // Plain TCP on a TLS listener gets nowhere.
    let mut raw = TcpStream::connect(tcp).unwrap();
    raw.set_read_timeout(Some(WAIT)).unwrap();
    use std::io::{Read as _, Write as _};
    let _ = raw.write_all(&[0, 0, 0, 4, 1, 2, 3, 4]);
    let mut buf = [0u8; 64];
    let n = raw.read(&mut buf).unwrap_or(0);
    assert!(
        n == 0 || buf[0] == 0x15,
        "a TLS alert or a close, not frames: {:?}",
        &buf[..n]
    );
}

#[test]
fn binary_refuses_bad_transport_flags_with_a_clear_message() {
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_hummer-server"))
            .args(args)
            .output()
            .expect("run hummer-server");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = run(&["--tls-cert", "cert.pem"]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("--tls-cert and --tls-key go together"),
        "{err}"
    );
    let (code, err) = run(&[
        "--tls-cert",
        "/nonexistent/c.pem",
        "--tls-key",
        "/nonexistent/k.pem",
    ]);
    assert_eq!(code, Some(2));
    assert!(err.contains("/nonexistent/c.pem"), "{err}");
    let (code, err) = run(&["--ws-listen", "nowhere"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("--ws-listen"), "{err}");
    let (code, err) = run(&["--ws-allowed-origins", " , "]);
    assert_eq!(code, Some(2));
    assert!(err.contains("no origin given"), "{err}");
    let (code, err) = run(&["--web-root", "/nonexistent/dir"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("is not a directory"), "{err}");
}
