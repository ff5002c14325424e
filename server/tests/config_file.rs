//! The `hummer-server` binary's config file (`--config`, `HUMMER_CONFIG`)
//! and `check-config`, driven as an operator would: files written to a
//! temporary directory, the built binary run on them. Every wait is bounded.

#[path = "../../tests/common/tcp.rs"]
mod tcp;

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use hummer_channel::server::{mint_token, DEMO_APPID};
use hummer_channel::wire::{self, Body};
use tcp::{Client, WAIT};

const SECRET: &str = "config-file-test-secret-of-40-bytes-long!";
const API_KEY: &str = "config-file-test-api-key-of-40-bytes-long";

/// The child is killed even when an assertion fails.
struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The binary, with no HUMMER_* variable of this process's environment.
fn binary() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_hummer-server"));
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("HUMMER_") {
            c.env_remove(k);
        }
    }
    c
}

/// `text` written as `name` in `dir`; its path.
fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// Runs a command that should end by itself: its exit code, stdout and
/// stderr (killed, with code `None`, if it is still running after WAIT).
fn finish(mut c: Command) -> (Option<i32>, String, String) {
    let mut child = c
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run hummer-server");
    let (mut out, mut err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + WAIT;
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    (code, out.join().unwrap(), err.join().unwrap())
}

/// A running server: its stdout and stderr lines as they come.
struct Running {
    _child: Kill,
    out: mpsc::Receiver<String>,
    /// Read so that the child never blocks on a full pipe.
    _err: mpsc::Receiver<String>,
}

fn lines(r: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    rx
}

fn start(mut c: Command) -> Running {
    let mut child = c
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start hummer-server");
    let (out, err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    Running {
        _child: Kill(child),
        out: lines(out),
        _err: lines(err),
    }
}

/// The rest of the first line of `rx` that starts with (stdout) or contains
/// (stderr, after the log's prefix) `what`.
fn line_with(rx: &mpsc::Receiver<String>, what: &str) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no line with {what:?}"));
        if let Some(i) = line.find(what) {
            return line[i + what.len()..].trim().to_owned();
        }
    }
}

impl Running {
    fn addr(&self) -> SocketAddr {
        line_with(&self.out, "hummer-server listening on ")
            .parse()
            .unwrap()
    }
}

fn login(addr: SocketAddr, appid: u32, uid: u64, token: &str) -> Body {
    let mut c = Client::connect(addr);
    c.req(Body::Login(wire::LoginRequest {
        protocol_version: wire::PROTOCOL_VERSION,
        appid,
        uid,
        token: token.to_owned(),
        ..Default::default()
    }))
}

fn token(secret: &str, appid: u32, uid: u64) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    mint_token(secret, appid, uid, now + 600)
}

fn app_file(listen: &str) -> String {
    format!(
        "# a test config\nlisten = \"{listen}\"\n\n[[app]]\nappid = 4242\nsecret = \"{SECRET}\"\n\
         api_keys = [\"{API_KEY}\"]\n"
    )
}

#[test]
fn a_file_with_listen_and_an_app_serves_that_app_to_a_token_login() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "hummer.toml", &app_file("127.0.0.1:0"));
    let mut c = binary();
    c.args(["--log", "warn", "--config"]).arg(&file);
    let server = start(c);
    let addr = server.addr();
    assert_eq!(
        line_with(&server.out, "app "),
        "4242 (appid mode: false)",
        "the file's app, not the demo app"
    );

    let Body::LoginReply(r) = login(addr, 4242, 7, &token(SECRET, 4242, 7)) else {
        panic!("the file's app refused its token")
    };
    assert!(!r.is_anonymous);
    // A token signed with another secret, or a login to the demo app (the
    // file's apps replace it), is refused.
    let other = "another-secret-of-at-least-32-bytes-long";
    assert!(matches!(
        login(addr, 4242, 8, &token(other, 4242, 8)),
        Body::Error(e) if e.code == 2002
    ));
    assert!(matches!(
        login(addr, DEMO_APPID, 9, ""),
        Body::Error(e) if e.code == 2018
    ));
}

#[test]
fn a_flag_and_a_variable_override_the_files_listen() {
    let dir = tempfile::tempdir().unwrap();
    // An address no interface here has: serving the file as written fails.
    let file = write(dir.path(), "hummer.toml", &app_file("192.0.2.1:9"));
    let mut c = binary();
    c.args(["--log", "warn", "--config"]).arg(&file);
    let (code, _, err) = finish(c);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("cannot listen on 192.0.2.1:9"), "{err}");

    // The flag wins over the file (and over the variable).
    let mut c = binary();
    c.env("HUMMER_LISTEN", "192.0.2.1:10")
        .args(["--log", "warn", "--listen", "127.0.0.1:0", "--config"])
        .arg(&file);
    let server = start(c);
    let addr = server.addr();
    assert!(addr.ip().is_loopback());
    assert!(matches!(
        login(addr, 4242, 1, &token(SECRET, 4242, 1)),
        Body::LoginReply(_)
    ));

    // The variable wins over the file, which HUMMER_CONFIG names.
    let mut c = binary();
    c.env("HUMMER_CONFIG", &file)
        .env("HUMMER_LISTEN", "127.0.0.1:0")
        .env("HUMMER_LOG", "warn");
    let server = start(c);
    let addr = server.addr();
    assert!(addr.ip().is_loopback());
    assert!(matches!(
        login(addr, 4242, 2, &token(SECRET, 4242, 2)),
        Body::LoginReply(_)
    ));
}

#[test]
fn command_line_apps_replace_the_files_apps() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "hummer.toml", &app_file("127.0.0.1:0"));
    let other = "the-command-line-apps-secret-32-bytes-or-more";
    let mut c = binary();
    c.env("HUMMER_APPS", format!("77:{other}"))
        .args(["--log", "warn", "--config"])
        .arg(&file);
    let server = start(c);
    let addr = server.addr();
    assert!(matches!(
        login(addr, 77, 1, &token(other, 77, 1)),
        Body::LoginReply(_)
    ));
    assert!(matches!(
        login(addr, 4242, 1, &token(SECRET, 4242, 1)),
        Body::Error(e) if e.code == 2018
    ));
}

/// `serve --config` and `check-config` on `text`: both exit 2 and print
/// the same first line, which is returned.
fn refused(text: &str) -> (PathBuf, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "bad.toml", text);
    let mut c = binary();
    c.args(["--listen", "127.0.0.1:0", "--config"]).arg(&file);
    let (code, out, serve_err) = finish(c);
    assert_eq!(code, Some(2), "serve: {out}{serve_err}");
    let mut c = binary();
    c.arg("check-config").arg(&file);
    let (code, out, err) = finish(c);
    assert_eq!(code, Some(2), "check-config: {out}{err}");
    assert!(out.is_empty(), "{out}");
    assert_eq!(serve_err, err, "serve and check-config say the same");
    let first = err.lines().next().unwrap_or_default().to_owned();
    (file, first)
}

#[test]
fn an_unknown_key_is_refused_with_its_line_and_column() {
    let (file, err) =
        refused("listen = \"127.0.0.1:0\"\n\n[limits]\nmax_members = 5\n  max_memebrs = 6\n");
    let at = format!("{}:5:3: ", file.display());
    assert!(err.starts_with(&at), "{err}");
    assert!(err.contains("unknown field `max_memebrs`"), "{err}");
    let (file, err) = refused(&format!("{}logg = \"info\"\n", app_file("127.0.0.1:0")));
    assert!(
        err.starts_with(&format!("{}:8:1: unknown field `logg`", file.display())),
        "{err}"
    );
}

#[test]
fn a_value_of_the_wrong_type_is_refused_with_its_position() {
    let (file, err) = refused("threads = 2\nlisten = 7300\n");
    assert!(
        err.starts_with(&format!(
            "{}:2:10: invalid type: integer `7300`",
            file.display()
        )),
        "{err}"
    );
    let (file, err) = refused("[limits]\nmax_connections = -1\n");
    assert!(
        err.starts_with(&format!("{}:2:19: invalid value", file.display())),
        "{err}"
    );
    // Valid TOML, but a rule broken: the same kind of message.
    let (file, err) = refused("[limits]\nlisten_backlog = 0\n");
    assert_eq!(
        err,
        format!(
            "{}:2:18: limits.listen_backlog: must be at least 1",
            file.display()
        )
    );
}

#[test]
fn a_weak_secret_or_api_key_is_refused_naming_the_app() {
    let (file, err) = refused("[[app]]\nappid = 31\nsecret = \"short\"\n");
    assert!(
        err.starts_with(&format!("{}:3:10: app.secret: ", file.display())),
        "{err}"
    );
    assert!(err.contains("the secret of app 31 is 5 bytes"), "{err}");
    assert!(!err.contains("\"short\""), "the secret is not shown: {err}");
    let (file, err) = refused(&format!(
        "[[app]]\nappid = 32\nsecret = \"{SECRET}\"\napi_keys = [\"{API_KEY}\", \"weak-key\"]\n"
    ));
    assert!(err.starts_with(&format!("{}:4:", file.display())), "{err}");
    assert!(err.contains("an API key of app 32 is 8 bytes"), "{err}");
    assert!(!err.contains("weak-key") && !err.contains(SECRET), "{err}");
}

#[test]
fn check_config_summarises_a_good_file_without_its_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "hummer.toml",
        &format!(
            "{}\n[[app]]\nappid = 5\nappid_mode = true\n",
            app_file("127.0.0.1:7390").replace(
                "# a test config\n",
                "ws_listen = \"127.0.0.1:7391\"\napi_listen = \"127.0.0.1:7392\"\n"
            )
        ),
    );
    // The environment is not read by check-config.
    let mut c = binary();
    c.env("HUMMER_LISTEN", "not an address")
        .arg("check-config")
        .arg(&file);
    let (code, out, err) = finish(c);
    assert_eq!(code, Some(0), "{err}");
    assert!(err.is_empty(), "{err}");
    assert_eq!(out.lines().count(), 1, "one paragraph: {out}");
    assert!(
        out.starts_with(&format!("{}: ok: ", file.display())),
        "{out}"
    );
    for part in [
        "listens on 127.0.0.1:7390",
        "WebSocket and pages on 127.0.0.1:7391",
        "server API on 127.0.0.1:7392",
        "4242 (token secret set, 1 API key, appid mode off",
        "5 (no token secret, no API key, appid mode on",
    ] {
        assert!(out.contains(part), "{part:?} in {out}");
    }
    assert!(!out.contains(SECRET) && !out.contains(API_KEY), "{out}");
}

#[test]
fn check_config_accepts_the_example_file() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("hummer.example.toml");
    let mut c = binary();
    c.arg("check-config").arg(&example);
    let (code, out, err) = finish(c);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains(": ok: "), "{out}");
    // And the documentation shows that same file.
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/server.md"))
            .unwrap();
    let text = std::fs::read_to_string(&example).unwrap();
    assert!(
        doc.contains(&format!("```toml\n{text}```")),
        "docs/server.md shows server/hummer.example.toml as it is"
    );
}

#[test]
fn relative_tls_paths_are_taken_from_the_files_directory() {
    use rcgen::{CertificateParams, KeyPair};
    let dir = tempfile::tempdir().unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".into()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    std::fs::create_dir(dir.path().join("tls")).unwrap();
    write(dir.path(), "tls/cert.pem", &cert.pem());
    write(dir.path(), "tls/key.pem", &key.serialize_pem());
    let file = write(
        dir.path(),
        "hummer.toml",
        "listen = \"127.0.0.1:0\"\ntls_cert = \"tls/cert.pem\"\ntls_key = \"tls/key.pem\"\n",
    );
    // Run from elsewhere: the paths are not the working directory's.
    let mut c = binary();
    c.current_dir("/")
        .args(["--log", "warn", "--config"])
        .arg(&file);
    let server = start(c);
    let l = line_with(&server.out, "hummer-server listening on ");
    assert!(l.ends_with("(TLS: tls://)"), "{l}");
    // A missing file is named with the key that set it.
    let bad = write(
        dir.path(),
        "bad.toml",
        "tls_cert = \"tls/nope.pem\"\ntls_key = \"tls/key.pem\"\n",
    );
    let mut c = binary();
    c.current_dir("/").arg("check-config").arg(&bad);
    let (code, _, err) = finish(c);
    assert_eq!(code, Some(2));
    assert!(
        err.starts_with(&format!("{}:1:12: tls_cert: TLS: ", bad.display())),
        "{err}"
    );
    assert!(
        err.contains(&dir.path().join("tls/nope.pem").display().to_string()),
        "{err}"
    );
}

#[test]
fn the_api_listener_serves_health_metrics_and_keyed_stats() {
    let key = "config-file-test-api-key-given-by-flag-0123";
    let mut c = binary();
    c.args(["--listen", "127.0.0.1:0", "--api-listen", "127.0.0.1:0"])
        .env("HUMMER_API_KEYS", format!("{DEMO_APPID}:{key}"));
    let server = start(c);
    server.addr();
    let rest = line_with(&server.out, "hummer-server API on http://");
    let (addr, tail) = rest.split_once(' ').unwrap();
    assert_eq!(tail, "(metrics: /metrics, dashboard: /dashboard)");
    let api: SocketAddr = addr.parse().unwrap();
    let get = |path: &str, auth: Option<&str>| -> String {
        use std::io::Write;
        let mut s = std::net::TcpStream::connect(api).unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        let auth = auth.map_or(String::new(), |k| format!("Authorization: apikey {k}\r\n"));
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n{auth}\r\n"
        )
        .unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    };
    assert!(get("/healthz", None).starts_with("HTTP/1.1 200 OK"));
    let metrics = get("/metrics", None);
    assert!(
        metrics.contains("\nhummer_connections{transport=\"tcp\"} "),
        "{metrics}"
    );
    assert!(get("/v1/stats", Some(key)).starts_with("HTTP/1.1 200 OK"));
    assert!(get("/v1/stats", None).starts_with("HTTP/1.1 401"));

    let mut c = binary();
    c.env("HUMMER_API_LISTEN", "somewhere");
    let (code, _, err) = finish(c);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("HUMMER_API_LISTEN: \"somewhere\" is not an address"),
        "{err}"
    );
    // A key for an app that is not served.
    let mut c = binary();
    c.args(["--api-key", &format!("4:{key}")]);
    let (code, _, err) = finish(c);
    assert_eq!(code, Some(2));
    assert!(err.contains("--api-key: app 4 is not served"), "{err}");
}
