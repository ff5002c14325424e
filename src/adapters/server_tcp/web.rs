//! The HTTP side of the WebSocket listener: the request head, the checks of
//! the WebSocket handshake (path, subprotocol, origin), and the static pages
//! served beside it (the demo page). One request per connection: every
//! answer but the upgrade closes it.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use bytes::Bytes;
use futures_lite::io::{AsyncRead, AsyncReadExt as _};

use crate::wire::{WEBSOCKET_PATH, WEBSOCKET_SUBPROTOCOL as SUBPROTOCOL};
/// The longest request head read: a browser's is well under 2 KiB.
const MAX_HEAD: usize = 8 * 1024;
/// The largest file served from a web root.
const MAX_FILE: u64 = 8 * 1024 * 1024;

/// Settings of the WebSocket listener.
///
/// ```
/// use hummer_channel::adapters::server_tcp::{Page, WebSocketOptions};
///
/// let options = WebSocketOptions::default()
///     .with_allowed_origins(["https://chat.example.com"])
///     .with_page(Page::new("/", "text/html; charset=utf-8", "<h1>hello</h1>"));
/// assert!(options.origin_allowed(None));
/// assert!(options.origin_allowed(Some("https://chat.example.com")));
/// assert!(!options.origin_allowed(Some("https://evil.example")));
/// ```
#[non_exhaustive]
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WebSocketOptions {
    /// Browsers' origins allowed to open a WebSocket (`None`: any). A
    /// handshake with an `Origin` header not in the list gets HTTP 403; one
    /// without `Origin` (not a browser) is always allowed.
    pub allowed_origins: Option<Vec<String>>,
    /// A directory whose files are served by path (`/` is `index.html`);
    /// looked in before [`pages`](Self::pages).
    pub web_root: Option<PathBuf>,
    /// Pages served from memory, by exact path.
    pub pages: Vec<Page>,
}

/// One page served from memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page {
    /// The request path (`/` for the index).
    pub path: String,
    /// Its `Content-Type`.
    pub content_type: String,
    /// Its bytes.
    pub body: Bytes,
}

impl Page {
    /// A page at `path`.
    pub fn new(path: &str, content_type: &str, body: impl Into<Bytes>) -> Page {
        Page {
            path: path.to_owned(),
            content_type: content_type.to_owned(),
            body: body.into(),
        }
    }
}

impl WebSocketOptions {
    /// Only these origins (`scheme://host[:port]`, compared without regard
    /// to case) may open a WebSocket from a browser.
    pub fn with_allowed_origins<S: Into<String>>(
        mut self,
        origins: impl IntoIterator<Item = S>,
    ) -> Self {
        self.allowed_origins = Some(origins.into_iter().map(Into::into).collect());
        self
    }

    /// Serves the files under `dir`.
    pub fn with_web_root(mut self, dir: impl Into<PathBuf>) -> Self {
        self.web_root = Some(dir.into());
        self
    }

    /// Serves `page` (a page of the same path is replaced).
    pub fn with_page(mut self, page: Page) -> Self {
        self.pages.retain(|p| p.path != page.path);
        self.pages.push(page);
        self
    }

    /// Whether a handshake with this `Origin` header may go on.
    pub fn origin_allowed(&self, origin: Option<&str>) -> bool {
        match (origin, &self.allowed_origins) {
            (None, _) | (_, None) => true,
            (Some(o), Some(list)) => list.iter().any(|a| {
                a.trim_end_matches('/')
                    .eq_ignore_ascii_case(o.trim_end_matches('/'))
            }),
        }
    }
}

/// A parsed request head.
#[derive(Debug)]
pub(super) struct Head {
    method: String,
    /// Without the query.
    path: String,
    headers: Vec<(String, String)>,
}

impl Head {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether the comma-separated header `name` holds `token`.
    fn has_token(&self, name: &str, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .flat_map(|(_, v)| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }
}

/// Reads one request head; what came after it (a client that did not wait
/// for the upgrade) is returned too. `Err` is the response to send (none
/// when the peer went away). The head is parsed once its blank line came:
/// a head trickled byte by byte costs no more than one sent at once.
pub(super) async fn read_head<R: AsyncRead + Unpin>(
    io: &mut R,
) -> Result<(Head, Vec<u8>), Option<Response>> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = io.read(&mut chunk).await.map_err(|_| None)?;
        if n == 0 {
            return Err(None);
        }
        // Where the blank line may start: up to 3 bytes before the new ones.
        let from = buf.len().saturating_sub(3);
        buf.extend_from_slice(&chunk[..n]);
        let complete = buf[from..].windows(4).any(|w| w == b"\r\n\r\n")
            || buf[from..].windows(2).any(|w| w == b"\n\n");
        if !complete {
            if buf.len() >= MAX_HEAD {
                return Err(Some(plain(
                    431,
                    "Request Header Fields Too Large",
                    "request head too large\n",
                )));
            }
            continue;
        }
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        return match req.parse(&buf) {
            Ok(httparse::Status::Complete(len)) if len <= MAX_HEAD => {
                let target = req.path.unwrap_or("/");
                let head = Head {
                    method: req.method.unwrap_or("").to_owned(),
                    path: target.split('?').next().unwrap_or("/").to_owned(),
                    headers: req
                        .headers
                        .iter()
                        .map(|h| {
                            (
                                h.name.to_owned(),
                                String::from_utf8_lossy(h.value).trim().to_owned(),
                            )
                        })
                        .collect(),
                };
                Ok((head, buf.split_off(len)))
            }
            Ok(_) => Err(Some(plain(
                431,
                "Request Header Fields Too Large",
                "request head too large\n",
            ))),
            Err(_) => Err(Some(plain(400, "Bad Request", "malformed request\n"))),
        };
    }
}

/// What to do with a request.
pub(super) enum Route {
    /// A valid WebSocket handshake: answer 101 with this accept key.
    Upgrade { accept_key: String },
    /// Answer this and close.
    Respond(Response),
}

/// The pages of a listener: its options, and the web root's files read
/// once and shared by every answer (a file changed on disk is read again).
pub(super) struct Site {
    options: WebSocketOptions,
    cache: Mutex<Cache>,
    cache_limit: usize,
}

#[derive(Default)]
struct Cache {
    files: HashMap<PathBuf, (SystemTime, Bytes)>,
    bytes: usize,
}

/// The most bytes of web-root files kept in memory; a file past it is not
/// served (a web root is a few files of a few hundred KiB).
const MAX_CACHE: usize = 64 * 1024 * 1024;

impl Site {
    pub fn new(options: WebSocketOptions) -> Site {
        Site {
            options,
            cache: Mutex::new(Cache::default()),
            cache_limit: MAX_CACHE,
        }
    }

    /// Decides what a request gets.
    pub fn route(&self, head: &Head) -> Route {
        if head.path == WEBSOCKET_PATH {
            return upgrade(head, &self.options);
        }
        if head.method != "GET" && head.method != "HEAD" {
            return Route::Respond(plain(405, "Method Not Allowed", "only GET\n"));
        }
        let Some((content_type, body)) = self.find_page(&head.path) else {
            return Route::Respond(plain(404, "Not Found", "no such page\n"));
        };
        let length = body.len();
        let body = match head.method.as_str() {
            "HEAD" => Bytes::new(),
            _ => body,
        };
        Route::Respond(response(200, "OK", &content_type, length, body, &[]))
    }

    /// A page by request path: the web root first, then the pages in
    /// memory.
    fn find_page(&self, path: &str) -> Option<(String, Bytes)> {
        let path = if path == "/" { "/index.html" } else { path };
        if let Some(root) = &self.options.web_root {
            if let Some(found) = self.root_file(root, path) {
                return Some(found);
            }
        }
        self.options
            .pages
            .iter()
            .find(|p| p.path == path || (p.path == "/" && path == "/index.html"))
            .map(|p| (p.content_type.clone(), p.body.clone()))
    }

    fn root_file(&self, root: &Path, path: &str) -> Option<(String, Bytes)> {
        let file = file_under(root, path)?;
        let meta = std::fs::metadata(&file).ok()?;
        if !meta.is_file() || meta.len() > MAX_FILE {
            return None;
        }
        let modified = meta.modified().ok()?;
        let kind = content_type(&file).to_owned();
        if let Some((at, body)) = self.cache().files.get(&file) {
            if *at == modified {
                return Some((kind, body.clone()));
            }
        }
        // Read without the lock (other threads' pages go on meanwhile). A
        // file that does not fit in the cache is not served: serving it
        // would take a copy per answer, which peers that never read could
        // hold by the thousand.
        let body = Bytes::from(std::fs::read(&file).ok()?);
        let mut cache = self.cache();
        let replaced = cache.files.get(&file).map_or(0, |(_, b)| b.len());
        if cache.bytes - replaced + body.len() > self.cache_limit {
            log!(
                warn,
                "{}: not served, the page cache is full ({} bytes)",
                file.display(),
                self.cache_limit
            );
            return None;
        }
        cache.bytes = cache.bytes - replaced + body.len();
        cache.files.insert(file, (modified, body.clone()));
        Some((kind, body))
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn upgrade(head: &Head, options: &WebSocketOptions) -> Route {
    if head.method != "GET"
        || !head.has_token("Upgrade", "websocket")
        || !head.has_token("Connection", "upgrade")
    {
        return Route::Respond(plain(
            400,
            "Bad Request",
            "a WebSocket handshake is expected here (Upgrade: websocket)\n",
        ));
    }
    if head.header("Sec-WebSocket-Version") != Some("13") {
        return Route::Respond(response(
            426,
            "Upgrade Required",
            "text/plain; charset=utf-8",
            0,
            Bytes::from_static(b"WebSocket version 13 only\n"),
            &[("Sec-WebSocket-Version", "13")],
        ));
    }
    let Some(key) = head
        .header("Sec-WebSocket-Key")
        .filter(|k| is_websocket_key(k))
    else {
        return Route::Respond(plain(
            400,
            "Bad Request",
            "Sec-WebSocket-Key must be 16 bytes in base64\n",
        ));
    };
    if !head.has_token("Sec-WebSocket-Protocol", SUBPROTOCOL) {
        return Route::Respond(plain(
            400,
            "Bad Request",
            "the subprotocol hummer.v1.protobuf must be offered\n",
        ));
    }
    if !options.origin_allowed(head.header("Origin")) {
        log!(
            debug,
            "WebSocket from origin {:?} refused",
            head.header("Origin")
        );
        return Route::Respond(plain(403, "Forbidden", "origin not allowed\n"));
    }
    Route::Upgrade {
        accept_key: async_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes()),
    }
}

/// RFC 6455, 4.1: the key is 16 random bytes in base64 (24 characters, the
/// last two `=`).
fn is_websocket_key(key: &str) -> bool {
    let b = key.as_bytes();
    b.len() == 24
        && b[22..] == *b"=="
        && b[..22]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'+' || *c == b'/')
}

/// The 101 response that opens the WebSocket.
pub(super) fn upgrade_response(accept_key: &str) -> String {
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {accept_key}\r\nSec-WebSocket-Protocol: {SUBPROTOCOL}\r\n\r\n"
    )
}

/// `path` under `root`, or `None` when it would leave it: `..`, absolute
/// parts, backslashes, hidden files, or a symbolic link that leads out.
fn file_under(root: &Path, path: &str) -> Option<PathBuf> {
    let rel = path.strip_prefix('/')?;
    if rel.is_empty() || rel.contains('\\') || rel.contains('\0') {
        return None;
    }
    let mut out = root.to_path_buf();
    for c in Path::new(rel).components() {
        match c {
            Component::Normal(part) if !part.to_string_lossy().starts_with('.') => out.push(part),
            _ => return None,
        }
    }
    let real = out.canonicalize().ok()?;
    real.starts_with(root.canonicalize().ok()?).then_some(real)
}

fn content_type(file: &Path) -> &'static str {
    match file.extension().and_then(|e| e.to_str()) {
        Some("html") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("json" | "map") => "application/json",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("txt") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// A response: its head, and its body shared, not copied (a page is sent
/// to every connection that asks from one buffer).
pub(super) struct Response {
    pub head: String,
    pub body: Bytes,
}

impl Response {
    /// Head and body in one buffer.
    #[cfg(test)]
    fn bytes(&self) -> Vec<u8> {
        [self.head.as_bytes(), &self.body].concat()
    }
}

fn plain(code: u16, reason: &str, body: &'static str) -> Response {
    response(
        code,
        reason,
        "text/plain; charset=utf-8",
        0,
        Bytes::from_static(body.as_bytes()),
        &[],
    )
}

/// A response with `body`; `Content-Length` is `length` when `body` is
/// empty (a `HEAD` answer), else the body's.
fn response(
    code: u16,
    reason: &str,
    content_type: &str,
    length: usize,
    body: Bytes,
    extra: &[(&str, &str)],
) -> Response {
    let length = if body.is_empty() { length } else { body.len() };
    let mut head = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {length}\r\n\
         Connection: close\r\nCache-Control: no-cache\r\nX-Content-Type-Options: nosniff\r\n",
    );
    for (n, v) in extra {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    head.push_str("\r\n");
    Response { head, body }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(method: &str, path: &str, headers: &[(&str, &str)]) -> Head {
        Head {
            method: method.into(),
            path: path.into(),
            headers: headers
                .iter()
                .map(|(n, v)| ((*n).into(), (*v).into()))
                .collect(),
        }
    }

    fn ws_headers<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
        let mut h = vec![
            ("Upgrade", "websocket"),
            ("Connection", "keep-alive, Upgrade"),
            ("Sec-WebSocket-Version", "13"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("Sec-WebSocket-Protocol", "chat, hummer.v1.protobuf"),
        ];
        h.extend_from_slice(extra);
        h
    }

    fn status(r: &Route) -> String {
        match r {
            Route::Upgrade { .. } => "101".into(),
            Route::Respond(r) => String::from_utf8_lossy(&r.bytes()[9..12]).into_owned(),
        }
    }

    #[test]
    fn a_valid_handshake_is_upgraded_with_the_rfc_accept_key() {
        let r =
            Site::new(WebSocketOptions::default()).route(&head("GET", "/v1/ws", &ws_headers(&[])));
        match r {
            // RFC 6455, section 1.3's example.
            Route::Upgrade { accept_key } => assert_eq!(accept_key, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
            Route::Respond(r) => panic!("{}", String::from_utf8_lossy(&r.bytes())),
        }
    }

    #[test]
    fn handshakes_missing_a_part_are_refused_with_the_documented_status() {
        let o = WebSocketOptions::default();
        let drop = |name: &str| -> Vec<(&str, &str)> {
            ws_headers(&[])
                .into_iter()
                .filter(|(n, _)| *n != name)
                .collect()
        };
        assert_eq!(
            status(&Site::new(o.clone()).route(&head(
                "GET",
                "/v1/ws",
                &drop("Sec-WebSocket-Protocol")
            ))),
            "400"
        );
        assert_eq!(
            status(&Site::new(o.clone()).route(&head("GET", "/v1/ws", &drop("Upgrade")))),
            "400"
        );
        assert_eq!(
            status(&Site::new(o.clone()).route(&head("GET", "/v1/ws", &drop("Sec-WebSocket-Key")))),
            "400"
        );
        assert_eq!(
            status(&Site::new(o.clone()).route(&head("POST", "/v1/ws", &ws_headers(&[])))),
            "400"
        );
        let v8: Vec<_> = drop("Sec-WebSocket-Version")
            .into_iter()
            .chain([("Sec-WebSocket-Version", "8")])
            .collect();
        assert_eq!(
            status(&Site::new(o.clone()).route(&head("GET", "/v1/ws", &v8))),
            "426"
        );
        assert_eq!(
            status(&Site::new(o.clone()).route(&head("GET", "/v2/ws", &ws_headers(&[])))),
            "404"
        );
    }

    #[test]
    fn a_foreign_origin_is_refused_and_a_listed_or_absent_one_allowed() {
        let o = WebSocketOptions::default().with_allowed_origins(["http://localhost:7301"]);
        let with = |origin| {
            Site::new(o.clone()).route(&head("GET", "/v1/ws", &ws_headers(&[("Origin", origin)])))
        };
        assert_eq!(status(&with("https://evil.example")), "403");
        assert_eq!(status(&with("http://localhost:7301")), "101");
        assert_eq!(status(&with("HTTP://LOCALHOST:7301/")), "101");
        assert_eq!(
            status(&Site::new(o.clone()).route(&head("GET", "/v1/ws", &ws_headers(&[])))),
            "101"
        );
        // No list: any origin.
        let any = WebSocketOptions::default();
        assert_eq!(
            status(&Site::new(any.clone()).route(&head(
                "GET",
                "/v1/ws",
                &ws_headers(&[("Origin", "https://x.example")])
            ))),
            "101"
        );
    }

    #[test]
    fn pages_are_served_by_path_and_the_web_root_never_escapes() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("index.html"), "<p>root</p>").unwrap();
        std::fs::write(dir.path().join("app.js"), "1").unwrap();
        std::fs::write(dir.path().join(".secret"), "no").unwrap();
        let o = WebSocketOptions::default()
            .with_web_root(dir.path())
            .with_page(Page::new("/hummer.js", "text/javascript", "export {}"));
        let get = |p: &str| match Site::new(o.clone()).route(&head("GET", p, &[])) {
            Route::Respond(r) => String::from_utf8_lossy(&r.bytes()).into_owned(),
            Route::Upgrade { .. } => panic!("upgrade"),
        };
        assert!(get("/").ends_with("<p>root</p>"), "{}", get("/"));
        assert!(get("/app.js").contains("text/javascript"));
        assert!(get("/hummer.js").ends_with("export {}"));
        for bad in [
            "/../etc/passwd",
            "/.secret",
            "/a/../../x",
            "/..%2f",
            "//etc/passwd",
            "/a\\b",
        ] {
            assert!(get(bad).starts_with("HTTP/1.1 404"), "{bad}: {}", get(bad));
        }
        assert!(
            matches!(Site::new(o.clone()).route(&head("DELETE", "/", &[])), Route::Respond(r) if r.bytes().starts_with(b"HTTP/1.1 405"))
        );
        match Site::new(o.clone()).route(&head("HEAD", "/app.js", &[])) {
            Route::Respond(r) => assert!(
                r.body.is_empty()
                    && r.head.ends_with("\r\n\r\n")
                    && r.head.contains("Content-Length: 1\r\n")
            ),
            Route::Upgrade { .. } => panic!(),
        }
    }

    #[test]
    fn a_page_of_the_same_path_replaces_the_old_one_and_large_files_are_served() {
        let o = WebSocketOptions::default()
            .with_page(Page::new("/a", "text/plain", "old"))
            .with_page(Page::new("/b", "text/plain", "b"))
            .with_page(Page::new("/a", "text/plain", "new"));
        let bodies: Vec<_> = o
            .pages
            .iter()
            .map(|p| (p.path.as_str(), &p.body[..]))
            .collect();
        assert_eq!(bodies, [("/b", &b"b"[..]), ("/a", &b"new"[..])]);
        // Up to 8 MiB from a web root (a bundle is a few hundred KiB).
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("big.js"), vec![b'x'; 2 << 20]).unwrap();
        std::fs::write(dir.path().join("huge.js"), vec![b'x'; (8 << 20) + 1]).unwrap();
        std::fs::write(dir.path().join("max.js"), vec![b'x'; 8 << 20]).unwrap();
        let o = WebSocketOptions::default().with_web_root(dir.path());
        let status = |p: &str| match Site::new(o.clone()).route(&head("GET", p, &[])) {
            Route::Respond(r) => String::from_utf8_lossy(&r.bytes()[..12]).into_owned(),
            Route::Upgrade { .. } => panic!(),
        };
        assert_eq!(status("/big.js"), "HTTP/1.1 200");
        assert_eq!(status("/huge.js"), "HTTP/1.1 404");
        assert_eq!(status("/max.js"), "HTTP/1.1 200", "8 MiB exactly is served");
    }

    #[test]
    fn a_symlink_out_of_the_web_root_is_not_followed_and_a_changed_file_is_read_again() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret.txt"), "secret").unwrap();
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("in.txt"), "first").unwrap();
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(
                outside.path().join("secret.txt"),
                root.path().join("out.txt"),
            )
            .unwrap();
            std::os::unix::fs::symlink(root.path().join("in.txt"), root.path().join("alias.txt"))
                .unwrap();
        }
        let site = Site::new(WebSocketOptions::default().with_web_root(root.path()));
        let get = |p: &str| match site.route(&head("GET", p, &[])) {
            Route::Respond(r) => String::from_utf8_lossy(&r.bytes()).into_owned(),
            Route::Upgrade { .. } => panic!(),
        };
        assert!(get("/in.txt").ends_with("first"));
        #[cfg(unix)]
        {
            assert!(
                get("/out.txt").starts_with("HTTP/1.1 404"),
                "{}",
                get("/out.txt")
            );
            assert!(
                get("/alias.txt").ends_with("first"),
                "a link inside the root is fine"
            );
        }
        // Rewritten with another modification time: served anew.
        std::fs::write(root.path().join("in.txt"), "second, longer").unwrap();
        let later = SystemTime::now() + std::time::Duration::from_secs(5);
        std::fs::File::options()
            .write(true)
            .open(root.path().join("in.txt"))
            .unwrap()
            .set_modified(later)
            .unwrap();
        assert!(
            get("/in.txt").ends_with("second, longer"),
            "{}",
            get("/in.txt")
        );
    }

    #[test]
    fn the_upgrade_answer_names_the_key_and_the_subprotocol() {
        assert_eq!(
            upgrade_response("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\
             Sec-WebSocket-Protocol: hummer.v1.protobuf\r\n\r\n"
        );
    }

    #[test]
    fn files_get_their_content_type_and_a_backslash_is_no_path() {
        let root = tempfile::tempdir().unwrap();
        for f in [
            "a.html", "a.css", "a.js", "a.png", "a.bin", "a.json", "a.map", "a.svg", "a.ico",
            "a.txt", "a\\b.txt",
        ] {
            std::fs::write(root.path().join(f), "x").unwrap();
        }
        let site = Site::new(WebSocketOptions::default().with_web_root(root.path()));
        let get = |p: &str| match site.route(&head("GET", p, &[])) {
            Route::Respond(r) => r.head,
            Route::Upgrade { .. } => panic!(),
        };
        assert!(get("/a.html").contains("Content-Type: text/html; charset=utf-8\r\n"));
        assert!(get("/a.css").contains("Content-Type: text/css; charset=utf-8\r\n"));
        assert!(get("/a.js").contains("Content-Type: text/javascript; charset=utf-8\r\n"));
        assert!(get("/a.png").contains("Content-Type: image/png\r\n"));
        assert!(get("/a.bin").contains("Content-Type: application/octet-stream\r\n"));
        assert!(get("/a.json").contains("Content-Type: application/json\r\n"));
        assert!(get("/a.map").contains("Content-Type: application/json\r\n"));
        assert!(get("/a.svg").contains("Content-Type: image/svg+xml\r\n"));
        assert!(get("/a.ico").contains("Content-Type: image/x-icon\r\n"));
        assert!(get("/a.txt").contains("Content-Type: text/plain; charset=utf-8\r\n"));
        // The file exists, but a backslash is no separator here and never
        // reaches the disk.
        assert!(get("/a\\b.txt").starts_with("HTTP/1.1 404"));
    }

    #[test]
    fn a_page_is_found_by_its_own_path_and_the_index_by_two() {
        let site = Site::new(
            WebSocketOptions::default()
                .with_page(Page::new("/", "text/html", "index"))
                .with_page(Page::new("/hummer.js", "text/javascript", "bundle")),
        );
        let body = |p: &str| match site.route(&head("GET", p, &[])) {
            Route::Respond(r) => String::from_utf8_lossy(&r.bytes()).into_owned(),
            Route::Upgrade { .. } => panic!(),
        };
        assert!(body("/").ends_with("\r\n\r\nindex"));
        assert!(body("/index.html").ends_with("\r\n\r\nindex"));
        assert!(body("/hummer.js").ends_with("\r\n\r\nbundle"));
        assert!(body("/other.js").starts_with("HTTP/1.1 404"));
    }

    #[test]
    fn a_file_that_does_not_fit_in_the_page_cache_is_not_served() {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("a.txt"), "aaaaaa").unwrap();
        std::fs::write(root.path().join("b.txt"), "bbbbbb").unwrap();
        let mut site = Site::new(WebSocketOptions::default().with_web_root(root.path()));
        site.cache_limit = 10;
        let get = |p: &str| match site.route(&head("GET", p, &[])) {
            Route::Respond(r) => String::from_utf8_lossy(&r.bytes()).into_owned(),
            Route::Upgrade { .. } => panic!(),
        };
        assert!(get("/a.txt").ends_with("aaaaaa"));
        assert!(get("/b.txt").starts_with("HTTP/1.1 404"), "6 + 6 > 10");
        assert!(get("/a.txt").ends_with("aaaaaa"), "still cached");
        // A changed file replaces its old copy in the count: 10 fits.
        std::fs::write(root.path().join("a.txt"), "AAAAAAAAAA").unwrap();
        let later = SystemTime::now() + std::time::Duration::from_secs(5);
        std::fs::File::options()
            .write(true)
            .open(root.path().join("a.txt"))
            .unwrap()
            .set_modified(later)
            .unwrap();
        assert!(get("/a.txt").ends_with("AAAAAAAAAA"));
        assert_eq!(site.cache().bytes, 10);
    }

    #[test]
    fn a_websocket_key_must_be_16_bytes_of_base64() {
        assert!(is_websocket_key("dGhlIHNhbXBsZSBub25jZQ=="));
        assert!(is_websocket_key("AAAAAAAAAAAAAAAAAAAA+/=="));
        for bad in [
            "",
            "x",
            "dGhlIHNhbXBsZSBub25jZQ=",
            "dGhlIHNhbXBsZSBub25jZQ==A",
            "dGhlIHNhbXBsZSBub25jZ!==",
            "dGhlIHNhbXBsZSBub25jZQ-=",
        ] {
            assert!(!is_websocket_key(bad), "{bad}");
        }
        let site = Site::new(WebSocketOptions::default());
        let h: Vec<_> = ws_headers(&[])
            .into_iter()
            .map(|(n, v)| {
                if n == "Sec-WebSocket-Key" {
                    (n, "short")
                } else {
                    (n, v)
                }
            })
            .collect();
        assert_eq!(status(&site.route(&head("GET", "/v1/ws", &h))), "400");
    }

    /// A reader that hands out at most `.1` bytes per read.
    struct Chunked<'a>(&'a [u8], usize);

    impl AsyncRead for Chunked<'_> {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &mut [u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            let n = self.1.min(buf.len()).min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            std::task::Poll::Ready(Ok(n))
        }
    }

    #[test]
    fn a_request_head_is_read_whole_and_what_follows_is_kept() {
        let req = b"GET /v1/ws?x=1 HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\nEXTRA";
        let Ok((h, rest)) = smol::block_on(read_head(&mut &req[..])) else {
            panic!("not read");
        };
        assert_eq!((h.method.as_str(), h.path.as_str()), ("GET", "/v1/ws"));
        assert_eq!(h.header("upgrade"), Some("websocket"));
        assert_eq!(rest, b"EXTRA");
        // A head of 6 KiB (big cookies) is read; one past 8 KiB is refused.
        let big = [
            b"GET / HTTP/1.1\r\nX: ".as_slice(),
            &[b'a'; 6 * 1024],
            b"\r\n\r\n",
        ]
        .concat();
        assert!(smol::block_on(read_head(&mut &big[..])).is_ok());
        let huge = [b"GET / HTTP/1.1\r\nX: ".as_slice(), &[b'a'; MAX_HEAD]].concat();
        let refused = |bytes: &[u8]| match smol::block_on(read_head(&mut &bytes[..])) {
            Err(Some(r)) => r.head,
            Err(None) => "(closed)".into(),
            Ok(_) => "(read)".into(),
        };
        assert!(
            refused(&huge).starts_with("HTTP/1.1 431"),
            "{}",
            refused(&huge)
        );
        assert!(refused(b"\x00\x01garbage\r\n\r\n").starts_with("HTTP/1.1 400"));
        // A head trickled in, its blank line split across reads, is read.
        let mut trickled = futures_lite::io::BufReader::with_capacity(
            1,
            &b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n"[..],
        );
        let Ok((h, _)) = smol::block_on(read_head(&mut trickled)) else {
            panic!("a trickled head is read");
        };
        assert_eq!(h.path, "/x");
        // A head that ends past 8 KiB in the read that crosses the bound is
        // refused too (reads of 1,000 bytes: 8,000 then 9,000).
        let long = [
            b"GET / HTTP/1.1\r\nX: ".as_slice(),
            &[b'a'; 8500],
            b"\r\n\r\n",
        ]
        .concat();
        assert!(long.len() < 9000);
        let mut chunks = Chunked(&long, 1000);
        match smol::block_on(read_head(&mut chunks)) {
            Err(Some(r)) => assert!(r.head.starts_with("HTTP/1.1 431"), "{}", r.head),
            _ => panic!("a head over 8 KiB was read"),
        }
        // A peer that goes away gets no answer.
        assert_eq!(refused(b"GET / HTTP/1.1\r\n"), "(closed)");
    }
}
