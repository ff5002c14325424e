//! The server API's routes (`docs/api.md`, `docs/openapi.json`): an
//! authenticated request of an app's backend becomes an [`ApiCall`], whose
//! parts go to the runner threads that own the hub shards concerned; their
//! answers are merged and written as JSON. Errors are
//! `{"code": <service code>, "message": "..."}` with the HTTP status of
//! [`status_of`].

use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

use super::shard::{Envelope, Shard};
use crate::error::{ErrorCode, ServiceError};
use crate::limits::Limits;
use crate::server::{ApiCall, ApiReply, ApiRequest, ChannelInfo, HistoryMessage, Sent};
use crate::types::{Attributes, ChannelKey, Message, Region};
use crate::wire::AttributeOp;

/// Every route of the server API: method and path pattern (`:x` is one
/// path segment; `{x}` in `docs/openapi.json`). `docs/openapi.json` describes exactly these (a test
/// checks it).
pub const API_ROUTES: &[(&str, &str)] = &[
    ("POST", "/v1/channels/:region/:channel/messages"),
    ("GET", "/v1/channels/:region/:channel/messages"),
    ("GET", "/v1/channels/:region/:channel"),
    ("GET", "/v1/channels/:region/:channel/attributes"),
    ("PUT", "/v1/channels/:region/:channel/attributes"),
    ("PATCH", "/v1/channels/:region/:channel/attributes"),
    ("DELETE", "/v1/channels/:region/:channel/attributes"),
    ("GET", "/v1/channels/:region/:channel/user-attributes"),
    ("GET", "/v1/channels"),
    ("GET", "/v1/users/online"),
    ("POST", "/v1/users/:uid/messages"),
    ("POST", "/v1/users/:uid/kick"),
    ("GET", "/v1/users/:uid/channels"),
];

/// What the API's routes need of the runner: the first thread's [`Shard`]
/// (its router reaches every thread), the number of hub shards, and the
/// limits (those of a whole call, which no shard sees).
pub(super) struct ApiContext {
    shard: Rc<Shard>,
    shards: u16,
    limits: Limits,
}

impl ApiContext {
    pub(super) fn new(shard: Rc<Shard>, shards: u16, limits: Limits) -> ApiContext {
        ApiContext {
            shard,
            shards,
            limits,
        }
    }

    /// Sends each part of `call` to the thread owning its shard and merges
    /// the answers.
    async fn call(&self, call: ApiCall) -> Result<ApiReply, ServiceError> {
        let (parts, merge) = call.split(self.shards, &self.limits)?;
        let mut waiting = Vec::new();
        for (shard, part) in parts {
            let (tx, rx) = smol::channel::bounded(1);
            self.shard.route(Envelope::Api(shard, part, tx));
            waiting.push(rx);
        }
        self.shard.pump();
        let mut parts = Vec::with_capacity(waiting.len());
        for rx in waiting {
            parts.push(rx.recv().await.unwrap_or_else(|_| {
                Err(ServiceError::new(
                    ErrorCode::INTERNAL_SERVER_ERROR,
                    "the server is shutting down",
                ))
            }));
        }
        merge.merge(parts)
    }
}

/// A JSON answer: HTTP status and body, and for a 405 the methods the
/// path takes (the `Allow` header).
pub(super) struct ApiResponse {
    pub status: u16,
    pub body: Value,
    pub allow: Option<String>,
}

/// The pattern of the route `method path` matches, a bounded label for
/// metrics (`/v1/*` when none does).
pub(super) fn route_label(method: &str, path: &str) -> &'static str {
    find_route(method, path).map_or("/v1/*", |(p, _)| p)
}

/// The HTTP status of a refusal with `code`.
pub(super) fn status_of(code: ErrorCode) -> u16 {
    match code {
        ErrorCode::UNAUTHORIZED => 401,
        ErrorCode::RESOURCE_NOT_FOUND
        | ErrorCode::USER_NOT_IN_CHANNEL
        | ErrorCode::CHANNEL_ATTRIBUTES_NOT_EXIST => 404,
        ErrorCode::PERMISSION_DENY | ErrorCode::APPID_UNAVAILABLE => 403,
        ErrorCode::MESSAGE_ID_REUSED => 409,
        ErrorCode::OPERATION_TOO_OFTEN => 429,
        ErrorCode::SERVICE_UNAVAILABLE => 503,
        ErrorCode::INTERNAL_SERVER_ERROR | ErrorCode::UNKNOWN => 500,
        _ => 400,
    }
}

/// The JSON error answer for `e`.
pub(super) fn error_response(e: &ServiceError) -> ApiResponse {
    ApiResponse {
        status: status_of(e.code),
        body: json!({"code": e.code.code(), "message": e.message}),
        allow: None,
    }
}

fn bad(message: impl Into<String>) -> ServiceError {
    ServiceError::new(ErrorCode::INVALID_PARAMETER, message)
}

/// Handles an authenticated request of app `appid`. `path` is the whole
/// path (`/v1/...`), `query` the raw query string.
pub(super) async fn handle(
    ctx: &ApiContext,
    appid: u32,
    method: &str,
    path: &str,
    query: Option<&str>,
    body: Bytes,
) -> ApiResponse {
    let Some((route, params)) = find_route(method, path) else {
        let allowed: Vec<&str> = API_ROUTES
            .iter()
            .filter(|(_, p)| matches(p, path).is_some())
            .map(|(m, _)| *m)
            .collect();
        let (status, code, message) = match allowed.is_empty() {
            false => (405, ErrorCode::INVALID_PARAMETER, "method not allowed here"),
            true => (404, ErrorCode::RESOURCE_NOT_FOUND, "no such API route"),
        };
        return ApiResponse {
            status,
            body: json!({"code": code.code(), "message": message}),
            allow: (!allowed.is_empty()).then(|| allowed.join(", ")),
        };
    };
    let query = Query::parse(query.unwrap_or(""));
    let request = match request_of(method, route, &params, &query, &body) {
        Ok(r) => r,
        Err(e) => return error_response(&e),
    };
    match ctx.call(ApiCall { appid, request }).await {
        Ok(reply) => ApiResponse {
            status: 200,
            body: json_of(reply),
            allow: None,
        },
        Err(e) => error_response(&e),
    }
}

/// The route `method path` matches, and its captured segments.
fn find_route(method: &str, path: &str) -> Option<(&'static str, Vec<String>)> {
    API_ROUTES
        .iter()
        .filter(|(m, _)| *m == method)
        .find_map(|(_, p)| Some((*p, matches(p, path)?)))
}

/// The segments `:x` of `pattern` capture in `path` (percent-decoded),
/// or `None` when it does not match.
fn matches(pattern: &str, path: &str) -> Option<Vec<String>> {
    let mut want = pattern.split('/');
    let mut got = path.split('/');
    let mut captured = Vec::new();
    loop {
        match (want.next(), got.next()) {
            (None, None) => return Some(captured),
            (Some(w), Some(g)) if w.starts_with(':') => {
                if g.is_empty() {
                    return None;
                }
                captured.push(percent_decode(g)?);
            }
            (Some(w), Some(g)) if w == g => {}
            _ => return None,
        }
    }
}

/// `%XX` escapes decoded (`+` stays a plus); `None` for a bad escape or
/// bytes that are not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b.get(i + 1..i + 3)?;
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return None;
            }
            out.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// A query string's `name=value` pairs, percent-decoded.
struct Query(Vec<(String, String)>);

impl Query {
    fn parse(q: &str) -> Query {
        let pairs = q
            .split('&')
            .filter(|p| !p.is_empty())
            .filter_map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                Some((percent_decode(k)?, percent_decode(&v.replace('+', " "))?))
            })
            .collect();
        Query(pairs)
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn number(&self, name: &str, default: u64) -> Result<u64, ServiceError> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| bad(format!("{name} must be a non-negative integer"))),
        }
    }

    fn flag(&self, name: &str) -> Result<bool, ServiceError> {
        match self.get(name) {
            None | Some("false") | Some("0") => Ok(false),
            Some("" | "true" | "1") => Ok(true),
            Some(_) => Err(bad(format!("{name} must be true or false"))),
        }
    }
}

fn region(s: &str) -> Result<Region, ServiceError> {
    s.parse().map_err(|_| {
        bad(format!(
            "unknown region {s:?} (cn, ap_southeast, ap_south, us, me_east, sa_east)"
        ))
    })
}

fn uid(s: &str) -> Result<u64, ServiceError> {
    match s.parse() {
        Ok(0) | Err(_) => Err(bad("a uid is a positive integer")),
        Ok(u) => Ok(u),
    }
}

fn body_of<T: DeserializeOwned>(body: &[u8]) -> Result<T, ServiceError> {
    serde_json::from_slice(body).map_err(|e| bad(format!("bad JSON body: {e}")))
}

/// A u64 given as a JSON number or a decimal string (JavaScript numbers
/// stop being exact at 2^53).
#[derive(Deserialize)]
#[serde(untagged)]
enum Id {
    Number(u64),
    Text(String),
}

impl Id {
    fn value(&self, name: &str) -> Result<u64, ServiceError> {
        match self {
            Id::Number(n) => Ok(*n),
            Id::Text(s) => s
                .parse()
                .map_err(|_| bad(format!("{name} must be an unsigned integer"))),
        }
    }
}

/// The body of a message send.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MessageBody {
    message_id: Id,
    #[serde(rename = "type", default)]
    kind: String,
    content: Option<String>,
    content_base64: Option<String>,
    #[serde(default)]
    app_extras: Attributes,
    #[serde(default = "yes")]
    reliable: bool,
    from_uid: Option<Id>,
}

fn yes() -> bool {
    true
}

impl MessageBody {
    /// (message id, sender, message, unreliable).
    fn parts(self) -> Result<(u64, u64, Message, bool), ServiceError> {
        let content = match (self.content, self.content_base64) {
            (Some(text), None) => Bytes::from(text),
            (None, Some(b64)) => base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|_| bad("content_base64 is not base64"))?
                .into(),
            (None, None) => Bytes::new(),
            (Some(_), Some(_)) => return Err(bad("give content or content_base64, not both")),
        };
        let message_id = self.message_id.value("message_id")?;
        let from_uid = match &self.from_uid {
            Some(id) => id.value("from_uid")?,
            None => 0,
        };
        let mut message = Message::new(self.kind, content);
        message.app_extras = self.app_extras;
        Ok((message_id, from_uid, message, !self.reliable))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KickBody {
    code: Option<u32>,
    #[serde(default)]
    reason: String,
    instance_id: Option<Id>,
    #[serde(default)]
    ban_secs: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AttributesBody {
    attributes: Attributes,
    #[serde(default)]
    notify: bool,
}

/// The core's request for a matched route.
fn request_of(
    method: &str,
    route: &'static str,
    params: &[String],
    query: &Query,
    body: &[u8],
) -> Result<ApiRequest, ServiceError> {
    let channel = || -> Result<ChannelKey, ServiceError> {
        Ok(ChannelKey::new(region(&params[0])?, params[1].clone()))
    };
    let attributes = |op, notify| -> Result<ApiRequest, ServiceError> {
        let (attributes, keys, notify) = match op {
            AttributeOp::Delete | AttributeOp::Clear => {
                let keys: Vec<String> = query
                    .get("keys")
                    .map(|k| {
                        k.split(',')
                            .filter(|k| !k.is_empty())
                            .map(String::from)
                            .collect()
                    })
                    .unwrap_or_default();
                (Attributes::new(), keys, notify)
            }
            _ => {
                let b: AttributesBody = body_of(body)?;
                (b.attributes, Vec::new(), b.notify)
            }
        };
        let op = match op {
            AttributeOp::Delete if keys.is_empty() => AttributeOp::Clear,
            op => op,
        };
        Ok(ApiRequest::WriteChannelAttributes {
            channel: channel()?,
            op,
            attributes,
            keys,
            notify,
        })
    };
    let limit = |default| -> Result<usize, ServiceError> {
        usize::try_from(query.number("limit", default)?).map_err(|_| bad("limit too large"))
    };
    Ok(match (method, route) {
        ("POST", "/v1/channels/:region/:channel/messages") => {
            let (message_id, from_uid, message, unreliable) =
                body_of::<MessageBody>(body)?.parts()?;
            ApiRequest::Publish {
                channel: channel()?,
                from_uid,
                message_id,
                message,
                unreliable,
            }
        }
        ("GET", "/v1/channels/:region/:channel/messages") => ApiRequest::History {
            channel: channel()?,
            after_seq: query.number("after_seq", 0)?,
            limit: limit(100)?,
        },
        ("GET", "/v1/channels/:region/:channel")
        | ("GET", "/v1/channels/:region/:channel/attributes") => ApiRequest::Channel {
            channel: channel()?,
        },
        ("PUT", _) => attributes(AttributeOp::Set, false)?,
        ("PATCH", _) => attributes(AttributeOp::AddOrUpdate, false)?,
        ("DELETE", _) => attributes(AttributeOp::Delete, query.flag("notify")?)?,
        ("GET", "/v1/channels/:region/:channel/user-attributes") => ApiRequest::UserAttributes {
            channel: channel()?,
        },
        ("GET", "/v1/channels") => {
            let after = match query.get("after") {
                None | Some("") => None,
                Some(a) => {
                    let (r, id) = a
                        .split_once('/')
                        .ok_or_else(|| bad("after is REGION/CHANNEL, as `next` gives it"))?;
                    Some(ChannelKey::new(region(r)?, id))
                }
            };
            ApiRequest::ListChannels {
                after,
                limit: limit(100)?,
            }
        }
        ("GET", "/v1/users/online") => {
            let uids = query
                .get("uids")
                .ok_or_else(|| bad("uids is required: uids=1,2,3"))?
                .split(',')
                .map(uid)
                .collect::<Result<Vec<_>, _>>()?;
            ApiRequest::OnlineStatus { uids }
        }
        ("POST", "/v1/users/:uid/messages") => {
            let (message_id, from_uid, message, unreliable) =
                body_of::<MessageBody>(body)?.parts()?;
            ApiRequest::SendToUser {
                receiver: uid(&params[0])?,
                from_uid,
                message_id,
                message,
                unreliable,
            }
        }
        ("POST", "/v1/users/:uid/kick") => {
            let b: KickBody = if body.is_empty() {
                body_of(b"{}")?
            } else {
                body_of(body)?
            };
            ApiRequest::Kick {
                uid: uid(&params[0])?,
                instance_id: b.instance_id.map(|i| i.value("instance_id")).transpose()?,
                code: b.code.unwrap_or(crate::server::KICK_CODE_MIN),
                reason: b.reason,
                ban: Duration::from_secs(b.ban_secs),
            }
        }
        ("GET", "/v1/users/:uid/channels") => ApiRequest::ChannelsOfUser {
            uid: uid(&params[0])?,
        },
        _ => {
            return Err(ServiceError::new(
                ErrorCode::INTERNAL_SERVER_ERROR,
                "unrouted",
            ))
        }
    })
}

fn channel_json(k: &ChannelKey) -> Value {
    json!({"region": k.region.as_str(), "id": k.channel_id})
}

fn sent_json(s: &Sent) -> Value {
    json!({"seq": s.seq, "timestamp_ms": s.timestamp_ms, "delivered_online": s.delivered_online})
}

fn channel_info_json(c: &ChannelInfo) -> Value {
    json!({
        "member_count": c.member_count,
        "members": c.members,
        "attributes": c.attributes,
        "attributes_updated_by": c.attributes_updated_by,
        "attributes_updated_ms": c.attributes_updated_ms,
        "epoch": c.epoch,
        "head_seq": c.head_seq,
    })
}

fn history_message_json(m: &HistoryMessage) -> Value {
    let mut v = json!({
        "seq": m.seq,
        "from_uid": m.from_uid,
        "timestamp_ms": m.timestamp_ms,
        "type": m.message.kind,
        "content_base64": base64::engine::general_purpose::STANDARD.encode(&m.message.content),
        "app_extras": m.message.app_extras,
    });
    if let Ok(text) = std::str::from_utf8(&m.message.content) {
        v["content"] = json!(text);
    }
    v
}

/// The JSON of a successful answer.
fn json_of(reply: ApiReply) -> Value {
    match reply {
        ApiReply::Sent(s) => sent_json(&s),
        ApiReply::Kicked { instances } => json!({ "instances": instances }),
        ApiReply::Online(status) => {
            let m: BTreeMap<String, bool> = status
                .into_iter()
                .map(|(u, o)| (u.to_string(), o))
                .collect();
            json!({ "online": m })
        }
        ApiReply::Channel(Some(info)) => channel_info_json(&info),
        ApiReply::Channel(None) => json!({
            "member_count": 0, "members": [], "attributes": {}, "attributes_updated_by": 0,
            "attributes_updated_ms": 0, "epoch": 0, "head_seq": 0,
        }),
        ApiReply::UserAttributes(users) => {
            let m: BTreeMap<String, Attributes> =
                users.into_iter().map(|(u, a)| (u.to_string(), a)).collect();
            json!({ "users": m })
        }
        ApiReply::Written => json!({}),
        ApiReply::History {
            epoch,
            messages,
            gap,
            more,
        } => json!({
            "epoch": epoch,
            "messages": messages.iter().map(history_message_json).collect::<Vec<_>>(),
            "gap": gap.map(|(from, to)| json!({"from": from, "to": to})),
            "more": more,
        }),
        ApiReply::Channels(keys) => {
            json!({ "channels": keys.iter().map(channel_json).collect::<Vec<_>>() })
        }
        ApiReply::ChannelPage { channels, more } => {
            let next = match (more, channels.last()) {
                (true, Some((k, _))) => json!(format!("{}/{}", k.region.as_str(), k.channel_id)),
                _ => Value::Null,
            };
            let list: Vec<Value> = channels
                .iter()
                .map(|(k, n)| {
                    let mut v = channel_json(k);
                    v["member_count"] = json!(n);
                    v
                })
                .collect();
            json!({ "channels": list, "next": next })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_match_whole_segments_and_capture_decoded_parameters() {
        assert_eq!(
            find_route("GET", "/v1/channels/cn/room%201"),
            Some((
                "/v1/channels/:region/:channel",
                vec!["cn".into(), "room 1".into()]
            ))
        );
        assert_eq!(
            find_route("POST", "/v1/users/42/kick"),
            Some(("/v1/users/:uid/kick", vec!["42".into()]))
        );
        assert_eq!(
            find_route("GET", "/v1/users/online").map(|r| r.0),
            Some("/v1/users/online")
        );
        assert_eq!(find_route("GET", "/v1/channels/cn/"), None);
        assert_eq!(find_route("GET", "/v1/channels/cn/a/b/c"), None);
        assert_eq!(find_route("POST", "/v1/channels"), None);
        assert_eq!(find_route("GET", "/v1/channels/cn/%zz"), None);
        assert_eq!(
            matches("/a/:x", "/a/%E2%82%AC"),
            Some(vec!["€".to_string()])
        );
        assert_eq!(matches("/a/:x", "/a/%FF"), None, "not UTF-8");
        assert_eq!(matches("/a/:x", "/a/%+1"), None, "a sign is no hex digit");
        assert_eq!(matches("/a/:x", "/a/%4"), None, "one digit");
    }

    #[test]
    fn bodies_and_queries_become_the_cores_requests() {
        let q = Query::parse("");
        let body = br#"{"message_id": "18446744073709551615", "type": "t", "content": "hi", "reliable": false, "from_uid": 9}"#;
        let r = request_of(
            "POST",
            "/v1/channels/:region/:channel/messages",
            &["us".into(), "r".into()],
            &q,
            body,
        );
        match r {
            Ok(ApiRequest::Publish {
                channel,
                from_uid,
                message_id,
                message,
                unreliable,
            }) => {
                assert_eq!(channel, ChannelKey::new(Region::Us, "r"));
                assert_eq!((from_uid, message_id, unreliable), (9, u64::MAX, true));
                assert_eq!(&message.content[..], b"hi");
                assert_eq!(message.kind, "t");
            }
            other => panic!("{other:?}"),
        }
        let b64 = br#"{"message_id": 1, "content_base64": "AAEC"}"#;
        match request_of("POST", "/v1/users/:uid/messages", &["5".into()], &q, b64) {
            Ok(ApiRequest::SendToUser {
                receiver: 5,
                message,
                unreliable: false,
                from_uid: 0,
                ..
            }) => {
                assert_eq!(&message.content[..], &[0, 1, 2]);
            }
            other => panic!("{other:?}"),
        }
        for (body, why) in [
            (
                &br#"{"message_id": 1, "content": "a", "content_base64": "AA=="}"#[..],
                "both",
            ),
            (br#"{"message_id": 1, "extra": 1}"#, "unknown field"),
            (br#"{"content": "a"}"#, "no id"),
            (br#"{"message_id": -1}"#, "negative"),
            (
                br#"{"message_id": 1, "content_base64": "!!"}"#,
                "bad base64",
            ),
            (b"not json", "not JSON"),
        ] {
            let r = request_of("POST", "/v1/users/:uid/messages", &["5".into()], &q, body);
            assert_eq!(
                r.map(|_| ()).unwrap_err().code,
                ErrorCode::INVALID_PARAMETER,
                "{why}"
            );
        }
        let bad_uid = request_of("POST", "/v1/users/:uid/kick", &["0".into()], &q, b"");
        assert_eq!(bad_uid.unwrap_err().code, ErrorCode::INVALID_PARAMETER);
        match request_of("POST", "/v1/users/:uid/kick", &["3".into()], &q, b"") {
            Ok(ApiRequest::Kick {
                uid: 3,
                code: 4100,
                instance_id: None,
                ban,
                ..
            }) => assert!(ban.is_zero()),
            other => panic!("{other:?}"),
        }
        let q = Query::parse("keys=a,b&notify=true");
        match request_of(
            "DELETE",
            "/v1/channels/:region/:channel/attributes",
            &["cn".into(), "x".into()],
            &q,
            b"",
        ) {
            Ok(ApiRequest::WriteChannelAttributes {
                op: AttributeOp::Delete,
                keys,
                notify: true,
                ..
            }) => {
                assert_eq!(keys, ["a", "b"]);
            }
            other => panic!("{other:?}"),
        }
        let q = Query::parse("");
        match request_of(
            "DELETE",
            "/v1/channels/:region/:channel/attributes",
            &["cn".into(), "x".into()],
            &q,
            b"",
        ) {
            Ok(ApiRequest::WriteChannelAttributes {
                op: AttributeOp::Clear,
                notify: false,
                ..
            }) => {}
            other => panic!("{other:?}"),
        }
        let q = Query::parse("uids=1,2,x");
        assert!(request_of("GET", "/v1/users/online", &[], &q, b"").is_err());
        let q = Query::parse("after=cn%2Fb&limit=2");
        match request_of("GET", "/v1/channels", &[], &q, b"") {
            Ok(ApiRequest::ListChannels {
                after: Some(k),
                limit: 2,
            }) => assert_eq!(k, ChannelKey::new(Region::Cn, "b")),
            other => panic!("{other:?}"),
        }
        let q = Query::parse("");
        assert!(request_of(
            "GET",
            "/v1/channels/:region/:channel",
            &["mars".into(), "x".into()],
            &q,
            b""
        )
        .is_err());
    }

    #[test]
    fn refusals_map_to_http_statuses() {
        assert_eq!(status_of(ErrorCode::INVALID_PARAMETER), 400);
        assert_eq!(status_of(ErrorCode::MSG_SIZE_LIMIT_EXCEEDED), 400);
        assert_eq!(status_of(ErrorCode::UNAUTHORIZED), 401);
        assert_eq!(status_of(ErrorCode::PERMISSION_DENY), 403);
        assert_eq!(status_of(ErrorCode::RESOURCE_NOT_FOUND), 404);
        assert_eq!(status_of(ErrorCode::CHANNEL_ATTRIBUTES_NOT_EXIST), 404);
        assert_eq!(status_of(ErrorCode::MESSAGE_ID_REUSED), 409);
        assert_eq!(status_of(ErrorCode::OPERATION_TOO_OFTEN), 429);
        assert_eq!(status_of(ErrorCode::INTERNAL_SERVER_ERROR), 500);
    }
}
