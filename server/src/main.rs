//! `hummer-server`: the reference Hummer Channel server on TCP.
//!
//! ```text
//! hummer-server [serve] [--config FILE] [--listen ADDR] [--app APPID:SECRET]...
//!               [--appid-mode] [--kick-older-logins] [--max-members N]
//!               [--presence-grace-secs N] [--idle-timeout-secs N] [--max-queued-bytes N]
//!               [--rate-limit-sends N] [--login-rate-per-ip N] [--seed N] [--log LEVEL]
//!               [--max-connections N] [--max-connections-per-ip N] [--listen-backlog N]
//!               [--threads N] [--ws-listen ADDR] [--ws-allowed-origins LIST]
//!               [--web-root DIR] [--tls-cert PEM --tls-key PEM] [--api-listen ADDR]
//!               [--api-key APPID:KEY]... [--api-rate N] [--hook-url APPID=URL]...
//!               [--hook-secret APPID=SECRET]... [--engine memory|URL] [--lease-secs N]
//!               [--cluster-listen ADDR [--cluster-advertise HOST:PORT]
//!                [--cluster-tls-cert PEM --cluster-tls-key PEM --cluster-tls-ca PEM]]
//! hummer-server check-config FILE
//! hummer-server token --appid A --uid U --secret S [--ttl-secs 3600]
//! ```
//!
//! Every serve flag has an environment equivalent (HUMMER_CONFIG,
//! HUMMER_LISTEN, HUMMER_APPS as comma-separated APPID:SECRET,
//! HUMMER_APPID_MODE, HUMMER_KICK_OLDER_LOGINS, HUMMER_MAX_MEMBERS,
//! HUMMER_PRESENCE_GRACE_SECS, HUMMER_IDLE_TIMEOUT_SECS,
//! HUMMER_MAX_QUEUED_BYTES, HUMMER_RATE_LIMIT_SENDS, HUMMER_LOGIN_RATE_PER_IP,
//! HUMMER_SEED, HUMMER_LOG, HUMMER_MAX_CONNECTIONS,
//! HUMMER_MAX_CONNECTIONS_PER_IP, HUMMER_LISTEN_BACKLOG, HUMMER_THREADS,
//! HUMMER_WS_LISTEN, HUMMER_WS_ALLOWED_ORIGINS, HUMMER_WEB_ROOT,
//! HUMMER_TLS_CERT, HUMMER_TLS_KEY, HUMMER_API_LISTEN, HUMMER_API_KEYS as
//! comma-separated APPID:KEY, HUMMER_API_RATE, HUMMER_HOOK_URLS and
//! HUMMER_HOOK_SECRETS as comma-separated APPID=VALUE, HUMMER_ENGINE, HUMMER_LEASE_SECS,
//! HUMMER_CLUSTER_LISTEN, HUMMER_CLUSTER_ADVERTISE, HUMMER_CLUSTER_TLS_CERT,
//! HUMMER_CLUSTER_TLS_KEY, HUMMER_CLUSTER_TLS_CA) and a key in the
//! TOML config file (`--config`; `docs/server.md`, "Configuration file",
//! and `server/hummer.example.toml`). The file is read first, the
//! environment overrides it and the flags override both, key by key; apps
//! from `--app`/HUMMER_APPS replace the file's `[[app]]` tables entirely.
//! The three sources merge into one settings layer and every rule is
//! checked once on it (`settings.rs`); `check-config FILE` runs the same
//! code on the file alone. With none, it serves the demo app on
//! 127.0.0.1:7300.
//!
//! With `--ws-listen`, the same address serves WebSocket clients on
//! `/v1/ws` and the demo page (built into the binary: `js/demo/` and the
//! JavaScript client's bundle `js/dist/hummer.js`) on `/`. With
//! `--api-listen`, that address serves plain HTTP: `/metrics`
//! (Prometheus), `/healthz`, `/readyz`, the server API under `/v1/` (API
//! keys: `--api-key`, or the file's `api_keys`) and the live dashboard on
//! `/dashboard`; `/metrics` needs no key, so bind it on a private address
//! (`docs/server.md`, "Operating: metrics, health, dashboard";
//! `docs/api.md`). With a hook URL and secret, an app's events (user
//! online/offline, channels created and emptied, listed channels'
//! messages) are POSTed to its backend, signed (`docs/webhooks.md`).
//!
//! At start it raises its soft open-file limit to the hard limit (each
//! connection is a descriptor) and logs both. App secrets (`--app`, `token
//! --secret`, the file's `secret`) and API keys (the file's `api_keys`)
//! must be at least 32 bytes: a short HS256 key can be guessed offline from
//! any token, and then any uid can be forged.

mod settings;

use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use hummer_channel::adapters::server_tcp::{
    bind, serve_cluster, serve_on, take_lease, ClusterOptions, Listeners, Page, RunnerConfig,
    WebSocketOptions,
};
use hummer_channel::server::{mint_token, DEMO_APPID, DEMO_SECRET};

use settings::{check_secret, number, parse_flags, Layer, SettingsError};

const USAGE: &str = "\
usage:
  hummer-server [serve] [options]     run the server (defaults: 127.0.0.1:7300, demo app)
  hummer-server check-config FILE     check a config file as serve would, print a summary
  hummer-server token --appid A --uid U --secret S [--ttl-secs 3600]
                                      print a login token (JWT HS256)

serve options (environment equivalent in brackets):
  --config FILE              read settings from this TOML file; the environment and the
                             flags override it key by key [HUMMER_CONFIG]
                             (see docs/server.md and server/hummer.example.toml)
  --listen ADDR              address to listen on [HUMMER_LISTEN] (default 127.0.0.1:7300)
  --app APPID:SECRET         serve this app, tokens signed with SECRET; repeatable
                             [HUMMER_APPS=A:S,A:S] (default: the demo app 10000); apps
                             given here replace the config file's apps entirely
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
  --engine memory|URL        where the lasting state lives: memory (default), or Redis at
                             redis://[:PASSWORD@]HOST:PORT[/DB] (rediss:// for TLS): channels,
                             inboxes, instances and history survive restarts. Several URLs,
                             comma-separated, spread the state over several Redis (always
                             in the same order; --threads a multiple of them) [HUMMER_ENGINE]
  --lease-secs N             with --engine redis: one node serves a store at a time; the
                             others wait (not listening) and take over this long after it
                             stops renewing (default 5) [HUMMER_LEASE_SECS]
  --cluster-listen ADDR      with --engine redis: every node serves clients, as one service.
                             The node holding the lease keeps the state; the others relay
                             to it over links they open to this address (bind a private
                             one, or give --cluster-tls-*: plain links are not encrypted)
                             [HUMMER_CLUSTER_LISTEN]
  --cluster-advertise H:P    where the other nodes reach --cluster-listen, when not its
                             own address (needed for 0.0.0.0) [HUMMER_CLUSTER_ADVERTISE]
  --cluster-tls-cert PEM     with --cluster-tls-key and --cluster-tls-ca: links between
                             nodes in TLS, both ways authenticated. This node's certificate
                             chain (for the host of --cluster-advertise, serverAuth and
                             clientAuth) [HUMMER_CLUSTER_TLS_CERT]
  --cluster-tls-key PEM      its private key [HUMMER_CLUSTER_TLS_KEY]
  --cluster-tls-ca PEM       the CA that signs every node's certificate; every node of the
                             cluster needs the three, or none [HUMMER_CLUSTER_TLS_CA]
  --hook-url APPID=URL       POST this app's events (user online/offline, channels created
                             and emptied) to URL, signed; repeatable [HUMMER_HOOK_URLS=A=U,A=U]
                             (message events: message_channel_prefixes in the config
                             file; see docs/webhooks.md)
  --hook-secret APPID=SECRET the app's hook signing key (HMAC-SHA256), needed with its URL;
                             repeatable [HUMMER_HOOK_SECRETS=A=S,A=S]
  --api-listen ADDR          serve plain HTTP here: /metrics (no key: bind a private
                             address), /healthz, /readyz, the server API (/v1/...) and
                             the dashboard (/dashboard) [HUMMER_API_LISTEN] (default: off)
  --api-key APPID:KEY        a server API key of app APPID (also for the dashboard);
                             repeatable [HUMMER_API_KEYS=A:K,A:K]; keys given here
                             replace the config file's api_keys
  --api-rate N               server API calls per second per app (bursts of 2N); calls
                             without a valid key likewise per address [HUMMER_API_RATE]
                             (default 200)
  --log LEVEL                error|warn|info|debug|trace [HUMMER_LOG] (default info)

App secrets (--app, token --secret), API keys and hook secrets must be at least 32 bytes.
";

/// Why the binary stops with exit code 2.
enum Failure {
    /// A command line mistake or a failure to serve: the message, then the
    /// usage.
    Usage(String),
    /// A config file's mistake: the message alone (`FILE:LINE:COL: ...`).
    File(String),
    /// The server stopped while serving (its store's lease taken, an I/O
    /// failure): the message alone, exit code 1.
    Stopped(String),
}

impl From<String> for Failure {
    fn from(e: String) -> Self {
        Failure::Usage(e)
    }
}

impl From<&str> for Failure {
    fn from(e: &str) -> Self {
        Failure::Usage(e.to_owned())
    }
}

impl From<SettingsError> for Failure {
    fn from(e: SettingsError) -> Self {
        if e.in_file {
            Failure::File(e.message)
        } else {
            Failure::Usage(e.message)
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("token") => token(&args[1..]),
        Some("check-config") => check_config(&args[1..]),
        Some("serve") => run(&args[1..]),
        Some("-h" | "--help" | "help") => {
            print!("{USAGE}");
            Ok(())
        }
        _ => run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(e)) => {
            eprintln!("hummer-server: {e}\n\n{USAGE}");
            ExitCode::from(2)
        }
        Err(Failure::File(e)) => {
            eprintln!("{e}");
            ExitCode::from(2)
        }
        Err(Failure::Stopped(e)) => {
            eprintln!("hummer-server: {e}");
            ExitCode::from(1)
        }
    }
}

fn token(args: &[String]) -> Result<(), Failure> {
    let (mut appid, mut uid, mut secret, mut ttl) = (None, None, None, 3600u64);
    for (name, v) in parse_flags(args, &[], &["appid", "uid", "secret", "ttl-secs"])? {
        match name.as_str() {
            "appid" => appid = Some(flag_number::<u32>(&name, &v)?),
            "uid" => uid = Some(flag_number::<u64>(&name, &v)?),
            "secret" => secret = Some(v),
            "ttl-secs" => ttl = flag_number(&name, &v)?,
            _ => return Err(format!("unknown option --{name}").into()),
        }
    }
    let appid = appid.ok_or("--appid is required")?;
    let uid = uid.ok_or("--uid is required")?;
    let secret = secret.ok_or("--secret is required")?;
    check_secret("the secret", &secret).map_err(|e| format!("--secret: {e}"))?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    println!(
        "{}",
        mint_token(&secret, appid, uid, now.saturating_add(ttl))
    );
    Ok(())
}

/// The number `v` of the flag `--name`.
fn flag_number<T: std::str::FromStr>(name: &str, v: &str) -> Result<T, String> {
    number(v).map_err(|e| format!("--{name}: {e}"))
}

/// `check-config FILE`: the file's settings checked by the serve path's own
/// code (without the environment or any flag), then a summary.
fn check_config(args: &[String]) -> Result<(), Failure> {
    let [file] = args else {
        return Err("check-config takes one argument, the config file".into());
    };
    let path = std::path::Path::new(file);
    let serve = Layer::from_file(path)?.build(demo_pages())?;
    println!("{}: ok: {}", path.display(), serve.summary());
    Ok(())
}

fn run(args: &[String]) -> Result<(), Failure> {
    let (file, command_line) = settings::command_line(args, |var| std::env::var(var).ok())?;
    let layer = match file {
        Some(f) => Layer::from_file(&f.value)?.overlay(command_line),
        None => command_line,
    };
    let settings::Serve {
        listen,
        ws_listen,
        api_listen,
        cluster,
        cluster_tls,
        level,
        demo,
        tls: _,
        config,
        mut runner,
    } = layer.build(demo_pages())?;
    let secure = runner.tls.is_some();
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .init();
    raise_fd_limit(&runner);

    smol::block_on(async {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let node = format!("{}-{:08x}", std::process::id(), nanos);
        // Every node of a store is named: its lease's owner.
        runner.store = runner.store.take().map(|s| s.with_lease(&node));
        // A cluster node: every node serves, the lease says which keeps
        // the state (serve_cluster finds out, and again when it changes).
        let cluster = match cluster {
            Some((listen, advertise)) => {
                let store = runner
                    .store
                    .as_ref()
                    .ok_or("a cluster needs --engine redis://")?;
                println!("hummer-server node {node} of the cluster sharing {store}");
                let l = bind(listen, &runner)
                    .map_err(|e| format!("cannot listen on {listen} for the cluster: {e}"))?;
                let at = l.local_addr().map_err(|e| e.to_string())?;
                // Port 0 (tests): tell the port the system chose.
                let advertise = match advertise.strip_suffix(":0") {
                    Some(host) => format!("{host}:{}", at.port()),
                    None => advertise,
                };
                let options = ClusterOptions::new(l, advertise.clone());
                let (options, how) = match cluster_tls {
                    Some(t) => (options.with_tls(t.tls), "TLS"),
                    None => (options, "plain TCP"),
                };
                println!("hummer-server cluster links on {at} (told as {advertise}, {how})");
                Some(options)
            }
            None => None,
        };
        // With Redis, one node at a time serves a store: the others wait,
        // not listening (their clients go to the node that serves), and
        // take over when its lease lapses.
        if let (None, Some(store)) = (&cluster, &runner.store) {
            take_lease(store, runner.store_lease, |holder| {
                println!("hummer-server standby: node {holder} serves {store}; waiting");
            })
            .await
            .map_err(|e| format!("the store ({store}): {e}"))?;
            println!("hummer-server node {node} serves {store}");
        }
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
        if let Some(api) = api_listen {
            let l = bind(api, &runner).map_err(|e| format!("cannot listen on {api}: {e}"))?;
            let api = l.local_addr().map_err(|e| e.to_string())?;
            listeners = listeners.with_api(l);
            println!(
                "hummer-server API on http://{api} (metrics: /metrics, dashboard: /dashboard)"
            );
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
        for a in &config.apps {
            if let Some(h) = &a.hook {
                tracing::info!(
                    appid = a.appid,
                    to = %settings::origin_of(&h.url),
                    message_channel_prefixes = ?h.message_channel_prefixes,
                    "webhooks on"
                );
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
        match cluster {
            Some(cluster) => {
                serve_cluster(listeners, config, runner, cluster, shutdown_signal()).await
            }
            None => serve_on(listeners, config, runner, shutdown_signal()).await,
        }
        .map_err(|e| Failure::Stopped(e.to_string()))?;
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
