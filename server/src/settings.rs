//! The serve command's settings, from three sources merged key by key: the
//! config file (`--config FILE`, `HUMMER_CONFIG`) below the environment
//! (`HUMMER_*`) below the flags.
//!
//! Each source is only parsed into a [`Layer`] (text to numbers, addresses,
//! levels; a file's types checked by serde), every value remembering where
//! it came from ([`Origin`]). The rules (positive numbers, secret and API
//! key lengths, origins, directories, TLS files, distinct listeners) are
//! checked once, in [`Layer::build`], on the merged layer, so they are the
//! same for every source and an error names the flag, the variable or the
//! file's line and column that set the value.
//!
//! Webhooks are set per app: the file's `[app.hook]` table, and
//! `--hook-url APPID=URL` / `--hook-secret APPID=SECRET` (`HUMMER_HOOK_URLS`,
//! `HUMMER_HOOK_SECRETS`), which override the file's URL or secret of that
//! app. A URL without a secret or the reverse is refused, naming the appid.
//!
//! Apps are the one key not merged piece by piece: apps from the command line
//! (`--app`, `HUMMER_APPS`, which add up as they always did) replace the
//! file's `[[app]]` tables entirely. API keys from the command line
//! (`--api-key APPID:KEY`, `HUMMER_API_KEYS`, adding up likewise) replace
//! every app's `api_keys` from the file; each must name an app that is
//! served. `--appid-mode` and
//! `--kick-older-logins` (and their variables), when given, set that
//! switch of every app, overriding the file's per-app values.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hummer_channel::adapters::server_tcp::store::StoreConfig;
use hummer_channel::adapters::server_tcp::{NodeTls, RunnerConfig, ServerTls, WebSocketOptions};
use hummer_channel::server::{
    AppConfig, ConfigError, HookConfig, RateLimit, ServerConfig, DEMO_APPID, MAX_SHARDS,
    MIN_SECRET_LEN,
};
use serde::Deserialize;
use toml::Spanned;

/// Where a value was set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// `--NAME` on the command line.
    Flag(String),
    /// An environment variable.
    Env(&'static str),
    /// A key of a config file, at a 1-based line and column.
    File {
        /// The file, as given.
        path: PathBuf,
        /// The key, e.g. `limits.threads` or `app.secret`.
        key: String,
        /// Its line.
        line: usize,
        /// Its column (in characters).
        col: usize,
    },
}

impl Origin {
    /// An error about the value set here.
    pub fn error(&self, message: impl fmt::Display) -> SettingsError {
        match self {
            Origin::Flag(name) => SettingsError::command_line(format!("--{name}: {message}")),
            Origin::Env(var) => SettingsError::command_line(format!("{var}: {message}")),
            Origin::File {
                path,
                key,
                line,
                col,
            } => SettingsError::file(format!("{}:{line}:{col}: {key}: {message}", path.display())),
        }
    }
}

/// Settings the server cannot start with. Its text names where the bad
/// value was set: `--flag: ...`, `VARIABLE: ...`, `FILE:LINE:COL: key: ...`,
/// or `FILE: ...` when there is no position.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SettingsError {
    /// The whole message.
    pub message: String,
    /// Whether a config file is at fault (the usage text would not help).
    pub in_file: bool,
}

impl SettingsError {
    /// An error on the command line or in the environment.
    pub fn command_line(message: impl Into<String>) -> Self {
        SettingsError {
            message: message.into(),
            in_file: false,
        }
    }

    fn file(message: String) -> Self {
        SettingsError {
            message,
            in_file: true,
        }
    }
}

impl fmt::Display for SettingsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// A value and where it was set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Set<T> {
    /// The value.
    pub value: T,
    /// Its source.
    pub from: Origin,
}

impl<T> Set<T> {
    fn new(value: T, from: Origin) -> Self {
        Set { value, from }
    }
}

/// One app as a source gave it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppSetting {
    /// Its id.
    pub appid: u32,
    /// The token secret, if any.
    pub secret: Option<Set<String>>,
    /// The file's per-app switches (the command line has only global ones).
    pub appid_mode: Option<bool>,
    /// See `appid_mode`.
    pub kick_older_logins: Option<bool>,
    /// Server API keys (only a file gives them).
    pub api_keys: Vec<Set<String>>,
    /// The file's `[app.hook]` table, if any.
    pub hook: Option<HookSetting>,
    /// Where the app was given (its `appid` key in a file).
    pub from: Origin,
}

/// An app's `[app.hook]` table as a file gave it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HookSetting {
    /// The receiver's URL.
    pub url: Option<Set<String>>,
    /// The signing secret.
    pub secret: Option<Set<String>>,
    /// Channels whose messages are events, by prefix.
    pub message_channel_prefixes: Vec<String>,
    /// Where the table is (its first key).
    pub from: Origin,
}

/// Settings from one source (or several merged): `None` is "not set here".
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Layer {
    pub listen: Option<Set<SocketAddr>>,
    pub ws_listen: Option<Set<SocketAddr>>,
    pub api_listen: Option<Set<SocketAddr>>,
    /// Where the other nodes of a cluster connect (`--cluster-listen`):
    /// with a Redis engine, every node serves.
    pub cluster_listen: Option<Set<SocketAddr>>,
    /// The address they reach it at, when not the listener's own.
    pub cluster_advertise: Option<Set<String>>,
    /// TLS on the links between nodes: this node's certificate chain and
    /// key, and the CA that signs every node's (all three or none).
    pub cluster_tls_cert: Option<Set<PathBuf>>,
    pub cluster_tls_key: Option<Set<PathBuf>>,
    pub cluster_tls_ca: Option<Set<PathBuf>>,
    pub ws_allowed_origins: Option<Set<Vec<String>>>,
    pub web_root: Option<Set<PathBuf>>,
    pub tls_cert: Option<Set<PathBuf>>,
    pub tls_key: Option<Set<PathBuf>>,
    pub log: Option<Set<tracing::Level>>,
    pub seed: Option<Set<u64>>,
    pub threads: Option<Set<usize>>,
    pub lease_secs: Option<Set<u64>>,
    pub max_members: Option<Set<usize>>,
    pub presence_grace_secs: Option<Set<u64>>,
    pub idle_timeout_secs: Option<Set<u64>>,
    pub max_queued_bytes: Option<Set<usize>>,
    pub rate_limit_sends: Option<Set<usize>>,
    pub login_rate_per_ip: Option<Set<u64>>,
    pub max_connections: Option<Set<usize>>,
    pub max_connections_per_ip: Option<Set<usize>>,
    pub listen_backlog: Option<Set<u32>>,
    pub api_rate: Option<Set<u32>>,
    /// Where the lasting state lives (`--engine`): `None`, memory.
    pub engine: Option<Set<Engine>>,
    /// Global switches (command line only): override every app's.
    pub appid_mode: Option<Set<bool>>,
    pub kick_older_logins: Option<Set<bool>>,
    /// `None` or empty: the demo app.
    pub apps: Option<Vec<AppSetting>>,
    /// Server API keys from the command line, by appid (`None` or empty:
    /// the apps' own, from the file).
    pub api_keys: Option<Vec<(u32, Set<String>)>>,
    /// Hook URLs per appid from the command line (`--hook-url`,
    /// `HUMMER_HOOK_URLS`): over the file's, app by app.
    pub hook_urls: Vec<(u32, Set<String>)>,
    /// Hook secrets likewise (`--hook-secret`, `HUMMER_HOOK_SECRETS`).
    pub hook_secrets: Vec<(u32, Set<String>)>,
}

/// The serve flags that take no value.
pub const BOOLEAN_FLAGS: &[&str] = &["appid-mode", "kick-older-logins"];

/// The serve flags that take a value.
pub const VALUED_FLAGS: &[&str] = &[
    "config",
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
    "api-rate",
    "threads",
    "lease-secs",
    "ws-listen",
    "ws-allowed-origins",
    "web-root",
    "tls-cert",
    "tls-key",
    "api-listen",
    "api-key",
    "hook-url",
    "hook-secret",
    "engine",
    "cluster-listen",
    "cluster-advertise",
    "cluster-tls-cert",
    "cluster-tls-key",
    "cluster-tls-ca",
];

/// Each environment variable and the flag it stands for (`HUMMER_APPS`,
/// `HUMMER_API_KEYS`, `HUMMER_HOOK_URLS` and `HUMMER_HOOK_SECRETS`,
/// comma-separated lists of `--app`, `--api-key`, `--hook-url` and
/// `--hook-secret` values, are read after them).
pub const ENVIRONMENT: &[(&str, &str)] = &[
    ("HUMMER_CONFIG", "config"),
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
    ("HUMMER_API_RATE", "api-rate"),
    ("HUMMER_THREADS", "threads"),
    ("HUMMER_LEASE_SECS", "lease-secs"),
    ("HUMMER_WS_LISTEN", "ws-listen"),
    ("HUMMER_WS_ALLOWED_ORIGINS", "ws-allowed-origins"),
    ("HUMMER_WEB_ROOT", "web-root"),
    ("HUMMER_TLS_CERT", "tls-cert"),
    ("HUMMER_TLS_KEY", "tls-key"),
    ("HUMMER_API_LISTEN", "api-listen"),
    ("HUMMER_ENGINE", "engine"),
    ("HUMMER_CLUSTER_LISTEN", "cluster-listen"),
    ("HUMMER_CLUSTER_ADVERTISE", "cluster-advertise"),
    ("HUMMER_CLUSTER_TLS_CERT", "cluster-tls-cert"),
    ("HUMMER_CLUSTER_TLS_KEY", "cluster-tls-key"),
    ("HUMMER_CLUSTER_TLS_CA", "cluster-tls-ca"),
];

/// Flags as (name, value) pairs; boolean flags get an empty value.
pub fn parse_flags(
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

/// The command line's settings: the environment (read through `env`) then
/// the flags, so that flags win; `--app` values add up. Also the config
/// file to read, if one is named (`--config` over `HUMMER_CONFIG`).
pub fn command_line(
    args: &[String],
    env: impl Fn(&str) -> Option<String>,
) -> Result<(Option<Set<PathBuf>>, Layer), SettingsError> {
    let mut given: Vec<(Origin, String, String)> = Vec::new();
    for (var, name) in ENVIRONMENT {
        if let Some(v) = env(var) {
            given.push((Origin::Env(var), (*name).to_owned(), v));
        }
    }
    for (var, name) in [
        ("HUMMER_APPS", "app"),
        ("HUMMER_HOOK_URLS", "hook-url"),
        ("HUMMER_HOOK_SECRETS", "hook-secret"),
    ] {
        if let Some(list) = env(var) {
            for a in list.split(',').filter(|a| !a.is_empty()) {
                given.push((Origin::Env(var), name.to_owned(), a.to_owned()));
            }
        }
    }
    if let Some(keys) = env("HUMMER_API_KEYS") {
        for k in keys.split(',').filter(|k| !k.is_empty()) {
            given.push((
                Origin::Env("HUMMER_API_KEYS"),
                "api-key".to_owned(),
                k.to_owned(),
            ));
        }
    }
    for (name, v) in
        parse_flags(args, BOOLEAN_FLAGS, VALUED_FLAGS).map_err(SettingsError::command_line)?
    {
        given.push((Origin::Flag(name.clone()), name, v));
    }
    let mut config = None;
    let mut layer = Layer::default();
    for (from, name, v) in given {
        if name == "config" {
            config = Some(Set::new(PathBuf::from(v), from));
        } else {
            layer.set_text(from, &name, &v)?;
        }
    }
    Ok((config, layer))
}

/// `v` as a number, or an error saying it is not one.
pub fn number<T: std::str::FromStr>(v: &str) -> Result<T, String> {
    v.parse()
        .map_err(|_| format!("{v:?} is not a valid number"))
}

/// Whether a boolean flag's value (or variable's) means on.
fn truthy(v: &str) -> bool {
    matches!(v, "" | "1" | "true" | "yes" | "on")
}

/// A listener address; `example` shows the form.
fn address(v: &str, example: &str) -> Result<SocketAddr, String> {
    v.parse()
        .map_err(|_| format!("{v:?} is not an address like {example}"))
}

fn level(v: &str) -> Result<tracing::Level, String> {
    v.parse()
        .map_err(|_| format!("{v:?} is not a log level (error|warn|info|debug|trace)"))
}

/// `Err` naming the rule when an app secret or API key (`what`) is too
/// short: HS256 with a short key is open to an offline guess from any token
/// the server accepted, after which tokens for any uid can be minted.
pub fn check_secret(what: &str, secret: &str) -> Result<(), String> {
    if secret.len() < MIN_SECRET_LEN {
        return Err(format!(
            "{what} is {} bytes; app secrets and API keys must be at least {MIN_SECRET_LEN} \
             bytes (e.g. 32 random bytes, base64-encoded: `openssl rand -base64 32`)",
            secret.len()
        ));
    }
    Ok(())
}

/// A value parsed from text at `from`, or the parser's error there.
/// Where the hubs keep their lasting state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Engine {
    /// In the process only (the default).
    Memory,
    /// In Redis: survives restarts.
    Redis(Box<StoreConfig>),
}

/// `memory`, or a Redis URL (`redis://[:PASSWORD@]HOST:PORT[/DB]`,
/// `rediss://` for TLS).
fn engine(v: &str) -> Result<Engine, String> {
    if v == "memory" {
        return Ok(Engine::Memory);
    }
    if !(v.starts_with("redis://") || v.starts_with("rediss://")) {
        return Err("an engine is `memory` or a redis:// or rediss:// URL".into());
    }
    StoreConfig::new(v)
        .map(|c| Engine::Redis(Box::new(c)))
        .map_err(|e| e.to_string())
}

/// A `host:port` other machines resolve.
fn host_port(v: &str) -> Result<String, String> {
    match v.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => {
            Ok(v.to_owned())
        }
        _ => Err(format!(
            "{v:?} is not HOST:PORT (like node-a.internal:7400)"
        )),
    }
}

fn parsed<T>(r: Result<T, String>, from: &Origin) -> Result<Set<T>, SettingsError> {
    match r {
        Ok(v) => Ok(Set::new(v, from.clone())),
        Err(m) => Err(from.error(m)),
    }
}

/// A number that must be at least 1 (a cap or backlog of 0 would refuse
/// everything).
fn at_least_one<T: Copy + PartialOrd + From<u8>>(n: &Set<T>) -> Result<T, SettingsError> {
    if n.value < T::from(1) {
        return Err(n.from.error("must be at least 1"));
    }
    Ok(n.value)
}

impl Layer {
    /// Sets `name` (a flag's name) from the text `v`.
    fn set_text(&mut self, from: Origin, name: &str, v: &str) -> Result<(), SettingsError> {
        let e = |m: String| from.error(m);
        match name {
            "listen" => self.listen = Some(parsed(address(v, "127.0.0.1:7300"), &from)?),
            "ws-listen" => self.ws_listen = Some(parsed(address(v, "127.0.0.1:7301"), &from)?),
            "api-listen" => self.api_listen = Some(parsed(address(v, "127.0.0.1:7302"), &from)?),
            "engine" => self.engine = Some(parsed(engine(v), &from)?),
            "cluster-listen" => {
                self.cluster_listen = Some(parsed(address(v, "10.0.0.5:7400"), &from)?)
            }
            "cluster-advertise" => self.cluster_advertise = Some(parsed(host_port(v), &from)?),
            "cluster-tls-cert" => self.cluster_tls_cert = Some(Set::new(v.into(), from)),
            "cluster-tls-key" => self.cluster_tls_key = Some(Set::new(v.into(), from)),
            "cluster-tls-ca" => self.cluster_tls_ca = Some(Set::new(v.into(), from)),
            "app" => {
                let (id, secret) = v
                    .split_once(':')
                    .ok_or_else(|| from.error(format!("{v:?} is not APPID:SECRET")))?;
                let appid = number(id).map_err(e)?;
                self.apps.get_or_insert_with(Vec::new).push(AppSetting {
                    appid,
                    secret: Some(Set::new(secret.to_owned(), from.clone())),
                    appid_mode: None,
                    kick_older_logins: None,
                    api_keys: Vec::new(),
                    hook: None,
                    from: from.clone(),
                });
            }
            "api-key" => {
                let (id, key) = v
                    .split_once(':')
                    .ok_or_else(|| from.error("an API key is given as APPID:KEY"))?;
                let appid = number(id).map_err(e)?;
                let key = Set::new(key.to_owned(), from.clone());
                self.api_keys
                    .get_or_insert_with(Vec::new)
                    .push((appid, key));
            }
            "hook-url" | "hook-secret" => {
                let (id, value) = v.split_once('=').ok_or_else(|| {
                    let what = if name == "hook-url" { "URL" } else { "SECRET" };
                    from.error(format!("{v:?} is not APPID={what}"))
                })?;
                let appid: u32 = number(id).map_err(e)?;
                let list = if name == "hook-url" {
                    &mut self.hook_urls
                } else {
                    &mut self.hook_secrets
                };
                // A later one for the same app wins (flags over variables).
                list.retain(|(a, _)| *a != appid);
                list.push((appid, Set::new(value.to_owned(), from.clone())));
            }
            "appid-mode" => self.appid_mode = Some(Set::new(truthy(v), from)),
            "kick-older-logins" => self.kick_older_logins = Some(Set::new(truthy(v), from)),
            "max-members" => self.max_members = Some(parsed(number(v), &from)?),
            "presence-grace-secs" => self.presence_grace_secs = Some(parsed(number(v), &from)?),
            "idle-timeout-secs" => self.idle_timeout_secs = Some(parsed(number(v), &from)?),
            "max-queued-bytes" => self.max_queued_bytes = Some(parsed(number(v), &from)?),
            "rate-limit-sends" => self.rate_limit_sends = Some(parsed(number(v), &from)?),
            "login-rate-per-ip" => self.login_rate_per_ip = Some(parsed(number(v), &from)?),
            "seed" => self.seed = Some(parsed(number(v), &from)?),
            "max-connections" => self.max_connections = Some(parsed(number(v), &from)?),
            "max-connections-per-ip" => {
                self.max_connections_per_ip = Some(parsed(number(v), &from)?)
            }
            "listen-backlog" => self.listen_backlog = Some(parsed(number(v), &from)?),
            "api-rate" => self.api_rate = Some(parsed(number(v), &from)?),
            "threads" => self.threads = Some(parsed(number(v), &from)?),
            "lease-secs" => self.lease_secs = Some(parsed(number(v), &from)?),
            "ws-allowed-origins" => {
                let list = v.split(',').map(str::to_owned).collect();
                self.ws_allowed_origins = Some(Set::new(list, from));
            }
            "web-root" => self.web_root = Some(Set::new(v.into(), from)),
            "tls-cert" => self.tls_cert = Some(Set::new(v.into(), from)),
            "tls-key" => self.tls_key = Some(Set::new(v.into(), from)),
            "log" => self.log = Some(parsed(level(v), &from)?),
            _ => {
                return Err(SettingsError::command_line(format!(
                    "unknown option --{name}"
                )))
            }
        }
        Ok(())
    }

    /// `top` over `self`: each key `top` sets replaces this one's; apps
    /// are one key (a list from `top` replaces this list whole).
    pub fn overlay(self, top: Layer) -> Layer {
        Layer {
            listen: top.listen.or(self.listen),
            ws_listen: top.ws_listen.or(self.ws_listen),
            api_listen: top.api_listen.or(self.api_listen),
            engine: top.engine.or(self.engine),
            cluster_listen: top.cluster_listen.or(self.cluster_listen),
            cluster_advertise: top.cluster_advertise.or(self.cluster_advertise),
            cluster_tls_cert: top.cluster_tls_cert.or(self.cluster_tls_cert),
            cluster_tls_key: top.cluster_tls_key.or(self.cluster_tls_key),
            cluster_tls_ca: top.cluster_tls_ca.or(self.cluster_tls_ca),
            ws_allowed_origins: top.ws_allowed_origins.or(self.ws_allowed_origins),
            web_root: top.web_root.or(self.web_root),
            tls_cert: top.tls_cert.or(self.tls_cert),
            tls_key: top.tls_key.or(self.tls_key),
            log: top.log.or(self.log),
            seed: top.seed.or(self.seed),
            threads: top.threads.or(self.threads),
            lease_secs: top.lease_secs.or(self.lease_secs),
            max_members: top.max_members.or(self.max_members),
            presence_grace_secs: top.presence_grace_secs.or(self.presence_grace_secs),
            idle_timeout_secs: top.idle_timeout_secs.or(self.idle_timeout_secs),
            max_queued_bytes: top.max_queued_bytes.or(self.max_queued_bytes),
            rate_limit_sends: top.rate_limit_sends.or(self.rate_limit_sends),
            login_rate_per_ip: top.login_rate_per_ip.or(self.login_rate_per_ip),
            max_connections: top.max_connections.or(self.max_connections),
            max_connections_per_ip: top.max_connections_per_ip.or(self.max_connections_per_ip),
            listen_backlog: top.listen_backlog.or(self.listen_backlog),
            api_rate: top.api_rate.or(self.api_rate),
            appid_mode: top.appid_mode.or(self.appid_mode),
            kick_older_logins: top.kick_older_logins.or(self.kick_older_logins),
            apps: match top.apps {
                Some(apps) if !apps.is_empty() => Some(apps),
                _ => self.apps,
            },
            api_keys: match top.api_keys {
                Some(keys) if !keys.is_empty() => Some(keys),
                _ => self.api_keys,
            },
            hook_urls: per_app(self.hook_urls, top.hook_urls),
            hook_secrets: per_app(self.hook_secrets, top.hook_secrets),
        }
    }

    /// The settings of the config file at `path`. Relative paths in it
    /// (`web_root`, `tls_cert`, `tls_key`, `cluster_tls_*`) are taken from
    /// the file's directory.
    pub fn from_file(path: &Path) -> Result<Layer, SettingsError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| SettingsError::file(format!("{}: cannot read it: {e}", path.display())))?;
        Layer::from_toml(path, &text)
    }

    /// The settings of the TOML `text`, read from `path`.
    pub fn from_toml(path: &Path, text: &str) -> Result<Layer, SettingsError> {
        let file: File = toml::from_str(text).map_err(|e| {
            let message = without_strings(e.message().trim_end()).replace('\n', "; ");
            match e.span() {
                Some(span) => {
                    let (line, col) = line_col(text, span.start);
                    SettingsError::file(format!("{}:{line}:{col}: {message}", path.display()))
                }
                None => SettingsError::file(format!("{}: {message}", path.display())),
            }
        })?;
        let dir = path.parent().unwrap_or(Path::new(""));
        let at = Locator { path, text };
        let path_in = |key: &str, v: Option<Spanned<String>>| {
            v.map(|v| {
                let s = at.set(key, v);
                Set::new(dir.join(s.value), s.from)
            })
        };
        let limits = file.limits.unwrap_or_default();
        let mut apps = Vec::new();
        for app in file.app {
            let from = at.origin("app.appid", app.appid.span());
            apps.push(AppSetting {
                appid: app.appid.into_inner(),
                secret: app.secret.map(|s| at.set("app.secret", s)),
                appid_mode: app.appid_mode,
                kick_older_logins: app.kick_older_logins,
                api_keys: app
                    .api_keys
                    .into_iter()
                    .map(|k| at.set("app.api_keys", k))
                    .collect(),
                hook: app.hook.map(|h| HookSetting {
                    from: h
                        .url
                        .as_ref()
                        .map(|u| at.origin("app.hook.url", u.span()))
                        .or_else(|| {
                            h.secret
                                .as_ref()
                                .map(|s| at.origin("app.hook.secret", s.span()))
                        })
                        .unwrap_or_else(|| from.clone()),
                    url: h.url.map(|u| at.set("app.hook.url", u)),
                    secret: h.secret.map(|s| at.set("app.hook.secret", s)),
                    message_channel_prefixes: h.message_channel_prefixes,
                }),
                from,
            });
        }
        Ok(Layer {
            listen: at.parse("listen", file.listen, |v| address(v, "127.0.0.1:7300"))?,
            ws_listen: at.parse("ws_listen", file.ws_listen, |v| {
                address(v, "127.0.0.1:7301")
            })?,
            api_listen: at.parse("api_listen", file.api_listen, |v| {
                address(v, "127.0.0.1:7302")
            })?,
            engine: at.parse("engine", file.engine, engine)?,
            cluster_listen: at.parse("cluster_listen", file.cluster_listen, |v| {
                address(v, "10.0.0.5:7400")
            })?,
            cluster_advertise: at.parse("cluster_advertise", file.cluster_advertise, host_port)?,
            cluster_tls_cert: path_in("cluster_tls_cert", file.cluster_tls_cert),
            cluster_tls_key: path_in("cluster_tls_key", file.cluster_tls_key),
            cluster_tls_ca: path_in("cluster_tls_ca", file.cluster_tls_ca),
            ws_allowed_origins: file
                .ws_allowed_origins
                .map(|v| at.set("ws_allowed_origins", v)),
            web_root: path_in("web_root", file.web_root),
            tls_cert: path_in("tls_cert", file.tls_cert),
            tls_key: path_in("tls_key", file.tls_key),
            log: at.parse("log", file.log, level)?,
            seed: file.seed.map(|v| at.set("seed", v)),
            threads: file.threads.map(|v| at.set("threads", v)),
            lease_secs: file.lease_secs.map(|v| at.set("lease_secs", v)),
            max_members: limits.max_members.map(|v| at.set("limits.max_members", v)),
            presence_grace_secs: limits
                .presence_grace_secs
                .map(|v| at.set("limits.presence_grace_secs", v)),
            idle_timeout_secs: limits
                .idle_timeout_secs
                .map(|v| at.set("limits.idle_timeout_secs", v)),
            max_queued_bytes: limits
                .max_queued_bytes
                .map(|v| at.set("limits.max_queued_bytes", v)),
            rate_limit_sends: limits
                .rate_limit_sends
                .map(|v| at.set("limits.rate_limit_sends", v)),
            login_rate_per_ip: limits
                .login_rate_per_ip
                .map(|v| at.set("limits.login_rate_per_ip", v)),
            max_connections: limits
                .max_connections
                .map(|v| at.set("limits.max_connections", v)),
            max_connections_per_ip: limits
                .max_connections_per_ip
                .map(|v| at.set("limits.max_connections_per_ip", v)),
            listen_backlog: limits
                .listen_backlog
                .map(|v| at.set("limits.listen_backlog", v)),
            api_rate: limits.api_rate.map(|v| at.set("limits.api_rate", v)),
            appid_mode: None,
            kick_older_logins: None,
            apps: Some(apps).filter(|a| !a.is_empty()),
            api_keys: None,
            hook_urls: Vec::new(),
            hook_secrets: Vec::new(),
        })
    }

    /// Checks every rule and makes the server's configuration. `pages`
    /// are the WebSocket listener's built-in pages. With no seed set, the
    /// seed comes from the clock and the process id.
    pub fn build(self, pages: WebSocketOptions) -> Result<Serve, SettingsError> {
        let mut config = ServerConfig::demo();
        let mut runner = RunnerConfig::default();
        if let Some(Engine::Redis(store)) = self.engine.as_ref().map(|e| &e.value) {
            runner = runner.with_store(store.as_ref().clone());
        }
        config.seed = match &self.seed {
            Some(s) => s.value,
            None => {
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos() as u64)
                    ^ u64::from(std::process::id()).rotate_left(32)
            }
        };
        if let Some(n) = &self.max_members {
            config.max_channel_members = n.value;
        }
        if let Some(n) = &self.presence_grace_secs {
            config.presence_grace = Duration::from_secs(n.value);
        }
        if let Some(n) = &self.idle_timeout_secs {
            config.idle_timeout = Duration::from_secs(n.value);
        }
        if let Some(n) = &self.max_queued_bytes {
            config.max_queued_bytes = n.value;
        }
        if let Some(n) = &self.rate_limit_sends {
            config.rate_limit_sends = n.value;
            let per_uid = u64::try_from(n.value).unwrap_or(u64::MAX).saturating_mul(2);
            config.rate_limits.sends = RateLimit::new(per_uid, Duration::from_secs(3));
        }
        if let Some(n) = &self.login_rate_per_ip {
            config.rate_limits.logins_per_address =
                RateLimit::new(at_least_one(n)?, Duration::from_secs(3));
        }
        if let Some(n) = &self.max_connections {
            runner.max_connections = at_least_one(n)?;
        }
        if let Some(n) = &self.max_connections_per_ip {
            runner.max_connections_per_ip = at_least_one(n)?;
        }
        if let Some(n) = &self.listen_backlog {
            runner.listen_backlog = at_least_one(n)?;
        }
        if let Some(n) = &self.api_rate {
            let per_second = at_least_one(n)?;
            runner.api = runner
                .api
                .with_rate_limit(per_second, per_second.saturating_mul(2));
        }
        if let Some(n) = &self.lease_secs {
            runner = runner.with_store_lease(Duration::from_secs(at_least_one(n)?));
        }
        if let Some(n) = &self.threads {
            runner.threads = at_least_one(n)?;
        }
        // Each hub shard (one per thread) keeps its objects on one of the
        // store's Redis instances, so the threads are a multiple of them.
        if let Some(instances) = runner.store.as_ref().map(|s| s.instances()) {
            match &self.threads {
                Some(n) if n.value % instances != 0 => {
                    return Err(n.from.error(format!(
                        "must be a multiple of the engine's {instances} Redis instances"
                    )))
                }
                Some(_) => {}
                None => {
                    let most = usize::from(MAX_SHARDS) / instances * instances;
                    runner.threads = runner.threads.div_ceil(instances) * instances;
                    runner.threads = runner.threads.min(most);
                }
            }
        }

        let mut websocket = pages;
        if let Some(o) = &self.ws_allowed_origins {
            let origins: Vec<&str> = o
                .value
                .iter()
                .map(|o| o.trim())
                .filter(|o| !o.is_empty())
                .collect();
            if origins.is_empty() {
                return Err(o.from.error("no origin given (leave it out to allow any)"));
            }
            websocket = websocket.with_allowed_origins(origins);
        }
        if let Some(d) = &self.web_root {
            if !d.value.is_dir() {
                return Err(d.from.error(format!("{:?} is not a directory", d.value)));
            }
            websocket = websocket.with_web_root(&d.value);
        }
        runner = runner.with_websocket(websocket);
        let mut tls = None;
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => {
                let identity = ServerTls::from_pem_files(&cert.value, &key.value)
                    .map_err(|e| cert.from.error(format!("TLS: {e}")))?;
                runner = runner.with_tls(identity);
                tls = Some((cert.value.clone(), key.value.clone()));
            }
            (None, None) => {}
            (Some(one), None) | (None, Some(one)) => {
                return Err(one.from.error(
                    "--tls-cert and --tls-key go together (tls_cert and tls_key in a config file)",
                ))
            }
        }

        let listen = self.listen.clone().unwrap_or(Set::new(
            SocketAddr::from(([127, 0, 0, 1], 7300)),
            Origin::Flag("listen".into()),
        ));
        let mut taken = vec![&listen];
        for l in [&self.ws_listen, &self.api_listen, &self.cluster_listen]
            .into_iter()
            .flatten()
        {
            if let Some(other) = taken
                .iter()
                .find(|t| t.value.port() != 0 && t.value == l.value)
            {
                return Err(l.from.error(format!(
                    "{} is already a listener's address (see {})",
                    l.value,
                    describe(&other.from)
                )));
            }
            taken.push(l);
        }

        let demo = self.apps.as_ref().is_none_or(Vec::is_empty);
        let kick = self.kick_older_logins.as_ref().map(|k| k.value);
        if !demo {
            config.apps.clear();
        }
        for app in self.apps.iter().flatten() {
            if config.apps.iter().any(|a| a.appid == app.appid) {
                return Err(app.from.error(format!("app {} is given twice", app.appid)));
            }
            let mut a = AppConfig::with_secret(app.appid, "");
            a.secret = None;
            if let Some(s) = &app.secret {
                check_secret(&format!("the secret of app {}", app.appid), &s.value)
                    .map_err(|m| s.from.error(m))?;
                a.secret = Some(s.value.clone());
            }
            for k in &app.api_keys {
                check_secret(&format!("an API key of app {}", app.appid), &k.value)
                    .map_err(|m| k.from.error(m))?;
                a.api_keys.push(k.value.clone());
            }
            a.allow_appid_mode = self
                .appid_mode
                .as_ref()
                .map(|m| m.value)
                .or(app.appid_mode)
                .unwrap_or(false);
            a.kick_older_logins = kick.or(app.kick_older_logins).unwrap_or(false);
            if a.secret.is_none() && !a.allow_appid_mode {
                return Err(app.from.error(format!(
                    "app {} has no secret and appid mode is off: nobody could log in",
                    app.appid
                )));
            }
            config.apps.push(a);
        }
        if demo {
            for a in &mut config.apps {
                a.kick_older_logins = kick.unwrap_or(false);
            }
        }
        if let Some(keys) = self.api_keys.as_ref().filter(|k| !k.is_empty()) {
            for a in &mut config.apps {
                a.api_keys.clear();
            }
            for (appid, key) in keys {
                let Some(app) = config.apps.iter_mut().find(|a| a.appid == *appid) else {
                    return Err(key.from.error(format!(
                        "app {appid} is not served (an API key is for one of the apps served)"
                    )));
                };
                check_secret(&format!("an API key of app {appid}"), &key.value)
                    .map_err(|m| key.from.error(m))?;
                app.api_keys.push(key.value.clone());
            }
        }
        let hook_origins = self.hooks(&mut config)?;
        // The library's own check; the rules above already hold, this keeps
        // the binary from ever starting with what the library would refuse.
        config.validate().map_err(|e| {
            let hook = match &e {
                ConfigError::BadHookUrl { appid } => {
                    hook_origins.iter().find(|h| h.0 == *appid).map(|h| &h.1)
                }
                ConfigError::WeakHookSecret { appid, .. } => {
                    hook_origins.iter().find(|h| h.0 == *appid).map(|h| &h.2)
                }
                _ => None,
            };
            if let Some(from) = hook {
                return from.error(&e);
            }
            let appid = match &e {
                ConfigError::WeakSecret { appid, .. } | ConfigError::WeakApiKey { appid, .. } => {
                    Some(*appid)
                }
                ConfigError::SharedApiKey { second, .. } => Some(*second),
                _ => None,
            };
            match self.apps.iter().flatten().find(|a| Some(a.appid) == appid) {
                Some(app) => app.from.error(&e),
                None => SettingsError::command_line(e.to_string()),
            }
        })?;

        let cluster = match (&self.cluster_listen, &self.engine) {
            (None, _) => None,
            (
                Some(l),
                Some(Set {
                    value: Engine::Redis(_),
                    ..
                }),
            ) => {
                let advertise = match &self.cluster_advertise {
                    Some(a) => a.value.clone(),
                    None if l.value.ip().is_unspecified() => {
                        return Err(l.from.error(format!(
                            "{} is every interface: say where the other nodes reach this one with --cluster-advertise HOST:PORT",
                            l.value
                        )))
                    }
                    None => l.value.to_string(),
                };
                Some((l.value, advertise))
            }
            (Some(l), _) => {
                return Err(l.from.error(
                    "a cluster shares its state through Redis: give --engine redis://HOST:PORT",
                ))
            }
        };
        if let (None, Some(a)) = (&self.cluster_listen, &self.cluster_advertise) {
            return Err(a
                .from
                .error("--cluster-advertise goes with --cluster-listen"));
        }
        let cluster_tls = self.cluster_tls()?;
        if let (None, Some(t)) = (&self.cluster_listen, &cluster_tls) {
            return Err(t
                .from
                .error("--cluster-tls-cert, --cluster-tls-key and --cluster-tls-ca go with --cluster-listen"));
        }

        Ok(Serve {
            listen: listen.value,
            cluster,
            cluster_tls: cluster_tls.map(|t| t.value),
            ws_listen: self.ws_listen.map(|s| s.value),
            api_listen: self.api_listen.map(|s| s.value),
            level: self.log.map_or(tracing::Level::INFO, |l| l.value),
            demo,
            tls,
            config,
            runner,
        })
    }
}

impl Layer {
    /// The links' TLS between nodes: the three files, read and checked,
    /// or none of them.
    fn cluster_tls(&self) -> Result<Option<Set<ClusterTls>>, SettingsError> {
        const ALL: &str = "--cluster-tls-cert, --cluster-tls-key and --cluster-tls-ca go together \
             (cluster_tls_cert, cluster_tls_key and cluster_tls_ca in a config file)";
        match (
            &self.cluster_tls_cert,
            &self.cluster_tls_key,
            &self.cluster_tls_ca,
        ) {
            (None, None, None) => Ok(None),
            (Some(cert), Some(key), Some(ca)) => {
                let tls = NodeTls::from_pem_files(&cert.value, &key.value, &ca.value)
                    .map_err(|e| cert.from.error(format!("cluster TLS: {e}")))?;
                Ok(Some(Set::new(
                    ClusterTls {
                        tls,
                        cert: cert.value.clone(),
                        key: key.value.clone(),
                        ca: ca.value.clone(),
                    },
                    cert.from.clone(),
                )))
            }
            (cert, key, ca) => {
                let one = cert.as_ref().or(key.as_ref()).or(ca.as_ref());
                Err(one.expect("one is set").from.error(ALL))
            }
        }
    }

    /// Sets the hook of each app of `config` that has one (the file's
    /// `[app.hook]`, its URL and secret overridden by the command line's);
    /// per hooked app, where its URL and its secret were set.
    fn hooks(
        &self,
        config: &mut ServerConfig,
    ) -> Result<Vec<(u32, Origin, Origin)>, SettingsError> {
        for (appid, set) in self.hook_urls.iter().chain(&self.hook_secrets) {
            if !config.apps.iter().any(|a| a.appid == *appid) {
                return Err(set.from.error(format!(
                    "app {appid} is not served (hooks are for the apps of --app or [[app]])"
                )));
            }
        }
        let mut origins = Vec::new();
        for app in &mut config.apps {
            let appid = app.appid;
            let file = self
                .apps
                .iter()
                .flatten()
                .find(|a| a.appid == appid)
                .and_then(|a| a.hook.as_ref());
            let pick = |cli: &[(u32, Set<String>)], file: Option<&Set<String>>| {
                cli.iter()
                    .find(|(a, _)| *a == appid)
                    .map(|(_, s)| s)
                    .or(file)
                    .cloned()
            };
            let url = pick(&self.hook_urls, file.and_then(|h| h.url.as_ref()));
            let secret = pick(&self.hook_secrets, file.and_then(|h| h.secret.as_ref()));
            let (url, secret) = match (url, secret) {
                (Some(u), Some(s)) => (u, s),
                (None, None) => match file {
                    Some(h) => {
                        return Err(h
                            .from
                            .error(format!("the hook of app {appid} has no url and no secret")))
                    }
                    None => continue,
                },
                (Some(one), None) => {
                    return Err(one.from.error(format!(
                        "app {appid} has a hook URL but no hook secret \
                         (--hook-secret {appid}=SECRET, or secret in its [app.hook])"
                    )))
                }
                (None, Some(one)) => {
                    return Err(one.from.error(format!(
                        "app {appid} has a hook secret but no hook URL \
                         (--hook-url {appid}=URL, or url in its [app.hook])"
                    )))
                }
            };
            let mut hook = HookConfig::new(url.value, secret.value);
            for p in file.map_or(&[][..], |h| &h.message_channel_prefixes) {
                hook = hook.with_message_prefix(p.clone());
            }
            app.hook = Some(hook);
            origins.push((appid, url.from, secret.from));
        }
        Ok(origins)
    }
}

/// `top`'s values per appid over `base`'s.
fn per_app<T>(base: Vec<(u32, T)>, top: Vec<(u32, T)>) -> Vec<(u32, T)> {
    let mut out: Vec<(u32, T)> = base
        .into_iter()
        .filter(|(a, _)| !top.iter().any(|(b, _)| a == b))
        .collect();
    out.extend(top);
    out
}

/// Positions in a config file's text.
struct Locator<'a> {
    path: &'a Path,
    text: &'a str,
}

impl Locator<'_> {
    /// The origin of `key`, whose value is at `span`.
    fn origin(&self, key: &str, span: std::ops::Range<usize>) -> Origin {
        let (line, col) = line_col(self.text, span.start);
        Origin::File {
            path: self.path.to_owned(),
            key: key.to_owned(),
            line,
            col,
        }
    }

    /// The value of `key`, with its origin.
    fn set<T>(&self, key: &str, v: Spanned<T>) -> Set<T> {
        let from = self.origin(key, v.span());
        Set::new(v.into_inner(), from)
    }

    /// The text value of `key` parsed by the command line's own `parse`.
    fn parse<T>(
        &self,
        key: &str,
        v: Option<Spanned<String>>,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<Option<Set<T>>, SettingsError> {
        v.map(|v| {
            let from = self.origin(key, v.span());
            match parse(v.get_ref()) {
                Ok(x) => Ok(Set::new(x, from)),
                Err(m) => Err(from.error(m)),
            }
        })
        .transpose()
    }
}

/// Where a value was set, in a few words.
fn describe(from: &Origin) -> String {
    match from {
        Origin::Flag(name) => format!("--{name}"),
        Origin::Env(var) => (*var).to_owned(),
        Origin::File {
            path,
            key,
            line,
            col,
        } => format!("{key} at {}:{line}:{col}", path.display()),
    }
}

/// The 1-based line and column (in characters) of byte `offset` of `text`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

/// The TLS of a cluster's links, and the files it was read from.
#[derive(Clone, Debug)]
pub struct ClusterTls {
    pub tls: NodeTls,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

/// Everything the serve command runs with, every rule checked.
#[derive(Debug)]
pub struct Serve {
    /// The TCP listener's address.
    pub listen: SocketAddr,
    /// The WebSocket listener's, if any.
    pub ws_listen: Option<SocketAddr>,
    /// The server API listener's, if any.
    pub api_listen: Option<SocketAddr>,
    /// With a cluster: where the other nodes' links come, and the address
    /// they are told.
    pub cluster: Option<(SocketAddr, String)>,
    /// With TLS on the links between nodes: it, and its files.
    pub cluster_tls: Option<ClusterTls>,
    /// The log level.
    pub level: tracing::Level,
    /// Whether the demo app is served (no app was given).
    pub demo: bool,
    /// The TLS certificate and key files, when TLS is on.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// The Server's configuration.
    pub config: ServerConfig,
    /// The runner's.
    pub runner: RunnerConfig,
}

impl Serve {
    /// One paragraph on what would be served, for `check-config`. Never
    /// shows a secret or an API key, only whether there are some.
    pub fn summary(&self) -> String {
        let mut s = format!("listens on {} (TCP", self.listen);
        if let Some((cert, key)) = &self.tls {
            s += &format!(", TLS with {} and {}", cert.display(), key.display());
        }
        s += ")";
        match self.ws_listen {
            Some(ws) => s += &format!(", WebSocket and pages on {ws}"),
            None => s += ", no WebSocket listener",
        }
        match self.api_listen {
            Some(api) => s += &format!(", server API on {api} (with /metrics and the dashboard)"),
            None => s += ", no server API listener",
        }
        // The store's address, never its password.
        match &self.runner.store {
            Some(store) => s += &format!(", state kept in {store}"),
            None => s += ", state in memory",
        }
        if let Some((listen, advertise)) = &self.cluster {
            s += &format!(", a cluster node (other nodes connect to {listen}, told {advertise}");
            match &self.cluster_tls {
                Some(t) => {
                    s += &format!(
                        "; links in TLS with {} and {}, nodes' certificates checked against {}",
                        t.cert.display(),
                        t.key.display(),
                        t.ca.display()
                    )
                }
                None => s += "; links in plain TCP",
            }
            s += ")";
        }
        let apps: Vec<String> = self
            .config
            .apps
            .iter()
            .map(|a| {
                let keys = match a.api_keys.len() {
                    0 => "no API key".to_owned(),
                    1 => "1 API key".to_owned(),
                    n => format!("{n} API keys"),
                };
                let hook = match &a.hook {
                    None => String::new(),
                    Some(h) => format!(
                        ", webhooks to {} ({} message prefixes)",
                        origin_of(&h.url),
                        h.message_channel_prefixes.len()
                    ),
                };
                format!(
                    "{}{} ({}, {keys}, appid mode {}, kick older logins {}{hook})",
                    a.appid,
                    if self.demo && a.appid == DEMO_APPID {
                        " (the demo app)"
                    } else {
                        ""
                    },
                    if a.secret.is_some() {
                        "token secret set"
                    } else {
                        "no token secret"
                    },
                    on_off(a.allow_appid_mode),
                    on_off(a.kick_older_logins),
                )
            })
            .collect();
        s += &format!("; apps: {}", apps.join(", "));
        s += &format!(
            "; {} threads, at most {} connections ({} per IP), log level {}.",
            self.runner.threads,
            self.runner.max_connections,
            self.runner.max_connections_per_ip,
            self.level.as_str().to_ascii_lowercase()
        );
        s
    }
}

/// A URL's scheme, host and port, without its user info, path and query
/// (which may carry a password or a token).
pub fn origin_of(url: &str) -> String {
    let rest = url.find("://").map_or(0, |i| i + 3);
    let end = url[rest..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| rest + i);
    let authority = &url[rest..end];
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    format!("{}{host}", &url[..rest])
}

/// A TOML error's message with the string values it quotes left out (a
/// value of the wrong type may be a secret: `api_keys = "KEY"` for
/// `["KEY"]`).
fn without_strings(message: &str) -> String {
    const QUOTED: &str = "string \"";
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(i) = rest.find(QUOTED) {
        out.push_str(&rest[..i]);
        out.push_str("a string");
        // The value's closing quote (escaped ones are part of the value).
        let value = &rest[i + QUOTED.len()..];
        let mut escaped = false;
        let end = value.char_indices().find(|&(_, c)| {
            let close = c == '"' && !escaped;
            escaped = c == '\\' && !escaped;
            close
        });
        rest = match end {
            Some((j, _)) => &value[j + 1..],
            None => "",
        };
    }
    out.push_str(rest);
    out
}

fn on_off(b: bool) -> &'static str {
    if b {
        "on"
    } else {
        "off"
    }
}

/// The config file, as written (see `server/hummer.example.toml`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    listen: Option<Spanned<String>>,
    ws_listen: Option<Spanned<String>>,
    api_listen: Option<Spanned<String>>,
    engine: Option<Spanned<String>>,
    cluster_listen: Option<Spanned<String>>,
    cluster_advertise: Option<Spanned<String>>,
    cluster_tls_cert: Option<Spanned<String>>,
    cluster_tls_key: Option<Spanned<String>>,
    cluster_tls_ca: Option<Spanned<String>>,
    ws_allowed_origins: Option<Spanned<Vec<String>>>,
    web_root: Option<Spanned<String>>,
    tls_cert: Option<Spanned<String>>,
    tls_key: Option<Spanned<String>>,
    log: Option<Spanned<String>>,
    seed: Option<Spanned<u64>>,
    threads: Option<Spanned<usize>>,
    lease_secs: Option<Spanned<u64>>,
    limits: Option<FileLimits>,
    #[serde(default)]
    app: Vec<FileApp>,
}

/// The file's `[limits]` table.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileLimits {
    max_members: Option<Spanned<usize>>,
    presence_grace_secs: Option<Spanned<u64>>,
    idle_timeout_secs: Option<Spanned<u64>>,
    max_queued_bytes: Option<Spanned<usize>>,
    rate_limit_sends: Option<Spanned<usize>>,
    login_rate_per_ip: Option<Spanned<u64>>,
    max_connections: Option<Spanned<usize>>,
    max_connections_per_ip: Option<Spanned<usize>>,
    listen_backlog: Option<Spanned<u32>>,
    api_rate: Option<Spanned<u32>>,
}

/// One of the file's `[[app]]` tables.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileApp {
    appid: Spanned<u32>,
    secret: Option<Spanned<String>>,
    appid_mode: Option<bool>,
    kick_older_logins: Option<bool>,
    #[serde(default)]
    api_keys: Vec<Spanned<String>>,
    hook: Option<FileHook>,
}

/// An `[app.hook]` table: where the app's events go.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileHook {
    url: Option<Spanned<String>>,
    secret: Option<Spanned<String>>,
    #[serde(default)]
    message_channel_prefixes: Vec<String>,
}

/// The tests' CA, shared with the library's tests.
#[cfg(test)]
#[path = "../../tests/common/certs.rs"]
mod certs;

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| (*s).to_owned()).collect()
    }

    /// The command line's layer with `vars` as the whole environment.
    fn cli(flags: &[&str], vars: &[(&str, &str)]) -> Layer {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        command_line(&args(flags), |k| {
            vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
        })
        .unwrap()
        .1
    }

    fn file(text: &str) -> Layer {
        Layer::from_toml(Path::new("/etc/hummer/h.toml"), text).unwrap()
    }

    fn file_err(text: &str) -> String {
        Layer::from_toml(Path::new("h.toml"), text)
            .and_then(|l| l.build(WebSocketOptions::default()))
            .unwrap_err()
            .message
    }

    fn build(l: Layer) -> Serve {
        l.build(WebSocketOptions::default()).unwrap()
    }

    #[test]
    fn flags_override_the_environment_which_overrides_the_file_key_by_key() {
        let f = file(
            "listen = \"127.0.0.1:1001\"\nseed = 5\nthreads = 3\n\
             [limits]\nmax_members = 7\nidle_timeout_secs = 9\n",
        );
        let c = cli(
            &["--listen", "127.0.0.1:1003", "--max-members", "70"],
            &[("HUMMER_LISTEN", "127.0.0.1:1002"), ("HUMMER_SEED", "6")],
        );
        let s = build(f.overlay(c));
        assert_eq!(s.listen, "127.0.0.1:1003".parse().unwrap(), "flag over env");
        assert_eq!(s.config.seed, 6, "env over file");
        assert_eq!(s.config.max_channel_members, 70, "flag over file");
        assert_eq!(s.runner.threads, 3, "file alone");
        assert_eq!(s.config.idle_timeout, Duration::from_secs(9), "file alone");
        assert_eq!(
            s.config.presence_grace,
            ServerConfig::default().presence_grace,
            "default"
        );
    }

    #[test]
    fn the_api_rate_comes_from_the_file_the_environment_or_a_flag() {
        let f = file("[limits]\napi_rate = 50\n");
        let r = build(f.clone()).runner.api;
        assert_eq!((r.requests_per_second, r.burst), (50, 100));
        let r = build(f.clone().overlay(cli(&[], &[("HUMMER_API_RATE", "60")])))
            .runner
            .api;
        assert_eq!((r.requests_per_second, r.burst), (60, 120));
        let r = build(f.overlay(cli(&["--api-rate", "70"], &[("HUMMER_API_RATE", "60")])))
            .runner
            .api;
        assert_eq!((r.requests_per_second, r.burst), (70, 140));
        let r = build(file("")).runner.api;
        assert_eq!((r.requests_per_second, r.burst), (200, 400), "the default");
        let e = file_err("[limits]\napi_rate = 0\n");
        assert_eq!(e, "h.toml:2:12: limits.api_rate: must be at least 1");
    }

    #[test]
    fn the_origin_follows_the_winning_value() {
        let f = file("[limits]\nmax_connections = 0\n");
        let e = f
            .clone()
            .build(WebSocketOptions::default())
            .unwrap_err()
            .message;
        assert_eq!(
            e,
            "/etc/hummer/h.toml:2:19: limits.max_connections: must be at least 1"
        );
        let e = f
            .clone()
            .overlay(cli(&[], &[("HUMMER_MAX_CONNECTIONS", "0")]))
            .build(WebSocketOptions::default())
            .unwrap_err();
        assert_eq!(e.message, "HUMMER_MAX_CONNECTIONS: must be at least 1");
        assert!(!e.in_file);
        let fixed = f.overlay(cli(&["--max-connections", "4"], &[]));
        assert_eq!(build(fixed).runner.max_connections, 4);
    }

    #[test]
    fn command_line_apps_replace_the_files_apps_and_add_up_among_themselves() {
        let f = file(&format!(
            "[[app]]\nappid = 1\nsecret = \"{SECRET}\"\napi_keys = [\"{SECRET}\"]\n\
             [[app]]\nappid = 2\nsecret = \"{SECRET}\"\nappid_mode = true\n"
        ));
        let s = build(f.clone());
        let ids: Vec<u32> = s.config.apps.iter().map(|a| a.appid).collect();
        assert_eq!(ids, [1, 2]);
        assert_eq!(s.config.apps[0].api_keys, [SECRET]);
        assert!(!s.config.apps[0].allow_appid_mode && s.config.apps[1].allow_appid_mode);
        assert!(!s.demo);

        let c = cli(
            &["--app", &format!("4:{SECRET}")],
            &[("HUMMER_APPS", &format!("3:{SECRET}"))],
        );
        let s = build(f.clone().overlay(c));
        let ids: Vec<u32> = s.config.apps.iter().map(|a| a.appid).collect();
        assert_eq!(ids, [3, 4], "env and flag apps, none of the file's");
        assert!(s.config.apps.iter().all(|a| a.api_keys.is_empty()));

        // An empty HUMMER_APPS gives no app: the file's stay.
        let s = build(f.overlay(cli(&[], &[("HUMMER_APPS", "")])));
        assert_eq!(s.config.apps.len(), 2);
    }

    #[test]
    fn command_line_switches_override_every_apps_own() {
        let f = file(&format!(
            "[[app]]\nappid = 1\nsecret = \"{SECRET}\"\nappid_mode = true\n\
             kick_older_logins = true\n"
        ));
        let s = build(f.clone().overlay(cli(
            &[],
            &[
                ("HUMMER_APPID_MODE", "0"),
                ("HUMMER_KICK_OLDER_LOGINS", "no"),
            ],
        )));
        assert!(!s.config.apps[0].allow_appid_mode);
        assert!(!s.config.apps[0].kick_older_logins);
        let s = build(f);
        assert!(s.config.apps[0].allow_appid_mode && s.config.apps[0].kick_older_logins);
        // The demo app keeps its appid mode; kick applies to it.
        let s = build(cli(&["--kick-older-logins"], &[("HUMMER_APPID_MODE", "0")]));
        assert!(s.demo);
        assert!(s.config.apps[0].allow_appid_mode && s.config.apps[0].kick_older_logins);
    }

    #[test]
    fn the_config_file_path_comes_from_the_flag_over_the_environment() {
        let env = [("HUMMER_CONFIG", "env.toml")];
        let (p, _) = command_line(&args(&["--config", "flag.toml"]), |k| {
            env.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| (*v).to_owned())
        })
        .unwrap();
        assert_eq!(p.unwrap().value, PathBuf::from("flag.toml"));
        let (p, _) = command_line(&[], |k| {
            env.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| (*v).to_owned())
        })
        .unwrap();
        assert_eq!(p.unwrap().value, PathBuf::from("env.toml"));
    }

    #[test]
    fn file_paths_are_relative_to_the_files_directory() {
        let f = file("web_root = \"www\"\ntls_cert = \"/abs/c.pem\"\ntls_key = \"k.pem\"\n");
        assert_eq!(f.web_root.unwrap().value, PathBuf::from("/etc/hummer/www"));
        assert_eq!(f.tls_cert.unwrap().value, PathBuf::from("/abs/c.pem"));
        assert_eq!(f.tls_key.unwrap().value, PathBuf::from("/etc/hummer/k.pem"));
    }

    #[test]
    fn every_rule_holds_for_the_file_as_for_the_flags() {
        assert_eq!(
            file_err("threads = 0\n"),
            "h.toml:1:11: threads: must be at least 1"
        );
        let flag = cli(&["--threads", "0"], &[])
            .build(WebSocketOptions::default())
            .unwrap_err();
        assert_eq!(flag.message, "--threads: must be at least 1");
        assert_eq!(
            file_err("[[app]]\nappid = 9\nsecret = \"short\"\n"),
            "h.toml:3:10: app.secret: the secret of app 9 is 5 bytes; app secrets and API keys \
             must be at least 32 bytes (e.g. 32 random bytes, base64-encoded: `openssl rand \
             -base64 32`)"
        );
        let flag = cli(&["--app", "9:short"], &[])
            .build(WebSocketOptions::default())
            .unwrap_err();
        assert!(
            flag.message
                .starts_with("--app: the secret of app 9 is 5 bytes"),
            "{}",
            flag.message
        );
        assert!(file_err(&format!(
            "[[app]]\nappid = 9\nsecret = \"{SECRET}\"\napi_keys = [\"{SECRET}\", \"k\"]\n"
        ))
        .starts_with(
            "h.toml:4:{}: app.api_keys: an API key of app 9 is 1 bytes"
                .replace("{}", &(15 + SECRET.len() + 2).to_string())
                .as_str()
        ));
        assert!(file_err("ws_allowed_origins = [\" \"]\n").contains("no origin given"));
        assert!(file_err("log = \"loud\"\n")
            .starts_with("h.toml:1:7: log: \"loud\" is not a log level"));
        assert!(file_err("tls_cert = \"c.pem\"\n").contains("--tls-cert and --tls-key go together"));
        assert!(file_err("[[app]]\nappid = 3\n").contains("app 3 has no secret"));
        assert!(file_err(&format!(
            "[[app]]\nappid = 3\nsecret = \"{SECRET}\"\n[[app]]\nappid = 3\nsecret = \"{SECRET}\"\n"
        ))
        .starts_with("h.toml:5:9: app.appid: app 3 is given twice"));
        assert!(
            file_err("listen = \"127.0.0.1:7000\"\napi_listen = \"127.0.0.1:7000\"\n").starts_with(
                "h.toml:2:14: api_listen: 127.0.0.1:7000 is already a listener's address"
            )
        );
    }

    #[test]
    fn unknown_keys_and_wrong_types_are_refused_where_they_are() {
        assert!(file_err("listen = \"127.0.0.1:1\"\n\n  lisen = 3\n")
            .starts_with("h.toml:3:3: unknown field `lisen`"));
        assert!(file_err("[limits]\nmax_members = \"many\"\n")
            .starts_with("h.toml:2:15: invalid type: a string, expected"));
        assert!(file_err("[[app]]\nappid = 1\nsecrets = \"x\"\n")
            .starts_with("h.toml:3:1: unknown field `secrets`"));
    }

    #[test]
    fn an_engine_of_several_redis_takes_threads_in_multiples_of_them() {
        let two = "engine = \"redis://127.0.0.1:6379, redis://:pw@127.0.0.1:6380\"\n";
        let s = build(file(two).overlay(cli(&["--threads", "4"], &[])));
        let store = s.runner.store.as_ref().unwrap();
        assert_eq!(store.instances(), 2);
        assert_eq!(
            store.url(),
            "redis://127.0.0.1:6379,redis://:***@127.0.0.1:6380"
        );
        assert_eq!(s.runner.threads, 4);
        let e = file(two)
            .overlay(cli(&["--threads", "3"], &[]))
            .build(WebSocketOptions::default())
            .unwrap_err();
        assert_eq!(
            e.message,
            "--threads: must be a multiple of the engine's 2 Redis instances"
        );
        // Left to its default (the cores), the count is rounded up.
        let cores = RunnerConfig::default().threads;
        let s = build(file(two));
        assert_eq!(s.runner.threads, cores.div_ceil(2) * 2);
        let three = "engine = \"redis://h:1,redis://h:2,redis://h:3\"\nthreads = 6\n";
        assert_eq!(build(file(three)).runner.threads, 6);
        let s = build(file("engine = \"redis://h:1,redis://h:2,redis://h:3\"\n"));
        assert_eq!(s.runner.threads % 3, 0);
        assert!(s.runner.threads <= usize::from(MAX_SHARDS));
        let e = file_err("engine = \"redis://h:1,redis://h:1\"\n");
        assert!(e.contains("given twice"), "{e}");
    }

    #[test]
    fn the_engine_comes_from_the_file_the_environment_or_a_flag_and_hides_its_password() {
        let store = |s: &Serve| s.runner.store.as_ref().map(|c| c.to_string());
        let f = file("engine = \"redis://127.0.0.1:6379\"\n");
        assert_eq!(
            store(&build(f.clone())).as_deref(),
            Some("redis://127.0.0.1:6379 (namespace hummer)")
        );
        let s = build(f.clone().overlay(cli(&[], &[("HUMMER_ENGINE", "memory")])));
        assert_eq!(store(&s), None);
        let s = build(f.overlay(cli(&["--engine", "redis://:hunter2@10.0.0.1:7000/2"], &[])));
        let shown = store(&s).unwrap();
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("10.0.0.1:7000"), "{shown}");
        assert!(!s.summary().contains("hunter2"));
        assert!(s.summary().contains("state kept in"), "{}", s.summary());
        assert_eq!(store(&build(Layer::default())), None);
        let e = command_line(&args(&["--engine", "postgres://x"]), |_| None).unwrap_err();
        assert_eq!(
            e.message,
            "--engine: an engine is `memory` or a redis:// or rediss:// URL"
        );
        let e = file_err("engine = \"redis://:secret@\"\n");
        assert!(e.starts_with("h.toml:1:10: engine: "), "{e}");
        assert!(!e.contains("secret"), "{e}");
    }

    #[test]
    fn a_cluster_node_needs_redis_and_an_address_the_others_reach() {
        let redis = "engine = \"redis://127.0.0.1:6379\"\n";
        let f = file(&format!("{redis}cluster_listen = \"10.0.0.5:7400\"\n"));
        let s = build(f.clone());
        assert_eq!(
            s.cluster,
            Some(("10.0.0.5:7400".parse().unwrap(), "10.0.0.5:7400".to_owned()))
        );
        assert!(s
            .summary()
            .contains("a cluster node (other nodes connect to 10.0.0.5:7400"));
        // The environment and the flags, over the file.
        let c = cli(
            &["--cluster-advertise", "node-a.internal:7400"],
            &[("HUMMER_CLUSTER_LISTEN", "0.0.0.0:7400")],
        );
        let s = build(f.overlay(c));
        assert_eq!(
            s.cluster,
            Some((
                "0.0.0.0:7400".parse().unwrap(),
                "node-a.internal:7400".to_owned()
            ))
        );
        // Every interface needs an address to tell; no Redis, no cluster.
        let e = file_err(&format!("{redis}cluster_listen = \"0.0.0.0:7400\"\n"));
        assert!(e.contains("--cluster-advertise HOST:PORT"), "{e}");
        let e = file_err("cluster_listen = \"10.0.0.5:7400\"\n");
        assert!(e.contains("give --engine redis://"), "{e}");
        let e = file_err(&format!("{redis}cluster_advertise = \"a:1\"\n"));
        assert!(e.contains("goes with --cluster-listen"), "{e}");
        for bad in ["nohost", ":7400", "a:0", "a:port"] {
            let e = command_line(&args(&["--cluster-advertise", bad]), |_| None).unwrap_err();
            assert!(
                e.message.contains("is not HOST:PORT"),
                "{bad}: {}",
                e.message
            );
        }
        assert_eq!(build(file(redis)).cluster, None);
    }

    /// A CA and a node certificate it signed, as files in `dir`: (cert,
    /// key, ca).
    fn node_pems(dir: &Path) -> [PathBuf; 3] {
        let (ca, cert, key) = certs::signed(&["10.0.0.5"]);
        let files = [dir.join("n.pem"), dir.join("n.key"), dir.join("ca.pem")];
        for (f, text) in files.iter().zip([cert, key, ca]) {
            std::fs::write(f, text).unwrap();
        }
        files
    }

    #[test]
    fn cluster_tls_takes_its_three_files_or_none_from_every_source() {
        let dir = tempfile::tempdir().unwrap();
        let [cert, key, ca] = node_pems(dir.path());
        let redis = "engine = \"redis://127.0.0.1:6379\"\ncluster_listen = \"10.0.0.5:7400\"\n";
        // The file's paths are relative to its directory.
        let toml = dir.path().join("h.toml");
        let text = format!(
            "{redis}cluster_tls_cert = \"n.pem\"\ncluster_tls_key = \"n.key\"\ncluster_tls_ca = \"ca.pem\"\n"
        );
        let f = Layer::from_toml(&toml, &text).unwrap();
        assert_eq!(f.cluster_tls_ca.as_ref().unwrap().value, ca);
        let s = build(f);
        let t = s.cluster_tls.as_ref().expect("cluster TLS");
        assert_eq!((&t.cert, &t.key, &t.ca), (&cert, &key, &ca));
        let summary = s.summary();
        assert!(summary.contains("links in TLS with"), "{summary}");
        assert!(summary.contains("checked against"), "{summary}");
        // Plain links say so.
        assert!(build(file(redis)).summary().contains("links in plain TCP"));
        assert!(build(file(redis)).cluster_tls.is_none());

        // Flags and variables, each naming one file.
        let (c, k, a) = (
            cert.to_str().unwrap(),
            key.to_str().unwrap(),
            ca.to_str().unwrap(),
        );
        let layer = cli(
            &["--cluster-tls-cert", c, "--cluster-tls-key", k],
            &[("HUMMER_CLUSTER_TLS_CA", a)],
        );
        assert!(build(file(redis).overlay(layer)).cluster_tls.is_some());

        // What the file with these flags and variables is refused for.
        let refused = |flags: &[&str], vars: &[(&str, &str)]| {
            file(redis)
                .overlay(cli(flags, vars))
                .build(WebSocketOptions::default())
                .unwrap_err()
                .message
        };
        // One or two of the three: an error naming the rule, where it was set.
        let all_or_none = "--cluster-tls-cert, --cluster-tls-key and --cluster-tls-ca go together";
        for flags in [
            vec!["--cluster-tls-cert", c],
            vec!["--cluster-tls-key", k],
            vec!["--cluster-tls-ca", a],
            vec!["--cluster-tls-cert", c, "--cluster-tls-key", k],
            vec!["--cluster-tls-key", k, "--cluster-tls-ca", a],
        ] {
            let e = refused(&flags, &[]);
            assert!(e.contains(all_or_none), "{flags:?}: {e}");
            assert!(e.starts_with("--cluster-tls-"), "{e}");
        }
        let e = refused(&[], &[("HUMMER_CLUSTER_TLS_KEY", k)]);
        assert!(e.starts_with("HUMMER_CLUSTER_TLS_KEY: "), "{e}");
        let e = file_err(&format!("{redis}cluster_tls_ca = \"ca.pem\"\n"));
        assert!(e.contains("cluster_tls_ca in a config file"), "{e}");

        // Files that are not what they should be: the error says which.
        let flags = |cert, key, ca| {
            [
                "--cluster-tls-cert",
                cert,
                "--cluster-tls-key",
                key,
                "--cluster-tls-ca",
                ca,
            ]
        };
        let e = refused(&flags(c, k, k), &[]);
        assert!(e.contains("cluster TLS: CA"), "{e}");
        let missing = dir.path().join("nothing.pem");
        let e = refused(&flags(missing.to_str().unwrap(), k, a), &[]);
        assert!(e.contains("nothing.pem"), "{e}");

        // Without a cluster, they mean nothing: an error.
        let e = cli(&flags(c, k, a), &[])
            .build(WebSocketOptions::default())
            .unwrap_err();
        assert!(
            e.message.contains("go with --cluster-listen"),
            "{}",
            e.message
        );
    }

    #[test]
    fn api_listen_is_parsed_from_every_source() {
        let f = file("api_listen = \"127.0.0.1:7302\"\n");
        assert_eq!(
            build(f.clone()).api_listen,
            Some("127.0.0.1:7302".parse().unwrap())
        );
        let s = build(f.overlay(cli(&[], &[("HUMMER_API_LISTEN", "127.0.0.1:7400")])));
        assert_eq!(s.api_listen, Some("127.0.0.1:7400".parse().unwrap()));
        let e = command_line(&args(&["--api-listen", "nowhere"]), |_| None).unwrap_err();
        assert_eq!(
            e.message,
            "--api-listen: \"nowhere\" is not an address like 127.0.0.1:7302"
        );
        assert_eq!(build(Layer::default()).api_listen, None);
    }

    #[test]
    fn hooks_come_from_the_file_and_the_command_line_overrides_them_app_by_app() {
        let hs = "H".repeat(32);
        let f = file(&format!(
            "[[app]]\nappid = 1\nsecret = \"{SECRET}\"\n\
             [app.hook]\nurl = \"https://hooks.example.com/h?t=x\"\nsecret = \"{hs}\"\n\
             message_channel_prefixes = [\"live-\", \"ops-\"]\n\
             [[app]]\nappid = 2\nsecret = \"{SECRET}\"\n"
        ));
        let s = build(f.clone());
        let h = s.config.apps[0].hook.clone().unwrap();
        assert_eq!(h.url, "https://hooks.example.com/h?t=x");
        assert_eq!(h.secret, hs);
        assert_eq!(h.message_channel_prefixes, ["live-", "ops-"]);
        assert_eq!(s.config.apps[1].hook, None);
        let text = s.summary();
        assert!(
            text.contains("webhooks to https://hooks.example.com (2 message prefixes)"),
            "{text}"
        );
        assert!(!text.contains(&hs) && !text.contains("t=x"), "{text}");

        let other = "S".repeat(40);
        let c = cli(
            &["--hook-url", "1=http://127.0.0.1:9000/x"],
            &[
                ("HUMMER_HOOK_SECRETS", &format!("1={hs}x,2={other}")),
                ("HUMMER_HOOK_URLS", "2=http://b.example/y"),
            ],
        );
        let s = build(f.overlay(c));
        let h = s.config.apps[0].hook.clone().unwrap();
        assert_eq!(h.url, "http://127.0.0.1:9000/x", "the flag's URL");
        assert_eq!(h.secret, format!("{hs}x"), "the variable's secret");
        assert_eq!(h.message_channel_prefixes, ["live-", "ops-"], "the file's");
        let h = s.config.apps[1].hook.clone().unwrap();
        assert_eq!(
            (h.url.as_str(), h.secret.as_str()),
            ("http://b.example/y", other.as_str())
        );
        // The demo app can have one too.
        let s = build(cli(
            &[
                "--hook-url",
                "10000=http://h/",
                "--hook-secret",
                &format!("10000={hs}"),
            ],
            &[],
        ));
        assert!(s.demo && s.config.apps[0].hook.is_some());
    }

    #[test]
    fn a_hook_needs_a_url_and_a_secret_that_the_library_accepts() {
        let hs = "H".repeat(32);
        assert_eq!(
            file_err(&format!(
                "[[app]]\nappid = 5\nsecret = \"{SECRET}\"\n[app.hook]\nurl = \"http://h/\"\n"
            )),
            "h.toml:5:7: app.hook.url: app 5 has a hook URL but no hook secret \
             (--hook-secret 5=SECRET, or secret in its [app.hook])"
        );
        let e = cli(&["--hook-secret", &format!("10000={hs}")], &[])
            .build(WebSocketOptions::default())
            .unwrap_err();
        assert!(
            e.message
                .starts_with("--hook-secret: app 10000 has a hook secret but no hook URL"),
            "{}",
            e.message
        );
        let e = cli(&[], &[("HUMMER_HOOK_URLS", "7=http://h/")])
            .build(WebSocketOptions::default())
            .unwrap_err();
        assert!(
            e.message
                .starts_with("HUMMER_HOOK_URLS: app 7 is not served"),
            "{}",
            e.message
        );
        assert!(command_line(&args(&["--hook-url", "http://h/"]), |_| None)
            .unwrap_err()
            .message
            .starts_with("--hook-url: \"http://h/\" is not APPID=URL"));
        // The library's own rules, at the value's origin.
        let e = cli(
            &[
                "--hook-url",
                "10000=ftp://h/",
                "--hook-secret",
                &format!("10000={hs}"),
            ],
            &[],
        )
        .build(WebSocketOptions::default())
        .unwrap_err();
        assert_eq!(
            e.message,
            "--hook-url: the hook URL of app 10000 must start with http:// or https://"
        );
        let e = file_err(&format!(
            "[[app]]\nappid = 5\nsecret = \"{SECRET}\"\n[app.hook]\nurl = \"http://h/\"\n\
             secret = \"short\"\n"
        ));
        assert!(
            e.starts_with("h.toml:6:10: app.hook.secret: the hook secret of app 5 is 5 bytes"),
            "{e}"
        );
        assert!(file_err(&format!(
            "[[app]]\nappid = 5\nsecret = \"{SECRET}\"\n[app.hook]\nurl = \"http://h/\"\n\
             prefixes = []\n"
        ))
        .starts_with("h.toml:6:1: unknown field `prefixes`"));
    }

    #[test]
    fn the_summary_tells_the_apps_but_no_secret_or_key() {
        let key = "K".repeat(40);
        let s = build(file(&format!(
            "api_listen = \"127.0.0.1:7302\"\n[[app]]\nappid = 77\nsecret = \"{SECRET}\"\n\
             api_keys = [\"{key}\"]\n"
        )));
        let text = s.summary();
        assert!(text.contains("77 (token secret set, 1 API key"), "{text}");
        assert!(text.contains("server API on 127.0.0.1:7302"), "{text}");
        assert!(!text.contains(SECRET) && !text.contains(&key), "{text}");
    }

    #[test]
    fn api_keys_from_the_command_line_replace_the_files_and_need_a_served_app() {
        let (k1, k2, k3) = ("1".repeat(32), "2".repeat(32), "3".repeat(40));
        let f = file(&format!(
            "[[app]]\nappid = 5\nsecret = \"{SECRET}\"\napi_keys = [\"{k1}\"]\n\
             [[app]]\nappid = 6\nsecret = \"{SECRET}\"\n"
        ));
        assert_eq!(build(f.clone()).config.app_of_api_key(&k1), Some(5));
        // Flags and the variable add up, and replace the file's keys.
        let c = cli(
            &["--api-key", &format!("6:{k2}")],
            &[("HUMMER_API_KEYS", &format!("5:{k3},"))],
        );
        let s = build(f.clone().overlay(c));
        assert_eq!(s.config.app_of_api_key(&k1), None);
        assert_eq!(s.config.app_of_api_key(&k2), Some(6));
        assert_eq!(s.config.app_of_api_key(&k3), Some(5));
        // The demo app takes keys too.
        let s = build(cli(&["--api-key", &format!("{DEMO_APPID}:{k2}")], &[]));
        assert_eq!(s.config.app_of_api_key(&k2), Some(DEMO_APPID));
        let err = |c: Layer| {
            f.clone()
                .overlay(c)
                .build(WebSocketOptions::default())
                .unwrap_err()
                .message
        };
        assert_eq!(
            err(cli(&["--api-key", &format!("9:{k2}")], &[])),
            "--api-key: app 9 is not served (an API key is for one of the apps served)"
        );
        let e = err(cli(&[], &[("HUMMER_API_KEYS", "5:short")]));
        assert!(
            e.starts_with("HUMMER_API_KEYS: an API key of app 5 is 5 bytes"),
            "{e}"
        );
        let e = command_line(&args(&["--api-key", "nokey"]), |_| None).unwrap_err();
        assert_eq!(e.message, "--api-key: an API key is given as APPID:KEY");
    }

    #[test]
    fn urls_are_shown_without_their_user_info_path_or_query() {
        assert_eq!(
            origin_of("https://user:hunter2-password@hooks.example.com:8443/x?t=1"),
            "https://hooks.example.com:8443"
        );
        assert_eq!(origin_of("http://h.example/p@q"), "http://h.example");
        assert_eq!(origin_of("http://h.example"), "http://h.example");
        let hs = "h".repeat(32);
        let text = format!(
            "[[app]]\nappid = 5\nsecret = \"{}\"\n\
             [app.hook]\nurl = \"https://u:hunter2-password@hooks.example.com/h\"\nsecret = \"{hs}\"\n",
            "s".repeat(32)
        );
        let summary = build(file(&text)).summary();
        assert!(!summary.contains("hunter2"), "{summary}");
        assert!(
            summary.contains("webhooks to https://hooks.example.com "),
            "{summary}"
        );
    }

    #[test]
    fn type_errors_do_not_show_string_values() {
        let key = "APIKEY-0123456789-0123456789-abcdef";
        let e = file_err(&format!("[[app]]\nappid = 5\napi_keys = \"{key}\"\n"));
        assert!(!e.contains(key), "{e}");
        assert!(e.contains("h.toml:3:12"), "{e}");
        assert!(
            e.contains("invalid type: a string, expected a sequence"),
            "{e}"
        );
        let e = file_err("[[app]]\nappid = \"se\\\"cret, expected x\"\n");
        assert!(!e.contains("cret"), "{e}");
        assert!(e.ends_with("expected u32"), "{e}");
        assert_eq!(without_strings("no value here"), "no value here");
    }

    #[test]
    fn an_api_key_of_two_apps_is_refused() {
        let (secret, key) = ("s".repeat(32), "k".repeat(32));
        let app = |id: u32| {
            format!("[[app]]\nappid = {id}\nsecret = \"{secret}\"\napi_keys = [\"{key}\"]\n")
        };
        let e = file_err(&(app(5) + &app(6)));
        assert!(e.contains("apps 5 and 6 have the same API key"), "{e}");
        assert!(!e.contains(&key), "{e}");
    }
}
