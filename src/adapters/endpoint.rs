//! Where a client connects: a server URL (`tcp://`, `tls://`, `ws://`,
//! `wss://`; see `docs/protocol.md`, "Transports") and how the server's
//! certificate is checked.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;

/// A transport, as a URL scheme names it.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// `tcp://`: length-prefixed frames on TCP.
    Tcp,
    /// `tls://`: the same inside TLS (feature `tls`).
    Tls,
    /// `ws://`: one frame per binary WebSocket message (feature `websocket`).
    Ws,
    /// `wss://`: WebSocket inside TLS (features `websocket` and `tls`).
    Wss,
}

impl Scheme {
    /// Its name in a URL.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Tcp => "tcp",
            Scheme::Tls => "tls",
            Scheme::Ws => "ws",
            Scheme::Wss => "wss",
        }
    }

    /// Whether it runs inside TLS.
    pub fn is_tls(self) -> bool {
        matches!(self, Scheme::Tls | Scheme::Wss)
    }

    /// Whether it is a WebSocket.
    pub fn is_websocket(self) -> bool {
        matches!(self, Scheme::Ws | Scheme::Wss)
    }

    fn default_port(self) -> u16 {
        match self {
            Scheme::Tcp | Scheme::Tls => 7300,
            Scheme::Ws => 80,
            Scheme::Wss => 443,
        }
    }
}

/// A server's URL: `scheme://host[:port][/path]`. The host is a DNS name,
/// an IPv4 address or a bracketed IPv6 address; the port defaults to 7300
/// for `tcp`/`tls`, 80 for `ws`, 443 for `wss`; a WebSocket's path
/// defaults to `/v1/ws`.
///
/// ```
/// use hummer_channel::adapters::{Scheme, ServerUrl};
///
/// let url: ServerUrl = "wss://chat.example.com/v1/ws".parse().unwrap();
/// assert_eq!((url.scheme(), url.host(), url.port()), (Scheme::Wss, "chat.example.com", 443));
/// let url: ServerUrl = "tcp://[::1]:7300".parse().unwrap();
/// assert_eq!(url.host(), "::1");
/// assert!("http://example.com".parse::<ServerUrl>().is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ServerUrl {
    scheme: Scheme,
    host: String,
    port: u16,
    path: String,
}

/// Why a string is not a [`ServerUrl`].
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    /// No `scheme://`, or a scheme other than tcp, tls, ws, wss.
    #[error("unknown scheme in {0:?}: expected tcp://, tls://, ws:// or wss://")]
    Scheme(String),
    /// No host, or a malformed one.
    #[error("no valid host in {0:?}")]
    Host(String),
    /// A port that is not a number from 1 to 65535.
    #[error("invalid port in {0:?}")]
    Port(String),
    /// A path on a scheme that has none (tcp, tls), or a query or fragment.
    #[error("unexpected path, query or fragment in {0:?}")]
    Path(String),
}

impl ServerUrl {
    /// The transport.
    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// The host (without brackets for IPv6).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The WebSocket path (`/v1/ws` by default); empty for tcp and tls.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// `tcp://addr`.
    pub fn tcp(addr: SocketAddr) -> ServerUrl {
        ServerUrl {
            scheme: Scheme::Tcp,
            host: addr.ip().to_string(),
            port: addr.port(),
            path: String::new(),
        }
    }
}

impl FromStr for ServerUrl {
    type Err = UrlError;

    fn from_str(s: &str) -> Result<ServerUrl, UrlError> {
        let (scheme, rest) = s
            .split_once("://")
            .ok_or_else(|| UrlError::Scheme(s.to_owned()))?;
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "tcp" => Scheme::Tcp,
            "tls" => Scheme::Tls,
            "ws" => Scheme::Ws,
            "wss" => Scheme::Wss,
            _ => return Err(UrlError::Scheme(s.to_owned())),
        };
        if rest.contains(['?', '#', '@']) {
            return Err(UrlError::Path(s.to_owned()));
        }
        let (authority, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| UrlError::Host(s.to_owned()))?;
            if host.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(UrlError::Host(s.to_owned()));
            }
            let port = match after {
                "" => None,
                p => Some(
                    p.strip_prefix(':')
                        .ok_or_else(|| UrlError::Port(s.to_owned()))?,
                ),
            };
            (host, port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        // A colon in a host is IPv6, which must be bracketed (checked above):
        // `tcp://::1` is refused rather than read as host `:`, port 1.
        let bracketed = authority.starts_with('[');
        let host_ok = !host.is_empty()
            && (bracketed
                || host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')));
        if !host_ok {
            return Err(UrlError::Host(s.to_owned()));
        }
        let port = match port {
            None => scheme.default_port(),
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|&p| p != 0)
                .ok_or_else(|| UrlError::Port(s.to_owned()))?,
        };
        let path = match (scheme.is_websocket(), path) {
            (true, "" | "/") => "/v1/ws".to_owned(),
            (true, p) => p.to_owned(),
            (false, "" | "/") => String::new(),
            (false, _) => return Err(UrlError::Path(s.to_owned())),
        };
        Ok(ServerUrl {
            scheme,
            host: host.to_owned(),
            port,
            path,
        })
    }
}

impl fmt::Display for ServerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = match self.host.contains(':') {
            true => format!("[{}]", self.host),
            false => self.host.clone(),
        };
        write!(
            f,
            "{}://{host}:{}{}",
            self.scheme.as_str(),
            self.port,
            self.path
        )
    }
}

/// How a client checks the server's TLS certificate (its name must match
/// the URL's host either way).
#[non_exhaustive]
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum TlsRoots {
    /// The operating system's trusted roots.
    #[default]
    System,
    /// Only these CA certificates (PEM), e.g. a private CA or a test's.
    Pem(Arc<[u8]>),
}

/// A server to connect to: its URL and, for `tls://` and `wss://`, the
/// roots its certificate is checked against.
///
/// ```
/// use hummer_channel::adapters::Endpoint;
///
/// let plain: Endpoint = "tcp://127.0.0.1:7300".parse().unwrap();
/// let web = Endpoint::parse("wss://localhost:7301/v1/ws")
///     .unwrap()
///     .with_ca_pem(b"-----BEGIN CERTIFICATE-----\n...".to_vec());
/// assert_eq!(web.url().port(), 7301);
/// # let _ = plain;
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    url: ServerUrl,
    roots: TlsRoots,
}

impl Endpoint {
    /// The server at `url`, with the system's roots.
    pub fn new(url: ServerUrl) -> Endpoint {
        Endpoint {
            url,
            roots: TlsRoots::System,
        }
    }

    /// Parses a URL (see [`ServerUrl`]).
    pub fn parse(url: &str) -> Result<Endpoint, UrlError> {
        url.parse().map(Endpoint::new)
    }

    /// Checks the server's certificate against this CA (PEM) only.
    pub fn with_ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Endpoint {
        self.roots = TlsRoots::Pem(pem.into().into());
        self
    }

    /// The URL.
    pub fn url(&self) -> &ServerUrl {
        &self.url
    }

    /// The roots for TLS.
    pub fn roots(&self) -> &TlsRoots {
        &self.roots
    }
}

impl FromStr for Endpoint {
    type Err = UrlError;

    fn from_str(s: &str) -> Result<Endpoint, UrlError> {
        Endpoint::parse(s)
    }
}

impl From<SocketAddr> for Endpoint {
    fn from(addr: SocketAddr) -> Endpoint {
        Endpoint::new(ServerUrl::tcp(addr))
    }
}

impl From<ServerUrl> for Endpoint {
    fn from(url: ServerUrl) -> Endpoint {
        Endpoint::new(url)
    }
}

/// Several servers of one service, in the order a client tries them: never
/// empty. A client given several (`Client::connect_any` of either adapter)
/// keeps working when one dies:
///
/// - it dials them in order, starting from the one that last worked;
/// - a failed dial moves to the next address at once; only when every
///   address failed once (a round) does the Session's reconnect backoff
///   delay the next round;
/// - a lost link (the socket broke, or the server stopped answering) moves
///   to the next address: the Session's reconnect, with its usual backoff
///   and its resume (instance id, stream cursors), goes there.
///
/// A server that does not know the instance answers the resume as a fresh
/// login; the client stays logged in as the same user.
///
/// ```
/// use hummer_channel::adapters::{Endpoint, Endpoints, NoEndpoints};
///
/// let list = Endpoints::new(["tcp://10.0.0.1:7300", "tcp://10.0.0.2:7300"]
///     .map(|url| Endpoint::parse(url).unwrap()))
/// .unwrap();
/// assert_eq!(list.len(), 2);
/// assert_eq!(list.as_slice()[1].url().host(), "10.0.0.2");
/// assert_eq!(Endpoints::new(Vec::<Endpoint>::new()), Err(NoEndpoints));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoints(Vec<Endpoint>);

/// The error of an empty list of servers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("no server address: a client needs at least one")]
pub struct NoEndpoints;

impl Endpoints {
    /// The servers, in order; [`NoEndpoints`] if there is none.
    pub fn new(
        endpoints: impl IntoIterator<Item = impl Into<Endpoint>>,
    ) -> Result<Endpoints, NoEndpoints> {
        let list: Vec<Endpoint> = endpoints.into_iter().map(Into::into).collect();
        match list.is_empty() {
            true => Err(NoEndpoints),
            false => Ok(Endpoints(list)),
        }
    }

    /// The servers, in order.
    pub fn as_slice(&self) -> &[Endpoint] {
        &self.0
    }

    /// How many there are (at least one).
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> usize {
        self.0.len()
    }
}

impl From<Endpoint> for Endpoints {
    fn from(endpoint: Endpoint) -> Endpoints {
        Endpoints(vec![endpoint])
    }
}

/// Which server of a list a client dials, the rule both client adapters
/// share: addresses are tried in order, starting from the one that last
/// worked; a failed dial moves to the next at once, until every address
/// failed once (a round): only then is the Session told, and its backoff
/// delays the next round, which starts where this one did. A link that was
/// open and is lost (or that the Session drops, e.g. a server that stopped
/// answering) moves to the next address too; the one lost is tried again
/// last in the next round.
#[derive(Clone, Debug)]
pub(crate) struct Rotation {
    list: Endpoints,
    /// The address in use, being dialed, or to dial next.
    current: usize,
    /// Dials that failed in a row in this round.
    failed: usize,
    state: RotationState,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum RotationState {
    Idle,
    Dialing,
    Up,
}

impl Rotation {
    pub fn new(list: Endpoints) -> Rotation {
        Rotation {
            list,
            current: 0,
            failed: 0,
            state: RotationState::Idle,
        }
    }

    fn advance(&mut self) {
        self.current = (self.current + 1) % self.list.len();
    }

    /// A dial starts: to this address.
    pub fn dial(&mut self) -> &Endpoint {
        self.state = RotationState::Dialing;
        &self.list.0[self.current]
    }

    /// The dial failed. `true`: dial again now (another address of the round
    /// is left); `false`: the round is over, the Session must hear of it.
    pub fn dial_failed(&mut self) -> bool {
        self.advance();
        self.failed += 1;
        if self.failed < self.list.len() {
            return true;
        }
        // Every address failed: back where the round started.
        self.failed = 0;
        self.state = RotationState::Idle;
        false
    }

    /// The dial succeeded: the link is open.
    pub fn connected(&mut self) {
        self.failed = 0;
        self.state = RotationState::Up;
    }

    /// The link (or the dial in progress) is gone. `reconnect`: the Session
    /// will dial again (a lost link), so the next address comes first;
    /// otherwise (a logout, a final close) the address stays.
    pub fn lost(&mut self, reconnect: bool) {
        if reconnect && self.state != RotationState::Idle {
            self.advance();
        }
        self.failed = 0;
        self.state = RotationState::Idle;
    }

    /// The address of the open link.
    pub fn in_use(&self) -> Option<&Endpoint> {
        (self.state == RotationState::Up).then(|| &self.list.0[self.current])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_with_their_defaults_and_print_back() {
        let cases = [
            ("tcp://127.0.0.1:7300", "tcp://127.0.0.1:7300"),
            ("tcp://localhost", "tcp://localhost:7300"),
            ("TLS://Example.com:9000/", "tls://Example.com:9000"),
            ("ws://h", "ws://h:80/v1/ws"),
            ("wss://h:8443/custom", "wss://h:8443/custom"),
            ("tcp://[::1]:1", "tcp://[::1]:1"),
            ("wss://[2001:db8::1]", "wss://[2001:db8::1]:443/v1/ws"),
        ];
        for (input, shown) in cases {
            let url: ServerUrl = input.parse().unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(url.to_string(), shown);
            assert_eq!(url.to_string().parse::<ServerUrl>().unwrap(), url);
        }
    }

    #[test]
    fn the_parts_of_a_url_are_what_it_says() {
        let url: ServerUrl = "wss://chat.example.com:8443/socket".parse().unwrap();
        assert_eq!(url.scheme(), Scheme::Wss);
        assert_eq!(url.host(), "chat.example.com");
        assert_eq!(url.port(), 8443);
        assert_eq!(url.path(), "/socket");
        let url: ServerUrl = "tls://10.1.2.3:9".parse().unwrap();
        assert_eq!((url.host(), url.port(), url.path()), ("10.1.2.3", 9, ""));
        let ca = b"-----BEGIN CERTIFICATE-----".to_vec();
        let e = Endpoint::new(url.clone()).with_ca_pem(ca.clone());
        assert_eq!(e.url(), &url);
        assert_eq!(e.roots(), &TlsRoots::Pem(ca.into()));
    }

    #[test]
    fn bad_urls_say_what_is_wrong() {
        let cases = [
            ("http://h", UrlError::Scheme("http://h".into())),
            ("h:7300", UrlError::Scheme("h:7300".into())),
            ("tcp://", UrlError::Host("tcp://".into())),
            ("tcp://a b:1", UrlError::Host("tcp://a b:1".into())),
            ("tcp://[::1", UrlError::Host("tcp://[::1".into())),
            ("tcp://[nope]:1", UrlError::Host("tcp://[nope]:1".into())),
            ("tcp://h:0", UrlError::Port("tcp://h:0".into())),
            ("tcp://h:70000", UrlError::Port("tcp://h:70000".into())),
            ("tcp://h:x", UrlError::Port("tcp://h:x".into())),
            ("tcp://[::1]x", UrlError::Port("tcp://[::1]x".into())),
            ("tcp://::1", UrlError::Host("tcp://::1".into())),
            ("ws://fe80::1:80", UrlError::Host("ws://fe80::1:80".into())),
            ("tcp://h/path", UrlError::Path("tcp://h/path".into())),
            ("ws://h/v1/ws?x", UrlError::Path("ws://h/v1/ws?x".into())),
            ("ws://u@h", UrlError::Path("ws://u@h".into())),
        ];
        for (input, want) in cases {
            assert_eq!(input.parse::<ServerUrl>(), Err(want), "{input}");
        }
    }

    #[test]
    fn schemes_know_their_layers() {
        let all = [Scheme::Tcp, Scheme::Tls, Scheme::Ws, Scheme::Wss];
        let tls: Vec<_> = all.iter().map(|s| s.is_tls()).collect();
        let ws: Vec<_> = all.iter().map(|s| s.is_websocket()).collect();
        assert_eq!(tls, [false, true, false, true]);
        assert_eq!(ws, [false, false, true, true]);
        let addr: SocketAddr = "10.0.0.1:5".parse().unwrap();
        assert_eq!(Endpoint::from(addr).url().to_string(), "tcp://10.0.0.1:5");
        assert_eq!(Endpoint::from(addr).roots(), &TlsRoots::System);
    }
    fn port(e: &Endpoint) -> u16 {
        e.url().port()
    }

    fn rotation(n: u16) -> Rotation {
        let list = (1..=n).map(|p| SocketAddr::from(([127, 0, 0, 1], p)));
        Rotation::new(Endpoints::new(list).unwrap())
    }

    #[test]
    fn an_empty_list_is_an_error() {
        assert_eq!(Endpoints::new(Vec::<SocketAddr>::new()), Err(NoEndpoints));
        let one = Endpoints::from(Endpoint::parse("tcp://h:1").unwrap());
        assert_eq!(one.len(), 1);
    }

    #[test]
    fn failed_dials_go_round_the_list_once_then_back_off() {
        let mut r = rotation(3);
        assert_eq!(port(r.dial()), 1);
        assert!(r.dial_failed());
        assert_eq!(port(r.dial()), 2);
        assert!(r.dial_failed());
        assert_eq!(port(r.dial()), 3);
        // A whole round failed: the Session backs off; the next round starts
        // where this one did.
        assert!(!r.dial_failed());
        assert_eq!(r.in_use(), None);
        assert_eq!(port(r.dial()), 1);
        assert!(r.dial_failed());
        assert_eq!(port(r.dial()), 2);
        r.connected();
        assert_eq!(r.in_use().map(port), Some(2));
    }

    #[test]
    fn a_lost_link_moves_to_the_next_address_and_the_lost_one_comes_last() {
        let mut r = rotation(3);
        r.dial();
        r.connected();
        r.lost(true);
        assert_eq!(port(r.dial()), 2);
        assert!(r.dial_failed());
        assert_eq!(port(r.dial()), 3);
        assert!(r.dial_failed());
        assert_eq!(port(r.dial()), 1);
        r.connected();
        // A logout keeps the address that worked.
        r.lost(false);
        assert_eq!(port(r.dial()), 1);
        // A dial the Session gave up on (it timed out) moves on too.
        r.lost(true);
        assert_eq!(port(r.dial()), 2);
    }

    #[test]
    fn one_address_is_the_single_address_client() {
        let mut r = rotation(1);
        assert_eq!(port(r.dial()), 1);
        assert!(!r.dial_failed());
        assert_eq!(port(r.dial()), 1);
        r.connected();
        r.lost(true);
        assert_eq!(port(r.dial()), 1);
    }
}
