//! `hummer-server`: the reference Hummer Channel server on TCP.
//!
//! ```text
//! hummer-server [serve] [--listen ADDR] [--app APPID:SECRET]... [--appid-mode]
//!               [--kick-older-logins] [--max-members N] [--presence-grace-secs N]
//!               [--idle-timeout-secs N] [--max-queued-bytes N] [--seed N] [--log LEVEL]
//!               [--max-connections N] [--max-connections-per-ip N] [--listen-backlog N]
//!               [--threads N] [--ws-listen ADDR] [--ws-allowed-origins LIST]
//!               [--web-root DIR] [--tls-cert PEM --tls-key PEM]
//! hummer-server token --appid A --uid U --secret S [--ttl-secs 3600]
//! ```
//!
//! Every serve flag has an environment equivalent (HUMMER_LISTEN, HUMMER_APPS
//! as comma-separated APPID:SECRET, HUMMER_APPID_MODE, HUMMER_KICK_OLDER_LOGINS,
//! HUMMER_MAX_MEMBERS, HUMMER_PRESENCE_GRACE_SECS, HUMMER_IDLE_TIMEOUT_SECS,
//! HUMMER_MAX_QUEUED_BYTES, HUMMER_SEED, HUMMER_LOG, HUMMER_MAX_CONNECTIONS,
//! HUMMER_MAX_CONNECTIONS_PER_IP, HUMMER_LISTEN_BACKLOG, HUMMER_THREADS,
//! HUMMER_WS_LISTEN, HUMMER_WS_ALLOWED_ORIGINS, HUMMER_WEB_ROOT,
//! HUMMER_TLS_CERT, HUMMER_TLS_KEY); flags win. With none, it serves the demo
//! app on 127.0.0.1:7300.
//!
//! With `--ws-listen`, the same address serves WebSocket clients on
//! `/v1/ws` and the demo page (built into the binary: `js/demo/` and the
//! JavaScript client's bundle `js/dist/hummer.js`) on `/`.
//!
//! At start it raises its soft open-file limit to the hard limit (each
//! connection is a descriptor) and logs both. App secrets (`--app`, `token
//! --secret`) must be at least 32 bytes: a short HS256 key can be guessed
//! offline from any token, and then any uid can be forged.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hummer_channel::adapters::server_tcp::{
    bind, serve_on, Listeners, Page, RunnerConfig, ServerTls, WebSocketOptions,
};
use hummer_channel::server::{
    mint_token, AppConfig, RateLimit, ServerConfig, DEMO_APPID, DEMO_SECRET,
};

const USAGE: &str = "\
usage:
  hummer-server [serve] [options]     run the server (defaults: 127.0.0.1:7300, demo app)
  hummer-server token --appid A --uid U --secret S [--ttl-secs 3600]
                                      print a login token (JWT HS256)

serve options (environment equivalent in brackets):
  --listen ADDR              address to listen on [HUMMER_LISTEN] (default 127.0.0.1:7300)
  --app APPID:SECRET         serve this app, tokens signed with SECRET; repeatable
                             [HUMMER_APPS=A:S,A:S] (default: the demo app 10000)
  --appid-mode               also accept logins without a token for --app apps [HUMMER_APPID_MODE=1]
  --kick-older-logins        a new login of a uid closes its other instances [HUMMER_KICK_OLDER_LOGINS=1]
  --max-members N            distinct uids per channel [HUMMER_MAX_MEMBERS] (default 100000)
  --presence-grace-secs N    how long a lost link stays present [HUMMER_PRESENCE_GRACE_SECS] (default 30)
  --idle-timeout-secs N      close connections silent this long [HUMMER_IDLE_TIMEOUT_SECS] (default 45)
  --max-queued-bytes N       per-connection output bound [HUMMER_MAX_QUEUED_BYTES] (default 4194304)
  --rate-limit-sends N       sends per instance per 3 s, and twice that per uid [HUMMER_RATE_LIMIT_SENDS] (default 180)
  --login-rate-per-ip N      logins per IP address (IPv6: per /64) per 3 s [HUMMER_LOGIN_RATE_PER_IP] (default 60)
  --seed N                   seed of ids and the server epoch [HUMMER_SEED] (default: from the clock)
  --max-connections N        open connections at most; more are closed at once
                             [HUMMER_MAX_CONNECTIONS] (default 100000)
  --max-connections-per-ip N open connections from one address (IPv6: one /64)
                             [HUMMER_MAX_CONNECTIONS_PER_IP] (default 1000)
  --listen-backlog N         listen backlog, capped by net.core.somaxconn
                             [HUMMER_LISTEN_BACKLOG] (default 1024)
  --threads N                threads serving connections, each with a gateway and a hub
                             shard [HUMMER_THREADS] (default: the number of cores)
  --ws-listen ADDR           also serve WebSocket clients (ws://ADDR/v1/ws) and the demo
                             page (http://ADDR/) [HUMMER_WS_LISTEN] (default: off)
  --ws-allowed-origins LIST  browser origins allowed to open a WebSocket, comma-separated,
                             e.g. https://chat.example.com (default: any)
                             [HUMMER_WS_ALLOWED_ORIGINS]
  --web-root DIR             serve the files under DIR on the WebSocket listener, before
                             the built-in demo page [HUMMER_WEB_ROOT]
  --tls-cert PEM             certificate chain (PEM); with --tls-key, --listen speaks
                             only TLS (tls://) and --ws-listen only wss:// and https://
                             [HUMMER_TLS_CERT]
  --tls-key PEM              the certificate's private key (PEM) [HUMMER_TLS_KEY]
  --log LEVEL                error|warn|info|debug|trace [HUMMER_LOG] (default info)

App secrets (--app, token --secret) must be at least 32 bytes.
";

/// The shortest app secret accepted (bytes). HS256 with a short key is open
/// to an offline guess from any token the server accepted, after which
/// tokens for any uid can be minted.
const MIN_SECRET_LEN: usize = 32;

/// `Err` naming the rule when `secret` is too short.
fn check_secret(what: &str, secret: &str) -> Result<(), String> {
    if secret.len() < MIN_SECRET_LEN {
        return Err(format!(
            "{what}: the secret is {} bytes; app secrets must be at least {MIN_SECRET_LEN} bytes \
             (e.g. 32 random bytes, base64-encoded: `openssl rand -base64 32`)",
            secret.len()
        ));
    }
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("token") => token(&args[1..]),
        Some("serve") => run(&args[1..]),
        Some("-h" | "--help" | "help") => {
            print!("{USAGE}");
            Ok(())
        }
        _ => run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hummer-server: {e}\n\n{USAGE}");
            ExitCode::from(2)
        }
    }
}

/// Flags as (name, value) pairs; boolean flags get an empty value.
fn parse_flags(
    args: &[String],
    booleans: &[&str],
    valued: &[&str],
) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let Some(name) = a.strip_prefix("--") else {
            return Err(format!("unexpected argument {a:?}"));
        };
        if let Some((n, v)) = name.split_once('=') {
            out.push((n.to_owned(), v.to_owned()));
        } else if booleans.contains(&name) {
            out.push((name.to_owned(), String::new()));
        } else if !valued.contains(&name) {
            return Err(format!("unknown option --{name}"));
        } else {
            let v = it.next().ok_or_else(|| format!("--{name} needs a value"))?;
            out.push((name.to_owned(), v.clone()));
        }
    }
    Ok(out)
}

fn number<T: std::str::FromStr>(name: &str, v: &str) -> Result<T, String> {
    v.parse()
        .map_err(|_| format!("--{name}: {v:?} is not a valid number"))
}

fn truthy(v: &str) -> bool {
    matches!(v, "" | "1" | "true" | "yes" | "on")
}

fn token(args: &[String]) -> Result<(), String> {
    let (mut appid, mut uid, mut secret, mut ttl) = (None, None, None, 3600u64);
    for (name, v) in parse_flags(args, &[], &["appid", "uid", "secret", "ttl-secs"])? {
        match name.as_str() {
            "appid" => appid = Some(number::<u32>(&name, &v)?),
            "uid" => uid = Some(number::<u64>(&name, &v)?),
            "secret" => secret = Some(v),
            "ttl-secs" => ttl = number(&name, &v)?,
            _ => return Err(format!("unknown option --{name}")),
        }
    }
    let appid = appid.ok_or("--appid is required")?;
    let uid = uid.ok_or("--uid is required")?;
    let secret = secret.ok_or("--secret is required")?;
    check_secret("--secret", &secret)?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    println!(
        "{}",
        mint_token(&secret, appid, uid, now.saturating_add(ttl))
    );
    Ok(())
}

/// The serve flags, environment first so that flags override it.
fn serve_flags(args: &[String]) -> Result<Vec<(String, String)>, String> {
    let mut flags = Vec::new();
    for (env, name) in [
        ("HUMMER_LISTEN", "listen"),
        ("HUMMER_APPID_MODE", "appid-mode"),
        ("HUMMER_KICK_OLDER_LOGINS", "kick-older-logins"),
        ("HUMMER_MAX_MEMBERS", "max-members"),
        ("HUMMER_PRESENCE_GRACE_SECS", "presence-grace-secs"),
        ("HUMMER_IDLE_TIMEOUT_SECS", "idle-timeout-secs"),
        ("HUMMER_MAX_QUEUED_BYTES", "max-queued-bytes"),
        ("HUMMER_RATE_LIMIT_SENDS", "rate-limit-sends"),
        ("HUMMER_LOGIN_RATE_PER_IP", "login-rate-per-ip"),
        ("HUMMER_SEED", "seed"),
        ("HUMMER_LOG", "log"),
        ("HUMMER_MAX_CONNECTIONS", "max-connections"),
        ("HUMMER_MAX_CONNECTIONS_PER_IP", "max-connections-per-ip"),
        ("HUMMER_LISTEN_BACKLOG", "listen-backlog"),
        ("HUMMER_THREADS", "threads"),
        ("HUMMER_WS_LISTEN", "ws-listen"),
        ("HUMMER_WS_ALLOWED_ORIGINS", "ws-allowed-origins"),
        ("HUMMER_WEB_ROOT", "web-root"),
        ("HUMMER_TLS_CERT", "tls-cert"),
        ("HUMMER_TLS_KEY", "tls-key"),
    ] {
        if let Ok(v) = std::env::var(env) {
            flags.push((name.to_owned(), v));
        }
    }
    if let Ok(apps) = std::env::var("HUMMER_APPS") {
        for a in apps.split(',').filter(|a| !a.is_empty()) {
            flags.push(("app".to_owned(), a.to_owned()));
        }
    }
    flags.extend(parse_flags(
        args,
        &["appid-mode", "kick-older-logins"],
        &[
            "listen",
            "app",
            "max-members",
            "presence-grace-secs",
            "idle-timeout-secs",
            "max-queued-bytes",
            "rate-limit-sends",
            "login-rate-per-ip",
            "seed",
            "log",
            "max-connections",
            "max-connections-per-ip",
            "listen-backlog",
            "threads",
            "ws-listen",
            "ws-allowed-origins",
            "web-root",
            "tls-cert",
            "tls-key",
        ],
    )?);
    Ok(flags)
}

fn run(args: &[String]) -> Result<(), String> {
    let mut listen: SocketAddr = "127.0.0.1:7300".parse().map_err(|_| "bad default")?;
    let mut config = ServerConfig::demo();
    let mut runner = RunnerConfig::default();
    let mut apps = Vec::new();
    let (mut appid_mode, mut kick) = (false, false);
    let mut level = tracing::Level::INFO;
    let mut ws_listen: Option<SocketAddr> = None;
    let (mut tls_cert, mut tls_key) = (None::<PathBuf>, None::<PathBuf>);
    let mut websocket = demo_pages();
    config.seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
        ^ u64::from(std::process::id()).rotate_left(32);
    for (name, v) in serve_flags(args)? {
        match name.as_str() {
            "listen" => {
                listen = v
                    .parse()
                    .map_err(|_| format!("--listen: {v:?} is not an address like 127.0.0.1:7300"))?
            }
            "app" => {
                let (id, secret) = v
                    .split_once(':')
                    .ok_or_else(|| format!("--app: {v:?} is not APPID:SECRET"))?;
                let appid: u32 = number(&name, id)?;
                check_secret(&format!("--app {appid}"), secret)?;
                apps.push(AppConfig::with_secret(appid, secret));
            }
            "appid-mode" => appid_mode = truthy(&v),
            "kick-older-logins" => kick = truthy(&v),
            "max-members" => config.max_channel_members = number(&name, &v)?,
            "presence-grace-secs" => {
                config.presence_grace = Duration::from_secs(number(&name, &v)?)
            }
            "idle-timeout-secs" => config.idle_timeout = Duration::from_secs(number(&name, &v)?),
            "max-queued-bytes" => config.max_queued_bytes = number(&name, &v)?,
            "rate-limit-sends" => {
                let n: usize = number(&name, &v)?;
                config.rate_limit_sends = n;
                let per_uid = u64::try_from(n).unwrap_or(u64::MAX).saturating_mul(2);
                config.rate_limits.sends = RateLimit::new(per_uid, Duration::from_secs(3));
            }
            "login-rate-per-ip" => {
                let n: u64 = positive(&name, &v)?;
                config.rate_limits.logins_per_address = RateLimit::new(n, Duration::from_secs(3));
            }
            "seed" => config.seed = number(&name, &v)?,
            "max-connections" => runner.max_connections = positive(&name, &v)?,
            "max-connections-per-ip" => runner.max_connections_per_ip = positive(&name, &v)?,
            "listen-backlog" => runner.listen_backlog = positive(&name, &v)?,
            "threads" => runner.threads = positive(&name, &v)?,
            "ws-listen" => {
                ws_listen = Some(v.parse().map_err(|_| {
                    format!("--ws-listen: {v:?} is not an address like 127.0.0.1:7301")
                })?)
            }
            "ws-allowed-origins" => {
                let origins: Vec<&str> = v
                    .split(',')
                    .map(str::trim)
                    .filter(|o| !o.is_empty())
                    .collect();
                if origins.is_empty() {
                    return Err(
                        "--ws-allowed-origins: no origin given (leave it out to allow any)".into(),
                    );
                }
                websocket = websocket.with_allowed_origins(origins)
            }
            "web-root" => {
                if !Path::new(&v).is_dir() {
                    return Err(format!("--web-root: {v:?} is not a directory"));
                }
                websocket = websocket.with_web_root(&v);
            }
            "tls-cert" => tls_cert = Some(v.into()),
            "tls-key" => tls_key = Some(v.into()),
            "log" => {
                level = v
                    .parse()
                    .map_err(|_| format!("--log: {v:?} is not a log level"))?
            }
            _ => return Err(format!("unknown option --{name}")),
        }
    }
    let demo = apps.is_empty();
    if !demo {
        for a in &mut apps {
            a.allow_appid_mode = appid_mode;
        }
        config.apps = apps;
    }
    for a in &mut config.apps {
        a.kick_older_logins = kick;
    }
    runner = runner.with_websocket(websocket);
    match (tls_cert, tls_key) {
        (Some(cert), Some(key)) => {
            let tls = ServerTls::from_pem_files(&cert, &key).map_err(|e| format!("TLS: {e}"))?;
            runner = runner.with_tls(tls);
        }
        (None, None) => {}
        _ => return Err("--tls-cert and --tls-key go together".into()),
    }
    let secure = runner.tls.is_some();
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .init();
    raise_fd_limit(&runner);

    smol::block_on(async {
        let listener =
            bind(listen, &runner).map_err(|e| format!("cannot listen on {listen}: {e}"))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let mut listeners = Listeners::new(listener);
        println!(
            "hummer-server listening on {addr}{}",
            if secure { " (TLS: tls://)" } else { "" }
        );
        if let Some(ws) = ws_listen {
            let l = bind(ws, &runner).map_err(|e| format!("cannot listen on {ws}: {e}"))?;
            let ws = l.local_addr().map_err(|e| e.to_string())?;
            listeners = listeners.with_websocket(l);
            let (w, h) = if secure {
                ("wss", "https")
            } else {
                ("ws", "http")
            };
            println!("hummer-server websocket on {w}://{ws}/v1/ws");
            println!("demo page: {h}://{ws}/");
        }
        if demo {
            println!(
                "demo app: appid {DEMO_APPID}, logins without a token allowed, \
                 tokens signed with {DEMO_SECRET:?}"
            );
        } else {
            for a in &config.apps {
                println!("app {} (appid mode: {})", a.appid, a.allow_appid_mode);
            }
        }
        println!("connect: cargo run --example chat -- --server {addr}");
        println!(
            "token:   hummer-server token --appid {DEMO_APPID} --uid 42 --secret {DEMO_SECRET}"
        );
        tracing::info!(
            %addr,
            max_connections = runner.max_connections,
            max_connections_per_ip = runner.max_connections_per_ip,
            listen_backlog = runner.listen_backlog,
            threads = runner.threads,
            "serving"
        );
        serve_on(listeners, config, runner, shutdown_signal())
            .await
            .map_err(|e| e.to_string())?;
        tracing::info!("stopped");
        Ok(())
    })
}

/// The demo page and the JavaScript client, built into the binary by
/// `build.rs` (served on the WebSocket listener; `--web-root` files come
/// first). A build without them serves a page that says so.
fn demo_pages() -> WebSocketOptions {
    const PAGES: &[(&str, &str, &str)] = include!(concat!(env!("OUT_DIR"), "/pages.rs"));
    let mut options = WebSocketOptions::default().with_page(Page::new(
        "/",
        "text/html; charset=utf-8",
        "<!doctype html><title>hummer-server</title><p>This hummer-server was built \
         without the demo page (js/demo, js/dist): serve it with --web-root.</p>",
    ));
    for (path, content_type, body) in PAGES {
        options = options.with_page(Page::new(path, content_type, *body));
    }
    options
}

/// A number of at least 1 (a cap or backlog of 0 would refuse everything).
fn positive<T: std::str::FromStr + PartialOrd + From<u8>>(
    name: &str,
    v: &str,
) -> Result<T, String> {
    let n: T = number(name, v)?;
    if n < T::from(1) {
        return Err(format!("--{name}: must be at least 1"));
    }
    Ok(n)
}

/// Raises the soft open-file limit to the hard limit: every connection is a
/// descriptor, and the usual soft default (1024) would make `accept` fail
/// far below `max_connections`. Logs the limit in force either way.
fn raise_fd_limit(runner: &RunnerConfig) {
    #[cfg(unix)]
    {
        use rustix::process::{getrlimit, setrlimit, Resource};
        let mut lim = getrlimit(Resource::Nofile);
        let before = lim.current;
        if lim.current != lim.maximum {
            lim.current = lim.maximum;
            if let Err(e) = setrlimit(Resource::Nofile, lim) {
                tracing::warn!(error = %e, "cannot raise the open-file limit");
                lim.current = before;
            }
        }
        let show = |v: Option<u64>| v.map_or("unlimited".to_owned(), |n| n.to_string());
        tracing::info!(
            soft = %show(lim.current),
            hard = %show(lim.maximum),
            raised_from = %show(before),
            "open-file limit"
        );
        if let Some(n) = lim.current {
            // A few descriptors go to the listener, the poller, stdio.
            if n < runner.max_connections as u64 + 16 {
                tracing::warn!(
                    limit = n,
                    max_connections = runner.max_connections,
                    "the open-file limit, not max_connections, bounds the connections; \
                     accept backs off while it is reached"
                );
            }
        }
    }
    #[cfg(not(unix))]
    let _ = runner;
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use async_signal::{Signal, Signals};
        use smol::stream::StreamExt;
        match Signals::new([Signal::Int, Signal::Term]) {
            Ok(mut s) => {
                let _ = s.next().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "no signal handling: stop the process to end");
                std::future::pending::<()>().await;
            }
        }
    }
    #[cfg(not(unix))]
    std::future::pending::<()>().await;
}
